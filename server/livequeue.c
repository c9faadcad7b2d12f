/*
 * livequeue - bounded FIFO of record copies from partition writers to one
 * subscription thread, in blocks allocated on demand (see livequeue.h for
 * the locking contract and the bounds).
 *
 * Threads: producers are partition writer threads, the consumer is the
 * subscription's pool thread; the caller (sub.c) serialises them with the
 * subscription's mutex, except for livequeue_read on a peeked span. The pool
 * is shared by every queue: its counters are atomics.
 *
 * Layout: head and tail are byte positions (tail - head = bytes in use).
 * Blocks are linked oldest to newest and cover consecutive positions: block
 * b holds [b->base, b->base + b->size). An entry never crosses a block end,
 * so the consumer can hand its bytes to write() in one piece; an entry that
 * would cross it is preceded by padding up to the end (a PAD header, or
 * nothing when fewer than a header's bytes are left) and goes to a new block.
 * Entries are never moved (the consumer reads them without the lock), which
 * is why the queue grows by blocks instead of reallocating a ring.
 */
#include "livequeue.h"

#include "pb_errors.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define PAD_LEN       UINT32_MAX
#define LEN_HAS_CRC   (1u << 31)       /* lq_header.crc is the record's */
#define LEN_RUN       (1u << 30)       /* a run of stored records; lq_header.crc counts them */
#define LEN_MAX       ((1u << 30) - 1) /* entries stay below 1 GiB: the flags fit */
#define SINCE_INITIAL 16u
/* First block after the queue was empty; an empty queue keeps a block no
 * larger than BLOCK_KEEP. With 1,000 subscriptions of a fan-out, 4 KiB
 * first blocks doubling to 8 and 16 KiB, and empty queues keeping up to
 * 16 KiB held 8-15 MB at the peak (the pool's count) for takes of 30-40k
 * events; a take now feeds each ~8 records (~1.4 KB: PARTITION_TAKE_EVENTS),
 * which one 2 KiB block holds. A larger burst costs a malloc or two more
 * (from the arena's free lists: main.c's trim threshold). */
#define BLOCK_MIN     (2u * 1024u)
/* Growth stops doubling here: below main.c's fixed mmap threshold
 * (128 KiB), so blocks come from the allocator's free lists. At 256 KiB
 * each block was mmapped, faulted in page by page on the writer's push
 * and unmapped by the consumer: 40% of a busy primary's page faults in
 * synchronous standby mode (perf record -e page-faults). */
#define BLOCK_MAX  (64u * 1024u)
#define BLOCK_KEEP (2u * 1024u) /* an empty queue keeps a block this small */
#define POOL_MIN   4096u

/* The fixed part of an entry as stored (LIVEQUEUE_ENTRY_OVERHEAD bytes),
 * copied with memcpy so the blocks need no alignment guarantees. */
typedef struct lq_header {
    const void *key;
    uint64_t offset;
    int64_t time_ns;
    uint64_t since;
    uint32_t len; /* | LEN_HAS_CRC or LEN_RUN */
    uint32_t crc; /* a record's CRC (LEN_HAS_CRC), a run's record count (LEN_RUN) */
} lq_header;

_Static_assert(sizeof(lq_header) == LIVEQUEUE_ENTRY_OVERHEAD, "entry header size");
_Static_assert(2 * (LIVEQUEUE_ENTRY_OVERHEAD + LIVEQUEUE_RUN_MAX) == BLOCK_MAX,
               "two largest runs fill a block");

typedef struct lq_block {
    struct lq_block *next; /* newer block; set before tail moves into it */
    uint64_t base;         /* position of data[0] */
    uint64_t size;         /* bytes of data */
    uint8_t data[];
} lq_block;

struct livequeue_pool {
    uint64_t budget;
    _Atomic uint64_t used;
    _Atomic uint64_t resets;
};

struct livequeue {
    uint64_t cap;
    livequeue_pool *pool;
    lq_block *first; /* holds head; NULL when the queue holds no block */
    lq_block *last;  /* holds tail */
    uint64_t head;   /* changed by the consumer (and by a producer when empty) */
    uint64_t tail;   /* changed only by producers */
    uint64_t grow;   /* data size of the next block */
    uint64_t held;   /* bytes of the blocks, as counted in the pool */
    bool overflowed;
    /* partition -> since; open addressing, at most half full */
    const void **keys;
    uint64_t *since;
    size_t nslots, nkeys;
};

