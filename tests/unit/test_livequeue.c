/*
 * test_livequeue - the bounded live queue of a subscription: entries come
 * back intact and in order (also across block boundaries), the bound
 * holds, a full queue stays overflowed until reset, the per-partition
 * `since` bookkeeping, and the empty-peek/rebase corner of consume; the
 * memory: nothing allocated until the first push, blocks given back as they
 * are consumed; the pool: the sum over queues never passes the budget, a
 * push it refuses overflows that queue only, and resets are counted.
 */
#include "livequeue.h"
#include "pb_errors.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static uint32_t rng_state = 12345;

static uint32_t rnd(void)
{
    rng_state = rng_state * 1103515245u + 12345u;
    return rng_state >> 8;
}

static void fill(uint8_t *b, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(seed * 31 + i * 7);
}

static void test_push_read_consume_roundtrip(void **state)
{
    livequeue *q;
    assert_int_equal(livequeue_create(&q, 4096, NULL), 0);
    assert_true(livequeue_empty(q));
    int key_a, key_b;
    uint8_t data[100], suffix[19];
    fill(data, sizeof data, 1);
    fill(suffix, sizeof suffix, 2);
    lq_entry e = {.key = &key_a, .offset = 7, .time_ns = -5, .since = 3};
    assert_int_equal(livequeue_push(q, &e, data, sizeof data, suffix, sizeof suffix), 0);
    e = (lq_entry){.key = &key_b, .offset = 1ull << 40, .time_ns = INT64_MAX, .since = 0};
    assert_int_equal(livequeue_push(q, &e, data, 0, NULL, 0), 0); /* empty event */
    assert_false(livequeue_empty(q));
    assert_int_equal(livequeue_used(q), 2 * LIVEQUEUE_ENTRY_OVERHEAD + 120);

    lq_span sp;
    livequeue_peek(q, &sp);
    lq_entry got;
    assert_int_equal(livequeue_read(q, &sp, &got), 0);
    assert_ptr_equal(got.key, &key_a);
    assert_int_equal(got.offset, 7);
    assert_int_equal(got.time_ns, -5);
    assert_int_equal(got.since, 3);
    assert_int_equal(got.len, sizeof data + sizeof suffix);
    assert_memory_equal(got.data, data, sizeof data);
    assert_memory_equal(got.data + sizeof data, suffix, sizeof suffix);
    assert_int_equal(livequeue_read(q, &sp, &got), 0);
    assert_ptr_equal(got.key, &key_b);
    assert_int_equal(got.offset, 1ull << 40);
    assert_int_equal(got.time_ns, INT64_MAX);
    assert_int_equal(got.len, 0);
    assert_int_equal(livequeue_read(q, &sp, &got), PB_EEOF);
    livequeue_consume(q, &sp);
    assert_true(livequeue_empty(q));
    assert_int_equal(livequeue_used(q), 0);
    livequeue_destroy(q);
}

static void test_full_queue_stays_overflowed_until_reset(void **state)
{
    livequeue *q;
    assert_int_equal(livequeue_create(&q, 1000, NULL), 0);
    assert_int_equal(livequeue_capacity(q), 1000);
    uint8_t data[60];
    fill(data, sizeof data, 3);
    int key;
    size_t pushed = 0;
    int rc;
    for (;;) {
        lq_entry e = {.key = &key, .offset = pushed};
        rc = livequeue_push(q, &e, data, sizeof data, NULL, 0);
        if (rc < 0)
            break;
        pushed++;
        assert_true(livequeue_used(q) <= livequeue_capacity(q));
    }
    assert_int_equal(rc, PB_ETOOBIG);
    assert_int_equal(pushed, 1000 / (LIVEQUEUE_ENTRY_OVERHEAD + 64));
    assert_true(livequeue_overflowed(q));

    /* Make room: an overflowed queue still refuses, even a tiny entry. */
    lq_span sp;
    livequeue_peek(q, &sp);
    lq_entry got;
    assert_int_equal(livequeue_read(q, &sp, &got), 0);
    assert_int_equal(got.offset, 0);
    livequeue_consume(q, &sp);
    lq_entry e = {.key = &key, .offset = 99};
    assert_int_equal(livequeue_push(q, &e, data, 1, NULL, 0), PB_ETOOBIG);

    livequeue_reset(q);
    assert_false(livequeue_overflowed(q));
    assert_true(livequeue_empty(q));
    assert_int_equal(livequeue_push(q, &e, data, 1, NULL, 0), 0);
    livequeue_peek(q, &sp);
    assert_int_equal(livequeue_read(q, &sp, &got), 0);
    assert_int_equal(got.offset, 99);
    assert_int_equal(livequeue_read(q, &sp, &got), PB_EEOF);
    livequeue_destroy(q);
}

