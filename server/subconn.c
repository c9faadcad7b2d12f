/*
 * subconn - a subscription's connection (see subconn.h): the output buffer
 * and its writes under the write deadline, and what the client sends on a
 * subscribed connection, read and answered as it comes.
 *
 * Threads: the subscription's pool thread. Writes never block: MSG_DONTWAIT
 * plus poll with the write deadline, also watching wake_fd, so the
 * registry can always wake the thread.
 */
#include "subconn.h"

#include "tls.h"

#include "iov.h"
#include "logging.h"
#include "pb_errors.h"
#include "record.h"
#include "recrun.h"
#include "protobus.pb-c.h"
#include "session.h"
#include "standby.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define OUT_CAP (256u * 1024u) /* frames are written in chunks of up to this */
/* The output buffer's first size: a live wake-up's Events (a take's ~20
 * records of a few hundred bytes) fit; a replay doubles it up to OUT_CAP.
 * The buffer lives only while the thread is awake (subconn_rest; unless it
 * grew: a busy subscription keeps it): with
 * 1,000 sleeping subscriptions, 256 KiB buffers with two touched pages each
 * were 8 MB of the daemon's RSS. */
#define OUT_FIRST (8u * 1024u)
/* A Records frame (subconn_records, subconn_record) takes further runs or
 * records up to this size (a larger record alone): the standby takes a
 * frame's records once it has the whole frame, and moves a partial one to
 * its other buffer at each submit. With 64 KiB frames instead of 256 KiB
 * the synchronous rate was higher in two rounds of 8 alternating runs at
 * load 5-6 (median 1.08M and 0.92M events/s against 0.89M and 0.86M), the
 * CPU the same; 32 KiB was not better than 64. */
#define RUNS_FRAME_BYTES (64u * 1024u)
/* One recv of what the client sends, on the subscription thread's stack:
 * at 4 KiB it took every subscription thread's stack a page deeper (three
 * touched pages instead of two: 4 MiB more RSS with 1,000 subscriptions).
 * Subscribers send little (Pings, acks; a standby's ReplicaAcks). */
#define INPUT_CHUNK    1024u
#define INPUT_PER_TURN (64u * 1024u) /* then deliveries go on */
/* A replication subscription reads the follower's frames whole: a
 * ReplicaAck names every partition a batch touched (~110 bytes each). */
#define REPLICA_FRAME_MAX (1u << 20)

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int subconn_open(subconn *c)
{
    c->out = NULL; /* allocated by the first frame (out_reserve) */
    c->out_len = c->out_cap = c->out_owed = 0;
    c->fast_room = false; /* the fast path polls before its first send */
    frame_scan_init(&c->scan, c->max_frame_bytes);
    return 0;
}

/* Room in the output buffer for out_len + need bytes (need <= OUT_CAP -
 * out_len), growing it by doubling. 0 or PB_ENOMEM (why set). */
static int out_grow(subconn *c, size_t need)
{
    size_t want = c->out_len + need;
    if (want <= c->out_cap)
        return 0;
    size_t cap = c->out_cap ? c->out_cap : OUT_FIRST;
    while (cap < want && cap < OUT_CAP)
        cap *= 2;
    if (cap < want)
        cap = want;
    uint8_t *b = realloc(c->out, cap);
    if (!b) {
        snprintf(c->why, c->why_len, "out of memory for a %zu-byte output buffer", cap);
        return PB_ENOMEM;
    }
    c->out = b;
    c->out_cap = cap;
    return 0;
}

/* Fills in the open Records frame's lengths: the frame is then whole. */
static void run_close(subconn *c)
{
    if (!c->run_open)
        return;
    c->run_open = false;
    size_t records = c->out_len - c->run_at - c->run_hdr;
    recrun_set_length(c->out + c->run_at, c->run_hdr, c->frame_id, records);
}

/* Room for a frame of need bytes after what is queued (an open run is
 * closed first: nothing may go inside it). */
static int out_reserve(subconn *c, size_t need)
{
    run_close(c);
    return out_grow(c, need);
}

int subconn_ready(subconn *c)
{
    return c->out ? 0 : out_reserve(c, OUT_FIRST);
}

