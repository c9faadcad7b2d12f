/*
 * cat - `protobus cat`: reads stored events with no server (segment files,
 * partition and data directories, files of the original protobus-server),
 * merged by receive time, filtered, printed with render.h; or, with
 * --verify, checks every record and prints a summary. Damage is always
 * reported on stderr (file, byte position, offsets lost) and makes the exit
 * status 1: nothing is skipped silently.
 *
 * Threads: the main thread only. --follow polls every POLL_MS when every
 * source is at its end (one stat/readdir per partition per poll).
 */
#include "cli.h"

#include "catsrc.h"
#include "frame.h"
#include "patterns.h"
#include "render.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POLL_MS 150

static const char usage[] =
    "Usage: protobus cat [OPTIONS] PATH...\n"
    "\n"
    "Prints stored events, reading the files directly (no server needed; safe\n"
    "while protobusd runs). Each PATH is one of:\n"
    "  - a segment file (NNNNNNNNNNNNNNNNNNNN.log; the partition shown is the\n"
    "    name of its directory),\n"
    "  - a partition directory (holding .log files),\n"
    "  - a data directory (every subdirectory is a partition),\n"
    "  - a file written by the original protobus-server (u32 length + event\n"
    "    records, no header; offsets are record numbers from 0 and the\n"
    "    partition shown is the file name; *.pb files in a data directory too).\n"
    "Several partitions are merged by receive time (ties: by partition name).\n"
    "\n"
    "Options:\n"
    "      --from-offset N     start at offset N (in every partition)\n"
    "      --from-time TIME    start at the first event received at or after TIME\n"
    "      --to-time TIME      stop at the first event received after TIME\n"
    "                          TIME: RFC 3339 (2026-11-23T10:00:00Z,\n"
    "                          2026-11-23T12:00:00.5+02:00) or relative to now\n"
    "                          (-15m, -2h, -30s, -1d)\n"
    "      --topic REGEX       only topics that REGEX (PCRE2) matches as a whole\n"
    "  -t, --tag KEY=VALUE     only events with this tag value (repeatable: all\n"
    "                          must match)\n"
    "  -f, --format FORMAT     text (default), json (one object per line) or raw\n"
    "                          (payload bytes only)\n"
    "      --follow            keep reading as events are appended, across segment\n"
    "                          rotations and new partitions, until interrupted\n"
    "                          (SIGINT/SIGTERM) or past --to-time\n"
    "      --verify            print no events: check every record (CRC, length,\n"
    "                          offsets, event encoding), report each bad one and\n"
    "                          print a summary\n"
    "  -h, --help              show this help\n"
    "\n"
    "Damaged or missing records are reported on standard error with the file,\n"
    "byte position and offsets lost, and make the exit status 1 (the events\n"
    "around them are still printed). Offsets removed by retention (below a\n"
    "partition's first segment, or removed while reading) get a note on\n"
    "standard error and do not change the exit status. Exit status: 0 all read\n"
    "cleanly, 1 damage or an error, 2 usage error.\n";

enum {
    OPT_FROM_OFFSET = 256,
    OPT_FROM_TIME,
    OPT_TO_TIME,
    OPT_TOPIC,
    OPT_FOLLOW,
    OPT_VERIFY,
};

typedef struct cat_run {
    cat_filter filter;
    cat_set set;
    pattern_set *topics;
    cli_tags tags;
    pb_render_format fmt;
    pb_renderer out;
    bool verify;
    uint64_t records;  /* records read (within the range) */
    uint64_t problems; /* damage reports, event errors */
    uint64_t lost;     /* offsets reported lost */
} cat_run;

static void report_problem(cat_run *r, const struct pb_reader_problem *p)
{
    r->problems++;
    if (p->last_offset + 1 == p->first_offset) {
        cli_error("cat", "%s: byte %llu: %s (no offsets lost)", p->file,
                  (unsigned long long)p->position, p->reason);
        return;
    }
    uint64_t n = p->last_offset - p->first_offset + 1;
    r->lost += n;
    if (n == 1)
        cli_error("cat", "%s: byte %llu: %s (offset %llu lost)", p->file,
                  (unsigned long long)p->position, p->reason, (unsigned long long)p->first_offset);
    else
        cli_error("cat", "%s: byte %llu: %s (offsets %llu-%llu lost)", p->file,
                  (unsigned long long)p->position, p->reason, (unsigned long long)p->first_offset,
                  (unsigned long long)p->last_offset);
}

