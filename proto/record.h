/*
 * record - byte codec for the segment file format (FORMAT.md, Part B): the
 * 24-byte record header, whole-record verification, and the 40-byte header
 * shared by .log and .idx files.
 *
 * Threads: any; pure functions on caller-owned buffers. Used by the writer
 * (server/log.c), the reader (proto/reader.c) and the offline CLI.
 */
#ifndef PB_RECORD_H
#define PB_RECORD_H

#include "protobus_reader.h" /* pb_record, the decoded record */

#include <stddef.h>
#include <stdint.h>

#define PB_FILE_HEADER_SIZE   40u /* segment (.log) and index (.idx) header */
#define PB_RECORD_HEADER_SIZE 24u /* crc, length, offset, time_ns */
#define PB_RECORD_FIXED_LEN   16u /* the part of `length` that is offset + time_ns */
/* Hard cap on the event bytes of one record; `length` never exceeds this + 16.
 * A configured maximum may only be smaller. */
#define PB_RECORD_MAX_EVENT (64u * 1024u * 1024u)
#define PB_FORMAT_VERSION   1u

#define PB_LOG_MAGIC "PROTOBUS"
#define PB_IDX_MAGIC "PROTOIDX"

/* Little-endian loads and stores used throughout the file format. */
static inline uint32_t pb_load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t pb_load_le64(const uint8_t *p)
{
    return (uint64_t)pb_load_le32(p) | (uint64_t)pb_load_le32(p + 4) << 32;
}
static inline void pb_store_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}
static inline void pb_store_le64(uint8_t *p, uint64_t v)
{
    pb_store_le32(p, (uint32_t)v);
    pb_store_le32(p + 4, (uint32_t)(v >> 32));
}

/* Fills hdr with the record header for an event made of `data` followed by
 * `suffix` (either may be empty; NULL is allowed with length 0). The CRC
 * covers the header's length/offset/time and both pieces, computed without
 * concatenating them. Returns 0, or PB_ETOOBIG if len + suffix_len exceeds
 * PB_RECORD_MAX_EVENT (hdr is then untouched). */
int record_encode_header(uint8_t hdr[PB_RECORD_HEADER_SIZE], uint64_t offset, int64_t time_ns,
                         const void *data, size_t len, const void *suffix, size_t suffix_len);

/* record_encode_header without the CRC: the length (of an event of
 * event_len bytes), offset and time_ns, for a caller that computes the CRC
 * (hdr[0..3]: CRC32C of hdr[4..23] then the event's bytes) later, e.g.
 * while copying the record. PB_ETOOBIG as record_encode_header. */
int record_encode_fields(uint8_t hdr[PB_RECORD_HEADER_SIZE], uint64_t offset, int64_t time_ns,
                         size_t event_len);

/* Decodes and verifies the record at the start of buf (avail bytes readable).
 * max_event caps the event size (values above PB_RECORD_MAX_EVENT are
 * clamped to it); a larger length is refused before any use of it.
 *   0              rec filled (rec->event points into buf); *size = bytes the
 *                  record occupies (24 + event_len)
 *   PB_EINCOMPLETE buf ends before the record does; *size = the whole record's
 *                  size if the length field was readable and plausible, else 0
 *   PB_ECORRUPT    length below 16 or above the cap, or CRC mismatch */
int record_decode(const uint8_t *buf, size_t avail, uint32_t max_event, pb_record *rec,
                  uint32_t *size);

/* File header of .log (magic PB_LOG_MAGIC) and .idx (PB_IDX_MAGIC) files. */
void file_header_encode(uint8_t out[PB_FILE_HEADER_SIZE], const char *magic, uint64_t base_offset,
                        int64_t created_ns);

/* Verifies a file header. 0 (outputs filled; either may be NULL),
 * PB_EFORMAT (wrong magic, unsupported version or flags), PB_ECORRUPT (CRC
 * mismatch). */
int file_header_decode(const uint8_t in[PB_FILE_HEADER_SIZE], const char *magic,
                       uint64_t *base_offset, int64_t *created_ns);

#endif
