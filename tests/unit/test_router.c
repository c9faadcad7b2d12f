/* Unit tests for server/router.c: first match wins, capture-group
 * expansion, no-match and invalid-name results with their messages, and
 * the bounded per-topic cache. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "config.h"
#include "pb_errors.h"
#include "router.h"

#include <stdio.h>
#include <string.h>

/* A router for the config text; the config is freed at once, since the
 * router copies what it needs. */
static router *make(const char *text)
{
    pb_config cfg;
    router *r = NULL;
    char err[512] = "";
    if (config_load_string("r.conf", text, &cfg, err, sizeof err) != 0)
        fail_msg("config: %s", err);
    int rc = router_create(&cfg, &r, err, sizeof err);
    config_free(&cfg);
    if (rc != 0)
        fail_msg("router: %s", err);
    return r;
}

/* Routes a NUL-terminated topic and checks code, rule and name. */
static void expect(router *r, const char *topic, int code, int rule, const char *name)
{
    router_result res;
    int rc = router_route(r, topic, strlen(topic), &res);
    if (rc != code || res.rule != rule)
        fail_msg("topic \"%s\": got rc %d rule %d, want rc %d rule %d", topic, rc, res.rule, code,
                 rule);
    if (!name) {
        assert_null(res.partition);
        assert_int_equal(res.partition_len, 0);
    } else {
        assert_non_null(res.partition);
        assert_string_equal(res.partition, name);
        assert_int_equal(res.partition_len, strlen(name));
    }
}

static const char *const overlapping = "[partition orders]\n"
                                       "match = orders\\..*\n"
                                       "[partition orders-eu]\n" /* never wins: shadowed */
                                       "match = orders\\.eu\\..*\n"
                                       "[partition eu]\n"
                                       "match = .*\\.eu\\..*\n"
                                       "[partition rest]\n"
                                       "match = [a-z.]*\n";

static void test_first_match_wins(void **state)
{
    router *f = make(overlapping);
    expect(f, "orders.eu.x", 0, 0, "orders");
    expect(f, "orders.us.x", 0, 0, "orders");
    expect(f, "pay.eu.x", 0, 2, "eu");
    expect(f, "misc", 0, 3, "rest");
    /* Whole-topic: "orders" alone is not "orders\..*" */
    expect(f, "orders", 0, 3, "rest");
    router_free(f);
}

static void test_no_rule_matches(void **state)
{
    router *f = make(overlapping);
    router_result res;
    const char *topic = "Upper.Case";
    assert_int_equal(router_route(f, topic, strlen(topic), &res), PB_ENOTFOUND);
    assert_int_equal(res.rule, -1);
    assert_null(res.partition);
    char msg[512];
    router_format_error(f, PB_ENOTFOUND, topic, strlen(topic), &res, msg, sizeof msg);
    assert_string_equal(msg, "no partition rule in r.conf matches topic \"Upper.Case\"");
    /* The cached answer is the same. */
    expect(f, topic, PB_ENOTFOUND, -1, NULL);
    /* Odd bytes are escaped and a long topic is cut in messages. */
    char odd[300];
    memset(odd, 'Z', sizeof odd);
    odd[0] = '"';
    odd[1] = '\n';
    assert_int_equal(router_route(f, odd, sizeof odd, &res), PB_ENOTFOUND);
    router_format_error(f, PB_ENOTFOUND, odd, sizeof odd, &res, msg, sizeof msg);
    char want[512];
    snprintf(want, sizeof want, "no partition rule in r.conf matches topic \"\\\"\\x0a%.*s...\"",
             198, odd + 2);
    assert_string_equal(msg, want);
    /* A tiny buffer is still NUL-terminated. */
    router_format_error(f, PB_ENOTFOUND, odd, sizeof odd, &res, msg, 8);
    assert_int_equal(strlen(msg), 7);
    router_free(f);
}

