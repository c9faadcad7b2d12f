/*
 * client - libprotobus's connection, the layer publish.c and subscribe.c
 * build on: connecting with a timeout (every resolved address in turn), the
 * Hello exchange, non-blocking socket I/O with deadlines, splitting received
 * frames, and the error state every call reports through. lifecycle.c, on
 * top, creates and frees the pb_client.
 *
 * Threads: whichever thread calls into the pb_client (one at a time). The
 * socket stays non-blocking; every wait is a poll() with a deadline.
 */
#include "client.h"

#include "hostport.h"
#include "protobus.pb-c.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* What we accept from a server that states no limits: the record cap of the
 * file format (64 MiB of event) plus room for the frame around it. */
#define RECV_MAX_NO_LIMIT (64ull * 1024 * 1024 + 4096)

int64_t pb_time_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t client_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t client_deadline(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : client_now_ms() + timeout_ms;
}

static void vformat(pb_client *c, const char *fmt, va_list ap)
{
    vsnprintf(c->msg, sizeof(c->msg), fmt, ap);
}

int client_fail(pb_client *c, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vformat(c, fmt, ap);
    va_end(ap);
    return code;
}

int client_die(pb_client *c, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vformat(c, fmt, ap);
    va_end(ap);
    c->sticky = code;
    return code;
}

/* --- connecting ------------------------------------------------------------ */

/* One non-blocking connect bounded by the deadline: fd, or a negated errno
 * (-ETIMEDOUT at the deadline). */
static int connect_one(const struct addrinfo *ai, int64_t deadline)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0)
        return -errno;
    int rc = 0;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        if (errno != EINPROGRESS) {
            rc = -errno;
            goto fail;
        }
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        for (;;) {
            int64_t left = deadline - client_now_ms();
            if (left <= 0) {
                rc = -ETIMEDOUT;
                goto fail;
            }
            int n = poll(&p, 1, (int)(left > 60000 ? 60000 : left));
            if (n < 0 && errno != EINTR) {
                rc = -errno;
                goto fail;
            }
            if (n > 0)
                break;
        }
        int soerr = 0;
        socklen_t len = sizeof(soerr);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0) {
            rc = -errno;
            goto fail;
        }
        if (soerr != 0) {
            rc = -soerr;
            goto fail;
        }
    }
    /* Batches are already large; small ones (flush) should leave at once. */
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0) {
        rc = -errno;
        goto fail;
    }
    return fd;
fail:
    close(fd);
    return rc;
}

static int connect_address(pb_client *c, const char *address, int64_t deadline)
{
    hostport hp;
    char why[sizeof c->msg - 32], port[8];
    if (hostport_parse(address, 0, &hp, why, sizeof why) < 0)
        return client_fail(c, PB_EINVAL, "address %s", why);
    snprintf(port, sizeof port, "%u", (unsigned)hp.port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG};
    struct addrinfo *res = NULL;
    int g = getaddrinfo(hp.host, port, &hints, &res);
    if (g != 0)
        return client_fail(c, PB_ECONNECT, "cannot resolve \"%s\": %s", hp.host,
                           g == EAI_SYSTEM ? strerror(errno) : gai_strerror(g));
    int last = -ECONNREFUSED;
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = connect_one(ai, deadline);
        if (fd >= 0) {
            c->fd = fd;
            freeaddrinfo(res);
            return c->opts.tls ? client_tls_start(c, hp.host, deadline) : 0;
        }
        last = fd;
        if (fd == -ETIMEDOUT)
            break;
    }
    freeaddrinfo(res);
    if (last == -ETIMEDOUT)
        return client_fail(c, PB_ETIMEDOUT, "connecting to %s: no answer within %u ms", address,
                           c->opts.connect_timeout_ms);
    return client_fail(c, PB_ECONNECT, "cannot connect to %s: %s", address, strerror(-last));
}

/* --- socket I/O ------------------------------------------------------------ */

int client_poll(pb_client *c, bool want_write, int64_t deadline)
{
    if (client_tls_pending(c))
        return POLLIN; /* decrypted already: the socket may stay quiet */
    struct pollfd p = {.fd = c->fd, .events = POLLIN | (want_write ? POLLOUT : 0)};
    for (;;) {
        int wait = -1;
        if (deadline >= 0) {
            int64_t left = deadline - client_now_ms();
            if (left < 0)
                left = 0;
            wait = (int)(left > 60000 ? 60000 : left);
        }
        int n = poll(&p, 1, wait);
        if (n > 0)
            return p.revents;
        if (n < 0 && errno != EINTR)
            return -errno;
        if (n == 0 && deadline >= 0 && client_now_ms() >= deadline)
            return 0;
    }
}

