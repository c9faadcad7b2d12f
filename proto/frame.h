/*
 * frame - the wire codec: splitting the TCP stream into frames, walking
 * Frame, Publish, Event and PublishAck bytes without allocating, and hand
 * encoders for the frames the daemon sends on its hot path. The events the
 * frames carry (EncapsulatedEvent) are event.h's, the topic rules topic.h's;
 * this header includes both, since every user of a Publish or an Event
 * frame walks the events inside.
 *
 * Data flow: net (loop thread) calls frame_split_next on what it has read,
 * frame_parse on each frame, publish_open/publish_next and event_scan on a
 * Publish batch, then appends event_put_receive_time's bytes to each event.
 * Writers and subscriptions replay stored events with frame_put_event_header
 * (header, then the stored bytes unchanged). Clients use event_frame_parse
 * and the publish_ack_* iterator. protobuf-c (protobus.pb-c.h) remains for
 * cold paths and agrees byte for byte with the encoders here.
 *
 * Every function is pure: caller-owned buffers, no allocation, no global
 * state, callable from any thread. Views and iterators point into the buffer
 * they were made from and are valid only while it is.
 *
 * Errors: functions return 0 or a negative PB_E* code. Where there is an
 * `err` argument it receives a NUL-terminated message naming the message,
 * field and byte position at fault (err may be NULL or errlen 0). Byte
 * positions are relative to the buffer the caller passed in.
 *
 * Encoders (frame_put_*, event_put_*) work like snprintf: they return the
 * number of bytes the encoding needs and write it only if that fits in cap,
 * so `frame_put_x(NULL, 0, ...)` asks for the size.
 */
#ifndef PB_FRAME_H
#define PB_FRAME_H

#include "event.h"
#include "topic.h"
#include "wire.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* --- splitting the stream -------------------------------------------- */

typedef struct frame_split {
    wire_slice body; /* the Frame message, without its length prefix */
    size_t used;     /* prefix + body: bytes to drop from the front of the buffer */
    size_t need;     /* on PB_EINCOMPLETE: total bytes (prefix + body) the frame
                        needs once the prefix is complete, else 0 */
} frame_split;

/*
 * Find the first frame in buf[0..n) (what has arrived so far).
 *   0              a whole frame is there: s->body and s->used are set.
 *   PB_EINCOMPLETE need more bytes; s->need says how many in total when the
 *                  prefix is complete, so a reader can grow its buffer once.
 *   PB_ETOOBIG     the prefix declares a body longer than max_frame_bytes;
 *                  decided from the prefix alone, before anything is buffered.
 *   PB_EPROTO      the prefix is not a varint (over 10 bytes or 64 bits).
 * max_frame_bytes bounds the body (the Frame message), not the prefix. A
 * zero-length frame is a valid, empty Frame: it is returned (used = 1,
 * body.len = 0) and frame_parse reports it as FRAME_NONE.
 */
int frame_split_next(const uint8_t *buf, size_t n, uint64_t max_frame_bytes, frame_split *s,
                     char *err, size_t errlen);

/* --- walking a Frame -------------------------------------------------- */

/* The Frame.body oneof; values are the field numbers. */
enum frame_kind {
    FRAME_NONE = 0, /* no body field this version knows */
    FRAME_HELLO = 2,
    FRAME_PUBLISH = 3,
    FRAME_PUBLISH_ACK = 4,
    FRAME_SUBSCRIBE = 5,
    FRAME_EVENT = 6,
    FRAME_ERROR = 7,
    FRAME_SUBSCRIBED = 8,
    FRAME_CAUGHT_UP = 9,
    FRAME_REPLICA_ACK = 10,
    FRAME_PING = 11,
    FRAME_PONG = 12,
    FRAME_RECORDS = 13, /* a run of stored records (recrun.h), replication only */
};

/* The highest body field number this version knows. */
#define FRAME_KIND_MAX FRAME_RECORDS

typedef struct frame_view {
    uint64_t id;
    enum frame_kind kind;
    wire_slice body;        /* the body message's bytes (kind != FRAME_NONE) */
    uint32_t unknown_field; /* first length-delimited field this version does not
                               know (a newer frame type), 0 if none */
} frame_view;

/*
 * Walk a Frame message (a frame_split body). Unknown fields are skipped;
 * a Frame without a known body gives kind FRAME_NONE (the daemon answers
 * UNIMPLEMENTED "unknown frame type"). A Frame carrying more than one body
 * field is refused (PB_EPROTO): protobuf would merge or replace them, which
 * no correct sender relies on. The last id wins. On PB_EPROTO, f->id still
 * holds the id if one was read before the fault (else 0), so that the
 * answer to a malformed frame can carry it.
 */
