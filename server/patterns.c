/*
 * Topic patterns: whole-topic PCRE2 matching for subscriptions (and the one
 * place that decides what "matches the whole topic" means, for the config
 * and the router too).
 *
 * Also the match_cache, the partition writers' topic -> matching
 * subscriptions cache (one per writer).
 *
 * Threads: pattern_compile_whole() is thread-safe. A pattern_set is owned
 * by one subscription thread; patterns_match() writes to the set's cache
 * and match data, so only the owner calls it. patterns_match_shared() only
 * reads the compiled codes and the match context (PCRE2 allows that from
 * several threads), with the caller's match data. A match_cache belongs to
 * one writer thread.
 */
#include "patterns.h"

#include "hash.h"
#include "pb_errors.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One cached decision. 128 bytes, so a slot is two cache lines at most. */
struct cache_slot {
    uint64_t hash;
    uint16_t len;
    uint8_t used;
    uint8_t matches;
    char topic[PATTERNS_CACHE_TOPIC_MAX];
};

struct pattern_set {
    pcre2_code **codes;
    size_t n;
    pcre2_match_data *md; /* reused for every match: sized for the largest pattern */
    pcre2_match_context *mctx;
    struct cache_slot *slots; /* PATTERNS_CACHE_SLOTS, power of two */
    unsigned long long hits, misses;
    bool match_all; /* a pattern matches every valid topic: no regex needed */
    bool jit;       /* every pattern was JIT-compiled: pcre2_jit_match applies */
};

_Static_assert((PATTERNS_CACHE_SLOTS & (PATTERNS_CACHE_SLOTS - 1)) == 0,
               "PATTERNS_CACHE_SLOTS must be a power of two");
_Static_assert(PATTERNS_CACHE_TOPIC_MAX < UINT16_MAX, "slot length field is 16 bits");

int pattern_compile_whole(const char *pattern, size_t len, pcre2_code **out, char *why,
                          size_t whylen)
{
    int errcode = 0;
    PCRE2_SIZE erroff = 0;

    *out = NULL;
    /* ANCHORED + ENDANCHORED rather than wrapping the text in "^(?:...)$":
     * the error offsets PCRE2 reports then point into the pattern exactly as
     * the user wrote it, and "$" cannot match before a trailing newline. */
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)pattern, len, PCRE2_ANCHORED | PCRE2_ENDANCHORED,
                                     &errcode, &erroff, NULL);
    if (!code) {
        PCRE2_UCHAR msg[256];
        if (pcre2_get_error_message(errcode, msg, sizeof msg) < 0)
            snprintf((char *)msg, sizeof msg, "PCRE2 error %d", errcode);
        if (errcode == PCRE2_ERROR_HEAPLIMIT || errcode == PCRE2_ERROR_NOMEMORY) {
            if (whylen)
                snprintf(why, whylen, "out of memory compiling the pattern");
            return PB_ENOMEM;
        }
        if (whylen)
            snprintf(why, whylen, "%s at offset %zu", (const char *)msg, (size_t)erroff);
        return PB_EINVAL;
    }
    /* JIT is an optimisation only: on failure (no JIT support on this CPU,
     * or no executable memory) pcre2_match() interprets the pattern. */
    (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    *out = code;
    return 0;
}

