/*
 * matcher_keys - topic keys: a literal that every topic a pattern matches
 * must start with (a prefix key) or end with (a suffix key), and a
 * snapshot's index of them, so that a topic finds the few subscriptions
 * whose patterns can match it with a hash lookup or two instead of a scan
 * of every shard (see matcher.h, "Keyed subscriptions").
 *
 * A key is a filter, never a decision: a subscription it finds is then
 * decided by its own Hyperscan database. So a key only has to be sound (no
 * topic the pattern matches lacks it); mkey_extract is conservative and
 * gives up on anything it does not read exactly: it takes the leading and
 * trailing runs of plain or escaped-punctuation bytes of a pattern at its
 * top level, not followed by a quantifier, and gives up on a top-level
 * "|", on inline options "(?" other than "(?:", on "^" or "$" other than a
 * leading "^" and a trailing "$", and on escapes other than escaped
 * punctuation and \d \D \w \W \s \S. (Whole-topic match, no UTF and no
 * caseless mode: patterns.h's pattern_compile_whole.)
 *
 * Threads: mkey_extract is pure; an index is built once (under the set's
 * lock) and then only read, by any number of readers at once.
 */
#ifndef PB_MATCHER_KEYS_H
#define PB_MATCHER_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Keys are cut to this many bytes (the first ones of a prefix, the last
 * ones of a suffix): still required, and at most MKEY_MAX lengths to look
 * up per side. */
#define MKEY_MAX 16

enum { MKEY_NONE = 0, MKEY_PREFIX = 1, MKEY_SUFFIX = 2 };

typedef struct mkey {
    uint8_t side; /* MKEY_* */
    uint8_t len;  /* 1..MKEY_MAX, 0 with MKEY_NONE */
    char b[MKEY_MAX];
} mkey;

/* The prefix and suffix keys of pattern[0..len) (either may come back
 * MKEY_NONE). */
void mkey_extract(const char *pattern, size_t len, mkey *prefix, mkey *suffix);

/*
 * A pattern's shape, when it is exactly literal bytes, at most one run of
 * one byte class ("x*" or "x+" where x is a literal, ".", "\d" or a plain
 * class "[...]"), then literal bytes: "orders\.eu\..*", "t\.[0-9]*017".
 * Its whole-topic matches are then decided by mkey_shape_match without
 * Hyperscan (a keyed subscription's confirming scan was ~9% of the fan-out
 * bench's samples): the prefix and suffix bytes in place, every byte
 * between them in the class, at least one with "+". Meaning as PCRE2
 * compiles it for a whole topic (no UTF, no caseless mode, "." is any byte
 * but \n, "\d" is [0-9], a negated class takes \n too).
 * mkey_shape_parse gives up (false) on anything else: groups, "|",
 * anchors, "?", "{", lazy or possessive quantifiers, escapes other than
 * escaped punctuation and \d, POSIX classes, a class with an escape other
 * than punctuation, literals longer than MKEY_SHAPE_LIT.
 */
#define MKEY_SHAPE_LIT 64

typedef struct mkey_shape {
    uint8_t pre_len, suf_len;
    bool run;       /* a class run between prefix and suffix */
    bool run_plus;  /* ... of at least one byte */
    uint64_t cls[4]; /* the run's bytes, a bit each */
    char pre[MKEY_SHAPE_LIT], suf[MKEY_SHAPE_LIT];
} mkey_shape;

bool mkey_shape_parse(const char *pattern, size_t len, mkey_shape *out);
bool mkey_shape_match(const mkey_shape *s, const char *topic, size_t len);

/* An index of (key, dense subscription index) pairs. */
typedef struct mkey_slot {
    const mkey *key; /* NULL: empty slot */
    uint32_t first, count;
} mkey_slot;

typedef struct mkey_index {
    uint64_t seed;
    uint8_t nlens[3];          /* per side: distinct key lengths */
    uint8_t lens[3][MKEY_MAX]; /* ... ascending */
    mkey_slot *slots;          /* open addressing, power of two; NULL when empty */
    uint64_t *hashes;          /* per slot */
    uint32_t mask;
    int32_t *dense; /* the subscriptions, grouped by key */
    uint32_t npairs;
} mkey_index;

/* Builds ix from n pairs (keys[i] stays valid while ix is used: the
 * subscriptions hold them). 0 or PB_ENOMEM (ix then empty, freeable). */
int mkey_index_build(mkey_index *ix, uint64_t seed, const mkey *const *keys, const int32_t *dense,
                     size_t n);
void mkey_index_free(mkey_index *ix);

/* The subscriptions filed under key (side, b[0..len)): *count of them at
 * the returned array (NULL when none). */
const int32_t *mkey_index_get(const mkey_index *ix, uint8_t side, const char *b, size_t len,
                              uint32_t *count);

#endif
