/*
 * legacy - reader for the original protobus-server's files (see legacy.h).
 *
 * Threads: whichever thread owns the pb_legacy (the CLI's main thread).
 *
 * Reads go through a segment_buf (segment.h), so a sequential scan costs one
 * pread per 1 MiB window, and a record larger than the window grows it once
 * (bounded by PB_RECORD_MAX_EVENT, the same cap as for our own records).
 */
#include "legacy.h"

#include "event.h"
#include "pb_errors.h"
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LEGACY_PREFIX 4u /* the u32 length before each event */

struct pb_legacy {
    segment_file file; /* path, fd, buffer, position (of the next record's
                          length prefix), problem report */
    uint64_t ordinal;  /* ordinal of the next record */
};

int pb_file_probe(const char *path, pb_file_kind *kind)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    uint8_t magic[8];
    ssize_t n = segment_pread_posix(NULL, fd, magic, sizeof magic, 0);
    (void)close(fd); /* read-only: a close error loses nothing */
    if (n < 0)
        return (int)n;
    if (n == (ssize_t)sizeof magic && memcmp(magic, PB_LOG_MAGIC, sizeof magic) == 0)
        *kind = PB_FILE_SEGMENT;
    else if (n == (ssize_t)sizeof magic && memcmp(magic, PB_IDX_MAGIC, sizeof magic) == 0)
        *kind = PB_FILE_INDEX;
    else
        *kind = PB_FILE_LEGACY;
    return 0;
}

/* Records a problem that cost the current ordinal (and, when the rest of the
 * file is unreadable, an unknown number after it) and returns PB_ECORRUPT. */
static int report(pb_legacy *l, uint64_t position, const char *reason)
{
    return segment_file_report(&l->file, position, l->ordinal, l->ordinal, reason);
}

/* Bytes at the end of the file that do not make a whole record. */
static int short_tail(pb_legacy *l, size_t have, uint64_t need)
{
    if (l->file.follow)
        return PB_EEOF; /* the original server writes prefix and event separately */
    char why[160];
    if (need == 0)
        snprintf(why, sizeof why, "record cut short at end of file: %zu of %u length bytes", have,
                 LEGACY_PREFIX);
    else
        snprintf(why, sizeof why,
                 "record cut short at end of file: length prefix says %llu bytes, %zu present",
                 (unsigned long long)(need - LEGACY_PREFIX), have - LEGACY_PREFIX);
    l->file.stuck = true;
    return report(l, l->file.pos, why);
}

int pb_legacy_next(pb_legacy *l, pb_record *rec)
{
    const uint8_t *p;
    size_t avail;
    for (;;) {
        if (l->file.stuck)
            return PB_EEOF;
        int rc = segment_buf_get(&l->file.buf, l->file.pos, LEGACY_PREFIX, &p, &avail);
        if (rc < 0)
            return rc;
        if (avail == 0)
            return PB_EEOF;
        if (avail < LEGACY_PREFIX)
            return short_tail(l, avail, 0);
        uint32_t len = pb_load_le32(p);
        if (len > PB_RECORD_MAX_EVENT) {
            /* No checksum and no magic to resynchronise on: nothing after a
             * bogus length can be located. */
            char why[160];
            snprintf(why, sizeof why,
                     "length prefix %u exceeds the %u-byte maximum; the rest of the file "
                     "cannot be read",
                     len, PB_RECORD_MAX_EVENT);
            l->file.stuck = true;
            return report(l, l->file.pos, why);
        }
        uint64_t need = LEGACY_PREFIX + (uint64_t)len;
        if (avail < need) {
            rc = segment_buf_get(&l->file.buf, l->file.pos, (size_t)need, &p, &avail);
            if (rc < 0)
                return rc;
            if (avail < need)
                return short_tail(l, avail, need);
        }
        uint64_t at = l->file.pos;
        l->file.pos += need;
        event_view v;
        char err[160];
        if (event_scan(p + LEGACY_PREFIX, len, &v, err, sizeof err) < 0) {
            char why[200];
            snprintf(why, sizeof why, "not a valid EncapsulatedEvent: %s", err);
            rc = report(l, at, why);
            l->ordinal++;
            return rc;
        }
        rec->offset = l->ordinal++;
        rec->time_ns = v.server_receive_time.present ? v.server_receive_time.ns : 0;
        rec->event = p + LEGACY_PREFIX;
        rec->event_len = len;
        return 0;
    }
}

const struct pb_reader_problem *pb_legacy_problem(const pb_legacy *l)
{
    return &l->file.problem;
}

int pb_legacy_open(pb_legacy **out, const char *path, bool follow)
{
    *out = NULL;
    pb_legacy *l = calloc(1, sizeof *l);
    if (!l)
        return PB_ENOMEM;
    int rc = segment_file_open(&l->file, path, follow);
    if (rc < 0) {
        free(l);
        return rc;
    }
    *out = l;
    return 0;
}

void pb_legacy_close(pb_legacy *l)
{
    if (!l)
        return;
    segment_file_close(&l->file);
    free(l);
}
