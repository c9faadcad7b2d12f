/*
 * bench_tcpfile - the socket-to-disk baseline's durable receiver (see
 * bench_tcpfile.h): the reading thread fills 1 MiB buffers, the writer
 * thread writes and fdatasyncs every filled buffer queued at once.
 *
 * Threads: the caller's thread reads the socket and fills buffers; the
 * writer thread writes and syncs. The queues, done and err are under mu.
 */
#include "bench_tcpfile.h"

#include "bench_options.h"
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BUF_BYTES    (1024u * 1024u) /* one write(2) each */
#define DIRECT_ALIGN 4096u

struct tcpfile {
    int fd;  /* O_DIRECT when direct */
    int bfd; /* direct: an ordinary descriptor, for a last partial block; else -1 */
    char path[4096];
    size_t nbufs;
    uint8_t **bufs;
    size_t *fill;  /* bytes in each buffer */
    size_t *freeq; /* nfree buffers ready to fill */
    size_t *fullq; /* nfull buffers to write, in order */
    size_t *taken; /* the writer's copy of fullq */
    size_t nfree, nfull;
    pthread_mutex_t mu;
    pthread_cond_t filled, freed;
    bool done;    /* the reader queued its last buffer */
    int err;      /* the writer's first error (reported) */
    bool running; /* the writer thread is to be joined */
    pthread_t t;
    uint64_t syncs; /* writer's; read after the join */
    uint64_t written;
};

/* Writer thread: writes the n taken buffers in order, then fdatasyncs.
 * 0, or a negative code after reporting it. */
static int write_group(tcpfile *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t b = f->taken[i], off = 0;
        while (off < f->fill[b]) {
            /* Direct: whole blocks through fd, a last partial one through bfd. */
            size_t len = f->fill[b] - off;
            int fd = f->fd;
            if (f->bfd >= 0 && len % DIRECT_ALIGN != 0) {
                if (len >= DIRECT_ALIGN)
                    len -= len % DIRECT_ALIGN;
                else
                    fd = f->bfd;
            }
            ssize_t w = pwrite(fd, f->bufs[b] + off, len, (off_t)(f->written + off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                int rc = w < 0 ? -errno : -EIO;
                cli_error(BENCH_CMD, "--to-file: write to %s at byte %" PRIu64 ": %s", f->path,
                          f->written + off, strerror(-rc));
                return rc;
            }
            off += (size_t)w;
        }
        f->written += off;
    }
    if (fdatasync(f->fd) != 0) {
        int rc = -errno;
        cli_error(BENCH_CMD, "--to-file: fdatasync of %s: %s", f->path, strerror(errno));
        return rc;
    }
    f->syncs++;
    if (f->bfd >= 0)
        return 0; /* nothing cached to drop */
    /* Durable: its pages may go, as protobusd lets them go once they lie
     * page_cache_bytes behind (log_cache.c); the kernel then reuses them
     * for the next writes instead of taking fresh memory. */
    (void)posix_fadvise(f->fd, 0, (off_t)f->written, POSIX_FADV_DONTNEED);
    return 0;
}

