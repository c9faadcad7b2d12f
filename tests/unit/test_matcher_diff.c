/* Differential test of server/matcher.c: for thousands of generated
 * patterns and topics, the subscriptions the matcher returns are exactly
 * those for which running every pattern with PCRE2 (pattern_compile_whole,
 * the daemon's definition of a whole-topic match) finds a match.
 *
 * Patterns come from tests/lib/patgen.h's grammar, which mixes the syntax
 * Hyperscan takes with syntax that must fall back to PCRE2. Each pattern
 * comes with a sample topic built to match it, which is then mutated
 * (case, one byte more or less, a newline); random topics over the same
 * bytes complete the set.
 *
 * Checked in four states: every subscription in its own young shard; after
 * compaction (shards of 16 expressions); after removing a third of them,
 * before and after compacting again; and with Hyperscan off. The coverage
 * of each construct (patterns, how many Hyperscan took, matching and
 * non-matching pairs) is printed and asserted, so the test cannot pass by
 * generating only easy cases. MATCHER_DIFF_SEED=n picks another seed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "hsdb.h"
#include "matcher.h"
#include "patgen.h"
#include "patterns.h"
#include "pb_errors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPATTERNS 1600
#define NRANDOM   1200 /* random topics, besides the samples */

typedef struct corpus {
    char **pat;
    uint64_t *uses;
    bool *hs; /* hsdb_expr takes it */
    size_t npat;
    char **topic;
    size_t *tlen;
    size_t ntopic, cap_topic;
    uint8_t *ref; /* [npat * ntopic]: 1 match, 0 not, 2 PCRE2 error */
    /* subscriptions: sub s has patterns sub_pat[sub_first[s] .. sub_first[s+1]) */
    size_t nsub;
    size_t *sub_first;
    size_t *sub_pat;
} corpus;

static void add_topic(corpus *c, const char *t, size_t len)
{
    if (c->ntopic == c->cap_topic) {
        c->cap_topic = c->cap_topic ? c->cap_topic * 2 : 1024;
        c->topic = realloc(c->topic, c->cap_topic * sizeof *c->topic);
        c->tlen = realloc(c->tlen, c->cap_topic * sizeof *c->tlen);
        assert_non_null(c->topic);
        assert_non_null(c->tlen);
    }
    c->topic[c->ntopic] = malloc(len + 1);
    assert_non_null(c->topic[c->ntopic]);
    memcpy(c->topic[c->ntopic], t, len);
    c->topic[c->ntopic][len] = 0;
    c->tlen[c->ntopic++] = len;
}

/* The pattern g just made: its sample topic, and the sample mutated
 * (case, one byte less or more, a newline, one byte changed). */
static void add_samples(corpus *c, patgen *g)
{
    add_topic(c, g->sam, g->slen);
    char t[PATGEN_TOPIC_MAX + 80];
    size_t n = g->slen;
    memcpy(t, g->sam, n);
    switch (patgen_pick(g, 5)) {
    case 0:
        for (size_t i = 0; i < n; i++)
            t[i] = patgen_flip_case(t[i]);
        break;
    case 1:
        if (n)
            n--;
        break;
    case 2:
        t[n] = n ? g->sam[patgen_pick(g, (unsigned)n)] : 'a';
        n++;
        break;
    case 3:
        t[n++] = '\n';
        break;
    default:
        if (n) {
            const char *s = patgen_alphabet[patgen_pick(g, PATGEN_NALPHA)];
            t[patgen_pick(g, (unsigned)n)] = s[0];
        }
        break;
    }
    add_topic(c, t, n);
}

/* NRANDOM random topics over the alphabet, the empty topic and a long
 * one. */
static void add_random_topics(corpus *c, patgen *g)
{
    for (int i = 0; i < NRANDOM; i++) {
        char t[PATGEN_TOPIC_MAX];
        size_t n = 0, want = patgen_pick(g, 12);
        while (n < want) {
            const char *s = patgen_alphabet[patgen_pick(g, PATGEN_NALPHA)];
            memcpy(t + n, s, strlen(s));
            n += strlen(s);
        }
        add_topic(c, t, n);
    }
    add_topic(c, "", 0);
    /* A long topic: 'a' * 240 + "c1". */
    char lt[242];
    memset(lt, 'a', 240);
    memcpy(lt + 240, "c1", 2);
    add_topic(c, lt, sizeof lt);
}

