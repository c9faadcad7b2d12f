/*
 * legacy - reads event files written by the ORIGINAL protobus-server (the
 * Python daemon this project replaces), so that old archives stay readable
 * with `protobus cat`.
 *
 * That layout has no file header, no offsets and no checksums: a file is a
 * sequence of records, each a little-endian u32 length followed by that many
 * bytes of one serialized EncapsulatedEvent. Since nothing else protects the
 * bytes, every event is checked with event_scan (event.h); one that fails is
 * reported and skipped (its length prefix still says where the next record
 * starts). A record's "offset" is its ordinal in the file (0, 1, 2, ...) and
 * its time is the event's server_receive_time (0 when absent).
 *
 * Threads: a pb_legacy is used by one thread at a time; plain pread, no
 * shared state. Used by the offline CLI (client/cli).
 */
#ifndef PB_LEGACY_H
#define PB_LEGACY_H

#include "reader.h"
#include "record.h"

#include <stdbool.h>
#include <stdint.h>

/* What the first bytes of a file say it is. */
typedef enum pb_file_kind {
    PB_FILE_SEGMENT, /* starts with PB_LOG_MAGIC: a Protobus segment (.log) */
    PB_FILE_INDEX,   /* starts with PB_IDX_MAGIC: a Protobus index (.idx) */
    PB_FILE_LEGACY,  /* anything else (also empty): original protobus-server layout */
} pb_file_kind;

/* Reads the first 8 bytes of path and classifies it. 0 and *kind, or a
 * negated errno (e.g. -ENOENT, -EISDIR). */
int pb_file_probe(const char *path, pb_file_kind *kind);

typedef struct pb_legacy pb_legacy;

/* Opens a legacy file, positioned before its first record.
 * follow = false: the file is complete; a record cut short at its end is
 * damage (reported once as PB_ECORRUPT). follow = true: the file may still
 * be growing; a short record at its end is "not written yet" (PB_EEOF, and
 * a later call sees it once whole).
 * 0, PB_ENOMEM, PB_EINVAL (path too long) or a negated errno. */
int pb_legacy_open(pb_legacy **out, const char *path, bool follow);

/* 0: rec filled (offset = ordinal, time_ns = server_receive_time or 0,
 *    event = the EncapsulatedEvent bytes, valid until the next call on l).
 * PB_EEOF: no more records (for now, with follow).
 * PB_ECORRUPT: a record was skipped or the rest of the file cannot be read;
 *    pb_legacy_problem() says where and which ordinals were lost. The next
 *    call goes on after it.
 * other negative: I/O error (negated errno) or PB_ENOMEM. */
int pb_legacy_next(pb_legacy *l, pb_record *rec);

/* The damage behind the last PB_ECORRUPT (same meaning as for the segment
 * reader; file is the path given to pb_legacy_open). Owned by l, valid
 * until the next call on l. */
const struct pb_reader_problem *pb_legacy_problem(const pb_legacy *l);

/* Closes the file and frees l. NULL is allowed. */
void pb_legacy_close(pb_legacy *l);

#endif
