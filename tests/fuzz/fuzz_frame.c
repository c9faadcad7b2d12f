/*
 * Fuzz target: the wire decoder the daemon runs on untrusted bytes (loop
 * thread) and the client decoders for what comes back: frame_split_next,
 * frame_parse, publish_open/publish_next, event_scan (and the standby's
 * event_scan_stored, which must agree with it) and the tag iterator,
 * topic_validate, event_frame_parse and the publish_ack iterator; protocol
 * v1's hello_parse and the connection rules (session.c) answering every
 * frame in every state; and framescan, the subscribed connection's reader.
 *
 * Input: byte 0 picks the mode, the rest is the data.
 *   mode even  the data is a TCP stream: split it into frames (max_frame_bytes
 *              from mode bits 1-3) and walk each by its kind, as net.c does;
 *              framescan reads the same stream in pieces the data chooses
 *              and must find the same frames, ids and kinds.
 *   mode odd   the data is one message body: every walker is tried on it.
 * Besides "no crash, no leak, no UB", the oracles check what the daemon
 * relies on: what event_scan accepts protobuf-c accepts too, with the same
 * topic, payload_size and tag count (subscribers decode stored events with
 * protobuf-c); an appended server_receive_time wins; the Event frame and
 * Error frame encoders produce frames that our decoders and protobuf-c read
 * back unchanged; the PublishAck iterator agrees with protobuf-c; what
 * hello_parse accepts protobuf-c reads alike, and the Hello, Subscribed,
 * CaughtUp and Pong encoders produce what protobuf-c reads back.
 *
 * Threads: one (libFuzzer's or replay.c's). Static scratch buffers only.
 */
#include "fuzz.h"

#include "frame.h"
#include "framescan.h"
#include "pb_errors.h"
#include "protobus.pb-c.h"
#include "session.h"
#include "wire.h"

#include <stdbool.h>
#include <string.h>

#define SCRATCH (1u << 20)

static uint8_t scratch[SCRATCH];

static const uint64_t max_frames[8] = {0, 1, 2, 16, 300, 4096, 1u << 20, UINT64_MAX};

static uint64_t load64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* memcmp that allows NULL with a zero length. */
static bool same(const void *a, const void *b, size_t n)
{
    return n == 0 || memcmp(a, b, n) == 0;
}

/* A protobuf-c string against the slice it came from: protobuf-c's strings
 * end at a NUL (valid UTF-8, so our walkers accept it), so compare up to it. */
static bool same_cstr(const char *c, wire_slice s)
{
    const uint8_t *nul = s.len ? memchr(s.p, 0, s.len) : NULL;
    size_t want = nul ? (size_t)(nul - s.p) : s.len;
    return strlen(c) == want && same(c, s.p, want);
}

static bool inside(const uint8_t *base, size_t n, wire_slice s)
{
    return s.len == 0 || (s.p >= base && s.len <= n && (size_t)(s.p - base) <= n - s.len);
}

static void check_tags(const event_view *v, const uint8_t *p, size_t n)
{
    event_tag_iter it;
    event_tag t;
    size_t seen = 0;
    event_tags_begin(v, &it);
    while (event_tags_next(&it, &t)) {
        FUZZ_CHECK(inside(p, n, t.key) && inside(p, n, t.value));
        wire_slice got;
        FUZZ_CHECK(event_tag_get(v, t.key.p, t.key.len, &got) == 0);
        FUZZ_CHECK(got.len == t.value.len && same(got.p, t.value.p, got.len));
        seen++;
    }
    FUZZ_CHECK(seen <= v->n_tags);
    FUZZ_CHECK(v->n_tags == 0 || seen > 0);
}

/* The stored-event contract: what the daemon accepts, every reader can
 * decode, and the server's receive time appended to it is what they see. */
static void check_event_with_protobuf_c(const uint8_t *p, size_t n, const event_view *v)
{
    Protobus__EncapsulatedEvent *e = protobus__encapsulated_event__unpack(NULL, n, p);
    FUZZ_CHECK(e != NULL);
    FUZZ_CHECK(same_cstr(e->topic, v->topic));
    FUZZ_CHECK(e->payload_size == v->payload_size);
    FUZZ_CHECK(e->n_tags == v->n_tags);
    FUZZ_CHECK((e->payload != NULL) == v->has_payload);
    protobus__encapsulated_event__free_unpacked(e, NULL);
}

