/*
 * partition - one partition's queue and writer thread (see partition.h and
 * broker.h for the data flow).
 *
 * Threads:
 *   loop thread    partition_submit: lock, link the pub_part, signal.
 *   writer thread  writer_main: owns the log, the reusable batch arrays and
 *                  the topic table's updates; calls the durable callback and
 *                  every done() callback.
 *   any thread     the accessors (name, dir, end offset, status, topics).
 *   main thread    partition_open / partition_close.
 *
 * Durability order for one take of the queue (fsync=always):
 *   log_append (one writev) -> log_sync -> offsets and times into the
 *   batches -> topic table -> end offset (release) -> durable callback ->
 *   done().
 * The end offset moves before the callback so that a subscription which
 * registers its live queue after the callback already sees the new end and
 * reads those records from the files: no gap. One registered before the
 * callback may get them both ways and skips the duplicates by offset.
 * Under fsync=interval/never the sync step is left out (interval: done when
 * fsync_interval_ms has passed since the last sync, and when idle), so acks
 * can cover records a power loss would take: the documented trade-off.
 *
 * A failed append or sync makes the partition failed for good: the parts of
 * that take get the error, every later one PB_EFAILED, nothing is retried
 * (a second fdatasync can succeed after the kernel dropped the dirty pages).
 * A segment that cannot be reopened (EMFILE: nothing was written) only
 * fails that take.
 *
 * Idle partitions cost no descriptor and no thread. A partition opens
 * dormant: its log recovered, then its files closed (log_release). The
 * first submit starts its writer thread (small stack, WRITER_STACK_BYTES),
 * whose first append reopens the active segment. A writer that has had
 * nothing to do for idle_ms closes the files again, gives its batch arrays
 * back and ends; the next submit starts a new one. So descriptors and
 * threads follow the partitions being written to, not the partitions that
 * exist, and thousands of partitions open at start-up with a few
 * descriptors at a time. (One thread per busy partition is kept rather than
 * a shared pool of writers: each partition's group commit waits on its own
 * fdatasync, which a pool would have to multiplex; the thread count is
 * bounded by max_partitions and, in practice, by the partitions written to
 * within idle_ms.)
 *
 * Batch arrays grow to the largest take and are given back when takes have
 * been much smaller for a while (SHRINK_WINDOW takes), and all of them when
 * the writer goes idle: a burst does not pin its memory.
 */
#include "partition.h"

#include "event.h"
#include "dedup.h"
#include "expect.h"
#include "frame.h"
#include "grow.h"
#include "logging.h"
#include "metrics.h"
#include "pb_errors.h"
#include "record.h"
#include "topics.h"
#include "topics_cold.h"
#include "upkeep.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Room for one encoded server_receive_time field per event. */
#define SUFFIX_SLOT EVENT_RECEIVE_TIME_MAX

/* A writer's stack: it runs the log, the topic table and the fan-out's
 * matching, none of which keeps large buffers on the stack (the largest are
 * two PATH_MAX paths). The default 8 MiB would be reserved per thread;
 * sanitizers grow frames, so they get more. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define WRITER_STACK_BYTES (1024u * 1024u)
#else
#define WRITER_STACK_BYTES (256u * 1024u)
#endif

/* Batch arrays: kept up to KEEP_EVENTS entries; beyond, given back once
 * SHRINK_WINDOW takes in a row needed less than half of them. */
#define KEEP_EVENTS   4096u
#define SHRINK_WINDOW 32u
/* Freed bytes above this ask malloc to return memory to the system. */
#define TRIM_BYTES (4u << 20)

struct partition {
    char *name;
    char *dir;
    partition_options opts;
    const fileio *io; /* opts.log.io, or POSIX: the log's and the topic snapshot's */
    pb_log *log;
    topic_table *topics;
    dedup *dedup;         /* writer thread; NULL when dedup_window_ms is 0 */
    bool topics_complete; /* writer thread: the table knows every topic (expect.h) */
    bool ids_marked;      /* writer thread: DEDUP_MARK_NAME exists (dedup.h) */

    pthread_mutex_t lock; /* protects head, tail, stopping, exited, running, thread, joinable */
    pthread_cond_t wake;  /* work queued, or close requested (CLOCK_MONOTONIC) */
    pub_part *head;
    pub_part *tail;
    bool stopping;
    bool exited;        /* the writer has taken its last part */
    bool running;       /* a writer thread is in writer_main (or being started) */
    bool joinable;      /* `thread` has ended or will: join it before the next */
    bool start_warned;  /* a failed thread start was logged (until one succeeds) */
    bool retain_wanted; /* partition_retention_tick asked the writer for a run */
    pthread_t thread;

