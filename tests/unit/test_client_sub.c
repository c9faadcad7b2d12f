/*
 * test_client_sub - libprotobus's subscriptions against a scripted fake server
 * (tests/lib/fakeserver.h): subscribe with every field of an event, DATA_LOSS
 * reports, CaughtUp once, an old server or another protocol version refused, server
 * errors, no answer, a timeout then close, and a refusal that arrives while a large
 * Subscribe is still being written.
 *
 * The fake server speaks protocol version 1 (replies in request order, Subscribed
 * before any event, CaughtUp once) unless a test makes it break a rule on purpose,
 * to check that the library refuses it clearly.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "fakeserver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* --- subscribing --------------------------------------------------------------- */

/* Reads the Subscribe request into s->subscribe; returns its frame id. */
static uint64_t srv_read_subscribe(fake_server *s, int fd)
{
    Protobus__Frame *f = srv_read(s, fd);
    if (!f || f->body_case != PROTOBUS__FRAME__BODY_SUBSCRIBE) {
        srv_fail(s, "expected Subscribe");
        if (f)
            protobus__frame__free_unpacked(f, NULL);
        return 0;
    }
    uint64_t id = f->id;
    s->subscribe = f->subscribe;
    f->subscribe = NULL;
    f->body_case = PROTOBUS__FRAME__BODY__NOT_SET;
    protobus__frame__free_unpacked(f, NULL);
    return id;
}

/* Stored event i of the subscription tests, every field set. */
typedef struct stored_event {
    Protobus__EncapsulatedEvent ev;
    Protobus__EncapsulatedEvent__TagsEntry t[3], *tp[3];
    Google__Protobuf__Timestamp cet, ctt, srt;
    Google__Protobuf__Any any;
    char topic[32];
    uint8_t *payload;
    size_t payload_len;
} stored_event;

static void stored_event_init(stored_event *se, int i, size_t payload_len)
{
    protobus__encapsulated_event__init(&se->ev);
    snprintf(se->topic, sizeof(se->topic), "sensors.t%d", i);
    se->ev.topic = se->topic;
    static char *keys[3] = {"zone", "host", "zone"};
    static char *vals[3] = {"old", "h-1", "eu-west"}; /* "zone" repeated: the last wins */
    for (int k = 0; k < 3; k++) {
        protobus__encapsulated_event__tags_entry__init(&se->t[k]);
        se->t[k].key = keys[k];
        se->t[k].value = vals[k];
        se->tp[k] = &se->t[k];
    }
    se->ev.n_tags = 3;
    se->ev.tags = se->tp;
    google__protobuf__timestamp__init(&se->cet);
    google__protobuf__timestamp__init(&se->ctt);
    google__protobuf__timestamp__init(&se->srt);
    se->cet.seconds = -5; /* before 1970: nanos stay positive */
    se->cet.nanos = 250000000;
    se->ctt.seconds = 1700000000;
    se->ctt.nanos = 1;
    se->srt.seconds = 1700000001;
    se->srt.nanos = 999999999;
    se->ev.client_event_time = &se->cet;
    se->ev.client_transmit_time = &se->ctt;
    se->ev.server_receive_time = &se->srt;
    se->payload_len = payload_len;
    se->payload = malloc(payload_len ? payload_len : 1);
    assert_non_null(se->payload);
    for (size_t k = 0; k < payload_len; k++)
        se->payload[k] = (uint8_t)(k * 7 + (size_t)i);
    google__protobuf__any__init(&se->any);
    se->any.type_url = "type.example/Reading";
    se->any.value.data = se->payload;
    se->any.value.len = payload_len;
    se->ev.payload = &se->any;
    se->ev.payload_size = (int64_t)payload_len;
}

/* Subscribed for the subscription tests: sensors (first 3, start 41, end
 * 46) and p2 (0, 0, 0). */
