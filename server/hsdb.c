/*
 * hsdb - whole-topic patterns as Hyperscan expressions (see hsdb.h).
 *
 * hsdb_expr is a tokenizer, not a parser: PCRE2 has already accepted the
 * pattern (the matcher compiles every pattern with PCRE2 first), so all it
 * has to decide is whether every token is one whose meaning Hyperscan
 * shares, and how heavy the repeats are. When in doubt it refuses; the
 * pattern then runs through PCRE2, with its limits.
 *
 * Threads: any; no shared state.
 */
#include "hsdb.h"

#include "pb_errors.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Nesting of groups taken (PCRE2's own limit is 250). */
#define HSDB_DEPTH_MAX 32

static bool is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* ASCII punctuation: escaped, it is always the literal character, in PCRE2
 * and in Hyperscan alike. */
static bool is_punct(unsigned char c)
{
    return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') ||
           (c >= '{' && c <= '~');
}

static unsigned hex_val(unsigned char c)
{
    return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* An escape at p[0] == '\\' (n bytes left). Returns its length, or 0 if it
 * is not taken. *byte gets the byte it stands for, or -1 for a class
 * shorthand (\d \w \s and their negations). */
static size_t escape_len(const unsigned char *p, size_t n, int *byte)
{
    if (n < 2)
        return 0;
    unsigned char c = p[1];
    *byte = -1;
    switch (c) {
    case 'd':
    case 'D':
    case 'w':
    case 'W':
    case 's':
    case 'S':
        return 2;
    case 't':
        *byte = '\t';
        return 2;
    case 'n':
        *byte = '\n';
        return 2;
    case 'r':
        *byte = '\r';
        return 2;
    case 'f':
        *byte = '\f';
        return 2;
    case 'x':
        /* Exactly two hex digits: "\x4", "\x" and "\x{...}" are refused. */
        if (n < 4 || !is_hex(p[2]) || !is_hex(p[3]))
            return 0;
        *byte = (int)(hex_val(p[2]) * 16 + hex_val(p[3]));
        return 4;
    default:
        if (!is_punct(c))
            return 0;
        *byte = c;
        return 2;
    }
}

/* A character class at p[0] == '['. Returns its length, or 0 if it is not
 * taken: a leading ']' (literal in PCRE2), POSIX classes and nested '[',
 * escapes other than those of escape_len, a range with a shorthand end. */
static size_t class_len(const unsigned char *p, size_t n)
{
    size_t j = 1;
    if (j < n && p[j] == '^')
        j++;
    if (j < n && p[j] == ']')
        return 0;
    int prev = -2; /* the previous member's byte; -1 a shorthand; -2 none */
    while (j < n) {
        unsigned char c = p[j];
        if (c == ']')
            return j + 1;
        if (c == '[' || c == '\0')
            return 0;
        if (c == '-' && prev != -2 && j + 1 < n && p[j + 1] != ']') {
            /* A range: prev-hi. */
            if (prev < 0)
                return 0;
            j++;
            int hi;
            if (p[j] == '\\') {
                size_t k = escape_len(p + j, n - j, &hi);
                if (k == 0 || hi < 0)
                    return 0;
                j += k;
            } else {
                if (p[j] == '[' || p[j] == '\0')
                    return 0;
                hi = p[j++];
            }
            if (hi < prev)
                return 0;
            prev = -2; /* "a-c-e": the second '-' is no range in PCRE2 */
            if (j < n && p[j] == '-' && j + 1 < n && p[j + 1] != ']')
                return 0;
            continue;
        }
        if (c == '\\') {
            size_t k = escape_len(p + j, n - j, &prev);
            if (k == 0)
                return 0;
            j += k;
        } else {
            prev = c;
            j++;
        }
    }
    return 0; /* no closing ']' */
}

/* A quantifier "{n}", "{n,}" or "{n,m}" at p[0] == '{'. Returns its length
 * and the largest count in *max (n for "{n,}": the loop after it costs
 * Hyperscan nothing more; at least 1), or 0 if it is anything else. */
static size_t braces_len(const unsigned char *p, size_t n, unsigned *max)
{
    size_t j = 1;
    unsigned lo = 0, hi;
    bool open = false; /* "{n,}" */
    if (j >= n || !is_digit(p[j]))
        return 0;
    while (j < n && is_digit(p[j])) {
        lo = lo * 10 + (p[j++] - '0');
        if (lo > HSDB_REPEAT_MAX)
            return 0;
    }
    hi = lo;
    if (j < n && p[j] == ',') {
        j++;
        open = j >= n || !is_digit(p[j]);
        if (!open) {
            hi = 0;
            while (j < n && is_digit(p[j])) {
                hi = hi * 10 + (p[j++] - '0');
                if (hi > HSDB_REPEAT_MAX)
                    return 0;
            }
            if (hi < lo)
                return 0;
        }
    }
    /* "{0}" and "{0,0}": Hyperscan refuses them ("Invalid repeat"). */
    if (j >= n || p[j] != '}' || (!open && hi == 0))
        return 0;
    *max = hi ? hi : 1;
    return j + 1;
}

/* "(?" options: "(?i)", "(?s-i:", ... Only i and s, at most one '-'.
 * Returns the length through ')' or ':', and *opens whether it opens a
 * group (':'), or 0. */
static size_t options_len(const unsigned char *p, size_t n, bool *opens)
{
    size_t j = 2;
    bool minus = false, any = false;
    for (; j < n; j++) {
        unsigned char c = p[j];
        if (c == 'i' || c == 's') {
            any = true;
        } else if (c == '-' && !minus) {
            minus = true;
        } else if ((c == ')' || c == ':') && (any || c == ':')) {
            if (c == ':' && minus && p[j - 1] == '-')
                return 0;
            if (c == ')' && p[j - 1] == '-')
                return 0;
            *opens = c == ':';
            return j + 1;
        } else {
            return 0;
        }
    }
    return 0;
}

static bool refuse(char *why, size_t whylen, const char *p, size_t len, size_t at)
{
    if (why && whylen) {
        size_t show = len - at < 4 ? len - at : 4;
        snprintf(why, whylen, "unsupported syntax \"%.*s\" at offset %zu", (int)show, p + at, at);
    }
    return false;
}

/* Over 100 lines on purpose: one pass over the pattern with one case per
 * syntax element, sharing the state that pass carries (group depth, each
 * frame's weight, the preceding item); cut up, that state would have to
 * travel through every piece. */
bool hsdb_expr(const char *pattern, size_t len, char *out, char *why, size_t whylen)
{
    const unsigned char *p = (const unsigned char *)pattern;
    uint32_t frame_max[HSDB_DEPTH_MAX + 1];
    uint32_t last = 0; /* weight of the preceding repeatable item; 0: none */
    size_t depth = 0, start = 0, end = len, i = 0;

    if (len > HSDB_PATTERN_MAX) {
        if (why && whylen)
            snprintf(why, whylen, "longer than %d bytes", HSDB_PATTERN_MAX);
        return false;
    }
    frame_max[0] = 1;
    while (i < len) {
        unsigned char c = p[i];
        size_t k;
        int byte;
        unsigned max;
        bool opens;
        switch (c) {
        case '\0':
            return refuse(why, whylen, pattern, len, i);
        case '^':
            /* Only as the first byte: the whole-topic match starts there
             * anyway, so it is dropped. */
            if (i != 0)
                return refuse(why, whylen, pattern, len, i);
            start = 1;
            last = 0;
            i++;
            continue;
        case '$':
            /* Only as the last byte, outside groups: with the match
             * anchored at the end, "P$" and "P" match the same topics. */
            if (i != len - 1 || depth != 0)
                return refuse(why, whylen, pattern, len, i);
            end = i;
            last = 0;
            i++;
            continue;
        case '.':
            i++;
            break;
        case '\\':
            k = escape_len(p + i, len - i, &byte);
            if (k == 0)
                return refuse(why, whylen, pattern, len, i);
            i += k;
            break;
        case '[':
            k = class_len(p + i, len - i);
            if (k == 0)
                return refuse(why, whylen, pattern, len, i);
            i += k;
            break;
        case '(':
            if (i + 1 < len && p[i + 1] == '?') {
                if (i + 2 < len && p[i + 2] == ':') {
                    k = 3;
                    opens = true;
                } else {
                    k = options_len(p + i, len - i, &opens);
                    if (k == 0)
                        return refuse(why, whylen, pattern, len, i);
                }
            } else {
                k = 1;
                opens = true;
            }
            i += k;
            last = 0;
            if (opens) {
                if (++depth > HSDB_DEPTH_MAX)
                    return refuse(why, whylen, pattern, len, i - k);
                frame_max[depth] = 1;
            }
            continue;
        case ')':
            if (depth == 0)
                return refuse(why, whylen, pattern, len, i);
            last = frame_max[depth--];
            if (last > frame_max[depth])
                frame_max[depth] = last;
            i++;
            continue;
        case '|':
            last = 0;
            i++;
            continue;
        case '*':
        case '+':
        case '?':
        case '{':
            if (last == 0)
                return refuse(why, whylen, pattern, len, i);
            if (c == '{') {
                k = braces_len(p + i, len - i, &max);
                if (k == 0)
                    return refuse(why, whylen, pattern, len, i);
                uint64_t w = (uint64_t)last * max;
                if (w > HSDB_WEIGHT_MAX)
                    return refuse(why, whylen, pattern, len, i);
                if (w > frame_max[depth])
                    frame_max[depth] = (uint32_t)w;
                i += k;
            } else {
                i++;
            }
            /* A lazy quantifier finds the same whole matches; a
             * possessive one ('+') may not. */
            if (i < len && p[i] == '?')
                i++;
            if (i < len && p[i] == '+')
                return refuse(why, whylen, pattern, len, i);
            last = 0;
            continue;
        case ']':
        case '}':
            /* Literals in PCRE2 when unmatched; not taken. */
            return refuse(why, whylen, pattern, len, i);
        default:
            i++; /* a literal byte, UTF-8 bytes included */
            break;
        }
        /* An atom: repeatable, weight 1. */
        last = 1;
    }
    if (depth != 0)
        return refuse(why, whylen, pattern, len, len);
    snprintf(out, HSDB_EXPR_MAX, "^(?:%.*s)\\z", (int)(end - start), pattern + start);
    return true;
}

int hsdb_compile(const char *const *exprs, size_t n, bool *refused, hs_database_t **db)
{
    int rc = PB_ENOMEM;
    const char **live = NULL;
    unsigned *flags = NULL, *ids = NULL;

    *db = NULL;
    for (size_t i = 0; i < n; i++)
        refused[i] = false;
    if (n == 0)
        return 0;
    if (n > UINT32_MAX)
        return PB_ETOOBIG;
    live = malloc(n * sizeof *live);
    flags = malloc(n * sizeof *flags);
    ids = malloc(n * sizeof *ids);
    if (!live || !flags || !ids)
        goto out;
    for (;;) {
        unsigned m = 0;
        for (size_t i = 0; i < n; i++) {
            if (refused[i])
                continue;
            live[m] = exprs[i];
            ids[m] = (unsigned)i;
            /* SINGLEMATCH: every report already means a whole match.
             * ALLOWEMPTY: ".*" and friends match the empty topic. */
            flags[m] = HS_FLAG_SINGLEMATCH | HS_FLAG_ALLOWEMPTY;
            m++;
        }
        if (m == 0) {
            rc = 0;
            break;
        }
        hs_compile_error_t *ce = NULL;
        hs_error_t e = hs_compile_multi(live, flags, ids, m, HS_MODE_BLOCK, NULL, db, &ce);
        if (e == HS_SUCCESS) {
            rc = 0;
            break;
        }
        int which = ce ? ce->expression : -1;
        hs_free_compile_error(ce);
        *db = NULL;
        if (which < 0 || (unsigned)which >= m) {
            /* Not one expression's fault: a resource limit of the whole
             * database, or memory. */
            rc = PB_ETOOBIG;
            break;
        }
        /* That one expression is refused (unsupported, too large...);
         * the others are compiled again without it. */
        refused[ids[which]] = true;
    }
out:
    free(live);
    free(flags);
    free(ids);
    return rc;
}

bool hsdb_available(void)
{
    return hs_valid_platform() == HS_SUCCESS;
}
