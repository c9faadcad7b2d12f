/*
 * matcher_snap - the matcher's internals, shared by matcher.c (the writer
 * side: subscriptions come and go), matcher_shards.c (shards are compiled
 * and compacted), matcher_snap.c (reference counts; building, publishing
 * and reclaiming snapshots) and matcher_read.c (the reader side: finding
 * the current snapshot and matching topics with it). Nothing else
 * includes it.
 *
 * Objects:
 *   msub   one subscription: its patterns' texts, PCRE2 codes (every
 *          pattern has one: PCRE2 is the definition, and the fallback),
 *          Hyperscan expressions (hsdb_expr) and kinds. Only the writer
 *          side reads it.
 *   shard  one Hyperscan database and, per expression, the (msub, pattern)
 *          pairs it stands for: equal expressions of several subscriptions
 *          are compiled once. A young shard holds one new subscription's
 *          patterns; compaction merges them into full ones.
 *   snap   what a reader matches with, immutable once published: the live
 *          subscriptions (dense index -> id); the shards, full ones first,
 *          with per pair the dense index of its subscription (-1: removed);
 *          the patterns PCRE2 runs, grouped by text (each runs once per
 *          topic).
 *
 * Young subscriptions: a young shard is not scanned for every topic (1,000
 * of them would cost ~125 us a topic, a scan costing ~0.1 us however small
 * the database); its patterns run through PCRE2 with JIT code instead
 * (~0.03 us each on the bench's topics), and the shard is scanned only for
 * a topic on which one of them exceeds its budget: a Hyperscan pattern is
 * never reported as a breach, young or not.
 *
 * Keyed subscriptions (matcher_keys.h): their young shards are theirs for
 * good (never compacted) and are scanned only for the topics whose prefix
 * or suffix is a key of theirs (the snapshot's key index); their Hyperscan
 * patterns never run through PCRE2.
 */
#ifndef PB_MATCHER_SNAP_H
#define PB_MATCHER_SNAP_H

#include "matcher.h"
#include "matcher_keys.h"
#include "patterns.h"

#include <hs.h>
#include <pthread.h>
#include <stdatomic.h>

enum { PAT_HS, PAT_PCRE, PAT_DUP };

typedef struct msub {
    uint32_t id;
    uint32_t n;
    char **text; /* [n] copies */
    uint32_t *len;
    uint8_t *kind;     /* PAT_*; PAT_DUP: same text as an earlier pattern, never run */
    char **expr;       /* [n] the Hyperscan expression of a PAT_HS pattern, else NULL */
    pcre2_code **code; /* [n] NULL for PAT_DUP; with JIT code for PAT_PCRE, without for PAT_HS */
    bool *jit;         /* [n] code has JIT code */
    pcre2_code **young_code; /* [n] JIT twins of the PAT_HS codes while young; NULL once not */
    uint64_t *covered;     /* [n] mu: stamp of the last snapshot a full shard of which covers it */
    uint64_t *young_cov;   /* [n] mu: the same for young shards */
    size_t pcre_bytes;     /* mu: its codes and their JIT code */
    unsigned refs;         /* mu: the set's list, snapshots, shard pairs, compactions */
    unsigned young_shards; /* mu: its young shards in the set's list */
    unsigned young_snaps;  /* mu: snapshots that use young_code */
    mkey *keys;            /* [n] a keyed subscription's key per PAT_HS pattern */
    bool keyed;            /* matched through keys (matcher.h); decided when added */
    /* [n] every PAT_HS pattern's shape (matcher_keys.h), or NULL when one
     * has none: a keyed subscription with shapes is decided by them
     * instead of a scan of its own shard. Set before it is listed. */
    mkey_shape *shapes;
    bool live;     /* mu: in the set */
    int32_t dense; /* mu: index in the snapshot being built */
} msub;

typedef struct spair {
    msub *sub; /* holds a reference once the shard is listed */
    uint32_t pattern;
} spair;

typedef struct shard {
    hs_database_t *db;
    uint64_t serial; /* set when listed: readers size their scratch by it */
    uint32_t nexpr;
    uint32_t *first; /* [nexpr + 1]: expression e's pairs are pairs[first[e], first[e+1]) */
    spair *pairs;
    uint32_t npairs;
    size_t db_bytes;
    bool young;
    bool keyed;          /* a keyed subscription's own: never compacted */
    unsigned refs;       /* mu: the set's list and snapshots */
    uint32_t live_pairs; /* mu: as of the last snapshot built */
} shard;

typedef struct pcre_pair {
    int32_t dense;
    uint32_t pattern;
    bool young; /* a Hyperscan pattern of a young subscription */
} pcre_pair;

typedef struct pcre_entry {
    const pcre2_code *code;
    bool jit;
    uint32_t first; /* pairs [first, next entry's first) */
} pcre_entry;

typedef struct snap {
    uint64_t gen;        /* moves with every snapshot */
    uint64_t version;    /* moves with adds and removes */
    uint64_t max_serial; /* of its shards */
    uint32_t nsubs;
    uint32_t *ids; /* [nsubs] dense -> subscription id */
    msub **subs;   /* [nsubs] dense -> msub (a reference each) */
    uint32_t nshards;
    uint32_t nfull;  /* shards[0, nfull) are full; the rest young, by subscription */
    shard **shards;  /* a reference each */
    int32_t **dense; /* per shard, per pair: the dense index, or -1 */
    int32_t *dense_block;
    uint32_t *young_lo, *young_hi; /* [nsubs] the subscription's young shards */
    uint32_t nentries;
    pcre_entry *entries; /* [nentries + 1], the last a sentinel */
    pcre_pair *ppairs;
    mkey_index keys; /* keyed subscriptions' patterns, by key -> dense index */
    uint32_t nkeyed;
    msub **young_users; /* the subscriptions whose young_code it uses */
    uint32_t nyoung_users;
    struct snap *next; /* mu: the retired list */
} snap;

