/*
 * The frame codec (see frame.h): frame splitting, allocation-free walkers for
 * Frame, Publish, Event and PublishAck, and the hand encoders of the frames
 * the daemon sends. The events they carry are event.c's.
 *
 * Runs on whichever thread calls it: the loop thread (split, parse, acks,
 * errors), subscription threads (event headers), clients (decoders).
 * No state, no allocation.
 *
 * The walkers are strict where protobuf-c is strict (wire types, groups,
 * truncation) and stricter where it is lax (UTF-8, varint overflow), so
 * what the daemon accepts decodes in every protobuf library. The encoders
 * write fields in field-number order and omit proto3 defaults, exactly as
 * protobuf-c packs, so tests can compare bytes.
 */
#include "frame.h"

#include "msg.h"
#include "pb_errors.h"

#include <string.h>

static const struct msg_desc FRAME_D =
    MSG_DESC("Frame", "id", "hello", "publish", "publish_ack", "subscribe", "event", "error",
             "subscribed", "caught_up", "replica_ack", "ping", "pong", "records");
static const struct msg_desc PUBLISH_D = MSG_DESC("Publish", "events", "no_ack", "expect");
static const struct msg_desc EXPECT_D = MSG_DESC("ExpectLast", "topic", "none", "offset");
static const struct msg_desc EVFRAME_D = MSG_DESC("Event", "partition", "offset", "event");
static const struct msg_desc HELLO_D =
    MSG_DESC("Hello", "protocol_version", "name", "max_frame_bytes", "max_event_bytes", "user",
             "password", "limits");
static const struct msg_desc LIMITS_D =
    MSG_DESC("Limits", "max_subscribe_patterns", "max_pattern_bytes", "max_subscribe_tags",
             "max_subscribe_offsets", "max_batch_events", "max_event_id_bytes", "dedup_window_ms",
             "max_expectations", "idle_timeout_ms");
static const struct msg_desc ACK_D =
    MSG_DESC("PublishAck", "partitions", "partition_index", "offsets", "duplicates");

/* --- splitting ------------------------------------------------------------ */

int frame_split_next(const uint8_t *buf, size_t n, uint64_t max_frame_bytes, frame_split *s,
                     char *err, size_t errlen)
{
    uint64_t len;
    /* The common prefix (up to 9 bytes, ended) inline; the rest decides the slow way. */
    int k = (int)wire_varint_fast(buf, n, 9, &len);

    if (k == 0)
        k = wire_varint_decode(buf, n, &len);
    memset(s, 0, sizeof *s);
    if (k == 0)
        return PB_EINCOMPLETE;
    if (k < 0) {
        pb_set_err(err, errlen,
                   "frame length prefix is not a valid varint (over 10 bytes or 64 bits)");
        return PB_EPROTO;
    }
    /* Decided on the prefix alone, before the caller buffers the body. */
    if (len > max_frame_bytes || len > SIZE_MAX - (size_t)k) {
        pb_set_err(err, errlen, "frame of %llu bytes exceeds the maximum of %llu bytes",
                   (unsigned long long)len, (unsigned long long)max_frame_bytes);
        return PB_ETOOBIG;
    }
    if (n - (size_t)k < len) {
        s->need = (size_t)k + (size_t)len;
        return PB_EINCOMPLETE;
    }
    s->body.p = buf + k;
    s->body.len = (size_t)len;
    s->used = (size_t)k + (size_t)len;
    return 0;
}

/* --- Frame ----------------------------------------------------------------- */

const char *frame_kind_name(enum frame_kind kind)
{
    if (kind >= FRAME_HELLO && kind <= FRAME_KIND_MAX)
        return FRAME_D.fields[kind];
    return "none";
}

const char *frame_field_name(uint32_t number)
{
    if (number >= 1 && number <= FRAME_KIND_MAX)
        return FRAME_D.fields[number];
    return "unknown";
}

