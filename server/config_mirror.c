/*
 * config_mirror - the [mirror NAME] sections of the configuration: one
 * mirror ships the partitions whose names match `partitions` to a NATS
 * JetStream stream (server/mirror.h says what each setting does at run
 * time). config.c's parser calls these for the section's header, each key
 * and its end; messages here are the reason only ("nats_url: ..."), the
 * parser adds "file:line: ".
 *
 * Threads: runs on the main thread at start-up, with config.c.
 */
#include "config.h"
#include "config_internal.h"

#include "hostport.h"
#include "patterns.h"
#include "pb_errors.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DUPLICATE_WINDOW_S (7LL * 86400)

int config_mirror_begin(pb_mirror_config *m, const char *name, int line, char *why, size_t n)
{
    memset(m, 0, sizeof *m);
    size_t len = strlen(name);
    if (len == 0)
        return config_why(why, n, "[mirror] needs a name: [mirror NAME], e.g. [mirror to-nats]");
    /* A mirror name follows the partition-name rule (partname.h), capped
     * shorter: it names a file in data_dir, which must not be hidden. */
    if (len > PB_MIRROR_NAME_MAX || !partname_valid(name, len))
        return config_why(why, n,
                       "[mirror %s]: not a valid mirror name (1..%d characters of A-Z a-z 0-9 . _ "
                       "-, not starting with \".\"; it names the mirror's cursor file)",
                       name, PB_MIRROR_NAME_MAX);
    m->name = strdup(name);
    m->partitions = strdup(".*");
    if (!m->name || !m->partitions) {
        config_mirror_free(m);
        return PB_ENOMEM;
    }
    m->line = line;
    m->format = PB_MIRROR_EVENT;
    m->create_stream = true;
    m->replicas = 1;
    m->duplicate_window_s = 120;
    m->max_pending = 1024;
    m->ack_timeout_ms = 5000;
    m->hold_retention = true;
    return 0;
}

static int set_str(char **dst, const char *value)
{
    char *copy = strdup(value);
    if (!copy)
        return PB_ENOMEM;
    free(*dst);
    *dst = copy;
    return 0;
}

static void free_urls(pb_mirror_config *m)
{
    for (size_t i = 0; i < m->n_urls; i++)
        free(m->urls[i]);
    free(m->urls);
    m->urls = NULL;
    m->n_urls = 0;
}

/* One server of nats_url: "nats://host:port" or "host:port". */
static int check_url(const char *u, char *why, size_t n)
{
    const char *hp_text = u;
    const char *scheme_end = strstr(u, "://");
    if (scheme_end) {
        if ((size_t)(scheme_end - u) != 4 || strncmp(u, "nats", 4) != 0)
            return config_why(why, n,
                           "nats_url: \"%s\": only nats:// URLs are supported (no TLS or "
                           "websocket yet)",
                           u);
        hp_text = scheme_end + 3;
    }
    if (strchr(hp_text, '@') || strchr(hp_text, '/'))
        return config_why(
            why, n, "nats_url: \"%s\": give HOST:PORT only (no credentials or path in the URL)", u);
    hostport hp;
    char err[300];
    if (hostport_parse(hp_text, 0, &hp, err, sizeof err) < 0)
        return config_why(why, n, "nats_url: %s", err);
    return 0;
}

/* "nats://a:4222, nats://b:4222 c:4222": servers separated by commas and
 * blanks; each becomes "nats://host:port" for the client library. */
