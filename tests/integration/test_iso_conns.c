/*
 * Isolation, F5, F6, F7 (issue 10): what connections can hold, against the
 * real protobusd, each attack for a few seconds while an honest publisher
 * and a probe run beside it (tests/lib/hostile); afterwards a restart,
 * `protobus cat --verify` and a read-back of every event the honest
 * publisher got acknowledged.
 *
 * F5 quiet connections: max_connections connections that complete their
 *    Hello and then send nothing. The probe is still served (at the cap, a
 *    new connection closes the one quiet the longest), and each quiet one is
 *    closed after quiet_timeout_ms (DEADLINE_EXCEEDED) or evicted.
 * F6 partial frames: 12 connections each declaring a 16 MiB frame and
 *    sending 15 MiB of it, then a byte now and then: receive buffers grow
 *    with the bytes and all of them together stay within
 *    max_partial_frame_bytes (128 MiB); those past it are refused
 *    (RESOURCE_EXHAUSTED naming the setting) and closed; the daemon's peak
 *    RSS stays under 256 MiB (it held ~640 MiB).
 * F7 unread acks: 4 connections pipelining 1-event Publishes for 3 s and
 *    never reading: each stops being read once its unsent replies, counted
 *    with their allocations, pass 8 MiB; the daemon grows by tens of MiB,
 *    not hundreds (713 MiB before).
 *
 * RSS bounds are asserted in plain builds only (HOSTILE_RSS_CHECKED).
 */
#include "hostile.h"
#include "itest.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define RSS_BUDGET_KB (256L * 1024)

static itest_daemon dut;
static hostile_honest honest;
static int fds[128];
static int nfds;

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    nfds = 0;
    hostile_honest_stop(&honest);
    hostile_acked_free(&honest.acked);
    itest_daemon_cleanup(&dut);
    return 0;
}

/* Stops the honest publisher, checks its figures and the peak RSS, then
 * restarts the daemon and checks every acknowledged event. */
static void honest_and_durable(const char *what)
{
    long peak = hostile_peak_kb(dut.pid);
    printf("%s: daemon peak RSS %ld KiB\n", what, peak);
    hostile_honest_check(&honest, 1000);
    if (HOSTILE_RSS_CHECKED)
        assert_true(peak < RSS_BUDGET_KB);
    char out[4096];
    hostile_check_durable(&dut, &honest, out, sizeof out);
}

/* F5 */
#define MAX_CONNS 48
static void test_quiet_connections(void **state)
{
    (void)state;
    assert_int_equal(
        itest_daemon_start(&dut, "max_connections = 48\nquiet_timeout_ms = 1500\n", NULL), 0);
    for (int i = 0; i < MAX_CONNS; i++) {
        fds[nfds] = itest_connect_hello(dut.port);
        assert_true(fds[nfds] >= 0);
        nfds++;
    }
    itest_sleep_ms(400); /* every slot taken by a quiet connection */
    assert_int_equal(hostile_honest_start(&honest, dut.port, "honest.t"), 0);
    itest_sleep_ms(2500); /* past quiet_timeout_ms */
    int closed = 0;
    for (int i = 0; i < nfds; i++)
        closed += itest_wait_closed(fds[i], 2000) ? 1 : 0;
    printf("F5 %d quiet connections at max_connections = %d: %d closed (evicted or idle)\n",
           MAX_CONNS, MAX_CONNS, closed);
    assert_int_equal(closed, MAX_CONNS);
    assert_true(itest_log_contains(&dut, "quiet_timeout_ms"));
    assert_true(itest_log_contains(&dut, "closed for a newer connection"));
    honest_and_durable("F5");
}

