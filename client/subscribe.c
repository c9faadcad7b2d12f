/*
 * subscribe - libprotobus's subscribing side: sends the Subscribe request
 * and reads the server's answer, Subscribed (its start positions) or an
 * Error (protobuf-c both ways: once per connection, a cold path), then
 * iterates the Event frames the server streams, walking each with the wire
 * codec into views over the receive buffer plus NUL-terminated copies of
 * its strings in one reusable buffer (no allocation per event once warm),
 * and the CaughtUp marker between history and live events.
 *
 * Threads: whichever thread calls into the pb_client (one at a time).
 */
#include "client.h"

#include "event.h"

#include "protobus.pb-c.h"

#include <stdlib.h>
#include <string.h>

static int check_subscription(pb_client *c, const pb_subscription *s)
{
    if (!s)
        return client_fail(c, PB_EINVAL, "no subscription given");
    if (s->npatterns && !s->patterns)
        return client_fail(c, PB_EINVAL, "npatterns %zu but no patterns", s->npatterns);
    for (size_t i = 0; i < s->npatterns; i++)
        if (!s->patterns[i])
            return client_fail(c, PB_EINVAL, "pattern %zu is NULL", i);
    if (s->ntags && !s->tags)
        return client_fail(c, PB_EINVAL, "ntags %zu but no tags", s->ntags);
    for (size_t i = 0; i < s->ntags; i++)
        if (!s->tags[i].key || !s->tags[i].value)
            return client_fail(c, PB_EINVAL, "tag filter %zu has a NULL %s", i,
                               s->tags[i].key ? "value" : "key");
    if (s->noffsets && !s->offsets)
        return client_fail(c, PB_EINVAL, "noffsets %zu but no offsets", s->noffsets);
    for (size_t i = 0; i < s->noffsets; i++)
        if (!s->offsets[i].partition)
            return client_fail(c, PB_EINVAL, "start offset %zu has no partition", i);
    if ((int)s->start < PB_START_NEW || s->start > PB_START_LAST_N)
        return client_fail(c, PB_EINVAL, "unknown start mode %d", (int)s->start);
    return 0;
}

/* Encodes the Subscribe frame into obuf (delimited). */
static int encode_subscribe(pb_client *c, const pb_subscription *s)
{
    int rc = 0;
    Protobus__Subscribe__TagsEntry *tags = NULL, **tagp = NULL;
    Protobus__PartitionOffset *offs = NULL, **offp = NULL;
    if (s->ntags) {
        tags = calloc(s->ntags, sizeof(*tags));
        tagp = calloc(s->ntags, sizeof(*tagp));
        if (!tags || !tagp)
            goto nomem;
    }
    if (s->noffsets) {
        offs = calloc(s->noffsets, sizeof(*offs));
        offp = calloc(s->noffsets, sizeof(*offp));
        if (!offs || !offp)
            goto nomem;
    }
    /* protobuf-c only reads these strings while packing; the casts drop a
     * const its structs cannot express. */
    for (size_t i = 0; i < s->ntags; i++) {
        protobus__subscribe__tags_entry__init(&tags[i]);
        tags[i].key = (char *)s->tags[i].key;
        tags[i].value = (char *)s->tags[i].value;
        tagp[i] = &tags[i];
    }
    for (size_t i = 0; i < s->noffsets; i++) {
        protobus__partition_offset__init(&offs[i]);
        offs[i].partition = (char *)s->offsets[i].partition;
        offs[i].offset = s->offsets[i].offset;
        offp[i] = &offs[i];
    }
    Google__Protobuf__Timestamp from = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    Protobus__Subscribe sub = PROTOBUS__SUBSCRIBE__INIT;
    sub.n_patterns = s->npatterns;
    sub.patterns = (char **)s->patterns;
    sub.n_tags = s->ntags;
    sub.tags = tagp;
    sub.start = (Protobus__StartMode)s->start;
    sub.n_offsets = s->noffsets;
    sub.offsets = offp;
    if (s->start == PB_START_TIME) {
        int64_t secs = s->from_time_ns / 1000000000, nanos = s->from_time_ns % 1000000000;
        if (nanos < 0) {
            nanos += 1000000000;
            secs -= 1;
        }
        from.seconds = secs;
        from.nanos = (int32_t)nanos;
        sub.from_time = &from;
    }
    sub.last_n = s->last_n;
    Protobus__Frame frame = PROTOBUS__FRAME__INIT;
    frame.id = c->next_id++;
    frame.body_case = PROTOBUS__FRAME__BODY_SUBSCRIBE;
    frame.subscribe = &sub;
    size_t body = protobus__frame__get_packed_size(&frame);
    size_t need = frame_put_delimiter(NULL, 0, body) + body;
    if (grow_reserve(&c->obuf, &c->ocap, need, 1) < 0)
        goto nomem;
    size_t pre = frame_put_delimiter(c->obuf, c->ocap, body);
    c->olen = pre + protobus__frame__pack(&frame, c->obuf + pre);
    c->ooff = 0;
    c->sub_id = frame.id;
    goto out;
nomem:
    rc = client_fail(c, PB_ENOMEM, "out of memory for the Subscribe request");
out:
    free(tags);
    free(tagp);
    free(offs);
    free(offp);
    return rc;
}