/* Subscriptions: most with one pattern, some with two or three (one of
 * them sometimes given twice). */
static void make_subscriptions(corpus *c, patgen *g)
{
    c->sub_first = calloc(NPATTERNS + 1, sizeof *c->sub_first);
    c->sub_pat = calloc(NPATTERNS * 2, sizeof *c->sub_pat);
    size_t np = 0;
    for (size_t p = 0; p < c->npat;) {
        size_t k = patgen_pick(g, 10) < 7 ? 1 : 2 + patgen_pick(g, 2);
        c->sub_first[c->nsub++] = np;
        for (size_t j = 0; j < k && p < c->npat; j++)
            c->sub_pat[np++] = p++;
        if (k > 1 && patgen_pick(g, 4) == 0) {
            c->sub_pat[np] = c->sub_pat[np - 1];
            np++;
        }
    }
    c->sub_first[c->nsub] = np;
}

static void build_corpus(corpus *c, uint64_t seed)
{
    patgen g = {.rng = seed * 0x9E3779B97F4A7C15ull + 1};
    memset(c, 0, sizeof *c);
    c->pat = calloc(NPATTERNS, sizeof *c->pat);
    c->uses = calloc(NPATTERNS, sizeof *c->uses);
    c->hs = calloc(NPATTERNS, sizeof *c->hs);
    assert_non_null(c->pat);
    size_t refused_by_pcre2 = 0;
    while (c->npat < NPATTERNS) {
        patgen_pattern(&g);
        /* A few exact copies of earlier patterns: shared expressions. */
        if (c->npat > 10 && patgen_pick(&g, 30) == 0) {
            size_t k = patgen_pick(&g, (unsigned)c->npat);
            c->pat[c->npat] = strdup(c->pat[k]);
            c->uses[c->npat] = c->uses[k];
            c->hs[c->npat] = c->hs[k];
            c->npat++;
            continue;
        }
        pcre2_code *code;
        char why[256];
        if (pattern_compile_whole(g.pat, g.plen, &code, why, sizeof why) != 0) {
            refused_by_pcre2++;
            continue;
        }
        pcre2_code_free(code);
        char expr[HSDB_EXPR_MAX];
        c->pat[c->npat] = strdup(g.pat);
        c->uses[c->npat] = g.uses;
        c->hs[c->npat] = hsdb_expr(g.pat, g.plen, expr, NULL, 0);
        /* The whitelist: syntax outside it is never given to Hyperscan,
         * and patterns made only of syntax inside it all are. */
        bool outside = g.uses >> C_HS_END != 0;
        if (outside && c->hs[c->npat])
            fail_msg("pattern \"%s\" uses syntax outside the subset but was taken", g.pat);
        if (!outside && !c->hs[c->npat])
            fail_msg("pattern \"%s\" uses only taken syntax but was refused", g.pat);
        c->npat++;
        /* Its sample, and a mutation of it. */
        add_samples(c, &g);
    }
    add_random_topics(c, &g);
    make_subscriptions(c, &g);
    print_message("seed %llu: %zu patterns (%zu refused by PCRE2 and dropped), %zu topics, %zu "
                  "subscriptions\n",
                  (unsigned long long)seed, c->npat, refused_by_pcre2, c->ntopic, c->nsub);
}

/* The reference: every pattern against every topic, with PCRE2 alone. */
static void reference(corpus *c)
{
    c->ref = malloc(c->npat * c->ntopic);
    assert_non_null(c->ref);
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    size_t errors = 0;
    for (size_t p = 0; p < c->npat; p++) {
        pcre2_code *code;
        char why[256];
        assert_int_equal(
            pattern_compile_whole(c->pat[p], strlen(c->pat[p]), &code, why, sizeof why), 0);
        for (size_t t = 0; t < c->ntopic; t++) {
            int rc = pcre2_match(code, (PCRE2_SPTR)c->topic[t], c->tlen[t], 0, 0, md, NULL);
            c->ref[p * c->ntopic + t] = rc >= 0 ? 1 : rc == PCRE2_ERROR_NOMATCH ? 0 : 2;
            errors += rc < 0 && rc != PCRE2_ERROR_NOMATCH;
        }
        pcre2_code_free(code);
    }
    pcre2_match_data_free(md);
    /* A few random patterns backtrack exponentially on the long topic and
     * hit PCRE2's own limit: no reference answer there (compare skips
     * those pairs). Far fewer than one in a thousand. */
    print_message("reference: %zu (pattern, topic) pairs over PCRE2's default limits\n", errors);
    assert_true(errors * 1000 < c->npat * c->ntopic);
}

