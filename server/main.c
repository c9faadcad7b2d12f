/*
 * protobusd - the Protobus daemon: command line, configuration, start-up and
 * shutdown order.
 *
 * Start, in the order data flows back from the disk: config -> live fan-out
 * (where the partition writers announce durable records) -> store (recovers
 * every partition found on disk; each writer announces into the fan-out) ->
 * subscription pool (reads the store, registers its live queues with the
 * fan-out) -> mirrors (read the store's files on threads of their own) ->
 * router -> listener. Stop (SIGTERM/SIGINT): stop accepting and reading,
 * let the writers finish what was received and the loop write its acks,
 * end the subscriptions, stop the mirrors (saving their cursors), close the
 * partitions (final sync, topic snapshots), free the fan-out, exit 0.
 *
 * Threads: main() and everything here run on the main thread, which is also
 * the libuv loop thread.
 */
#include "config.h"
#include "fdbudget.h"
#include "metrics_http.h"
#include "fanout.h"
#include "follower.h"
#include "hostport.h"
#include "logging.h"
#include "mirror.h"
#include "net.h"
#include "partition.h"
#include "recycle.h"
#include "pb_errors.h"
#include "reload.h"
#include "sdnotify.h"
#include "protobus_version.h"
#include "router.h"
#include "security.h"
#include "standby.h"
#include "store.h"
#include "sub.h"
#include "subrun.h"
#include "topics.h"

#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

/* What each partition keeps per topic for START_LAST_N (history depth). */
#define TOPIC_HISTORY 16
/* Publish charge (bytes plus per-event state, ingest_charge) queued to the
 * writers before the loop stops reading. 16 MiB is ~50 ms of the disk's
 * fdatasync'd bandwidth, enough to keep group commit fed; 64 MiB measured
 * the same throughput but took the daemon's RSS to ~90 MB with 1 KiB events
 * (tests/bench/run); 8 MiB cost publish 1 KiB ~10% (tests/bench/NOTES.md). */
#define MAX_INFLIGHT_BYTES (16u << 20)
/* And events: small events reach this first. 20,480 events is two and a
 * half takes (PARTITION_TAKE_EVENTS): the one syncing, the one being
 * written and the next; with 16 MiB alone, a starved writer's queue held
 * ~39k events of 100 B, and the fan-out's peak RSS grew with it (NOTES.md,
 * "RSS of the fan-out, third round"). 1 KiB events never reach it (16 MiB
 * is ~12k of them). */
#define MAX_INFLIGHT_EVENTS 20480u
/* How long a graceful stop waits for writers and acks before giving up. */
#define STOP_DEADLINE_MS 30000

static const char usage[] =
    "Usage: protobusd [-c FILE] [--listen HOST:PORT] [--data-dir DIR] [--port-file FILE]\n"
    "                 [--follow HOST:PORT]\n"
    "       protobusd --check -c FILE\n"
    "\n"
    "The Protobus daemon: receives events over TCP, stores them in partitioned\n"
    "segment files, acknowledges them once durable, and streams them to\n"
    "subscribers.\n"
    "\n"
    "Options:\n"
    "  -c, --config FILE      configuration file (default: built-in defaults:\n"
    "                         127.0.0.1:7420, ./data, fsync always, one catch-all\n"
    "                         partition \"events\")\n"
    "  -l, --listen HOST:PORT override [server] listen (port 0 = any free port)\n"
    "  -d, --data-dir DIR     override [server] data_dir\n"
    "      --port-file FILE   write the port actually listened on to FILE\n"
    "      --follow HOST:PORT run as the hot standby of the primary at HOST:PORT\n"
    "                         (override [server] follow): replicate every partition,\n"
    "                         refuse publishes; serve subscribers. Credentials and\n"
    "                         TLS: [server] follow_user, follow_password(_file),\n"
    "                         follow_tls, follow_ca (or PROTOBUSD_FOLLOW_USER and\n"
    "                         PROTOBUSD_FOLLOW_PASSWORD in the environment)\n"
    "      --check            load and validate the configuration, then exit\n"
    "  -h, --help             show this help\n"
    "  -V, --version          show the version\n"
    "\n"
    "Signals: SIGTERM or SIGINT stop it gracefully (everything received is made\n"
    "durable and acknowledged first). SIGHUP reloads the configuration file,\n"
    "validated as --check does (a bad one is refused and logged, the running one\n"
    "stays): partition rules, limits and [user] sections take effect at once;\n"
    "other settings at the next restart (logged). Logs go to standard error.\n"
    "With [server] metrics_listen = HOST:PORT it serves GET /metrics (Prometheus\n"
    "text format) and GET /healthz (200, or 503 naming each partition that\n"
    "accepts no writes) on a thread of its own.\n";

