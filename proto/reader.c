/*
 * reader - sequential, seekable, follow-able reading of one partition's
 * segment files (see reader.h).
 *
 * Threads: whichever thread owns the pb_reader (a daemon subscription thread
 * or the CLI). Nothing here writes; the writer may append concurrently, so a
 * short or half-copied record at the end of the newest segment is treated as
 * "not written yet", and anything past the caller's end offset is not read.
 *
 * Reading goes through one segment_buf (1 MiB window, refilled by large
 * preads), so replay costs one syscall per window, not per record.
 */
#include "reader.h"

#include "grow.h"
#include "partname.h"
#include "pb_errors.h"
#include "segment.h"
#include "sort.h"
#include "zseg.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum seek_kind { SEEK_NONE, SEEK_OFFSET, SEEK_TIME };

struct pb_reader {
    const segment_io *io; /* every file operation (POSIX unless opened with one) */
    char dir[PATH_MAX];
    uint64_t *bases; /* sorted base offsets of the .log files */
    size_t nseg, segcap;
    size_t cur; /* index in bases of the segment being read */
    int fd;     /* open .log of bases[cur], or -1 */
    char path[PATH_MAX];
    uint64_t pos;      /* file position of the next record; 0 = after the header */
    uint64_t expected; /* offset the next record must have */
    bool started;      /* expected is known */
    uint64_t end_offset;
    int seek;
    uint64_t seek_offset;
    int64_t seek_time;
    segment_buf buf;
    struct pb_reader_problem problem;
    uint64_t below_first; /* a seek below the first offset left: report it at next() */
    bool cur_gone;        /* the open segment is no longer in the directory (retention) */
    bool below_pending;
    /* The open segment held only zeros from here to its end when last
     * checked (UINT64_MAX: not checked): a zero header at or after it
     * needs no new scan (bad_record). */
    uint64_t zero_pos;
    char problem_file[PATH_MAX];
    char reason[160];
};

/* Index of the last base <= v, or (size_t)-1 if v is below the first. */
static size_t find_base(const uint64_t *bases, size_t n, uint64_t v)
{
    return sort_upper_bound_u64(bases, n, v) - 1;
}

static int push_base(pb_reader *r, uint64_t base)
{
    if (grow_reserve(&r->bases, &r->segcap, r->nseg + 1, sizeof *r->bases) < 0)
        return PB_ENOMEM;
    r->bases[r->nseg++] = base;
    return 0;
}

/* A listing of the partition directory in progress: the old segment list
 * is dropped at the first entry, so a directory that cannot be listed at
 * all leaves it as it was. */
typedef struct listing {
    pb_reader *r;
    bool started;
} listing;

static int collect_base(void *arg, const char *name)
{
    listing *l = arg;
    if (!l->started) {
        l->started = true;
        l->r->nseg = 0;
    }
    uint64_t base;
    return segment_parse_name(name, ".log", &base) ? push_base(l->r, base) : 0;
}

/* Re-reads the directory: picks up segments created by rotation and drops
 * ones deleted by retention, keeping the open segment's place in the list. */
static int refresh_segments(pb_reader *r)
{
    bool have_cur = r->fd >= 0;
    uint64_t cur_base = have_cur ? r->bases[r->cur] : 0;
    listing l = {.r = r};
    int rc = r->io->list(r->io->ctx, r->dir, collect_base, &l);
    if (rc < 0)
        return rc == -ENOENT && !l.started ? PB_ENOTFOUND : rc;
    if (!l.started)
        r->nseg = 0; /* an empty directory */
    sort_u64(r->bases, r->nseg);
    r->cur_gone = false;
    if (have_cur) {
        size_t i = find_base(r->bases, r->nseg, cur_base);
        r->cur_gone = i == (size_t)-1 || r->bases[i] != cur_base;
        if (r->cur_gone) {
            /* Deleted under us; our descriptor still reads it. */
            if ((rc = push_base(r, cur_base)) < 0)
                return rc;
            sort_u64(r->bases, r->nseg);
            i = find_base(r->bases, r->nseg, cur_base);
        }
        r->cur = i;
    }
    return 0;
}

