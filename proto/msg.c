/*
 * msg - field-naming errors for the message walkers (see msg.h). Pure, any
 * thread.
 */
#include "msg.h"

#include <stdarg.h>
#include <stdio.h>

static const char *field_name(const struct msg_desc *d, uint32_t number)
{
    return number < d->n_fields ? d->fields[number] : "unknown";
}

const char *msg_wire_type_name(unsigned type)
{
    static const char *const names[] = {"varint",      "64-bit",    "length-delimited",
                                        "start group", "end group", "32-bit"};
    return type < 6 ? names[type] : "invalid";
}

int msg_fail(char *err, size_t errlen, const struct msg_desc *d, const wire_field *f,
             const char *fmt, ...)
{
    char detail[MSG_ERR_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (f->number == 0)
        pb_set_err(err, errlen, "%s: %s", d->name, detail);
    else
        pb_set_err(err, errlen, "%s field %u (%s) at byte %zu: %s", d->name, (unsigned)f->number,
                   field_name(d, f->number), f->pos, detail);
    return PB_EPROTO;
}

int msg_wrong_type(const wire_field *f, enum wire_type type, const struct msg_desc *d, char *err,
                   size_t errlen)
{
    return msg_fail(err, errlen, d, f, "wire type %u (%s), expected %u (%s)", f->type,
                    msg_wire_type_name(f->type), type, msg_wire_type_name(type));
}

int msg_bad_utf8(const wire_field *f, const wire_cursor *c, size_t bad, const struct msg_desc *d,
                 char *err, size_t errlen)
{
    return msg_fail(err, errlen, d, f, "invalid UTF-8 at byte %zu",
                    (size_t)(f->data.p - c->base) + bad);
}
