/*
 * subrun - one subscription, as its pool thread runs it: register the live
 * queue, replay history from the segment files (partitions merged by receive
 * time, filtered by patterns and tags), drain the queue without duplicates,
 * tail it, and fall back to the files on overflow or gaps. Internal to the
 * subscription module: sub.c (registry, pool), fanout.c (the writers'
 * fan-out) and subrun.c share the struct below; nothing else includes this
 * header.
 *
 * Threads: the fields marked "mu" are shared with the partition writer
 * threads under s->mu; "thread" fields belong to the subscription's pool
 * thread; the rest is set by sub_start before the hand-off and read-only
 * afterwards.
 */
#ifndef PB_SUBRUN_H
#define PB_SUBRUN_H

#include "livequeue.h"
#include "partition.h"
#include "patterns.h"
#include "protobus.pb-c.h"
#include "reader.h"
#include "store.h"
#include "sub.h"
#include "wire.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One key=value an event must carry (slices of the unpacked request). */
typedef struct sub_tag {
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
} sub_tag;

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
    bool time_seek; /* first replay seeks by time (START_TIME) */
    uint64_t *want; /* START_LAST_N: the offsets to deliver, ascending */
    size_t nwant, iwant;
    pb_reader *rd; /* open during a replay */
    pb_record rec; /* the reader's current record (heap member) */
} part_state;

typedef struct sub {
    struct sub_registry *r;
    uint32_t slot;
    int fd;
    uint64_t frame_id;
    char peer[96];
    Protobus__Subscribe *req;
    int start; /* Protobus__StartMode */
    uint32_t last_n;
    int64_t min_time_ns; /* START_TIME: nothing older is delivered; else INT64_MIN */
    sub_offset *offsets;
    size_t noffsets;
    sub_tag *tags;
    size_t ntags;
    atomic_bool stop; /* set by sub_registry_destroy */
    int efd;          /* eventfd: the writers wake the thread (added to an empty
                         queue, or overflowed); destroy wakes it to stop */

    pthread_mutex_t mu;
    bool mu_init;
    livequeue *q;            /* mu */
    uint8_t *tag_state_live; /* mu: scratch for sub_scan_event */

    /* thread: patterns_match; the writers use its compiled patterns too
     * (patterns_match_shared, read-only), while the subscription is
     * registered */
    pattern_set *ps;
    uint8_t *tag_state; /* thread */
    part_state *parts;  /* thread: every partition seen so far */
    size_t nparts, partcap;
    size_t *index; /* thread: partition pointer -> parts index + 1 (open addressing) */
    size_t index_slots;
    size_t *heap; /* thread: parts indexes ordered by (rec.time_ns, index) */
    size_t nheap;
    uint8_t *out; /* thread: frames waiting to be written */
    size_t out_len;
    unsigned overflows; /* thread: times the live queue overflowed */
    char why[512];      /* thread: what ended the subscription, for the Error frame */
} sub;

/* sub.c */

/* Walks a stored EncapsulatedEvent once: *topic = field 1 (last wins), and
 * for each tags[i] state[i] = 0 (absent), 1 (present with that value) or 2
 * (present with another value), the last map entry of a key deciding.
 * Returns 0 or PB_EPROTO. Any thread; state is the caller's scratch. */
int sub_scan_event(const uint8_t *p, size_t n, wire_slice *topic, const sub_tag *tags, size_t ntags,
                   uint8_t *state);
/* True if every tag was present with the wanted value. */
bool sub_tags_ok(const uint8_t *state, size_t ntags);

/* Adds / removes s's queue to / from the writers' fan-out list. */
void sub_register(sub *s);
void sub_unregister(sub *s);
const sub_options *sub_registry_options(const struct sub_registry *r);
/* Counts s in or out of the subscriptions following the live stream. */
void sub_registry_set_tailing(sub *s, bool tailing);

/* subrun.c */

/* Runs the subscription until the client leaves, a write deadline passes,
 * the registry stops it, or an error ends it (sent as an Error frame when
 * possible). Leaves s->fd open and s allocated: the caller closes and frees. */
void subrun_main(sub *s);
/* Frees the thread-side state (readers, partition table, buffers). */
void subrun_free_state(sub *s);
/* Any thread: wakes s's thread (its eventfd): a writer queued a record or
 * overflowed the queue, or the registry is stopping. */
void sub_wake(sub *s);

#endif
