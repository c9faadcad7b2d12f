/*
 * test_corruption - 10,000 seeded single-bit flips in a partition's stored
 * segments (rotated ones and the active one), each on a fresh copy: nothing
 * is ever skipped silently and recovery deletes nothing it must keep.
 *
 * What is allowed, by where the flipped bit lies (o = the offset of the
 * record holding it):
 *   - a segment header (bytes 0..39): no record is lost, so the reader
 *     returns every record intact; log_open reports it naming the file:
 *     for a rotated segment it keeps the file and opens ("damaged header"),
 *     for the active one it refuses to open (PB_EFORMAT, "bad header ...
 *     records follow; not touching it"). No file is changed.
 *   - a record that is not the last one of the active segment: the reader
 *     returns every other record intact and reports PB_ECORRUPT with a
 *     problem range that is exactly o..o (plus, possibly, reports of
 *     unreadable bytes that lose no offset); log_open opens with every
 *     offset, changes no .log file, and reads back the same way after.
 *   - the last record of the active segment (indistinguishable from a torn
 *     write): the reader returns 0..o-1 intact and then either reports o..o
 *     or stops (a record still being written); log_open reports "torn or
 *     corrupt tail at byte <its position>" naming the file and truncates
 *     exactly there, nothing else; the next offset is o.
 * A torn tail cut at every byte of the last record is
 * test_log_recovery.c:test_recover_cut_inside_last_record.
 *
 * PB_TEST_SCALE (a percentage, default 100) scales the number of flips.
 */
#include "testfs.h"
#include "log.h"
#include "pb_errors.h"
#include "reader.h"
#include "record.h"
#include "segment.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#define T0        1700000000000000000ll
#define NRECORDS  160
#define MAX_FILES 32

static char root[64];
static char part[128];

static size_t event_for(uint64_t off, uint8_t *buf)
{
    uint64_t h = testfs_mix64(off);
    size_t len = 8 + h % 120;
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)testfs_mix64(h + i);
    return len;
}

static char messages[16384];

static void capture(void *ctx, enum log_level level, const char *msg)
{
    size_t used = strlen(messages);
    snprintf(messages + used, sizeof messages - used, "%s\n", msg);
}

static log_options opts(void)
{
    return (log_options){.segment_bytes = 4096, .index_interval_bytes = 512, .logf = capture};
}

/* ---- the pristine partition, in memory ------------------------------------ */

typedef struct file {
    char name[256];
    uint8_t *data;
    size_t len;
    bool is_log;
    uint64_t base;
} file;

typedef struct rec_pos {
    size_t file; /* index into files */
    uint64_t pos, size, offset;
} rec_pos;

static file files[MAX_FILES];
static size_t nfiles;
static rec_pos recs[NRECORDS];
static size_t active; /* index of the active segment's file */

/* Writes the pristine files into part (replacing whatever is there). */
static void restore(void)
{
    char path[PATH_MAX];
    for (size_t i = 0; i < nfiles; i++) {
        snprintf(path, sizeof path, "%s/%.200s", part, files[i].name);
        testfs_write_file(path, files[i].data, files[i].len);
    }
}

static size_t count_files(void)
{
    DIR *d = opendir(part);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        n += de->d_name[0] != '.';
    assert_int_equal(closedir(d), 0);
    return n;
}

static int cmp_file(const void *a, const void *b)
{
    return strcmp(((const file *)a)->name, ((const file *)b)->name);
}

