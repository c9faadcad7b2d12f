/*
 * Integration: protocol version 1's connection model (FORMAT.md Part A,
 * section 7) against the real protobusd, through raw frames (protobuf-c,
 * tests/lib/itest.h): the handshake (a missing Hello, refused versions,
 * the deadline, max_handshaking under 1,000 silent connections while a real
 * client connects and publishes), the server's Hello, Ping/Pong, reply ids
 * on malformed frames and which errors close the connection, Subscribed
 * for every start mode and CaughtUp's place; then the same model through
 * libprotobus (pb_client_subscription, PB_ITEM_CAUGHT_UP).
 *
 * Threads: the test's main thread only.
 */
#include "itest.h"
#include "protobus.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_MS 10000
/* Allowed past a deadline before the close must have happened (sanitizer
 * builds and a busy machine are slow, the daemon's timers are not late). */
#define SLACK_MS 5000

static itest_daemon daemon_under_test;

static int teardown(void **state)
{
    (void)state;
    itest_daemon_cleanup(&daemon_under_test);
    return 0;
}

static void start(const char *extra, const char *rules)
{
    assert_int_equal(itest_daemon_start(&daemon_under_test, extra, rules), 0);
}

/* The next frame must be an Error with this id and code whose message
 * contains text; returns nothing, frees the frame. */
static void expect_error(int fd, uint64_t id, int code, const char *text)
{
    Protobus__Frame *r = itest_recv_frame(fd, TIMEOUT_MS);
    if (!r)
        fail_msg("no frame where an Error (%d, \"%s\") was expected", code, text);
    if (r->body_case != PROTOBUS__FRAME__BODY_ERROR)
        fail_msg("frame %d where an Error (%d, \"%s\") was expected", r->body_case, code, text);
    if (r->id != id || (int)r->error->code != code || !strstr(r->error->message, text))
        fail_msg("expected Error id %llu code %d with \"%s\", got id %llu code %d: %s",
                 (unsigned long long)id, code, text, (unsigned long long)r->id, r->error->code,
                 r->error->message);
    protobus__frame__free_unpacked(r, NULL);
}

static void expect_pong(int fd, uint64_t id)
{
    Protobus__Frame *r = itest_recv_frame(fd, TIMEOUT_MS);
    assert_non_null(r);
    if (r->body_case != PROTOBUS__FRAME__BODY_PONG || r->id != id)
        fail_msg("expected Pong id %llu, got frame %d id %llu (%s)", (unsigned long long)id,
                 r->body_case, (unsigned long long)r->id,
                 r->body_case == PROTOBUS__FRAME__BODY_ERROR ? r->error->message : "");
    protobus__frame__free_unpacked(r, NULL);
}

static int send_hello(int fd, uint64_t id, uint32_t version)
{
    Protobus__Hello h = PROTOBUS__HELLO__INIT;
    h.protocol_version = version;
    h.name = "test_connection";
    Protobus__Frame f = PROTOBUS__FRAME__INIT;
    f.id = id;
    f.body_case = PROTOBUS__FRAME__BODY_HELLO;
    f.hello = &h;
    return itest_send_frame(fd, &f);
}

static int send_ping(int fd, uint64_t id)
{
    Protobus__Ping p = PROTOBUS__PING__INIT;
    Protobus__Frame f = PROTOBUS__FRAME__INIT;
    f.id = id;
    f.body_case = PROTOBUS__FRAME__BODY_PING;
    f.ping = &p;
    return itest_send_frame(fd, &f);
}

/* One event on topic, sent as a Publish with frame id `id` (no wait). */
static int send_publish(int fd, uint64_t id, const char *topic, const char *payload)
{
    Protobus__EncapsulatedEvent ev = PROTOBUS__ENCAPSULATED_EVENT__INIT;
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    Protobus__EncapsulatedEvent *evp = &ev;
    ev.topic = (char *)topic;
    any.value.data = (uint8_t *)payload;
    any.value.len = strlen(payload);
    ev.payload = &any;
    Protobus__Publish pub = PROTOBUS__PUBLISH__INIT;
    pub.n_events = 1;
    pub.events = &evp;
    Protobus__Frame f = PROTOBUS__FRAME__INIT;
    f.id = id;
    f.body_case = PROTOBUS__FRAME__BODY_PUBLISH;
    f.publish = &pub;
    return itest_send_frame(fd, &f);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* --- the handshake ---------------------------------------------------------------- */

/* The client speaks first; a first frame that is not a Hello is refused
 * with its id and the connection closed; nothing of it is stored. */
static void test_missing_hello(void **state)
{
    start(NULL, NULL);
    uint16_t port = daemon_under_test.port;

    int fd = itest_connect(port);
    assert_true(fd >= 0);
    assert_int_equal(send_publish(fd, 17, "never.stored", "x"), 0);
    expect_error(fd, 17, PROTOBUS__CODE__FAILED_PRECONDITION, "the first frame must be a Hello");
    assert_true(itest_wait_closed(fd, TIMEOUT_MS));
    close(fd);

    fd = itest_connect(port);
    assert_int_equal(send_ping(fd, 3), 0);
    expect_error(fd, 3, PROTOBUS__CODE__FAILED_PRECONDITION, "the first frame must be a Hello");
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
    start(NULL, NULL);
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        char want[96];
        int fd = itest_connect(daemon_under_test.port);
        assert_true(fd >= 0);
        assert_int_equal(send_hello(fd, 40 + i, versions[i]), 0);
        snprintf(want, sizeof want, "protocol version %u is not supported; this server speaks 1",
                 versions[i]);
        expect_error(fd, 40 + i, PROTOBUS__CODE__FAILED_PRECONDITION, want);
        assert_true(itest_wait_closed(fd, TIMEOUT_MS));
        close(fd);
    }
}