static void check_receive_time(const uint8_t *p, size_t n, const event_view *v, int64_t ns)
{
    if (n + EVENT_RECEIVE_TIME_MAX > SCRATCH)
        return;
    memcpy(scratch, p, n);
    size_t add = event_put_receive_time(scratch + n, EVENT_RECEIVE_TIME_MAX, ns);
    FUZZ_CHECK(add > 0 && add <= EVENT_RECEIVE_TIME_MAX);
    event_view w;
    FUZZ_CHECK(event_scan(scratch, n + add, &w, NULL, 0) == 0);
    FUZZ_CHECK(w.server_receive_time.present && w.server_receive_time.ns == ns);
    FUZZ_CHECK(w.topic.len == v->topic.len && w.payload_size == v->payload_size);
}

/* An Event frame built around the stored bytes reads back as they were. */
static void check_event_frame_roundtrip(const uint8_t *ev, size_t n, uint64_t id, uint64_t offset)
{
    static const char partition[] = "fuzz-part.0";
    size_t hcap = FRAME_EVENT_HEADER_MAX(sizeof partition - 1);
    if (hcap + n > SCRATCH)
        return;
    size_t h = frame_put_event_header(scratch, hcap, id, partition, offset, n);
    FUZZ_CHECK(h > 0 && h <= hcap);
    memcpy(scratch + h, ev, n);
    frame_split sp;
    FUZZ_CHECK(frame_split_next(scratch, h + n, UINT64_MAX, &sp, NULL, 0) == 0);
    FUZZ_CHECK(sp.used == h + n);
    frame_view fv;
    FUZZ_CHECK(frame_parse(sp.body.p, sp.body.len, &fv, NULL, 0) == 0);
    FUZZ_CHECK(fv.kind == FRAME_EVENT && fv.id == id);
    event_frame_view efv;
    FUZZ_CHECK(event_frame_parse(fv.body.p, fv.body.len, &efv, NULL, 0) == 0);
    FUZZ_CHECK(efv.offset == offset && efv.event.len == n);
    FUZZ_CHECK(same(efv.event.p, ev, n));
    FUZZ_CHECK(efv.partition.len == sizeof partition - 1 &&
               same(efv.partition.p, partition, efv.partition.len));

    Protobus__Frame *f = protobus__frame__unpack(NULL, sp.body.len, sp.body.p);
    FUZZ_CHECK(f != NULL && f->body_case == PROTOBUS__FRAME__BODY_EVENT && f->id == id);
    FUZZ_CHECK(f->event->offset == offset && strcmp(f->event->partition, partition) == 0);
    protobus__frame__free_unpacked(f, NULL);
}

/* Error frames carry text from anywhere (topics, paths): whatever the bytes,
 * the frame decodes and its strings are valid UTF-8 of the same length. */
static void check_error_frame(const uint8_t *p, size_t n, uint64_t id)
{
    char msg[512];
    size_t len = n < sizeof msg - 1 ? n : sizeof msg - 1;
    memcpy(msg, p, len);
    msg[len] = '\0';
    len = strlen(msg);
    frame_error e = {.code = 15, .message = msg, .partition = msg, .first_offset = n};
    size_t need = frame_put_error(NULL, 0, id, &e);
    FUZZ_CHECK(need <= SCRATCH);
    FUZZ_CHECK(frame_put_error(scratch, need, id, &e) == need);
    frame_split sp;
    FUZZ_CHECK(frame_split_next(scratch, need, UINT64_MAX, &sp, NULL, 0) == 0 && sp.used == need);
    Protobus__Frame *f = protobus__frame__unpack(NULL, sp.body.len, sp.body.p);
    FUZZ_CHECK(f != NULL && f->body_case == PROTOBUS__FRAME__BODY_ERROR);
    FUZZ_CHECK(strlen(f->error->message) == len && strlen(f->error->partition) == len);
    FUZZ_CHECK(wire_utf8_valid((const uint8_t *)f->error->message, len, NULL));
    FUZZ_CHECK(f->error->code == 15 && f->error->first_offset == n);
    protobus__frame__free_unpacked(f, NULL);
}

/* The standby's lighter scan (event_scan_stored): never out of bounds on
 * any bytes; on an event event_scan accepts (*full, NULL: none), it
 * accepts too and finds the same topic, id and receive time. */
