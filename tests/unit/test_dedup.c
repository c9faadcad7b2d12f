/*
 * test_dedup - the dedup window (dedup.c) against a model: a list of the
 * ids it should hold, oldest first. Random steps check ids (new ones, and
 * retries of ids held, evicted, expired or rolled back), expire on a clock,
 * and roll takes back; after each step every held id is found at its
 * offset, a sample of forgotten ids is not, and the count matches. Small
 * windows put many ids in each bucket of the index (so full buckets send
 * ids on to the next, and the index is rebuilt), and the sequence numbers
 * cross 2^32 (dedup.c starts them just below). The writer's batched check
 * (dedup_admit_events) gives the answers of dedup_check event by event.
 * The index is checked against the slots (assert_index_matches): where
 * each id's cell is, and the counts of the buckets ids passed.
 * Deterministic (fixed seeds).
 */
#include "dedup.h"
#include "dedup_internal.h"

#include "broker.h"
#include "pb_errors.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <sys/mman.h>

/* Growth that fails part-way (dedup.c's grow_to: three reallocs, then the
 * ring's mremap): the fail_at-th of those calls from now fails (0: none). */
void *__real_realloc(void *ptr, size_t n);
void *__wrap_realloc(void *ptr, size_t n);
void *__real_mremap(void *old, size_t old_size, size_t new_size, int flags, ...);
void *__wrap_mremap(void *old, size_t old_size, size_t new_size, int flags, ...);

static int fail_at;

void *__wrap_realloc(void *ptr, size_t n)
{
    if (fail_at > 0 && --fail_at == 0)
        return NULL;
    return __real_realloc(ptr, n);
}

void *__wrap_mremap(void *old, size_t old_size, size_t new_size, int flags, ...)
{
    if (fail_at > 0 && --fail_at == 0)
        return MAP_FAILED;
    return __real_mremap(old, old_size, new_size, flags);
}

#define ID_MAX 64
#define SEC    1000000000ll

typedef struct model_entry {
    uint64_t c; /* the id's number (id_of) */
    uint64_t offset;
    int64_t time_ns;
    uint64_t evictor; /* popped by the id added at this offset (+1); 0: expired */
} model_entry;

/* The ids the window should hold: entries at absolute positions
 * [head, tail) of a ring of `cap` (a power of two above max_entries + a
 * take), where[c] the latest position id c was put at. */
typedef struct model {
    model_entry *e;
    uint64_t *where;
    uint64_t head, tail;
    size_t cap;
    uint32_t max;
    uint64_t popped; /* the entries just before head that a rollback puts back */
    uint64_t room;   /* the window's ring: max and its slack (dedup.c's slack_of) */
    uint64_t slack;
    uint64_t commit_off; /* ids added below it are stored (dedup_commit) */
} model;

static uint64_t rng_state;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Id number c: its 8 bytes, then bytes derived from it, 8..64 bytes in all
 * (every id different, lengths and contents varied). */
static size_t id_of(uint64_t c, uint8_t *id)
{
    size_t len = 8 + (size_t)((c * 7919u) % (ID_MAX - 7));
    memcpy(id, &c, 8);
    uint64_t x = c * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 8; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        id[i] = (uint8_t)x;
    }
    return len;
}

static model_entry *at(const model *m, uint64_t pos)
{
    return &m->e[pos & (m->cap - 1)];
}

static size_t model_count(const model *m)
{
    return (size_t)(m->tail - m->head);
}

static model_entry *model_find(const model *m, uint64_t c)
{
    uint64_t pos = m->where[c];
    if (pos == UINT64_MAX || pos < m->head || pos >= m->tail || at(m, pos)->c != c)
        return NULL;
    return at(m, pos);
}

static void model_push(model *m, uint64_t c, uint64_t offset, int64_t t)
{
    if (model_count(m) == m->max) {
        at(m, m->head)->evictor = offset + 1;
        m->head++;
        m->popped++;
        /* The ring's tail is about to take the oldest popped slot: kept (the
         * ring grows by its slack) when an id not yet stored pushed it out. */
        if (m->popped >= m->room - model_count(m) &&
            at(m, m->head - m->popped)->evictor > m->commit_off) {
            uint64_t most = 2ull * m->max; /* dedup.c: at most twice the bound */
            m->room = m->room + m->slack < most ? m->room + m->slack
                      : most > m->room          ? most
                                                : m->room;
        }
    }
    m->where[c] = m->tail;
    *at(m, m->tail++) = (model_entry){c, offset, t, 0};
    if (m->popped > m->room - model_count(m))
        m->popped = m->room - model_count(m); /* the ring's tail took that slot */
}

/* A take that was not stored: its ids go (also those of its own that its
 * later ids pushed out), and the ids they (and those before them since)
 * pushed out of a full window come back, as far as the ring's slack still
 * holds them, unless expired. */
