/*
 * compress - rewrites a closed (rotated) segment as a compressed segment
 * (proto/zseg.h, FORMAT.md Part B) and puts it in the plain file's place,
 * in two halves:
 *   log_compress_prepare  any thread (the daemon's compressor thread,
 *                         server/compressor.c): reads the plain file by
 *                         name and writes <base>.log.ztmp, fdatasync'ed.
 *                         It needs no pb_log, so it never touches the
 *                         writer's state.
 *   log_compress_install  the partition's writer thread: renames the
 *                         .ztmp over the .log and syncs the directory, if
 *                         the segment is still one of its closed segments.
 * Every change to which segment files exist stays on the writer thread
 * (rotation, retention's removal, this rename), so a segment is never
 * removed and replaced at the same time: a removal that comes while the
 * compressor reads finds the plain file (the compressor's descriptor keeps
 * the unlinked file readable), and the install that follows finds the
 * segment gone and removes the .ztmp instead. The active segment is never
 * touched.
 *
 * Crash safety, step by step (tests/unit/test_compress.c,
 * tests/unit/test_powerloss.c):
 *   1. the compressed bytes go to <base>.log.ztmp (O_TRUNC: a leftover of
 *      an earlier crash is overwritten), then fdatasync;
 *   2. rename(<base>.log.ztmp, <base>.log): atomic, the plain file's name
 *      is replaced in the same step; the writer holds the plain file open
 *      across the rename and hands the descriptor to the unlinker thread,
 *      whose close frees its space (not the writer's);
 *   3. fsync of the directory: the replacement is durable.
 * A crash before 2 leaves the plain segment (and a .ztmp no reader lists,
 * removed at the next open: log_remove_orphans); after 2 the whole
 * compressed file, whose data was synced before the rename. Readers
 * holding the plain file open keep reading it. The .idx stays valid: its
 * positions are plain-file positions, which the compressed file serves
 * unchanged.
 */
#include "log.h"
#include "log_internal.h"

#include "crc32c.h"
#include "grow.h"
#include "pb_errors.h"
#include "segment.h"
#include "zseg.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct zwriter {
    const fileio *io;
    const atomic_bool *cancel; /* NULL: never */
    char *why;                 /* the reason of a failure, for the caller's message */
    size_t whylen;
    int fd;
    const char *tmp;
    int level;
    uint64_t wpos; /* file position of the next block */
    uint8_t *raw;  /* the block being filled: whole records */
    size_t raw_len, raw_cap;
    uint64_t raw_logical; /* plain position of raw[0] */
    uint64_t first, last; /* offsets in it */
    uint8_t *comp;
    size_t comp_cap;
    void *cctx; /* zstd's, reused for every block */
    zseg_entry *ent;
    size_t nent, ent_cap;
    const _Atomic uint64_t *active_mono; /* NULL: never paced */
    uint64_t block_start;                /* monotonic ns; 0: none yet */
} zwriter;

static int zw_write(zwriter *w, const void *p, size_t n, uint64_t at)
{
    struct iovec iov = {.iov_base = (void *)p, .iov_len = n};
    int rc = fileio_write_all(w->io, w->fd, &iov, 1, (off_t)at);
    if (rc < 0)
        snprintf(w->why, w->whylen, "write of %s at byte %llu failed: %s", w->tmp,
                 (unsigned long long)at, pb_strerror(rc));
    return rc;
}

static uint64_t mono_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* Paced (log_compress_prepare_paced): while the partition took something
 * in the last LOG_COMPRESS_PACE_WINDOW_NS, rests as long as the block
 * before took (its reads, compression and write). Why: the compressor's
 * disk reads (the direct writes leave nothing cached), its CPU on the
 * other core and its writes and syncs compete with the publish path it
 * runs beside; tests/bench/NOTES.md ("Pacing the compressor"). */
static void zw_pace(zwriter *w)
{
    if (!w->active_mono)
        return;
    uint64_t now = mono_ns();
    uint64_t last = atomic_load_explicit(w->active_mono, memory_order_relaxed);
    if (w->block_start && now > w->block_start && last + LOG_COMPRESS_PACE_WINDOW_NS > now) {
        uint64_t d = now - w->block_start;
        if (d > LOG_COMPRESS_PACE_MAX_NS)
            d = LOG_COMPRESS_PACE_MAX_NS;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)d};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
        now = mono_ns();
    }
    w->block_start = now;
}

