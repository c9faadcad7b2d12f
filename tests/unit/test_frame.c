/*
 * Unit tests for proto/frame.c and proto/event.c: the splitter, the
 * walkers and the encoders, checked against protobuf-c's generated
 * pack/unpack in both directions, plus truncation at every byte and a
 * bounded, deterministic mutation loop.
 * Single-threaded; no files.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "frame.h"
#include "pb_errors.h"
#include "protobus.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS 1000000000LL

/* --- helpers ------------------------------------------------------------------ */

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

/* A byte buffer that owns its memory. */
typedef struct buf {
    uint8_t *p;
    size_t len;
} buf;

static buf pack_msg(const ProtobufCMessage *m)
{
    buf b;
    b.len = protobuf_c_message_get_packed_size(m);
    b.p = xmalloc(b.len);
    assert_int_equal(protobuf_c_message_pack(m, b.p), b.len);
    return b;
}

/* prefix + Frame, as a sender puts it on the wire. */
static buf pack_delimited(const Protobus__Frame *f)
{
    buf body = pack_msg(&f->base), b;
    size_t k = frame_put_delimiter(NULL, 0, body.len);

    b.len = k + body.len;
    b.p = xmalloc(b.len);
    assert_int_equal(frame_put_delimiter(b.p, k, body.len), k);
    memcpy(b.p + k, body.p, body.len);
    free(body.p);
    return b;
}

static bool slice_is(wire_slice s, const void *p, size_t n)
{
    return s.len == n && (n == 0 || memcmp(s.p, p, n) == 0);
}

static bool slice_is_str(wire_slice s, const char *str)
{
    return slice_is(s, str, strlen(str));
}

/*
 * A protobuf-c string holds all the bytes that arrived (plus a NUL), even
 * NULs inside: compare them all, not up to the first NUL.
 */
static bool slice_is_unpacked(wire_slice s, const char *str)
{
    return s.len == 0 || memcmp(s.p, str, s.len) == 0;
}

/* An EncapsulatedEvent with every field set, built for protobuf-c. */
struct full_event {
    Protobus__EncapsulatedEvent ev;
    Protobus__EncapsulatedEvent__TagsEntry entries[4];
    Protobus__EncapsulatedEvent__TagsEntry *tags[4];
    Google__Protobuf__Timestamp times[3];
    Google__Protobuf__Any any;
};

static const char *const tag_keys[4] = {"host", "region", "empty", "unicode"};
static const char *const tag_values[4] = {"web-1", "eu-west", "", "caf\xc3\xa9 \xe2\x82\xac"};

static void full_event_init(struct full_event *fe, char *topic, uint8_t *payload, size_t len)
{
    static const Protobus__EncapsulatedEvent ev0 = PROTOBUS__ENCAPSULATED_EVENT__INIT;
    static const Protobus__EncapsulatedEvent__TagsEntry e0 =
        PROTOBUS__ENCAPSULATED_EVENT__TAGS_ENTRY__INIT;
    static const Google__Protobuf__Timestamp t0 = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    static const Google__Protobuf__Any a0 = GOOGLE__PROTOBUF__ANY__INIT;

    fe->ev = ev0;
    fe->ev.topic = topic;
    for (int i = 0; i < 4; i++) {
        fe->entries[i] = e0;
        fe->entries[i].key = (char *)tag_keys[i];
        fe->entries[i].value = (char *)tag_values[i];
        fe->tags[i] = &fe->entries[i];
    }
    fe->ev.n_tags = 4;
    fe->ev.tags = fe->tags;
    for (int i = 0; i < 3; i++)
        fe->times[i] = t0;
    fe->times[0].seconds = -5; /* before the epoch: nanos count forward */
    fe->times[0].nanos = 7;
    fe->times[1].seconds = 1700000000;
    fe->times[1].nanos = 999999999;
    fe->times[2].seconds = 9223372036; /* INT64_MAX ns */
    fe->times[2].nanos = 854775807;
    fe->ev.client_event_time = &fe->times[0];
    fe->ev.client_transmit_time = &fe->times[1];
    fe->ev.server_receive_time = &fe->times[2];
    fe->ev.payload_size = (int64_t)len;
    fe->any = a0;
    fe->any.type_url = "type.googleapis.com/demo.Reading";
    fe->any.value.data = payload;
    fe->any.value.len = len;
    fe->ev.payload = &fe->any;
}

static int64_t ts_ns(const Google__Protobuf__Timestamp *t)
{
    return t->seconds * NS + t->nanos;
}

/* The view agrees with protobuf-c's unpack of the same bytes. */
static void assert_view_matches(const event_view *v, const Protobus__EncapsulatedEvent *u)
{
    const Google__Protobuf__Timestamp *pt[3] = {u->client_event_time, u->client_transmit_time,
                                                u->server_receive_time};
    const event_time *vt[3] = {&v->client_event_time, &v->client_transmit_time,
                               &v->server_receive_time};

    assert_true(slice_is_str(v->topic, u->topic));
    assert_true(v->payload_size == u->payload_size);
    assert_int_equal(v->n_tags, u->n_tags);
    for (size_t i = 0; i < u->n_tags; i++) {
        wire_slice val;
        assert_int_equal(event_tag_get(v, u->tags[i]->key, strlen(u->tags[i]->key), &val), 0);
        /* Last entry wins: find the last one with this key in protobuf-c's list. */
        const char *want = u->tags[i]->value;
        for (size_t j = i + 1; j < u->n_tags; j++)
            if (strcmp(u->tags[j]->key, u->tags[i]->key) == 0)
                want = u->tags[j]->value;
        assert_true(slice_is_str(val, want));
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(vt[i]->present, pt[i] != NULL);
        if (pt[i] != NULL)
            assert_true(vt[i]->ns == ts_ns(pt[i]));
    }
    assert_true(slice_is_str(v->id, u->id));
    assert_int_equal(v->has_payload, u->payload != NULL);
    if (u->payload != NULL) {
        assert_true(slice_is_str(v->type_url, u->payload->type_url));
        assert_true(slice_is(v->value, u->payload->value.data, u->payload->value.len));
    }
}

/* Run event_scan on bytes and assert it agrees with protobuf-c. */
static void assert_scan_agrees(const uint8_t *p, size_t n)
{
    char err[256] = "";
    event_view v;
    Protobus__EncapsulatedEvent *u;

    if (event_scan(p, n, &v, err, sizeof err) != 0)
        fail_msg("event_scan refused a valid event: %s", err);
    u = protobus__encapsulated_event__unpack(NULL, n, p);
    assert_non_null(u);
    assert_view_matches(&v, u);
    protobus__encapsulated_event__free_unpacked(u, NULL);
}

