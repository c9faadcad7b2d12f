/* Unit tests for server/config.c: defaults, every key, every kind of error
 * with its file:line: reason, value parsers, and the shipped configs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "config.h"
#include "pb_errors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Repo root from this file's path, so the shipped configs are found
 * whatever the cwd of the test run (build/tests or the repo root). */
static void repo_path(char *out, size_t n, const char *rel)
{
    const char *self = __FILE__;
    const char *tail = strstr(self, "tests/unit/test_config.c");
    int root_len = tail ? (int)(tail - self) : 0;
    snprintf(out, n, "%.*s%s", root_len, self, rel);
}

static const char *const minimal_rule = "[partition all]\nmatch = .*\n";

static void test_defaults_without_server_section(void **state)
{
    pb_config cfg;
    char err[512] = "";
    assert_int_equal(config_load_string("t.conf", minimal_rule, &cfg, err, sizeof err), 0);
    assert_string_equal(cfg.path, "t.conf");
    assert_string_equal(cfg.listen_host, "127.0.0.1");
    assert_int_equal(cfg.listen_port, 7420);
    assert_false(cfg.listen_ipv6);
    assert_string_equal(cfg.data_dir, "./data");
    assert_int_equal(cfg.fsync, PB_FSYNC_ALWAYS);
    assert_int_equal(cfg.fsync_interval_ms, 100);
    assert_int_equal(cfg.threads, 1024);
    assert_int_equal(cfg.max_subscriptions_per_address, 512);
    assert_int_equal(cfg.max_subscribe_patterns, 256);
    assert_int_equal(cfg.max_event_bytes, 1024 * 1024);
    assert_int_equal(cfg.max_frame_bytes, 16 * 1024 * 1024);
    assert_int_equal(cfg.max_connections, 1024);
    assert_int_equal(cfg.subscriber_queue_bytes, 4 * 1024 * 1024);
    assert_int_equal(cfg.subscriber_queue_total_bytes, 32 * 1024 * 1024);
    assert_int_equal(cfg.write_deadline_ms, 30000);
    assert_int_equal(cfg.idle_timeout_ms, 60000);
    assert_int_equal(cfg.handshake_timeout_ms, 10000);
    assert_int_equal(cfg.max_handshaking, 1024);
    assert_int_equal(cfg.log_level, LOG_INFO);
    assert_int_equal(cfg.route_cache_entries, 262144);
    assert_int_equal(cfg.n_rules, 1);
    assert_string_equal(cfg.rules[0].partition, "all");
    assert_string_equal(cfg.rules[0].match, ".*");
    assert_int_equal(cfg.rules[0].line, 1);
    assert_int_equal(cfg.rules[0].match_line, 2);
    assert_int_equal(cfg.rules[0].max_group_ref, -1);
    assert_int_equal(cfg.rules[0].segment_bytes, 64 * 1024 * 1024);
    assert_int_equal(cfg.rules[0].rotate_every_s, 0);
    assert_int_equal(cfg.rules[0].utc_offset_s, 0);
    config_free(&cfg);
    assert_null(cfg.rules);
    config_free(&cfg); /* twice is harmless */
}

