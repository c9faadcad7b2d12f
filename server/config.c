/*
 * Daemon configuration: conf file -> validated pb_config. The syntax of
 * single values (sizes, durations, offsets, names) is config_values.c;
 * the [server] keys and the setters of one value are config_server.c.
 *
 * inih does the parsing; we feed it lines through our own reader so that we
 * know the line number of every key (this inih build does not pass it to
 * handlers) and where each section starts (inih only reports keys, so an
 * empty or misspelt section would otherwise go unnoticed). The reader also
 * strips leading blanks, which turns off inih's multi-line continuation (an
 * indented key would silently become part of the previous value), and
 * strips "#" comments that follow a value (inih only knows ";" there).
 * Parsing stops at the first error; messages are "path:line: reason".
 *
 * Threads: runs once on the main thread at start-up; keeps no global state.
 */
#include "config.h"
#include "config_internal.h"

#include "grow.h"
#include "patterns.h"
#include "pb_errors.h"
#include "subcaps.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_LISTEN_HOST "127.0.0.1"

#define MAX_ROTATE_S (3650LL * 86400) /* ten years: beyond that, say none */

static const char *const rule_keys[RK_COUNT] = {"match",      "segment_bytes", "rotate_every",
                                                "utc_offset", "retain_age",    "retain_bytes",
                                                "compress",   "compress_level"};

/* Records the first error as "name:line: message"; later ones are
 * consequences of it and are dropped. Returns 0 for inih's "failed". */
