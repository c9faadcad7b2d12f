/*
 * subreq - the size-dependent checks of a Subscribe request (see subreq.h):
 * caps first, then sorts where the naive checks were quadratic (120,000 tag
 * filters used to freeze the loop for ~20 s).
 *
 * Threads: the loop thread (sub_start); no shared state.
 */
#include "subreq.h"

#include "pb_errors.h"

#include <stdlib.h>
#include <string.h>

int subreq_check_caps(const Protobus__Subscribe *q, const sub_caps *caps, char *err, size_t errlen)
{
    if (caps->max_patterns && q->n_patterns > caps->max_patterns) {
        pb_set_err(err, errlen, "subscribe: %zu patterns, more than max_subscribe_patterns = %u",
                   q->n_patterns, caps->max_patterns);
        return PB_ETOOBIG;
    }
    if (caps->max_tags && q->n_tags > caps->max_tags) {
        pb_set_err(err, errlen, "subscribe: %zu tag filters, more than max_subscribe_tags = %u",
                   q->n_tags, caps->max_tags);
        return PB_ETOOBIG;
    }
    if (caps->max_offsets && q->n_offsets > caps->max_offsets) {
        pb_set_err(err, errlen,
                   "subscribe: %zu offsets entries, more than max_subscribe_offsets = %u",
                   q->n_offsets, caps->max_offsets);
        return PB_ETOOBIG;
    }
    for (size_t i = 0; caps->max_pattern_bytes && i < q->n_patterns; i++) {
        size_t len = strlen(q->patterns[i]);
        if (len > caps->max_pattern_bytes) {
            pb_set_err(err, errlen,
                       "subscribe: patterns[%zu] (\"%.40s...\") is %zu bytes, more than "
                       "max_pattern_bytes = %u",
                       i, q->patterns[i], len, caps->max_pattern_bytes);
            return PB_ETOOBIG;
        }
    }
    return 0;
}

/* A string and where it was in the request: sorted by (text, index). */
typedef struct keyed {
    const char *s;
    size_t i;
} keyed;

static int keyed_cmp(const void *a, const void *b)
{
    const keyed *x = a, *y = b;
    int c = strcmp(x->s, y->s);
    if (c)
        return c;
    return x->i < y->i ? -1 : x->i > y->i;
}

size_t subreq_dup_offset(Protobus__PartitionOffset *const *offsets, size_t n)
{
    if (n < 2)
        return n;
    keyed *k = malloc(n * sizeof *k);
    if (!k)
        return (size_t)-1;
    for (size_t i = 0; i < n; i++)
        k[i] = (keyed){offsets[i]->partition, i};
    qsort(k, n, sizeof *k, keyed_cmp);
    size_t dup = n;
    for (size_t i = 1; i < n; i++)
        if (strcmp(k[i - 1].s, k[i].s) == 0 && k[i].i < dup)
            dup = k[i].i;
    free(k);
    return dup;
}

/* A key's first and last occurrence (tags[first].key, tags[last].value). */
typedef struct key_run {
    size_t first, last;
} key_run;

static int run_cmp(const void *a, const void *b)
{
    const key_run *x = a, *y = b;
    return x->first < y->first ? -1 : x->first > y->first;
}

size_t subreq_tags(Protobus__Subscribe__TagsEntry *const *tags, size_t n, event_tag_filter *out)
{
    if (n == 0)
        return 0;
    keyed *k = malloc(n * sizeof *k);
    key_run *runs = malloc(n * sizeof *runs);
    if (!k || !runs) {
        free(k);
        free(runs);
        return (size_t)-1;
    }
    for (size_t i = 0; i < n; i++)
        k[i] = (keyed){tags[i]->key, i};
    qsort(k, n, sizeof *k, keyed_cmp);
    size_t nruns = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && strcmp(k[i - 1].s, k[i].s) == 0)
            runs[nruns - 1].last = k[i].i; /* indexes ascend within a run */
        else
            runs[nruns++] = (key_run){k[i].i, k[i].i};
    }
    qsort(runs, nruns, sizeof *runs, run_cmp);
    for (size_t r = 0; r < nruns; r++) {
        const char *key = tags[runs[r].first]->key, *v = tags[runs[r].last]->value;
        out[r] = (event_tag_filter){key, strlen(key), v, strlen(v)};
    }
    free(k);
    free(runs);
    return nruns;
}
