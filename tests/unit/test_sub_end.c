/*
 * test_sub_end - how subscriptions are refused and how they end
 * (tests/lib/subharness.h: a real store and registry, the test thread
 * playing the loop thread and the client): RESOURCE_EXHAUSTED and a client
 * close freeing the thread; a stalled client dropped at the write
 * deadline; a corrupt record reported as DATA_LOSS with the rest still
 * delivered; invalid requests; stop.
 */
#include "subharness.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>

static void test_pool_full_and_client_close_frees_thread(void **state)
{
    sh_fixture *f = *state;
    sh_start(f, 1, 1 << 20, WAIT_MS);
    Protobus__Subscribe req = sh_sub_req(sh_all_topics, 1, PROTOBUS__START_MODE__START_NEW);
    sh_client *c1 = sh_subscribe(f, &req);
    sh_wait_subs(f, 1, 1);
    char err[512];
    assert_int_equal(sh_refused_req(f, &req, err, sizeof err), PROTOBUS__CODE__RESOURCE_EXHAUSTED);
    assert_non_null(
        strstr(err, "all 1 subscriptions are taken (server setting max_subscriptions)"));

    /* The client leaves: the subscription ends and its thread is free. */
    sh_client_close(c1);
    sh_wait_subs(f, 0, 0);
    sh_client *c2 = sh_subscribe(f, &req);
    sh_wait_subs(f, 1, 1);
    uint64_t s = sh_publish(f, "a", 1);
    sh_expect_seq(f, c2, s);
    sh_client_close(c2);
}

/* A client that reads nothing: dropped once no byte went out for the
 * deadline, and the thread is free again. */
static void test_stalled_client_dropped_at_deadline(void **state)
{
    sh_fixture *f = *state;
    sh_start(f, 1, 1 << 20, 200);
    f->pad = 16000;
    for (int i = 0; i < 10; i++)
        sh_publish(f, "a", 10); /* 1.6 MB: far more than the socket buffers */
    Protobus__Subscribe req = sh_sub_req(sh_all_topics, 1, PROTOBUS__START_MODE__START_BEGINNING);
    sh_client *c = sh_subscribe(f, &req);
    sh_wait_subs(f, 0, 0);
    /* What was written is readable, then end of stream. */
    sh_item it;
    size_t n = 0;
    while (sh_next_item(c, &it)) {
        assert_false(it.is_error);
        assert_int_equal(it.offset, n);
        n++;
    }
    assert_true(n < 100);
    sh_client_close(c);
}

/* Flips one byte inside the event of record `offset` of partition dir/a. */
static void corrupt_record(sh_fixture *f, uint64_t offset)
{
    char path[128];
    snprintf(path, sizeof path, "%s/a/%020d.log", f->root, 0);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint64_t pos = 40; /* segment header */
    for (uint64_t i = 0; i < offset; i++) {
        uint32_t len;
        assert_int_equal(pread(fd, &len, 4, (off_t)pos + 4), 4);
        pos += 8 + len;
    }
    uint8_t b;
    off_t at = (off_t)pos + 24 + 5; /* a byte of the topic field */
    assert_int_equal(pread(fd, &b, 1, at), 1);
    b ^= 0x40;
    assert_int_equal(pwrite(fd, &b, 1, at), 1);
    assert_int_equal(close(fd), 0);
}

static void test_corrupt_record_data_loss_then_continue(void **state)
{
    sh_fixture *f = *state;
    sh_start(f, 1, 1 << 20, WAIT_MS);
    sh_publish(f, "a", 10);
    corrupt_record(f, 4);
    Protobus__Subscribe req = sh_sub_req(sh_all_topics, 1, PROTOBUS__START_MODE__START_BEGINNING);
    sh_client *c = sh_subscribe(f, &req);
    for (uint64_t s = 0; s < 4; s++)
        sh_expect_seq(f, c, s);
    sh_item it;
    assert_true(sh_next_item(c, &it));
    assert_true(it.is_error);
    assert_int_equal(it.code, PROTOBUS__CODE__DATA_LOSS);
    assert_string_equal(it.part, "a");
    assert_int_equal(it.first, 4);
    assert_int_equal(it.last, 4);
    assert_non_null(strstr(it.msg, "00000000000000000000.log"));
    assert_non_null(strstr(it.msg, "byte"));
    for (uint64_t s = 5; s < 10; s++)
        sh_expect_seq(f, c, s);
    sh_wait_subs(f, 1, 1);
    uint64_t s = sh_publish(f, "a", 1);
    sh_expect_seq(f, c, s);
    sh_client_close(c);
}