int frame_parse(const uint8_t *p, size_t n, frame_view *f, char *err, size_t errlen)
{
    wire_cursor c;
    wire_field fld;
    size_t body_pos = 0;

    memset(f, 0, sizeof *f);
    wire_cursor_init(&c, p, n);
    while (!wire_cursor_done(&c)) {
        if (msg_next(&c, &fld, &FRAME_D, err, errlen) < 0)
            return PB_EPROTO;
        if (fld.number == 1) {
            if (msg_want_type(&fld, WIRE_VARINT, &FRAME_D, err, errlen) < 0)
                return PB_EPROTO;
            f->id = fld.value;
        } else if (fld.number >= FRAME_HELLO && fld.number <= FRAME_KIND_MAX) {
            if (msg_want_type(&fld, WIRE_LEN, &FRAME_D, err, errlen) < 0)
                return PB_EPROTO;
            if (f->kind != FRAME_NONE)
                return msg_fail(err, errlen, &FRAME_D, &fld,
                                "a second body; the frame already has %s at byte %zu",
                                frame_kind_name(f->kind), body_pos);
            f->kind = (enum frame_kind)fld.number;
            f->body = fld.data;
            body_pos = fld.pos;
        } else if (fld.type == WIRE_LEN && f->unknown_field == 0) {
            f->unknown_field = fld.number;
        }
    }
    return 0;
}

/* --- Hello ------------------------------------------------------------------ */

/* Limits: nine varints (uint32 ones are read whole, as for every uint32
 * here: protobuf-c keeps the low 32 bits, which only matters for a sender
 * that is wrong anyway). */
static int parse_limits(const wire_cursor *parent, wire_slice s, frame_limits *l, char *err,
                        size_t errlen)
{
    wire_cursor c;
    wire_field f;

    wire_cursor_sub(&c, parent, s);
    while (!wire_cursor_done(&c)) {
        if (msg_next(&c, &f, &LIMITS_D, err, errlen) < 0)
            return PB_EPROTO;
        if (f.number < 1 || f.number > 9)
            continue;
        if (msg_want_type(&f, WIRE_VARINT, &LIMITS_D, err, errlen) < 0)
            return PB_EPROTO;
        uint32_t v32 = (uint32_t)f.value;
        switch (f.number) {
        case 1:
            l->max_subscribe_patterns = v32;
            break;
        case 2:
            l->max_pattern_bytes = v32;
            break;
        case 3:
            l->max_subscribe_tags = v32;
            break;
        case 4:
            l->max_subscribe_offsets = v32;
            break;
        case 5:
            l->max_batch_events = v32;
            break;
        case 6:
            l->max_event_id_bytes = v32;
            break;
        case 7:
            l->dedup_window_ms = f.value;
            break;
        case 8:
            l->max_expectations = v32;
            break;
        default:
            l->idle_timeout_ms = f.value;
            break;
        }
    }
    return 0;
}

int hello_parse(const uint8_t *p, size_t n, hello_view *h, char *err, size_t errlen)
{
    wire_cursor c;
    wire_field f;

    memset(h, 0, sizeof *h);
    wire_cursor_init(&c, p, n);
    while (!wire_cursor_done(&c)) {
        if (msg_next(&c, &f, &HELLO_D, err, errlen) < 0)
            return PB_EPROTO;
        switch (f.number) {
        case 1:
        case 3:
        case 4:
            if (msg_want_type(&f, WIRE_VARINT, &HELLO_D, err, errlen) < 0)
                return PB_EPROTO;
            if (f.number == 1)
                h->protocol_version = f.value;
            else if (f.number == 3)
                h->max_frame_bytes = f.value;
            else
                h->max_event_bytes = f.value;
            break;
        case 2:
        case 5:
        case 6:
            if (msg_want_string(&f, &c, &HELLO_D, err, errlen) < 0)
                return PB_EPROTO;
            *(f.number == 2 ? &h->name : f.number == 5 ? &h->user : &h->password) = f.data;
            break;
        case 7: {
            char inner[MSG_ERR_MAX];

            if (msg_want_type(&f, WIRE_LEN, &HELLO_D, err, errlen) < 0)
                return PB_EPROTO;
            if (parse_limits(&c, f.data, &h->limits, inner, sizeof inner) < 0)
                return msg_fail(err, errlen, &HELLO_D, &f, "%s", inner);
            h->has_limits = true;
            break;
        }
        default:
            break; /* unknown: a newer peer's */
        }
    }
    return 0;
}