/* The coverage of each construct: patterns using it, how many Hyperscan
 * takes, and their matching / non-matching (pattern, topic) pairs. */
static void coverage(const corpus *c)
{
    size_t pats[C_COUNT] = {0}, hs[C_COUNT] = {0}, yes[C_COUNT] = {0}, no[C_COUNT] = {0};
    size_t total_yes = 0;
    for (size_t p = 0; p < c->npat; p++) {
        size_t y = 0;
        for (size_t t = 0; t < c->ntopic; t++)
            y += c->ref[p * c->ntopic + t] == 1;
        total_yes += y;
        for (int k = 0; k < C_COUNT; k++) {
            if (!(c->uses[p] >> k & 1))
                continue;
            pats[k]++;
            hs[k] += c->hs[p];
            yes[k] += y;
            no[k] += c->ntopic - y;
        }
    }
    print_message("%-16s %8s %8s %10s %10s\n", "construct", "patterns", "hyperscan", "matching",
                  "not");
    for (int k = 0; k < C_COUNT; k++) {
        print_message("%-16s %8zu %8zu %10zu %10zu\n", patgen_construct_name[k], pats[k], hs[k],
                      yes[k], no[k]);
        /* Every construct is really exercised, both ways. */
        assert_true(pats[k] >= 5);
        assert_true(yes[k] >= 5);
        assert_true(no[k] >= 5);
        if (k < C_HS_END)
            assert_true(hs[k] >= 5);
        else
            assert_int_equal(hs[k], 0);
    }
    print_message("matching pairs: %zu of %zu\n", total_yes, c->npat * c->ntopic);
}

/* Whether Hyperscan refuses a pattern hsdb_expr takes (compiled alone):
 * then PCRE2 runs it, and it may exceed its budget. */
