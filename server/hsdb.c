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

/* hsdb_expr's one pass over a pattern: one step per syntax element, all
 * sharing this state. */
typedef struct expr_scan {
    const unsigned char *p;
    size_t len;
    size_t i;          /* the next byte */
    size_t depth;      /* groups open */
    size_t start, end; /* the expression is p[start..end): "^" and "$" dropped */
    uint32_t last;     /* weight of the preceding repeatable item; 0: none */
    uint32_t frame_max[HSDB_DEPTH_MAX + 1]; /* heaviest item of each open group */
    size_t bad;                             /* where a step refused */
} expr_scan;

static bool scan_refuse(expr_scan *s, size_t at)
{
    s->bad = at;
    return false;
}

/* '^' only as the first byte: the whole-topic match starts there anyway,
 * so it is dropped. '$' only as the last byte, outside groups: with the
 * match anchored at the end, "P$" and "P" match the same topics. */
static bool scan_anchor(expr_scan *s)
{
    if (s->p[s->i] == '^') {
        if (s->i != 0)
            return scan_refuse(s, s->i);
        s->start = 1;
    } else {
        if (s->i != s->len - 1 || s->depth != 0)
            return scan_refuse(s, s->i);
        s->end = s->i;
    }
    s->last = 0;
    s->i++;
    return true;
}

/* "(", "(?:" or inline options ("(?i)", "(?s-i:"). */
static bool scan_open(expr_scan *s)
{
    const unsigned char *p = s->p + s->i;
    size_t n = s->len - s->i, k = 1;
    bool opens = true;
    if (n > 1 && p[1] == '?') {
        if (n > 2 && p[2] == ':')
            k = 3;
        else if ((k = options_len(p, n, &opens)) == 0)
            return scan_refuse(s, s->i);
    }
    s->i += k;
    s->last = 0;
    if (opens) {
        if (++s->depth > HSDB_DEPTH_MAX)
            return scan_refuse(s, s->i - k);
        s->frame_max[s->depth] = 1;
    }
    return true;
}

/* ')': the group is an item as heavy as its heaviest item. */
static bool scan_close(expr_scan *s)
{
    if (s->depth == 0)
        return scan_refuse(s, s->i);
    s->last = s->frame_max[s->depth--];
    if (s->last > s->frame_max[s->depth])
        s->frame_max[s->depth] = s->last;
    s->i++;
    return true;
}

/* '*', '+', '?' or "{n,m}" after a repeatable item, maybe lazy. */
static bool scan_repeat(expr_scan *s)
{
    const unsigned char *p = s->p;
    if (s->last == 0)
        return scan_refuse(s, s->i);
    if (p[s->i] == '{') {
        unsigned max;
        size_t k = braces_len(p + s->i, s->len - s->i, &max);
        if (k == 0)
            return scan_refuse(s, s->i);
        uint64_t w = (uint64_t)s->last * max;
        if (w > HSDB_WEIGHT_MAX)
            return scan_refuse(s, s->i);
        if (w > s->frame_max[s->depth])
            s->frame_max[s->depth] = (uint32_t)w;
        s->i += k;
    } else {
        s->i++;
    }
    /* A lazy quantifier finds the same whole matches; a possessive one
     * ('+') may not. */
    if (s->i < s->len && p[s->i] == '?')
        s->i++;
    if (s->i < s->len && p[s->i] == '+')
        return scan_refuse(s, s->i);
    s->last = 0;
    return true;
}

/* An atom: '.', an escape, a class or a literal byte (UTF-8 bytes
 * included). Repeatable, weight 1. */
static bool scan_atom(expr_scan *s)
{
    const unsigned char *p = s->p + s->i;
    size_t n = s->len - s->i, k = 1;
    int byte;
    if (p[0] == '\\')
        k = escape_len(p, n, &byte);
    else if (p[0] == '[')
        k = class_len(p, n);
    if (k == 0)
        return scan_refuse(s, s->i);
    s->i += k;
    s->last = 1;
    return true;
}

/* One syntax element at s->i; false (and s->bad) if it is not taken. */
static bool scan_step(expr_scan *s)
{
    switch (s->p[s->i]) {
    case '^':
    case '$':
        return scan_anchor(s);
    case '(':
        return scan_open(s);
    case ')':
        return scan_close(s);
    case '|':
        s->last = 0;
        s->i++;
        return true;
    case '*':
    case '+':
    case '?':
    case '{':
        return scan_repeat(s);
    case '\0':
    case ']':
    case '}':
        /* ']' and '}' are literals in PCRE2 when unmatched; not taken. */
        return scan_refuse(s, s->i);
    default:
        return scan_atom(s);
    }
}

bool hsdb_expr(const char *pattern, size_t len, char *out, char *why, size_t whylen)
{
    if (len > HSDB_PATTERN_MAX) {
        if (why && whylen)
            snprintf(why, whylen, "longer than %d bytes", HSDB_PATTERN_MAX);
        return false;
    }
    expr_scan s = {.p = (const unsigned char *)pattern, .len = len, .end = len};
    s.frame_max[0] = 1;
    while (s.i < len)
        if (!scan_step(&s))
            return refuse(why, whylen, pattern, len, s.bad);
    if (s.depth != 0)
        return refuse(why, whylen, pattern, len, len);
    snprintf(out, HSDB_EXPR_MAX, "^(?:%.*s)\\z", (int)(s.end - s.start), pattern + s.start);
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
