/*
 * removal - a partition's closed (rotated) segments: the one list of which
 * closed segments exist (rotation adds to its end, retention takes from its
 * front; the compressor's install, compress.c, replaces a closed file in
 * place and marks it to be read again), what each holds (size, newest
 * receive time, read lazily), and their crash-safe removal (see log.h).
 *
 * Threads: the partition's writer thread (or whoever opens the log). Every
 * file operation goes through the fileio table, so the power-loss
 * simulation covers removal.
 *
 * Why this order: segments go oldest first, and the directory is synced
 * after each one, so no later removal can become durable before an earlier
 * one: after any crash the files left hold a contiguous range of offsets
 * from the lowest base on. Within one segment the .log goes first: a crash
 * between the two leaves an orphan .idx, which no reader looks at
 * (readers and recovery list .log files) and the next open removes; so
 * the .idx is unlinked after the directory sync, by the unlinker thread
 * like the .log.del. The
 * other order would leave a .log without its index, which recovery would
 * rebuild by scanning the whole segment only for retention to remove it
 * again.
 *
 * The .log "goes" by a rename to <base>.log.del, which no reader or
 * recovery lists; once a directory sync has made that durable, the
 * unlink that frees the space (milliseconds for a large segment on ext4)
 * is handed to opts.discard, the daemon's unlinker thread, so the writer
 * does not wait for it. A .log.del a crash leaves is removed at the next
 * open, like an orphan .idx.
 *
 * The directory sync that makes a removal durable is not its own: it is
 * the next one the writer makes anyway (the rotation that follows, an
 * install of a compressed copy), or the next removal's before it starts,
 * or log_removal_flush (the upkeep tick), release or close. So at most
 * one removal is ever not durable, the order above holds (each rename is
 * durable before the next is made), and a rotation's sync and a removal's
 * are one fsync: retention cost the writer two directory fsyncs per
 * segment, now one. A crash before that sync may bring the segment back
 * (a contiguous range still: the oldest segment; retention removes it
 * again); a reader told it was removed then finds it there.
 */
#include "log_internal.h"

#include "grow.h"
#include "pb_errors.h"
#include "record.h"
#include "segment.h"
#include "sort.h"
#include "zseg.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

void log_closed_add(pb_log *log, uint64_t base, uint64_t bytes, int64_t last_time, bool known)
{
    if (log->closed_stale)
        return; /* the next listing finds it */
    if (grow_reserve(&log->closed, &log->closed_cap, log->nclosed + 1, sizeof *log->closed) < 0) {
        log->closed_stale = true;
        return;
    }
    log->closed[log->nclosed++] =
        (closed_seg){.base = base, .bytes = bytes, .last_time = last_time, .known = known};
}

typedef struct base_list {
    uint64_t *v;
    size_t n, cap;
    const char *ext;
} base_list;

static int collect(void *arg, const char *name)
{
    base_list *l = arg;
    uint64_t base;
    if (!segment_parse_name(name, l->ext, &base))
        return 0;
    if (grow_reserve(&l->v, &l->cap, l->n + 1, sizeof *l->v) < 0)
        return PB_ENOMEM;
    l->v[l->n++] = base;
    return 0;
}

/* Lists the directory again (after a failed addition): every .log below
 * the active segment is closed. */
