/*
 * config_server - the [server] section of the configuration: the table of
 * its keys (name, kind, field of pb_config, range) and the setters that
 * put one value into pb_config, which [partition NAME] keys use too
 * (config.c). Messages go through config_fail_at ("path:line: reason").
 *
 * Threads: runs once on the main thread at start-up, with config.c.
 */
#include "config.h"
#include "config_internal.h"

#include "hostport.h"
#include "pb_errors.h"

#include <stdlib.h>
#include <string.h>

const struct key_def config_server_keys[] = {
    [SK_MAX_EVENT_BYTES] = {"max_event_bytes", V_SIZE, offsetof(pb_config, max_event_bytes), 64,
                            GIB},
    [SK_MAX_FRAME_BYTES] = {"max_frame_bytes", V_SIZE, offsetof(pb_config, max_frame_bytes),
                            64 + CONFIG_FRAME_OVERHEAD, GIB + CONFIG_FRAME_OVERHEAD},
    [SK_SUBSCRIBER_QUEUE_BYTES] = {"subscriber_queue_bytes", V_SIZE,
                                   offsetof(pb_config, subscriber_queue_bytes), 64, 16 * GIB},
    [SK_SUBSCRIBER_QUEUE_TOTAL_BYTES] = {"subscriber_queue_total_bytes", V_SIZE,
                                         offsetof(pb_config, subscriber_queue_total_bytes), 4 * KIB,
                                         1024 * GIB},
    {"reply_queue_total_bytes", V_SIZE, offsetof(pb_config, reply_queue_total_bytes), 64 * KIB,
     1024 * GIB},
    {"max_partial_frame_bytes", V_SIZE, offsetof(pb_config, max_partial_frame_bytes), 1 * MIB,
     1024 * GIB},
    {"listen", V_LISTEN, 0, 0, 0},
    {"metrics_listen", V_METRICS_LISTEN, 0, 0, 0},
    {"data_dir", V_STRING, offsetof(pb_config, data_dir), 0, 0},
    {"fsync", V_FSYNC, 0, 0, 0},
    {"fsync_interval_ms", V_U32, offsetof(pb_config, fsync_interval_ms), 1, 3600000},
    {"threads", V_U32, offsetof(pb_config, threads), 1, 4096}, /* older name */
    {"max_subscriptions", V_U32, offsetof(pb_config, threads), 1, 65535},
    {"max_subscriptions_per_address", V_U32, offsetof(pb_config, max_subscriptions_per_address), 0,
     65535},
    {"max_connections", V_U32, offsetof(pb_config, max_connections), 1, 1000000},
    {"write_deadline_ms", V_U32, offsetof(pb_config, write_deadline_ms), 1, 86400000},
    {"idle_timeout_ms", V_U32, offsetof(pb_config, idle_timeout_ms), 1, 86400000},
    {"quiet_timeout_ms", V_U32, offsetof(pb_config, quiet_timeout_ms), 0, 86400000},
    {"handshake_timeout_ms", V_U32, offsetof(pb_config, handshake_timeout_ms), 1, 86400000},
    {"max_handshaking", V_U32, offsetof(pb_config, max_handshaking), 1, 1000000},
    {"log_level", V_LOG_LEVEL, 0, 0, 0},
    {"route_cache_entries", V_U32, offsetof(pb_config, route_cache_entries), 16, 1U << 24},
    {"max_batch_events", V_U32, offsetof(pb_config, max_batch_events), 1, 1U << 24},
    {"max_partitions", V_U32, offsetof(pb_config, max_partitions), 1, 1000000},
    {"partition_idle_ms", V_U32, offsetof(pb_config, partition_idle_ms), 0, 86400000},
    {"max_topics_in_memory", V_U32, offsetof(pb_config, max_topics_in_memory), 64, 1U << 26},
    {"max_subscribe_patterns", V_U32, offsetof(pb_config, max_subscribe_patterns), 1, 65536},
    {"max_pattern_bytes", V_U32, offsetof(pb_config, max_pattern_bytes), 16, 65536},
    {"max_subscribe_tags", V_U32, offsetof(pb_config, max_subscribe_tags), 1, 65536},
    {"max_subscribe_offsets", V_U32, offsetof(pb_config, max_subscribe_offsets), 1, 1000000},
    {"retain_age", V_FN, offsetof(pb_config, retain_age_s), 0, 0, config_value_retain_age},
    {"retain_bytes", V_FN, offsetof(pb_config, retain_bytes), 0, 0, config_value_retain_bytes},
    {"compress", V_FN, offsetof(pb_config, compress), 0, 0, config_value_compress},
    {"compress_level", V_FN, offsetof(pb_config, compress_level), 0, 0,
     config_value_compress_level},
    {"min_free_bytes", V_FN, offsetof(pb_config, min_free_bytes), 0, 0, config_value_min_free},
    {"page_cache_bytes", V_SIZE, offsetof(pb_config, page_cache_bytes), 0, 1024 * GIB},
    {"direct_write_bytes", V_SIZE, offsetof(pb_config, direct_write_bytes), 0, 1024 * GIB},
    {"recycle_segments", V_BOOL, offsetof(pb_config, recycle_segments), 0, 0},
    {"dedup_window_ms", V_U32, offsetof(pb_config, dedup_window_ms), 0, 86400000},
    {"dedup_max_entries", V_U32, offsetof(pb_config, dedup_max_entries), 1,
     CONFIG_DEDUP_MAX_ENTRIES},
    {"auth", V_AUTH, 0, 0, 0},
    {"allow_anonymous_remote", V_BOOL, offsetof(pb_config, allow_anonymous_remote), 0, 0},
    {"auth_failure_delay_ms", V_U32, offsetof(pb_config, auth_failure_delay_ms), 0, 60000},
    {"data_mode", V_MODE, 0, 0, 0},
    {"tls_cert", V_STRING, offsetof(pb_config, tls_cert), 0, 0},
    {"tls_key", V_STRING, offsetof(pb_config, tls_key), 0, 0},
    {"tls_client_ca", V_STRING, offsetof(pb_config, tls_client_ca), 0, 0},
    {"follow", V_STRING, offsetof(pb_config, follow), 0, 0},
    {"follow_user", V_STRING, offsetof(pb_config, follow_user), 0, 0},
    {"follow_password", V_STRING, offsetof(pb_config, follow_password), 0, 0},
    {"follow_password_file", V_STRING, offsetof(pb_config, follow_password_file), 0, 0},
    {"follow_tls", V_BOOL, offsetof(pb_config, follow_tls), 0, 0},
    {"follow_ca", V_STRING, offsetof(pb_config, follow_ca), 0, 0},
    {"follow_tls_cert", V_STRING, offsetof(pb_config, follow_tls_cert), 0, 0},
    {"follow_tls_key", V_STRING, offsetof(pb_config, follow_tls_key), 0, 0},
    {"min_standby_acks", V_U32, offsetof(pb_config, min_standby_acks), 0, 1},
    {"standby_timeout_ms", V_U32, offsetof(pb_config, standby_timeout_ms), 1, 3600000},
    {"standby_timeout", V_FN, offsetof(pb_config, standby_timeout_local), 0, 0,
     config_value_standby_timeout},
};

