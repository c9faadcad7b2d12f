/*
 * hash - the one hash of names that the tables and caches of both sides
 * use (the router's route cache, the pattern sets' and the match cache's
 * topic caches, the topic table, the client's partition-name table): a
 * seeded multiply-xorshift, 8 bytes at a time.
 *
 * Every table that uses it compares the full key, so correctness never
 * depends on the hash; a table that clients fill may pick a random seed so
 * that publishers cannot easily choose topics that all land in one probe
 * run.
 *
 * Threads: pure functions. Header-only, so it inlines into the lookups.
 */
#ifndef PB_HASH_H
#define PB_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A 64-bit finalizer: every input bit affects every output bit. */
static inline uint64_t hash_mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* The hash of p[0..len) under seed. p may be NULL when len is 0. */
static inline uint64_t hash_bytes(uint64_t seed, const void *p, size_t len)
{
    const unsigned char *s = p;
    uint64_t h = seed ^ (len * 0x9e3779b97f4a7c15ULL);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        h = hash_mix(h ^ w);
    }
    uint64_t tail = 0;
    if (len > i)
        memcpy(&tail, s + i, len - i);
    return hash_mix(h ^ tail ^ 0x5bd1e995ULL);
}

#endif
