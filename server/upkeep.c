/*
 * upkeep - retention runs, the free-space margin and the resume after a
 * full disk, for one partition (see upkeep.h).
 *
 * Threads: as upkeep.h says per function: the writer thread owns the log
 * passed in; the atomics are read from any thread (the loop thread's
 * timer and ingest's up-front refusal).
 *
 * Why a resume is safe: only a failed WRITE with ENOSPC/EDQUOT resumes.
 * The kernel refused those bytes, so nothing that was written before and
 * synced is in doubt (unlike a failed fdatasync, after which dirty pages
 * may have been dropped: that stays fatal). The resume is the recovery a
 * restart would run, on the same files: the log is reopened, a torn tail
 * is cut, and what is left is made durable. Records of the failed batch
 * that reached the disk whole stay (like after a crash: never acked, the
 * publisher got an Error); they are handed to the caller so that the end
 * offset, the topic table and live subscribers see them in order. Only
 * events written after the resume are acknowledged.
 */
#include "upkeep.h"

#include "freespace.h"
#include "logging.h"
#include "metrics.h"
#include "pb_errors.h"
#include "reader.h"
#include "segment.h"

#include <errno.h>
#include <inttypes.h>
#include <time.h>

/* A retention run held back by a mirror, or cut short by an I/O error, is
 * tried again this much later. */
#define RETRY_NS (10ll * 1000000000ll)
/* A removal leaves its rename to the next directory sync (removal.c);
 * with no rotation coming, the tick makes that sync this soon after. */
#define FLUSH_NS (1000000000ll)

static int64_t wall(const upkeep *u)
{
    if (u->now_ns)
        return u->now_ns(u->clock_ctx);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

int upkeep_retain(upkeep *u, pb_log *log)
{
    if (!log || !retention_enabled(&u->retain) || log_status(log) < 0)
        return 0;
    /* The last removal waits for the next directory sync (removal.c): on
     * the tick, with no rotation coming, it is made now (and its space
     * freed: a low disk's tick comes here). */
    if (log_removal_flush(log) < 0)
        return log_status(log);
    int64_t now = wall(u);
    uint64_t floor = u->floor ? u->floor(u->floor_ctx, u->name) : UINT64_MAX;
    retention_result r;
    int rc = retention_run(log, &u->retain, now, floor, &r);
    if (r.removed > 0) {
        atomic_store(&u->first_offset, log_first_offset(log));
        metrics_retention_removed(r.removed, r.bytes);
        logging_printf(LOG_INFO,
                       "partition %s: retention removed %zu segment(s), offsets %" PRIu64
                       "..%" PRIu64 " (%" PRIu64 " bytes): %s",
                       u->name, r.removed, r.first, r.end - 1, r.bytes,
                       r.by_age && r.by_size ? "older than retain_age, above retain_bytes"
                       : r.by_age            ? "older than retain_age"
                                             : "above retain_bytes");
    }
    if (rc < 0 && log_status(log) == 0)
        logging_printf(LOG_WARN, "partition %s: retention could not read its segments: %s", u->name,
                       pb_strerror(rc));
    int64_t due = r.next_due_ns;
    if ((r.held || rc < 0) && now + RETRY_NS < due)
        due = now + RETRY_NS;
    if (r.removed > 0 && now + FLUSH_NS < due)
        due = now + FLUSH_NS; /* its space and durability wait for nothing else */
    atomic_store(&u->due_ns, due);
    u->closed_seen = log_closed_count(log);
    return log_status(log);
}

int upkeep_init(upkeep *u, const char *name, const char *dir, const fileio *io,
                const log_options *lo, const retention_policy *retain, uint64_t min_free_bytes,
                uint64_t (*floor)(void *, const char *), void *floor_ctx, pb_log *log)
{
    *u = (upkeep){.name = name,
                  .dir = dir,
                  .io = io,
                  .retain = *retain,
                  .min_free_bytes = min_free_bytes,
                  .floor = floor,
                  .floor_ctx = floor_ctx,
                  .now_ns = lo->now_ns,
                  .clock_ctx = lo->clock_ctx};
    atomic_init(&u->first_offset, log_first_offset(log));
    atomic_init(&u->due_ns, INT64_MAX);
    atomic_init(&u->space_low, false);
    atomic_init(&u->space_avail, 0);
    atomic_init(&u->space_margin, 0);
    atomic_init(&u->heal_pending, false);
    atomic_init(&u->compress_pending, u->retain.compress_level != 0);
    int rc = upkeep_retain(u, log);
    u->closed_seen = log_closed_count(log);
    return rc;
}

bool upkeep_compress_next(upkeep *u, pb_log *log, uint64_t *base)
{
    if (!log || u->retain.compress_level == 0 || log_status(log) < 0) {
        atomic_store(&u->compress_pending, false);
        return false;
    }
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < log_closed_count(log); i++) {
            uint64_t b = log_closed_base(log, i);
            if (b < u->zdone_base)
                continue;
            u->zdone_base = b + 1;
            if (!log_closed_compressed(log, i)) {
                *base = b;
                return true;
            }
        }
        if (!u->zrescan)
            break;
        /* A compression failed on the way (partition_compress.c): once
         * more from the oldest, which picks up the failed segment. */
        u->zrescan = false;
        u->zdone_base = 0;
    }
    atomic_store(&u->compress_pending, false);
    return false;
}

