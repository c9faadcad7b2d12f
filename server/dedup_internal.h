/*
 * dedup_internal - the dedup window's layout (dedup.c: the design; dedup.h:
 * the interface), shared by dedup.c and dedup_state.c only (and
 * test_dedup, which checks the index against the slots).
 */
#ifndef PB_DEDUP_INTERNAL_H
#define PB_DEDUP_INTERNAL_H

#include "dedup.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RING_INITIAL 64u
#define HUGE_PAGE    (2u << 20)
#define CELLS        8u /* per bucket: one cache line */

/* A slot is one cache line: the id's first ID_INLINE bytes are in it, the
 * rest of a longer one in the window's `longs` (allocated at the first such
 * id), so that ids of up to 36 bytes (a UUID's text, what producers send,
 * and anything shorter) cost a line of the ring each, not one and a half. */
#define ID_INLINE  36u
#define LONG_BYTES DEDUP_LONG_ID_BYTES /* >= EVENT_ID_MAX_BYTES - ID_INLINE */

/* hops: the full buckets its id passed to reach its cell, fewer than the
 * index's buckets: at most 2^22 (dedup_max_entries is at most 2^24, and
 * the index has 2 cells per id in buckets of 8), so 24 bits hold it, and
 * the id's length shares its word: `meta`, hops in the low HOPS_BITS, the
 * length above. A plain word, not bit-fields: the writer stores it whole
 * (slot_meta), where assigning one bit-field reads the word first, and
 * that read of a slot last written max_entries ids ago waited for its cold
 * line (half of the window's add in the daemon's profile). */
#define HOPS_BITS 24
#define HOPS_MASK ((1u << HOPS_BITS) - 1)
typedef struct dedup_slot {
    uint64_t hash;
    uint64_t offset;
    int64_t time_ns;
    uint32_t meta;
    uint8_t id[ID_INLINE];
} dedup_slot;

static inline uint32_t slot_meta(uint32_t hops, size_t len)
{
    return hops | (uint32_t)len << HOPS_BITS;
}

static inline uint32_t slot_hops(const dedup_slot *s)
{
    return s->meta & HOPS_MASK;
}

static inline uint32_t slot_len(const dedup_slot *s)
{
    return s->meta >> HOPS_BITS;
}

static inline void slot_set_hops(dedup_slot *s, uint32_t hops)
{
    s->meta = (s->meta & ~HOPS_MASK) | hops;
}

/* hops < nbuckets, and index_buckets gives the least power of two with
 * CELLS * nbuckets >= 2 * ids, at most twice 2 * ids / CELLS buckets (ids <=
 * DEDUP_MAX_ENTRIES): within HOPS_BITS (dedup.c's index_put also asserts
 * each count). */
_Static_assert(4ull * DEDUP_MAX_ENTRIES / CELLS <= 1ull << HOPS_BITS, "hops fit in a slot");

_Static_assert(EVENT_ID_MAX_BYTES - ID_INLINE <= LONG_BYTES, "an id's tail fits in longs");

_Static_assert(sizeof(dedup_slot) == DEDUP_SLOT_BYTES, "dedup.h's DEDUP_SLOT_BYTES");

/* CELLS cells: cell i is tag[i] (32 bits of the id's hash, never 0; 0 =
 * never used) and seq[i] (the id's sequence number). Tags apart, so that
 * one look-up compares all eight at once. */
typedef struct bucket {
    uint32_t tag[CELLS];
    uint32_t seq[CELLS];
} bucket;

_Static_assert(sizeof(bucket) == 64, "a bucket is one cache line");

/* The tag of an id of hash h: 32 bits of it, never 0. */
static inline uint32_t tag_of(uint64_t h)
{
    return (uint32_t)(h >> 32) | 1u;
}

struct dedup {
    int64_t window_ns;
    uint32_t max_entries;
    uint32_t limit;               /* the ring's largest: max_entries and its slack */
    dedup_slot *ring;             /* cap slots; count of them from head on */
    uint8_t (*longs)[LONG_BYTES]; /* cap tails of ids longer than ID_INLINE, or NULL
                                   * while the window has not seen one */
    uint8_t *passed;              /* cap flags: slot_hops(&ring[i]) != 0 (eviction reads the
                                   * slot only then: it is not the one the new id takes) */
    uint32_t cap, head, count;
    uint32_t head_seq;   /* the sequence number of ring[head] */
    bucket *index;       /* nbuckets buckets */
    uint32_t *over;      /* nbuckets counts: ids in the ring that passed this bucket */
    uint32_t nbuckets;   /* a power of two; CELLS * nbuckets >= 2 * min(cap, max_entries) */
    uint32_t popped;     /* intact popped slots just before head (see the top) */
    uint64_t *evictor;   /* cap: for a popped slot, 1 + the offset of the id whose
                          * add pushed it out (0: expired, or never popped) */
    uint64_t commit_off; /* ids added below this offset are stored (dedup_commit) */
    uint64_t at_risk;    /* 1 + the largest offset of a not yet stored id whose
                          * eviction's slot was taken (the ring at twice the
                          * bound): if its take is refused, a stored id is lost */
    int64_t cutoff;      /* the last expiry's: older ids are not put back */
    uint64_t evicted;
    bool lost; /* an id was not remembered (no memory), or one a refused take
                * may need back was overwritten: see dedup_complete */
};

/* The ring's room past max_entries for the ids a refused take pushed out:
 * an eighth of the bound, at least 64 ids (or the bound, if smaller). */
static inline uint32_t slack_of(uint32_t max_entries)
{
    uint32_t slack = max_entries / 8;
    if (slack < RING_INITIAL)
        slack = max_entries < RING_INITIAL ? max_entries : RING_INITIAL;
    return slack > UINT32_MAX - max_entries ? UINT32_MAX - max_entries : slack;
}

/* The k-th slot from the head (k < cap; no division: cap need not be a
 * power of two). */
static inline uint32_t ring_pos(const dedup *d, uint32_t k)
{
    uint32_t pos = d->head + k;
    return pos >= d->cap ? pos - d->cap : pos;
}

#endif
