/* Tests for server/log (with server/fileio and the proto/ format code):
 * directory and segment creation, index entries, size and time rotation
 * (UTC offsets, hourly, mid-batch), time clamping and size limits.
 * Recovery, failed I/O and power loss: test_log_recovery.c; the helpers
 * both use: tests/lib/logharness. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "logharness.h"
#include "testfs.h"
#include "fileio.h"
#include "log.h"
#include "pb_errors.h"
#include "reader.h"
#include "record.h"
#include "segment.h"
#include "simio.h"

/* ---- creation, index, rotation ----------------------------------------- */

static void test_creates_dir_and_segment(void **state)
{
    char nested[PATH_MAX];
    snprintf(nested, sizeof nested, "%s/", lh_part); /* trailing slash is fine */
    log_options o = lh_opts(0);
    pb_log *log;
    assert_int_equal(log_open(&log, nested, &o), 0);
    assert_true(log_next_offset(log) == 0);
    assert_true(log_last_time(log) == INT64_MIN);
    char p[PATH_MAX];
    lh_seg_path(p, 0, ".log");
    assert_string_equal(strrchr(p, '/') + 1, "00000000000000000000.log");
    size_t len;
    uint8_t *h = testfs_read_file(p, &len);
    assert_int_equal(len, PB_FILE_HEADER_SIZE);
    uint64_t base;
    int64_t created;
    assert_int_equal(file_header_decode(h, PB_LOG_MAGIC, &base, &created), 0);
    assert_true(base == 0 && created == lh_clock_value);
    free(h);
    lh_seg_path(p, 0, ".idx");
    h = testfs_read_file(p, &len);
    assert_int_equal(len, PB_FILE_HEADER_SIZE);
    assert_int_equal(file_header_decode(h, PB_IDX_MAGIC, &base, NULL), 0);
    free(h);
    assert_int_equal(lh_append_range(log, 0, 3, 3), 0);
    assert_true(log_last_time(log) == lh_time_for(2));
    assert_int_equal(log_sync(log), 0);
    assert_int_equal(log_status(log), 0);
    assert_int_equal(log_close(log), 0);
    lh_verify_all(3);
}

/* An entry for the first record, then one at the first record starting
 * >= index_interval_bytes after the previous entry. */
static void test_index_entries(void **state)
{
    pb_log *log = lh_open_log(0);
    assert_int_equal(lh_append_range(log, 0, 500, 17), 0);
    assert_int_equal(log_close(log), 0);
    char lp[PATH_MAX], ip[PATH_MAX];
    lh_seg_path(lp, 0, ".log");
    lh_seg_path(ip, 0, ".idx");
    static uint64_t pos[600];
    size_t n = lh_record_positions(lp, pos, 600);
    assert_int_equal(n, 500);
    size_t ilen;
    uint8_t *idx = testfs_read_file(ip, &ilen);
    size_t k = PB_FILE_HEADER_SIZE, entries = 0;
    uint64_t last = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || pos[i] - last >= 1024) {
            segment_index_entry e;
            assert_true(k + PB_INDEX_ENTRY_SIZE <= ilen);
            segment_index_entry_decode(idx + k, &e);
            assert_true(e.offset == i && e.position == pos[i] && e.time_ns == lh_time_for(i));
            k += PB_INDEX_ENTRY_SIZE;
            last = pos[i];
            entries++;
        }
    }
    assert_int_equal(k, ilen);
    assert_true(entries > 20);
    free(idx);
}

/* One append of more records than log_append gathers at a time (16,384):
 * written in chunks, with a rotation inside a chunk; every record and every
 * index entry is where one large write would have put it. */
static void test_append_larger_than_its_arrays(void **state)
{
    enum { N = 40000 };
    pb_log *log = lh_open_log(4u << 20); /* rotates after ~23k records (184 bytes each) */
    uint8_t *data = malloc((size_t)N * 300);
    log_entry *e = calloc(N, sizeof *e);
    assert_non_null(data);
    assert_non_null(e);
    for (uint64_t off = 0; off < N; off++) {
        size_t len = lh_event_for(off, data + off * 300);
        e[off] = (log_entry){.data = data + off * 300, .len = len, .time_ns = lh_time_for(off)};
    }
    uint64_t first;
    assert_int_equal(log_append(log, e, N, &first), 0);
    assert_true(first == 0);
    assert_true(log_next_offset(log) == N);
    assert_int_equal(log_close(log), 0);
    free(e);
    free(data);
    uint64_t bases[8];
    assert_int_equal(testfs_list_bases(lh_part, bases, 8), 2);
    lh_verify_all(N);
    /* The index of the first segment: an entry every 1,024 bytes at least. */
    char lp[PATH_MAX], ip[PATH_MAX];
    lh_seg_path(lp, 0, ".log");
    lh_seg_path(ip, 0, ".idx");
    static uint64_t pos[N];
    size_t n = lh_record_positions(lp, pos, N);
    size_t ilen, k = PB_FILE_HEADER_SIZE;
    uint8_t *idx = testfs_read_file(ip, &ilen);
    uint64_t last = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || pos[i] - last >= 1024) {
            segment_index_entry ie;
            assert_true(k + PB_INDEX_ENTRY_SIZE <= ilen);
            segment_index_entry_decode(idx + k, &ie);
            assert_true(ie.offset == i && ie.position == pos[i]);
            k += PB_INDEX_ENTRY_SIZE;
            last = pos[i];
        }
    }
    assert_int_equal(k, ilen);
    free(idx);
}

