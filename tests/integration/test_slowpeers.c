/*
 * Integration: slow and stalled peers against the real protobusd.
 *
 * - A subscriber that stops reading is dropped after write_deadline_ms (set
 *   low here) with a log line, and its pool thread serves the next
 *   subscriber; while it is stalled, a publisher and another subscriber
 *   keep their usual latency.
 * - A client that sends half a frame and stalls is dropped after
 *   idle_timeout_ms; a client that is merely idle between frames is not;
 *   others are not slowed meanwhile; a frame trickled in a byte at a time
 *   is dropped at its deadline (idle_timeout_ms + 1 ms per 64 bytes).
 *
 * "Not slowed" is measured: every publish -> ack -> delivery round trip made
 * during a stall must take under half the stall's timeout (a daemon that
 * waited for the stalled peer would take the whole timeout), and enough of
 * them must complete before the stalled peer is dropped to show that they
 * overlapped the stall.
 */
#include "itest.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_MS        15000
#define WRITE_DEADLINE_MS 3000
#define IDLE_TIMEOUT_MS   2000
#define ROUND_TRIPS       10
#define BULK_EVENT_BYTES  (256 * 1024)
/* Allowed past a timeout before the drop must have happened (sanitizer
 * builds and a busy machine are slow, the daemon's timers are not late). */
#define DROP_SLACK_MS 5000

static itest_daemon daemon_under_test;

static int teardown(void **state)
{
    (void)state;
    itest_daemon_cleanup(&daemon_under_test);
    return 0;
}

static void assert_hello(int fd)
{
    Protobus__Frame *r = itest_hello(fd, 1, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_HELLO);
    protobus__frame__free_unpacked(r, NULL);
}

/* A connection whose receive buffer is as small as the kernel allows, so
 * that a subscriber which does not read stalls the daemon's writes soon. */
static int connect_small_rcvbuf(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int small = 4096;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small) < 0 ||
        connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    Protobus__Frame *r = itest_hello(fd, 1, TIMEOUT_MS);
    int ok = r && r->body_case == PROTOBUS__FRAME__BODY_HELLO;
    if (r)
        protobus__frame__free_unpacked(r, NULL);
    if (!ok) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Bytes the kernel could buffer between the daemon and a subscriber that
 * does not read: the daemon's send buffer can grow to tcp_wmem's maximum. */
static size_t stall_bytes(void)
{
    size_t wmax = 4u << 20;
    FILE *f = fopen("/proc/sys/net/ipv4/tcp_wmem", "r");
    if (f) {
        unsigned long lo, def, hi;
        if (fscanf(f, "%lu %lu %lu", &lo, &def, &hi) == 3 && hi > 0 && hi < (64ul << 20))
            wmax = hi;
        fclose(f);
    }
    return 2 * wmax + (4u << 20);
}

/* Publishes `total` bytes of history on topic bulk.history (acks awaited). */
static void publish_bulk(int fd, size_t total)
{
    char *payload = malloc(BULK_EVENT_BYTES + 1);
    assert_non_null(payload);
    memset(payload, 'b', BULK_EVENT_BYTES);
    payload[BULK_EVENT_BYTES] = '\0';
    const char *topics[4] = {"bulk.history", "bulk.history", "bulk.history", "bulk.history"};
    const char *payloads[4] = {payload, payload, payload, payload};
    uint64_t id = 100;
    for (size_t done = 0; done < total; done += 4 * BULK_EVENT_BYTES) {
        Protobus__Frame *r = itest_publish(fd, id++, topics, payloads, 4, TIMEOUT_MS);
        assert_non_null(r);
        assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_PUBLISH_ACK);
        protobus__frame__free_unpacked(r, NULL);
    }
    free(payload);
}

/* One publish on `pub` of topic normal.<k>, its ack, and its delivery to
 * `sub` (subscribed to normal.*). Returns the milliseconds it took. */
