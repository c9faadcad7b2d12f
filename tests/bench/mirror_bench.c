/*
 * mirror_bench - what a mirror to JetStream costs and delivers, in one run:
 * a 3-node NATS cluster on loopback (tests/lib/jscluster), and for each
 * round a fresh protobusd (temp dir, free port, stopped by PID), without a
 * mirror and with one (R3 stream, event format) alternately, so both see
 * the same machine at the same time. Each round publishes a backlog of N
 * events of 100 B through libprotobus (batched, pipelined, durable acks),
 * then - with a mirror, once it is shipping that backlog - N more, timed:
 *
 *   publish rate     events/s of the timed N, first publish to last ack
 *   shipped rate     (mirror on) events/s from the mirror's first messages
 *                    until the stream holds all 2N: its throughput
 *   lag at the end   (mirror on) events not yet in the stream when the
 *                    timed publish ended, and the seconds until they were
 *
 * Medians of R rounds each. Usage: mirror_bench [-n EVENTS] [-r ROUNDS].
 * Not a test: it asserts nothing about speed (make bench-mirror).
 */
#include "itest.h"
#include "jscluster.h"
#include "protobus.h"

#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_ROUNDS 16

static jscluster C;

static int64_t stream_msgs(jsCtx *js, const char *stream)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    if (js_GetStreamInfo(&si, js, stream, NULL, &jerr) != NATS_OK)
        return -1;
    int64_t n = (int64_t)si->State.Msgs;
    jsStreamInfo_Destroy(si);
    return n;
}

/* CPU seconds (user + system) pid has used so far; 0 if unknown. */
static double cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command may hold blanks */
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double nats_cpu_s(void)
{
    double t = 0;
    for (int i = 0; i < C.n; i++)
        t += C.pid[i] ? cpu_s(C.pid[i]) : 0;
    return t;
}

static double cpu_daemon[MAX_ROUNDS], cpu_nats[MAX_ROUNDS];

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Publishes n events of 100 B; returns events/s, or -1. */
static double publish(uint16_t port, uint64_t n)
{
    char addr[64], err[256];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", port);
    pb_client_options o;
    pb_client_options_init(&o);
    o.no_positions = true;
    pb_client *c;
    if (pb_client_connect(&c, addr, &o, err, sizeof err) != 0) {
        fprintf(stderr, "connect: %s\n", err);
        return -1;
    }
    char payload[100];
    memset(payload, 'x', sizeof payload);
    uint64_t t0 = itest_now_ms();
    for (uint64_t i = 0; i < n; i++) {
        pb_event ev = {.topic = i % 2 ? "bench.a" : "bench.b",
                       .payload = payload,
                       .payload_len = sizeof payload};
        if (pb_client_publish(c, &ev) != 0)
            break;
    }
    int rc = pb_client_flush(c, 120000, NULL, NULL);
    uint64_t t1 = itest_now_ms();
    pb_client_close(c);
    return rc == 0 ? (double)n * 1000.0 / (double)(t1 > t0 ? t1 - t0 : 1) : -1;
}

/* One round: a backlog of n events, then (with a mirror: once it is
 * shipping that backlog) n more, timed: *rate. With a mirror, *shipped is
 * its rate from its first messages until the stream holds all 2n, and the
 * lag when the timed publish ended. */