static int build(void **state)
{
    snprintf(root, sizeof root, "/dev/shm/pb_corruption.XXXXXX");
    if (!mkdtemp(root)) {
        snprintf(root, sizeof root, "/tmp/pb_corruption.XXXXXX");
        if (!mkdtemp(root))
            return -1;
    }
    snprintf(part, sizeof part, "%s/p", root);
    pb_log *log;
    log_options o = opts();
    if (log_open(&log, part, &o) < 0)
        return -1;
    static uint8_t buf[16][128];
    log_entry e[16];
    for (uint64_t off = 0; off < NRECORDS;) {
        size_t n = 1 + testfs_mix64(off + 99) % 16;
        if (n > NRECORDS - off)
            n = NRECORDS - off;
        for (size_t i = 0; i < n; i++)
            e[i] = (log_entry){.data = buf[i],
                               .len = event_for(off + i, buf[i]),
                               .time_ns = T0 + (int64_t)(off + i)};
        if (log_append(log, e, n, NULL) < 0 || log_sync(log) < 0)
            return -1;
        off += n;
    }
    if (log_close(log) < 0)
        return -1;
    DIR *d = opendir(part);
    if (!d)
        return -1;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || nfiles == MAX_FILES)
            continue;
        file *f = &files[nfiles++];
        char path[PATH_MAX];
        snprintf(f->name, sizeof f->name, "%s", de->d_name);
        snprintf(path, sizeof path, "%s/%s", part, de->d_name);
        f->data = testfs_read_file(path, &f->len);
        f->is_log = segment_parse_name(f->name, ".log", &f->base);
    }
    closedir(d);
    qsort(files, nfiles, sizeof *files, cmp_file);
    /* Where every record is. */
    size_t nrec = 0, nlog = 0;
    for (size_t i = 0; i < nfiles; i++) {
        if (!files[i].is_log)
            continue;
        nlog++;
        active = i;
        uint64_t pos = PB_FILE_HEADER_SIZE;
        pb_record rec;
        uint32_t size;
        while (pos < files[i].len && record_decode(files[i].data + pos, files[i].len - pos,
                                                   PB_RECORD_MAX_EVENT, &rec, &size) == 0) {
            if (nrec == NRECORDS || rec.offset != nrec)
                return -1;
            recs[nrec++] = (rec_pos){i, pos, size, rec.offset};
            pos += size;
        }
    }
    return nrec == NRECORDS && nlog >= 4 ? 0 : -1;
}

static int cleanup(void **state)
{
    for (size_t i = 0; i < nfiles; i++)
        free(files[i].data);
    return testfs_rmrf(root);
}

/* ---- one flip ---------------------------------------------------------------- */

/* The record holding byte pos of file fi; NULL for the header. */
static const rec_pos *record_at(size_t fi, uint64_t pos)
{
    for (size_t i = 0; i < NRECORDS; i++)
        if (recs[i].file == fi && pos >= recs[i].pos && pos < recs[i].pos + recs[i].size)
            return &recs[i];
    return NULL;
}

/* Reads the whole partition. Every offset below `count` except `lost` must
 * come back intact; `lost` (UINT64_MAX: none) must be covered by a problem
 * range that is exactly lost..lost, or (when may_stop) may end the read. */
static void read_all(uint64_t lost, bool may_stop, uint64_t count, const char *what)
{
    pb_reader *r;
    pb_record rec;
    uint8_t want[128];
    assert_int_equal(pb_reader_open(&r, part), 0);
    uint64_t next = 0;
    bool lost_reported = false;
    for (int guard = 0; guard < 4 * NRECORDS; guard++) {
        int rc = pb_reader_next(r, &rec);
        if (rc == PB_EEOF)
            break;
        if (rc == PB_ECORRUPT) {
            const struct pb_reader_problem *pr = pb_reader_problem(r);
            if (pr->last_offset + 1 == pr->first_offset)
                continue; /* unreadable bytes, no offset lost */
            if (pr->first_offset != lost || pr->last_offset != lost || lost_reported)
                fail_msg("%s: problem range %llu..%llu (%s at byte %llu of %s); only %llu "
                         "may be lost",
                         what, (unsigned long long)pr->first_offset,
                         (unsigned long long)pr->last_offset, pr->reason,
                         (unsigned long long)pr->position, pr->file, (unsigned long long)lost);
            assert_true(pr->file[0] != '\0' && pr->position >= PB_FILE_HEADER_SIZE);
            lost_reported = true;
            next = lost + 1;
            continue;
        }
        if (rc != 0)
            fail_msg("%s: reader: %s", what, pb_strerror(rc));
        if (rec.offset != next)
            fail_msg("%s: offset %llu read where %llu was due", what,
                     (unsigned long long)rec.offset, (unsigned long long)next);
        size_t len = event_for(rec.offset, want);
        if (rec.event_len != len || memcmp(rec.event, want, len) != 0 ||
            rec.time_ns != T0 + (int64_t)rec.offset)
            fail_msg("%s: offset %llu came back with wrong bytes", what,
                     (unsigned long long)rec.offset);
        next = rec.offset + 1;
    }
    pb_reader_close(r);
    if (lost != UINT64_MAX && !lost_reported && !(may_stop && next == lost))
        fail_msg("%s: offset %llu was skipped silently (read up to %llu)", what,
                 (unsigned long long)lost, (unsigned long long)next);
    if (next != count && !(may_stop && next == lost))
        fail_msg("%s: read ended at offset %llu of %llu", what, (unsigned long long)next,
                 (unsigned long long)count);
}

