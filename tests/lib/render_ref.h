/*
 * render_ref - the CLI's event renderer as it was before the fast path
 * (client/cli/render.c at commit ab7a7a2: protobuf-c's unpack per event,
 * JSON built with json-c), kept unchanged apart from its name as the
 * reference that tests/unit/test_render_compat.c holds the new renderer to:
 * same bytes, same return code, same message.
 *
 * Threads: any (no shared state).
 */
#ifndef PB_TEST_RENDER_REF_H
#define PB_TEST_RENDER_REF_H

#include "render.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* pb_render_event's contract (render.h), the old implementation. */
int ref_render_event(FILE *out, pb_render_format fmt, const char *partition, uint64_t offset,
                     const uint8_t *event, size_t len, char *err, size_t errlen);

#endif
