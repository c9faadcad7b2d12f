/*
 * stats - `protobus stats`: protobusd's /metrics (metrics_listen) for a
 * person: a table per partition (next offset, events and bytes per second
 * over the last interval, segments, size on disk, oldest record, state)
 * under a line for the process (connections, subscriptions, memory), or
 * the same as one JSON object per refresh (--format json). --watch
 * refreshes every interval until interrupted (or --count times).
 *
 * Rates come from two scrapes `interval` apart: the first refresh waits one
 * interval. Subscriptions are counted for the whole daemon: a subscription
 * reads any number of partitions.
 *
 * Threads: the main thread only.
 */
#include "cli.h"
#include "stats_scrape.h"
#include "timefmt.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_METRICS "127.0.0.1:7421"
#define TIMEOUT_MS      10000

static const char usage[] =
    "Usage: protobus stats [OPTIONS]\n"
    "\n"
    "Shows what protobusd's metrics endpoint (its [server] metrics_listen) says:\n"
    "per partition the next offset, events and bytes per second over the last\n"
    "interval, segments, size on disk, the oldest record's time and the state;\n"
    "and the open connections, subscriptions (replaying history or live) and\n"
    "the daemon's memory. Subscriptions are the daemon's, not a partition's: a\n"
    "subscription reads any number of partitions.\n"
    "\n"
    "Options:\n"
    "  -m, --metrics HOST:PORT  metrics address (default $PROTOBUS_METRICS, else\n"
    "                           " DEFAULT_METRICS ")\n"
    "  -f, --format FORMAT      table (default) or json (one object per refresh)\n"
    "  -w, --watch              refresh every interval until interrupted\n"
    "  -i, --interval SECONDS   between the two scrapes a rate is measured over,\n"
    "                           and between refreshes (default 1; 0.1 to 3600)\n"
    "  -n, --count N            with --watch: stop after N refreshes\n"
    "  -h, --help               show this help\n";

typedef struct stats_opts {
    const char *addr;
    bool json, watch;
    int interval_ms;
    uint64_t count;
} stats_opts;

static double rate(double now, double before, int64_t dt_ms)
{
    return dt_ms > 0 && now >= before ? (now - before) * 1000.0 / (double)dt_ms : 0;
}

static void human_bytes(double b, char *buf, size_t len)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (b >= 1024 && u < 4) {
        b /= 1024;
        u++;
    }
    snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", b, units[u]);
}

static void oldest_text(double s, char *buf, size_t len)
{
    if (s <= 0)
        snprintf(buf, len, "-");
    else
        pb_time_format((int64_t)(s * 1e9), buf, len);
}

static void print_table(const stats_scrape *now, const stats_scrape *before)
{
    int64_t dt = now->taken_ms - before->taken_ms;
    char rss[32];
    human_bytes(now->rss_bytes, rss, sizeof rss);
    printf("connections %.0f   subscriptions %.0f (replay %.0f, live %.0f)   memory %s\n\n",
           now->connections_open, now->subs_active, now->subs_replay, now->subs_live, rss);
    printf("%-24s %14s %10s %10s %8s %10s  %-30s %s\n", "PARTITION", "NEXT_OFFSET", "EVENTS/S",
           "BYTES/S", "SEGMENTS", "DISK", "OLDEST", "STATE");
    for (size_t i = 0; i < now->nparts; i++) {
        const stats_partition *p = &now->parts[i], *b = stats_scrape_find(before, p->name);
        char disk[32], bps[32], oldest[64];
        human_bytes(p->disk_bytes, disk, sizeof disk);
        human_bytes(b ? rate(p->bytes, b->bytes, dt) : 0, bps, sizeof bps);
        oldest_text(p->oldest_s, oldest, sizeof oldest);
        printf("%-24s %14.0f %10.1f %10s %8.0f %10s  %-30s %s\n", p->name, p->next_offset,
               b ? rate(p->events, b->events, dt) : 0, bps, p->segments, disk, oldest,
               p->up > 0 ? "ok" : "FAILED");
    }
}

/* One JSON object on one line. Partition names are [A-Za-z0-9._-] and
 * times RFC 3339: nothing needs escaping. */