static void srv_send_subscribed(fake_server *s, int fd, uint64_t id)
{
    Protobus__PartitionPosition p[2] = {PROTOBUS__PARTITION_POSITION__INIT,
                                        PROTOBUS__PARTITION_POSITION__INIT};
    Protobus__PartitionPosition *pp[2] = {&p[0], &p[1]};
    p[0].partition = "sensors";
    p[0].first_offset = 3;
    p[0].start_offset = 41;
    p[0].end_offset = 46;
    p[1].partition = "p2";
    Protobus__Subscribed sd = PROTOBUS__SUBSCRIBED__INIT;
    sd.n_partitions = 2;
    sd.partitions = pp;
    Protobus__Frame out = PROTOBUS__FRAME__INIT;
    out.id = id;
    out.body_case = PROTOBUS__FRAME__BODY_SUBSCRIBED;
    out.subscribed = &sd;
    srv_send(s, fd, &out);
}

static void srv_send_caught_up(fake_server *s, int fd, uint64_t id, uint64_t n)
{
    Protobus__CaughtUp cu = PROTOBUS__CAUGHT_UP__INIT;
    cu.history_events = n;
    Protobus__Frame out = PROTOBUS__FRAME__INIT;
    out.id = id;
    out.body_case = PROTOBUS__FRAME__BODY_CAUGHT_UP;
    out.caught_up = &cu;
    srv_send(s, fd, &out);
}

static void srv_send_event(fake_server *s, int fd, uint64_t id, const char *partition,
                           uint64_t offset, stored_event *se)
{
    Protobus__Event e = PROTOBUS__EVENT__INIT;
    e.partition = (char *)partition;
    e.offset = offset;
    e.event = &se->ev;
    Protobus__Frame out = PROTOBUS__FRAME__INIT;
    out.id = id;
    out.body_case = PROTOBUS__FRAME__BODY_EVENT;
    out.event = &e;
    srv_send(s, fd, &out);
}

/* Subscribed, event 0 (small; param 2: its topic not UTF-8; param 3: that
 * and nothing more), DATA_LOSS,
 * event 1 (300 KB: larger than the client's initial receive buffer),
 * CaughtUp, then many small events (param 1: a second CaughtUp after three
 * of them, which breaks the protocol: then nothing more), then close. */
#define SUB_MANY 500
static void script_subscription(fake_server *s, int fd)
{
    uint64_t id = srv_read_subscribe(s, fd);
    if (!id)
        return;
    srv_send_subscribed(s, fd, id);
    stored_event se;
    stored_event_init(&se, 0, 10);
    if (s->param >= 2)
        memcpy(se.topic, "bad\xff", 5); /* not UTF-8: event_scan refuses it */
    srv_send_event(s, fd, id, "sensors", 41, &se);
    free(se.payload);
    if (s->param == 3) {
        srv_drain(s, fd); /* the client closes after that event */
        return;
    }
    srv_send_error(s, fd, id, PROTOBUS__CODE__DATA_LOSS,
                   "/data/sensors/00000000000000000000.log at byte 4096: CRC mismatch", "sensors",
                   42, 44, 0);
    stored_event_init(&se, 1, 300 * 1024);
    srv_send_event(s, fd, id, "sensors", 45, &se);
    free(se.payload);
    srv_send_caught_up(s, fd, id, 2);
    for (int i = 0; i < SUB_MANY; i++) {
        if (s->param == 1 && i == 3) {
            /* The client gives up here and closes: send nothing more. */
            srv_send_caught_up(s, fd, id, 2);
            srv_drain(s, fd);
            return;
        }
        stored_event_init(&se, i, (size_t)(i % 50));
        srv_send_event(s, fd, id, "p2", (uint64_t)i, &se);
        free(se.payload);
    }
}

