/*
 * publish - libprotobus's publishing side: events are encoded by hand
 * straight into one reusable batch buffer (no allocation per event), sent
 * as Publish frames when a batch fills up or on flush, with many batches in
 * flight; PublishAck and Error frames are matched to their batch by frame
 * id and turned into (partition, offset) positions and callbacks.
 *
 * Threads: whichever thread calls into the pb_client (one at a time).
 *
 * Batch layout: ebuf holds the encoded EncapsulatedEvent bodies back to
 * back (elens[i] bytes each) without client_transmit_time, which is only
 * known when the batch leaves; send_batch assembles the whole delimited
 * Frame into obuf in one pass, appending the same transmit-time field to
 * every event.
 */
#include "client.h"

#include "hash.h"
#include "record.h" /* PB_RECORD_MAX_EVENT */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* tag + length + Timestamp{seconds: 1 + 10, nanos: 1 + 5}. */
#define TIMESTAMP_FIELD_MAX 19
/* Frame around a Publish body: id field (1 + 10) + body tag + length (1 + 5). */
#define FRAME_OVERHEAD_MAX 17
/* Publish.no_ack = true: tag + varint. */
#define NO_ACK_FIELD 2

/* --- encoding ------------------------------------------------------------- */

static void split_ns(int64_t ns, int64_t *secs, int32_t *nanos)
{
    int64_t s = ns / 1000000000;
    int64_t r = ns % 1000000000;
    if (r < 0) {
        /* Timestamp.nanos is never negative: floor the seconds instead. */
        r += 1000000000;
        s -= 1;
    }
    *secs = s;
    *nanos = (int32_t)r;
}

static size_t timestamp_body_size(int64_t secs, int32_t nanos)
{
    return (secs ? wire_varint_field_size(1, (uint64_t)secs) : 0) +
           (nanos ? wire_varint_field_size(2, (uint64_t)nanos) : 0);
}

static size_t timestamp_field_size(uint32_t field, int64_t ns)
{
    int64_t secs;
    int32_t nanos;
    split_ns(ns, &secs, &nanos);
    return wire_len_field_size(field, timestamp_body_size(secs, nanos));
}

static size_t put_timestamp_field(uint8_t *out, uint32_t field, int64_t ns)
{
    int64_t secs;
    int32_t nanos;
    split_ns(ns, &secs, &nanos);
    uint8_t *p = out;
    p += wire_put_tag(p, field, WIRE_LEN);
    p += wire_put_varint(p, timestamp_body_size(secs, nanos));
    if (secs)
        p += wire_put_varint_field(p, 1, (uint64_t)secs);
    if (nanos)
        p += wire_put_varint_field(p, 2, (uint64_t)nanos);
    return (size_t)(p - out);
}

static size_t tag_entry_size(size_t klen, size_t vlen)
{
    return wire_len_field_size(1, klen) + wire_len_field_size(2, vlen);
}

static size_t any_size(size_t type_len, size_t payload_len)
{
    return (type_len ? wire_len_field_size(1, type_len) : 0) +
           (payload_len ? wire_len_field_size(2, payload_len) : 0);
}

/* Encoded size of ev without client_transmit_time (and without its id,
 * added by the caller: wire_len_field_size(8, id_len) when it has one). */
static size_t event_size(const pb_event *ev, size_t topic_len, size_t type_len)
{
    size_t n = wire_len_field_size(1, topic_len);
    for (size_t i = 0; i < ev->ntags; i++)
        n += wire_len_field_size(
            2, tag_entry_size(strlen(ev->tags[i].key), strlen(ev->tags[i].value)));
    if (ev->client_event_time_ns)
        n += timestamp_field_size(3, ev->client_event_time_ns);
    if (ev->payload_len)
        n += wire_varint_field_size(6, ev->payload_len);
    if (type_len || ev->payload_len)
        n += wire_len_field_size(7, any_size(type_len, ev->payload_len));
    return n;
}

