/*
 * Unit tests for proto/frame.c: the splitter, the Frame and Publish walkers
 * and the encoders, checked against protobuf-c's generated pack/unpack in
 * both directions (helpers: tests/lib/framecheck.h). The event scanner:
 * test_event_scan; truncation at every byte and a bounded, deterministic
 * mutation loop: test_frame_hostile.
 * Single-threaded; no files.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "frame.h"
#include "framecheck.h"
#include "pb_errors.h"
#include "protobus.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS 1000000000LL

/* --- splitter ------------------------------------------------------------------ */

static void test_split_byte_at_a_time(void **state)
{
    Protobus__Frame f = PROTOBUS__FRAME__INIT;
    Protobus__Hello h = PROTOBUS__HELLO__INIT;
    Protobus__Error e = PROTOBUS__ERROR__INIT;
    uint8_t big[300];
    packed_buf frames[3], stream;
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
        packed_buf whole, body = pack_msg(bodies[k]);

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
    packed_buf whole;

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
        packed_buf one = pack_msg(&evs[i]->base);
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
    packed_buf with5, without5;
    Protobus__EncapsulatedEvent plain = PROTOBUS__ENCAPSULATED_EVENT__INIT;

    /* The client already set server_receive_time, with nonzero nanos. */
    full_event_init(&fe, "t", payload, sizeof payload);
    fe.times[2].seconds = 5;
    fe.times[2].nanos = 7;
    with5 = pack_msg(&fe.ev.base);
    plain.topic = "t";
    without5 = pack_msg(&plain.base);

    for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
        const packed_buf *bases[2] = {&with5, &without5};
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
    packed_buf events[3];

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
                    const packed_buf *ev = &events[d];
                    size_t h =
                        frame_put_event_header(NULL, 0, ids[a], parts[b], offsets[c], ev->len);
                    size_t n = h + ev->len;
                    uint8_t *whole = xmalloc(n);
                    frame_split s;
                    frame_view fv;
                    event_frame_view efv;
                    packed_buf pc;

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
        packed_buf pc;
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
    packed_buf pc;

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
    packed_buf pc;

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
        cmocka_unit_test(test_receive_time_suffix),
        cmocka_unit_test(test_delimiter),
        cmocka_unit_test(test_event_header),
        cmocka_unit_test(test_event_frame_parse_errors),
        cmocka_unit_test(test_publish_ack),
        cmocka_unit_test(test_publish_ack_unpacked_and_errors),
        cmocka_unit_test(test_error_frame),
        cmocka_unit_test(test_hello_frame),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
