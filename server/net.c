/*
 * net - protobusd's libuv loop: accepting connections, their handshake,
 * splitting what they send into frames, and the hand-offs: a Publish to
 * ingest (net_publish.c: ingest.c validates, routes and queues it; a
 * writer's done() brings the batch back to the loop for its reply), a
 * Subscribe to the subscription pool (net_subscribe.c prepares it on
 * libuv's thread pool, then sub.c takes the socket). What each
 * frame gets in each state of a connection is session.c's decision; this
 * file carries it out. A connection's writes, its replies in request order
 * and its back-pressure are conn.c's.
 *
 * Threads: the loop thread runs everything in this file (for the writer
 * threads' batch_done(), see net_publish.c). The loop thread never touches
 * segment files.
 *
 * Connection states (session.h): HANDSHAKE from accept until a valid Hello
 * (deadline handshake_timeout_ms; at most max_handshaking such connections,
 * the oldest closed first when a new one arrives at that cap or at
 * max_connections), then OPEN, until a Subscribe hands the socket over.
 *
 * A batch lives until its reply has been queued for writing. It counts in
 * the in-flight budget (max_inflight_bytes, conn.c) with its charge
 * (ingest_charge): its bytes and its per-event state, here and in the
 * writers.
 */
#include "net_internal.h"
#include "metrics.h"

#include "frame.h"
#include "grow.h"
#include "acl.h"
#include "hostport.h"
#include "logging.h"
#include "pb_errors.h"
#include "protobus_version.h"
#include "standby.h"
#include "sub.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define READ_CHUNK                   (64 * 1024) /* a TLS read; plain ones: connbuf.c */
#define DEFAULT_HANDSHAKE_TIMEOUT_MS 10000u

static void pool_warm_noop(uv_work_t *w)
{
    (void)w;
}

/* ------------------------------------------------------------------ */
/* frames */

/* The handshake is done: the server's Hello, and the connection is open. */
void conn_handshake_done(conn *c, uint64_t id, const char *user)
{
    net *n = c->net;
    size_t need = session_put_hello(&n->session, id, user, NULL, 0);
    uint8_t *buf = malloc(need);
    if (!buf) {
        conn_close(c);
        return;
    }
    conn_leave_handshake(c);
    c->state = SESSION_OPEN;
    uv_timer_stop(&c->timer);
    conn_reply(c, buf, session_put_hello(&n->session, id, user, buf, need), false);
}

/* Carries out session's answer to frame `id`. */
static void answer(conn *c, uint64_t id, const session_answer *a)
{
    switch (a->action) {
    case SESSION_ERROR:
        if (a->close)
            conn_fail(c, id, a->code, a->message);
        else
            conn_send_error(c, id, a->code, a->message, NULL, 0, false);
        return;
    case SESSION_PONG: {
        size_t need = frame_put_pong(NULL, 0, id);
        uint8_t *buf = malloc(need);
        if (!buf) {
            conn_close(c);
            return;
        }
        conn_reply(c, buf, frame_put_pong(buf, need, id), false);
        return;
    }
    default:
        return; /* SESSION_IGNORE; the others are handle_frame's */
    }
}

static void handle_frame(conn *c, const uint8_t *body, size_t len)
{
    net *n = c->net;
    frame_view fv;
    session_answer a;
    char err[300];
    if (frame_parse(body, len, &fv, err, sizeof err) < 0) {
        /* fv.id is the id if it could be read before the fault. */
        session_answer_malformed(c->state, err, &a);
        answer(c, fv.id, &a);
        return;
    }
    session_answer_frame(&n->session, c->state, fv.kind, fv.body.p, fv.body.len, &a);
    switch (a.action) {
    case SESSION_HELLO:
        conn_handshake_done(c, fv.id, a.user);
        break;
    case SESSION_AUTHENTICATE:
        conn_auth_start(c, fv.id, fv.body.p, fv.body.len);
        break;
    case SESSION_PUBLISH:
        conn_handle_publish(c, fv.id, fv.body.p, fv.body.len);
        break;
    case SESSION_SUBSCRIBE:
        conn_handle_subscribe(c, fv.id, fv.body.p, fv.body.len);
        break;
    default:
        answer(c, fv.id, &a);
        break;
    }
}

