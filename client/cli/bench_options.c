/*
 * bench_options - `protobus bench --help` and the options that fill a
 * bench_cfg (numbers range-checked, each error naming the option).
 *
 * Threads: the main thread, before any other starts.
 */
#include "bench_options.h"

#include "cli.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define MAX_SUBS 4096u /* --subs: one thread and connection each */

static const char usage[] =
    "Usage: protobus bench [OPTIONS] MODE\n"
    "\n"
    "Measures protobusd. MODE is one of:\n"
    "  pub      publishers send COUNT events as fast as acks allow\n"
    "  sub      subscribers (started first, live) receive what publishers send\n"
    "  replay   publish COUNT events, then time one subscriber reading from the\n"
    "           beginning (pattern '.*' unless -P) until it has all of them\n"
    "  latency  one publisher at a steady --rate, one event per batch; per-event\n"
    "           publish->ack and publish->subscriber delivery latency\n"
    "  seek     time from Subscribe to the first event, for --offset or --time\n"
    "           (repeated COUNT times, default 5)\n"
    "  tcp      loopback TCP bandwidth baseline (no server needed): --bytes;\n"
    "           with --to-file DIR, the receiver also makes what it receives durable\n"
    "           (a file in DIR, 1 MiB writes, group commit: see --commit-bytes)\n"
    "\n"
    "Options:\n"
    "  -s, --server HOST:PORT  server (default $PROTOBUS_SERVER, else " CLI_DEFAULT_SERVER ")\n"
    "  -n, --count N           events in total (default 1000000)\n"
    "      --size BYTES        payload bytes per event (default 100, at least 8)\n"
    "  -b, --batch N           events per batch (default 1000)\n"
    "      --batch-bytes N     bytes per batch (default: the library's, 512 KiB)\n"
    "      --in-flight N       unacknowledged batches per publisher (default 64)\n"
    "  -p, --pubs N            publishers, one thread and connection each (default 1)\n"
    "      --subs N            subscribers (sub mode; default 1)\n"
    "      --sub-threads N     sub mode: the subscribers share N receiving threads,\n"
    "                          each reading whichever connection has data (epoll)\n"
    "                          (default 0: one thread per subscriber)\n"
    "      --topics N          distinct topics PREFIX.<i>, round robin (default 1)\n"
    "      --prefix PREFIX     topic prefix (default bench<pid>)\n"
    "      --distinct          sub mode: subscriber j of N (N a power of 10) gets\n"
    "                          its own pattern, matching topics whose index ends\n"
    "                          in j; each event then reaches one subscriber\n"
    "  -P, --pattern REGEX     subscription pattern (default PREFIX\\..*; replay: .*)\n"
    "      --ids               give every published event a unique id\n"
    "                          (EncapsulatedEvent.id: PREFIX-<n>, e.g. bench123-42);\n"
    "                          the server's dedup window checks and remembers them\n"
    "      --json              payloads are JSON events like the README's (sensor,\n"
    "                          site, value, time, a text of common words), each\n"
    "                          different (a pool of up to 4096, --size bytes each),\n"
    "                          instead of one repeated string: realistic for\n"
    "                          compressed segments\n"
    "      --stored            replay mode: publish nothing; time reading COUNT\n"
    "                          events already stored (say, once they are compressed)\n"
    "      --rate N            latency mode: events per second (default 10000)\n"
    "      --partition NAME    seek mode: partition (default events)\n"
    "      --offset N          seek mode: start offset\n"
    "      --time TIME         seek mode: start time (RFC 3339 or relative)\n"
    "      --bytes N           tcp mode: bytes to transfer (default 4 GiB)\n"
    "      --to-file DIR       tcp mode: write what is received into a temp file in\n"
    "                          DIR (removed at the end) and fdatasync it like a\n"
    "                          broker's group commit: once nothing more is waiting\n"
    "                          on the socket, or every --commit-bytes; no framing,\n"
    "                          no CRC: the socket-to-disk baseline\n"
    "      --commit-bytes N    tcp --to-file: most bytes one fdatasync covers\n"
    "                          (default 16 MiB: protobusd's in-flight publish bound)\n"
    "      --direct            tcp --to-file: write around the page cache (O_DIRECT;\n"
    "                          a last partial block buffered), as protobusd does\n"
    "                          with direct_write_bytes\n"
    "      --timeout MS        give up after MS milliseconds (default 120000)\n" CLI_TLS_HELP
    "  -u, --user NAME         authenticate every client as NAME (password from\n"
    "                          $PROTOBUS_PASSWORD, else asked on the terminal)\n"
    "  -h, --help              show this help\n"
    "\n"
    "Output: readable lines, then one line 'RESULT key=value ...' for scripts.\n"
    "Latencies are in microseconds. MB/s counts payload bytes (10^6 bytes).\n"
    "Exit status: 0 done, 1 runtime error or timeout, 2 usage error.\n";

