/*
 * bench_clients - the load of `protobus bench`: publisher threads (publish
 * as fast as acks allow, or paced one event per batch in latency mode, and
 * time the acks) and subscribers (count what arrives, time delivery in
 * latency mode). A subscription is live once pb_client_subscribe returns
 * (the server confirmed it), so publishers may start right after.
 *
 * Threads: each bench_pub / bench_sub runs on its own thread with its own
 * pb_client, or (--sub-threads) the subscribers are shared by a few
 * bench_mux threads, each reading whichever of its connections has data;
 * they share the read-only bench_cfg and poll bench_stop.
 */
#include "bench_clients.h"

#include "cli.h"
#include "client.h" /* the connection's socket, for epoll (bench_mux_main) */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define SUB_WAIT_MS  200 /* a subscriber re-checks the stop flag this often */
#define THREAD_STACK (256u * 1024u)

atomic_bool bench_stop;

int bench_start_thread(pthread_t *t, void *(*fn)(void *), void *arg)
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

static void on_ack(void *ctx, const pb_batch_result *r)
{
    bench_pub *p = ctx;
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
        bench_samples_add(&p->ack, pb_time_now_ns() - sent);
}

static int pub_connect(bench_pub *p, pb_client **out)
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
    o.user = cfg->user;
    o.password = cfg->password;
    cli_tls_apply(&cfg->tls, &o);
    return pb_client_connect(out, cfg->server, &o, p->err, sizeof p->err);
}

/* Waits (pacing) until `due` on the monotonic clock, reading acks as they
 * arrive so that their latency is measured when they come, not when the
 * next event is due. */
static int pace_until(pb_client *c, int64_t due)
{
    for (;;) {
        int64_t left = due - bench_mono_ns();
        if (left <= 0)
            return 0;
        int rc = pb_client_flush(c, 0, NULL, NULL);
        if (rc < 0 && rc != PB_ETIMEDOUT)
            return rc;
        left = due - bench_mono_ns();
        if (left > 50000)
            left = 50000; /* 50 us: the resolution of ack times */
        if (left > 0) {
            struct timespec ts = {0, left};
            nanosleep(&ts, NULL);
        }
    }
}

/* Writes v in decimal and a NUL at out; returns the number of digits. */
static size_t put_id(char *out, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
    return n;
}

/* Turns the n decimal digits at out (NUL-terminated) into those of the
 * next number, in place: the publisher's ids are consecutive, so this is
 * a digit or two of work per event instead of a conversion. Returns the
 * new number of digits. */
static size_t next_id(char *out, size_t n)
{
    size_t i = n;
    while (i > 0 && out[i - 1] == '9')
        out[--i] = '0';
    if (i > 0) {
        out[i - 1]++;
        return n;
    }
    memmove(out + 1, out, n); /* 99..9 -> 100..0 */
    out[0] = '1';
    out[n + 1] = '\0';
    return n + 1;
}

void *bench_pub_main(void *arg)
{
    bench_pub *p = arg;
    const bench_cfg *cfg = p->cfg;
    pb_client *c = NULL;
    p->rc = pub_connect(p, &c);
    if (p->rc < 0)
        return NULL;
    pb_event ev = {.payload = cfg->payload, .payload_len = cfg->size};
    /* --ids: "PREFIX-" then the sequence number, in decimal, counted up in
     * place per event (no conversion on the hot path: the client shares
     * the cores with the daemon). */
    char id[sizeof cfg->prefix + 24];
    int plen = snprintf(id, sizeof id, "%s-", cfg->prefix);
    char *id_digits = id + (plen > 0 ? plen : 0);
    size_t id_n = 0;
    uint32_t batch = p->latency ? 1 : cfg->batch;
    int64_t period = p->latency ? 1000000000 / (int64_t)cfg->rate : 0;
    p->t_start = bench_mono_ns();
    int64_t due = p->t_start;
    for (uint64_t i = 0; i < p->n && p->rc == 0; i++) {
        uint64_t seq = p->first + i;
        ev.topic = cfg->topic_names[seq % cfg->topics];
        if (cfg->npayloads > 1)
            ev.payload = cfg->payload + (size_t)(seq % cfg->npayloads) * cfg->size;
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
        if (cfg->ids)
            id_n = i == 0 ? put_id(id_digits, seq) : next_id(id_digits, id_n);
        int rc = pb_client_publish_id(c, &ev, cfg->ids ? id : NULL);
        if (rc < 0) {
            p->rc = rc;
            break;
        }
        if (atomic_load_explicit(&bench_stop, memory_order_relaxed)) {
            p->rc = PB_ETIMEDOUT;
            break;
        }
    }
    if (p->rc == 0) {
        int rc = pb_client_flush(c, cfg->timeout_ms, NULL, NULL);
        if (rc < 0)
            p->rc = rc;
    }
    p->t_end = bench_mono_ns();
    if (p->rc < 0 && !p->err[0])
        snprintf(p->err, sizeof p->err, "%s", pb_client_message(c));
    pb_client_close(c);
    return NULL;
}

