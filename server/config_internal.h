/*
 * config_internal - what config.c (the conf file's lines, its sections,
 * [partition NAME], the whole-file checks) and config_server.c (the
 * [server] keys and the setters of single values) share while one file is
 * parsed, and config_why, which every config_*.c parser uses. Not for other
 * modules: they use config.h.
 *
 * Threads: runs once on the main thread at start-up, with config.c.
 */
#ifndef PB_CONFIG_INTERNAL_H
#define PB_CONFIG_INTERNAL_H

#include "config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define KIB 1024ULL
#define MIB (1024ULL * KIB)
#define GIB (1024ULL * MIB)
#define TIB (1024ULL * GIB)

/* Formats a parse error into why[0..n) (nothing when n is 0); returns
 * PB_EINVAL, so a parser can `return config_why(why, n, ...)`. */
__attribute__((format(printf, 3, 4))) int config_why(char *why, size_t n, const char *fmt, ...);

enum section_kind { SEC_NONE, SEC_SERVER, SEC_PARTITION, SEC_MIRROR, SEC_USER };

/* [server] keys; the enum names the ones that cross-checks refer to. */
enum server_key {
    SK_MAX_EVENT_BYTES,
    SK_MAX_FRAME_BYTES,
    SK_SUBSCRIBER_QUEUE_BYTES,
    SK_SUBSCRIBER_QUEUE_TOTAL_BYTES,
    SK_OTHERS
};

/* V_FN: a value with a parser of its own (config_values.c). */
enum value_kind {
    V_U32,
    V_SIZE,
    V_STRING,
    V_LISTEN,
    V_METRICS_LISTEN,
    V_FSYNC,
    V_LOG_LEVEL,
    V_AUTH,
    V_BOOL,
    V_MODE,
    V_FN
};

struct key_def {
    const char *name;
    enum value_kind kind;
    size_t offset; /* of the field in pb_config */
    uint64_t min, max;
    config_value_fn parse; /* V_FN */
};

/* The [server] keys, SK_COUNT of them (config_server.c). */
#define SK_COUNT 58
extern const struct key_def config_server_keys[];

enum rule_key {
    RK_MATCH,
    RK_SEGMENT_BYTES,
    RK_ROTATE_EVERY,
    RK_UTC_OFFSET,
    RK_RETAIN_AGE,
    RK_RETAIN_BYTES,
    RK_COMPRESS,
    RK_COMPRESS_LEVEL,
    RK_COUNT
};

struct parse_ctx {
    pb_config *cfg;
    const char *name; /* file name for messages */

    /* Line source: a FILE or an in-memory text. */
    FILE *file;
    const char *text;
    size_t text_pos;
    char *linebuf; /* getline buffer, reused */
    size_t linecap;
    int lineno; /* lines handed to inih so far = the line inih is on */

    enum section_kind sec;
    int server_line; /* line of [server], 0 if none yet */
    int server_key_line[SK_COUNT];
    int rule_key_line[RK_COUNT]; /* for the current [partition] */
    size_t rules_cap;
    size_t mirrors_cap;
    size_t users_cap;

    char *err;
    size_t errlen;
    int err_line; /* 0: no error yet */
    int rc;
};

/* Records the first error as "name:line: message"; later ones are
 * consequences of it and are dropped. Returns 0 for inih's "failed". */
__attribute__((format(printf, 4, 5))) int config_fail_at(struct parse_ctx *c, int line, int rc,
                                                         const char *fmt, ...);

/* Setters of one value into *dst, for [server] and [partition NAME] keys:
 * 1 when set, 0 (the error recorded by config_fail_at) when not. */
int config_set_string(struct parse_ctx *c, char **dst, const char *key, const char *value);
int config_set_size(struct parse_ctx *c, uint64_t *dst, const char *key, const char *value,
                    uint64_t min, uint64_t max);
/* A value parsed by fn (config_values.c), which words its own errors. */
int config_set_fn(struct parse_ctx *c, config_value_fn fn, const char *key, const char *value,
                  void *dst);

/* One [server] key, d being its entry of config_server_keys: 1 or 0 as
 * the setters. */
int config_server_key(struct parse_ctx *c, const struct key_def *d, const char *value);

#endif
