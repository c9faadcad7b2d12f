/*
 * test_subrun_fast - the waker's fast path for one subscription
 * (subrun_fast, subrun_internal.h), called directly as fanout_fast calls it
 * while the subscription's thread sleeps: a sub with one partition already
 * seen, its live queue holding records, its connection one end of a
 * socketpair. What it must leave to the thread: a subscription asked to
 * stop; a socket that is full after a send it refused (nothing encoded,
 * nothing copied; after a complete send, the next one is tried at once). And what
 * the thread does when the fast path broke the stream (subconn_end).
 */
#include "subrun_internal.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

typedef struct fixture {
    sub s;
    livequeue_pool *pool;
    part_state part;
    size_t index[1];
    int peer; /* the client's end */
    char why[256];
} fixture;

static int part_key; /* the partition: only a key here */

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    f->peer = sv[1];
    f->s.conn.fd = sv[0];
    f->s.conn.why = f->why;
    f->s.conn.why_len = sizeof f->why;
    f->s.min_time_ns = INT64_MIN;
    atomic_init(&f->s.stop, false);
    f->s.conn.stop = &f->s.stop;
    f->s.conn.write_deadline_ms = 1000;
    assert_int_equal(livequeue_pool_create(&f->pool, 1 << 22), 0);
    assert_int_equal(livequeue_create(&f->s.live.q, 1 << 22, f->pool), 0);
    f->part = (part_state){.p = (partition *)&part_key, .name = "p", .name_len = 1};
    f->s.parts = &f->part;
    f->s.nparts = 1;
    f->index[0] = 1; /* one slot: every partition pointer hashes to it */
    f->s.index = f->index;
    f->s.index_slots = 1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    free(f->s.conn.out);
    livequeue_destroy(f->s.live.q);
    livequeue_pool_destroy(f->pool);
    close(f->s.conn.fd);
    close(f->peer);
    free(f);
    return 0;
}

static void queue(fixture *f, uint64_t first, size_t n, uint32_t len)
{
    static uint8_t data[8192];
    assert_true(len <= sizeof data);
    for (size_t i = 0; i < n; i++) {
        lq_entry e = {.key = &part_key, .offset = first + i, .time_ns = 1, .since = 0};
        assert_int_equal(livequeue_push(f->s.live.q, &e, data, len, NULL, 0), 0);
    }
}

/* Bytes waiting at the client's end (read and dropped). */
static size_t received(fixture *f)
{
    static uint8_t buf[65536];
    size_t total = 0;
    ssize_t n;
    while ((n = recv(f->peer, buf, sizeof buf, MSG_DONTWAIT)) > 0)
        total += (size_t)n;
    return total;
}

static int run_fast(fixture *f, lq_span *sp)
{
    static uint8_t scratch[64 * 1024];
    livequeue_peek(f->s.live.q, sp);
    size_t used;
    return subrun_fast(&f->s, sp, scratch, sizeof scratch, &used);
}

/* Delivered: the frames reach the client, `next` moves on. */
static void test_delivers_when_idle(void **state)
{
    fixture *f = *state;
    queue(f, 0, 3, 10);
    lq_span sp;
    assert_int_equal(run_fast(f, &sp), FANOUT_FAST_DONE);
    assert_int_equal(sp.pos, sp.end);
    assert_int_equal(f->part.next, 3);
    assert_true(received(f) > 30);
}

/* Asked to stop (revoked rights, sub_registry_end_users): nothing more is
 * written, nothing consumed; the thread ends it. */
static void test_stopping_sends_nothing(void **state)
{
    fixture *f = *state;
    queue(f, 0, 3, 10);
    atomic_store(&f->s.stop, true);
    lq_span sp;
    assert_int_equal(run_fast(f, &sp), FANOUT_FAST_THREAD);
    assert_int_equal(sp.pos, sp.start);
    assert_int_equal(f->part.next, 0);
    assert_int_equal(received(f), 0);
}

/* A full socket: the records stay in the queue for the thread, and no
 * bytes are encoded into its output (before: 64 KiB encoded, refused and
 * copied into the output buffer). */