static void expect_err(int rc, int want, const char *err, const char *needle)
{
    assert_int_equal(rc, want);
    if (strstr(err, needle) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", err, needle);
}

/* --- splitter ------------------------------------------------------------------ */

static void test_split_byte_at_a_time(void **state)
{
    Protobus__Frame f = PROTOBUS__FRAME__INIT;
    Protobus__Hello h = PROTOBUS__HELLO__INIT;
    Protobus__Error e = PROTOBUS__ERROR__INIT;
    uint8_t big[300];
    buf frames[3], stream;
    size_t prefix[3], off = 0, start = 0, got = 0;

    memset(big, 'x', sizeof big);
    big[sizeof big - 1] = 0;
    f.id = 1;
    f.body_case = PROTOBUS__FRAME__BODY_HELLO;
    f.hello = &h;
    h.protocol_version = 1;
    h.name = "client";
    frames[0] = pack_delimited(&f);
    f.id = 0;
    f.body_case = PROTOBUS__FRAME__BODY__NOT_SET;
    frames[1] = pack_delimited(&f); /* zero-length frame */
    f.id = 300;
    f.body_case = PROTOBUS__FRAME__BODY_ERROR;
    f.error = &e;
    e.code = PROTOBUS__CODE__INVALID_ARGUMENT;
    e.message = (char *)big; /* a two-byte length prefix */
    frames[2] = pack_delimited(&f);

    stream.len = frames[0].len + frames[1].len + frames[2].len;
    stream.p = xmalloc(stream.len);
    for (int i = 0; i < 3; i++) {
        memcpy(stream.p + off, frames[i].p, frames[i].len);
        off += frames[i].len;
    }
    /* Length-prefix sizes: the error frame's body is over 127 bytes. */
    prefix[0] = 1;
    prefix[1] = 1;
    prefix[2] = 2;
    assert_true(frames[2].len > 130);

    /* Feed one more byte each round; take every frame that is complete. */
    for (size_t have = 0; have <= stream.len; have++) {
        for (;;) {
            frame_split s;
            char err[128];
            int rc = frame_split_next(stream.p + start, have - start, 1 << 20, &s, err, sizeof err);
            if (rc == PB_EINCOMPLETE) {
                if (got == 3) {
                    assert_int_equal(have - start, 0);
                    assert_int_equal(s.need, 0);
                } else if (have - start >= prefix[got])
                    assert_int_equal(s.need, frames[got].len);
                else
                    assert_int_equal(s.need, 0);
                break;
            }
            assert_int_equal(rc, 0);
            assert_int_equal(s.used, frames[got].len);
            assert_memory_equal(stream.p + start, frames[got].p, s.used);
            assert_int_equal(s.body.len, frames[got].len - prefix[got]);
            start += s.used;
            got++;
        }
    }
    assert_int_equal(got, 3);
    assert_int_equal(start, stream.len);
    for (int i = 0; i < 3; i++)
        free(frames[i].p);
    free(stream.p);
}

static void test_split_max_size(void **state)
{
    const uint64_t max = 1000;
    uint8_t pre[WIRE_VARINT_MAX];
    char err[128] = "";
    frame_split s;
    size_t k;
    uint8_t *whole;

    /* Exactly max: accepted, and with only the prefix it asks for all of it. */
    k = wire_put_varint(pre, max);
    assert_int_equal(frame_split_next(pre, k, max, &s, err, sizeof err), PB_EINCOMPLETE);
    assert_int_equal(s.need, k + max);
    whole = xmalloc(k + max);
    memcpy(whole, pre, k);
    memset(whole + k, 0, max);
    assert_int_equal(frame_split_next(whole, k + max, max, &s, err, sizeof err), 0);
    assert_int_equal(s.body.len, max);
    assert_int_equal(s.used, k + max);
    free(whole);

    /* max + 1: refused from the prefix alone, nothing else buffered. */
    k = wire_put_varint(pre, max + 1);
    expect_err(frame_split_next(pre, k, max, &s, err, sizeof err), PB_ETOOBIG, err,
               "frame of 1001 bytes exceeds the maximum of 1000 bytes");
    k = wire_put_varint(pre, UINT64_MAX);
    assert_int_equal(frame_split_next(pre, k, max, &s, err, sizeof err), PB_ETOOBIG);
}

static void test_split_bad_prefix(void **state)
{
    uint8_t p[11];
    char err[128] = "";
    frame_split s;

    memset(p, 0x80, sizeof p);
    p[10] = 0x01;
    expect_err(frame_split_next(p, 11, 1 << 20, &s, err, sizeof err), PB_EPROTO, err,
               "not a valid varint");
    assert_int_equal(frame_split_next(p, 10, 1 << 20, &s, err, sizeof err), PB_EPROTO);
    /* Nine continuation bytes could still end: need more, size unknown. */
    assert_int_equal(frame_split_next(p, 9, 1 << 20, &s, err, sizeof err), PB_EINCOMPLETE);
    assert_int_equal(s.need, 0);
    assert_int_equal(frame_split_next(NULL, 0, 1 << 20, &s, err, sizeof err), PB_EINCOMPLETE);
    assert_int_equal(s.need, 0);
}

/* A zero-length frame is an empty Frame: split off, then FRAME_NONE. */
static void test_split_zero_length(void **state)
{
    const uint8_t stream[] = {0x00, 0x02, 0x08, 0x05};
    frame_split s;
    frame_view fv;

    assert_int_equal(frame_split_next(stream, sizeof stream, 100, &s, NULL, 0), 0);
    assert_int_equal(s.used, 1);
    assert_int_equal(s.body.len, 0);
    assert_int_equal(frame_parse(s.body.p, s.body.len, &fv, NULL, 0), 0);
    assert_int_equal(fv.kind, FRAME_NONE);
    assert_int_equal(fv.id, 0);
    assert_int_equal(fv.unknown_field, 0);
    assert_int_equal(frame_split_next(stream + 1, 3, 100, &s, NULL, 0), 0);
    assert_int_equal(frame_parse(s.body.p, s.body.len, &fv, NULL, 0), 0);
    assert_int_equal(fv.id, 5);
}

/* --- Frame walker ------------------------------------------------------------------ */

static void test_frame_parse_every_kind(void **state)
{
    Protobus__Hello h = PROTOBUS__HELLO__INIT;
    Protobus__Publish pub = PROTOBUS__PUBLISH__INIT;
    Protobus__PublishAck ack = PROTOBUS__PUBLISH_ACK__INIT;
    Protobus__Subscribe sub = PROTOBUS__SUBSCRIBE__INIT;
    Protobus__Event ev = PROTOBUS__EVENT__INIT;
    Protobus__Error er = PROTOBUS__ERROR__INIT;
    Protobus__Subscribed sd = PROTOBUS__SUBSCRIBED__INIT;
    Protobus__CaughtUp cu = PROTOBUS__CAUGHT_UP__INIT;
    Protobus__ReplicaAck ra = PROTOBUS__REPLICA_ACK__INIT;
    Protobus__Ping pi = PROTOBUS__PING__INIT;
    Protobus__Pong po = PROTOBUS__PONG__INIT;
    Protobus__Records rr = PROTOBUS__RECORDS__INIT;
    Protobus__EncapsulatedEvent inner = PROTOBUS__ENCAPSULATED_EVENT__INIT;
    char *patterns[] = {"sensors\\..*"};
    const ProtobufCMessage *bodies[] = {&h.base,  &pub.base, &ack.base, &sub.base,
                                        &ev.base, &er.base,  &sd.base,  &cu.base,
                                        &ra.base, &pi.base,  &po.base,  &rr.base};
    const uint64_t ids[] = {0, 1, 127, 128, UINT64_MAX, 42, 7, 8, 9, 10, 1u << 20, 13};
    enum { NKINDS = sizeof bodies / sizeof bodies[0] };

    assert_int_equal(NKINDS, FRAME_KIND_MAX - 1);
    h.name = "x";
    sub.n_patterns = 1;
    sub.patterns = patterns;
    inner.topic = "t";
    ev.event = &inner;
    ev.partition = "p";
    er.code = PROTOBUS__CODE__DATA_LOSS;
    cu.history_events = 3;
    rr.partition = "p";
    rr.records = (ProtobufCBinaryData){.len = 3, .data = (uint8_t *)"abc"};
    for (int k = 0; k < NKINDS; k++) {
        Protobus__Frame f = PROTOBUS__FRAME__INIT;
        frame_view fv;
        char err[256] = "";
        buf whole, body = pack_msg(bodies[k]);

        f.id = ids[k];
        f.body_case = (Protobus__Frame__BodyCase)(k + 2);
        f.hello = (Protobus__Hello *)bodies[k]; /* any union member: same pointer */
        whole = pack_msg(&f.base);
        assert_int_equal(frame_parse(whole.p, whole.len, &fv, err, sizeof err), 0);
        assert_int_equal(fv.kind, k + 2);
        assert_true(fv.id == ids[k]);
        assert_true(slice_is(fv.body, body.p, body.len));
        assert_string_equal(frame_kind_name(fv.kind),
                            protobus__frame__descriptor.fields[k + 1].name);
        free(whole.p);
        free(body.p);
    }
    assert_string_equal(frame_kind_name(FRAME_NONE), "none");
}

static void test_frame_parse_unknown_body(void **state)
{
    /* id 9, then field 100 (a future frame type) and an unknown varint
     * (field 14). */
    const uint8_t body[] = {0x08, 0x09, 0xa2, 0x06, 0x02, 0x08, 0x01, 0x70, 0x01};
    Protobus__Frame *u;
    frame_view fv;

    assert_int_equal(frame_parse(body, sizeof body, &fv, NULL, 0), 0);
    assert_int_equal(fv.kind, FRAME_NONE);
    assert_int_equal(fv.id, 9);
    assert_int_equal(fv.unknown_field, 100);
    u = protobus__frame__unpack(NULL, sizeof body, body);
    assert_non_null(u);
    assert_int_equal(u->body_case, PROTOBUS__FRAME__BODY__NOT_SET);
    protobus__frame__free_unpacked(u, NULL);
}

static void test_frame_parse_errors(void **state)
{
    uint8_t trunc[5 + 12] = {0x08, 0x07, 0x1a, 0x84, 0x07};
    const uint8_t wrong_type[] = {0x18, 0x01};
    const uint8_t bad_id[] = {0x0a, 0x00};
    const uint8_t two[] = {0x1a, 0x00, 0x22, 0x00};
    const uint8_t bad_tag[] = {0x08, 0x01, 0x00};
    char err[256] = "";
    frame_view fv;

    memset(trunc + 5, 0, 12);
    expect_err(frame_parse(trunc, sizeof trunc, &fv, err, sizeof err), PB_EPROTO, err,
               "Frame field 3 (publish) at byte 2: length 900 exceeds remaining 12 bytes");
    expect_err(frame_parse(wrong_type, sizeof wrong_type, &fv, err, sizeof err), PB_EPROTO, err,
               "field 3 (publish) at byte 0: wire type 0 (varint), expected 2");
    expect_err(frame_parse(bad_id, sizeof bad_id, &fv, err, sizeof err), PB_EPROTO, err,
               "field 1 (id)");
    expect_err(frame_parse(two, sizeof two, &fv, err, sizeof err), PB_EPROTO, err,
               "field 4 (publish_ack) at byte 2: a second body; the frame already has publish");
    expect_err(frame_parse(bad_tag, sizeof bad_tag, &fv, err, sizeof err), PB_EPROTO, err,
               "Frame: tag at byte 2 has invalid field number 0");
}

/* --- Publish walker ---------------------------------------------------------------- */

static void test_publish_walk(void **state)
{
    struct full_event fe[3];
    Protobus__EncapsulatedEvent *evs[3];
    Protobus__Publish pub = PROTOBUS__PUBLISH__INIT;
    uint8_t payload[40];
    char topics[3][24];
    publish_iter it;
    wire_slice s;
    char err[256] = "";
    buf whole;

    memset(payload, 0xab, sizeof payload);
    for (int i = 0; i < 3; i++) {
        snprintf(topics[i], sizeof topics[i], "topic.%d", i);
        full_event_init(&fe[i], topics[i], payload, (size_t)i * 10);
        evs[i] = &fe[i].ev;
    }
    pub.n_events = 3;
    pub.events = evs;
    pub.no_ack = 1;
    whole = pack_msg(&pub.base);
    assert_int_equal(publish_open(whole.p, whole.len, &it, err, sizeof err), 0);
    assert_int_equal(it.n_events, 3);
    assert_true(it.no_ack);
    for (int i = 0; i < 3; i++) {
        buf one = pack_msg(&evs[i]->base);
        assert_int_equal(publish_next(&it, &s), 0);
        assert_true(slice_is(s, one.p, one.len));
        assert_scan_agrees(s.p, s.len);
        free(one.p);
    }
    assert_int_equal(publish_next(&it, &s), PB_EEOF);
    free(whole.p);

    /* Hand order: no_ack first (then overridden), an unknown field between. */
    const uint8_t hand[] = {0x10, 0x01, 0x0a, 0x00, 0x25, 1,    2,   3,
                            4,    0x10, 0x00, 0x0a, 0x02, 0x0a, 0x00};
    assert_int_equal(publish_open(hand, sizeof hand, &it, err, sizeof err), 0);
    assert_int_equal(it.n_events, 2);
    assert_false(it.no_ack);
    assert_int_equal(publish_next(&it, &s), 0);
    assert_int_equal(s.len, 0);
    assert_int_equal(publish_next(&it, &s), 0);
    assert_int_equal(s.len, 2);
    assert_int_equal(publish_next(&it, &s), PB_EEOF);

    const uint8_t bad[] = {0x08, 0x01};
    expect_err(publish_open(bad, sizeof bad, &it, err, sizeof err), PB_EPROTO, err,
               "Publish field 1 (events) at byte 0: wire type 0");

    /* Expectations (field 3) are counted and checked like protobuf-c does. */
    Protobus__ExpectLast ex[2] = {PROTOBUS__EXPECT_LAST__INIT, PROTOBUS__EXPECT_LAST__INIT};
    Protobus__ExpectLast *exp[2] = {&ex[0], &ex[1]};
    ex[0].topic = "topic.0";
    ex[0].offset = 41;
    ex[1].topic = "topic.1";
    ex[1].none = 1;
    pub.n_expect = 2;
    pub.expect = exp;
    whole = pack_msg(&pub.base);
    assert_int_equal(publish_open(whole.p, whole.len, &it, err, sizeof err), 0);
    assert_int_equal(it.n_events, 3);
    assert_int_equal(it.n_expect, 2);
    free(whole.p);
    const uint8_t expect_varint[] = {0x18, 0x01};
    expect_err(publish_open(expect_varint, sizeof expect_varint, &it, err, sizeof err), PB_EPROTO,
               err, "Publish field 3 (expect) at byte 0: wire type 0");
    const uint8_t expect_bad_topic[] = {0x1a, 0x03, 0x0a, 0x01, 0xff};
    expect_err(publish_open(expect_bad_topic, sizeof expect_bad_topic, &it, err, sizeof err),
               PB_EPROTO, err,
               "Publish field 3 (expect) at byte 0: ExpectLast field 1 (topic) at byte 2: invalid "
               "UTF-8");
    const uint8_t expect_bad_offset[] = {0x1a, 0x02, 0x1a, 0x00};
    expect_err(publish_open(expect_bad_offset, sizeof expect_bad_offset, &it, err, sizeof err),
               PB_EPROTO, err, "ExpectLast field 3 (offset) at byte 2: wire type 2");
}

/* --- event scanner ------------------------------------------------------------------ */

static void test_event_scan_full(void **state)
{
    struct full_event fe;
    uint8_t payload[] = {0, 1, 2, 3, 0xff};
    event_view v;
    event_tag_iter it;
    event_tag t;
    int seen = 0;
    buf b;

    full_event_init(&fe, "sensors.kitchen", payload, sizeof payload);
    b = pack_msg(&fe.ev.base);
    assert_int_equal(event_scan(b.p, b.len, &v, NULL, 0), 0);
    assert_true(slice_is_str(v.topic, "sensors.kitchen"));
    assert_true(slice_is_str(v.type_url, "type.googleapis.com/demo.Reading"));
    assert_true(slice_is(v.value, payload, sizeof payload));
    assert_true(v.has_payload);
    assert_int_equal(v.payload_size, sizeof payload);
    assert_true(v.client_event_time.present);
    assert_true(v.client_event_time.ns == -5 * NS + 7);
    assert_true(v.client_transmit_time.ns == 1700000000 * NS + 999999999);
    assert_true(v.server_receive_time.ns == INT64_MAX);
    assert_int_equal(v.n_tags, 4);
    event_tags_begin(&v, &it);
    while (event_tags_next(&it, &t)) {
        assert_true(slice_is_str(t.key, tag_keys[seen]));
        assert_true(slice_is_str(t.value, tag_values[seen]));
        seen++;
    }
    assert_int_equal(seen, 4);
    assert_scan_agrees(b.p, b.len);
    free(b.p);
}

static void test_event_scan_empty_and_minimal(void **state)
{
    /* Explicit empty strings, a negative payload_size, an empty Any and tag. */
    const uint8_t hand[] = {0x0a, 0x00, 0x12, 0x00, 0x30, 0xff, 0xff, 0xff, 0xff, 0xff,
                            0xff, 0xff, 0xff, 0xff, 0x01, 0x3a, 0x00, 0x1a, 0x00};
    event_view v;
    event_tag_iter it;
    event_tag t;

    assert_int_equal(event_scan((const uint8_t *)"", 0, &v, NULL, 0), 0);
    assert_int_equal(v.topic.len, 0);
    assert_false(v.has_payload);
    assert_false(v.client_event_time.present);
    assert_scan_agrees((const uint8_t *)"", 0);

    assert_int_equal(event_scan(hand, sizeof hand, &v, NULL, 0), 0);
    assert_int_equal(v.payload_size, -1);
    assert_true(v.has_payload);
    assert_int_equal(v.type_url.len, 0);
    assert_true(v.client_event_time.present);
    assert_true(v.client_event_time.ns == 0);
    assert_int_equal(v.n_tags, 1);
    event_tags_begin(&v, &it);
    assert_true(event_tags_next(&it, &t));
    assert_int_equal(t.key.len, 0);
    assert_int_equal(t.value.len, 0);
    assert_false(event_tags_next(&it, &t));
    assert_scan_agrees(hand, sizeof hand);
}

static void test_event_scan_big_payload(void **state)
{
    const size_t n = 4u << 20;
    uint8_t *payload = xmalloc(n);
    struct full_event fe;
    event_view v;
    buf b;

    for (size_t i = 0; i < n; i++)
        payload[i] = (uint8_t)(i * 31 + 7);
    full_event_init(&fe, "big", payload, n);
    b = pack_msg(&fe.ev.base);
    assert_int_equal(event_scan(b.p, b.len, &v, NULL, 0), 0);
    assert_int_equal(v.value.len, n);
    assert_true(v.value.p >= b.p && v.value.p + n <= b.p + b.len); /* zero-copy */
    assert_memory_equal(v.value.p, payload, n);
    assert_scan_agrees(b.p, b.len);
    free(b.p);
    free(payload);
}

/* Timestamps at the edges of int64 nanoseconds, and past them. */
static void test_event_scan_timestamps(void **state)
{
    static const struct {
        int64_t seconds;
        int32_t nanos;
        int64_t ns;
    } ok[] = {
        {0, 0, 0},
        {-1, 999999999, -1},
        {-1, 0, -NS},
        {-2, 999999999, -NS - 1},
        {9223372036, 854775807, INT64_MAX},
        {-9223372037, 145224192, INT64_MIN},
        {1700000000, 123456789, 1700000000123456789LL},
    };
    Protobus__EncapsulatedEvent ev = PROTOBUS__ENCAPSULATED_EVENT__INIT;
    Google__Protobuf__Timestamp t = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    char err[256] = "";
    event_view v;
    buf b;

    ev.client_transmit_time = &t;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        t.seconds = ok[i].seconds;
        t.nanos = ok[i].nanos;
        b = pack_msg(&ev.base);
        assert_int_equal(event_scan(b.p, b.len, &v, err, sizeof err), 0);
        assert_true(v.client_transmit_time.present);
        assert_true(v.client_transmit_time.ns == ok[i].ns);
        free(b.p);
    }

    t.seconds = 9223372036;
    t.nanos = 854775808; /* INT64_MAX + 1 ns */
    b = pack_msg(&ev.base);
    expect_err(event_scan(b.p, b.len, &v, err, sizeof err), PB_EPROTO, err,
               "field 4 (client_transmit_time) at byte 0: 9223372036 seconds is outside");
    free(b.p);
    t.seconds = -9223372037;
    t.nanos = 145224191;
    b = pack_msg(&ev.base);
    assert_int_equal(event_scan(b.p, b.len, &v, err, sizeof err), PB_EPROTO);
    free(b.p);
    t.seconds = 0;
    t.nanos = 1000000000;
    b = pack_msg(&ev.base);
    expect_err(event_scan(b.p, b.len, &v, err, sizeof err), PB_EPROTO, err,
               "Timestamp field 2 (nanos) at byte 2: nanos 1000000000 out of range");
    free(b.p);
    t.nanos = -1;
    b = pack_msg(&ev.base);
    expect_err(event_scan(b.p, b.len, &v, err, sizeof err), PB_EPROTO, err,
               "nanos -1 out of range");
    free(b.p);
}