/* Every .log file is as restore() wrote it, except `flipped` (byte pos
 * changed) and, when cut != UINT64_MAX, the active one cut at `cut`. */
static void logs_unchanged(size_t flipped, uint64_t pos, uint64_t cut, const char *what)
{
    char path[PATH_MAX];
    for (size_t i = 0; i < nfiles; i++) {
        if (!files[i].is_log)
            continue;
        snprintf(path, sizeof path, "%s/%.200s", part, files[i].name);
        size_t len;
        uint8_t *now = testfs_read_file(path, &len);
        size_t want_len = i == active && cut != UINT64_MAX ? cut : files[i].len;
        if (len != want_len)
            fail_msg("%s: %s is %zu bytes, expected %zu", what, files[i].name, len, want_len);
        for (size_t k = 0; k < len; k++)
            if (now[k] != files[i].data[k] && !(i == flipped && k == pos))
                fail_msg("%s: %s changed at byte %zu", what, files[i].name, k);
        free(now);
    }
}

static void expect_message(const char *text, const char *what)
{
    if (!strstr(messages, text))
        fail_msg("%s: no message \"%s\" in:\n%s", what, text, messages);
}

static void one_flip(uint64_t seed, size_t total_log_bytes, uint64_t *kinds)
{
    /* A byte uniformly over all .log bytes, one of its bits. */
    uint64_t h = testfs_mix64(seed);
    uint64_t at = h % total_log_bytes;
    size_t fi = 0;
    for (; fi < nfiles; fi++) {
        if (!files[fi].is_log)
            continue;
        if (at < files[fi].len)
            break;
        at -= files[fi].len;
    }
    uint8_t bit = (uint8_t)(1u << (testfs_mix64(h) % 8));
    char what[PATH_MAX], path[PATH_MAX], want[PATH_MAX + 128];
    snprintf(what, sizeof what, "flip %llu (%.200s byte %llu bit 0x%02x)", (unsigned long long)seed,
             files[fi].name, (unsigned long long)at, bit);
    restore();
    snprintf(path, sizeof path, "%s/%.200s", part, files[fi].name);
    files[fi].data[at] ^= bit;
    testfs_write_file(path, files[fi].data, files[fi].len);
    files[fi].data[at] ^= bit; /* the pristine copy stays pristine */

    const rec_pos *rp = at < PB_FILE_HEADER_SIZE ? NULL : record_at(fi, at);
    assert_true(at < PB_FILE_HEADER_SIZE || rp != NULL);
    bool last_active = rp && fi == active && rp->offset == NRECORDS - 1;
    uint64_t lost = rp ? rp->offset : UINT64_MAX;

    /* 1. The reader, before any recovery. */
    read_all(lost, last_active, NRECORDS, what);

    /* 2. Recovery. */
    pb_log *log;
    log_options o = opts();
    messages[0] = '\0';
    int rc = log_open(&log, part, &o);
    if (!rp) {
        kinds[0]++;
        if (fi == active) {
            if (rc != PB_EFORMAT)
                fail_msg("%s: log_open gave %s for a damaged active header", what, pb_strerror(rc));
            snprintf(want, sizeof want, "segment %s: bad header", path);
        } else {
            if (rc != 0)
                fail_msg("%s: log_open: %s\n%s", what, pb_strerror(rc), messages);
            assert_true(log_next_offset(log) == NRECORDS);
            assert_int_equal(log_close(log), 0);
            snprintf(want, sizeof want, "segment %s: damaged header at byte 0", path);
        }
        expect_message(want, what);
        logs_unchanged(fi, at, UINT64_MAX, what);
        read_all(UINT64_MAX, false, NRECORDS, what);
        return;
    }
    if (rc != 0)
        fail_msg("%s: log_open: %s\n%s", what, pb_strerror(rc), messages);
    if (last_active) {
        kinds[2]++;
        assert_true(log_next_offset(log) == rp->offset);
        assert_int_equal(log_close(log), 0);
        snprintf(want, sizeof want, "segment %s: torn or corrupt tail at byte %llu", path,
                 (unsigned long long)rp->pos);
        expect_message(want, what);
        logs_unchanged(fi, at, rp->pos, what);
        read_all(UINT64_MAX, false, rp->offset, what);
        return;
    }
    kinds[1]++;
    assert_true(log_next_offset(log) == NRECORDS);
    assert_int_equal(log_close(log), 0);
    logs_unchanged(fi, at, UINT64_MAX, what);
    read_all(lost, false, NRECORDS, what);
    assert_true(count_files() == nfiles);
}

