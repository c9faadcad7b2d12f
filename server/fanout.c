/*
 * fanout - the live fan-out (see fanout.h): partition writers copy durable
 * records into the live queues of the registered subscriptions.
 *
 * The registered subscriptions are kept in two lists of pool slots: `all`
 * (patterns that match every topic, e.g. ".*": no matching needed) and
 * `some` (the rest). Each writer has its own fanout_writer: a match_cache of
 * topic -> the `some` slots whose patterns match, valid for one value of
 * fo->gen, which moves whenever a subscription is added or removed (a cache
 * of another generation is emptied before use). A miss runs the `some`
 * subscriptions' patterns once for that topic (patterns_match_shared, with
 * the writer's match data: no subscription lock). Tags and START_TIME are
 * checked per event, under the subscription's lock, only for subscriptions
 * whose patterns matched. No allocation per event: the per-writer scratch
 * is sized by the pool and the number of subscriptions.
 *
 * Live-queue memory: every queue draws its blocks from one livequeue_pool
 * (queue_total_bytes); a push the pool refuses overflows that queue only.
 *
 * Threads: fanout_durable on partition writer threads (several at once,
 * each with its own fanout_writer); fanout_add / fanout_remove on
 * subscription pool threads; fanout_writer_get under the store's lock (main
 * or loop thread).
 *
 * Locks, and the order they nest in (never the other way round):
 *   fo->writers_lock        guards the writers list (fanout_writer_get); held
 *                           alone, never with the others.
 *   fo->list_lock (rwlock)  guards live[], the all/some lists and gen.
 *                           Writers hold it for reading while they publish
 *                           a batch (so a listed subscription, its patterns
 *                           and its queue stay valid meanwhile); a
 *                           subscription takes it for writing to be added
 *                           or removed.
 *   member->mu              guards the subscription's queue and tag scratch:
 *                           writers of different partitions publish
 *                           concurrently. A writer holds one at a time.
 */
#include "fanout.h"

#include "grow.h"
#include "logging.h"
#include "matchcache.h"
#include "partition.h"
#include "pb_errors.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
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
    _Atomic uint64_t match_hits, match_misses;
    pthread_mutex_t writers_lock;
    fanout_writer *writers; /* writers_lock: one per partition name */
};

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
    pcre2_match_data *md;
    uint16_t *ids; /* scratch: the matching slots of one topic (nslots) */
    /* Scratch for one chunk of records (publish_some): the records whose
     * topic missed the cache, one row of bits per missed record (bit k:
     * some[k] matches), and the cached answers of the others. */
    size_t miss[FANOUT_CHUNK];
    uint64_t *rows;
    size_t row_words; /* capacity of a row, in 64-bit words */
    const uint16_t *hit_ids[FANOUT_CHUNK];
    size_t hit_n[FANOUT_CHUNK];
    /* The subscriptions to wake once the batch is queued: waking at the
     * end, not at each push, lets a subscription thread take all of its
     * records of the batch in one pass (one wake-up, one write). */
    uint16_t *wake_list;
    uint32_t nwake;
    uint8_t *marked; /* per slot: in wake_list */
    char name[];     /* the partition's */
};

