/*
 * iov - advancing an iovec array past bytes a short write/send took. Shared
 * by the writer's file I/O and the subscriptions' socket output. Pure.
 */
#ifndef PB_IOV_H
#define PB_IOV_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* Drops the first n bytes from the cnt entries at *iov: fully consumed
 * entries are skipped (*iov moves forward), a partly consumed one is
 * trimmed in place. Returns the number of entries left. */
static inline size_t iov_consume(struct iovec **iov, size_t cnt, size_t n)
{
    struct iovec *v = *iov;
    while (cnt > 0 && n >= v->iov_len) {
        n -= v->iov_len;
        v++;
        cnt--;
    }
    if (cnt > 0) {
        v->iov_base = (uint8_t *)v->iov_base + n;
        v->iov_len -= n;
    }
    *iov = v;
    return cnt;
}

#endif
