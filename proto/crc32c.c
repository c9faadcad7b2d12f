/*
 * crc32c - CRC-32C for records and headers (see crc32c.h).
 *
 * Threads: any. The slice-by-8 tables and the choice of implementation are
 * set up once under pthread_once; afterwards everything is read-only.
 *
 * The hardware path uses the SSE4.2 crc32 instruction, which computes exactly
 * this polynomial; the software path is the classic slice-by-8 table method
 * (eight bytes per step through eight 256-entry tables).
 *
 * The instruction takes three cycles but can start one every cycle, so the
 * hardware path runs three independent streams over three adjacent blocks
 * (of LONG_BLOCK, then SHORT_BLOCK bytes) and joins them: the CRC register
 * after block A then block B is the register after A, advanced over |B| zero
 * bytes, XOR the register of B alone (CRC is linear); advancing over a fixed
 * number of zeros is a 32x32 bit matrix, applied through four 256-entry
 * tables (the zlib crc32_combine method, as in Mark Adler's crc32c.c). A
 * 1 KiB record is checked about three times as fast as one stream at a time.
 */
#include "crc32c.h"

#include <pthread.h>
#include <string.h>

#define CRC32C_POLY 0x82F63B78u /* Castagnoli, bit-reversed */

static uint32_t table[8][256];
static bool hw_ok;

/* Three-stream blocks, and the tables that advance a register over one
 * block of zeros (zeros_long, zeros_short; built with the others). */
#define LONG_BLOCK  8192u
#define SHORT_BLOCK 256u
static uint32_t zeros_long[4][256], zeros_short[4][256];

/* GF(2) matrix (32 columns) times vector. */
static uint32_t gf2_times(const uint32_t *mat, uint32_t vec)
{
    uint32_t sum = 0;
    for (; vec; vec >>= 1, mat++)
        if (vec & 1)
            sum ^= *mat;
    return sum;
}

static void gf2_square(uint32_t *square, const uint32_t *mat)
{
    for (int n = 0; n < 32; n++)
        square[n] = gf2_times(mat, mat[n]);
}

/* zeros[k][b]: byte b at position k of the register, advanced over len
 * zero bytes (len a power of two, at least 2). */
static void zeros_table(uint32_t zeros[4][256], size_t len)
{
    uint32_t odd[32], even[32], *op = NULL;
    odd[0] = CRC32C_POLY; /* one zero bit */
    for (int n = 1; n < 32; n++)
        odd[n] = 1u << (n - 1);
    gf2_square(even, odd); /* two zero bits */
    gf2_square(odd, even); /* four */
    /* Squaring doubles the zeros: one byte, two, four, ... up to len. */
    for (;;) {
        gf2_square(even, odd);
        op = even;
        if ((len >>= 1) == 0)
            break;
        gf2_square(odd, even);
        op = odd;
        if ((len >>= 1) == 0)
            break;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int k = 0; k < 4; k++)
            zeros[k][n] = gf2_times(op, n << (8 * k));
}

static uint32_t zeros_shift(uint32_t zeros[4][256], uint32_t crc)
{
    return zeros[0][crc & 0xff] ^ zeros[1][(crc >> 8) & 0xff] ^ zeros[2][(crc >> 16) & 0xff] ^
           zeros[3][crc >> 24];
}
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void crc32c_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
        table[0][n] = c;
    }
    /* table[k][n]: the CRC of byte n followed by k zero bytes, so that eight
     * independent lookups can be XORed together per 8-byte step. */
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = table[0][n];
        for (int k = 1; k < 8; k++) {
            c = table[0][c & 0xff] ^ (c >> 8);
            table[k][n] = c;
        }
    }
#if defined(__x86_64__)
    __builtin_cpu_init();
    hw_ok = __builtin_cpu_supports("sse4.2");
    if (hw_ok) {
        zeros_table(zeros_long, LONG_BLOCK);
        zeros_table(zeros_short, SHORT_BLOCK);
    }
#else
    hw_ok = false;
#endif
}

static uint64_t load_le64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint32_t c = ~crc;

    pthread_once(&init_once, crc32c_init);
    while (len > 0 && ((uintptr_t)p & 7) != 0) {
        c = table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
        len--;
    }
    while (len >= 8) {
        uint64_t v = load_le64(p) ^ c;
        c = table[7][v & 0xff] ^ table[6][(v >> 8) & 0xff] ^ table[5][(v >> 16) & 0xff] ^
            table[4][(v >> 24) & 0xff] ^ table[3][(v >> 32) & 0xff] ^ table[2][(v >> 40) & 0xff] ^
            table[1][(v >> 48) & 0xff] ^ table[0][v >> 56];
        p += 8;
        len -= 8;
    }
    while (len > 0) {
        c = table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
        len--;
    }
    return ~c;
}

#if defined(__x86_64__)
/* Three streams over blocks of `block` bytes while 3 x block remain. */
__attribute__((target("sse4.2"))) static uint64_t
three_way(uint64_t c0, const unsigned char **pp, size_t *len, size_t block, uint32_t zeros[4][256])
{
    const unsigned char *p = *pp;
    while (*len >= 3 * block) {
        uint64_t c1 = 0, c2 = 0;
        const unsigned char *end = p + block;
        do {
            uint64_t a, b, d;
            memcpy(&a, p, 8);
            memcpy(&b, p + block, 8);
            memcpy(&d, p + 2 * block, 8);
            c0 = __builtin_ia32_crc32di(c0, a);
            c1 = __builtin_ia32_crc32di(c1, b);
            c2 = __builtin_ia32_crc32di(c2, d);
            p += 8;
        } while (p < end);
        c0 = zeros_shift(zeros, (uint32_t)c0) ^ c1;
        c0 = zeros_shift(zeros, (uint32_t)c0) ^ c2;
        p += 2 * block;
        *len -= 3 * block;
    }
    *pp = p;
    return c0;
}

__attribute__((target("sse4.2"))) uint32_t crc32c_hw(uint32_t crc, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint64_t c = ~crc;

    while (len > 0 && ((uintptr_t)p & 7) != 0) {
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
        len--;
    }
    if (len >= 3 * SHORT_BLOCK) {
        pthread_once(&init_once, crc32c_init); /* the zeros tables */
        c = three_way(c, &p, &len, LONG_BLOCK, zeros_long);
        c = three_way(c, &p, &len, SHORT_BLOCK, zeros_short);
    }
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, sizeof v);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        len -= 8;
    }
    while (len > 0) {
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
        len--;
    }
    return ~(uint32_t)c;
}
#else
/* No crc32 instruction on this architecture: crc32c_hw_available() is false
 * and this is never chosen; keep it correct anyway. */
uint32_t crc32c_hw(uint32_t crc, const void *buf, size_t len)
{
    return crc32c_sw(crc, buf, len);
}
#endif

bool crc32c_hw_available(void)
{
    pthread_once(&init_once, crc32c_init);
    return hw_ok;
}

uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
    /* pthread_once after the first call is one load and a branch. */
    pthread_once(&init_once, crc32c_init);
    return hw_ok ? crc32c_hw(crc, buf, len) : crc32c_sw(crc, buf, len);
}
