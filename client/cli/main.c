/*
 * protobus - the command-line client: `pub` and `sub` talk to protobusd,
 * `cat` reads segment files (and the original protobus-server's files)
 * with no server. This file only dispatches to the subcommand.
 *
 * Threads: one (the main thread).
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const char usage[] =
    "Usage: protobus COMMAND [OPTIONS] [ARGS]\n"
    "\n"
    "Command-line client for the Protobus log broker.\n"
    "\n"
    "Commands:\n"
    "  pub   publish events (an argument, or one per line of standard input)\n"
    "  sub   subscribe to topics and print the events as they arrive\n"
    "  cat   print, filter, follow or verify stored events from segment files,\n"
    "        partition or data directories, with no server\n"
    "  bench measure throughput and latency against a server\n"
    "  passwd print the argon2id hash of a password, for protobusd's [user] sections\n"
    "  stats show a running protobusd's partitions, rates and connections (its\n"
    "        metrics_listen endpoint)\n"
    "\n"
    "'protobus COMMAND --help' describes each command.\n"
    "\n"
    "Options:\n"
    "  -h, --help     show this help\n"
    "  -V, --version  show the version\n"
    "\n"
    "Exit status: 0 success, 1 runtime error (the message on standard error\n"
    "names the problem), 2 usage error.\n";

int main(int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_error(NULL,
                               "a command is required (pub, sub, cat, bench, passwd or stats)");
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage, stdout);
        return cli_flush_stdout(NULL) ? CLI_EXIT_OK : CLI_EXIT_RUNTIME;
    }
    if (strcmp(cmd, "-V") == 0 || strcmp(cmd, "--version") == 0) {
        printf("protobus %s\n", PB_VERSION_STRING);
        return cli_flush_stdout(NULL) ? CLI_EXIT_OK : CLI_EXIT_RUNTIME;
    }
    if (strcmp(cmd, "pub") == 0)
        return cmd_pub(argc - 1, argv + 1);
    if (strcmp(cmd, "sub") == 0)
        return cmd_sub(argc - 1, argv + 1);
    if (strcmp(cmd, "cat") == 0)
        return cmd_cat(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0)
        return cmd_bench(argc - 1, argv + 1);
    if (strcmp(cmd, "passwd") == 0)
        return cmd_passwd(argc - 1, argv + 1);
    if (strcmp(cmd, "stats") == 0)
        return cmd_stats(argc - 1, argv + 1);
    return cli_usage_error(NULL, "unknown command '%s' (pub, sub, cat, bench, passwd or stats)",
                           cmd);
}
