/*
 * Topic patterns: whole-topic PCRE2 matching for subscriptions (and the one
 * place that decides what "matches the whole topic" means, for the config,
 * the router and the CLI's `cat` filter too).
 *
 * Threads: pattern_compile_whole() is thread-safe. A pattern_set is owned
 * by one thread (a subscription's, or the CLI's); patterns_match() writes
 * to the set's cache and match data, so only the owner calls it.
 * patterns_match_shared() only reads the compiled codes and the match
 * context (PCRE2 allows that from several threads), with the caller's match
 * data.
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
    /* PATTERNS_CACHE_SLOTS, power of two; allocated by the first
     * patterns_match (a live subscription never calls it: 1,000 of them
     * would hold a touched page each for nothing). */
    struct cache_slot *slots;
    unsigned long long hits, misses;
    bool match_all; /* every valid topic matches: no regex needed (never when gated) */
    bool jit;       /* every pattern was JIT-compiled: pcre2_jit_match applies */
    bool breached;  /* patterns_breached */
    size_t breach_pattern;
    int breach_rc;
    /* patterns_restrict: a topic must also match one of allow (unless
     * allow_all) and none of deny. */
    bool gated, allow_all, own_all;
    pcre2_code **allow, **deny;
    size_t nallow, ndeny;
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
    /* Newline is LF, whatever the library was built with: under
     * NEWLINE_ANY (a build option) "." would not match the byte 0x85,
     * which occurs inside valid UTF-8 ("\xc3\x85"), so ".*" would refuse
     * topics that Hyperscan (matcher.c) and the router's and the fan-out's
     * match-everything shortcuts accept. */
    pcre2_compile_context *cctx = pcre2_compile_context_create(NULL);
    if (!cctx) {
        if (whylen)
            snprintf(why, whylen, "out of memory compiling the pattern");
        return PB_ENOMEM;
    }
    (void)pcre2_set_newline(cctx, PCRE2_NEWLINE_LF);
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)pattern, len, PCRE2_ANCHORED | PCRE2_ENDANCHORED,
                                     &errcode, &erroff, cctx);
    pcre2_compile_context_free(cctx);
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

static bool is_match_all(const char *pattern)
{
    return strcmp(pattern, ".*") == 0 || strcmp(pattern, "(?s).*") == 0;
}

int patterns_compile(const char *const *patterns, size_t n, pattern_set **out, char *err,
                     size_t errlen)
{
    int rc = PB_ENOMEM;
    pattern_set *ps = calloc(1, sizeof *ps);

    *out = NULL;
    if (!ps)
        goto fail;
    ps->mctx = pcre2_match_context_create(NULL);
    if (!ps->mctx)
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
        if (is_match_all(patterns[i]))
            ps->match_all = true;
    }
    ps->own_all = ps->match_all;
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

/* Does any of codes[0..n) match? PCRE2_ERROR_NOMATCH, or a limit hit:
 * either way that pattern does not select the topic. */
static bool any_match(pcre2_code *const *codes, size_t n, const char *topic, size_t len,
                      pcre2_match_data *md, pcre2_match_context *mctx)
{
    for (size_t i = 0; i < n; i++)
        if (pcre2_match(codes[i], (PCRE2_SPTR)topic, len, 0, 0, md, mctx) >= 0)
            return true;
    return false;
}

/* The restriction of patterns_restrict, checked on the topic itself (never
 * on the set's own patterns): what no pattern of the set can widen. */
static bool gate_passes(const pattern_set *ps, const char *topic, size_t len, pcre2_match_data *md)
{
    if (!ps->gated)
        return true;
    if (!ps->allow_all && !any_match(ps->allow, ps->nallow, topic, len, md, ps->mctx))
        return false;
    /* A deny pattern that cannot decide (a match limit, patterns_set_limits)
     * denies: a topic crafted to exhaust it must not get through. */
    for (size_t i = 0; i < ps->ndeny; i++)
        if (pcre2_match(ps->deny[i], (PCRE2_SPTR)topic, len, 0, 0, md, ps->mctx) !=
            PCRE2_ERROR_NOMATCH)
            return false;
    return true;
}

/* Whether one of the set's own patterns matches; a pattern over its limits
 * (when none matches) is remembered as the set's breach (patterns_breached). */
static bool own_match(pattern_set *ps, const char *topic, size_t len)
{
    size_t over = ps->n;
    int over_rc = 0;
    for (size_t i = 0; i < ps->n; i++) {
        int rc = pcre2_match(ps->codes[i], (PCRE2_SPTR)topic, len, 0, 0, ps->md, ps->mctx);
        if (rc >= 0)
            return true;
        /* PCRE2_ERROR_NOMATCH, or a limit hit: either way this pattern
         * does not select the topic; a limit hit is remembered. */
        if (rc != PCRE2_ERROR_NOMATCH && over == ps->n) {
            over = i;
            over_rc = rc;
        }
    }
    if (over < ps->n && !ps->breached) {
        ps->breached = true;
        ps->breach_pattern = over;
        ps->breach_rc = over_rc;
    }
    return false;
}

