/*
 * test_sub - subscriptions end to end inside one process, what they
 * deliver (tests/lib/subharness.h: a real store and registry, the test
 * thread playing the loop thread and the client): history then live with
 * no gap and no duplicate while batches keep coming; history merged by
 * receive time, over more partitions than the replay keeps readers open;
 * START_OFFSETS (a partition created after the start included) / TIME /
 * LAST_N / NEW; events larger than the output buffer; pattern and tag
 * filtering, the match-everything pattern with tags included.
 * The live path is test_sub_live's subject, how subscriptions are refused
 * and end test_sub_end's.
 */
#include "subharness.h"
#include "subrun.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

typedef struct pub_thread {
    sh_fixture *f;
    int batches;
} pub_thread;

static void *publisher(void *arg)
{
    pub_thread *pt = arg;
    for (int i = 0; i < pt->batches; i++)
        sh_publish(pt->f, i % 2 ? "b" : "a", 8);
    return NULL;
}

static void test_history_then_live_no_gap_no_dup(void **state)
{
    sh_fixture *f = *state;
    sh_start(f, 4, 1 << 20, WAIT_MS);
    for (int i = 0; i < 5; i++) {
        sh_publish(f, "a", 8);
        sh_publish(f, "b", 8);
    }
    Protobus__Subscribe req = sh_sub_req(sh_all_topics, 1, PROTOBUS__START_MODE__START_BEGINNING);
    sh_client *c = sh_subscribe(f, &req);

    /* Publishers keep going while the subscription replays and switches. */
    pub_thread pt = {f, 300};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, publisher, &pt), 0);
    size_t total = 80 + 300 * 8;
    sh_item *items = calloc(total, sizeof *items);
    assert_non_null(items);
    uint64_t next[2] = {0, 0};
    for (size_t i = 0; i < total; i++) {
        sh_item *it = &items[i];
        assert_true(sh_next_item(c, it));
        assert_false(it->is_error);
        int k = strcmp(it->part, "a") == 0 ? 0 : 1;
        assert_string_equal(it->part, k ? "b" : "a");
        assert_int_equal(it->offset, next[k]); /* no gap, no duplicate, in order */
        next[k]++;
    }
    assert_int_equal(pthread_join(th, NULL), 0);
    /* And each is the event stored there. */
    for (size_t i = 0; i < total; i++) {
        uint64_t seq = (uint64_t)items[i].seq;
        assert_true(seq < f->seq);
        assert_string_equal(items[i].part, f->part_of[seq]);
        assert_int_equal(items[i].offset, f->offset_of[seq]);
        assert_string_equal(items[i].topic, sh_topic_of(seq));
    }
    /* Nothing after the last one but what comes next. */
    uint64_t marker = sh_publish(f, "a", 1);
    sh_expect_seq(f, c, marker);
    free(items);
    sh_client_close(c);
}

static void test_history_merged_by_receive_time(void **state)
{
    sh_fixture *f = *state;
    f->use_clock = true;
    sh_start(f, 2, 1 << 20, WAIT_MS);
    for (int k = 0; k < 5; k++) {
        atomic_store(&f->clock_ns, (2000 + 2 * k) * SEC);
        sh_publish(f, "b", 1);
        atomic_store(&f->clock_ns, (2001 + 2 * k) * SEC);
        sh_publish(f, "a", 1);
    }
    Protobus__Subscribe req = sh_sub_req(sh_all_topics, 1, PROTOBUS__START_MODE__START_BEGINNING);
    sh_client *c = sh_subscribe(f, &req);
    for (uint64_t s = 0; s < 10; s++)
        sh_expect_seq(f, c, s); /* b0 a0 b1 a1 ...: by time, not by partition */
    sh_client_close(c);
}

/* F4: a replay over more partitions than SUBRUN_REPLAY_READERS, their
 * events interleaved in time, keeps at most that many readers open (each
 * closed reader reopens at its place when its turn comes): everything is
 * delivered once, in receive-time order, for a plain start and a last-N
 * start (whose readers skip to wanted offsets). */
