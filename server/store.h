/*
 * store - the set of partitions of a data directory, by name.
 *
 * Threads: store_get() creates partitions on demand from the loop thread;
 * any thread may look up or list. Partitions are never removed while the
 * store is open, so a pointer obtained from it stays valid until store_close.
 */
#ifndef PB_STORE_H
#define PB_STORE_H

#include "partition.h"
#include "segment.h"
#include "pb_errors.h"

#include <stddef.h>

typedef struct store store;

/* Supplies the options for a partition by name: at start-up for the
 * partitions found on disk, later for ones created on demand. Returns 0, or a
 * negative code to refuse (the partition is then not opened). */
typedef int (*store_options_fn)(void *ctx, const char *name, partition_options *opts);

/* Creates data_dir if needed and opens (recovers) every partition found in it. */
int store_open(store **out, const char *data_dir, store_options_fn options, void *ctx);

/* What store_get returns when creating the partition would take the store
 * past max_partitions (nothing is created). */
#define STORE_EFULL PB_ETOOBIG

/* Returns the partition called name, opening it (creating its directory)
 * if it does not exist yet. STORE_EFULL: it does not exist and the store
 * holds max_partitions already. A partition that cannot be created leaves
 * nothing on disk: its directory and files are removed again. */
int store_get(store *s, const char *name, partition **out);

/* The cap on partitions store_get creates (0: none, the default). The
 * partitions found at start-up are all opened whatever their number (the
 * daemon always restarts on the data it wrote); while the store holds as
 * many as the cap or more, no new one is created. Any thread. */
void store_set_max_partitions(store *s, size_t max);
size_t store_max_partitions(store *s);

/* Partitions open now. Any thread. */
size_t store_count(store *s);

/* Looks a partition up without creating it; NULL if unknown. */
partition *store_find(store *s, const char *name);

/* A snapshot of all partitions, sorted by name. *out is malloc'd (free it);
 * the partitions themselves stay owned by the store. */
int store_list(store *s, partition ***out, size_t *count);

/* Any thread: how readers of the store's partitions read their files:
 * POSIX, with compressed blocks decompressed ahead on the store's
 * inflater thread (inflater.h). Valid until store_close. */
const segment_io *store_segment_io(store *s);

const char *store_data_dir(const store *s);

/* Closes every partition (each finishes and syncs its queue) and frees. */
int store_close(store *s);

#endif
