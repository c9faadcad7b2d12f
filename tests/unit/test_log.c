/* Tests for server/log (with server/fileio and the proto/ format code):
 * directory and segment creation, index entries, size and time rotation
 * (UTC offsets, hourly, mid-batch), time clamping, size limits, recovery
 * (a cut at every byte of the last record and of a fresh header, garbage and
 * zero tails, damage that must not be truncated, missing and stale indexes),
 * failed I/O (EIO, ENOSPC, short writes) and a power-loss simulation, over
 * the in-memory failing disk of tests/lib/simio. */
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

#include "testfs.h"
#include "fileio.h"
#include "log.h"
#include "pb_errors.h"
#include "reader.h"
#include "record.h"
#include "segment.h"
#include "simio.h"

#define T0 1700000000000000000ll

static char root[64];
static char part[128];

/* ---- helpers ----------------------------------------------------------- */

static int setup(void **state)
{
    snprintf(root, sizeof root, "/tmp/pb_test_log.XXXXXX");
    if (!mkdtemp(root))
        return -1;
    snprintf(part, sizeof part, "%s/p", root);
    return 0;
}

static int teardown(void **state)
{
    return testfs_rmrf(root);
}

static size_t event_for(uint64_t off, uint8_t *buf)
{
    uint64_t h = testfs_mix64(off);
    size_t len = 20 + h % 281;
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(testfs_mix64(h + i / 8) >> (8 * (i % 8)));
    return len;
}

static int64_t time_for(uint64_t off)
{
    return T0 + (int64_t)off * 1000;
}

/* Log messages, kept for assertions. */
static char messages[16384];

static enum log_level worst; /* the most severe level captured */
static bool synced_acks;      /* opts(): every ack after a sync (fsync = always) */

static void capture(void *ctx, enum log_level level, const char *msg)
{
    if (level > worst)
        worst = level;
    size_t used = strlen(messages);
    snprintf(messages + used, sizeof messages - used, "%s\n", msg);
}

static int64_t fixed_clock(void *ctx)
{
    return *(int64_t *)ctx;
}

static int64_t clock_value = 1234567890123456789ll;

static log_options opts(uint64_t segment_bytes)
{
    return (log_options){.segment_bytes = segment_bytes,
                         .index_interval_bytes = 1024,
                         .now_ns = fixed_clock,
                         .clock_ctx = &clock_value,
                         .logf = capture,
                         .synced_acks = synced_acks};
}

static pb_log *open_log_opts(const log_options *o)
{
    pb_log *log;
    messages[0] = '\0';
    worst = LOG_DEBUG;
    int rc = log_open(&log, part, o);
    if (rc != 0)
        fail_msg("log_open: %s\n%s", pb_strerror(rc), messages);
    return log;
}

static pb_log *open_log(uint64_t segment_bytes)
{
    log_options o = opts(segment_bytes);
    return open_log_opts(&o);
}

/* Appends offsets [from, from+count) in batches of up to max_batch. */
static int append_range(pb_log *log, uint64_t from, uint64_t count, size_t max_batch)
{
    static uint8_t scratch[64 * 300];
    static log_entry e[64];
    uint64_t done = 0;
    while (done < count) {
        size_t n = 1 + testfs_mix64(from + done + 5) % max_batch;
        if (n > count - done)
            n = count - done;
        for (size_t i = 0; i < n; i++) {
            uint64_t off = from + done + i;
            uint8_t *p = scratch + i * 300;
            size_t len = event_for(off, p);
            size_t cut = off % 4 == 0 ? len / 2 : len;
            e[i] = (log_entry){.data = p,
                               .len = cut,
                               .suffix = p + cut,
                               .suffix_len = len - cut,
                               .time_ns = time_for(off)};
        }
        uint64_t first;
        int rc = log_append(log, e, n, &first);
        if (rc < 0)
            return rc;
        assert_true(first == from + done);
        done += n;
    }
    return 0;
}

