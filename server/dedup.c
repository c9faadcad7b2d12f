/*
 * dedup - a partition's dedup window (see dedup.h).
 *
 * Threads: the partition's writer thread only.
 *
 * Layout: a ring of fixed slots in insertion order (ids are added with
 * ascending offsets and times, so the oldest is at the head: expiry and
 * eviction pop from the head, a rollback from the tail), each id numbered
 * by a 32-bit sequence number (head_seq for the head, counting on), and an
 * index of buckets of 8 cells, one 64-byte cache line each. A cell holds 32
 * bits of the id's hash (the tag, never 0) and the id's sequence number. A
 * cell is in use only while its sequence number is in the ring
 * ([head_seq, head_seq + count)): popping an id from the ring frees its
 * cell without touching the index, so eviction and expiry cost nothing
 * there, and an insertion takes the first cell of its bucket that is not in
 * use. Looking an id up reads its bucket (one cache line, prefetched by the
 * writer ahead of time) and reads a slot only when a tag matches.
 *
 * A bucket whose 8 cells are all in use when an id hashes there sends the
 * id on to the next bucket and is flagged (`over`): look-ups then go on to
 * the next bucket too. At under 2 ids per 8 cells on average that is rare;
 * flags stick until the index is rebuilt, which happens when 1/16 of the
 * buckets carry one (and when the ring grows).
 *
 * A cell whose sequence number was popped and later reused by another id
 * (after a rollback, or 2^32 insertions later) can look in use: its tag
 * still has to match and the slot's id is compared in full, so it can only
 * take room, never give a wrong answer; dedup_truncate clears the cells of
 * what it pops so rollbacks leave none.
 */
#include "dedup.h"

#include "event.h"
#include "hash.h"
#include "logging.h"
#include "pb_errors.h"
#include "reader.h"
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>

#define RING_INITIAL 64u
#define HUGE_PAGE    (2u << 20)
#define CELLS        8u /* per bucket: one cache line */

typedef struct dedup_slot {
    uint64_t hash;
    uint64_t offset;
    int64_t time_ns;
    uint8_t len;
    uint8_t id[EVENT_ID_MAX_BYTES];
} dedup_slot;

_Static_assert(sizeof(dedup_slot) == DEDUP_SLOT_BYTES, "dedup.h's DEDUP_SLOT_BYTES");

struct dedup {
    int64_t window_ns;
    uint32_t max_entries;
    dedup_slot *ring; /* cap slots; count of them from head on */
    uint32_t cap, head, count;
    uint32_t head_seq; /* the sequence number of ring[head] */
    uint64_t *index;   /* nbuckets * CELLS cells: tag << 32 | sequence number; 0 = never used */
    uint8_t *over;     /* nbuckets flags: an id of this bucket went on to the next */
    uint32_t nbuckets; /* a power of two; CELLS * nbuckets >= 2 * cap */
    uint32_t nover;    /* flags set */
    uint64_t evicted;
};

int dedup_create(dedup **out, int64_t window_ns, uint32_t max_entries)
{
    *out = NULL;
    if (max_entries == 0 || window_ns < 0)
        return PB_EINVAL;
    dedup *d = calloc(1, sizeof *d);
    if (!d)
        return PB_ENOMEM;
    d->window_ns = window_ns;
    d->max_entries = max_entries;
    /* Sequence numbers wrap at 2^32 (in_use is modular): they start just
     * below, so that every window, in tests too, crosses the wrap early. */
    d->head_seq = UINT32_MAX - 4095u;
    *out = d;
    return 0;
}

static void release(dedup *d)
{
    free(d->ring);
    free(d->index);
    free(d->over);
    d->ring = NULL;
    d->index = NULL;
    d->over = NULL;
    d->cap = d->head = d->nbuckets = d->nover = 0;
}

void dedup_destroy(dedup *d)
{
    if (!d)
        return;
    release(d);
    free(d);
}

/* The k-th slot from the head (k < cap; no division: cap need not be a
 * power of two). */
static uint32_t ring_pos(const dedup *d, uint32_t k)
{
    uint32_t pos = d->head + k;
    return pos >= d->cap ? pos - d->cap : pos;
}

static uint32_t tag_of(uint64_t h)
{
    return (uint32_t)(h >> 32) | 1u;
}

