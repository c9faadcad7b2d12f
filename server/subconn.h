/*
 * subconn - a subscription's connection, as its pool thread uses it: the
 * output buffer every frame of the subscription is encoded into
 * (Subscribed, Events carrying the stored bytes unchanged, DATA_LOSS
 * notices, CaughtUp, and the answers to what the client sends), written
 * without blocking under a write deadline; and the reading of what the
 * client sends on its subscribed connection (a Ping gets a Pong, a Publish
 * or a second Subscribe an Error, as session.c rules), scanned as it comes
 * (framescan.h) and never buffered.
 *
 * Internal to the subscription module: subrun.c (above it) runs the
 * subscription and calls these; nothing here knows partitions or queues.
 *
 * Threads: the subscription's pool thread only. The registry may set
 * *stop and signal wake_fd from another thread (that is all it does).
 */
#ifndef PB_SUBCONN_H
#define PB_SUBCONN_H

#include "frame.h"
#include "framescan.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct subconn {
    /* Set by the caller before subconn_open, read-only afterwards. */
    int fd;                     /* the client's socket (the caller closes it) */
    int wake_fd;                /* eventfd the writers and the registry wake the thread with */
    const atomic_bool *stop;    /* set when the registry stops the subscription */
    uint64_t frame_id;          /* the Subscribe's: every frame of the subscription carries it */
    uint32_t write_deadline_ms; /* no progress writing this long drops the subscriber */
    uint64_t max_frame_bytes;   /* what the client may send; larger frames close */
    const char *peer;           /* for log lines */
    char *why;                  /* the caller's buffer for what went wrong */
    size_t why_len;
    /* Bytes already read after the Subscribe (malloc'd, taken by
     * subconn_open; read first). */
    uint8_t *input;
    size_t input_len;
    /* A TLS connection's session (tls.h), handed over with the socket
     * (the caller frees it); NULL: plain TCP. */
    struct tls_conn *tls;
    /* A replication subscription (Subscribe.replicate): the follower's
     * ReplicaAck frames are accepted (and not answered). */
    bool replicate;
    struct standby *standby; /* where its ReplicaAcks go (synchronous mode); NULL: nowhere */
    /* The last wake-up was the client's frames (set by the thread's wait):
     * the next rest keeps the output buffer (subconn_rest). */
    bool input_woke;

    /* subconn's own. */
    uint8_t *out; /* frames waiting to be written; NULL while resting */
    size_t out_len, out_cap;
    uint64_t events_sent; /* Event frames (and records of Records frames) queued so far */
    /* The Records frame being filled (subconn_record) at out[run_at..):
     * its header's size, its partition (the caller's pointer: compared,
     * never read) and the next offset it can take. Closed by anything else
     * written to out. */
    bool run_open;
    size_t run_at, run_hdr;
    const char *run_part;
    size_t run_part_len;
    uint64_t run_next;
    frame_scan scan;
    bool in_input; /* inside subconn_read (its answers may flush) */
    uint8_t *rin;  /* replicate: a frame of the follower's being read whole */
    size_t rin_len, rin_cap;
    int end_code; /* nonzero: the client broke the stream; the closing Error's code */
    /* The waker's fast path could not keep what the socket refused (out of
     * memory after part of a frame went out): the stream is broken, the
     * thread ends the subscription with this code (why set) and
     * subconn_end closes without writing anything more. */
    int fast_error;
    /* Bytes at the front of out that finish a frame the waker's fast path
     * began on the wire (subconn_send_now): they go out before anything
     * else, even before an Error that ends the subscription. */
    size_t out_owed;
    /* The waker's fast path: its last send took every byte and nothing
     * was handed to the thread since, so the next one skips the poll for
     * room (subrun_fast.c). Cleared by every hand-over and by the
     * thread's own writes (send_raw); the two never run at once
     * (fanout_member.fast_busy). */
    bool fast_room;
    /* A send failed (stop, timeout, a dead peer) after part of a frame went
     * out, or with a frame's tail still owed: the next byte would be read as
     * that frame's rest, so subconn_end closes without writing more. */
    bool torn;
} subconn;

/* Prepares c (the output buffer is allocated by the first frame queued).
 * 0. */
int subconn_open(subconn *c);

/* After the thread woke: allocates the output buffer's first size if it has
 * none. Called from the top of the subscription's loop, so that the
 * allocator runs near the top of the thread's stack (see subrun.c). 0 or
 * PB_ENOMEM (why set). */
