/*
 * conn - one client connection of the transport (net_internal.h): its
 * lifetime (references: the open handle, each batch in flight, each write),
 * its writes, its replies in request order, and the back-pressure on its
 * reads.
 *
 * Reply order: a connection's replies leave in the order of its requests.
 * Its Publish batches form a FIFO (pub_batch.next_reply); a batch's reply
 * goes once it and every batch before it are done, and a reply that is
 * ready while batches are ahead of it (an Error, a Pong) waits on the list
 * of the last of them (pub_batch.replies_after). Those waiting bytes count
 * in the connection's back-pressure bound, like the kernel's write queue.
 *
 * Back-pressure: while more than max_inflight_bytes (or max_inflight_events
 * events) of publishes wait in the writers' queues, or a connection's unsent replies exceed MAX_PENDING_WRITE,
 * or all connections' unsent replies exceed reply_queue_total_bytes, the
 * loop stops reading the connections that push past it (those with replies
 * unsent), so a fast publisher or one that never reads its acks cannot grow
 * the daemon's memory. A batch counts with its charge (ingest_charge): its
 * bytes and its per-event state, here and in the writers. A reply counts
 * with what it really holds (reply_cost): its bytes, its write request or
 * list entry, and their allocator headers; a 20-byte ack costs ~10 times
 * its size, which counting its bytes alone let grow to hundreds of MiB.
 *
 * Threads: the loop thread only.
 */
#include "net_internal.h"
#include "metrics.h"

#include "frame.h"
#include "logging.h"
#include "pb_errors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct write_req {
    uv_write_t req;
    uv_buf_t buf;
    conn *c;
    size_t cost; /* reply_cost: what it holds */
} write_req;

/* What a reply of len bytes holds while it waits: the frame, the record
 * it waits in (a write request or a list entry), and a malloc header for
 * each (glibc: 16 bytes, rounded to 16). */
static size_t reply_cost(size_t len, size_t record)
{
    return ((len + 16 + 15) & ~(size_t)15) + ((record + 16 + 15) & ~(size_t)15);
}

/* Adds (or, negative, removes) a reply's cost to c's and the total; when
 * the total falls back under its bound, connections paused for it read
 * again. */
static void charge_reply(conn *c, size_t cost, bool add)
{
    net *n = c->net;
    if (add) {
        c->out_cost += cost;
        n->out_cost += cost;
        return;
    }
    c->out_cost -= cost;
    n->out_cost -= cost;
    if (n->out_paused && n->out_cost <= n->opts.reply_queue_total_bytes) {
        n->out_paused = 0;
        for (conn *o = n->conns; o; o = o->next)
            conn_update_reading(o);
    }
}

/* ------------------------------------------------------------------ */
/* connection lifetime */

void conn_leave_handshake(conn *c)
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
void conn_retire(conn *c)
{
    if (c->retired)
        return;
    c->retired = 1;
    c->net->nlive--;
    conn_leave_handshake(c);
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
    metrics_conn_closed();
    conn_auth_release(c);
    conn_tls_release(c);
    connbuf_free(c);
    conn_sub_prep_free(c); /* its work is done: it held a reference */
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

void conn_close(conn *c)
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
void conn_release(conn *c)
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
        conn_idle_arm(c); /* maybe quiet now */
    }
}

static void on_write(uv_write_t *req, int status)
{
    write_req *w = (write_req *)req;
    conn *c = w->c;
    size_t cost = w->cost;
    free(w->buf.base);
    free(w);
    charge_reply(c, cost, false);
    c->writes--;
    c->net->pending_writes--;
    if (status < 0 && !c->closing) {
        logging_printf(LOG_DEBUG, "connection %s: write failed: %s", c->peer, uv_strerror(status));
        conn_close(c);
    }
    conn_release(c);
}

/* Writes buf now (takes ownership; malloc'd), sealed on a TLS connection.
 * With close, the connection closes once every write is done. */
