/*
 * fanout - the live fan-out (see fanout.h): partition writers copy durable
 * records into the live queues of the registered subscriptions.
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

#include "fanout_waker.h"

#include "grow.h"
#include "logging.h"
#include "matchcache.h"
#include "partition.h"
#include "pb_errors.h"

#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

struct fanout {
    pthread_rwlock_t list_lock;
    atomic_uint nlive; /* subscriptions added: the writers' fast exit */
    uint64_t gen;      /* list_lock: moves when the lists change */
    uint32_t nslots;
    fanout_member **live; /* list_lock: per pool slot, the subscription added, or NULL */
    uint16_t *all;        /* list_lock: slots whose patterns match every topic */
    uint32_t nall;
    uint16_t *some; /* list_lock: the other slots */
    uint32_t nsome;
    uint64_t match_cache_bytes;
    livequeue_pool *pool; /* the budget of every live queue */
    matcher_set *ms;      /* the `some` subscriptions' patterns, by slot */
    _Atomic uint64_t match_hits, match_misses, breaches;
    /* The matcher's thread (compact_main): it compiles the subscriptions
     * fanout_add hands it, one at a time, and compacts. One thread, so
     * Hyperscan's compiler (megabytes of transient memory) runs once at a
     * time and leaves its free memory in one malloc arena, whatever the
     * number of subscriptions starting at once. */
    pthread_t compactor;
    bool compactor_started;
    pthread_mutex_t compact_lock;
    pthread_cond_t compact_cv;        /* work for the thread */
    pthread_cond_t compile_cv;        /* a compile is done */
    bool compact_kick, compact_stop;  /* compact_lock */
    struct compile_req *compile_head; /* compact_lock: waiting, oldest first */
    struct compile_req **compile_tail;
    pthread_mutex_t writers_lock;
    fanout_writer *writers; /* writers_lock: one per partition name */
    fanout_waker *waker;    /* signals the subscriptions the writers queued for */
};

/* A subscription waiting for its patterns to be compiled (fanout_add). */
typedef struct compile_req {
    fanout_member *m;
    char *err;
    size_t errlen;
    int rc;
    bool done;
    struct compile_req *next;
} compile_req;

/* Records whose subscriptions are worked out together (publish_some). */
#define FANOUT_CHUNK 256

/* One writer's fan-out state (see the top of the file and fanout.h). Only
 * that partition's writer thread uses it after fanout_writer_get. */
struct fanout_writer {
    fanout *fo;
    fanout_writer *next; /* fo->writers */
    bool ready;          /* the scratch below is allocated */
    match_cache *cache;  /* NULL until a `some` subscription is seen, or if out of memory */
    uint64_t cache_gen;  /* the fo->gen the cache's decisions are for */
    /* The since pass (note_since_all) last ran at this gen and pool reset
     * count; it runs again only when either moves. */
    bool since_valid;
    uint64_t since_gen, since_resets;
    matcher_reader *mr;
    pcre2_match_data *md; /* the subscriptions' read rights (patterns_gate_shared) */
    uint16_t *ids;        /* scratch: the matching slots of one topic (nslots) */
    /* Scratch for one chunk of records (publish_some): the records whose
     * topic missed the cache, their topics and the matcher's answers, and
     * the cached answers of the others. */
    size_t miss[FANOUT_CHUNK];
    const char *mtopic[FANOUT_CHUNK];
    size_t mlen[FANOUT_CHUNK];
    matcher_result mres[FANOUT_CHUNK];
    const uint16_t *hit_ids[FANOUT_CHUNK];
    size_t hit_n[FANOUT_CHUNK];
    /* The subscriptions to wake once the batch is queued and acked
     * (fanout_acked): waking at the end, not at each push, lets a
     * subscription thread take all of its records of the batch in one pass
     * (one wake-up, one write), and the acks do not wait for the wake-ups. */
    uint16_t *wake_list;
    uint32_t nwake;
    uint8_t *marked; /* per slot: in wake_list */
    char name[];     /* the partition's */
};

static void writer_free(fanout_writer *w);

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

/* The waker's signal (fanout_waker.h), SIGNAL_CHUNK slots per hold of the
 * list lock (a listed member stays valid meanwhile; a subscription
 * registering waits for one chunk at most). An emptied slot is skipped; a
 * slot taken by a new subscription meanwhile gets a spurious wake-up, which
 * it tolerates (it looks at its queue and sleeps again). */
