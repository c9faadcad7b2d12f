/* Differential test of server/matcher.c: for thousands of generated
 * patterns and topics, the subscriptions the matcher returns are exactly
 * those for which running every pattern with PCRE2 (pattern_compile_whole,
 * the daemon's definition of a whole-topic match) finds a match.
 *
 * Patterns come from a small grammar that mixes the syntax Hyperscan takes
 * (hsdb.h: literals, UTF-8 bytes, escapes, ".", classes and ranges,
 * shorthands, groups, alternations, quantifiers greedy and lazy, (?i),
 * (?s), anchors) with syntax that must fall back to PCRE2 (back-references,
 * lookaround, \b, atomic groups, possessive quantifiers, (?x), (?m),
 * \Q..\E, POSIX classes, other escapes). Each pattern comes with sample
 * topics built to match it, which are then mutated (case, one byte more or
 * less, a newline); random topics over the same bytes complete the set.
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
#include "patterns.h"
#include "pb_errors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPATTERNS 1600
#define NRANDOM   1200 /* random topics, besides the samples */
#define PAT_MAX   200
#define TOPIC_MAX 300

/* The constructs, Hyperscan's first (up to C_HS_END). */
enum {
    C_LIT,
    C_UTF8,
    C_DOT,
    C_CLASS,
    C_NCLASS,
    C_RANGE,
    C_SHORT,
    C_HEX,
    C_ESC,
    C_CTRL,
    C_GROUP,
    C_NCGROUP,
    C_ALT,
    C_EMPTYALT,
    C_STAR,
    C_PLUS,
    C_OPT,
    C_BOUND,
    C_LAZY,
    C_CASELESS,
    C_DOTALL,
    C_ANCHOR,
    C_HS_END,
    C_BACKREF = C_HS_END,
    C_LOOKAROUND,
    C_WORDB,
    C_ATOMIC,
    C_POSSESSIVE,
    C_XMODE,
    C_MULTILINE,
    C_QUOTE,
    C_POSIX,
    C_OTHER,
    C_COUNT
};

static const char *const cname[C_COUNT] = {
    "literal",
    "UTF-8 bytes",
    "dot",
    "class",
    "negated class",
    "range",
    "\\d\\w\\s",
    "\\xHH",
    "\\punct",
    "\\t\\n\\r",
    "group",
    "(?:group)",
    "alternation",
    "empty branch",
    "*",
    "+",
    "?",
    "{n,m}",
    "lazy",
    "(?i)",
    "(?s)",
    "^ and $",
    "back-reference",
    "lookaround",
    "\\b \\B",
    "atomic group",
    "possessive",
    "(?x)",
    "(?m)",
    "\\Q..\\E",
    "POSIX class",
    "other syntax",
};

typedef struct gen {
    uint64_t rng;
    char pat[PAT_MAX + 64];
    size_t plen;
    char sam[TOPIC_MAX + 64];
    size_t slen;
    uint64_t uses;
    bool caseless, dotall;
    int groups;  /* capturing groups opened */
    char g1[64]; /* the sample of group 1, for \1 */
    size_t g1len;
    bool g1done;
} gen;

static uint64_t rnd(gen *g)
{
    /* xorshift64*: deterministic for a seed. */
    g->rng ^= g->rng >> 12;
    g->rng ^= g->rng << 25;
    g->rng ^= g->rng >> 27;
    return g->rng * 2685821657736338717ull;
}

static unsigned pick(gen *g, unsigned n)
{
    return (unsigned)(rnd(g) % n);
}

static void P(gen *g, const char *s)
{
    size_t n = strlen(s);
    if (g->plen + n < sizeof g->pat) {
        memcpy(g->pat + g->plen, s, n);
        g->plen += n;
    }
}

static void S(gen *g, const char *s, size_t n)
{
    if (g->slen + n < sizeof g->sam) {
        memcpy(g->sam + g->slen, s, n);
        g->slen += n;
    }
}

static void S1(gen *g, char c)
{
    S(g, &c, 1);
}

/* The bytes topics are made of: ASCII of every kind the constructs care
 * about, UTF-8 sequences, a newline and a byte >= 0x80 alone. */
static const char *const alphabet[] = {"a",    "b",  "c",        "x",        "y",
                                       "z",    "A",  "B",        "C",        "X",
                                       "Z",    "0",  "1",        "9",        ".",
                                       "-",    "_",  "/",        ":",        " ",
                                       "\t",   "\n", "\xc3\xa9", "\xc3\x89", "\xe6\x97\xa5",
                                       "\xff", "[",  "]",        "\\",       "^",
                                       "$",    "*"};