static uint64_t round_trip(int pub, int sub, int k)
{
    char topic[32], payload[32];
    snprintf(topic, sizeof topic, "normal.%d", k);
    snprintf(payload, sizeof payload, "p%d", k);
    const char *t[1] = {topic}, *p[1] = {payload};
    uint64_t t0 = itest_now_ms();
    Protobus__Frame *r = itest_publish(pub, 1000 + (uint64_t)k, t, p, 1, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_PUBLISH_ACK);
    protobus__frame__free_unpacked(r, NULL);
    r = itest_recv_event(sub, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_EVENT);
    assert_string_equal(r->event->event->topic, topic);
    protobus__frame__free_unpacked(r, NULL);
    return itest_now_ms() - t0;
}

/* Waits (bounded) for the daemon's log to contain text; the time it
 * appeared (monotonic ms), or 0. */
static uint64_t wait_log(const itest_daemon *d, const char *text, int timeout_ms)
{
    uint64_t deadline = itest_now_ms() + (uint64_t)timeout_ms;
    while (!itest_log_contains(d, text)) {
        if (itest_now_ms() >= deadline)
            return 0;
        itest_sleep_ms(10);
    }
    return itest_now_ms();
}

static void test_stalled_subscriber_dropped(void **state)
{
    (void)state;
    itest_daemon *d = &daemon_under_test;
    char extra[256];
    /* Two pool threads: the stalled subscriber and the normal one fill it. */
    snprintf(extra, sizeof extra,
             "threads = 2\nwrite_deadline_ms = %d\nsubscriber_queue_bytes = 1M\n",
             WRITE_DEADLINE_MS);
    assert_int_equal(itest_daemon_start(d, extra, NULL), 0);

    int pub = itest_connect(d->port);
    assert_true(pub >= 0);
    assert_hello(pub);
    publish_bulk(pub, stall_bytes());

    /* The normal subscriber: it replays past the bulk history (filtered
     * out) and then follows normal.* live. */
    int sub = itest_connect_hello(d->port);
    assert_true(sub >= 0);
    assert_int_equal(itest_subscribe(sub, 7, "normal\\..*", PROTOBUS__START_MODE__START_BEGINNING),
                     0);
    (void)round_trip(pub, sub, 0);

    /* The stalled subscriber: asks for the bulk history, reads nothing. */
    int stalled = connect_small_rcvbuf(d->port);
    assert_true(stalled >= 0);
    assert_int_equal(
        itest_subscribe(stalled, 8, "bulk\\..*", PROTOBUS__START_MODE__START_BEGINNING), 0);
    uint64_t subscribed_at = itest_now_ms();
    /* Its stream has started once bytes wait in its receive buffer. */
    int queued = 0;
    while (queued == 0 && itest_now_ms() < subscribed_at + TIMEOUT_MS) {
        assert_int_equal(ioctl(stalled, FIONREAD, &queued), 0);
        if (queued == 0)
            itest_sleep_ms(5);
    }
    assert_true(queued > 0);

    /* The pool is full while it is stalled: a third subscriber is refused
     * (this is what a subscriber held forever would do to everyone). */
    int third = itest_connect_hello(d->port);
    assert_true(third >= 0);
    assert_int_equal(
        itest_subscribe(third, 9, "normal\\..*", PROTOBUS__START_MODE__START_BEGINNING), 0);
    Protobus__Frame *r = itest_recv_frame(third, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_ERROR);
    assert_int_equal(r->error->code, PROTOBUS__CODE__RESOURCE_EXHAUSTED);
    protobus__frame__free_unpacked(r, NULL);
    assert_int_equal(close(third), 0);

    /* Meanwhile the others are served at their usual pace. */
    uint64_t worst = 0;
    for (int k = 1; k <= ROUND_TRIPS; k++) {
        uint64_t ms = round_trip(pub, sub, k);
        if (ms > worst)
            worst = ms;
    }
    /* All of that happened during the stall. */
    assert_false(itest_log_contains(d, "dropped: no progress"));
    fprintf(stderr, "test_slowpeers: %d round trips during a subscriber stall, worst %llu ms\n",
            ROUND_TRIPS, (unsigned long long)worst);
    assert_true(worst < WRITE_DEADLINE_MS / 2);

    /* Dropped after the deadline, with a log line saying why. */
    char line[96];
    snprintf(line, sizeof line, "dropped: no progress for %d ms", WRITE_DEADLINE_MS);
    uint64_t dropped_at = wait_log(d, line, WRITE_DEADLINE_MS + DROP_SLACK_MS);
    assert_true(dropped_at > 0);
    assert_true(dropped_at - subscribed_at >= WRITE_DEADLINE_MS);
    assert_true(itest_wait_closed(stalled, TIMEOUT_MS));
    assert_int_equal(close(stalled), 0);

    /* Its pool thread is free again: a new subscriber is accepted (bounded
     * retries: the thread logs the drop before it gives the slot back). */
    int next = -1;
    uint64_t deadline = itest_now_ms() + TIMEOUT_MS;
    for (;;) {
        next = itest_connect_hello(d->port);
        assert_true(next >= 0);
        assert_int_equal(
            itest_subscribe(next, 10, "normal\\..*", PROTOBUS__START_MODE__START_BEGINNING), 0);
        /* Replays normal.0 .. normal.ROUND_TRIPS, or an Error if refused. */
        r = itest_recv_event(next, TIMEOUT_MS);
        assert_non_null(r);
        if (r->body_case == PROTOBUS__FRAME__BODY_EVENT)
            break;
        assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_ERROR);
        assert_int_equal(r->error->code, PROTOBUS__CODE__RESOURCE_EXHAUSTED);
        protobus__frame__free_unpacked(r, NULL);
        assert_int_equal(close(next), 0);
        assert_true(itest_now_ms() < deadline);
        itest_sleep_ms(10);
    }
    assert_string_equal(r->event->event->topic, "normal.0");
    protobus__frame__free_unpacked(r, NULL);

    assert_int_equal(close(next), 0);
    assert_int_equal(close(sub), 0);
    assert_int_equal(close(pub), 0);
    assert_int_equal(itest_daemon_stop(d), 0);
}

