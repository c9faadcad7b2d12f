/*
 * segment - segment file names, index entries, the buffered record scanner
 * shared by the writer's recovery and the reader, and the POSIX segment_io
 * (see segment.h).
 *
 * Threads: any; a segment_buf belongs to one thread at a time.
 */
#include "segment.h"

#include "grow.h"
#include "pb_errors.h"
#include "zseg.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* See segment_resync: how far past the densest possible packing a found
 * record's offset may be. */
#define RESYNC_OFFSET_SLACK (1u << 20)

void segment_index_entry_encode(uint8_t out[PB_INDEX_ENTRY_SIZE], const segment_index_entry *e)
{
    pb_store_le64(out, e->offset);
    pb_store_le64(out + 8, e->position);
    pb_store_le64(out + 16, (uint64_t)e->time_ns);
}

void segment_index_entry_decode(const uint8_t in[PB_INDEX_ENTRY_SIZE], segment_index_entry *e)
{
    e->offset = pb_load_le64(in);
    e->position = pb_load_le64(in + 8);
    e->time_ns = (int64_t)pb_load_le64(in + 16);
}

int segment_path(char *out, size_t cap, const char *dir, uint64_t base, const char *ext)
{
    int n = snprintf(out, cap, "%s/%020" PRIu64 "%s", dir, base, ext);
    if (n < 0 || (size_t)n >= cap)
        return PB_EINVAL;
    return 0;
}