static void model_truncate(model *m, uint64_t from, int64_t cutoff)
{
    while (m->tail > m->head && at(m, m->tail - 1)->offset >= from)
        m->tail--;
    /* The take's own ids that its later ids pushed out never come back. */
    while (m->popped > 0 && model_count(m) == 0 && at(m, m->head - 1)->offset >= from) {
        m->head--;
        m->tail--;
        m->popped--;
    }
    while (m->popped > 0 && model_count(m) < m->max && at(m, m->head - 1)->time_ns >= cutoff) {
        m->head--;
        m->popped--;
        m->where[at(m, m->head)->c] = m->head;
    }
}

/* Every id of the model is in the window at its offset; the count agrees;
 * ids numbered below `next` that the model does not hold (sampled) are not. */
static void verify(dedup *d, const model *m, uint64_t next)
{
    uint8_t id[ID_MAX];
    uint64_t off;
    assert_int_equal(dedup_count(d), model_count(m));
    for (uint64_t pos = m->head; pos < m->tail; pos++) {
        const model_entry *e = at(m, pos);
        size_t len = id_of(e->c, id);
        assert_int_equal(dedup_find(d, id, len, &off), 1);
        assert_int_equal(off, e->offset);
    }
    for (int k = 0; k < 64 && next > 0; k++) {
        uint64_t c = rnd() % next;
        size_t len = id_of(c, id);
        int found = dedup_find(d, id, len, &off);
        assert_int_equal(found, model_find(m, c) != NULL);
    }
}

/* The index agrees with the slots (dedup.c's top): each id in the ring has
 * its cell (its tag, its sequence number) in the bucket `hops` after its
 * own, each bucket's `over` counts the ids that passed it, and `passed`
 * flags the slots whose id passed any. A wrong hops gives no wrong answer
 * (a stale count only sends look-ups on), so the answers the tests check
 * cannot see one: this does. Returns the largest hops. */
static uint32_t assert_index_matches(const dedup *d)
{
    uint32_t mask = d->nbuckets - 1, most = 0;
    uint32_t *over = calloc(d->nbuckets + 1u, sizeof *over);
    assert_non_null(over);
    for (uint32_t k = 0; k < d->count; k++) {
        uint32_t pos = ring_pos(d, k), seq = d->head_seq + k;
        const dedup_slot *s = &d->ring[pos];
        uint32_t hops = slot_hops(s), tag = tag_of(s->hash);
        assert_int_equal(d->passed[pos], hops != 0);
        const bucket *bk = &d->index[((uint32_t)s->hash + hops) & mask];
        bool found = false;
        for (unsigned i = 0; i < CELLS; i++)
            found |= bk->tag[i] == tag && bk->seq[i] == seq;
        assert_true(found);
        for (uint32_t j = 0, b = (uint32_t)s->hash & mask; j < hops; j++, b = (b + 1) & mask)
            over[b]++;
        most = hops > most ? hops : most;
    }
    for (uint32_t b = 0; b < d->nbuckets; b++)
        assert_int_equal(d->over[b], over[b]);
    free(over);
    return most;
}

/* `steps` random steps on a window of max_entries ids and window_ns. */
static void run_model(uint32_t max_entries, int64_t window_ns, int steps, uint64_t seed)
{
    rng_state = seed;
    dedup *d;
    assert_int_equal(dedup_create(&d, window_ns, max_entries), 0);
    uint32_t slack = max_entries / 8 >= 64 ? max_entries / 8 : max_entries < 64 ? max_entries : 64;
    model m = {.max = max_entries, .cap = 1, .room = (uint64_t)max_entries + slack, .slack = slack};
    while (m.cap < 2 * (size_t)max_entries + slack + 128) /* the ring grows to 2 x the bound */
        m.cap <<= 1;
    m.e = calloc(m.cap, sizeof *m.e);
    m.where = malloc((size_t)steps * 64 * sizeof *m.where);
    assert_non_null(m.e);
    assert_non_null(m.where);
    memset(m.where, 0xff, (size_t)steps * 64 * sizeof *m.where);
    uint64_t next_c = 0, next_off = 0;
    int64_t now = 0, cutoff = INT64_MIN;
    uint8_t id[ID_MAX];
    for (int s = 0; s < steps; s++) {
        unsigned op = (unsigned)(rnd() % 100);
        if (op < 80) {
            /* A take of 1..64 ids: mostly new, some retries of recent ones. */
            unsigned n = 1 + (unsigned)(rnd() % 64);
            uint64_t take_first = next_off;
            for (unsigned k = 0; k < n; k++) {
                uint64_t c = next_c;
                if (next_c > 0 && rnd() % 4 == 0)
                    c = next_c - 1 -
                        rnd() % (next_c < 2u * max_entries ? next_c : 2u * max_entries);
                else
                    next_c++;
                size_t len = id_of(c, id);
                uint64_t orig = 0;
                int rc = dedup_check(d, dedup_id_hash(id, len), id, len, next_off, now, &orig);
                model_entry *e = model_find(&m, c);
                if (e) {
                    assert_int_equal(rc, 1);
                    assert_int_equal(orig, e->offset);
                } else {
                    assert_int_equal(rc, 0);
                    model_push(&m, c, next_off, now);
                    next_off++;
                }
            }
            /* Sometimes the take is not stored: its ids go (offsets reused). */
            if (rnd() % 8 == 0) {
                dedup_truncate(d, take_first);
                model_truncate(&m, take_first, cutoff);
                next_off = take_first;
            } else if (rnd() % 4 != 0) {
                /* Stored (sometimes acked only with the next take). */
                dedup_commit(d, next_off);
                m.commit_off = next_off;
            }
        } else if (op < 95) {
            now += (int64_t)(rnd() % (uint64_t)(window_ns / 4 + 1));
            dedup_expire(d, now);
            cutoff = now - window_ns;
            while (m.tail > m.head && at(&m, m.head)->time_ns < cutoff) {
                at(&m, m.head)->evictor = 0;
                m.head++;
                m.popped++;
            }
        } else {
            verify(d, &m, next_c);
            (void)assert_index_matches(d);
        }
    }
    verify(d, &m, next_c);
    (void)assert_index_matches(d);
    free(m.e);
    free(m.where);
    dedup_destroy(d);
}