/* --- Publish ---------------------------------------------------------------- */

/* One ExpectLast (Publish.expect): its fields well-formed, topic UTF-8.
 * Errors are worded for ExpectLast into err; the caller wraps them. */
static int check_expect(const wire_cursor *parent, wire_slice s, char *err, size_t errlen)
{
    wire_cursor c;
    wire_field f;

    wire_cursor_sub(&c, parent, s);
    while (!wire_cursor_done(&c)) {
        if (msg_next(&c, &f, &EXPECT_D, err, errlen) < 0)
            return PB_EPROTO;
        if (f.number == 1) {
            if (msg_want_string(&f, &c, &EXPECT_D, err, errlen) < 0)
                return PB_EPROTO;
        } else if (f.number == 2 || f.number == 3) {
            if (msg_want_type(&f, WIRE_VARINT, &EXPECT_D, err, errlen) < 0)
                return PB_EPROTO;
        }
    }
    return 0;
}

int publish_open(const uint8_t *p, size_t n, publish_iter *it, char *err, size_t errlen)
{
    wire_cursor c;
    wire_field f;

    memset(it, 0, sizeof *it);
    wire_cursor_init(&it->c, p, n);
    c = it->c;
    while (!wire_cursor_done(&c)) {
        if (msg_next(&c, &f, &PUBLISH_D, err, errlen) < 0)
            return PB_EPROTO;
        if (f.number == 1) {
            if (msg_want_type(&f, WIRE_LEN, &PUBLISH_D, err, errlen) < 0)
                return PB_EPROTO;
            it->n_events++;
        } else if (f.number == 2) {
            if (msg_want_type(&f, WIRE_VARINT, &PUBLISH_D, err, errlen) < 0)
                return PB_EPROTO;
            it->no_ack = f.value != 0;
        } else if (f.number == 3) {
            char inner[MSG_ERR_MAX];

            if (msg_want_type(&f, WIRE_LEN, &PUBLISH_D, err, errlen) < 0)
                return PB_EPROTO;
            if (check_expect(&c, f.data, inner, sizeof inner) < 0)
                return msg_fail(err, errlen, &PUBLISH_D, &f, "%s", inner);
            it->n_expect++;
        }
    }
    it->ec = it->c;
    return 0;
}

int publish_next(publish_iter *it, wire_slice *event)
{
    return wire_find_slice(&it->c, 1, event);
}

int publish_next_expect(publish_iter *it, publish_expect *e)
{
    wire_slice s;
    wire_cursor c;
    wire_field f;
    char detail[WIRE_DETAIL_MAX];

    if (wire_find_slice(&it->ec, 3, &s) < 0)
        return PB_EEOF;
    memset(e, 0, sizeof *e);
    wire_cursor_sub(&c, &it->ec, s);
    /* publish_open checked the entry: every field is well-formed. */
    while (!wire_cursor_done(&c) && wire_next(&c, &f, detail) == 0) {
        if (f.number == 1 && f.type == WIRE_LEN)
            e->topic = f.data;
        else if (f.number == 2 && f.type == WIRE_VARINT)
            e->none = f.value != 0;
        else if (f.number == 3 && f.type == WIRE_VARINT)
            e->offset = f.value;
    }
    return 0;
}

void publish_restart(publish_iter *it, const uint8_t *p)
{
    wire_cursor_init(&it->c, p, (size_t)(it->c.end - it->c.base));
    it->ec = it->c;
}

