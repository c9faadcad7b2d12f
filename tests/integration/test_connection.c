/*
 * Integration: protocol version 1's connection model (FORMAT.md Part A,
 * section 7) against the real protobusd, through raw frames (protobuf-c,
 * tests/lib/itest.h): the handshake (a missing Hello, refused versions,
 * the deadline, max_handshaking under 1,000 silent connections while a real
 * client connects and publishes), the server's Hello, Ping/Pong, reply ids
 * on malformed frames and which errors close the connection, acks in
 * order, also pipelined through libprotobus. Subscriptions on a connection
 * are test_connection_sub's subject.
 *
 * Threads: the test's main thread only.
 */
#include "itest.h"
#include "protobus.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define TIMEOUT_MS 10000
/* Allowed past a deadline before the close must have happened (sanitizer
 * builds and a busy machine are slow, the daemon's timers are not late). */
#define SLACK_MS 5000

/* --- the handshake ---------------------------------------------------------------- */

/* The client speaks first; a first frame that is not a Hello is refused
 * with its id and the connection closed; nothing of it is stored. */
static void test_missing_hello(void **state)
{
    itest_start(NULL, NULL);
    uint16_t port = itest_dut.port;

    int fd = itest_connect(port);
    assert_true(fd >= 0);
    assert_int_equal(itest_send_publish(fd, 17, "never.stored", "x"), 0);
    itest_expect_error(fd, 17, PROTOBUS__CODE__FAILED_PRECONDITION,
                       "the first frame must be a Hello", TIMEOUT_MS);
    assert_true(itest_wait_closed(fd, TIMEOUT_MS));
    close(fd);

    fd = itest_connect(port);
    assert_int_equal(itest_send_ping(fd, 3), 0);
    itest_expect_error(fd, 3, PROTOBUS__CODE__FAILED_PRECONDITION,
                       "the first frame must be a Hello", TIMEOUT_MS);
    assert_true(itest_wait_closed(fd, TIMEOUT_MS));
    close(fd);

    /* The refused Publish was not stored: the topic's partition is empty. */
    fd = itest_connect_hello(port);
    assert_true(fd >= 0);
    const char *t[1] = {"stored.now"}, *p[1] = {"y"};
    Protobus__Frame *r = itest_publish(fd, 5, t, p, 1, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_PUBLISH_ACK);
    assert_int_equal(r->publish_ack->offsets[0], 0);
    protobus__frame__free_unpacked(r, NULL);
    close(fd);
}

/* Every version but 1 is refused, 0 (absent) included, then closed. */
static void test_versions_refused(void **state)
{
    static const uint32_t versions[] = {0, 2, 999};
    itest_start(NULL, NULL);
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        char want[96];
        int fd = itest_connect(itest_dut.port);
        assert_true(fd >= 0);
        assert_int_equal(itest_send_hello(fd, 40 + i, versions[i]), 0);
        snprintf(want, sizeof want, "protocol version %u is not supported; this server speaks 1",
                 versions[i]);
        itest_expect_error(fd, 40 + i, PROTOBUS__CODE__FAILED_PRECONDITION, want, TIMEOUT_MS);
        assert_true(itest_wait_closed(fd, TIMEOUT_MS));
        close(fd);
    }
}

/* The server's Hello: same id, version 1, the release's name, the limits
 * of its configuration, anonymous. A second Hello is refused, the
 * connection kept. */
static void test_server_hello(void **state)
{
    itest_start("max_event_bytes = 2K\nmax_frame_bytes = 64K\nidle_timeout_ms = 4321\n"
                "max_batch_events = 777\n",
                NULL);
    int fd = itest_connect(itest_dut.port);
    assert_true(fd >= 0);
    Protobus__Frame *r = itest_hello(fd, 9001, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_HELLO);
    assert_int_equal(r->id, 9001);
    const Protobus__Hello *h = r->hello;
    assert_int_equal(h->protocol_version, 1);
    assert_string_equal(h->name, "protobusd " PB_VERSION_STRING);
    assert_int_equal(h->max_frame_bytes, 64 * 1024);
    assert_int_equal(h->max_event_bytes, 2 * 1024);
    assert_string_equal(h->user, "");
    assert_string_equal(h->password, "");
    assert_non_null(h->limits);
    assert_int_equal(h->limits->max_event_id_bytes, 64);
    assert_int_equal(h->limits->idle_timeout_ms, 4321);
    assert_int_equal(h->limits->max_batch_events, 777);
    protobus__frame__free_unpacked(r, NULL);

    assert_int_equal(itest_send_hello(fd, 12, 1), 0);
    itest_expect_error(fd, 12, PROTOBUS__CODE__FAILED_PRECONDITION,
                       "already completed its handshake", TIMEOUT_MS);
    assert_int_equal(itest_send_ping(fd, 13), 0);
    itest_expect_pong(fd, 13, TIMEOUT_MS);
    close(fd);
}

