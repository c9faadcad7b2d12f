/*
 * crc32c - CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum
 * of every segment header, index header and record.
 *
 * Threads: any; all functions are reentrant. The implementation (SSE4.2
 * instruction or table-driven software) is chosen once on first use, under
 * pthread_once.
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

/* The two implementations, exposed so tests can check them against each
 * other. crc32c_hw() must only be called when crc32c_hw_available(). */
uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len);
uint32_t crc32c_hw(uint32_t crc, const void *buf, size_t len);
bool crc32c_hw_available(void);

#endif
