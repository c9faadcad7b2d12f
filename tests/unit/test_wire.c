/*
 * Unit tests for proto/wire.c: varints, tags, fields, packed runs, UTF-8,
 * and the fast paths against the exact code they short-cut.
 * Single-threaded; no files.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "pb_errors.h"
#include "wire.h"

#include <stdlib.h>
#include <string.h>

/* Decode every boundary value that encodes, and compare with the known sizes. */
static void test_varint_round_trip(void **state)
{
    static const uint64_t values[] = {0,          1,
                                      127,        128,
                                      300,        16383,
                                      16384,      (1ull << 21) - 1,
                                      1ull << 21, (1ull << 28) - 1,
                                      1ull << 28, (1ull << 35) - 1,
                                      1ull << 35, (1ull << 56) - 1,
                                      1ull << 56, (1ull << 63) - 1,
                                      1ull << 63, UINT64_MAX};
    static const size_t sizes[] = {1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 5, 5, 6, 8, 9, 9, 10, 10};

    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        uint8_t buf[WIRE_VARINT_MAX + 1];
        uint64_t v = ~values[i];
        size_t n = wire_put_varint(buf, values[i]);

        assert_int_equal(n, sizes[i]);
        assert_int_equal(wire_varint_size(values[i]), sizes[i]);
        assert_int_equal(wire_varint_decode(buf, n, &v), (int)n);
        assert_true(v == values[i]);
        /* Every strict prefix asks for more bytes. */
        for (size_t k = 0; k < n; k++)
            assert_int_equal(wire_varint_decode(buf, k, &v), 0);
    }
}

static void test_varint_known_bytes(void **state)
{
    uint8_t buf[WIRE_VARINT_MAX];

    assert_int_equal(wire_put_varint(buf, 300), 2);
    assert_int_equal(buf[0], 0xac);
    assert_int_equal(buf[1], 0x02);
}

static void test_varint_malformed(void **state)
{
    uint8_t eleven[11];
    uint8_t overflow[10];
    uint8_t padded[10];
    uint64_t v = 0;

    /* 11 bytes: the 10th still has the continuation bit. */
    memset(eleven, 0x80, sizeof eleven);
    eleven[10] = 0x01;
    assert_int_equal(wire_varint_decode(eleven, sizeof eleven, &v), PB_EPROTO);
    assert_int_equal(wire_varint_decode(eleven, 10, &v), PB_EPROTO);
    assert_int_equal(wire_varint_decode(eleven, 9, &v), 0);

    /* 10 bytes whose last carries more than bit 63. */
    memset(overflow, 0xff, sizeof overflow);
    overflow[9] = 0x02;
    assert_int_equal(wire_varint_decode(overflow, sizeof overflow, &v), PB_EPROTO);
    overflow[9] = 0x01;
    assert_int_equal(wire_varint_decode(overflow, sizeof overflow, &v), 10);
    assert_true(v == UINT64_MAX);

    /* Non-canonical padding is legal protobuf and decodes. */
    memset(padded, 0x80, sizeof padded);
    padded[0] = 0x85;
    padded[9] = 0x00;
    assert_int_equal(wire_varint_decode(padded, sizeof padded, &v), 10);
    assert_true(v == 5);
}

static void test_tag_encoding(void **state)
{
    uint8_t buf[WIRE_TAG_MAX];

    assert_int_equal(wire_put_tag(buf, 1, WIRE_LEN), 1);
    assert_int_equal(buf[0], 0x0a);
    assert_int_equal(wire_put_tag(buf, 16, WIRE_VARINT), 2);
    assert_int_equal(buf[0], 0x80);
    assert_int_equal(buf[1], 0x01);
    assert_int_equal(wire_tag_size(WIRE_FIELD_MAX), 5);
    assert_int_equal(wire_put_tag(buf, WIRE_FIELD_MAX, WIRE_I32), 5);
}

