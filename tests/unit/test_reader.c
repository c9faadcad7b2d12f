/* Tests for proto/reader (with proto/segment): 100,000 records written by
 * server/log across size-rotated segments read back identical; exact seeks
 * by offset and time (with, without and with a garbage index); following a
 * live log across rotations and partial records; damage in rotated segments
 * reported with file, position and offsets, then skipped; end offset;
 * partition listing. */
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "logharness.h" /* lh_event_for, lh_append_range_timed: the events and their appends */
#include "testfs.h"
#include "log.h"
#include "pb_errors.h"
#include "reader.h"
#include "record.h"
#include "segment.h"

static char root[64];
static char part[PATH_MAX];

static int setup(void **state)
{
    return testfs_make_root(root, sizeof root, "pb_test_reader", part, sizeof part);
}

static int teardown(void **state)
{
    return testfs_rmrf(root);
}

/* Three records share each receive time, to test seeks into equal times. */
static int64_t time_for(uint64_t off)
{
    return T0 + (int64_t)(off / 3) * 1000;
}

static pb_log *open_log(uint64_t segment_bytes)
{
    log_options o = {.segment_bytes = segment_bytes, .index_interval_bytes = 1024};
    pb_log *log;
    assert_int_equal(log_open(&log, part, &o), 0);
    return log;
}

/* Appends offsets [from, from+count) in batches of 1..max_batch, at
 * time_for's times (lh_append_range_timed). */
static void append_range(pb_log *log, uint64_t from, uint64_t count, size_t max_batch)
{
    assert_int_equal(lh_append_range_timed(log, from, count, max_batch, time_for), 0);
    assert_true(log_next_offset(log) == from + count);
}

/* Writes offsets 0..n-1 (segment_bytes segments, batches of up to
 * max_batch) and closes the log; its segments' bases into bases (cap),
 * at least min_segs of them; returns how many. */
static size_t write_segments(uint64_t n, uint64_t segment_bytes, size_t max_batch, uint64_t *bases,
                             size_t cap, size_t min_segs)
{
    pb_log *log = open_log(segment_bytes);
    append_range(log, 0, n, max_batch);
    assert_int_equal(log_close(log), 0);
    size_t nseg = testfs_list_bases(part, bases, cap);
    assert_true(nseg >= min_segs);
    return nseg;
}

static void expect_record(pb_reader *r, uint64_t off)
{
    pb_record rec;
    uint8_t want[300];
    int rc = pb_reader_next(r, &rec);
    if (rc != 0)
        fail_msg("offset %llu: next returned %d (%s)", (unsigned long long)off, rc,
                 pb_strerror(rc));
    if (rec.offset != off)
        fail_msg("expected offset %llu, got %llu", (unsigned long long)off,
                 (unsigned long long)rec.offset);
    size_t len = lh_event_for(off, want);
    assert_int_equal(rec.event_len, len);
    assert_memory_equal(rec.event, want, len);
    assert_true(rec.time_ns == time_for(off));
}

static void expect_range(pb_reader *r, uint64_t from, uint64_t to)
{
    for (uint64_t o = from; o < to; o++)
        expect_record(r, o);
}

static void expect_eof(pb_reader *r)
{
    pb_record rec;
    assert_int_equal(pb_reader_next(r, &rec), PB_EEOF);
}

/* Sorted base offsets of the .log files in part. */
static void seg_path(char *out, uint64_t base, const char *ext)
{
    assert_int_equal(segment_path(out, PATH_MAX, part, base, ext), 0);
}

static void write_at(const char *path, const void *buf, size_t len, off_t off)
{
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, buf, len, off), (ssize_t)len);
    assert_int_equal(close(fd), 0);
}