static void test_entry_larger_than_queue_overflows(void **state)
{
    livequeue *q;
    assert_int_equal(livequeue_create(&q, 256, NULL), 0);
    uint8_t big[256];
    fill(big, sizeof big, 4);
    int key;
    lq_entry e = {.key = &key};
    assert_int_equal(livequeue_push(q, &e, big, sizeof big, NULL, 0), PB_ETOOBIG);
    assert_true(livequeue_overflowed(q));
    assert_true(livequeue_empty(q));
    /* The largest entry that fits is accepted by an empty queue wherever the
     * previous entries left the ring position (no padding when empty). */
    livequeue_reset(q);
    lq_entry small = {.key = &key, .offset = 1};
    assert_int_equal(livequeue_push(q, &small, big, 100, NULL, 0), 0);
    lq_span sp;
    lq_entry got;
    livequeue_peek(q, &sp);
    assert_int_equal(livequeue_read(q, &sp, &got), 0);
    livequeue_consume(q, &sp);
    e.offset = 2;
    assert_int_equal(livequeue_push(q, &e, big, 256 - LIVEQUEUE_ENTRY_OVERHEAD, NULL, 0), 0);
    livequeue_peek(q, &sp);
    assert_int_equal(livequeue_read(q, &sp, &got), 0);
    assert_int_equal(got.offset, 2);
    assert_memory_equal(got.data, big, 256 - LIVEQUEUE_ENTRY_OVERHEAD);
    livequeue_destroy(q);
}

/* Random producer/consumer interleaving over a small ring: every entry comes
 * back once, in order, with its bytes, contiguous; the bound always holds. */
/* Also: an entry's CRC (lq_entry.crc, has_crc: kept in its header, the
 * flag in the length's top bit) comes back as pushed, the length unmasked,
 * across block ends and padding. */
static void test_wraparound_keeps_order_and_bytes(void **state)
{
    livequeue *q;
    assert_int_equal(livequeue_create(&q, 1024, NULL), 0);
    int key;
    uint64_t next_push = 0, next_read = 0;
    uint8_t data[300], check[300];
    for (int round = 0; round < 20000; round++) {
        if (rnd() % 3 != 0) {
            size_t len = rnd() % 300;
            size_t split = len ? rnd() % (len + 1) : 0;
            fill(data, len, next_push);
            /* Every third entry without a CRC; the others with one whose
             * top bit is set half the time (the length's flag is apart). */
            lq_entry e = {.key = &key,
                          .offset = next_push,
                          .time_ns = (int64_t)next_push,
                          .crc = (uint32_t)(next_push * 2654435761u),
                          .has_crc = next_push % 3 != 0};
            int rc =
                livequeue_push(q, &e, data, (uint32_t)split, data + split, (uint32_t)(len - split));
            if (rc == 0) {
                next_push++;
            } else {
                assert_int_equal(rc, PB_ETOOBIG);
                /* The test plays the subscription: drop and start over. */
                assert_true(livequeue_overflowed(q));
                livequeue_reset(q);
                next_read = next_push;
            }
            assert_true(livequeue_used(q) <= livequeue_capacity(q));
        } else {
            lq_span sp;
            livequeue_peek(q, &sp);
            size_t take = rnd() % 4;
            lq_entry got;
            for (size_t i = 0; i < take && livequeue_read(q, &sp, &got) == 0; i++) {
                assert_int_equal(got.offset, next_read);
                assert_int_equal(got.time_ns, (int64_t)next_read);
                assert_true(got.len < 300);
                assert_int_equal(got.has_crc, next_read % 3 != 0);
                if (got.has_crc)
                    assert_int_equal(got.crc, (uint32_t)(next_read * 2654435761u));
                fill(check, got.len, next_read);
                assert_memory_equal(got.data, check, got.len);
                next_read++;
            }
            livequeue_consume(q, &sp);
        }
    }
    assert_true(next_push > 5000);
    livequeue_destroy(q);
}