/* Reads the whole partition: offsets 0..n-1 with the right content. */
static void verify_all(uint64_t n)
{
    pb_reader *r;
    pb_record rec;
    uint8_t want[300];
    assert_int_equal(pb_reader_open(&r, part), 0);
    for (uint64_t o = 0; o < n; o++) {
        int rc = pb_reader_next(r, &rec);
        if (rc != 0)
            fail_msg("offset %llu: %s", (unsigned long long)o, pb_strerror(rc));
        assert_true(rec.offset == o);
        size_t len = event_for(o, want);
        assert_int_equal(rec.event_len, len);
        assert_memory_equal(rec.event, want, len);
        assert_true(rec.time_ns == time_for(o));
    }
    assert_int_equal(pb_reader_next(r, &rec), PB_EEOF);
    pb_reader_close(r);
}

static void seg_path(char *out, uint64_t base, const char *ext)
{
    assert_int_equal(segment_path(out, PATH_MAX, part, base, ext), 0);
}

static off_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

/* Record positions of a .log: pos[i] for its i-th record; returns count. */
static size_t record_positions(const char *path, uint64_t *pos, size_t cap)
{
    size_t len, n = 0;
    uint8_t *buf = testfs_read_file(path, &len);
    uint64_t p = PB_FILE_HEADER_SIZE;
    pb_record rec;
    uint32_t size;
    while (p < len && record_decode(buf + p, len - p, PB_RECORD_MAX_EVENT, &rec, &size) == 0) {
        assert_true(n < cap);
        pos[n++] = p;
        p += size;
    }
    free(buf);
    return n;
}

/* ---- creation, index, rotation ----------------------------------------- */

static void test_creates_dir_and_segment(void **state)
{
    char nested[PATH_MAX];
    snprintf(nested, sizeof nested, "%s/", part); /* trailing slash is fine */
    log_options o = opts(0);
    pb_log *log;
    assert_int_equal(log_open(&log, nested, &o), 0);
    assert_true(log_next_offset(log) == 0);
    assert_true(log_last_time(log) == INT64_MIN);
    char p[PATH_MAX];
    seg_path(p, 0, ".log");
    assert_string_equal(strrchr(p, '/') + 1, "00000000000000000000.log");
    size_t len;
    uint8_t *h = testfs_read_file(p, &len);
    assert_int_equal(len, PB_FILE_HEADER_SIZE);
    uint64_t base;
    int64_t created;
    assert_int_equal(file_header_decode(h, PB_LOG_MAGIC, &base, &created), 0);
    assert_true(base == 0 && created == clock_value);
    free(h);
    seg_path(p, 0, ".idx");
    h = testfs_read_file(p, &len);
    assert_int_equal(len, PB_FILE_HEADER_SIZE);
    assert_int_equal(file_header_decode(h, PB_IDX_MAGIC, &base, NULL), 0);
    free(h);
    assert_int_equal(append_range(log, 0, 3, 3), 0);
    assert_true(log_last_time(log) == time_for(2));
    assert_int_equal(log_sync(log), 0);
    assert_int_equal(log_status(log), 0);
    assert_int_equal(log_close(log), 0);
    verify_all(3);
}

/* An entry for the first record, then one at the first record starting
 * >= index_interval_bytes after the previous entry. */
