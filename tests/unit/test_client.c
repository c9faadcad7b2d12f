/*
 * test_client - libprotobus against a scripted fake server: a thread on
 * 127.0.0.1 (port from bind to port 0) that speaks the protocol with
 * protobuf-c, independently of the library's hand codec. Covers connect
 * errors, the Hello exchange and its timeout, publish + flush positions,
 * server errors, size limits, no_ack, subscribe with every field of an
 * event, DATA_LOSS reports, a refusal that arrives while a large Subscribe
 * is still being written, and the server closing.
 *
 * The server thread never calls cmocka asserts (they longjmp); it records
 * its first failure in fake_server.failure, checked after the join.
 *
 * The fake server speaks protocol version 1 (replies in request order,
 * Subscribed before any event, CaughtUp once) unless a test makes it break
 * a rule on purpose, to check that the library refuses it clearly.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "client.h"
#include "protobus.h"
#include "protobus.pb-c.h"

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

/* --- the fake server -------------------------------------------------------- */

typedef struct fake_server fake_server;
typedef void (*server_script)(fake_server *s, int fd);

struct fake_server {
    int lfd;
    uint16_t port;
    char address[64];
    pthread_t thread;
    server_script script;
    char failure[512];
    uint64_t max_frame_bytes, max_event_bytes;
    uint32_t max_batch_events; /* announced in the Hello's limits when nonzero */
    bool refuse_hello;         /* answer Hello with an UNAVAILABLE Error */
    uint32_t hello_version;    /* the server Hello's protocol_version (0: 1) */
    bool any_events;           /* do not check published events against make_event */
    int go_fd;                 /* script_ack_when_told: read end of a pipe */
    /* Script inputs/outputs. */
    int param;
    uint64_t events_seen;
    uint64_t frames_seen;
    Protobus__Hello *client_hello;
    Protobus__Subscribe *subscribe;
};