/* --- encoders ---------------------------------------------------------------- */

size_t frame_put_delimiter(uint8_t *out, size_t cap, size_t body_len)
{
    size_t total = wire_varint_size(body_len);

    if (total > cap)
        return total;
    return wire_put_varint(out, body_len);
}

static size_t opt_varint_size(uint32_t number, uint64_t v)
{
    return v ? wire_varint_field_size(number, v) : 0;
}

static size_t opt_varint_put(uint8_t *out, uint32_t number, uint64_t v)
{
    return v ? wire_put_varint_field(out, number, v) : 0;
}

static size_t opt_str_size(uint32_t number, size_t len)
{
    return len ? wire_len_field_size(number, len) : 0;
}

/* Proto3 strings are omitted when empty; wire_put_utf8_field repairs bad UTF-8. */
static size_t opt_str_put(uint8_t *out, uint32_t number, const char *s, size_t len)
{
    return len ? wire_put_utf8_field(out, number, s, len) : 0;
}

static size_t cstr_len(const char *s)
{
    return s ? strlen(s) : 0;
}

/* Prefix + Frame{id, <body field>{...}} header around a body of body_len bytes. */
static size_t frame_size(uint64_t id, uint32_t body_field, size_t body_len, size_t *frame_len)
{
    *frame_len = opt_varint_size(1, id) + wire_len_field_size(body_field, body_len);
    return wire_varint_size(*frame_len) + *frame_len;
}

static size_t frame_start(uint8_t *out, size_t frame_len, uint64_t id, uint32_t body_field,
                          size_t body_len)
{
    size_t k = wire_put_varint(out, frame_len);

    k += opt_varint_put(out + k, 1, id);
    k += wire_put_tag(out + k, body_field, WIRE_LEN);
    return k + wire_put_varint(out + k, body_len);
}

size_t frame_put_event_header(uint8_t *out, size_t cap, uint64_t id, const char *partition,
                              uint64_t offset, size_t event_len)
{
    return frame_put_event_header_n(out, cap, id, partition, cstr_len(partition), offset,
                                    event_len);
}

/*
 * Written out field by field rather than with the generic helpers: replay
 * calls this once per event. The layout is the one frame_size/frame_start
 * give (the tests compare it with protobuf-c byte for byte).
 */
size_t frame_put_event_header_n(uint8_t *out, size_t cap, uint64_t id, const char *partition,
                                size_t partition_len, uint64_t offset, size_t event_len)
{
    size_t plen = partition_len;
    size_t body = (plen ? 1 + wire_varint_size(plen) + plen : 0) +
                  (offset ? 1 + wire_varint_size(offset) : 0) + 1 + wire_varint_size(event_len) +
                  event_len;
    size_t frame_len = (id ? 1 + wire_varint_size(id) : 0) + 1 + wire_varint_size(body) + body;
    /* The stored bytes follow, sent as they are: not part of the header. */
    size_t header = wire_varint_size(frame_len) + frame_len - event_len;
    uint8_t *o = out;

    if (header > cap)
        return header;
    o += wire_put_varint(o, frame_len);
    if (id) {
        *o++ = 1 << 3 | WIRE_VARINT;
        o += wire_put_varint(o, id);
    }
    *o++ = FRAME_EVENT << 3 | WIRE_LEN;
    o += wire_put_varint(o, body);
    if (plen)
        o += wire_put_utf8_field(o, 1, partition, plen);
    if (offset) {
        *o++ = 2 << 3 | WIRE_VARINT;
        o += wire_put_varint(o, offset);
    }
    *o++ = 3 << 3 | WIRE_LEN;
    o += wire_put_varint(o, event_len);
    return (size_t)(o - out);
}

