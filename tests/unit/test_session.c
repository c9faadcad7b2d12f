/*
 * Unit tests for server/session.c: the handshake's answers (version
 * refusals, a first frame that is not a Hello, a malformed Hello), the
 * server's Hello checked with protobuf-c, and what each frame gets in each
 * connection state. Single-threaded; no I/O.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "pb_errors.h"
#include "protobus.pb-c.h"
#include "protobus_version.h"
#include "session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const session_options opts = {
    .server_name = "protobusd " PB_VERSION_STRING,
    .max_frame_bytes = 16u << 20,
    .max_event_bytes = 1u << 20,
    .idle_timeout_ms = 60000,
    .max_batch_events = 4096,
};

/* A Hello body as a client packs it. */
static size_t hello_body(uint8_t *out, size_t cap, uint32_t version, const char *user,
                         const char *password)
{
    Protobus__Hello h = PROTOBUS__HELLO__INIT;
    h.protocol_version = version;
    h.name = "test";
    h.user = (char *)(user ? user : "");
    h.password = (char *)(password ? password : "");
    size_t n = protobus__hello__get_packed_size(&h);
    assert_true(n <= cap);
    return protobus__hello__pack(&h, out);
}

static void expect_error(const session_answer *a, int code, bool close, const char *text)
{
    assert_int_equal(a->action, SESSION_ERROR);
    assert_int_equal(a->code, code);
    assert_int_equal(a->close, close);
    if (!strstr(a->message, text))
        fail_msg("\"%s\" does not say \"%s\"", a->message, text);
}

static void test_hello_accepted(void **state)
{
    uint8_t body[256];
    session_answer a;
    size_t n = hello_body(body, sizeof body, 1, NULL, NULL);

    session_answer_frame(&opts, SESSION_HANDSHAKE, FRAME_HELLO, body, n, &a);
    assert_int_equal(a.action, SESSION_HELLO);
    assert_string_equal(a.user, "");
    /* auth = none: credentials are ignored, the connection is anonymous. */
    n = hello_body(body, sizeof body, 1, "alice", "secret");
    session_answer_frame(&opts, SESSION_HANDSHAKE, FRAME_HELLO, body, n, &a);
    assert_int_equal(a.action, SESSION_HELLO);
    assert_string_equal(a.user, "");
    assert_null(strstr(a.message, "secret"));
    /* auth = required: the transport checks the credentials; the answer
     * names the user and carries no password. */
    session_options req = opts;
    req.auth_required = true;
    session_answer_frame(&req, SESSION_HANDSHAKE, FRAME_HELLO, body, n, &a);
    assert_int_equal(a.action, SESSION_AUTHENTICATE);
    assert_string_equal(a.user, "alice");
    assert_null(memmem(&a, sizeof a, "secret", 6));
    /* A malformed or other-version Hello is refused before any check. */
    n = hello_body(body, sizeof body, 2, "alice", "secret");
    session_answer_frame(&req, SESSION_HANDSHAKE, FRAME_HELLO, body, n, &a);
    assert_int_equal(a.action, SESSION_ERROR);
}

static void test_versions_refused(void **state)
{
    static const uint32_t versions[] = {0, 2, 999, UINT32_MAX};
    uint8_t body[256];
    session_answer a;
    char want[128];

    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        size_t n = hello_body(body, sizeof body, versions[i], NULL, NULL);
        session_answer_frame(&opts, SESSION_HANDSHAKE, FRAME_HELLO, body, n, &a);
        snprintf(want, sizeof want, "protocol version %u is not supported; this server speaks 1",
                 versions[i]);
        expect_error(&a, PB_CODE_FAILED_PRECONDITION, true, want);
    }
}

static void test_first_frame_must_be_hello(void **state)
{
    static const enum frame_kind kinds[] = {FRAME_PUBLISH, FRAME_SUBSCRIBE, FRAME_PING,
                                            FRAME_NONE,    FRAME_EVENT,     FRAME_PONG};
    session_answer a;

    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        session_answer_frame(&opts, SESSION_HANDSHAKE, kinds[i], NULL, 0, &a);
        expect_error(&a, PB_CODE_FAILED_PRECONDITION, true, "the first frame must be a Hello");
    }
    const uint8_t bad[] = {0x08}; /* protocol_version's varint cut short */
    session_answer_frame(&opts, SESSION_HANDSHAKE, FRAME_HELLO, bad, sizeof bad, &a);
    expect_error(&a, PB_CODE_INVALID_ARGUMENT, true, "malformed Hello: Hello field 1");
    session_answer_malformed(SESSION_HANDSHAKE, "x", &a);
    expect_error(&a, PB_CODE_INVALID_ARGUMENT, true, "malformed frame: x");
    session_answer_malformed(SESSION_OPEN, "x", &a);
    expect_error(&a, PB_CODE_INVALID_ARGUMENT, false, "malformed frame: x");
    session_answer_malformed(SESSION_SUBSCRIBED, "x", &a);
    expect_error(&a, PB_CODE_INVALID_ARGUMENT, false, "malformed frame: x");
}

