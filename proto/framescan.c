/*
 * framescan - a frame stream read without keeping it (see framescan.h): a
 * state machine over the length prefix, each field's tag, varint value or
 * length, and the bytes it skips.
 *
 * Runs on the thread that owns the stream (the daemon: a subscription's
 * pool thread). No state outside the scanner, no allocation.
 */
#include "framescan.h"

#include "pb_errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum {
    S_PREFIX, /* the next frame's length prefix */
    S_TAG,    /* a field's tag (or the end of the frame) */
    S_VALUE,  /* a varint field's value */
    S_LEN,    /* a length-delimited field's length */
    S_SKIP,   /* a field's contents */
    S_REST,   /* the rest of a malformed frame */
};

void frame_scan_init(frame_scan *s, uint64_t max_frame_bytes)
{
    memset(s, 0, sizeof *s);
    s->max_frame_bytes = max_frame_bytes;
    s->state = S_PREFIX;
}

/* Adds byte b to the varint in progress: 1 when it is complete (*v set), 0
 * when more bytes are needed, -1 when it is longer than max bytes (tags and
 * lengths: 5, as protobuf-c reads them) or over 64 bits. */
static int varint_byte(frame_scan *s, uint8_t b, size_t max, uint64_t *v)
{
    s->vbuf[s->vlen++] = b;
    if (b & 0x80)
        return s->vlen == max ? -1 : 0; /* decided at once, as the splitter does */
    int k = wire_varint_decode(s->vbuf, s->vlen, v);
    s->vlast = s->vlen;
    s->vlen = 0;
    return k > 0 ? 1 : -1;
}

