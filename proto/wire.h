/*
 * Protobuf wire-format primitives: varints, tags, length-delimited slices,
 * skipping fields, UTF-8 checks. The frame and event walkers (frame.c,
 * event.c) are built on these so the hot path reads protobuf bytes without
 * allocating.
 *
 * Pure functions over caller-owned buffers: no allocation, no global state,
 * safe to call from any thread (the loop thread, writer threads, clients).
 *
 * Reading is stricter than protobuf-c in a few corners, always in the
 * direction "what we accept, every protobuf library accepts":
 *   - a varint longer than 10 bytes or overflowing 64 bits is refused;
 *   - a tag longer than 5 bytes, field number 0 or > 2^29-1 is refused;
 *   - a length prefix longer than 5 bytes or above INT32_MAX is refused;
 *   - groups (wire types 3 and 4) and wire types 6 and 7 are refused.
 */
#ifndef PB_WIRE_H
#define PB_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum wire_type {
    WIRE_VARINT = 0,
    WIRE_I64 = 1,
    WIRE_LEN = 2,
    WIRE_SGROUP = 3,
    WIRE_EGROUP = 4,
    WIRE_I32 = 5,
};

#define WIRE_VARINT_MAX 10         /* bytes in the longest varint (a 64-bit value) */
#define WIRE_TAG_MAX    5          /* bytes in the longest tag we accept */
#define WIRE_LEN_MAX    5          /* bytes in the longest length prefix we accept */
#define WIRE_FIELD_MAX  536870911u /* largest field number, 2^29 - 1 */
#define WIRE_DETAIL_MAX 160        /* enough for any message wire_next writes */

/* A read-only byte range inside a caller's buffer. Not NUL-terminated. */
typedef struct wire_slice {
    const uint8_t *p;
    size_t len;
} wire_slice;

/*
 * A read position in [p, end). `base` is the start of the outermost buffer
 * being walked, so byte positions in error messages are relative to what the
 * caller passed in, even inside nested messages.
 */
typedef struct wire_cursor {
    const uint8_t *p;
    const uint8_t *end;
    const uint8_t *base;
} wire_cursor;

/* One field read by wire_next. */
typedef struct wire_field {
    uint32_t number; /* field number; 0 if the tag itself was bad */
    uint8_t type;    /* enum wire_type */
    size_t pos;      /* byte position of the tag, relative to cursor base */
    uint64_t value;  /* WIRE_VARINT, WIRE_I64, WIRE_I32 (little-endian decoded) */
    wire_slice data; /* WIRE_LEN: the payload, without its length prefix */
} wire_field;

/* Byte-for-byte equality of a slice and p[0..n) (p may be NULL when n is 0). */
static inline bool wire_slice_eq_bytes(wire_slice a, const void *p, size_t n)
{
    return a.len == n && (n == 0 || memcmp(a.p, p, n) == 0);
}

/* Byte-for-byte equality of two slices. */
static inline bool wire_slice_eq(wire_slice a, wire_slice b)
{
    return wire_slice_eq_bytes(a, b.p, b.len);
}

/* --- decoding --- */

/*
 * Decode the varint at p[0..n). Returns the number of bytes it takes (1..10)
 * with *v set; 0 when the n bytes end before the varint does and fewer than
 * 10 were seen (need more); PB_EPROTO when 10 bytes do not end it or it
 * overflows 64 bits.
 */
int wire_varint_decode(const uint8_t *p, size_t n, uint64_t *v);

/* Cursor over the whole of p[0..n); base = p. */
static inline void wire_cursor_init(wire_cursor *c, const uint8_t *p, size_t n)
{
    c->p = p;
    c->end = n ? p + n : p; /* p may be NULL for an empty buffer */
    c->base = p;
}

/* Cursor over a nested slice, keeping the parent's base for byte positions. */
static inline void wire_cursor_sub(wire_cursor *c, const wire_cursor *parent, wire_slice s)
{
    c->p = s.p;
    c->end = s.len ? s.p + s.len : s.p;
    c->base = parent->base;
}

static inline bool wire_cursor_done(const wire_cursor *c)
{
    return c->p >= c->end;
}

