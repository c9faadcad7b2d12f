/*
 * follower - a hot standby's replication thread (follower.h): the
 * session (connection in follower_conn.c), its handshake and subscription,
 * then the primary's frames: records checked and gathered
 * (follower_batch.c) into batches for the partition writers, one with them
 * while the next is read (follower_write.c).
 */
#include "follower_internal.h"

#include "event.h"
#include "frame.h"
#include "recrun.h"
#include "logging.h"
#include "metrics.h"
#include "pb_errors.h"
#include "protobus.pb-c.h"
#include "protobus_version.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
/* Each of the two read buffers (one with the writers, one being read
 * into): what one batch holds at most, unless a frame is larger. 8 MiB
 * was tried (2026-12-05, tests/bench/NOTES.md "Hot standby": every
 * standby take was one 1 MiB buffer while two thirds of the synchronous
 * window waited for it): faster at load 2-4, slower in both modes at load
 * 10-12; kept at 1 MiB. */
#define READ_BUF_INITIAL (1u << 20)
/* How often on_input looks whether the writers are done (a syscall and a
 * lock: every 256 frames of ~150 bytes is about every 40 us of parsing). */
#define DONE_CHECK_FRAMES 256
/* Silence from the primary this long: a Ping; twice as long: reconnect
 * (a primary whose host vanished sends no FIN). */
#define QUIET_PING_MS 10000

/* Packs a Frame with a length prefix and sends it. */
static int send_frame(follower *f, Protobus__Frame *fr)
{
    size_t body = protobus__frame__get_packed_size(fr);
    uint8_t *buf = malloc(body + 10);
    if (!buf)
        return PB_ENOMEM;
    size_t pre = frame_put_delimiter(buf, 10, body);
    protobus__frame__pack(fr, buf + pre);
    int rc = follower_send(f, buf, pre + body);
    free(buf);
    return rc;
}

int follower_send_ack(follower *f, Protobus__PartitionOffset *po, size_t n)
{
    if (n == 0)
        return 0;
    Protobus__PartitionOffset **pp = calloc(n, sizeof *pp);
    if (!pp)
        return PB_ENOMEM;
    for (size_t i = 0; i < n; i++)
        pp[i] = &po[i];
    Protobus__ReplicaAck ack = PROTOBUS__REPLICA_ACK__INIT;
    ack.n_durable = n;
    ack.durable = pp;
    Protobus__Frame fr = PROTOBUS__FRAME__INIT;
    fr.body_case = PROTOBUS__FRAME__BODY_REPLICA_ACK;
    fr.replica_ack = &ack;
    int rc = send_frame(f, &fr);
    free(pp);
    return rc;
}

/* Hello, then Subscribe(replicate) from every local partition's last
 * record (its next offset - 1: the overlap compared on arrival). */
static int send_hello_subscribe(follower *f)
{
    Protobus__Hello h = PROTOBUS__HELLO__INIT;
    h.protocol_version = PB_PROTOCOL_VERSION;
    h.name = (char *)"protobusd standby";
    h.max_frame_bytes = f->o.max_frame_bytes;
    h.user = (char *)(f->o.user ? f->o.user : "");
    h.password = f->password ? f->password : (char *)"";
    Protobus__Frame fr = PROTOBUS__FRAME__INIT;
    fr.id = 1;
    fr.body_case = PROTOBUS__FRAME__BODY_HELLO;
    fr.hello = &h;
    int rc = send_frame(f, &fr);
    if (rc < 0)
        return rc;
    if ((rc = follower_load_parts(f)) < 0)
        return rc;
    Protobus__PartitionOffset *po = calloc(f->nparts + 1, sizeof *po);
    Protobus__PartitionOffset **pp = calloc(f->nparts + 1, sizeof *pp);
    if (!po || !pp) {
        free(po);
        free(pp);
        return PB_ENOMEM;
    }
    size_t n = 0;
    for (size_t i = 0; i < f->nparts; i++) {
        protobus__partition_offset__init(&po[n]);
        po[n].partition = f->parts[i].name;
        po[n].offset = f->parts[i].next > 0 ? f->parts[i].next - 1 : 0;
        pp[n] = &po[n];
        n++;
    }
    Protobus__Subscribe s = PROTOBUS__SUBSCRIBE__INIT;
    s.replicate = true;
    s.replicate_records = true; /* live records as runs (FORMAT.md 4.11) */
    s.start = PROTOBUS__START_MODE__START_OFFSETS;
    s.n_offsets = n;
    s.offsets = pp;
    fr.id = 2;
    fr.body_case = PROTOBUS__FRAME__BODY_SUBSCRIBE;
    fr.subscribe = &s;
    rc = send_frame(f, &fr);
    free(po);
    free(pp);
    return rc;
}

