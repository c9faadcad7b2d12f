/*
 * test_partition_shrink - partition_shrink_pair (partition_write.c): the
 * writer's batch arrays (entries, recs) given back down to `keep` under
 * their one capacity. When one resize fails (realloc fails through
 * __wrap_realloc below, on request), the capacity is still `keep`: never
 * more than either array holds (reserve() trusts it and writes up to it).
 */
#include "partition_internal.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <malloc.h>

#include <cmocka.h>

void *__real_realloc(void *ptr, size_t n);
void *__wrap_realloc(void *ptr, size_t n);

static int fail_at; /* the fail_at-th realloc from now fails (0: none) */

void *__wrap_realloc(void *ptr, size_t n)
{
    if (fail_at > 0 && --fail_at == 0)
        return NULL;
    return __real_realloc(ptr, n);
}

enum { BIG = 100000, KEEP = 10 };

/* Shrinks a pair of BIG entries to KEEP with the fail-th realloc failing;
 * each array holds at least cap entries afterwards. */
static void shrink_with_failure(int fail)
{
    log_entry *entries = calloc(BIG, sizeof *entries);
    live_record *recs = calloc(BIG, sizeof *recs);
    assert_non_null(entries);
    assert_non_null(recs);
    size_t cap = BIG;
    fail_at = fail;
    size_t freed = partition_shrink_pair(&entries, &recs, &cap, KEEP);
    fail_at = 0;
    assert_int_equal(freed, (BIG - KEEP) * (sizeof *entries + sizeof *recs));
    assert_int_equal(cap, KEEP);
    assert_true(malloc_usable_size(entries) >= cap * sizeof *entries);
    assert_true(malloc_usable_size(recs) >= cap * sizeof *recs);
    /* Growing again from there reaches a capacity both arrays hold. */
    assert_int_equal(partition_reserve(&entries, &recs, &cap, 1000), 0);
    assert_true(cap >= 1000);
    assert_true(malloc_usable_size(entries) >= cap * sizeof *entries);
    assert_true(malloc_usable_size(recs) >= cap * sizeof *recs);
    free(entries);
    free(recs);
}

static void test_shrink_both(void **state)
{
    shrink_with_failure(0);
}

static void test_shrink_recs_fails(void **state)
{
    shrink_with_failure(2); /* entries shrinks, recs stays BIG */
}

static void test_shrink_entries_fails(void **state)
{
    shrink_with_failure(1);
}

static void test_shrink_to_zero(void **state)
{
    log_entry *entries = calloc(BIG, sizeof *entries);
    live_record *recs = calloc(BIG, sizeof *recs);
    size_t cap = BIG;
    assert_true(partition_shrink_pair(&entries, &recs, &cap, 0) > 0);
    assert_null(entries);
    assert_null(recs);
    assert_int_equal(cap, 0);
    assert_int_equal(partition_shrink_pair(&entries, &recs, &cap, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shrink_both),
        cmocka_unit_test(test_shrink_recs_fails),
        cmocka_unit_test(test_shrink_entries_fails),
        cmocka_unit_test(test_shrink_to_zero),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
