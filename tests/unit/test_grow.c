/* Tests for proto/grow: capacities double from GROW_MIN and always hold
 * what was asked for; contents survive growth; a size that overflows is
 * refused with PB_ENOMEM and leaves the array and its capacity as they were;
 * arrays grown together under one capacity. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>

#include "grow.h"
#include "pb_errors.h"

static void test_capacity_doubles(void **state)
{
    (void)state;
    assert_int_equal(grow_capacity(0, 1, 8), GROW_MIN);
    assert_int_equal(grow_capacity(0, GROW_MIN + 1, 8), 2 * GROW_MIN);
    assert_int_equal(grow_capacity(3, 4, 8), 6);
    assert_int_equal(grow_capacity(3, 13, 8), 24);
    assert_int_equal(grow_capacity(100, 50, 8), 100); /* already holds it */
    /* Doubling past what can be allocated stops at exactly need. */
    assert_int_equal(grow_capacity(SIZE_MAX / 16 + 1, SIZE_MAX / 16 + 2, 8), SIZE_MAX / 16 + 2);
    /* need * elem overflows: no capacity. */
    assert_int_equal(grow_capacity(0, SIZE_MAX / 8 + 1, 8), 0);
    assert_int_equal(grow_capacity(0, 1, 0), 0);
}

static void test_reserve_keeps_contents(void **state)
{
    (void)state;
    uint64_t *v = NULL;
    size_t cap = 0;

    assert_int_equal(grow_reserve(&v, &cap, 0, sizeof *v), 0); /* nothing asked */
    assert_null(v);
    for (size_t i = 0; i < 1000; i++) {
        assert_int_equal(grow_reserve(&v, &cap, i + 1, sizeof *v), 0);
        assert_true(cap >= i + 1);
        v[i] = i * 7;
    }
    assert_int_equal(cap, 1024);
    for (size_t i = 0; i < 1000; i++)
        assert_int_equal(v[i], i * 7);
    free(v);
}

static void test_overflow_changes_nothing(void **state)
{
    (void)state;
    uint32_t *v = NULL;
    size_t cap = 0;

    assert_int_equal(grow_reserve(&v, &cap, 4, sizeof *v), 0);
    uint32_t *before = v;
    v[0] = 42;
    assert_int_equal(grow_reserve(&v, &cap, SIZE_MAX / 2, sizeof *v), PB_ENOMEM);
    assert_ptr_equal(v, before);
    assert_int_equal(cap, GROW_MIN);
    assert_int_equal(v[0], 42);
    assert_int_equal(grow_resize(&v, SIZE_MAX / 2, sizeof *v), PB_ENOMEM);
    assert_int_equal(grow_resize(&v, 0, sizeof *v), PB_ENOMEM);
    assert_ptr_equal(v, before);
    free(v);
}

static void test_arrays_grown_together(void **state)
{
    (void)state;
    char **names = NULL;
    size_t *index = NULL, cap = 0;

    for (size_t n = 0; n < 100; n++) {
        if (n == cap) {
            size_t c = grow_capacity(cap, n + 1, sizeof *names);
            assert_true(c > n);
            assert_int_equal(grow_resize(&names, c, sizeof *names), 0);
            assert_int_equal(grow_resize(&index, c, sizeof *index), 0);
            cap = c;
        }
        names[n] = NULL;
        index[n] = n;
    }
    for (size_t n = 0; n < 100; n++)
        assert_int_equal(index[n], n);
    free(names);
    free(index);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_capacity_doubles),
        cmocka_unit_test(test_reserve_keeps_contents),
        cmocka_unit_test(test_overflow_changes_nothing),
        cmocka_unit_test(test_arrays_grown_together),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
