/*
 * merge - k-way merge of record sources by receive time (see merge.h).
 *
 * Threads: whichever thread owns the pb_merge.
 *
 * Each source is in exactly one state: IN_HEAP (its pending record is in
 * the heap), NEED (it must be asked for its next record: just added, its
 * record was just handed out, or it reported damage), IDLE (it said
 * PB_EEOF) or FAILED. A handed-out record stays valid because its source is
 * only asked again at the start of the following pb_merge_next call.
 */
#include "merge.h"

#include "grow.h"
#include "heap.h"
#include "pb_errors.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

enum src_state { SRC_NEED, SRC_IN_HEAP, SRC_IDLE, SRC_FAILED };

typedef struct merge_src {
    char *name;
    pb_merge_next_fn next;
    void *ctx;
    enum src_state state;
    pb_record rec; /* pending record while IN_HEAP */
} merge_src;

struct pb_merge {
    merge_src *src;
    size_t nsrc, cap;
    size_t *heap; /* source indices, min-heap by (time, name, index) */
    size_t nheap;
    size_t *need; /* stack of sources in state NEED */
    size_t nneed;
};

int pb_merge_new(pb_merge **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? 0 : PB_ENOMEM;
}

void pb_merge_free(pb_merge *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nsrc; i++)
        free(m->src[i].name);
    free(m->src);
    free(m->heap);
    free(m->need);
    free(m);
}

size_t pb_merge_count(const pb_merge *m)
{
    return m->nsrc;
}

/* Grows the three arrays together so that heap and need can never overflow:
 * each holds at most one entry per source. */
static int reserve(pb_merge *m)
{
    if (m->nsrc < m->cap)
        return 0;
    size_t cap = grow_capacity(m->cap, m->nsrc + 1, sizeof *m->src);
    if (cap == 0 || grow_resize(&m->src, cap, sizeof *m->src) < 0 ||
        grow_resize(&m->heap, cap, sizeof *m->heap) < 0 ||
        grow_resize(&m->need, cap, sizeof *m->need) < 0)
        return PB_ENOMEM;
    m->cap = cap;
    return 0;
}

int pb_merge_add(pb_merge *m, const char *name, pb_merge_next_fn next, void *source, size_t *index)
{
    if (reserve(m) < 0)
        return PB_ENOMEM;
    char *copy = strdup(name ? name : "");
    if (!copy)
        return PB_ENOMEM;
    size_t i = m->nsrc++;
    m->src[i] = (merge_src){.name = copy, .next = next, .ctx = source, .state = SRC_NEED};
    m->need[m->nneed++] = i;
    if (index)
        *index = i;
    return 0;
}

static int reader_next(void *source, pb_record *rec)
{
    return pb_reader_next(source, rec);
}

int pb_merge_add_reader(pb_merge *m, const char *name, pb_reader *r, size_t *index)
{
    return pb_merge_add(m, name, reader_next, r, index);
}

/* a before b? (heap_less_fn over the sources) */
static bool before(const void *ctx, size_t a, size_t b)
{
    const pb_merge *m = ctx;
    const merge_src *x = &m->src[a], *y = &m->src[b];
    if (x->rec.time_ns != y->rec.time_ns)
        return x->rec.time_ns < y->rec.time_ns;
    int c = strcmp(x->name, y->name);
    if (c != 0)
        return c < 0;
    return a < b;
}

static void fill_item(const pb_merge *m, size_t s, pb_merge_item *item)
{
    item->source = s;
    item->name = m->src[s].name;
    item->ctx = m->src[s].ctx;
}

/* Asks every source in state NEED for its next record. 0 when the stack is
 * empty; a source's error code (item names it) otherwise. */
static int refill(pb_merge *m, pb_merge_item *item)
{
    while (m->nneed > 0) {
        size_t s = m->need[m->nneed - 1];
        merge_src *src = &m->src[s];
        int rc = src->next(src->ctx, &src->rec);
        if (rc == PB_ECORRUPT || rc == PB_EREMOVED) {
            /* A report, not an end: stays on the stack, asked again on
             * the next call. */
            fill_item(m, s, item);
            return rc;
        }
        m->nneed--;
        if (rc == 0) {
            src->state = SRC_IN_HEAP;
            heap_push(m->heap, &m->nheap, s, before, m);
        } else if (rc == PB_EEOF) {
            src->state = SRC_IDLE;
        } else {
            src->state = SRC_FAILED;
            fill_item(m, s, item);
            return rc;
        }
    }
    return 0;
}

int pb_merge_next(pb_merge *m, pb_merge_item *item)
{
    int rc = refill(m, item);
    if (rc < 0)
        return rc;
    if (m->nheap == 0) {
        /* Nothing pending: give every idle source one more chance. */
        for (size_t s = 0; s < m->nsrc; s++) {
            if (m->src[s].state == SRC_IDLE) {
                m->src[s].state = SRC_NEED;
                m->need[m->nneed++] = s;
            }
        }
        if ((rc = refill(m, item)) < 0)
            return rc;
        if (m->nheap == 0)
            return PB_EEOF;
    }
    size_t s = heap_pop(m->heap, &m->nheap, before, m);
    fill_item(m, s, item);
    item->rec = m->src[s].rec;
    m->src[s].state = SRC_NEED;
    m->need[m->nneed++] = s;
    return 0;
}