int frame_parse(const uint8_t *p, size_t n, frame_view *f, char *err, size_t errlen);

/* "hello", "publish", ..., "none": for messages and logs. */
const char *frame_kind_name(enum frame_kind kind);

/* The name of Frame field `number`: "id", a body's name, or "unknown". */
const char *frame_field_name(uint32_t number);

/* --- Hello ------------------------------------------------------------ */

/* Limits (Hello field 7): the server's caps; 0 = not announced. */
typedef struct frame_limits {
    uint32_t max_subscribe_patterns;
    uint32_t max_pattern_bytes;
    uint32_t max_subscribe_tags;
    uint32_t max_subscribe_offsets;
    uint32_t max_batch_events;
    uint32_t max_event_id_bytes;
    uint64_t dedup_window_ms;
    uint32_t max_expectations;
    uint64_t idle_timeout_ms;
} frame_limits;

typedef struct hello_view {
    uint64_t protocol_version; /* as sent (a uint32 field; larger values kept, to be refused) */
    wire_slice name;           /* UTF-8 */
    uint64_t max_frame_bytes;
    uint64_t max_event_bytes;
    wire_slice user;     /* UTF-8 */
    wire_slice password; /* UTF-8; never log it */
    bool has_limits;
    frame_limits limits;
} hello_view;

/*
 * Walk a Hello message (a frame_view body of kind FRAME_HELLO): strings are
 * UTF-8, numbers varints, limits a well-formed Limits. The last occurrence
 * of a field wins; occurrences of limits merge field by field.
 */
int hello_parse(const uint8_t *p, size_t n, hello_view *h, char *err, size_t errlen);

/* --- Publish ---------------------------------------------------------- */

typedef struct publish_iter {
    wire_cursor c;
    wire_cursor ec;  /* publish_next_expect's position */
    size_t n_events; /* events in the batch */
    size_t n_expect; /* Publish.expect entries (ExpectLast) */
    bool no_ack;     /* last no_ack wins; any nonzero varint is true */
} publish_iter;

/*
 * Check the Publish message's framing (every field well-formed; events are
 * length-delimited; no_ack a varint; each expect entry a well-formed
 * ExpectLast: topic UTF-8, none and offset varints), count the events and
 * the expectations and read no_ack. The events' contents are checked per
 * event with event_scan.
 */
int publish_open(const uint8_t *p, size_t n, publish_iter *it, char *err, size_t errlen);

/* The next event's bytes: 0, or PB_EEOF after the last. */
int publish_next(publish_iter *it, wire_slice *event);

/* One Publish.expect entry (ExpectLast), fields merged as protobuf does (the
 * last occurrence of each wins). topic is a slice of the message. */
typedef struct publish_expect {
    wire_slice topic;
    bool none;       /* the topic must have no events yet */
    uint64_t offset; /* none = false: the offset of its last event */
} publish_expect;

/* The next expect entry of an opened iterator (checked by publish_open), in
 * order: 0, or PB_EEOF after the last. Independent of publish_next. */
int publish_next_expect(publish_iter *it, publish_expect *e);

/*
 * Points an opened iterator at p, a byte-for-byte copy of the message it was
 * opened on, back at its first event: the copy need not be walked again
 * (the daemon checks a batch in its read buffer, then keeps a copy).
 */
void publish_restart(publish_iter *it, const uint8_t *p);

/* --- encoders --------------------------------------------------------- */

/* The varint length prefix for an already encoded Frame of body_len bytes. */
size_t frame_put_delimiter(uint8_t *out, size_t cap, size_t body_len);

#define FRAME_EVENT_HEADER_MAX(partition_len) (72 + (partition_len))

/*
 * The start of a delimited Event frame, up to and including the length
 * prefix of Event.event: prefix + Frame{id, event{partition, offset,
 * event: len}}. Header bytes followed by the event_len stored event bytes
 * form exactly one delimited Frame (send them with one writev). id and
 * offset are omitted when 0, partition when empty (proto3 defaults), which
 * is byte for byte what protobuf-c packs. partition is NUL-terminated.
 */
size_t frame_put_event_header(uint8_t *out, size_t cap, uint64_t id, const char *partition,
                              uint64_t offset, size_t event_len);

/* The same with the partition name's length given (it need not be
 * NUL-terminated): for callers that send many events of one partition. */
size_t frame_put_event_header_n(uint8_t *out, size_t cap, uint64_t id, const char *partition,
                                size_t partition_len, uint64_t offset, size_t event_len);

/*
 * A delimited PublishAck frame: partitions[0..n_partitions) (NUL-terminated
 * names), then partition_index and offsets for n_events events, both packed.
 */