static size_t put_event(uint8_t *out, const pb_event *ev, size_t topic_len, size_t type_len)
{
    uint8_t *p = out;
    p += wire_put_len_field(p, 1, ev->topic, topic_len);
    for (size_t i = 0; i < ev->ntags; i++) {
        size_t kl = strlen(ev->tags[i].key), vl = strlen(ev->tags[i].value);
        p += wire_put_tag(p, 2, WIRE_LEN);
        p += wire_put_varint(p, tag_entry_size(kl, vl));
        p += wire_put_len_field(p, 1, ev->tags[i].key, kl);
        p += wire_put_len_field(p, 2, ev->tags[i].value, vl);
    }
    if (ev->client_event_time_ns)
        p += put_timestamp_field(p, 3, ev->client_event_time_ns);
    if (ev->payload_len)
        p += wire_put_varint_field(p, 6, ev->payload_len);
    if (type_len || ev->payload_len) {
        p += wire_put_tag(p, 7, WIRE_LEN);
        p += wire_put_varint(p, any_size(type_len, ev->payload_len));
        if (type_len)
            p += wire_put_len_field(p, 1, ev->payload_type, type_len);
        if (ev->payload_len)
            p += wire_put_len_field(p, 2, ev->payload, ev->payload_len);
    }
    return (size_t)(p - out);
}

/* EncapsulatedEvent.id, after the rest of the event (field order does not
 * matter to protobuf; the server reads the last occurrence). */
static size_t put_event_id(uint8_t *out, const char *id, size_t id_len)
{
    if (id_len == 0)
        return 0;
    /* Field 8, LEN: one tag byte, one length byte (an id is at most 64
     * bytes), inline: the call showed in the publisher's profile. */
    _Static_assert(PB_EVENT_ID_MAX_BYTES < 128, "an id's length is one varint byte");
    out[0] = (uint8_t)(8u << 3 | WIRE_LEN);
    out[1] = (uint8_t)id_len;
    memcpy(out + 2, id, id_len);
    return 2 + id_len;
}

/* Bytes one event may take inside a Publish body, transmit time included. */
static size_t event_upper_bound(size_t body)
{
    size_t inner = body + TIMESTAMP_FIELD_MAX;
    return wire_len_field_size(1, inner);
}

static int validate_event(pb_client *c, const pb_event *ev)
{
    char err[200];
    if (!ev || !ev->topic)
        return client_fail(c, PB_EINVAL, "event without a topic");
    size_t tl = strlen(ev->topic);
    if (topic_validate((const uint8_t *)ev->topic, tl, err, sizeof(err)) < 0)
        return client_fail(c, PB_EINVAL, "bad topic \"%.*s\": %s", (int)(tl > 300 ? 300 : tl),
                           ev->topic, err);
    if (ev->ntags && !ev->tags)
        return client_fail(c, PB_EINVAL, "event for topic %s: ntags %zu but no tags", ev->topic,
                           ev->ntags);
    for (size_t i = 0; i < ev->ntags; i++) {
        const pb_tag *t = &ev->tags[i];
        size_t bad;
        if (!t->key || !t->value)
            return client_fail(c, PB_EINVAL, "event for topic %s: tag %zu has a NULL %s", ev->topic,
                               i, t->key ? "value" : "key");
        if (!wire_utf8_valid((const uint8_t *)t->key, strlen(t->key), &bad))
            return client_fail(c, PB_EINVAL,
                               "event for topic %s: tag key %zu is not UTF-8 at byte %zu",
                               ev->topic, i, bad);
        if (!wire_utf8_valid((const uint8_t *)t->value, strlen(t->value), &bad))
            return client_fail(c, PB_EINVAL,
                               "event for topic %s: value of tag \"%s\" is not UTF-8 at byte %zu",
                               ev->topic, t->key, bad);
    }
    size_t bad;
    if (ev->payload_type &&
        !wire_utf8_valid((const uint8_t *)ev->payload_type, strlen(ev->payload_type), &bad))
        return client_fail(c, PB_EINVAL,
                           "event for topic %s: payload type is not UTF-8 at byte %zu", ev->topic,
                           bad);
    if (ev->payload_len && !ev->payload)
        return client_fail(c, PB_EINVAL, "event for topic %s: payload_len %zu but no payload",
                           ev->topic, ev->payload_len);
    return 0;
}

