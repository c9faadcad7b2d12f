/*
 * net - the libuv side of protobusd: accepts TCP connections, runs their
 * handshake (session.h decides, net enforces the deadline and the cap on
 * connections still in it), splits the byte stream into Frames, hands
 * Publish batches to ingest and sends their PublishAck/Error frames in
 * request order, answers Ping, and hands connections that subscribe over
 * to the subscription pool.
 *
 * Threads: everything here runs on the loop thread, except the completion
 * callback the writers call (it only queues the batch and wakes the loop).
 */
#ifndef PB_NET_H
#define PB_NET_H

#include "subcaps.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct auth;
struct router;
struct tls_ctx;
struct store;
struct sub_registry;

typedef struct net net;

typedef struct net_options {
    const char *host; /* numeric address to listen on */
    uint16_t port;    /* 0 = any free port (see net_port) */
    uint64_t max_frame_bytes;
    uint64_t max_event_bytes;
    uint32_t max_batch_events; /* events per Publish (ingest_options) */
    sub_caps sub_caps;         /* a Subscribe's caps, announced in the Hello (session.h) */
    uint32_t dedup_window_ms;  /* announced in Hello.limits; 0: no dedup */
    uint32_t max_connections;
    uint32_t idle_timeout_ms;         /* drop a client stalled in the middle of a frame */
    uint32_t quiet_timeout_ms;        /* close a connection with nothing in flight this long;
                                         0: never */
    uint32_t handshake_timeout_ms;    /* a connection's Hello must arrive within this; 0: 10 s */
    uint32_t max_handshaking;         /* connections before their Hello (oldest closed first);
                                         0: max_connections */
    uint64_t max_inflight_bytes;      /* publish charge (ingest_charge) in the writers' queues
                                         before reads pause */
    uint32_t max_inflight_events;     /* events of those batches before reads pause; 0: no
                                         bound (small events reach it first) */
    uint64_t reply_queue_total_bytes; /* unsent replies of all connections (with their
                                         allocations) before the reads of those with
                                         some pause; 0: 64 MiB */
    uint64_t max_partial_frame_bytes; /* receive buffers of unfinished frames, all
                                         connections (at least max_frame_bytes);
                                         0: 128 MiB */
    struct router *router;
    struct store *store;
    struct sub_registry *subs;
    /* auth = required: every connection authenticates in its Hello
     * (auth.h); NULL: every connection is anonymous. */
    struct auth *auth;
    /* TLS for every connection (tls.h); NULL: plain TCP. */
    struct tls_ctx *tls;
    /* A hot standby's primary (HOST:PORT): publishes are refused with
     * FAILED_PRECONDITION naming it; NULL: publishes are taken. */
    const char *follow;
    /* min_standby_acks = 1 (standby.h): a stored publish is acknowledged
     * once the standby's ReplicaAck covers it; NULL: at once. */
    struct standby *standby;
} net_options;

/* Binds and listens; err names the address and the reason on failure. */
int net_start(net **out, uv_loop_t *loop, const net_options *opts, char *err, size_t errlen);

/* The port actually bound (useful with port 0). */
uint16_t net_port(const net *n);

/* First step of a graceful stop: close the listener and stop reading from
 * every connection, so no new work arrives. Batches already handed to the
 * writers still complete and their acks are still written. */
void net_stop_accepting(net *n);

/* Publish batches handed to writers, plus replies queued but not yet
 * written: the graceful stop waits for this to reach zero. */
size_t net_inflight(const net *n);

/* SIGHUP (reload.c), on the loop thread: from now on, the limits of o
 * (max_frame_bytes, max_event_bytes, max_batch_events, max_connections,
 * idle_timeout_ms, handshake_timeout_ms, max_handshaking) and its router
 * are used; open connections stay (what they send next meets the new
 * limits; a Hello answered before announced the old ones). The caller frees
 * the old router afterwards: nothing keeps a pointer to it. Other fields
 * of o are ignored (they need a restart). */
void net_reconfigure(net *n, const net_options *o);

struct acl;
/* The [user] sections were reloaded (security.c): every open connection's
 * user is replaced by the user of the same name in set (its new rights
 * apply to what it publishes next); a connection whose user is gone is
 * closed with UNAUTHENTICATED. Returns how many were closed. */
size_t net_users_reloaded(net *n, struct acl *set);

/* Closes every connection and frees. The loop must then run until its
 * handles are closed (uv_run) before it is closed. */
void net_close(net *n);

#endif
