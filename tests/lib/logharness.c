/*
 * logharness - see logharness.h.
 */
#include "logharness.h"

#include "pb_errors.h"
#include "reader.h"
#include "record.h"
#include "segment.h"
#include "testfs.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char lh_root[64];
char lh_part[128];

int lh_setup(void **state)
{
    if (testfs_make_root(lh_root, sizeof lh_root, "pb_test_log", lh_part, sizeof lh_part) < 0)
        return -1;
    lh_messages[0] = '\0';
    lh_worst = LOG_DEBUG;
    return 0;
}

int lh_teardown(void **state)
{
    return testfs_rmrf(lh_root);
}

size_t lh_event_for(uint64_t off, uint8_t *buf)
{
    uint64_t h = testfs_mix64(off);
    size_t len = 20 + h % 281;
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(testfs_mix64(h + i / 8) >> (8 * (i % 8)));
    return len;
}

int64_t lh_time_for(uint64_t off)
{
    return T0 + (int64_t)off * 1000;
}

/* Log messages, kept for assertions. */
char lh_messages[16384];

enum log_level lh_worst; /* the most severe level captured */
bool lh_synced_acks;     /* lh_opts(): every ack after a sync (fsync = always) */

void lh_capture(void *ctx, enum log_level level, const char *msg)
{
    if (level > lh_worst)
        lh_worst = level;
    size_t used = strlen(lh_messages);
    snprintf(lh_messages + used, sizeof lh_messages - used, "%s\n", msg);
}

int64_t lh_fixed_clock(void *ctx)
{
    return *(int64_t *)ctx;
}

int64_t lh_clock_value = 1234567890123456789ll;

log_options lh_opts(uint64_t segment_bytes)
{
    return (log_options){.segment_bytes = segment_bytes,
                         .index_interval_bytes = 1024,
                         .now_ns = lh_fixed_clock,
                         .clock_ctx = &lh_clock_value,
                         .logf = lh_capture,
                         .synced_acks = lh_synced_acks};
}

log_options lh_direct_opts(uint64_t segment_bytes, uint64_t direct_min)
{
    log_options o = lh_opts(segment_bytes);
    o.index_interval_bytes = 4096;
    o.direct_min_bytes = direct_min;
    return o;
}

pb_log *lh_open_log_opts(const log_options *o)
{
    pb_log *log;
    lh_messages[0] = '\0';
    lh_worst = LOG_DEBUG;
    int rc = log_open(&log, lh_part, o);
    if (rc != 0)
        fail_msg("log_open: %s\n%s", pb_strerror(rc), lh_messages);
    return log;
}

pb_log *lh_open_log(uint64_t segment_bytes)
{
    log_options o = lh_opts(segment_bytes);
    return lh_open_log_opts(&o);
}

int lh_append_range(pb_log *log, uint64_t from, uint64_t count, size_t max_batch)
{
    return lh_append_range_timed(log, from, count, max_batch, lh_time_for);
}

int lh_append_range_timed(pb_log *log, uint64_t from, uint64_t count, size_t max_batch,
                          lh_time_fn *time_for)
{
    static uint8_t scratch[LH_MAX_BATCH * 300];
    static log_entry e[LH_MAX_BATCH];
    uint64_t done = 0;
    assert_true(max_batch >= 1 && max_batch <= LH_MAX_BATCH);
    while (done < count) {
        size_t n = 1 + testfs_mix64(from + done + 5) % max_batch;
        if (n > count - done)
            n = count - done;
        for (size_t i = 0; i < n; i++) {
            uint64_t off = from + done + i;
            uint8_t *p = scratch + i * 300;
            size_t len = lh_event_for(off, p);
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

void lh_verify_with(uint64_t n, lh_check_fn *check, bool to_end)
{
    pb_reader *r;
    pb_record rec;
    assert_int_equal(pb_reader_open(&r, lh_part), 0);
    for (uint64_t o = 0; o < n; o++) {
        int rc = pb_reader_next(r, &rec);
        if (rc != 0)
            fail_msg("offset %llu: %s", (unsigned long long)o, pb_strerror(rc));
        assert_true(rec.offset == o);
        check(o, &rec);
    }
    if (to_end)
        assert_int_equal(pb_reader_next(r, &rec), PB_EEOF);
    pb_reader_close(r);
}

void lh_check_event(uint64_t off, const pb_record *rec)
{
    uint8_t want[300];
    size_t len = lh_event_for(off, want);
    assert_int_equal(rec->event_len, len);
    assert_memory_equal(rec->event, want, len);
    assert_true(rec->time_ns == lh_time_for(off));
}

void lh_verify_all(uint64_t n)
{
    lh_verify_with(n, lh_check_event, true);
}

void lh_seg_path(char *out, uint64_t base, const char *ext)
{
    assert_int_equal(segment_path(out, PATH_MAX, lh_part, base, ext), 0);
}

off_t lh_file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

/* Record positions of a .log: pos[i] for its i-th record; returns count. */
size_t lh_record_positions(const char *path, uint64_t *pos, size_t cap)
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