static void test_every_key_parsed(void **state)
{
    const char *text = "; full config\n"
                       "[server]\n"
                       "  listen = [::1]:9000   # indented, inline comment\n"
                       "data_dir = /tmp/pb data\n"
                       "fsync = interval\n"
                       "fsync_interval_ms = 250 ; inih's own inline comment\n"
                       "threads = 4\n"
                       "max_event_bytes = 512K\n"
                       "max_frame_bytes = 2m\n"
                       "max_connections = 77\n"
                       "subscriber_queue_bytes = 1G\n"
                       "subscriber_queue_total_bytes = 2G\n"
                       "write_deadline_ms = 1500\n"
                       "idle_timeout_ms = 2500\n"
                       "handshake_timeout_ms = 700\n"
                       "max_handshaking = 12\n"
                       "log_level = debug\n"
                       "route_cache_entries = 16\n"
                       "\n"
                       "[partition sensors-$1]\n"
                       "match = sensors\\.([a-z0-9]+)\\..*\n"
                       "segment_bytes = 4K\n"
                       "rotate_every = 90m\n"
                       "utc_offset = -05:30\n"
                       "[ partition   rest ]\n"
                       "match = a#b|.*\n"
                       "rotate_every = 1d\n"
                       "utc_offset = Z\n";
    pb_config cfg;
    char err[512] = "";
    assert_int_equal(config_load_string("t.conf", text, &cfg, err, sizeof err), 0);
    assert_string_equal(err, "");
    assert_string_equal(cfg.listen_host, "::1");
    assert_int_equal(cfg.listen_port, 9000);
    assert_true(cfg.listen_ipv6);
    assert_string_equal(cfg.data_dir, "/tmp/pb data");
    assert_int_equal(cfg.fsync, PB_FSYNC_INTERVAL);
    assert_int_equal(cfg.fsync_interval_ms, 250);
    assert_int_equal(cfg.threads, 4);
    assert_int_equal(cfg.max_event_bytes, 512 * 1024);
    assert_int_equal(cfg.max_frame_bytes, 2 * 1024 * 1024);
    assert_int_equal(cfg.max_connections, 77);
    assert_int_equal(cfg.subscriber_queue_bytes, 1024ULL * 1024 * 1024);
    assert_int_equal(cfg.subscriber_queue_total_bytes, 2048ULL * 1024 * 1024);
    assert_int_equal(cfg.write_deadline_ms, 1500);
    assert_int_equal(cfg.idle_timeout_ms, 2500);
    assert_int_equal(cfg.handshake_timeout_ms, 700);
    assert_int_equal(cfg.max_handshaking, 12);
    assert_int_equal(cfg.log_level, LOG_DEBUG);
    assert_int_equal(cfg.route_cache_entries, 16);
    assert_int_equal(cfg.n_rules, 2);
    const pb_rule *r0 = &cfg.rules[0], *r1 = &cfg.rules[1];
    assert_string_equal(r0->partition, "sensors-$1");
    assert_string_equal(r0->match, "sensors\\.([a-z0-9]+)\\..*");
    assert_int_equal(r0->line, 20);
    assert_int_equal(r0->match_line, 21);
    assert_int_equal(r0->max_group_ref, 1);
    assert_int_equal(r0->segment_bytes, 4096);
    assert_int_equal(r0->rotate_every_s, 90 * 60);
    assert_int_equal(r0->utc_offset_s, -(5 * 3600 + 30 * 60));
    assert_string_equal(r1->partition, "rest");
    assert_string_equal(r1->match, "a#b|.*"); /* '#' not after a blank is kept */
    assert_int_equal(r1->line, 25);
    assert_int_equal(r1->rotate_every_s, 86400);
    assert_int_equal(r1->utc_offset_s, 0);
    assert_string_equal(config_fsync_name(cfg.fsync), "interval");
    assert_string_equal(logging_level_name(cfg.log_level), "debug");
    config_free(&cfg);
}

struct error_case {
    const char *text;
    const char *message;
};

