/*
 * partition_compress - a partition's side of compressing its closed
 * segments (compress = zstd): the writer hands one segment at a time to
 * the daemon's compressor thread (compressor.h), which writes the
 * compressed copy; the writer then puts the copy in place
 * (log_compress_install: rename over the .log, directory fsync).
 *
 * Threads: partition_compress_step and partition_compress_wanted on the
 * writer thread (wanted with the lock held); job_done on the compressor
 * thread; partition_compress_settle on whoever owns the log with no
 * writer running (partition_close) or on the writer (before a resume).
 * zbusy and zready are under p->lock.
 *
 * Why the writer installs: it is the thread that changes which segment
 * files exist (rotation, retention's removal), so an install never races a
 * removal; a segment removed while the compressor read it is found gone at
 * install and its copy removed (compress.c). Why it installs when its
 * queue is empty (or once a copy has waited ZREADY_MAX_WAIT_NS): the
 * directory fsync costs about one group commit, which publishes should not
 * wait for while they keep coming.
 *
 * A compression that fails for a reason that may pass (the disk full under
 * the .ztmp, no descriptor left) is tried again opts.compress_retry_ms
 * later: the segment goes back in line, and meanwhile nothing keeps the
 * writer awake (the upkeep tick wakes a dormant one when the pause ends).
 */
#include "partition_internal.h"

#include "compressor.h"
#include "logging.h"
#include "pb_errors.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>

/* A finished copy waits at most this long for an empty queue. */
#define ZREADY_MAX_WAIT_NS (500ull * 1000000ull)

/* opts.compress_retry_ms's default. */
#define ZRETRY_DEFAULT_MS 30000u

/* A failure that may pass: any system error (a full disk, no descriptor,
 * an I/O error) or no memory. Not: damage in the segment (PB_ECORRUPT and
 * kin: the same bytes fail again; it stays plain and readable). */
static bool may_pass(int rc)
{
    return (rc < 0 && rc >= PB_ERRNO_MIN) || rc == PB_ENOMEM;
}

/* Writer: after a pause the later segments are handed over, and the
 * failed one again on the next pass (a segment that keeps failing never
 * holds the others back); logged at WARN the first time only. */
static void retry_later(partition *p, const compress_job *j)
{
    uint32_t ms = p->opts.compress_retry_ms ? p->opts.compress_retry_ms : ZRETRY_DEFAULT_MS;
    bool first = p->zfail_base != j->base + 1;
    p->zfail_base = j->base + 1;
    p->up.zrescan = true;
    atomic_store(&p->up.compress_pending, true);
    atomic_store(&p->up.zretry_mono, partition_mono_ns() + (uint64_t)ms * 1000000ull);
    logging_printf(first ? LOG_WARN : LOG_DEBUG,
                   "partition %s: segment %020" PRIu64
                   " stays uncompressed for now: %s; trying again in %u ms",
                   p->name, j->base, j->why, ms);
}

bool partition_compress_paused(partition *p)
{
    uint64_t at = atomic_load(&p->up.zretry_mono);
    return at && partition_mono_ns() < at;
}

bool partition_compress_pause_over(partition *p)
{
    uint64_t at = atomic_load(&p->up.zretry_mono);
    return at && partition_mono_ns() >= at &&
           atomic_compare_exchange_strong(&p->up.zretry_mono, &at, 0);
}

/* Compressor thread: the .ztmp is written (or not); wake the writer. */
static void job_done(compress_job *job)
{
    partition *p = (partition *)((char *)job - offsetof(partition, zjob));
    pthread_mutex_lock(&p->lock);
    p->zready = true;
    p->zready_mono = partition_mono_ns();
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->lock);
}

/* Writer (or the closing thread): what the finished job produced goes in
 * place, or is reported. */
static void install(partition *p)
{
    const compress_job *j = &p->zjob;
    if (j->rc == -ENOENT || j->rc == -ECANCELED) {
        /* Retention removed it before the compressor opened it, or the
         * partition is closing (compressed at the next start). */
        logging_printf(LOG_DEBUG, "partition %s: %s", p->name, j->why);
        return;
    }
    if (j->rc < 0 && may_pass(j->rc)) {
        retry_later(p, j);
        return;
    }
    if (j->rc < 0 || (j->rc == 0 && j->why[0])) {
        logging_printf(LOG_WARN, "partition %s: segment %020" PRIu64 " stays uncompressed: %s",
                       p->name, j->base, j->why);
        return;
    }
    if (j->rc == 0)
        return; /* it was compressed already */
    if (!p->log) {
        /* A resume after a full disk could not reopen the log. */
        log_compress_discard(p->io, p->dir, j->base);
        return;
    }
    int rc = log_compress_install(p->log, j->base);
    if (rc >= 0 && p->zfail_base == j->base + 1) {
        p->zfail_base = 0;
        logging_printf(LOG_INFO, "partition %s: segment %020" PRIu64 " compressed after all",
                       p->name, j->base);
    }
    if (rc == 1)
        logging_printf(LOG_INFO,
                       "partition %s: compressed segment %020" PRIu64 ": %" PRIu64 " -> %" PRIu64
                       " bytes",
                       p->name, j->base, j->plain, j->packed);
    else if (rc == 0)
        logging_printf(LOG_DEBUG,
                       "partition %s: segment %020" PRIu64
                       " was removed by retention while being compressed; its copy is removed",
                       p->name, j->base);
    else if (log_status(p->log) < 0 && atomic_load(&p->status) == 0)
        partition_set_failed(p, log_status(p->log), "compression's directory sync");
}

bool partition_compress_wanted(partition *p)
{
    if (p->zready)
        return true;
    return !p->zbusy && !partition_compress_paused(p) && p->opts.compressor && p->log &&
           atomic_load(&p->status) == 0 && upkeep_compress_pending(&p->up);
}

void partition_compress_step(partition *p, bool queue_empty)
{
    pthread_mutex_lock(&p->lock);
    bool ready =
        p->zready && (queue_empty || partition_mono_ns() - p->zready_mono >= ZREADY_MAX_WAIT_NS);
    if (ready)
        p->zready = p->zbusy = false;
    bool busy = p->zbusy;
    pthread_mutex_unlock(&p->lock);
    if (ready)
        install(p);
    uint64_t base;
    if (busy || !p->opts.compressor || !p->log || atomic_load(&p->status) < 0 ||
        partition_compress_paused(p) || !upkeep_compress_next(&p->up, p->log, &base))
        return;
    p->zjob = (compress_job){.io = p->io,
                             .dir = p->dir,
                             .base = base,
                             .level = p->opts.retain.compress_level,
                             .done = job_done,
                             .active_mono = &p->zactive_mono};
    pthread_mutex_lock(&p->lock);
    p->zbusy = true;
    pthread_mutex_unlock(&p->lock);
    compressor_submit(p->opts.compressor, &p->zjob);
}

void partition_compress_settle(partition *p)
{
    pthread_mutex_lock(&p->lock);
    bool busy = p->zbusy;
    pthread_mutex_unlock(&p->lock);
    if (busy && compressor_cancel(p->opts.compressor, &p->zjob)) {
        pthread_mutex_lock(&p->lock);
        p->zbusy = false; /* taken back before it started: no .ztmp */
        pthread_mutex_unlock(&p->lock);
        return;
    }
    /* Not handed over, or done (cancel waited for its done()). */
    pthread_mutex_lock(&p->lock);
    bool ready = p->zready;
    p->zready = p->zbusy = false;
    pthread_mutex_unlock(&p->lock);
    if (ready)
        install(p);
}