static void report_header(void *ctx, const char *file, const char *why)
{
    cat_run *r = ctx;
    r->problems++;
    cli_error("cat", "%s: byte 0: %s", file, why);
}

/* One record from the merge. false: output failed, stop. */
static bool handle_record(cat_run *r, const char *partition, const pb_record *rec)
{
    char err[256];
    event_view v;
    r->records++;
    if (r->verify || r->topics) {
        if (event_scan(rec->event, rec->event_len, &v, err, sizeof err) < 0) {
            r->problems++;
            cli_error("cat", "partition %s, offset %llu: not a valid EncapsulatedEvent: %s",
                      partition, (unsigned long long)rec->offset, err);
            return true;
        }
        if (r->verify)
            return true;
        if (!patterns_match(r->topics, (const char *)v.topic.p, v.topic.len))
            return true;
    }
    if (r->tags.n) {
        int m = pb_event_tags_match(rec->event, rec->event_len, r->tags.keys, r->tags.values,
                                    r->tags.n);
        if (m == 0)
            return true;
        if (m < 0) {
            r->problems++;
            cli_error("cat", "partition %s, offset %llu: not a valid EncapsulatedEvent (tags)",
                      partition, (unsigned long long)rec->offset);
            return true;
        }
    }
    int rc =
        pb_render(&r->out, partition, rec->offset, rec->event, rec->event_len, err, sizeof err);
    if (rc == 0)
        return true;
    if (rc == PB_EPROTO) {
        r->problems++;
        cli_error("cat", "%s", err);
        return true;
    }
    cli_error("cat", "writing to standard output: %s", err[0] ? err : pb_strerror(rc));
    return false;
}

/* Reads everything (and, with --follow, what comes). Returns the status. */
static int run(cat_run *r)
{
    int status = CLI_EXIT_OK;
    if (r->verify)
        for (size_t i = 0; i < r->set.n; i++)
            cat_source_check_headers(r->set.v[i], report_header, r);
    while (!cli_stop) {
        pb_merge_item it;
        int rc = pb_merge_next(r->set.merge, &it);
        if (rc == 0) {
            if (!handle_record(r, it.name, &it.rec))
                return CLI_EXIT_RUNTIME;
            continue;
        }
        if (rc == PB_ECORRUPT) {
            report_problem(r, cat_source_problem(it.ctx));
            continue;
        }
        if (rc == PB_EREMOVED) {
            /* Retention's doing, as configured: a note, not a problem. */
            const struct pb_reader_problem *p = cat_source_problem(it.ctx);
            cli_error("cat", "note: %s: offsets %llu-%llu were removed by retention",
                      ((const cat_source *)it.ctx)->path, (unsigned long long)p->first_offset,
                      (unsigned long long)p->last_offset);
            continue;
        }
        if (rc == PB_EEOF) {
            if (!r->filter.follow || (r->set.n > 0 && r->set.ndone == r->set.n))
                break;
            if (!cli_flush_stdout("cat"))
                return CLI_EXIT_RUNTIME;
            cli_sleep_ms(POLL_MS);
            if (r->set.ndata && cat_set_rescan(&r->set) < 0)
                status = CLI_EXIT_RUNTIME; /* reported; the others go on */
            continue;
        }
        /* An I/O error: that source is dropped, the others go on. */
        const cat_source *src = it.ctx;
        cli_error("cat", "%s: %s", src->path, pb_strerror(rc));
        status = CLI_EXIT_RUNTIME;
    }
    /* Segment files a data directory holds outside any partition directory
     * were reported when found; they count as problems. */
    r->problems += r->set.nunlisted;
    if (r->verify) {
        printf("verified %llu record(s) in %zu source(s): %llu problem(s), %llu offset(s) "
               "lost\n",
               (unsigned long long)r->records, r->set.n, (unsigned long long)r->problems,
               (unsigned long long)r->lost);
    }
    if (r->problems)
        status = CLI_EXIT_RUNTIME;
    return status;
}

/* Parses the command line into r. 0 to go on, -1 after --help, else the
 * exit status. */
