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
    struct cache_slot *slots; /* PATTERNS_CACHE_SLOTS, power of two */
    unsigned long long hits, misses;
    bool match_all; /* a pattern matches every valid topic: no regex needed */
    bool jit;       /* every pattern was JIT-compiled: pcre2_jit_match applies */
    bool breached;  /* patterns_breached */
    size_t breach_pattern;
    int breach_rc;
};

_Static_assert((PATTERNS_CACHE_SLOTS & (PATTERNS_CACHE_SLOTS - 1)) == 0,
               "PATTERNS_CACHE_SLOTS must be a power of two");
_Static_assert(PATTERNS_CACHE_TOPIC_MAX < UINT16_MAX, "slot length field is 16 bits");

static int compile_whole(const char *pattern, size_t len, pcre2_code **out, char *why,
                         size_t whylen, bool jit)
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
    if (jit)
        (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    *out = code;
    return 0;
}

int pattern_compile_whole(const char *pattern, size_t len, pcre2_code **out, char *why,
                          size_t whylen)
{
    return compile_whole(pattern, len, out, why, whylen, true);
}

int patterns_check(const char *const *patterns, size_t n, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        char why[300];
        pcre2_code *code;
        int rc = compile_whole(patterns[i], strlen(patterns[i]), &code, why, sizeof why, false);
        if (rc == PB_EINVAL && errlen)
            snprintf(err, errlen, "pattern \"%s\": %s", patterns[i], why);
        else if (rc < 0 && errlen)
            snprintf(err, errlen, "out of memory compiling %zu pattern(s)", n);
        if (rc < 0)
            return rc;
        pcre2_code_free(code);
    }
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
    if (len > PATTERNS_CACHE_TOPIC_MAX) {
        ps->misses++;
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