static void close_segment(pb_reader *r)
{
    /* The window first: a block being decompressed ahead still reads fd. */
    segment_buf_attach(&r->buf, -1);
    if (r->fd >= 0)
        (void)r->io->close(r->io->ctx, r->fd); /* read-only: a close error loses nothing */
    r->fd = -1;
}

static int open_segment(pb_reader *r, size_t i)
{
    close_segment(r);
    r->cur = i;
    int rc = segment_path(r->path, sizeof r->path, r->dir, r->bases[i], ".log");
    if (rc < 0)
        return rc;
    int fd = r->io->open(r->io->ctx, r->path);
    if (fd < 0)
        return fd;
    r->fd = fd;
    r->cur_gone = false;
    r->zero_pos = UINT64_MAX;
    segment_buf_attach(&r->buf, r->fd);
    return 0;
}

static bool is_last(const pb_reader *r)
{
    return r->cur + 1 >= r->nseg;
}

/* Records a problem; returns PB_ECORRUPT, or 0 when the lost offsets are all
 * below an offset seek target (the caller did not ask for them). */
static int report_code(pb_reader *r, int code, uint64_t position, uint64_t first, uint64_t last,
                       const char *reason)
{
    /* last + 1 == first: an empty range, at first. last == UINT64_MAX means
     * "to the end" (never empty: last + 1 would wrap to 0 and, with first 0,
     * pass for an empty range below any seek target, a report swallowed and
     * the reader looping on the same damaged block). */
    uint64_t upto = last != UINT64_MAX && last + 1 == first ? first : last;
    if (r->seek == SEEK_OFFSET && upto < r->seek_offset)
        return 0;
    snprintf(r->problem_file, sizeof r->problem_file, "%s", r->path);
    snprintf(r->reason, sizeof r->reason, "%s", reason);
    r->problem.file = r->problem_file;
    r->problem.position = position;
    r->problem.first_offset = first;
    r->problem.last_offset = last;
    r->problem.reason = r->reason;
    return code;
}

static int report(pb_reader *r, uint64_t position, uint64_t first, uint64_t last,
                  const char *reason)
{
    return report_code(r, PB_ECORRUPT, position, first, last, reason);
}

/* Most segments a reader skips over in one go because retention removed
 * them between its listing and its open (each retry lists again). */
#define REMOVED_RETRIES 64

/* Opens segment i; if retention removed it since the listing, lists the
 * directory again and opens the oldest segment above it instead (*skipped
 * set: the offsets between were removed). Removal goes oldest first and
 * never takes the active segment, so a newer one is always there. */
static int open_segment_or_next(pb_reader *r, size_t i, bool *skipped)
{
    *skipped = false;
    for (int tries = 0;; tries++) {
        uint64_t want = r->bases[i];
        int rc = open_segment(r, i);
        if (rc != -ENOENT || tries == REMOVED_RETRIES)
            return rc;
        if ((rc = refresh_segments(r)) < 0)
            return rc;
        i = sort_upper_bound_u64(r->bases, r->nseg, want);
        if (i >= r->nseg)
            return PB_ENOTFOUND; /* the directory was emptied: not retention */
        *skipped = true;
    }
}

/* The rest of segment cur, from `position`, is unreadable: the offsets up to
 * the next segment's base are lost. Segments that overlap (a next base at or
 * below the expected offset: damaged or copied-in files) lose no offset, and
 * expected never moves back, so no offset is delivered twice. */
static int report_rest_of_segment(pb_reader *r, uint64_t position, const char *reason)
{
    uint64_t next = r->bases[r->cur + 1];
    uint64_t first = r->expected;
    int rc = report(r, position, first, next > first ? next - 1 : first - 1, reason);
    if (next > first)
        r->expected = next;
    return rc;
}

/* Moves on to segment cur+1 after the end of the current one. A base above
 * the expected offset means offsets are missing between the two files. */