static void test_capture_group_expansion(void **state)
{
    router *f = make("[partition sensors-$1]\n"
                     "match = sensors\\.([a-z0-9]+)\\..*\n"
                     "[partition $2.$1]\n"
                     "match = swap\\.([a-z]+)\\.([a-z]+)\n"
                     "[partition all-$0]\n"
                     "match = whole\\.[a-z]+\n"
                     "[partition opt$1]\n"
                     "match = opt(-[a-z]+)?\n"
                     "[partition static]\n"
                     "match = .*\n");
    expect(f, "sensors.t17.temp", 0, 0, "sensors-t17");
    expect(f, "sensors.t18.hum", 0, 0, "sensors-t18");
    expect(f, "sensors.T18.hum", 0, 4, "static"); /* [a-z0-9]+ does not take T */
    expect(f, "swap.ab.cd", 0, 1, "cd.ab");
    expect(f, "whole.abc", 0, 2, "all-whole.abc");
    expect(f, "opt-x", 0, 3, "opt-x");
    expect(f, "opt", 0, 3, "opt"); /* unset group expands to nothing */
    /* Again, now from the cache: same answers. */
    expect(f, "sensors.t17.temp", 0, 0, "sensors-t17");
    expect(f, "swap.ab.cd", 0, 1, "cd.ab");
    expect(f, "opt", 0, 3, "opt");
    router_free(f);
}

static void test_invalid_expansion_refused(void **state)
{
    router *f = make("[partition p-$1]\n"
                     "match = bad\\.(.*)\n"
                     "[partition $1]\n"
                     "match = e(x?)\n"
                     "[partition dot$1]\n"
                     "match = d(.*)\n");
    for (int round = 0; round < 2; round++) { /* uncached, then cached */
        expect(f, "bad.a/b", PB_EINVAL, 0, "p-a/b");
        expect(f, "bad.ok", 0, 0, "p-ok");
        expect(f, "e", PB_EINVAL, 1, ""); /* empty name */
        expect(f, "ex", 0, 1, "x");
        expect(f, "d.", 0, 2, "dot.");
    }
    router_result res;
    assert_int_equal(router_route(f, "bad.a/b", 7, &res), PB_EINVAL);
    char msg[600];
    router_format_error(f, PB_EINVAL, "bad.a/b", 7, &res, msg, sizeof msg);
    assert_string_equal(msg, "topic \"bad.a/b\" matches [partition p-$1] (r.conf:1), but the name "
                             "\"p-a/b\" is not a valid partition name (1..100 characters of A-Z "
                             "a-z 0-9 . _ -, not starting with \".\")");

    /* "." and ".." as whole names: $1 alone. */
    router *g = make("[partition $1]\nmatch = n(.*)\n");
    expect(g, "n.", PB_EINVAL, 0, ".");
    expect(g, "n..", PB_EINVAL, 0, "..");
    /* F3: any name starting with "." is one readers skip: refused, with
     * the topic and the name it produced in the message. */
    expect(g, "n...", PB_EINVAL, 0, "...");
    expect(g, "n.hidden", PB_EINVAL, 0, ".hidden");
    expect(g, "nvisible.", 0, 0, "visible.");
    assert_int_equal(router_route(g, "n.hidden", 8, &res), PB_EINVAL);
    router_format_error(g, PB_EINVAL, "n.hidden", 8, &res, msg, sizeof msg);
    assert_string_equal(msg, "topic \"n.hidden\" matches [partition $1] (r.conf:1), but the name "
                             "\".hidden\" is not a valid partition name (1..100 characters of "
                             "A-Z a-z 0-9 . _ -, not starting with \".\")");
    /* A NUL byte in the topic never reaches a name. */
    assert_int_equal(router_route(g, "na\0b", 4, &res), PB_EINVAL);
    assert_int_equal(res.partition_len, 3);
    assert_memory_equal(res.partition, "a\0b", 3);
    /* Too long: the name is cut after 101 bytes, enough to say so. */
    char topic[300];
    topic[0] = 'n';
    memset(topic + 1, 'k', sizeof topic - 1);
    assert_int_equal(router_route(g, topic, sizeof topic, &res), PB_EINVAL);
    assert_int_equal(res.partition_len, PB_PARTITION_NAME_MAX + 1);
    assert_int_equal(router_route(g, topic, PB_PARTITION_NAME_MAX + 1, &res), 0);
    assert_int_equal(res.partition_len, PB_PARTITION_NAME_MAX);
    router_free(g);
    router_free(f);
}

