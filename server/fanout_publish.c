/*
 * fanout_publish - one partition writer's side of the live fan-out (see
 * fanout.h, and the top of fanout.c for the locks): its state
 * (fanout_writer_get), and what it does with each durable batch
 * (fanout_durable: the match-everything subscriptions, then the others
 * through the match cache and the combined matcher) and after the batch's
 * acks (fanout_acked: the wake-ups, handed to the waker thread).
 *
 * Threads: fanout_durable and fanout_acked on partition writer threads
 * (several at once, each with its own fanout_writer); fanout_writer_get
 * under the store's lock (main or loop thread).
 */
#include "fanout_internal.h"

#include "logging.h"
#include "partition.h"
#include "pb_errors.h"
#include "record.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

void fanout_writer_free(fanout_writer *f)
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
    lq_entry e = {.key = p,
                  .offset = rec->offset,
                  .time_ns = rec->time_ns,
                  .since = since,
                  .crc = rec->crc.crc,
                  .has_crc = rec->crc.valid};
    /* Refused: overflowed, it catches up from the files. */
    (void)livequeue_push(q, &e, rec->data, rec->len, rec->suffix, rec->suffix_len);
    return take_sleeper(s);
}

/* Stored size of a record (FORMAT.md Part B). */
static uint64_t stored_size(const live_record *r)
{
    return PB_RECORD_HEADER_SIZE + (uint64_t)r->len + r->suffix_len;
}

/* Encodes recs[0..n) as stored (header with CRC, event) into at: the log's
 * CRC when it wrote the record with the live record's time, else computed. */
static void encode_run(uint8_t *at, const live_record *recs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const live_record *r = &recs[i];
        if (r->crc.valid) {
            (void)record_encode_fields(at, r->offset, r->time_ns, r->len + r->suffix_len);
            pb_store_le32(at, r->crc.crc);
        } else {
            (void)record_encode_header(at, r->offset, r->time_ns, r->data, r->len, r->suffix,
                                       r->suffix_len);
        }
        memcpy(at + PB_RECORD_HEADER_SIZE, r->data, r->len);
        memcpy(at + PB_RECORD_HEADER_SIZE + r->len, r->suffix, r->suffix_len);
        at += stored_size(r);
    }
}

/* One run of push_runs, s->mu held: recs[0..k), bytes as stored. false
 * when it was not queued (overflowed now or before, breached). */
static bool push_run(fanout_member *s, partition *p, const live_record *recs, size_t k,
                     uint64_t bytes, uint64_t first_offset)
{
    livequeue *q = s->q;
    uint64_t since;
    if (livequeue_overflowed(q) || s->breached || livequeue_since(q, p, first_offset, &since) < 0)
        return false;
    uint8_t *at = livequeue_run_begin(q, (uint32_t)bytes);
    if (!at)
        return false; /* overflowed: it catches up from the files */
    encode_run(at, recs, k);
    lq_entry e = {.key = p, .offset = recs[0].offset, .time_ns = recs[0].time_ns, .since = since};
    livequeue_run_end(q, &e, (uint32_t)bytes, (uint32_t)k);
    return true;
}

/* Writer thread, no lock held: queues recs[0..n) for a member that takes
 * runs (fanout_member.runs): consecutive records of up to livequeue_run_max
 * bytes per entry, a record larger than that alone (push_one: a record
 * entry, as for any subscription). The lock is taken per run, so the
 * subscription thread can consume meanwhile. Returns true if the
 * subscription thread must be woken. */
static bool push_runs(fanout_member *s, partition *p, const live_record *recs, size_t n,
                      uint64_t first_offset)
{
    bool wake = false, more = true;
    /* (The capacity is fixed: read without the lock.) */
    uint64_t max = livequeue_run_max(s->q);
    for (size_t i = 0; i < n && more;) {
        uint64_t bytes = stored_size(&recs[i]);
        size_t k = 1;
        while (bytes <= max && i + k < n && bytes + stored_size(&recs[i + k]) <= max)
            bytes += stored_size(&recs[i + k++]);
        pthread_mutex_lock(&s->mu);
        if (bytes > max)
            wake |= push_one(s, p, &recs[i], first_offset);
        else
            (void)push_run(s, p, recs + i, k, bytes, first_offset);
        /* Queued or overflowed: a sleeping thread is woken (the flag is
         * cleared only with a wake-up). */
        wake |= take_sleeper(s);
        more = !livequeue_overflowed(s->q) && !s->breached;
        pthread_mutex_unlock(&s->mu);
        i += k;
    }
    return wake;
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
        if (!m || (fo->gated[r->ids[k]] &&
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
        bool use_cache = f->cache && !f->keyed_only;
        for (size_t i = 0; i < m; i++) {
            if (use_cache && match_cache_get(f->cache, (const char *)c[i].topic, c[i].topic_len,
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
            /* The set's answers are as cheap as the cache's from now on,
             * or no longer are (a subscription with other patterns). */
            f->keyed_only = f->mres[0].keyed_only;
            use_cache = f->cache && !f->keyed_only;
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
        /* Not held beyond a chunk: the waker's fast path (fanout_fast)
         * waits for it after each delivery. */
        if (cur)
            pthread_mutex_unlock(&cur->mu);
        cur = NULL;
        for (size_t j = 0; use_cache && j < nmiss; j++) {
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
        if (s->runs) {
            if (push_runs(s, p, recs, n, recs[0].offset))
                mark_wake(f, fo->all[k]);
            continue;
        }
        /* mu is let go every FANOUT_CHUNK records: the waker's fast path
         * (fanout_fast) waits for it after each delivery. */
        for (size_t i = 0; i < n; i++) {
            if (i % FANOUT_CHUNK == 0)
                pthread_mutex_lock(&s->mu);
            signal |= push_one(s, p, &recs[i], recs[0].offset);
            if (i % FANOUT_CHUNK == FANOUT_CHUNK - 1 || i == n - 1)
                pthread_mutex_unlock(&s->mu);
        }
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
