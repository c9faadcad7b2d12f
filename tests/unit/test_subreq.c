/*
 * Unit tests for server/subreq.c: a Subscribe's caps, and the sorted
 * duplicate checks (their answers equal the quadratic scans they replace).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "pb_errors.h"
#include "subreq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_caps(void **state)
{
    (void)state;
    char *pats[3] = {"a", "bb", "ccc"};
    Protobus__Subscribe q = PROTOBUS__SUBSCRIBE__INIT;
    q.n_patterns = 3;
    q.patterns = pats;
    char err[256];
    sub_caps c = {.max_patterns = 3, .max_pattern_bytes = 3, .max_tags = 1, .max_offsets = 1};
    assert_int_equal(subreq_check_caps(&q, &c, err, sizeof err), 0);
    c.max_patterns = 2;
    assert_int_equal(subreq_check_caps(&q, &c, err, sizeof err), PB_ETOOBIG);
    assert_non_null(strstr(err, "max_subscribe_patterns = 2"));
    c.max_patterns = 0; /* no cap */
    c.max_pattern_bytes = 2;
    assert_int_equal(subreq_check_caps(&q, &c, err, sizeof err), PB_ETOOBIG);
    assert_non_null(strstr(err, "patterns[2]"));
    assert_non_null(strstr(err, "max_pattern_bytes = 2"));
    c.max_pattern_bytes = 0;
    q.n_tags = 2;
    assert_int_equal(subreq_check_caps(&q, &c, err, sizeof err), PB_ETOOBIG);
    assert_non_null(strstr(err, "max_subscribe_tags = 1"));
    q.n_tags = 0;
    q.n_offsets = 2;
    assert_int_equal(subreq_check_caps(&q, &c, err, sizeof err), PB_ETOOBIG);
    assert_non_null(strstr(err, "max_subscribe_offsets = 1"));
}

/* The quadratic answer: the smallest i with an equal name before it. */
static size_t naive_dup(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0)
                return i;
    return n;
}

static void test_dup_offsets(void **state)
{
    (void)state;
    enum { N = 12 };
    Protobus__PartitionOffset o[N], *po[N];
    char *names[N];
    char buf[N][8];
    srand(7);
    for (int round = 0; round < 2000; round++) {
        size_t n = (size_t)(rand() % N);
        for (size_t i = 0; i < n; i++) {
            protobus__partition_offset__init(&o[i]);
            snprintf(buf[i], sizeof buf[i], "p%d", rand() % 20);
            o[i].partition = names[i] = buf[i];
            po[i] = &o[i];
        }
        assert_int_equal(subreq_dup_offset(po, n), naive_dup(names, n));
    }
}

static void test_tags_last_value_wins(void **state)
{
    (void)state;
    const char *kv[][2] = {{"b", "1"}, {"a", "2"}, {"b", "3"}, {"c", "4"}, {"a", "5"}};
    enum { N = 5 };
    Protobus__Subscribe__TagsEntry t[N], *pt[N];
    for (size_t i = 0; i < N; i++) {
        protobus__subscribe__tags_entry__init(&t[i]);
        t[i].key = (char *)kv[i][0];
        t[i].value = (char *)kv[i][1];
        pt[i] = &t[i];
    }
    event_tag_filter out[N];
    assert_int_equal(subreq_tags(pt, N, out), 3);
    /* In the order of first occurrence: b, a, c; last values 3, 5, 4. */
    assert_memory_equal(out[0].key, "b", 1);
    assert_memory_equal(out[0].value, "3", 1);
    assert_memory_equal(out[1].key, "a", 1);
    assert_memory_equal(out[1].value, "5", 1);
    assert_memory_equal(out[2].key, "c", 1);
    assert_memory_equal(out[2].value, "4", 1);
    assert_int_equal(subreq_tags(pt, 0, out), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_caps),
        cmocka_unit_test(test_dup_offsets),
        cmocka_unit_test(test_tags_last_value_wins),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
