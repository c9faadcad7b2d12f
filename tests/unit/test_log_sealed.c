/* Tests for server/log's sealed records (log_entry.record: a standby's
 * records from a Records frame, written with the primary's headers): a
 * partition written the ordinary way, read back as raw record bytes and
 * appended sealed (runs back to back, appends of many sizes, some entries
 * unsealed among them, segment rotations inside appends) gives segment
 * files identical byte for byte from position 40 on, through the page
 * cache and with direct writes; a sealed record whose header does not fit
 * (offset, time going back, length, a suffix) is refused with PB_EINVAL
 * before anything of the append is written, and the log goes on. Every
 * append hands each record's CRC to log_entry.crc_out, sealed or not. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testfs.h"
#include "log.h"
#include "pb_errors.h"
#include "record.h"
#include "segment.h"

#define T0      1700000000000000000ll
#define N       3000u
#define SEG     (64u * 1024u)
#define MAX_LEN 700u

static char root[64];
static record_crc crcs[N]; /* log_entry.crc_out of each record written */
static int64_t asked[N];   /* the time each entry gave */
static char dir_a[128], dir_b[128];

static int setup(void **state)
{
    snprintf(root, sizeof root, "/tmp/pb_test_logs.XXXXXX");
    if (!mkdtemp(root))
        return -1;
    snprintf(dir_a, sizeof dir_a, "%s/a", root);
    snprintf(dir_b, sizeof dir_b, "%s/b", root);
    return 0;
}

static int teardown(void **state)
{
    return testfs_rmrf(root);
}

static char messages[8192];

static void capture(void *ctx, enum log_level level, const char *msg)
{
    size_t used = strlen(messages);
    snprintf(messages + used, sizeof messages - used, "%s\n", msg);
}

/* The last refusal said why. */
static void said(const char *why)
{
    if (!strstr(messages, why))
        fail_msg("no \"%s\" in:\n%s", why, messages);
    messages[0] = '\0';
}

static log_options opts(uint64_t direct_min)
{
    return (log_options){.segment_bytes = SEG,
                         .index_interval_bytes = 1024,
                         .direct_min_bytes = direct_min,
                         .direct_align = 512,
                         .logf = capture};
}

static pb_log *open_at(const char *dir, uint64_t direct_min)
{
    log_options o = opts(direct_min);
    pb_log *log;
    assert_int_equal(log_open(&log, dir, &o), 0);
    return log;
}

/* Writes offsets 0..N-1 the ordinary way (times repeat and go back once
 * in a while: the log raises them). */
static void write_plain(uint64_t direct_min)
{
    static uint8_t ev[64][MAX_LEN];
    log_entry e[64];
    pb_log *log = open_at(dir_a, direct_min);
    for (uint64_t off = 0; off < N;) {
        size_t n = 1 + testfs_mix64(off) % 64;
        if (n > N - off)
            n = N - off;
        for (size_t i = 0; i < n; i++) {
            uint64_t h = testfs_mix64(off + i + 99);
            size_t len = 1 + h % MAX_LEN;
            for (size_t j = 0; j < len; j++)
                ev[i][j] = (uint8_t)(h >> (j % 56));
            int64_t t = T0 + (int64_t)((off + i) / 3) * 1000 - (h % 10 == 0 ? 5000 : 0);
            e[i] = (log_entry){.data = ev[i], .len = len, .time_ns = t, .crc_out = &crcs[off + i]};
            asked[off + i] = t;
        }
        assert_int_equal(log_append(log, e, n, NULL), 0);
        off += n;
    }
    assert_int_equal(log_sync(log), 0);
    assert_int_equal(log_close(log), 0);
}

/* The records of every segment of dir_a, back to back (as a primary's runs
 * hold them); *pos[i] = record i's position in it. */
static uint8_t *read_records(size_t *len, size_t *pos)
{
    uint8_t *all = malloc((size_t)N * (MAX_LEN + PB_RECORD_HEADER_SIZE));
    assert_non_null(all);
    size_t k = 0, n = 0;
    uint64_t base = 0;
    while (n < N) {
        char path[PATH_MAX];
        assert_int_equal(segment_path(path, sizeof path, dir_a, base, ".log"), 0);
        size_t flen;
        uint8_t *f = testfs_read_file(path, &flen);
        assert_non_null(f);
        for (size_t p = PB_FILE_HEADER_SIZE; p < flen;) {
            uint32_t size = pb_load_le32(f + p + 4) + 8;
            pos[n++] = k;
            memcpy(all + k, f + p, size);
            k += size;
            p += size;
        }
        free(f);
        base = n;
    }
    *len = k;
    return all;
}

/* An entry for record i of the run: sealed, or (unsealed) its bytes only. */
static log_entry entry_of(const uint8_t *run, const size_t *pos, size_t i, bool sealed)
{
    const uint8_t *r = run + pos[i];
    return (log_entry){.data = r + PB_RECORD_HEADER_SIZE,
                       .len = pb_load_le32(r + 4) - PB_RECORD_FIXED_LEN,
                       .time_ns = (int64_t)pb_load_le64(r + 16),
                       .record = sealed ? r : NULL};
}