static void check_event(const pb_received_event *r, const char *partition, uint64_t offset, int i,
                        size_t payload_len)
{
    stored_event se;
    stored_event_init(&se, i, payload_len);
    assert_string_equal(r->partition, partition);
    assert_int_equal(r->partition_len, strlen(partition));
    assert_int_equal(r->offset, offset);
    assert_string_equal(r->topic, se.topic);
    assert_int_equal(r->topic_len, strlen(se.topic));
    assert_int_equal(r->ntags, 2);
    /* Each key once, with its last value, in the order of the last entries. */
    assert_string_equal(r->tags[0].key, "host");
    assert_string_equal(r->tags[0].value, "h-1");
    assert_string_equal(r->tags[1].key, "zone");
    assert_string_equal(r->tags[1].value, "eu-west");
    assert_int_equal(r->tags[1].value_len, 7);
    assert_true(r->has_client_event_time);
    assert_int_equal(r->client_event_time_ns, -5 * 1000000000LL + 250000000);
    assert_true(r->has_client_transmit_time);
    assert_int_equal(r->client_transmit_time_ns, 1700000000LL * 1000000000 + 1);
    assert_true(r->has_server_receive_time);
    assert_int_equal(r->server_receive_time_ns, 1700000001LL * 1000000000 + 999999999);
    assert_string_equal(r->payload_type, "type.example/Reading");
    assert_int_equal(r->payload_len, payload_len);
    assert_int_equal(r->payload_size, (int64_t)payload_len);
    if (payload_len)
        assert_memory_equal(r->payload, se.payload, payload_len);
    /* The raw bytes are the stored event exactly. */
    size_t n = protobus__encapsulated_event__get_packed_size(&se.ev);
    uint8_t *raw = malloc(n);
    assert_non_null(raw);
    protobus__encapsulated_event__pack(&se.ev, raw);
    assert_int_equal(r->raw_len, n);
    assert_memory_equal(r->raw, raw, n);
    free(raw);
    free(se.payload);
}

static void test_subscribe_events(void **state)
{
    fake_server s;
    fake_server_start(&s, script_subscription);
    fake_server_run(&s);
    pb_client *c = fake_connect(&s, NULL);
    const char *patterns[] = {"sensors\\..*", "p2"};
    pb_tag tags[] = {{"zone", "eu-west"}};
    pb_partition_offset offs[] = {{"sensors", 41}, {"p2", 0}};
    pb_subscription sub = {.patterns = patterns,
                           .npatterns = 2,
                           .tags = tags,
                           .ntags = 1,
                           .start = PB_START_OFFSETS,
                           .offsets = offs,
                           .noffsets = 2};
    const pb_subscribed_partition *parts = NULL;
    size_t nparts = 0;
    assert_int_equal(pb_client_subscription(c, &parts, &nparts), PB_EINVAL);
    assert_int_equal(pb_client_subscribe(c, &sub), 0);
    assert_int_equal(pb_client_subscription(c, &parts, &nparts), 0);
    assert_int_equal(nparts, 2);
    assert_string_equal(parts[0].partition, "sensors");
    assert_int_equal(parts[0].first_offset, 3);
    assert_int_equal(parts[0].start_offset, 41);
    assert_int_equal(parts[0].end_offset, 46);
    assert_string_equal(parts[1].partition, "p2");
    assert_int_equal(parts[1].start_offset, 0);

    pb_item it;
    int rc = pb_client_next(c, &it, 10000);
    if (rc != 0)
        fail_msg("next: %s: %s", pb_strerror(rc), pb_client_message(c));
    assert_int_equal(it.kind, PB_ITEM_EVENT);
    check_event(&it.event, "sensors", 41, 0, 10);

    assert_int_equal(pb_client_next(c, &it, 10000), 0);
    assert_int_equal(it.kind, PB_ITEM_DATA_LOSS);
    assert_string_equal(it.loss.partition, "sensors");
    assert_int_equal(it.loss.first_offset, 42);
    assert_int_equal(it.loss.last_offset, 44);
    assert_non_null(strstr(it.loss.message, "CRC mismatch"));

    assert_int_equal(pb_client_next(c, &it, 10000), 0);
    assert_int_equal(it.kind, PB_ITEM_EVENT);
    check_event(&it.event, "sensors", 45, 1, 300 * 1024);

    assert_int_equal(pb_client_next(c, &it, 10000), 0);
    assert_int_equal(it.kind, PB_ITEM_CAUGHT_UP);
    assert_int_equal(it.caught_up.history_events, 2);

    for (int i = 0; i < SUB_MANY; i++) {
        rc = pb_client_next(c, &it, 10000);
        if (rc != 0)
            fail_msg("next %d: %s: %s", i, pb_strerror(rc), pb_client_message(c));
        assert_int_equal(it.kind, PB_ITEM_EVENT);
        check_event(&it.event, "p2", (uint64_t)i, i, (size_t)(i % 50));
    }
    assert_int_equal(pb_client_next(c, &it, 10000), PB_ECLOSED);
    assert_int_equal(pb_client_next(c, &it, 0), PB_ECLOSED);

    /* A subscribed connection does not publish. */
    pb_event ev = {.topic = "x"};
    assert_int_equal(pb_client_publish(c, &ev), PB_EINVAL);
    pb_client_close(c);
    fake_server_join(&s);

    /* What the server received. */
}

