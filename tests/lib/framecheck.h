/*
 * framecheck - what the frame and event tests share (test_frame,
 * test_event_scan, test_frame_hostile): protobuf-c packing of messages and
 * delimited frames, slices compared with bytes, an EncapsulatedEvent with
 * every field set, and the check that event_scan agrees with protobuf-c's
 * unpack of the same bytes. Uses cmocka asserts: call from a test only.
 */
#ifndef PB_FRAMECHECK_H
#define PB_FRAMECHECK_H

#include "frame.h"
#include "protobus.pb-c.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NS 1000000000LL

/* A byte buffer that owns its memory. */
typedef struct packed_buf {
    uint8_t *p;
    size_t len;
} packed_buf;

/* An EncapsulatedEvent with every field set, built for protobuf-c. */
struct full_event {
    Protobus__EncapsulatedEvent ev;
    Protobus__EncapsulatedEvent__TagsEntry entries[4];
    Protobus__EncapsulatedEvent__TagsEntry *tags[4];
    Google__Protobuf__Timestamp times[3];
    Google__Protobuf__Any any;
};

/* The tags full_event_init sets, in order. */
extern const char *const tag_keys[4];
extern const char *const tag_values[4];

void *xmalloc(size_t n);
packed_buf pack_msg(const ProtobufCMessage *m);
/* prefix + Frame, as a sender puts it on the wire. */
packed_buf pack_delimited(const Protobus__Frame *f);
bool slice_is(wire_slice s, const void *p, size_t n);
bool slice_is_str(wire_slice s, const char *str);
/* A protobuf-c string holds all the bytes that arrived (plus a NUL), even
 * NULs inside: compare them all, not up to the first NUL. */
bool slice_is_unpacked(wire_slice s, const char *str);
void full_event_init(struct full_event *fe, char *topic, uint8_t *payload, size_t len);
int64_t ts_ns(const Google__Protobuf__Timestamp *t);
/* The view agrees with protobuf-c's unpack of the same bytes. */
void assert_view_matches(const event_view *v, const Protobus__EncapsulatedEvent *u);
/* Run event_scan on bytes and assert it agrees with protobuf-c. */
void assert_scan_agrees(const uint8_t *p, size_t n);
/* Walk a PublishAck body and compare it with protobuf-c's unpack of it. */
void assert_ack_agrees(const uint8_t *p, size_t n);
/* rc is want, and err contains needle. */
void expect_err(int rc, int want, const char *err, const char *needle);

#endif