#define NALPHA (sizeof alphabet / sizeof *alphabet)

static char flip_case(char c)
{
    if (c >= 'a' && c <= 'z')
        return (char)(c - 32);
    if (c >= 'A' && c <= 'Z')
        return (char)(c + 32);
    return c;
}

/* A literal: a letter, digit or harmless punctuation, or a UTF-8 char. */
static void gen_literal(gen *g)
{
    static const char lits[] = "abcxyzABCXZ019-_/:, #";
    if (pick(g, 8) == 0) {
        static const char *const u[] = {"\xc3\xa9", "\xc3\x89", "\xe6\x97\xa5"};
        const char *s = u[pick(g, 3)];
        P(g, s);
        S(g, s, strlen(s));
        g->uses |= 1ull << C_UTF8;
        return;
    }
    char c = lits[pick(g, sizeof lits - 1)];
    char s[2] = {c, 0};
    P(g, s);
    S1(g, g->caseless && pick(g, 2) ? flip_case(c) : c);
    g->uses |= 1ull << C_LIT;
}

static void gen_shorthand(gen *g, bool sample)
{
    static const char *const sh[] = {"\\d", "\\w", "\\s", "\\D", "\\W", "\\S"};
    static const char *const ex[] = {"5", "q", " ", "x", "-", "k"};
    unsigned k = pick(g, 6);
    P(g, sh[k]);
    if (sample)
        S(g, ex[k], 1);
    g->uses |= 1ull << C_SHORT;
}

/* A class; its sample is one of its members (or, negated, a byte that is
 * likely not one). */
static void gen_class(gen *g)
{
    bool neg = pick(g, 4) == 0;
    char members[16];
    size_t nm = 0;
    P(g, neg ? "[^" : "[");
    g->uses |= 1ull << (neg ? C_NCLASS : C_CLASS);
    unsigned n = 1 + pick(g, 3);
    for (unsigned i = 0; i < n; i++) {
        switch (pick(g, 7)) {
        case 0: {
            static const char *const ranges[] = {"a-c", "x-z", "0-9", "A-C", "Z-a", "!-/"};
            static const char lo[] = "ax0AZ!";
            unsigned r = pick(g, 6);
            P(g, ranges[r]);
            members[nm++] = lo[r];
            g->uses |= 1ull << C_RANGE;
            break;
        }
        case 1:
            gen_shorthand(g, false);
            members[nm++] = ' ';
            break;
        case 2: {
            static const char *const esc[] = {"\\]", "\\-", "\\\\", "\\^", "\\x41", "\\t"};
            static const char val[] = "]-\\^A\t";
            unsigned e = pick(g, 6);
            P(g, esc[e]);
            members[nm++] = val[e];
            g->uses |= 1ull << (e == 4 ? C_HEX : C_ESC);
            break;
        }
        case 3:
            P(g, "\xc3\xa9"); /* two bytes, two members */
            members[nm++] = '\xc3';
            g->uses |= 1ull << C_UTF8;
            break;
        default: {
            static const char lits[] = "abcxyzAB01.$*";
            char c = lits[pick(g, sizeof lits - 1)];
            char s[2] = {c, 0};
            P(g, s);
            members[nm++] = c;
            break;
        }
        }
    }
    P(g, "]");
    if (neg) {
        const char *s = alphabet[pick(g, NALPHA)];
        S(g, s, strlen(s));
    } else {
        char c = members[pick(g, (unsigned)nm)];
        S1(g, g->caseless && pick(g, 2) ? flip_case(c) : c);
    }
}

static void gen_alt(gen *g, int depth);

/* Syntax Hyperscan is not given (or that PCRE2 refuses: then the pattern
 * is dropped, as a client's would be refused). */