static void test_index_entries(void **state)
{
    pb_log *log = open_log(0);
    assert_int_equal(append_range(log, 0, 500, 17), 0);
    assert_int_equal(log_close(log), 0);
    char lp[PATH_MAX], ip[PATH_MAX];
    seg_path(lp, 0, ".log");
    seg_path(ip, 0, ".idx");
    static uint64_t pos[600];
    size_t n = record_positions(lp, pos, 600);
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
            assert_true(e.offset == i && e.position == pos[i] && e.time_ns == time_for(i));
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
    pb_log *log = open_log(4u << 20); /* rotates after ~23k records (184 bytes each) */
    uint8_t *data = malloc((size_t)N * 300);
    log_entry *e = calloc(N, sizeof *e);
    assert_non_null(data);
    assert_non_null(e);
    for (uint64_t off = 0; off < N; off++) {
        size_t len = event_for(off, data + off * 300);
        e[off] = (log_entry){.data = data + off * 300, .len = len, .time_ns = time_for(off)};
    }
    uint64_t first;
    assert_int_equal(log_append(log, e, N, &first), 0);
    assert_true(first == 0);
    assert_true(log_next_offset(log) == N);
    assert_int_equal(log_close(log), 0);
    free(e);
    free(data);
    uint64_t bases[8];
    assert_int_equal(testfs_list_bases(part, bases, 8), 2);
    verify_all(N);
    /* The index of the first segment: an entry every 1,024 bytes at least. */
    char lp[PATH_MAX], ip[PATH_MAX];
    seg_path(lp, 0, ".log");
    seg_path(ip, 0, ".idx");
    static uint64_t pos[N];
    size_t n = record_positions(lp, pos, N);
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
    pb_log *log = open_log(4096);
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
    size_t n = testfs_list_bases(part, bases, 16);
    /* (4096 - 40) / 124 = 32 records per segment. */
    uint64_t want[] = {0, 32, 64, 96, 100, 101};
    assert_int_equal(n, 6);
    for (size_t i = 0; i < n; i++) {
        char p[PATH_MAX];
        assert_true(bases[i] == want[i]);
        seg_path(p, bases[i], ".log");
        if (bases[i] != 100)
            assert_true(file_size(p) <= 4096);
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
    assert_int_equal(testfs_list_bases(part, bases, 32), n);
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
    log_options o = opts(0);
    o.rotate_every_s = 86400;
    o.utc_offset_s = 7200;
    pb_log *log = open_log_opts(&o);
    append_at(log, DAY0 + (21 * 3600 + 59 * 60 + 59) * SEC); /* 0: 23:59:59 local */
    append_at(log, DAY0 + 22 * 3600 * SEC);                  /* 1: 00:00 next day */
    append_at(log, DAY0 + 34 * 3600 * SEC);                  /* 2: 12:00 */
    append_at(log, DAY0 + (46 * 3600) * SEC - 1);            /* 3: 23:59:59.999999999 */
    append_at(log, DAY0 + 46 * 3600 * SEC);                  /* 4: next local day */
    uint64_t want[] = {0, 1, 4};
    expect_bases(want, 3);
    assert_int_equal(log_close(log), 0);

    /* Reopened, the active segment's day is known from its first record. */
    log = open_log_opts(&o);
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
    log_options o = opts(0);
    o.rotate_every_s = 3600;
    pb_log *log = open_log_opts(&o);
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
    assert_int_equal(pb_reader_open(&r, part), 0);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(pb_reader_next(r, &rec), 0);
        assert_true(rec.time_ns == t[i]);
    }
    pb_reader_close(r);

    /* UTC+05:30 hourly: boundaries at hh:30 UTC. */
    assert_int_equal(teardown(state), 0);
    assert_int_equal(setup(state), 0);
    o.utc_offset_s = 5 * 3600 + 1800;
    log = open_log_opts(&o);
    append_at(log, DAY0 + (10 * 3600 + 29 * 60) * SEC); /* 0 */
    append_at(log, DAY0 + (10 * 3600 + 30 * 60) * SEC); /* 1: new local hour */
    append_at(log, DAY0 + (11 * 3600 + 29 * 60) * SEC); /* 2: same */
    uint64_t want3[] = {0, 1};
    expect_bases(want3, 2);
    assert_int_equal(log_close(log), 0);

    /* UTC-05:00 daily, before 1970 too (floor division). */
    assert_int_equal(teardown(state), 0);
    assert_int_equal(setup(state), 0);
    o.rotate_every_s = 86400;
    o.utc_offset_s = -5 * 3600;
    log = open_log_opts(&o);
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
    pb_log *log = open_log(0);
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
    log = open_log(0);
    assert_true(log_last_time(log) == 200);
    assert_int_equal(log_close(log), 0);
    int64_t want[] = {100, 100, 200, 200};
    pb_reader *r;
    pb_record rec;
    assert_int_equal(pb_reader_open(&r, part), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pb_reader_next(r, &rec), 0);
        assert_true(rec.time_ns == want[i]);
    }
    pb_reader_close(r);
}

static void test_too_big_refused_not_sticky(void **state)
{
    log_options o = opts(0);
    o.max_record_bytes = 1000;
    pb_log *log = open_log_opts(&o);
    static uint8_t big[1001];
    log_entry e[2] = {{.data = big, .len = 10, .time_ns = T0},
                      {.data = big, .len = 600, .suffix = big, .suffix_len = 401, .time_ns = T0}};
    assert_int_equal(log_append(log, e, 2, NULL), PB_ETOOBIG);
    assert_true(log_next_offset(log) == 0);
    char p[PATH_MAX];
    seg_path(p, 0, ".log");
    assert_int_equal(file_size(p), PB_FILE_HEADER_SIZE); /* nothing of the batch written */
    e[1].suffix_len = 400;
    assert_int_equal(log_append(log, e, 2, NULL), 0);
    assert_int_equal(log_sync(log), 0);
    assert_int_equal(log_close(log), 0);
}