/* F3: a capture group that names a static rule's partition is refused
 * (whichever rule comes first), cached or not; other names still route. */
static void test_capture_group_may_not_name_a_static_partition(void **state)
{
    router *r = make("[partition orders]\n"
                     "match = orders\\..*\n"
                     "[partition $1]\n"
                     "match = x\\.([a-z]+)\n"
                     "[partition audit]\n"
                     "match = audit\\..*\n");
    for (int round = 0; round < 2; round++) {
        expect(r, "orders.eu", 0, 0, "orders");
        expect(r, "x.orders", PB_EINVAL, 1, "orders");
        expect(r, "x.audit", PB_EINVAL, 1, "audit"); /* a later static rule's too */
        expect(r, "x.other", 0, 1, "other");
    }
    router_result res;
    char msg[600];
    assert_int_equal(router_route(r, "x.audit", 7, &res), PB_EINVAL);
    router_format_error(r, PB_EINVAL, "x.audit", 7, &res, msg, sizeof msg);
    assert_string_equal(msg, "topic \"x.audit\" matches [partition $1] (r.conf:3), but the name "
                             "\"audit\" it produces is the partition of [partition audit] "
                             "(r.conf:5); a capture group may not name another rule's partition");
    router_free(r);
}

static void test_cache_hit_same_result_no_regex(void **state)
{
    router *f = make(overlapping);
    router_stats st;
    router_result a, b;
    assert_int_equal(router_route(f, "pay.eu.x", 8, &a), 0);
    router_get_stats(f, &st);
    assert_int_equal(st.misses, 1);
    assert_int_equal(st.hits, 0);
    assert_int_equal(st.entries, 1);
    assert_int_equal(router_route(f, "pay.eu.x", 8, &b), 0);
    router_get_stats(f, &st);
    assert_int_equal(st.misses, 1);
    assert_int_equal(st.hits, 1);
    assert_int_equal(a.rule, b.rule);
    assert_string_equal(a.partition, b.partition);
    /* Same prefix, other length: a different topic. */
    expect(f, "pay.eu.xy", 0, 2, "eu");
    expect(f, "pay.eu.", 0, 2, "eu");
    router_get_stats(f, &st);
    assert_int_equal(st.misses, 3);
    /* Topics beyond ROUTER_CACHE_TOPIC_MAX are routed, never cached. */
    char big[ROUTER_CACHE_TOPIC_MAX + 1];
    memset(big, 'q', sizeof big);
    for (int i = 0; i < 2; i++)
        assert_int_equal(router_route(f, big, sizeof big, &a), 0);
    router_get_stats(f, &st);
    assert_int_equal(st.misses, 5);
    assert_int_equal(st.entries, 3);
    assert_string_equal(a.partition, "rest");
    router_free(f);
}

/* Checks topic i routes to sensors-i (rule 0) or, when i % 3 == 0, is
 * refused (no rule), whether cached or not. */
static void route_numbered(router *r, int i)
{
    char topic[64], name[64];
    router_result res;
    int n = snprintf(topic, sizeof topic, "%s.%d.v", i % 3 == 0 ? "other" : "sensors", i);
    int rc = router_route(r, topic, (size_t)n, &res);
    if (i % 3 == 0) {
        assert_int_equal(rc, PB_ENOTFOUND);
        return;
    }
    snprintf(name, sizeof name, "sensors-%d", i);
    assert_int_equal(rc, 0);
    assert_int_equal(res.rule, 0);
    assert_string_equal(res.partition, name);
}

