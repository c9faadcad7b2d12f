/*
 * zseg - compressed segment files: encoders for the writer, and the read
 * view that serves a compressed file's plain bytes (see zseg.h).
 *
 * Threads: any; a zseg_view belongs to one thread at a time.
 */
#include "zseg.h"

#include "crc32c.h"
#include "grow.h"
#include "pb_errors.h"
#include "record.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

/* Blocks after the one last served (ZSEG_AHEAD of them: the executor's
 * thread may be slow to wake, two give it more time), each decompressed by
 * the executor's thread (segment_ahead) into buffers of its own: while it
 * runs, it touches nothing of the view's, and the reader's thread touches
 * nothing of its own until finish() returned. */
#define ZSEG_AHEAD 2
typedef struct zahead {
    segment_task task; /* first member: the task is the struct */
    zseg_entry e;      /* the block */
    segment_pread_fn fn;
    void *ctx;
    int fd;
    uint32_t block; /* UINT32_MAX: none started */
    bool local;     /* taken back (steal) and run by the reader: done */
    int rc;         /* 0: raw holds the block, checked; else redone inline */
    uint8_t *raw;
    size_t raw_cap;
    uint8_t *comp;
    size_t comp_cap;
    ZSTD_DCtx *dctx;
} zahead;

struct zseg_view {
    uint8_t head[PB_FILE_HEADER_SIZE]; /* plain bytes 0..39 */
    uint64_t logical_size;
    zseg_entry *blocks;
    uint32_t nblocks;
    bool damaged;    /* header or index failed its checks */
    uint32_t cached; /* block in raw, or UINT32_MAX */
    uint8_t *raw;    /* one decompressed block */
    size_t raw_cap;
    uint8_t *comp; /* its compressed bytes */
    size_t comp_cap;
    ZSTD_DCtx *dctx;
    zseg_entry bad; /* the last block that failed */
    char why[96];
    const segment_ahead *ahead; /* NULL: every block inline */
    zahead ah[ZSEG_AHEAD];      /* the next blocks, in the executor's hands */
};

static void ahead_drop(zseg_view *v);

void zseg_entry_encode(uint8_t out[ZSEG_ENTRY_SIZE], const zseg_entry *e)
{
    pb_store_le64(out, e->logical);
    pb_store_le64(out + 8, e->file_pos);
    pb_store_le64(out + 16, e->first_offset);
    pb_store_le64(out + 24, e->last_offset);
    pb_store_le32(out + 32, e->comp_len);
    pb_store_le32(out + 36, e->raw_len);
    pb_store_le32(out + 40, e->crc);
    pb_store_le32(out + 44, 0);
}

void zseg_entry_decode(const uint8_t in[ZSEG_ENTRY_SIZE], zseg_entry *e)
{
    e->logical = pb_load_le64(in);
    e->file_pos = pb_load_le64(in + 8);
    e->first_offset = pb_load_le64(in + 16);
    e->last_offset = pb_load_le64(in + 24);
    e->comp_len = pb_load_le32(in + 32);
    e->raw_len = pb_load_le32(in + 36);
    e->crc = pb_load_le32(in + 40);
}

void zseg_header_encode(uint8_t out[32], uint64_t logical_size, uint64_t index_pos,
                        uint32_t nblocks)
{
    memcpy(out, ZSEG_MAGIC, 8);
    pb_store_le64(out + 8, logical_size);
    pb_store_le64(out + 16, index_pos);
    pb_store_le32(out + 24, nblocks);
    pb_store_le32(out + 28, crc32c(0, out, 28));
}

static bool has_magic(const uint8_t *hdr, size_t len)
{
    return len >= ZSEG_HEADER_END && memcmp(hdr + PB_FILE_HEADER_SIZE, ZSEG_MAGIC, 8) == 0;
}

bool zseg_is_compressed(const uint8_t *hdr, size_t len)
{
    const uint8_t *z = hdr + PB_FILE_HEADER_SIZE;
    return has_magic(hdr, len) && pb_load_le32(z + 28) == crc32c(0, z, 28);
}