static int validate_id(pb_client *c, const pb_event *ev, const char *id, size_t *id_len)
{
    size_t bad, len = *id_len = strlen(id);
    if (len > PB_EVENT_ID_MAX_BYTES)
        return client_fail(c, PB_EINVAL, "event for topic %s: id of %zu bytes, the maximum is %d",
                           ev->topic, len, PB_EVENT_ID_MAX_BYTES);
    /* Most ids are ASCII of 8 to 40 bytes (UUIDs' text included): checked
     * inline, without the loop. */
    if (!wire_ascii_short((const uint8_t *)id, len) &&
        !wire_utf8_valid((const uint8_t *)id, len, &bad))
        return client_fail(c, PB_EINVAL, "event for topic %s: id is not UTF-8 at byte %zu",
                           ev->topic, bad);
    return 0;
}

/* --- partition names ---------------------------------------------------------- */

/* The client's copy of a partition name: one allocation per distinct name
 * for the client's lifetime, so positions can point at it. */
static const char *intern(pb_client *c, wire_slice name)
{
    if (c->ptab_cap < 2 * (c->nparts + 1)) {
        size_t cap = c->ptab_cap ? c->ptab_cap * 2 : 64;
        uint32_t *t = calloc(cap, sizeof(*t));
        if (!t)
            return NULL;
        for (size_t i = 0; i < c->nparts; i++) {
            size_t h = hash_bytes(0, c->parts[i], strlen(c->parts[i])) & (cap - 1);
            while (t[h])
                h = (h + 1) & (cap - 1);
            t[h] = (uint32_t)(i + 1);
        }
        free(c->ptab);
        c->ptab = t;
        c->ptab_cap = cap;
    }
    size_t h = hash_bytes(0, name.p, name.len) & (c->ptab_cap - 1);
    for (; c->ptab[h]; h = (h + 1) & (c->ptab_cap - 1)) {
        const char *s = c->parts[c->ptab[h] - 1];
        if (strncmp(s, (const char *)name.p, name.len) == 0 && s[name.len] == '\0' &&
            memchr(name.p, '\0', name.len) == NULL)
            return s;
    }
    if (grow_reserve(&c->parts, &c->parts_cap, c->nparts + 1, sizeof(char *)) < 0)
        return NULL;
    char *s = malloc(name.len + 1);
    if (!s)
        return NULL;
    memcpy(s, name.p, name.len);
    s[name.len] = '\0';
    c->parts[c->nparts++] = s;
    c->ptab[h] = (uint32_t)c->nparts;
    return s;
}

/* --- acks and errors ---------------------------------------------------------- */

/* The oldest batch in flight: the only one a reply may answer, since the
 * server replies in request order. NULL if none. */
static inflight_batch *oldest_inflight(pb_client *c)
{
    return c->ninflight ? &c->inflight[c->inflight_head] : NULL;
}

/* Where the positions of batch b go: the flush window, or scratch space
 * when the caller does not keep positions. NULL on allocation failure. */
static pb_position *batch_positions(pb_client *c, const inflight_batch *b)
{
    if (!c->opts.no_positions)
        return &c->pos[b->first_event - c->pos_base];
    if (grow_reserve(&c->scratch, &c->scratch_cap, b->count, sizeof(pb_position)) < 0)
        return NULL;
    return c->scratch;
}