int subconn_ready(subconn *c);

/* Before the thread sleeps: frees the output buffer if nothing waits in it,
 * so a sleeping subscription holds none (the next frame allocates it). */
void subconn_rest(subconn *c);

/* Frees what subconn owns (not the socket). */
void subconn_close(subconn *c);

/* True once the registry has asked the subscription to stop. */
bool subconn_stopping(const subconn *c);

/* Consumes a pending wake-up of wake_fd (non-blocking). */
void subconn_drain_wake(subconn *c);

/* Writes everything queued. 0, PB_ECLOSED (the client has gone or the
 * registry stops), PB_ETIMEDOUT (write deadline; logged), or a negative
 * code with why set. */
int subconn_flush(subconn *c);

/* Queues one Event frame: a header, then the stored event bytes as they
 * are (no decoding). Same returns as subconn_flush. */
int subconn_event(subconn *c, const char *partition, size_t partition_len, uint64_t offset,
                  const uint8_t *event, size_t len);

/* The same record for a replication subscription that asked for Records
 * frames (FORMAT.md 4.11): appended, with its record header (offset,
 * time_ns, CRC32C: byte for byte the primary's segment record), to the
 * Records frame being filled when it is of the same partition (the same
 * pointer) and the next offset there and the frame stays within 64 KiB
 * (RUNS_FRAME_BYTES), else to a new one. A record too large for the output
 * buffer (OUT_CAP) goes as an Event frame. crc:
 * the record's CRC32C as the writer computed it (NULL: computed here). Same
 * returns as subconn_flush. */
int subconn_record(subconn *c, const char *partition, size_t partition_len, uint64_t offset,
                   int64_t time_ns, const uint8_t *event, size_t len, const uint32_t *crc);

/* count consecutive records of offsets offset.. as stored (headers with
 * CRCs, events: a live queue's run entry), len bytes, for the same stream:
 * appended whole to the Records frame being filled when it is of the same
 * partition and the next offset there and the frame stays within 64 KiB
 * (RUNS_FRAME_BYTES), else to a new one. len + RECRUN_HEADER_MAX(partition_len) must be at
 * most OUT_CAP (PB_EINVAL otherwise). Same returns as subconn_flush. */
int subconn_records(subconn *c, const char *partition, size_t partition_len, uint64_t offset,
                    const uint8_t *records, size_t len, uint32_t count);

/*
 * The waker's fast path (subrun_fast.c), while the thread sleeps: writes
 * buf[0..len) (whole Event frames) with one non-blocking send, on plain TCP
 * only; whatever the socket does not take (all of it on EAGAIN or an
 * error) is queued in the output buffer for the thread, which sends it
 * first when it runs (and meets the error itself). 0: everything went out;
 * 1: the thread must run; PB_ENOMEM: bytes could not be kept (fast_error
 * and why set: the thread closes the connection).
 */
int subconn_send_now(subconn *c, const uint8_t *buf, size_t len);

/* Queues an Error frame answering frame id. */
int subconn_error(subconn *c, uint64_t id, int code, const char *message, const char *partition,
                  uint64_t first_offset, uint64_t last_offset);

/* Sends Subscribed listing pos[0..n) at once (the client waits for it),
 * then answers what the client sent after the Subscribe. */
int subconn_subscribed(subconn *c, const frame_position *pos, size_t n);

/* Sends CaughtUp (counting the Events queued so far) at once. */
int subconn_caught_up(subconn *c);

/*
 * Reads what the client sent, without waiting, and answers it: first the
 * input handed over, then at most a bounded amount from the socket, so a
 * client flooding its connection cannot hold the thread. 0, PB_ECLOSED
 * when the client has gone, or a negative code: a broken stream sets
 * end_code and why (subconn_end says it to the client).
 */
int subconn_read(subconn *c);

/*
 * Best effort, before the connection is closed: when the client broke the
 * stream (end_code), its Error (id 0) after what was queued; after any
 * other failure rc (not PB_ECLOSED or PB_ETIMEDOUT), Error "subscription
 * ended: <why>" (RESOURCE_EXHAUSTED for PB_ENOMEM, else INTERNAL) in place
 * of what was queued. Reads nothing more.
 */
void subconn_end(subconn *c, int rc);

#endif