/* Position of the record with offset `off` in segment file `path`. */
static uint64_t record_pos(const char *path, uint64_t off, uint32_t *size)
{
    size_t len;
    uint8_t *buf = testfs_read_file(path, &len);
    uint64_t pos = PB_FILE_HEADER_SIZE;
    pb_record rec;
    while (pos < len) {
        assert_int_equal(record_decode(buf + pos, len - pos, PB_RECORD_MAX_EVENT, &rec, size), 0);
        if (rec.offset == off) {
            free(buf);
            return pos;
        }
        pos += *size;
    }
    free(buf);
    fail_msg("offset %llu not in %s", (unsigned long long)off, path);
    return 0;
}

static void test_100k_records_roundtrip(void **state)
{
    const uint64_t n = 100000;
    uint64_t bases[256];
    size_t nseg = write_segments(n, 1 << 20, 500, bases, 256, 10);
    assert_true(bases[0] == 0);
    for (size_t i = 0; i < nseg; i++) {
        char p[PATH_MAX];
        struct stat st;
        seg_path(p, bases[i], ".log");
        assert_int_equal(stat(p, &st), 0);
        assert_true(st.st_size <= 1 << 20);
        assert_int_equal(strlen(strrchr(p, '/') + 1), 24); /* 20 digits + ".log" */
        seg_path(p, bases[i], ".idx");
        assert_int_equal(stat(p, &st), 0);
        assert_true(st.st_size > PB_FILE_HEADER_SIZE);
        assert_int_equal((st.st_size - PB_FILE_HEADER_SIZE) % PB_INDEX_ENTRY_SIZE, 0);
    }
    char name[PATH_MAX];
    seg_path(name, bases[1], ".log");
    char want[64];
    snprintf(want, sizeof want, "/%020llu.log", (unsigned long long)bases[1]);
    assert_string_equal(strrchr(name, '/'), want);

    pb_reader *r;
    assert_int_equal(pb_reader_open(&r, part), 0);
    expect_range(r, 0, n);
    expect_eof(r);
    expect_eof(r);
    pb_reader_close(r);
}

/* Every segment boundary and a spread of offsets land exactly. */
static void check_offset_seeks(uint64_t n, const uint64_t *bases, size_t nseg)
{
    pb_reader *r;
    assert_int_equal(pb_reader_open(&r, part), 0);
    for (size_t i = 0; i < nseg; i++) {
        uint64_t b = bases[i];
        uint64_t probes[] = {b, b + 1, b ? b - 1 : 0, b + 2};
        for (size_t k = 0; k < 4; k++) {
            assert_int_equal(pb_reader_seek_offset(r, probes[k]), 0);
            expect_range(r, probes[k], probes[k] + 3 < n ? probes[k] + 3 : n);
        }
    }
    for (uint64_t o = 0; o < n; o += 997) {
        assert_int_equal(pb_reader_seek_offset(r, o), 0);
        expect_record(r, o);
    }
    assert_int_equal(pb_reader_seek_offset(r, n - 1), 0);
    expect_record(r, n - 1);
    expect_eof(r);
    pb_reader_close(r);
}

static void check_time_seeks(uint64_t n, const uint64_t *bases, size_t nseg)
{
    pb_reader *r;
    assert_int_equal(pb_reader_open(&r, part), 0);
    for (size_t i = 0; i < nseg; i++) {
        for (uint64_t o = bases[i] ? bases[i] - 1 : 0; o < bases[i] + 3 && o < n; o++) {
            uint64_t group = o - o % 3; /* first record with this time */
            assert_int_equal(pb_reader_seek_time(r, time_for(o)), 0);
            expect_record(r, group);
            assert_int_equal(pb_reader_seek_time(r, time_for(o) - 1), 0);
            expect_record(r, group);
            if (group + 3 < n) {
                assert_int_equal(pb_reader_seek_time(r, time_for(o) + 1), 0);
                expect_record(r, group + 3);
            }
        }
    }
    assert_int_equal(pb_reader_seek_time(r, T0 - 1000000), 0);
    expect_record(r, 0);
    assert_int_equal(pb_reader_seek_time(r, time_for(n - 1)), 0);
    expect_range(r, (n - 1) - (n - 1) % 3, n);
    expect_eof(r);
    pb_reader_close(r);
}