/* Each text must fail with exactly this message. */
static const struct error_case error_cases[] = {
    {"[server]\nfoo = 1\n", "t.conf:2: unknown key \"foo\" in [server]"},
    {"[partition a]\nmatch = .*\nsegment = 1M\n",
     "t.conf:3: unknown key \"segment\" in [partition ...]"},
    {"# c\n[servre]\nlisten = 1.2.3.4:5\n",
     "t.conf:2: unknown section [servre] (expected [server], [partition NAME], [mirror NAME] or "
     "[user NAME])"},
    {"threads = 4\n", "t.conf:1: \"threads\" is outside any section (put it under [server] or "
                      "[partition NAME])"},
    {"[server]\nthis is not ini\n", "t.conf:2: syntax error: expected [section] or key = value"},
    {"[server\n", "t.conf:1: syntax error: expected [section] or key = value"},
    {"[server]\nthreads = abc\n",
     "t.conf:2: threads: \"abc\" is not a whole number (expected 1..4096)"},
    {"[server]\nthreads = -3\n",
     "t.conf:2: threads: \"-3\" is not a whole number (expected 1..4096)"},
    {"[server]\nthreads =\n", "t.conf:2: threads: \"\" is not a whole number (expected 1..4096)"},
    {"[server]\nthreads = 0\n", "t.conf:2: threads: 0 is out of range (expected 1..4096)"},
    {"[server]\nthreads = 4097\n", "t.conf:2: threads: 4097 is out of range (expected 1..4096)"},
    {"[server]\nthreads = 99999999999999999999999\n",
     "t.conf:2: threads: 99999999999999999999999 is out of range (expected 1..4096)"},
    {"[server]\nthreads = 4\nthreads = 5\n",
     "t.conf:3: threads: set twice in this section (also at line 2)"},
    {"[server]\nmax_event_bytes = 1X\n",
     "t.conf:2: max_event_bytes: \"1X\" is not a size (use e.g. 512K, 64M, 1G)"},
    {"[server]\nmax_event_bytes = M\n",
     "t.conf:2: max_event_bytes: \"M\" is not a size (use e.g. 512K, 64M, 1G)"},
    {"[server]\nmax_event_bytes = 1 M\n",
     "t.conf:2: max_event_bytes: \"1 M\" is not a size (use e.g. 512K, 64M, 1G)"},
    {"[server]\nmax_event_bytes = 0\n",
     "t.conf:2: max_event_bytes: 0 is out of range (expected 64..1073741824 bytes)"},
    {"[server]\nmax_event_bytes = 99999999999999999G\n",
     "t.conf:2: max_event_bytes: 99999999999999999G is out of range (expected 64..1073741824 "
     "bytes)"},
    {"[server]\nmax_event_bytes = 2G\nmax_frame_bytes = 2G\n",
     "t.conf:2: max_event_bytes: 2G is out of range (expected 64..1073741824 bytes)"},
    {"[server]\nmax_frame_bytes = 1M\n[partition a]\nmatch = .*\n",
     "t.conf:2: max_frame_bytes (1048576) must be at least max_event_bytes (1048576) + 1024, "
     "so that the largest event fits in a frame"},
    {"[server]\nmax_event_bytes = 8M\n[partition a]\nmatch = .*\n",
     "t.conf:2: subscriber_queue_bytes (4194304) must be at least max_event_bytes (8388608), "
     "so that the largest event fits in a live queue"},
    {"[server]\nsubscriber_queue_total_bytes = 512K\n[partition a]\nmatch = .*\n",
     "t.conf:2: subscriber_queue_total_bytes (524288) must be at least max_event_bytes (1048576) "
     "+ 4K, so that the largest event fits in the live queues"},
    {"[server]\nsubscriber_queue_total_bytes = 1K\n",
     "t.conf:2: subscriber_queue_total_bytes: 1K is out of range (expected "
     "4096..1099511627776 bytes)"},
    {"[server]\nfsync = sometimes\n",
     "t.conf:2: fsync: \"sometimes\" is not one of always, interval, never"},
    {"[server]\nlog_level = verbose\n",
     "t.conf:2: log_level: \"verbose\" is not one of debug, info, warn, error"},
    {"[server]\nlisten = localhost:7420\n",
     "t.conf:2: listen: \"localhost:7420\": \"localhost\" is not a numeric IPv4 address"},
    {"[server]\nlisten = ::1:7420\n",
     "t.conf:2: listen: \"::1:7420\": put an IPv6 address in brackets, e.g. [::1]:7420"},
    {"[server]\nlisten = [::1]7420\n",
     "t.conf:2: listen: \"[::1]7420\" is not host:port (e.g. 127.0.0.1:7420 or [::1]:7420)"},
    {"[server]\nlisten = 127.0.0.1\n",
     "t.conf:2: listen: \"127.0.0.1\" is not host:port (e.g. 127.0.0.1:7420 or [::1]:7420)"},
    {"[server]\nlisten = 127.0.0.1:70000\n",
     "t.conf:2: listen: \"127.0.0.1:70000\": port must be a number 0..65535"},
    {"[server]\nlisten = [1.2.3.4]:80\n",
     "t.conf:2: listen: \"[1.2.3.4]:80\": \"1.2.3.4\" is not a numeric IPv6 address"},
    {"[server]\ndata_dir =\n", "t.conf:2: data_dir: must not be empty"},
    {"[server]\n[server]\n", "t.conf:2: duplicate [server] section (first at line 1)"},
    {"[server]\nroute_cache_entries = 8\n",
     "t.conf:2: route_cache_entries: 8 is out of range (expected 16..16777216)"},
    {"[server]\ndedup_max_entries = 16777217\n",
     "t.conf:2: dedup_max_entries: 16777217 is out of range (expected 1..16777216)"},
    {"[partition a]\nmatch = .*\nrotate_every = 2x\n",
     "t.conf:3: rotate_every: \"2x\" is not a duration (use e.g. 30m, 1h, 1d, or none)"},
    {"[partition a]\nmatch = .*\nrotate_every = 30\n",
     "t.conf:3: rotate_every: \"30\" is not a duration (use e.g. 30m, 1h, 1d, or none)"},
    {"[partition a]\nmatch = .*\nrotate_every = d\n",
     "t.conf:3: rotate_every: \"d\" is not a duration (use e.g. 30m, 1h, 1d, or none)"},
    {"[partition a]\nmatch = .*\nrotate_every = -1d\n",
     "t.conf:3: rotate_every: \"-1d\" is not a duration (use e.g. 30m, 1h, 1d, or none)"},
    {"[partition a]\nmatch = .*\nrotate_every = 0s\n",
     "t.conf:3: rotate_every: 0s: must be more than 0 (or none)"},
    {"[partition a]\nmatch = .*\nrotate_every = 3651d\n",
     "t.conf:3: rotate_every: 3651d is too long (at most 3650d; use none to rotate by size "
     "only)"},
    {"[partition a]\nmatch = .*\nrotate_every = 999999999999999999999d\n",
     "t.conf:3: rotate_every: 999999999999999999999d is too long (at most 3650d; use none to "
     "rotate by size only)"},
    {"[partition a]\nmatch = .*\nutc_offset = +24:00\n",
     "t.conf:3: utc_offset: \"+24:00\" is not a UTC offset (use +HH:MM, -HH:MM or Z)"},
    {"[partition a]\nmatch = .*\nutc_offset = 02:00\n",
     "t.conf:3: utc_offset: \"02:00\" is not a UTC offset (use +HH:MM, -HH:MM or Z)"},
    {"[partition a]\nmatch = .*\nsegment_bytes = 1K\n",
     "t.conf:3: segment_bytes: 1K is out of range (expected 4096..1099511627776 bytes)"},
    {"[partition a]\nmatch = a(b\n",
     "t.conf:2: match: bad regex \"a(b\": missing closing parenthesis at offset 3"},
    {"[partition a]\nmatch = a{2,1}\n",
     "t.conf:2: match: bad regex \"a{2,1}\": numbers out of order in {} quantifier at offset 5"},
    {"[partition a]\nmatch =\n", "t.conf:2: match: must not be empty (use .* for any topic)"},
    {"[partition s-$2]\nmatch = s\\.([a-z]+)\n",
     "t.conf:2: match: partition name \"s-$2\" uses $2 but \"s\\.([a-z]+)\" has 1 capture "
     "group(s)"},
    {"[partition s-$1]\nmatch = s\\..*\n",
     "t.conf:2: match: partition name \"s-$1\" uses $1 but \"s\\..*\" has 0 capture group(s)"},
    {"[partition a]\n\n[partition b]\nmatch = .*\n",
     "t.conf:1: [partition a] has no match = REGEX line"},
    {"[server]\n[partition z]\n", "t.conf:2: [partition z] has no match = REGEX line"},
    {"[partition a]\nmatch = x\n[partition b]\nmatch = y\n[partition a]\nmatch = .*\n",
     "t.conf:5: duplicate partition \"a\" (first defined at line 1)"},
    {"[partition]\nmatch = .*\n",
     "t.conf:1: [partition] needs a name: [partition NAME], e.g. [partition events]"},
    {"[partition a/b]\nmatch = .*\n",
     "t.conf:1: [partition a/b]: '/' is not allowed in a partition name (use A-Z a-z 0-9 . _ "
     "-)"},
    {"[partition ..]\nmatch = .*\n",
     "t.conf:1: [partition ..]: a partition name may not start with \".\" (readers skip such "
     "directories, so its events would be invisible; 1..100 characters of A-Z a-z 0-9 . _ -, "
     "not starting with \".\")"},
    /* F3: a name readers would skip is refused, static or as a template. */
    {"[partition .hidden]\nmatch = .*\n",
     "t.conf:1: [partition .hidden]: a partition name may not start with \".\" (readers skip "
     "such directories, so its events would be invisible; 1..100 characters of A-Z a-z 0-9 . _ "
     "-, not starting with \".\")"},
    {"[partition .t-$1]\nmatch = t\\.(.*)\n",
     "t.conf:1: [partition .t-$1]: a partition name may not start with \".\" (readers skip "
     "such directories, so its events would be invisible; 1..100 characters of A-Z a-z 0-9 . _ "
     "-, not starting with \".\")"},
    {"[partition p-$x]\nmatch = .*\n",
     "t.conf:1: [partition p-$x]: \"$\" must be followed by a group number 0..9 ($0 is the "
     "whole topic, $1 the first capture group)"},
    {"[partition p-$]\nmatch = .*\n",
     "t.conf:1: [partition p-$]: \"$\" must be followed by a group number 0..9 ($0 is the "
     "whole topic, $1 the first capture group)"},
    {"", "t.conf:1: no [partition NAME] rules: every topic would be refused (add e.g. "
         "[partition events] with match = .*)"},
    {"[server]\nthreads = 3\n\n",
     "t.conf:3: no [partition NAME] rules: every topic would be refused (add e.g. "
     "[partition events] with match = .*)"},
    /* [user NAME] and the auth settings */
    {"[partition a]\nmatch = .*\n[user bob smith]\n",
     "t.conf:3: [user bob smith]: not a valid user name (1..64 characters of A-Z a-z 0-9 . _ - @)"},
    {"[partition a]\nmatch = .*\n[user bob]\npublish = .*\n",
     "t.conf:3: [user bob] has no password_hash (make one with `protobus passwd`)"},
    {"[partition a]\nmatch = .*\n[user bob]\npassword = hunter2\n",
     "t.conf:4: password: a plain password is never accepted in the configuration; put "
     "password_hash = (the output of `protobus passwd`)"},
    {"[partition a]\nmatch = .*\n[user bob]\npassword_hash = $2y$10$abc\n",
     "t.conf:4: password_hash: not an argon2id hash (expected \"$argon2id$v=19$...\", at most "
     "127 characters, as `protobus passwd` prints it)"},
    {"[partition a]\nmatch = .*\n[user bob]\npassword_hash = "
     "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$"
     "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g\nsubscribe = ok a(b\n",
     "t.conf:5: subscribe: pattern \"a(b\": missing closing parenthesis at offset 3"},
    {"[partition a]\nmatch = .*\n[user bob]\npassword_hash = "
     "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$"
     "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g\n[user bob]\npassword_hash = "
     "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$"
     "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g\n",
     "t.conf:5: [user bob] is defined twice (first at line 3)"},
    {"[server]\nauth = maybe\n", "t.conf:2: auth: \"maybe\" is not one of none, required"},
    {"[server]\ndata_mode = 0666\n",
     "t.conf:2: data_mode: \"0666\" is not an octal mode within 0644 with the owner's rw (e.g. "
     "0600, 0640, 0644)"},
};