int client_read(pb_client *c)
{
    if (c->sticky)
        return c->sticky;
    /* Compact: the views of frames already consumed are dead now. */
    if (c->rstart > 0) {
        memmove(c->rbuf, c->rbuf + c->rstart, c->rend - c->rstart);
        c->rend -= c->rstart;
        c->rstart = 0;
    }
    if (c->rend == c->rcap) {
        /* A frame larger than the buffer: client_next_frame grew need; grow
         * by doubling up to the frame limit checked from its prefix. */
        if (grow_reserve(&c->rbuf, &c->rcap, c->rcap + 1, 1) < 0)
            return client_die(c, PB_ENOMEM, "out of memory for the receive buffer");
    }
    for (;;) {
        ssize_t n = c->ssl ? client_tls_recv(c, c->rbuf + c->rend, c->rcap - c->rend)
                           : recv(c->fd, c->rbuf + c->rend, c->rcap - c->rend, 0);
        if (n > 0) {
            c->rend += (size_t)n;
            return (int)(n > INT32_MAX ? INT32_MAX : n);
        }
        if (n == 0)
            return client_die(c, PB_ECLOSED, "%s closed the connection", c->address);
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        int e = errno;
        return client_die(c, -e, "reading from %s: %s", c->address, strerror(e));
    }
}

int client_next_frame(pb_client *c, frame_view *f)
{
    if (c->sticky)
        return c->sticky;
    frame_split s;
    char err[200];
    int rc = frame_split_next(c->rbuf + c->rstart, c->rend - c->rstart, c->recv_max, &s, err,
                              sizeof(err));
    if (rc == PB_EINCOMPLETE) {
        /* Make room for the whole frame once, so the next read can finish it. */
        if (s.need > 0 && c->rcap < s.need && grow_reserve(&c->rbuf, &c->rcap, s.need, 1) < 0)
            return client_die(c, PB_ENOMEM, "out of memory for a %zu-byte frame", s.need);
        return 0;
    }
    if (rc < 0)
        return client_die(c, rc, "bad frame from %s: %s", c->address, err);
    rc = frame_parse(s.body.p, s.body.len, f, err, sizeof(err));
    if (rc < 0)
        return client_die(c, rc, "bad frame from %s: %s", c->address, err);
    c->rstart += s.used;
    return 1;
}

static char *dup_or_empty(const char *s, char **slot)
{
    char *d = strdup(s ? s : "");
    if (!d)
        return NULL;
    free(*slot);
    *slot = d;
    return d;
}

int client_take_error(pb_client *c, const frame_view *f)
{
    Protobus__Error *e = protobus__error__unpack(NULL, f->body.len, f->body.p);
    if (!e)
        return client_die(c, PB_EPROTO, "bad Error frame from %s", c->address);
    int rc = 0;
    if (!dup_or_empty(e->message, &c->serr_message) ||
        !dup_or_empty(e->partition, &c->serr_partition)) {
        rc = client_die(c, PB_ENOMEM, "out of memory for a server error");
        goto out;
    }
    memset(&c->serr, 0, sizeof(c->serr));
    c->serr.code = (int)e->code;
    c->serr.message = c->serr_message;
    c->serr.frame_id = f->id;
    c->serr.partition = c->serr_partition;
    c->serr.first_offset = e->first_offset;
    c->serr.last_offset = e->last_offset;
    c->serr.about_event = e->event_index_plus_one != 0;
    c->serr.event_in_batch = e->event_index_plus_one ? e->event_index_plus_one - 1 : 0;
    const Protobus__ExpectLast *want = e->expected, *have = e->actual;
    if (!dup_or_empty(want ? want->topic : have ? have->topic : NULL, &c->serr_expect_topic)) {
        rc = client_die(c, PB_ENOMEM, "out of memory for a server error");
        goto out;
    }
    c->serr.expect_topic = c->serr_expect_topic;
    c->serr.has_expect = want != NULL;
    c->serr.expected_none = want && want->none;
    c->serr.expected_offset = want ? want->offset : 0;
    c->serr.actual_none = have && have->none;
    c->serr.actual_offset = have ? have->offset : 0;
    client_fail(c, PB_ESERVER, "server error %s: %s", pb_code_name(c->serr.code), c->serr_message);
out:
    protobus__error__free_unpacked(e, NULL);
    return rc;
}

/* While a write waits for room: reads what the server sent meanwhile. With
 * on_frame, complete frames go to it at once; without, they stay buffered
 * for the caller, and more than one frame's worth is a protocol error (the
 * server answers a Hello or a Subscribe only after reading all of it). 0 or
 * a sticky error. */
static int read_while_writing(pb_client *c, client_frame_fn on_frame)
{
    int r = client_read(c);
    if (r < 0)
        return r;
    if (!on_frame) {
        if (c->rend - c->rstart > c->recv_max + CLIENT_FRAME_PREFIX_MAX)
            return client_die(c, PB_EPROTO, "%s sent %zu bytes before reading our request",
                              c->address, c->rend - c->rstart);
        return 0;
    }
    frame_view f;
    while ((r = client_next_frame(c, &f)) == 1) {
        r = on_frame(c, &f);
        if (r < 0)
            return r;
    }
    return r < 0 ? r : 0;
}

