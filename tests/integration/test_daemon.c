/*
 * Integration: the real protobusd on 127.0.0.1 with a temp data dir, driven
 * with raw Frames (protobuf-c), so every test checks the daemon's own wire
 * behaviour: publish -> ack -> subscribe with every field intact, routing,
 * bad input, restart.
 */
#include "itest.h"
#include "protobus_version.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_MS 10000

static int64_t ts_ns(const Google__Protobuf__Timestamp *t)
{
    return t ? t->seconds * 1000000000LL + t->nanos : -1;
}

static int dir_exists(const char *parent, const char *name)
{
    char p[600];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", parent, name);
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* A published event comes back to a subscriber with every field intact,
 * plus its partition and offset; then a live one arrives too. */
static void test_roundtrip_every_field(void **state)
{
    (void)state;
    itest_daemon d;
    assert_int_equal(itest_daemon_start(&d, NULL, NULL), 0);
    int pub = itest_connect(d.port);
    assert_true(pub >= 0);
    Protobus__Frame *r = itest_hello(pub, 1, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_HELLO);
    assert_int_equal(r->hello->protocol_version, 1);
    assert_true(r->hello->max_event_bytes > 0);
    protobus__frame__free_unpacked(r, NULL);

    /* One event with all seven fields set. */
    Protobus__EncapsulatedEvent ev = PROTOBUS__ENCAPSULATED_EVENT__INIT;
    Google__Protobuf__Timestamp cet = GOOGLE__PROTOBUF__TIMESTAMP__INIT,
                                ctt = GOOGLE__PROTOBUF__TIMESTAMP__INIT,
                                bogus_srt = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    cet.seconds = 1700000000;
    cet.nanos = 123456789;
    ctt.seconds = 1700000001;
    ctt.nanos = 1;
    bogus_srt.seconds = 5; /* a client-sent receive time must be overridden */
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    uint8_t payload[] = {0, 1, 2, 0xff, 'x'};
    any.type_url = "type.googleapis.com/demo.Reading";
    any.value.data = payload;
    any.value.len = sizeof payload;
    Protobus__EncapsulatedEvent__TagsEntry t1 = PROTOBUS__ENCAPSULATED_EVENT__TAGS_ENTRY__INIT,
                                           t2 = PROTOBUS__ENCAPSULATED_EVENT__TAGS_ENTRY__INIT;
    t1.key = "room";
    t1.value = "kitchen";
    t2.key = "unit";
    t2.value = "celsius";
    Protobus__EncapsulatedEvent__TagsEntry *tags[2] = {&t1, &t2};
    ev.topic = "sensors.kitchen.temp";
    ev.n_tags = 2;
    ev.tags = tags;
    ev.client_event_time = &cet;
    ev.client_transmit_time = &ctt;
    ev.server_receive_time = &bogus_srt;
    ev.payload_size = 5;
    ev.payload = &any;
    Protobus__EncapsulatedEvent *evp[1] = {&ev};
    Protobus__Publish p = PROTOBUS__PUBLISH__INIT;
    p.n_events = 1;
    p.events = evp;
    Protobus__Frame f = PROTOBUS__FRAME__INIT;
    f.id = 77;
    f.body_case = PROTOBUS__FRAME__BODY_PUBLISH;
    f.publish = &p;
    struct timespec before;
    clock_gettime(CLOCK_REALTIME, &before);
    assert_int_equal(itest_send_frame(pub, &f), 0);
    r = itest_recv_frame(pub, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->id, 77);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_PUBLISH_ACK);
    assert_int_equal(r->publish_ack->n_partitions, 1);
    assert_string_equal(r->publish_ack->partitions[0], "events");
    assert_int_equal(r->publish_ack->n_offsets, 1);
    assert_int_equal(r->publish_ack->offsets[0], 0);
    protobus__frame__free_unpacked(r, NULL);

    int sub = itest_connect_hello(d.port);
    assert_true(sub >= 0);
    assert_int_equal(itest_subscribe(sub, 9, "sensors\\..*", PROTOBUS__START_MODE__START_BEGINNING),
                     0);
    /* Confirmed first, with the partition's positions (protocol v1). */
    r = itest_recv_frame(sub, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_SUBSCRIBED);
    assert_int_equal(r->id, 9);
    assert_int_equal(r->subscribed->n_partitions, 1);
    assert_string_equal(r->subscribed->partitions[0]->partition, "events");
    assert_int_equal(r->subscribed->partitions[0]->start_offset, 0);
    assert_int_equal(r->subscribed->partitions[0]->end_offset, 1);
    protobus__frame__free_unpacked(r, NULL);
    r = itest_recv_frame(sub, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_EVENT);
    assert_int_equal(r->id, 9);
    assert_string_equal(r->event->partition, "events");
    assert_int_equal(r->event->offset, 0);
    Protobus__EncapsulatedEvent *got = r->event->event;
    assert_non_null(got);
    assert_string_equal(got->topic, "sensors.kitchen.temp");
    assert_int_equal(got->n_tags, 2);
    int seen = 0;
    for (size_t i = 0; i < got->n_tags; i++) {
        if (!strcmp(got->tags[i]->key, "room") && !strcmp(got->tags[i]->value, "kitchen"))
            seen |= 1;
        if (!strcmp(got->tags[i]->key, "unit") && !strcmp(got->tags[i]->value, "celsius"))
            seen |= 2;
    }
    assert_int_equal(seen, 3);
    assert_int_equal(ts_ns(got->client_event_time), 1700000000123456789LL);
    assert_int_equal(ts_ns(got->client_transmit_time), 1700000001000000001LL);
    int64_t srt = ts_ns(got->server_receive_time);
    assert_true(srt >= before.tv_sec * 1000000000LL + before.tv_nsec - 1000000000LL);
    assert_int_equal(got->payload_size, 5);
    assert_non_null(got->payload);
    assert_string_equal(got->payload->type_url, "type.googleapis.com/demo.Reading");
    assert_int_equal(got->payload->value.len, sizeof payload);
    assert_memory_equal(got->payload->value.data, payload, sizeof payload);
    protobus__frame__free_unpacked(r, NULL);
    /* History done. */
    r = itest_recv_frame(sub, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_CAUGHT_UP);
    assert_int_equal(r->id, 9);
    assert_int_equal(r->caught_up->history_events, 1);
    protobus__frame__free_unpacked(r, NULL);

    /* Live: published after the subscription started. */
    const char *topics[2] = {"sensors.hall.temp", "other.topic"};
    const char *payloads[2] = {"live", "filtered out"};
    r = itest_publish(pub, 78, topics, payloads, 2, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_PUBLISH_ACK);
    assert_int_equal(r->publish_ack->offsets[0], 1);
    assert_int_equal(r->publish_ack->offsets[1], 2);
    protobus__frame__free_unpacked(r, NULL);
    r = itest_recv_frame(sub, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_EVENT);
    assert_int_equal(r->event->offset, 1);
    assert_string_equal(r->event->event->topic, "sensors.hall.temp");
    protobus__frame__free_unpacked(r, NULL);
    /* other.topic does not match the pattern: nothing more arrives. */
    r = itest_recv_frame(sub, 300);
    assert_null(r);

    close(sub);
    close(pub);
    assert_int_equal(itest_daemon_stop(&d), 0);
    itest_daemon_cleanup(&d);
}