/* The server's Hello: same id, version 1, the release's name, the limits
 * of its configuration, anonymous. A second Hello is refused, the
 * connection kept. */
static void test_server_hello(void **state)
{
    start("max_event_bytes = 2K\nmax_frame_bytes = 64K\nidle_timeout_ms = 4321\n"
          "max_batch_events = 777\n",
          NULL);
    int fd = itest_connect(daemon_under_test.port);
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

    assert_int_equal(send_hello(fd, 12, 1), 0);
    expect_error(fd, 12, PROTOBUS__CODE__FAILED_PRECONDITION, "already completed its handshake");
    assert_int_equal(send_ping(fd, 13), 0);
    expect_pong(fd, 13);
    close(fd);
}

/* No complete Hello within handshake_timeout_ms: DEADLINE_EXCEEDED, then
 * closed; silence and half a Hello alike. */
static void test_handshake_deadline(void **state)
{
    enum { DEADLINE_MS = 400 };
    char extra[64];
    snprintf(extra, sizeof extra, "handshake_timeout_ms = %d\n", DEADLINE_MS);
    start(extra, NULL);
    int silent = itest_connect(daemon_under_test.port);
    int half = itest_connect(daemon_under_test.port);
    assert_true(silent >= 0 && half >= 0);
    const uint8_t part[] = {12, 0x08, 0x01, 0x12}; /* a Hello frame's first bytes */
    assert_int_equal(itest_send_raw(half, part, sizeof part), 0);
    uint64_t t0 = itest_now_ms();
    int fds[2] = {silent, half};
    for (int i = 0; i < 2; i++) {
        expect_error(fds[i], 0, PROTOBUS__CODE__DEADLINE_EXCEEDED, "handshake_timeout_ms");
        assert_true(itest_wait_closed(fds[i], TIMEOUT_MS));
        close(fds[i]);
    }
    uint64_t took = itest_now_ms() - t0;
    /* libuv's timer may fire a millisecond early by our clock. */
    assert_true(took + 2 >= DEADLINE_MS);
    assert_true(took < DEADLINE_MS + SLACK_MS);
    /* A client that says Hello at once is not affected. */
    int fd = itest_connect_hello(daemon_under_test.port);
    assert_true(fd >= 0);
    sleep_ms(DEADLINE_MS + 200);
    assert_int_equal(send_ping(fd, 1), 0);
    expect_pong(fd, 1);
    close(fd);
}

/* A connection stalled in the middle of a frame for idle_timeout_ms:
 * DEADLINE_EXCEEDED, then closed. */
static void test_idle_deadline(void **state)
{
    start("idle_timeout_ms = 300\n", NULL);
    int fd = itest_connect_hello(daemon_under_test.port);
    assert_true(fd >= 0);
    const uint8_t part[] = {20, 0x08, 0x01}; /* 3 of a 21-byte frame */
    assert_int_equal(itest_send_raw(fd, part, sizeof part), 0);
    expect_error(fd, 0, PROTOBUS__CODE__DEADLINE_EXCEEDED,
                 "3 bytes of an unfinished frame and nothing more for 300 ms (idle_timeout_ms)");
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
    start(extra, NULL);
    static int fds[NSILENT];
    for (int i = 0; i < NSILENT; i++) {
        fds[i] = itest_connect(daemon_under_test.port);
        assert_true(fds[i] >= 0);
    }
    /* The real client, while the silent ones are there. */
    int pub = itest_connect_hello(daemon_under_test.port);
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
        (void)send_hello(fds[i], 1, 1); /* fails on a closed one: its Error is read */
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
    start("max_connections = 50\n", NULL);
    int fds[NSILENT];
    for (int i = 0; i < NSILENT; i++) {
        fds[i] = itest_connect(daemon_under_test.port);
        assert_true(fds[i] >= 0);
    }
    int fd = itest_connect_hello(daemon_under_test.port);
    assert_true(fd >= 0);
    expect_error(fds[0], 0, PROTOBUS__CODE__RESOURCE_EXHAUSTED, "max_connections = 50");
    assert_int_equal(send_ping(fd, 8), 0);
    expect_pong(fd, 8);
    for (int i = 0; i < NSILENT; i++)
        close(fds[i]);
    close(fd);
}

/* --- requests and replies ------------------------------------------------------------ */

