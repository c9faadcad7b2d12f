/*
 * net - protobusd's libuv loop: connections, frames, replies, back-pressure,
 * and the hand-offs: a Publish to ingest (ingest.c validates, routes and
 * queues it; a writer's done() brings the batch back here for its reply), a
 * Subscribe to the subscription pool (sub.c takes the socket).
 *
 * Threads: the loop thread runs everything in this file except
 * batch_done(), which partition writer threads call; it only counts down
 * the batch and, for the last part, queues the batch for the loop and wakes
 * it with uv_async_send. The loop thread never touches segment files.
 *
 * A batch lives until its reply has been queued for writing.
 *
 * Back-pressure: while more than max_inflight_bytes of publishes wait in the
 * writers' queues, or a connection's unsent replies exceed MAX_PENDING_WRITE,
 * the loop stops reading the connections that push past it, so a fast
 * publisher or one that never reads its acks cannot grow the daemon's memory.
 * A batch counts with its charge (ingest_charge): its bytes and its
 * per-event state, here and in the writers.
 */
#include "net.h"

#include "frame.h"
#include "grow.h"
#include "hostport.h"
#include "ingest.h"
#include "logging.h"
#include "pb_errors.h"
#include "protobus_version.h"
#include "sub.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define READ_CHUNK        (64 * 1024)
#define MAX_PENDING_WRITE (8u << 20)

typedef struct conn conn;

struct net {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_async_t wake;
    net_options opts;
    ingest_options ingest;
    int accepting;
    int stopping;
    uint16_t port;
    uint32_t nconns;
    conn *conns; /* doubly linked list of open connections */
    size_t inflight_batches;
    size_t pending_writes; /* replies queued and not yet written, all connections */
    uint64_t inflight_bytes;
    uv_mutex_t done_lock; /* protects done_head: writers push, the loop pops */
    pub_batch *done_head;
    char version[64];
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t idle;
    net *net;
    conn *prev, *next;
    int refs;              /* the open handle + one per batch and per write in flight */
    int writes;            /* uv_write requests not completed */
    int closing;           /* uv_close called or requested */
    int close_after_write; /* protocol error sent: close once replies are out */
    int reading;
    int paused;   /* reads stopped for back-pressure */
    uint8_t *buf; /* bytes received, not yet a whole frame */
    size_t len, cap;
    size_t want;            /* bytes the current frame needs, when known */
    uint64_t inflight;      /* charge of this connection's batches in flight */
    unsigned limits_logged; /* enum ingest_limit bits already logged for it */
    /* A Subscribe waiting for this connection's acks and writes to drain
     * before the socket is handed to a subscription thread. */
    uint8_t *sub_body;
    size_t sub_len;
    uint64_t sub_id;
    char peer[64];
};

typedef struct write_req {
    uv_write_t req;
    uv_buf_t buf;
    conn *c;
} write_req;

static void conn_close(conn *c);
static void conn_maybe_handoff(conn *c);
static void conn_update_reading(conn *c);

/* ------------------------------------------------------------------ */
/* connection lifetime */

static void conn_unref(conn *c)
{
    if (--c->refs > 0)
        return;
    net *n = c->net;
    if (c->prev)
        c->prev->next = c->next;
    else
        n->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    n->nconns--;
    free(c->buf);
    free(c->sub_body);
    free(c);
}

static void on_idle_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

static void on_tcp_closed(uv_handle_t *h)
{
    conn *c = h->data;
    uv_close((uv_handle_t *)&c->idle, on_idle_closed);
}

static void conn_close(conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_timer_stop(&c->idle);
    uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
}

/* ------------------------------------------------------------------ */
/* writing replies */

/* Drops a batch's or a write's reference; while the connection stays open,
 * this is the moment to resume reading or to finish a pending hand-off. */
static void conn_release(conn *c)
{
    if (c->closing || c->refs == 1) {
        conn_unref(c);
        return;
    }
    c->refs--;
    if (c->close_after_write && c->writes == 0)
        conn_close(c);
    else {
        conn_update_reading(c);
        conn_maybe_handoff(c);
    }
}

static void on_write(uv_write_t *req, int status)
{
    write_req *w = (write_req *)req;
    conn *c = w->c;
    free(w->buf.base);
    free(w);
    c->writes--;
    c->net->pending_writes--;
    if (status < 0 && !c->closing) {
        logging_printf(LOG_DEBUG, "connection %s: write failed: %s", c->peer, uv_strerror(status));
        conn_close(c);
    }
    conn_release(c);
}