static void test_cache_stays_bounded(void **state)
{
    router *f = make("[server]\nroute_cache_entries = 64\n"
                     "[partition sensors-$1]\nmatch = sensors\\.([0-9]+)\\.v\n");
    router_stats st;
    for (int i = 0; i < 3 * 64; i++) {
        route_numbered(f, i);
        router_get_stats(f, &st);
        assert_true(st.entries <= 64);
    }
    assert_true(st.clears >= 2);
    assert_int_equal(st.misses, 3 * 64);
    /* Everything again, in reverse: still right (hits or re-routes). */
    for (int i = 3 * 64 - 1; i >= 0; i--)
        route_numbered(f, i);
    router_get_stats(f, &st);
    assert_true(st.entries <= 64);
    assert_true(st.hits > 0);
    /* The most recent topics are still cached: no regex for them. */
    unsigned long long misses = st.misses;
    route_numbered(f, 0);
    route_numbered(f, 1);
    router_get_stats(f, &st);
    assert_int_equal(st.misses, misses);
    router_free(f);
}

/* Long topics fill the string arena before the entry bound: the cache is
 * emptied by bytes too, and answers stay right. */
static void test_cache_bounded_by_bytes(void **state)
{
    router *f = make("[server]\nroute_cache_entries = 16\n"
                     "[partition p$1]\nmatch = ([0-9]+)-.*\n");
    char topic[ROUTER_CACHE_TOPIC_MAX];
    router_stats st;
    router_result res;
    memset(topic, 'w', sizeof topic);
    for (int i = 0; i < 40; i++) {
        int n = snprintf(topic, sizeof topic, "%d-", i);
        topic[n] = 'w';
        assert_int_equal(router_route(f, topic, sizeof topic, &res), 0);
        char name[16];
        snprintf(name, sizeof name, "p%d", i);
        assert_string_equal(res.partition, name);
        router_get_stats(f, &st);
        /* 16 entries * 128 bytes of arena: at most 4 topics of 512 bytes */
        assert_true(st.entries <= 4);
    }
    assert_true(st.clears >= 9);
    assert_true(st.bytes <= router_cache_max_bytes(16));
    router_free(f);
}

/* F9: a flood of distinct topics keeps the cache within its stated
 * memory bound (router_cache_max_bytes), with short and long topics. */
static void test_cache_memory_bound(void **state)
{
    router *f = make("[server]\nroute_cache_entries = 4096\n"
                     "[partition t-$1]\nmatch = t\\.([0-9]+)\\..*\n"
                     "[partition events]\nmatch = .*\n");
    char topic[ROUTER_CACHE_TOPIC_MAX];
    router_stats st;
    router_result res;
    size_t max_seen = 0;
    for (int i = 0; i < 100000; i++) {
        int n = snprintf(topic, sizeof topic, "t.%d.", i);
        size_t len = i % 3 == 0 ? (size_t)n : sizeof topic; /* some as long as cached ones go */
        memset(topic + n, 'x', sizeof topic - (size_t)n);
        assert_int_equal(router_route(f, topic, len, &res), 0);
        router_get_stats(f, &st);
        if (st.bytes > max_seen)
            max_seen = st.bytes;
    }
    assert_true(max_seen <= router_cache_max_bytes(4096));
    assert_true(router_cache_max_bytes(262144) < 64u << 20); /* the default's: documented */
    router_free(f);
}

/* The performance goal: 100,000 distinct topics, with the default cache
 * size, cost one regex pass each and then none. */
