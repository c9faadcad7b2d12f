/*
 * bench_clients - the load of `protobus bench` (bench_clients.c): publisher
 * and subscriber threads, one pb_client each, the probes that tell when
 * live subscriptions are registered, and the stop flag every thread polls.
 *
 * Threads: each bench_pub / bench_sub runs on its own thread; the main
 * thread reads its results after joining it. Shared while they run: the
 * read-only bench_cfg and bench_stop.
 */
#ifndef PB_CLI_BENCH_CLIENTS_H
#define PB_CLI_BENCH_CLIENTS_H

#include "bench_options.h"
#include "bench_stats.h"
#include "protobus.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* Set when the run must end: the timeout passed, a signal came, or a
 * thread failed. Every thread polls it. */
extern atomic_bool bench_stop;

/* pthread_create with a small stack (1,000 subscriber threads stay cheap).
 * 0 or a negated errno. */
int bench_start_thread(pthread_t *t, void *(*fn)(void *), void *arg);

/* One publisher thread and what it measured. */
typedef struct bench_pub {
    const bench_cfg *cfg;
    pthread_t tid;
    uint64_t first, n; /* global sequence numbers [first, first + n) */
    bool latency;      /* one event per batch, paced, every event timed */
    int64_t *sent_ns;  /* send time by publish sequence number & mask */
    uint64_t mask;
    bench_samples ack;
    int64_t t_start, t_end; /* monotonic */
    int rc;
    char err[512];
} bench_pub;

/* One subscriber (a thread, or the main thread in replay and seek). */
typedef struct bench_sub {
    const bench_cfg *cfg;
    pthread_t tid;
    pb_client *c;
    char pattern[160];
    pb_start_mode start;
    uint64_t expected; /* events of this run to receive */
    uint64_t received; /* ... received so far */
    uint64_t all;      /* every event received, this run's or not */
    size_t prefix_len; /* replay: count only topics starting with PREFIX. */
    bool timed;        /* latency: record delivery latency per event */
    bench_samples delivery;
    int64_t t_first, t_end; /* monotonic: first event of the run, last one */
    int rc;
    char err[512];
} bench_sub;

/* Thread body: connect, publish p->n events, flush. Result in p->rc/err. */
void *bench_pub_main(void *arg);

/* Connects s->c and subscribes with s->pattern and s->start. 0, or a
 * negative code with s->err set. */
int bench_sub_open(bench_sub *s);

/* Thread body (also called directly): receives until s->expected events
 * of the run arrived or bench_stop. Result in s->rc/err. */
void *bench_sub_main(void *arg);

/* Subscribers served by one thread (--sub-threads): subs[first],
 * subs[first + step], ... below ns, each read as soon as its connection
 * has data (epoll), until each has its expected events or bench_stop.
 * Results in each subscriber's rc/err/t_end, as bench_sub_main. */
typedef struct bench_mux {
    bench_sub *subs;
    uint32_t ns, first, step;
    pthread_t tid;
} bench_mux;
void *bench_mux_main(void *arg);

#endif