/* Run entries (livequeue_run_begin/end: a standby's stored records,
 * written in place) among record entries, half of these with a CRC: each
 * comes back as pushed (run or record, count, CRC and its flag, first
 * offset, bytes), in order, across block ends and padding; a run that does
 * not fit overflows the queue like a refused push. */
typedef struct lq_pushed {
    bool run, has_crc;
    uint32_t count, crc;
} lq_pushed;

static void test_runs_among_records(void **state)
{
    livequeue *q;
    assert_int_equal(livequeue_create(&q, 2048, NULL), 0);
    int key;
    uint64_t next_push = 0, next_read = 0;
    uint8_t data[400], check[400];
    static lq_pushed ring[4096]; /* by offset % 4096: far more than the queue holds */
    int runs = 0;
    for (int round = 0; round < 20000; round++) {
        if (rnd() % 3 != 0) {
            size_t len = rnd() % 400;
            lq_pushed w = {.run = rnd() % 2, .has_crc = false, .count = 1, .crc = 0};
            if (w.run)
                w.count = 1 + rnd() % 5;
            else if ((w.has_crc = rnd() % 2))
                w.crc = rnd() | 0x80000000u; /* its top bit set, apart from the length's flags */
            lq_entry e = {.key = &key,
                          .offset = next_push,
                          .time_ns = 5,
                          .since = 1,
                          .crc = w.crc,
                          .has_crc = w.has_crc};
            fill(data, len, next_push);
            int rc = 0;
            if (w.run) {
                uint8_t *at = livequeue_run_begin(q, (uint32_t)len);
                if (at) {
                    memcpy(at, data, len);
                    livequeue_run_end(q, &e, (uint32_t)len, w.count);
                    runs++;
                } else {
                    rc = PB_ETOOBIG;
                }
            } else {
                rc = livequeue_push(q, &e, data, (uint32_t)len, NULL, 0);
            }
            if (rc == 0) {
                ring[next_push % 4096] = w;
                next_push += w.count;
            } else {
                assert_true(livequeue_overflowed(q));
                assert_null(livequeue_run_begin(q, 8)); /* refused until reset */
                livequeue_reset(q);
                next_read = next_push;
            }
            assert_true(livequeue_used(q) <= livequeue_capacity(q));
        } else {
            lq_span sp;
            livequeue_peek(q, &sp);
            lq_entry got;
            for (size_t i = 0, take = rnd() % 4; i < take && livequeue_read(q, &sp, &got) == 0;
                 i++) {
                const lq_pushed *w = &ring[next_read % 4096];
                assert_int_equal(got.offset, next_read);
                assert_int_equal(got.since, 1);
                assert_int_equal(got.run, w->run);
                assert_int_equal(got.count, w->count);
                assert_int_equal(got.has_crc, w->has_crc);
                assert_int_equal(got.crc, w->crc);
                fill(check, got.len, next_read);
                assert_memory_equal(got.data, check, got.len);
                next_read += got.count;
            }
            livequeue_consume(q, &sp);
        }
    }
    assert_true(runs > 3000);
    /* Larger than the queue: refused, overflowed. */
    livequeue_reset(q);
    assert_null(livequeue_run_begin(q, 4096));
    assert_true(livequeue_overflowed(q));
    livequeue_destroy(q);
}

/* Runs of livequeue_run_max bytes fill a queue to its capacity (two to a
 * 64 KiB block, no half-empty blocks); a small queue's runs are a quarter
 * of it, so a consumer that keeps up never sees it overflow. */