/* Keeps the positions of a Subscribed frame (names copied into one
 * allocation). 0 or a sticky error. */
static int take_subscribed(pb_client *c, const frame_view *f)
{
    Protobus__Subscribed *m = protobus__subscribed__unpack(NULL, f->body.len, f->body.p);
    if (!m)
        return client_die(c, PB_EPROTO, "bad Subscribed frame from %s", c->address);
    int rc = 0;
    size_t names = 0;
    for (size_t i = 0; i < m->n_partitions; i++)
        names += strlen(m->partitions[i]->partition) + 1;
    free(c->subparts);
    free(c->subnames);
    c->nsubparts = 0;
    c->subparts = calloc(m->n_partitions ? m->n_partitions : 1, sizeof(*c->subparts));
    c->subnames = malloc(names ? names : 1);
    if (!c->subparts || !c->subnames) {
        rc = client_die(c, PB_ENOMEM, "out of memory for the subscription's positions");
        goto out;
    }
    char *w = c->subnames;
    for (size_t i = 0; i < m->n_partitions; i++) {
        const Protobus__PartitionPosition *p = m->partitions[i];
        size_t len = strlen(p->partition) + 1;
        memcpy(w, p->partition, len);
        c->subparts[i] = (pb_subscribed_partition){.partition = w,
                                                   .first_offset = p->first_offset,
                                                   .start_offset = p->start_offset,
                                                   .end_offset = p->end_offset};
        w += len;
    }
    c->nsubparts = m->n_partitions;
out:
    protobus__subscribed__free_unpacked(m, NULL);
    return rc;
}

/* Waits for the answer to the Subscribe: 0 (Subscribed), PB_ESERVER
 * (refused; not sticky) or a sticky error. */
static int await_subscribed(pb_client *c, int64_t deadline)
{
    for (;;) {
        frame_view f;
        int rc = client_next_frame(c, &f);
        if (rc < 0)
            return rc;
        if (rc == 1) {
            if (f.kind == FRAME_SUBSCRIBED && f.id == c->sub_id)
                return take_subscribed(c, &f);
            if (f.kind == FRAME_ERROR && (f.id == c->sub_id || f.id == 0)) {
                if ((rc = client_take_error(c, &f)) < 0)
                    return rc;
                /* A refused Subscribe leaves the connection as it was. An
                 * Error about the connection as a whole (id 0) ends it. */
                if (f.id == 0)
                    return client_die(c, PB_ESERVER, "%s closed the connection: %s: %s", c->address,
                                      pb_code_name(c->serr.code), c->serr.message);
                c->subscribed = false;
                return client_fail(c, PB_ESERVER, "subscription refused by %s: %s: %s", c->address,
                                   pb_code_name(c->serr.code), c->serr.message);
            }
            return client_die(c, PB_EPROTO,
                              "%s answered the Subscribe (frame %llu) with a %s frame (id %llu) "
                              "instead of Subscribed: it does not speak protocol version 1",
                              c->address, (unsigned long long)c->sub_id, frame_kind_name(f.kind),
                              (unsigned long long)f.id);
        }
        int ev = client_poll(c, false, deadline);
        if (ev < 0)
            return client_die(c, ev, "waiting on %s: %s", c->address, pb_strerror(ev));
        if (ev == 0)
            return client_die(c, PB_ETIMEDOUT, "%s did not answer the Subscribe within %u ms",
                              c->address, c->opts.io_timeout_ms);
        if ((rc = client_read(c)) < 0)
            return rc;
    }
}

int pb_client_subscribe(pb_client *c, const pb_subscription *s)
{
    if (c->subscribed)
        return client_fail(c, PB_EINVAL, "this connection is already subscribed");
    if (c->sticky)
        return c->sticky;
    if (c->ecount || c->ninflight)
        return client_fail(c, PB_EINVAL, "flush the pending publishes before subscribing");
    int rc = check_subscription(c, s);
    if (rc < 0)
        return rc;
    rc = encode_subscribe(c, s);
    if (rc < 0)
        return rc;
    /* Marked first: from here on frames are the subscription's. Whatever
     * the server sends while the request is written stays buffered. */
    c->subscribed = true;
    c->caught_up = false;
    int64_t deadline = client_deadline((int)c->opts.io_timeout_ms);
    rc = client_write_all(c, deadline, NULL);
    return rc < 0 ? rc : await_subscribed(c, deadline);
}

