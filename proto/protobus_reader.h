/*
 * protobus_reader.h - public header of libprotobus (included by
 * protobus.h; include that one).
 *
 * The reader reads a partition's segment files in offset order: from the
 * start, from an offset or from a time, and on past the current end as the
 * writer appends and rotates (like tail -F). Every record's CRC is checked;
 * damage is reported (PB_ECORRUPT + pb_reader_problem) and skipped, never
 * skipped silently.
 *
 * The daemon's subscription threads and the offline CLI use the same code:
 * plain POSIX pread, no threads, no sockets. Threads: a pb_reader is used by
 * one thread at a time; different readers are independent (any number may
 * read the same partition while its writer appends).
 */
#ifndef PROTOBUS_READER_H
#define PROTOBUS_READER_H

#include "protobus_errors.h"
#include "protobus_version.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One stored record: the event bytes (an EncapsulatedEvent, FORMAT.md
 * Part B) with the offset and receive time the partition gave it. `event`
 * points into the buffer it was read or decoded from. */
typedef struct pb_record {
    uint64_t offset;
    int64_t time_ns;
    const uint8_t *event;
    uint32_t event_len;
} pb_record;

typedef struct pb_reader pb_reader;

/* Opens a reader on data_dir/<partition> (the directory holding the .log
 * files), positioned before the first stored record. 0, PB_ENOTFOUND if the
 * directory does not exist, PB_ENOMEM, or a negative errno. */
PB_API int pb_reader_open(pb_reader **out, const char *partition_dir);

/* next() returns the first record with offset >= offset. Uses a binary search
 * over the segment list and the segment's .idx (falls back to scanning the
 * segment when the index is missing or wrong). An offset past the end waits
 * there: next() returns PB_EEOF until it is written. 0 or a negative code. */
PB_API int pb_reader_seek_offset(pb_reader *r, uint64_t offset);

/* next() returns the first record with time_ns >= time_ns (receive times are
 * non-decreasing within a partition). Same cost and behaviour as
 * pb_reader_seek_offset. */
PB_API int pb_reader_seek_time(pb_reader *r, int64_t time_ns);

/* next() never returns a record with offset >= end_offset (PB_EEOF instead)
 * and does not look at bytes past it. UINT64_MAX (the default) = no limit. */
PB_API void pb_reader_set_end(pb_reader *r, uint64_t end_offset);

/* 0: rec filled; rec->event points into the reader's buffer, valid until the
 *    next call on r.
 * PB_EEOF: nothing more for now; a later call picks up records appended since
 *    and segments created by rotation. A partial record at the very end of the
 *    newest segment counts as "not written yet".
 * PB_ECORRUPT: damaged bytes were found and skipped; pb_reader_problem() says
 *    where and which offsets were lost. The next call continues with the next
 *    record that verifies.
 * PB_EREMOVED: offsets were removed by retention before this reader got to
 *    them (not damage): pb_reader_problem() names them (first_offset..
 *    last_offset). Returned when a seek_offset target lies below the oldest
 *    segment, and when segments the reader was about to open were removed
 *    under it; a segment it has open stays readable to its end. The next
 *    call continues with the first offset still stored.
 * other negative: I/O error (negated errno) or PB_ENOMEM. */
PB_API int pb_reader_next(pb_reader *r, pb_record *rec);

/* The damage behind the last PB_ECORRUPT. Offsets first_offset..last_offset
 * (inclusive) were lost; when last_offset + 1 == first_offset (mod 2^64) no
 * offset was lost, only unreadable bytes between records. Strings are owned
 * by r and valid until the next call on r.
 *
 * Spelled `struct pb_reader_problem` (no typedef): C puts typedef and
 * function names in one namespace, so the type cannot share its name with
 * the accessor pb_reader_problem(). */
struct pb_reader_problem {
    const char *file;  /* path of the segment file */
    uint64_t position; /* byte position in it where the damage starts */
    uint64_t first_offset;
    uint64_t last_offset;
    const char *reason; /* e.g. "record cut short at end of segment" */
};

PB_API const struct pb_reader_problem *pb_reader_problem(const pb_reader *r);

/* Closes files and frees r. NULL is allowed. */
PB_API void pb_reader_close(pb_reader *r);

/* The partition directories in data_dir, sorted by name: its
 * subdirectories whose names are partition names (1..100 characters of
 * A-Z a-z 0-9 . _ -, not starting with "."; proto/FORMAT.md, Part B). *names
 * and each name are malloc'd; free with pb_partition_list_free.
 * PB_ENOTFOUND if data_dir does not exist. */
PB_API int pb_partition_list(const char *data_dir, char ***names, size_t *count);
PB_API void pb_partition_list_free(char **names, size_t count);

#ifdef __cplusplus
}
#endif

#endif
