/*
 * partition_write - one take of a partition's queue into its log, on the
 * writer thread: the batch arrays (grown to the largest take, given back
 * after a run of small ones), the receive time, the append, the sync that
 * fsync asks for, the offsets into the batches, the topic table, the end
 * offset, the fan-out and done(); a replica's take (records from the
 * primary, offsets kept); and the upkeep between takes (retention, free
 * space); a plain take's pipelined sync (write_pipelined: the next take is
 * admitted and appended while the device syncs this one). The durability
 * order and the failure rules are described at the top of partition.c,
 * which runs the thread.
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

/* Batch arrays: kept up to KEEP_EVENTS entries; beyond, given back once
 * SHRINK_WINDOW takes in a row needed less than half of them. */
#define KEEP_EVENTS   4096u
#define SHRINK_WINDOW 32u
/* Freed bytes above this ask malloc to return memory to the system. */
#define TRIM_BYTES (4u << 20)

uint64_t partition_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int64_t partition_wall_ns(const partition *p)
{
    if (p->opts.log.now_ns)
        return p->opts.log.now_ns(p->opts.log.clock_ctx);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

/* Writer thread. Marks the partition failed (the first error sticks) and
 * logs it once. Nothing will be synced any more, so nothing is pending. */
void partition_set_failed(partition *p, int rc, const char *what)
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
void partition_complete_all(pub_part *part, int status)
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

int partition_sync_log(partition *p)
{
    uint64_t t0 = metrics_now_ns();
    int rc = log_sync(p->log);
    metrics_fsync_ns(metrics_now_ns() - t0);
    if (rc < 0) {
        atomic_fetch_add_explicit(&p->fsync_errors, 1, memory_order_relaxed);
        /* A log that is not failed refused before syncing (its segment
         * could not be reopened): nothing was lost, nothing is acked. */
        if (log_status(p->log) < 0)
            partition_set_failed(p, rc, "fdatasync");
        return rc;
    }
    p->dirty = false;
    p->last_sync_mono = partition_mono_ns();
    return 0;
}

bool partition_interval_due(const partition *p, uint64_t now)
{
    uint64_t interval = (uint64_t)p->opts.fsync_interval_ms * 1000000ull;
    return now - p->last_sync_mono >= interval;
}

int partition_reserve(log_entry **entries, live_record **recs, size_t *cap, size_t n)
{
    if (n <= *cap)
        return 0;
    size_t c = grow_capacity(*cap, n, sizeof **entries);
    if (c == 0 || grow_resize(entries, c, sizeof **entries) < 0 ||
        grow_resize(recs, c, sizeof **recs) < 0)
        return PB_ENOMEM;
    *cap = c;
    return 0;
}

static int reserve(partition *p, size_t n)
{
    return partition_reserve(&p->entries, &p->recs, &p->cap, n);
}

int partition_start_thread(pthread_t *t, size_t stack_bytes, void *(*fn)(void *), void *arg)
{
    pthread_attr_t attr;
    int e = pthread_attr_init(&attr);
    if (e != 0)
        return -e;
    e = pthread_attr_setstacksize(&attr, stack_bytes);
    if (e == 0)
        e = pthread_create(t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    return -e;
}

size_t partition_bytes_per_event(void)
{
    return sizeof(log_entry) + sizeof(live_record) + log_bytes_per_entry();
}

size_t partition_shrink_pair(log_entry **entries, live_record **recs, size_t *cap, size_t keep)
{
    if (*cap <= keep)
        return 0;
    size_t freed = (*cap - keep) * (sizeof **entries + sizeof **recs);
    if (keep == 0) {
        free(*entries);
        free(*recs);
        *entries = NULL;
        *recs = NULL;
    } else {
        /* A failed resize leaves that array as it was (larger than keep):
         * still correct under cap = keep. Keeping the old cap is not: the
         * other array may have shrunk, and reserve() would write past it. */
        (void)grow_resize(entries, keep, sizeof **entries);
        (void)grow_resize(recs, keep, sizeof **recs);
    }
    *cap = keep;
    return freed;
}

/* Gives the batch arrays (here and in the log) back down to keep entries. */
void partition_shrink_arrays(partition *p, size_t keep)
{
    size_t freed = p->log ? log_shrink_buffers(p->log, keep) : 0;
    freed += partition_shrink_pair(&p->entries, &p->recs, &p->cap, keep);
    /* The pending slot's pair (it swaps with the above), when no take holds it. */
    take_pending *t = &p->pend;
    if (!t->on)
        freed += partition_shrink_pair(&t->entries, &t->recs, &t->cap, keep);
    /* Large blocks freed by a thread may stay in its malloc arena; a burst
     * of millions of events must not pin hundreds of MiB. */
    if (freed > TRIM_BYTES)
        malloc_trim(0);
}

/* After each take: arrays larger than twice what the last SHRINK_WINDOW
 * takes needed (and than KEEP_EVENTS) shrink to that. Steady batch sizes
 * keep theirs, so the hot path does not reallocate. The pending slot's
 * pair counts when no take holds it: after a large pipelined take, smaller
 * takes that are not pipelined leave it there. */
static void shrink_after_take(partition *p, size_t n)
{
    if (n > p->window_max)
        p->window_max = n;
    if (++p->window_takes < SHRINK_WINDOW)
        return;
    size_t keep = p->window_max > KEEP_EVENTS ? p->window_max : KEEP_EVENTS;
    size_t cap = p->cap;
    if (!p->pend.on && p->pend.cap > cap)
        cap = p->pend.cap;
    if (cap > 2 * keep)
        partition_shrink_arrays(p, keep);
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
        partition_complete_all(part, PB_ETOOBIG);
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
    if (p->opts.durable && p->opts.acked)
        p->opts.acked(p->opts.durable_ctx);
}

/* Writer thread, woken by partition_upkeep_tick: retention, the free
 * space probe, and the resume of a partition a full disk stopped. */
void partition_run_upkeep(partition *p)
{
    if (atomic_load(&p->status) < 0) {
        if (!atomic_load(&p->up.heal_pending)) {
            atomic_store(&p->up.due_ns, INT64_MAX); /* failed for good: no more runs */
            return;
        }
        partition_compress_settle(p); /* nothing of the old log is installed */
        if (upkeep_resume(&p->up, &p->log, &p->opts.log, atomic_load(&p->end_offset),
                          resumed_record, p) == 0)
            atomic_store(&p->status, 0);
        return;
    }
    if (p->opts.min_free_bytes)
        (void)upkeep_space_refuses(&p->up);
    if (upkeep_retain(&p->up, p->log) < 0)
        partition_set_failed(p, log_status(p->log), "retention's removal");
}

/* Writes, syncs (per policy) and completes one take of the queue. */
/* The take's n stored records into the partition's counters. */
static void count_appended(partition *p, const live_record *recs, size_t n)
{
    uint64_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += recs[i].len + recs[i].suffix_len;
    atomic_fetch_add_explicit(&p->events_appended, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->bytes_appended, bytes, memory_order_relaxed);
}

/* Appends the n admitted records of a take (p->entries) and syncs them as
 * the fsync policy says; *first gets the offset of the first. 0, or the
 * error the whole take is answered with (the partition is marked failed
 * when the log is). */
/* The append is to fill in each record's CRC (live_record.crc, sent along
 * by a replication stream). Set just before the append: the arrays may
 * move while a take is admitted (admission ahead, then reserve). */
static void want_crcs(partition *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p->entries[i].crc_out = &p->recs[i].crc;
}

static int append_and_sync(partition *p, size_t n, uint64_t *first)
{
    if (n == 0)
        return 0;
    want_crcs(p, n);
    int rc = log_append(p->log, p->entries, n, first);
    if (rc < 0 && log_status(p->log) == 0) {
        /* Refused before writing anything (an event over the record limit
         * that reject_oversized should have caught, no memory, or the
         * segment could not be reopened): the log is intact and stays
         * usable; the publisher may retry. */
        return rc;
    }
    if (rc < 0) {
        if (rc != PB_EFAILED) /* (failed before: by a sync, counted there) */
            atomic_fetch_add_explicit(&p->write_errors, 1, memory_order_relaxed);
        partition_set_failed(p, rc, "write");
        note_failure(p);
        return rc;
    }
    p->dirty = true;
    if (p->opts.fsync == PARTITION_FSYNC_ALWAYS || (p->opts.fsync == PARTITION_FSYNC_INTERVAL &&
                                                    partition_interval_due(p, partition_mono_ns())))
        return partition_sync_log(p);
    return 0;
}

/* Counts the events of a list of parts. */
static size_t count_events(const pub_part *part)
{
    size_t n = 0;
    for (; part; part = part->next)
        n += part->count;
    return n;
}

/* The take cannot be stored at all (nothing written): the ids admitted
 * ahead (if any) leave the window, and every part gets rc. */
static void refuse_take(const expect_take *x, bool ahead, pub_part *all, int rc)
{
    if (ahead)
        expect_take_failed(x);
    partition_complete_all(all, rc);
}

/* The take's append failed or went wrong: once the helper is done with
 * the window, this take's ids (and the ones admitted ahead after them)
 * leave it, the ahead parts go back to the queue, every part gets rc. */
static void take_not_stored(partition *p, const expect_take *x, pub_part *all, int rc)
{
    expect_take_failed(x);
    partition_ahead_discard(p);
    partition_complete_all(all, rc);
}

/* A take's start: the parts admitted ahead (partition_ahead.c) first,
 * then `taken` (what was queued after them); the refusals before anything
 * is decided; the receive time; the admission (expect.h). true with *all
 * (the take's parts), x and *n (its records in p->entries and p->recs), or
 * false when the take was refused whole (every part completed). */
static bool admit_take(partition *p, pub_part *taken, expect_take *x, pub_part **all, size_t *n)
{
    size_t n0 = 0;
    pub_part **rest = &taken;
    *all = partition_ahead_take(p, x, &n0);
    bool ahead = *all != NULL;
    if (ahead) {
        pub_part *last = *all;
        while (last->next)
            last = last->next;
        last->next = taken;
        rest = &last->next;
    } else {
        *all = taken;
    }
    int rc = atomic_load(&p->status);
    if (rc < 0) {
        refuse_take(x, ahead, *all, atomic_load(&p->up.heal_pending) ? -ENOSPC : PB_EFAILED);
        return false;
    }
    /* Below min_free_bytes: refused before anything is written (ingest
     * refuses up front too; this catches what was queued meanwhile). */
    if (p->opts.min_free_bytes && upkeep_take_refused(&p->up)) {
        refuse_take(x, ahead, *all, -ENOSPC);
        return false;
    }
    /* One clock read per take: every event the writer admits gets the
     * same receive time (those admitted ahead got their rounds', earlier). */
    int64_t t = partition_wall_ns(p);
    if (ahead && t < x->time_ns)
        t = x->time_ns;
    if (t < p->last_time_ns)
        t = p->last_time_ns;
    reject_oversized(p, rest, event_put_receive_time(NULL, 0, t));
    if (!ahead)
        *all = taken;
    *n = n0 + count_events(*rest);
    rc = reserve(p, *n);
    if (rc < 0) {
        /* Nothing was written: the publisher may retry; the log is intact. */
        logging_printf(LOG_ERROR, "partition %s: no memory for a batch of %zu events", p->name, *n);
        refuse_take(x, ahead, *all, rc);
        return false;
    }
    p->last_time_ns = t;
    /* Every event the writer admits gets the same suffix: encoded once, and
     * each record points at the same bytes. Then what is stored:
     * expectations and ids are decided here, atomically with the append. */
    size_t suffix_len = event_put_receive_time(p->suffix, SUFFIX_SLOT, t);
    if (ahead) {
        x->time_ns = t;
        x->suffix_len = suffix_len;
        dedup_expire(x->dedup, t);
        *n = expect_admit_more(x, *rest, p->entries, p->recs, n0);
        return true;
    }
    *x = (expect_take){
        .topics = p->topics,
        .topics_complete = p->topics_complete,
        .dedup = p->dedup,
        .next = log_next_offset(p->log),
        .time_ns = t,
        .suffix = p->suffix,
        .suffix_len = suffix_len,
    };
    *n = expect_admit(x, taken, p->entries, p->recs);
    return true;
}

/* The take's n records (recs) are durable from offset first on: offsets,
 * topic table, end offset, the durable callback, done(), acked. No log
 * call: it may run inside one (write_pipelined's hook). */
static void take_acked(partition *p, const expect_take *x, pub_part *all, size_t n, uint64_t first,
                       const live_record *recs)
{
    expect_commit(x, all);
    if (topics_add(p->topics, recs, n) < 0 && !p->topics_warned) {
        p->topics_complete = false; /* expectations are refused from now on */
        p->topics_warned = true;
        logging_printf(LOG_WARN,
                       "partition %s: out of memory in the topic table; "
                       "last-N subscriptions may miss events",
                       p->name);
    }
    if (n > 0) {
        count_appended(p, recs, n);
        atomic_store_explicit(&p->end_offset, first + n, memory_order_release);
    }
    if (p->opts.durable && n > 0)
        p->opts.durable(p->opts.durable_ctx, p, recs, n);
    complete_stored(all);
    if (p->opts.durable && p->opts.acked && n > 0)
        p->opts.acked(p->opts.durable_ctx);
}

/* The upkeep after a take of n records (or the largest take still held in
 * the partition's arrays: they are not shrunk below it). */
static void take_upkeep(partition *p, size_t n)
{
    if (p->opts.compressor)
        atomic_store_explicit(&p->zactive_mono, partition_mono_ns(), memory_order_relaxed);
    shrink_after_take(p, n);
    /* The log failed (maybe by the take appended behind this pipelined
     * one: append_failed, after this, names that first cause): no removal,
     * no install of a compressed copy, which would fail the partition as
     * their own failure. */
    if (log_status(p->log) < 0)
        return;
    /* A rotation closed a segment: the size limit may be passed. After the
     * acks, so that publishers do not wait for the removal. */
    if (upkeep_after_take(&p->up, p->log) < 0)
        partition_set_failed(p, log_status(p->log), "retention's removal");
    partition_compress_step(p, false);
}

/* take_acked, then take_upkeep. busy: records of the partition's arrays
 * still in use (a take appended after this one). */
static void take_stored(partition *p, const expect_take *x, pub_part *all, size_t n, uint64_t first,
                        const live_record *recs, size_t busy)
{
    take_acked(p, x, all, n, first, recs);
    take_upkeep(p, n > busy ? n : busy);
}

/* Adds the payload bytes of the parts to *bytes; false if one of them
 * has an expectation or a replica's records. */
static bool parts_pipeline(const pub_part *part, uint64_t *bytes)
{
    for (; part; part = part->next) {
        const pub_batch *b = part->batch;
        if (b->replica || b->nexpect > 0)
            return false;
        for (uint32_t k = 0; k < part->count; k++)
            *bytes += b->events[part->events[k]].len;
    }
    return true;
}

/* May this take (the parts of both lists) be left pending, its sync
 * running on the log's helper while the writer goes on with the next one
 * (write_pipelined)? Under fsync = always, with a helper thread, a take of
 * direct_write_bytes or more (its payload), no expectation and no
 * replica's records in it: the next take's admission then depends on
 * nothing that this take's ack changes (the topic table that expectations
 * read gets its records only at the ack). Events with ids may be in it,
 * and parts admitted ahead: their ids entered the dedup window at
 * admission, before the write, so the next take is checked against them;
 * the window's rules while it is pending are at write_pipelined. */
static bool may_pipeline(const partition *p, const pub_part *taken, const pub_part *more)
{
    if (p->opts.fsync != PARTITION_FSYNC_ALWAYS || !p->log || !log_sync_async(p->log))
        return false;
    uint64_t bytes = 0;
    if (!parts_pipeline(taken, &bytes) || !parts_pipeline(more, &bytes))
        return false;
    /* A take too small for direct writes is synced in line: at a low rate
     * its ack does not wait for a hand-off to the helper and back. */
    return bytes >= p->opts.log.direct_min_bytes;
}

/* The parts admitted ahead (if any) and then taken. */
static bool take_is_plain(const partition *p, const pub_part *taken)
{
    return may_pipeline(p, p->ahead.parts, taken);
}

/* The pending take's sync ended with rc (taking ns): acked when it
 * succeeded, else failed with rc (the partition with it: the log is).
 * busy: records of the take appended after it, in the partition's arrays.
 * inside_log: called from inside log_append_sync (its hook): the upkeep
 * waits until the append is over (t->upkeep_due). */
static void complete_pending(partition *p, int rc, uint64_t ns, size_t busy, bool inside_log)
{
    take_pending *t = &p->pend;
    if (!t->on)
        return;
    t->on = false;
    metrics_fsync_ns(ns);
    if (rc < 0) {
        atomic_fetch_add_explicit(&p->fsync_errors, 1, memory_order_relaxed);
        if (log_status(p->log) < 0)
            partition_set_failed(p, rc, "fdatasync");
        expect_take_failed(&t->x);
        partition_complete_all(t->all, rc);
        return;
    }
    p->last_sync_mono = partition_mono_ns();
    if (!inside_log) {
        take_stored(p, &t->x, t->all, t->n, t->first, t->recs, busy);
        return;
    }
    take_acked(p, &t->x, t->all, t->n, t->first, t->recs);
    t->upkeep_due = true;
}

/* log_append_sync's hook, inside the next take's append: the pending
 * take's sync is over; the take is acked (or failed) now, not after the
 * whole append, so that its batches leave the in-flight budget sooner (the
 * loop reads on, the takes stay large). */
static void pending_synced(void *arg)
{
    partition *p = arg;
    uint64_t ns = 0;
    take_pending *t = &p->pend;
    t->early_rc = log_sync_finish(p->log, &ns);
    t->early = true;
    size_t n = t->n;
    complete_pending(p, t->early_rc, ns, 0, true);
    t->upkeep_n = n;
}

void partition_finish_pending(partition *p)
{
    if (!p->pend.on)
        return;
    uint64_t ns = 0;
    int rc = log_sync_finish(p->log, &ns);
    if (rc == 0)
        p->dirty = false; /* nothing was appended after it */
    complete_pending(p, rc, ns, 0, false);
}

/* The take (n records in the partition's arrays, appended from first on,
 * its sync begun) becomes the pending one: its arrays swap with the
 * pending slot's (free: the take before was finished), its records point
 * at the slot's copy of their receive time (the next take's admission
 * encodes its own into p->suffix). */
static void leave_pending(partition *p, const expect_take *x, pub_part *all, size_t n,
                          uint64_t first)
{
    take_pending *t = &p->pend;
    log_entry *e = t->entries;
    live_record *r = t->recs;
    size_t cap = t->cap;
    t->entries = p->entries;
    t->recs = p->recs;
    t->cap = p->cap;
    p->entries = e;
    p->recs = r;
    p->cap = cap;
    memcpy(t->suffix, x->suffix, x->suffix_len);
    /* (Those admitted ahead keep their round's suffix: partition_ahead.c
     * leaves those slots alone while this take is pending.) */
    for (size_t i = 0; i < n; i++)
        if (t->recs[i].suffix == x->suffix)
            t->recs[i].suffix = t->suffix;
    t->x = *x;
    t->x.suffix = t->suffix;
    t->all = all;
    t->n = n;
    t->first = first;
    t->on = true;
}

/* The take's append failed (rc): refused before anything was written (the
 * log intact: the publisher may retry), or the log failed. */
static void append_failed(partition *p, const expect_take *x, pub_part *all, int rc)
{
    if (log_status(p->log) < 0) {
        if (rc != PB_EFAILED) /* (failed before: by the pending take's sync) */
            atomic_fetch_add_explicit(&p->write_errors, 1, memory_order_relaxed);
        partition_set_failed(p, rc, "write");
        note_failure(p);
    }
    take_not_stored(p, x, all, rc);
}

/* A plain take (take_is_plain): appended and its sync begun
 * (log_append_sync: its writes queue on the log's helper behind the
 * pending take's sync, its own sync right behind its last write), then
 * the pending take's outcome taken (log_sync_finish), that take acked or
 * failed, and this one left pending: the device syncs it while the writer
 * acks the take before, admits and copies the next one. Each take is acked
 * exactly when its own sync succeeded: a failure of this take never
 * un-acks the one before, and a failed sync of that one fails this one
 * too (the log is failed: nothing after a failed sync is acked).
 * The dedup window meanwhile: this take's ids were added at its admission
 * (after the pending take's: offsets ascending), so a duplicate of a
 * pending id is found, and acked with the original offset only when this
 * take is completed, after the pending take's sync returned 0. The pending
 * take's failed sync takes every id from its first offset on out of the
 * window (expect_take_failed in complete_pending: this take's too); this
 * take's failed write, only its own (take_not_stored). */
static void write_pipelined(partition *p, const expect_take *x, pub_part *all, size_t n)
{
    take_pending *t = &p->pend;
    uint64_t first = x->next;
    t->early = false;
    void (*synced)(void *) = t->on ? pending_synced : NULL;
    want_crcs(p, n);
    /* While the append waits for the device, the writer admits the next
     * take's events itself (partition_ahead.c): off its path between
     * takes, where the device would wait for it. */
    bool ahead = n > 0 && partition_ahead_begin(p, x, n);
    bool (*waiting)(void *) = ahead ? partition_ahead_while_waiting : NULL;
    int rc = n > 0 ? log_append_sync(p->log, p->entries, n, &first, synced, waiting, p) : 0;
    partition_ahead_end(p);
    int prev = t->early_rc;
    if (!t->early) {
        uint64_t ns = 0;
        prev = t->on ? log_sync_finish(p->log, &ns) : 0;
        complete_pending(p, prev, ns, n, false);
    } else if (t->upkeep_due) {
        t->upkeep_due = false;
        take_upkeep(p, t->upkeep_n > n ? t->upkeep_n : n);
    }
    if (rc < 0) {
        append_failed(p, x, all, rc);
    } else if (n == 0 && prev == 0) {
        take_stored(p, x, all, 0, first, p->recs, 0);
    } else if (n == 0) {
        /* Nothing of it to write (every event a duplicate, or no event),
         * behind a failed sync: its duplicates' originals may be the
         * pending take's, not stored; never acked (the log is failed). */
        take_not_stored(p, x, all, prev);
    } else if (prev < 0 || first != x->next) {
        if (prev == 0) {
            /* Cannot happen: only this thread appends. */
            logging_printf(LOG_ERROR, "partition %s: appended at offset %llu, expected %llu",
                           p->name, (unsigned long long)first, (unsigned long long)x->next);
            partition_set_failed(p, PB_ECORRUPT, "append");
        }
        (void)log_sync_finish(p->log, NULL); /* this take's sync (if begun) counts for nothing */
        take_not_stored(p, x, all, prev < 0 ? prev : PB_ECORRUPT);
    } else {
        p->dirty = true;
        leave_pending(p, x, all, n, first);
    }
}

void partition_write_take(partition *p, pub_part *taken)
{
    /* A take that is not plain is decided, written and synced after the
     * pending one is acked, as every take was before pipelining. */
    bool plain = take_is_plain(p, taken);
    if (!plain)
        partition_finish_pending(p);
    expect_take x = {0};
    pub_part *all = NULL;
    size_t n = 0;
    if (!admit_take(p, taken, &x, &all, &n))
        return;
    /* The partition's first take with ids creates the dedup mark first:
     * in line (once). */
    if (plain && (x.ids == 0 || p->ids_marked)) {
        write_pipelined(p, &x, all, n);
        return;
    }
    partition_finish_pending(p);
    int rc;
    if (x.ids > 0 && !p->ids_marked && (rc = mark_ids(p)) < 0) {
        expect_take_failed(&x);
        partition_complete_all(all, rc); /* nothing written: the publisher may retry */
        return;
    }
    /* While this take is written and synced, the next one's ids
     * (partition_ahead.c): the window is the helper's until the wait.
     * Not after a take that could have been pipelined but for the dedup
     * mark (once): the takes after it are, and admit ahead themselves. */
    bool helped = !may_pipeline(p, all, NULL) && partition_ahead_start(p, &x, n);
    uint64_t first = x.next;
    rc = append_and_sync(p, n, &first);
    if (helped)
        partition_ahead_wait(p);
    if (rc < 0) {
        take_not_stored(p, &x, all, rc);
        return;
    }
    if (first != x.next) {
        /* Cannot happen: only this thread appends. Better refuse than ack
         * offsets the records do not have. */
        logging_printf(LOG_ERROR, "partition %s: appended at offset %llu, expected %llu", p->name,
                       (unsigned long long)first, (unsigned long long)x.next);
        partition_set_failed(p, PB_ECORRUPT, "append");
        take_not_stored(p, &x, all, PB_ECORRUPT);
        return;
    }
    take_stored(p, &x, all, n, first, p->recs, 0);
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
            p->entries[n] =
                (log_entry){.data = ev->data,
                            .len = ev->len,
                            .time_ns = ev->time_ns,
                            .record = ev->sealed ? ev->data - PB_RECORD_HEADER_SIZE : NULL};
            p->recs[n] = (live_record){.offset = next,
                                       .time_ns = ev->time_ns,
                                       .topic = ev->topic,
                                       .topic_len = ev->topic_len,
                                       .data = ev->data,
                                       .len = ev->len};
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
 * (always: see below), then announced and completed like any take. */
void partition_write_replica_take(partition *p, pub_part *taken)
{
    partition_finish_pending(p);
    if (atomic_load(&p->status) < 0) {
        partition_complete_all(taken, atomic_load(&p->up.heal_pending) ? -ENOSPC : PB_EFAILED);
        return;
    }
    if (p->opts.min_free_bytes && upkeep_space_refuses(&p->up)) {
        partition_complete_all(taken, -ENOSPC); /* the follower retries later */
        return;
    }
    size_t n = 0;
    for (const pub_part *part = taken; part; part = part->next)
        n += part->count;
    int rc = reserve(p, n);
    if (rc == 0 && p->dedup && !p->ids_marked && replica_has_ids(taken))
        rc = mark_ids(p);
    if (rc < 0) {
        partition_complete_all(taken, rc);
        return;
    }
    n = admit_replica(p, taken);
    uint64_t first = log_next_offset(p->log);
    if (n > 0) {
        p->window_partial = true; /* their ids are read from the log at start-up */
        want_crcs(p, n);
        rc = log_append(p->log, p->entries, n, NULL);
        if (rc < 0 && log_status(p->log) < 0) {
            partition_set_failed(p, rc, "write");
            note_failure(p);
        }
        /* Synced whatever this daemon's fsync says: its completion becomes
         * a ReplicaAck, whose offsets are durable (FORMAT.md 4.9), and a
         * synchronous primary acks its publishers on it. */
        if (rc >= 0) {
            /* Written: only now do their times count (a refused take's,
             * PB_EINVAL from a header that does not fit, do not). */
            for (size_t i = 0; i < n; i++)
                if (p->recs[i].time_ns > p->last_time_ns)
                    p->last_time_ns = p->recs[i].time_ns;
            p->dirty = true;
            rc = partition_sync_log(p);
        }
        if (rc < 0) {
            partition_complete_all(taken, rc);
            return;
        }
        (void)topics_add(p->topics, p->recs, n);
        atomic_store_explicit(&p->end_offset, first + n, memory_order_release);
        if (p->opts.durable)
            p->opts.durable(p->opts.durable_ctx, p, p->recs, n);
    }
    complete_stored(taken);
    if (p->opts.durable && p->opts.acked && n > 0)
        p->opts.acked(p->opts.durable_ctx);
    shrink_after_take(p, n);
    /* The standby's own retention (its [partition] settings), as for any take. */
    if (upkeep_after_take(&p->up, p->log) < 0)
        partition_set_failed(p, log_status(p->log), "retention's removal");
    partition_compress_step(p, false);
}