static uint64_t round8(uint64_t v)
{
    return (v + 7) & ~(uint64_t)7;
}

/* ------------------------------------------------------------------ */
/* the pool */

int livequeue_pool_create(livequeue_pool **out, uint64_t budget_bytes)
{
    if (budget_bytes < POOL_MIN)
        return PB_EINVAL;
    livequeue_pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return PB_ENOMEM;
    pool->budget = budget_bytes;
    atomic_init(&pool->used, 0);
    atomic_init(&pool->resets, 0);
    *out = pool;
    return 0;
}

void livequeue_pool_destroy(livequeue_pool *pool)
{
    free(pool);
}

uint64_t livequeue_pool_used(const livequeue_pool *pool)
{
    return atomic_load_explicit(&pool->used, memory_order_relaxed);
}

uint64_t livequeue_pool_budget(const livequeue_pool *pool)
{
    return pool->budget;
}

uint64_t livequeue_pool_resets(const livequeue_pool *pool)
{
    return atomic_load(&pool->resets);
}

/* Reserves n bytes of the budget; false if that would exceed it. A CAS loop,
 * so concurrent writers can never push the sum past the budget together. */
static bool pool_take(livequeue_pool *pool, uint64_t n)
{
    if (!pool)
        return true;
    uint64_t cur = atomic_load_explicit(&pool->used, memory_order_relaxed);
    do {
        if (n > pool->budget || cur > pool->budget - n)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(&pool->used, &cur, cur + n,
                                                    memory_order_relaxed, memory_order_relaxed));
    return true;
}

static void pool_give(livequeue_pool *pool, uint64_t n)
{
    if (pool && n)
        atomic_fetch_sub_explicit(&pool->used, n, memory_order_relaxed);
}

/* ------------------------------------------------------------------ */
/* blocks */

static uint64_t block_cost(uint64_t size)
{
    return sizeof(lq_block) + size;
}

/* A block of `size` data bytes starting at position base, counted in the
 * pool; NULL if the budget or the memory says no. */
static lq_block *block_new(livequeue *q, uint64_t size, uint64_t base)
{
    if (!pool_take(q->pool, block_cost(size)))
        return NULL;
    lq_block *b = malloc((size_t)block_cost(size));
    if (!b) {
        pool_give(q->pool, block_cost(size));
        return NULL;
    }
    b->next = NULL;
    b->base = base;
    b->size = size;
    q->held += block_cost(size);
    return b;
}

static void block_free(livequeue *q, lq_block *b)
{
    q->held -= block_cost(b->size);
    pool_give(q->pool, block_cost(b->size));
    free(b);
}

/* Frees every block before `last` (none of them holds an unread entry). */
static void free_older(livequeue *q)
{
    while (q->first && q->first != q->last) {
        lq_block *b = q->first;
        q->first = b->next;
        block_free(q, b);
    }
}

static void free_all(livequeue *q)
{
    free_older(q);
    if (q->last)
        block_free(q, q->last);
    q->first = q->last = NULL;
    q->grow = BLOCK_MIN;
}

/* Appends a block able to hold `need` bytes after the current tail block
 * (or as the only block). Prefers the growth size; falls back to exactly
 * `need` when the budget has no room for more. */
static lq_block *block_append(livequeue *q, uint64_t need, uint64_t base)
{
    uint64_t size = q->grow < q->cap ? q->grow : q->cap;
    if (size < need)
        size = need;
    lq_block *b = block_new(q, size, base);
    if (!b && size > need)
        b = block_new(q, need, base);
    if (!b)
        return NULL;
    if (q->grow < BLOCK_MAX)
        q->grow *= 2;
    if (q->last)
        q->last->next = b;
    else
        q->first = b;
    q->last = b;
    return b;
}

/* ------------------------------------------------------------------ */
/* the queue */

int livequeue_create(livequeue **out, uint64_t capacity, livequeue_pool *pool)
{
    capacity &= ~(uint64_t)7;
    if (capacity < 64 || capacity > SIZE_MAX / 2)
        return PB_EINVAL;
    livequeue *q = calloc(1, sizeof *q);
    if (!q)
        return PB_ENOMEM;
    q->cap = capacity;
    q->pool = pool;
    q->grow = BLOCK_MIN;
    q->nslots = SINCE_INITIAL;
    q->keys = calloc(q->nslots, sizeof *q->keys);
    q->since = calloc(q->nslots, sizeof *q->since);
    if (!q->keys || !q->since) {
        livequeue_destroy(q);
        return PB_ENOMEM;
    }
    *out = q;
    return 0;
}