/*
 * Read the next field (tag and value) and advance past it. Returns 0, or
 * PB_EPROTO with a description in detail[WIRE_DETAIL_MAX] (no field name, no
 * "field N" prefix: the caller knows the message and adds those; f->number
 * and f->pos are set whenever the tag itself was readable).
 */
int wire_next(wire_cursor *c, wire_field *f, char *detail);

/*
 * Decodes a varint of at most `max` bytes (max <= 9, so no 64-bit overflow
 * is possible) from p[0..n). Returns its length with *v set, or 0 when it
 * does not end within min(n, max) bytes: the caller then takes the slow,
 * exact path (wire_varint_decode / wire_next), which also words the error.
 */
static inline size_t wire_varint_fast(const uint8_t *p, size_t n, size_t max, uint64_t *v)
{
    uint64_t x = 0;
    size_t lim = n < max ? n : max;

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (n >= 8) {
        /* Eight bytes at once, without a branch per byte (varint lengths vary
         * from field to field, so a byte loop mispredicts): the first byte
         * without its high bit ends the varint; the 7-bit groups are then
         * packed together in three steps. */
        uint64_t w, stop;
        memcpy(&w, p, sizeof w);
        stop = ~w & 0x8080808080808080ull;
        if (stop) {
            size_t len = ((size_t)__builtin_ctzll(stop) >> 3) + 1;
            if (len > max)
                return 0;
            w &= (~0ull >> (64 - 8 * len)) & 0x7f7f7f7f7f7f7f7full;
            w = (w & 0x007f007f007f007full) | ((w & 0x7f007f007f007f00ull) >> 1);
            w = (w & 0x00003fff00003fffull) | ((w & 0x3fff00003fff0000ull) >> 2);
            w = (w & 0x000000000fffffffull) | ((w & 0x0fffffff00000000ull) >> 4);
            *v = w;
            return len;
        }
    }
#endif

    for (size_t i = 0; i < lim; i++) {
        x |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            *v = x;
            return i + 1;
        }
    }
    return 0;
}

/*
 * The inline part of wire_next: reads the field at the cursor if it has
 * one of the shapes nearly every field has - a one-byte tag (field numbers
 * 1..15) with a varint value of up to 9 bytes, or with a length prefix of up
 * to 4 bytes whose payload fits - and returns true; returns false, with
 * nothing changed, for everything else (longer tags, fixed-width values, and
 * every malformed or truncated field), which wire_next then reads at the
 * same position. So a caller gets exactly wire_next's results and errors.
 */
static inline bool wire_next_short(wire_cursor *c, wire_field *f)
{
    const uint8_t *p = c->p;
    size_t rem = (size_t)(c->end - p);
    uint64_t v;
    size_t k;

    /* rem >= 2: a tag byte plus at least one byte of value or length. */
    if (rem < 2 || p[0] < 8 || p[0] >= 0x80)
        return false;
    if ((p[0] & 7) == WIRE_VARINT && (k = wire_varint_fast(p + 1, rem - 1, 9, &v)) > 0) {
        f->number = (uint32_t)(p[0] >> 3);
        f->type = WIRE_VARINT;
        f->pos = (size_t)(p - c->base);
        f->value = v;
        c->p = p + 1 + k;
        return true;
    }
    /* A 4-byte length is below 2^28, so only "fits in what remains" is left
     * to check (wire_next also refuses lengths above INT32_MAX). */
    if ((p[0] & 7) == WIRE_LEN && (k = wire_varint_fast(p + 1, rem - 1, 4, &v)) > 0 &&
        v <= rem - 1 - k) {
        f->number = (uint32_t)(p[0] >> 3);
        f->type = WIRE_LEN;
        f->pos = (size_t)(p - c->base);
        f->data.p = p + 1 + k;
        f->data.len = (size_t)v;
        c->p = p + 1 + k + v;
        return true;
    }
    return false;
}

/* wire_next with its common case inline (see wire_next_short): for the
 * per-event walkers on the hot paths. Same results, same errors. */
static inline int wire_next_fast(wire_cursor *c, wire_field *f, char *detail)
{
    return wire_next_short(c, f) ? 0 : wire_next(c, f, detail);
}

/*
 * Advance to the next field numbered `number`, skipping all others. Returns
 * 0 with *f set, PB_EEOF when there is none, PB_EPROTO (detail set) when a
 * field on the way is malformed.
 */