/* retain_age / retain_bytes in [server] are the defaults of every rule;
 * a rule may override either; min_free_bytes is auto, a size, or none. */
static void test_retention_keys(void **state)
{
    pb_config cfg;
    char err[512] = "";
    const char *text = "[server]\nretain_age = 7d\nretain_bytes = 10G\nmin_free_bytes = 2G\n"
                       "recycle_segments = no\n"
                       "[partition a]\nmatch = a\nretain_age = none\n"
                       "[partition b]\nmatch = b\nretain_bytes = 64K\n"
                       "[partition c]\nmatch = .*\n";
    assert_int_equal(config_load_string("t.conf", text, &cfg, err, sizeof err), 0);
    assert_int_equal(cfg.min_free_bytes, 2ull << 30);
    assert_false(cfg.recycle_segments);
    assert_int_equal(cfg.rules[0].retain_age_s, 0);
    assert_int_equal(cfg.rules[0].retain_bytes, 10ull << 30);
    assert_int_equal(cfg.rules[1].retain_age_s, 7 * 86400);
    assert_int_equal(cfg.rules[1].retain_bytes, 64 * 1024);
    assert_int_equal(cfg.rules[2].retain_age_s, 7 * 86400);
    assert_int_equal(cfg.rules[2].retain_bytes, 10ull << 30);
    config_free(&cfg);
    assert_int_equal(config_load_string("t.conf", minimal_rule, &cfg, err, sizeof err), 0);
    assert_int_equal(cfg.min_free_bytes, UINT64_MAX); /* auto */
    assert_true(cfg.recycle_segments);                 /* on by default */
    assert_int_equal(cfg.rules[0].retain_age_s, 0);
    assert_int_equal(cfg.rules[0].retain_bytes, 0);
    config_free(&cfg);
    static const char *const bad[][2] = {
        {"[server]\nretain_age = 7x\n[partition a]\nmatch = .*\n",
         "t.conf:2: retain_age: \"7x\" is not a duration (use e.g. 12h, 7d, or none)"},
        {"[partition a]\nmatch = .*\nretain_bytes = 10\n",
         "t.conf:3: retain_bytes: 10 is out of range (expected 65536..9223372036854775807 "
         "bytes)"},
        {"[server]\nmin_free_bytes = lots\n[partition a]\nmatch = .*\n",
         "t.conf:2: min_free_bytes: \"lots\" is not a size (use e.g. 512K, 64M, 1G)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(config_load_string("t.conf", bad[i][0], &cfg, err, sizeof err), PB_EINVAL);
        assert_string_equal(err, bad[i][1]);
    }
}

/* compress / compress_level in [server] are the defaults of every rule;
 * a rule may override either. */
static void test_compress_keys(void **state)
{
    pb_config cfg;
    char err[512] = "";
    const char *text = "[server]\ncompress = zstd\n"
                       "[partition a]\nmatch = a\ncompress = none\n"
                       "[partition b]\nmatch = b\ncompress_level = -3\n"
                       "[partition c]\nmatch = .*\n";
    assert_int_equal(config_load_string("t.conf", text, &cfg, err, sizeof err), 0);
    assert_int_equal(cfg.rules[0].compress, 0);
    assert_int_equal(cfg.rules[1].compress, 1);
    assert_int_equal(cfg.rules[1].compress_level, -3);
    assert_int_equal(cfg.rules[2].compress, 1);
    assert_int_equal(cfg.rules[2].compress_level, 3);
    config_free(&cfg);
    assert_int_equal(config_load_string("t.conf", minimal_rule, &cfg, err, sizeof err), 0);
    assert_int_equal(cfg.rules[0].compress, 0);
    config_free(&cfg);
    static const char *const bad[][2] = {
        {"[server]\ncompress = lz4\n[partition a]\nmatch = .*\n",
         "t.conf:2: compress: \"lz4\" is not a compression (use zstd or none)"},
        {"[partition a]\nmatch = .*\ncompress_level = 0\n",
         "t.conf:3: compress_level: \"0\" is not a zstd level (expected 1..19, or -7..-1: "
         "faster, larger)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(config_load_string("t.conf", bad[i][0], &cfg, err, sizeof err), PB_EINVAL);
        assert_string_equal(err, bad[i][1]);
    }
}

static void test_each_error_names_line_and_reason(void **state)
{
    for (size_t i = 0; i < sizeof error_cases / sizeof error_cases[0]; i++) {
        pb_config cfg;
        char err[512] = "";
        int rc = config_load_string("t.conf", error_cases[i].text, &cfg, err, sizeof err);
        if (rc == 0)
            fail_msg("case %zu loaded but should fail: %s", i, error_cases[i].text);
        assert_int_equal(rc, PB_EINVAL);
        assert_string_equal(err, error_cases[i].message);
        assert_null(cfg.rules);
    }
}

/* [user] sections load with their patterns (a key may repeat); the
 * exposure check refuses auth = none off loopback unless allowed. */
static void test_users_and_exposure(void **state)
{
    (void)state;
    static const char text[] =
        "[server]\nlisten = 0.0.0.0:7420\nauth = required\ndata_mode = 0640\n"
        "[partition a]\nmatch = .*\n"
        "[user alice]\npassword_hash = HASH\npublish = a\\..* b\npublish = c\n"
        "subscribe = .*\ndeny_subscribe = a\\.secret\n";
    char buf[1024];
    const char *h = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g";
    const char *at = strstr(text, "HASH");
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - text), text, h, at + 4);
    pb_config cfg;
    char err[512] = "";
    assert_int_equal(config_load_string("t.conf", buf, &cfg, err, sizeof err), 0);
    assert_int_equal(cfg.auth, PB_AUTH_REQUIRED);
    assert_int_equal(cfg.data_mode, 0640);
    assert_int_equal(cfg.n_users, 1);
    assert_string_equal(cfg.users[0].name, "alice");
    assert_string_equal(cfg.users[0].password_hash, h);
    assert_int_equal(cfg.users[0].n_publish, 3);
    assert_string_equal(cfg.users[0].publish[2], "c");
    assert_int_equal(cfg.users[0].n_deny_subscribe, 1);
    assert_int_equal(config_check_exposure(&cfg, err, sizeof err), 0);
    cfg.auth = PB_AUTH_NONE;
    assert_int_equal(config_check_exposure(&cfg, err, sizeof err), PB_EINVAL);
    assert_non_null(strstr(err, "allow_anonymous_remote = yes"));
    cfg.allow_anonymous_remote = true;
    assert_int_equal(config_check_exposure(&cfg, err, sizeof err), 0);
    config_free(&cfg);
}

