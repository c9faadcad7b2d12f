/*
 * Integration: the short cuts on the publish and replay hot paths give the
 * answers the full paths give. Publish (net.c): a run of one topic is
 * validated and routed once, so batches that switch between topics and
 * partitions, and an invalid topic right after a run, are checked here.
 * Replay (subrun.c): a subscription to every topic (".*") without tag
 * filters sends the stored bytes without walking them; with a tag filter
 * it must still filter. The real protobusd on 127.0.0.1, raw Frames.
 */
#include "itest.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TIMEOUT_MS 10000

static int subscribe(int fd, uint64_t id, const char *pattern, const char *tag_key,
                     const char *tag_value)
{
    Protobus__Subscribe s = PROTOBUS__SUBSCRIBE__INIT;
    Protobus__Subscribe__TagsEntry t = PROTOBUS__SUBSCRIBE__TAGS_ENTRY__INIT;
    Protobus__Subscribe__TagsEntry *tags[1] = {&t};
    char *patterns[1] = {(char *)pattern};
    s.n_patterns = 1;
    s.patterns = patterns;
    s.start = PROTOBUS__START_MODE__START_BEGINNING;
    if (tag_key) {
        t.key = (char *)tag_key;
        t.value = (char *)tag_value;
        s.n_tags = 1;
        s.tags = tags;
    }
    Protobus__Frame f = PROTOBUS__FRAME__INIT;
    f.id = id;
    f.body_case = PROTOBUS__FRAME__BODY_SUBSCRIBE;
    f.subscribe = &s;
    return itest_send_frame(fd, &f);
}

/* Routes of a batch that switches topics (runs of one topic are routed
 * once): every event goes to its rule's partition with the next offset
 * there. Then an invalid topic right after a run of a valid one refuses
 * the batch, naming that event, and nothing of it is stored. */
static void test_topic_runs_route_each_event(void **state)
{
    itest_daemon *d = *state;
    const char *rules = "[partition first]\nmatch = a\\..*\n"
                        "[partition sensors-$1]\nmatch = sensors\\.([a-z]+)\\..*\n";
    assert_int_equal(itest_daemon_start(d, NULL, rules), 0);
    int fd = itest_connect_hello(d->port);
    assert_true(fd >= 0);

    const char *topics[9] = {"a.x",   "a.x",   "sensors.k.t", "sensors.k.t", "a.x",
                             "a.b.c", "a.b.c", "sensors.h.t", "a.x"};
    const char *parts[9] = {"first", "first", "sensors-k", "sensors-k", "first",
                            "first", "first", "sensors-h", "first"};
    const uint64_t offsets[9] = {0, 1, 0, 1, 2, 3, 4, 0, 5};
    const char *payloads[9] = {"0", "1", "2", "3", "4", "5", "6", "7", "8"};
    Protobus__Frame *r = itest_publish(fd, 5, topics, payloads, 9, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_PUBLISH_ACK);
    Protobus__PublishAck *a = r->publish_ack;
    assert_int_equal(a->n_partition_index, 9);
    assert_int_equal(a->n_offsets, 9);
    for (int i = 0; i < 9; i++) {
        assert_string_equal(a->partitions[a->partition_index[i]], parts[i]);
        assert_int_equal(a->offsets[i], offsets[i]);
    }
    protobus__frame__free_unpacked(r, NULL);

    /* "a.x x" differs from the run before it only after the run's bytes. */
    const char *bad[4] = {"a.x", "a.x", "a.x x", "a.x"};
    r = itest_publish(fd, 6, bad, payloads, 4, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_ERROR);
    assert_int_equal(r->error->code, PROTOBUS__CODE__INVALID_ARGUMENT);
    assert_int_equal(r->error->event_index_plus_one, 3);
    assert_non_null(strstr(r->error->message, "whitespace"));
    protobus__frame__free_unpacked(r, NULL);

    const char *one[1] = {"a.x"};
    r = itest_publish(fd, 7, one, payloads, 1, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_PUBLISH_ACK);
    assert_int_equal(r->publish_ack->offsets[0], 6); /* the refused batch took none */
    protobus__frame__free_unpacked(r, NULL);
    close(fd);
    assert_int_equal(itest_daemon_stop(d), 0);
}

enum { NEVENTS = 6 };

/* Publishes NEVENTS events: topics t.a / t.b alternating, tag color = red
 * (even) or blue (odd), payload "p<i>". */
