/*
 * config_values - the syntax of configuration values (see config.h): whole
 * numbers, sizes ("64M"), durations ("1d"), UTC offsets ("+02:00")
 * and the words of the enumerations, and every setting's default
 * (config_set_defaults). config.c reads the
 * file with them; the pure parsers are also what tests and tools use.
 *
 * Threads: any; pure functions and constant tables.
 */
#include "config.h"
#include "config_internal.h"

#include "pb_errors.h"
#include "subcaps.h"

#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KIB 1024ULL
#define MIB (1024ULL * KIB)
#define GIB (1024ULL * MIB)

#define DEFAULT_LISTEN_PORT 7420

/* Leading decimal digits of s into *v; *end after them. PB_EINVAL if there
 * are none, PB_ETOOBIG on uint64 overflow. */
static int parse_digits(const char *s, uint64_t *v, const char **end)
{
    uint64_t x = 0;
    const char *p = s;
    if (!isdigit((unsigned char)*p))
        return PB_EINVAL;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (x > (UINT64_MAX - d) / 10)
            return PB_ETOOBIG;
        x = x * 10 + d;
    }
    *v = x;
    *end = p;
    return 0;
}

int config_parse_uint(const char *s, uint64_t *v)
{
    const char *end;
    int rc = parse_digits(s, v, &end);
    if (rc == 0 && *end)
        rc = PB_EINVAL;
    return rc;
}

/* "<digits>" followed by one character of `units` (which multiplies by the
 * matching `scale`), or by nothing if bare_ok. */
static int parse_scaled(const char *s, const char *units, const uint64_t *scale, bool bare_ok,
                        uint64_t max, uint64_t *out)
{
    uint64_t v, mult = 1;
    const char *end;
    int rc = parse_digits(s, &v, &end);
    if (rc != 0)
        return rc;
    if (*end) {
        const char *u = strchr(units, *end);
        if (!u || end[1])
            return PB_EINVAL;
        mult = scale[u - units];
    } else if (!bare_ok) {
        return PB_EINVAL;
    }
    if (v > max / mult)
        return PB_ETOOBIG;
    *out = v * mult;
    return 0;
}

int config_parse_size(const char *s, uint64_t *bytes)
{
    static const uint64_t scale[] = {KIB, KIB, MIB, MIB, GIB, GIB};
    return parse_scaled(s, "KkMmGg", scale, true, UINT64_MAX, bytes);
}

int config_parse_duration(const char *s, int64_t *seconds)
{
    static const uint64_t scale[] = {1, 60, 3600, 86400};
    uint64_t v = 0;
    /* The unit is required: a bare "30" could mean seconds or minutes. */
    int rc = strcmp(s, "none") == 0 ? 0 : parse_scaled(s, "smhd", scale, false, INT64_MAX, &v);
    if (rc == 0)
        *seconds = (int64_t)v;
    return rc;
}

#define MAX_RETAIN_AGE_S (3650LL * 86400) /* ten years: beyond, say none */
#define MIN_RETAIN_BYTES (64 * KIB)

int config_value_retain_age(const char *key, const char *s, void *dst, char *why, size_t n)
{
    int64_t *seconds = dst;
    int rc = config_parse_duration(s, seconds);
    if (rc == PB_EINVAL)
        snprintf(why, n, "%s: \"%s\" is not a duration (use e.g. 12h, 7d, or none)", key, s);
    else if (rc != 0 || *seconds > MAX_RETAIN_AGE_S)
        snprintf(why, n, "%s: %s is too long (at most 3650d, or none)", key, s);
    else if (*seconds == 0 && strcmp(s, "none") != 0)
        snprintf(why, n, "%s: %s: must be more than 0 (or none)", key, s);
    else
        return 0;
    return PB_EINVAL;
}

/* A size within min..max, or why not. */
static int size_within(const char *key, const char *s, uint64_t min, uint64_t max, uint64_t *bytes,
                       char *why, size_t n)
{
    int rc = config_parse_size(s, bytes);
    if (rc == PB_EINVAL)
        snprintf(why, n, "%s: \"%s\" is not a size (use e.g. 512K, 64M, 1G)", key, s);
    else if (rc != 0 || *bytes < min || *bytes > max)
        snprintf(why, n, "%s: %s is out of range (expected %llu..%llu bytes)", key, s,
                 (unsigned long long)min, (unsigned long long)max);
    else
        return 0;
    return PB_EINVAL;
}