/* Repeated occurrences: last scalar wins, message fields merge. */
static void test_event_scan_repeated_fields(void **state)
{
    const uint8_t hand[] = {
        0x0a, 0x01, 'a',                    /* topic "a" */
        0x1a, 0x04, 0x08, 0x05, 0x10, 0x07, /* client_event_time {5 s, 7 ns} */
        0x0a, 0x01, 'b',                    /* topic "b" wins */
        0x1a, 0x02, 0x08, 0x09,             /* {9 s}: nanos 7 kept (merge) */
        0x30, 0x01, 0x30, 0x02,             /* payload_size 1 then 2 */
    };
    event_view v;

    assert_int_equal(event_scan(hand, sizeof hand, &v, NULL, 0), 0);
    assert_true(slice_is_str(v.topic, "b"));
    assert_int_equal(v.payload_size, 2);
    assert_true(v.client_event_time.ns == 9 * NS + 7);
}

static void test_event_scan_errors(void **state)
{
    static const struct {
        const uint8_t *p;
        size_t n;
        const char *needle;
    } cases[] = {
        {(const uint8_t *)"\x08\x01", 2, "field 1 (topic) at byte 0: wire type 0 (varint)"},
        {(const uint8_t *)"\x0a\x02\x61\xff", 4,
         "field 1 (topic) at byte 0: invalid UTF-8 at byte 3"},
        {(const uint8_t *)"\x12\x03\x0a\x01\xc3", 5,
         "field 2 (tags) at byte 0: TagsEntry field 1 (key) at byte 2: invalid UTF-8 at byte 4"},
        {(const uint8_t *)"\x12\x02\x10\x01", 4,
         "TagsEntry field 2 (value) at byte 2: wire type 0"},
        {(const uint8_t *)"\x1a\x02\x0a\x00", 4,
         "Timestamp field 1 (seconds) at byte 2: wire type 2"},
        {(const uint8_t *)"\x2a\x01\x08", 3, "field 5 (server_receive_time) at byte 0: Timestamp"},
        {(const uint8_t *)"\x32\x00", 2, "field 6 (payload_size) at byte 0: wire type 2"},
        {(const uint8_t *)"\x3a\x02\x10\x01", 4, "Any field 2 (value) at byte 2: wire type 0"},
        {(const uint8_t *)"\x3a\x03\x0a\x01\x80", 5,
         "Any field 1 (type_url) at byte 2: invalid UTF-8"},
        {(const uint8_t *)"\x0a\x05\x61", 3,
         "field 1 (topic) at byte 0: length 5 exceeds remaining 1"},
        {(const uint8_t *)"\x4b\x4c", 2, "field 9 (unknown) at byte 0: groups"},
        {(const uint8_t *)"\x08", 1, "field 1 (topic) at byte 0: value varint at byte 1 runs past"},
    };
    char err[256];
    event_view v;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err[0] = 0;
        expect_err(event_scan(cases[i].p, cases[i].n, &v, err, sizeof err), PB_EPROTO, err,
                   cases[i].needle);
        assert_non_null(strstr(err, "EncapsulatedEvent"));
    }
}

