/*
 * fakeserver - see fakeserver.h.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

void srv_fail(fake_server *s, const char *fmt, ...)
{
    if (s->failure[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->failure, sizeof(s->failure), fmt, ap);
    va_end(ap);
}

int fake_read_full(int fd, void *buf, size_t n)
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

int fake_write_full(int fd, const void *buf, size_t n)
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
Protobus__Frame *srv_read(fake_server *s, int fd)
{
    uint64_t len = 0;
    for (int shift = 0;; shift += 7) {
        uint8_t b;
        if (shift > 63 || fake_read_full(fd, &b, 1) < 0)
            return NULL;
        len |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            break;
    }
    uint8_t *body = malloc(len ? len : 1);
    if (!body || fake_read_full(fd, body, len) < 0) {
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

void srv_send(fake_server *s, int fd, const Protobus__Frame *f)
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
    if (fake_write_full(fd, buf, pre + n) < 0)
        srv_fail(s, "sending a frame (body %d) failed: %s", (int)f->body_case, strerror(errno));
    free(buf);
}

/* Reads the client's Hello and answers with the server's limits. */
int srv_hello(fake_server *s, int fd)
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

void srv_send_error(fake_server *s, int fd, uint64_t id, Protobus__Code code, const char *msg,
                    const char *partition, uint64_t first, uint64_t last,
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

void fake_script_close(fake_server *s, int fd)
{
}

/* Waits for the client to close (bounded by the socket's receive timeout). */
void srv_drain(fake_server *s, int fd)
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

int fake_listen_socket(uint16_t *port, int backlog)
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

void fake_server_start(fake_server *s, server_script script)
{
    memset(s, 0, sizeof(*s));
    s->script = script;
    s->max_frame_bytes = 4 << 20;
    s->max_event_bytes = 1 << 20;
    s->lfd = fake_listen_socket(&s->port, 8);
    snprintf(s->address, sizeof(s->address), "127.0.0.1:%u", s->port);
}

void fake_server_run(fake_server *s)
{
    assert_int_equal(pthread_create(&s->thread, NULL, server_main, s), 0);
}

void fake_server_join(fake_server *s)
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

pb_client *fake_connect(fake_server *s, const pb_client_options *o)
{
    pb_client *c = NULL;
    char err[256] = "";
    int rc = pb_client_connect(&c, s->address, o, err, sizeof(err));
    if (rc != 0)
        fail_msg("connect: %s: %s", pb_strerror(rc), err);
    return c;
}
