/*
 * matcher_snap - the matcher's shared objects (see matcher_snap.h):
 * reference counting of subscriptions and shards, and building,
 * publishing and reclaiming snapshots. Everything here runs on the writer
 * side, under set->mu.
 */
#include "matcher_snap.h"

#include "pb_errors.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* subscriptions and shards (reference counts: set->mu) */

size_t pcre_code_bytes(const pcre2_code *code)
{
    size_t size = 0, jit = 0;
    (void)pcre2_pattern_info(code, PCRE2_INFO_SIZE, &size);
    (void)pcre2_pattern_info(code, PCRE2_INFO_JITSIZE, &jit);
    return size + jit;
}

bool pcre_code_has_jit(const pcre2_code *code)
{
    size_t jit = 0;
    return pcre2_pattern_info(code, PCRE2_INFO_JITSIZE, &jit) == 0 && jit > 0;
}

void msub_free(msub *ms)
{
    if (!ms)
        return;
    for (uint32_t i = 0; i < ms->n; i++) {
        free(ms->text ? ms->text[i] : NULL);
        free(ms->expr ? ms->expr[i] : NULL);
        if (ms->code)
            pcre2_code_free(ms->code[i]);
        if (ms->young_code)
            pcre2_code_free(ms->young_code[i]);
    }
    free(ms->text);
    free(ms->len);
    free(ms->kind);
    free(ms->expr);
    free(ms->code);
    free(ms->jit);
    free(ms->young_code);
    free(ms->covered);
    free(ms->young_cov);
    free(ms->keys);
    free(ms->shapes);
    free(ms);
}

void msub_shape(msub *ms)
{
    bool any = false;
    if (ms->n > MSUB_SHAPES_MAX)
        return;
    mkey_shape *sh = malloc(((size_t)ms->n + 1) * sizeof *sh);
    for (uint32_t i = 0; sh && i < ms->n; i++) {
        if (ms->kind[i] != PAT_HS)
            continue;
        if (!mkey_shape_parse(ms->text[i], ms->len[i], &sh[i])) {
            free(sh);
            return;
        }
        any = true;
    }
    if (any)
        ms->shapes = sh;
    else
        free(sh);
}

void msub_unref(msub *ms)
{
    if (ms && --ms->refs == 0)
        msub_free(ms);
}

/* Frees the JIT twins of a subscription that is young no more (or keyed:
 * its shards decide), once no snapshot uses them. */
void msub_drop_young_code(msub *ms)
{
    if (!ms->young_code || (ms->young_shards && !ms->keyed) || ms->young_snaps)
        return;
    for (uint32_t i = 0; i < ms->n; i++) {
        if (ms->young_code[i]) {
            ms->pcre_bytes -= pcre_code_bytes(ms->young_code[i]);
            pcre2_code_free(ms->young_code[i]);
        }
    }
    free(ms->young_code);
    ms->young_code = NULL;
}

void shard_free(shard *sh)
{
    if (!sh)
        return;
    for (uint32_t k = 0; k < sh->npairs; k++)
        msub_unref(sh->pairs[k].sub);
    hs_free_database(sh->db);
    free(sh->first);
    free(sh->pairs);
    free(sh);
}

void shard_unref(shard *sh)
{
    if (sh && --sh->refs == 0)
        shard_free(sh);
}

/* ------------------------------------------------------------------ */
/* snapshots (built and freed under set->mu) */

void snap_free(snap *s)
{
    if (!s)
        return;
    for (uint32_t i = 0; i < s->nyoung_users; i++) {
        s->young_users[i]->young_snaps--;
        msub_drop_young_code(s->young_users[i]);
    }
    for (uint32_t i = 0; i < s->nsubs; i++)
        msub_unref(s->subs[i]);
    for (uint32_t i = 0; i < s->nshards; i++)
        shard_unref(s->shards[i]);
    free(s->ids);
    free(s->subs);
    free(s->shards);
    free(s->dense);
    free(s->dense_block);
    free(s->young_lo);
    free(s->young_hi);
    free(s->entries);
    free(s->ppairs);
    free(s->young_users);
    mkey_index_free(&s->keys);
    free(s);
}

typedef struct pending {
    const char *text;
    uint32_t len;
    int32_t dense;
    uint32_t pattern;
    const pcre2_code *code;
    bool jit, young;
} pending;

static int pending_text_cmp(const pending *x, const pending *y)
{
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return memcmp(x->text, y->text, x->len);
}

static int pending_cmp(const void *a, const void *b)
{
    const pending *x = a, *y = b;
    int c = pending_text_cmp(x, y);
    if (c)
        return c;
    if (x->dense != y->dense)
        return x->dense < y->dense ? -1 : 1;
    return x->pattern < y->pattern ? -1 : x->pattern > y->pattern;
}

