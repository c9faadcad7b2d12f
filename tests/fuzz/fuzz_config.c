/*
 * Fuzz target: the config parser (config_load_string, inih underneath, PCRE2
 * compiling each `match`) and the value parsers it shares with the CLI.
 *
 * Input: the text of a config file (cut at the first NUL, as a file read
 * as text would be).
 *
 * Oracles: a refused file gets a message "fuzz.conf:LINE: reason"; an
 * accepted one satisfies the cross-key rules the daemon relies on without
 * checking again (at least one rule, frame bound over event bound plus
 * overhead, live queue over one event, nonzero bounds and timeouts, static
 * partition names that are valid directory names; [user] sections with a
 * name, an argon2id hash and unique names); config_free may be
 * called twice. The value parsers, run on the first line, return only their
 * documented codes, and results inside their documented ranges.
 *
 * Threads: one.
 */
#include "fuzz.h"

#include "config.h"
#include "pb_errors.h"

#include <string.h>

static void check_value_parsers(const char *line)
{
    uint64_t bytes;
    int rc = config_parse_size(line, &bytes);
    FUZZ_CHECK(rc == 0 || rc == PB_EINVAL || rc == PB_ETOOBIG);
    int64_t secs;
    rc = config_parse_duration(line, &secs);
    FUZZ_CHECK(rc == 0 || rc == PB_EINVAL || rc == PB_ETOOBIG);
    if (rc == 0)
        FUZZ_CHECK(secs >= 0);
    int32_t off;
    rc = config_parse_utc_offset(line, &off);
    FUZZ_CHECK(rc == 0 || rc == PB_EINVAL || rc == PB_ETOOBIG);
    if (rc == 0)
        FUZZ_CHECK(off > -24 * 3600 && off < 24 * 3600 && off % 60 == 0);
    (void)partname_valid(line, strlen(line));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    char line[256];
    size_t ll = strcspn(text, "\n");
    if (ll >= sizeof line)
        ll = sizeof line - 1;
    memcpy(line, text, ll);
    line[ll] = '\0';
    check_value_parsers(line);

    pb_config cfg;
    char err[1024];
    err[0] = '\0';
    int rc = config_load_string("fuzz.conf", text, &cfg, err, sizeof err);
    if (rc < 0) {
        FUZZ_CHECK(strncmp(err, "fuzz.conf:", 10) == 0);
        FUZZ_CHECK(err[10] >= '1' && err[10] <= '9');
        FUZZ_CHECK(strstr(err + 10, ": ") != NULL);
    } else {
        FUZZ_CHECK(rc == 0);
        FUZZ_CHECK(cfg.n_rules >= 1 && cfg.rules != NULL);
        FUZZ_CHECK(cfg.max_frame_bytes >= cfg.max_event_bytes + CONFIG_FRAME_OVERHEAD);
        FUZZ_CHECK(cfg.subscriber_queue_bytes >= cfg.max_event_bytes);
        FUZZ_CHECK(cfg.threads >= 1 && cfg.max_connections >= 1);
        FUZZ_CHECK(cfg.write_deadline_ms >= 1 && cfg.idle_timeout_ms >= 1);
        FUZZ_CHECK(cfg.listen_host && cfg.data_dir);
        for (size_t i = 0; i < cfg.n_rules; i++) {
            const pb_rule *r = &cfg.rules[i];
            FUZZ_CHECK(r->partition && r->match && r->line >= 1);
            FUZZ_CHECK(r->max_group_ref >= -1 && r->max_group_ref <= 9);
            FUZZ_CHECK(r->segment_bytes > 0);
            FUZZ_CHECK(r->rotate_every_s >= 0);
            if (r->max_group_ref < 0)
                FUZZ_CHECK(partname_valid(r->partition, strlen(r->partition)));
        }
        /* [user] sections: a name, an argon2id hash, and patterns that
         * compiled (the daemon's acl compiles them again without a check). */
        for (size_t i = 0; i < cfg.n_users; i++) {
            const pb_user_config *u = &cfg.users[i];
            FUZZ_CHECK(u->name && u->name[0] && strlen(u->name) <= PB_USER_NAME_MAX);
            FUZZ_CHECK(u->password_hash && strncmp(u->password_hash, "$argon2id$", 10) == 0);
            for (size_t j = 0; j < u->n_publish; j++)
                FUZZ_CHECK(u->publish[j][0] != '\0');
            for (size_t j = 0; j < i; j++)
                FUZZ_CHECK(strcmp(cfg.users[j].name, u->name) != 0);
        }
        FUZZ_CHECK(cfg.data_mode && (cfg.data_mode & ~0644u) == 0 &&
                   (cfg.data_mode & 0600) == 0600);
        char why[600];
        int ex = config_check_exposure(&cfg, why, sizeof why);
        FUZZ_CHECK(ex == 0 || (ex == PB_EINVAL && why[0]));
        config_free(&cfg);
        config_free(&cfg);
    }
    free(text);
    return 0;
}
