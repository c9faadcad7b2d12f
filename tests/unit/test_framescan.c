/*
 * Unit tests for proto/framescan.c, the frame stream read without keeping
 * it: for every input, fed whole, byte by byte or in random pieces, it
 * must agree with frame_split_next + frame_parse (the loop thread's
 * reading) on where frames end, their id and kind, and which are
 * malformed; and it never holds more than a varint. Deterministic
 * (fixed-seed mutations); single-threaded.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "framescan.h"
#include "pb_errors.h"
#include "protobus.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FRAME 4096

/* What the buffering reader (frame_split_next + frame_parse) makes of a
 * stream: the frames, then how it ended. */
typedef struct verdict {
    uint64_t id;
    int kind;
    bool malformed;
} verdict;

typedef struct reading {
    verdict v[64];
    size_t n;
    int end; /* 0: ends at a frame boundary or inside a frame; PB_ETOOBIG / PB_EPROTO */
} reading;

static void read_buffered(const uint8_t *p, size_t n, reading *out)
{
    memset(out, 0, sizeof *out);
    size_t pos = 0;
    while (out->n < 64) {
        frame_split sp;
        int rc = frame_split_next(p + pos, n - pos, MAX_FRAME, &sp, NULL, 0);
        if (rc == PB_EINCOMPLETE)
            return;
        if (rc < 0) {
            out->end = rc;
            return;
        }
        frame_view fv;
        verdict *v = &out->v[out->n++];
        v->malformed = frame_parse(sp.body.p, sp.body.len, &fv, NULL, 0) < 0;
        v->id = fv.id;
        v->kind = v->malformed ? 0 : (int)fv.kind;
        pos += sp.used;
    }
}

/* The scanner over the same stream, fed in pieces of `step` bytes (0:
 * random pieces from seed). */
static void read_scanned(const uint8_t *p, size_t n, size_t step, unsigned seed, reading *out)
{
    frame_scan s;
    frame_scan_init(&s, MAX_FRAME);
    memset(out, 0, sizeof *out);
    size_t pos = 0;
    while (pos < n && out->n < 64) {
        size_t piece = step ? step : 1 + (size_t)(rand_r(&seed) % 17);
        if (piece > n - pos)
            piece = n - pos;
        size_t off = 0;
        while (off < piece && out->n < 64) {
            size_t used = 0;
            frame_scan_result r;
            char err[256];
            int rc = frame_scan_feed(&s, p + pos + off, piece - off, &used, &r, err, sizeof err);
            assert_true(used <= piece - off);
            off += used;
            if (rc < 0) {
                assert_true(strlen(err) > 0);
                out->end = rc;
                return;
            }
            if (rc == 0) {
                assert_int_equal(off, piece);
                break;
            }
            verdict *v = &out->v[out->n++];
            v->malformed = r.malformed;
            v->id = r.id;
            v->kind = r.malformed ? 0 : (int)r.kind;
            if (r.malformed)
                assert_true(strlen(r.why) > 0);
        }
        pos += piece;
    }
}

static void assert_same(const reading *a, const reading *b, const char *what)
{
    if (a->n != b->n || a->end != b->end)
        fail_msg("%s: %zu frames, end %d; buffered: %zu frames, end %d", what, b->n, b->end, a->n,
                 a->end);
    for (size_t i = 0; i < a->n; i++) {
        if (a->v[i].malformed != b->v[i].malformed || a->v[i].kind != b->v[i].kind)
            fail_msg("%s: frame %zu: malformed %d kind %d; buffered: malformed %d kind %d", what, i,
                     b->v[i].malformed, b->v[i].kind, a->v[i].malformed, a->v[i].kind);
        /* The id is what was read before a fault: the scanner reads as far
         * as frame_parse, field by field. */
        if (a->v[i].id != b->v[i].id)
            fail_msg("%s: frame %zu: id %llu; buffered: %llu", what, i,
                     (unsigned long long)b->v[i].id, (unsigned long long)a->v[i].id);
    }
}

