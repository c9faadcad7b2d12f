/*
 * event - EncapsulatedEvent, the stored event: the bytes a publisher sends
 * inside a Publish frame, the daemon stores unchanged (plus the
 * server_receive_time field it appends) and subscribers receive inside
 * Event frames.
 *
 * Data flow: net (loop thread) checks every published event with
 * event_scan and appends event_put_receive_time's bytes; clients scan what
 * they receive with event_scan and read the tags with the tag iterator.
 *
 * Every function is pure: caller-owned buffers, no allocation, no global
 * state, callable from any thread. Views and iterators point into the
 * buffer they were made from and are valid only while it is. Errors: 0 or
 * a negative PB_E* code; `err` (may be NULL or errlen 0) receives a message
 * naming the field and byte position at fault.
 */
#ifndef PB_EVENT_H
#define PB_EVENT_H

#include "wire.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* EncapsulatedEvent's field numbers (protobus.proto). */
enum event_field {
    EVENT_TOPIC = 1,
    EVENT_TAGS = 2,
    EVENT_CLIENT_EVENT_TIME = 3,
    EVENT_CLIENT_TRANSMIT_TIME = 4,
    EVENT_SERVER_RECEIVE_TIME = 5,
    EVENT_PAYLOAD_SIZE = 6,
    EVENT_PAYLOAD = 7,
    EVENT_ID = 8,
};

/* EncapsulatedEvent.id: at most this many bytes of UTF-8. */
#define EVENT_ID_MAX_BYTES 64

typedef struct event_tag {
    wire_slice key;
    wire_slice value;
} event_tag;

/* --- the walker ------------------------------------------------------------ */

/*
 * The one walk over stored event bytes: every reader of an EncapsulatedEvent
 * (event_scan, the tag iterator, the daemon's subscription filter and topic
 * table, the CLI's tag filter) goes through it, so they all agree on what
 * well-formed bytes are and on protobuf's "last one wins".
 *
 * event_walk_next reads the fields in wire order and returns those the
 * caller wants; on the way it checks what every caller relies on:
 *   - the framing of every field (varints, lengths, no groups);
 *   - the wire type of every known field, wanted or not (protobuf-c refuses
 *     a known field with the wrong one; so does the daemon on publish);
 *   - for a wanted tags entry, its framing and that key and value are
 *     length-delimited (absent ones are empty, as in protobuf).
 * With strict set, the topic and tag keys and values must also be valid
 * UTF-8 (event_scan's rules; the other callers read bytes the daemon
 * already checked and skip that cost). Unknown fields (a newer producer's)
 * are skipped. Timestamps and the payload are returned as their bytes:
 * event_scan checks what is inside them.
 */
#define EVENT_WANT(field) (1u << (field))
#define EVENT_WANT_ALL    0x1feu /* fields 1..8 (bit 0 is never a field) */

typedef struct event_walker {
    wire_cursor c;
    unsigned want; /* EVENT_WANT bits */
    bool strict;
} event_walker;

typedef struct event_item {
    wire_field f;  /* f.number is an enum event_field; f.data (LEN fields),
                      f.value (EVENT_PAYLOAD_SIZE), f.pos (the tag's byte) */
    event_tag tag; /* EVENT_TAGS: the entry's key and value */
} event_item;

void event_walk_init(event_walker *w, const uint8_t *p, size_t n, unsigned want, bool strict);

/* 1 with *it set, 0 after the last field, or PB_EPROTO (err names the
 * field and byte position; err may be NULL). */
int event_walk_next(event_walker *w, event_item *it, char *err, size_t errlen);

/* --- scanning ---------------------------------------------------------------- */

typedef struct event_time {
    int64_t ns;   /* nanoseconds since 1970-01-01T00:00:00Z; 0 when absent */
    bool present; /* the field occurred */
} event_time;

typedef struct event_view {
    wire_slice topic;
    wire_slice type_url; /* payload.type_url (empty when absent) */
    wire_slice value;    /* payload.value (empty when absent) */
    wire_slice id;       /* the publisher's event id (empty when absent) */
    bool has_payload;
    int64_t payload_size;
    event_time client_event_time;
    event_time client_transmit_time;
    event_time server_receive_time;
    size_t n_tags;        /* tag entries on the wire; a repeated key counts each time */
    wire_slice tags_span; /* from the first tags field to the end of the last */
} event_view;