void conn_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    conn *c = h->data;
    (void)suggested;
    if (c->tls) {
        /* Ciphertext lands in the loop's one buffer: conn_on_read
         * decrypts it into c->buf at once. */
        out->base = (char *)c->net->tls_raw;
        out->len = READ_CHUNK;
        return;
    }
    connbuf_alloc(c, out); /* grows with the bytes, within max_partial_frame_bytes */
}

/* A frame must arrive whole within idle_timeout_ms plus one millisecond per
 * NET_FRAME_BYTES_PER_MS of its size (64 KiB/s; 16 MiB: 256 s more) from its
 * first bytes, however steadily its bytes trickle in: otherwise a client
 * sending a byte now and then would hold its buffer (and its share of
 * max_partial_frame_bytes, which others then lack) for ever. */
#define NET_FRAME_BYTES_PER_MS 64
static uint64_t frame_deadline_ms(const conn *c)
{
    size_t size = c->want > c->len ? c->want : c->len;
    return c->net->opts.idle_timeout_ms + size / NET_FRAME_BYTES_PER_MS;
}

static void on_idle_timeout(uv_timer_t *t)
{
    conn *c = t->data;
    char msg[300];
    uint64_t took = uv_now(c->net->loop) - c->frame_since;
    if (uv_now(c->net->loop) - c->last_read < c->net->opts.idle_timeout_ms)
        snprintf(msg, sizeof msg,
                 "dropped: a frame of %zu bytes still unfinished (%zu received) after %llu ms; a "
                 "frame must arrive within idle_timeout_ms (%u) plus 1 s per 64 KiB of it",
                 c->want > c->len ? c->want : c->len, c->len, (unsigned long long)took,
                 c->net->opts.idle_timeout_ms);
    else
        snprintf(msg, sizeof msg,
                 "dropped: %zu bytes of an unfinished frame and nothing more for %u ms "
                 "(idle_timeout_ms)",
                 c->len, c->net->opts.idle_timeout_ms);
    conn_fail(c, 0, PB_CODE_DEADLINE_EXCEEDED, msg);
}

static void on_handshake_timeout(uv_timer_t *t)
{
    conn *c = t->data;
    char msg[160];
    snprintf(msg, sizeof msg, "no Hello within %u ms (handshake_timeout_ms)",
             c->net->opts.handshake_timeout_ms);
    metrics_conn_refused(METRICS_REFUSED_HANDSHAKE_TIMEOUT);
    conn_fail(c, 0, PB_CODE_DEADLINE_EXCEEDED, msg);
}

/* Handles every whole frame in the buffer, as far as the connection's
 * state lets it (a Subscribe waiting for its hand-off stops it). */
/* Handles every whole frame in the buffer, as far as the connection's
 * state lets it: a Subscribe stops it until its hand-off, and if the
 * Subscribe is refused at once the frames after it are handled too. */
