/*
 * Isolation, F4 (issue 10): descriptors and threads, against the real
 * protobusd started with an open-files limit of 256 (soft and hard, as
 * `ulimit -n 256` would set it).
 *
 * 1. The daemon sizes max_partitions to that limit (the arithmetic is in
 *    main.c and its log line). An attacker publishes to hundreds of distinct
 *    topics through a capture-group rule: partitions up to the cap are
 *    created, every later one is refused with RESOURCE_EXHAUSTED naming
 *    max_partitions, and nothing of a refused one reaches the disk. Meanwhile
 *    the honest publisher gets its acks and the probe its Hellos. Once the
 *    attacker stops, idle partitions close their files and end their writer
 *    threads: descriptors and threads fall back.
 * 2. With max_partitions set above what the limit could hold open at once
 *    (300), partitions written one after another each hold files only while
 *    busy, so hundreds are created under the same limit.
 * 3. The daemon restarts, still under 256 descriptors, on ~340 partitions
 *    (start-up opens them one at a time and leaves them closed), serves a
 *    subscription that replays all of them merged by time (a bounded number
 *    of segment files open at once), and `protobus cat --verify` is clean;
 *    every acknowledged event is read back.
 *
 * Bounds are generous; nothing asserts a speed.
 */
#include "hostile.h"
#include "itest.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NOFILE          256
#define ATTACK_TOPICS   200
#define MANY_PARTITIONS 300
#define IDLE_MS         300
#define RSS_BUDGET_KB   (256L * 1024)
#define REPLY_MS        20000

static const char *server_conf = "max_connections = 32\n"
                                 "threads = 4\n"
                                 "partition_idle_ms = 300\n";
static const char *rules = "[partition t-$1]\n"
                           "match = t\\.([a-z0-9]+)\n"
                           "[partition events]\n"
                           "match = .*\n";

static itest_daemon dut;
static hostile_honest h, h2;
static hostile_acked_list attack_acked;

static int teardown(void **state)
{
    (void)state;
    hostile_honest_stop(&h);
    hostile_honest_stop(&h2);
    hostile_acked_free(&h.acked);
    hostile_acked_free(&h2.acked);
    hostile_acked_free(&attack_acked);
    itest_daemon_cleanup(&dut);
    return 0;
}

static int dir_exists(const char *data_dir, const char *name)
{
    char path[512];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", data_dir, name);
    return stat(path, &st) == 0;
}

/* The max_partitions the daemon chose, from its log line. */
static long logged_max_partitions(void)
{
    FILE *f = fopen(dut.log, "r");
    assert_non_null(f);
    char line[1024];
    long v = -1;
    while (fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "max_partitions = ");
        if (p && strstr(line, "open files limit"))
            v = strtol(p + strlen("max_partitions = "), NULL, 10);
    }
    fclose(f);
    return v;
}

/* Publishes one event to each of topics t.<prefix><i>, i in [from, to), on
 * one connection, each its own Publish; acked ones go to *acked, refusals
 * are counted (and must name max_partitions). pause_ms between publishes. */
static size_t publish_topics(const char *prefix, int from, int to, int pause_ms,
                             hostile_acked_list *acked, size_t *refused)
{
    int fd = itest_connect_hello(dut.port);
    assert_true(fd >= 0);
    size_t ok = 0;
    for (int i = from; i < to; i++) {
        char topic[64];
        snprintf(topic, sizeof topic, "t.%s%d", prefix, i);
        const char *topics[1] = {topic};
        const char *payloads[1] = {"x"};
        Protobus__Frame *f = itest_publish(fd, (uint64_t)i + 1, topics, payloads, 1, REPLY_MS);
        assert_non_null(f);
        if (f->body_case == PROTOBUS__FRAME__BODY_PUBLISH_ACK) {
            hostile_acked_add(acked, f->publish_ack->partitions[0], f->publish_ack->offsets[0],
                              topic);
            ok++;
        } else {
            assert_int_equal(f->body_case, PROTOBUS__FRAME__BODY_ERROR);
            assert_int_equal(f->error->code, PROTOBUS__CODE__RESOURCE_EXHAUSTED);
            assert_non_null(strstr(f->error->message, "max_partitions"));
            char part[80];
            snprintf(part, sizeof part, "t-%s%d", prefix, i);
            assert_false(dir_exists(dut.data_dir, part)); /* nothing on disk */
            (*refused)++;
        }
        protobus__frame__free_unpacked(f, NULL);
        if (pause_ms)
            itest_sleep_ms(pause_ms);
    }
    close(fd);
    return ok;
}

