/*
 * sort - sorted arrays of uint64 (segment base offsets, offset lists): the
 * comparator, the sort and the binary search every module would otherwise
 * write again. Pure, any thread.
 */
#ifndef PB_SORT_H
#define PB_SORT_H

#include <stddef.h>
#include <stdint.h>

/* qsort comparator for uint64_t elements, ascending. */
int sort_cmp_u64(const void *a, const void *b);

/* Sorts v[0..n) ascending. */
void sort_u64(uint64_t *v, size_t n);

/* In the ascending v[0..n): the index of the first element greater than x,
 * n when there is none (so the number of elements <= x). */
size_t sort_upper_bound_u64(const uint64_t *v, size_t n, uint64_t x);

#endif
