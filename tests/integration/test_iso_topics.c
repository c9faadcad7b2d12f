/*
 * Isolation, F9 (issue 10): distinct topics, against the real protobusd.
 *
 * An attacker publishes 400,000 distinct topics of 100 bytes, 2 events each
 * (1,000 events per Publish). The
 * topic table keeps at most max_topics_in_memory topics in memory (a small
 * value here, so that most of them leave memory); the others move to the
 * partition's topics.cold file, from which a `--last N` subscription still
 * finds them. Meanwhile an honest publisher gets its acks and the probe its
 * Hellos; the daemon's RSS stays bounded and the topic snapshot written at
 * close holds only the topics in memory. After a restart, `--last N` still
 * finds evicted topics, `protobus cat --verify` is clean, and every
 * acknowledged honest event is read back.
 *
 * The cost of evictions (how long the attack took, the cold file's size) is
 * printed; nothing asserts a speed. RSS bounds are generous.
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
#include <unistd.h>

#define TOPICS        400000
#define ROUNDS        2 /* events per topic */
#define PER_PUBLISH   1000
#define IN_MEMORY     20000
#define RSS_BUDGET_KB (256L * 1024)
#define REPLY_MS      60000

static itest_daemon dut;
static hostile_honest h;
static uint64_t *topic_offsets;

static int teardown(void **state)
{
    (void)state;
    hostile_honest_stop(&h);
    hostile_acked_free(&h.acked);
    free(topic_offsets);
    topic_offsets = NULL;
    itest_daemon_cleanup(&dut);
    return 0;
}

static long file_kb(const char *name)
{
    char path[512];
    struct stat st;
    snprintf(path, sizeof path, "%s/events/%s", dut.data_dir, name);
    return stat(path, &st) == 0 ? (long)(st.st_size / 1024) : -1;
}

/* The topic of attack number i: "x.<i>." padded with 'p' to 100 bytes. */
static void topic_name(char *buf, size_t cap, int i)
{
    int n = snprintf(buf, cap, "x.%d.", i);
    while (n < 100 && (size_t)n + 1 < cap)
        buf[n++] = 'p';
    buf[n] = '\0';
}

/* Publishes ROUNDS events to each topic x.<i>..., i in [0, TOPICS),
 * PER_PUBLISH per Publish, round after round. *offsets: the offsets of the
 * last round (all go to "events"); *rss_half and *rss_full: the RSS after
 * half and after all the topics of the first round (all new). */
static void publish_distinct_topics(uint64_t *offsets, long *rss_half, long *rss_full)
{
    int fd = itest_connect_hello(dut.port);
    assert_true(fd >= 0);
    static char names[PER_PUBLISH][112];
    const char *topics[PER_PUBLISH], *payloads[PER_PUBLISH];
    for (int k = 0; k < PER_PUBLISH; k++) {
        topics[k] = names[k];
        payloads[k] = "p";
    }
    uint64_t id = 0;
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < TOPICS; i += PER_PUBLISH) {
            if (r == 0 && i == TOPICS / 2)
                *rss_half = hostile_rss_kb(dut.pid);
            for (int k = 0; k < PER_PUBLISH; k++)
                topic_name(names[k], sizeof names[k], i + k);
            Protobus__Frame *f = itest_publish(fd, ++id, topics, payloads, PER_PUBLISH, REPLY_MS);
            assert_non_null(f);
            if (f->body_case == PROTOBUS__FRAME__BODY_ERROR)
                fprintf(stderr, "attack: Error %s\n", f->error->message);
            assert_int_equal(f->body_case, PROTOBUS__FRAME__BODY_PUBLISH_ACK);
            assert_int_equal(f->publish_ack->n_offsets, PER_PUBLISH);
            for (int k = 0; k < PER_PUBLISH; k++)
                offsets[i + k] = f->publish_ack->offsets[k];
            protobus__frame__free_unpacked(f, NULL);
        }
        if (r == 0)
            *rss_full = hostile_rss_kb(dut.pid);
    }
    close(fd);
}

/* A START_LAST_N subscription for `pattern`: the offsets of the events it
 * delivers before `want` arrived or 5 s passed without one. */
