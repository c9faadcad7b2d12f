/*
 * topics - per-partition topic -> most recent offsets, and its snapshot file.
 *
 * Threads: topics_add, topics_save and topics_load run on the partition's
 * writer thread; topics_foreach and topics_count on any thread (subscription
 * threads). The table's rwlock protects the hash table and every entry.
 *
 * The table is a hash table with open addressing (linear probing, at most
 * half full) of pointers to entries; an entry holds the topic's name and a
 * ring of its latest offsets, ascending from `start`. Rings start in the entry
 * (TOPIC_RING_INLINE offsets), then double up to `history` slots, so
 * rarely used topics stay cheap.
 *
 * Memory: the tables of all partitions share a topics_budget. A writer
 * whose table holds more than its share while the budget is exceeded moves
 * its least recently used half out (evict): into DIR/topics.cold
 * (topics_cold.c), merged with what is there, then out of memory. A topic
 * created in memory again takes its cold offsets along (so the table in
 * memory is always the newer: for a topic in both places it wins), and
 * topics_foreach reads the cold file then the table, so a --last N start
 * still sees every topic. An eviction waits for no reader: it is skipped
 * (and tried again later) while a topics_foreach runs.
 *
 * Snapshot file DIR/topics.snapshot (topics_snap.c): format in proto/FORMAT.md, Part B
 * ("Topic snapshot"). It records the table and `covered`, the log offset it
 * reflects: every record below it, none at or above it. It is written
 * through the partition's fileio (so the power-loss simulation covers it)
 * and replaced atomically (temporary file, fdatasync, rename, fsync of the
 * directory), so a crash leaves either the old or the new snapshot. A
 * snapshot that fails any check is ignored and the table rebuilt from the
 * segment files; one that covers fewer records than the log holds (a crash
 * after it was written) is caught up by reading the log past `covered`,
 * through the same fileio.
 */
#include "topics.h"
#include "topics_internal.h"

#include "event.h"
#include "hash.h"
#include "logging.h"
#include "pb_errors.h"
#include "topics_cold.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EVICT_MAX_SKIPS 16u

int topics_create(topic_table **out, uint32_t history)
{
    *out = NULL;
    if (history == 0 || history > TOPICS_HISTORY_MAX)
        return PB_EINVAL;
    topic_table *t = calloc(1, sizeof *t);
    if (!t)
        return PB_ENOMEM;
    t->history = history;
    t->nslots = 64;
    t->slots = calloc(t->nslots, sizeof *t->slots);
    t->cold_offs = malloc((size_t)history * sizeof *t->cold_offs);
    t->ring_tmp = malloc(((size_t)history + 1) * sizeof *t->ring_tmp);
    if (!t->slots || !t->cold_offs || !t->ring_tmp) {
        free(t->slots);
        free(t->cold_offs);
        free(t->ring_tmp);
        free(t);
        return PB_ENOMEM;
    }
    int rc = pthread_rwlock_init(&t->lock, NULL);
    if (rc != 0) {
        free(t->slots);
        free(t->cold_offs);
        free(t->ring_tmp);
        free(t);
        return -rc;
    }
    /* Writer-preferring: an eviction that has waited long enough (topics_maintain)
     * is not starved by a stream of new readers. */
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    rc = pthread_rwlock_init(&t->evict_lock, &ra);
    pthread_rwlockattr_destroy(&ra);
    if (rc != 0) {
        pthread_rwlock_destroy(&t->lock);
        free(t->slots);
        free(t->cold_offs);
        free(t->ring_tmp);
        free(t);
        return -rc;
    }
    *out = t;
    return 0;
}

void topics_budget_init(topics_budget *b, size_t max)
{
    b->max = max;
    atomic_init(&b->in_memory, 0);
    atomic_init(&b->tables, 0);
}

void topics_set_budget(topic_table *t, topics_budget *b)
{
    t->budget = b;
}

/* The budget's view of t: count topics in memory (lock held). */
static void budget_count(topic_table *t, size_t before, size_t after)
{
    topics_budget *b = t->budget;
    if (!b || before == after)
        return;
    if (after > before)
        atomic_fetch_add(&b->in_memory, after - before);
    else
        atomic_fetch_sub(&b->in_memory, before - after);
    if (before == 0)
        atomic_fetch_add(&b->tables, 1);
    else if (after == 0)
        atomic_fetch_sub(&b->tables, 1);
}