/* Cell value v is an id in the ring: its place from the head in *k. */
static bool in_use(const dedup *d, uint64_t v, uint32_t *k)
{
    *k = (uint32_t)v - d->head_seq;
    return v != 0 && *k < d->count;
}

/* A zeroed index of n cells. One of 2 MiB or more is aligned to 2 MiB and
 * asks for transparent huge pages: its accesses are random, and with 4 KiB
 * pages most of them would also miss the TLB. */
static uint64_t *index_alloc(size_t n)
{
    size_t bytes = n * sizeof(uint64_t);
    void *p = NULL;
    if (posix_memalign(&p, bytes < HUGE_PAGE ? 64 : HUGE_PAGE, bytes) != 0)
        return NULL;
    if (bytes >= HUGE_PAGE)
        (void)madvise(p, bytes, MADV_HUGEPAGE); /* a hint: without it, 4 KiB pages */
    memset(p, 0, bytes);
    return p;
}

/* A cell for an id of hash h that is not in the index: the first one not in
 * use from its bucket on, flagging the full buckets it passes. */
static uint64_t *free_cell(dedup *d, uint64_t h)
{
    uint32_t mask = d->nbuckets - 1, k;
    for (uint32_t b = (uint32_t)h & mask;; b = (b + 1) & mask) {
        uint64_t *c = &d->index[(size_t)b * CELLS];
        for (uint32_t i = 0; i < CELLS; i++)
            if (!in_use(d, c[i], &k))
                return &c[i];
        if (!d->over[b]) {
            d->over[b] = 1;
            d->nover++;
        }
    }
}

/* Indexes every id of the ring afresh (no flags, no stale cells). */
static void index_fill(dedup *d)
{
    memset(d->index, 0, (size_t)d->nbuckets * CELLS * sizeof *d->index);
    memset(d->over, 0, d->nbuckets);
    d->nover = 0;
    for (uint32_t k = 0; k < d->count; k++) {
        uint64_t h = d->ring[ring_pos(d, k)].hash;
        *free_cell(d, h) = (uint64_t)tag_of(h) << 32 | (uint32_t)(d->head_seq + k);
    }
}

/* Doubles the ring (up to max_entries), linearised from position 0, with
 * an index to match. */
static int grow(dedup *d)
{
    uint32_t cap = d->cap ? d->cap * 2 : RING_INITIAL;
    if (cap > d->max_entries || cap < d->cap)
        cap = d->max_entries;
    uint32_t nbuckets = 1;
    while ((uint64_t)nbuckets * CELLS < (uint64_t)cap * 2)
        nbuckets <<= 1;
    dedup_slot *ring = malloc((size_t)cap * sizeof *ring);
    uint64_t *index = index_alloc((size_t)nbuckets * CELLS);
    uint8_t *over = malloc(nbuckets);
    if (!ring || !index || !over) {
        free(ring);
        free(index);
        free(over);
        return PB_ENOMEM;
    }
    for (uint32_t k = 0; k < d->count; k++)
        ring[k] = d->ring[ring_pos(d, k)];
    free(d->ring);
    free(d->index);
    free(d->over);
    d->ring = ring;
    d->index = index;
    d->over = over;
    d->cap = cap;
    d->nbuckets = nbuckets;
    d->head = 0;
    index_fill(d);
    return 0;
}

/* The ring position + 1 of id (hash h), or 0. */
static uint32_t lookup(const dedup *d, uint64_t h, const uint8_t *id, size_t len)
{
    if (d->count == 0)
        return 0;
    uint32_t mask = d->nbuckets - 1, tag = tag_of(h), k;
    /* Bounded, although add rebuilds the index long before every bucket
     * is flagged. */
    for (uint32_t b = (uint32_t)h & mask, n = 0; n < d->nbuckets; b = (b + 1) & mask, n++) {
        const uint64_t *c = &d->index[(size_t)b * CELLS];
        for (uint32_t i = 0; i < CELLS; i++) {
            if ((uint32_t)(c[i] >> 32) != tag || !in_use(d, c[i], &k))
                continue;
            uint32_t pos = ring_pos(d, k);
            const dedup_slot *s = &d->ring[pos];
            if (s->len == len && memcmp(s->id, id, len) == 0)
                return pos + 1;
        }
        if (!d->over[b])
            return 0;
    }
    return 0;
}