size_t frame_put_publish_ack(uint8_t *out, size_t cap, uint64_t id, const char *const *partitions,
                             size_t n_partitions, const uint32_t *partition_index,
                             const uint64_t *offsets, size_t n_events);

/* The same with PublishAck.duplicates: dups[0..n_dups) (ascending event
 * indexes), packed; omitted when n_dups is 0 (then byte for byte the above). */
size_t frame_put_publish_ack_dups(uint8_t *out, size_t cap, uint64_t id,
                                  const char *const *partitions, size_t n_partitions,
                                  const uint32_t *partition_index, const uint64_t *offsets,
                                  size_t n_events, const uint32_t *dups, size_t n_dups);

/* An ExpectLast to encode (Error.expected / Error.actual). */
typedef struct frame_expect {
    const char *topic; /* topic_len bytes */
    size_t topic_len;
    bool none;
    uint64_t offset;
} frame_expect;

typedef struct frame_error {
    int code;              /* enum pb_code (protobus_errors.h) */
    const char *message;   /* NULL = empty */
    const char *partition; /* NULL = empty */
    uint64_t first_offset;
    uint64_t last_offset;
    uint32_t event_index_plus_one; /* 0 = not about one event of a batch */
    const frame_expect *expected;  /* FAILED_PRECONDITION of Publish.expect; NULL = absent */
    const frame_expect *actual;    /* ... what the topic has; NULL = absent */
} frame_error;

/*
 * A delimited Error frame. Bytes of message or partition that are not valid
 * UTF-8 are sent as '?', so strict decoders never refuse an error report.
 */
size_t frame_put_error(uint8_t *out, size_t cap, uint64_t id, const frame_error *e);

typedef struct frame_hello {
    uint32_t protocol_version;
    const char *name; /* NULL = empty; invalid UTF-8 sent as '?' */
    uint64_t max_frame_bytes;
    uint64_t max_event_bytes;
    const char *user;           /* NULL = empty */
    const char *password;       /* NULL = empty (client -> server only) */
    const frame_limits *limits; /* NULL = absent; else sent, even if all 0 */
} frame_hello;

/* A delimited Hello frame. */
size_t frame_put_hello(uint8_t *out, size_t cap, uint64_t id, const frame_hello *h);

/* A delimited Pong frame (the answer to a Ping, same id). */
size_t frame_put_pong(uint8_t *out, size_t cap, uint64_t id);

/* A delimited Ping frame. */
size_t frame_put_ping(uint8_t *out, size_t cap, uint64_t id);

/* A delimited CaughtUp frame. */
size_t frame_put_caught_up(uint8_t *out, size_t cap, uint64_t id, uint64_t history_events);

/* One entry of Subscribed.partitions. */
typedef struct frame_position {
    const char *partition; /* NUL-terminated */
    uint64_t first_offset;
    uint64_t start_offset;
    uint64_t end_offset;
} frame_position;

/* A delimited Subscribed frame listing parts[0..n). */
size_t frame_put_subscribed(uint8_t *out, size_t cap, uint64_t id, const frame_position *parts,
                            size_t n);

/* --- client-side decoders ----------------------------------------------- */

typedef struct event_frame_view {
    wire_slice partition;
    uint64_t offset;
    wire_slice event; /* the stored EncapsulatedEvent bytes (check with event_scan) */
} event_frame_view;

/*
 * Walk an Event message (a frame_view body of kind FRAME_EVENT). The
 * partition must be valid UTF-8; the event field must occur exactly once.
 */
int event_frame_parse(const uint8_t *p, size_t n, event_frame_view *v, char *err, size_t errlen);

typedef struct publish_ack_iter {
    wire_cursor names;
    wire_repeated index;
    wire_repeated offsets;
    wire_repeated dups;
    size_t n_partitions;
    size_t n_events;
    size_t n_duplicates; /* PublishAck.duplicates entries (indexes, not walked here) */
} publish_ack_iter;

/*
 * Validate a PublishAck message (a frame_view body of kind
 * FRAME_PUBLISH_ACK): names are UTF-8; partition_index and offsets, packed
 * or not, have the same count; every index names a listed partition.
 */
int publish_ack_open(const uint8_t *p, size_t n, publish_ack_iter *it, char *err, size_t errlen);

/* The next partition name in order: 0, or PB_EEOF. */
int publish_ack_next_partition(publish_ack_iter *it, wire_slice *name);

/* The next event's (partition_index, offset): 0, or PB_EEOF. */
int publish_ack_next(publish_ack_iter *it, uint32_t *partition_index, uint64_t *offset);

/* The next entry of PublishAck.duplicates (an event index, within uint32 as
 * publish_ack_open checked): 0, or PB_EEOF. */
int publish_ack_next_duplicate(publish_ack_iter *it, uint32_t *event_index);

#endif
