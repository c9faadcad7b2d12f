/*
 * render: one stored event -> output for the `protobus` CLI (`cat`, `sub`),
 * as JSON lines, a readable text line, or the raw payload bytes. Also the
 * tag filter the CLI applies to stored event bytes, and a strict UTF-8 check.
 *
 * Threads: any; a pb_renderer is used by one thread at a time. Each event
 * reaches its FILE in one fwrite, so the lines of two renderers writing one
 * FILE do not interleave.
 */
#ifndef PB_RENDER_H
#define PB_RENDER_H

#include "render_decode.h"
#include "timefmt.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum pb_render_format {
    PB_RENDER_TEXT, /* one readable line per event */
    PB_RENDER_JSON, /* one JSON object per line */
    PB_RENDER_RAW,  /* payload bytes only, nothing added */
} pb_render_format;

/* Text output shows at most this many payload bytes, then "..." and the full size. */
#define PB_RENDER_TEXT_PAYLOAD_MAX 64

/* "text", "json" or "raw" (any case) -> *out. Returns 0, or PB_EINVAL for any
 * other name (the caller names the bad value; pb_render_format_name lists them). */
int pb_render_format_parse(const char *name, pb_render_format *out);

/* "text", "json", "raw"; "?" for a value outside the enum. Static string. */
const char *pb_render_format_name(pb_render_format fmt);

struct render_tag_ref;

/*
 * Renders events one after the other into one FILE, reusing its buffers (no
 * allocation per event once warm). Fields are internal to render.c.
 */
typedef struct pb_renderer {
    FILE *out;
    pb_render_format fmt;
    render_decoder dec;
    char *buf; /* the event being rendered */
    size_t len, cap;
    bool nomem; /* a buffer could not grow: the event fails */
    struct render_tag_ref *refs;
    size_t refs_cap;
    char *keys; /* tag keys made valid UTF-8 (json) */
    size_t keys_cap;
    struct {
        int64_t seconds; /* the second prefix shows */
        size_t len;      /* 0: nothing cached */
        char prefix[PB_TIME_BUFSZ];
    } ts[3]; /* one per timestamp field: they may straddle a second */
} pb_renderer;

/* Sets up r for `out` (not owned) and `fmt`. Allocates nothing. */
void pb_renderer_init(pb_renderer *r, FILE *out, pb_render_format fmt);

/* Frees r's buffers. */
void pb_renderer_free(pb_renderer *r);

/* pb_render_event with r's FILE and format. */
int pb_render(pb_renderer *r, const char *partition, uint64_t offset, const uint8_t *event,
              size_t len, char *err, size_t errlen);

/*
 * Decodes the EncapsulatedEvent in event[0..len) stored at (partition, offset)
 * and writes it to `out` in format `fmt`:
 *
 * json: {"topic","partition","offset","tags":{...},"client_event_time",
 *       "client_transmit_time","server_receive_time","payload_type",
 *       "payload_size", and "payload" (payload bytes that are valid UTF-8) or
 *       "payload_base64" (otherwise; standard alphabet, padded)}, then '\n'.
 *       Times are RFC 3339 UTC with nine fraction digits, null when absent.
 *       Strings that are not valid UTF-8 (topic, tags, type URL, partition)
 *       have each bad byte replaced by U+FFFD, so the line is always valid JSON.
 *       Duplicate tag keys: the last one wins, as in protobuf (in the place
 *       of the first).
 * text: <receive time|-> <partition>:<offset> <topic> {k=v,...} <type URL|->
 *       <payload bytes>B <payload>, then '\n'; tags sorted by key; the payload
 *       as a quoted string if UTF-8, else base64:..., cut after
 *       PB_RENDER_TEXT_PAYLOAD_MAX bytes with "..."; control characters,
 *       backslashes and invalid UTF-8 escaped (\n, \t, \xHH) everywhere.
 * raw:  the payload bytes exactly (nothing if there is no payload).
 *
 * Strings end at their first NUL byte (protobuf-c's rule, which this
 * output has always followed); the payload is shown whole. Each event is
 * written with one fwrite, and nothing is written for an event that fails.
 * pb_render_event sets up a pb_renderer per call; loops use pb_render.
 *
 * partition may be NULL (shown as ""). The caller keeps ownership of all
 * arguments. Returns 0; PB_EPROTO if the bytes are not a valid
 * EncapsulatedEvent; PB_ENOMEM; PB_EINVAL for a bad fmt; a negated errno if
 * writing to `out` failed (output may then be partial). On error, err (if
 * not NULL and errlen > 0) names the partition, offset and reason.
 */
int pb_render_event(FILE *out, pb_render_format fmt, const char *partition, uint64_t offset,
                    const uint8_t *event, size_t len, char *err, size_t errlen);

/*
 * Whether the EncapsulatedEvent in event[0..len) has tags[keys[i]] ==
 * values[i] for every i < n (exact byte comparison; for a key repeated in
 * the map, its last entry counts, as in protobuf). Walks the wire format in
 * place without allocating (proto/event.h's walker), checking the framing of
 * top-level fields and tag entries and the wire types of known fields.
 * Returns 1 (all match; also for n == 0), 0 (some pair does not
 * match), PB_EPROTO (malformed bytes) or PB_EINVAL (n > 0 with NULL arrays).
 */
int pb_event_tags_match(const uint8_t *event, size_t len, const char *const *keys,
                        const char *const *values, size_t n);

/* Whether s[0..len) is well-formed UTF-8: no overlong forms, no surrogates
 * (U+D800-U+DFFF), nothing above U+10FFFF, no truncated sequences. */
bool pb_utf8_valid(const uint8_t *s, size_t len);

#endif