static void *writer_main(void *arg)
{
    tcpfile *f = arg;
    pthread_mutex_lock(&f->mu);
    for (;;) {
        while (f->nfull == 0 && !f->done)
            pthread_cond_wait(&f->filled, &f->mu);
        if (f->nfull == 0)
            break; /* done, and everything is written and synced */
        size_t n = f->nfull;
        memcpy(f->taken, f->fullq, n * sizeof *f->taken);
        f->nfull = 0;
        pthread_mutex_unlock(&f->mu);
        int rc = write_group(f, n);
        pthread_mutex_lock(&f->mu);
        for (size_t i = 0; i < n; i++)
            f->freeq[f->nfree++] = f->taken[i];
        pthread_cond_signal(&f->freed);
        if (rc < 0) {
            f->err = rc;
            break;
        }
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

int tcpfile_open(const char *dir, uint64_t commit_bytes, bool direct, tcpfile **out)
{
    tcpfile *f = calloc(1, sizeof *f);
    if (!f)
        return PB_ENOMEM;
    f->fd = f->bfd = -1;
    f->nbufs = commit_bytes / BUF_BYTES < 2 ? 2 : (size_t)(commit_bytes / BUF_BYTES);
    f->bufs = calloc(f->nbufs, sizeof *f->bufs);
    f->fill = calloc(f->nbufs, sizeof *f->fill);
    f->freeq = calloc(f->nbufs, sizeof *f->freeq);
    f->fullq = calloc(f->nbufs, sizeof *f->fullq);
    f->taken = calloc(f->nbufs, sizeof *f->taken);
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->filled, NULL);
    pthread_cond_init(&f->freed, NULL);
    int rc = f->bufs && f->fill && f->freeq && f->fullq && f->taken ? 0 : PB_ENOMEM;
    for (size_t i = 0; rc == 0 && i < f->nbufs; i++) {
        void *b = NULL;
        if (posix_memalign(&b, DIRECT_ALIGN, BUF_BYTES) != 0)
            rc = PB_ENOMEM;
        f->bufs[i] = b;
        f->freeq[f->nfree++] = i;
    }
    if (rc < 0) {
        cli_error(BENCH_CMD, "--to-file: no memory for %zu buffers of 1 MiB", f->nbufs);
    } else if (snprintf(f->path, sizeof f->path, "%s/protobus-bench-tcp.XXXXXX", dir) >=
               (int)sizeof f->path) {
        cli_error(BENCH_CMD, "--to-file '%s': path too long", dir);
        rc = PB_EINVAL;
    } else if ((f->fd = mkostemp(f->path, direct ? O_DIRECT : 0)) < 0) {
        rc = -errno;
        cli_error(BENCH_CMD, "--to-file: cannot create %s%s: %s", f->path,
                  direct ? " with O_DIRECT" : "", strerror(errno));
    } else if (direct && (f->bfd = open(f->path, O_WRONLY | O_CLOEXEC)) < 0) {
        rc = -errno;
        cli_error(BENCH_CMD, "--to-file: cannot open %s: %s", f->path, strerror(errno));
    } else if ((rc = -pthread_create(&f->t, NULL, writer_main, f)) < 0) {
        cli_error(BENCH_CMD, "--to-file: cannot start a thread: %s", strerror(-rc));
    } else {
        f->running = true;
    }
    if (rc < 0) {
        tcpfile_close(f);
        return rc;
    }
    *out = f;
    return 0;
}

/* Reader: a buffer to fill, waiting for the writer to free one. -1 once
 * the writer failed. */
static long take_free(tcpfile *f)
{
    pthread_mutex_lock(&f->mu);
    while (f->nfree == 0 && f->err == 0)
        pthread_cond_wait(&f->freed, &f->mu);
    long b = f->err < 0 ? -1 : (long)f->freeq[--f->nfree];
    pthread_mutex_unlock(&f->mu);
    return b;
}

/* Reader: queues buffer b for the writer (last: nothing more comes). */
static void queue_full(tcpfile *f, long b, bool last)
{
    pthread_mutex_lock(&f->mu);
    if (b >= 0)
        f->fullq[f->nfull++] = (size_t)b;
    f->done = f->done || last;
    pthread_cond_signal(&f->filled);
    pthread_mutex_unlock(&f->mu);
}

/* Reader: lets the writer finish and joins it; its error, if any. */
static int finish(tcpfile *f)
{
    if (!f->running)
        return 0;
    queue_full(f, -1, true);
    pthread_join(f->t, NULL);
    f->running = false;
    return f->err;
}

int tcpfile_receive(tcpfile *f, int rfd, uint64_t bytes, bool *file_failed)
{
    uint64_t got = 0;
    long b = -1;
    int rc = 0;
    while (got < bytes) {
        if (b < 0) {
            if ((b = take_free(f)) < 0)
                break; /* the writer failed */
            f->fill[b] = 0;
        }
        size_t room = BUF_BYTES - f->fill[b];
        if (room > bytes - got)
            room = (size_t)(bytes - got);
        ssize_t n = read(rfd, f->bufs[b] + f->fill[b], room);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : PB_ECLOSED;
            break;
        }
        f->fill[b] += (size_t)n;
        got += (uint64_t)n;
        if (f->fill[b] == BUF_BYTES || got == bytes) {
            queue_full(f, b, got == bytes);
            b = -1;
        }
    }
    int werr = finish(f);
    if (werr < 0) {
        *file_failed = true;
        return werr;
    }
    return rc;
}

uint64_t tcpfile_syncs(const tcpfile *f)
{
    return f->syncs;
}

const char *tcpfile_path(const tcpfile *f)
{
    return f->path;
}

int tcpfile_close(tcpfile *f)
{
    if (!f)
        return 0;
    (void)finish(f);
    int rc = 0;
    if (f->bfd >= 0 && close(f->bfd) != 0)
        rc = -errno;
    if (f->fd >= 0) {
        if (close(f->fd) != 0)
            rc = -errno;
        unlink(f->path);
    }
    for (size_t i = 0; f->bufs && i < f->nbufs; i++)
        free(f->bufs[i]);
    free(f->bufs);
    free(f->fill);
    free(f->freeq);
    free(f->fullq);
    free(f->taken);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->filled);
    pthread_cond_destroy(&f->freed);
    free(f);
    return rc;
}