static void test_seek_offset_and_time(void **state)
{
    const uint64_t n = 20000;
    pb_log *log = open_log(256 << 10);
    append_range(log, 0, n, 300);
    uint64_t bases[64];
    size_t nseg = testfs_list_bases(part, bases, 64);
    assert_true(nseg >= 10);
    check_offset_seeks(n, bases, nseg);
    check_time_seeks(n, bases, nseg);

    /* Past the end: wait there, then follow new appends. */
    pb_reader *r, *rt;
    assert_int_equal(pb_reader_open(&r, part), 0);
    assert_int_equal(pb_reader_open(&rt, part), 0);
    assert_int_equal(pb_reader_seek_offset(r, n + 2), 0);
    assert_int_equal(pb_reader_seek_time(rt, time_for(n + 3)), 0);
    expect_eof(r);
    expect_eof(rt);
    append_range(log, n, 10, 4);
    expect_range(r, n + 2, n + 10);
    expect_range(rt, (n + 3) - (n + 3) % 3, n + 10); /* first with that time */
    expect_eof(r);
    pb_reader_close(r);
    pb_reader_close(rt);
    assert_int_equal(log_close(log), 0);
}

/* The index is a cache: without it, or with garbage in it, seeks are still
 * exact (just slower). */
static void test_seek_without_or_with_bad_index(void **state)
{
    const uint64_t n = 6000;
    uint64_t bases[64];
    size_t nseg = write_segments(n, 128 << 10, 100, bases, 64, 4);
    for (size_t i = 0; i < nseg; i++) {
        char p[PATH_MAX];
        seg_path(p, bases[i], ".idx");
        if (i % 2 == 0) {
            assert_int_equal(unlink(p), 0);
        } else {
            uint8_t junk[24 * 20];
            for (size_t k = 0; k < sizeof junk; k++)
                junk[k] = (uint8_t)testfs_mix64(k + i);
            /* Plausible-looking but wrong: positions inside the file. */
            for (size_t k = 0; k < 20; k++) {
                segment_index_entry e = {bases[i] + k * 7, 40 + k * 333, time_for(k)};
                if (k % 3 == 0)
                    segment_index_entry_encode(junk + k * 24, &e);
            }
            write_at(p, junk, sizeof junk, PB_FILE_HEADER_SIZE);
        }
    }
    check_offset_seeks(n, bases, nseg);
    check_time_seeks(n, bases, nseg);
}

/* Same thread alternating: append, read to EEOF, append across rotations,
 * read the rest; a record half-written at the end is "not yet". */
static void test_follow_live_log(void **state)
{
    pb_reader *r;
    assert_int_equal(pb_reader_open(&r, root), 0); /* an empty directory */
    expect_eof(r);
    pb_reader_close(r);
    assert_int_equal(pb_reader_open(&r, part), PB_ENOTFOUND);

    pb_log *log = open_log(8 << 10);
    assert_int_equal(pb_reader_open(&r, part), 0);
    expect_eof(r);
    append_range(log, 0, 10, 10);
    expect_range(r, 0, 10);
    expect_eof(r);
    append_range(log, 10, 300, 7); /* many rotations */
    uint64_t bases[128];
    assert_true(testfs_list_bases(part, bases, 128) > 5);
    expect_range(r, 10, 150);
    append_range(log, 310, 50, 50);
    expect_range(r, 150, 360);
    expect_eof(r);
    assert_int_equal(log_close(log), 0);

    /* Write record 360 by hand, in two steps, at the end of the newest
     * segment: the first half reads as "nothing yet". */
    size_t nseg = testfs_list_bases(part, bases, 128);
    char p[PATH_MAX];
    seg_path(p, bases[nseg - 1], ".log");
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    uint8_t rec[24 + 300];
    size_t len = lh_event_for(360, rec + 24);
    assert_int_equal(record_encode_header(rec, 360, time_for(360), rec + 24, len, NULL, 0), 0);
    write_at(p, rec, 30, st.st_size);
    expect_eof(r);
    expect_eof(r);
    write_at(p, rec + 30, 24 + len - 30, st.st_size + 30);
    expect_record(r, 360);
    expect_eof(r);

    /* The writer picks up after it. */
    log = open_log(8 << 10);
    assert_true(log_next_offset(log) == 361);
    append_range(log, 361, 5, 5);
    expect_range(r, 361, 366);
    expect_eof(r);
    assert_int_equal(log_close(log), 0);
    pb_reader_close(r);
}

