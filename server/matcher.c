/*
 * matcher - the combined topic matcher's writer side (see matcher.h; the
 * objects are described in matcher_snap.h, snapshots are built in
 * matcher_snap.c, shards are compiled and compacted in matcher_shards.c,
 * the reader side is in matcher_read.c): subscriptions come and go, each
 * change publishes a new immutable snapshot.
 *
 * Threads and locks: set->mu guards every writer-side field (the lists,
 * the reference counts, the msub fields marked mu, the readers list and
 * the retired snapshots). Matching never takes it: a reader loads set->cur
 * into its hazard slot and checks it is still current; a retired snapshot
 * is freed, under mu, only when no hazard slot holds it. set->compact_mu
 * keeps one compaction at a time. The slow work runs with neither lock
 * held: PCRE2 and Hyperscan compiles of an added subscription (on the
 * caller's thread), and a compaction's Hyperscan compiles (which holds
 * references on its inputs meanwhile).
 */
#include "matcher_snap.h"

#include "grow.h"
#include "hsdb.h"
#include "pb_errors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

matcher_limits matcher_limits_default(void)
{
    return (matcher_limits){
        .match_limit = MATCHER_MATCH_LIMIT_DEFAULT,
        .depth_limit = MATCHER_DEPTH_LIMIT_DEFAULT,
        .heap_limit_kib = MATCHER_HEAP_LIMIT_KIB_DEFAULT,
        .max_pcre_patterns = MATCHER_MAX_PCRE_DEFAULT,
        .shard_patterns = MATCHER_SHARD_DEFAULT,
        .key_share = MATCHER_KEY_SHARE_DEFAULT,
        .hyperscan = true,
    };
}

/* ------------------------------------------------------------------ */
/* the set */

int matcher_set_create(matcher_set **out, const matcher_limits *lim)
{
    matcher_limits l = lim ? *lim : matcher_limits_default();
    if (l.match_limit == 0 || l.depth_limit == 0 || l.heap_limit_kib == 0 || l.shard_patterns == 0)
        return PB_EINVAL;
    matcher_set *set = calloc(1, sizeof *set);
    if (!set)
        return PB_ENOMEM;
    set->lim = l;
    set->hs = l.hyperscan && hsdb_available();
    /* Keys come from clients: a seed of their own for the index's hash
     * (a failed getrandom leaves the address's, still correct). */
    set->key_seed = (uint64_t)(uintptr_t)set;
    (void)getrandom(&set->key_seed, sizeof set->key_seed, GRND_NONBLOCK);
    pthread_mutex_init(&set->mu, NULL);
    pthread_mutex_init(&set->compact_mu, NULL);
    snap *s;
    if (snap_build(set, 0, &s) < 0) {
        pthread_mutex_destroy(&set->mu);
        pthread_mutex_destroy(&set->compact_mu);
        free(set);
        return PB_ENOMEM;
    }
    atomic_init(&set->cur, s);
    *out = set;
    return 0;
}

void matcher_set_destroy(matcher_set *set)
{
    if (!set)
        return;
    snap_free(atomic_load(&set->cur));
    while (set->retired) {
        snap *s = set->retired;
        set->retired = s->next;
        snap_free(s);
    }
    for (size_t i = 0; i < set->nshards; i++)
        shard_unref(set->shards[i]);
    for (size_t i = 0; i < set->nsubs; i++)
        msub_unref(set->subs[i]);
    free(set->shards);
    free(set->subs);
    pthread_mutex_destroy(&set->mu);
    pthread_mutex_destroy(&set->compact_mu);
    free(set);
}

static int cmp_text_index(const void *a, const void *b, void *arg)
{
    const msub *ms = arg;
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    if (ms->len[x] != ms->len[y])
        return ms->len[x] < ms->len[y] ? -1 : 1;
    int c = memcmp(ms->text[x], ms->text[y], ms->len[x]);
    return c ? c : (x < y ? -1 : x > y);
}

/* Marks each pattern equal to an earlier one PAT_DUP: O(n log n). */
static int mark_duplicates(msub *ms)
{
    if (ms->n < 2)
        return 0;
    uint32_t *order = malloc(ms->n * sizeof *order);
    if (!order)
        return PB_ENOMEM;
    for (uint32_t i = 0; i < ms->n; i++)
        order[i] = i;
    qsort_r(order, ms->n, sizeof *order, cmp_text_index, ms);
    for (uint32_t k = 1; k < ms->n; k++) {
        uint32_t a = order[k - 1], b = order[k];
        if (ms->len[a] == ms->len[b] && memcmp(ms->text[a], ms->text[b], ms->len[a]) == 0)
            ms->kind[b] = PAT_DUP; /* equal texts sort by index: b comes after a */
    }
    free(order);
    return 0;
}

