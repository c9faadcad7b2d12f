/*
 * record - record and file-header codec (see record.h, FORMAT.md, Part B).
 *
 * Threads: any; no state.
 */
#include "record.h"

#include "crc32c.h"
#include "pb_errors.h"

#include <string.h>

int record_encode_header(uint8_t hdr[PB_RECORD_HEADER_SIZE], uint64_t offset, int64_t time_ns,
                         const void *data, size_t len, const void *suffix, size_t suffix_len)
{
    if (len > PB_RECORD_MAX_EVENT || suffix_len > PB_RECORD_MAX_EVENT - len)
        return PB_ETOOBIG;
    pb_store_le32(hdr + 4, (uint32_t)(len + suffix_len + PB_RECORD_FIXED_LEN));
    pb_store_le64(hdr + 8, offset);
    pb_store_le64(hdr + 16, (uint64_t)time_ns);
    /* The CRC starts at the length field so that a damaged length is caught
     * like any other damaged byte. */
    uint32_t crc = crc32c(0, hdr + 4, PB_RECORD_HEADER_SIZE - 4);
    if (len > 0)
        crc = crc32c(crc, data, len);
    if (suffix_len > 0)
        crc = crc32c(crc, suffix, suffix_len);
    pb_store_le32(hdr, crc);
    return 0;
}

int record_encode_fields(uint8_t hdr[PB_RECORD_HEADER_SIZE], uint64_t offset, int64_t time_ns,
                         size_t event_len)
{
    if (event_len > PB_RECORD_MAX_EVENT)
        return PB_ETOOBIG;
    pb_store_le32(hdr, 0);
    pb_store_le32(hdr + 4, (uint32_t)(event_len + PB_RECORD_FIXED_LEN));
    pb_store_le64(hdr + 8, offset);
    pb_store_le64(hdr + 16, (uint64_t)time_ns);
    return 0;
}

int record_decode(const uint8_t *buf, size_t avail, uint32_t max_event, pb_record *rec,
                  uint32_t *size)
{
    *size = 0;
    if (avail < 8)
        return PB_EINCOMPLETE;
    if (max_event > PB_RECORD_MAX_EVENT)
        max_event = PB_RECORD_MAX_EVENT;
    uint32_t length = pb_load_le32(buf + 4);
    /* Checked before the length is used for anything, so a damaged length
     * can never make a caller allocate or read gigabytes. */
    if (length < PB_RECORD_FIXED_LEN || length - PB_RECORD_FIXED_LEN > max_event)
        return PB_ECORRUPT;
    *size = length + 8;
    if (avail < (size_t)length + 8)
        return PB_EINCOMPLETE;
    if (crc32c(0, buf + 4, (size_t)length + 4) != pb_load_le32(buf))
        return PB_ECORRUPT;
    rec->offset = pb_load_le64(buf + 8);
    rec->time_ns = (int64_t)pb_load_le64(buf + 16);
    rec->event = buf + PB_RECORD_HEADER_SIZE;
    rec->event_len = length - PB_RECORD_FIXED_LEN;
    return 0;
}

void file_header_encode(uint8_t out[PB_FILE_HEADER_SIZE], const char *magic, uint64_t base_offset,
                        int64_t created_ns)
{
    memcpy(out, magic, 8);
    pb_store_le32(out + 8, PB_FORMAT_VERSION);
    pb_store_le32(out + 12, 0); /* flags */
    pb_store_le64(out + 16, base_offset);
    pb_store_le64(out + 24, (uint64_t)created_ns);
    pb_store_le32(out + 32, 0); /* reserved */
    pb_store_le32(out + 36, crc32c(0, out, 36));
}

int file_header_decode(const uint8_t in[PB_FILE_HEADER_SIZE], const char *magic,
                       uint64_t *base_offset, int64_t *created_ns)
{
    if (memcmp(in, magic, 8) != 0)
        return PB_EFORMAT;
    if (crc32c(0, in, 36) != pb_load_le32(in + 36))
        return PB_ECORRUPT;
    /* Only checked once the CRC says these bytes are what was written: a
     * different version is a different format, not damage. */
    if (pb_load_le32(in + 8) != PB_FORMAT_VERSION || pb_load_le32(in + 12) != 0)
        return PB_EFORMAT;
    if (base_offset)
        *base_offset = pb_load_le64(in + 16);
    if (created_ns)
        *created_ns = (int64_t)pb_load_le64(in + 24);
    return 0;
}