/* Ping gets Pong with its id; pipelined Pings are answered in order. */
static void test_ping_pong(void **state)
{
    start(NULL, NULL);
    int fd = itest_connect_hello(daemon_under_test.port);
    assert_true(fd >= 0);
    for (uint64_t id = 100; id < 200; id++)
        assert_int_equal(send_ping(fd, id), 0);
    for (uint64_t id = 100; id < 200; id++)
        expect_pong(fd, id);
    close(fd);
}

/* Every reply carries the request's id when it could be read; errors about
 * a frame whose length was valid leave the connection open; a bad length
 * prefix closes it. */
static void test_reply_ids_and_what_closes(void **state)
{
    start("max_event_bytes = 1K\nmax_frame_bytes = 64K\n", "[partition xs]\nmatch = x\\..*\n");
    int fd = itest_connect_hello(daemon_under_test.port);
    assert_true(fd >= 0);

    /* id 42, then a hello field whose length runs past the frame. */
    const uint8_t cut[] = {5, 0x08, 0x2a, 0x12, 0x05, 0x01};
    assert_int_equal(itest_send_raw(fd, cut, sizeof cut), 0);
    expect_error(fd, 42, PROTOBUS__CODE__INVALID_ARGUMENT,
                 "malformed frame: Frame field 2 (hello)");
    /* The id after the fault cannot be read: 0. */
    const uint8_t late[] = {4, 0x1a, 0x07, 0x08, 0x2b};
    assert_int_equal(itest_send_raw(fd, late, sizeof late), 0);
    expect_error(fd, 0, PROTOBUS__CODE__INVALID_ARGUMENT, "malformed frame");
    /* Two bodies. */
    const uint8_t two[] = {6, 0x08, 0x07, 0x5a, 0x00, 0x5a, 0x00};
    assert_int_equal(itest_send_raw(fd, two, sizeof two), 0);
    expect_error(fd, 7, PROTOBUS__CODE__INVALID_ARGUMENT, "a second body");
    /* A Publish whose body is malformed (events must be length-delimited). */
    const uint8_t pub[] = {6, 0x08, 0x09, 0x1a, 0x02, 0x08, 0x01};
    assert_int_equal(itest_send_raw(fd, pub, sizeof pub), 0);
    expect_error(fd, 9, PROTOBUS__CODE__INVALID_ARGUMENT, "malformed Publish frame");
    /* An unknown frame type (field 100). */
    const uint8_t unknown[] = {5, 0x08, 0x2c, 0xa2, 0x06, 0x00};
    assert_int_equal(itest_send_raw(fd, unknown, sizeof unknown), 0);
    expect_error(fd, 44, PROTOBUS__CODE__UNIMPLEMENTED, "unknown frame type");
    /* A frame only servers send. */
    const uint8_t event[] = {4, 0x08, 0x2d, 0x32, 0x00};
    assert_int_equal(itest_send_raw(fd, event, sizeof event), 0);
    expect_error(fd, 45, PROTOBUS__CODE__INVALID_ARGUMENT, "not accepted from clients");
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
    assert_int_equal(send_ping(fd, 50), 0);
    expect_pong(fd, 50);
    /* A frame over max_frame_bytes: refused from its prefix, then closed. */
    const uint8_t huge[] = {0x81, 0x80, 0x04}; /* 65537 */
    assert_int_equal(itest_send_raw(fd, huge, sizeof huge), 0);
    expect_error(fd, 0, PROTOBUS__CODE__RESOURCE_EXHAUSTED, "max_frame_bytes = 65536");
    assert_true(itest_wait_closed(fd, TIMEOUT_MS));
    close(fd);
}

/* A refused Subscribe leaves the connection open, and what was sent after
 * it in the same write is still answered, in order. */
static void test_refused_subscribe_then_more(void **state)
{
    start(NULL, NULL);
    int fd = itest_connect_hello(daemon_under_test.port);
    assert_true(fd >= 0);
    assert_int_equal(itest_subscribe(fd, 5, "a(", PROTOBUS__START_MODE__START_NEW), 0);
    assert_int_equal(send_ping(fd, 6), 0);
    expect_error(fd, 5, PROTOBUS__CODE__INVALID_ARGUMENT, "a(");
    expect_pong(fd, 6);
    close(fd);
}

/* Acks of 1,000 pipelined Publishes, each spread over three partitions
 * (so its parts complete on three writer threads in any order), come back
 * in the order they were sent, each with its batch's offsets. */
