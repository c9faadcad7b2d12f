/*
 * test_client - libprotobus against a scripted fake server (tests/lib/fakeserver.h):
 * connect errors, the Hello exchange and its timeout, publish + flush positions,
 * server errors, size limits, no_ack, the server closing, and the reader exposed
 * through protobus.h. Subscribing: test_client_sub.
 *
 * The fake server speaks protocol version 1 (replies in request order) unless a
 * test makes it break a rule on purpose, to check that the library refuses it
 * clearly.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* --- connecting --------------------------------------------------------------- */

static void test_connect_refused(void **state)
{
    uint16_t port;
    int fd = fake_listen_socket(&port, -1); /* bound, never listening: connect is refused */
    char addr[64], err[256] = "";
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    pb_client *c = (pb_client *)&c;
    assert_int_equal(pb_client_connect(&c, addr, NULL, err, sizeof(err)), PB_ECONNECT);
    assert_null(c);
    assert_non_null(strstr(err, addr));
    assert_non_null(strstr(err, "refused"));
    close(fd);
}

static void test_connect_bad_address(void **state)
{
    static const char *const bad[] = {
        "localhost", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:http",
        ":7000",     "[::1",       "[::1]7000",   "::1:7000",        "127.0.0.1:70a",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        pb_client *c = NULL;
        char err[256] = "";
        int rc = pb_client_connect(&c, bad[i], NULL, err, sizeof(err));
        if (rc != PB_EINVAL)
            fail_msg("\"%s\": got %d (%s)", bad[i], rc, err);
        assert_null(c);
        assert_non_null(strstr(err, bad[i]));
    }
    pb_client *c = NULL;
    char err[256] = "";
    assert_int_equal(pb_client_connect(&c, NULL, NULL, err, sizeof(err)), PB_EINVAL);
}

static void test_connect_unresolvable(void **state)
{
    pb_client *c = NULL;
    char err[256] = "";
    /* .invalid never resolves (RFC 6761), and fails without a network. */
    assert_int_equal(pb_client_connect(&c, "no-such-host.invalid:7000", NULL, err, sizeof(err)),
                     PB_ECONNECT);
    assert_non_null(strstr(err, "no-such-host.invalid"));
}

static void test_hello_timeout(void **state)
{
    uint16_t port;
    int fd = fake_listen_socket(&port, 4); /* the kernel completes connects; nobody answers */
    char addr[64], err[256] = "";
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    pb_client_options o;
    pb_client_options_init(&o);
    o.connect_timeout_ms = 150;
    pb_client *c = NULL;
    assert_int_equal(pb_client_connect(&c, addr, &o, err, sizeof(err)), PB_ETIMEDOUT);
    assert_null(c);
    assert_non_null(strstr(err, "no Hello"));
    assert_non_null(strstr(err, addr));
    close(fd);
}

static void test_hello_exchange(void **state)
{
    fake_server s;
    fake_server_start(&s, fake_script_close);
    s.max_frame_bytes = 123456;
    s.max_event_bytes = 65432;
    fake_server_run(&s);
    pb_client_options o;
    pb_client_options_init(&o);
    o.name = "test-client/1";
    pb_client *c = fake_connect(&s, &o);
    assert_int_equal(pb_client_max_frame_bytes(c), 123456);
    assert_int_equal(pb_client_max_event_bytes(c), 65432);
    assert_string_equal(pb_client_server_name(c), "fake-protobusd 0.1");
    pb_client_close(c);
    fake_server_join(&s);
}

static void script_check_hello(fake_server *s, int fd)
{
    if (s->client_hello->protocol_version != 1)
        srv_fail(s, "client protocol_version %u", s->client_hello->protocol_version);
    if (strcmp(s->client_hello->name, "test-client/2") != 0)
        srv_fail(s, "client name \"%s\"", s->client_hello->name);
}

