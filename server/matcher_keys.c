/*
 * matcher_keys - topic keys and their index (see matcher_keys.h).
 *
 * Why a key is sound: with no top-level "|", a pattern is a sequence of
 * top-level atoms (a byte, a class, a group, ...), each maybe quantified,
 * and a whole-topic match is the concatenation of what each atom matched,
 * in order. An unquantified literal atom matches exactly its byte; so the
 * leading run of them is what every matching topic starts with, and the
 * trailing run what it ends with. A leading "^" is redundant (the match is
 * anchored); a trailing "$" only asserts an end that the whole-topic match
 * already requires (it cannot match before a final newline and still end
 * at the topic's end). Anything the tokenizer is not sure of ends the key
 * extraction with no key.
 *
 * Threads: see the header.
 */
#include "matcher_keys.h"

#include "hash.h"
#include "pb_errors.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* Patterns longer than this have no keys (the matcher's Hyperscan ones
 * are at most 512 bytes: hsdb.h). */
#define MKEY_PATTERN_MAX 1024

typedef struct atom {
    char c;
    bool lit;   /* one literal byte */
    bool quant; /* a quantifier follows */
} atom;

/* Length of a quantifier "{n}", "{n,}" or "{n,m}" at p[0..len), or 0 if
 * it is not one (then the caller gives up: PCRE2 may read it as
 * literals). */
static size_t brace_quantifier(const char *p, size_t len)
{
    size_t i = 1, digits = 0;
    while (i < len && isdigit((unsigned char)p[i]))
        i++, digits++;
    if (digits == 0 || i >= len)
        return 0;
    if (p[i] == ',') {
        i++;
        while (i < len && isdigit((unsigned char)p[i]))
            i++;
    }
    return i < len && p[i] == '}' ? i + 1 : 0;
}

/* Length of the class "[...]" at p[0..len), or 0 if it is not read
 * exactly (POSIX classes and the like, no closing bracket). */
static size_t class_len(const char *p, size_t len)
{
    size_t j = 1;
    if (j < len && p[j] == '^')
        j++;
    if (j < len && p[j] == ']')
        j++; /* a leading ']' is a member */
    while (j < len && p[j] != ']') {
        if (p[j] == '\\')
            j++;
        else if (p[j] == '[' && j + 1 < len && strchr(":.=", p[j + 1]))
            return 0;
        j++;
    }
    return j < len ? j + 1 : 0;
}

/* The top-level atoms of pattern p[0..len) into a (room for len), or -1
 * when the pattern is not read exactly or has a top-level "|". */
static long tokenize(const char *p, size_t len, atom *a)
{
    size_t i = 0, na = 0;
    int depth = 0;
    if (i < len && p[i] == '^')
        i++;
    while (i < len) {
        unsigned char c = (unsigned char)p[i];
        atom at = {.c = (char)c, .lit = true};
        size_t step = 1;
        if (c == '\\') {
            if (i + 1 >= len)
                return -1;
            unsigned char e = (unsigned char)p[i + 1];
            if (e < 128 && !isalnum(e))
                at.c = (char)e; /* escaped punctuation: that byte */
            else if (e && strchr("dDwWsS", e))
                at.lit = false;
            else
                return -1;
            step = 2;
        } else if (c == '[') {
            step = class_len(p + i, len - i);
            if (step == 0)
                return -1;
            at.lit = false;
        } else if (c == '(') {
            if (i + 1 < len && p[i + 1] == '?') {
                if (i + 2 >= len || p[i + 2] != ':')
                    return -1; /* inline options, lookaround, ... */
                step = 3;
            }
            if (depth++ == 0)
                a[na++] = (atom){.lit = false}; /* the group, as one atom */
            i += step;
            continue;
        } else if (c == ')') {
            if (depth-- == 0)
                return -1;
            i++;
            continue;
        } else if (c == '*' || c == '+' || c == '?' || c == '{') {
            if (c == '{' && (step = brace_quantifier(p + i, len - i)) == 0)
                return -1;
            if (depth == 0) {
                if (na == 0)
                    return -1;
                a[na - 1].quant = true;
            }
            i += step;
            if (i < len && (p[i] == '?' || p[i] == '+'))
                i++; /* lazy or possessive: still a quantifier */
            continue;
        } else if (c == '|') {
            if (depth == 0)
                return -1;
            at.lit = false;
        } else if (c == '$') {
            if (depth == 0 && i + 1 == len)
                break; /* the trailing end anchor */
            return -1;
        } else if (c == '^' || c == ']' || c == '}') {
            return -1;
        } else if (c == '.') {
            at.lit = false;
        }
        if (depth == 0)
            a[na++] = at;
        i += step;
    }
    return depth == 0 ? (long)na : -1;
}

