/*
 * ingest - publish ingest: one Publish frame becomes one pub_batch
 * (broker.h) whose every event is validated (size, well-formed, topic),
 * routed (router.h) and grouped by partition (store.h), with one allocation
 * per batch and none per event; its parts go to the partitions' writers;
 * once the writers are done, the batch's reply: the PublishAck, or an Error
 * naming what failed.
 *
 * Data flow: net (reads frames) -> ingest (this) -> router, store ->
 * partition writers -> the batch's done() callback (net's: it hands the
 * batch back to the loop) -> ingest_reply -> net writes the reply.
 *
 * All or nothing: if any event of a batch is invalid or has no partition,
 * the whole batch is refused before anything is queued, so a publisher
 * never has to work out which half of a batch went in.
 *
 * Rights: with a user (auth = required), every topic is checked against
 * the user's publish rights before it is routed (ingest_rights).
 *
 * Bounds: a Publish with more than max_batch_events events is refused
 * (RESOURCE_EXHAUSTED) before anything per event is allocated; a batch's
 * charge (ingest_charge) is what the in-flight budget counts.
 *
 * Threads: the loop thread. Nothing here blocks or touches the disk (apart
 * from store_get creating a partition the first time it is routed to).
 */
#ifndef PB_INGEST_H
#define PB_INGEST_H

#include "broker.h"
#include "config.h"
#include "patterns.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct router;
struct store;

/* Publish.expect entries one Publish may carry (Limits.max_expectations). */
#define INGEST_MAX_EXPECTATIONS 64u

typedef struct ingest_options {
    uint64_t max_event_bytes;  /* a larger event refuses its batch */
    uint32_t max_batch_events; /* a Publish with more events is refused; 0: no cap */
    struct router *router;
    struct store *store;
} ingest_options;

/* Limits whose refusal the transport logs once per connection (bits of
 * ingest_error.limit), not once per attempt. */
enum ingest_limit {
    INGEST_LIMIT_BATCH_EVENTS = 1u << 0, /* max_batch_events */
    INGEST_LIMIT_PARTITIONS = 1u << 1,   /* max_partitions */
};

/* Why a Publish is answered with an Error instead of an ack. */
typedef struct ingest_error {
    int code;                      /* enum pb_code (protobus.Code); the connection stays open */
    uint32_t event_index_plus_one; /* the event at fault + 1; 0: the batch as a whole */
    char partition[PB_PARTITION_NAME_MAX + 1]; /* the partition at fault; "": none */
    unsigned limit;                            /* an enum ingest_limit bit, or 0 */
    char message[640];
    /* FAILED_PRECONDITION of Publish.expect: Error.expected and .actual. */
    int has_expect;
    char expect_topic[256];
    uint32_t expect_topic_len;
    int expected_none, actual_none;
    uint64_t expected_offset, actual_offset;
} ingest_error;

/* The Error frame (delimited, malloc'd; *len its size) for e answering frame
 * id; NULL without memory. */
uint8_t *ingest_error_frame(const ingest_error *e, uint64_t id, size_t *len);

/* Whose batch it is, for publish rights: NULL (auth = none) or the user's
 * name and publish set (acl.h; loop thread: patterns_match writes its
 * cache). Each event's topic is checked before it is routed; a batch with
 * one topic the user may not publish to is refused whole with
 * PERMISSION_DENIED naming the topic and the event. */
typedef struct ingest_rights {
    const char *user;
    pattern_set *may_publish;
} ingest_rights;

/* What a batch of nevents events and `frame_bytes` bytes costs the daemon
 * while it is in flight: its bytes and every per-event array it takes, here
 * and in the partition writers (pub_batch.charge). The in-flight budget
 * counts this, not the frame's bytes alone: a Publish of millions of tiny
 * events is small on the wire and large in memory. */
uint64_t ingest_charge(uint32_t nevents, size_t frame_bytes);

/* Decodes, validates and routes the Publish frame body `body` (answering
 * frame `id`) into a new batch, ready for ingest_submit; done and conn are
 * stored in it (pub_batch.done, .conn). An empty Publish gives a batch with
 * no parts: nothing to submit, its reply is due at once. Returns 0, or a
 * negative code with *err saying why (nothing allocated or queued). */
int ingest_prepare(const ingest_options *o, const ingest_rights *who, uint64_t id,
                   const uint8_t *body, size_t len, void (*done)(pub_part *part), void *conn,
                   pub_batch **out, ingest_error *err);

/* ingest_prepare for a body that lies in `block` (from ingest_block_get),
 * which the batch then takes instead of copying the body: it is the
 * batch's on success (given back by ingest_free), still the caller's on
 * failure. The charge counts the whole block. */
int ingest_prepare_adopt(const ingest_options *o, const ingest_rights *who, uint64_t id,
                         const uint8_t *body, size_t len, void *block,
                         void (*done)(pub_part *part), void *conn, pub_batch **out,
                         ingest_error *err);

/* Loop thread: the blocks the publish path's memory comes from, those of
 * freed batches kept for the next ones (ingest.c). A connection's receive
 * buffer is one too (connbuf.c), so that a Publish frame received alone in
 * it becomes its batch's bytes without a copy (ingest_prepare_adopt).
 * ingest_block_get: at least size usable bytes, or NULL. */
void *ingest_block_get(size_t size);
/* Resizes a block (realloc: its bytes kept); NULL without memory (the
 * block is unchanged). */
void *ingest_block_resize(void *block, size_t size);
void ingest_block_put(void *block);
size_t ingest_block_cap(const void *block);

/* Hands every part of b to its partition's writer (b->pending counts them;
 * b->done runs once per part, on writer threads). */
void ingest_submit(pub_batch *b);

/* Once every part is done (at once for a batch with no parts): the reply.
 * 0 with *frame the encoded PublishAck (malloc'd; the caller's) and *len its
 * size, or *frame NULL when the publisher asked for no ack; or a negative
 * code with *err describing the Error to send instead (a part could not be
 * stored, or there was no memory for the ack). */
int ingest_reply(pub_batch *b, uint8_t **frame, size_t *len, ingest_error *err);

/* Frees a batch from ingest_prepare. NULL-safe. */
void ingest_free(pub_batch *b);

#endif
