/*
 * sort - sorted uint64 arrays (see sort.h). Pure, any thread.
 */
#include "sort.h"

#include <stdlib.h>

int sort_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

void sort_u64(uint64_t *v, size_t n)
{
    if (n > 1)
        qsort(v, n, sizeof *v, sort_cmp_u64);
}

size_t sort_upper_bound_u64(const uint64_t *v, size_t n, uint64_t x)
{
    size_t lo = 0, hi = n; /* the answer is in [lo, hi] */

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (v[mid] <= x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}