bool upkeep_compress_pending(const upkeep *u)
{
    return atomic_load_explicit(&u->compress_pending, memory_order_relaxed);
}

int upkeep_after_take(upkeep *u, pb_log *log)
{
    if (log_closed_count(log) == u->closed_seen)
        return 0;
    int rc = retention_enabled(&u->retain) ? upkeep_retain(u, log) : 0;
    u->closed_seen = log_closed_count(log);
    if (u->retain.compress_level != 0)
        atomic_store(&u->compress_pending, true);
    return rc;
}

bool upkeep_due(upkeep *u, int64_t now_ns)
{
    return atomic_load_explicit(&u->due_ns, memory_order_relaxed) <= now_ns ||
           atomic_load_explicit(&u->space_low, memory_order_relaxed) ||
           atomic_load_explicit(&u->heal_pending, memory_order_relaxed);
}

bool upkeep_space_refuses(upkeep *u)
{
    uint64_t avail = 0, margin = 0;
    bool low = freespace_low(u->io, u->dir, u->min_free_bytes, &avail, &margin);
    atomic_store(&u->space_avail, avail);
    atomic_store(&u->space_margin, margin);
    bool was = atomic_exchange(&u->space_low, low);
    if (low && !was)
        logging_printf(LOG_WARN,
                       "partition %s: %" PRIu64 " bytes free on the file system of %s, below "
                       "min_free_bytes (%" PRIu64 "); publishes are refused until space is freed",
                       u->name, avail, u->dir, margin);
    else if (!low && was)
        logging_printf(LOG_INFO,
                       "partition %s: %" PRIu64 " bytes free again (min_free_bytes %" PRIu64
                       "); accepting publishes",
                       u->name, avail, margin);
    return low;
}

bool upkeep_take_refused(upkeep *u)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    if (u->probed_mono_ns && now - u->probed_mono_ns < UPKEEP_PROBE_EVERY_MS * 1000000ull)
        return atomic_load_explicit(&u->space_low, memory_order_relaxed);
    u->probed_mono_ns = now;
    return upkeep_space_refuses(u);
}

bool upkeep_space_low(upkeep *u, uint64_t *avail, uint64_t *margin)
{
    *avail = atomic_load(&u->space_avail);
    *margin = atomic_load(&u->space_margin);
    return atomic_load(&u->space_low);
}

void upkeep_note_failure(upkeep *u, pb_log *log)
{
    if (log && log_failure_heals(log)) {
        atomic_store(&u->heal_pending, true);
        logging_printf(LOG_WARN,
                       "partition %s: the disk is full; publishes are refused, and resume by "
                       "themselves once space is freed (checked every second)",
                       u->name);
    }
}

/* Hands the records [from, to) of the reopened log to fn. */
static int hand_over(upkeep *u, uint64_t from, uint64_t to, upkeep_record_fn fn, void *ctx)
{
    segment_io sio;
    pb_reader *r;
    fileio_segment_io(u->io, &sio);
    int rc = pb_reader_open_io(&r, u->dir, &sio);
    if (rc < 0)
        return rc;
    pb_reader_set_end(r, to);
    rc = pb_reader_seek_offset(r, from);
    pb_record rec;
    while (rc == 0 && (rc = pb_reader_next(r, &rec)) == 0)
        fn(ctx, &rec);
    pb_reader_close(r);
    return rc == PB_EEOF ? 0 : rc;
}

int upkeep_resume(upkeep *u, pb_log **log, const log_options *lo, uint64_t acked_end,
                  upkeep_record_fn fn, void *ctx)
{
    if (upkeep_space_refuses(u))
        return 1;
    if (*log) {
        (void)log_close(*log); /* failed: nothing is synced; its error is known */
        *log = NULL;
    }
    int rc = log_open(log, u->dir, lo);
    if (rc < 0) {
        logging_printf(LOG_ERROR, "partition %s: space is back but reopening %s failed: %s",
                       u->name, u->dir, pb_strerror(rc));
        return rc;
    }
    uint64_t end = log_next_offset(*log);
    if (end > acked_end && (rc = hand_over(u, acked_end, end, fn, ctx)) < 0)
        logging_printf(LOG_ERROR,
                       "partition %s: reading back offsets %" PRIu64 "..%" PRIu64
                       " (stored whole before the disk filled, never acknowledged): %s",
                       u->name, acked_end, end - 1, pb_strerror(rc));
    atomic_store(&u->heal_pending, false);
    /* A compression the failure cut short is tried again. */
    u->zdone_base = 0;
    atomic_store(&u->zretry_mono, 0);
    if (u->retain.compress_level != 0)
        atomic_store(&u->compress_pending, true);
    logging_printf(LOG_INFO,
                   "partition %s: space is back; resumed at offset %" PRIu64 " (%" PRIu64
                   " unacknowledged event(s) of the failed batch were kept)",
                   u->name, end, end > acked_end ? end - acked_end : 0);
    return 0;
}

void upkeep_stopping(upkeep *u, int rc)
{
    if (rc != -ENOSPC && rc != -EDQUOT)
        return;
    logging_printf(LOG_ERROR,
                   "partition %s: stopping on a full disk (%s, %" PRIu64
                   " bytes free at the last probe): every acknowledged event is stored; the "
                   "batches refused since were not; free space in %s's file system and start "
                   "again",
                   u->name, pb_strerror(rc), atomic_load(&u->space_avail), u->dir);
}