static size_t last_n(const char *pattern, uint32_t n, uint64_t *got, size_t want)
{
    int fd = itest_connect_hello(dut.port);
    assert_true(fd >= 0);
    Protobus__Subscribe s = PROTOBUS__SUBSCRIBE__INIT;
    char *patterns[1] = {(char *)pattern};
    s.n_patterns = 1;
    s.patterns = patterns;
    s.start = PROTOBUS__START_MODE__START_LAST_N;
    s.last_n = n;
    Protobus__Frame f = PROTOBUS__FRAME__INIT;
    f.id = 5;
    f.body_case = PROTOBUS__FRAME__BODY_SUBSCRIBE;
    f.subscribe = &s;
    assert_int_equal(itest_send_frame(fd, &f), 0);
    size_t k = 0;
    while (k < want) {
        Protobus__Frame *r = itest_recv_frame(fd, 5000);
        if (!r)
            break;
        if (r->body_case == PROTOBUS__FRAME__BODY_EVENT)
            got[k++] = r->event->offset;
        else if (r->body_case == PROTOBUS__FRAME__BODY_ERROR)
            fprintf(stderr, "last_n: Error %s\n", r->error->message);
        protobus__frame__free_unpacked(r, NULL);
    }
    close(fd);
    return k;
}

/* --last N finds topics that left memory long ago (x.17, x.1000..x.1999)
 * and recent ones. */
static void check_last_n(const uint64_t *offsets)
{
    uint64_t got[1100];
    uint64_t t0 = itest_now_ms();
    assert_int_equal(last_n("x\\.17\\.p*", 1, got, 1), 1);
    uint64_t t1 = itest_now_ms();
    assert_int_equal(got[0], offsets[17]);
    assert_int_equal(last_n("x\\.17\\.p*", 2, got, 2), 2);
    assert_int_equal(got[1], offsets[17]);
    assert_true(got[0] < got[1]); /* the round before */
    assert_int_equal(last_n("x\\.1[0-9]{3}\\.p*", 1, got, 1000), 1000);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(got[i], offsets[1000 + i]);
    assert_int_equal(last_n("x\\.399999\\.p*", 1, got, 1), 1);
    assert_int_equal(got[0], offsets[399999]);
    printf("F9 --last 1 of an evicted topic: found in %llu ms\n", (unsigned long long)(t1 - t0));
}

static void test_topics_leave_memory(void **state)
{
    (void)state;
    char extra[128];
    snprintf(extra, sizeof extra, "max_topics_in_memory = %d\n", IN_MEMORY);
    assert_int_equal(itest_daemon_start(&dut, extra, NULL), 0);
    assert_int_equal(hostile_honest_start(&h, dut.port, "honest.z"), 0);
    uint64_t *offsets = topic_offsets = calloc(TOPICS, sizeof *topic_offsets);
    assert_non_null(offsets);
    long base = hostile_rss_kb(dut.pid), half = 0, full = 0;
    uint64_t t0 = itest_now_ms();
    publish_distinct_topics(offsets, &half, &full);
    uint64_t dt = itest_now_ms() - t0;
    long rss = hostile_rss_kb(dut.pid), peak = hostile_peak_kb(dut.pid);
    printf("F9 %d distinct topics x %d events in %llu ms: RSS %ld KiB (before %ld; first "
           "round: %ld after half the topics, %ld after all), peak %ld KiB; topics.cold %ld "
           "KiB\n",
           TOPICS, ROUNDS, (unsigned long long)dt, rss, base, half, full, peak,
           file_kb("topics.cold"));
    check_last_n(offsets);
    hostile_honest_stop(&h);
    printf("honest publisher: %zu acked, %llu errors, slowest ack %llu ms; probes %llu, "
           "failed %llu, slowest %llu ms\n",
           h.acked.n, (unsigned long long)h.errors, (unsigned long long)h.max_ack_ms,
           (unsigned long long)h.probes, (unsigned long long)h.probes_failed,
           (unsigned long long)h.max_probe_ms);
    assert_int_equal(h.errors, 0);
    assert_int_equal(h.probes_failed, 0);
    if (HOSTILE_RSS_CHECKED) {
        assert_true(peak < RSS_BUDGET_KB);
        /* Bounded, not climbing: the last 200,000 new topics took (nearly)
         * no memory (the route cache is full and recycles; the topic table
         * is at its bound). Unbounded, they took ~250 bytes each, ~48 MiB. */
        assert_true(full - half < 16L * 1024);
    }

    assert_int_equal(itest_daemon_stop(&dut), 0);
    long snap = file_kb("topics.snapshot"), cold = file_kb("topics.cold");
    printf("F9 at close: topics.snapshot %ld KiB, topics.cold %ld KiB\n", snap, cold);
    assert_true(snap >= 0 && snap < 16 * 1024);
    assert_true(cold > 0);
    assert_int_equal(itest_daemon_restart(&dut), 0);
    check_last_n(offsets);
    printf("F9 after restart: RSS %ld KiB\n", hostile_rss_kb(dut.pid));
    assert_int_equal(itest_daemon_stop(&dut), 0);

    char out[4096];
    int rc = hostile_cat_verify(dut.data_dir, out, sizeof out);
    printf("%s", out);
    assert_int_equal(rc, 0);
    assert_int_equal(hostile_check_acked(dut.data_dir, &h.acked), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_topics_leave_memory, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
