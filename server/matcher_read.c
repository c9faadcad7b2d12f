/*
 * matcher_read - the matcher's reader side (see matcher.h and
 * matcher_snap.h): a reader finds the current snapshot without a lock and
 * matches a topic with it, the full shards' Hyperscan databases first, then
 * the own shards of the keyed subscriptions its keys find, then the PCRE2
 * patterns of the subscriptions still unmatched.
 *
 * Threads: matcher_match on the reader's own thread, any number of readers
 * at once; matcher_reader_create and _destroy take set->mu (they change the
 * list of hazard slots the writer side scans).
 */
#include "matcher_snap.h"

#include "pb_errors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ST_MATCHED = 1, ST_BREACHED = 2, ST_YOUNG_DONE = 4 };

int matcher_reader_create(matcher_set *set, matcher_reader **out)
{
    matcher_reader *r = calloc(1, sizeof *r);
    if (!r)
        return PB_ENOMEM;
    r->set = set;
    atomic_init(&r->hazard, NULL);
    r->md = pcre2_match_data_create(1, NULL);
    r->mctx = pcre2_match_context_create(NULL);
    if (!r->md || !r->mctx) {
        pcre2_match_data_free(r->md);
        pcre2_match_context_free(r->mctx);
        free(r);
        return PB_ENOMEM;
    }
    pcre2_set_match_limit(r->mctx, set->lim.match_limit);
    pcre2_set_depth_limit(r->mctx, set->lim.depth_limit);
    pcre2_set_heap_limit(r->mctx, set->lim.heap_limit_kib);
    pthread_mutex_lock(&set->mu);
    r->next = set->readers;
    set->readers = r;
    pthread_mutex_unlock(&set->mu);
    *out = r;
    return 0;
}

void matcher_reader_destroy(matcher_reader *r)
{
    if (!r)
        return;
    matcher_set *set = r->set;
    pthread_mutex_lock(&set->mu);
    for (matcher_reader **link = &set->readers; *link; link = &(*link)->next) {
        if (*link == r) {
            *link = r->next;
            break;
        }
    }
    matcher_reclaim(set);
    pthread_mutex_unlock(&set->mu);
    hs_free_scratch(r->scratch);
    pcre2_match_data_free(r->md);
    pcre2_match_context_free(r->mctx);
    free(r->state);
    free(r->touched);
    free(r->mlog);
    free(r->blog);
    free(r->ids);
    free(r->breaches);
    free(r);
}

/* The current snapshot, published in r's hazard slot: the writer frees a
 * retired snapshot only when no slot holds it (matcher_reclaim), and a
 * reader uses one only after seeing it still current once its slot holds
 * it. Both sides' accesses are sequentially consistent: either the writer
 * sees the slot, or the reader sees the new snapshot and tries again. */
static snap *acquire(matcher_reader *r)
{
    snap *s = atomic_load_explicit(&r->set->cur, memory_order_acquire);
    for (;;) {
        atomic_store_explicit(&r->hazard, s, memory_order_seq_cst);
        snap *again = atomic_load_explicit(&r->set->cur, memory_order_seq_cst);
        if (again == s)
            return s;
        s = again;
    }
}

/* Room for one more element in a log; false if it cannot grow. */
static bool reserve(void **v, size_t n, size_t *cap, size_t elem)
{
    if (n < *cap)
        return true;
    size_t c = *cap ? *cap * 2 : 256;
    void *nv = realloc(*v, c * elem);
    if (!nv)
        return false;
    *v = nv;
    *cap = c;
    return true;
}

/* Sizes the reader for snapshot s: a state row per topic of a batch for
 * its subscriptions, a scratch for its shards. Runs once per snapshot. */
static int fit(matcher_reader *r, const snap *s)
{
    if (s->nsubs > r->cap_subs) {
        size_t cap = r->cap_subs * 2 > s->nsubs ? r->cap_subs * 2 : s->nsubs;
        /* Rows change width: a fresh, zeroed block (the old one is all 0). */
        uint8_t *state = calloc(MATCHER_BATCH_MAX, cap);
        if (!state)
            return PB_ENOMEM;
        free(r->state);
        r->state = state;
        r->cap_subs = cap;
    }
    if (s->max_serial > r->sized_serial) {
        /* Every shard listed since the last snapshot this reader saw has a
         * higher serial; the others fit already. */
        for (uint32_t i = 0; i < s->nshards; i++)
            if (s->shards[i]->serial > r->sized_serial &&
                hs_alloc_scratch(s->shards[i]->db, &r->scratch) != HS_SUCCESS)
                return PB_ENOMEM;
        r->sized_serial = s->max_serial;
    }
    r->gen = s->gen;
    return 0;
}

