/*
 * partition - one partition's queue and writer thread (see partition.h and
 * broker.h for the data flow). What the writer does with one take of the
 * queue (append, sync, offsets, done) is partition_write.c.
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
 *   done() -> acked callback (the fan-out wakes its subscriptions there, so
 *   the acks do not wait for ~1,000 wake-ups).
 * The end offset moves before the callback so that a subscription which
 * registers its live queue after the callback already sees the new end and
 * reads those records from the files: no gap. One registered before the
 * callback may get them both ways and skips the duplicates by offset.
 * Pipelined (fsync=always, the log's direct-write helper running, a take
 * whose payload is at least direct_write_bytes, without expectations or
 * a replica's records: partition_write.c, take_is_plain and
 * write_pipelined): the take's fdatasync runs on the log's direct-write
 * helper thread while the writer admits and appends the next take (whose
 * writes queue behind that sync; with ids, the writer admits the take
 * after that one while the append waits for the device:
 * partition_ahead.c); the steps after log_sync run
 * for the first take once its own sync has returned and the writer sees
 * it: between two staging buffers of the second take's append
 * (log_append_sync's hook), at its end, or after it, in any case before
 * the second's sync is awaited. Smaller takes are synced in line.
 * Each take is acked exactly when its own sync succeeded: a failed sync
 * fails the take appended behind it too (the log is failed), and a failed
 * append of the second never un-acks the first. A take with expectations
 * waits until the pending one is acked (it must see it in the topic
 * table). Ids: the pending take's are in the dedup window from its
 * admission on, so the second take's duplicates of them are found (acked
 * with the second take, after the first's sync); the first's failed sync
 * takes both takes' ids out, the second's failed append only its own.
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
#include "partition_internal.h"

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
#include "unlinker.h"
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

/* A writer's stack: it runs the log, the topic table and the fan-out's
 * matching, none of which keeps large buffers on the stack (the largest are
 * two PATH_MAX paths). The default 8 MiB would be reserved per thread;
 * sanitizers grow frames, so they get more. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define WRITER_STACK_BYTES (1024u * 1024u)
#else
#define WRITER_STACK_BYTES (256u * 1024u)
#endif

enum wake { WAKE_WORK, WAKE_STOP, WAKE_SYNC, WAKE_IDLE, WAKE_RETAIN, WAKE_COMPRESS };

/* Waits (lock held) until there is work, a close, an interval sync due, or
 * idle_ms have passed with nothing to do (and nothing left to sync). */