/* EncapsulatedEvent.id (field 8): UTF-8, at most 64 bytes; a wrong wire
 * type is refused as protobuf-c refuses it. */
static void test_event_scan_id(void **state)
{
    Protobus__EncapsulatedEvent ev = PROTOBUS__ENCAPSULATED_EVENT__INIT;
    char id[EVENT_ID_MAX_BYTES + 2];
    char err[256] = "";
    event_view v;
    buf b;

    memset(id, 'i', sizeof id - 1);
    id[EVENT_ID_MAX_BYTES] = '\0';
    ev.topic = "a.b";
    ev.id = id;
    b = pack_msg(&ev.base); /* 64 bytes: the most accepted */
    assert_int_equal(event_scan(b.p, b.len, &v, err, sizeof err), 0);
    assert_int_equal(v.id.len, EVENT_ID_MAX_BYTES);
    assert_scan_agrees(b.p, b.len);
    free(b.p);

    id[EVENT_ID_MAX_BYTES] = 'i';
    id[EVENT_ID_MAX_BYTES + 1] = '\0';
    b = pack_msg(&ev.base);
    expect_err(event_scan(b.p, b.len, &v, err, sizeof err), PB_EPROTO, err,
               "EncapsulatedEvent field 8 (id) at byte 5: 65 bytes, over the maximum of 64 bytes");
    free(b.p);

    const uint8_t varint_id[] = {0x40, 0x01};
    expect_err(event_scan(varint_id, sizeof varint_id, &v, err, sizeof err), PB_EPROTO, err,
               "field 8 (id) at byte 0: wire type 0 (varint)");
    assert_null(protobus__encapsulated_event__unpack(NULL, sizeof varint_id, varint_id));
    const uint8_t bad_utf8[] = {0x42, 0x02, 0x61, 0xc3};
    expect_err(event_scan(bad_utf8, sizeof bad_utf8, &v, err, sizeof err), PB_EPROTO, err,
               "field 8 (id) at byte 0: invalid UTF-8 at byte 3");
    /* The last id wins, as for every string. */
    const uint8_t two[] = {0x42, 0x01, 0x61, 0x42, 0x01, 0x62};
    assert_int_equal(event_scan(two, sizeof two, &v, err, sizeof err), 0);
    assert_true(slice_is_str(v.id, "b"));
    assert_scan_agrees(two, sizeof two);
}

/* Map semantics: for a repeated key the last entry wins. */
static void test_event_tags_last_wins(void **state)
{
    const uint8_t hand[] = {
        0x12, 0x06, 0x0a, 0x01, 'a', 0x12, 0x01, '1',                  /* a=1 */
        0x0a, 0x01, 't',                                               /* topic between entries */
        0x12, 0x06, 0x0a, 0x01, 'b', 0x12, 0x01, '2',                  /* b=2 */
        0x12, 0x09, 0x0a, 0x01, 'a', 0x12, 0x01, 'x', 0x12, 0x01, '3', /* a=x then 3 in one entry */
        0x30, 0x05,
    };
    event_view v;
    event_tag_iter it;
    event_tag t;
    wire_slice val;

    assert_int_equal(event_scan(hand, sizeof hand, &v, NULL, 0), 0);
    assert_int_equal(v.n_tags, 3);
    event_tags_begin(&v, &it);
    assert_true(event_tags_next(&it, &t));
    assert_true(slice_is_str(t.key, "b") && slice_is_str(t.value, "2"));
    assert_true(event_tags_next(&it, &t));
    assert_true(slice_is_str(t.key, "a") && slice_is_str(t.value, "3"));
    assert_false(event_tags_next(&it, &t));
    assert_int_equal(event_tag_get(&v, "a", 1, &val), 0);
    assert_true(slice_is_str(val, "3"));
    assert_int_equal(event_tag_get(&v, "c", 1, &val), PB_ENOTFOUND);
    assert_int_equal(event_tag_get(&v, "", 0, &val), PB_ENOTFOUND);
    assert_scan_agrees(hand, sizeof hand);
}

static void test_topic_validate(void **state)
{
    static const struct {
        const char *topic;
        const char *needle; /* NULL: valid */
    } cases[] = {
        {"sensors.kitchen.temp", NULL},
        {"a", NULL},
        {"caf\xc3\xa9/\xe2\x82\xac", NULL},
        {"", "topic is empty"},
        {"a b", "topic contains whitespace (U+0020) at byte 1"},
        {"abcd\tx", "topic contains whitespace (U+0009) at byte 4"},
        {"a\r", "whitespace (U+000D) at byte 1"},
        {"a\n", "whitespace (U+000A)"},
        {"a\v", "whitespace (U+000B)"},
        {"a\f", "whitespace (U+000C)"},
        {"x\xc2\xa0y", "whitespace (U+00A0) at byte 1"},
        {"x\xe2\x80\xa8", "whitespace (U+2028) at byte 1"},
        {"x\xe2\x80\xa9", "whitespace (U+2029)"},
        {"x\xe3\x80\x80", "whitespace (U+3000)"},
        {"x\xc2\x85", "whitespace (U+0085)"},
        {"a\x01", "control character (U+0001) at byte 1"},
        {"a\x7f", "control character (U+007F)"},
        {"a\xc2\x9b", "control character (U+009B)"},
        {"ab\xff", "topic is not valid UTF-8 at byte 2"},
        {"ab\xc0\xaf", "not valid UTF-8 at byte 2"},
    };
    char err[128];
    char long_topic[300];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = topic_validate((const uint8_t *)cases[i].topic, strlen(cases[i].topic), err,
                                sizeof err);
        if (cases[i].needle == NULL)
            assert_int_equal(rc, 0);
        else
            expect_err(rc, PB_EINVAL, err, cases[i].needle);
    }
    /* A NUL inside the bytes is a control character, not an end. */
    expect_err(topic_validate((const uint8_t *)"a\0b", 3, err, sizeof err), PB_EINVAL, err,
               "control character (U+0000) at byte 1");
    memset(long_topic, 'x', sizeof long_topic);
    assert_int_equal(topic_validate((const uint8_t *)long_topic, TOPIC_MAX_BYTES, err, sizeof err),
                     0);
    expect_err(topic_validate((const uint8_t *)long_topic, TOPIC_MAX_BYTES + 1, err, sizeof err),
               PB_EINVAL, err, "topic has 256 bytes, the maximum is 255");
    expect_err(topic_validate((const uint8_t *)long_topic, 300, err, sizeof err), PB_EINVAL, err,
               "topic has 300 bytes, the maximum is 255");
}

