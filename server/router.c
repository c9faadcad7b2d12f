/*
 * Router: topic -> partition (PCRE2, JIT, first matching rule wins, cached
 * per topic). Sits on the publish hot path between net (which decoded the
 * event and read its topic) and the partition queues.
 *
 * Threads: the libuv loop thread only. Nothing here is shared with another
 * thread, so there is no locking; a second thread needs its own router.
 *
 * The cache is an open-addressing table (linear probing) whose slots point
 * into a string arena. Entries are never removed one by one: when the
 * table reaches its entry bound, or the arena its byte bound, everything is
 * dropped at once by bumping a generation number (O(1), no sweep), and
 * refills from the next events. Simple, bounded, and a topic costs at most
 * one regex pass per cache lifetime.
 */
#include "router.h"

#include "hash.h"
#include "partname.h"
#include "patterns.h"
#include "pb_errors.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define ARENA_CHUNK_BYTES (64 * 1024)
#define TABLE_MIN_SLOTS   1024
#define ENTRY_ALIGN       8u

struct rule_rt {
    pcre2_code *code;
    char *tmpl; /* partition name template */
    bool dynamic;
    int line;
};

/* A cached decision, in the arena: the topic's bytes follow, NUL-terminated,
 * then (for a dynamic rule's expansion) the partition name, NUL-terminated. */
struct rentry {
    const char *name; /* a static rule's template, the copy after the topic, or NULL */
    uint32_t topic_len;
    uint32_t name_len;
    int32_t rule;
    int32_t status; /* 0, PB_ENOTFOUND or PB_EINVAL */
    char topic[];
};

/* 16 bytes: the table is the router's largest block (a slot per 2 topics
 * at least), so the decision itself lives in the arena. */
struct slot {
    uint32_t gen; /* the slot is in use iff gen == router.gen */
    uint32_t tag; /* the hash's high half: most mismatches never touch the entry */
    const struct rentry *e;
};

struct chunk {
    struct chunk *next;
    size_t used; /* a multiple of ENTRY_ALIGN */
    _Alignas(8) char data[ARENA_CHUNK_BYTES];
};

struct router {
    struct rule_rt *rules;
    size_t n_rules;
    char *conf_path;
    pcre2_match_data *md; /* one for all rules: sized for the most groups */
    pcre2_match_context *mctx;
    int last_match_error; /* PCRE2 code of the last failed (not "no match") match */
    bool match_failed;    /* the last uncached decision was such a failure */

    struct slot *slots;
    size_t cap;       /* slots, power of two; the table keeps load <= 1/2 */
    size_t final_cap; /* cap the table grows to */
    size_t count;     /* slots in use in this generation */
    size_t max_entries;
    uint32_t gen;
    uint64_t seed;

    struct chunk *arena; /* newest first */
    size_t arena_bytes, arena_budget;
    size_t nchunks;

    /* The expansion of the last uncached decision; also what res->partition
     * points to when the decision could not be cached. */
    char name_buf[PB_PARTITION_NAME_MAX + 2];
    size_t name_len;

    unsigned long long hits, misses, clears;
    unsigned long long catch_all_routed; /* router_stats.catch_all */
    /* The first rule is static and its pattern matches every valid topic
     * (".*" or "(?s).*"): every topic goes there, no regex and no cache
     * (router_route). With 100,000 topics the cache was 9 MB of the
     * daemon's RSS for a decision that never depends on the topic. */
    bool catch_all;
    size_t catch_all_len;
};

