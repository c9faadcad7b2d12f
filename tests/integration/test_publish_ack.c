/*
 * Integration: publish acknowledgements through libprotobus against the real
 * protobusd (issue 3). The PublishAck carries (partition, offset) of every
 * event of the batch; a publisher asking for no acks gets none, and its
 * events are stored all the same. Checked against what a subscriber from
 * the beginning receives.
 *
 * Threads: the test's main thread only (cmocka asserts).
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
#include <unistd.h>

#define TIMEOUT_MS   10000
#define PAYLOAD_TYPE "type.googleapis.com/test.Text"
#define NPARTS       3

static const char *const part_names[NPARTS] = {"alpha", "beta", "rest"};

static int part_index(const char *name)
{
    for (int i = 0; i < NPARTS; i++)
        if (strcmp(name, part_names[i]) == 0)
            return i;
    return -1;
}

/* The partition the rules below route a topic to. */
static int routed(const char *topic)
{
    return topic[0] == 'a' ? 0 : topic[0] == 'b' ? 1 : 2;
}

typedef struct fixture {
    itest_daemon d;
} fixture;

static int setup(void **state)
{
    return itest_fixture_setup(state, sizeof(fixture));
}

static pb_client *client_open(const fixture *f, bool no_ack)
{
    char addr[64], err[256] = "";
    snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)f->d.port);
    pb_client_options o;
    pb_client_options_init(&o);
    o.no_ack = no_ack;
    pb_client *c = NULL;
    int rc = pb_client_connect(&c, addr, &o, err, sizeof err);
    if (rc != 0)
        print_error("connect %s: %s\n", addr, err);
    assert_int_equal(rc, 0);
    return c;
}

/* Publishes one event whose payload is its topic + "/" + tag. */
static void publish_one(pb_client *c, const char *topic, const char *tag)
{
    char payload[64];
    snprintf(payload, sizeof payload, "%s/%s", topic, tag);
    pb_event ev = {.topic = topic,
                   .payload_type = PAYLOAD_TYPE,
                   .payload = payload,
                   .payload_len = strlen(payload)};
    assert_int_equal(pb_client_publish(c, &ev), 0);
}

/* A Publish frame of one event, written by hand (protobuf-c), so that the
 * absence of an ack is seen on the wire rather than through the library. */
static int raw_publish(int fd, uint64_t id, const char *topic, const char *payload, bool no_ack)
{
    Protobus__EncapsulatedEvent ev = PROTOBUS__ENCAPSULATED_EVENT__INIT;
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    any.type_url = PAYLOAD_TYPE;
    any.value.data = (uint8_t *)payload;
    any.value.len = strlen(payload);
    ev.topic = (char *)topic;
    ev.payload = &any;
    ev.payload_size = (int64_t)any.value.len;
    Protobus__EncapsulatedEvent *evp[1] = {&ev};
    Protobus__Publish p = PROTOBUS__PUBLISH__INIT;
    p.n_events = 1;
    p.events = evp;
    p.no_ack = no_ack;
    Protobus__Frame fr = PROTOBUS__FRAME__INIT;
    fr.id = id;
    fr.body_case = PROTOBUS__FRAME__BODY_PUBLISH;
    fr.publish = &p;
    return itest_send_frame(fd, &fr);
}

