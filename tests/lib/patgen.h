/*
 * patgen - the pattern generator of tests/unit/test_matcher_diff.c: topic
 * patterns from a small grammar that mixes the syntax Hyperscan takes
 * (hsdb.h: literals, UTF-8 bytes, escapes, ".", classes and ranges,
 * shorthands, groups, alternations, quantifiers greedy and lazy, (?i),
 * (?s), anchors) with syntax that must fall back to PCRE2 (back-references,
 * lookaround, \b, atomic groups, possessive quantifiers, (?x), (?m),
 * \Q..\E, POSIX classes, other escapes). Each pattern comes with a sample
 * topic built to match it and the set of constructs it uses.
 * Deterministic for a seed (xorshift64*).
 */
#ifndef PB_TEST_PATGEN_H
#define PB_TEST_PATGEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PATGEN_PAT_MAX   200
#define PATGEN_TOPIC_MAX 300

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

/* Each construct's name, for the coverage table. */
extern const char *const patgen_construct_name[C_COUNT];

/* The generator's state; rng is the seed (not 0), the rest its output. */
typedef struct patgen {
    uint64_t rng;
    char pat[PATGEN_PAT_MAX + 64];
    size_t plen;
    char sam[PATGEN_TOPIC_MAX + 64];
    size_t slen;
    uint64_t uses;
    bool caseless, dotall;
    int groups;  /* capturing groups opened */
    char g1[64]; /* the sample of group 1, for \1 */
    size_t g1len;
    bool g1done;
} patgen;

/* One pattern (pat, plen, NUL-terminated) and its sample (sam, slen), and
 * the constructs it uses (uses: bit C_x). */
void patgen_pattern(patgen *g);
/* A number below n, from the generator's sequence. */
unsigned patgen_pick(patgen *g, unsigned n);
/* c in the other case if it is an ASCII letter, else c. */
char patgen_flip_case(char c);

/* The bytes topics are made of: ASCII of every kind the constructs care
 * about, UTF-8 sequences, a newline and a byte >= 0x80 alone. */
#define PATGEN_NALPHA 32
extern const char *const patgen_alphabet[PATGEN_NALPHA];

#endif
