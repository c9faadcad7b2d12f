/*
 * mirror_subject - topic <-> NATS subject mapping and header escaping (the
 * rules: mirror_subject.h). Runs on a mirror's thread; pure.
 */
#include "mirror_subject.h"

#include "pb_errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char hex[] = "0123456789ABCDEF";

static bool safe_byte(uint8_t b)
{
    if ((b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z') || (b >= '0' && b <= '9'))
        return true;
    return b != 0 && strchr("-_~:/=+@!", b) != NULL;
}

static int hex_value(char c, bool upper_only)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (!upper_only && c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int mirror_subject_from_topic(const char *prefix, const uint8_t *topic, size_t n, char *out,
                              size_t cap)
{
    size_t len = strlen(prefix), piece = 0; /* bytes of the current piece so far */
    if (len + 1 > cap)
        return PB_ETOOBIG;
    memcpy(out, prefix, len);
    for (size_t i = 0; i <= n; i++) {
        if (i == n || topic[i] == '.') {
            /* The piece ends: an empty one is the token "%". */
            if (len + (piece == 0 ? 1 : 0) + (i < n ? 1 : 0) + 1 > cap)
                return PB_ETOOBIG;
            if (piece == 0)
                out[len++] = '%';
            if (i < n)
                out[len++] = '.';
            piece = 0;
            continue;
        }
        uint8_t b = topic[i];
        if (safe_byte(b)) {
            if (len + 2 > cap)
                return PB_ETOOBIG;
            out[len++] = (char)b;
        } else {
            if (len + 4 > cap)
                return PB_ETOOBIG;
            out[len++] = '%';
            out[len++] = hex[b >> 4];
            out[len++] = hex[b & 15];
        }
        piece++;
    }
    out[len] = '\0';
    return (int)len;
}

__attribute__((format(printf, 3, 4))) static int bad(char *why, size_t n, const char *fmt, ...)
{
    if (why && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, n, fmt, ap);
        va_end(ap);
    }
    return PB_EINVAL;
}

int mirror_subject_to_topic(const char *prefix, const char *subject, uint8_t *out, size_t cap,
                            char *why, size_t whylen)
{
    size_t plen = strlen(prefix);
    if (strncmp(subject, prefix, plen) != 0)
        return bad(why, whylen, "subject \"%s\" does not start with \"%s\"", subject, prefix);
    const char *s = subject + plen;
    size_t len = 0;
    for (;;) {
        size_t tok = strcspn(s, ".");
        if (tok == 0)
            return bad(why, whylen, "subject \"%s\" has an empty token", subject);
        if (!(tok == 1 && s[0] == '%')) {
            for (size_t i = 0; i < tok; i++) {
                uint8_t b = (uint8_t)s[i];
                if (b == '%') {
                    /* Two digits must follow inside this token. */
                    int hi = i + 2 < tok ? hex_value(s[i + 1], true) : -1;
                    int lo = hi >= 0 ? hex_value(s[i + 2], true) : -1;
                    if (hi < 0 || lo < 0)
                        return bad(why, whylen,
                                   "subject \"%s\": '%%' must be followed by two uppercase hex "
                                   "digits",
                                   subject);
                    b = (uint8_t)(hi << 4 | lo);
                    /* A safe byte stays as it is and '.' separates pieces:
                     * the forward direction never escapes either. */
                    if (safe_byte(b) || b == '.')
                        return bad(why, whylen,
                                   "subject \"%s\": %%%02X escapes a byte that is never escaped",
                                   subject, b);
                    i += 2;
                } else if (!safe_byte(b)) {
                    return bad(why, whylen, "subject \"%s\": byte 0x%02X must be escaped as %%%02X",
                               subject, b, b);
                }
                if (len >= cap)
                    return PB_ETOOBIG;
                out[len++] = b;
            }
        }
        s += tok;
        if (!*s)
            break;
        if (len >= cap)
            return PB_ETOOBIG;
        out[len++] = '.';
        s++;
        if (!*s)
            return bad(why, whylen, "subject \"%s\" ends with '.'", subject);
    }
    return (int)len;
}

int mirror_header_escape(const uint8_t *p, size_t n, bool escape_eq, char *out, size_t cap)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = p[i];
        if (b < 0x20 || b == 0x7f || b == '%' || (escape_eq && b == '=')) {
            if (len + 4 > cap)
                return PB_ETOOBIG;
            out[len++] = '%';
            out[len++] = hex[b >> 4];
            out[len++] = hex[b & 15];
        } else {
            if (len + 2 > cap)
                return PB_ETOOBIG;
            out[len++] = (char)b;
        }
    }
    if (len + 1 > cap)
        return PB_ETOOBIG;
    out[len] = '\0';
    return (int)len;
}

int mirror_header_unescape(const char *s, size_t n, uint8_t *out, size_t cap)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        if (b == '%') {
            if (i + 2 >= n)
                return PB_EINVAL;
            int h = hex_value(s[i + 1], false), l = hex_value(s[i + 2], false);
            if (h < 0 || l < 0)
                return PB_EINVAL;
            b = (uint8_t)(h << 4 | l);
            i += 2;
        }
        if (len >= cap)
            return PB_ETOOBIG;
        out[len++] = b;
    }
    return (int)len;
}

bool mirror_subject_under(const char *prefix, const char *subject)
{
    size_t plen = strlen(prefix);
    return subject && plen > 0 && prefix[plen - 1] == '.' && strlen(subject) > plen &&
           strncmp(subject, prefix, plen) == 0;
}
