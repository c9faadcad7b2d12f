/*
 * fanout - the live fan-out: the subscriptions registered for live records,
 * and how a partition writer copies each durable record into the live queues
 * of the subscriptions that want it.
 *
 * It sits between the two sides and depends on neither's internals: every
 * partition is opened with fanout_durable as its "records are durable"
 * callback (partition_options.durable, with the context fanout_writer gives
 * for that partition), and each subscription (subrun.c) adds the part of
 * itself the writers need, a fanout_member, here. So the daemon starts it
 * first: fan-out -> store (the partitions' writers announce into it) ->
 * subscription registry (reads the store, adds its members here). Inside
 * the subscription module it is the bottom layer: sub.c -> subrun.c ->
 * fanout.c -> livequeue.c, never upwards.
 *
 * Threads: fanout_durable and fanout_acked run on partition writer threads,
 * several at a time (each with its own fanout_writer state); fanout_add / fanout_remove
 * on subscription pool threads; fanout_writer on the thread that opens
 * partitions (main or loop); create / destroy on the main thread; the rest
 * on any thread.
 */
#ifndef PB_FANOUT_H
#define PB_FANOUT_H

#include "event.h"
#include "live.h"
#include "livequeue.h"
#include "matcher.h"
#include "patterns.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

struct partition;

typedef struct fanout fanout;
/* One partition writer's own fan-out state (see fanout_writer). */
typedef struct fanout_writer fanout_writer;

/* Subscription slots are 16 bits in the writers' caches. */
#define FANOUT_SLOTS_MAX 65535u
/* Defaults for the fanout_options fields left 0. */
#define FANOUT_QUEUE_TOTAL_DEFAULT (32ull * 1024 * 1024)
#define FANOUT_MATCH_CACHE_DEFAULT (8ull * 1024 * 1024)

typedef struct fanout_options {
    uint32_t slots;             /* subscriptions at most (the pool's size), 1..FANOUT_SLOTS_MAX */
    uint64_t queue_total_bytes; /* bound of all live queues together (0: the default) */
    uint64_t match_cache_bytes; /* bound of each writer's topic -> subscriptions cache (0:
                                   the default) */
    /* The combined matcher's PCRE2 limits and shard size (matcher.h); NULL:
     * matcher_limits_default(). */
    const matcher_limits *matcher;
} fanout_options;

/* PB_EINVAL if an option is out of range (slots 0 or above FANOUT_SLOTS_MAX,
 * queue_total_bytes below 4096, match_cache_bytes below
 * MATCH_CACHE_MIN_BYTES), or PB_ENOMEM. */
int fanout_create(fanout **out, const fanout_options *opts);

/* After every partition that announces into it has closed and every
 * subscription has been removed and its queue destroyed. Frees the writers'
 * states too. NULL-safe. */
void fanout_destroy(fanout *fo);

/* Number of subscription slots (fanout_options.slots). */
uint32_t fanout_slots(const fanout *fo);

/* The pool every live queue is created in (livequeue_create). */
livequeue_pool *fanout_pool(fanout *fo);

/* The context for partition `name`'s durable callback: that writer's own
 * state (a bounded cache of topic -> the subscriptions whose patterns match,
 * so an event costs one lookup, not one regex per subscription; its scratch
 * is allocated on the first batch that finds subscriptions). Owned by the
 * fan-out and kept until fanout_destroy; the same name gives the same state,
 * so a partition opened again after a failed open reuses it. 0 or PB_ENOMEM. */
int fanout_writer_get(fanout *fo, const char *name, fanout_writer **out);

/* The partitions' durable callback (partition_durable_fn), ctx being the
 * partition's fanout_writer: copies what each matching subscription needs
 * into its bounded live queue. A full queue, or the queues' total budget
 * reached, marks that subscription as overflowed: it goes back to the files;
 * the writer never waits for a subscriber. Cheap when there are no
 * subscriptions. A topic not in the writer's cache is matched against every
 * subscription's patterns at once by the combined matcher (matcher.h: one
 * Hyperscan pass, PCRE2 under a budget for the rest; no lock), again only
 * after a subscription starts or ends; subscriptions whose patterns match
 * every topic (".*") skip the lookup. A subscription whose pattern exceeds
 * its budget on a topic is marked breached (fanout_member.breach) and gets
 * nothing more: its thread ends it with an Error naming the pattern. */
void fanout_durable(void *ctx, struct partition *p, const live_record *recs, size_t n);

/* The partitions' acked callback (partition_acked_fn), ctx the same
 * fanout_writer: hands the subscription threads that sleep and were queued
 * records (or overflowed) by the fanout_durable calls since the last one to
 * the fan-out's waker thread (fanout_waker.h), which signals them. Neither
 * in fanout_durable nor by the writer itself: a wake-up can hand the
 * writer's CPU to the woken thread, and 1,000 of them took 15-56 ms a take
 * under load, all of it added to every publisher's ack. Must follow every
 * fanout_durable (a partition calls it after each take's done() callbacks);
 * until then, a sleeping subscription does not see what was queued. */
void fanout_acked(void *ctx);

/*
 * A subscription as the writers see it: which records it wants, the queue
 * they go to, and how to wake its thread. The subscription embeds it
 * (subrun.h), fills it before fanout_add and keeps it valid until
 * fanout_remove has returned.
 */