    _Atomic uint64_t end_offset;
    atomic_int status;
    /* Written by the writer (relaxed), read by /metrics: partition_get_stats. */
    _Atomic uint64_t events_appended, bytes_appended, write_errors, fsync_errors;
    upkeep up; /* retention, free space, resume after a full disk (upkeep.h) */

    /* Writer thread only (the current one; a closing thread after the
     * last has been joined). The arrays grow to the largest take; see
     * shrink_after_take. */
    log_entry *entries;
    live_record *recs;
    uint8_t suffix[SUFFIX_SLOT]; /* this take's receive time, shared by its events */
    size_t cap;
    size_t window_max;       /* largest take of the current shrink window */
    uint32_t window_takes;   /* takes in it */
    int64_t last_time_ns;    /* receive times never go backwards */
    uint64_t last_sync_mono; /* CLOCK_MONOTONIC ns of the last sync */
    bool dirty;              /* appended since the last sync */
    bool topics_warned;
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int64_t wall_ns(const partition *p)
{
    if (p->opts.log.now_ns)
        return p->opts.log.now_ns(p->opts.log.clock_ctx);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

/* Writer thread. Marks the partition failed (the first error sticks) and
 * logs it once. Nothing will be synced any more, so nothing is pending. */
static void set_failed(partition *p, int rc, const char *what)
{
    int expected = 0;
    p->dirty = false;
    if (atomic_compare_exchange_strong(&p->status, &expected, rc))
        logging_printf(LOG_ERROR,
                       "partition %s: %s failed: %s; the partition accepts no more events "
                       "(stored events stay readable)",
                       p->name, what, pb_strerror(rc));
}

/* Completes every part of the list with status; reads next before done(),
 * which may free the batch. */
static void complete_all(pub_part *part, int status)
{
    while (part) {
        pub_part *next = part->next;
        part->status = status;
        part->batch->done(part);
        part = next;
    }
}

/* Completes the parts of a stored take: status 0, or the refusal the
 * take's admission decided (nothing of that part stored). */
static void complete_stored(pub_part *part)
{
    while (part) {
        pub_part *next = part->next;
        part->status = part->refused;
        part->batch->done(part);
        part = next;
    }
}

static int sync_log(partition *p)
{
    uint64_t t0 = metrics_now_ns();
    int rc = log_sync(p->log);
    metrics_fsync_ns(metrics_now_ns() - t0);
    if (rc < 0) {
        atomic_fetch_add_explicit(&p->fsync_errors, 1, memory_order_relaxed);
        /* A log that is not failed refused before syncing (its segment
         * could not be reopened): nothing was lost, nothing is acked. */
        if (log_status(p->log) < 0)
            set_failed(p, rc, "fdatasync");
        return rc;
    }
    p->dirty = false;
    p->last_sync_mono = mono_ns();
    return 0;
}

static bool interval_due(const partition *p, uint64_t now)
{
    uint64_t interval = (uint64_t)p->opts.fsync_interval_ms * 1000000ull;
    return now - p->last_sync_mono >= interval;
}

/* entries and recs grow together, under one capacity. */
static int reserve(partition *p, size_t n)
{
    if (n <= p->cap)
        return 0;
    size_t cap = grow_capacity(p->cap, n, sizeof *p->entries);
    if (cap == 0 || grow_resize(&p->entries, cap, sizeof *p->entries) < 0 ||
        grow_resize(&p->recs, cap, sizeof *p->recs) < 0)
        return PB_ENOMEM;
    p->cap = cap;
    return 0;
}

size_t partition_bytes_per_event(void)
{
    return sizeof(log_entry) + sizeof(live_record) + log_bytes_per_entry();
}

/* Gives the batch arrays (here and in the log) back down to keep entries. */
static void shrink_arrays(partition *p, size_t keep)
{
    size_t freed = p->log ? log_shrink_buffers(p->log, keep) : 0;
    if (p->cap > keep) {
        freed += (p->cap - keep) * (sizeof *p->entries + sizeof *p->recs);
        if (keep == 0) {
            free(p->entries);
            free(p->recs);
            p->entries = NULL;
            p->recs = NULL;
        } else if (grow_resize(&p->entries, keep, sizeof *p->entries) < 0 ||
                   grow_resize(&p->recs, keep, sizeof *p->recs) < 0) {
            return; /* kept larger: still correct */
        }
        p->cap = keep;
    }
    /* Large blocks freed by a thread may stay in its malloc arena; a burst
     * of millions of events must not pin hundreds of MiB. */
    if (freed > TRIM_BYTES)
        malloc_trim(0);
}

/* After each take: arrays larger than twice what the last SHRINK_WINDOW
 * takes needed (and than KEEP_EVENTS) shrink to that. Steady batch sizes
 * keep theirs, so the hot path does not reallocate. */
static void shrink_after_take(partition *p, size_t n)
{
    if (n > p->window_max)
        p->window_max = n;
    if (++p->window_takes < SHRINK_WINDOW)
        return;
    size_t keep = p->window_max > KEEP_EVENTS ? p->window_max : KEEP_EVENTS;
    if (p->cap > 2 * keep)
        shrink_arrays(p, keep);
    p->window_max = 0;
    p->window_takes = 0;
}

/* Unlinks from *list the parts holding an event larger than the log takes
 * (net.c checks max_event_bytes, so this is a guard against a configuration
 * where that exceeds the record limit) and completes them with PB_ETOOBIG,
 * so the rest of the take is stored normally. */
static void reject_oversized(partition *p, pub_part **list, size_t suffix_len)
{
    uint64_t max = p->opts.log.max_record_bytes;
    if (max == 0 || max > PB_RECORD_MAX_EVENT)
        max = PB_RECORD_MAX_EVENT;
    pub_part **link = list;
    while (*link) {
        pub_part *part = *link;
        bool too_big = false;
        for (uint32_t k = 0; k < part->count && !too_big; k++)
            too_big = part->batch->events[part->events[k]].len + (uint64_t)suffix_len > max;
        if (!too_big) {
            link = &part->next;
            continue;
        }
        *link = part->next;
        logging_printf(LOG_WARN, "partition %s: refusing a batch with an event above %llu bytes",
                       p->name, (unsigned long long)max);
        part->next = NULL;
        complete_all(part, PB_ETOOBIG);
    }
}

/* The first id this partition stores: its mark first (dedup.h), so that a
 * restart rebuilds the window from the log. */
static int mark_ids(partition *p)
{
    int rc = dedup_mark(p->io, p->dir);
    if (rc < 0) {
        logging_printf(LOG_ERROR,
                       "partition %s: cannot create %s/%s: %s; events with ids are "
                       "refused until it can be",
                       p->name, p->dir, DEDUP_MARK_NAME, pb_strerror(rc));
        return rc;
    }
    p->ids_marked = true;
    return 0;
}

/* Writer thread: the log failed; a full disk may let it resume later. */
static void note_failure(partition *p)
{
    if (p->log && log_status(p->log) < 0)
        upkeep_note_failure(&p->up, p->log);
}

/* Writer thread: a record the resume found past the acknowledged end
 * (upkeep.h): it becomes visible like any stored record. */
static void resumed_record(void *ctx, const pb_record *rec)
{
    partition *p = ctx;
    event_view v;
    char err[8];
    live_record lr = {
        .offset = rec->offset, .time_ns = rec->time_ns, .data = rec->event, .len = rec->event_len};
    if (event_scan(rec->event, rec->event_len, &v, err, sizeof err) == 0) {
        lr.topic = v.topic.p;
        lr.topic_len = (uint32_t)v.topic.len;
    }
    (void)topics_add(p->topics, &lr, 1);
    const uint8_t *id;
    size_t id_len = p->dedup ? dedup_event_id(rec->event, rec->event_len, &id) : 0;
    if (id_len > 0)
        (void)dedup_add(p->dedup, id, id_len, rec->offset, rec->time_ns); /* a retry is a dup */
    if (rec->time_ns > p->last_time_ns)
        p->last_time_ns = rec->time_ns;
    atomic_store_explicit(&p->end_offset, rec->offset + 1, memory_order_release);
    if (p->opts.durable)
        p->opts.durable(p->opts.durable_ctx, p, &lr, 1);
}

/* Writer thread, woken by partition_upkeep_tick: retention, the free
 * space probe, and the resume of a partition a full disk stopped. */
static void run_upkeep(partition *p)
{
    if (atomic_load(&p->status) < 0) {
        if (!atomic_load(&p->up.heal_pending))
            atomic_store(&p->up.due_ns, INT64_MAX); /* failed for good: no more runs */
        else if (upkeep_resume(&p->up, &p->log, &p->opts.log, atomic_load(&p->end_offset),
                               resumed_record, p) == 0)
            atomic_store(&p->status, 0);
        return;
    }
    if (p->opts.min_free_bytes)
        (void)upkeep_space_refuses(&p->up);
    if (upkeep_retain(&p->up, p->log) < 0)
        set_failed(p, log_status(p->log), "retention's removal");
}

/* Writes, syncs (per policy) and completes one take of the queue. */
/* The take's n stored records into the partition's counters. */
static void count_appended(partition *p, size_t n)
{
    uint64_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += p->recs[i].len + p->recs[i].suffix_len;
    atomic_fetch_add_explicit(&p->events_appended, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->bytes_appended, bytes, memory_order_relaxed);
}

static void write_take(partition *p, pub_part *taken)
{
    int rc = atomic_load(&p->status);
    if (rc < 0) {
        complete_all(taken, atomic_load(&p->up.heal_pending) ? -ENOSPC : PB_EFAILED);
        return;
    }
    /* Below min_free_bytes: refused before anything is written (ingest
     * refuses up front too; this catches what was queued meanwhile). */
    if (p->opts.min_free_bytes && upkeep_take_refused(&p->up)) {
        complete_all(taken, -ENOSPC);
        return;
    }
    /* One clock read per take: every event of it gets the same receive time. */
    int64_t t = wall_ns(p);
    if (t < p->last_time_ns)
        t = p->last_time_ns;
    reject_oversized(p, &taken, event_put_receive_time(NULL, 0, t));
    size_t n = 0;
    for (const pub_part *part = taken; part; part = part->next)
        n += part->count;
    rc = reserve(p, n);
    if (rc < 0) {
        /* Nothing was written: the publisher may retry; the log is intact. */
        logging_printf(LOG_ERROR, "partition %s: no memory for a batch of %zu events", p->name, n);
        complete_all(taken, rc);
        return;
    }
    p->last_time_ns = t;
    /* Every event of the take gets the same suffix: encoded once, and each
     * record points at the same bytes. Then what is stored: expectations
     * and ids are decided here, atomically with the append (expect.h). */
    size_t suffix_len = event_put_receive_time(p->suffix, SUFFIX_SLOT, t);
    expect_take x = {
        .topics = p->topics,
        .topics_complete = p->topics_complete,
        .dedup = p->dedup,
        .next = log_next_offset(p->log),
        .time_ns = t,
        .suffix = p->suffix,
        .suffix_len = suffix_len,
    };
    n = expect_admit(&x, taken, p->entries, p->recs);
    if (x.ids > 0 && !p->ids_marked && (rc = mark_ids(p)) < 0) {
        expect_take_failed(&x);
        complete_all(taken, rc); /* nothing written: the publisher may retry */
        return;
    }
    uint64_t first = x.next;
    if (n > 0) {
        rc = log_append(p->log, p->entries, n, &first);
        if (rc < 0 && log_status(p->log) == 0) {
            /* Refused before writing anything (an event over the record
             * limit that reject_oversized should have caught, no memory,
             * or the segment could not be reopened): the log is intact and
             * stays usable; the publisher may retry. */
            expect_take_failed(&x);
            complete_all(taken, rc);
            return;
        }
        if (rc < 0) {
            atomic_fetch_add_explicit(&p->write_errors, 1, memory_order_relaxed);
            set_failed(p, rc, "write");
            note_failure(p);
            expect_take_failed(&x);
            complete_all(taken, rc);
            return;
        }
        p->dirty = true;
        if (p->opts.fsync == PARTITION_FSYNC_ALWAYS ||
            (p->opts.fsync == PARTITION_FSYNC_INTERVAL && interval_due(p, mono_ns()))) {
            rc = sync_log(p);
            if (rc < 0) {
                expect_take_failed(&x);
                complete_all(taken, rc);
                return;
            }
        }
    }
    if (first != x.next) {
        /* Cannot happen: only this thread appends. Better refuse than ack
         * offsets the records do not have. */
        logging_printf(LOG_ERROR, "partition %s: appended at offset %llu, expected %llu", p->name,
                       (unsigned long long)first, (unsigned long long)x.next);
        set_failed(p, PB_ECORRUPT, "append");
        expect_take_failed(&x);
        complete_all(taken, PB_ECORRUPT);
        return;
    }
    expect_commit(&x, taken);
    if (topics_add(p->topics, p->recs, n) < 0 && !p->topics_warned) {
        p->topics_complete = false; /* expectations are refused from now on */
        p->topics_warned = true;
        logging_printf(LOG_WARN,
                       "partition %s: out of memory in the topic table; "
                       "last-N subscriptions may miss events",
                       p->name);
    }
    if (n > 0) {
        count_appended(p, n);
        atomic_store_explicit(&p->end_offset, first + n, memory_order_release);
    }
    if (p->opts.durable && n > 0)
        p->opts.durable(p->opts.durable_ctx, p, p->recs, n);
    complete_stored(taken);
    shrink_after_take(p, n);
    /* A rotation closed a segment: the size limit may be passed. After the
     * acks, so that publishers do not wait for the removal. */
    if (upkeep_after_take(&p->up, p->log) < 0)
        set_failed(p, log_status(p->log), "retention's removal");
}

/* Queues the replica take's records (pub_batch.replica) into entries and
 * recs from the log's next offset on; a part that does not start there is
 * refused. Returns the number of records. */
static size_t admit_replica(partition *p, pub_part *taken)
{
    uint64_t next = log_next_offset(p->log);
    size_t n = 0;
    for (pub_part *part = taken; part; part = part->next) {
        part->refused = 0;
        if (part->batch->events[part->events[0]].offset != next) {
            part->refused = PB_EINVAL;
            continue;
        }
        for (uint32_t k = 0; k < part->count; k++, n++, next++) {
            const pub_event *ev = &part->batch->events[part->events[k]];
            p->entries[n] = (log_entry){.data = ev->data, .len = ev->len, .time_ns = ev->time_ns};
            p->recs[n] = (live_record){.offset = next,
                                       .time_ns = ev->time_ns,
                                       .topic = ev->topic,
                                       .topic_len = ev->topic_len,
                                       .data = ev->data,
                                       .len = ev->len};
            if (ev->time_ns > p->last_time_ns)
                p->last_time_ns = ev->time_ns;
        }
    }
    return n;
}

/* Does the take carry an event id (then the partition's dedup mark must
 * exist before it is stored, so a promoted standby rebuilds its window)? */
static bool replica_has_ids(const pub_part *taken)
{
    for (; taken; taken = taken->next)
        for (uint32_t k = 0; k < taken->count; k++)
            if (taken->batch->events[taken->events[k]].id_len > 0)
                return true;
    return false;
}

/* A standby's take: records appended as the primary stored them, synced
 * per the same policy, then announced and completed like any take. */
static void write_replica_take(partition *p, pub_part *taken)
{
    if (atomic_load(&p->status) < 0) {
        complete_all(taken, atomic_load(&p->up.heal_pending) ? -ENOSPC : PB_EFAILED);
        return;
    }
    if (p->opts.min_free_bytes && upkeep_space_refuses(&p->up)) {
        complete_all(taken, -ENOSPC); /* the follower retries later */
        return;
    }
    size_t n = 0;
    for (const pub_part *part = taken; part; part = part->next)
        n += part->count;
    int rc = reserve(p, n);
    if (rc == 0 && p->dedup && !p->ids_marked && replica_has_ids(taken))
        rc = mark_ids(p);
    if (rc < 0) {
        complete_all(taken, rc);
        return;
    }
    n = admit_replica(p, taken);
    uint64_t first = log_next_offset(p->log);
    if (n > 0) {
        rc = log_append(p->log, p->entries, n, NULL);
        if (rc < 0 && log_status(p->log) < 0) {
            set_failed(p, rc, "write");
            note_failure(p);
        }
        if (rc >= 0) {
            p->dirty = true;
            if (p->opts.fsync == PARTITION_FSYNC_ALWAYS ||
                (p->opts.fsync == PARTITION_FSYNC_INTERVAL && interval_due(p, mono_ns())))
                rc = sync_log(p);
        }
        if (rc < 0) {
            complete_all(taken, rc);
            return;
        }
        (void)topics_add(p->topics, p->recs, n);
        atomic_store_explicit(&p->end_offset, first + n, memory_order_release);
        if (p->opts.durable)
            p->opts.durable(p->opts.durable_ctx, p, p->recs, n);
    }
    complete_stored(taken);
    shrink_after_take(p, n);
    /* The standby's own retention (its [partition] settings), as for any take. */
    if (upkeep_after_take(&p->up, p->log) < 0)
        set_failed(p, log_status(p->log), "retention's removal");
}

enum wake { WAKE_WORK, WAKE_STOP, WAKE_SYNC, WAKE_IDLE, WAKE_RETAIN, WAKE_COMPRESS };

/* Waits (lock held) until there is work, a close, an interval sync due, or
 * idle_ms have passed with nothing to do (and nothing left to sync). */
static enum wake wait_for_work(partition *p)
{
    uint64_t idle_at = p->opts.idle_ms ? mono_ns() + (uint64_t)p->opts.idle_ms * 1000000ull : 0;
    while (!p->head && !p->stopping) {
        if (p->retain_wanted)
            return WAKE_RETAIN;
        /* Compression of closed segments only when nothing is queued:
         * publishes never wait behind more than one segment of it. */
        if (upkeep_compress_pending(&p->up) && p->log && atomic_load(&p->status) == 0)
            return WAKE_COMPRESS;
        uint64_t now = mono_ns(), deadline;
        if (p->dirty && p->opts.fsync == PARTITION_FSYNC_INTERVAL) {
            if (interval_due(p, now))
                return WAKE_SYNC;
            deadline = p->last_sync_mono + (uint64_t)p->opts.fsync_interval_ms * 1000000ull;
        } else if (idle_at) {
            if (now >= idle_at)
                return WAKE_IDLE;
            deadline = idle_at;
        } else {
            pthread_cond_wait(&p->wake, &p->lock);
            continue;
        }
        struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000ull),
                              .tv_nsec = (long)(deadline % 1000000000ull)};
        pthread_cond_timedwait(&p->wake, &p->lock, &ts);
    }
    return p->head ? WAKE_WORK : WAKE_STOP;
}