void conn_send(conn *c, uint8_t *buf, size_t len, bool close)
{
    if (c->tls && !c->closing && !(buf = conn_tls_seal(c, buf, &len)))
        return;
    conn_send_raw(c, buf, len, close);
}

void conn_send_raw(conn *c, uint8_t *buf, size_t len, bool close)
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
    w->cost = reply_cost(len, sizeof *w);
    charge_reply(c, w->cost, true);
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
        charge_reply(c, w->cost, false);
        free(buf);
        free(w);
        logging_printf(LOG_DEBUG, "connection %s: write failed: %s", c->peer, uv_strerror(rc));
        conn_close(c);
    }
}

/* A reply in request order (takes ownership of frame): now if no Publish
 * before it is still waiting for its reply, else behind the last such. */
void conn_reply(conn *c, uint8_t *frame, size_t len, bool close)
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
    charge_reply(c, reply_cost(len, sizeof *q), true);
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

void conn_send_error(conn *c, uint64_t id, int code, const char *message, const char *part_name,
                     uint32_t event_index_plus_one, bool close)
{
    size_t len;
    metrics_error_sent(code);
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
void conn_fail(conn *c, uint64_t id, int code, const char *message)
{
    if (c->condemned || c->closing)
        return;
    logging_printf(LOG_INFO, "connection %s: %s; closing it", c->peer, message);
    c->condemned = 1;
    conn_retire(c);
    uv_timer_stop(&c->timer);
    conn_send_error(c, id, code, message, NULL, 0, true);
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

/* ------------------------------------------------------------------ */
/* back-pressure */

static int conn_may_read(const conn *c)
{
    net *n = c->net;
    if (c->closing || c->condemned || c->sub_body || c->auth_req || n->stopping)
        return 0;
    if (c->out_cost > MAX_PENDING_WRITE)
        return 0;
    if (c->out_cost > 0 && n->out_cost > n->opts.reply_queue_total_bytes) {
        n->out_paused = 1; /* charge_reply resumes it */
        return 0;
    }
    if (c->inflight > 0 && net_inflight_over(n))
        return 0;
    return 1;
}

void conn_update_reading(conn *c)
{
    int want = conn_may_read(c);
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, conn_on_alloc, conn_on_read) == 0)
            c->reading = 1;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

/* The reply to a batch whose parts are all done: its PublishAck, or an
 * Error (malloc'd; *len its size); NULL when the publisher asked for no
 * ack, or without memory (then the connection is closed). */
uint8_t *conn_batch_reply(conn *c, pub_batch *b, size_t *len)
{
    uint8_t *frame;
    ingest_error err;
    if (ingest_reply(b, &frame, len, &err) == 0)
        return frame;
    metrics_error_sent(err.code);
    frame = ingest_error_frame(&err, b->frame_id, len);
    if (!frame) {
        logging_printf(LOG_ERROR, "connection %s: out of memory for a reply", c->peer);
        conn_close(c);
    }
    return frame;
}

/* Sends the replies whose turn has come: those of the done batches at the
 * head of the connection's FIFO, each followed by the replies that waited
 * behind it. Frees those batches and drops their references. */
void conn_flush_replies(conn *c)
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
        metrics_ack_ns(metrics_now_ns() - b->received_ns);
        metrics_batch_events(b->nevents);
        uint8_t *frame = conn_batch_reply(c, b, &len);
        if (frame)
            conn_send(c, frame, len, false);
        while (after) {
            queued_reply *q = after;
            after = q->next;
            charge_reply(c, reply_cost(q->len, sizeof *q), false);
            conn_send(c, q->frame, q->len, q->close);
            free(q);
        }
        n->inflight_batches--;
        n->inflight_bytes -= b->charge;
        n->inflight_events -= b->nevents;
        c->inflight -= b->charge;
        ingest_free(b);
        conn_release(c);
    }
}
