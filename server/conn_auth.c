/*
 * conn_auth - a connection's authentication (auth = required): its Hello's
 * user and password go to auth.c (verified off the loop, refusals delayed);
 * meanwhile the connection reads nothing more and handles none of the
 * frames it already sent (they wait in its buffer, bounded by the read
 * chunk); then either the server Hello and those frames, or
 * UNAUTHENTICATED "authentication failed" and the connection closes. The
 * handshake deadline stops when the Hello has arrived: the delay of a
 * refusal is bounded by auth.c instead.
 *
 * The connection keeps its user (a reference on the acl it came from) for
 * its life; its rights go to ingest (publish) and to the subscription
 * (read) from there.
 *
 * Threads: the loop thread.
 */
#include "net_internal.h"
#include "metrics.h"

#include "acl.h"
#include "auth.h"
#include "frame.h"
#include "logging.h"
#include "pb_errors.h"
#include "sub.h"
#include "tls.h"

#include <stdio.h>
#include <string.h>

static void on_auth_done(void *ctx, acl_user *u)
{
    conn *c = ctx;
    c->auth_req = NULL; /* auth.c frees it */
    if (c->closing || c->condemned)
        return;
    if (!u) {
        metrics_conn_refused(METRICS_REFUSED_AUTH);
        conn_fail(c, c->hello_id, PB_CODE_UNAUTHENTICATED, "authentication failed");
        return;
    }
    acl_ref(u->owner);
    c->user = u;
    logging_printf(LOG_DEBUG, "connection %s: authenticated as user \"%s\"", c->peer, u->name);
    conn_handshake_done(c, c->hello_id, u->name);
    conn_resume(c);
}

void conn_auth_start(conn *c, uint64_t id, const uint8_t *hello, size_t len)
{
    hello_view h;
    char why[300];
    /* session.c parsed it already; only the credentials are wanted here. */
    if (hello_parse(hello, len, &h, why, sizeof why) < 0) {
        conn_fail(c, id, PB_CODE_INVALID_ARGUMENT, "malformed Hello");
        return;
    }
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    memset(&ss, 0, sizeof ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) < 0)
        ss.ss_family = AF_UNSPEC;
    c->hello_id = id;
    uv_timer_stop(&c->timer);
    /* Mutual TLS: a verified client certificate whose CN is a user
     * authenticates as that user, without a password (the Hello may name
     * the same user, or none). */
    const char *cn = c->tls ? tls_peer_cn(c->tls) : NULL;
    acl_user *by_cert = cn ? acl_find(auth_acl(c->net->auth), cn, strlen(cn)) : NULL;
    if (by_cert &&
        (h.user.len == 0 || (h.user.len == strlen(cn) && memcmp(h.user.p, cn, h.user.len) == 0))) {
        logging_printf(LOG_DEBUG, "connection %s: client certificate CN \"%s\" names a user",
                       c->peer, cn);
        on_auth_done(c, by_cert);
        return;
    }
    c->auth_req =
        auth_start(c->net->auth, (const struct sockaddr *)&ss, (const char *)h.user.p, h.user.len,
                   (const char *)h.password.p, h.password.len, on_auth_done, c);
    if (!c->auth_req) {
        conn_fail(c, id, PB_CODE_RESOURCE_EXHAUSTED, "out of memory checking credentials");
        return;
    }
    conn_update_reading(c);
}

void conn_auth_release(conn *c)
{
    auth_cancel(c->auth_req);
    c->auth_req = NULL;
    if (c->user)
        acl_unref(c->user->owner);
    c->user = NULL;
}

const ingest_rights *conn_publish_rights(conn *c, ingest_rights *buf)
{
    if (!c->user)
        return NULL;
    *buf = (ingest_rights){.user = c->user->name, .may_publish = c->user->publish};
    return buf;
}

const sub_rights *conn_read_rights(conn *c, sub_rights *buf)
{
    if (!c->user) {
        if (!c->tls)
            return NULL;
        *buf = (sub_rights){.tls = c->tls};
        return buf;
    }
    *buf = (sub_rights){
        .tls = c->tls,
        .user = c->user->name,
        .allow = c->user->subscribe,
        .nallow = c->user->n_subscribe,
        .deny = c->user->deny_subscribe,
        .ndeny = c->user->n_deny_subscribe,
    };
    return buf;
}

size_t net_users_reloaded(net *n, acl *set)
{
    size_t closed = 0;
    for (conn *c = n->conns; c; c = c->next) {
        if (!c->user || c->closing || c->condemned)
            continue;
        acl_user *u = acl_find(set, c->user->name, strlen(c->user->name));
        if (!u) {
            char msg[160];
            snprintf(msg, sizeof msg, "user \"%s\" no longer exists (configuration reloaded)",
                     c->user->name);
            conn_fail(c, 0, PB_CODE_UNAUTHENTICATED, msg);
            closed++;
            continue;
        }
        acl_ref(set);
        acl_unref(c->user->owner);
        c->user = u;
    }
    return closed;
}
