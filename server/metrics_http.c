/*
 * metrics_http - /metrics and /healthz over libmicrohttpd (see
 * metrics_http.h). The per-partition numbers are gathered at scrape time:
 * counters from partition_get_stats, segment files and their sizes from the
 * partition's directory, the oldest record's time from its first record.
 */
#include "metrics_http.h"

#include "logging.h"
#include "metrics.h"
#include "mirror.h"
#include "pb_errors.h"
#include "protobus_reader.h"

#include <microhttpd.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* Scrapes served at once; more wait for a slot. */
#define MAX_SCRAPES 8

/* The oldest record's time of one partition, as last read: valid while the
 * partition's first offset is the same (offsets never change content). */
typedef struct oldest_memo {
    partition *p;
    uint64_t first;
    double time_s;
} oldest_memo;

struct metrics_http {
    struct MHD_Daemon *d;
    store *st;
    mirror_set *mirrors; /* NULL: none configured */
    uint16_t port;
    /* Scrapes run on MHD's one polling thread (MHD_USE_INTERNAL_POLLING_THREAD
     * without a thread per connection): the memo needs no lock. Indexed as
     * store_list lists the partitions (by name; partitions are only ever
     * added, and one added in between shifts the entries after it, which
     * are then read from their files once more: each entry names its
     * partition). */
    oldest_memo *memo;
    size_t nmemo;
};

typedef struct part_disk {
    uint64_t segments, bytes;
    double oldest_s; /* oldest_memoized */
} part_disk;

/* Segments (.log files) and bytes of every file in the partition's directory. */
static void disk_usage(const char *dir, part_disk *du)
{
    du->segments = du->bytes = 0;
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        struct stat sb;
        if (fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode))
            continue;
        du->bytes += (uint64_t)sb.st_size;
        size_t len = strlen(e->d_name);
        if (len > 4 && strcmp(e->d_name + len - 4, ".log") == 0)
            du->segments++;
    }
    closedir(d);
}

/* Receive time of the partition's first stored record, in seconds since
 * the epoch; 0 when it has none (or it cannot be read). */
static double oldest_record_s(partition *p)
{
    if (partition_end_offset(p) == 0)
        return 0;
    pb_reader *r;
    if (pb_reader_open(&r, partition_dir(p)) < 0)
        return 0;
    pb_record rec;
    double t = pb_reader_next(r, &rec) == 0 ? (double)rec.time_ns / 1e9 : 0;
    pb_reader_close(r);
    return t;
}

/* oldest_record_s of parts[i], read from the files only when the memo
 * does not hold it for the partition's current first offset (a scrape of
 * 200 partitions reopened 200 first segments each time: 6.7 ms of CPU). */
static double oldest_memoized(metrics_http *h, partition **parts, size_t n, size_t i)
{
    if (h && h->nmemo < n) {
        oldest_memo *m = realloc(h->memo, n * sizeof *m);
        if (m) {
            memset(m + h->nmemo, 0, (n - h->nmemo) * sizeof *m);
            h->memo = m;
            h->nmemo = n;
        }
    }
    if (!h || i >= h->nmemo)
        return oldest_record_s(parts[i]);
    oldest_memo *m = &h->memo[i];
    uint64_t first = partition_first_offset(parts[i]);
    if (m->p == parts[i] && m->first == first && m->time_s > 0)
        return m->time_s;
    double t = oldest_record_s(parts[i]);
    *m = (oldest_memo){.p = parts[i], .first = first, .time_s = t};
    return t;
}

/* One family, one line per partition; `value` picks the number. */
typedef double (*part_value)(partition *p, const partition_stats *st, const part_disk *du);