static int zw_flush(zwriter *w)
{
    if (w->raw_len == 0)
        return 0;
    zw_pace(w);
    if (w->cancel && atomic_load_explicit(w->cancel, memory_order_relaxed)) {
        snprintf(w->why, w->whylen, "compression of %s stopped: its partition is closing", w->tmp);
        return -ECANCELED;
    }
    size_t n;
    int rc =
        zseg_compress_block(&w->cctx, w->raw, w->raw_len, w->level, &w->comp, &w->comp_cap, &n);
    if (rc < 0)
        return rc;
    if (grow_reserve(&w->ent, &w->ent_cap, w->nent + 1, sizeof *w->ent) < 0)
        return PB_ENOMEM;
    if ((rc = zw_write(w, w->comp, n, w->wpos)) < 0)
        return rc;
    w->ent[w->nent++] = (zseg_entry){.logical = w->raw_logical,
                                     .file_pos = w->wpos,
                                     .first_offset = w->first,
                                     .last_offset = w->last,
                                     .comp_len = (uint32_t)n,
                                     .raw_len = (uint32_t)w->raw_len,
                                     .crc = crc32c(0, w->comp, n)};
    w->wpos += n;
    w->raw_logical += w->raw_len;
    w->raw_len = 0;
    return 0;
}

static int zw_add(zwriter *w, const uint8_t *rec, size_t n, uint64_t offset)
{
    if (w->raw_len > 0 && w->raw_len + n > ZSEG_BLOCK_TARGET) {
        int rc = zw_flush(w);
        if (rc < 0)
            return rc;
    }
    if (w->raw_len + n > w->raw_cap) {
        if (grow_resize(&w->raw, w->raw_len + n, 1) < 0)
            return PB_ENOMEM;
        w->raw_cap = w->raw_len + n;
    }
    if (w->raw_len == 0)
        w->first = offset;
    w->last = offset;
    memcpy(w->raw + w->raw_len, rec, n);
    w->raw_len += n;
    return 0;
}

/* The index, its CRC, then the zseg header at byte 40. */
static int zw_finish(zwriter *w, uint64_t logical_size)
{
    size_t n = w->nent * ZSEG_ENTRY_SIZE + 4;
    uint8_t *idx = malloc(n);
    if (!idx)
        return PB_ENOMEM;
    for (size_t i = 0; i < w->nent; i++)
        zseg_entry_encode(idx + i * ZSEG_ENTRY_SIZE, &w->ent[i]);
    pb_store_le32(idx + n - 4, crc32c(0, idx, n - 4));
    int rc = zw_write(w, idx, n, w->wpos);
    free(idx);
    if (rc < 0)
        return rc;
    uint8_t hdr[32];
    zseg_header_encode(hdr, logical_size, w->wpos, (uint32_t)w->nent);
    return zw_write(w, hdr, sizeof hdr, PB_FILE_HEADER_SIZE);
}

/* Copies every record of the plain segment (b, size bytes) into blocks.
 * 1: done; 0: a record does not verify (the segment stays plain). */
static int copy_records(zwriter *w, segment_buf *b, uint64_t base, uint64_t size, const char *path)
{
    uint64_t pos = PB_FILE_HEADER_SIZE, expected = base;
    while (pos < size) {
        pb_record rec;
        uint32_t rsize;
        const uint8_t *p;
        size_t avail;
        int rc = segment_read_record(b, pos, PB_RECORD_MAX_EVENT, &rec, &rsize);
        if (rc == 0 && rec.offset != expected)
            rc = PB_ECORRUPT;
        if (rc == PB_ECORRUPT || rc == PB_EINCOMPLETE) {
            snprintf(w->why, w->whylen,
                     "segment %s: the record at byte %llu does not verify (offset %llu "
                     "expected); the segment stays uncompressed",
                     path, (unsigned long long)pos, (unsigned long long)expected);
            return 0;
        }
        if (rc < 0)
            return rc;
        if ((rc = segment_buf_get(b, pos, rsize, &p, &avail)) < 0)
            return rc;
        if ((rc = zw_add(w, p, rsize, rec.offset)) < 0)
            return rc;
        pos += rsize;
        expected++;
    }
    return 1;
}

/* Writes the compressed form of the plain segment open as pfd into w->fd.
 * 1 written, 0 left plain (damaged or already compressed), < 0 error. */
