/*
 * matcher - the combined topic matcher's writer side (see matcher.h; the
 * objects are described in matcher_snap.h, snapshots are built in
 * matcher_snap.c, the reader side is in matcher_read.c): subscriptions
 * come and go, each change publishes a new immutable snapshot, and
 * compaction merges young shards into full ones.
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
/* shards in the list (set->mu) */

/* Lists a new shard (mu held): its pairs take their references. */
static void shard_enlist(matcher_set *set, shard *sh)
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

typedef struct item {
    const char *expr;
    msub *sub;
    uint32_t pattern;
    bool refused;
} item;

static int item_cmp(const void *a, const void *b)
{
    const item *x = a, *y = b;
    int c = strcmp(x->expr, y->expr);
    if (c)
        return c;
    if (x->sub->id != y->sub->id)
        return x->sub->id < y->sub->id ? -1 : 1;
    return x->pattern < y->pattern ? -1 : x->pattern > y->pattern;
}

typedef struct shard_list {
    shard **v;
    size_t n, cap;
} shard_list;

static int shard_list_push(shard_list *l, shard *sh)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        shard **v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return PB_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = sh;
    return 0;
}

/* Frees a shard whose pairs took no references (never listed). */
static void shard_discard(shard *sh)
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
static int compile_groups(item *items, const size_t *group, size_t ng, bool young, shard_list *out)
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
static int make_shards(const matcher_set *set, item *items, size_t n, bool young, shard_list *out)
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