void topics_clear_locked(topic_table *t)
{
    for (size_t i = 0; i < t->nslots; i++) {
        if (t->slots[i]) {
            topic_entry_free(t->slots[i]);
            t->slots[i] = NULL;
        }
    }
    budget_count(t, t->count, 0);
    t->count = 0;
}

void topics_destroy(topic_table *t)
{
    if (!t)
        return;
    topics_clear_locked(t);
    free(t->slots);
    free(t->cold_offs);
    free(t->ring_tmp);
    cold_free(t->cold);
    free(t->dir);
    free(t->name);
    pthread_rwlock_destroy(&t->evict_lock);
    pthread_rwlock_destroy(&t->lock);
    free(t);
}

/* Slot where topic is, or the empty slot where it would go. */
static size_t find_slot(const topic_table *t, const uint8_t *topic, size_t len, uint64_t h)
{
    size_t mask = t->nslots - 1;
    size_t i = (size_t)h & mask;
    for (;;) {
        const topic_entry *e = t->slots[i];
        if (!e || (e->hash == h && e->name_len == len && memcmp(e->name, topic, len) == 0))
            return i;
        i = (i + 1) & mask;
    }
}

static int grow_slots(topic_table *t)
{
    size_t n = t->nslots * 2;
    topic_entry **slots = calloc(n, sizeof *slots);
    if (!slots)
        return PB_ENOMEM;
    for (size_t i = 0; i < t->nslots; i++) {
        topic_entry *e = t->slots[i];
        if (!e)
            continue;
        size_t j = (size_t)e->hash & (n - 1);
        while (slots[j])
            j = (j + 1) & (n - 1);
        slots[j] = e;
    }
    free(t->slots);
    t->slots = slots;
    t->nslots = n;
    return 0;
}

/* The entry for topic, created if new (with the offsets the cold store
 * holds for it when `from_cold`); NULL when out of memory. Write lock held. */
topic_entry *topics_entry_get(topic_table *t, const uint8_t *topic, size_t len, bool from_cold,
                              bool *created)
{
    uint64_t h = hash_bytes(0, topic, len);
    size_t i = find_slot(t, topic, len, h);
    *created = false;
    if (t->slots[i])
        return t->slots[i];
    if ((t->count + 1) * 2 > t->nslots) {
        if (grow_slots(t) < 0)
            return NULL;
        i = find_slot(t, topic, len, h);
    }
    topic_entry *e = malloc(offsetof(topic_entry, name) + len + 1);
    if (!e)
        return NULL;
    e->cap = (uint16_t)(t->history < TOPIC_RING_INLINE ? t->history : TOPIC_RING_INLINE);
    e->hash = h;
    e->start = 0;
    e->count = 0;
    e->evict = false;
    e->last_use = t->clock;
    e->name_len = (uint32_t)len;
    memcpy(e->name, topic, len);
    e->name[len] = '\0';
    t->slots[i] = e;
    budget_count(t, t->count, t->count + 1);
    t->count++;
    *created = true;
    if (from_cold && t->cold) {
        /* It left memory before: its older offsets come back with it, so
         * that the entry in memory is the whole truth about the topic. A
         * failed read only makes the table forget older offsets. */
        uint32_t k = 0;
        if (cold_find(t->cold, h, topic, len, t->cold_offs, t->history, &k) == 0)
            for (uint32_t j = 0; j < k; j++)
                (void)topics_ring_push(t, e, t->cold_offs[j]);
    }
    return e;
}

/* Puts offset into the ring at its place (rare: an offset at or below the
 * newest, when offsets from the cold store and from the log meet while a
 * partition catches up after a crash): ascending, no duplicates, the newest
 * cap kept. Write lock held. */
static void ring_insert(const topic_table *t, topic_entry *e, uint64_t offset)
{
    uint64_t *v = t->ring_tmp; /* history + 1 */
    uint32_t n = 0;
    bool placed = false;
    for (uint32_t k = 0; k < e->count; k++) {
        uint64_t o = topic_ring(e)[(e->start + k) % e->cap];
        if (o == offset)
            return;
        if (!placed && offset < o) {
            v[n++] = offset;
            placed = true;
        }
        v[n++] = o;
    }
    if (!placed)
        v[n++] = offset;
    uint32_t skip = n > e->cap ? n - e->cap : 0;
    for (uint32_t k = skip; k < n; k++)
        topic_ring(e)[k - skip] = v[k];
    e->start = 0;
    e->count = (uint16_t)(n - skip);
}

/* Appends offset to the entry's ring. Returns PB_ENOMEM if the ring could not
 * grow (the oldest offset is then dropped early: the table degrades, it does
 * not lose the newest). Write lock held. */