struct matcher_set {
    matcher_limits lim;
    bool hs;
    pthread_mutex_t mu;
    pthread_mutex_t compact_mu;
    _Atomic(snap *) cur;
    snap *retired;           /* mu */
    matcher_reader *readers; /* mu */
    msub **subs;             /* mu: live subscriptions */
    size_t nsubs, cap_subs;
    shard **shards; /* mu: the current shards */
    size_t nshards, cap_shards;
    uint64_t gen, version, serial, stamp, compactions; /* mu */
    uint64_t key_seed;
};

typedef struct mlog_rec {
    uint32_t topic, id; /* a match, in the order found */
} mlog_rec;

typedef struct blog_rec {
    uint32_t topic;
    int32_t dense;
    matcher_breach breach; /* a first breach; reported if no match follows */
} blog_rec;

struct matcher_reader {
    matcher_set *set;
    _Atomic(snap *) hazard;
    matcher_reader *next;  /* set->mu */
    uint64_t gen;          /* the snapshot the buffers are sized for */
    uint64_t sized_serial; /* the scratch fits every shard up to this serial */
    hs_scratch_t *scratch;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    /* Per (topic of the batch, dense index): ST_* bits, rows cap_subs
     * wide; all 0 between matches (touched lists what to clear). */
    uint8_t *state;
    size_t cap_subs;
    size_t *touched;
    size_t ntouched, cap_touched;
    uint32_t nmatched[MATCHER_BATCH_MAX]; /* per topic of the batch */
    mlog_rec *mlog;
    size_t nmlog, cap_mlog;
    blog_rec *blog;
    size_t nblog, cap_blog;
    /* The answers, per topic in turn (matcher_result points into them). */
    uint32_t *ids;
    size_t cap_ids;
    matcher_breach *breaches;
    size_t cap_breaches;
    /* The scan in progress, for the match callback. */
    const snap *s;
    const int32_t *sh_dense;
    const uint32_t *sh_first;
    uint32_t topic;
    bool oom; /* a log could not grow: the batch fails with PB_ENOMEM */
};

/* --- matcher_snap.c; all with set->mu held, except on objects no other
 * thread can see yet. --- */

/* A PCRE2 code's size with its JIT code; whether it has JIT code. */
size_t pcre_code_bytes(const pcre2_code *code);
bool pcre_code_has_jit(const pcre2_code *code);

void msub_free(msub *ms);
/* Patterns a subscription may have for its shapes to be kept: each costs
 * sizeof(mkey_shape) (168 bytes), so at most ~2.7 KB a subscription, ~2.8
 * MB for 1,024 of them (matcher_stats.shape_bytes). More patterns: its
 * shard decides, as before. */
#define MSUB_SHAPES_MAX 16u

/* ms->shapes, from its PAT_HS patterns (left NULL when one has no shape,
 * it has more than MSUB_SHAPES_MAX patterns, or out of memory: its shard
 * decides). */
void msub_shape(msub *ms);
void msub_unref(msub *ms); /* frees at the last reference; NULL-safe */
/* Frees the JIT twins of a subscription that is young no more, once no
 * snapshot uses them. */
void msub_drop_young_code(msub *ms);

void shard_free(shard *sh); /* drops its pairs' references */
void shard_unref(shard *sh);

/* The snapshot of the set as it is now (taking its references, and the
 * next generation), or PB_ENOMEM. */
int snap_build(matcher_set *set, uint64_t version, snap **out);
void snap_free(snap *s);

/* Builds and publishes the set's snapshot, retiring the current one. On
 * failure (PB_ENOMEM) the current snapshot stays. */
int matcher_publish(matcher_set *set, uint64_t version);

/* Frees the retired snapshots no reader holds. */
void matcher_reclaim(matcher_set *set);

/* --- matcher_shards.c: compiling shards (no lock: the items hold
 * references on their msubs), listing them (mu held) ------------------ */

/* One pattern of a subscription to compile; refused: Hyperscan refused
 * its expression (PCRE2 runs it). */
typedef struct shard_item {
    const char *expr;
    msub *sub;
    uint32_t pattern;
    bool refused;
} shard_item;

/* qsort's order for items: by expression, then subscription id, then
 * pattern. */
int shard_item_cmp(const void *a, const void *b);

typedef struct shard_list {
    shard **v;
    size_t n, cap;
} shard_list;

/* Packs items (sorted by expression) into shards of at most
 * lim.shard_patterns distinct expressions, appended to out; refused
 * expressions flag their items. The shards' pairs take no references
 * (shard_enlist takes them). */
int make_shards(const matcher_set *set, shard_item *items, size_t n, bool young, shard_list *out);
/* Frees a shard whose pairs took no references (never listed). NULL-safe. */
void shard_discard(shard *sh);
/* Lists a new shard (mu held): its pairs take their references. */
void shard_enlist(matcher_set *set, shard *sh);

#endif
