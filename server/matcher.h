/*
 * matcher - one combined matcher for every subscription's topic patterns:
 * for a topic, the ids of the subscriptions that any of whose patterns
 * match the WHOLE topic, in one pass instead of one regex per pattern.
 *
 * Meaning: exactly that of PCRE2 as pattern_compile_whole (patterns.h)
 * uses it (anchored at both ends, no UTF mode: bytes, "." is one byte),
 * for every pattern and topic; tests/unit/test_matcher_diff.c checks it
 * against PCRE2 over a large generated set.
 *
 * How: every pattern is compiled with PCRE2 (which validates it and names
 * the error). Patterns in the syntax Hyperscan shares with PCRE2 (hsdb.h)
 * are compiled into Hyperscan databases ("shards", up to shard_patterns
 * distinct expressions each), scanned once per topic; the others run
 * through PCRE2 under a budget (match, depth and heap limits). A topic
 * costs one hs_scan per shard, plus the PCRE2 patterns of the subscriptions
 * Hyperscan did not match already.
 *
 * Budget: a PCRE2 pattern that exceeds its limits on a topic is reported
 * in the result (which subscription, which pattern), unless another of the
 * subscription's patterns matches the topic; a reported subscription is
 * left out of the topic's matches, and the caller ends it with an Error
 * naming the pattern. A subscription may have at most max_pcre_patterns
 * PCRE2 patterns, so one topic costs one subscription at most
 * max_pcre_patterns * match_limit steps (about 0.3 ms for 100,000 steps
 * with JIT). Hyperscan patterns have no budget: their cost is linear in the
 * topic, whatever the pattern.
 *
 * Updates: the matching state is an immutable snapshot, replaced whole by
 * matcher_set_add / _remove and by matcher_set_compact. An added
 * subscription is "young": its Hyperscan patterns are compiled into a
 * shard of its own on the caller's thread (~1-2 ms a pattern), but run
 * through PCRE2 with JIT code until compacted (one tiny shard per young
 * subscription would cost ~0.1 us a topic each); its shard decides a topic
 * only where PCRE2 exceeds the budget, so a Hyperscan pattern is never
 * reported as a breach. matcher_set_compact merges young shards into full
 * ones, in bounded rounds, on a background thread. Matching threads find
 * the current snapshot with one atomic load and a hazard pointer: they
 * take no lock, so neither an update nor a compaction ever waits for a
 * match, or a match for them. A snapshot is freed once no reader can still
 * be using it.
 *
 * Keyed subscriptions: a subscription each of whose Hyperscan patterns has
 * a key (matcher_keys.h: a literal every matching topic starts or ends
 * with, like "orders.eu." in "orders\.eu\..*" or "017" in
 * "t\.[0-9]*017") that at most key_share subscriptions share is "keyed"
 * when added: its own shard (compiled at add, as for any young one) stays
 * its own for good, and is scanned only for the topics that carry one of
 * its keys, found by a hash lookup per key length in the snapshot's key
 * index. So it is never compacted and never runs through PCRE2 (its
 * PCRE2-only patterns excepted, as for anyone), and a topic costs a few
 * lookups plus one tiny scan per subscription it may match, instead of a
 * scan of every full shard (the bench's 1,000 keyed subscriptions: ~0.1
 * us a topic against ~1 us for 16 full shards). A keyed subscription each
 * of whose Hyperscan patterns has a shape (matcher_keys.h: literal bytes
 * around at most one run of a class, like the two above) is decided by
 * the shapes, without its scan (which was ~9% of the fan-out bench's
 * samples). The price: a database of
 * its own, ~4 KB for a one-pattern subscription (~300 bytes in a full
 * shard); with many patterns about what a full shard costs (20
 * subscriptions of 200 patterns: 1,037 against 1,032 bytes a pattern).
 *
 * Memory (figures from test_matcher.c and tests/bench/matcher_bench.c,
 * the bench's patterns): per distinct pattern its text, a PCRE2 code
 * (~200 bytes; plus ~1 KB of JIT code for PCRE2-only patterns, and for
 * Hyperscan ones while young), and its share of a shard: ~300 bytes in a
 * full shard (up to ~3 KB for patterns with classes and repeats), ~4 KB
 * in a young one. Per (subscription, pattern) pair: ~40 bytes of tables.
 * A snapshot costs 4 bytes per pair, 24 per subscription and 24 per PCRE2
 * pattern; at most one per reader is pinned beyond the current one. Per
 * reader: a Hyperscan scratch (3-400 KB, for the largest shard),
 * MATCHER_BATCH_MAX bytes per subscription (a state per topic of a batch)
 * and logs as large as the largest answer seen. matcher_set_stats reports
 * the totals of shards and PCRE2 code.
 *
 * Threads: matcher_set_add, _remove, _compact, _stats and reader creation
 * and destruction may run on any threads at once (they serialise on the
 * set's own lock, which matching never takes; _compact holds it only to
 * pick its inputs and to publish). matcher_match and _match_batch run on
 * the reader's thread, any number of readers at once.
 */