/* Subscribed, then bursts of events with pauses between them (the client
 * reads each burst as an event loop does: poll, then timeout-0 calls until
 * PB_ETIMEDOUT), then close. */
#define BURSTS     5
#define BURST_SIZE 7
static void script_bursts(fake_server *s, int fd)
{
    uint64_t id = srv_read_subscribe(s, fd);
    if (!id)
        return;
    srv_send_subscribed(s, fd, id);
    for (int b = 0; b < BURSTS; b++) {
        usleep(30 * 1000); /* the client has drained the last burst and polls */
        for (int i = 0; i < BURST_SIZE; i++) {
            stored_event se;
            stored_event_init(&se, b * BURST_SIZE + i, 20);
            srv_send_event(s, fd, id, "p", (uint64_t)(b * BURST_SIZE + i), &se);
            free(se.payload);
        }
    }
}

/* pb_client_next with timeout 0 returns what has arrived, then
 * PB_ETIMEDOUT without waiting (after a short read it does not read
 * again); the next call after the poll says readable reads the next burst:
 * every event comes, in order, none stays behind. */
static void test_subscribe_timeout_zero_bursts(void **state)
{
    fake_server s;
    fake_server_start(&s, script_bursts);
    fake_server_run(&s);
    pb_client *c = fake_connect(&s, NULL);
    const char *patterns[] = {"p"};
    pb_subscription sub = {.patterns = patterns, .npatterns = 1, .start = PB_START_NEW};
    assert_int_equal(pb_client_subscribe(c, &sub), 0);
    int got = 0, timeouts = 0, rc = 0;
    for (int round = 0; round < 500 && rc != PB_ECLOSED; round++) {
        struct pollfd pf = {c->fd, POLLIN, 0};
        assert_true(poll(&pf, 1, 1000) >= 0);
        pb_item it;
        while ((rc = pb_client_next(c, &it, 0)) == 0) {
            assert_int_equal(it.kind, PB_ITEM_EVENT);
            assert_int_equal(it.event.offset, (uint64_t)got);
            got++;
        }
        if (rc == PB_ETIMEDOUT)
            timeouts++;
        else
            assert_int_equal(rc, PB_ECLOSED);
    }
    assert_int_equal(got, BURSTS * BURST_SIZE);
    assert_int_equal(rc, PB_ECLOSED);
    assert_true(timeouts >= BURSTS);
    pb_client_close(c);
    fake_server_join(&s);
}

/* Subscribed, a burst of 3 events, then (once the client says so) 3 more,
 * then close. */
static atomic_int second_burst_go;
static void script_two_bursts(fake_server *s, int fd)
{
    uint64_t id = srv_read_subscribe(s, fd);
    if (!id)
        return;
    srv_send_subscribed(s, fd, id);
    for (int i = 0; i < 6; i++) {
        if (i == 3)
            for (int k = 0; k < 500 && !atomic_load(&second_burst_go); k++)
                usleep(10 * 1000);
        stored_event se;
        stored_event_init(&se, i, 20);
        srv_send_event(s, fd, id, "p", (uint64_t)i, &se);
        free(se.payload);
    }
}