static uint8_t *state_of(const matcher_reader *r, uint32_t topic, int32_t d)
{
    return &r->state[(size_t)topic * r->cap_subs + (size_t)d];
}

/* Sets a state bit of (topic, d), noting it for the clean-up. */
static bool touch(matcher_reader *r, uint32_t topic, int32_t d, uint8_t bit)
{
    uint8_t *st = state_of(r, topic, d);
    if (*st == 0) {
        if (!reserve((void **)&r->touched, r->ntouched, &r->cap_touched, sizeof *r->touched)) {
            r->oom = true;
            return false;
        }
        r->touched[r->ntouched++] = (size_t)topic * r->cap_subs + (size_t)d;
    }
    *st |= bit;
    return true;
}

static void matched(matcher_reader *r, uint32_t topic, int32_t d)
{
    if (!reserve((void **)&r->mlog, r->nmlog, &r->cap_mlog, sizeof *r->mlog) ||
        !touch(r, topic, d, ST_MATCHED)) {
        r->oom = true;
        return;
    }
    r->mlog[r->nmlog++] = (mlog_rec){.topic = topic, .id = r->s->ids[d]};
    r->nmatched[topic]++;
}

/* Hyperscan's report: expression id of the shard being scanned matched
 * the whole topic (it is anchored at both ends). */
static int on_match(unsigned int id, unsigned long long from, unsigned long long to,
                    unsigned int flags, void *ctx)
{
    matcher_reader *r = ctx;
    for (uint32_t k = r->sh_first[id]; k < r->sh_first[id + 1]; k++) {
        int32_t d = r->sh_dense[k];
        if (d >= 0 && !(*state_of(r, r->topic, d) & ST_MATCHED))
            matched(r, r->topic, d);
    }
    /* Stop when every subscription matched, or out of memory. */
    return r->oom || r->nmatched[r->topic] == r->s->nsubs;
}

static int scan(matcher_reader *r, const snap *s, uint32_t i, uint32_t topic, const char *text,
                size_t len)
{
    r->sh_dense = s->dense[i];
    r->sh_first = s->shards[i]->first;
    r->topic = topic;
    hs_error_t e = hs_scan(s->shards[i]->db, text, (unsigned)len, 0, r->scratch, on_match, r);
    if (r->oom)
        return PB_ENOMEM;
    return e == HS_SUCCESS || e == HS_SCAN_TERMINATED ? 0 : PB_EFAILED;
}

/* Young subscription d's Hyperscan answer on a topic, for all of its
 * Hyperscan patterns at once: when PCRE2 gave up on one of them. */