/* Compiles every pattern with PCRE2 and classifies it. */
static int msub_new(const matcher_set *set, uint32_t id, const char *const *patterns, size_t n,
                    msub **out, char *err, size_t errlen)
{
    int rc = PB_ENOMEM;
    msub *ms = calloc(1, sizeof *ms);
    if (!ms || n > UINT32_MAX / 2)
        goto fail;
    ms->id = id;
    ms->refs = 1;
    size_t alloc = n ? n : 1;
    ms->text = calloc(alloc, sizeof *ms->text);
    ms->len = calloc(alloc, sizeof *ms->len);
    ms->kind = calloc(alloc, sizeof *ms->kind);
    ms->expr = calloc(alloc, sizeof *ms->expr);
    ms->code = calloc(alloc, sizeof *ms->code);
    ms->jit = calloc(alloc, sizeof *ms->jit);
    ms->young_code = calloc(alloc, sizeof *ms->young_code);
    ms->covered = calloc(alloc, sizeof *ms->covered);
    ms->young_cov = calloc(alloc, sizeof *ms->young_cov);
    ms->keys = calloc(alloc, sizeof *ms->keys);
    if (!ms->text || !ms->len || !ms->kind || !ms->expr || !ms->code || !ms->jit ||
        !ms->young_code || !ms->covered || !ms->young_cov || !ms->keys)
        goto fail;
    ms->n = (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(patterns[i]);
        if (len > UINT32_MAX)
            goto fail;
        ms->len[i] = (uint32_t)len;
        ms->text[i] = strdup(patterns[i]);
        if (!ms->text[i])
            goto fail;
    }
    rc = mark_duplicates(ms);
    if (rc < 0)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        if (ms->kind[i] == PAT_DUP)
            continue;
        char why[300];
        pcre2_code *code;
        /* The one definition of a whole-topic match (patterns.h); it
         * JIT-compiles where it can. */
        rc = pattern_compile_whole(ms->text[i], ms->len[i], &code, why, sizeof why);
        if (rc < 0) {
            if (rc == PB_EINVAL)
                pb_set_err(err, errlen, "pattern \"%s\": %s", ms->text[i], why);
            goto fail;
        }
        char expr[HSDB_EXPR_MAX];
        if (set->hs && hsdb_expr(ms->text[i], ms->len[i], expr, NULL, 0)) {
            /* Hyperscan runs it once compacted; PCRE2 only before that
             * (young_code, with JIT) or in a rare fallback: the permanent
             * code is a copy without JIT code (pcre2_code_copy leaves it
             * out), ~1 KB less per pattern. */
            ms->kind[i] = PAT_HS;
            ms->young_code[i] = code;
            ms->pcre_bytes += pcre_code_bytes(code);
            ms->expr[i] = strdup(expr);
            code = ms->expr[i] ? pcre2_code_copy(code) : NULL;
            rc = PB_ENOMEM;
            if (!code)
                goto fail;
        } else {
            ms->kind[i] = PAT_PCRE;
        }
        ms->code[i] = code;
        ms->jit[i] = pcre_code_has_jit(code);
        ms->pcre_bytes += pcre_code_bytes(code);
    }
    *out = ms;
    return 0;
fail:
    if (rc == PB_ENOMEM)
        pb_set_err(err, errlen, "out of memory compiling %zu pattern(s)", n);
    msub_free(ms);
    return rc;
}

/* Checks the PCRE2-only patterns against max_pcre_patterns. */
static int check_pcre_budget(const matcher_set *set, const msub *ms, char *err, size_t errlen)
{
    uint32_t count = 0, first = 0;
    for (uint32_t i = 0; i < ms->n; i++)
        if (ms->kind[i] == PAT_PCRE && count++ == 0)
            first = i;
    if (count <= set->lim.max_pcre_patterns)
        return 0;
    char why[200] = "Hyperscan refused it";
    char expr[HSDB_EXPR_MAX];
    if (!set->hs)
        snprintf(why, sizeof why, "Hyperscan is not in use");
    else
        (void)hsdb_expr(ms->text[first], ms->len[first], expr, why, sizeof why);
    pb_set_err(err, errlen,
               "%u patterns need the PCRE2 engine, at most %u per subscription (the first: pattern "
               "\"%s\": %s)",
               count, set->lim.max_pcre_patterns, ms->text[first], why);
    return PB_EINVAL;
}

static bool id_in_set(const matcher_set *set, uint32_t id, size_t *at)
{
    for (size_t i = 0; i < set->nsubs; i++) {
        if (set->subs[i]->id == id) {
            if (at)
                *at = i;
            return true;
        }
    }
    return false;
}

/* How many keyed patterns the current snapshot files under k (mu held);
 * UINT32_MAX when k is no key. */