/* First matching rule wins; capture-group partitions appear on disk; a
 * topic no rule matches is refused with an error naming it. */
static void test_routing(void **state)
{
    (void)state;
    itest_daemon d;
    const char *rules = "[partition first]\nmatch = a\\..*\n"
                        "[partition second]\nmatch = a\\.b.*\n"
                        "[partition sensors-$1]\nmatch = sensors\\.([a-z]+)\\..*\n";
    assert_int_equal(itest_daemon_start(&d, NULL, rules), 0);
    int fd = itest_connect_hello(d.port);
    assert_true(fd >= 0);
    const char *topics[4] = {"a.b.c", "sensors.kitchen.temp", "sensors.hall.temp", "a.x"};
    const char *payloads[4] = {"1", "2", "3", "4"};
    Protobus__Frame *r = itest_publish(fd, 5, topics, payloads, 4, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_PUBLISH_ACK);
    Protobus__PublishAck *a = r->publish_ack;
    assert_int_equal(a->n_partition_index, 4);
    assert_string_equal(a->partitions[a->partition_index[0]], "first");
    assert_string_equal(a->partitions[a->partition_index[1]], "sensors-kitchen");
    assert_string_equal(a->partitions[a->partition_index[2]], "sensors-hall");
    assert_string_equal(a->partitions[a->partition_index[3]], "first");
    assert_int_equal(a->offsets[0], 0);
    assert_int_equal(a->offsets[3], 1);
    protobus__frame__free_unpacked(r, NULL);
    assert_true(dir_exists(d.data_dir, "first"));
    assert_true(dir_exists(d.data_dir, "sensors-kitchen"));
    assert_true(dir_exists(d.data_dir, "sensors-hall"));
    assert_false(dir_exists(d.data_dir, "second"));

    const char *bad[1] = {"nomatch.topic"};
    r = itest_publish(fd, 6, bad, payloads, 1, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->id, 6);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_ERROR);
    assert_int_equal(r->error->code, PROTOBUS__CODE__NOT_FOUND);
    assert_non_null(strstr(r->error->message, "nomatch.topic"));
    assert_int_equal(r->error->event_index_plus_one, 1);
    protobus__frame__free_unpacked(r, NULL);
    close(fd);
    assert_int_equal(itest_daemon_stop(&d), 0);
    itest_daemon_cleanup(&d);
}