int pb_client_subscription(const pb_client *c, const pb_subscribed_partition **parts, size_t *n)
{
    if (!c->subscribed || !c->subparts) {
        if (parts)
            *parts = NULL;
        if (n)
            *n = 0;
        return PB_EINVAL;
    }
    if (parts)
        *parts = c->subparts;
    if (n)
        *n = c->nsubparts;
    return 0;
}

static const char *copy_str(char **w, wire_slice s)
{
    char *d = *w;
    if (s.len)
        memcpy(d, s.p, s.len);
    d[s.len] = '\0';
    *w = d + s.len + 1;
    return d;
}

/* client_events_unscanned: the event's bytes, its partition and offset. */
static int take_event_bytes(pb_client *c, const event_frame_view *v, pb_item *item)
{
    if (grow_reserve(&c->sbuf, &c->scap, v->partition.len + 1, 1) < 0)
        return client_die(c, PB_ENOMEM, "out of memory for a received event");
    char *w = c->sbuf;
    memset(item, 0, sizeof(*item));
    item->kind = PB_ITEM_EVENT;
    item->event.partition = copy_str(&w, v->partition);
    item->event.partition_len = v->partition.len;
    item->event.offset = v->offset;
    item->event.raw = v->event.p;
    item->event.raw_len = v->event.len;
    return 0;
}

void client_events_unscanned(pb_client *c)
{
    c->events_unscanned = true;
}

static int take_event(pb_client *c, const frame_view *f, pb_item *item)
{
    char err[200];
    event_frame_view v;
    int rc = event_frame_parse(f->body.p, f->body.len, &v, err, sizeof(err));
    if (rc < 0)
        return client_die(c, rc, "bad Event frame from %s: %s", c->address, err);
    if (c->events_unscanned)
        return take_event_bytes(c, &v, item);
    event_view e;
    rc = event_scan(v.event.p, v.event.len, &e, err, sizeof(err));
    if (rc < 0)
        return client_die(c, rc, "bad event at %.*s:%llu from %s: %s", (int)v.partition.len,
                          (const char *)v.partition.p, (unsigned long long)v.offset, c->address,
                          err);
    /* Every string but the partition lies inside the event bytes, and each
     * copy adds one NUL: this bound holds whatever the tags are. */
    size_t need = v.partition.len + v.event.len + 2 * e.n_tags + 3;
    if (grow_reserve(&c->sbuf, &c->scap, need, 1) < 0 ||
        grow_reserve(&c->tagv, &c->tagv_cap, e.n_tags ? e.n_tags : 1, sizeof(pb_tag_view)) < 0)
        return client_die(c, PB_ENOMEM, "out of memory for a received event");
    char *w = c->sbuf;
    pb_received_event *r = &item->event;
    memset(item, 0, sizeof(*item));
    item->kind = PB_ITEM_EVENT;
    r->partition = copy_str(&w, v.partition);
    r->partition_len = v.partition.len;
    r->offset = v.offset;
    r->topic = copy_str(&w, e.topic);
    r->topic_len = e.topic.len;
    event_tag_iter it;
    event_tag t;
    size_t n = 0;
    event_tags_begin(&e, &it);
    while (n < e.n_tags && event_tags_next(&it, &t)) {
        pb_tag_view *tv = &c->tagv[n++];
        tv->key = copy_str(&w, t.key);
        tv->key_len = t.key.len;
        tv->value = copy_str(&w, t.value);
        tv->value_len = t.value.len;
    }
    r->tags = c->tagv;
    r->ntags = n;
    r->has_client_event_time = e.client_event_time.present;
    r->client_event_time_ns = e.client_event_time.ns;
    r->has_client_transmit_time = e.client_transmit_time.present;
    r->client_transmit_time_ns = e.client_transmit_time.ns;
    r->has_server_receive_time = e.server_receive_time.present;
    r->server_receive_time_ns = e.server_receive_time.ns;
    r->payload_type = copy_str(&w, e.type_url);
    r->payload_type_len = e.type_url.len;
    r->payload = e.value.p;
    r->payload_len = e.value.len;
    r->payload_size = e.payload_size;
    r->raw = v.event.p;
    r->raw_len = v.event.len;
    return 0;
}

