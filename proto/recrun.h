/*
 * recrun - the Records frame (Frame field 13, FORMAT.md 4.11): a run of a
 * partition's stored records, byte for byte as in its segment files (Part
 * B: crc, length, offset, time_ns, event), that a primary sends on a
 * replication subscription that asked for it (Subscribe.replicate_records)
 * and a standby appends as it is. Here: the frame's header (lengths in a
 * fixed width, so that a sender can write the records first and the
 * lengths after), the walk of the Records message, and the check of a run
 * (every record whole, its length within bounds, its CRC, consecutive
 * offsets) before anything of it is used.
 *
 * Threads: any; pure functions on caller-owned buffers.
 */
#ifndef PB_RECRUN_H
#define PB_RECRUN_H

#include "wire.h"

#include <stddef.h>
#include <stdint.h>

/* A sender keeps a Records frame within this (header included), and a
 * standby accepts frames up to it whatever its max_frame_bytes: a run is
 * bounded by the sender, not by the largest event. */
#define RECRUN_FRAME_MAX (512u * 1024u)

/* The largest frame a standby reads from its primary: its own
 * max_frame_bytes, or RECRUN_FRAME_MAX if that is smaller. */
uint64_t recrun_frame_max(uint64_t max_frame_bytes);

/* Each length of the header is a 5-byte varint (padded with 0x80 groups,
 * which protobuf decoders accept): values below 2^35. */
#define RECRUN_LEN_BYTES 5u
/* The header's size at most for a partition name of partition_len bytes:
 * frame length, id, body tag and length, partition, records tag and length. */
#define RECRUN_HEADER_MAX(partition_len) (5 + 11 + 6 + 11 + (partition_len) + 6)

/*
 * Writes the header of a delimited Frame{id, records: Records{partition,
 * records: records_len bytes}} to out (room for RECRUN_HEADER_MAX); the
 * records_len bytes of records follow it. Returns its size, which depends on
 * id and partition_len only: a sender may write it with records_len 0 to
 * reserve the room, append the records, and write it again with the real
 * length. records_len + the header must stay below 2^35.
 */
size_t recrun_put_header(uint8_t *out, uint64_t id, const char *partition, size_t partition_len,
                         size_t records_len);

/* Rewrites the three lengths of a header recrun_put_header wrote (hdr_len
 * bytes, for this id) for records_len bytes of records: nothing else of it
 * is read, so the partition name need not be at hand any more. */
void recrun_set_length(uint8_t *hdr, size_t hdr_len, uint64_t id, size_t records_len);

typedef struct recrun_view {
    wire_slice partition; /* valid UTF-8 */
    wire_slice records;   /* check with recrun_check before use */
} recrun_view;

/* Walks a Records message (a frame body of kind FRAME_RECORDS): 0, or
 * PB_EPROTO with err naming the field and byte. */
int recrun_parse(const uint8_t *p, size_t n, recrun_view *v, char *err, size_t errlen);

/*
 * Checks a run of records p[0..n): whole records back to back, each
 * length at least 16 and its event at most max_event bytes (clamped to
 * PB_RECORD_MAX_EVENT), each CRC right, the offsets consecutive. 0 with
 * *first (the first record's offset) and *count set; PB_ECORRUPT (nothing
 * set) with err naming the record (its index, offset and byte position in
 * the run) and what is wrong. An empty run is refused too.
 */
int recrun_check(const uint8_t *p, size_t n, uint32_t max_event, uint64_t *first, size_t *count,
                 char *err, size_t errlen);

/*
 * The part of a run of count records p[0..n) (offsets first..first+count-1,
 * as stored: each record's size is its length field + 8) from offset next
 * on: *at gets its byte position, *offset and *left its first offset and
 * record count (left 0, at n: nothing from next on; next <= first: the
 * whole run). Only lengths are read, no CRC. PB_ECORRUPT when a record's
 * header or its end falls outside p[0..n) or the records do not end
 * exactly at n: nothing of such a run is to be sent.
 */
int recrun_skip(const uint8_t *p, size_t n, uint64_t first, uint32_t count, uint64_t next,
                size_t *at, uint64_t *offset, uint32_t *left);

#endif
