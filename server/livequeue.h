/*
 * livequeue - the bounded live queue of one subscription: copies of durable
 * records (partition, offset, receive time, stored bytes) that partition
 * writers hand to the subscription thread, plus, per partition, the offset
 * from which the queue has seen every record the writer published ("since").
 *
 * Data flow: writer threads push (sub_registry_publish); the subscription
 * thread peeks a span of entries, reads them in place, then consumes them.
 *
 * Threads and locking: the queue has no lock of its own. The owner (the
 * subscription, sub.c) serialises every call with its mutex, except
 * livequeue_read(), which the consumer calls WITHOUT the lock on a span it
 * got from livequeue_peek(): producers only write into free space and only
 * the consumer frees space (livequeue_consume/livequeue_reset), so the
 * entries of a peeked span stay untouched until the consumer consumes them.
 *
 * Memory: one ring of `capacity` bytes allocated at creation (each entry
 * takes LIVEQUEUE_ENTRY_OVERHEAD bytes + its bytes rounded up to 8), plus a
 * small table of 16 bytes per partition seen. A full queue refuses the push
 * and stays "overflowed" (refusing everything) until livequeue_reset: the
 * subscription then reads the files instead, so nothing is dropped silently.
 */
#ifndef PB_LIVEQUEUE_H
#define PB_LIVEQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LIVEQUEUE_ENTRY_OVERHEAD 40u

typedef struct livequeue livequeue;

/* One queued record. For a push, data is ignored (the bytes are passed
 * separately); from livequeue_read, data points into the ring. */
typedef struct lq_entry {
    const void *key; /* the partition the record belongs to */
    uint64_t offset;
    int64_t time_ns;
    /* Every record of this partition with offset >= since that the writer
     * published reached this queue (or overflowed it) in offset order. */
    uint64_t since;
    const uint8_t *data;
    uint32_t len;
} lq_entry;

/* A range of entries taken by livequeue_peek, read with livequeue_read. */
typedef struct lq_span {
    uint64_t start; /* head when peeked */
    uint64_t pos;   /* next entry to read */
    uint64_t end;   /* tail when peeked */
} lq_span;

/* capacity: the bound in bytes (rounded down to a multiple of 8; at least
 * 64). Returns 0, PB_EINVAL or PB_ENOMEM. */
int livequeue_create(livequeue **out, uint64_t capacity);

/* NULL-safe. */
void livequeue_destroy(livequeue *q);

/*
 * Producer. Called once per published batch of partition `key` whose first
 * offset is first_offset, before pushing that batch's records: returns in
 * *since the offset from which the queue has seen every batch of key (the
 * first_offset of the first batch since creation or the last reset).
 * PB_ENOMEM if the per-partition table cannot grow: the queue is then marked
 * overflowed (the subscriber recovers from the files).
 */
int livequeue_since(livequeue *q, const void *key, uint64_t first_offset, uint64_t *since);

/*
 * Producer. Appends a copy of data[0..len) followed by suffix[0..suffix_len)
 * with e's key, offset, time and since. PB_ETOOBIG when it does not fit: the
 * queue is then overflowed and refuses every push (PB_ETOOBIG) until reset.
 */
int livequeue_push(livequeue *q, const lq_entry *e, const void *data, uint32_t len,
                   const void *suffix, uint32_t suffix_len);

bool livequeue_overflowed(const livequeue *q);
bool livequeue_empty(const livequeue *q);
/* Bytes in use (entries, their overhead and wrap padding). */
uint64_t livequeue_used(const livequeue *q);
uint64_t livequeue_capacity(const livequeue *q);

/* Consumer, under the lock: the entries queued so far. */
void livequeue_peek(const livequeue *q, lq_span *span);

/* Consumer, lock not needed: the entry at span->pos (advancing it), or
 * PB_EEOF when the span is exhausted. e->data stays valid until the entry is
 * consumed or the queue reset. */
int livequeue_read(const livequeue *q, lq_span *span, lq_entry *e);

/* Consumer, under the lock: frees the entries before span->pos (a position
 * obtained from livequeue_read on a span of the current peek). */
void livequeue_consume(livequeue *q, const lq_span *span);

/* Consumer, under the lock: drops every entry, forgets every partition's
 * `since`, and clears the overflow mark. */
void livequeue_reset(livequeue *q);

#endif