enum {
    OPT_SIZE = 256,
    OPT_BATCH_BYTES,
    OPT_IN_FLIGHT,
    OPT_SUBS,
    OPT_SUB_THREADS,
    OPT_TOPICS,
    OPT_PREFIX,
    OPT_DISTINCT,
    OPT_IDS,
    OPT_JSON,
    OPT_STORED,
    OPT_RATE,
    OPT_PARTITION,
    OPT_OFFSET,
    OPT_TIME,
    OPT_BYTES,
    OPT_TO_FILE,
    OPT_COMMIT_BYTES,
    OPT_DIRECT,
    OPT_TIMEOUT,
};

static bool num_opt(const char *name, const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    if (!cli_parse_u64(s, out) || *out < lo || *out > hi) {
        cli_error(BENCH_CMD, "%s '%s': expected a whole number from %" PRIu64 " to %" PRIu64, name,
                  s, lo, hi);
        return false;
    }
    return true;
}

/* Applies one option (getopt_long's opt and optarg). 0 to go on, -1 after
 * --help, else the exit status of a usage error (reported). Over 100 lines
 * on purpose: a flat switch with one short case per option, read and
 * extended in one place. */
static int apply_option(bench_cfg *cfg, int opt, const char *arg, const char **server,
                        bool *count_set)
{
    uint64_t v;
    switch (opt) {
    case 's':
        *server = arg;
        break;
    case 'n':
        if (!num_opt("--count", arg, 1, UINT64_C(1) << 40, &cfg->count))
            return CLI_EXIT_USAGE;
        *count_set = true;
        break;
    case OPT_SIZE:
        if (!num_opt("--size", arg, 8, 64u << 20, &v))
            return CLI_EXIT_USAGE;
        cfg->size = (size_t)v;
        break;
    case 'b':
        if (!num_opt("--batch", arg, 1, 1000000, &v))
            return CLI_EXIT_USAGE;
        cfg->batch = (uint32_t)v;
        break;
    case OPT_BATCH_BYTES:
        if (!num_opt("--batch-bytes", arg, 1024, 1u << 30, &v))
            return CLI_EXIT_USAGE;
        cfg->batch_bytes = (size_t)v;
        break;
    case OPT_IN_FLIGHT:
        if (!num_opt("--in-flight", arg, 1, 1024, &v))
            return CLI_EXIT_USAGE;
        cfg->in_flight = (uint32_t)v;
        break;
    case 'p':
        if (!num_opt("--pubs", arg, 1, 256, &v))
            return CLI_EXIT_USAGE;
        cfg->pubs = (uint32_t)v;
        break;
    case OPT_SUBS:
        if (!num_opt("--subs", arg, 0, MAX_SUBS, &v))
            return CLI_EXIT_USAGE;
        cfg->subs = (uint32_t)v;
        break;
    case OPT_SUB_THREADS:
        if (!num_opt("--sub-threads", arg, 0, 256, &v))
            return CLI_EXIT_USAGE;
        cfg->sub_threads = (uint32_t)v;
        break;
    case OPT_TOPICS:
        if (!num_opt("--topics", arg, 1, 10000000, &v))
            return CLI_EXIT_USAGE;
        cfg->topics = (uint32_t)v;
        break;
    case OPT_PREFIX:
        if (!*arg || strlen(arg) >= sizeof cfg->prefix - 1 || strchr(arg, ' ')) {
            cli_error(BENCH_CMD, "--prefix '%s': 1 to %zu characters, no spaces", arg,
                      sizeof cfg->prefix - 2);
            return CLI_EXIT_USAGE;
        }
        snprintf(cfg->prefix, sizeof cfg->prefix, "%s", arg);
        break;
    case OPT_IDS:
        cfg->ids = true;
        break;
    case OPT_JSON:
        cfg->json = true;
        break;
    case OPT_STORED:
        cfg->stored = true;
        break;
    case OPT_DISTINCT:
        cfg->distinct = true;
        break;
    case 'P':
        cfg->pattern = arg;
        break;
    case OPT_RATE:
        if (!num_opt("--rate", arg, 1, 10000000, &cfg->rate))
            return CLI_EXIT_USAGE;
        break;
    case OPT_PARTITION:
        cfg->partition = arg;
        break;
    case OPT_OFFSET:
        if (!num_opt("--offset", arg, 0, UINT64_MAX, &cfg->offset))
            return CLI_EXIT_USAGE;
        cfg->has_offset = true;
        break;
    case OPT_TIME:
        if (!cli_parse_time(BENCH_CMD, "--time", arg, &cfg->time_ns))
            return CLI_EXIT_USAGE;
        cfg->has_time = true;
        break;
    case OPT_BYTES:
        if (!num_opt("--bytes", arg, 1, UINT64_C(1) << 40, &cfg->tcp_bytes))
            return CLI_EXIT_USAGE;
        break;
    case OPT_TO_FILE:
        cfg->tcp_to_file = arg;
        break;
    case OPT_DIRECT:
        cfg->tcp_direct = true;
        break;
    case OPT_COMMIT_BYTES:
        if (!num_opt("--commit-bytes", arg, 1, UINT64_C(1) << 40, &cfg->tcp_commit_bytes))
            return CLI_EXIT_USAGE;
        break;
    case 'u':
        cfg->user = arg;
        break;
    case CLI_OPT_TLS:
    case CLI_OPT_TLS_CA:
    case CLI_OPT_TLS_CERT:
    case CLI_OPT_TLS_KEY:
        cli_tls_option(&cfg->tls, opt, arg);
        break;
    case OPT_TIMEOUT:
        if (!num_opt("--timeout", arg, 1, 3600000, &v))
            return CLI_EXIT_USAGE;
        cfg->timeout_ms = (int)v;
        break;
    case 'h':
        fputs(usage, stdout);
        return cli_flush_stdout(BENCH_CMD) ? -1 : CLI_EXIT_RUNTIME;
    default:
        return cli_try_help(BENCH_CMD);
    }
    return 0;
}

