/* Unit tests for server/config_mirror.c: the [mirror NAME] sections of the
 * configuration: every key, the defaults, and each error with its
 * file:line: reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "config.h"
#include "pb_errors.h"

#include <stdio.h>
#include <string.h>

#define RULE "[partition all]\nmatch = .*\n"

static void test_full_section(void **state)
{
    (void)state;
    pb_config cfg;
    char err[512] = "";
    const char *text = RULE "[mirror to-nats]\n"
                            "nats_url = nats://127.0.0.1:4222, 127.0.0.1:4223 nats://h:4224\n"
                            "partitions = sensors-.*\n"
                            "stream = SENSORS\n"
                            "subject_prefix = pb.sensors.\n"
                            "format = payload\n"
                            "create_stream = no\n"
                            "replicas = 3\n"
                            "duplicate_window = 10m\n"
                            "max_pending = 64\n"
                            "ack_timeout_ms = 2000\n"
                            "hold_retention = no\n";
    if (config_load_string("t.conf", text, &cfg, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(cfg.n_mirrors, 1);
    const pb_mirror_config *m = &cfg.mirrors[0];
    assert_string_equal(m->name, "to-nats");
    assert_int_equal(m->line, 3);
    assert_int_equal(m->n_urls, 3);
    assert_string_equal(m->urls[0], "nats://127.0.0.1:4222");
    assert_string_equal(m->urls[1], "nats://127.0.0.1:4223");
    assert_string_equal(m->urls[2], "nats://h:4224");
    assert_string_equal(m->partitions, "sensors-.*");
    assert_string_equal(m->stream, "SENSORS");
    assert_string_equal(m->subject_prefix, "pb.sensors.");
    assert_int_equal(m->format, PB_MIRROR_PAYLOAD);
    assert_false(m->create_stream);
    assert_int_equal(m->replicas, 3);
    assert_int_equal(m->duplicate_window_s, 600);
    assert_int_equal(m->max_pending, 64);
    assert_int_equal(m->ack_timeout_ms, 2000);
    assert_false(m->hold_retention);
    config_free(&cfg);
}

static void test_defaults(void **state)
{
    (void)state;
    pb_config cfg;
    char err[512] = "";
    const char *text =
        "[mirror a]\nnats_url = 127.0.0.1:4222\nstream = A\nsubject_prefix = pb.\n"
        "[mirror b]\nnats_url = 127.0.0.1:4222\nstream = B\nsubject_prefix = pb.\n" RULE;
    if (config_load_string("t.conf", text, &cfg, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(cfg.n_mirrors, 2);
    const pb_mirror_config *m = &cfg.mirrors[0];
    assert_string_equal(m->partitions, ".*");
    assert_int_equal(m->format, PB_MIRROR_EVENT);
    assert_true(m->create_stream);
    assert_int_equal(m->replicas, 1);
    assert_int_equal(m->duplicate_window_s, 120);
    assert_int_equal(m->max_pending, 1024);
    assert_int_equal(m->ack_timeout_ms, 5000);
    assert_true(m->hold_retention);
    assert_int_equal(cfg.n_rules, 1);
    config_free(&cfg);
}

static const struct {
    const char *text;
    const char *err;
} bad[] = {
    {"[mirror]\n", "t.conf:3: [mirror] needs a name"},
    {"[mirror a/b]\n", "t.conf:3: [mirror a/b]: not a valid mirror name"},
    {"[mirror m]\nstream = S\nsubject_prefix = p.\n", "t.conf:3: [mirror m] has no nats_url"},
    {"[mirror m]\nnats_url = h:1\nsubject_prefix = p.\n", "t.conf:3: [mirror m] has no stream"},
    {"[mirror m]\nnats_url = h:1\nstream = S\n", "t.conf:3: [mirror m] has no subject_prefix"},
    {"[mirror m]\nnats_url = tls://h:1\n", "t.conf:4: nats_url: \"tls://h:1\": only nats://"},
    {"[mirror m]\nnats_url = nats://u:p@h:1\n",
     "t.conf:4: nats_url: \"nats://u:p@h:1\": give HOST:PORT"},
    {"[mirror m]\nnats_url = h\n", "t.conf:4: nats_url: "},
    {"[mirror m]\nnats_url = h:99999\n", "t.conf:4: nats_url: "},
    {"[mirror m]\nnats_url = , ,\n", "t.conf:4: nats_url: must name at least one server"},
    {"[mirror m]\nstream = a.b\n", "t.conf:4: stream: \"a.b\" is not a JetStream stream name"},
    {"[mirror m]\nsubject_prefix = pb\n", "t.conf:4: subject_prefix: \"pb\" must end with \".\""},
    {"[mirror m]\nsubject_prefix = a..b.\n",
     "t.conf:4: subject_prefix: \"a..b.\" has an empty token"},
    {"[mirror m]\nsubject_prefix = a.*.\n", "t.conf:4: subject_prefix: \"a.*.\": the wildcards"},
    {"[mirror m]\nsubject_prefix = a\x01.\n",
     "t.conf:4: subject_prefix: \"a\x01.\": only printable ASCII"},
    {"[mirror m]\nsubject_prefix = $JS.x.\n",
     "t.conf:4: subject_prefix: \"$JS.x.\": that prefix belongs to NATS"},
    {"[mirror m]\nformat = json\n", "t.conf:4: format: \"json\" is not one of event, payload"},
    {"[mirror m]\npartitions = a(b\n",
     "t.conf:4: partitions: bad regex \"a(b\": missing closing parenthesis"},
    {"[mirror m]\ncreate_stream = maybe\n", "t.conf:4: create_stream: \"maybe\" is not yes or no"},
    {"[mirror m]\nreplicas = 6\n", "t.conf:4: replicas: \"6\" is not a whole number in 1..5"},
    {"[mirror m]\nmax_pending = 0\n",
     "t.conf:4: max_pending: \"0\" is not a whole number in 1..65536"},
    {"[mirror m]\nack_timeout_ms = 10\n",
     "t.conf:4: ack_timeout_ms: \"10\" is not a whole number in 100..600000"},
    {"[mirror m]\nduplicate_window = 8d\n", "t.conf:4: duplicate_window: \"8d\" is not a duration"},
    {"[mirror m]\nnats = x\n", "t.conf:4: unknown key \"nats\" in [mirror m]"},
    {"[mirror m]\nnats_url = h:1\nstream = S\nsubject_prefix = p.\n"
     "[mirror m]\nnats_url = h:2\nstream = T\nsubject_prefix = p.\n",
     "t.conf:7: duplicate [mirror m] (first defined at line 3)"},
    {"[mirror m]\nnats_url = h:1\nstream = S\nsubject_prefix = p.\n"
     "[mirror n]\nnats_url = h:2, h:1\nstream = S\nsubject_prefix = q.\n",
     "t.conf:7: [mirror n] writes to stream S like [mirror m] (line 3)"},
};

static void test_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[1024], err[512] = "";
        pb_config cfg;
        snprintf(text, sizeof text, RULE "%s", bad[i].text);
        int rc = config_load_string("t.conf", text, &cfg, err, sizeof err);
        if (rc == 0)
            fail_msg("case %zu loaded; expected \"%s\"", i, bad[i].err);
        if (strncmp(err, bad[i].err, strlen(bad[i].err)) != 0)
            fail_msg("case %zu: got \"%s\", expected \"%s...\"", i, err, bad[i].err);
    }
    /* Two mirrors may share a stream name on different clusters. */
    pb_config cfg;
    char err[512] = "";
    const char *ok = RULE "[mirror m]\nnats_url = h:1\nstream = S\nsubject_prefix = p.\n"
                          "[mirror n]\nnats_url = h:2\nstream = S\nsubject_prefix = p.\n";
    if (config_load_string("t.conf", ok, &cfg, err, sizeof err) != 0)
        fail_msg("%s", err);
    config_free(&cfg);
}

/* The shipped example has a mirror, and it loads. */
static void test_example_conf(void **state)
{
    (void)state;
    const char *self = __FILE__;
    const char *tail = strstr(self, "tests/unit/test_config_mirror.c");
    char path[1024], err[512] = "";
    snprintf(path, sizeof path, "%.*sconf/example.conf", tail ? (int)(tail - self) : 0, self);
    pb_config cfg;
    if (config_load(path, &cfg, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(cfg.n_mirrors, 1);
    assert_int_equal(cfg.mirrors[0].n_urls, 3);
    assert_string_equal(cfg.mirrors[0].subject_prefix, "pb.sensors.");
    assert_int_equal(cfg.mirrors[0].format, PB_MIRROR_PAYLOAD);
    config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_section),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_example_conf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
