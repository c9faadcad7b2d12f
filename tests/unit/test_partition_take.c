/*
 * test_partition_take - the bound on one take of a partition's queue
 * (PARTITION_TAKE_EVENTS, partition.h): partition_detach_take takes whole
 * parts, in queue order, while the take stays within the cap (counting the
 * events admitted ahead for it), at least one part however large; the rest
 * stays queued. And through the real writer (the partition harness): parts
 * queued behind a held fdatasync beyond the cap go into a second take,
 * every event stored once, the offsets in submission order.
 */
#include "partharness.h"
#include "partition.h"
#include "partition_internal.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

enum { NPARTS = 8 };

/* A queue of parts with the given event counts (no batch: detach_take
 * reads only count and next). */
static void queue_of(partition *p, pub_part *parts, const uint32_t *counts, size_t n)
{
    memset(parts, 0, n * sizeof *parts);
    p->head = p->tail = NULL;
    for (size_t i = 0; i < n; i++) {
        parts[i].count = counts[i];
        if (p->tail)
            p->tail->next = &parts[i];
        else
            p->head = &parts[i];
        p->tail = &parts[i];
    }
}

static size_t events_of(const pub_part *list, size_t *nparts)
{
    size_t n = 0;
    *nparts = 0;
    for (; list; list = list->next, (*nparts)++)
        n += list->count;
    return n;
}

static void test_detach_stops_at_the_cap(void **state)
{
    (void)state;
    const uint32_t cap = PARTITION_TAKE_EVENTS;
    partition p;
    memset(&p, 0, sizeof p);
    pub_part parts[NPARTS];
    /* cap/4 each: four parts fill a take exactly, the fifth waits. */
    uint32_t counts[] = {cap / 4, cap / 4, cap / 4, cap / 4, cap / 4, 1, cap / 2, cap / 4};
    queue_of(&p, parts, counts, NPARTS);
    size_t n, np;
    pub_part *t = partition_detach_take(&p, 0);
    assert_ptr_equal(t, &parts[0]);
    assert_int_equal(events_of(t, &np), cap);
    assert_int_equal(np, 4);
    assert_ptr_equal(p.head, &parts[4]);
    assert_ptr_equal(p.tail, &parts[7]);
    /* Next: cap/4 + 1 + cap/2 fit; cap/4 more would pass the cap. */
    t = partition_detach_take(&p, 0);
    assert_ptr_equal(t, &parts[4]);
    n = events_of(t, &np);
    assert_int_equal(n, cap / 4 + 1 + cap / 2);
    assert_int_equal(np, 3);
    /* The last, and then nothing. */
    t = partition_detach_take(&p, 0);
    assert_ptr_equal(t, &parts[7]);
    assert_null(t->next);
    assert_null(p.head);
    assert_null(p.tail);
    assert_null(partition_detach_take(&p, 0));
}

/* A part larger than the cap is a take of its own (never split: it is one
 * ack); with events admitted ahead, it waits for the next take. */
static void test_large_part_alone_and_ahead_counts(void **state)
{
    (void)state;
    const uint32_t cap = PARTITION_TAKE_EVENTS;
    partition p;
    memset(&p, 0, sizeof p);
    pub_part parts[3];
    uint32_t counts[] = {10, 3 * cap, 10};
    queue_of(&p, parts, counts, 3);
    size_t np;
    pub_part *t = partition_detach_take(&p, 0);
    assert_int_equal(events_of(t, &np), 10); /* the large one does not join */
    /* cap - 5 admitted ahead: the large part waits, and so would a small
     * one that passes the cap. */
    assert_null(partition_detach_take(&p, cap - 5));
    assert_ptr_equal(p.head, &parts[1]);
    t = partition_detach_take(&p, 0);
    assert_ptr_equal(t, &parts[1]);
    assert_int_equal(events_of(t, &np), 3 * cap);
    assert_int_equal(np, 1);
    /* 10 admitted ahead: a part of 10 still fits; at the cap, nothing. */
    assert_null(partition_detach_take(&p, cap));
    t = partition_detach_take(&p, 10);
    assert_ptr_equal(t, &parts[2]);
    assert_null(p.head);
}

/* Through the writer: a held sync, then more than a take's worth of parts
 * queued behind it: two takes (two syncs), each within the cap, every
 * event acked once, offsets contiguous in submission order. */
static void test_writer_splits_a_long_queue(void **state)
{
    ph_fixture *f = *state;
    ph_harness *h = &f->h;
    partition *p = ph_open(f);
    free(ph_publish(f, p, 1, 0));
    ph_batch *a = ph_batch_new(h, p, 1, 1);
    ph_submit_held(h, p, a);
    /* MAX_EVENTS-event batches: (cap / MAX_EVENTS) fill a take, 8 more
     * go to the next one. */
    enum { PER_TAKE = PARTITION_TAKE_EVENTS / MAX_EVENTS, N = PER_TAKE + 8 };
    ph_batch **more = calloc(N, sizeof *more);
    assert_non_null(more);
    for (size_t i = 0; i < N; i++) {
        more[i] = ph_batch_new(h, p, MAX_EVENTS, 2 + i * MAX_EVENTS); /* seq = offset */
        partition_submit(p, &more[i]->part);
    }
    size_t base = ph_syncs_now(h);
    ph_gate(h, false);
    ph_wait_done(h, 2 + N);
    /* A's sync (held), then one per take of the queue. */
    assert_int_equal(ph_syncs_now(h) - base, 3);
    assert_int_equal(a->part.status, 0);
    uint64_t next = 2;
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(more[i]->part.status, 0);
        for (uint32_t k = 0; k < more[i]->part.count; k++)
            assert_int_equal(more[i]->ev[k].offset, next++);
        /* The first PER_TAKE parts were acked by the first take's sync,
         * the rest by the second's. */
        if (i > 0 && i != PER_TAKE)
            assert_int_equal(more[i]->syncs_at_done, more[i - 1]->syncs_at_done);
        else if (i == PER_TAKE)
            assert_true(more[i]->syncs_at_done > more[i - 1]->syncs_at_done);
    }
    assert_int_equal(partition_end_offset(p), next);
    assert_int_equal(partition_close(p), 0);
    ph_check_files(f, next);
    for (size_t i = 0; i < N; i++)
        free(more[i]);
    free(more);
    free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detach_stops_at_the_cap),
        cmocka_unit_test(test_large_part_alone_and_ahead_counts),
        cmocka_unit_test_setup_teardown(test_writer_splits_a_long_queue, ph_setup, ph_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
