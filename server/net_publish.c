/*
 * net_publish - a Publish's way through the loop: handed to ingest (which
 * validates, routes and queues it with the partition writers), back from
 * the writers when the last part of its batch is done (batch_done, then
 * net_on_wake on the loop), held in synchronous standby mode until the
 * standby's ReplicaAck covers it or standby_timeout_ms is up, and then its
 * reply flushed in its connection's request order (conn.c). The rest of
 * the loop (accept, the handshake, frames, the subscription hand-off) is
 * net.c.
 *
 * Threads: the loop thread runs everything in this file except
 * batch_done(), which partition writer threads call, and
 * net_standby_notify(), which a replication thread calls; both only queue
 * or wake the loop with uv_async_send.
 */
#include "net_internal.h"

#include "logging.h"
#include "metrics.h"
#include "partition.h"
#include "pb_errors.h"
#include "standby.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

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
    size_t len;
    uint8_t *buf = ingest_error_frame(e, id, &len);
    if (!buf) {
        logging_printf(LOG_ERROR, "connection %s: out of memory for a reply", c->peer);
        conn_close(c);
        return;
    }
    conn_reply(c, buf, len, false);
}

/* Marks b complete and lists its connection for a flush. */
static void batch_complete(pub_batch *b, conn **flush)
{
    conn *c = b->conn;
    b->complete = 1;
    if (!c->flush_pending) {
        c->flush_pending = 1;
        c->refs++; /* keeps c while its flush drops batch references */
        c->next_flush = *flush;
        *flush = c;
    }
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Synchronous standby mode: may b's reply go now? Yes when the standby's
 * ReplicaAck covers every stored event of it, or its time is up (then per
 * standby_timeout: refused, or acknowledged on this copy alone). */
static bool standby_settled(net *n, pub_batch *b, uint64_t now)
{
    int how = 0; /* metrics_standby_outcome */
    for (uint32_t i = 0; i < b->nparts; i++) {
        pub_part *p = &b->parts[i];
        if (p->status != 0 || p->count == 0)
            continue;
        const char *name = partition_name(p->partition);
        if (standby_covers(n->opts.standby, name, p->last_offset))
            continue;
        if (now < b->standby_deadline_ms)
            return false;
        if (standby_policy(n->opts.standby) == STANDBY_LOCAL) {
            standby_note_local(n->opts.standby, name);
            how = 1;
        } else {
            p->status = PUB_STANDBY_TIMEOUT;
            how = 2;
        }
    }
    metrics_standby_outcome(how);
    return true;
}

/* Re-checks the waiting batches (oldest first, each connection's replies
 * stay in order since a reply waits for the batches before it). */
static void standby_recheck(net *n, conn **flush)
{
    uint64_t now = now_ms();
    pub_batch **link = &n->sb_head, *prev = NULL;
    while (*link) {
        pub_batch *b = *link;
        if (!standby_settled(n, b, now)) {
            prev = b;
            link = &b->next_standby;
            continue;
        }
        *link = b->next_standby;
        batch_complete(b, flush);
    }
    n->sb_tail = prev;
    if (!n->sb_head && n->sb_timer_init)
        uv_timer_stop(&n->sb_timer);
}

static void flush_all(net *n, conn *flush);

static void on_standby_timer(uv_timer_t *t)
{
    net *n = t->data;
    conn *flush = NULL;
    standby_recheck(n, &flush);
    flush_all(n, flush);
}

/* Called by a replication thread after a ReplicaAck (standby.h). */
void net_standby_notify(void *ctx)
{
    net *n = ctx;
    uv_async_send(&n->wake);
}

/* Once per batch, before it is first checked: each part's highest offset
 * (its events are in offset order but a duplicate's is the original's). */
static void standby_mark_last(pub_batch *b)
{
    for (uint32_t i = 0; i < b->nparts; i++) {
        pub_part *p = &b->parts[i];
        p->last_offset = 0;
        for (uint32_t k = 0; k < p->count; k++)
            if (b->events[p->events[k]].offset > p->last_offset)
                p->last_offset = b->events[p->events[k]].offset;
    }
}

static void standby_park(net *n, pub_batch *b)
{
    b->next_standby = NULL;
    if (n->sb_tail)
        n->sb_tail->next_standby = b;
    else
        n->sb_head = b;
    n->sb_tail = b;
    if (!uv_is_active((uv_handle_t *)&n->sb_timer))
        uv_timer_start(&n->sb_timer, on_standby_timer, 10, 10);
}

void net_on_wake(uv_async_t *a)
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
    uint64_t now = 0;
    if (n->opts.standby) {
        standby_recheck(n, &flush);
        now = now_ms();
    }
    for (pub_batch *next; b; b = next) {
        next = b->next_done;
        if (n->opts.standby) {
            b->standby_deadline_ms = now + standby_timeout_ms(n->opts.standby);
            standby_mark_last(b);
        }
        if (n->opts.standby && !standby_settled(n, b, now))
            standby_park(n, b);
        else
            batch_complete(b, &flush);
    }
    flush_all(n, flush);
}

static void flush_all(net *n, conn *flush)
{
    while (flush) {
        conn *c = flush;
        flush = c->next_flush;
        c->flush_pending = 0;
        conn_flush_replies(c);
        conn_release(c);
    }
    /* Connections paused for the global bound may read again. */
    if (!net_inflight_over(n))
        for (conn *c = n->conns; c; c = c->next)
            conn_update_reading(c);
}

/* A Publish frame: ingest validates and routes it into a batch and queues
 * its parts with the writers; the reply goes out when they are done. */
void conn_handle_publish(conn *c, uint64_t id, const uint8_t *body, size_t len)
{
    net *n = c->net;
    pub_batch *b;
    ingest_error err;
    ingest_rights rights;
    if (n->opts.follow) {
        memset(&err, 0, sizeof err);
        err.code = PB_CODE_FAILED_PRECONDITION;
        snprintf(err.message, sizeof err.message,
                 "this server is a standby of %s: publish to the primary (or promote this "
                 "standby: restart it without --follow / [server] follow)",
                 n->opts.follow);
        send_ingest_error(c, id, &err);
        return;
    }
    /* A frame alone in its receive buffer: the batch takes the buffer
     * (its events point into it) instead of a copy of the frame. */
    void *adopt = c->adoptable ? c->buf : NULL;
    if (ingest_prepare_adopt(&n->ingest, conn_publish_rights(c, &rights), id, body, len, adopt,
                             batch_done, c, &b, &err) < 0) {
        send_ingest_error(c, id, &err);
        return;
    }
    if (adopt)
        connbuf_adopted(c);
    if (b->nparts == 0) {
        /* An empty Publish: nothing to store, answered in its turn. */
        size_t rlen;
        uint8_t *frame = conn_batch_reply(c, b, &rlen);
        ingest_free(b);
        if (frame)
            conn_reply(c, frame, rlen, false);
        return;
    }
    c->refs++;
    c->inflight += b->charge;
    n->inflight_batches++;
    n->inflight_bytes += b->charge;
    n->inflight_events += b->nevents;
    if (c->rq_tail)
        c->rq_tail->next_reply = b;
    else
        c->rq_head = b;
    c->rq_tail = b;
    c->after_tail = NULL;
    ingest_submit(b);
    conn_update_reading(c);
}