/* ---- recovery ------------------------------------------------------------ */

/* Truncates the newest segment at every byte inside its last record: each
 * time the log recovers to the record before, the file is cut back, and
 * appending continues with the right offset. */
static void test_recover_cut_inside_last_record(void **state)
{
    pb_log *log = open_log(16 << 10);
    assert_int_equal(append_range(log, 0, 150, 9), 0); /* several segments */
    assert_int_equal(log_close(log), 0);
    uint64_t bases[32];
    size_t nseg = testfs_list_bases(part, bases, 32);
    assert_true(nseg >= 2);
    char lp[PATH_MAX], ip[PATH_MAX];
    seg_path(lp, bases[nseg - 1], ".log");
    seg_path(ip, bases[nseg - 1], ".idx");
    size_t llen, ilen;
    uint8_t *orig = testfs_read_file(lp, &llen);
    uint8_t *oidx = testfs_read_file(ip, &ilen);
    static uint64_t pos[400];
    size_t n = record_positions(lp, pos, 400);
    uint64_t last_pos = pos[n - 1];
    for (uint64_t cut = last_pos + 1; cut < llen; cut++) {
        testfs_write_file(lp, orig, cut);
        testfs_write_file(ip, oidx, ilen); /* may name the lost record: stale */
        log = open_log(16 << 10);
        if (log_next_offset(log) != 149)
            fail_msg("cut at %llu: next offset %llu", (unsigned long long)cut,
                     (unsigned long long)log_next_offset(log));
        assert_true(file_size(lp) == (off_t)last_pos);
        char want[PATH_MAX + 64];
        snprintf(want, sizeof want, "segment %s: torn or corrupt tail at byte %llu: dropped %llu",
                 lp, (unsigned long long)last_pos, (unsigned long long)(cut - last_pos));
        if (!strstr(messages, want))
            fail_msg("no message \"%s\" in:\n%s", want, messages);
        assert_int_equal(append_range(log, 149, 3, 3), 0);
        assert_int_equal(log_close(log), 0);
        verify_all(152);
    }
    free(orig);
    free(oidx);
}

/* A segment created by rotation, its header cut at every length 0..39 (the
 * crash came while creating it): recreated, offsets continue. */
static void test_recover_cut_inside_fresh_header(void **state)
{
    pb_log *log = open_log(4096);
    assert_int_equal(append_range(log, 0, 40, 5), 0);
    assert_int_equal(log_close(log), 0);
    uint64_t bases[32];
    size_t nseg = testfs_list_bases(part, bases, 32);
    uint64_t next = 40;
    /* The state right after a rotation: a new segment starting at 40. */
    char lp[PATH_MAX], ip[PATH_MAX];
    seg_path(lp, next, ".log");
    seg_path(ip, next, ".idx");
    uint8_t hdr[PB_FILE_HEADER_SIZE];
    file_header_encode(hdr, PB_LOG_MAGIC, next, 1);
    for (size_t cut = 0; cut < PB_FILE_HEADER_SIZE; cut++) {
        testfs_write_file(lp, hdr, cut);
        if (cut % 2)
            assert_int_equal(unlink(ip) == 0 || errno == ENOENT, 1);
        log = open_log(4096);
        assert_true(log_next_offset(log) == next);
        assert_true(log_last_time(log) == time_for(39));
        assert_non_null(strstr(messages, "header cut short"));
        assert_int_equal(file_size(lp), PB_FILE_HEADER_SIZE);
        assert_int_equal(append_range(log, next, 1, 1), 0);
        assert_int_equal(log_close(log), 0);
        verify_all(next + 1);
        nseg = testfs_list_bases(part, bases, 32);
        assert_true(bases[nseg - 1] == next); /* the next round cuts it again */
    }
    /* A whole header with no record is fine as it is. */
    testfs_write_file(lp, hdr, sizeof hdr);
    log = open_log(4096);
    assert_true(log_next_offset(log) == next);
    assert_null(strstr(messages, "recreating"));
    assert_int_equal(log_close(log), 0);
}

