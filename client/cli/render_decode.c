/*
 * render_decode - EncapsulatedEvent bytes -> render_event, protobuf-c's
 * rules (see render_decode.h). The fast path walks the wire format in
 * place; the slow path is protobuf-c's generated unpack.
 *
 * Threads: whichever thread owns the decoder.
 */
#include "render_decode.h"

#include "event.h"
#include "grow.h"
#include "pb_errors.h"
#include "protobus.pb-c.h"

#include <stdlib.h>
#include <string.h>

/* The result of the fast path when it leaves the event to protobuf-c. */
#define SLOW 1

void render_decoder_init(render_decoder *d)
{
    memset(d, 0, sizeof *d);
}

static void drop_unpacked(render_decoder *d)
{
    if (d->unpacked) {
        protobuf_c_message_free_unpacked(d->unpacked, NULL);
        d->unpacked = NULL;
    }
}

void render_decoder_free(render_decoder *d)
{
    drop_unpacked(d);
    free(d->tags);
    memset(d, 0, sizeof *d);
}

/* protobuf-c's strings are C strings: what follows a NUL is not seen. */
static wire_slice c_string(wire_slice s)
{
    const uint8_t *nul = s.len ? memchr(s.p, 0, s.len) : NULL;
    if (nul)
        s.len = (size_t)(nul - s.p);
    return s;
}

/* Timestamp{int64 seconds = 1; int32 nanos = 2}: last value wins, unknown
 * fields skipped. SLOW for anything else. */
static int fast_time(const wire_cursor *parent, wire_slice s, render_time *t)
{
    wire_cursor c;
    wire_field f;
    char detail[WIRE_DETAIL_MAX];

    wire_cursor_sub(&c, parent, s);
    t->present = true;
    while (!wire_cursor_done(&c)) {
        if (!wire_next_short(&c, &f) && wire_next(&c, &f, detail) < 0)
            return SLOW;
        if (f.number != 1 && f.number != 2)
            continue;
        if (f.type != WIRE_VARINT)
            return SLOW;
        if (f.number == 1)
            t->seconds = (int64_t)f.value;
        else
            t->nanos = (int32_t)(uint32_t)f.value; /* protobuf-c's int32: the low 32 bits */
    }
    return 0;
}

/* Any{string type_url = 1; bytes value = 2}, as fast_time. */
static int fast_any(const wire_cursor *parent, wire_slice s, render_event *ev)
{
    wire_cursor c;
    wire_field f;
    char detail[WIRE_DETAIL_MAX];

    wire_cursor_sub(&c, parent, s);
    while (!wire_cursor_done(&c)) {
        if (!wire_next_short(&c, &f) && wire_next(&c, &f, detail) < 0)
            return SLOW;
        if (f.number != 1 && f.number != 2)
            continue;
        if (f.type != WIRE_LEN)
            return SLOW;
        if (f.number == 1)
            ev->type_url = f.data;
        else
            ev->value = f.data;
    }
    return 0;
}

/* The wire type of each known field, by number ([0] is never read):
 * protobuf-c refuses a known field with another. */
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

/* One map entry {string key = 1; string value = 2}: last value wins,
 * missing ones are empty, unknown fields skipped. SLOW for anything else. */
static int fast_tag(render_decoder *d, size_t n, const wire_cursor *parent, wire_slice s)
{
    wire_cursor c;
    wire_field f;
    char detail[WIRE_DETAIL_MAX];
    render_tag t = {{NULL, 0}, {NULL, 0}};

    wire_cursor_sub(&c, parent, s);
    while (!wire_cursor_done(&c)) {
        if (!wire_next_short(&c, &f) && wire_next(&c, &f, detail) < 0)
            return SLOW;
        if (f.number != 1 && f.number != 2)
            continue;
        if (f.type != WIRE_LEN)
            return SLOW;
        if (f.number == 1)
            t.key = f.data;
        else
            t.value = f.data;
    }
    if (n >= d->tags_cap && grow_reserve(&d->tags, &d->tags_cap, n + 1, sizeof *d->tags) < 0)
        return PB_ENOMEM;
    d->tags[n] = (render_tag){c_string(t.key), c_string(t.value)};
    return 0;
}

/*
 * 0 (decoded), SLOW, or PB_ENOMEM. The same checks as proto/event.h's
 * walker (framing, no groups, the wire type of every known field, tag
 * entries), with the loop inline: the walker's call per field was a
 * tenth of `sub --format json`'s time. Anything odd goes to protobuf-c.
 */
