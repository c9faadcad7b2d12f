/*
 * matcher_shards - the matcher's Hyperscan shards (see matcher_snap.h):
 * compiling expressions into shards (a new subscription's young ones, on
 * the caller's thread, and a compaction's full ones), listing them, and
 * compaction, which merges young, mostly dead or under-full shards into
 * full ones, a bounded round at a time.
 *
 * Threads and locks: compiling takes no lock (the items hold references
 * on their subscriptions); listing runs under set->mu; a compaction holds
 * set->compact_mu throughout, set->mu only to pick its inputs and to
 * publish its result (matcher.c describes both locks).
 */
#include "matcher_snap.h"

#include "grow.h"
#include "hsdb.h"
#include "pb_errors.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* shards in the list (set->mu) */

/* Lists a new shard (mu held): its pairs take their references. */
void shard_enlist(matcher_set *set, shard *sh)
{
    for (uint32_t k = 0; k < sh->npairs; k++)
        sh->pairs[k].sub->refs++;
    if (sh->young)
        sh->pairs[0].sub->young_shards++;
    sh->serial = ++set->serial;
    sh->refs = 1;
    set->shards[set->nshards++] = sh;
}

/* ------------------------------------------------------------------ */
/* building shards (no lock: the items hold references on their msubs) */

int shard_item_cmp(const void *a, const void *b)
{
    const shard_item *x = a, *y = b;
    int c = strcmp(x->expr, y->expr);
    if (c)
        return c;
    if (x->sub->id != y->sub->id)
        return x->sub->id < y->sub->id ? -1 : 1;
    return x->pattern < y->pattern ? -1 : x->pattern > y->pattern;
}

static int shard_list_push(shard_list *l, shard *sh)
{
    if (grow_reserve(&l->v, &l->cap, l->n + 1, sizeof *l->v) < 0)
        return PB_ENOMEM;
    l->v[l->n++] = sh;
    return 0;
}

/* Frees a shard whose pairs took no references (never listed). */
void shard_discard(shard *sh)
{
    if (sh) {
        sh->npairs = 0;
        shard_free(sh);
    }
}

/*
 * Compiles ng distinct expressions into one shard: expression g is
 * items[group[g]].expr, and its pairs are items[group[g], group[g+1]). On
 * a failure that is not one expression's, compiles each half on its own.
 * Refused expressions flag their items. The shard's pairs take no
 * references (the caller takes them when it lists the shard).
 */
static int compile_groups(shard_item *items, const size_t *group, size_t ng, bool young,
                          shard_list *out)
{
    int rc = PB_ENOMEM;
    const char **exprs = calloc(ng, sizeof *exprs);
    bool *refused = malloc(ng * sizeof *refused);
    shard *sh = NULL;
    hs_database_t *db = NULL;

    if (!exprs || !refused)
        goto out;
    for (size_t g = 0; g < ng; g++)
        exprs[g] = items[group[g]].expr;
    rc = hsdb_compile(exprs, ng, refused, &db);
    if (rc == PB_ETOOBIG && ng > 1) {
        size_t half = ng / 2;
        rc = compile_groups(items, group, half, young, out);
        if (rc == 0)
            rc = compile_groups(items, group + half, ng - half, young, out);
        goto out;
    }
    if (rc == PB_ETOOBIG) {
        refused[0] = true; /* too large alone: PCRE2 runs it */
        rc = 0;
    }
    if (rc < 0)
        goto out;
    uint32_t npairs = 0;
    for (size_t g = 0; g < ng; g++) {
        for (size_t k = group[g]; k < group[g + 1]; k++)
            items[k].refused = refused[g];
        if (!refused[g])
            npairs += (uint32_t)(group[g + 1] - group[g]);
    }
    if (!db)
        goto out; /* every expression refused: no shard */
    rc = PB_ENOMEM;
    sh = calloc(1, sizeof *sh);
    if (!sh)
        goto out;
    /* Hyperscan reports id g (the index among the ng expressions passed,
     * refused ones included); a refused one gets an empty range. */
    sh->first = malloc((ng + 1) * sizeof *sh->first);
    sh->pairs = malloc((npairs ? npairs : 1) * sizeof *sh->pairs);
    if (!sh->first || !sh->pairs)
        goto out;
    uint32_t k2 = 0;
    for (size_t g = 0; g < ng; g++) {
        sh->first[g] = k2;
        if (!refused[g])
            for (size_t k = group[g]; k < group[g + 1]; k++)
                sh->pairs[k2++] = (spair){.sub = items[k].sub, .pattern = items[k].pattern};
    }
    sh->first[ng] = k2;
    sh->nexpr = (uint32_t)ng;
    sh->npairs = npairs;
    sh->young = young;
    if (hs_database_size(db, &sh->db_bytes) != HS_SUCCESS)
        sh->db_bytes = 0;
    sh->db = db;
    db = NULL;
    rc = shard_list_push(out, sh);
    if (rc == 0)
        sh = NULL;
out:
    shard_discard(sh);
    hs_free_database(db);
    free(exprs);
    free(refused);
    return rc;
}

