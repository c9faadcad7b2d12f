/* Tests for proto/recrun: the Records frame (FORMAT.md 4.11). Its header
 * round-trips through frame_split_next/frame_parse/recrun_parse and
 * protobuf-c's generated decoder (padded length varints included); a run is
 * accepted only whole: a bad CRC inside it, a gap in its offsets, a run
 * that ends inside a record or a record's header, a damaged length, an
 * empty run are each refused with a message naming the record, and a frame
 * over the receiver's bound is refused before anything is read; a run cut
 * at a next offset (recrun_skip) keeps whole records from there. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "frame.h"
#include "pb_errors.h"
#include "protobus.pb-c.h"
#include "record.h"
#include "recrun.h"

/* Appends a record of event ev (len bytes) at offset to out; returns its size. */
static size_t put_record(uint8_t *out, uint64_t offset, int64_t t, const char *ev)
{
    size_t len = strlen(ev);
    assert_int_equal(record_encode_header(out, offset, t, ev, len, NULL, 0), 0);
    memcpy(out + PB_RECORD_HEADER_SIZE, ev, len);
    return PB_RECORD_HEADER_SIZE + len;
}

/* A run of n records from offset first; *pos[i] = record i's position. */
static size_t build_run(uint8_t *out, uint64_t first, size_t n, size_t *pos)
{
    static const char *evs[] = {"\x0a\x01"
                                "a",
                                "\x0a\x02"
                                "bb",
                                "\x0a\x03"
                                "ccc",
                                "\x0a\x00"};
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (pos)
            pos[i] = k;
        k += put_record(out + k, first + i, 1000 + (int64_t)i, evs[i % 4]);
    }
    return k;
}

static void expect_refused(const uint8_t *run, size_t n, const char *needle)
{
    char err[256] = "";
    uint64_t first = 77;
    size_t count = 77;
    assert_int_equal(recrun_check(run, n, PB_RECORD_MAX_EVENT, &first, &count, err, sizeof err),
                     PB_ECORRUPT);
    if (!strstr(err, needle))
        fail_msg("error \"%s\" does not say \"%s\"", err, needle);
    assert_int_equal(first, 77); /* nothing set */
    assert_int_equal(count, 77);
}

static void test_frame_roundtrip(void **state)
{
    (void)state;
    uint8_t buf[4096];
    uint8_t run[1024];
    size_t rlen = build_run(run, 41, 3, NULL);
    const char *part = "sensors";
    size_t h0 = recrun_put_header(buf, 9, part, strlen(part), 0);
    assert_true(h0 <= RECRUN_HEADER_MAX(strlen(part)));
    memcpy(buf + h0, run, rlen);
    /* Written again with the real length: the same size and bytes as
     * patching the lengths in. */
    uint8_t again[64];
    assert_int_equal(recrun_put_header(again, 9, part, strlen(part), rlen), h0);
    recrun_set_length(buf, h0, 9, rlen);
    assert_memory_equal(again, buf, h0);
    for (uint64_t id = 0; id < 300; id += 127) {
        size_t h = recrun_put_header(again, id, "", 0, 77777);
        uint8_t patched[64];
        assert_int_equal(recrun_put_header(patched, id, "", 0, 0), h);
        recrun_set_length(patched, h, id, 77777);
        assert_memory_equal(again, patched, h);
    }

    frame_split sp;
    char err[256];
    assert_int_equal(frame_split_next(buf, h0 + rlen, 1 << 20, &sp, err, sizeof err), 0);
    assert_int_equal(sp.used, h0 + rlen);
    frame_view v;
    assert_int_equal(frame_parse(sp.body.p, sp.body.len, &v, err, sizeof err), 0);
    assert_int_equal(v.kind, FRAME_RECORDS);
    assert_int_equal(v.id, 9);
    recrun_view rv;
    assert_int_equal(recrun_parse(v.body.p, v.body.len, &rv, err, sizeof err), 0);
    assert_int_equal(rv.partition.len, strlen(part));
    assert_memory_equal(rv.partition.p, part, strlen(part));
    assert_int_equal(rv.records.len, rlen);
    assert_memory_equal(rv.records.p, run, rlen);
    uint64_t first;
    size_t count;
    assert_int_equal(recrun_check(rv.records.p, rv.records.len, PB_RECORD_MAX_EVENT, &first, &count,
                                  err, sizeof err),
                     0);
    assert_int_equal(first, 41);
    assert_int_equal(count, 3);

    /* protobuf's own decoder reads the same (padded varints allowed). */
    Protobus__Frame *fr = protobus__frame__unpack(NULL, sp.body.len, sp.body.p);
    assert_non_null(fr);
    assert_int_equal(fr->body_case, PROTOBUS__FRAME__BODY_RECORDS);
    assert_int_equal(fr->id, 9);
    assert_string_equal(fr->records->partition, part);
    assert_int_equal(fr->records->records.len, rlen);
    assert_memory_equal(fr->records->records.data, run, rlen);
    protobus__frame__free_unpacked(fr, NULL);

    /* id 0 and an empty partition name are omitted, as defaults. */
    size_t h1 = recrun_put_header(buf, 0, "", 0, rlen);
    memcpy(buf + h1, run, rlen);
    fr = protobus__frame__unpack(NULL, h1 + rlen - 5, buf + 5);
    assert_non_null(fr);
    assert_int_equal(fr->body_case, PROTOBUS__FRAME__BODY_RECORDS);
    assert_int_equal(fr->records->records.len, rlen);
    protobus__frame__free_unpacked(fr, NULL);
}

