/*
 * metrics - process-wide counters (see metrics.h). Relaxed atomics: a scrape
 * may see one counter a few events ahead of another, never a torn value.
 */
#include "metrics.h"

#include <dirent.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NCODES  17
#define RELAXED memory_order_relaxed

/* Bucket upper bounds. Latencies in seconds, written from nanoseconds. */
static const double lat_bounds_s[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                      0.025,   0.05,   0.1,     0.25,   0.5,   1.0,    2.5,   5.0};
#define NLAT (sizeof lat_bounds_s / sizeof lat_bounds_s[0])
static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384};
#define NBATCH (sizeof batch_bounds / sizeof batch_bounds[0])

typedef struct histogram {
    _Atomic uint64_t buckets[NLAT + 1]; /* by bound, the last is +Inf (not cumulative) */
    _Atomic uint64_t count;
    _Atomic uint64_t sum; /* nanoseconds, or events for batches */
} histogram;

static struct {
    _Atomic uint64_t conns_opened, conns_closed;
    _Atomic uint64_t refused[METRICS_REFUSED_COUNT];
    _Atomic uint64_t errors[NCODES];
    histogram fsync, ack, batch;
    _Atomic uint64_t dedup_hits;
    _Atomic uint64_t retention_segments, retention_bytes;
    _Atomic uint64_t subs_started, subs_ended, subs_live, subs_fallbacks, subs_dropped;
    _Atomic uint64_t fanout_wakeups[3];
    _Atomic uint64_t standby_outcome[3];
    _Atomic uint64_t follower_up, follower_records, follower_stopped;
} m;

static const char *const refusal_names[METRICS_REFUSED_COUNT] = {
    "max_connections", "max_handshaking", "handshake_timeout", "authentication"};
static const char *const code_names[NCODES] = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

static void add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, RELAXED);
}

static uint64_t get(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, RELAXED);
}

uint64_t metrics_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void observe(histogram *h, const double *bounds, size_t nb, double v, uint64_t sum_add)
{
    size_t i = 0;
    while (i < nb && v > bounds[i])
        i++;
    add(&h->buckets[i], 1);
    add(&h->count, 1);
    add(&h->sum, sum_add);
}

void metrics_conn_opened(void)
{
    add(&m.conns_opened, 1);
}
void metrics_conn_closed(void)
{
    add(&m.conns_closed, 1);
}
void metrics_conn_refused(enum metrics_refusal why)
{
    if ((unsigned)why < METRICS_REFUSED_COUNT)
        add(&m.refused[why], 1);
}
void metrics_error_sent(int code)
{
    add(&m.errors[code >= 0 && code < NCODES ? code : 2], 1);
}
void metrics_fsync_ns(uint64_t ns)
{
    observe(&m.fsync, lat_bounds_s, NLAT, (double)ns / 1e9, ns);
}
void metrics_ack_ns(uint64_t ns)
{
    observe(&m.ack, lat_bounds_s, NLAT, (double)ns / 1e9, ns);
}
void metrics_batch_events(uint32_t n)
{
    observe(&m.batch, batch_bounds, NBATCH, n, n);
}
void metrics_dedup_hits(uint32_t n)
{
    add(&m.dedup_hits, n);
}
void metrics_retention_removed(uint64_t segments, uint64_t bytes)
{
    add(&m.retention_segments, segments);
    add(&m.retention_bytes, bytes);
}
void metrics_sub_started(void)
{
    add(&m.subs_started, 1);
}
void metrics_sub_ended(void)
{
    add(&m.subs_ended, 1);
}
void metrics_sub_live(int live)
{
    if (live)
        add(&m.subs_live, 1);
    else
        atomic_fetch_sub_explicit(&m.subs_live, 1, RELAXED);
}
void metrics_sub_fallback(void)
{
    add(&m.subs_fallbacks, 1);
}
void metrics_sub_dropped_slow(void)
{
    add(&m.subs_dropped, 1);
}
void metrics_fanout_wakeup(int how)
{
    if (how >= 0 && how < 3)
        add(&m.fanout_wakeups[how], 1);
}

/* --- exposition ------------------------------------------------------- */

static void head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void counter(FILE *f, const char *name, const char *help, uint64_t v)
{
    head(f, name, "counter", help);
    fprintf(f, "%s %llu\n", name, (unsigned long long)v);
}

static void gauge(FILE *f, const char *name, const char *help, double v)
{
    head(f, name, "gauge", help);
    fprintf(f, "%s %.17g\n", name, v);
}

static void write_histogram(FILE *f, const char *name, const char *help, histogram *h,
                            const double *bounds, size_t nb, double sum_scale)
{
    head(f, name, "histogram", help);
    uint64_t cum = 0;
    for (size_t i = 0; i < nb; i++) {
        cum += get(&h->buckets[i]);
        fprintf(f, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[i], (unsigned long long)cum);
    }
    cum += get(&h->buckets[nb]);
    /* count is read after the buckets; the +Inf bucket must equal it. */
    fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    fprintf(f, "%s_sum %.17g\n%s_count %llu\n", name, (double)get(&h->sum) * sum_scale, name,
            (unsigned long long)cum);
}

/* Resident set size in bytes and threads, from /proc/self/status. */
static void proc_status(double *rss, double *threads)
{
    *rss = *threads = 0;
    FILE *s = fopen("/proc/self/status", "re");
    if (!s)
        return;
    char line[256];
    while (fgets(line, sizeof line, s)) {
        if (!strncmp(line, "VmRSS:", 6))
            *rss = strtod(line + 6, NULL) * 1024.0;
        else if (!strncmp(line, "Threads:", 8))
            *threads = strtod(line + 8, NULL);
    }
    fclose(s);
}