static void test_run_max_fills_the_queue(void **state)
{
    livequeue *q;
    int key;
    uint64_t cap = 4u << 20;
    assert_int_equal(livequeue_create(&q, cap, NULL), 0);
    uint32_t max = livequeue_run_max(q);
    assert_int_equal(max, LIVEQUEUE_RUN_MAX);
    lq_entry e = {.key = &key};
    uint8_t *at;
    while ((at = livequeue_run_begin(q, max)) != NULL) {
        memset(at, 1, max);
        livequeue_run_end(q, &e, max, 1);
        e.offset++;
    }
    assert_true(livequeue_used(q) >= cap / 100 * 95);
    livequeue_destroy(q);

    assert_int_equal(livequeue_create(&q, 16 * 1024, NULL), 0);
    max = livequeue_run_max(q);
    assert_int_equal(max, 4 * 1024);
    for (int i = 0; i < 1000; i++) {
        for (int k = 0; k < 2; k++) { /* two runs, then the consumer takes them */
            assert_non_null(at = livequeue_run_begin(q, max));
            livequeue_run_end(q, &e, max, 1);
        }
        lq_span sp;
        lq_entry got;
        livequeue_peek(q, &sp);
        while (livequeue_read(q, &sp, &got) == 0)
            assert_int_equal(got.len, max);
        livequeue_consume(q, &sp);
    }
    assert_false(livequeue_overflowed(q));
    livequeue_destroy(q);
}

static void test_since_per_partition(void **state)
{
    livequeue *q;
    assert_int_equal(livequeue_create(&q, 1024, NULL), 0);
    int keys[100];
    uint64_t since;
    assert_int_equal(livequeue_since(q, &keys[0], 10, &since), 0);
    assert_int_equal(since, 10);
    assert_int_equal(livequeue_since(q, &keys[0], 25, &since), 0);
    assert_int_equal(since, 10); /* the first batch seen counts */
    /* Many partitions: the table grows and keeps every value. */
    for (int i = 1; i < 100; i++)
        assert_int_equal(livequeue_since(q, &keys[i], (uint64_t)i * 1000, &since), 0);
    for (int i = 1; i < 100; i++) {
        assert_int_equal(livequeue_since(q, &keys[i], 5, &since), 0);
        assert_int_equal(since, (uint64_t)i * 1000);
    }
    assert_int_equal(livequeue_since(q, &keys[0], 99, &since), 0);
    assert_int_equal(since, 10);
    /* A reset forgets: the queue has seen nothing since. */
    livequeue_reset(q);
    assert_int_equal(livequeue_since(q, &keys[0], 40, &since), 0);
    assert_int_equal(since, 40);
    assert_int_equal(livequeue_since(q, &keys[7], 41, &since), 0);
    assert_int_equal(since, 41);
    livequeue_destroy(q);
}

/* A span peeked while empty must not move head after a producer pushed
 * (the producer restarts an empty ring at position 0). */
static void test_consume_of_empty_peek_keeps_new_entries(void **state)
{
    livequeue *q;
    assert_int_equal(livequeue_create(&q, 512, NULL), 0);
    int key;
    uint8_t data[50];
    fill(data, sizeof data, 9);
    lq_span sp;
    lq_entry got;
    /* Move the ring position away from 0 first. */
    for (int i = 0; i < 3; i++) {
        lq_entry e = {.key = &key, .offset = (uint64_t)i};
        assert_int_equal(livequeue_push(q, &e, data, sizeof data, NULL, 0), 0);
        livequeue_peek(q, &sp);
        assert_int_equal(livequeue_read(q, &sp, &got), 0);
        livequeue_consume(q, &sp);
    }
    livequeue_peek(q, &sp); /* empty */
    assert_int_equal(livequeue_read(q, &sp, &got), PB_EEOF);
    lq_entry e = {.key = &key, .offset = 3};
    assert_int_equal(livequeue_push(q, &e, data, sizeof data, NULL, 0), 0);
    e.offset = 4;
    assert_int_equal(livequeue_push(q, &e, data, sizeof data, NULL, 0), 0);
    livequeue_consume(q, &sp); /* the stale empty span */
    livequeue_peek(q, &sp);
    assert_int_equal(livequeue_read(q, &sp, &got), 0);
    assert_int_equal(got.offset, 3);
    assert_int_equal(livequeue_read(q, &sp, &got), 0);
    assert_int_equal(got.offset, 4);
    assert_int_equal(livequeue_read(q, &sp, &got), PB_EEOF);
    livequeue_destroy(q);
}

/* An idle queue holds no memory; a queue grows by blocks as entries come
 * and gives them back as they are consumed (keeping one small block). */
