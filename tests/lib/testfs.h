/*
 * testfs - file helpers the unit and integration tests share: remove a
 * tree, read or write a whole file, list a partition's segment bases.
 * The read/write/list helpers fail the calling cmocka test on any error.
 */
#ifndef PB_TESTFS_H
#define PB_TESTFS_H

#include <stddef.h>
#include <stdint.h>

/* Removes path and everything below it (no symlinks followed). 0, or the
 * nftw(3) result when something could not be removed. */
int testfs_rmrf(const char *path);

/* The whole file, malloc'd (one spare byte), with *len set. */
uint8_t *testfs_read_file(const char *path, size_t *len);

/* Creates or replaces path with len bytes of data. */
void testfs_write_file(const char *path, const void *data, size_t len);

/* The base offsets of dir's .log segment files, ascending; at most cap. */
size_t testfs_list_bases(const char *dir, uint64_t *bases, size_t cap);

#endif