int bench_parse(bench_cfg *cfg, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"server", required_argument, NULL, 's'},
        {"count", required_argument, NULL, 'n'},
        {"size", required_argument, NULL, OPT_SIZE},
        {"batch", required_argument, NULL, 'b'},
        {"batch-bytes", required_argument, NULL, OPT_BATCH_BYTES},
        {"in-flight", required_argument, NULL, OPT_IN_FLIGHT},
        {"pubs", required_argument, NULL, 'p'},
        {"subs", required_argument, NULL, OPT_SUBS},
        {"sub-threads", required_argument, NULL, OPT_SUB_THREADS},
        {"topics", required_argument, NULL, OPT_TOPICS},
        {"prefix", required_argument, NULL, OPT_PREFIX},
        {"distinct", no_argument, NULL, OPT_DISTINCT},
        {"ids", no_argument, NULL, OPT_IDS},
        {"json", no_argument, NULL, OPT_JSON},
        {"stored", no_argument, NULL, OPT_STORED},
        {"pattern", required_argument, NULL, 'P'},
        {"rate", required_argument, NULL, OPT_RATE},
        {"partition", required_argument, NULL, OPT_PARTITION},
        {"offset", required_argument, NULL, OPT_OFFSET},
        {"time", required_argument, NULL, OPT_TIME},
        {"bytes", required_argument, NULL, OPT_BYTES},
        {"to-file", required_argument, NULL, OPT_TO_FILE},
        {"commit-bytes", required_argument, NULL, OPT_COMMIT_BYTES},
        {"direct", no_argument, NULL, OPT_DIRECT},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"user", required_argument, NULL, 'u'},
        CLI_TLS_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *server = NULL;
    bool count_set = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "s:n:b:p:P:u:h", longopts, NULL)) != -1) {
        int rc = apply_option(cfg, opt, optarg, &server, &count_set);
        if (rc != 0)
            return rc;
    }
    if (optind != argc - 1)
        return cli_usage_error(BENCH_CMD,
                               "expected one MODE (pub, sub, replay, latency, seek or tcp)");
    cfg->mode = argv[optind];
    cfg->server = cli_server(server);
    if (cfg->user) {
        /* Every client of the run authenticates with the same password. */
        static char password[1024];
        pb_client_options o;
        if (!cli_credentials(BENCH_CMD, cfg->user, &o, password, sizeof password))
            return CLI_EXIT_RUNTIME;
        cfg->password = password;
    }
    if (strcmp(cfg->mode, "seek") == 0 && !count_set)
        cfg->count = 5;
    if (strcmp(cfg->mode, "latency") == 0 && !count_set)
        cfg->count = cfg->rate * 5;
    return 0;
}