static void test_acks_in_order(void **state)
{
    enum { NBATCH = 1000 };
    start(NULL, "[partition alpha]\nmatch = a\\..*\n[partition beta]\nmatch = b\\..*\n"
                "[partition rest]\nmatch = .*\n");
    int fd = itest_connect_hello(daemon_under_test.port);
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

/* --- subscriptions ---------------------------------------------------------------- */

#define RULES_AB "[partition alpha]\nmatch = a\\..*\n[partition beta]\nmatch = b\\..*\n"

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Publishes n events of topic on fd (one batch) and checks the ack. */
static void publish_n(int fd, uint64_t id, const char *topic, size_t n)
{
    const char *t[16], *p[16];
    assert_true(n <= 16);
    for (size_t i = 0; i < n; i++) {
        t[i] = topic;
        p[i] = "payload";
    }
    Protobus__Frame *r = itest_publish(fd, id, t, p, n, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_PUBLISH_ACK);
    protobus__frame__free_unpacked(r, NULL);
}

typedef struct sub_request {
    Protobus__StartMode start;
    const char *offsets_partition; /* START_OFFSETS */
    uint64_t offset;
    int64_t from_time_ns; /* START_TIME */
    uint32_t last_n;      /* START_LAST_N */
} sub_request;

static int send_subscribe(int fd, uint64_t id, const char *pattern, const sub_request *q)
{
    Protobus__Subscribe s = PROTOBUS__SUBSCRIBE__INIT;
    char *patterns[1] = {(char *)pattern};
    s.n_patterns = 1;
    s.patterns = patterns;
    s.start = q->start;
    Protobus__PartitionOffset po = PROTOBUS__PARTITION_OFFSET__INIT;
    Protobus__PartitionOffset *pop = &po;
    if (q->offsets_partition) {
        po.partition = (char *)q->offsets_partition;
        po.offset = q->offset;
        s.n_offsets = 1;
        s.offsets = &pop;
    }
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    if (q->start == PROTOBUS__START_MODE__START_TIME) {
        ts.seconds = q->from_time_ns / 1000000000LL;
        ts.nanos = (int32_t)(q->from_time_ns % 1000000000LL);
        s.from_time = &ts;
    }
    s.last_n = q->last_n;
    Protobus__Frame f = PROTOBUS__FRAME__INIT;
    f.id = id;
    f.body_case = PROTOBUS__FRAME__BODY_SUBSCRIBE;
    f.subscribe = &s;
    return itest_send_frame(fd, &f);
}

/* What a subscription received up to its CaughtUp. */
typedef struct sub_history {
    uint64_t start[2], end[2], first[2]; /* alpha, beta from Subscribed */
    size_t nevents;
    uint64_t offsets[2][64]; /* per partition, in order of arrival */
    size_t n[2];
    uint64_t history_events; /* CaughtUp's */
} sub_history;

static int part_index(const char *name)
{
    if (strcmp(name, "alpha") == 0)
        return 0;
    if (strcmp(name, "beta") == 0)
        return 1;
    fail_msg("unexpected partition %s", name);
    return -1;
}

/* Subscribes on a new connection and reads Subscribed, then every frame up
 * to and including CaughtUp: each must carry the Subscribe's id, and no
 * Event may come before Subscribed. Returns the connection (still open). */
static int subscribe_history(const char *pattern, const sub_request *q, sub_history *h)
{
    memset(h, 0, sizeof *h);
    int fd = itest_connect_hello(daemon_under_test.port);
    assert_true(fd >= 0);
    assert_int_equal(send_subscribe(fd, 77, pattern, q), 0);
    Protobus__Frame *r = itest_recv_frame(fd, TIMEOUT_MS);
    assert_non_null(r);
    if (r->body_case != PROTOBUS__FRAME__BODY_SUBSCRIBED)
        fail_msg("first answer to Subscribe: frame %d (%s)", r->body_case,
                 r->body_case == PROTOBUS__FRAME__BODY_ERROR ? r->error->message : "");
    assert_int_equal(r->id, 77);
    assert_int_equal(r->subscribed->n_partitions, 2);
    for (size_t i = 0; i < 2; i++) {
        const Protobus__PartitionPosition *p = r->subscribed->partitions[i];
        int k = part_index(p->partition);
        h->first[k] = p->first_offset;
        h->start[k] = p->start_offset;
        h->end[k] = p->end_offset;
    }
    protobus__frame__free_unpacked(r, NULL);
    for (;;) {
        r = itest_recv_frame(fd, TIMEOUT_MS);
        assert_non_null(r);
        assert_int_equal(r->id, 77);
        if (r->body_case == PROTOBUS__FRAME__BODY_CAUGHT_UP) {
            h->history_events = r->caught_up->history_events;
            protobus__frame__free_unpacked(r, NULL);
            return fd;
        }
        assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_EVENT);
        int k = part_index(r->event->partition);
        assert_true(h->n[k] < 64);
        h->offsets[k][h->n[k]++] = r->event->offset;
        h->nevents++;
        protobus__frame__free_unpacked(r, NULL);
    }
}

/* The history delivered is exactly [start, end) of each partition (for
 * these tests' filters), in order, and CaughtUp counts it. */
static void expect_history(const sub_history *h)
{
    assert_int_equal(h->history_events, h->nevents);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(h->first[k], 0);
        uint64_t want = h->start[k] < h->end[k] ? h->end[k] - h->start[k] : 0;
        assert_int_equal(h->n[k], want);
        for (size_t i = 0; i < h->n[k]; i++)
            assert_int_equal(h->offsets[k][i], h->start[k] + i);
    }
}

/* After CaughtUp, an event published now is the next frame: live. */
static void expect_live_next(int sub, int pub, uint64_t id)
{
    publish_n(pub, id, "b.live", 1);
    Protobus__Frame *r = itest_recv_frame(sub, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_EVENT);
    assert_string_equal(r->event->event->topic, "b.live");
    protobus__frame__free_unpacked(r, NULL);
}