static bool hs_refuses(const char *pattern)
{
    char expr[HSDB_EXPR_MAX];
    const char *e = expr;
    bool refused = true;
    hs_database_t *db = NULL;
    if (hsdb_expr(pattern, strlen(pattern), expr, NULL, 0) &&
        hsdb_compile(&e, 1, &refused, &db) == 0)
        hs_free_database(db);
    return refused;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Every topic through the matcher, against the reference; `present` says
 * which subscriptions are in the set. With `budget`, the matcher's PCRE2
 * limits are low: a breach is allowed, only for a pattern Hyperscan does not
 * take (the others, young ones too, are decided by Hyperscan when PCRE2
 * gives up), and that subscription is not compared for that topic. */
static void compare(const corpus *c, matcher_set *set, const bool *present, const char *state,
                    bool budget, size_t batch)
{
    matcher_reader *r;
    assert_int_equal(matcher_reader_create(set, &r), 0);
    uint32_t *want = malloc((c->nsub + 1) * sizeof *want);
    uint32_t *got = malloc((c->nsub + 1) * sizeof *got);
    bool *skip = calloc(c->nsub + 1, sizeof *skip);
    size_t matches = 0, skipped = 0, breaches = 0;
    matcher_result chunk[MATCHER_BATCH_MAX];
    for (size_t t = 0; t < c->ntopic; t++) {
        /* The answers come batch by batch (matcher_match_batch), or one
         * by one (matcher_match) when batch is 1. */
        size_t base = t / batch * batch;
        if (t == base) {
            size_t n = c->ntopic - base < batch ? c->ntopic - base : batch;
            if (batch == 1)
                assert_int_equal(matcher_match(r, c->topic[t], c->tlen[t], &chunk[0]), 0);
            else
                assert_int_equal(matcher_match_batch(r, (const char *const *)c->topic + base,
                                                     c->tlen + base, n, chunk),
                                 0);
        }
        matcher_result res = chunk[t - base];
        size_t nw = 0;
        for (size_t s = 0; s < c->nsub; s++) {
            if (!present[s])
                continue;
            bool m = false, unknown = false;
            for (size_t k = c->sub_first[s]; k < c->sub_first[s + 1]; k++) {
                m |= c->ref[c->sub_pat[k] * c->ntopic + t] == 1;
                unknown |= c->ref[c->sub_pat[k] * c->ntopic + t] == 2;
            }
            skip[s] = unknown && !m;
            if (m)
                want[nw++] = (uint32_t)s;
        }
        /* Breaches only where PCRE2 itself gave up, or of PCRE2 patterns
         * under a low budget. */
        for (size_t b = 0; b < res.nbreaches; b++) {
            const matcher_breach *br = &res.breaches[b];
            size_t p = c->sub_pat[c->sub_first[br->id] + br->pattern];
            if (budget && (!c->hs[p] || hs_refuses(c->pat[p])) && !skip[br->id]) {
                skip[br->id] = true;
                breaches++;
                /* Its expected match, if any, is not compared either. */
                for (size_t i = 0; i < nw; i++)
                    if (want[i] == br->id)
                        memmove(&want[i], &want[i + 1], (--nw - i) * sizeof *want);
                continue;
            }
            if (!skip[br->id])
                fail_msg("%s: topic \"%s\": pattern \"%s\" breached (%d)", state, c->topic[t],
                         c->pat[p], br->pcre2_error);
        }
        size_t ng = 0;
        for (size_t i = 0; i < res.n; i++) {
            if (skip[res.ids[i]])
                skipped++;
            else
                got[ng++] = res.ids[i];
        }
        qsort(got, ng, sizeof *got, cmp_u32);
        res.n = ng;
        if (res.n != nw || memcmp(got, want, nw * sizeof *got) != 0) {
            /* Name the first subscription that differs and its patterns. */
            size_t i = 0;
            while (i < nw && i < res.n && got[i] == want[i])
                i++;
            uint32_t s = i < nw && (i >= res.n || want[i] < got[i]) ? want[i] : got[i];
            bool expected = i < nw && (i >= res.n || want[i] <= got[i]);
            print_error("%s: topic \"%s\" (%zu bytes): subscription %u %s\n", state, c->topic[t],
                        c->tlen[t], s, expected ? "missing" : "unexpected");
            for (size_t k = c->sub_first[s]; k < c->sub_first[s + 1]; k++)
                print_error("  pattern \"%s\" (hyperscan %d): PCRE2 says %d\n",
                            c->pat[c->sub_pat[k]], c->hs[c->sub_pat[k]],
                            c->ref[c->sub_pat[k] * c->ntopic + t]);
            fail();
        }
        matches += nw;
    }
    matcher_stats st;
    matcher_set_stats(set, &st);
    print_message("%-26s batch %3zu: identical: %zu topics, %zu matches; %zu shards (%zu young, "
                  "%zu KiB), %zu keyed (%zu by shapes), %zu PCRE2 patterns, %zu breaches\n",
                  state, batch, c->ntopic, matches, st.shards, st.young_shards,
                  st.shard_bytes / 1024, st.keyed, st.shaped, st.pcre_patterns, breaches);
    /* Keyed subscriptions decided by their patterns' shapes (matcher_keys.h)
     * are among those compared: the grammar's literals, classes, "." and
     * runs make dozens of them. */
    assert_true(st.keyed == 0 || st.shaped >= 10);
    if (budget)
        assert_true(breaches > 0); /* the low budget did bite */
    free(want);
    free(got);
    free(skip);
    matcher_reader_destroy(r);
}

static void add_all(const corpus *c, matcher_set *set, bool *present)
{
    for (size_t s = 0; s < c->nsub; s++) {
        const char *pats[8];
        size_t n = 0;
        for (size_t k = c->sub_first[s]; k < c->sub_first[s + 1]; k++)
            pats[n++] = c->pat[c->sub_pat[k]];
        char err[512];
        if (matcher_set_add(set, (uint32_t)s, pats, n, err, sizeof err) != 0)
            fail_msg("subscription %zu: %s", s, err);
        present[s] = true;
    }
}

static void free_corpus(corpus *c)
{
    for (size_t p = 0; p < c->npat; p++)
        free(c->pat[p]);
    for (size_t t = 0; t < c->ntopic; t++)
        free(c->topic[t]);
    free(c->pat);
    free(c->uses);
    free(c->hs);
    free(c->topic);
    free(c->tlen);
    free(c->ref);
    free(c->sub_first);
    free(c->sub_pat);
}

/* The (pattern, topic) pairs of Hyperscan patterns on which PCRE2 with
 * these limits gives up: asserted to be many, so that the young
 * subscriptions' fallback to their shard is exercised. */
static size_t over_budget(const corpus *c, uint32_t match_limit, uint32_t depth_limit)
{
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    pcre2_match_context *mctx = pcre2_match_context_create(NULL);
    pcre2_set_match_limit(mctx, match_limit);
    pcre2_set_depth_limit(mctx, depth_limit);
    size_t over = 0;
    for (size_t p = 0; p < c->npat; p++) {
        pcre2_code *code;
        char why[256];
        if (!c->hs[p])
            continue;
        assert_int_equal(
            pattern_compile_whole(c->pat[p], strlen(c->pat[p]), &code, why, sizeof why), 0);
        for (size_t t = 0; t < c->ntopic; t++) {
            int rc = pcre2_match(code, (PCRE2_SPTR)c->topic[t], c->tlen[t], 0, 0, md, mctx);
            over += rc < 0 && rc != PCRE2_ERROR_NOMATCH;
        }
        pcre2_code_free(code);
    }
    pcre2_match_data_free(md);
    pcre2_match_context_free(mctx);
    assert_true(over >= 200);
    return over;
}

static void test_differential(void **state)
{
    uint64_t seed = 1;
    const char *env = getenv("MATCHER_DIFF_SEED");
    if (env)
        seed = strtoull(env, NULL, 10);
    corpus c;
    build_corpus(&c, seed);
    reference(&c);
    coverage(&c);

    /* Limits as high as PCRE2's defaults: answers, not budgets, here. */
    matcher_limits lim = matcher_limits_default();
    lim.match_limit = 10000000;
    lim.depth_limit = 10000000;
    lim.heap_limit_kib = 20000000;
    lim.max_pcre_patterns = 0xFFFFFFFF;
    lim.shard_patterns = 16;
    bool *present = calloc(c.nsub, sizeof *present);
    matcher_set *set;
    assert_int_equal(matcher_set_create(&set, &lim), 0);
    add_all(&c, set, present);
    compare(&c, set, present, "young shards", false, MATCHER_BATCH_MAX);
    matcher_set_destroy(set);
    /* The same with no keyed subscription (every young one's Hyperscan
     * patterns through PCRE2 until compacted). */
    matcher_limits nokeys = lim;
    nokeys.key_share = 0;
    assert_int_equal(matcher_set_create(&set, &nokeys), 0);
    add_all(&c, set, present);
    compare(&c, set, present, "young shards, no keys", false, MATCHER_BATCH_MAX);
    matcher_set_destroy(set);

    /* Young, with a tiny PCRE2 budget: Hyperscan patterns that exceed it
     * are decided by their young shard, exactly. How often that happens: */
    matcher_limits low = lim;
    low.match_limit = 20;
    low.depth_limit = 50;
    print_message("budget 20: %zu (Hyperscan pattern, topic) pairs over it, decided by a young "
                  "shard\n",
                  over_budget(&c, low.match_limit, low.depth_limit));
    assert_int_equal(matcher_set_create(&set, &low), 0);
    add_all(&c, set, present);
    compare(&c, set, present, "young shards, budget 20", true, 97);
    matcher_set_destroy(set);

    assert_int_equal(matcher_set_create(&set, &lim), 0);
    add_all(&c, set, present);
    while (matcher_set_compact_wanted(set))
        assert_int_equal(matcher_set_compact(set), 0);
    compare(&c, set, present, "compacted", false, 1);
    for (size_t s = 0; s < c.nsub; s += 3) {
        assert_int_equal(matcher_set_remove(set, (uint32_t)s), 0);
        present[s] = false;
    }
    compare(&c, set, present, "a third removed", false, 256);
    while (matcher_set_compact_wanted(set))
        assert_int_equal(matcher_set_compact(set), 0);
    compare(&c, set, present, "a third removed, compacted", false, 1);
    matcher_set_destroy(set);

    lim.hyperscan = false;
    assert_int_equal(matcher_set_create(&set, &lim), 0);
    memset(present, 0, c.nsub);
    add_all(&c, set, present);
    compare(&c, set, present, "PCRE2 only", false, 64);
    matcher_set_destroy(set);
    free(present);
    free_corpus(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_differential),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
