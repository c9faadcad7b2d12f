/*
 * fanout - the live fan-out (see fanout.h): partition writers copy durable
 * records into the live queues of the registered subscriptions. This file
 * is the registry (subscriptions added and removed, the matcher's compile
 * thread, the waker); what a writer does with a batch is fanout_publish.c.
 *
 * The registered subscriptions are kept in two lists of pool slots: `all`
 * (patterns that match every topic, e.g. ".*": no matching needed) and
 * `some` (the rest). Each writer has its own fanout_writer: a match_cache of
 * topic -> the `some` slots whose patterns match, valid for one value of
 * fo->gen, which moves whenever a subscription is added or removed (a cache
 * of another generation is emptied before use). The topics of a chunk that
 * missed are matched together by the combined matcher (matcher.h, the
 * writer's own reader: one Hyperscan scan per shard for all subscriptions,
 * PCRE2 under match and depth limits for the patterns outside Hyperscan's
 * syntax; it takes no lock, so neither a subscription starting nor one
 * ending waits for it). A `some` subscription is in the matcher, under its
 * slot as id, from before it enters the lists until after it leaves them,
 * so under list_lock every listed slot's patterns are the matcher's. A
 * pattern over its budget marks its subscription breached: it gets nothing
 * more and its thread ends it with an Error naming the pattern. A
 * background thread compacts the matcher's young shards (matcher.h). Tags
 * and START_TIME are checked per event, under the subscription's lock, only
 * for subscriptions whose patterns matched. No allocation per event: the
 * per-writer scratch is sized by the pool and the number of subscriptions.
 * Sleeping subscription threads are signalled by the waker thread
 * (fanout_waker.h), after the take's acks (fanout_acked).
 *
 * Live-queue memory: every queue draws its blocks from one livequeue_pool
 * (queue_total_bytes); a push the pool refuses overflows that queue only.
 *
 * Threads: fanout_durable and fanout_acked on partition writer threads
 * (several at once, each with its own fanout_writer); fanout_add /
 * fanout_remove on subscription pool threads; fanout_writer_get under the
 * store's lock (main or loop thread); the waker's signal on its thread.
 *
 * Locks, and the order they nest in (never the other way round):
 *   fo->writers_lock        guards the writers list (fanout_writer_get); held
 *                           alone, never with the others.
 *   fo->list_lock (rwlock)  guards live[], the all/some lists and gen.
 *                           Writers (and the waker, SIGNAL_CHUNK slots at a
 *                           time) hold it for reading while they publish a
 *                           batch (a listed subscription, its patterns and
 *                           its queue stay valid meanwhile); a subscription
 *                           takes it for writing to be added or removed.
 *   member->mu              guards the subscription's queue and tag scratch:
 *                           writers of different partitions publish
 *                           concurrently. A writer holds one at a time.
 */
#include "fanout.h"
#include "fanout_internal.h"

#include "fanout_waker.h"

#include "grow.h"
#include "logging.h"
#include "matchcache.h"
#include "metrics.h"
#include "partition.h"
#include "pb_errors.h"

#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* A subscription waiting for its patterns to be compiled (fanout_add). */
typedef struct compile_req {
    fanout_member *m;
    char *err;
    size_t errlen;
    int rc;
    bool done;
    struct compile_req *next;
} compile_req;

/* compact_lock held: compiles every waiting subscription into the matcher
 * (releasing the lock meanwhile). */
static void compile_waiting(fanout *fo)
{
    while (fo->compile_head) {
        compile_req *q = fo->compile_head;
        fo->compile_head = q->next;
        if (!fo->compile_head)
            fo->compile_tail = &fo->compile_head;
        int rc = fo->compact_stop ? PB_ECLOSED : 0;
        pthread_mutex_unlock(&fo->compact_lock);
        if (rc == 0)
            rc = matcher_set_add(fo->ms, q->m->slot, q->m->patterns, q->m->npatterns, q->err,
                                 q->errlen);
        pthread_mutex_lock(&fo->compact_lock);
        q->rc = rc;
        q->done = true;
        fo->compact_kick |= rc == 0;
        pthread_cond_broadcast(&fo->compile_cv);
    }
}

/* The matcher's thread: compiles new subscriptions' patterns (first: a
 * subscription waits for it) and compacts the young shards whenever
 * subscriptions came or went (matcher_set_compact is slow: Hyperscan
 * compiles), one bounded round at a time, looking for new subscriptions
 * between rounds. */
