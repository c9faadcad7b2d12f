/*
 * Protobuf wire-format primitives (see wire.h). Pure functions, no
 * allocation; run on whichever thread calls them.
 *
 * Every read checks the remaining length before touching a byte: these
 * functions see untrusted network input first, so "never read past the end"
 * is the invariant everything else rests on.
 */
#include "wire.h"

#include "pb_errors.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

int wire_varint_decode(const uint8_t *p, size_t n, uint64_t *v)
{
    uint64_t x = 0;
    size_t lim = n < WIRE_VARINT_MAX ? n : WIRE_VARINT_MAX;

    for (size_t i = 0; i < lim; i++) {
        uint8_t b = p[i];
        /* The 10th byte holds bit 63 only: anything more overflows. */
        if (i == WIRE_VARINT_MAX - 1 && b > 1)
            return PB_EPROTO;
        x |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = x;
            return (int)i + 1;
        }
    }
    return n >= WIRE_VARINT_MAX ? PB_EPROTO : 0;
}

static size_t cursor_pos(const wire_cursor *c, const uint8_t *at)
{
    return (size_t)(at - c->base);
}

/*
 * Read a varint of at most `max` bytes from the cursor. `what` names it in
 * the message ("tag", "value", "length").
 */
static int read_varint(wire_cursor *c, size_t max, const char *what, uint64_t *v, char *detail)
{
    size_t rem = (size_t)(c->end - c->p);
    size_t lim = rem < max ? rem : max;
    int rc = wire_varint_decode(c->p, lim, v);

    if (rc > 0) {
        c->p += rc;
        return 0;
    }
    if (rc == 0 && lim == rem) {
        snprintf(detail, WIRE_DETAIL_MAX,
                 "%s varint at byte %zu runs past the end (%zu bytes left)", what,
                 cursor_pos(c, c->p), rem);
    } else if (rc == 0) {
        snprintf(detail, WIRE_DETAIL_MAX, "%s varint at byte %zu is longer than %zu bytes", what,
                 cursor_pos(c, c->p), max);
    } else {
        snprintf(detail, WIRE_DETAIL_MAX,
                 "%s varint at byte %zu is malformed (over 10 bytes or 64 bits)", what,
                 cursor_pos(c, c->p));
    }
    return PB_EPROTO;
}

/* wire_next for every shape wire_next_short does not take, and the errors. */
static int next_slow(wire_cursor *c, wire_field *f, char *detail)
{
    uint64_t tag;
    size_t rem;

    f->number = 0;
    f->pos = cursor_pos(c, c->p);
    if (read_varint(c, WIRE_TAG_MAX, "tag", &tag, detail) < 0)
        return PB_EPROTO;
    if (tag >> 3 == 0 || tag >> 3 > WIRE_FIELD_MAX) {
        snprintf(detail, WIRE_DETAIL_MAX, "tag at byte %zu has invalid field number %llu", f->pos,
                 (unsigned long long)(tag >> 3));
        return PB_EPROTO;
    }
    f->number = (uint32_t)(tag >> 3);
    f->type = (uint8_t)(tag & 7);
    rem = (size_t)(c->end - c->p);

    switch (f->type) {
    case WIRE_VARINT:
        return read_varint(c, WIRE_VARINT_MAX, "value", &f->value, detail);
    case WIRE_I64:
    case WIRE_I32: {
        size_t w = f->type == WIRE_I64 ? 8 : 4;
        if (rem < w) {
            snprintf(detail, WIRE_DETAIL_MAX, "%zu-byte fixed value needs %zu bytes, %zu remain", w,
                     w, rem);
            return PB_EPROTO;
        }
        f->value = 0;
        for (size_t i = 0; i < w; i++)
            f->value |= (uint64_t)c->p[i] << (8 * i);
        c->p += w;
        return 0;
    }
    case WIRE_LEN: {
        uint64_t len;
        if (read_varint(c, WIRE_LEN_MAX, "length", &len, detail) < 0)
            return PB_EPROTO;
        rem = (size_t)(c->end - c->p);
        if (len > INT32_MAX || len > rem) {
            snprintf(detail, WIRE_DETAIL_MAX, "length %llu exceeds remaining %zu bytes",
                     (unsigned long long)len, rem);
            return PB_EPROTO;
        }
        f->data.p = c->p;
        f->data.len = (size_t)len;
        c->p += len;
        return 0;
    }
    case WIRE_SGROUP:
    case WIRE_EGROUP:
        snprintf(detail, WIRE_DETAIL_MAX, "groups (wire type %u) are not supported", f->type);
        return PB_EPROTO;
    default:
        snprintf(detail, WIRE_DETAIL_MAX, "invalid wire type %u", f->type);
        return PB_EPROTO;
    }
}

int wire_next(wire_cursor *c, wire_field *f, char *detail)
{
    return wire_next_short(c, f) ? 0 : next_slow(c, f, detail);
}

int wire_find(wire_cursor *c, uint32_t number, wire_field *f, char *detail)
{
    while (!wire_cursor_done(c)) {
        int rc = wire_next_fast(c, f, detail);
        if (rc < 0)
            return rc;
        if (f->number == number)
            return 0;
    }
    return PB_EEOF;
}

