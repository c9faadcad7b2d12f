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
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

struct segfile {
    segment_file file; /* path, fd, buffer, position, problem report */
    bool header_done;
    uint64_t expected; /* offset the next record must have, once started */
    bool started;
    uint64_t zero_pos; /* zeros only from here to the end when checked (UINT64_MAX: not) */
};

static int report(segfile *f, uint64_t position, uint64_t first, uint64_t last, const char *reason)
{
    return segment_file_report(&f->file, position, first, last, reason);
}

/* Reads and checks the 40-byte header. *wait: not all there yet (follow). */
static int read_header(segfile *f, bool *wait)
{
    const uint8_t *p;
    size_t avail;
    *wait = false;
    int rc = segment_buf_get(&f->file.buf, 0, PB_FILE_HEADER_SIZE, &p, &avail);
    if (rc < 0)
        return rc;
    if (avail < PB_FILE_HEADER_SIZE) {
        if (f->file.follow || avail == 0) {
            *wait = true; /* being created, or empty: no records */
            return 0;
        }
        char why[96];
        snprintf(why, sizeof why, "segment header cut short (%zu of %u bytes)", avail,
                 PB_FILE_HEADER_SIZE);
        f->file.stuck = true;
        return report(f, 0, 0, UINT64_MAX, why); /* no record, so none lost */
    }
    f->header_done = true;
    f->file.pos = PB_FILE_HEADER_SIZE;
    uint64_t base;
    rc = file_header_decode(p, PB_LOG_MAGIC, &base, NULL);
    if (rc == 0) {
        f->expected = base;
        f->started = true;
        return 0;
    }
    if (rc == PB_EFORMAT) {
        f->file.stuck = true;
        return report(f, 0, 0, UINT64_MAX,
                      "not a segment this version can read (magic, version or flags)");
    }
    /* Records carry their own offsets and CRCs: go on without the base. */
    return report(f, 0, 0, UINT64_MAX, "segment header failed its CRC check");
}

/* The record at f->file.pos failed its checks: find the next one that
 * verifies. 1: with --follow, the record there verifies on a second read (a
 * write in progress when first read): read it. */
static int resync(segfile *f)
{
    pb_record rec;
    uint32_t size;
    uint64_t found;
    uint64_t min = f->started ? f->expected : 0;
    int rc = segment_resync(&f->file.buf, f->file.pos, min, UINT64_MAX, PB_RECORD_MAX_EVENT, &found,
                            &rec, &size);
    if (rc == PB_EEOF) {
        if (f->file.follow) {
            /* Maybe a record being written: look again on the next call. */
            segment_buf_invalidate(&f->file.buf);
            return PB_EEOF;
        }
        struct stat st;
        if (fstat(f->file.fd, &st) < 0)
            return -errno;
        char why[160];
        snprintf(why, sizeof why,
                 "record cut short or damaged at end of file; %llu bytes cannot be read",
                 (unsigned long long)((uint64_t)st.st_size - f->file.pos));
        f->file.stuck = true;
        uint64_t first = f->started ? f->expected : 0;
        return report(f, f->file.pos, first, f->started ? first : UINT64_MAX, why);
    }
    if (rc < 0)
        return rc;
    /* A later record there: one at f->file.pos that verifies now was a
     * write in progress when first read; an offset going backwards is
     * still damage. */
    if (f->file.follow &&
        segment_verifies_again(&f->file.buf, f->file.pos, !f->started, f->expected))
        return 1;
    f->zero_pos = UINT64_MAX; /* damage: what follows is checked afresh */
    uint64_t bad = f->file.pos;
    uint64_t first = f->started ? f->expected : rec.offset;
    f->file.pos = found;
    f->expected = rec.offset;
    f->started = true;
    char why[160];
    snprintf(why, sizeof why, "record failed its checks (CRC or length); %llu bytes skipped",
             (unsigned long long)(found - bad));
    return report(f, bad, first, rec.offset - 1, why);
}

/* The record at f->file.pos failed its checks: the end of the records (a
 * zero tail, FORMAT.md Part B; with --follow: for now), a record written
 * meanwhile (1: read it), or damage (resync); segment_bad_record decides,
 * as for pb_reader. */
static int bad_record(segfile *f)
{
    int rc = segment_bad_record(&f->file.buf, f->file.pos, f->file.follow, &f->zero_pos);
    if (rc == SEGMENT_BAD_END)
        return PB_EEOF;
    if (rc == SEGMENT_BAD_AGAIN)
        return 1;
    return rc < 0 ? rc : resync(f);
}

int segfile_next(segfile *f, pb_record *rec)
{
    for (;;) {
        if (f->file.stuck)
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
        int rc = segment_read_record(&f->file.buf, f->file.pos, PB_RECORD_MAX_EVENT, rec, &size);
        if (rc == 0) {
            if (!f->started) {
                f->expected = rec->offset;
                f->started = true;
            }
            if (rec->offset == f->expected) {
                f->file.pos += size;
                f->expected++;
                return 0;
            }
            if (rec->offset > f->expected) {
                /* A valid record, but the ones before it are missing. The
                 * next call returns it. */
                rc = report(f, f->file.pos, f->expected, rec->offset - 1,
                            "offsets missing in segment");
                f->expected = rec->offset;
                return rc;
            }
            /* An offset going backwards is not ours. */
            if ((rc = resync(f)) == 1)
                continue;
            return rc;
        }
        if (rc == PB_EINCOMPLETE) {
            const uint8_t *p;
            size_t avail;
            if ((rc = segment_buf_get(&f->file.buf, f->file.pos, 1, &p, &avail)) < 0)
                return rc;
            if (avail == 0)
                return PB_EEOF; /* clean end (for now) */
            if ((rc = resync(f)) == 1)
                continue;
            return rc;
        }
        if (rc == PB_ECORRUPT && (rc = bad_record(f)) == 1)
            continue;
        return rc;
    }
}

const struct pb_reader_problem *segfile_problem(const segfile *f)
{
    return &f->file.problem;
}

int segfile_open(segfile **out, const char *path, bool follow)
{
    *out = NULL;
    segfile *f = calloc(1, sizeof *f);
    if (!f)
        return PB_ENOMEM;
    int rc = segment_file_open(&f->file, path, follow);
    if (rc < 0) {
        free(f);
        return rc;
    }
    f->zero_pos = UINT64_MAX;
    *out = f;
    return 0;
}

void segfile_close(segfile *f)
{
    if (!f)
        return;
    segment_file_close(&f->file);
    free(f);
}