static void walk_stored(const uint8_t *p, size_t n, const event_view *full)
{
    event_view v;
    char err[300];
    err[0] = '\0';
    int rc = event_scan_stored(p, n, &v, err, sizeof err);
    if (rc < 0) {
        FUZZ_CHECK(rc == PB_EPROTO && !full);
        FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL && err[0] != '\0');
        return;
    }
    FUZZ_CHECK(inside(p, n, v.topic) && inside(p, n, v.id));
    if (!full)
        return;
    FUZZ_CHECK(v.topic.len == full->topic.len && v.topic.p == full->topic.p);
    FUZZ_CHECK(v.id.len == full->id.len && (v.id.len == 0 || v.id.p == full->id.p));
    FUZZ_CHECK(v.server_receive_time.present == full->server_receive_time.present &&
               v.server_receive_time.ns == full->server_receive_time.ns);
}

static void walk_event(const uint8_t *p, size_t n, bool deep)
{
    event_view v;
    char err[300];
    err[0] = '\0';
    int rc = event_scan(p, n, &v, err, sizeof err);
    if (rc < 0) {
        FUZZ_CHECK(rc == PB_EPROTO);
        FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL && err[0] != '\0');
        walk_stored(p, n, NULL);
        return;
    }
    walk_stored(p, n, &v);
    FUZZ_CHECK(inside(p, n, v.topic) && inside(p, n, v.type_url) && inside(p, n, v.value));
    FUZZ_CHECK(inside(p, n, v.tags_span));
    (void)topic_validate(v.topic.p, v.topic.len, err, sizeof err);
    check_tags(&v, p, n);
    check_event_with_protobuf_c(p, n, &v);
    if (deep) {
        int64_t ns = n >= 8 ? (int64_t)load64(p + n - 8) : -1;
        check_receive_time(p, n, &v, ns);
        check_event_frame_roundtrip(p, n, n, (uint64_t)ns);
    }
}

static void walk_publish(const uint8_t *p, size_t n)
{
    publish_iter it;
    char err[300];
    if (publish_open(p, n, &it, err, sizeof err) < 0)
        return;
    size_t count = 0;
    wire_slice ev;
    while (publish_next(&it, &ev) == 0) {
        FUZZ_CHECK(inside(p, n, ev));
        walk_event(ev.p, ev.len, false);
        count++;
        FUZZ_CHECK(count <= it.n_events);
    }
    FUZZ_CHECK(count == it.n_events);
}

static void walk_event_frame(const uint8_t *p, size_t n)
{
    event_frame_view v;
    char err[300];
    if (event_frame_parse(p, n, &v, err, sizeof err) < 0)
        return;
    FUZZ_CHECK(inside(p, n, v.partition) && inside(p, n, v.event));
    FUZZ_CHECK(wire_utf8_valid(v.partition.p, v.partition.len, NULL));
    walk_event(v.event.p, v.event.len, false);
}

static void walk_publish_ack(const uint8_t *p, size_t n)
{
    publish_ack_iter it;
    char err[300];
    if (publish_ack_open(p, n, &it, err, sizeof err) < 0)
        return;
    size_t n_parts = it.n_partitions, n_events = it.n_events;
    Protobus__PublishAck *a = protobus__publish_ack__unpack(NULL, n, p);
    FUZZ_CHECK(a != NULL);
    FUZZ_CHECK(a->n_partitions == n_parts && a->n_offsets == n_events &&
               a->n_partition_index == n_events);
    wire_slice name;
    size_t i = 0;
    while (publish_ack_next_partition(&it, &name) == 0) {
        FUZZ_CHECK(i < n_parts && inside(p, n, name));
        FUZZ_CHECK(same_cstr(a->partitions[i], name));
        i++;
    }
    FUZZ_CHECK(i == n_parts);
    uint32_t index;
    uint64_t offset;
    i = 0;
    while (publish_ack_next(&it, &index, &offset) == 0) {
        FUZZ_CHECK(i < n_events && index < n_parts);
        FUZZ_CHECK(a->partition_index[i] == index && a->offsets[i] == offset);
        i++;
    }
    FUZZ_CHECK(i == n_events);
    protobus__publish_ack__free_unpacked(a, NULL);
}

static const session_options fuzz_session = {
    .server_name = "protobusd fuzz", .max_frame_bytes = 4096, .max_event_bytes = 1024};
/* The same with auth = required: the Hellos it accepts go to the
 * credential check instead, carrying the user name only. */
static const session_options fuzz_auth_session = {.server_name = "protobusd fuzz",
                                                  .max_frame_bytes = 4096,
                                                  .max_event_bytes = 1024,
                                                  .auth_required = true};