static void batch_done(pb_client *c, inflight_batch *b, const pb_position *pos, int status)
{
    if (c->opts.on_ack) {
        pb_batch_result r = {
            .frame_id = b->frame_id,
            .first_event = b->first_event,
            .count = b->count,
            .status = status,
            .code = status ? c->serr.code : 0,
            .message = status ? c->serr.message : "",
            .positions = pos,
        };
        c->opts.on_ack(c->opts.on_ack_ctx, &r);
    }
    /* b is the oldest (see oldest_inflight): the ring moves on. */
    c->inflight_head = (c->inflight_head + 1) % c->inflight_cap;
    c->ninflight--;
}

static int take_ack(pb_client *c, const frame_view *f)
{
    inflight_batch *b = oldest_inflight(c);
    if (!b)
        return client_die(c, PB_EPROTO, "%s acknowledged frame %llu, which is not in flight",
                          c->address, (unsigned long long)f->id);
    if (b->frame_id != f->id)
        return client_die(c, PB_EPROTO,
                          "%s acknowledged frame %llu before frame %llu, sent earlier: it does not "
                          "answer in request order as protocol version 1 requires",
                          c->address, (unsigned long long)f->id, (unsigned long long)b->frame_id);
    char err[200];
    publish_ack_iter it;
    int rc = publish_ack_open(f->body.p, f->body.len, &it, err, sizeof(err));
    if (rc < 0)
        return client_die(c, rc, "bad PublishAck from %s: %s", c->address, err);
    if (it.n_events != b->count)
        return client_die(c, PB_EPROTO, "%s acknowledged %zu events of frame %llu, it had %u",
                          c->address, it.n_events, (unsigned long long)f->id, b->count);
    if (grow_reserve(&c->ack_names, &c->ack_names_cap, it.n_partitions, sizeof(char *)) < 0)
        return client_die(c, PB_ENOMEM, "out of memory for partition names");
    wire_slice name;
    for (size_t i = 0; publish_ack_next_partition(&it, &name) == 0; i++) {
        c->ack_names[i] = intern(c, name);
        if (!c->ack_names[i])
            return client_die(c, PB_ENOMEM, "out of memory for partition names");
    }
    pb_position *pos = batch_positions(c, b);
    if (!pos)
        return client_die(c, PB_ENOMEM, "out of memory for positions");
    uint32_t idx;
    uint64_t off;
    for (uint32_t i = 0; i < b->count && publish_ack_next(&it, &idx, &off) == 0; i++)
        pos[i] = (pb_position){.partition = c->ack_names[idx], .offset = off, .status = 0};
    uint32_t dup;
    while (publish_ack_next_duplicate(&it, &dup) == 0)
        if (dup < b->count)
            pos[dup].duplicate = true;
    batch_done(c, b, pos, 0);
    return 0;
}

static int take_error(pb_client *c, const frame_view *f)
{
    int rc = client_take_error(c, f);
    if (rc < 0)
        return rc;
    c->serr_pending = true;
    c->flush_refused = true;
    inflight_batch *b = oldest_inflight(c);
    if (!b || f->id == 0 || f->id != b->frame_id) {
        /* Not an answer to the oldest batch: id 0 is about the connection
         * as a whole, and so is an Error to a no_ack batch (those are not
         * in flight). Anything else breaks the reply order. */
        if (b && f->id != 0)
            return client_die(c, PB_EPROTO,
                              "%s answered frame %llu while frame %llu, sent earlier, waits for "
                              "its answer: it does not answer in request order as protocol "
                              "version 1 requires",
                              c->address, (unsigned long long)f->id,
                              (unsigned long long)b->frame_id);
        return 0;
    }
    c->serr.batch_first_event = b->first_event;
    c->serr.batch_count = b->count;
    c->serr.event = b->first_event + c->serr.event_in_batch;
    pb_position *pos = batch_positions(c, b);
    if (!pos)
        return client_die(c, PB_ENOMEM, "out of memory for positions");
    for (uint32_t i = 0; i < b->count; i++)
        pos[i] = (pb_position){.partition = NULL, .offset = 0, .status = PB_ESERVER};
    batch_done(c, b, pos, PB_ESERVER);
    return 0;
}

