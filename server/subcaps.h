/*
 * subcaps - the caps on one Subscribe request (issue 10, F1): how many
 * patterns, tag filters and `offsets` entries it may carry, and how long a
 * pattern may be. The registry (sub.c) refuses a request over a cap before
 * any per-entry work; the server Hello announces them in Limits (session.c)
 * so a client can stay within them.
 *
 * Threads: the type only (read-only after start-up).
 */
#ifndef PB_SUBCAPS_H
#define PB_SUBCAPS_H

#include <stdint.h>

typedef struct sub_caps {
    uint32_t max_patterns;      /* max_subscribe_patterns */
    uint32_t max_pattern_bytes; /* max_pattern_bytes */
    uint32_t max_tags;          /* max_subscribe_tags */
    uint32_t max_offsets;       /* max_subscribe_offsets */
} sub_caps;

/* Defaults: far above what a reasonable subscriber sends, low enough that
 * the checks and compiles one request costs stay in the milliseconds.
 * Offsets: one per partition, and max_partitions is at most 4,096 by
 * default. A topic is at most 255 bytes, so is a useful pattern, roughly. */
#define SUB_CAPS_PATTERNS_DEFAULT      256
#define SUB_CAPS_PATTERN_BYTES_DEFAULT 1024
#define SUB_CAPS_TAGS_DEFAULT          64
#define SUB_CAPS_OFFSETS_DEFAULT       4096

#endif
