/*
 * topics_cold - the cold half of a partition's topic table (topics.h): the
 * topics that left memory, in DIR/topics.cold, still findable.
 *
 * The file (format in proto/FORMAT.md, Part B, "Cold topics") holds one
 * entry per topic (its name and its most recent offsets, up to the history
 * depth), sorted by (hash of the name, name), with a CRC32C at the end. It
 * is checked whole when loaded; in memory only a sparse index (every
 * COLD_INDEX_EVERY-th entry's hash and position) and a Bloom filter of the
 * hashes stay, ~16 bits per topic. So:
 *   - cold_find looks one topic up with one pread of a block of entries, and
 *     usually none (the Bloom filter answers "not there");
 *   - cold_iter reads every entry in order (a subscription's --last N);
 *   - cold_merge writes a new file merging the old one with topics leaving
 *     memory (theirs replace the file's: the table in memory is the newer
 *     one), atomically (temporary file, fdatasync, rename, directory fsync).
 *     It costs a pass over the whole file, once per eviction.
 *
 * Threads: cold_merge and cold_find on the partition's writer thread (or the
 * thread that opens or closes the partition); cold_iter on any thread, with
 * the topic table's evict lock held for reading so that no merge replaces
 * the store's state meanwhile (topics.c). All I/O goes through the
 * partition's fileio.
 */
#ifndef PB_TOPICS_COLD_H
#define PB_TOPICS_COLD_H

#include "fileio.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TOPICS_COLD_NAME "topics.cold"
#define COLD_INDEX_EVERY 64u
#define COLD_NAME_MAX    65535u

typedef struct cold_store cold_store;

/* One topic of the file, or one leaving memory (cold_merge). */
typedef struct cold_entry {
    uint64_t hash; /* hash_bytes(0, name) */
    const uint8_t *name;
    uint32_t name_len;
    uint32_t count;          /* offsets, 1..history */
    const uint64_t *offsets; /* ascending */
} cold_entry;

/* Opens DIR/topics.cold for a table keeping `history` offsets per topic:
 * reads and checks it whole and keeps its index. 0 with *out set (an empty
 * store if there is no file: *present false), PB_ENOMEM, or another negative
 * code when the file is there but damaged or unreadable (why[] says how;
 * *out is then an empty store, which cold_merge will overwrite). */
int cold_open(cold_store **out, const fileio *io, const char *dir, uint32_t history, bool *present,
              char *why, size_t whylen);

void cold_free(cold_store *c);

/* Topics in the file. */
size_t cold_count(const cold_store *c);

/* Bytes the store keeps in memory (index and filter). */
size_t cold_memory(const cold_store *c);

/* Looks topic name[0..len) (hash h) up: 0 with its offsets (up to cap, the
 * newest, ascending) in offs and *count; PB_ENOTFOUND; or an I/O error. */
int cold_find(cold_store *c, uint64_t h, const uint8_t *name, size_t len, uint64_t *offs,
              uint32_t cap, uint32_t *count);

/* Closes cold_find's descriptor (it stays open between lookups of one
 * batch; an idle partition holds none). */
void cold_release(cold_store *c);

/* Reads every entry in order. */
typedef struct cold_iter cold_iter;
int cold_iter_open(cold_store *c, cold_iter **out);
/* 1 with *e set (valid until the next call), 0 at the end, or a negative
 * code (the file changed under us, an I/O error). */
int cold_iter_next(cold_iter *it, cold_entry *e);
void cold_iter_close(cold_iter *it);

/* Writes a new file holding the old one's entries and v[0..n) (sorted by
 * cold_entry_cmp, no duplicates), an entry of v replacing the old one's for
 * the same topic, then replaces the old file and takes its index. 0, or a
 * negative code with the old file and state kept. */
int cold_merge(cold_store *c, const cold_entry *v, size_t n);

/* The file's order: by hash, then by name bytes, then by length. */
int cold_entry_cmp(uint64_t ha, const uint8_t *a, size_t alen, uint64_t hb, const uint8_t *b,
                   size_t blen);

#endif