/* --- subscribers ---------------------------------------------------------- */

int bench_sub_open(bench_sub *s)
{
    const bench_cfg *cfg = s->cfg;
    pb_client_options o;
    pb_client_options_init(&o);
    o.name = "protobus bench " PB_VERSION_STRING;
    o.user = cfg->user;
    o.password = cfg->password;
    cli_tls_apply(&cfg->tls, &o);
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

/* Counts one item of s's subscription. */
static void sub_count(bench_sub *s, const pb_item *item)
{
    const bench_cfg *cfg = s->cfg;
    if (item->kind != PB_ITEM_EVENT)
        return;
    const pb_received_event *e = &item->event;
    if (s->all++ == 0)
        s->t_first = bench_mono_ns();
    if (s->prefix_len &&
        (e->topic_len <= s->prefix_len || memcmp(e->topic, cfg->prefix, s->prefix_len) != 0 ||
         e->topic[s->prefix_len] != '.'))
        return;
    s->received++;
    if (s->timed && e->has_client_event_time)
        bench_samples_add(&s->delivery, pb_time_now_ns() - e->client_event_time_ns);
}

/* The subscription ended early: rc and its reason into s. */
static void sub_failed(bench_sub *s, int rc)
{
    s->rc = rc;
    if (rc == PB_ETIMEDOUT)
        snprintf(s->err, sizeof s->err, "received %" PRIu64 " of %" PRIu64 " events",
                 s->received, s->expected);
    else
        snprintf(s->err, sizeof s->err, "%s", pb_client_message(s->c));
}

void *bench_sub_main(void *arg)
{
    bench_sub *s = arg;
    pb_item item;
    while (s->received < s->expected) {
        int rc = pb_client_next(s->c, &item, SUB_WAIT_MS);
        if (rc == PB_ETIMEDOUT) {
            if (atomic_load(&bench_stop)) {
                sub_failed(s, rc);
                break;
            }
            continue;
        }
        if (rc < 0) {
            sub_failed(s, rc);
            break;
        }
        sub_count(s, &item);
    }
    s->t_end = bench_mono_ns();
    return NULL;
}

/* Takes what s's connection holds now. true when s is done (every event
 * of the run, or an error). */
static bool sub_take_ready(bench_sub *s)
{
    pb_item item;
    while (s->received < s->expected) {
        int rc = pb_client_next(s->c, &item, 0);
        if (rc == PB_ETIMEDOUT)
            return false;
        if (rc < 0) {
            sub_failed(s, rc);
            break;
        }
        sub_count(s, &item);
    }
    s->t_end = bench_mono_ns();
    return true;
}

#define MUX_EVENTS 64

void *bench_mux_main(void *arg)
{
    bench_mux *m = arg;
    uint32_t left = 0;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (uint32_t j = m->first; j < m->ns; j += m->step) {
        bench_sub *s = &m->subs[j];
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = j};
        if (sub_take_ready(s))
            continue;
        if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, s->c->fd, &ev) < 0) {
            s->rc = -errno;
            snprintf(s->err, sizeof s->err, "epoll: %s", strerror(errno));
            s->t_end = bench_mono_ns();
            continue;
        }
        left++;
    }
    struct epoll_event evs[MUX_EVENTS];
    while (left > 0) {
        int n = epoll_wait(ep, evs, MUX_EVENTS, SUB_WAIT_MS);
        if (n < 0 && errno != EINTR)
            break; /* not expected: the unfinished ones are reported below */
        if (n <= 0 && atomic_load(&bench_stop))
            break;
        for (int k = 0; k < n; k++) {
            bench_sub *s = &m->subs[evs[k].data.u32];
            if (sub_take_ready(s)) {
                (void)epoll_ctl(ep, EPOLL_CTL_DEL, s->c->fd, NULL);
                left--;
            }
        }
    }
    for (uint32_t j = m->first; left > 0 && j < m->ns; j += m->step) {
        bench_sub *s = &m->subs[j];
        if (s->rc == 0 && s->received < s->expected) {
            sub_failed(s, PB_ETIMEDOUT);
            s->t_end = bench_mono_ns();
        }
    }
    if (ep >= 0)
        close(ep);
    return NULL;
}