static void test_half_frame_dropped_idle_kept(void **state)
{
    (void)state;
    itest_daemon *d = &daemon_under_test;
    char extra[128];
    snprintf(extra, sizeof extra, "idle_timeout_ms = %d\n", IDLE_TIMEOUT_MS);
    assert_int_equal(itest_daemon_start(d, extra, NULL), 0);

    int pub = itest_connect(d->port);
    assert_true(pub >= 0);
    assert_hello(pub);
    int sub = itest_connect_hello(d->port);
    assert_true(sub >= 0);
    assert_int_equal(itest_subscribe(sub, 7, "normal\\..*", PROTOBUS__START_MODE__START_BEGINNING),
                     0);
    (void)round_trip(pub, sub, 0);

    /* Idle between frames: allowed to stay. */
    int idle = itest_connect(d->port);
    assert_true(idle >= 0);
    assert_hello(idle);

    /* Half a frame: the prefix says 100 bytes, 4 arrive, then nothing. */
    int half = itest_connect(d->port);
    assert_true(half >= 0);
    assert_hello(half);
    const uint8_t part[5] = {100, 0x08, 0x05, 0x1a, 0x00};
    assert_int_equal(itest_send_raw(half, part, sizeof part), 0);
    uint64_t stalled_at = itest_now_ms();

    uint64_t worst = 0;
    for (int k = 1; k <= ROUND_TRIPS; k++) {
        uint64_t ms = round_trip(pub, sub, k);
        if (ms > worst)
            worst = ms;
    }
    assert_false(itest_log_contains(d, "idle_timeout_ms"));
    fprintf(stderr, "test_slowpeers: %d round trips during a half-frame stall, worst %llu ms\n",
            ROUND_TRIPS, (unsigned long long)worst);
    assert_true(worst < IDLE_TIMEOUT_MS / 2);

    assert_true(itest_wait_closed(half, IDLE_TIMEOUT_MS + DROP_SLACK_MS));
    uint64_t closed_at = itest_now_ms();
    /* libuv's timer may fire up to a millisecond early by our clock. */
    assert_true(closed_at + 2 >= stalled_at + IDLE_TIMEOUT_MS);
    assert_true(itest_log_contains(d, "5 bytes of an unfinished frame"));
    assert_int_equal(close(half), 0);

    /* The idle connection has been idle longer than the timeout: still
     * open, still answered (a Ping: a second Hello is refused since
     * protocol v1). */
    assert_true(itest_now_ms() - stalled_at >= IDLE_TIMEOUT_MS);
    Protobus__Frame *pong = itest_ping(idle, 2, TIMEOUT_MS);
    assert_non_null(pong);
    assert_int_equal(pong->body_case, PROTOBUS__FRAME__BODY_PONG);
    protobus__frame__free_unpacked(pong, NULL);
    assert_int_equal(close(idle), 0);
    assert_int_equal(close(sub), 0);
    assert_int_equal(close(pub), 0);
    assert_int_equal(itest_daemon_stop(d), 0);
}

