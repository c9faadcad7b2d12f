/*
 * bench - `protobus bench`: drives protobusd through libprotobus and prints
 * events/s, MB/s and latency percentiles (modes pub, sub, replay, latency,
 * seek), plus a loopback TCP baseline (mode tcp) that needs no server.
 *
 * The client side is kept off the critical path: events are encoded by the
 * library into its batch buffer (no allocation per event), topics and the
 * payload are built once, positions are not collected (no_positions), and
 * timestamps are taken once per batch except in latency mode, where every
 * event carries its send time in client_event_time.
 *
 * Threads: the main thread parses options, starts one thread per publisher
 * and per subscriber (each owns its own pb_client and connection), joins
 * them and prints the figures. Threads share only read-only setup data and
 * a few atomics (ready flags, the stop flag).
 */
#include "bench.h"
#include "cli.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CMD              "bench"
#define SUB_WAIT_MS      200   /* a subscriber re-checks the stop flag this often */
#define READY_TIMEOUT_MS 30000 /* subscriptions must be live within this */
#define TCP_CHUNK        (256u * 1024u)
#define THREAD_STACK     (256u * 1024u)
#define MAX_THREADS      4096u

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
    "  tcp      loopback TCP bandwidth baseline (no server needed): --bytes\n"
    "\n"
    "Options:\n"
    "  -s, --server HOST:PORT  server (default $PROTOBUS_SERVER, else " CLI_DEFAULT_SERVER ")\n"
    "  -n, --count N           events in total (default 1000000)\n"
    "      --size BYTES        payload bytes per event (default 100, at least 8)\n"
    "  -b, --batch N           events per batch (default 1000)\n"
    "      --batch-bytes N     bytes per batch (default: the library's, 1 MiB)\n"
    "      --in-flight N       unacknowledged batches per publisher (default 64)\n"
    "  -p, --pubs N            publishers, one thread and connection each (default 1)\n"
    "      --subs N            subscribers (sub mode; default 1)\n"
    "      --topics N          distinct topics PREFIX.<i>, round robin (default 1)\n"
    "      --prefix PREFIX     topic prefix (default bench<pid>)\n"
    "      --distinct          sub mode: subscriber j of N (N a power of 10) gets\n"
    "                          its own pattern, matching topics whose index ends\n"
    "                          in j; each event then reaches one subscriber\n"
    "  -P, --pattern REGEX     subscription pattern (default PREFIX\\..*; replay: .*)\n"
    "      --rate N            latency mode: events per second (default 10000)\n"
    "      --partition NAME    seek mode: partition (default events)\n"
    "      --offset N          seek mode: start offset\n"
    "      --time TIME         seek mode: start time (RFC 3339 or relative)\n"
    "      --bytes N           tcp mode: bytes to transfer (default 4 GiB)\n"
    "      --timeout MS        give up after MS milliseconds (default 120000)\n"
    "  -h, --help              show this help\n"
    "\n"
    "Output: readable lines, then one line 'RESULT key=value ...' for scripts.\n"
    "Latencies are in microseconds. MB/s counts payload bytes (10^6 bytes).\n"
    "Exit status: 0 done, 1 runtime error or timeout, 2 usage error.\n";

typedef struct bench_cfg {
    const char *server;
    const char *mode;
    uint64_t count;
    size_t size;
    uint32_t batch;
    size_t batch_bytes;
    uint32_t in_flight;
    uint32_t pubs, subs, topics;
    bool distinct;
    const char *pattern;
    char prefix[64];
    uint64_t rate;
    const char *partition;
    bool has_offset, has_time;
    uint64_t offset;
    int64_t time_ns;
    uint64_t tcp_bytes;
    int timeout_ms;
    /* built once */
    char **topic_names;
    uint8_t *payload;
} bench_cfg;

/* Latency samples in ns; preallocated, never grown on the hot path. */
typedef struct samples {
    int64_t *v;
    size_t n, cap;
} samples;

static atomic_bool stop_all;

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static bool samples_init(samples *s, size_t cap)
{
    s->n = 0;
    s->cap = cap ? cap : 1;
    s->v = malloc(s->cap * sizeof *s->v);
    return s->v != NULL;
}

