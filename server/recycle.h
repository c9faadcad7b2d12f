/*
 * recycle - a segment retention removed, zeroed and kept as a spare for a
 * later rotation instead of being freed (recycle_segments; FORMAT.md Part
 * B, "Removal order" and "The end of a segment").
 *
 * Why: freeing a removed 16 MiB segment (ext4 with discard) slows every
 * disk call of the publish path by 10-20% while retention removes
 * (tests/bench/NOTES.md, "What makes a bad retention run bad"). A recycled
 * file is never freed: on ext4 FALLOC_FL_ZERO_RANGE turns its blocks into
 * unwritten extents (they read as zeros, nothing is freed or discarded) and
 * the next rotation writes over them. (XFS implements ZERO_RANGE by freeing
 * and allocating again, discard included: recycling is correct there but
 * may not save the freeing; not measured.)
 *
 * The spares of a partition are <dir>/spare.0 .. spare.<n-1> (n at most
 * RECYCLE_MAX_SPARES), names no reader, recovery or listing of segments
 * looks at. A file gets such a name only once its zeros are durable:
 * recycle_segment zeroes the <base>.log.del, fdatasyncs it, then renames
 * it and syncs the directory. So after any crash a spare holds zeros only
 * (or a header the writer put there before its own crash): a removed
 * segment's records can never come back inside a live segment.
 *
 * Threads: recycle_segment on the unlinker's thread (the zeroing takes
 * 3-20 ms: never the writer's); the writer takes spares (log_spare.c) by
 * renaming them, which only frees names: the unlinker is the only one that
 * makes spares, so the two never race for a name.
 */
#ifndef PB_RECYCLE_H
#define PB_RECYCLE_H

#include "fileio.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RECYCLE_MAX_SPARES 2u

/* The spares of one partition directory as its writer knows them without
 * looking (a rotation and each retention run would otherwise open and stat
 * every spare name: about 2.4 openat and 1 close more per rotation, the
 * time within the noise; tests/bench/NOTES.md, "The spares known without
 * looking"). slot[k] holds the bytes of spare k plus one, or 0
 * when there is none. The writer fills the slots from the directory at
 * open (log_tidy_spares), clears slot k before it renames spare k away
 * (log_take_spare) and sums them for retain_bytes (log_spare_bytes); the
 * unlinker sets slot k once it has made spare k, its name durable
 * (recycle_segment_into). Atomics, no lock: a slot has one writer at a
 * time, since the unlinker makes spare k only while the name is free and
 * the writer clears the slot only while the name exists, before its rename
 * frees the name. A stale slot costs at most a spare not taken or counted
 * until the next open, never a wrong file: the take opens the spare by name
 * and falls back to creating a segment, as before.
 *
 * Shared by the partition, which makes it, and every recycle the unlinker
 * has queued for it (a partition may close before they run): counted
 * references, the last drop frees it. */
typedef struct spare_ledger {
    _Atomic uint64_t slot[RECYCLE_MAX_SPARES];
    _Atomic unsigned refs;
} spare_ledger;

/* A ledger with no spare and one reference, or NULL without memory. */
spare_ledger *spare_ledger_new(void);

/* Another reference to l (NULL is fine); returns l. */
spare_ledger *spare_ledger_hold(spare_ledger *l);

/* Drops a reference; the last frees l. NULL is fine. */
void spare_ledger_drop(spare_ledger *l);

/* <dir>/spare.<k>. 0, or PB_EINVAL when it does not fit in cap. */
int recycle_spare_path(char *out, size_t cap, const char *dir, unsigned k);

/* Whether path's name is taken, as a rename onto it must assume: true when
 * it opens, and when the open fails for any reason but ENOENT (unsure). */
bool recycle_name_taken(const fileio *io, const char *path);

/* Makes the removed segment at del_path (a <base>.log.del whose rename is
 * durable) spare number k of its directory for the first free k below
 * spares (at most RECYCLE_MAX_SPARES): zeroed (io->zero_range), synced,
 * renamed, directory synced. 0 when it is a spare now; 1 when it is not
 * one (spares already there, spares 0, no zero_range in io, a compressed
 * segment, a hard link or another descriptor on it, a file system without
 * ZERO_RANGE, a failure):
 * the caller frees it as before. A failure after the zeroing leaves a
 * zeroed .log.del, which is as good as any. */
int recycle_segment(const fileio *io, const char *del_path, unsigned spares);

/* recycle_segment, and when it made spare k, sets the ledger's slot k to
 * its size (+1) after the directory sync. ledger NULL: recycle_segment. */
int recycle_segment_into(const fileio *io, const char *del_path, unsigned spares,
                         spare_ledger *ledger);

#endif