/* Waits (bounded) until the daemon's descriptors fall to at most `max`. */
static long wait_fds_at_most(long max)
{
    long n = hostile_fd_count(dut.pid);
    for (int i = 0; i < 300 && n > max; i++) {
        itest_sleep_ms(100);
        n = hostile_fd_count(dut.pid);
    }
    return n;
}

/* A subscription from the beginning to every topic: counts events until
 * `want` arrived (or 60 s passed); *max_fds: the daemon's descriptors,
 * sampled along the way. */
static size_t replay_all(size_t want, long *max_fds)
{
    *max_fds = 0;
    int fd = itest_connect_hello(dut.port);
    assert_true(fd >= 0);
    assert_int_equal(itest_subscribe(fd, 9, ".*", PROTOBUS__START_MODE__START_BEGINNING), 0);
    size_t got = 0;
    int64_t last_time = INT64_MIN;
    uint64_t deadline = itest_now_ms() + 60000;
    while (got < want && itest_now_ms() < deadline) {
        Protobus__Frame *f = itest_recv_frame(fd, 10000);
        if (!f)
            break;
        if (f->body_case == PROTOBUS__FRAME__BODY_EVENT) {
            Protobus__EncapsulatedEvent *ev = f->event->event;
            int64_t t = ev && ev->server_receive_time
                            ? ev->server_receive_time->seconds * 1000000000LL +
                                  ev->server_receive_time->nanos
                            : 0;
            assert_true(t >= last_time); /* merged by receive time */
            last_time = t;
            if (got++ % 16 == 0) {
                long n = hostile_fd_count(dut.pid);
                if (n > *max_fds)
                    *max_fds = n;
            }
        } else if (f->body_case == PROTOBUS__FRAME__BODY_ERROR) {
            fprintf(stderr, "replay: Error %s\n", f->error->message);
            protobus__frame__free_unpacked(f, NULL);
            break;
        }
        protobus__frame__free_unpacked(f, NULL);
    }
    close(fd);
    return got;
}