void subconn_rest(subconn *c)
{
    /* A buffer that grew past its first size belongs to a busy
     * subscription (the standby's replication, a heavy reader): freed at
     * every rest it would be mapped, faulted in and copied while doubling
     * again at every wake-up. Kept, it costs what every subscription's
     * buffer cost before buffers were given back at rest. */
    /* Nor while the client keeps talking (Pings, or a flood of Publishes
     * to refuse): a buffer given back after each answer would be taken
     * again for the next, malloc and free per frame. */
    bool talking = c->input_woke;
    c->input_woke = false;
    if (c->out_len || c->out_cap > OUT_FIRST || talking)
        return;
    free(c->out);
    c->out = NULL;
    c->out_cap = 0;
}

void subconn_close(subconn *c)
{
    /* The standby is gone: what it said is not carried over to the next
     * one (which may hold less, e.g. a rebuilt copy). */
    if (c->replicate && c->standby)
        standby_reset(c->standby);
    free(c->out);
    free(c->input);
    free(c->rin);
    c->rin = NULL;
    c->out = NULL;
    c->out_len = c->out_cap = c->out_owed = 0;
    c->input = NULL;
    c->input_len = 0;
}

bool subconn_stopping(const subconn *c)
{
    return atomic_load_explicit(c->stop, memory_order_relaxed);
}

void subconn_drain_wake(subconn *c)
{
    uint64_t v;
    /* Non-blocking; EAGAIN just means nothing was pending. */
    if (read(c->wake_fd, &v, sizeof v) < 0 && errno != EAGAIN && errno != EINTR)
        logging_printf(LOG_WARN, "subscriber %s: reading its eventfd: %s", c->peer,
                       strerror(errno));
}

/* ------------------------------------------------------------------ */
/* output */

/* Writes iov completely. The socket is used with MSG_DONTWAIT whatever its
 * flags (it is a dup of the loop's non-blocking socket), waiting in poll
 * for room; write_deadline_ms without any progress drops the subscriber. */
static int send_raw_(subconn *c, struct iovec *iov, int cnt, bool *sent);

static int send_raw(subconn *c, struct iovec *iov, int cnt)
{
    bool sent = false;
    c->fast_room = false; /* the thread may fill the socket: the fast path polls first */
    int rc = send_raw_(c, iov, cnt, &sent);
    if (rc < 0 && sent)
        c->torn = true; /* iov ends at a frame's end: part of one went out */
    return rc;
}

static int send_raw_(subconn *c, struct iovec *iov, int cnt, bool *sent)
{
    uint32_t deadline_ms = c->write_deadline_ms;
    int64_t last_progress = mono_ms();
    while (cnt > 0) {
        if (iov->iov_len == 0) {
            iov++;
            cnt--;
            continue;
        }
        if (subconn_stopping(c))
            return PB_ECLOSED;
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
        ssize_t n = sendmsg(c->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0) {
            *sent = *sent || n > 0;
            cnt = (int)iov_consume(&iov, (size_t)cnt, (size_t)n);
            last_progress = mono_ms();
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN || errno == ESHUTDOWN)
            return PB_ECLOSED;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            snprintf(c->why, c->why_len, "writing to the subscriber: %s", strerror(errno));
            return -errno;
        }
        int64_t wait_ms = (int64_t)deadline_ms - (mono_ms() - last_progress);
        if (wait_ms <= 0) {
            logging_printf(LOG_WARN, "subscriber %s dropped: no progress for %" PRIu32 " ms",
                           c->peer, deadline_ms);
            return PB_ETIMEDOUT;
        }
        struct pollfd pf[2] = {{c->fd, POLLOUT, 0}, {c->wake_fd, POLLIN, 0}};
        int pr = poll(pf, 2, (int)wait_ms);
        if (pr < 0 && errno != EINTR)
            return -errno;
        /* A writer's wake-up; the queue is looked at before the thread
         * sleeps anyway, so it can be consumed here. */
        if (pr > 0 && (pf[1].revents & POLLIN))
            subconn_drain_wake(c);
    }
    return 0;
}

static int scan_input(subconn *c, const uint8_t *p, size_t n);

/* Sends the ciphertext a TLS session has waiting. */
static int send_sealed(subconn *c)
{
    uint8_t chunk[16384];
    size_t n;
    while ((n = tls_out_take(c->tls, chunk, sizeof chunk)) > 0) {
        struct iovec v = {chunk, n};
        int rc = send_raw(c, &v, 1);
        if (rc < 0) {
            c->torn = true; /* the chunk left the session: TLS records lost */
            return rc;
        }
    }
    return 0;
}

