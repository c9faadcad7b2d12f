/*
 * bench - `protobus bench`: drives protobusd through libprotobus and prints
 * events/s, MB/s and latency percentiles (modes pub, sub, replay, latency,
 * seek), plus a loopback TCP baseline (mode tcp) that needs no server. This
 * file is the command itself: defaults, the topics and payload built once,
 * the watchdog that ends a run at --timeout or on a signal, the dispatch to
 * a mode and the RESULT line. The rest, from the top down:
 *
 *   bench_options  usage text and option parsing -> bench_cfg
 *   bench_modes    pub/sub/latency, replay, seek: start threads, join, report
 *   bench_tcp      the loopback TCP baseline
 *   bench_clients  publisher and subscriber threads (one pb_client each)
 *   bench_stats    latency samples, percentiles, rates, CPU time, RESULT
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
 * (bench_cfg) and one atomic (bench_stop). The watchdog is
 * one more thread; it only sets bench_stop.
 */
#include "bench_clients.h"
#include "bench_modes.h"
#include "bench_options.h"
#include "bench_tcp.h"
#include "cli.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *watchdog_main(void *arg)
{
    const bench_cfg *cfg = arg;
    int64_t deadline = cli_now_ms() + cfg->timeout_ms;
    while (!atomic_load(&bench_stop) && cli_now_ms() < deadline && !cli_stop)
        cli_sleep_ms(20);
    atomic_store(&bench_stop, true);
    return NULL;
}

/* Number of decimal digits of n - 1 (at least 1): topic index width. */
static uint32_t index_width(uint64_t n)
{
    uint32_t w = 1;
    for (uint64_t v = n > 0 ? n - 1 : 0; v >= 10; v /= 10)
        w++;
    return w;
}

/* --json: a pool of different payloads (at most JSON_POOL_BYTES). */
#define JSON_POOL       4096u
#define JSON_POOL_BYTES (16u << 20)

static uint32_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (uint32_t)(*s >> 32);
}

/* One event like the README's, exactly size bytes: fixed fields with
 * varied values, then a text of common words (a log line), closed. */
static void json_payload(uint8_t *out, size_t size, uint32_t k, uint64_t *rng)
{
    static const char *const words[] = {
        "sensor", "reading", "within", "range",    "after",  "restart", "valve",       "pressure",
        "north",  "line",    "pump",   "started",  "normal", "check",   "alarm",       "cleared",
        "door",   "opened",  "by",     "operator", "shift",  "batch",   "queued",      "the",
        "of",     "and",     "to",     "a",        "is",     "on",      "temperature", "rising"};
    static const char *const sites[] = {"north", "south", "east", "west", "harbour"};
    static const char *const states[] = {"ok", "warn", "ok", "ok", "alarm", "ok"};
    char *buf = malloc(size + 64);
    if (!buf) {
        memset(out, 'x', size);
        return;
    }
    uint32_t r = next_rand(rng);
    int n = snprintf(buf, size + 64,
                     "{\"sensor\":\"temp-%u\",\"site\":\"plant-%s\",\"value\":%u.%02u,"
                     "\"unit\":\"C\",\"status\":\"%s\",\"seq\":%u,"
                     "\"ts\":\"2026-12-04T12:%02u:%02u.%06uZ\",\"note\":\"",
                     r % 64, sites[(r >> 6) % 5], (r >> 9) % 120, (r >> 16) % 100,
                     states[(r >> 23) % 6], k, k / 60 % 60, k % 60, next_rand(rng) % 1000000);
    size_t len = n > 0 ? (size_t)n : 0;
    while (len + 2 < size) {
        const char *w = words[next_rand(rng) % (sizeof words / sizeof words[0])];
        size_t wl = strlen(w);
        if (len + wl + 3 > size)
            break;
        memcpy(buf + len, w, wl);
        len += wl;
        buf[len++] = ' ';
    }
    while (len + 2 < size)
        buf[len++] = '.';
    if (len + 2 <= size) {
        buf[len++] = '"';
        buf[len++] = '}';
    }
    memcpy(out, buf, size);
    free(buf);
}