/* No complete Hello within handshake_timeout_ms: DEADLINE_EXCEEDED, then
 * closed; silence and half a Hello alike. */
static void test_handshake_deadline(void **state)
{
    enum { DEADLINE_MS = 400 };
    char extra[64];
    snprintf(extra, sizeof extra, "handshake_timeout_ms = %d\n", DEADLINE_MS);
    itest_start(extra, NULL);
    int silent = itest_connect(itest_dut.port);
    int half = itest_connect(itest_dut.port);
    assert_true(silent >= 0 && half >= 0);
    const uint8_t part[] = {12, 0x08, 0x01, 0x12}; /* a Hello frame's first bytes */
    assert_int_equal(itest_send_raw(half, part, sizeof part), 0);
    uint64_t t0 = itest_now_ms();
    int fds[2] = {silent, half};
    for (int i = 0; i < 2; i++) {
        itest_expect_error(fds[i], 0, PROTOBUS__CODE__DEADLINE_EXCEEDED, "handshake_timeout_ms",
                           TIMEOUT_MS);
        assert_true(itest_wait_closed(fds[i], TIMEOUT_MS));
        close(fds[i]);
    }
    uint64_t took = itest_now_ms() - t0;
    /* libuv's timer may fire a millisecond early by our clock. */
    assert_true(took + 2 >= DEADLINE_MS);
    assert_true(took < DEADLINE_MS + SLACK_MS);
    /* A client that says Hello at once is not affected. */
    int fd = itest_connect_hello(itest_dut.port);
    assert_true(fd >= 0);
    itest_sleep_ms(DEADLINE_MS + 200);
    assert_int_equal(itest_send_ping(fd, 1), 0);
    itest_expect_pong(fd, 1, TIMEOUT_MS);
    close(fd);
}

/* A connection stalled in the middle of a frame for idle_timeout_ms:
 * DEADLINE_EXCEEDED, then closed. */
static void test_idle_deadline(void **state)
{
    itest_start("idle_timeout_ms = 300\n", NULL);
    int fd = itest_connect_hello(itest_dut.port);
    assert_true(fd >= 0);
    const uint8_t part[] = {20, 0x08, 0x01}; /* 3 of a 21-byte frame */
    assert_int_equal(itest_send_raw(fd, part, sizeof part), 0);
    itest_expect_error(
        fd, 0, PROTOBUS__CODE__DEADLINE_EXCEEDED,
        "3 bytes of an unfinished frame and nothing more for 300 ms (idle_timeout_ms)", TIMEOUT_MS);
    assert_true(itest_wait_closed(fd, TIMEOUT_MS));
    close(fd);
}

static int raise_nofile(rlim_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -1;
    if (rl.rlim_cur >= want)
        return 0;
    if (rl.rlim_max != RLIM_INFINITY && want > rl.rlim_max)
        return -1;
    rl.rlim_cur = want;
    return setrlimit(RLIMIT_NOFILE, &rl);
}

/* 1,000 connections that never say Hello cannot keep out a client that
 * does: at max_handshaking the oldest silent one is closed (with an Error
 * naming the setting) for each newcomer, and the real client connects,
 * publishes and is acknowledged. */