bool segment_parse_name(const char *name, const char *ext, uint64_t *base)
{
    uint64_t v = 0;
    for (int i = 0; i < 20; i++) {
        char c = name[i];
        if (c < '0' || c > '9')
            return false;
        unsigned d = (unsigned)(c - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (strcmp(name + 20, ext) != 0)
        return false;
    *base = v;
    return true;
}

ssize_t segment_pread_posix(void *ctx, int fd, void *buf, size_t len, off_t off)
{
    (void)ctx;
    for (;;) {
        ssize_t n = pread(fd, buf, len, off);
        if (n >= 0)
            return n;
        if (errno != EINTR)
            return -errno;
    }
}

static int px_open(void *ctx, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

static int px_size(void *ctx, int fd, uint64_t *size)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    *size = (uint64_t)st.st_size;
    return 0;
}

static int px_close(void *ctx, int fd)
{
    return close(fd) < 0 ? -errno : 0;
}

static int px_list(void *ctx, const char *dir, int (*fn)(void *arg, const char *name), void *arg)
{
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    int rc = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            rc = errno ? -errno : 0;
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if ((rc = fn(arg, de->d_name)) < 0)
            break;
    }
    (void)closedir(d); /* read-only: a close error loses nothing */
    return rc;
}

static const segment_io posix_io = {
    .open = px_open,
    .pread = segment_pread_posix,
    .size = px_size,
    .close = px_close,
    .list = px_list,
    .ctx = NULL,
};

const segment_io *segment_io_posix(void)
{
    return &posix_io;
}

int segment_buf_init(segment_buf *b, segment_pread_fn fn, void *ctx)
{
    memset(b, 0, sizeof *b);
    b->pread = fn;
    b->pread_ctx = ctx;
    b->fd = -1;
    b->data = malloc(PB_SEGMENT_READ_CHUNK);
    if (!b->data)
        return PB_ENOMEM;
    b->cap = PB_SEGMENT_READ_CHUNK;
    b->readahead = b->cap;
    return 0;
}

void segment_buf_set_ahead(segment_buf *b, const segment_ahead *ahead)
{
    b->ahead = ahead;
}

void segment_buf_set_readahead(segment_buf *b, size_t bytes)
{
    b->readahead = bytes;
}

void segment_buf_free(segment_buf *b)
{
    zseg_view_free(b->z);
    b->z = NULL;
    b->probed = false;
    free(b->data);
    b->data = NULL;
    b->cap = b->len = 0;
}

void segment_buf_attach(segment_buf *b, int fd)
{
    zseg_view_free(b->z);
    b->z = NULL;
    b->probed = false;
    b->fd = fd;
    b->pos = 0;
    b->len = 0;
}

void segment_buf_invalidate(segment_buf *b)
{
    b->len = 0;
    if (b->z)
        zseg_view_invalidate(b->z);
}

bool segment_buf_bad_block(const segment_buf *b, uint64_t *pos, uint64_t *end, uint64_t *first,
                           uint64_t *last, const char **why)
{
    if (!b->z)
        return false;
    zseg_entry e;
    *why = zseg_view_bad(b->z, &e);
    *pos = e.logical;
    *end = e.raw_len ? e.logical + e.raw_len : zseg_view_logical_size(b->z);
    *first = e.first_offset;
    *last = e.last_offset;
    return true;
}

/* Finds out, once per attach (at the first read), whether the file is a
 * compressed segment: its view then serves the plain bytes. */
static int probe(segment_buf *b)
{
    if (!b->probed && b->fd >= 0) {
        int rc = zseg_view_open(&b->z, b->pread, b->pread_ctx, b->fd);
        if (rc < 0 && rc != ZSEG_EBADBLOCK)
            return rc;
        if (b->z)
            zseg_view_set_ahead(b->z, b->ahead);
        b->probed = true;
    }
    return 0;
}

/* Reads the file's plain bytes: through the compressed view if it is one. */
static ssize_t buf_read(segment_buf *b, void *dst, size_t len, uint64_t off)
{
    int rc = probe(b);
    if (rc < 0)
        return rc;
    if (b->z)
        return zseg_view_read(b->z, b->pread, b->pread_ctx, b->fd, dst, len, off);
    return segment_pread_full(b->pread, b->pread_ctx, b->fd, dst, len, (off_t)off);
}

/* Reads from pos into data[len..) until at least n bytes and the readahead
 * are buffered (within cap), or the file ends. The window starts at pos. */
ssize_t segment_pread_full(segment_pread_fn fn, void *ctx, int fd, void *buf, size_t len, off_t off)
{
    size_t got = 0;
    while (got < len) {
        ssize_t r = fn(ctx, fd, (uint8_t *)buf + got, len - got, off + (off_t)got);
        if (r < 0)
            return r;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

static int fill(segment_buf *b, uint64_t pos, size_t n)
{
    /* A compressed file's window only holds what peeks cannot serve (its
     * header, ranges across blocks): readahead would decompress blocks
     * the next peeks then decompress again. */
    size_t want = n > b->readahead || b->z ? n : b->readahead;
    if (want > b->cap)
        want = b->cap;
    if (b->pos != pos)
        b->len = 0;
    b->pos = pos;
    if (b->len < want) {
        ssize_t r = buf_read(b, b->data + b->len, want - b->len, pos + b->len);
        if (r < 0) {
            b->len = 0;
            return (int)r;
        }
        b->len += (size_t)r;
    }
    return 0;
}

int segment_buf_get(segment_buf *b, uint64_t pos, size_t n, const uint8_t **p, size_t *avail)
{
    if (pos >= b->pos && pos - b->pos <= b->len && b->len - (pos - b->pos) >= n) {
        *p = b->data + (pos - b->pos);
        *avail = b->len - (size_t)(pos - b->pos);
        return 0;
    }
    /* A compressed file: bytes inside one block are served from the
     * decompressed block itself, not copied into the window (blocks hold
     * whole records, so every record read of a sequential scan is). */
    int rc = probe(b);
    if (rc < 0)
        return rc;
    if (b->z && (rc = zseg_view_peek(b->z, b->pread, b->pread_ctx, b->fd, pos, n, p, avail)) != 0)
        return rc < 0 ? rc : 0;
    /* Refill starting at pos (everything before it is consumed), the whole
     * window, so the following records come without another syscall. */
    b->len = 0;
    rc = fill(b, pos, n);
    if (rc < 0)
        return rc;
    if (n > b->cap && b->len == b->cap) {
        /* A record bigger than the window, and the file really has more:
         * grow (the caller bounds n by the maximum record size). A bogus
         * length near the end of a file never gets here, so it cannot make
         * us allocate for bytes that are not there. */
        if (grow_resize(&b->data, n, 1) < 0)
            return PB_ENOMEM;
        if (b->readahead == b->cap)
            b->readahead = n;
        b->cap = n;
        if ((rc = fill(b, pos, n)) < 0)
            return rc;
    }
    *p = b->data;
    *avail = b->len;
    return 0;
}

int segment_read_record(segment_buf *b, uint64_t pos, uint32_t max_event, pb_record *rec,
                        uint32_t *size)
{
    const uint8_t *p;
    size_t avail;
    for (int attempt = 0;; attempt++) {
        int rc = segment_buf_get(b, pos, PB_RECORD_HEADER_SIZE, &p, &avail);
        if (rc < 0)
            return rc;
        rc = record_decode(p, avail, max_event, rec, size);
        if (rc == PB_EINCOMPLETE && *size > avail) {
            /* The record is larger than what is buffered: read it whole. */
            rc = segment_buf_get(b, pos, *size, &p, &avail);
            if (rc < 0)
                return rc;
            rc = record_decode(p, avail, max_event, rec, size);
        }
        if (rc != PB_ECORRUPT || attempt > 0)
            return rc;
        segment_buf_invalidate(b);
    }
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (; n >= 8; p += 8, n -= 8)
        if (pb_load_le64(p) != 0)
            return false;
    for (; n > 0; p++, n--)
        if (*p)
            return false;
    return true;
}

int segment_zero_header(segment_buf *b, uint64_t pos)
{
    const uint8_t *p;
    size_t avail;
    int rc = segment_buf_get(b, pos, 8, &p, &avail);
    if (rc < 0)
        return rc;
    return avail >= 8 && all_zero(p, 8);
}

int segment_zero_tail(segment_buf *b, uint64_t pos)
{
    const uint8_t *p;
    size_t avail;
    int rc = segment_zero_header(b, pos);
    if (rc <= 0)
        return rc; /* not a zero header: no zero tail */
    if ((rc = segment_buf_get(b, pos, 1, &p, &avail)) < 0)
        return rc;
    for (;;) {
        if (!all_zero(p, avail))
            return 0;
        pos += avail;
        if ((rc = segment_buf_get(b, pos, 1, &p, &avail)) < 0)
            return rc;
        if (avail == 0)
            return 1;
    }
}

/* segment_zero_tail through the reader's memory *zero_pos (segment.h). */
static int zero_tail_seen(segment_buf *b, uint64_t pos, uint64_t *zero_pos)
{
    int z = pos >= *zero_pos ? segment_zero_header(b, pos) : segment_zero_tail(b, pos);
    if (z == 1 && pos < *zero_pos)
        *zero_pos = pos;
    return z;
}

int segment_bad_record(segment_buf *b, uint64_t pos, bool live, uint64_t *zero_pos)
{
    int z = zero_tail_seen(b, pos, zero_pos);
    if (z < 0)
        return z;
    segment_buf_invalidate(b);
    if (z == 1)
        return SEGMENT_BAD_END;
    pb_record rec;
    uint32_t size;
    int rc = segment_read_record(b, pos, PB_RECORD_MAX_EVENT, &rec, &size);
    if (rc == 0)
        return SEGMENT_BAD_AGAIN;
    if (rc == PB_ECORRUPT && size > 0 && live) {
        if ((z = zero_tail_seen(b, pos + size, zero_pos)) < 0)
            return z;
        segment_buf_invalidate(b);
        if (z == 1)
            return SEGMENT_BAD_END;
    }
    return SEGMENT_BAD_DAMAGE;
}

bool segment_verifies_again(segment_buf *b, uint64_t pos, bool any_offset, uint64_t expected)
{
    pb_record again;
    uint32_t size;
    segment_buf_invalidate(b);
    return segment_read_record(b, pos, PB_RECORD_MAX_EVENT, &again, &size) == 0 &&
           (any_offset || again.offset == expected);
}

int segment_resync(segment_buf *b, uint64_t from, uint64_t min_offset, uint64_t max_offset,
                   uint32_t max_event, uint64_t *found, pb_record *rec, uint32_t *size)
{
    if (max_event > PB_RECORD_MAX_EVENT)
        max_event = PB_RECORD_MAX_EVENT;
    uint64_t q = from;
    for (;;) {
        const uint8_t *p;
        size_t avail;
        int rc = segment_buf_get(b, q, PB_RECORD_HEADER_SIZE, &p, &avail);
        if (rc < 0)
            return rc;
        if (avail < PB_RECORD_HEADER_SIZE)
            return PB_EEOF;
        /* Walk the buffered bytes with cheap checks first; only a position
         * whose length and offset look right gets a CRC. Every record takes
         * at least 24 bytes, so a genuine record d bytes past `from` has an
         * offset of at most min_offset + d/24 (plus some slack, so that even
         * a gap in the offsets, which the writer never makes, is found):
         * random bytes almost never pass that, which keeps big bogus lengths
         * from being read and summed. */
        size_t i;
        bool candidate = false;
        for (i = 0; i + PB_RECORD_HEADER_SIZE <= avail; i++) {
            uint32_t length = pb_load_le32(p + i + 4);
            if (length < PB_RECORD_FIXED_LEN || length - PB_RECORD_FIXED_LEN > max_event)
                continue;
            uint64_t off = pb_load_le64(p + i + 8);
            uint64_t reach = (q + i - from) / PB_RECORD_HEADER_SIZE + RESYNC_OFFSET_SLACK;
            uint64_t bound = min_offset > UINT64_MAX - reach ? UINT64_MAX : min_offset + reach;
            if (off < min_offset || off > bound || off > max_offset)
                continue;
            candidate = true;
            break;
        }
        q += i;
        if (!candidate)
            continue;
        rc = segment_read_record(b, q, max_event, rec, size);
        if (rc == 0) {
            *found = q;
            return 0;
        }
        if (rc != PB_ECORRUPT && rc != PB_EINCOMPLETE)
            return rc;
        q++;
    }
}

/* --- one file on its own --- */

int segment_file_open(segment_file *f, const char *path, bool follow)
{
    f->fd = -1;
    f->follow = follow;
    f->problem.file = f->path;
    f->problem.reason = f->reason;
    if (snprintf(f->path, sizeof f->path, "%s", path) >= (int)sizeof f->path)
        return PB_EINVAL;
    int rc = segment_buf_init(&f->buf, segment_pread_posix, NULL);
    if (rc < 0)
        return rc;
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) {
        rc = -errno;
        segment_buf_free(&f->buf);
        return rc;
    }
    segment_buf_attach(&f->buf, f->fd);
    return 0;
}

void segment_file_close(segment_file *f)
{
    if (f->fd >= 0)
        (void)close(f->fd); /* read-only: a close error loses nothing */
    f->fd = -1;
    segment_buf_free(&f->buf);
}

int segment_file_report(segment_file *f, uint64_t position, uint64_t first, uint64_t last,
                        const char *reason)
{
    f->problem.file = f->path;
    f->problem.position = position;
    f->problem.first_offset = first;
    f->problem.last_offset = last;
    snprintf(f->reason, sizeof f->reason, "%s", reason);
    f->problem.reason = f->reason;
    return PB_ECORRUPT;
}