/* F6 */
#define PARTIAL_CONNS 12
#define FRAME_BYTES   (16u << 20)
#define SENT_BYTES    (15u << 20)
static void test_partial_frames(void **state)
{
    (void)state;
    assert_int_equal(itest_daemon_start(&dut, NULL, NULL), 0);
    assert_int_equal(hostile_honest_start(&honest, dut.port, "honest.t"), 0);
    static uint8_t body[SENT_BYTES];
    memset(body, 0x55, sizeof body);
    /* A length prefix of FRAME_BYTES, then id 1 and field 3 (Publish) of
     * FRAME_BYTES - 8 bytes: a frame the daemon must buffer whole. */
    uint8_t hdr[16];
    size_t h = hostile_put_varint(hdr, FRAME_BYTES);
    hdr[h++] = 0x08;
    hdr[h++] = 0x01;
    hdr[h++] = 0x1a;
    h += hostile_put_varint(hdr + h, FRAME_BYTES - 8);
    int refused = 0;
    for (int i = 0; i < PARTIAL_CONNS; i++) {
        int fd = itest_connect_hello(dut.port);
        assert_true(fd >= 0);
        struct timeval tv = {5, 0};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        fds[nfds++] = fd;
        if (itest_send_raw(fd, hdr, h) < 0 || itest_send_raw(fd, body, sizeof body) < 0)
            refused++; /* refused and closed while sending */
        else if (itest_wait_closed(fd, 300))
            refused++;
    }
    long rss = hostile_rss_kb(dut.pid);
    /* A byte now and then on the others: still unfinished. */
    for (int s = 0; s < 2; s++) {
        for (int i = 0; i < nfds; i++)
            (void)send(fds[i], body, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        itest_sleep_ms(500);
    }
    printf("F6 %d connections, each 15 MiB of a 16 MiB frame: %d refused; daemon RSS %ld KiB\n",
           PARTIAL_CONNS, refused, rss);
    assert_true(refused >= PARTIAL_CONNS - 8);
    assert_true(refused < PARTIAL_CONNS);
    assert_true(itest_log_contains(&dut, "max_partial_frame_bytes"));
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    nfds = 0;
    honest_and_durable("F6");
}

/* F7 */
#define ACK_CONNS     4
#define BURST_FRAMES  4096
#define PUBLISH_BYTES 9 /* 08 <id> 1a 05 0a 03 0a 01 'a', after its length byte */
static void test_unread_acks(void **state)
{
    (void)state;
    assert_int_equal(itest_daemon_start(&dut, NULL, NULL), 0);
    assert_int_equal(hostile_honest_start(&honest, dut.port, "honest.t"), 0);
    static uint8_t burst[BURST_FRAMES * (PUBLISH_BYTES + 1)];
    for (int i = 0; i < BURST_FRAMES; i++)
        memcpy(burst + (size_t)i * (PUBLISH_BYTES + 1),
               "\x09\x08\x07\x1a\x05\x0a\x03\x0a\x01"
               "a",
               PUBLISH_BYTES + 1);
    long base = hostile_rss_kb(dut.pid);
    for (int i = 0; i < ACK_CONNS; i++) {
        fds[nfds] = itest_connect_hello(dut.port);
        assert_true(fds[nfds] >= 0);
        fcntl(fds[nfds], F_SETFL, fcntl(fds[nfds], F_GETFL) | O_NONBLOCK);
        nfds++;
    }
    uint64_t t0 = itest_now_ms(), sent = 0;
    size_t at[ACK_CONNS] = {0};
    while (itest_now_ms() - t0 < 3000) {
        struct pollfd pf[ACK_CONNS];
        for (int i = 0; i < ACK_CONNS; i++)
            pf[i] = (struct pollfd){fds[i], POLLOUT, 0};
        if (poll(pf, ACK_CONNS, 100) <= 0)
            continue;
        for (int i = 0; i < ACK_CONNS; i++) {
            if (!(pf[i].revents & POLLOUT))
                continue;
            ssize_t w = send(fds[i], burst + at[i], sizeof burst - at[i], MSG_NOSIGNAL);
            if (w > 0) {
                at[i] = (at[i] + (size_t)w) % sizeof burst;
                sent += (uint64_t)w;
            }
        }
    }
    long peak = hostile_peak_kb(dut.pid), now = hostile_rss_kb(dut.pid);
    printf("F7 %d connections publishing for 3 s, reading nothing: %llu frames sent; daemon RSS "
           "%ld KiB before, %ld KiB now, peak %ld KiB\n",
           ACK_CONNS, (unsigned long long)(sent / (PUBLISH_BYTES + 1)), base, now, peak);
    if (HOSTILE_RSS_CHECKED)
        assert_true(peak - base < 128L * 1024);
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    nfds = 0;
    honest_and_durable("F7");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_quiet_connections, teardown),
        cmocka_unit_test_teardown(test_partial_frames, teardown),
        cmocka_unit_test_teardown(test_unread_acks, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
