/*
 * event - EncapsulatedEvent, the stored event (see event.h): the strict
 * scan the daemon runs on every published event, the tag iterator, and the
 * encoder of the server_receive_time field the writer appends.
 *
 * Runs on whichever thread calls it: the loop thread (scan, receive time),
 * clients (scan, tags). No state, no allocation.
 *
 * The scan is strict where protobuf-c is strict (wire types, groups,
 * truncation) and stricter where it is lax (UTF-8, varint overflow, nanos
 * range), so bytes the daemon accepts and stores decode in every protobuf
 * library.
 */
#include "event.h"

#include "msg.h"
#include "pb_errors.h"

#include <string.h>

#define NS_PER_S 1000000000LL

static const struct msg_desc EVENT_D =
    MSG_DESC("EncapsulatedEvent", "topic", "tags", "client_event_time", "client_transmit_time",
             "server_receive_time", "payload_size", "payload", "id");
static const struct msg_desc TIMESTAMP_D = MSG_DESC("Timestamp", "seconds", "nanos");
static const struct msg_desc ANY_D = MSG_DESC("Any", "type_url", "value");
static const struct msg_desc TAG_D = MSG_DESC("TagsEntry", "key", "value");

/* The wire type of each known field, by number ([0] is never read). */
static const uint8_t FIELD_TYPE[EVENT_ID + 1] = {
    [EVENT_TOPIC] = WIRE_LEN,
    [EVENT_TAGS] = WIRE_LEN,
    [EVENT_CLIENT_EVENT_TIME] = WIRE_LEN,
    [EVENT_CLIENT_TRANSMIT_TIME] = WIRE_LEN,
    [EVENT_SERVER_RECEIVE_TIME] = WIRE_LEN,
    [EVENT_PAYLOAD_SIZE] = WIRE_VARINT,
    [EVENT_PAYLOAD] = WIRE_LEN,
    [EVENT_ID] = WIRE_LEN,
};

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
        if (msg_next(&c, &f, &TIMESTAMP_D, err, errlen) < 0)
            return PB_EPROTO;
        if (f.number != 1 && f.number != 2)
            continue;
        if (msg_want_type(&f, WIRE_VARINT, &TIMESTAMP_D, err, errlen) < 0)
            return PB_EPROTO;
        if (f.number == 1) {
            ts->seconds = (int64_t)f.value;
        } else {
            /* Compared as unsigned: a negative int32 arrives sign-extended. */
            if (f.value >= (uint64_t)NS_PER_S)
                return msg_fail(err, errlen, &TIMESTAMP_D, &f,
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
        if (msg_next(&c, &f, &ANY_D, err, errlen) < 0)
            return PB_EPROTO;
        if (f.number == 1) {
            if (msg_want_string(&f, &c, &ANY_D, err, errlen) < 0)
                return PB_EPROTO;
            v->type_url = f.data;
        } else if (f.number == 2) {
            if (msg_want_type(&f, WIRE_LEN, &ANY_D, err, errlen) < 0)
                return PB_EPROTO;
            v->value = f.data;
        }
    }
    return 0;
}

/* --- the walker ------------------------------------------------------------ */

/*
 * One map entry: key 1, value 2, both length-delimited (strings: UTF-8 when
 * strict); missing ones are empty. Errors are worded for TagsEntry into
 * err; the caller wraps them in the event's field.
 */
static int open_tag(const wire_cursor *parent, wire_slice s, bool strict, event_tag *t, char *err,
                    size_t errlen)
{
    wire_cursor c;
    wire_field f;

    t->key = (wire_slice){NULL, 0};
    t->value = (wire_slice){NULL, 0};
    wire_cursor_sub(&c, parent, s);
    while (!wire_cursor_done(&c)) {
        if (msg_next(&c, &f, &TAG_D, err, errlen) < 0)
            return PB_EPROTO;
        if (f.number != 1 && f.number != 2)
            continue;
        if (strict ? msg_want_string(&f, &c, &TAG_D, err, errlen) < 0
                   : msg_want_type(&f, WIRE_LEN, &TAG_D, err, errlen) < 0)
            return PB_EPROTO;
        if (f.number == 1)
            t->key = f.data;
        else
            t->value = f.data;
    }
    return 0;
}

