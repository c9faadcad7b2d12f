/*
 * pub - `protobus pub`: publishes one event (MESSAGE) or one event per line
 * of standard input through libprotobus. Lines are batched and pipelined by
 * the library; the command flushes once at the end (and, with -v, every
 * POSITION_WINDOW events, so that the positions it must keep stay bounded).
 *
 * Threads: the main thread only.
 */
#include "cli.h"

#include "grow.h"
#include "record.h" /* PB_RECORD_MAX_EVENT */

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* With -v the library keeps 24 bytes per event until a flush; flushing every
 * this many events bounds that at ~1.5 MiB and costs one round trip each. */
#define POSITION_WINDOW    65536
#define DEFAULT_TIMEOUT_MS 60000
#define READ_CHUNK         (64u * 1024u)
/* --expect-last: the one Publish the expectation covers may hold this many
 * lines (the server's max_batch_events and max_frame_bytes may lower it). */
#define EXPECT_MAX_LINES 65536

static const char usage[] =
    "Usage: protobus pub [OPTIONS] TOPIC [MESSAGE]\n"
    "\n"
    "Publishes MESSAGE as one event on TOPIC or, without MESSAGE, one event per\n"
    "line of standard input (the newline is not part of the payload; an empty\n"
    "line is an empty payload; a last line without newline counts). Events are\n"
    "batched and pipelined; the command exits once the server has acknowledged\n"
    "all of them as stored (durable under the server's fsync policy).\n"
    "Each event gets the current time as its client event time.\n"
    "\n"
    "Options:\n"
    "  -s, --server HOST:PORT  server address (default $PROTOBUS_SERVER, else\n"
    "                          " CLI_DEFAULT_SERVER ")\n"
    "  -u, --user NAME         authenticate as NAME (server auth = required); the\n"
    "                          password comes from $PROTOBUS_PASSWORD, else it is\n"
    "                          asked on the terminal (never on the command line)\n" CLI_TLS_HELP
    "  -t, --tag KEY=VALUE     add a tag to every event (repeatable)\n"
    "      --type TYPE_URL     payload type URL (google.protobuf.Any type_url),\n"
    "                          e.g. type.googleapis.com/google.protobuf.StringValue;\n"
    "                          default: empty (the payload is opaque bytes)\n"
    "      --id ID             the event's id (MESSAGE only; at most 64 bytes of\n"
    "                          UTF-8): within the server's dedup window (2 minutes by\n"
    "                          default) an id is stored once per partition, so a\n"
    "                          retry of a publish that may have been stored is safe\n"
    "      --id-from-line      standard input lines are ID<TAB>payload: each event\n"
    "                          gets the id before the first tab\n"
    "      --expect-last OFFSET|none\n"
    "                          store the events only if TOPIC's last event has this\n"
    "                          offset (none: TOPIC has no event yet); checked by the\n"
    "                          server atomically with the append. Otherwise nothing\n"
    "                          is stored and the error names TOPIC's real last\n"
    "                          offset. All of standard input goes in that one Publish\n"
    "                          (at most the server's max_batch_events and\n"
    "                          max_frame_bytes), or nothing is published\n"
    "  -v, --verbose           print PARTITION:OFFSET of each stored event, one per\n"
    "                          line, in input order; \" duplicate\" follows the offset\n"
    "                          of an event whose id was already stored (the offset is\n"
    "                          the original's)\n"
    "      --timeout MS        wait at most MS milliseconds for the server's\n"
    "                          acknowledgements at the end (default 60000)\n"
    "  -h, --help              show this help\n"
    "\n"
    "A line longer than the server's maximum event size is an error. On any\n"
    "error (refused by the server, unreachable server, invalid topic or tag)\n"
    "publishing stops, the message goes to standard error and the exit status\n"
    "is 1 (also when --expect-last does not hold); with -v, every position printed\n"
    "is that of a stored event.\n"
    "Exit status 2: usage error.\n";

typedef struct pub_state {
    pb_client *c;
    const char *server;
    pb_event ev;
    bool verbose;
    bool id_from_line;
    const char *id; /* --id */
    char *line_id;  /* --id-from-line: the current line's id (NUL-terminated copy) */
    size_t line_id_cap;
    int timeout_ms;
    uint64_t published;   /* events accepted by the library */
    uint64_t since_flush; /* ... since the last flush */
    bool failed;          /* an error was reported: exit 1 */
    bool dead;            /* the connection is unusable: nothing left to flush */
} pub_state;