/* The writer has been idle for idle_ms: close the files (everything is
 * synced as the policy wants: an interval sync was due first; under
 * "never", closing loses nothing the policy promised) and give the arrays
 * back, and the dedup window's expired ids. */
static void go_idle(partition *p)
{
    int rc = p->log ? log_release(p->log) : 0;
    if (rc < 0)
        set_failed(p, rc, "close");
    shrink_arrays(p, 0);
    if (p->dedup)
        dedup_expire(p->dedup, wall_ns(p)); /* all expired: its memory goes too */
}

static void *writer_main(void *arg)
{
    partition *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->lock);
        enum wake why = wait_for_work(p);
        if (why == WAKE_IDLE) {
            pthread_mutex_unlock(&p->lock);
            go_idle(p);
            pthread_mutex_lock(&p->lock);
            if (!p->head && !p->stopping && !p->retain_wanted) {
                /* Dormant: the next submit starts a new writer (and joins
                 * this one, which only returns from here). */
                p->running = false;
                pthread_mutex_unlock(&p->lock);
                return NULL;
            }
            pthread_mutex_unlock(&p->lock);
            continue;
        }
        if (why == WAKE_COMPRESS) {
            pthread_mutex_unlock(&p->lock);
            if (upkeep_compress_one(&p->up, p->log) < 0)
                set_failed(p, log_status(p->log), "compression's directory sync");
            continue;
        }
        if (why == WAKE_RETAIN) {
            p->retain_wanted = false;
            pthread_mutex_unlock(&p->lock);
            run_upkeep(p);
            continue;
        }
        pub_part *taken = p->head;
        p->head = p->tail = NULL;
        bool stop = p->stopping && !taken;
        if (stop)
            p->exited = true; /* later submits are completed by the submitter */
        pthread_mutex_unlock(&p->lock);
        if (taken && taken->batch->replica)
            write_replica_take(p, taken);
        else if (taken)
            write_take(p, taken);
        else if (why == WAKE_SYNC && atomic_load(&p->status) == 0)
            sync_log(p);
        if (stop)
            break;
    }
    /* partition_close does the final sync and the topic snapshot. */
    return NULL;
}