/* Subscribed's positions for every start mode, the history between it and
 * CaughtUp, and an event published right after CaughtUp seen live. */
static void test_subscribed_every_start_mode(void **state)
{
    start(NULL, RULES_AB);
    int pub = itest_connect_hello(daemon_under_test.port);
    assert_true(pub >= 0);
    publish_n(pub, 1, "a.x", 3); /* alpha 0..2 */
    sleep_ms(20);
    int64_t t = now_ns();
    sleep_ms(20);
    publish_n(pub, 2, "a.x", 2); /* alpha 3..4 */
    publish_n(pub, 3, "b.y", 3); /* beta 0..2 */
    uint64_t pid = 10;
    sub_history h;
    int fd;

    /* START_NEW: start = end, no history, CaughtUp at once. */
    fd = subscribe_history(".*", &(sub_request){.start = PROTOBUS__START_MODE__START_NEW}, &h);
    assert_int_equal(h.start[0], 5);
    assert_int_equal(h.end[0], 5);
    assert_int_equal(h.start[1], 3);
    assert_int_equal(h.end[1], 3);
    expect_history(&h);
    expect_live_next(fd, pub, pid++);
    close(fd);

    /* START_BEGINNING: everything. (b.live is beta 3 by now.) */
    fd =
        subscribe_history(".*", &(sub_request){.start = PROTOBUS__START_MODE__START_BEGINNING}, &h);
    assert_int_equal(h.start[0], 0);
    assert_int_equal(h.end[0], 5);
    assert_int_equal(h.start[1], 0);
    assert_int_equal(h.end[1], 4);
    expect_history(&h);
    expect_live_next(fd, pub, pid++);
    close(fd);

    /* START_OFFSETS: alpha from 2, beta (not listed) from its beginning. */
    fd = subscribe_history(".*",
                           &(sub_request){.start = PROTOBUS__START_MODE__START_OFFSETS,
                                          .offsets_partition = "alpha",
                                          .offset = 2},
                           &h);
    assert_int_equal(h.start[0], 2);
    assert_int_equal(h.start[1], 0);
    assert_int_equal(h.end[1], 5);
    expect_history(&h);
    expect_live_next(fd, pub, pid++);
    close(fd);

    /* START_TIME: alpha from its first event after t, beta all of it. */
    fd = subscribe_history(
        ".*", &(sub_request){.start = PROTOBUS__START_MODE__START_TIME, .from_time_ns = t}, &h);
    assert_int_equal(h.start[0], 3);
    assert_int_equal(h.end[0], 5);
    assert_int_equal(h.start[1], 0);
    expect_history(&h);
    expect_live_next(fd, pub, pid++);
    close(fd);

    /* START_LAST_N 1: the last event of each topic (a.x: alpha 4; b.y is
     * beta 2, b.live beta 6: the start is the lowest wanted offset). */
    fd = subscribe_history(
        ".*", &(sub_request){.start = PROTOBUS__START_MODE__START_LAST_N, .last_n = 1}, &h);
    assert_int_equal(h.start[0], 4);
    assert_int_equal(h.end[0], 5);
    assert_int_equal(h.start[1], 2);
    assert_int_equal(h.end[1], 7);
    assert_int_equal(h.history_events, 3);
    assert_int_equal(h.n[0], 1);
    assert_int_equal(h.offsets[0][0], 4);
    assert_int_equal(h.n[1], 2);
    assert_int_equal(h.offsets[1][0], 2);
    assert_int_equal(h.offsets[1][1], 6);
    expect_live_next(fd, pub, pid++);
    close(fd);
    close(pub);
}

/* A live queue that overflows falls back to the files: everything still
 * arrives once, in order, and CaughtUp came exactly once. */
static void test_overflow_no_second_caught_up(void **state)
{
    enum { NBATCH = 400, PER = 16, PAYLOAD = 900 };
    start("max_event_bytes = 1K\nmax_frame_bytes = 64K\nsubscriber_queue_bytes = 4K\n", NULL);
    int pub = itest_connect_hello(daemon_under_test.port);
    int sub = itest_connect_hello(daemon_under_test.port);
    assert_true(pub >= 0 && sub >= 0);
    sub_request q = {.start = PROTOBUS__START_MODE__START_NEW};
    assert_int_equal(send_subscribe(sub, 5, ".*", &q), 0);
    Protobus__Frame *r = itest_recv_frame(sub, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_SUBSCRIBED);
    protobus__frame__free_unpacked(r, NULL);
    /* Not read meanwhile: the socket fills, the queue overflows. */
    static char payload[PAYLOAD + 1];
    memset(payload, 'o', PAYLOAD);
    const char *t[PER], *p[PER];
    for (int i = 0; i < PER; i++) {
        t[i] = "over.flow";
        p[i] = payload;
    }
    for (int b = 0; b < NBATCH; b++) {
        r = itest_publish(pub, (uint64_t)b + 1, t, p, PER, TIMEOUT_MS);
        assert_non_null(r);
        assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_PUBLISH_ACK);
        protobus__frame__free_unpacked(r, NULL);
    }
    int caught_up = 0;
    uint64_t next = 0;
    while (next < (uint64_t)NBATCH * PER) {
        r = itest_recv_frame(sub, TIMEOUT_MS);
        assert_non_null(r);
        if (r->body_case == PROTOBUS__FRAME__BODY_CAUGHT_UP) {
            caught_up++;
        } else {
            assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_EVENT);
            assert_int_equal(r->event->offset, next);
            next++;
        }
        protobus__frame__free_unpacked(r, NULL);
    }
    assert_int_equal(caught_up, 1);
    assert_true(itest_log_contains(&daemon_under_test, "catching up from the files"));
    /* Nothing more: no late CaughtUp either. */
    assert_null(itest_recv_frame(sub, 300));
    close(sub);
    close(pub);
}

