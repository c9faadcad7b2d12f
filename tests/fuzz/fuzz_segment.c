/*
 * Fuzz target: the record codec and the segment reader, on files made from
 * the input. What `protobus cat` and every subscription run over whatever
 * is on disk (torn writes, bit rot, a hand-edited file).
 *
 * Input: a 9-byte prelude, then the files.
 *   byte 0     bits 0-1: 0 read from the start, 1 seek to an offset, 2 seek
 *              to a time, 3 read from the start with an end offset;
 *              bit 2: the rest is a list of files (below), otherwise it is
 *              one file, 00000000000000000000.log.
 *   bytes 1-8  the seek target or end offset (little-endian).
 *   files      [kind u8][base u64][len u16][len bytes] repeated, at most
 *              MAX_FILES: kind bit 0 = .idx, else .log; named by base.
 * Every .log file's bytes also go through record_decode directly.
 *
 * Oracles: the reader ends (PB_EEOF) within a bound and stays at the end;
 * offsets come out strictly increasing, never at or past the end offset,
 * and - reading from the start - without a gap that no PB_ECORRUPT
 * report covered (the contract: nothing is skipped silently); nothing but
 * 0, PB_ECORRUPT and PB_EEOF comes back (no I/O error, no PB_ENOMEM from a
 * bogus length). record_decode's sizes stay inside the buffer and a decoded
 * record re-encodes to the same header.
 *
 * Threads: one. The files live in one temp dir (in /dev/shm when there is
 * one), emptied before each input and removed at exit.
 */
#include "fuzz.h"

#include "pb_errors.h"
#include "reader.h"
#include "record.h"
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#define MAX_FILES 8

static char dir[256];
static int verbose = -1; /* PB_FUZZ_VERBOSE=1: trace what the reader returns */
static char files[MAX_FILES][300];
static size_t nfiles;

static void remove_files(void)
{
    for (size_t i = 0; i < nfiles; i++)
        if (unlink(files[i]) < 0 && errno != ENOENT) {
            fprintf(stderr, "fuzz_segment: cannot remove %s: %s\n", files[i], strerror(errno));
            abort();
        }
    nfiles = 0;
}

static void cleanup(void)
{
    remove_files();
    if (dir[0])
        (void)rmdir(dir);
}

static void make_dir(void)
{
    if (dir[0])
        return;
    const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/pbfuzz-segment-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        fprintf(stderr, "fuzz_segment: mkdtemp %s: %s\n", dir, strerror(errno));
        abort();
    }
    atexit(cleanup);
}

static void write_file(uint64_t base, const char *ext, const uint8_t *p, size_t n)
{
    char path[300];
    FUZZ_CHECK(segment_path(path, sizeof path, dir, base, ext) == 0);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "fuzz_segment: %s: %s\n", path, strerror(errno));
        abort();
    }
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, p + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            fprintf(stderr, "fuzz_segment: writing %s: %s\n", path, strerror(errno));
            abort();
        }
        done += (size_t)w;
    }
    if (close(fd) < 0) {
        fprintf(stderr, "fuzz_segment: closing %s: %s\n", path, strerror(errno));
        abort();
    }
    for (size_t i = 0; i < nfiles; i++)
        if (strcmp(files[i], path) == 0)
            return; /* the same name again: overwritten */
    snprintf(files[nfiles++], sizeof files[0], "%s", path);
}

/* The codec on its own: walk the bytes as records, stepping a byte past
 * damage the way a resync would (a bounded number of times). */