static void gen_exotic(gen *g, int depth)
{
    switch (pick(g, 16)) {
    case 0:
        if (g->groups > 0 && g->g1done) {
            P(g, "\\1");
            S(g, g->g1, g->g1len);
        } else {
            P(g, "(x)\\1");
            S(g, "xx", 2);
            g->groups++;
        }
        g->uses |= 1ull << C_BACKREF;
        break;
    case 1:
        P(g, pick(g, 2) ? "(?=[a-z])" : "(?![0-9])");
        g->uses |= 1ull << C_LOOKAROUND;
        break;
    case 2:
        P(g, pick(g, 2) ? "(?<=a)" : "(?<!b)");
        g->uses |= 1ull << C_LOOKAROUND;
        break;
    case 3:
        P(g, pick(g, 2) ? "\\b" : "\\B");
        g->uses |= 1ull << C_WORDB;
        break;
    case 4:
        P(g, "(?>");
        gen_alt(g, depth + 1);
        P(g, ")");
        g->uses |= 1ull << C_ATOMIC;
        break;
    case 5:
        P(g, pick(g, 2) ? "a*+" : "[0-9]++");
        S(g, "a", pick(g, 2));
        g->uses |= 1ull << C_POSSESSIVE;
        break;
    case 6:
        P(g, "(?x: a b #c\n)");
        S(g, "ab", 2);
        g->uses |= 1ull << C_XMODE;
        break;
    case 7:
        P(g, "(?m:x$\\n^y)");
        S(g, "x\ny", 3);
        g->uses |= 1ull << C_MULTILINE;
        break;
    case 8:
        P(g, "\\Qa.*\\E");
        S(g, "a.*", 3);
        g->uses |= 1ull << C_QUOTE;
        break;
    case 9:
        P(g, pick(g, 2) ? "[[:alpha:]]" : "[[:digit:][:punct:]]");
        S(g, pick(g, 2) ? "q" : "7", 1);
        g->uses |= 1ull << C_POSIX;
        break;
    case 10: {
        static const char *const o[] = {"\\h",  "\\R", "\\N", "\\x{41}", "\\101",
                                        "\\cA", "\\e", "\\a", "\\p{L}",  "\\x4-"};
        static const char *const os[] = {" ",    "\n",   "q",    "A", "A",
                                         "\x01", "\x1b", "\x07", "z", "\x04-"};
        unsigned k = pick(g, 10);
        P(g, o[k]);
        S(g, os[k], strlen(os[k]));
        g->uses |= 1ull << C_OTHER;
        break;
    }
    case 11: {
        /* PCRE2 reads these as literals; not taken. */
        static const char *const o[] = {"a{,3}", "x{", "}", "]", "[]a]", "a{1,2}{2}"};
        static const char *const os[] = {"a{,3}", "x{", "}", "]", "]", "aaa"};
        unsigned k = pick(g, 6);
        P(g, o[k]);
        S(g, os[k], strlen(os[k]));
        g->uses |= 1ull << C_OTHER;
        break;
    }
    case 12:
        P(g, pick(g, 2) ? "\\z" : "\\Z");
        g->uses |= 1ull << C_OTHER;
        break;
    case 13:
        P(g, pick(g, 2) ? "a$b|c" : "x|^y");
        S(g, "c", 1);
        g->uses |= 1ull << C_OTHER;
        break;
    case 14:
        P(g, "(?<n>ab)");
        S(g, "ab", 2);
        g->groups++;
        g->uses |= 1ull << C_OTHER;
        break;
    default:
        P(g, "(?|(a)|(b))");
        S(g, "b", 1);
        g->groups++;
        g->uses |= 1ull << C_OTHER;
        break;
    }
}