/* What hello_parse accepts, protobuf-c reads alike; the handshake accepts
 * exactly the well-formed Hellos of version 1. */
static void walk_hello(const uint8_t *p, size_t n)
{
    hello_view h;
    char err[300];
    int rc = hello_parse(p, n, &h, err, sizeof err);
    session_answer a;
    session_answer_frame(&fuzz_session, SESSION_HANDSHAKE, FRAME_HELLO, p, n, &a);
    FUZZ_CHECK((a.action == SESSION_HELLO) == (rc == 0 && h.protocol_version == 1));
    FUZZ_CHECK(a.action == SESSION_HELLO || (a.action == SESSION_ERROR && a.close));
    session_answer b;
    session_answer_frame(&fuzz_auth_session, SESSION_HANDSHAKE, FRAME_HELLO, p, n, &b);
    FUZZ_CHECK((b.action == SESSION_AUTHENTICATE) == (a.action == SESSION_HELLO));
    FUZZ_CHECK(b.action == SESSION_AUTHENTICATE || (b.action == SESSION_ERROR && b.close));
    if (b.action == SESSION_AUTHENTICATE) {
        size_t ulen = strlen(b.user);
        FUZZ_CHECK(ulen < sizeof b.user && ulen <= h.user.len);
        FUZZ_CHECK(ulen == 0 || memcmp(b.user, h.user.p, ulen) == 0);
    }
    if (rc < 0) {
        FUZZ_CHECK(rc == PB_EPROTO && err[0] != '\0');
        return;
    }
    FUZZ_CHECK(inside(p, n, h.name) && inside(p, n, h.user) && inside(p, n, h.password));
    Protobus__Hello *u = protobus__hello__unpack(NULL, n, p);
    FUZZ_CHECK(u != NULL);
    FUZZ_CHECK(u->protocol_version == (uint32_t)h.protocol_version);
    FUZZ_CHECK(same_cstr(u->name, h.name) && same_cstr(u->user, h.user) &&
               same_cstr(u->password, h.password));
    FUZZ_CHECK(u->max_frame_bytes == h.max_frame_bytes && u->max_event_bytes == h.max_event_bytes);
    FUZZ_CHECK((u->limits != NULL) == h.has_limits);
    /* Two occurrences of limits merge; libraries differ on an explicit 0
     * in the later one (protobuf-c keeps the earlier value): compare one. */
    wire_cursor c;
    wire_field fld;
    char detail[WIRE_DETAIL_MAX];
    int occurrences = 0;
    wire_cursor_init(&c, p, n);
    while (wire_find(&c, 7, &fld, detail) == 0)
        occurrences++;
    if (u->limits && occurrences == 1)
        FUZZ_CHECK(u->limits->dedup_window_ms == h.limits.dedup_window_ms &&
                   u->limits->idle_timeout_ms == h.limits.idle_timeout_ms &&
                   u->limits->max_event_id_bytes == h.limits.max_event_id_bytes);
    protobus__hello__free_unpacked(u, NULL);
}

/* Every frame kind in every connection state gets a defined answer: the
 * handshake closes on anything but a good Hello; later, nothing but a
 * malformed length prefix (not a frame's business) closes. */
static void check_answers(const frame_view *fv)
{
    for (int st = SESSION_HANDSHAKE; st <= SESSION_SUBSCRIBED; st++) {
        session_answer a;
        session_answer_frame(&fuzz_session, (session_state)st, fv->kind,
                             st == SESSION_SUBSCRIBED ? NULL : fv->body.p,
                             st == SESSION_SUBSCRIBED ? 0 : fv->body.len, &a);
        if (st != SESSION_HANDSHAKE)
            FUZZ_CHECK(!a.close && a.action != SESSION_HELLO);
        if (st == SESSION_SUBSCRIBED)
            FUZZ_CHECK(a.action != SESSION_PUBLISH && a.action != SESSION_SUBSCRIBE);
        if (a.action == SESSION_ERROR)
            FUZZ_CHECK(a.code > 0 && a.message[0] != '\0');
    }
}