static void check_tail_dropped(const uint8_t *tail, size_t tail_len, const char *said)
{
    pb_log *log = open_log(0);
    assert_int_equal(append_range(log, 0, 30, 4), 0);
    assert_int_equal(log_close(log), 0);
    char lp[PATH_MAX];
    seg_path(lp, 0, ".log");
    off_t good = file_size(lp);
    int fd = open(lp, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, tail, tail_len), (ssize_t)tail_len);
    assert_int_equal(close(fd), 0);
    log = open_log(0);
    assert_true(log_next_offset(log) == 30);
    assert_true(file_size(lp) == good);
    assert_non_null(strstr(messages, said));
    assert_int_equal(append_range(log, 30, 5, 5), 0);
    assert_int_equal(log_close(log), 0);
    verify_all(35);
}

static void test_recover_garbage_and_zero_tails(void **state)
{
    static uint8_t tail[8192];
    /* Zeros only: a recycled segment's unused end (or a crash's zero-filled
     * write, which looks the same): cut, not called torn; a WARN unless
     * every ack follows a sync (fsync = always: synced_acks). */
    check_tail_dropped(tail, sizeof tail, "zeros only after its last record");
    assert_null(strstr(messages, "torn or corrupt tail"));
    assert_int_equal(worst, LOG_WARN);
    assert_int_equal(teardown(state), 0);
    assert_int_equal(setup(state), 0);
    synced_acks = true;
    check_tail_dropped(tail, sizeof tail, "zeros only after its last record");
    synced_acks = false;
    assert_int_equal(worst, LOG_INFO);
    assert_int_equal(teardown(state), 0);
    assert_int_equal(setup(state), 0);
    for (size_t i = 0; i < sizeof tail; i++)
        tail[i] = (uint8_t)testfs_mix64(i);
    check_tail_dropped(tail, sizeof tail, "torn or corrupt tail");
    assert_int_equal(teardown(state), 0);
    assert_int_equal(setup(state), 0);
    /* A header that claims a plausible record, then nothing. */
    uint8_t hdr[24];
    assert_int_equal(record_encode_header(hdr, 30, T0, tail, 500, NULL, 0), 0);
    check_tail_dropped(hdr, sizeof hdr, "torn or corrupt tail");
}

/* Damage followed by valid records is not a torn tail: reported, kept.
 * (Recovery scans from the last index entry; one entry per 1 MiB puts the
 * damage inside the scanned tail.) */
static void test_recover_damage_in_middle_not_truncated(void **state)
{
    log_options o = opts(0);
    o.index_interval_bytes = 1 << 20;
    pb_log *log = open_log_opts(&o);
    assert_int_equal(append_range(log, 0, 100, 10), 0);
    assert_int_equal(log_close(log), 0);
    char lp[PATH_MAX];
    seg_path(lp, 0, ".log");
    static uint64_t pos[200];
    assert_int_equal(record_positions(lp, pos, 200), 100);
    off_t size = file_size(lp);
    int fd = open(lp, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "\xff\xff\xff\xff", 4, (off_t)pos[60] + 26), 4);
    assert_int_equal(close(fd), 0);

    log = open_log_opts(&o);
    assert_true(log_next_offset(log) == 100);
    assert_true(file_size(lp) == size);
    char want[PATH_MAX + 64];
    snprintf(want, sizeof want, "segment %s: damaged data at byte %llu", lp,
             (unsigned long long)pos[60]);
    if (!strstr(messages, want) || !strstr(messages, "offsets 60..60 lost"))
        fail_msg("no message \"%s\" with offsets 60..60 in:\n%s", want, messages);
    assert_int_equal(append_range(log, 100, 5, 5), 0);
    assert_int_equal(log_close(log), 0);

    pb_reader *r;
    pb_record rec;
    assert_int_equal(pb_reader_open(&r, part), 0);
    for (uint64_t off = 0; off < 105; off++) {
        if (off == 60) {
            assert_int_equal(pb_reader_next(r, &rec), PB_ECORRUPT);
            assert_true(pb_reader_problem(r)->first_offset == 60);
            assert_true(pb_reader_problem(r)->last_offset == 60);
            continue;
        }
        assert_int_equal(pb_reader_next(r, &rec), 0);
        assert_true(rec.offset == off);
    }
    assert_int_equal(pb_reader_next(r, &rec), PB_EEOF);
    pb_reader_close(r);
}