/* An incoming frame while publishing (ack, error). 0 or a sticky error. */
static int publish_handle_frame(pb_client *c, const frame_view *f)
{
    switch (f->kind) {
    case FRAME_PUBLISH_ACK:
        return take_ack(c, f);
    case FRAME_ERROR:
        return take_error(c, f);
    default:
        return client_die(c, PB_EPROTO, "%s sent a %s frame to a publisher", c->address,
                          frame_kind_name(f->kind));
    }
}

/* Handles every complete frame received so far. 1 if any, 0 if none. */
static int handle_buffered(pb_client *c)
{
    frame_view f;
    int rc, any = 0;
    while ((rc = client_next_frame(c, &f)) == 1) {
        any = 1;
        rc = publish_handle_frame(c, &f);
        if (rc < 0)
            return rc;
    }
    return rc < 0 ? rc : any;
}

/* Waits (until the deadline) for frames and handles them. 0 after some
 * arrived, PB_ETIMEDOUT (not sticky) at the deadline, or a sticky error. */
static int pump(pb_client *c, int64_t deadline)
{
    for (;;) {
        int rc = handle_buffered(c);
        if (rc != 0)
            return rc < 0 ? rc : 0;
        int ev = client_poll(c, false, deadline);
        if (ev < 0)
            return client_die(c, ev, "waiting on %s: %s", c->address, pb_strerror(ev));
        if (ev == 0)
            return PB_ETIMEDOUT;
        rc = client_read(c);
        if (rc < 0)
            return rc;
    }
}

/* Reads and handles what has arrived, without waiting. */
static int pump_nowait(pb_client *c)
{
    int rc;
    do {
        rc = client_read(c);
        if (rc < 0)
            return rc;
        int h = handle_buffered(c);
        if (h < 0)
            return h;
    } while (rc > 0);
    return 0;
}

/* --- sending ------------------------------------------------------------------ */

/* Publish.expect entries of the batch being built. */
static size_t expect_body_size(const client_expect *x)
{
    return wire_len_field_size(1, strlen(x->topic)) + (x->none ? wire_varint_field_size(2, 1) : 0) +
           (x->offset ? wire_varint_field_size(3, x->offset) : 0);
}

static size_t expects_size(const pb_client *c)
{
    size_t n = 0;
    for (uint32_t i = 0; i < c->nexpect; i++)
        n += wire_len_field_size(3, expect_body_size(&c->expect[i]));
    return n;
}

static uint8_t *put_expects(pb_client *c, uint8_t *p)
{
    for (uint32_t i = 0; i < c->nexpect; i++) {
        const client_expect *x = &c->expect[i];
        p += wire_put_tag(p, 3, WIRE_LEN);
        p += wire_put_varint(p, expect_body_size(x));
        p += wire_put_len_field(p, 1, x->topic, strlen(x->topic));
        if (x->none)
            p += wire_put_varint_field(p, 2, 1);
        if (x->offset)
            p += wire_put_varint_field(p, 3, x->offset);
        free(x->topic);
    }
    c->nexpect = 0;
    return p;
}

