/*
 * recovery - opening a partition's segment log: log_open lists the segment
 * files, checks the rotated ones (header, index), recovers the newest one
 * (torn tail truncated durably, index loaded or rebuilt) and leaves the log
 * ready to append (see log.h; the writing half is log.c, the shared state
 * log_internal.h).
 *
 * Threads: the partition's writer thread (or whoever opens the log, before
 * the writer starts). Every file operation goes through the fileio table,
 * so the power-loss simulation covers recovery too.
 *
 * What is cut and what is kept: bytes after the last whole record of the
 * NEWEST segment, with nothing valid after them, were never acked (a write
 * the crash cut short) and are truncated; damage followed by valid records
 * anywhere is reported and kept, since those records may have been acked.
 */
#include "log_internal.h"

#include "grow.h"
#include "pb_errors.h"
#include "record.h"
#include "segment.h"
#include "sort.h"
#include "zseg.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* Where a scan of a segment ended. */
typedef struct scan_state {
    uint64_t pos;      /* after the last whole record (or where scanning began) */
    uint64_t expected; /* offset after the last whole record */
    int64_t first_time, last_time;
    bool any;  /* at least one record seen */
    bool torn; /* bytes after pos that hold no valid record */
    bool zero_tail; /* ... or only zeros: a recycled segment's unused end (Part B) */
    uint64_t file_size;
} scan_state;

/* Scans records from st->pos to the end of the file. Damage followed by a
 * valid record is reported and stepped over; damage with nothing valid after
 * it ends the scan with st->torn set. When idx_fd >= 0, index entries are
 * appended for the records scanned (the caller has cut the index back to the
 * last entry it trusts, st->pos). */
static int scan_segment(pb_log *log, segment_buf *b, const char *path, scan_state *st, bool index,
                        bool index_first)
{
    pb_record rec;
    uint32_t size;
    uint64_t last_index = index_first ? 0 : st->pos;
    for (;;) {
        int rc = segment_read_record(b, st->pos, PB_RECORD_MAX_EVENT, &rec, &size);
        if (rc == 0 && rec.offset == st->expected) {
            if (index && log->idx_fd >= 0 &&
                (last_index == 0 || st->pos - last_index >= log->opt.index_interval_bytes)) {
                uint8_t raw[PB_INDEX_ENTRY_SIZE];
                segment_index_entry ie = {rec.offset, st->pos, rec.time_ns};
                segment_index_entry_encode(raw, &ie);
                log_write_index(log, raw, 1);
                last_index = st->pos;
            }
            if (!st->any)
                st->first_time = rec.time_ns;
            st->any = true;
            st->last_time = rec.time_ns;
            st->pos += size;
            st->expected = rec.offset + 1;
            continue;
        }
        if (rc < 0 && rc != PB_ECORRUPT && rc != PB_EINCOMPLETE)
            return rc;
        if (st->pos >= st->file_size)
            return 0; /* clean end */
        /* A recycled segment's zero tail (FORMAT.md Part B, "The end of a
         * segment"): the records end here, as at the end of the file. */
        if ((rc = segment_zero_tail(b, st->pos)) < 0)
            return rc;
        if (rc == 1) {
            st->zero_tail = true;
            return 0;
        }
        uint64_t found;
        rc = segment_resync(b, st->pos, st->expected, UINT64_MAX, PB_RECORD_MAX_EVENT, &found, &rec,
                            &size);
        if (rc == PB_EEOF) {
            st->torn = true;
            return 0;
        }
        if (rc < 0)
            return rc;
        /* Valid records follow, so this is not a torn tail: they may have
         * been acked. Keep everything; say what is unreadable. */
        log_say(log, LOG_ERROR,
                "segment %s: damaged data at byte %" PRIu64 " (%" PRIu64 " bytes): offsets %" PRIu64
                "..%" PRIu64 " lost; kept, not truncated",
                path, st->pos, found - st->pos, st->expected, rec.offset - 1);
        st->pos = found;
        st->expected = rec.offset;
        last_index = 0; /* index the record after the gap */
    }
}