static void test_parse_refuses(void **state)
{
    (void)state;
    recrun_view rv;
    char err[256];
    /* No records field. */
    const uint8_t only_name[] = {0x0a, 0x01, 'p'};
    assert_int_equal(recrun_parse(only_name, sizeof only_name, &rv, err, sizeof err), PB_EPROTO);
    assert_non_null(strstr(err, "no records"));
    /* Two runs in one message. */
    const uint8_t two[] = {0x12, 0x00, 0x12, 0x00};
    assert_int_equal(recrun_parse(two, sizeof two, &rv, err, sizeof err), PB_EPROTO);
    assert_non_null(strstr(err, "second run"));
    /* A partition name that is not UTF-8. */
    const uint8_t bad_name[] = {0x0a, 0x01, 0xff, 0x12, 0x00};
    assert_int_equal(recrun_parse(bad_name, sizeof bad_name, &rv, err, sizeof err), PB_EPROTO);
}

static void test_bad_crc_inside(void **state)
{
    (void)state;
    uint8_t run[1024];
    size_t pos[4];
    size_t n = build_run(run, 5, 4, pos);
    run[pos[2] + PB_RECORD_HEADER_SIZE + 1] ^= 0x01; /* record 2's event */
    expect_refused(run, n, "record 2");
    expect_refused(run, n, "CRC");
    run[pos[2] + PB_RECORD_HEADER_SIZE + 1] ^= 0x01;
    run[pos[1] + 12] ^= 0x80; /* record 1's offset: the CRC covers it */
    expect_refused(run, n, "record 1");
}

static void test_gap(void **state)
{
    (void)state;
    uint8_t run[1024];
    size_t k = put_record(run, 5, 1, "\x0a\x01x");
    k += put_record(run + k, 6, 1, "\x0a\x01x");
    k += put_record(run + k, 8, 1, "\x0a\x01x"); /* 7 missing */
    expect_refused(run, k, "offset 8, expected 7");
    /* Going back is a gap too. */
    k = put_record(run, 5, 1, "\x0a\x01x");
    k += put_record(run + k, 5, 1, "\x0a\x01x");
    expect_refused(run, k, "offset 5, expected 6");
}

static void test_truncated(void **state)
{
    (void)state;
    uint8_t run[1024];
    size_t pos[3];
    size_t n = build_run(run, 0, 3, pos);
    /* Every cut inside the last record is refused (never taken as fewer). */
    for (size_t cut = pos[2] + 1; cut < n; cut++)
        expect_refused(run, cut, "record 2");
    expect_refused(run, pos[2] + 10, "header");
    expect_refused(run, n - 1, "ends inside record 2");
}

static void test_damaged_length(void **state)
{
    (void)state;
    uint8_t run[1024];
    size_t pos[2];
    size_t n = build_run(run, 0, 2, pos);
    pb_store_le32(run + pos[1] + 4, 0xfffffff0u); /* far beyond any event */
    expect_refused(run, n, "length");
    pb_store_le32(run + pos[1] + 4, 3); /* below the fixed 16 */
    expect_refused(run, n, "length");
    /* A length within bounds but past the run's end. */
    n = build_run(run, 0, 2, pos);
    pb_store_le32(run + pos[1] + 4, 4096);
    expect_refused(run, n, "ends inside record 1");
    /* max_event binds. */
    n = build_run(run, 0, 1, NULL);
    char err[256];
    uint64_t first;
    size_t count;
    assert_int_equal(recrun_check(run, n, 2, &first, &count, err, sizeof err), PB_ECORRUPT);
}

static void test_empty(void **state)
{
    (void)state;
    uint8_t run[1] = {0};
    expect_refused(run, 0, "empty");
}