static void test_full_socket_left_to_thread(void **state)
{
    fixture *f = *state;
    static uint8_t fill[65536];
    while (send(f->s.conn.fd, fill, sizeof fill, MSG_DONTWAIT) > 0)
        ;
    while (send(f->s.conn.fd, fill, 1, MSG_DONTWAIT) > 0)
        ;
    queue(f, 0, 3, 1000);
    lq_span sp;
    assert_int_equal(run_fast(f, &sp), FANOUT_FAST_THREAD);
    assert_int_equal(sp.pos, sp.start);
    assert_int_equal(f->part.next, 0);
    assert_int_equal(f->s.conn.out_len, 0);
}

/* The fast path asks for room only after a send the socket did not take
 * whole: after a complete delivery it sends at once, and what a full
 * socket refuses then goes to the thread's output, consumed and in order;
 * the next delivery polls again (nothing encoded while the socket stays
 * full). */
static void test_poll_only_after_refused_send(void **state)
{
    fixture *f = *state;
    queue(f, 0, 3, 10);
    lq_span sp;
    assert_int_equal(run_fast(f, &sp), FANOUT_FAST_DONE);
    livequeue_consume(f->s.live.q, &sp);
    assert_true(f->s.conn.fast_room);
    assert_true(received(f) > 30);
    static uint8_t fill[65536];
    while (send(f->s.conn.fd, fill, sizeof fill, MSG_DONTWAIT) > 0)
        ;
    while (send(f->s.conn.fd, fill, 1, MSG_DONTWAIT) > 0)
        ;
    queue(f, 3, 3, 1000);
    assert_int_equal(run_fast(f, &sp), FANOUT_FAST_THREAD);
    assert_int_equal(sp.pos, sp.end); /* encoded, kept for the thread */
    livequeue_consume(f->s.live.q, &sp);
    assert_int_equal(f->part.next, 6);
    assert_true(f->s.conn.out_len >= 3000);
    assert_false(f->s.conn.fast_room);
    /* As if the thread had sent its output: the socket is still full. */
    f->s.conn.out_len = f->s.conn.out_owed = 0;
    queue(f, 6, 3, 1000);
    assert_int_equal(run_fast(f, &sp), FANOUT_FAST_THREAD);
    assert_int_equal(sp.pos, sp.start);
    assert_int_equal(f->part.next, 6);
    assert_int_equal(f->s.conn.out_len, 0);
}

/* A delivery that left records to the thread (more than the scratch
 * holds) does not let the next one skip the poll: the thread may fill the
 * socket meanwhile, and a full socket must get nothing encoded or copied
 * (review of fanout6, finding 1). */
static void test_hand_over_clears_room(void **state)
{
    fixture *f = *state;
    queue(f, 0, 100, 1000); /* ~100 KB: more than the 64 KiB scratch */
    lq_span sp;
    assert_int_equal(run_fast(f, &sp), FANOUT_FAST_THREAD);
    assert_true(sp.pos < sp.end); /* the rest is the thread's */
    assert_false(f->s.conn.fast_room);
    /* The thread sends the rest, filling the socket, and sleeps. */
    lq_entry e;
    while (livequeue_read(f->s.live.q, &sp, &e) == 0)
        ;
    livequeue_consume(f->s.live.q, &sp);
    f->part.next = 100;
    static uint8_t fill[65536];
    while (send(f->s.conn.fd, fill, sizeof fill, MSG_DONTWAIT) > 0)
        ;
    while (send(f->s.conn.fd, fill, 1, MSG_DONTWAIT) > 0)
        ;
    queue(f, 100, 3, 1000);
    assert_int_equal(run_fast(f, &sp), FANOUT_FAST_THREAD);
    assert_int_equal(sp.pos, sp.start);
    assert_int_equal(f->part.next, 100);
    assert_int_equal(f->s.conn.out_len, 0);
}

/* Part of a frame went out and the rest could not be kept (out of memory
 * in subconn_send_now: fast_error): the subscription ends without another
 * byte, else the client would read an Error frame as the rest of the
 * truncated Event. (No allocation hook in the tests: fast_error is set as
 * subconn_send_now sets it.) */