static const char builtin_config[] = "[server]\n"
                                     "listen = 127.0.0.1:7420\n"
                                     "data_dir = ./data\n"
                                     "[partition events]\n"
                                     "match = .*\n";

typedef struct daemon_state {
    pb_config cfg;
    topics_budget topics; /* max_topics_in_memory, shared by every partition */
    uv_loop_t loop;
    fanout *live;
    store *store;
    sub_registry *subs;
    mirror_set *mirrors;
    follower *follower; /* --follow: the replication thread; NULL: a primary */
    standby *standby;   /* min_standby_acks = 1: the standby's positions; NULL: async */
    _Atomic(mirror_set *) mirrors_ready; /* mirrors, once started (writers read it) */
    uv_timer_t retain_timer;             /* age retention, every RETAIN_TICK_MS */
    router *router;
    net *net;
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t watchdog; /* systemd's WatchdogSec (sdnotify.h) */
    int watchdog_on;
    security sec;                                /* auth = required: accounts and authenticator */
    metrics_http *metrics;                       /* metrics_listen; NULL when off */
    const char *config_path;                     /* -c FILE, for SIGHUP; NULL: built-in defaults */
    bool listen_overridden, data_dir_overridden; /* --listen, --data-dir (kept on SIGHUP) */
    bool follow_overridden;                      /* --follow (kept on SIGHUP) */
    uv_timer_t stop_timer;
    uint64_t stop_started_ms;
    int stopping;
} daemon_state;

/* --- partition options from the rules ------------------------------- */

/* Does `name` fit the rule's name template? Literal characters must be
 * equal; each $N stands for one or more name characters. Used to give a
 * partition found on disk the settings of the rule that made it. */
static int template_fits(const char *tpl, const char *name)
{
    if (*tpl == '\0')
        return *name == '\0';
    if (tpl[0] == '$' && tpl[1] >= '0' && tpl[1] <= '9') {
        for (const char *p = name + 1; p <= name + strlen(name); p++)
            if (template_fits(tpl + 2, p))
                return 1;
        return 0;
    }
    return *tpl == *name && template_fits(tpl + 1, name + 1);
}

/* Writer threads: the lowest offset a mirror still needs. Until the
 * mirrors run (they start after the store is open), a configured mirror
 * holds everything: retention tries again later. */
static uint64_t retain_floor(void *ctx, const char *name)
{
    daemon_state *d = ctx;
    if (d->cfg.n_mirrors == 0)
        return UINT64_MAX;
    mirror_set *ms = atomic_load(&d->mirrors_ready);
    return ms ? mirror_set_lowest_needed(ms, name) : 0;
}

