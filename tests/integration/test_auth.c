/*
 * Integration: access control (issue 11) against the real protobusd with
 * `auth = required`: the handshake's refusals (wrong password, unknown
 * user, no credentials, the handshake deadline), the delay of a refusal
 * and its growth with repeated failures, frames pipelined behind a Hello
 * waiting for its verdict, publish rights (a batch with one forbidden
 * topic refused whole, PERMISSION_DENIED naming topic and event; deny
 * beats allow), read rights in every start mode and live, against
 * subscription patterns crafted to match more (alternations, lookaheads,
 * "(?s).*"), a user without read rights, a SIGHUP reload (good and bad
 * file), the start-up refusal of auth = none on a non-loopback address,
 * and the data directory's modes. Nothing logged contains a password.
 *
 * Threads: the test's main thread only (cmocka asserts).
 */
#include "itest.h"
#include "protobus.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <signal.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define TIMEOUT_MS 10000
#define DELAY_MS   150 /* auth_failure_delay_ms of these daemons */
#define PASSWORD   "correct horse battery staple"
#define ALICE_PW   "alice-pw-6d1f0a"

static char admin_hash[crypto_pwhash_STRBYTES], alice_hash[crypto_pwhash_STRBYTES];

typedef struct fixture {
    itest_daemon d;
    char addr[64];
} fixture;

static int setup(void **state)
{
    return itest_fixture_setup(state, sizeof(fixture));
}

/* The [user] sections every test starts with (alice's extra lines added). */
static void users_conf(char *out, size_t n, const char *alice_extra)
{
    snprintf(out, n,
             "[partition events]\nmatch = .*\n"
             "[user admin]\npassword_hash = %s\npublish = .*\nsubscribe = .*\n"
             "[user alice]\npassword_hash = %s\npublish = orders\\..*\n"
             "subscribe = orders\\..*\ndeny_subscribe = orders\\.secret\n%s"
             "[user mute]\npassword_hash = %s\npublish = mute\\..*\n",
             admin_hash, alice_hash, alice_extra ? alice_extra : "", admin_hash);
}

static void start(fixture *f, const char *alice_extra)
{
    char rules[2048];
    users_conf(rules, sizeof rules, alice_extra);
    char server[128];
    snprintf(server, sizeof server,
             "auth = required\nauth_failure_delay_ms = %d\nhandshake_timeout_ms = 400\n", DELAY_MS);
    assert_int_equal(itest_daemon_start(&f->d, server, rules), 0);
    snprintf(f->addr, sizeof f->addr, "127.0.0.1:%u", (unsigned)f->d.port);
}

/* pb_client_connect as user/password; the return code, *out the client. */
static int connect_as(const fixture *f, const char *user, const char *password, pb_client **out,
                      char *err, size_t errlen)
{
    pb_client_options o;
    pb_client_options_init(&o);
    o.user = user;
    o.password = password;
    *out = NULL;
    return pb_client_connect(out, f->addr, &o, err, errlen);
}

static pb_client *login(const fixture *f, const char *user, const char *password)
{
    pb_client *c;
    char err[256] = "";
    int rc = connect_as(f, user, password, &c, err, sizeof err);
    if (rc != 0)
        print_error("login %s: %s\n", user, err);
    assert_int_equal(rc, 0);
    return c;
}

/* Publishes n topics in one batch; returns the flush's code. */
static int publish(pb_client *c, const char *const *topics, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        pb_event ev = {.topic = topics[i], .payload = topics[i], .payload_len = strlen(topics[i])};
        assert_int_equal(pb_client_publish(c, &ev), 0);
    }
    return pb_client_flush(c, TIMEOUT_MS, NULL, NULL);
}

/* The topics a subscription delivers, joined by ' ', until caught up (or,
 * with live_ms > 0, until live_ms pass without an event). */
