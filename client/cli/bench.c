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

static int build_topics(bench_cfg *cfg)
{
    uint32_t w = index_width(cfg->topics);
    size_t len = strlen(cfg->prefix) + 1 + w + 1;
    cfg->topic_names = calloc(cfg->topics, sizeof *cfg->topic_names);
    char *names = malloc((size_t)cfg->topics * len);
    cfg->payload = malloc(cfg->size);
    if (!cfg->topic_names || !names || !cfg->payload) {
        free(names);
        return PB_ENOMEM;
    }
    for (uint32_t i = 0; i < cfg->topics; i++) {
        cfg->topic_names[i] = names + (size_t)i * len;
        snprintf(cfg->topic_names[i], len, "%s.%0*u", cfg->prefix, (int)w, i);
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
