/*
 * render_decode: stored EncapsulatedEvent bytes -> the fields the CLI's
 * renderer prints (render.c), with protobuf-c's decoding rules exactly, so
 * that `cat` and `sub` print what they printed when they unpacked every
 * event with protobuf-c: strings end at their first NUL byte (protobuf-c's
 * strings are C strings), the last occurrence of a string or scalar wins,
 * bytes protobuf-c refuses are refused.
 *
 * Two paths. The fast one walks the bytes in place (proto/wire.h, with the
 * checks of proto/event.h's walker inline; no allocation once the tag array
 * is warm) and covers every event a publisher normally sends. Anything it
 * is not sure to decode exactly as protobuf-c does (a message field that
 * occurs twice, which protobuf-c merges; bytes it refuses) goes to
 * protobuf-c's unpack, whose
 * result is read into the same view: that path decides what is valid.
 *
 * Threads: any; a decoder is used by one thread at a time.
 */
#ifndef PB_CLI_RENDER_DECODE_H
#define PB_CLI_RENDER_DECODE_H

#include "wire.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct render_time {
    bool present;
    int64_t seconds;
    int32_t nanos;
} render_time;

typedef struct render_tag {
    wire_slice key, value; /* up to the first NUL */
} render_tag;

/* Indexes of render_event.times. */
enum { RENDER_CLIENT_EVENT_TIME, RENDER_CLIENT_TRANSMIT_TIME, RENDER_SERVER_RECEIVE_TIME };

/* One decoded event: views into the event bytes or into the decoder. */
typedef struct render_event {
    wire_slice topic;    /* up to the first NUL */
    wire_slice type_url; /* payload.type_url, up to the first NUL; empty if none */
    wire_slice value;    /* payload.value (all bytes); empty if none */
    wire_slice id;       /* the publisher's event id, up to the first NUL; empty if none */
    int64_t payload_size;
    render_time times[3];
    const render_tag *tags; /* every map entry in wire order, duplicates too */
    size_t n_tags;
} render_event;

typedef struct render_decoder {
    render_tag *tags; /* reused from event to event */
    size_t tags_cap;
    void *unpacked; /* the slow path's protobuf-c message, until the next decode */
} render_decoder;

void render_decoder_init(render_decoder *d);
void render_decoder_free(render_decoder *d);

/* Decodes event[0..len) into *ev, valid until the next call or the free.
 * 0, PB_EPROTO (protobuf-c cannot read it) or PB_ENOMEM. */
int render_decode(render_decoder *d, const uint8_t *event, size_t len, render_event *ev);

#endif