static int partition_options_for(void *ctx, const char *name, partition_options *o)
{
    daemon_state *d = ctx;
    const pb_rule *rule = NULL;
    for (size_t i = 0; i < d->cfg.n_rules && !rule; i++)
        if (template_fits(d->cfg.rules[i].partition, name))
            rule = &d->cfg.rules[i];
    memset(o, 0, sizeof *o);
    o->log.segment_bytes = 64u << 20;
    o->log.index_interval_bytes = 4096;
    o->log.cache_bytes = d->cfg.page_cache_bytes;
    if (rule) {
        o->log.segment_bytes = rule->segment_bytes;
        o->log.rotate_every_s = rule->rotate_every_s;
        o->log.utc_offset_s = rule->utc_offset_s;
        o->retain =
            (retention_policy){.age_s = rule->retain_age_s,
                               .bytes = rule->retain_bytes,
                               .compress_level = rule->compress > 0 ? rule->compress_level : 0};
    } else {
        logging_printf(LOG_WARN,
                       "partition %s matches no rule's name in %s; using default segment "
                       "settings (64 MiB, no time rotation)",
                       name, d->cfg.path);
    }
    o->fsync = d->cfg.fsync == PB_FSYNC_ALWAYS     ? PARTITION_FSYNC_ALWAYS
               : d->cfg.fsync == PB_FSYNC_INTERVAL ? PARTITION_FSYNC_INTERVAL
                                                   : PARTITION_FSYNC_NEVER;
    o->fsync_interval_ms = d->cfg.fsync_interval_ms;
    /* Direct writes only where the writer waits for the device anyway (the
     * fdatasync of every take): with interval or never, a buffered write
     * returns at once and the kernel writes it out later. */
    o->log.direct_min_bytes = o->fsync == PARTITION_FSYNC_ALWAYS ? d->cfg.direct_write_bytes : 0;
    /* Spares are made on the unlinker thread only (partition.c). */
    o->log.recycle_spares = d->cfg.recycle_segments ? RECYCLE_MAX_SPARES : 0;
    o->topic_history = TOPIC_HISTORY;
    o->idle_ms = d->cfg.partition_idle_ms;
    o->dedup_window_ms = d->cfg.dedup_window_ms;
    o->dedup_max_entries = d->cfg.dedup_max_entries;
    o->topics_budget = &d->topics;
    o->retain_floor = retain_floor;
    o->min_free_bytes = d->cfg.min_free_bytes; /* UINT64_MAX: FREESPACE_AUTO */
    o->retain_floor_ctx = d;
    /* Its writer announces durable records into the live fan-out, with a
     * state of its own there. */
    fanout_writer *w;
    int rc = fanout_writer_get(d->live, name, &w);
    if (rc < 0)
        return rc;
    o->durable = fanout_durable;
    o->acked = fanout_acked;
    o->durable_ctx = w;
    return 0;
}

/* --- age retention ---------------------------------------------------- */

/* How often the loop looks for partitions whose oldest segment has aged
 * out, that are short of free space or that a full disk stopped (a few
 * atomic loads per partition; only a due partition gets its writer woken,
 * which does the work). */
#define RETAIN_TICK_MS 1000

static bool any_upkeep(const pb_config *cfg)
{
    if (cfg->min_free_bytes)
        return true; /* a full disk heals by this timer */
    for (size_t i = 0; i < cfg->n_rules; i++)
        if (cfg->rules[i].retain_age_s > 0 || cfg->rules[i].retain_bytes > 0)
            return true;
    return false;
}

static void retain_tick(uv_timer_t *t)
{
    daemon_state *d = t->data;
    partition **ps;
    size_t n;
    if (store_list(d->store, &ps, &n) < 0)
        return; /* no memory now: the next tick tries again */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
    for (size_t i = 0; i < n; i++)
        partition_upkeep_tick(ps[i], now);
    free(ps);
}

/* --- graceful stop ---------------------------------------------------- */

static void close_signals(daemon_state *d)
{
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->sigint, NULL);
    uv_close((uv_handle_t *)&d->sighup, NULL);
}

static void stop_poll(uv_timer_t *t)
{
    daemon_state *d = t->data;
    int late = uv_now(&d->loop) - d->stop_started_ms > STOP_DEADLINE_MS;
    if (net_inflight(d->net) > 0 && !late)
        return;
    if (late)
        logging_printf(LOG_ERROR,
                       "stop: %zu batches or replies still pending after %d ms; "
                       "closing anyway (they are not acknowledged)",
                       net_inflight(d->net), STOP_DEADLINE_MS);
    uv_timer_stop(t);
    uv_close((uv_handle_t *)&d->stop_timer, NULL);
    if (d->retain_timer.data) {
        uv_timer_stop(&d->retain_timer);
        uv_close((uv_handle_t *)&d->retain_timer, NULL);
    }
    close_signals(d);
    if (d->watchdog_on)
        uv_close((uv_handle_t *)&d->watchdog, NULL);
    uv_stop(&d->loop);
}

static void on_signal(uv_signal_t *s, int signum)
{
    daemon_state *d = s->data;
    if (d->stopping) {
        logging_printf(LOG_WARN, "%s again: still finishing; waiting", strsignal(signum));
        return;
    }
    d->stopping = 1;
    sdnotify_stopping();
    logging_printf(LOG_INFO,
                   "%s: stopping: no new connections or frames; finishing what was "
                   "received",
                   strsignal(signum));
    net_stop_accepting(d->net);
    d->stop_started_ms = uv_now(&d->loop);
    uv_timer_init(&d->loop, &d->stop_timer);
    d->stop_timer.data = d;
    uv_timer_start(&d->stop_timer, stop_poll, 0, 5);
}

