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

typedef struct event_time {
    int64_t ns;   /* nanoseconds since 1970-01-01T00:00:00Z; 0 when absent */
    bool present; /* the field occurred */
} event_time;

typedef struct event_view {
    wire_slice topic;
    wire_slice type_url; /* payload.type_url (empty when absent) */
    wire_slice value;    /* payload.value (empty when absent) */
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
 * values, type_url) must be valid UTF-8; Timestamps have nanos in
 * [0, 999999999] and must fit int64 nanoseconds (years 1677..2262); unknown
 * fields are skipped. Repeated occurrences follow protobuf: the last value
 * of a scalar or string wins, and repeated occurrences of a message field
 * (timestamps, payload) merge field by field. Returns 0 or PB_EPROTO.
 */
int event_scan(const uint8_t *p, size_t n, event_view *v, char *err, size_t errlen);

typedef struct event_tag {
    wire_slice key;
    wire_slice value;
} event_tag;

typedef struct event_tag_iter {
    wire_cursor c;
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