/* An Error ending the session, in words that say what to change. */
static void refusal(const follower *f, const Protobus__Error *e, char *why, size_t n)
{
    const char *msg = e->message && e->message[0] ? e->message : "(no message)";
    const char *code = pb_code_name((int)e->code);
    if (e->code == PROTOBUS__CODE__UNAUTHENTICATED && f->o.user)
        snprintf(why, n,
                 "the primary refused this standby's credentials as user \"%s\" (%s: %s); "
                 "check follow_user and follow_password (or follow_password_file)",
                 f->o.user, code, msg);
    else if (e->code == PROTOBUS__CODE__UNAUTHENTICATED)
        snprintf(why, n,
                 "the primary requires authentication (%s: %s); set follow_user and "
                 "follow_password (or follow_password_file), or follow_tls_cert for a "
                 "certificate it accepts",
                 code, msg);
    else
        snprintf(why, n, "the primary answered %s: %s", code, msg);
}

/* Frames other than Event: the handshake's answers, Subscribed, CaughtUp,
 * notices and errors. 0 to go on, or a negative code ending the session
 * (why says it). */
static int on_control(follower *f, const frame_view *v, char *why, size_t n)
{
    if (v->kind == FRAME_HELLO || v->kind == FRAME_PONG || v->kind == FRAME_PING)
        return 0;
    if (v->kind == FRAME_CAUGHT_UP) {
        logging_printf(LOG_INFO, "standby of %s: caught up with the primary", f->o.primary);
        return 0;
    }
    if (v->kind == FRAME_SUBSCRIBED) {
        Protobus__Subscribed *s = protobus__subscribed__unpack(NULL, v->body.len, v->body.p);
        if (!s) {
            snprintf(why, n, "malformed Subscribed frame from the primary");
            return PB_EPROTO;
        }
        for (size_t i = 0; i < s->n_partitions; i++)
            follower_check_position(f, s->partitions[i]->partition, s->partitions[i]->first_offset,
                                    s->partitions[i]->end_offset);
        logging_printf(LOG_INFO, "standby of %s: replicating, %zu partitions on the primary",
                       f->o.primary, s->n_partitions);
        f->backoff_ms = BACKOFF_MIN_MS; /* a working session resets the backoff */
        protobus__subscribed__free_unpacked(s, NULL);
        return 0;
    }
    if (v->kind == FRAME_ERROR) {
        Protobus__Error *e = protobus__error__unpack(NULL, v->body.len, v->body.p);
        if (!e) {
            snprintf(why, n, "malformed Error frame from the primary");
            return PB_EPROTO;
        }
        int rc = 0;
        if (v->id == 2 &&
            (e->code == PROTOBUS__CODE__DATA_LOSS || e->code == PROTOBUS__CODE__OUT_OF_RANGE)) {
            follower_stop_part(f, e->partition, "the primary reports offsets it cannot send: %s",
                               e->message);
        } else {
            refusal(f, e, why, n);
            rc = PB_ESERVER;
        }
        protobus__error__free_unpacked(e, NULL);
        return rc;
    }
    snprintf(why, n, "unexpected %s frame from the primary", frame_kind_name(v->kind));
    return PB_EPROTO;
}

/* Splits buf[pos..len) into frames: events go into the batch, the rest is
 * handled here; pos moves past each whole frame. Every DONE_CHECK_FRAMES
 * frames, a batch the writers have finished is acknowledged and the
 * records gathered so far go to them at once (the unparsed rest moves to
 * the other buffer): one read can hold a whole buffer's frames, and the
 * writers (and the primary's publishers, in the synchronous mode) would
 * otherwise wait for all of them to be parsed. */