static void walk_frame_body(const uint8_t *p, size_t n)
{
    frame_view fv;
    char err[300];
    if (frame_parse(p, n, &fv, err, sizeof err) < 0)
        return;
    FUZZ_CHECK(frame_kind_name(fv.kind) != NULL);
    check_answers(&fv);
    if (fv.kind == FRAME_NONE)
        return;
    FUZZ_CHECK(inside(p, n, fv.body));
    switch (fv.kind) {
    case FRAME_PUBLISH:
        walk_publish(fv.body.p, fv.body.len);
        break;
    case FRAME_EVENT:
        walk_event_frame(fv.body.p, fv.body.len);
        break;
    case FRAME_PUBLISH_ACK:
        walk_publish_ack(fv.body.p, fv.body.len);
        break;
    case FRAME_HELLO:
        walk_hello(fv.body.p, fv.body.len);
        break;
    default:
        break;
    }
}

/* What the buffering reader made of one frame. */
typedef struct seen_frame {
    uint64_t id;
    int kind; /* -1: malformed */
} seen_frame;

#define MAX_SEEN 256

/* The subscribed connection's reader over the same stream, fed in pieces
 * whose sizes come from the stream's own bytes: the same frames, in the
 * same order, the same ids and kinds, malformed where frame_parse says so;
 * and where the splitter gave up (end), the scanner stops there too. */
static void check_scan(const uint8_t *p, size_t n, uint64_t max_frame, const seen_frame *want,
                       size_t nwant, int end)
{
    frame_scan s;
    frame_scan_init(&s, max_frame);
    size_t pos = 0, got = 0;
    while (pos < n) {
        size_t piece = 1 + p[pos] % 13;
        if (piece > n - pos)
            piece = n - pos;
        size_t off = 0;
        while (off < piece) {
            size_t used = 0;
            frame_scan_result r;
            int rc = frame_scan_feed(&s, p + pos + off, piece - off, &used, &r, NULL, 0);
            FUZZ_CHECK(used <= piece - off);
            off += used;
            if (rc < 0) {
                FUZZ_CHECK(rc == end && got == nwant);
                return;
            }
            if (rc == 0) {
                FUZZ_CHECK(off == piece);
                break;
            }
            FUZZ_CHECK(got < nwant);
            FUZZ_CHECK(r.malformed == (want[got].kind < 0));
            FUZZ_CHECK(r.id == want[got].id);
            FUZZ_CHECK(r.malformed || (int)r.kind == want[got].kind);
            got++;
        }
        pos += piece;
    }
    FUZZ_CHECK(got == nwant && end == 0);
}

/* The daemon's read loop: split whatever has arrived, frame by frame. */
static void walk_stream(const uint8_t *p, size_t n, uint64_t max_frame)
{
    static seen_frame seen[MAX_SEEN];
    size_t nseen = 0, pos = 0;
    int end = 0;
    while (pos < n && nseen < MAX_SEEN) {
        frame_split sp;
        char err[256];
        int rc = frame_split_next(p + pos, n - pos, max_frame, &sp, err, sizeof err);
        if (rc == PB_EINCOMPLETE) {
            /* The reader grows its buffer to `need` once: it must be more
             * than it has and within the bound. */
            FUZZ_CHECK(sp.need == 0 || sp.need > n - pos);
            FUZZ_CHECK(sp.need == 0 || max_frame > UINT64_MAX - WIRE_VARINT_MAX ||
                       sp.need <= max_frame + WIRE_VARINT_MAX);
            break;
        }
        if (rc < 0) {
            end = rc;
            break;
        }
        FUZZ_CHECK(sp.used >= 1 && sp.used <= n - pos && sp.body.len <= max_frame);
        FUZZ_CHECK(sp.body.p + sp.body.len == p + pos + sp.used);
        /* The same frame with nothing after it: a whole frame is decided
         * from its own bytes, one byte less is incomplete. */
        frame_split again;
        FUZZ_CHECK(frame_split_next(p + pos, sp.used, max_frame, &again, NULL, 0) == 0);
        FUZZ_CHECK(again.used == sp.used);
        FUZZ_CHECK(frame_split_next(p + pos, sp.used - 1, max_frame, &again, NULL, 0) ==
                   PB_EINCOMPLETE);
        walk_frame_body(sp.body.p, sp.body.len);
        frame_view fv;
        seen[nseen].kind =
            frame_parse(sp.body.p, sp.body.len, &fv, NULL, 0) < 0 ? -1 : (int)fv.kind;
        seen[nseen++].id = fv.id;
        pos += sp.used;
    }
    if (nseen < MAX_SEEN)
        check_scan(p, n, max_frame, seen, nseen, end);
}

/* The v1 encoders around bytes from the input: protobuf-c reads back what
 * was put in (strings as repaired UTF-8 of the same length). */