static size_t pow2_at_least(size_t n)
{
    size_t p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

int router_create(const pb_config *cfg, router **out, char *err, size_t errlen)
{
    int rc = PB_ENOMEM;
    uint32_t max_groups = 0;
    router *r = calloc(1, sizeof *r);

    *out = NULL;
    if (!r)
        goto fail;
    r->conf_path = strdup(cfg->path ? cfg->path : "config");
    r->rules = calloc(cfg->n_rules ? cfg->n_rules : 1, sizeof *r->rules);
    r->mctx = pcre2_match_context_create(NULL);
    if (!r->conf_path || !r->rules || !r->mctx)
        goto fail;
    pcre2_set_match_limit(r->mctx, PATTERNS_MATCH_LIMIT);
    for (size_t i = 0; i < cfg->n_rules; i++) {
        const pb_rule *src = &cfg->rules[i];
        struct rule_rt *dst = &r->rules[i];
        char why[300];

        rc = PB_ENOMEM;
        dst->tmpl = strdup(src->partition);
        if (!dst->tmpl)
            goto fail;
        r->n_rules++;
        dst->dynamic = src->max_group_ref >= 0;
        dst->line = src->line;
        rc = pattern_compile_whole(src->match, strlen(src->match), &dst->code, why, sizeof why);
        if (rc != 0) {
            if (errlen)
                snprintf(err, errlen, "%s:%d: match: bad regex \"%s\": %s", r->conf_path,
                         src->match_line, src->match, why);
            goto fail;
        }
        uint32_t groups = 0;
        (void)pcre2_pattern_info(dst->code, PCRE2_INFO_CAPTURECOUNT, &groups);
        if (groups > max_groups)
            max_groups = groups;
    }
    rc = PB_ENOMEM;
    r->md = pcre2_match_data_create(max_groups + 1, NULL);
    if (!r->md)
        goto fail;

    r->max_entries = cfg->route_cache_entries ? cfg->route_cache_entries : 1;
    r->final_cap = pow2_at_least(2 * r->max_entries);
    r->cap = r->final_cap < TABLE_MIN_SLOTS ? r->final_cap : TABLE_MIN_SLOTS;
    r->slots = calloc(r->cap, sizeof *r->slots);
    if (!r->slots)
        goto fail;
    r->gen = 1;
    r->arena_budget = r->max_entries * (size_t)ROUTER_CACHE_BYTES_PER_ENTRY;
    if (r->n_rules > 0 && !r->rules[0].dynamic &&
        (strcmp(cfg->rules[0].match, ".*") == 0 || strcmp(cfg->rules[0].match, "(?s).*") == 0)) {
        r->catch_all = true;
        r->catch_all_len = strlen(r->rules[0].tmpl);
    }
    if (getrandom(&r->seed, sizeof r->seed, GRND_NONBLOCK) != (ssize_t)sizeof r->seed)
        r->seed = (uint64_t)(uintptr_t)r * 0x9e3779b97f4a7c15ULL; /* any seed is correct */
    *out = r;
    return 0;

fail:
    if (rc == PB_ENOMEM && errlen)
        snprintf(err, errlen, "router: out of memory");
    router_free(r);
    return rc;
}

static bool append(router *r, const char *s, size_t n)
{
    size_t room = sizeof r->name_buf - 1 - r->name_len;
    bool fits = n <= room;
    if (!fits)
        n = room; /* keep a prefix: enough to show, already too long */
    memcpy(r->name_buf + r->name_len, s, n);
    r->name_len += n;
    return fits;
}

/* Expands the rule's template with the groups in r->md into r->name_buf. */
static void expand(router *r, const struct rule_rt *rule, const char *topic)
{
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(r->md);
    uint32_t pairs = pcre2_get_ovector_count(r->md);

    r->name_len = 0;
    for (const char *p = rule->tmpl; *p; p++) {
        bool ok;
        if (*p == '$' && p[1] >= '0' && p[1] <= '9') {
            uint32_t g = (uint32_t)(*++p - '0');
            /* config_load checked g <= the capture count; an unset group
             * (one that did not take part in the match) adds nothing. */
            if (g >= pairs || ov[2 * g] == PCRE2_UNSET || ov[2 * g + 1] < ov[2 * g])
                continue;
            ok = append(r, topic + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
        } else {
            ok = append(r, p, 1);
        }
        if (!ok)
            break;
    }
    r->name_buf[r->name_len] = '\0';
}

/* The static rule whose partition is name[0..len), or -1. Rules are few
 * and this runs only for uncached topics. */
static int static_owner(const router *r, const char *name, size_t len)
{
    for (size_t i = 0; i < r->n_rules; i++) {
        const struct rule_rt *ru = &r->rules[i];
        if (!ru->dynamic && strlen(ru->tmpl) == len && memcmp(ru->tmpl, name, len) == 0)
            return (int)i;
    }
    return -1;
}

/* Runs the rules on the topic. Fills *rule, and r->name_buf for dynamic
 * names and failures. */
static int route_uncached(router *r, const char *topic, size_t len, int *rule)
{
    *rule = -1;
    r->match_failed = false;
    r->name_len = 0;
    for (size_t i = 0; i < r->n_rules; i++) {
        const struct rule_rt *ru = &r->rules[i];
        int rc = pcre2_match(ru->code, (PCRE2_SPTR)topic, len, 0, 0, r->md, r->mctx);
        if (rc == PCRE2_ERROR_NOMATCH)
            continue;
        *rule = (int)i;
        if (rc < 0) {
            /* We cannot tell whether this rule matches, so later rules may
             * not take the topic either: refuse it. */
            r->last_match_error = rc;
            r->match_failed = true;
            return PB_EINVAL;
        }
        if (!ru->dynamic)
            return 0;
        expand(r, ru, topic);
        if (!partname_valid(r->name_buf, r->name_len))
            return PB_EINVAL;
        /* A partition belongs to one rule: its settings are that rule's,
         * and topics a client chooses must not write into a partition the
         * configuration gave to other topics. */
        return static_owner(r, r->name_buf, r->name_len) < 0 ? 0 : PB_EINVAL;
    }
    return PB_ENOTFOUND;
}

static void cache_clear(router *r)
{
    /* Keep one chunk for the next generation; free the rest. */
    struct chunk *keep = r->arena;
    if (keep) {
        struct chunk *c = keep->next;
        while (c) {
            struct chunk *next = c->next;
            free(c);
            c = next;
        }
        keep->next = NULL;
        keep->used = 0;
        r->nchunks = 1;
    }
    r->arena_bytes = 0;
    r->count = 0;
    r->clears++;
    if (++r->gen == 0) {
        /* After 2^32 clears old slots could look current again. */
        memset(r->slots, 0, r->cap * sizeof *r->slots);
        r->gen = 1;
    }
}

/* n bytes (a multiple of ENTRY_ALIGN) of arena, aligned for a rentry. */
static struct rentry *arena_alloc(router *r, size_t n)
{
    struct chunk *c = r->arena;
    if (!c || ARENA_CHUNK_BYTES - c->used < n) {
        c = malloc(sizeof *c);
        if (!c)
            return NULL;
        c->next = r->arena;
        c->used = 0;
        r->arena = c;
        r->nchunks++;
    }
    struct rentry *e = (struct rentry *)(void *)(c->data + c->used);
    c->used += n;
    r->arena_bytes += n;
    return e;
}

static uint32_t tag_of(uint64_t h)
{
    return (uint32_t)(h >> 32);
}

static struct slot *probe(router *r, uint64_t h, const char *topic, size_t len)
{
    size_t mask = r->cap - 1;
    uint32_t tag = tag_of(h);
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct slot *s = &r->slots[i];
        if (s->gen != r->gen)
            return s; /* free: the topic is not cached */
        if (s->tag == tag && s->e->topic_len == len && memcmp(s->e->topic, topic, len) == 0)
            return s;
    }
}

/* Doubles the table, rehashing the current generation. False if out of
 * memory (the table then stays as it is). */
static bool grow(router *r)
{
    size_t ncap = r->cap * 2;
    struct slot *ns = calloc(ncap, sizeof *ns);
    if (!ns)
        return false;
    for (size_t i = 0; i < r->cap; i++) {
        struct slot *s = &r->slots[i];
        if (s->gen != r->gen)
            continue;
        /* The slot keeps half the hash: the topic is hashed again. */
        size_t j = hash_bytes(r->seed, s->e->topic, s->e->topic_len) & (ncap - 1);
        while (ns[j].gen == r->gen)
            j = (j + 1) & (ncap - 1);
        ns[j] = *s;
    }
    free(r->slots);
    r->slots = ns;
    r->cap = ncap;
    return true;
}

/* The name a decision reports: a static rule's template (shared, lives as
 * long as the router), the expansion in name_buf (for a dynamic name or an
 * invalid one), or none (no rule matched, or matching failed). */
static const char *decision_name(const router *r, int status, int rule)
{
    if (status == PB_ENOTFOUND || r->match_failed)
        return NULL;
    if (status == 0 && !r->rules[rule].dynamic)
        return r->rules[rule].tmpl;
    return r->name_buf;
}

/* An expansion may hold a NUL copied from the topic (and is then invalid):
 * its length is name_len, not strlen. */
static size_t name_length(const router *r, const char *name)
{
    if (!name)
        return 0;
    return name == r->name_buf ? r->name_len : strlen(name);
}

/* Caches the decision just computed; returns the slot, or NULL if it could
 * not be cached (out of memory). */
static size_t entry_size(size_t topic_len, size_t copied_name_len)
{
    size_t n = sizeof(struct rentry) + topic_len + 1 + copied_name_len;
    return (n + ENTRY_ALIGN - 1) & ~(size_t)(ENTRY_ALIGN - 1);
}

static struct slot *cache_insert(router *r, uint64_t h, const char *topic, size_t len, int status,
                                 int rule)
{
    const char *name = decision_name(r, status, rule);
    bool copy_name = name == r->name_buf;
    size_t name_len = name_length(r, name);
    size_t need = entry_size(len, copy_name ? r->name_len + 1 : 0);

    if (r->count >= r->max_entries || r->arena_bytes + need > r->arena_budget)
        cache_clear(r);
    if (r->count + 1 > r->cap / 2 && (r->cap >= r->final_cap || !grow(r)))
        cache_clear(r);
    struct rentry *e = arena_alloc(r, need);
    if (!e)
        return NULL;
    if (len)
        memcpy(e->topic, topic, len);
    e->topic[len] = '\0';
    if (copy_name) {
        char *copy = e->topic + len + 1;
        memcpy(copy, r->name_buf, r->name_len);
        copy[r->name_len] = '\0';
        name = copy;
    }
    e->name = name;
    e->name_len = (uint32_t)name_len;
    e->topic_len = (uint32_t)len;
    e->rule = rule;
    e->status = status;
    struct slot *s = probe(r, h, topic, len);
    s->gen = r->gen;
    s->tag = tag_of(h);
    s->e = e;
    r->count++;
    return s;
}

int router_route(router *r, const char *topic, size_t topic_len, router_result *res)
{
    uint64_t h = 0;
    bool cacheable = topic_len <= ROUTER_CACHE_TOPIC_MAX;

    if (!topic)
        topic = ""; /* an empty topic may come as NULL; the C library wants a pointer */
    /* A catch-all first rule takes every topic that reaches the router
     * (ingest validated it: no line break; "." matches every other byte,
     * patterns being compiled with newline LF: pattern_compile_whole). */
    if (r->catch_all && !memchr(topic, '\n', topic_len)) {
        r->catch_all_routed++; /* not a cache hit: there is no cache */
        res->rule = 0;
        res->partition = r->rules[0].tmpl;
        res->partition_len = r->catch_all_len;
        return 0;
    }
    if (cacheable) {
        h = hash_bytes(r->seed, topic, topic_len);
        struct slot *s = probe(r, h, topic, topic_len);
        if (s->gen == r->gen) {
            r->hits++;
            res->rule = s->e->rule;
            res->partition = s->e->name;
            res->partition_len = s->e->name_len;
            return s->e->status;
        }
    }
    r->misses++;
    int rule;
    int status = route_uncached(r, topic, topic_len, &rule);
    /* A failed match (limit hit) is not cached: it is a property of this
     * attempt rather than a decision about the topic. */
    struct slot *s =
        cacheable && !r->match_failed ? cache_insert(r, h, topic, topic_len, status, rule) : NULL;
    res->rule = rule;
    if (s) {
        res->partition = s->e->name;
        res->partition_len = s->e->name_len;
    } else {
        res->partition = decision_name(r, status, rule);
        res->partition_len = name_length(r, res->partition);
    }
    return status;
}

/* Appends s[0..n) to buf as a quoted, escaped string, cut after `max`
 * bytes of input. */
static size_t put_quoted(char *buf, size_t buflen, size_t at, const char *s, size_t n, size_t max)
{
    if (at + 1 >= buflen)
        return at;
    buf[at++] = '"';
    for (size_t i = 0; i < n && i < max && at + 5 < buflen; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            at += (size_t)snprintf(buf + at, buflen - at, "\\%c", ch);
        else if (ch < 0x20 || ch >= 0x7f)
            at += (size_t)snprintf(buf + at, buflen - at, "\\x%02x", ch);
        else
            buf[at++] = (char)ch;
    }
    if (n > max && at + 4 < buflen) {
        memcpy(buf + at, "...", 3);
        at += 3;
    }
    if (at + 1 < buflen)
        buf[at++] = '"';
    buf[at] = '\0';
    return at;
}

const char *router_format_error(const router *r, int code, const char *topic, size_t topic_len,
                                const router_result *res, char *buf, size_t buflen)
{
    size_t at = 0;
    if (!buflen)
        return buf;
    buf[0] = '\0';
    if (code == PB_ENOTFOUND || !res || res->rule < 0 || (size_t)res->rule >= r->n_rules) {
        at = (size_t)snprintf(buf, buflen, "no partition rule in %s matches topic ", r->conf_path);
        if (at < buflen)
            put_quoted(buf, buflen, at, topic, topic_len, 200);
        return buf;
    }
    const struct rule_rt *ru = &r->rules[res->rule];
    at = (size_t)snprintf(buf, buflen, "topic ");
    at = put_quoted(buf, buflen, at, topic, topic_len, 200);
    if (!res->partition) {
        PCRE2_UCHAR msg[200];
        if (pcre2_get_error_message(r->last_match_error, msg, sizeof msg) < 0)
            snprintf((char *)msg, sizeof msg, "PCRE2 error %d", r->last_match_error);
        if (at < buflen)
            snprintf(buf + at, buflen - at,
                     ": matching it against [partition %s] (%s:%d) failed: %s", ru->tmpl,
                     r->conf_path, ru->line, (const char *)msg);
        return buf;
    }
    if (at < buflen)
        at += (size_t)snprintf(buf + at, buflen - at,
                               " matches [partition %s] (%s:%d), but the name ", ru->tmpl,
                               r->conf_path, ru->line);
    if (at < buflen)
        at = put_quoted(buf, buflen, at, res->partition, res->partition_len, PB_PARTITION_NAME_MAX);
    int owner = partname_valid(res->partition, res->partition_len)
                    ? static_owner(r, res->partition, res->partition_len)
                    : -1;
    if (at < buflen && owner >= 0)
        snprintf(buf + at, buflen - at,
                 " it produces is the partition of [partition %s] (%s:%d); a capture group "
                 "may not name another rule's partition",
                 r->rules[owner].tmpl, r->conf_path, r->rules[owner].line);
    else if (at < buflen)
        snprintf(buf + at, buflen - at, " is not a valid partition name (%s)", PARTNAME_RULE);
    return buf;
}

void router_get_stats(const router *r, router_stats *st)
{
    st->hits = r->hits;
    st->catch_all = r->catch_all_routed;
    st->misses = r->misses;
    st->entries = r->count;
    st->clears = r->clears;
    st->bytes = r->cap * sizeof *r->slots + r->nchunks * sizeof(struct chunk);
}

size_t router_cache_max_bytes(uint32_t entries)
{
    size_t n = entries ? entries : 1;
    size_t slots = pow2_at_least(2 * n);
    /* An entry takes at most its header, a topic and a name: a chunk is
     * left with less than that unused when the next does not fit. */
    size_t per_chunk =
        ARENA_CHUNK_BYTES - entry_size(ROUTER_CACHE_TOPIC_MAX, PB_PARTITION_NAME_MAX + 2);
    size_t chunks = n * ROUTER_CACHE_BYTES_PER_ENTRY / per_chunk + 2;
    return slots * sizeof(struct slot) + chunks * sizeof(struct chunk);
}

void router_free(router *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_rules; i++) {
        pcre2_code_free(r->rules[i].code);
        free(r->rules[i].tmpl);
    }
    free(r->rules);
    free(r->conf_path);
    pcre2_match_data_free(r->md);
    pcre2_match_context_free(r->mctx);
    free(r->slots);
    struct chunk *c = r->arena;
    while (c) {
        struct chunk *next = c->next;
        free(c);
        c = next;
    }
    free(r);
}