/* Takes ownership of buf (malloc'd). */
static void conn_send(conn *c, uint8_t *buf, size_t len)
{
    if (c->closing) {
        free(buf);
        return;
    }
    write_req *w = malloc(sizeof *w);
    if (!w) {
        free(buf);
        logging_printf(LOG_ERROR, "connection %s: out of memory for a reply", c->peer);
        conn_close(c);
        return;
    }
    w->buf = uv_buf_init((char *)buf, (unsigned)len);
    w->c = c;
    c->refs++;
    c->writes++;
    c->net->pending_writes++;
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &w->buf, 1, on_write);
    if (rc < 0) {
        c->refs--;
        c->writes--;
        c->net->pending_writes--;
        free(buf);
        free(w);
        logging_printf(LOG_DEBUG, "connection %s: write failed: %s", c->peer, uv_strerror(rc));
        conn_close(c);
    }
}

static void send_error(conn *c, uint64_t id, int code, const char *message, const char *part_name,
                       uint32_t event_index_plus_one)
{
    frame_error e = {
        .code = code,
        .message = message,
        .partition = part_name,
        .event_index_plus_one = event_index_plus_one,
    };
    size_t need = frame_put_error(NULL, 0, id, &e);
    uint8_t *buf = malloc(need);
    if (!buf) {
        conn_close(c);
        return;
    }
    conn_send(c, buf, frame_put_error(buf, need, id, &e));
}