#ifndef PB_MATCHER_H
#define PB_MATCHER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct matcher_set matcher_set;
typedef struct matcher_reader matcher_reader;

typedef struct matcher_limits {
    /* PCRE2 limits per pattern per topic (pcre2_set_match_limit,
     * _depth_limit, _heap_limit). JIT honours the match limit; its stack
     * is PCRE2's default (32 KiB), and running out of it is a breach too. */
    uint32_t match_limit;
    uint32_t depth_limit;
    uint32_t heap_limit_kib;
    /* Patterns per subscription that must run through PCRE2 (outside
     * Hyperscan's syntax); a subscription with more is refused. 0: none. */
    uint32_t max_pcre_patterns;
    /* Distinct expressions per Hyperscan database. Compile time grows
     * faster than linearly with it (1000 of the bench's patterns: 15 s in
     * one database, 1 s in shards of 64); scan time grows with the number
     * of shards (~80 ns each). */
    uint32_t shard_patterns;
    /* Keyed subscriptions (see "Keyed subscriptions" above): at most this
     * many subscriptions' patterns filed under one key. 0: none keyed. */
    uint32_t key_share;
    /* false: every pattern through PCRE2 (the baseline, and the fallback
     * on a CPU without SSSE3, where Hyperscan cannot run). */
    bool hyperscan;
} matcher_limits;

#define MATCHER_MATCH_LIMIT_DEFAULT    100000
#define MATCHER_DEPTH_LIMIT_DEFAULT    5000
#define MATCHER_HEAP_LIMIT_KIB_DEFAULT 4096
#define MATCHER_MAX_PCRE_DEFAULT       16
#define MATCHER_SHARD_DEFAULT          64
#define MATCHER_KEY_SHARE_DEFAULT      8

/* The defaults above, with Hyperscan. */
matcher_limits matcher_limits_default(void);

/* A pattern that exceeded its budget on the topic matched, in a
 * subscription none of whose other patterns matched. */
typedef struct matcher_breach {
    uint32_t id;      /* the subscription */
    uint32_t pattern; /* index into the patterns given to matcher_set_add */
    int pcre2_error;  /* PCRE2_ERROR_MATCHLIMIT, _DEPTHLIMIT, _HEAPLIMIT, _JIT_STACKLIMIT... */
} matcher_breach;

/* What matcher_match found. The arrays belong to the reader and are valid
 * until its next matcher_match. */
typedef struct matcher_result {
    const uint32_t *ids; /* matching subscriptions, each once, in no order */
    size_t n;
    const matcher_breach *breaches; /* at most one per subscription */
    size_t nbreaches;
    /* The subscription set the answer is for: moves with every add and
     * remove (not with compaction, which changes no answer). A cache of
     * answers keyed by topic is valid while this stays the same. */
    uint64_t version;
    /* Every subscription of the set is keyed (no full shard, no PCRE2
     * pattern): the answer cost a hash lookup per key length and a small
     * scan per candidate, about what a topic -> answer cache costs to look
     * up and fill, so such answers are worth no cache entry. */
    bool keyed_only;
} matcher_result;

typedef struct matcher_stats {
    uint64_t version;     /* see matcher_result */
    size_t subscriptions; /* in the set */
    size_t patterns;      /* pairs (subscription, pattern), duplicates within one left out */
    size_t pcre_patterns; /* of those, run through PCRE2 */
    size_t shards;        /* Hyperscan databases in the current snapshot */
    size_t young_shards;  /* of those, not compacted yet (keyed ones left out) */
    size_t keyed;         /* subscriptions matched through keys (and their own shards) */
    size_t shaped;        /* of those, decided by their patterns' shapes (matcher_keys.h) */
    size_t shape_bytes;   /* ... the shapes' memory (at most MSUB_SHAPES_MAX patterns each) */
    size_t shard_bytes;   /* their size (hs_database_size) */
    size_t pcre_bytes;    /* PCRE2 codes and their JIT code */
    size_t retired;       /* old snapshots not freed yet (a reader may use them) */
    uint64_t compactions; /* completed */
    bool hyperscan;       /* in use */
} matcher_stats;