static void test_replay_more_partitions_than_readers(void **state)
{
    sh_fixture *f = *state;
    f->use_clock = true;
    sh_start(f, 2, 1 << 20, WAIT_MS);
    enum { P = 3 * SUBRUN_REPLAY_READERS + 1, ROUNDS = 4 };
    char name[16];
    uint64_t first = f->seq;
    for (int k = 0; k < ROUNDS; k++) {
        for (int i = 0; i < P; i++) {
            atomic_store(&f->clock_ns, (3000 + (int64_t)(k * P + i)) * SEC);
            snprintf(name, sizeof name, "p%02d", i);
            sh_publish(f, name, 1);
        }
    }
    Protobus__Subscribe req = sh_sub_req(sh_all_topics, 1, PROTOBUS__START_MODE__START_BEGINNING);
    sh_client *c = sh_subscribe(f, &req);
    for (uint64_t sq = first; sq < first + P * ROUNDS; sq++)
        sh_expect_seq(f, c, sq);
    sh_client_close(c);

    /* Last 1 of each topic of each partition, in time (= seq) order: seq
     * is the last of its topic (seq % 3) in its partition (seq % P) if no
     * later round put the same topic there. */
    req = sh_sub_req(sh_all_topics, 1, PROTOBUS__START_MODE__START_LAST_N);
    req.last_n = 1;
    c = sh_subscribe(f, &req);
    for (uint64_t sq = first; sq < first + P * ROUNDS; sq++) {
        bool last = true;
        for (uint64_t later = sq + P; later < first + P * ROUNDS; later += P)
            if (later % 3 == sq % 3)
                last = false;
        if (last)
            sh_expect_seq(f, c, sq);
    }
    sh_client_close(c);
}

static void test_start_offsets_and_late_partition(void **state)
{
    sh_fixture *f = *state;
    sh_start(f, 2, 1 << 20, WAIT_MS);
    uint64_t a0 = sh_publish(f, "a", 10);
    uint64_t b0 = sh_publish(f, "b", 10);
    Protobus__PartitionOffset oa = PROTOBUS__PARTITION_OFFSET__INIT, oc = oa;
    oa.partition = "a";
    oa.offset = 7;
    oc.partition = "c"; /* does not exist yet */
    oc.offset = 2;
    Protobus__PartitionOffset *offs[] = {&oa, &oc};
    Protobus__Subscribe req = sh_sub_req(sh_all_topics, 1, PROTOBUS__START_MODE__START_OFFSETS);
    req.offsets = offs;
    req.n_offsets = 2;
    sh_client *c = sh_subscribe(f, &req);
    for (uint64_t s = a0 + 7; s < a0 + 10; s++)
        sh_expect_seq(f, c, s);
    for (uint64_t s = b0; s < b0 + 10; s++)
        sh_expect_seq(f, c, s);
    sh_wait_subs(f, 1, 1);
    /* A partition created after the start: from its listed offset. */
    uint64_t c0 = sh_publish(f, "c", 5);
    for (uint64_t s = c0 + 2; s < c0 + 5; s++)
        sh_expect_seq(f, c, s);
    /* One not listed: from its beginning. */
    uint64_t d0 = sh_publish(f, "d", 2);
    sh_expect_seq(f, c, d0);
    sh_expect_seq(f, c, d0 + 1);
    uint64_t a10 = sh_publish(f, "a", 1);
    sh_expect_seq(f, c, a10);
    sh_client_close(c);
}