/* Sends what is pending and waits for the acknowledgements; prints the
 * positions with -v. Returns false on a connection-level failure (nothing
 * more can be done on this connection). */
static bool flush_all(pub_state *st)
{
    const pb_position *pos;
    size_t n;
    int rc = pb_client_flush(st->c, st->timeout_ms, &pos, &n);
    size_t refused = 0;
    for (size_t i = 0; i < n; i++) {
        if (pos[i].status == 0) {
            if (st->verbose)
                printf("%s:%llu%s\n", pos[i].partition, (unsigned long long)pos[i].offset,
                       pos[i].duplicate ? " duplicate" : "");
        } else {
            refused++;
        }
    }
    st->since_flush = 0;
    if (rc == 0)
        return true;
    if (rc != PB_ESERVER)
        st->dead = true;
    st->failed = true;
    if (rc == PB_ESERVER) {
        cli_error("pub", "%s", pb_client_message(st->c));
        if (refused)
            cli_error("pub", "%zu event(s) were not stored", refused);
        return true;
    }
    if (rc == PB_ETIMEDOUT)
        cli_error("pub", "%s did not acknowledge %zu event(s) within %d ms: %s", st->server,
                  refused, st->timeout_ms, pb_client_message(st->c));
    else
        cli_error("pub", "%s", pb_client_message(st->c));
    return false;
}

/* Publishes one payload. what names it in messages ("line 12", "MESSAGE").
 * Returns false when publishing must stop. */
static bool publish_one(pub_state *st, const void *payload, size_t len, const char *what,
                        const char *id)
{
    st->ev.payload = payload;
    st->ev.payload_len = len;
    st->ev.client_event_time_ns = pb_time_now_ns();
    int rc = pb_client_publish_id(st->c, &st->ev, id);
    if (rc == 0) {
        st->published++;
        st->since_flush++;
        if (st->verbose && st->since_flush >= POSITION_WINDOW)
            return flush_all(st) && !st->failed;
        return true;
    }
    st->failed = true;
    if (rc == PB_EINVAL || rc == PB_ETOOBIG) {
        cli_error("pub", "%s: %s", what, pb_client_message(st->c));
    } else {
        /* PB_ESERVER: an earlier batch was refused (the client stays
         * usable); anything else leaves the connection dead. */
        cli_error("pub", "%s", pb_client_message(st->c));
        st->dead = rc != PB_ESERVER;
    }
    return false;
}

/* Reads standard input in big chunks and cuts it into lines without
 * copying them; the buffer grows up to limit + 1 bytes (one line plus its
 * newline) and no further. */
typedef struct line_reader {
    uint8_t *buf;
    size_t cap, start, end, scan;
    size_t limit;
    bool eof;
} line_reader;

/* 1: a line in *p and *len; 0: end of input; PB_ETOOBIG: the line is longer
 * than limit; PB_ENOMEM; negated errno. */
static int next_line(line_reader *lr, const uint8_t **p, size_t *len)
{
    for (;;) {
        uint8_t *nl =
            lr->scan < lr->end ? memchr(lr->buf + lr->scan, '\n', lr->end - lr->scan) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - (lr->buf + lr->start));
            if (n > lr->limit)
                return PB_ETOOBIG;
            *p = lr->buf + lr->start;
            *len = n;
            lr->start = lr->scan = (size_t)(nl - lr->buf) + 1;
            return 1;
        }
        lr->scan = lr->end;
        if (lr->end - lr->start > lr->limit)
            return PB_ETOOBIG;
        if (lr->eof) {
            if (lr->start == lr->end)
                return 0;
            *p = lr->buf + lr->start;
            *len = lr->end - lr->start;
            lr->start = lr->scan = lr->end;
            return 1;
        }
        if (lr->end == lr->cap && lr->start > 0) {
            /* Lines before this one are published: reuse their room. */
            memmove(lr->buf, lr->buf + lr->start, lr->end - lr->start);
            lr->end -= lr->start;
            lr->scan -= lr->start;
            lr->start = 0;
        }
        if (lr->end == lr->cap) {
            size_t cap = lr->cap ? lr->cap * 2 : READ_CHUNK;
            if (cap > lr->limit + 1)
                cap = lr->limit + 1; /* > end: end - start <= limit was checked */
            if (grow_resize(&lr->buf, cap, 1) < 0)
                return PB_ENOMEM;
            lr->cap = cap;
        }
        ssize_t r = read(STDIN_FILENO, lr->buf + lr->end, lr->cap - lr->end);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            lr->eof = true;
        lr->end += (size_t)r;
    }
}