/* A protocol violation: say why, then close once the error is written. */
static void fail_conn(conn *c, uint64_t id, int code, const char *message)
{
    logging_printf(LOG_INFO, "connection %s: %s; closing it", c->peer, message);
    send_error(c, id, code, message, NULL, 0);
    c->close_after_write = 1;
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

/* ------------------------------------------------------------------ */
/* back-pressure */

static int conn_may_read(const conn *c)
{
    const net *n = c->net;
    if (c->closing || c->close_after_write || c->sub_body || n->stopping)
        return 0;
    if (uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp) > MAX_PENDING_WRITE)
        return 0;
    if (n->inflight_bytes > n->opts.max_inflight_bytes && c->inflight > 0)
        return 0;
    return 1;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void conn_update_reading(conn *c)
{
    int want = conn_may_read(c);
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
            c->reading = 1;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

/* ------------------------------------------------------------------ */
/* publish */

/* Writer thread: the last part of a batch hands it back to the loop. */
static void batch_done(pub_part *part)
{
    pub_batch *b = part->batch;
    if (atomic_fetch_sub(&b->pending, 1) != 1)
        return;
    conn *c = b->conn;
    net *n = c->net;
    uv_mutex_lock(&n->done_lock);
    b->next_done = n->done_head;
    n->done_head = b;
    uv_mutex_unlock(&n->done_lock);
    uv_async_send(&n->wake);
}

/* An Error for a Publish that ingest refused or could not ack. A refusal
 * by a limit is logged once per connection, not once per attempt. */
static void send_ingest_error(conn *c, uint64_t id, const ingest_error *e)
{
    if (e->limit && !(c->limits_logged & e->limit)) {
        c->limits_logged |= e->limit;
        logging_printf(LOG_WARN, "connection %s: publish refused: %s (logged once per connection)",
                       c->peer, e->message);
    }
    if (e->fatal) {
        fail_conn(c, id, e->code, e->message);
        return;
    }
    send_error(c, id, e->code, e->message, e->partition[0] ? e->partition : NULL,
               e->event_index_plus_one);
}

/* The reply to a batch whose parts are all done: its PublishAck, nothing
 * (no_ack), or an Error. */
static void batch_reply(conn *c, pub_batch *b)
{
    uint8_t *frame;
    size_t len;
    ingest_error err;
    if (ingest_reply(b, &frame, &len, &err) < 0)
        send_ingest_error(c, b->frame_id, &err);
    else if (frame)
        conn_send(c, frame, len);
}

static void on_wake(uv_async_t *a)
{
    net *n = a->data;
    uv_mutex_lock(&n->done_lock);
    pub_batch *b = n->done_head;
    n->done_head = NULL;
    uv_mutex_unlock(&n->done_lock);
    while (b) {
        pub_batch *next = b->next_done;
        conn *c = b->conn;
        batch_reply(c, b);
        n->inflight_batches--;
        n->inflight_bytes -= b->charge;
        c->inflight -= b->charge;
        ingest_free(b);
        conn_release(c);
        b = next;
    }
    /* Connections paused for the global bound may read again. */
    if (n->inflight_bytes <= n->opts.max_inflight_bytes)
        for (conn *c = n->conns; c; c = c->next)
            conn_update_reading(c);
}

/* A Publish frame: ingest validates and routes it into a batch and queues
 * its parts with the writers; the reply goes out when they are done. */
static void handle_publish(conn *c, uint64_t id, const uint8_t *body, size_t len)
{
    net *n = c->net;
    pub_batch *b;
    ingest_error err;
    if (ingest_prepare(&n->ingest, id, body, len, batch_done, c, &b, &err) < 0) {
        send_ingest_error(c, id, &err);
        return;
    }
    if (b->nparts == 0) {
        /* An empty Publish: nothing to store, answered at once. */
        batch_reply(c, b);
        ingest_free(b);
        return;
    }
    c->refs++;
    c->inflight += b->charge;
    n->inflight_batches++;
    n->inflight_bytes += b->charge;
    ingest_submit(b);
    conn_update_reading(c);
}

/* ------------------------------------------------------------------ */
/* subscribe: hand the socket to a subscription thread */

static void conn_maybe_handoff(conn *c)
{
    if (!c->sub_body || c->closing)
        return;
    if (c->refs != 1)
        return; /* acks or writes still pending on this connection */
    net *n = c->net;
    uv_os_fd_t fd;
    int dupfd = -1;
    char err[512] = "";
    int code = PB_CODE_INTERNAL;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
        dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dupfd < 0) {
        snprintf(err, sizeof err, "cannot hand the connection over: %s", strerror(errno));
    } else if (sub_start(n->opts.subs, dupfd, c->sub_id, c->sub_body, c->sub_len, &code, err,
                         sizeof err) == 0) {
        free(c->sub_body);
        c->sub_body = NULL;
        /* The subscription thread owns the socket through dupfd now. */
        conn_close(c);
        return;
    } else {
        close(dupfd);
    }
    logging_printf(LOG_INFO, "connection %s: subscription refused: %s", c->peer, err);
    free(c->sub_body);
    c->sub_body = NULL;
    send_error(c, c->sub_id, code, err, NULL, 0);
    conn_update_reading(c);
}

static void handle_subscribe(conn *c, uint64_t id, const uint8_t *body, size_t len)
{
    c->sub_body = malloc(len ? len : 1);
    if (!c->sub_body) {
        send_error(c, id, PB_CODE_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
        return;
    }
    memcpy(c->sub_body, body, len);
    c->sub_len = len;
    c->sub_id = id;
    conn_update_reading(c); /* stops reading: the connection now belongs to the subscription */
    conn_maybe_handoff(c);
}

/* ------------------------------------------------------------------ */
/* frames */

static void handle_hello(conn *c, uint64_t id)
{
    net *n = c->net;
    frame_hello h = {
        .protocol_version = PB_PROTOCOL_VERSION,
        .name = n->version,
        .max_frame_bytes = n->opts.max_frame_bytes,
        .max_event_bytes = n->opts.max_event_bytes,
    };
    size_t need = frame_put_hello(NULL, 0, id, &h);
    uint8_t *buf = malloc(need);
    if (!buf) {
        conn_close(c);
        return;
    }
    conn_send(c, buf, frame_put_hello(buf, need, id, &h));
}

static void handle_frame(conn *c, const uint8_t *body, size_t len)
{
    frame_view fv;
    char err[300];
    if (frame_parse(body, len, &fv, err, sizeof err) < 0) {
        char msg[400];
        snprintf(msg, sizeof msg, "malformed frame: %s", err);
        fail_conn(c, 0, PB_CODE_INVALID_ARGUMENT, msg);
        return;
    }
    switch (fv.kind) {
    case FRAME_HELLO:
        handle_hello(c, fv.id);
        break;
    case FRAME_PUBLISH:
        handle_publish(c, fv.id, fv.body.p, fv.body.len);
        break;
    case FRAME_SUBSCRIBE:
        handle_subscribe(c, fv.id, fv.body.p, fv.body.len);
        break;
    case FRAME_NONE:
        send_error(c, fv.id, PB_CODE_UNIMPLEMENTED,
                   "unknown frame type: the frame has no body this server knows", NULL, 0);
        break;
    default: {
        char msg[200];
        snprintf(msg, sizeof msg, "frame type %s is not accepted from clients",
                 frame_kind_name(fv.kind));
        send_error(c, fv.id, PB_CODE_INVALID_ARGUMENT, msg, NULL, 0);
        break;
    }
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    conn *c = h->data;
    size_t need = c->len + READ_CHUNK;
    if (c->want > c->len && c->want > need)
        need = c->want;
    /* Exactly what the frame in progress needs (its length is checked
     * against max_frame_bytes before it counts here), not doubled. */
    if (need > c->cap) {
        if (grow_resize(&c->buf, need, 1) < 0) {
            out->base = NULL;
            out->len = 0; /* libuv reports UV_ENOBUFS to on_read */
            return;
        }
        c->cap = need;
    }
    out->base = (char *)c->buf + c->len;
    out->len = c->cap - c->len;
}

static void on_idle_timeout(uv_timer_t *t)
{
    conn *c = t->data;
    logging_printf(LOG_INFO,
                   "connection %s: dropped: %zu bytes of an unfinished frame and nothing more "
                   "for %u ms (idle_timeout_ms)",
                   c->peer, c->len, c->net->opts.idle_timeout_ms);
    conn_close(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = s->data;
    net *n = c->net;
    if (nread < 0) {
        if (nread != UV_EOF)
            logging_printf(LOG_DEBUG, "connection %s: read: %s", c->peer, uv_strerror((int)nread));
        conn_close(c);
        return;
    }
    c->len += (size_t)nread;
    size_t pos = 0;
    while (!c->closing && !c->close_after_write && !c->sub_body) {
        frame_split sp;
        char err[256];
        int rc = frame_split_next(c->buf + pos, c->len - pos, n->opts.max_frame_bytes, &sp, err,
                                  sizeof err);
        if (rc == PB_EINCOMPLETE) {
            c->want = sp.need;
            break;
        }
        if (rc < 0) {
            char msg[400];
            snprintf(msg, sizeof msg, "%s: %s (max_frame_bytes = %llu)",
                     rc == PB_ETOOBIG ? "frame refused" : "malformed frame", err,
                     (unsigned long long)n->opts.max_frame_bytes);
            fail_conn(c, 0,
                      rc == PB_ETOOBIG ? PB_CODE_RESOURCE_EXHAUSTED : PB_CODE_INVALID_ARGUMENT,
                      msg);
            break;
        }
        c->want = 0;
        handle_frame(c, sp.body.p, sp.body.len);
        pos += sp.used;
    }
    if (pos > 0) {
        memmove(c->buf, c->buf + pos, c->len - pos);
        c->len -= pos;
    }
    /* Keep memory bounded: give back a large buffer once it is empty. */
    if (c->len == 0 && c->cap > 4 * READ_CHUNK) {
        free(c->buf);
        c->buf = NULL;
        c->cap = 0;
    }
    if (!c->closing && n->opts.idle_timeout_ms > 0) {
        if (c->len > 0)
            uv_timer_start(&c->idle, on_idle_timeout, n->opts.idle_timeout_ms, 0);
        else
            uv_timer_stop(&c->idle);
    }
}

/* ------------------------------------------------------------------ */
/* accept */

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
    c->net = n;
    uv_tcp_init(n->loop, &c->tcp);
    uv_timer_init(n->loop, &c->idle);
    c->tcp.data = c;
    c->idle.data = c;
    c->refs = 1;
    c->next = n->conns;
    if (n->conns)
        n->conns->prev = c;
    n->conns = c;
    n->nconns++;
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
    if (n->nconns > n->opts.max_connections) {
        char msg[160];
        snprintf(msg, sizeof msg, "too many connections (max_connections = %u)",
                 n->opts.max_connections);
        fail_conn(c, 0, PB_CODE_RESOURCE_EXHAUSTED, msg);
        return;
    }
    conn_update_reading(c);
}

/* ------------------------------------------------------------------ */

int net_start(net **out, uv_loop_t *loop, const net_options *opts, char *err, size_t errlen)
{
    net *n = calloc(1, sizeof *n);
    if (!n) {
        snprintf(err, errlen, "out of memory");
        return PB_ENOMEM;
    }
    n->loop = loop;
    n->opts = *opts;
    n->ingest = (ingest_options){
        .max_event_bytes = opts->max_event_bytes,
        .max_batch_events = opts->max_batch_events,
        .router = opts->router,
        .store = opts->store,
    };
    snprintf(n->version, sizeof n->version, "protobusd %s", PB_VERSION_STRING);
    if (uv_mutex_init(&n->done_lock) < 0) {
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
    uv_async_init(loop, &n->wake, on_wake);
    n->wake.data = n;
    n->accepting = 1;
    *out = n;
    return 0;

fail_mutex:
    uv_mutex_destroy(&n->done_lock);
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
    /* Run the loop until every handle's close callback has freed its conn. */
    uv_run(n->loop, UV_RUN_DEFAULT);
    uv_mutex_destroy(&n->done_lock);
    free(n);
}
