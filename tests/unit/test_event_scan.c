/*
 * Unit tests for proto/event.c's scanner (event_scan, tags, ids, times,
 * topic validation) and the header helpers, checked against protobuf-c's
 * unpack of the same bytes (helpers: tests/lib/framecheck.h).
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

/* --- event scanner ------------------------------------------------------------------ */

static void test_event_scan_full(void **state)
{
    struct full_event fe;
    uint8_t payload[] = {0, 1, 2, 3, 0xff};
    event_view v;
    event_tag_iter it;
    event_tag t;
    int seen = 0;
    packed_buf b;

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
    packed_buf b;

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
    packed_buf b;

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
    packed_buf b;

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
    packed_buf orig = pack_msg(&pub.base);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