static void test_start_time(void **state)
{
    sh_fixture *f = *state;
    f->use_clock = true;
    sh_start(f, 2, 1 << 20, WAIT_MS);
    atomic_store(&f->clock_ns, 1000 * SEC);
    sh_publish(f, "a", 5);
    atomic_store(&f->clock_ns, 2000 * SEC);
    uint64_t late = sh_publish(f, "a", 5);

    Google__Protobuf__Timestamp from = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    from.seconds = 1500;
    Protobus__Subscribe req = sh_sub_req(sh_all_topics, 1, PROTOBUS__START_MODE__START_TIME);
    req.from_time = &from;
    sh_client *c1 = sh_subscribe(f, &req);
    for (uint64_t s = late; s < late + 5; s++)
        sh_expect_seq(f, c1, s);

    /* A start in the future: older live events are not delivered either. */
    Google__Protobuf__Timestamp future = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    future.seconds = 5000;
    req.from_time = &future;
    sh_client *c2 = sh_subscribe(f, &req);
    sh_wait_subs(f, 2, 2);
    atomic_store(&f->clock_ns, 3000 * SEC);
    uint64_t at3000 = sh_publish(f, "a", 1);
    atomic_store(&f->clock_ns, 6000 * SEC);
    uint64_t at6000 = sh_publish(f, "a", 1);
    sh_expect_seq(f, c1, at3000);
    sh_expect_seq(f, c1, at6000);
    sh_expect_seq(f, c2, at6000);
    sh_client_close(c1);
    sh_client_close(c2);
}

static void test_start_last_n(void **state)
{
    sh_fixture *f = *state;
    sh_start(f, 2, 1 << 20, WAIT_MS);
    sh_publish(f, "a", 16);
    sh_publish(f, "a", 14); /* seq = offset 0..29; topics t0 t1 t2 t0 ... */
    char *pats[] = {"t[01]"};
    Protobus__Subscribe req = sh_sub_req(pats, 1, PROTOBUS__START_MODE__START_LAST_N);
    req.last_n = 2;
    sh_client *c = sh_subscribe(f, &req);
    /* t0: ... 24 27; t1: ... 25 28; in offset (= time) order. */
    sh_expect_seq(f, c, 24);
    sh_expect_seq(f, c, 25);
    sh_expect_seq(f, c, 27);
    sh_expect_seq(f, c, 28);
    sh_wait_subs(f, 1, 1);
    sh_publish(f, "a", 3); /* 30 (t0), 31 (t1), 32 (t2) */
    sh_expect_seq(f, c, 30);
    sh_expect_seq(f, c, 31);
    uint64_t s = sh_publish(f, "a", 1); /* 33: t0 */
    sh_expect_seq(f, c, s);
    sh_client_close(c);
}

static void test_start_new(void **state)
{
    sh_fixture *f = *state;
    sh_start(f, 2, 1 << 20, WAIT_MS);
    sh_publish(f, "a", 10);
    Protobus__Subscribe req = sh_sub_req(sh_all_topics, 1, PROTOBUS__START_MODE__START_NEW);
    sh_client *c = sh_subscribe(f, &req);
    sh_wait_subs(f, 1, 1);
    uint64_t s = sh_publish(f, "a", 3);
    sh_expect_seq(f, c, s);
    sh_expect_seq(f, c, s + 1);
    sh_expect_seq(f, c, s + 2);
    sh_client_close(c);
}

/* Events bigger than the output buffer go out whole, from the files and
 * from the live queue. */
static void test_large_events(void **state)
{
    sh_fixture *f = *state;
    sh_start(f, 1, 4 << 20, WAIT_MS);
    f->pad = 600000;
    uint64_t s = sh_publish(f, "a", 2);
    Protobus__Subscribe req = sh_sub_req(sh_all_topics, 1, PROTOBUS__START_MODE__START_BEGINNING);
    sh_client *c = sh_subscribe(f, &req);
    sh_item it;
    for (uint64_t k = 0; k < 2; k++) {
        assert_true(sh_next_item(c, &it));
        assert_int_equal(it.seq, (int64_t)(s + k));
        assert_int_equal(it.payload_len, 600000);
    }
    sh_wait_subs(f, 1, 1);
    s = sh_publish(f, "a", 1);
    assert_true(sh_next_item(c, &it));
    assert_int_equal(it.seq, (int64_t)s);
    assert_int_equal(it.payload_len, 600000);
    sh_client_close(c);
}