static void test_hello_sends_version_and_name(void **state)
{
    fake_server s;
    fake_server_start(&s, script_check_hello);
    fake_server_run(&s);
    pb_client_options o;
    pb_client_options_init(&o);
    o.name = "test-client/2";
    pb_client *c = fake_connect(&s, &o);
    pb_client_close(c);
    fake_server_join(&s);
}

static void test_hello_refused_by_error(void **state)
{
    fake_server s;
    fake_server_start(&s, fake_script_close);
    s.refuse_hello = true;
    fake_server_run(&s);
    pb_client *c = NULL;
    char err[256] = "";
    assert_int_equal(pb_client_connect(&c, s.address, NULL, err, sizeof(err)), PB_ESERVER);
    assert_null(c);
    assert_non_null(strstr(err, "UNAVAILABLE"));
    assert_non_null(strstr(err, "shutting down"));
    fake_server_join(&s);
}

/* --- publishing ------------------------------------------------------------------ */

#define EVENT_TIME_BASE 1700000000123456789LL

/* The events the publish tests send: topic a.<i> for even i, b.<i> for odd. */
static void make_event(uint64_t i, char *topic, size_t topiccap, char *seq, size_t seqcap,
                       char *payload, size_t paycap, pb_tag tags[2], pb_event *ev)
{
    snprintf(topic, topiccap, "%c.%llu", i % 2 ? 'b' : 'a', (unsigned long long)i);
    snprintf(seq, seqcap, "%llu", (unsigned long long)i);
    snprintf(payload, paycap, "payload-%llu", (unsigned long long)i);
    tags[0] = (pb_tag){"seq", seq};
    tags[1] = (pb_tag){"host", "h1"};
    *ev = (pb_event){
        .topic = topic,
        .tags = tags,
        .ntags = 2,
        .client_event_time_ns = EVENT_TIME_BASE + (int64_t)i,
        .payload_type = "type.example/Test",
        .payload = payload,
        .payload_len = strlen(payload),
    };
}

static int64_t ts_ns(const Google__Protobuf__Timestamp *t)
{
    return t->seconds * 1000000000LL + t->nanos;
}

/* Checks event i of the stream as protobuf-c decoded it. */
static void srv_check_event(fake_server *s, const Protobus__EncapsulatedEvent *e, uint64_t i)
{
    char topic[32], seq[32], payload[64];
    pb_tag tags[2];
    pb_event ev;
    make_event(i, topic, sizeof(topic), seq, sizeof(seq), payload, sizeof(payload), tags, &ev);
    if (strcmp(e->topic, topic) != 0)
        srv_fail(s, "event %llu: topic \"%s\", expected \"%s\"", (unsigned long long)i, e->topic,
                 topic);
    if (e->n_tags != 2 || strcmp(e->tags[0]->key, "seq") != 0 ||
        strcmp(e->tags[0]->value, seq) != 0 || strcmp(e->tags[1]->key, "host") != 0 ||
        strcmp(e->tags[1]->value, "h1") != 0)
        srv_fail(s, "event %llu: wrong tags", (unsigned long long)i);
    if (!e->client_event_time || ts_ns(e->client_event_time) != EVENT_TIME_BASE + (int64_t)i)
        srv_fail(s, "event %llu: wrong client_event_time", (unsigned long long)i);
    int64_t now = pb_time_now_ns();
    if (!e->client_transmit_time || ts_ns(e->client_transmit_time) > now ||
        ts_ns(e->client_transmit_time) < now - 60 * 1000000000LL)
        srv_fail(s, "event %llu: client_transmit_time missing or not recent",
                 (unsigned long long)i);
    if (e->server_receive_time)
        srv_fail(s, "event %llu: the client set server_receive_time", (unsigned long long)i);
    if (e->payload_size != (int64_t)strlen(payload))
        srv_fail(s, "event %llu: payload_size %lld", (unsigned long long)i,
                 (long long)e->payload_size);
    if (!e->payload || strcmp(e->payload->type_url, "type.example/Test") != 0 ||
        e->payload->value.len != strlen(payload) ||
        memcmp(e->payload->value.data, payload, strlen(payload)) != 0)
        srv_fail(s, "event %llu: wrong payload", (unsigned long long)i);
}