static int next_segment(pb_reader *r)
{
    uint64_t end_pos = r->pos;
    uint64_t base = r->bases[r->cur + 1];
    int rc = 0;
    /* Retention removes oldest first: if the segment just read is gone from
     * the directory, so is everything between it and the next one left. */
    if (r->started && base > r->expected)
        rc = r->cur_gone ? report_code(r, PB_EREMOVED, end_pos, r->expected, base - 1,
                                       "offsets removed by retention")
                         : report(r, end_pos, r->expected, base - 1,
                                  "offsets missing between segment files");
    bool skipped;
    int orc = open_segment_or_next(r, r->cur + 1, &skipped);
    if (orc < 0)
        return orc;
    if (skipped) {
        base = r->bases[r->cur];
        if (r->started && base > r->expected && rc == 0)
            rc = report_code(r, PB_EREMOVED, 0, r->expected, base - 1,
                             "offsets removed by retention");
    }
    r->pos = 0;
    if (!r->started || base > r->expected) {
        r->expected = base;
        r->started = true;
    }
    return rc;
}

/* Positions at the first record of the open segment (checks the header). */
static int enter_segment(pb_reader *r, bool *wait)
{
    const uint8_t *p;
    size_t avail;
    *wait = false;
    int rc = segment_buf_get(&r->buf, 0, PB_FILE_HEADER_SIZE, &p, &avail);
    if (rc < 0)
        return rc;
    uint64_t base = r->bases[r->cur];
    if (!r->started) {
        r->expected = base;
        r->started = true;
    }
    if (avail < PB_FILE_HEADER_SIZE) {
        if (is_last(r)) {
            /* Being created right now: come back later. */
            segment_buf_invalidate(&r->buf);
            *wait = true;
            return 0;
        }
        r->pos = avail;
        rc = report_rest_of_segment(r, 0, "segment header cut short");
        int nrc = next_segment(r);
        if (nrc < 0 && nrc != PB_ECORRUPT)
            return nrc;
        return rc;
    }
    /* A damaged header loses no record by itself (records carry their own
     * offsets and CRCs), so reading goes on from byte 40 either way. */
    r->pos = PB_FILE_HEADER_SIZE;
    return 0;
}

/* Uses the segment's .idx to find the last entry whose key is below the
 * target (offset <= target, or time < target), verifies that the record is
 * really there, and starts reading from it; otherwise from the segment's
 * first record. */
