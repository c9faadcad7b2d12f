/*
 * fanout_waker - the fan-out's waker thread (see fanout_waker.h).
 *
 * Two lists of slots swap: writers append to `queued` under mu (a per-slot
 * mark keeps each slot once); the thread takes the whole list by swapping
 * it with its own empty one, clears the marks, and signals outside mu, so
 * writers never wait for a signal.
 */
#include "fanout_waker.h"

#include "pb_errors.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct fanout_waker {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* work, or stop */
    uint16_t *queued;  /* mu: slots to signal */
    uint32_t nqueued;  /* mu */
    uint16_t *taken;   /* the thread's: the list being signalled */
    uint8_t *marked;   /* mu: per slot, in queued */
    bool stop;         /* mu */
    fanout_signal_fn signal;
    void *ctx;
    uint32_t nslots;
    pthread_t thread;
};

static void *waker_main(void *arg)
{
    fanout_waker *w = arg;
    (void)pthread_setname_np(pthread_self(), "pb-waker");
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (w->nqueued == 0 && !w->stop)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->nqueued == 0)
            break; /* stopping, nothing left */
        uint16_t *list = w->queued;
        uint32_t n = w->nqueued;
        w->queued = w->taken;
        w->nqueued = 0;
        w->taken = list;
        for (uint32_t k = 0; k < n; k++)
            w->marked[list[k]] = 0;
        pthread_mutex_unlock(&w->mu);
        w->signal(w->ctx, list, n);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static void waker_free(fanout_waker *w)
{
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w->queued);
    free(w->taken);
    free(w->marked);
    free(w);
}

int fanout_waker_start(fanout_waker **out, uint32_t nslots, fanout_signal_fn signal, void *ctx)
{
    fanout_waker *w = calloc(1, sizeof *w);
    if (!w)
        return PB_ENOMEM;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->nslots = nslots;
    w->signal = signal;
    w->ctx = ctx;
    w->queued = calloc(nslots + 1, sizeof *w->queued);
    w->taken = calloc(nslots + 1, sizeof *w->taken);
    w->marked = calloc(nslots + 1, 1);
    int rc = w->queued && w->taken && w->marked ? -pthread_create(&w->thread, NULL, waker_main, w)
                                                : PB_ENOMEM;
    if (rc < 0) {
        waker_free(w);
        return rc;
    }
    *out = w;
    return 0;
}

void fanout_waker_post(fanout_waker *w, const uint16_t *slots, uint32_t n)
{
    pthread_mutex_lock(&w->mu);
    bool was_empty = w->nqueued == 0;
    for (uint32_t k = 0; k < n; k++) {
        uint16_t s = slots[k];
        if (s < w->nslots && !w->marked[s]) {
            w->marked[s] = 1;
            w->queued[w->nqueued++] = s;
        }
    }
    if (was_empty && w->nqueued > 0)
        pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void fanout_waker_stop(fanout_waker *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    waker_free(w);
}
