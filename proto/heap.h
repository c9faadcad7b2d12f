/*
 * heap - a binary min-heap of indexes for k-way merges: proto/merge.c
 * merges record sources, the daemon's subscriptions merge partitions
 * (server/subrun.c). The items are indexes into the caller's own arrays;
 * the caller's comparison orders them.
 *
 * Header-only and static inline, so that a heap's comparison function is
 * inlined where it is known (the merges compare on every record).
 *
 * Threads: pure functions over caller-owned arrays.
 */
#ifndef PB_HEAP_H
#define PB_HEAP_H

#include <stdbool.h>
#include <stddef.h>

/* Is item a ordered before item b? ctx is the caller's. Must be a strict
 * weak order. */
typedef bool (*heap_less_fn)(const void *ctx, size_t a, size_t b);

/* Adds item to heap[0..*n) (room for one more is the caller's). */
static inline void heap_push(size_t *heap, size_t *n, size_t item, heap_less_fn less,
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
static inline size_t heap_pop(size_t *heap, size_t *n, heap_less_fn less, const void *ctx)
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

#endif