static void expect_error(int fd, int code, const char *needle)
{
    Protobus__Frame *r = itest_recv_frame(fd, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_ERROR);
    if ((int)r->error->code != code || !strstr(r->error->message, needle))
        fail_msg("expected code %d with \"%s\", got code %d: %s", code, needle, r->error->code,
                 r->error->message);
    protobus__frame__free_unpacked(r, NULL);
}

/* The subscription on sub delivers the events at offsets 0..n-1, in order. */
static void expect_events(int sub, uint64_t n)
{
    for (uint64_t off = 0; off < n; off++) {
        Protobus__Frame *r = itest_recv_event(sub, TIMEOUT_MS);
        assert_non_null(r);
        assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_EVENT);
        assert_int_equal(r->event->offset, off);
        protobus__frame__free_unpacked(r, NULL);
    }
}

/* Each bad input gets its error; malformed frames close only that
 * connection; a second client is served normally afterwards and nothing
 * stored is lost. */
static void test_bad_input(void **state)
{
    (void)state;
    itest_daemon d;
    assert_int_equal(itest_daemon_start(&d, "max_event_bytes = 1K\nmax_frame_bytes = 64K\n", NULL),
                     0);
    int good = itest_connect_hello(d.port);
    const char *t1[1] = {"keep.me"};
    const char *p1[1] = {"stored before the bad input"};
    Protobus__Frame *r = itest_publish(good, 1, t1, p1, 1, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_PUBLISH_ACK);
    protobus__frame__free_unpacked(r, NULL);

    /* Malformed frame: a length prefix then bytes that are not a Frame.
     * As the first frame it fails the handshake: Error, then closed. */
    int fd = itest_connect(d.port);
    const uint8_t garbage[] = {5, 0x0a, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(itest_send_raw(fd, garbage, sizeof garbage), 0);
    expect_error(fd, PROTOBUS__CODE__INVALID_ARGUMENT, "malformed");
    assert_true(itest_wait_closed(fd, TIMEOUT_MS));
    close(fd);

    /* After the handshake its length was valid, so the connection stays
     * (protocol v1; this used to close it): the Error, then a Ping works. */
    fd = itest_connect_hello(d.port);
    assert_true(fd >= 0);
    assert_int_equal(itest_send_raw(fd, garbage, sizeof garbage), 0);
    expect_error(fd, PROTOBUS__CODE__INVALID_ARGUMENT, "malformed");
    r = itest_ping(fd, 31, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_PONG);
    assert_int_equal(r->id, 31);
    protobus__frame__free_unpacked(r, NULL);
    close(fd);

    /* Frame over the maximum: refused from its length prefix alone. */
    fd = itest_connect_hello(d.port);
    const uint8_t huge[] = {0x80, 0x80, 0x80, 0x08}; /* 16 MiB declared */
    assert_int_equal(itest_send_raw(fd, huge, sizeof huge), 0);
    expect_error(fd, PROTOBUS__CODE__RESOURCE_EXHAUSTED, "max_frame_bytes");
    assert_true(itest_wait_closed(fd, TIMEOUT_MS));
    close(fd);

    /* Bad length prefix (11-byte varint). */
    fd = itest_connect_hello(d.port);
    const uint8_t badvar[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    assert_int_equal(itest_send_raw(fd, badvar, sizeof badvar), 0);
    expect_error(fd, PROTOBUS__CODE__INVALID_ARGUMENT, "malformed");
    assert_true(itest_wait_closed(fd, TIMEOUT_MS));
    close(fd);

    /* Event over max_event_bytes (1K); the connection stays usable. */
    fd = itest_connect_hello(d.port);
    char *big = malloc(2000);
    memset(big, 'x', 1999);
    big[1999] = 0;
    const char *tb[1] = {"big.event"};
    const char *pb[1] = {big};
    r = itest_publish(fd, 2, tb, pb, 1, TIMEOUT_MS);
    free(big);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_ERROR);
    assert_int_equal(r->error->code, PROTOBUS__CODE__INVALID_ARGUMENT);
    assert_non_null(strstr(r->error->message, "max_event_bytes"));
    protobus__frame__free_unpacked(r, NULL);

    /* Invalid topics. */
    const char *bad_topics[3] = {"has space", "", "ctl\x01"};
    const char *why[3] = {"whitespace", "empty", "control"};
    for (int i = 0; i < 3; i++) {
        const char *tt[1] = {bad_topics[i]};
        const char *pp[1] = {"x"};
        r = itest_publish(fd, 10 + (uint64_t)i, tt, pp, 1, TIMEOUT_MS);
        assert_non_null(r);
        assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_ERROR);
        assert_int_equal(r->error->code, PROTOBUS__CODE__INVALID_ARGUMENT);
        if (!strstr(r->error->message, why[i]))
            fail_msg("topic %d: expected \"%s\" in: %s", i, why[i], r->error->message);
        protobus__frame__free_unpacked(r, NULL);
    }

    /* Unknown frame type: a Frame carrying only a field this server does not know. */
    const uint8_t unknown[] = {5, 0x08, 0x2a, 0xa2, 0x06, 0x00}; /* id=42, field 100 = "" */
    assert_int_equal(itest_send_raw(fd, unknown, sizeof unknown), 0);
    expect_error(fd, PROTOBUS__CODE__UNIMPLEMENTED, "unknown frame type");
    close(fd);

    /* A client sending half a frame does not disturb others. The first
     * client is still served, and what was stored is still there. */
    int half = itest_connect_hello(d.port);
    const uint8_t partial[] = {100, 0x08};
    assert_int_equal(itest_send_raw(half, partial, sizeof partial), 0);
    const char *t2[1] = {"keep.me"};
    const char *p2[1] = {"after"};
    r = itest_publish(good, 3, t2, p2, 1, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_PUBLISH_ACK);
    assert_int_equal(r->publish_ack->offsets[0], 1);
    protobus__frame__free_unpacked(r, NULL);
    int sub = itest_connect_hello(d.port);
    assert_int_equal(itest_subscribe(sub, 1, "keep\\.me", PROTOBUS__START_MODE__START_BEGINNING),
                     0);
    expect_events(sub, 2);
    close(sub);
    close(half);
    close(good);
    assert_int_equal(itest_daemon_stop(&d), 0);
    itest_daemon_cleanup(&d);
}

