/*
 * topics_cold - topics that left memory, in DIR/topics.cold (see
 * topics_cold.h; byte layout in proto/FORMAT.md, Part B, "Cold topics").
 *
 * File: a 24-byte header (magic, version, history), the entries sorted by
 * (hash, name), then a 12-byte trailer: the entry count and a CRC32C of
 * everything before the CRC. The count sits at the end so that a merge can
 * stream the file out without knowing it in advance.
 *
 * Threads: see topics_cold.h. A cold_store is changed only by cold_merge
 * (writer thread); cold_find uses the store's own descriptor (writer
 * thread); each cold_iter opens its own.
 */
#include "topics_cold.h"

#include "crc32c.h"
#include "grow.h"
#include "hash.h"
#include "pb_errors.h"
#include "record.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COLD_MAGIC       "PBTOPCLD"
#define COLD_VERSION     1u
#define COLD_HEADER      24u
#define COLD_TRAILER     12u
#define COLD_ENTRY_HDR   16u
#define COLD_HISTORY_MAX 4096u /* offsets per entry a file may claim */
#define BLOOM_BITS_PER   10u   /* ~1% false positives with 4 probes */
#define RD_CAP           (COLD_ENTRY_HDR + COLD_NAME_MAX + 8u * COLD_HISTORY_MAX + 64u * 1024u)
#define WR_CAP           (64u * 1024u)

struct cold_store {
    const fileio *io;
    char *dir, *path, *tmp;
    uint32_t history;      /* offsets the table keeps per topic */
    uint32_t file_history; /* offsets per entry the file may hold */
    uint64_t count;
    uint64_t entries_end; /* file position after the last entry */
    uint64_t *idx_hash;   /* every COLD_INDEX_EVERY-th entry: its hash ... */
    uint64_t *idx_pos;    /* ... and position */
    size_t nidx;
    uint64_t *bloom; /* bloom_mask + 1 bits; NULL when empty */
    uint64_t bloom_mask;
    int fd;            /* cold_find's descriptor, opened on demand; -1 */
    uint8_t *buf;      /* cold_find's read buffer (RD_CAP), allocated on first use: a */
    uint64_t *scratch; /* partition that never evicted holds neither */
};

/* cold_find's buffers, on first use. */
static int find_buffers(cold_store *c)
{
    if (!c->buf && !(c->buf = malloc(RD_CAP)))
        return PB_ENOMEM;
    if (!c->scratch && !(c->scratch = malloc((size_t)COLD_HISTORY_MAX * sizeof *c->scratch)))
        return PB_ENOMEM;
    return 0;
}

struct cold_iter {
    cold_store *c;
    int fd;
    uint8_t *buf;
    size_t len, at;
    uint64_t base; /* file position of buf[0] */
    uint64_t end;  /* entries end here */
    uint64_t left; /* entries still to read */
    uint64_t *offs;
};