static int young_shard_cmp(const void *a, const void *b)
{
    const shard *x = *(shard *const *)a, *y = *(shard *const *)b;
    int32_t dx = x->pairs[0].sub->dense, dy = y->pairs[0].sub->dense;
    return dx < dy ? -1 : dx > dy;
}

/* Orders the shards (full ones first, then the young ones by
 * subscription) and maps their pairs to dense indices, stamping what they
 * cover. */
static void snap_shards(matcher_set *set, snap *s, uint64_t stamp)
{
    uint32_t nfull = 0, ny = 0;
    for (size_t i = 0; i < set->nshards; i++)
        if (!set->shards[i]->young)
            s->shards[nfull++] = set->shards[i];
    for (size_t i = 0; i < set->nshards; i++)
        if (set->shards[i]->young)
            s->shards[nfull + ny++] = set->shards[i];
    qsort(s->shards + nfull, ny, sizeof *s->shards, young_shard_cmp);
    s->nfull = nfull;
    for (uint32_t d = 0; d < s->nsubs; d++)
        s->young_lo[d] = s->young_hi[d] = 0;
    int32_t *dense = s->dense_block;
    for (uint32_t i = 0; i < s->nshards; i++) {
        shard *sh = s->shards[i];
        uint32_t live = 0;
        s->dense[i] = dense;
        for (uint32_t k = 0; k < sh->npairs; k++) {
            msub *ms = sh->pairs[k].sub;
            dense[k] = ms->live ? ms->dense : -1;
            if (!ms->live)
                continue;
            live++;
            if (sh->young)
                ms->young_cov[sh->pairs[k].pattern] = stamp;
            else
                ms->covered[sh->pairs[k].pattern] = stamp;
        }
        if (sh->young && sh->npairs && sh->pairs[0].sub->live) {
            int32_t d = sh->pairs[0].sub->dense;
            if (s->young_hi[d] == 0)
                s->young_lo[d] = i;
            s->young_hi[d] = i + 1;
        }
        sh->live_pairs = live;
        dense += sh->npairs;
        if (sh->serial > s->max_serial)
            s->max_serial = sh->serial;
    }
}

/* A keyed subscription's Hyperscan pattern: its own shard decides it, found
 * through the key index, never PCRE2. */
static bool keyed_pattern(const msub *ms, uint32_t p, uint64_t stamp)
{
    return ms->keyed && ms->kind[p] == PAT_HS && ms->young_cov[p] == stamp;
}

/* The key index: every keyed pattern's key, with its subscription. */
static int snap_keys(matcher_set *set, snap *s, uint64_t stamp)
{
    size_t n = 0;
    for (uint32_t i = 0; i < s->nsubs; i++)
        for (uint32_t p = 0; p < s->subs[i]->n; p++)
            n += keyed_pattern(s->subs[i], p, stamp);
    const mkey **keys = malloc((n + 1) * sizeof *keys);
    int32_t *dense = malloc((n + 1) * sizeof *dense);
    int rc = PB_ENOMEM;
    if (keys && dense) {
        n = 0;
        for (uint32_t i = 0; i < s->nsubs; i++) {
            const msub *ms = s->subs[i];
            s->nkeyed += ms->keyed;
            for (uint32_t p = 0; p < ms->n; p++) {
                if (keyed_pattern(ms, p, stamp)) {
                    keys[n] = &ms->keys[p];
                    dense[n++] = (int32_t)i;
                }
            }
        }
        rc = mkey_index_build(&s->keys, set->key_seed, keys, dense, n);
    }
    free(keys);
    free(dense);
    return rc;
}

/* The PCRE2 patterns: every pattern of a live subscription no full shard
 * covers (PCRE2-only ones, Hyperscan's refusals, a young subscription's,
 * all of them without Hyperscan) and no key finds, grouped by text. */
