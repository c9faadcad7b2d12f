/*
 * net_internal - what the two halves of the transport share: the net and
 * conn structs and the calls between them. net.c runs the loop (accept,
 * the handshake and its caps, frames, the hand-off to the subscription
 * pool); net_publish.c is a Publish's way to ingest and back to its reply
 * (the writers' done, the standby wait); conn.c is one connection's life,
 * its writes and its replies in request order, and the back-pressure on
 * its reads; conn_auth.c is a connection's authentication (auth =
 * required). Nothing outside the transport's files (net*.c, conn*.c)
 * includes this header; everyone else uses net.h.
 *
 * Threads: the loop thread (see net.h).
 */
#ifndef PB_NET_INTERNAL_H
#define PB_NET_INTERNAL_H

#include "broker.h"
#include "ingest.h"
#include "net.h"
#include "session.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* A connection's unsent replies (written and not yet taken by the kernel,
 * plus those waiting for their turn), counted with their allocations
 * (conn.c, reply_cost), above this pause its reads. */
#define MAX_PENDING_WRITE (8u << 20)

typedef struct conn conn;
struct sub_rights;
struct acl_user;
struct auth_req;
struct tls_ctx;
struct tls_conn;

struct net {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_work_t pool_warm; /* starts libuv's pool at start-up (net_start) */
    /* Subscribes being prepared on the pool (at most NET_MAX_PREPARING, so
     * that password checks always find a pool thread), and the connections
     * waiting for a turn, oldest first, each holding a reference. */
    uint32_t preparing;
    conn *prep_head, *prep_tail;
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
    uint64_t inflight_events; /* events of the batches counted in inflight_bytes */
    uint64_t out_cost;    /* unsent replies of every connection, with their allocations */
    uint64_t rbuf_bytes;  /* receive buffers of every connection (connbuf.c) */
    int out_paused;       /* a connection stopped reading for reply_queue_total_bytes */
    struct auth *auth;    /* auth = required; NULL: every connection is anonymous */
    struct tls_ctx *tls;  /* tls_cert set: every connection speaks TLS */
    uint8_t *tls_raw;     /* TLS: what a read brings, before it is decrypted (loop thread) */
    uv_mutex_t done_lock; /* protects done_head: writers push, the loop pops */
    pub_batch *done_head;
    /* Synchronous standby mode (standby.h): done batches waiting for the
     * standby's ReplicaAck, oldest first, and the timer that re-checks them. */
    pub_batch *sb_head, *sb_tail;
    uv_timer_t sb_timer;
    int sb_timer_init;
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
    int processing;       /* inside conn_process */
    int rbuf_refused;     /* connbuf_alloc refused to grow the buffer (budget) */
    int adoptable;        /* conn_process: the frame being handled is alone in buf */
    int adopted;          /* ... and went to its batch with buf (connbuf_adopted) */
    uint64_t quiet_since; /* uv_now when it last became quiet (conn_idle_arm); 0: busy */
    uint8_t *buf;         /* bytes received, not yet a whole frame */
    size_t len, cap;
    size_t want;       /* bytes the current frame needs, when known */
    uint64_t frame_since; /* uv_now when the unfinished frame's first bytes were seen; 0: none */
    uint64_t last_read;   /* uv_now of the last bytes read from the socket */
    uint64_t inflight; /* charge of this connection's batches in flight */
#define NET_SUB_REFUSAL_LOGGED (1u << 16)
    unsigned limits_logged; /* enum ingest_limit bits already logged for it, and
                               NET_SUB_REFUSAL_LOGGED */
    /* Publish batches in request order, and the bytes of replies waiting
     * behind them (replies_after lists). */
    pub_batch *rq_head, *rq_tail;
    struct queued_reply *after_tail; /* last reply waiting behind rq_tail */
    size_t out_cost;  /* its unsent replies (written or waiting), with their allocations */
    conn *next_flush; /* on_wake's list of connections with replies due */
    int flush_pending;
    /* A Subscribe waiting for this connection's acks and writes to drain
     * before the socket is handed to a subscription thread. */
    uint8_t *sub_body;
    size_t sub_len;
    uint64_t sub_id;
    /* That Subscribe unpacked and compiled on libuv's pool (net.c), then
     * handed over with it; NULL: not started yet. */
    struct sub_prep *sub_prep;
    conn *prep_next; /* in net.prep_head's list while waiting for a turn */
    int prep_waiting;
    /* auth = required: the Hello's credentials being checked (reading and
     * frames wait meanwhile), then the user it is authenticated as, with a
     * reference on user->owner; NULL: anonymous (auth = none). */
    struct auth_req *auth_req;
    uint64_t hello_id;
    struct acl_user *user;
    struct tls_conn *tls; /* TLS session (conn_tls.c); NULL: plain TCP, or handed over */
    char peer[64];
};