static void samples_add(samples *s, int64_t ns)
{
    if (s->n < s->cap)
        s->v[s->n++] = ns;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile over a sorted array, in microseconds. */
static double pct_us(const samples *s, double p)
{
    if (!s->n)
        return 0;
    size_t rank = (size_t)(p / 100.0 * (double)s->n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > s->n)
        rank = s->n;
    return (double)s->v[rank - 1] / 1000.0;
}

/* Merges src into dst (dst has room: both sized by the caller) and sorts. */
static void samples_merge(samples *dst, const samples *src)
{
    for (size_t i = 0; i < src->n; i++)
        samples_add(dst, src->v[i]);
}

static void print_lat(const char *name, samples *s, char *res, size_t reslen)
{
    qsort(s->v, s->n, sizeof *s->v, cmp_i64);
    double p50 = pct_us(s, 50), p99 = pct_us(s, 99), p999 = pct_us(s, 99.9);
    double mx = s->n ? (double)s->v[s->n - 1] / 1000.0 : 0;
    printf("%-9s latency (us, %zu samples): p50 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n", name, s->n,
           p50, p99, p999, mx);
    size_t len = strlen(res);
    snprintf(res + len, reslen - len,
             " %s_p50_us=%.1f %s_p99_us=%.1f %s_p999_us=%.1f %s_max_us=%.1f", name, p50, name, p99,
             name, p999, name, mx);
}

static double cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static int start_thread(pthread_t *t, void *(*fn)(void *), void *arg)
{
    pthread_attr_t attr;
    int rc = pthread_attr_init(&attr);
    if (rc != 0)
        return -rc;
    /* Many subscriber threads (1,000 in the standard run) stay cheap. */
    rc = pthread_attr_setstacksize(&attr, THREAD_STACK);
    if (rc == 0)
        rc = pthread_create(t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    return -rc;
}

/* --- publishers ----------------------------------------------------------- */

typedef struct pub_thread {
    const bench_cfg *cfg;
    pthread_t tid;
    uint64_t first, n; /* global sequence numbers [first, first + n) */
    bool latency;      /* one event per batch, paced, every event timed */
    int64_t *sent_ns;  /* send time by publish sequence number & mask */
    uint64_t mask;
    samples ack;
    int64_t t_start, t_end; /* monotonic */
    int rc;
    char err[512];
} pub_thread;

static void on_ack(void *ctx, const pb_batch_result *r)
{
    pub_thread *p = ctx;
    if (r->status != 0) {
        if (p->rc == 0) {
            p->rc = r->status;
            snprintf(p->err, sizeof p->err, "batch of %zu events refused: %s", r->count,
                     r->message);
        }
        return;
    }
    int64_t sent = p->sent_ns[r->first_event & p->mask];
    if (sent)
        samples_add(&p->ack, pb_time_now_ns() - sent);
}

static int pub_connect(pub_thread *p, pb_client **out)
{
    const bench_cfg *cfg = p->cfg;
    pb_client_options o;
    pb_client_options_init(&o);
    o.batch_events = p->latency ? 1 : cfg->batch;
    if (cfg->batch_bytes)
        o.batch_bytes = cfg->batch_bytes;
    o.max_in_flight = cfg->in_flight;
    o.no_positions = true;
    o.on_ack = on_ack;
    o.on_ack_ctx = p;
    o.name = "protobus bench " PB_VERSION_STRING;
    return pb_client_connect(out, cfg->server, &o, p->err, sizeof p->err);
}

/* Waits (pacing) until `due` on the monotonic clock, reading acks as they
 * arrive so that their latency is measured when they come, not when the
 * next event is due. */
static int pace_until(pb_client *c, int64_t due)
{
    for (;;) {
        int64_t left = due - mono_ns();
        if (left <= 0)
            return 0;
        int rc = pb_client_flush(c, 0, NULL, NULL);
        if (rc < 0 && rc != PB_ETIMEDOUT)
            return rc;
        left = due - mono_ns();
        if (left > 50000)
            left = 50000; /* 50 us: the resolution of ack times */
        if (left > 0) {
            struct timespec ts = {0, left};
            nanosleep(&ts, NULL);
        }
    }
}

static void *pub_main(void *arg)
{
    pub_thread *p = arg;
    const bench_cfg *cfg = p->cfg;
    pb_client *c = NULL;
    p->rc = pub_connect(p, &c);
    if (p->rc < 0)
        return NULL;
    pb_event ev = {.payload = cfg->payload, .payload_len = cfg->size};
    uint32_t batch = p->latency ? 1 : cfg->batch;
    int64_t period = p->latency ? 1000000000 / (int64_t)cfg->rate : 0;
    p->t_start = mono_ns();
    int64_t due = p->t_start;
    for (uint64_t i = 0; i < p->n && p->rc == 0; i++) {
        uint64_t seq = p->first + i;
        ev.topic = cfg->topic_names[seq % cfg->topics];
        if (p->latency) {
            due += period;
            int rc = pace_until(c, due);
            if (rc < 0) {
                p->rc = rc;
                break;
            }
            ev.client_event_time_ns = pb_time_now_ns();
            p->sent_ns[i & p->mask] = ev.client_event_time_ns;
        } else if (i % batch == 0) {
            /* The library's own sequence number is i: batches start at
             * multiples of `batch` unless batch_bytes cut them earlier
             * (those batches are then not timed). */
            p->sent_ns[i & p->mask] = pb_time_now_ns();
        }
        int rc = pb_client_publish(c, &ev);
        if (rc < 0) {
            p->rc = rc;
            break;
        }
        if (atomic_load_explicit(&stop_all, memory_order_relaxed)) {
            p->rc = PB_ETIMEDOUT;
            break;
        }
    }
    if (p->rc == 0) {
        int rc = pb_client_flush(c, cfg->timeout_ms, NULL, NULL);
        if (rc < 0)
            p->rc = rc;
    }
    p->t_end = mono_ns();
    if (p->rc < 0 && !p->err[0])
        snprintf(p->err, sizeof p->err, "%s", pb_client_message(c));
    pb_client_close(c);
    return NULL;
}

/* --- subscribers ---------------------------------------------------------- */

typedef struct sub_thread {
    const bench_cfg *cfg;
    pthread_t tid;
    pb_client *c;
    char pattern[160];
    pb_start_mode start;
    uint64_t expected; /* events of this run to receive */
    uint64_t received; /* ... received so far */
    uint64_t all;      /* every event received, this run's or not */
    size_t prefix_len; /* replay: count only topics starting with PREFIX. */
    bool timed;        /* latency: record delivery latency per event */
    samples delivery;
    atomic_bool ready;      /* a probe (empty payload) arrived: the subscription is live */
    int64_t t_first, t_end; /* monotonic: first event of the run, last one */
    int rc;
    char err[512];
} sub_thread;

static int sub_open(sub_thread *s)
{
    const bench_cfg *cfg = s->cfg;
    pb_client_options o;
    pb_client_options_init(&o);
    o.name = "protobus bench " PB_VERSION_STRING;
    int rc = pb_client_connect(&s->c, cfg->server, &o, s->err, sizeof s->err);
    if (rc < 0)
        return rc;
    const char *pats[1] = {s->pattern};
    pb_partition_offset off = {.partition = cfg->partition, .offset = cfg->offset};
    pb_subscription sub = {.patterns = pats, .npatterns = 1, .start = s->start};
    if (s->start == PB_START_OFFSETS) {
        sub.offsets = &off;
        sub.noffsets = 1;
    } else if (s->start == PB_START_TIME) {
        sub.from_time_ns = cfg->time_ns;
    }
    rc = pb_client_subscribe(s->c, &sub);
    if (rc < 0)
        snprintf(s->err, sizeof s->err, "%s", pb_client_message(s->c));
    return rc;
}

static void *sub_main(void *arg)
{
    sub_thread *s = arg;
    const bench_cfg *cfg = s->cfg;
    pb_item item;
    while (s->received < s->expected) {
        int rc = pb_client_next(s->c, &item, SUB_WAIT_MS);
        if (rc == PB_ETIMEDOUT) {
            if (atomic_load(&stop_all)) {
                s->rc = rc;
                snprintf(s->err, sizeof s->err, "received %" PRIu64 " of %" PRIu64 " events",
                         s->received, s->expected);
                break;
            }
            continue;
        }
        if (rc < 0) {
            s->rc = rc;
            snprintf(s->err, sizeof s->err, "%s", pb_client_message(s->c));
            break;
        }
        if (item.kind != PB_ITEM_EVENT)
            continue;
        const pb_received_event *e = &item.event;
        if (e->payload_len == 0) {
            atomic_store(&s->ready, true);
            continue;
        }
        if (s->all++ == 0)
            s->t_first = mono_ns();
        if (s->prefix_len &&
            (e->topic_len <= s->prefix_len || memcmp(e->topic, cfg->prefix, s->prefix_len) != 0 ||
             e->topic[s->prefix_len] != '.'))
            continue;
        s->received++;
        if (s->timed && e->has_client_event_time)
            samples_add(&s->delivery, pb_time_now_ns() - e->client_event_time_ns);
    }
    s->t_end = mono_ns();
    return NULL;
}

/* Publishes an empty-payload probe to each subscriber that has not seen one
 * until every subscription is live: START_NEW subscriptions only see events
 * stored after the server registered them, and nothing else says when. */
static int wait_ready(const bench_cfg *cfg, sub_thread *subs, uint32_t n)
{
    pub_thread p = {.cfg = cfg};
    int64_t zero = 0;
    p.sent_ns = &zero;
    pb_client *c = NULL;
    int rc = pub_connect(&p, &c);
    if (rc < 0) {
        cli_error(CMD, "%s", p.err);
        return rc;
    }
    int64_t deadline = cli_now_ms() + READY_TIMEOUT_MS;
    for (;;) {
        uint32_t waiting = 0;
        for (uint32_t j = 0; j < n; j++) {
            if (atomic_load(&subs[j].ready))
                continue;
            waiting++;
            pb_event ev = {.topic = cfg->topic_names[cfg->distinct ? j : 0]};
            rc = pb_client_publish(c, &ev);
            if (rc < 0)
                goto out;
        }
        rc = pb_client_flush(c, cfg->timeout_ms, NULL, NULL);
        if (rc < 0 || waiting == 0)
            goto out;
        if (cli_now_ms() > deadline) {
            rc = PB_ETIMEDOUT;
            snprintf(p.err, sizeof p.err, "%u subscription(s) not live after %d ms", waiting,
                     READY_TIMEOUT_MS);
            cli_error(CMD, "%s", p.err);
            pb_client_close(c);
            return rc;
        }
        cli_sleep_ms(10);
    }
out:
    if (rc < 0)
        cli_error(CMD, "probe publisher: %s", pb_client_message(c));
    pb_client_close(c);
    return rc;
}

/* --- running a mode ------------------------------------------------------- */

static void *watchdog_main(void *arg)
{
    const bench_cfg *cfg = arg;
    int64_t deadline = cli_now_ms() + cfg->timeout_ms;
    while (!atomic_load(&stop_all) && cli_now_ms() < deadline && !cli_stop)
        cli_sleep_ms(20);
    atomic_store(&stop_all, true);
    return NULL;
}

static uint64_t pow10u(uint32_t k)
{
    uint64_t v = 1;
    while (k--)
        v *= 10;
    return v;
}

/* Number of decimal digits of n - 1 (at least 1): topic index width. */
static uint32_t index_width(uint64_t n)
{
    uint32_t w = 1;
    for (uint64_t v = n > 0 ? n - 1 : 0; v >= 10; v /= 10)
        w++;
    return w;
}

static int build_topics(bench_cfg *cfg)
{
    uint32_t w = index_width(cfg->topics);
    size_t len = strlen(cfg->prefix) + 1 + w + 1;
    cfg->topic_names = calloc(cfg->topics, sizeof *cfg->topic_names);
    char *names = malloc((size_t)cfg->topics * len);
    cfg->payload = malloc(cfg->size);
    if (!cfg->topic_names || !names || !cfg->payload) {
        free(names);
        return PB_ENOMEM;
    }
    for (uint32_t i = 0; i < cfg->topics; i++) {
        cfg->topic_names[i] = names + (size_t)i * len;
        snprintf(cfg->topic_names[i], len, "%s.%0*u", cfg->prefix, (int)w, i);
    }
    for (size_t i = 0; i < cfg->size; i++)
        cfg->payload[i] = (uint8_t)('a' + i % 26);
    return 0;
}

static void free_topics(bench_cfg *cfg)
{
    if (cfg->topic_names)
        free(cfg->topic_names[0]);
    free(cfg->topic_names);
    free(cfg->payload);
}

/* Events of [0, count) that subscriber j of a --distinct run receives. */
static uint64_t distinct_share(const bench_cfg *cfg, uint32_t j)
{
    uint64_t per_round = 0, full = cfg->count / cfg->topics, rest = cfg->count % cfg->topics,
             tail = 0;
    for (uint32_t t = j; t < cfg->topics; t += cfg->subs) {
        per_round++;
        if (t < rest)
            tail++;
    }
    return full * per_round + tail;
}

static void result_rate(const char *what, uint64_t events, int64_t ns, size_t size, char *res,
                        size_t reslen)
{
    double secs = (double)ns / 1e9;
    double evs = secs > 0 ? (double)events / secs : 0;
    double mbs = evs * (double)size / 1e6;
    printf("%-9s %" PRIu64 " events in %.3f s: %.0f events/s, %.1f MB/s\n", what, events, secs, evs,
           mbs);
    size_t len = strlen(res);
    snprintf(res + len, reslen - len,
             " %s_events=%" PRIu64 " %s_secs=%.3f %s_ev_s=%.0f %s_mb_s=%.1f", what, events, what,
             secs, what, evs, what, mbs);
}

static int run_pubs(bench_cfg *cfg, bool latency, pub_thread **out)
{
    uint32_t np = latency ? 1 : cfg->pubs;
    pub_thread *pubs = calloc(np, sizeof *pubs);
    if (!pubs)
        return PB_ENOMEM;
    *out = pubs;
    /* In flight at most in_flight batches of at most `batch` events: a
     * ring of that many send times is never overwritten before its ack. */
    uint64_t ring = 1;
    while (ring < (uint64_t)(cfg->in_flight + 2) * (latency ? 1 : cfg->batch) + 1024)
        ring <<= 1;
    int rc = 0;
    uint32_t started = 0;
    for (uint32_t t = 0; t < np; t++) {
        pub_thread *p = &pubs[t];
        p->cfg = cfg;
        p->latency = latency;
        p->first = cfg->count * t / np;
        p->n = cfg->count * (t + 1) / np - p->first;
        p->mask = ring - 1;
        p->sent_ns = calloc(ring, sizeof *p->sent_ns);
        if (!p->sent_ns || !samples_init(&p->ack, latency ? p->n : p->n / cfg->batch + 2)) {
            rc = PB_ENOMEM;
            break;
        }
    }
    for (uint32_t t = 0; rc == 0 && t < np; t++) {
        rc = start_thread(&pubs[t].tid, pub_main, &pubs[t]);
        if (rc == 0)
            started++;
    }
    for (uint32_t t = 0; t < started; t++)
        pthread_join(pubs[t].tid, NULL);
    for (uint32_t t = 0; rc == 0 && t < np; t++) {
        if (pubs[t].rc < 0) {
            cli_error(CMD, "publisher %u: %s", t, pubs[t].err);
            rc = pubs[t].rc;
        }
    }
    return rc;
}

static void free_pubs(pub_thread *pubs, uint32_t n)
{
    for (uint32_t t = 0; pubs && t < n; t++) {
        free(pubs[t].sent_ns);
        free(pubs[t].ack.v);
    }
    free(pubs);
}

/* Publish phase figures: rate over the span of all publishers, ack latency. */
static void report_pubs(const bench_cfg *cfg, pub_thread *pubs, uint32_t np, char *res,
                        size_t reslen)
{
    int64_t t0 = pubs[0].t_start, t1 = pubs[0].t_end;
    size_t nsamp = 0;
    for (uint32_t t = 0; t < np; t++) {
        if (pubs[t].t_start < t0)
            t0 = pubs[t].t_start;
        if (pubs[t].t_end > t1)
            t1 = pubs[t].t_end;
        nsamp += pubs[t].ack.n;
    }
    result_rate("pub", cfg->count, t1 - t0, cfg->size, res, reslen);
    samples all;
    if (!samples_init(&all, nsamp))
        return;
    for (uint32_t t = 0; t < np; t++)
        samples_merge(&all, &pubs[t].ack);
    print_lat("ack", &all, res, reslen);
    free(all.v);
}

static int mode_pub_sub(bench_cfg *cfg, bool latency, bool with_subs, char *res, size_t reslen)
{
    uint32_t ns = with_subs ? (latency ? 1 : cfg->subs) : 0, np = latency ? 1 : cfg->pubs;
    sub_thread *subs = ns ? calloc(ns, sizeof *subs) : NULL;
    pub_thread *pubs = NULL;
    uint32_t started = 0;
    int rc = 0;
    if (ns && !subs)
        return PB_ENOMEM;
    uint32_t digits = 0;
    if (cfg->distinct) {
        while (pow10u(digits) < ns)
            digits++;
        if (pow10u(digits) != ns || ns > cfg->topics) {
            cli_error(CMD, "--distinct needs --subs a power of 10 and at most --topics");
            rc = PB_EINVAL;
            goto out;
        }
    }
    for (uint32_t j = 0; j < ns; j++) {
        sub_thread *s = &subs[j];
        s->cfg = cfg;
        s->start = PB_START_NEW;
        s->timed = latency;
        if (cfg->distinct && digits)
            snprintf(s->pattern, sizeof s->pattern, "%s\\.[0-9]*%0*u", cfg->prefix, (int)digits, j);
        else if (cfg->pattern)
            snprintf(s->pattern, sizeof s->pattern, "%s", cfg->pattern);
        else
            snprintf(s->pattern, sizeof s->pattern, "%s\\..*", cfg->prefix);
        s->expected = cfg->distinct && digits ? distinct_share(cfg, j) : cfg->count;
        if (latency && !samples_init(&s->delivery, cfg->count)) {
            rc = PB_ENOMEM;
            goto out;
        }
        rc = sub_open(s);
        if (rc < 0) {
            cli_error(CMD, "subscriber %u: %s", j, s->err);
            goto out;
        }
        rc = start_thread(&s->tid, sub_main, s);
        if (rc < 0) {
            cli_error(CMD, "cannot start subscriber thread %u: %s", j, pb_strerror(rc));
            goto out;
        }
        started++;
    }
    if (ns) {
        rc = wait_ready(cfg, subs, ns);
        if (rc < 0)
            goto out;
    }
    double cpu0 = cpu_seconds();
    rc = run_pubs(cfg, latency, &pubs);
    if (rc == 0)
        report_pubs(cfg, pubs, np, res, reslen);
    for (uint32_t j = 0; j < started; j++)
        pthread_join(subs[j].tid, NULL);
    started = 0;
    for (uint32_t j = 0; rc == 0 && j < ns; j++) {
        if (subs[j].rc < 0) {
            cli_error(CMD, "subscriber %u: %s", j, subs[j].err);
            rc = subs[j].rc;
        }
    }
    if (rc == 0 && ns) {
        int64_t t0 = pubs[0].t_start, t1 = 0;
        uint64_t total = 0;
        for (uint32_t j = 0; j < ns; j++) {
            if (subs[j].t_end > t1)
                t1 = subs[j].t_end;
            total += subs[j].received;
        }
        for (uint32_t t = 0; t < np; t++)
            if (pubs[t].t_start < t0)
                t0 = pubs[t].t_start;
        result_rate("sub", total, t1 - t0, cfg->size, res, reslen);
        if (latency)
            print_lat("delivery", &subs[0].delivery, res, reslen);
    }
    if (rc == 0) {
        double cpu = cpu_seconds() - cpu0;
        printf("client CPU %.2f s\n", cpu);
        size_t len = strlen(res);
        snprintf(res + len, reslen - len, " client_cpu_s=%.2f", cpu);
    }
out:
    if (rc < 0)
        atomic_store(&stop_all, true);
    for (uint32_t j = 0; j < started; j++)
        pthread_join(subs[j].tid, NULL);
    for (uint32_t j = 0; subs && j < ns; j++) {
        pb_client_close(subs[j].c);
        free(subs[j].delivery.v);
    }
    free(subs);
    free_pubs(pubs, np);
    return rc;
}

static int mode_replay(bench_cfg *cfg, char *res, size_t reslen)
{
    pub_thread *pubs = NULL;
    int rc = run_pubs(cfg, false, &pubs);
    if (rc == 0)
        report_pubs(cfg, pubs, cfg->pubs, res, reslen);
    free_pubs(pubs, cfg->pubs);
    if (rc < 0)
        return rc;
    sub_thread s = {.cfg = cfg, .start = PB_START_BEGINNING, .expected = cfg->count};
    snprintf(s.pattern, sizeof s.pattern, "%s", cfg->pattern ? cfg->pattern : ".*");
    s.prefix_len = strlen(cfg->prefix);
    double cpu0 = cpu_seconds();
    int64_t t0 = mono_ns();
    rc = sub_open(&s);
    if (rc == 0)
        sub_main(&s);
    if (rc == 0 && s.rc < 0)
        rc = s.rc;
    if (rc < 0) {
        cli_error(CMD, "replay subscriber: %s", s.err);
    } else {
        double cpu = cpu_seconds() - cpu0;
        result_rate("replay", s.all, s.t_end - t0, cfg->size, res, reslen);
        printf("replay    first event after %.3f ms; client CPU %.2f s\n",
               (double)(s.t_first - t0) / 1e6, cpu);
        size_t len = strlen(res);
        snprintf(res + len, reslen - len, " replay_first_ms=%.3f client_cpu_s=%.2f",
                 (double)(s.t_first - t0) / 1e6, cpu);
    }
    pb_client_close(s.c);
    return rc;
}

static int mode_seek(bench_cfg *cfg, char *res, size_t reslen)
{
    if (cfg->has_offset == cfg->has_time) {
        cli_error(CMD, "seek mode needs exactly one of --offset and --time");
        return PB_EINVAL;
    }
    samples first;
    uint64_t reps = cfg->count > 1000 ? 1000 : cfg->count;
    if (!samples_init(&first, reps))
        return PB_ENOMEM;
    int rc = 0;
    for (uint64_t i = 0; i < reps && rc == 0; i++) {
        sub_thread s = {
            .cfg = cfg, .start = cfg->has_offset ? PB_START_OFFSETS : PB_START_TIME, .expected = 1};
        snprintf(s.pattern, sizeof s.pattern, "%s", cfg->pattern ? cfg->pattern : ".*");
        int64_t t0 = mono_ns();
        rc = sub_open(&s);
        if (rc == 0) {
            sub_main(&s);
            rc = s.rc;
        }
        if (rc < 0)
            cli_error(CMD, "seek: %s", s.err);
        else
            samples_add(&first, s.t_first - t0);
        pb_client_close(s.c);
    }
    if (rc == 0)
        print_lat("seek", &first, res, reslen);
    free(first.v);
    return rc;
}

/* --- loopback TCP baseline ------------------------------------------------ */

typedef struct tcp_writer {
    int fd;
    uint64_t bytes;
    int rc;
} tcp_writer;

static void *tcp_write_main(void *arg)
{
    tcp_writer *w = arg;
    static uint8_t chunk[TCP_CHUNK];
    uint64_t left = w->bytes;
    while (left > 0) {
        size_t n = left < TCP_CHUNK ? (size_t)left : TCP_CHUNK;
        ssize_t k = write(w->fd, chunk, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            w->rc = -errno;
            break;
        }
        left -= (uint64_t)k;
    }
    return NULL;
}

static int mode_tcp(bench_cfg *cfg, char *res, size_t reslen)
{
    int lfd = -1, wfd = -1, rfd = -1, rc = 0;
    uint8_t *buf = malloc(TCP_CHUNK);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (!buf)
        return PB_ENOMEM;
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 1) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) != 0)
        goto sys_fail;
    wfd = socket(AF_INET, SOCK_STREAM, 0);
    if (wfd < 0 || connect(wfd, (struct sockaddr *)&a, sizeof a) != 0)
        goto sys_fail;
    rfd = accept(lfd, NULL, NULL);
    if (rfd < 0)
        goto sys_fail;
    tcp_writer w = {.fd = wfd, .bytes = cfg->tcp_bytes};
    pthread_t t;
    int64_t t0 = mono_ns();
    rc = start_thread(&t, tcp_write_main, &w);
    if (rc < 0)
        goto out;
    uint64_t got = 0;
    while (got < cfg->tcp_bytes) {
        ssize_t k = read(rfd, buf, TCP_CHUNK);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            rc = k < 0 ? -errno : PB_ECLOSED;
            break;
        }
        got += (uint64_t)k;
    }
    pthread_join(t, NULL);
    if (rc == 0 && w.rc < 0)
        rc = w.rc;
    if (rc == 0) {
        double secs = (double)(mono_ns() - t0) / 1e9;
        printf("tcp       %" PRIu64 " bytes over 127.0.0.1 in %.3f s: %.1f MB/s\n", got, secs,
               (double)got / secs / 1e6);
        size_t len = strlen(res);
        snprintf(res + len, reslen - len, " tcp_mb_s=%.1f", (double)got / secs / 1e6);
    } else {
        cli_error(CMD, "loopback transfer: %s", pb_strerror(rc));
    }
    goto out;
