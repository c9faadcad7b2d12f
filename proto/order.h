/*
 * order - the ordering helpers both sides share: a binary min-heap of
 * indexes for k-way merges (proto/merge.c merges record sources; the
 * daemon's subscriptions merge partitions, server/subrun.c), and sorting
 * arrays of u64 (segment base offsets, lists of offsets).
 *
 * Header-only and static inline, so that a heap's comparison function is
 * inlined where it is known (the merges compare on every record).
 *
 * Threads: pure functions over caller-owned arrays.
 */
#ifndef PB_ORDER_H
#define PB_ORDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* Is item a ordered before item b? ctx is the caller's (the items are
 * indexes into its own arrays). Must be a strict weak order. */
typedef bool (*pb_heap_less_fn)(const void *ctx, size_t a, size_t b);

/* Adds item to heap[0..*n) (room for one more is the caller's). */
static inline void pb_heap_push(size_t *heap, size_t *n, size_t item, pb_heap_less_fn less,
                                const void *ctx)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!less(ctx, item, heap[parent]))
            break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = item;
}

/* Removes and returns the first item of heap[0..*n) (*n > 0). */
static inline size_t pb_heap_pop(size_t *heap, size_t *n, pb_heap_less_fn less, const void *ctx)
{
    size_t top = heap[0];
    size_t last = heap[--*n];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= *n)
            break;
        if (child + 1 < *n && less(ctx, heap[child + 1], heap[child]))
            child++;
        if (!less(ctx, heap[child], last))
            break;
        heap[i] = heap[child];
        i = child;
    }
    if (*n > 0)
        heap[i] = last;
    return top;
}

static inline int pb_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sorts v[0..n) ascending. */
static inline void pb_sort_u64(uint64_t *v, size_t n)
{
    if (n > 1)
        qsort(v, n, sizeof *v, pb_cmp_u64);
}

#endif
