/*
 * log_cache - keeps what a partition's log holds in the kernel's page cache
 * to its newest opt.cache_bytes: once bytes are durable (a sync or a
 * rotation made them so) and more than cache_bytes newer ones follow, their
 * pages are dropped (fileio drop_cache: posix_fadvise DONTNEED).
 *
 * Why: with fsync = always nothing is dirty after an ack, so the kernel's
 * writeback of old data does not compete with our syncs; what grew with the
 * partition was the page cache itself. Every byte appended takes a page the
 * cache has never held; on this project's VM (a balloon that hands free
 * memory back to the host after ~2 s), touching such a page costs a host
 * fault, and on any machine a cache that only grows ends in reclaim. Pages
 * dropped behind the writer go back to the free lists and the next appends
 * take those same pages while they are warm: the writer works in a bounded
 * set of memory however large the partition grows (README, Performance:
 * "storage at scale").
 *
 * Readers of recent data (live subscribers catching up, a replay of the
 * last cache_bytes) still find it cached; older data is read from the disk,
 * as it would be after any restart.
 *
 * Threads: the partition's writer thread (as log.c). Only ever a hint:
 * nothing here changes a file or fails the log.
 */
#include "log_internal.h"

#include "segment.h"

#include <fcntl.h>
#include <limits.h>
#include <string.h>

/* The active segment's pages are dropped in steps of at least this much,
 * so a take of a few records costs no system call. */
#define DROP_STEP   (2u << 20)
#define PAGE_ALIGN  4096u

static void drop_range(pb_log *log, int fd, uint64_t from, uint64_t to)
{
    if (to > from)
        (void)log->io->drop_cache(log->io, fd, (off_t)from, (off_t)(to - from));
}

/* Drops the rest of closed segment `base`: it is opened again by name (a
 * segment that retention removed or compression replaced meanwhile is
 * gone, and its pages with it). */
static void drop_closed(pb_log *log, uint64_t base)
{
    char path[PATH_MAX];
    if (segment_path(path, sizeof path, log->dir, base, ".log") < 0)
        return;
    int fd = log->io->open(log->io, path, O_RDONLY, 0);
    if (fd < 0)
        return;
    (void)log->io->drop_cache(log->io, fd, 0, 0);
    (void)log->io->close(log->io, fd);
}

/* Drops every closed segment whose end lies cache_bytes or more behind end
 * (oldest first: they ended in that order). */
static void drop_behind(pb_log *log, uint64_t end)
{
    size_t k = 0;
    while (k < log->cache_nbehind && end - log->cache_behind[k].end >= log->opt.cache_bytes)
        drop_closed(log, log->cache_behind[k++].base);
    if (k == 0)
        return;
    log->cache_nbehind -= k;
    memmove(log->cache_behind, log->cache_behind + k,
            log->cache_nbehind * sizeof log->cache_behind[0]);
}

/* The active segment's limit: what lies cache_bytes behind its end, on a
 * page boundary (a partly dropped page would only be read again). */
static uint64_t active_limit(const pb_log *log, uint64_t size)
{
    if (size <= log->opt.cache_bytes)
        return 0;
    return (size - log->opt.cache_bytes) / PAGE_ALIGN * PAGE_ALIGN;
}

void log_cache_synced(pb_log *log, uint64_t durable_size)
{
    if (log->opt.cache_bytes == 0 || !log->io->drop_cache || log->fd < 0)
        return;
    drop_behind(log, log->cache_origin + durable_size);
    uint64_t limit = active_limit(log, durable_size);
    if (limit >= log->cache_from + DROP_STEP) {
        drop_range(log, log->fd, log->cache_from, limit);
        log->cache_from = limit;
    }
}

void log_cache_rotated(pb_log *log)
{
    uint64_t end = log->cache_origin + log->size;
    if (log->opt.cache_bytes > 0 && log->io->drop_cache && log->fd >= 0) {
        drop_behind(log, end);
        uint64_t limit = active_limit(log, log->size);
        if (limit > log->cache_from) {
            drop_range(log, log->fd, log->cache_from, limit);
            log->cache_from = limit;
        }
        if (log->cache_nbehind == LOG_CACHE_BEHIND) { /* full: the oldest goes now */
            drop_closed(log, log->cache_behind[0].base);
            memmove(log->cache_behind, log->cache_behind + 1,
                    (LOG_CACHE_BEHIND - 1) * sizeof log->cache_behind[0]);
            log->cache_nbehind--;
        }
        log->cache_behind[log->cache_nbehind++] =
            (struct log_cache_seg){.base = log->base, .end = end};
    }
    log->cache_origin = end;
    log->cache_from = 0;
}