void conn_process(conn *c)
{
    net *n = c->net;
    /* Not re-entered (a hand-off refused from inside the loop's calls):
     * the loop goes on by itself. */
    if (c->processing)
        return;
    c->processing = 1;
    for (;;) {
        size_t pos = 0;
        while (!c->closing && !c->condemned && !c->sub_body && !c->auth_req) {
            frame_split sp;
            char err[256];
            int rc = frame_split_next(c->buf + pos, c->len - pos, n->opts.max_frame_bytes, &sp, err,
                                      sizeof err);
            if (rc == PB_EINCOMPLETE) {
                c->want = sp.need;
                break;
            }
            if (rc < 0) {
                /* The next frame boundary is unknown: nothing more can be read. */
                char msg[400];
                snprintf(msg, sizeof msg, "%s: %s (max_frame_bytes = %llu)",
                         rc == PB_ETOOBIG ? "frame refused" : "malformed frame", err,
                         (unsigned long long)n->opts.max_frame_bytes);
                conn_fail(c, 0,
                          rc == PB_ETOOBIG ? PB_CODE_RESOURCE_EXHAUSTED : PB_CODE_INVALID_ARGUMENT,
                          msg);
                break;
            }
            c->want = 0;
            c->adoptable = pos == 0 && connbuf_adoptable(c, sp.used);
            handle_frame(c, sp.body.p, sp.body.len);
            c->adoptable = 0;
            if (c->adopted) {
                c->adopted = 0; /* the buffer, the frame alone in it, went to its batch */
                break;          /* nothing else was in it */
            }
            pos += sp.used;
        }
        if (pos > 0) {
            memmove(c->buf, c->buf + pos, c->len - pos);
            c->len -= pos;
            c->frame_since = 0; /* what is left starts a new frame */
        }
        /* A Subscribe just read: the buffer now holds exactly what came
         * after it. Handed over now, or once its acks are out; refused at
         * once, the loop goes on with the rest (iteratively: a client's
         * burst of bad Subscribes does not nest calls). */
        if (conn_handoff(c) >= 0)
            break;
    }
    c->processing = 0;
    if (c->closing)
        return;
    /* Keep memory bounded: give back a large buffer once it is empty. */
    connbuf_shrink(c);
    conn_idle_arm(c);
}

/* A connection with nothing going on for quiet_timeout_ms: it holds a slot
 * of max_connections and asks for nothing. */
static void on_quiet_timeout(uv_timer_t *t)
{
    conn *c = t->data;
    char msg[200];
    snprintf(msg, sizeof msg,
             "closed: no request for %u ms (quiet_timeout_ms; a Ping keeps an idle connection "
             "open)",
             c->net->opts.quiet_timeout_ms);
    conn_fail(c, 0, PB_CODE_DEADLINE_EXCEEDED, msg);
}

void conn_idle_arm(conn *c)
{
    net *n = c->net;
    /* During the handshake the timer is the handshake deadline. */
    if (c->closing || c->condemned || c->state == SESSION_HANDSHAKE)
        return;
    bool quiet = c->len == 0 && c->refs == 1 && !c->sub_body; /* nothing in flight */
    if (!quiet)
        c->quiet_since = 0;
    else if (!c->quiet_since)
        c->quiet_since = uv_now(n->loop);
    if (c->len == 0)
        c->frame_since = 0;
    else if (!c->frame_since)
        c->frame_since = uv_now(n->loop);
    /* Bytes behind a Subscribe waiting for its hand-off are not a stalled
     * frame: the server stopped reading, not the client sending. */
    if (c->len > 0 && n->opts.idle_timeout_ms && !c->sub_body) { /* stalled mid-frame */
        /* The sooner of: nothing read for idle_timeout_ms (since the last
         * bytes, not since this call: a write's completion calls it too),
         * or the frame's deadline. */
        uint64_t now = uv_now(n->loop), spent = now - c->frame_since, silent = now - c->last_read;
        uint64_t deadline = frame_deadline_ms(c), idle = n->opts.idle_timeout_ms;
        uint64_t left = spent < deadline ? deadline - spent : 1;
        uint64_t idle_left = silent < idle ? idle - silent : 1;
        uv_timer_start(&c->timer, on_idle_timeout, left < idle_left ? left : idle_left, 0);
    } else if (quiet && n->opts.quiet_timeout_ms)
        uv_timer_start(&c->timer, on_quiet_timeout, n->opts.quiet_timeout_ms, 0);
    else
        uv_timer_stop(&c->timer);
}

