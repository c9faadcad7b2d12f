/*
 * Isolation, F10 (issue 10): concurrent subscriptions, against the real
 * protobusd with its default limits (max_subscriptions 1,024,
 * max_subscriptions_per_address 512), while an honest publisher and a probe
 * run beside it (tests/lib/hostile).
 *
 * - 1,000 subscriptions that stay idle (they matched 16 before the 17th was
 *   refused: 16 idle tails held every pool thread), from two client
 *   addresses (127.0.0.1 and 127.0.0.2, 500 each): all confirmed; the
 *   daemon has a thread per subscription and its RSS stays bounded.
 * - A 513th subscription from 127.0.0.2 is refused, RESOURCE_EXHAUSTED
 *   naming max_subscriptions_per_address; from 127.0.0.3 one more is
 *   accepted.
 * - Once they close, the daemon's threads and descriptors are back to
 *   where they were.
 * - Afterwards: restart, `protobus cat --verify`, every acknowledged event
 *   read back.
 */
#include "hostile.h"
#include "itest.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Under sanitizers (a thread costs far more there) the same test at a
 * fifth of the scale, with the per-address cap set to match. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define NSUBS        200
#define PER_ADDRESS  110
#define SERVER_EXTRA "max_subscriptions_per_address = 110\n"
#else
#define NSUBS        1000
#define PER_ADDRESS  512
#define SERVER_EXTRA NULL
#endif
#define REPLY_TIMEOUT_MS 20000
#define RSS_BUDGET_KB    (256L * 1024)

static itest_daemon dut;
static hostile_honest honest;
static int fds[NSUBS + PER_ADDRESS];
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

/* A connection to the daemon from source address 127.0.0.<host>, its
 * handshake done. -1 on failure. */
static int connect_from(int host)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)host);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(dut.port)};
    dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0 ||
        connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    Protobus__Frame *h = itest_hello(fd, 1, REPLY_TIMEOUT_MS);
    bool ok = h && h->body_case == PROTOBUS__FRAME__BODY_HELLO;
    if (h)
        protobus__frame__free_unpacked(h, NULL);
    if (!ok) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Subscribes from 127.0.0.<host> to a pattern no event matches; returns the
 * fd with *reply set to the first answer's body case (and the Error's code
 * and message when refused). */
static int idle_subscription(int host, int *body, int *code, char *msg, size_t msglen)
{
    int fd = connect_from(host);
    assert_true(fd >= 0);
    assert_int_equal(itest_subscribe(fd, 2, "idle\\.nothing", PROTOBUS__START_MODE__START_NEW), 0);
    Protobus__Frame *r = itest_recv_frame(fd, REPLY_TIMEOUT_MS);
    assert_non_null(r);
    *body = r->body_case;
    if (r->body_case == PROTOBUS__FRAME__BODY_ERROR) {
        *code = r->error->code;
        snprintf(msg, msglen, "%s", r->error->message);
    }
    protobus__frame__free_unpacked(r, NULL);
    return fd;
}

static void test_thousand_idle_subscriptions(void **state)
{
    (void)state;
    assert_int_equal(itest_daemon_start(&dut, SERVER_EXTRA, NULL), 0);
    long base_threads = hostile_thread_count(dut.pid), base_fds = hostile_fd_count(dut.pid);
    assert_int_equal(hostile_honest_start(&honest, dut.port, "honest.t"), 0);
    itest_sleep_ms(300);
    uint64_t t0 = itest_now_ms();
    int body, code = 0;
    char msg[512] = "";
    for (int i = 0; i < NSUBS; i++) {
        fds[nfds++] = idle_subscription(1 + i % 2, &body, &code, msg, sizeof msg);
        if (body != PROTOBUS__FRAME__BODY_SUBSCRIBED)
            printf("subscription %d refused: %s\n", i, msg);
        assert_int_equal(body, PROTOBUS__FRAME__BODY_SUBSCRIBED);
    }
    /* The CaughtUp of each (START_NEW: right after Subscribed) is left
     * unread: they are idle tails now. */
    long threads = hostile_thread_count(dut.pid), fdc = hostile_fd_count(dut.pid);
    long rss = hostile_rss_kb(dut.pid);
    printf("F10 %d idle subscriptions in %llu ms: daemon threads %ld -> %ld, descriptors %ld -> "
           "%ld, RSS %ld KiB\n",
           NSUBS, (unsigned long long)(itest_now_ms() - t0), base_threads, threads, base_fds, fdc,
           rss);
    assert_true(threads >= base_threads + NSUBS);

    /* 127.0.0.1 and .2 hold 500 each: 12 more from .2, then one over. */
    for (int i = 0; i < PER_ADDRESS - NSUBS / 2; i++) {
        fds[nfds++] = idle_subscription(2, &body, &code, msg, sizeof msg);
        assert_int_equal(body, PROTOBUS__FRAME__BODY_SUBSCRIBED);
    }
    int over = idle_subscription(2, &body, &code, msg, sizeof msg);
    printf("F10 subscription %d from 127.0.0.2: %s\n", PER_ADDRESS + 1, msg);
    assert_int_equal(body, PROTOBUS__FRAME__BODY_ERROR);
    assert_int_equal(code, PROTOBUS__CODE__RESOURCE_EXHAUSTED);
    assert_non_null(strstr(msg, "max_subscriptions_per_address"));
    close(over);
    int other = idle_subscription(3, &body, &code, msg, sizeof msg);
    assert_int_equal(body, PROTOBUS__FRAME__BODY_SUBSCRIBED);
    close(other);

    long peak = hostile_peak_kb(dut.pid);
    printf("daemon peak RSS %ld KiB\n", peak);
    if (HOSTILE_RSS_CHECKED)
        assert_true(peak < RSS_BUDGET_KB);

    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    nfds = 0;
    long after_threads = -1;
    for (int i = 0; i < 100; i++) { /* bounded: 10 s */
        after_threads = hostile_thread_count(dut.pid);
        if (after_threads <= base_threads + 2)
            break;
        itest_sleep_ms(100);
    }
    long after_fds = hostile_fd_count(dut.pid);
    printf("after closing: threads %ld, descriptors %ld\n", after_threads, after_fds);
    assert_true(after_threads <= base_threads + 2); /* a partition writer may be running */
    assert_true(after_fds <= base_fds + 8);

    hostile_honest_check(&honest, 1000);
    char out[4096];
    hostile_check_durable(&dut, &honest, out, sizeof out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_thousand_idle_subscriptions, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