/* The rule itself: after a timeout-0 read that came back short, the
 * timeout-0 call that runs out of its frames returns PB_ETIMEDOUT without
 * reading, even though more has arrived meanwhile (main's client read it:
 * a read and a poll more per delivery); the next call reads it, in order. */
static void short_read_case(bool first_blocking)
{
    fake_server s;
    atomic_store(&second_burst_go, 0);
    fake_server_start(&s, script_two_bursts);
    fake_server_run(&s);
    pb_client *c = fake_connect(&s, NULL);
    const char *patterns[] = {"p"};
    pb_subscription sub = {.patterns = patterns, .npatterns = 1, .start = PB_START_NEW};
    assert_int_equal(pb_client_subscribe(c, &sub), 0);
    pb_item it;
    /* The first burst, read whole by one short read. */
    struct pollfd pf = {c->fd, POLLIN, 0};
    assert_int_equal(poll(&pf, 1, 5000), 1);
    usleep(100 * 1000); /* all three are in the socket */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pb_client_next(c, &it, first_blocking && i == 0 ? 5000 : 0), 0);
        assert_int_equal(it.event.offset, (uint64_t)i);
    }
    /* More arrives before the call that runs out of frames. After a read
     * by a call that could wait (no event loop), that call reads it. */
    atomic_store(&second_burst_go, 1);
    usleep(200 * 1000);
    if (!first_blocking)
        assert_int_equal(pb_client_next(c, &it, 0), PB_ETIMEDOUT);
    for (int i = 3; i < 6; i++) {
        int rc = pb_client_next(c, &it, 0);
        if (rc != 0)
            fail_msg("event %d: %s", i, pb_strerror(rc));
        assert_int_equal(it.event.offset, (uint64_t)i);
    }
    pb_client_close(c);
    fake_server_join(&s);
}

static void test_subscribe_timeout_zero_short_read(void **state)
{
    short_read_case(false);
    short_read_case(true); /* only a timeout-0 read counts (review of fanout6, 3) */
}

/* The raw bytes of stored_event i, packed (the caller frees them). */
static uint8_t *packed_event(int i, size_t payload_len, size_t *n)
{
    stored_event se;
    stored_event_init(&se, i, payload_len);
    *n = protobus__encapsulated_event__get_packed_size(&se.ev);
    uint8_t *raw = malloc(*n);
    assert_non_null(raw);
    protobus__encapsulated_event__pack(&se.ev, raw);
    free(se.payload);
    return raw;
}

/* client_events_unscanned (for the CLI, whose renderer checks the bytes):
 * events come as partition, offset and bytes only, unchecked, so one with a
 * topic that is not UTF-8 reaches the caller; without it the library ends
 * the subscription there. */