static int write_compressed(zwriter *w, int pfd, uint64_t size, uint64_t base, const char *path)
{
    segment_buf b;
    uint8_t head[ZSEG_HEADER_END] = {0};
    int rc;
    ssize_t n = segment_pread_full(fileio_segment_pread, (void *)w->io, pfd, head, sizeof head, 0);
    if (n < 0)
        return (int)n;
    if (zseg_is_compressed(head, (size_t)n) || n < (ssize_t)PB_FILE_HEADER_SIZE)
        return 0;
    if ((rc = segment_buf_init(&b, fileio_segment_pread, (void *)w->io)) < 0)
        return rc;
    segment_buf_attach(&b, pfd);
    memset(head + PB_FILE_HEADER_SIZE, 0, ZSEG_HEADER_END - PB_FILE_HEADER_SIZE);
    w->wpos = ZSEG_HEADER_END;
    w->raw_logical = PB_FILE_HEADER_SIZE;
    if ((rc = zw_write(w, head, sizeof head, 0)) == 0 &&
        (rc = copy_records(w, &b, base, size, path)) == 1 && (rc = zw_flush(w)) == 0 &&
        (rc = zw_finish(w, size)) == 0)
        rc = 1;
    segment_buf_free(&b);
    return rc;
}

/* Syncs and closes the .ztmp; removes it unless it is whole (rc == 1). */
static int finish_tmp(zwriter *w, int rc)
{
    int s = rc == 1 ? w->io->fdatasync(w->io, w->fd) : 0;
    int c = w->io->close(w->io, w->fd);
    if (rc == 1 && (s < 0 || c < 0)) {
        rc = s < 0 ? s : c;
        snprintf(w->why, w->whylen, "sync of %s failed: %s; the plain segment is kept", w->tmp,
                 pb_strerror(rc));
    }
    if (rc != 1)
        (void)w->io->unlink(w->io, w->tmp); /* a leftover is removed at the next open */
    return rc;
}

static int tmp_path(char *path, size_t n, char *tmp, size_t tn, const char *dir, uint64_t base)
{
    int rc = segment_path(path, n, dir, base, ".log");
    if (rc == 0 && (size_t)snprintf(tmp, tn, "%s.ztmp", path) >= tn)
        rc = -ENAMETOOLONG;
    return rc;
}

int log_compress_prepare(const fileio *io, const char *dir, uint64_t base, int level,
                         const atomic_bool *cancel, uint64_t *plain, uint64_t *packed, char *why,
                         size_t whylen)
{
    return log_compress_prepare_paced(io, dir, base, level, cancel, NULL, plain, packed, why,
                                      whylen);
}

int log_compress_prepare_paced(const fileio *io, const char *dir, uint64_t base, int level,
                               const atomic_bool *cancel, const _Atomic uint64_t *active_mono,
                               uint64_t *plain, uint64_t *packed, char *why, size_t whylen)
{
    char path[PATH_MAX], tmp[PATH_MAX + 8];
    *plain = *packed = 0;
    why[0] = '\0';
    int rc = tmp_path(path, sizeof path, tmp, sizeof tmp, dir, base);
    if (rc < 0) {
        snprintf(why, whylen, "segment %020llu of %s: %s", (unsigned long long)base, dir,
                 pb_strerror(rc));
        return rc;
    }
    int pfd = io->open(io, path, O_RDONLY, 0);
    if (pfd < 0) {
        snprintf(why, whylen, "cannot open %s: %s", path, pb_strerror(pfd));
        return pfd;
    }
    off_t psize = 0;
    zwriter w = {.io = io,
                 .cancel = cancel,
                 .why = why,
                 .whylen = whylen,
                 .tmp = tmp,
                 .level = level,
                 .active_mono = active_mono};
    if ((rc = io->fsize(io, pfd, &psize)) < 0) {
        snprintf(why, whylen, "cannot read the size of %s: %s", path, pb_strerror(rc));
    } else if ((w.fd = io->open(io, tmp, O_WRONLY | O_CREAT | O_TRUNC, FILE_MODE)) < 0) {
        rc = w.fd;
        snprintf(why, whylen, "cannot create %s: %s", tmp, pb_strerror(rc));
    } else {
        rc = write_compressed(&w, pfd, (uint64_t)psize, base, path);
        if (rc < 0 && !why[0])
            snprintf(why, whylen, "compressing %s into %s: %s", path, tmp, pb_strerror(rc));
        *plain = (uint64_t)psize;
        *packed = w.wpos + w.nent * ZSEG_ENTRY_SIZE + 4;
        rc = finish_tmp(&w, rc);
    }
    (void)io->close(io, pfd); /* read-only */
    zseg_cctx_free(w.cctx);
    free(w.raw);
    free(w.comp);
    free(w.ent);
    return rc;
}