/* An item: an atom and maybe a quantifier. */
static void gen_item(gen *g, int depth, bool exotic)
{
    size_t s0 = g->slen;
    bool quantifiable = true;
    unsigned k = pick(g, exotic ? 26 : 20);
    if (k >= 20) {
        gen_exotic(g, depth);
        return;
    }
    switch (k) {
    case 0:
    case 1:
    case 2:
    case 3:
    case 4:
        gen_literal(g);
        break;
    case 5:
        P(g, ".");
        {
            const char *s = alphabet[pick(g, NALPHA)];
            if (s[0] == '\n' && !g->dotall)
                s = "q";
            S(g, s, strlen(s));
        }
        g->uses |= 1ull << C_DOT;
        break;
    case 6:
    case 7:
        gen_class(g);
        break;
    case 8:
        gen_shorthand(g, true);
        break;
    case 9: {
        static const char *const hx[] = {"\\x41", "\\x2e", "\\x0a", "\\xc3\\xa9", "\\x00"};
        static const char *const hs[] = {"A", ".", "\n", "\xc3\xa9", "\0"};
        unsigned h = pick(g, 5);
        P(g, hx[h]);
        S(g, hs[h], h == 4 ? 1 : strlen(hs[h]));
        g->uses |= 1ull << C_HEX;
        break;
    }
    case 10: {
        static const char esc[] = ".\\-/*+?()[]{}|$^";
        char c = esc[pick(g, sizeof esc - 1)];
        char s[3] = {'\\', c, 0};
        P(g, s);
        S1(g, c);
        g->uses |= 1ull << C_ESC;
        break;
    }
    case 11: {
        static const char *const ct[] = {"\\t", "\\n", "\\r"};
        static const char cv[] = "\t\n\r";
        unsigned c = pick(g, 3);
        P(g, ct[c]);
        S1(g, cv[c]);
        g->uses |= 1ull << C_CTRL;
        break;
    }
    case 12:
    case 13:
    case 14:
    case 15:
        if (depth >= 3) {
            gen_literal(g);
            break;
        }
        {
            bool save_i = g->caseless, save_s = g->dotall;
            unsigned kind = pick(g, 6);
            if (kind < 2) {
                int mine = ++g->groups;
                P(g, "(");
                size_t at = g->slen;
                gen_alt(g, depth + 1);
                if (mine == 1 && g->slen - at < sizeof g->g1) {
                    memcpy(g->g1, g->sam + at, g->slen - at);
                    g->g1len = g->slen - at;
                    g->g1done = true;
                }
                g->uses |= 1ull << C_GROUP;
            } else if (kind < 4) {
                P(g, "(?:");
                gen_alt(g, depth + 1);
                g->uses |= 1ull << C_NCGROUP;
            } else if (kind == 4) {
                P(g, pick(g, 2) ? "(?i:" : "(?i-s:");
                g->caseless = true;
                gen_alt(g, depth + 1);
                g->uses |= 1ull << C_CASELESS;
            } else {
                P(g, "(?s:");
                g->dotall = true;
                gen_alt(g, depth + 1);
                g->uses |= 1ull << C_DOTALL;
            }
            P(g, ")");
            g->caseless = save_i;
            g->dotall = save_s;
        }
        break;
    case 16:
        /* An inline option to the end of the group. */
        if (pick(g, 2)) {
            P(g, "(?i)");
            g->caseless = true;
            g->uses |= 1ull << C_CASELESS;
        } else {
            P(g, "(?s)");
            g->dotall = true;
            g->uses |= 1ull << C_DOTALL;
        }
        quantifiable = false;
        break;
    default:
        gen_literal(g);
        break;
    }
    if (!quantifiable || pick(g, 3) != 0)
        return;
    /* A quantifier: the sample repeats the atom's sample. */
    char atom[TOPIC_MAX];
    size_t alen = g->slen - s0;
    if (alen > 40)
        return;
    memcpy(atom, g->sam + s0, alen);
    g->slen = s0;
    unsigned lo, hi;
    switch (pick(g, 6)) {
    case 0:
        P(g, "*");
        lo = 0;
        hi = 3;
        g->uses |= 1ull << C_STAR;
        break;
    case 1:
        P(g, "+");
        lo = 1;
        hi = 3;
        g->uses |= 1ull << C_PLUS;
        break;
    case 2:
        P(g, "?");
        lo = 0;
        hi = 1;
        g->uses |= 1ull << C_OPT;
        break;
    default: {
        char q[32];
        lo = pick(g, 3);
        hi = lo + pick(g, 3);
        switch (pick(g, 3)) {
        case 0:
            snprintf(q, sizeof q, "{%u}", lo);
            hi = lo;
            break;
        case 1:
            snprintf(q, sizeof q, "{%u,}", lo);
            hi = lo + 2;
            break;
        default:
            snprintf(q, sizeof q, "{%u,%u}", lo, hi);
            break;
        }
        P(g, q);
        /* "{0}": PCRE2 takes it, Hyperscan does not. */
        g->uses |= 1ull << (hi == 0 ? C_OTHER : C_BOUND);
        break;
    }
    }
    if (pick(g, 4) == 0) {
        P(g, "?");
        g->uses |= 1ull << C_LAZY;
    }
    unsigned times = lo + pick(g, hi - lo + 1);
    for (unsigned t = 0; t < times; t++)
        S(g, atom, alen);
}

static void gen_seq(gen *g, int depth)
{
    unsigned n = 1 + pick(g, depth == 0 ? 4 : 3);
    bool exotic = pick(g, 3) == 0;
    for (unsigned i = 0; i < n; i++)
        gen_item(g, depth, exotic && i == 0);
}