static void test_subscribe_events_unscanned(void **state)
{
    const char *patterns[] = {".*"};
    pb_subscription sub = {.patterns = patterns, .npatterns = 1};
    for (int unscanned = 0; unscanned < 2; unscanned++) {
        fake_server s;
        fake_server_start(&s, script_subscription);
        s.param = unscanned ? 2 : 3;
        fake_server_run(&s);
        pb_client *c = fake_connect(&s, NULL);
        if (unscanned)
            client_events_unscanned(c);
        assert_int_equal(pb_client_subscribe(c, &sub), 0);
        pb_item it;
        int rc = pb_client_next(c, &it, 10000);
        if (!unscanned) {
            assert_int_equal(rc, PB_EPROTO);
            assert_non_null(strstr(pb_client_message(c), "sensors:41"));
            pb_client_close(c);
            fake_server_join(&s);
            continue;
        }
        assert_int_equal(rc, 0);
        assert_int_equal(it.kind, PB_ITEM_EVENT);
        assert_string_equal(it.event.partition, "sensors");
        assert_int_equal(it.event.offset, 41);
        assert_null(it.event.topic);
        assert_non_null(memmem(it.event.raw, it.event.raw_len, "bad\xff", 4));
        assert_int_equal(pb_client_next(c, &it, 10000), 0);
        assert_int_equal(it.kind, PB_ITEM_DATA_LOSS);
        assert_int_equal(pb_client_next(c, &it, 10000), 0);
        assert_int_equal(it.kind, PB_ITEM_EVENT);
        size_t n;
        uint8_t *raw = packed_event(1, 300 * 1024, &n);
        assert_int_equal(it.event.raw_len, n);
        assert_memory_equal(it.event.raw, raw, n);
        free(raw);
        assert_int_equal(pb_client_next(c, &it, 10000), 0);
        assert_int_equal(it.kind, PB_ITEM_CAUGHT_UP);
        for (int i = 0; i < SUB_MANY; i++) {
            assert_int_equal(pb_client_next(c, &it, 10000), 0);
            assert_string_equal(it.event.partition, "p2");
            assert_int_equal(it.event.offset, (uint64_t)i);
            raw = packed_event(i, (size_t)(i % 50), &n);
            assert_int_equal(it.event.raw_len, n);
            assert_memory_equal(it.event.raw, raw, n);
            free(raw);
        }
        assert_int_equal(pb_client_next(c, &it, 10000), PB_ECLOSED);
        pb_client_close(c);
        fake_server_join(&s);
    }
}

/* A second CaughtUp breaks the protocol: the library says so. */
static void test_subscribe_second_caught_up_refused(void **state)
{
    fake_server s;
    fake_server_start(&s, script_subscription);
    s.param = 1;
    fake_server_run(&s);
    pb_client *c = fake_connect(&s, NULL);
    const char *patterns[] = {".*"};
    pb_subscription sub = {.patterns = patterns, .npatterns = 1};
    assert_int_equal(pb_client_subscribe(c, &sub), 0);
    pb_item it;
    int rc, caught_up = 0;
    while ((rc = pb_client_next(c, &it, 10000)) == 0)
        caught_up += it.kind == PB_ITEM_CAUGHT_UP;
    assert_int_equal(rc, PB_EPROTO);
    assert_int_equal(caught_up, 1);
    assert_non_null(strstr(pb_client_message(c), "second CaughtUp"));
    pb_client_close(c);
    fake_server_join(&s);
}

/* A server that streams events without confirming the Subscribe (what
 * protobusd 0.1 did) is refused clearly. */
static void script_events_without_subscribed(fake_server *s, int fd)
{
    uint64_t id = srv_read_subscribe(s, fd);
    if (!id)
        return;
    stored_event se;
    stored_event_init(&se, 0, 10);
    srv_send_event(s, fd, id, "sensors", 41, &se);
    free(se.payload);
    srv_drain(s, fd);
}

static void test_subscribe_old_server_refused(void **state)
{
    fake_server s;
    fake_server_start(&s, script_events_without_subscribed);
    fake_server_run(&s);
    pb_client *c = fake_connect(&s, NULL);
    const char *patterns[] = {".*"};
    pb_subscription sub = {.patterns = patterns, .npatterns = 1};
    assert_int_equal(pb_client_subscribe(c, &sub), PB_EPROTO);
    assert_non_null(strstr(pb_client_message(c), "does not speak protocol version 1"));
    pb_item it;
    assert_int_equal(pb_client_next(c, &it, 0), PB_EPROTO);
    pb_client_close(c);
    fake_server_join(&s);
}

/* A server Hello of another protocol version is refused at connect. */
static void test_hello_other_version_refused(void **state)
{
    fake_server s;
    fake_server_start(&s, fake_script_close);
    s.hello_version = 2;
    fake_server_run(&s);
    pb_client *c = NULL;
    char err[256] = "";
    assert_int_equal(pb_client_connect(&c, s.address, NULL, err, sizeof(err)), PB_EPROTO);
    assert_null(c);
    assert_non_null(strstr(err, "protocol version 2"));
    fake_server_join(&s);
}