/* The ASCII fast path of topic_validate decides every byte exactly as the
 * full check does: each byte value at each position of an ASCII topic. */
static void test_topic_validate_every_byte(void **state)
{
    uint8_t topic[24];
    char err[160], want[96];

    for (unsigned b = 0; b < 256; b++) {
        for (size_t at = 0; at < 20; at++) {
            memset(topic, 'x', sizeof topic);
            topic[at] = (uint8_t)b;
            int rc = topic_validate(topic, sizeof topic, err, sizeof err);
            if (b >= 0x21 && b <= 0x7e) {
                assert_int_equal(rc, 0);
                continue;
            }
            if ((b >= 0x09 && b <= 0x0d) || b == 0x20)
                snprintf(want, sizeof want, "whitespace (U+%04X) at byte %zu", b, at);
            else if (b < 0x80)
                snprintf(want, sizeof want, "control character (U+%04X) at byte %zu", b, at);
            else /* a lone byte >= 0x80 followed by 'x' is never UTF-8 */
                snprintf(want, sizeof want, "not valid UTF-8 at byte %zu", at);
            expect_err(rc, PB_EINVAL, err, want);
        }
    }
    /* After a long ASCII run, multi-byte characters are still checked. */
    memcpy(topic, "abcdefghijklmnopqrs\xe2\x80\xa8yz", 24);
    expect_err(topic_validate(topic, 24, err, sizeof err), PB_EINVAL, err,
               "whitespace (U+2028) at byte 19");
    memcpy(topic, "abcdefghijklmnopqrs\xe2\x82\xacyz", 24);
    assert_int_equal(topic_validate(topic, 24, err, sizeof err), 0);
}

/* frame_put_event_header_n: the name need not be NUL-terminated, gives the
 * bytes frame_put_event_header gives, and repairs bad UTF-8 in the name. */
static void test_event_header_n(void **state)
{
    uint8_t a[128], b[128];
    const char name[] = "sensors-euXXXX"; /* only the first 10 bytes are the name */
    size_t ka = frame_put_event_header(a, sizeof a, 9, "sensors-eu", 123456, 150);
    size_t kb = frame_put_event_header_n(b, sizeof b, 9, name, 10, 123456, 150);

    assert_int_equal(ka, kb);
    assert_memory_equal(a, b, ka);
    assert_int_equal(frame_put_event_header_n(NULL, 0, 9, name, 10, 123456, 150), ka);
    assert_int_equal(frame_put_event_header_n(b, ka - 1, 9, name, 10, 123456, 150), ka);

    /* Invalid UTF-8 in a partition name (a capture group can cut a
     * character) goes out as '?', so the frame stays decodable. */
    const char bad[] = "part\xc3";
    size_t k = frame_put_event_header_n(b, sizeof b, 0, bad, 5, 0, 0);
    frame_split sp;
    frame_view fv;
    event_frame_view efv;
    assert_int_equal(frame_split_next(b, k, 1024, &sp, NULL, 0), 0);
    assert_int_equal(frame_parse(sp.body.p, sp.body.len, &fv, NULL, 0), 0);
    assert_int_equal(event_frame_parse(fv.body.p, fv.body.len, &efv, NULL, 0), 0);
    assert_true(slice_is_str(efv.partition, "part?"));
}

/* publish_restart walks a copy without checking it again: the events it
 * gives point into the copy, the same ones in the same order. */
static void test_publish_restart_on_copy(void **state)
{
    struct full_event fe[3];
    Protobus__EncapsulatedEvent *evs[3];
    Protobus__Publish pub = PROTOBUS__PUBLISH__INIT;
    uint8_t payload[8];
    publish_iter it;
    wire_slice s;
    char topic[3][16];

    memset(payload, 1, sizeof payload);
    for (int i = 0; i < 3; i++) {
        snprintf(topic[i], sizeof topic[i], "t%d", i);
        full_event_init(&fe[i], topic[i], payload, (size_t)i + 1);
        evs[i] = &fe[i].ev;
    }
    pub.n_events = 3;
    pub.events = evs;
    buf orig = pack_msg(&pub.base);
    uint8_t *copy = xmalloc(orig.len);
    memcpy(copy, orig.p, orig.len);

    assert_int_equal(publish_open(orig.p, orig.len, &it, NULL, 0), 0);
    assert_int_equal(publish_next(&it, &s), 0); /* part-way through the original */
    publish_restart(&it, copy);
    for (int i = 0; i < 3; i++) {
        event_view v;
        assert_int_equal(publish_next(&it, &s), 0);
        assert_true(s.p >= copy && s.p + s.len <= copy + orig.len);
        assert_int_equal(event_scan(s.p, s.len, &v, NULL, 0), 0);
        assert_true(slice_is_str(v.topic, topic[i]));
    }
    assert_int_equal(publish_next(&it, &s), PB_EEOF);
    free(copy);
    free(orig.p);
}

/* --- encoders ------------------------------------------------------------------------ */

/* Timestamp for ns, floor-divided, as protobuf requires for negative times. */
static void split_ns(int64_t ns, int64_t *s, int32_t *n)
{
    *s = ns / NS;
    *n = (int32_t)(ns % NS);
    if (*n < 0) {
        *n += (int32_t)NS;
        *s -= 1;
    }
}

static void test_receive_time_suffix(void **state)
{
    static const int64_t times[] = {0,
                                    1,
                                    -1,
                                    NS,
                                    -NS,
                                    -NS - 1,
                                    NS - 1,
                                    1700000000LL * NS, /* nanos 0: still written */
                                    1700000000123456789LL,
                                    -1700000000123456789LL,
                                    INT64_MAX,
                                    INT64_MIN};
    struct full_event fe;
    uint8_t payload[] = "reading";
    buf with5, without5;
    Protobus__EncapsulatedEvent plain = PROTOBUS__ENCAPSULATED_EVENT__INIT;

    /* The client already set server_receive_time, with nonzero nanos. */
    full_event_init(&fe, "t", payload, sizeof payload);
    fe.times[2].seconds = 5;
    fe.times[2].nanos = 7;
    with5 = pack_msg(&fe.ev.base);
    plain.topic = "t";
    without5 = pack_msg(&plain.base);

    for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
        const buf *bases[2] = {&with5, &without5};
        uint8_t suf[EVENT_RECEIVE_TIME_MAX + 1];
        size_t k = event_put_receive_time(NULL, 0, times[i]);
        int64_t want_s;
        int32_t want_n;

        split_ns(times[i], &want_s, &want_n);
        assert_true(k <= EVENT_RECEIVE_TIME_MAX);
        memset(suf, 0xee, sizeof suf);
        assert_int_equal(event_put_receive_time(suf, k - 1, times[i]), k);
        assert_int_equal(suf[0], 0xee); /* too small: nothing written */
        assert_int_equal(event_put_receive_time(suf, sizeof suf, times[i]), k);
        assert_int_equal(suf[k], 0xee);

        for (int b = 0; b < 2; b++) {
            size_t n = bases[b]->len + k;
            uint8_t *ev = xmalloc(n);
            Protobus__EncapsulatedEvent *u;
            event_view v;

            memcpy(ev, bases[b]->p, bases[b]->len);
            memcpy(ev + bases[b]->len, suf, k);
            u = protobus__encapsulated_event__unpack(NULL, n, ev);
            assert_non_null(u);
            assert_non_null(u->server_receive_time);
            assert_true(u->server_receive_time->seconds == want_s);
            assert_int_equal(u->server_receive_time->nanos, want_n);
            assert_int_equal(event_scan(ev, n, &v, NULL, 0), 0);
            assert_true(v.server_receive_time.present);
            assert_true(v.server_receive_time.ns == times[i]);
            if (b == 0) /* the client's other fields are untouched */
                assert_true(v.client_event_time.ns == -5 * NS + 7);
            protobus__encapsulated_event__free_unpacked(u, NULL);
            free(ev);
        }
    }
    free(with5.p);
    free(without5.p);
}

static void test_delimiter(void **state)
{
    static const size_t lens[] = {0, 1, 127, 128, 16383, 16384, 1u << 21, (size_t)1 << 35};
    uint8_t out[WIRE_VARINT_MAX];

    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        size_t k = frame_put_delimiter(out, sizeof out, lens[i]);
        uint64_t v;
        assert_int_equal(k, wire_varint_size(lens[i]));
        assert_int_equal(wire_varint_decode(out, k, &v), (int)k);
        assert_true(v == lens[i]);
        assert_int_equal(frame_put_delimiter(out, k - 1, lens[i]), k);
    }
}