/* The process's seed: random, so that publishers cannot pick ids that
 * share a bucket; one for all windows, so that ingest can hash an id
 * before it knows the window (dedup_id_hash). */
static uint64_t seed;
static pthread_once_t seed_once = PTHREAD_ONCE_INIT;

static void seed_init(void)
{
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed)
        seed = (uint64_t)(uintptr_t)&seed_once ^ (uint64_t)time(NULL) ^ 0x6a09e667f3bcc909ull;
}

uint64_t dedup_id_hash(const uint8_t *id, size_t len)
{
    pthread_once(&seed_once, seed_init);
    return hash_bytes(seed, id, len);
}

void dedup_prefetch(const dedup *d, uint64_t h, uint32_t ahead)
{
    (void)ahead;
    if (d->nbuckets)
        __builtin_prefetch(&d->index[(size_t)((uint32_t)h & (d->nbuckets - 1)) * CELLS]);
}

int dedup_find(const dedup *d, const uint8_t *id, size_t len, uint64_t *offset)
{
    if (len == 0 || len > EVENT_ID_MAX_BYTES)
        return 0;
    uint32_t at = lookup(d, dedup_id_hash(id, len), id, len);
    if (at)
        *offset = d->ring[at - 1].offset;
    return at != 0;
}

/* Forgets the oldest id: its cell is free from now on. */
static void pop_head(dedup *d)
{
    d->head = d->head + 1 == d->cap ? 0 : d->head + 1;
    d->head_seq++;
    d->count--;
}

/* Adds id (hash h; not present). */
static int add(dedup *d, uint64_t h, const uint8_t *id, size_t len, uint64_t offset,
               int64_t time_ns)
{
    if (d->count == d->max_entries) {
        pop_head(d); /* the window is full: the oldest id goes early */
        d->evicted++;
    } else if (d->count == d->cap && grow(d) < 0) {
        return PB_ENOMEM;
    }
    if (d->nover > d->nbuckets / 16)
        index_fill(d);
    uint32_t pos = ring_pos(d, d->count);
    dedup_slot *s = &d->ring[pos];
    s->hash = h;
    s->offset = offset;
    s->time_ns = time_ns;
    s->len = (uint8_t)len;
    memcpy(s->id, id, len);
    *free_cell(d, h) = (uint64_t)tag_of(h) << 32 | (uint32_t)(d->head_seq + d->count);
    d->count++;
    return 0;
}

int dedup_add(dedup *d, const uint8_t *id, size_t len, uint64_t offset, int64_t time_ns)
{
    if (len == 0 || len > EVENT_ID_MAX_BYTES)
        return PB_EINVAL;
    return add(d, dedup_id_hash(id, len), id, len, offset, time_ns);
}

int dedup_check(dedup *d, uint64_t h, const uint8_t *id, size_t len, uint64_t offset,
                int64_t time_ns, uint64_t *original)
{
    if (len == 0 || len > EVENT_ID_MAX_BYTES)
        return PB_EINVAL;
    uint32_t at = lookup(d, h, id, len);
    if (at) {
        *original = d->ring[at - 1].offset;
        return 1;
    }
    return add(d, h, id, len, offset, time_ns);
}

void dedup_expire(dedup *d, int64_t now_ns)
{
    int64_t cutoff = now_ns - d->window_ns;
    while (d->count > 0 && d->ring[d->head].time_ns < cutoff)
        pop_head(d);
    if (d->count == 0 && d->cap > RING_INITIAL)
        release(d); /* a burst's memory is not pinned once its ids have expired */
}

/* Clears the cell of the newest id (so that its sequence number, reused by
 * the next id, does not leave a cell that looks in use) and pops it. */
static void pop_tail(dedup *d)
{
    uint32_t k = d->count - 1, seq = d->head_seq + k;
    uint64_t h = d->ring[ring_pos(d, k)].hash;
    uint64_t want = (uint64_t)tag_of(h) << 32 | seq;
    uint32_t mask = d->nbuckets - 1;
    for (uint32_t b = (uint32_t)h & mask, n = 0; n < d->nbuckets; b = (b + 1) & mask, n++) {
        uint64_t *c = &d->index[(size_t)b * CELLS];
        for (uint32_t i = 0; i < CELLS; i++)
            if (c[i] == want) {
                c[i] = 0;
                n = d->nbuckets;
                break;
            }
    }
    d->count--;
}