/* Index entries after the header, for comparing a rebuilt index. */
static uint8_t *idx_entries(uint64_t base, size_t *len)
{
    char ip[PATH_MAX];
    seg_path(ip, base, ".idx");
    size_t n;
    uint8_t *buf = testfs_read_file(ip, &n);
    assert_true(n >= PB_FILE_HEADER_SIZE);
    memmove(buf, buf + PB_FILE_HEADER_SIZE, n - PB_FILE_HEADER_SIZE);
    *len = n - PB_FILE_HEADER_SIZE;
    return buf;
}

static void expect_same_index(uint64_t base, const uint8_t *want, size_t want_len)
{
    size_t len;
    uint8_t *got = idx_entries(base, &len);
    assert_int_equal(len, want_len);
    assert_memory_equal(got, want, len);
    free(got);
}

static void test_index_rebuilt_when_missing_or_stale(void **state)
{
    pb_log *log = open_log(32 << 10);
    assert_int_equal(append_range(log, 0, 400, 10), 0);
    assert_int_equal(log_close(log), 0);
    uint64_t bases[32];
    size_t nseg = testfs_list_bases(part, bases, 32);
    assert_true(nseg >= 3);
    uint64_t act = bases[nseg - 1], old = bases[0];
    size_t alen, olen;
    uint8_t *aidx = idx_entries(act, &alen);
    uint8_t *oidx = idx_entries(old, &olen);
    assert_true(alen >= 3 * PB_INDEX_ENTRY_SIZE);
    char ap[PATH_MAX], op[PATH_MAX], lp[PATH_MAX];
    seg_path(ap, act, ".idx");
    seg_path(op, old, ".idx");
    seg_path(lp, act, ".log");

    /* Missing, active and rotated. */
    assert_int_equal(unlink(ap), 0);
    assert_int_equal(unlink(op), 0);
    pb_log *l2 = open_log(32 << 10);
    assert_int_equal(log_close(l2), 0);
    expect_same_index(act, aidx, alen);
    expect_same_index(old, oidx, olen);

    /* Short: cut in the middle of an entry. */
    assert_int_equal(truncate(ap, (off_t)(PB_FILE_HEADER_SIZE + alen / 2 + 5)), 0);
    l2 = open_log(32 << 10);
    assert_int_equal(log_close(l2), 0);
    expect_same_index(act, aidx, alen);

    /* Garbage entries. */
    uint8_t junk[PB_INDEX_ENTRY_SIZE * 4];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (uint8_t)testfs_mix64(i);
    int fd = open(ap, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, junk, sizeof junk, PB_FILE_HEADER_SIZE + PB_INDEX_ENTRY_SIZE),
                     (ssize_t)sizeof junk);
    assert_int_equal(close(fd), 0);
    l2 = open_log(32 << 10);
    assert_int_equal(log_close(l2), 0);
    expect_same_index(act, aidx, alen);

    /* Pointing past the end: the log lost its last records (cut at a record
     * boundary, so nothing is torn), the index still names them. */
    static uint64_t pos[400];
    size_t n = record_positions(lp, pos, 400);
    segment_index_entry last;
    segment_index_entry_decode(aidx + alen - PB_INDEX_ENTRY_SIZE, &last);
    assert_true(last.position > pos[1]);
    assert_int_equal(truncate(lp, (off_t)last.position), 0);
    l2 = open_log(32 << 10);
    assert_true(log_next_offset(l2) == last.offset);
    assert_int_equal(log_close(l2), 0);
    expect_same_index(act, aidx, alen - PB_INDEX_ENTRY_SIZE);
    assert_true(n > 0);
    verify_all(last.offset);
    free(aidx);
    free(oidx);
}

/* ---- failed I/O ---------------------------------------------------------- */

/* The failing and power-losing disk is tests/lib/simio (in memory); what it
 * holds is copied to the real `part` directory for the real reader. */
static simio *sim_new(void)
{
    simio *s;
    assert_int_equal(simio_create(&s), 0);
    assert_int_equal(simio_add_root(s, root), 0);
    return s;
}

/* Replaces the real partition directory with the sim's copy of it. */
static void sim_to_disk(simio *s)
{
    struct stat st;
    if (stat(part, &st) == 0)
        assert_int_equal(testfs_rmrf(part), 0);
    int rc = simio_export(s, part, part);
    assert_true(rc == 0 || rc == PB_ENOTFOUND);
}

