/* Tests for server/subconn's Records frames (subconn_record, FORMAT.md
 * 4.11), read back from a socketpair as a follower would: consecutive
 * records of one partition share a frame; another partition, a gap, an
 * Event frame between them or a flush close it; a frame takes records up
 * to 64 KiB, then they go on in a new one; a record too large for a
 * run goes as an Event frame; each run passes recrun_check and each record
 * is byte for byte the one record_encode_header makes, whether its CRC was
 * given (the writer's) or computed here; a subscription ending with a run
 * open drops it whole and sends its Error; runs of stored records (a
 * standby's live queue entries, subconn_records) join and split by the
 * same rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "crc32c.h"
#include "frame.h"
#include "pb_errors.h"
#include "record.h"
#include "recrun.h"
#include "subconn.h"

#define CAP (4u << 20)

typedef struct reader {
    int fd;
    uint8_t *buf;
    size_t len;
} reader;

static void *read_all(void *arg)
{
    reader *r = arg;
    for (;;) {
        struct pollfd pf = {.fd = r->fd, .events = POLLIN};
        if (poll(&pf, 1, 10000) <= 0)
            break;
        ssize_t k = read(r->fd, r->buf + r->len, CAP - r->len);
        if (k <= 0)
            break;
        r->len += (size_t)k;
    }
    return NULL;
}

typedef struct fixture {
    subconn c;
    atomic_bool stop;
    char why[256];
    reader r;
    pthread_t t;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    f->c.fd = sv[0];
    f->c.wake_fd = eventfd(0, EFD_NONBLOCK);
    assert_true(f->c.wake_fd >= 0);
    atomic_init(&f->stop, false);
    f->c.stop = &f->stop;
    f->c.frame_id = 2;
    f->c.write_deadline_ms = 5000;
    f->c.max_frame_bytes = 1 << 20;
    f->c.peer = "test";
    f->c.why = f->why;
    f->c.why_len = sizeof f->why;
    f->c.replicate = true;
    assert_int_equal(subconn_open(&f->c), 0);
    f->r.fd = sv[1];
    f->r.buf = malloc(CAP);
    assert_non_null(f->r.buf);
    assert_int_equal(pthread_create(&f->t, NULL, read_all, &f->r), 0);
    *state = f;
    return 0;
}

/* Flushes, closes the writing end, waits for the reader. */
static void finish(fixture *f)
{
    assert_int_equal(subconn_flush(&f->c), 0);
    shutdown(f->c.fd, SHUT_WR);
    pthread_join(f->t, NULL);
}

static int teardown(void **state)
{
    fixture *f = *state;
    subconn_close(&f->c);
    close(f->c.fd);
    close(f->c.wake_fd);
    close(f->r.fd);
    free(f->r.buf);
    free(f);
    return 0;
}

/* Event `off` of partition name: len bytes of content from off. */
static void event_of(uint64_t off, uint8_t *ev, size_t len)
{
    for (size_t i = 0; i < len; i++)
        ev[i] = (uint8_t)(off * 31 + i);
}

static int64_t time_of(uint64_t off)
{
    return 1700000000000000000ll + (int64_t)off;
}

static void send_record(fixture *f, const char *part, uint64_t off, size_t len, bool give_crc)
{
    static uint8_t ev[300 * 1024];
    event_of(off, ev, len);
    uint8_t hdr[PB_RECORD_HEADER_SIZE];
    assert_int_equal(record_encode_header(hdr, off, time_of(off), ev, len, NULL, 0), 0);
    uint32_t crc = pb_load_le32(hdr);
    assert_int_equal(subconn_record(&f->c, part, strlen(part), off, time_of(off), ev, len,
                                    give_crc ? &crc : NULL),
                     0);
}

/* One frame read back: its kind, partition, and (Records) first offset,
 * count; (Event) offset. Checks every record's bytes. */
typedef struct got {
    enum frame_kind kind;
    char part[32];
    uint64_t first;
    size_t count;
} got;

