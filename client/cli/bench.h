/*
 * bench - `protobus bench`: throughput and latency of protobusd measured
 * through libprotobus (pub, sub, replay, latency, seek) and a loopback TCP
 * baseline (tcp). See `protobus bench --help`.
 *
 * Threads: called on the main thread; it starts and joins its own
 * publisher and subscriber threads.
 */
#ifndef PB_CLI_BENCH_H
#define PB_CLI_BENCH_H

/* Runs `protobus bench ARGS...` (argv[0] is "bench"); returns the exit
 * status (CLI_EXIT_*). */
int cmd_bench(int argc, char **argv);

#endif