/* Starts a writer thread (lock held, p->running already claimed). */
static int start_writer(partition *p)
{
    pthread_attr_t attr;
    int e = pthread_attr_init(&attr);
    if (e != 0)
        return -e;
    e = pthread_attr_setstacksize(&attr, WRITER_STACK_BYTES);
    if (e == 0)
        e = pthread_create(&p->thread, &attr, writer_main, p);
    pthread_attr_destroy(&attr);
    return -e;
}

/* Lock held, no writer running: starts one. The previous one has set
 * running = false and does nothing more but return: joining it is quick
 * (the lock is dropped meanwhile). 0, or the error (running is false
 * again); the lock is held on return either way. */
static int wake_dormant(partition *p)
{
    p->running = true;
    bool join = p->joinable;
    pthread_t old = p->thread;
    p->joinable = false;
    pthread_mutex_unlock(&p->lock);
    if (join)
        pthread_join(old, NULL);
    pthread_mutex_lock(&p->lock);
    int rc = start_writer(p); /* the new thread waits for the lock */
    if (rc == 0) {
        p->joinable = true;
        p->start_warned = false;
        return 0;
    }
    p->running = false;
    return rc;
}

void partition_upkeep_tick(partition *p, int64_t now_ns)
{
    if (!upkeep_due(&p->up, now_ns))
        return;
    pthread_mutex_lock(&p->lock);
    if (p->exited || p->stopping || p->retain_wanted) {
        pthread_mutex_unlock(&p->lock);
        return;
    }
    p->retain_wanted = true;
    int rc = 0;
    if (p->running)
        pthread_cond_signal(&p->wake);
    else if ((rc = wake_dormant(p)) < 0)
        p->retain_wanted = false; /* the next tick tries again */
    pthread_mutex_unlock(&p->lock);
    if (rc < 0)
        logging_printf(LOG_WARN, "partition %s: cannot start its writer for upkeep: %s", p->name,
                       pb_strerror(rc));
}

