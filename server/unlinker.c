/*
 * unlinker - one background thread unlinking removed segments for every
 * partition (see unlinker.h). A FIFO of paths under one mutex; the thread
 * takes them one at a time and unlinks without the lock.
 */
#include "unlinker.h"

#include "logging.h"
#include "pb_errors.h"
#include "recycle.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Its stack: one path on it at most; sanitizers grow frames. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNLINKER_STACK_BYTES (1024u * 1024u)
#else
#define UNLINKER_STACK_BYTES (128u * 1024u)
#endif

typedef struct doomed {
    struct doomed *next;
    const fileio *io;
    int fd;      /* >= 0: close it (path is empty); else unlink path */
    unsigned spares; /* a .log.del: recycle it while fewer spares exist (recycle.h) */
    spare_ledger *ledger; /* ... and tell this one (a reference held), or NULL */
    char path[]; /* NUL-terminated */
} doomed;

struct unlinker {
    pthread_mutex_t lock; /* protects everything below but done */
    pthread_cond_t wake;  /* a path queued, or stop */
    pthread_cond_t moved; /* finished moved on (flush) */
    doomed *head, *tail;
    size_t queued;
    size_t queued_fds; /* of them, descriptors (each one outside the fd budget) */
    uint64_t taken, finished; /* paths queued / dealt with since the start */
    bool stop;
    _Atomic uint64_t done;    /* unlinked (or already gone) */
    _Atomic uint64_t stepped; /* of them, freed in steps */
    _Atomic uint64_t recycled; /* removed segments made spares instead */
    pthread_t thread;
};

/* Waits UNLINKER_STEP_PAUSE_NS between two steps, unless files are waiting
 * (the space is then freed as fast as the file system can) or the daemon
 * is stopping; an enqueue may cut it short. */
static void pause_step(unlinker *u)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t); /* wake's clock: a wall-clock step cannot stretch it */
    t.tv_nsec += UNLINKER_STEP_PAUSE_NS;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&u->lock);
    if (!u->stop && u->queued < UNLINKER_PACED_BELOW)
        (void)pthread_cond_timedwait(&u->wake, &u->lock, &t);
    pthread_mutex_unlock(&u->lock);
}

/* The step for a file of size bytes: 1 MiB, more for a file over
 * UNLINKER_MAX_STEPS MiB, so that no file takes more than that many. */
static off_t step_bytes(off_t size)
{
    off_t step = size / UNLINKER_MAX_STEPS;
    return step > UNLINKER_STEP_BYTES ? step : UNLINKER_STEP_BYTES;
}

/* Frees the extents of fd's file (writable, its name gone) a step at a
 * time from its end, if it is larger than a step and fd is the only way
 * to it (sole_open: no hard link, no other descriptor): a reader that has
 * it open keeps reading a removed segment to its end. A failure stops the
 * steps: what is left goes with the close, as before. */
static void free_in_steps(unlinker *u, const fileio *io, int fd)
{
    off_t size;
    if (!io->sole_open || io->fsize(io, fd, &size) < 0 || size <= UNLINKER_STEP_BYTES ||
        io->sole_open(io, fd) != 1)
        return;
    off_t step = step_bytes(size);
    for (bool first = true; size > step; first = false) {
        size -= step;
        if (io->ftruncate(io, fd, size) < 0)
            return; /* e.g. a read-only descriptor: at once */
        if (first)
            atomic_fetch_add_explicit(&u->stepped, 1, memory_order_relaxed);
        pause_step(u);
    }
}

/* A removed segment renamed out of sight: nobody opens it by name, so it
 * may be freed in steps (an index or a compressed copy is unlinked as it
 * is: a reader may open an index by name). */
static bool steppable(const char *path)
{
    size_t n = strlen(path), k = strlen(".log.del");
    return n > k && strcmp(path + n - k, ".log.del") == 0;
}

static void unlink_one(unlinker *u, doomed *d)
{
    if (d->fd >= 0) {
        /* Its name is gone: the close only frees the space (in steps when
         * the writer opened it writable and nothing else reaches it). */
        free_in_steps(u, d->io, d->fd);
        (void)d->io->close(d->io, d->fd);
        atomic_fetch_add_explicit(&u->done, 1, memory_order_relaxed);
        return;
    }
    /* A removed segment kept as a zeroed spare is not freed at all. */
    if (d->spares > 0 && steppable(d->path) &&
        recycle_segment_into(d->io, d->path, d->spares, d->ledger) == 0) {
        atomic_fetch_add_explicit(&u->recycled, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&u->done, 1, memory_order_relaxed);
        return;
    }
    /* A .log.del is opened before its unlink and freed in steps after it,
     * nameless: a crash amid the steps leaves nothing named. */
    int fd = steppable(d->path) ? d->io->open(d->io, d->path, O_WRONLY, 0) : -1;
    int rc = d->io->unlink(d->io, d->path);
    if (fd >= 0) {
        if (rc == 0)
            free_in_steps(u, d->io, fd);
        (void)d->io->close(d->io, fd);
    }
    if (rc == 0 || rc == -ENOENT)
        atomic_fetch_add_explicit(&u->done, 1, memory_order_relaxed);
    else
        logging_printf(LOG_WARN,
                       "%s: cannot unlink this segment retention removed (%s); it stays until "
                       "the partition's next start",
                       d->path, pb_strerror(rc));
}

