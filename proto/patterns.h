/*
 * Topic patterns: PCRE2 regexes that must match a WHOLE topic (anchored at
 * both ends, so "a.b" matches "axb" but not "xa.b" or "a.bc"). Patterns
 * are byte-oriented (no UTF mode): "." matches one byte.
 *
 * A pattern_set is what a subscription filters topics with (in the daemon,
 * and in the CLI's `cat`): any-of semantics, plus a bounded per-set cache
 * of topic -> decision so that a topic seen before costs one hash lookup
 * and no regex.
 *
 * Threads: a pattern_set belongs to one thread for patterns_match (it
 * writes to the set's cache and match data); patterns_match_shared() and
 * the read-only accessors may run on other threads at the same time, each
 * with its own match data. pattern_compile_whole() is thread-safe and is
 * also what config and router use, so every "whole-topic" regex means the
 * same thing.
 */
#ifndef PB_PATTERNS_H
#define PB_PATTERNS_H

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Decisions cached per pattern_set (direct-mapped: a new topic replaces the
 * one in its slot). Topics longer than PATTERNS_CACHE_TOPIC_MAX bytes are
 * matched by regex every time rather than cached. Memory per set:
 * PATTERNS_CACHE_SLOTS * 128 bytes. */
#define PATTERNS_CACHE_SLOTS     2048
#define PATTERNS_CACHE_TOPIC_MAX 116

/* Limit on PCRE2 backtracking per match, so that a pathological pattern on
 * a long topic fails (counts as "no match") instead of stalling a thread. */
#define PATTERNS_MATCH_LIMIT 1000000

typedef struct pattern_set pattern_set;

/* Compiles pattern[0..len) for whole-topic matching and tries to JIT it
 * (silently falling back to the interpreter if JIT is unavailable). On
 * success returns 0 and *out, which the caller frees with pcre2_code_free().
 * On a bad pattern returns PB_EINVAL and writes PCRE2's message and the
 * offset into `why` ("missing closing parenthesis at offset 3"); PB_ENOMEM
 * if out of memory. */
int pattern_compile_whole(const char *pattern, size_t len, pcre2_code **out, char *why,
                          size_t whylen);

/* Compiles n NUL-terminated patterns into a new set (n may be 0: a set that
 * matches nothing). Returns 0 and *out, owned by the caller (patterns_free);
 * or PB_EINVAL with err naming the pattern, PCRE2's message and the offset
 * (pattern "a(b": missing closing parenthesis at offset 3), or PB_ENOMEM.
 * The patterns are not referenced after the call. */
int patterns_compile(const char *const *patterns, size_t n, pattern_set **out, char *err,
                     size_t errlen);

/* True if any pattern of the set matches the whole topic[0..len). A match
 * error (e.g. the backtracking limit) counts as no match for that pattern.
 * No allocation. Owning thread only. */
bool patterns_match(pattern_set *ps, const char *topic, size_t len);

/* True if the set matches every valid topic without running a regex: one
 * of its patterns is exactly ".*" or "(?s).*". ("." stops only at line
 * breaks, and a valid topic has no control characters, see topic_validate;
 * patterns_match answers such a set at once, so every path agrees.) */
bool patterns_match_all(const pattern_set *ps);

/* Like patterns_match but without the set's cache, with match data md
 * (from patterns_match_data_create) owned by the calling thread: safe to
 * call while the owning thread uses the set. No allocation. */
bool patterns_match_shared(const pattern_set *ps, const char *topic, size_t len,
                           pcre2_match_data *md);

/* Match data for patterns_match_shared (one per thread); free it with
 * pcre2_match_data_free(). NULL if out of memory. */
pcre2_match_data *patterns_match_data_create(void);

/* Per-set PCRE2 limits (pcre2_set_match_limit, _depth_limit) for
 * patterns_match; by default PATTERNS_MATCH_LIMIT and PCRE2's depth limit.
 * Owning thread, before matching. */
void patterns_set_limits(pattern_set *ps, uint32_t match_limit, uint32_t depth_limit);

/* True once a patterns_match call found no pattern matching and at least
 * one exceeding its limits (a budget breach: the answer "no match" was not
 * earned): *pattern is that pattern's index (as given to patterns_compile)
 * and *pcre2_error PCRE2's code. Sticky: it stays set. Owning thread. */
bool patterns_breached(const pattern_set *ps, size_t *pattern, int *pcre2_error);

/*
 * Restricts the set to what a reader may see (the daemon's per-user
 * subscribe rights): from then on a topic matches only if, besides one of
 * the set's own patterns, one of allow[0..nallow) matches it whole and none
 * of deny[0..ndeny) does (deny wins; nallow 0: nothing matches). Checked on
 * the topic itself, independently of the set's patterns, so no pattern of
 * the set can widen it; every path (patterns_match, patterns_match_shared,
 * patterns_match_all) obeys it, and the cache holds the combined decision.
 * An allow list holding ".*" with no deny restricts nothing (the set keeps
 * its fast paths). Owning thread, before the set is shared. 0, or PB_EINVAL
 * (err names the pattern and PCRE2's reason) / PB_ENOMEM; on failure the
 * set matches nothing. Once per set.
 */
int patterns_restrict(pattern_set *ps, const char *const *allow, size_t nallow,
                      const char *const *deny, size_t ndeny, char *err, size_t errlen);

/* Whether patterns_restrict put a restriction on the set. */
bool patterns_restricted(const pattern_set *ps);

/* Whether topic[0..len) passes the set's restriction alone
 * (patterns_restrict; true for a set without one), whatever its own
 * patterns say: for the fan-out, which matches the own patterns elsewhere
 * (the combined matcher). With md owned by the calling thread, like
 * patterns_match_shared; safe while the owning thread uses the set. */
bool patterns_gate_shared(const pattern_set *ps, const char *topic, size_t len,
                          pcre2_match_data *md);

/* Number of patterns in the set. */
size_t patterns_count(const pattern_set *ps);

/* Cache counters since creation: lookups answered from the cache, and
 * lookups that ran the regexes. For tests and statistics. */
void patterns_cache_stats(const pattern_set *ps, unsigned long long *hits,
                          unsigned long long *misses);

/* Frees the set. NULL-safe. */
void patterns_free(pattern_set *ps);

#endif
