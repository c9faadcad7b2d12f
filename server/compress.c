/*
 * compress - rewrites a closed (rotated) segment as a compressed segment
 * (proto/zseg.h, FORMAT.md Part B) and puts it in the plain file's place.
 *
 * Threads: the partition's writer thread (upkeep_compress_one, when it has
 * nothing queued, one segment at a time), like retention: the writer owns
 * the closed-segment list, so a segment is never compressed and removed at
 * the same time. The active segment is never touched.
 *
 * Crash safety, step by step (tests/unit/test_powerloss.c):
 *   1. the compressed bytes go to <base>.log.ztmp (O_TRUNC: a leftover of
 *      an earlier crash is overwritten), then fdatasync;
 *   2. rename(<base>.log.ztmp, <base>.log): atomic, the plain file is
 *      replaced (unlinked) in the same step;
 *   3. fsync of the directory: the replacement is durable.
 * A crash before 2 leaves the plain segment (and a .ztmp no reader lists);
 * after 2 the whole compressed file, whose data was synced before the
 * rename. Readers holding the plain file open keep reading it. The .idx
 * stays valid: its positions are plain-file positions, which the
 * compressed file serves unchanged.
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

typedef struct zwriter {
    pb_log *log;
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
} zwriter;

static int zw_write(zwriter *w, const void *p, size_t n, uint64_t at)
{
    struct iovec iov = {.iov_base = (void *)p, .iov_len = n};
    int rc = fileio_write_all(w->log->io, w->fd, &iov, 1, (off_t)at);
    if (rc < 0)
        log_say(w->log, LOG_ERROR, "compress: write of %s at byte %llu failed: %s", w->tmp,
                (unsigned long long)at, pb_strerror(rc));
    return rc;
}

static int zw_flush(zwriter *w)
{
    if (w->raw_len == 0)
        return 0;
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
            log_say(w->log, LOG_WARN,
                    "compress: segment %s: the record at byte %llu does not verify (offset %llu "
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
static int write_compressed(zwriter *w, int pfd, uint64_t base, const char *path)
{
    pb_log *log = w->log;
    segment_buf b;
    off_t size;
    uint8_t head[ZSEG_HEADER_END] = {0};
    int rc = log->io->fsize(log->io, pfd, &size);
    if (rc < 0)
        return rc;
    ssize_t n =
        segment_pread_full(fileio_segment_pread, (void *)log->io, pfd, head, sizeof head, 0);
    if (n < 0)
        return (int)n;
    if (zseg_is_compressed(head, (size_t)n) || n < (ssize_t)PB_FILE_HEADER_SIZE)
        return 0;
    if ((rc = segment_buf_init(&b, fileio_segment_pread, (void *)log->io)) < 0)
        return rc;
    segment_buf_attach(&b, pfd);
    memset(head + PB_FILE_HEADER_SIZE, 0, ZSEG_HEADER_END - PB_FILE_HEADER_SIZE);
    w->wpos = ZSEG_HEADER_END;
    w->raw_logical = PB_FILE_HEADER_SIZE;
    if ((rc = zw_write(w, head, sizeof head, 0)) == 0 &&
        (rc = copy_records(w, &b, base, (uint64_t)size, path)) == 1 && (rc = zw_flush(w)) == 0 &&
        (rc = zw_finish(w, (uint64_t)size)) == 0)
        rc = 1;
    segment_buf_free(&b);
    return rc;
}

static int replace(pb_log *log, zwriter *w, const char *path, int rc)
{
    int s = rc == 1 ? log->io->fdatasync(log->io, w->fd) : 0;
    int c = log->io->close(log->io, w->fd);
    if (rc == 1 && (s < 0 || c < 0)) {
        rc = s < 0 ? s : c;
        log_say(log, LOG_ERROR, "compress: sync of %s failed: %s; the plain segment is kept",
                w->tmp, pb_strerror(rc));
    }
    if (rc != 1) {
        (void)log->io->unlink(log->io, w->tmp); /* a leftover is overwritten next time */
        return rc;
    }
    if ((rc = log->io->rename(log->io, w->tmp, path)) < 0) {
        log_say(log, LOG_ERROR, "compress: rename of %s to %s failed: %s", w->tmp, path,
                pb_strerror(rc));
        (void)log->io->unlink(log->io, w->tmp);
        return rc;
    }
    /* Durable before anything relies on it; as for rotation, a failed
     * directory sync fails the log. */
    return (rc = log_sync_dir(log)) < 0 ? rc : 1;
}

int log_compress_closed(pb_log *log, size_t i, int level, uint64_t *plain, uint64_t *packed)
{
    char path[PATH_MAX], tmp[PATH_MAX + 8];
    if (log->failed)
        return PB_EFAILED;
    if (i >= log_closed_count(log))
        return PB_EINVAL;
    closed_seg *s = &log->closed[i];
    int rc = segment_path(path, sizeof path, log->dir, s->base, ".log");
    if (rc < 0)
        return rc;
    snprintf(tmp, sizeof tmp, "%s.ztmp", path);
    int pfd = log->io->open(log->io, path, O_RDONLY, 0);
    if (pfd < 0)
        return pfd;
    zwriter w = {.log = log, .tmp = tmp, .level = level};
    w.fd = log->io->open(log->io, tmp, O_WRONLY | O_CREAT | O_TRUNC, FILE_MODE);
    if (w.fd < 0) {
        rc = w.fd;
        log_say(log, LOG_ERROR, "compress: cannot create %s: %s", tmp, pb_strerror(rc));
    } else {
        rc = write_compressed(&w, pfd, s->base, path);
        off_t psize = 0;
        (void)log->io->fsize(log->io, pfd, &psize);
        *plain = (uint64_t)psize;
        *packed = w.wpos + w.nent * ZSEG_ENTRY_SIZE + 4;
        rc = replace(log, &w, path, rc);
    }
    (void)log->io->close(log->io, pfd); /* read-only */
    if (rc == 1)
        s->known = false; /* its size changed: read again when needed */
    zseg_cctx_free(w.cctx);
    free(w.raw);
    free(w.comp);
    free(w.ent);
    return rc;
}

uint64_t log_closed_base(pb_log *log, size_t i)
{
    return log->closed[i].base;
}
