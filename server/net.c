/*
 * net - protobusd's libuv loop: connections, their handshake, frames,
 * replies in request order, back-pressure, and the hand-offs: a Publish to
 * ingest (ingest.c validates, routes and queues it; a writer's done() brings
 * the batch back here for its reply), a Subscribe to the subscription pool
 * (sub.c takes the socket). What each frame gets in each state of a
 * connection is session.c's decision; this file carries it out.
 *
 * Threads: the loop thread runs everything in this file except
 * batch_done(), which partition writer threads call; it only counts down
 * the batch and, for the last part, queues the batch for the loop and wakes
 * it with uv_async_send. The loop thread never touches segment files.
 *
 * Connection states (session.h): HANDSHAKE from accept until a valid Hello
 * (deadline handshake_timeout_ms; at most max_handshaking such connections,
 * the oldest closed first when a new one arrives at that cap or at
 * max_connections), then OPEN, until a Subscribe hands the socket over.
 *
 * Reply order: a connection's replies leave in the order of its requests.
 * Its Publish batches form a FIFO (pub_batch.next_reply); a batch's reply
 * goes once it and every batch before it are done, and a reply that is
 * ready while batches are ahead of it (an Error, a Pong) waits on the list
 * of the last of them (pub_batch.replies_after).
 *
 * A batch lives until its reply has been queued for writing.
 *
 * Back-pressure: while more than max_inflight_bytes of publishes wait in the
 * writers' queues, or a connection's unsent replies exceed MAX_PENDING_WRITE,
 * the loop stops reading the connections that push past it, so a fast
 * publisher or one that never reads its acks cannot grow the daemon's memory.
 */
#include "net.h"

#include "frame.h"
#include "grow.h"
#include "hostport.h"
#include "ingest.h"
#include "logging.h"
#include "pb_errors.h"
#include "protobus_version.h"
#include "session.h"
#include "sub.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define READ_CHUNK                   (64 * 1024)
#define MAX_PENDING_WRITE            (8u << 20)
#define DEFAULT_HANDSHAKE_TIMEOUT_MS 10000u

typedef struct conn conn;

struct net {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_async_t wake;
    net_options opts;
    ingest_options ingest;
    session_options session;
    int accepting;
    int stopping;
    uint16_t port;
    uint32_t nconns; /* in the list, closing ones included */
    uint32_t nlive;  /* neither closing nor condemned: what max_connections counts */
    conn *conns;     /* doubly linked list of open connections */
    /* Connections still in their handshake, oldest first. */
    conn *hs_head, *hs_tail;
    uint32_t nhandshaking;
    size_t inflight_batches;
    size_t pending_writes; /* replies queued and not yet written, all connections */
    uint64_t inflight_bytes;
    uv_mutex_t done_lock; /* protects done_head: writers push, the loop pops */
    pub_batch *done_head;
    char version[64];
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* the handshake deadline, then the idle timer */
    net *net;
    conn *prev, *next;
    conn *hs_prev, *hs_next; /* net.hs_* while in the handshake */
    session_state state;
    int refs;              /* the open handle + one per batch and per write in flight */
    int writes;            /* uv_write requests not completed */
    int closing;           /* uv_close called or requested */
    int condemned;         /* a fatal Error is due: read nothing more, close after it */
    int close_after_write; /* the fatal Error is out: close once every write is done */
    int retired;           /* no longer counted in net.nlive */
    int reading;
    int processing; /* inside conn_process */
    uint8_t *buf;   /* bytes received, not yet a whole frame */
    size_t len, cap;
    size_t want;       /* bytes the current frame needs, when known */
    uint64_t inflight; /* bytes of this connection's batches in flight */
    /* Publish batches in request order, and the bytes of replies waiting
     * behind them (replies_after lists). */
    pub_batch *rq_head, *rq_tail;
    struct queued_reply *after_tail; /* last reply waiting behind rq_tail */
    size_t queued_bytes;
    conn *next_flush; /* on_wake's list of connections with replies due */
    int flush_pending;
    /* A Subscribe waiting for this connection's acks and writes to drain
     * before the socket is handed to a subscription thread. */
    uint8_t *sub_body;
    size_t sub_len;
    uint64_t sub_id;
    char peer[64];
};

