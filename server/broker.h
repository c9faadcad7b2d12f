/*
 * broker.h - the types that cross thread boundaries inside protobusd.
 *
 * Data flow of a publish (see DESIGN.md):
 *
 *   loop thread (net.c)        reads a Publish frame, copies its bytes once into a
 *                              pub_batch (ONE allocation per batch, none per event),
 *                              validates and routes every event, groups the events
 *                              by partition into pub_parts, and hands each pub_part
 *                              to its partition with partition_submit().
 *   writer thread (partition.c) takes everything queued, appends it with one
 *                              log_append (one writev), syncs per policy (group
 *                              commit), fills in offsets, records per-topic last
 *                              offsets, announces the durable records through
 *                              its durable callback (the live fan-out,
 *                              fanout.c, copies them into the matching
 *                              subscriptions' live queues), then calls the
 *                              batch's done() callback.
 *   loop thread (net.c)        on the last done() of a batch (uv_async), sends the
 *                              PublishAck (or an Error) and frees the batch.
 *
 * Ownership: a pub_batch belongs to net.c. Between partition_submit() and the
 * done() callback, the partition's writer thread may read the batch's event
 * bytes and write ONLY the fields of its own pub_part and the `offset` of the
 * events of its own pub_part; nothing else touches those fields meanwhile.
 */
#ifndef PB_BROKER_H
#define PB_BROKER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct partition partition;
typedef struct pub_batch pub_batch;

/* One event of a batch: a slice of the batch's bytes (the client's encoded
 * EncapsulatedEvent, validated by the loop thread). */
typedef struct pub_event {
    const uint8_t *data;
    uint32_t len;
    uint32_t topic_len;
    const uint8_t *topic; /* slice of data */
    uint32_t part;        /* index into pub_batch.parts */
    uint8_t id_len;       /* EncapsulatedEvent.id's length, 0 = no id (at most 64) */
    uint8_t duplicate; /* set by the writer: the id was stored before; offset is the original's */
    /* A standby's record from a Records frame (pub_batch.replica): the 24
     * bytes before data are its header as the primary sealed it (written as
     * they are: log_entry.record). */
    uint8_t sealed;
    const uint8_t *id; /* slice of data, id_len bytes (NULL when none) */
    uint64_t id_hash;  /* dedup_id_hash(id), by ingest; 0 when not computed */
    uint64_t offset;   /* set by the writer thread */
    int64_t time_ns;   /* server receive time, set by the writer thread */
} pub_event;

/* The events of one batch routed to one partition, in batch order. This is
 * the node a partition's queue links (intrusive: no allocation to enqueue). */
typedef struct pub_part {
    struct pub_part *next; /* queue link, owned by the partition while queued */
    pub_batch *batch;
    partition *partition;
    uint32_t *events; /* indexes into batch->events, in batch order */
    uint32_t count;
    int status; /* set by the writer: 0, or a negative PB_E / -errno code */
    /* Set by the writer when it refuses the part without storing anything
     * (expect.h): PUB_EXPECT_FAILED with the expectation and what the topic
     * has, or PUB_EXPECT_UNKNOWN; 0 otherwise. Becomes status. */
    int refused;
    uint32_t expect_failed; /* index into pub_batch.expect */
    int actual_none;        /* the topic has no event ... */
    uint64_t actual;        /* ... or this is its last offset */
    uint64_t last_offset;   /* net.c, synchronous standby mode: its highest offset */
} pub_part;

/* Publish.expect entry (slices of the batch's bytes). */
typedef struct pub_expect {
    const uint8_t *topic;
    uint32_t topic_len;
    int none;        /* the topic must have no events */
    uint64_t offset; /* else: its last offset */
} pub_expect;

/* pub_part.refused: an expectation did not hold; the partition's topic
 * table is incomplete (out of memory), so expectations cannot be checked. */
#define PUB_EXPECT_FAILED  (-6001)
#define PUB_EXPECT_UNKNOWN (-6002)
/* pub_part.status set by net.c: stored here, but the standby did not
 * confirm it within standby_timeout_ms (standby_timeout = refuse). */
#define PUB_STANDBY_TIMEOUT (-6003)

struct pub_batch {
    /* Called on the writer thread after a pub_part is durable (or failed).
     * The implementation (net.c) counts down `pending` and hands the batch
     * back to the loop thread when it reaches zero. */
    void (*done)(pub_part *part);
    atomic_uint pending; /* pub_parts not yet done */
    void *conn;          /* net.c's connection (reference held by the batch) */
    uint64_t frame_id;
    int no_ack;
    uint32_t nevents;
    pub_event *events;
    uint32_t nparts;
    pub_part *parts;
    /* A standby's batch (follower.c): each event is a record of the
     * primary's, stored as it is (data = the stored event bytes) at its
     * `offset` with its `time_ns`, set by the follower; no dedup, no
     * expectations. A part whose first offset is not the partition's next
     * is refused (status PB_EINVAL), nothing of it stored. */
    int replica;
    uint32_t nexpect;     /* Publish.expect entries (then nparts <= 1) */
    pub_expect *expect;   /* ingest's, NULL when nexpect is 0 */
    pub_batch *next_done; /* net.c's completion list link */
    /* net.c, synchronous standby mode: waiting for the standby's ReplicaAck
     * (list link) until this CLOCK_MONOTONIC ms. */
    pub_batch *next_standby;
    uint64_t standby_deadline_ms;
    /* net.c, loop thread only: replies go out in request order. */
    pub_batch *next_reply; /* the connection's batches, in request order */
    void *replies_after;   /* replies due after this batch's, in order */
    int complete;          /* every part is done: its reply may go */
    uint64_t received_ns;  /* metrics_now_ns() when the frame was read (publish-to-ack) */
    uint64_t charge; /* what it costs in flight (ingest_charge): the in-flight budget's unit */
    size_t bytes_len;
    uint8_t *bytes; /* the Publish frame's bytes; events point into it */
};

#endif