int client_write_all(pb_client *c, int64_t deadline, client_frame_fn on_frame)
{
    while (c->ooff < c->olen) {
        if (c->sticky)
            return c->sticky;
        ssize_t n = c->ssl ? client_tls_send(c, c->obuf + c->ooff, c->olen - c->ooff)
                           : send(c->fd, c->obuf + c->ooff, c->olen - c->ooff, MSG_NOSIGNAL);
        if (n > 0) {
            c->ooff += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            int e = errno;
            if (e == EPIPE || e == ECONNRESET)
                return client_die(c, PB_ECLOSED, "%s closed the connection (%s)", c->address,
                                  strerror(e));
            return client_die(c, -e, "writing to %s: %s", c->address, strerror(e));
        }
        /* The socket is full: read what the server says meanwhile, so it is
         * never stuck writing acks to us while we wait for it to read. */
        int ev = client_poll(c, true, deadline);
        if (ev < 0)
            return client_die(c, ev, "waiting on %s: %s", c->address, strerror(-ev));
        if (ev == 0)
            return client_die(c, PB_ETIMEDOUT, "%s accepted no data for %u ms", c->address,
                              c->opts.io_timeout_ms);
        if (ev & (POLLIN | POLLHUP | POLLERR)) {
            int r = read_while_writing(c, on_frame);
            if (r < 0)
                return r;
        }
    }
    c->olen = c->ooff = 0;
    return 0;
}

/* --- Hello ------------------------------------------------------------------ */

static int take_hello(pb_client *c, const frame_view *f)
{
    Protobus__Hello *h = protobus__hello__unpack(NULL, f->body.len, f->body.p);
    if (!h)
        return client_die(c, PB_EPROTO, "bad Hello from %s", c->address);
    int rc = 0;
    if (h->protocol_version != PB_PROTOCOL_VERSION) {
        rc = client_die(c, PB_EPROTO, "%s speaks protocol version %u, this library %u", c->address,
                        h->protocol_version, PB_PROTOCOL_VERSION);
        goto out;
    }
    if (!dup_or_empty(h->name, &c->server_name)) {
        rc = client_die(c, PB_ENOMEM, "out of memory");
        goto out;
    }
    c->max_frame_bytes = h->max_frame_bytes;
    c->max_event_bytes = h->max_event_bytes;
    c->max_batch_events = h->limits ? h->limits->max_batch_events : 0;
    /* Event frames carry one stored event plus a small header; accept what
     * the server may legitimately send us. */
    uint64_t m = c->max_frame_bytes;
    if (c->max_event_bytes && c->max_event_bytes + 4096 > m)
        m = c->max_event_bytes + 4096;
    c->recv_max = (c->max_frame_bytes || c->max_event_bytes) ? m : RECV_MAX_NO_LIMIT;
    if (c->recv_max < CLIENT_DEFAULT_FRAME_MAX)
        c->recv_max = CLIENT_DEFAULT_FRAME_MAX;
out:
    protobus__hello__free_unpacked(h, NULL);
    return rc;
}

static int hello(pb_client *c, int64_t deadline)
{
    frame_hello h = {.protocol_version = PB_PROTOCOL_VERSION,
                     .name = c->name,
                     .user = c->opts.user,
                     .password = c->opts.password};
    uint64_t id = c->next_id++;
    size_t need = frame_put_hello(NULL, 0, id, &h);
    if (grow_reserve(&c->obuf, &c->ocap, need, 1) < 0)
        return client_die(c, PB_ENOMEM, "out of memory");
    c->olen = frame_put_hello(c->obuf, c->ocap, id, &h);
    c->ooff = 0;
    /* Nothing can arrive but the Hello answer, after the server read it all. */
    int rc = client_write_all(c, deadline, NULL);
    /* The credentials were the caller's for this call only; the buffer
     * held the password: wipe it. */
    c->opts.user = c->opts.password = NULL;
    memset(c->obuf, 0, need);
    if (rc < 0)
        return rc;
    for (;;) {
        frame_view f;
        rc = client_next_frame(c, &f);
        if (rc < 0)
            return rc;
        if (rc == 1) {
            if (f.kind == FRAME_HELLO)
                return take_hello(c, &f);
            if (f.kind == FRAME_ERROR) {
                rc = client_take_error(c, &f);
                if (rc < 0)
                    return rc;
                return client_die(c, PB_ESERVER, "%s refused the connection: %s %s", c->address,
                                  pb_code_name(c->serr.code), c->serr.message);
            }
            return client_die(c, PB_EPROTO, "%s answered Hello with a %s frame", c->address,
                              frame_kind_name(f.kind));
        }
        int ev = client_poll(c, false, deadline);
        if (ev < 0)
            return client_die(c, ev, "waiting on %s: %s", c->address, strerror(-ev));
        if (ev == 0)
            return client_die(c, PB_ETIMEDOUT, "no Hello from %s within %u ms", c->address,
                              c->opts.connect_timeout_ms);
        rc = client_read(c);
        if (rc < 0) {
            if (rc == PB_ECLOSED)
                client_fail(c, rc, "%s closed the connection before its Hello", c->address);
            return rc;
        }
    }
}

int client_connect(pb_client *c, const char *address, int64_t deadline)
{
    int rc = connect_address(c, address, deadline);
    return rc < 0 ? rc : hello(c, deadline);
}
