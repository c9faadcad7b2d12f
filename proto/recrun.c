/*
 * recrun - the Records frame's header, walk and run check (see recrun.h,
 * FORMAT.md 4.11 and Part B).
 *
 * Threads: any; no state.
 */
#include "recrun.h"

#include "crc32c.h"
#include "frame.h"
#include "msg.h"
#include "pb_errors.h"
#include "record.h"

#include <inttypes.h>
#include <stdbool.h>
#include <string.h>

static const struct msg_desc RECORDS_D = MSG_DESC("Records", "partition", "records");

static size_t put_varint(uint8_t *out, uint64_t v)
{
    size_t k = 0;
    while (v >= 0x80) {
        out[k++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[k++] = (uint8_t)v;
    return k;
}

/* v in exactly RECRUN_LEN_BYTES bytes (v < 2^35). */
static size_t put_len(uint8_t *out, uint64_t v)
{
    for (unsigned i = 0; i < RECRUN_LEN_BYTES - 1; i++, v >>= 7)
        out[i] = (uint8_t)((v & 0x7f) | 0x80);
    out[RECRUN_LEN_BYTES - 1] = (uint8_t)(v & 0x7f);
    return RECRUN_LEN_BYTES;
}

static size_t varint_size(uint64_t v)
{
    size_t k = 1;
    while (v >= 0x80) {
        v >>= 7;
        k++;
    }
    return k;
}

size_t recrun_put_header(uint8_t *out, uint64_t id, const char *partition, size_t partition_len,
                         size_t records_len)
{
    /* Records{1: partition, 2: records}; Frame{1: id, 13: records}. */
    uint64_t body = (partition_len ? 1 + varint_size(partition_len) + partition_len : 0) + 1 +
                    RECRUN_LEN_BYTES + records_len;
    uint64_t frame = (id ? 1 + varint_size(id) : 0) + 1 + RECRUN_LEN_BYTES + body;
    size_t k = put_len(out, frame);
    if (id) {
        out[k++] = 0x08;
        k += put_varint(out + k, id);
    }
    out[k++] = (FRAME_RECORDS << 3) | 2;
    k += put_len(out + k, body);
    if (partition_len) {
        out[k++] = 0x0a;
        k += put_varint(out + k, partition_len);
        memcpy(out + k, partition, partition_len);
        k += partition_len;
    }
    out[k++] = 0x12;
    k += put_len(out + k, records_len);
    return k;
}

uint64_t recrun_frame_max(uint64_t max_frame_bytes)
{
    return max_frame_bytes > RECRUN_FRAME_MAX ? max_frame_bytes : RECRUN_FRAME_MAX;
}

void recrun_set_length(uint8_t *hdr, size_t hdr_len, uint64_t id, size_t records_len)
{
    size_t id_len = id ? 1 + varint_size(id) : 0;
    size_t body_at = RECRUN_LEN_BYTES + id_len + 1; /* the body's length */
    put_len(hdr, hdr_len - RECRUN_LEN_BYTES + records_len);
    put_len(hdr + body_at, hdr_len - body_at - RECRUN_LEN_BYTES + records_len);
    put_len(hdr + hdr_len - RECRUN_LEN_BYTES, records_len);
}

int recrun_parse(const uint8_t *p, size_t n, recrun_view *v, char *err, size_t errlen)
{
    wire_cursor c;
    wire_field f;
    bool have = false;
    memset(v, 0, sizeof *v);
    wire_cursor_init(&c, p, n);
    while (!wire_cursor_done(&c)) {
        if (msg_next(&c, &f, &RECORDS_D, err, errlen) < 0)
            return PB_EPROTO;
        if (f.number == 1) {
            if (msg_want_string(&f, &c, &RECORDS_D, err, errlen) < 0)
                return PB_EPROTO;
            v->partition = f.data;
        } else if (f.number == 2) {
            if (msg_want_type(&f, WIRE_LEN, &RECORDS_D, err, errlen) < 0)
                return PB_EPROTO;
            /* Two occurrences would concatenate (bytes: the last wins in
             * protobuf): neither is what a sender means. */
            if (have)
                return msg_fail(err, errlen, &RECORDS_D, &f, "a second run of records");
            have = true;
            v->records = f.data;
        }
    }
    if (!have) {
        pb_set_err(err, errlen, "Records has no records (field 2)");
        return PB_EPROTO;
    }
    return 0;
}

int recrun_check(const uint8_t *p, size_t n, uint32_t max_event, uint64_t *first, size_t *count,
                 char *err, size_t errlen)
{
    if (max_event > PB_RECORD_MAX_EVENT)
        max_event = PB_RECORD_MAX_EVENT;
    if (n == 0) {
        pb_set_err(err, errlen, "an empty run of records");
        return PB_ECORRUPT;
    }
    size_t pos = 0, k = 0;
    uint64_t start = 0;
    while (pos < n) {
        size_t left = n - pos;
        uint64_t want = start + k; /* the offset record k must have */
        if (left < PB_RECORD_HEADER_SIZE) {
            pb_set_err(err, errlen,
                       "the run ends inside record %zu's header (byte %zu, %zu of %u bytes)", k,
                       pos, left, PB_RECORD_HEADER_SIZE);
            return PB_ECORRUPT;
        }
        const uint8_t *r = p + pos;
        uint32_t length = pb_load_le32(r + 4);
        uint64_t offset = pb_load_le64(r + 8);
        if (length < PB_RECORD_FIXED_LEN || length - PB_RECORD_FIXED_LEN > max_event) {
            pb_set_err(err, errlen,
                       "record %zu (byte %zu) has a length of %" PRIu32 " (16 .. %" PRIu32
                       " allowed)",
                       k, pos, length, max_event + PB_RECORD_FIXED_LEN);
            return PB_ECORRUPT;
        }
        if ((uint64_t)length + 8 > left) {
            pb_set_err(err, errlen,
                       "the run ends inside record %zu (byte %zu: %zu of its %" PRIu64 " bytes)", k,
                       pos, left, (uint64_t)length + 8);
            return PB_ECORRUPT;
        }
        if (crc32c(0, r + 4, (size_t)length + 4) != pb_load_le32(r)) {
            pb_set_err(err, errlen, "record %zu (byte %zu, offset %" PRIu64 ") fails its CRC", k,
                       pos, offset);
            return PB_ECORRUPT;
        }
        if (k == 0) {
            start = offset;
        } else if (offset != want) {
            pb_set_err(err, errlen,
                       "record %zu (byte %zu) has offset %" PRIu64 ", expected %" PRIu64
                       " (offsets must be consecutive)",
                       k, pos, offset, want);
            return PB_ECORRUPT;
        }
        pos += (size_t)length + 8;
        k++;
    }
    if (start > UINT64_MAX - k) {
        pb_set_err(err, errlen, "the run's offsets pass 2^64");
        return PB_ECORRUPT;
    }
    *first = start;
    *count = k;
    return 0;
}

int recrun_skip(const uint8_t *p, size_t n, uint64_t first, uint32_t count, uint64_t next,
                size_t *at, uint64_t *offset, uint32_t *left)
{
    size_t pos = 0;
    uint32_t k = 0;
    for (; k < count; k++) {
        if (n - pos < PB_RECORD_HEADER_SIZE)
            return PB_ECORRUPT;
        uint64_t size = (uint64_t)pb_load_le32(p + pos + 4) + 8;
        if (size < PB_RECORD_HEADER_SIZE || size > n - pos)
            return PB_ECORRUPT;
        if (first + k >= next)
            break; /* the rest is checked below */
        pos += (size_t)size;
    }
    /* The records from k on must end exactly at n. */
    size_t end = pos;
    for (uint32_t j = k; j < count; j++) {
        if (n - end < PB_RECORD_HEADER_SIZE)
            return PB_ECORRUPT;
        uint64_t size = (uint64_t)pb_load_le32(p + end + 4) + 8;
        if (size < PB_RECORD_HEADER_SIZE || size > n - end)
            return PB_ECORRUPT;
        end += (size_t)size;
    }
    if (end != n)
        return PB_ECORRUPT;
    *at = pos;
    *offset = first + k;
    *left = count - k;
    return 0;
}