#define SIGNAL_CHUNK 64

static void signal_slots(void *ctx, const uint16_t *slots, uint32_t n)
{
    fanout *fo = ctx;
    for (uint32_t k = 0; k < n;) {
        uint32_t end = n - k < SIGNAL_CHUNK ? n : k + SIGNAL_CHUNK;
        pthread_rwlock_rdlock(&fo->list_lock);
        for (; k < end; k++)
            if (fo->live[slots[k]])
                fanout_wake(fo->live[slots[k]]);
        pthread_rwlock_unlock(&fo->list_lock);
    }
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
    pthread_mutex_init(&fo->compact_lock, NULL);
    pthread_cond_init(&fo->compact_cv, NULL);
    pthread_cond_init(&fo->compile_cv, NULL);
    fo->compile_tail = &fo->compile_head;
    fo->nslots = nslots;
    fo->match_cache_bytes = match_cache_bytes;
    fo->live = calloc(nslots, sizeof *fo->live);
    fo->all = calloc(nslots, sizeof *fo->all);
    fo->some = calloc(nslots, sizeof *fo->some);
    rc = fo->live && fo->all && fo->some ? livequeue_pool_create(&fo->pool, queue_total_bytes)
                                         : PB_ENOMEM;
    if (rc == 0)
        rc = matcher_set_create(&fo->ms, opts->matcher);
    if (rc == 0) {
        rc = -pthread_create(&fo->compactor, NULL, compact_main, fo);
        fo->compactor_started = rc == 0;
    }
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
    while (fo->writers) {
        fanout_writer *w = fo->writers;
        fo->writers = w->next;
        writer_free(w); /* its matcher reader too: before the set */
    }
    matcher_set_destroy(fo->ms);
    pthread_cond_destroy(&fo->compact_cv);
    pthread_cond_destroy(&fo->compile_cv);
    pthread_mutex_destroy(&fo->compact_lock);
    pthread_mutex_destroy(&fo->writers_lock);
    pthread_rwlock_destroy(&fo->list_lock);
    free(fo->live);
    free(fo->all);
    free(fo->some);
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

/* Frees the scratch (ready becomes false). */
static void writer_release(fanout_writer *f)
{
    match_cache_free(f->cache);
    matcher_reader_destroy(f->mr);
    pcre2_match_data_free(f->md);
    f->md = NULL;
    free(f->ids);
    free(f->wake_list);
    free(f->marked);
    f->cache = NULL;
    f->mr = NULL;
    f->ids = f->wake_list = NULL;
    f->marked = NULL;
    f->ready = false;
}

static void writer_free(fanout_writer *f)
{
    writer_release(f);
    free(f);
}

/* Writer thread: allocates the scratch, on the first batch that finds
 * subscriptions. */
static int writer_prepare(fanout_writer *f)
{
    size_t n = f->fo->nslots;
    int rc = matcher_reader_create(f->fo->ms, &f->mr);
    f->md = patterns_match_data_create();
    f->ids = calloc(n, sizeof *f->ids);
    f->wake_list = calloc(n, sizeof *f->wake_list);
    f->marked = calloc(n, 1);
    if (rc < 0 || !f->md || !f->ids || !f->wake_list || !f->marked) {
        writer_release(f);
        return PB_ENOMEM;
    }
    f->ready = true;
    return 0;
}

int fanout_writer_get(fanout *fo, const char *name, fanout_writer **out)
{
    int rc = 0;
    pthread_mutex_lock(&fo->writers_lock);
    fanout_writer *w = fo->writers;
    while (w && strcmp(w->name, name) != 0)
        w = w->next;
    if (!w) {
        size_t len = strlen(name);
        w = calloc(1, sizeof *w + len + 1);
        if (w) {
            w->fo = fo;
            memcpy(w->name, name, len + 1);
            w->next = fo->writers;
            fo->writers = w;
        } else {
            rc = PB_ENOMEM;
        }
    }
    pthread_mutex_unlock(&fo->writers_lock);
    *out = w;
    return rc;
}

/* Writer thread, s->mu held: the subscription thread must be woken if it
 * sleeps (fanout_member.sleeping); it is then counted as awake, so the
 * records and writers that follow before it runs signal nothing more. */
static bool take_sleeper(fanout_member *s)
{
    bool was = s->sleeping;
    s->sleeping = false;
    return was;
}

/* Writer thread, s->mu held: offers one record. Returns true if the
 * subscription thread must be woken: it sleeps, and the record was queued
 * or the queue overflowed. */
static bool push_one(fanout_member *s, partition *p, const live_record *rec, uint64_t first_offset)
{
    livequeue *q = s->q;
    if (livequeue_overflowed(q) || s->breached)
        return false; /* already told; it is on its way back to the files, or ending */
    if (rec->time_ns < s->min_time_ns)
        return false;
    if (s->ntags) {
        wire_slice topic;
        if (event_filter_scan(rec->data, rec->len, s->tags, s->ntags, s->tag_state, &topic) < 0 ||
            !event_filter_ok(s->tag_state, s->ntags))
            return false;
    }
    uint64_t since;
    if (livequeue_since(q, p, first_offset, &since) < 0)
        return take_sleeper(s);
    lq_entry e = {.key = p, .offset = rec->offset, .time_ns = rec->time_ns, .since = since};
    /* Refused: overflowed, it catches up from the files. */
    (void)livequeue_push(q, &e, rec->data, rec->len, rec->suffix, rec->suffix_len);
    return take_sleeper(s);
}

/*
 * Each queue must learn the first offset of every batch of p published
 * while it is registered, matching or not (livequeue_since): a queue that
 * first hears of p at a later batch makes its subscription re-read the
 * records in between from the files. That is a lock per subscription, so it
 * runs only when it can matter: when a subscription registered (gen moved)
 * or a queue was reset and forgot (the pool's reset count moved). Missing a
 * reset that races with this check is harmless: the next push learns the
 * offset of its own batch, and a too-high `since` only costs a re-read from
 * the files, never a record.
 */
static void note_since_all(fanout *fo, partition *p, uint64_t first_offset)
{
    for (uint32_t k = 0; k < fo->nall + fo->nsome; k++) {
        fanout_member *s = fo->live[k < fo->nall ? fo->all[k] : fo->some[k - fo->nall]];
        uint64_t since;
        pthread_mutex_lock(&s->mu);
        bool signal =
            !livequeue_overflowed(s->q) && livequeue_since(s->q, p, first_offset, &since) < 0;
        pthread_mutex_unlock(&s->mu);
        if (signal)
            fanout_wake(s);
    }
}

/* No fan-out state (out of memory): every queue overflows, so every
 * subscription catches up from the files; nothing is lost. */
static void overflow_all(fanout *fo)
{
    for (uint32_t k = 0; k < fo->nall + fo->nsome; k++) {
        fanout_member *s = fo->live[k < fo->nall ? fo->all[k] : fo->some[k - fo->nall]];
        pthread_mutex_lock(&s->mu);
        livequeue_overflow(s->q);
        pthread_mutex_unlock(&s->mu);
        fanout_wake(s);
    }
}

/* Every `some` queue overflows: those subscriptions catch up from the files
 * (the matcher could not answer: out of memory). No member lock held. */
static void overflow_some(fanout *fo)
{
    for (uint32_t k = 0; k < fo->nsome; k++) {
        fanout_member *s = fo->live[fo->some[k]];
        pthread_mutex_lock(&s->mu);
        livequeue_overflow(s->q);
        pthread_mutex_unlock(&s->mu);
        fanout_wake(s);
    }
}

/* The subscription of breach b exceeded its budget on topic[0..len): it is
 * marked (nothing more is queued for it) and woken to end. No member lock
 * held. */
static void mark_breach(fanout *fo, const matcher_breach *b, const char *topic, size_t len)
{
    fanout_member *s = b->id < fo->nslots ? fo->live[b->id] : NULL;
    if (!s || b->pattern >= s->npatterns)
        return; /* not listed (starting or ending): it gets nothing of this topic */
    char why[64];
    matcher_breach_reason(b->pcre2_error, why, sizeof why);
    pthread_mutex_lock(&s->mu);
    bool first = !s->breached;
    if (first) {
        s->breached = true;
        snprintf(s->breach, sizeof s->breach,
                 "pattern \"%.200s\" exceeded its matching budget on topic \"%.*s\" (%s)",
                 s->patterns[b->pattern], (int)(len < 120 ? len : 120), topic, why);
    }
    pthread_mutex_unlock(&s->mu);
    if (first) {
        atomic_fetch_add_explicit(&fo->breaches, 1, memory_order_relaxed);
        fanout_wake(s);
    }
}

/* Matches the topics of the chunk's missed records, all at once, into
 * f->mres, and marks the subscriptions a pattern of which went over its
 * budget. 0 or a negative code (nothing known: the caller overflows). */
static int match_misses(fanout *fo, fanout_writer *f, const live_record *c, size_t nmiss)
{
    for (size_t j = 0; j < nmiss; j++) {
        f->mtopic[j] = (const char *)c[f->miss[j]].topic;
        f->mlen[j] = c[f->miss[j]].topic_len;
    }
    int rc = matcher_match_batch(f->mr, f->mtopic, f->mlen, nmiss, f->mres);
    if (rc < 0)
        return rc;
    for (size_t j = 0; j < nmiss; j++)
        for (size_t k = 0; k < f->mres[j].nbreaches; k++)
            mark_breach(fo, &f->mres[j].breaches[k], f->mtopic[j], f->mlen[j]);
    return 0;
}

/* The listed slots of missed record j's answer, into out. (A slot the
 * matcher knows but the lists do not is a subscription still starting: it
 * reads this batch from the files.) The matcher knows a subscription's own
 * patterns only: the read rights of its user (patterns_restrict) are
 * checked here, on the topic itself. */
static size_t miss_ids(const fanout *fo, const fanout_writer *f, size_t j, uint16_t *out)
{
    size_t n = 0;
    const matcher_result *r = &f->mres[j];
    for (size_t k = 0; k < r->n; k++) {
        const fanout_member *m = r->ids[k] < fo->nslots ? fo->live[r->ids[k]] : NULL;
        if (!m || (patterns_restricted(m->ps) &&
                   !patterns_gate_shared(m->ps, f->mtopic[j], f->mlen[j], f->md)))
            continue;
        out[n++] = (uint16_t)r->ids[k];
    }
    return n;
}

static void mark_wake(fanout_writer *f, uint32_t slot)
{
    if (!f->marked[slot]) {
        f->marked[slot] = 1;
        f->wake_list[f->nwake++] = (uint16_t)slot;
    }
}

/* Pushes recs[i] to the slots ids[0..n), keeping the lock of the last
 * subscription (*cur) for the next record: consecutive records for the same
 * subscription take its lock once. */
static void push_to(const fanout *fo, fanout_writer *f, fanout_member **cur, partition *p,
                    const live_record *rec, uint64_t first_offset, const uint16_t *ids, size_t n)
{
    for (size_t j = 0; j < n; j++) {
        fanout_member *s = fo->live[ids[j]];
        if (s != *cur) {
            if (*cur)
                pthread_mutex_unlock(&(*cur)->mu);
            pthread_mutex_lock(&s->mu);
            *cur = s;
        }
        if (push_one(s, p, rec, first_offset))
            mark_wake(f, ids[j]);
    }
}

/*
 * The `some` subscriptions, FANOUT_CHUNK records at a time: look every topic
 * up; match the misses together (match_misses) and cache the answers; then
 * push in record order (each queue must see its partition's records in
 * offset order).
 */
static void publish_some(fanout *fo, fanout_writer *f, partition *p, const live_record *recs,
                         size_t n)
{
    if (!f->cache && f->cache_gen == 0) {
        /* First use. Without a cache (out of memory) every record runs
         * the matcher: slower, still correct. */
        uint64_t bytes = fo->match_cache_bytes;
        if (match_cache_create(&f->cache, (size_t)bytes) < 0) {
            f->cache = NULL;
            logging_printf(LOG_WARN,
                           "partition %s: no memory for the subscription match cache (%" PRIu64
                           " bytes); matching every event",
                           partition_name(p), bytes);
        }
    }
    if (f->cache_gen != fo->gen) {
        if (f->cache)
            match_cache_clear(f->cache);
        f->cache_gen = fo->gen;
    }
    uint64_t hits = 0;
    fanout_member *cur = NULL;
    for (size_t base = 0; base < n; base += FANOUT_CHUNK) {
        const live_record *c = recs + base;
        size_t m = n - base < FANOUT_CHUNK ? n - base : FANOUT_CHUNK;
        size_t nmiss = 0;
        for (size_t i = 0; i < m; i++) {
            if (f->cache && match_cache_get(f->cache, (const char *)c[i].topic, c[i].topic_len,
                                            &f->hit_ids[i], &f->hit_n[i]))
                hits++;
            else
                f->miss[nmiss++] = i;
        }
        if (nmiss) {
            /* Marking a breach takes member locks: hold none. */
            if (cur)
                pthread_mutex_unlock(&cur->mu);
            cur = NULL;
            if (match_misses(fo, f, c, nmiss) < 0) {
                /* Nothing known about these topics: every `some`
                 * subscription reads this batch from the files. */
                overflow_some(fo);
                break;
            }
        }
        /* Pushes first, with the hits read through hit_ids: a put may move
         * or empty the cache. */
        for (size_t i = 0, j = 0; i < m; i++) {
            const uint16_t *ids = f->ids;
            size_t k;
            if (j < nmiss && f->miss[j] == i) {
                k = miss_ids(fo, f, j, f->ids);
                j++;
            } else {
                ids = f->hit_ids[i];
                k = f->hit_n[i];
            }
            push_to(fo, f, &cur, p, &c[i], recs[0].offset, ids, k);
        }
        for (size_t j = 0; f->cache && j < nmiss; j++) {
            const live_record *rec = &c[f->miss[j]];
            const uint16_t *ids;
            size_t k;
            /* A topic twice in the chunk is cached once. Not cached (too
             * long, out of memory) only means it is matched again next
             * time. */
            if (!match_cache_get(f->cache, (const char *)rec->topic, rec->topic_len, &ids, &k))
                (void)match_cache_put(f->cache, (const char *)rec->topic, rec->topic_len, f->ids,
                                      miss_ids(fo, f, j, f->ids));
        }
    }
    if (cur)
        pthread_mutex_unlock(&cur->mu);
    atomic_fetch_add_explicit(&fo->match_hits, hits, memory_order_relaxed);
    atomic_fetch_add_explicit(&fo->match_misses, n - hits, memory_order_relaxed);
}

void fanout_durable(void *ctx, partition *p, const live_record *recs, size_t n)
{
    fanout_writer *f = ctx;
    fanout *fo = f->fo;
    if (n == 0)
        return;
    /* Pairs with the fence in fanout_add: either this writer sees the new
     * subscription, or the subscription sees this batch's end offset (which
     * the partition stored before calling us) and reads it from the files. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&fo->nlive, memory_order_relaxed) == 0)
        return;
    if (!f->ready)
        (void)writer_prepare(f); /* failed: not ready, handled below */
    pthread_rwlock_rdlock(&fo->list_lock);
    if (!f->ready) {
        overflow_all(fo);
        pthread_rwlock_unlock(&fo->list_lock);
        return;
    }
    uint64_t resets = livequeue_pool_resets(fo->pool);
    if (!f->since_valid || f->since_gen != fo->gen || f->since_resets != resets) {
        note_since_all(fo, p, recs[0].offset);
        f->since_valid = true;
        f->since_gen = fo->gen;
        f->since_resets = resets;
    }
    /* Match-everything subscriptions: no lookup, one lock per batch. */
    for (uint32_t k = 0; k < fo->nall; k++) {
        fanout_member *s = fo->live[fo->all[k]];
        bool signal = false;
        pthread_mutex_lock(&s->mu);
        for (size_t i = 0; i < n; i++)
            signal |= push_one(s, p, &recs[i], recs[0].offset);
        pthread_mutex_unlock(&s->mu);
        if (signal)
            mark_wake(f, fo->all[k]);
    }
    if (fo->nsome)
        publish_some(fo, f, p, recs, n);
    pthread_rwlock_unlock(&fo->list_lock);
    /* The wake-ups wait for fanout_acked. */
}

void fanout_acked(void *ctx)
{
    fanout_writer *f = ctx;
    if (f->nwake == 0)
        return;
    /* One hand-over to the waker thread, which makes the wake-ups. */
    fanout_waker_post(f->fo->waker, f->wake_list, f->nwake);
    for (uint32_t k = 0; k < f->nwake; k++)
        f->marked[f->wake_list[k]] = 0;
    f->nwake = 0;
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
    matcher_set_stats(fo->ms, &out->matcher);
}