int topics_ring_push(const topic_table *t, topic_entry *e, uint64_t offset)
{
    int rc = 0;
    if (e->count > 0 && offset <= topic_ring(e)[(e->start + e->count - 1) % e->cap]) {
        ring_insert(t, e, offset);
        return 0;
    }
    if (e->count == e->cap && e->cap < t->history) {
        uint32_t cap = e->cap > t->history / 2 ? t->history : e->cap * 2;
        uint64_t *ring = malloc((size_t)cap * sizeof *ring);
        if (ring) {
            const uint64_t *old = topic_ring(e);
            for (uint32_t k = 0; k < e->count; k++)
                ring[k] = old[(e->start + k) % e->cap];
            if (e->cap > TOPIC_RING_INLINE)
                free(e->ring);
            e->ring = ring;
            e->cap = (uint16_t)cap;
            e->start = 0;
        } else {
            rc = PB_ENOMEM;
        }
    }
    if (e->count < e->cap) {
        topic_ring(e)[(e->start + e->count) % e->cap] = offset;
        e->count++;
    } else {
        topic_ring(e)[e->start] = offset;
        e->start = (uint16_t)((e->start + 1) % e->cap);
    }
    return rc;
}

int topics_last(topic_table *t, const uint8_t *topic, size_t len, uint64_t *last)
{
    uint64_t h = hash_bytes(0, topic, len);
    int rc = PB_ENOTFOUND;
    pthread_rwlock_rdlock(&t->lock);
    const topic_entry *e = t->slots[find_slot(t, topic, len, h)];
    if (e && e->count > 0) {
        *last = topic_ring(e)[(e->start + e->count - 1) % e->cap];
        rc = 0;
    }
    pthread_rwlock_unlock(&t->lock);
    if (rc == 0 || e || !t->cold)
        return rc; /* in memory, an entry is the whole truth about its topic */
    uint32_t k = 0;
    rc = cold_find(t->cold, h, topic, len, t->cold_offs, t->history, &k);
    cold_release(t->cold);
    if (rc == 0 && k == 0)
        rc = PB_ENOTFOUND;
    if (rc == 0)
        *last = t->cold_offs[k - 1];
    return rc;
}

int topics_add(topic_table *t, const live_record *recs, size_t n)
{
    int rc = 0;
    topic_entry *e = NULL;
    const uint8_t *same = NULL; /* bytes known to name e */
    pthread_rwlock_wrlock(&t->lock);
    t->clock++;
    for (size_t i = 0; i < n; i++) {
        bool created;
        /* Runs of one topic are common (a batch from one producer): the
         * previous entry is checked before hashing, by pointer first
         * (ingest gives a run's events the bytes of its first one), then
         * by bytes. Entries never move. */
        bool known = e && recs[i].topic == same && e->name_len == recs[i].topic_len;
        if (!known &&
            (!e || e->name_len != recs[i].topic_len ||
             (recs[i].topic_len > 0 && memcmp(e->name, recs[i].topic, recs[i].topic_len) != 0))) {
            e = topics_entry_get(t, recs[i].topic, recs[i].topic_len, true, &created);
            if (e)
                e->last_use = t->clock;
        }
        same = e ? recs[i].topic : NULL;
        if (!e) {
            rc = PB_ENOMEM;
            continue;
        }
        if (topics_ring_push(t, e, recs[i].offset) < 0)
            rc = PB_ENOMEM;
    }
    pthread_rwlock_unlock(&t->lock);
    cold_release(t->cold); /* the lookups' descriptor: not kept between batches */
    topics_maintain(t);
    return rc;
}

/* --- eviction --- */