void log_compress_discard(const fileio *io, const char *dir, uint64_t base)
{
    char path[PATH_MAX], tmp[PATH_MAX + 8];
    if (tmp_path(path, sizeof path, tmp, sizeof tmp, dir, base) == 0)
        (void)io->unlink(io, tmp); /* else it is removed at the next open */
}

/* The closed segment with this base, or NULL (removed meanwhile). */
static closed_seg *find_closed(pb_log *log, uint64_t base)
{
    size_t n = log_closed_count(log);
    for (size_t i = 0; i < n; i++)
        if (log->closed[i].base == base)
            return &log->closed[i];
    return NULL;
}

int log_compress_install(pb_log *log, uint64_t base)
{
    char path[PATH_MAX], tmp[PATH_MAX + 8];
    int rc = tmp_path(path, sizeof path, tmp, sizeof tmp, log->dir, base);
    closed_seg *s = rc == 0 && !log->failed ? find_closed(log, base) : NULL;
    if (!s) {
        /* Retention removed it while it was being compressed (or the log
         * failed): the compressed copy goes too. */
        if (rc == 0)
            log_discard_file(log, tmp); /* off the writer: a copy can be MiBs */
        return log->failed ? PB_EFAILED : 0;
    }
    /* The plain file stays open across the rename: its inode then outlives
     * its name, and the close that frees its extents (about as long as an
     * unlink of it, milliseconds) runs on the unlinker thread, not here.
     * Not opened (no descriptor left): the rename frees it, as before.
     * Writable (nothing is written through it) so that the unlinker can
     * free it in steps (unlinker.h); read-only if that is refused. */
    int plain = log->io->open(log->io, path, O_RDWR, 0);
    if (plain < 0)
        plain = log->io->open(log->io, path, O_RDONLY, 0);
    if ((rc = log->io->rename(log->io, tmp, path)) < 0) {
        log_say(log, LOG_ERROR, "compress: rename of %s to %s failed: %s", tmp, path,
                pb_strerror(rc));
        (void)log->io->unlink(log->io, tmp);
        if (plain >= 0)
            (void)log->io->close(log->io, plain); /* nothing written through it */
        return rc;
    }
    s->known = false; /* its size changed: read again when needed */
    /* Durable before anything relies on it; as for rotation, a failed
     * directory sync fails the log. */
    rc = log_sync_dir(log);
    log_discard_fd(log, plain);
    return rc < 0 ? rc : 1;
}

bool log_closed_compressed(pb_log *log, size_t i)
{
    char path[PATH_MAX];
    uint8_t head[ZSEG_HEADER_END];
    if (i >= log_closed_count(log) ||
        segment_path(path, sizeof path, log->dir, log->closed[i].base, ".log") < 0)
        return false;
    int fd = log->io->open(log->io, path, O_RDONLY, 0);
    if (fd < 0)
        return false;
    ssize_t n = segment_pread_full(fileio_segment_pread, (void *)log->io, fd, head, sizeof head, 0);
    (void)log->io->close(log->io, fd); /* read-only */
    return n > 0 && zseg_is_compressed(head, (size_t)n);
}

int log_compress_closed(pb_log *log, size_t i, int level, uint64_t *plain, uint64_t *packed)
{
    char why[512];
    if (log->failed)
        return PB_EFAILED;
    if (i >= log_closed_count(log))
        return PB_EINVAL;
    uint64_t base = log->closed[i].base;
    int rc =
        log_compress_prepare(log->io, log->dir, base, level, NULL, plain, packed, why, sizeof why);
    if (rc != 1) {
        if (why[0])
            log_say(log, rc < 0 ? LOG_ERROR : LOG_WARN, "compress: %s", why);
        return rc;
    }
    return log_compress_install(log, base);
}

uint64_t log_closed_base(pb_log *log, size_t i)
{
    return log->closed[i].base;
}
