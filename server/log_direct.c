/*
 * log_direct - a large append written around the page cache (see
 * log_internal.h, log_direct_write).
 *
 * Why: with fsync = always every byte appended was copied by the kernel
 * into the page cache, then written out by the fdatasync that followed:
 * that copy and its bookkeeping were the largest share of the daemon's CPU
 * when publishing 1 KiB events (perf: copy_folio_from_iter_atomic 34%, the
 * ext4 delayed-allocation and writeback paths a few % more). A direct
 * write (O_DIRECT) hands the device the user buffer instead.
 *
 * How: O_DIRECT needs the buffer, the file position and the length aligned
 * to the logical block size (4096 covers 512 and 4096; opt.direct_align). The bytes
 * that complete the block the segment ends in go the ordinary way (that
 * block holds bytes already written, maybe acknowledged: they are never
 * written again by this path); then the records are gathered into an
 * aligned staging buffer and whole blocks go out through a second
 * descriptor opened with O_DIRECT, at most DIRECT_STAGE bytes per write;
 * what is left, less than one block, is written the ordinary way, so the
 * file's size is always exactly the bytes appended (no padding a reader
 * could see). The head block's bytes are written out (sync_file_range)
 * before the first direct write: an unwritten page of the append must not
 * sit in front of records that reached the disk (a crash before the
 * fdatasync, with the file's new size committed by another partition's
 * sync, would leave damage followed by records, which recovery keeps).
 * Nothing about durability changes: a direct
 * write, like a buffered one, is durable only after the fdatasync that
 * log_sync does (the device may cache it); the kernel keeps buffered
 * readers coherent (a direct write drops the cached pages it covers).
 *
 * Pipelined: NSTAGE staging buffers and a helper thread (pbd:NAME,
 * started with the first direct write, joined when the buffers are given
 * back). While the helper writes one stage, the writer thread fills the
 * next: it computes the CRC32C of each record as it reaches its header (log.c's
 * log_append leaves them to this copy when direct writes are on: the
 * records are read once for the CRC and once more, from the CPU's cache,
 * for the copy) and copies it in. So the CPU's per-byte work of a large
 * append runs while the device writes, instead of between its writes. The
 * helper runs its queue in file order, one write at a time, going on to
 * the next stage as soon as one is written (the head block's write, with
 * its write-out, first: the writer fills the first stage meanwhile, and
 * writes it after FIRST_STAGE bytes; the last partial block, the ordinary
 * way, last); the stages filled meanwhile go out together, one pwritev
 * (gather: the writer copies faster than the device writes, so the writes
 * after the first are of up to NSTAGE stages); every write has
 * finished before log_direct_write returns. Without a thread (pthread_create
 * failed) the writes are made in line, as before.
 *
 * The helper also runs log_append_sync's fdatasync (a sync job, queued
 * right behind the append's last write), so that the device goes from the
 * writes to the sync without waiting for the writer, and the writer can
 * prepare and copy the next append meanwhile; that append's jobs queue
 * behind the sync. A sync job's outcome is kept apart from the writes' (a
 * failed sync fails the log, as log_sync's would; it never turns direct
 * writes off). The writer's own file calls may run while a sync does (the
 * index, dropping cached pages); before writing to or closing the segment
 * itself it waits for that sync (log_sync_collect).
 *
 * A file system that refuses O_DIRECT (open or write EINVAL), or any failed
 * direct write, makes this log go back to buffered writes for good, with a
 * message; the caller then writes the whole append the ordinary way, over
 * what this path wrote of it (the same bytes, none of them acknowledged).
 * Only a failure of an ordinary write fails the log, or of the head
 * block's write-out (a writeback error, which Linux reports to one call
 * only: the log fails as by a failed sync, run_job).
 *
 * Threads: the partition's writer thread, like the rest of pb_log, and the
 * helper thread, which only runs the direct writes and syncs the writer
 * hands it (direct_io's job, under its mutex).
 */
#include "log_internal.h"

