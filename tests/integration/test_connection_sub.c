/*
 * Integration: protocol version 1's connection model (FORMAT.md Part A,
 * section 7) for subscriptions, against the real protobusd through raw
 * frames (protobuf-c, tests/lib/itest.h): Subscribed for every start mode
 * and CaughtUp's place, also when the live queue overflows; a subscribed
 * connection still read and answered, its memory bounded under a flood;
 * then the same model through libprotobus (pb_client_subscription,
 * PB_ITEM_CAUGHT_UP). The handshake and requests are test_connection's
 * subject.
 *
 * Threads: the test's main thread, and one reader of a flood's answers.
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
#include <time.h>
#include <unistd.h>

#define TIMEOUT_MS 10000

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
    int fd = itest_connect_hello(itest_dut.port);
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
    itest_start(NULL, RULES_AB);
    int pub = itest_connect_hello(itest_dut.port);
    assert_true(pub >= 0);
    publish_n(pub, 1, "a.x", 3); /* alpha 0..2 */
    itest_sleep_ms(20);
    int64_t t = now_ns();
    itest_sleep_ms(20);
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
    itest_start("max_event_bytes = 1K\nmax_frame_bytes = 64K\nsubscriber_queue_bytes = 4K\n", NULL);
    int pub = itest_connect_hello(itest_dut.port);
    int sub = itest_connect_hello(itest_dut.port);
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
    assert_true(itest_log_contains(&itest_dut, "catching up from the files"));
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
    itest_start("max_event_bytes = 1K\nmax_frame_bytes = 64K\n", RULES_AB);
    int pub = itest_connect_hello(itest_dut.port);
    int sub = itest_connect_hello(itest_dut.port);
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

    assert_int_equal(itest_send_publish(sub, 7, "a.x", "dropped?"), 0);
    itest_expect_error(sub, 7, PROTOBUS__CODE__FAILED_PRECONDITION,
                       "this connection is subscribed; publish on another connection", TIMEOUT_MS);
    assert_int_equal(
        send_subscribe(sub, 8, ".*", &(sub_request){.start = PROTOBUS__START_MODE__START_NEW}), 0);
    itest_expect_error(sub, 8, PROTOBUS__CODE__FAILED_PRECONDITION, "this connection is subscribed",
                       TIMEOUT_MS);
    const uint8_t two[] = {6, 0x08, 0x09, 0x5a, 0x00, 0x5a, 0x00};
    assert_int_equal(itest_send_raw(sub, two, sizeof two), 0);
    itest_expect_error(sub, 9, PROTOBUS__CODE__INVALID_ARGUMENT, "a second body", TIMEOUT_MS);
    assert_int_equal(itest_send_ping(sub, 10), 0);
    itest_expect_pong(sub, 10, TIMEOUT_MS);

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
    itest_expect_error(sub, 0, PROTOBUS__CODE__RESOURCE_EXHAUSTED, "max_frame_bytes = 65536",
                       TIMEOUT_MS);
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
    itest_start("max_event_bytes = 8K\nmax_frame_bytes = 64K\n", NULL);
    int pub = itest_connect_hello(itest_dut.port);
    int sub = itest_connect_hello(itest_dut.port);
    assert_true(pub >= 0 && sub >= 0);
    assert_int_equal(
        send_subscribe(sub, 1, ".*", &(sub_request){.start = PROTOBUS__START_MODE__START_NEW}), 0);
    for (int i = 0; i < 2; i++) { /* Subscribed, CaughtUp */
        Protobus__Frame *r = itest_recv_frame(sub, TIMEOUT_MS);
        assert_non_null(r);
        protobus__frame__free_unpacked(r, NULL);
    }
    long rss_before = itest_daemon_rss_kb(&itest_dut);
    assert_true(rss_before > 0);

    /* One encoded Publish frame, sent NFLOOD times with increasing ids. */
    static char payload[PAYLOAD + 1];
    memset(payload, 'f', PAYLOAD);
    flood_reader fr = {.fd = sub, .first_id = 1000, .n = NFLOOD};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, flood_read, &fr), 0);
    for (uint64_t i = 0; i < NFLOOD; i++)
        if (itest_send_publish(sub, fr.first_id + i, "flood.x", payload) != 0)
            break;
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_false(fr.bad);
    assert_int_equal(fr.answered, NFLOOD);
    long rss_after = itest_daemon_rss_kb(&itest_dut);
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
    snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)itest_dut.port);
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

/* The start positions through pb_client_subscription, the history as
 * items, PB_ITEM_CAUGHT_UP once, then live events. */
static void test_library_subscription(void **state)
{
    itest_start(NULL, RULES_AB);
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
        cmocka_unit_test_teardown(test_subscribed_every_start_mode, itest_teardown),
        cmocka_unit_test_teardown(test_overflow_no_second_caught_up, itest_teardown),
        cmocka_unit_test_teardown(test_subscribed_connection_answers, itest_teardown),
        cmocka_unit_test_teardown(test_subscribed_connection_flood_bounded, itest_teardown),
        cmocka_unit_test_teardown(test_library_subscription, itest_teardown),
    };
    return cmocka_run_group_tests_name("integration: connection model, subscriptions (raw frames)",
                                       tests, NULL, NULL);
}