static void check_v1_encoders(const uint8_t *p, size_t n, uint64_t id)
{
    char str[128];
    size_t len = n < sizeof str - 1 ? n : sizeof str - 1;
    memcpy(str, p, len);
    str[len] = '\0';
    len = strlen(str);
    uint64_t v = n >= 8 ? load64(p) : n;
    frame_limits l = {.dedup_window_ms = v, .max_event_id_bytes = (uint32_t)v};
    frame_hello h = {.protocol_version = (uint32_t)v,
                     .name = str,
                     .max_frame_bytes = v,
                     .user = str,
                     .limits = n % 2 ? &l : NULL};
    size_t need = frame_put_hello(NULL, 0, id, &h);
    FUZZ_CHECK(need <= SCRATCH && frame_put_hello(scratch, need, id, &h) == need);
    frame_split sp;
    FUZZ_CHECK(frame_split_next(scratch, need, UINT64_MAX, &sp, NULL, 0) == 0 && sp.used == need);
    Protobus__Frame *f = protobus__frame__unpack(NULL, sp.body.len, sp.body.p);
    FUZZ_CHECK(f != NULL && f->body_case == PROTOBUS__FRAME__BODY_HELLO && f->id == id);
    FUZZ_CHECK(f->hello->protocol_version == (uint32_t)v && f->hello->max_frame_bytes == v);
    FUZZ_CHECK(strlen(f->hello->name) == len && strlen(f->hello->user) == len);
    FUZZ_CHECK((f->hello->limits != NULL) == (n % 2 == 1));
    if (f->hello->limits)
        FUZZ_CHECK(f->hello->limits->dedup_window_ms == v);
    protobus__frame__free_unpacked(f, NULL);

    frame_position pos[3] = {{str, v, v / 2, v}, {"", 0, 0, 0}, {"p", 1, 2, 3}};
    need = frame_put_subscribed(NULL, 0, id, pos, 3);
    FUZZ_CHECK(need <= SCRATCH && frame_put_subscribed(scratch, need, id, pos, 3) == need);
    FUZZ_CHECK(frame_split_next(scratch, need, UINT64_MAX, &sp, NULL, 0) == 0 && sp.used == need);
    f = protobus__frame__unpack(NULL, sp.body.len, sp.body.p);
    FUZZ_CHECK(f != NULL && f->body_case == PROTOBUS__FRAME__BODY_SUBSCRIBED);
    FUZZ_CHECK(f->subscribed->n_partitions == 3);
    FUZZ_CHECK(strlen(f->subscribed->partitions[0]->partition) == len);
    FUZZ_CHECK(f->subscribed->partitions[0]->start_offset == v / 2);
    FUZZ_CHECK(f->subscribed->partitions[2]->end_offset == 3);
    protobus__frame__free_unpacked(f, NULL);

    need = frame_put_caught_up(NULL, 0, id, v);
    FUZZ_CHECK(frame_put_caught_up(scratch, need, id, v) == need);
    FUZZ_CHECK(frame_split_next(scratch, need, UINT64_MAX, &sp, NULL, 0) == 0);
    f = protobus__frame__unpack(NULL, sp.body.len, sp.body.p);
    FUZZ_CHECK(f != NULL && f->body_case == PROTOBUS__FRAME__BODY_CAUGHT_UP && f->id == id);
    FUZZ_CHECK(f->caught_up->history_events == v);
    protobus__frame__free_unpacked(f, NULL);

    need = frame_put_pong(NULL, 0, id);
    FUZZ_CHECK(frame_put_pong(scratch, need, id) == need);
    FUZZ_CHECK(frame_split_next(scratch, need, UINT64_MAX, &sp, NULL, 0) == 0);
    f = protobus__frame__unpack(NULL, sp.body.len, sp.body.p);
    FUZZ_CHECK(f != NULL && f->body_case == PROTOBUS__FRAME__BODY_PONG && f->id == id);
    protobus__frame__free_unpacked(f, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t mode = data[0];
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    if ((mode & 1) == 0) {
        walk_stream(p, n, max_frames[(mode >> 1) & 7]);
        return 0;
    }
    walk_frame_body(p, n);
    walk_publish(p, n);
    walk_event(p, n, true);
    walk_event_frame(p, n);
    walk_publish_ack(p, n);
    walk_hello(p, n);
    check_v1_encoders(p, n, mode);
    char err[300];
    (void)topic_validate(p, n, err, sizeof err);
    check_error_frame(p, n, mode);
    return 0;
}