static int set_urls(pb_mirror_config *m, const char *value, char *why, size_t n)
{
    free_urls(m);
    m->urls = calloc(PB_MIRROR_MAX_URLS, sizeof *m->urls);
    if (!m->urls)
        return PB_ENOMEM;
    const char *p = value;
    for (;;) {
        while (*p == ',' || isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        size_t len = strcspn(p, ", \t");
        if (m->n_urls == PB_MIRROR_MAX_URLS)
            return config_why(why, n, "nats_url: more than %d servers", PB_MIRROR_MAX_URLS);
        char item[300];
        if (len >= sizeof item)
            return config_why(why, n, "nats_url: a server address is too long");
        memcpy(item, p, len);
        item[len] = '\0';
        int rc = check_url(item, why, n);
        if (rc < 0)
            return rc;
        char *full = malloc(len + 8);
        if (!full)
            return PB_ENOMEM;
        snprintf(full, len + 8, "%s%s", strstr(item, "://") ? "" : "nats://", item);
        m->urls[m->n_urls++] = full;
        p += len;
    }
    if (m->n_urls == 0)
        return config_why(why, n,
                       "nats_url: must name at least one server, e.g. nats://127.0.0.1:4222");
    return 0;
}

bool config_mirror_prefix_valid(const char *prefix, char *why, size_t n)
{
    size_t len = strlen(prefix);
    if (len == 0 || prefix[len - 1] != '.') {
        config_why(why, n, "\"%s\" must end with \".\" (e.g. protobus.): subjects are PREFIX + topic",
                prefix);
        return false;
    }
    const char *tok = prefix;
    for (const char *p = prefix; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '.') {
            if (p == tok) {
                config_why(why, n, "\"%s\" has an empty token (\"..\" or a leading \".\")", prefix);
                return false;
            }
            if (p - tok == 1 && (*tok == '*' || *tok == '>')) {
                config_why(why, n, "\"%s\": the wildcards * and > cannot be part of a prefix", prefix);
                return false;
            }
            tok = p + 1;
        } else if (ch <= 0x20 || ch >= 0x7f) {
            config_why(why, n,
                    "\"%s\": only printable ASCII without blanks is allowed in a subject prefix",
                    prefix);
            return false;
        }
    }
    if (strncmp(prefix, "$JS.", 4) == 0 || strncmp(prefix, "$SYS.", 5) == 0 ||
        strncmp(prefix, "_INBOX.", 7) == 0) {
        config_why(why, n, "\"%s\": that prefix belongs to NATS itself", prefix);
        return false;
    }
    return true;
}

/* JetStream stream names: no blanks, '.', '*', '>', path separators. */
static bool stream_name_valid(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > 64)
        return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-')
            return false;
    return true;
}

static int set_bool(bool *dst, const char *key, const char *value, char *why, size_t n)
{
    if (strcmp(value, "yes") == 0 || strcmp(value, "true") == 0) {
        *dst = true;
        return 0;
    }
    if (strcmp(value, "no") == 0 || strcmp(value, "false") == 0) {
        *dst = false;
        return 0;
    }
    return config_why(why, n, "%s: \"%s\" is not yes or no", key, value);
}

static int set_u32(uint32_t *dst, const char *key, const char *value, uint32_t min, uint32_t max,
                   char *why, size_t n)
{
    uint64_t v;
    if (config_parse_uint(value, &v) != 0 || v < min || v > max)
        return config_why(why, n, "%s: \"%s\" is not a whole number in %u..%u", key, value, min, max);
    *dst = (uint32_t)v;
    return 0;
}

