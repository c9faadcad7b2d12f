/* Unit tests for proto/patterns.c and server/matchcache.c: any-of
 * semantics, whole-topic anchoring, error messages for bad patterns, the
 * decision cache, the match-everything fast path, matching from another
 * thread's match data, and the match_cache (topic -> subscription ids:
 * exact answers, bounded memory, starting over when full). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "matchcache.h"
#include "patterns.h"
#include "pb_errors.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
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

/* A pattern over its limits on a topic no other pattern matches is a
 * breach, reported (sticky) with its index; a match elsewhere excuses it. */
static void test_breach_reported(void **state)
{
    (void)state;
    const char *pats[] = {"b+", "(a|aa)+c", "a+c1"};
    pattern_set *ps;
    char err[256];
    assert_int_equal(patterns_compile(pats, 3, &ps, err, sizeof err), 0);
    patterns_set_limits(ps, 10000, 1000);
    char topic[250];
    memset(topic, 'a', 240);
    memcpy(topic + 240, "c1", 2);
    size_t which;
    int rc;
    assert_true(patterns_match(ps, topic, 242)); /* "a+c1" matches */
    assert_false(patterns_breached(ps, &which, &rc));
    topic[241] = '2';
    assert_false(patterns_match(ps, topic, 242));
    assert_true(patterns_breached(ps, &which, &rc));
    assert_int_equal(which, 1);
    assert_true(rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT);
    assert_false(patterns_match(ps, "zz", 2));
    assert_true(patterns_breached(ps, &which, &rc)); /* sticky */
    patterns_free(ps);
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

static void test_match_all_fast_path(void **state)
{
    const char *dot_star[] = {"a\\.b", ".*"};
    const char *dot_s[] = {"(?s).*"};
    const char *not_all[] = {".+", "(.*)", ".*x"};
    pattern_set *ps = compile_ok(dot_star, 2);
    assert_true(patterns_match_all(ps));
    unsigned long long hits, misses;
    assert_true(m(ps, "anything.at.all"));
    assert_true(m(ps, ""));
    /* Answered before the cache: no lookup counted, no regex run. */
    patterns_cache_stats(ps, &hits, &misses);
    assert_int_equal(hits + misses, 0);
    patterns_free(ps);

    ps = compile_ok(dot_s, 1);
    assert_true(patterns_match_all(ps));
    patterns_free(ps);
    /* Only the exact spellings count: others run their regex. */
    for (size_t i = 0; i < 3; i++) {
        ps = compile_ok(&not_all[i], 1);
        assert_false(patterns_match_all(ps));
        patterns_free(ps);
    }
    ps = compile_ok(not_all, 3);
    assert_false(patterns_match_all(ps));
    assert_true(m(ps, "")); /* by "(.*)"'s regex: a cache miss is counted */
    patterns_cache_stats(ps, &hits, &misses);
    assert_int_equal(misses, 1);
    patterns_free(ps);
}

/* patterns_match_shared agrees with patterns_match, including while the
 * owner matches (and fills its cache) at the same time on another thread. */
typedef struct shared_ctx {
    pattern_set *ps;
    int mismatches;
} shared_ctx;

static bool even_topic(int i)
{
    return i % 2 == 0;
}

static void *owner_thread(void *arg)
{
    shared_ctx *c = arg;
    char topic[32];
    for (int i = 0; i < 20000; i++) {
        int n = snprintf(topic, sizeof topic, "t.%d", i % 5000);
        if (patterns_match(c->ps, topic, (size_t)n) != even_topic(i % 5000))
            c->mismatches++;
    }
    return NULL;
}

static void test_match_shared_from_another_thread(void **state)
{
    const char *pats[] = {"t\\.[0-9]*[02468]", "never"};
    shared_ctx c = {.ps = compile_ok(pats, 2)};
    pcre2_match_data *md = patterns_match_data_create();
    assert_non_null(md);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, owner_thread, &c), 0);
    char topic[32];
    int mismatches = 0;
    for (int i = 0; i < 20000; i++) {
        int n = snprintf(topic, sizeof topic, "t.%d", (i * 7) % 5000);
        if (patterns_match_shared(c.ps, topic, (size_t)n, md) != even_topic((i * 7) % 5000))
            mismatches++;
    }
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(mismatches, 0);
    assert_int_equal(c.mismatches, 0);
    assert_false(patterns_match_shared(c.ps, "t.x", 3, md));
    assert_true(patterns_match_shared(c.ps, "never", 5, md));
    pcre2_match_data_free(md);
    patterns_free(c.ps);
}

/* The ids the test caches for topic i: i % 5 ids, derived from i. */
static size_t ids_of(int i, uint16_t *ids)
{
    size_t n = (size_t)(i % 5);
    for (size_t k = 0; k < n; k++)
        ids[k] = (uint16_t)(i * 3 + (int)k);
    return n;
}

