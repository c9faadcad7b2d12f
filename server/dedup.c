/*
 * dedup - a partition's dedup window (see dedup.h).
 *
 * Threads: the partition's writer thread only.
 *
 * Layout: a ring of fixed slots in offset order (ids are added with
 * ascending offsets and times, so the oldest is at the head: expiry pops
 * from the head, a rollback from the tail) and an open-addressing index
 * (linear probing, at most half full) of ring positions + 1. Removal uses
 * backward-shift deletion, so the index never fills with tombstones.
 */
#include "dedup.h"

#include "event.h"
#include "hash.h"
#include "logging.h"
#include "pb_errors.h"
#include "reader.h"
#include "segment.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define RING_INITIAL 64u

typedef struct dedup_slot {
    uint64_t hash;
    uint64_t offset;
    int64_t time_ns;
    uint8_t len;
    uint8_t id[EVENT_ID_MAX_BYTES];
} dedup_slot;

struct dedup {
    int64_t window_ns;
    uint32_t max_entries;
    dedup_slot *ring; /* cap slots; count of them from head on */
    uint32_t cap, head, count;
    uint32_t *index; /* icap cells: ring position + 1, 0 = empty */
    uint32_t icap;   /* a power of two >= 2 * cap */
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
    free(d->index);
    free(d);
}

static uint32_t ring_pos(const dedup *d, uint32_t k)
{
    return (d->head + k) % d->cap;
}

/* The index cell holding ring position pos (present). */
static uint32_t cell_of(const dedup *d, uint32_t pos)
{
    uint32_t mask = d->icap - 1;
    uint32_t i = (uint32_t)d->ring[pos].hash & mask;
    while (d->index[i] != pos + 1)
        i = (i + 1) & mask;
    return i;
}

static void index_put(dedup *d, uint32_t pos)
{
    uint32_t mask = d->icap - 1;
    uint32_t i = (uint32_t)d->ring[pos].hash & mask;
    while (d->index[i])
        i = (i + 1) & mask;
    d->index[i] = pos + 1;
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
        uint32_t home = (uint32_t)d->ring[d->index[j] - 1].hash & mask;
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
    d->head = (d->head + 1) % d->cap;
    d->count--;
}

static void pop_tail(dedup *d)
{
    index_remove(d, ring_pos(d, d->count - 1));
    d->count--;
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
    uint32_t *index = calloc(icap, sizeof *index);
    if (!ring || !index) {
        free(ring);
        free(index);
        return PB_ENOMEM;
    }
    for (uint32_t k = 0; k < d->count; k++)
        ring[k] = d->ring[ring_pos(d, k)];
    free(d->ring);
    free(d->index);
    d->ring = ring;
    d->index = index;
    d->cap = cap;
    d->icap = icap;
    d->head = 0;
    for (uint32_t k = 0; k < d->count; k++)
        index_put(d, k);
    return 0;
}

int dedup_find(const dedup *d, const uint8_t *id, size_t len, uint64_t *offset)
{
    if (d->count == 0 || len == 0 || len > EVENT_ID_MAX_BYTES)
        return 0;
    uint64_t h = hash_bytes(0, id, len);
    uint32_t mask = d->icap - 1;
    for (uint32_t i = (uint32_t)h & mask; d->index[i]; i = (i + 1) & mask) {
        const dedup_slot *s = &d->ring[d->index[i] - 1];
        if (s->hash == h && s->len == len && memcmp(s->id, id, len) == 0) {
            *offset = s->offset;
            return 1;
        }
    }
    return 0;
}

int dedup_add(dedup *d, const uint8_t *id, size_t len, uint64_t offset, int64_t time_ns)
{
    if (len == 0 || len > EVENT_ID_MAX_BYTES)
        return PB_EINVAL;
    if (d->count == d->max_entries) {
        pop_head(d); /* the window is full: the oldest id goes early */
        d->evicted++;
    } else if (d->count == d->cap && grow(d) < 0) {
        return PB_ENOMEM;
    }
    uint32_t pos = ring_pos(d, d->count);
    dedup_slot *s = &d->ring[pos];
    s->hash = hash_bytes(0, id, len);
    s->offset = offset;
    s->time_ns = time_ns;
    s->len = (uint8_t)len;
    memcpy(s->id, id, len);
    d->count++;
    index_put(d, pos);
    return 0;
}

void dedup_expire(dedup *d, int64_t now_ns)
{
    int64_t cutoff = now_ns - d->window_ns;
    while (d->count > 0 && d->ring[d->head].time_ns < cutoff)
        pop_head(d);
    if (d->count == 0 && d->cap > RING_INITIAL) {
        /* A burst's memory is not pinned once its ids have expired. */
        free(d->ring);
        free(d->index);
        d->ring = NULL;
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
    return sizeof *d + (size_t)d->cap * sizeof(dedup_slot) + (size_t)d->icap * sizeof(uint32_t);
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