static int decode_fast(render_decoder *d, const uint8_t *p, size_t len, render_event *ev)
{
    wire_cursor c;
    wire_field f;
    char detail[WIRE_DETAIL_MAX];
    bool seen_payload = false;
    size_t ntags = 0;
    int rc;

    wire_cursor_init(&c, p, len);
    while (!wire_cursor_done(&c)) {
        if (!wire_next_short(&c, &f) && wire_next(&c, &f, detail) < 0)
            return SLOW;
        if (f.number > EVENT_ID)
            continue; /* unknown: a newer producer's field */
        if (f.type != FIELD_TYPE[f.number])
            return SLOW;
        switch (f.number) {
        case EVENT_TOPIC:
            ev->topic = f.data;
            break;
        case EVENT_TAGS:
            if ((rc = fast_tag(d, ntags++, &c, f.data)) != 0)
                return rc;
            break;
        case EVENT_CLIENT_EVENT_TIME:
        case EVENT_CLIENT_TRANSMIT_TIME:
        case EVENT_SERVER_RECEIVE_TIME: {
            render_time *t = &ev->times[f.number - EVENT_CLIENT_EVENT_TIME];
            if (t->present || fast_time(&c, f.data, t) != 0)
                return SLOW; /* a second occurrence: protobuf-c merges them */
            break;
        }
        case EVENT_PAYLOAD_SIZE:
            ev->payload_size = (int64_t)f.value;
            break;
        case EVENT_PAYLOAD:
            if (seen_payload || fast_any(&c, f.data, ev) != 0)
                return SLOW;
            seen_payload = true;
            break;
        case EVENT_ID:
            ev->id = f.data;
            break;
        }
    }
    ev->topic = c_string(ev->topic);
    ev->type_url = c_string(ev->type_url);
    ev->id = c_string(ev->id);
    ev->tags = d->tags;
    ev->n_tags = ntags;
    return 0;
}

/* Lets the caller tell "not an event" from "out of memory": protobuf-c's
 * unpack returns NULL for both. */
struct unpack_alloc {
    bool failed;
};

static void *unpack_alloc(void *data, size_t size)
{
    void *p = malloc(size);
    if (!p)
        ((struct unpack_alloc *)data)->failed = true;
    return p;
}

static void unpack_free(void *data, void *p)
{
    (void)data;
    free(p);
}

static wire_slice str_slice(const char *s)
{
    return (wire_slice){(const uint8_t *)s, strlen(s)};
}

static void time_from(render_time *t, const Google__Protobuf__Timestamp *ts)
{
    if (ts)
        *t = (render_time){true, ts->seconds, ts->nanos};
}

static int decode_slow(render_decoder *d, const uint8_t *p, size_t len, render_event *ev)
{
    struct unpack_alloc state = {false};
    ProtobufCAllocator alloc = {unpack_alloc, unpack_free, &state};
    Protobus__EncapsulatedEvent *m = protobus__encapsulated_event__unpack(&alloc, len, p);
    if (!m)
        return state.failed ? PB_ENOMEM : PB_EPROTO;
    /* Freed with the default allocator (plain free) on the next decode. */
    d->unpacked = m;
    memset(ev, 0, sizeof *ev);
    ev->topic = str_slice(m->topic);
    ev->id = str_slice(m->id);
    for (size_t i = 0; i < m->n_tags; i++) {
        if (i >= d->tags_cap && grow_reserve(&d->tags, &d->tags_cap, i + 1, sizeof *d->tags) < 0)
            return PB_ENOMEM;
        d->tags[i] = (render_tag){str_slice(m->tags[i]->key), str_slice(m->tags[i]->value)};
    }
    ev->tags = d->tags;
    ev->n_tags = m->n_tags;
    time_from(&ev->times[RENDER_CLIENT_EVENT_TIME], m->client_event_time);
    time_from(&ev->times[RENDER_CLIENT_TRANSMIT_TIME], m->client_transmit_time);
    time_from(&ev->times[RENDER_SERVER_RECEIVE_TIME], m->server_receive_time);
    ev->payload_size = m->payload_size;
    if (m->payload) {
        ev->type_url = str_slice(m->payload->type_url);
        if (m->payload->value.len > 0)
            ev->value = (wire_slice){m->payload->value.data, m->payload->value.len};
    }
    return 0;
}

int render_decode(render_decoder *d, const uint8_t *event, size_t len, render_event *ev)
{
    drop_unpacked(d);
    if (!event && len > 0)
        return PB_EINVAL;
    memset(ev, 0, sizeof *ev);
    int rc = decode_fast(d, event, len, ev);
    return rc == SLOW ? decode_slow(d, event, len, ev) : rc;
}