/* --- a subscribed connection keeps being read -------------------------------------- */

/* Requests on a subscribed connection: a Ping sent with the Subscribe is
 * answered after Subscribed; Publish and a second Subscribe are refused
 * with their ids (nothing stored), a malformed frame too; the subscription
 * goes on. A frame over max_frame_bytes closes it. */
static void test_subscribed_connection_answers(void **state)
{
    start("max_event_bytes = 1K\nmax_frame_bytes = 64K\n", RULES_AB);
    int pub = itest_connect_hello(daemon_under_test.port);
    int sub = itest_connect_hello(daemon_under_test.port);
    assert_true(pub >= 0 && sub >= 0);
    publish_n(pub, 1, "a.x", 2);

    /* Subscribe and Ping in one write: the Ping usually arrives in the
     * bytes the loop read with the Subscribe (handed over with it). Its
     * Pong comes after Subscribed; events may come before or after it. */
    Protobus__Subscribe sreq = PROTOBUS__SUBSCRIBE__INIT;
    char *all[1] = {".*"};
    sreq.n_patterns = 1;
    sreq.patterns = all;
    sreq.start = PROTOBUS__START_MODE__START_BEGINNING;
    Protobus__Ping ping = PROTOBUS__PING__INIT;
    Protobus__Frame f1 = PROTOBUS__FRAME__INIT, f2 = PROTOBUS__FRAME__INIT;
    f1.id = 5;
    f1.body_case = PROTOBUS__FRAME__BODY_SUBSCRIBE;
    f1.subscribe = &sreq;
    f2.id = 6;
    f2.body_case = PROTOBUS__FRAME__BODY_PING;
    f2.ping = &ping;
    uint8_t both[256];
    size_t n1 = protobus__frame__get_packed_size(&f1), n2 = protobus__frame__get_packed_size(&f2);
    assert_true(n1 < 120 && n2 < 120);
    both[0] = (uint8_t)n1;
    protobus__frame__pack(&f1, both + 1);
    both[1 + n1] = (uint8_t)n2;
    protobus__frame__pack(&f2, both + 2 + n1);
    assert_int_equal(itest_send_raw(sub, both, 2 + n1 + n2), 0);
    Protobus__Frame *r = itest_recv_frame(sub, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_SUBSCRIBED);
    protobus__frame__free_unpacked(r, NULL);
    int events = 0, pongs = 0, caught_up = 0;
    while (pongs == 0 || caught_up == 0) {
        r = itest_recv_frame(sub, TIMEOUT_MS);
        assert_non_null(r);
        if (r->body_case == PROTOBUS__FRAME__BODY_PONG) {
            assert_int_equal(r->id, 6);
            pongs++;
        } else if (r->body_case == PROTOBUS__FRAME__BODY_CAUGHT_UP) {
            assert_int_equal(events, 2);
            caught_up++;
        } else {
            assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_EVENT);
            assert_int_equal(caught_up, 0);
            events++;
        }
        protobus__frame__free_unpacked(r, NULL);
    }
    assert_int_equal(events, 2);

    assert_int_equal(send_publish(sub, 7, "a.x", "dropped?"), 0);
    expect_error(sub, 7, PROTOBUS__CODE__FAILED_PRECONDITION,
                 "this connection is subscribed; publish on another connection");
    assert_int_equal(
        send_subscribe(sub, 8, ".*", &(sub_request){.start = PROTOBUS__START_MODE__START_NEW}), 0);
    expect_error(sub, 8, PROTOBUS__CODE__FAILED_PRECONDITION, "this connection is subscribed");
    const uint8_t two[] = {6, 0x08, 0x09, 0x5a, 0x00, 0x5a, 0x00};
    assert_int_equal(itest_send_raw(sub, two, sizeof two), 0);
    expect_error(sub, 9, PROTOBUS__CODE__INVALID_ARGUMENT, "a second body");
    assert_int_equal(send_ping(sub, 10), 0);
    expect_pong(sub, 10);

    /* The subscription goes on, and the refused Publish took no offset. */
    const char *t[1] = {"a.x"}, *p[1] = {"live"};
    r = itest_publish(pub, 2, t, p, 1, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->publish_ack->offsets[0], 2);
    protobus__frame__free_unpacked(r, NULL);
    r = itest_recv_frame(sub, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_EVENT);
    assert_int_equal(r->event->offset, 2);
    protobus__frame__free_unpacked(r, NULL);

    /* Over max_frame_bytes: refused from the prefix, then closed. */
    const uint8_t huge[] = {0x81, 0x80, 0x04}; /* 65537 */
    assert_int_equal(itest_send_raw(sub, huge, sizeof huge), 0);
    expect_error(sub, 0, PROTOBUS__CODE__RESOURCE_EXHAUSTED, "max_frame_bytes = 65536");
    assert_true(itest_wait_closed(sub, TIMEOUT_MS));
    close(sub);
    close(pub);
}