void partition_submit(partition *p, pub_part *part)
{
    part->next = NULL;
    pthread_mutex_lock(&p->lock);
    if (p->exited || (p->stopping && !p->running)) {
        /* Closing: the writer is gone. Misuse by the caller, but never lose a
         * callback. */
        pthread_mutex_unlock(&p->lock);
        part->status = PB_ECLOSED;
        part->batch->done(part);
        return;
    }
    bool was_empty = p->head == NULL;
    if (p->tail)
        p->tail->next = part;
    else
        p->head = part;
    p->tail = part;
    if (p->running) {
        /* The writer only waits on an empty queue, so only the first part
         * wakes it. */
        if (was_empty)
            pthread_cond_signal(&p->wake);
        pthread_mutex_unlock(&p->lock);
        return;
    }
    int rc = wake_dormant(p);
    if (rc == 0) {
        pthread_mutex_unlock(&p->lock);
        return;
    }
    pub_part *list = p->head;
    p->head = p->tail = NULL;
    bool warn = !p->start_warned;
    p->start_warned = true;
    pthread_mutex_unlock(&p->lock);
    if (warn)
        logging_printf(LOG_WARN,
                       "partition %s: cannot start its writer thread: %s; its batches are "
                       "refused until one starts",
                       p->name, pb_strerror(rc));
    complete_all(list, rc);
}

