/*
 * testfs - file helpers the unit and integration tests share: make a
 * test's temporary directory, remove a tree, read or write a whole file, list a partition's segment
 * bases. The read/write/list helpers fail the calling cmocka test on any error. Also the mixing
 * function the tests derive their event contents from.
 */
#ifndef PB_TESTFS_H
#define PB_TESTFS_H

#include <stddef.h>
#include <stdint.h>

/* Removes path and everything below it (no symlinks followed). 0, or the
 * nftw(3) result when something could not be removed. */
int testfs_rmrf(const char *path);

/* A test's fresh directory: makes /tmp/<prefix>.XXXXXX into root (rootsz
 * bytes) and names the partition directory <root>/p (not made) in part.
 * 0, or -1 when mkdtemp fails (a cmocka setup's result). */
int testfs_make_root(char *root, size_t rootsz, const char *prefix, char *part, size_t partsz);

/* The whole file, malloc'd (one spare byte), with *len set. */
uint8_t *testfs_read_file(const char *path, size_t *len);

/* Creates or replaces path with len bytes of data. */
void testfs_write_file(const char *path, const void *data, size_t len);

/* The base offsets of dir's .log segment files, ascending; at most cap. */
size_t testfs_list_bases(const char *dir, uint64_t *bases, size_t cap);

/* SplitMix64's finaliser over x + its increment: a fixed, well-spread
 * function of x, for test data that is a function of its offset. */
static inline uint64_t testfs_mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

#endif
