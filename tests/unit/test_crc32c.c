/* Tests for proto/crc32c: known vectors on both implementations (ISA-L's
 * crc32_iscsi behind crc32c(), and our slice-by-8), the two against each
 * other, and incremental use. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "crc32c.h"

typedef uint32_t (*crc_fn)(uint32_t, const void *, size_t);

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

/* RFC 3720 (iSCSI) appendix B.4 vectors plus the classic check value. */
static void check_vectors(crc_fn f)
{
    uint8_t buf[32];
    assert_int_equal(f(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(f(0, "", 0), 0u);
    memset(buf, 0, sizeof buf);
    assert_int_equal(f(0, buf, 32), 0x8A9136AAu);
    memset(buf, 0xff, sizeof buf);
    assert_int_equal(f(0, buf, 32), 0x62A8AB43u);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)i;
    assert_int_equal(f(0, buf, 32), 0x46DD794Eu);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)(31 - i);
    assert_int_equal(f(0, buf, 32), 0x113FDB5Cu);
}

static void test_vectors_software(void **state)
{
    check_vectors(crc32c_sw);
}

static void test_vectors_isal(void **state)
{
    check_vectors(crc32c);
}

/* Every length 0..1600 and then every 97th to 60,000 at every alignment
 * 0..7 (ISA-L changes method with the length: folding 64 bytes and more at
 * a time, the crc32 instruction for the rest): crc32c() (ISA-L's) agrees
 * with our slice-by-8, and splitting the input anywhere gives the same
 * result as one call. */
static void test_isal_matches_sw_and_incremental(void **state)
{
    static uint8_t buf[60000 + 8];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)rng();
    for (size_t align = 0; align < 8; align++) {
        for (size_t len = 0; len <= 60000; len += len < 1600 ? 1 : 97) {
            const uint8_t *p = buf + align;
            uint32_t sw = crc32c_sw(0, p, len);
            assert_int_equal(crc32c(0, p, len), sw);
            size_t cut = len ? (size_t)(rng() % (len + 1)) : 0;
            assert_int_equal(crc32c_sw(crc32c_sw(0, p, cut), p + cut, len - cut), sw);
            assert_int_equal(crc32c(crc32c(0, p, cut), p + cut, len - cut), sw);
        }
    }
}

/* A flipped bit anywhere changes the checksum (CRCs catch all 1-bit errors). */
static void test_single_bit_flips_detected(void **state)
{
    uint8_t buf[64];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)rng();
    uint32_t good = crc32c(0, buf, sizeof buf);
    for (size_t bit = 0; bit < sizeof buf * 8; bit++) {
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        assert_int_not_equal(crc32c(0, buf, sizeof buf), good);
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors_software),
        cmocka_unit_test(test_vectors_isal),
        cmocka_unit_test(test_isal_matches_sw_and_incremental),
        cmocka_unit_test(test_single_bit_flips_detected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
