/*
 * inflater - one decompress-ahead thread for every replay (see
 * inflater.h). A FIFO of segment_tasks under one mutex; a task's state
 * says where it is, so that finish() can take back one not begun yet.
 */
#include "inflater.h"

#include "pb_errors.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

/* zstd keeps its state on the heap; sanitizers grow frames. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define INFLATER_STACK_BYTES (1024u * 1024u)
#else
#define INFLATER_STACK_BYTES (256u * 1024u)
#endif

enum { TASK_QUEUED = 1, TASK_RUNNING, TASK_DONE };

struct inflater {
    pthread_mutex_t lock; /* protects head, tail, queued, stop and every task's state */
    pthread_cond_t wake;  /* a task queued, or stop */
    pthread_cond_t done;  /* a task finished */
    segment_task *head, *tail;
    size_t queued;
    bool stop;
    _Atomic uint64_t ran;
    segment_ahead ahead;
    pthread_t thread;
};

static void *inflater_main(void *arg)
{
    inflater *f = arg;
    (void)pthread_setname_np(pthread_self(), "pb-inflate"); /* per-thread CPU in NOTES */
    pthread_mutex_lock(&f->lock);
    for (;;) {
        while (!f->head && !f->stop)
            pthread_cond_wait(&f->wake, &f->lock);
        if (!f->head)
            break;
        segment_task *t = f->head;
        f->head = t->next;
        if (!f->head)
            f->tail = NULL;
        f->queued--;
        t->state = TASK_RUNNING;
        pthread_mutex_unlock(&f->lock);
        t->fn(t);
        atomic_fetch_add_explicit(&f->ran, 1, memory_order_relaxed);
        pthread_mutex_lock(&f->lock);
        t->state = TASK_DONE;
        pthread_cond_broadcast(&f->done);
    }
    pthread_mutex_unlock(&f->lock);
    return NULL;
}

static bool ahead_start(void *ctx, segment_task *t)
{
    inflater *f = ctx;
    pthread_mutex_lock(&f->lock);
    bool taken = !f->stop && f->queued < INFLATER_MAX_QUEUED;
    if (taken) {
        t->next = NULL;
        t->state = TASK_QUEUED;
        if (f->tail)
            f->tail->next = t;
        else
            f->head = t;
        f->tail = t;
        f->queued++;
        pthread_cond_signal(&f->wake);
    }
    pthread_mutex_unlock(&f->lock);
    return taken;
}

/* Takes a queued t off the FIFO; under the lock. */
static void unqueue(inflater *f, segment_task *t)
{
    segment_task *prev = NULL;
    for (segment_task *q = f->head; q && q != t; q = q->next)
        prev = q;
    if (prev)
        prev->next = t->next;
    else
        f->head = t->next;
    if (f->tail == t)
        f->tail = prev;
    f->queued--;
    t->state = 0;
}

static bool ahead_finish(void *ctx, segment_task *t)
{
    inflater *f = ctx;
    pthread_mutex_lock(&f->lock);
    if (t->state == TASK_QUEUED) {
        /* Not begun: the reader does it itself rather than wait. */
        unqueue(f, t);
        pthread_mutex_unlock(&f->lock);
        return false;
    }
    while (t->state == TASK_RUNNING)
        pthread_cond_wait(&f->done, &f->lock);
    t->state = 0;
    pthread_mutex_unlock(&f->lock);
    return true;
}

/* The reader would wait for busy: it decompresses t (a later block) in the
 * meantime, so a replay decompresses on both cores when the thread alone
 * is slower than the sending. */
static bool ahead_steal(void *ctx, segment_task *busy, segment_task *t)
{
    inflater *f = ctx;
    pthread_mutex_lock(&f->lock);
    bool taken = busy->state == TASK_RUNNING && t->state == TASK_QUEUED;
    if (taken)
        unqueue(f, t);
    pthread_mutex_unlock(&f->lock);
    return taken;
}

int inflater_start(inflater **out)
{
    *out = NULL;
    inflater *f = calloc(1, sizeof *f);
    if (!f)
        return PB_ENOMEM;
    atomic_init(&f->ran, 0);
    f->ahead = (segment_ahead){
        .start = ahead_start, .finish = ahead_finish, .steal = ahead_steal, .ctx = f};
    int e = pthread_mutex_init(&f->lock, NULL);
    if (e != 0) {
        free(f);
        return -e;
    }
    if ((e = pthread_cond_init(&f->wake, NULL)) != 0)
        goto fail_lock;
    if ((e = pthread_cond_init(&f->done, NULL)) != 0)
        goto fail_wake;
    pthread_attr_t attr;
    if ((e = pthread_attr_init(&attr)) != 0)
        goto fail_done;
    e = pthread_attr_setstacksize(&attr, INFLATER_STACK_BYTES);
    if (e == 0)
        e = pthread_create(&f->thread, &attr, inflater_main, f);
    pthread_attr_destroy(&attr);
    if (e != 0)
        goto fail_done;
    *out = f;
    return 0;
fail_done:
    pthread_cond_destroy(&f->done);
fail_wake:
    pthread_cond_destroy(&f->wake);
fail_lock:
    pthread_mutex_destroy(&f->lock);
    free(f);
    return -e;
}

const segment_ahead *inflater_ahead(inflater *f)
{
    return &f->ahead;
}

uint64_t inflater_tasks_run(inflater *f)
{
    return atomic_load_explicit(&f->ran, memory_order_relaxed);
}

void inflater_stop(inflater *f)
{
    if (!f)
        return;
    pthread_mutex_lock(&f->lock);
    f->stop = true;
    pthread_cond_signal(&f->wake);
    pthread_mutex_unlock(&f->lock);
    pthread_join(f->thread, NULL);
    pthread_cond_destroy(&f->done);
    pthread_cond_destroy(&f->wake);
    pthread_mutex_destroy(&f->lock);
    free(f);
}