/* Acks a Publish: a.* events go to "part-a", b.* to "part-b", offsets count
 * up per partition. */
static void srv_ack(fake_server *s, int fd, const Protobus__Frame *f, uint64_t next[2])
{
    static char *names[2] = {"part-a", "part-b"};
    size_t n = f->publish->n_events;
    uint32_t *idx = calloc(n ? n : 1, sizeof(*idx));
    uint64_t *off = calloc(n ? n : 1, sizeof(*off));
    if (!idx || !off) {
        srv_fail(s, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        idx[i] = f->publish->events[i]->topic[0] == 'b';
        off[i] = next[idx[i]]++;
    }
    Protobus__PublishAck ack = PROTOBUS__PUBLISH_ACK__INIT;
    ack.n_partitions = 2;
    ack.partitions = names;
    ack.n_partition_index = n;
    ack.partition_index = idx;
    ack.n_offsets = n;
    ack.offsets = off;
    Protobus__Frame out = PROTOBUS__FRAME__INIT;
    out.id = f->id;
    out.body_case = PROTOBUS__FRAME__BODY_PUBLISH_ACK;
    out.publish_ack = &ack;
    srv_send(s, fd, &out);
out:
    free(idx);
    free(off);
}

static Protobus__Frame *srv_read_publish(fake_server *s, int fd)
{
    Protobus__Frame *f = srv_read(s, fd);
    if (f && f->body_case != PROTOBUS__FRAME__BODY_PUBLISH) {
        srv_fail(s, "expected Publish, got body %d", (int)f->body_case);
        protobus__frame__free_unpacked(f, NULL);
        return NULL;
    }
    if (f) {
        for (size_t i = 0; i < f->publish->n_events && !s->any_events; i++)
            srv_check_event(s, f->publish->events[i], s->events_seen + i);
        s->events_seen += f->publish->n_events;
    }
    return f;
}

static bool readable_now(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

/* Acks every batch, in request order (protocol v1). */
static void script_ack_all(fake_server *s, int fd)
{
    uint64_t next[2] = {0, 0};
    Protobus__Frame *f;
    while ((f = srv_read_publish(s, fd)) != NULL) {
        if (f->publish->no_ack)
            srv_fail(s, "no_ack set");
        srv_ack(s, fd, f, next);
        protobus__frame__free_unpacked(f, NULL);
    }
}

/* Breaks protocol v1's reply order: once a second batch is waiting, acks
 * it before the first (what protobusd 0.1 did). */
static void script_ack_reversed(fake_server *s, int fd)
{
    uint64_t next[2] = {0, 0};
    Protobus__Frame *f;
    while ((f = srv_read_publish(s, fd)) != NULL) {
        Protobus__Frame *g = readable_now(fd) ? srv_read_publish(s, fd) : NULL;
        if (g) {
            uint64_t first[2] = {next[0], next[1]};
            for (size_t i = 0; i < f->publish->n_events; i++)
                next[f->publish->events[i]->topic[0] == 'b']++;
            srv_ack(s, fd, g, next);
            srv_ack(s, fd, f, first);
            protobus__frame__free_unpacked(g, NULL);
            protobus__frame__free_unpacked(f, NULL);
            /* The client gives up on that and closes: send nothing more. */
            s->any_events = true;
            srv_drain(s, fd);
            return;
        }
        srv_ack(s, fd, f, next);
        protobus__frame__free_unpacked(f, NULL);
    }
}

typedef struct ack_log {
    uint64_t batches, events, next_first;
    int bad;
} ack_log;

static void on_ack(void *ctx, const pb_batch_result *r)
{
    ack_log *l = ctx;
    l->batches++;
    l->events += r->count;
    if (r->status != 0)
        l->bad++;
    for (size_t i = 0; i < r->count; i++) {
        uint64_t seq = r->first_event + i;
        if (strcmp(r->positions[i].partition, seq % 2 ? "part-b" : "part-a") != 0 ||
            r->positions[i].offset != seq / 2)
            l->bad++;
    }
}

static void publish_n(pb_client *c, uint64_t from, uint64_t n)
{
    for (uint64_t i = from; i < from + n; i++) {
        char topic[32], seq[32], payload[64];
        pb_tag tags[2];
        pb_event ev;
        make_event(i, topic, sizeof(topic), seq, sizeof(seq), payload, sizeof(payload), tags, &ev);
        int rc = pb_client_publish(c, &ev);
        if (rc != 0)
            fail_msg("publish %llu: %s: %s", (unsigned long long)i, pb_strerror(rc),
                     pb_client_message(c));
    }
}

static void test_publish_flush_positions(void **state)
{
    fake_server s;
    fake_server_start(&s, script_ack_all);
    fake_server_run(&s);
    ack_log log = {0};
    pb_client_options o;
    pb_client_options_init(&o);
    o.batch_events = 97; /* batches end at odd places */
    o.max_in_flight = 3; /* publishing must wait for acks */
    o.on_ack = on_ack;
    o.on_ack_ctx = &log;
    pb_client *c = fake_connect(&s, &o);

    for (int round = 0; round < 2; round++) {
        uint64_t from = round ? 2500 : 0, n = round ? 10 : 2500;
        publish_n(c, from, n);
        const pb_position *pos = NULL;
        size_t count = 0;
        int rc = pb_client_flush(c, 10000, &pos, &count);
        if (rc != 0)
            fail_msg("flush: %s: %s", pb_strerror(rc), pb_client_message(c));
        assert_int_equal(count, n);
        for (size_t i = 0; i < count; i++) {
            uint64_t seq = from + i;
            assert_int_equal(pos[i].status, 0);
            assert_string_equal(pos[i].partition, seq % 2 ? "part-b" : "part-a");
            assert_int_equal(pos[i].offset, seq / 2);
        }
    }
    /* A flush with nothing new returns no positions. */
    const pb_position *pos = NULL;
    size_t count = 99;
    assert_int_equal(pb_client_flush(c, 1000, &pos, &count), 0);
    assert_int_equal(count, 0);

    assert_int_equal(log.events, 2510);
    assert_int_equal(log.batches, 2500 / 97 + 1 + 1);
    assert_int_equal(log.bad, 0);
    pb_client_close(c);
    fake_server_join(&s);
    assert_int_equal(s.events_seen, 2510);
}

/* A server that acks out of order is refused, naming both frames. */
static void test_publish_acks_out_of_order_refused(void **state)
{
    fake_server s;
    fake_server_start(&s, script_ack_reversed);
    fake_server_run(&s);
    pb_client_options o;
    pb_client_options_init(&o);
    o.batch_events = 10;
    pb_client *c = fake_connect(&s, &o);
    int rc = 0;
    for (uint64_t i = 0; i < 2000 && rc == 0; i += 10) {
        for (uint64_t k = i; k < i + 10 && rc == 0; k++) {
            char topic[32], seq[32], payload[64];
            pb_tag tags[2];
            pb_event ev;
            make_event(k, topic, sizeof(topic), seq, sizeof(seq), payload, sizeof(payload), tags,
                       &ev);
            rc = pb_client_publish(c, &ev);
        }
    }
    if (rc == 0)
        rc = pb_client_flush(c, 10000, NULL, NULL);
    assert_int_equal(rc, PB_EPROTO);
    assert_non_null(strstr(pb_client_message(c), "request order"));
    pb_client_close(c);
    fake_server_join(&s);
}

/* Refuses the second batch (INVALID_ARGUMENT about its second event), acks
 * the others. */
static void script_refuse_second(fake_server *s, int fd)
{
    uint64_t next[2] = {0, 0};
    Protobus__Frame *f;
    for (int n = 0; (f = srv_read_publish(s, fd)) != NULL; n++) {
        if (n == 1)
            srv_send_error(s, fd, f->id, PROTOBUS__CODE__INVALID_ARGUMENT,
                           "topic \"b.3\" matches no rule", NULL, 0, 0, 2);
        else
            srv_ack(s, fd, f, next);
        protobus__frame__free_unpacked(f, NULL);
    }
}

static void test_publish_server_error(void **state)
{
    fake_server s;
    fake_server_start(&s, script_refuse_second);
    fake_server_run(&s);
    pb_client_options o;
    pb_client_options_init(&o);
    o.batch_events = 3;
    pb_client *c = fake_connect(&s, &o);
    publish_n(c, 0, 9);
    const pb_position *pos = NULL;
    size_t count = 0;
    assert_int_equal(pb_client_flush(c, 10000, &pos, &count), PB_ESERVER);
    assert_int_equal(count, 9);
    for (size_t i = 0; i < 9; i++) {
        if (i >= 3 && i < 6) {
            assert_int_equal(pos[i].status, PB_ESERVER);
            assert_null(pos[i].partition);
        } else {
            assert_int_equal(pos[i].status, 0);
            assert_non_null(pos[i].partition);
        }
    }
    const pb_server_error *e = pb_client_server_error(c);
    assert_non_null(e);
    assert_int_equal(e->code, PB_CODE_INVALID_ARGUMENT);
    assert_string_equal(e->message, "topic \"b.3\" matches no rule");
    assert_true(e->about_event);
    assert_int_equal(e->event_in_batch, 1);
    assert_int_equal(e->event, 4);
    assert_int_equal(e->batch_first_event, 3);
    assert_int_equal(e->batch_count, 3);
    assert_non_null(strstr(pb_client_message(c), "matches no rule"));
    assert_non_null(strstr(pb_client_message(c), "INVALID_ARGUMENT"));

    /* The connection goes on: the next flush succeeds. */
    publish_n(c, 9, 3);
    assert_int_equal(pb_client_flush(c, 10000, &pos, &count), 0);
    assert_int_equal(count, 3);
    assert_int_equal(pos[0].status, 0);
    pb_client_close(c);
    fake_server_join(&s);
}

static void script_count_no_ack(fake_server *s, int fd)
{
    Protobus__Frame *f;
    while ((f = srv_read_publish(s, fd)) != NULL) {
        if (!f->publish->no_ack)
            srv_fail(s, "no_ack not set");
        protobus__frame__free_unpacked(f, NULL);
    }
}

static void test_publish_no_ack(void **state)
{
    fake_server s;
    fake_server_start(&s, script_count_no_ack);
    fake_server_run(&s);
    pb_client_options o;
    pb_client_options_init(&o);
    o.no_ack = true;
    o.batch_events = 10;
    o.max_in_flight = 1; /* irrelevant without acks: must not wait */
    pb_client *c = fake_connect(&s, &o);
    publish_n(c, 0, 95);
    const pb_position *pos = NULL;
    size_t count = 99;
    assert_int_equal(pb_client_flush(c, 1000, &pos, &count), 0);
    assert_int_equal(count, 0);
    pb_client_close(c);
    fake_server_join(&s);
    assert_int_equal(s.events_seen, 95);
}

/* --- event ids ------------------------------------------------------------- */

/* The ids test_publish_ids sends, in order (the fake server checks them). */
enum { ID_CASES = 24 };
static char id_cases[ID_CASES][PB_EVENT_ID_MAX_BYTES + 1];

/* id_cases[k]: lengths 1..64 around the inline check's words (8, 16, 32,
 * 40) and UUID text; odd k ASCII, even k with a 2-byte UTF-8 character. */
static void id_cases_init(void)
{
    static const size_t lens[ID_CASES / 2] = {1, 7, 8, 9, 16, 17, 31, 32, 33, 36, 40, 64};
    for (int k = 0; k < ID_CASES; k++) {
        size_t len = lens[k / 2];
        for (size_t i = 0; i < len; i++)
            id_cases[k][i] = (char)('a' + (k + i) % 26);
        if (k % 2 == 0 && len >= 2)
            memcpy(id_cases[k] + len / 2 - 1, "\xc3\xa9", 2); /* U+00E9 */
        id_cases[k][len] = '\0';
    }
}

/* Checks each event's id, byte for byte, against id_cases, then acks. */
static void script_check_ids(fake_server *s, int fd)
{
    uint64_t next[2] = {0, 0};
    Protobus__Frame *f;
    while ((f = srv_read_publish(s, fd)) != NULL) {
        for (size_t i = 0; i < f->publish->n_events; i++) {
            uint64_t k = s->events_seen - f->publish->n_events + i;
            const char *got = f->publish->events[i]->id;
            if (k >= ID_CASES || !got || strcmp(got, id_cases[k]) != 0)
                srv_fail(s, "event %llu: id '%s', expected '%s'", (unsigned long long)k,
                         got ? got : "(none)", k < ID_CASES ? id_cases[k] : "(none)");
        }
        srv_ack(s, fd, f, next);
        protobus__frame__free_unpacked(f, NULL);
    }
}

/* pb_client_publish_id: ids of 1 to 64 bytes, ASCII or not, reach the
 * server exactly as given (the inline check and encoding); one of 65
 * bytes, or with a byte that is not UTF-8 anywhere (the inline check's
 * range and past it), is refused with PB_EINVAL naming the length or the
 * byte, and nothing is sent for it. */
static void test_publish_ids(void **state)
{
    (void)state;
    id_cases_init();
    fake_server s;
    fake_server_start(&s, script_check_ids);
    s.any_events = true;
    fake_server_run(&s);
    pb_client_options o;
    pb_client_options_init(&o);
    o.batch_events = 5;
    pb_client *c = fake_connect(&s, &o);
    pb_event ev = {.topic = "a.ids", .payload = "x", .payload_len = 1};
    for (int k = 0; k < ID_CASES; k++)
        assert_int_equal(pb_client_publish_id(c, &ev, id_cases[k]), 0);
    char id[PB_EVENT_ID_MAX_BYTES + 2];
    memset(id, 'q', PB_EVENT_ID_MAX_BYTES + 1);
    id[PB_EVENT_ID_MAX_BYTES + 1] = '\0';
    assert_int_equal(pb_client_publish_id(c, &ev, id), PB_EINVAL);
    assert_non_null(strstr(pb_client_message(c), "id of 65 bytes"));
    static const size_t bad_lens[] = {20, 40};
    for (size_t b = 0; b < 2; b++) {
        for (size_t at = 0; at < bad_lens[b]; at++) {
            memset(id, 'q', bad_lens[b]);
            id[bad_lens[b]] = '\0';
            id[at] = (char)0xff;
            assert_int_equal(pb_client_publish_id(c, &ev, id), PB_EINVAL);
            char want[64];
            snprintf(want, sizeof want, "not UTF-8 at byte %zu", at);
            assert_non_null(strstr(pb_client_message(c), want));
        }
    }
    assert_int_equal(pb_client_flush(c, 5000, NULL, NULL), 0);
    pb_client_close(c);
    fake_server_join(&s);
    assert_int_equal(s.events_seen, ID_CASES);
}

static void test_publish_limits(void **state)
{
    fake_server s;
    fake_server_start(&s, script_ack_all);
    s.max_event_bytes = 100;
    s.any_events = true;
    fake_server_run(&s);
    pb_client *c = fake_connect(&s, NULL);
    char big[200];
    memset(big, 'x', sizeof(big));
    pb_event ev = {.topic = "a.big", .payload = big, .payload_len = sizeof(big)};
    assert_int_equal(pb_client_publish(c, &ev), PB_ETOOBIG);
    assert_non_null(strstr(pb_client_message(c), "a.big"));
    assert_non_null(strstr(pb_client_message(c), "100"));
    /* Just under the limit once encoded is still refused with its size. */
    ev.payload_len = 90;
    assert_int_equal(pb_client_publish(c, &ev), PB_ETOOBIG);
    ev.payload_len = 40;
    assert_int_equal(pb_client_publish(c, &ev), 0);

    pb_event bad = {.topic = "has space"};
    assert_int_equal(pb_client_publish(c, &bad), PB_EINVAL);
    assert_non_null(strstr(pb_client_message(c), "has space"));
    bad.topic = "";
    assert_int_equal(pb_client_publish(c, &bad), PB_EINVAL);
    pb_tag t = {"k", "\xff"};
    pb_event badtag = {.topic = "a.t", .tags = &t, .ntags = 1};
    assert_int_equal(pb_client_publish(c, &badtag), PB_EINVAL);
    assert_non_null(strstr(pb_client_message(c), "UTF-8"));

    /* The refused events were not taken: the flush covers one event. */
    const pb_position *pos;
    size_t count;
    assert_int_equal(pb_client_flush(c, 10000, &pos, &count), 0);
    assert_int_equal(count, 1);
    pb_client_close(c);
    fake_server_join(&s);
}

/* A server whose Hello announces max_batch_events 3: ten events go out in
 * batches of at most 3 (it would refuse more), though batch_events is 1000. */
static void test_publish_within_max_batch_events(void **state)
{
    fake_server s;
    fake_server_start(&s, script_ack_all);
    s.max_batch_events = 3;
    s.any_events = true;
    fake_server_run(&s);
    pb_client *c = fake_connect(&s, NULL);
    pb_event ev = {.topic = "a.x", .payload = "p", .payload_len = 1};
    for (int i = 0; i < 10; i++)
        assert_int_equal(pb_client_publish(c, &ev), 0);
    const pb_position *pos;
    size_t count;
    assert_int_equal(pb_client_flush(c, 10000, &pos, &count), 0);
    assert_int_equal(count, 10);
    pb_client_close(c);
    fake_server_join(&s);
    assert_int_equal(s.events_seen, 10);
    assert_int_equal(s.frames_seen, 1 + 4); /* the Hello, then 3 + 3 + 3 + 1 */
}

static void script_close_after_publish(fake_server *s, int fd)
{
    Protobus__Frame *f = srv_read(s, fd);
    if (f)
        protobus__frame__free_unpacked(f, NULL);
}

static void test_publish_server_closes(void **state)
{
    fake_server s;
    fake_server_start(&s, script_close_after_publish);
    s.param = 0;
    fake_server_run(&s);
    pb_client *c = fake_connect(&s, NULL);
    pb_event ev = {.topic = "a.x", .payload = "p", .payload_len = 1};
    assert_int_equal(pb_client_publish(c, &ev), 0);
    const pb_position *pos;
    size_t count;
    assert_int_equal(pb_client_flush(c, 10000, &pos, &count), PB_ECLOSED);
    assert_int_equal(count, 1);
    assert_int_not_equal(pos[0].status, 0);
    assert_non_null(strstr(pb_client_message(c), "closed"));
    /* Sticky. */
    assert_int_equal(pb_client_publish(c, &ev), PB_ECLOSED);
    pb_client_close(c);
    fake_server_join(&s);
}

/* Acks each batch only after the test writes a byte to the go pipe. */
static void script_ack_when_told(fake_server *s, int fd)
{
    uint64_t next[2] = {0, 0};
    Protobus__Frame *f;
    while ((f = srv_read_publish(s, fd)) != NULL) {
        char b;
        if (fake_read_full(s->go_fd, &b, 1) < 0)
            srv_fail(s, "go pipe closed");
        srv_ack(s, fd, f, next);
        protobus__frame__free_unpacked(f, NULL);
    }
}

static void test_flush_timeout_then_collect(void **state)
{
    int go[2];
    assert_int_equal(pipe(go), 0);
    fake_server s;
    fake_server_start(&s, script_ack_when_told);
    s.go_fd = go[0];
    fake_server_run(&s);
    pb_client *c = fake_connect(&s, NULL);
    publish_n(c, 0, 2);
    const pb_position *pos = NULL;
    size_t count = 0;
    assert_int_equal(pb_client_flush(c, 30, &pos, &count), PB_ETIMEDOUT);
    assert_int_equal(count, 2);
    assert_int_equal(pos[0].status, PB_ETIMEDOUT);
    assert_int_equal(pos[1].status, PB_ETIMEDOUT);
    assert_non_null(strstr(pb_client_message(c), "not acknowledged"));

    /* Not sticky: once the ack comes, the next flush has them, plus a new one. */
    assert_int_equal(write(go[1], "gg", 2), 2);
    publish_n(c, 2, 1);
    assert_int_equal(pb_client_flush(c, 10000, &pos, &count), 0);
    assert_int_equal(count, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(pos[i].status, 0);
        assert_int_equal(pos[i].offset, i / 2);
    }
    pb_client_close(c);
    fake_server_join(&s);
    close(go[0]);
    close(go[1]);
}

static void test_publish_no_positions_callback(void **state)
{
    fake_server s;
    fake_server_start(&s, script_ack_all);
    fake_server_run(&s);
    ack_log log = {0};
    pb_client_options o;
    pb_client_options_init(&o);
    o.no_positions = true;
    o.batch_bytes = 2000; /* batches cut by size, not count */
    o.on_ack = on_ack;
    o.on_ack_ctx = &log;
    pb_client *c = fake_connect(&s, &o);
    publish_n(c, 0, 1000);
    const pb_position *pos = NULL;
    size_t count = 99;
    assert_int_equal(pb_client_flush(c, 10000, &pos, &count), 0);
    assert_int_equal(count, 0);
    assert_int_equal(log.events, 1000);
    assert_true(log.batches >= 1000 * 80 / 2000);
    assert_int_equal(log.bad, 0);
    pb_client_close(c);
    fake_server_join(&s);
    assert_int_equal(s.events_seen, 1000);
}

/* --- reading files (through protobus.h) --------------------------------------- */

static void test_reader_exposed(void **state)
{
    pb_reader *r = NULL;
    assert_int_equal(pb_reader_open(&r, "/nonexistent/protobus/partition"), PB_ENOTFOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_connect_bad_address),
        cmocka_unit_test(test_connect_unresolvable),
        cmocka_unit_test(test_hello_timeout),
        cmocka_unit_test(test_hello_exchange),
        cmocka_unit_test(test_hello_sends_version_and_name),
        cmocka_unit_test(test_hello_refused_by_error),
        cmocka_unit_test(test_publish_flush_positions),
        cmocka_unit_test(test_publish_acks_out_of_order_refused),
        cmocka_unit_test(test_publish_server_error),
        cmocka_unit_test(test_publish_no_ack),
        cmocka_unit_test(test_publish_ids),
        cmocka_unit_test(test_publish_limits),
        cmocka_unit_test(test_publish_within_max_batch_events),
        cmocka_unit_test(test_publish_server_closes),
        cmocka_unit_test(test_flush_timeout_then_collect),
        cmocka_unit_test(test_publish_no_positions_callback),
        cmocka_unit_test(test_reader_exposed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