/* A reply that is ready while Publish batches before it are not. */
typedef struct queued_reply {
    struct queued_reply *next;
    uint8_t *frame; /* malloc'd, delimited */
    size_t len;
    bool close; /* a fatal Error: the connection closes once it is written */
} queued_reply;

/* --- conn.c ------------------------------------------------------------ */

/* Takes c off the list of connections in their handshake (if it is). */
void conn_leave_handshake(conn *c);
/* c no longer counts against max_connections and max_handshaking. */
void conn_retire(conn *c);
/* Closes c's handles; it is freed once nothing refers to it. */
void conn_close(conn *c);
/* Drops a batch's or a write's reference; while c stays open, resumes
 * reading or finishes a waiting hand-off. */
void conn_release(conn *c);
/* Writes frame now (takes it; malloc'd); with close, c closes once every
 * write is done. */
/* Handles every whole frame in c's buffer, as far as its state lets it (net.c). */
void conn_process(conn *c);
/* A Subscribe (net_subscribe.c): kept, reading stopped, until prepared and
 * handed over; conn_handoff goes as far as it can now: 1 handed over, 0
 * not yet (or nothing waits), -1 refused (the Error is queued). */
void conn_handle_subscribe(conn *c, uint64_t id, const uint8_t *body, size_t len);
int conn_handoff(conn *c);
/* Frees a finished Subscribe preparation still attached to c. */
void conn_sub_prep_free(conn *c);
void conn_send(conn *c, uint8_t *frame, size_t len, bool close);
/* conn_send of bytes as they are (TLS records already sealed). */
void conn_send_raw(conn *c, uint8_t *bytes, size_t len, bool close);
/* A reply in request order (takes frame): now, or behind the replies of
 * Publish batches before it. */
void conn_reply(conn *c, uint8_t *frame, size_t len, bool close);
/* An Error reply in request order. */
void conn_send_error(conn *c, uint64_t id, int code, const char *message, const char *part_name,
                     uint32_t event_index_plus_one, bool close);
/* A failure that ends c: the Error (after the replies due before it), no
 * more reading, closed once written. */
void conn_fail(conn *c, uint64_t id, int code, const char *message);
/* The reply to a batch whose parts are all done: its PublishAck, or an
 * Error (malloc'd; *len its size); NULL when the publisher asked for no
 * ack, or without memory (then c is closed). */
uint8_t *conn_batch_reply(conn *c, pub_batch *b, size_t *len);
/* Reads or not, as the back-pressure bounds allow. */
void conn_update_reading(conn *c);
/* Sends the replies whose turn has come (done batches at the head of c's
 * FIFO, each followed by what waited behind it) and frees those batches. */
void conn_flush_replies(conn *c);

/* --- connbuf.c --------------------------------------------------------- */

/* The room for the next read (libuv's alloc callback): grows c->buf as
 * bytes arrive, within max_partial_frame_bytes; len 0 when refused (then
 * c->rbuf_refused is set) or out of memory. */
void connbuf_alloc(conn *c, uv_buf_t *out);
/* After a refusal: RESOURCE_EXHAUSTED naming the budget, c closes. */
void connbuf_refuse(conn *c);
/* Grows c->buf to hold cap bytes (conn_tls.c's decryption): 0; PB_ETOOBIG
 * past max_partial_frame_bytes (then connbuf_refuse); PB_ENOMEM. */