static void test_grows_on_demand_and_gives_back(void **state)
{
    livequeue_pool *pool;
    assert_int_equal(livequeue_pool_create(&pool, 64u << 20), 0);
    livequeue *q;
    assert_int_equal(livequeue_create(&q, 4u << 20, pool), 0);
    assert_int_equal(livequeue_allocated(q), 0);
    assert_int_equal(livequeue_pool_used(pool), 0);

    int key;
    uint8_t data[1000];
    fill(data, sizeof data, 5);
    uint64_t pushed = 0;
    /* 1 MiB of entries: far more than a first block, far less than 4 MiB. */
    while (livequeue_used(q) < (1u << 20)) {
        lq_entry e = {.key = &key, .offset = pushed};
        assert_int_equal(livequeue_push(q, &e, data, sizeof data, NULL, 0), 0);
        pushed++;
    }
    uint64_t held = livequeue_allocated(q);
    assert_true(held >= livequeue_used(q));
    assert_true(held < livequeue_used(q) + (600u << 10)); /* used + at most ~2 blocks */
    assert_int_equal(livequeue_pool_used(pool), held);

    /* Consume half: the blocks before the read position go back. */
    lq_span sp;
    lq_entry got;
    livequeue_peek(q, &sp);
    uint64_t next = 0;
    for (; next < pushed / 2; next++) {
        assert_int_equal(livequeue_read(q, &sp, &got), 0);
        assert_int_equal(got.offset, next);
    }
    livequeue_consume(q, &sp);
    assert_true(livequeue_allocated(q) < held);
    assert_true(livequeue_allocated(q) < livequeue_used(q) + (600u << 10));
    /* The rest of the span still reads after the consume (the block that
     * holds span->pos stays). */
    sp.start = sp.pos;
    while (livequeue_read(q, &sp, &got) == 0) {
        assert_int_equal(got.offset, next);
        assert_memory_equal(got.data, data, sizeof data);
        next++;
    }
    assert_int_equal(next, pushed);
    livequeue_consume(q, &sp);
    assert_true(livequeue_empty(q));
    /* Empty: at most one small block kept (2 KiB: with 1,000 idle
     * subscriptions, what every one keeps is in the daemon's RSS). */
    assert_true(livequeue_allocated(q) <= 2048 + 64);
    assert_int_equal(livequeue_pool_used(pool), livequeue_allocated(q));
    livequeue_destroy(q);
    assert_int_equal(livequeue_pool_used(pool), 0);
    livequeue_pool_destroy(pool);
}

/* Several queues share a budget smaller than the sum of their capacities:
 * the total never passes it; the queue whose push would pass it overflows
 * (and only it); consuming or resetting gives the budget back. */