/* SIGTERM exits 0; a restart names the partitions it recovered, truncates a
 * torn tail (and says so), continues the offsets and serves everything that
 * was acknowledged. */
static void test_restart_continues(void **state)
{
    (void)state;
    itest_daemon d;
    assert_int_equal(itest_daemon_start(&d, NULL, NULL), 0);
    int fd = itest_connect_hello(d.port);
    const char *t[10];
    const char *p[10];
    for (int i = 0; i < 10; i++) {
        t[i] = "restart.topic";
        p[i] = "payload";
    }
    Protobus__Frame *r = itest_publish(fd, 1, t, p, 10, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_PUBLISH_ACK);
    assert_int_equal(r->publish_ack->offsets[9], 9);
    protobus__frame__free_unpacked(r, NULL);
    close(fd);
    assert_int_equal(itest_daemon_stop(&d), 0);
    assert_true(itest_log_contains(&d, "stopped cleanly"));

    /* A torn tail (a record cut short, as a crash mid-write leaves it) is
     * truncated at start-up, and the log says which file and how much. */
    char seg[700];
    snprintf(seg, sizeof seg, "%s/events/00000000000000000000.log", d.data_dir);
    FILE *tail = fopen(seg, "a");
    assert_non_null(tail);
    assert_int_equal(fwrite("\x30\x00\x00\x00torn", 1, 8, tail), 8);
    assert_int_equal(fclose(tail), 0);

    assert_int_equal(itest_daemon_restart(&d), 0);
    assert_true(itest_log_contains(&d, "partition events: open"));
    assert_true(itest_log_contains(&d, "00000000000000000000.log: torn or corrupt tail"));
    fd = itest_connect_hello(d.port);
    r = itest_publish(fd, 2, t, p, 1, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_PUBLISH_ACK);
    assert_int_equal(r->publish_ack->offsets[0], 10);
    protobus__frame__free_unpacked(r, NULL);
    int sub = itest_connect_hello(d.port);
    assert_int_equal(itest_subscribe(sub, 3, ".*", PROTOBUS__START_MODE__START_BEGINNING), 0);
    expect_events(sub, 11);
    close(sub);
    close(fd);
    assert_int_equal(itest_daemon_stop(&d), 0);
    itest_daemon_cleanup(&d);
}

