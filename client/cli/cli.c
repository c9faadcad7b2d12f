/*
 * cli - helpers shared by the `protobus` subcommands (see cli.h).
 *
 * Threads: main thread only; the signal handler touches cli_stop alone.
 */
#include "cli.h"

#include "grow.h"
#include "timefmt.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

volatile sig_atomic_t cli_stop;

static void on_signal(int sig)
{
    cli_stop = sig;
}

void cli_catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: a blocking read of stdin returns EINTR and the
     * command notices cli_stop. */
    (void)sigaction(SIGINT, &sa, NULL);
    (void)sigaction(SIGTERM, &sa, NULL);
}

static void vreport(const char *cmd, const char *fmt, va_list ap)
{
    fprintf(stderr, "protobus%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void cli_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(cmd, fmt, ap);
    va_end(ap);
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(cmd, fmt, ap);
    va_end(ap);
    fprintf(stderr, "Try 'protobus %s%s--help'.\n", cmd ? cmd : "", cmd ? " " : "");
    return CLI_EXIT_USAGE;
}

int cli_try_help(const char *cmd)
{
    fprintf(stderr, "Try 'protobus %s --help'.\n", cmd);
    return CLI_EXIT_USAGE;
}

const char *cli_server(const char *opt)
{
    if (opt)
        return opt;
    const char *env = getenv("PROTOBUS_SERVER");
    return env && *env ? env : CLI_DEFAULT_SERVER;
}

int cli_tags_add(cli_tags *t, const char *arg)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg)
        return PB_EINVAL;
    size_t n = t->n + 1;
    if (grow_resize(&t->tags, n, sizeof *t->tags) < 0 ||
        grow_resize(&t->keys, n, sizeof *t->keys) < 0 ||
        grow_resize(&t->values, n, sizeof *t->values) < 0)
        return PB_ENOMEM;
    char *key = strndup(arg, (size_t)(eq - arg));
    if (!key)
        return PB_ENOMEM;
    t->tags[t->n] = (pb_tag){.key = key, .value = eq + 1};
    t->keys[t->n] = key;
    t->values[t->n] = eq + 1;
    t->n = n;
    return 0;
}

void cli_tags_free(cli_tags *t)
{
    for (size_t i = 0; i < t->n; i++)
        free((char *)t->keys[i]);
    free(t->tags);
    free(t->keys);
    free(t->values);
    memset(t, 0, sizeof *t);
}

bool cli_parse_u64(const char *s, uint64_t *out)
{
    if (*s < '0' || *s > '9')
        return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = v;
    return true;
}

bool cli_parse_time(const char *cmd, const char *option, const char *s, int64_t *out_ns)
{
    char err[200];
    if (pb_time_parse(s, pb_time_now_ns(), out_ns, err, sizeof err) == 0)
        return true;
    cli_usage_error(cmd, "%s: %s", option, err);
    return false;
}

int64_t cli_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cli_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    (void)nanosleep(&ts, NULL); /* EINTR: a signal, the caller checks cli_stop */
}

void cli_buffer_stdout(void)
{
    /* glibc ignores the size unless it is given the buffer too. Static: it
     * must outlive every write, up to exit's final flush. */
    static char buf[CLI_STDOUT_BUFFER];
    /* A terminal stays line-buffered: a person sees each event at once. */
    if (!isatty(STDOUT_FILENO))
        (void)setvbuf(stdout, buf, _IOFBF, sizeof buf);
}

bool cli_flush_stdout(const char *cmd)
{
    if (fflush(stdout) == 0 && !ferror(stdout))
        return true;
    cli_error(cmd, "writing to standard output: %s", strerror(errno));
    return false;
}

bool cli_tls_option(cli_tls *t, int opt, const char *arg)
{
    switch (opt) {
    case CLI_OPT_TLS:
        t->on = true;
        return true;
    case CLI_OPT_TLS_CA:
        t->ca = arg;
        return true;
    case CLI_OPT_TLS_CERT:
        t->cert = arg;
        return true;
    case CLI_OPT_TLS_KEY:
        t->key = arg;
        return true;
    default:
        return false;
    }
}

void cli_tls_apply(const cli_tls *t, pb_client_options *opts)
{
    opts->tls = t->on || t->ca || t->cert || t->key;
    opts->tls_ca = t->ca;
    opts->tls_cert = t->cert;
    opts->tls_key = t->key;
}
