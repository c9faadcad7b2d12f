/* Unit tests for server/matcher.c and server/hsdb.c: whole-topic
 * semantics on both engines, errors that name the pattern, the PCRE2
 * budget (the F2 attack pattern of issue 10), updates and compaction,
 * statistics, and matching threads racing adds, removes and compactions.
 * (tests/unit/test_matcher_diff.c compares the answers with PCRE2 over
 * thousands of generated patterns.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "hsdb.h"
#include "matcher.h"
#include "matcher_keys.h"
#include "patterns.h"
#include "pb_errors.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A set without keyed subscriptions (the shards' and PCRE2's tests), or
 * with them (mkset_keys). */
static matcher_set *mkset_keys(bool hs, uint32_t shard_patterns, uint32_t key_share)
{
    matcher_limits lim = matcher_limits_default();
    lim.hyperscan = hs;
    lim.shard_patterns = shard_patterns;
    lim.key_share = key_share;
    matcher_set *set = NULL;
    assert_int_equal(matcher_set_create(&set, &lim), 0);
    return set;
}

static matcher_set *mkset(bool hs, uint32_t shard_patterns)
{
    return mkset_keys(hs, shard_patterns, 0);
}

static void add_ok(matcher_set *set, uint32_t id, const char *const *pats, size_t n)
{
    char err[512] = "";
    if (matcher_set_add(set, id, pats, n, err, sizeof err) != 0)
        fail_msg("add %u: %s", id, err);
}

static void add1(matcher_set *set, uint32_t id, const char *pat)
{
    add_ok(set, id, &pat, 1);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Matches topic[0..len) and checks the ids (any order) and no breach. */
static void expect_len(matcher_reader *r, const char *topic, size_t len, const uint32_t *want,
                       size_t nwant)
{
    matcher_result res;
    assert_int_equal(matcher_match(r, topic, len, &res), 0);
    assert_int_equal(res.nbreaches, 0);
    uint32_t got[64];
    assert_true(res.n <= 64);
    memcpy(got, res.ids, res.n * sizeof *got);
    qsort(got, res.n, sizeof *got, cmp_u32);
    if (res.n != nwant || (nwant && memcmp(got, want, nwant * sizeof *want) != 0)) {
        print_error("topic \"%.*s\": got", (int)len, topic ? topic : "");
        for (size_t i = 0; i < res.n; i++)
            print_error(" %u", got[i]);
        print_error(", want");
        for (size_t i = 0; i < nwant; i++)
            print_error(" %u", want[i]);
        print_error("\n");
        fail();
    }
}

#define EXPECT(r, topic, ...)                                                                      \
    do {                                                                                           \
        const uint32_t want_[] = {__VA_ARGS__};                                                    \
        expect_len(r, topic, strlen(topic), want_ + 1, sizeof want_ / sizeof *want_ - 1);          \
    } while (0)
/* EXPECT(r, "topic", 0, ids...): the leading 0 keeps the list non-empty. */

static void test_hsdb_expr_subset(void **state)
{
    static const struct {
        const char *pattern;
        const char *expr; /* NULL: refused */
    } cases[] = {
        {"a.b", "^(?:a.b)\\z"},
        {"^orders\\..*$", "^(?:orders\\..*)\\z"},
        {"a|b$", "^(?:a|b)\\z"},
        {"", "^(?:)\\z"},
        {"(?i)x[a-c\\d\\]]{2,5}?", "^(?:(?i)x[a-c\\d\\]]{2,5}?)\\z"},
        {"(?s-i:.)\\x41\\t\xc3\xa9+", "^(?:(?s-i:.)\\x41\\t\xc3\xa9+)\\z"},
        {"a{255}", "^(?:a{255})\\z"},
        {"((a{8}){8}){8}", "^(?:((a{8}){8}){8})\\z"},
        {"(a|aa)+c", "^(?:(a|aa)+c)\\z"},
        /* refused: outside the subset, or too heavy */
        {"a{256}", NULL},
        {"(((a{8}){8}){8}){8}", NULL},
        {"(a)\\1", NULL},
        {"a(?=b)b", NULL},
        {"(?<=a)b", NULL},
        {"\\bword", NULL},
        {"a++", NULL},
        {"(?>a)", NULL},
        {"(?x)a b", NULL},
        {"(?m)^a", NULL},
        {"\\Qa.b\\E", NULL},
        {"[[:alpha:]]", NULL},
        {"[]a]", NULL},
        {"a{,3}", NULL},
        {"x{", NULL},
        {"a}", NULL},
        {"\\x4", NULL},
        {"\\x{41}", NULL},
        {"\\101", NULL},
        {"(*UTF)a", NULL},
        {"a^b", NULL},
        {"a$b", NULL},
        {"(a$)", NULL},
        {"\\p{L}", NULL},
        {"[\\d-z]", NULL},
        {"(?)", NULL},
        {"a{0}", NULL},
        {"a{0,0}b", NULL},
        {"(?i-)", NULL},
    };
    char expr[HSDB_EXPR_MAX], why[128];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        bool ok = hsdb_expr(cases[i].pattern, strlen(cases[i].pattern), expr, why, sizeof why);
        if (ok != (cases[i].expr != NULL))
            fail_msg("pattern \"%s\": %s", cases[i].pattern, ok ? "taken" : why);
        if (ok)
            assert_string_equal(expr, cases[i].expr);
    }
    assert_false(hsdb_expr("(?=a)a", 6, expr, why, sizeof why));
    assert_string_equal(why, "unsupported syntax \"(?=a\" at offset 0");
    char longp[HSDB_PATTERN_MAX + 2];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = 0;
    assert_false(hsdb_expr(longp, strlen(longp), expr, why, sizeof why));
    assert_string_equal(why, "longer than 512 bytes");
    assert_true(hsdb_available());
}

