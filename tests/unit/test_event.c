/*
 * Unit tests for proto/event.c's walker (event_walk_*), the one walk every
 * reader of stored event bytes shares: it returns only the wanted fields,
 * in wire order; checks the wire type of every known field, wanted or not;
 * opens wanted tag entries (absent key or value: empty); checks UTF-8 only
 * when strict; skips unknown fields; words errors like event_scan. And a
 * bounded, deterministic mutation loop: whatever event_scan accepts, the
 * lenient walk accepts too and finds the same topic and tags. And the
 * subscription filter (event_filter_scan/ok): per-tag verdicts, the last
 * entry of a key deciding, the last topic winning.
 * And event_scan_stored and event_scan_keys against event_scan.
 * Single-threaded; no files. (event_scan itself: test_frame.c.)
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "event.h"
#include "pb_errors.h"
#include "wire.h"

#include <stdio.h>
#include <string.h>

/* A tags entry {key, value} as field 2 of an event, at out. */
static size_t put_tag(uint8_t *out, const char *key, const char *value)
{
    uint8_t entry[64];
    size_t n = 0;

    if (key)
        n += wire_put_len_field(entry + n, 1, key, strlen(key));
    if (value)
        n += wire_put_len_field(entry + n, 2, value, strlen(value));
    return wire_put_len_field(out, 2, entry, n);
}

static size_t put_str(uint8_t *out, uint32_t field, const char *s)
{
    return wire_put_len_field(out, field, s, strlen(s));
}

static void expect_err(int rc, const char *err, const char *want)
{
    assert_int_equal(rc, PB_EPROTO);
    if (strcmp(err, want) != 0)
        fail_msg("error \"%s\", expected \"%s\"", err, want);
}

static void test_wanted_fields_in_wire_order(void **state)
{
    uint8_t ev[256];
    size_t n = 0;
    event_walker w;
    event_item it;
    char err[200];
    (void)state;

    n += put_str(ev + n, EVENT_TOPIC, "first");
    n += put_tag(ev + n, "k", "v1");
    n += wire_put_varint_field(ev + n, 99, 5); /* unknown: skipped */
    n += wire_put_varint_field(ev + n, EVENT_PAYLOAD_SIZE, 7);
    n += put_str(ev + n, EVENT_TOPIC, "second");
    n += put_tag(ev + n, "k", "v2");

    /* Topic only: both occurrences, nothing else. */
    event_walk_init(&w, ev, n, EVENT_WANT(EVENT_TOPIC), false);
    assert_int_equal(event_walk_next(&w, &it, err, sizeof err), 1);
    assert_int_equal(it.f.number, EVENT_TOPIC);
    assert_true(wire_slice_eq_bytes(it.f.data, "first", 5));
    assert_int_equal(it.f.pos, 0);
    assert_int_equal(event_walk_next(&w, &it, err, sizeof err), 1);
    assert_true(wire_slice_eq_bytes(it.f.data, "second", 6));
    assert_int_equal(event_walk_next(&w, &it, err, sizeof err), 0);
    assert_int_equal(event_walk_next(&w, &it, err, sizeof err), 0); /* stays at the end */

    /* Everything known, strict. */
    event_walk_init(&w, ev, n, EVENT_WANT_ALL, true);
    uint32_t want[] = {EVENT_TOPIC, EVENT_TAGS, EVENT_PAYLOAD_SIZE, EVENT_TOPIC, EVENT_TAGS};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_int_equal(event_walk_next(&w, &it, err, sizeof err), 1);
        assert_int_equal(it.f.number, want[i]);
        if (it.f.number == EVENT_TAGS) {
            assert_true(wire_slice_eq_bytes(it.tag.key, "k", 1));
            assert_true(wire_slice_eq_bytes(it.tag.value, i == 1 ? "v1" : "v2", 2));
        }
        if (it.f.number == EVENT_PAYLOAD_SIZE)
            assert_int_equal(it.f.value, 7);
    }
    assert_int_equal(event_walk_next(&w, &it, err, sizeof err), 0);

    /* The empty event has no field. */
    event_walk_init(&w, NULL, 0, EVENT_WANT_ALL, true);
    assert_int_equal(event_walk_next(&w, &it, NULL, 0), 0);
}