/* --id-from-line: cuts "ID<TAB>" off the line; the id (a NUL-terminated
 * copy), or NULL after reporting why not. */
static const char *split_id(pub_state *st, const uint8_t **p, size_t *len, const char *what)
{
    const uint8_t *tab = memchr(*p, '\t', *len);
    if (!tab) {
        st->failed = true;
        cli_error("pub", "%s: no TAB: --id-from-line wants ID<TAB>payload lines", what);
        return NULL;
    }
    size_t n = (size_t)(tab - *p);
    if (n == 0 || memchr(*p, '\0', n)) {
        st->failed = true;
        cli_error("pub", "%s: %s id before the TAB", what, n ? "a NUL byte in the" : "an empty");
        return NULL;
    }
    if (grow_reserve(&st->line_id, &st->line_id_cap, n + 1, 1) < 0) {
        st->failed = true;
        cli_error("pub", "out of memory");
        return NULL;
    }
    memcpy(st->line_id, *p, n);
    st->line_id[n] = '\0';
    *len -= n + 1;
    *p = tab + 1;
    return st->line_id;
}

static void publish_stdin(pub_state *st)
{
    uint64_t max = pb_client_max_event_bytes(st->c);
    line_reader lr = {.limit = max && max < PB_RECORD_MAX_EVENT ? (size_t)max
                                                                : (size_t)PB_RECORD_MAX_EVENT};
    uint64_t lineno = 0;
    for (;;) {
        const uint8_t *p = NULL;
        size_t len = 0;
        int rc = next_line(&lr, &p, &len);
        if (rc == 0)
            break;
        lineno++;
        if (rc == PB_ETOOBIG) {
            st->failed = true;
            cli_error("pub",
                      "line %llu of standard input is longer than the server's maximum event "
                      "size (%zu bytes); the %llu line(s) before it were published",
                      (unsigned long long)lineno, lr.limit, (unsigned long long)(lineno - 1));
            break;
        }
        if (rc < 0) {
            st->failed = true;
            cli_error("pub", "reading standard input: %s", pb_strerror(rc));
            break;
        }
        char what[48];
        snprintf(what, sizeof what, "line %llu", (unsigned long long)lineno);
        const char *id = NULL;
        if (st->id_from_line && !(id = split_id(st, &p, &len, what)))
            break;
        if (!publish_one(st, p, len, what, id))
            break;
    }
    free(lr.buf);
}

/* The command line, parsed (what pub_state does not keep). */
typedef struct pub_opts {
    const char *server; /* -s, before cli_server() */
    const char *type;
    const char *expect; /* --expect-last as given; NULL: none */
    const char *user;
    cli_tls tls;
    cli_tags tags;
    const char *message; /* MESSAGE; NULL: standard input */
    bool expect_none;
    uint64_t expect_off;
} pub_opts;

/* The option switch, one short case per option. 0 to go on, -1 after
 * --help, else the exit status. */
static int parse_options(int argc, char **argv, pub_opts *o, pub_state *st)
{
    static const struct option longopts[] = {
        {"server", required_argument, NULL, 's'},
        {"tag", required_argument, NULL, 't'},
        {"type", required_argument, NULL, 'T'},
        {"verbose", no_argument, NULL, 'v'},
        {"timeout", required_argument, NULL, 'W'},
        {"id", required_argument, NULL, 'I'},
        {"id-from-line", no_argument, NULL, 'L'},
        {"expect-last", required_argument, NULL, 'E'},
        {"user", required_argument, NULL, 'u'},
        CLI_TLS_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static char prog[] = "protobus pub";
    uint64_t ms;
    int opt;
    argv[0] = prog;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "s:t:u:vh", longopts, NULL)) != -1) {
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
                return cli_usage_error("pub", "-t %s: expected KEY=VALUE with a non-empty KEY",
                                       optarg);
            break;
        case 'T':
            o->type = optarg;
            break;
        case 'v':
            st->verbose = true;
            break;
        case 'I':
            st->id = optarg;
            break;
        case 'L':
            st->id_from_line = true;
            break;
        case 'E':
            o->expect = optarg;
            break;
        case 'W':
            if (!cli_parse_u64(optarg, &ms) || ms > INT32_MAX)
                return cli_usage_error("pub", "--timeout %s: expected milliseconds", optarg);
            st->timeout_ms = (int)ms;
            break;
        case 'h':
            fputs(usage, stdout);
            return cli_flush_stdout("pub") ? -1 : CLI_EXIT_RUNTIME;
        default:
            return cli_try_help("pub");
        }
    }
    return 0;
}

