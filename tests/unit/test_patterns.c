/* Unit tests for server/patterns.c: any-of semantics, whole-topic
 * anchoring, error messages for bad patterns, and the decision cache. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "patterns.h"
#include "pb_errors.h"

#include <stdio.h>
#include <string.h>

static bool m(pattern_set *ps, const char *topic)
{
    return patterns_match(ps, topic, strlen(topic));
}

static pattern_set *compile_ok(const char *const *pats, size_t n)
{
    pattern_set *ps = NULL;
    char err[256] = "";
    if (patterns_compile(pats, n, &ps, err, sizeof err) != 0)
        fail_msg("compile failed: %s", err);
    return ps;
}

static void test_any_of(void **state)
{
    const char *pats[] = {"orders\\..*", "sensors\\.t[0-9]+", "audit"};
    pattern_set *ps = compile_ok(pats, 3);
    assert_int_equal(patterns_count(ps), 3);
    assert_true(m(ps, "orders.eu"));
    assert_true(m(ps, "sensors.t17"));
    assert_true(m(ps, "audit"));
    assert_false(m(ps, "payments.x"));
    assert_false(m(ps, "sensors.tx"));
    assert_false(m(ps, ""));
    patterns_free(ps);
}

static void test_whole_topic_anchoring(void **state)
{
    const char *pats[] = {"a.b"};
    pattern_set *ps = compile_ok(pats, 1);
    assert_true(m(ps, "a.b"));
    assert_true(m(ps, "axb")); /* '.' is a regex dot */
    assert_false(m(ps, "xa.b"));
    assert_false(m(ps, "a.bx"));
    assert_false(m(ps, "a.b\n")); /* no "$ before a final newline" leniency */
    patterns_free(ps);

    /* An alternation is anchored as a whole, not just its ends. */
    const char *alt[] = {"a|b.c", "x(y|yz)"};
    ps = compile_ok(alt, 2);
    assert_true(m(ps, "a"));
    assert_true(m(ps, "b.c"));
    assert_false(m(ps, "a.c"));
    assert_false(m(ps, "ab.c"));
    assert_true(m(ps, "xyz")); /* backtracks into the longer alternative */
    patterns_free(ps);
}

static void test_topic_with_nul_and_length(void **state)
{
    const char *pats[] = {"a\\x00b", "ab"};
    pattern_set *ps = compile_ok(pats, 2);
    assert_true(patterns_match(ps, "a\0b", 3));
    assert_true(patterns_match(ps, "abc", 2)); /* only len bytes count */
    assert_false(patterns_match(ps, "a\0bc", 4));
    assert_false(patterns_match(ps, NULL, 0));
    patterns_free(ps);
}

static void test_bad_pattern_names_it(void **state)
{
    const char *pats[] = {"ok\\..*", "a(b", "c"};
    pattern_set *ps = (pattern_set *)1;
    char err[256] = "";
    assert_int_equal(patterns_compile(pats, 3, &ps, err, sizeof err), PB_EINVAL);
    assert_null(ps);
    assert_string_equal(err, "pattern \"a(b\": missing closing parenthesis at offset 3");

    const char *pats2[] = {"x", "[z-a]"};
    assert_int_equal(patterns_compile(pats2, 2, &ps, err, sizeof err), PB_EINVAL);
    assert_string_equal(err,
                        "pattern \"[z-a]\": range out of order in character class at offset 3");

    /* errlen 0: still refused, nothing written */
    assert_int_equal(patterns_compile(pats2, 2, &ps, NULL, 0), PB_EINVAL);
}

static void test_empty_set_matches_nothing(void **state)
{
    pattern_set *ps = compile_ok(NULL, 0);
    assert_int_equal(patterns_count(ps), 0);
    assert_false(m(ps, "anything"));
    assert_false(m(ps, ""));
    patterns_free(ps);
    patterns_free(NULL);
}

static void test_cache_hits_and_stays_correct(void **state)
{
    const char *pats[] = {"t\\.[0-9]*[02468]"}; /* even numbers */
    pattern_set *ps = compile_ok(pats, 1);
    unsigned long long hits, misses;

    assert_true(m(ps, "t.42"));
    assert_true(m(ps, "t.42"));
    assert_false(m(ps, "t.43"));
    assert_false(m(ps, "t.43"));
    patterns_cache_stats(ps, &hits, &misses);
    assert_int_equal(hits, 2);
    assert_int_equal(misses, 2);

    /* Far more distinct topics than slots: collisions replace entries and
     * every answer stays right, twice over. */
    char topic[32];
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < 3 * PATTERNS_CACHE_SLOTS; i++) {
            int n = snprintf(topic, sizeof topic, "t.%d", i);
            assert_int_equal(patterns_match(ps, topic, (size_t)n), i % 2 == 0);
        }
    }

    /* Topics too long to cache are matched every time. */
    char long_topic[PATTERNS_CACHE_TOPIC_MAX + 10];
    memset(long_topic, '1', sizeof long_topic);
    memcpy(long_topic, "t.", 2);
    patterns_cache_stats(ps, &hits, &misses);
    assert_true(patterns_match(ps, long_topic, sizeof long_topic - 1) == false);
    long_topic[sizeof long_topic - 1] = '2';
    assert_true(patterns_match(ps, long_topic, sizeof long_topic));
    assert_true(patterns_match(ps, long_topic, sizeof long_topic));
    unsigned long long hits2, misses2;
    patterns_cache_stats(ps, &hits2, &misses2);
    assert_int_equal(hits2, hits);
    assert_int_equal(misses2, misses + 3);
    patterns_free(ps);
}

static void test_compile_whole_reports_offset(void **state)
{
    pcre2_code *code = (pcre2_code *)1;
    char why[200];
    assert_int_equal(pattern_compile_whole("ab)", 3, &code, why, sizeof why), PB_EINVAL);
    assert_null(code);
    assert_string_equal(why, "unmatched closing parenthesis at offset 2");
    assert_int_equal(pattern_compile_whole("ab)", 2, &code, why, sizeof why), 0);
    assert_non_null(code);
    pcre2_code_free(code);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_any_of),
        cmocka_unit_test(test_whole_topic_anchoring),
        cmocka_unit_test(test_topic_with_nul_and_length),
        cmocka_unit_test(test_bad_pattern_names_it),
        cmocka_unit_test(test_empty_set_matches_nothing),
        cmocka_unit_test(test_cache_hits_and_stays_correct),
        cmocka_unit_test(test_compile_whole_reports_offset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
