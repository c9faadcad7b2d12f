/*
 * dedup_hash - the hash of an event id (dedup.h's dedup_id_hash): what the
 * window's index is keyed by. Ingest computes it on the loop thread while
 * the event's bytes are in its cache; the window's thread only reads it.
 *
 * Threads: any.
 */
#include "dedup.h"

#include "hash.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* The process's secrets: random, so that publishers cannot pick ids that
 * share a bucket (nor the ids that would zero a multiply below); one pair
 * for all windows, so that ingest can hash an id before it knows the
 * window (dedup_id_hash). `seeded` spares the hot path a call to
 * pthread_once once they are set. */
static uint64_t secret[2];
static atomic_bool seeded;
static pthread_once_t seed_once = PTHREAD_ONCE_INIT;

static void seed_init(void)
{
    if (getrandom(secret, sizeof secret, GRND_NONBLOCK) != (ssize_t)sizeof secret) {
        uint64_t x = (uint64_t)(uintptr_t)&seed_once ^ (uint64_t)time(NULL);
        secret[0] = hash_mix(x ^ 0x6a09e667f3bcc909ull);
        secret[1] = hash_mix(x ^ 0xbb67ae8584caa73bull);
    }
    atomic_store_explicit(&seeded, true, memory_order_release);
}

#ifdef __SIZEOF_INT128__
/* The id hash: wyhash's construction (public domain) under the process's
 * secrets: 16 bytes per 64x64->128-bit multiply; an id of up to 16 bytes
 * takes two multiplies in all, one of up to 32 bytes three (hash_bytes,
 * one 8-byte word per mix of two multiplies, showed in the loop thread's
 * profile). */
static inline void mul128(uint64_t *a, uint64_t *b)
{
    __uint128_t r = (__uint128_t)*a * *b;
    *a = (uint64_t)r;
    *b = (uint64_t)(r >> 64);
}

static inline uint64_t mul_fold(uint64_t a, uint64_t b)
{
    mul128(&a, &b);
    return a ^ b;
}

static inline uint64_t rd8(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint64_t rd4(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t id_hash(const uint8_t *p, size_t len)
{
    uint64_t a, b, s = secret[0];
    if (len <= 16) {
        if (len >= 4) {
            size_t q = (len >> 3) << 2; /* 0 or 4: the halves overlap below 8 bytes */
            a = rd4(p) << 32 | rd4(p + q);
            b = rd4(p + len - 4) << 32 | rd4(p + len - 4 - q);
        } else if (len > 0) {
            a = (uint64_t)p[0] << 16 | (uint64_t)p[len >> 1] << 8 | p[len - 1];
            b = 0;
        } else {
            a = b = 0;
        }
    } else {
        size_t i = len;
        for (; i > 16; i -= 16, p += 16)
            s = mul_fold(rd8(p) ^ secret[1], rd8(p + 8) ^ s);
        a = rd8(p + i - 16); /* the last 16 bytes, overlapping what was read */
        b = rd8(p + i - 8);
    }
    a ^= secret[1];
    b ^= s;
    mul128(&a, &b);
    return mul_fold(a ^ secret[0] ^ len, b ^ secret[1]);
}
#else
static uint64_t id_hash(const uint8_t *p, size_t len)
{
    return hash_bytes(secret[0], p, len);
}
#endif

uint64_t dedup_id_hash(const uint8_t *id, size_t len)
{
    if (!atomic_load_explicit(&seeded, memory_order_acquire))
        pthread_once(&seed_once, seed_init);
    return id_hash(id, len);
}