/* Reads everything, expecting exactly one PB_ECORRUPT naming `file`,
 * position `pos` and offsets first..last, and every other record intact. */
static void read_expecting_problem(uint64_t n, const char *file, uint64_t pos, uint64_t first,
                                   uint64_t last)
{
    pb_reader *r;
    assert_int_equal(pb_reader_open(&r, part), 0);
    expect_range(r, 0, first);
    pb_record rec;
    assert_int_equal(pb_reader_next(r, &rec), PB_ECORRUPT);
    const struct pb_reader_problem *pr = pb_reader_problem(r);
    assert_string_equal(pr->file, file);
    if (pr->position != pos || pr->first_offset != first || pr->last_offset != last)
        fail_msg("problem at %llu offsets %llu..%llu (%s), expected at %llu offsets %llu..%llu",
                 (unsigned long long)pr->position, (unsigned long long)pr->first_offset,
                 (unsigned long long)pr->last_offset, pr->reason, (unsigned long long)pos,
                 (unsigned long long)first, (unsigned long long)last);
    assert_non_null(pr->reason);
    expect_range(r, last + 1, n);
    expect_eof(r);
    pb_reader_close(r);
}

static void test_corruption_in_rotated_segment(void **state)
{
    const uint64_t n = 3000;
    uint64_t bases[64];
    write_segments(n, 64 << 10, 50, bases, 64, 4);
    char p[PATH_MAX];
    seg_path(p, bases[1], ".log");

    /* One flipped bit in an event: exactly that record is lost. */
    uint64_t victim = bases[1] + 40;
    uint32_t size;
    uint64_t pos = record_pos(p, victim, &size);
    size_t flen;
    uint8_t *orig = testfs_read_file(p, &flen);
    uint8_t b = orig[pos + 30] ^ 0x10;
    write_at(p, &b, 1, (off_t)(pos + 30));
    read_expecting_problem(n, p, pos, victim, victim);

    /* A damaged length field: the reader must scan to find the next record. */
    write_at(p, orig + pos + 30, 1, (off_t)(pos + 30));
    uint8_t l[4] = {0xff, 0xff, 0x00, 0x01};
    write_at(p, l, 4, (off_t)(pos + 4));
    read_expecting_problem(n, p, pos, victim, victim);

    /* Three records overwritten with zeros. */
    write_at(p, orig + pos, size, (off_t)pos);
    uint32_t s2, s3;
    record_pos(p, victim + 1, &s2);
    record_pos(p, victim + 2, &s3);
    uint8_t zeros[1024] = {0};
    write_at(p, zeros, size + s2 + s3, (off_t)pos);
    read_expecting_problem(n, p, pos, victim, victim + 2);

    /* The writer's recovery leaves a rotated segment alone. */
    uint8_t *before = testfs_read_file(p, &flen);
    pb_log *log = open_log(64 << 10);
    assert_true(log_next_offset(log) == n);
    assert_int_equal(log_close(log), 0);
    size_t flen2;
    uint8_t *after = testfs_read_file(p, &flen2);
    assert_int_equal(flen, flen2);
    assert_memory_equal(before, after, flen);
    free(before);
    free(after);
    free(orig);
}

/* A rotated segment whose last record is cut short: the offsets up to the
 * next segment's base are reported lost. */