typedef struct fanout_member {
    /* Read-only while added. */
    uint32_t slot;               /* the subscription's pool slot, < fanout_slots */
    const pattern_set *ps;       /* topic patterns (patterns_match_all) */
    const char *const *patterns; /* their texts, for the matcher (copied by fanout_add) */
    size_t npatterns;
    int64_t min_time_ns;          /* records received earlier are not queued */
    const event_tag_filter *tags; /* every one must match (event_filter_scan) */
    size_t ntags;
    /* Records are queued as runs (livequeue_run_begin): stored records with
     * their headers, for a replication subscription's Records frames. Only
     * with a pattern set that matches every topic, no tags and no time
     * bound: a run is every record of a batch. */
    bool runs;
    int efd;          /* eventfd the writers signal (fanout_wake) */
    const char *peer; /* names the subscriber in messages */
    /* Shared with the subscription's own thread, under mu. */
    pthread_mutex_t mu;
    livequeue *q;
    uint8_t *tag_state; /* mu: the writers' scratch for the tag filter (ntags) */
    /* mu: a pattern exceeded its matching budget on a topic; breach says
     * which, on which topic, and why. Nothing is queued after it. */
    bool breached;
    char breach[480];
    /* mu: the thread saw the queue empty and waits on efd (wait_live). A
     * writer signals efd only then, and clears it as it does: a thread
     * that is awake (draining, writing, or already signalled) looks at the
     * queue under mu before it sleeps again, so one wake-up per sleep
     * suffices, however many records or writers come meanwhile. */
    bool sleeping;
    /* The waker's fast path (fanout_fast): when set, the waker may hand a
     * sleeping thread's queued records to fast(fast_ctx, ...) itself,
     * instead of waking the thread. Set before fanout_add, read-only
     * afterwards; NULL: never (TLS, replication). */
    int (*fast)(void *fast_ctx, lq_span *span, uint8_t *scratch, size_t cap, size_t *used);
    void *fast_ctx;
    /* mu: the thread sleeps in its wait (wait_live): nothing of its own is
     * in progress, so the waker may deliver for it. The thread clears it
     * when it wakes and then waits on fast_cv while fast_busy. */
    bool idle;
    bool fast_busy;         /* mu: the waker is delivering for it */
    pthread_cond_t fast_cv; /* fast_busy became false */
} fanout_member;

/* What a member's fast() returns: everything it read from the span was
 * handled and nothing waits for the thread (FANOUT_FAST_DONE), or the
 * thread must run (FANOUT_FAST_THREAD: records left in the queue it could
 * not take, bytes the socket refused now waiting in the thread's output, a
 * write error for the thread to find). span->pos is left after the last
 * record handled; *used: the bytes of scratch it encoded (what it cost). */
enum { FANOUT_FAST_DONE = 0, FANOUT_FAST_THREAD = 1 };

/* The waker thread, for a member it would signal: if its thread is idle
 * with records queued, lets m->fast deliver them (bounded by cap bytes of
 * scratch, one non-blocking write) and signals the thread only if it must
 * run. 0: delivered, the thread sleeps on; 1: the thread was signalled to
 * take over; -1: not eligible, the caller signals it (fanout_wake).
 * *used: the bytes m->fast encoded (0 if not called). */
int fanout_fast(fanout_member *m, uint8_t *scratch, size_t cap, size_t *used);

/* Subscription thread: adds m to the writers' lists / removes it. Removing
 * what is not there does nothing. After fanout_add returns 0, every batch
 * whose end offset the subscription does not see reaches m's queue (the
 * fence pairing is in fanout.c). fanout_add first compiles m's patterns into
 * the combined matcher (on the calling thread: ~1-2 ms a pattern), unless
 * they match every topic: PB_EINVAL with err naming the pattern when the
 * matcher refuses them (more PCRE2-only patterns than its cap), PB_ENOMEM;
 * then m is not added. */
int fanout_add(fanout *fo, fanout_member *m, char *err, size_t errlen);
void fanout_remove(fanout *fo, fanout_member *m);

/* Any thread: wakes m's subscription thread through its eventfd (records
 * were queued, the queue overflowed, or the subscription is being ended). */
void fanout_wake(fanout_member *m);

/* Counters for tests and diagnostics (any thread; approximate while writers
 * publish). */
typedef struct fanout_stats {
    uint64_t match_hits;   /* events whose subscriptions came from a writer's cache */
    uint64_t match_misses; /* events whose topic ran the subscriptions' patterns */
    uint64_t queued_bytes; /* bytes all live queues hold now (<= queue_budget) */
    uint64_t queue_budget; /* queue_total_bytes in effect */
    uint64_t queue_resets; /* live queues reset after an overflow, since creation */
    uint64_t breaches;     /* subscriptions ended for a pattern over its budget */
    /* The waker's wake-ups (fanout_fast): delivered by the waker alone,
     * delivered in part then handed to the thread, or signalled (the
     * thread was not eligible: not idle, TLS, replication, overflow). */
    uint64_t fast_done, fast_thread, fast_skipped;
    matcher_stats matcher; /* the combined matcher's (matcher.h) */
} fanout_stats;
void fanout_get_stats(fanout *fo, fanout_stats *out);

#endif
