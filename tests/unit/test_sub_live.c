/*
 * test_sub_live - subscriptions' live path (tests/lib/subharness.h: a real
 * store and registry, the test thread playing the loop thread and the
 * client): a tiny live queue with a slow reader (overflow) still
 * delivering everything once in order; the waker's fast path handing over
 * to the subscription's thread; the writers' fan-out cache (topic ->
 * matching subscriptions) answering right while subscriptions come and go,
 * and left unused for keyed-only sets; the live queues' total budget
 * (overflowing to the files, still exactly once).
 */
#include "subharness.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* A live queue that holds a few events and a client reading a little at a
 * time: the subscription keeps overflowing and catching up from the files,
 * yet every event arrives once, in offset order per partition. */
static void test_overflow_slow_reader_exactly_once(void **state)
{
    sh_fixture *f = *state;
    sh_start(f, 2, 512, WAIT_MS);
    sh_publish(f, "a", 20);
    sh_publish(f, "b", 20);
    Protobus__Subscribe req = sh_sub_req(sh_all_topics, 1, PROTOBUS__START_MODE__START_BEGINNING);
    sh_client *c = sh_subscribe(f, &req);
    uint64_t next[2] = {0, 0};
    size_t got = 0;
    sh_item it;
    for (int i = 0; i < 120; i++) {
        sh_publish(f, i % 3 ? "a" : "b", 8);
        for (int k = 0; k < 3; k++) {
            assert_true(sh_next_item(c, &it));
            assert_false(it.is_error);
            int p = strcmp(it.part, "a") == 0 ? 0 : 1;
            assert_int_equal(it.offset, next[p]);
            next[p]++;
            got++;
        }
    }
    while (got < f->seq) {
        assert_true(sh_next_item(c, &it));
        assert_false(it.is_error);
        int p = strcmp(it.part, "a") == 0 ? 0 : 1;
        assert_int_equal(it.offset, next[p]);
        next[p]++;
        got++;
    }
    assert_int_equal(next[0], 20 + 80 * 8);
    assert_int_equal(next[1], 20 + 40 * 8);
    uint64_t marker = sh_publish(f, "b", 1);
    sh_expect_seq(f, c, marker);
    sh_client_close(c);
}

/* Expects, for each client, the events of [first, first + n) its pattern
 * selects (by topic number: bit t of want[i] set = client i wants tN). */
static void expect_topics(sh_fixture *f, sh_client **c, const unsigned *want, size_t nc,
                          uint64_t first, size_t n)
{
    for (size_t i = 0; i < nc; i++)
        for (uint64_t s = first; s < first + n; s++)
            if (want[i] & (1u << (s % 3)))
                sh_expect_seq(f, c[i], s);
}

static fanout_stats stats(sh_fixture *f)
{
    fanout_stats st;
    fanout_get_stats(f->live, &st);
    return st;
}

/* The waker's fast path (fanout_fast): records for a sleeping subscription
 * are written by the waker itself; when the reader does not keep up, what
 * the socket refused (a partial frame included) and everything after it is
 * its own thread's, and the reader still gets every event once, in order. */
static void test_fast_path_then_thread_exactly_once(void **state)
{
    sh_fixture *f = *state;
    sh_start(f, 2, 1 << 22, WAIT_MS);
    sh_publish(f, "a", 1); /* "a" is known at subscribe time: its records take the fast path */
    Protobus__Subscribe req = sh_sub_req(sh_all_topics, 1, PROTOBUS__START_MODE__START_BEGINNING);
    sh_client *c = sh_subscribe(f, &req);
    sh_wait_subs(f, 1, 1);
    sh_expect_seq(f, c, 0);
    /* The thread counts as tailing just before it sleeps: a batch may
     * still find it awake (signalled); some batch soon takes the fast path. */
    fanout_stats s0 = stats(f);
    for (int i = 0; i < 200 && stats(f).fast_done == s0.fast_done; i++) {
        uint64_t first = sh_publish(f, "a", 3);
        for (uint64_t k = 0; k < 3; k++)
            sh_expect_seq(f, c, first + k);
    }
    fanout_stats s1 = stats(f);
    assert_true(s1.fast_done > s0.fast_done);

    /* A reader that stops reading: ~1.3 MB of events of ~8 KB fill the
     * socket; nothing is lost, duplicated or reordered. Meanwhile another
     * subscriber gets every batch as it comes: the stalled one costs the
     * waker a refused send, never a wait. */
    Protobus__Subscribe req_new = sh_sub_req(sh_all_topics, 1, PROTOBUS__START_MODE__START_NEW);
    sh_client *other = sh_subscribe(f, &req_new);
    sh_wait_subs(f, 2, 2);
    f->pad = 8000;
    uint64_t from = f->seq;
    for (int i = 0; i < 40; i++) {
        uint64_t first = sh_publish(f, "a", 4);
        for (uint64_t k = 0; k < 4; k++)
            sh_expect_seq(f, other, first + k);
    }
    for (uint64_t s = from; s < f->seq; s++)
        sh_expect_seq(f, c, s);
    fanout_stats s2 = stats(f);
    assert_true(s2.fast_thread > s1.fast_thread);
    f->pad = 0;
    uint64_t marker = sh_publish(f, "a", 1);
    sh_expect_seq(f, c, marker);
    sh_expect_seq(f, other, marker);
    sh_client_close(other);
    sh_client_close(c);
}