void conn_resume(conn *c)
{
    conn_process(c);
    if (!c->closing)
        conn_update_reading(c);
}

void conn_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = s->data;
    if (nread == UV_ENOBUFS && c->rbuf_refused) {
        connbuf_refuse(c); /* max_partial_frame_bytes */
        return;
    }
    if (nread < 0) {
        if (nread != UV_EOF)
            logging_printf(LOG_DEBUG, "connection %s: read: %s", c->peer, uv_strerror((int)nread));
        conn_close(c);
        return;
    }
    if (nread > 0)
        c->last_read = uv_now(c->net->loop);
    if (c->tls) {
        conn_tls_read(c, (const uint8_t *)buf->base, (size_t)nread);
        return;
    }
    c->len += (size_t)nread;
    conn_process(c);
}

/* ------------------------------------------------------------------ */
/* accept */

/* Every slot is taken by open connections: the one quiet the longest
 * (nothing buffered or in flight, conn_idle_arm), if for QUIET_EVICT_MS at
 * least, makes room. One pass over the connections, only when full. */
#define QUIET_EVICT_MS 250
static void make_room_quiet(net *n)
{
    conn *old = NULL;
    for (conn *c = n->conns; c; c = c->next)
        if (!c->retired && c->quiet_since && (!old || c->quiet_since < old->quiet_since))
            old = c;
    uint64_t now = uv_now(n->loop);
    if (!old || now - old->quiet_since < QUIET_EVICT_MS)
        return;
    char msg[240];
    snprintf(msg, sizeof msg,
             "closed for a newer connection: the server is at max_connections = %u and this "
             "connection had asked for nothing for %llu ms",
             n->opts.max_connections, (unsigned long long)(now - old->quiet_since));
    conn_fail(old, 0, PB_CODE_RESOURCE_EXHAUSTED, msg);
}

/* A new connection is coming: if the connections still in their handshake
 * are at their cap, or every connection slot is taken, the oldest of them
 * makes room, so that silent connections cannot keep out a client that
 * says Hello at once. */
static void make_room(net *n)
{
    conn *old = n->hs_head;
    if (!old && n->nlive >= n->opts.max_connections) {
        make_room_quiet(n);
        return;
    }
    if (!old || (n->nhandshaking < n->opts.max_handshaking && n->nlive < n->opts.max_connections))
        return;
    char msg[240];
    if (n->nhandshaking >= n->opts.max_handshaking)
        snprintf(msg, sizeof msg,
                 "closed for a newer connection: %u connections had not completed their "
                 "handshake (max_handshaking = %u) and this was the oldest",
                 n->nhandshaking, n->opts.max_handshaking);
    else
        snprintf(msg, sizeof msg,
                 "closed for a newer connection: the server is at max_connections = %u and this "
                 "connection had not completed its handshake",
                 n->opts.max_connections);
    metrics_conn_refused(METRICS_REFUSED_HANDSHAKE_ROOM);
    conn_fail(old, 0, PB_CODE_RESOURCE_EXHAUSTED, msg);
}