static double v_events(partition *p, const partition_stats *st, const part_disk *du)
{
    return (double)st->events_appended;
}
static double v_bytes(partition *p, const partition_stats *st, const part_disk *du)
{
    return (double)st->bytes_appended;
}
static double v_next(partition *p, const partition_stats *st, const part_disk *du)
{
    return (double)partition_end_offset(p);
}
static double v_segments(partition *p, const partition_stats *st, const part_disk *du)
{
    return (double)du->segments;
}
static double v_disk(partition *p, const partition_stats *st, const part_disk *du)
{
    return (double)du->bytes;
}
static double v_oldest(partition *p, const partition_stats *st, const part_disk *du)
{
    return du->oldest_s;
}
static double v_werr(partition *p, const partition_stats *st, const part_disk *du)
{
    return (double)st->write_errors;
}
static double v_ferr(partition *p, const partition_stats *st, const part_disk *du)
{
    return (double)st->fsync_errors;
}
static double v_ahead(partition *p, const partition_stats *st, const part_disk *du)
{
    return (double)st->events_ahead;
}
static double v_first(partition *p, const partition_stats *st, const part_disk *du)
{
    return (double)partition_first_offset(p);
}
static double v_up(partition *p, const partition_stats *st, const part_disk *du)
{
    uint64_t avail, margin;
    return partition_status(p) == 0 && !partition_space_low(p, &avail, &margin);
}
static const struct family {
    const char *name, *type, *help;
    part_value value;
} families[] = {
    {"protobus_partition_events_appended_total", "counter",
     "Events stored in the partition since the daemon started.", v_events},
    {"protobus_partition_bytes_appended_total", "counter",
     "Record bytes stored in the partition since the daemon started.", v_bytes},
    {"protobus_partition_next_offset", "gauge",
     "The offset the next event will get (last offset + 1; 0 = empty).", v_next},
    {"protobus_partition_first_offset", "gauge",
     "The oldest offset still stored (retention raises it).", v_first},
    {"protobus_partition_segments", "gauge", "Segment files (.log) on disk.", v_segments},
    {"protobus_partition_disk_bytes", "gauge", "Bytes of the partition's files on disk.", v_disk},
    {"protobus_partition_oldest_record_seconds", "gauge",
     "Receive time of the oldest stored record (Unix seconds; 0 = none).", v_oldest},
    {"protobus_partition_write_errors_total", "counter", "Failed appends (write).", v_werr},
    {"protobus_partition_fsync_errors_total", "counter", "Failed fdatasync calls.", v_ferr},
    {"protobus_partition_events_admitted_ahead_total", "counter",
     "Events whose ids the dedup window checked while the take before them was written and "
     "synced.",
     v_ahead},
    {"protobus_partition_up", "gauge",
     "1 while the partition accepts writes; 0 once a write or sync failed, or while free "
     "space is below min_free_bytes.",
     v_up},
};
#define NFAMILIES (sizeof families / sizeof families[0])

/* The [mirror] sections: one line per mirror for its counters, one per
 * mirror and partition for how far JetStream has acknowledged. */
static const struct mirror_family {
    const char *name, *type, *help;
    size_t field; /* offsetof in mirror_counters */
} mirror_families[] = {
    {"protobus_mirror_published_total", "counter",
     "Messages handed to JetStream (resends included).", offsetof(mirror_counters, published)},
    {"protobus_mirror_stored_total", "counter", "Messages JetStream acknowledged as stored.",
     offsetof(mirror_counters, stored)},
    {"protobus_mirror_duplicates_total", "counter",
     "Messages JetStream acknowledged as duplicates of a stored one (resends).",
     offsetof(mirror_counters, duplicates)},
    {"protobus_mirror_failed_total", "counter", "Publishes to JetStream that failed or timed out.",
     offsetof(mirror_counters, failed)},
    {"protobus_mirror_skipped_total", "counter", "Events that cannot be mirrored (logged).",
     offsetof(mirror_counters, skipped)},
    {"protobus_mirror_resyncs_total", "counter",
     "Rounds of stop, ask the stream what it holds, resend.", offsetof(mirror_counters, resyncs)},
};

typedef struct lag_ctx {
    FILE *f;
    int which; /* 0 shipped offset, 1 lag in events, 2 lag in seconds */
    int64_t now_ns;
} lag_ctx;

static void write_lag(void *ctx, const char *mirror_name, const char *part_name, uint64_t shipped,
                      uint64_t end, int64_t oldest_ns)
{
    lag_ctx *c = ctx;
    static const char *const names[] = {"protobus_mirror_shipped_offset",
                                        "protobus_mirror_lag_events", "protobus_mirror_lag_seconds"};
    double v = c->which == 0   ? (double)shipped
               : c->which == 1 ? (double)(end > shipped ? end - shipped : 0)
                               : (oldest_ns > 0 && c->now_ns > oldest_ns
                                      ? (double)(c->now_ns - oldest_ns) / 1e9
                                      : 0);
    /* Mirror names are config section names ([A-Za-z0-9._-]); partition
     * names likewise (partname.h): no escaping. */
    fprintf(c->f, "%s{mirror=\"%s\",partition=\"%s\"} %.17g\n", names[c->which], mirror_name,
            part_name, v);
}

static void write_mirrors(mirror_set *ms, FILE *f)
{
    size_t n = mirror_set_count(ms);
    if (n == 0)
        return;
    fprintf(f, "# HELP protobus_mirror_connected 1 while the mirror is connected to its NATS "
               "servers.\n# TYPE protobus_mirror_connected gauge\n");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "protobus_mirror_connected{mirror=\"%s\"} %d\n", mirror_set_name(ms, i),
                atomic_load(&mirror_set_counters(ms, i)->connected) ? 1 : 0);
    for (size_t k = 0; k < sizeof mirror_families / sizeof mirror_families[0]; k++) {
        const struct mirror_family *fm = &mirror_families[k];
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", fm->name, fm->help, fm->name, fm->type);
        for (size_t i = 0; i < n; i++) {
            const _Atomic uint64_t *c =
                (const _Atomic uint64_t *)((const char *)mirror_set_counters(ms, i) + fm->field);
            fprintf(f, "%s{mirror=\"%s\"} %llu\n", fm->name, mirror_set_name(ms, i),
                    (unsigned long long)atomic_load(c));
        }
    }
    static const char *const lag_help[][2] = {
        {"protobus_mirror_shipped_offset", "Every offset below it is stored in JetStream."},
        {"protobus_mirror_lag_events", "Events stored in the partition, not yet in JetStream."},
        {"protobus_mirror_lag_seconds",
         "Age of the oldest event not yet acknowledged by JetStream (0 = none)."}};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    for (int w = 0; w < 3; w++) {
        fprintf(f, "# HELP %s %s\n# TYPE %s gauge\n", lag_help[w][0], lag_help[w][1],
                lag_help[w][0]);
        lag_ctx c = {.f = f, .which = w, .now_ns = (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec};
        mirror_set_foreach_lag(ms, write_lag, &c);
    }
}