static void test_publish_acks_and_no_ack(void **state)
{
    fixture *f = *state;
    assert_int_equal(itest_daemon_start(&f->d, NULL,
                                        "[partition alpha]\nmatch = a\\..*\n"
                                        "[partition beta]\nmatch = b\\..*\n"
                                        "[partition rest]\nmatch = .*\n"),
                     0);
    /* Two acked batches, mixed partitions: each position is the rule's
     * partition and the next offset there, in publish order. */
    static const char *const acked[] = {"a.1", "b.1", "c.1", "a.2", "a.3",
                                        "c.2", "b.2", "b.3", "a.4"};
    enum { NACKED = sizeof acked / sizeof acked[0], FIRST_BATCH = 6 };
    pb_client *pub = client_open(f, false);
    uint64_t next[NPARTS] = {0, 0, 0};
    for (size_t lo = 0, hi = FIRST_BATCH; lo < NACKED; lo = hi, hi = NACKED) {
        for (size_t i = lo; i < hi; i++)
            publish_one(pub, acked[i], "acked");
        const pb_position *pos = NULL;
        size_t count = 0;
        assert_int_equal(pb_client_flush(pub, TIMEOUT_MS, &pos, &count), 0);
        assert_int_equal(count, hi - lo);
        for (size_t i = lo; i < hi; i++) {
            const pb_position *p = &pos[i - lo];
            int want = routed(acked[i]);
            assert_int_equal(p->status, 0);
            assert_string_equal(p->partition, part_names[want]);
            assert_int_equal(p->offset, next[want]);
            next[want]++;
        }
    }

    /* no_ack through the library: flush only sends and reports no positions. */
    static const char *const quiet[] = {"a.q", "b.q", "c.q", "a.q2"};
    enum { NQUIET = sizeof quiet / sizeof quiet[0] };
    pb_client *q = client_open(f, true);
    for (size_t i = 0; i < NQUIET; i++)
        publish_one(q, quiet[i], "quiet");
    const pb_position *pos = NULL;
    size_t count = 99;
    assert_int_equal(pb_client_flush(q, TIMEOUT_MS, &pos, &count), 0);
    assert_int_equal(count, 0);

    /* On the wire: a no_ack Publish, then an acked one, on one connection,
     * same partition. The first frame back must answer the second: an ack
     * of the first would come before it (a connection's batches to one
     * partition are acked in order). */
    int fd = itest_connect(f->d.port);
    assert_true(fd >= 0);
    Protobus__Hello h = PROTOBUS__HELLO__INIT;
    h.protocol_version = 1;
    Protobus__Frame hf = PROTOBUS__FRAME__INIT;
    hf.id = 1;
    hf.body_case = PROTOBUS__FRAME__BODY_HELLO;
    hf.hello = &h;
    assert_int_equal(itest_send_frame(fd, &hf), 0);
    Protobus__Frame *r = itest_recv_frame(fd, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_HELLO);
    protobus__frame__free_unpacked(r, NULL);
    assert_int_equal(raw_publish(fd, 50, "a.raw", "a.raw/no-ack", true), 0);
    assert_int_equal(raw_publish(fd, 51, "a.raw", "a.raw/acked", false), 0);
    r = itest_recv_frame(fd, TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->id, 51);
    assert_int_equal(r->body_case, PROTOBUS__FRAME__BODY_PUBLISH_ACK);
    assert_int_equal(r->publish_ack->n_offsets, 1);
    assert_int_equal(r->publish_ack->n_partitions, 1);
    assert_string_equal(r->publish_ack->partitions[0], "alpha");
    uint64_t raw_offset = r->publish_ack->offsets[0];
    protobus__frame__free_unpacked(r, NULL);
    close(fd);

    /* Everything is stored: the acked events at their positions, the
     * unacknowledged ones in their partitions, each partition holding
     * exactly offsets 0..count-1. The no_ack events of partitions beta and
     * rest have no later ack ordering them before the Subscribe (their
     * writers may still be starting: partitions are dormant until written
     * to), so CaughtUp may come before some of them: it is skipped, once. */
    const char *pats[1] = {".*"};
    pb_subscription s = {.patterns = pats, .npatterns = 1, .start = PB_START_BEGINNING};
    pb_client *sub = client_open(f, false);
    assert_int_equal(pb_client_subscribe(sub, &s), 0);
    size_t total = NACKED + NQUIET + 2, quiet_seen = 0, raw_seen = 0;
    uint64_t stored[NPARTS] = {next[0] + 2 + 2, next[1] + 1, next[2] + 1}; /* quiet + raw */
    int64_t last[NPARTS] = {-1, -1, -1};
    uint64_t acked_seen[NPARTS] = {0, 0, 0};
    bool caught_up = false;
    for (size_t k = 0; k < total; k++) {
        pb_item item;
        int rc = pb_client_next(sub, &item, TIMEOUT_MS);
        if (rc != 0)
            print_error("delivery %zu: %s (%s)\n", k, pb_strerror(rc), pb_client_message(sub));
        assert_int_equal(rc, 0);
        if (item.kind == PB_ITEM_CAUGHT_UP && !caught_up) {
            caught_up = true;
            k--;
            continue;
        }
        assert_int_equal(item.kind, PB_ITEM_EVENT);
        const pb_received_event *e = &item.event;
        int pi = part_index(e->partition);
        assert_true(pi >= 0);
        assert_int_equal(pi, routed(e->topic));
        assert_true((int64_t)e->offset > last[pi]);
        assert_true(e->offset < stored[pi]);
        last[pi] = (int64_t)e->offset;
        char payload[64];
        snprintf(payload, sizeof payload, "%.*s", (int)e->payload_len, (const char *)e->payload);
        char expect[64];
        snprintf(expect, sizeof expect, "%s/", e->topic);
        assert_memory_equal(payload, expect, strlen(expect));
        const char *tag = payload + strlen(expect);
        if (strcmp(tag, "acked") == 0 && strcmp(e->topic, "a.raw") == 0) {
            assert_int_equal(e->offset, raw_offset);
            raw_seen++;
        } else if (strcmp(tag, "acked") == 0) {
            /* The acked events fill each partition's first offsets. */
            assert_int_equal(e->offset, acked_seen[pi]);
            acked_seen[pi]++;
        } else if (strcmp(tag, "no-ack") == 0) {
            raw_seen++;
        } else {
            assert_string_equal(tag, "quiet");
            quiet_seen++;
        }
    }
    assert_int_equal(raw_seen, 2);
    assert_int_equal(quiet_seen, NQUIET);
    for (int i = 0; i < NPARTS; i++) {
        assert_int_equal(acked_seen[i], next[i]);
        assert_int_equal(last[i], (int64_t)stored[i] - 1);
    }
    pb_client_close(sub);
    pb_client_close(q);
    pb_client_close(pub);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_publish_acks_and_no_ack, setup,
                                        itest_fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
