/*
 * test_retention - the retention policy (server/retention.c) under the real
 * partition writer, with an injected clock (tests/lib/retharness):
 *   - size retention after rotation: the oldest segments go, the first
 *     offset rises, a reader from the start reads a contiguous range;
 *   - age retention on the receive time of a segment's newest record, run
 *     by partition_upkeep_tick on a DORMANT partition (nothing published),
 *     and at open for what aged while the daemon was down;
 *   - a mirror's floor holds segments back;
 *   - a reader in the middle of a segment that is removed keeps reading it;
 *   - the topic table rebuilt after retention skips what it removed.
 * How segments are removed (crash-safe, off the writer, recycled): test_removal.c.
 */
#include "retharness.h"
#include "testfs.h"
#include "fileio.h"
#include "log.h"
#include "logging.h"
#include "partition.h"
#include "partsubmit.h"
#include "pb_errors.h"
#include "reader.h"
#include "segment.h"
#include "simio.h"
#include "unlinker.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static void test_size_retention(void **state)
{
    (void)state;
    partition_options o = rh_popts();
    o.retain.bytes = 4000;
    partition *p;
    atomic_store(&rh_clock_ns, T0);
    assert_int_equal(partition_open(&p, rh_root, "p", &o), 0);
    assert_int_equal(partition_first_offset(p), 0);
    for (int i = 0; i < 20; i++)
        rh_publish(p, 10);
    rh_wait_dormant(p);
    uint64_t first = partition_first_offset(p);
    assert_true(first > 0);
    /* Within the limit plus the segment that just rotated. */
    assert_true(rh_dir_log_bytes(rh_part_dir) <= 4000 + 1024);
    assert_int_equal(rh_read_all(rh_part_dir, NULL, 200), first);
    /* The log starts at a segment base: the first file is named by it. */
    uint64_t bases[64];
    assert_true(testfs_list_bases(rh_part_dir, bases, 64) > 0);
    assert_int_equal(bases[0], first);
    assert_int_equal(partition_close(p), 0);
    /* Reopened: the same first offset. */
    assert_int_equal(partition_open(&p, rh_root, "p", &o), 0);
    assert_int_equal(partition_first_offset(p), first);
    assert_int_equal(partition_close(p), 0);
}

static void test_age_retention_on_timer(void **state)
{
    (void)state;
    partition_options o = rh_popts();
    o.retain.age_s = 60;
    partition *p;
    atomic_store(&rh_clock_ns, T0);
    assert_int_equal(partition_open(&p, rh_root, "p", &o), 0);
    for (int i = 0; i < 5; i++)
        rh_publish(p, 16); /* 80 events at T0 */
    atomic_store(&rh_clock_ns, T0 + 30 * SEC);
    for (int i = 0; i < 5; i++)
        rh_publish(p, 16); /* 80 more at T0+30s */
    /* Let the writer go dormant: the timer must wake it. */
    rh_wait_dormant(p);
    partition_upkeep_tick(p, T0 + 59 * SEC);
    atomic_store(&rh_clock_ns, T0 + 61 * SEC);
    partition_upkeep_tick(p, T0 + 61 * SEC);
    uint64_t first = rh_wait_first_above(p, 0);
    /* Every segment whose newest record is from T0 went; the one holding
     * the first T0+30s events (and maybe the last T0 ones) stays. */
    assert_true(first > 0 && first <= 80);
    assert_int_equal(rh_read_all(rh_part_dir, NULL, 160), first);
    uint64_t kept_first = first;
    /* A tick before the next expiry does nothing. */
    partition_upkeep_tick(p, T0 + 80 * SEC);
    assert_int_equal(partition_close(p), 0);
    /* Down for a while: what aged meanwhile goes at open. The active
     * segment never goes. */
    atomic_store(&rh_clock_ns, T0 + 100 * SEC);
    assert_int_equal(partition_open(&p, rh_root, "p", &o), 0);
    first = partition_first_offset(p);
    assert_true(first > kept_first);
    assert_int_equal(rh_read_all(rh_part_dir, NULL, 160), first);
    rh_publish(p, 1);
    assert_int_equal(partition_end_offset(p), 161);
    assert_int_equal(partition_close(p), 0);
}