static int send_batch(pb_client *c)
{
    if (c->ecount == 0 && c->nexpect == 0)
        return 0;
    int64_t deadline = client_deadline((int)c->opts.io_timeout_ms);
    int rc = pump_nowait(c);
    if (rc < 0)
        return rc;
    if (!c->opts.no_ack) {
        if (!c->inflight) {
            c->inflight = calloc(c->opts.max_in_flight, sizeof(*c->inflight));
            if (!c->inflight)
                return client_die(c, PB_ENOMEM, "out of memory");
            c->inflight_cap = c->opts.max_in_flight;
        }
        while (c->ninflight >= c->inflight_cap) {
            rc = pump(c, deadline);
            if (rc == PB_ETIMEDOUT)
                return client_die(c, rc, "%s acknowledged nothing for %u ms", c->address,
                                  c->opts.io_timeout_ms);
            if (rc < 0)
                return rc;
        }
    }

    uint8_t ts[TIMESTAMP_FIELD_MAX];
    size_t tl = put_timestamp_field(ts, 4, pb_time_now_ns());
    size_t pub_len = (c->opts.no_ack ? NO_ACK_FIELD : 0) + expects_size(c);
    for (uint32_t i = 0; i < c->ecount; i++)
        pub_len += wire_len_field_size(1, (size_t)c->elens[i] + tl);
    uint64_t id = c->next_id++;
    size_t frame_len = wire_varint_field_size(1, id) + wire_len_field_size(3, pub_len);
    size_t total = wire_varint_size(frame_len) + frame_len;
    if (grow_reserve(&c->obuf, &c->ocap, total, 1) < 0)
        return client_die(c, PB_ENOMEM, "out of memory for a %zu-byte batch", total);

    uint8_t *p = c->obuf;
    p += wire_put_varint(p, frame_len);
    p += wire_put_varint_field(p, 1, id);
    p += wire_put_tag(p, 3, WIRE_LEN);
    p += wire_put_varint(p, pub_len);
    const uint8_t *src = c->ebuf;
    for (uint32_t i = 0; i < c->ecount; i++) {
        p += wire_put_tag(p, 1, WIRE_LEN);
        p += wire_put_varint(p, (size_t)c->elens[i] + tl);
        memcpy(p, src, c->elens[i]);
        p += c->elens[i];
        src += c->elens[i];
        memcpy(p, ts, tl);
        p += tl;
    }
    if (c->opts.no_ack)
        p += wire_put_varint_field(p, 2, 1);
    p = put_expects(c, p);
    c->olen = (size_t)(p - c->obuf);
    c->ooff = 0;

    if (!c->opts.no_ack) {
        /* Registered before writing: acks may be read while the write waits. */
        inflight_batch *b = &c->inflight[(c->inflight_head + c->ninflight) % c->inflight_cap];
        *b = (inflight_batch){.frame_id = id, .first_event = c->batch_first, .count = c->ecount};
        c->ninflight++;
    }
    c->batch_first += c->ecount;
    c->ecount = 0;
    c->elen = 0;
    c->batch_ub = 0;
    return client_write_all(c, deadline, publish_handle_frame);
}

static bool keeps_positions(const pb_client *c)
{
    return !c->opts.no_ack && !c->opts.no_positions;
}

static void reset_window(pb_client *c)
{
    if (c->pos_reset) {
        c->pos_len = 0;
        c->pos_base = c->seq;
        c->pos_reset = false;
    }
}

static size_t frame_limit(const pb_client *c)
{
    size_t limit = c->opts.batch_bytes;
    if (c->max_frame_bytes && c->max_frame_bytes <= FRAME_OVERHEAD_MAX)
        return 1;
    if (c->max_frame_bytes && c->max_frame_bytes - FRAME_OVERHEAD_MAX < limit)
        limit = (size_t)(c->max_frame_bytes - FRAME_OVERHEAD_MAX);
    return limit;
}

int pb_client_publish(pb_client *c, const pb_event *ev)
{
    return pb_client_publish_id(c, ev, NULL);
}

