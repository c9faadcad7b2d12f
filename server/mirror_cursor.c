/*
 * mirror_cursor - the cursor file (mirror_cursor.h). A small text file, so
 * an operator can read it; a CRC32C over everything before its last line
 * catches a damaged one:
 *
 *   protobus-mirror-cursor 1
 *   mirror NAME
 *   stream STREAM
 *   acked-seq N
 *   order-from N                 (only when not 0)
 *   partition NAME OFFSET [SEQ AT] (one per partition, sorted by name;
 *                                SEQ AT: the stream sequence of its newest
 *                                offset acknowledged in order, and that
 *                                offset, when known)
 *   crc32c XXXXXXXX              (of all the bytes above, lowercase hex)
 */
#include "mirror_cursor.h"

#include "config.h"
#include "crc32c.h"
#include "grow.h"
#include "pb_errors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAGIC     "protobus-mirror-cursor 1"
#define MAX_BYTES (64u << 20) /* a bound on what load reads: ~1M partitions */

__attribute__((format(printf, 3, 4))) static int why_fmt(char *why, size_t n, const char *fmt, ...)
{
    if (why && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, n, fmt, ap);
        va_end(ap);
    }
    return PB_EFORMAT;
}

int mirror_cursor_path(char *out, size_t cap, const char *data_dir, const char *name)
{
    int n = snprintf(out, cap, "%s/mirror@%s.cursor", data_dir, name);
    return n < 0 || (size_t)n >= cap ? PB_ETOOBIG : 0;
}

void mirror_cursors_free(mirror_cursors *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->count; i++)
        free(c->partitions[i]);
    free(c->partitions);
    free(c->offsets);
    free(c->seqs);
    free(c->seq_offsets);
    free(c->stream);
    memset(c, 0, sizeof *c);
}

/* --- save ---------------------------------------------------------------- */

typedef struct text {
    char *p;
    size_t len, cap;
    int failed;
} text;

__attribute__((format(printf, 2, 3))) static void put(text *t, const char *fmt, ...)
{
    for (int tries = 0; tries < 2 && !t->failed; tries++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->p ? t->p + t->len : NULL, t->p ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = 1;
            return;
        }
        if (t->p && (size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        if (grow_reserve(&t->p, &t->cap, t->len + (size_t)n + 1, 1) < 0)
            t->failed = 1;
    }
}

int mirror_cursor_save(const fileio *io, const char *dir, const char *path, const char *name,
                       const mirror_cursors *c, char *why, size_t whylen)
{
    text t = {0};
    put(&t, "%s\nmirror %s\nstream %s\nacked-seq %" PRIu64 "\n", MAGIC, name, c->stream,
        c->acked_seq);
    if (c->order_from)
        put(&t, "order-from %" PRIu64 "\n", c->order_from);
    for (size_t i = 0; i < c->count; i++) {
        if (c->seqs && c->seqs[i])
            put(&t, "partition %s %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", c->partitions[i],
                c->offsets[i], c->seqs[i], c->seq_offsets[i]);
        else
            put(&t, "partition %s %" PRIu64 "\n", c->partitions[i], c->offsets[i]);
    }
    if (!t.failed)
        put(&t, "crc32c %08" PRIx32 "\n", crc32c(0, t.p, t.len));
    if (t.failed) {
        free(t.p);
        why_fmt(why, whylen, "out of memory");
        return PB_ENOMEM;
    }

    char tmp[4200];
    int rc;
    const char *step = "open", *file = tmp;
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        free(t.p);
        why_fmt(why, whylen, "%s: path too long", path);
        return PB_ETOOBIG;
    }
    int fd = io->open(io, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = fd;
        goto out;
    }
    struct iovec iov = {.iov_base = t.p, .iov_len = t.len};
    step = "write";
    rc = fileio_write_all(io, fd, &iov, 1, 0);
    if (rc == 0) {
        step = "fdatasync";
        rc = io->fdatasync(io, fd);
    }
    int crc = io->close(io, fd);
    if (rc == 0 && crc < 0) {
        step = "close";
        rc = crc;
    }
    if (rc < 0)
        goto out;
    /* The rename makes the new content the file's, atomically; the
     * directory's fsync makes the rename durable. */
    step = "rename";
    file = path;
    rc = io->rename(io, tmp, path);
    if (rc == 0) {
        step = "fsync of the directory";
        file = dir;
        rc = fileio_sync_dir(io, dir);
    }
out:
    free(t.p);
    if (rc < 0)
        why_fmt(why, whylen, "%s: %s: %s", file, step, pb_strerror(rc));
    return rc;
}

/* --- load ---------------------------------------------------------------- */