static void walk_records(const uint8_t *p, size_t n, uint32_t max_event)
{
    size_t pos = n >= PB_FILE_HEADER_SIZE ? PB_FILE_HEADER_SIZE : 0;
    if (n >= PB_FILE_HEADER_SIZE) {
        uint64_t base;
        int64_t created;
        int rc = file_header_decode(p, PB_LOG_MAGIC, &base, &created);
        FUZZ_CHECK(rc == 0 || rc == PB_EFORMAT || rc == PB_ECORRUPT);
        if (rc == 0) {
            uint8_t again[PB_FILE_HEADER_SIZE];
            file_header_encode(again, PB_LOG_MAGIC, base, created);
            FUZZ_CHECK(memcmp(again, p, PB_FILE_HEADER_SIZE) == 0);
        }
    }
    for (int skips = 0; pos < n && skips < 64;) {
        pb_record rec;
        uint32_t size;
        int rc = record_decode(p + pos, n - pos, max_event, &rec, &size);
        if (rc == PB_EINCOMPLETE) {
            FUZZ_CHECK(size == 0 || size > n - pos);
            FUZZ_CHECK(size <= PB_RECORD_MAX_EVENT + PB_RECORD_HEADER_SIZE);
            return;
        }
        if (rc == PB_ECORRUPT) {
            pos++;
            skips++;
            continue;
        }
        FUZZ_CHECK(rc == 0);
        FUZZ_CHECK(size == PB_RECORD_HEADER_SIZE + rec.event_len && size <= n - pos);
        FUZZ_CHECK(rec.event == p + pos + PB_RECORD_HEADER_SIZE && rec.event_len <= max_event);
        uint8_t hdr[PB_RECORD_HEADER_SIZE];
        FUZZ_CHECK(record_encode_header(hdr, rec.offset, rec.time_ns, rec.event, rec.event_len,
                                        NULL, 0) == 0);
        FUZZ_CHECK(memcmp(hdr, p + pos, PB_RECORD_HEADER_SIZE) == 0);
        pos += size;
    }
}

static uint64_t load64(const uint8_t *p)
{
    return pb_load_le64(p);
}