_Static_assert(sizeof config_server_keys / sizeof config_server_keys[0] == SK_COUNT,
               "SK_COUNT (config_internal.h) must be the number of [server] keys");

/* ---- [server] ---- */

int config_set_string(struct parse_ctx *c, char **dst, const char *key, const char *value)
{
    if (!*value)
        return config_fail_at(c, c->lineno, PB_EINVAL, "%s: must not be empty", key);
    char *copy = strdup(value);
    if (!copy)
        return config_fail_at(c, c->lineno, PB_ENOMEM, "%s: out of memory", key);
    free(*dst);
    *dst = copy;
    return 1;
}

/* The host must be numeric (libuv binds to an address, and resolving names
 * at start-up would hide which one is used); port 0 = any free port. */
static int set_listen(struct parse_ctx *c, const char *key, const char *value, char **host,
                      uint16_t *port, bool *ipv6)
{
    hostport hp;
    char why[512];
    if (hostport_parse(value, HOSTPORT_NUMERIC | HOSTPORT_PORT_ZERO, &hp, why, sizeof why) < 0)
        return config_fail_at(c, c->lineno, PB_EINVAL, "%s: %s", key, why);
    if (!config_set_string(c, host, key, hp.host))
        return 0;
    *port = hp.port;
    *ipv6 = hp.bracketed;
    return 1;
}