static void writer_free(fanout_writer *w);

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
    fo->nslots = nslots;
    fo->match_cache_bytes = match_cache_bytes;
    fo->live = calloc(nslots, sizeof *fo->live);
    fo->all = calloc(nslots, sizeof *fo->all);
    fo->some = calloc(nslots, sizeof *fo->some);
    rc = fo->live && fo->all && fo->some ? livequeue_pool_create(&fo->pool, queue_total_bytes)
                                         : PB_ENOMEM;
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
    while (fo->writers) {
        fanout_writer *w = fo->writers;
        fo->writers = w->next;
        writer_free(w);
    }
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
    pcre2_match_data_free(f->md);
    free(f->ids);
    free(f->rows);
    free(f->wake_list);
    free(f->marked);
    f->cache = NULL;
    f->md = NULL;
    f->ids = f->wake_list = NULL;
    f->rows = NULL;
    f->row_words = 0;
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
    f->md = patterns_match_data_create();
    f->ids = calloc(n, sizeof *f->ids);
    f->wake_list = calloc(n, sizeof *f->wake_list);
    f->marked = calloc(n, 1);
    if (!f->md || !f->ids || !f->wake_list || !f->marked) {
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

/* Writer thread, s->mu held: offers one record. Returns true if the
 * subscription thread must be woken: the record went into an empty queue,
 * or the queue overflowed. */
static bool push_one(fanout_member *s, partition *p, const live_record *rec, uint64_t first_offset)
{
    livequeue *q = s->q;
    if (livequeue_overflowed(q))
        return false; /* already told; it is on its way back to the files */
    if (rec->time_ns < s->min_time_ns)
        return false;
    if (s->ntags) {
        wire_slice topic;
        if (event_filter_scan(rec->data, rec->len, s->tags, s->ntags, s->tag_state, &topic) < 0 ||
            !event_filter_ok(s->tag_state, s->ntags))
            return false;
    }
    bool was_empty = livequeue_empty(q);
    uint64_t since;
    if (livequeue_since(q, p, first_offset, &since) < 0)
        return true;
    lq_entry e = {.key = p, .offset = rec->offset, .time_ns = rec->time_ns, .since = since};
    if (livequeue_push(q, &e, rec->data, rec->len, rec->suffix, rec->suffix_len) < 0)
        return true; /* overflowed: it catches up from the files */
    return was_empty;
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

/* The `some` slots whose patterns match rec's topic, into out (record by
 * record: for the rare topic the cache lost within a chunk). */
static size_t match_one(const fanout *fo, fanout_writer *f, const live_record *rec, uint16_t *out)
{
    size_t n = 0;
    for (uint32_t k = 0; k < fo->nsome; k++) {
        const fanout_member *s = fo->live[fo->some[k]];
        if (patterns_match_shared(s->ps, (const char *)rec->topic, rec->topic_len, f->md))
            out[n++] = fo->some[k];
    }
    return n;
}

/* Room for FANOUT_CHUNK rows of nsome bits. Allocates only when the number
 * of subscriptions grows past what was seen before. */
static int ensure_rows(fanout_writer *f, uint32_t nsome)
{
    size_t w = (nsome + 63) / 64;
    if (w <= f->row_words)
        return 0;
    if (grow_resize(&f->rows, FANOUT_CHUNK * w, sizeof *f->rows) < 0)
        return PB_ENOMEM;
    f->row_words = w;
    return 0;
}

/*
 * Runs every `some` subscription's patterns on the topics of the chunk's
 * missed records, subscription by subscription: one subscription's compiled
 * patterns then stay in the CPU caches for all those topics. (Topic by
 * topic, 1,000 subscriptions evict each other's JIT code at every topic:
 * measured about twice as slow per regex.)
 */
static void match_misses(const fanout *fo, fanout_writer *f, const live_record *c, size_t nmiss)
{
    size_t w = f->row_words;
    memset(f->rows, 0, nmiss * w * sizeof *f->rows);
    for (uint32_t k = 0; k < fo->nsome; k++) {
        const pattern_set *ps = fo->live[fo->some[k]]->ps;
        for (size_t j = 0; j < nmiss; j++) {
            const live_record *rec = &c[f->miss[j]];
            if (patterns_match_shared(ps, (const char *)rec->topic, rec->topic_len, f->md))
                f->rows[j * w + k / 64] |= 1ull << (k % 64);
        }
    }
}

/* The slots of missed record j's row, into out. */
static size_t row_ids(const fanout *fo, const fanout_writer *f, size_t j, uint16_t *out)
{
    size_t n = 0;
    const uint64_t *row = f->rows + j * f->row_words;
    for (size_t wi = 0; wi < f->row_words; wi++)
        for (uint64_t bits = row[wi]; bits; bits &= bits - 1)
            out[n++] = fo->some[wi * 64 + (size_t)__builtin_ctzll(bits)];
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
 * up; work out the misses together (match_misses) and cache them; then push
 * in record order (each queue must see its partition's records in offset
 * order).
 */
static void publish_some(fanout *fo, fanout_writer *f, partition *p, const live_record *recs,
                         size_t n)
{
    if (!f->cache && f->cache_gen == 0) {
        /* First use. Without a cache (out of memory) every record runs
         * the patterns: slower, still correct. */
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
    bool rows_ok = ensure_rows(f, fo->nsome) == 0;
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
        if (nmiss && rows_ok) {
            match_misses(fo, f, c, nmiss);
            for (size_t j = 0; f->cache && j < nmiss; j++) {
                const live_record *rec = &c[f->miss[j]];
                const uint16_t *ids;
                size_t k;
                /* A topic twice in the chunk is cached once. Not cached
                 * (too long, out of memory) only means its patterns run
                 * again next time. */
                if (!match_cache_get(f->cache, (const char *)rec->topic, rec->topic_len, &ids, &k))
                    (void)match_cache_put(f->cache, (const char *)rec->topic, rec->topic_len,
                                          f->ids, row_ids(fo, f, j, f->ids));
            }
        }
        /* A put may move or empty the cache: then the hits are looked up
         * again rather than read through hit_ids. */
        bool moved = nmiss > 0;
        for (size_t i = 0, j = 0; i < m; i++) {
            const uint16_t *ids = f->ids;
            size_t k;
            if (j < nmiss && f->miss[j] == i) {
                k = rows_ok ? row_ids(fo, f, j, f->ids) : match_one(fo, f, &c[i], f->ids);
                j++;
            } else if (!moved) {
                ids = f->hit_ids[i];
                k = f->hit_n[i];
            } else if (!match_cache_get(f->cache, (const char *)c[i].topic, c[i].topic_len, &ids,
                                        &k)) {
                ids = f->ids;
                k = match_one(fo, f, &c[i], f->ids);
            }
            push_to(fo, f, &cur, p, &c[i], recs[0].offset, ids, k);
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
            fanout_wake(s);
    }
    if (fo->nsome)
        publish_some(fo, f, p, recs, n);
    for (uint32_t k = 0; k < f->nwake; k++) {
        f->marked[f->wake_list[k]] = 0;
        fanout_wake(fo->live[f->wake_list[k]]);
    }
    f->nwake = 0;
    pthread_rwlock_unlock(&fo->list_lock);
}

void fanout_add(fanout *fo, fanout_member *s)
{
    pthread_rwlock_wrlock(&fo->list_lock);
    fo->live[s->slot] = s;
    if (patterns_match_all(s->ps))
        fo->all[fo->nall++] = (uint16_t)s->slot;
    else
        fo->some[fo->nsome++] = (uint16_t)s->slot;
    fo->gen++;
    atomic_fetch_add(&fo->nlive, 1);
    pthread_rwlock_unlock(&fo->list_lock);
    atomic_thread_fence(memory_order_seq_cst);
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
    if (fo->live[s->slot] == s) {
        fo->live[s->slot] = NULL;
        list_remove(fo->all, &fo->nall, s->slot);
        list_remove(fo->some, &fo->nsome, s->slot);
        fo->gen++;
        atomic_fetch_sub(&fo->nlive, 1);
    }
    pthread_rwlock_unlock(&fo->list_lock);
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
}