static void *compact_main(void *arg)
{
    fanout *fo = arg;
    /* Background work: the writers, the loop and the subscriptions go
     * first (Linux: a thread's nice value is its own). Failing is harmless. */
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
    (void)pthread_setname_np(pthread_self(), "pb-matcher");
    pthread_mutex_lock(&fo->compact_lock);
    for (;;) {
        while (!fo->compact_kick && !fo->compact_stop && !fo->compile_head)
            pthread_cond_wait(&fo->compact_cv, &fo->compact_lock);
        compile_waiting(fo);
        if (fo->compact_stop)
            break;
        if (!fo->compact_kick)
            continue;
        fo->compact_kick = false;
        bool worked = false;
        while (!fo->compact_stop && !fo->compile_head) {
            pthread_mutex_unlock(&fo->compact_lock);
            bool more = matcher_set_compact_wanted(fo->ms) && matcher_set_compact(fo->ms) == 0;
            pthread_mutex_lock(&fo->compact_lock);
            if (!more)
                break; /* done, or out of memory: the young shards still answer right */
            worked = true;
        }
        if (fo->compile_head)
            fo->compact_kick = true; /* compacts again after those */
        else if (worked) {
            /* Hyperscan's compiler and the old shards leave free memory
             * in the arena: give it back. */
            pthread_mutex_unlock(&fo->compact_lock);
            malloc_trim(0);
            pthread_mutex_lock(&fo->compact_lock);
        }
    }
    /* Stopping: nobody waits any more (subscriptions end first). */
    pthread_mutex_unlock(&fo->compact_lock);
    return NULL;
}

static void compact_kick(fanout *fo)
{
    pthread_mutex_lock(&fo->compact_lock);
    fo->compact_kick = true;
    pthread_cond_signal(&fo->compact_cv);
    pthread_mutex_unlock(&fo->compact_lock);
}

/* The waker's signal (fanout_waker.h), SIGNAL_CHUNK slots or
 * SIGNAL_FAST_BYTES of fast-path sends per hold of the list lock, whichever
 * comes first (a listed member stays valid meanwhile; a subscription
 * registering or ending waits for one such chunk at most, and the writers,
 * whose shared hold queues behind its exclusive one, too). An emptied slot
 * is skipped; a
 * slot taken by a new subscription meanwhile gets a spurious wake-up, which
 * it tolerates (it looks at its queue and sleeps again). */
#define SIGNAL_CHUNK      64
#define SIGNAL_FAST_BYTES (256u * 1024u)

static void signal_slots(void *ctx, const uint16_t *slots, uint32_t n)
{
    fanout *fo = ctx;
    for (uint32_t k = 0; k < n;) {
        uint32_t end = n - k < SIGNAL_CHUNK ? n : k + SIGNAL_CHUNK;
        size_t bytes = 0;
        pthread_rwlock_rdlock(&fo->list_lock);
        for (; k < end && bytes < SIGNAL_FAST_BYTES; k++) {
            fanout_member *m = fo->live[slots[k]];
            if (!m)
                continue;
            size_t used = 0;
            int r = fo->fast_buf ? fanout_fast(m, fo->fast_buf, FANOUT_FAST_BYTES, &used) : -1;
            bytes += used;
            if (r < 0)
                fanout_wake(m);
            atomic_fetch_add_explicit(r < 0    ? &fo->fast_skipped
                                      : r == 0 ? &fo->fast_done
                                               : &fo->fast_thread,
                                      1, memory_order_relaxed);
            metrics_fanout_wakeup(r < 0 ? 2 : r == 0 ? 0 : 1);
        }
        pthread_rwlock_unlock(&fo->list_lock);
        /* Over the byte budget with slots left: glibc lets a lone reader
         * race a waiting writer for the lock it just let go; yield so the
         * writer (fanout_add, fanout_remove) gets in. */
        if (bytes >= SIGNAL_FAST_BYTES && k < n)
            sched_yield();
    }
}

int fanout_fast(fanout_member *m, uint8_t *scratch, size_t cap, size_t *used)
{
    lq_span sp;
    *used = 0;
    /* A writer holding mu pushes at most FANOUT_CHUNK records before it
     * lets go (fanout_publish.c); still, the waker never waits for one
     * here: busy means signal the thread, as without the fast path. */
    if (pthread_mutex_trylock(&m->mu) != 0)
        return -1;
    bool ok = m->fast && m->idle && !m->fast_busy && !m->breached &&
              !livequeue_overflowed(m->q) && !livequeue_empty(m->q);
    if (ok) {
        m->fast_busy = true;
        livequeue_peek(m->q, &sp);
    }
    pthread_mutex_unlock(&m->mu);
    if (!ok)
        return -1;
    /* The thread sleeps and waits for fast_busy before it touches its
     * connection or its partitions again: they are ours until then. */
    int r = m->fast(m->fast_ctx, &sp, scratch, cap, used);
    pthread_mutex_lock(&m->mu);
    livequeue_consume(m->q, &sp);
    m->fast_busy = false;
    bool thread = r != FANOUT_FAST_DONE || !livequeue_empty(m->q) ||
                  livequeue_overflowed(m->q) || m->breached;
    /* Still asleep with nothing to do: the writers signal it again at
     * their next record (fanout_member.sleeping). */
    if (!thread && m->idle)
        m->sleeping = true;
    if (!m->idle)
        pthread_cond_broadcast(&m->fast_cv); /* it woke meanwhile and waits */
    pthread_mutex_unlock(&m->mu);
    if (thread)
        fanout_wake(m);
    return thread ? 1 : 0;
}