/* The standby's follow_* keys load; the exposure check refuses the
 * combinations that cannot work, naming the keys. */
static void test_follow_keys(void **state)
{
    (void)state;
    static const char text[] = "[server]\nfollow = 10.0.0.1:7420\nfollow_user = standby\n"
                               "follow_password_file = /etc/pw\nfollow_tls = yes\n"
                               "follow_ca = ca.pem\nfollow_tls_cert = c.pem\n"
                               "follow_tls_key = c.key\n[partition a]\nmatch = .*\n";
    pb_config cfg;
    char err[512] = "";
    assert_int_equal(config_load_string("t.conf", text, &cfg, err, sizeof err), 0);
    assert_string_equal(cfg.follow_user, "standby");
    assert_string_equal(cfg.follow_password_file, "/etc/pw");
    assert_true(cfg.follow_tls);
    assert_string_equal(cfg.follow_ca, "ca.pem");
    assert_int_equal(config_check_exposure(&cfg, err, sizeof err), 0);
    cfg.follow_password = strdup("x");
    assert_int_equal(config_check_exposure(&cfg, err, sizeof err), PB_EINVAL);
    assert_non_null(strstr(err, "follow_password and follow_password_file are both set"));
    free(cfg.follow_password_file);
    cfg.follow_password_file = NULL;
    cfg.follow_tls = false;
    assert_int_equal(config_check_exposure(&cfg, err, sizeof err), PB_EINVAL);
    assert_string_equal(err, "follow_ca is set but follow_tls is not: set follow_tls = yes");
    cfg.follow_tls = true;
    free(cfg.follow_tls_key);
    cfg.follow_tls_key = NULL;
    assert_int_equal(config_check_exposure(&cfg, err, sizeof err), PB_EINVAL);
    assert_non_null(strstr(err, "follow_tls_cert is set without follow_tls_key"));
    config_free(&cfg);
    assert_int_equal(config_load_string("t.conf", "[server]\nfollow_tls = maybe\n", &cfg, err,
                                        sizeof err),
                     PB_EINVAL);
    assert_non_null(strstr(err, "t.conf:2: follow_tls"));
}

