/*
 * submatch - a subscription's own topic matching on its thread (history,
 * START_LAST_N, which partitions to read), under a budget (issue 10, F2):
 * PCRE2 limits per pattern and topic (the live fan-out's, matcher.h), and
 * a CPU-time bound on each walk over a partition's topic table, which
 * holds that table's read lock (the partition's writer waits for it to
 * record a new topic). A breach of either ends the subscription with
 * RESOURCE_EXHAUSTED naming the pattern or the walk.
 *
 * Threads: the subscription's pool thread (its pattern_set is its own).
 */
#ifndef PB_SUBMATCH_H
#define PB_SUBMATCH_H

#include "patterns.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* CPU time one walk over a topic table may spend matching: the writer
 * of that partition may wait this long for a new topic. The budget is
 * SUBMATCH_WALK_BUDGET_MS plus SUBMATCH_WALK_TOPIC_US per topic walked, so
 * that it bounds the cost per topic, not the table's size: a simple
 * pattern costs ~0.1 us a topic (~3 us in a ThreadSanitizer build), so a
 * walk of any table passes; patterns that cost more than ~10 us a topic on
 * average (256 simple ones, or a catastrophic one under its match limit)
 * are refused within ~0.25 s plus 10 us per topic seen: at most ~1.6 s on
 * 131,072 topics (the default max_topics_in_memory). */
#define SUBMATCH_WALK_BUDGET_MS  250
#define SUBMATCH_WALK_TOPIC_US   10

/* Sets the set's PCRE2 limits to the fan-out matcher's defaults. */
void submatch_limit(pattern_set *ps);

/* 1 if topic[0..len) matches, 0 if not, PB_ETOOBIG if a pattern of the set
 * exceeded its limits (now or earlier: breaches are sticky), with why
 * naming it: `pattern "P" exceeded its matching budget on topic "T" (match
 * limit)`. patterns are the texts the set was compiled from. */
int submatch_topic(pattern_set *ps, const char *const *patterns, const char *topic, size_t len,
                   char *why, size_t whylen);

/* A walk's CPU clock. */
typedef struct submatch_walk {
    uint64_t start_ns;
    uint32_t topics;
} submatch_walk;

void submatch_walk_start(submatch_walk *w);

/* Counts one topic; every 64, 0 or PB_ETOOBIG once the walk has used more
 * than its budget of this thread's CPU time (above; why names the
 * partition and the topics seen). */
int submatch_walk_step(submatch_walk *w, const char *partition, char *why, size_t whylen);

#endif
