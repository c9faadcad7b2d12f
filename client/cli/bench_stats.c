/*
 * bench_stats - the figures of `protobus bench`: latency samples and their
 * percentiles, event rates, CPU time, and the RESULT line they feed.
 *
 * Threads: samples belong to one thread while it runs; the main thread
 * merges and reports them after joining it.
 */
#include "bench_stats.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

bool bench_samples_init(bench_samples *s, size_t cap)
{
    s->n = 0;
    s->cap = cap ? cap : 1;
    s->v = malloc(s->cap * sizeof *s->v);
    return s->v != NULL;
}

void bench_samples_merge(bench_samples *dst, const bench_samples *src)
{
    for (size_t i = 0; i < src->n; i++)
        bench_samples_add(dst, src->v[i]);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile over a sorted array, in microseconds. */
static double pct_us(const bench_samples *s, double p)
{
    if (!s->n)
        return 0;
    size_t rank = (size_t)(p / 100.0 * (double)s->n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > s->n)
        rank = s->n;
    return (double)s->v[rank - 1] / 1000.0;
}

void bench_result_add(bench_result *res, const char *fmt, ...)
{
    size_t len = strlen(res->text);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->text + len, sizeof res->text - len, fmt, ap);
    va_end(ap);
}

void bench_report_latency(const char *name, bench_samples *s, bench_result *res)
{
    qsort(s->v, s->n, sizeof *s->v, cmp_i64);
    double p50 = pct_us(s, 50), p99 = pct_us(s, 99), p999 = pct_us(s, 99.9);
    double mx = s->n ? (double)s->v[s->n - 1] / 1000.0 : 0;
    printf("%-9s latency (us, %zu samples): p50 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n", name, s->n,
           p50, p99, p999, mx);
    bench_result_add(res, " %s_p50_us=%.1f %s_p99_us=%.1f %s_p999_us=%.1f %s_max_us=%.1f", name,
                     p50, name, p99, name, p999, name, mx);
}

void bench_report_rate(const char *what, uint64_t events, int64_t ns, size_t size,
                       bench_result *res)
{
    double secs = (double)ns / 1e9;
    double evs = secs > 0 ? (double)events / secs : 0;
    double mbs = evs * (double)size / 1e6;
    printf("%-9s %" PRIu64 " events in %.3f s: %.0f events/s, %.1f MB/s\n", what, events, secs, evs,
           mbs);
    bench_result_add(res, " %s_events=%" PRIu64 " %s_secs=%.3f %s_ev_s=%.0f %s_mb_s=%.1f", what,
                     events, what, secs, what, evs, what, mbs);
}

double bench_cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}
