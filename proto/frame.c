/*
 * The wire codec (see frame.h): frame splitting, allocation-free walkers for
 * Frame, Publish, EncapsulatedEvent, Event and PublishAck, and the hand
 * encoders of the frames the daemon sends.
 *
 * Runs on whichever thread calls it: the loop thread (split, parse, scan,
 * acks, errors), subscription threads (event headers), clients (decoders).
 * No state, no allocation.
 *
 * The walkers are strict where protobuf-c is strict (wire types, groups,
 * truncation) and stricter where it is lax (UTF-8, varint overflow, nanos
 * range), so bytes the daemon accepts and stores decode in every protobuf
 * library. The encoders write fields in field-number order and omit proto3
 * defaults, exactly as protobuf-c packs, so tests can compare bytes.
 */
#include "frame.h"

#include "pb_errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define NS_PER_S 1000000000LL

/* --- error messages ----------------------------------------------------- */

/* A message type, for naming fields in errors. */
struct msg_desc {
    const char *name;
    const char *const *fields; /* indexed by field number; [0] unused */
    size_t n_fields;
};

#define FIELDS(...)  ((const char *const[]){NULL, __VA_ARGS__})
#define NFIELDS(...) (sizeof((const char *const[]){NULL, __VA_ARGS__}) / sizeof(const char *))
#define DESC(msg, ...)                                                                             \
    {                                                                                              \
        msg, FIELDS(__VA_ARGS__), NFIELDS(__VA_ARGS__)                                             \
    }

static const struct msg_desc FRAME_D =
    DESC("Frame", "id", "hello", "publish", "publish_ack", "subscribe", "event", "error");
static const struct msg_desc PUBLISH_D = DESC("Publish", "events", "no_ack");
static const struct msg_desc EVENT_D =
    DESC("EncapsulatedEvent", "topic", "tags", "client_event_time", "client_transmit_time",
         "server_receive_time", "payload_size", "payload");
static const struct msg_desc TIMESTAMP_D = DESC("Timestamp", "seconds", "nanos");
static const struct msg_desc ANY_D = DESC("Any", "type_url", "value");
static const struct msg_desc TAG_D = DESC("TagsEntry", "key", "value");
static const struct msg_desc EVFRAME_D = DESC("Event", "partition", "offset", "event");
static const struct msg_desc ACK_D = DESC("PublishAck", "partitions", "partition_index", "offsets");

#define ERR_MAX 384 /* room for a nested message: event > timestamp > detail */

static const char *field_name(const struct msg_desc *d, uint32_t number)
{
    return number < d->n_fields ? d->fields[number] : "unknown";
}

static const char *wire_type_name(unsigned type)
{
    static const char *const names[] = {"varint",      "64-bit",    "length-delimited",
                                        "start group", "end group", "32-bit"};
    return type < 6 ? names[type] : "invalid";
}

/*
 * "<Message> field N (name) at byte B: <detail>", or "<Message>: <detail>"
 * when the tag itself could not be read. Returns PB_EPROTO.
 */