/*
 * The walker's body (see event.h). Always inlined: event_scan calls it
 * with constant `want` and `strict`, which folds the checks it does not
 * need away on the publish hot path; everyone else calls event_walk_next.
 */
static inline __attribute__((always_inline)) int
walk_next(wire_cursor *c, unsigned want, bool strict, event_item *it, char *err, size_t errlen)
{
    wire_field *f = &it->f;

    while (!wire_cursor_done(c)) {
        if (msg_next(c, f, &EVENT_D, err, errlen) < 0)
            return PB_EPROTO;
        if (f->number > EVENT_ID)
            continue; /* unknown: a newer producer's field, kept in the bytes */
        /* One table lookup, not a switch: event_scan dispatches on the
         * field number right after, and two switches per field showed in
         * the publish path's cost. */
        if (f->type != FIELD_TYPE[f->number])
            return msg_wrong_type(f, (enum wire_type)FIELD_TYPE[f->number], &EVENT_D, err, errlen);
        if (!(want & EVENT_WANT(f->number)))
            continue;
        if (f->number > EVENT_TAGS)
            return 1; /* the rest are returned as they are */
        if (f->number == EVENT_TOPIC) {
            if (strict && msg_want_string(f, c, &EVENT_D, err, errlen) < 0)
                return PB_EPROTO;
        } else {
            char inner[MSG_ERR_MAX];

            /* The entry's error is worded only when someone reads it. */
            if (open_tag(c, f->data, strict, &it->tag, inner, errlen ? sizeof inner : 0) < 0)
                return errlen ? msg_fail(err, errlen, &EVENT_D, f, "%s", inner) : PB_EPROTO;
        }
        return 1;
    }
    return 0;
}

void event_walk_init(event_walker *w, const uint8_t *p, size_t n, unsigned want, bool strict)
{
    wire_cursor_init(&w->c, p, n);
    w->want = want;
    w->strict = strict;
}

int event_walk_next(event_walker *w, event_item *it, char *err, size_t errlen)
{
    return walk_next(&w->c, w->want, w->strict, it, err, errlen);
}

/* --- scanning ---------------------------------------------------------------- */

/* *dst = *src, as two 8-byte moves. The walker wrote src's pointer and
 * length with one store each just before; a plain struct copy is one
 * 16-byte load (GCC merges the two), which cannot be forwarded from two
 * stores and waits for both to reach the cache: it showed as the topic's
 * and the id's lines in the publish path's profile (~4 ns an event each).
 * The empty asm keeps the halves apart, in general registers. */
static inline void slice_copy(wire_slice *dst, const wire_slice *src)
{
    const uint8_t *p = src->p;
    size_t len = src->len;
#if defined(__GNUC__)
    __asm__("" : "+r"(p), "+r"(len));
#endif
    dst->p = p;
    dst->len = len;
}