int patterns_compile(const char *const *patterns, size_t n, pattern_set **out, char *err,
                     size_t errlen)
{
    int rc = PB_ENOMEM;
    pattern_set *ps = calloc(1, sizeof *ps);

    *out = NULL;
    if (!ps)
        goto fail;
    ps->slots = calloc(PATTERNS_CACHE_SLOTS, sizeof *ps->slots);
    ps->mctx = pcre2_match_context_create(NULL);
    if (!ps->slots || !ps->mctx)
        goto fail;
    pcre2_set_match_limit(ps->mctx, PATTERNS_MATCH_LIMIT);
    ps->jit = true; /* until a pattern turns out not to be JIT-compiled */
    if (n) {
        ps->codes = calloc(n, sizeof *ps->codes);
        if (!ps->codes)
            goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        char why[300];
        rc =
            pattern_compile_whole(patterns[i], strlen(patterns[i]), &ps->codes[i], why, sizeof why);
        if (rc != 0) {
            if (errlen)
                snprintf(err, errlen, "pattern \"%s\": %s", patterns[i], why);
            goto fail;
        }
        ps->n++;
        size_t jit_size = 0;
        if (pcre2_pattern_info(ps->codes[i], PCRE2_INFO_JITSIZE, &jit_size) != 0 || jit_size == 0)
            ps->jit = false;
        if (strcmp(patterns[i], ".*") == 0 || strcmp(patterns[i], "(?s).*") == 0)
            ps->match_all = true;
    }
    /* Only whether a pattern matches matters: one ovector pair is enough
     * (pcre2_match returns 0, still a match, when groups do not fit). */
    rc = PB_ENOMEM;
    ps->md = pcre2_match_data_create(1, NULL);
    if (!ps->md)
        goto fail;
    *out = ps;
    return 0;

fail:
    if (rc == PB_ENOMEM && errlen)
        snprintf(err, errlen, "out of memory compiling %zu pattern(s)", n);
    /* patterns_free() stops at ps->n: codes past a failed one are NULL. */
    patterns_free(ps);
    return rc;
}

static bool match_uncached(pattern_set *ps, const char *topic, size_t len)
{
    for (size_t i = 0; i < ps->n; i++) {
        int rc = pcre2_match(ps->codes[i], (PCRE2_SPTR)topic, len, 0, 0, ps->md, ps->mctx);
        if (rc >= 0)
            return true;
        /* PCRE2_ERROR_NOMATCH, or a limit hit: either way this pattern
         * does not select the topic. */
    }
    return false;
}

bool patterns_match(pattern_set *ps, const char *topic, size_t len)
{
    if (ps->match_all)
        return true;
    if (!topic)
        topic = ""; /* an empty topic may come as NULL; memcmp wants a pointer */
    if (len > PATTERNS_CACHE_TOPIC_MAX) {
        ps->misses++;
        return match_uncached(ps, topic, len);
    }
    uint64_t h = pb_hash_bytes(0, topic, len);
    struct cache_slot *slot = &ps->slots[h & (PATTERNS_CACHE_SLOTS - 1)];
    if (slot->used && slot->hash == h && slot->len == len && memcmp(slot->topic, topic, len) == 0) {
        ps->hits++;
        return slot->matches;
    }
    ps->misses++;
    bool m = match_uncached(ps, topic, len);
    slot->used = 1;
    slot->hash = h;
    slot->len = (uint16_t)len;
    slot->matches = m;
    memcpy(slot->topic, topic, len);
    return m;
}

bool patterns_match_all(const pattern_set *ps)
{
    return ps->match_all;
}

bool patterns_match_shared(const pattern_set *ps, const char *topic, size_t len,
                           pcre2_match_data *md)
{
    if (ps->match_all)
        return true;
    if (!topic)
        topic = "";
    /* pcre2_jit_match skips pcre2_match's argument checks, a good part of
     * the cost of a match on a short topic; the match limit still applies. */
    for (size_t i = 0; i < ps->n; i++) {
        int rc = ps->jit ? pcre2_jit_match(ps->codes[i], (PCRE2_SPTR)topic, len, 0, 0, md, ps->mctx)
                         : pcre2_match(ps->codes[i], (PCRE2_SPTR)topic, len, 0, 0, md, ps->mctx);
        if (rc >= 0)
            return true;
    }
    return false;
}

pcre2_match_data *patterns_match_data_create(void)
{
    return pcre2_match_data_create(1, NULL);
}

size_t patterns_count(const pattern_set *ps)
{
    return ps->n;
}

void patterns_cache_stats(const pattern_set *ps, unsigned long long *hits,
                          unsigned long long *misses)
{
    if (hits)
        *hits = ps->hits;
    if (misses)
        *misses = ps->misses;
}