/* The writers cache topic -> matching subscriptions; every answer stays
 * right when subscriptions end and start (the cache of the old set is not
 * used), repeated topics are answered from the cache, and a subscription
 * to everything needs no lookup at all. ("t0|t1": a top-level alternation
 * has no key, so the set is not keyed-only and the cache is used.) */
static void test_fanout_cache_as_subscriptions_come_and_go(void **state)
{
    sh_fixture *f = *state;
    sh_start(f, 4, 1 << 20, WAIT_MS);
    char *p_t0[] = {"t0"}, *p_t01[] = {"t0|t1"}, *p_t20[] = {"t2", "t0"};
    Protobus__Subscribe r_t0 = sh_sub_req(p_t0, 1, PROTOBUS__START_MODE__START_NEW);
    Protobus__Subscribe r_t01 = sh_sub_req(p_t01, 1, PROTOBUS__START_MODE__START_NEW);
    Protobus__Subscribe r_t20 = sh_sub_req(p_t20, 2, PROTOBUS__START_MODE__START_NEW);
    Protobus__Subscribe r_all = sh_sub_req(sh_all_topics, 1, PROTOBUS__START_MODE__START_NEW);
    sh_client *c[3] = {sh_subscribe(f, &r_t0), sh_subscribe(f, &r_t01), sh_subscribe(f, &r_all)};
    sh_wait_subs(f, 3, 3);

    /* First sight of t0..t2: the patterns run (misses); the same topics
     * again: answered from the cache, no miss added. */
    fanout_stats s0 = stats(f);
    uint64_t first = sh_publish(f, "a", 30);
    unsigned want[3] = {1, 3, 7};
    expect_topics(f, c, want, 3, first, 30);
    fanout_stats s1 = stats(f);
    assert_int_equal(s1.match_misses - s0.match_misses, 30);
    assert_int_equal(s1.match_hits, s0.match_hits);
    first = sh_publish(f, "a", 30);
    expect_topics(f, c, want, 3, first, 30);
    fanout_stats s2 = stats(f);
    assert_int_equal(s2.match_hits - s1.match_hits, 30);
    assert_int_equal(s2.match_misses, s1.match_misses);

    /* t0's subscriber leaves, one for t2|t0 arrives: the cached answers
     * (t0 -> {first, second}) are stale and must not be used. */
    sh_client_close(c[0]);
    sh_wait_subs(f, 2, 2);
    c[0] = sh_subscribe(f, &r_t20);
    sh_wait_subs(f, 3, 3);
    first = sh_publish(f, "a", 30);
    want[0] = 5;
    expect_topics(f, c, want, 3, first, 30);
    fanout_stats s3 = stats(f);
    assert_int_equal(s3.match_misses - s2.match_misses, 30);
    /* Another partition has its own writer and cache: right answers too. */
    first = sh_publish(f, "b", 30);
    expect_topics(f, c, want, 3, first, 30);
    first = sh_publish(f, "a", 30);
    expect_topics(f, c, want, 3, first, 30);
    fanout_stats s4 = stats(f);
    assert_int_equal(s4.match_hits - s3.match_hits, 30);
    assert_int_equal(s4.match_misses - s3.match_misses, 30); /* b's first sight */

    /* Only the ".*" subscription left: it gets everything, without any
     * lookup. */
    sh_client_close(c[0]);
    sh_client_close(c[1]);
    sh_wait_subs(f, 1, 1);
    fanout_stats s5 = stats(f);
    first = sh_publish(f, "a", 30);
    unsigned all = 7;
    expect_topics(f, &c[2], &all, 1, first, 30);
    fanout_stats s6 = stats(f);
    assert_int_equal(s6.match_hits, s5.match_hits);
    assert_int_equal(s6.match_misses, s5.match_misses);
    sh_client_close(c[2]);
}

/* Subscriptions whose patterns all have keys (matcher.h, keyed_only): the
 * writers do not fill the match cache (its memory, for lookups no cheaper
 * than the matcher's), every record asks the matcher, and the answers are
 * the same as with the cache. A subscription without keys brings the cache
 * back. */