static void gen_alt(gen *g, int depth)
{
    unsigned n = pick(g, 4) == 0 ? 2 + pick(g, 2) : 1;
    unsigned chosen = pick(g, n);
    for (unsigned i = 0; i < n; i++) {
        if (i) {
            P(g, "|");
            g->uses |= 1ull << C_ALT;
        }
        size_t s0 = g->slen;
        bool save_i = g->caseless, save_s = g->dotall;
        if (n > 1 && pick(g, 10) == 0) {
            g->uses |= 1ull << C_EMPTYALT; /* an empty branch */
        } else {
            gen_seq(g, depth);
        }
        /* The sample takes one branch; inline options end with it. */
        if (i != chosen)
            g->slen = s0;
        g->caseless = save_i;
        g->dotall = save_s;
    }
}

/* One pattern and its sample. */
static void gen_pattern(gen *g)
{
    g->plen = g->slen = 0;
    g->uses = 0;
    g->caseless = g->dotall = false;
    g->groups = 0;
    g->g1done = false;
    bool caret = pick(g, 8) == 0, dollar = pick(g, 8) == 0;
    if (caret)
        P(g, "^");
    if (pick(g, 10) == 0) {
        P(g, "(?i)");
        g->caseless = true;
        g->uses |= 1ull << C_CASELESS;
    }
    gen_alt(g, 0);
    if (dollar)
        P(g, "$");
    if (caret || dollar)
        g->uses |= 1ull << C_ANCHOR;
    g->pat[g->plen] = 0;
}

/* ------------------------------------------------------------------ */

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

static void build_corpus(corpus *c, uint64_t seed)
{
    gen g = {.rng = seed * 0x9E3779B97F4A7C15ull + 1};
    memset(c, 0, sizeof *c);
    c->pat = calloc(NPATTERNS, sizeof *c->pat);
    c->uses = calloc(NPATTERNS, sizeof *c->uses);
    c->hs = calloc(NPATTERNS, sizeof *c->hs);
    assert_non_null(c->pat);
    size_t refused_by_pcre2 = 0;
    while (c->npat < NPATTERNS) {
        gen_pattern(&g);
        /* A few exact copies of earlier patterns: shared expressions. */
        if (c->npat > 10 && pick(&g, 30) == 0) {
            size_t k = pick(&g, (unsigned)c->npat);
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
        /* Its sample, and mutations of it. */
        add_topic(c, g.sam, g.slen);
        char t[TOPIC_MAX + 80];
        size_t n = g.slen;
        memcpy(t, g.sam, n);
        switch (pick(&g, 5)) {
        case 0:
            for (size_t i = 0; i < n; i++)
                t[i] = flip_case(t[i]);
            break;
        case 1:
            if (n)
                n--;
            break;
        case 2:
            t[n] = n ? g.sam[pick(&g, (unsigned)n)] : 'a';
            n++;
            break;
        case 3:
            t[n++] = '\n';
            break;
        default:
            if (n) {
                const char *s = alphabet[pick(&g, NALPHA)];
                t[pick(&g, (unsigned)n)] = s[0];
            }
            break;
        }
        add_topic(c, t, n);
    }
    for (int i = 0; i < NRANDOM; i++) {
        char t[TOPIC_MAX];
        size_t n = 0, want = pick(&g, 12);
        while (n < want) {
            const char *s = alphabet[pick(&g, NALPHA)];
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

    /* Subscriptions: most with one pattern, some with two or three (one of
     * them sometimes given twice). */
    c->sub_first = calloc(NPATTERNS + 1, sizeof *c->sub_first);
    c->sub_pat = calloc(NPATTERNS * 2, sizeof *c->sub_pat);
    size_t np = 0;
    for (size_t p = 0; p < c->npat;) {
        size_t k = pick(&g, 10) < 7 ? 1 : 2 + pick(&g, 2);
        c->sub_first[c->nsub++] = np;
        for (size_t j = 0; j < k && p < c->npat; j++)
            c->sub_pat[np++] = p++;
        if (k > 1 && pick(&g, 4) == 0) {
            c->sub_pat[np] = c->sub_pat[np - 1];
            np++;
        }
    }
    c->sub_first[c->nsub] = np;
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
        print_message("%-16s %8zu %8zu %10zu %10zu\n", cname[k], pats[k], hs[k], yes[k], no[k]);
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