/* Packs items (sorted by expression) into shards of at most
 * lim.shard_patterns distinct expressions. */
int make_shards(const matcher_set *set, shard_item *items, size_t n, bool young, shard_list *out)
{
    int rc = 0;
    size_t *group = malloc((n + 1) * sizeof *group);
    size_t ng = 0;
    if (!group)
        return PB_ENOMEM;
    for (size_t k = 0; k < n; k++)
        if (k == 0 || strcmp(items[k].expr, items[k - 1].expr) != 0)
            group[ng++] = k;
    group[ng] = n;
    for (size_t g = 0; g < ng && rc == 0; g += set->lim.shard_patterns) {
        size_t m = ng - g < set->lim.shard_patterns ? ng - g : set->lim.shard_patterns;
        rc = compile_groups(items, group + g, m, young, out);
    }
    free(group);
    return rc;
}

/* ------------------------------------------------------------------ */
/* compaction */

/* A shard compaction rewrites: young, more than half dead, or less than
 * half full. */
static bool shard_forced(const shard *sh)
{
    return sh->young || sh->live_pairs * 2 < sh->npairs;
}

static bool shard_underfull(const matcher_set *set, const shard *sh)
{
    return (uint64_t)sh->nexpr * 2 < set->lim.shard_patterns;
}

/* Picks the compaction's inputs into in[] (room for nshards), in list
 * order (the oldest young shards first), until they hold
 * COMPACT_ROUND_SHARDS full shards' worth of live pairs: a round is
 * bounded, and publishes its progress. None when the only candidate is one
 * under-full shard, which would come out the same. mu held. */
#define COMPACT_ROUND_SHARDS 4

static size_t pick_inputs(const matcher_set *set, shard **in)
{
    size_t n = 0, forced = 0;
    uint64_t pairs = 0, cap = (uint64_t)COMPACT_ROUND_SHARDS * set->lim.shard_patterns;
    for (size_t i = 0; i < set->nshards && pairs < cap; i++) {
        shard *sh = set->shards[i];
        if (sh->keyed)
            continue; /* a keyed subscription's own, for good */
        if (shard_forced(sh) || shard_underfull(set, sh)) {
            forced += shard_forced(sh);
            pairs += sh->live_pairs;
            if (in)
                in[n] = sh;
            n++;
        }
    }
    return forced == 0 && n < 2 ? 0 : n;
}

bool matcher_set_compact_wanted(matcher_set *set)
{
    pthread_mutex_lock(&set->mu);
    bool wanted = set->hs && pick_inputs(set, NULL) > 0;
    pthread_mutex_unlock(&set->mu);
    return wanted;
}

/* Out of the list with the inputs of a compaction that are still listed
 * (a removed subscription's young shard may have left already). mu held. */
static void unlist_inputs(matcher_set *set, shard *const *in, size_t nin)
{
    size_t nkeep = 0;
    for (size_t i = 0; i < set->nshards; i++) {
        bool input = false;
        for (size_t j = 0; j < nin && !input; j++)
            input = set->shards[i] == in[j];
        if (!input)
            set->shards[nkeep++] = set->shards[i];
    }
    set->nshards = nkeep;
}

/* After a published compaction: the shards of the old list (saved) that
 * left it drop the list's reference. mu held. */
static void release_unlisted(matcher_set *set, shard *const *saved, size_t nsaved)
{
    for (size_t i = 0; i < nsaved; i++) {
        bool kept = false;
        for (size_t j = 0; j < set->nshards && !kept; j++)
            kept = set->shards[j] == saved[i];
        if (kept)
            continue;
        if (saved[i]->young) {
            msub *ys = saved[i]->pairs[0].sub; /* alive: the shard holds it */
            ys->young_shards--;
            msub_drop_young_code(ys);
        }
        shard_unref(saved[i]);
    }
}

