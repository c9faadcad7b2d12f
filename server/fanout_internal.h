/*
 * fanout_internal - what the fan-out's two files share (fanout.h is the
 * interface): the fanout registry itself (fanout.c: create, destroy, add,
 * remove, the matcher's compile thread) and one writer's state
 * (fanout_publish.c: what a partition writer does with each durable batch).
 * The locks and the threads are described at the top of fanout.c.
 */
#ifndef PB_FANOUT_INTERNAL_H
#define PB_FANOUT_INTERNAL_H

#include "fanout.h"
#include "fanout_waker.h"
#include "matchcache.h"

#include <stdatomic.h>
#include <stdbool.h>

struct compile_req;

struct fanout {
    pthread_rwlock_t list_lock;
    atomic_uint nlive; /* subscriptions added: the writers' fast exit */
    uint64_t gen;      /* list_lock: moves when the lists change */
    uint32_t nslots;
    fanout_member **live; /* list_lock: per pool slot, the subscription added, or NULL */
    /* list_lock: per slot, patterns_restricted(live[slot]->ps), so that a
     * writer's matched topic costs no read of the member and its pattern
     * set for it: with 1,000 subscriptions each is a cache miss (two were
     * ~3% of the fan-out bench's samples: miss_ids). */
    uint8_t *gated;
    uint16_t *all;        /* list_lock: slots whose patterns match every topic */
    uint32_t nall;
    uint16_t *some; /* list_lock: the other slots */
    uint32_t nsome;
    uint64_t match_cache_bytes;
    livequeue_pool *pool; /* the budget of every live queue */
    matcher_set *ms;      /* the `some` subscriptions' patterns, by slot */
    _Atomic uint64_t match_hits, match_misses, breaches;
    _Atomic uint64_t fast_done, fast_thread, fast_skipped; /* fanout_stats */
    /* The matcher's thread (compact_main): it compiles the subscriptions
     * fanout_add hands it, one at a time, and compacts. One thread, so
     * Hyperscan's compiler (megabytes of transient memory) runs once at a
     * time and leaves its free memory in one malloc arena, whatever the
     * number of subscriptions starting at once. */
    pthread_t compactor;
    bool compactor_started;
    pthread_mutex_t compact_lock;
    pthread_cond_t compact_cv;        /* work for the thread */
    pthread_cond_t compile_cv;        /* a compile is done */
    bool compact_kick, compact_stop;  /* compact_lock */
    struct compile_req *compile_head; /* compact_lock: waiting, oldest first */
    struct compile_req **compile_tail;
    pthread_mutex_t writers_lock;
    fanout_writer *writers; /* writers_lock: one per partition name */
    fanout_waker *waker;    /* signals the subscriptions the writers queued for */
    /* The waker's scratch for the fast path (fanout_fast): the Event frames
     * of one subscription's wake-up. NULL (out of memory): every
     * subscription is signalled. */
    uint8_t *fast_buf;
};

/* Bytes of Event frames the waker writes for one subscription per wake-up
 * (fanout_fast); what does not fit is left to its thread. */
#define FANOUT_FAST_BYTES (64u * 1024u)

/* Records whose subscriptions are worked out together (publish_some). */
#define FANOUT_CHUNK 256

/* One writer's fan-out state (see the top of the file and fanout.h). Only
 * that partition's writer thread uses it after fanout_writer_get. */
struct fanout_writer {
    fanout *fo;
    fanout_writer *next; /* fo->writers */
    bool ready;          /* the scratch below is allocated */
    match_cache *cache;  /* NULL until a `some` subscription is seen, or if out of memory */
    /* The matcher's last answer was keyed_only (matcher.h): the cache is
     * neither read nor filled until an answer says otherwise. With 100k
     * topics, its index and arena were 6-7 MB of the fan-out benchmark's
     * RSS, for lookups no cheaper than the keyed matcher's. */
    bool keyed_only;
    uint64_t cache_gen; /* the fo->gen the cache's decisions are for */
    /* The since pass (note_since_all) last ran at this gen and pool reset
     * count; it runs again only when either moves. */
    bool since_valid;
    uint64_t since_gen, since_resets;
    matcher_reader *mr;
    pcre2_match_data *md; /* the subscriptions' read rights (patterns_gate_shared) */
    uint16_t *ids;        /* scratch: the matching slots of one topic (nslots) */
    /* Scratch for one chunk of records (publish_some): the records whose
     * topic missed the cache, their topics and the matcher's answers, and
     * the cached answers of the others. */
    size_t miss[FANOUT_CHUNK];
    const char *mtopic[FANOUT_CHUNK];
    size_t mlen[FANOUT_CHUNK];
    matcher_result mres[FANOUT_CHUNK];
    const uint16_t *hit_ids[FANOUT_CHUNK];
    size_t hit_n[FANOUT_CHUNK];
    /* The subscriptions to wake once the batch is queued and acked
     * (fanout_acked): waking at the end, not at each push, lets a
     * subscription thread take all of its records of the batch in one pass
     * (one wake-up, one write), and the acks do not wait for the wake-ups. */
    uint16_t *wake_list;
    uint32_t nwake;
    uint8_t *marked; /* per slot: in wake_list */
    char name[];     /* the partition's */
};

/* Frees a writer's state and scratch (fanout_destroy). */
void fanout_writer_free(fanout_writer *w);

#endif