static void test_cut_end_of_rotated_segment(void **state)
{
    const uint64_t n = 2000;
    uint64_t bases[128];
    write_segments(n, 32 << 10, 20, bases, 128, 3);
    char p[PATH_MAX];
    seg_path(p, bases[1], ".log");
    uint32_t size;
    uint64_t pos = record_pos(p, bases[2] - 1, &size);
    assert_int_equal(truncate(p, (off_t)(pos + size / 2)), 0);
    read_expecting_problem(n, p, pos, bases[2] - 1, bases[2] - 1);

    /* And a rotated segment with its header cut short. */
    assert_int_equal(truncate(p, 20), 0);
    read_expecting_problem(n, p, 0, bases[1], bases[2] - 1);
}

/* Zero tails (FORMAT.md Part B, "The end of a segment"): a recycled active
 * segment holds zeros after its last record, a rotated one may after a
 * crash. Neither is damage: the reader waits at the active one's and goes
 * on into the next segment from a rotated one's, reporting nothing; a
 * record written into the zeros is read; zeros FOLLOWED by a valid record
 * are a hole, reported. Recovery cuts both tails and reports the hole. */
static void test_zero_tail(void **state)
{
    const uint64_t n = 1500;
    uint64_t bases[128];
    size_t nseg = write_segments(n, 32 << 10, 20, bases, 128, 3);
    char rot[PATH_MAX], act[PATH_MAX];
    seg_path(rot, bases[nseg - 2], ".log"); /* the newest rotated one */
    seg_path(act, bases[nseg - 1], ".log");
    struct stat st;
    assert_int_equal(stat(rot, &st), 0);
    off_t rot_size = st.st_size;
    assert_int_equal(stat(act, &st), 0);
    off_t act_size = st.st_size;
    assert_int_equal(truncate(rot, rot_size + 5000), 0);
    assert_int_equal(truncate(act, act_size + (3 << 20)), 0); /* > the 1 MiB window */

    pb_reader *r;
    assert_int_equal(pb_reader_open(&r, part), 0);
    expect_range(r, 0, n);
    expect_eof(r);
    expect_eof(r);

    /* A record written into the zeros is read (follow). */
    uint8_t rec[24 + 300];
    size_t len = lh_event_for(n, rec + 24);
    assert_int_equal(record_encode_header(rec, n, time_for(n), rec + 24, len, NULL, 0), 0);
    write_at(act, rec, 24 + len, act_size);
    expect_record(r, n);
    expect_eof(r);

    /* Zeros followed by a valid record (what a power loss can leave): a
     * hole, reported by a reader that comes to it. (One waiting at the
     * zeros already looks at the header only: the writer writes in file
     * order, so nothing appears after zeros it has not written yet.) */
    off_t hole = act_size + (off_t)(24 + len);
    len = lh_event_for(n + 2, rec + 24);
    assert_int_equal(record_encode_header(rec, n + 2, time_for(n + 2), rec + 24, len, NULL, 0), 0);
    write_at(act, rec, 24 + len, hole + 100);
    pb_reader_close(r);
    assert_int_equal(pb_reader_open(&r, part), 0);
    expect_range(r, 0, n + 1);
    pb_record got;
    assert_int_equal(pb_reader_next(r, &got), PB_ECORRUPT);
    const struct pb_reader_problem *pr = pb_reader_problem(r);
    assert_true(pr->position == (uint64_t)hole && pr->first_offset == n + 1 &&
                pr->last_offset == n + 1);
    expect_record(r, n + 2);
    expect_eof(r);
    pb_reader_close(r);

    /* Recovery: both zero tails cut (not reported as torn), the hole kept. */
    pb_log *log = open_log(32 << 10);
    assert_true(log_next_offset(log) == n + 3);
    assert_int_equal(log_close(log), 0);
    assert_int_equal(stat(rot, &st), 0);
    assert_true(st.st_size == rot_size);
    assert_int_equal(stat(act, &st), 0);
    assert_true(st.st_size == hole + 100 + (off_t)(24 + len));
}

