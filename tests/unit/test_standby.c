/*
 * Unit tests for server/standby.c, the primary's record of its hot
 * standby's durable positions (synchronous mode): asynchronous mode makes
 * nothing; a position covers the offsets below it, per partition, never
 * moving back, until the standby leaves (reset); an invalid partition name
 * is ignored; every ack calls the
 * registered notify; local acknowledgements are counted. Single-threaded.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "standby.h"

#include <stdio.h>
#include <string.h>

static void test_async_makes_nothing(void **state)
{
    (void)state;
    standby *s = (standby *)1;
    assert_int_equal(standby_create(&s, 0, 1000, STANDBY_REFUSE), 0);
    assert_null(s);
    standby_destroy(NULL);
    standby_set_notify(NULL, NULL, NULL);
    standby_ack(NULL, "events", 6, 5); /* NULL-safe */
}

static void test_positions_cover_below(void **state)
{
    (void)state;
    standby *s;
    assert_int_equal(standby_create(&s, 1, 250, STANDBY_LOCAL), 0);
    assert_non_null(s);
    assert_int_equal(standby_timeout_ms(s), 250);
    assert_int_equal(standby_policy(s), STANDBY_LOCAL);
    assert_false(standby_covers(s, "events", 0)); /* nothing acked yet */
    standby_ack(s, "events", 6, 10);
    assert_true(standby_covers(s, "events", 9));
    assert_false(standby_covers(s, "events", 10));
    assert_false(standby_covers(s, "other", 0)); /* per partition */
    standby_ack(s, "events", 6, 4); /* an older ack never moves it back */
    assert_true(standby_covers(s, "events", 9));
    standby_ack(s, "eventsX", 6, 20); /* len: the name is "events" */
    assert_true(standby_covers(s, "events", 19));
    standby_ack(s, ".hidden", 7, 3); /* not a partition name: ignored */
    assert_false(standby_covers(s, ".hidden", 0));
    standby_reset(s); /* the standby left: nothing is covered any more */
    assert_false(standby_covers(s, "events", 0));
    standby_ack(s, "events", 6, 2);
    assert_true(standby_covers(s, "events", 1));
    standby_destroy(s);
}

static void count_notify(void *ctx)
{
    (*(int *)ctx)++;
}

static void test_notify_and_local_count(void **state)
{
    (void)state;
    standby *s;
    int calls = 0;
    assert_int_equal(standby_create(&s, 1, 100, STANDBY_REFUSE), 0);
    standby_set_notify(s, count_notify, &calls);
    for (int i = 1; i <= 40; i++) { /* more partitions than the table's first size */
        char name[16];
        int n = snprintf(name, sizeof name, "p%d", i);
        standby_ack(s, name, (size_t)n, (uint64_t)i);
    }
    assert_int_equal(calls, 40);
    assert_true(standby_covers(s, "p40", 39));
    assert_false(standby_covers(s, "p40", 40));
    standby_set_notify(s, NULL, NULL);
    standby_ack(s, "p1", 2, 7);
    assert_int_equal(calls, 40);
    assert_int_equal(standby_local_acks(s), 0);
    standby_note_local(s, "p2");
    standby_note_local(s, "p2");
    assert_int_equal(standby_local_acks(s), 2);
    standby_destroy(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_async_makes_nothing),
        cmocka_unit_test(test_positions_cover_below),
        cmocka_unit_test(test_notify_and_local_count),
    };
    return cmocka_run_group_tests_name("standby", tests, NULL, NULL);
}