typedef struct flood_reader {
    int fd;
    uint64_t first_id, n;
    uint64_t answered; /* Errors with the expected id, in order */
    bool bad;
} flood_reader;

/* Reads the n answers of a flood: FAILED_PRECONDITION, ids in order. No
 * cmocka asserts off the main thread: bad says what went wrong. */
static void *flood_read(void *arg)
{
    flood_reader *fr = arg;
    while (fr->answered < fr->n && !fr->bad) {
        Protobus__Frame *r = itest_recv_frame(fr->fd, 30000);
        if (!r || r->body_case != PROTOBUS__FRAME__BODY_ERROR ||
            r->error->code != PROTOBUS__CODE__FAILED_PRECONDITION ||
            r->id != fr->first_id + fr->answered)
            fr->bad = true;
        else
            fr->answered++;
        if (r)
            protobus__frame__free_unpacked(r, NULL);
    }
    return NULL;
}

/* 64 MB of Publishes on a subscribed connection: each answered, in order,
 * and the daemon's memory does not follow (read, answer, discard); the
 * subscription still delivers afterwards. */
static void test_subscribed_connection_flood_bounded(void **state)
{
    enum { NFLOOD = 16000, PAYLOAD = 4000 };
    start("max_event_bytes = 8K\nmax_frame_bytes = 64K\n", NULL);
    int pub = itest_connect_hello(daemon_under_test.port);
    int sub = itest_connect_hello(daemon_under_test.port);
    assert_true(pub >= 0 && sub >= 0);
    assert_int_equal(
        send_subscribe(sub, 1, ".*", &(sub_request){.start = PROTOBUS__START_MODE__START_NEW}), 0);
    for (int i = 0; i < 2; i++) { /* Subscribed, CaughtUp */
        Protobus__Frame *r = itest_recv_frame(sub, TIMEOUT_MS);
        assert_non_null(r);
        protobus__frame__free_unpacked(r, NULL);
    }
    long rss_before = itest_daemon_rss_kb(&daemon_under_test);
    assert_true(rss_before > 0);

    /* One encoded Publish frame, sent NFLOOD times with increasing ids. */
    static char payload[PAYLOAD + 1];
    memset(payload, 'f', PAYLOAD);
    flood_reader fr = {.fd = sub, .first_id = 1000, .n = NFLOOD};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, flood_read, &fr), 0);
    for (uint64_t i = 0; i < NFLOOD; i++)
        if (send_publish(sub, fr.first_id + i, "flood.x", payload) != 0)
            break;
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_false(fr.bad);
    assert_int_equal(fr.answered, NFLOOD);
    long rss_after = itest_daemon_rss_kb(&daemon_under_test);
    print_message("daemon RSS %ld KiB before, %ld KiB after %d MB of refused Publishes\n",
                  rss_before, rss_after, NFLOOD * PAYLOAD / 1000000);
    assert_true(rss_after - rss_before < 16 * 1024);

    /* Nothing of it was stored, and the subscription delivers. */
    const char *t[1] = {"after.flood"}, *p[1] = {"x"};
    Protobus__Frame *r = itest_publish(pub, 2, t, p, 1, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->publish_ack->offsets[0], 0);
    protobus__frame__free_unpacked(r, NULL);
    r = itest_recv_frame(sub, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_EVENT);
    assert_string_equal(r->event->event->topic, "after.flood");
    protobus__frame__free_unpacked(r, NULL);
    close(sub);
    close(pub);
}

/* --- through libprotobus ---------------------------------------------------------- */

static pb_client *lib_connect(void)
{
    char addr[64], err[256] = "";
    snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)daemon_under_test.port);
    pb_client *c = NULL;
    if (pb_client_connect(&c, addr, NULL, err, sizeof err) != 0)
        fail_msg("connect: %s", err);
    return c;
}

static void lib_publish(pb_client *c, const char *topic, int n)
{
    for (int i = 0; i < n; i++) {
        pb_event ev = {.topic = topic, .payload = "p", .payload_len = 1};
        assert_int_equal(pb_client_publish(c, &ev), 0);
    }
    assert_int_equal(pb_client_flush(c, TIMEOUT_MS, NULL, NULL), 0);
}

/* Many small batches over three partitions, pipelined through the library
 * (which refuses a server that acks out of order): every position right. */