static int cmp_u32_desc(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static int cmp_victim(const void *a, const void *b)
{
    const cold_entry *x = a, *y = b;
    return cold_entry_cmp(x->hash, x->name, x->name_len, y->hash, y->name, y->name_len);
}

/* Rebuilds the hash table without the entries marked `evict`, and frees
 * them. Write lock held. */
static int drop_marked(topic_table *t)
{
    size_t survivors = 0;
    for (size_t i = 0; i < t->nslots; i++)
        if (t->slots[i] && !t->slots[i]->evict)
            survivors++;
    size_t n = 64;
    while (n < survivors * 2)
        n <<= 1;
    topic_entry **slots = calloc(n, sizeof *slots);
    if (!slots)
        return PB_ENOMEM;
    for (size_t i = 0; i < t->nslots; i++) {
        topic_entry *e = t->slots[i];
        if (!e)
            continue;
        if (e->evict) {
            topic_entry_free(e);
            continue;
        }
        size_t j = (size_t)e->hash & (n - 1);
        while (slots[j])
            j = (j + 1) & (n - 1);
        slots[j] = e;
    }
    free(t->slots);
    t->slots = slots;
    t->nslots = n;
    budget_count(t, t->count, survivors);
    t->count = survivors;
    return 0;
}

/* Marks all but the `keep` most recently used entries (ties broken by
 * table order). Returns how many were marked, and their offsets in *noffs. */
static size_t mark_victims(topic_table *t, size_t keep, size_t *noffs)
{
    size_t n = t->count, marked = 0;
    *noffs = 0;
    uint32_t threshold = 0;
    size_t equal_quota = 0;
    if (keep > 0 && keep < n) {
        uint32_t *uses = malloc(n * sizeof *uses);
        if (!uses)
            return 0;
        size_t k = 0;
        for (size_t i = 0; i < t->nslots; i++)
            if (t->slots[i])
                uses[k++] = t->slots[i]->last_use;
        qsort(uses, n, sizeof *uses, cmp_u32_desc);
        threshold = uses[keep - 1];
        size_t greater = 0;
        while (greater < keep && uses[greater] > threshold)
            greater++;
        equal_quota = keep - greater;
        free(uses);
    } else if (keep >= n) {
        return 0;
    }
    for (size_t i = 0; i < t->nslots; i++) {
        topic_entry *e = t->slots[i];
        if (!e)
            continue;
        bool stays = keep > 0 && (e->last_use > threshold ||
                                  (e->last_use == threshold && equal_quota > 0 && equal_quota--));
        e->evict = !stays;
        if (e->evict) {
            marked++;
            *noffs += e->count;
        }
    }
    return marked;
}

/* Moves the least recently used topics of t out of memory into the cold
 * store, keeping `keep` in memory. Writer thread; evict_lock held for
 * writing, t->lock not held (only this thread changes the entries). */
static int evict(topic_table *t, size_t keep)
{
    size_t noffs;
    size_t nv = mark_victims(t, keep, &noffs);
    if (nv == 0)
        return t->count > keep ? PB_ENOMEM : 0;
    int rc = PB_ENOMEM;
    cold_entry *v = malloc(nv * sizeof *v);
    uint64_t *offs = malloc((noffs ? noffs : 1) * sizeof *offs);
    if (!v || !offs)
        goto out;
    size_t j = 0, o = 0;
    for (size_t i = 0; i < t->nslots; i++) {
        const topic_entry *e = t->slots[i];
        /* An entry without an offset (its ring could not be allocated)
         * has nothing to find: it just leaves. */
        if (!e || !e->evict || e->count == 0)
            continue;
        for (uint32_t q = 0; q < e->count; q++)
            offs[o + q] = topic_ring(e)[(e->start + q) % e->cap];
        v[j++] = (cold_entry){.hash = e->hash,
                              .name = (const uint8_t *)e->name,
                              .name_len = e->name_len,
                              .count = e->count,
                              .offsets = offs + o};
        o += e->count;
    }
    qsort(v, j, sizeof *v, cmp_victim);
    rc = cold_merge(t->cold, v, j);
    if (rc == 0) {
        pthread_rwlock_wrlock(&t->lock);
        rc = drop_marked(t);
        pthread_rwlock_unlock(&t->lock);
    }
    if (rc == 0)
        logging_printf(LOG_DEBUG,
                       "partition %s: %zu topics moved out of memory to %s (%zu there, %zu in "
                       "memory)",
                       t->name, nv, TOPICS_COLD_NAME, cold_count(t->cold), t->count);
out:
    if (rc < 0)
        for (size_t i = 0; i < t->nslots; i++)
            if (t->slots[i])
                t->slots[i]->evict = false;
    free(v);
    free(offs);
    return rc;
}

/* Writer thread, after each batch: when the tables hold more topics than
 * the budget and this one more than its share, its least recently used
 * half of that share leaves memory. A partition with few topics never
 * pays for one with many. */
void topics_maintain(topic_table *t)
{
    topics_budget *b = t->budget;
    if (!b || !t->cold || atomic_load(&b->in_memory) <= b->max)
        return;
    size_t tables = atomic_load(&b->tables);
    size_t share = b->max / (tables ? tables : 1);
    if (t->count <= share || (int32_t)(t->clock - t->evict_after) < 0)
        return;
    /* A topics_foreach (a subscription starting) walks the cold store: do
     * not wait for it, try again after the next batch; but after
     * EVICT_MAX_SKIPS batches, wait for the walks in progress (new ones
     * wait for the eviction), or subscription starts in a loop would keep
     * every topic in memory. */
    if (pthread_rwlock_trywrlock(&t->evict_lock) != 0) {
        if (++t->evict_skips < EVICT_MAX_SKIPS)
            return;
        pthread_rwlock_wrlock(&t->evict_lock);
    }
    t->evict_skips = 0;
    int rc = evict(t, share / 2);
    pthread_rwlock_unlock(&t->evict_lock);
    if (rc < 0) {
        t->evict_after = t->clock + 1000;
        if (!t->evict_warned)
            logging_printf(LOG_WARN,
                           "partition %s: cannot move topics out of memory into %s/%s: %s; they "
                           "stay in memory (trying again later)",
                           t->name, t->dir, TOPICS_COLD_NAME, pb_strerror(rc));
        t->evict_warned = true;
    } else {
        t->evict_warned = false;
    }
}

/* --- walking the table --- */

/* The cold store's topics that are not in memory (those in memory are
 * newer and walked after). evict_lock held for reading. */
static int foreach_cold(topic_table *t, uint32_t want, topics_fn fn, void *ctx, int *visited)
{
    if (!t->cold || cold_count(t->cold) == 0)
        return 0;
    cold_iter *it;
    int rc = cold_iter_open(t->cold, &it);
    if (rc < 0)
        return rc;
    cold_entry e;
    while ((rc = cold_iter_next(it, &e)) > 0) {
        pthread_rwlock_rdlock(&t->lock);
        bool hot = t->slots[find_slot(t, e.name, e.name_len, e.hash)] != NULL;
        pthread_rwlock_unlock(&t->lock);
        if (hot)
            continue;
        uint32_t k = e.count < want ? e.count : want;
        rc = fn(ctx, (const char *)e.name, e.name_len, e.offsets + (e.count - k), k);
        if (rc < 0)
            break;
        (*visited)++;
    }
    cold_iter_close(it);
    return rc < 0 ? rc : 0;
}

int topics_foreach(topic_table *t, uint32_t n, topics_fn fn, void *ctx)
{
    uint32_t want = (n == 0 || n > t->history) ? t->history : n;
    /* Allocated outside the lock: a subscription start is a cold path. */
    uint64_t *scratch = malloc((size_t)want * sizeof *scratch);
    if (!scratch)
        return PB_ENOMEM;
    int visited = 0;
    pthread_rwlock_rdlock(&t->evict_lock);
    int rc = foreach_cold(t, want, fn, ctx, &visited);
    if (rc < 0) {
        visited = rc;
        goto out;
    }
    pthread_rwlock_rdlock(&t->lock);
    for (size_t i = 0; i < t->nslots; i++) {
        const topic_entry *e = t->slots[i];
        if (!e)
            continue;
        uint32_t k = e->count < want ? e->count : want;
        uint32_t skip = e->count - k;
        for (uint32_t j = 0; j < k; j++)
            scratch[j] = topic_ring(e)[(e->start + skip + j) % e->cap];
        rc = fn(ctx, e->name, e->name_len, scratch, k);
        if (rc < 0) {
            visited = rc;
            break;
        }
        visited++;
    }
    pthread_rwlock_unlock(&t->lock);
out:
    pthread_rwlock_unlock(&t->evict_lock);
    free(scratch);
    return visited;
}

size_t topics_count(topic_table *t)
{
    pthread_rwlock_rdlock(&t->lock);
    size_t n = t->count;
    pthread_rwlock_unlock(&t->lock);
    return n;
}

size_t topics_cold_count(topic_table *t)
{
    pthread_rwlock_rdlock(&t->evict_lock);
    size_t n = cold_count(t->cold);
    pthread_rwlock_unlock(&t->evict_lock);
    return n;
}

int topics_event_topic(const uint8_t *ev, size_t n, const uint8_t **topic, size_t *len)
{
    event_walker w;
    event_item it;
    bool found = false;
    int rc;
    event_walk_init(&w, ev, n, EVENT_WANT(EVENT_TOPIC), false);
    while ((rc = event_walk_next(&w, &it, NULL, 0)) > 0) {
        *topic = it.f.data.p;
        *len = it.f.data.len;
        found = true;
    }
    return rc < 0 ? rc : found ? 0 : PB_ENOTFOUND;
}
