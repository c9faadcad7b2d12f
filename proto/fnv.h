/*
 * fnv - FNV-1a, the 64-bit hash every table of names uses to spread its
 * keys (topics in the pattern and match caches, partition names in the
 * client). Not for anything an attacker could aim at: tables that take
 * untrusted keys bound their probing or their size. Inline: it runs per
 * event on cache lookups. Pure, any thread.
 */
#ifndef PB_FNV_H
#define PB_FNV_H

#include <stddef.h>
#include <stdint.h>

static inline uint64_t fnv1a_64(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ull;

    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

#endif