/* Read one field of each wire type back from hand-made bytes. */
static void test_next_each_type(void **state)
{
    static const uint8_t msg[] = {
        0x08, 0x96, 0x01,                         /* 1: varint 150 */
        0x11, 1,    2,    3,    4,    5, 6, 7, 8, /* 2: fixed64 */
        0x1a, 0x03, 'a',  'b',  'c',              /* 3: "abc" */
        0x25, 0x78, 0x56, 0x34, 0x12,             /* 4: fixed32 */
        0x80, 0x01, 0x00,                         /* 16: varint 0 */
    };
    char detail[WIRE_DETAIL_MAX];
    wire_cursor c;
    wire_field f;

    wire_cursor_init(&c, msg, sizeof msg);
    assert_int_equal(wire_next(&c, &f, detail), 0);
    assert_int_equal(f.number, 1);
    assert_int_equal(f.type, WIRE_VARINT);
    assert_int_equal(f.value, 150);
    assert_int_equal(f.pos, 0);

    assert_int_equal(wire_next(&c, &f, detail), 0);
    assert_int_equal(f.type, WIRE_I64);
    assert_true(f.value == 0x0807060504030201ull);

    assert_int_equal(wire_next(&c, &f, detail), 0);
    assert_int_equal(f.type, WIRE_LEN);
    assert_int_equal(f.data.len, 3);
    assert_memory_equal(f.data.p, "abc", 3);
    assert_int_equal(f.pos, 12);

    assert_int_equal(wire_next(&c, &f, detail), 0);
    assert_int_equal(f.type, WIRE_I32);
    assert_int_equal(f.value, 0x12345678);

    assert_int_equal(wire_next(&c, &f, detail), 0);
    assert_int_equal(f.number, 16);
    assert_int_equal(f.value, 0);
    assert_true(wire_cursor_done(&c));
}

static void expect_bad(const uint8_t *p, size_t n, const char *needle)
{
    char detail[WIRE_DETAIL_MAX];
    wire_cursor c;
    wire_field f;

    wire_cursor_init(&c, p, n);
    assert_int_equal(wire_next(&c, &f, detail), PB_EPROTO);
    if (strstr(detail, needle) == NULL)
        fail_msg("detail \"%s\" lacks \"%s\"", detail, needle);
}

static void test_next_malformed(void **state)
{
    static const uint8_t len_too_long[] = {0x0a, 0x05, 'a', 'b'};
    static const uint8_t field_zero[] = {0x02, 0x00};
    static const uint8_t group[] = {0x0b, 0x0c};
    static const uint8_t bad_type[] = {0x0e};
    static const uint8_t short_fixed64[] = {0x09, 1, 2, 3};
    static const uint8_t short_fixed32[] = {0x0d, 1};
    static const uint8_t long_tag[] = {0x88, 0x80, 0x80, 0x80, 0x80, 0x00};
    static const uint8_t long_len[] = {0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00};
    static const uint8_t cut_varint[] = {0x08, 0x80};
    static const uint8_t huge_field[] = {0xf8, 0xff, 0xff, 0xff, 0x7f};

    expect_bad(len_too_long, sizeof len_too_long, "length 5 exceeds remaining 2 bytes");
    expect_bad(field_zero, sizeof field_zero, "invalid field number 0");
    expect_bad(group, sizeof group, "groups");
    expect_bad(bad_type, sizeof bad_type, "invalid wire type 6");
    expect_bad(short_fixed64, sizeof short_fixed64, "needs 8 bytes, 3 remain");
    expect_bad(short_fixed32, sizeof short_fixed32, "needs 4 bytes, 1 remain");
    expect_bad(long_tag, sizeof long_tag, "longer than 5 bytes");
    expect_bad(long_len, sizeof long_len, "longer than 5 bytes");
    expect_bad(cut_varint, sizeof cut_varint, "runs past the end");
    expect_bad(huge_field, sizeof huge_field, "invalid field number");
}

static void test_find_skips_others(void **state)
{
    static const uint8_t msg[] = {0x08, 0x01, 0x12, 0x01, 'x', 0x08, 0x02, 0x12, 0x00};
    char detail[WIRE_DETAIL_MAX];
    wire_cursor c;
    wire_field f;

    wire_cursor_init(&c, msg, sizeof msg);
    assert_int_equal(wire_find(&c, 2, &f, detail), 0);
    assert_int_equal(f.data.len, 1);
    assert_int_equal(wire_find(&c, 2, &f, detail), 0);
    assert_int_equal(f.data.len, 0);
    assert_int_equal(wire_find(&c, 2, &f, detail), PB_EEOF);
}

