/*
 * Protobuf wire-format primitives: varints, tags, length-delimited slices,
 * skipping fields, UTF-8 checks. The frame and event walkers (frame.c) are
 * built on these so the hot path reads protobuf bytes without allocating.
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

/* --- decoding --- */

/*
 * Decode the varint at p[0..n). Returns the number of bytes it takes (1..10)
 * with *v set; 0 when the n bytes end before the varint does and fewer than
 * 10 were seen (need more); PB_EPROTO when 10 bytes do not end it or it
 * overflows 64 bits.
 */
int wire_varint_decode(const uint8_t *p, size_t n, uint64_t *v);

/* Cursor over the whole of p[0..n); base = p. */
void wire_cursor_init(wire_cursor *c, const uint8_t *p, size_t n);

/* Cursor over a nested slice, keeping the parent's base for byte positions. */
void wire_cursor_sub(wire_cursor *c, const wire_cursor *parent, wire_slice s);

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
 * Advance to the next field numbered `number`, skipping all others. Returns
 * 0 with *f set, PB_EEOF when there is none, PB_EPROTO (detail set) when a
 * field on the way is malformed.
 */
int wire_find(wire_cursor *c, uint32_t number, wire_field *f, char *detail);

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
 * Decode one UTF-8 sequence at p[0..n). Returns its length (1..4) with *cp
 * set, or 0 if it is not valid UTF-8.
 */
size_t wire_utf8_next(const uint8_t *p, size_t n, uint32_t *cp);

/* --- encoding --- */

/* Bytes the varint encoding of v takes (1..10). */
size_t wire_varint_size(uint64_t v);

/* Write v as a varint at out (room for wire_varint_size(v)); returns bytes written. */
size_t wire_put_varint(uint8_t *out, uint64_t v);

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