static void collect(pb_client *c, const pb_subscription *s, int live_ms, char *out, size_t n)
{
    out[0] = '\0';
    int rc = pb_client_subscribe(c, s);
    if (rc != 0)
        print_error("subscribe: %s\n", pb_client_message(c));
    assert_int_equal(rc, 0);
    for (int k = 0; k < 1000; k++) {
        pb_item it;
        rc = pb_client_next(c, &it, live_ms > 0 ? live_ms : TIMEOUT_MS);
        if (rc == PB_ETIMEDOUT && live_ms > 0)
            return;
        assert_int_equal(rc, 0);
        if (it.kind == PB_ITEM_CAUGHT_UP && live_ms <= 0)
            return;
        if (it.kind != PB_ITEM_EVENT)
            continue;
        size_t used = strlen(out);
        snprintf(out + used, n - used, "%s%s", used ? " " : "", it.event.topic);
    }
    fail_msg("subscription did not end");
}

/* Publishes, as admin, the topics every read test looks for. */
static void seed(fixture *f)
{
    pb_client *a = login(f, "admin", PASSWORD);
    static const char *const topics[] = {"orders.a", "payments.x", "orders.secret", "payments.y",
                                         "orders.b"};
    assert_int_equal(publish(a, topics, 5), 0);
    pb_client_close(a);
}

/* ------------------------------------------------------------------ */

/* Wrong password, unknown user, no credentials: UNAUTHENTICATED
 * "authentication failed" after the delay, doubling with each failure
 * from the address; closed. The password appears nowhere in the log. */
static void test_refusals(void **state)
{
    fixture *f = *state;
    start(f, NULL);
    const char *users[] = {"alice", "nobody", NULL};
    const char *passwords[] = {"wrong-password-1", ALICE_PW, NULL};
    uint64_t took[3];
    for (int i = 0; i < 3; i++) {
        pb_client *c;
        char err[256] = "";
        uint64_t t0 = itest_now_ms();
        int rc = connect_as(f, users[i], passwords[i], &c, err, sizeof err);
        took[i] = itest_now_ms() - t0;
        assert_int_equal(rc, PB_ESERVER);
        assert_non_null(strstr(err, "UNAUTHENTICATED authentication failed"));
        assert_null(c);
    }
    /* DELAY_MS, then 2x, then 4x (the same address each time). */
    assert_true(took[0] >= DELAY_MS - 5);
    assert_true(took[1] >= 2 * DELAY_MS - 5);
    assert_true(took[2] >= 4 * DELAY_MS - 5);
    assert_true(took[2] > took[0]);
    assert_false(itest_log_contains(&f->d, "wrong-password-1"));
    assert_false(itest_log_contains(&f->d, ALICE_PW));
    assert_true(itest_log_contains(&f->d, "authentication failed for user \"nobody\""));

    /* A success clears the address's count; the right password works. */
    pb_client *ok = login(f, "alice", ALICE_PW);
    pb_client_close(ok);
    assert_false(itest_log_contains(&f->d, ALICE_PW));
}

/* Raw frames: no credentials at all; the handshake deadline; a Ping sent
 * right behind a Hello waits for its verdict (answered after the server
 * Hello; never answered when the Hello is refused). */
static void test_raw_handshake(void **state)
{
    fixture *f = *state;
    start(f, NULL);
    int fd = itest_connect(f->d.port);
    assert_true(fd >= 0);
    Protobus__Frame *r = itest_hello(fd, 7, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_ERROR);
    assert_int_equal(r->error->code, PB_CODE_UNAUTHENTICATED);
    assert_int_equal(r->id, 7);
    assert_string_equal(r->error->message, "authentication failed");
    protobus__frame__free_unpacked(r, NULL);
    assert_true(itest_wait_closed(fd, TIMEOUT_MS));
    close(fd);

    fd = itest_connect(f->d.port); /* says nothing */
    assert_true(fd >= 0);
    r = itest_recv_frame(fd, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_ERROR);
    assert_int_equal(r->error->code, PB_CODE_DEADLINE_EXCEEDED);
    protobus__frame__free_unpacked(r, NULL);
    close(fd);

    for (int good = 0; good < 2; good++) {
        fd = itest_connect(f->d.port);
        assert_true(fd >= 0);
        Protobus__Hello h = PROTOBUS__HELLO__INIT;
        h.protocol_version = 1;
        h.user = (char *)"alice";
        h.password = (char *)(good ? ALICE_PW : "nope");
        Protobus__Frame hf = PROTOBUS__FRAME__INIT;
        hf.id = 1;
        hf.body_case = PROTOBUS__FRAME__BODY_HELLO;
        hf.hello = &h;
        Protobus__Ping ping = PROTOBUS__PING__INIT;
        Protobus__Frame pf = PROTOBUS__FRAME__INIT;
        pf.id = 2;
        pf.body_case = PROTOBUS__FRAME__BODY_PING;
        pf.ping = &ping;
        assert_int_equal(itest_send_frame(fd, &hf), 0);
        assert_int_equal(itest_send_frame(fd, &pf), 0);
        r = itest_recv_frame(fd, TIMEOUT_MS);
        assert_non_null(r);
        assert_int_equal(r->id, 1);
        if (good) {
            assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_HELLO);
            assert_string_equal(r->hello->user, "alice");
            protobus__frame__free_unpacked(r, NULL);
            r = itest_recv_frame(fd, TIMEOUT_MS);
            assert_non_null(r);
            assert_int_equal(r->id, 2);
            assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_PONG);
        } else {
            assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_ERROR);
            assert_int_equal(r->error->code, PB_CODE_UNAUTHENTICATED);
            protobus__frame__free_unpacked(r, NULL);
            r = NULL;
            assert_true(itest_wait_closed(fd, TIMEOUT_MS));
        }
        if (r)
            protobus__frame__free_unpacked(r, NULL);
        close(fd);
    }
}