/* Parses the command line into o and st: the options, then TOPIC and
 * MESSAGE and the rules that tie them to --id, --id-from-line and
 * --expect-last. 0 to go on, -1 after --help, else the exit status. */
static int parse(int argc, char **argv, pub_opts *o, pub_state *st)
{
    int rc = parse_options(argc, argv, o, st);
    if (rc != 0)
        return rc;
    int nargs = argc - optind;
    if (nargs < 1 || nargs > 2)
        return cli_usage_error("pub", nargs < 1 ? "TOPIC is required"
                                                : "too many arguments (quote MESSAGE)");
    if (st->id && nargs != 2)
        return cli_usage_error("pub", "--id needs MESSAGE (for standard input: --id-from-line)");
    if (st->id_from_line && nargs != 1)
        return cli_usage_error("pub", "--id-from-line reads standard input: no MESSAGE");
    if (o->expect && !(o->expect_none = strcmp(o->expect, "none") == 0) &&
        !cli_parse_u64(o->expect, &o->expect_off))
        return cli_usage_error("pub", "--expect-last %s: expected an offset or none", o->expect);
    o->message = nargs == 2 ? argv[optind + 1] : NULL;
    st->server = cli_server(o->server);
    st->ev.topic = argv[optind];
    st->ev.tags = o->tags.tags;
    st->ev.ntags = o->tags.n;
    st->ev.payload_type = o->type;
    return 0;
}

/* Connects st->c as the command line asks and, with --expect-last, sets
 * the expectation. 0 or the exit status. */
static int pub_connect(pub_state *st, const pub_opts *o)
{
    pb_client_options opts;
    pb_client_options_init(&opts);
    opts.no_positions = !st->verbose;
    if (o->expect) {
        /* All of standard input in the one Publish the expectation covers
         * (the library lowers these to the server's limits; a line that
         * does not fit is refused, nothing is sent unchecked). */
        opts.batch_events = EXPECT_MAX_LINES;
        opts.batch_bytes = (size_t)1 << 30;
    }
    opts.name = "protobus pub " PB_VERSION_STRING;
    cli_tls_apply(&o->tls, &opts);
    int rc = cli_connect("pub", &st->c, st->server, o->user, &opts);
    if (rc != CLI_EXIT_OK)
        return rc;
    if (o->expect &&
        pb_client_expect_last(st->c, st->ev.topic, o->expect_none, o->expect_off) < 0) {
        cli_error("pub", "--expect-last: %s", pb_client_message(st->c));
        return CLI_EXIT_RUNTIME;
    }
    return 0;
}

/* Publishes MESSAGE or standard input, then flushes. Returns the exit
 * status. */
static int pub_run(pub_state *st, const pub_opts *o)
{
    if (o->message)
        publish_one(st, o->message, strlen(o->message), "MESSAGE", st->id);
    else
        publish_stdin(st);
    /* Whatever was accepted is flushed, also after an error, so that the
     * events before it are stored and their fate is known; except under
     * --expect-last, whose one Publish is all of the input or nothing (the
     * library sends it only at the flush). */
    if (o->expect && st->failed && !st->dead)
        cli_error("pub", "--expect-last: nothing was published");
    else if (!st->dead && st->since_flush > 0)
        flush_all(st);
    int rc = st->failed ? CLI_EXIT_RUNTIME : CLI_EXIT_OK;
    if (!cli_flush_stdout("pub"))
        rc = CLI_EXIT_RUNTIME;
    return rc;
}

int cmd_pub(int argc, char **argv)
{
    pub_opts o = {0};
    pub_state st = {.timeout_ms = DEFAULT_TIMEOUT_MS};
    int rc = parse(argc, argv, &o, &st);
    if (rc < 0)
        rc = CLI_EXIT_OK; /* --help */
    else if (rc == 0 && (rc = pub_connect(&st, &o)) == 0)
        rc = pub_run(&st, &o);
    free(st.line_id);
    pb_client_close(st.c);
    cli_tags_free(&o.tags);
    return rc;
}
