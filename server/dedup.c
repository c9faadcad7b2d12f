/*
 * dedup - a partition's dedup window (see dedup.h).
 *
 * Threads: the partition's writer thread only.
 *
 * Layout: a ring of fixed slots in offset order (ids are added with
 * ascending offsets and times, so the oldest is at the head: expiry pops
 * from the head, a rollback from the tail) and an open-addressing index
 * (linear probing, at most half full) of 8-byte cells: the low 32 bits of
 * the id's hash and its ring position + 1. Probing compares the hash bits
 * in the index and reads a slot only when they match, so a new id (the
 * common case) costs one probe run in the index, not a read of the ring
 * per cell. Removal uses backward-shift deletion (a cell's home comes from
 * its hash bits), so the index never fills with tombstones.
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
    uint32_t *tags;   /* cap: the low 32 bits of each slot's hash, apart: eviction
                         reads them in ring order, 16 to a cache line */
    uint32_t cap, head, count;
    uint64_t *index; /* icap cells: hash << 32 | (ring position + 1); 0 = empty */
    uint32_t icap;   /* a power of two >= 2 * cap, at most 2^31 */
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
    *out = d;
    return 0;
}

void dedup_destroy(dedup *d)
{
    if (!d)
        return;
    free(d->ring);
    free(d->tags);
    free(d->index);
    free(d);
}

/* The k-th slot from the head (k < cap; no division: cap need not be a
 * power of two). */
static uint32_t ring_pos(const dedup *d, uint32_t k)
{
    uint32_t pos = d->head + k;
    return pos >= d->cap ? pos - d->cap : pos;
}

static uint64_t cell(uint64_t hash, uint32_t pos)
{
    return (hash << 32) | ((uint64_t)pos + 1);
}

static uint32_t cell_home(const dedup *d, uint64_t c)
{
    return (uint32_t)(c >> 32) & (d->icap - 1);
}

/* The index cell holding ring position pos (present). */
static uint32_t cell_of(const dedup *d, uint32_t pos)
{
    uint32_t mask = d->icap - 1;
    uint64_t want = cell(d->tags[pos], pos);
    uint32_t i = d->tags[pos] & mask;
    while (d->index[i] != want)
        i = (i + 1) & mask;
    return i;
}

static void index_put(dedup *d, uint32_t pos)
{
    uint32_t mask = d->icap - 1;
    uint32_t i = d->tags[pos] & mask;
    while (d->index[i])
        i = (i + 1) & mask;
    d->index[i] = cell(d->tags[pos], pos);
}

/* Backward-shift deletion: later cells of the probe run move up if their
 * home is at or before the hole. */
static void index_remove(dedup *d, uint32_t pos)
{
    uint32_t mask = d->icap - 1;
    uint32_t hole = cell_of(d, pos);
    uint32_t j = hole;
    for (;;) {
        j = (j + 1) & mask;
        if (!d->index[j])
            break;
        uint32_t home = cell_home(d, d->index[j]);
        /* Moves if home is not cyclically within (hole, j]. */
        bool between = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!between) {
            d->index[hole] = d->index[j];
            hole = j;
        }
    }
    d->index[hole] = 0;
}

static void pop_head(dedup *d)
{
    index_remove(d, d->head);
    d->head = d->head + 1 == d->cap ? 0 : d->head + 1;
    d->count--;
}

static void pop_tail(dedup *d)
{
    index_remove(d, ring_pos(d, d->count - 1));
    d->count--;
}

/* A zeroed index of icap cells. One of 2 MiB or more is aligned to 2 MiB
 * and asks for transparent huge pages: its accesses are random, and with
 * 4 KiB pages most of them would also miss the TLB. */
static uint64_t *index_alloc(uint32_t icap)
{
    size_t bytes = (size_t)icap * sizeof(uint64_t);
    if (bytes < HUGE_PAGE)
        return calloc(icap, sizeof(uint64_t));
    void *p = NULL;
    if (posix_memalign(&p, HUGE_PAGE, bytes) != 0)
        return NULL;
    (void)madvise(p, bytes, MADV_HUGEPAGE); /* a hint: without it, 4 KiB pages */
    memset(p, 0, bytes);
    return p;
}

/* Doubles the ring (up to max_entries), linearised from position 0, and
 * rebuilds the index. */
static int grow(dedup *d)
{
    uint32_t cap = d->cap ? d->cap * 2 : RING_INITIAL;
    if (cap > d->max_entries || cap < d->cap)
        cap = d->max_entries;
    uint32_t icap = 1;
    while (icap < cap * 2u)
        icap <<= 1;
    dedup_slot *ring = malloc((size_t)cap * sizeof *ring);
    uint32_t *tags = malloc((size_t)cap * sizeof *tags);
    uint64_t *index = index_alloc(icap);
    if (!ring || !tags || !index) {
        free(ring);
        free(tags);
        free(index);
        return PB_ENOMEM;
    }
    for (uint32_t k = 0; k < d->count; k++) {
        ring[k] = d->ring[ring_pos(d, k)];
        tags[k] = d->tags[ring_pos(d, k)];
    }
    free(d->ring);
    free(d->tags);
    free(d->index);
    d->ring = ring;
    d->tags = tags;
    d->index = index;
    d->cap = cap;
    d->icap = icap;
    d->head = 0;
    for (uint32_t k = 0; k < d->count; k++)
        index_put(d, k);
    return 0;
}

/* The ring position + 1 of id (hash h), or 0. */
static uint32_t lookup(const dedup *d, uint64_t h, const uint8_t *id, size_t len)
{
    if (d->count == 0)
        return 0;
    uint32_t mask = d->icap - 1;
    uint64_t tag = h << 32;
    for (uint32_t i = (uint32_t)h & mask; d->index[i]; i = (i + 1) & mask) {
        uint64_t c = d->index[i];
        if ((c & ~(uint64_t)UINT32_MAX) != tag)
            continue;
        const dedup_slot *s = &d->ring[(uint32_t)c - 1];
        if (s->hash == h && s->len == len && memcmp(s->id, id, len) == 0)
            return (uint32_t)c;
    }
    return 0;
}

/* The process's seed: random, so that publishers cannot pick ids that
 * share a probe run; one for all windows, so that ingest can hash an id
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
    if (d->icap == 0)
        return;
    uint32_t mask = d->icap - 1;
    __builtin_prefetch(&d->index[h & mask]);
    if (d->count == d->max_entries && ahead < d->count) /* the cell its add will evict */
        __builtin_prefetch(&d->index[d->tags[ring_pos(d, ahead)] & mask]);
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
    uint32_t pos = ring_pos(d, d->count);
    dedup_slot *s = &d->ring[pos];
    s->hash = h;
    d->tags[pos] = (uint32_t)h;
    s->offset = offset;
    s->time_ns = time_ns;
    s->len = (uint8_t)len;
    memcpy(s->id, id, len);
    d->count++;
    index_put(d, pos);
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
    if (d->count == 0 && d->cap > RING_INITIAL) {
        /* A burst's memory is not pinned once its ids have expired. */
        free(d->ring);
        free(d->tags);
        free(d->index);
        d->ring = NULL;
        d->tags = NULL;
        d->index = NULL;
        d->cap = d->icap = d->head = 0;
    }
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
    return sizeof *d + (size_t)d->cap * (sizeof(dedup_slot) + sizeof(uint32_t)) +
           (size_t)d->icap * sizeof(uint64_t);
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
