/*
 * dedup - a partition's dedup window (see dedup.h).
 *
 * Threads: whichever thread owns the partition's window at the time: the
 * writer thread, or its ahead helper between AHEAD_WORK and AHEAD_DONE
 * (partition_ahead.c), or the thread that opens or closes the partition.
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
 * writer ahead of time; its 8 tags compared at once with SSE2 where the
 * machine has it) and reads a slot only when a tag matches.
 *
 * A bucket whose 8 cells are all in use when an id hashes there sends the
 * id on to the next bucket (at about 3 ids per 8 cells on average, a full
 * window, about one insertion in a hundred). `over` counts, per bucket,
 * the ids in the ring that passed it that way, and look-ups go on to the
 * next bucket only while it is not 0; the slot keeps how many buckets its
 * id passed (`hops`), so that popping it takes it off those counts. The
 * index is therefore never rebuilt, except when the ring grows below the
 * bound (growth past it keeps the index: it never holds more than
 * max_entries ids). (Sticky
 * flags with a rebuild when many were set cost more: each rebuild is
 * 100,000 random writes.)
 *
 * A cell whose sequence number was popped and later reused by another id
 * (after a rollback, or 2^32 insertions later) can look in use: its tag
 * still has to match and the slot's id is compared in full, so it can only
 * take room, never give a wrong answer; dedup_truncate clears the cells of
 * what it pops so rollbacks leave none.
 *
 * A take that is not stored must not cost stored ids their place: the ids
 * it (and the takes admitted after it) pushed out of a full window are put
 * back by dedup_truncate. Evicting pops the head as always (no cost on the
 * common path), into a ring with room past max_entries (slack_of): a popped
 * slot keeps its id until the tail wraps onto it, and `popped` counts the
 * intact popped slots just before the head. dedup_truncate pops the take's
 * ids from the tail, then takes those slots back, newest first, while the
 * window is below its bound and they are not expired (`cutoff`). A take
 * and the one admitted ahead of more ids than the slack grow the ring
 * instead of taking a popped slot that an id not yet stored pushed out
 * (`evictor` says which id did; dedup_commit which offsets are stored), so
 * a rollback puts back every stored id it cost (the ring keeps that size,
 * at most twice the bound; past that, if the take that evicted such an id
 * is refused, the window is marked incomplete: never saved, rebuilt from
 * the log at the next start).
 */
#include "dedup.h"
#include "dedup_internal.h"

#include "broker.h"
#include "config.h"

#include "event.h"
#include "logging.h"
#include "pb_errors.h"
#include "reader.h"
#include "segment.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Prefetch distance, in events: enough to cover a cache miss with the work
 * of the events in between (16 and 24 measured no better). */
#define PREFETCH_AHEAD 8u
/* The events (pub_event, a cache line each) were written by the loop
 * thread on the other core: fetched this many events ahead, so that
 * neither the hash read PREFETCH_AHEAD events ahead nor the check waits
 * for that core. The calls ask for writing (the duplicate flag, the
 * original's offset), but GCC emits that as PREFETCHW only for a target
 * with it (-mprfchw); for the default x86-64 it is PREFETCHT0, a read, and
 * the store still has to take the line. PREFETCHW through inline asm was
 * measured (ids11, tests/bench/NOTES.md) and not kept: no difference. */
#define EVENT_AHEAD (2u * PREFETCH_AHEAD)

_Static_assert(DEDUP_MAX_ENTRIES == CONFIG_DEDUP_MAX_ENTRIES,
               "the config's bound on dedup_max_entries is the window's");