int partition_writer_running(partition *p)
{
    pthread_mutex_lock(&p->lock);
    int r = p->running;
    pthread_mutex_unlock(&p->lock);
    return r;
}

/* log.c's messages as daemon log lines, named by partition. */
static void log_message(void *ctx, enum log_level level, const char *msg)
{
    const partition *p = ctx;
    logging_printf(level, "partition %s: %s", p->name, msg);
}

static void partition_free(partition *p)
{
    topics_destroy(p->topics);
    dedup_destroy(p->dedup);
    free(p->entries);
    free(p->recs);
    free(p->name);
    free(p->dir);
    free(p);
}

/* The dedup window, rebuilt from the log's records of the last
 * dedup_window_ms: what the log kept through a crash is what the window
 * holds. A failed read is logged and leaves the window with what it got. */
static int open_dedup(partition *p, uint64_t end)
{
    p->ids_marked = dedup_marked(p->io, p->dir);
    if (p->opts.dedup_window_ms == 0)
        return 0;
    int rc = dedup_create(&p->dedup, (int64_t)p->opts.dedup_window_ms * 1000000ll,
                          p->opts.dedup_max_entries ? p->opts.dedup_max_entries : 1);
    if (rc < 0 || !p->ids_marked)
        return rc; /* no id was ever stored here: nothing to read */
    rc = dedup_rebuild(p->dedup, p->io, p->dir, p->name, wall_ns(p), end);
    return rc == PB_ENOMEM ? rc : 0;
}

