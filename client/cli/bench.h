/*
 * bench - what the files of `protobus bench` share. The command measures
 * protobusd through libprotobus (modes pub, sub, replay, latency, seek) and
 * loopback TCP (mode tcp, the baseline); see `protobus bench --help`.
 *
 *   bench.c          the command: defaults, topics and payload, threads,
 *                    the watchdog, dispatch to a mode, the RESULT line
 *   bench_options.c  usage text and option parsing
 *   bench_clients.c  publisher and subscriber threads (one pb_client each)
 *   bench_modes.c    pub/sub/latency, replay and seek: start threads, join
 *                    them, report
 *   bench_tcp.c      the loopback TCP baseline
 *   bench_stats.c    latency samples, percentiles, rates, CPU time, the
 *                    RESULT line's contents
 *
 * The client side is kept off the critical path: events are encoded by the
 * library into its batch buffer (no allocation per event), topics and the
 * payload are built once, positions are not collected (no_positions), and
 * timestamps are taken once per batch except in latency mode, where every
 * event carries its send time in client_event_time.
 *
 * Threads: the main thread parses options, starts one thread per publisher
 * and per subscriber (each owns its own pb_client and connection), joins
 * them and prints the figures. Threads share only read-only setup data
 * (bench_cfg) and a few atomics (ready flags, bench_stop).
 */
#ifndef PB_CLI_BENCH_H
#define PB_CLI_BENCH_H

#include "protobus.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define BENCH_CMD "bench"

/* What the options chose, and what is built once from them. */
typedef struct bench_cfg {
    const char *server;
    const char *mode;
    uint64_t count;
    size_t size;
    uint32_t batch;
    size_t batch_bytes;
    uint32_t in_flight;
    uint32_t pubs, subs, topics;
    bool distinct;
    const char *pattern;
    char prefix[64];
    uint64_t rate;
    const char *partition;
    bool has_offset, has_time;
    uint64_t offset;
    int64_t time_ns;
    uint64_t tcp_bytes;
    int timeout_ms;
    /* built once */
    char **topic_names;
    uint8_t *payload;
} bench_cfg;

/* Set when the run must end: the timeout passed, a signal came, or a
 * thread failed. Every thread polls it. */
extern atomic_bool bench_stop;

/* --- bench.c -------------------------------------------------------------- */

/* pthread_create with a small stack (1,000 subscriber threads stay cheap).
 * 0 or a negated errno. */
int bench_start_thread(pthread_t *t, void *(*fn)(void *), void *arg);

/* --- bench_options.c ------------------------------------------------------ */

/* Fills cfg from the command line (cfg holds the defaults). 0 to run, -1
 * when --help was printed (exit 0), else the exit status of a usage error
 * (already reported). */
int bench_parse(bench_cfg *cfg, int argc, char **argv);

/* --- bench_stats.c -------------------------------------------------------- */

/* Latency samples in ns; preallocated, never grown on the hot path. */
typedef struct bench_samples {
    int64_t *v;
    size_t n, cap;
} bench_samples;

/* The figures of a run, "RESULT key=value ..." for scripts; each mode
 * appends to it. */
typedef struct bench_result {
    char text[2048];
} bench_result;

static inline int64_t bench_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Room for cap samples (at least 1). false when out of memory. */
bool bench_samples_init(bench_samples *s, size_t cap);

/* On the hot path (every ack, every timed event): no call, no growth. */
static inline void bench_samples_add(bench_samples *s, int64_t ns)
{
    if (s->n < s->cap)
        s->v[s->n++] = ns;
}

/* Appends src to dst (sized by the caller for both). */
void bench_samples_merge(bench_samples *dst, const bench_samples *src);

/* Sorts s, prints "NAME latency (us, N samples): p50 ..." and adds
 * NAME_p50_us=... to res. */
void bench_report_latency(const char *name, bench_samples *s, bench_result *res);

/* Prints "WHAT N events in S s: E events/s, M MB/s" (payload bytes) and
 * adds WHAT_events=... to res. */
void bench_report_rate(const char *what, uint64_t events, int64_t ns, size_t size,
                       bench_result *res);

/* Appends printf output to res (truncated at its size). */
void bench_result_add(bench_result *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* User + system CPU time of this process, in seconds. */
double bench_cpu_seconds(void);

/* --- bench_clients.c ------------------------------------------------------ */

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
    atomic_bool ready;      /* a probe (empty payload) arrived: the subscription is live */
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

/* Publishes empty-payload probes until every subscriber of subs[0..n) saw
 * one (its subscription is live). 0, or a negative code (reported). */
int bench_wait_ready(const bench_cfg *cfg, bench_sub *subs, uint32_t n);

/* --- bench_modes.c, bench_tcp.c ------------------------------------------- */

/* Each runs one mode, prints its figures and adds them to res. 0, or a
 * negative code after reporting the problem. */
int bench_mode_pub_sub(bench_cfg *cfg, bool latency, bool with_subs, bench_result *res);
int bench_mode_replay(bench_cfg *cfg, bench_result *res);
int bench_mode_seek(bench_cfg *cfg, bench_result *res);
int bench_mode_tcp(bench_cfg *cfg, bench_result *res);

#endif