sys_fail:
    rc = -errno;
    cli_error(CMD, "loopback socket on 127.0.0.1: %s", strerror(errno));
out:
    if (lfd >= 0 && close(lfd) != 0 && rc == 0)
        rc = -errno;
    if (wfd >= 0 && close(wfd) != 0 && rc == 0)
        rc = -errno;
    if (rfd >= 0 && close(rfd) != 0 && rc == 0)
        rc = -errno;
    free(buf);
    return rc;
}

/* --- options -------------------------------------------------------------- */

enum {
    OPT_SIZE = 256,
    OPT_BATCH_BYTES,
    OPT_IN_FLIGHT,
    OPT_SUBS,
    OPT_TOPICS,
    OPT_PREFIX,
    OPT_DISTINCT,
    OPT_RATE,
    OPT_PARTITION,
    OPT_OFFSET,
    OPT_TIME,
    OPT_BYTES,
    OPT_TIMEOUT,
};

static bool num_opt(const char *name, const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    if (!cli_parse_u64(s, out) || *out < lo || *out > hi) {
        cli_error(CMD, "%s '%s': expected a whole number from %" PRIu64 " to %" PRIu64, name, s, lo,
                  hi);
        return false;
    }
    return true;
}

static int parse(bench_cfg *cfg, int argc, char **argv)
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
        {"topics", required_argument, NULL, OPT_TOPICS},
        {"prefix", required_argument, NULL, OPT_PREFIX},
        {"distinct", no_argument, NULL, OPT_DISTINCT},
        {"pattern", required_argument, NULL, 'P'},
        {"rate", required_argument, NULL, OPT_RATE},
        {"partition", required_argument, NULL, OPT_PARTITION},
        {"offset", required_argument, NULL, OPT_OFFSET},
        {"time", required_argument, NULL, OPT_TIME},
        {"bytes", required_argument, NULL, OPT_BYTES},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *server = NULL;
    bool count_set = false;
    uint64_t v;
    int opt;
    while ((opt = getopt_long(argc, argv, "s:n:b:p:P:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 's':
            server = optarg;
            break;
        case 'n':
            if (!num_opt("--count", optarg, 1, UINT64_C(1) << 40, &cfg->count))
                return CLI_EXIT_USAGE;
            count_set = true;
            break;
        case OPT_SIZE:
            if (!num_opt("--size", optarg, 8, 64u << 20, &v))
                return CLI_EXIT_USAGE;
            cfg->size = (size_t)v;
            break;
        case 'b':
            if (!num_opt("--batch", optarg, 1, 1000000, &v))
                return CLI_EXIT_USAGE;
            cfg->batch = (uint32_t)v;
            break;
        case OPT_BATCH_BYTES:
            if (!num_opt("--batch-bytes", optarg, 1024, 1u << 30, &v))
                return CLI_EXIT_USAGE;
            cfg->batch_bytes = (size_t)v;
            break;
        case OPT_IN_FLIGHT:
            if (!num_opt("--in-flight", optarg, 1, 1024, &v))
                return CLI_EXIT_USAGE;
            cfg->in_flight = (uint32_t)v;
            break;
        case 'p':
            if (!num_opt("--pubs", optarg, 1, 256, &v))
                return CLI_EXIT_USAGE;
            cfg->pubs = (uint32_t)v;
            break;
        case OPT_SUBS:
            if (!num_opt("--subs", optarg, 0, MAX_THREADS, &v))
                return CLI_EXIT_USAGE;
            cfg->subs = (uint32_t)v;
            break;
        case OPT_TOPICS:
            if (!num_opt("--topics", optarg, 1, 10000000, &v))
                return CLI_EXIT_USAGE;
            cfg->topics = (uint32_t)v;
            break;
        case OPT_PREFIX:
            if (!*optarg || strlen(optarg) >= sizeof cfg->prefix - 1 || strchr(optarg, ' ')) {
                cli_error(CMD, "--prefix '%s': 1 to %zu characters, no spaces", optarg,
                          sizeof cfg->prefix - 2);
                return CLI_EXIT_USAGE;
            }
            snprintf(cfg->prefix, sizeof cfg->prefix, "%s", optarg);
            break;
        case OPT_DISTINCT:
            cfg->distinct = true;
            break;
        case 'P':
            cfg->pattern = optarg;
            break;
        case OPT_RATE:
            if (!num_opt("--rate", optarg, 1, 10000000, &cfg->rate))
                return CLI_EXIT_USAGE;
            break;
        case OPT_PARTITION:
            cfg->partition = optarg;
            break;
        case OPT_OFFSET:
            if (!num_opt("--offset", optarg, 0, UINT64_MAX, &cfg->offset))
                return CLI_EXIT_USAGE;
            cfg->has_offset = true;
            break;
        case OPT_TIME:
            if (!cli_parse_time(CMD, "--time", optarg, &cfg->time_ns))
                return CLI_EXIT_USAGE;
            cfg->has_time = true;
            break;
        case OPT_BYTES:
            if (!num_opt("--bytes", optarg, 1, UINT64_C(1) << 40, &cfg->tcp_bytes))
                return CLI_EXIT_USAGE;
            break;
        case OPT_TIMEOUT:
            if (!num_opt("--timeout", optarg, 1, 3600000, &v))
                return CLI_EXIT_USAGE;
            cfg->timeout_ms = (int)v;
            break;
        case 'h':
            fputs(usage, stdout);
            return cli_flush_stdout(CMD) ? -1 : CLI_EXIT_RUNTIME;
        default:
            return cli_try_help(CMD);
        }
    }
    if (optind != argc - 1)
        return cli_usage_error(CMD, "expected one MODE (pub, sub, replay, latency, seek or tcp)");
    cfg->mode = argv[optind];
    cfg->server = cli_server(server);
    if (strcmp(cfg->mode, "seek") == 0 && !count_set)
        cfg->count = 5;
    if (strcmp(cfg->mode, "latency") == 0 && !count_set)
        cfg->count = cfg->rate * 5;
    return 0;
}