int cold_entry_cmp(uint64_t ha, const uint8_t *a, size_t alen, uint64_t hb, const uint8_t *b,
                   size_t blen)
{
    if (ha != hb)
        return ha < hb ? -1 : 1;
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

/* --- the Bloom filter of the hashes --- */

static void bloom_probe(uint64_t h, uint64_t mask, uint64_t *idx)
{
    uint64_t h2 = hash_mix(h) | 1;
    for (int i = 0; i < 4; i++)
        idx[i] = (h + (uint64_t)i * h2) & mask;
}

static void bloom_add(uint64_t *bloom, uint64_t mask, uint64_t h)
{
    uint64_t idx[4];
    bloom_probe(h, mask, idx);
    for (int i = 0; i < 4; i++)
        bloom[idx[i] >> 6] |= 1ull << (idx[i] & 63);
}

static bool bloom_maybe(const cold_store *c, uint64_t h)
{
    if (!c->bloom)
        return false;
    uint64_t idx[4];
    bloom_probe(h, c->bloom_mask, idx);
    for (int i = 0; i < 4; i++)
        if (!(c->bloom[idx[i] >> 6] & (1ull << (idx[i] & 63))))
            return false;
    return true;
}

/* The index and filter of a file being read or written. */
typedef struct cold_index {
    uint64_t *hash, *pos;
    size_t n, cap;
    uint64_t *bloom;
    uint64_t mask;
} cold_index;

static int index_init(cold_index *x, uint64_t max_entries)
{
    memset(x, 0, sizeof *x);
    uint64_t bits = 64;
    while (bits < max_entries * BLOOM_BITS_PER)
        bits <<= 1;
    x->bloom = calloc(bits / 64, sizeof *x->bloom);
    if (!x->bloom)
        return PB_ENOMEM;
    x->mask = bits - 1;
    return 0;
}

static void index_free(cold_index *x)
{
    free(x->hash);
    free(x->pos);
    free(x->bloom);
    memset(x, 0, sizeof *x);
}

/* Entry number i (counting from 0) of hash h at pos. */
static int index_add(cold_index *x, uint64_t i, uint64_t h, uint64_t pos)
{
    bloom_add(x->bloom, x->mask, h);
    if (i % COLD_INDEX_EVERY)
        return 0;
    size_t cap = x->cap;
    if (grow_reserve(&x->hash, &cap, x->n + 1, sizeof *x->hash) < 0 ||
        grow_reserve(&x->pos, &x->cap, x->n + 1, sizeof *x->pos) < 0)
        return PB_ENOMEM;
    x->hash[x->n] = h;
    x->pos[x->n] = pos;
    x->n++;
    return 0;
}

/* Gives the store the index of its new file (the old one is freed). */
static void index_take(cold_store *c, cold_index *x)
{
    free(c->idx_hash);
    free(c->idx_pos);
    free(c->bloom);
    c->idx_hash = x->hash;
    c->idx_pos = x->pos;
    c->nidx = x->n;
    c->bloom = x->bloom;
    c->bloom_mask = x->mask;
    memset(x, 0, sizeof *x);
}

/* --- reading --- */

/* Ensures n bytes at it->at in the buffer; PB_ECORRUPT if the entries end
 * first, or an I/O error. */
static int rd_need(cold_iter *it, size_t n, const uint8_t **p)
{
    if (it->len - it->at < n) {
        const fileio *io = it->c->io;
        memmove(it->buf, it->buf + it->at, it->len - it->at);
        it->base += it->at;
        it->len -= it->at;
        it->at = 0;
        if (n > RD_CAP || it->base + n > it->end)
            return PB_ECORRUPT;
        uint64_t room = it->end - it->base;
        size_t want = room < RD_CAP ? (size_t)room : RD_CAP;
        while (it->len < want) {
            ssize_t r = io->pread(io, it->fd, it->buf + it->len, want - it->len,
                                  (off_t)(it->base + it->len));
            if (r < 0)
                return (int)r;
            if (r == 0)
                return PB_ECORRUPT; /* shorter than it was */
            it->len += (size_t)r;
        }
    }
    *p = it->buf + it->at;
    return 0;
}

/* Decodes the entry at it->at; checks its bounds (history: the most
 * offsets it may have). */
static int rd_entry(cold_iter *it, uint32_t history, cold_entry *e, size_t *size)
{
    const uint8_t *p;
    int rc = rd_need(it, COLD_ENTRY_HDR, &p);
    if (rc < 0)
        return rc;
    e->hash = pb_load_le64(p);
    e->name_len = pb_load_le32(p + 8);
    e->count = pb_load_le32(p + 12);
    if (e->name_len == 0 || e->name_len > COLD_NAME_MAX || e->count == 0 || e->count > history)
        return PB_ECORRUPT;
    *size = COLD_ENTRY_HDR + e->name_len + 8u * e->count;
    if ((rc = rd_need(it, *size, &p)) < 0)
        return rc;
    e->name = p + COLD_ENTRY_HDR;
    const uint8_t *o = e->name + e->name_len;
    for (uint32_t k = 0; k < e->count; k++)
        it->offs[k] = pb_load_le64(o + 8u * k);
    e->offsets = it->offs;
    it->at += *size;
    return 0;
}

static int iter_new(cold_store *c, int fd, uint64_t from, uint64_t end, uint64_t left,
                    cold_iter **out)
{
    cold_iter *it = calloc(1, sizeof *it);
    if (!it)
        return PB_ENOMEM;
    it->buf = malloc(RD_CAP);
    it->offs = malloc((size_t)COLD_HISTORY_MAX * sizeof *it->offs);
    if (!it->buf || !it->offs) {
        free(it->buf);
        free(it->offs);
        free(it);
        return PB_ENOMEM;
    }
    it->c = c;
    it->fd = fd;
    it->base = from;
    it->end = end;
    it->left = left;
    *out = it;
    return 0;
}

static void iter_free(cold_iter *it)
{
    if (!it)
        return;
    free(it->buf);
    free(it->offs);
    free(it);
}

/* Reads and checks the whole file open on fd (size bytes), building x. */
static int load(cold_store *c, int fd, uint64_t size, cold_index *x, char *why, size_t whylen)
{
    const fileio *io = c->io;
    uint8_t hdr[COLD_HEADER], trl[COLD_TRAILER];
    if (size < COLD_HEADER + COLD_TRAILER ||
        io->pread(io, fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr ||
        io->pread(io, fd, trl, sizeof trl, (off_t)(size - COLD_TRAILER)) != (ssize_t)sizeof trl) {
        snprintf(why, whylen, "cut short (%llu bytes)", (unsigned long long)size);
        return PB_ECORRUPT;
    }
    if (memcmp(hdr, COLD_MAGIC, 8) != 0 || pb_load_le32(hdr + 8) != COLD_VERSION) {
        snprintf(why, whylen, "not a version %u cold topics file", COLD_VERSION);
        return PB_EFORMAT;
    }
    uint32_t history = pb_load_le32(hdr + 12);
    uint64_t count = pb_load_le64(trl);
    uint64_t end = size - COLD_TRAILER;
    if (history == 0 || history > COLD_HISTORY_MAX ||
        count > (end - COLD_HEADER) / (COLD_ENTRY_HDR + 1 + 8)) {
        snprintf(why, whylen, "implausible history %u or count %llu", history,
                 (unsigned long long)count);
        return PB_ECORRUPT;
    }
    int rc = index_init(x, count);
    if (rc < 0)
        return rc;
    cold_iter *it;
    if ((rc = iter_new(c, fd, COLD_HEADER, end, count, &it)) < 0)
        return rc;
    uint32_t crc = crc32c(0, hdr, sizeof hdr);
    cold_entry e, prev = {0};
    for (uint64_t i = 0; i < count; i++) {
        uint64_t pos = it->base + it->at;
        size_t esize;
        if ((rc = rd_entry(it, history, &e, &esize)) < 0) {
            snprintf(why, whylen, "entry %llu at byte %llu: %s", (unsigned long long)i,
                     (unsigned long long)pos, rc == PB_ECORRUPT ? "damaged" : pb_strerror(rc));
            goto out;
        }
        crc = crc32c(crc, it->buf + it->at - esize, esize);
        bool ordered = i == 0 || cold_entry_cmp(prev.hash, prev.name, prev.name_len, e.hash, e.name,
                                                e.name_len) < 0;
        bool ascending = true;
        for (uint32_t k = 1; k < e.count; k++)
            ascending = ascending && e.offsets[k - 1] < e.offsets[k];
        if (!ordered || !ascending || e.hash != hash_bytes(0, e.name, e.name_len)) {
            rc = PB_ECORRUPT;
            snprintf(why, whylen, "entry %llu at byte %llu: out of order or inconsistent",
                     (unsigned long long)i, (unsigned long long)pos);
            goto out;
        }
        if ((rc = index_add(x, i, e.hash, pos)) < 0)
            goto out;
        /* The entry's bytes may move in the read buffer: the order check
         * keeps the name in a buffer of its own. */
        prev = e;
        memcpy(c->buf, e.name, e.name_len);
        prev.name = c->buf;
    }
    if (it->base + it->at != end) {
        rc = PB_ECORRUPT;
        snprintf(why, whylen, "%llu bytes after the last entry",
                 (unsigned long long)(end - it->base - it->at));
        goto out;
    }
    crc = crc32c(crc, trl, 8);
    if (crc != pb_load_le32(trl + 8)) {
        rc = PB_ECORRUPT;
        snprintf(why, whylen, "CRC mismatch");
        goto out;
    }
    c->file_history = history;
    c->count = count;
    c->entries_end = end;
out:
    iter_free(it);
    return rc;
}

int cold_open(cold_store **out, const fileio *io, const char *dir, uint32_t history, bool *present,
              char *why, size_t whylen)
{
    *out = NULL;
    *present = false;
    cold_store *c = calloc(1, sizeof *c);
    if (!c)
        return PB_ENOMEM;
    c->io = io;
    c->fd = -1;
    c->history = history;
    c->file_history = history;
    c->entries_end = COLD_HEADER;
    if (!(c->dir = strdup(dir)) || asprintf(&c->path, "%s/%s", dir, TOPICS_COLD_NAME) < 0) {
        c->path = NULL;
        cold_free(c);
        return PB_ENOMEM;
    }
    if (asprintf(&c->tmp, "%s/%s.tmp", dir, TOPICS_COLD_NAME) < 0) {
        c->tmp = NULL;
        cold_free(c);
        return PB_ENOMEM;
    }
    *out = c;
    int fd = io->open(io, c->path, O_RDONLY, 0);
    if (fd == -ENOENT)
        return 0;
    *present = true;
    if (fd < 0) {
        snprintf(why, whylen, "open: %s", pb_strerror(fd));
        return fd;
    }
    off_t size = 0;
    int rc = io->fsize(io, fd, &size);
    cold_index x;
    memset(&x, 0, sizeof x);
    if (rc < 0)
        snprintf(why, whylen, "size: %s", pb_strerror(rc));
    else if ((rc = find_buffers(c)) == 0)
        rc = load(c, fd, (uint64_t)size, &x, why, whylen);
    (void)io->close(io, fd); /* read-only */
    if (rc < 0) {
        index_free(&x);
        c->count = 0;
        c->entries_end = COLD_HEADER;
        c->file_history = history;
        return rc;
    }
    index_take(c, &x);
    return 0;
}

void cold_free(cold_store *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        (void)c->io->close(c->io, c->fd); /* read-only */
    free(c->idx_hash);
    free(c->idx_pos);
    free(c->bloom);
    free(c->buf);
    free(c->scratch);
    free(c->dir);
    free(c->path);
    free(c->tmp);
    free(c);
}

size_t cold_count(const cold_store *c)
{
    return c ? (size_t)c->count : 0;
}

size_t cold_memory(const cold_store *c)
{
    if (!c)
        return 0;
    return c->nidx * 2 * sizeof(uint64_t) + (c->bloom ? (size_t)(c->bloom_mask + 1) / 8 : 0);
}

int cold_find(cold_store *c, uint64_t h, const uint8_t *name, size_t len, uint64_t *offs,
              uint32_t cap, uint32_t *count)
{
    *count = 0;
    if (c->count == 0 || !bloom_maybe(c, h))
        return PB_ENOTFOUND;
    int brc = find_buffers(c);
    if (brc < 0)
        return brc;
    /* The last indexed entry with a smaller hash: a run of equal hashes may
     * start in the block before the one whose first hash equals h. */
    size_t lo = 0, hi = c->nidx;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->idx_hash[mid] < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t b = lo > 0 ? lo - 1 : 0;
    if (c->fd < 0) {
        int fd = c->io->open(c->io, c->path, O_RDONLY, 0);
        if (fd < 0)
            return fd;
        c->fd = fd;
    }
    cold_iter it = {.c = c,
                    .fd = c->fd,
                    .buf = c->buf,
                    .base = c->idx_pos[b],
                    .end = c->entries_end,
                    .offs = c->scratch};
    uint64_t left = c->count - (uint64_t)b * COLD_INDEX_EVERY;
    for (uint64_t i = 0; i < left; i++) {
        cold_entry e;
        size_t esize;
        int rc = rd_entry(&it, c->file_history, &e, &esize);
        if (rc < 0)
            return rc;
        int cmp = cold_entry_cmp(e.hash, e.name, e.name_len, h, name, len);
        if (cmp > 0)
            break;
        if (cmp == 0) {
            uint32_t k = e.count < cap ? e.count : cap;
            memcpy(offs, e.offsets + (e.count - k), k * sizeof *offs);
            *count = k;
            return 0;
        }
    }
    return PB_ENOTFOUND;
}

/* cold_find's descriptor: closed when the file is replaced, and by
 * cold_release (the table closes it after each batch, so an idle partition
 * holds none). */
void cold_release(cold_store *c)
{
    if (c && c->fd >= 0) {
        (void)c->io->close(c->io, c->fd); /* read-only */
        c->fd = -1;
    }
}

int cold_iter_open(cold_store *c, cold_iter **out)
{
    *out = NULL;
    int fd = c->io->open(c->io, c->path, O_RDONLY, 0);
    if (fd < 0)
        return fd;
    int rc = iter_new(c, fd, COLD_HEADER, c->entries_end, c->count, out);
    if (rc < 0)
        (void)c->io->close(c->io, fd);
    return rc;
}

int cold_iter_next(cold_iter *it, cold_entry *e)
{
    if (it->left == 0)
        return 0;
    size_t esize;
    int rc = rd_entry(it, it->c->file_history, e, &esize);
    if (rc < 0)
        return rc;
    it->left--;
    return 1;
}

void cold_iter_close(cold_iter *it)
{
    if (!it)
        return;
    (void)it->c->io->close(it->c->io, it->fd); /* read-only */
    iter_free(it);
}

/* --- writing --- */

typedef struct cold_wr {
    const fileio *io;
    int fd;
    uint64_t pos; /* file position of buf[0] */
    uint8_t buf[WR_CAP];
    size_t used;
    uint32_t crc;
    int err;
} cold_wr;

static void wr_flush(cold_wr *w)
{
    if (w->err == 0 && w->used > 0) {
        struct iovec v = {.iov_base = w->buf, .iov_len = w->used};
        w->err = fileio_write_all(w->io, w->fd, &v, 1, (off_t)w->pos);
    }
    w->pos += w->used;
    w->used = 0;
}

static void wr_put(cold_wr *w, const void *p, size_t n)
{
    const uint8_t *b = p;
    w->crc = crc32c(w->crc, b, n);
    while (n > 0 && w->err == 0) {
        size_t k = WR_CAP - w->used < n ? WR_CAP - w->used : n;
        memcpy(w->buf + w->used, b, k);
        w->used += k;
        b += k;
        n -= k;
        if (w->used == WR_CAP)
            wr_flush(w);
    }
}

static void wr_entry(cold_wr *w, const cold_entry *e, uint32_t history)
{
    uint8_t h[COLD_ENTRY_HDR], o[8];
    uint32_t count = e->count < history ? e->count : history; /* the newest */
    pb_store_le64(h, e->hash);
    pb_store_le32(h + 8, e->name_len);
    pb_store_le32(h + 12, count);
    wr_put(w, h, sizeof h);
    wr_put(w, e->name, e->name_len);
    for (uint32_t k = e->count - count; k < e->count; k++) {
        pb_store_le64(o, e->offsets[k]);
        wr_put(w, o, 8);
    }
}

int cold_merge(cold_store *c, const cold_entry *v, size_t n)
{
    const fileio *io = c->io;
    cold_iter *it = NULL;
    cold_index x;
    memset(&x, 0, sizeof x);
    cold_wr *w = calloc(1, sizeof *w);
    if (!w)
        return PB_ENOMEM;
    w->io = io;
    w->fd = -1;
    int rc = index_init(&x, c->count + n);
    if (rc < 0)
        goto fail;
    if (c->count > 0 && (rc = cold_iter_open(c, &it)) < 0)
        goto fail;
    w->fd = io->open(io, c->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (w->fd < 0) {
        rc = w->fd;
        goto fail;
    }
    uint8_t hdr[COLD_HEADER] = {0};
    memcpy(hdr, COLD_MAGIC, 8);
    pb_store_le32(hdr + 8, COLD_VERSION);
    pb_store_le32(hdr + 12, c->history);
    wr_put(w, hdr, sizeof hdr);
    cold_entry old;
    int have_old = it ? cold_iter_next(it, &old) : 0;
    size_t i = 0;
    uint64_t count = 0;
    while (have_old > 0 || i < n) {
        if (have_old < 0) {
            rc = have_old;
            goto fail;
        }
        const cold_entry *e;
        int cmp = have_old <= 0 ? 1
                  : i == n      ? -1
                           : cold_entry_cmp(old.hash, old.name, old.name_len, v[i].hash, v[i].name,
                                            v[i].name_len);
        if (cmp < 0) {
            e = &old;
        } else {
            e = &v[i++];
        }
        if ((rc = index_add(&x, count, e->hash, w->pos + w->used)) < 0)
            goto fail;
        wr_entry(w, e, c->history);
        count++;
        if (cmp <= 0) /* taken, or replaced by the newer entry */
            have_old = cold_iter_next(it, &old);
    }
    uint8_t trl[8];
    pb_store_le64(trl, count);
    wr_put(w, trl, 8);
    uint8_t crc[4];
    pb_store_le32(crc, w->crc);
    wr_put(w, crc, 4);
    wr_flush(w);
    uint64_t size = w->pos;
    if ((rc = w->err) < 0)
        goto fail;
    /* Durable before the rename makes it the file, or a crash could leave
     * a complete-looking name over missing bytes. */
    if ((rc = io->fdatasync(io, w->fd)) < 0)
        goto fail;
    int fd = w->fd;
    w->fd = -1;
    if ((rc = io->close(io, fd)) < 0)
        goto fail;
    if ((rc = io->rename(io, c->tmp, c->path)) < 0)
        goto fail;
    /* The file is the new one from here on, whatever follows. */
    cold_iter_close(it);
    cold_release(c); /* it read the old file */
    index_take(c, &x);
    c->count = count;
    c->entries_end = size - COLD_TRAILER;
    c->file_history = c->history;
    free(w);
    /* The topics leave memory once this returns 0: their entries must
     * survive a crash from then on. (On failure the caller keeps them in
     * memory too: a topic in both places is read from memory.) */
    return fileio_sync_dir(io, c->dir);
fail:
    cold_iter_close(it);
    if (w->fd >= 0)
        (void)io->close(io, w->fd); /* failing already */
    (void)io->unlink(io, c->tmp);
    index_free(&x);
    free(w);
    return rc;
}
