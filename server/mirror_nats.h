/*
 * mirror_nats - a mirror's side of NATS (libnats, the NATS C client): the
 * connection to the cluster (all of nats_url, reconnecting forever with a
 * growing delay, saying once when it is lost and when it is back), the
 * stream (looked up, created if missing and allowed, its settings logged),
 * one message per stored event (subject, Nats-Msg-Id, the format's body and
 * headers), asynchronous JetStream publishes whose acknowledgements come
 * back through a callback, and the scan of the stream's last messages that
 * tells which events it already holds.
 *
 * Threads: every function is called by the mirror's own thread. The
 * callbacks (ack, state) run on libnats' threads, concurrently with it.
 */
#ifndef PB_MIRROR_NATS_H
#define PB_MIRROR_NATS_H

#include "config.h"
#include "reader.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mirror_nats mirror_nats;

/* What an acknowledgement said. */
enum mirror_ack { MIRROR_ACK_STORED, MIRROR_ACK_DUPLICATE, MIRROR_ACK_FAILED };

/* Longest Nats-Msg-Id: "PARTITION:OFFSET". */
#define MIRROR_MSG_ID_MAX (PB_PARTITION_NAME_MAX + 24)

typedef struct mirror_nats_hooks {
    void *ctx;
    /* On a libnats thread: the message `token` (from mirror_nats_build)
     * was acknowledged, as stored at stream sequence seq or as a duplicate
     * of the message at seq; for MIRROR_ACK_FAILED, why says how (a
     * JetStream error, a timeout, no responders). Must not call
     * mirror_nats_*. */
    void (*ack)(void *ctx, const void *token, enum mirror_ack result, uint64_t seq,
                const char *why);
    /* On a libnats thread: the connection went up or down. */
    void (*state)(void *ctx, bool up);
} mirror_nats_hooks;

/* Starts connecting (in the background when no server answers yet). 0, or
 * a negative code with why. */
int mirror_nats_open(mirror_nats **out, const pb_mirror_config *cfg, const mirror_nats_hooks *h,
                     char *why, size_t whylen);

bool mirror_nats_connected(mirror_nats *mn);

/* Looks the stream up; creates it if missing and create_stream allows (the
 * settings are logged). The first time, logs the stream's settings. 0, or
 * a negative code with why (not connected, no JetStream, no such stream,
 * no stream leader yet). */
int mirror_nats_ensure_stream(mirror_nats *mn, char *why, size_t whylen);

/* Reads the stream's tail forward (an ordered, headers-only consumer under
 * subject_prefix: every subject is read, those outside it skipped; see
 * scan_pass), from stream sequence from_seq to its last message,
 * calling fn(ctx, partition, offset, seq) for each whose Nats-Msg-Id is
 * PARTITION:OFFSET, in stream order. The consumer may run on a replica that is behind or (in a
 * cluster that is recovering) holds what the leader never committed:
 * check what matters with mirror_nats_id_at.
 * More than `limit` messages: the newest `limit` are read instead, and
 * *hit_limit is set. *read gets how many were read. 0, or a negative code
 * with why. */
typedef void (*mirror_scan_fn)(void *ctx, const char *part_name, uint64_t offset, uint64_t seq);
int mirror_nats_scan(mirror_nats *mn, uint64_t from_seq, uint32_t limit, mirror_scan_fn fn,
                     void *ctx, uint32_t *read, bool *hit_limit, char *why, size_t whylen);

/* The Nats-Msg-Id of the message at stream sequence seq, as the stream's
 * leader has it ("" when it has none), and its subject (whose is it: a
 * stream may hold other writers' messages too, with any id). 0,
 * PB_ENOTFOUND (no such message), or a negative code with why. */
int mirror_nats_id_at(mirror_nats *mn, uint64_t seq, char *id, size_t idlen, char *subject,
                      size_t subjlen, char *why, size_t whylen);

/* Deletes the message at stream sequence seq (through the stream's
 * leader; in a cluster, a replicated operation ordered before every later
 * publish). 0, PB_ENOTFOUND (no such message), or a negative code with why.
 * JetStream keeps a deleted message's Nats-Msg-Id in its duplicate window:
 * the same id published again within the window is taken for a duplicate
 * and not stored. */
int mirror_nats_delete(mirror_nats *mn, uint64_t seq, char *why, size_t whylen);

/* The stream's duplicate window in ms, as of mirror_nats_ensure_stream. */
int64_t mirror_nats_dup_window_ms(mirror_nats *mn);

/* Test hook: $PROTOBUSD_TEST_MIRROR_LOSE ("PARTITION:OFFSET", or NULL). */
const char *mirror_nats_test_lose(void);
/* Test hook $PROTOBUSD_TEST_MIRROR_LATE: publishes the copies it held back
 * (once; nothing without the hook). Called after a scan of the tail that
 * found nothing to delete, before anything is resent. */
void mirror_nats_test_release(mirror_nats *mn);
#define MIRROR_LOSE_SUBJECT "_pbtest.lost"

/* The message for event rec of partition: *token is the message (owned by
 * the caller until published or dropped), id gets its Nats-Msg-Id.
 * PB_EPROTO: the stored event does not parse; PB_ETOOBIG: larger than the
 * server's max_payload; both with why (the event cannot be mirrored). */
int mirror_nats_build(mirror_nats *mn, const char *part_name, const pb_record *rec, void **token,
                      char id[MIRROR_MSG_ID_MAX], char *why, size_t whylen);

/* Publishes token asynchronously. On 0 the library owns the message and its
 * acknowledgement comes through hooks->ack (also a timeout after
 * ack_timeout_ms). On failure the caller still owns it (drop it). */
int mirror_nats_publish(mirror_nats *mn, void *token, char *why, size_t whylen);

/* Frees a message that was built but not published. */
void mirror_nats_drop(void *token);

/* Closes the connection; acknowledgements still due never come. */
void mirror_nats_close(mirror_nats *mn);

/* Releases libnats' global state at exit, once every mirror_nats is
 * closed: waits (bounded) for its threads, so no callback runs after. */
void mirror_nats_shutdown(void);

/* Frees a closed mirror_nats, after mirror_nats_shutdown. NULL is fine. */
void mirror_nats_free(mirror_nats *mn);

#endif
