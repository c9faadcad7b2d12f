/*
 * fanout - the live fan-out of the subscription module: which subscriptions
 * are registered for live records, and how a partition writer copies each
 * durable record into the live queues of the subscriptions that want it.
 * Internal to the subscription module: sub.c creates it and registers /
 * unregisters subscriptions (for subrun.c), and sub_registry_publish (the
 * writers' entry point, sub.h) calls fanout_publish.
 *
 * Threads: fanout_publish runs on partition writer threads, several at a
 * time (each with its own sub_fanout); fanout_add / fanout_remove on
 * subscription pool threads; create / destroy on the main thread.
 */
#ifndef PB_FANOUT_H
#define PB_FANOUT_H

#include "subrun.h"

typedef struct fanout fanout;

/* nslots: the subscription pool's size (slot numbers are < nslots <=
 * SUB_THREADS_MAX); queue_total_bytes: the budget of all live queues;
 * match_cache_bytes: the bound of each writer's cache. Returns 0,
 * PB_EINVAL or PB_ENOMEM. */
int fanout_create(fanout **out, uint32_t nslots, uint64_t queue_total_bytes,
                  uint64_t match_cache_bytes);

/* Every subscription removed and every queue destroyed first. NULL-safe. */
void fanout_destroy(fanout *fo);

/* The pool every live queue is created in (livequeue_create). */
livequeue_pool *fanout_pool(fanout *fo);

/* Subscription thread: adds s (its slot, patterns and queue) to the
 * writers' lists / removes it. Removing what is not there does nothing.
 * After fanout_add returns, every batch whose end offset s does not see
 * reaches s's queue (the fence pairing is in fanout.c). */
void fanout_add(fanout *fo, sub *s);
void fanout_remove(fanout *fo, sub *s);

/* Writer thread: see sub_registry_publish in sub.h. */
void fanout_publish(fanout *fo, sub_fanout **wf, partition *p, const live_record *recs, size_t n);

/* Any thread: see sub_stats in sub.h. */
void fanout_stats(fanout *fo, sub_stats *out);

/* Any thread: wakes s's thread (its eventfd). */
void sub_wake(sub *s);

#endif