int fanout_create(fanout **out, const fanout_options *opts)
{
    uint32_t nslots = opts->slots;
    uint64_t queue_total_bytes =
        opts->queue_total_bytes ? opts->queue_total_bytes : FANOUT_QUEUE_TOTAL_DEFAULT;
    uint64_t match_cache_bytes =
        opts->match_cache_bytes ? opts->match_cache_bytes : FANOUT_MATCH_CACHE_DEFAULT;
    if (nslots == 0 || nslots > FANOUT_SLOTS_MAX || match_cache_bytes < MATCH_CACHE_MIN_BYTES)
        return PB_EINVAL;
    fanout *fo = calloc(1, sizeof *fo);
    if (!fo)
        return PB_ENOMEM;
    if ((errno = pthread_mutex_init(&fo->writers_lock, NULL)) != 0) {
        free(fo);
        return -errno;
    }
    /* Writers hold the list lock for reading almost continuously under load;
     * prefer the rare writer (a subscription registering) so it cannot
     * starve. */
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int rc = pthread_rwlock_init(&fo->list_lock, &ra);
    pthread_rwlockattr_destroy(&ra);
    if (rc != 0) {
        pthread_mutex_destroy(&fo->writers_lock);
        free(fo);
        return -rc;
    }
    atomic_init(&fo->nlive, 0);
    atomic_init(&fo->match_hits, 0);
    atomic_init(&fo->match_misses, 0);
    atomic_init(&fo->breaches, 0);
    atomic_init(&fo->fast_done, 0);
    atomic_init(&fo->fast_thread, 0);
    atomic_init(&fo->fast_skipped, 0);
    pthread_mutex_init(&fo->compact_lock, NULL);
    pthread_cond_init(&fo->compact_cv, NULL);
    pthread_cond_init(&fo->compile_cv, NULL);
    fo->compile_tail = &fo->compile_head;
    fo->nslots = nslots;
    fo->match_cache_bytes = match_cache_bytes;
    fo->live = calloc(nslots, sizeof *fo->live);
    fo->all = calloc(nslots, sizeof *fo->all);
    fo->some = calloc(nslots, sizeof *fo->some);
    fo->gated = calloc(nslots, sizeof *fo->gated);
    rc = fo->live && fo->all && fo->some && fo->gated ? livequeue_pool_create(&fo->pool, queue_total_bytes)
                                         : PB_ENOMEM;
    if (rc == 0)
        rc = matcher_set_create(&fo->ms, opts->matcher);
    if (rc == 0) {
        rc = -pthread_create(&fo->compactor, NULL, compact_main, fo);
        fo->compactor_started = rc == 0;
    }
    /* Without it the waker signals every thread: slower, still correct. */
    fo->fast_buf = malloc(FANOUT_FAST_BYTES);
    if (rc == 0)
        rc = fanout_waker_start(&fo->waker, nslots, signal_slots, fo);
    if (rc < 0) {
        fanout_destroy(fo);
        return rc;
    }
    *out = fo;
    return 0;
}

void fanout_destroy(fanout *fo)
{
    if (!fo)
        return;
    if (fo->compactor_started) {
        pthread_mutex_lock(&fo->compact_lock);
        fo->compact_stop = true;
        pthread_cond_signal(&fo->compact_cv);
        pthread_mutex_unlock(&fo->compact_lock);
        pthread_join(fo->compactor, NULL);
    }
    fanout_waker_stop(fo->waker); /* signals what is left first */
    uint64_t done = atomic_load(&fo->fast_done), thread = atomic_load(&fo->fast_thread),
             skipped = atomic_load(&fo->fast_skipped);
    if (done + thread + skipped)
        logging_printf(LOG_INFO,
                       "live fan-out: %" PRIu64 " wake-ups delivered by the waker, %" PRIu64
                       " begun by it then handed to the subscription's thread, %" PRIu64
                       " signalled",
                       done, thread, skipped);
    while (fo->writers) {
        fanout_writer *w = fo->writers;
        fo->writers = w->next;
        fanout_writer_free(w); /* its matcher reader too: before the set */
    }
    matcher_set_destroy(fo->ms);
    pthread_cond_destroy(&fo->compact_cv);
    pthread_cond_destroy(&fo->compile_cv);
    pthread_mutex_destroy(&fo->compact_lock);
    pthread_mutex_destroy(&fo->writers_lock);
    pthread_rwlock_destroy(&fo->list_lock);
    free(fo->live);
    free(fo->gated);
    free(fo->all);
    free(fo->some);
    free(fo->fast_buf);
    livequeue_pool_destroy(fo->pool);
    free(fo);
}