static double open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 0;
    double n = -1; /* the directory's own descriptor */
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

void metrics_standby_outcome(int how)
{
    if (how >= 0 && how < 3)
        atomic_fetch_add_explicit(&m.standby_outcome[how], 1, RELAXED);
}

void metrics_follower_connected(int up)
{
    atomic_store_explicit(&m.follower_up, up ? 1 : 0, RELAXED);
}

void metrics_follower_records(uint64_t n)
{
    atomic_fetch_add_explicit(&m.follower_records, n, RELAXED);
}

void metrics_follower_partition_stopped(void)
{
    atomic_fetch_add_explicit(&m.follower_stopped, 1, RELAXED);
}

/* The hot standby's families (metrics.h). */
static void write_standby(FILE *f)
{
    static const char *const how[3] = {"confirmed", "local", "refused"};
    head(f, "protobus_standby_publishes_total", "counter",
         "min_standby_acks = 1: stored publish batches by how they were answered.");
    for (int i = 0; i < 3; i++)
        fprintf(f, "protobus_standby_publishes_total{outcome=\"%s\"} %llu\n", how[i],
                (unsigned long long)get(&m.standby_outcome[i]));
    gauge(f, "protobus_follower_connected", "A standby (--follow): 1 while connected to its primary.",
          (double)get(&m.follower_up));
    counter(f, "protobus_follower_records_total", "A standby: records replicated and stored.",
            get(&m.follower_records));
    counter(f, "protobus_follower_partitions_stopped_total",
            "A standby: partitions that stopped replicating (content differs from the primary's).",
            get(&m.follower_stopped));
}

int metrics_write_process(FILE *f)
{
    uint64_t opened = get(&m.conns_opened), closed = get(&m.conns_closed);
    gauge(f, "protobus_connections_open", "Client connections open now.",
          opened >= closed ? (double)(opened - closed) : 0);
    counter(f, "protobus_connections_accepted_total", "Client connections accepted.", opened);
    head(f, "protobus_connections_refused_total", "counter",
         "Connections refused or closed before use, by reason.");
    for (int i = 0; i < METRICS_REFUSED_COUNT; i++)
        fprintf(f, "protobus_connections_refused_total{reason=\"%s\"} %llu\n", refusal_names[i],
                (unsigned long long)get(&m.refused[i]));
    head(f, "protobus_errors_sent_total", "counter", "Error frames sent to clients, by code.");
    for (int i = 1; i < NCODES; i++)
        fprintf(f, "protobus_errors_sent_total{code=\"%s\"} %llu\n", code_names[i],
                (unsigned long long)get(&m.errors[i]));
    write_histogram(f, "protobus_fsync_seconds", "fdatasync of a partition's log.", &m.fsync,
                    lat_bounds_s, NLAT, 1e-9);
    write_histogram(f, "protobus_publish_ack_seconds",
                    "Publish frame received to its PublishAck queued.", &m.ack, lat_bounds_s, NLAT,
                    1e-9);
    write_histogram(f, "protobus_publish_batch_events", "Events per Publish frame.", &m.batch,
                    batch_bounds, NBATCH, 1.0);
    counter(f, "protobus_dedup_hits_total",
            "Published events found stored already by their id (not stored again).",
            get(&m.dedup_hits));
    counter(f, "protobus_retention_removed_segments_total",
            "Segments removed by retention (retain_age, retain_bytes).",
            get(&m.retention_segments));
    counter(f, "protobus_retention_removed_bytes_total", "Bytes of the segments retention removed.",
            get(&m.retention_bytes));
    uint64_t started = get(&m.subs_started), ended = get(&m.subs_ended);
    uint64_t active = started >= ended ? started - ended : 0, live = get(&m.subs_live);
    gauge(f, "protobus_subscriptions_active", "Subscriptions running now.", (double)active);
    head(f, "protobus_subscriptions", "gauge", "Subscriptions now, replaying history or live.");
    fprintf(f, "protobus_subscriptions{phase=\"replay\"} %llu\n",
            (unsigned long long)(active >= live ? active - live : 0));
    fprintf(f, "protobus_subscriptions{phase=\"live\"} %llu\n", (unsigned long long)live);
    counter(f, "protobus_subscriptions_started_total", "Subscriptions started.", started);
    counter(f, "protobus_subscription_fallbacks_total",
            "Live queue overflowed: the subscription caught up from the files.",
            get(&m.subs_fallbacks));
    counter(f, "protobus_subscriptions_dropped_slow_total",
            "Subscribers dropped for not reading within write_deadline_ms.", get(&m.subs_dropped));
    static const char *const wake_how[3] = {"waker", "handed", "signalled"};
    head(f, "protobus_fanout_wakeups_total", "counter",
         "Wake-ups of tailing subscriptions after a write: records sent by the fan-out's waker "
         "itself, sent in part then handed to the subscription's thread, or the thread signalled.");
    for (int i = 0; i < 3; i++)
        fprintf(f, "protobus_fanout_wakeups_total{how=\"%s\"} %llu\n", wake_how[i],
                (unsigned long long)get(&m.fanout_wakeups[i]));
    write_standby(f);
    double rss, threads;
    proc_status(&rss, &threads);
    gauge(f, "process_resident_memory_bytes", "Resident memory size in bytes.", rss);
    gauge(f, "protobus_process_threads", "Threads of the process.", threads);
    gauge(f, "process_open_fds", "Open file descriptors.", open_fds());
    return ferror(f) ? -1 : 0;
}