int pb_client_publish_id(pb_client *c, const pb_event *ev, const char *id)
{
    if (c->subscribed)
        return client_fail(c, PB_EINVAL, "this connection is dedicated to a subscription");
    if (c->sticky)
        return c->sticky;
    if (c->serr_pending) {
        c->serr_pending = false;
        if (c->serr.batch_count)
            return client_fail(
                c, PB_ESERVER, "server refused the batch of events %llu..%llu%s: %s: %s",
                (unsigned long long)c->serr.batch_first_event,
                (unsigned long long)(c->serr.batch_first_event + c->serr.batch_count - 1),
                c->serr.about_event ? " (because of one event)" : "", pb_code_name(c->serr.code),
                c->serr.message);
        return client_fail(c, PB_ESERVER, "server error: %s: %s", pb_code_name(c->serr.code),
                           c->serr.message);
    }
    size_t id_len = 0;
    int rc = validate_event(c, ev);
    if (rc == 0 && id)
        rc = validate_id(c, ev, id, &id_len);
    if (rc < 0)
        return rc;
    size_t topic_len = strlen(ev->topic);
    size_t type_len = ev->payload_type ? strlen(ev->payload_type) : 0;
    /* No server stores more than the file format's record cap, whatever it says. */
    uint64_t max_event = c->max_event_bytes ? c->max_event_bytes : PB_RECORD_MAX_EVENT;
    if (max_event > PB_RECORD_MAX_EVENT)
        max_event = PB_RECORD_MAX_EVENT;
    if (ev->payload_len > max_event)
        return client_fail(c, PB_ETOOBIG,
                           "event for topic %s has a %zu-byte payload, the server's maximum "
                           "event size is %llu bytes",
                           ev->topic, ev->payload_len, (unsigned long long)max_event);
    size_t body =
        event_size(ev, topic_len, type_len) + (id_len ? wire_len_field_size(8, id_len) : 0);
    if (body + TIMESTAMP_FIELD_MAX > max_event)
        return client_fail(c, PB_ETOOBIG,
                           "event for topic %s takes %zu bytes encoded, the server's maximum "
                           "event size is %llu bytes",
                           ev->topic, body + TIMESTAMP_FIELD_MAX, (unsigned long long)max_event);
    size_t ub = event_upper_bound(body);
    size_t limit = frame_limit(c);
    /* no_ack and the expectations go into the same Publish body. */
    size_t extra = (c->opts.no_ack ? NO_ACK_FIELD : 0) + (c->nexpect ? expects_size(c) : 0);
    if (ub + extra > limit && c->max_frame_bytes &&
        ub + extra + FRAME_OVERHEAD_MAX > c->max_frame_bytes)
        return client_fail(c, PB_ETOOBIG,
                           "event for topic %s takes %zu bytes encoded, more than fits in the "
                           "server's maximum frame of %llu bytes",
                           ev->topic, ub, (unsigned long long)c->max_frame_bytes);

    reset_window(c);
    /* A batch with expectations holds exactly what was published for it: it
     * is sent by pb_client_flush only, and an event that does not fit is
     * refused (sending it in a next batch would store it unchecked). */
    bool held = c->nexpect > 0;
    uint32_t max_events = c->opts.batch_events;
    if (c->max_batch_events && c->max_batch_events < max_events)
        max_events = c->max_batch_events;
    if (held && (c->ecount >= max_events || (c->ecount > 0 && extra + c->batch_ub + ub > limit)))
        return client_fail(c, PB_ETOOBIG,
                           "event for topic %s does not fit in the batch with expectations (%u "
                           "events, %zu bytes): flush it first",
                           ev->topic, c->ecount, c->batch_ub);
    /* Send first when this event would take the batch over its byte limit. */
    if (c->ecount > 0 && extra + c->batch_ub + ub > limit) {
        rc = send_batch(c);
        if (rc < 0)
            return rc;
    }
    if (grow_reserve(&c->ebuf, &c->ecap, c->elen + body, 1) < 0 ||
        grow_reserve(&c->elens, &c->elens_cap, c->ecount + 1, sizeof(uint32_t)) < 0)
        return client_fail(c, PB_ENOMEM, "out of memory for the batch");
    if (keeps_positions(c)) {
        if (grow_reserve(&c->pos, &c->pos_cap, c->pos_len + 1, sizeof(pb_position)) < 0)
            return client_fail(c, PB_ENOMEM, "out of memory for positions");
        c->pos[c->pos_len++] =
            (pb_position){.partition = NULL, .offset = 0, .status = PB_ETIMEDOUT};
    }
    size_t n = put_event(c->ebuf + c->elen, ev, topic_len, type_len);
    n += put_event_id(c->ebuf + c->elen + n, id, id_len);
    c->elen += n;
    c->elens[c->ecount++] = (uint32_t)n;
    c->batch_ub += ub;
    c->seq++;
    /* A batch stays within the server's max_batch_events (it refuses a
     * Publish with more), whatever batch_events says. */
    if (!held && (c->ecount >= max_events || extra + c->batch_ub >= limit))
        return send_batch(c);
    return 0;
}