static int round_once(bool mirror, int round, uint64_t n, double *rate, double *shipped,
                      double *lag_events, double *lag_s)
{
    char rules[1024], stream[32];
    snprintf(stream, sizeof stream, "BENCH%d", round);
    int w = snprintf(rules, sizeof rules, "[partition events]\nmatch = .*\n");
    if (mirror)
        snprintf(rules + w, sizeof rules - (size_t)w,
                 "[mirror bench]\nnats_url = %s\nstream = %s\nsubject_prefix = bench%d.\n"
                 "replicas = 3\n",
                 C.urls, stream, round);
    itest_daemon d;
    if (itest_daemon_start(&d, NULL, rules) != 0)
        return -1;
    int status = -1;
    double d0 = cpu_s(d.pid), n0 = nats_cpu_s();
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    if (publish(d.port, n) < 0)
        goto out;
    int64_t c0 = 0;
    uint64_t ts = itest_now_ms();
    if (mirror) {
        natsConnection_ConnectTo(&nc, C.urls);
        natsConnection_JetStream(&js, nc, NULL);
        uint64_t until = itest_now_ms() + 60000;
        while ((c0 = stream_msgs(js, stream)) < 1000 && itest_now_ms() < until)
            usleep(10000);
        ts = itest_now_ms();
    }
    if ((*rate = publish(d.port, n)) < 0)
        goto out;
    uint64_t t1 = itest_now_ms();
    if (mirror) {
        int64_t got = stream_msgs(js, stream);
        *lag_events = (double)(2 * (int64_t)n - got);
        uint64_t until = itest_now_ms() + 600000;
        while (got < 2 * (int64_t)n && itest_now_ms() < until) {
            usleep(20000);
            got = stream_msgs(js, stream);
        }
        uint64_t t2 = itest_now_ms();
        *lag_s = (double)(t2 - t1) / 1000.0;
        cpu_daemon[round] = cpu_s(d.pid) - d0;
        cpu_nats[round] = nats_cpu_s() - n0;
        *shipped = got >= 2 * (int64_t)n
                       ? (double)(2 * (int64_t)n - c0) * 1000.0 / (double)(t2 > ts ? t2 - ts : 1)
                       : 0;
    }
    status = 0;
out:
    if (js) {
        js_DeleteStream(js, stream, NULL, NULL);
        jsCtx_Destroy(js);
    }
    natsConnection_Destroy(nc);
    itest_daemon_cleanup(&d);
    return status;
}

int main(int argc, char **argv)
{
    uint64_t n = 200000;
    int rounds = 3, opt;
    while ((opt = getopt(argc, argv, "n:r:")) != -1) {
        if (opt == 'n')
            n = strtoull(optarg, NULL, 10);
        else if (opt == 'r')
            rounds = atoi(optarg);
        else {
            fprintf(stderr, "usage: mirror_bench [-n EVENTS] [-r ROUNDS]\n");
            return 2;
        }
    }
    if (rounds < 1 || rounds > MAX_ROUNDS || n < 1000) {
        fprintf(stderr, "mirror_bench: -r 1..%d, -n >= 1000\n", MAX_ROUNDS);
        return 2;
    }
    if (jscluster_start(&C, 3) != 0)
        return 1;
    double off[MAX_ROUNDS], on[MAX_ROUNDS], shipped[MAX_ROUNDS], lag_e[MAX_ROUNDS],
        lag_s[MAX_ROUNDS];
    int status = 0;
    for (int r = 0; r < rounds && status == 0; r++) {
        double unused = 0;
        if (round_once(false, r, n, &off[r], &unused, &unused, &unused) != 0 ||
            round_once(true, r, n, &on[r], &shipped[r], &lag_e[r], &lag_s[r]) != 0)
            status = 1;
        else
            printf("round %d: publish %.0f/s without a mirror, %.0f/s with; shipped %.0f/s; "
                   "lag at the end %.0f events, caught up %.2f s later; CPU s in the mirror "
                   "round: protobusd %.1f, nats-servers %.1f\n",
                   r + 1, off[r], on[r], shipped[r], lag_e[r], lag_s[r], cpu_daemon[r],
                   cpu_nats[r]);
    }
    jscluster_cleanup(&C);
    nats_CloseAndWait(5000);
    if (status != 0) {
        fprintf(stderr, "mirror_bench: a round failed\n");
        return status;
    }
    double mo = median(off, rounds), mn = median(on, rounds);
    printf("\nmirror_bench: %llu events of 100 B per round, median of %d round(s), 3-node "
           "cluster, R3 stream\n",
           (unsigned long long)n, rounds);
    printf("| figure | median |\n| --- | --- |\n");
    printf("| publish, no mirror | %.0f events/s |\n", mo);
    printf("| publish, mirror running | %.0f events/s (%.2f of no mirror) |\n", mn, mn / mo);
    printf("| mirror shipped | %.0f events/s |\n", median(shipped, rounds));
    printf("| lag when publishing ended | %.0f events, %.2f s to catch up |\n",
           median(lag_e, rounds), median(lag_s, rounds));
    printf("| CPU s per mirror round | protobusd %.1f, the 3 nats-servers %.1f |\n",
           median(cpu_daemon, rounds), median(cpu_nats, rounds));
    return 0;
}