/* Reads and checks the active segment's index; keeps the longest prefix of
 * entries that is consistent and whose last entry names a real record, and
 * cuts the file back to it. Returns the number of entries kept (0: rebuild
 * from the first record) and the last kept entry. */
static size_t load_index(pb_log *log, segment_buf *b, uint64_t log_size, segment_index_entry *last)
{
    uint8_t hdr[PB_FILE_HEADER_SIZE];
    uint64_t ibase;
    off_t isize;
    size_t kept = 0;
    const char *why = NULL;
    uint8_t *raw = NULL;
    int fd = log->io->open(log->io, log->idx_path, O_RDWR, 0);
    if (fd < 0) {
        why = "missing";
        goto rebuild;
    }
    log->idx_fd = fd;
    if (log->io->fsize(log->io, fd, &isize) < 0 || isize < (off_t)PB_FILE_HEADER_SIZE ||
        log->io->pread(log->io, fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr ||
        file_header_decode(hdr, PB_IDX_MAGIC, &ibase, NULL) < 0 || ibase != log->base) {
        why = "bad header";
        goto rebuild;
    }
    size_t n = ((size_t)isize - PB_FILE_HEADER_SIZE) / PB_INDEX_ENTRY_SIZE;
    if (n > 0 && (raw = malloc(n * PB_INDEX_ENTRY_SIZE)) == NULL) {
        why = "out of memory";
        goto rebuild;
    }
    if (n > 0 &&
        segment_pread_full(fileio_segment_pread, (void *)log->io, fd, raw, n * PB_INDEX_ENTRY_SIZE,
                           PB_FILE_HEADER_SIZE) != (ssize_t)(n * PB_INDEX_ENTRY_SIZE)) {
        why = "unreadable";
        goto rebuild;
    }
    /* Longest consistent prefix: starts at the first record, strictly
     * increasing offsets and positions, times not decreasing, inside the log. */
    segment_index_entry prev = {0}, e;
    for (kept = 0; kept < n; kept++) {
        segment_index_entry_decode(raw + kept * PB_INDEX_ENTRY_SIZE, &e);
        bool ok = kept == 0 ? e.offset == log->base && e.position == PB_FILE_HEADER_SIZE
                            : e.offset > prev.offset && e.position > prev.position &&
                                  e.time_ns >= prev.time_ns;
        if (!ok || e.position + PB_RECORD_HEADER_SIZE > log_size)
            break;
        prev = e;
    }
    /* The last kept entry must name a whole record with that offset and time;
     * step back over ones that do not (they point into a torn tail). */
    while (kept > 0) {
        pb_record rec;
        uint32_t size;
        segment_index_entry_decode(raw + (kept - 1) * PB_INDEX_ENTRY_SIZE, last);
        if (segment_read_record(b, last->position, PB_RECORD_MAX_EVENT, &rec, &size) == 0 &&
            rec.offset == last->offset && rec.time_ns == last->time_ns)
            break;
        kept--;
    }
    if (kept == 0) {
        why = "stale";
        goto rebuild;
    }
    if (kept < n || (uint64_t)isize != PB_FILE_HEADER_SIZE + kept * PB_INDEX_ENTRY_SIZE) {
        log_say(log, LOG_INFO, "index %s: %zu of %zu entries valid; rebuilding the rest",
                log->idx_path, kept, n);
        int rc = log->io->ftruncate(log->io, fd,
                                    (off_t)(PB_FILE_HEADER_SIZE + kept * PB_INDEX_ENTRY_SIZE));
        if (rc < 0) {
            why = "truncate failed";
            goto rebuild;
        }
    }
    log->idx_size = PB_FILE_HEADER_SIZE + kept * PB_INDEX_ENTRY_SIZE;
    free(raw);
    return kept;
rebuild:
    free(raw);
    log_close_index(log);
    log_say(log, LOG_INFO, "index %s: %s; rebuilding from %s", log->idx_path, why, log->log_path);
    log_create_index(log, log_now_ns(log));
    return 0;
}

static int set_paths(pb_log *log, uint64_t base)
{
    log->base = base;
    if (segment_path(log->log_path, log->path_cap, log->dir, base, ".log") < 0 ||
        segment_path(log->idx_path, log->path_cap, log->dir, base, ".idx") < 0)
        return PB_EINVAL;
    return 0;
}

/* An older (rotated) segment's index only gets a cheap check at open (whole
 * header, whole entries); readers verify every entry they use. A missing or
 * malformed one is rebuilt by scanning the segment. */
static int check_old_index(pb_log *log, segment_buf *b, uint64_t base)
{
    uint8_t hdr[PB_FILE_HEADER_SIZE];
    uint64_t ibase;
    off_t isize, lsize;
    int rc = set_paths(log, base);
    if (rc < 0)
        return rc;
    int fd = log->io->open(log->io, log->idx_path, O_RDONLY, 0);
    if (fd >= 0) {
        bool ok = log->io->fsize(log->io, fd, &isize) == 0 &&
                  isize >= (off_t)(PB_FILE_HEADER_SIZE + PB_INDEX_ENTRY_SIZE) &&
                  ((uint64_t)isize - PB_FILE_HEADER_SIZE) % PB_INDEX_ENTRY_SIZE == 0 &&
                  log->io->pread(log->io, fd, hdr, sizeof hdr, 0) == (ssize_t)sizeof hdr &&
                  file_header_decode(hdr, PB_IDX_MAGIC, &ibase, NULL) == 0 && ibase == base;
        if ((rc = log->io->close(log->io, fd)) < 0)
            return rc;
        if (ok)
            return 0;
    }
    int lfd = log->io->open(log->io, log->log_path, O_RDONLY, 0);
    if (lfd < 0)
        return lfd;
    if ((rc = log->io->fsize(log->io, lfd, &lsize)) < 0)
        goto out;
    log_say(log, LOG_INFO, "index %s: missing or malformed; rebuilding from %s", log->idx_path,
            log->log_path);
    log_create_index(log, log_now_ns(log));
    segment_buf_attach(b, lfd);
    scan_state st = {.pos = PB_FILE_HEADER_SIZE, .expected = base, .file_size = (uint64_t)lsize};
    rc = scan_segment(log, b, log->log_path, &st, true, true);
    if (rc == 0 && st.torn)
        log_say(log, LOG_ERROR,
                "segment %s: %" PRIu64 " unreadable bytes at byte %" PRIu64
                " at the end of a rotated segment; kept",
                log->log_path, st.file_size - st.pos, st.pos);
out:
    log_close_index(log);
    segment_buf_attach(b, -1);
    int c = log->io->close(log->io, lfd);
    return rc < 0 ? rc : c;
}

/* Reports a rotated segment whose header is damaged. Nothing else would:
 * readers go on from byte 40 (records carry their own offsets and CRCs, so
 * such damage loses no record) and the file is complete, so it is kept. */
static int check_old_header(pb_log *log, uint64_t base)
{
    uint8_t hdr[PB_FILE_HEADER_SIZE];
    char path[PATH_MAX];
    uint64_t hbase = base;
    int rc = segment_path(path, sizeof path, log->dir, base, ".log");
    if (rc < 0)
        return rc;
    int fd = log->io->open(log->io, path, O_RDONLY, 0);
    if (fd < 0)
        return fd;
    ssize_t n = log->io->pread(log->io, fd, hdr, sizeof hdr, 0);
    int c = log->io->close(log->io, fd);
    if (n < 0)
        return (int)n;
    if (c < 0)
        return c;
    rc =
        n < (ssize_t)sizeof hdr ? PB_ECORRUPT : file_header_decode(hdr, PB_LOG_MAGIC, &hbase, NULL);
    if (rc < 0 || hbase != base)
        log_say(log, LOG_ERROR,
                "segment %s: damaged header at byte 0 (%s); a rotated segment: kept, its records "
                "are read without it",
                path, rc < 0 ? pb_strerror(rc) : "base offset differs from the file name");
    return 0;
}

/* Offset and time after the last record of a rotated segment, for an empty
 * active segment: the next record's time must not go below it. */
static int tail_of(pb_log *log, segment_buf *b, uint64_t base, scan_state *st)
{
    char path[PATH_MAX];
    off_t lsize;
    int rc = segment_path(path, sizeof path, log->dir, base, ".log");
    if (rc < 0)
        return rc;
    int lfd = log->io->open(log->io, path, O_RDONLY, 0);
    if (lfd < 0)
        return lfd;
    uint64_t plain = 0;
    if ((rc = log->io->fsize(log->io, lfd, &lsize)) == 0 &&
        (rc = zseg_logical_size(fileio_segment_pread, (void *)log->io, lfd, (uint64_t)lsize,
                                &plain)) == 0) {
        /* A compressed segment (zseg.h) is scanned in plain positions. */
        segment_buf_attach(b, lfd);
        *st = (scan_state){.pos = PB_FILE_HEADER_SIZE, .expected = base, .file_size = plain};
        rc = scan_segment(log, b, path, st, false, false);
        segment_buf_attach(b, -1);
    }
    int c = log->io->close(log->io, lfd);
    return rc < 0 ? rc : c;
}

/* Replaces a newest segment whose header never became whole (the crash came
 * during its creation, before anything in it could be acked). */
static int recreate(pb_log *log, uint64_t base, const char *why)
{
    log_say(log, LOG_WARN, "segment %s: %s; no record in it; recreating it", log->log_path, why);
    int rc = log->io->unlink(log->io, log->log_path);
    if (rc < 0)
        return log_fail(log, rc, "unlink of", log->log_path, 0);
    rc = log->io->unlink(log->io, log->idx_path);
    if (rc < 0 && rc != -ENOENT)
        return log_fail(log, rc, "unlink of", log->idx_path, 0);
    log->next_offset = base;
    return log_create_segment(log, base);
}

/* Cuts a zero tail (st->pos to the end: zeros only) durably, so that the
 * file ends at its last record again: the writer appends at the end of the
 * file it recovered, and a rotated segment keeps the rule "records to the
 * end of the file". Either a recycled segment's unused end, or an unsynced
 * write a crash zero-filled: with synced acks (fsync = always) never an
 * acked one, so an INFO line; otherwise it may have been, so a WARN. */
static int cut_zero_tail(pb_log *log, int fd, const char *path, const scan_state *st)
{
    int rc = log->io->ftruncate(log->io, fd, (off_t)st->pos);
    if (rc < 0)
        return log_fail(log, rc, "truncate of", path, st->pos);
    if ((rc = log->io->fdatasync(log->io, fd)) < 0)
        return log_fail(log, rc, "fdatasync of", path, st->pos);
    log_say(log, log->opt.synced_acks ? LOG_INFO : LOG_WARN,
            "segment %s: zeros only after its last record at byte %" PRIu64 " (%" PRIu64
            " bytes: a recycled segment's unused end, or an unsynced write a crash lost): cut; "
            "next offset %" PRIu64,
            path, st->pos, st->file_size - st->pos, st->expected);
    return 0;
}

/* The newest rotated segment (the one before the active) may end in a zero
 * tail if it was recycled and a crash came between the rotation's cut and
 * its sync: the writer syncs that cut before the next segment exists, so
 * this is for files from elsewhere or a misbehaving disk. Cheap unless its
 * last 8 bytes are zero; then scanned and cut like the active one's. */
static int cut_rotated_zero_tail(pb_log *log, segment_buf *b, uint64_t base)
{
    char path[PATH_MAX];
    uint8_t last[8];
    off_t size;
    int rc = segment_path(path, sizeof path, log->dir, base, ".log");
    if (rc < 0)
        return rc;
    int fd = log->io->open(log->io, path, O_RDWR, 0);
    if (fd < 0)
        return fd;
    rc = log->io->fsize(log->io, fd, &size);
    if (rc == 0 && size >= (off_t)(PB_FILE_HEADER_SIZE + sizeof last) &&
        log->io->pread(log->io, fd, last, sizeof last, size - (off_t)sizeof last) ==
            (ssize_t)sizeof last &&
        memcmp(last, (const uint8_t[8]){0}, sizeof last) == 0) {
        scan_state st = {.pos = PB_FILE_HEADER_SIZE, .expected = base, .file_size = (uint64_t)size};
        segment_buf_attach(b, fd);
        rc = scan_segment(log, b, path, &st, false, false);
        segment_buf_attach(b, -1);
        if (rc == 0 && st.zero_tail)
            rc = cut_zero_tail(log, fd, path, &st);
    }
    int c = log->io->close(log->io, fd);
    return rc < 0 ? rc : c;
}

/* Recovers the newest segment: checks the header, loads or rebuilds the
 * index, scans from the last trusted index entry to the end, truncates a torn
 * tail durably, and sets the append position, next offset and last time. */
static int recover_active(pb_log *log, segment_buf *b, uint64_t base)
{
    uint8_t hdr[PB_FILE_HEADER_SIZE];
    off_t size;
    uint64_t hbase;
    int rc = set_paths(log, base);
    if (rc < 0)
        return rc;
    int fd = log->io->open(log->io, log->log_path, O_RDWR, 0);
    if (fd < 0)
        return log_fail(log, fd, "open of", log->log_path, 0);
    log->fd = fd;
    if ((rc = log->io->fsize(log->io, fd, &size)) < 0)
        return log_fail(log, rc, "size of", log->log_path, 0);
    segment_buf_attach(b, fd);
    if (size < (off_t)PB_FILE_HEADER_SIZE) {
        if ((rc = log_close_active(log)) < 0)
            return log_fail(log, rc, "close of", log->log_path, 0);
        return recreate(log, base, "header cut short");
    }
    ssize_t n = log->io->pread(log->io, fd, hdr, sizeof hdr, 0);
    if (n != (ssize_t)sizeof hdr)
        return log_fail(log, n < 0 ? (int)n : -EIO, "header read of", log->log_path, 0);
    rc = file_header_decode(hdr, PB_LOG_MAGIC, &hbase, NULL);
    if (rc < 0) {
        pb_record rec;
        uint32_t rsize;
        uint64_t found;
        int rr = segment_resync(b, PB_FILE_HEADER_SIZE, base, UINT64_MAX, PB_RECORD_MAX_EVENT,
                                &found, &rec, &rsize);
        if (rr != PB_EEOF) {
            log_say(log, LOG_ERROR,
                    "segment %s: bad header (%s) but records follow; not touching it",
                    log->log_path, pb_strerror(rc));
            return PB_EFORMAT;
        }
        if ((rc = log_close_active(log)) < 0)
            return log_fail(log, rc, "close of", log->log_path, 0);
        return recreate(log, base, "header damaged");
    }
    if (hbase != base) {
        log_say(log, LOG_ERROR,
                "segment %s: header says base offset %" PRIu64 ", name says %" PRIu64,
                log->log_path, hbase, base);
        return PB_EFORMAT;
    }

    segment_index_entry last;
    size_t kept = load_index(log, b, (uint64_t)size, &last);
    scan_state st = {.pos = kept ? last.position : PB_FILE_HEADER_SIZE,
                     .expected = kept ? last.offset : base,
                     .file_size = (uint64_t)size};
    if ((rc = scan_segment(log, b, log->log_path, &st, true, kept == 0)) < 0)
        return log_fail(log, rc, "recovery read of", log->log_path, st.pos);
    if (st.zero_tail && (rc = cut_zero_tail(log, fd, log->log_path, &st)) < 0)
        return rc;
    if (st.torn) {
        /* Nothing valid after st.pos: a write the crash cut short (or
         * damage at the very end), never acked. Drop it durably, or a later
         * append would be followed by these bytes in the file. */
        if ((rc = log->io->ftruncate(log->io, fd, (off_t)st.pos)) < 0)
            return log_fail(log, rc, "truncate of", log->log_path, st.pos);
        if ((rc = log->io->fdatasync(log->io, fd)) < 0)
            return log_fail(log, rc, "fdatasync of", log->log_path, st.pos);
        log_say(log, LOG_WARN,
                "segment %s: torn or corrupt tail at byte %" PRIu64 ": dropped %" PRIu64
                " bytes; next offset %" PRIu64,
                log->log_path, st.pos, st.file_size - st.pos, st.expected);
    }
    log->size = st.pos;
    log->next_offset = st.expected;
    log->has_records = st.any;
    log->last_index_pos = log->idx_size > PB_FILE_HEADER_SIZE ? st.pos : 0;
    if (st.any) {
        log->last_time = st.last_time;
        int64_t first = st.first_time;
        if (kept > 0) {
            pb_record rec;
            uint32_t rsize;
            if (segment_read_record(b, PB_FILE_HEADER_SIZE, PB_RECORD_MAX_EVENT, &rec, &rsize) == 0)
                first = rec.time_ns;
        }
        log->period = log_period_of(log, first);
    }
    /* Reading the last index entry back is simpler than tracking it through
     * the scan: the next entry is due index_interval bytes after it. */
    if (log->idx_fd >= 0 && log->idx_size > PB_FILE_HEADER_SIZE) {
        uint8_t raw[PB_INDEX_ENTRY_SIZE];
        segment_index_entry e;
        if (log->io->pread(log->io, log->idx_fd, raw, sizeof raw,
                           (off_t)(log->idx_size - PB_INDEX_ENTRY_SIZE)) == (ssize_t)sizeof raw) {
            segment_index_entry_decode(raw, &e);
            log->last_index_pos = e.position;
        }
    }
    return 0;
}

typedef struct base_list {
    uint64_t *v;
    size_t n, cap;
} base_list;

static int collect_base(void *arg, const char *name)
{
    base_list *l = arg;
    uint64_t base;
    if (!segment_parse_name(name, ".log", &base))
        return 0;
    if (grow_reserve(&l->v, &l->cap, l->n + 1, sizeof *l->v) < 0)
        return PB_ENOMEM;
    l->v[l->n++] = base;
    return 0;
}

/* Options with their defaults, the I/O table, and the directory's name
 * without trailing slashes. PB_EINVAL for an empty or too long name. */
static int set_up(pb_log *log, const char *dir, const log_options *opts)
{
    log->fd = log->idx_fd = log->dir_fd = log->dfd = -1;
    log->last_time = INT64_MIN;
    if (opts)
        log->opt = *opts;
    if (!log->opt.segment_bytes)
        log->opt.segment_bytes = DEFAULT_SEGMENT_BYTES;
    if (!log->opt.index_interval_bytes)
        log->opt.index_interval_bytes = DEFAULT_INDEX_INTERVAL;
    if (!log->opt.max_record_bytes || log->opt.max_record_bytes > PB_RECORD_MAX_EVENT)
        log->opt.max_record_bytes = PB_RECORD_MAX_EVENT;
    log->io = log->opt.io ? log->opt.io : fileio_posix();
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/')
        len--; /* "a/b/" and "a/b" are one directory; keeps messages tidy */
    if (len == 0 || len >= PATH_MAX)
        return PB_EINVAL;
    /* dir + "/" + 20 digits + ".log" + NUL, with room to spare. */
    log->path_cap = len + 32;
    log->dir = strndup(dir, len);
    log->log_path = calloc(1, log->path_cap);
    log->idx_path = calloc(1, log->path_cap);
    if (!log->dir || !log->log_path || !log->idx_path)
        return PB_ENOMEM;
    return 0;
}

/* Checks the rotated segments bases[0..n-1), recovers the newest one (or
 * creates segment 0 in an empty directory), and carries the previous
 * segment's last time over to an active segment without records. */
static int recover_segments(pb_log *log, segment_buf *b, const uint64_t *bases, size_t n)
{
    int rc;
    for (size_t i = 0; i + 1 < n; i++) {
        if ((rc = check_old_index(log, b, bases[i])) < 0)
            return log_fail(log, rc, "index check of segment", log->log_path, 0);
        if ((rc = check_old_header(log, bases[i])) < 0)
            return log_fail(log, rc, "header check of segment", log->log_path, 0);
    }
    if (n >= 2 && (rc = cut_rotated_zero_tail(log, b, bases[n - 2])) < 0)
        return log->failed ? rc : log_fail(log, rc, "zero-tail check of segment", log->dir, 0);
    rc = n == 0 ? log_create_segment(log, 0) : recover_active(log, b, bases[n - 1]);
    if (rc < 0 || log->has_records || n < 2)
        return rc;
    /* Rotated, then stopped before the first record: continue the previous
     * segment's times so they never go backwards. */
    scan_state st;
    if ((rc = tail_of(log, b, bases[n - 2], &st)) < 0)
        return log_fail(log, rc, "recovery read of segment before", log->log_path, 0);
    if (st.any)
        log->last_time = st.last_time;
    if (st.expected != log->next_offset)
        log_say(log, LOG_WARN,
                "segment %s starts at offset %" PRIu64 " but the one before ends at %" PRIu64,
                log->log_path, log->next_offset, st.expected);
    return 0;
}

/*
 * The files found may have been created by a process that was killed
 * before it synced the directory (their entries live only in the page
 * cache): sync it before anything appended to them can be acked. The same
 * goes for the active segment's bytes: killed between writing a new
 * segment's header and syncing it, a process leaves a header that only the
 * page cache holds; records appended after it but never acked could then
 * outlive a power loss that takes the header, and the next recovery would
 * refuse the segment (a damaged header with records after it).
 */
static int make_found_durable(pb_log *log)
{
    int rc = log->io->fdatasync(log->io, log->fd);
    if (rc < 0)
        return log_fail(log, rc, "fdatasync of", log->log_path, 0);
    log_durable_at(log, log->size); /* the active segment, as recovered */
    log->durable_known = true;
    return log_sync_dir(log);
}

int log_open(pb_log **out, const char *dir, const log_options *opts)
{
    *out = NULL;
    if (opts && opts->rotate_every_s < 0)
        return PB_EINVAL;
    pb_log *log = calloc(1, sizeof *log);
    if (!log)
        return PB_ENOMEM;
    base_list bases = {0};
    segment_buf b = {0};
    int rc = set_up(log, dir, opts);
    if (rc < 0)
        goto fail;
    const char *what;
    if ((rc = fileio_mkdir_durable(log->io, log->dir, DIR_MODE, &what)) < 0) {
        log_say(log, LOG_ERROR, "partition directory %s: %s failed: %s", log->dir, what,
                pb_strerror(rc));
        goto fail;
    }
    if ((log->dir_fd = log->io->open(log->io, log->dir, O_RDONLY | O_DIRECTORY, 0)) < 0) {
        rc = log_fail(log, log->dir_fd, "open of directory", log->dir, 0);
        goto fail;
    }
    if ((rc = log->io->list_dir(log->io, log->dir, collect_base, &bases)) < 0) {
        log_fail(log, rc, "listing of directory", log->dir, 0);
        goto fail;
    }
    sort_u64(bases.v, bases.n);
    if ((rc = segment_buf_init(&b, fileio_segment_pread, (void *)log->io)) < 0 ||
        (rc = recover_segments(log, &b, bases.v, bases.n)) < 0 ||
        (bases.n > 0 && (rc = make_found_durable(log)) < 0))
        goto fail;
    for (size_t i = 0; i + 1 < bases.n; i++)
        log_closed_add(log, bases.v[i], 0, 0, false);
    /* A removal cut short by a crash may have left the index of a removed
     * segment (removal.c). */
    log_remove_orphans(log, bases.n > 0 ? bases.v[0] : 0);
    if (log->failed) {
        rc = log->failed;
        goto fail;
    }
    segment_buf_free(&b);
    free(bases.v);
    *out = log;
    return 0;
fail:
    segment_buf_free(&b);
    free(bases.v);
    log->failed = log->failed ? log->failed : rc;
    log_close(log);
    return rc;
}
