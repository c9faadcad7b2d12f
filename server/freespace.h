/*
 * freespace - the min_free_bytes check in front of a partition's writes: a
 * partition refuses publishes while the file system holding it has less
 * free space than its margin, before any write can fail with ENOSPC; and
 * the probe that tells a partition stopped by ENOSPC that space is back.
 *
 * Threads: any (no state; the fileio table's space() is called).
 */
#ifndef PB_FREESPACE_H
#define PB_FREESPACE_H

#include "fileio.h"

#include <stdbool.h>
#include <stdint.h>

/* min_free_bytes' default: 1 GiB or 5% of the file system, whichever is
 * smaller (on a 10 GiB disk, 512 MiB). */
#define FREESPACE_AUTO         UINT64_MAX
#define FREESPACE_AUTO_BYTES   (1024ull * 1024 * 1024)
#define FREESPACE_AUTO_PERCENT 5

/* The margin for a file system of `total` bytes: the setting itself, or
 * with FREESPACE_AUTO the default above. 0: no margin. */
uint64_t freespace_margin(uint64_t setting, uint64_t total);

/* Asks io->space about dir. Returns true (*avail, *margin set) if the free
 * space is below the margin; false if it is not, if the setting is 0, or
 * if it cannot be told (no space() in the table, or it failed: the write
 * itself will then say). */
bool freespace_low(const fileio *io, const char *dir, uint64_t setting, uint64_t *avail,
                   uint64_t *margin);

#endif