/* Checks the Subscribe; then param 1: refuses it, 2: answers nothing,
 * else confirms it and waits for the client to close. */
static void script_check_subscribe(fake_server *s, int fd)
{
    uint64_t id = srv_read_subscribe(s, fd);
    if (!id)
        return;
    Protobus__Subscribe *sub = s->subscribe;
    if (sub->n_patterns != 1 || strcmp(sub->patterns[0], "a.*") != 0)
        srv_fail(s, "patterns not as sent");
    if (sub->n_tags != 2 || strcmp(sub->tags[0]->key, "k1") != 0 ||
        strcmp(sub->tags[0]->value, "v1") != 0 || strcmp(sub->tags[1]->key, "k2") != 0 ||
        strcmp(sub->tags[1]->value, "") != 0)
        srv_fail(s, "tags not as sent");
    if (sub->start != PROTOBUS__START_MODE__START_TIME || !sub->from_time ||
        sub->from_time->seconds != -2 || sub->from_time->nanos != 500000000)
        srv_fail(s, "start time not as sent");
    if (s->param == 1) {
        srv_send_error(s, fd, id, PROTOBUS__CODE__INVALID_ARGUMENT,
                       "pattern \"a.*(\": missing closing parenthesis at offset 4", NULL, 0, 0, 0);
    } else if (s->param != 2) {
        Protobus__Subscribed sd = PROTOBUS__SUBSCRIBED__INIT;
        Protobus__Frame out = PROTOBUS__FRAME__INIT;
        out.id = id;
        out.body_case = PROTOBUS__FRAME__BODY_SUBSCRIBED;
        out.subscribed = &sd;
        srv_send(s, fd, &out);
    }
    srv_drain(s, fd); /* until the client closes */
}

static int subscribe_time(pb_client *c)
{
    const char *patterns[] = {"a.*"};
    pb_tag tags[] = {{"k1", "v1"}, {"k2", ""}};
    pb_subscription sub = {.patterns = patterns,
                           .npatterns = 1,
                           .tags = tags,
                           .ntags = 2,
                           .start = PB_START_TIME,
                           .from_time_ns = -1500000000LL};
    return pb_client_subscribe(c, &sub);
}

static void test_subscribe_server_error(void **state)
{
    fake_server s;
    fake_server_start(&s, script_check_subscribe);
    s.param = 1;
    fake_server_run(&s);
    pb_client *c = fake_connect(&s, NULL);
    /* The refusal is the answer to the Subscribe (protocol v1). */
    assert_int_equal(subscribe_time(c), PB_ESERVER);
    const pb_server_error *e = pb_client_server_error(c);
    assert_non_null(e);
    assert_int_equal(e->code, PB_CODE_INVALID_ARGUMENT);
    assert_non_null(strstr(e->message, "missing closing parenthesis"));
    assert_non_null(strstr(pb_client_message(c), "missing closing parenthesis"));
    /* Not subscribed: the connection is as it was. */
    pb_item it;
    assert_int_equal(pb_client_next(c, &it, 0), PB_EINVAL);
    pb_client_close(c);
    fake_server_join(&s);
}

/* No answer to the Subscribe within io_timeout_ms. */
static void test_subscribe_unanswered(void **state)
{
    fake_server s;
    fake_server_start(&s, script_check_subscribe);
    s.param = 2;
    fake_server_run(&s);
    pb_client_options o;
    pb_client_options_init(&o);
    o.io_timeout_ms = 100;
    pb_client *c = fake_connect(&s, &o);
    assert_int_equal(subscribe_time(c), PB_ETIMEDOUT);
    assert_non_null(strstr(pb_client_message(c), "did not answer the Subscribe"));
    pb_client_close(c);
    fake_server_join(&s);
}