/* One compaction round: its inputs and what it compiled from them. */
typedef struct compact_round {
    shard **in; /* the input shards, each referenced */
    size_t nin;
    shard_item *items; /* their live pairs, each item's msub referenced */
    size_t nitems;
    shard_list outs; /* the compiled shards, not listed yet */
} compact_round;

/* Picks the round's inputs and an item for each of their live pairs, with
 * references: on the inputs, to know them again when publishing, and on
 * the subscriptions of their live pairs, for the compile. Takes mu. */
static int round_take(matcher_set *set, compact_round *r)
{
    int rc = PB_ENOMEM;
    size_t nin, live = 0;

    pthread_mutex_lock(&set->mu);
    r->in = malloc((set->nshards + 1) * sizeof *r->in);
    if (!r->in)
        goto out;
    nin = pick_inputs(set, r->in);
    for (size_t i = 0; i < nin; i++)
        for (uint32_t k = 0; k < r->in[i]->npairs; k++)
            live += r->in[i]->pairs[k].sub->live;
    r->items = malloc((live + 1) * sizeof *r->items);
    if (!r->items)
        goto out;
    r->nin = nin;
    for (size_t i = 0; i < nin; i++) {
        shard *sh = r->in[i];
        sh->refs++;
        for (uint32_t k = 0; k < sh->npairs; k++) {
            msub *ms = sh->pairs[k].sub;
            if (!ms->live)
                continue;
            ms->refs++;
            r->items[r->nitems++] = (shard_item){
                .expr = ms->expr[sh->pairs[k].pattern], .sub = ms, .pattern = sh->pairs[k].pattern};
        }
    }
    rc = 0;
out:
    pthread_mutex_unlock(&set->mu);
    return rc;
}

/* Lists the compiled shards instead of the inputs still listed and
 * publishes; on a failure the list is as it was. Takes mu. */
static int round_install(matcher_set *set, compact_round *r)
{
    int rc = PB_ENOMEM;

    pthread_mutex_lock(&set->mu);
    shard **saved = malloc((set->nshards + 1) * sizeof *saved);
    if (saved && grow_reserve(&set->shards, &set->cap_shards, set->nshards + r->outs.n,
                              sizeof *set->shards) == 0) {
        size_t nsaved = set->nshards;
        memcpy(saved, set->shards, nsaved * sizeof *saved);
        unlist_inputs(set, r->in, r->nin);
        for (size_t i = 0; i < r->outs.n; i++)
            shard_enlist(set, r->outs.v[i]);
        rc = matcher_publish(set, set->version);
        if (rc == 0) {
            release_unlisted(set, saved, nsaved);
            set->compactions++;
        } else {
            memcpy(set->shards, saved, nsaved * sizeof *saved);
            set->nshards = nsaved;
            for (size_t i = 0; i < r->outs.n; i++)
                shard_unref(r->outs.v[i]);
        }
        r->outs.n = 0;
    }
    pthread_mutex_unlock(&set->mu);
    free(saved);
    return rc;
}

/* Drops what the round holds: shards compiled but not listed, and the
 * references round_take took (under mu). */
static void round_release(matcher_set *set, compact_round *r)
{
    for (size_t i = 0; i < r->outs.n; i++)
        shard_discard(r->outs.v[i]);
    free(r->outs.v);
    if (r->nin || r->nitems) {
        pthread_mutex_lock(&set->mu);
        for (size_t i = 0; i < r->nin; i++)
            shard_unref(r->in[i]);
        for (size_t k = 0; k < r->nitems; k++)
            msub_unref(r->items[k].sub);
        pthread_mutex_unlock(&set->mu);
    }
    free(r->in);
    free(r->items);
}

int matcher_set_compact(matcher_set *set)
{
    compact_round r = {0};

    pthread_mutex_lock(&set->compact_mu);
    int rc = round_take(set, &r);
    if (rc == 0 && r.nin > 0) {
        /* The slow part, with no lock held. */
        qsort(r.items, r.nitems, sizeof *r.items, shard_item_cmp);
        rc = make_shards(set, r.items, r.nitems, false, &r.outs);
        /* An expression Hyperscan refuses in a full shard (it took it in a
         * young one: rare, a resource limit) is no longer covered; the
         * snapshot then runs its PCRE2 code, without JIT. */
        if (rc == 0)
            rc = round_install(set, &r);
    }
    round_release(set, &r);
    pthread_mutex_unlock(&set->compact_mu);
    return rc;
}