/* Packed, unpacked and mixed runs of field 3 yield the same values in order. */
static void test_repeated_packed_and_unpacked(void **state)
{
    static const uint8_t msg[] = {
        0x18, 0x01,                   /* 3: 1 (unpacked) */
        0x0a, 0x01, 'p',              /* 1: other field */
        0x1a, 0x03, 0x02, 0xac, 0x02, /* 3: packed [2, 300] */
        0x1a, 0x00,                   /* 3: empty packed run */
        0x18, 0x04,                   /* 3: 4 */
    };
    static const uint64_t want[] = {1, 2, 300, 4};
    char detail[WIRE_DETAIL_MAX];
    wire_cursor c;
    wire_repeated r;
    uint64_t v;

    wire_cursor_init(&c, msg, sizeof msg);
    wire_repeated_init(&r, &c, 3);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(wire_repeated_next(&r, &v, detail), 0);
        assert_true(v == want[i]);
    }
    assert_int_equal(wire_repeated_next(&r, &v, detail), PB_EEOF);
}

static void test_repeated_truncated_packed(void **state)
{
    static const uint8_t msg[] = {0x1a, 0x02, 0x01, 0x80};
    char detail[WIRE_DETAIL_MAX];
    wire_cursor c;
    wire_repeated r;
    uint64_t v;

    wire_cursor_init(&c, msg, sizeof msg);
    wire_repeated_init(&r, &c, 3);
    assert_int_equal(wire_repeated_next(&r, &v, detail), 0);
    assert_int_equal(wire_repeated_next(&r, &v, detail), PB_EPROTO);
    assert_non_null(strstr(detail, "runs past the end"));
}

static void test_utf8(void **state)
{
    size_t bad = 99;
    uint32_t cp = 0;

    assert_true(wire_utf8_valid((const uint8_t *)"plain", 5, &bad));
    static const char mixed[] = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";
    assert_true(wire_utf8_valid((const uint8_t *)mixed, sizeof mixed - 1, &bad));
    assert_false(wire_utf8_valid((const uint8_t *)"ab\xc3", 3, &bad)); /* cut */
    assert_int_equal(bad, 2);
    assert_false(wire_utf8_valid((const uint8_t *)"\xc0\x80", 2, &bad)); /* overlong NUL */
    assert_int_equal(bad, 0);
    assert_false(wire_utf8_valid((const uint8_t *)"x\xe0\x80\xaf", 4, &bad)); /* overlong */
    assert_int_equal(bad, 1);
    assert_false(wire_utf8_valid((const uint8_t *)"\xed\xa0\x80", 3, &bad));     /* surrogate */
    assert_false(wire_utf8_valid((const uint8_t *)"\xf4\x90\x80\x80", 4, &bad)); /* > 10FFFF */
    assert_false(wire_utf8_valid((const uint8_t *)"a\x80", 2, &bad)); /* lone continuation */
    assert_int_equal(bad, 1);

    assert_int_equal(wire_utf8_next((const uint8_t *)"\xe2\x80\xa8", 3, &cp), 3);
    assert_int_equal(cp, 0x2028);
    assert_int_equal(wire_utf8_next((const uint8_t *)"\xf4\x8f\xbf\xbf", 4, &cp), 4);
    assert_int_equal(cp, 0x10ffff);
}

static void test_field_writers(void **state)
{
    uint8_t buf[32];
    size_t n;

    n = wire_put_len_field(buf, 2, "hey", 3);
    assert_int_equal(n, wire_len_field_size(2, 3));
    assert_memory_equal(buf, "\x12\x03hey", 5);
    n = wire_put_len_field(buf, 2, NULL, 0);
    assert_int_equal(n, 2);
    n = wire_put_varint_field(buf, 4, 300);
    assert_int_equal(n, wire_varint_field_size(4, 300));
    assert_memory_equal(buf, "\x20\xac\x02", 3);
}

/* --- fast paths: each must agree with the slow, exact code it short-cuts --- */

static uint64_t rng = 0x243f6a8885a308d3ull;

static uint64_t rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545f4914f6cdd1dull;
}

/* A copy of p[0..n) ending exactly at the end of a heap block: ASan traps any overread. */
static uint8_t *tight(const uint8_t *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    assert_non_null(c);
    if (n)
        memcpy(c, p, n);
    return c;
}

/* wire_varint_fast (8 bytes at a time when it can) against wire_varint_decode
 * on encoded values, non-minimal encodings and random bytes, at every length
 * and limit: it either agrees or (0) leaves the decision to the slow path,
 * and it only does that when the slow path would not succeed within max. */