static void test_line_too_long(void **state)
{
    char text[600];
    snprintf(text, sizeof text, "[partition a]\nmatch = %0250d\n", 7);
    pb_config cfg;
    char err[512] = "";
    assert_int_equal(config_load_string("t.conf", text, &cfg, err, sizeof err), PB_EINVAL);
    assert_string_equal(err, "t.conf:2: line is longer than 196 characters");
}

static void test_partition_name_length(void **state)
{
    char text[400], name[120];
    memset(name, 'n', 101);
    name[101] = '\0';
    snprintf(text, sizeof text, "[partition %s]\nmatch = .*\n", name);
    pb_config cfg;
    char err[512] = "", want[512];
    assert_int_equal(config_load_string("t.conf", text, &cfg, err, sizeof err), PB_EINVAL);
    snprintf(want, sizeof want, "t.conf:1: [partition %s]: longer than 100 characters", name);
    assert_string_equal(err, want);
    name[100] = '\0'; /* exactly 100: fine */
    snprintf(text, sizeof text, "[partition %s]\nmatch = .*\n", name);
    assert_int_equal(config_load_string("t.conf", text, &cfg, err, sizeof err), 0);
    config_free(&cfg);
}

/* Through a real file: the message names the path; a missing file says so. */
static void test_file_errors_name_the_path(void **state)
{
    char dir[] = "/tmp/pb_test_config_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], err[512] = "", want[600];
    snprintf(path, sizeof path, "%s/x.conf", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs("[server]\n\n# rules\n[partition a]\nmatch = .*\nrotate_every = 2x\n", f) >=
                0);
    assert_int_equal(fclose(f), 0);

    pb_config cfg;
    assert_int_equal(config_load(path, &cfg, err, sizeof err), PB_EINVAL);
    snprintf(want, sizeof want,
             "%s:6: rotate_every: \"2x\" is not a duration (use e.g. 30m, 1h, 1d, or none)", path);
    assert_string_equal(err, want);

    assert_int_equal(unlink(path), 0);
    assert_int_equal(config_load(path, &cfg, err, sizeof err), -ENOENT);
    snprintf(want, sizeof want, "%s: cannot open: No such file or directory", path);
    assert_string_equal(err, want);
    assert_int_equal(rmdir(dir), 0);

    /* errlen 0: no message, still the code */
    assert_int_equal(config_load_string("t.conf", "", &cfg, NULL, 0), PB_EINVAL);
}