static void print_json(const stats_scrape *now, const stats_scrape *before)
{
    int64_t dt = now->taken_ms - before->taken_ms;
    printf("{\"connections_open\":%.0f,\"subscriptions\":{\"active\":%.0f,\"replay\":%.0f,"
           "\"live\":%.0f},\"resident_memory_bytes\":%.0f,\"interval_s\":%.3f,\"partitions\":[",
           now->connections_open, now->subs_active, now->subs_replay, now->subs_live,
           now->rss_bytes, (double)dt / 1000.0);
    for (size_t i = 0; i < now->nparts; i++) {
        const stats_partition *p = &now->parts[i], *b = stats_scrape_find(before, p->name);
        char oldest[80] = "null";
        if (p->oldest_s > 0) {
            oldest[0] = '"';
            size_t n = pb_time_format((int64_t)(p->oldest_s * 1e9), oldest + 1, sizeof oldest - 2);
            snprintf(oldest + 1 + n, sizeof oldest - 1 - n, "\"");
        }
        printf("%s{\"name\":\"%s\",\"next_offset\":%.0f,\"events_appended\":%.0f,"
               "\"bytes_appended\":%.0f,\"events_per_s\":%.6g,\"bytes_per_s\":%.6g,"
               "\"segments\":%.0f,\"disk_bytes\":%.0f,\"oldest_record_time\":%s,"
               "\"state\":\"%s\"}",
               i ? "," : "", p->name, p->next_offset, p->events, p->bytes,
               b ? rate(p->events, b->events, dt) : 0, b ? rate(p->bytes, b->bytes, dt) : 0,
               p->segments, p->disk_bytes, oldest, p->up > 0 ? "ok" : "failed");
    }
    printf("]}\n");
}

static int parse_opts(int argc, char **argv, stats_opts *o)
{
    static const struct option longopts[] = {{"metrics", required_argument, NULL, 'm'},
                                             {"format", required_argument, NULL, 'f'},
                                             {"watch", no_argument, NULL, 'w'},
                                             {"interval", required_argument, NULL, 'i'},
                                             {"count", required_argument, NULL, 'n'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *env = getenv("PROTOBUS_METRICS");
    *o = (stats_opts){.addr = env && *env ? env : DEFAULT_METRICS, .interval_ms = 1000};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:f:wi:n:h", longopts, NULL)) != -1) {
        char *end;
        double s;
        switch (c) {
        case 'm':
            o->addr = optarg;
            break;
        case 'f':
            if (strcmp(optarg, "json") && strcmp(optarg, "table"))
                return cli_usage_error("stats", "--format: \"%s\" is not table or json", optarg);
            o->json = strcmp(optarg, "json") == 0;
            break;
        case 'w':
            o->watch = true;
            break;
        case 'i':
            s = strtod(optarg, &end);
            if (end == optarg || *end || s < 0.1 || s > 3600)
                return cli_usage_error("stats", "--interval: \"%s\" is not 0.1 to 3600 seconds",
                                       optarg);
            o->interval_ms = (int)(s * 1000);
            break;
        case 'n':
            if (!cli_parse_u64(optarg, &o->count) || o->count == 0)
                return cli_usage_error("stats", "--count: \"%s\" is not a positive number", optarg);
            break;
        case 'h':
            fputs(usage, stdout);
            return cli_flush_stdout("stats") ? CLI_EXIT_OK : CLI_EXIT_RUNTIME;
        default:
            return cli_try_help("stats");
        }
    }
    if (optind < argc)
        return cli_usage_error("stats", "unexpected argument '%s'", argv[optind]);
    return -1;
}

int cmd_stats(int argc, char **argv)
{
    stats_opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc >= 0)
        return rc;
    cli_catch_signals();
    stats_scrape before, now;
    char err[512];
    if (stats_scrape_get(o.addr, TIMEOUT_MS, &before, err, sizeof err) < 0) {
        cli_error("stats", "%s", err);
        return CLI_EXIT_RUNTIME;
    }
    rc = CLI_EXIT_OK;
    bool tty = isatty(STDOUT_FILENO);
    for (uint64_t n = 0; !cli_stop; n++) {
        cli_sleep_ms(o.interval_ms);
        if (cli_stop)
            break;
        if (stats_scrape_get(o.addr, TIMEOUT_MS, &now, err, sizeof err) < 0) {
            if (!cli_stop) { /* interrupted: a normal end (exit 0) */
                cli_error("stats", "%s", err);
                rc = CLI_EXIT_RUNTIME;
            }
            break;
        }
        if (o.watch && tty && !o.json)
            fputs("\033[H\033[J", stdout);
        if (o.json)
            print_json(&now, &before);
        else
            print_table(&now, &before);
        if (!cli_flush_stdout("stats")) {
            stats_scrape_free(&now);
            rc = CLI_EXIT_RUNTIME;
            break;
        }
        stats_scrape_free(&before);
        before = now;
        if (!o.watch || (o.count && n + 1 >= o.count))
            break;
    }
    stats_scrape_free(&before);
    return rc;
}