static int reload(pb_log *log)
{
    base_list l = {.ext = ".log"};
    int rc = log->io->list_dir(log->io, log->dir, collect, &l);
    if (rc < 0) {
        free(l.v);
        return rc;
    }
    sort_u64(l.v, l.n);
    size_t n = 0;
    while (n < l.n && l.v[n] < log->base)
        n++;
    if (grow_reserve(&log->closed, &log->closed_cap, n ? n : 1, sizeof *log->closed) < 0) {
        free(l.v);
        return PB_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        log->closed[i] = (closed_seg){.base = l.v[i]};
    log->nclosed = n;
    log->closed_stale = false;
    free(l.v);
    return 0;
}

/* Unlinks every <base><ext> below `below` (UINT64_MAX: all); true if any. */
static bool remove_listed(pb_log *log, const char *ext, uint64_t below, const char *why)
{
    base_list l = {.ext = ext};
    char path[PATH_MAX];
    bool removed = false;
    int rc = log->io->list_dir(log->io, log->dir, collect, &l);
    for (size_t i = 0; rc == 0 && i < l.n; i++) {
        if (l.v[i] >= below || segment_path(path, sizeof path, log->dir, l.v[i], ext) < 0)
            continue;
        rc = log->io->unlink(log->io, path);
        if (rc < 0 && rc != -ENOENT) {
            log_say(log, LOG_WARN, "%s: cannot remove it (%s): %s", path, why, pb_strerror(rc));
            break;
        }
        log_say(log, LOG_INFO, "%s: %s; removed", path, why);
        removed = true;
        rc = 0;
    }
    free(l.v);
    return removed;
}

void log_remove_orphans(pb_log *log, uint64_t first_base)
{
    bool removed =
        remove_listed(log, ".idx", first_base,
                      "an index without its segment, which retention removed before a crash");
    /* Nothing compresses while the log opens (the writer hands out the
     * work, and its thread has not started): every .ztmp is a leftover of
     * a compression a crash or a stop cut short (compress.c). */
    removed |= remove_listed(log, ".log.ztmp", UINT64_MAX,
                             "an unfinished compressed copy, left by a crash");
    /* Segments retention removed (renamed out of sight) whose unlink a
     * crash or a stop cut short, or that failed. */
    removed |=
        remove_listed(log, ".log.del", UINT64_MAX, "a segment retention removed, not yet unlinked");
    /* Recycled spares (recycle.h) from before the start: reused, but for
     * those beyond the partition's bound (off: all), handed to the unlinker. */
    log_tidy_spares(log);
    if (removed)
        (void)log_sync_dir(log); /* fails the log if it fails: as for any dir sync */
}

size_t log_closed_count(pb_log *log)
{
    if (log->closed_stale && reload(log) < 0)
        return 0; /* nothing is removed until the list can be made */
    return log->nclosed;
}

uint64_t log_first_offset(const pb_log *log)
{
    return log->nclosed > 0 && !log->closed_stale ? log->closed[0].base : log->base;
}

uint64_t log_active_bytes(const pb_log *log)
{
    return log->size;
}

/* Newest receive time in segment s: from its index's last entry (verified
 * against the record it names) to the end of the file, so a 64 MiB segment
 * costs a read of about index_interval bytes. */
static int64_t newest_time(pb_log *log, segment_buf *b, const closed_seg *s, uint64_t size)
{
    char ipath[PATH_MAX];
    uint64_t pos = PB_FILE_HEADER_SIZE, expected = s->base;
    int64_t last = INT64_MAX;
    pb_record rec;
    uint32_t rsize;
    if (segment_path(ipath, sizeof ipath, log->dir, s->base, ".idx") == 0) {
        int ifd = log->io->open(log->io, ipath, O_RDONLY, 0);
        off_t isize;
        if (ifd >= 0) {
            uint8_t raw[PB_INDEX_ENTRY_SIZE];
            segment_index_entry e;
            if (log->io->fsize(log->io, ifd, &isize) == 0 &&
                isize >= (off_t)(PB_FILE_HEADER_SIZE + PB_INDEX_ENTRY_SIZE) &&
                log->io->pread(log->io, ifd, raw, sizeof raw, isize - (off_t)PB_INDEX_ENTRY_SIZE) ==
                    (ssize_t)sizeof raw) {
                segment_index_entry_decode(raw, &e);
                if (e.position >= PB_FILE_HEADER_SIZE && e.position < size &&
                    segment_read_record(b, e.position, PB_RECORD_MAX_EVENT, &rec, &rsize) == 0 &&
                    rec.offset == e.offset && rec.time_ns == e.time_ns) {
                    pos = e.position;
                    expected = e.offset;
                }
            }
            (void)log->io->close(log->io, ifd); /* read-only */
        }
    }
    while (pos < size && segment_read_record(b, pos, PB_RECORD_MAX_EVENT, &rec, &rsize) == 0 &&
           rec.offset >= expected) {
        last = rec.time_ns;
        expected = rec.offset + 1;
        pos += rsize;
    }
    return last;
}

static int fill(pb_log *log, closed_seg *s)
{
    char path[PATH_MAX];
    off_t size;
    segment_buf b = {0};
    int rc = segment_path(path, sizeof path, log->dir, s->base, ".log");
    if (rc < 0)
        return rc;
    int fd = log->io->open(log->io, path, O_RDONLY, 0);
    if (fd < 0)
        return fd;
    if ((rc = log->io->fsize(log->io, fd, &size)) < 0 ||
        (rc = segment_buf_init(&b, fileio_segment_pread, (void *)log->io)) < 0)
        goto out;
    segment_buf_attach(&b, fd);
    s->bytes = (uint64_t)size;
    /* A compressed segment (zseg.h) is scanned in plain positions. */
    uint64_t plain;
    if ((rc = zseg_logical_size(fileio_segment_pread, (void *)log->io, fd, (uint64_t)size,
                                &plain)) < 0)
        goto out;
    s->last_time = newest_time(log, &b, s, plain);
    s->known = true;
    if (s->last_time == INT64_MAX)
        log_say(log, LOG_WARN,
                "segment %s: no readable record to date it; retain_age never removes it "
                "(retain_bytes still does)",
                path);
out:
    segment_buf_free(&b);
    (void)log->io->close(log->io, fd); /* read-only */
    return rc;
}

int log_closed_info(pb_log *log, size_t i, log_segment_info *out)
{
    if (i >= log_closed_count(log))
        return PB_EINVAL;
    closed_seg *s = &log->closed[i];
    if (!s->known) {
        int rc = fill(log, s);
        if (rc < 0)
            return rc;
    }
    *out = (log_segment_info){
        .base = s->base,
        .end = i + 1 < log->nclosed ? log->closed[i + 1].base : log->base,
        .bytes = s->bytes,
        .last_time_ns = s->last_time,
    };
    return 0;
}

/* <base>.log -> <base>.log.del: gone for every reader and for recovery
 * (they list <base>.log only), its space freed by the unlink that follows
 * the directory sync. A missing .log is removed already. A rename needs a
 * directory entry, which a full file system may refuse (btrfs reserves
 * metadata for it, ext4 and XFS may need a new directory block) where an
 * unlink would free space: then the .log is unlinked here, as retention
 * must be able to free a full disk (*del is left empty). */
static int hide_seg(pb_log *log, uint64_t base, char *del, size_t dellen)
{
    char path[PATH_MAX];
    int rc = segment_path(path, sizeof path, log->dir, base, ".log");
    if (rc == 0)
        rc = segment_path(del, dellen, log->dir, base, ".log.del");
    if (rc == 0 && (rc = log->io->rename(log->io, path, del)) < 0) {
        del[0] = '\0';
        if (rc != -ENOENT)
            rc = log->io->unlink(log->io, path);
        if (rc == -ENOENT)
            rc = 0;
    }
    if (rc < 0)
        log_say(log, LOG_ERROR, "retention: cannot remove %s: %s; kept", path, pb_strerror(rc));
    return rc;
}

void log_discard_file(pb_log *log, const char *path)
{
    if (!path[0])
        return;
    if (log->opt.discard && log->opt.discard(log->opt.discard_ctx, log->io, path) == 0)
        return;
    int rc = log->io->unlink(log->io, path);
    if (rc < 0 && rc != -ENOENT)
        log_say(log, LOG_WARN, "cannot unlink %s: %s; removed at the next start", path,
                pb_strerror(rc));
}

void log_discard_fd(pb_log *log, int fd)
{
    if (fd < 0)
        return;
    if (log->opt.discard_fd && log->opt.discard_fd(log->opt.discard_ctx, log->io, fd) == 0)
        return;
    (void)log->io->close(log->io, fd); /* read-only */
}

void log_removal_synced(pb_log *log)
{
    if (!log->rm_pending)
        return;
    log->rm_pending = false;
    char path[PATH_MAX];
    if (log->rm_has_del && segment_path(path, sizeof path, log->dir, log->rm_base, ".log.del") == 0) {
        /* Recycled (zeroed into a spare, recycle.h) rather than freed,
         * when the unlinker takes it: never on this thread. */
        if (!log->opt.recycle_spares || !log->opt.recycle ||
            log->opt.recycle(log->opt.discard_ctx, log->io, path, log->opt.recycle_spares) != 0)
            log_discard_file(log, path);
        else if (!log->opt.spare_ledger)
            log->spares_stale = true; /* it may have made one: look again (log_spare.c) */
    }
    /* The index after the sync, off the writer too: until then (or after
     * a crash) it is an orphan no reader looks at, which the next open
     * removes (log_remove_orphans). */
    if (segment_path(path, sizeof path, log->dir, log->rm_base, ".idx") == 0)
        log_discard_file(log, path);
}

int log_removal_flush(pb_log *log)
{
    if (!log->rm_pending)
        return log->failed;
    return log->failed ? log->failed : log_sync_dir(log);
}

int log_remove_oldest(pb_log *log, size_t n)
{
    if (log->failed)
        return PB_EFAILED;
    size_t done = 0;
    int rc = 0;
    char del[PATH_MAX];
    while (done < n && log_closed_count(log) > 0) {
        /* The removal before this one is durable before this one starts:
         * removals stay in order. */
        if (log->rm_pending && (rc = log_sync_dir(log)) < 0)
            break;
        uint64_t base = log->closed[0].base;
        if ((rc = hide_seg(log, base, del, sizeof del)) < 0)
            break;
        /* The .log is out of sight: the segment is removed whatever happens
         * to its index (an orphan is cleaned up at the next open). Its
         * rename is made durable by the next directory sync (removal.c's
         * header says why that keeps the order). */
        memmove(log->closed, log->closed + 1, (log->nclosed - 1) * sizeof *log->closed);
        log->nclosed--;
        done++;
        log->rm_pending = true;
        log->rm_has_del = del[0] != '\0';
        log->rm_base = base;
    }
    return done > 0 || rc == 0 ? (int)done : rc;
}
