/*
 * subrun - one subscription, as its pool thread runs it: register the live
 * queue, replay history from the segment files (partitions merged by receive
 * time, filtered by patterns and tags), drain the queue without duplicates,
 * tail it, and fall back to the files on overflow or gaps. Internal to the
 * subscription module: sub.c (registry, pool) fills the struct below and
 * runs it here; subrun.c hands the writers' part of it (s->live) to the
 * fan-out (fanout.h). The calls run one way, sub.c -> subrun.c ->
 * fanout.c; nothing but sub.c includes this header.
 *
 * Threads: the fields of s->live marked "mu" are shared with the partition
 * writer threads under s->live.mu; "thread" fields belong to the
 * subscription's pool thread; the rest is set by sub_start before the
 * hand-off and read-only afterwards.
 */
#ifndef PB_SUBRUN_H
#define PB_SUBRUN_H

#include "event.h"
#include "fanout.h"
#include "subconn.h"
#include "livequeue.h"
#include "partition.h"
#include "patterns.h"
#include "protobus.pb-c.h"
#include "reader.h"
#include "store.h"
#include "wire.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Partitions whose segment files a replay holds open at once (a descriptor
 * and a 1 MiB read window each). When more replay together, merged by
 * time, the least recently used reader is closed and reopened at its place
 * when its turn comes: slower, but a subscription to thousands of
 * partitions costs the daemon a bounded number of descriptors (main.c counts
 * them) and of memory. */
#define SUBRUN_REPLAY_READERS 8

/* START_OFFSETS: the first offset to deliver of a named partition. */
typedef struct sub_offset {
    const char *partition;
    uint64_t offset;
} sub_offset;

/* What the subscription knows about one partition (thread). */
typedef struct part_state {
    partition *p;
    const char *name;
    size_t name_len;
    /* Every offset below `next` has been delivered, filtered out, or
     * reported lost; nothing at or above it has been sent. */
    uint64_t next;
    uint64_t end;   /* upper bound (exclusive) of the replay in progress */
    uint64_t *want; /* START_LAST_N: the offsets to deliver, ascending */
    size_t nwant, iwant;
    pb_reader *rd; /* open during a replay (unless parked) */
    pb_record rec; /* the reader's current record (heap member) */
    bool parked;   /* rd closed to keep within SUBRUN_REPLAY_READERS; rec.offset and
                      rec.time_ns stay valid, the record is read again on reopening */
    uint64_t used; /* replay clock of its last use (which reader to park) */
} part_state;

typedef struct sub {
    /* Where it runs (from the registry's options). */
    store *store;
    fanout *fo;
    uint32_t write_deadline_ms;
    /* Told when the subscription starts or stops following the live
     * stream (history written out); the registry counts them. */
    void (*on_tailing)(void *ctx, bool tailing);
    void *tailing_ctx;

    int fd;
    uint64_t frame_id;
    char peer[96];
    /* The client's address without its port (the registry counts the
     * subscriptions of each address, max_subscriptions_per_address). */
    unsigned char addr[16];
    size_t addr_len;
    Protobus__Subscribe *req;
    int start; /* Protobus__StartMode */
    uint32_t last_n;
    int64_t min_time_ns; /* START_TIME: nothing older is delivered; else INT64_MIN */
    sub_offset *offsets;
    size_t noffsets;
    event_tag_filter *tags; /* slices of the unpacked request */
    size_t ntags;
    atomic_bool stop; /* set by sub_registry_stop */

    /* What the writers see (fanout.h): slot, patterns, filters, the queue
     * and its lock (mu), and the eventfd with which they wake the thread
     * (records added to an empty queue, or an overflow); the registry wakes
     * it through the same to stop it. */
    fanout_member live;
    bool mu_init; /* live.mu */

    /* thread: patterns_match, under the matcher's limits (submatch.h); the
     * writers read patterns_match_all and patterns_gate_shared through
     * live.ps (read-only), while the subscription is registered */
    pattern_set *ps;
    uint8_t *tag_state; /* thread */
    part_state *parts;  /* thread: every partition seen so far */
    size_t nparts, partcap;
    size_t *index; /* thread: partition pointer -> parts index + 1 (open addressing) */
    size_t index_slots;
    size_t *heap; /* thread: parts indexes ordered by (rec.time_ns, index) */
    size_t nheap;
    size_t nopen;       /* thread: readers open in the replay in progress */
    uint64_t use_clock; /* thread: ticks on each reader use */
    subconn conn;       /* thread: the client's connection, output and input */
    unsigned overflows; /* thread: times the live queue overflowed */
    /* Bytes net.c had read after the Subscribe (set by sub_start; the
     * connection takes them). */
    uint8_t *input;
    size_t input_len;
    struct tls_conn *tls;     /* the connection's TLS session (sub_rights.tls); freed with s */
    char user[72];            /* whose (sub_rights.user); "" anonymous */
    uint64_t rights_fp;       /* sub_rights_fingerprint of its read rights */
    uint64_t max_frame_bytes; /* what the client may still send */
    char why[512];            /* thread: what ended the subscription, for the Error frame */
    struct standby *standby;  /* replicate: where the follower's ReplicaAcks go (or NULL) */
} sub;

/* Runs the subscription until the client leaves, a write deadline passes,
 * the registry stops it, or an error ends it (sent as an Error frame when
 * possible). Leaves s->fd open and s allocated: the caller closes and frees. */
void subrun_main(sub *s);
/* Frees the thread-side state (readers, partition table, buffers). */
void subrun_free_state(sub *s);

#endif