/* A reply that is ready while Publish batches before it are not. */
typedef struct queued_reply {
    struct queued_reply *next;
    uint8_t *frame; /* malloc'd, delimited */
    size_t len;
    bool close; /* a fatal Error: the connection closes once it is written */
} queued_reply;

typedef struct write_req {
    uv_write_t req;
    uv_buf_t buf;
    conn *c;
} write_req;

static void conn_close(conn *c);
static void conn_maybe_handoff(conn *c);
static void conn_update_reading(conn *c);
static void conn_process(conn *c);

/* ------------------------------------------------------------------ */
/* connection lifetime */

static void hs_remove(conn *c)
{
    if (c->state != SESSION_HANDSHAKE || (!c->hs_prev && c->net->hs_head != c))
        return;
    net *n = c->net;
    if (c->hs_prev)
        c->hs_prev->hs_next = c->hs_next;
    else
        n->hs_head = c->hs_next;
    if (c->hs_next)
        c->hs_next->hs_prev = c->hs_prev;
    else
        n->hs_tail = c->hs_prev;
    c->hs_prev = c->hs_next = NULL;
    n->nhandshaking--;
}

/* The connection stops counting against max_connections and
 * max_handshaking: it is closing, or condemned to close. */
static void conn_retire(conn *c)
{
    if (c->retired)
        return;
    c->retired = 1;
    c->net->nlive--;
    hs_remove(c);
}

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

static void on_timer_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