static void test_hundred_thousand_topics_route_from_cache(void **state)
{
    router *f = make("[partition sensors-$1]\nmatch = sensors\\.([a-z0-9]+)\\..*\n"
                     "[partition events]\nmatch = .*\n");
    router_stats st;
    router_result res;
    char topic[64];
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < 100000; i++) {
            int n = snprintf(topic, sizeof topic, "sensors.s%d.temperature", i % 1000);
            if (i >= 1000)
                n = snprintf(topic, sizeof topic, "app.%d.metric", i);
            assert_int_equal(router_route(f, topic, (size_t)n, &res), 0);
            assert_int_equal(res.rule, i < 1000 ? 0 : 1);
        }
    }
    router_get_stats(f, &st);
    assert_int_equal(st.misses, 100000);
    assert_int_equal(st.hits, 100000);
    assert_int_equal(st.entries, 100000);
    assert_int_equal(st.clears, 0);
    router_free(f);
}

/* A static first rule matching every topic (".*") takes every topic without
 * a regex and without caching anything: 100,000 topics cost no memory. A
 * later ".*" does not (the rules before it must run). */
static void test_catch_all_first_rule_caches_nothing(void **state)
{
    router *f = make("[partition events]\nmatch = .*\n"
                     "[partition never]\nmatch = sensors\\..*\n");
    router_stats st;
    router_result res;
    char topic[64];
    for (int i = 0; i < 100000; i++) {
        int n = snprintf(topic, sizeof topic, i % 2 ? "sensors.%d" : "app.%d.metric", i);
        assert_int_equal(router_route(f, topic, (size_t)n, &res), 0);
        assert_int_equal(res.rule, 0);
        assert_int_equal(res.partition_len, 6);
        assert_string_equal(res.partition, "events");
    }
    router_get_stats(f, &st);
    assert_int_equal(st.hits, 0); /* no cache was looked at */
    assert_int_equal(st.catch_all, 100000);
    assert_int_equal(st.misses, 0);
    assert_int_equal(st.entries, 0);
    router_free(f);
    f = make("[partition s]\nmatch = s\\..*\n[partition events]\nmatch = .*\n");
    assert_int_equal(router_route(f, "s.1", 3, &res), 0);
    assert_int_equal(res.rule, 0);
    assert_int_equal(router_route(f, "t.1", 3, &res), 0);
    assert_int_equal(res.rule, 1);
    router_get_stats(f, &st);
    assert_int_equal(st.entries, 2);
    router_free(f);
}

static void test_match_failure_is_refused_not_cached(void **state)
{
    router *f = make("[partition slow]\nmatch = (a|aa)+(b|c)?\n"
                     "[partition rest]\nmatch = .*\n");
    char topic[42];
    memset(topic, 'a', 40);
    topic[40] = 'd';
    topic[41] = '\0';
    router_result res;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(router_route(f, topic, 41, &res), PB_EINVAL);
        assert_int_equal(res.rule, 0);
        assert_null(res.partition);
    }
    router_stats st;
    router_get_stats(f, &st);
    assert_int_equal(st.misses, 2);
    assert_int_equal(st.entries, 0);
    char msg[512];
    router_format_error(f, PB_EINVAL, topic, 41, &res, msg, sizeof msg);
    assert_string_equal(msg,
                        "topic \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaad\": matching it against "
                        "[partition slow] (r.conf:1) failed: match limit exceeded");
    expect(f, "aab", 0, 0, "slow");
    router_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_match_wins),
        cmocka_unit_test(test_no_rule_matches),
        cmocka_unit_test(test_capture_group_expansion),
        cmocka_unit_test(test_invalid_expansion_refused),
        cmocka_unit_test(test_capture_group_may_not_name_a_static_partition),
        cmocka_unit_test(test_cache_hit_same_result_no_regex),
        cmocka_unit_test(test_cache_stays_bounded),
        cmocka_unit_test(test_cache_bounded_by_bytes),
        cmocka_unit_test(test_cache_memory_bound),
        cmocka_unit_test(test_hundred_thousand_topics_route_from_cache),
        cmocka_unit_test(test_catch_all_first_rule_caches_nothing),
        cmocka_unit_test(test_match_failure_is_refused_not_cached),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
