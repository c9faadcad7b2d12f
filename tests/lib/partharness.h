/*
 * partharness - the partition writer's test harness (tests/unit/
 * test_partition.c, test_partition_pipe.c). The test thread plays the loop
 * thread (partition_submit); the partition's writer thread calls done(),
 * which the harness collects under a mutex. All file I/O of the log goes
 * through an instrumented fileio that counts syncs (and those its
 * direct-write helper makes), can hold an fdatasync until the test
 * releases it (a "slow disk", without sleeping), and can inject
 * EIO/ENOSPC.
 */
#ifndef PB_TEST_PARTHARNESS_H
#define PB_TEST_PARTHARNESS_H

#include "broker.h"
#include "fileio.h"
#include "partition.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MAX_FD      1024
#define MAX_EVENTS  256
#define WAIT_LIMITS 60 /* seconds: a bound for waits on the writer, never reached when it works */

typedef struct ph_harness {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* fileio state */
    bool is_log[MAX_FD];   /* fd is a .log segment */
    bool unsynced[MAX_FD]; /* written since its last fdatasync */
    size_t syncs;          /* completed fdatasyncs of .log files */
    size_t sync_calls;     /* fdatasync calls on .log files, failed ones included */
    bool gate_closed;      /* hold .log fdatasyncs until opened */
    size_t gate_at;        /* the gate closes at this fdatasync call (sync_calls); 0: never */
    int blocked;           /* fdatasyncs waiting at the gate */
    int fail_sync;         /* errno to fail .log fdatasyncs with; 0 = none */
    int fail_write;        /* errno to fail .log pwritevs with; 0 = none */
    /* done() state */
    size_t done_count;
    int early_acks; /* status 0 done() while a .log write was not yet synced */
    bool check_durable;
    size_t helper_syncs; /* .log fdatasyncs made by a direct-write helper (pbd:) */
    /* Called once (then cleared), outside the lock, at the next .log pwritev
     * made once sync_calls >= write_hook_after (0: the next one). */
    void (*write_hook)(void *arg);
    void *write_hook_arg;
    size_t write_hook_after;
    _Atomic int64_t clock_ns;
    fileio io;
} ph_harness;

typedef struct ph_batch {
    pub_batch b;
    pub_event ev[MAX_EVENTS];
    pub_part part;
    uint32_t idx[MAX_EVENTS];
    uint8_t bytes[MAX_EVENTS * 64];
    size_t syncs_at_done; /* the harness's completed .log syncs when done() came */
} ph_batch;

typedef struct ph_fixture {
    ph_harness h;
    char root[64];
    partition_options opts;
} ph_fixture;

/* The fixture: ph_setup and ph_teardown are cmocka's setup and teardown
 * (*state is a ph_fixture: a temp root, the harness, fsync = always). */
int ph_setup(void **state);
int ph_teardown(void **state);
partition *ph_open(ph_fixture *f);

/* The done() of every batch: counts, checks durability (check_durable). */
void ph_on_done(pub_part *part);
size_t ph_early_acks(ph_harness *h);
/* Bounded waits: `count` done() calls; a sync held at the gate; `count`
 * completed .log syncs. */
void ph_wait_done(ph_harness *h, size_t count);
void ph_wait_blocked(ph_harness *h);
void ph_wait_syncs(ph_harness *h, size_t count);
/* Closes or opens the gate that holds .log fdatasyncs. */
void ph_gate(ph_harness *h, bool closed);
/* Closes the gate, submits b to p and waits until the writer is held at
 * the gate (in the sync that covers b). */
void ph_submit_held(ph_harness *h, partition *p, ph_batch *b);
size_t ph_syncs_now(ph_harness *h);

/* n events with topic "t<seq % 3>" and payload_size = seq, seq counting
 * from first_seq (a batch as net.c would build it; free() it). */
ph_batch *ph_batch_new(ph_harness *h, partition *p, size_t n, uint64_t first_seq);

/* Rewrites the batch's events with ids: event i gets topic "t<seq % 3>",
 * payload_size seq = first_seq + i and id "id<n>" (8 digits), n = i for the
 * first ndup events (the ids of a batch given first_id 0), else first_id + i. */
void ph_give_ids(ph_batch *tb, uint64_t first_seq, uint64_t first_id, uint32_t ndup);

/* Where p's dedup window has id number n (as ph_give_ids names it): its
 * offset, or UINT64_MAX. Read only while the writer waits (a sync held at
 * the gate) or is idle. */
uint64_t ph_window_has(partition *p, uint64_t n);
/* Queues the n parts in one go (no take can start between them), as the
 * loop thread would, and wakes a running writer (a dormant one is started
 * only by partition_submit). */
void ph_queue_parts(partition *p, pub_part *const *parts, size_t n);
/* Submits one batch of n events and waits for its done(). */
ph_batch *ph_publish(ph_fixture *f, partition *p, size_t n, uint64_t first_seq);
/* Reads the partition back: offsets 0..count-1, each event = client bytes
 * + the server_receive_time suffix with the record's time. */
void ph_check_files(ph_fixture *f, uint64_t count);
/* The durability check, byte-precise: reads the partition <root>/p
 * through io (NULL: the real file system) and holds every acked event of
 * the nb batches against it. An event acked as stored (status 0, not a
 * duplicate) must be the record at its acked offset byte for byte (its
 * topic, id and payload) followed by the server_receive_time suffix of
 * the record's time; one acked as a duplicate, a record with its id at
 * the offset its ack named. The offsets run from 0 without a gap and no id
 * is stored twice. Returns the log's end (its records). */
uint64_t ph_check_acked(ph_fixture *f, const fileio *io, ph_batch *const *b, size_t nb);

#endif
