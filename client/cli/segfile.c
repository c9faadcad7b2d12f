/*
 * segfile - one segment file read on its own (see segfile.h).
 *
 * Threads: the CLI's main thread.
 *
 * Reads through a segment_buf (1 MiB preads); damage is skipped with
 * segment_resync, which only accepts a record whose length, offset and CRC
 * all check out, so random bytes are not taken for events.
 */
#include "segfile.h"

#include "pb_errors.h"
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

struct segfile {
    char path[PATH_MAX];
    int fd;
    bool follow;
    bool header_done;
    bool stuck;        /* nothing more can be read: always PB_EEOF */
    uint64_t pos;      /* file position of the next record */
    uint64_t expected; /* offset the next record must have, once started */
    bool started;
    segment_buf buf;
    struct pb_reader_problem problem;
    char reason[200];
};

static int report(segfile *f, uint64_t position, uint64_t first, uint64_t last, const char *reason)
{
    f->problem.file = f->path;
    f->problem.position = position;
    f->problem.first_offset = first;
    f->problem.last_offset = last;
    snprintf(f->reason, sizeof f->reason, "%s", reason);
    f->problem.reason = f->reason;
    return PB_ECORRUPT;
}

/* Reads and checks the 40-byte header. *wait: not all there yet (follow). */
static int read_header(segfile *f, bool *wait)
{
    const uint8_t *p;
    size_t avail;
    *wait = false;
    int rc = segment_buf_get(&f->buf, 0, PB_FILE_HEADER_SIZE, &p, &avail);
    if (rc < 0)
        return rc;
    if (avail < PB_FILE_HEADER_SIZE) {
        if (f->follow || avail == 0) {
            *wait = true; /* being created, or empty: no records */
            return 0;
        }
        char why[96];
        snprintf(why, sizeof why, "segment header cut short (%zu of %u bytes)", avail,
                 PB_FILE_HEADER_SIZE);
        f->stuck = true;
        return report(f, 0, 0, UINT64_MAX, why); /* no record, so none lost */
    }
    f->header_done = true;
    f->pos = PB_FILE_HEADER_SIZE;
    uint64_t base;
    rc = file_header_decode(p, PB_LOG_MAGIC, &base, NULL);
    if (rc == 0) {
        f->expected = base;
        f->started = true;
        return 0;
    }
    if (rc == PB_EFORMAT) {
        f->stuck = true;
        return report(f, 0, 0, UINT64_MAX,
                      "not a segment this version can read (magic, version or flags)");
    }
    /* Records carry their own offsets and CRCs: go on without the base. */
    return report(f, 0, 0, UINT64_MAX, "segment header failed its CRC check");
}

/* The record at f->pos failed its checks: find the next one that verifies. */
static int resync(segfile *f)
{
    pb_record rec;
    uint32_t size;
    uint64_t found;
    uint64_t min = f->started ? f->expected : 0;
    int rc =
        segment_resync(&f->buf, f->pos, min, UINT64_MAX, PB_RECORD_MAX_EVENT, &found, &rec, &size);
    if (rc == PB_EEOF) {
        if (f->follow) {
            /* Maybe a record being written: look again on the next call. */
            segment_buf_invalidate(&f->buf);
            return PB_EEOF;
        }
        struct stat st;
        if (fstat(f->fd, &st) < 0)
            return -errno;
        char why[160];
        snprintf(why, sizeof why,
                 "record cut short or damaged at end of file; %llu bytes cannot be read",
                 (unsigned long long)((uint64_t)st.st_size - f->pos));
        f->stuck = true;
        uint64_t first = f->started ? f->expected : 0;
        return report(f, f->pos, first, f->started ? first : UINT64_MAX, why);
    }
    if (rc < 0)
        return rc;
    uint64_t bad = f->pos;
    uint64_t first = f->started ? f->expected : rec.offset;
    f->pos = found;
    f->expected = rec.offset;
    f->started = true;
    char why[160];
    snprintf(why, sizeof why, "record failed its checks (CRC or length); %llu bytes skipped",
             (unsigned long long)(found - bad));
    return report(f, bad, first, rec.offset - 1, why);
}

int segfile_next(segfile *f, pb_record *rec)
{
    for (;;) {
        if (f->stuck)
            return PB_EEOF;
        if (!f->header_done) {
            bool wait;
            int rc = read_header(f, &wait);
            if (wait)
                return PB_EEOF;
            if (rc < 0)
                return rc;
            continue;
        }
        uint32_t size;
        int rc = segment_read_record(&f->buf, f->pos, PB_RECORD_MAX_EVENT, rec, &size);
        if (rc == 0) {
            if (!f->started) {
                f->expected = rec->offset;
                f->started = true;
            }
            if (rec->offset == f->expected) {
                f->pos += size;
                f->expected++;
                return 0;
            }
            if (rec->offset > f->expected) {
                /* A valid record, but the ones before it are missing. The
                 * next call returns it. */
                rc = report(f, f->pos, f->expected, rec->offset - 1, "offsets missing in segment");
                f->expected = rec->offset;
                return rc;
            }
            return resync(f); /* an offset going backwards is not ours */
        }
        if (rc == PB_EINCOMPLETE) {
            const uint8_t *p;
            size_t avail;
            if ((rc = segment_buf_get(&f->buf, f->pos, 1, &p, &avail)) < 0)
                return rc;
            if (avail == 0)
                return PB_EEOF; /* clean end (for now) */
            return resync(f);
        }
        if (rc == PB_ECORRUPT)
            return resync(f);
        return rc;
    }
}

const struct pb_reader_problem *segfile_problem(const segfile *f)
{
    return &f->problem;
}

int segfile_open(segfile **out, const char *path, bool follow)
{
    *out = NULL;
    segfile *f = calloc(1, sizeof *f);
    if (!f)
        return PB_ENOMEM;
    f->fd = -1;
    f->follow = follow;
    f->problem.file = f->path;
    f->problem.reason = f->reason;
    int rc = PB_EINVAL;
    if (snprintf(f->path, sizeof f->path, "%s", path) >= (int)sizeof f->path)
        goto fail;
    if ((rc = segment_buf_init(&f->buf, segment_pread_posix, NULL)) < 0)
        goto fail;
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) {
        rc = -errno;
        goto fail;
    }
    segment_buf_attach(&f->buf, f->fd);
    *out = f;
    return 0;
fail:
    segfile_close(f);
    return rc;
}

void segfile_close(segfile *f)
{
    if (!f)
        return;
    if (f->fd >= 0)
        (void)close(f->fd); /* read-only: a close error loses nothing */
    segment_buf_free(&f->buf);
    free(f);
}