static int scale_percent(void)
{
    const char *s = getenv("PB_TEST_SCALE");
    int v = s ? atoi(s) : 100;
    return v > 0 ? v : 100;
}

static void test_single_bit_flips(void **state)
{
    size_t total = 0;
    for (size_t i = 0; i < nfiles; i++)
        if (files[i].is_log)
            total += files[i].len;
    uint64_t kinds[3] = {0}; /* header, record, last record of the active segment */
    uint64_t n = 10000 * (uint64_t)scale_percent() / 100;
    for (uint64_t seed = 1; seed <= n; seed++)
        one_flip(seed, total, kinds);
    printf("bit flips: %llu in segment headers, %llu in records, %llu in the active segment's "
           "last record\n",
           (unsigned long long)kinds[0], (unsigned long long)kinds[1],
           (unsigned long long)kinds[2]);
    assert_true(kinds[0] > 0 && kinds[1] > 0 && kinds[2] > 0);
}

/* Deterministic coverage of the two rare kinds, whatever the seeds hit. */
static void test_flips_in_headers_and_last_record(void **state)
{
    uint64_t kinds[3] = {0};
    size_t total = 0;
    for (size_t i = 0; i < nfiles; i++)
        if (files[i].is_log)
            total += files[i].len;
    /* Seeds chosen by search: flips landing in each header and in the
     * active segment's last record. */
    for (uint64_t seed = 1, hits = 0; hits < 40 && seed < 2000000; seed++) {
        uint64_t h = testfs_mix64(seed), at = h % total;
        size_t fi = 0;
        for (; fi < nfiles; fi++) {
            if (!files[fi].is_log)
                continue;
            if (at < files[fi].len)
                break;
            at -= files[fi].len;
        }
        bool header = at < PB_FILE_HEADER_SIZE;
        bool last = fi == active && at >= recs[NRECORDS - 1].pos;
        if (header || last) {
            one_flip(seed, total, kinds);
            hits++;
        }
    }
    assert_true(kinds[0] >= 10 && kinds[2] >= 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_bit_flips),
        cmocka_unit_test(test_flips_in_headers_and_last_record),
    };
    return cmocka_run_group_tests(tests, build, cleanup);
}