static void expect_same_segments(void)
{
    for (uint64_t base = 0;;) {
        char pa[PATH_MAX], pbp[PATH_MAX];
        assert_int_equal(segment_path(pa, sizeof pa, dir_a, base, ".log"), 0);
        assert_int_equal(segment_path(pbp, sizeof pbp, dir_b, base, ".log"), 0);
        size_t la, lb;
        uint8_t *a = testfs_read_file(pa, &la);
        uint8_t *b = testfs_read_file(pbp, &lb);
        assert_non_null(a);
        if (!b)
            fail_msg("segment %s missing", pbp);
        assert_int_equal(la, lb);
        assert_memory_equal(a + PB_FILE_HEADER_SIZE, b + PB_FILE_HEADER_SIZE,
                            la - PB_FILE_HEADER_SIZE);
        uint64_t records = 0;
        for (size_t p = PB_FILE_HEADER_SIZE; p < la; p += pb_load_le32(a + p + 4) + 8)
            records++;
        free(a);
        free(b);
        base += records;
        if (base >= N)
            return;
    }
}

static void replicate(uint64_t direct_min)
{
    write_plain(direct_min);
    size_t len;
    static size_t pos[N];
    uint8_t *run = read_records(&len, pos);
    /* crc_out got each record's CRC as written, valid exactly where the log
     * kept the entry's time (it raises one that goes back). */
    size_t raised = 0;
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(crcs[i].crc, pb_load_le32(run + pos[i]));
        bool kept = (int64_t)pb_load_le64(run + pos[i] + 16) == asked[i];
        assert_int_equal(crcs[i].valid, kept);
        raised += !kept;
    }
    assert_true(raised > 10);
    memset(crcs, 0, sizeof crcs);
    static log_entry e[N];
    pb_log *log = open_at(dir_b, direct_min);
    for (size_t at = 0, round = 0; at < N; round++) {
        size_t n = 1 + testfs_mix64(at + 7) % (round % 5 == 0 ? 900 : 40);
        if (n > N - at)
            n = N - at;
        for (size_t i = 0; i < n; i++) {
            e[i] = entry_of(run, pos, at + i, round % 4 != 3 || i % 2 == 0);
            e[i].crc_out = &crcs[at + i];
        }
        uint64_t first;
        assert_int_equal(log_append(log, e, n, &first), 0);
        assert_int_equal(first, at);
        at += n;
    }
    assert_int_equal(log_sync(log), 0);
    assert_int_equal(log_close(log), 0);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(crcs[i].crc, pb_load_le32(run + pos[i]));
        assert_true(crcs[i].valid);
    }
    free(run);
    expect_same_segments();
}

static void test_same_bytes_buffered(void **state)
{
    replicate(0);
}

static void test_same_bytes_direct(void **state)
{
    replicate(1024);
}

static off_t size_of(const char *dir, uint64_t base)
{
    char path[PATH_MAX];
    struct stat st;
    assert_int_equal(segment_path(path, sizeof path, dir, base, ".log"), 0);
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

static void test_misfit_refused_nothing_written(void **state)
{
    write_plain(0);
    size_t len;
    static size_t pos[N];
    uint8_t *run = read_records(&len, pos);
    pb_log *log = open_at(dir_b, 0);
    log_entry e[4];
    for (size_t i = 0; i < 4; i++)
        e[i] = entry_of(run, pos, i, true);
    assert_int_equal(log_append(log, e, 2, NULL), 0);
    off_t size = size_of(dir_b, 0);

    /* Offsets 3, 4 after 0, 1: a gap. */
    log_entry gap[2] = {entry_of(run, pos, 3, true), entry_of(run, pos, 4, true)};
    messages[0] = '\0';
    assert_int_equal(log_append(log, gap, 2, NULL), PB_EINVAL);
    said("its offset is not the log's next (header: offset 3");
    /* The right offset, with a time going back before the last record's. */
    static uint8_t copy[MAX_LEN + PB_RECORD_HEADER_SIZE];
    uint32_t rsize = pb_load_le32(run + pos[2] + 4) + 8;
    memcpy(copy, run + pos[2], rsize);
    log_entry bad = entry_of(copy, (size_t[]){0}, 0, true);
    pb_store_le64(copy + 16, (uint64_t)(T0 - 1));
    bad.time_ns = T0 - 1;
    log_entry two[2] = {e[2], bad};
    two[1] = bad;
    assert_int_equal(log_append(log, &bad, 1, NULL), PB_EINVAL);
    said("its time goes back");
    /* An entry whose time is not its header's. */
    log_entry t_off = e[2];
    t_off.time_ns += 1;
    assert_int_equal(log_append(log, &t_off, 1, NULL), PB_EINVAL);
    said("its time is not its entry's");
    /* A length that is not its header's, and a suffix. */
    log_entry l_off = e[2];
    l_off.len -= 1;
    assert_int_equal(log_append(log, &l_off, 1, NULL), PB_EINVAL);
    said("its length is not its event's");
    log_entry s_off = e[2];
    s_off.suffix = "x";
    s_off.suffix_len = 1;
    assert_int_equal(log_append(log, &s_off, 1, NULL), PB_EINVAL);
    said("its length is not its event's");
    /* A good record followed by a misfit one: neither is written. */
    two[0] = e[2];
    two[1] = entry_of(run, pos, 2, true); /* offset 2 again */
    assert_int_equal(log_append(log, two, 2, NULL), PB_EINVAL);

    assert_int_equal(log_next_offset(log), 2);
    assert_int_equal(size_of(dir_b, 0), size);
    /* The log goes on. */
    assert_int_equal(log_append(log, &e[2], 2, NULL), 0);
    assert_int_equal(log_next_offset(log), 4);
    assert_int_equal(log_close(log), 0);
    free(run);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_same_bytes_buffered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_bytes_direct, setup, teardown),
        cmocka_unit_test_setup_teardown(test_misfit_refused_nothing_written, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
