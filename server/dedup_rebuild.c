/*
 * dedup_rebuild - a dedup window from the partition's files (see dedup.h):
 * the records of the last window read at start-up, the id of a stored
 * event, and the mark of a partition that ever stored one.
 *
 * Threads: the thread that opens the partition (or its writer, for
 * dedup_event_id).
 */
#include "dedup.h"

#include "event.h"
#include "logging.h"
#include "pb_errors.h"
#include "reader.h"
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>

size_t dedup_event_id(const uint8_t *ev, size_t n, const uint8_t **id)
{
    event_walker w;
    event_item it;
    size_t len = 0;
    event_walk_init(&w, ev, n, EVENT_WANT(EVENT_ID), false);
    while (event_walk_next(&w, &it, NULL, 0) > 0) {
        *id = it.f.data.p;
        len = it.f.data.len;
    }
    return len;
}

bool dedup_marked(const fileio *io, const char *dir)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, DEDUP_MARK_NAME) >= (int)sizeof path)
        return true; /* cannot tell: scan */
    int fd = io->open(io, path, O_RDONLY, 0);
    if (fd < 0)
        return fd != -ENOENT; /* another error: scan, to be safe */
    (void)io->close(io, fd);
    return true;
}

int dedup_mark(const fileio *io, const char *dir)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, DEDUP_MARK_NAME) >= (int)sizeof path)
        return PB_EINVAL;
    int fd = io->open(io, path, O_WRONLY | O_CREAT, 0644);
    if (fd < 0)
        return fd;
    int rc = io->close(io, fd);
    if (rc == 0)
        rc = fileio_sync_dir(io, dir); /* the entry is durable before any id is */
    return rc;
}

int dedup_rebuild(dedup *d, const fileio *io, const char *dir, const char *name, int64_t now_ns,
                  uint64_t from_offset, uint64_t end_offset)
{
    if (end_offset <= from_offset)
        return 0;
    segment_io sio;
    fileio_segment_io(io, &sio);
    pb_reader *r = NULL;
    int rc = pb_reader_open_io(&r, dir, &sio);
    if (rc < 0) {
        logging_printf(LOG_ERROR, "partition %s: cannot read %s to rebuild its dedup window: %s",
                       name, dir, pb_strerror(rc));
        return rc;
    }
    uint64_t seen = 0, ids = 0;
    /* From the snapshot's end, or (none, or that offset is gone) by time;
     * ids already in the window are skipped below either way. */
    rc = from_offset ? pb_reader_seek_offset(r, from_offset) : -1;
    if (rc < 0)
        rc = pb_reader_seek_time(r, now_ns - dedup_window_ns(d));
    pb_reader_set_end(r, end_offset);
    while (rc >= 0) {
        pb_record rec;
        rc = pb_reader_next(r, &rec);
        if (rc == PB_EEOF) {
            rc = 0;
            break;
        }
        if (rc == PB_ECORRUPT) {
            rc = 0; /* logged by recovery; its ids were never acknowledged as stored */
            continue;
        }
        if (rc == PB_EREMOVED) {
            rc = 0; /* retention took them: no longer stored, nothing to remember */
            continue;
        }
        if (rc < 0)
            break;
        seen++;
        if (rec.time_ns < now_ns - dedup_window_ns(d))
            continue; /* expired already (a seek by offset starts anywhere) */
        const uint8_t *id = NULL;
        size_t len = dedup_event_id(rec.event, rec.event_len, &id);
        if (len == 0 || len > EVENT_ID_MAX_BYTES)
            continue;
        uint64_t had;
        if (dedup_find(d, id, len, &had))
            continue; /* stored twice before (an older window): the first one stands */
        if ((rc = dedup_add(d, id, len, rec.offset, rec.time_ns)) < 0)
            break;
        ids++;
    }
    if (rc < 0)
        logging_printf(LOG_ERROR, "partition %s: reading %s for its dedup window failed: %s", name,
                       dir, pb_strerror(rc));
    else if (ids > 0)
        logging_printf(LOG_INFO,
                       "partition %s: dedup window rebuilt: %llu ids from the last %llu records",
                       name, (unsigned long long)ids, (unsigned long long)seen);
    pb_reader_close(r);
    return rc;
}