int pb_client_flush(pb_client *c, int timeout_ms, const pb_position **positions, size_t *count)
{
    int rc = 0;
    if (c->subscribed) {
        rc = client_fail(c, PB_EINVAL, "this connection is dedicated to a subscription");
        goto out;
    }
    if (c->sticky) {
        rc = c->sticky;
        goto out;
    }
    reset_window(c);
    rc = send_batch(c);
    if (rc < 0)
        goto out;
    int64_t deadline = client_deadline(timeout_ms);
    while (c->ninflight > 0) {
        rc = pump(c, deadline);
        if (rc < 0)
            break;
    }
    if (rc == PB_ETIMEDOUT) {
        rc = client_fail(c, PB_ETIMEDOUT, "%u batch(es) not acknowledged by %s within %d ms",
                         c->ninflight, c->address, timeout_ms);
        goto out;
    }
    if (rc < 0)
        goto out;
    c->pos_reset = true;
    c->serr_pending = false;
    if (c->flush_refused) {
        c->flush_refused = false;
        rc = client_fail(c, PB_ESERVER, "server refused events: %s: %s", pb_code_name(c->serr.code),
                         c->serr.message);
    }
out:
    if (positions)
        *positions = c->pos_len ? c->pos : NULL;
    if (count)
        *count = c->pos_len;
    return rc;
}

int pb_client_expect_last(pb_client *c, const char *topic, bool none, uint64_t last_offset)
{
    char err[200];
    if (c->subscribed)
        return client_fail(c, PB_EINVAL, "this connection is dedicated to a subscription");
    if (c->sticky)
        return c->sticky;
    if (!topic)
        return client_fail(c, PB_EINVAL, "expectation without a topic");
    size_t tl = strlen(topic);
    if (topic_validate((const uint8_t *)topic, tl, err, sizeof(err)) < 0)
        return client_fail(c, PB_EINVAL, "bad topic \"%.*s\" in an expectation: %s",
                           (int)(tl > 300 ? 300 : tl), topic, err);
    if (c->nexpect >= PB_MAX_EXPECTATIONS)
        return client_fail(c, PB_EINVAL, "more than %d expectations for one batch",
                           PB_MAX_EXPECTATIONS);
    char *copy = strdup(topic);
    if (!copy || grow_reserve(&c->expect, &c->expect_cap, c->nexpect + 1, sizeof *c->expect) < 0) {
        free(copy);
        return client_fail(c, PB_ENOMEM, "out of memory for an expectation");
    }
    c->expect[c->nexpect++] =
        (client_expect){.topic = copy, .none = none, .offset = none ? 0 : last_offset};
    return 0;
}

void publish_free(pb_client *c)
{
    for (uint32_t i = 0; i < c->nexpect; i++)
        free(c->expect[i].topic);
    free(c->expect);
    for (size_t i = 0; i < c->nparts; i++)
        free(c->parts[i]);
    free(c->parts);
    free(c->ptab);
    free(c->ack_names);
    free(c->ebuf);
    free(c->elens);
    free(c->inflight);
    free(c->pos);
    free(c->scratch);
}
