/*
 * topic - what a topic may be (see topic.h). Pure, any thread: the loop
 * thread checks every published event's topic, the client library checks
 * before sending.
 */
#include "topic.h"

#include "pb_errors.h"
#include "wire.h"

/* Unicode White_Space, the characters a topic may not contain. */
static bool is_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0d) || cp == 0x20 || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f ||
           cp == 0x205f || cp == 0x3000;
}

static bool is_control(uint32_t cp)
{
    return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f);
}

/* Bytes below 0x80 a topic may contain: printable ASCII but space (0x21..0x7e). */
static bool ascii_topic_byte(uint8_t b)
{
    return (uint8_t)(b - 0x21) < 0x5e;
}

int topic_validate(const uint8_t *p, size_t n, char *err, size_t errlen)
{
    size_t i = 0;

    if (n == 0) {
        pb_set_err(err, errlen, "topic is empty");
        return PB_EINVAL;
    }
    if (n > TOPIC_MAX_BYTES) {
        pb_set_err(err, errlen, "topic has %zu bytes, the maximum is %d", n, TOPIC_MAX_BYTES);
        return PB_EINVAL;
    }
    /* Fast path: most topics are printable ASCII, each byte a whole
     * character that is neither space nor control. The loop below starts
     * where this stops (a character boundary) and decides the rest. */
    while (i < n && ascii_topic_byte(p[i]))
        i++;
    while (i < n) {
        uint32_t cp;
        size_t k = wire_utf8_next(p + i, n - i, &cp);

        if (k == 0) {
            pb_set_err(err, errlen, "topic is not valid UTF-8 at byte %zu", i);
            return PB_EINVAL;
        }
        if (is_space(cp)) {
            pb_set_err(err, errlen, "topic contains whitespace (U+%04X) at byte %zu", (unsigned)cp,
                       i);
            return PB_EINVAL;
        }
        if (is_control(cp)) {
            pb_set_err(err, errlen, "topic contains a control character (U+%04X) at byte %zu",
                       (unsigned)cp, i);
            return PB_EINVAL;
        }
        i += k;
    }
    return 0;
}
