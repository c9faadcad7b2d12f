/* Tests for proto/sort: the uint64 comparator orders the whole range
 * (no subtraction overflow), sort_u64 sorts with duplicates, and the upper bound agrees with a
 * linear count on every probe around every element, duplicates and ends included. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>

#include "sort.h"

static void test_cmp_orders_extremes(void **state)
{
    (void)state;
    uint64_t v[] = {UINT64_MAX, 0, 1ull << 63, 7, (1ull << 63) - 1, 7};
    size_t n = sizeof v / sizeof v[0];

    qsort(v, n, sizeof v[0], sort_cmp_u64);
    for (size_t i = 1; i < n; i++)
        assert_true(v[i - 1] <= v[i]);
    assert_int_equal(v[0], 0);
    assert_true(v[n - 1] == UINT64_MAX);
    uint64_t a = 3, b = 3;
    assert_int_equal(sort_cmp_u64(&a, &b), 0);
}

static void test_sort_u64(void **state)
{
    (void)state;
    uint64_t v[] = {9, UINT64_MAX, 0, 9, 1ull << 40, 3};
    const uint64_t want[] = {0, 3, 9, 9, 1ull << 40, UINT64_MAX};
    size_t n = sizeof v / sizeof v[0];

    sort_u64(v, 0); /* nothing to do, and no access */
    sort_u64(v, n);
    for (size_t i = 0; i < n; i++)
        assert_true(v[i] == want[i]);
}

static size_t count_le(const uint64_t *v, size_t n, uint64_t x)
{
    size_t k = 0;

    for (size_t i = 0; i < n; i++)
        k += v[i] <= x;
    return k;
}

static void test_upper_bound_matches_count(void **state)
{
    (void)state;
    uint64_t v[] = {0, 5, 5, 5, 10, 1000, UINT64_MAX - 1};
    size_t n = sizeof v / sizeof v[0];

    assert_int_equal(sort_upper_bound_u64(v, 0, 5), 0);
    for (size_t len = 0; len <= n; len++) {
        for (size_t i = 0; i < n; i++) {
            for (int d = -1; d <= 1; d++) {
                uint64_t x = v[i] + (uint64_t)(int64_t)d; /* wraps at 0: UINT64_MAX */
                assert_int_equal(sort_upper_bound_u64(v, len, x), count_le(v, len, x));
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cmp_orders_extremes),
        cmocka_unit_test(test_sort_u64),
        cmocka_unit_test(test_upper_bound_matches_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
