/*
 * livequeue - bounded ring of record copies from partition writers to one
 * subscription thread (see livequeue.h for the locking contract).
 *
 * Threads: producers are partition writer threads, the consumer is the
 * subscription's pool thread; the caller (sub.c) serialises them with the
 * subscription's mutex, except for livequeue_read on a peeked span.
 *
 * Layout: head and tail are byte counters (tail - head = bytes in use); an
 * entry lives at counter % capacity and never wraps, so the consumer can hand
 * its bytes to write() in one piece. An entry that would cross the end of the
 * ring is preceded by padding up to the end (a PAD header, or nothing when
 * fewer than a header's bytes are left).
 */
#include "livequeue.h"

#include "pb_errors.h"

#include <stdlib.h>
#include <string.h>

#define PAD_LEN       UINT32_MAX
#define SINCE_INITIAL 16u

/* The fixed part of an entry as stored in the ring (LIVEQUEUE_ENTRY_OVERHEAD
 * bytes), copied with memcpy so the ring needs no alignment guarantees. */
typedef struct lq_header {
    const void *key;
    uint64_t offset;
    int64_t time_ns;
    uint64_t since;
    uint32_t len;
    uint32_t reserved;
} lq_header;

_Static_assert(sizeof(lq_header) == LIVEQUEUE_ENTRY_OVERHEAD, "entry header size");

struct livequeue {
    uint8_t *ring;
    uint64_t cap;
    uint64_t head; /* changed only by the consumer (and by a producer when empty) */
    uint64_t tail; /* changed only by producers */
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

int livequeue_create(livequeue **out, uint64_t capacity)
{
    capacity &= ~(uint64_t)7;
    if (capacity < 64 || capacity > SIZE_MAX / 2)
        return PB_EINVAL;
    livequeue *q = calloc(1, sizeof *q);
    if (!q)
        return PB_ENOMEM;
    q->cap = capacity;
    q->ring = malloc((size_t)capacity);
    q->nslots = SINCE_INITIAL;
    q->keys = calloc(q->nslots, sizeof *q->keys);
    q->since = calloc(q->nslots, sizeof *q->since);
    if (!q->ring || !q->keys || !q->since) {
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
    free(q->ring);
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

int livequeue_push(livequeue *q, const lq_entry *e, const void *data, uint32_t len,
                   const void *suffix, uint32_t suffix_len)
{
    if (q->overflowed)
        return PB_ETOOBIG;
    uint64_t total = (uint64_t)len + suffix_len;
    uint64_t need = LIVEQUEUE_ENTRY_OVERHEAD + round8(total);
    if (total >= PAD_LEN || need > q->cap)
        goto full;
    if (q->head == q->tail)
        q->head = q->tail = 0; /* empty: start at the front, no padding needed */
    uint64_t at = q->tail % q->cap;
    uint64_t pad = q->cap - at < need ? q->cap - at : 0;
    if (q->tail - q->head + pad + need > q->cap)
        goto full;
    if (pad >= LIVEQUEUE_ENTRY_OVERHEAD) {
        lq_header ph = {.len = PAD_LEN};
        memcpy(q->ring + at, &ph, sizeof ph);
    }
    q->tail += pad;
    at = q->tail % q->cap;

    lq_header h = {.key = e->key,
                   .offset = e->offset,
                   .time_ns = e->time_ns,
                   .since = e->since,
                   .len = (uint32_t)total};
    memcpy(q->ring + at, &h, sizeof h);
    if (len)
        memcpy(q->ring + at + sizeof h, data, len);
    if (suffix_len)
        memcpy(q->ring + at + sizeof h + len, suffix, suffix_len);
    q->tail += need;
    return 0;

full:
    q->overflowed = true;
    return PB_ETOOBIG;
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

void livequeue_peek(const livequeue *q, lq_span *span)
{
    span->start = span->pos = q->head;
    span->end = q->tail;
}

int livequeue_read(const livequeue *q, lq_span *span, lq_entry *e)
{
    for (;;) {
        if (span->pos >= span->end)
            return PB_EEOF;
        uint64_t at = span->pos % q->cap;
        uint64_t to_end = q->cap - at;
        if (to_end < LIVEQUEUE_ENTRY_OVERHEAD) {
            span->pos += to_end; /* padding too short for a header */
            continue;
        }
        lq_header h;
        memcpy(&h, q->ring + at, sizeof h);
        if (h.len == PAD_LEN) {
            span->pos += to_end;
            continue;
        }
        e->key = h.key;
        e->offset = h.offset;
        e->time_ns = h.time_ns;
        e->since = h.since;
        e->len = h.len;
        e->data = q->ring + at + sizeof h;
        span->pos += LIVEQUEUE_ENTRY_OVERHEAD + round8(h.len);
        return 0;
    }
}

void livequeue_consume(livequeue *q, const lq_span *span)
{
    /* A span peeked while the queue was empty reads nothing and may predate
     * a producer's rebase to 0: it must not move head. A non-empty span
     * starts at head (only the consumer moves a non-empty queue's head). */
    if (span->pos != span->start)
        q->head = span->pos;
}

void livequeue_reset(livequeue *q)
{
    q->head = q->tail = 0;
    q->overflowed = false;
    memset(q->keys, 0, q->nslots * sizeof *q->keys);
    q->nkeys = 0;
}