static void test_size_rotation(void **state)
{
    pb_log *log = lh_open_log(4096);
    uint8_t ev[5000];
    memset(ev, 'e', sizeof ev);
    log_entry e[100];
    for (int i = 0; i < 100; i++)
        e[i] = (log_entry){.data = ev, .len = 100, .time_ns = T0};
    assert_int_equal(log_append(log, e, 100, NULL), 0); /* one batch, many segments */
    /* A record larger than segment_bytes gets a segment of its own. */
    e[0].len = 5000;
    assert_int_equal(log_append(log, e, 2, NULL), 0);
    assert_int_equal(log_close(log), 0);
    uint64_t bases[16];
    size_t n = testfs_list_bases(lh_part, bases, 16);
    /* (4096 - 40) / 124 = 32 records per segment. */
    uint64_t want[] = {0, 32, 64, 96, 100, 101};
    assert_int_equal(n, 6);
    for (size_t i = 0; i < n; i++) {
        char p[PATH_MAX];
        assert_true(bases[i] == want[i]);
        lh_seg_path(p, bases[i], ".log");
        if (bases[i] != 100)
            assert_true(lh_file_size(p) <= 4096);
    }
}

static void append_at(pb_log *log, int64_t t)
{
    log_entry e = {.data = "x", .len = 1, .time_ns = t};
    assert_int_equal(log_append(log, &e, 1, NULL), 0);
}

static void expect_bases(const uint64_t *want, size_t n)
{
    uint64_t bases[32];
    assert_int_equal(testfs_list_bases(lh_part, bases, 32), n);
    for (size_t i = 0; i < n; i++)
        if (bases[i] != want[i])
            fail_msg("segment %zu starts at %llu, expected %llu", i, (unsigned long long)bases[i],
                     (unsigned long long)want[i]);
}

#define SEC 1000000000ll
/* 2024-01-01T00:00:00Z */
#define DAY0 (1704067200ll * SEC)

/* Daily at local midnight in UTC+02:00: 21:59:59 UTC and 22:00:00 UTC are
 * different local days; a whole local day stays in one segment. */
static void test_time_rotation_daily_utc_offset(void **state)
{
    log_options o = lh_opts(0);
    o.rotate_every_s = 86400;
    o.utc_offset_s = 7200;
    pb_log *log = lh_open_log_opts(&o);
    append_at(log, DAY0 + (21 * 3600 + 59 * 60 + 59) * SEC); /* 0: 23:59:59 local */
    append_at(log, DAY0 + 22 * 3600 * SEC);                  /* 1: 00:00 next day */
    append_at(log, DAY0 + 34 * 3600 * SEC);                  /* 2: 12:00 */
    append_at(log, DAY0 + (46 * 3600) * SEC - 1);            /* 3: 23:59:59.999999999 */
    append_at(log, DAY0 + 46 * 3600 * SEC);                  /* 4: next local day */
    uint64_t want[] = {0, 1, 4};
    expect_bases(want, 3);
    assert_int_equal(log_close(log), 0);

    /* Reopened, the active segment's day is known from its first record. */
    log = lh_open_log_opts(&o);
    append_at(log, DAY0 + (46 * 3600 + 1) * SEC); /* 5: same day as 4 */
    append_at(log, DAY0 + 70 * 3600 * SEC);       /* 6: next day */
    uint64_t want2[] = {0, 1, 4, 6};
    expect_bases(want2, 4);
    assert_int_equal(log_close(log), 0);
}

/* Hourly, in one batch (rotation mid-batch), and with a negative and a
 * half-hour offset. */