/* Writes iov completely: as it is, or sealed by the connection's TLS. */
static int send_all(subconn *c, struct iovec *iov, int cnt)
{
    if (!c->tls)
        return send_raw(c, iov, cnt);
    for (int i = 0; i < cnt; i++) {
        if (tls_write(c->tls, iov[i].iov_base, iov[i].iov_len) < 0) {
            snprintf(c->why, c->why_len, "writing to the subscriber: %s", tls_error(c->tls));
            return PB_ECLOSED;
        }
        if (tls_out_pending(c->tls) >= 65536) {
            int rc = send_sealed(c);
            if (rc < 0)
                return rc;
        }
    }
    return send_sealed(c);
}

/* What recv brought, opened by the connection's TLS, to scan_input. */
static int scan_sealed(subconn *c, const uint8_t *p, size_t n)
{
    if (tls_feed(c->tls, p, n) < 0)
        return PB_ECLOSED;
    for (;;) {
        uint8_t plain[16384];
        long got = tls_read(c->tls, plain, sizeof plain);
        if (got == 0)
            break;
        if (got < 0)
            return PB_ECLOSED;
        int rc = scan_input(c, plain, (size_t)got);
        if (rc < 0)
            return rc;
    }
    /* Anything the session has to say (a key update) goes out now. */
    return tls_out_pending(c->tls) ? send_sealed(c) : 0;
}

int subconn_flush(subconn *c)
{
    run_close(c);
    if (c->out_len == 0)
        return 0;
    struct iovec v = {c->out, c->out_len};
    bool owed = c->out_owed > 0;
    c->out_len = 0;
    c->out_owed = 0;
    int rc = send_all(c, &v, 1);
    if (rc < 0 && owed)
        c->torn = true; /* a frame the fast path began is not finished */
    return rc;
}

/* Room for need more bytes: when the output is full, it is sent, and what
 * the client sent meanwhile is read (once per full buffer, so a long
 * replay still answers a Ping). */
static int make_room(subconn *c, size_t need)
{
    if (c->out_len + need > OUT_CAP) {
        int rc = subconn_flush(c);
        if (rc == 0)
            rc = subconn_read(c);
        if (rc < 0)
            return rc;
    }
    return out_reserve(c, need < OUT_CAP ? need : OUT_CAP);
}

int subconn_event(subconn *c, const char *partition, size_t partition_len, uint64_t offset,
                  const uint8_t *event, size_t len)
{
    size_t hmax = FRAME_EVENT_HEADER_MAX(partition_len);
    int rc = make_room(c, hmax + len);
    if (rc < 0)
        return rc;
    c->events_sent++;
    if (hmax + len > OUT_CAP) {
        /* Too big for the buffer (which make_room emptied, though the
         * client's answers may have been queued since): directly. */
        if (c->out_len && (rc = subconn_flush(c)) < 0)
            return rc;
        size_t h = frame_put_event_header_n(c->out, c->out_cap, c->frame_id, partition,
                                            partition_len, offset, len);
        struct iovec v[2] = {{c->out, h}, {(void *)event, len}};
        return send_all(c, v, 2);
    }
    c->out_len += frame_put_event_header_n(c->out + c->out_len, c->out_cap - c->out_len,
                                           c->frame_id, partition, partition_len, offset, len);
    memcpy(c->out + c->out_len, event, len);
    c->out_len += len;
    return 0;
}

/* Room for size more bytes of a run of partition's records from offset:
 * joins the open run when it is this partition's, continues at offset and
 * stays within RUNS_FRAME_BYTES, else closes it (make_room) and opens a
 * new one (hmax: the most its header takes). 0, or a negative code. */
static int run_reserve(subconn *c, const char *partition, size_t partition_len, uint64_t offset,
                       size_t hmax, size_t size)
{
    bool join = c->run_open && c->run_part == partition && c->run_part_len == partition_len &&
                c->run_next == offset && c->out_len + size <= OUT_CAP &&
                c->out_len - c->run_at + size <= RUNS_FRAME_BYTES;
    if (join)
        return out_grow(c, size);
    int rc = make_room(c, hmax + size); /* closes the run before */
    if (rc < 0)
        return rc;
    c->run_at = c->out_len;
    c->run_hdr = recrun_put_header(c->out + c->out_len, c->frame_id, partition, partition_len, 0);
    c->out_len += c->run_hdr;
    c->run_part = partition;
    c->run_part_len = partition_len;
    c->run_open = true;
    return 0;
}

