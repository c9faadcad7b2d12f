/*
 * match_cache: topic -> the list of subscription ids whose patterns match
 * it, bounded in bytes, so that the partition writers run each
 * subscription's regexes once per topic rather than once per event (the
 * fan-out, fanout.c).
 *
 * Threads: a match_cache belongs to one thread (each partition writer has
 * its own).
 */
#ifndef PB_MATCHCACHE_H
#define PB_MATCHCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct match_cache match_cache;

/* Topics longer than this are not cached (looked up, they always miss). */
#define MATCH_CACHE_TOPIC_MAX 1024
/* Smallest limit_bytes match_cache_create accepts. */
#define MATCH_CACHE_MIN_BYTES 16384

/* A cache that holds at most limit_bytes of memory (its index and its
 * entries; it starts small and grows up to the limit; when full it empties
 * itself and starts over, so a working set that fits keeps hitting).
 * Returns 0, PB_EINVAL (limit below MATCH_CACHE_MIN_BYTES) or PB_ENOMEM. */
int match_cache_create(match_cache **out, size_t limit_bytes);

/* NULL-safe. */
void match_cache_free(match_cache *c);

/* If topic[0..len) is cached, returns true with *ids / *n, which stay valid
 * until the next match_cache_put or match_cache_clear. No allocation. */
bool match_cache_get(match_cache *c, const char *topic, size_t len, const uint16_t **ids,
                     size_t *n);

/* Caches a copy of ids[0..n) for topic[0..len) (the topic must not be cached
 * already). Returns 0; PB_ETOOBIG if the entry is not cached (topic longer
 * than MATCH_CACHE_TOPIC_MAX, or an entry bigger than the limit allows);
 * PB_ENOMEM if growing failed (the cache is then empty, still usable). */
int match_cache_put(match_cache *c, const char *topic, size_t len, const uint16_t *ids, size_t n);

/* Forgets every entry (keeps the memory for reuse). */
void match_cache_clear(match_cache *c);

/* Entries cached; bytes of memory held (always <= the limit); and since
 * creation: lookups that hit, that missed, and times the cache was full and
 * started over. For tests and statistics. */
size_t match_cache_count(const match_cache *c);
size_t match_cache_bytes(const match_cache *c);
void match_cache_stats(const match_cache *c, unsigned long long *hits, unsigned long long *misses,
                       unsigned long long *restarts);

#endif