int connbuf_reserve(conn *c, size_t cap);
/* Gives a large, empty buffer back. */
void connbuf_shrink(conn *c);
/* Frees the buffer (and its count). */
void connbuf_free(conn *c);
/* Whether the buffer holds one whole frame of frame_bytes and nothing
 * else, large enough to be worth handing to a batch as it is. */
bool connbuf_adoptable(const conn *c, size_t frame_bytes);
/* The buffer went to a batch (ingest_prepare_adopt): the connection takes
 * a new one (if the budget allows) and sets c->adopted for conn_process. */
void connbuf_adopted(conn *c);
/* --- conn_tls.c --------------------------------------------------------- */

/* A new connection on a TLS listener: its session. 0 or -1 (no memory). */
int conn_tls_start(conn *c);
/* Ciphertext a read brought: decrypted into c->buf (the handshake driven,
 * its answers written), then the frames handled. A peer that does not
 * speak TLS, or a failed handshake, closes c. */
void conn_tls_read(conn *c, const uint8_t *raw, size_t n);
/* plain (taken) sealed for the socket: the ciphertext (malloc'd; *len its
 * size), or NULL after closing c (TLS not established, no memory). */
uint8_t *conn_tls_seal(conn *c, uint8_t *plain, size_t *len);
/* c is being freed. */
void conn_tls_release(conn *c);

/* --- conn_auth.c -------------------------------------------------------- */

/* A valid Hello (frame id) on a server that authenticates: checks its
 * credentials; the server Hello, or UNAUTHENTICATED and close, follows. */
void conn_auth_start(conn *c, uint64_t id, const uint8_t *hello, size_t len);
/* c is being freed: cancels a check in progress, drops the user. */
void conn_auth_release(conn *c);
/* The rights of c's user, for ingest and the subscription (NULL: none
 * apply). The pointers stay valid while c keeps its user. */
const struct ingest_rights *conn_publish_rights(conn *c, struct ingest_rights *buf);
const struct sub_rights *conn_read_rights(conn *c, struct sub_rights *buf);

/* --- net.c ------------------------------------------------------------- */

/* The handshake is done: the server's Hello (answering frame id, naming
 * user), and c is open. */
void conn_handshake_done(conn *c, uint64_t id, const char *user);
/* Handles the frames buffered while c waited, and reads again. */
void conn_resume(conn *c);

/* libuv's read callbacks for a connection. */
void conn_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out);
void conn_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
/* A Subscribe waiting for c's replies to drain may be handed over now. */
void conn_maybe_handoff(conn *c);
/* Starts or stops c's timer for its present state: stalled in the middle
 * of a frame (idle_timeout_ms), or quiet (quiet_timeout_ms: nothing
 * buffered, nothing in flight, no subscription waiting). */
void conn_idle_arm(conn *c);

/* --- net_publish.c ------------------------------------------------------ */

/* A Publish frame (id, body): ingest validates and routes it into a batch
 * and queues its parts with the writers; the reply goes out when they are
 * done. */
void conn_handle_publish(conn *c, uint64_t id, const uint8_t *body, size_t len);
/* n->wake's callback: the batches the writers finished (and, in
 * synchronous standby mode, those the standby's acks settled) get their
 * replies. */
void net_on_wake(uv_async_t *a);
/* The standby's notify callback (standby_set_notify; ctx is the net): a
 * replication thread saw a ReplicaAck, the loop re-checks. */
void net_standby_notify(void *ctx);

/* The publishes waiting for the writers are past either bound (bytes, or
 * events: max_inflight_events; conn.c's back-pressure). */
static inline bool net_inflight_over(const net *n)
{
    return n->inflight_bytes > n->opts.max_inflight_bytes ||
           (n->opts.max_inflight_events && n->inflight_events > n->opts.max_inflight_events);
}

#endif
