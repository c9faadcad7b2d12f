/*
 * submatch - a subscription's topic matching under a budget (submatch.h).
 *
 * Threads: the subscription's pool thread.
 */
#include "submatch.h"

#include "matcher.h"
#include "pb_errors.h"

#include <stdio.h>
#include <time.h>

void submatch_limit(pattern_set *ps)
{
    patterns_set_limits(ps, MATCHER_MATCH_LIMIT_DEFAULT, MATCHER_DEPTH_LIMIT_DEFAULT);
}

int submatch_topic(pattern_set *ps, const char *const *patterns, const char *topic, size_t len,
                   char *why, size_t whylen)
{
    bool m = patterns_match(ps, topic, len);
    size_t which;
    int err;
    if (!m && patterns_breached(ps, &which, &err)) {
        char reason[64];
        matcher_breach_reason(err, reason, sizeof reason);
        snprintf(why, whylen,
                 "pattern \"%.200s\" exceeded its matching budget on topic \"%.*s\" (%s)",
                 patterns[which], (int)(len < 120 ? len : 120), topic ? topic : "", reason);
        return PB_ETOOBIG;
    }
    return m;
}

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) < 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void submatch_walk_start(submatch_walk *w)
{
    w->start_ns = thread_cpu_ns();
    w->topics = 0;
}

int submatch_walk_step(submatch_walk *w, const char *partition, char *why, size_t whylen)
{
    if (++w->topics % 64 != 0)
        return 0;
    uint64_t used = thread_cpu_ns() - w->start_ns;
    uint64_t budget = (uint64_t)SUBMATCH_WALK_BUDGET_MS * 1000000u +
                      (uint64_t)w->topics * SUBMATCH_WALK_TOPIC_US * 1000u;
    if (used <= budget)
        return 0;
    snprintf(why, whylen,
             "matching its patterns against the topics of partition %s took %llu ms of CPU for "
             "%u topics, over the budget of %d ms + %d us a topic (the partition's topic table "
             "is locked meanwhile)",
             partition, (unsigned long long)(used / 1000000u), w->topics,
             SUBMATCH_WALK_BUDGET_MS, SUBMATCH_WALK_TOPIC_US);
    return PB_ETOOBIG;
}