void mkey_extract(const char *pattern, size_t len, mkey *prefix, mkey *suffix)
{
    *prefix = (mkey){.side = MKEY_NONE};
    *suffix = (mkey){.side = MKEY_NONE};
    if (len == 0 || len > MKEY_PATTERN_MAX)
        return;
    atom a[MKEY_PATTERN_MAX];
    long na = tokenize(pattern, len, a);
    if (na <= 0)
        return;
    size_t k = 0;
    while (k < (size_t)na && a[k].lit && !a[k].quant && k < MKEY_MAX)
        prefix->b[k] = a[k].c, k++;
    if (k > 0)
        prefix->side = MKEY_PREFIX, prefix->len = (uint8_t)k;
    size_t start = (size_t)na;
    while (start > 0 && a[start - 1].lit && !a[start - 1].quant && (size_t)na - start < MKEY_MAX)
        start--;
    for (size_t j = start; j < (size_t)na; j++)
        suffix->b[j - start] = a[j].c;
    if ((size_t)na > start)
        suffix->side = MKEY_SUFFIX, suffix->len = (uint8_t)((size_t)na - start);
}

/* ------------------------------------------------------------------ */
/* shapes */

static void cls_set(uint64_t *cls, unsigned char b)
{
    cls[b >> 6] |= 1ull << (b & 63);
}

static bool cls_has(const uint64_t *cls, unsigned char b)
{
    return cls[b >> 6] >> (b & 63) & 1;
}

static void cls_digits(uint64_t *cls)
{
    for (unsigned char b = '0'; b <= '9'; b++)
        cls_set(cls, b);
}

/* One member of a class at p[0..len) (a plain byte other than '\\', '['
 * and ']', or escaped punctuation) into *b; its length, or 0. */
static size_t class_byte(const char *p, size_t len, unsigned char *b)
{
    unsigned char c = (unsigned char)p[0];
    if (c == '\\') {
        if (len < 2 || (unsigned char)p[1] >= 128 || isalnum((unsigned char)p[1]))
            return 0;
        *b = (unsigned char)p[1];
        return 2;
    }
    if (c == '[' || c == ']')
        return 0;
    *b = c;
    return 1;
}

/* The class "[...]" at p[0..len) into cls: plain bytes, escaped
 * punctuation, "\d", ranges between two bytes, a leading "^". Its length,
 * or 0 when it is anything else ("-" outside a range included). */
static size_t class_parse(const char *p, size_t len, uint64_t *cls)
{
    size_t j = 1;
    bool neg = j < len && p[j] == '^';
    uint64_t set[4] = {0};
    j += neg;
    if (j < len && p[j] == ']')
        return 0; /* empty, or a leading ']' member: not read here */
    while (j < len && p[j] != ']') {
        if (p[j] == '\\' && j + 1 < len && p[j + 1] == 'd') {
            cls_digits(set);
            j += 2;
            continue;
        }
        unsigned char lo, hi;
        size_t n = class_byte(p + j, len - j, &lo);
        if (n == 0 || lo == '-')
            return 0;
        j += n;
        hi = lo;
        if (j + 1 < len && p[j] == '-' && p[j + 1] != ']') {
            n = class_byte(p + j + 1, len - j - 1, &hi);
            if (n == 0 || hi == '-' || hi < lo)
                return 0;
            j += 1 + n;
        }
        for (unsigned b = lo; b <= hi; b++)
            cls_set(set, (unsigned char)b);
    }
    if (j >= len)
        return 0;
    for (int w = 0; w < 4; w++)
        cls[w] = neg ? ~set[w] : set[w];
    return j + 1;
}

/* One atom at p[0..len): a literal byte (*lit) or a class (cls). Its
 * length, or 0 when it is not one mkey_shape_parse reads. */
static size_t shape_atom(const char *p, size_t len, bool *lit, unsigned char *b, uint64_t *cls)
{
    unsigned char c = (unsigned char)p[0];
    *lit = false;
    memset(cls, 0, 4 * sizeof *cls);
    if (c == '\\') {
        if (len >= 2 && p[1] == 'd') {
            cls_digits(cls);
            return 2;
        }
        *lit = true;
        return class_byte(p, len, b);
    }
    if (c == '[')
        return class_parse(p, len, cls);
    if (c == '.') {
        memset(cls, 0xff, 4 * sizeof *cls);
        cls[0] &= ~(1ull << '\n');
        return 1;
    }
    if (strchr("^$|()?*+{}]", c))
        return 0;
    *lit = true;
    *b = c;
    return 1;
}

bool mkey_shape_parse(const char *p, size_t len, mkey_shape *out)
{
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < len;) {
        bool lit;
        unsigned char b = 0;
        uint64_t cls[4];
        size_t n = shape_atom(p + i, len - i, &lit, &b, cls);
        if (n == 0)
            return false;
        i += n;
        bool star = i < len && p[i] == '*', plus = i < len && p[i] == '+';
        if (star || plus) {
            i++;
            if (out->run || (i < len && strchr("*+?{", p[i])))
                return false; /* a second run, lazy, possessive */
            if (lit) {
                memset(cls, 0, sizeof cls);
                cls_set(cls, b);
            }
            out->run = true;
            out->run_plus = plus;
            memcpy(out->cls, cls, sizeof cls);
            continue;
        }
        if (!lit)
            return false; /* a class once: not this shape */
        uint8_t *n_lit = out->run ? &out->suf_len : &out->pre_len;
        if (*n_lit == MKEY_SHAPE_LIT)
            return false;
        (out->run ? out->suf : out->pre)[(*n_lit)++] = (char)b;
    }
    return true;
}