/* Few ids per bucket on average, but small tables: full buckets happen. */
static void test_model_small_windows(void **state)
{
    (void)state;
    run_model(1, 10 * SEC, 3000, 1);
    run_model(7, 10 * SEC, 3000, 2);
    run_model(100, 10 * SEC, 20000, 3);
    run_model(100, 1000, 20000, 4); /* ids expire within a few steps */
    run_model(333, 10 * SEC, 20000, 5);
}

/* A window that grows from empty, evicts, empties on expiry and grows again. */
static void test_model_grow_and_release(void **state)
{
    (void)state;
    run_model(5000, 100 * SEC, 30000, 6);
    run_model(5000, 2 * SEC, 30000, 7);
}

/* Memory follows the ids held, not the bound: a large bound with a few
 * thousand ids takes at most about twice their slots (the ring doubles),
 * ~130 bytes a slot with the index. */
static void test_memory_proportional(void **state)
{
    (void)state;
    static const uint32_t bounds[] = {16384, 100000, 1u << 24};
    for (size_t b = 0; b < sizeof bounds / sizeof bounds[0]; b++) {
        dedup *d;
        assert_int_equal(dedup_create(&d, 100 * SEC, bounds[b]), 0);
        size_t empty = dedup_memory(d);
        uint8_t id[ID_MAX];
        for (uint64_t c = 0; c < 3000; c++) {
            size_t len = id_of(c, id);
            assert_int_equal(dedup_add(d, id, len, c, 0), 0);
        }
        assert_int_equal(dedup_count(d), 3000);
        assert_true(dedup_memory(d) - empty <= 2 * 3000 * 130);
        dedup_destroy(d);
    }
}

/* Ids are bytes: lengths 1..64, any byte values (0 too), none of them
 * special; every byte counts. */
static void fill(uint8_t *id, size_t len)
{
    for (size_t i = 0; i < len; i++)
        id[i] = (uint8_t)(i * 37 + len * 11);
}

/* A full window, then a take of more new ids than the ring's slack that is
 * not stored: every stored id is found again after the rollback (the ring
 * grew to keep what that take pushed out). Once takes are acked
 * (dedup_commit), a steady stream reuses the slots: no growth. */
/* A refused take whose later ids pushed its own earlier ids out of a full
 * window (review of ids7): after the truncate none of its ids is found
 * (a retry is stored, not acked as a duplicate of an offset never
 * written), and the stored ids it pushed out are all back. */
static void test_refused_take_own_evictions_dropped(void **state)
{
    (void)state;
    dedup *d;
    const uint32_t max = 100, stored = 50, take = 120; /* 70 pushed out: 50 stored, 20 its own */
    assert_int_equal(dedup_create(&d, 100 * SEC, max), 0);
    uint8_t id[ID_MAX];
    uint64_t orig;
    for (uint64_t c = 0; c < stored; c++) {
        size_t len = id_of(c, id);
        assert_int_equal(dedup_check(d, dedup_id_hash(id, len), id, len, c, 1, &orig), 0);
    }
    dedup_commit(d, stored);
    for (uint64_t c = stored; c < stored + take; c++) { /* one take, refused */
        size_t len = id_of(c, id);
        assert_int_equal(dedup_check(d, dedup_id_hash(id, len), id, len, c, 2, &orig), 0);
    }
    dedup_truncate(d, stored);
    for (uint64_t c = stored; c < stored + take; c++) {
        size_t len = id_of(c, id);
        assert_int_equal(dedup_find(d, id, len, &orig), 0);
    }
    assert_int_equal(dedup_count(d), stored);
    for (uint64_t c = 0; c < stored; c++) {
        size_t len = id_of(c, id);
        assert_int_equal(dedup_find(d, id, len, &orig), 1);
        assert_int_equal(orig, c);
    }
    assert_true(dedup_complete(d));
    /* The retry is new, stored this time, and found at its offsets. */
    for (uint64_t c = stored; c < stored + take; c++) {
        size_t len = id_of(c, id);
        assert_int_equal(dedup_check(d, dedup_id_hash(id, len), id, len, c, 3, &orig), 0);
    }
    dedup_commit(d, stored + take);
    for (uint64_t c = stored + take - max; c < stored + take; c++) {
        size_t len = id_of(c, id);
        assert_int_equal(dedup_find(d, id, len, &orig), 1);
        assert_int_equal(orig, c);
    }
    dedup_destroy(d);
}