int cmd_bench(int argc, char **argv)
{
    bench_cfg cfg = {
        .count = 1000000,
        .size = 100,
        .batch = 1000,
        .in_flight = 64,
        .pubs = 1,
        .subs = 1,
        .topics = 1,
        .rate = 10000,
        .partition = "events",
        .tcp_bytes = UINT64_C(4) << 30,
        .timeout_ms = 120000,
    };
    snprintf(cfg.prefix, sizeof cfg.prefix, "bench%ld", (long)getpid());
    int rc = parse(&cfg, argc, argv);
    if (rc != 0)
        return rc < 0 ? CLI_EXIT_OK : rc;
    char res[2048];
    snprintf(res, sizeof res, "RESULT mode=%s size=%zu count=%" PRIu64, cfg.mode, cfg.size,
             cfg.count);
    if (strcmp(cfg.mode, "tcp") == 0) {
        rc = mode_tcp(&cfg, res, sizeof res);
        goto done;
    }
    bool known = strcmp(cfg.mode, "pub") == 0 || strcmp(cfg.mode, "sub") == 0 ||
                 strcmp(cfg.mode, "replay") == 0 || strcmp(cfg.mode, "latency") == 0 ||
                 strcmp(cfg.mode, "seek") == 0;
    if (!known)
        return cli_usage_error(CMD, "unknown mode '%s' (pub, sub, replay, latency, seek or tcp)",
                               cfg.mode);
    rc = build_topics(&cfg);
    if (rc < 0) {
        cli_error(CMD, "out of memory for %u topics", cfg.topics);
        goto done;
    }
    cli_catch_signals();
    pthread_t wd;
    rc = start_thread(&wd, watchdog_main, &cfg);
    if (rc < 0) {
        cli_error(CMD, "cannot start a thread: %s", pb_strerror(rc));
        goto done;
    }
    if (strcmp(cfg.mode, "pub") == 0)
        rc = mode_pub_sub(&cfg, false, false, res, sizeof res);
    else if (strcmp(cfg.mode, "sub") == 0)
        rc = mode_pub_sub(&cfg, false, true, res, sizeof res);
    else if (strcmp(cfg.mode, "latency") == 0)
        rc = mode_pub_sub(&cfg, true, true, res, sizeof res);
    else if (strcmp(cfg.mode, "replay") == 0)
        rc = mode_replay(&cfg, res, sizeof res);
    else
        rc = mode_seek(&cfg, res, sizeof res);
    atomic_store(&stop_all, true);
    pthread_join(wd, NULL);
done:
    free_topics(&cfg);
    if (rc == 0) {
        puts(res);
        return cli_flush_stdout(CMD) ? CLI_EXIT_OK : CLI_EXIT_RUNTIME;
    }
    return CLI_EXIT_RUNTIME;
}