/* The server's Hello: every field a client reads, as protobuf-c reads it. */
static void test_server_hello(void **state)
{
    uint8_t out[512];
    size_t need = session_put_hello(&opts, 77, "", NULL, 0);
    assert_true(need <= sizeof out);
    assert_int_equal(session_put_hello(&opts, 77, "", out, sizeof out), need);
    assert_int_equal(out[0], need - 1);
    Protobus__Frame *f = protobus__frame__unpack(NULL, need - 1, out + 1);
    assert_non_null(f);
    assert_int_equal(f->id, 77);
    assert_int_equal(f->body_case, PROTOBUS__FRAME__BODY_HELLO);
    const Protobus__Hello *h = f->hello;
    assert_int_equal(h->protocol_version, 1);
    assert_string_equal(h->name, "protobusd " PB_VERSION_STRING);
    assert_int_equal(h->max_frame_bytes, 16u << 20);
    assert_int_equal(h->max_event_bytes, 1u << 20);
    assert_string_equal(h->user, "");
    assert_string_equal(h->password, "");
    assert_non_null(h->limits);
    assert_int_equal(h->limits->max_event_id_bytes, 64);
    assert_int_equal(h->limits->idle_timeout_ms, 60000);
    assert_int_equal(h->limits->max_batch_events, 4096);
    assert_int_equal(h->limits->max_subscribe_patterns, 0);
    protobus__frame__free_unpacked(f, NULL);
}

/* The server Hello of FORMAT.md Part A 4.1's example, byte for byte: a
 * default configuration (max_batch_events 65,536, idle_timeout_ms 60,000,
 * the Subscribe caps 256, 1024, 64, 4096) answering frame 1. */
static void test_server_hello_bytes(void **state)
{
    (void)state;
    static const uint8_t want[] = {
        0x37, 0x08, 0x01, 0x12, 0x33, 0x08, 0x01, 0x12, 0x0f, 'p',  'r',  'o',  't',  'o',
        'b',  'u',  's',  'd',  ' ',  '0',  '.',  '1',  '.',  '0',  0x18, 0x80, 0x80, 0x80,
        0x08, 0x20, 0x80, 0x80, 0x40, 0x3a, 0x15, 0x08, 0x80, 0x02, 0x10, 0x80, 0x08, 0x18,
        0x40, 0x20, 0x80, 0x20, 0x28, 0x80, 0x80, 0x04, 0x30, 0x40, 0x48, 0xe0, 0xd4, 0x03};
    session_options o = opts;
    o.server_name = "protobusd 0.1.0";
    o.max_batch_events = 65536;
    o.sub_caps = (sub_caps){SUB_CAPS_PATTERNS_DEFAULT, SUB_CAPS_PATTERN_BYTES_DEFAULT,
                            SUB_CAPS_TAGS_DEFAULT, SUB_CAPS_OFFSETS_DEFAULT};
    uint8_t out[128];
    size_t n = session_put_hello(&o, 1, "", out, sizeof out);
    assert_int_equal(n, sizeof want);
    assert_memory_equal(out, want, sizeof want);
}

static void test_open_and_subscribed_rules(void **state)
{
    session_answer a;

    session_answer_frame(&opts, SESSION_OPEN, FRAME_PUBLISH, NULL, 0, &a);
    assert_int_equal(a.action, SESSION_PUBLISH);
    session_answer_frame(&opts, SESSION_OPEN, FRAME_SUBSCRIBE, NULL, 0, &a);
    assert_int_equal(a.action, SESSION_SUBSCRIBE);
    for (int st = SESSION_OPEN; st <= SESSION_SUBSCRIBED; st++) {
        session_answer_frame(&opts, st, FRAME_PING, NULL, 0, &a);
        assert_int_equal(a.action, SESSION_PONG);
        session_answer_frame(&opts, st, FRAME_PONG, NULL, 0, &a);
        assert_int_equal(a.action, SESSION_IGNORE);
        session_answer_frame(&opts, st, FRAME_HELLO, NULL, 0, &a);
        expect_error(&a, PB_CODE_FAILED_PRECONDITION, false, "already completed its handshake");
        session_answer_frame(&opts, st, FRAME_NONE, NULL, 0, &a);
        expect_error(&a, PB_CODE_UNIMPLEMENTED, false, "unknown frame type");
        session_answer_frame(&opts, st, FRAME_EVENT, NULL, 0, &a);
        expect_error(&a, PB_CODE_INVALID_ARGUMENT, false, "event is not accepted from clients");
        session_answer_frame(&opts, st, FRAME_REPLICA_ACK, NULL, 0, &a);
        expect_error(&a, PB_CODE_FAILED_PRECONDITION, false, "replication subscription");
    }
    session_answer_frame(&opts, SESSION_SUBSCRIBED, FRAME_PUBLISH, NULL, 0, &a);
    expect_error(&a, PB_CODE_FAILED_PRECONDITION, false,
                 "this connection is subscribed; publish on another connection");
    session_answer_frame(&opts, SESSION_SUBSCRIBED, FRAME_SUBSCRIBE, NULL, 0, &a);
    expect_error(&a, PB_CODE_FAILED_PRECONDITION, false, "this connection is subscribed");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_accepted),
        cmocka_unit_test(test_versions_refused),
        cmocka_unit_test(test_first_frame_must_be_hello),
        cmocka_unit_test(test_server_hello),
        cmocka_unit_test(test_server_hello_bytes),
        cmocka_unit_test(test_open_and_subscribed_rules),
    };
    return cmocka_run_group_tests_name("session", tests, NULL, NULL);
}