void dedup_truncate(dedup *d, uint64_t from)
{
    while (d->count > 0 && d->ring[ring_pos(d, d->count - 1)].offset >= from)
        pop_tail(d);
}

size_t dedup_count(const dedup *d)
{
    return d->count;
}

uint64_t dedup_evicted(const dedup *d)
{
    return d->evicted;
}

size_t dedup_memory(const dedup *d)
{
    return sizeof *d + (size_t)d->cap * sizeof(dedup_slot) +
           (size_t)d->nbuckets * (CELLS * sizeof(uint64_t) + 1);
}

int64_t dedup_window_ns(const dedup *d)
{
    return d->window_ns;
}

size_t dedup_event_id(const uint8_t *ev, size_t n, const uint8_t **id)
{
    event_walker w;
    event_item it;
    size_t len = 0;
    event_walk_init(&w, ev, n, EVENT_WANT(EVENT_ID), false);
    while (event_walk_next(&w, &it, NULL, 0) > 0) {
        *id = it.f.data.p;
        len = it.f.data.len;
    }
    return len;
}

bool dedup_marked(const fileio *io, const char *dir)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, DEDUP_MARK_NAME) >= (int)sizeof path)
        return true; /* cannot tell: scan */
    int fd = io->open(io, path, O_RDONLY, 0);
    if (fd < 0)
        return fd != -ENOENT; /* another error: scan, to be safe */
    (void)io->close(io, fd);
    return true;
}

int dedup_mark(const fileio *io, const char *dir)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, DEDUP_MARK_NAME) >= (int)sizeof path)
        return PB_EINVAL;
    int fd = io->open(io, path, O_WRONLY | O_CREAT, 0644);
    if (fd < 0)
        return fd;
    int rc = io->close(io, fd);
    if (rc == 0)
        rc = fileio_sync_dir(io, dir); /* the entry is durable before any id is */
    return rc;
}

int dedup_rebuild(dedup *d, const fileio *io, const char *dir, const char *name, int64_t now_ns,
                  uint64_t end_offset)
{
    if (end_offset == 0)
        return 0;
    segment_io sio;
    fileio_segment_io(io, &sio);
    pb_reader *r = NULL;
    int rc = pb_reader_open_io(&r, dir, &sio);
    if (rc < 0) {
        logging_printf(LOG_ERROR, "partition %s: cannot read %s to rebuild its dedup window: %s",
                       name, dir, pb_strerror(rc));
        return rc;
    }
    uint64_t seen = 0, ids = 0;
    rc = pb_reader_seek_time(r, now_ns - d->window_ns);
    pb_reader_set_end(r, end_offset);
    while (rc >= 0) {
        pb_record rec;
        rc = pb_reader_next(r, &rec);
        if (rc == PB_EEOF) {
            rc = 0;
            break;
        }
        if (rc == PB_ECORRUPT) {
            rc = 0; /* logged by recovery; its ids were never acknowledged as stored */
            continue;
        }
        if (rc == PB_EREMOVED) {
            rc = 0; /* retention took them: no longer stored, nothing to remember */
            continue;
        }
        if (rc < 0)
            break;
        seen++;
        const uint8_t *id = NULL;
        size_t len = dedup_event_id(rec.event, rec.event_len, &id);
        if (len == 0 || len > EVENT_ID_MAX_BYTES)
            continue;
        uint64_t had;
        if (dedup_find(d, id, len, &had))
            continue; /* stored twice before (an older window): the first one stands */
        if ((rc = dedup_add(d, id, len, rec.offset, rec.time_ns)) < 0)
            break;
        ids++;
    }
    if (rc < 0)
        logging_printf(LOG_ERROR, "partition %s: reading %s for its dedup window failed: %s", name,
                       dir, pb_strerror(rc));
    else if (ids > 0)
        logging_printf(LOG_INFO,
                       "partition %s: dedup window rebuilt: %llu ids from the last %llu records",
                       name, (unsigned long long)ids, (unsigned long long)seen);
    pb_reader_close(r);
    return rc;
}
