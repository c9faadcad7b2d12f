/*
 * cli - what the `protobus` subcommands share: exit codes, messages,
 * signal handling, option values (tags, numbers, times), the clock.
 *
 * Threads: the CLI is single-threaded; everything here runs on the main
 * thread (the signal handler only sets cli_stop).
 */
#ifndef PB_CLI_H
#define PB_CLI_H

#include "protobus.h"

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Exit codes scripts can rely on. */
enum { CLI_EXIT_OK = 0, CLI_EXIT_RUNTIME = 1, CLI_EXIT_USAGE = 2 };

#define CLI_DEFAULT_SERVER "127.0.0.1:7420"

/* Set (to the signal number) by SIGINT/SIGTERM once cli_catch_signals ran. */
extern volatile sig_atomic_t cli_stop;

/* SIGINT and SIGTERM set cli_stop instead of killing the process, so a
 * command can finish its output and exit 0. */
void cli_catch_signals(void);

/* "protobus CMD: message\n" on stderr. */
void cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* cli_error, then "Try 'protobus CMD --help'."; returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* After getopt_long printed its own complaint: "Try 'protobus CMD --help'."
 * Returns CLI_EXIT_USAGE. */
int cli_try_help(const char *cmd);

/* -s value, else $PROTOBUS_SERVER when set and not empty, else the default. */
const char *cli_server(const char *opt);

/* KEY=VALUE options (-t). The strings point into argv (split at the first
 * '=' by copying the key). keys/values are parallel to tags, for
 * pb_event_tags_match. */
typedef struct cli_tags {
    pb_tag *tags;
    const char **keys;
    const char **values;
    size_t n;
} cli_tags;

/* Adds one KEY=VALUE. 0, PB_EINVAL (no '=' or an empty key; the caller
 * reports it as a usage error) or PB_ENOMEM. */
int cli_tags_add(cli_tags *t, const char *arg);
void cli_tags_free(cli_tags *t);

/* Whole-string decimal numbers; false on anything else (sign, junk, overflow). */
bool cli_parse_u64(const char *s, uint64_t *out);

/* RFC 3339 or relative TIME (timefmt.h). On error prints the
 * message (naming the option) and returns false. */
bool cli_parse_time(const char *cmd, const char *option, const char *s, int64_t *out_ns);

/* CLOCK_MONOTONIC in milliseconds. */
int64_t cli_now_ms(void);

/* Sleeps ms milliseconds (returns early on a signal). */
void cli_sleep_ms(int ms);

/* Bytes of stdout's buffer when it is not a terminal: stdio's default (one
 * block, 4 KiB) costs a write() per ~10 JSON lines. */
#define CLI_STDOUT_BUFFER (1024 * 1024)

/* Gives stdout a CLI_STDOUT_BUFFER buffer unless it is a terminal. Call
 * before anything is written to stdout. */
void cli_buffer_stdout(void);

/* Flushes stdout; on failure reports it and returns false. */
bool cli_flush_stdout(const char *cmd);

/* Credentials (passwd.c): with --user NAME (user not NULL), the password
 * from $PROTOBUS_PASSWORD, else asked on the terminal without echo, into
 * buf; opts->user and opts->password set. Never from argv. false after
 * reporting why. */
bool cli_credentials(const char *cmd, const char *user, pb_client_options *opts, char *buf,
                     size_t cap);

/* Connects *c to server with opts (the caller's name, TLS and limits in
 * it), with user's credentials (cli_credentials) when user is not NULL;
 * the password is wiped once the connection is made or refused, and
 * opts->password cleared. CLI_EXIT_OK, or CLI_EXIT_RUNTIME after saying
 * why (cmd names the command). */
int cli_connect(const char *cmd, pb_client **c, const char *server, const char *user,
                pb_client_options *opts);
/* Reads a line from /dev/tty without echo after prompt; false after
 * reporting why. */
bool cli_read_password(const char *cmd, const char *prompt, char *buf, size_t cap);

/* --tls, --tls-ca FILE, --tls-cert FILE, --tls-key FILE (pub, sub,
 * bench); an address "tls://host:port" turns TLS on too. */
typedef struct cli_tls {
    bool on;
    const char *ca, *cert, *key;
} cli_tls;
enum { CLI_OPT_TLS = 1000, CLI_OPT_TLS_CA, CLI_OPT_TLS_CERT, CLI_OPT_TLS_KEY };
#define CLI_TLS_LONGOPTS                                                                           \
    {"tls", no_argument, NULL, CLI_OPT_TLS}, {"tls-ca", required_argument, NULL, CLI_OPT_TLS_CA},  \
        {"tls-cert", required_argument, NULL, CLI_OPT_TLS_CERT},                                   \
    {                                                                                              \
        "tls-key", required_argument, NULL, CLI_OPT_TLS_KEY                                        \
    }
#define CLI_TLS_HELP                                                                               \
    "      --tls               speak TLS (also: an address tls://HOST:PORT)\n"                     \
    "      --tls-ca FILE       CA certificate(s) (PEM) to verify the server with\n"                \
    "                          (default: the system's)\n"                                          \
    "      --tls-cert FILE     client certificate (PEM), for mutual TLS\n"                         \
    "      --tls-key FILE      its private key (PEM)\n"
/* One of the CLI_OPT_TLS* options into t: true if opt was one. */
bool cli_tls_option(cli_tls *t, int opt, const char *arg);
/* t into opts (a CA, certificate or key implies --tls). */
void cli_tls_apply(const cli_tls *t, pb_client_options *opts);

int cmd_pub(int argc, char **argv);
int cmd_passwd(int argc, char **argv); /* passwd.c */
int cmd_sub(int argc, char **argv);
int cmd_cat(int argc, char **argv);
int cmd_bench(int argc, char **argv); /* bench.c */
int cmd_stats(int argc, char **argv); /* stats.c */

#endif