static void test_refused_take_larger_than_slack(void **state)
{
    (void)state;
    dedup *d;
    const uint32_t max = 1000; /* slack 125 */
    assert_int_equal(dedup_create(&d, 100 * SEC, max), 0);
    uint8_t id[ID_MAX];
    uint64_t off = 0, orig;
    for (uint64_t c = 0; c < 3 * max; c++, off++) { /* acked takes of 100 */
        size_t len = id_of(c, id);
        assert_int_equal(dedup_check(d, dedup_id_hash(id, len), id, len, off, 1, &orig), 0);
        if (off % 100 == 99)
            dedup_commit(d, off + 1);
    }
    size_t steady = dedup_memory(d);
    uint64_t take_first = off;
    for (uint64_t c = 3 * max; c < 3 * max + 400; c++, off++) {
        size_t len = id_of(c, id);
        assert_int_equal(dedup_check(d, dedup_id_hash(id, len), id, len, off, 2, &orig), 0);
    }
    dedup_truncate(d, take_first);
    assert_int_equal(dedup_count(d), max);
    for (uint64_t c = 2 * max; c < 3 * max; c++) {
        size_t len = id_of(c, id);
        assert_int_equal(dedup_find(d, id, len, &orig), 1);
        assert_int_equal(orig, c);
    }
    /* Acked from now on: ten windows' worth, and the memory stays put. */
    off = take_first;
    size_t grown = dedup_memory(d);
    assert_true(grown > steady);
    for (uint64_t c = 5 * max; c < 15 * max; c++, off++) {
        size_t len = id_of(c, id);
        assert_int_equal(dedup_check(d, dedup_id_hash(id, len), id, len, off, 3, &orig), 0);
        if (off % 100 == 99)
            dedup_commit(d, off + 1);
    }
    assert_int_equal(dedup_memory(d), grown);
    assert_true(dedup_complete(d));
    /* A take that pushes out more than twice the bound's room: the ring
     * stops at twice the bound. Stored, nothing is lost; refused, the
     * window says it is incomplete (never saved, rebuilt from the log at
     * the next start). */
    for (int refused = 0; refused < 2; refused++) {
        take_first = off;
        for (uint64_t c = (20 + 5 * (uint64_t)refused) * max;
             c < (23 + 5 * (uint64_t)refused) * max; c++, off++) {
            size_t len = id_of(c, id);
            assert_int_equal(dedup_check(d, dedup_id_hash(id, len), id, len, off, 4, &orig), 0);
        }
        assert_true(dedup_memory(d) <= 2 * max * (DEDUP_SLOT_BYTES + 64) + 2 * grown);
        if (refused) {
            dedup_truncate(d, take_first);
            assert_false(dedup_complete(d));
        } else {
            dedup_commit(d, off);
            assert_true(dedup_complete(d));
        }
    }
    dedup_destroy(d);
}

/* The ring grows in place (dedup.c's grow_to) wherever its head is: its
 * used region wrapped past the end or not, the popped slots on either side
 * of it. For every phase, a full window of acked takes, then takes not yet
 * stored that push out more than the slack (the ring grows past the bound,
 * once or several times) and are refused: every stored id is found again
 * with its offset, none of the refused ones is, and the window still
 * admits and evicts correctly afterwards. */
static void test_refused_takes_grow_wrapped_ring(void **state)
{
    (void)state;
    const uint32_t max = 1000; /* slack 125: the ring holds 1125 below twice the bound */
    const uint32_t takes[] = {130, 400, 850}; /* 1000 + 850 < twice the bound */
    uint8_t id[ID_MAX];
    uint64_t orig;
    for (uint32_t phase = 0; phase < 1125; phase += 61) {
        for (size_t t = 0; t < sizeof takes / sizeof *takes; t++) {
            dedup *d;
            assert_int_equal(dedup_create(&d, 100 * SEC, max), 0);
            uint64_t off = 0, c = 0;
            for (; c < 2 * max + phase; c++, off++) {
                size_t len = id_of(c, id);
                assert_int_equal(dedup_check(d, dedup_id_hash(id, len), id, len, off, 1, &orig), 0);
                if (off % 50 == 49)
                    dedup_commit(d, off + 1);
            }
            dedup_commit(d, off);
            uint64_t stored_end = c, take_first = off;
            /* Two takes not stored: the one being written, the one ahead. */
            for (uint64_t k = 0; k < takes[t]; k++, c++, off++) {
                size_t len = id_of(c, id);
                assert_int_equal(dedup_check(d, dedup_id_hash(id, len), id, len, off, 2, &orig), 0);
            }
            dedup_truncate(d, take_first);
            assert_int_equal(dedup_count(d), max);
            assert_true(dedup_complete(d));
            for (uint64_t s = stored_end - max; s < stored_end; s++) {
                size_t len = id_of(s, id);
                assert_int_equal(dedup_find(d, id, len, &orig), 1);
                assert_int_equal(orig, s);
            }
            for (uint64_t s = stored_end; s < c; s++) {
                size_t len = id_of(s, id);
                assert_int_equal(dedup_find(d, id, len, &orig), 0);
            }
            /* Afterwards: retries of the newest stored ids are duplicates,
             * new ids are admitted at the refused take's offsets. */
            off = take_first;
            for (uint64_t s = stored_end - 10; s < stored_end + 2 * max; s++) {
                size_t len = id_of(s, id);
                int rc = dedup_check(d, dedup_id_hash(id, len), id, len, off, 3, &orig);
                if (s < stored_end) {
                    assert_int_equal(rc, 1);
                    assert_int_equal(orig, s);
                } else {
                    assert_int_equal(rc, 0);
                    off++;
                }
            }
            dedup_commit(d, off);
            assert_int_equal(dedup_count(d), max);
            dedup_destroy(d);
        }
    }
}