static void test_absent_key_or_value_is_empty(void **state)
{
    uint8_t ev[64];
    size_t n = 0;
    event_walker w;
    event_item it;
    (void)state;

    n += put_tag(ev + n, NULL, "v");
    n += put_tag(ev + n, "k", NULL);
    n += put_tag(ev + n, NULL, NULL);
    event_walk_init(&w, ev, n, EVENT_WANT(EVENT_TAGS), false);
    assert_int_equal(event_walk_next(&w, &it, NULL, 0), 1);
    assert_int_equal(it.tag.key.len, 0);
    assert_true(wire_slice_eq_bytes(it.tag.value, "v", 1));
    assert_int_equal(event_walk_next(&w, &it, NULL, 0), 1);
    assert_true(wire_slice_eq_bytes(it.tag.key, "k", 1));
    assert_int_equal(it.tag.value.len, 0);
    assert_int_equal(event_walk_next(&w, &it, NULL, 0), 1);
    assert_int_equal(it.tag.key.len + it.tag.value.len, 0);
    assert_int_equal(event_walk_next(&w, &it, NULL, 0), 0);
}

static void test_wire_types_checked_wanted_or_not(void **state)
{
    uint8_t ev[64];
    size_t n;
    event_walker w;
    event_item it;
    char err[200];
    (void)state;

    /* payload_size sent length-delimited: refused even when only the
     * topic is wanted (and the topic before it is still returned). */
    n = put_str(ev, EVENT_TOPIC, "t");
    n += wire_put_len_field(ev + n, EVENT_PAYLOAD_SIZE, "x", 1);
    event_walk_init(&w, ev, n, EVENT_WANT(EVENT_TOPIC), false);
    assert_int_equal(event_walk_next(&w, &it, err, sizeof err), 1);
    expect_err(event_walk_next(&w, &it, err, sizeof err), err,
               "EncapsulatedEvent field 6 (payload_size) at byte 3: wire type 2 "
               "(length-delimited), expected 0 (varint)");

    /* A topic sent as a varint. */
    n = wire_put_varint_field(ev, EVENT_TOPIC, 1);
    event_walk_init(&w, ev, n, EVENT_WANT(EVENT_TAGS), false);
    expect_err(event_walk_next(&w, &it, err, sizeof err), err,
               "EncapsulatedEvent field 1 (topic) at byte 0: wire type 0 (varint), expected 2 "
               "(length-delimited)");

    /* A tag key sent as a varint: checked only when tags are wanted. */
    uint8_t entry[8];
    size_t e = wire_put_varint_field(entry, 1, 3);
    n = wire_put_len_field(ev, EVENT_TAGS, entry, e);
    event_walk_init(&w, ev, n, EVENT_WANT(EVENT_TOPIC), false);
    assert_int_equal(event_walk_next(&w, &it, err, sizeof err), 0);
    event_walk_init(&w, ev, n, EVENT_WANT(EVENT_TAGS), false);
    expect_err(event_walk_next(&w, &it, err, sizeof err), err,
               "EncapsulatedEvent field 2 (tags) at byte 0: TagsEntry field 1 (key) at byte 2: "
               "wire type 0 (varint), expected 2 (length-delimited)");
    event_walk_init(&w, ev, n, EVENT_WANT(EVENT_TAGS), false);
    assert_int_equal(event_walk_next(&w, &it, NULL, 0), PB_EPROTO);

    /* Framing: a length past the end. */
    ev[0] = EVENT_TOPIC << 3 | WIRE_LEN;
    ev[1] = 9;
    event_walk_init(&w, ev, 3, EVENT_WANT(EVENT_TOPIC), false);
    expect_err(event_walk_next(&w, &it, err, sizeof err), err,
               "EncapsulatedEvent field 1 (topic) at byte 0: length 9 exceeds remaining 1 bytes");
    /* err may be NULL: the same verdict, no message. */
    event_walk_init(&w, ev, 3, EVENT_WANT(EVENT_TOPIC), false);
    assert_int_equal(event_walk_next(&w, &it, NULL, 0), PB_EPROTO);
}

static void test_utf8_only_when_strict(void **state)
{
    uint8_t ev[64];
    size_t n = 0;
    event_walker w;
    event_item it;
    char err[200];
    (void)state;

    n += wire_put_len_field(ev + n, EVENT_TOPIC, "a\xff", 2);
    event_walk_init(&w, ev, n, EVENT_WANT(EVENT_TOPIC), false);
    assert_int_equal(event_walk_next(&w, &it, err, sizeof err), 1);
    event_walk_init(&w, ev, n, EVENT_WANT(EVENT_TOPIC), true);
    expect_err(event_walk_next(&w, &it, err, sizeof err), err,
               "EncapsulatedEvent field 1 (topic) at byte 0: invalid UTF-8 at byte 3");

    n = put_tag(ev, "k", "\xc0\x80"); /* an overlong NUL */
    event_walk_init(&w, ev, n, EVENT_WANT(EVENT_TAGS), false);
    assert_int_equal(event_walk_next(&w, &it, err, sizeof err), 1);
    event_walk_init(&w, ev, n, EVENT_WANT(EVENT_TAGS), true);
    expect_err(event_walk_next(&w, &it, err, sizeof err), err,
               "EncapsulatedEvent field 2 (tags) at byte 0: TagsEntry field 2 (value) at byte 5: "
               "invalid UTF-8 at byte 7");
}

