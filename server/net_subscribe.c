/*
 * net_subscribe - a Subscribe's way from the loop to a subscription thread:
 * the request is kept while reading stops, prepared on libuv's thread pool
 * (sub_prepare: unpacking, checks, PCRE2/JIT compiling; two at a time,
 * others wait their turn), then, once the connection's earlier replies are
 * written, the socket is handed over (sub_launch) or the refusal sent.
 *
 * Threads: the loop thread, except prep_work (the pool), which reads only
 * the request, the registry's settings and the rights it was given (their
 * account set referenced for it).
 */
#include "net_internal.h"

#include "acl.h"
#include "logging.h"
#include "pb_errors.h"
#include "sub.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Subscribes prepared at once: libuv's pool has UV_THREADPOOL_SIZE threads
 * (4 by default) and password checks take at most AUTH_MAX_VERIFYING (2). */
#define NET_MAX_PREPARING 2

/* A Subscribe being prepared (sub_prepare: unpacking, checks, PCRE2/JIT
 * compiling, ~50 ms at the caps) on libuv's pool rather than on the loop,
 * where one client subscribing in a loop would hold every other client.
 * The work holds a reference on the connection (conn_release when done). */
struct sub_prep {
    uv_work_t work;
    conn *c;
    /* The connection's user's rights, read on the pool: their account set
     * is referenced here while the work runs (a SIGHUP may move the
     * connection to a new set and free the old one meanwhile). fp: their
     * fingerprint; a hand-off under other rights prepares again. */
    sub_rights rights;
    struct acl *acl;
    uint64_t fp;
    bool has_rights;
    bool done;
    struct sub *s; /* prepared; NULL when refused */
    int rc, code;
    char err[512];
};

static void prep_work(uv_work_t *w)
{
    struct sub_prep *p = w->data;
    p->rc = sub_prepare(p->c->net->opts.subs, p->has_rights ? &p->rights : NULL, p->c->sub_body,
                        p->c->sub_len, &p->s, &p->code, p->err, sizeof p->err);
}

static int prep_start(conn *c);

/* A pool turn is free: the oldest waiting connection that is still open
 * takes it; the closed ones drop their reference. */
static void prep_next_turn(net *n)
{
    while (n->prep_head && n->preparing < NET_MAX_PREPARING) {
        conn *c = n->prep_head;
        n->prep_head = c->prep_next;
        if (!n->prep_head)
            n->prep_tail = NULL;
        c->prep_next = NULL;
        c->prep_waiting = 0;
        if (!c->closing && c->sub_body)
            (void)prep_start(c);
        conn_release(c); /* the waiting reference (prep_start took its own) */
    }
}

static void prep_done(uv_work_t *w, int status)
{
    struct sub_prep *p = w->data;
    net *n = p->c->net;
    if (status != 0 && p->rc == 0) { /* cancelled: never ran */
        p->rc = PB_ECLOSED;
        p->code = PB_CODE_UNAVAILABLE;
        snprintf(p->err, sizeof p->err, "subscribe: the server is shutting down");
    }
    p->done = true;
    n->preparing--;
    acl_unref(p->acl); /* the rights are not read any more */
    p->acl = NULL;
    conn_release(p->c); /* the hand-off goes on from there, unless it closed */
    prep_next_turn(n);
}

void conn_sub_prep_free(conn *c)
{
    if (!c->sub_prep)
        return;
    sub_prepared_free(c->sub_prep->s);
    free(c->sub_prep);
    c->sub_prep = NULL;
}

/* Starts preparing c's waiting Subscribe on the pool, or queues c for a
 * turn when NET_MAX_PREPARING are being prepared: 0, or -1 out of memory
 * (a failure to queue the work is a refusal in c->sub_prep, done). */
static int prep_start(conn *c)
{
    net *n = c->net;
    if (n->preparing >= NET_MAX_PREPARING) {
        if (!c->prep_waiting) {
            c->prep_waiting = 1;
            c->refs++;
            if (n->prep_tail)
                n->prep_tail->prep_next = c;
            else
                n->prep_head = c;
            n->prep_tail = c;
        }
        return 0;
    }
    struct sub_prep *p = calloc(1, sizeof *p);
    if (!p)
        return -1;
    p->c = c;
    p->work.data = p;
    sub_rights buf;
    const sub_rights *r = conn_read_rights(c, &buf);
    if (r) {
        p->rights = *r;
        p->has_rights = true;
        if (r->user) {
            p->acl = acl_ref(c->user->owner);
            p->fp = sub_rights_fingerprint(r);
        }
    }
    c->sub_prep = p;
    c->refs++;
    n->preparing++;
    int rc = uv_queue_work(c->net->loop, &p->work, prep_work, prep_done);
    if (rc < 0) {
        c->refs--;
        n->preparing--;
        acl_unref(p->acl);
        p->acl = NULL;
        p->done = true;
        p->rc = PB_ENOMEM;
        p->code = PB_CODE_RESOURCE_EXHAUSTED;
        snprintf(p->err, sizeof p->err, "subscribe: cannot queue its preparation: %s",
                 uv_strerror(rc));
    }
    return 0;
}