static void malformed(frame_scan *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Marks the frame malformed, naming the current field, and skips its rest. */
static void malformed(frame_scan *s, const char *fmt, ...)
{
    char detail[160];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    s->r.malformed = true;
    if (s->field)
        snprintf(s->r.why, sizeof s->r.why, "Frame field %u (%s) at byte %llu: %s", s->field,
                 frame_field_name(s->field), (unsigned long long)s->field_pos, detail);
    else
        snprintf(s->r.why, sizeof s->r.why, "Frame: %s", detail);
    s->vlen = 0;
    s->state = S_REST;
}

/* Starts the frame whose prefix declared len bytes. */
static void begin_frame(frame_scan *s, uint64_t len)
{
    memset(&s->r, 0, sizeof s->r);
    s->frame_len = len;
    s->frame_left = len;
    s->field = 0;
    s->state = S_TAG;
}

/* A complete tag: check it and choose how the field's contents are read. */
static void on_tag(frame_scan *s, uint64_t tag)
{
    uint64_t number = tag >> 3;

    s->field = number <= WIRE_FIELD_MAX ? (uint32_t)number : 0;
    s->wtype = (uint8_t)(tag & 7);
    if (number == 0 || number > WIRE_FIELD_MAX) {
        malformed(s, "field number %llu at byte %llu is out of range", (unsigned long long)number,
                  (unsigned long long)s->field_pos);
        return;
    }
    bool body = number >= FRAME_HELLO && number <= FRAME_KIND_MAX;
    switch (s->wtype) {
    case WIRE_VARINT:
        if (body)
            malformed(s, "wire type 0 (varint), expected 2 (length-delimited)");
        else
            s->state = S_VALUE;
        return;
    case WIRE_LEN:
        if (number == 1)
            malformed(s, "wire type 2 (length-delimited), expected 0 (varint)");
        else
            s->state = S_LEN;
        return;
    case WIRE_I64:
    case WIRE_I32:
        if (number == 1 || body) {
            malformed(s, "wire type %u, expected %s", s->wtype,
                      number == 1 ? "0 (varint)" : "2 (length-delimited)");
            return;
        }
        s->skip_left = s->wtype == WIRE_I64 ? 8 : 4;
        if (s->skip_left > s->frame_left)
            malformed(s, "%llu bytes of a fixed-size value exceed the remaining %llu bytes",
                      (unsigned long long)s->skip_left, (unsigned long long)s->frame_left);
        else
            s->state = S_SKIP;
        return;
    default:
        malformed(s, "%s (wire type %u) are not supported",
                  s->wtype == 3 || s->wtype == 4 ? "groups" : "invalid wire types", s->wtype);
        return;
    }
}

/* A complete length of a length-delimited field. */
static void on_len(frame_scan *s, uint64_t len)
{
    if (len > INT32_MAX || len > s->frame_left) {
        malformed(s, "length %llu exceeds remaining %llu bytes", (unsigned long long)len,
                  (unsigned long long)s->frame_left);
        return;
    }
    if (s->field >= FRAME_HELLO && s->field <= FRAME_KIND_MAX) {
        if (s->r.kind != FRAME_NONE) {
            malformed(s, "a second body; the frame already has %s", frame_kind_name(s->r.kind));
            return;
        }
        s->r.kind = (enum frame_kind)s->field;
        s->r.body_len = len;
    }
    s->skip_left = len;
    s->state = S_SKIP;
}

int frame_scan_feed(frame_scan *s, const uint8_t *p, size_t n, size_t *used, frame_scan_result *r,
                    char *err, size_t errlen)
{
    size_t i = 0;
    uint64_t v;
    int k;

    for (;;) {
        /* A frame ends at a field boundary once its bytes are consumed
         * (or at once, for an empty one); a varint cut by the frame's end
         * is a fault of that frame. */
        if (s->state != S_PREFIX && s->frame_left == 0) {
            if (s->state != S_TAG && s->state != S_REST && !(s->state == S_SKIP && !s->skip_left))
                malformed(s, "the field runs past the end of the %llu-byte frame",
                          (unsigned long long)s->frame_len);
            else if (s->state == S_TAG && s->vlen)
                malformed(s, "a tag runs past the end of the %llu-byte frame",
                          (unsigned long long)s->frame_len);
            *r = s->r;
            s->state = S_PREFIX;
            s->vlen = 0;
            *used = i;
            return 1;
        }
        if (i == n)
            break;
        switch (s->state) {
        case S_PREFIX:
            k = varint_byte(s, p[i++], WIRE_VARINT_MAX, &v);
            if (k < 0) {
                pb_set_err(err, errlen,
                           "frame length prefix is not a valid varint (over 10 bytes or 64 bits)");
                *used = i;
                return PB_EPROTO;
            }
            if (k == 1) {
                /* As frame_split_next decides it (a frame must also fit
                 * in memory there, which a reader that keeps nothing does
                 * not need, but the two agree). */
                if (v > s->max_frame_bytes || v > SIZE_MAX - s->vlast) {
                    pb_set_err(err, errlen, "frame of %llu bytes exceeds the maximum of %llu bytes",
                               (unsigned long long)v, (unsigned long long)s->max_frame_bytes);
                    *used = i;
                    return PB_ETOOBIG;
                }
                begin_frame(s, v);
            }
            break;
        case S_TAG:
            if (s->vlen == 0)
                s->field_pos = s->frame_len - s->frame_left;
            s->frame_left--;
            k = varint_byte(s, p[i++], WIRE_TAG_MAX, &v);
            s->field = 0;
            if (k < 0)
                malformed(s, "tag varint at byte %llu is longer than %d bytes",
                          (unsigned long long)s->field_pos, WIRE_TAG_MAX);
            else if (k == 1)
                on_tag(s, v);
            break;
        case S_VALUE:
        case S_LEN:
            s->frame_left--;
            k = varint_byte(s, p[i++], s->state == S_LEN ? WIRE_LEN_MAX : WIRE_VARINT_MAX, &v);
            if (k < 0)
                malformed(s, "%s varint is malformed (too long or over 64 bits)",
                          s->state == S_LEN ? "length" : "value");
            else if (k == 1 && s->state == S_LEN)
                on_len(s, v);
            else if (k == 1) {
                if (s->field == 1)
                    s->r.id = v; /* the last id wins */
                s->state = S_TAG;
            }
            break;
        case S_SKIP: {
            /* Whole runs at once: this is where a flood of Publish bodies goes. */
            size_t take = n - i;
            if (take > s->skip_left)
                take = (size_t)s->skip_left;
            i += take;
            s->skip_left -= take;
            s->frame_left -= take;
            if (s->skip_left == 0)
                s->state = S_TAG;
            break;
        }
        default: { /* S_REST */
            size_t take = n - i;
            if (take > s->frame_left)
                take = (size_t)s->frame_left;
            i += take;
            s->frame_left -= take;
            break;
        }
        }
    }
    *used = i;
    return 0;
}