static void check_failure(int which, int err)
{
    simio *s = sim_new();
    log_options o = opts(4096);
    o.io = simio_io(s);
    pb_log *log = open_log_opts(&o);
    assert_int_equal(append_range(log, 0, 10, 3), 0);
    assert_int_equal(log_sync(log), 0);
    int rc;
    if (which == 0) { /* the write of a batch */
        assert_int_equal(simio_set_fault(s, SIMIO_PWRITEV, 0, err, ".log"), 0);
        rc = append_range(log, 10, 5, 5);
    } else if (which == 1) { /* the ack sync */
        assert_int_equal(simio_set_fault(s, SIMIO_FDATASYNC, 0, err, NULL), 0);
        assert_int_equal(append_range(log, 10, 5, 5), 0);
        rc = log_sync(log);
    } else { /* the sync of the old segment at rotation */
        assert_int_equal(simio_set_fault(s, SIMIO_FDATASYNC, 0, err, NULL), 0);
        rc = append_range(log, 10, 40, 40);
    }
    assert_int_equal(rc, -err);
    assert_int_equal(log_status(log), -err);
    assert_non_null(strstr(messages, part));
    assert_non_null(strstr(messages, "the log is stopped"));
    /* Sticky: no retry, even once the device would work again. */
    assert_int_equal(simio_set_fault(s, 0, 0, 0, NULL), 0);
    assert_int_equal(append_range(log, 10, 1, 1), PB_EFAILED);
    assert_int_equal(log_sync(log), PB_EFAILED);
    assert_int_equal(log_close(log), 0);
    /* What was acked is there after a power loss and a restart. */
    assert_int_equal(simio_power_loss(s, (uint64_t)(which * 100 + err), NULL), 0);
    sim_to_disk(s);
    simio_destroy(s);
    log = open_log(4096);
    assert_true(log_next_offset(log) >= 10);
    assert_int_equal(log_close(log), 0);
}

static void test_failed_io_is_sticky(void **state)
{
    int errs[] = {EIO, ENOSPC};
    for (int which = 0; which < 3; which++) {
        for (int k = 0; k < 2; k++) {
            check_failure(which, errs[k]);
            assert_int_equal(teardown(state), 0);
            assert_int_equal(setup(state), 0);
        }
    }
}

/* Short writes are continued; a failing index only disables indexing. */
static void test_short_writes_and_index_failure(void **state)
{
    simio *s = sim_new();
    simio_set_max_write(s, 7);
    log_options o = opts(8192);
    o.io = simio_io(s);
    pb_log *log = open_log_opts(&o);
    assert_int_equal(append_range(log, 0, 100, 20), 0);
    simio_set_max_write(s, 0);
    assert_int_equal(simio_set_fault(s, SIMIO_PWRITEV, 0, ENOSPC, ".idx"), 0);
    assert_int_equal(append_range(log, 100, 100, 20), 0);
    assert_int_equal(log_status(log), 0);
    assert_non_null(strstr(messages, "not indexing"));
    assert_int_equal(log_sync(log), 0);
    assert_int_equal(log_close(log), 0);
    sim_to_disk(s);
    simio_destroy(s);
    verify_all(200);
    pb_reader *r;
    pb_record rec;
    assert_int_equal(pb_reader_open(&r, part), 0);
    assert_int_equal(pb_reader_seek_offset(r, 177), 0);
    assert_int_equal(pb_reader_next(r, &rec), 0);
    assert_true(rec.offset == 177);
    pb_reader_close(r);
}

/* Offsets found damaged after a power loss while they were not acked: they
 * stay damaged (kept, never truncated) below later acked ones. */
static bool never_acked[1 << 16];

/* Reads the partition after a power loss: offsets 0..acked-1 intact except
 * those in never_acked; the unacknowledged ones up to have-1 intact or
 * reported damaged (unsynced writes may come back in any order, leaving a
 * hole before later ones); nothing else. */