static void test_partitions_bounded_by_descriptors(void **state)
{
    (void)state;
    assert_int_equal(itest_daemon_start_nofile(&dut, server_conf, rules, NOFILE), 0);
    long maxp = logged_max_partitions();
    printf("F4 under a limit of %d descriptors: max_partitions = %ld\n", NOFILE, maxp);
    assert_true(maxp >= 16 && maxp < NOFILE / 3);
    long base_fds = hostile_fd_count(dut.pid), base_threads = hostile_thread_count(dut.pid);

    assert_int_equal(hostile_honest_start(&h, dut.port, "honest.x"), 0);
    itest_sleep_ms(200); /* the honest publisher's partition ("events") exists first */
    size_t refused = 0;
    size_t ok = publish_topics("a", 0, ATTACK_TOPICS, 0, &attack_acked, &refused);
    long peak_fds = hostile_fd_count(dut.pid), peak_threads = hostile_thread_count(dut.pid);
    printf("F4 attack: %d topics -> %zu partitions created, %zu refused; daemon fds %ld "
           "(before %ld), threads %ld (before %ld), RSS %ld KiB\n",
           ATTACK_TOPICS, ok, refused, peak_fds, base_fds, peak_threads, base_threads,
           hostile_rss_kb(dut.pid));
    assert_int_equal(ok + 1, (size_t)maxp); /* + "events" */
    assert_int_equal(refused, ATTACK_TOPICS - ok);
    assert_true(itest_log_contains(&dut, "publish refused: partition t-a"));
    /* Idle partitions give their descriptors and threads back. */
    long fds = wait_fds_at_most(base_fds + 8);
    long threads = hostile_thread_count(dut.pid);
    printf("F4 %d ms after the attack: fds %ld, threads %ld\n", IDLE_MS, fds, threads);
    assert_true(fds <= base_fds + 8);
    assert_true(threads <= base_threads + 4);
    hostile_honest_stop(&h);
    printf("honest publisher: %zu acked, %llu errors, slowest ack %llu ms; probes %llu, "
           "failed %llu\n",
           h.acked.n, (unsigned long long)h.errors, (unsigned long long)h.max_ack_ms,
           (unsigned long long)h.probes, (unsigned long long)h.probes_failed);
    assert_int_equal(h.errors, 0);
    assert_int_equal(h.probes_failed, 0);
    if (HOSTILE_RSS_CHECKED)
        assert_true(hostile_peak_kb(dut.pid) < RSS_BUDGET_KB);
    assert_int_equal(itest_daemon_stop(&dut), 0);

    /* 2. Above what the limit could hold open at once, written in turn. */
    char conf[4096];
    snprintf(conf, sizeof conf,
             "[server]\nlisten = 127.0.0.1:0\ndata_dir = %s\n%smax_partitions = %d\n%s",
             dut.data_dir, server_conf, MANY_PARTITIONS + 100, rules);
    FILE *cf = fopen(dut.conf, "w");
    assert_non_null(cf);
    fputs(conf, cf);
    assert_int_equal(fclose(cf), 0);
    assert_int_equal(itest_daemon_restart(&dut), 0);
    size_t refused2 = 0;
    size_t ok2 = publish_topics("b", 0, MANY_PARTITIONS, 2, &attack_acked, &refused2);
    printf("F4 max_partitions = %d: %zu more partitions created one after another under %d "
           "descriptors (fds now %ld)\n",
           MANY_PARTITIONS + 100, ok2, NOFILE, hostile_fd_count(dut.pid));
    assert_int_equal(ok2, MANY_PARTITIONS);
    assert_int_equal(refused2, 0);
    assert_int_equal(itest_daemon_stop(&dut), 0);

    /* 3. Restart on all of them, under the same limit. */
    assert_int_equal(itest_daemon_restart(&dut), 0);
    size_t total = attack_acked.n + h.acked.n;
    long restart_fds = hostile_fd_count(dut.pid);
    printf("F4 restart with %zu partitions under %d descriptors: up (fds %ld, threads %ld, RSS "
           "%ld KiB)\n",
           ok + ok2 + 1, NOFILE, restart_fds, hostile_thread_count(dut.pid),
           hostile_rss_kb(dut.pid));
    assert_int_equal(hostile_honest_start(&h2, dut.port, "honest.y"), 0);
    long replay_fds;
    size_t got = replay_all(total, &replay_fds);
    hostile_honest_stop(&h2);
    printf("F4 replay of all %zu partitions merged by time: %zu of %zu events; daemon fds "
           "during it at most %ld\n",
           ok + ok2 + 1, got, total, replay_fds);
    assert_int_equal(got, total);
    /* The subscription's socket and eventfd, the honest publisher's and the
     * probe's sockets, "events" while written: a few; plus at most
     * SUBRUN_REPLAY_READERS (8) segment files. */
    assert_true(replay_fds <= restart_fds + 8 + 12);
    assert_int_equal(h2.errors, 0);
    assert_int_equal(h2.probes_failed, 0);
    if (HOSTILE_RSS_CHECKED)
        assert_true(hostile_peak_kb(dut.pid) < RSS_BUDGET_KB);
    assert_int_equal(itest_daemon_stop(&dut), 0);

    char out[4096];
    int rc = hostile_cat_verify(dut.data_dir, out, sizeof out);
    printf("%s", out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "0 problem(s)"));
    assert_int_equal(hostile_check_acked(dut.data_dir, &attack_acked), 0);
    assert_int_equal(hostile_check_acked(dut.data_dir, &h.acked), 0);
    assert_int_equal(hostile_check_acked(dut.data_dir, &h2.acked), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_partitions_bounded_by_descriptors, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