/* A writer appending into a recycled segment's zero tail while a reader
 * follows (after the review of ret6): record N is seen torn (its header
 * and 100 bytes, the rest of its body still zeros), then, while the reader
 * looks past it, the writer finishes it and writes 4,000 more. The reader
 * must wait at the torn record, then read every record in order: no
 * PB_ECORRUPT (before the fix: "offsets 100..2147 lost"). */
#define TORN_N  100
#define TORN_M  4000
#define TORN_EV 1000
static uint8_t *torn_full;
static size_t torn_len, torn_pos_n, torn_at;
static int torn_stage; /* 0: records 0..N-1 written; 1: N torn; 2: all written */
static char torn_path[PATH_MAX];

static void torn_put(size_t from, size_t to)
{
    write_at(torn_path, torn_full + from, to - from, (off_t)from);
}

static ssize_t torn_pread(void *ctx, int fd, void *buf, size_t len, off_t off)
{
    if (torn_stage == 1 && (size_t)off >= torn_pos_n + (1u << 20)) {
        torn_put(torn_at, torn_len); /* the writer got past the reader's window */
        torn_stage = 2;
    }
    return segment_pread_posix(ctx, fd, buf, len, off);
}

static int torn_open(void *c, const char *p)
{
    return open(p, O_RDONLY);
}

static int torn_size(void *c, int fd, uint64_t *s)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    *s = (uint64_t)st.st_size;
    return 0;
}

static int torn_close(void *c, int fd)
{
    return close(fd);
}

static int torn_list(void *c, const char *d, int (*fn)(void *, const char *), void *arg)
{
    return segment_io_posix()->list(NULL, d, fn, arg);
}

static void test_torn_write_into_zero_tail(void **state)
{
    assert_int_equal(mkdir(part, 0755), 0);
    seg_path(torn_path, 0, ".log");
    torn_len = PB_FILE_HEADER_SIZE + (TORN_N + TORN_M) * (24 + TORN_EV);
    torn_full = calloc(1, torn_len);
    assert_non_null(torn_full);
    file_header_encode(torn_full, PB_LOG_MAGIC, 0, 1);
    uint8_t ev[TORN_EV];
    for (size_t i = 0; i < TORN_N + TORN_M; i++) {
        memset(ev, 'a' + (int)(i % 26), TORN_EV);
        uint8_t *r = torn_full + PB_FILE_HEADER_SIZE + i * (24 + TORN_EV);
        assert_int_equal(record_encode_header(r, i, 1000 + (int64_t)i, ev, TORN_EV, NULL, 0), 0);
        memcpy(r + 24, ev, TORN_EV);
    }
    torn_pos_n = PB_FILE_HEADER_SIZE + TORN_N * (24 + TORN_EV);
    int fd = open(torn_path, O_CREAT | O_WRONLY, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 16 << 20), 0); /* a recycled spare: zeros */
    close(fd);
    torn_stage = 0;
    torn_put(0, torn_pos_n);
    segment_io io = {.open = torn_open, .pread = torn_pread, .size = torn_size,
                     .close = torn_close, .list = torn_list};
    pb_reader *r;
    pb_record rec;
    assert_int_equal(pb_reader_open_io(&r, part, &io), 0);
    uint64_t next = 0;
    int rc;
    while ((rc = pb_reader_next(r, &rec)) == 0)
        assert_true(rec.offset == next++);
    assert_int_equal(rc, PB_EEOF);
    assert_true(next == TORN_N);
    /* Record N torn: the reader waits at it. */
    torn_at = torn_pos_n + 24 + 100;
    torn_put(torn_pos_n, torn_at);
    assert_int_equal(pb_reader_next(r, &rec), PB_EEOF);
    /* Then the writer finishes while the reader looks ahead. */
    torn_stage = 1;
    for (int guard = 0; guard < 10 && next < TORN_N + TORN_M; guard++) {
        while ((rc = pb_reader_next(r, &rec)) == 0)
            assert_true(rec.offset == next++);
        if (rc == PB_ECORRUPT) {
            const struct pb_reader_problem *p = pb_reader_problem(r);
            fail_msg("false damage at byte %llu: offsets %llu..%llu (%s)",
                     (unsigned long long)p->position, (unsigned long long)p->first_offset,
                     (unsigned long long)p->last_offset, p->reason);
        }
        assert_int_equal(rc, PB_EEOF);
        torn_put(torn_at, torn_len); /* (if the reader waited before looking ahead) */
        torn_stage = 2;
    }
    assert_true(next == TORN_N + TORN_M);
    pb_reader_close(r);
    free(torn_full);
}

