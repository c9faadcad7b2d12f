/*
 * fanout_waker - the live fan-out's waker thread: it signals the
 * subscription threads that the partition writers queued records for, so
 * that a writer hands over its list of ~1,000 of them in one step and goes
 * back to its queue, instead of making ~1,000 wake-ups itself (each can hand
 * its CPU to the woken thread: 15-56 ms a take under load, measured).
 *
 * Slots posted by several writers before the thread runs are signalled
 * once. What "signal" means is the caller's (fanout.c: under its list lock,
 * the eventfd of the subscription listed in that slot, if any).
 *
 * Threads: fanout_waker_post on partition writer threads, any number at
 * once; the signal callback on the waker's own thread; start and stop on
 * the thread that creates and destroys the fan-out.
 */
#ifndef PB_FANOUT_WAKER_H
#define PB_FANOUT_WAKER_H

#include <stdint.h>

typedef struct fanout_waker fanout_waker;

/* Signals slots[0..n) (each < nslots, each once). */
typedef void (*fanout_signal_fn)(void *ctx, const uint16_t *slots, uint32_t n);

/* Starts the thread. 0, PB_ENOMEM, or a negative errno. */
int fanout_waker_start(fanout_waker **out, uint32_t nslots, fanout_signal_fn signal, void *ctx);

/* Queues slots[0..n) (each < nslots) to be signalled soon. Never blocks for
 * long (one mutex, no signal made here). */
void fanout_waker_post(fanout_waker *w, const uint16_t *slots, uint32_t n);

/* Signals what is still queued, ends the thread and frees. NULL-safe. */
void fanout_waker_stop(fanout_waker *w);

#endif