static void test_size_parser(void **state)
{
    uint64_t v;
    assert_int_equal(config_parse_size("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(config_parse_size("512", &v), 0);
    assert_int_equal(v, 512);
    assert_int_equal(config_parse_size("1K", &v), 0);
    assert_int_equal(v, 1024);
    assert_int_equal(config_parse_size("3m", &v), 0);
    assert_int_equal(v, 3ULL << 20);
    assert_int_equal(config_parse_size("2G", &v), 0);
    assert_int_equal(v, 2ULL << 30);
    assert_int_equal(config_parse_size("18446744073709551615", &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(config_parse_size("18446744073709551616", &v), PB_ETOOBIG);
    assert_int_equal(config_parse_size("17179869184G", &v), PB_ETOOBIG); /* 2^34 G = 2^64 */
    assert_int_equal(config_parse_size("", &v), PB_EINVAL);
    assert_int_equal(config_parse_size("K", &v), PB_EINVAL);
    assert_int_equal(config_parse_size("-1K", &v), PB_EINVAL);
    assert_int_equal(config_parse_size("+1K", &v), PB_EINVAL);
    assert_int_equal(config_parse_size("1KB", &v), PB_EINVAL);
    assert_int_equal(config_parse_size("1T", &v), PB_EINVAL);
    assert_int_equal(config_parse_size("1.5M", &v), PB_EINVAL);
}

static void test_duration_parser(void **state)
{
    int64_t s;
    assert_int_equal(config_parse_duration("none", &s), 0);
    assert_int_equal(s, 0);
    assert_int_equal(config_parse_duration("0s", &s), 0);
    assert_int_equal(s, 0);
    assert_int_equal(config_parse_duration("45s", &s), 0);
    assert_int_equal(s, 45);
    assert_int_equal(config_parse_duration("30m", &s), 0);
    assert_int_equal(s, 1800);
    assert_int_equal(config_parse_duration("1h", &s), 0);
    assert_int_equal(s, 3600);
    assert_int_equal(config_parse_duration("7d", &s), 0);
    assert_int_equal(s, 7 * 86400);
    assert_int_equal(config_parse_duration("106751991167300d", &s), 0); /* < 2^63 s */
    assert_int_equal(config_parse_duration("106751991167301d", &s), PB_ETOOBIG);
    assert_int_equal(config_parse_duration("99999999999999999999s", &s), PB_ETOOBIG);
    assert_int_equal(config_parse_duration("", &s), PB_EINVAL);
    assert_int_equal(config_parse_duration("h", &s), PB_EINVAL);
    assert_int_equal(config_parse_duration("10", &s), PB_EINVAL);
    assert_int_equal(config_parse_duration("-1h", &s), PB_EINVAL);
    assert_int_equal(config_parse_duration("1w", &s), PB_EINVAL);
    assert_int_equal(config_parse_duration("1hh", &s), PB_EINVAL);
    assert_int_equal(config_parse_duration("1H", &s), PB_EINVAL);
    assert_int_equal(config_parse_duration("None", &s), PB_EINVAL);
}

static void test_utc_offset_parser(void **state)
{
    int32_t o;
    assert_int_equal(config_parse_utc_offset("Z", &o), 0);
    assert_int_equal(o, 0);
    assert_int_equal(config_parse_utc_offset("z", &o), 0);
    assert_int_equal(config_parse_utc_offset("+00:00", &o), 0);
    assert_int_equal(o, 0);
    assert_int_equal(config_parse_utc_offset("-00:00", &o), 0);
    assert_int_equal(o, 0);
    assert_int_equal(config_parse_utc_offset("+02:00", &o), 0);
    assert_int_equal(o, 7200);
    assert_int_equal(config_parse_utc_offset("-09:30", &o), 0);
    assert_int_equal(o, -(9 * 3600 + 1800));
    assert_int_equal(config_parse_utc_offset("+23:59", &o), 0);
    assert_int_equal(o, 23 * 3600 + 59 * 60);
    assert_int_equal(config_parse_utc_offset("+24:00", &o), PB_EINVAL);
    assert_int_equal(config_parse_utc_offset("+01:60", &o), PB_EINVAL);
    assert_int_equal(config_parse_utc_offset("01:00", &o), PB_EINVAL);
    assert_int_equal(config_parse_utc_offset("+1:00", &o), PB_EINVAL);
    assert_int_equal(config_parse_utc_offset("+0100", &o), PB_EINVAL);
    assert_int_equal(config_parse_utc_offset("+01:00Z", &o), PB_EINVAL);
    assert_int_equal(config_parse_utc_offset("", &o), PB_EINVAL);
    assert_int_equal(config_parse_utc_offset("ZZ", &o), PB_EINVAL);
}

static void test_shipped_configs_load(void **state)
{
    char path[1024], err[512] = "";
    pb_config cfg;

    repo_path(path, sizeof path, "conf/protobusd.conf");
    if (config_load(path, &cfg, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_string_equal(cfg.listen_host, "127.0.0.1");
    assert_int_equal(cfg.listen_port, 7420);
    assert_string_equal(cfg.data_dir, "./data");
    assert_int_equal(cfg.fsync, PB_FSYNC_ALWAYS);
    assert_true(cfg.n_rules >= 1);
    assert_string_equal(cfg.rules[cfg.n_rules - 1].match, ".*"); /* the catch-all is last */
    config_free(&cfg);

    repo_path(path, sizeof path, "conf/example.conf");
    if (config_load(path, &cfg, err, sizeof err) != 0)
        fail_msg("%s", err);
    bool size_only = false, daily_offset = false, capture = false;
    for (size_t i = 0; i < cfg.n_rules; i++) {
        const pb_rule *r = &cfg.rules[i];
        size_only |= r->rotate_every_s == 0 && r->segment_bytes != 64 * 1024 * 1024;
        daily_offset |= r->rotate_every_s == 86400 && r->utc_offset_s != 0;
        capture |= r->max_group_ref >= 1;
    }
    assert_true(size_only);
    assert_true(daily_offset);
    assert_true(capture);
    config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_without_server_section),
        cmocka_unit_test(test_every_key_parsed),
        cmocka_unit_test(test_each_error_names_line_and_reason),
        cmocka_unit_test(test_retention_keys),
        cmocka_unit_test(test_compress_keys),
        cmocka_unit_test(test_line_too_long),
        cmocka_unit_test(test_users_and_exposure),
        cmocka_unit_test(test_follow_keys),
        cmocka_unit_test(test_partition_name_length),
        cmocka_unit_test(test_file_errors_name_the_path),
        cmocka_unit_test(test_size_parser),
        cmocka_unit_test(test_duration_parser),
        cmocka_unit_test(test_utc_offset_parser),
        cmocka_unit_test(test_shipped_configs_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