/* Ids longer than a slot holds (36 bytes) arrive only after a long run of
 * short ones: the ring's tails are allocated then, whatever its state (full,
 * wrapped, with popped slots a refused take gives back). Ids that differ
 * only past byte 36 are different ids. */
static void test_first_long_ids_late(void **state)
{
    (void)state;
    dedup *d;
    const uint32_t max = 100;
    assert_int_equal(dedup_create(&d, 100 * SEC, max), 0);
    uint8_t id[ID_MAX];
    uint64_t off = 0, orig;
    for (uint64_t c = 0; c < 1000; c++, off++) {
        memset(id, 'a', 8);
        memcpy(id, &c, sizeof c);
        assert_int_equal(dedup_check(d, dedup_id_hash(id, 8), id, 8, off, 1, &orig), 0);
        dedup_commit(d, off + 1);
    }
    /* A take of long ids, not stored: the short ones come back (a take
     * of up to the bound: the ring grows to twice it at most). */
    uint64_t take_first = off;
    for (uint64_t c = 0; c < 90; c++, off++) {
        memset(id, 'b', ID_MAX);
        memcpy(id + 50, &c, sizeof c); /* only the tail differs */
        assert_int_equal(dedup_check(d, dedup_id_hash(id, 60), id, 60, off, 2, &orig), 0);
    }
    dedup_truncate(d, take_first);
    for (uint64_t c = 900; c < 1000; c++) {
        memset(id, 'a', 8);
        memcpy(id, &c, sizeof c);
        assert_int_equal(dedup_find(d, id, 8, &orig), 1);
        assert_int_equal(orig, c);
    }
    /* Stored this time: each found by its whole id, its tail included. */
    off = take_first;
    for (uint64_t c = 0; c < 150; c++, off++) {
        memset(id, 'b', ID_MAX);
        memcpy(id + 50, &c, sizeof c);
        assert_int_equal(dedup_check(d, dedup_id_hash(id, 60), id, 60, off, 3, &orig), 0);
    }
    dedup_commit(d, off);
    for (uint64_t c = 50; c < 150; c++) {
        memset(id, 'b', ID_MAX);
        memcpy(id + 50, &c, sizeof c);
        assert_int_equal(dedup_find(d, id, 60, &orig), 1);
        assert_int_equal(orig, take_first + c);
        size_t len;
        uint8_t back[ID_MAX];
        uint64_t o;
        int64_t t;
        dedup_entry(d, (size_t)(c - 50), back, &len, &o, &t);
        assert_int_equal(len, 60);
        assert_memory_equal(back, id, 60);
        assert_int_equal(o, take_first + c);
        id[59] ^= 1; /* the last byte counts */
        assert_int_equal(dedup_find(d, id, 60, &orig), 0);
    }
    assert_true(dedup_complete(d));
    dedup_destroy(d);
}

/* Ids that share their hash (forced: dedup_check takes it) are told apart
 * by their bytes alone: inline ones and the tails of long ones (past byte
 * 36), also after the ring grew past the bound (the tails moved) and after
 * a refused take gave popped slots back. */