static void on_sighup(uv_signal_t *s, int signum)
{
    daemon_state *d = s->data;
    (void)signum;
    if (d->stopping)
        return;
    reload_target t = {
        .cfg = &d->cfg,
        .path = d->config_path,
        .listen_overridden = d->listen_overridden,
        .follow_overridden = d->follow_overridden,
        .data_dir_overridden = d->data_dir_overridden,
        .net = d->net,
        .router = &d->router,
        .store = d->store,
        .sec = &d->sec,
        .subs = d->subs,
    };
    sdnotify_reloading();
    (void)reload_config(&t);
    sdnotify_ready("serving (configuration reloaded or kept)");
}

/* --- main --------------------------------------------------------------- */

static int write_port_file(const char *path, uint16_t port)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    int ok = fprintf(f, "%u\n", port) > 0;
    ok = (fclose(f) == 0) && ok;
    return ok && rename(tmp, path) == 0 ? 0 : -1;
}

/* --listen: the same rules as the configuration's `listen`. 0, or the exit
 * status after reporting the problem. */
static int set_listen(pb_config *cfg, const char *listen)
{
    hostport hp;
    char err[512];
    if (hostport_parse(listen, HOSTPORT_NUMERIC | HOSTPORT_PORT_ZERO, &hp, err, sizeof err) < 0) {
        fprintf(stderr, "protobusd: --listen %s\n", err);
        return 2;
    }
    char *host = strdup(hp.host);
    if (!host) {
        fprintf(stderr, "protobusd: out of memory\n");
        return 1;
    }
    free(cfg->listen_host);
    cfg->listen_host = host;
    cfg->listen_port = hp.port;
    cfg->listen_ipv6 = hp.bracketed;
    return 0;
}

/* The command line. */
typedef struct args {
    const char *config_path, *listen, *data_dir, *port_file, *follow;
    int check_only;
} args;

/* Parses argv into *a. Returns -1 to go on, or the exit status (--help,
 * --version, a usage error). */
static int parse_args(int argc, char **argv, args *a)
{
    static const struct option long_opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"listen", required_argument, NULL, 'l'},
        {"data-dir", required_argument, NULL, 'd'},
        {"port-file", required_argument, NULL, 'p'},
        {"check", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"follow", required_argument, NULL, 'f'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "c:l:d:hV", long_opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            a->config_path = optarg;
            break;
        case 'l':
            a->listen = optarg;
            break;
        case 'd':
            a->data_dir = optarg;
            break;
        case 'p':
            a->port_file = optarg;
            break;
        case 'f':
            a->follow = optarg;
            break;
        case 'k':
            a->check_only = 1;
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        case 'V':
            printf("protobusd %s\n", PB_VERSION_STRING);
            return 0;
        default:
            fputs(usage, stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "protobusd: unexpected argument \"%s\"\n%s", argv[optind], usage);
        return 2;
    }
    return -1;
}

/* Loads the configuration (the file, or the built-in defaults) and applies
 * the command line's overrides. Returns -1 to go on, or the exit status
 * (with the message printed and nothing left to free). */
static int load_config(const args *a, pb_config *cfg)
{
    char err[1024];
    int rc = a->config_path
                 ? config_load(a->config_path, cfg, err, sizeof err)
                 : config_load_string("(built-in defaults)", builtin_config, cfg, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "protobusd: bad configuration: %s\n", err);
        return 1;
    }
    if (a->listen && (rc = set_listen(cfg, a->listen)) != 0) {
        config_free(cfg);
        return rc;
    }
    if (a->data_dir) {
        char *dd = strdup(a->data_dir);
        if (!dd) {
            config_free(cfg);
            return 1;
        }
        free(cfg->data_dir);
        cfg->data_dir = dd;
    }
    if (a->follow) {
        char *fo = strdup(a->follow);
        if (!fo) {
            config_free(cfg);
            return 1;
        }
        free(cfg->follow);
        cfg->follow = fo;
    }
    /* After the overrides: --listen 0.0.0.0:7420 counts too. */
    if (config_check_exposure(cfg, err, sizeof err) < 0) {
        fprintf(stderr, "protobusd: %s: %s\n", cfg->path, err);
        config_free(cfg);
        return 1;
    }
    return -1;
}

/* Closes what open_daemon opened, in the reverse order: subscriptions read
 * the partitions, so they end first; then the partitions close (their
 * writers announce into the fan-out until then); then the fan-out goes.
 * Returns store_close's result. */