int wire_find(wire_cursor *c, uint32_t number, wire_field *f, char *detail);

/* The bytes of the next field numbered `number` (a message already
 * checked, so no error detail): 0, PB_EEOF when there is none, PB_EPROTO. */
int wire_find_slice(wire_cursor *c, uint32_t number, wire_slice *data);

/*
 * Iterator over a repeated varint field that may arrive packed (one LEN
 * field holding varints), unpacked (one VARINT field per value), or both
 * mixed, as protobuf requires decoders to accept.
 */
typedef struct wire_repeated {
    wire_cursor msg;    /* the enclosing message, advanced field by field */
    wire_cursor packed; /* the current packed run, empty when none */
    uint32_t number;
} wire_repeated;

void wire_repeated_init(wire_repeated *r, const wire_cursor *msg, uint32_t number);

/* 0 with *v set; PB_EEOF at the end; PB_EPROTO (detail set) when malformed. */
int wire_repeated_next(wire_repeated *r, uint64_t *v, char *detail);

/*
 * Check that p[0..n) is valid UTF-8 (no overlongs, no surrogates, nothing
 * above U+10FFFF). Returns true, or false with *bad_at set to the byte
 * position of the first offending sequence.
 */
bool wire_utf8_valid(const uint8_t *p, size_t n, size_t *bad_at);

/*
 * Whether p[0..n) is ASCII, for 8 <= n <= 40 (false otherwise, and false
 * says nothing): up to five overlapping 8-byte words, no loop, no call.
 * Common topics and event ids (a UUID's text, 36 bytes, included) pass
 * here before wire_utf8_valid is called for them on the publish path.
 */
static inline bool wire_ascii_short(const uint8_t *p, size_t n)
{
    uint64_t a, b, c, d, e;

    if (n < 8 || n > 40)
        return false;
    memcpy(&a, p, 8);
    memcpy(&b, p + n - 8, 8);
    if (n > 16) { /* [0, 16) and [n - 16, n) */
        memcpy(&c, p + 8, 8);
        memcpy(&d, p + n - 16, 8);
        a |= c | d;
    }
    if (n > 32) { /* and [16, 24): n - 16 <= 24 */
        memcpy(&e, p + 16, 8);
        a |= e;
    }
    return ((a | b) & 0x8080808080808080ull) == 0;
}

/*
 * Decode one UTF-8 sequence at p[0..n). Returns its length (1..4) with *cp
 * set, or 0 if it is not valid UTF-8.
 */
size_t wire_utf8_next(const uint8_t *p, size_t n, uint32_t *cp);

/* --- encoding --- */

/* Bytes the varint encoding of v takes (1..10). Inline: encoders call it
 * per event. */
static inline size_t wire_varint_size(uint64_t v)
{
    /* 1 + floor(bits / 7), with v | 1 so that 0 takes one byte too. */
    return 1 + (size_t)(63 - __builtin_clzll(v | 1)) / 7;
}

/* Write v as a varint at out (room for wire_varint_size(v)); returns bytes written. */
static inline size_t wire_put_varint(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

/* Bytes a tag takes / write a tag; number must be 1..WIRE_FIELD_MAX. */
size_t wire_tag_size(uint32_t number);
size_t wire_put_tag(uint8_t *out, uint32_t number, enum wire_type type);

/* Bytes of a whole LEN field (tag + length prefix + payload of len bytes). */
size_t wire_len_field_size(uint32_t number, size_t len);

/* Bytes of a whole VARINT field (tag + varint). */
size_t wire_varint_field_size(uint32_t number, uint64_t v);

/*
 * Write tag + length prefix + payload at out; returns bytes written. The
 * caller has checked the room with wire_len_field_size.
 */
size_t wire_put_len_field(uint8_t *out, uint32_t number, const void *p, size_t len);

/* Write tag + varint at out; returns bytes written. */
size_t wire_put_varint_field(uint8_t *out, uint32_t number, uint64_t v);

/*
 * Like wire_put_len_field for a proto3 `string`: bytes that are not valid
 * UTF-8 are written as '?' (same length, so wire_len_field_size still
 * holds), so a strict decoder never refuses the message over them.
 */
size_t wire_put_utf8_field(uint8_t *out, uint32_t number, const void *s, size_t len);

#endif
