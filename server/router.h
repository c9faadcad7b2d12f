/*
 * Router: topic -> partition, by the config's [partition NAME] rules.
 *
 * Rules are tried in file order and the first whose `match` matches the
 * WHOLE topic wins. The partition name is the rule's template with $0..$9
 * replaced by the match's capture groups ($0 the whole topic; a group that
 * did not take part in the match expands to nothing). There is no escape
 * for a literal '$': it is not a valid partition-name character anyway.
 *
 * When the first rule is static and matches every topic (".*"), every
 * topic goes to it without a regex or a cache entry. Otherwise every
 * decision (including "no rule matches" and "invalid name") is cached
 * per topic in a bounded hash table, so a topic seen before costs one hash
 * lookup and no regex, and no allocation. When the table holds
 * route_cache_entries topics (or its string arena is full), it is emptied
 * and refills from the next events: memory stays bounded by about
 * route_cache_entries * (2 * 16 + ROUTER_CACHE_BYTES_PER_ENTRY) bytes.
 *
 * Threads: a router is used by the libuv loop thread only; it has no locks
 * and must not be shared.
 */
#ifndef PB_ROUTER_H
#define PB_ROUTER_H

#include "config.h"

#include <stddef.h>

/* Topics longer than this are routed by regex every time instead of being
 * cached, so that one huge topic cannot crowd the cache out. */
#define ROUTER_CACHE_TOPIC_MAX 512

/* Arena budget per cache entry (a 24-byte decision, the topic and an
 * expanded name, 8-byte aligned); the cache is emptied when the arena
 * reaches route_cache_entries times this. */
#define ROUTER_CACHE_BYTES_PER_ENTRY 152

typedef struct router router;

typedef struct router_result {
    int rule; /* index into the config's rules; -1 when no rule matches */
    /* The partition name, NUL-terminated, partition_len bytes. For
     * PB_EINVAL: the invalid expansion (cut after PB_PARTITION_NAME_MAX + 1
     * bytes), or NULL if the regex itself failed. Owned by the router and
     * valid until the next router_route() or router_free(). */
    const char *partition;
    size_t partition_len;
} router_result;

/* Compiles every rule of cfg (JIT when available). cfg need not outlive the
 * router: what is needed is copied. Returns 0 and *out, owned by the caller
 * (router_free); or PB_EINVAL (a pattern does not compile: config_load
 * rejects those first) / PB_ENOMEM, with a message in err. */
int router_create(const pb_config *cfg, router **out, char *err, size_t errlen);

/* Routes topic[0..topic_len) (need not be NUL-terminated). Returns:
 *   0             res->rule and res->partition are set;
 *   PB_ENOTFOUND  no rule matches the topic (res->rule = -1);
 *   PB_EINVAL     rule res->rule matched, but its name expands to something
 *                 that is not a partition name (partname.h), or to the name
 *                 of a static rule's partition (a partition belongs to one
 *                 rule), or matching it failed (e.g. PCRE2's backtracking
 *                 limit on a huge topic).
 * router_format_error() turns the last two into a message. No allocation
 * when the topic is in the cache. Loop thread only. */
int router_route(router *r, const char *topic, size_t topic_len, router_result *res);

/* Writes a message for a PB_ENOTFOUND / PB_EINVAL result of routing
 * `topic`, naming the topic (escaped, cut if long) and, for PB_EINVAL, the
 * rule (config file and line) and the bad name. Returns buf. */
const char *router_format_error(const router *r, int code, const char *topic, size_t topic_len,
                                const router_result *res, char *buf, size_t buflen);

/* Cache counters since creation (for tests and statistics): lookups
 * answered from the cache, lookups that ran regexes, topics cached now,
 * and how many times the cache was emptied because it was full. */
typedef struct router_stats {
    unsigned long long hits;
    unsigned long long misses;
    size_t entries;
    unsigned long long clears;
    size_t bytes; /* the cache's memory now: its table and string arena */
    /* Topics the catch-all first rule took without the cache (counted
     * neither as hits nor as misses). */
    unsigned long long catch_all;
} router_stats;
void router_get_stats(const router *r, router_stats *st);

/* The most memory the cache of a router with route_cache_entries =
 * `entries` takes (router_stats.bytes never exceeds it): a table of twice
 * as many 16-byte slots (a power of two) and ROUTER_CACHE_BYTES_PER_ENTRY
 * of arena per entry, in 64 KiB chunks. About 184 bytes per entry: 46 MiB
 * at the default 262,144. */
size_t router_cache_max_bytes(uint32_t entries);

/* Frees the router. NULL-safe. */
void router_free(router *r);

#endif