static int close_daemon(daemon_state *d)
{
    router_free(d->router);
    follower_stop(d->follower); /* it writes into the partitions */
    d->follower = NULL;
    sub_registry_destroy(d->subs);
    atomic_store(&d->mirrors_ready, NULL);
    mirror_set_destroy(d->mirrors);
    int rc = store_close(d->store);
    if (rc < 0)
        logging_printf(LOG_ERROR, "closing the partitions: %s", pb_strerror(rc));
    fanout_destroy(d->live);
    standby_destroy(d->standby);
    d->standby = NULL;
    return rc;
}

/* --follow / [server] follow: the replication thread. */
static int start_follower(daemon_state *d, char *err, size_t errlen)
{
    follower_options fo = {
        .primary = d->cfg.follow,
        /* The settings; the environment for what they leave unset. */
        .user = d->cfg.follow_user ? d->cfg.follow_user : getenv("PROTOBUSD_FOLLOW_USER"),
        .password = d->cfg.follow_password || d->cfg.follow_password_file
                        ? d->cfg.follow_password
                        : getenv("PROTOBUSD_FOLLOW_PASSWORD"),
        .password_file = d->cfg.follow_password_file,
        .tls = d->cfg.follow_tls,
        .tls_ca = d->cfg.follow_ca,
        .tls_cert = d->cfg.follow_tls_cert,
        .tls_key = d->cfg.follow_tls_key,
        .store = d->store,
        .max_frame_bytes = d->cfg.max_frame_bytes,
    };
    int rc = follower_start(&d->follower, &fo, err, errlen);
    if (rc == 0)
        logging_printf(LOG_INFO,
                       "standby of %s: publishes are refused; promote by restarting "
                       "without --follow",
                       d->cfg.follow);
    return rc;
}

/* The Subscribe caps of the configuration (sub.h, announced by net.h). */
static sub_caps sub_caps_of(const pb_config *cfg)
{
    return (sub_caps){
        .max_patterns = cfg->max_subscribe_patterns,
        .max_pattern_bytes = cfg->max_pattern_bytes,
        .max_tags = cfg->max_subscribe_tags,
        .max_offsets = cfg->max_subscribe_offsets,
    };
}

/* Opens what data flows through, in the order it flows back from the disk:
 * the live fan-out, the store (recovering every partition; each writer
 * announces into the fan-out), the subscription pool (reads the store,
 * registers with the fan-out), the router. On failure closes what it
 * opened and returns a negative code. */
static int open_daemon(daemon_state *d)
{
    char err[1024];
    topics_budget_init(&d->topics, d->cfg.max_topics_in_memory);
    fanout_options fo = {
        .slots = d->cfg.threads,
        .queue_total_bytes = d->cfg.subscriber_queue_total_bytes,
    };
    int rc = standby_create(&d->standby, d->cfg.min_standby_acks, d->cfg.standby_timeout_ms,
                            d->cfg.standby_timeout_local ? STANDBY_LOCAL : STANDBY_REFUSE);
    if (rc < 0)
        return rc;
    rc = fanout_create(&d->live, &fo);
    if (rc < 0) {
        logging_printf(LOG_ERROR, "cannot create the live fan-out: %s", pb_strerror(rc));
        return rc;
    }
    rc = store_open(&d->store, d->cfg.data_dir, partition_options_for, d);
    if (rc < 0) {
        logging_printf(LOG_ERROR, "cannot open data directory %s: %s", d->cfg.data_dir,
                       pb_strerror(rc));
        fanout_destroy(d->live);
        standby_destroy(d->standby);
        d->standby = NULL;
        return rc;
    }
    store_set_max_partitions(d->store, d->cfg.max_partitions);
    if (store_count(d->store) >= d->cfg.max_partitions)
        logging_printf(LOG_WARN,
                       "data directory %s holds %zu partitions, max_partitions = %u: all are "
                       "served, no new one is created",
                       d->cfg.data_dir, store_count(d->store), d->cfg.max_partitions);
    sub_options so = {
        .store = d->store,
        .live = d->live,
        .threads = d->cfg.threads,
        .queue_bytes = d->cfg.subscriber_queue_bytes,
        .write_deadline_ms = d->cfg.write_deadline_ms,
        .topic_history = TOPIC_HISTORY,
        .max_frame_bytes = d->cfg.max_frame_bytes,
        .standby = d->standby,
        .caps = sub_caps_of(&d->cfg),
        .max_per_address = d->cfg.max_subscriptions_per_address,
    };
    rc = sub_registry_create(&d->subs, &so);
    if (rc < 0)
        logging_printf(LOG_ERROR, "cannot start the subscription pool: %s", pb_strerror(rc));
    else if ((rc = mirror_set_create(&d->mirrors, &d->cfg, d->store)) < 0 ||
             (rc = mirror_set_start(d->mirrors)) < 0 ||
             (atomic_store(&d->mirrors_ready, d->mirrors), 0))
        logging_printf(LOG_ERROR, "cannot start the mirrors: %s", pb_strerror(rc));
    else if ((rc = router_create(&d->cfg, &d->router, err, sizeof err)) < 0)
        logging_printf(LOG_ERROR, "%s", err);
    else if (d->cfg.follow && (rc = start_follower(d, err, sizeof err)) < 0)
        logging_printf(LOG_ERROR, "%s", err);
    if (rc < 0) {
        d->router = NULL;
        (void)close_daemon(d);
    }
    return rc;
}