static int scan_young(matcher_reader *r, const snap *s, int32_t d, uint32_t topic, const char *text,
                      size_t len)
{
    if (!touch(r, topic, d, ST_YOUNG_DONE))
        return PB_ENOMEM;
    for (uint32_t i = s->young_lo[d]; i < s->young_hi[d]; i++) {
        int rc = scan(r, s, i, topic, text, len);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Keyed subscription d's answer on a topic from its patterns' shapes
 * (msub.shapes: every Hyperscan pattern of it has one), as scan_young
 * would give it from its own shard. */
static int decide_shaped(matcher_reader *r, const snap *s, int32_t d, uint32_t topic,
                         const char *text, size_t len)
{
    const msub *ms = s->subs[d];
    if (!touch(r, topic, d, ST_YOUNG_DONE))
        return PB_ENOMEM;
    for (uint32_t p = 0; p < ms->n; p++) {
        if (ms->kind[p] == PAT_HS && mkey_shape_match(&ms->shapes[p], text, len)) {
            matched(r, topic, d);
            return r->oom ? PB_ENOMEM : 0;
        }
    }
    return 0;
}

/* The keyed subscriptions that may match topic t (one of their keys is its
 * prefix or suffix), each decided by its own shards. */
static int match_keys(matcher_reader *r, const snap *s, uint32_t t, const char *text, size_t len)
{
    for (uint8_t side = MKEY_PREFIX; side <= MKEY_SUFFIX; side++) {
        for (uint8_t j = 0; j < s->keys.nlens[side] && s->keys.lens[side][j] <= len; j++) {
            size_t l = s->keys.lens[side][j];
            uint32_t cnt;
            const int32_t *d = mkey_index_get(&s->keys, side,
                                              side == MKEY_PREFIX ? text : text + len - l, l, &cnt);
            for (uint32_t k = 0; k < cnt; k++) {
                if (*state_of(r, t, d[k]) & (ST_MATCHED | ST_YOUNG_DONE))
                    continue;
                int rc = s->subs[d[k]]->shapes ? decide_shaped(r, s, d[k], t, text, len)
                                               : scan_young(r, s, d[k], t, text, len);
                if (rc < 0)
                    return rc;
            }
        }
    }
    return 0;
}

/* Whether a pair still has to be decided by its pattern on a topic. */
static bool open_pair(const matcher_reader *r, uint32_t topic, const pcre_pair *pp)
{
    uint8_t st = *state_of(r, topic, pp->dense);
    return !(st & ST_MATCHED) && !(pp->young && (st & ST_YOUNG_DONE));
}

/* Runs one PCRE2 pattern on one topic for its open pairs from k on. */
static int run_entry(matcher_reader *r, const snap *s, const pcre_entry *en, uint32_t k, uint32_t b,
                     uint32_t topic, const char *text, size_t len)
{
    /* pcre2_jit_match skips pcre2_match's argument checks; the match
     * limit applies to both. */
    int m = en->jit ? pcre2_jit_match(en->code, (PCRE2_SPTR)text, len, 0, 0, r->md, r->mctx)
                    : pcre2_match(en->code, (PCRE2_SPTR)text, len, 0, 0, r->md, r->mctx);
    if (m == PCRE2_ERROR_NOMATCH)
        return 0;
    for (; k < b; k++) {
        const pcre_pair *pp = &s->ppairs[k];
        int32_t d = pp->dense;
        if (!open_pair(r, topic, pp))
            continue;
        if (m >= 0) {
            matched(r, topic, d);
        } else if (pp->young) {
            int rc = scan_young(r, s, d, topic, text, len);
            if (rc < 0)
                return rc;
        } else if (!(*state_of(r, topic, d) & ST_BREACHED)) {
            /* Over budget (or another match error): reported at the end,
             * unless another pattern of d matches the topic. */
            if (!reserve((void **)&r->blog, r->nblog, &r->cap_blog, sizeof *r->blog) ||
                !touch(r, topic, d, ST_BREACHED))
                return PB_ENOMEM;
            r->blog[r->nblog++] =
                (blog_rec){.topic = topic,
                           .dense = d,
                           .breach = {.id = s->ids[d], .pattern = pp->pattern, .pcre2_error = m}};
        }
        if (r->oom)
            return PB_ENOMEM;
    }
    return 0;
}

/*
 * The PCRE2 patterns, each once per topic, for the subscriptions not
 * matched yet: pattern by pattern, each over the batch's topics. A pattern
 * over its budget marks its subscriptions breached (the first breach is
 * kept), but another of their patterns may still match: any-of holds,
 * and the breach is reported only if none does. A young subscription's
 * Hyperscan pattern over its budget is decided by its shard instead.
 */
static int match_pcre(matcher_reader *r, const snap *s, const char *const *topics,
                      const size_t *lens, uint32_t n)
{
    for (uint32_t e = 0; e < s->nentries; e++) {
        const pcre_entry *en = &s->entries[e];
        uint32_t a = en->first, b = s->entries[e + 1].first;
        for (uint32_t t = 0; t < n; t++) {
            uint32_t k = a;
            while (k < b && !open_pair(r, t, &s->ppairs[k]))
                k++;
            if (k == b)
                continue; /* its subscriptions are decided for this topic */
            int rc = run_entry(r, s, en, k, b, t, topics[t] ? topics[t] : "", lens[t]);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

/* Lays the logs out per topic into the answers (counting sorts). */
static int answers(matcher_reader *r, const snap *s, uint32_t n, matcher_result *res)
{
    size_t nbreach[MATCHER_BATCH_MAX] = {0}, nb = 0;
    for (size_t k = 0; k < r->nblog; k++) {
        const blog_rec *br = &r->blog[k];
        if (!(*state_of(r, br->topic, br->dense) & ST_MATCHED)) {
            nbreach[br->topic]++;
            nb++;
        }
    }
    if (r->nmlog > r->cap_ids) {
        uint32_t *ids = realloc(r->ids, r->nmlog * sizeof *ids);
        if (!ids)
            return PB_ENOMEM;
        r->ids = ids;
        r->cap_ids = r->nmlog;
    }
    if (nb > r->cap_breaches) {
        matcher_breach *b = realloc(r->breaches, nb * sizeof *b);
        if (!b)
            return PB_ENOMEM;
        r->breaches = b;
        r->cap_breaches = nb;
    }
    size_t at_id = 0, at_breach = 0;
    bool keyed_only = s->nfull == 0 && s->nentries == 0 && s->nkeyed == s->nsubs;
    for (uint32_t t = 0; t < n; t++) {
        /* n and nbreaches count up again as the logs are laid out. */
        res[t] = (matcher_result){.ids = r->ids + at_id,
                                  .breaches = r->breaches + at_breach,
                                  .version = s->version,
                                  .keyed_only = keyed_only};
        at_id += r->nmatched[t];
        at_breach += nbreach[t];
    }
    for (size_t k = 0; k < r->nmlog; k++) {
        matcher_result *rt = &res[r->mlog[k].topic];
        ((uint32_t *)rt->ids)[rt->n++] = r->mlog[k].id;
    }
    for (size_t k = 0; k < r->nblog; k++) {
        const blog_rec *br = &r->blog[k];
        if (*state_of(r, br->topic, br->dense) & ST_MATCHED)
            continue; /* another pattern matched: no breach to report */
        matcher_result *rt = &res[br->topic];
        ((matcher_breach *)rt->breaches)[rt->nbreaches++] = br->breach;
    }
    return 0;
}

int matcher_match_batch(matcher_reader *r, const char *const *topics, const size_t *lens, size_t n,
                        matcher_result *res)
{
    int rc = 0;
    if (n == 0 || n > MATCHER_BATCH_MAX)
        return PB_EINVAL;
    for (size_t t = 0; t < n; t++)
        if (lens[t] > UINT32_MAX)
            return PB_ETOOBIG; /* hs_scan's length is 32 bits; topics are far shorter */
    snap *s = acquire(r);
    if (s->gen != r->gen && (rc = fit(r, s)) < 0)
        goto out;
    r->s = s;
    r->oom = false;
    r->ntouched = r->nmlog = r->nblog = 0;
    memset(r->nmatched, 0, n * sizeof *r->nmatched);
    for (uint32_t t = 0; t < n && rc == 0; t++) {
        const char *text = topics[t] ? topics[t] : "";
        for (uint32_t i = 0; i < s->nfull && r->nmatched[t] < s->nsubs && rc == 0; i++)
            rc = scan(r, s, i, t, text, lens[t]);
        if (rc == 0 && s->keys.npairs && r->nmatched[t] < s->nsubs)
            rc = match_keys(r, s, t, text, lens[t]);
    }
    if (rc == 0)
        rc = match_pcre(r, s, topics, lens, (uint32_t)n);
    if (rc == 0)
        rc = answers(r, s, (uint32_t)n, res);
    for (size_t k = 0; k < r->ntouched; k++)
        r->state[r->touched[k]] = 0;
out:
    atomic_store_explicit(&r->hazard, NULL, memory_order_release);
    return rc;
}

int matcher_match(matcher_reader *r, const char *topic, size_t len, matcher_result *res)
{
    return matcher_match_batch(r, &topic, &len, 1, res);
}

const char *matcher_breach_reason(int pcre2_error, char *buf, size_t len)
{
    const char *name = NULL;
    switch (pcre2_error) {
    case PCRE2_ERROR_MATCHLIMIT:
        name = "match limit";
        break;
    case PCRE2_ERROR_DEPTHLIMIT:
        name = "depth limit";
        break;
    case PCRE2_ERROR_HEAPLIMIT:
        name = "heap limit";
        break;
    case PCRE2_ERROR_JIT_STACKLIMIT:
        name = "JIT stack limit";
        break;
    default:
        break;
    }
    if (!len)
        return buf;
    if (name)
        snprintf(buf, len, "%s", name);
    else if (pcre2_get_error_message(pcre2_error, (PCRE2_UCHAR *)buf, len) < 0)
        snprintf(buf, len, "PCRE2 error %d", pcre2_error);
    return buf;
}