int subconn_record(subconn *c, const char *partition, size_t partition_len, uint64_t offset,
                   int64_t time_ns, const uint8_t *event, size_t len, const uint32_t *crc)
{
    size_t size = PB_RECORD_HEADER_SIZE + len;
    size_t hmax = RECRUN_HEADER_MAX(partition_len);
    if (hmax + size > OUT_CAP || len > PB_RECORD_MAX_EVENT)
        return subconn_event(c, partition, partition_len, offset, event, len);
    int rc = run_reserve(c, partition, partition_len, offset, hmax, size);
    if (rc < 0)
        return rc;
    uint8_t *at = c->out + c->out_len;
    if (crc) {
        (void)record_encode_fields(at, offset, time_ns, len);
        pb_store_le32(at, *crc);
    } else {
        (void)record_encode_header(at, offset, time_ns, event, len, NULL, 0);
    }
    memcpy(at + PB_RECORD_HEADER_SIZE, event, len);
    c->out_len += size;
    c->run_next = offset + 1;
    c->events_sent++;
    return 0;
}

int subconn_records(subconn *c, const char *partition, size_t partition_len, uint64_t offset,
                    const uint8_t *records, size_t len, uint32_t count)
{
    size_t hmax = RECRUN_HEADER_MAX(partition_len);
    if (hmax + len > OUT_CAP) {
        snprintf(c->why, c->why_len,
                 "partition %.*s: a run of %zu bytes from offset %" PRIu64
                 " is over the output's %u",
                 (int)partition_len, partition, len, offset, OUT_CAP);
        return PB_EINVAL;
    }
    int rc = run_reserve(c, partition, partition_len, offset, hmax, len);
    if (rc < 0)
        return rc;
    memcpy(c->out + c->out_len, records, len);
    c->out_len += len;
    c->run_next = offset + count;
    c->events_sent += count;
    return 0;
}