/* Header + stored bytes == protobuf-c's packing of the same Event frame. */
static void test_event_header(void **state)
{
    static const uint64_t ids[] = {0, 5, UINT64_MAX};
    static const uint64_t offsets[] = {0, 1, UINT64_MAX};
    char long_part[201];
    const char *parts[] = {"", "sensors-eu", long_part};
    const size_t big = 300000;
    uint8_t *payload = xmalloc(big);
    struct full_event fe;
    Protobus__EncapsulatedEvent empty = PROTOBUS__ENCAPSULATED_EVENT__INIT;
    buf events[3];

    memset(long_part, 'p', 200);
    long_part[200] = 0;
    memset(payload, 0x5a, big);
    events[0] = pack_msg(&empty.base); /* zero bytes */
    full_event_init(&fe, "small", payload, 3);
    events[1] = pack_msg(&fe.ev.base);
    full_event_init(&fe, "large", payload, big);
    events[2] = pack_msg(&fe.ev.base);

    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 3; c++)
                for (int d = 0; d < 3; d++) {
                    Protobus__Frame f = PROTOBUS__FRAME__INIT;
                    Protobus__Event e = PROTOBUS__EVENT__INIT;
                    const buf *ev = &events[d];
                    size_t h =
                        frame_put_event_header(NULL, 0, ids[a], parts[b], offsets[c], ev->len);
                    size_t n = h + ev->len;
                    uint8_t *whole = xmalloc(n);
                    frame_split s;
                    frame_view fv;
                    event_frame_view efv;
                    buf pc;

                    assert_true(h <= FRAME_EVENT_HEADER_MAX(strlen(parts[b])));
                    assert_int_equal(
                        frame_put_event_header(whole, h - 1, ids[a], parts[b], offsets[c], ev->len),
                        h);
                    assert_int_equal(
                        frame_put_event_header(whole, h, ids[a], parts[b], offsets[c], ev->len), h);
                    memcpy(whole + h, ev->p, ev->len);

                    /* Hand -> protobuf-c: identical bytes, and unpack agrees. */
                    f.id = ids[a];
                    f.body_case = PROTOBUS__FRAME__BODY_EVENT;
                    f.event = &e;
                    e.partition = (char *)parts[b];
                    e.offset = offsets[c];
                    e.event = protobus__encapsulated_event__unpack(NULL, ev->len, ev->p);
                    assert_non_null(e.event);
                    pc = pack_delimited(&f);
                    assert_int_equal(pc.len, n);
                    assert_memory_equal(pc.p, whole, n);
                    protobus__encapsulated_event__free_unpacked(e.event, NULL);

                    /* protobuf-c -> hand walkers. */
                    assert_int_equal(frame_split_next(pc.p, pc.len, n, &s, NULL, 0), 0);
                    assert_int_equal(s.used, n);
                    assert_int_equal(frame_parse(s.body.p, s.body.len, &fv, NULL, 0), 0);
                    assert_int_equal(fv.kind, FRAME_EVENT);
                    assert_true(fv.id == ids[a]);
                    assert_int_equal(event_frame_parse(fv.body.p, fv.body.len, &efv, NULL, 0), 0);
                    assert_true(slice_is_str(efv.partition, parts[b]));
                    assert_true(efv.offset == offsets[c]);
                    assert_true(slice_is(efv.event, ev->p, ev->len));
                    assert_true(efv.event.p == pc.p + h); /* the stored bytes, in place */
                    assert_scan_agrees(efv.event.p, efv.event.len);
                    free(pc.p);
                    free(whole);
                }
    for (int i = 0; i < 3; i++)
        free(events[i].p);
    free(payload);
}

static void test_event_frame_parse_errors(void **state)
{
    const uint8_t none[] = {0x0a, 0x01, 'p', 0x10, 0x01};
    const uint8_t twice[] = {0x1a, 0x00, 0x1a, 0x00};
    const uint8_t bad_part[] = {0x0a, 0x01, 0xff, 0x1a, 0x00};
    char err[256] = "";
    event_frame_view v;

    expect_err(event_frame_parse(none, sizeof none, &v, err, sizeof err), PB_EPROTO, err,
               "Event has no event (field 3)");
    expect_err(event_frame_parse(twice, sizeof twice, &v, err, sizeof err), PB_EPROTO, err,
               "Event field 3 (event) at byte 2: a second event; the first is at byte 0");
    expect_err(event_frame_parse(bad_part, sizeof bad_part, &v, err, sizeof err), PB_EPROTO, err,
               "Event field 1 (partition) at byte 0: invalid UTF-8 at byte 2");
}

/* Walk a PublishAck body and compare it with protobuf-c's unpack of it. */
static void assert_ack_agrees(const uint8_t *p, size_t n)
{
    Protobus__PublishAck *u = protobus__publish_ack__unpack(NULL, n, p);
    char err[256] = "";
    publish_ack_iter it;
    wire_slice name;
    uint32_t idx;
    uint64_t off;

    assert_non_null(u);
    if (publish_ack_open(p, n, &it, err, sizeof err) != 0)
        fail_msg("publish_ack_open: %s", err);
    assert_int_equal(it.n_partitions, u->n_partitions);
    assert_int_equal(it.n_events, u->n_offsets);
    assert_int_equal(u->n_partition_index, u->n_offsets);
    for (size_t i = 0; i < u->n_partitions; i++) {
        assert_int_equal(publish_ack_next_partition(&it, &name), 0);
        assert_true(slice_is_unpacked(name, u->partitions[i]));
    }
    assert_int_equal(publish_ack_next_partition(&it, &name), PB_EEOF);
    for (size_t i = 0; i < u->n_offsets; i++) {
        assert_int_equal(publish_ack_next(&it, &idx, &off), 0);
        assert_int_equal(idx, u->partition_index[i]);
        assert_true(off == u->offsets[i]);
    }
    assert_int_equal(publish_ack_next(&it, &idx, &off), PB_EEOF);
    protobus__publish_ack__free_unpacked(u, NULL);
}

static void test_publish_ack(void **state)
{
    static const size_t counts[] = {0, 1, 1000, 100000};
    const char *names[] = {"alpha", "", "beta-\xc3\xa9"};

    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        size_t n = counts[c], np = n ? 3 : 0;
        uint32_t *idx = xmalloc(n * sizeof *idx);
        uint64_t *off = xmalloc(n * sizeof *off);
        Protobus__Frame f = PROTOBUS__FRAME__INIT;
        Protobus__PublishAck a = PROTOBUS__PUBLISH_ACK__INIT;
        size_t k;
        uint8_t *hand;
        buf pc;
        frame_split s;
        frame_view fv;

        for (size_t i = 0; i < n; i++) {
            idx[i] = (uint32_t)(i % 3);
            off[i] = i == 1 ? UINT64_MAX : (uint64_t)i * 0x9e3779b97f4aull >> (i % 40);
        }
        k = frame_put_publish_ack(NULL, 0, 77, names, np, idx, off, n);
        hand = xmalloc(k);
        assert_int_equal(frame_put_publish_ack(hand, k - 1, 77, names, np, idx, off, n), k);
        assert_int_equal(frame_put_publish_ack(hand, k, 77, names, np, idx, off, n), k);

        f.id = 77;
        f.body_case = PROTOBUS__FRAME__BODY_PUBLISH_ACK;
        f.publish_ack = &a;
        a.n_partitions = np;
        a.partitions = (char **)names;
        a.n_partition_index = n;
        a.partition_index = idx;
        a.n_offsets = n;
        a.offsets = off;
        pc = pack_delimited(&f);
        assert_int_equal(pc.len, k);
        assert_memory_equal(pc.p, hand, k);

        assert_int_equal(frame_split_next(hand, k, k, &s, NULL, 0), 0);
        assert_int_equal(frame_parse(s.body.p, s.body.len, &fv, NULL, 0), 0);
        assert_int_equal(fv.kind, FRAME_PUBLISH_ACK);
        assert_int_equal(fv.id, 77);
        assert_ack_agrees(fv.body.p, fv.body.len);
        free(pc.p);
        free(hand);
        free(idx);
        free(off);
    }
}