/* What test_patterns.c asks of patterns_match, on both engines, with and
 * without keyed subscriptions. */
static void test_whole_topic_semantics(void **state)
{
    for (int mode = 0; mode < 3; mode++) {
        matcher_set *set = mkset_keys(mode < 2, 64, mode == 0 ? MATCHER_KEY_SHARE_DEFAULT : 0);
        matcher_reader *r;
        assert_int_equal(matcher_reader_create(set, &r), 0);
        const char *any[] = {"orders\\..*", "sensors\\.t[0-9]+", "audit"};
        add_ok(set, 1, any, 3);
        add1(set, 2, "a.b");
        const char *alt[] = {"a|b.c", "x(y|yz)"};
        add_ok(set, 3, alt, 2);
        add1(set, 4, "a\\x00b");
        add1(set, 5, "ab");
        add1(set, 6, "(?i)caf\xc3\xa9");
        add1(set, 7, "x.y");
        add_ok(set, 8, NULL, 0); /* no pattern: matches nothing */
        EXPECT(r, "orders.eu", 0, 1);
        EXPECT(r, "sensors.t17", 0, 1);
        EXPECT(r, "audit", 0, 1);
        EXPECT(r, "sensors.tx", 0);
        EXPECT(r, "", 0);
        expect_len(r, NULL, 0, NULL, 0);
        EXPECT(r, "a.b", 0, 2);
        EXPECT(r, "axb", 0, 2);
        EXPECT(r, "xa.b", 0);
        EXPECT(r, "a.bx", 0);
        EXPECT(r, "a.b\n", 0); /* no "$ before a final newline" leniency */
        EXPECT(r, "a", 0, 3);
        EXPECT(r, "b.c", 0, 3);
        EXPECT(r, "ab.c", 0);
        EXPECT(r, "xyz", 0, 3); /* the longer alternative */
        const uint32_t two_four[] = {2, 4}, five[] = {5};
        expect_len(r, "a\0b", 3, two_four, 2); /* "." matches a NUL byte too */
        expect_len(r, "abc", 2, five, 1);      /* only len bytes count */
        expect_len(r, "a\0bc", 4, NULL, 0);
        /* Bytes, not characters: caseless folds ASCII only, "." is one
         * byte, so "x.y" does not match "xéy" (two bytes in the middle). */
        EXPECT(r, "CAF\xc3\xa9", 0, 6);
        EXPECT(r, "caf\xc3\x89", 0);
        EXPECT(r, "x\xc3\xa9y", 0);
        EXPECT(r, "x-y", 0, 7);
        matcher_reader_destroy(r);
        matcher_set_destroy(set);
    }
}