static void test_fanout_keyed_only_set_skips_the_cache(void **state)
{
    sh_fixture *f = *state;
    sh_start(f, 4, 1 << 20, WAIT_MS);
    char *p_t0[] = {"t0"}, *p_t1[] = {"t1", "t2"}, *p_alt[] = {"t0|t2"};
    Protobus__Subscribe r_t0 = sh_sub_req(p_t0, 1, PROTOBUS__START_MODE__START_NEW);
    Protobus__Subscribe r_t1 = sh_sub_req(p_t1, 2, PROTOBUS__START_MODE__START_NEW);
    Protobus__Subscribe r_alt = sh_sub_req(p_alt, 1, PROTOBUS__START_MODE__START_NEW);
    sh_client *c[3] = {sh_subscribe(f, &r_t0), sh_subscribe(f, &r_t1), NULL};
    sh_wait_subs(f, 2, 2);
    unsigned want[3] = {1, 6, 5};
    fanout_stats s0 = stats(f);
    uint64_t first = sh_publish(f, "a", 30);
    expect_topics(f, c, want, 2, first, 30);
    first = sh_publish(f, "a", 30);
    expect_topics(f, c, want, 2, first, 30);
    fanout_stats s1 = stats(f);
    assert_int_equal(s1.match_hits, s0.match_hits);
    assert_int_equal(s1.match_misses - s0.match_misses, 60);

    c[2] = sh_subscribe(f, &r_alt);
    sh_wait_subs(f, 3, 3);
    first = sh_publish(f, "a", 30);
    expect_topics(f, c, want, 3, first, 30);
    fanout_stats s2 = stats(f);
    first = sh_publish(f, "a", 30);
    expect_topics(f, c, want, 3, first, 30);
    fanout_stats s3 = stats(f);
    /* Once the matcher said the set is not keyed-only (the first chunk
     * after the change), repeated topics are answered from the cache. */
    assert_int_equal(s3.match_hits - s2.match_hits, 30);
    assert_int_equal(s3.match_misses, s2.match_misses);
    for (size_t i = 0; i < 3; i++)
        sh_client_close(c[i]);
}

/* Live queues with room for 1 MiB each but 16 KiB for all of them: clients
 * that do not read make their queues pass the shared budget, which
 * overflows them (never the budget), and they still get every event once,
 * in order, from the files. When they end, the budget is all free again. */
static void test_queue_budget_overflows_to_files_exactly_once(void **state)
{
    sh_fixture *f = *state;
    /* ~16 KB events: 480 of them (7.7 MB) are more than a connection's
     * socket buffers hold while its client reads nothing (the send buffer
     * autotunes up to tcp_wmem's 4 MiB; the receive one stays near its
     * 128 KiB default without reads), so the queues must overflow however
     * fast the subscription threads run. With 1.5 KB events a thread that
     * kept up could push everything into the sockets (a busy machine saw
     * no overflow, twice). */
    f->pad = 16000;
    sh_start_total(f, 3, 1 << 20, 16384, WAIT_MS);
    Protobus__Subscribe req = sh_sub_req(sh_all_topics, 1, PROTOBUS__START_MODE__START_NEW);
    sh_client *c[2] = {sh_subscribe(f, &req), sh_subscribe(f, &req)};
    sh_wait_subs(f, 2, 2);
    assert_int_equal(stats(f).queue_budget, 16384);
    /* 480 events of ~16 KB: far more than the socket buffers and the
     * budget hold while nobody reads. */
    for (int i = 0; i < 60; i++) {
        sh_publish(f, "a", 8);
        assert_true(stats(f).queued_bytes <= 16384);
    }
    assert_true(stats(f).queue_resets > 0);
    for (int k = 0; k < 2; k++)
        for (uint64_t s = 0; s < 480; s++)
            sh_expect_seq(f, c[k], s);
    uint64_t marker = sh_publish(f, "a", 1);
    sh_expect_seq(f, c[0], marker);
    sh_expect_seq(f, c[1], marker);
    sh_client_close(c[0]);
    sh_client_close(c[1]);
    sh_wait_subs(f, 0, 0);
    assert_int_equal(stats(f).queued_bytes, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_overflow_slow_reader_exactly_once, sh_setup,
                                        sh_teardown),
        cmocka_unit_test_setup_teardown(test_fast_path_then_thread_exactly_once, sh_setup,
                                        sh_teardown),
        cmocka_unit_test_setup_teardown(test_fanout_cache_as_subscriptions_come_and_go, sh_setup,
                                        sh_teardown),
        cmocka_unit_test_setup_teardown(test_fanout_keyed_only_set_skips_the_cache, sh_setup,
                                        sh_teardown),
        cmocka_unit_test_setup_teardown(test_queue_budget_overflows_to_files_exactly_once, sh_setup,
                                        sh_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