static void on_connection(uv_stream_t *server, int status)
{
    net *n = server->data;
    if (status < 0) {
        logging_printf(LOG_WARN, "accept failed: %s", uv_strerror(status));
        return;
    }
    conn *c = calloc(1, sizeof *c);
    if (!c) {
        logging_printf(LOG_ERROR, "out of memory accepting a connection");
        return;
    }
    make_room(n);
    c->net = n;
    uv_tcp_init(n->loop, &c->tcp);
    uv_timer_init(n->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->refs = 1;
    c->state = SESSION_HANDSHAKE;
    c->next = n->conns;
    if (n->conns)
        n->conns->prev = c;
    n->conns = c;
    n->nconns++;
    n->nlive++;
    metrics_conn_opened();
    c->hs_prev = n->hs_tail;
    if (n->hs_tail)
        n->hs_tail->hs_next = c;
    else
        n->hs_head = c;
    n->hs_tail = c;
    n->nhandshaking++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    snprintf(c->peer, sizeof c->peer, "?");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0)
        hostport_format_sockaddr(c->peer, sizeof c->peer, (struct sockaddr *)&ss);
    uv_tcp_nodelay(&c->tcp, 1);
    if (n->tls && conn_tls_start(c) < 0) {
        conn_close(c);
        return;
    }
    if (n->nlive > n->opts.max_connections) {
        char msg[160];
        snprintf(msg, sizeof msg, "too many connections (max_connections = %u)",
                 n->opts.max_connections);
        metrics_conn_refused(METRICS_REFUSED_MAX_CONNECTIONS);
        conn_fail(c, 0, PB_CODE_RESOURCE_EXHAUSTED, msg);
        return;
    }
    uv_timer_start(&c->timer, on_handshake_timeout, n->opts.handshake_timeout_ms, 0);
    conn_update_reading(c);
}

/* ------------------------------------------------------------------ */

void net_reconfigure(net *n, const net_options *o)
{
    n->opts.max_frame_bytes = o->max_frame_bytes;
    n->opts.max_event_bytes = o->max_event_bytes;
    n->opts.max_batch_events = o->max_batch_events;
    n->opts.max_connections = o->max_connections;
    n->opts.idle_timeout_ms = o->idle_timeout_ms;
    n->opts.handshake_timeout_ms =
        o->handshake_timeout_ms ? o->handshake_timeout_ms : DEFAULT_HANDSHAKE_TIMEOUT_MS;
    n->opts.max_handshaking = o->max_handshaking ? o->max_handshaking : o->max_connections;
    n->opts.router = o->router;
    n->ingest.max_event_bytes = o->max_event_bytes;
    n->ingest.max_batch_events = o->max_batch_events;
    n->ingest.router = o->router;
    n->session.max_frame_bytes = o->max_frame_bytes;
    n->session.max_event_bytes = o->max_event_bytes;
    n->session.idle_timeout_ms = o->idle_timeout_ms;
    n->session.max_batch_events = o->max_batch_events;
}