static void test_max_handshaking(void **state)
{
    enum { NSILENT = 1000, CAP = 100 };
    assert_int_equal(raise_nofile(NSILENT + 256), 0);
    char extra[128];
    snprintf(extra, sizeof extra,
             "max_handshaking = %d\nmax_connections = 1100\nhandshake_timeout_ms = 60000\n"
             "log_level = warn\n",
             CAP);
    itest_start(extra, NULL);
    static int fds[NSILENT];
    for (int i = 0; i < NSILENT; i++) {
        fds[i] = itest_connect(itest_dut.port);
        assert_true(fds[i] >= 0);
    }
    /* The real client, while the silent ones are there. */
    int pub = itest_connect_hello(itest_dut.port);
    assert_true(pub >= 0);
    const char *t[1] = {"real.client"}, *p[1] = {"got in"};
    Protobus__Frame *r = itest_publish(pub, 2, t, p, 1, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_PUBLISH_ACK);
    protobus__frame__free_unpacked(r, NULL);

    /* The oldest were closed, each with its reason; the newest CAP - 1
     * (the real client took one place) are still waiting: a Hello now
     * completes their handshake. Counted rather than placed: the kernel's
     * accept queue need not keep the connect order exactly. */
    int evicted = 0, open = 0;
    for (int i = 0; i < NSILENT; i++) {
        (void)itest_send_hello(fds[i], 1, 1); /* fails on a closed one: its Error is read */
        Protobus__Frame *h = itest_recv_frame(fds[i], TIMEOUT_MS);
        assert_non_null(h);
        if (h->body_case == PROTOBUS__FRAME__BODY_HELLO) {
            open++;
        } else {
            assert_int_equal(h->body_case, PROTOBUS__FRAME__BODY_ERROR);
            assert_int_equal(h->error->code, PROTOBUS__CODE__RESOURCE_EXHAUSTED);
            assert_non_null(strstr(h->error->message, "max_handshaking = 100"));
            assert_true(itest_wait_closed(fds[i], TIMEOUT_MS));
            evicted++;
        }
        protobus__frame__free_unpacked(h, NULL);
    }
    assert_int_equal(evicted, NSILENT - CAP + 1);
    assert_int_equal(open, CAP - 1);
    for (int i = 0; i < NSILENT; i++)
        close(fds[i]);
    close(pub);
}

/* Without max_handshaking in play, a full max_connections of silent
 * connections still lets a real client in: the oldest silent one goes. */
static void test_max_connections_full_of_silent_ones(void **state)
{
    enum { NSILENT = 50 };
    itest_start("max_connections = 50\n", NULL);
    int fds[NSILENT];
    for (int i = 0; i < NSILENT; i++) {
        fds[i] = itest_connect(itest_dut.port);
        assert_true(fds[i] >= 0);
    }
    int fd = itest_connect_hello(itest_dut.port);
    assert_true(fd >= 0);
    itest_expect_error(fds[0], 0, PROTOBUS__CODE__RESOURCE_EXHAUSTED, "max_connections = 50",
                       TIMEOUT_MS);
    assert_int_equal(itest_send_ping(fd, 8), 0);
    itest_expect_pong(fd, 8, TIMEOUT_MS);
    for (int i = 0; i < NSILENT; i++)
        close(fds[i]);
    close(fd);
}

/* --- requests and replies ------------------------------------------------------------ */

/* Ping gets Pong with its id; pipelined Pings are answered in order. */
static void test_ping_pong(void **state)
{
    itest_start(NULL, NULL);
    int fd = itest_connect_hello(itest_dut.port);
    assert_true(fd >= 0);
    for (uint64_t id = 100; id < 200; id++)
        assert_int_equal(itest_send_ping(fd, id), 0);
    for (uint64_t id = 100; id < 200; id++)
        itest_expect_pong(fd, id, TIMEOUT_MS);
    close(fd);
}

/* Every reply carries the request's id when it could be read; errors about
 * a frame whose length was valid leave the connection open; a bad length
 * prefix closes it. */