static void whole_file_bad(zseg_view *v, const char *why)
{
    v->damaged = true;
    v->bad = (zseg_entry){
        .logical = PB_FILE_HEADER_SIZE, .raw_len = 0, .first_offset = 0, .last_offset = UINT64_MAX};
    snprintf(v->why, sizeof v->why, "%s", why);
}

/* Loads and checks the block index; damage marks the whole view bad. */
static int load_index(zseg_view *v, segment_pread_fn fn, void *ctx, int fd, uint64_t pos)
{
    if (v->nblocks > ZSEG_MAX_BLOCKS) {
        whole_file_bad(v, "compressed segment: block count out of range");
        return 0;
    }
    size_t n = (size_t)v->nblocks * ZSEG_ENTRY_SIZE + 4;
    uint8_t *raw = malloc(n);
    v->blocks = calloc(v->nblocks ? v->nblocks : 1, sizeof *v->blocks);
    if (!raw || !v->blocks) {
        free(raw);
        return PB_ENOMEM;
    }
    ssize_t r = segment_pread_full(fn, ctx, fd, raw, n, (off_t)pos);
    if (r < 0) {
        free(raw);
        return (int)r;
    }
    uint64_t expect = PB_FILE_HEADER_SIZE;
    bool ok = (size_t)r == n && pb_load_le32(raw + n - 4) == crc32c(0, raw, n - 4);
    for (uint32_t i = 0; ok && i < v->nblocks; i++) {
        zseg_entry *e = &v->blocks[i];
        zseg_entry_decode(raw + (size_t)i * ZSEG_ENTRY_SIZE, e);
        /* Every block holds at least one record, offsets rising from block
         * to block: a damaged block's entry names what is lost, so offsets
         * that do not rise (an index whose CRC matches by chance, or a
         * forged one) are index damage, not offsets to report. */
        ok = e->logical == expect && e->raw_len > 0 &&
             e->raw_len <= PB_RECORD_MAX_EVENT + PB_RECORD_HEADER_SIZE + ZSEG_BLOCK_TARGET &&
             e->comp_len <= ZSTD_compressBound(e->raw_len) && e->file_pos >= ZSEG_HEADER_END &&
             e->file_pos + e->comp_len <= pos && e->first_offset <= e->last_offset &&
             e->last_offset != UINT64_MAX &&
             (i == 0 || e->first_offset > v->blocks[i - 1].last_offset);
        expect += e->raw_len;
    }
    free(raw);
    if (!ok || expect != v->logical_size)
        whole_file_bad(v, "compressed segment: block index failed its checks");
    return 0;
}

int zseg_view_open(zseg_view **out, segment_pread_fn fn, void *ctx, int fd)
{
    uint8_t hdr[ZSEG_HEADER_END];
    *out = NULL;
    ssize_t r = segment_pread_full(fn, ctx, fd, hdr, sizeof hdr, 0);
    if (r < 0)
        return (int)r;
    if (!has_magic(hdr, (size_t)r))
        return 0;
    zseg_view *v = calloc(1, sizeof *v);
    if (!v)
        return PB_ENOMEM;
    memcpy(v->head, hdr, PB_FILE_HEADER_SIZE);
    v->cached = UINT32_MAX;
    for (int k = 0; k < ZSEG_AHEAD; k++)
        v->ah[k].block = UINT32_MAX;
    *out = v;
    if (!zseg_is_compressed(hdr, sizeof hdr)) {
        whole_file_bad(v, "compressed segment: header failed its CRC");
        return ZSEG_EBADBLOCK;
    }
    const uint8_t *z = hdr + PB_FILE_HEADER_SIZE;
    v->logical_size = pb_load_le64(z + 8);
    v->nblocks = pb_load_le32(z + 24);
    int rc = load_index(v, fn, ctx, fd, pb_load_le64(z + 16));
    if (rc < 0) {
        zseg_view_free(v);
        *out = NULL;
        return rc;
    }
    return v->damaged ? ZSEG_EBADBLOCK : 0;
}