/* The last topic and, per key, the last value, by walking leniently. */
static int lenient_view(const uint8_t *p, size_t n, wire_slice *topic, size_t *n_tags)
{
    event_walker w;
    event_item it;
    int rc;

    *topic = (wire_slice){NULL, 0};
    *n_tags = 0;
    event_walk_init(&w, p, n, EVENT_WANT(EVENT_TOPIC) | EVENT_WANT(EVENT_TAGS), false);
    while ((rc = event_walk_next(&w, &it, NULL, 0)) > 0) {
        if (it.f.number == EVENT_TOPIC)
            *topic = it.f.data;
        else
            (*n_tags)++;
    }
    return rc;
}

static uint32_t rng_next(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* base[0..n) copied into ev with 1..3 random bytes replaced and 0..3 cut
 * off its end: its length when event_scan accepts it (into v), else 0. */
static size_t mutated_event(uint8_t *ev, const uint8_t *base, size_t n, uint32_t *seed,
                            event_view *v)
{
    memcpy(ev, base, n);
    for (int k = 1 + (int)(rng_next(seed) % 3); k > 0; k--) {
        uint8_t byte = (uint8_t)rng_next(seed); /* drawn before its place (as gcc did) */
        ev[rng_next(seed) % n] = byte;
    }
    size_t len = n - rng_next(seed) % 4;
    return event_scan(ev, len, v, NULL, 0) == 0 ? len : 0;
}

static void test_strict_accepts_only_what_lenient_accepts(void **state)
{
    uint8_t base[256], ev[256];
    size_t n = 0;
    uint32_t seed = 12345;
    unsigned accepted = 0;
    (void)state;

    n += put_str(base + n, EVENT_TOPIC, "sensors.kitchen");
    n += put_tag(base + n, "room", "kitchen");
    n += put_tag(base + n, "site", "eu");
    n += wire_put_varint_field(base + n, EVENT_PAYLOAD_SIZE, 300);
    n += put_tag(base + n, "room", "hall");
    for (int i = 0; i < 20000; i++) {
        event_view v;
        wire_slice topic;
        size_t n_tags;

        size_t len = mutated_event(ev, base, n, &seed, &v);
        if (len == 0)
            continue;
        accepted++;
        assert_int_equal(lenient_view(ev, len, &topic, &n_tags), 0);
        assert_true(wire_slice_eq(topic, v.topic));
        assert_int_equal(n_tags, v.n_tags);
        /* The tag iterator and event_tag_get agree with the walk. */
        event_tag_iter it;
        event_tag t;
        event_tags_begin(&v, &it);
        while (event_tags_next(&it, &t)) {
            wire_slice got;
            assert_int_equal(event_tag_get(&v, t.key.p, t.key.len, &got), 0);
            assert_true(wire_slice_eq(got, t.value));
        }
    }
    assert_true(accepted > 100); /* the loop did test something */
}

/* A Timestamp {seconds, nanos} as field `field` of an event, at out. */
static size_t put_time(uint8_t *out, uint32_t field, uint64_t seconds, uint64_t nanos)
{
    uint8_t ts[24];
    size_t n = 0;

    if (seconds)
        n += wire_put_varint_field(ts + n, 1, seconds);
    if (nanos)
        n += wire_put_varint_field(ts + n, 2, nanos);
    return wire_put_len_field(out, field, ts, n);
}

/* event_scan_stored (a standby's replicated records): whatever event_scan
 * accepts it accepts too, with the same topic, id and receive time (merged
 * over repeated occurrences); it still refuses a wrong wire type, an id
 * over the maximum and nanos out of range. */
static void test_scan_stored_agrees_with_event_scan(void **state)
{
    uint8_t base[256], ev[256];
    size_t n = 0;
    uint32_t seed = 777;
    unsigned accepted = 0;
    event_view v, w;
    char err[200];
    (void)state;

    n += put_str(base + n, EVENT_TOPIC, "sensors.kitchen");
    n += put_tag(base + n, "room", "kitchen");
    n += put_time(base + n, EVENT_SERVER_RECEIVE_TIME, 1700000000, 5);
    n += put_str(base + n, EVENT_ID, "order-42");
    n += wire_put_varint_field(base + n, EVENT_PAYLOAD_SIZE, 3);
    n += put_time(base + n, EVENT_SERVER_RECEIVE_TIME, 0, 123456789); /* merges: nanos only */
    assert_int_equal(event_scan_stored(base, n, &w, err, sizeof err), 0);
    assert_true(w.server_receive_time.present);
    assert_int_equal(w.server_receive_time.ns, 1700000000LL * 1000000000LL + 123456789);
    assert_true(wire_slice_eq_bytes(w.id, "order-42", 8));
    for (int i = 0; i < 20000; i++) {
        size_t len = mutated_event(ev, base, n, &seed, &v);
        if (len == 0)
            continue;
        accepted++;
        assert_int_equal(event_scan_stored(ev, len, &w, NULL, 0), 0);
        assert_true(wire_slice_eq(w.topic, v.topic));
        assert_true(wire_slice_eq(w.id, v.id));
        assert_int_equal(w.server_receive_time.present, v.server_receive_time.present);
        assert_int_equal(w.server_receive_time.ns, v.server_receive_time.ns);
    }
    assert_true(accepted > 100);

    char id[80];
    memset(id, 'x', sizeof id - 1);
    id[EVENT_ID_MAX_BYTES + 1] = '\0';
    n = put_str(ev, EVENT_TOPIC, "t");
    n += put_str(ev + n, EVENT_ID, id);
    assert_int_equal(event_scan_stored(ev, n, &w, err, sizeof err), PB_EPROTO);
    n = put_str(ev, EVENT_TOPIC, "t");
    n += wire_put_varint_field(ev + n, EVENT_SERVER_RECEIVE_TIME, 7); /* not a message */
    assert_int_equal(event_scan_stored(ev, n, &w, err, sizeof err), PB_EPROTO);
    n = put_time(ev, EVENT_SERVER_RECEIVE_TIME, 1, 1000000000);
    assert_int_equal(event_scan_stored(ev, n, &w, err, sizeof err), PB_EPROTO);
    assert_non_null(strstr(err, "nanos"));
}

/* event_scan_keys (a standby's sealed records): whatever event_scan
 * accepts it accepts too, with the same topic and id; an id over the
 * maximum, a topic or id of the wrong wire type, a group, a cut inside a
 * field are refused. */
static void test_scan_keys_agrees_with_event_scan(void **state)
{
    uint8_t base[512], ev[512];
    size_t n = 0;
    uint32_t seed = 4242;
    char payload[201];
    memset(payload, 'p', 200);
    payload[200] = '\0';
    unsigned accepted = 0;
    event_view v;
    wire_slice topic, id;
    (void)state;

    n += put_str(base + n, EVENT_TOPIC, "sensors.kitchen");
    n += put_tag(base + n, "room", "kitchen");
    n += put_time(base + n, EVENT_SERVER_RECEIVE_TIME, 1700000000, 5);
    n += put_str(base + n, EVENT_ID, "order-42");
    n += wire_put_varint_field(base + n, EVENT_PAYLOAD_SIZE, 3);
    /* Varints of more than one byte: a 2-byte length, a 10-byte value. */
    n += put_str(base + n, EVENT_PAYLOAD, payload);
    n += wire_put_varint_field(base + n, EVENT_PAYLOAD_SIZE, UINT64_MAX);
    n += put_str(base + n, EVENT_TOPIC, "sensors.hall"); /* the last one wins */
    assert_int_equal(event_scan_keys(base, n, &topic, &id), 0);
    assert_true(wire_slice_eq_bytes(topic, "sensors.hall", 12));
    assert_true(wire_slice_eq_bytes(id, "order-42", 8));
    for (size_t cut = 1; cut < n; cut++) {
        /* A prefix is accepted only at a field's end, as event_scan_stored does. */
        event_view w;
        int a = event_scan_keys(base, cut, &topic, &id);
        int b = event_scan_stored(base, cut, &w, NULL, 0);
        assert_int_equal(a, b);
    }
    for (int i = 0; i < 20000; i++) {
        size_t len = mutated_event(ev, base, n, &seed, &v);
        if (len == 0)
            continue;
        accepted++;
        assert_int_equal(event_scan_keys(ev, len, &topic, &id), 0);
        assert_true(wire_slice_eq(topic, v.topic));
        assert_true(wire_slice_eq(id, v.id));
    }
    assert_true(accepted > 100);

    char big[80];
    memset(big, 'x', sizeof big - 1);
    big[EVENT_ID_MAX_BYTES + 1] = '\0';
    n = put_str(ev, EVENT_TOPIC, "t");
    n += put_str(ev + n, EVENT_ID, big);
    assert_int_equal(event_scan_keys(ev, n, &topic, &id), PB_EPROTO);
    n = wire_put_varint_field(ev, EVENT_TOPIC, 7); /* not a string */
    assert_int_equal(event_scan_keys(ev, n, &topic, &id), PB_EPROTO);
    const uint8_t group[] = {0x1b, 0x1c}; /* field 3, start and end group */
    assert_int_equal(event_scan_keys(group, sizeof group, &topic, &id), PB_EPROTO);
    const uint8_t zero[] = {0x02, 0x00}; /* field 0 */
    assert_int_equal(event_scan_keys(zero, sizeof zero, &topic, &id), PB_EPROTO);
    assert_int_equal(event_scan_keys(ev, 0, &topic, &id), 0);
    assert_int_equal(topic.len + id.len, 0);
}

static void test_filter_verdicts(void **state)
{
    uint8_t ev[256];
    size_t n = 0;
    wire_slice topic;
    uint8_t st[4];
    const event_tag_filter f[4] = {
        {"room", 4, "kitchen", 7}, /* present, same value */
        {"floor", 5, "2", 1},      /* present, other value */
        {"gone", 4, "", 0},        /* absent ("" does not mean absent) */
        {"k", 1, "new", 3},        /* repeated: the last entry decides */
    };
    (void)state;

    n += put_str(ev + n, EVENT_TOPIC, "old.topic");
    n += put_tag(ev + n, "room", "kitchen");
    n += put_tag(ev + n, "k", "new");
    n += put_tag(ev + n, "floor", "3");
    n += put_tag(ev + n, "k", "old");
    n += put_str(ev + n, EVENT_TOPIC, "new.topic");
    memset(st, 9, sizeof st);
    assert_int_equal(event_filter_scan(ev, n, f, 4, st, &topic), 0);
    assert_true(wire_slice_eq_bytes(topic, "new.topic", 9));
    assert_int_equal(st[0], 1);
    assert_int_equal(st[1], 2);
    assert_int_equal(st[2], 0);
    assert_int_equal(st[3], 2);
    assert_false(event_filter_ok(st, 4));
    assert_true(event_filter_ok(st, 1));
    assert_true(event_filter_ok(st, 0));

    /* No filters: only the topic, and tag entries are not opened. */
    assert_int_equal(event_filter_scan(ev, n, NULL, 0, NULL, &topic), 0);
    assert_true(wire_slice_eq_bytes(topic, "new.topic", 9));
    /* No topic: empty. */
    assert_int_equal(event_filter_scan(ev, 0, f, 1, st, &topic), 0);
    assert_int_equal(topic.len, 0);
    assert_int_equal(st[0], 0);
}

static void test_filter_malformed(void **state)
{
    static const uint8_t entry_cut[] = {0x12, 0x03, 0x0a, 0x05, 'k'}; /* key past the entry */
    static const uint8_t topic_varint[] = {0x08, 0x01};               /* topic as a varint */
    const event_tag_filter f = {"k", 1, "v", 1};
    wire_slice topic;
    uint8_t st;
    (void)state;

    assert_int_equal(event_filter_scan(entry_cut, sizeof entry_cut, &f, 1, &st, &topic), PB_EPROTO);
    /* Entries are opened only for filters. */
    assert_int_equal(event_filter_scan(entry_cut, sizeof entry_cut, NULL, 0, NULL, &topic), 0);
    assert_int_equal(event_filter_scan(topic_varint, sizeof topic_varint, NULL, 0, NULL, &topic),
                     PB_EPROTO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wanted_fields_in_wire_order),
        cmocka_unit_test(test_absent_key_or_value_is_empty),
        cmocka_unit_test(test_wire_types_checked_wanted_or_not),
        cmocka_unit_test(test_utf8_only_when_strict),
        cmocka_unit_test(test_strict_accepts_only_what_lenient_accepts),
        cmocka_unit_test(test_scan_stored_agrees_with_event_scan),
        cmocka_unit_test(test_scan_keys_agrees_with_event_scan),
        cmocka_unit_test(test_filter_verdicts),
        cmocka_unit_test(test_filter_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
