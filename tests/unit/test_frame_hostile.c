/*
 * Hostile input for proto/frame.c and proto/event.c: every walker that
 * applies runs on truncations at every byte and on a bounded, deterministic
 * mutation loop; whatever they accept, protobuf-c accepts and reads alike
 * (helpers: tests/lib/framecheck.h).
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
    packed_buf b;
    int is_event;
};

/* Bytes of a sample frame's length prefix. */
static size_t prefix_len(const packed_buf *b)
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
        const packed_buf *b = &samples[i].b;
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
        cmocka_unit_test(test_truncation_every_byte),
        cmocka_unit_test(test_mutation_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
