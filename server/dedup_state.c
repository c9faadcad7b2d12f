/*
 * dedup_state - a dedup window's state read out (dedup.h): whether it is
 * complete, its counts and memory, its entries (the snapshot's writer).
 *
 * Threads: whichever thread owns the window (dedup.c).
 */
#include "dedup.h"
#include "dedup_internal.h"

#include <string.h>

bool dedup_complete(const dedup *d)
{
    return !d->lost;
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
    return sizeof *d +
           (size_t)d->cap *
               (sizeof(dedup_slot) + 1 + sizeof(uint64_t) + (d->longs ? LONG_BYTES : 0)) +
           (size_t)d->nbuckets * (sizeof(bucket) + sizeof(uint32_t));
}

int64_t dedup_window_ns(const dedup *d)
{
    return d->window_ns;
}

uint32_t dedup_max_entries(const dedup *d)
{
    return d->max_entries;
}

void dedup_entry(const dedup *d, size_t k, uint8_t id[EVENT_ID_MAX_BYTES], size_t *len,
                 uint64_t *offset, int64_t *time_ns)
{
    uint32_t pos = ring_pos(d, (uint32_t)k);
    const dedup_slot *s = &d->ring[pos];
    uint32_t n = slot_len(s);
    *len = n;
    memcpy(id, s->id, n <= ID_INLINE ? n : ID_INLINE);
    if (n > ID_INLINE)
        memcpy(id + ID_INLINE, d->longs[pos], n - ID_INLINE);
    *offset = s->offset;
    *time_ns = s->time_ns;
}
