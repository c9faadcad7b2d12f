/*
 * client - libprotobus internals: the pb_client itself and its connection
 * layer (client.c: connecting, Hello, socket I/O, frame reading, error
 * reporting), on which publish.c (batching, acks) and subscribe.c
 * (Subscribe, the event iterator) build; lifecycle.c, on top, creates and
 * frees it. Not installed: library users see only protobus.h.
 *
 * Threads: whichever thread calls into the pb_client (one at a time).
 */
#ifndef PB_CLIENT_H
#define PB_CLIENT_H

#include "frame.h"
#include "grow.h"
#include "protobus.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CLIENT_MSG_MAX 512
/* Frame size limit before the server's Hello says otherwise. */
#define CLIENT_DEFAULT_FRAME_MAX (1u << 20)
/* The most bytes a frame's length prefix takes (a 64-bit varint). */
#define CLIENT_FRAME_PREFIX_MAX 10u

/* A batch sent and not yet answered. */
typedef struct inflight_batch {
    uint64_t frame_id;
    uint64_t first_event; /* publish sequence number of its first event */
    uint32_t count;
} inflight_batch;

/* A Publish.expect entry of the batch being built (pb_client_expect_last). */
typedef struct client_expect {
    char *topic; /* owned */
    bool none;
    uint64_t offset;
} client_expect;

struct pb_client {
    int fd;
    /* TLS (client/tls.c): the session over fd, and its context; NULL:
     * plain TCP. */
    struct ssl_st *ssl;
    struct ssl_ctx_st *ssl_ctx;
    pb_client_options opts;
    char *name; /* copy of opts.name */
    char address[300];

    uint64_t max_frame_bytes; /* from the server's Hello (0 = not given) */
    uint64_t max_event_bytes;
    uint32_t max_batch_events; /* Hello.limits: events per Publish (0 = not given) */
    char *server_name;
    uint64_t recv_max; /* largest incoming frame body accepted */
    uint64_t next_id;

    /* A failure that ended the connection: every later call returns it. */
    int sticky;
    char msg[CLIENT_MSG_MAX];

    /* The last server Error frame. */
    pb_server_error serr;
    char *serr_message;
    char *serr_partition;
    bool serr_pending; /* refused batch not yet reported by pb_client_publish */

    /* Receive buffer: frames are split from rbuf[rstart..rend). Bytes are
     * compacted only when reading more, at the start of a public call, so
     * views handed out by the previous frame stay valid until then. */
    uint8_t *rbuf;
    size_t rcap, rstart, rend;
    /* The last read, made by a timeout-0 pb_client_next, was short (plain
     * TCP): the socket was empty then; the timeout-0 call that runs out of
     * frames after it returns without reading again (once). */
    bool read_short;

    /* Send buffer: one assembled frame being written. */
    uint8_t *obuf;
    size_t ocap, olen, ooff;

    /* Publishing: the current batch's encoded events (bodies, back to back). */
    uint8_t *ebuf;
    size_t ecap, elen;
    uint32_t *elens;
    uint32_t ecount;
    size_t elens_cap;
    size_t batch_ub;       /* upper bound of the batch's Publish body bytes */
    uint64_t seq;          /* events accepted so far */
    uint64_t batch_first;  /* sequence number of the current batch's first event */
    client_expect *expect; /* the current batch's expectations */
    uint32_t nexpect;
    size_t expect_cap;
    char *serr_expect_topic; /* pb_server_error.expect_topic's copy */

    /* Batches in flight, oldest first: a ring of inflight_cap entries from
     * inflight_head. Protocol v1 answers them in this order. */
    inflight_batch *inflight;
    uint32_t inflight_cap, ninflight, inflight_head;

    /* Positions of the events since the last completed flush. */
    pb_position *pos;
    size_t pos_len, pos_cap;
    uint64_t pos_base;    /* sequence number of pos[0] */
    bool pos_reset;       /* the last flush completed: start a new window */
    bool flush_refused;   /* a batch since the last flush was refused */
    pb_position *scratch; /* per-batch positions when there is no window */
    size_t scratch_cap;