int config_value_retain_bytes(const char *key, const char *s, void *dst, char *why, size_t n)
{
    uint64_t *bytes = dst;
    if (strcmp(s, "none") == 0) {
        *bytes = 0;
        return 0;
    }
    return size_within(key, s, MIN_RETAIN_BYTES, UINT64_MAX / 2, bytes, why, n);
}

int config_value_min_free(const char *key, const char *s, void *dst, char *why, size_t n)
{
    uint64_t *bytes = dst;
    if (strcmp(s, "auto") == 0 || strcmp(s, "none") == 0 || strcmp(s, "0") == 0) {
        *bytes = s[0] == 'a' ? UINT64_MAX : 0;
        return 0;
    }
    return size_within(key, s, 1, UINT64_MAX / 2, bytes, why, n);
}

int config_value_standby_timeout(const char *key, const char *s, void *dst, char *why, size_t n)
{
    bool *local = dst;
    if (strcmp(s, "refuse") == 0 || strcmp(s, "local") == 0) {
        *local = s[0] == 'l';
        return 0;
    }
    snprintf(why, n, "%s: \"%s\" is not one of refuse, local", key, s);
    return PB_EINVAL;
}

int config_parse_utc_offset(const char *s, int32_t *seconds)
{
    if ((s[0] == 'Z' || s[0] == 'z') && s[1] == '\0') {
        *seconds = 0;
        return 0;
    }
    if ((s[0] != '+' && s[0] != '-') || strlen(s) != 6 || s[3] != ':')
        return PB_EINVAL;
    for (int i = 1; i < 6; i++)
        if (i != 3 && !isdigit((unsigned char)s[i]))
            return PB_EINVAL;
    int hh = (s[1] - '0') * 10 + (s[2] - '0');
    int mm = (s[4] - '0') * 10 + (s[5] - '0');
    if (hh > 23 || mm > 59)
        return PB_EINVAL;
    *seconds = (s[0] == '-' ? -1 : 1) * (hh * 3600 + mm * 60);
    return 0;
}

const char *const config_fsync_names[] = {"always", "interval", "never", NULL};

const char *config_fsync_name(pb_fsync_policy p)
{
    return (unsigned)p <= PB_FSYNC_NEVER ? config_fsync_names[p] : "?";
}

int config_parse_mode(const char *s, uint32_t *mode)
{
    char *end;
    errno = 0;
    unsigned long m = strtoul(s, &end, 8);
    if (!*s || *end || errno || (m & ~0644ul) || (m & 0600) != 0600)
        return PB_EINVAL;
    *mode = (uint32_t)m;
    return 0;
}

int config_value_compress(const char *key, const char *s, void *dst, char *why, size_t n)
{
    int32_t *on = dst;
    if (strcmp(s, "zstd") == 0 || strcmp(s, "none") == 0) {
        *on = strcmp(s, "zstd") == 0;
        return 0;
    }
    snprintf(why, n, "%s: \"%s\" is not a compression (use zstd or none)", key, s);
    return PB_EINVAL;
}

int config_value_compress_level(const char *key, const char *s, void *dst, char *why, size_t n)
{
    int32_t *level = dst;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno == 0 && end != s && !*end && v >= -7 && v <= 19 && v != 0) {
        *level = (int32_t)v;
        return 0;
    }
    snprintf(why, n, "%s: \"%s\" is not a zstd level (expected 1..19, or -7..-1: faster, larger)",
             key, s);
    return PB_EINVAL;
}