bool patterns_gate_shared(const pattern_set *ps, const char *topic, size_t len,
                          pcre2_match_data *md)
{
    return gate_passes(ps, topic ? topic : "", len, md);
}

static bool match_uncached(pattern_set *ps, const char *topic, size_t len)
{
    if (!ps->own_all && !own_match(ps, topic, len))
        return false;
    return gate_passes(ps, topic, len, ps->md);
}

void patterns_set_limits(pattern_set *ps, uint32_t match_limit, uint32_t depth_limit)
{
    pcre2_set_match_limit(ps->mctx, match_limit);
    pcre2_set_depth_limit(ps->mctx, depth_limit);
}

bool patterns_breached(const pattern_set *ps, size_t *pattern, int *pcre2_error)
{
    if (ps->breached) {
        *pattern = ps->breach_pattern;
        *pcre2_error = ps->breach_rc;
    }
    return ps->breached;
}

bool patterns_match(pattern_set *ps, const char *topic, size_t len)
{
    if (ps->match_all)
        return true;
    if (!topic)
        topic = ""; /* an empty topic may come as NULL; memcmp wants a pointer */
    if (!ps->slots)
        ps->slots = calloc(PATTERNS_CACHE_SLOTS, sizeof *ps->slots);
    if (len > PATTERNS_CACHE_TOPIC_MAX || !ps->slots) {
        ps->misses++; /* out of memory for the cache: correct, only slower */
        return match_uncached(ps, topic, len);
    }
    /* The cache is direct-mapped, so a poor distribution only costs extra
     * regex runs, never correctness (slots compare the topic bytes). */
    uint64_t h = hash_bytes(0, topic, len);
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
    bool own = ps->own_all;
    for (size_t i = 0; i < ps->n && !own; i++) {
        int rc = ps->jit ? pcre2_jit_match(ps->codes[i], (PCRE2_SPTR)topic, len, 0, 0, md, ps->mctx)
                         : pcre2_match(ps->codes[i], (PCRE2_SPTR)topic, len, 0, 0, md, ps->mctx);
        if (rc >= 0)
            own = true;
    }
    return own && gate_passes(ps, topic, len, md);
}

/* Compiles list[0..n) into *codes (allocated; *count those compiled, so a
 * failure frees exactly what was made). */
static int compile_list(const char *const *list, size_t n, pcre2_code ***codes, size_t *count,
                        const char *what, char *err, size_t errlen)
{
    *count = 0;
    if (n == 0)
        return 0;
    *codes = calloc(n, sizeof **codes);
    if (!*codes) {
        if (errlen)
            snprintf(err, errlen, "out of memory compiling %zu pattern(s)", n);
        return PB_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        char why[300];
        int rc = pattern_compile_whole(list[i], strlen(list[i]), &(*codes)[i], why, sizeof why);
        if (rc != 0) {
            if (errlen)
                snprintf(err, errlen, "%s pattern \"%s\": %s", what, list[i], why);
            return rc;
        }
        (*count)++;
    }
    return 0;
}

int patterns_restrict(pattern_set *ps, const char *const *allow, size_t nallow,
                      const char *const *deny, size_t ndeny, char *err, size_t errlen)
{
    if (ps->gated) {
        if (errlen)
            snprintf(err, errlen, "the pattern set is already restricted");
        return PB_EINVAL;
    }
    bool allow_all = false;
    for (size_t i = 0; i < nallow; i++)
        allow_all = allow_all || is_match_all(allow[i]);
    if (allow_all && ndeny == 0)
        return 0; /* nothing restricted: the set keeps its fast paths */
    ps->gated = true;
    ps->allow_all = allow_all;
    ps->match_all = false;
    if (ps->slots)
        memset(ps->slots, 0, PATTERNS_CACHE_SLOTS * sizeof *ps->slots);
    int rc =
        allow_all ? 0 : compile_list(allow, nallow, &ps->allow, &ps->nallow, "allow", err, errlen);
    if (rc == 0)
        rc = compile_list(deny, ndeny, &ps->deny, &ps->ndeny, "deny", err, errlen);
    if (rc == 0)
        return 0;
    /* A set that failed to restrict lets nothing through. */
    ps->allow_all = false;
    for (size_t i = 0; i < ps->nallow; i++)
        pcre2_code_free(ps->allow[i]);
    ps->nallow = 0;
    return rc;
}

bool patterns_restricted(const pattern_set *ps)
{
    return ps->gated;
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
    for (size_t i = 0; i < ps->nallow; i++)
        pcre2_code_free(ps->allow[i]);
    free(ps->allow);
    for (size_t i = 0; i < ps->ndeny; i++)
        pcre2_code_free(ps->deny[i]);
    free(ps->deny);
    pcre2_match_data_free(ps->md);
    pcre2_match_context_free(ps->mctx);
    free(ps->slots);
    free(ps);
}