static void test_mirror_floor_holds_back(void **state)
{
    (void)state;
    partition_options o = rh_popts();
    o.retain.bytes = 2000;
    partition *p;
    atomic_store(&rh_clock_ns, T0);
    rh_floor_value = 20;
    assert_int_equal(partition_open(&p, rh_root, "p", &o), 0);
    for (int i = 0; i < 10; i++)
        rh_publish(p, 10);
    rh_wait_dormant(p);
    /* Only segments entirely below offset 20 may go. */
    uint64_t first = partition_first_offset(p);
    assert_true(first <= 20);
    rh_floor_value = UINT64_MAX;
    rh_publish(p, 16); /* rotates: retention runs again, nothing holds it */
    rh_wait_dormant(p);
    assert_true(partition_first_offset(p) > 20);
    rh_floor_value = UINT64_MAX;
    assert_int_equal(partition_close(p), 0);
}

static void test_reader_keeps_removed_segment(void **state)
{
    (void)state;
    partition_options o = rh_popts();
    o.retain.bytes = 3000;
    partition *p;
    atomic_store(&rh_clock_ns, T0);
    assert_int_equal(partition_open(&p, rh_root, "p", &o), 0);
    rh_publish(p, 16);
    pb_reader *r;
    assert_int_equal(pb_reader_open(&r, rh_part_dir), 0);
    pb_record rec;
    assert_int_equal(pb_reader_next(r, &rec), 0);
    assert_int_equal(rec.offset, 0);
    for (int i = 0; i < 10; i++)
        rh_publish(p, 16); /* segment 0 and more are removed under the reader */
    rh_wait_dormant(p);
    assert_true(partition_first_offset(p) > 16);
    /* The open segment is read to its end, then the reader is told what
     * it missed, and goes on at the first offset left. */
    uint64_t next = 1;
    int rc, removed = 0;
    while ((rc = pb_reader_next(r, &rec)) != PB_EEOF) {
        if (rc == PB_EREMOVED) {
            const struct pb_reader_problem *pr = pb_reader_problem(r);
            assert_int_equal(pr->first_offset, next);
            next = pr->last_offset + 1;
            removed++;
            continue;
        }
        assert_int_equal(rc, 0);
        assert_int_equal(rec.offset, next);
        next++;
    }
    assert_int_equal(next, 176);
    assert_int_equal(removed, 1);
    pb_reader_close(r);
    assert_int_equal(partition_close(p), 0);
}

/* The topic table is rebuilt from the log when its snapshot is missing
 * (a kill -9 before any clean close): offsets retention removed are
 * skipped, the topic's last offsets come from what is left. */
typedef struct last_seen {
    uint64_t v[4];
    size_t n;
} last_seen;

static int topic_fn(void *ctx, const char *topic, size_t len, const uint64_t *offsets, size_t count)
{
    last_seen *ls = ctx;
    assert_int_equal(len, 2);
    assert_memory_equal(topic, "tt", 2);
    ls->n = count;
    memcpy(ls->v, offsets, count * sizeof *offsets);
    return 0;
}

static void test_topic_table_after_retention(void **state)
{
    (void)state;
    partition_options o = rh_popts();
    o.retain.bytes = 2000;
    partition *p;
    atomic_store(&rh_clock_ns, T0);
    assert_int_equal(partition_open(&p, rh_root, "p", &o), 0);
    for (int i = 0; i < 10; i++)
        rh_publish(p, 10);
    rh_wait_dormant(p);
    assert_true(partition_first_offset(p) > 0);
    assert_int_equal(partition_close(p), 0);
    char snap[256];
    snprintf(snap, sizeof snap, "%s/topics.snapshot", rh_part_dir);
    assert_int_equal(unlink(snap), 0);
    assert_int_equal(partition_open(&p, rh_root, "p", &o), 0);
    last_seen ls = {0};
    assert_int_equal(partition_foreach_topic(p, 4, topic_fn, &ls), 1);
    assert_int_equal(ls.n, 4);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(ls.v[i], 96 + i);
    assert_int_equal(partition_close(p), 0);
}

int main(void)
{
    if (!getenv("PB_TEST_VERBOSE"))
        logging_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_size_retention, rh_setup, rh_teardown),
        cmocka_unit_test_setup_teardown(test_age_retention_on_timer, rh_setup, rh_teardown),
        cmocka_unit_test_setup_teardown(test_mirror_floor_holds_back, rh_setup, rh_teardown),
        cmocka_unit_test_setup_teardown(test_reader_keeps_removed_segment, rh_setup, rh_teardown),
        cmocka_unit_test_setup_teardown(test_topic_table_after_retention, rh_setup, rh_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