int event_scan(const uint8_t *p, size_t n, event_view *v, char *err, size_t errlen)
{
    struct ts_acc ts[3];
    event_time *times[3] = {&v->client_event_time, &v->client_transmit_time,
                            &v->server_receive_time};
    char inner[MSG_ERR_MAX];
    wire_cursor c;
    event_item it;
    int rc;

    memset(v, 0, sizeof *v);
    /* Small enough to clear field by field (a memset of the struct array was
     * a visible part of the scan's cost). */
    for (int i = 0; i < 3; i++)
        ts[i] = (struct ts_acc){0};
    wire_cursor_init(&c, p, n);
    while ((rc = walk_next(&c, EVENT_WANT_ALL, true, &it, err, errlen)) > 0) {
        const wire_field *f = &it.f;

        rc = 0;
        switch (f->number) {
        case EVENT_TOPIC:
            slice_copy(&v->topic, &f->data);
            break;
        case EVENT_TAGS:
            if (v->n_tags++ == 0)
                v->tags_span.p = c.base + f->pos;
            v->tags_span.len = (size_t)(c.p - v->tags_span.p);
            break;
        case EVENT_CLIENT_EVENT_TIME:
        case EVENT_CLIENT_TRANSMIT_TIME:
        case EVENT_SERVER_RECEIVE_TIME:
            ts[f->number - 3].last_pos = f->pos;
            rc = scan_timestamp(&c, f->data, &ts[f->number - 3], inner, sizeof inner);
            break;
        case EVENT_PAYLOAD_SIZE:
            v->payload_size = (int64_t)f->value;
            break;
        case EVENT_PAYLOAD:
            v->has_payload = true;
            rc = scan_any(&c, f->data, v, inner, sizeof inner);
            break;
        case EVENT_ID:
            /* Errors here name the field itself: nothing nested to wrap. */
            if (msg_want_string(f, &c, &EVENT_D, err, errlen) < 0)
                return PB_EPROTO;
            if (f->data.len > EVENT_ID_MAX_BYTES)
                return msg_fail(err, errlen, &EVENT_D, f, "%zu bytes, over the maximum of %d bytes",
                                f->data.len, EVENT_ID_MAX_BYTES);
            slice_copy(&v->id, &f->data);
            break;
        }
        if (rc < 0)
            return msg_fail(err, errlen, &EVENT_D, f, "%s", inner);
    }
    if (rc < 0)
        return PB_EPROTO;
    for (int i = 0; i < 3; i++) {
        if (!ts[i].present)
            continue;
        wire_field at = {.number = (uint32_t)i + 3, .type = WIRE_LEN, .pos = ts[i].last_pos};
        if (!ts_to_ns(&ts[i], &times[i]->ns))
            return msg_fail(err, errlen, &EVENT_D, &at,
                            "%lld seconds is outside the range of int64 nanoseconds "
                            "(years 1677 to 2262)",
                            (long long)ts[i].seconds);
        times[i]->present = true;
    }
    return 0;
}

int event_scan_stored(const uint8_t *p, size_t n, event_view *v, char *err, size_t errlen)
{
    struct ts_acc ts = {0};
    char inner[MSG_ERR_MAX];
    wire_cursor c;
    event_item it;
    int rc;

    memset(v, 0, sizeof *v);
    wire_cursor_init(&c, p, n);
    while ((rc = walk_next(&c,
                           EVENT_WANT(EVENT_TOPIC) | EVENT_WANT(EVENT_SERVER_RECEIVE_TIME) |
                               EVENT_WANT(EVENT_ID),
                           false, &it, err, errlen)) > 0) {
        const wire_field *f = &it.f;
        if (f->number == EVENT_TOPIC) {
            v->topic = f->data;
        } else if (f->number == EVENT_ID) {
            if (f->data.len > EVENT_ID_MAX_BYTES)
                return msg_fail(err, errlen, &EVENT_D, f, "%zu bytes, over the maximum of %d bytes",
                                f->data.len, EVENT_ID_MAX_BYTES);
            v->id = f->data;
        } else {
            ts.last_pos = f->pos;
            if (scan_timestamp(&c, f->data, &ts, inner, sizeof inner) < 0)
                return msg_fail(err, errlen, &EVENT_D, f, "%s", inner);
        }
    }
    if (rc < 0)
        return PB_EPROTO;
    if (ts.present) {
        wire_field at = {.number = EVENT_SERVER_RECEIVE_TIME, .type = WIRE_LEN, .pos = ts.last_pos};
        if (!ts_to_ns(&ts, &v->server_receive_time.ns))
            return msg_fail(err, errlen, &EVENT_D, &at,
                            "%lld seconds is outside the range of int64 nanoseconds "
                            "(years 1677 to 2262)",
                            (long long)ts.seconds);
        v->server_receive_time.present = true;
    }
    return 0;
}

/* A varint at p[0..n) for event_scan_keys: one byte (a tag or a short
 * length, most of them) in line, else wire_varint_fast, else the exact
 * decode. Same returns as wire_varint_decode. */
static inline int scan_varint(const uint8_t *p, size_t n, uint64_t *v)
{
    if (n > 0 && p[0] < 0x80) {
        *v = p[0];
        return 1;
    }
    size_t k = wire_varint_fast(p, n, 9, v);
    return k ? (int)k : wire_varint_decode(p, n, v);
}

