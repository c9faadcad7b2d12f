/*
 * grow - growable arrays (see grow.h). Any thread; no state.
 */
#include "grow.h"

#include "pb_errors.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

size_t grow_capacity(size_t cap, size_t need, size_t elem)
{
    size_t n = cap ? cap : GROW_MIN;

    if (elem == 0 || need > SIZE_MAX / elem)
        return 0;
    while (n < need)
        n = n > SIZE_MAX / 2 ? need : n * 2;
    return n > SIZE_MAX / elem ? need : n;
}

int grow_resize(void *arrp, size_t n, size_t elem)
{
    void *old, *p;

    if (elem == 0 || n == 0 || n > SIZE_MAX / elem)
        return PB_ENOMEM;
    /* The caller's pointer is read and written as bytes: arrp points at a
     * `T *`, which has the representation of a void * (POSIX requires it),
     * but is not one as far as the aliasing rules go. */
    memcpy(&old, arrp, sizeof old);
    p = realloc(old, n * elem);
    if (!p)
        return PB_ENOMEM;
    memcpy(arrp, &p, sizeof p);
    return 0;
}

int grow_reserve_slow(void *arrp, size_t *cap, size_t need, size_t elem)
{
    size_t n = grow_capacity(*cap, need, elem);
    int rc;

    if (n == 0)
        return PB_ENOMEM;
    if ((rc = grow_resize(arrp, n, elem)) < 0)
        return rc;
    *cap = n;
    return 0;
}