#include "logging.h"
#include "pb_errors.h"
#include "sched_attr.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define DIRECT_ALIGN_DEFAULT 4096u
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DIRECT_HELPER_STACK (1024u * 1024u)
#else
#define DIRECT_HELPER_STACK (64u * 1024u)
#endif
#ifndef DIRECT_STAGE
#define DIRECT_STAGE (1024u * 1024u) /* bytes of each staging buffer */
#endif
/* Staging buffers: while the helper writes one, the writer fills the
 * others; the helper writes the full ones queued behind it together
 * (one pwritev of up to NSTAGE of them: see helper_main). */
#ifndef NSTAGE
#define NSTAGE 4u
#endif
/* The first stage of an append is written when this much is copied (or
 * the block size, if larger): the device waits for that copy. */
#ifndef FIRST_STAGE
#define FIRST_STAGE (256u * 1024u)
#endif

/* One write for the helper: len bytes of buf at pos of fd, then (out) the
 * same range written out to the device; or (sync) an fdatasync of fd
 * (log_direct_sync_submit). */
typedef struct job {
    const fileio *io;
    int fd;
    uint8_t *buf;
    size_t len;
    uint64_t pos;
    bool out;
    bool plain; /* an ordinary write (not through the O_DIRECT descriptor) */
    bool sync;
} job;

/* Jobs queued at most (job_submit waits for room): the previous append's
 * sync, the head block's, one per staging buffer, the last partial block's
 * and this append's sync. */
#define QUEUE (NSTAGE + 4u)