int event_scan_keys(const uint8_t *p, size_t n, wire_slice *topic, wire_slice *id)
{
    size_t i = 0;
    *topic = *id = (wire_slice){0};
    while (i < n) {
        uint64_t tag, v;
        int k = scan_varint(p + i, n - i, &tag);
        if (k <= 0)
            return PB_EPROTO;
        i += (size_t)k;
        uint64_t number = tag >> 3;
        switch (tag & 7) {
        case WIRE_VARINT:
            if ((k = scan_varint(p + i, n - i, &v)) <= 0 || number == EVENT_TOPIC ||
                number == EVENT_ID)
                return PB_EPROTO;
            i += (size_t)k;
            break;
        case WIRE_I64:
        case WIRE_I32: {
            size_t w = (tag & 7) == WIRE_I64 ? 8 : 4;
            if (n - i < w || number == EVENT_TOPIC || number == EVENT_ID)
                return PB_EPROTO;
            i += w;
            break;
        }
        case WIRE_LEN:
            if ((k = scan_varint(p + i, n - i, &v)) <= 0 || v > n - i - (size_t)k)
                return PB_EPROTO;
            i += (size_t)k;
            if (number == EVENT_TOPIC) {
                *topic = (wire_slice){.p = p + i, .len = (size_t)v};
            } else if (number == EVENT_ID) {
                if (v > EVENT_ID_MAX_BYTES)
                    return PB_EPROTO;
                *id = (wire_slice){.p = p + i, .len = (size_t)v};
            }
            i += (size_t)v;
            break;
        default: /* groups (3, 4) and the types that do not exist */
            return PB_EPROTO;
        }
        if (number == 0)
            return PB_EPROTO;
    }
    return 0;
}

/* --- tags ---------------------------------------------------------------------- */

void event_tags_begin(const event_view *v, event_tag_iter *it)
{
    /* The span was scanned: the bytes are known to be well-formed. */
    event_walk_init(&it->w, v->tags_span.p, v->tags_span.len, EVENT_WANT(EVENT_TAGS), false);
}

bool event_tags_next(event_tag_iter *it, event_tag *t)
{
    event_item item;

    while (event_walk_next(&it->w, &item, NULL, 0) > 0) {
        event_walker later = it->w;
        event_item u;
        bool overridden = false;

        while (!overridden && event_walk_next(&later, &u, NULL, 0) > 0)
            overridden = wire_slice_eq(item.tag.key, u.tag.key);
        if (!overridden) {
            *t = item.tag;
            return true;
        }
    }
    return false;
}

int event_tag_get(const event_view *v, const void *key, size_t key_len, wire_slice *value)
{
    wire_slice k = {key, key_len};
    event_tag_iter it;
    event_item item;
    bool found = false;

    event_tags_begin(v, &it);
    while (event_walk_next(&it.w, &item, NULL, 0) > 0) {
        if (wire_slice_eq(item.tag.key, k)) {
            *value = item.tag.value;
            found = true;
        }
    }
    return found ? 0 : PB_ENOTFOUND;
}

/* --- filtering by tags ------------------------------------------------------ */

int event_filter_scan(const uint8_t *p, size_t n, const event_tag_filter *filters, size_t nfilters,
                      uint8_t *state, wire_slice *topic)
{
    event_walker w;
    event_item it;
    int rc;

    topic->p = NULL;
    topic->len = 0;
    if (nfilters)
        memset(state, 0, nfilters);
    event_walk_init(&w, p, n, EVENT_WANT(EVENT_TOPIC) | (nfilters ? EVENT_WANT(EVENT_TAGS) : 0),
                    false);
    while ((rc = event_walk_next(&w, &it, NULL, 0)) > 0) {
        if (it.f.number == EVENT_TOPIC) {
            *topic = it.f.data; /* the last occurrence wins */
            continue;
        }
        /* A later entry with the same key replaces the value (protobuf map
         * semantics), so its verdict overwrites the earlier one. */
        for (size_t i = 0; i < nfilters; i++) {
            const event_tag_filter *f = &filters[i];

            if (wire_slice_eq_bytes(it.tag.key, f->key, f->key_len))
                state[i] = wire_slice_eq_bytes(it.tag.value, f->value, f->value_len) ? 1 : 2;
        }
    }
    return rc;
}

bool event_filter_ok(const uint8_t *state, size_t nfilters)
{
    for (size_t i = 0; i < nfilters; i++)
        if (state[i] != 1)
            return false;
    return true;
}

/* --- encoder --------------------------------------------------------------- */

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
