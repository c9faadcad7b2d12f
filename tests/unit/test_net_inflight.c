/*
 * test_net_inflight - the loop's bound on the publishes waiting for the
 * writers (net_inflight_over, net_internal.h; conn.c's back-pressure and
 * net_publish.c's resume use it): past max_inflight_bytes of charge, or
 * past max_inflight_events events (0: no events bound), whichever comes
 * first. Small events reach the events bound first (main.c's
 * MAX_INFLIGHT_EVENTS: a starved writer's queue of 100 B events), 1 KiB
 * ones the bytes.
 */
#include "net_internal.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static void test_either_bound_pauses(void **state)
{
    (void)state;
    static net n;
    memset(&n, 0, sizeof n);
    n.opts.max_inflight_bytes = 16u << 20;
    n.opts.max_inflight_events = 20480;
    assert_false(net_inflight_over(&n));
    /* 100 B events: ~420 B charged each; the events bound first. */
    n.inflight_events = 20480;
    n.inflight_bytes = 20480ull * 420;
    assert_false(net_inflight_over(&n)); /* at the bound: still read */
    n.inflight_events = 20481;
    n.inflight_bytes = 20481ull * 420;
    assert_true(n.inflight_bytes < n.opts.max_inflight_bytes);
    assert_true(net_inflight_over(&n));
    /* 1 KiB events: the bytes first. */
    n.inflight_events = 12300;
    n.inflight_bytes = (16u << 20) + 1;
    assert_true(net_inflight_over(&n));
    n.inflight_bytes = 16u << 20;
    assert_false(net_inflight_over(&n));
}

static void test_no_events_bound(void **state)
{
    (void)state;
    static net n;
    memset(&n, 0, sizeof n);
    n.opts.max_inflight_bytes = 16u << 20;
    n.inflight_events = 10u << 20; /* 0: only the bytes count */
    assert_false(net_inflight_over(&n));
    n.inflight_bytes = (16u << 20) + 1;
    assert_true(net_inflight_over(&n));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_either_bound_pauses),
        cmocka_unit_test(test_no_events_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
