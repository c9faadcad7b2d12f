/*
 * compressor - the daemon's one background thread that compresses closed
 * segments (compress = zstd), so that no partition writer spends its time
 * on it: a writer hands over a job (which segment, which level), the
 * compressor writes the compressed copy (log_compress_prepare: read the
 * plain file, write <base>.log.ztmp, fdatasync) and calls the job's done();
 * the writer then puts the copy in place (log_compress_install) on its own
 * thread, where every other change to its segment files happens too
 * (rotation, retention's removal): see server/compress.c for why that
 * makes removal and compression unable to race.
 *
 * The thread runs under SCHED_IDLE (nice 19 where that is refused) and at
 * the lowest best-effort I/O priority: compression uses what the writers,
 * the loop and the subscriptions leave, and a publish thread that wakes
 * takes the core back at once. While the job's partition publishes
 * (job->active_mono recent) it rests after each block as long as the block
 * took (log_compress_prepare_paced). Under a load that leaves nothing,
 * segments simply stay plain for longer (readers read both forms).
 *
 * Bounded: the queue is made of the jobs themselves (no allocation), and
 * each partition has at most one job handed over at a time, so it holds at
 * most one job per partition. One job at a time runs; its buffers (a block
 * of about 256 KiB, its compressed bound, zstd's context, a 1 MiB read
 * window) are freed after each segment.
 *
 * Threads: compressor_submit and compressor_cancel from any thread (the
 * writers; partition_close); done() runs on the compressor thread.
 */
#ifndef PB_COMPRESSOR_H
#define PB_COMPRESSOR_H

#include "fileio.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct compressor compressor;

typedef struct compress_job {
    /* Set by the submitter; read by the compressor while the job is in
     * its hands (dir must stay valid until done() or a cancel). */
    const fileio *io;
    const char *dir; /* the partition's directory */
    uint64_t base;   /* the closed segment */
    int level;       /* zstd level */
    void (*done)(struct compress_job *job);
    /* The writer's last take (CLOCK_MONOTONIC ns), or NULL: the job is
     * paced while it is recent (log_compress_prepare_paced). */
    const _Atomic uint64_t *active_mono;
    atomic_bool cancel; /* set by compressor_cancel: stop at the next block */
    /* Results, valid in done() and after it: log_compress_prepare's. */
    int rc;
    uint64_t plain, packed;
    char why[384];
    /* The compressor's. */
    struct compress_job *next;
} compress_job;

/* Starts the thread. 0 or a negative code. */
int compressor_start(compressor **out);

/* Queues job (not queued already); done(job) is called on the compressor
 * thread once its .ztmp is written (rc 1), not needed (0) or failed (< 0).
 * Jobs run in the order they were submitted. */
void compressor_submit(compressor *c, compress_job *job);

/* Takes job back: if it still waits in the queue it is removed and true is
 * returned (done() will not be called); otherwise, if it is running, asks
 * it to stop at its next block (rc -ECANCELED) and waits until its done()
 * has returned, and returns false. */
bool compressor_cancel(compressor *c, compress_job *job);

/* Jobs done since the start (for tests and metrics). */
uint64_t compressor_jobs_done(compressor *c);

/* Stops and joins the thread; every job must have been cancelled or done
 * (the partitions close first). NULL is fine. */
void compressor_stop(compressor *c);

#endif
