/*
 * test_mirror_order - the rule that keeps a mirrored partition in offset
 * order when an acknowledgement names a copy stored out of order
 * (mirror_order.c, FORMAT.md E.4 item 4), without NATS: a mirror with two
 * partitions and a ring of acknowledged slots, as the ack thread leaves it.
 *
 * Covered: acknowledgements in stream order move each partition's
 * seq_last; one whose sequence lies before its partition's newest
 * acknowledged message (a "duplicate" of a copy stored after the stream's
 * tail was read) fails the slot, names both offsets in the failure, and
 * sets where the next scan reads from (the lowest such sequence); another
 * partition's order is its own; the stray list keeps which strays are
 * order strays.
 */
#include "mirror_internal.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

typedef struct fixture {
    mpart a, b;
    mpart *parts[2];
    mirror m;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->a.name, sizeof f->a.name, "sensors-a");
    snprintf(f->b.name, sizeof f->b.name, "sensors-b");
    f->parts[0] = &f->a;
    f->parts[1] = &f->b;
    f->m.parts = f->parts;
    f->m.n_parts = 2;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    free(f->m.strays);
    free(f);
    return 0;
}

static slot acked(uint32_t part, uint64_t offset, uint64_t seq)
{
    return (slot){.part = part, .offset = offset, .seq = seq, .state = SLOT_ACKED};
}

static void test_in_order_moves_seq_last(void **state)
{
    fixture *f = *state;
    slot s[] = {acked(0, 0, 10), acked(1, 0, 11), acked(0, 1, 12), acked(1, 1, 20)};
    for (size_t i = 0; i < sizeof s / sizeof *s; i++) {
        assert_true(mirror_ack_in_order(&f->m, &s[i]));
        assert_int_equal(s[i].state, SLOT_ACKED);
    }
    assert_int_equal(f->a.seq_last, 12);
    assert_int_equal(f->b.seq_last, 20);
    assert_false(f->m.failed);
    assert_int_equal(f->m.order_from, 0);
}

static void test_copy_before_newest_ack_fails(void **state)
{
    fixture *f = *state;
    /* sensors-b:3000 resent and stored at 500; sensors-b:3001 comes back
     * as a duplicate of a copy at 400 (stored before it). */
    slot first = acked(1, 3000, 500);
    assert_true(mirror_ack_in_order(&f->m, &first));
    f->b.cursor = 3001;
    slot late = acked(1, 3001, 400);
    assert_false(mirror_ack_in_order(&f->m, &late));
    assert_int_equal(late.state, SLOT_FAILED);
    assert_true(f->m.failed);
    assert_int_equal(f->m.fail_part, 1);
    assert_int_equal(f->m.fail_offset, 3001);
    assert_int_equal(f->m.order_from, 400);
    assert_int_equal(f->b.seq_last, 500); /* unchanged */
    assert_non_null(strstr(f->m.fail_why, "sequence 400"));
    assert_non_null(strstr(f->m.fail_why, "sensors-b:3000 at sequence 500"));
    assert_int_equal(atomic_load(&f->m.counters.failed), 1);

    /* A lower one lowers where the scan starts; the first reason stays. */
    slot lower = acked(1, 3002, 390);
    assert_false(mirror_ack_in_order(&f->m, &lower));
    assert_int_equal(f->m.order_from, 390);
    assert_int_equal(f->m.fail_offset, 3001);
    /* The other partition is not concerned. */
    slot other = acked(0, 7, 450);
    assert_true(mirror_ack_in_order(&f->m, &other));
    assert_int_equal(f->a.seq_last, 450);
}

static void test_equal_sequence_is_not_in_order(void **state)
{
    fixture *f = *state;
    slot s1 = acked(0, 5, 100), s2 = acked(0, 6, 100);
    assert_true(mirror_ack_in_order(&f->m, &s1));
    assert_false(mirror_ack_in_order(&f->m, &s2));
}

static void test_stray_list_keeps_kind(void **state)
{
    fixture *f = *state;
    mirror_stray_add(&f->m, &f->a, 9, 300, true);
    mirror_stray_add(&f->m, &f->b, 4, 301, false);
    assert_int_equal(f->m.n_strays, 2);
    assert_true(f->m.strays[0].order);
    assert_false(f->m.strays[1].order);
    assert_ptr_equal(f->m.strays[1].p, &f->b);
    assert_int_equal(f->m.strays[1].seq, 301);
    assert_false(f->m.strays_lost);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_in_order_moves_seq_last, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy_before_newest_ack_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_equal_sequence_is_not_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stray_list_keeps_kind, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