static void test_invalid_requests(void **state)
{
    sh_fixture *f = *state;
    sh_start(f, 2, 1 << 20, WAIT_MS);
    char err[512];

    static const uint8_t garbage[] = {0x0a, 0x7f, 'x'}; /* length past the end */
    assert_int_equal(sh_subscribe_refused(f, garbage, sizeof garbage, err, sizeof err),
                     PROTOBUS__CODE__INVALID_ARGUMENT);
    assert_non_null(strstr(err, "malformed"));

    Protobus__Subscribe req = sh_sub_req(NULL, 0, PROTOBUS__START_MODE__START_BEGINNING);
    assert_int_equal(sh_refused_req(f, &req, err, sizeof err), PROTOBUS__CODE__INVALID_ARGUMENT);
    assert_non_null(strstr(err, "no patterns"));

    char *bad[] = {"ok", "a(b"};
    req = sh_sub_req(bad, 2, PROTOBUS__START_MODE__START_BEGINNING);
    assert_int_equal(sh_refused_req(f, &req, err, sizeof err), PROTOBUS__CODE__INVALID_ARGUMENT);
    assert_non_null(strstr(err, "a(b"));
    assert_non_null(strstr(err, "offset 3"));

    req = sh_sub_req(sh_all_topics, 1, PROTOBUS__START_MODE__START_LAST_N);
    assert_int_equal(sh_refused_req(f, &req, err, sizeof err), PROTOBUS__CODE__INVALID_ARGUMENT);
    assert_non_null(strstr(err, "last_n"));
    req.last_n = 5; /* the partitions keep 4 per topic */
    assert_int_equal(sh_refused_req(f, &req, err, sizeof err), PROTOBUS__CODE__INVALID_ARGUMENT);
    assert_non_null(strstr(err, "keeps per topic"));

    Protobus__PartitionOffset o1 = PROTOBUS__PARTITION_OFFSET__INIT, o2 = o1;
    o1.partition = "../etc";
    Protobus__PartitionOffset *offs[] = {&o1, &o2};
    req = sh_sub_req(sh_all_topics, 1, PROTOBUS__START_MODE__START_OFFSETS);
    req.offsets = offs;
    req.n_offsets = 1;
    assert_int_equal(sh_refused_req(f, &req, err, sizeof err), PROTOBUS__CODE__INVALID_ARGUMENT);
    assert_non_null(strstr(err, "\"../etc\" is not a valid partition name"));
    o1.partition = "a";
    o2.partition = "a";
    req.n_offsets = 2;
    assert_int_equal(sh_refused_req(f, &req, err, sizeof err), PROTOBUS__CODE__INVALID_ARGUMENT);
    assert_non_null(strstr(err, "listed twice"));

    req = sh_sub_req(sh_all_topics, 1, PROTOBUS__START_MODE__START_TIME);
    assert_int_equal(sh_refused_req(f, &req, err, sizeof err), PROTOBUS__CODE__INVALID_ARGUMENT);
    assert_non_null(strstr(err, "from_time"));

    req = sh_sub_req(sh_all_topics, 1, (Protobus__StartMode)9);
    assert_int_equal(sh_refused_req(f, &req, err, sizeof err), PROTOBUS__CODE__INVALID_ARGUMENT);
    assert_non_null(strstr(err, "start mode 9"));

    assert_int_equal(sub_registry_active(f->reg), 0);
}

static void test_stop_ends_subscriptions(void **state)
{
    sh_fixture *f = *state;
    sh_start(f, 3, 1 << 20, WAIT_MS);
    sh_publish(f, "a", 3);
    Protobus__Subscribe req = sh_sub_req(sh_all_topics, 1, PROTOBUS__START_MODE__START_BEGINNING);
    sh_client *c1 = sh_subscribe(f, &req);
    sh_client *c2 = sh_subscribe(f, &req);
    sh_wait_subs(f, 2, 2);
    sub_registry_stop(f->reg);
    assert_int_equal(sub_registry_active(f->reg), 0);
    sh_item it;
    for (uint64_t s = 0; s < 3; s++)
        sh_expect_seq(f, c1, s);
    assert_false(sh_next_item(c1, &it));
    for (uint64_t s = 0; s < 3; s++)
        sh_expect_seq(f, c2, s);
    assert_false(sh_next_item(c2, &it));
    char err[512];
    assert_int_equal(sh_refused_req(f, &req, err, sizeof err), PROTOBUS__CODE__UNAVAILABLE);
    /* Publishing after the stop is harmless. */
    sh_publish(f, "a", 1);
    sh_client_close(c1);
    sh_client_close(c2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pool_full_and_client_close_frees_thread, sh_setup,
                                        sh_teardown),
        cmocka_unit_test_setup_teardown(test_stalled_client_dropped_at_deadline, sh_setup,
                                        sh_teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_record_data_loss_then_continue, sh_setup,
                                        sh_teardown),
        cmocka_unit_test_setup_teardown(test_invalid_requests, sh_setup, sh_teardown),
        cmocka_unit_test_setup_teardown(test_stop_ends_subscriptions, sh_setup, sh_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
