/*
 * Isolation, F8 (issue 10): per-event batch state, against the real
 * protobusd with its default limits.
 *
 * - One 16 MiB Publish of ~3.3 million 3-byte events (the most a frame can
 *   carry) is refused with RESOURCE_EXHAUSTED naming max_batch_events,
 *   before its per-event state is allocated: the daemon's peak RSS stays
 *   far below what the batch would cost (~130 B per event, ~430 MiB).
 * - One connection pipelining Publishes of max_batch_events tiny events (each
 *   frame only ~320 KB, its state ~15 MB): the in-flight budget counts that
 *   state, so only a couple are in flight at once and the peak RSS stays
 *   bounded; every one is acknowledged; once the partition is idle its writer
 *   has given its arrays back, so the RSS falls back (kept RSS).
 * - Meanwhile an honest publisher (one event per Publish) keeps getting acks
 *   and a probe connection is served every 0.5 s.
 * - Afterwards: restart, `protobus cat --verify` clean, every event the
 *   honest publisher got acknowledged is read back, and the record count is
 *   what was acknowledged.
 *
 * RSS bounds are generous (orders of magnitude), and asserted in plain
 * builds only (HOSTILE_RSS_CHECKED); nothing asserts a speed. The figures are
 * printed for the record.
 */
#include "hostile.h"
#include "itest.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_FRAME        (16u << 20)
#define EVENT_BYTES      5 /* 0a 03 | 0a 01 'a': one 3-byte event in a Publish */
#define PIPELINE_BATCHES 40
#define PIPELINE_EVENTS  65536 /* the default max_batch_events */
#define RSS_BUDGET_KB    (256L * 1024)
#define KEPT_BUDGET_KB   (96L * 1024)
#define REPLY_TIMEOUT_MS 120000
#define IDLE_WAIT_MS     (15 * 1000)

static itest_daemon dut;
static hostile_honest honest;

static int teardown(void **state)
{
    (void)state;
    hostile_honest_stop(&honest);
    hostile_acked_free(&honest.acked);
    itest_daemon_cleanup(&dut);
    return 0;
}

/* A whole delimited Frame (id) carrying a Publish of n 3-byte events with
 * topic "a". *len set; malloc'd. */
static uint8_t *tiny_events_frame(uint64_t id, size_t n, size_t *len)
{
    size_t pub = n * EVENT_BYTES;
    uint8_t hdr[32];
    size_t h = 0;
    hdr[h++] = 0x08; /* id */
    h += hostile_put_varint(hdr + h, id);
    hdr[h++] = 0x1a; /* publish */
    h += hostile_put_varint(hdr + h, pub);
    size_t body = h + pub;
    uint8_t *buf = malloc(body + 10);
    assert_non_null(buf);
    size_t at = hostile_put_varint(buf, body);
    memcpy(buf + at, hdr, h);
    at += h;
    for (size_t i = 0; i < n; i++, at += EVENT_BYTES)
        memcpy(buf + at,
               "\x0a\x03\x0a\x01"
               "a",
               EVENT_BYTES);
    *len = at;
    return buf;
}

/* The attack of the first part: the largest Publish a frame can carry. */
static void one_huge_publish(void)
{
    size_t n = (MAX_FRAME - 16) / EVENT_BYTES, len;
    uint8_t *frame = tiny_events_frame(7, n, &len);
    long base = hostile_rss_kb(dut.pid);
    Protobus__Frame *f = hostile_send_frame_bytes(dut.port, frame, len, REPLY_TIMEOUT_MS);
    free(frame);
    assert_non_null(f);
    itest_sleep_ms(500);
    long peak = hostile_peak_kb(dut.pid), now = hostile_rss_kb(dut.pid);
    printf("F8 one Publish of %zu 3-byte events: reply %s; RSS before %ld KiB, peak %ld KiB, "
           "after %ld KiB\n",
           n, f->body_case == PROTOBUS__FRAME__BODY_ERROR ? "Error" : "ack", base, peak, now);
    assert_int_equal(f->body_case, PROTOBUS__FRAME__BODY_ERROR);
    assert_int_equal(f->error->code, PROTOBUS__CODE__RESOURCE_EXHAUSTED);
    assert_non_null(strstr(f->error->message, "max_batch_events"));
    printf("  Error: %s\n", f->error->message);
    protobus__frame__free_unpacked(f, NULL);
    if (HOSTILE_RSS_CHECKED)
        assert_true(peak < RSS_BUDGET_KB);
}