static void test_reply_ids_and_what_closes(void **state)
{
    itest_start("max_event_bytes = 1K\nmax_frame_bytes = 64K\n",
                "[partition xs]\nmatch = x\\..*\n");
    int fd = itest_connect_hello(itest_dut.port);
    assert_true(fd >= 0);

    /* id 42, then a hello field whose length runs past the frame. */
    const uint8_t cut[] = {5, 0x08, 0x2a, 0x12, 0x05, 0x01};
    assert_int_equal(itest_send_raw(fd, cut, sizeof cut), 0);
    itest_expect_error(fd, 42, PROTOBUS__CODE__INVALID_ARGUMENT,
                       "malformed frame: Frame field 2 (hello)", TIMEOUT_MS);
    /* The id after the fault cannot be read: 0. */
    const uint8_t late[] = {4, 0x1a, 0x07, 0x08, 0x2b};
    assert_int_equal(itest_send_raw(fd, late, sizeof late), 0);
    itest_expect_error(fd, 0, PROTOBUS__CODE__INVALID_ARGUMENT, "malformed frame", TIMEOUT_MS);
    /* Two bodies. */
    const uint8_t two[] = {6, 0x08, 0x07, 0x5a, 0x00, 0x5a, 0x00};
    assert_int_equal(itest_send_raw(fd, two, sizeof two), 0);
    itest_expect_error(fd, 7, PROTOBUS__CODE__INVALID_ARGUMENT, "a second body", TIMEOUT_MS);
    /* A Publish whose body is malformed (events must be length-delimited). */
    const uint8_t pub[] = {6, 0x08, 0x09, 0x1a, 0x02, 0x08, 0x01};
    assert_int_equal(itest_send_raw(fd, pub, sizeof pub), 0);
    itest_expect_error(fd, 9, PROTOBUS__CODE__INVALID_ARGUMENT, "malformed Publish frame",
                       TIMEOUT_MS);
    /* An unknown frame type (field 100). */
    const uint8_t unknown[] = {5, 0x08, 0x2c, 0xa2, 0x06, 0x00};
    assert_int_equal(itest_send_raw(fd, unknown, sizeof unknown), 0);
    itest_expect_error(fd, 44, PROTOBUS__CODE__UNIMPLEMENTED, "unknown frame type", TIMEOUT_MS);
    /* A frame only servers send. */
    const uint8_t event[] = {4, 0x08, 0x2d, 0x32, 0x00};
    assert_int_equal(itest_send_raw(fd, event, sizeof event), 0);
    itest_expect_error(fd, 45, PROTOBUS__CODE__INVALID_ARGUMENT, "not accepted from clients",
                       TIMEOUT_MS);
    /* A topic no rule matches is NOT_FOUND, an oversize event
     * INVALID_ARGUMENT naming max_event_bytes; neither closes. */
    const char *nomatch[1] = {"nomatch.topic"}, *small[1] = {"s"};
    Protobus__Frame *r = itest_publish(fd, 47, nomatch, small, 1, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->id, 47);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_ERROR);
    assert_int_equal(r->error->code, PROTOBUS__CODE__NOT_FOUND);
    assert_non_null(strstr(r->error->message, "nomatch.topic"));
    protobus__frame__free_unpacked(r, NULL);
    const char *t[1] = {"x.y"};
    char big[1100];
    memset(big, 'b', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    const char *p[1] = {big};
    r = itest_publish(fd, 46, t, p, 1, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->id, 46);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_ERROR);
    assert_int_equal(r->error->code, PROTOBUS__CODE__INVALID_ARGUMENT);
    assert_non_null(strstr(r->error->message, "max_event_bytes"));
    protobus__frame__free_unpacked(r, NULL);
    /* Still open after all of that. */
    assert_int_equal(itest_send_ping(fd, 50), 0);
    itest_expect_pong(fd, 50, TIMEOUT_MS);
    /* A frame over max_frame_bytes: refused from its prefix, then closed. */
    const uint8_t huge[] = {0x81, 0x80, 0x04}; /* 65537 */
    assert_int_equal(itest_send_raw(fd, huge, sizeof huge), 0);
    itest_expect_error(fd, 0, PROTOBUS__CODE__RESOURCE_EXHAUSTED, "max_frame_bytes = 65536",
                       TIMEOUT_MS);
    assert_true(itest_wait_closed(fd, TIMEOUT_MS));
    close(fd);
}

/* A refused Subscribe leaves the connection open, and what was sent after
 * it in the same write is still answered, in order. */
static void test_refused_subscribe_then_more(void **state)
{
    itest_start(NULL, NULL);
    int fd = itest_connect_hello(itest_dut.port);
    assert_true(fd >= 0);
    assert_int_equal(itest_subscribe(fd, 5, "a(", PROTOBUS__START_MODE__START_NEW), 0);
    assert_int_equal(itest_send_ping(fd, 6), 0);
    itest_expect_error(fd, 5, PROTOBUS__CODE__INVALID_ARGUMENT, "a(", TIMEOUT_MS);
    itest_expect_pong(fd, 6, TIMEOUT_MS);
    close(fd);
}

/* Acks of 1,000 pipelined Publishes, each spread over three partitions
 * (so its parts complete on three writer threads in any order), come back
 * in the order they were sent, each with its batch's offsets. */