static void test_same_hash_told_apart_by_bytes(void **state)
{
    (void)state;
    enum { N = 6 };
    static const size_t lens[N] = {60, 60, 60, 59, 20, 20};
    uint8_t ids[N][ID_MAX];
    for (int i = 0; i < N; i++)
        memset(ids[i], 'u', ID_MAX);
    ids[1][59] ^= 1; /* the tail's last byte */
    ids[2][10] ^= 1; /* an inline byte */
    ids[5][19] ^= 1;
    const uint64_t h = 42; /* one bucket, one tag for all */
    dedup *d;
    const uint32_t max = 100;
    assert_int_equal(dedup_create(&d, 100 * SEC, max), 0);
    uint64_t off = 0, orig;
    for (int i = 0; i < N; i++, off++)
        assert_int_equal(dedup_check(d, h, ids[i], lens[i], off, 1, &orig), 0);
    dedup_commit(d, off);
    for (int i = 0; i < N; i++) {
        assert_int_equal(dedup_check(d, h, ids[i], lens[i], 1000, 1, &orig), 1);
        assert_int_equal(orig, (uint64_t)i);
    }
    /* Fill the window (acked), so that the six are the oldest... */
    uint8_t id[ID_MAX];
    for (uint64_t c = 0; c < max - N; c++, off++) {
        size_t len = id_of(c, id);
        assert_int_equal(dedup_check(d, dedup_id_hash(id, len), id, len, off, 2, &orig), 0);
    }
    dedup_commit(d, off);
    /* ... then a take not stored pushes them out, the ring growing past
     * the bound, and is refused: they come back, still told apart. */
    uint64_t take_first = off;
    for (uint64_t c = 1000; c < 1000 + max; c++, off++) {
        size_t len = id_of(c, id);
        assert_int_equal(dedup_check(d, dedup_id_hash(id, len), id, len, off, 3, &orig), 0);
    }
    dedup_truncate(d, take_first);
    assert_true(dedup_complete(d));
    (void)assert_index_matches(d);
    for (int i = 0; i < N; i++) {
        assert_int_equal(dedup_check(d, h, ids[i], lens[i], take_first, 3, &orig), 1);
        assert_int_equal(orig, (uint64_t)i);
    }
    uint8_t other[ID_MAX];
    memcpy(other, ids[0], ID_MAX);
    other[40] ^= 1; /* another tail: new */
    assert_int_equal(dedup_check(d, h, other, 60, take_first, 3, &orig), 0);
    dedup_destroy(d);
}

/* A growth past the bound that fails at any of its steps leaves the window
 * as it was: every stored id found at its offset; the take not stored
 * that needed the room then costs stored ids their place, and a refusal
 * says so (dedup_complete false) exactly when that happened. */
static void test_growth_failures(void **state)
{
    (void)state;
    const uint32_t max = 200; /* slack 64 */
    uint8_t id[ID_MAX];
    for (int step = 1; step <= 5; step++) {
        dedup *d;
        assert_int_equal(dedup_create(&d, 100 * SEC, max), 0);
        uint64_t off = 0, orig;
        for (uint64_t c = 0; c < 3 * max; c++, off++) { /* long ids too: longs[] */
            size_t len = id_of(c, id);
            assert_int_equal(dedup_check(d, dedup_id_hash(id, len), id, len, off, 1, &orig), 0);
            dedup_commit(d, off + 1);
        }
        size_t before = dedup_memory(d);
        uint64_t take_first = off;
        fail_at = step; /* the first growth past the bound fails at this call */
        for (uint64_t c = 5000; c < 5000 + max / 2; c++, off++) {
            size_t len = id_of(c, id);
            assert_int_equal(dedup_check(d, dedup_id_hash(id, len), id, len, off, 2, &orig), 0);
        }
        bool failed = fail_at == 0;
        fail_at = 0;
        for (uint64_t c = 5000; c < 5000 + max / 2; c++) { /* the take's ids are all there */
            size_t len = id_of(c, id);
            assert_int_equal(dedup_find(d, id, len, &orig), 1);
            assert_int_equal(orig, take_first + (c - 5000));
        }
        dedup_truncate(d, take_first);
        size_t found = 0;
        for (uint64_t c = 2 * max; c < 3 * max; c++) {
            size_t len = id_of(c, id);
            if (dedup_find(d, id, len, &orig)) {
                assert_int_equal(orig, c);
                found++;
            }
        }
        if (step <= 4) {
            assert_true(failed);
            assert_false(dedup_complete(d)); /* stored ids were lost to the refused take */
            assert_true(found < max);
        } else {
            assert_true(dedup_memory(d) > before); /* four calls: the fifth never came */
            assert_true(dedup_complete(d));
            assert_int_equal(found, max);
        }
        dedup_destroy(d);
    }
}

static void test_lengths_and_bytes(void **state)
{
    (void)state;
    dedup *d;
    assert_int_equal(dedup_create(&d, 10 * SEC, 1000), 0);
    uint8_t id[ID_MAX + 1];
    for (size_t len = 1; len <= ID_MAX; len++) {
        fill(id, len);
        assert_int_equal(dedup_add(d, id, len, len, 0), 0);
    }
    for (size_t len = 1; len <= ID_MAX; len++) {
        uint64_t off;
        fill(id, len);
        assert_int_equal(dedup_find(d, id, len, &off), 1);
        assert_int_equal(off, len);
        for (size_t i = 0; i < len; i++) {
            id[i] ^= 0x80;
            assert_int_equal(dedup_find(d, id, len, &off), 0);
            id[i] ^= 0x80;
        }
    }
    uint64_t off;
    assert_int_equal(dedup_find(d, id, 0, &off), 0);
    assert_int_equal(dedup_find(d, id, ID_MAX + 1, &off), 0);
    assert_int_equal(dedup_add(d, id, ID_MAX + 1, 0, 0), PB_EINVAL);
    dedup_destroy(d);
}

/* A UUID's text (36 bytes) fits a slot: a window of them takes no more
 * memory than one of short ids (no tails allocated), one of 37-byte ids
 * does; UUIDs that differ in their last byte alone are different ids, and
 * each comes back whole. Bounds of dedup_create: 1 to DEDUP_MAX_ENTRIES. */