/* Decoders accept unpacked and mixed encodings of the repeated numbers. */
static void test_publish_ack_unpacked_and_errors(void **state)
{
    const uint8_t mixed[] = {
        0x0a, 0x01, 'a',  0x0a, 0x01, 'b', /* partitions a, b */
        0x10, 0x01,                        /* partition_index 1 (unpacked) */
        0x1a, 0x01, 0x0a,                  /* offsets [10] (packed) */
        0x12, 0x01, 0x00,                  /* partition_index [0] (packed) */
        0x18, 0x14,                        /* offsets 20 (unpacked) */
    };
    const uint8_t mismatch[] = {0x0a, 0x01, 'a', 0x10, 0x00, 0x10, 0x00, 0x18, 0x01};
    const uint8_t out_of_range[] = {0x0a, 0x01, 'a', 0x10, 0x01, 0x18, 0x01};
    const uint8_t bad_type[] = {0x0a, 0x01, 'a', 0x15, 0, 0, 0, 0, 0x18, 0x01};
    const uint8_t cut_packed[] = {0x0a, 0x01, 'a', 0x12, 0x01, 0x80, 0x18, 0x01};
    char err[256] = "";
    publish_ack_iter it;
    uint32_t idx;
    uint64_t off;

    assert_ack_agrees(mixed, sizeof mixed);
    assert_int_equal(publish_ack_open(mixed, sizeof mixed, &it, NULL, 0), 0);
    assert_int_equal(publish_ack_next(&it, &idx, &off), 0);
    assert_int_equal(idx, 1);
    assert_int_equal(off, 10);
    assert_int_equal(publish_ack_next(&it, &idx, &off), 0);
    assert_int_equal(idx, 0);
    assert_int_equal(off, 20);

    expect_err(publish_ack_open(mismatch, sizeof mismatch, &it, err, sizeof err), PB_EPROTO, err,
               "PublishAck has 2 partition_index values but 1 offsets");
    expect_err(publish_ack_open(out_of_range, sizeof out_of_range, &it, err, sizeof err), PB_EPROTO,
               err,
               "field 2 (partition_index) at byte 0: value 0 is 1, not less than the number of "
               "partitions");
    expect_err(publish_ack_open(bad_type, sizeof bad_type, &it, err, sizeof err), PB_EPROTO, err,
               "PublishAck field 2 (partition_index) at byte 3: wire type 5 (32-bit)");
    expect_err(publish_ack_open(cut_packed, sizeof cut_packed, &it, err, sizeof err), PB_EPROTO,
               err, "packed value varint at byte 5 runs past the end");

    /* duplicates (field 4): counted, packed or not; a wrong wire type is refused. */
    const uint8_t dups[] = {0x0a, 0x01, 'a',  0x12, 0x02, 0x00, 0x00, 0x1a,
                            0x02, 0x05, 0x06, 0x22, 0x01, 0x01, 0x20, 0x00};
    const uint8_t dups_fixed[] = {0x0a, 0x01, 'a', 0x25, 0, 0, 0, 0};
    assert_ack_agrees(dups, sizeof dups);
    assert_int_equal(publish_ack_open(dups, sizeof dups, &it, err, sizeof err), 0);
    assert_int_equal(it.n_events, 2);
    assert_int_equal(it.n_duplicates, 2);
    expect_err(publish_ack_open(dups_fixed, sizeof dups_fixed, &it, err, sizeof err), PB_EPROTO,
               err, "PublishAck field 4 (duplicates) at byte 3: wire type 5 (32-bit)");
}

static void test_error_frame(void **state)
{
    frame_error e = {.code = PROTOBUS__CODE__DATA_LOSS,
                     .message = "segment 00000000000000000042.log: CRC mismatch at byte 4096",
                     .partition = "sensors-eu",
                     .first_offset = 42,
                     .last_offset = UINT64_MAX,
                     .event_index_plus_one = 3};
    frame_error none = {0};
    frame_error bad = {.code = PROTOBUS__CODE__INVALID_ARGUMENT, .message = "topic 'a\xff'"};
    Protobus__Frame f = PROTOBUS__FRAME__INIT;
    Protobus__Error pe = PROTOBUS__ERROR__INIT;
    Protobus__Frame *u;
    uint8_t out[512];
    size_t k;
    buf pc;

    f.id = 9;
    f.body_case = PROTOBUS__FRAME__BODY_ERROR;
    f.error = &pe;
    pe.code = PROTOBUS__CODE__DATA_LOSS;
    pe.message = (char *)e.message;
    pe.partition = (char *)e.partition;
    pe.first_offset = 42;
    pe.last_offset = UINT64_MAX;
    pe.event_index_plus_one = 3;
    pc = pack_delimited(&f);
    k = frame_put_error(out, sizeof out, 9, &e);
    assert_int_equal(k, pc.len);
    assert_memory_equal(out, pc.p, k);
    assert_int_equal(frame_put_error(out, k - 1, 9, &e), k);
    free(pc.p);

    /* All defaults: an empty Error body, still a set oneof. */
    pe = (Protobus__Error)PROTOBUS__ERROR__INIT;
    f.id = 0;
    pc = pack_delimited(&f);
    k = frame_put_error(out, sizeof out, 0, &none);
    assert_int_equal(k, pc.len);
    assert_memory_equal(out, pc.p, k);
    free(pc.p);

    /* Invalid UTF-8 goes out as '?': protobuf-c reads the repaired text. */
    k = frame_put_error(out, sizeof out, 1, &bad);
    assert_int_equal(out[0], k - 1);
    u = protobus__frame__unpack(NULL, k - 1, out + 1);
    assert_non_null(u);
    assert_int_equal(u->body_case, PROTOBUS__FRAME__BODY_ERROR);
    assert_int_equal(u->error->code, PROTOBUS__CODE__INVALID_ARGUMENT);
    assert_string_equal(u->error->message, "topic 'a?'");
    protobus__frame__free_unpacked(u, NULL);
}

static void test_hello_frame(void **state)
{
    frame_hello h = {.protocol_version = 1,
                     .name = "protobusd 0.1",
                     .max_frame_bytes = 16u << 20,
                     .max_event_bytes = 1u << 20};
    frame_hello zero = {0};
    Protobus__Frame f = PROTOBUS__FRAME__INIT;
    Protobus__Hello ph = PROTOBUS__HELLO__INIT;
    uint8_t out[128];
    size_t k;
    buf pc;

    f.id = 1;
    f.body_case = PROTOBUS__FRAME__BODY_HELLO;
    f.hello = &ph;
    ph.protocol_version = 1;
    ph.name = "protobusd 0.1";
    ph.max_frame_bytes = 16u << 20;
    ph.max_event_bytes = 1u << 20;
    pc = pack_delimited(&f);
    k = frame_put_hello(out, sizeof out, 1, &h);
    assert_int_equal(k, pc.len);
    assert_memory_equal(out, pc.p, k);
    assert_int_equal(frame_put_hello(NULL, 0, 1, &h), k);
    free(pc.p);

    ph = (Protobus__Hello)PROTOBUS__HELLO__INIT;
    f.id = 0;
    pc = pack_delimited(&f);
    k = frame_put_hello(out, sizeof out, 0, &zero);
    assert_int_equal(k, pc.len);
    assert_memory_equal(out, pc.p, k);
    free(pc.p);
}

/* --- hostile input ---------------------------------------------------------------------- */

/*
 * Walk a Frame body with every walker that applies. Each answers 0 or
 * PB_EPROTO; whatever they all accept, protobuf-c accepts and reads alike.
 * Returns whether everything was accepted.
 */
static bool check_frame_body(const uint8_t *p, size_t n)
{
    char err[512];
    frame_view fv;
    Protobus__Frame *u;
    int rc = frame_parse(p, n, &fv, err, sizeof err);

    assert_true(rc == 0 || rc == PB_EPROTO);
    if (rc != 0)
        return false;
    if (fv.kind == FRAME_PUBLISH) {
        publish_iter it;
        wire_slice ev;
        size_t count = 0;
        bool all = true;

        rc = publish_open(fv.body.p, fv.body.len, &it, err, sizeof err);
        assert_true(rc == 0 || rc == PB_EPROTO);
        if (rc != 0)
            return false;
        while (publish_next(&it, &ev) == 0) {
            event_view v;
            rc = event_scan(ev.p, ev.len, &v, err, sizeof err);
            assert_true(rc == 0 || rc == PB_EPROTO);
            all = all && rc == 0;
            count++;
        }
        assert_int_equal(count, it.n_events);
        if (!all)
            return false;
        u = protobus__frame__unpack(NULL, n, p);
        assert_non_null(u);
        assert_int_equal(u->body_case, PROTOBUS__FRAME__BODY_PUBLISH);
        assert_int_equal(u->publish->n_events, it.n_events);
        assert_int_equal(u->publish->no_ack != 0, it.no_ack);
    } else if (fv.kind == FRAME_EVENT) {
        event_frame_view efv;
        event_view v;

        rc = event_frame_parse(fv.body.p, fv.body.len, &efv, err, sizeof err);
        assert_true(rc == 0 || rc == PB_EPROTO);
        if (rc != 0)
            return false;
        rc = event_scan(efv.event.p, efv.event.len, &v, err, sizeof err);
        assert_true(rc == 0 || rc == PB_EPROTO);
        if (rc != 0)
            return false;
        u = protobus__frame__unpack(NULL, n, p);
        assert_non_null(u);
        assert_int_equal(u->body_case, PROTOBUS__FRAME__BODY_EVENT);
        assert_true(u->event->offset == efv.offset);
        assert_true(slice_is_unpacked(efv.partition, u->event->partition));
        assert_non_null(u->event->event);
        assert_true(u->event->event->payload_size == v.payload_size);
    } else if (fv.kind == FRAME_PUBLISH_ACK) {
        publish_ack_iter it;

        rc = publish_ack_open(fv.body.p, fv.body.len, &it, err, sizeof err);
        assert_true(rc == 0 || rc == PB_EPROTO);
        if (rc != 0)
            return false;
        assert_ack_agrees(fv.body.p, fv.body.len);
        u = protobus__frame__unpack(NULL, n, p);
        assert_non_null(u);
    } else {
        return true; /* bodies decoded by protobuf-c on the cold path: no claim */
    }
    assert_true(u->id == fv.id);
    protobus__frame__free_unpacked(u, NULL);
    return true;
}