/* metrics_listen: serves /metrics and /healthz on a thread of its own.
 * 0 (also when it is off), or -1 (logged). */
static int start_metrics(daemon_state *d)
{
    char err[512], where[HOSTPORT_HOST_MAX + 16];
    if (!d->cfg.metrics_host)
        return 0;
    if (metrics_http_start(&d->metrics, d->cfg.metrics_host, d->cfg.metrics_port, d->store,
                           d->mirrors, err, sizeof err) < 0) {
        logging_printf(LOG_ERROR, "%s (%s)", err, d->cfg.path);
        return -1;
    }
    hostport_format(where, sizeof where, d->cfg.metrics_host, metrics_http_port(d->metrics));
    logging_printf(LOG_INFO, "metrics on http://%s/metrics and /healthz", where);
    return 0;
}

/* Listens, runs the loop until a graceful stop has finished, closes the
 * connections. 0, or -1 if it could not start listening. */
static int serve(daemon_state *d, const char *port_file)
{
    char err[1024];
    net_options no = {
        .host = d->cfg.listen_host,
        .port = d->cfg.listen_port,
        .max_frame_bytes = d->cfg.max_frame_bytes,
        .max_event_bytes = d->cfg.max_event_bytes,
        .max_batch_events = d->cfg.max_batch_events,
        .sub_caps = sub_caps_of(&d->cfg),
        .dedup_window_ms = d->cfg.dedup_window_ms,
        .max_connections = d->cfg.max_connections,
        .idle_timeout_ms = d->cfg.idle_timeout_ms,
        .quiet_timeout_ms = d->cfg.quiet_timeout_ms,
        .handshake_timeout_ms = d->cfg.handshake_timeout_ms,
        .max_handshaking = d->cfg.max_handshaking,
        .max_inflight_bytes = MAX_INFLIGHT_BYTES,
        .max_inflight_events = MAX_INFLIGHT_EVENTS,
        .reply_queue_total_bytes = d->cfg.reply_queue_total_bytes,
        .max_partial_frame_bytes = d->cfg.max_partial_frame_bytes,
        .router = d->router,
        .store = d->store,
        .subs = d->subs,
        .auth = d->sec.auth,
        .tls = d->sec.tls,
        .follow = d->cfg.follow,
        .standby = d->standby,
    };
    /* Signals first: from the moment the port exists (and the port file
     * or READY=1 says so), SIGTERM is a graceful stop, never the default
     * action's kill (a supervisor stopping a daemon it just saw start got
     * one). They are only dispatched by uv_run, when d->net exists. */
    uv_signal_init(&d->loop, &d->sigterm);
    uv_signal_init(&d->loop, &d->sigint);
    uv_signal_init(&d->loop, &d->sighup);
    d->sigterm.data = d->sigint.data = d->sighup.data = d;
    uv_signal_start(&d->sigterm, on_signal, SIGTERM);
    uv_signal_start(&d->sigint, on_signal, SIGINT);
    uv_signal_start(&d->sighup, on_sighup, SIGHUP);
    if (net_start(&d->net, &d->loop, &no, err, sizeof err) < 0) {
        logging_printf(LOG_ERROR, "%s", err);
        close_signals(d);
        return -1;
    }
    char where[HOSTPORT_HOST_MAX + 16];
    hostport_format(where, sizeof where, d->cfg.listen_host, net_port(d->net));
    logging_printf(LOG_INFO, "listening on %s", where);
    if (port_file && write_port_file(port_file, net_port(d->net)) < 0) {
        logging_printf(LOG_ERROR, "cannot write the port file %s", port_file);
        net_close(d->net);
        close_signals(d);
        return -1;
    }
    if (any_upkeep(&d->cfg)) {
        uv_timer_init(&d->loop, &d->retain_timer);
        d->retain_timer.data = d;
        uv_timer_start(&d->retain_timer, retain_tick, RETAIN_TICK_MS, RETAIN_TICK_MS);
    }
    /* Recovered (open_daemon) and listening: ready for systemd. */
    char status[HOSTPORT_HOST_MAX + 64];
    snprintf(status, sizeof status, "serving on %s, %zu partition(s)", where,
             store_count(d->store));
    sdnotify_ready(status);
    d->watchdog_on = sdnotify_watchdog_start(&d->loop, &d->watchdog);

    uv_run(&d->loop, UV_RUN_DEFAULT);

    /* Every batch received is stored and acked (or the deadline passed). */
    net_close(d->net);
    return 0;
}