/* A new, empty set; lim NULL means matcher_limits_default(). If lim asks
 * for Hyperscan and this CPU cannot run it, the set uses PCRE2 only
 * (matcher_stats says so). PB_EINVAL for a zero limit or shard size;
 * PB_ENOMEM. */
int matcher_set_create(matcher_set **out, const matcher_limits *lim);

/* Frees the set. Every reader must have been destroyed. NULL-safe. */
void matcher_set_destroy(matcher_set *set);

/*
 * Adds subscription `id` with n NUL-terminated patterns (n may be 0: it
 * matches nothing; a pattern given twice counts once). Compiles them with
 * PCRE2 and its Hyperscan patterns into a shard of its own (about 1-2 ms
 * per pattern), then publishes. The patterns are copied.
 * Errors (nothing changes): PB_EINVAL with err naming the problem: a bad
 * pattern (pattern "a(b": missing closing parenthesis at offset 3), more
 * PCRE2-only patterns than max_pcre_patterns (naming the first and why),
 * an id already in the set; PB_ENOMEM.
 */
int matcher_set_add(matcher_set *set, uint32_t id, const char *const *patterns, size_t n, char *err,
                    size_t errlen);

/* Removes subscription `id`; no match after this returns it.
 * PB_ENOTFOUND if it is not in the set. */
int matcher_set_remove(matcher_set *set, uint32_t id);

/* True if matcher_set_compact has work: shards not compacted yet, shards
 * less than half full, or shards mostly of removed subscriptions. */
bool matcher_set_compact_wanted(matcher_set *set);

/* One round: merges some of those shards (the oldest first, up to four
 * full shards' worth) into full ones and publishes the result; call it
 * again while matcher_set_compact_wanted. Slow (Hyperscan compiles; 0.02
 * to 0.15 s per 64 patterns): run it on a background thread. Adds and
 * removes proceed meanwhile. One compaction at a time (a second call waits
 * for the first). 0, or PB_ENOMEM (then nothing changed). */
int matcher_set_compact(matcher_set *set);

void matcher_set_stats(matcher_set *set, matcher_stats *st);

/* A reader: one per matching thread (it holds that thread's Hyperscan
 * scratch and PCRE2 match data, and its hazard pointer). PB_ENOMEM. */
int matcher_reader_create(matcher_set *set, matcher_reader **out);

/* NULL-safe. Not while the reader is matching. */
void matcher_reader_destroy(matcher_reader *r);

/*
 * The subscriptions whose patterns match the whole topic[0..len) (topic
 * may be NULL when len is 0), into *res, and the budget breaches. No lock;
 * no allocation, except when the set changed or an answer is larger than
 * any before (the reader then grows its buffers and scratch). 0; PB_ENOMEM
 * (growing failed: nothing is known about this topic); PB_ETOOBIG for a
 * topic of 4 GiB or more; PB_EFAILED if Hyperscan reports an error (a bug,
 * not an input: never seen).
 */
int matcher_match(matcher_reader *r, const char *topic, size_t len, matcher_result *res);

/* Topics per matcher_match_batch. */
#define MATCHER_BATCH_MAX 256

/*
 * matcher_match for n topics at once (1 <= n <= MATCHER_BATCH_MAX; the
 * fan-out's chunk of records): res[i] answers topics[i] (lens[i] bytes).
 * The same answers as n calls, faster when patterns run through PCRE2
 * (before compaction, or PCRE2-only ones): each pattern runs over the
 * batch's topics in turn, while its code is in the CPU caches (topic by
 * topic, 1,000 JIT codes evict each other: ~4x slower). Errors as
 * matcher_match, plus PB_EINVAL for n out of range; on error no res[i]
 * holds anything.
 */
int matcher_match_batch(matcher_reader *r, const char *const *topics, const size_t *lens, size_t n,
                        matcher_result *res);

/* "match limit", "depth limit", "heap limit", "JIT stack limit" or PCRE2's
 * message for other codes: the reason of a breach, for the Error. Writes
 * into buf and returns it. */
const char *matcher_breach_reason(int pcre2_error, char *buf, size_t len);

#endif
