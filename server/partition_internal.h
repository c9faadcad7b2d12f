/*
 * partition_internal - what partition.c (the queue, the writer thread's
 * life, open and close) and partition_write.c (one take of the queue into
 * the log, and what a writer does between takes) share about one
 * partition. Not for other modules: they use partition.h.
 * Threads and the durability order: as described at the top of partition.c.
 */
#ifndef PB_PARTITION_INTERNAL_H
#define PB_PARTITION_INTERNAL_H

#include "partition.h"

#include "compressor.h"
#include "dedup.h"
#include "event.h"
#include "expect.h"
#include "recycle.h"
#include "topics.h"
#include "upkeep.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Room for one encoded server_receive_time field per event. */
#define SUFFIX_SLOT EVENT_RECEIVE_TIME_MAX

/* partition_ahead.c: the parts admitted ahead, during the write and sync
 * of the take before them, into a second set of batch arrays, in at most
 * AHEAD_ROUNDS rounds (each with its own receive time and suffix). */
#define AHEAD_ROUNDS 32
enum ahead_state { AHEAD_IDLE, AHEAD_WORK, AHEAD_STOP, AHEAD_DONE, AHEAD_EXIT };

typedef struct take_ahead {
    pthread_t thread;
    bool started;           /* the helper thread runs (writer thread) */
    bool start_warned;      /* a failed start was logged */
    pthread_cond_t cv;      /* state changes and parts queued, under the partition's lock */
    enum ahead_state state; /* p->lock */
    /* Writer thread, and the helper's between WORK and DONE: */
    pub_part *parts;      /* admitted parts (linked), NULL: none */
    pub_part *parts_tail; /* the last of them */
    pub_part *rest;       /* detached after them, not admitted (go back to the queue) */
    size_t n;             /* records admitted: entries[0..n), recs[0..n) */
    size_t ids;           /* among them, events with an id */
    uint64_t next;        /* the offset the first of them gets */
    int64_t time_ns;      /* the receive time of the last round (the floor before) */
    /* Writer thread: admitting ahead itself while its append waits for the
     * device (partition_ahead_begin .. _end), and the rounds run so far. */
    bool waiting;
    int rounds;
    /* AHEAD_ROUNDS + 1 suffixes (the last is the writer's own admission's),
     * which swap with the partition's together with the arrays; both halves
     * of one allocation (slot_block), made when the helper starts or the
     * writer first admits ahead itself (partition_ahead_begin). */
    uint8_t (*slots)[SUFFIX_SLOT];
    uint8_t (*slot_block)[SUFFIX_SLOT];
    log_entry *entries;
    live_record *recs;
    size_t cap;
} take_ahead;

/* partition_write.c: a take appended whose sync runs on the log's helper
 * (log_append_sync) while the writer goes on with the next take; finished
 * (acked, or failed) once that sync is known (partition_finish_pending).
 * Its batch arrays are the other half of a pair that swaps with the
 * partition's; its records point at its own copy of the receive time. */
typedef struct take_pending {
    bool on;
    expect_take x;
    pub_part *all;
    size_t n;
    uint64_t first;
    log_entry *entries;
    live_record *recs;
    size_t cap;
    uint8_t suffix[SUFFIX_SLOT];
    /* Finished inside the next take's append (its sync seen over there):
     * early, with the sync's outcome early_rc; its upkeep (for upkeep_n
     * records) due once that append is over. */
    bool early;
    int early_rc;
    bool upkeep_due;
    size_t upkeep_n;
} take_pending;

struct partition {
    char *name;
    char *dir;
    partition_options opts;
    const fileio *io; /* opts.log.io, or POSIX: the log's and the topic snapshot's */
    pb_log *log;
    spare_ledger *spares; /* the log's spare_ledger (recycle.h), when recycle_segment_cb is its recycle */
    topic_table *topics;
    dedup *dedup;         /* writer thread; NULL when dedup_window_ms is 0 */
    bool topics_complete; /* writer thread: the table knows every topic (expect.h) */
    bool ids_marked;      /* writer thread: DEDUP_MARK_NAME exists (dedup.h) */
    /* Writer thread: records were appended without passing the dedup window
     * (a standby's replica takes): the window does not hold their ids, so
     * no snapshot of it is saved at close (dedup_snap.c). */
    bool window_partial;