static void test_subscribe_timeout_then_close(void **state)
{
    fake_server s;
    fake_server_start(&s, script_check_subscribe);
    fake_server_run(&s);
    pb_client *c = fake_connect(&s, NULL);
    pb_item it;
    assert_int_equal(pb_client_next(c, &it, 0), PB_EINVAL); /* not subscribed yet */
    assert_int_equal(subscribe_time(c), 0);
    assert_int_equal(pb_client_subscribe(c, NULL), PB_EINVAL); /* only once */
    assert_int_equal(pb_client_next(c, &it, 0), PB_ETIMEDOUT);
    assert_int_equal(pb_client_next(c, &it, 20), PB_ETIMEDOUT);
    pb_client_close(c); /* the server's drain ends */
    fake_server_join(&s);
}

/* The server refuses at once, before reading a Subscribe too large for the
 * socket buffers: the Error arrives while the client is still writing. It
 * must stay for the Subscribe's answer, not be taken as an answer to a
 * publish. (Its id is 0: the server could not have read the request's.) */
#define BIG_PATTERN_LEN 10000
#define BIG_PATTERNS    1200 /* 12 MB, well past the client's send buffer (4 MB at most) */

static void script_refuse_before_reading(fake_server *s, int fd)
{
    /* Refuse once the request has started to arrive (not with the Hello,
     * where the client would read both at once, before writing). */
    char first;
    if (recv(fd, &first, 1, MSG_PEEK) != 1)
        srv_fail(s, "no Subscribe came");
    srv_send_error(s, fd, 0, PROTOBUS__CODE__RESOURCE_EXHAUSTED, "too many subscriptions", NULL, 0,
                   0, 0);
    usleep(200 * 1000); /* the client blocks writing meanwhile */
    if (srv_read_subscribe(s, fd) && s->subscribe->n_patterns != BIG_PATTERNS)
        srv_fail(s, "%zu patterns, want %d", s->subscribe->n_patterns, BIG_PATTERNS);
    srv_drain(s, fd);
}

static void test_subscribe_refused_while_writing(void **state)
{
    fake_server s;
    fake_server_start(&s, script_refuse_before_reading);
    /* A small receive buffer (the accepted socket inherits it) keeps the
     * kernel from absorbing the whole request: the client must wait. */
    int small = 4096;
    assert_int_equal(setsockopt(s.lfd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
    fake_server_run(&s);
    pb_client *c = fake_connect(&s, NULL);
    char *pattern = malloc(BIG_PATTERN_LEN + 1);
    const char **patterns = malloc(BIG_PATTERNS * sizeof *patterns);
    assert_non_null(pattern);
    assert_non_null(patterns);
    memset(pattern, 'a', BIG_PATTERN_LEN);
    pattern[BIG_PATTERN_LEN] = '\0';
    for (int i = 0; i < BIG_PATTERNS; i++)
        patterns[i] = pattern;
    pb_subscription sub = {.patterns = patterns, .npatterns = BIG_PATTERNS};
    assert_int_equal(pb_client_subscribe(c, &sub), PB_ESERVER);
    const pb_server_error *e = pb_client_server_error(c);
    assert_non_null(e);
    assert_int_equal(e->code, PB_CODE_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(pb_client_message(c), "too many subscriptions"));
    pb_client_close(c);
    free(patterns);
    free(pattern);
    fake_server_join(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_other_version_refused),
        cmocka_unit_test(test_subscribe_events),
        cmocka_unit_test(test_subscribe_events_unscanned),
        cmocka_unit_test(test_subscribe_second_caught_up_refused),
        cmocka_unit_test(test_subscribe_old_server_refused),
        cmocka_unit_test(test_subscribe_server_error),
        cmocka_unit_test(test_subscribe_unanswered),
        cmocka_unit_test(test_subscribe_timeout_then_close),
        cmocka_unit_test(test_subscribe_timeout_zero_bursts),
        cmocka_unit_test(test_subscribe_timeout_zero_short_read),
        cmocka_unit_test(test_subscribe_refused_while_writing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
