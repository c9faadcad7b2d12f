/*
 * sub - `protobus sub`: one subscription through libprotobus, each event
 * printed with render.h. Stops after -n events, after --timeout of
 * silence, once history is delivered (--until-caught-up), on SIGINT/SIGTERM
 * (exit 0), or on a server error (exit 1).
 * Events the server could not read (DATA_LOSS) are reported on stderr and
 * make the exit status 1, the subscription goes on; so are events whose
 * bytes do not decode (the library hands them over unscanned: the renderer
 * checks them, and one walk per event is enough). Offsets removed by
 * retention (OUT_OF_RANGE) get a note on stderr and change nothing else.
 *
 * Threads: the main thread only. Waits are sliced (SLICE_MS) so a signal
 * is noticed promptly: the library retries poll() after EINTR.
 */
#include "cli.h"

#include "client.h"
#include "grow.h"
#include "render.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLICE_MS 200

static const char usage[] =
    "Usage: protobus sub [OPTIONS] PATTERN...\n"
    "\n"
    "Subscribes to the topics that match any PATTERN (a PCRE2 regex that must\n"
    "match the whole topic, e.g. 'orders\\..*') and prints each event, with\n"
    "its partition and offset, on standard output. Runs until interrupted\n"
    "(SIGINT/SIGTERM: exit 0) unless -n, --timeout or --until-caught-up ends\n"
    "it.\n"
    "\n"
    "Where to start (at most one; default: only events stored from now on):\n"
    "      --from-beginning          every stored event (from the first offset\n"
    "                                retention left)\n"
    "      --from-offset PART:OFF    from offset OFF of partition PART\n"
    "                                (repeatable; partitions not named: from\n"
    "                                their beginning)\n"
    "      --from-time TIME          first event received at or after TIME:\n"
    "                                RFC 3339 (2026-11-23T10:00:00Z) or relative\n"
    "                                to now (-15m, -2h, -30s, -1d)\n"
    "      --last N                  the last N events of each matching topic\n"
    "\n"
    "Options:\n"
    "  -s, --server HOST:PORT  server address (default $PROTOBUS_SERVER, else\n"
    "                          " CLI_DEFAULT_SERVER ")\n"
    "  -u, --user NAME         authenticate as NAME (server auth = required); the\n"
    "                          password comes from $PROTOBUS_PASSWORD, else it is\n"
    "                          asked on the terminal (never on the command line)\n" CLI_TLS_HELP
    "  -t, --tag KEY=VALUE     only events with this tag value (repeatable: all\n"
    "                          must match)\n"
    "  -n, --count COUNT       exit 0 after COUNT events\n"
    "      --timeout MS        exit 0 after MS milliseconds without an event\n"
    "      --until-caught-up   exit 0 once every stored event (the history up to\n"
    "                          the moment of subscribing) has been printed\n"
    "  -f, --format FORMAT     text (default), json (one object per line; \"id\" when\n"
    "                          the publisher gave the event one) or raw (payload\n"
    "                          bytes only)\n"
    "  -h, --help              show this help\n"
    "\n"
    "Exit status: 0 when stopped by -n, --timeout, --until-caught-up or a signal;\n"
    "1 on a server or connection error (message on standard error), if the\n"
    "server reported events it could not read (data loss) or sent one that does\n"
    "not decode (both reported, the rest still printed); 2 usage error.\n"
    "Offsets removed by retention before they could be delivered get a note on\n"
    "standard error (\"note: offsets A..B of partition P were removed by\n"
    "retention\") and do not change the exit status.\n";

enum {
    OPT_FROM_BEGINNING = 256,
    OPT_FROM_OFFSET,
    OPT_FROM_TIME,
    OPT_LAST,
    OPT_TIMEOUT,
    OPT_UNTIL_CAUGHT_UP,
};

typedef struct sub_opts {
    const char *server;
    const char *user; /* --user */
    cli_tls tls;
    cli_tags tags;
    pb_subscription s;
    pb_partition_offset *offsets;
    char **offset_names;
    size_t noffsets;
    int starts; /* start options given */
    uint64_t count;
    bool has_count;
    int64_t timeout_ms; /* -1: none */
    bool until_caught_up;
    pb_render_format fmt;
} sub_opts;

static void opts_free(sub_opts *o)
{
    for (size_t i = 0; i < o->noffsets; i++)
        free(o->offset_names[i]);
    free(o->offset_names);
    free(o->offsets);
    cli_tags_free(&o->tags);
}

/* PART:OFF, split at the last ':' (partition names may not contain one,
 * but this keeps the offset unambiguous). */