/* Reads the directory to its end and checks the contract on the way. */
static void read_all(int op, uint64_t param, uint64_t first_base, size_t total)
{
    pb_reader *r;
    FUZZ_CHECK(pb_reader_open(&r, dir) == 0);
    int rc = 0;
    if (op == 1)
        rc = pb_reader_seek_offset(r, param);
    else if (op == 2)
        rc = pb_reader_seek_time(r, (int64_t)param);
    else if (op == 3)
        pb_reader_set_end(r, param);
    FUZZ_CHECK(rc == 0);

    /* Every record costs at least 24 bytes and every report either
     * consumes bytes or precedes a record or a file, so this bounds a
     * reader that makes progress. */
    size_t limit = 2 * total + 4 * MAX_FILES + 16;
    bool have_last = false;
    uint64_t last = 0;
    /* Reading from the start, offsets from the first segment's base on
     * are each either returned or reported lost. */
    bool contiguous = (op == 0 || op == 3);
    uint64_t next = first_base;
    size_t steps;
    bool lost_rest = false;
    for (steps = 0; steps < limit; steps++) {
        pb_record rec;
        rc = pb_reader_next(r, &rec);
        if (verbose)
            fprintf(stderr, "next: %d offset %llu\n", rc,
                    rc == 0 ? (unsigned long long)rec.offset : 0ULL);
        if (rc == PB_EEOF)
            break;
        if (rc == PB_ECORRUPT) {
            const struct pb_reader_problem *pr = pb_reader_problem(r);
            if (verbose)
                fprintf(stderr, "  problem: %s at %llu: offsets %llu..%llu: %s\n", pr->file,
                        (unsigned long long)pr->position, (unsigned long long)pr->first_offset,
                        (unsigned long long)pr->last_offset, pr->reason);
            FUZZ_CHECK(pr->file && pr->file[0] && pr->reason && pr->reason[0]);
            if (contiguous && pr->last_offset + 1 != pr->first_offset) {
                FUZZ_CHECK(pr->first_offset <= pr->last_offset);
                FUZZ_CHECK(pr->first_offset <= next);
                if (pr->last_offset >= next)
                    next = pr->last_offset + 1;
            }
            continue;
        }
        if (rc == PB_EDATALOSS) {
            /* The last segment is compressed and its header or index is
             * damaged: nothing past the reported offset can be read, and
             * the report says so (file, reason, offsets to the end). */
            const struct pb_reader_problem *pr = pb_reader_problem(r);
            if (verbose)
                fprintf(stderr, "  data loss: %s: offsets %llu..: %s\n", pr->file,
                        (unsigned long long)pr->first_offset, pr->reason);
            FUZZ_CHECK(pr->file && pr->file[0] && pr->reason && pr->reason[0]);
            FUZZ_CHECK(pr->last_offset == UINT64_MAX);
            lost_rest = true; /* sticky: the reader says so again, checked below */
            break;
        }
        if (rc == PB_EREMOVED) {
            /* The retention notice: only for a seek below the first
             * segment (nothing is removed under this reader), once, before
             * any record, naming the offsets below the first base. */
            const struct pb_reader_problem *pr = pb_reader_problem(r);
            if (verbose)
                fprintf(stderr, "  removed: offsets %llu..%llu\n",
                        (unsigned long long)pr->first_offset, (unsigned long long)pr->last_offset);
            FUZZ_CHECK(op == 1 && param < first_base && !have_last);
            FUZZ_CHECK(pr->first_offset == param && pr->last_offset == first_base - 1);
            continue;
        }
        FUZZ_CHECK(rc == 0);
        FUZZ_CHECK(rec.event_len <= total);
        FUZZ_CHECK(!have_last || rec.offset > last);
        if (op == 1)
            FUZZ_CHECK(rec.offset >= param);
        if (op == 3)
            FUZZ_CHECK(rec.offset < param);
        if (contiguous) {
            if (rec.offset != next)
                fprintf(stderr, "fuzz_segment: offset %llu returned, %llu expected\n",
                        (unsigned long long)rec.offset, (unsigned long long)next);
            FUZZ_CHECK(rec.offset == next);
            next = rec.offset + 1;
        }
        have_last = true;
        last = rec.offset;
    }
    FUZZ_CHECK(steps < limit);
    /* Nothing changed on disk: the end stays the end (and a loss of the
     * rest stays reported). */
    pb_record rec;
    FUZZ_CHECK(pb_reader_next(r, &rec) == (lost_rest ? PB_EDATALOSS : PB_EEOF));
    pb_reader_close(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 9)
        return 0;
    if (verbose < 0)
        verbose = getenv("PB_FUZZ_VERBOSE") != NULL;
    make_dir();
    remove_files();
    int op = data[0] & 3;
    bool many = (data[0] & 4) != 0;
    uint64_t param = load64(data + 1);
    const uint8_t *p = data + 9;
    size_t n = size - 9;
    uint32_t max_event = (data[0] & 8) ? 64 : PB_RECORD_MAX_EVENT;
    uint64_t first_base = UINT64_MAX;
    size_t total = 0;

    if (!many) {
        write_file(0, ".log", p, n);
        walk_records(p, n, max_event);
        first_base = 0;
        total = n;
    } else {
        size_t pos = 0;
        for (int k = 0; k < MAX_FILES && n - pos >= 11; k++) {
            uint8_t kind = p[pos];
            uint64_t base = load64(p + pos + 1);
            size_t len = (size_t)p[pos + 9] | (size_t)p[pos + 10] << 8;
            pos += 11;
            if (len > n - pos)
                len = n - pos;
            bool idx = kind & 1;
            write_file(base, idx ? ".idx" : ".log", p + pos, len);
            if (verbose)
                fprintf(stderr, "file %llu%s: %zu bytes\n", (unsigned long long)base,
                        idx ? ".idx" : ".log", len);
            if (!idx) {
                walk_records(p + pos, len, max_event);
                if (base < first_base)
                    first_base = base;
            }
            total += len;
            pos += len;
        }
    }
    read_all(op, param, first_base, total);
    return 0;
}