static void test_uuid_ids_inline(void **state)
{
    (void)state;
    const uint32_t max = 200;
    size_t lens[3] = {8, 36, 37}, mem[3];
    for (int v = 0; v < 3; v++) {
        dedup *d;
        assert_int_equal(dedup_create(&d, 100 * SEC, max), 0);
        char id[64];
        for (uint32_t k = 0; k < max; k++) {
            /* 8f2c41d0-7e3b-4c5a-9d1e-0000000000kk style: the counter last */
            snprintf(id, sizeof id, "8f2c41d0-7e3b-4c5a-9d1e-%012u%s", k, v == 2 ? "x" : "");
            const uint8_t *p = (const uint8_t *)id + (v == 0 ? 28 : 0);
            assert_int_equal(strlen(id) - (v == 0 ? 28 : 0), lens[v]);
            uint64_t orig;
            assert_int_equal(dedup_check(d, dedup_id_hash(p, lens[v]), p, lens[v], k, 1, &orig), 0);
        }
        dedup_commit(d, max);
        mem[v] = dedup_memory(d);
        if (v == 1) {
            for (uint32_t k = 0; k < max; k++) {
                snprintf(id, sizeof id, "8f2c41d0-7e3b-4c5a-9d1e-%012u", k);
                uint64_t off;
                assert_int_equal(dedup_find(d, (const uint8_t *)id, 36, &off), 1);
                assert_int_equal(off, k);
                size_t len;
                uint8_t back[EVENT_ID_MAX_BYTES];
                int64_t t;
                dedup_entry(d, k, back, &len, &off, &t);
                assert_int_equal(len, 36);
                assert_memory_equal(back, id, 36);
            }
            /* k = 7 with its last digit changed: no id stored has it */
            snprintf(id, sizeof id, "8f2c41d0-7e3b-4c5a-9d1e-%012u", 7u);
            id[35] = 'z';
            uint64_t off;
            assert_int_equal(dedup_find(d, (const uint8_t *)id, 36, &off), 0);
        }
        dedup_destroy(d);
    }
    assert_int_equal(mem[1], mem[0]);
    assert_true(mem[2] >= mem[0] + (size_t)max * DEDUP_LONG_ID_BYTES);
    dedup *d;
    assert_int_equal(dedup_create(&d, SEC, DEDUP_MAX_ENTRIES + 1u), PB_EINVAL);
    assert_int_equal(dedup_create(&d, SEC, DEDUP_MAX_ENTRIES), 0);
    dedup_destroy(d);
}

/* Ids that all share one hash (forced) in a window at the largest bound:
 * each passes hundreds of full buckets (hops well past 255, kept whole in
 * the slot's 24 bits); a refused take's ids leave the window, expiry pops
 * the oldest (taking them off the counts of the buckets they passed), and
 * every id left is still found by its bytes, every id gone is not. */
static void test_deep_hops(void **state)
{
    (void)state;
    enum { N = 3000, TAKE = 500 };
    const uint64_t h = 0x5eed5eed5eed5eedull;
    dedup *d;
    assert_int_equal(dedup_create(&d, 100 * SEC, DEDUP_MAX_ENTRIES), 0);
    uint8_t id[16];
    uint64_t orig;
    for (uint32_t k = 0; k < N; k++) {
        memset(id, 'h', sizeof id);
        memcpy(id, &k, sizeof k);
        assert_int_equal(dedup_check(d, h, id, sizeof id, k, k < N / 2 ? 1 : 2, &orig), 0);
    }
    dedup_commit(d, N);
    assert_true(assert_index_matches(d) > 255); /* hops past a byte */
    /* A take of TAKE more, refused: they leave; the N stay. */
    for (uint32_t k = N; k < N + TAKE; k++) {
        memset(id, 'h', sizeof id);
        memcpy(id, &k, sizeof k);
        assert_int_equal(dedup_check(d, h, id, sizeof id, k, 3, &orig), 0);
    }
    dedup_truncate(d, N);
    assert_int_equal(dedup_count(d), N);
    (void)assert_index_matches(d);
    /* The first half expires (receive time 1 of a 100 s window). */
    dedup_expire(d, 100 * SEC + 2);
    assert_int_equal(dedup_count(d), N / 2);
    (void)assert_index_matches(d);
    for (uint32_t k = 0; k < N + TAKE; k++) {
        memset(id, 'h', sizeof id);
        memcpy(id, &k, sizeof k);
        int in = k >= N / 2 && k < N;
        assert_int_equal(dedup_check(d, h, id, sizeof id, N + k, 4, &orig), in);
        if (in)
            assert_int_equal(orig, k);
    }
    assert_true(dedup_complete(d));
    dedup_destroy(d);
}

/* dedup_admit_events' fill: which events it was called for, in order, and
 * their duplicate flag and offset at the time. */
enum { SEEN_MAX = 300 };
static const pub_event *seen[SEEN_MAX];
static bool seen_dup[SEEN_MAX];
static uint64_t seen_off[SEEN_MAX];
static uint32_t seen_n;

static void note_event(void *ctx, pub_event *ev)
{
    (void)ctx;
    assert_true(seen_n < SEEN_MAX);
    seen[seen_n] = ev;
    seen_off[seen_n] = ev->offset;
    seen_dup[seen_n++] = ev->duplicate;
}