static size_t frames(fixture *f, got *g, size_t cap)
{
    size_t n = 0, pos = 0;
    char err[256];
    while (pos < f->r.len) {
        frame_split sp;
        assert_int_equal(frame_split_next(f->r.buf + pos, f->r.len - pos, RECRUN_FRAME_MAX, &sp,
                                          err, sizeof err),
                         0);
        frame_view v;
        assert_int_equal(frame_parse(sp.body.p, sp.body.len, &v, err, sizeof err), 0);
        assert_int_equal(v.id, 2);
        assert_true(n < cap);
        g[n].kind = v.kind;
        if (v.kind == FRAME_RECORDS) {
            recrun_view rv;
            assert_int_equal(recrun_parse(v.body.p, v.body.len, &rv, err, sizeof err), 0);
            memcpy(g[n].part, rv.partition.p, rv.partition.len);
            g[n].part[rv.partition.len] = '\0';
            if (recrun_check(rv.records.p, rv.records.len, PB_RECORD_MAX_EVENT, &g[n].first,
                             &g[n].count, err, sizeof err) != 0)
                fail_msg("frame %zu: %s", n, err);
            assert_true(rv.records.len <= 256 * 1024);
            const uint8_t *r = rv.records.p;
            for (size_t i = 0; i < g[n].count; i++) {
                uint32_t len = pb_load_le32(r + 4) - PB_RECORD_FIXED_LEN;
                static uint8_t want[300 * 1024];
                event_of(g[n].first + i, want, len);
                assert_memory_equal(r + PB_RECORD_HEADER_SIZE, want, len);
                assert_true((int64_t)pb_load_le64(r + 16) == time_of(g[n].first + i));
                r += PB_RECORD_HEADER_SIZE + len;
            }
        } else if (v.kind == FRAME_ERROR) {
            g[n].part[0] = '\0';
            g[n].first = g[n].count = 0;
        } else {
            assert_int_equal(v.kind, FRAME_EVENT);
            event_frame_view ev;
            assert_int_equal(event_frame_parse(v.body.p, v.body.len, &ev, err, sizeof err), 0);
            memcpy(g[n].part, ev.partition.p, ev.partition.len);
            g[n].part[ev.partition.len] = '\0';
            g[n].first = ev.offset;
            g[n].count = 1;
        }
        n++;
        pos += sp.used;
    }
    return n;
}

static void expect(const got *g, enum frame_kind kind, const char *part, uint64_t first,
                   size_t count)
{
    assert_int_equal(g->kind, kind);
    assert_string_equal(g->part, part);
    assert_int_equal(g->first, first);
    assert_int_equal(g->count, count);
}

static void test_runs_close_where_they_must(void **state)
{
    fixture *f = *state;
    static const char a[] = "sensors", b[] = "events";
    send_record(f, a, 10, 100, true);
    send_record(f, a, 11, 0, false); /* an empty event */
    send_record(f, a, 12, 300, false);
    send_record(f, b, 5, 50, true);  /* another partition */
    send_record(f, a, 14, 60, true); /* a gap */
    assert_int_equal(subconn_event(&f->c, a, strlen(a), 15, (const uint8_t *)"\x0a\x01x", 3), 0);
    send_record(f, a, 16, 70, true); /* after an Event frame */
    assert_int_equal(subconn_flush(&f->c), 0);
    send_record(f, a, 17, 70, true); /* after a flush */
    finish(f);
    got g[16];
    size_t n = frames(f, g, 16);
    assert_int_equal(n, 6);
    expect(&g[0], FRAME_RECORDS, a, 10, 3);
    expect(&g[1], FRAME_RECORDS, b, 5, 1);
    expect(&g[2], FRAME_RECORDS, a, 14, 1);
    expect(&g[3], FRAME_EVENT, a, 15, 1);
    expect(&g[4], FRAME_RECORDS, a, 16, 1);
    expect(&g[5], FRAME_RECORDS, a, 17, 1);
}

static void test_full_buffer_and_large_record(void **state)
{
    fixture *f = *state;
    /* 40 records of 10 KiB: a frame takes 6 (64 KiB at most). */
    for (uint64_t off = 0; off < 40; off++)
        send_record(f, "p", off, 10 * 1024, off % 2 == 0);
    /* Too large for any run: an Event frame, then runs go on. */
    send_record(f, "p", 40, 260 * 1024, true);
    send_record(f, "p", 41, 10, true);
    finish(f);
    got g[16];
    size_t n = frames(f, g, 16);
    /* Consecutive frames of at most 6 (a full output buffer, flushed, also
     * closes one), 40 records in all. */
    uint64_t next = 0;
    size_t i = 0;
    for (; i < n && g[i].kind == FRAME_RECORDS && next < 40; i++) {
        expect(&g[i], FRAME_RECORDS, "p", next, g[i].count);
        assert_true(g[i].count >= 1 && g[i].count <= 6);
        next += g[i].count;
    }
    assert_int_equal(next, 40);
    assert_true(i >= 7);
    assert_int_equal(n, i + 2);
    expect(&g[i], FRAME_EVENT, "p", 40, 1);
    expect(&g[i + 1], FRAME_RECORDS, "p", 41, 1);
}