int config_mirror_key(pb_mirror_config *m, const char *key, const char *value, char *why, size_t n)
{
    if (strcmp(key, "nats_url") == 0)
        return set_urls(m, value, why, n);
    if (strcmp(key, "partitions") == 0) {
        pcre2_code *code;
        char err[300];
        if (!*value)
            return config_why(why, n, "partitions: must not be empty (use .* for every partition)");
        int rc = pattern_compile_whole(value, strlen(value), &code, err, sizeof err);
        if (rc != 0)
            return config_why(why, n, "partitions: bad regex \"%s\": %s", value, err);
        pcre2_code_free(code);
        return set_str(&m->partitions, value);
    }
    if (strcmp(key, "stream") == 0) {
        if (!stream_name_valid(value))
            return config_why(why, n,
                           "stream: \"%s\" is not a JetStream stream name (1..64 characters of "
                           "A-Z a-z 0-9 _ -)",
                           value);
        return set_str(&m->stream, value);
    }
    if (strcmp(key, "subject_prefix") == 0) {
        char err[300];
        if (!config_mirror_prefix_valid(value, err, sizeof err))
            return config_why(why, n, "subject_prefix: %s", err);
        return set_str(&m->subject_prefix, value);
    }
    if (strcmp(key, "format") == 0) {
        if (strcmp(value, "event") == 0)
            m->format = PB_MIRROR_EVENT;
        else if (strcmp(value, "payload") == 0)
            m->format = PB_MIRROR_PAYLOAD;
        else
            return config_why(why, n, "format: \"%s\" is not one of event, payload", value);
        return 0;
    }
    if (strcmp(key, "create_stream") == 0)
        return set_bool(&m->create_stream, key, value, why, n);
    if (strcmp(key, "hold_retention") == 0)
        return set_bool(&m->hold_retention, key, value, why, n);
    if (strcmp(key, "replicas") == 0)
        return set_u32(&m->replicas, key, value, 1, 5, why, n);
    if (strcmp(key, "max_pending") == 0)
        return set_u32(&m->max_pending, key, value, 1, 65536, why, n);
    if (strcmp(key, "ack_timeout_ms") == 0)
        return set_u32(&m->ack_timeout_ms, key, value, 100, 600000, why, n);
    if (strcmp(key, "duplicate_window") == 0) {
        int64_t s;
        if (config_parse_duration(value, &s) != 0 || s < 1 || s > MAX_DUPLICATE_WINDOW_S)
            return config_why(why, n,
                           "duplicate_window: \"%s\" is not a duration from 1s to 7d (e.g. 2m, "
                           "1h)",
                           value);
        m->duplicate_window_s = s;
        return 0;
    }
    return config_why(why, n,
                   "unknown key \"%s\" in [mirror %s] (expected nats_url, partitions, stream, "
                   "subject_prefix, format, create_stream, replicas, duplicate_window, "
                   "max_pending, ack_timeout_ms, hold_retention)",
                   key, m->name);
}

int config_mirror_end(const pb_mirror_config *m, char *why, size_t n)
{
    const char *missing = !m->n_urls           ? "nats_url = nats://HOST:PORT[, ...]"
                          : !m->stream         ? "stream = NAME"
                          : !m->subject_prefix ? "subject_prefix = PREFIX."
                                               : NULL;
    if (missing)
        return config_why(why, n, "[mirror %s] has no %s line", m->name, missing);
    return 0;
}

/* Do two mirrors' server lists share a server? (Then they reach the same
 * cluster, as far as the configuration can tell.) */
static bool same_cluster(const pb_mirror_config *a, const pb_mirror_config *b)
{
    for (size_t i = 0; i < a->n_urls; i++)
        for (size_t j = 0; j < b->n_urls; j++)
            if (strcmp(a->urls[i], b->urls[j]) == 0)
                return true;
    return false;
}

int config_mirror_check(const pb_mirror_config *ms, size_t count, int *line, char *why, size_t n)
{
    for (size_t i = 0; i < count; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(ms[i].name, ms[j].name) == 0) {
                *line = ms[i].line;
                return config_why(why, n, "duplicate [mirror %s] (first defined at line %d)",
                               ms[i].name, ms[j].line);
            }
            /* Each mirror keeps its stream's message order with
             * Nats-Expected-Last-Msg-Id: a second writer would break it. */
            if (strcmp(ms[i].stream, ms[j].stream) == 0 && same_cluster(&ms[i], &ms[j])) {
                *line = ms[i].line;
                return config_why(why, n,
                               "[mirror %s] writes to stream %s like [mirror %s] (line %d): "
                               "each mirror needs a stream of its own",
                               ms[i].name, ms[i].stream, ms[j].name, ms[j].line);
            }
        }
    }
    return 0;
}

void config_mirror_free(pb_mirror_config *m)
{
    if (!m)
        return;
    free_urls(m);
    free(m->name);
    free(m->partitions);
    free(m->stream);
    free(m->subject_prefix);
    memset(m, 0, sizeof *m);
}