static void test_pool_budget_shared_by_queues(void **state)
{
    livequeue_pool *pool;
    assert_int_equal(livequeue_pool_create(&pool, 4095), PB_EINVAL);
    const uint64_t budget = 256u * 1024;
    assert_int_equal(livequeue_pool_create(&pool, budget), 0);
    assert_int_equal(livequeue_pool_budget(pool), budget);
    livequeue *q[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(livequeue_create(&q[i], 1u << 20, pool), 0);
    int key;
    uint8_t data[500];
    fill(data, sizeof data, 6);

    /* q0 and q1 fill in turns until one is refused. */
    uint64_t n[2] = {0, 0};
    int refused = -1;
    for (int round = 0; refused < 0 && round < 10000; round++) {
        for (int i = 0; i < 2 && refused < 0; i++) {
            lq_entry e = {.key = &key, .offset = n[i]};
            int rc = livequeue_push(q[i], &e, data, sizeof data, NULL, 0);
            if (rc == 0)
                n[i]++;
            else {
                assert_int_equal(rc, PB_ETOOBIG);
                refused = i;
            }
            assert_true(livequeue_pool_used(pool) <= budget);
        }
    }
    assert_true(refused >= 0);
    assert_true(livequeue_overflowed(q[refused]));
    assert_false(livequeue_overflowed(q[1 - refused]));
    /* Each queue's own capacity (1 MiB) was far away: the budget decided. */
    assert_true(livequeue_used(q[refused]) < 200u * 1024);
    assert_true(livequeue_pool_used(pool) > budget - 64u * 1024);

    /* A third queue is refused too while the budget is spent... */
    int q2_ok = 0;
    for (int i = 0; i < 200; i++) {
        lq_entry e = {.key = &key, .offset = (uint64_t)i};
        if (livequeue_push(q[2], &e, data, sizeof data, NULL, 0) < 0)
            break;
        q2_ok++;
    }
    assert_true(livequeue_overflowed(q[2]));
    assert_true(livequeue_pool_used(pool) <= budget);

    /* ...and accepted again once the overflowed queue is reset (its blocks
     * go back) and counted as a reset. */
    uint64_t resets = livequeue_pool_resets(pool);
    livequeue_reset(q[refused]);
    livequeue_reset(q[2]);
    assert_int_equal(livequeue_pool_resets(pool), resets + 2);
    assert_int_equal(livequeue_allocated(q[refused]), 0);
    lq_entry e = {.key = &key, .offset = 1};
    assert_int_equal(livequeue_push(q[3], &e, data, sizeof data, NULL, 0), 0);
    assert_int_equal(livequeue_push(q[2], &e, data, sizeof data, NULL, 0), 0);

    /* The survivor's entries are intact. */
    int other = 1 - refused;
    lq_span sp;
    lq_entry got;
    livequeue_peek(q[other], &sp);
    for (uint64_t i = 0; i < n[other]; i++) {
        assert_int_equal(livequeue_read(q[other], &sp, &got), 0);
        assert_int_equal(got.offset, i);
        assert_memory_equal(got.data, data, sizeof data);
    }
    assert_int_equal(livequeue_read(q[other], &sp, &got), PB_EEOF);
    livequeue_consume(q[other], &sp);

    for (int i = 0; i < 4; i++)
        livequeue_destroy(q[i]);
    assert_int_equal(livequeue_pool_used(pool), 0);
    livequeue_pool_destroy(pool);
    livequeue_pool_destroy(NULL);
}

/* An entry larger than the growth size gets a block of its own; with the
 * budget nearly spent, a block just big enough is still tried. */
static void test_big_entry_and_tight_budget(void **state)
{
    livequeue_pool *pool;
    assert_int_equal(livequeue_pool_create(&pool, 8192), 0);
    livequeue *q;
    assert_int_equal(livequeue_create(&q, 1u << 20, pool), 0);
    int key;
    static uint8_t big[7000];
    fill(big, sizeof big, 8);
    lq_entry e = {.key = &key, .offset = 1};
    assert_int_equal(livequeue_push(q, &e, big, sizeof big, NULL, 0), 0);
    assert_true(livequeue_allocated(q) <= 8192);
    e.offset = 2;
    assert_int_equal(livequeue_push(q, &e, big, 3000, NULL, 0), PB_ETOOBIG);
    lq_span sp;
    lq_entry got;
    livequeue_peek(q, &sp);
    assert_int_equal(livequeue_read(q, &sp, &got), 0);
    assert_int_equal(got.len, sizeof big);
    assert_memory_equal(got.data, big, sizeof big);
    livequeue_destroy(q);
    assert_int_equal(livequeue_pool_used(pool), 0);
    livequeue_pool_destroy(pool);
}

static void test_bad_capacity(void **state)
{
    livequeue *q = NULL;
    assert_int_equal(livequeue_create(&q, 0, NULL), PB_EINVAL);
    assert_int_equal(livequeue_create(&q, 63, NULL), PB_EINVAL);
    assert_null(q);
    livequeue_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_push_read_consume_roundtrip),
        cmocka_unit_test(test_full_queue_stays_overflowed_until_reset),
        cmocka_unit_test(test_entry_larger_than_queue_overflows),
        cmocka_unit_test(test_wraparound_keeps_order_and_bytes),
        cmocka_unit_test(test_runs_among_records),
        cmocka_unit_test(test_run_max_fills_the_queue),
        cmocka_unit_test(test_since_per_partition),
        cmocka_unit_test(test_consume_of_empty_peek_keeps_new_entries),
        cmocka_unit_test(test_bad_capacity),
        cmocka_unit_test(test_grows_on_demand_and_gives_back),
        cmocka_unit_test(test_pool_budget_shared_by_queues),
        cmocka_unit_test(test_big_entry_and_tight_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
