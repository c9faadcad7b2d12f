/*
 * stats_scrape - one scrape of protobusd's /metrics (metrics_listen) for
 * `protobus stats`: an HTTP/1.0 GET over TCP, then the lines of the
 * Prometheus text format the table needs, per partition and for the
 * process.
 *
 * Threads: the caller's; no state between calls.
 */
#ifndef PB_STATS_SCRAPE_H
#define PB_STATS_SCRAPE_H

#include <stddef.h>
#include <stdint.h>

/* The body read is bounded: a daemon with ~50,000 partitions fits. */
#define STATS_MAX_BODY (64u << 20)

typedef struct stats_partition {
    char name[128];
    double events, bytes;        /* appended since the daemon started */
    double next_offset;          /* last offset + 1 */
    double segments, disk_bytes; /* on disk now */
    double oldest_s;             /* oldest record's receive time (Unix s), 0 = none */
    double up;                   /* 1 accepts writes */
} stats_partition;

typedef struct stats_scrape {
    stats_partition *parts; /* sorted as the daemon sent them (by name) */
    size_t nparts;
    double connections_open;
    double subs_active, subs_replay, subs_live;
    double rss_bytes;
    int64_t taken_ms; /* CLOCK_MONOTONIC when read */
} stats_scrape;

/* GETs http://addr/metrics (addr "host:port", numeric or a name) within
 * timeout_ms and parses it into *out. 0, or -1 with err naming the problem
 * (connection refused, HTTP status, a line that does not parse). */
int stats_scrape_get(const char *addr, int timeout_ms, stats_scrape *out, char *err, size_t errlen);
/* Parses a /metrics body (NUL-terminated) into *out (for tests). */
int stats_scrape_parse(const char *body, stats_scrape *out, char *err, size_t errlen);
/* The partition called name in s, or NULL. */
const stats_partition *stats_scrape_find(const stats_scrape *s, const char *name);
void stats_scrape_free(stats_scrape *s);

#endif