/* alice may publish orders\..* only: a batch with payments.x in it is
 * refused whole, naming the topic and the event; deny_publish beats
 * publish; nothing refused is stored. */
static void test_publish_rights(void **state)
{
    fixture *f = *state;
    start(f, "deny_publish = orders\\.locked\\..*\n");
    pb_client *c = login(f, "alice", ALICE_PW);
    static const char *const ok[] = {"orders.1"};
    assert_int_equal(publish(c, ok, 1), 0);
    static const char *const mixed[] = {"orders.2", "payments.x", "orders.3"};
    assert_int_equal(publish(c, mixed, 3), PB_ESERVER);
    const pb_server_error *e = pb_client_server_error(c);
    assert_non_null(e);
    assert_int_equal(e->code, PB_CODE_PERMISSION_DENIED);
    assert_true(e->about_event);
    assert_int_equal(e->event_in_batch, 1);
    assert_non_null(strstr(e->message, "\"payments.x\""));
    assert_non_null(strstr(e->message, "event 1"));
    static const char *const locked[] = {"orders.locked.7"};
    assert_int_equal(publish(c, locked, 1), PB_ESERVER);
    assert_int_equal(pb_client_server_error(c)->code, PB_CODE_PERMISSION_DENIED);
    assert_non_null(strstr(pb_client_server_error(c)->message, "orders.locked.7"));
    pb_client_close(c);

    /* Only orders.1 was stored. */
    pb_client *a = login(f, "admin", PASSWORD);
    static const char *const all[] = {".*"};
    pb_subscription s = {.patterns = all, .npatterns = 1, .start = PB_START_BEGINNING};
    char got[512];
    collect(a, &s, 0, got, sizeof got);
    assert_string_equal(got, "orders.1");
    pb_client_close(a);
}

/* alice reads orders\..* minus orders.secret, whatever she asks for and
 * from wherever she starts. */