int pb_client_next(pb_client *c, pb_item *item, int timeout_ms)
{
    if (!c->subscribed)
        return client_fail(c, PB_EINVAL, "pb_client_next before pb_client_subscribe");
    if (c->sticky)
        return c->sticky;
    /* The clock is read only once there is nothing to return: most calls
     * take a frame already buffered, and a clock read per event shows in a
     * replay's profile. */
    int64_t deadline = 0;
    bool waited = false;
    for (;;) {
        frame_view f;
        int rc = client_next_frame(c, &f);
        if (rc < 0)
            return rc;
        if (rc == 1) {
            switch (f.kind) {
            case FRAME_EVENT:
                return take_event(c, &f, item);
            case FRAME_CAUGHT_UP: {
                if (c->caught_up)
                    return client_die(c, PB_EPROTO, "%s sent a second CaughtUp", c->address);
                Protobus__CaughtUp *m = protobus__caught_up__unpack(NULL, f.body.len, f.body.p);
                if (!m)
                    return client_die(c, PB_EPROTO, "bad CaughtUp frame from %s", c->address);
                c->caught_up = true;
                memset(item, 0, sizeof(*item));
                item->kind = PB_ITEM_CAUGHT_UP;
                item->caught_up.history_events = m->history_events;
                protobus__caught_up__free_unpacked(m, NULL);
                return 0;
            }
            case FRAME_PONG:
                continue; /* the answer to a Ping this client did not send: nothing */
            case FRAME_ERROR:
                rc = client_take_error(c, &f);
                if (rc < 0)
                    return rc;
                if (c->serr.code == PB_CODE_DATA_LOSS || c->serr.code == PB_CODE_OUT_OF_RANGE) {
                    /* Notices: the subscription goes on. */
                    memset(item, 0, sizeof(*item));
                    item->kind = c->serr.code == PB_CODE_DATA_LOSS ? PB_ITEM_DATA_LOSS
                                                                   : PB_ITEM_OUT_OF_RANGE;
                    item->loss.partition = c->serr.partition;
                    item->loss.first_offset = c->serr.first_offset;
                    item->loss.last_offset = c->serr.last_offset;
                    item->loss.message = c->serr.message;
                    return 0;
                }
                return client_die(c, PB_ESERVER, "subscription ended by %s: %s: %s", c->address,
                                  pb_code_name(c->serr.code), c->serr.message);
            default:
                return client_die(c, PB_EPROTO, "%s sent a %s frame to a subscriber", c->address,
                                  frame_kind_name(f.kind));
            }
        }
        /* Read first (the socket is non-blocking): while a replay streams,
         * data is nearly always there and the poll would be a wasted call.
         * With no wait asked (timeout 0: an event loop's "what is there
         * now"), a read of such a call that came back short already said
         * the socket held nothing more: the timeout-0 call that runs out
         * of frames after it returns at once, instead of a read that finds nothing and a poll(0) that
         * says so again (two of the three system calls a delivery cost a
         * multiplexed subscriber: tests/bench/NOTES.md, branch fanout6).
         * Once only: the next call reads (the caller's poll said so). */
        bool was_short = c->read_short;
        c->read_short = false;
        if (was_short && timeout_ms == 0)
            return client_fail(c, PB_ETIMEDOUT, "no event within %d ms", timeout_ms);
        size_t space = c->rcap - c->rend + c->rstart;
        rc = client_read(c);
        if (rc < 0)
            return rc;
        if (rc > 0) {
            c->read_short = timeout_ms == 0 && !c->ssl && (size_t)rc < space;
            continue;
        }
        if (timeout_ms == 0)
            return client_fail(c, PB_ETIMEDOUT, "no event within %d ms", timeout_ms);
        if (!waited) {
            deadline = client_deadline(timeout_ms);
            waited = true;
        }
        int ev = client_poll(c, false, deadline);
        if (ev < 0)
            return client_die(c, ev, "waiting on %s: %s", c->address, pb_strerror(ev));
        if (ev == 0)
            return client_fail(c, PB_ETIMEDOUT, "no event within %d ms", timeout_ms);
    }
}

void subscribe_free(pb_client *c)
{
    free(c->sbuf);
    free(c->tagv);
    free(c->subparts);
    free(c->subnames);
}

const char *pb_received_event_id(const pb_received_event *ev, size_t *len)
{
    event_walker w;
    event_item it;
    const char *id = NULL;
    *len = 0;
    if (!ev || !ev->raw)
        return NULL;
    event_walk_init(&w, ev->raw, ev->raw_len, EVENT_WANT(EVENT_ID), false);
    while (event_walk_next(&w, &it, NULL, 0) > 0) {
        id = (const char *)it.f.data.p;
        *len = it.f.data.len;
    }
    if (*len == 0)
        id = NULL;
    return id;
}