static void srv_fail(fake_server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void srv_fail(fake_server *s, const char *fmt, ...)
{
    if (s->failure[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->failure, sizeof(s->failure), fmt, ap);
    va_end(ap);
}

static int read_full(int fd, void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* One delimited Frame, unpacked with protobuf-c; NULL at EOF or on error. */
static Protobus__Frame *srv_read(fake_server *s, int fd)
{
    uint64_t len = 0;
    for (int shift = 0;; shift += 7) {
        uint8_t b;
        if (shift > 63 || read_full(fd, &b, 1) < 0)
            return NULL;
        len |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            break;
    }
    uint8_t *body = malloc(len ? len : 1);
    if (!body || read_full(fd, body, len) < 0) {
        free(body);
        return NULL;
    }
    Protobus__Frame *f = protobus__frame__unpack(NULL, len, body);
    if (!f)
        srv_fail(s, "client sent a frame protobuf-c cannot unpack (%llu bytes)",
                 (unsigned long long)len);
    s->frames_seen++;
    free(body);
    return f;
}

static void srv_send(fake_server *s, int fd, const Protobus__Frame *f)
{
    size_t n = protobus__frame__get_packed_size(f);
    uint8_t *buf = malloc(n + 10);
    if (!buf) {
        srv_fail(s, "out of memory");
        return;
    }
    size_t pre = 0;
    uint64_t v = n;
    do {
        buf[pre++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    protobus__frame__pack(f, buf + pre);
    if (write_full(fd, buf, pre + n) < 0)
        srv_fail(s, "sending a frame (body %d) failed: %s", (int)f->body_case, strerror(errno));
    free(buf);
}

/* Reads the client's Hello and answers with the server's limits. */
static int srv_hello(fake_server *s, int fd)
{
    Protobus__Frame *f = srv_read(s, fd);
    if (!f || f->body_case != PROTOBUS__FRAME__BODY_HELLO) {
        srv_fail(s, "first frame is not a Hello");
        if (f)
            protobus__frame__free_unpacked(f, NULL);
        return -1;
    }
    s->client_hello = f->hello;
    f->hello = NULL;
    f->body_case = PROTOBUS__FRAME__BODY__NOT_SET;
    uint64_t id = f->id;
    protobus__frame__free_unpacked(f, NULL);
    Protobus__Hello h = PROTOBUS__HELLO__INIT;
    h.protocol_version = s->hello_version ? s->hello_version : 1;
    h.name = "fake-protobusd 0.1";
    h.max_frame_bytes = s->max_frame_bytes;
    h.max_event_bytes = s->max_event_bytes;
    Protobus__Limits limits = PROTOBUS__LIMITS__INIT;
    if (s->max_batch_events) {
        limits.max_batch_events = s->max_batch_events;
        h.limits = &limits;
    }
    Protobus__Frame out = PROTOBUS__FRAME__INIT;
    out.id = id;
    out.body_case = PROTOBUS__FRAME__BODY_HELLO;
    out.hello = &h;
    srv_send(s, fd, &out);
    return 0;
}

static void srv_send_error(fake_server *s, int fd, uint64_t id, Protobus__Code code,
                           const char *msg, const char *partition, uint64_t first, uint64_t last,
                           uint32_t event_index_plus_one)
{
    Protobus__Error e = PROTOBUS__ERROR__INIT;
    e.code = code;
    e.message = (char *)msg;
    e.partition = (char *)(partition ? partition : "");
    e.first_offset = first;
    e.last_offset = last;
    e.event_index_plus_one = event_index_plus_one;
    Protobus__Frame out = PROTOBUS__FRAME__INIT;
    out.id = id;
    out.body_case = PROTOBUS__FRAME__BODY_ERROR;
    out.error = &e;
    srv_send(s, fd, &out);
}

/* Waits for the client to close (bounded by the socket's receive timeout). */
static void srv_drain(fake_server *s, int fd)
{
    Protobus__Frame *f;
    while ((f = srv_read(s, fd)) != NULL)
        protobus__frame__free_unpacked(f, NULL);
}

static void *server_main(void *arg)
{
    fake_server *s = arg;
    struct pollfd p = {.fd = s->lfd, .events = POLLIN};
    if (poll(&p, 1, 10000) != 1) {
        srv_fail(s, "no client connected");
        return NULL;
    }
    int fd = accept(s->lfd, NULL, NULL);
    if (fd < 0) {
        srv_fail(s, "accept: %s", strerror(errno));
        return NULL;
    }
    /* A broken client must not hang the test: bound every blocking read. */
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (s->refuse_hello) {
        Protobus__Frame *f = srv_read(s, fd);
        if (f) {
            srv_send_error(s, fd, f->id, PROTOBUS__CODE__UNAVAILABLE, "shutting down", NULL, 0, 0,
                           0);
            protobus__frame__free_unpacked(f, NULL);
        }
    } else if (srv_hello(s, fd) == 0) {
        s->script(s, fd);
    }
    close(fd);
    return NULL;
}

static int listen_socket(uint16_t *port, int backlog)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    if (backlog >= 0)
        assert_int_equal(listen(fd, backlog), 0);
    socklen_t len = sizeof(a);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static void server_start(fake_server *s, server_script script)
{
    memset(s, 0, sizeof(*s));
    s->script = script;
    s->max_frame_bytes = 4 << 20;
    s->max_event_bytes = 1 << 20;
    s->lfd = listen_socket(&s->port, 8);
    snprintf(s->address, sizeof(s->address), "127.0.0.1:%u", s->port);
}

static void server_run(fake_server *s)
{
    assert_int_equal(pthread_create(&s->thread, NULL, server_main, s), 0);
}

static void server_join(fake_server *s)
{
    assert_int_equal(pthread_join(s->thread, NULL), 0);
    close(s->lfd);
    if (s->client_hello)
        protobus__hello__free_unpacked(s->client_hello, NULL);
    if (s->subscribe)
        protobus__subscribe__free_unpacked(s->subscribe, NULL);
    if (s->failure[0])
        fail_msg("fake server: %s", s->failure);
}

static pb_client *connect_ok(fake_server *s, const pb_client_options *o)
{
    pb_client *c = NULL;
    char err[256] = "";
    int rc = pb_client_connect(&c, s->address, o, err, sizeof(err));
    if (rc != 0)
        fail_msg("connect: %s: %s", pb_strerror(rc), err);
    return c;
}

/* --- connecting --------------------------------------------------------------- */

static void test_connect_refused(void **state)
{
    uint16_t port;
    int fd = listen_socket(&port, -1); /* bound, never listening: connect is refused */
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
    int fd = listen_socket(&port, 4); /* the kernel completes connects; nobody answers */
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

static void script_close_now(fake_server *s, int fd)
{
}

static void test_hello_exchange(void **state)
{
    fake_server s;
    server_start(&s, script_close_now);
    s.max_frame_bytes = 123456;
    s.max_event_bytes = 65432;
    server_run(&s);
    pb_client_options o;
    pb_client_options_init(&o);
    o.name = "test-client/1";
    pb_client *c = connect_ok(&s, &o);
    assert_int_equal(pb_client_max_frame_bytes(c), 123456);
    assert_int_equal(pb_client_max_event_bytes(c), 65432);
    assert_string_equal(pb_client_server_name(c), "fake-protobusd 0.1");
    pb_client_close(c);
    server_join(&s);
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
    server_start(&s, script_check_hello);
    server_run(&s);
    pb_client_options o;
    pb_client_options_init(&o);
    o.name = "test-client/2";
    pb_client *c = connect_ok(&s, &o);
    pb_client_close(c);
    server_join(&s);
}

static void test_hello_refused_by_error(void **state)
{
    fake_server s;
    server_start(&s, script_close_now);
    s.refuse_hello = true;
    server_run(&s);
    pb_client *c = NULL;
    char err[256] = "";
    assert_int_equal(pb_client_connect(&c, s.address, NULL, err, sizeof(err)), PB_ESERVER);
    assert_null(c);
    assert_non_null(strstr(err, "UNAVAILABLE"));
    assert_non_null(strstr(err, "shutting down"));
    server_join(&s);
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
    server_start(&s, script_ack_all);
    server_run(&s);
    ack_log log = {0};
    pb_client_options o;
    pb_client_options_init(&o);
    o.batch_events = 97; /* batches end at odd places */
    o.max_in_flight = 3; /* publishing must wait for acks */
    o.on_ack = on_ack;
    o.on_ack_ctx = &log;
    pb_client *c = connect_ok(&s, &o);

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
    server_join(&s);
    assert_int_equal(s.events_seen, 2510);
}

/* A server that acks out of order is refused, naming both frames. */
static void test_publish_acks_out_of_order_refused(void **state)
{
    fake_server s;
    server_start(&s, script_ack_reversed);
    server_run(&s);
    pb_client_options o;
    pb_client_options_init(&o);
    o.batch_events = 10;
    pb_client *c = connect_ok(&s, &o);
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
    server_join(&s);
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
    server_start(&s, script_refuse_second);
    server_run(&s);
    pb_client_options o;
    pb_client_options_init(&o);
    o.batch_events = 3;
    pb_client *c = connect_ok(&s, &o);
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
    server_join(&s);
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
    server_start(&s, script_count_no_ack);
    server_run(&s);
    pb_client_options o;
    pb_client_options_init(&o);
    o.no_ack = true;
    o.batch_events = 10;
    o.max_in_flight = 1; /* irrelevant without acks: must not wait */
    pb_client *c = connect_ok(&s, &o);
    publish_n(c, 0, 95);
    const pb_position *pos = NULL;
    size_t count = 99;
    assert_int_equal(pb_client_flush(c, 1000, &pos, &count), 0);
    assert_int_equal(count, 0);
    pb_client_close(c);
    server_join(&s);
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
    server_start(&s, script_check_ids);
    s.any_events = true;
    server_run(&s);
    pb_client_options o;
    pb_client_options_init(&o);
    o.batch_events = 5;
    pb_client *c = connect_ok(&s, &o);
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
    server_join(&s);
    assert_int_equal(s.events_seen, ID_CASES);
}

static void test_publish_limits(void **state)
{
    fake_server s;
    server_start(&s, script_ack_all);
    s.max_event_bytes = 100;
    s.any_events = true;
    server_run(&s);
    pb_client *c = connect_ok(&s, NULL);
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
    server_join(&s);
}

/* A server whose Hello announces max_batch_events 3: ten events go out in
 * batches of at most 3 (it would refuse more), though batch_events is 1000. */
static void test_publish_within_max_batch_events(void **state)
{
    fake_server s;
    server_start(&s, script_ack_all);
    s.max_batch_events = 3;
    s.any_events = true;
    server_run(&s);
    pb_client *c = connect_ok(&s, NULL);
    pb_event ev = {.topic = "a.x", .payload = "p", .payload_len = 1};
    for (int i = 0; i < 10; i++)
        assert_int_equal(pb_client_publish(c, &ev), 0);
    const pb_position *pos;
    size_t count;
    assert_int_equal(pb_client_flush(c, 10000, &pos, &count), 0);
    assert_int_equal(count, 10);
    pb_client_close(c);
    server_join(&s);
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
    server_start(&s, script_close_after_publish);
    s.param = 0;
    server_run(&s);
    pb_client *c = connect_ok(&s, NULL);
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
    server_join(&s);
}

/* Acks each batch only after the test writes a byte to the go pipe. */
static void script_ack_when_told(fake_server *s, int fd)
{
    uint64_t next[2] = {0, 0};
    Protobus__Frame *f;
    while ((f = srv_read_publish(s, fd)) != NULL) {
        char b;
        if (read_full(s->go_fd, &b, 1) < 0)
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
    server_start(&s, script_ack_when_told);
    s.go_fd = go[0];
    server_run(&s);
    pb_client *c = connect_ok(&s, NULL);
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
    server_join(&s);
    close(go[0]);
    close(go[1]);
}

static void test_publish_no_positions_callback(void **state)
{
    fake_server s;
    server_start(&s, script_ack_all);
    server_run(&s);
    ack_log log = {0};
    pb_client_options o;
    pb_client_options_init(&o);
    o.no_positions = true;
    o.batch_bytes = 2000; /* batches cut by size, not count */
    o.on_ack = on_ack;
    o.on_ack_ctx = &log;
    pb_client *c = connect_ok(&s, &o);
    publish_n(c, 0, 1000);
    const pb_position *pos = NULL;
    size_t count = 99;
    assert_int_equal(pb_client_flush(c, 10000, &pos, &count), 0);
    assert_int_equal(count, 0);
    assert_int_equal(log.events, 1000);
    assert_true(log.batches >= 1000 * 80 / 2000);
    assert_int_equal(log.bad, 0);
    pb_client_close(c);
    server_join(&s);
    assert_int_equal(s.events_seen, 1000);
}

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
    server_start(&s, script_subscription);
    server_run(&s);
    pb_client *c = connect_ok(&s, NULL);
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
    server_join(&s);

    /* What the server received. */
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
        server_start(&s, script_subscription);
        s.param = unscanned ? 2 : 3;
        server_run(&s);
        pb_client *c = connect_ok(&s, NULL);
        if (unscanned)
            client_events_unscanned(c);
        assert_int_equal(pb_client_subscribe(c, &sub), 0);
        pb_item it;
        int rc = pb_client_next(c, &it, 10000);
        if (!unscanned) {
            assert_int_equal(rc, PB_EPROTO);
            assert_non_null(strstr(pb_client_message(c), "sensors:41"));
            pb_client_close(c);
            server_join(&s);
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
        server_join(&s);
    }
}

/* A second CaughtUp breaks the protocol: the library says so. */
static void test_subscribe_second_caught_up_refused(void **state)
{
    fake_server s;
    server_start(&s, script_subscription);
    s.param = 1;
    server_run(&s);
    pb_client *c = connect_ok(&s, NULL);
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
    server_join(&s);
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
    server_start(&s, script_events_without_subscribed);
    server_run(&s);
    pb_client *c = connect_ok(&s, NULL);
    const char *patterns[] = {".*"};
    pb_subscription sub = {.patterns = patterns, .npatterns = 1};
    assert_int_equal(pb_client_subscribe(c, &sub), PB_EPROTO);
    assert_non_null(strstr(pb_client_message(c), "does not speak protocol version 1"));
    pb_item it;
    assert_int_equal(pb_client_next(c, &it, 0), PB_EPROTO);
    pb_client_close(c);
    server_join(&s);
}

/* A server Hello of another protocol version is refused at connect. */
static void test_hello_other_version_refused(void **state)
{
    fake_server s;
    server_start(&s, script_close_now);
    s.hello_version = 2;
    server_run(&s);
    pb_client *c = NULL;
    char err[256] = "";
    assert_int_equal(pb_client_connect(&c, s.address, NULL, err, sizeof(err)), PB_EPROTO);
    assert_null(c);
    assert_non_null(strstr(err, "protocol version 2"));
    server_join(&s);
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
    server_start(&s, script_check_subscribe);
    s.param = 1;
    server_run(&s);
    pb_client *c = connect_ok(&s, NULL);
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
    server_join(&s);
}

/* No answer to the Subscribe within io_timeout_ms. */
static void test_subscribe_unanswered(void **state)
{
    fake_server s;
    server_start(&s, script_check_subscribe);
    s.param = 2;
    server_run(&s);
    pb_client_options o;
    pb_client_options_init(&o);
    o.io_timeout_ms = 100;
    pb_client *c = connect_ok(&s, &o);
    assert_int_equal(subscribe_time(c), PB_ETIMEDOUT);
    assert_non_null(strstr(pb_client_message(c), "did not answer the Subscribe"));
    pb_client_close(c);
    server_join(&s);
}

static void test_subscribe_timeout_then_close(void **state)
{
    fake_server s;
    server_start(&s, script_check_subscribe);
    server_run(&s);
    pb_client *c = connect_ok(&s, NULL);
    pb_item it;
    assert_int_equal(pb_client_next(c, &it, 0), PB_EINVAL); /* not subscribed yet */
    assert_int_equal(subscribe_time(c), 0);
    assert_int_equal(pb_client_subscribe(c, NULL), PB_EINVAL); /* only once */
    assert_int_equal(pb_client_next(c, &it, 0), PB_ETIMEDOUT);
    assert_int_equal(pb_client_next(c, &it, 20), PB_ETIMEDOUT);
    pb_client_close(c); /* the server's drain ends */
    server_join(&s);
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
    server_start(&s, script_refuse_before_reading);
    /* A small receive buffer (the accepted socket inherits it) keeps the
     * kernel from absorbing the whole request: the client must wait. */
    int small = 4096;
    assert_int_equal(setsockopt(s.lfd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
    server_run(&s);
    pb_client *c = connect_ok(&s, NULL);
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
    server_join(&s);
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
        cmocka_unit_test(test_hello_other_version_refused),
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
        cmocka_unit_test(test_subscribe_events),
        cmocka_unit_test(test_subscribe_events_unscanned),
        cmocka_unit_test(test_subscribe_second_caught_up_refused),
        cmocka_unit_test(test_subscribe_old_server_refused),
        cmocka_unit_test(test_subscribe_server_error),
        cmocka_unit_test(test_subscribe_unanswered),
        cmocka_unit_test(test_subscribe_timeout_then_close),
        cmocka_unit_test(test_subscribe_refused_while_writing),
        cmocka_unit_test(test_reader_exposed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