static void expect_cached(match_cache *c, const char *topic, size_t len, const uint16_t *want,
                          size_t nwant)
{
    const uint16_t *ids = NULL;
    size_t n = 99;
    if (!match_cache_get(c, topic, len, &ids, &n))
        fail_msg("topic %.*s not cached", (int)len, topic);
    assert_int_equal(n, nwant);
    if (n)
        assert_memory_equal(ids, want, n * sizeof *ids);
}

static void test_match_cache_exact_and_bounded(void **state)
{
    match_cache *c = NULL;
    assert_int_equal(match_cache_create(&c, MATCH_CACHE_MIN_BYTES - 1), PB_EINVAL);
    const size_t limit = 256 * 1024;
    assert_int_equal(match_cache_create(&c, limit), 0);
    uint16_t ids[8];
    const uint16_t *got;
    size_t n;
    char topic[64];

    /* Empty list, and a topic that is a prefix of another: both distinct. */
    assert_false(match_cache_get(c, "a.b", 3, &got, &n));
    assert_int_equal(match_cache_put(c, "a.b", 3, NULL, 0), 0);
    ids[0] = 7;
    assert_int_equal(match_cache_put(c, "a.bc", 4, ids, 1), 0);
    expect_cached(c, "a.b", 3, NULL, 0);
    expect_cached(c, "a.bc", 4, ids, 1);
    assert_false(match_cache_get(c, "a.", 2, &got, &n));
    match_cache_clear(c);
    assert_int_equal(match_cache_count(c), 0);
    assert_false(match_cache_get(c, "a.b", 3, &got, &n));

    /* A working set that fits: every topic comes back with its own ids,
     * and a second pass only hits. */
    const int fit = 2000;
    for (int i = 0; i < fit; i++) {
        int len = snprintf(topic, sizeof topic, "sensors.%d.temp", i);
        assert_false(match_cache_get(c, topic, (size_t)len, &got, &n));
        assert_int_equal(match_cache_put(c, topic, (size_t)len, ids, ids_of(i, ids)), 0);
        assert_true(match_cache_bytes(c) <= limit);
    }
    unsigned long long hits, misses, restarts, hits2, misses2;
    match_cache_stats(c, &hits, &misses, &restarts);
    assert_int_equal(restarts, 0);
    for (int i = 0; i < fit; i++) {
        int len = snprintf(topic, sizeof topic, "sensors.%d.temp", i);
        expect_cached(c, topic, (size_t)len, ids, ids_of(i, ids));
    }
    match_cache_stats(c, &hits2, &misses2, &restarts);
    assert_int_equal(hits2 - hits, fit);
    assert_int_equal(misses2, misses);

    /* Far more topics than fit: memory never passes the limit, the cache
     * starts over when full, and what it answers is always right. */
    for (int i = 0; i < 100000; i++) {
        int len = snprintf(topic, sizeof topic, "many.topics.%d", i);
        if (!match_cache_get(c, topic, (size_t)len, &got, &n))
            assert_int_equal(match_cache_put(c, topic, (size_t)len, ids, ids_of(i, ids)), 0);
        assert_true(match_cache_bytes(c) <= limit);
        int back = i - (int)((unsigned)(i * 2654435761u >> 7) % 64);
        if (back >= 0) {
            len = snprintf(topic, sizeof topic, "many.topics.%d", back);
            if (match_cache_get(c, topic, (size_t)len, &got, &n)) {
                uint16_t want[8];
                assert_int_equal(n, ids_of(back, want));
                if (n)
                    assert_memory_equal(got, want, n * sizeof *want);
            }
        }
    }
    match_cache_stats(c, NULL, NULL, &restarts);
    assert_true(restarts > 0);
    assert_true(match_cache_count(c) > 0);

    /* Not cacheable: a topic over the maximum. */
    char *big = malloc(MATCH_CACHE_TOPIC_MAX + 2);
    assert_non_null(big);
    memset(big, 'x', MATCH_CACHE_TOPIC_MAX + 1);
    assert_int_equal(match_cache_put(c, big, MATCH_CACHE_TOPIC_MAX + 1, ids, 1), PB_ETOOBIG);
    assert_false(match_cache_get(c, big, MATCH_CACHE_TOPIC_MAX + 1, &got, &n));
    assert_int_equal(match_cache_put(c, big, MATCH_CACHE_TOPIC_MAX, ids, 1), 0);
    expect_cached(c, big, MATCH_CACHE_TOPIC_MAX, ids, 1);
    free(big);
    match_cache_free(c);
    match_cache_free(NULL);
}

/* The daemon's case: 100,000 topics with one id each fit in the default
 * fan-out cache (8 MiB), so a round robin over them only hits once warm. */