bool mkey_shape_match(const mkey_shape *s, const char *t, size_t n)
{
    size_t fixed = (size_t)s->pre_len + s->suf_len;
    if (!s->run)
        return n == fixed && memcmp(t, s->pre, s->pre_len) == 0;
    if (n < fixed + s->run_plus || memcmp(t, s->pre, s->pre_len) != 0 ||
        memcmp(t + n - s->suf_len, s->suf, s->suf_len) != 0)
        return false;
    for (size_t i = s->pre_len; i < n - s->suf_len; i++)
        if (!cls_has(s->cls, (unsigned char)t[i]))
            return false;
    return true;
}

/* ------------------------------------------------------------------ */
/* the index */

static int key_cmp(const mkey *x, const mkey *y)
{
    if (x->side != y->side)
        return x->side < y->side ? -1 : 1;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return memcmp(x->b, y->b, x->len);
}

static int order_cmp(const void *a, const void *b, void *arg)
{
    const mkey *const *keys = arg;
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    int c = key_cmp(keys[x], keys[y]);
    return c ? c : (x < y ? -1 : x > y);
}

static uint64_t key_hash(uint64_t seed, uint8_t side, const char *b, size_t len)
{
    return hash_bytes(seed ^ side, b, len);
}

void mkey_index_free(mkey_index *ix)
{
    free(ix->slots);
    free(ix->hashes);
    free(ix->dense);
    memset(ix, 0, sizeof *ix);
}

int mkey_index_build(mkey_index *ix, uint64_t seed, const mkey *const *keys, const int32_t *dense,
                     size_t n)
{
    memset(ix, 0, sizeof *ix);
    ix->seed = seed;
    if (n == 0)
        return 0;
    uint32_t *order = malloc(n * sizeof *order);
    if (!order || n > UINT32_MAX / 4)
        goto fail;
    for (size_t i = 0; i < n; i++)
        order[i] = (uint32_t)i;
    qsort_r(order, n, sizeof *order, order_cmp, (void *)keys);
    size_t nkeys = 0;
    for (size_t i = 0; i < n; i++)
        nkeys += i == 0 || key_cmp(keys[order[i]], keys[order[i - 1]]) != 0;
    size_t cap = 8;
    while (cap < 2 * nkeys)
        cap *= 2;
    ix->slots = calloc(cap, sizeof *ix->slots);
    ix->hashes = calloc(cap, sizeof *ix->hashes);
    ix->dense = malloc(n * sizeof *ix->dense);
    if (!ix->slots || !ix->hashes || !ix->dense)
        goto fail;
    ix->mask = (uint32_t)(cap - 1);
    bool seen[3][MKEY_MAX + 1] = {{false}};
    for (size_t i = 0; i < n;) {
        const mkey *k = keys[order[i]];
        size_t j = i;
        while (j < n && key_cmp(keys[order[j]], k) == 0) {
            ix->dense[j] = dense[order[j]];
            j++;
        }
        uint64_t h = key_hash(seed, k->side, k->b, k->len);
        uint32_t s = (uint32_t)h & ix->mask;
        while (ix->slots[s].key)
            s = (s + 1) & ix->mask;
        ix->slots[s] = (mkey_slot){.key = k, .first = (uint32_t)i, .count = (uint32_t)(j - i)};
        ix->hashes[s] = h;
        seen[k->side][k->len] = true;
        i = j;
    }
    for (int side = MKEY_PREFIX; side <= MKEY_SUFFIX; side++)
        for (uint8_t l = 1; l <= MKEY_MAX; l++)
            if (seen[side][l])
                ix->lens[side][ix->nlens[side]++] = l;
    ix->npairs = (uint32_t)n;
    free(order);
    return 0;
fail:
    free(order);
    mkey_index_free(ix);
    return PB_ENOMEM;
}

const int32_t *mkey_index_get(const mkey_index *ix, uint8_t side, const char *b, size_t len,
                              uint32_t *count)
{
    *count = 0;
    if (!ix->slots)
        return NULL;
    uint64_t h = key_hash(ix->seed, side, b, len);
    for (uint32_t s = (uint32_t)h & ix->mask; ix->slots[s].key; s = (s + 1) & ix->mask) {
        const mkey *k = ix->slots[s].key;
        if (ix->hashes[s] == h && k->side == side && k->len == len && memcmp(k->b, b, len) == 0) {
            *count = ix->slots[s].count;
            return ix->dense + ix->slots[s].first;
        }
    }
    return NULL;
}