static void check_stream(const uint8_t *p, size_t n, unsigned seed)
{
    reading want, got;
    read_buffered(p, n, &want);
    read_scanned(p, n, n ? n : 1, seed, &got);
    assert_same(&want, &got, "whole");
    read_scanned(p, n, 1, seed, &got);
    assert_same(&want, &got, "byte by byte");
    read_scanned(p, n, 0, seed, &got);
    assert_same(&want, &got, "random pieces");
}

/* A stream of delimited frames of every kind, as protobuf-c packs them. */
static size_t sample_stream(uint8_t *out, size_t cap)
{
    size_t n = 0;
    Protobus__Hello h = PROTOBUS__HELLO__INIT;
    Protobus__Ping ping = PROTOBUS__PING__INIT;
    Protobus__Publish pub = PROTOBUS__PUBLISH__INIT;
    Protobus__EncapsulatedEvent ev = PROTOBUS__ENCAPSULATED_EVENT__INIT;
    Protobus__EncapsulatedEvent *evp = &ev;
    Protobus__Subscribe sub = PROTOBUS__SUBSCRIBE__INIT;
    char *pats[1] = {"a\\..*"};
    h.protocol_version = 1;
    h.name = "scan";
    ev.topic = "a.b";
    pub.n_events = 1;
    pub.events = &evp;
    sub.n_patterns = 1;
    sub.patterns = pats;
    struct {
        int kind;
        uint64_t id;
        const ProtobufCMessage *body;
    } frames[] = {
        {PROTOBUS__FRAME__BODY_HELLO, 1, &h.base},
        {PROTOBUS__FRAME__BODY_PUBLISH, 300, &pub.base},
        {PROTOBUS__FRAME__BODY_PING, 0, &ping.base},
        {PROTOBUS__FRAME__BODY_SUBSCRIBE, UINT64_MAX, &sub.base},
        {PROTOBUS__FRAME__BODY_PONG, 5, &ping.base},
    };
    for (size_t i = 0; i < sizeof frames / sizeof frames[0]; i++) {
        Protobus__Frame f = PROTOBUS__FRAME__INIT;
        f.id = frames[i].id;
        f.body_case = (Protobus__Frame__BodyCase)frames[i].kind;
        f.hello = (Protobus__Hello *)frames[i].body; /* any union member: same pointer */
        size_t len = protobus__frame__get_packed_size(&f);
        size_t k = frame_put_delimiter(out + n, cap - n, len);
        assert_true(n + k + len <= cap);
        n += k;
        n += protobus__frame__pack(&f, out + n);
    }
    /* An empty frame, a frame of only unknown fields (fixed and varint). */
    const uint8_t extra[] = {0x00, 0x0b, 0x08, 0x07, 0xa1, 0x06, 1, 2, 3, 4, 5, 6, 7, 8};
    memcpy(out + n, extra, sizeof extra);
    return n + sizeof extra;
}

static void test_agrees_on_valid_streams(void **state)
{
    uint8_t buf[1024];
    size_t n = sample_stream(buf, sizeof buf);
    check_stream(buf, n, 1);
    reading got;
    read_scanned(buf, n, 1, 1, &got);
    assert_int_equal(got.n, 7);
    assert_int_equal(got.v[0].kind, FRAME_HELLO);
    assert_int_equal(got.v[1].kind, FRAME_PUBLISH);
    assert_int_equal(got.v[1].id, 300);
    assert_int_equal(got.v[3].id, UINT64_MAX);
    assert_int_equal(got.v[5].kind, FRAME_NONE);
    assert_int_equal(got.v[6].kind, FRAME_NONE);
    assert_int_equal(got.v[6].id, 7);
}