static int on_input(follower *f, char *why, size_t n)
{
    int rc = 0;
    unsigned frames = 0;
    f->need = 0;
    while (rc == 0 && f->pos < f->len) {
        if (++frames % DONE_CHECK_FRAMES == 0 && follower_batch_done(f)) {
            rc = follower_batch_finish(f, why, n);
            if (rc == 0)
                rc = follower_batch_submit(f, why, n);
            if (rc < 0)
                break;
        }
        frame_split sp;
        /* A Records frame may be larger than the largest event's frame. */
        rc = frame_split_next(f->buf + f->pos, f->len - f->pos,
                              recrun_frame_max(f->o.max_frame_bytes), &sp, why, n);
        if (rc == PB_EINCOMPLETE) {
            f->need = sp.need;
            return 0;
        }
        if (rc < 0)
            break;
        frame_view v;
        if ((rc = frame_parse(sp.body.p, sp.body.len, &v, why, n)) < 0)
            break;
        f->got_frame = true;
        if (v.kind == FRAME_EVENT)
            rc = follower_on_event(f, v.body.p, v.body.len, why, n);
        else if (v.kind == FRAME_RECORDS)
            rc = follower_on_records(f, v.body.p, v.body.len, why, n);
        else
            rc = on_control(f, &v, why, n);
        f->pos += sp.used;
    }
    return rc;
}

/* Room to read into: the parsed bytes are dropped once no record of the
 * batch being gathered points into them, and the buffer grows for a frame
 * larger than it. false: full until the batch is submitted. */
