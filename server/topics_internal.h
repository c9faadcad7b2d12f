/*
 * topics_internal - what topics.c (the table, its rings, eviction) and
 * topics_snap.c (the snapshot file and the rebuild from the log) share
 * about one topic table. Not for other modules: they use topics.h.
 * Threads and locking: as described at the top of topics.c.
 */
#ifndef PB_TOPICS_INTERNAL_H
#define PB_TOPICS_INTERNAL_H

#include "topics.h"
#include "topics_cold.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* Offsets a topic keeps in its entry before its ring needs an allocation of
 * its own: with 100,000 topics of a few events each, a separate ring was
 * 4.8 MB of 48-byte chunks. */
#define TOPIC_RING_INLINE 2u

typedef struct topic_entry {
    uint64_t hash;
    union {
        uint64_t *ring;                    /* cap > TOPIC_RING_INLINE */
        uint64_t inl[TOPIC_RING_INLINE]; /* cap <= TOPIC_RING_INLINE */
    };
    uint32_t last_use; /* the table's clock when last added to (eviction order) */
    uint32_t name_len;
    uint16_t cap;   /* slots in the ring (history <= TOPICS_HISTORY_MAX) */
    uint16_t start; /* slot of the oldest offset */
    uint16_t count; /* offsets held */
    bool evict;     /* chosen to leave memory (writer thread, during an eviction) */
    char name[];    /* NUL-terminated copy of the topic */
} topic_entry;

_Static_assert(TOPICS_HISTORY_MAX <= UINT16_MAX, "ring positions are 16 bits");

/* The entry's ring of cap offsets (in the entry, or allocated). */
static inline uint64_t *topic_ring(const topic_entry *e)
{
    return e->cap > TOPIC_RING_INLINE ? e->ring : (uint64_t *)e->inl;
}

/* Frees the entry and its ring. */
static inline void topic_entry_free(topic_entry *e)
{
    if (e && e->cap > TOPIC_RING_INLINE)
        free(e->ring);
    free(e);
}

struct topic_table {
    pthread_rwlock_t lock; /* protects everything below but what is marked */
    uint32_t history;
    topic_entry **slots; /* nslots (a power of two), NULL = empty */
    size_t nslots;
    size_t count;
    /* Held for reading by topics_foreach, for writing by an eviction: the
     * cold store is replaced only while no reader walks it. */
    pthread_rwlock_t evict_lock;
    /* Writer thread only (set by topics_load, then read-only for others
     * under evict_lock): */
    topics_budget *budget;
    const fileio *io;
    char *dir, *name;
    cold_store *cold;
    uint64_t *cold_offs;  /* history offsets: a topic's, read back from the cold store */
    uint64_t *ring_tmp;   /* history + 1: ring_insert's */
    uint32_t clock;       /* topics_add calls */
    uint32_t evict_after; /* after a failed eviction: not before this clock */
    uint32_t evict_skips; /* evictions put off in a row because a walk was running */
    bool evict_warned;
};

/* Frees every entry; the table's write lock held. */
void topics_clear_locked(topic_table *t);

/* The entry for topic, created if new (with the offsets the cold store
 * holds for it when `from_cold`); NULL when out of memory. Write lock held. */
topic_entry *topics_entry_get(topic_table *t, const uint8_t *topic, size_t len, bool from_cold,
                              bool *created);

/* Appends offset to e's ring (growing it up to the table's history); 0 or
 * PB_ENOMEM. Write lock held. */
int topics_ring_push(const topic_table *t, topic_entry *e, uint64_t offset);

/* Writer thread: evicts to the cold store when the table is over its share
 * of the budget. No lock held. */
void topics_maintain(topic_table *t);

#endif