static int parse(int argc, char **argv, cat_run *r)
{
    static const struct option longopts[] = {
        {"from-offset", required_argument, NULL, OPT_FROM_OFFSET},
        {"from-time", required_argument, NULL, OPT_FROM_TIME},
        {"to-time", required_argument, NULL, OPT_TO_TIME},
        {"topic", required_argument, NULL, OPT_TOPIC},
        {"tag", required_argument, NULL, 't'},
        {"format", required_argument, NULL, 'f'},
        {"follow", no_argument, NULL, OPT_FOLLOW},
        {"verify", no_argument, NULL, OPT_VERIFY},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static char prog[] = "protobus cat";
    const char *topic = NULL;
    int opt;
    argv[0] = prog;
    optind = 1;
    r->fmt = PB_RENDER_TEXT;
    cat_filter *f = &r->filter;
    while ((opt = getopt_long(argc, argv, "t:f:h", longopts, NULL)) != -1) {
        switch (opt) {
        case OPT_FROM_OFFSET:
            if (!cli_parse_u64(optarg, &f->from_offset))
                return cli_usage_error("cat", "--from-offset %s: expected an offset", optarg);
            f->has_from_offset = true;
            break;
        case OPT_FROM_TIME:
            if (!cli_parse_time("cat", "--from-time", optarg, &f->from_time_ns))
                return CLI_EXIT_USAGE;
            f->has_from_time = true;
            break;
        case OPT_TO_TIME:
            if (!cli_parse_time("cat", "--to-time", optarg, &f->to_time_ns))
                return CLI_EXIT_USAGE;
            f->has_to_time = true;
            break;
        case OPT_TOPIC:
            topic = optarg;
            break;
        case 't':
            if (cli_tags_add(&r->tags, optarg) < 0)
                return cli_usage_error("cat", "-t %s: expected KEY=VALUE with a non-empty KEY",
                                       optarg);
            break;
        case 'f':
            if (pb_render_format_parse(optarg, &r->fmt) < 0)
                return cli_usage_error("cat", "--format %s: expected text, json or raw", optarg);
            break;
        case OPT_FOLLOW:
            f->follow = true;
            break;
        case OPT_VERIFY:
            r->verify = true;
            break;
        case 'h':
            fputs(usage, stdout);
            return cli_flush_stdout("cat") ? -1 : CLI_EXIT_RUNTIME;
        default:
            return cli_try_help("cat");
        }
    }
    if (optind >= argc)
        return cli_usage_error("cat", "at least one PATH is required");
    if (r->verify && f->follow)
        return cli_usage_error("cat", "--verify and --follow cannot be combined");
    if (f->has_from_time && f->has_to_time && f->to_time_ns < f->from_time_ns)
        return cli_usage_error("cat", "--to-time is before --from-time");
    if (topic) {
        char err[300];
        const char *pats[1] = {topic};
        if (patterns_compile(pats, 1, &r->topics, err, sizeof err) < 0)
            return cli_usage_error("cat", "--topic: %s", err);
    }
    return 0;
}

int cmd_cat(int argc, char **argv)
{
    cat_run r;
    memset(&r, 0, sizeof r);
    int rc = cat_set_init(&r.set, &r.filter);
    if (rc < 0) {
        cli_error("cat", "out of memory");
        rc = CLI_EXIT_RUNTIME;
        goto out;
    }
    rc = parse(argc, argv, &r);
    if (rc != 0) {
        rc = rc < 0 ? CLI_EXIT_OK : rc;
        goto out;
    }
    for (int i = optind; i < argc; i++) {
        if (cat_set_add_path(&r.set, argv[i]) < 0) {
            rc = CLI_EXIT_RUNTIME; /* reported, naming the path */
            goto out;
        }
    }
    if (r.filter.follow)
        cli_catch_signals();
    cli_buffer_stdout();
    pb_renderer_init(&r.out, stdout, r.fmt);
    rc = run(&r);
    if (!cli_flush_stdout("cat"))
        rc = CLI_EXIT_RUNTIME;
out:
    patterns_free(r.topics);
    cli_tags_free(&r.tags);
    cat_set_free(&r.set);
    pb_renderer_free(&r.out);
    return rc;
}