/*
 * Validate an EncapsulatedEvent completely and fill *v (pointing into p).
 * Every known field must have its wire type; strings (topic, tag keys and
 * values, type_url, id) must be valid UTF-8; the id is at most
 * EVENT_ID_MAX_BYTES bytes; Timestamps have nanos in
 * [0, 999999999] and must fit int64 nanoseconds (years 1677..2262); unknown
 * fields are skipped. Repeated occurrences follow protobuf: the last value
 * of a scalar or string wins, and repeated occurrences of a message field
 * (timestamps, payload) merge field by field. Returns 0 or PB_EPROTO.
 */
int event_scan(const uint8_t *p, size_t n, event_view *v, char *err, size_t errlen);

/*
 * For bytes a daemon stored after event_scan accepted them (a standby's
 * replicated records): fills only topic, id and server_receive_time, and
 * checks only the wire format of the event's fields, the id's length and
 * the receive time (as event_scan does); tags and the payload are skipped
 * unopened and strings are not checked for UTF-8 (on the 139-byte event
 * of `protobus bench pub`, 90-99 ns against event_scan's 112-155 ns).
 * Returns 0 or PB_EPROTO.
 */
int event_scan_stored(const uint8_t *p, size_t n, event_view *v, char *err, size_t errlen);

/*
 * Less still, for a standby's record whose header and CRC it keeps as the
 * primary sealed them (a Records frame, FORMAT.md 4.11): the topic and the
 * id (either may come back empty), from a walk of the top-level fields'
 * wire format only (the id's length checked as above; nothing inside a
 * field is opened, no receive time decoded: the record's header holds it).
 * 0, or PB_EPROTO without a message (event_scan_stored then says what is
 * wrong).
 */
int event_scan_keys(const uint8_t *p, size_t n, wire_slice *topic, wire_slice *id);

typedef struct event_tag_iter {
    event_walker w;
} event_tag_iter;

/*
 * Iterate the tags of a scanned event. Each key is produced once, with the
 * value of its last entry on the wire (protobuf map semantics), in the order
 * of those last entries. Cost: one pass per entry over the entries after it
 * (quadratic in the tag count) - meant for formatting and filtering small
 * maps; for one key use event_tag_get.
 */
void event_tags_begin(const event_view *v, event_tag_iter *it);
bool event_tags_next(event_tag_iter *it, event_tag *t);

/* The value of `key` (last entry wins): 0, or PB_ENOTFOUND. Linear. */
int event_tag_get(const event_view *v, const void *key, size_t key_len, wire_slice *value);

/* --- filtering by tags ------------------------------------------------------ */

/* One key=value an event must carry (bytes; not NUL-terminated). */
typedef struct event_tag_filter {
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
} event_tag_filter;

/*
 * One walk over stored event bytes for a subscription's filters (no UTF-8
 * checks: for bytes the daemon validated on the way in): *topic = field 1
 * (the last occurrence wins; empty when absent), and for each filters[i]
 * state[i] = 0 (key absent), 1 (present with that value) or 2 (present
 * with another value), the last map entry of a key deciding, as protobuf
 * maps do. Tag entries are walked only when nfilters > 0. Returns 0 or
 * PB_EPROTO. state is the caller's scratch of nfilters bytes.
 */
int event_filter_scan(const uint8_t *p, size_t n, const event_tag_filter *filters, size_t nfilters,
                      uint8_t *state, wire_slice *topic);

/* True if every filter's key was present with its value (state as
 * event_filter_scan left it). */
bool event_filter_ok(const uint8_t *state, size_t nfilters);

/* --- encoder --------------------------------------------------------------- */

#define EVENT_RECEIVE_TIME_MAX 19 /* tag + length + Timestamp{int64, int32} */

/*
 * The field appended to a client's event: server_receive_time (field 5) =
 * Timestamp for `ns` (floor to seconds, nanos in [0, 1e9), so negative times
 * are right). Both Timestamp fields are always written, even when zero, so
 * the appended value replaces a client-sent one under every decoder's rule:
 * protobuf-c takes the later message's scalars, C++/Java/Go merge field by
 * field and only fields present on the wire override.
 */
size_t event_put_receive_time(uint8_t *out, size_t cap, int64_t ns);

#endif
