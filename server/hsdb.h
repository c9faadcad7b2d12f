/*
 * hsdb - whole-topic patterns as Hyperscan expressions, and Hyperscan
 * databases of many of them (the matcher's automaton; see matcher.h).
 *
 * A topic pattern means what PCRE2 says: the pattern, compiled with
 * PCRE2_ANCHORED | PCRE2_ENDANCHORED and no UTF mode, matches the WHOLE
 * topic, byte by byte (pattern_compile_whole in patterns.h). Hyperscan
 * implements much of PCRE's syntax with the same meaning, but not all of
 * it, and it reports match ends rather than whole matches. So:
 *
 * - hsdb_expr() accepts only a subset of the syntax, one whose meaning the
 *   two engines agree on (literal bytes, escaped punctuation, \d \w \s and
 *   their negations, \t \n \r \f \xHH, ".", classes of those and ranges,
 *   groups, "|", greedy and lazy quantifiers with bounds up to
 *   HSDB_REPEAT_MAX (not {0}), the inline options (?i) and (?s), a leading "^" and a
 *   trailing "$"), and checked by tests/unit/test_matcher_diff.c against
 *   PCRE2. Everything else (back-references, lookaround, \b, possessive
 *   and atomic groups, (?x), (?m), \Q..\E, (*VERB)s, POSIX classes, ...)
 *   is left to PCRE2 by the caller: refusing costs speed, never
 *   correctness.
 * - The expression it writes is "^(?:P)\z": anchored at the start of the
 *   data and at its very end (\z, unlike "$", does not match before a final
 *   newline), so a report means that the whole topic matches, and
 *   HS_FLAG_SINGLEMATCH (one report per expression) loses nothing.
 *
 * Threads: every function here is thread-safe (no shared state).
 */
#ifndef PB_HSDB_H
#define PB_HSDB_H

#include <hs.h>

#include <stdbool.h>
#include <stddef.h>

/* Patterns longer than this go to PCRE2 (a bound on Hyperscan's compile
 * time and database size per pattern). */
#define HSDB_PATTERN_MAX 512
/* Largest repeat bound ({n,m}) taken, and largest product of nested
 * bounds (((a{8}){8}){8} is 512). Hyperscan's compile time grows with
 * both; topics are at most 255 bytes anyway. */
#define HSDB_REPEAT_MAX 255
#define HSDB_WEIGHT_MAX 1024
/* Room hsdb_expr needs for any accepted pattern: "^(?:" ")\z" and a NUL. */
#define HSDB_EXPR_MAX (HSDB_PATTERN_MAX + 8)

/* If pattern[0..len) is in the subset above, writes its Hyperscan
 * expression (NUL-terminated) into out[HSDB_EXPR_MAX] and returns true.
 * Otherwise returns false and, if why is not NULL, writes what made it
 * refuse ("unsupported syntax \"(?=\" at offset 3"). */
bool hsdb_expr(const char *pattern, size_t len, char *out, char *why, size_t whylen);

/* Compiles n expressions (from hsdb_expr) into one block-mode database in
 * which expression i reports id i, once per scan at most. Expressions
 * Hyperscan refuses are left out and flagged in refused[i] (the others
 * false). Returns 0 and *db (NULL if n is 0 or every expression was
 * refused; free it with hs_free_database); PB_ETOOBIG if Hyperscan failed
 * for a reason that is not one expression's (too large together: compile
 * fewer at a time); PB_ENOMEM. Takes from milliseconds to seconds: never
 * on a thread that others wait for. */
int hsdb_compile(const char *const *exprs, size_t n, bool *refused, hs_database_t **db);

/* True if Hyperscan runs on this CPU (it needs SSSE3). */
bool hsdb_available(void);

#endif