/* event_scan answers 0 or PB_EPROTO; whatever it accepts, protobuf-c accepts. */
static bool check_event(const uint8_t *p, size_t n)
{
    char err[512];
    event_view v;
    Protobus__EncapsulatedEvent *u;
    int rc = event_scan(p, n, &v, err, sizeof err);

    assert_true(rc == 0 || rc == PB_EPROTO);
    if (rc != 0) {
        assert_true(strlen(err) > 0);
        return false;
    }
    u = protobus__encapsulated_event__unpack(NULL, n, p);
    assert_non_null(u);
    /* Fields whose repeated-occurrence rules agree in every library. */
    assert_true(slice_is_unpacked(v.topic, u->topic));
    assert_true(u->payload_size == v.payload_size);
    assert_int_equal(u->n_tags, v.n_tags);
    assert_int_equal(u->client_event_time != NULL, v.client_event_time.present);
    assert_int_equal(u->client_transmit_time != NULL, v.client_transmit_time.present);
    assert_int_equal(u->server_receive_time != NULL, v.server_receive_time.present);
    assert_int_equal(u->payload != NULL, v.has_payload);
    protobus__encapsulated_event__free_unpacked(u, NULL);
    return true;
}

/* Sample inputs: delimited frames (kind 0) and bare events (kind 1). */
struct sample {
    buf b;
    int is_event;
};

/* Bytes of a sample frame's length prefix. */
static size_t prefix_len(const buf *b)
{
    uint64_t v;
    int k = wire_varint_decode(b->p, b->len, &v);
    assert_true(k > 0);
    return (size_t)k;
}

static size_t make_samples(struct sample *out, size_t payload_len)
{
    static uint8_t payload[64];
    static char topic[] = "sensors.kitchen";
    static struct full_event fe[2];
    static Protobus__EncapsulatedEvent *evs[2];
    Protobus__Frame f = PROTOBUS__FRAME__INIT;
    Protobus__Publish pub = PROTOBUS__PUBLISH__INIT;
    Protobus__Event e = PROTOBUS__EVENT__INIT;
    const char *names[] = {"p0", "p1"};
    const uint32_t idx[] = {1, 0, 1};
    const uint64_t off[] = {5, 300, 1ull << 40};
    size_t n = 0, k;

    memset(payload, 0x42, sizeof payload);
    for (int i = 0; i < 2; i++) {
        full_event_init(&fe[i], topic, payload, payload_len);
        evs[i] = &fe[i].ev;
    }
    fe[1].ev.n_tags = 2;
    out[n].b = pack_msg(&fe[0].ev.base);
    out[n++].is_event = 1;

    f.id = 12345;
    f.body_case = PROTOBUS__FRAME__BODY_PUBLISH;
    f.publish = &pub;
    pub.n_events = 2;
    pub.events = evs;
    pub.no_ack = 1;
    out[n].b = pack_delimited(&f);
    out[n++].is_event = 0;

    f.body_case = PROTOBUS__FRAME__BODY_EVENT;
    f.event = &e;
    e.partition = "sensors-eu";
    e.offset = 99;
    e.event = &fe[1].ev;
    out[n].b = pack_delimited(&f);
    out[n++].is_event = 0;

    k = frame_put_publish_ack(NULL, 0, 7, names, 2, idx, off, 3);
    out[n].b.p = xmalloc(k);
    out[n].b.len = frame_put_publish_ack(out[n].b.p, k, 7, names, 2, idx, off, 3);
    out[n++].is_event = 0;
    return n;
}

/* A copy of p[0..n) ending exactly at the end of a heap block: ASan traps any overread. */
static uint8_t *tight_copy(const uint8_t *p, size_t n)
{
    uint8_t *c = xmalloc(n);
    if (n > 0)
        memcpy(c, p, n);
    return c;
}

static void test_truncation_every_byte(void **state)
{
    struct sample samples[8];
    size_t ns = make_samples(samples, 20);

    for (size_t i = 0; i < ns; i++) {
        const buf *b = &samples[i].b;
        size_t pre = samples[i].is_event ? 0 : prefix_len(b);
        for (size_t k = 0; k < b->len; k++) {
            uint8_t *c = tight_copy(b->p, k);
            if (samples[i].is_event) {
                check_event(c, k);
            } else {
                frame_split s;
                if (frame_split_next(c, k, 1 << 20, &s, NULL, 0) != PB_EINCOMPLETE)
                    fail_msg("sample %zu cut at %zu was not incomplete", i, k);
                /* A cut frame announces its full size once the prefix is in. */
                assert_int_equal(s.need, k < pre ? 0 : b->len);
                if (k >= pre)
                    check_frame_body(c + pre, k - pre);
            }
            free(c);
        }
        if (samples[i].is_event)
            assert_true(check_event(b->p, b->len));
        else
            assert_true(check_frame_body(b->p + pre, b->len - pre));
        free(samples[i].b.p);
    }
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545f4914f6cdd1dull;
}

/* 1-4 random edits biased towards what breaks parsers: varint bits, lengths, cuts. */
static size_t mutate(uint8_t *p, size_t n, size_t cap)
{
    static const uint8_t interesting[] = {0x00, 0x01, 0x7f, 0x80, 0xff, 0x0a, 0x12, 0x1a, 0x2a};
    int edits = 1 + (int)(rnd() % 4);

    for (int e = 0; e < edits && n > 0; e++) {
        size_t at = rnd() % n;
        switch (rnd() % 7) {
        case 0:
            p[at] ^= (uint8_t)(1u << (rnd() % 8));
            break;
        case 1:
            p[at] = interesting[rnd() % sizeof interesting];
            break;
        case 2:
            p[at] = (uint8_t)rnd();
            break;
        case 3:
            n = at; /* truncate */
            break;
        case 4:
            if (n < cap) {
                memmove(p + at + 1, p + at, n - at);
                p[at] = (uint8_t)rnd();
                n++;
            }
            break;
        case 5:
            memmove(p + at, p + at + 1, n - at - 1);
            n--;
            break;
        default: { /* duplicate a chunk: repeated fields, merges */
            size_t len = 1 + rnd() % 16, to = rnd() % n;
            if (at + len > n)
                len = n - at;
            if (n + len <= cap) {
                memmove(p + to + len, p + to, n - to);
                memmove(p + to, p + (at >= to ? at + len : at), len);
                n += len;
            }
            break;
        }
        }
    }
    return n;
}

static void test_mutation_loop(void **state)
{
    enum { ROUNDS = 200000, CAP = 1024 };
    struct sample samples[8];
    size_t ns = make_samples(samples, 6);
    uint8_t work[CAP];
    size_t accepted = 0, refused = 0;

    for (size_t i = 0; i < ns; i++)
        assert_true(samples[i].b.len <= CAP / 2);
    for (int r = 0; r < ROUNDS; r++) {
        const struct sample *s = &samples[(size_t)r % ns];
        size_t n;
        uint8_t *c;
        bool ok;

        memcpy(work, s->b.p, s->b.len);
        n = mutate(work, s->b.len, CAP);
        c = tight_copy(work, n);
        if (s->is_event) {
            ok = check_event(c, n);
        } else {
            size_t pre = prefix_len(&s->b);
            frame_split fs;
            int rc = frame_split_next(c, n, CAP, &fs, NULL, 0);
            assert_true(rc == 0 || rc == PB_EINCOMPLETE || rc == PB_ETOOBIG || rc == PB_EPROTO);
            /* Walk the body whatever the prefix says: the walkers see hostile bytes too. */
            ok = n >= pre && check_frame_body(c + pre, n - pre);
        }
        ok ? accepted++ : refused++;
        free(c);
    }
    /* Both outcomes were exercised, so the agreement checks ran. */
    assert_true(accepted > ROUNDS / 20);
    assert_true(refused > ROUNDS / 20);
    for (size_t i = 0; i < ns; i++)
        free(samples[i].b.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_byte_at_a_time),
        cmocka_unit_test(test_split_max_size),
        cmocka_unit_test(test_split_bad_prefix),
        cmocka_unit_test(test_split_zero_length),
        cmocka_unit_test(test_frame_parse_every_kind),
        cmocka_unit_test(test_frame_parse_unknown_body),
        cmocka_unit_test(test_frame_parse_errors),
        cmocka_unit_test(test_publish_walk),
        cmocka_unit_test(test_event_scan_full),
        cmocka_unit_test(test_event_scan_empty_and_minimal),
        cmocka_unit_test(test_event_scan_big_payload),
        cmocka_unit_test(test_event_scan_timestamps),
        cmocka_unit_test(test_event_scan_repeated_fields),
        cmocka_unit_test(test_event_scan_errors),
        cmocka_unit_test(test_event_scan_id),
        cmocka_unit_test(test_event_tags_last_wins),
        cmocka_unit_test(test_topic_validate),
        cmocka_unit_test(test_topic_validate_every_byte),
        cmocka_unit_test(test_event_header_n),
        cmocka_unit_test(test_publish_restart_on_copy),
        cmocka_unit_test(test_receive_time_suffix),
        cmocka_unit_test(test_delimiter),
        cmocka_unit_test(test_event_header),
        cmocka_unit_test(test_event_frame_parse_errors),
        cmocka_unit_test(test_publish_ack),
        cmocka_unit_test(test_publish_ack_unpacked_and_errors),
        cmocka_unit_test(test_error_frame),
        cmocka_unit_test(test_hello_frame),
        cmocka_unit_test(test_truncation_every_byte),
        cmocka_unit_test(test_mutation_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