int subconn_send_now(subconn *c, const uint8_t *buf, size_t len)
{
    size_t sent = 0;
    while (sent < len) {
        ssize_t n = send(c->fd, buf + sent, len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            sent += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        break; /* full, or an error: the thread's flush meets it again */
    }
    if (sent == len)
        return 0;
    /* The rest, partial frame first, waits for the thread: its output is
     * empty while it sleeps (it flushed before), so order is kept. */
    if (out_reserve(c, len - sent) < 0) {
        c->fast_error = PB_ENOMEM;
        return PB_ENOMEM;
    }
    memcpy(c->out + c->out_len, buf + sent, len - sent);
    c->out_len += len - sent;
    c->out_owed = c->out_len; /* a frame's tail first, then whole frames */
    return 1;
}

int subconn_error(subconn *c, uint64_t id, int code, const char *message, const char *partition,
                  uint64_t first_offset, uint64_t last_offset)
{
    frame_error e = {.code = code,
                     .message = message,
                     .partition = partition,
                     .first_offset = first_offset,
                     .last_offset = last_offset};
    size_t need = frame_put_error(NULL, 0, id, &e);
    int rc;
    if (need > OUT_CAP)
        return PB_ETOOBIG; /* messages are a few hundred bytes */
    if ((rc = make_room(c, need)) < 0)
        return rc;
    c->out_len += frame_put_error(c->out + c->out_len, c->out_cap - c->out_len, id, &e);
    return 0;
}

int subconn_subscribed(subconn *c, const frame_position *pos, size_t n)
{
    size_t need = frame_put_subscribed(NULL, 0, c->frame_id, pos, n);
    int rc = subconn_flush(c);
    if (rc < 0)
        return rc;
    if (need <= OUT_CAP) {
        if ((rc = out_reserve(c, need)) < 0)
            return rc;
        c->out_len = frame_put_subscribed(c->out, c->out_cap, c->frame_id, pos, n);
        rc = subconn_flush(c);
    } else {
        /* Thousands of partitions: a buffer of its own. */
        uint8_t *own = malloc(need);
        if (!own) {
            snprintf(c->why, c->why_len, "out of memory for a %zu-byte Subscribed frame", need);
            return PB_ENOMEM;
        }
        struct iovec v = {own, frame_put_subscribed(own, need, c->frame_id, pos, n)};
        rc = send_all(c, &v, 1);
        free(own);
    }
    /* Requests sent after the Subscribe are answered after it. */
    return rc < 0 ? rc : subconn_read(c);
}

int subconn_caught_up(subconn *c)
{
    size_t need = frame_put_caught_up(NULL, 0, c->frame_id, c->events_sent);
    int rc = make_room(c, need);
    if (rc < 0)
        return rc;
    c->out_len += frame_put_caught_up(c->out + c->out_len, need, c->frame_id, c->events_sent);
    return subconn_flush(c);
}

/* ------------------------------------------------------------------ */
/* what the client sends on its subscribed connection */

/* The rules are session.c's; SESSION_SUBSCRIBED's answers need no options. */
static const session_options no_session_options;

/* Answers one frame of the client's: a Pong, an Error (never one that
 * closes: the frame's length was valid), or nothing. Nothing of the frame
 * is kept. */
static int answer_frame(subconn *c, const frame_scan_result *r)
{
    session_answer a;
    if (!r->malformed && r->kind == FRAME_REPLICA_ACK && c->replicate)
        return 0; /* the follower's durable positions: nothing to answer */
    if (r->malformed)
        session_answer_malformed(SESSION_SUBSCRIBED, r->why, &a);
    else
        session_answer_frame(&no_session_options, SESSION_SUBSCRIBED, r->kind, NULL, 0, &a);
    if (a.action == SESSION_PONG) {
        size_t need = frame_put_pong(NULL, 0, r->id);
        int rc = make_room(c, need);
        if (rc < 0)
            return rc;
        c->out_len += frame_put_pong(c->out + c->out_len, c->out_cap - c->out_len, r->id);
        return 0;
    }
    if (a.action == SESSION_ERROR)
        return subconn_error(c, r->id, a.code, a.message, NULL, 0, 0);
    return 0;
}

/* The follower's durable positions, for the synchronous mode. */
static int record_replica_ack(subconn *c, uint64_t id, const uint8_t *body, size_t len)
{
    Protobus__ReplicaAck *a = protobus__replica_ack__unpack(NULL, len, body);
    if (!a)
        return subconn_error(c, id, PB_CODE_INVALID_ARGUMENT, "malformed ReplicaAck", NULL, 0, 0);
    for (size_t i = 0; i < a->n_durable; i++)
        standby_ack(c->standby, a->durable[i]->partition, strlen(a->durable[i]->partition),
                    a->durable[i]->offset);
    protobus__replica_ack__free_unpacked(a, NULL);
    return 0;
}

/* A replication subscription's input: frames are read whole (up to
 * REPLICA_FRAME_MAX), ReplicaAcks recorded, the rest answered as anywhere. */
static int scan_replica_input(subconn *c, const uint8_t *p, size_t n)
{
    if (c->rin_len + n > c->rin_cap) {
        size_t cap = c->rin_cap ? c->rin_cap * 2 : INPUT_CHUNK * 4;
        while (cap < c->rin_len + n)
            cap *= 2;
        uint8_t *b = realloc(c->rin, cap);
        if (!b) {
            snprintf(c->why, c->why_len, "out of memory reading the standby's frames");
            return PB_ENOMEM;
        }
        c->rin = b;
        c->rin_cap = cap;
    }
    memcpy(c->rin + c->rin_len, p, n);
    c->rin_len += n;
    size_t pos = 0;
    int rc = 0;
    uint64_t max = c->max_frame_bytes < REPLICA_FRAME_MAX ? c->max_frame_bytes : REPLICA_FRAME_MAX;
    while (rc == 0) {
        frame_split sp;
        frame_scan_result r = {0};
        rc = frame_split_next(c->rin + pos, c->rin_len - pos, max, &sp, r.why, sizeof r.why);
        if (rc == PB_EINCOMPLETE) {
            rc = 0;
            break;
        }
        if (rc < 0) {
            c->end_code = rc == PB_ETOOBIG ? PB_CODE_RESOURCE_EXHAUSTED : PB_CODE_INVALID_ARGUMENT;
            snprintf(c->why, c->why_len, "replication subscription: %s (at most %llu bytes)", r.why,
                     (unsigned long long)max);
            break;
        }
        frame_view v;
        r.malformed = frame_parse(sp.body.p, sp.body.len, &v, r.why, sizeof r.why) < 0;
        r.id = v.id;
        r.kind = r.malformed ? FRAME_NONE : v.kind;
        if (!r.malformed && r.kind == FRAME_REPLICA_ACK)
            rc = record_replica_ack(c, r.id, v.body.p, v.body.len);
        else
            rc = answer_frame(c, &r);
        pos += sp.used;
    }
    memmove(c->rin, c->rin + pos, c->rin_len - pos);
    c->rin_len -= pos;
    return rc;
}

/* Scans bytes the client sent and answers each frame they complete. A
 * broken stream (a length prefix over max_frame_bytes or not a varint)
 * sets end_code and why. */
static int scan_input(subconn *c, const uint8_t *p, size_t n)
{
    if (c->replicate)
        return scan_replica_input(c, p, n);
    while (n > 0) {
        frame_scan_result r;
        char err[256];
        size_t used = 0;
        int rc = frame_scan_feed(&c->scan, p, n, &used, &r, err, sizeof err);
        p += used;
        n -= used;
        if (rc < 0) {
            c->end_code = rc == PB_ETOOBIG ? PB_CODE_RESOURCE_EXHAUSTED : PB_CODE_INVALID_ARGUMENT;
            snprintf(c->why, c->why_len, "%s: %s (max_frame_bytes = %llu)",
                     rc == PB_ETOOBIG ? "frame refused" : "malformed frame", err,
                     (unsigned long long)c->max_frame_bytes);
            return rc;
        }
        if (rc == 1 && (rc = answer_frame(c, &r)) < 0)
            return rc;
    }
    return 0;
}

int subconn_read(subconn *c)
{
    if (c->in_input)
        return 0; /* an answer flushed the output from inside here */
    c->in_input = true;
    int rc = 0;
    if (c->input) {
        rc = scan_input(c, c->input, c->input_len);
        free(c->input);
        c->input = NULL;
        c->input_len = 0;
    }
    /* Memory stays the one chunk on the stack, whatever the client sends;
     * its answers wait in the output like events, under the same deadline. */
    for (size_t total = 0; rc == 0 && total < INPUT_PER_TURN;) {
        uint8_t buf[INPUT_CHUNK];
        ssize_t n = recv(c->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
            total += (size_t)n;
            rc = c->tls ? scan_sealed(c, buf, (size_t)n) : scan_input(c, buf, (size_t)n);
        } else if (n == 0) {
            rc = PB_ECLOSED;
        } else if (errno != EINTR) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == ECONNRESET || errno == ENOTCONN || errno == ESHUTDOWN) {
                rc = PB_ECLOSED;
            } else {
                snprintf(c->why, c->why_len, "reading from the subscriber: %s", strerror(errno));
                rc = -errno;
            }
        }
    }
    c->in_input = false;
    return rc;
}

