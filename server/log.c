/*
 * log - a partition's segment files, the writing half: append, sync,
 * rotation, the index, close (see log.h; byte layout in proto/FORMAT.md,
 * Part B). Opening a directory and recovering it is in recovery.c; the two
 * share log_internal.h.
 *
 * Threads: the partition's writer thread only. Every file operation goes
 * through the fileio table (opts.io), so tests can inject errors and
 * simulate power loss underneath.
 *
 * Hot path: log_append encodes record headers into a reusable scratch array
 * and points an iovec array (also reused) at them and at the caller's event
 * bytes, then writes each segment's share of the batch with one pwritev. No
 * per-record syscall or allocation.
 */
#include "log_internal.h"

#include "crc32c.h"
#include "grow.h"
#include "pb_errors.h"
#include "record.h"
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* log_append gathers at most this many records (headers, iovecs, index
 * entries) before it writes them: its arrays stay at ~1.2 MB whatever the
 * take (a 60k-event take of the fan-out benchmark kept 5 MB of them, all
 * of it at the daemon's peak RSS). Every chunk is at least 384 KiB, above
 * the default direct_write_bytes, so a large take is still written
 * directly. */
#define APPEND_CHUNK 16384u

void log_say(pb_log *log, enum log_level level, const char *fmt, ...)
{
    if (!log->opt.logf)
        return;
    char msg[2048]; /* two paths and a reason; longer ones are cut */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log->opt.logf(log->opt.log_ctx, level, msg);
}

int64_t log_now_ns(pb_log *log)
{
    if (log->opt.now_ns)
        return log->opt.now_ns(log->opt.clock_ctx);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Stops the log for good and says why. Returns the error for the caller. */
int log_fail(pb_log *log, int rc, const char *what, const char *path, uint64_t pos)
{
    bool sync = strncmp(what, "fdatasync", 9) == 0 || strncmp(what, "fsync", 5) == 0;
    if (!log->failed) {
        log->failed = rc;
        log->failed_sync = sync;
    }
    log_say(log, LOG_ERROR, "%s %s at byte %" PRIu64 " failed: %s; the log is stopped", what, path,
            pos, pb_strerror(rc));
    /* The active segment's own sync, or the write-out whose error a later
     * sync would not see (log_direct.c, settle). */
    if (path == log->log_path && (sync || strncmp(what, "write-out", 9) == 0))
        log_cut_to_durable(log, rc, what);
    return rc;
}

/* Time-rotation period of a receive time: floor((t + utc_offset) / every). */
int64_t log_period_of(const pb_log *log, int64_t t_ns)
{
    if (log->opt.rotate_every_s <= 0)
        return 0;
    int64_t s = t_ns / 1000000000;
    if (t_ns % 1000000000 < 0)
        s--; /* floor, for times before 1970 */
    s += log->opt.utc_offset_s;
    int64_t p = s / log->opt.rotate_every_s;
    if (s % log->opt.rotate_every_s < 0)
        p--;
    return p;
}

void log_close_index(pb_log *log)
{
    if (log->idx_fd < 0)
        return;
    int rc = log->io->close(log->io, log->idx_fd);
    if (rc < 0)
        log_say(log, LOG_WARN, "index %s: close failed: %s", log->idx_path, pb_strerror(rc));
    log->idx_fd = -1;
}

/* The index is a cache: when writing it fails, stop indexing this segment
 * (the reader falls back to scanning; the next open rebuilds it). */
static void drop_index(pb_log *log, int rc)
{
    log_say(log, LOG_WARN,
            "index %s: write at byte %" PRIu64 " failed: %s; not indexing the rest of this segment",
            log->idx_path, log->idx_size, pb_strerror(rc));
    log_close_index(log);
}

void log_write_index(pb_log *log, const uint8_t *entries, size_t n)
{
    if (log->idx_fd < 0 || n == 0)
        return;
    struct iovec v = {.iov_base = (void *)entries, .iov_len = n * PB_INDEX_ENTRY_SIZE};
    int rc = fileio_write_all(log->io, log->idx_fd, &v, 1, (off_t)log->idx_size);
    if (rc < 0) {
        drop_index(log, rc);
        return;
    }
    log->idx_size += n * PB_INDEX_ENTRY_SIZE;
}

/* Makes the directory's entries durable: a new file is not durable until
 * the directory that names it is synced. */
int log_sync_dir(pb_log *log)
{
    if (log->dir_fd < 0) {
        /* Closed by log_release: reopened when a segment is created. */
        int fd = log->io->open(log->io, log->dir, O_RDONLY | O_DIRECTORY, 0);
        if (fd < 0)
            return log_fail(log, fd, "open of directory", log->dir, 0);
        log->dir_fd = fd;
    }
    int rc = log->io->fsync(log->io, log->dir_fd);
    if (rc < 0)
        return log_fail(log, rc, "fsync of directory", log->dir, 0);
    log_removal_synced(log);
    return 0;
}

int log_close_active(pb_log *log)
{
    int rc = 0;
    log_close_index(log);
    log_direct_close(log);
    if (log->fd >= 0) {
        rc = log->io->close(log->io, log->fd);
        log->fd = -1;
    }
    return rc;
}

/* Opens a new, empty index for the active segment (O_TRUNC: any old one is
 * a stale cache). Failure only disables indexing. */
void log_create_index(pb_log *log, int64_t created)
{
    uint8_t hdr[PB_FILE_HEADER_SIZE];
    log->idx_size = 0;
    int fd = log->io->open(log->io, log->idx_path, O_RDWR | O_CREAT | O_TRUNC, FILE_MODE);
    if (fd < 0) {
        log_say(log, LOG_WARN, "index %s: create failed: %s; segment not indexed", log->idx_path,
                pb_strerror(fd));
        log->idx_fd = -1;
        return;
    }
    log->idx_fd = fd;
    file_header_encode(hdr, PB_IDX_MAGIC, log->base, created);
    struct iovec v = {.iov_base = hdr, .iov_len = sizeof hdr};
    int rc = fileio_write_all(log->io, fd, &v, 1, 0);
    if (rc < 0) {
        drop_index(log, rc);
        return;
    }
    log->idx_size = PB_FILE_HEADER_SIZE;
}

/* Creates segment `base` as the active one: header written and synced, then
 * the directory synced, so a segment that exists after a crash always has a
 * whole header unless the crash came before that sync (never acked). */
static int create_segment(pb_log *log, uint64_t base, bool spare)
{
    uint8_t hdr[PB_FILE_HEADER_SIZE];
    int rc = 1;
    log->base = base;
    if ((rc = segment_path(log->log_path, log->path_cap, log->dir, base, ".log")) < 0 ||
        (rc = segment_path(log->idx_path, log->path_cap, log->dir, base, ".idx")) < 0)
        return log_fail(log, rc, "segment path for", log->dir, 0);
    int64_t created = log_now_ns(log);
    log->recycled = false;
    log->durable_known = false; /* until its header is synced */
    log->cut = false;
    if (!spare || (rc = log_take_spare(log, base, created)) != 0) {
        if (rc < 0)
            return rc;
        int fd = log->io->open(log->io, log->log_path, O_RDWR | O_CREAT | O_EXCL, FILE_MODE);
        if (fd < 0)
            return log_fail(log, fd, "create of", log->log_path, 0);
        log->fd = fd;
        file_header_encode(hdr, PB_LOG_MAGIC, base, created);
        struct iovec v = {.iov_base = hdr, .iov_len = sizeof hdr};
        if ((rc = fileio_write_all(log->io, fd, &v, 1, 0)) < 0)
            return log_fail(log, rc, "header write to", log->log_path, 0);
        if ((rc = log->io->fdatasync(log->io, fd)) < 0)
            return log_fail(log, rc, "fdatasync of", log->log_path, 0);
    }
    log_create_index(log, created);
    if ((rc = log_sync_dir(log)) < 0)
        return rc;
    log->size = PB_FILE_HEADER_SIZE;
    log->durable = PB_FILE_HEADER_SIZE; /* synced above, or as a spare */
    log->durable_known = true;
    log->has_records = false;
    log->last_index_pos = 0;
    log_say(log, LOG_INFO, "segment %s %s", log->log_path,
            log->recycled ? "made from a recycled spare" : "created");
    return 0;
}

int log_create_segment(pb_log *log, uint64_t base)
{
    return create_segment(log, base, false);
}

/* Closes the active segment once everything in it is durable (so that the
 * next log_sync, which syncs only the new active segment, covers all), then
 * starts a new one at the next offset. */
static int rotate(pb_log *log)
{
    /* A failed sync collected here failed the log and is that sync's
     * outcome (log_sync_finish): this call fails with PB_EFAILED, not
     * counted twice as a write error; so also when its outcome was
     * taken already (log_sync_hook_fire). */
    if (log_sync_collect(log) < 0 || log->failed)
        return PB_EFAILED;
    int rc;
    /* A recycled segment's zero tail is cut before it is closed, and the
     * cut synced with it (below), before the next segment exists: a
     * rotated segment ends at its last record (FORMAT.md Part B). */
    if (log->recycled && (rc = log->io->ftruncate(log->io, log->fd, (off_t)log->size)) < 0)
        return log_fail(log, rc, "truncate of", log->log_path, log->size);
    if ((rc = log->io->fdatasync(log->io, log->fd)) < 0)
        return log_fail(log, rc, "fdatasync of", log->log_path, log->size);
    log_durable_at(log, log->size);
    log_cache_rotated(log); /* durable: its pages may go */
    if ((rc = log_close_active(log)) < 0)
        return log_fail(log, rc, "close of", log->log_path, log->size);
    log_closed_add(log, log->base, log->size, log->last_time, true);
    return create_segment(log, log->next_offset, true);
}

/* Writes the records and index entries gathered for the active segment. */
static int flush(pb_log *log, struct iovec *iov, size_t cnt, uint64_t bytes, const uint8_t *idx,
                 size_t nidx)
{
    if (cnt == 0)
        return 0;
    if (log->failed) /* e.g. by a sync whose outcome the hook took */
        return PB_EFAILED;
    int rc = 1;
    if (log->opt.direct_min_bytes > 0 && bytes >= log->opt.direct_min_bytes && !log->direct_off)
        rc = log_direct_write(log, iov, cnt, bytes); /* 1: not taken: the ordinary way */
    if (rc > 0) {
        /* A sync before failed: the log is, and said why (the sync's
         * outcome is its own: this write fails with PB_EFAILED, see rotate). */
        if (log_sync_collect(log) < 0 || log->failed)
            return PB_EFAILED;
        if (log->crc_later)
            log_seal_all(log, iov, cnt);
        rc = fileio_write_all(log->io, log->fd, iov, cnt, (off_t)log->size);
    } else if (rc < 0) {
        /* A direct-path write failed: a sync pending on the helper ran
         * before it (it is over); its failure is the log's first. */
        (void)log_sync_collect(log);
    }
    if (rc == PB_EFAILED)
        return rc; /* the log failed before this write (it said why) */
    if (rc < 0)
        return log_fail(log, rc, "write to", log->log_path, log->size);
    log->size += bytes;
    /* Index after log: an entry never names bytes not yet written. */
    log_write_index(log, idx, nidx);
    return 0;
}

/* Reopens what log_release closed. A failure to open the active segment
 * is passed on without failing the log (EMFILE, ENFILE: nothing was
 * written, a later call may succeed), unless the file is gone: then the
 * log cannot go on. An index that cannot be reopened is dropped (a cache). */
static int resume(pb_log *log)
{
    int fd = log->io->open(log->io, log->log_path, O_RDWR, 0);
    if (fd < 0) {
        if (fd == -ENOENT)
            return log_fail(log, fd, "reopen of", log->log_path, log->size);
        log_say(log, LOG_WARN, "segment %s: cannot reopen it: %s; nothing written", log->log_path,
                pb_strerror(fd));
        return fd;
    }
    log->fd = fd;
    if (log->idx_reopen) {
        int ifd = log->io->open(log->io, log->idx_path, O_RDWR, 0);
        if (ifd < 0)
            log_say(log, LOG_WARN,
                    "index %s: cannot reopen it: %s; not indexing the rest of "
                    "this segment",
                    log->idx_path, pb_strerror(ifd));
        log->idx_fd = ifd < 0 ? -1 : ifd;
    }
    log->released = false;
    return 0;
}

int log_release(pb_log *log)
{
    if (log->released)
        return 0;
    (void)log_sync_collect(log); /* its outcome is kept for log_sync_finish */
    log->idx_reopen = log->idx_fd >= 0;
    log_close_index(log);
    log_direct_close(log);
    int rc = 0;
    /* An idle partition's recycled segment loses its zero tail here (as at
     * a close: log_close), so that its file ends at its records again. */
    if (log->fd >= 0 && log->recycled && !log->failed &&
        log->io->ftruncate(log->io, log->fd, (off_t)log->size) == 0)
        log->recycled = false;
    if (log->fd >= 0) {
        rc = log->io->close(log->io, log->fd);
        log->fd = -1;
        /* A close can report a write-back error (e.g. on NFS): whatever was
         * not synced may be lost, so the log stops, as for a failed sync. */
        if (rc < 0)
            log_fail(log, rc, "close of", log->log_path, log->size);
    }
    /* A removal's rename still waiting for a directory sync: now. */
    if (log->rm_pending && !log->failed) {
        int s = log_sync_dir(log);
        if (s < 0 && rc == 0)
            rc = s;
    }
    if (log->dir_fd >= 0) {
        (void)log->io->close(log->io, log->dir_fd); /* read-only; synced when it mattered */
        log->dir_fd = -1;
    }
    log->released = true;
    return rc;
}

bool log_released(const pb_log *log)
{
    return log->released;
}

size_t log_bytes_per_entry(void)
{
    return PB_RECORD_HEADER_SIZE + 3 * sizeof(struct iovec) + PB_INDEX_ENTRY_SIZE;
}

/* Shrinks *p (cap elements of elem bytes) to keep elements; returns the
 * bytes given back. A failed realloc keeps the larger block. */
static size_t shrink(void *pp, size_t *cap, size_t keep, size_t elem)
{
    void **p = pp;
    if (*cap <= keep)
        return 0;
    size_t freed = (*cap - keep) * elem;
    if (keep == 0) {
        free(*p);
        *p = NULL;
    } else {
        void *q = realloc(*p, keep * elem);
        if (!q)
            return 0;
        *p = q;
    }
    *cap = keep;
    return freed;
}

size_t log_shrink_buffers(pb_log *log, size_t keep)
{
    /* The direct-write helper and its staging go only with everything
     * (an idle partition): after a window of smaller takes they would be
     * started and faulted in again by the next large one. */
    return (keep == 0 ? log_direct_free(log) : 0) +
           shrink(&log->hdrs, &log->hdrs_cap, keep, PB_RECORD_HEADER_SIZE) +
           shrink(&log->iov, &log->iov_cap, 3 * keep, sizeof *log->iov) +
           shrink(&log->idx_buf, &log->idx_cap, keep, PB_INDEX_ENTRY_SIZE);
}

bool log_is_header(const pb_log *log, const struct iovec *v)
{
    const uint8_t *p = v->iov_base;
    return v->iov_len == PB_RECORD_HEADER_SIZE && p >= log->hdrs &&
           p < log->hdrs + log->hdrs_cap * PB_RECORD_HEADER_SIZE;
}

void log_seal_record(const struct iovec *iov, size_t cnt, size_t i)
{
    uint8_t *h = iov[i].iov_base;
    uint32_t crc = crc32c(0, h + 4, PB_RECORD_HEADER_SIZE - 4);
    size_t body = pb_load_le32(h + 4) - PB_RECORD_FIXED_LEN;
    for (size_t j = i + 1; body > 0 && j < cnt; j++) {
        size_t k = iov[j].iov_len < body ? iov[j].iov_len : body;
        crc = crc32c(crc, iov[j].iov_base, k);
        body -= k;
    }
    pb_store_le32(h, crc);
}

void log_seal_all(const pb_log *log, const struct iovec *iov, size_t cnt)
{
    for (size_t i = 0; i < cnt; i++)
        if (log_is_header(log, &iov[i]))
            log_seal_record(iov, cnt, i);
}

/* Do the sealed records among e[0..n) (log_entry.record) carry the
 * offsets, times and lengths this log would give them? Checked before
 * anything is written: a record stored under another header would differ
 * from the primary's. */
static bool sealed_fit(pb_log *log, const log_entry *e, size_t n)
{
    int64_t last = log->last_time;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *h = e[i].record;
        int64_t t = e[i].time_ns;
        uint64_t want = log->next_offset + i;
        const char *what = NULL;
        if (!h)
            what = NULL;
        else if (e[i].suffix_len != 0 || pb_load_le32(h + 4) != e[i].len + PB_RECORD_FIXED_LEN)
            what = "its length is not its event's";
        else if (pb_load_le64(h + 8) != want)
            what = "its offset is not the log's next";
        else if ((int64_t)pb_load_le64(h + 16) != t)
            what = "its time is not its entry's";
        else if (t < last)
            what = "its time goes back before the last record's";
        if (what) {
            log_say(log, LOG_ERROR,
                    "%s: a sealed record refused (nothing of the append written): %s (header: "
                    "offset %" PRIu64 ", time %" PRId64 " ns, length %" PRIu32 "; expected "
                    "offset %" PRIu64 ", time at least %" PRId64 " ns)",
                    log->log_path, what, pb_load_le64(h + 8), (int64_t)pb_load_le64(h + 16),
                    pb_load_le32(h + 4), want, last);
            return false;
        }
        if (t > last)
            last = t; /* as log_append raises an earlier time */
    }
    return true;
}

/* Adds a sealed record's bytes to the write (log->iov[iov_start..iov_n)):
 * its header and data as one piece when they are contiguous, appended to
 * the piece before when that ends where it starts. Returns the new iov_n. */
static size_t add_sealed(pb_log *log, size_t iov_start, size_t iov_n, const log_entry *e)
{
    const uint8_t *h = e->record;
    size_t hlen = PB_RECORD_HEADER_SIZE;
    bool joined = e->len > 0 && (const uint8_t *)e->data == h + hlen;
    if (joined)
        hlen += e->len;
    struct iovec *prev = iov_n > iov_start ? &log->iov[iov_n - 1] : NULL;
    if (prev && (const uint8_t *)prev->iov_base + prev->iov_len == h && !log_is_header(log, prev))
        prev->iov_len += hlen;
    else
        log->iov[iov_n++] = (struct iovec){.iov_base = (void *)h, .iov_len = hlen};
    if (e->len > 0 && !joined)
        log->iov[iov_n++] = (struct iovec){.iov_base = (void *)e->data, .iov_len = e->len};
    return iov_n;
}

/* After the write of records [from, to) (their headers at log->hdrs from
 * slot 0, sealed by now): each CRC to its entry's crc_out, valid when the
 * record was written with the entry's own time (not raised). */
static void export_crcs(const pb_log *log, const log_entry *e, size_t from, size_t to)
{
    for (size_t k = from; k < to; k++) {
        if (!e[k].crc_out)
            continue;
        const uint8_t *h =
            e[k].record ? e[k].record : log->hdrs + (k - from) * PB_RECORD_HEADER_SIZE;
        e[k].crc_out->crc = pb_load_le32(h);
        e[k].crc_out->valid = (int64_t)pb_load_le64(h + 16) == e[k].time_ns;
    }
}

int log_append(pb_log *log, const log_entry *e, size_t n, uint64_t *first_offset)
{
    if (log->failed)
        return PB_EFAILED;
    if (log->released) {
        int rc = resume(log);
        if (rc < 0)
            return rc;
    }
    if (first_offset)
        *first_offset = log->next_offset;
    bool sealed = false;
    for (size_t i = 0; i < n; i++) {
        if (e[i].len > log->opt.max_record_bytes ||
            e[i].suffix_len > log->opt.max_record_bytes - e[i].len)
            return PB_ETOOBIG;
        if (e[i].record)
            sealed = true;
    }
    if (sealed && !sealed_fit(log, e, n))
        return PB_EINVAL;
    size_t chunk = n < APPEND_CHUNK ? n : APPEND_CHUNK;
    if (grow_reserve(&log->hdrs, &log->hdrs_cap, chunk, PB_RECORD_HEADER_SIZE) < 0 ||
        grow_reserve(&log->iov, &log->iov_cap, 3 * chunk, sizeof *log->iov) < 0 ||
        grow_reserve(&log->idx_buf, &log->idx_cap, chunk, PB_INDEX_ENTRY_SIZE) < 0)
        return PB_ENOMEM;

    /* With direct writes on, each CRC is computed as its record is copied
     * into a staging buffer, while the previous one is being written
     * (log_direct.c); flush computes them when the ordinary way is taken. */
    log->crc_later = log->opt.direct_min_bytes > 0 && !log->direct_off;
    size_t iov_start = 0, iov_n = 0, idx_start = 0, idx_n = 0, h_n = 0;
    size_t chunk_first = 0; /* the record in header slot 0 */
    uint64_t pending = 0;   /* bytes gathered for the active segment */
    for (size_t i = 0; i < n; i++) {
        if (h_n == APPEND_CHUNK) {
            /* The arrays are full: what they describe goes out first. */
            int rc = flush(log, log->iov + iov_start, iov_n - iov_start, pending,
                           log->idx_buf + idx_start * PB_INDEX_ENTRY_SIZE, idx_n - idx_start);
            if (rc < 0)
                return rc;
            export_crcs(log, e, chunk_first, i);
            chunk_first = i;
            iov_start = iov_n = idx_start = idx_n = h_n = 0;
            pending = 0;
        }
        int64_t t = e[i].time_ns;
        if (t < log->last_time)
            t = log->last_time;
        uint64_t rec_size = PB_RECORD_HEADER_SIZE + e[i].len + e[i].suffix_len;
        uint64_t pos = log->size + pending;
        bool new_period = log->opt.rotate_every_s > 0 && log_period_of(log, t) != log->period;
        if (log->has_records && (new_period || pos + rec_size > log->opt.segment_bytes)) {
            int rc = flush(log, log->iov + iov_start, iov_n - iov_start, pending,
                           log->idx_buf + idx_start * PB_INDEX_ENTRY_SIZE, idx_n - idx_start);
            if (rc < 0)
                return rc;
            if ((rc = rotate(log)) < 0)
                return rc;
            iov_start = iov_n;
            idx_start = idx_n;
            pending = 0;
            pos = log->size;
        }
        if (!log->has_records || pos - log->last_index_pos >= log->opt.index_interval_bytes) {
            segment_index_entry ie = {.offset = log->next_offset, .position = pos, .time_ns = t};
            segment_index_entry_encode(log->idx_buf + idx_n * PB_INDEX_ENTRY_SIZE, &ie);
            idx_n++;
            log->last_index_pos = pos;
        }
        if (!log->has_records) {
            log->period = log_period_of(log, t);
            log->has_records = true;
        }
        if (e[i].record) {
            iov_n = add_sealed(log, iov_start, iov_n, &e[i]);
            h_n++; /* counted as a header: bounds the iovecs of one write */
            pending += rec_size;
            log->next_offset++;
            log->last_time = t;
            continue;
        }
        uint8_t *h = log->hdrs + h_n++ * PB_RECORD_HEADER_SIZE;
        if (log->crc_later)
            record_encode_fields(h, log->next_offset, t, e[i].len + e[i].suffix_len);
        else
            record_encode_header(h, log->next_offset, t, e[i].data, e[i].len, e[i].suffix,
                                 e[i].suffix_len);
        log->iov[iov_n++] = (struct iovec){.iov_base = h, .iov_len = PB_RECORD_HEADER_SIZE};
        if (e[i].len > 0)
            log->iov[iov_n++] = (struct iovec){.iov_base = (void *)e[i].data, .iov_len = e[i].len};
        if (e[i].suffix_len > 0)
            log->iov[iov_n++] =
                (struct iovec){.iov_base = (void *)e[i].suffix, .iov_len = e[i].suffix_len};
        pending += rec_size;
        log->next_offset++;
        log->last_time = t;
    }
    /* The last write of the append: a sync asked for (log_append_sync) may
     * be queued right behind it (never behind an earlier one: a rotation
     * closes that segment). */
    log->sync_last = log->sync_after;
    int rc = flush(log, log->iov + iov_start, iov_n - iov_start, pending,
                   log->idx_buf + idx_start * PB_INDEX_ENTRY_SIZE, idx_n - idx_start);
    log->sync_last = false;
    if (rc == 0)
        export_crcs(log, e, chunk_first, n);
    return rc;
}

int log_sync(pb_log *log)
{
    int rc = log_sync_collect(log);
    if (rc < 0)
        return rc;
    if (log->failed)
        return PB_EFAILED;
    if (log->released) {
        rc = resume(log);
        if (rc < 0)
            return rc;
    }
    rc = log->io->fdatasync(log->io, log->fd);
    if (rc < 0)
        return log_fail(log, rc, "fdatasync of", log->log_path, log->size);
    log_durable_at(log, log->size);
    /* Durable: what lies cache_bytes behind may leave the cache. */
    log_cache_synced(log, log->size);
    return 0;
}

int log_sync_collect(pb_log *log)
{
    if (log->sync_pending) {
        uint64_t ns = 0;
        int rc =
            log->sync_job ? log_direct_sync_wait(log, log->sync_job, &ns) : log->sync_inline_rc;
        log->sync_pending = false;
        if (rc < 0 && log->sync_job)
            log_fail(log, rc, "fdatasync of", log->log_path, log->sync_size);
        else if (rc == 0) {
            log_durable_at(log, log->sync_size);
            log_cache_synced(log, log->sync_size);
        }
        /* Even when the log failed before (a write queued behind this
         * sync, with ENOSPC, say): what was written before it may not be
         * on the device, so the failure never heals (log_failure_heals:
         * a reopen would publish those records). */
        if (rc < 0)
            log->failed_sync = true;
        /* Kept until log_sync_finish. A second one before that (a caller
         * that did not take the first: a bug) never replaces a failure
         * and is said: a take could be answered by another's sync. */
        if (log->sync_done)
            log_say(log, LOG_ERROR,
                    "segment %s: a sync's outcome (%s) collected before the one before was "
                    "taken; the first failure is kept",
                    log->log_path, pb_strerror(rc));
        if (!log->sync_done || log->done_rc == 0)
            log->done_rc = rc;
        log->done_ns = ns;
        log->sync_done = true;
    }
    return log->sync_done ? log->done_rc : 0;
}

/* After a successful append: the sync of everything appended, queued on
 * the helper (or made in line without one) as the pending one. */
static void begin_sync(pb_log *log, uint64_t seq)
{
    if (seq == 0)
        seq = log_direct_sync_submit(log);
    log->sync_inline_rc = 0;
    if (seq == 0) {
        int rc = log->io->fdatasync(log->io, log->fd);
        if (rc < 0)
            log_fail(log, rc, "fdatasync of", log->log_path, log->size);
        else
            log_durable_at(log, log->size);
        log->sync_inline_rc = rc;
    }
    log->sync_pending = true;
    log->sync_job = seq;
    log->sync_size = log->size;
}

int log_append_sync(pb_log *log, const log_entry *e, size_t n, uint64_t *first_offset,
                    void (*synced)(void *ctx), bool (*waiting)(void *ctx), void *ctx)
{
    log->sync_after = true;
    log->dio_sync_seq = 0;
    log->sync_hook = synced;
    log->wait_hook = waiting;
    log->sync_hook_ctx = ctx;
    int rc = log_append(log, e, n, first_offset);
    log->sync_hook = NULL;
    log->wait_hook = NULL;
    log->sync_after = false;
    uint64_t seq = log->dio_sync_seq; /* queued behind the last direct write */
    log->dio_sync_seq = 0;
    if (rc < 0)
        return rc;
    /* The sync before this one (if still pending) is over: the writes
     * queued behind it are done, or the ordinary ones waited for it. */
    if (seq == 0)
        (void)log_sync_collect(log);
    if (log->failed) /* that sync failed: nothing after it is synced */
        return 0;
    begin_sync(log, seq);
    return 0;
}

int log_sync_finish(pb_log *log, uint64_t *sync_ns)
{
    if (!log->sync_done)
        (void)log_sync_collect(log);
    int rc = log->sync_done ? log->done_rc : 0;
    if (sync_ns)
        *sync_ns = log->sync_done ? log->done_ns : 0;
    log->sync_done = false;
    log->done_rc = 0;
    return rc;
}

bool log_sync_async(const pb_log *log)
{
    return log_direct_async(log);
}

uint64_t log_next_offset(const pb_log *log)
{
    return log->next_offset;
}

int64_t log_last_time(const pb_log *log)
{
    return log->last_time;
}

int log_status(const pb_log *log)
{
    return log->failed;
}

bool log_failure_heals(const pb_log *log)
{
    return (log->failed == -ENOSPC || log->failed == -EDQUOT) && !log->failed_sync;
}

int log_close(pb_log *log)
{
    if (!log)
        return 0;
    /* A sync running on the helper is over before its descriptor closes,
     * failed log or not; its failure is the close's. */
    int rc = log_sync_collect(log);
    /* A recycled active segment's zero tail is cut at a clean close (the
     * sync below makes the cut durable), so that the next open finds its
     * records to the end of the file and says nothing; if it fails, that
     * open cuts it. */
    if (rc == 0 && log->fd >= 0 && !log->failed && log->recycled &&
        log->io->ftruncate(log->io, log->fd, (off_t)log->size) == 0)
        log->recycled = false;
    if (rc == 0 && log->fd >= 0 && !log->failed)
        rc = log_sync(log);
    if (log->rm_pending && !log->failed) {
        int s = log_sync_dir(log); /* the last removal's rename */
        if (s < 0 && rc == 0)
            rc = s;
    }
    int c = log_close_active(log);
    if (c < 0 && rc == 0)
        rc = c;
    if (log->dir_fd >= 0) {
        c = log->io->close(log->io, log->dir_fd);
        if (c < 0 && rc == 0)
            rc = c;
    }
    (void)log_direct_free(log);
    free(log->hdrs);
    free(log->iov);
    free(log->idx_buf);
    free(log->closed);
    free(log->dir);
    free(log->log_path);
    free(log->idx_path);
    free(log);
    return rc;
}