static void *unlinker_main(void *arg)
{
    unlinker *u = arg;
    (void)pthread_setname_np(pthread_self(), "pb-unlink");
    pthread_mutex_lock(&u->lock);
    for (;;) {
        while (!u->head && !u->stop)
            pthread_cond_wait(&u->wake, &u->lock);
        doomed *d = u->head;
        if (!d)
            break; /* stopping, nothing queued */
        u->head = d->next;
        if (!u->head)
            u->tail = NULL;
        u->queued--;
        pthread_mutex_unlock(&u->lock);
        bool fd = d->fd >= 0;
        unlink_one(u, d);
        spare_ledger_drop(d->ledger);
        free(d);
        pthread_mutex_lock(&u->lock);
        u->queued_fds -= fd; /* counted until closed */
        u->finished++;
        pthread_cond_broadcast(&u->moved);
    }
    pthread_mutex_unlock(&u->lock);
    return NULL;
}

int unlinker_start(unlinker **out)
{
    unlinker *u = calloc(1, sizeof *u);
    if (!u)
        return PB_ENOMEM;
    pthread_attr_t attr;
    int rc = pthread_attr_init(&attr);
    if (rc != 0) {
        free(u);
        return -rc;
    }
    (void)pthread_attr_setstacksize(&attr, UNLINKER_STACK_BYTES); /* else the default */
    pthread_mutex_init(&u->lock, NULL);
    pthread_condattr_t ca; /* wake's pauses (pause_step) on the monotonic clock */
    pthread_condattr_init(&ca);
    (void)pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&u->wake, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&u->moved, NULL);
    rc = pthread_create(&u->thread, &attr, unlinker_main, u);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        pthread_cond_destroy(&u->moved);
        pthread_cond_destroy(&u->wake);
        pthread_mutex_destroy(&u->lock);
        free(u);
        return -rc;
    }
    *out = u;
    return 0;
}

static int enqueue(unlinker *u, const fileio *io, int fd, const char *path, unsigned spares,
                   spare_ledger *ledger)
{
    size_t n = strlen(path) + 1;
    doomed *d = malloc(sizeof *d + n);
    if (!d)
        return PB_ENOMEM;
    d->next = NULL;
    d->io = io;
    d->fd = fd;
    d->spares = spares;
    d->ledger = NULL;
    memcpy(d->path, path, n);
    pthread_mutex_lock(&u->lock);
    if (u->stop || u->queued >= UNLINKER_MAX_QUEUED ||
        (fd >= 0 && u->queued_fds >= UNLINKER_MAX_FDS)) {
        pthread_mutex_unlock(&u->lock);
        free(d);
        return -EAGAIN;
    }
    if (u->tail)
        u->tail->next = d;
    else
        u->head = d;
    u->tail = d;
    d->ledger = spare_ledger_hold(ledger);
    u->queued++;
    u->queued_fds += fd >= 0;
    u->taken++;
    pthread_cond_signal(&u->wake);
    pthread_mutex_unlock(&u->lock);
    return 0;
}

int unlinker_take(unlinker *u, const fileio *io, const char *path)
{
    return enqueue(u, io, -1, path, 0, NULL);
}

int unlinker_take_recycle(unlinker *u, const fileio *io, const char *path, unsigned spares,
                          spare_ledger *ledger)
{
    return enqueue(u, io, -1, path, spares, ledger);
}

int unlinker_take_fd(unlinker *u, const fileio *io, int fd)
{
    return fd < 0 ? PB_EINVAL : enqueue(u, io, fd, "", 0, NULL);
}

void unlinker_flush(unlinker *u)
{
    pthread_mutex_lock(&u->lock);
    uint64_t upto = u->taken;
    while (u->finished < upto)
        pthread_cond_wait(&u->moved, &u->lock);
    pthread_mutex_unlock(&u->lock);
}

uint64_t unlinker_done(unlinker *u)
{
    return atomic_load_explicit(&u->done, memory_order_relaxed);
}

uint64_t unlinker_recycled(unlinker *u)
{
    return atomic_load_explicit(&u->recycled, memory_order_relaxed);
}

uint64_t unlinker_stepped(unlinker *u)
{
    return atomic_load_explicit(&u->stepped, memory_order_relaxed);
}

void unlinker_stop(unlinker *u)
{
    if (!u)
        return;
    pthread_mutex_lock(&u->lock);
    u->stop = true;
    pthread_cond_signal(&u->wake);
    pthread_mutex_unlock(&u->lock);
    pthread_join(u->thread, NULL); /* it empties the queue before it ends */
    pthread_cond_destroy(&u->moved);
    pthread_cond_destroy(&u->wake);
    pthread_mutex_destroy(&u->lock);
    free(u);
}