/* The staging buffers and the helper thread that writes them. */
struct direct_io {
    uint8_t *stage[NSTAGE];
    bool threaded; /* the helper runs; else jobs are done in line */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    /* Under mu: the jobs queued (FIFO: the helper goes from one to the
     * next without waiting for the writer), how many were queued and done
     * since the start, and the first failure (later jobs are skipped). */
    job q[QUEUE];
    unsigned head, n;
    uint64_t queued, finished;
    int err;
    bool err_plain; /* the failed job was an ordinary write (head or last block) */
    bool err_out;   /* ... its write-out (the device's writeback error: as a failed sync) */
    bool quit;
    /* Under mu: the outcome of the last sync job and how long its
     * fdatasync took (kept apart from err: a failed sync is the log's
     * failure, never a reason to give up direct writes). */
    int sync_rc;
    uint64_t sync_ns;
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int write_at(const fileio *io, int fd, uint8_t *buf, size_t len, uint64_t pos)
{
    struct iovec v = {.iov_base = buf, .iov_len = len};
    return fileio_write_all(io, fd, &v, 1, (off_t)pos);
}

/* A write-out the file or file system does not do (only its order is
 * lost: see submit_lead), rather than a page that failed to write. */
static bool out_unsupported(int rc)
{
    return rc == -EINVAL || rc == -ENOSYS || rc == -ESPIPE || rc == -EOPNOTSUPP;
}

/* 0 or the write's error; *out_failed: the write-out failed. Such a
 * failure is the device's writeback error, which Linux reports (and
 * clears) to this descriptor once: the next fdatasync of log->fd would
 * return 0 though a page failed to write, so it fails the log as a failed
 * sync would (settle). An unsupported write-out only costs its order. */
static int run_job(const job *j, bool *out_failed)
{
    int rc = write_at(j->io, j->fd, j->buf, j->len, j->pos);
    if (rc == 0 && j->out && j->io->write_out) {
        int w = j->io->write_out(j->io, j->fd, (off_t)j->pos, (off_t)j->len);
        if (w < 0 && !out_unsupported(w)) {
            *out_failed = true;
            rc = w;
        }
    }
    return rc;
}

/* Mu held: the outcome of job j (out_failed: its write-out failed). */
static void job_done(direct_io *d, const job *j, int rc, bool out_failed)
{
    if (j->sync) {
        d->sync_rc = rc;
    } else if (rc < 0 && d->err == 0) {
        d->err = rc;
        d->err_plain = j->plain;
        d->err_out = out_failed;
    }
    d->finished++;
}

/* A direct write of whole stages (not the head's, not the last block's,
 * not a sync). */
static bool stage_job(const job *j)
{
    return !j->sync && !j->plain && !j->out;
}

/* Mu held, job j first in the queue: how many queued jobs (j and the
 * direct writes right behind it, each starting where the one before ends)
 * go out together as one pwritev (v: their buffers). One write of several
 * MiB keeps the device busy across what would be the gaps between 1 MiB
 * writes: the helper's wake-up after each (it waits for a core with the
 * loop, the writer and the publisher; 0.1-0.3 ms), and the device's own
 * overhead per request (dd oflag=direct: 1.2 GB/s at 1 MiB, 1.4 at 4 MiB). */
static unsigned gather(const direct_io *d, const job *j, struct iovec *v)
{
    v[0] = (struct iovec){.iov_base = j->buf, .iov_len = j->len};
    if (!stage_job(j))
        return 1;
    unsigned m = 1;
    uint64_t end = j->pos + j->len;
    while (m < d->n && m < NSTAGE) {
        const job *k = &d->q[(d->head + m) % QUEUE];
        if (!stage_job(k) || k->fd != j->fd || k->pos != end)
            break;
        v[m++] = (struct iovec){.iov_base = k->buf, .iov_len = k->len};
        end += k->len;
    }
    return m;
}

/* The helper's time slice (sched_setattr's sched_runtime for a fair task,
 * Linux 6.12 and later; 0.1 ms is the least it takes). The helper sleeps
 * in every write and sync and, woken by the device, waited for a core
 * behind the loop thread, the writer and the publisher, all busy on two
 * cores: ~0.1 ms a wake-up (its run-queue wait in /proc/.../schedstat:
 * 0.25-0.4 s of a 1.1-1.7 s publish of 1M x 1 KiB), the device idle
 * meanwhile. A short slice gives it an early deadline, so that it runs at
 * once when woken (0.06-0.27 s). It asks for nothing else: same policy,
 * same nice, no privilege; a kernel without custom slices ignores it, one
 * that refuses it (older flags, a seccomp filter) gets a DEBUG line. */
#define HELPER_SLICE_NS 100000ull

static void ask_short_slice(void)
{
#ifdef SYS_sched_setattr
    pb_sched_attr a = {.size = PB_SCHED_ATTR_SIZE,
                       .flags = PB_SCHED_FLAG_KEEP_POLICY,
                       .runtime = HELPER_SLICE_NS};
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
    if (errno != 0)
        return;
    a.nice = nice;
    if (syscall(SYS_sched_setattr, 0, &a, 0) != 0)
        logging_printf(LOG_DEBUG, "direct-write helper: no 0.1 ms time slice (sched_setattr): %s",
                       pb_strerror(-errno));
#endif
}

static void *helper_main(void *arg)
{
    direct_io *d = arg;
    ask_short_slice();
    pthread_mutex_lock(&d->mu);
    for (;;) {
        while (d->n == 0 && !d->quit)
            pthread_cond_wait(&d->work, &d->mu);
        if (d->n == 0)
            break; /* quit, nothing queued */
        job j = d->q[d->head];
        struct iovec v[NSTAGE];
        unsigned m = gather(d, &j, v);
        /* After a failed write: the append is redone or fails. A sync is
         * always made (one queued behind a failed write does not count for
         * the append, but its failure fails the log: finish_append). */
        bool skip = d->err != 0 && !j.sync;
        pthread_mutex_unlock(&d->mu);
        uint64_t t0 = j.sync ? mono_ns() : 0;
        bool out_failed = false;
        int rc = j.sync ? j.io->fdatasync(j.io, j.fd)
                 : skip ? 0
                 : m > 1 ? fileio_write_all(j.io, j.fd, v, m, (off_t)j.pos)
                          : run_job(&j, &out_failed);
        pthread_mutex_lock(&d->mu);
        if (j.sync)
            d->sync_ns = mono_ns() - t0;
        /* The jobs written together are done together (a failure is the
         * first one's: the ones after it count as skipped). */
        for (unsigned i = 0; i < m; i++) {
            job_done(d, &d->q[d->head], i == 0 ? rc : 0, out_failed);
            d->head = (d->head + 1) % QUEUE;
            d->n--;
        }
        pthread_cond_signal(&d->done);
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

/* Queues job j for the helper (fewer than QUEUE are queued: the caller
 * waits for a stage's job before refilling it); its number, for
 * job_wait. Without a helper, runs it now. */
static uint64_t job_submit(direct_io *d, const job *j)
{
    if (!d->threaded) {
        bool out_failed = false;
        int rc = d->err ? 0 : run_job(j, &out_failed);
        job_done(d, j, rc, out_failed);
        return ++d->queued;
    }
    pthread_mutex_lock(&d->mu);
    while (d->n == QUEUE)
        pthread_cond_wait(&d->done, &d->mu);
    d->q[(d->head + d->n) % QUEUE] = *j;
    d->n++;
    uint64_t seq = ++d->queued;
    pthread_cond_signal(&d->work);
    pthread_mutex_unlock(&d->mu);
    return seq;
}

/* Waits until job seq (and all before it) is done; the first failure so
 * far, or 0. */
static int job_wait(direct_io *d, uint64_t seq)
{
    if (!d->threaded)
        return d->err;
    pthread_mutex_lock(&d->mu);
    while (d->finished < seq)
        pthread_cond_wait(&d->done, &d->mu);
    int err = d->err;
    pthread_mutex_unlock(&d->mu);
    return err;
}

/* Once every job is done: the failure's kind (an ordinary write's; *out:
 * a write-out's), and the slate cleaned for the next append. */
static bool clear_error(direct_io *d, bool *out)
{
    pthread_mutex_lock(&d->mu);
    bool plain = d->err_plain;
    *out = d->err_out;
    d->err = 0;
    d->err_out = false;
    pthread_mutex_unlock(&d->mu);
    return plain;
}

/* The staging buffers, and the helper if a thread can be had (its name:
 * pbd: and the partition directory's last characters). NULL: no memory. */
static direct_io *direct_io_new(const char *dir)
{
    direct_io *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    for (unsigned i = 0; i < NSTAGE; i++) {
        void *p = NULL;
        if (posix_memalign(&p, DIRECT_ALIGN_DEFAULT, DIRECT_STAGE) != 0) {
            while (i > 0)
                free(d->stage[--i]);
            free(d);
            return NULL;
        }
        d->stage[i] = p;
    }
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->work, NULL);
    pthread_cond_init(&d->done, NULL);
    /* Its own small stack (it only calls pwrite and sync_file_range), not
     * the default RLIMIT_STACK reservation. */
    pthread_attr_t attr;
    d->threaded = pthread_attr_init(&attr) == 0;
    if (d->threaded) {
        d->threaded = pthread_attr_setstacksize(&attr, DIRECT_HELPER_STACK) == 0 &&
                      pthread_create(&d->thread, &attr, helper_main, d) == 0;
        pthread_attr_destroy(&attr);
    }
    if (d->threaded) {
        const char *base = strrchr(dir, '/');
        base = base ? base + 1 : dir;
        size_t n = strlen(base);
        char name[16];
        snprintf(name, sizeof name, "pbd:%s", n > 11 ? base + n - 11 : base);
        (void)pthread_setname_np(d->thread, name);
    }
    return d;
}

/* Gives up direct writes for this log (the ordinary path takes over). A
 * file system without O_DIRECT (open: EINVAL; tmpfs before Linux 6.6, some
 * FUSE ones) is no fault: INFO; anything else is worth a WARN. */
static int give_up(pb_log *log, int rc, const char *what)
{
    log_say(log, rc == -EINVAL ? LOG_INFO : LOG_WARN,
            "segment %s: %s failed: %s; appending through the page cache from now on",
            log->log_path, what, pb_strerror(rc));
    log->direct_off = true;
    log_direct_close(log);
    return 1;
}

/* The direct descriptor and the staging buffer, if not there yet. 0, 1
 * when direct writes are given up, or PB_EFAILED when a sync still pending
 * failed (the log failed with it: nothing is written behind it). */
static int prepare(pb_log *log)
{
    if (log->dfd < 0) {
        /* A new descriptor: nothing of the helper's runs. A failed sync
         * failed the log (its outcome is the sync's, not this write's). */
        if (log_sync_collect(log) < 0)
            return PB_EFAILED;
    }
    if (!log->dio && !(log->dio = direct_io_new(log->dir)))
        return 1; /* no memory now: this append goes the ordinary way */
    if (log->dfd < 0) {
        int fd = log->io->open(log->io, log->log_path, O_WRONLY | O_DIRECT, 0);
        if (fd < 0)
            return give_up(log, fd, "open with O_DIRECT");
        log->dfd = fd;
    }
    return 0;
}

/* opt.direct_align, or the default. */
static size_t align_of(const pb_log *log)
{
    uint32_t a = log->opt.direct_align;
    return a && (a & (a - 1)) == 0 && a <= DIRECT_STAGE ? a : DIRECT_ALIGN_DEFAULT;
}

/* Where the copy into the stage stands in the append's iovecs. */
typedef struct cursor {
    const struct iovec *iov;
    size_t cnt, i, off;
} cursor;

/* Copies up to want bytes from the cursor into the stage; returns how many
 * (fewer only at the end of the iovecs). A record header whose CRC was
 * left for this copy (log->crc_later) gets it before its first byte goes. */
static size_t take(const pb_log *log, cursor *c, uint8_t *dst, size_t want)
{
    size_t got = 0;
    while (got < want && c->i < c->cnt) {
        if (c->off == 0 && log->crc_later && log_is_header(log, &c->iov[c->i]))
            log_seal_record(c->iov, c->cnt, c->i);
        size_t left = c->iov[c->i].iov_len - c->off;
        size_t k = want - got < left ? want - got : left;
        memcpy(dst + got, (const uint8_t *)c->iov[c->i].iov_base + c->off, k);
        got += k;
        c->off += k;
        if (c->off == c->iov[c->i].iov_len) {
            c->i++;
            c->off = 0;
        }
    }
    return got;
}

static void poll_synced(pb_log *log);

/* Whether job seq (and all before it) is done. */
static bool job_over(direct_io *d, uint64_t seq)
{
    pthread_mutex_lock(&d->mu);
    bool over = d->finished >= seq;
    pthread_mutex_unlock(&d->mu);
    return over;
}

/* Before the wait for job seq: log_append_sync's waiting hook does the
 * caller's own work in turns while the job runs (at most WAIT_TURNS), each
 * after the sync before this append is taken if it is over (poll_synced:
 * that hook's caller may need it done first). Not after a failure. */
#define WAIT_TURNS 64
static void work_while_waiting(pb_log *log, uint64_t seq)
{
    direct_io *d = log->dio;
    if (!log->wait_hook || !d->threaded)
        return;
    for (unsigned i = 0; i < WAIT_TURNS && !job_over(d, seq); i++) {
        poll_synced(log);
        if (log->failed || !log->wait_hook(log->sync_hook_ctx))
            return;
    }
}

/* Waits for job seq (0: none): 0; when a job failed, after waiting for
 * all of them: 1 if a direct write did (direct writes given up: the
 * caller writes the append the ordinary way), the error if an ordinary
 * write (the head block's, the last block's) did. */
static int settle(pb_log *log, uint64_t seq)
{
    direct_io *d = log->dio;
    if (seq != 0)
        work_while_waiting(log, seq);
    if (seq == 0 || job_wait(d, seq) == 0)
        return 0;
    int rc = job_wait(d, d->queued);
    bool out = false;
    bool plain = clear_error(d, &out);
    if (out) {
        /* The error was the file's to report once, and it was reported
         * here: a later fdatasync may succeed; the log fails as by a
         * failed sync (it never heals). */
        log_fail(log, rc, "write-out (sync_file_range) of", log->log_path, log->size);
        log->failed_sync = true;
    }
    return plain ? rc : give_up(log, rc, "direct write");
}

/* The head of the append: the rest of the block the segment ends in (lead
 * bytes at pos) is written the ordinary way and then out to the device,
 * by the helper while the writer fills the first stage (from the last
 * stage, which is filled only after this job is done). Out before any direct
 * write: else a crash before the fdatasync (another partition's sync
 * having committed the file's new size) could leave this page unwritten in
 * front of direct-written records, which recovery would keep as damage
 * followed by records. A write-out the file system does not do only costs
 * that order; a failed one fails the log (run_job). */
static uint64_t submit_lead(pb_log *log, cursor *c, size_t lead, uint64_t pos)
{
    direct_io *d = log->dio;
    size_t k = take(log, c, d->stage[NSTAGE - 1], lead);
    job j = {.io = log->io,
             .fd = log->fd,
             .buf = d->stage[NSTAGE - 1],
             .len = k,
             .pos = pos,
             .out = true,
             .plain = true};
    return job_submit(d, &j);
}

void log_sync_hook_fire(pb_log *log)
{
    void (*fn)(void *) = log->sync_hook;
    if (!fn || !log->sync_done)
        return;
    log->sync_hook = NULL;
    fn(log->sync_hook_ctx);
}

/* Between two stages: if the sync begun before this append is over (its
 * writes queue behind it), its outcome goes to log_append_sync's caller
 * now (log_sync_hook_fire) rather than after the whole append: the take
 * it covers is acked a few stages sooner. */
static void poll_synced(pb_log *log)
{
    if (!log->sync_hook || !log->sync_pending || log->sync_job == 0)
        return;
    direct_io *d = log->dio;
    pthread_mutex_lock(&d->mu);
    bool over = d->finished >= log->sync_job;
    pthread_mutex_unlock(&d->mu);
    if (!over)
        return;
    (void)log_sync_collect(log); /* over: no wait */
    log_sync_hook_fire(log);
}

/* The log failed in the middle of a direct append (the sync before it,
 * poll_synced): once every job queued is over (their failures, if any,
 * come after that one), PB_EFAILED. */
static int drain(pb_log *log)
{
    direct_io *d = log->dio;
    (void)job_wait(d, d->queued);
    bool out = false;
    (void)clear_error(d, &out);
    return PB_EFAILED;
}

/* The end of a direct append (last: the job writing its last bytes): when
 * log_append_sync asked for it, the sync before is collected (its outcome
 * kept: one sync job's at a time) and this append's sync is queued right
 * behind its last write (log->dio_sync_seq), so that the device goes from
 * one to the other without waiting for this thread; then the wait for
 * that last write. */
static int finish_append(pb_log *log, uint64_t last)
{
    if (log->sync_last && log->dio->threaded) {
        (void)log_sync_collect(log);
        log_sync_hook_fire(log);
        if (!log->failed) {
            job j = {.io = log->io, .fd = log->fd, .sync = true};
            log->dio_sync_seq = job_submit(log->dio, &j);
        }
    }
    int rc = settle(log, last);
    if (rc != 0 && log->dio_sync_seq != 0) {
        /* Written again, or failed: that sync does not count, but it ran
         * (settle waited for it) over the blocks written before the
         * failure: if it failed, so does the log, for good (a failed last
         * block alone, ENOSPC, would heal: a reopen would publish records
         * whose sync failed). */
        uint64_t ns = 0;
        int s = log_direct_sync_wait(log, log->dio_sync_seq, &ns);
        log->dio_sync_seq = 0;
        if (s < 0) {
            log_fail(log, s, "fdatasync of", log->log_path, log->size);
            log->failed_sync = true;
            return rc < 0 ? rc : PB_EFAILED; /* (1: not to be written again) */
        }
    }
    return rc;
}

int log_direct_write(pb_log *log, const struct iovec *iov, size_t cnt, uint64_t bytes)
{
    /* The rest of the block the segment ends in is written the ordinary
     * way (it shares a page with bytes already written, maybe acked: those
     * are never written again), then whole blocks directly, then the last
     * partial block the ordinary way. */
    size_t align = align_of(log);
    size_t head = (size_t)(log->size % align);
    size_t lead = head ? align - head : 0;
    if (bytes < lead + align)
        return 1; /* no whole block to write directly: the ordinary way */
    int rc = prepare(log);
    if (rc != 0)
        return rc;
    direct_io *d = log->dio;
    cursor c = {.iov = iov, .cnt = cnt};
    uint64_t pos = log->size;
    uint64_t uses[NSTAGE] = {0}; /* the last job writing from each stage */
    if (lead > 0) {
        uses[NSTAGE - 1] = submit_lead(log, &c, lead, pos);
        pos += lead;
    }
    /* Fill the stages in turn while the helper writes those filled. Nothing
     * left to copy: no wait for a stage (finish_append waits for every
     * write), so that this append's sync is queued behind its last write
     * at once. */
    size_t want = FIRST_STAGE > align ? FIRST_STAGE : align;
    for (size_t cur = 0; c.i < c.cnt; cur = (cur + 1) % NSTAGE, want = DIRECT_STAGE) {
        if ((rc = settle(log, uses[cur])) != 0)
            return rc;
        size_t k = take(log, &c, d->stage[cur], want);
        if (k == 0)
            break;
        size_t whole = k / align * align; /* k < want only at the end */
        if (whole > 0) {
            job j = {.io = log->io, .fd = log->dfd, .buf = d->stage[cur], .len = whole, .pos = pos};
            uses[cur] = job_submit(d, &j);
            pos += whole;
            poll_synced(log);
            if (log->failed)
                return drain(log); /* that sync failed: nothing more is written */
        }
        if (k > whole) {
            /* The last partial block, the ordinary way, by the helper after
             * every direct write (its queue runs in order). */
            job j = {.io = log->io,
                     .fd = log->fd,
                     .buf = d->stage[cur] + whole,
                     .len = k - whole,
                     .pos = pos,
                     .plain = true};
            uses[cur] = job_submit(d, &j);
            pos += k - whole;
        }
    }
    return finish_append(log, d->queued);
}

bool log_direct_async(const pb_log *log)
{
    return log->dio && log->dio->threaded && !log->direct_off && !log->released && log->fd >= 0;
}

uint64_t log_direct_sync_submit(pb_log *log)
{
    direct_io *d = log->dio;
    if (!d || !d->threaded || log->fd < 0)
        return 0;
    job j = {.io = log->io, .fd = log->fd, .sync = true};
    return job_submit(d, &j);
}

int log_direct_sync_wait(pb_log *log, uint64_t seq, uint64_t *ns)
{
    direct_io *d = log->dio;
    pthread_mutex_lock(&d->mu);
    while (d->finished < seq)
        pthread_cond_wait(&d->done, &d->mu);
    int rc = d->sync_rc;
    *ns = d->sync_ns;
    pthread_mutex_unlock(&d->mu);
    return rc;
}

void log_direct_quiesce(pb_log *log)
{
    direct_io *d = log->dio;
    if (d && d->threaded)
        (void)job_wait(d, d->queued);
}

void log_direct_close(pb_log *log)
{
    if (log->dfd >= 0) {
        (void)log->io->close(log->io, log->dfd); /* nothing buffered behind it */
        log->dfd = -1;
    }
}

size_t log_direct_free(pb_log *log)
{
    direct_io *d = log->dio;
    if (!d)
        return 0;
    log_sync_collect(log); /* a sync begun on the helper is waited for (its outcome kept) */
    if (d->threaded) {
        pthread_mutex_lock(&d->mu);
        d->quit = true; /* nothing is in flight between appends */
        pthread_cond_signal(&d->work);
        pthread_mutex_unlock(&d->mu);
        pthread_join(d->thread, NULL);
    }
    pthread_cond_destroy(&d->work);
    pthread_cond_destroy(&d->done);
    pthread_mutex_destroy(&d->mu);
    for (unsigned i = 0; i < NSTAGE; i++)
        free(d->stage[i]);
    free(d);
    log->dio = NULL;
    return NSTAGE * DIRECT_STAGE;
}