static uint32_t key_users(const matcher_set *set, const mkey *k)
{
    uint32_t count = UINT32_MAX;
    if (k->side != MKEY_NONE) {
        const snap *cur = atomic_load_explicit(&set->cur, memory_order_relaxed);
        (void)mkey_index_get(&cur->keys, k->side, k->b, k->len, &count);
    }
    return count;
}

/* Makes ms keyed if each of its Hyperscan patterns has a key that fewer
 * than key_share patterns use (the prefix or the suffix one, whichever
 * fewer use; the longer on a tie): ms->keys gets them. keys[2i] and
 * keys[2i+1] are pattern i's prefix and suffix keys. mu held. */
static void choose_keys(const matcher_set *set, msub *ms, const mkey *keys)
{
    uint32_t nhs = 0;
    if (set->lim.key_share == 0)
        return;
    for (uint32_t i = 0; i < ms->n; i++) {
        if (ms->kind[i] != PAT_HS)
            continue;
        nhs++;
        const mkey *pk = &keys[2 * i], *sk = &keys[2 * i + 1];
        uint32_t cp = key_users(set, pk), cs = key_users(set, sk);
        const mkey *k = cp < cs || (cp == cs && pk->len >= sk->len) ? pk : sk;
        if ((k == pk ? cp : cs) >= set->lim.key_share)
            return; /* no key, or too common: compaction's shards match it */
        ms->keys[i] = *k;
    }
    ms->keyed = nhs > 0;
}

/* What Hyperscan refused (make_shards marked it) runs through PCRE2 for
 * good: its JIT twin becomes its code. */
static void adopt_refused(msub *ms, const shard_item *items, size_t nitems)
{
    for (size_t k = 0; k < nitems; k++) {
        uint32_t i = items[k].pattern;
        if (!items[k].refused)
            continue;
        ms->kind[i] = PAT_PCRE;
        ms->pcre_bytes -= pcre_code_bytes(ms->code[i]);
        pcre2_code_free(ms->code[i]);
        ms->code[i] = ms->young_code[i];
        ms->young_code[i] = NULL;
        ms->jit[i] = pcre_code_has_jit(ms->code[i]);
    }
}

/* A new subscription's own (young) shards, compiled here, on the caller's
 * thread (no lock); the patterns Hyperscan refuses keep their PCRE2 code. */
static int compile_young(const matcher_set *set, msub *ms, shard_list *young)
{
    size_t nitems = 0;
    shard_item *items = malloc((ms->n + 1) * sizeof *items);
    if (!items)
        return PB_ENOMEM;
    for (uint32_t i = 0; i < ms->n; i++)
        if (ms->kind[i] == PAT_HS)
            items[nitems++] = (shard_item){.expr = ms->expr[i], .sub = ms, .pattern = i};
    qsort(items, nitems, sizeof *items, shard_item_cmp);
    int rc = make_shards(set, items, nitems, true, young);
    if (rc == 0)
        adopt_refused(ms, items, nitems);
    free(items);
    return rc;
}

/* Lists subscription id (ms) and its young shards and publishes (mu
 * held); on a failure the lists are as they were. The shards it listed
 * leave *young (n = 0); those it did not stay the caller's. */
static int list_added(matcher_set *set, uint32_t id, msub *ms, const mkey *keys, shard_list *young,
                      char *err, size_t errlen)
{
    choose_keys(set, ms, keys);
    if (ms->keyed)
        msub_shape(ms); /* only a keyed one's are read */
    for (size_t i = 0; i < young->n; i++)
        young->v[i]->keyed = ms->keyed;
    if (id_in_set(set, id, NULL)) {
        pb_set_err(err, errlen, "subscription %u is already in the matcher", id);
        return PB_EINVAL;
    }
    int rc = grow_reserve(&set->subs, &set->cap_subs, set->nsubs + 1, sizeof *set->subs);
    if (rc == 0)
        rc = grow_reserve(&set->shards, &set->cap_shards, set->nshards + young->n,
                          sizeof *set->shards);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < young->n; i++)
        shard_enlist(set, young->v[i]);
    ms->live = true;
    set->subs[set->nsubs++] = ms;
    rc = matcher_publish(set, set->version + 1);
    if (rc == 0) {
        set->version++;
        msub_drop_young_code(ms); /* keyed, or no young shard */
    } else {
        /* Undo: the shards and the subscription leave the lists. */
        set->nsubs--;
        ms->live = false;
        set->nshards -= young->n;
        for (size_t i = 0; i < young->n; i++) {
            ms->young_shards--;
            shard_unref(young->v[i]);
        }
    }
    young->n = 0;
    return rc;
}