static void publish_tagged(int fd)
{
    Protobus__EncapsulatedEvent evs[NEVENTS], *ptrs[NEVENTS];
    Protobus__EncapsulatedEvent__TagsEntry tags[NEVENTS], *tagp[NEVENTS];
    Google__Protobuf__Any anys[NEVENTS];
    char payload[NEVENTS][16];
    for (int i = 0; i < NEVENTS; i++) {
        protobus__encapsulated_event__init(&evs[i]);
        protobus__encapsulated_event__tags_entry__init(&tags[i]);
        google__protobuf__any__init(&anys[i]);
        tags[i].key = "color";
        tags[i].value = i % 2 ? "blue" : "red";
        tagp[i] = &tags[i];
        snprintf(payload[i], sizeof payload[i], "p%d", i);
        anys[i].value.data = (uint8_t *)payload[i];
        anys[i].value.len = strlen(payload[i]);
        evs[i].topic = i % 2 ? "t.b" : "t.a";
        evs[i].n_tags = 1;
        evs[i].tags = &tagp[i];
        evs[i].payload = &anys[i];
        evs[i].payload_size = (int64_t)anys[i].value.len;
        ptrs[i] = &evs[i];
    }
    Protobus__Publish pub = PROTOBUS__PUBLISH__INIT;
    pub.n_events = NEVENTS;
    pub.events = ptrs;
    Protobus__Frame f = PROTOBUS__FRAME__INIT;
    f.id = 3;
    f.body_case = PROTOBUS__FRAME__BODY_PUBLISH;
    f.publish = &pub;
    assert_int_equal(itest_send_frame(fd, &f), 0);
    Protobus__Frame *r = itest_recv_frame(fd, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_PUBLISH_ACK);
    protobus__frame__free_unpacked(r, NULL);
}

/* Subscribes with pattern (and optional tag) from the beginning and
 * expects exactly the events whose offsets are in want[0..n), intact. */
static void expect_replay(uint16_t port, const char *pattern, const char *tag_value,
                          const uint64_t *want, size_t n)
{
    int fd = itest_connect_hello(port);
    assert_true(fd >= 0);
    assert_int_equal(subscribe(fd, 11, pattern, tag_value ? "color" : NULL, tag_value), 0);
    for (size_t k = 0; k < n; k++) {
        Protobus__Frame *r = itest_recv_event(fd, TIMEOUT_MS);
        assert_non_null(r);
        assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_EVENT);
        assert_int_equal(r->id, 11);
        assert_string_equal(r->event->partition, "events");
        uint64_t i = r->event->offset;
        assert_int_equal(i, want[k]);
        const Protobus__EncapsulatedEvent *e = r->event->event;
        assert_non_null(e);
        assert_string_equal(e->topic, i % 2 ? "t.b" : "t.a");
        assert_int_equal(e->n_tags, 1);
        assert_string_equal(e->tags[0]->key, "color");
        assert_string_equal(e->tags[0]->value, i % 2 ? "blue" : "red");
        char payload[24];
        snprintf(payload, sizeof payload, "p%d", (int)i);
        assert_non_null(e->payload);
        assert_int_equal(e->payload->value.len, strlen(payload));
        assert_memory_equal(e->payload->value.data, payload, strlen(payload));
        assert_non_null(e->server_receive_time); /* the stored suffix came along */
        protobus__frame__free_unpacked(r, NULL);
    }
    /* Nothing else: the filter held back the rest. */
    assert_null(itest_recv_event(fd, 300));
    close(fd);
}

/* ".*" without tags takes the short cut (no walk of the stored bytes) and
 * still sends every event whole; ".*" with a tag filter and a narrower
 * pattern take the full path and filter. */
static void test_replay_all_topics_and_filters(void **state)
{
    itest_daemon *d = *state;
    assert_int_equal(itest_daemon_start(d, NULL, NULL), 0);
    int fd = itest_connect_hello(d->port);
    assert_true(fd >= 0);
    publish_tagged(fd);
    close(fd);

    const uint64_t all[NEVENTS] = {0, 1, 2, 3, 4, 5};
    const uint64_t even[3] = {0, 2, 4}, odd[3] = {1, 3, 5};
    expect_replay(d->port, ".*", NULL, all, NEVENTS);
    expect_replay(d->port, ".*", "red", even, 3);
    expect_replay(d->port, ".*", "blue", odd, 3);
    expect_replay(d->port, "t\\.b", NULL, odd, 3);
    expect_replay(d->port, "t\\.a", "blue", NULL, 0);
    assert_int_equal(itest_daemon_stop(d), 0);
}

/* Each test gets a daemon record; teardown stops the daemon by its PID and
 * removes its directory even when an assertion ended the test early. */
static int setup(void **state)
{
    itest_daemon *d = calloc(1, sizeof *d);
    if (!d)
        return -1;
    *state = d;
    return 0;
}

static int teardown(void **state)
{
    itest_daemon *d = *state;
    if (d->dir[0])
        itest_daemon_cleanup(d);
    free(d);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_topic_runs_route_each_event, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_all_topics_and_filters, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