int partition_open(partition **out, const char *data_dir, const char *name,
                   const partition_options *opts)
{
    *out = NULL;
    int rc = 0;
    bool sync_init = false;
    partition *p = calloc(1, sizeof *p);
    if (!p)
        return PB_ENOMEM;
    p->opts = *opts;
    p->io = p->opts.log.io ? p->opts.log.io : fileio_posix();
    if (!p->opts.log.logf) {
        p->opts.log.logf = log_message;
        p->opts.log.log_ctx = p;
    }
    if (p->opts.fsync < PARTITION_FSYNC_ALWAYS || p->opts.fsync > PARTITION_FSYNC_NEVER ||
        p->opts.topic_history == 0) {
        rc = PB_EINVAL;
        goto fail;
    }
    p->name = strdup(name);
    if (!p->name || asprintf(&p->dir, "%s/%s", data_dir, name) < 0) {
        p->dir = NULL;
        rc = PB_ENOMEM;
        goto fail;
    }
    rc = log_open(&p->log, p->dir, &p->opts.log);
    if (rc < 0)
        goto fail;
    uint64_t end = log_next_offset(p->log);
    atomic_init(&p->end_offset, end);
    atomic_init(&p->status, 0);
    p->last_time_ns = log_last_time(p->log);
    p->last_sync_mono = mono_ns();
    rc = topics_create(&p->topics, p->opts.topic_history);
    if (rc < 0)
        goto fail;
    topics_set_budget(p->topics, p->opts.topics_budget);
    rc = topics_load(p->topics, p->io, p->dir, p->name, end);
    if (rc == PB_ENOMEM)
        goto fail;
    /* Other failures were logged: the partition still stores and serves
     * events; only last-N starts may miss older ones, and expectations are
     * refused rather than checked against an incomplete table. */
    p->topics_complete = rc == 0;
    if ((rc = open_dedup(p, end)) < 0)
        goto fail;

    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0) {
        rc = PB_ENOMEM;
        goto fail;
    }
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int e = pthread_cond_init(&p->wake, &ca);
    pthread_condattr_destroy(&ca);
    if (e != 0) {
        rc = -e;
        goto fail;
    }
    e = pthread_mutex_init(&p->lock, NULL);
    if (e != 0) {
        pthread_cond_destroy(&p->wake);
        rc = -e;
        goto fail;
    }
    sync_init = true;
    /* What aged out while the daemon was down goes now (this thread owns
     * the log until the first submit). */
    if ((rc = upkeep_init(&p->up, p->name, p->dir, p->io, &p->opts.log, &p->opts.retain,
                          p->opts.min_free_bytes, p->opts.retain_floor, p->opts.retain_floor_ctx,
                          p->log)) < 0)
        goto fail;
    /* Dormant until the first submit: no descriptor, no thread. Recovery
     * synced what it changed. */
    if ((rc = log_release(p->log)) < 0)
        goto fail;
    /* INFO: start-up names every partition it recovered and where it goes on. */
    logging_printf(LOG_INFO,
                   "partition %s: open (%s), next offset %llu, %zu topics in memory, %zu in %s",
                   p->name, p->dir, (unsigned long long)end, topics_count(p->topics),
                   topics_cold_count(p->topics), TOPICS_COLD_NAME);
    *out = p;
    return 0;