int wire_find_slice(wire_cursor *c, uint32_t number, wire_slice *data)
{
    char detail[WIRE_DETAIL_MAX];
    wire_field f;
    int rc = wire_find(c, number, &f, detail);

    if (rc < 0)
        return rc;
    *data = f.data;
    return 0;
}

void wire_repeated_init(wire_repeated *r, const wire_cursor *msg, uint32_t number)
{
    r->msg = *msg;
    r->packed.p = r->packed.end = msg->p;
    r->packed.base = msg->base;
    r->number = number;
}

int wire_repeated_next(wire_repeated *r, uint64_t *v, char *detail)
{
    wire_field f;
    int rc;

    for (;;) {
        if (!wire_cursor_done(&r->packed))
            return read_varint(&r->packed, WIRE_VARINT_MAX, "packed value", v, detail);
        rc = wire_find(&r->msg, r->number, &f, detail);
        if (rc < 0)
            return rc;
        if (f.type == WIRE_VARINT) {
            *v = f.value;
            return 0;
        }
        if (f.type != WIRE_LEN) {
            snprintf(detail, WIRE_DETAIL_MAX, "wire type %u where a varint or packed run belongs",
                     f.type);
            return PB_EPROTO;
        }
        /* An empty packed run is legal; the loop moves on to the next field. */
        wire_cursor_sub(&r->packed, &r->msg, f.data);
    }
}

size_t wire_utf8_next(const uint8_t *p, size_t n, uint32_t *cp)
{
    uint8_t b = p[0];
    size_t len;
    uint32_t x, min;

    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    if (b >= 0xc2 && b <= 0xdf) {
        len = 2, x = b & 0x1f, min = 0x80;
    } else if (b >= 0xe0 && b <= 0xef) {
        len = 3, x = b & 0x0f, min = 0x800;
    } else if (b >= 0xf0 && b <= 0xf4) {
        len = 4, x = b & 0x07, min = 0x10000;
    } else {
        return 0; /* continuation byte, overlong lead (c0, c1) or beyond f4 */
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        x = (x << 6) | (p[i] & 0x3f);
    }
    if (x < min || x > 0x10ffff || (x >= 0xd800 && x <= 0xdfff))
        return 0;
    *cp = x;
    return len;
}

bool wire_utf8_valid(const uint8_t *p, size_t n, size_t *bad_at)
{
    size_t i = 0;

    while (i < n) {
        uint32_t cp;
        size_t k;
        uint64_t w;
        /* Fast paths: ASCII runs are the common case for topics and tags;
         * eight bytes at a time while no high bit is set. */
        if (n - i >= 8 && (memcpy(&w, p + i, 8), (w & 0x8080808080808080ull) == 0)) {
            i += 8;
            continue;
        }
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        k = wire_utf8_next(p + i, n - i, &cp);
        if (k == 0) {
            *bad_at = i;
            return false;
        }
        i += k;
    }
    return true;
}

size_t wire_tag_size(uint32_t number)
{
    return wire_varint_size((uint64_t)number << 3);
}

size_t wire_put_tag(uint8_t *out, uint32_t number, enum wire_type type)
{
    return wire_put_varint(out, ((uint64_t)number << 3) | (uint64_t)type);
}

size_t wire_len_field_size(uint32_t number, size_t len)
{
    return wire_tag_size(number) + wire_varint_size(len) + len;
}

size_t wire_varint_field_size(uint32_t number, uint64_t v)
{
    return wire_tag_size(number) + wire_varint_size(v);
}

size_t wire_put_len_field(uint8_t *out, uint32_t number, const void *p, size_t len)
{
    size_t n = wire_put_tag(out, number, WIRE_LEN);
    n += wire_put_varint(out + n, len);
    if (len > 0)
        memcpy(out + n, p, len);
    return n + len;
}

size_t wire_put_varint_field(uint8_t *out, uint32_t number, uint64_t v)
{
    size_t n = wire_put_tag(out, number, WIRE_VARINT);
    return n + wire_put_varint(out + n, v);
}

size_t wire_put_utf8_field(uint8_t *out, uint32_t number, const void *s, size_t len)
{
    const uint8_t *p = s;
    size_t k, i = 0;

    k = wire_put_tag(out, number, WIRE_LEN);
    k += wire_put_varint(out + k, len);
    if (wire_utf8_valid(p, len, &i)) {
        /* The common case, checked in one fast pass: copy as is. */
        if (len > 0)
            memcpy(out + k, p, len);
        return k + len;
    }
    /* Valid up to byte i: copy that, repair from there. */
    memcpy(out + k, p, i);
    k += i;
    while (i < len) {
        uint32_t cp;
        size_t m = wire_utf8_next(p + i, len - i, &cp);
        if (m == 0) {
            out[k++] = '?';
            i++;
        } else {
            memcpy(out + k, p + i, m);
            k += m;
            i += m;
        }
    }
    return k;
}
