/*
 * topic - the rules for a topic, the routing key of every event: checked by
 * the daemon on every published event (net, loop thread) and by the client
 * library before it sends one. Pure, any thread.
 */
#ifndef PB_TOPIC_H
#define PB_TOPIC_H

#include <stddef.h>
#include <stdint.h>

#define TOPIC_MAX_BYTES 255

/*
 * Check a topic: not empty, at most TOPIC_MAX_BYTES bytes, valid UTF-8, no
 * whitespace (Unicode White_Space: ASCII space, tab, CR, LF, VT, FF, U+0085,
 * U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000)
 * and no control characters (C0, DEL, C1). Returns 0 or PB_EINVAL.
 */
int topic_validate(const uint8_t *p, size_t n, char *err, size_t errlen);

#endif