static void test_errors_name_the_problem(void **state)
{
    matcher_limits lim = matcher_limits_default();
    lim.max_pcre_patterns = 2;
    matcher_set *set;
    assert_int_equal(matcher_set_create(&set, &lim), 0);
    char err[512];
    const char *bad[] = {"ok\\..*", "a(b", "c"};
    assert_int_equal(matcher_set_add(set, 1, bad, 3, err, sizeof err), PB_EINVAL);
    assert_string_equal(err, "pattern \"a(b\": missing closing parenthesis at offset 3");
    const char *bad2[] = {"x", "[z-a]"};
    assert_int_equal(matcher_set_add(set, 1, bad2, 2, err, sizeof err), PB_EINVAL);
    assert_string_equal(err,
                        "pattern \"[z-a]\": range out of order in character class at offset 3");

    const char *slow[] = {"x", "(?=a)a", "(b)\\1", "c(?!d)"};
    assert_int_equal(matcher_set_add(set, 2, slow, 4, err, sizeof err), PB_EINVAL);
    assert_string_equal(err, "3 patterns need the PCRE2 engine, at most 2 per subscription (the "
                             "first: pattern \"(?=a)a\": unsupported syntax \"(?=a\" at offset 0)");
    add_ok(set, 2, slow, 3); /* two of them: within the budget */

    assert_int_equal(matcher_set_add(set, 2, slow, 1, err, sizeof err), PB_EINVAL);
    assert_string_equal(err, "subscription 2 is already in the matcher");
    assert_int_equal(matcher_set_remove(set, 99), PB_ENOTFOUND);
    matcher_stats st;
    matcher_set_stats(set, &st);
    assert_int_equal(st.subscriptions, 1);
    assert_int_equal(st.patterns, 3);
    assert_int_equal(st.pcre_patterns, 2); /* "x" is keyed: its own shard decides it */
    assert_int_equal(st.keyed, 1);
    assert_int_equal(matcher_set_compact(set), 0);
    matcher_set_stats(set, &st);
    assert_int_equal(st.pcre_patterns, 2);
    matcher_set_destroy(set);
    matcher_set_destroy(NULL);
    matcher_reader_destroy(NULL);

    lim = matcher_limits_default();
    lim.match_limit = 0;
    assert_int_equal(matcher_set_create(&set, &lim), PB_EINVAL);
    lim = matcher_limits_default();
    lim.shard_patterns = 0;
    assert_int_equal(matcher_set_create(&set, &lim), PB_EINVAL);

    char buf[64];
    assert_string_equal(matcher_breach_reason(PCRE2_ERROR_MATCHLIMIT, buf, sizeof buf),
                        "match limit");
    assert_string_equal(matcher_breach_reason(PCRE2_ERROR_DEPTHLIMIT, buf, sizeof buf),
                        "depth limit");
    assert_string_equal(matcher_breach_reason(PCRE2_ERROR_HEAPLIMIT, buf, sizeof buf),
                        "heap limit");
    assert_string_equal(matcher_breach_reason(PCRE2_ERROR_JIT_STACKLIMIT, buf, sizeof buf),
                        "JIT stack limit");
    assert_string_equal(matcher_breach_reason(PCRE2_ERROR_NOMEMORY, buf, sizeof buf),
                        "no more memory");
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Issue 10, F2: 2,000 x "(a|aa)+c" and topics like 'a' * 240 + "c1". */
static void test_budget_f2_attack(void **state)
{
    static const char *evil[2000];
    for (size_t i = 0; i < 2000; i++)
        evil[i] = "(a|aa)+c";
    char topic[242];
    memset(topic, 'a', 240);
    memcpy(topic + 240, "c1", 2);
    matcher_result res;
    char why[64];

    /* Hyperscan takes the pattern: no backtracking, no breach, the right
     * answer (no match). PCRE2-only twins of it breach, each reported once
     * with its pattern, unless another pattern of theirs matches. */
    matcher_set *set = mkset(true, 64);
    matcher_reader *r;
    assert_int_equal(matcher_reader_create(set, &r), 0);
    add_ok(set, 1, evil, 2000);
    const char *twin[] = {"x", "(a|aa)+c(?!x)"};
    add_ok(set, 2, twin, 2);
    const char *saved[] = {"(a|aa)+c(?!x)", "a+c1"};
    add_ok(set, 3, saved, 2);
    add1(set, 4, "a*c1");
    add_ok(set, 5, twin, 2);
    matcher_stats st;
    matcher_set_stats(set, &st);
    assert_int_equal(st.patterns, 1 + 2 + 2 + 1 + 2); /* the 2,000 copies count once */
    double t0 = now_ms();
    for (int round = 0; round < 3; round++) {
        assert_int_equal(matcher_match(r, topic, sizeof topic, &res), 0);
        uint32_t got[8];
        memcpy(got, res.ids, res.n * sizeof *got);
        qsort(got, res.n, sizeof *got, cmp_u32);
        assert_int_equal(res.n, 2);
        assert_int_equal(got[0], 3);
        assert_int_equal(got[1], 4);
        assert_int_equal(res.nbreaches, 2);
        for (size_t b = 0; b < 2; b++) {
            assert_true(res.breaches[b].id == 2 || res.breaches[b].id == 5);
            assert_int_equal(res.breaches[b].pattern, 1);
            assert_int_equal(res.breaches[b].pcre2_error, PCRE2_ERROR_MATCHLIMIT);
        }
        assert_true(res.breaches[0].id != res.breaches[1].id);
    }
    print_message("3 attack topics, Hyperscan + 2 PCRE2 twins: %.2f ms\n", now_ms() - t0);
    assert_string_equal(matcher_breach_reason(res.breaches[0].pcre2_error, why, sizeof why),
                        "match limit");
    /* An honest topic is unaffected. */
    EXPECT(r, "aac", 0, 1, 2, 3, 5);
    /* In a batch, the breaches stay with the topic they happened on. */
    const char *batch[] = {"aac", topic, "xyz", topic};
    const size_t lens[] = {3, sizeof topic, 3, sizeof topic};
    matcher_result rs[4];
    assert_int_equal(matcher_match_batch(r, batch, lens, 4, rs), 0);
    assert_int_equal(rs[0].n, 4);
    assert_int_equal(rs[0].nbreaches, 0);
    assert_int_equal(rs[2].n, 0);
    assert_int_equal(rs[2].nbreaches, 0);
    for (int i = 1; i < 4; i += 2) {
        assert_int_equal(rs[i].n, 2);
        assert_int_equal(rs[i].nbreaches, 2);
        assert_true(rs[i].breaches[0].id == 2 || rs[i].breaches[0].id == 5);
        assert_int_equal(rs[i].breaches[0].pattern, 1);
    }
    assert_int_equal(matcher_match_batch(r, batch, lens, 0, rs), PB_EINVAL);
    assert_int_equal(matcher_match_batch(r, batch, lens, MATCHER_BATCH_MAX + 1, rs), PB_EINVAL);
    matcher_reader_destroy(r);
    matcher_set_destroy(set);

    /* PCRE2 alone: the attack itself breaches, once for the 2,000 copies. */
    set = mkset(false, 64);
    assert_int_equal(matcher_reader_create(set, &r), 0);
    add_ok(set, 1, evil, 2000);
    add1(set, 4, "a*c1");
    t0 = now_ms();
    for (int round = 0; round < 3; round++) {
        assert_int_equal(matcher_match(r, topic, sizeof topic, &res), 0);
        assert_int_equal(res.n, 1);
        assert_int_equal(res.ids[0], 4);
        assert_int_equal(res.nbreaches, 1);
        assert_int_equal(res.breaches[0].id, 1);
        assert_int_equal(res.breaches[0].pattern, 0);
        assert_int_equal(res.breaches[0].pcre2_error, PCRE2_ERROR_MATCHLIMIT);
    }
    print_message("3 attack topics, PCRE2 only: %.2f ms\n", now_ms() - t0);
    matcher_reader_destroy(r);
    matcher_set_destroy(set);
}

/* The keys mkey_extract reads, and where it gives up. */
static void test_key_extraction(void **state)
{
    static const struct {
        const char *pattern, *prefix, *suffix; /* "": no key */
    } cases[] = {
        {"orders\\.eu\\..*", "orders.eu.", ""},
        {"t\\.[0-9]*017", "t.", "017"},
        {"^abc$", "abc", "abc"},
        {"a|b", "", ""},
        {"(a|b)c", "", "c"},
        {"(?:a|b)+c", "", "c"},
        {"ab?c", "a", "c"},
        {"ab{2}c", "a", "c"},
        {"ab{2,}?c", "a", "c"},
        {"abc*", "ab", ""},
        {"a\\d+z", "a", "z"},
        {"[ab]c", "", "c"},
        {"[]a]x", "", "x"},
        {"x(?:yz)+", "x", ""},
        {"a\\-b c#", "a-b c#", "a-b c#"},
        {"abcdefghijklmnopqrstuvwxyz", "abcdefghijklmnop", "klmnopqrstuvwxyz"},
        {"(?i)abc", "", ""},
        {"a(?=b)b", "", ""},
        {"a\\x41", "", ""},
        {"a\\tb", "", ""},
        {"a{,3}", "", ""},
        {"a$b", "", ""},
        {"a^", "", ""},
        {"[[:alpha:]]x", "", ""},
        {"a)", "", ""},
        {"(a", "", ""},
        {"", "", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        mkey pre, suf;
        mkey_extract(cases[i].pattern, strlen(cases[i].pattern), &pre, &suf);
        size_t lp = strlen(cases[i].prefix), ls = strlen(cases[i].suffix);
        if (pre.len != lp || memcmp(pre.b, cases[i].prefix, lp) != 0 ||
            pre.side != (lp ? MKEY_PREFIX : MKEY_NONE))
            fail_msg("%s: prefix \"%.*s\", want \"%s\"", cases[i].pattern, pre.len, pre.b,
                     cases[i].prefix);
        if (suf.len != ls || memcmp(suf.b, cases[i].suffix, ls) != 0 ||
            suf.side != (ls ? MKEY_SUFFIX : MKEY_NONE))
            fail_msg("%s: suffix \"%.*s\", want \"%s\"", cases[i].pattern, suf.len, suf.b,
                     cases[i].suffix);
    }
}

/* Pattern shapes (matcher_keys.h): which patterns have one, and on every
 * topic of a set built around their bytes (newline, high bytes, empty
 * runs, one byte short or over) the shape decides as PCRE2 does. */
static void test_pattern_shapes(void **state)
{
    static const char *const shaped[] = {
        "orders\\.eu\\..*", "t\\.[0-9]*017", "a\\d+z", "abc", "a.*", ".*", ".+x", "x[^a-c]*",
        "[a-c]+", "a[x.*$]*b", "k\\-[0-9a-f]+\\.log", "a*a", "\xc3\xa9.*", "a b#",
        "[\\]]*", "z[\\d_]+",
    };
    static const char *const refused[] = {
        "a|b", "(ab)*", "a?", "a{2}", "a*?b", "a++", "a*b*", "^a", "a$", "[[:alpha:]]*", "[a-]*",
        "a\\w*", "a\\x41*", "[]a]*", "p[-]*q", "[]*", "[z-a]*", "a[bc]d", ".",
    };
    static const char *const topics[] = {
        "", "a", "aa", "ab", "abc", "az", "a1z", "a12z", "a\nz", "orders.eu.x", "orders.eu.",
        "orders.eu", "orders.eu.a\nb", "t.017", "t.12017", "t.1a017", "t.017x", "t.\n017", "x",
        "xx", "\nx", "xd", "xa", "x\n", "b", "abcc", "pq", "p--q", "p-q", "ax.*$b", "axyb",
        "k-0af.log", "k-.log", "k-0g.log", "\xc3\xa9", "\xc3\xa9\n", "a b#", "]]", "]a", "z_1",
        "z", "z\n", "\xff", "\xff\xfe", "a\xff",
    };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        mkey_shape sh;
        if (mkey_shape_parse(refused[i], strlen(refused[i]), &sh))
            fail_msg("\"%s\" has a shape: it should be left to its shard", refused[i]);
    }
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    assert_non_null(md);
    for (size_t i = 0; i < sizeof shaped / sizeof *shaped; i++) {
        mkey_shape sh;
        if (!mkey_shape_parse(shaped[i], strlen(shaped[i]), &sh))
            fail_msg("\"%s\" has no shape", shaped[i]);
        pcre2_code *code;
        char why[200];
        assert_int_equal(pattern_compile_whole(shaped[i], strlen(shaped[i]), &code, why,
                                               sizeof why),
                         0);
        for (size_t t = 0; t < sizeof topics / sizeof *topics; t++) {
            size_t n = strlen(topics[t]);
            bool want = pcre2_match(code, (PCRE2_SPTR)topics[t], n, 0, 0, md, NULL) >= 0;
            if (mkey_shape_match(&sh, topics[t], n) != want)
                fail_msg("\"%s\" on topic \"%s\": shape says %d, PCRE2 %d", shaped[i],
                         topics[t], !want, want);
        }
        pcre2_code_free(code);
    }
    pcre2_match_data_free(md);
}

/* Keyed subscriptions: no compaction, no PCRE2 for their Hyperscan
 * patterns, at most key_share of them under one key, the same answers. */
static void test_keyed_subscriptions(void **state)
{
    matcher_set *set = mkset_keys(true, 8, 3);
    matcher_reader *r;
    assert_int_equal(matcher_reader_create(set, &r), 0);
    char pat[64];
    for (uint32_t i = 0; i < 20; i++) {
        snprintf(pat, sizeof pat, "t\\.[0-9]*%02u", i);
        add1(set, i, pat);
    }
    matcher_stats st;
    matcher_set_stats(set, &st);
    assert_int_equal(st.keyed, 20);
    /* Each decided by its shape, whose memory is counted. */
    assert_int_equal(st.shaped, 20);
    assert_int_equal(st.shape_bytes, 20 * sizeof(mkey_shape));
    assert_int_equal(st.young_shards, 0);
    assert_int_equal(st.pcre_patterns, 0);
    assert_false(matcher_set_compact_wanted(set));
    EXPECT(r, "t.105", 0, 5);
    EXPECT(r, "t.17", 0, 17);
    EXPECT(r, "t.x17", 0);
    EXPECT(r, "u.17", 0);
    EXPECT(r, "7", 0);
    /* One key, four subscriptions: the fourth goes to the shards. */
    for (uint32_t i = 20; i < 24; i++)
        add1(set, i, ".*\\.err");
    const char *mixed[] = {"orders\\..*", ".*"}; /* ".*" has no key */
    add_ok(set, 24, mixed, 2);
    const char *two[] = {"orders\\..*", "x\\.[a-z]+\\.err"}; /* a prefix and a suffix */
    add_ok(set, 25, two, 2);
    /* More patterns than MSUB_SHAPES_MAX: keyed, but its shard decides
     * (the shapes' memory stays bounded per subscription). */
    char many_text[17][32];
    const char *many[17];
    for (int k = 0; k < 17; k++) {
        snprintf(many_text[k], sizeof many_text[k], "m%02d\\.[0-9]*", k);
        many[k] = many_text[k];
    }
    add_ok(set, 27, many, 17);
    matcher_set_stats(set, &st);
    assert_int_equal(st.keyed, 25);
    assert_int_equal(st.shaped, 24); /* 27 is not: 17 patterns */
    assert_int_equal(st.shape_bytes, (20 + 3 + 2) * sizeof(mkey_shape)); /* 25: two patterns */
    assert_int_equal(st.young_shards, 2);
    assert_true(matcher_set_compact_wanted(set));
    EXPECT(r, "m16.42", 0, 24, 27); /* 24: ".*" */
    EXPECT(r, "m16.4x", 0, 24);
    EXPECT(r, "a.err", 0, 20, 21, 22, 23, 24);
    EXPECT(r, "x.y.err", 0, 20, 21, 22, 23, 24, 25);
    EXPECT(r, "orders.1", 0, 24, 25);
    EXPECT(r, "t.02", 0, 2, 24);
    while (matcher_set_compact_wanted(set))
        assert_int_equal(matcher_set_compact(set), 0);
    matcher_set_stats(set, &st);
    assert_int_equal(st.keyed, 25);
    assert_int_equal(st.young_shards, 0);
    EXPECT(r, "x.y.err", 0, 20, 21, 22, 23, 24, 25);
    EXPECT(r, "t.02", 0, 2, 24);
    /* Removed: its key finds it no more; its slot under the key is free. */
    assert_int_equal(matcher_set_remove(set, 21), 0);
    assert_int_equal(matcher_set_remove(set, 2), 0);
    EXPECT(r, "a.err", 0, 20, 22, 23, 24);
    EXPECT(r, "t.02", 0, 24);
    add1(set, 26, "b\\.err");
    matcher_set_stats(set, &st);
    assert_int_equal(st.keyed, 24);
    EXPECT(r, "b.err", 0, 20, 22, 23, 24, 26);
    matcher_reader_destroy(r);
    matcher_set_destroy(set);
}

/* Young shards, compaction, removal, versions: answers stay the same. */
static void test_updates_and_compaction(void **state)
{
    matcher_set *set = mkset(true, 8);
    matcher_reader *r;
    assert_int_equal(matcher_reader_create(set, &r), 0);
    char pat[64];
    for (uint32_t i = 0; i < 20; i++) {
        snprintf(pat, sizeof pat, "t\\.[0-9]*%02u", i);
        add1(set, i, pat);
    }
    add1(set, 20, "t\\..*(?<=5)"); /* PCRE2 */
    add1(set, 21, "t\\.[0-9]*05"); /* the same expression as 5's, another sub */
    matcher_stats st;
    matcher_set_stats(set, &st);
    assert_int_equal(st.subscriptions, 22);
    assert_int_equal(st.shards, 21);
    assert_int_equal(st.young_shards, 21);
    assert_int_equal(st.pcre_patterns, 22); /* young: through PCRE2 until compacted */
    assert_true(st.hyperscan);
    uint64_t v = st.version;
    EXPECT(r, "t.105", 0, 5, 20, 21);
    EXPECT(r, "t.17", 0, 17);
    EXPECT(r, "t.100", 0, 0);
    EXPECT(r, "t.x5", 0, 20);

    assert_true(matcher_set_compact_wanted(set));
    assert_int_equal(matcher_set_compact(set), 0);
    matcher_set_stats(set, &st);
    assert_int_equal(st.version, v); /* same answers */
    assert_int_equal(st.young_shards, 0);
    assert_int_equal(st.shards, 3); /* 20 distinct expressions, 8 a shard */
    assert_int_equal(st.compactions, 1);
    assert_int_equal(st.pcre_patterns, 1);
    assert_int_equal(st.retired, 0); /* no reader was matching */
    assert_false(matcher_set_compact_wanted(set));
    matcher_result res;
    assert_int_equal(matcher_match(r, "t.105", 5, &res), 0);
    assert_int_equal(res.version, v);
    EXPECT(r, "t.105", 0, 5, 20, 21);
    EXPECT(r, "t.17", 0, 17);

    /* Removing and adding: the answer moves with the version at once. */
    assert_int_equal(matcher_set_remove(set, 5), 0);
    EXPECT(r, "t.105", 0, 20, 21);
    add1(set, 5, "t\\.1.*"); /* the id again, other patterns */
    EXPECT(r, "t.105", 0, 5, 20, 21);
    EXPECT(r, "t.205", 0, 20, 21);
    assert_int_equal(matcher_match(r, "t.1", 3, &res), 0);
    assert_true(res.version == v + 2);
    /* Most of the shards' subscriptions gone: compaction rewrites them. */
    for (uint32_t i = 0; i < 16; i++)
        if (i != 5)
            assert_int_equal(matcher_set_remove(set, i), 0);
    assert_true(matcher_set_compact_wanted(set));
    assert_int_equal(matcher_set_compact(set), 0);
    matcher_set_stats(set, &st);
    assert_int_equal(st.subscriptions, 7);
    assert_int_equal(st.shards, 2); /* 16..19's, still full and live; 21's and 5's */
    assert_false(matcher_set_compact_wanted(set));
    EXPECT(r, "t.17", 0, 5, 17);
    EXPECT(r, "t.3", 0);
    EXPECT(r, "t.05", 0, 20, 21);
    matcher_reader_destroy(r);
    matcher_set_destroy(set);
}

/* Memory per pattern, for the figures in matcher.h (printed, not
 * asserted beyond sanity: they depend on the patterns). */
static void test_stats_and_memory(void **state)
{
    matcher_set *set = mkset(true, 64);
    char pat[64];
    for (uint32_t i = 0; i < 256; i++) {
        snprintf(pat, sizeof pat, "bench12345\\.[0-9]*%03u", i);
        add1(set, i, pat);
    }
    matcher_stats st;
    matcher_set_stats(set, &st);
    size_t young_bytes = st.shard_bytes;
    assert_int_equal(st.shards, 256);
    while (matcher_set_compact_wanted(set))
        assert_int_equal(matcher_set_compact(set), 0);
    matcher_set_stats(set, &st);
    assert_int_equal(st.shards, 4);
    assert_int_equal(st.patterns, 256);
    assert_true(st.shard_bytes > 0 && st.shard_bytes < young_bytes);
    print_message("256 bench patterns: young shards %zu B/pattern, compacted %zu B/pattern, PCRE2 "
                  "codes %zu B/pattern\n",
                  young_bytes / 256, st.shard_bytes / 256, st.pcre_bytes / 256);
    matcher_set_destroy(set);
}

/* Readers match while a writer adds and removes and a compactor compacts:
 * the stable subscriptions' answers are always exact, a churning one
 * appears only when it matches, and nothing is used after being freed
 * (ASan, TSan). */
#define STABLE  10
#define CHURN   40
#define READERS 2
#define ROUNDS  6000

typedef struct race {
    matcher_set *set;
    atomic_int stop;
    int errors;
} race;

static void *reader_thread(void *arg)
{
    race *rc = arg;
    matcher_reader *r;
    if (matcher_reader_create(rc->set, &r) != 0) {
        __atomic_add_fetch(&rc->errors, 1, __ATOMIC_RELAXED);
        return NULL;
    }
    char topic[32];
    for (int i = 0; i < ROUNDS; i++) {
        unsigned n = (unsigned)i * 7919u % 100000u;
        int len = snprintf(topic, sizeof topic, "t.%u", n);
        matcher_result res;
        if (matcher_match(r, topic, (size_t)len, &res) != 0 || res.nbreaches) {
            __atomic_add_fetch(&rc->errors, 1, __ATOMIC_RELAXED);
            continue;
        }
        bool stable[STABLE + 1] = {false};
        for (size_t k = 0; k < res.n; k++) {
            uint32_t id = res.ids[k];
            if (id < STABLE)
                stable[id] = true;
            else if (id == STABLE)
                stable[STABLE] = true;
            else if ((id - 100) % 10 != n % 10) /* churn id 100+j matches a last digit j%10 */
                __atomic_add_fetch(&rc->errors, 1, __ATOMIC_RELAXED);
        }
        for (unsigned s = 0; s < STABLE; s++)
            if (stable[s] != (n % 10 == s))
                __atomic_add_fetch(&rc->errors, 1, __ATOMIC_RELAXED);
        if (stable[STABLE] != (n % 10 == 5))
            __atomic_add_fetch(&rc->errors, 1, __ATOMIC_RELAXED);
    }
    matcher_reader_destroy(r);
    return NULL;
}

static void *churn_thread(void *arg)
{
    race *rc = arg;
    char pat[64];
    char err[256];
    for (int round = 0; round < 200 && !atomic_load(&rc->stop); round++) {
        uint32_t id = 100 + (uint32_t)(round % CHURN);
        if (round >= CHURN && matcher_set_remove(rc->set, id) != 0)
            __atomic_add_fetch(&rc->errors, 1, __ATOMIC_RELAXED);
        /* Alternately a Hyperscan and a PCRE2 pattern. */
        snprintf(pat, sizeof pat, round % 2 ? "t\\.[0-9]*%u" : "t\\.(?=[0-9])[0-9]*%u",
                 (id - 100) % 10);
        const char *p = pat;
        if (matcher_set_add(rc->set, id, &p, 1, err, sizeof err) != 0)
            __atomic_add_fetch(&rc->errors, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void *compact_thread(void *arg)
{
    race *rc = arg;
    for (int i = 0; i < 100 && !atomic_load(&rc->stop); i++)
        if (matcher_set_compact_wanted(rc->set) && matcher_set_compact(rc->set) != 0)
            __atomic_add_fetch(&rc->errors, 1, __ATOMIC_RELAXED);
    return NULL;
}

static void test_threads_race_updates(void **state)
{
    race rc = {.set = mkset(true, 8)};
    atomic_init(&rc.stop, 0);
    char pat[64];
    for (uint32_t s = 0; s < STABLE; s++) {
        snprintf(pat, sizeof pat, "t\\.[0-9]*%u", s);
        add1(rc.set, s, pat);
    }
    add1(rc.set, STABLE, "t\\.[0-9]*(?<=5)");
    pthread_t readers[READERS], churn, compactor;
    for (int i = 0; i < READERS; i++)
        assert_int_equal(pthread_create(&readers[i], NULL, reader_thread, &rc), 0);
    assert_int_equal(pthread_create(&churn, NULL, churn_thread, &rc), 0);
    assert_int_equal(pthread_create(&compactor, NULL, compact_thread, &rc), 0);
    for (int i = 0; i < READERS; i++)
        assert_int_equal(pthread_join(readers[i], NULL), 0);
    atomic_store(&rc.stop, 1);
    assert_int_equal(pthread_join(churn, NULL), 0);
    assert_int_equal(pthread_join(compactor, NULL), 0);
    assert_int_equal(rc.errors, 0);
    matcher_stats st;
    matcher_set_stats(rc.set, &st);
    assert_int_equal(st.retired, 0); /* every reader gone: everything freed */
    matcher_set_destroy(rc.set);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hsdb_expr_subset),
        cmocka_unit_test(test_whole_topic_semantics),
        cmocka_unit_test(test_errors_name_the_problem),
        cmocka_unit_test(test_budget_f2_attack),
        cmocka_unit_test(test_key_extraction),
        cmocka_unit_test(test_pattern_shapes),
        cmocka_unit_test(test_keyed_subscriptions),
        cmocka_unit_test(test_updates_and_compaction),
        cmocka_unit_test(test_stats_and_memory),
        cmocka_unit_test(test_threads_race_updates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