    pthread_mutex_t lock; /* protects head, tail, stopping, exited, running, thread, joinable */
    pthread_cond_t wake;  /* work queued, or close requested (CLOCK_MONOTONIC) */
    pub_part *head;
    pub_part *tail;
    bool stopping;
    bool exited;          /* the writer has taken its last part */
    bool running;         /* a writer thread is in writer_main (or being started) */
    bool joinable;        /* `thread` has ended or will: join it before the next */
    bool start_warned;    /* a failed thread start was logged (until one succeeds) */
    bool retain_wanted;   /* partition_retention_tick asked the writer for a run */
    bool zbusy;           /* zjob is with the compressor (partition_compress.c) */
    bool zready;          /* ... and its done() came: the writer installs the copy */
    uint64_t zready_mono; /* CLOCK_MONOTONIC ns of that done() */
    /* A compression failed for a reason that may pass: that segment + 1
     * (logged once, not per try; the pause is up.zretry_mono). */
    uint64_t zfail_base;
    pthread_t thread;
    compress_job zjob; /* the one segment handed to opts.compressor at a time */
    /* partition_mono_ns() of the writer's last take: zjob is paced while
     * it is recent (compress.c, log_compress_prepare_paced). */
    _Atomic uint64_t zactive_mono;

    _Atomic uint64_t end_offset;
    atomic_int status;
    /* Written by the writer (relaxed), read by /metrics: partition_get_stats. */
    _Atomic uint64_t events_appended, bytes_appended, write_errors, fsync_errors, events_ahead,
        events_ahead_writer;
    upkeep up; /* retention, free space, resume after a full disk (upkeep.h) */

    /* Writer thread only (the current one; a closing thread after the
     * last has been joined). The arrays grow to the largest take; see
     * shrink_after_take. */
    log_entry *entries;
    live_record *recs;
    /* This take's receive time, shared by the events the writer admits:
     * suffix_own, or slots[AHEAD_ROUNDS] while a helper admits ahead. */
    uint8_t *suffix;
    size_t cap;
    uint8_t suffix_own[SUFFIX_SLOT];
    uint8_t (*slots)[SUFFIX_SLOT]; /* NULL, or half of ahead.slot_block (swaps with ahead.slots) */
    take_ahead ahead;              /* partition_ahead.c */
    take_pending pend;             /* partition_write.c: the take whose sync runs */
    size_t window_max;       /* largest take of the current shrink window */
    uint32_t window_takes;   /* takes in it */
    int64_t last_time_ns;    /* receive times never go backwards */
    uint64_t last_sync_mono; /* CLOCK_MONOTONIC ns of the last sync */
    bool dirty;              /* appended since the last sync */
    bool topics_warned;
};

/* Lock held: detaches the front of the queue for one take: whole parts
 * while the take stays within PARTITION_TAKE_EVENTS events, counting
 * `already` (events admitted ahead for it); at least one part when already
 * is 0, however large. NULL when the queue is empty or already is at the
 * cap. The parts left stay queued, in order. */
pub_part *partition_detach_take(partition *p, size_t already);
/* The same, ahead_only: the prefix stops before the first part that may
 * not be admitted ahead (an expectation, a replica's records); the ahead
 * helper's round (partition_ahead.c). */
pub_part *partition_detach_prefix(partition *p, size_t already, bool ahead_only);

/* CLOCK_MONOTONIC, ns. */
uint64_t partition_mono_ns(void);
/* The receive-time clock (opts.log.now_ns, or CLOCK_REALTIME), ns. */
int64_t partition_wall_ns(const partition *p);
/* Writer thread. Marks the partition failed (the first error sticks) and
 * logs it once. Nothing will be synced any more, so nothing is pending. */
void partition_set_failed(partition *p, int rc, const char *what);
/* Completes every part of the list with status; reads next before done(),
 * which may free the batch. */
void partition_complete_all(pub_part *part, int status);

/* Writer thread: syncs the log (timed for the metrics): 0, or the error
 * (the partition failed when the log did). */