uint32_t fanout_slots(const fanout *fo)
{
    return fo->nslots;
}

livequeue_pool *fanout_pool(fanout *fo)
{
    return fo->pool;
}

int fanout_add(fanout *fo, fanout_member *s, char *err, size_t errlen)
{
    bool all = patterns_match_all(s->ps);
    if (!all) {
        /* Into the matcher before the lists (see the top of the file); the
         * matcher's thread compiles, this one waits (under no lock a
         * writer takes). */
        compile_req q = {.m = s, .err = err, .errlen = errlen};
        pthread_mutex_lock(&fo->compact_lock);
        if (fo->compact_stop) {
            q.done = true;
            q.rc = PB_ECLOSED;
        } else {
            *fo->compile_tail = &q;
            fo->compile_tail = &q.next;
            pthread_cond_signal(&fo->compact_cv);
        }
        while (!q.done)
            pthread_cond_wait(&fo->compile_cv, &fo->compact_lock);
        pthread_mutex_unlock(&fo->compact_lock);
        if (q.rc < 0)
            return q.rc;
    }
    pthread_rwlock_wrlock(&fo->list_lock);
    fo->live[s->slot] = s;
    fo->gated[s->slot] = patterns_restricted(s->ps);
    if (all)
        fo->all[fo->nall++] = (uint16_t)s->slot;
    else
        fo->some[fo->nsome++] = (uint16_t)s->slot;
    fo->gen++;
    atomic_fetch_add(&fo->nlive, 1);
    pthread_rwlock_unlock(&fo->list_lock);
    atomic_thread_fence(memory_order_seq_cst);
    return 0;
}

/* list_lock held for writing: removes slot from list[0..*n) if there. */
static void list_remove(uint16_t *list, uint32_t *n, uint32_t slot)
{
    for (uint32_t i = 0; i < *n; i++) {
        if (list[i] == slot) {
            list[i] = list[--*n];
            return;
        }
    }
}

void fanout_remove(fanout *fo, fanout_member *s)
{
    pthread_rwlock_wrlock(&fo->list_lock);
    bool listed = fo->live[s->slot] == s;
    if (listed) {
        fo->live[s->slot] = NULL;
        list_remove(fo->all, &fo->nall, s->slot);
        list_remove(fo->some, &fo->nsome, s->slot);
        fo->gen++;
        atomic_fetch_sub(&fo->nlive, 1);
    }
    pthread_rwlock_unlock(&fo->list_lock);
    /* Out of the matcher after the lists: its slot may serve another
     * subscription next. */
    if (listed && matcher_set_remove(fo->ms, s->slot) == 0)
        compact_kick(fo);
}

void fanout_wake(fanout_member *m)
{
    uint64_t one = 1;
    /* The eventfd is non-blocking; EAGAIN means the counter is saturated,
     * i.e. a wake-up is pending anyway. */
    if (write(m->efd, &one, sizeof one) < 0 && errno != EAGAIN)
        logging_printf(LOG_ERROR, "subscriber %s: cannot signal its thread: %s", m->peer,
                       strerror(errno));
}

void fanout_get_stats(fanout *fo, fanout_stats *out)
{
    out->match_hits = atomic_load_explicit(&fo->match_hits, memory_order_relaxed);
    out->match_misses = atomic_load_explicit(&fo->match_misses, memory_order_relaxed);
    out->queued_bytes = livequeue_pool_used(fo->pool);
    out->queue_budget = livequeue_pool_budget(fo->pool);
    out->queue_resets = livequeue_pool_resets(fo->pool);
    out->breaches = atomic_load_explicit(&fo->breaches, memory_order_relaxed);
    out->fast_done = atomic_load_explicit(&fo->fast_done, memory_order_relaxed);
    out->fast_thread = atomic_load_explicit(&fo->fast_thread, memory_order_relaxed);
    out->fast_skipped = atomic_load_explicit(&fo->fast_skipped, memory_order_relaxed);
    matcher_set_stats(fo->ms, &out->matcher);
}