void livequeue_destroy(livequeue *q)
{
    if (!q)
        return;
    free_all(q);
    free(q->keys);
    free(q->since);
    free(q);
}

static size_t slot_of(const void *key, size_t nslots)
{
    uint64_t h = (uint64_t)(uintptr_t)key * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & (nslots - 1);
}

/* Finds key's slot, or the empty slot where it would go. */
static size_t since_find(const livequeue *q, const void *key)
{
    size_t i = slot_of(key, q->nslots);
    while (q->keys[i] && q->keys[i] != key)
        i = (i + 1) & (q->nslots - 1);
    return i;
}

static int since_grow(livequeue *q)
{
    size_t n = q->nslots * 2;
    const void **keys = calloc(n, sizeof *keys);
    uint64_t *since = calloc(n, sizeof *since);
    if (!keys || !since) {
        free(keys);
        free(since);
        return PB_ENOMEM;
    }
    for (size_t i = 0; i < q->nslots; i++) {
        if (!q->keys[i])
            continue;
        size_t j = slot_of(q->keys[i], n);
        while (keys[j])
            j = (j + 1) & (n - 1);
        keys[j] = q->keys[i];
        since[j] = q->since[i];
    }
    free(q->keys);
    free(q->since);
    q->keys = keys;
    q->since = since;
    q->nslots = n;
    return 0;
}

int livequeue_since(livequeue *q, const void *key, uint64_t first_offset, uint64_t *since)
{
    size_t i = since_find(q, key);
    if (!q->keys[i]) {
        /* Allocates only when a partition is seen for the first time since
         * the last reset, never per record. */
        if ((q->nkeys + 1) * 2 > q->nslots) {
            if (since_grow(q) < 0) {
                q->overflowed = true;
                return PB_ENOMEM;
            }
            i = since_find(q, key);
        }
        q->keys[i] = key;
        q->since[i] = first_offset;
        q->nkeys++;
    }
    *since = q->since[i];
    return 0;
}

/* Room for an entry of `total` bytes after its header at the tail (a new
 * block, or the front of an emptied one, as needed): where its header goes,
 * or NULL (the queue is then overflowed). The tail does not move. */
static uint8_t *place(livequeue *q, uint64_t total)
{
    if (q->overflowed)
        return NULL;
    uint64_t need = LIVEQUEUE_ENTRY_OVERHEAD + round8(total);
    if (total >= LEN_MAX || need > q->cap)
        goto full;
    if (q->head == q->tail && q->last) {
        /* Empty: no span reads the block, so start it over from its front,
         * or drop it if this entry would not fit in it. */
        free_older(q);
        q->head = q->tail = q->last->base;
        if (q->last->size < need)
            free_all(q);
    }
    uint64_t pad = 0;
    if (!q->last || q->last->size - (q->tail - q->last->base) < need) {
        if (q->last)
            pad = q->last->size - (q->tail - q->last->base);
        if (q->tail - q->head + pad + need > q->cap)
            goto full;
        lq_block *old = q->last;
        if (!block_append(q, need, q->tail + pad))
            goto full;
        if (old && pad >= LIVEQUEUE_ENTRY_OVERHEAD) {
            lq_header ph = {.len = PAD_LEN};
            memcpy(old->data + (old->size - pad), &ph, sizeof ph);
        }
        q->tail += pad;
    } else if (q->tail - q->head + need > q->cap) {
        goto full;
    }
    return q->last->data + (q->tail - q->last->base);

full:
    q->overflowed = true;
    return NULL;
}

int livequeue_push(livequeue *q, const lq_entry *e, const void *data, uint32_t len,
                   const void *suffix, uint32_t suffix_len)
{
    uint64_t total = (uint64_t)len + suffix_len;
    uint8_t *at = place(q, total);
    if (!at)
        return PB_ETOOBIG;
    lq_header h = {.key = e->key,
                   .offset = e->offset,
                   .time_ns = e->time_ns,
                   .since = e->since,
                   .len = (uint32_t)total | (e->has_crc ? LEN_HAS_CRC : 0),
                   .crc = e->crc};
    memcpy(at, &h, sizeof h);
    if (len)
        memcpy(at + sizeof h, data, len);
    if (suffix_len)
        memcpy(at + sizeof h + len, suffix, suffix_len);
    q->tail += LIVEQUEUE_ENTRY_OVERHEAD + round8(total);
    return 0;
}