void config_set_defaults(pb_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->compress_level = 3;
    cfg->listen_port = DEFAULT_LISTEN_PORT;
    cfg->fsync = PB_FSYNC_ALWAYS;
    cfg->fsync_interval_ms = 100;
    /* A subscription costs a thread (256 KiB of stack, mostly untouched)
     * only while it runs: 1,024 idle tails fit this 2-core machine. */
    cfg->threads = 1024;
    /* Half of them: one client address cannot take every slot. */
    cfg->max_subscriptions_per_address = 512;
    cfg->max_event_bytes = 1 * MIB;
    cfg->max_frame_bytes = 16 * MIB;
    cfg->max_connections = 1024;
    cfg->subscriber_queue_bytes = 4 * MIB;
    /* 1,000 lagging subscribers must not hold 1,000 x 4 MiB: beyond this
     * sum, the queue that would pass it overflows to the files. */
    cfg->subscriber_queue_total_bytes = 32 * MIB;
    cfg->write_deadline_ms = 30000;
    cfg->idle_timeout_ms = 60000;
    /* Long enough for a client between bursts; at max_connections a new
     * connection closes the one quiet the longest anyway (net.c). */
    cfg->quiet_timeout_ms = 300000;
    cfg->handshake_timeout_ms = 10000;
    /* As many as max_connections: a herd of clients reconnecting at once
     * (after a restart) all fit; silent ones are still evicted, oldest
     * first, when a new connection finds either cap reached. */
    cfg->max_handshaking = 1024;
    cfg->log_level = LOG_INFO;
    /* Above the 100,000-distinct-topics goal, so such a workload routes
     * from the cache after the first sight of each topic. */
    cfg->route_cache_entries = 262144;
    /* A batch's state is ~230 bytes per event (ingest_charge): at this cap
     * one Publish costs at most ~15 MiB of it, about a maximal frame's
     * bytes. The client library sends 1,000 events per batch by default. */
    cfg->max_batch_events = 65536;
    cfg->max_partitions = 0; /* main.c: from the descriptors it can have */
    cfg->partition_idle_ms = 10000;
    /* ~200 bytes each (topics.h): ~26 MiB; above the 100,000 distinct
     * topics of the benchmark, so that workload never evicts. */
    cfg->max_topics_in_memory = 131072;
    /* Two minutes, as JetStream's default duplicate window. At ~105 bytes
     * an id (dedup.h; ~140 once ids over 36 bytes were seen), a full window
     * costs ~10 MiB per partition; it is allocated as ids arrive. */
    cfg->dedup_window_ms = 120000;
    cfg->dedup_max_entries = 100000;
    cfg->min_free_bytes = UINT64_MAX; /* auto: 1 GiB or 5% (server/freespace.h) */
    /* Per partition: what a subscriber a little behind re-reads stays
     * cached; the writer recycles the pages of the rest (log_cache.c). */
    cfg->page_cache_bytes = 64 * MIB;
    cfg->direct_write_bytes = 256 * KIB;
    cfg->recycle_segments = true; /* proven by test_powerloss's recycling rounds */
    cfg->auth = PB_AUTH_NONE;
    /* Long enough that guessing costs real time, short enough for a person
     * who mistyped; it doubles with each recent failure from the address. */
    cfg->auth_failure_delay_ms = 1000;
    cfg->data_mode = 0600;
    /* Hot standby: asynchronous unless asked; a synchronous publish waits
     * 5 s for the standby, then is refused. */
    cfg->min_standby_acks = 0;
    cfg->standby_timeout_ms = 5000;
    cfg->standby_timeout_local = false;
    /* Unsent replies of all connections, with their allocations: 8
     * connections at their own 8 MiB bound. */
    cfg->reply_queue_total_bytes = 64 * MIB;
    /* Receive buffers of unfinished frames, all connections: 8 frames of
     * the default max_frame_bytes arriving at once. */
    cfg->max_partial_frame_bytes = 128 * MIB;
    cfg->max_subscribe_patterns = SUB_CAPS_PATTERNS_DEFAULT;
    cfg->max_pattern_bytes = SUB_CAPS_PATTERN_BYTES_DEFAULT;
    cfg->max_subscribe_tags = SUB_CAPS_TAGS_DEFAULT;
    cfg->max_subscribe_offsets = SUB_CAPS_OFFSETS_DEFAULT;
}

int config_why(char *why, size_t n, const char *fmt, ...)
{
    if (n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, n, fmt, ap);
        va_end(ap);
    }
    return PB_EINVAL;
}
