/*
 * framecheck - see framecheck.h.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "framecheck.h"
#include "pb_errors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

packed_buf pack_msg(const ProtobufCMessage *m)
{
    packed_buf b;
    b.len = protobuf_c_message_get_packed_size(m);
    b.p = xmalloc(b.len);
    assert_int_equal(protobuf_c_message_pack(m, b.p), b.len);
    return b;
}

/* prefix + Frame, as a sender puts it on the wire. */
packed_buf pack_delimited(const Protobus__Frame *f)
{
    packed_buf body = pack_msg(&f->base), b;
    size_t k = frame_put_delimiter(NULL, 0, body.len);

    b.len = k + body.len;
    b.p = xmalloc(b.len);
    assert_int_equal(frame_put_delimiter(b.p, k, body.len), k);
    memcpy(b.p + k, body.p, body.len);
    free(body.p);
    return b;
}

bool slice_is(wire_slice s, const void *p, size_t n)
{
    return s.len == n && (n == 0 || memcmp(s.p, p, n) == 0);
}

bool slice_is_str(wire_slice s, const char *str)
{
    return slice_is(s, str, strlen(str));
}

/*
 * A protobuf-c string holds all the bytes that arrived (plus a NUL), even
 * NULs inside: compare them all, not up to the first NUL.
 */
bool slice_is_unpacked(wire_slice s, const char *str)
{
    return s.len == 0 || memcmp(s.p, str, s.len) == 0;
}

const char *const tag_keys[4] = {"host", "region", "empty", "unicode"};
const char *const tag_values[4] = {"web-1", "eu-west", "", "caf\xc3\xa9 \xe2\x82\xac"};

void full_event_init(struct full_event *fe, char *topic, uint8_t *payload, size_t len)
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

int64_t ts_ns(const Google__Protobuf__Timestamp *t)
{
    return t->seconds * NS + t->nanos;
}

/* The view agrees with protobuf-c's unpack of the same bytes. */
void assert_view_matches(const event_view *v, const Protobus__EncapsulatedEvent *u)
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
void assert_scan_agrees(const uint8_t *p, size_t n)
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

void expect_err(int rc, int want, const char *err, const char *needle)
{
    assert_int_equal(rc, want);
    if (strstr(err, needle) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", err, needle);
}

/* Walk a PublishAck body and compare it with protobuf-c's unpack of it. */
void assert_ack_agrees(const uint8_t *p, size_t n)
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