static void test_malformed_frames(void **state)
{
    static const struct {
        const uint8_t *p;
        size_t n;
        const char *why;
    } cases[] = {
        {(const uint8_t *)"\x05\x08\x2a\x12\x05\x01", 6, "Frame field 2 (hello) at byte 2"},
        {(const uint8_t *)"\x02\x0a\x00", 3, "Frame field 1 (id) at byte 0"},
        {(const uint8_t *)"\x02\x18\x01", 3, "Frame field 3 (publish) at byte 0"},
        {(const uint8_t *)"\x04\x5a\x00\x62\x00", 5, "a second body"},
        {(const uint8_t *)"\x02\x0b\x0c", 3, "groups"},
        {(const uint8_t *)"\x01\x08", 2, "runs past the end"},
        {(const uint8_t *)"\x01\x80", 2, "runs past the end"},
        {(const uint8_t *)"\x02\x00\x00", 3, "out of range"},
        {(const uint8_t *)"\x07\x88\x80\x80\x80\x80\x00\x01", 8, "longer than 5 bytes"},
        {(const uint8_t *)"\x07\x12\x80\x80\x80\x80\x80\x00", 8, "length varint"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        frame_scan s;
        frame_scan_init(&s, MAX_FRAME);
        frame_scan_result r;
        size_t used;
        assert_int_equal(frame_scan_feed(&s, cases[i].p, cases[i].n, &used, &r, NULL, 0), 1);
        assert_int_equal(used, cases[i].n);
        assert_true(r.malformed);
        if (!strstr(r.why, cases[i].why))
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, r.why, cases[i].why);
        check_stream(cases[i].p, cases[i].n, (unsigned)i);
    }
    /* The id read before the fault is kept. */
    frame_scan s;
    frame_scan_init(&s, MAX_FRAME);
    frame_scan_result r;
    size_t used;
    assert_int_equal(frame_scan_feed(&s, cases[0].p, cases[0].n, &used, &r, NULL, 0), 1);
    assert_int_equal(r.id, 42);
}

static void test_stream_errors(void **state)
{
    frame_scan s;
    frame_scan_result r;
    size_t used;
    char err[256];
    const uint8_t big[] = {0x81, 0x20}; /* 4097 */
    frame_scan_init(&s, MAX_FRAME);
    assert_int_equal(frame_scan_feed(&s, big, sizeof big, &used, &r, err, sizeof err), PB_ETOOBIG);
    assert_non_null(strstr(err, "4097 bytes exceeds the maximum of 4096"));
    const uint8_t bad[11] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    frame_scan_init(&s, MAX_FRAME);
    assert_int_equal(frame_scan_feed(&s, bad, sizeof bad, &used, &r, err, sizeof err), PB_EPROTO);
    assert_non_null(strstr(err, "not a valid varint"));
    /* Exactly the maximum is fine, and its body is skipped, not kept. */
    static uint8_t max[2 + MAX_FRAME];
    max[0] = 0x80;
    max[1] = 0x20; /* 4096 */
    max[2] = 0x62; /* field 12 (pong), length 4093 */
    max[3] = 0xfd;
    max[4] = 0x1f;
    frame_scan_init(&s, MAX_FRAME);
    assert_int_equal(frame_scan_feed(&s, max, sizeof max, &used, &r, err, sizeof err), 1);
    assert_int_equal(used, sizeof max);
    assert_false(r.malformed);
    assert_int_equal(r.kind, FRAME_PONG);
    assert_int_equal(r.body_len, 4093);
    check_stream(max, sizeof max, 3);
}

/* Mutations of the sample stream (fixed seed): both readers agree on all. */
static void test_mutations_agree(void **state)
{
    uint8_t base[1024], m[1024];
    size_t n = sample_stream(base, sizeof base);
    unsigned seed = 12345;
    for (int round = 0; round < 20000; round++) {
        memcpy(m, base, n);
        size_t len = n;
        int edits = 1 + rand_r(&seed) % 3;
        for (int e = 0; e < edits; e++) {
            size_t at = (size_t)rand_r(&seed) % len;
            switch (rand_r(&seed) % 3) {
            case 0:
                m[at] = (uint8_t)rand_r(&seed);
                break;
            case 1:
                m[at] ^= (uint8_t)(1u << (rand_r(&seed) % 8));
                break;
            default:
                len = at + 1; /* cut */
                break;
            }
        }
        check_stream(m, len, (unsigned)round);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agrees_on_valid_streams),
        cmocka_unit_test(test_malformed_frames),
        cmocka_unit_test(test_stream_errors),
        cmocka_unit_test(test_mutations_agree),
    };
    return cmocka_run_group_tests_name("framescan", tests, NULL, NULL);
}