size_t frame_put_publish_ack(uint8_t *out, size_t cap, uint64_t id, const char *const *partitions,
                             size_t n_partitions, const uint32_t *partition_index,
                             const uint64_t *offsets, size_t n_events)
{
    return frame_put_publish_ack_dups(out, cap, id, partitions, n_partitions, partition_index,
                                      offsets, n_events, NULL, 0);
}

size_t frame_put_publish_ack_dups(uint8_t *out, size_t cap, uint64_t id,
                                  const char *const *partitions, size_t n_partitions,
                                  const uint32_t *partition_index, const uint64_t *offsets,
                                  size_t n_events, const uint32_t *dups, size_t n_dups)
{
    size_t idx_bytes = 0, off_bytes = 0, dup_bytes = 0, body = 0, frame_len, total, k;

    for (size_t i = 0; i < n_partitions; i++)
        body += wire_len_field_size(1, cstr_len(partitions[i]));
    for (size_t i = 0; i < n_events; i++) {
        idx_bytes += wire_varint_size(partition_index[i]);
        off_bytes += wire_varint_size(offsets[i]);
    }
    if (n_events > 0)
        body += wire_len_field_size(2, idx_bytes) + wire_len_field_size(3, off_bytes);
    for (size_t i = 0; i < n_dups; i++)
        dup_bytes += wire_varint_size(dups[i]);
    if (n_dups > 0)
        body += wire_len_field_size(4, dup_bytes);
    total = frame_size(id, FRAME_PUBLISH_ACK, body, &frame_len);
    if (total > cap)
        return total;

    k = frame_start(out, frame_len, id, FRAME_PUBLISH_ACK, body);
    for (size_t i = 0; i < n_partitions; i++) {
        /* Repeated strings keep empty elements: protobuf-c writes them too. */
        k += wire_put_utf8_field(out + k, 1, partitions[i], cstr_len(partitions[i]));
    }
    if (n_events > 0) {
        k += wire_put_tag(out + k, 2, WIRE_LEN);
        k += wire_put_varint(out + k, idx_bytes);
        for (size_t i = 0; i < n_events; i++)
            k += wire_put_varint(out + k, partition_index[i]);
        k += wire_put_tag(out + k, 3, WIRE_LEN);
        k += wire_put_varint(out + k, off_bytes);
        for (size_t i = 0; i < n_events; i++)
            k += wire_put_varint(out + k, offsets[i]);
    }
    if (n_dups > 0) {
        k += wire_put_tag(out + k, 4, WIRE_LEN);
        k += wire_put_varint(out + k, dup_bytes);
        for (size_t i = 0; i < n_dups; i++)
            k += wire_put_varint(out + k, dups[i]);
    }
    return k;
}

/* An ExpectLast message's body size (fields in number order, defaults omitted). */
static size_t expect_size(const frame_expect *x)
{
    return opt_str_size(1, x->topic_len) + opt_varint_size(2, x->none ? 1 : 0) +
           opt_varint_size(3, x->offset);
}

static size_t opt_expect_size(uint32_t number, const frame_expect *x)
{
    return x ? wire_len_field_size(number, expect_size(x)) : 0;
}

static size_t opt_expect_put(uint8_t *out, uint32_t number, const frame_expect *x)
{
    if (!x)
        return 0;
    size_t k = wire_put_tag(out, number, WIRE_LEN);
    k += wire_put_varint(out + k, expect_size(x));
    k += opt_str_put(out + k, 1, x->topic, x->topic_len);
    k += opt_varint_put(out + k, 2, x->none ? 1 : 0);
    k += opt_varint_put(out + k, 3, x->offset);
    return k;
}