static int add_offset(sub_opts *o, const char *arg)
{
    const char *colon = strrchr(arg, ':');
    uint64_t off;
    if (!colon || colon == arg || !cli_parse_u64(colon + 1, &off))
        return cli_usage_error("sub", "--from-offset %s: expected PARTITION:OFFSET", arg);
    size_t n = o->noffsets + 1;
    if (grow_resize(&o->offsets, n, sizeof *o->offsets) < 0 ||
        grow_resize(&o->offset_names, n, sizeof *o->offset_names) < 0)
        goto nomem;
    char *name = strndup(arg, (size_t)(colon - arg));
    if (!name)
        goto nomem;
    o->offset_names[o->noffsets] = name;
    o->offsets[o->noffsets] = (pb_partition_offset){.partition = name, .offset = off};
    o->noffsets = n;
    return 0;
nomem:
    cli_error("sub", "out of memory");
    return CLI_EXIT_RUNTIME;
}

/* Parses the command line into o. 0 to go on, else the exit status. Over
 * 100 lines on purpose: a flat switch with one short case per option, read
 * and extended in one place. */
static int parse(int argc, char **argv, sub_opts *o)
{
    static const struct option longopts[] = {
        {"server", required_argument, NULL, 's'},
        {"tag", required_argument, NULL, 't'},
        {"count", required_argument, NULL, 'n'},
        {"format", required_argument, NULL, 'f'},
        {"from-beginning", no_argument, NULL, OPT_FROM_BEGINNING},
        {"from-offset", required_argument, NULL, OPT_FROM_OFFSET},
        {"from-time", required_argument, NULL, OPT_FROM_TIME},
        {"last", required_argument, NULL, OPT_LAST},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"until-caught-up", no_argument, NULL, OPT_UNTIL_CAUGHT_UP},
        {"user", required_argument, NULL, 'u'},
        CLI_TLS_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static char prog[] = "protobus sub";
    uint64_t v;
    int opt, rc;
    argv[0] = prog;
    optind = 1;
    o->timeout_ms = -1;
    o->fmt = PB_RENDER_TEXT;
    bool by_offset = false;
    while ((opt = getopt_long(argc, argv, "s:t:n:f:u:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 's':
            o->server = optarg;
            break;
        case 'u':
            o->user = optarg;
            break;
        case CLI_OPT_TLS:
        case CLI_OPT_TLS_CA:
        case CLI_OPT_TLS_CERT:
        case CLI_OPT_TLS_KEY:
            cli_tls_option(&o->tls, opt, optarg);
            break;
        case 't':
            if (cli_tags_add(&o->tags, optarg) < 0)
                return cli_usage_error("sub", "-t %s: expected KEY=VALUE with a non-empty KEY",
                                       optarg);
            break;
        case 'n':
            if (!cli_parse_u64(optarg, &o->count) || o->count == 0)
                return cli_usage_error("sub", "-n %s: expected a positive count", optarg);
            o->has_count = true;
            break;
        case 'f':
            if (pb_render_format_parse(optarg, &o->fmt) < 0)
                return cli_usage_error("sub", "--format %s: expected text, json or raw", optarg);
            break;
        case OPT_FROM_BEGINNING:
            o->s.start = PB_START_BEGINNING;
            o->starts++;
            break;
        case OPT_FROM_OFFSET:
            if ((rc = add_offset(o, optarg)) != 0)
                return rc;
            o->s.start = PB_START_OFFSETS;
            o->starts += !by_offset; /* repeating it is one start option */
            by_offset = true;
            break;
        case OPT_FROM_TIME:
            if (!cli_parse_time("sub", "--from-time", optarg, &o->s.from_time_ns))
                return CLI_EXIT_USAGE;
            o->s.start = PB_START_TIME;
            o->starts++;
            break;
        case OPT_LAST:
            if (!cli_parse_u64(optarg, &v) || v == 0 || v > UINT32_MAX)
                return cli_usage_error("sub", "--last %s: expected a count from 1 to %u", optarg,
                                       UINT32_MAX);
            o->s.start = PB_START_LAST_N;
            o->s.last_n = (uint32_t)v;
            o->starts++;
            break;
        case OPT_TIMEOUT:
            if (!cli_parse_u64(optarg, &v) || v > INT32_MAX)
                return cli_usage_error("sub", "--timeout %s: expected milliseconds", optarg);
            o->timeout_ms = (int64_t)v;
            break;
        case OPT_UNTIL_CAUGHT_UP:
            o->until_caught_up = true;
            break;
        case 'h':
            fputs(usage, stdout);
            return cli_flush_stdout("sub") ? -1 : CLI_EXIT_RUNTIME;
        default:
            return cli_try_help("sub");
        }
    }
    if (o->starts > 1)
        return cli_usage_error("sub", "give at most one of --from-beginning, --from-offset, "
                                      "--from-time and --last");
    if (optind >= argc)
        return cli_usage_error("sub", "at least one PATTERN is required (e.g. '.*')");
    o->s.patterns = (const char *const *)(argv + optind);
    o->s.npatterns = (size_t)(argc - optind);
    o->s.tags = o->tags.tags;
    o->s.ntags = o->tags.n;
    o->s.offsets = o->offsets;
    o->s.noffsets = o->noffsets;
    o->server = cli_server(o->server);
    return 0;
}

/* Receives and prints until done. Returns the exit status. */
static int run(pb_client *c, const sub_opts *o, pb_renderer *out)
{
    int status = CLI_EXIT_OK;
    uint64_t received = 0;
    /* The clock is read when the buffered frames run out, not per event:
     * "last activity" is then the end of the last burst, which is what
     * --timeout measures from (a clock read per event showed in profiles). */
    int64_t last_activity = cli_now_ms();
    bool active = false;
    char err[256];
    pb_item item;
    while (!cli_stop) {
        int rc = pb_client_next(c, &item, 0);
        if (rc == PB_ETIMEDOUT) {
            /* Nothing buffered: show what we have before waiting. */
            if (!cli_flush_stdout("sub"))
                return CLI_EXIT_RUNTIME;
            int64_t now = cli_now_ms();
            if (active)
                last_activity = now;
            active = false;
            int wait = SLICE_MS;
            if (o->timeout_ms >= 0) {
                int64_t left = last_activity + o->timeout_ms - now;
                if (left <= 0)
                    break;
                if (left < wait)
                    wait = (int)left;
            }
            rc = pb_client_next(c, &item, wait);
            if (rc == PB_ETIMEDOUT)
                continue;
        }
        if (rc == PB_ESERVER) {
            cli_error("sub", "server error: %s", pb_client_message(c));
            return CLI_EXIT_RUNTIME;
        }
        if (rc < 0) {
            cli_error("sub", "%s", pb_client_message(c));
            return CLI_EXIT_RUNTIME;
        }
        active = true;
        if (item.kind == PB_ITEM_CAUGHT_UP) {
            if (o->until_caught_up)
                break; /* everything stored when we subscribed is printed */
            continue;
        }
        if (item.kind == PB_ITEM_OUT_OF_RANGE) {
            /* Not an error: retention removed them, as configured. */
            cli_error("sub", "note: %s", item.loss.message);
            continue;
        }
        if (item.kind == PB_ITEM_DATA_LOSS) {
            cli_error("sub", "data loss in partition %s, offsets %llu-%llu: %s",
                      item.loss.partition, (unsigned long long)item.loss.first_offset,
                      (unsigned long long)item.loss.last_offset, item.loss.message);
            status = CLI_EXIT_RUNTIME;
            continue;
        }
        const pb_received_event *ev = &item.event;
        rc = pb_render(out, ev->partition, ev->offset, ev->raw, ev->raw_len, err, sizeof err);
        if (rc == PB_EPROTO) {
            cli_error("sub", "%s", err);
            status = CLI_EXIT_RUNTIME;
        } else if (rc < 0) {
            cli_error("sub", "writing event %s:%llu: %s", ev->partition,
                      (unsigned long long)ev->offset, err[0] ? err : pb_strerror(rc));
            return CLI_EXIT_RUNTIME;
        }
        if (o->has_count && ++received >= o->count)
            break;
    }
    return status;
}

int cmd_sub(int argc, char **argv)
{
    sub_opts o;
    memset(&o, 0, sizeof o);
    pb_client *c = NULL;
    pb_renderer out;
    pb_renderer_init(&out, stdout, PB_RENDER_TEXT);
    int rc = parse(argc, argv, &o);
    if (rc != 0) {
        rc = rc < 0 ? CLI_EXIT_OK : rc;
        goto out;
    }
    cli_catch_signals();
    cli_buffer_stdout();
    pb_renderer_init(&out, stdout, o.fmt);
    pb_client_options opts;
    pb_client_options_init(&opts);
    opts.name = "protobus sub " PB_VERSION_STRING;
    cli_tls_apply(&o.tls, &opts);
    if ((rc = cli_connect("sub", &c, o.server, o.user, &opts)) != CLI_EXIT_OK)
        goto out;
    /* The renderer decodes (and checks) each event's bytes itself. */
    client_events_unscanned(c);
    if (pb_client_subscribe(c, &o.s) < 0) {
        cli_error("sub", "%s", pb_client_message(c));
        rc = CLI_EXIT_RUNTIME;
        goto out;
    }
    rc = run(c, &o, &out);
    if (!cli_flush_stdout("sub"))
        rc = CLI_EXIT_RUNTIME;
out:
    pb_client_close(c);
    pb_renderer_free(&out);
    opts_free(&o);
    return rc;
}