__attribute__((format(printf, 5, 6))) static int field_fail(char *err, size_t errlen,
                                                            const struct msg_desc *d,
                                                            const wire_field *f, const char *fmt,
                                                            ...)
{
    char detail[ERR_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (f->number == 0)
        pb_set_err(err, errlen, "%s: %s", d->name, detail);
    else
        pb_set_err(err, errlen, "%s field %u (%s) at byte %zu: %s", d->name, (unsigned)f->number,
                   field_name(d, f->number), f->pos, detail);
    return PB_EPROTO;
}

static inline int next_field(wire_cursor *c, wire_field *f, const struct msg_desc *d, char *err,
                             size_t errlen)
{
    char detail[WIRE_DETAIL_MAX];

    if (wire_next_short(c, f))
        return 0;
    if (wire_next(c, f, detail) < 0)
        return field_fail(err, errlen, d, f, "%s", detail);
    return 0;
}

static int want_type(const wire_field *f, enum wire_type type, const struct msg_desc *d, char *err,
                     size_t errlen)
{
    if (f->type == type)
        return 0;
    return field_fail(err, errlen, d, f, "wire type %u (%s), expected %u (%s)", f->type,
                      wire_type_name(f->type), type, wire_type_name(type));
}

/* A LEN field that proto3 declares `string`: it must be UTF-8. */
static int want_string(const wire_field *f, const wire_cursor *c, const struct msg_desc *d,
                       char *err, size_t errlen)
{
    size_t bad;

    if (want_type(f, WIRE_LEN, d, err, errlen) < 0)
        return PB_EPROTO;
    if (wire_utf8_valid(f->data.p, f->data.len, &bad))
        return 0;
    return field_fail(err, errlen, d, f, "invalid UTF-8 at byte %zu",
                      (size_t)(f->data.p - c->base) + bad);
}

static bool slice_eq(wire_slice a, wire_slice b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

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
    if (kind >= FRAME_HELLO && kind <= FRAME_ERROR)
        return FRAME_D.fields[kind];
    return "none";
}

int frame_parse(const uint8_t *p, size_t n, frame_view *f, char *err, size_t errlen)
{
    wire_cursor c;
    wire_field fld;
    size_t body_pos = 0;

    memset(f, 0, sizeof *f);
    wire_cursor_init(&c, p, n);
    while (!wire_cursor_done(&c)) {
        if (next_field(&c, &fld, &FRAME_D, err, errlen) < 0)
            return PB_EPROTO;
        if (fld.number == 1) {
            if (want_type(&fld, WIRE_VARINT, &FRAME_D, err, errlen) < 0)
                return PB_EPROTO;
            f->id = fld.value;
        } else if (fld.number >= FRAME_HELLO && fld.number <= FRAME_ERROR) {
            if (want_type(&fld, WIRE_LEN, &FRAME_D, err, errlen) < 0)
                return PB_EPROTO;
            if (f->kind != FRAME_NONE)
                return field_fail(err, errlen, &FRAME_D, &fld,
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

/* --- Publish ---------------------------------------------------------------- */

int publish_open(const uint8_t *p, size_t n, publish_iter *it, char *err, size_t errlen)
{
    wire_cursor c;
    wire_field f;

    memset(it, 0, sizeof *it);
    wire_cursor_init(&it->c, p, n);
    c = it->c;
    while (!wire_cursor_done(&c)) {
        if (next_field(&c, &f, &PUBLISH_D, err, errlen) < 0)
            return PB_EPROTO;
        if (f.number == 1) {
            if (want_type(&f, WIRE_LEN, &PUBLISH_D, err, errlen) < 0)
                return PB_EPROTO;
            it->n_events++;
        } else if (f.number == 2) {
            if (want_type(&f, WIRE_VARINT, &PUBLISH_D, err, errlen) < 0)
                return PB_EPROTO;
            it->no_ack = f.value != 0;
        }
    }
    return 0;
}

int publish_next(publish_iter *it, wire_slice *event)
{
    char detail[WIRE_DETAIL_MAX];
    wire_field f;
    int rc = wire_find(&it->c, 1, &f, detail);

    if (rc < 0)
        return rc;
    *event = f.data;
    return 0;
}

void publish_restart(publish_iter *it, const uint8_t *p)
{
    wire_cursor_init(&it->c, p, (size_t)(it->c.end - it->c.base));
}

/* --- EncapsulatedEvent -------------------------------------------------------- */

/* A Timestamp accumulated over every occurrence of its field (merge rule). */
struct ts_acc {
    int64_t seconds;
    int64_t nanos;
    bool present;
    size_t last_pos; /* byte position of its last occurrence, for errors */
};

static int scan_timestamp(const wire_cursor *parent, wire_slice s, struct ts_acc *ts, char *err,
                          size_t errlen)
{
    wire_cursor c;
    wire_field f;

    wire_cursor_sub(&c, parent, s);
    ts->present = true;
    while (!wire_cursor_done(&c)) {
        if (next_field(&c, &f, &TIMESTAMP_D, err, errlen) < 0)
            return PB_EPROTO;
        if (f.number != 1 && f.number != 2)
            continue;
        if (want_type(&f, WIRE_VARINT, &TIMESTAMP_D, err, errlen) < 0)
            return PB_EPROTO;
        if (f.number == 1) {
            ts->seconds = (int64_t)f.value;
        } else {
            /* Compared as unsigned: a negative int32 arrives sign-extended. */
            if (f.value >= (uint64_t)NS_PER_S)
                return field_fail(err, errlen, &TIMESTAMP_D, &f,
                                  "nanos %lld out of range [0, 999999999]",
                                  (long long)(int64_t)f.value);
            ts->nanos = (int64_t)f.value;
        }
    }
    return 0;
}

/*
 * seconds * 1e9 + nanos without overflow. For negative seconds the nanos are
 * borrowed first so that INT64_MIN ns itself (-9223372037 s + 145224192 ns)
 * is representable.
 */
static bool ts_to_ns(const struct ts_acc *ts, int64_t *ns)
{
    int64_t s = ts->seconds, n = ts->nanos, x;

    if (s < 0 && n > 0) {
        s += 1;
        n -= NS_PER_S;
    }
    return !__builtin_mul_overflow(s, NS_PER_S, &x) && !__builtin_add_overflow(x, n, ns);
}

static int scan_any(const wire_cursor *parent, wire_slice s, event_view *v, char *err,
                    size_t errlen)
{
    wire_cursor c;
    wire_field f;

    wire_cursor_sub(&c, parent, s);
    while (!wire_cursor_done(&c)) {
        if (next_field(&c, &f, &ANY_D, err, errlen) < 0)
            return PB_EPROTO;
        if (f.number == 1) {
            if (want_string(&f, &c, &ANY_D, err, errlen) < 0)
                return PB_EPROTO;
            v->type_url = f.data;
        } else if (f.number == 2) {
            if (want_type(&f, WIRE_LEN, &ANY_D, err, errlen) < 0)
                return PB_EPROTO;
            v->value = f.data;
        }
    }
    return 0;
}

/* One map entry: key 1, value 2, both strings; missing ones are empty. */
static int scan_tag(const wire_cursor *parent, wire_slice s, event_tag *t, char *err, size_t errlen)
{
    wire_cursor c;
    wire_field f;

    memset(t, 0, sizeof *t);
    wire_cursor_sub(&c, parent, s);
    while (!wire_cursor_done(&c)) {
        if (next_field(&c, &f, &TAG_D, err, errlen) < 0)
            return PB_EPROTO;
        if (f.number != 1 && f.number != 2)
            continue;
        if (want_string(&f, &c, &TAG_D, err, errlen) < 0)
            return PB_EPROTO;
        if (f.number == 1)
            t->key = f.data;
        else
            t->value = f.data;
    }
    return 0;
}

int event_scan(const uint8_t *p, size_t n, event_view *v, char *err, size_t errlen)
{
    struct ts_acc ts[3];
    event_time *times[3] = {&v->client_event_time, &v->client_transmit_time,
                            &v->server_receive_time};
    char inner[ERR_MAX];
    wire_cursor c;
    wire_field f;
    event_tag tag;
    int rc = 0;

    memset(v, 0, sizeof *v);
    /* Small enough to clear field by field (a memset of the struct array was
     * a visible part of the scan's cost). */
    for (int i = 0; i < 3; i++)
        ts[i] = (struct ts_acc){0};
    wire_cursor_init(&c, p, n);
    while (!wire_cursor_done(&c)) {
        if (next_field(&c, &f, &EVENT_D, err, errlen) < 0)
            return PB_EPROTO;
        rc = 0;
        switch (f.number) {
        case 1:
            if (want_string(&f, &c, &EVENT_D, err, errlen) < 0)
                return PB_EPROTO;
            v->topic = f.data;
            break;
        case 2:
            if (want_type(&f, WIRE_LEN, &EVENT_D, err, errlen) < 0)
                return PB_EPROTO;
            rc = scan_tag(&c, f.data, &tag, inner, sizeof inner);
            if (rc == 0) {
                if (v->n_tags++ == 0)
                    v->tags_span.p = c.base + f.pos;
                v->tags_span.len = (size_t)(c.p - v->tags_span.p);
            }
            break;
        case 3:
        case 4:
        case 5:
            if (want_type(&f, WIRE_LEN, &EVENT_D, err, errlen) < 0)
                return PB_EPROTO;
            ts[f.number - 3].last_pos = f.pos;
            rc = scan_timestamp(&c, f.data, &ts[f.number - 3], inner, sizeof inner);
            break;
        case 6:
            if (want_type(&f, WIRE_VARINT, &EVENT_D, err, errlen) < 0)
                return PB_EPROTO;
            v->payload_size = (int64_t)f.value;
            break;
        case 7:
            if (want_type(&f, WIRE_LEN, &EVENT_D, err, errlen) < 0)
                return PB_EPROTO;
            v->has_payload = true;
            rc = scan_any(&c, f.data, v, inner, sizeof inner);
            break;
        default:
            break; /* unknown: a newer producer's field, kept in the bytes */
        }
        if (rc < 0)
            return field_fail(err, errlen, &EVENT_D, &f, "%s", inner);
    }
    for (int i = 0; i < 3; i++) {
        if (!ts[i].present)
            continue;
        wire_field at = {.number = (uint32_t)i + 3, .type = WIRE_LEN, .pos = ts[i].last_pos};
        if (!ts_to_ns(&ts[i], &times[i]->ns))
            return field_fail(err, errlen, &EVENT_D, &at,
                              "%lld seconds is outside the range of int64 nanoseconds "
                              "(years 1677 to 2262)",
                              (long long)ts[i].seconds);
        times[i]->present = true;
    }
    return 0;
}

void event_tags_begin(const event_view *v, event_tag_iter *it)
{
    wire_cursor_init(&it->c, v->tags_span.p, v->tags_span.len);
}

/*
 * The next tag entry at or after c, skipping other fields. The event was
 * scanned, so the bytes are known to be well-formed.
 */
static bool next_tag(wire_cursor *c, event_tag *t)
{
    char detail[ERR_MAX];
    wire_field f;

    while (!wire_cursor_done(c)) {
        if (wire_next_fast(c, &f, detail) < 0)
            return false;
        if (f.number == 2 && f.type == WIRE_LEN && scan_tag(c, f.data, t, detail, 0) == 0)
            return true;
    }
    return false;
}

bool event_tags_next(event_tag_iter *it, event_tag *t)
{
    while (next_tag(&it->c, t)) {
        wire_cursor later = it->c;
        event_tag u;
        bool overridden = false;

        while (!overridden && next_tag(&later, &u))
            overridden = slice_eq(t->key, u.key);
        if (!overridden)
            return true;
    }
    return false;
}

int event_tag_get(const event_view *v, const void *key, size_t key_len, wire_slice *value)
{
    wire_slice k = {key, key_len};
    event_tag_iter it;
    event_tag t;
    bool found = false;

    event_tags_begin(v, &it);
    while (next_tag(&it.c, &t)) {
        if (slice_eq(t.key, k)) {
            *value = t.value;
            found = true;
        }
    }
    return found ? 0 : PB_ENOTFOUND;
}

/* Unicode White_Space, the characters a topic may not contain. */
static bool is_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0d) || cp == 0x20 || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f ||
           cp == 0x205f || cp == 0x3000;
}

static bool is_control(uint32_t cp)
{
    return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f);
}

/* Bytes below 0x80 a topic may contain: printable ASCII but space (0x21..0x7e). */
static bool ascii_topic_byte(uint8_t b)
{
    return (uint8_t)(b - 0x21) < 0x5e;
}

int topic_validate(const uint8_t *p, size_t n, char *err, size_t errlen)
{
    size_t i = 0;

    if (n == 0) {
        pb_set_err(err, errlen, "topic is empty");
        return PB_EINVAL;
    }
    if (n > TOPIC_MAX_BYTES) {
        pb_set_err(err, errlen, "topic has %zu bytes, the maximum is %d", n, TOPIC_MAX_BYTES);
        return PB_EINVAL;
    }
    /* Fast path: most topics are printable ASCII, each byte a whole
     * character that is neither space nor control. The loop below starts
     * where this stops (a character boundary) and decides the rest. */
    while (i < n && ascii_topic_byte(p[i]))
        i++;
    while (i < n) {
        uint32_t cp;
        size_t k = wire_utf8_next(p + i, n - i, &cp);

        if (k == 0) {
            pb_set_err(err, errlen, "topic is not valid UTF-8 at byte %zu", i);
            return PB_EINVAL;
        }
        if (is_space(cp)) {
            pb_set_err(err, errlen, "topic contains whitespace (U+%04X) at byte %zu", (unsigned)cp,
                       i);
            return PB_EINVAL;
        }
        if (is_control(cp)) {
            pb_set_err(err, errlen, "topic contains a control character (U+%04X) at byte %zu",
                       (unsigned)cp, i);
            return PB_EINVAL;
        }
        i += k;
    }
    return 0;
}

/* --- encoders ---------------------------------------------------------------- */

size_t event_put_receive_time(uint8_t *out, size_t cap, int64_t ns)
{
    int64_t s = ns / NS_PER_S, nanos = ns % NS_PER_S;
    size_t body, total, k;

    /* C division truncates toward zero; Timestamp wants floor. */
    if (nanos < 0) {
        nanos += NS_PER_S;
        s -= 1;
    }
    body = wire_varint_field_size(1, (uint64_t)s) + wire_varint_field_size(2, (uint64_t)nanos);
    total = 1 + 1 + body; /* body <= 17: a one-byte length */
    if (total > cap)
        return total;
    k = wire_put_tag(out, 5, WIRE_LEN);
    k += wire_put_varint(out + k, body);
    k += wire_put_varint_field(out + k, 1, (uint64_t)s);
    k += wire_put_varint_field(out + k, 2, (uint64_t)nanos);
    return k;
}

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
    size_t idx_bytes = 0, off_bytes = 0, body = 0, frame_len, total, k;

    for (size_t i = 0; i < n_partitions; i++)
        body += wire_len_field_size(1, cstr_len(partitions[i]));
    for (size_t i = 0; i < n_events; i++) {
        idx_bytes += wire_varint_size(partition_index[i]);
        off_bytes += wire_varint_size(offsets[i]);
    }
    if (n_events > 0)
        body += wire_len_field_size(2, idx_bytes) + wire_len_field_size(3, off_bytes);
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
    return k;
}

size_t frame_put_error(uint8_t *out, size_t cap, uint64_t id, const frame_error *e)
{
    /* An enum is an int32: a negative one is sign-extended to 10 bytes. */
    uint64_t code = (uint64_t)(int64_t)e->code;
    size_t mlen = cstr_len(e->message), plen = cstr_len(e->partition);
    size_t body = opt_varint_size(1, code) + opt_str_size(2, mlen) + opt_str_size(3, plen) +
                  opt_varint_size(4, e->first_offset) + opt_varint_size(5, e->last_offset) +
                  opt_varint_size(6, e->event_index_plus_one);
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
    return k;
}

size_t frame_put_hello(uint8_t *out, size_t cap, uint64_t id, const frame_hello *h)
{
    size_t nlen = cstr_len(h->name);
    size_t body = opt_varint_size(1, h->protocol_version) + opt_str_size(2, nlen) +
                  opt_varint_size(3, h->max_frame_bytes) + opt_varint_size(4, h->max_event_bytes);
    size_t frame_len, total, k;

    total = frame_size(id, FRAME_HELLO, body, &frame_len);
    if (total > cap)
        return total;
    k = frame_start(out, frame_len, id, FRAME_HELLO, body);
    k += opt_varint_put(out + k, 1, h->protocol_version);
    k += opt_str_put(out + k, 2, h->name, nlen);
    k += opt_varint_put(out + k, 3, h->max_frame_bytes);
    k += opt_varint_put(out + k, 4, h->max_event_bytes);
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
        if (next_field(&c, &f, &EVFRAME_D, err, errlen) < 0)
            return PB_EPROTO;
        if (f.number == 1) {
            if (want_string(&f, &c, &EVFRAME_D, err, errlen) < 0)
                return PB_EPROTO;
            v->partition = f.data;
        } else if (f.number == 2) {
            if (want_type(&f, WIRE_VARINT, &EVFRAME_D, err, errlen) < 0)
                return PB_EPROTO;
            v->offset = f.value;
        } else if (f.number == 3) {
            if (want_type(&f, WIRE_LEN, &EVFRAME_D, err, errlen) < 0)
                return PB_EPROTO;
            /* Two occurrences would merge into one event: not one slice. */
            if (have_event)
                return field_fail(err, errlen, &EVFRAME_D, &f,
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
            return field_fail(err, errlen, &ACK_D, &f, "value %zu is %llu, %s", *count,
                              (unsigned long long)v, limit_what);
        (*count)++;
    }
    if (rc != PB_EEOF)
        return field_fail(err, errlen, &ACK_D, &f, "%s", detail);
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
        if (next_field(&c, &f, &ACK_D, err, errlen) < 0)
            return PB_EPROTO;
        if (f.number == 1) {
            if (want_string(&f, &c, &ACK_D, err, errlen) < 0)
                return PB_EPROTO;
            it->n_partitions++;
        } else if ((f.number == 2 || f.number == 3) && f.type != WIRE_VARINT &&
                   f.type != WIRE_LEN) {
            return field_fail(err, errlen, &ACK_D, &f,
                              "wire type %u (%s), expected a varint or a packed run", f.type,
                              wire_type_name(f.type));
        }
    }
    /* The limit also keeps every index within uint32 (n_partitions < 2^31). */
    if (count_repeated(&msg, 2, it->n_partitions, "not less than the number of partitions",
                       &n_index, err, errlen) < 0 ||
        count_repeated(&msg, 3, 0, NULL, &it->n_events, err, errlen) < 0)
        return PB_EPROTO;
    if (n_index != it->n_events) {
        pb_set_err(err, errlen, "PublishAck has %zu partition_index values but %zu offsets",
                   n_index, it->n_events);
        return PB_EPROTO;
    }
    it->names = msg;
    wire_repeated_init(&it->index, &msg, 2);
    wire_repeated_init(&it->offsets, &msg, 3);
    return 0;
}

int publish_ack_next_partition(publish_ack_iter *it, wire_slice *name)
{
    char detail[WIRE_DETAIL_MAX];
    wire_field f;
    int rc = wire_find(&it->names, 1, &f, detail);

    if (rc < 0)
        return rc;
    *name = f.data;
    return 0;
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