static void test_time_rotation_hourly(void **state)
{
    log_options o = lh_opts(0);
    o.rotate_every_s = 3600;
    pb_log *log = lh_open_log_opts(&o);
    log_entry e[5];
    int64_t t[5] = {DAY0 + 10 * 3600 * SEC, DAY0 + 11 * 3600 * SEC - 1, DAY0 + 11 * 3600 * SEC,
                    DAY0 + 11 * 3600 * SEC + 59 * 60 * SEC, DAY0 + 12 * 3600 * SEC};
    for (int i = 0; i < 5; i++)
        e[i] = (log_entry){.data = "y", .len = 1, .time_ns = t[i]};
    assert_int_equal(log_append(log, e, 5, NULL), 0);
    uint64_t want[] = {0, 2, 4};
    expect_bases(want, 3);
    assert_int_equal(log_close(log), 0);
    pb_reader *r;
    pb_record rec;
    assert_int_equal(pb_reader_open(&r, lh_part), 0);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(pb_reader_next(r, &rec), 0);
        assert_true(rec.time_ns == t[i]);
    }
    pb_reader_close(r);

    /* UTC+05:30 hourly: boundaries at hh:30 UTC. */
    assert_int_equal(lh_teardown(state), 0);
    assert_int_equal(lh_setup(state), 0);
    o.utc_offset_s = 5 * 3600 + 1800;
    log = lh_open_log_opts(&o);
    append_at(log, DAY0 + (10 * 3600 + 29 * 60) * SEC); /* 0 */
    append_at(log, DAY0 + (10 * 3600 + 30 * 60) * SEC); /* 1: new local hour */
    append_at(log, DAY0 + (11 * 3600 + 29 * 60) * SEC); /* 2: same */
    uint64_t want3[] = {0, 1};
    expect_bases(want3, 2);
    assert_int_equal(log_close(log), 0);

    /* UTC-05:00 daily, before 1970 too (floor division). */
    assert_int_equal(lh_teardown(state), 0);
    assert_int_equal(lh_setup(state), 0);
    o.rotate_every_s = 86400;
    o.utc_offset_s = -5 * 3600;
    log = lh_open_log_opts(&o);
    append_at(log, -20 * 3600 * SEC); /* 1969-12-31 04:00 UTC = 23:00 local Dec 30 */
    append_at(log, -18 * 3600 * SEC); /* 06:00 UTC = 01:00 local Dec 31 */
    append_at(log, 4 * 3600 * SEC);   /* 1970-01-01 04:00 UTC = 23:00 local Dec 31 */
    append_at(log, 5 * 3600 * SEC);   /* 00:00 local Jan 1 */
    uint64_t want4[] = {0, 1, 3};
    expect_bases(want4, 3);
    assert_int_equal(log_close(log), 0);
}

/* Receive times never go backwards within a partition. */
static void test_time_clamped(void **state)
{
    pb_log *log = lh_open_log(0);
    log_entry e[3] = {{.data = "a", .len = 1, .time_ns = 100},
                      {.data = "b", .len = 1, .time_ns = 50},
                      {.data = "c", .len = 1, .time_ns = 200}};
    assert_int_equal(log_append(log, e, 3, NULL), 0);
    assert_true(log_last_time(log) == 200);
    e[0].time_ns = 10;
    assert_int_equal(log_append(log, e, 1, NULL), 0);
    assert_true(log_last_time(log) == 200);
    assert_int_equal(log_close(log), 0);
    /* ...and the floor survives a restart. */
    log = lh_open_log(0);
    assert_true(log_last_time(log) == 200);
    assert_int_equal(log_close(log), 0);
    int64_t want[] = {100, 100, 200, 200};
    pb_reader *r;
    pb_record rec;
    assert_int_equal(pb_reader_open(&r, lh_part), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pb_reader_next(r, &rec), 0);
        assert_true(rec.time_ns == want[i]);
    }
    pb_reader_close(r);
}

static void test_too_big_refused_not_sticky(void **state)
{
    log_options o = lh_opts(0);
    o.max_record_bytes = 1000;
    pb_log *log = lh_open_log_opts(&o);
    static uint8_t big[1001];
    log_entry e[2] = {{.data = big, .len = 10, .time_ns = T0},
                      {.data = big, .len = 600, .suffix = big, .suffix_len = 401, .time_ns = T0}};
    assert_int_equal(log_append(log, e, 2, NULL), PB_ETOOBIG);
    assert_true(log_next_offset(log) == 0);
    char p[PATH_MAX];
    lh_seg_path(p, 0, ".log");
    assert_int_equal(lh_file_size(p), PB_FILE_HEADER_SIZE); /* nothing of the batch written */
    e[1].suffix_len = 400;
    assert_int_equal(log_append(log, e, 2, NULL), 0);
    assert_int_equal(log_sync(log), 0);
    assert_int_equal(log_close(log), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        LH_TEST(test_creates_dir_and_segment),
        LH_TEST(test_index_entries),
        LH_TEST(test_size_rotation),
        LH_TEST(test_append_larger_than_its_arrays),
        LH_TEST(test_time_rotation_daily_utc_offset),
        LH_TEST(test_time_rotation_hourly),
        LH_TEST(test_time_clamped),
        LH_TEST(test_too_big_refused_not_sticky),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