static void test_library_pipelined_positions(void **state)
{
    enum { NEVENTS = 3000 };
    start(NULL, "[partition alpha]\nmatch = a\\..*\n[partition beta]\nmatch = b\\..*\n"
                "[partition rest]\nmatch = .*\n");
    char addr[64], err[256] = "";
    snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)daemon_under_test.port);
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

/* The start positions through pb_client_subscription, the history as
 * items, PB_ITEM_CAUGHT_UP once, then live events. */
static void test_library_subscription(void **state)
{
    start(NULL, RULES_AB);
    pb_client *pub = lib_connect();
    lib_publish(pub, "a.x", 4);
    lib_publish(pub, "b.y", 2);

    pb_client *sub = lib_connect();
    const char *pats[1] = {".*"};
    pb_partition_offset from = {.partition = "alpha", .offset = 1};
    pb_subscription s = {.patterns = pats,
                         .npatterns = 1,
                         .start = PB_START_OFFSETS,
                         .offsets = &from,
                         .noffsets = 1};
    assert_int_equal(pb_client_subscribe(sub, &s), 0);
    const pb_subscribed_partition *parts;
    size_t nparts;
    assert_int_equal(pb_client_subscription(sub, &parts, &nparts), 0);
    assert_int_equal(nparts, 2);
    for (size_t i = 0; i < nparts; i++) {
        bool alpha = strcmp(parts[i].partition, "alpha") == 0;
        assert_true(alpha || strcmp(parts[i].partition, "beta") == 0);
        assert_int_equal(parts[i].first_offset, 0);
        assert_int_equal(parts[i].start_offset, alpha ? 1 : 0);
        assert_int_equal(parts[i].end_offset, alpha ? 4 : 2);
    }
    pb_item it;
    int events = 0;
    for (;;) {
        assert_int_equal(pb_client_next(sub, &it, TIMEOUT_MS), 0);
        if (it.kind == PB_ITEM_CAUGHT_UP)
            break;
        assert_int_equal(it.kind, PB_ITEM_EVENT);
        events++;
    }
    assert_int_equal(events, 3 + 2);
    assert_int_equal(it.caught_up.history_events, 5);
    lib_publish(pub, "b.live", 1);
    assert_int_equal(pb_client_next(sub, &it, TIMEOUT_MS), 0);
    assert_int_equal(it.kind, PB_ITEM_EVENT);
    assert_string_equal(it.event.topic, "b.live");
    assert_int_equal(it.event.offset, 2);
    pb_client_close(sub);

    /* START_NEW: caught up at once, then live. A refused subscription
     * leaves the connection usable for another. */
    sub = lib_connect();
    const char *bad[1] = {"a("};
    pb_subscription refused = {.patterns = bad, .npatterns = 1};
    assert_int_equal(pb_client_subscribe(sub, &refused), PB_ESERVER);
    assert_int_equal(pb_client_server_error(sub)->code, PB_CODE_INVALID_ARGUMENT);
    assert_int_equal(pb_client_subscription(sub, &parts, &nparts), PB_EINVAL);
    pb_subscription fresh = {.patterns = pats, .npatterns = 1, .start = PB_START_NEW};
    assert_int_equal(pb_client_subscribe(sub, &fresh), 0);
    assert_int_equal(pb_client_next(sub, &it, TIMEOUT_MS), 0);
    assert_int_equal(it.kind, PB_ITEM_CAUGHT_UP);
    assert_int_equal(it.caught_up.history_events, 0);
    lib_publish(pub, "a.live", 1);
    assert_int_equal(pb_client_next(sub, &it, TIMEOUT_MS), 0);
    assert_int_equal(it.kind, PB_ITEM_EVENT);
    assert_string_equal(it.event.topic, "a.live");
    pb_client_close(sub);
    pb_client_close(pub);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_missing_hello, teardown),
        cmocka_unit_test_teardown(test_versions_refused, teardown),
        cmocka_unit_test_teardown(test_server_hello, teardown),
        cmocka_unit_test_teardown(test_handshake_deadline, teardown),
        cmocka_unit_test_teardown(test_idle_deadline, teardown),
        cmocka_unit_test_teardown(test_max_handshaking, teardown),
        cmocka_unit_test_teardown(test_max_connections_full_of_silent_ones, teardown),
        cmocka_unit_test_teardown(test_ping_pong, teardown),
        cmocka_unit_test_teardown(test_reply_ids_and_what_closes, teardown),
        cmocka_unit_test_teardown(test_refused_subscribe_then_more, teardown),
        cmocka_unit_test_teardown(test_acks_in_order, teardown),
        cmocka_unit_test_teardown(test_subscribed_every_start_mode, teardown),
        cmocka_unit_test_teardown(test_overflow_no_second_caught_up, teardown),
        cmocka_unit_test_teardown(test_subscribed_connection_answers, teardown),
        cmocka_unit_test_teardown(test_subscribed_connection_flood_bounded, teardown),
        cmocka_unit_test_teardown(test_library_subscription, teardown),
        cmocka_unit_test_teardown(test_library_pipelined_positions, teardown),
    };
    return cmocka_run_group_tests_name("integration: connection model (raw frames)", tests, NULL,
                                       NULL);
}
