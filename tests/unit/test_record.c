/* Tests for proto/record: record header encode/decode round trips (two-piece
 * events, empty and maximum-size events), size limits checked before use,
 * incomplete vs corrupt, every single-bit flip detected, and the 40-byte
 * file header. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crc32c.h"
#include "pb_errors.h"
#include "record.h"

static uint64_t rng_state = 0x1234567887654321ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

/* Builds header + data + suffix contiguously in out; returns the size. */
static size_t build(uint8_t *out, uint64_t offset, int64_t t, const void *data, size_t len,
                    const void *suffix, size_t slen)
{
    assert_int_equal(record_encode_header(out, offset, t, data, len, suffix, slen), 0);
    if (len)
        memcpy(out + PB_RECORD_HEADER_SIZE, data, len);
    if (slen)
        memcpy(out + PB_RECORD_HEADER_SIZE + len, suffix, slen);
    return PB_RECORD_HEADER_SIZE + len + slen;
}

static void test_roundtrip_all_fields(void **state)
{
    uint8_t data[100], suffix[37], buf[256];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)rng();
    for (size_t i = 0; i < sizeof suffix; i++)
        suffix[i] = (uint8_t)rng();
    size_t n = build(buf, 0x0102030405060708ull, -42, data, sizeof data, suffix, sizeof suffix);
    assert_int_equal(n, 24 + 137);
    /* The layout is the documented one, byte for byte. */
    assert_int_equal(pb_load_le32(buf + 4), 137 + 16);
    assert_true(pb_load_le64(buf + 8) == 0x0102030405060708ull);
    assert_true((int64_t)pb_load_le64(buf + 16) == -42);
    assert_int_equal(pb_load_le32(buf), crc32c(0, buf + 4, n - 4));

    pb_record rec;
    uint32_t size;
    assert_int_equal(record_decode(buf, n, PB_RECORD_MAX_EVENT, &rec, &size), 0);
    assert_int_equal(size, n);
    assert_true(rec.offset == 0x0102030405060708ull);
    assert_true(rec.time_ns == -42);
    assert_int_equal(rec.event_len, 137);
    assert_ptr_equal(rec.event, buf + 24);
    assert_memory_equal(rec.event, data, sizeof data);
    assert_memory_equal(rec.event + sizeof data, suffix, sizeof suffix);

    /* Trailing bytes after the record are not part of it. */
    assert_int_equal(record_decode(buf, sizeof buf, PB_RECORD_MAX_EVENT, &rec, &size), 0);
    assert_int_equal(size, n);
}

/* data+suffix gives the same record as the concatenation in one piece. */
static void test_two_pieces_equal_one(void **state)
{
    uint8_t all[64], a[24], b[24];
    for (size_t i = 0; i < sizeof all; i++)
        all[i] = (uint8_t)rng();
    for (size_t cut = 0; cut <= sizeof all; cut++) {
        assert_int_equal(record_encode_header(a, 7, 9, all, sizeof all, NULL, 0), 0);
        assert_int_equal(record_encode_header(b, 7, 9, all, cut, all + cut, sizeof all - cut), 0);
        assert_memory_equal(a, b, 24);
    }
}

/* The fields without the CRC, then the CRC over hdr[4..23] and the event
 * (as log.c's log_seal_record does later): the same header. */
static void test_fields_then_crc_equal_header(void **state)
{
    uint8_t ev[1100], a[24], b[24];
    for (size_t i = 0; i < sizeof ev; i++)
        ev[i] = (uint8_t)rng();
    for (size_t len = 0; len <= sizeof ev; len += 137) {
        assert_int_equal(record_encode_header(a, 1u << 20, -5, ev, len, NULL, 0), 0);
        memset(b, 0xee, sizeof b);
        assert_int_equal(record_encode_fields(b, 1u << 20, -5, len), 0);
        assert_memory_equal(a + 4, b + 4, 20);
        pb_store_le32(b, crc32c(crc32c(0, b + 4, 20), ev, len));
        assert_memory_equal(a, b, 24);
    }
    assert_int_equal(record_encode_fields(b, 0, 0, (size_t)PB_RECORD_MAX_EVENT + 1), PB_ETOOBIG);
}

static void test_empty_event(void **state)
{
    uint8_t buf[24];
    pb_record rec;
    uint32_t size;
    assert_int_equal(record_encode_header(buf, 5, 6, NULL, 0, NULL, 0), 0);
    assert_int_equal(pb_load_le32(buf + 4), 16);
    assert_int_equal(record_decode(buf, 24, PB_RECORD_MAX_EVENT, &rec, &size), 0);
    assert_int_equal(size, 24);
    assert_int_equal(rec.event_len, 0);
    assert_true(rec.offset == 5 && rec.time_ns == 6);
}

static void test_max_size_event(void **state)
{
    size_t n = PB_RECORD_HEADER_SIZE + PB_RECORD_MAX_EVENT;
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    memset(buf + 24, 0xAB, PB_RECORD_MAX_EVENT);
    /* Event split into a body and a one-byte suffix, as the daemon does. */
    assert_int_equal(
        record_encode_header(buf, 1, 2, buf + 24, PB_RECORD_MAX_EVENT - 1, buf + n - 1, 1), 0);
    pb_record rec;
    uint32_t size;
    assert_int_equal(record_decode(buf, n, PB_RECORD_MAX_EVENT, &rec, &size), 0);
    assert_int_equal(rec.event_len, PB_RECORD_MAX_EVENT);
    assert_int_equal(size, n);
    /* One byte more is refused at encode... */
    uint8_t hdr[24];
    assert_int_equal(record_encode_header(hdr, 1, 2, buf + 24, PB_RECORD_MAX_EVENT, buf + 24, 1),
                     PB_ETOOBIG);
    /* ...and a configured smaller maximum refuses it at decode. */
    assert_int_equal(record_decode(buf, n, PB_RECORD_MAX_EVENT - 1, &rec, &size), PB_ECORRUPT);
    free(buf);
}

