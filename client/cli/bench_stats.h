/*
 * bench_stats - the figures of `protobus bench` (bench_stats.c): latency
 * samples and percentiles, rates, CPU time, and the RESULT line they feed.
 *
 * Threads: samples belong to one thread while it runs; the main thread
 * merges and reports them after joining it.
 */
#ifndef PB_CLI_BENCH_STATS_H
#define PB_CLI_BENCH_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

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

#endif
