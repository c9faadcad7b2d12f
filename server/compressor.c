/*
 * compressor - one background thread compressing closed segments for
 * every partition (see compressor.h). A FIFO of jobs under one mutex; the
 * thread takes one, runs log_compress_prepare without the lock, calls
 * done(), then marks itself idle so that a cancel waiting for that job can
 * return knowing done() has returned.
 */
#include "compressor.h"

#include "log.h"
#include "logging.h"
#include "pb_errors.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Its stack: zstd keeps its state on the heap; the largest frames are the
 * two PATH_MAX paths of log_compress_prepare. Sanitizers grow frames. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define COMPRESSOR_STACK_BYTES (2u * 1024u * 1024u)
#else
#define COMPRESSOR_STACK_BYTES (512u * 1024u)
#endif

/* ioprio_set(2) has no glibc wrapper: its constants, from linux/ioprio.h. */
#define IOPRIO_WHO_PROCESS  1
#define IOPRIO_CLASS_BE     2
#define IOPRIO_CLASS_SHIFT  13
#define IOPRIO_LOWEST_LEVEL 7

struct compressor {
    pthread_mutex_t lock; /* protects head, tail, running, stop */
    pthread_cond_t wake;  /* a job queued, or stop */
    pthread_cond_t idle;  /* the running job's done() has returned */
    compress_job *head, *tail;
    compress_job *running;
    bool stop;
    _Atomic uint64_t done;
    pthread_t thread;
};

/* Lowest priorities for this thread only (Linux: the policy, nice and
 * ioprio are per thread). SCHED_IDLE first: a publish thread that wakes
 * (an fdatasync returned, a frame arrived) then takes the core from the
 * compressor at once, where a nice-19 thread may keep it for the rest of
 * its slice (EEVDF lets the running task reach parity first); nice 19 is
 * the fallback. Failing is harmless: it then competes like any thread. */
static void lower_priority(void)
{
    pid_t tid = (pid_t)syscall(SYS_gettid);
    struct sched_param sp = {.sched_priority = 0};
    int e = pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
    if (e != 0)
        logging_printf(LOG_DEBUG, "compressor: cannot use SCHED_IDLE: %s", pb_strerror(-e));
    if (setpriority(PRIO_PROCESS, (id_t)tid, 19) < 0)
        logging_printf(LOG_DEBUG, "compressor: cannot lower its CPU priority: %s",
                       pb_strerror(-errno));
    if (syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, tid,
                (IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT) | IOPRIO_LOWEST_LEVEL) < 0)
        logging_printf(LOG_DEBUG, "compressor: cannot lower its I/O priority: %s",
                       pb_strerror(-errno));
}

static void *compressor_main(void *arg)
{
    compressor *c = arg;
    (void)pthread_setname_np(pthread_self(), "pb-compress");
    lower_priority();
    pthread_mutex_lock(&c->lock);
    for (;;) {
        while (!c->head && !c->stop)
            pthread_cond_wait(&c->wake, &c->lock);
        if (!c->head)
            break; /* stopping, nothing queued */
        compress_job *job = c->head;
        c->head = job->next;
        if (!c->head)
            c->tail = NULL;
        job->next = NULL;
        c->running = job;
        pthread_mutex_unlock(&c->lock);
        job->rc = log_compress_prepare_paced(job->io, job->dir, job->base, job->level,
                                             &job->cancel, job->active_mono, &job->plain,
                                             &job->packed, job->why, sizeof job->why);
        atomic_fetch_add(&c->done, 1);
        job->done(job); /* the job may be reused from here on */
        pthread_mutex_lock(&c->lock);
        c->running = NULL;
        pthread_cond_broadcast(&c->idle);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

int compressor_start(compressor **out)
{
    *out = NULL;
    compressor *c = calloc(1, sizeof *c);
    if (!c)
        return PB_ENOMEM;
    atomic_init(&c->done, 0);
    int e = pthread_mutex_init(&c->lock, NULL);
    if (e != 0) {
        free(c);
        return -e;
    }
    if ((e = pthread_cond_init(&c->wake, NULL)) != 0)
        goto fail_lock;
    if ((e = pthread_cond_init(&c->idle, NULL)) != 0)
        goto fail_wake;
    pthread_attr_t attr;
    if ((e = pthread_attr_init(&attr)) != 0)
        goto fail_idle;
    e = pthread_attr_setstacksize(&attr, COMPRESSOR_STACK_BYTES);
    if (e == 0)
        e = pthread_create(&c->thread, &attr, compressor_main, c);
    pthread_attr_destroy(&attr);
    if (e != 0)
        goto fail_idle;
    *out = c;
    return 0;
fail_idle:
    pthread_cond_destroy(&c->idle);
fail_wake:
    pthread_cond_destroy(&c->wake);
fail_lock:
    pthread_mutex_destroy(&c->lock);
    free(c);
    return -e;
}

void compressor_submit(compressor *c, compress_job *job)
{
    job->next = NULL;
    job->rc = 0;
    job->plain = job->packed = 0;
    job->why[0] = '\0';
    atomic_store(&job->cancel, false);
    pthread_mutex_lock(&c->lock);
    if (c->tail)
        c->tail->next = job;
    else
        c->head = job;
    c->tail = job;
    pthread_cond_signal(&c->wake);
    pthread_mutex_unlock(&c->lock);
}

bool compressor_cancel(compressor *c, compress_job *job)
{
    pthread_mutex_lock(&c->lock);
    compress_job *prev = NULL;
    for (compress_job *j = c->head; j; prev = j, j = j->next) {
        if (j != job)
            continue;
        if (prev)
            prev->next = j->next;
        else
            c->head = j->next;
        if (c->tail == j)
            c->tail = prev;
        j->next = NULL;
        pthread_mutex_unlock(&c->lock);
        return true;
    }
    if (c->running == job)
        atomic_store(&job->cancel, true); /* one block's compression at most */
    while (c->running == job)
        pthread_cond_wait(&c->idle, &c->lock);
    pthread_mutex_unlock(&c->lock);
    return false;
}

uint64_t compressor_jobs_done(compressor *c)
{
    return atomic_load(&c->done);
}

void compressor_stop(compressor *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    c->stop = true;
    pthread_cond_signal(&c->wake);
    pthread_mutex_unlock(&c->lock);
    pthread_join(c->thread, NULL);
    pthread_cond_destroy(&c->idle);
    pthread_cond_destroy(&c->wake);
    pthread_mutex_destroy(&c->lock);
    free(c);
}
