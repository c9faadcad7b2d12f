/*
 * simio - an in-memory file system behind the writer's fileio table
 * (server/fileio.h) that knows what a power loss would take.
 *
 * Every file remembers its durable content (as of its last fdatasync/fsync)
 * and the writes and truncations made since, in order; every directory
 * remembers its durable entries (as of its last fsync) and the creates and
 * unlinks made since. simio_power_loss() then builds "the disk after the
 * power came back": synced data kept; each unsynced write dropped, kept, or
 * torn (a prefix of it, the rest of its range zero-filled or garbage, or
 * missing), each unsynced truncation kept or not, each unsynced ZERO_RANGE
 * (zero_range: the file's other descriptors make it -EBUSY) kept, dropped
 * (the old bytes back) or kept for a part of its range, all by a seeded choice;
 * each directory keeps a seeded prefix of its unsynced entry changes (a
 * journal commits metadata in order; a rename is one change, atomic), so a
 * file whose directory was never synced usually disappears. simio_restart() is the milder crash
 * (kill -9): the page cache survives, only the descriptors go.
 *
 * Also for tests: a crash point (the n-th counted operation finds the power
 * gone: it and every later one fail with EIO and change nothing), injected
 * errors (EIO, ENOSPC, ... on chosen calls), short writes, a broken fsync
 * that reports success and makes nothing durable, and hooks that run at
 * each file sync (to queue more work while "the disk is busy") and at each
 * write.
 *
 * Counted operations: every fileio call except close. Paths are plain
 * strings: the sim never touches the real file system except in
 * simio_import / simio_export.
 *
 * Threads: every call takes the sim's mutex, so the writer thread and the
 * test thread may use one sim together. The sync hook runs without it.
 */
#ifndef PB_SIMIO_H
#define PB_SIMIO_H

#include "fileio.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct simio simio;

/* Operation kinds, as a mask for simio_set_fault. */
enum {
    SIMIO_OPEN = 1 << 0,
    SIMIO_PWRITEV = 1 << 1,
    SIMIO_PREAD = 1 << 2,
    SIMIO_FDATASYNC = 1 << 3,
    SIMIO_FSYNC = 1 << 4,
    SIMIO_FTRUNCATE = 1 << 5,
    SIMIO_FSIZE = 1 << 6,
    SIMIO_MKDIR = 1 << 7,
    SIMIO_UNLINK = 1 << 8,
    SIMIO_LIST_DIR = 1 << 9,
    SIMIO_RENAME = 1 << 10,
    SIMIO_RMDIR = 1 << 11,
    SIMIO_ZERO_RANGE = 1 << 12,
    SIMIO_SYNCS = SIMIO_FDATASYNC | SIMIO_FSYNC,
};

/* What the last simio_power_loss did with the unsynced state. */
typedef struct simio_stats {
    uint64_t writes_dropped, writes_kept, writes_prefix, writes_zero_tail, writes_garbage_tail;
    uint64_t truncs_kept, truncs_dropped;
    uint64_t dir_ops_kept, dir_ops_forgotten;
    uint64_t zeros_kept, zeros_dropped, zeros_partial; /* unsynced ZERO_RANGE calls */
} simio_stats;

/* 0 or PB_ENOMEM. The sim starts empty, up, with no crash point. */
int simio_create(simio **out);
/* Frees everything. Descriptors still open are simply forgotten. */
void simio_destroy(simio *s);

/* The fileio table (valid until simio_destroy); io->ctx is s. */
const fileio *simio_io(simio *s);

/* Declares `path` an existing, durable directory (e.g. the data directory
 * the tests start from). 0 or PB_ENOMEM. */
int simio_add_root(simio *s, const char *path);

/* Copies the regular files of real_dir into sim_dir (declared a root) as
 * durable files. 0, or a negated errno / PB_ENOMEM. */
int simio_import(simio *s, const char *real_dir, const char *sim_dir);

/* Writes the current content of every file directly in sim_dir into
 * real_dir (created if missing; same-named files replaced, others left).
 * After simio_power_loss the current content is the durable one. 0 or a
 * negated errno (PB_ENOTFOUND if sim_dir does not exist). */
int simio_export(simio *s, const char *sim_dir, const char *real_dir);

/* The power goes out when the op-th counted operation (counting from the
 * sim's creation or its last restart/power loss) starts; 0 = never. */
void simio_crash_at(simio *s, uint64_t op);
/* Counted operations so far. */
uint64_t simio_ops(simio *s);
/* True once the crash point has been reached. */
bool simio_is_down(simio *s);

/* Process crash and restart (kill -9): every descriptor is dropped, nothing
 * becomes durable or is lost, the counter restarts, the sim is up again. */
void simio_restart(simio *s);

/* Power loss now (if the crash point has not already taken the power) and
 * back: replaces the state with what the disk holds afterwards, chosen with
 * `seed` (same seed and history, same result). Every descriptor is dropped,
 * everything left is durable, the counter restarts, the sim is up. *st (may
 * be NULL) says what happened to the unsynced state. 0, or PB_ENOMEM (the
 * sim is then unusable except for simio_destroy). */
int simio_power_loss(simio *s, uint64_t seed, simio_stats *st);

/* From now on, calls whose kind is in ops_mask (and whose path contains
 * path_contains, unless NULL) fail with -err, after the first `skip` such
 * calls have gone through; a failing disk stays failed. A failed call
 * changes nothing, except a failed fdatasync/fsync of a regular file
 * (fsyncgate, as Linux does): the file's changes pending at it stay
 * visible to reads but are lost at the next power loss, even when a
 * later sync of the file succeeds. mask 0 clears it. The string is
 * copied. 0 or PB_ENOMEM. */
int simio_set_fault(simio *s, unsigned ops_mask, uint64_t skip, int err, const char *path_contains);

/* pwritev writes at most n bytes per call (0 = no limit). */
void simio_set_max_write(simio *s, size_t n);

/* true: fdatasync and fsync return 0 and make nothing durable (the bug
 * the power-loss tests must catch). */
void simio_set_broken_fsync(simio *s, bool broken);

/* fn(ctx) runs at the start of every fdatasync/fsync of a regular file,
 * on the caller's thread, without the sim's lock. NULL clears it. */
void simio_set_sync_hook(simio *s, void (*fn)(void *ctx), void *ctx);
/* The same at the start of every pwritev (before it is counted), e.g. to
 * hold a write until another thread got somewhere, then inject a fault
 * (simio_set_fault) that this write already meets. NULL clears it. */
void simio_set_write_hook(simio *s, void (*fn)(void *ctx), void *ctx);

/* Notes the number (simio_ops) of every counted operation of a kind in
 * ops_mask into out[0..cap) from now on, e.g. to crash right after each
 * ZERO_RANGE; mask 0 stops. simio_logged_ops: how many were noted. */
void simio_log_ops(simio *s, unsigned ops_mask, uint64_t *out, size_t cap);
size_t simio_logged_ops(simio *s);

#endif