int partition_sync_log(partition *p);
/* fsync=interval: is a sync due at `now` (CLOCK_MONOTONIC ns)? */
bool partition_interval_due(const partition *p, uint64_t now);
/* entries and recs grow together to at least n, under one capacity *cap:
 * 0 or PB_ENOMEM (then unchanged). */
int partition_reserve(log_entry **entries, live_record **recs, size_t *cap, size_t n);
/* Starts a thread with a stack of stack_bytes: 0 or a negative errno. */
int partition_start_thread(pthread_t *t, size_t stack_bytes, void *(*fn)(void *), void *arg);
/* Gives the batch arrays back down to `keep` entries (0: all). */
void partition_shrink_arrays(partition *p, size_t keep);
/* One pair of batch arrays (entries and recs, under one capacity *cap)
 * down to keep entries (0: freed); *cap = keep even when a resize fails
 * (that array stays larger). The bytes given back (as counted). */
size_t partition_shrink_pair(log_entry **entries, live_record **recs, size_t *cap, size_t keep);
/* Writer thread, woken by partition_upkeep_tick: retention, the free
 * space probe, and the resume of a partition a full disk stopped. */
void partition_run_upkeep(partition *p);
/* Writer thread: one take of the queue (a publisher's parts, or the
 * replica's from a primary) appended, synced as fsync says, its offsets
 * published and every part completed. */
void partition_write_take(partition *p, pub_part *taken);
void partition_write_replica_take(partition *p, pub_part *taken);
/* Writer thread: waits for the sync of the take left pending (if any) and
 * acks it, or fails it with the sync's error. Before anything but the next
 * plain take: the writer going idle, ending, syncing, a replica take. */
void partition_finish_pending(partition *p);

struct expect_take;

/* partition_ahead.c, writer thread. Before the append of a take that
 * stored ids (its admission in x, n records): detaches the parts queued
 * now that can be admitted ahead and has the helper thread admit them
 * (started on first use); false when there are none (or no helper). */
bool partition_ahead_start(partition *p, const struct expect_take *x, size_t n);
/* The same on the writer itself, for a pipelined take (write_pipelined,
 * its admission in x, n records): from now until partition_ahead_end,
 * partition_ahead_while_waiting (log_append_sync's waiting hook: the
 * partition is its argument) admits the parts queued meanwhile, a round a
 * call, while the append waits for the device. false: not for this take
 * (no ids in it, or no memory for the rounds' receive times). */
bool partition_ahead_begin(partition *p, const struct expect_take *x, size_t n);
bool partition_ahead_while_waiting(void *partition);
void partition_ahead_end(partition *p);
/* After the append and sync, before anything touches the window: waits
 * for the helper (if started). */
void partition_ahead_wait(partition *p);
/* The take was not stored (its ids already out of the window,
 * expect_take_failed): the parts admitted ahead go back to the front of
 * the queue, to be admitted afresh. */
void partition_ahead_discard(partition *p);
/* At the start of a take: the parts admitted ahead, or NULL; their arrays
 * are swapped in (p->entries, p->recs and p->suffix hold their n records)
 * and *x is set up to continue their admission (expect_admit_more). */
pub_part *partition_ahead_take(partition *p, struct expect_take *x, size_t *n);
/* Ends the helper thread (nothing is ahead: the writer is going idle or
 * ending) and frees the second set of arrays. */
void partition_ahead_stop(partition *p);

/* partition_compress.c. Writer, lock held: is there compression work (a
 * finished copy to install, or a segment to hand over)? */
bool partition_compress_wanted(partition *p);
/* Any thread: a failed compression's pause is not over yet. */
bool partition_compress_paused(partition *p);
/* Any thread: a pause has just ended (true once per pause; it is cleared):
 * a running writer must be woken to hand the segments over. */
bool partition_compress_pause_over(partition *p);
/* Writer: installs a finished copy (when queue_empty, or once it has
 * waited long enough), then hands the next closed segment to the
 * compressor if none is with it. */
void partition_compress_step(partition *p, bool queue_empty);
/* No writer running, or on the writer: takes the segment back from the
 * compressor (waiting if it is being compressed) and installs a finished
 * copy (a failed log discards it). */
void partition_compress_settle(partition *p);

#endif