static void test_end_offset(void **state)
{
    pb_log *log = open_log(16 << 10);
    append_range(log, 0, 500, 25);
    pb_reader *r;
    assert_int_equal(pb_reader_open(&r, part), 0);
    pb_reader_set_end(r, 100);
    expect_range(r, 0, 100);
    expect_eof(r);
    pb_reader_set_end(r, 450);
    expect_range(r, 100, 450);
    expect_eof(r);
    pb_reader_set_end(r, UINT64_MAX);
    expect_range(r, 450, 500);
    expect_eof(r);
    pb_reader_close(r);
    assert_int_equal(log_close(log), 0);
}

static void test_partition_list(void **state)
{
    char p[PATH_MAX + 8];
    const char *dirs[] = {"sensors-b", "alpha", "sensors-a"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", root, dirs[i]);
        assert_int_equal(mkdir(p, 0755), 0);
    }
    snprintf(p, sizeof p, "%s/afile", root);
    int fd = open(p, O_CREAT | O_WRONLY, 0644);
    assert_true(fd >= 0);
    assert_int_equal(close(fd), 0);
    char **names;
    size_t count;
    assert_int_equal(pb_partition_list(root, &names, &count), 0);
    assert_int_equal(count, 3);
    assert_string_equal(names[0], "alpha");
    assert_string_equal(names[1], "sensors-a");
    assert_string_equal(names[2], "sensors-b");
    pb_partition_list_free(names, count);
    snprintf(p, sizeof p, "%s/nope", root);
    assert_int_equal(pb_partition_list(p, &names, &count), PB_ENOTFOUND);
}

/* F3: one rule (partname.h) decides what a partition directory is. Names
 * that are not partition names are never listed; the ones that hold
 * segment files are named by partition_dirs_scan so that the daemon and
 * cat can report them. */
static void test_partition_list_follows_the_name_rule(void **state)
{
    char p[PATH_MAX + 32];
    const char *dirs[] = {"ok", ".hidden", ".empty-hidden", "has space", "lost+found"};
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/%s", root, dirs[i]);
        assert_int_equal(mkdir(p, 0755), 0);
    }
    const char *with_segment[] = {".hidden", "has space"};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/%s/00000000000000000000.log", root, with_segment[i]);
        testfs_write_file(p, "x", 1);
    }
    char **names, **skipped;
    size_t count, nskipped;
    assert_int_equal(pb_partition_list(root, &names, &count), 0);
    assert_int_equal(count, 1);
    assert_string_equal(names[0], "ok");
    pb_partition_list_free(names, count);
    assert_int_equal(partition_dirs_scan(root, &names, &count, &skipped, &nskipped), 0);
    assert_int_equal(count, 1);
    assert_string_equal(names[0], "ok");
    assert_int_equal(nskipped, 2); /* the empty ones hold nothing to report */
    assert_string_equal(skipped[0], ".hidden");
    assert_string_equal(skipped[1], "has space");
    pb_partition_list_free(names, count);
    pb_partition_list_free(skipped, nskipped);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_100k_records_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seek_offset_and_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seek_without_or_with_bad_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_follow_live_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corruption_in_rotated_segment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cut_end_of_rotated_segment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zero_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_write_into_zero_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_end_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_partition_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_partition_list_follows_the_name_rule, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