int main(int argc, char **argv)
{
    args a = {0};
    /* A fixed mmap threshold: glibc otherwise raises it each time a large
     * mmapped block is freed (Hyperscan's compiler frees many), and then
     * every large calloc (a subscription's pattern cache, 256 KiB, mostly
     * never touched) comes from the heap and is zeroed page by page:
     * 1,000 subscriptions cost 130 MiB more RSS. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    /* And a trim threshold above the default 128 KiB: a live queue's
     * blocks (livequeue.c, 64 KiB) are malloced by a partition writer and
     * freed by a subscription thread moments later; at the default, each
     * free of the arena's top block gave its pages back to the kernel and
     * the writer's next push faulted them in again, zeroed: 45,000 page
     * faults and ~100 ms of CPU per 1M events on a primary in synchronous
     * standby mode (5,600 at 4 MiB, 5,300-6,200 at 8 MiB, 31,600 at 1 MiB).
     * The threshold holds per arena (up to 8 per core), so it is the
     * lowest that keeps the gain: free memory an arena keeps is reused,
     * but each may keep this much after its peak. */
    mallopt(M_TRIM_THRESHOLD, 4 * 1024 * 1024);
    int status = parse_args(argc, argv, &a);
    if (status >= 0)
        return status;
    static daemon_state d;
    if ((status = load_config(&a, &d.cfg)) >= 0)
        return status;
    if (a.check_only) {
        printf("%s: OK (%zu partition rule%s)\n", d.cfg.path, d.cfg.n_rules,
               d.cfg.n_rules == 1 ? "" : "s");
        config_free(&d.cfg);
        return 0;
    }
    logging_set_level((int)d.cfg.log_level);
    logging_detect_journal();
    signal(SIGPIPE, SIG_IGN);
    /* data_mode for every file the daemon creates, directories with x
     * wherever r is set (0600: files 0600, directories 0700), so offline
     * readers (`protobus cat`) are governed by file permissions. */
    umask(0777 & ~(d.cfg.data_mode | ((d.cfg.data_mode & 0444) >> 2)));
    d.config_path = a.config_path;
    d.listen_overridden = a.listen != NULL;
    d.follow_overridden = a.follow != NULL;
    d.data_dir_overridden = a.data_dir != NULL;
    fdbudget_size(&d.cfg);

    status = 1;
    uv_loop_init(&d.loop);
    logging_printf(LOG_INFO, "protobusd %s starting: config %s, data directory %s, fsync %s",
                   PB_VERSION_STRING, d.cfg.path, d.cfg.data_dir, config_fsync_name(d.cfg.fsync));
    if (security_start(&d.sec, &d.loop, &d.cfg) == 0 && open_daemon(&d) == 0) {
        if (start_metrics(&d) == 0 && serve(&d, a.port_file) == 0)
            status = 0;
        metrics_http_stop(d.metrics);
        if (close_daemon(&d) < 0)
            status = 1;
    }
    security_stop(&d.sec);
    uv_run(&d.loop, UV_RUN_NOWAIT);
    if (uv_loop_close(&d.loop) != 0)
        logging_printf(LOG_WARN, "event loop closed with handles still open");
    if (status == 0)
        logging_printf(LOG_INFO, "stopped cleanly");
    config_free(&d.cfg);
    return status;
}