uint8_t *livequeue_run_begin(livequeue *q, uint32_t len)
{
    uint8_t *at = place(q, len);
    return at ? at + LIVEQUEUE_ENTRY_OVERHEAD : NULL;
}

uint32_t livequeue_run_max(const livequeue *q)
{
    uint64_t quarter = (q->cap / 4) & ~(uint64_t)7;
    return quarter < LIVEQUEUE_RUN_MAX ? (uint32_t)quarter : LIVEQUEUE_RUN_MAX;
}

void livequeue_run_end(livequeue *q, const lq_entry *e, uint32_t len, uint32_t count)
{
    uint8_t *at = q->last->data + (q->tail - q->last->base);
    lq_header h = {.key = e->key,
                   .offset = e->offset,
                   .time_ns = e->time_ns,
                   .since = e->since,
                   .len = len | LEN_RUN,
                   .crc = count};
    memcpy(at, &h, sizeof h);
    q->tail += LIVEQUEUE_ENTRY_OVERHEAD + round8(len);
}

void livequeue_overflow(livequeue *q)
{
    q->overflowed = true;
}

bool livequeue_overflowed(const livequeue *q)
{
    return q->overflowed;
}

bool livequeue_empty(const livequeue *q)
{
    return q->head == q->tail;
}

uint64_t livequeue_used(const livequeue *q)
{
    return q->tail - q->head;
}

uint64_t livequeue_capacity(const livequeue *q)
{
    return q->cap;
}

uint64_t livequeue_allocated(const livequeue *q)
{
    return q->held;
}

void livequeue_peek(const livequeue *q, lq_span *span)
{
    span->start = span->pos = q->head;
    span->end = q->tail;
    span->blk = q->first;
}

int livequeue_read(const livequeue *q, lq_span *span, lq_entry *e)
{
    for (;;) {
        if (span->pos >= span->end)
            return PB_EEOF;
        const lq_block *b = span->blk;
        uint64_t to_end = b->base + b->size - span->pos;
        if (to_end == 0) {
            /* pos < end: the producer linked the next block before it moved
             * the tail into it, and that happened before the peek. */
            span->blk = b->next;
            continue;
        }
        const uint8_t *at = b->data + (span->pos - b->base);
        if (to_end < LIVEQUEUE_ENTRY_OVERHEAD) {
            span->pos += to_end; /* padding too short for a header */
            continue;
        }
        lq_header h;
        memcpy(&h, at, sizeof h);
        if (h.len == PAD_LEN) {
            span->pos += to_end;
            continue;
        }
        e->key = h.key;
        e->offset = h.offset;
        e->time_ns = h.time_ns;
        e->since = h.since;
        e->len = h.len & LEN_MAX;
        e->has_crc = (h.len & LEN_HAS_CRC) != 0;
        e->run = (h.len & LEN_RUN) != 0;
        e->crc = e->run ? 0 : h.crc;
        e->count = e->run ? h.crc : 1;
        e->data = at + sizeof h;
        span->pos += LIVEQUEUE_ENTRY_OVERHEAD + round8(e->len);
        return 0;
    }
}

void livequeue_consume(livequeue *q, const lq_span *span)
{
    /* A span peeked while the queue was empty reads nothing and may predate
     * a producer's restart of the block: it must not move head. A non-empty
     * span starts at head (only the consumer moves a non-empty queue's
     * head). */
    if (span->pos != span->start)
        q->head = span->pos;
    /* Blocks wholly before head are done with. A block that ends exactly at
     * head stays until the next consume: the span may still point at it. */
    while (q->first && q->first != q->last && q->first->base + q->first->size < q->head) {
        lq_block *b = q->first;
        q->first = b->next;
        block_free(q, b);
    }
    if (q->head == q->tail && q->last) {
        /* Empty (so the span is exhausted): give back all but one small
         * block, which the next pushes reuse without allocating. */
        free_older(q);
        if (q->last->size > BLOCK_KEEP)
            free_all(q);
    }
}

void livequeue_reset(livequeue *q)
{
    free_all(q);
    q->head = q->tail = 0;
    q->overflowed = false;
    memset(q->keys, 0, q->nslots * sizeof *q->keys);
    q->nkeys = 0;
    if (q->pool)
        atomic_fetch_add(&q->pool->resets, 1);
}