/* A subscription ending (out of memory) while a run is open: the run is
 * dropped with the rest of the queued output, never closed into bytes
 * that are gone; the client reads whole frames, the last an Error. */
static void test_end_with_a_run_open(void **state)
{
    fixture *f = *state;
    send_record(f, "p", 0, 100, true);
    assert_int_equal(subconn_flush(&f->c), 0);
    send_record(f, "p", 1, 100, true);
    send_record(f, "p", 2, 100, true); /* a run open, not flushed */
    snprintf(f->why, sizeof f->why, "out of memory (test)");
    subconn_end(&f->c, PB_ENOMEM);
    assert_false(f->c.run_open);
    shutdown(f->c.fd, SHUT_WR);
    pthread_join(f->t, NULL);
    got g[4];
    size_t n = frames(f, g, 4);
    assert_int_equal(n, 2);
    expect(&g[0], FRAME_RECORDS, "p", 0, 1);
    assert_int_equal(g[1].kind, FRAME_ERROR);
}

/* Records first..first+count-1 of partition "p" as stored, into buf (a
 * live queue's run entry); their byte count. */
static size_t stored_run(uint8_t *buf, uint64_t first, uint32_t count, size_t len)
{
    size_t at = 0;
    for (uint64_t off = first; off < first + count; off++) {
        event_of(off, buf + at + PB_RECORD_HEADER_SIZE, len);
        assert_int_equal(record_encode_header(buf + at, off, time_of(off),
                                              buf + at + PB_RECORD_HEADER_SIZE, len, NULL, 0),
                         0);
        at += PB_RECORD_HEADER_SIZE + len;
    }
    return at;
}

/* Runs as the live queue holds them for a standby (subconn_records): they
 * join the open Records frame of the same partition at the next offset
 * (after single records too), a gap or another partition starts a frame,
 * a frame takes runs up to 64 KiB, and a run too large for the output
 * buffer is refused (the writer never queues one). */
static void test_stored_runs_join_and_split(void **state)
{
    fixture *f = *state;
    static uint8_t run[64 * 1024];
    send_record(f, "p", 0, 100, true);
    size_t n = stored_run(run, 1, 10, 100);
    assert_int_equal(subconn_records(&f->c, "p", 1, 1, run, n, 10), 0);
    n = stored_run(run, 11, 5, 100);
    assert_int_equal(subconn_records(&f->c, "p", 1, 11, run, n, 5), 0);
    n = stored_run(run, 20, 2, 100); /* a gap */
    assert_int_equal(subconn_records(&f->c, "p", 1, 20, run, n, 2), 0);
    send_record(f, "p", 22, 50, false);
    n = stored_run(run, 3, 4, 10);
    assert_int_equal(subconn_records(&f->c, "q", 1, 3, run, n, 4), 0); /* another partition */
    /* 5 runs of ~30 KiB: a frame takes runs up to 64 KiB, two of them. */
    for (uint64_t k = 0; k < 5; k++) {
        n = stored_run(run, 100 + k * 30, 30, 1000);
        assert_int_equal(subconn_records(&f->c, "p", 1, 100 + k * 30, run, n, 30), 0);
    }
    assert_int_equal(subconn_records(&f->c, "p", 1, 250, run, 256 * 1024, 1), PB_EINVAL);
    assert_int_equal(f->c.events_sent, 1 + 10 + 5 + 2 + 1 + 4 + 150);
    finish(f);
    got g[16];
    size_t k = frames(f, g, 16);
    assert_int_equal(k, 6);
    expect(&g[0], FRAME_RECORDS, "p", 0, 16);
    expect(&g[1], FRAME_RECORDS, "p", 20, 3);
    expect(&g[2], FRAME_RECORDS, "q", 3, 4);
    expect(&g[3], FRAME_RECORDS, "p", 100, 60);
    expect(&g[4], FRAME_RECORDS, "p", 160, 60);
    expect(&g[5], FRAME_RECORDS, "p", 220, 30);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_runs_close_where_they_must, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_buffer_and_large_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_end_with_a_run_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stored_runs_join_and_split, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
