/*
 * crc32c - CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum
 * of every segment header, index header and record.
 *
 * Threads: any; all functions are reentrant. crc32c() is ISA-L's, which
 * picks the CPU's best code itself (crc32c.c).
 */
#ifndef PB_CRC32C_H
#define PB_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Incremental CRC-32C: crc32c(0, buf, len) starts a checksum, and
 * crc32c(crc32c(0, a, n), b, m) equals the checksum of a followed by b.
 * (The usual pre/post inversion is done inside, as in zlib's crc32.) */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

/* Our own slice-by-8 implementation, which the tests hold crc32c() (ISA-L's
 * crc32_iscsi) against. */
uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len);

#endif