static void test_over_max_frame(void **state)
{
    (void)state;
    /* A Records frame is bounded like any frame: refused from its length
     * prefix, before its bytes are read (or allocated for). */
    static uint8_t buf[8192];
    uint8_t run[4096];
    size_t rlen = 0;
    for (uint64_t i = 0; rlen < 3000; i++)
        rlen += put_record(run + rlen, i, 1,
                           "\x0a\x04"
                           "abcd");
    size_t h = recrun_put_header(buf, 1, "p", 1, rlen);
    memcpy(buf + h, run, rlen);
    frame_split sp;
    char err[256] = "";
    assert_int_equal(frame_split_next(buf, 8, 1024, &sp, err, sizeof err), PB_ETOOBIG);
    assert_non_null(strstr(err, "exceeds the maximum of 1024"));
    assert_int_equal(frame_split_next(buf, h + rlen, 4096, &sp, err, sizeof err), 0);
    /* The bound a standby reads with: its max_frame_bytes, never below
     * RECRUN_FRAME_MAX; a frame one byte over it is refused from its
     * prefix, naming the bound. */
    assert_int_equal(recrun_frame_max(1024), RECRUN_FRAME_MAX);
    assert_int_equal(recrun_frame_max(16u << 20), 16u << 20);
    uint8_t pre[32];
    size_t k = recrun_put_header(pre, 0, "", 0, 0); /* lengths patched below */
    assert_true(k <= sizeof pre);
    recrun_set_length(pre, k, 0, RECRUN_FRAME_MAX - k + RECRUN_LEN_BYTES + 1);
    assert_int_equal(frame_split_next(pre, k, recrun_frame_max(1024), &sp, err, sizeof err),
                     PB_ETOOBIG);
    assert_non_null(strstr(err, "exceeds the maximum of 524288"));
    recrun_set_length(pre, k, 0, RECRUN_FRAME_MAX - k + RECRUN_LEN_BYTES);
    assert_int_equal(frame_split_next(pre, k, recrun_frame_max(1024), &sp, err, sizeof err),
                     PB_EINCOMPLETE);
}

/* recrun_skip (a primary's live-queue run cut at a subscription's next
 * offset): for every next from before the run to past it, the part from
 * next on (its position, first offset, count, and so its bytes); a count
 * the bytes do not hold, records not ending at the run's end, a damaged
 * length are refused. */
static void test_skip(void **state)
{
    (void)state;
    uint8_t run[512];
    size_t pos[10];
    size_t n = build_run(run, 100, 10, pos);
    for (uint64_t next = 99; next <= 111; next++) {
        size_t at = 7;
        uint64_t off = 7;
        uint32_t left = 7;
        assert_int_equal(recrun_skip(run, n, 100, 10, next, &at, &off, &left), 0);
        size_t k = next <= 100 ? 0 : next >= 110 ? 10 : (size_t)(next - 100);
        assert_int_equal(left, 10 - k);
        assert_int_equal(off, 100 + k);
        assert_int_equal(at, k < 10 ? pos[k] : n);
        if (k < 10) {
            uint64_t first;
            size_t count;
            char err[256];
            assert_int_equal(recrun_check(run + at, n - at, PB_RECORD_MAX_EVENT, &first, &count,
                                          err, sizeof err),
                             0);
            assert_int_equal(first, off);
            assert_int_equal(count, left);
        }
    }
    size_t at;
    uint64_t off;
    uint32_t left;
    assert_int_equal(recrun_skip(run, n, 100, 11, 105, &at, &off, &left), PB_ECORRUPT);
    assert_int_equal(recrun_skip(run, n, 100, 9, 105, &at, &off, &left), PB_ECORRUPT);
    assert_int_equal(recrun_skip(run, n - 1, 100, 10, 100, &at, &off, &left), PB_ECORRUPT);
    assert_int_equal(recrun_skip(run, 10, 100, 1, 100, &at, &off, &left), PB_ECORRUPT);
    pb_store_le32(run + pos[3] + 4, 4); /* a length under the fixed part */
    assert_int_equal(recrun_skip(run, n, 100, 10, 108, &at, &off, &left), PB_ECORRUPT);
    pb_store_le32(run + pos[3] + 4, 100000); /* past the end */
    assert_int_equal(recrun_skip(run, n, 100, 10, 101, &at, &off, &left), PB_ECORRUPT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_roundtrip), cmocka_unit_test(test_parse_refuses),
        cmocka_unit_test(test_bad_crc_inside),  cmocka_unit_test(test_gap),
        cmocka_unit_test(test_truncated),       cmocka_unit_test(test_damaged_length),
        cmocka_unit_test(test_empty),           cmocka_unit_test(test_over_max_frame),
        cmocka_unit_test(test_skip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