static void test_acks_in_order(void **state)
{
    enum { NBATCH = 1000 };
    itest_start(NULL, "[partition alpha]\nmatch = a\\..*\n[partition beta]\nmatch = b\\..*\n"
                      "[partition rest]\nmatch = .*\n");
    int fd = itest_connect_hello(itest_dut.port);
    assert_true(fd >= 0);
    Protobus__EncapsulatedEvent ev[3] = {PROTOBUS__ENCAPSULATED_EVENT__INIT,
                                         PROTOBUS__ENCAPSULATED_EVENT__INIT,
                                         PROTOBUS__ENCAPSULATED_EVENT__INIT};
    Protobus__EncapsulatedEvent *evp[3] = {&ev[0], &ev[1], &ev[2]};
    ev[0].topic = "a.x";
    ev[1].topic = "b.x";
    ev[2].topic = "c.x";
    Protobus__Publish pub = PROTOBUS__PUBLISH__INIT;
    pub.n_events = 3;
    pub.events = evp;
    for (uint64_t i = 0; i < NBATCH; i++) {
        Protobus__Frame f = PROTOBUS__FRAME__INIT;
        f.id = 100 + i;
        f.body_case = PROTOBUS__FRAME__BODY_PUBLISH;
        f.publish = &pub;
        assert_int_equal(itest_send_frame(fd, &f), 0);
    }
    for (uint64_t i = 0; i < NBATCH; i++) {
        Protobus__Frame *r = itest_recv_frame(fd, TIMEOUT_MS);
        assert_non_null(r);
        if (r->id != 100 + i || r->body_case != PROTOBUS__FRAME__BODY_PUBLISH_ACK)
            fail_msg("reply %llu: id %llu, frame %d", (unsigned long long)i,
                     (unsigned long long)r->id, r->body_case);
        const Protobus__PublishAck *a = r->publish_ack;
        assert_int_equal(a->n_offsets, 3);
        for (size_t k = 0; k < 3; k++) {
            /* Each partition's batches are stored in arrival order. */
            assert_int_equal(a->offsets[k], i);
            assert_string_equal(a->partitions[a->partition_index[k]], k == 0   ? "alpha"
                                                                      : k == 1 ? "beta"
                                                                               : "rest");
        }
        protobus__frame__free_unpacked(r, NULL);
    }
    close(fd);
}

/* Many small batches over three partitions, pipelined through the library
 * (which refuses a server that acks out of order): every position right. */
static void test_library_pipelined_positions(void **state)
{
    enum { NEVENTS = 3000 };
    itest_start(NULL, "[partition alpha]\nmatch = a\\..*\n[partition beta]\nmatch = b\\..*\n"
                      "[partition rest]\nmatch = .*\n");
    char addr[64], err[256] = "";
    snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)itest_dut.port);
    pb_client_options o;
    pb_client_options_init(&o);
    o.batch_events = 3;
    o.max_in_flight = 256;
    pb_client *c = NULL;
    if (pb_client_connect(&c, addr, &o, err, sizeof err) != 0)
        fail_msg("connect: %s", err);
    static const char *const topics[3] = {"a.x", "b.x", "c.x"};
    for (int i = 0; i < NEVENTS; i++) {
        pb_event ev = {.topic = topics[i % 3], .payload = "p", .payload_len = 1};
        assert_int_equal(pb_client_publish(c, &ev), 0);
    }
    const pb_position *pos;
    size_t n;
    int rc = pb_client_flush(c, TIMEOUT_MS, &pos, &n);
    if (rc != 0)
        fail_msg("flush: %s", pb_client_message(c));
    assert_int_equal(n, NEVENTS);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(pos[i].status, 0);
        assert_string_equal(pos[i].partition, i % 3 == 0 ? "alpha" : i % 3 == 1 ? "beta" : "rest");
        assert_int_equal(pos[i].offset, i / 3);
    }
    pb_client_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_missing_hello, itest_teardown),
        cmocka_unit_test_teardown(test_versions_refused, itest_teardown),
        cmocka_unit_test_teardown(test_server_hello, itest_teardown),
        cmocka_unit_test_teardown(test_handshake_deadline, itest_teardown),
        cmocka_unit_test_teardown(test_idle_deadline, itest_teardown),
        cmocka_unit_test_teardown(test_max_handshaking, itest_teardown),
        cmocka_unit_test_teardown(test_max_connections_full_of_silent_ones, itest_teardown),
        cmocka_unit_test_teardown(test_ping_pong, itest_teardown),
        cmocka_unit_test_teardown(test_reply_ids_and_what_closes, itest_teardown),
        cmocka_unit_test_teardown(test_refused_subscribe_then_more, itest_teardown),
        cmocka_unit_test_teardown(test_acks_in_order, itest_teardown),
        cmocka_unit_test_teardown(test_library_pipelined_positions, itest_teardown),
    };
    return cmocka_run_group_tests_name("integration: connection model (raw frames)", tests, NULL,
                                       NULL);
}