static int read_whole(const fileio *io, const char *path, char **out, size_t *len)
{
    int fd = io->open(io, path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return fd == -ENOENT ? PB_ENOTFOUND : fd;
    off_t size = 0;
    int rc = io->fsize(io, fd, &size);
    char *buf = NULL;
    if (rc == 0 && (size < 0 || (uint64_t)size > MAX_BYTES))
        rc = PB_ETOOBIG;
    if (rc == 0 && !(buf = malloc((size_t)size + 1)))
        rc = PB_ENOMEM;
    size_t got = 0;
    while (rc == 0 && got < (size_t)size) {
        ssize_t n = io->pread(io, fd, buf + got, (size_t)size - got, (off_t)got);
        if (n < 0)
            rc = (int)n;
        else if (n == 0)
            break;
        else
            got += (size_t)n;
    }
    (void)io->close(io, fd);
    if (rc < 0) {
        free(buf);
        return rc;
    }
    buf[got] = '\0';
    *out = buf;
    *len = got;
    return 0;
}

static int parse_u64(const char *s, uint64_t *v)
{
    if (*s < '0' || *s > '9')
        return -1;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *v = x;
    return 0;
}

int mirror_cursor_load(const fileio *io, const char *path, const char *name, mirror_cursors *out,
                       char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    char *buf = NULL;
    size_t len = 0, cap = 0, ocap = 0;
    int rc = read_whole(io, path, &buf, &len);
    if (rc < 0) {
        if (rc != PB_ENOTFOUND)
            why_fmt(why, whylen, "%s: cannot read it: %s", path, pb_strerror(rc));
        return rc;
    }
    if (memchr(buf, '\0', len)) {
        rc = why_fmt(why, whylen, "%s: contains a NUL byte: not a cursor file", path);
        goto fail;
    }
    /* The last line is the CRC of everything before it. */
    if (len == 0 || buf[len - 1] != '\n') {
        rc = why_fmt(why, whylen, "%s: does not end with a whole line (cut short?)", path);
        goto fail;
    }
    buf[len - 1] = '\0';
    char *last = strrchr(buf, '\n');
    size_t body = last ? (size_t)(last - buf) + 1 : 0;
    unsigned long want;
    char *end;
    if (!last || strncmp(last + 1, "crc32c ", 7) != 0 ||
        (want = strtoul(last + 8, &end, 16), *end != '\0') ||
        (uint32_t)want != crc32c(0, buf, body)) {
        rc = why_fmt(why, whylen, "%s: checksum line missing or wrong: the file is damaged", path);
        goto fail;
    }
    *last = '\0';

    int lineno = 0;
    char *save = NULL;
    size_t scap = 0, socap = 0;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        char word[32], a[256], b[32], c3[32], d[32];
        int n = sscanf(line, "%31s %255s %31s %31s %31s", word, a, b, c3, d);
        uint64_t v, seq = 0, at = 0;
        if (lineno == 1) {
            if (strcmp(line, MAGIC) != 0) {
                rc = why_fmt(why, whylen, "%s:1: not \"%s\"", path, MAGIC);
                goto fail;
            }
        } else if (lineno == 2) {
            if (n != 2 || strcmp(word, "mirror") != 0 || strcmp(a, name) != 0) {
                rc = why_fmt(why, whylen, "%s:2: expected \"mirror %s\"", path, name);
                goto fail;
            }
        } else if (lineno == 3) {
            if (n != 2 || strcmp(word, "stream") != 0 || !(out->stream = strdup(a))) {
                rc = why_fmt(why, whylen, "%s:3: expected \"stream NAME\"", path);
                goto fail;
            }
        } else if (lineno == 4) {
            if (n != 2 || strcmp(word, "acked-seq") != 0 || parse_u64(a, &out->acked_seq) < 0) {
                rc = why_fmt(why, whylen, "%s:4: expected \"acked-seq N\"", path);
                goto fail;
            }
        } else if (lineno == 5 && n >= 1 && strcmp(word, "order-from") == 0) {
            if (n != 2 || parse_u64(a, &out->order_from) < 0) {
                rc = why_fmt(why, whylen, "%s:5: expected \"order-from N\"", path);
                goto fail;
            }
        } else {
            if ((n != 3 && n != 5) || strcmp(word, "partition") != 0 ||
                !partname_valid(a, strlen(a)) || parse_u64(b, &v) < 0 ||
                (n == 5 && (parse_u64(c3, &seq) < 0 || parse_u64(d, &at) < 0))) {
                rc = why_fmt(why, whylen, "%s:%d: expected \"partition NAME OFFSET [SEQ AT]\"",
                             path, lineno);
                goto fail;
            }
            if (out->count && strcmp(out->partitions[out->count - 1], a) >= 0) {
                rc = why_fmt(why, whylen, "%s:%d: partitions out of order", path, lineno);
                goto fail;
            }
            if (grow_reserve(&out->partitions, &cap, out->count + 1, sizeof *out->partitions) < 0 ||
                grow_reserve(&out->offsets, &ocap, out->count + 1, sizeof *out->offsets) < 0 ||
                grow_reserve(&out->seqs, &scap, out->count + 1, sizeof *out->seqs) < 0 ||
                grow_reserve(&out->seq_offsets, &socap, out->count + 1, sizeof *out->seq_offsets) <
                    0) {
                rc = PB_ENOMEM;
                goto fail;
            }
            if (!(out->partitions[out->count] = strdup(a))) {
                rc = PB_ENOMEM;
                goto fail;
            }
            out->seqs[out->count] = seq;
            out->seq_offsets[out->count] = at;
            out->offsets[out->count++] = v;
        }
    }
    if (lineno < 4) {
        rc = why_fmt(why, whylen, "%s: cut short after %d line(s)", path, lineno);
        goto fail;
    }
    free(buf);
    return 0;
fail:
    if (rc == PB_ENOMEM)
        why_fmt(why, whylen, "%s: out of memory", path);
    free(buf);
    mirror_cursors_free(out);
    return rc;
}