size_t frame_put_error(uint8_t *out, size_t cap, uint64_t id, const frame_error *e)
{
    /* An enum is an int32: a negative one is sign-extended to 10 bytes. */
    uint64_t code = (uint64_t)(int64_t)e->code;
    size_t mlen = cstr_len(e->message), plen = cstr_len(e->partition);
    size_t body = opt_varint_size(1, code) + opt_str_size(2, mlen) + opt_str_size(3, plen) +
                  opt_varint_size(4, e->first_offset) + opt_varint_size(5, e->last_offset) +
                  opt_varint_size(6, e->event_index_plus_one) + opt_expect_size(7, e->expected) +
                  opt_expect_size(8, e->actual);
    size_t frame_len, total, k;

    total = frame_size(id, FRAME_ERROR, body, &frame_len);
    if (total > cap)
        return total;
    k = frame_start(out, frame_len, id, FRAME_ERROR, body);
    k += opt_varint_put(out + k, 1, code);
    k += opt_str_put(out + k, 2, e->message, mlen);
    k += opt_str_put(out + k, 3, e->partition, plen);
    k += opt_varint_put(out + k, 4, e->first_offset);
    k += opt_varint_put(out + k, 5, e->last_offset);
    k += opt_varint_put(out + k, 6, e->event_index_plus_one);
    k += opt_expect_put(out + k, 7, e->expected);
    k += opt_expect_put(out + k, 8, e->actual);
    return k;
}

static size_t limits_size(const frame_limits *l)
{
    return opt_varint_size(1, l->max_subscribe_patterns) +
           opt_varint_size(2, l->max_pattern_bytes) + opt_varint_size(3, l->max_subscribe_tags) +
           opt_varint_size(4, l->max_subscribe_offsets) + opt_varint_size(5, l->max_batch_events) +
           opt_varint_size(6, l->max_event_id_bytes) + opt_varint_size(7, l->dedup_window_ms) +
           opt_varint_size(8, l->max_expectations) + opt_varint_size(9, l->idle_timeout_ms);
}

static size_t limits_put(uint8_t *out, const frame_limits *l)
{
    size_t k = 0;

    k += opt_varint_put(out + k, 1, l->max_subscribe_patterns);
    k += opt_varint_put(out + k, 2, l->max_pattern_bytes);
    k += opt_varint_put(out + k, 3, l->max_subscribe_tags);
    k += opt_varint_put(out + k, 4, l->max_subscribe_offsets);
    k += opt_varint_put(out + k, 5, l->max_batch_events);
    k += opt_varint_put(out + k, 6, l->max_event_id_bytes);
    k += opt_varint_put(out + k, 7, l->dedup_window_ms);
    k += opt_varint_put(out + k, 8, l->max_expectations);
    k += opt_varint_put(out + k, 9, l->idle_timeout_ms);
    return k;
}

size_t frame_put_hello(uint8_t *out, size_t cap, uint64_t id, const frame_hello *h)
{
    size_t nlen = cstr_len(h->name), ulen = cstr_len(h->user), plen = cstr_len(h->password);
    size_t llen = h->limits ? limits_size(h->limits) : 0;
    size_t body = opt_varint_size(1, h->protocol_version) + opt_str_size(2, nlen) +
                  opt_varint_size(3, h->max_frame_bytes) + opt_varint_size(4, h->max_event_bytes) +
                  opt_str_size(5, ulen) + opt_str_size(6, plen) +
                  (h->limits ? wire_len_field_size(7, llen) : 0);
    size_t frame_len, total, k;

    total = frame_size(id, FRAME_HELLO, body, &frame_len);
    if (total > cap)
        return total;
    k = frame_start(out, frame_len, id, FRAME_HELLO, body);
    k += opt_varint_put(out + k, 1, h->protocol_version);
    k += opt_str_put(out + k, 2, h->name, nlen);
    k += opt_varint_put(out + k, 3, h->max_frame_bytes);
    k += opt_varint_put(out + k, 4, h->max_event_bytes);
    k += opt_str_put(out + k, 5, h->user, ulen);
    k += opt_str_put(out + k, 6, h->password, plen);
    if (h->limits) {
        k += wire_put_tag(out + k, 7, WIRE_LEN);
        k += wire_put_varint(out + k, llen);
        k += limits_put(out + k, h->limits);
    }
    return k;
}