static int build_topics(bench_cfg *cfg)
{
    uint32_t w = index_width(cfg->topics);
    size_t len = strlen(cfg->prefix) + 1 + w + 1;
    cfg->topic_names = calloc(cfg->topics, sizeof *cfg->topic_names);
    char *names = malloc((size_t)cfg->topics * len);
    cfg->npayloads = 1;
    if (cfg->json) {
        size_t n = JSON_POOL_BYTES / cfg->size;
        cfg->npayloads = n < 1 ? 1 : n > JSON_POOL ? JSON_POOL : (uint32_t)n;
    }
    cfg->payload = malloc((size_t)cfg->npayloads * cfg->size);
    if (!cfg->topic_names || !names || !cfg->payload) {
        free(names);
        return PB_ENOMEM;
    }
    for (uint32_t i = 0; i < cfg->topics; i++) {
        cfg->topic_names[i] = names + (size_t)i * len;
        snprintf(cfg->topic_names[i], len, "%s.%0*u", cfg->prefix, (int)w, i);
    }
    if (cfg->json) {
        uint64_t rng = 0x9e3779b97f4a7c15ull;
        for (uint32_t k = 0; k < cfg->npayloads; k++)
            json_payload(cfg->payload + (size_t)k * cfg->size, cfg->size, k, &rng);
        return 0;
    }
    for (size_t i = 0; i < cfg->size; i++)
        cfg->payload[i] = (uint8_t)('a' + i % 26);
    return 0;
}

static void free_topics(bench_cfg *cfg)
{
    if (cfg->topic_names)
        free(cfg->topic_names[0]);
    free(cfg->topic_names);
    free(cfg->payload);
}

int cmd_bench(int argc, char **argv)
{
    bench_cfg cfg = {
        .count = 1000000,
        .size = 100,
        .batch = 1000,
        .in_flight = 64,
        .pubs = 1,
        .subs = 1,
        .topics = 1,
        .rate = 10000,
        .partition = "events",
        .tcp_bytes = UINT64_C(4) << 30,
        .tcp_commit_bytes = UINT64_C(16) << 20,
        .timeout_ms = 120000,
    };
    snprintf(cfg.prefix, sizeof cfg.prefix, "bench%ld", (long)getpid());
    int rc = bench_parse(&cfg, argc, argv);
    if (rc != 0)
        return rc < 0 ? CLI_EXIT_OK : rc;
    bench_result res;
    snprintf(res.text, sizeof res.text, "RESULT mode=%s size=%zu count=%" PRIu64, cfg.mode,
             cfg.size, cfg.count);
    if (strcmp(cfg.mode, "tcp") == 0) {
        rc = bench_mode_tcp(&cfg, &res);
        goto done;
    }
    bool known = strcmp(cfg.mode, "pub") == 0 || strcmp(cfg.mode, "sub") == 0 ||
                 strcmp(cfg.mode, "replay") == 0 || strcmp(cfg.mode, "latency") == 0 ||
                 strcmp(cfg.mode, "seek") == 0;
    if (!known)
        return cli_usage_error(
            BENCH_CMD, "unknown mode '%s' (pub, sub, replay, latency, seek or tcp)", cfg.mode);
    rc = build_topics(&cfg);
    if (rc < 0) {
        cli_error(BENCH_CMD, "out of memory for %u topics", cfg.topics);
        goto done;
    }
    cli_catch_signals();
    pthread_t wd;
    rc = bench_start_thread(&wd, watchdog_main, &cfg);
    if (rc < 0) {
        cli_error(BENCH_CMD, "cannot start a thread: %s", pb_strerror(rc));
        goto done;
    }
    if (strcmp(cfg.mode, "pub") == 0)
        rc = bench_mode_pub_sub(&cfg, false, false, &res);
    else if (strcmp(cfg.mode, "sub") == 0)
        rc = bench_mode_pub_sub(&cfg, false, true, &res);
    else if (strcmp(cfg.mode, "latency") == 0)
        rc = bench_mode_pub_sub(&cfg, true, true, &res);
    else if (strcmp(cfg.mode, "replay") == 0)
        rc = bench_mode_replay(&cfg, &res);
    else
        rc = bench_mode_seek(&cfg, &res);
    atomic_store(&bench_stop, true);
    pthread_join(wd, NULL);
done:
    free_topics(&cfg);
    if (rc == 0) {
        puts(res.text);
        return cli_flush_stdout(BENCH_CMD) ? CLI_EXIT_OK : CLI_EXIT_RUNTIME;
    }
    return CLI_EXIT_RUNTIME;
}