/* A length above the cap is corrupt from its 8 first bytes alone: the
 * decoder must not ask for (and a caller must not allocate) more. */
static void test_length_checked_before_use(void **state)
{
    uint8_t buf[24] = {0};
    pb_record rec;
    uint32_t size;
    pb_store_le32(buf + 4, PB_RECORD_MAX_EVENT + 17);
    assert_int_equal(record_decode(buf, 8, PB_RECORD_MAX_EVENT, &rec, &size), PB_ECORRUPT);
    pb_store_le32(buf + 4, 0xFFFFFFFFu);
    assert_int_equal(record_decode(buf, 8, PB_RECORD_MAX_EVENT, &rec, &size), PB_ECORRUPT);
    pb_store_le32(buf + 4, 1000 + 16);
    assert_int_equal(record_decode(buf, 8, 999, &rec, &size), PB_ECORRUPT);
    assert_int_equal(record_decode(buf, 8, 1000, &rec, &size), PB_EINCOMPLETE);
    assert_int_equal(size, 1024);
    for (uint32_t l = 0; l < 16; l++) {
        pb_store_le32(buf + 4, l);
        assert_int_equal(record_decode(buf, 24, PB_RECORD_MAX_EVENT, &rec, &size), PB_ECORRUPT);
    }
}

static void test_every_prefix_incomplete(void **state)
{
    uint8_t data[50], buf[128];
    memset(data, 'x', sizeof data);
    size_t n = build(buf, 3, 4, data, sizeof data, NULL, 0);
    pb_record rec;
    uint32_t size;
    for (size_t avail = 0; avail < n; avail++)
        assert_int_equal(record_decode(buf, avail, PB_RECORD_MAX_EVENT, &rec, &size),
                         PB_EINCOMPLETE);
    assert_int_equal(record_decode(buf, n, PB_RECORD_MAX_EVENT, &rec, &size), 0);
}

/* Flip each bit of a whole record (header, body, suffix) in turn: the
 * decoder reports corrupt or incomplete, never a valid record. */
static void check_all_flips(uint8_t *buf, size_t n)
{
    pb_record rec;
    uint32_t size;
    for (size_t bit = 0; bit < n * 8; bit++) {
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        int rc = record_decode(buf, n, PB_RECORD_MAX_EVENT, &rec, &size);
        if (rc != PB_ECORRUPT && rc != PB_EINCOMPLETE)
            fail_msg("bit %zu flipped: decode returned %d", bit, rc);
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    assert_int_equal(record_decode(buf, n, PB_RECORD_MAX_EVENT, &rec, &size), 0);
}

static void test_every_bit_flip_detected(void **state)
{
    uint8_t data[200], suffix[20], buf[300];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)rng();
    for (size_t i = 0; i < sizeof suffix; i++)
        suffix[i] = (uint8_t)rng();
    check_all_flips(
        buf, build(buf, 123456789, 1700000000123456789, data, sizeof data, suffix, sizeof suffix));
    check_all_flips(buf, build(buf, 0, 0, NULL, 0, NULL, 0));
    check_all_flips(buf, build(buf, UINT64_MAX - 1, INT64_MIN, data, 1, NULL, 0));
}

static void test_file_header(void **state)
{
    uint8_t h[PB_FILE_HEADER_SIZE];
    uint64_t base;
    int64_t created;
    file_header_encode(h, PB_LOG_MAGIC, 12345678901234ull, 1700000000000000001);
    assert_memory_equal(h, "PROTOBUS", 8);
    assert_int_equal(pb_load_le32(h + 8), 1);
    assert_int_equal(pb_load_le32(h + 12), 0);
    assert_true(pb_load_le64(h + 16) == 12345678901234ull);
    assert_int_equal(pb_load_le32(h + 32), 0);
    assert_int_equal(pb_load_le32(h + 36), crc32c(0, h, 36));
    assert_int_equal(file_header_decode(h, PB_LOG_MAGIC, &base, &created), 0);
    assert_true(base == 12345678901234ull);
    assert_true(created == 1700000000000000001);
    /* The other kind of file is not this kind. */
    assert_int_equal(file_header_decode(h, PB_IDX_MAGIC, &base, &created), PB_EFORMAT);
    for (size_t bit = 0; bit < sizeof h * 8; bit++) {
        h[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        int rc = file_header_decode(h, PB_LOG_MAGIC, &base, &created);
        assert_true(rc == PB_ECORRUPT || rc == PB_EFORMAT);
        h[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    /* A future version with a valid CRC is a format error, not damage. */
    pb_store_le32(h + 8, 2);
    pb_store_le32(h + 36, crc32c(0, h, 36));
    assert_int_equal(file_header_decode(h, PB_LOG_MAGIC, NULL, NULL), PB_EFORMAT);
    file_header_encode(h, PB_IDX_MAGIC, 0, 0);
    assert_memory_equal(h, "PROTOIDX", 8);
    assert_int_equal(file_header_decode(h, PB_IDX_MAGIC, NULL, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_all_fields),
        cmocka_unit_test(test_two_pieces_equal_one),
        cmocka_unit_test(test_fields_then_crc_equal_header),
        cmocka_unit_test(test_empty_event),
        cmocka_unit_test(test_max_size_event),
        cmocka_unit_test(test_length_checked_before_use),
        cmocka_unit_test(test_every_prefix_incomplete),
        cmocka_unit_test(test_every_bit_flip_detected),
        cmocka_unit_test(test_file_header),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