/* A frame whose body is an empty message (Ping, Pong). */
static size_t put_empty_body(uint8_t *out, size_t cap, uint64_t id, uint32_t body_field)
{
    size_t frame_len, total = frame_size(id, body_field, 0, &frame_len);

    if (total > cap)
        return total;
    return frame_start(out, frame_len, id, body_field, 0);
}

size_t frame_put_pong(uint8_t *out, size_t cap, uint64_t id)
{
    return put_empty_body(out, cap, id, FRAME_PONG);
}

size_t frame_put_ping(uint8_t *out, size_t cap, uint64_t id)
{
    return put_empty_body(out, cap, id, FRAME_PING);
}

size_t frame_put_caught_up(uint8_t *out, size_t cap, uint64_t id, uint64_t history_events)
{
    size_t body = opt_varint_size(1, history_events), frame_len, total, k;

    total = frame_size(id, FRAME_CAUGHT_UP, body, &frame_len);
    if (total > cap)
        return total;
    k = frame_start(out, frame_len, id, FRAME_CAUGHT_UP, body);
    k += opt_varint_put(out + k, 1, history_events);
    return k;
}

static size_t position_size(const frame_position *p)
{
    return opt_str_size(1, cstr_len(p->partition)) + opt_varint_size(2, p->first_offset) +
           opt_varint_size(3, p->start_offset) + opt_varint_size(4, p->end_offset);
}

size_t frame_put_subscribed(uint8_t *out, size_t cap, uint64_t id, const frame_position *parts,
                            size_t n)
{
    size_t body = 0, frame_len, total, k;

    for (size_t i = 0; i < n; i++)
        body += wire_len_field_size(1, position_size(&parts[i]));
    total = frame_size(id, FRAME_SUBSCRIBED, body, &frame_len);
    if (total > cap)
        return total;
    k = frame_start(out, frame_len, id, FRAME_SUBSCRIBED, body);
    for (size_t i = 0; i < n; i++) {
        const frame_position *p = &parts[i];

        k += wire_put_tag(out + k, 1, WIRE_LEN);
        k += wire_put_varint(out + k, position_size(p));
        k += opt_str_put(out + k, 1, p->partition, cstr_len(p->partition));
        k += opt_varint_put(out + k, 2, p->first_offset);
        k += opt_varint_put(out + k, 3, p->start_offset);
        k += opt_varint_put(out + k, 4, p->end_offset);
    }
    return k;
}

/* --- client-side decoders ------------------------------------------------------ */

int event_frame_parse(const uint8_t *p, size_t n, event_frame_view *v, char *err, size_t errlen)
{
    wire_cursor c;
    wire_field f;
    size_t event_pos = 0;
    bool have_event = false;

    memset(v, 0, sizeof *v);
    wire_cursor_init(&c, p, n);
    while (!wire_cursor_done(&c)) {
        if (msg_next(&c, &f, &EVFRAME_D, err, errlen) < 0)
            return PB_EPROTO;
        if (f.number == 1) {
            if (msg_want_string(&f, &c, &EVFRAME_D, err, errlen) < 0)
                return PB_EPROTO;
            v->partition = f.data;
        } else if (f.number == 2) {
            if (msg_want_type(&f, WIRE_VARINT, &EVFRAME_D, err, errlen) < 0)
                return PB_EPROTO;
            v->offset = f.value;
        } else if (f.number == 3) {
            if (msg_want_type(&f, WIRE_LEN, &EVFRAME_D, err, errlen) < 0)
                return PB_EPROTO;
            /* Two occurrences would merge into one event: not one slice. */
            if (have_event)
                return msg_fail(err, errlen, &EVFRAME_D, &f,
                                "a second event; the first is at byte %zu", event_pos);
            have_event = true;
            event_pos = f.pos;
            v->event = f.data;
        }
    }
    if (!have_event) {
        pb_set_err(err, errlen, "Event has no event (field 3)");
        return PB_EPROTO;
    }
    return 0;
}