static void test_match_cache_holds_100k_topics_in_8mib(void **state)
{
    match_cache *c;
    assert_int_equal(match_cache_create(&c, 8u << 20), 0);
    char topic[64];
    const uint16_t *got;
    size_t n;
    for (int pass = 0; pass < 2; pass++) {
        for (uint16_t i = 0; i < 50000; i++) {
            for (int half = 0; half < 2; half++) {
                int len = snprintf(topic, sizeof topic, "bench1234567.%06d", i * 2 + half);
                if (!match_cache_get(c, topic, (size_t)len, &got, &n)) {
                    assert_int_equal(pass, 0);
                    assert_int_equal(match_cache_put(c, topic, (size_t)len, &i, 1), 0);
                } else {
                    assert_int_equal(n, 1);
                    assert_int_equal(got[0], i);
                }
            }
        }
    }
    unsigned long long hits, misses, restarts;
    match_cache_stats(c, &hits, &misses, &restarts);
    assert_int_equal(restarts, 0);
    assert_int_equal(hits, 100000);
    assert_int_equal(misses, 100000);
    assert_true(match_cache_bytes(c) <= (8u << 20));
    match_cache_free(c);
}

/* patterns_restrict: the restriction is decided on the topic, so no
 * pattern of the set widens it; deny wins; every path agrees. */
static void test_restrict_cannot_be_widened(void **state)
{
    (void)state;
    static const char *const asked[] = {".*", "payments\\..*|orders\\..*", "(?=payments).*"};
    static const char *const allow[] = {"orders\\..*"};
    static const char *const deny[] = {"orders\\.secret"};
    static const struct {
        const char *topic;
        bool want;
    } cases[] = {{"orders.a", true},
                 {"orders.secret", false},
                 {"payments.x", false},
                 {"orders", false},
                 {"xorders.a", false}};
    pcre2_match_data *md = patterns_match_data_create();
    assert_non_null(md);
    for (size_t k = 0; k < 3; k++) {
        pattern_set *ps;
        char err[200];
        assert_int_equal(patterns_compile(&asked[k], 1, &ps, err, sizeof err), 0);
        assert_int_equal(patterns_restrict(ps, allow, 1, deny, 1, err, sizeof err), 0);
        assert_true(patterns_restricted(ps));
        assert_false(patterns_match_all(ps));
        for (int pass = 0; pass < 2; pass++) /* the second pass from the cache */
            for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                const char *t = cases[i].topic;
                bool want = cases[i].want && (k != 2);
                assert_int_equal(patterns_match(ps, t, strlen(t)), want);
                assert_int_equal(patterns_match_shared(ps, t, strlen(t), md), want);
            }
        patterns_free(ps);
    }
    /* ".*" allowed without deny restricts nothing: the fast path stays. */
    pattern_set *ps;
    static const char *const all[] = {".*"};
    assert_int_equal(patterns_compile(all, 1, &ps, NULL, 0), 0);
    assert_int_equal(patterns_restrict(ps, all, 1, NULL, 0, NULL, 0), 0);
    assert_false(patterns_restricted(ps));
    assert_true(patterns_match_all(ps));
    patterns_free(ps);
    /* No allow pattern: nothing matches. */
    assert_int_equal(patterns_compile(all, 1, &ps, NULL, 0), 0);
    assert_int_equal(patterns_restrict(ps, NULL, 0, NULL, 0, NULL, 0), 0);
    assert_false(patterns_match(ps, "a", 1));
    patterns_free(ps);
    pcre2_match_data_free(md);
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

/* Patterns are compiled with newline LF, whatever the library's build
 * default: "." then matches every byte of a valid UTF-8 topic but '\n'
 * (under NEWLINE_ANY it would not match 0x85, as in "\xc3\x85"), the same
 * set of topics as the match-everything shortcuts (the router's catch-all
 * rule, patterns_match_all) and Hyperscan accept. On a library built with
 * LF as its default (Debian's) this passes without the explicit setting
 * too; it guards builds configured with --enable-newline-is-any. */
static void test_compile_whole_newline_is_lf(void **state)
{
    pcre2_code *code;
    char why[200];
    assert_int_equal(pattern_compile_whole(".*", 2, &code, why, sizeof why), 0);
    uint32_t nl = 0;
    assert_int_equal(pcre2_pattern_info(code, PCRE2_INFO_NEWLINE, &nl), 0);
    assert_int_equal(nl, PCRE2_NEWLINE_LF);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(code, NULL);
    const char *topics[] = {"a\xc3\x85z", "\xe2\x80\xa6", "a\rb", "a\xe2\x80\xa8z"};
    for (size_t i = 0; i < sizeof topics / sizeof topics[0]; i++)
        assert_true(pcre2_match(code, (PCRE2_SPTR)topics[i], strlen(topics[i]), 0, 0, md, NULL) >=
                    0);
    assert_true(pcre2_match(code, (PCRE2_SPTR) "a\nb", 3, 0, 0, md, NULL) < 0);
    pcre2_match_data_free(md);
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
        cmocka_unit_test(test_compile_whole_newline_is_lf),
        cmocka_unit_test(test_restrict_cannot_be_widened),
        cmocka_unit_test(test_match_all_fast_path),
        cmocka_unit_test(test_match_shared_from_another_thread),
        cmocka_unit_test(test_match_cache_exact_and_bounded),
        cmocka_unit_test(test_match_cache_holds_100k_topics_in_8mib),
        cmocka_unit_test(test_breach_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
