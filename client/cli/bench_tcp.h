/*
 * bench_tcp - `protobus bench tcp` (bench_tcp.c): loopback TCP bandwidth
 * with no server and no protocol, the baseline the server modes are
 * compared with.
 *
 * Threads: called on the main thread; starts and joins one writer thread.
 */
#ifndef PB_CLI_BENCH_TCP_H
#define PB_CLI_BENCH_TCP_H

#include "bench_options.h"
#include "bench_stats.h"

/* Moves cfg->tcp_bytes through a 127.0.0.1 connection, prints MB/s and
 * adds tcp_mb_s to res. 0, or a negative code after reporting it. */
int bench_mode_tcp(bench_cfg *cfg, bench_result *res);

#endif