static void test_fast_error_closes_without_writing(void **state)
{
    fixture *f = *state;
    f->s.conn.fast_error = PB_ENOMEM;
    snprintf(f->why, sizeof f->why, "out of memory for a 65536-byte output buffer");
    subconn_end(&f->s.conn, PB_ENOMEM);
    assert_int_equal(received(f), 0);
    /* Without it, the closing Error goes out as usual. */
    f->s.conn.fast_error = 0;
    subconn_end(&f->s.conn, PB_ENOMEM);
    assert_true(received(f) > 0);
}

/* The socket took part of a frame: its tail waits in the output. If the
 * subscription then ends with an error, the tail still goes before the
 * Error, else the client would read the Error as the rest of the frame. */
static void test_error_after_partial_frame_finishes_it(void **state)
{
    fixture *f = *state;
    int small = 4096;
    assert_int_equal(setsockopt(f->s.conn.fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    static uint8_t frame[200000], got[400000];
    for (size_t i = 0; i < sizeof frame; i++)
        frame[i] = (uint8_t)(i * 7 + 1);
    assert_int_equal(subconn_send_now(&f->s.conn, frame, sizeof frame), 1);
    assert_true(f->s.conn.out_len > 0 && f->s.conn.out_len < sizeof frame);
    size_t total = 0;
    ssize_t n;
    while ((n = recv(f->peer, got, sizeof got, MSG_DONTWAIT)) > 0)
        total += (size_t)n; /* what went out at once: the frame's start */
    assert_true(total > 0 && total < sizeof frame);
    size_t head = total;
    assert_memory_equal(got, frame, head < 16 ? head : 16);
    /* The end comes while the tail waits; a reader drains meanwhile. */
    int rs = 1 << 20;
    (void)setsockopt(f->peer, SOL_SOCKET, SO_RCVBUF, &rs, sizeof rs);
    snprintf(f->why, sizeof f->why, "cannot read partition p: Input/output error");
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        subconn_end(&f->s.conn, -5 /* -EIO */);
        _exit(0);
    }
    size_t rest = 0;
    struct pollfd pf = {.fd = f->peer, .events = POLLIN};
    for (int i = 0; i < 2000 && poll(&pf, 1, 1000) > 0; i++) {
        n = recv(f->peer, got + head + rest, sizeof got - head - rest, MSG_DONTWAIT);
        if (n <= 0)
            break;
        rest += (size_t)n;
    }
    int st;
    assert_int_equal(waitpid(child, &st, 0), child);
    /* The frame's tail, whole, then more (the Error). */
    assert_true(head + rest > sizeof frame);
    assert_memory_equal(got + head, frame + head, sizeof frame - head);
}

/* A send that times out (the client does not read) after part of a frame
 * went out leaves the stream torn: ending the subscription, even with an
 * Error to say (the client also broke its side: end_code), writes nothing
 * more, else the client would read the Error as the frame's rest. */
static void test_torn_send_closes_without_error(void **state)
{
    fixture *f = *state;
    int small = 4096;
    assert_int_equal(setsockopt(f->s.conn.fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    f->s.conn.write_deadline_ms = 100;
    static uint8_t event[300000];
    memset(event, 'x', sizeof event);
    int rc = subconn_event(&f->s.conn, "p", 1, 7, event, sizeof event);
    assert_int_equal(rc, PB_ETIMEDOUT);
    size_t head = received(f); /* the frame's start, then nothing */
    assert_true(head > 0 && head < sizeof event);
    assert_true(f->s.conn.torn);
    f->s.conn.end_code = PB_CODE_INVALID_ARGUMENT;
    snprintf(f->why, sizeof f->why, "malformed frame: a length prefix over 10 bytes");
    subconn_end(&f->s.conn, PB_ETIMEDOUT);
    assert_int_equal(received(f), 0);
    /* Not torn: the same end sends its Error. */
    f->s.conn.torn = false;
    subconn_end(&f->s.conn, PB_ETIMEDOUT);
    assert_true(received(f) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_delivers_when_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stopping_sends_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_socket_left_to_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poll_only_after_refused_send, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hand_over_clears_room, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fast_error_closes_without_writing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_after_partial_frame_finishes_it, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_send_closes_without_error, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