static void test_read_rights(void **state)
{
    fixture *f = *state;
    start(f, NULL);
    seed(f);
    static const char *const crafted[][2] = {
        {".*", NULL},
        {"(?s).*", NULL},
        {"payments\\..*|orders\\..*", NULL},
        {"(?=payments).*", "orders\\.(?:a|b|secret)"},
        {"payments\\.x", "orders\\.secret"},
        {".*(?<!x)", "(?:payments|orders)\\..*"},
    };
    const pb_start_mode modes[] = {PB_START_BEGINNING, PB_START_LAST_N, PB_START_TIME,
                                   PB_START_OFFSETS};
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        for (size_t k = 0; k < sizeof crafted / sizeof crafted[0]; k++) {
            pb_client *c = login(f, "alice", ALICE_PW);
            pb_subscription s = {.patterns = crafted[k],
                                 .npatterns = crafted[k][1] ? 2 : 1,
                                 .start = modes[m],
                                 .last_n = 2,
                                 .from_time_ns = 1};
            char got[512];
            collect(c, &s, 0, got, sizeof got);
            /* Only "payments\\.x|orders\\.secret" asks for nothing alice may read. */
            const char *want = k == 4 ? "" : "orders.a orders.b";
            if (strcmp(got, want) != 0)
                fail_msg("mode %d, pattern %s: got \"%s\", want \"%s\"", (int)modes[m],
                         crafted[k][0], got, want);
            pb_client_close(c);
        }
    }
    /* Live: a ".*" subscription sees only what alice may read. */
    pb_client *c = login(f, "alice", ALICE_PW);
    static const char *const all[] = {".*"};
    pb_subscription s = {.patterns = all, .npatterns = 1, .start = PB_START_NEW};
    assert_int_equal(pb_client_subscribe(c, &s), 0);
    pb_client *a = login(f, "admin", PASSWORD);
    static const char *const live[] = {"payments.live", "orders.secret", "orders.live"};
    assert_int_equal(publish(a, live, 3), 0);
    pb_client_close(a);
    char got[256] = "";
    for (int k = 0; k < 10; k++) {
        pb_item it;
        int rc = pb_client_next(c, &it, 500);
        if (rc == PB_ETIMEDOUT)
            break;
        assert_int_equal(rc, 0);
        if (it.kind == PB_ITEM_EVENT) {
            size_t used = strlen(got);
            snprintf(got + used, sizeof got - used, "%s%s", used ? " " : "", it.event.topic);
        }
    }
    assert_string_equal(got, "orders.live");
    pb_client_close(c);

    /* A user without read rights is refused. */
    c = login(f, "mute", PASSWORD);
    assert_int_equal(pb_client_subscribe(c, &s), PB_ESERVER);
    assert_int_equal(pb_client_server_error(c)->code, PB_CODE_PERMISSION_DENIED);
    pb_client_close(c);
}

/* Rewrites the daemon's config with alice_extra and sends SIGHUP. */
static void reload(fixture *f, const char *rules)
{
    FILE *fp = fopen(f->d.conf, "w");
    assert_non_null(fp);
    fprintf(fp,
            "[server]\nlisten = 127.0.0.1:0\ndata_dir = %s\nauth = required\n"
            "auth_failure_delay_ms = %d\n%s",
            f->d.data_dir, DELAY_MS, rules);
    assert_int_equal(fclose(fp), 0);
    assert_int_equal(kill(f->d.pid, SIGHUP), 0);
}

static bool wait_log(const fixture *f, const char *text)
{
    for (int i = 0; i < 200; i++) {
        if (itest_log_contains(&f->d, text))
            return true;
        usleep(25000);
    }
    return false;
}

/* The next live event of a subscription: its topic into out, or "" when
 * none came within ms; the pb_client_next code. */
static int next_live(pb_client *c, int ms, char *out, size_t n)
{
    out[0] = '\0';
    for (int k = 0; k < 20; k++) {
        pb_item it;
        int rc = pb_client_next(c, &it, ms);
        if (rc != 0)
            return rc;
        if (it.kind == PB_ITEM_EVENT) {
            snprintf(out, n, "%s", it.event.topic);
            return 0;
        }
    }
    return PB_ETIMEDOUT;
}

/* SIGHUP: new rights apply to an open connection; a bad file is refused
 * with file:line and changes nothing; a removed user's connection closes
 * and its running subscription ends; unchanged read rights keep theirs. */