/* A bad config names file, line and reason, and the daemon refuses to start. */
static void test_bad_config_refused(void **state)
{
    (void)state;
    itest_daemon d;
    const char *rules = "[partition p]\nmatch = (unclosed\n";
    assert_int_equal(itest_daemon_start(&d, NULL, rules), -1);
    assert_true(itest_log_contains(&d, "protobusd.conf:"));
    assert_true(itest_log_contains(&d, "(unclosed"));
    itest_daemon_cleanup(&d);
}

/* The daemon's Hello names it with the release version, the one that
 * `protobusd --version` prints (both from proto/protobus_version.h). */
static void test_hello_names_the_release(void **state)
{
    (void)state;
    itest_daemon d;
    assert_int_equal(itest_daemon_start(&d, NULL, NULL), 0);
    int fd = itest_connect(d.port);
    assert_true(fd >= 0);
    Protobus__Frame *r = itest_hello(fd, 1, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_HELLO);
    assert_string_equal(r->hello->name, "protobusd " PB_VERSION_STRING);
    assert_int_equal(r->hello->protocol_version, PB_PROTOCOL_VERSION);
    protobus__frame__free_unpacked(r, NULL);
    close(fd);
    assert_int_equal(itest_daemon_stop(&d), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_every_field),
        cmocka_unit_test(test_routing),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_restart_continues),
        cmocka_unit_test(test_bad_config_refused),
        cmocka_unit_test(test_hello_names_the_release),
    };
    return cmocka_run_group_tests_name("integration: daemon (raw frames)", tests, NULL, NULL);
}