static void on_tcp_closed(uv_handle_t *h)
{
    conn *c = h->data;
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

static void conn_close(conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    conn_retire(c);
    uv_timer_stop(&c->timer);
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

/* Writes buf now (takes ownership; malloc'd). With close, the connection
 * closes once every write is done. */
static void conn_send(conn *c, uint8_t *buf, size_t len, bool close)
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
    if (close)
        c->close_after_write = 1;
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

/* A reply in request order (takes ownership of frame): now if no Publish
 * before it is still waiting for its reply, else behind the last such. */
static void conn_reply(conn *c, uint8_t *frame, size_t len, bool close)
{
    if (!c->rq_tail) {
        conn_send(c, frame, len, close);
        return;
    }
    queued_reply *q = malloc(sizeof *q);
    if (!q) {
        free(frame);
        logging_printf(LOG_ERROR, "connection %s: out of memory for a reply", c->peer);
        conn_close(c);
        return;
    }
    *q = (queued_reply){.frame = frame, .len = len, .close = close};
    if (c->after_tail)
        c->after_tail->next = q;
    else
        c->rq_tail->replies_after = q;
    c->after_tail = q;
    c->queued_bytes += len;
}

/* An encoded Error frame (malloc'd), or NULL without memory. */
static uint8_t *error_frame(uint64_t id, int code, const char *message, const char *part_name,
                            uint32_t event_index_plus_one, size_t *len)
{
    frame_error e = {
        .code = code,
        .message = message,
        .partition = part_name,
        .event_index_plus_one = event_index_plus_one,
    };
    size_t need = frame_put_error(NULL, 0, id, &e);
    uint8_t *buf = malloc(need);
    if (buf)
        *len = frame_put_error(buf, need, id, &e);
    return buf;
}

static void send_error(conn *c, uint64_t id, int code, const char *message, const char *part_name,
                       uint32_t event_index_plus_one, bool close)
{
    size_t len;
    uint8_t *buf = error_frame(id, code, message, part_name, event_index_plus_one, &len);
    if (!buf) {
        logging_printf(LOG_ERROR, "connection %s: out of memory for a reply", c->peer);
        conn_close(c);
        return;
    }
    conn_reply(c, buf, len, close);
}

/* A failure that ends the connection: say why (after the replies due
 * before it), read nothing more, close once it is written. */
static void fail_conn(conn *c, uint64_t id, int code, const char *message)
{
    if (c->condemned || c->closing)
        return;
    logging_printf(LOG_INFO, "connection %s: %s; closing it", c->peer, message);
    c->condemned = 1;
    conn_retire(c);
    uv_timer_stop(&c->timer);
    send_error(c, id, code, message, NULL, 0, true);
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
    if (c->closing || c->condemned || c->sub_body || n->stopping)
        return 0;
    if (uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp) + c->queued_bytes >
        MAX_PENDING_WRITE)
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

/* An Error for a Publish that ingest refused or could not ack. */
static void send_ingest_error(conn *c, uint64_t id, const ingest_error *e)
{
    send_error(c, id, e->code, e->message, e->partition[0] ? e->partition : NULL,
               e->event_index_plus_one, false);
}

/* The reply to a batch whose parts are all done: its PublishAck, or an
 * Error (malloc'd; *len its size); NULL when the publisher asked for no
 * ack, or without memory (then the connection is closed). */
static uint8_t *batch_reply(conn *c, pub_batch *b, size_t *len)
{
    uint8_t *frame;
    ingest_error err;
    if (ingest_reply(b, &frame, len, &err) == 0)
        return frame;
    frame = error_frame(b->frame_id, err.code, err.message, err.partition[0] ? err.partition : NULL,
                        err.event_index_plus_one, len);
    if (!frame) {
        logging_printf(LOG_ERROR, "connection %s: out of memory for a reply", c->peer);
        conn_close(c);
    }
    return frame;
}

/* Sends the replies whose turn has come: those of the done batches at the
 * head of the connection's FIFO, each followed by the replies that waited
 * behind it. Frees those batches and drops their references. */
static void conn_flush_replies(conn *c)
{
    net *n = c->net;
    while (c->rq_head && c->rq_head->complete) {
        pub_batch *b = c->rq_head;
        queued_reply *after = b->replies_after;
        c->rq_head = b->next_reply;
        if (!c->rq_head) {
            c->rq_tail = NULL;
            c->after_tail = NULL;
        }
        /* Its turn: its reply and those behind it go straight out. */
        size_t len;
        uint8_t *frame = batch_reply(c, b, &len);
        if (frame)
            conn_send(c, frame, len, false);
        while (after) {
            queued_reply *q = after;
            after = q->next;
            c->queued_bytes -= q->len;
            conn_send(c, q->frame, q->len, q->close);
            free(q);
        }
        n->inflight_batches--;
        n->inflight_bytes -= b->bytes_len;
        c->inflight -= b->bytes_len;
        ingest_free(b);
        conn_release(c);
    }
}

static void on_wake(uv_async_t *a)
{
    net *n = a->data;
    uv_mutex_lock(&n->done_lock);
    pub_batch *b = n->done_head;
    n->done_head = NULL;
    uv_mutex_unlock(&n->done_lock);
    /* Mark them all and list their connections before any is freed: a
     * flush frees every done batch at the head of its connection's FIFO,
     * which may be later ones of this list. */
    conn *flush = NULL;
    for (; b; b = b->next_done) {
        conn *c = b->conn;
        b->complete = 1;
        if (!c->flush_pending) {
            c->flush_pending = 1;
            c->refs++; /* keeps c while its flush drops batch references */
            c->next_flush = flush;
            flush = c;
        }
    }
    while (flush) {
        conn *c = flush;
        flush = c->next_flush;
        c->flush_pending = 0;
        conn_flush_replies(c);
        conn_release(c);
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
        /* An empty Publish: nothing to store, answered in its turn. */
        size_t rlen;
        uint8_t *frame = batch_reply(c, b, &rlen);
        ingest_free(b);
        if (frame)
            conn_reply(c, frame, rlen, false);
        return;
    }
    c->refs++;
    c->inflight += len;
    n->inflight_batches++;
    n->inflight_bytes += len;
    if (c->rq_tail)
        c->rq_tail->next_reply = b;
    else
        c->rq_head = b;
    c->rq_tail = b;
    c->after_tail = NULL;
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
    send_error(c, c->sub_id, code, err, NULL, 0, false);
    /* Frames that arrived after the Subscribe are still buffered. */
    conn_process(c);
    conn_update_reading(c);
}

static void handle_subscribe(conn *c, uint64_t id, const uint8_t *body, size_t len)
{
    c->sub_body = malloc(len ? len : 1);
    if (!c->sub_body) {
        send_error(c, id, PB_CODE_RESOURCE_EXHAUSTED, "out of memory", NULL, 0, false);
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

/* The handshake is done: the server's Hello, and the connection is open. */
static void handshake_done(conn *c, uint64_t id, const char *user)
{
    net *n = c->net;
    size_t need = session_put_hello(&n->session, id, user, NULL, 0);
    uint8_t *buf = malloc(need);
    if (!buf) {
        conn_close(c);
        return;
    }
    hs_remove(c);
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
            fail_conn(c, id, a->code, a->message);
        else
            send_error(c, id, a->code, a->message, NULL, 0, false);
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
        handshake_done(c, fv.id, a.user);
        break;
    case SESSION_PUBLISH:
        handle_publish(c, fv.id, fv.body.p, fv.body.len);
        break;
    case SESSION_SUBSCRIBE:
        handle_subscribe(c, fv.id, fv.body.p, fv.body.len);
        break;
    default:
        answer(c, fv.id, &a);
        break;
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

static void on_handshake_timeout(uv_timer_t *t)
{
    conn *c = t->data;
    char msg[160];
    snprintf(msg, sizeof msg, "no Hello within %u ms (handshake_timeout_ms)",
             c->net->opts.handshake_timeout_ms);
    fail_conn(c, 0, PB_CODE_DEADLINE_EXCEEDED, msg);
}

/* Handles every whole frame in the buffer, as far as the connection's
 * state lets it (a Subscribe waiting for its hand-off stops it). */
static void conn_process(conn *c)
{
    net *n = c->net;
    size_t pos = 0;
    /* A Subscribe refused at once calls back in here; the loop below goes
     * on by itself then. */
    if (c->processing)
        return;
    c->processing = 1;
    while (!c->closing && !c->condemned && !c->sub_body) {
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
            fail_conn(c, 0,
                      rc == PB_ETOOBIG ? PB_CODE_RESOURCE_EXHAUSTED : PB_CODE_INVALID_ARGUMENT,
                      msg);
            break;
        }
        c->want = 0;
        handle_frame(c, sp.body.p, sp.body.len);
        pos += sp.used;
    }
    c->processing = 0;
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
    /* The idle timer watches for a client stalled mid-frame; during the
     * handshake the timer is the handshake deadline instead. */
    if (!c->closing && !c->condemned && c->state != SESSION_HANDSHAKE &&
        n->opts.idle_timeout_ms > 0) {
        if (c->len > 0)
            uv_timer_start(&c->timer, on_idle_timeout, n->opts.idle_timeout_ms, 0);
        else
            uv_timer_stop(&c->timer);
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = s->data;
    if (nread < 0) {
        if (nread != UV_EOF)
            logging_printf(LOG_DEBUG, "connection %s: read: %s", c->peer, uv_strerror((int)nread));
        conn_close(c);
        return;
    }
    c->len += (size_t)nread;
    conn_process(c);
}

/* ------------------------------------------------------------------ */
/* accept */

/* A new connection is coming: if the connections still in their handshake
 * are at their cap, or every connection slot is taken, the oldest of them
 * makes room, so that silent connections cannot keep out a client that
 * says Hello at once. */
static void make_room(net *n)
{
    conn *old = n->hs_head;
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
    fail_conn(old, 0, PB_CODE_RESOURCE_EXHAUSTED, msg);
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
    if (n->nlive > n->opts.max_connections) {
        char msg[160];
        snprintf(msg, sizeof msg, "too many connections (max_connections = %u)",
                 n->opts.max_connections);
        fail_conn(c, 0, PB_CODE_RESOURCE_EXHAUSTED, msg);
        return;
    }
    uv_timer_start(&c->timer, on_handshake_timeout, n->opts.handshake_timeout_ms, 0);
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
    if (!n->opts.handshake_timeout_ms)
        n->opts.handshake_timeout_ms = DEFAULT_HANDSHAKE_TIMEOUT_MS;
    if (!n->opts.max_handshaking)
        n->opts.max_handshaking = n->opts.max_connections;
    n->ingest = (ingest_options){
        .max_event_bytes = opts->max_event_bytes,
        .router = opts->router,
        .store = opts->store,
    };
    snprintf(n->version, sizeof n->version, "protobusd %s", PB_VERSION_STRING);
    n->session = (session_options){
        .server_name = n->version,
        .max_frame_bytes = opts->max_frame_bytes,
        .max_event_bytes = opts->max_event_bytes,
        .idle_timeout_ms = opts->idle_timeout_ms,
    };
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