/* A frame trickled in a byte every 500 ms (never idle_timeout_ms without a
 * byte) is dropped all the same once its deadline passes: idle_timeout_ms
 * plus 1 ms per 64 bytes of it (here 2,000 + 100 ms), with a log line
 * saying so; without the deadline it would hold its buffer for 53 min. */
static void test_trickled_frame_dropped(void **state)
{
    (void)state;
    itest_daemon *d = &daemon_under_test;
    char extra[128];
    snprintf(extra, sizeof extra, "idle_timeout_ms = %d\n", IDLE_TIMEOUT_MS);
    assert_int_equal(itest_daemon_start(d, extra, NULL), 0);
    int fd = itest_connect(d->port);
    assert_true(fd >= 0);
    assert_hello(fd);
    const uint8_t prefix[2] = {0x80, 0x32}; /* varint 6,400 */
    /* The clock is read before the send: read after it, a client thread
     * preempted between the two (ASan at load 12: 46 ms) started its clock
     * after the server's and saw the drop "early" (2,054 ms). */
    uint64_t started = itest_now_ms();
    assert_int_equal(itest_send_raw(fd, prefix, sizeof prefix), 0);
    int closed = 0;
    /* Bounded: 40 x 500 ms, far past the deadline and its slack. */
    for (int i = 0; i < 40 && !closed; i++) {
        const uint8_t byte = 0x0a;
        if (itest_send_raw(fd, &byte, 1) < 0)
            break; /* already closed by the server */
        closed = itest_wait_closed(fd, 500);
    }
    if (!closed)
        closed = itest_wait_closed(fd, 1000);
    uint64_t took = itest_now_ms() - started;
    fprintf(stderr, "test_slowpeers: trickled frame closed after %llu ms\n",
            (unsigned long long)took);
    assert_true(closed);
    assert_true(took + 2 >= IDLE_TIMEOUT_MS + 100);
    assert_true(took <= IDLE_TIMEOUT_MS + 100 + DROP_SLACK_MS);
    assert_true(itest_log_contains(d, "bytes still unfinished"));
    assert_true(itest_log_contains(d, "a frame must arrive within idle_timeout_ms"));
    assert_int_equal(close(fd), 0);
    assert_int_equal(itest_daemon_stop(d), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_stalled_subscriber_dropped, teardown),
        cmocka_unit_test_teardown(test_half_frame_dropped_idle_kept, teardown),
        cmocka_unit_test_teardown(test_trickled_frame_dropped, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