int matcher_set_add(matcher_set *set, uint32_t id, const char *const *patterns, size_t n, char *err,
                    size_t errlen)
{
    mkey *keys = NULL;
    msub *ms = NULL;
    shard_list young = {0};
    int rc;

    pthread_mutex_lock(&set->mu);
    bool dup = id_in_set(set, id, NULL);
    pthread_mutex_unlock(&set->mu);
    if (dup) {
        pb_set_err(err, errlen, "subscription %u is already in the matcher", id);
        return PB_EINVAL;
    }
    rc = msub_new(set, id, patterns, n, &ms, err, errlen);
    if (rc < 0)
        return rc;
    rc = check_pcre_budget(set, ms, err, errlen);
    if (rc < 0)
        goto out;
    rc = compile_young(set, ms, &young);
    if (rc < 0)
        goto out;
    rc = check_pcre_budget(set, ms, err, errlen);
    if (rc < 0)
        goto out;
    rc = PB_ENOMEM;
    keys = calloc(2 * (size_t)ms->n + 1, sizeof *keys);
    if (!keys)
        goto out;
    for (uint32_t i = 0; i < ms->n; i++)
        if (ms->kind[i] == PAT_HS)
            mkey_extract(ms->text[i], ms->len[i], &keys[2 * i], &keys[2 * i + 1]);

    pthread_mutex_lock(&set->mu);
    rc = list_added(set, id, ms, keys, &young, err, errlen);
    pthread_mutex_unlock(&set->mu);
    if (rc == 0)
        ms = NULL; /* the set's list holds the creation reference */
    else if (rc == PB_ENOMEM)
        pb_set_err(err, errlen, "out of memory adding subscription %u", id);
out:
    for (size_t i = 0; i < young.n; i++)
        shard_discard(young.v[i]);
    free(young.v);
    free(keys);
    msub_unref(ms); /* not published: only the creation reference is left */
    return rc;
}

int matcher_set_remove(matcher_set *set, uint32_t id)
{
    size_t at;
    int rc = PB_ENOTFOUND;
    shard **gone = NULL;
    size_t ngone = 0;

    pthread_mutex_lock(&set->mu);
    if (!id_in_set(set, id, &at))
        goto out;
    rc = PB_ENOMEM;
    gone = malloc((set->nshards + 1) * sizeof *gone);
    if (!gone)
        goto out;
    msub *ms = set->subs[at];
    ms->live = false;
    memmove(&set->subs[at], &set->subs[at + 1], (set->nsubs - at - 1) * sizeof *set->subs);
    set->nsubs--;
    /* Its young shards hold nothing else: they leave now. (Full shards
     * keep its pairs, dead, until a compaction.) */
    size_t nkeep = 0;
    for (size_t i = 0; i < set->nshards; i++) {
        shard *sh = set->shards[i];
        if (sh->young && sh->pairs[0].sub == ms)
            gone[ngone++] = sh;
        else
            set->shards[nkeep++] = sh;
    }
    set->nshards = nkeep;
    rc = matcher_publish(set, set->version + 1);
    if (rc < 0) {
        /* Undo (the order of the shards does not matter). */
        for (size_t i = 0; i < ngone; i++)
            set->shards[set->nshards++] = gone[i];
        memmove(&set->subs[at + 1], &set->subs[at], (set->nsubs - at) * sizeof *set->subs);
        set->subs[at] = ms;
        set->nsubs++;
        ms->live = true;
        goto out;
    }
    set->version++;
    ms->young_shards -= (unsigned)ngone;
    for (size_t i = 0; i < ngone; i++)
        shard_unref(gone[i]);
    msub_drop_young_code(ms);
    msub_unref(ms);
out:
    pthread_mutex_unlock(&set->mu);
    free(gone);
    return rc;
}

void matcher_set_stats(matcher_set *set, matcher_stats *st)
{
    memset(st, 0, sizeof *st);
    pthread_mutex_lock(&set->mu);
    const snap *s = atomic_load_explicit(&set->cur, memory_order_relaxed);
    st->version = set->version;
    st->subscriptions = set->nsubs;
    for (size_t i = 0; i < set->nsubs; i++) {
        const msub *ms = set->subs[i];
        for (uint32_t p = 0; p < ms->n; p++)
            st->patterns += ms->kind[p] != PAT_DUP;
        st->pcre_bytes += ms->pcre_bytes;
    }
    st->pcre_patterns = s->entries[s->nentries].first;
    st->shards = s->nshards;
    for (uint32_t i = 0; i < s->nshards; i++) {
        st->young_shards += s->shards[i]->young && !s->shards[i]->keyed;
        st->shard_bytes += s->shards[i]->db_bytes;
    }
    st->keyed = s->nkeyed;
    for (uint32_t d = 0; d < s->nsubs; d++)
        if (s->subs[d]->shapes)
            st->shaped++, st->shape_bytes += s->subs[d]->n * sizeof(mkey_shape);
    for (const snap *r = set->retired; r; r = r->next)
        st->retired++;
    st->compactions = set->compactions;
    st->hyperscan = set->hs;
    pthread_mutex_unlock(&set->mu);
}