static void verify_acked(uint64_t acked, uint64_t have)
{
    pb_reader *r;
    pb_record rec;
    uint8_t want[300];
    uint64_t next = 0;
    assert_int_equal(pb_reader_open(&r, part), 0);
    for (int guard = 0; guard < 100000; guard++) {
        int rc = pb_reader_next(r, &rec);
        if (rc == PB_EEOF)
            break;
        if (rc == PB_ECORRUPT) {
            const struct pb_reader_problem *pr = pb_reader_problem(r);
            if (pr->last_offset + 1 == pr->first_offset)
                continue;
            for (uint64_t o = pr->first_offset; o <= pr->last_offset; o++) {
                assert_true(o < sizeof never_acked);
                if (o < acked && !never_acked[o])
                    fail_msg("acked offset %llu reported damaged", (unsigned long long)o);
                never_acked[o] = true;
            }
            next = pr->last_offset + 1;
            continue;
        }
        assert_int_equal(rc, 0);
        if (rec.offset != next)
            fail_msg("offset %llu where %llu was due", (unsigned long long)rec.offset,
                     (unsigned long long)next);
        size_t len = event_for(rec.offset, want);
        assert_int_equal(rec.event_len, len);
        assert_memory_equal(rec.event, want, len);
        next = rec.offset + 1;
    }
    pb_reader_close(r);
    assert_true(next == have);
}

/* Power loss at a random I/O operation, over and over, each round starting
 * from the disk the last one left: after each restart every acked record is
 * there, intact, in order. (tests/unit/test_powerloss.c does this at 10,000
 * crash points under the partition writer.) */
static void test_power_loss_simulation(void **state)
{
    uint64_t acked = 0, have = 0, rng = 42;
    int torn = 0, rebuilt = 0;
    for (int round = 0; round < 60; round++) {
        simio *s = sim_new();
        struct stat st;
        if (stat(part, &st) == 0)
            assert_int_equal(simio_import(s, part, part), 0);
        rng = testfs_mix64(rng);
        /* One round in four crashes while recovering (early in log_open);
         * the others at a random operation after it. */
        bool in_open = rng % 4 == 0;
        simio_crash_at(s, in_open ? 1 + testfs_mix64(rng) % 40 : 0);
        log_options o = opts(6 << 10);
        o.io = simio_io(s);
        o.logf = NULL;
        pb_log *log;
        int rc = log_open(&log, part, &o);
        if (rc == 0) {
            if (!simio_is_down(s))
                simio_crash_at(s, simio_ops(s) + 1 + testfs_mix64(rng + 1) % 300);
            uint64_t next = log_next_offset(log);
            assert_true(next == have);
            while (rc == 0) {
                rc = append_range(log, next, 1 + testfs_mix64(next) % 12, 12);
                if (rc == 0 && testfs_mix64(next + 3) % 2 == 0 && (rc = log_sync(log)) == 0)
                    acked = log_next_offset(log);
                next = log_next_offset(log);
            }
            assert_true(rc == -EIO || rc == PB_EFAILED);
            assert_int_equal(log_close(log), 0);
        } else {
            assert_true(in_open);
            assert_int_equal(rc, -EIO);
        }
        assert_true(simio_is_down(s));
        assert_int_equal(simio_power_loss(s, rng, NULL), 0);
        sim_to_disk(s);
        simio_destroy(s);
        /* Recover with the real file system, then count what survived. */
        pb_log *check = open_log(6 << 10);
        torn += strstr(messages, "torn or corrupt tail") != NULL;
        rebuilt += strstr(messages, "index") != NULL;
        have = log_next_offset(check);
        assert_int_equal(log_close(check), 0);
        if (have < acked)
            fail_msg("round %d: %llu records after restart, %llu were acked", round,
                     (unsigned long long)have, (unsigned long long)acked);
        verify_acked(acked, have);
    }
    assert_true(acked > 100);
    /* The rounds did hit the cases they are meant to (deterministic). */
    assert_true(torn > 5);
    assert_true(rebuilt > 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_creates_dir_and_segment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_index_entries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_size_rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_append_larger_than_its_arrays, setup, teardown),
        cmocka_unit_test_setup_teardown(test_time_rotation_daily_utc_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_time_rotation_hourly, setup, teardown),
        cmocka_unit_test_setup_teardown(test_time_clamped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_big_refused_not_sticky, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recover_cut_inside_last_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recover_cut_inside_fresh_header, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recover_garbage_and_zero_tails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recover_damage_in_middle_not_truncated, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_index_rebuilt_when_missing_or_stale, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_io_is_sticky, setup, teardown),
        cmocka_unit_test_setup_teardown(test_short_writes_and_index_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_power_loss_simulation, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