static void test_reload(void **state)
{
    fixture *f = *state;
    start(f, NULL);
    pb_client *c = login(f, "alice", ALICE_PW);
    static const char *const pay[] = {"payments.1"};
    assert_int_equal(publish(c, pay, 1), PB_ESERVER);
    static const char *const all[] = {".*"};
    pb_subscription live = {.patterns = all, .npatterns = 1, .start = PB_START_NEW};
    pb_client *alice_sub = login(f, "alice", ALICE_PW);
    assert_int_equal(pb_client_subscribe(alice_sub, &live), 0);
    pb_client *admin_sub = login(f, "admin", PASSWORD);
    assert_int_equal(pb_client_subscribe(admin_sub, &live), 0);
    pb_client *admin = login(f, "admin", PASSWORD);

    char rules[2048];
    users_conf(rules, sizeof rules, "publish = payments\\..*\n");
    reload(f, rules);
    assert_true(wait_log(f, "SIGHUP: 3 user(s) reloaded"));
    assert_int_equal(publish(c, pay, 1), 0);
    /* alice's read rights did not change: her subscription goes on. */
    static const char *const r1[] = {"orders.r1"};
    assert_int_equal(publish(admin, r1, 1), 0);
    char got[128];
    assert_int_equal(next_live(alice_sub, TIMEOUT_MS, got, sizeof got), 0);
    assert_string_equal(got, "orders.r1");

    reload(f, "[partition events]\nmatch = .*\n[user alice]\npublish = (\n");
    assert_true(wait_log(f, "configuration refused, the running configuration stays"));
    assert_true(itest_log_contains(&f->d, ":9: "));
    assert_int_equal(publish(c, pay, 1), 0);

    /* alice removed: her connection is closed. */
    char only_admin[1024];
    snprintf(only_admin, sizeof only_admin,
             "[partition events]\nmatch = .*\n[user admin]\npassword_hash = %s\npublish = .*\n"
             "subscribe = .*\n",
             admin_hash);
    reload(f, only_admin);
    assert_true(wait_log(f, "1 connection(s) of removed users closed, 1 subscription(s)"));
    assert_int_not_equal(publish(c, pay, 1), 0);
    pb_client_close(c);
    /* Her subscription ended; admin's (same rights) goes on. */
    int rc = PB_ETIMEDOUT;
    for (int k = 0; k < 20 && rc == PB_ETIMEDOUT; k++)
        rc = next_live(alice_sub, 500, got, sizeof got);
    assert_int_not_equal(rc, 0);
    assert_int_not_equal(rc, PB_ETIMEDOUT);
    static const char *const r2[] = {"orders.r2"};
    assert_int_equal(publish(admin, r2, 1), 0);
    /* (after the payments.1 and orders.r1 published before) */
    for (int k = 0; k < 10 && strcmp(got, "orders.r2") != 0; k++)
        assert_int_equal(next_live(admin_sub, TIMEOUT_MS, got, sizeof got), 0);
    assert_string_equal(got, "orders.r2");
    pb_client_close(alice_sub);
    pb_client_close(admin_sub);
    pb_client_close(admin);
}

/* Runs `protobusd --check -c path`; its exit status. */
static int check_config(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    assert_int_equal(fclose(fp), 0);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s --check -c %s >/dev/null 2>&1", itest_daemon_path(), path);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* auth = none on a non-loopback address needs allow_anonymous_remote;
 * auth = required needs a user; the data directory is 0700, files 0600. */
static void test_config_and_modes(void **state)
{
    fixture *f = *state;
    char path[] = "/tmp/pb-auth-conf-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(check_config(path, "[server]\nlisten = 0.0.0.0:7420\n[partition e]\n"
                                        "match = .*\n"),
                     1);
    assert_int_equal(check_config(path, "[server]\nlisten = 0.0.0.0:7420\n"
                                        "allow_anonymous_remote = yes\n[partition e]\n"
                                        "match = .*\n"),
                     0);
    assert_int_equal(check_config(path, "[server]\nlisten = 127.0.0.1:7420\nauth = required\n"
                                        "[partition e]\nmatch = .*\n"),
                     1);
    assert_int_equal(check_config(path, "[server]\n[partition e]\nmatch = .*\n[user x]\n"
                                        "password_hash = plain\n"),
                     1);
    unlink(path);

    start(f, NULL);
    seed(f);
    struct stat st;
    assert_int_equal(stat(f->d.data_dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    char seg[600];
    snprintf(seg, sizeof seg, "%s/events/00000000000000000000.log", f->d.data_dir);
    assert_int_equal(stat(seg, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    if (crypto_pwhash_str(admin_hash, PASSWORD, strlen(PASSWORD), 2, 19u << 20) != 0 ||
        crypto_pwhash_str(alice_hash, ALICE_PW, strlen(ALICE_PW), 2, 19u << 20) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_refusals, setup, itest_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_raw_handshake, setup, itest_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_publish_rights, setup, itest_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_read_rights, setup, itest_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_reload, setup, itest_fixture_teardown),
        cmocka_unit_test_setup_teardown(test_config_and_modes, setup, itest_fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