fail:
    logging_printf(LOG_ERROR, "partition %s: cannot open %s/%s: %s", name, data_dir, name,
                   pb_strerror(rc));
    if (sync_init) {
        pthread_mutex_destroy(&p->lock);
        pthread_cond_destroy(&p->wake);
    }
    if (p->log && log_close(p->log) < 0)
        logging_printf(LOG_ERROR, "partition %s: closing its log after a failed open failed", name);
    partition_free(p);
    return rc;
}

const char *partition_name(const partition *p)
{
    return p->name;
}

const char *partition_dir(const partition *p)
{
    return p->dir;
}

uint64_t partition_end_offset(const partition *p)
{
    /* Pairs with the writer's release store: records below it are in the files. */
    return atomic_load_explicit(&p->end_offset, memory_order_acquire);
}

void partition_get_stats(partition *p, partition_stats *st)
{
    st->events_appended = atomic_load_explicit(&p->events_appended, memory_order_relaxed);
    st->bytes_appended = atomic_load_explicit(&p->bytes_appended, memory_order_relaxed);
    st->write_errors = atomic_load_explicit(&p->write_errors, memory_order_relaxed);
    st->fsync_errors = atomic_load_explicit(&p->fsync_errors, memory_order_relaxed);
}

uint64_t partition_first_offset(partition *p)
{
    return atomic_load(&p->up.first_offset);
}

bool partition_space_low(partition *p, uint64_t *avail, uint64_t *margin)
{
    return upkeep_space_low(&p->up, avail, margin);
}

int partition_status(const partition *p)
{
    return atomic_load(&p->status);
}

int partition_foreach_topic(partition *p, uint32_t n, partition_topic_fn fn, void *ctx)
{
    return topics_foreach(p->topics, n, fn, ctx);
}

/* Returns the first error of the final sync, the topic snapshot or closing
 * the log; or the sticky failure if the partition had failed before. */
int partition_close(partition *p)
{
    if (!p)
        return 0;
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    if (!p->running)
        p->exited = true; /* dormant: nobody takes anything any more */
    pthread_cond_signal(&p->wake);
    bool join = p->joinable;
    pthread_t t = p->thread;
    p->joinable = false;
    pthread_mutex_unlock(&p->lock);
    if (join)
        pthread_join(t, NULL);
    /* No writer any more: this thread owns the log. */
    int rc = atomic_load(&p->status);
    if (rc == 0 && p->dirty)
        rc = sync_log(p);
    upkeep_stopping(&p->up, rc);
    /* Cover only what is durable and acknowledged: on a failed partition the
     * log may hold unsynced records past the end offset. */
    int src = topics_save(p->topics, p->io, p->dir, atomic_load(&p->end_offset));
    if (rc == 0)
        rc = src;
    int crc = log_close(p->log);
    if (crc < 0) {
        logging_printf(LOG_ERROR, "partition %s: closing %s failed: %s", p->name, p->dir,
                       pb_strerror(crc));
        if (rc == 0)
            rc = crc;
    }
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->wake);
    partition_free(p);
    return rc;
}