static int set_u32(struct parse_ctx *c, uint32_t *dst, const char *key, const char *value,
                   uint32_t min, uint32_t max)
{
    uint64_t v;
    int rc = config_parse_uint(value, &v);
    if (rc == PB_EINVAL)
        return config_fail_at(c, c->lineno, rc,
                              "%s: \"%s\" is not a whole number (expected %u..%u)", key, value, min,
                              max);
    if (rc != 0 || v < min || v > max)
        return config_fail_at(c, c->lineno, PB_EINVAL, "%s: %s is out of range (expected %u..%u)",
                              key, value, min, max);
    *dst = (uint32_t)v;
    return 1;
}

int config_set_size(struct parse_ctx *c, uint64_t *dst, const char *key, const char *value,
                    uint64_t min, uint64_t max)
{
    uint64_t v;
    int rc = config_parse_size(value, &v);
    if (rc == PB_EINVAL)
        return config_fail_at(c, c->lineno, rc, "%s: \"%s\" is not a size (use e.g. 512K, 64M, 1G)",
                              key, value);
    if (rc != 0 || v < min || v > max)
        return config_fail_at(c, c->lineno, PB_EINVAL,
                              "%s: %s is out of range (expected %llu..%llu bytes)", key, value,
                              (unsigned long long)min, (unsigned long long)max);
    *dst = v;
    return 1;
}

/* A value parsed by fn (config_values.c), which words its own errors. */
int config_set_fn(struct parse_ctx *c, config_value_fn fn, const char *key, const char *value,
                  void *dst)
{
    char why[300];
    int rc = fn(key, value, dst, why, sizeof why);
    return rc < 0 ? config_fail_at(c, c->lineno, rc, "%s", why) : 1;
}

/* Looks `value` up in a NULL-terminated list of words. */
static int set_enum(struct parse_ctx *c, int *dst, const char *key, const char *value,
                    const char *const *words, const char *expected)
{
    for (int i = 0; words[i]; i++) {
        if (strcmp(value, words[i]) == 0) {
            *dst = i;
            return 1;
        }
    }
    return config_fail_at(c, c->lineno, PB_EINVAL, "%s: \"%s\" is not one of %s", key, value,
                          expected);
}

int config_server_key(struct parse_ctx *c, const struct key_def *d, const char *value)
{
    char *field = (char *)c->cfg + d->offset;
    int e = 0;

    switch (d->kind) {
    case V_LISTEN:
        return set_listen(c, d->name, value, &c->cfg->listen_host, &c->cfg->listen_port,
                          &c->cfg->listen_ipv6);
    case V_METRICS_LISTEN:
        return set_listen(c, d->name, value, &c->cfg->metrics_host, &c->cfg->metrics_port,
                          &c->cfg->metrics_ipv6);
    case V_STRING:
        return config_set_string(c, (char **)(void *)field, d->name, value);
    case V_U32:
        return set_u32(c, (uint32_t *)(void *)field, d->name, value, (uint32_t)d->min,
                       (uint32_t)d->max);
    case V_SIZE:
        return config_set_size(c, (uint64_t *)(void *)field, d->name, value, d->min, d->max);
    case V_FSYNC:
        if (!set_enum(c, &e, d->name, value, config_fsync_names, "always, interval, never"))
            return 0;
        c->cfg->fsync = (pb_fsync_policy)e;
        return 1;
    case V_LOG_LEVEL:
        if (!set_enum(c, &e, d->name, value, logging_level_names, "debug, info, warn, error"))
            return 0;
        c->cfg->log_level = (enum log_level)e;
        return 1;
    case V_FN:
        return config_set_fn(c, d->parse, d->name, value, field);
    case V_AUTH:
        if (!set_enum(c, &e, d->name, value, config_auth_names, "none, required"))
            return 0;
        c->cfg->auth = (pb_auth_mode)e;
        return 1;
    case V_BOOL: {
        static const char *const words[] = {"no", "yes", NULL};
        if (!set_enum(c, &e, d->name, value, words, "yes, no"))
            return 0;
        *(bool *)(void *)field = e == 1;
        return 1;
    }
    case V_MODE:
        if (config_parse_mode(value, &c->cfg->data_mode) < 0)
            return config_fail_at(
                c, c->lineno, PB_EINVAL,
                "data_mode: \"%s\" is not an octal mode within 0644 with the owner's "
                "rw (e.g. 0600, 0640, 0644)",
                value);
        return 1;
    }
    return config_fail_at(c, c->lineno, PB_EINVAL, "%s: internal error: unhandled key", d->name);
}
