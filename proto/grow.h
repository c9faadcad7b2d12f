/*
 * grow - growable arrays: the one place that doubles a capacity, checks the
 * multiplication for overflow and calls realloc, for every module (proto,
 * the client library and CLI, the daemon).
 *
 * An array is a pointer and a capacity in elements, kept by the caller:
 *
 *     uint64_t *v = NULL; size_t n = 0, cap = 0;
 *     if (grow_reserve(&v, &cap, n + 1, sizeof *v) < 0)
 *         return PB_ENOMEM;
 *     v[n++] = x;
 *
 * `arrp` is the address of the caller's pointer (a `T **`, passed as
 * void * so that any element type goes without a cast). On failure nothing
 * changes: the old block, its contents and the capacity stay valid.
 *
 * Pure apart from realloc; any thread (each array belongs to its caller).
 */
#ifndef PB_GROW_H
#define PB_GROW_H

#include <stddef.h>

/* The first capacity given to an empty array. */
#define GROW_MIN 16

/*
 * The capacity grow_reserve would choose for need elements of elem bytes,
 * starting from cap: cap (or GROW_MIN when cap is 0) doubled until it holds
 * need; cap itself when it already does. 0 when need * elem bytes cannot be
 * represented. For arrays that grow together under one capacity (resize
 * each with grow_resize, then store the capacity).
 */
size_t grow_capacity(size_t cap, size_t need, size_t elem);

/*
 * Reallocates *arrp to exactly n elements of elem bytes (n > 0). Returns 0,
 * or PB_ENOMEM (n * elem overflows, or realloc failed; *arrp unchanged).
 */
int grow_resize(void *arrp, size_t n, size_t elem);

int grow_reserve_slow(void *arrp, size_t *cap, size_t need, size_t elem);

/*
 * Makes room for at least need elements: 0 (at once when *cap >= need, so
 * it can sit on a hot path), or PB_ENOMEM with *arrp and *cap unchanged.
 */
static inline int grow_reserve(void *arrp, size_t *cap, size_t need, size_t elem)
{
    return need <= *cap ? 0 : grow_reserve_slow(arrp, cap, need, elem);
}

#endif