void zseg_view_free(zseg_view *v)
{
    if (!v)
        return;
    ahead_drop(v); /* they may still read the file and write their buffers */
    for (int k = 0; k < ZSEG_AHEAD; k++) {
        free(v->ah[k].raw);
        free(v->ah[k].comp);
        ZSTD_freeDCtx(v->ah[k].dctx);
    }
    free(v->blocks);
    free(v->raw);
    free(v->comp);
    ZSTD_freeDCtx(v->dctx);
    free(v);
}

uint64_t zseg_view_logical_size(const zseg_view *v)
{
    return v->logical_size;
}

const char *zseg_view_bad(const zseg_view *v, zseg_entry *e)
{
    *e = v->bad;
    return v->why;
}

void zseg_view_invalidate(zseg_view *v)
{
    v->cached = UINT32_MAX;
    ahead_drop(v);
}

void zseg_view_set_ahead(zseg_view *v, const segment_ahead *ahead)
{
    v->ahead = ahead;
}

static uint32_t find_block(const zseg_view *v, uint64_t off)
{
    uint32_t lo = 0, hi = v->nblocks; /* last block with logical <= off */
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (v->blocks[mid].logical <= off)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

static int mark_bad(zseg_view *v, uint32_t i, const char *why)
{
    v->bad = v->blocks[i];
    snprintf(v->why, sizeof v->why, "compressed block %u %s", i, why);
    return ZSEG_EBADBLOCK;
}

enum { UNPACK_CUT = 1, UNPACK_CRC, UNPACK_ZSTD };

/* Reads block e's compressed bytes into *comp (grown as needed), checks
 * them and decompresses them into dst (e->raw_len bytes). 0; a negated
 * errno or PB_ENOMEM; or UNPACK_CUT / UNPACK_CRC / UNPACK_ZSTD for a
 * damaged block. Touches only what it is given: the executor's thread runs
 * it for the block ahead. */
static int unpack(segment_pread_fn fn, void *ctx, int fd, const zseg_entry *e, uint8_t **comp,
                  size_t *comp_cap, uint8_t *dst, ZSTD_DCtx **dctx)
{
    if (e->comp_len > *comp_cap) {
        if (grow_resize(comp, e->comp_len, 1) < 0)
            return PB_ENOMEM;
        *comp_cap = e->comp_len;
    }
    if (!*dctx && !(*dctx = ZSTD_createDCtx()))
        return PB_ENOMEM;
    ssize_t r = segment_pread_full(fn, ctx, fd, *comp, e->comp_len, (off_t)e->file_pos);
    if (r < 0)
        return (int)r;
    if ((size_t)r < e->comp_len)
        return UNPACK_CUT;
    if (crc32c(0, *comp, e->comp_len) != e->crc)
        return UNPACK_CRC;
    size_t got = ZSTD_decompressDCtx(*dctx, dst, e->raw_len, *comp, e->comp_len);
    if (ZSTD_isError(got) || got != e->raw_len)
        return UNPACK_ZSTD;
    return 0;
}

static void ahead_run(segment_task *t)
{
    zahead *a = (zahead *)t;
    a->rc = unpack(a->fn, a->ctx, a->fd, &a->e, &a->comp, &a->comp_cap, a->raw, &a->dctx);
}

/* Waits for (or takes back) the block in a's hands; true if it is ready. */
static bool ahead_finish(zseg_view *v, zahead *a)
{
    bool ran = a->local || v->ahead->finish(v->ahead->ctx, &a->task);
    a->block = UINT32_MAX;
    a->local = false;
    return ran && a->rc == 0;
}

/* Block want is in the executor's hands: while the executor runs it, the
 * reader decompresses the later blocks it has not begun (the furthest
 * first: the executor reaches the nearer ones sooner) instead of waiting. */
static void ahead_steal(zseg_view *v, zahead *want)
{
    if (!v->ahead->steal || want->local)
        return;
    for (;;) {
        zahead *pick = NULL;
        for (int k = 0; k < ZSEG_AHEAD; k++) {
            zahead *a = &v->ah[k];
            if (a != want && a->block != UINT32_MAX && !a->local && a->block > want->block &&
                a->block - want->block <= ZSEG_AHEAD && (!pick || a->block > pick->block))
                pick = a;
        }
        if (!pick || !v->ahead->steal(v->ahead->ctx, &want->task, &pick->task))
            return;
        pick->task.fn(&pick->task);
        pick->local = true;
    }
}

/* The slot holding block i, taken back; NULL if none holds it ready. Slots
 * holding blocks outside i+1..i+ZSEG_AHEAD (a seek went elsewhere) are
 * taken back too. */
static zahead *ahead_take(zseg_view *v, uint32_t i)
{
    zahead *found = NULL;
    for (int k = 0; k < ZSEG_AHEAD; k++) {
        zahead *a = &v->ah[k];
        if (a->block == UINT32_MAX)
            continue;
        if (a->block == i) {
            ahead_steal(v, a);
            found = ahead_finish(v, a) ? a : NULL;
        } else if (a->block < i || a->block - i > ZSEG_AHEAD) {
            (void)ahead_finish(v, a);
        }
    }
    return found;
}

static void ahead_drop(zseg_view *v)
{
    for (int k = 0; k < ZSEG_AHEAD; k++)
        if (v->ah[k].block != UINT32_MAX)
            (void)ahead_finish(v, &v->ah[k]);
}

/* Hands block i to the executor in slot a. Nothing is lost if it cannot:
 * block i is then decompressed inline when it is read. */
static void ahead_start_one(zseg_view *v, zahead *a, uint32_t i, segment_pread_fn fn, void *ctx,
                            int fd)
{
    const zseg_entry *e = &v->blocks[i];
    if (e->raw_len > a->raw_cap) {
        if (grow_resize(&a->raw, e->raw_len, 1) < 0)
            return;
        a->raw_cap = e->raw_len;
    }
    a->task.fn = ahead_run;
    a->e = *e;
    a->fn = fn;
    a->ctx = ctx;
    a->fd = fd;
    a->rc = 0;
    a->block = i;
    a->local = false;
    if (!v->ahead->start(v->ahead->ctx, &a->task))
        a->block = UINT32_MAX;
}

/* After block i was served: blocks i+1..i+ZSEG_AHEAD that no slot holds
 * go to free slots (if there is an executor). */
static void ahead_start(zseg_view *v, uint32_t i, segment_pread_fn fn, void *ctx, int fd)
{
    if (!v->ahead)
        return;
    for (uint32_t b = i + 1; b <= i + ZSEG_AHEAD && b < v->nblocks; b++) {
        zahead *free_slot = NULL;
        bool held = false;
        for (int k = 0; k < ZSEG_AHEAD; k++) {
            held |= v->ah[k].block == b;
            if (v->ah[k].block == UINT32_MAX && !free_slot)
                free_slot = &v->ah[k];
        }
        if (!held && free_slot)
            ahead_start_one(v, free_slot, b, fn, ctx, fd);
    }
}

/* Makes block i the view's decompressed block (v->raw): the block
 * decompressed ahead when that is block i (its buffer swapped in, no
 * copy), else decompressed here; then hands blocks i+1..i+ZSEG_AHEAD to
 * the executor. */
static int load_block(zseg_view *v, segment_pread_fn fn, void *ctx, int fd, uint32_t i)
{
    const zseg_entry *e = &v->blocks[i];
    v->cached = UINT32_MAX;
    zahead *a = v->ahead ? ahead_take(v, i) : NULL;
    if (a) {
        uint8_t *t = v->raw;
        size_t c = v->raw_cap;
        v->raw = a->raw;
        v->raw_cap = a->raw_cap;
        a->raw = t;
        a->raw_cap = c;
        v->cached = i;
        ahead_start(v, i, fn, ctx, fd);
        return 0;
    }
    if (e->raw_len > v->raw_cap) {
        if (grow_resize(&v->raw, e->raw_len, 1) < 0)
            return PB_ENOMEM;
        v->raw_cap = e->raw_len;
    }
    int rc = unpack(fn, ctx, fd, e, &v->comp, &v->comp_cap, v->raw, &v->dctx);
    if (rc < 0)
        return rc;
    if (rc > 0)
        return mark_bad(v, i,
                        rc == UNPACK_CUT   ? "is cut short"
                        : rc == UNPACK_CRC ? "failed its CRC32C"
                                           : "does not decompress");
    v->cached = i;
    ahead_start(v, i, fn, ctx, fd);
    return 0;
}

/* The block holding plain byte off (>= PB_FILE_HEADER_SIZE, < the logical
 * size): the decompressed one when it holds it (no search). */
static uint32_t block_of(const zseg_view *v, uint64_t off)
{
    if (v->cached != UINT32_MAX) {
        const zseg_entry *c = &v->blocks[v->cached];
        if (off >= c->logical && off - c->logical < c->raw_len)
            return v->cached;
    }
    return find_block(v, off);
}

ssize_t zseg_view_read(zseg_view *v, segment_pread_fn fn, void *ctx, int fd, void *buf, size_t len,
                       uint64_t off)
{
    if (v->damaged)
        return ZSEG_EBADBLOCK;
    size_t done = 0;
    while (done < len && off < v->logical_size) {
        size_t n;
        if (off < PB_FILE_HEADER_SIZE) {
            n = PB_FILE_HEADER_SIZE - (size_t)off;
            if (n > len - done)
                n = len - done;
            memcpy((uint8_t *)buf + done, v->head + off, n);
        } else {
            uint32_t i = block_of(v, off);
            const zseg_entry *e = &v->blocks[i];
            if (v->cached != i) {
                int rc = load_block(v, fn, ctx, fd, i);
                if (rc < 0)
                    return done > 0 ? (ssize_t)done : rc;
            }
            size_t at = (size_t)(off - e->logical);
            n = e->raw_len - at;
            if (n > len - done)
                n = len - done;
            memcpy((uint8_t *)buf + done, v->raw + at, n);
        }
        done += n;
        off += n;
    }
    return (ssize_t)done;
}

int zseg_view_peek(zseg_view *v, segment_pread_fn fn, void *ctx, int fd, uint64_t off, size_t n,
                   const uint8_t **p, size_t *avail)
{
    if (v->damaged || off < PB_FILE_HEADER_SIZE || off >= v->logical_size || v->nblocks == 0)
        return 0;
    uint32_t i = block_of(v, off);
    const zseg_entry *e = &v->blocks[i];
    uint64_t end = e->logical + e->raw_len;
    if (off < e->logical || off >= end || n > end - off)
        return 0; /* spans blocks (damage, or a caller's guess): the copying read */
    if (v->cached != i) {
        int rc = load_block(v, fn, ctx, fd, i);
        if (rc < 0)
            return rc;
    }
    *p = v->raw + (off - e->logical);
    *avail = (size_t)(end - off);
    return 1;
}

int zseg_compress_block(void **cctx, const void *raw, size_t len, int level, uint8_t **dst,
                        size_t *cap, size_t *out_len)
{
    size_t bound = ZSTD_compressBound(len);
    if (bound > *cap) {
        if (grow_resize(dst, bound, 1) < 0)
            return PB_ENOMEM;
        *cap = bound;
    }
    if (!*cctx && !(*cctx = ZSTD_createCCtx()))
        return PB_ENOMEM;
    size_t n = ZSTD_compressCCtx(*cctx, *dst, *cap, raw, len, level);
    if (ZSTD_isError(n))
        return PB_EINVAL;
    *out_len = n;
    return 0;
}

void zseg_cctx_free(void *cctx)
{
    ZSTD_freeCCtx(cctx);
}

int zseg_logical_size(segment_pread_fn fn, void *ctx, int fd, uint64_t size, uint64_t *out)
{
    uint8_t hdr[ZSEG_HEADER_END];
    *out = size;
    ssize_t r = segment_pread_full(fn, ctx, fd, hdr, sizeof hdr, 0);
    if (r < 0)
        return (int)r;
    if (zseg_is_compressed(hdr, (size_t)r))
        *out = pb_load_le64(hdr + PB_FILE_HEADER_SIZE + 8);
    return 0;
}