static bool make_room(follower *f)
{
    if (f->nrecs > 0)
        return f->len < f->cap;
    if (f->pos > 0) {
        /* (Not at pos 0: a frame read in several pieces would be moved
         * onto itself at every piece.) */
        memmove(f->buf, f->buf + f->pos, f->len - f->pos);
        f->len -= f->pos;
        f->pos = 0;
    }
    if (f->need > f->cap && follower_grow(f, f->need) < 0)
        return false;
    return f->len < f->cap;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* After a second of silence: a Ping at QUIET_PING_MS, and PB_ETIMEDOUT
 * (why set) at twice that. */
static int check_quiet(follower *f, uint64_t last_rx, bool *pinged, char *why, size_t n)
{
    uint64_t quiet = mono_ms() - last_rx;
    if (quiet >= 2 * QUIET_PING_MS) {
        snprintf(why, n, "nothing from the primary for %llu ms, not even a Pong",
                 (unsigned long long)quiet);
        return PB_ETIMEDOUT;
    }
    if (quiet >= QUIET_PING_MS && !*pinged) {
        uint8_t ping[16];
        *pinged = true;
        return follower_send(f, ping, frame_put_ping(ping, sizeof ping, 3));
    }
    return 0;
}

/* Waits up to ms for the primary's bytes (when room), the writers (when a
 * batch is with them), or the stop eventfd. A mask of WAKE_*, or
 * PB_ECLOSED stopping. */
#define WAKE_READ  1
#define WAKE_WRITE 2
static int wait_session(follower *f, bool room, int ms)
{
    if (room && follower_recv_pending(f))
        return WAKE_READ;
    struct pollfd pf[3] = {{.fd = f->stop_fd, .events = POLLIN},
                           {.fd = room ? f->fd : -1, .events = POLLIN},
                           {.fd = f->fl.active ? f->done_fd : -1, .events = POLLIN}};
    int k = poll(pf, 3, ms);
    if (atomic_load(&f->stopping) || (k > 0 && (pf[0].revents & POLLIN)))
        return PB_ECLOSED;
    if (k <= 0)
        return 0;
    return (pf[1].revents ? WAKE_READ : 0) | (pf[2].revents ? WAKE_WRITE : 0);
}

/* Reads and handles what the primary sends until the session ends (or
 * the follower stops): rc and why say how. A batch is with the writers
 * while the next is read (follower_write.c). */
static int session_loop(follower *f, char *why, size_t n)
{
    uint64_t last_rx = mono_ms();
    bool pinged = false;
    int rc = 0;
    f->len = f->pos = f->need = 0;
    while (rc == 0) {
        if (follower_batch_done(f))
            rc = follower_batch_finish(f, why, n);
        if (rc == 0)
            rc = follower_batch_submit(f, why, n);
        if (rc < 0)
            break;
        bool room = make_room(f);
        int w = wait_session(f, room, 1000);
        if (w < 0)
            return w;
        if (w == 0 && room) {
            rc = check_quiet(f, last_rx, &pinged, why, n);
            continue;
        }
        if (!(w & WAKE_READ))
            continue;
        long r = follower_recv(f, f->buf + f->len, f->cap - f->len, why, n);
        if (r < 0) {
            if (!f->got_frame && !f->tls)
                snprintf(why + strlen(why), n - strlen(why),
                         " before answering the Hello (does the primary require TLS? then set "
                         "follow_tls = yes)");
            return (int)r;
        }
        if (r == 0)
            continue;
        f->len += (size_t)r;
        last_rx = mono_ms();
        pinged = false;
        rc = on_input(f, why, n);
    }
    return rc;
}

/* One connection: handshake, subscription, records until it breaks. */
static void session(follower *f)
{
    char why[512] = "";
    int rc = follower_connect(f, why, sizeof why);
    if (rc < 0) {
        if (!f->down_logged && !atomic_load(&f->stopping))
            logging_printf(LOG_WARN, "standby of %s: %s; retrying (backoff %u ms doubling to %u)",
                           f->o.primary, why, (unsigned)f->backoff_ms, BACKOFF_MAX_MS);
        f->down_logged = true;
        return;
    }
    f->down_logged = false;
    f->got_frame = false;
    metrics_follower_connected(1);
    logging_printf(LOG_INFO, "standby of %s: connected%s", f->o.primary, f->tls ? " (TLS)" : "");
    rc = send_hello_subscribe(f);
    if (rc == 0)
        rc = session_loop(f, why, sizeof why);
    /* The writers may still hold a batch (its buffer): wait for them, stop
     * the partitions they failed; the ack may or may not reach the primary. */
    char ignored[200] = "";
    (void)follower_batch_finish(f, ignored, sizeof ignored);
    f->nrecs = 0;
    if (!atomic_load(&f->stopping))
        logging_printf(LOG_WARN, "standby of %s: disconnected: %s; reconnecting in %u ms",
                       f->o.primary, why[0] ? why : pb_strerror(rc), (unsigned)f->backoff_ms);
    follower_disconnect(f);
    metrics_follower_connected(0);
}

static void *follower_main(void *arg)
{
    follower *f = arg;
    f->backoff_ms = BACKOFF_MIN_MS;
    while (!atomic_load(&f->stopping)) {
        session(f);
        if (follower_wait_fd(f, -1, 0, (int)f->backoff_ms) < 0)
            break;
        f->backoff_ms = f->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : f->backoff_ms * 2;
    }
    return NULL;
}

int follower_start(follower **out, const follower_options *o, char *err, size_t errlen)
{
    *out = NULL;
    follower *f = calloc(1, sizeof *f);
    if (!f)
        return PB_ENOMEM;
    f->o = *o;
    f->fd = -1;
    f->stop_fd = -1;
    f->done_fd = -1;
    char why[400];
    if (hostport_parse(o->primary, 0, &f->hp, why, sizeof why) < 0) {
        snprintf(err, errlen, "follow: %s", why);
        free(f);
        return PB_EINVAL;
    }
    int rc = follower_conn_setup(f, err, errlen);
    if (rc < 0) {
        follower_conn_teardown(f);
        free(f);
        return rc;
    }
    rc = PB_ENOMEM;
    f->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (f->stop_fd < 0 || follower_batch_init(f) < 0 || follower_grow(f, READ_BUF_INITIAL) < 0)
        goto fail;
    if ((rc = pthread_create(&f->thread, NULL, follower_main, f)) != 0) {
        snprintf(err, errlen, "follow: cannot start the standby thread: %s", strerror(rc));
        rc = -rc;
        goto fail;
    }
    *out = f;
    return 0;
fail:
    if (f->stop_fd >= 0)
        close(f->stop_fd);
    follower_conn_teardown(f);
    follower_batch_free(f);
    free(f->buf);
    free(f);
    return rc;
}

void follower_stop(follower *f)
{
    if (!f)
        return;
    atomic_store(&f->stopping, true);
    uint64_t one = 1;
    if (write(f->stop_fd, &one, sizeof one) < 0)
        logging_printf(LOG_WARN, "standby: cannot wake the replication thread: %s",
                       strerror(errno));
    pthread_join(f->thread, NULL);
    close(f->stop_fd);
    follower_conn_teardown(f);
    follower_batch_free(f);
    free(f->buf);
    free(f);
}