static void test_varint_fast_agrees(void **state)
{
    uint8_t buf[16];

    for (int r = 0; r < 200000; r++) {
        size_t len;
        switch (r % 3) {
        case 0: { /* a value of every size, at a random bit length */
            uint64_t v = rnd() >> (rnd() % 64);
            len = wire_put_varint(buf, v);
            break;
        }
        case 1: /* non-minimal: continuation bytes carrying zeros */
            len = 1 + rnd() % 9;
            for (size_t i = 0; i < len; i++)
                buf[i] = (uint8_t)((i + 1 < len ? 0x80 : 0) | (rnd() % 2 ? 0 : rnd() & 0x7f));
            break;
        default:
            len = 1 + rnd() % 12;
            for (size_t i = 0; i < len; i++)
                buf[i] = (uint8_t)rnd();
            break;
        }
        for (size_t i = len; i < sizeof buf; i++)
            buf[i] = (uint8_t)rnd(); /* whatever follows the varint */
        size_t n = rnd() % (sizeof buf + 1);
        size_t max = 1 + rnd() % 9;
        uint8_t *c = tight(buf, n);
        uint64_t slow_v = 0, fast_v = 0;
        int slow = wire_varint_decode(c, n < max ? n : max, &slow_v);
        size_t fast = wire_varint_fast(c, n, max, &fast_v);
        if (slow > 0) {
            assert_int_equal(fast, (size_t)slow);
            assert_true(fast_v == slow_v);
        } else {
            assert_int_equal(fast, 0);
        }
        free(c);
    }
}

static void test_varint_size_boundaries(void **state)
{
    for (int bits = 0; bits <= 64; bits++) {
        uint64_t v = bits == 64 ? UINT64_MAX : (1ull << bits) - 1;
        uint64_t w = bits == 64 ? UINT64_MAX : 1ull << bits;
        uint8_t buf[WIRE_VARINT_MAX];
        assert_int_equal(wire_varint_size(v), wire_put_varint(buf, v));
        assert_int_equal(wire_varint_size(w), wire_put_varint(buf, w));
    }
}

/* Reference reader for one field, from the slow varint decoder alone. */
static bool ref_next(const uint8_t *p, size_t n, wire_field *f, size_t *used)
{
    uint64_t tag, v;
    int k = wire_varint_decode(p, n < WIRE_TAG_MAX ? n : WIRE_TAG_MAX, &tag);
    if (k <= 0 || tag >> 3 == 0 || tag >> 3 > WIRE_FIELD_MAX)
        return false;
    size_t at = (size_t)k;
    f->number = (uint32_t)(tag >> 3);
    f->type = (uint8_t)(tag & 7);
    if (f->type == WIRE_VARINT) {
        k = wire_varint_decode(p + at, n - at, &v);
        if (k <= 0)
            return false;
        f->value = v;
        *used = at + (size_t)k;
        return true;
    }
    if (f->type == WIRE_LEN) {
        size_t rem = n - at;
        k = wire_varint_decode(p + at, rem < WIRE_LEN_MAX ? rem : WIRE_LEN_MAX, &v);
        if (k <= 0 || v > INT32_MAX || v > rem - (size_t)k)
            return false;
        f->data.p = p + at + k;
        f->data.len = (size_t)v;
        *used = at + (size_t)k + (size_t)v;
        return true;
    }
    if (f->type == WIRE_I64 || f->type == WIRE_I32) {
        size_t w = f->type == WIRE_I64 ? 8 : 4;
        if (n - at < w)
            return false;
        *used = at + w;
        return true;
    }
    return false;
}

/* wire_next (whose common case is the inline wire_next_short) reads random
 * and field-shaped bytes exactly as the reference does; when
 * wire_next_short declines, it changed nothing. */
