/*
 * crc32c - CRC-32C for records and headers (see crc32c.h).
 *
 * Threads: any. The slice-by-8 tables and the choice of implementation are
 * set up once under pthread_once; afterwards everything is read-only.
 *
 * The hardware path uses the SSE4.2 crc32 instruction, which computes exactly
 * this polynomial; the software path is the classic slice-by-8 table method
 * (eight bytes per step through eight 256-entry tables).
 */
#include "crc32c.h"

#include <pthread.h>
#include <string.h>

#define CRC32C_POLY 0x82F63B78u /* Castagnoli, bit-reversed */

static uint32_t table[8][256];
static bool hw_ok;
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
__attribute__((target("sse4.2"))) uint32_t crc32c_hw(uint32_t crc, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint64_t c = ~crc;

    while (len > 0 && ((uintptr_t)p & 7) != 0) {
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
        len--;
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
