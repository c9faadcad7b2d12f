/*
 * upkeep - what a partition's writer does besides appending: retention
 * runs (retention.h) and when the next is due, the min_free_bytes check in
 * front of writes (freespace.h), and the resume of a partition that a full
 * disk stopped (ENOSPC on a write) once space is back, without a restart.
 * partition.c embeds one `upkeep` per partition and calls in here; the
 * daemon's one-second timer asks upkeep_due() whether to wake a writer.
 *
 * Threads: functions marked "writer" run on the partition's writer thread
 * (or at open, before it starts); those marked "any" read atomics only.
 */
#ifndef PB_UPKEEP_H
#define PB_UPKEEP_H

#include "fileio.h"
#include "log.h"
#include "protobus_reader.h"
#include "retention.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct upkeep {
    const char *name; /* the partition's, for messages */
    const char *dir;
    const fileio *io;
    retention_policy retain;
    uint64_t min_free_bytes; /* 0: no check; FREESPACE_AUTO: the default */
    uint64_t (*floor)(void *ctx, const char *name);
    void *floor_ctx;
    int64_t (*now_ns)(void *ctx); /* wall clock (NULL: CLOCK_REALTIME) */
    void *clock_ctx;

    _Atomic uint64_t first_offset; /* retention raises it */
    _Atomic int64_t due_ns;        /* next retention run (or retry); INT64_MAX: none */
    atomic_bool space_low;         /* publishes refused: free space below the margin */
    _Atomic uint64_t space_avail;  /* as of the last probe, for messages */
    _Atomic uint64_t space_margin;
    atomic_bool heal_pending;     /* stopped by ENOSPC on a write: resumes when space is back */
    size_t closed_seen;           /* writer: closed segments after the last run */
    uint64_t zdone_base;          /* writer: closed segments below this base were compressed */
    atomic_bool compress_pending; /* writer sets; closed segments may wait for compression */
    /* A compression failed for a reason that may pass: none is handed over
     * before this CLOCK_MONOTONIC ns (0: no pause; partition_compress.c).
     * A resume after a full disk ends the pause. */
    _Atomic uint64_t zretry_mono;
    uint64_t probed_mono_ns; /* writer: CLOCK_MONOTONIC of the last free-space probe */
} upkeep;

/* Writer (at open): sets the fields from the arguments and runs retention
 * once (what aged while the daemon was down). Returns the log's status. */
int upkeep_init(upkeep *u, const char *name, const char *dir, const fileio *io,
                const log_options *lo, const retention_policy *retain, uint64_t min_free_bytes,
                uint64_t (*floor)(void *, const char *), void *floor_ctx, pb_log *log);

/* Writer: runs retention now. 0, or the error that failed the log. */
int upkeep_retain(upkeep *u, pb_log *log);

/* Writer, after a take: if a rotation closed a segment, runs retention
 * (the size limit may be passed), and notes that closed segments wait for
 * compression (compress = zstd: partition_compress.c hands them to the
 * compressor thread). 0 or the error that failed the log. */
int upkeep_after_take(upkeep *u, pb_log *log);

/* Any thread: closed segments may wait for compression (set at open and
 * after a rotation, cleared once all are compressed). */
bool upkeep_compress_pending(const upkeep *u);

/* Writer: the oldest closed segment not compressed yet (at or above the
 * last one handed out; already compressed ones are skipped, one small read
 * each) in *base, true; false (and the pending flag cleared) when there is
 * none. */
bool upkeep_compress_next(upkeep *u, pb_log *log, uint64_t *base);

/* Any thread: should the writer be woken for upkeep at now_ns (retention
 * due, space low, a resume pending)? */
bool upkeep_due(upkeep *u, int64_t now_ns);

/* Writer: probes the free space (statvfs); true if it is below the margin.
 * Logs the change. */
bool upkeep_space_refuses(upkeep *u);

/* Writer, before a take: the same, probing at most every
 * UPKEEP_PROBE_EVERY_MS (a take that comes sooner gets the last verdict:
 * at 1 GB/s, 10 ms is 10 MB, far inside any sensible margin). */
#define UPKEEP_PROBE_EVERY_MS 10
bool upkeep_take_refused(upkeep *u);

/* Any thread: whether publishes are refused for free space, and the
 * figures of the last probe. */
bool upkeep_space_low(upkeep *u, uint64_t *avail, uint64_t *margin);

/* Writer, after the log failed: remembers whether it may resume (ENOSPC or
 * EDQUOT on a write; never after a failed sync, whose data may be gone). */
void upkeep_note_failure(upkeep *u, pb_log *log);

/* Writer: one stored record that the resume found past the acknowledged
 * end (written whole before the disk filled, never acknowledged). */
typedef void (*upkeep_record_fn)(void *ctx, const pb_record *rec);

/*
 * Writer, with heal_pending set: if the free space is back above the
 * margin, closes the failed log and opens it again (the recovery a restart
 * would do: a torn tail cut, everything left made durable), hands every
 * record from acked_end to the new end to fn (so listeners and the topic
 * table see them, as after a restart they would be read from the files),
 * and returns 0: the log in *log is usable again. 1: not yet (space still
 * low). < 0: the reopen failed (logged; *log is NULL, tried again later).
 */
int upkeep_resume(upkeep *u, pb_log **log, const log_options *lo, uint64_t acked_end,
                  upkeep_record_fn fn, void *ctx);

/* At a graceful stop: if a full disk stopped the partition (status rc),
 * says so clearly (what is stored, what was refused, what to do). */
void upkeep_stopping(upkeep *u, int rc);

#endif
