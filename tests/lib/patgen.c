/* patgen - see patgen.h. */
#include "patgen.h"

#include <stdio.h>
#include <string.h>

const char *const patgen_construct_name[C_COUNT] = {
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

static uint64_t rnd(patgen *g)
{
    /* xorshift64*: deterministic for a seed. */
    g->rng ^= g->rng >> 12;
    g->rng ^= g->rng << 25;
    g->rng ^= g->rng >> 27;
    return g->rng * 2685821657736338717ull;
}

unsigned patgen_pick(patgen *g, unsigned n)
{
    return (unsigned)(rnd(g) % n);
}

static void P(patgen *g, const char *s)
{
    size_t n = strlen(s);
    if (g->plen + n < sizeof g->pat) {
        memcpy(g->pat + g->plen, s, n);
        g->plen += n;
    }
}

static void S(patgen *g, const char *s, size_t n)
{
    if (g->slen + n < sizeof g->sam) {
        memcpy(g->sam + g->slen, s, n);
        g->slen += n;
    }
}

static void S1(patgen *g, char c)
{
    S(g, &c, 1);
}

/* The bytes topics are made of: ASCII of every kind the constructs care
 * about, UTF-8 sequences, a newline and a byte >= 0x80 alone. */
const char *const patgen_alphabet[] = {"a",    "b",  "c",        "x",        "y",
                                       "z",    "A",  "B",        "C",        "X",
                                       "Z",    "0",  "1",        "9",        ".",
                                       "-",    "_",  "/",        ":",        " ",
                                       "\t",   "\n", "\xc3\xa9", "\xc3\x89", "\xe6\x97\xa5",
                                       "\xff", "[",  "]",        "\\",       "^",
                                       "$",    "*"};
_Static_assert(sizeof patgen_alphabet / sizeof *patgen_alphabet == PATGEN_NALPHA,
               "PATGEN_NALPHA is the alphabet's size");

char patgen_flip_case(char c)
{
    if (c >= 'a' && c <= 'z')
        return (char)(c - 32);
    if (c >= 'A' && c <= 'Z')
        return (char)(c + 32);
    return c;
}

/* A literal: a letter, digit or harmless punctuation, or a UTF-8 char. */
static void gen_literal(patgen *g)
{
    static const char lits[] = "abcxyzABCXZ019-_/:, #";
    if (patgen_pick(g, 8) == 0) {
        static const char *const u[] = {"\xc3\xa9", "\xc3\x89", "\xe6\x97\xa5"};
        const char *s = u[patgen_pick(g, 3)];
        P(g, s);
        S(g, s, strlen(s));
        g->uses |= 1ull << C_UTF8;
        return;
    }
    char c = lits[patgen_pick(g, sizeof lits - 1)];
    char s[2] = {c, 0};
    P(g, s);
    S1(g, g->caseless && patgen_pick(g, 2) ? patgen_flip_case(c) : c);
    g->uses |= 1ull << C_LIT;
}

static void gen_shorthand(patgen *g, bool sample)
{
    static const char *const sh[] = {"\\d", "\\w", "\\s", "\\D", "\\W", "\\S"};
    static const char *const ex[] = {"5", "q", " ", "x", "-", "k"};
    unsigned k = patgen_pick(g, 6);
    P(g, sh[k]);
    if (sample)
        S(g, ex[k], 1);
    g->uses |= 1ull << C_SHORT;
}

/* A class; its sample is one of its members (or, negated, a byte that is
 * likely not one). */
static void gen_class(patgen *g)
{
    bool neg = patgen_pick(g, 4) == 0;
    char members[16];
    size_t nm = 0;
    P(g, neg ? "[^" : "[");
    g->uses |= 1ull << (neg ? C_NCLASS : C_CLASS);
    unsigned n = 1 + patgen_pick(g, 3);
    for (unsigned i = 0; i < n; i++) {
        switch (patgen_pick(g, 7)) {
        case 0: {
            static const char *const ranges[] = {"a-c", "x-z", "0-9", "A-C", "Z-a", "!-/"};
            static const char lo[] = "ax0AZ!";
            unsigned r = patgen_pick(g, 6);
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
            unsigned e = patgen_pick(g, 6);
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
            char c = lits[patgen_pick(g, sizeof lits - 1)];
            char s[2] = {c, 0};
            P(g, s);
            members[nm++] = c;
            break;
        }
        }
    }
    P(g, "]");
    if (neg) {
        const char *s = patgen_alphabet[patgen_pick(g, PATGEN_NALPHA)];
        S(g, s, strlen(s));
    } else {
        char c = members[patgen_pick(g, (unsigned)nm)];
        S1(g, g->caseless && patgen_pick(g, 2) ? patgen_flip_case(c) : c);
    }
}

static void gen_alt(patgen *g, int depth);

/* Syntax Hyperscan is not given (or that PCRE2 refuses: then the pattern
 * is dropped, as a client's would be refused). */
static void gen_exotic(patgen *g, int depth)
{
    switch (patgen_pick(g, 16)) {
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
        P(g, patgen_pick(g, 2) ? "(?=[a-z])" : "(?![0-9])");
        g->uses |= 1ull << C_LOOKAROUND;
        break;
    case 2:
        P(g, patgen_pick(g, 2) ? "(?<=a)" : "(?<!b)");
        g->uses |= 1ull << C_LOOKAROUND;
        break;
    case 3:
        P(g, patgen_pick(g, 2) ? "\\b" : "\\B");
        g->uses |= 1ull << C_WORDB;
        break;
    case 4:
        P(g, "(?>");
        gen_alt(g, depth + 1);
        P(g, ")");
        g->uses |= 1ull << C_ATOMIC;
        break;
    case 5:
        P(g, patgen_pick(g, 2) ? "a*+" : "[0-9]++");
        S(g, "a", patgen_pick(g, 2));
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
        P(g, patgen_pick(g, 2) ? "[[:alpha:]]" : "[[:digit:][:punct:]]");
        S(g, patgen_pick(g, 2) ? "q" : "7", 1);
        g->uses |= 1ull << C_POSIX;
        break;
    case 10: {
        static const char *const o[] = {"\\h",  "\\R", "\\N", "\\x{41}", "\\101",
                                        "\\cA", "\\e", "\\a", "\\p{L}",  "\\x4-"};
        static const char *const os[] = {" ",    "\n",   "q",    "A", "A",
                                         "\x01", "\x1b", "\x07", "z", "\x04-"};
        unsigned k = patgen_pick(g, 10);
        P(g, o[k]);
        S(g, os[k], strlen(os[k]));
        g->uses |= 1ull << C_OTHER;
        break;
    }
    case 11: {
        /* PCRE2 reads these as literals; not taken. */
        static const char *const o[] = {"a{,3}", "x{", "}", "]", "[]a]", "a{1,2}{2}"};
        static const char *const os[] = {"a{,3}", "x{", "}", "]", "]", "aaa"};
        unsigned k = patgen_pick(g, 6);
        P(g, o[k]);
        S(g, os[k], strlen(os[k]));
        g->uses |= 1ull << C_OTHER;
        break;
    }
    case 12:
        P(g, patgen_pick(g, 2) ? "\\z" : "\\Z");
        g->uses |= 1ull << C_OTHER;
        break;
    case 13:
        P(g, patgen_pick(g, 2) ? "a$b|c" : "x|^y");
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
static void gen_item(patgen *g, int depth, bool exotic)
{
    size_t s0 = g->slen;
    bool quantifiable = true;
    unsigned k = patgen_pick(g, exotic ? 26 : 20);
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
            const char *s = patgen_alphabet[patgen_pick(g, PATGEN_NALPHA)];
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
        unsigned h = patgen_pick(g, 5);
        P(g, hx[h]);
        S(g, hs[h], h == 4 ? 1 : strlen(hs[h]));
        g->uses |= 1ull << C_HEX;
        break;
    }
    case 10: {
        static const char esc[] = ".\\-/*+?()[]{}|$^";
        char c = esc[patgen_pick(g, sizeof esc - 1)];
        char s[3] = {'\\', c, 0};
        P(g, s);
        S1(g, c);
        g->uses |= 1ull << C_ESC;
        break;
    }
    case 11: {
        static const char *const ct[] = {"\\t", "\\n", "\\r"};
        static const char cv[] = "\t\n\r";
        unsigned c = patgen_pick(g, 3);
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
            unsigned kind = patgen_pick(g, 6);
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
                P(g, patgen_pick(g, 2) ? "(?i:" : "(?i-s:");
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
        if (patgen_pick(g, 2)) {
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
    if (!quantifiable || patgen_pick(g, 3) != 0)
        return;
    /* A quantifier: the sample repeats the atom's sample. */
    char atom[PATGEN_TOPIC_MAX];
    size_t alen = g->slen - s0;
    if (alen > 40)
        return;
    memcpy(atom, g->sam + s0, alen);
    g->slen = s0;
    unsigned lo, hi;
    switch (patgen_pick(g, 6)) {
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
        lo = patgen_pick(g, 3);
        hi = lo + patgen_pick(g, 3);
        switch (patgen_pick(g, 3)) {
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
    if (patgen_pick(g, 4) == 0) {
        P(g, "?");
        g->uses |= 1ull << C_LAZY;
    }
    unsigned times = lo + patgen_pick(g, hi - lo + 1);
    for (unsigned t = 0; t < times; t++)
        S(g, atom, alen);
}

static void gen_seq(patgen *g, int depth)
{
    unsigned n = 1 + patgen_pick(g, depth == 0 ? 4 : 3);
    bool exotic = patgen_pick(g, 3) == 0;
    for (unsigned i = 0; i < n; i++)
        gen_item(g, depth, exotic && i == 0);
}

static void gen_alt(patgen *g, int depth)
{
    unsigned n = patgen_pick(g, 4) == 0 ? 2 + patgen_pick(g, 2) : 1;
    unsigned chosen = patgen_pick(g, n);
    for (unsigned i = 0; i < n; i++) {
        if (i) {
            P(g, "|");
            g->uses |= 1ull << C_ALT;
        }
        size_t s0 = g->slen;
        bool save_i = g->caseless, save_s = g->dotall;
        if (n > 1 && patgen_pick(g, 10) == 0) {
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
void patgen_pattern(patgen *g)
{
    g->plen = g->slen = 0;
    g->uses = 0;
    g->caseless = g->dotall = false;
    g->groups = 0;
    g->g1done = false;
    bool caret = patgen_pick(g, 8) == 0, dollar = patgen_pick(g, 8) == 0;
    if (caret)
        P(g, "^");
    if (patgen_pick(g, 10) == 0) {
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