static void seek_in_segment(pb_reader *r, bool by_time, uint64_t offset, int64_t time_ns)
{
    char ipath[PATH_MAX];
    uint64_t base = r->bases[r->cur];
    r->pos = PB_FILE_HEADER_SIZE;
    r->expected = base;
    r->started = true;
    if (segment_path(ipath, sizeof ipath, r->dir, base, ".idx") < 0)
        return;
    const segment_io *io = r->io;
    int ifd = io->open(io->ctx, ipath);
    if (ifd < 0)
        return; /* no index: scan the segment */
    uint64_t isize;
    uint8_t hdr[PB_FILE_HEADER_SIZE];
    uint64_t idx_base;
    segment_index_entry best = {0};
    bool found = false;
    if (io->size(io->ctx, ifd, &isize) < 0 || isize < PB_FILE_HEADER_SIZE ||
        io->pread(io->ctx, ifd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr ||
        file_header_decode(hdr, PB_IDX_MAGIC, &idx_base, NULL) < 0 || idx_base != base)
        goto out;
    uint64_t lo = 0, hi = (isize - PB_FILE_HEADER_SIZE) / PB_INDEX_ENTRY_SIZE;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        uint8_t raw[PB_INDEX_ENTRY_SIZE];
        segment_index_entry e;
        off_t at = (off_t)(PB_FILE_HEADER_SIZE + mid * PB_INDEX_ENTRY_SIZE);
        if (io->pread(io->ctx, ifd, raw, sizeof raw, at) != (ssize_t)sizeof raw)
            break;
        segment_index_entry_decode(raw, &e);
        bool below = by_time ? e.time_ns < time_ns : e.offset <= offset;
        if (below) {
            best = e;
            found = true;
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (found && best.position >= PB_FILE_HEADER_SIZE && best.offset >= base) {
        /* The index is an unsynced cache: trust an entry only if the record
         * it names is there, whole, with that offset and time. */
        pb_record rec;
        uint32_t size;
        int rc = segment_read_record(&r->buf, best.position, PB_RECORD_MAX_EVENT, &rec, &size);
        if (rc == 0 && rec.offset == best.offset && rec.time_ns == best.time_ns) {
            r->pos = best.position;
            r->expected = best.offset;
        }
    }
out:
    (void)io->close(io->ctx, ifd); /* read-only */
}

/* Receive time of a segment's first record, for the binary search over
 * segments. Returns false if it cannot be read and verified. */
static bool first_time(pb_reader *r, size_t i, int64_t *t)
{
    pb_record rec;
    uint32_t size;
    if (open_segment(r, i) < 0)
        return false;
    if (segment_read_record(&r->buf, PB_FILE_HEADER_SIZE, PB_RECORD_MAX_EVENT, &rec, &size) < 0)
        return false;
    *t = rec.time_ns;
    return true;
}

#define SEEK_READAHEAD 4096 /* probes read a record or two, not a window */

static int seek_common(pb_reader *r, int kind, uint64_t offset, int64_t time_ns)
{
    r->below_pending = false;
    close_segment(r);
    r->started = false;
    r->cur = 0;
    r->pos = 0;
    r->seek = kind;
    r->seek_offset = offset;
    r->seek_time = time_ns;
    segment_buf_set_readahead(&r->buf, SEEK_READAHEAD);
    int rc = refresh_segments(r);
    if (rc < 0 || r->nseg == 0) {
        segment_buf_set_readahead(&r->buf, r->buf.cap);
        return rc;
    }
    size_t i;
    if (kind == SEEK_OFFSET) {
        i = find_base(r->bases, r->nseg, offset);
        if (i == (size_t)-1)
            i = 0;
    } else {
        /* Last segment whose first record is older than the target. A
         * segment whose first record cannot be read counts as "not older",
         * which only moves the start earlier: scanning from too early is
         * slower, never wrong. */
        size_t lo = 0, hi = r->nseg;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            int64_t t;
            if (first_time(r, mid, &t) && t < time_ns)
                lo = mid + 1;
            else
                hi = mid;
        }
        i = lo > 0 ? lo - 1 : 0;
    }
    bool skipped;
    if ((rc = open_segment_or_next(r, i, &skipped)) == 0)
        seek_in_segment(r, kind == SEEK_TIME, offset, time_ns);
    r->below_pending = rc == 0 && kind == SEEK_OFFSET && r->cur == 0 && offset < r->bases[0];
    r->below_first = offset;
    segment_buf_set_readahead(&r->buf, r->buf.cap);
    return rc;
}

int pb_reader_seek_offset(pb_reader *r, uint64_t offset)
{
    return seek_common(r, SEEK_OFFSET, offset, 0);
}

int pb_reader_seek_time(pb_reader *r, int64_t time_ns)
{
    return seek_common(r, SEEK_TIME, 0, time_ns);
}

void pb_reader_set_end(pb_reader *r, uint64_t end_offset)
{
    r->end_offset = end_offset;
}

/* Past the seek target yet? Once reached, the filter is dropped. */
static bool wanted(pb_reader *r, const pb_record *rec)
{
    if (r->seek == SEEK_OFFSET && rec->offset < r->seek_offset)
        return false;
    if (r->seek == SEEK_TIME && rec->time_ns < r->seek_time)
        return false;
    r->seek = SEEK_NONE;
    return true;
}

/* The current file ends (cleanly or not) at r->pos. Either there is a newer
 * segment to go on with, or we wait for more data. *wait set = PB_EEOF. */
static int at_end_of_file(pb_reader *r, bool clean, bool *wait)
{
    *wait = false;
    if (is_last(r)) {
        int rc = refresh_segments(r);
        if (rc < 0)
            return rc;
        if (is_last(r)) {
            *wait = true;
            return 0;
        }
        /* A newer segment appeared after we read this one's end. The writer
         * finishes a segment before it creates the next, so read the end
         * again: it may have grown in between. */
        segment_buf_invalidate(&r->buf);
        return 0;
    }
    int rc = 0;
    if (!clean) {
        /* A newer segment exists, so the writer has left this one for good:
         * whatever does not verify here never will. */
        rc = report_rest_of_segment(r, r->pos, "record cut short at end of segment");
    }
    int nrc = next_segment(r);
    if (nrc < 0 && nrc != PB_ECORRUPT)
        return nrc;
    return rc < 0 ? rc : nrc;
}

/* A record at r->pos failed its checks: find the next one that verifies. */
static int resync(pb_reader *r, bool *wait)
{
    pb_record rec;
    uint32_t size;
    uint64_t found;
    uint64_t max = is_last(r) ? UINT64_MAX : r->bases[r->cur + 1] - 1;
    *wait = false;
    int rc =
        segment_resync(&r->buf, r->pos, r->expected, max, PB_RECORD_MAX_EVENT, &found, &rec, &size);
    if (rc == PB_EEOF) {
        /* Nothing valid after the damage: in the newest segment that may be
         * a write in progress; otherwise the rest of the file is lost. */
        return at_end_of_file(r, false, wait);
    }
    if (rc < 0)
        return rc;
    /* With a later record there, a record at r->pos that verifies now was
     * a write in progress when first read (a recycled segment's zeros under
     * its body), no loss; an offset going backwards is still damage. */
    if (is_last(r) && segment_verifies_again(&r->buf, r->pos, false, r->expected))
        return 0;
    uint64_t bad_pos = r->pos, first = r->expected;
    r->zero_pos = UINT64_MAX; /* damage: what follows is checked afresh */
    r->pos = found;
    r->expected = rec.offset;
    if (r->seek == SEEK_TIME && rec.time_ns < r->seek_time)
        return 0; /* the lost records are older than the target */
    char reason[96];
    snprintf(reason, sizeof reason, "record failed its checks (CRC or length); %llu bytes skipped",
             (unsigned long long)(found - bad_pos));
    return report(r, bad_pos, first, rec.offset - 1, reason);
}

/* The record at r->pos failed its checks. A zero tail (a zero record header
 * with nothing but zeros after it: the unused end of a recycled segment,
 * FORMAT.md Part B "The end of a segment") is where the records end, as if
 * the file ended there: wait in the newest segment; in a rotated one go on
 * to the next, which reports nothing when its base follows on. Anything
 * else is damage (resync). The whole tail is read once per open segment:
 * the writer writes in file order, so while the header at a position at or
 * after the checked one is zero, nothing after it was written since (a
 * hole a power loss left is there before any reader: the first check finds
 * what follows it). */
static int bad_record(pb_reader *r, bool *wait)
{
    *wait = false;
    int rc = segment_bad_record(&r->buf, r->pos, is_last(r), &r->zero_pos);
    if (rc == SEGMENT_BAD_END)
        return at_end_of_file(r, true, wait);
    if (rc == SEGMENT_BAD_AGAIN)
        return 0; /* written meanwhile: read it */
    return rc < 0 ? rc : resync(r, wait);
}

/* A read hit a compressed block that failed its checks (zseg.h): report
 * the file, the block's plain byte range and the offsets that start in it,
 * and go on at the next block (a record boundary). Never skipped silently. */
static int bad_block(pb_reader *r)
{
    uint64_t pos, end, first, last;
    const char *why;
    if (!segment_buf_bad_block(&r->buf, &pos, &end, &first, &last, &why))
        return ZSEG_EBADBLOCK;
    char reason[150];
    snprintf(reason, sizeof reason, "%.90s (plain bytes %llu..%llu of the segment)", why,
             (unsigned long long)pos, (unsigned long long)end);
    if (last == UINT64_MAX) {
        /* Header or index damaged: nothing in the file can be read. */
        if (is_last(r))
            return report_code(r, PB_EDATALOSS, pos, r->expected, UINT64_MAX, reason);
        int rc = report_rest_of_segment(r, pos, reason);
        int nrc = next_segment(r);
        return nrc < 0 && nrc != PB_ECORRUPT ? nrc : rc;
    }
    /* Offsets below r->expected were returned or reported already: the
     * loss starts at r->expected (the index's first_offset may be higher:
     * those between were in this block too, or missing before it), and is
     * empty (last + 1 == first) if the entry names only offsets passed
     * already (the records before it did not match the index). */
    r->pos = end;
    uint64_t lost_first = r->expected;
    if (last < lost_first)
        last = lost_first - 1;
    else
        r->expected = last + 1;
    return report(r, pos, lost_first, last, reason);
}

int pb_reader_next(pb_reader *r, pb_record *rec)
{
    if (r->below_pending) {
        /* A seek below the first offset still stored: say so once, then
         * go on from there. */
        r->below_pending = false;
        int rc = report_code(r, PB_EREMOVED, 0, r->below_first, r->bases[0] - 1,
                             "offsets removed by retention (below the first segment)");
        if (rc < 0)
            return rc;
    }
    for (;;) {
        bool wait = false;
        int rc;
        if (r->started && r->expected >= r->end_offset)
            return PB_EEOF;
        if (r->fd < 0) {
            /* Not positioned yet (or waiting for a header): segment cur. */
            if (r->nseg == 0 || r->cur >= r->nseg) {
                if ((rc = refresh_segments(r)) < 0)
                    return rc;
                if (r->nseg == 0)
                    return PB_EEOF;
                if (r->cur >= r->nseg)
                    r->cur = r->nseg - 1;
            }
            bool skipped;
            uint64_t from = r->expected;
            if ((rc = open_segment_or_next(r, r->cur, &skipped)) < 0)
                return rc;
            r->pos = 0;
            if (skipped && r->started && r->bases[r->cur] > from) {
                r->expected = r->bases[r->cur];
                rc = report_code(r, PB_EREMOVED, 0, from, r->expected - 1,
                                 "offsets removed by retention");
                if (rc < 0)
                    return rc;
            }
        }
        if (r->pos == 0) {
            rc = enter_segment(r, &wait);
            if (wait) {
                close_segment(r);
                return PB_EEOF;
            }
            if (rc == ZSEG_EBADBLOCK && (rc = bad_block(r)) == 0)
                continue;
            if (rc < 0)
                return rc;
            continue;
        }
        uint32_t size;
        rc = segment_read_record(&r->buf, r->pos, PB_RECORD_MAX_EVENT, rec, &size);
        if (rc == 0) {
            if (rec->offset < r->expected) {
                rc = resync(r, &wait);
            } else if (rec->offset > r->expected) {
                /* A valid record, but offsets before it are missing. */
                rc = report(r, r->pos, r->expected, rec->offset - 1, "offsets missing in segment");
                r->expected = rec->offset;
            } else {
                if (rec->offset >= r->end_offset)
                    return PB_EEOF;
                r->pos += size;
                r->expected = rec->offset + 1;
                if (wanted(r, rec))
                    return 0;
                continue;
            }
        } else if (rc == PB_EINCOMPLETE) {
            const uint8_t *p;
            size_t avail;
            rc = segment_buf_get(&r->buf, r->pos, 1, &p, &avail);
            /* Bytes that do not make a whole record: the end of a record
             * still being written, or damage (a bad length can make a record
             * seem to run past the end). resync tells them apart. */
            if (rc == 0)
                rc = avail == 0 ? at_end_of_file(r, true, &wait) : resync(r, &wait);
            else if (rc != ZSEG_EBADBLOCK)
                return rc;
        } else if (rc == PB_ECORRUPT) {
            rc = bad_record(r, &wait);
        } else if (rc != ZSEG_EBADBLOCK) {
            return rc;
        }
        if (rc == ZSEG_EBADBLOCK)
            rc = bad_block(r);
        if (wait)
            return PB_EEOF;
        if (rc < 0)
            return rc;
    }
}

const struct pb_reader_problem *pb_reader_problem(const pb_reader *r)
{
    return &r->problem;
}

int pb_reader_open(pb_reader **out, const char *partition_dir)
{
    return pb_reader_open_io(out, partition_dir, segment_io_posix());
}

int pb_reader_open_io(pb_reader **out, const char *partition_dir, const segment_io *io)
{
    *out = NULL;
    pb_reader *r = calloc(1, sizeof *r);
    if (!r)
        return PB_ENOMEM;
    r->io = io;
    r->fd = -1;
    r->end_offset = UINT64_MAX;
    r->seek = SEEK_NONE;
    r->problem.file = r->problem_file;
    r->problem.reason = r->reason;
    int rc = PB_EINVAL;
    if (snprintf(r->dir, sizeof r->dir, "%s", partition_dir) >= (int)sizeof r->dir)
        goto fail;
    if ((rc = segment_buf_init(&r->buf, io->pread, io->ctx)) < 0)
        goto fail;
    segment_buf_set_ahead(&r->buf, io->ahead);
    if ((rc = refresh_segments(r)) < 0)
        goto fail;
    *out = r;
    return 0;
fail:
    pb_reader_close(r);
    return rc;
}

void pb_reader_close(pb_reader *r)
{
    if (!r)
        return;
    close_segment(r);
    segment_buf_free(&r->buf);
    free(r->bases);
    free(r);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Whether directory `dirfd`/`name` holds a file named like a segment. */
static bool holds_segments(int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return false;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return false;
    }
    bool yes = false;
    struct dirent *de;
    uint64_t base;
    while (!yes && (de = readdir(d)) != NULL)
        yes = segment_parse_name(de->d_name, ".log", &base);
    (void)closedir(d); /* read-only */
    return yes;
}

typedef struct name_list {
    char **v;
    size_t n, cap;
} name_list;

static int name_push(name_list *l, const char *name)
{
    if (grow_reserve(&l->v, &l->cap, l->n + 1, sizeof *l->v) < 0)
        return PB_ENOMEM;
    if ((l->v[l->n] = strdup(name)) == NULL)
        return PB_ENOMEM;
    l->n++;
    return 0;
}

static void name_sort(name_list *l)
{
    if (l->n > 1)
        qsort(l->v, l->n, sizeof *l->v, cmp_str);
}

int partition_dirs_scan(const char *data_dir, char ***names, size_t *count, char ***skipped,
                        size_t *nskipped)
{
    *names = NULL;
    *count = 0;
    if (skipped) {
        *skipped = NULL;
        *nskipped = 0;
    }
    DIR *d = opendir(data_dir);
    if (!d)
        return errno == ENOENT ? PB_ENOTFOUND : -errno;
    name_list parts = {0}, others = {0};
    int rc = 0;
    struct dirent *de;
    for (;;) {
        errno = 0;
        if ((de = readdir(d)) == NULL) {
            rc = errno ? -errno : 0;
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, 0) < 0 || !S_ISDIR(st.st_mode))
            continue;
        if (partname_valid(de->d_name, strlen(de->d_name)))
            rc = name_push(&parts, de->d_name);
        else if (skipped && holds_segments(dirfd(d), de->d_name))
            rc = name_push(&others, de->d_name);
        if (rc < 0)
            break;
    }
    (void)closedir(d); /* read-only */
    if (rc < 0) {
        pb_partition_list_free(parts.v, parts.n);
        pb_partition_list_free(others.v, others.n);
        return rc;
    }
    name_sort(&parts);
    *names = parts.v;
    *count = parts.n;
    if (skipped) {
        name_sort(&others);
        *skipped = others.v;
        *nskipped = others.n;
    }
    return 0;
}

int pb_partition_list(const char *data_dir, char ***names, size_t *count)
{
    return partition_dirs_scan(data_dir, names, count, NULL, NULL);
}

void pb_partition_list_free(char **names, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free(names[i]);
    free(names);
}