static int grow(void **v, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap * 2 : 16;
    while (c < need)
        c *= 2;
    void *nv = realloc(*v, c * elem);
    if (!nv)
        return PB_ENOMEM;
    *v = nv;
    *cap = c;
    return 0;
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
static void adopt_refused(msub *ms, const item *items, size_t nitems)
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

int matcher_set_add(matcher_set *set, uint32_t id, const char *const *patterns, size_t n, char *err,
                    size_t errlen)
{
    mkey *keys = NULL;
    msub *ms = NULL;
    item *items = NULL;
    shard_list young = {0};
    size_t nitems = 0;
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
    /* Its own shards, compiled here, on the caller's thread. */
    rc = PB_ENOMEM;
    items = malloc((ms->n + 1) * sizeof *items);
    if (!items)
        goto out;
    for (uint32_t i = 0; i < ms->n; i++)
        if (ms->kind[i] == PAT_HS)
            items[nitems++] = (item){.expr = ms->expr[i], .sub = ms, .pattern = i};
    qsort(items, nitems, sizeof *items, item_cmp);
    rc = make_shards(set, items, nitems, true, &young);
    if (rc < 0)
        goto out;
    adopt_refused(ms, items, nitems);
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
    choose_keys(set, ms, keys);
    if (ms->keyed)
        msub_shape(ms); /* only a keyed one's are read */
    for (size_t i = 0; i < young.n; i++)
        young.v[i]->keyed = ms->keyed;
    if (id_in_set(set, id, NULL)) {
        pb_set_err(err, errlen, "subscription %u is already in the matcher", id);
        rc = PB_EINVAL;
    } else {
        rc = grow((void **)&set->subs, &set->cap_subs, set->nsubs + 1, sizeof *set->subs);
        if (rc == 0)
            rc = grow((void **)&set->shards, &set->cap_shards, set->nshards + young.n,
                      sizeof *set->shards);
    }
    if (rc == 0) {
        for (size_t i = 0; i < young.n; i++)
            shard_enlist(set, young.v[i]);
        ms->live = true;
        set->subs[set->nsubs++] = ms;
        rc = matcher_publish(set, set->version + 1);
        if (rc == 0) {
            set->version++;
            msub_drop_young_code(ms); /* keyed, or no young shard */
            ms = NULL;                /* the set's list holds the creation reference */
        } else {
            /* Undo: the shards and the subscription leave the lists. */
            set->nsubs--;
            ms->live = false;
            set->nshards -= young.n;
            for (size_t i = 0; i < young.n; i++) {
                ms->young_shards--;
                shard_unref(young.v[i]);
            }
        }
        young.n = 0;
    }
    pthread_mutex_unlock(&set->mu);
    if (rc == PB_ENOMEM)
        pb_set_err(err, errlen, "out of memory adding subscription %u", id);
out:
    for (size_t i = 0; i < young.n; i++)
        shard_discard(young.v[i]);
    free(young.v);
    free(items);
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

int matcher_set_compact(matcher_set *set)
{
    int rc = PB_ENOMEM;
    shard **in = NULL, **saved = NULL;
    size_t nin = 0, nitems = 0, nsaved = 0;
    item *items = NULL;
    shard_list outs = {0};

    pthread_mutex_lock(&set->compact_mu);
    pthread_mutex_lock(&set->mu);
    in = malloc((set->nshards + 1) * sizeof *in);
    if (!in) {
        pthread_mutex_unlock(&set->mu);
        goto out;
    }
    nin = pick_inputs(set, in);
    size_t live = 0;
    for (size_t i = 0; i < nin; i++)
        for (uint32_t k = 0; k < in[i]->npairs; k++)
            live += in[i]->pairs[k].sub->live;
    items = malloc((live + 1) * sizeof *items);
    if (!items) {
        nin = 0;
        pthread_mutex_unlock(&set->mu);
        goto out;
    }
    /* References: on the inputs, to know them again when publishing, and
     * on the subscriptions of their live pairs, for the compile. */
    for (size_t i = 0; i < nin; i++) {
        shard *sh = in[i];
        sh->refs++;
        for (uint32_t k = 0; k < sh->npairs; k++) {
            msub *ms = sh->pairs[k].sub;
            if (!ms->live)
                continue;
            ms->refs++;
            items[nitems++] = (item){
                .expr = ms->expr[sh->pairs[k].pattern], .sub = ms, .pattern = sh->pairs[k].pattern};
        }
    }
    pthread_mutex_unlock(&set->mu);
    rc = 0;
    if (nin == 0)
        goto out;

    /* The slow part, with no lock held. */
    qsort(items, nitems, sizeof *items, item_cmp);
    rc = make_shards(set, items, nitems, false, &outs);
    if (rc < 0)
        goto out;
    /* An expression Hyperscan refuses in a full shard (it took it in a
     * young one: rare, a resource limit) is no longer covered; the
     * snapshot then runs its PCRE2 code, without JIT. */

    pthread_mutex_lock(&set->mu);
    rc = PB_ENOMEM;
    saved = malloc((set->nshards + 1) * sizeof *saved);
    if (saved && grow((void **)&set->shards, &set->cap_shards, set->nshards + outs.n,
                      sizeof *set->shards) == 0) {
        nsaved = set->nshards;
        memcpy(saved, set->shards, nsaved * sizeof *saved);
        unlist_inputs(set, in, nin);
        for (size_t i = 0; i < outs.n; i++)
            shard_enlist(set, outs.v[i]);
        rc = matcher_publish(set, set->version);
        if (rc == 0) {
            release_unlisted(set, saved, nsaved);
            set->compactions++;
        } else {
            memcpy(set->shards, saved, nsaved * sizeof *saved);
            set->nshards = nsaved;
            for (size_t i = 0; i < outs.n; i++)
                shard_unref(outs.v[i]);
        }
        outs.n = 0;
    }
    pthread_mutex_unlock(&set->mu);
out:
    for (size_t i = 0; i < outs.n; i++)
        shard_discard(outs.v[i]);
    free(outs.v);
    if (nin || nitems) {
        pthread_mutex_lock(&set->mu);
        for (size_t i = 0; i < nin; i++)
            shard_unref(in[i]);
        for (size_t k = 0; k < nitems; k++)
            msub_unref(items[k].sub);
        pthread_mutex_unlock(&set->mu);
    }
    free(in);
    free(saved);
    free(items);
    pthread_mutex_unlock(&set->compact_mu);
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