static void test_pattern_and_tag_filter(void **state)
{
    sh_fixture *f = *state;
    sh_start(f, 2, 1 << 20, WAIT_MS);
    sh_publish(f, "a", 30);
    sh_publish(f, "b", 30);
    char *pats[] = {"t1", "t2"};
    Protobus__Subscribe req = sh_sub_req(pats, 2, PROTOBUS__START_MODE__START_BEGINNING);
    Protobus__Subscribe__TagsEntry t1 = PROTOBUS__SUBSCRIBE__TAGS_ENTRY__INIT, t2 = t1;
    t1.key = "env";
    t1.value = "prod";
    t2.key = "region";
    t2.value = "eu";
    Protobus__Subscribe__TagsEntry *tags[] = {&t1, &t2};
    req.tags = tags;
    req.n_tags = 2;
    sh_client *c = sh_subscribe(f, &req);
    for (uint64_t s = 0; s < 60; s++)
        if (s % 3 != 0 && sh_tags_prod_eu(s))
            sh_expect_seq(f, c, s);
    sh_wait_subs(f, 1, 1);
    uint64_t first = sh_publish(f, "a", 30);
    for (uint64_t s = first; s < first + 30; s++)
        if (s % 3 != 0 && sh_tags_prod_eu(s))
            sh_expect_seq(f, c, s);
    sh_client_close(c);
}

/* ".*" with tag filters: the match-everything shortcuts (no topic lookup in
 * the fan-out, no pattern run in the history) must still apply the tags,
 * from the files and live. */
static void test_match_all_with_tags_still_filters(void **state)
{
    sh_fixture *f = *state;
    sh_start(f, 2, 1 << 20, WAIT_MS);
    sh_publish(f, "a", 30);
    Protobus__Subscribe req = sh_sub_req(sh_all_topics, 1, PROTOBUS__START_MODE__START_BEGINNING);
    Protobus__Subscribe__TagsEntry t1 = PROTOBUS__SUBSCRIBE__TAGS_ENTRY__INIT, t2 = t1;
    t1.key = "env";
    t1.value = "prod";
    t2.key = "region";
    t2.value = "eu";
    Protobus__Subscribe__TagsEntry *tags[] = {&t1, &t2};
    req.tags = tags;
    req.n_tags = 2;
    sh_client *c = sh_subscribe(f, &req);
    for (uint64_t s = 0; s < 30; s++)
        if (sh_tags_prod_eu(s))
            sh_expect_seq(f, c, s);
    sh_wait_subs(f, 1, 1);
    uint64_t first = sh_publish(f, "a", 30);
    for (uint64_t s = first; s < first + 30; s++)
        if (sh_tags_prod_eu(s))
            sh_expect_seq(f, c, s);
    uint64_t marker = sh_publish(f, "a", 2); /* seq 60 (dev), 61 (prod, eu) */
    sh_expect_seq(f, c, marker + 1);
    sh_client_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_history_then_live_no_gap_no_dup, sh_setup,
                                        sh_teardown),
        cmocka_unit_test_setup_teardown(test_history_merged_by_receive_time, sh_setup, sh_teardown),
        cmocka_unit_test_setup_teardown(test_replay_more_partitions_than_readers, sh_setup,
                                        sh_teardown),
        cmocka_unit_test_setup_teardown(test_start_offsets_and_late_partition, sh_setup,
                                        sh_teardown),
        cmocka_unit_test_setup_teardown(test_start_time, sh_setup, sh_teardown),
        cmocka_unit_test_setup_teardown(test_start_last_n, sh_setup, sh_teardown),
        cmocka_unit_test_setup_teardown(test_start_new, sh_setup, sh_teardown),
        cmocka_unit_test_setup_teardown(test_pattern_and_tag_filter, sh_setup, sh_teardown),
        cmocka_unit_test_setup_teardown(test_match_all_with_tags_still_filters, sh_setup,
                                        sh_teardown),
        cmocka_unit_test_setup_teardown(test_large_events, sh_setup, sh_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