int dedup_create(dedup **out, int64_t window_ns, uint32_t max_entries)
{
    *out = NULL;
    if (max_entries == 0 || max_entries > DEDUP_MAX_ENTRIES || window_ns < 0)
        return PB_EINVAL;
    dedup *d = calloc(1, sizeof *d);
    if (!d)
        return PB_ENOMEM;
    d->window_ns = window_ns;
    d->max_entries = max_entries;
    /* Sequence numbers wrap at 2^32 (in_use is modular): they start just
     * below, so that every window, in tests too, crosses the wrap early. */
    d->head_seq = UINT32_MAX - 4095u;
    d->cutoff = INT64_MIN;
    d->limit = max_entries + slack_of(max_entries);
    *out = d;
    return 0;
}

/* The ring's memory: mapped pages, so that it is page-aligned (a slot is
 * one cache line, not two halves) and grows by mremap, without a copy. */
static dedup_slot *ring_resize(dedup_slot *ring, uint32_t old_cap, uint32_t cap)
{
    size_t bytes = (size_t)cap * sizeof *ring;
    void *p = ring ? mremap(ring, (size_t)old_cap * sizeof *ring, bytes, MREMAP_MAYMOVE)
                   : mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void release(dedup *d)
{
    if (d->ring)
        munmap(d->ring, (size_t)d->cap * sizeof *d->ring);
    free(d->longs);
    free(d->passed);
    free(d->index);
    free(d->over);
    free(d->evictor);
    d->evictor = NULL;
    d->longs = NULL;
    d->limit = d->max_entries + slack_of(d->max_entries); /* a burst's growth goes too */
    d->ring = NULL;
    d->passed = NULL;
    d->index = NULL;
    d->over = NULL;
    d->cap = d->head = d->nbuckets = d->popped = 0;
}

void dedup_destroy(dedup *d)
{
    if (!d)
        return;
    release(d);
    free(d);
}

/* The cells of bucket bk whose tag is `tag` (bit i for cell i), and those
 * not in use (never used, or their sequence number has left the ring). */
#ifdef __SSE2__
static inline __attribute__((always_inline)) unsigned tag_cells(const bucket *bk, uint32_t tag)
{
    __m128i t = _mm_set1_epi32((int)tag);
    __m128i lo = _mm_cmpeq_epi32(_mm_load_si128((const __m128i *)bk->tag), t);
    __m128i hi = _mm_cmpeq_epi32(_mm_load_si128((const __m128i *)(bk->tag + 4)), t);
    return (unsigned)_mm_movemask_ps(_mm_castsi128_ps(lo)) |
           (unsigned)_mm_movemask_ps(_mm_castsi128_ps(hi)) << 4;
}

/* seq - head_seq < count, unsigned: both sides biased by 2^31 for the
 * signed compare SSE2 has. */
static inline __attribute__((always_inline)) unsigned free_cells(const dedup *d, const bucket *bk)
{
    const __m128i bias = _mm_set1_epi32(INT32_MIN), zero = _mm_setzero_si128();
    __m128i head = _mm_set1_epi32((int)d->head_seq);
    __m128i count = _mm_set1_epi32((int)(d->count ^ 0x80000000u));
    unsigned m = 0;
    for (int half = 0; half < 2; half++) {
        __m128i seq = _mm_load_si128((const __m128i *)(bk->seq + 4 * half));
        __m128i tag = _mm_load_si128((const __m128i *)(bk->tag + 4 * half));
        __m128i ring = _mm_cmplt_epi32(_mm_xor_si128(_mm_sub_epi32(seq, head), bias), count);
        __m128i used = _mm_andnot_si128(_mm_cmpeq_epi32(tag, zero), ring);
        m |= (unsigned)(~_mm_movemask_ps(_mm_castsi128_ps(used)) & 0xf) << (4 * half);
    }
    return m;
}
#else
static unsigned tag_cells(const bucket *bk, uint32_t tag)
{
    unsigned m = 0;
    for (unsigned i = 0; i < CELLS; i++)
        m |= (unsigned)(bk->tag[i] == tag) << i;
    return m;
}

static unsigned free_cells(const dedup *d, const bucket *bk)
{
    unsigned m = 0;
    for (unsigned i = 0; i < CELLS; i++)
        m |= (unsigned)(bk->tag[i] == 0 || bk->seq[i] - d->head_seq >= d->count) << i;
    return m;
}
#endif

/* A zeroed index of n buckets. One of 2 MiB or more is aligned to 2 MiB and
 * asks for transparent huge pages: its accesses are random, and with 4 KiB
 * pages most of them would also miss the TLB. */
static bucket *index_alloc(size_t n)
{
    size_t bytes = n * sizeof(bucket);
    void *p = NULL;
    if (posix_memalign(&p, bytes < HUGE_PAGE ? sizeof(bucket) : HUGE_PAGE, bytes) != 0)
        return NULL;
    if (bytes >= HUGE_PAGE)
        (void)madvise(p, bytes, MADV_HUGEPAGE); /* a hint: without it, 4 KiB pages */
    memset(p, 0, bytes);
    return p;
}

static void index_fill(dedup *d);

/* Indexes an id of hash h (not in the index) as sequence number seq: in the
 * first cell not in use from its bucket on, counting the full buckets it
 * passes. Returns how many it passed. */
static uint32_t index_put(dedup *d, uint64_t h, uint32_t seq)
{
    uint32_t mask = d->nbuckets - 1, hops = 0;
    for (uint32_t b = (uint32_t)h & mask; hops < d->nbuckets; b = (b + 1) & mask, hops++) {
        bucket *bk = &d->index[b];
        unsigned m = free_cells(d, bk);
        if (m) {
            unsigned i = (unsigned)__builtin_ctz(m);
            bk->tag[i] = tag_of(h);
            bk->seq[i] = seq;
            assert(hops < 1u << HOPS_BITS); /* the slot's field (dedup_internal.h) */
            return hops;
        }
        d->over[b]++;
    }
    /* No free cell anywhere: at most half the cells hold ids, so the rest
     * are cells that look in use (see the top). Not expected to happen;
     * an index made afresh has none of them. */
    index_fill(d);
    return index_put(d, h, seq);
}

/* The id of slot s leaves the ring: off the counts of the buckets it passed. */
static void index_unpass(dedup *d, const dedup_slot *s)
{
    uint32_t mask = d->nbuckets - 1;
    for (uint32_t j = 0, b = (uint32_t)s->hash & mask; j < slot_hops(s); j++, b = (b + 1) & mask)
        d->over[b]--;
}

/* Indexes every id of the ring afresh. */
static void index_fill(dedup *d)
{
    memset(d->index, 0, (size_t)d->nbuckets * sizeof *d->index);
    memset(d->over, 0, (size_t)d->nbuckets * sizeof *d->over);
    for (uint32_t k = 0; k < d->count; k++) {
        dedup_slot *s = &d->ring[ring_pos(d, k)];
        uint32_t hops = index_put(d, s->hash, d->head_seq + k);
        slot_set_hops(s, hops);
        d->passed[ring_pos(d, k)] = hops != 0;
    }
}

/* The buckets of an index for up to `ids` ids: at least two cells an id. */
static uint32_t index_buckets(uint32_t ids)
{
    uint32_t nbuckets = 1;
    while ((uint64_t)nbuckets * CELLS < (uint64_t)ids * 2)
        nbuckets <<= 1;
    return nbuckets;
}

/* Grows the ring to cap slots in place (realloc: a large ring is remapped,
 * not copied). Its used region (the popped slots, then the ids) keeps its
 * ring order: the part that wrapped past the old end moves up to the new
 * end, so sequence numbers, and the index, stay valid. The index holds at
 * most min(cap, max_entries) ids (popped slots are not in it): it is made
 * anew only while the ring is below the bound, never when a take that is
 * not yet stored makes the ring grow past it. */
static int grow_to(dedup *d, uint32_t cap)
{
    uint32_t nbuckets = index_buckets(cap < d->max_entries ? cap : d->max_entries);
    bucket *index = NULL;
    uint32_t *over = NULL;
    if (nbuckets != d->nbuckets) {
        index = index_alloc(nbuckets);
        over = malloc((size_t)nbuckets * sizeof *over);
        if (!index || !over)
            goto nomem;
    }
    /* Each realloc keeps the old contents, the ring's last: a failure
     * leaves d as it was (its arrays larger than cap says: harmless). */
    uint8_t *passed = realloc(d->passed, cap);
    if (!passed)
        goto nomem;
    d->passed = passed;
    uint64_t *evictor = realloc(d->evictor, (size_t)cap * sizeof *evictor);
    if (!evictor)
        goto nomem;
    d->evictor = evictor;
    if (d->longs) {
        uint8_t(*longs)[LONG_BYTES] = realloc(d->longs, (size_t)cap * LONG_BYTES);
        if (!longs)
            goto nomem;
        d->longs = longs;
    }
    dedup_slot *ring = ring_resize(d->ring, d->cap, cap);
    if (!ring)
        goto nomem;
    d->ring = ring;
    assert(((uintptr_t)ring & 63) == 0); /* a slot per cache line */
    uint32_t old = d->cap, used = d->popped + d->count;
    uint32_t start = d->head >= d->popped ? d->head - d->popped : d->head + old - d->popped;
    if (start + (uint64_t)used > old) {
        uint32_t up = cap - old, n = old - start; /* [start, old) moves up to the end */
        memmove(&ring[start + up], &ring[start], (size_t)n * sizeof *ring);
        memmove(&passed[start + up], &passed[start], n);
        memmove(&evictor[start + up], &evictor[start], (size_t)n * sizeof *evictor);
        if (d->longs)
            memmove(&d->longs[start + up], &d->longs[start], (size_t)n * LONG_BYTES);
        if (d->head >= start)
            d->head += up;
    }
    d->cap = cap;
    if (index) {
        free(d->index);
        free(d->over);
        d->index = index;
        d->over = over;
        d->nbuckets = nbuckets;
        /* The popped slots are not in the new index: unpop_head indexes
         * them again. */
        index_fill(d);
    }
    return 0;
nomem:
    free(index);
    free(over);
    return PB_ENOMEM;
}

/* Doubles the ring up to the bound and its slack: memory stays within twice
 * what the ids held take (the copies and index rebuilds of the doublings
 * add up to about the bound's worth once). */
static int grow(dedup *d)
{
    uint32_t cap = d->cap ? d->cap * 2 : RING_INITIAL;
    if (cap > d->limit || cap < d->cap)
        cap = d->limit;
    return grow_to(d, cap);
}

/* Whether slot pos holds id[0..len). */
static inline bool slot_is(const dedup *d, uint32_t pos, const uint8_t *id, size_t len)
{
    const dedup_slot *s = &d->ring[pos];
    if (slot_len(s) != len)
        return false;
    if (len <= ID_INLINE)
        return memcmp(s->id, id, len) == 0;
    return memcmp(s->id, id, ID_INLINE) == 0 &&
           memcmp(d->longs[pos], id + ID_INLINE, len - ID_INLINE) == 0;
}

/* The ring position + 1 of id (hash h), or 0. */
static uint32_t lookup(const dedup *d, uint64_t h, const uint8_t *id, size_t len)
{
    if (d->count == 0)
        return 0;
    uint32_t mask = d->nbuckets - 1, tag = tag_of(h);
    /* Bounded, although add rebuilds the index long before every bucket
     * is flagged. */
    for (uint32_t b = (uint32_t)h & mask, n = 0; n < d->nbuckets; b = (b + 1) & mask, n++) {
        const bucket *bk = &d->index[b];
        for (unsigned m = tag_cells(bk, tag); m; m &= m - 1) {
            uint32_t k = bk->seq[__builtin_ctz(m)] - d->head_seq;
            if (k >= d->count)
                continue; /* the cell of an id that has left the ring */
            uint32_t pos = ring_pos(d, k);
            if (slot_is(d, pos, id, len))
                return pos + 1;
        }
        if (!d->over[b])
            return 0;
    }
    return 0;
}

/* Brings what the check of an id of hash h `ahead` checks from now will
 * touch into the cache: its index bucket, the bucket's count, the slot it
 * will take if it is new (once the window is full that slot was last
 * written max_entries ids ago, long out of the cache, and a 64-byte store
 * to it would wait for its line), and the slot of the id it will push out
 * when pop_head must read that one. Always inlined: GCC takes a function
 * that only prefetches for one without effect, and drops its calls. */
static inline __attribute__((always_inline)) void prefetch_check(const dedup *d, uint64_t h,
                                                                 uint32_t ahead)
{
    if (!d->nbuckets)
        return;
    uint32_t b = (uint32_t)h & (d->nbuckets - 1);
    __builtin_prefetch(&d->index[b]);
    __builtin_prefetch(&d->over[b]); /* read by every look-up: 4 bytes of a line */
    uint32_t k = d->count + ahead;
    if (k >= d->cap)
        k -= d->cap;
    if (k < d->cap) {
        __builtin_prefetch(&d->ring[ring_pos(d, k)], 1); /* one line: the ring is page-aligned */
        /* And, in a full window, the id that add will push out then, when
         * pop_head has to read its slot (its hash and hops: about one id
         * in a hundred passed a full bucket), a line as cold as the one
         * above. */
        uint32_t out = ahead < d->count ? ring_pos(d, ahead) : d->cap;
        if (d->count == d->max_entries && out < d->cap && d->passed[out])
            __builtin_prefetch(&d->ring[out]);
    }
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

/* Forgets the oldest id: its cell is free from now on. evictor: 1 + the
 * offset of the id that pushes it out, or 0 (expired). */
static inline __attribute__((always_inline)) void pop_head(dedup *d, uint64_t evictor)
{
    if (d->passed[d->head])
        index_unpass(d, &d->ring[d->head]);
    d->evictor[d->head] = evictor;
    d->head = d->head + 1 == d->cap ? 0 : d->head + 1;
    d->head_seq++;
    d->count--;
    d->popped++;
}

/* Copies an id of 1..64 bytes with fixed-size moves (overlapping at the
 * end), which the compiler inlines: a call to memcpy per id showed in the
 * writer's profile. */
static inline __attribute__((always_inline)) void copy_id(uint8_t *dst, const uint8_t *src,
                                                          size_t len)
{
    if (len >= 16) {
        for (size_t i = 0; i + 16 < len; i += 16)
            memcpy(dst + i, src + i, 16);
        memcpy(dst + len - 16, src + len - 16, 16);
    } else if (len >= 8) {
        memcpy(dst, src, 8);
        memcpy(dst + len - 8, src + len - 8, 8);
    } else if (len >= 4) {
        memcpy(dst, src, 4);
        memcpy(dst + len - 4, src + len - 4, 4);
    } else {
        for (size_t i = 0; i < len; i++)
            dst[i] = src[i];
    }
}

/* Adds id (hash h; not present). home_free: the cells of its home bucket
 * that were free when it was looked up (0: unknown, or none), so that the
 * common case, a free cell there, needs no second pass over the bucket. */
static inline __attribute__((always_inline)) int add(dedup *d, uint64_t h, const uint8_t *id,
                                                     size_t len, uint64_t offset, int64_t time_ns,
                                                     unsigned home_free)
{
    if (d->count == d->cap || (d->count == d->max_entries && d->cap < d->limit)) {
        /* The ring grows to its slack before the first eviction, so that
         * the ids evicted stay there for dedup_truncate. */
        if (grow(d) == 0) {
            home_free = 0; /* a new index */
        } else if (d->count < d->max_entries) {
            d->lost = true;
            return PB_ENOMEM;
        }
    }
    if (len > ID_INLINE && !d->longs) {
        /* The first long id: room for the tails of all the ring's slots. */
        d->longs = malloc((size_t)d->cap * LONG_BYTES);
        if (!d->longs) {
            d->lost = true;
            return PB_ENOMEM;
        }
    }
    if (d->count == d->max_entries) {
        /* The window is full: the oldest id goes early. Popping only frees
         * cells, so home_free stays true. */
        pop_head(d, offset + 1);
        d->evicted++;
        /* The tail is about to take the oldest popped slot: if an id not
         * yet stored pushed it out, a refused take must be able to put it
         * back (dedup_truncate), so the ring grows past its slack instead
         * (only when a take, and the one admitted ahead of it, evict more
         * than the slack; the ring keeps that size). */
        uint32_t tail = ring_pos(d, d->count);
        if (d->popped == d->cap - d->count && d->evictor[tail] > d->commit_off &&
            d->ring[tail].time_ns >= d->cutoff) { /* (an expired id never comes back) */
            /* At most twice the bound in all: beyond that (ids not yet
             * stored pushed out more than a whole window) the slot goes,
             * and the window is marked incomplete (never saved: a restart
             * rebuilds it from the log). */
            uint64_t most = 2ull * d->max_entries;
            uint64_t want = (uint64_t)d->cap + slack_of(d->max_entries);
            uint32_t cap = (uint32_t)(want < most ? want : most);
            if (cap > d->cap && grow_to(d, cap) == 0) {
                home_free = 0; /* a new index */
                if (cap > d->limit)
                    d->limit = cap;
            } else if (d->evictor[tail] > d->at_risk) {
                d->at_risk = d->evictor[tail]; /* lost only if its take is refused */
            }
        }
    }
    uint32_t pos = ring_pos(d, d->count);
    uint32_t seq = d->head_seq + d->count, hops = 0;
    if (home_free) {
        bucket *bk = &d->index[(uint32_t)h & (d->nbuckets - 1)];
        unsigned i = (unsigned)__builtin_ctz(home_free);
        bk->tag[i] = tag_of(h);
        bk->seq[i] = seq;
    } else {
        hops = index_put(d, h, seq); /* (index_fill reads the ring's ids, not pos) */
    }
    /* Stores only: the slot's line is cold (see slot_meta). */
    dedup_slot *s = &d->ring[pos];
    s->hash = h;
    s->offset = offset;
    s->time_ns = time_ns;
    s->meta = slot_meta(hops, len);
    if (len <= ID_INLINE) {
        copy_id(s->id, id, len);
    } else {
        copy_id(s->id, id, ID_INLINE);
        copy_id(d->longs[pos], id + ID_INLINE, len - ID_INLINE);
    }
    d->passed[pos] = hops != 0;
    d->count++;
    if (d->popped > d->cap - d->count)
        d->popped = d->cap - d->count; /* the tail took the oldest popped slot */
    return 0;
}

int dedup_add(dedup *d, const uint8_t *id, size_t len, uint64_t offset, int64_t time_ns)
{
    if (len == 0 || len > EVENT_ID_MAX_BYTES)
        return PB_EINVAL;
    int rc = add(d, dedup_id_hash(id, len), id, len, offset, time_ns, 0);
    dedup_commit(d, offset + 1); /* a stored record's id (start-up, a standby) */
    return rc;
}

void dedup_commit(dedup *d, uint64_t next)
{
    if (next > d->commit_off)
        d->commit_off = next;
    if (d->at_risk && next >= d->at_risk)
        d->at_risk = 0; /* the ids that evicted them are stored: nothing lost */
}

/* lookup and, when absent, add, in one pass over the home bucket: its tags
 * and its free cells are read from the same line. 1 with *original, 0
 * (added), or PB_ENOMEM. */
static inline __attribute__((always_inline)) int check(dedup *d, uint64_t h, const uint8_t *id,
                                                       size_t len, uint64_t offset, int64_t time_ns,
                                                       uint64_t *original)
{
    unsigned home_free = 0;
    if (d->count > 0) {
        uint32_t mask = d->nbuckets - 1, tag = tag_of(h), b = (uint32_t)h & mask;
        const bucket *bk = &d->index[b];
        home_free = free_cells(d, bk);
        for (uint32_t n = 0; n < d->nbuckets; b = (b + 1) & mask, bk = &d->index[b], n++) {
            for (unsigned m = tag_cells(bk, tag); m; m &= m - 1) {
                uint32_t k = bk->seq[__builtin_ctz(m)] - d->head_seq;
                if (k >= d->count)
                    continue; /* the cell of an id that has left the ring */
                uint32_t pos = ring_pos(d, k);
                if (slot_is(d, pos, id, len)) {
                    *original = d->ring[pos].offset;
                    return 1;
                }
            }
            if (!d->over[b])
                break;
        }
    }
    return add(d, h, id, len, offset, time_ns, home_free);
}

int dedup_check(dedup *d, uint64_t h, const uint8_t *id, size_t len, uint64_t offset,
                int64_t time_ns, uint64_t *original)
{
    if (len == 0 || len > EVENT_ID_MAX_BYTES)
        return PB_EINVAL;
    return check(d, h, id, len, offset, time_ns, original);
}

/* The hash ingest computed, or (events made by tests) computed here. */
static inline uint64_t event_hash(const pub_event *ev)
{
    return ev->id_hash ? ev->id_hash : dedup_id_hash(ev->id, ev->id_len);
}

uint32_t dedup_admit_events(dedup *d, pub_event *events, const uint32_t *idx, uint32_t n,
                            uint64_t first, int64_t time_ns, dedup_fill_fn *fill, void *ctx)
{
    uint64_t next = first;
    for (uint32_t k = 0; k < n && k < EVENT_AHEAD; k++)
        __builtin_prefetch(&events[idx[k]], 1);
    for (uint32_t k = 0; k < n; k++) {
        if (k + EVENT_AHEAD < n)
            __builtin_prefetch(&events[idx[k + EVENT_AHEAD]], 1);
        if (k + PREFETCH_AHEAD < n) {
            const pub_event *later = &events[idx[k + PREFETCH_AHEAD]];
            if (later->id_len) {
                prefetch_check(d, event_hash(later), PREFETCH_AHEAD);
                /* Its bytes too: they are copied into the slot, and a large
                 * take is out of the cache by now. */
                __builtin_prefetch(later->id);
            }
        }
        pub_event *ev = &events[idx[k]];
        ev->duplicate = 0;
        uint64_t orig = 0;
        /* PB_ENOMEM: stored without being remembered (the window degrades,
         * nothing is refused). */
        if (ev->id_len > 0 && ev->id_len <= EVENT_ID_MAX_BYTES &&
            check(d, event_hash(ev), ev->id, ev->id_len, next, time_ns, &orig) == 1) {
            ev->duplicate = 1;
            ev->offset = orig;
        } else {
            next++;
        }
        fill(ctx, ev);
    }
    return (uint32_t)(next - first);
}

void dedup_expire(dedup *d, int64_t now_ns)
{
    int64_t cutoff = now_ns - d->window_ns;
    if (cutoff > d->cutoff)
        d->cutoff = cutoff;
    while (d->count > 0 && d->ring[d->head].time_ns < cutoff)
        pop_head(d, 0);
    if (d->count == 0 && d->cap > RING_INITIAL)
        release(d); /* a burst's memory is not pinned once its ids have expired */
}

/* Clears slot s's cell, the one holding seq in the bucket slot_hops(s) after
 * its own, if it is still there: seq goes to the next id added, and a cell
 * left with it would look in use. */
static void clear_cell(dedup *d, const dedup_slot *s, uint32_t seq)
{
    bucket *bk = &d->index[((uint32_t)s->hash + slot_hops(s)) & (d->nbuckets - 1)];
    for (unsigned m = tag_cells(bk, tag_of(s->hash)); m; m &= m - 1) {
        unsigned i = (unsigned)__builtin_ctz(m);
        if (bk->seq[i] == seq) {
            bk->tag[i] = 0;
            return;
        }
    }
}

/* Clears the cell of the newest id (so that its sequence number, reused by
 * the next id, does not leave a cell that looks in use) and pops it. Its
 * cell is in the bucket `hops` after its own. */
static void pop_tail(dedup *d)
{
    uint32_t seq = d->head_seq + d->count - 1;
    const dedup_slot *s = &d->ring[ring_pos(d, d->count - 1)];
    clear_cell(d, s, seq);
    if (slot_hops(s))
        index_unpass(d, s);
    d->count--;
}

/* Takes back the slot just before the head (popped, intact, not expired):
 * its cell if it is still there (its sequence number is again the head's),
 * else a new one. */
static void unpop_head(dedup *d)
{
    d->head = d->head == 0 ? d->cap - 1 : d->head - 1;
    d->head_seq--;
    d->count++;
    d->popped--;
    d->evicted--; /* not expired (cutoff): it was evicted */
    dedup_slot *s = &d->ring[d->head];
    uint32_t mask = d->nbuckets - 1;
    bucket *bk = &d->index[((uint32_t)s->hash + slot_hops(s)) & mask];
    for (unsigned m = tag_cells(bk, tag_of(s->hash)); m; m &= m - 1) {
        if (bk->seq[__builtin_ctz(m)] == d->head_seq) {
            for (uint32_t j = 0, b = (uint32_t)s->hash & mask; j < slot_hops(s);
                 j++, b = (b + 1) & mask)
                d->over[b]++; /* passing them again */
            return;
        }
    }
    uint32_t hops = index_put(d, s->hash, d->head_seq);
    slot_set_hops(s, hops);
    d->passed[d->head] = hops != 0;
}

/* Drops the popped slot just before the head without taking it back: an id
 * of the refused takes that a later id of the same takes pushed out (the
 * window is empty then: every id after it was refused too, and popped from
 * the tail). Its cell, if still there, is cleared as pop_tail clears one:
 * its sequence number goes to the next id added. */
static void drop_popped_head(dedup *d)
{
    uint32_t at = d->head == 0 ? d->cap - 1 : d->head - 1;
    uint32_t seq = d->head_seq - 1;
    const dedup_slot *s = &d->ring[at];
    clear_cell(d, s, seq);
    d->head = at;
    d->head_seq--;
    d->popped--;
    d->evicted--; /* its eviction is undone with its take */
}

void dedup_truncate(dedup *d, uint64_t from)
{
    if (d->at_risk > from) {
        /* A refused id had pushed out a stored one whose slot is gone: the
         * window lacks it until the next start rebuilds it from the log. */
        d->lost = true;
        d->at_risk = 0;
    }
    while (d->count > 0 && d->ring[ring_pos(d, d->count - 1)].offset >= from)
        pop_tail(d);
    /* The refused takes' own ids that their later ids pushed out are the
     * newest popped slots: never taken back (their events are not stored),
     * the stored ids popped before them are. */
    while (d->popped > 0 && d->count == 0 &&
           d->ring[d->head == 0 ? d->cap - 1 : d->head - 1].offset >= from)
        drop_popped_head(d);
    while (d->popped > 0 && d->count < d->max_entries &&
           d->ring[d->head == 0 ? d->cap - 1 : d->head - 1].time_ns >= d->cutoff)
        unpop_head(d);
}