void patterns_free(pattern_set *ps)
{
    if (!ps)
        return;
    for (size_t i = 0; i < ps->n; i++)
        pcre2_code_free(ps->codes[i]);
    free(ps->codes);
    pcre2_match_data_free(ps->md);
    pcre2_match_context_free(ps->mctx);
    free(ps->slots);
    free(ps);
}

/* ------------------------------------------------------------------ */
/* match_cache */

/*
 * Open addressing over an index of 64-bit slots (0 = empty; else the
 * hash's upper 32 bits, to skip most wrong entries without touching them,
 * and the entry's arena offset / 8 + 1). Entries are appended to one arena
 * and never removed one by one: when the index or the arena would pass the
 * limit, the whole cache starts over. That keeps every operation simple and
 * the memory exactly bounded; a working set that fits keeps hitting.
 */
#define MC_INDEX_INITIAL 512u
#define MC_ARENA_INITIAL 8192u

typedef struct mc_entry {
    uint64_t hash;
    uint16_t len;  /* topic bytes, after the ids */
    uint16_t nids; /* uint16 ids, right after this header */
    uint32_t reserved;
} mc_entry;

struct match_cache {
    size_t limit;
    uint64_t *index;
    size_t nindex; /* power of two; at most half full */
    size_t count;
    uint8_t *arena;
    size_t arena_used, arena_cap;
    unsigned long long hits, misses, restarts;
};

_Static_assert(sizeof(mc_entry) == 16, "match cache entry header");
_Static_assert(MATCH_CACHE_TOPIC_MAX < UINT16_MAX, "topic length field is 16 bits");

static uint64_t mc_mix(uint64_t h)
{
    h ^= h >> 31;
    h *= 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 29);
}

static size_t mc_entry_size(size_t len, size_t nids)
{
    return (sizeof(mc_entry) + nids * sizeof(uint16_t) + len + 7) & ~(size_t)7;
}

static size_t mc_bytes(size_t nindex, size_t arena_cap)
{
    return nindex * sizeof(uint64_t) + arena_cap;
}

static void mc_index_put(uint64_t *index, size_t nindex, uint64_t hash, size_t off)
{
    size_t i = (size_t)mc_mix(hash) & (nindex - 1);
    while (index[i])
        i = (i + 1) & (nindex - 1);
    index[i] = (hash & 0xFFFFFFFF00000000ull) | (uint64_t)(off / 8 + 1);
}

int match_cache_create(match_cache **out, size_t limit_bytes)
{
    if (limit_bytes < MATCH_CACHE_MIN_BYTES)
        return PB_EINVAL;
    match_cache *c = calloc(1, sizeof *c);
    if (!c)
        return PB_ENOMEM;
    c->limit = limit_bytes;
    c->nindex = MC_INDEX_INITIAL;
    c->index = calloc(c->nindex, sizeof *c->index);
    c->arena_cap = MC_ARENA_INITIAL;
    c->arena = malloc(c->arena_cap);
    if (!c->index || !c->arena) {
        match_cache_free(c);
        return PB_ENOMEM;
    }
    *out = c;
    return 0;
}

void match_cache_free(match_cache *c)
{
    if (!c)
        return;
    free(c->index);
    free(c->arena);
    free(c);
}

void match_cache_clear(match_cache *c)
{
    memset(c->index, 0, c->nindex * sizeof *c->index);
    c->count = 0;
    c->arena_used = 0;
}

bool match_cache_get(match_cache *c, const char *topic, size_t len, const uint16_t **ids, size_t *n)
{
    if (len > MATCH_CACHE_TOPIC_MAX) {
        c->misses++;
        return false;
    }
    if (!topic)
        topic = "";
    uint64_t h = pb_hash_bytes(0, topic, len);
    uint64_t tag = h & 0xFFFFFFFF00000000ull;
    for (size_t i = (size_t)mc_mix(h) & (c->nindex - 1); c->index[i];
         i = (i + 1) & (c->nindex - 1)) {
        uint64_t slot = c->index[i];
        if ((slot & 0xFFFFFFFF00000000ull) != tag)
            continue;
        const uint8_t *at = c->arena + ((slot & 0xFFFFFFFFull) - 1) * 8;
        mc_entry e;
        memcpy(&e, at, sizeof e);
        const uint8_t *ids_at = at + sizeof e;
        if (e.hash != h || e.len != len ||
            memcmp(ids_at + e.nids * sizeof(uint16_t), topic, len) != 0)
            continue;
        c->hits++;
        *ids = (const uint16_t *)(const void *)ids_at; /* 8-aligned in the arena */
        *n = e.nids;
        return true;
    }
    c->misses++;
    return false;
}

