/*
 * livequeue - the bounded live queue of one subscription: copies of durable
 * records (partition, offset, receive time, stored bytes) that partition
 * writers hand to the subscription thread, plus, per partition, the offset
 * from which the queue has seen every record the writer published ("since").
 *
 * Data flow: writer threads push (fanout_durable); the subscription
 * thread peeks a span of entries, reads them in place, then consumes them.
 *
 * Threads and locking: the queue has no lock of its own. The owner (the
 * subscription, sub.c) serialises every call with its mutex, except
 * livequeue_read(), which the consumer calls WITHOUT the lock on a span it
 * got from livequeue_peek(): producers only write into free space and only
 * the consumer frees space (livequeue_consume/livequeue_reset), so the
 * entries of a peeked span stay untouched until the consumer consumes them.
 * (A producer may replace the block of an EMPTY queue: no span can be
 * reading there, since a span peeked while empty reads nothing.)
 *
 * Memory: nothing is preallocated. Entries go into blocks allocated as the
 * queue grows (2 KiB first, doubling up to 64 KiB, or one entry's size);
 * the consumer frees a block once it has consumed past it, and when the
 * queue runs empty it keeps at most one block of 2 KiB for the next pushes.
 * So an idle subscription costs a few hundred bytes, and one take's records
 * cost a subscription about their size (a take is at most
 * PARTITION_TAKE_EVENTS events), not a doubled block. Two bounds apply to every
 * push: the queue's own `capacity` (bytes of entries, their
 * LIVEQUEUE_ENTRY_OVERHEAD and the padding at block ends), and the budget of
 * the livequeue_pool the queue draws its blocks from, shared by every
 * subscription. A push that either bound refuses overflows THIS queue: it
 * refuses everything until livequeue_reset, and the subscription reads the
 * files instead, so nothing is dropped silently.
 */
#ifndef PB_LIVEQUEUE_H
#define PB_LIVEQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LIVEQUEUE_ENTRY_OVERHEAD 40u
/* The largest run entry (livequeue_run_begin) two of which fill one of
 * the queue's largest blocks (64 KiB) with nothing left over: a larger
 * run would take a block of its own and leave up to half of it as padding,
 * counted against the queue's capacity and the pool's budget. */
#define LIVEQUEUE_RUN_MAX (32u * 1024u - LIVEQUEUE_ENTRY_OVERHEAD)

typedef struct livequeue livequeue;

/* What every live queue of the daemon shares: the budget for the bytes of
 * their blocks, and a counter of resets (livequeue_reset), so that the
 * writers' fan-out knows when some queue has forgotten which partitions it
 * has seen (see livequeue_since). Thread-safe (atomics). */
typedef struct livequeue_pool livequeue_pool;

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
    uint32_t crc; /* the stored record's CRC32C, when has_crc */
    bool has_crc;
    /* From livequeue_read: a run (livequeue_run_begin) holds `count`
     * records as stored (FORMAT.md Part B: header, event), of offsets
     * offset..offset + count - 1; a record entry has count 1. */
    bool run;
    uint32_t count;
} lq_entry;

/* A range of entries taken by livequeue_peek, read with livequeue_read.
 * Positions count bytes since the queue's start (not addresses). */
typedef struct lq_span {
    uint64_t start;  /* head when peeked */
    uint64_t pos;    /* next entry to read */
    uint64_t end;    /* tail when peeked */
    const void *blk; /* internal: the block holding pos */
} lq_span;

/* budget_bytes: the bound on the sum of all the pool's queues' blocks
 * (at least 4096). Returns 0, PB_EINVAL or PB_ENOMEM. */
int livequeue_pool_create(livequeue_pool **out, uint64_t budget_bytes);
/* Every queue of the pool must be destroyed first. NULL-safe. */
void livequeue_pool_destroy(livequeue_pool *pool);
/* Any thread: bytes the pool's queues hold now, and the budget. */
uint64_t livequeue_pool_used(const livequeue_pool *pool);
uint64_t livequeue_pool_budget(const livequeue_pool *pool);
/* Any thread: how many times a queue of the pool was reset; it only grows. */
uint64_t livequeue_pool_resets(const livequeue_pool *pool);

/* capacity: the queue's own bound in bytes (rounded down to a multiple of 8;
 * at least 64). pool: where its blocks are counted (NULL: only capacity
 * bounds the queue). Allocates no block yet. Returns 0, PB_EINVAL or
 * PB_ENOMEM. */
int livequeue_create(livequeue **out, uint64_t capacity, livequeue_pool *pool);

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
 * with e's key, offset, time, since and crc (if has_crc). PB_ETOOBIG when it does not fit (the
 * queue's capacity, the pool's budget, or no memory for a block): the queue
 * is then overflowed and refuses every push (PB_ETOOBIG) until reset.
 */
int livequeue_push(livequeue *q, const lq_entry *e, const void *data, uint32_t len,
                   const void *suffix, uint32_t suffix_len);

/*
 * Producer: a run entry, for a replication subscription (Records frames):
 * count consecutive records of one partition, as stored (header with CRC,
 * event), that the producer writes in place. livequeue_run_begin returns
 * where the len bytes go, or NULL when they do not fit (the queue is then
 * overflowed, as for a refused push); livequeue_run_end then queues them
 * with e's key, first offset, time and since. Nothing else may be called
 * on the queue in between (under the owner's lock, as every push).
 */
uint8_t *livequeue_run_begin(livequeue *q, uint32_t len);
/* The bytes a producer should put in one run entry of q: LIVEQUEUE_RUN_MAX,
 * or a quarter of a smaller queue's capacity (so that runs never overflow
 * a queue whose consumer keeps up). */
uint32_t livequeue_run_max(const livequeue *q);
void livequeue_run_end(livequeue *q, const lq_entry *e, uint32_t len, uint32_t count);

/* Producer: marks the queue overflowed, as a refused push would (for a
 * writer that cannot offer the records, e.g. out of memory). */
void livequeue_overflow(livequeue *q);

bool livequeue_overflowed(const livequeue *q);
bool livequeue_empty(const livequeue *q);
/* Bytes in use (entries, their overhead and wrap padding). */
uint64_t livequeue_used(const livequeue *q);
uint64_t livequeue_capacity(const livequeue *q);
/* Bytes of blocks the queue holds now (what it takes from its pool). */
uint64_t livequeue_allocated(const livequeue *q);

/* Consumer, under the lock: the entries queued so far. */
void livequeue_peek(const livequeue *q, lq_span *span);

/* Consumer, lock not needed: the entry at span->pos (advancing it), or
 * PB_EEOF when the span is exhausted. e->data stays valid until the entry is
 * consumed or the queue reset. */
int livequeue_read(const livequeue *q, lq_span *span, lq_entry *e);

/* Consumer, under the lock: frees the entries before span->pos (a position
 * obtained from livequeue_read on a span of the current peek), and the
 * blocks consumed past. The span stays readable from span->pos on. */
void livequeue_consume(livequeue *q, const lq_span *span);

/* Consumer, under the lock: drops every entry (freeing the blocks), forgets
 * every partition's `since`, clears the overflow mark, and counts a reset
 * in the pool. */
void livequeue_reset(livequeue *q);

#endif