/* subconn_end's Error for a subscription that ended with rc. */
static void end_error(subconn *c, int rc, char *msg, size_t msglen)
{
    snprintf(msg, msglen, "subscription ended: %s", c->why);
    int code = PB_CODE_INTERNAL;
    if (rc == PB_ENOMEM)
        code = PB_CODE_RESOURCE_EXHAUSTED;
    else if (rc == PB_EINVAL)
        code = PB_CODE_INVALID_ARGUMENT; /* its patterns, refused by the matcher */
    if (rc != PB_ETOOBIG) {
        c->out_len = c->out_owed; /* a frame begun on the wire is finished first */
        if (c->run_open && c->run_at >= c->out_len)
            c->run_open = false; /* dropped with the rest: never to be closed */
    } else
        code = PB_CODE_RESOURCE_EXHAUSTED; /* a budget: what was queued goes first */
    if (subconn_error(c, c->frame_id, code, msg, NULL, 0, 0) == 0)
        (void)subconn_flush(c);
}

void subconn_end(subconn *c, int rc)
{
    char msg[600];
    c->in_input = true; /* nothing more is read */
    /* Part of a frame is on the wire and its rest is lost: the waker's
     * fast path could not keep it (subconn_send_now), or a send failed
     * midway (torn). Any frame now would be read as the truncated one's
     * tail: closing is all that is left. */
    if (c->fast_error || c->torn)
        return;
    if (rc == PB_ECLOSED || rc == PB_ETIMEDOUT) {
        if (!c->end_code)
            return;
    }
    /* No output buffer (given back at rest, and memory short enough that
     * taking one failed): the Error is built in one on the stack, so the
     * client still learns why (it fits: msg is at most 600 bytes). */
    uint8_t spare[2048];
    bool borrowed = !c->out;
    if (borrowed) {
        c->out = spare;
        c->out_cap = sizeof spare;
        c->out_len = 0;
    }
    if (c->end_code) {
        /* Worded as net.c words it; what was queued goes first. */
        snprintf(msg, sizeof msg, "%s", c->why);
        if (subconn_error(c, 0, c->end_code, msg, NULL, 0, 0) == 0)
            (void)subconn_flush(c); /* the connection is being closed either way */
    } else {
        end_error(c, rc, msg, sizeof msg);
    }
    if (borrowed) {
        c->out = NULL;
        c->out_cap = c->out_len = 0;
    }
}
