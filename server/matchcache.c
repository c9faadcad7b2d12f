/*
 * match_cache - the partition writers' topic -> matching subscriptions
 * cache (see matchcache.h), one per writer, used by the fan-out.
 *
 * Threads: a match_cache belongs to one writer thread.
 */
#include "matchcache.h"

#include "hash.h"
#include "grow.h"
#include "pb_errors.h"

#include <stdlib.h>
#include <string.h>

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
    uint64_t h = hash_bytes(0, topic, len);
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
    if (grow_resize(&c->arena, cap, 1) < 0)
        return PB_ENOMEM;
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
    uint64_t h = hash_bytes(0, topic, len);
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