/* Hands the socket of a connection whose Subscribe waits to a subscription
 * thread, once it is prepared (prep_start) and its earlier replies are all
 * written: 1 handed over, 0 not yet (or nothing waits), -1 refused (the
 * Error is queued and the connection goes on: the caller processes what
 * was sent after it). */
int conn_handoff(conn *c)
{
    if (!c->sub_body || c->closing)
        return 0;
    char err[512] = "";
    int code = PB_CODE_INTERNAL;
    if (!c->sub_prep && !c->prep_waiting && prep_start(c) < 0) {
        code = PB_CODE_RESOURCE_EXHAUSTED;
        snprintf(err, sizeof err, "subscribe: out of memory");
        goto refused;
    }
    struct sub_prep *p = c->sub_prep;
    if (!p || !p->done || c->refs != 1)
        return 0; /* being prepared, or acks and writes still pending on this connection */
    net *n = c->net;
    sub_rights now;
    const sub_rights *r = conn_read_rights(c, &now);
    if (p->rc == 0 && (r && r->user ? sub_rights_fingerprint(r) : 0) != p->fp) {
        /* A reload changed the user's read rights while it was prepared:
         * prepared again under the new ones (never launched under old). */
        conn_sub_prep_free(c);
        if (prep_start(c) == 0)
            return 0;
        code = PB_CODE_RESOURCE_EXHAUSTED;
        snprintf(err, sizeof err, "subscribe: out of memory");
        goto refused;
    }
    if (p->rc < 0) {
        code = p->code;
        snprintf(err, sizeof err, "%s", p->err);
        conn_sub_prep_free(c);
        goto refused;
    }
    uv_os_fd_t fd;
    int dupfd = -1;
    sub_rights rights;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
        dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    struct sub *s = p->s;
    p->s = NULL;
    conn_sub_prep_free(c);
    if (dupfd < 0) {
        snprintf(err, sizeof err, "cannot hand the connection over: %s", strerror(errno));
        sub_prepared_free(s);
    } else if (sub_launch(n->opts.subs, s, conn_read_rights(c, &rights), dupfd, c->sub_id, c->buf,
                          c->len, &code, err, sizeof err) == 0) {
        /* What the client sent after the Subscribe went with it, and
         * its TLS session too. */
        c->len = 0;
        c->tls = NULL;
        free(c->sub_body);
        c->sub_body = NULL;
        /* The subscription thread owns the socket through dupfd now. */
        conn_close(c);
        return 1;
    } else {
        close(dupfd);
    }
refused:
    /* Once per connection: a client retrying in a loop gets its Errors,
     * the log one line. */
    if (!(c->limits_logged & NET_SUB_REFUSAL_LOGGED)) {
        c->limits_logged |= NET_SUB_REFUSAL_LOGGED;
        logging_printf(LOG_INFO,
                       "connection %s: subscription refused: %s (logged once per "
                       "connection)",
                       c->peer, err);
    }
    free(c->sub_body);
    c->sub_body = NULL;
    conn_send_error(c, c->sub_id, code, err, NULL, 0, false);
    return -1;
}

/* After a reply was written: a waiting Subscribe may go now. */
void conn_maybe_handoff(conn *c)
{
    if (conn_handoff(c) < 0) {
        /* Frames that arrived after the refused Subscribe are buffered. */
        conn_process(c);
        conn_update_reading(c);
    }
}

void conn_handle_subscribe(conn *c, uint64_t id, const uint8_t *body, size_t len)
{
    c->sub_body = malloc(len ? len : 1);
    if (!c->sub_body) {
        conn_send_error(c, id, PB_CODE_RESOURCE_EXHAUSTED, "out of memory", NULL, 0, false);
        return;
    }
    memcpy(c->sub_body, body, len);
    c->sub_len = len;
    c->sub_id = id;
    /* Stops reading: the connection now belongs to the subscription. The
     * hand-off follows once conn_process has consumed this frame, so that
     * the bytes left in the buffer are exactly those sent after it. */
    conn_update_reading(c);
}