int net_start(net **out, uv_loop_t *loop, const net_options *opts, char *err, size_t errlen)
{
    net *n = calloc(1, sizeof *n);
    if (!n) {
        snprintf(err, errlen, "out of memory");
        return PB_ENOMEM;
    }
    n->loop = loop;
    n->opts = *opts;
    if (!n->opts.handshake_timeout_ms)
        n->opts.handshake_timeout_ms = DEFAULT_HANDSHAKE_TIMEOUT_MS;
    if (!n->opts.max_handshaking)
        n->opts.max_handshaking = n->opts.max_connections;
    if (!n->opts.reply_queue_total_bytes)
        n->opts.reply_queue_total_bytes = 64u << 20;
    if (!n->opts.max_partial_frame_bytes)
        n->opts.max_partial_frame_bytes = 128u << 20;
    /* One frame of the largest size must always fit. */
    if (n->opts.max_partial_frame_bytes < n->opts.max_frame_bytes)
        n->opts.max_partial_frame_bytes = n->opts.max_frame_bytes;
    n->ingest = (ingest_options){
        .max_event_bytes = opts->max_event_bytes,
        .max_batch_events = opts->max_batch_events,
        .router = opts->router,
        .store = opts->store,
    };
    snprintf(n->version, sizeof n->version, "protobusd %s", PB_VERSION_STRING);
    n->auth = opts->auth;
    n->tls = opts->tls;
    if (n->tls && !(n->tls_raw = malloc(READ_CHUNK))) {
        free(n);
        snprintf(err, errlen, "out of memory");
        return PB_ENOMEM;
    }
    n->session = (session_options){
        .auth_required = opts->auth != NULL,
        .server_name = n->version,
        .max_frame_bytes = opts->max_frame_bytes,
        .max_event_bytes = opts->max_event_bytes,
        .idle_timeout_ms = opts->idle_timeout_ms,
        .max_batch_events = opts->max_batch_events,
        .sub_caps = opts->sub_caps,
        .dedup_window_ms = opts->dedup_window_ms,
        .max_expectations = INGEST_MAX_EXPECTATIONS,
    };
    if (uv_mutex_init(&n->done_lock) < 0) {
        free(n->tls_raw);
        free(n);
        snprintf(err, errlen, "cannot create a mutex");
        return PB_ENOMEM;
    }
    struct sockaddr_storage addr;
    int rc = strchr(opts->host, ':')
                 ? uv_ip6_addr(opts->host, opts->port, (struct sockaddr_in6 *)&addr)
                 : uv_ip4_addr(opts->host, opts->port, (struct sockaddr_in *)&addr);
    if (rc < 0) {
        snprintf(err, errlen, "listen address %s is not a numeric IP address", opts->host);
        goto fail_mutex;
    }
    uv_tcp_init(loop, &n->listener);
    n->listener.data = n;
    rc = uv_tcp_bind(&n->listener, (struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&n->listener, 511, on_connection);
    if (rc < 0) {
        char where[HOSTPORT_SOCKADDR_LEN];
        hostport_format(where, sizeof where, opts->host, opts->port);
        snprintf(err, errlen, "cannot listen on %s: %s", where, uv_strerror(rc));
        uv_close((uv_handle_t *)&n->listener, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
        goto fail_mutex;
    }
    struct sockaddr_storage bound;
    int bl = sizeof bound;
    n->port = opts->port;
    if (uv_tcp_getsockname(&n->listener, (struct sockaddr *)&bound, &bl) == 0)
        n->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                    : ((struct sockaddr_in *)&bound)->sin_port);
    uv_async_init(loop, &n->wake, net_on_wake);
    n->wake.data = n;
    /* libuv starts its pool (UV_THREADPOOL_SIZE threads, 4 by default) on
     * the first work queued: Subscribes and password checks are prepared
     * there. Started now, the daemon's thread count does not grow on the
     * first Subscribe and then stay (a reading of "threads" that only
     * moves with subscriptions). */
    (void)uv_queue_work(loop, &n->pool_warm, pool_warm_noop, NULL);
    if (opts->standby) {
        uv_timer_init(loop, &n->sb_timer);
        n->sb_timer.data = n;
        n->sb_timer_init = 1;
        standby_set_notify(opts->standby, net_standby_notify, n);
    }
    n->accepting = 1;
    *out = n;
    return 0;

fail_mutex:
    uv_mutex_destroy(&n->done_lock);
    free(n->tls_raw);
    free(n);
    return PB_EINVAL;
}

uint16_t net_port(const net *n)
{
    return n->port;
}

void net_stop_accepting(net *n)
{
    if (!n->accepting)
        return;
    n->accepting = 0;
    n->stopping = 1;
    uv_close((uv_handle_t *)&n->listener, NULL);
    for (conn *c = n->conns; c; c = c->next)
        conn_update_reading(c);
}

size_t net_inflight(const net *n)
{
    return n->inflight_batches + n->pending_writes;
}

void net_close(net *n)
{
    net_stop_accepting(n);
    for (conn *c = n->conns; c; c = c->next)
        conn_close(c);
    uv_close((uv_handle_t *)&n->wake, NULL);
    if (n->sb_timer_init) {
        standby_set_notify(n->opts.standby, NULL, NULL);
        uv_close((uv_handle_t *)&n->sb_timer, NULL);
    }
    /* Run the loop until every handle's close callback has freed its conn. */
    uv_run(n->loop, UV_RUN_DEFAULT);
    uv_mutex_destroy(&n->done_lock);
    free(n->tls_raw);
    free(n);
}
