/*
 * unlinker - the daemon's one background thread that unlinks the files
 * retention has removed, so that no partition writer spends its time on it.
 *
 * Why: unlinking a 16 MiB segment costs ext4 about 3 ms (freeing its
 * extents), on the writer thread 11% of a publisher's time while retention
 * removes (strace of the retention bench). The writer keeps every change
 * that readers and recovery can see: it renames the segment out of their
 * sight (<base>.log -> <base>.log.del) and syncs the directory, in order,
 * oldest first (removal.c); only the unlinks of the renamed file and of
 * its index, which nobody lists any more, come here. A crash leaves
 * .log.del and orphan .idx files, which the next open of the partition
 * removes.
 *
 * The same goes for a plain segment a compressed copy replaces: the writer
 * holds it open across the rename (which would otherwise free its extents
 * on the writer's thread) and hands the descriptor here to be closed.
 *
 * Freed in steps: a removed segment (a <base>.log.del path, opened, then
 * unlinked; or a descriptor whose name is gone) larger than
 * UNLINKER_STEP_BYTES, when the unlinker's descriptor is the only way to
 * its data (fileio sole_open: no hard link, and a write lease: no reader
 * has it open, in this process or another), is truncated from its end
 * UNLINKER_STEP_BYTES at a time (more for a file over UNLINKER_MAX_STEPS
 * MiB: never more than that many steps), with a pause of
 * UNLINKER_STEP_PAUSE_NS after each step while fewer than
 * UNLINKER_PACED_BELOW files wait, then closed. Indexes and compressed
 * copies are unlinked as they are (a reader may open an index by name). Why:
 * ext4 (mounted with discard here) frees a 16 MiB segment's extents in
 * one go, and the partition writer's next writes wait behind it: in the
 * retention bench the direct path's sync_file_range of the head block
 * took 230-300 ms per 1.5 GB published against 45-105 ms with no file
 * freed; freed in 1 MiB steps 1 ms apart, 43-85 ms (perf trace;
 * tests/bench/NOTES.md). The price: each step is a truncation (~0.1 ms
 * of system CPU, ~1.3 ms of waiting): ~0.12 s of this thread's CPU per
 * 1.5 GB freed against 0.02 s for whole unlinks; 4 MiB steps would halve
 * that but leave the writer waiting about half as long again. The file
 * has no name during the steps, so a crash amid them leaves nothing the
 * log or a reader sees (the file system frees the orphan).
 *
 * Bounded: at most UNLINKER_MAX_QUEUED paths (or descriptors, at most
 * UNLINKER_MAX_FDS of them) wait; beyond that (or without
 * memory) unlinker_take refuses and the writer unlinks the file itself, as
 * before. The thread runs at normal priority: the space is freed soon after
 * the removal's directory sync (within about a second of the removal: the
 * upkeep tick makes it when no rotation does), so retain_bytes and
 * min_free_bytes see it.
 *
 * Recycling (recycle_segments; recycle.h): a removed segment handed over
 * with unlinker_take_recycle is zeroed into a spare of its partition
 * directory instead of being freed, while fewer spares than asked exist
 * and the file allows it (no hard link, no other descriptor, a file system
 * with ZERO_RANGE); the zeroing (3-20 ms for 16 MiB) and its syncs run
 * here, never on the writer.
 *
 * Threads: unlinker_take from any thread (the writers); the unlinks, and
 * their failure messages (WARN naming the file), on the unlinker's thread.
 */
#ifndef PB_UNLINKER_H
#define PB_UNLINKER_H

#include "fileio.h"
#include "recycle.h" /* spare_ledger */

#include <stdint.h>

#define UNLINKER_MAX_QUEUED 1024
/* Of them, descriptors: each is open outside the daemon's fd budget
 * (fdbudget.h), whose spare is small; beyond this the writer closes it. */
#define UNLINKER_MAX_FDS 16

/* Freeing in steps (above): a 16 MiB segment takes about 16 ms, a 1 GiB
 * one about a second while nothing else waits. */
#define UNLINKER_STEP_BYTES (1024 * 1024)
#define UNLINKER_STEP_PAUSE_NS 1000000L
#define UNLINKER_PACED_BELOW 4
#define UNLINKER_MAX_STEPS 64

typedef struct unlinker unlinker;

/* Starts the thread. 0 or a negative code. */
int unlinker_start(unlinker **out);

/* Queues path (copied) for io->unlink; io must outlive the unlinker.
 * 0, or a negative code (queue full, no memory, stopping): the caller
 * unlinks it itself. A missing file is no error. */
int unlinker_take(unlinker *u, const fileio *io, const char *path);

/* As unlinker_take for a removed segment's <base>.log.del, but first tries
 * to keep it as a zeroed spare of its directory (recycle_segment, while
 * fewer than `spares` exist), on this thread; what cannot be recycled is
 * unlinked (and freed in steps) as unlinker_take's are. A spare made is
 * entered in ledger (recycle.h; NULL: none), which the queued path holds a
 * reference to until it is dealt with. */
int unlinker_take_recycle(unlinker *u, const fileio *io, const char *path, unsigned spares,
                          spare_ledger *ledger);

/* Queues a close of fd, through io->close: the last descriptor of a file
 * whose name is gone (a plain segment a compressed copy replaced), whose
 * close frees its space, as an unlink would. 0, or a negative code (as
 * for unlinker_take): the caller closes it itself. */
int unlinker_take_fd(unlinker *u, const fileio *io, int fd);

/* Waits until every path queued before the call is unlinked (tests). */
void unlinker_flush(unlinker *u);

/* Files unlinked since the start (tests, diagnostics). */
uint64_t unlinker_done(unlinker *u);

/* Of them, files freed in steps (tests, diagnostics). */
uint64_t unlinker_stepped(unlinker *u);

/* Of them, removed segments kept as spares instead (tests, diagnostics). */
uint64_t unlinker_recycled(unlinker *u);

/* Unlinks what is still queued, then stops and joins the thread; no
 * unlinker_take may follow (the partitions close first). NULL is fine. */
void unlinker_stop(unlinker *u);

#endif