int metrics_http_write(metrics_http *h, store *st, FILE *f)
{
    partition **parts;
    size_t n;
    if (store_list(st, &parts, &n) < 0)
        return -1;
    partition_stats *stats = calloc(n ? n : 1, sizeof *stats);
    part_disk *du = calloc(n ? n : 1, sizeof *du);
    if (!stats || !du) {
        free(stats);
        free(du);
        free(parts);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        partition_get_stats(parts[i], &stats[i]);
        disk_usage(partition_dir(parts[i]), &du[i]);
        du[i].oldest_s = oldest_memoized(h, parts, n, i);
    }
    fprintf(f,
            "# HELP protobus_partitions Partitions open.\n# TYPE protobus_partitions gauge\n"
            "protobus_partitions %zu\n",
            n);
    for (size_t k = 0; k < NFAMILIES; k++) {
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", families[k].name, families[k].help,
                families[k].name, families[k].type);
        /* Partition names are [A-Za-z0-9._-] (partname.h): no escaping. */
        for (size_t i = 0; i < n; i++)
            fprintf(f, "%s{partition=\"%s\"} %.17g\n", families[k].name, partition_name(parts[i]),
                    families[k].value(parts[i], &stats[i], &du[i]));
    }
    free(stats);
    free(du);
    free(parts);
    if (h && h->mirrors)
        write_mirrors(h->mirrors, f);
    return metrics_write_process(f);
}

/* The /healthz body: "ok", or one line per failed partition. 200 or 503. */
static unsigned health(store *st, FILE *f)
{
    partition **parts;
    size_t n;
    if (store_list(st, &parts, &n) < 0) {
        fprintf(f, "cannot list the partitions: out of memory\n");
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    }
    unsigned status = MHD_HTTP_OK;
    for (size_t i = 0; i < n; i++) {
        int rc = partition_status(parts[i]);
        uint64_t avail, margin;
        if (rc < 0) {
            fprintf(f, "partition %s accepts no writes: %s\n", partition_name(parts[i]),
                    pb_strerror(rc));
            status = MHD_HTTP_SERVICE_UNAVAILABLE;
        } else if (partition_space_low(parts[i], &avail, &margin)) {
            fprintf(f,
                    "partition %s accepts no writes: %llu bytes free, below min_free_bytes = "
                    "%llu\n",
                    partition_name(parts[i]), (unsigned long long)avail,
                    (unsigned long long)margin);
            status = MHD_HTTP_SERVICE_UNAVAILABLE;
        }
    }
    free(parts);
    if (status == MHD_HTTP_OK)
        fprintf(f, "ok\n");
    return status;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type,
                             char *body, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    metrics_http *h = cls;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        char *m = strdup("only GET is served here\n");
        return m ? reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", m, strlen(m)) : MHD_NO;
    }
    char *body = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&body, &len);
    if (!f)
        return MHD_NO;
    unsigned status = MHD_HTTP_OK;
    const char *type = "text/plain; charset=utf-8";
    if (strcmp(url, "/metrics") == 0) {
        type = "text/plain; version=0.0.4; charset=utf-8";
        if (metrics_http_write(h, h->st, f) < 0)
            status = MHD_HTTP_INTERNAL_SERVER_ERROR;
    } else if (strcmp(url, "/healthz") == 0) {
        status = health(h->st, f);
    } else {
        fprintf(f, "not found: %s (try /metrics or /healthz)\n", url);
        status = MHD_HTTP_NOT_FOUND;
    }
    if (fclose(f) != 0) {
        free(body);
        return MHD_NO;
    }
    return reply(conn, status, type, body, len);
}

int metrics_http_start(metrics_http **out, const char *host, uint16_t port, store *st,
                       mirror_set *mirrors, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        flags |= MHD_USE_IPv6;
    } else {
        snprintf(err, errlen, "metrics_listen: %s is not a numeric address", host);
        return -1;
    }
    metrics_http *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "metrics_listen: out of memory");
        return -1;
    }
    h->st = st;
    h->mirrors = mirrors;
    h->d = MHD_start_daemon(flags, port, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, &ss,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_SCRAPES,
                            MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    if (!h->d) {
        snprintf(err, errlen,
                 "metrics_listen: cannot serve on %s:%u (address in use or not local?)", host,
                 (unsigned)port);
        free(h);
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : port;
    *out = h;
    return 0;
}

uint16_t metrics_http_port(const metrics_http *h)
{
    return h->port;
}

void metrics_http_stop(metrics_http *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->d);
    free(h->memo);
    free(h);
}