/* dedup_admit_events against dedup_check one event at a time, on twin
 * windows: takes of 0..300 events in a shuffled order
 * (the part's index list), some without an id, some repeating an id of the same take or of
 * recent ones, half with ingest's hash and half without; the same flags,
 * offsets and window contents, also past the bound (eviction) and across
 * index growth; the fill is called for every event, in the part's order,
 * each right after its own check (its flag and offset set). */
static void test_check_events_as_one_by_one(void **state)
{
    (void)state;
    rng_state = 99;
    dedup *a, *b;
    assert_int_equal(dedup_create(&a, 10 * SEC, 2000), 0);
    assert_int_equal(dedup_create(&b, 10 * SEC, 2000), 0);
    enum { TAKE = SEEN_MAX };
    static uint8_t ids[TAKE][ID_MAX];
    static pub_event ev[TAKE];
    static uint32_t idx[TAKE];
    uint64_t next_c = 0, next_off = 0;
    for (int t = 0; t < 200; t++) {
        uint32_t n = (uint32_t)(rnd() % (TAKE + 1));
        for (uint32_t k = 0; k < n; k++) {
            idx[k] = k;
            /* Stale flag and offset: the check sets both. */
            ev[k] = (pub_event){.duplicate = 1, .offset = UINT64_MAX};
            unsigned kind = (unsigned)(rnd() % 8);
            if (kind == 0)
                continue; /* no id */
            uint64_t c = next_c++;
            if (kind == 1 && next_c > 1)
                c = next_c - 2 - rnd() % (next_c - 1 < 3000 ? next_c - 1 : 3000); /* a retry */
            size_t len = id_of(c, ids[k]);
            ev[k].id = ids[k];
            ev[k].id_len = (uint8_t)len;
            if (rnd() % 2)
                ev[k].id_hash = dedup_id_hash(ids[k], len);
        }
        for (uint32_t k = n; k > 1; k--) { /* the part's order is its list's */
            uint32_t j = (uint32_t)(rnd() % k), x = idx[k - 1];
            idx[k - 1] = idx[j];
            idx[j] = x;
        }
        /* One by one on a. */
        uint64_t off = next_off, want_dup[TAKE];
        bool want_flag[TAKE];
        for (uint32_t k = 0; k < n; k++) {
            const pub_event *e = &ev[idx[k]];
            want_flag[idx[k]] = false;
            if (e->id_len == 0) {
                off++;
                continue;
            }
            uint64_t orig = 0;
            int rc = dedup_check(a, dedup_id_hash(e->id, e->id_len), e->id, e->id_len, off,
                                 (int64_t)t, &orig);
            assert_true(rc == 0 || rc == 1);
            if (rc == 1) {
                want_flag[idx[k]] = true;
                want_dup[idx[k]] = orig;
            } else {
                off++;
            }
        }
        /* Batched on b, with a fill that notes each event as it comes. */
        seen_n = 0;
        uint32_t stored = dedup_admit_events(b, ev, idx, n, next_off, (int64_t)t, note_event, NULL);
        assert_int_equal(stored, off - next_off);
        assert_int_equal(seen_n, n);
        uint32_t dups = 0;
        for (uint32_t k = 0; k < n; k++) {
            assert_ptr_equal(seen[k], &ev[idx[k]]);
            assert_int_equal(seen_dup[k], want_flag[idx[k]]);
            assert_int_equal(ev[idx[k]].duplicate, want_flag[idx[k]]);
            if (want_flag[idx[k]]) {
                assert_int_equal(seen_off[k], want_dup[idx[k]]);
                dups++;
            }
        }
        assert_int_equal(dups, n - stored);
        next_off = off;
        assert_int_equal(dedup_count(a), dedup_count(b));
    }
    /* Every id ever numbered: found in both, at the same offset, or in neither. */
    uint8_t id[ID_MAX];
    for (uint64_t c = 0; c < next_c; c++) {
        size_t len = id_of(c, id);
        uint64_t oa = 0, ob = 0;
        int fa = dedup_find(a, id, len, &oa), fb = dedup_find(b, id, len, &ob);
        assert_int_equal(fa, fb);
        if (fa)
            assert_int_equal(oa, ob);
    }
    dedup_destroy(a);
    dedup_destroy(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_small_windows),
        cmocka_unit_test(test_model_grow_and_release),
        cmocka_unit_test(test_memory_proportional),
        cmocka_unit_test(test_refused_take_larger_than_slack),
        cmocka_unit_test(test_refused_take_own_evictions_dropped),
        cmocka_unit_test(test_refused_takes_grow_wrapped_ring),
        cmocka_unit_test(test_first_long_ids_late),
        cmocka_unit_test(test_same_hash_told_apart_by_bytes),
        cmocka_unit_test(test_growth_failures),
        cmocka_unit_test(test_lengths_and_bytes),
        cmocka_unit_test(test_uuid_ids_inline),
        cmocka_unit_test(test_deep_hops),
        cmocka_unit_test(test_check_events_as_one_by_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