/*
 * Count a repeated varint field; with limit_what set, every value must be
 * below `limit` (limit_what says why in the message).
 */
static int count_repeated(const wire_cursor *msg, uint32_t number, uint64_t limit,
                          const char *limit_what, size_t *count, char *err, size_t errlen)
{
    char detail[WIRE_DETAIL_MAX];
    wire_field f = {.number = number, .pos = 0};
    wire_repeated r;
    uint64_t v;
    int rc;

    *count = 0;
    wire_repeated_init(&r, msg, number);
    while ((rc = wire_repeated_next(&r, &v, detail)) == 0) {
        if (limit_what != NULL && v >= limit)
            return msg_fail(err, errlen, &ACK_D, &f, "value %zu is %llu, %s", *count,
                            (unsigned long long)v, limit_what);
        (*count)++;
    }
    if (rc != PB_EEOF)
        return msg_fail(err, errlen, &ACK_D, &f, "%s", detail);
    return 0;
}

int publish_ack_open(const uint8_t *p, size_t n, publish_ack_iter *it, char *err, size_t errlen)
{
    wire_cursor msg, c;
    wire_field f;
    size_t n_index;

    memset(it, 0, sizeof *it);
    wire_cursor_init(&msg, p, n);
    c = msg;
    while (!wire_cursor_done(&c)) {
        if (msg_next(&c, &f, &ACK_D, err, errlen) < 0)
            return PB_EPROTO;
        if (f.number == 1) {
            if (msg_want_string(&f, &c, &ACK_D, err, errlen) < 0)
                return PB_EPROTO;
            it->n_partitions++;
        } else if ((f.number == 2 || f.number == 3 || f.number == 4) && f.type != WIRE_VARINT &&
                   f.type != WIRE_LEN) {
            return msg_fail(err, errlen, &ACK_D, &f,
                            "wire type %u (%s), expected a varint or a packed run", f.type,
                            msg_wire_type_name(f.type));
        }
    }
    /* The limit also keeps every index within uint32 (n_partitions < 2^31). */
    if (count_repeated(&msg, 2, it->n_partitions, "not less than the number of partitions",
                       &n_index, err, errlen) < 0 ||
        count_repeated(&msg, 3, 0, NULL, &it->n_events, err, errlen) < 0 ||
        count_repeated(&msg, 4, UINT32_MAX + 1ull, "over the uint32 range", &it->n_duplicates, err,
                       errlen) < 0)
        return PB_EPROTO;
    if (n_index != it->n_events) {
        pb_set_err(err, errlen, "PublishAck has %zu partition_index values but %zu offsets",
                   n_index, it->n_events);
        return PB_EPROTO;
    }
    it->names = msg;
    wire_repeated_init(&it->index, &msg, 2);
    wire_repeated_init(&it->offsets, &msg, 3);
    wire_repeated_init(&it->dups, &msg, 4);
    return 0;
}

int publish_ack_next_partition(publish_ack_iter *it, wire_slice *name)
{
    return wire_find_slice(&it->names, 1, name);
}

int publish_ack_next(publish_ack_iter *it, uint32_t *partition_index, uint64_t *offset)
{
    char detail[WIRE_DETAIL_MAX];
    uint64_t idx;
    int rc;

    if ((rc = wire_repeated_next(&it->index, &idx, detail)) < 0 ||
        (rc = wire_repeated_next(&it->offsets, offset, detail)) < 0)
        return rc;
    *partition_index = (uint32_t)idx;
    return 0;
}

int publish_ack_next_duplicate(publish_ack_iter *it, uint32_t *event_index)
{
    char detail[WIRE_DETAIL_MAX];
    uint64_t v;
    int rc = wire_repeated_next(&it->dups, &v, detail);

    if (rc < 0)
        return rc;
    *event_index = (uint32_t)v;
    return 0;
}