    /* Interned partition names (pointers stay valid until close). */
    char **parts;
    size_t nparts, parts_cap;
    uint32_t *ptab; /* open addressing: index+1 into parts, 0 = empty */
    size_t ptab_cap;
    const char **ack_names; /* per PublishAck: its name list, interned */
    size_t ack_names_cap;

    /* Subscribing. */
    bool subscribed;
    bool caught_up; /* the CaughtUp marker came */
    uint64_t sub_id;
    pb_subscribed_partition *subparts; /* from Subscribed; names in subnames */
    size_t nsubparts;
    char *subnames;
    char *sbuf; /* NUL-terminated copies of a received event's strings */
    size_t scap;
    pb_tag_view *tagv;
    size_t tagv_cap;
    bool events_unscanned; /* client_events_unscanned */
};

/* Monotonic milliseconds, for deadlines. */
int64_t client_now_ms(void);
/* now + timeout_ms, or -1 (no deadline) when timeout_ms < 0. */
int64_t client_deadline(int timeout_ms);

/* Formats c->msg; returns code (so `return client_fail(c, PB_EX, ...)`). */
int client_fail(pb_client *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Like client_fail, and makes the failure sticky (the connection is dead). */
int client_die(pb_client *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * Waits until the fd is readable (and, with want_write, writable) or the
 * deadline passes. Returns the poll revents (POLLIN/POLLOUT/POLLHUP...),
 * 0 at the deadline, or a negated errno.
 */
int client_poll(pb_client *c, bool want_write, int64_t deadline);

/*
 * Reads what the socket has (non-blocking) into rbuf, compacting it first.
 * Returns bytes read (> 0), 0 if nothing was there, or a sticky error
 * (PB_ECLOSED when the server closed).
 */
int client_read(pb_client *c);

/*
 * The next complete frame in rbuf: 1 with *f set (views into rbuf, valid
 * until the next client_read), 0 if none is complete, or a sticky error.
 */
int client_next_frame(pb_client *c, frame_view *f);

/*
 * Not public: for the `protobus` CLI, whose renderer decodes every event's
 * bytes itself (checking them as protobuf-c does). From now on
 * pb_client_next fills only partition, partition_len, offset, raw and
 * raw_len of an event: no event_scan and no string copies per event. A
 * malformed event then reaches the caller instead of ending the connection.
 */
void client_events_unscanned(pb_client *c);

/* Records an Error frame body as c->serr and c->msg. 0 or a sticky error. */
int client_take_error(pb_client *c, const frame_view *f);

/* Handles one received frame. 0 or a sticky error. */
typedef int (*client_frame_fn)(pb_client *c, const frame_view *f);

/*
 * Writes obuf[ooff..olen) completely before the deadline. While the socket
 * is full, what the server sends is read meanwhile: with on_frame (a
 * publisher's acks) each complete frame is handed to it, so the server never
 * blocks writing to us; with NULL the bytes stay buffered for the caller's
 * next client_next_frame. 0 or a sticky error.
 */
int client_write_all(pb_client *c, int64_t deadline, client_frame_fn on_frame);

/* Connects c->fd to address ("host:port", "[v6]:port"; every resolved
 * address in turn) and exchanges Hello, learning the server's limits, all
 * before the deadline. 0 or an error (c->msg names the address). */
int client_connect(pb_client *c, const char *address, int64_t deadline);

/* For lifecycle.c's pb_client_close: publish.c's and subscribe.c's state. */
void publish_free(pb_client *c);
void subscribe_free(pb_client *c);

/* --- tls.c: the optional TLS layer ------------------------------------- */

/* After the TCP connect: the TLS handshake with host (checked against the
 * server's certificate: its name, or its IP address), trusting tls_ca (or
 * the system's CAs), presenting tls_cert/tls_key if given. 0, or a sticky
 * error with c->msg naming the address and OpenSSL's reason. */
int client_tls_start(pb_client *c, const char *host, int64_t deadline);
/* recv / send through the session, with their conventions (errno EAGAIN
 * when the session waits for the socket). */
long client_tls_recv(pb_client *c, void *buf, size_t n);
long client_tls_send(pb_client *c, const void *buf, size_t n);
/* Plaintext the session holds already (poll would not see it). */
bool client_tls_pending(const pb_client *c);
void client_tls_free(pb_client *c);

#endif