/* Doubles the index (rehashing every entry from the arena). */
static int mc_grow_index(match_cache *c)
{
    size_t n = c->nindex * 2;
    uint64_t *index = calloc(n, sizeof *index);
    if (!index)
        return PB_ENOMEM;
    for (size_t off = 0; off < c->arena_used;) {
        mc_entry e;
        memcpy(&e, c->arena + off, sizeof e);
        mc_index_put(index, n, e.hash, off);
        off += mc_entry_size(e.len, e.nids);
    }
    free(c->index);
    c->index = index;
    c->nindex = n;
    return 0;
}

static int mc_grow_arena(match_cache *c, size_t cap)
{
    uint8_t *a = realloc(c->arena, cap);
    if (!a)
        return PB_ENOMEM;
    c->arena = a;
    c->arena_cap = cap;
    return 0;
}

static void mc_restart(match_cache *c)
{
    match_cache_clear(c);
    c->restarts++;
}

int match_cache_put(match_cache *c, const char *topic, size_t len, const uint16_t *ids, size_t n)
{
    if (len > MATCH_CACHE_TOPIC_MAX || n > UINT16_MAX)
        return PB_ETOOBIG;
    if (!topic)
        topic = "";
    size_t need = mc_entry_size(len, n);
    /* Room in the index: at most half full, growing while the limit allows. */
    if ((c->count + 1) * 2 > c->nindex) {
        if (mc_bytes(c->nindex * 2, c->arena_cap) <= c->limit) {
            if (mc_grow_index(c) < 0) {
                mc_restart(c);
                return PB_ENOMEM;
            }
        } else {
            mc_restart(c);
        }
    }
    /* Room in the arena: double it, as far as the limit allows (the index
     * takes its share first); else start over with an empty arena. */
    if (c->arena_used + need > c->arena_cap) {
        size_t max = c->limit - c->nindex * sizeof(uint64_t);
        if (need > max)
            return PB_ETOOBIG;
        size_t want = c->arena_used + need;
        if (want > max) {
            mc_restart(c);
            want = need;
        }
        size_t cap = c->arena_cap;
        while (cap < want)
            cap *= 2;
        if (cap > max)
            cap = max;
        if (cap > c->arena_cap && mc_grow_arena(c, cap) < 0) {
            mc_restart(c);
            return PB_ENOMEM;
        }
    }
    uint64_t h = pb_hash_bytes(0, topic, len);
    mc_entry e = {.hash = h, .len = (uint16_t)len, .nids = (uint16_t)n};
    uint8_t *at = c->arena + c->arena_used;
    memcpy(at, &e, sizeof e);
    if (n)
        memcpy(at + sizeof e, ids, n * sizeof *ids);
    memcpy(at + sizeof e + n * sizeof *ids, topic, len);
    mc_index_put(c->index, c->nindex, h, c->arena_used);
    c->arena_used += need;
    c->count++;
    return 0;
}

size_t match_cache_count(const match_cache *c)
{
    return c->count;
}

size_t match_cache_bytes(const match_cache *c)
{
    return mc_bytes(c->nindex, c->arena_cap);
}

void match_cache_stats(const match_cache *c, unsigned long long *hits, unsigned long long *misses,
                       unsigned long long *restarts)
{
    if (hits)
        *hits = c->hits;
    if (misses)
        *misses = c->misses;
    if (restarts)
        *restarts = c->restarts;
}
