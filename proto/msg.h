/*
 * msg - the pieces every hand-written message walker shares (frame.c for
 * the frames, event.c for EncapsulatedEvent): a descriptor that names a
 * message's fields, errors worded "<Message> field N (name) at byte B:
 * <detail>", and the typed reads (next field, wire type, UTF-8 string)
 * that produce them.
 *
 * Internal to proto/: not part of any public header. Pure functions over
 * caller-owned bytes, no allocation, any thread.
 */
#ifndef PB_MSG_H
#define PB_MSG_H

#include "wire.h"

#include "pb_errors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A message type, for naming fields in errors. */
struct msg_desc {
    const char *name;
    const char *const *fields; /* indexed by field number; [0] unused */
    size_t n_fields;
};

#define MSG_FIELDS(...)  ((const char *const[]){NULL, __VA_ARGS__})
#define MSG_NFIELDS(...) (sizeof((const char *const[]){NULL, __VA_ARGS__}) / sizeof(const char *))
/* static const struct msg_desc X_D = MSG_DESC("X", "field1", "field2", ...); */
#define MSG_DESC(msg, ...)                                                                         \
    {                                                                                              \
        msg, MSG_FIELDS(__VA_ARGS__), MSG_NFIELDS(__VA_ARGS__)                                     \
    }

#define MSG_ERR_MAX 384 /* room for a nested message: event > timestamp > detail */

/* "varint", "length-delimited", ...; "invalid" for 6 and 7. */
const char *msg_wire_type_name(unsigned type);

/*
 * "<Message> field N (name) at byte B: <detail>", or "<Message>: <detail>"
 * when the tag itself could not be read (f->number 0). Returns PB_EPROTO.
 */
int msg_fail(char *err, size_t errlen, const struct msg_desc *d, const wire_field *f,
             const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* The failing halves of msg_want_type and msg_want_string (out of line:
 * the walkers inline the checks, not the messages). */
int msg_wrong_type(const wire_field *f, enum wire_type type, const struct msg_desc *d, char *err,
                   size_t errlen);
int msg_bad_utf8(const wire_field *f, const wire_cursor *c, size_t bad, const struct msg_desc *d,
                 char *err, size_t errlen);

/* The next field of a message of type d: wire_next with its common case
 * inline and its errors worded for d. 0 or PB_EPROTO. */
static inline int msg_next(wire_cursor *c, wire_field *f, const struct msg_desc *d, char *err,
                           size_t errlen)
{
    char detail[WIRE_DETAIL_MAX];

    if (wire_next_short(c, f))
        return 0;
    if (wire_next(c, f, detail) < 0)
        return msg_fail(err, errlen, d, f, "%s", detail);
    return 0;
}

/* 0 if the field has wire type `type`, else PB_EPROTO naming both. */
static inline int msg_want_type(const wire_field *f, enum wire_type type, const struct msg_desc *d,
                                char *err, size_t errlen)
{
    return f->type == type ? 0 : msg_wrong_type(f, type, d, err, errlen);
}

/* A LEN field that proto3 declares `string`: it must be UTF-8. */
static inline int msg_want_string(const wire_field *f, const wire_cursor *c,
                                  const struct msg_desc *d, char *err, size_t errlen)
{
    size_t bad;

    if (msg_want_type(f, WIRE_LEN, d, err, errlen) < 0)
        return PB_EPROTO;
    if (wire_ascii_short(f->data.p, f->data.len) || wire_utf8_valid(f->data.p, f->data.len, &bad))
        return 0;
    return msg_bad_utf8(f, c, bad, d, err, errlen);
}

#endif
