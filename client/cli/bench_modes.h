/*
 * bench_modes - the server modes of `protobus bench` (bench_modes.c): pub,
 * sub and latency, replay, seek.
 *
 * Threads: called on the main thread; each starts and joins its own
 * publisher and subscriber threads.
 */
#ifndef PB_CLI_BENCH_MODES_H
#define PB_CLI_BENCH_MODES_H

#include "bench_options.h"
#include "bench_stats.h"

#include <stdbool.h>

/* Each runs one mode, prints its figures and adds them to res. 0, or a
 * negative code after reporting the problem. */
int bench_mode_pub_sub(bench_cfg *cfg, bool latency, bool with_subs, bench_result *res);
int bench_mode_replay(bench_cfg *cfg, bench_result *res);
int bench_mode_seek(bench_cfg *cfg, bench_result *res);

#endif