int config_fail_at(struct parse_ctx *c, int line, int rc, const char *fmt, ...)
{
    if (c->err_line)
        return 0;
    c->err_line = line > 0 ? line : 1;
    c->rc = rc;
    if (c->errlen) {
        int n = snprintf(c->err, c->errlen, "%s:%d: ", c->name, c->err_line);
        if (n >= 0 && (size_t)n < c->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return 0;
}

/* ---- [partition NAME] ---- */

static pb_rule *cur_rule(struct parse_ctx *c)
{
    return &c->cfg->rules[c->cfg->n_rules - 1];
}

/* Checks a name template: literal name characters and $0..$9. Sets
 * *max_ref to the highest group referenced (-1: none). A static name must
 * be a partition name (partname.h); a template must not start with a
 * literal '.' (every expansion would be refused). What a template's groups
 * produce is checked by the router, on each name it makes. */
static int check_template(struct parse_ctx *c, const char *tmpl, int *max_ref)
{
    size_t literal = 0;
    *max_ref = -1;
    for (const char *p = tmpl; *p; p++) {
        if (*p == '$') {
            if (!isdigit((unsigned char)p[1]))
                return config_fail_at(
                    c, c->lineno, PB_EINVAL,
                    "[partition %s]: \"$\" must be followed by a group number 0..9 "
                    "($0 is the whole topic, $1 the first capture group)",
                    tmpl);
            int n = p[1] - '0';
            if (n > *max_ref)
                *max_ref = n;
            p++;
        } else if (!partname_char_ok(*p)) {
            return config_fail_at(c, c->lineno, PB_EINVAL,
                                  "[partition %s]: '%c' is not allowed in a partition name (use "
                                  "A-Z a-z 0-9 . _ -)",
                                  tmpl, *p);
        } else {
            literal++;
        }
    }
    if (tmpl[0] == '.')
        return config_fail_at(c, c->lineno, PB_EINVAL,
                              "[partition %s]: a partition name may not start with \".\" (readers "
                              "skip such directories, so its events would be invisible; %s)",
                              tmpl, PARTNAME_RULE);
    if (literal > PB_PARTITION_NAME_MAX)
        return config_fail_at(c, c->lineno, PB_EINVAL, "[partition %s]: longer than %d characters",
                              tmpl, PB_PARTITION_NAME_MAX);
    if (*max_ref < 0 && !partname_valid(tmpl, strlen(tmpl)))
        return config_fail_at(c, c->lineno, PB_EINVAL,
                              "[partition %s]: not a valid partition name (%s)", tmpl,
                              PARTNAME_RULE);
    return 1;
}

static int begin_partition(struct parse_ctx *c, const char *tmpl)
{
    pb_config *cfg = c->cfg;
    int max_ref;

    if (!*tmpl)
        return config_fail_at(
            c, c->lineno, PB_EINVAL,
            "[partition] needs a name: [partition NAME], e.g. [partition events]");
    if (!check_template(c, tmpl, &max_ref))
        return 0;
    if (max_ref < 0) {
        for (size_t i = 0; i < cfg->n_rules; i++)
            if (strcmp(cfg->rules[i].partition, tmpl) == 0)
                return config_fail_at(c, c->lineno, PB_EINVAL,
                                      "duplicate partition \"%s\" (first defined at line %d)", tmpl,
                                      cfg->rules[i].line);
    }
    if (grow_reserve(&cfg->rules, &c->rules_cap, cfg->n_rules + 1, sizeof *cfg->rules) < 0)
        return config_fail_at(c, c->lineno, PB_ENOMEM, "out of memory");
    pb_rule *rule = &cfg->rules[cfg->n_rules];
    memset(rule, 0, sizeof *rule);
    rule->partition = strdup(tmpl);
    if (!rule->partition)
        return config_fail_at(c, c->lineno, PB_ENOMEM, "out of memory");
    cfg->n_rules++;
    rule->line = c->lineno;
    rule->max_group_ref = max_ref;
    rule->segment_bytes = 64 * MIB;
    rule->retain_age_s = -1;         /* unset: [server]'s, in check_whole */
    rule->retain_bytes = UINT64_MAX; /* likewise */
    rule->compress = -1;             /* likewise */
    rule->compress_level = 0;        /* likewise */
    memset(c->rule_key_line, 0, sizeof c->rule_key_line);
    return 1;
}

/* Compiles the pattern exactly as the router will, so a config that loads
 * routes; and checks that the name's $N exist. */
static int set_match(struct parse_ctx *c, const char *value)
{
    pb_rule *rule = cur_rule(c);
    pcre2_code *code;
    char why[300];
    uint32_t groups = 0;

    if (!*value)
        return config_fail_at(c, c->lineno, PB_EINVAL,
                              "match: must not be empty (use .* for any topic)");
    int rc = pattern_compile_whole(value, strlen(value), &code, why, sizeof why);
    if (rc != 0)
        return config_fail_at(c, c->lineno, rc, "match: bad regex \"%s\": %s", value, why);
    (void)pcre2_pattern_info(code, PCRE2_INFO_CAPTURECOUNT, &groups);
    pcre2_code_free(code);
    if (rule->max_group_ref > (int)groups)
        return config_fail_at(c, c->lineno, PB_EINVAL,
                              "match: partition name \"%s\" uses $%d but \"%s\" has %u capture "
                              "group(s)",
                              rule->partition, rule->max_group_ref, value, groups);
    if (!config_set_string(c, &rule->match, "match", value))
        return 0;
    rule->match_line = c->lineno;
    return 1;
}

static int rule_key(struct parse_ctx *c, enum rule_key k, const char *value)
{
    pb_rule *rule = cur_rule(c);
    int rc;

    switch (k) {
    case RK_MATCH:
        return set_match(c, value);
    case RK_SEGMENT_BYTES:
        return config_set_size(c, &rule->segment_bytes, "segment_bytes", value, 4 * KIB, TIB);
    case RK_ROTATE_EVERY:
        rc = config_parse_duration(value, &rule->rotate_every_s);
        if (rc == PB_EINVAL)
            return config_fail_at(
                c, c->lineno, rc,
                "rotate_every: \"%s\" is not a duration (use e.g. 30m, 1h, 1d, or "
                "none)",
                value);
        if (rc != 0 || rule->rotate_every_s > MAX_ROTATE_S)
            return config_fail_at(c, c->lineno, PB_EINVAL,
                                  "rotate_every: %s is too long (at most 3650d; use none to rotate "
                                  "by size only)",
                                  value);
        if (rule->rotate_every_s == 0 && strcmp(value, "none") != 0)
            return config_fail_at(c, c->lineno, PB_EINVAL,
                                  "rotate_every: %s: must be more than 0 (or none)", value);
        return 1;
    case RK_UTC_OFFSET:
        if (config_parse_utc_offset(value, &rule->utc_offset_s) != 0)
            return config_fail_at(
                c, c->lineno, PB_EINVAL,
                "utc_offset: \"%s\" is not a UTC offset (use +HH:MM, -HH:MM or Z)", value);
        return 1;
    case RK_RETAIN_AGE:
        return config_set_fn(c, config_value_retain_age, "retain_age", value, &rule->retain_age_s);
    case RK_RETAIN_BYTES:
        return config_set_fn(c, config_value_retain_bytes, "retain_bytes", value,
                             &rule->retain_bytes);
    case RK_COMPRESS:
        return config_set_fn(c, config_value_compress, "compress", value, &rule->compress);
    case RK_COMPRESS_LEVEL:
        return config_set_fn(c, config_value_compress_level, "compress_level", value,
                             &rule->compress_level);
    case RK_COUNT:
        break;
    }
    return config_fail_at(c, c->lineno, PB_EINVAL, "internal error: unhandled key");
}

/* ---- [mirror NAME] (the keys: config_mirror.c) ---- */

static int begin_mirror(struct parse_ctx *c, const char *name)
{
    pb_config *cfg = c->cfg;
    char why[300];
    if (grow_reserve(&cfg->mirrors, &c->mirrors_cap, cfg->n_mirrors + 1, sizeof *cfg->mirrors) < 0)
        return config_fail_at(c, c->lineno, PB_ENOMEM, "out of memory");
    int rc = config_mirror_begin(&cfg->mirrors[cfg->n_mirrors], name, c->lineno, why, sizeof why);
    if (rc < 0)
        return config_fail_at(c, c->lineno, rc, "%s", why);
    cfg->n_mirrors++;
    return 1;
}

static int mirror_key(struct parse_ctx *c, const char *key, const char *value)
{
    char why[300];
    int rc =
        config_mirror_key(&c->cfg->mirrors[c->cfg->n_mirrors - 1], key, value, why, sizeof why);
    return rc < 0 ? config_fail_at(c, c->lineno, rc, "%s", why) : 1;
}

/* ---- [user NAME] (the keys: config_users.c) ---- */

static int begin_user(struct parse_ctx *c, const char *name)
{
    pb_config *cfg = c->cfg;
    char why[300];
    if (grow_reserve(&cfg->users, &c->users_cap, cfg->n_users + 1, sizeof *cfg->users) < 0)
        return config_fail_at(c, c->lineno, PB_ENOMEM, "out of memory");
    int rc = config_user_begin(&cfg->users[cfg->n_users], name, c->lineno, why, sizeof why);
    if (rc < 0)
        return config_fail_at(c, c->lineno, rc, "%s", rc == PB_ENOMEM ? "out of memory" : why);
    cfg->n_users++;
    return 1;
}

static int user_key(struct parse_ctx *c, const char *key, const char *value)
{
    char why[400];
    int rc = config_user_key(&c->cfg->users[c->cfg->n_users - 1], key, value, why, sizeof why);
    return rc < 0 ? config_fail_at(c, c->lineno, rc, "%s", rc == PB_ENOMEM ? "out of memory" : why)
                  : 1;
}

/* A section ends at the next header or at the end of the file. */
static int end_section(struct parse_ctx *c)
{
    if (c->sec == SEC_PARTITION && !cur_rule(c)->match)
        return config_fail_at(c, cur_rule(c)->line, PB_EINVAL,
                              "[partition %s] has no match = REGEX line", cur_rule(c)->partition);
    if (c->sec == SEC_MIRROR) {
        const pb_mirror_config *m = &c->cfg->mirrors[c->cfg->n_mirrors - 1];
        char why[300];
        int rc = config_mirror_end(m, why, sizeof why);
        if (rc < 0)
            return config_fail_at(c, m->line, rc, "%s", why);
    }
    if (c->sec == SEC_USER) {
        const pb_user_config *u = &c->cfg->users[c->cfg->n_users - 1];
        char why[300];
        int rc = config_user_end(u, why, sizeof why);
        if (rc < 0)
            return config_fail_at(c, u->line, rc, "%s", why);
    }
    c->sec = SEC_NONE;
    return 1;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* Called by the reader for each "[...]" line, before inih sees it. A line
 * without "]" is left to inih, which reports it. */
static int begin_section(struct parse_ctx *c, char *line)
{
    char *close = strchr(line, ']');
    if (!close)
        return 1;
    if (!end_section(c))
        return 0;
    *close = '\0';
    char *name = trim(line + 1);
    if (strcmp(name, "server") == 0) {
        if (c->server_line)
            return config_fail_at(c, c->lineno, PB_EINVAL,
                                  "duplicate [server] section (first at line %d)", c->server_line);
        c->server_line = c->lineno;
        c->sec = SEC_SERVER;
        return 1;
    }
    if (strncmp(name, "partition", 9) == 0 &&
        (name[9] == '\0' || isspace((unsigned char)name[9]))) {
        c->sec = SEC_PARTITION;
        if (!begin_partition(c, trim(name + 9))) {
            c->sec = SEC_NONE;
            return 0;
        }
        return 1;
    }
    if (strncmp(name, "mirror", 6) == 0 && (name[6] == '\0' || isspace((unsigned char)name[6]))) {
        c->sec = SEC_MIRROR;
        if (!begin_mirror(c, trim(name + 6))) {
            c->sec = SEC_NONE;
            return 0;
        }
        return 1;
    }
    if (strncmp(name, "user", 4) == 0 && (name[4] == '\0' || isspace((unsigned char)name[4]))) {
        c->sec = SEC_USER;
        if (!begin_user(c, trim(name + 4))) {
            c->sec = SEC_NONE;
            return 0;
        }
        return 1;
    }
    return config_fail_at(
        c, c->lineno, PB_EINVAL,
        "unknown section [%s] (expected [server], [partition NAME], [mirror NAME] or "
        "[user NAME])",
        name);
}

static int on_key(void *user, const char *section, const char *key, const char *value)
{
    struct parse_ctx *c = user;
    (void)section; /* we track sections ourselves, with their line numbers */

    if (c->err_line)
        return 0;
    if (c->sec == SEC_NONE)
        return config_fail_at(c, c->lineno, PB_EINVAL,
                              "\"%s\" is outside any section (put it under [server] or "
                              "[partition NAME])",
                              key);
    if (c->sec == SEC_MIRROR)
        return mirror_key(c, key, value);
    if (c->sec == SEC_USER)
        return user_key(c, key, value);
    bool server = c->sec == SEC_SERVER;
    int count = server ? (int)SK_COUNT : RK_COUNT;
    int *lines = server ? c->server_key_line : c->rule_key_line;
    for (int k = 0; k < count; k++) {
        if (strcmp(key, server ? config_server_keys[k].name : rule_keys[k]) != 0)
            continue;
        if (lines[k])
            return config_fail_at(c, c->lineno, PB_EINVAL,
                                  "%s: set twice in this section (also at line %d)", key, lines[k]);
        lines[k] = c->lineno;
        return server ? config_server_key(c, &config_server_keys[k], value)
                      : rule_key(c, (enum rule_key)k, value);
    }
    return config_fail_at(c, c->lineno, PB_EINVAL, "unknown key \"%s\" in [%s]", key,
                          server ? "server" : "partition ...");
}

/* ---- line source ---- */

/* Next raw line into c->linebuf (without its newline); false at the end. */
static bool next_line(struct parse_ctx *c, size_t *len)
{
    if (c->file) {
        ssize_t n = getline(&c->linebuf, &c->linecap, c->file);
        if (n < 0) {
            if (ferror(c->file))
                config_fail_at(c, c->lineno + 1, -errno, "read error: %s", strerror(errno));
            return false;
        }
        *len = (size_t)n;
    } else {
        const char *s = c->text + c->text_pos;
        if (!*s)
            return false;
        const char *nl = strchr(s, '\n');
        size_t n = nl ? (size_t)(nl - s) + 1 : strlen(s);
        if (grow_reserve(&c->linebuf, &c->linecap, n + 1, 1) < 0) {
            config_fail_at(c, c->lineno + 1, PB_ENOMEM, "out of memory");
            return false;
        }
        memcpy(c->linebuf, s, n);
        c->linebuf[n] = '\0';
        c->text_pos += n;
        *len = n;
    }
    if (*len && c->linebuf[*len - 1] == '\n')
        c->linebuf[--*len] = '\0';
    if (*len && c->linebuf[*len - 1] == '\r')
        c->linebuf[--*len] = '\0';
    return true;
}

/* Cuts a "#" comment that starts the line or follows a blank. */
static void strip_hash_comment(char *s)
{
    for (char *p = s; *p; p++) {
        if (*p == '#' && (p == s || p[-1] == ' ' || p[-1] == '\t')) {
            *p = '\0';
            return;
        }
    }
}

/* inih's ini_reader: hands inih one line at a time. Returning NULL ends
 * the parse, which is how an error found here or in on_key stops it. */
static char *reader(char *str, int num, void *stream)
{
    struct parse_ctx *c = stream;
    size_t len;

    if (c->err_line || !next_line(c, &len))
        return NULL;
    c->lineno++;
    if (memchr(c->linebuf, '\0', len)) {
        config_fail_at(c, c->lineno, PB_EINVAL, "line contains a NUL byte");
        return NULL;
    }
    char *line = c->linebuf;
    if (c->lineno == 1 && strncmp(line, "\xEF\xBB\xBF", 3) == 0)
        line += 3; /* UTF-8 byte order mark */
    while (*line == ' ' || *line == '\t')
        line++;
    strip_hash_comment(line);
    len = strlen(line);
    /* inih needs room for "\n\0" and would read the rest of a longer line
     * as a line of its own: refuse instead of misparsing. */
    if (len > CONFIG_MAX_LINE || len + 3 > (size_t)num) {
        config_fail_at(c, c->lineno, PB_EINVAL, "line is longer than %d characters",
                       CONFIG_MAX_LINE);
        return NULL;
    }
    memcpy(str, line, len);
    str[len] = '\n';
    str[len + 1] = '\0';
    if (line[0] == '[' && !begin_section(c, line))
        return NULL; /* begin_section() may cut `line`; inih reads `str` */
    return str;
}

/* ---- load ---- */

/* Checks that involve several keys, once all are known. */
static void check_whole(struct parse_ctx *c)
{
    pb_config *cfg = c->cfg;
    const int *kl = c->server_key_line;

    for (size_t i = 0; i < cfg->n_rules; i++) {
        if (cfg->rules[i].retain_age_s < 0)
            cfg->rules[i].retain_age_s = cfg->retain_age_s;
        if (cfg->rules[i].retain_bytes == UINT64_MAX)
            cfg->rules[i].retain_bytes = cfg->retain_bytes;
        if (cfg->rules[i].compress < 0)
            cfg->rules[i].compress = cfg->compress;
        if (cfg->rules[i].compress_level == 0)
            cfg->rules[i].compress_level = cfg->compress_level;
    }

    if (cfg->n_rules == 0) {
        config_fail_at(c, c->lineno, PB_EINVAL,
                       "no [partition NAME] rules: every topic would be refused (add e.g. "
                       "[partition events] with match = .*)");
        return;
    }
    if (cfg->max_frame_bytes < cfg->max_event_bytes + CONFIG_FRAME_OVERHEAD) {
        int line = kl[SK_MAX_FRAME_BYTES] ? kl[SK_MAX_FRAME_BYTES] : kl[SK_MAX_EVENT_BYTES];
        config_fail_at(
            c, line, PB_EINVAL,
            "max_frame_bytes (%llu) must be at least max_event_bytes (%llu) + %d, so that "
            "the largest event fits in a frame",
            (unsigned long long)cfg->max_frame_bytes, (unsigned long long)cfg->max_event_bytes,
            CONFIG_FRAME_OVERHEAD);
        return;
    }
    if (cfg->subscriber_queue_bytes < cfg->max_event_bytes) {
        int line =
            kl[SK_SUBSCRIBER_QUEUE_BYTES] ? kl[SK_SUBSCRIBER_QUEUE_BYTES] : kl[SK_MAX_EVENT_BYTES];
        config_fail_at(c, line, PB_EINVAL,
                       "subscriber_queue_bytes (%llu) must be at least max_event_bytes (%llu), so "
                       "that the largest event fits in a live queue",
                       (unsigned long long)cfg->subscriber_queue_bytes,
                       (unsigned long long)cfg->max_event_bytes);
        return;
    }
    if (cfg->subscriber_queue_total_bytes < cfg->max_event_bytes + 4 * KIB) {
        int line = kl[SK_SUBSCRIBER_QUEUE_TOTAL_BYTES] ? kl[SK_SUBSCRIBER_QUEUE_TOTAL_BYTES]
                                                       : kl[SK_MAX_EVENT_BYTES];
        config_fail_at(
            c, line, PB_EINVAL,
            "subscriber_queue_total_bytes (%llu) must be at least max_event_bytes (%llu) + "
            "4K, so that the largest event fits in the live queues",
            (unsigned long long)cfg->subscriber_queue_total_bytes,
            (unsigned long long)cfg->max_event_bytes);
        return;
    }
    char why[300];
    int line = 0;
    int rc = config_mirror_check(cfg->mirrors, cfg->n_mirrors, &line, why, sizeof why);
    if (rc == 0)
        rc = config_users_check(cfg->users, cfg->n_users, &line, why, sizeof why);
    if (rc < 0)
        config_fail_at(c, line, rc, "%s", why);
}

static int load(struct parse_ctx *c, pb_config *cfg, char *err, size_t errlen)
{
    c->cfg = cfg;
    c->err = err;
    c->errlen = errlen;
    config_set_defaults(cfg);
    cfg->path = strdup(c->name);
    cfg->listen_host = strdup(DEFAULT_LISTEN_HOST);
    cfg->data_dir = strdup("./data");
    if (!cfg->path || !cfg->listen_host || !cfg->data_dir) {
        config_fail_at(c, 1, PB_ENOMEM, "out of memory");
        goto out;
    }

    int r = ini_parse_stream(reader, c, on_key, c);
    if (r > 0 && (!c->err_line || r < c->err_line)) {
        /* inih found a line it cannot read; our handlers never saw it. */
        c->err_line = 0;
        config_fail_at(c, r, PB_EINVAL, "syntax error: expected [section] or key = value");
    } else if (r < 0 && !c->err_line) {
        config_fail_at(c, 1, r == -2 ? PB_ENOMEM : PB_EINVAL, "inih failed (%d)", r);
    }
    if (!c->err_line)
        end_section(c);
    if (!c->err_line)
        check_whole(c);
out:
    free(c->linebuf);
    if (c->err_line) {
        config_free(cfg);
        return c->rc;
    }
    return 0;
}

int config_load(const char *path, pb_config *cfg, char *err, size_t errlen)
{
    struct parse_ctx c = {.name = path};

    memset(cfg, 0, sizeof *cfg);
    c.file = fopen(path, "r");
    if (!c.file) {
        int e = errno;
        if (errlen)
            snprintf(err, errlen, "%s: cannot open: %s", path, strerror(e));
        return -e;
    }
    int rc = load(&c, cfg, err, errlen);
    if (fclose(c.file) != 0 && rc == 0) {
        int e = errno;
        config_free(cfg);
        if (errlen)
            snprintf(err, errlen, "%s: close: %s", path, strerror(e));
        return -e;
    }
    return rc;
}

int config_load_string(const char *name, const char *text, pb_config *cfg, char *err, size_t errlen)
{
    struct parse_ctx c = {.name = name, .text = text};
    return load(&c, cfg, err, errlen);
}

void config_free(pb_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->n_rules; i++) {
        free(cfg->rules[i].partition);
        free(cfg->rules[i].match);
    }
    free(cfg->rules);
    for (size_t i = 0; i < cfg->n_mirrors; i++)
        config_mirror_free(&cfg->mirrors[i]);
    free(cfg->mirrors);
    for (size_t i = 0; i < cfg->n_users; i++)
        config_user_free(&cfg->users[i]);
    free(cfg->users);
    free(cfg->path);
    free(cfg->listen_host);
    free(cfg->metrics_host);
    free(cfg->data_dir);
    free(cfg->follow);
    free(cfg->follow_user);
    if (cfg->follow_password) /* a secret: not left in freed memory */
        memset(cfg->follow_password, 0, strlen(cfg->follow_password));
    free(cfg->follow_password);
    free(cfg->follow_password_file);
    free(cfg->follow_ca);
    free(cfg->follow_tls_cert);
    free(cfg->follow_tls_key);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    free(cfg->tls_client_ca);
    memset(cfg, 0, sizeof *cfg);
}