static enum wake wait_for_work(partition *p)
{
    uint64_t idle_at =
        p->opts.idle_ms ? partition_mono_ns() + (uint64_t)p->opts.idle_ms * 1000000ull : 0;
    while (!p->head && !p->stopping) {
        if (p->retain_wanted)
            return WAKE_RETAIN;
        /* Compression's turn (a copy to install, a segment to hand to the
         * compressor thread): when nothing is queued. */
        if (partition_compress_wanted(p))
            return WAKE_COMPRESS;
        uint64_t now = partition_mono_ns(), deadline;
        if (p->dirty && p->opts.fsync == PARTITION_FSYNC_INTERVAL) {
            if (partition_interval_due(p, now))
                return WAKE_SYNC;
            deadline = p->last_sync_mono + (uint64_t)p->opts.fsync_interval_ms * 1000000ull;
        } else if (idle_at && !p->zbusy) {
            /* (Never idle while the compressor has a segment of ours: its
             * done() wakes us to install the copy.) */
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
        partition_set_failed(p, rc, "close");
    partition_shrink_arrays(p, 0);
    partition_ahead_stop(p);
    if (p->dedup)
        dedup_expire(p->dedup, partition_wall_ns(p)); /* all expired: its memory goes too */
}

pub_part *partition_detach_prefix(partition *p, size_t already, bool ahead_only)
{
    pub_part *list = p->head, *last = NULL;
    size_t n = already;
    for (pub_part *part = list; part; part = part->next) {
        if (ahead_only && (part->batch->nexpect > 0 || part->batch->replica))
            break;
        if ((last || already) &&
            (n >= PARTITION_TAKE_EVENTS || part->count > PARTITION_TAKE_EVENTS - n))
            break;
        n += part->count;
        last = part;
    }
    if (!last)
        return NULL;
    p->head = last->next;
    if (!p->head)
        p->tail = NULL;
    last->next = NULL;
    return list;
}

pub_part *partition_detach_take(partition *p, size_t already)
{
    return partition_detach_prefix(p, already, false);
}

static void *writer_main(void *arg)
{
    partition *p = arg;
    /* "pbw:" and the partition's name, cut to the kernel's 15 bytes: what
     * top -H and perf show. */
    char tname[16];
    snprintf(tname, sizeof tname, "pbw:%s", partition_name(p));
    (void)pthread_setname_np(pthread_self(), tname);
    for (;;) {
        /* Parts admitted ahead (partition_ahead.c) are work already taken. */
        bool ahead = p->ahead.parts != NULL;
        pthread_mutex_lock(&p->lock);
        if (p->pend.on && !ahead && !p->head) {
            /* Nothing queued to go on with: the pending take's sync is
             * waited for and the take acked before anything else (an idle
             * wait, an interval sync, upkeep, the end). */
            pthread_mutex_unlock(&p->lock);
            partition_finish_pending(p);
            continue;
        }
        enum wake why = ahead ? WAKE_WORK : wait_for_work(p);
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
            partition_compress_step(p, true);
            continue;
        }
        if (why == WAKE_RETAIN) {
            p->retain_wanted = false;
            pthread_mutex_unlock(&p->lock);
            partition_run_upkeep(p);
            continue;
        }
        pub_part *taken = partition_detach_take(p, ahead ? p->ahead.n : 0);
        bool stop = p->stopping && !taken && !ahead;
        if (stop)
            p->exited = true; /* later submits are completed by the submitter */
        pthread_mutex_unlock(&p->lock);
        if (!ahead && taken && taken->batch->replica)
            partition_write_replica_take(p, taken);
        else if (ahead || taken)
            partition_write_take(p, taken);
        else if (why == WAKE_SYNC && atomic_load(&p->status) == 0)
            partition_sync_log(p);
        if (stop)
            break;
    }
    partition_ahead_stop(p); /* nothing is ahead: the queue was empty */
    /* partition_close does the final sync and the topic snapshot. */
    return NULL;
}

/* Starts a writer thread (lock held, p->running already claimed). */
static int start_writer(partition *p)
{
    return partition_start_thread(&p->thread, WRITER_STACK_BYTES, writer_main, p);
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
    /* Upkeep due; or, for a dormant partition, closed segments that wait
     * for compression (at open, say): a writer starts to hand them over. */
    bool due = upkeep_due(&p->up, now_ns);
    if (!due && (!upkeep_compress_pending(&p->up) || atomic_load(&p->status) < 0 ||
                 partition_compress_paused(p)))
        return;
    pthread_mutex_lock(&p->lock);
    if (!due && p->running && partition_compress_pause_over(p))
        pthread_cond_signal(&p->wake); /* its wait may have no deadline */
    if (p->exited || p->stopping || p->retain_wanted || (!due && p->running)) {
        pthread_mutex_unlock(&p->lock);
        return;
    }
    p->retain_wanted = due;
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
    bool ahead = p->ahead.state == AHEAD_WORK; /* the helper takes it (partition_ahead.c) */
    if (p->running) {
        /* The writer only waits on an empty queue, so only the first part
         * wakes it. The helper is woken after the unlock: woken under the
         * lock, it would at once wait for it again (a second sleep and
         * wake-up at each submit; the partition outlives its submitters,
         * store.c). The writer's wake stays under the lock: moved out too,
         * the plain publish path measured no better. */
        if (was_empty)
            pthread_cond_signal(&p->wake);
        pthread_mutex_unlock(&p->lock);
        if (ahead)
            pthread_cond_broadcast(&p->ahead.cv);
        return;
    }
    if (ahead)
        pthread_cond_broadcast(&p->ahead.cv);
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
    partition_complete_all(list, rc);
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
    free(p->pend.entries);
    free(p->pend.recs);
    free(p->ahead.entries);
    free(p->ahead.recs);
    free(p->ahead.slot_block);
    free(p->name);
    free(p->dir);
    spare_ledger_drop(p->spares); /* after log_close; queued recycles hold their own */
    free(p);
}

/* The dedup window, rebuilt from the log's records of the last
 * dedup_window_ms: what the log kept through a crash is what the window
 * holds. The snapshot of the last clean stop, when it is sound and fits the
 * log (dedup_load), gives the ids below its offset, and only the records
 * after it are read. A failed read is logged and leaves the window with
 * what it got. */
static int open_dedup(partition *p, uint64_t end)
{
    p->ids_marked = dedup_marked(p->io, p->dir);
    if (p->opts.dedup_window_ms == 0)
        return 0;
    int64_t window_ns = (int64_t)p->opts.dedup_window_ms * 1000000ll;
    uint32_t max_entries = p->opts.dedup_max_entries ? p->opts.dedup_max_entries : 1;
    int rc = dedup_create(&p->dedup, window_ns, max_entries);
    if (rc < 0 || !p->ids_marked)
        return rc; /* no id was ever stored here: nothing to read */
    uint64_t from = 0;
    rc = dedup_load(p->dedup, p->io, p->dir, p->name, end, &from);
    if (rc == PB_ENOMEM)
        return rc;
    if (rc < 0 && dedup_count(p->dedup) > 0) {
        /* Not used: start from an empty window (dedup_load adds nothing
         * unless it is used; this is for certainty). */
        dedup_destroy(p->dedup);
        p->dedup = NULL;
        if ((rc = dedup_create(&p->dedup, window_ns, max_entries)) < 0)
            return rc;
    }
    int64_t now = partition_wall_ns(p);
    dedup_expire(p->dedup, now);
    rc = dedup_rebuild(p->dedup, p->io, p->dir, p->name, now, from, end);
    if (rc < 0)
        p->window_partial = true; /* it lacks what could not be read: never saved */
    return rc == PB_ENOMEM ? rc : 0;
}

/* log_options.discard: a removed segment's unlink, off the writer. ctx:
 * the partition. */
static int discard_segment(void *ctx, const fileio *io, const char *path)
{
    partition *p = ctx;
    return unlinker_take(p->opts.unlinker, io, path);
}

/* log_options.recycle: a removed segment zeroed into a spare, off the
 * writer, which learns of the spare through the partition's ledger. */
static int recycle_segment_cb(void *ctx, const fileio *io, const char *path, uint32_t spares)
{
    partition *p = ctx;
    return unlinker_take_recycle(p->opts.unlinker, io, path, spares, p->spares);
}

/* log_options.discard_fd: a replaced segment's last close, off the writer. */
static int discard_segment_fd(void *ctx, const fileio *io, int fd)
{
    partition *p = ctx;
    return unlinker_take_fd(p->opts.unlinker, io, fd);
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
    p->suffix = p->suffix_own;
    p->io = p->opts.log.io ? p->opts.log.io : fileio_posix();
    if (!p->opts.log.logf) {
        p->opts.log.logf = log_message;
        p->opts.log.log_ctx = p;
    }
    if (p->opts.unlinker && !p->opts.log.discard) {
        p->opts.log.discard = discard_segment;
        p->opts.log.discard_fd = discard_segment_fd;
        p->opts.log.discard_ctx = p;
        if (!p->opts.log.recycle) {
            p->opts.log.recycle = recycle_segment_cb;
            if (!(p->spares = spare_ledger_new())) {
                rc = PB_ENOMEM;
                goto fail;
            }
            p->opts.log.spare_ledger = p->spares;
        }
    }
    if (!p->opts.log.recycle)
        p->opts.log.recycle_spares = 0; /* never zeroed on the writer's thread */
    p->opts.log.synced_acks = p->opts.fsync == PARTITION_FSYNC_ALWAYS;
    /* Spares count towards retain_bytes: keep only as many as it holds
     * besides the active segment and one closed one (two spares under
     * retain_bytes = 2 segments would leave no closed segment at all). */
    if (p->opts.retain.bytes > 0 && p->opts.log.recycle_spares > 0) {
        uint64_t seg = p->opts.log.segment_bytes ? p->opts.log.segment_bytes : 64ull << 20;
        uint64_t fit = p->opts.retain.bytes / seg;
        if (fit < 2 + (uint64_t)p->opts.log.recycle_spares)
            p->opts.log.recycle_spares = fit > 2 ? (uint32_t)(fit - 2) : 0;
    }
    if (p->opts.fsync < PARTITION_FSYNC_ALWAYS || p->opts.fsync > PARTITION_FSYNC_NEVER ||
        p->opts.topic_history == 0 || (p->opts.retain.compress_level && !p->opts.compressor)) {
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
    p->last_sync_mono = partition_mono_ns();
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
    e = pthread_cond_init(&p->ahead.cv, NULL);
    if (e != 0) {
        pthread_mutex_destroy(&p->lock);
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
        pthread_cond_destroy(&p->ahead.cv);
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
    st->events_ahead = atomic_load_explicit(&p->events_ahead, memory_order_relaxed);
    st->events_ahead_writer = atomic_load_explicit(&p->events_ahead_writer, memory_order_relaxed);
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
    /* No writer any more: this thread owns the log. A segment with the
     * compressor is taken back (or waited for, and its copy installed). */
    partition_compress_settle(p);
    int rc = atomic_load(&p->status);
    if (rc == 0 && p->dirty)
        rc = partition_sync_log(p);
    upkeep_stopping(&p->up, rc);
    /* Cover only what is durable and acknowledged: on a failed partition the
     * log may hold unsynced records past the end offset. */
    int src = topics_save(p->topics, p->io, p->dir, atomic_load(&p->end_offset));
    if (rc == 0)
        rc = src;
    /* The dedup window, for a quick start-up: only over a durable log (a
     * failed one may hold records past the end offset), and only when it
     * holds the ids of every record (not a standby's, nor one that ran out
     * of memory for them): else a snapshot would forget ids the log has.
     * Without a new one, the last one (if any) stays right: the records
     * after it are read from the log. A failure costs only the next
     * start-up's time (logged). */
    if (rc == 0 && p->dedup && p->ids_marked && !p->window_partial && dedup_complete(p->dedup))
        (void)dedup_save(p->dedup, p->io, p->dir, atomic_load(&p->end_offset));
    int crc = log_close(p->log);
    if (crc < 0) {
        logging_printf(LOG_ERROR, "partition %s: closing %s failed: %s", p->name, p->dir,
                       pb_strerror(crc));
        if (rc == 0)
            rc = crc;
    }
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->ahead.cv);
    partition_free(p);
    return rc;
}