static int snap_pcre(snap *s, uint64_t stamp)
{
    size_t npend = 0, nusers = 0;
    for (uint32_t i = 0; i < s->nsubs; i++) {
        const msub *ms = s->subs[i];
        bool user = false;
        for (uint32_t p = 0; p < ms->n; p++) {
            if (ms->kind[p] == PAT_DUP || ms->covered[p] == stamp || keyed_pattern(ms, p, stamp))
                continue;
            npend++;
            user |= ms->young_cov[p] == stamp;
        }
        nusers += user;
    }
    pending *pend = malloc((npend + 1) * sizeof *pend);
    s->ppairs = malloc((npend + 1) * sizeof *s->ppairs);
    s->entries = malloc((npend + 1) * sizeof *s->entries);
    s->young_users = malloc((nusers + 1) * sizeof *s->young_users);
    if (!pend || !s->ppairs || !s->entries || !s->young_users) {
        free(pend);
        return PB_ENOMEM;
    }
    npend = 0;
    for (uint32_t i = 0; i < s->nsubs; i++) {
        msub *ms = s->subs[i];
        bool user = false;
        for (uint32_t p = 0; p < ms->n; p++) {
            if (ms->kind[p] == PAT_DUP || ms->covered[p] == stamp || keyed_pattern(ms, p, stamp))
                continue;
            bool young = ms->young_cov[p] == stamp;
            /* Young: the JIT twin, for speed until compaction. */
            const pcre2_code *code = young ? ms->young_code[p] : ms->code[p];
            pend[npend++] = (pending){.text = ms->text[p],
                                      .len = ms->len[p],
                                      .dense = (int32_t)i,
                                      .pattern = p,
                                      .code = code,
                                      .jit = young ? pcre_code_has_jit(code) : ms->jit[p],
                                      .young = young};
            user |= young;
        }
        if (user)
            s->young_users[s->nyoung_users++] = ms;
    }
    qsort(pend, npend, sizeof *pend, pending_cmp);
    s->nentries = 0;
    for (size_t k = 0; k < npend; k++) {
        if (k == 0 || pending_text_cmp(&pend[k], &pend[k - 1]) != 0)
            s->entries[s->nentries++] =
                (pcre_entry){.code = pend[k].code, .jit = pend[k].jit, .first = (uint32_t)k};
        else if (!s->entries[s->nentries - 1].jit && pend[k].jit)
            s->entries[s->nentries - 1].code = pend[k].code, s->entries[s->nentries - 1].jit = true;
        s->ppairs[k] =
            (pcre_pair){.dense = pend[k].dense, .pattern = pend[k].pattern, .young = pend[k].young};
    }
    s->entries[s->nentries] = (pcre_entry){.first = (uint32_t)npend};
    free(pend);
    return 0;
}

/* The snapshot of the set as it is now. */
int snap_build(matcher_set *set, uint64_t version, snap **out)
{
    snap *s = calloc(1, sizeof *s);
    uint64_t stamp = ++set->stamp;
    size_t total = 0;

    if (!s)
        return PB_ENOMEM;
    s->version = version;
    s->nsubs = (uint32_t)set->nsubs;
    s->nshards = (uint32_t)set->nshards;
    for (size_t i = 0; i < set->nshards; i++)
        total += set->shards[i]->npairs;
    s->ids = malloc((s->nsubs + 1) * sizeof *s->ids);
    s->subs = malloc((s->nsubs + 1) * sizeof *s->subs);
    s->young_lo = malloc((s->nsubs + 1) * sizeof *s->young_lo);
    s->young_hi = malloc((s->nsubs + 1) * sizeof *s->young_hi);
    s->shards = malloc((s->nshards + 1) * sizeof *s->shards);
    s->dense = malloc((s->nshards + 1) * sizeof *s->dense);
    s->dense_block = malloc((total + 1) * sizeof *s->dense_block);
    if (!s->ids || !s->subs || !s->young_lo || !s->young_hi || !s->shards || !s->dense ||
        !s->dense_block)
        goto fail;
    for (uint32_t i = 0; i < s->nsubs; i++) {
        msub *ms = set->subs[i];
        ms->dense = (int32_t)i;
        s->ids[i] = ms->id;
        s->subs[i] = ms;
    }
    snap_shards(set, s, stamp);
    if (snap_keys(set, s, stamp) < 0 || snap_pcre(s, stamp) < 0)
        goto fail;
    /* Success: take the references and the generation. */
    for (uint32_t i = 0; i < s->nsubs; i++)
        s->subs[i]->refs++;
    for (uint32_t i = 0; i < s->nshards; i++)
        s->shards[i]->refs++;
    for (uint32_t i = 0; i < s->nyoung_users; i++)
        s->young_users[i]->young_snaps++;
    s->gen = ++set->gen;
    *out = s;
    return 0;
fail:
    s->nsubs = s->nshards = s->nyoung_users = 0; /* no reference was taken */
    snap_free(s);
    return PB_ENOMEM;
}

void matcher_reclaim(matcher_set *set)
{
    /* Pairs with the reader's store to its hazard slot and re-check of
     * set->cur (acquire in matcher_read.c): a reader that still uses a
     * retired snapshot is seen here. */
    atomic_thread_fence(memory_order_seq_cst);
    snap **link = &set->retired;
    while (*link) {
        snap *s = *link;
        bool used = false;
        for (matcher_reader *r = set->readers; r && !used; r = r->next)
            used = atomic_load_explicit(&r->hazard, memory_order_seq_cst) == s;
        if (used) {
            link = &s->next;
        } else {
            *link = s->next;
            snap_free(s);
        }
    }
}

/* Builds and publishes the set's snapshot. mu held. On failure the
 * current snapshot stays. */
int matcher_publish(matcher_set *set, uint64_t version)
{
    snap *s;
    int rc = snap_build(set, version, &s);
    if (rc < 0)
        return rc;
    snap *old = atomic_exchange_explicit(&set->cur, s, memory_order_seq_cst);
    old->next = set->retired;
    set->retired = old;
    matcher_reclaim(set);
    return 0;
}