typedef struct acks {
    int fd;
    size_t want;
    size_t acked, errors;
    uint64_t events;
} acks;

static void *read_acks(void *arg)
{
    acks *a = arg;
    while (a->acked + a->errors < a->want) {
        Protobus__Frame *f = itest_recv_frame(a->fd, REPLY_TIMEOUT_MS);
        if (!f)
            break;
        if (f->body_case == PROTOBUS__FRAME__BODY_PUBLISH_ACK) {
            a->acked++;
            a->events += f->publish_ack->n_offsets;
        } else {
            a->errors++;
            if (f->body_case == PROTOBUS__FRAME__BODY_ERROR)
                fprintf(stderr, "pipeline: Error %s\n", f->error->message);
        }
        protobus__frame__free_unpacked(f, NULL);
    }
    return NULL;
}

/* The second part: batches at the cap, pipelined on one connection (acks
 * read on a thread, so the daemon is never stuck writing them). */
static uint64_t pipelined_batches(void)
{
    int fd = itest_connect_hello(dut.port);
    assert_true(fd >= 0);
    acks a = {.fd = fd, .want = PIPELINE_BATCHES};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, read_acks, &a), 0);
    long base = hostile_rss_kb(dut.pid);
    for (int i = 0; i < PIPELINE_BATCHES; i++) {
        size_t len;
        uint8_t *frame = tiny_events_frame(100 + (uint64_t)i, PIPELINE_EVENTS, &len);
        assert_int_equal(itest_send_raw(fd, frame, len), 0);
        free(frame);
    }
    pthread_join(t, NULL);
    close(fd);
    long peak = hostile_peak_kb(dut.pid), after = hostile_rss_kb(dut.pid);
    /* The partition goes idle (partition_idle_ms), its writer gives its
     * arrays back. */
    itest_sleep_ms(IDLE_WAIT_MS);
    long kept = hostile_rss_kb(dut.pid);
    printf("F8 %d pipelined Publishes of %d 3-byte events: %zu acked (%llu events), %zu errors; "
           "RSS before %ld KiB, peak %ld KiB, right after %ld KiB, kept (idle) %ld KiB\n",
           PIPELINE_BATCHES, PIPELINE_EVENTS, a.acked, (unsigned long long)a.events, a.errors, base,
           peak, after, kept);
    assert_int_equal(a.acked, PIPELINE_BATCHES);
    assert_int_equal(a.errors, 0);
    if (HOSTILE_RSS_CHECKED) {
        assert_true(peak < RSS_BUDGET_KB);
        assert_true(kept < KEPT_BUDGET_KB);
    }
    return a.events;
}

static void test_batch_state_is_bounded(void **state)
{
    (void)state;
    assert_int_equal(itest_daemon_start(&dut, "partition_idle_ms = 2000\n", NULL), 0);
    assert_int_equal(hostile_honest_start(&honest, dut.port, "honest.t"), 0);
    itest_sleep_ms(300);
    one_huge_publish();
    uint64_t events = pipelined_batches();
    hostile_honest_check(&honest, 0);
    char out[4096];
    hostile_check_durable(&dut, &honest, out, sizeof out);
    char want[128];
    snprintf(want, sizeof want, "verified %llu record(s)",
             (unsigned long long)(events + honest.acked.n));
    assert_non_null(strstr(out, want));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_batch_state_is_bounded, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