static void test_next_short_agrees(void **state)
{
    uint8_t buf[24];

    for (int r = 0; r < 200000; r++) {
        size_t n = rnd() % (sizeof buf + 1);
        for (size_t i = 0; i < n; i++)
            buf[i] = (uint8_t)rnd();
        if (n > 0 && r % 2) /* field-shaped: a small tag and a short length/value */
            buf[0] = (uint8_t)(8 * (1 + rnd() % 15) + (rnd() % 3 == 0 ? WIRE_VARINT : WIRE_LEN));
        if (n > 1 && r % 4 == 1)
            buf[1] = (uint8_t)(rnd() % (n + 2));
        uint8_t *c = tight(buf, n);
        wire_cursor cur, keep;
        wire_field f, g;
        size_t used = 0;
        char detail[WIRE_DETAIL_MAX];
        bool ok = ref_next(c, n, &g, &used);

        wire_cursor_init(&cur, c, n);
        keep = cur;
        if (!wire_next_short(&cur, &f)) {
            assert_true(cur.p == keep.p);
        } else {
            assert_true(ok);
        }
        cur = keep;
        int rc = wire_next(&cur, &f, detail);
        assert_int_equal(rc == 0, ok);
        if (ok) {
            assert_int_equal(f.number, g.number);
            assert_int_equal(f.type, g.type);
            assert_int_equal(f.pos, 0);
            assert_true(cur.p == c + used);
            if (g.type == WIRE_VARINT)
                assert_true(f.value == g.value);
            if (g.type == WIRE_LEN) {
                assert_true(f.data.p == g.data.p);
                assert_int_equal(f.data.len, g.data.len);
            }
        } else {
            assert_int_equal(rc, PB_EPROTO);
            assert_true(strlen(detail) > 0);
        }
        free(c);
    }
}

/* The 8-byte ASCII step of wire_utf8_valid still reports the first bad
 * byte exactly, wherever it falls relative to the 8-byte steps, and
 * wire_put_utf8_field repairs from there. */
static void test_utf8_ascii_runs(void **state)
{
    static const char *const bad_seqs[] = {"\x80", "\xc3", "\xc0\x80", "\xed\xa0\x80", "\xff"};
    uint8_t buf[64], out[80];

    for (size_t run = 0; run < 40; run++) {
        for (size_t b = 0; b < sizeof bad_seqs / sizeof bad_seqs[0]; b++) {
            size_t blen = strlen(bad_seqs[b]), n = run + blen + 3, bad = 999;
            memset(buf, 'a', run);
            memcpy(buf + run, bad_seqs[b], blen);
            memcpy(buf + run + blen, "xyz", 3);
            uint8_t *c = tight(buf, n);
            assert_false(wire_utf8_valid(c, n, &bad));
            assert_int_equal(bad, run);
            size_t k = wire_put_utf8_field(out, 1, c, n);
            size_t hdr = 1 + wire_varint_size(n);
            assert_int_equal(k, hdr + n); /* same length: one '?' per bad byte */
            assert_memory_equal(out + hdr, buf, run);
            assert_int_equal(out[hdr + run], '?');
            assert_true(wire_utf8_valid(out + hdr, n, &bad));
            free(c);
        }
        /* And a valid multi-byte character after the run passes. */
        memset(buf, 'a', run);
        memcpy(buf + run, "\xe2\x82\xac", 3);
        size_t bad = 0;
        assert_true(wire_utf8_valid(buf, run + 3, &bad));
    }
}

/* wire_ascii_short: true exactly for ASCII of 8 to 40 bytes; any byte with
 * its high bit set, wherever it is (the overlapping words), makes it false;
 * it reads nothing outside p[0..n) (tight: ASan's red zone right after). */
static void test_ascii_short(void **state)
{
    uint8_t buf[48];

    (void)state;
    for (size_t n = 0; n <= sizeof buf; n++) {
        memset(buf, 'a', n);
        uint8_t *c = tight(buf, n);
        assert_int_equal(wire_ascii_short(c, n), n >= 8 && n <= 40);
        for (size_t i = 0; i < n; i++) {
            c[i] = 0xc3;
            assert_false(wire_ascii_short(c, n));
            c[i] = 0x7f;
            assert_int_equal(wire_ascii_short(c, n), n >= 8 && n <= 40);
            c[i] = 'a';
        }
        free(c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_varint_round_trip),
        cmocka_unit_test(test_varint_known_bytes),
        cmocka_unit_test(test_varint_malformed),
        cmocka_unit_test(test_tag_encoding),
        cmocka_unit_test(test_next_each_type),
        cmocka_unit_test(test_next_malformed),
        cmocka_unit_test(test_find_skips_others),
        cmocka_unit_test(test_repeated_packed_and_unpacked),
        cmocka_unit_test(test_repeated_truncated_packed),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_field_writers),
        cmocka_unit_test(test_varint_fast_agrees),
        cmocka_unit_test(test_varint_size_boundaries),
        cmocka_unit_test(test_next_short_agrees),
        cmocka_unit_test(test_utf8_ascii_runs),
        cmocka_unit_test(test_ascii_short),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
