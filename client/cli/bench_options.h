/*
 * bench_options - the settings of a `protobus bench` run, from its command
 * line (bench_options.c) and, once built, the topics and payload every
 * thread reads.
 *
 * Threads: filled on the main thread before any other starts; read-only
 * afterwards, so any thread may read it.
 */
#ifndef PB_CLI_BENCH_OPTIONS_H
#define PB_CLI_BENCH_OPTIONS_H

#include "cli.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
    uint32_t sub_threads; /* sub mode: receiving threads shared by the subscribers (0: one each) */
    bool distinct;
    bool ids;    /* every event gets the id PREFIX-<sequence number> */
    bool json;   /* payloads: varied JSON events (bench.c), not one fixed string */
    bool stored; /* replay mode: read what is stored, publish nothing */
    const char *pattern;
    char prefix[64];
    uint64_t rate;
    const char *partition;
    bool has_offset, has_time;
    uint64_t offset;
    int64_t time_ns;
    uint64_t tcp_bytes;
    int timeout_ms;
    const char *user, *password; /* --user; NULL: anonymous */
    cli_tls tls;                 /* --tls ... */
    /* built once */
    char **topic_names;
    uint8_t *payload;   /* npayloads x size bytes; event i sends payload i % npayloads */
    uint32_t npayloads; /* 1, or the --json pool */
} bench_cfg;

/* Fills cfg from the command line (cfg holds the defaults). 0 to run, -1
 * when --help was printed (exit 0), else the exit status of a usage error
 * (already reported). */
int bench_parse(bench_cfg *cfg, int argc, char **argv);

#endif
