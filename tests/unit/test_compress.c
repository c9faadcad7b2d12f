/*
 * test_compress - compressed segments (proto/zseg.c, server/compress.c):
 *   - round trip: closed segments of JSON-like events compressed in
 *     several blocks; pb_reader reads every offset in order, seeks by
 *     offset and by time land exactly (the .idx positions stay valid), the
 *     log reopens and appends on, a second compression leaves the file;
 *   - corruption: a flipped bit in a compressed block is reported with the
 *     file, the block's plain byte range and the offsets it holds; the
 *     reader goes on at the next block; a damaged block index makes the
 *     whole file reported, never silently skipped;
 *   - decompressing ahead (segment_ahead): the same reads, seeks and damage
 *     reports through the daemon's inflater thread and through executors
 *     that run a task at once, refuse it, or never begin it; a reader that
 *     would wait for the block the executor runs decompresses the next one
 *     itself (steal: the inflater's, and a deferred executor where reader
 *     and executor each do half); records are served from the
 *     decompressed block, not copied;
 *   - the install hands the replaced plain file's descriptor to
 *     log_options.discard_fd (the daemon's unlinker thread closes it, so
 *     freeing its extents never runs on the writer): the descriptor still
 *     reads the plain segment, whose name is gone; refused, it is closed
 *     in the install;
 *   - the power-loss simulation (tests/lib/simio) cut at every operation of
 *     a compression with several seeds: the log always reopens and reads
 *     every offset, and the compression can be done again.
 */
#include "testfs.h"
#include "crc32c.h"
#include "fileio.h"
#include "inflater.h"
#include "log.h"
#include "logging.h"
#include "pb_errors.h"
#include "reader.h"
#include "segment.h"
#include "simio.h"
#include "zseg.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#define T0  1700000000000000000ll
#define SEC 1000000000ll
#define N   12000

static char root[64];
static char dir[128];

/* An event like the README's: a JSON payload, a bit different each time. */
static size_t make_event(uint8_t *buf, size_t cap, uint64_t i)
{
    char json[200];
    int n = snprintf(json, sizeof json,
                     "{\"sensor\":\"temp-%u\",\"value\":%u.%u,\"unit\":\"C\",\"site\":"
                     "\"plant-north\",\"seq\":%llu}",
                     (unsigned)(i % 17), (unsigned)(i * 7 % 1000), (unsigned)(i % 10),
                     (unsigned long long)i);
    assert_true(n > 0 && (size_t)n + 20 < cap);
    buf[0] = 0x0a; /* topic */
    buf[1] = 12;
    memcpy(buf + 2, "sensors.temp", 12);
    buf[14] = 0x7a; /* field 15, bytes */
    buf[15] = (uint8_t)n;
    memcpy(buf + 16, json, (size_t)n);
    return 16 + (size_t)n;
}

static pb_log *build(const char *d, const fileio *io, uint64_t seg_bytes, uint64_t n)
{
    pb_log *log;
    log_options lo = {.segment_bytes = seg_bytes, .index_interval_bytes = 4096, .io = io};
    assert_int_equal(log_open(&log, d, &lo), 0);
    uint8_t ev[16][256];
    for (uint64_t i = 0; i < n; i += 16) {
        log_entry e[16];
        size_t k;
        for (k = 0; k < 16 && i + k < n; k++) {
            size_t len = make_event(ev[k], sizeof ev[k], i + k);
            e[k] = (log_entry){.data = ev[k], .len = len, .time_ns = T0 + (int64_t)(i + k) * SEC};
        }
        assert_int_equal(log_append(log, e, k, NULL), 0);
    }
    assert_int_equal(log_sync(log), 0);
    return log;
}

/* Decompressing ahead (segment.h): the executors the reads are tried
 * with. NULL: inline. */
static const segment_ahead *test_ahead;

/* Runs the task at once, in start(). */
static bool sync_start(void *ctx, segment_task *t)
{
    (void)ctx;
    t->fn(t);
    return true;
}
static bool sync_finish(void *ctx, segment_task *t)
{
    (void)ctx;
    (void)t;
    return true;
}
/* Takes nothing. */
static bool refuse_start(void *ctx, segment_task *t)
{
    (void)ctx;
    (void)t;
    return false;
}
/* Takes everything and never begins it: every block is taken back. */
static bool lazy_start(void *ctx, segment_task *t)
{
    (void)ctx;
    (void)t;
    return true;
}
static bool lazy_finish(void *ctx, segment_task *t)
{
    (void)ctx;
    (void)t;
    return false;
}
/* Queues tasks and runs one only when finish() asks for it, as if it had
 * been running all along; steal() takes back any queued one while another
 * "runs". Counts who decompressed what. */
#define DEFER_MAX 8
static segment_task *deferred[DEFER_MAX];
static unsigned ran_by_executor, ran_by_reader;
static bool defer_start(void *ctx, segment_task *t)
{
    (void)ctx;
    for (int k = 0; k < DEFER_MAX; k++)
        if (!deferred[k]) {
            deferred[k] = t;
            return true;
        }
    return false;
}
static bool defer_take(segment_task *t)
{
    for (int k = 0; k < DEFER_MAX; k++)
        if (deferred[k] == t) {
            deferred[k] = NULL;
            return true;
        }
    return false;
}
static bool defer_finish(void *ctx, segment_task *t)
{
    (void)ctx;
    assert_true(defer_take(t));
    t->fn(t);
    ran_by_executor++;
    return true;
}
static bool defer_steal(void *ctx, segment_task *busy, segment_task *t)
{
    (void)ctx;
    bool busy_queued = false;
    for (int k = 0; k < DEFER_MAX; k++)
        busy_queued |= deferred[k] == busy;
    assert_true(busy_queued); /* only ever asked about a block in our hands */
    if (!defer_take(t))
        return false;
    ran_by_reader++;
    return true;
}
static const segment_ahead defer_ahead = {
    .start = defer_start, .finish = defer_finish, .steal = defer_steal};
static const segment_ahead sync_ahead = {.start = sync_start, .finish = sync_finish};
static const segment_ahead refuse_ahead = {.start = refuse_start, .finish = sync_finish};
static const segment_ahead lazy_ahead = {.start = lazy_start, .finish = lazy_finish};

/* Reads everything: offsets 0..end-1 in order; returns the problems seen
 * (PB_ECORRUPT) and, in *lost, the offsets they named. */
static int read_all(const char *d, const fileio *io, uint64_t end, uint64_t *lost,
                    struct pb_reader_problem *first_problem, char *why, size_t whylen)
{
    pb_reader *r;
    segment_io sio;
    if (io) {
        fileio_segment_io(io, &sio);
        assert_int_equal(pb_reader_open_io(&r, d, &sio), 0);
    } else {
        sio = *segment_io_posix();
        sio.ahead = test_ahead;
        assert_int_equal(pb_reader_open_io(&r, d, &sio), 0);
    }
    pb_record rec;
    uint64_t next = 0;
    int rc, problems = 0;
    *lost = 0;
    for (int guard = 0; guard < 1000000; guard++) {
        rc = pb_reader_next(r, &rec);
        if (rc == PB_ECORRUPT) {
            const struct pb_reader_problem *p = pb_reader_problem(r);
            if (problems++ == 0 && first_problem) {
                /* The strings live in the reader: copied out. */
                static char file[256];
                snprintf(file, sizeof file, "%s", p->file);
                *first_problem = *p;
                first_problem->file = file;
                first_problem->reason = NULL;
                snprintf(why, whylen, "%s", p->reason);
            }
            *lost += p->last_offset - p->first_offset + 1;
            next = p->last_offset + 1;
            continue;
        }
        if (rc != 0)
            break;
        assert_int_equal(rec.offset, next);
        next++;
    }
    assert_int_equal(rc, PB_EEOF);
    assert_int_equal(next, end);
    pb_reader_close(r);
    return problems;
}

static bool is_compressed(const char *path)
{
    uint8_t hdr[ZSEG_HEADER_END];
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    ssize_t n = pread(fd, hdr, sizeof hdr, 0);
    close(fd);
    return n > 0 && zseg_is_compressed(hdr, (size_t)n);
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

static size_t compress_all(pb_log *log)
{
    size_t done = 0;
    for (size_t i = 0; i < log_closed_count(log); i++) {
        uint64_t plain, packed;
        int rc = log_compress_closed(log, i, 3, &plain, &packed);
        assert_true(rc >= 0);
        if (rc == 1) {
            assert_true(packed < plain);
            done++;
        }
    }
    return done;
}

static void test_round_trip_and_seek(void **state)
{
    (void)state;
    pb_log *log = build(dir, NULL, 1024 * 1024, N);
    size_t closed = log_closed_count(log);
    assert_true(closed >= 1);
    char path[256];
    assert_int_equal(segment_path(path, sizeof path, dir, 0, ".log"), 0);
    uint64_t plain = file_size(path);
    assert_int_equal(compress_all(log), closed);
    assert_true(is_compressed(path));
    /* JSON compresses well; the segment holds several blocks. */
    assert_true(file_size(path) * 4 < plain);
    assert_true(plain > 3 * ZSEG_BLOCK_TARGET);
    assert_int_equal(compress_all(log), 0); /* already compressed: left */
    uint64_t lost;
    assert_int_equal(read_all(dir, NULL, N, &lost, NULL, NULL, 0), 0);

    /* Seeks land exactly, in every block, by offset and by time. */
    pb_reader *r;
    assert_int_equal(pb_reader_open(&r, dir), 0);
    pb_record rec;
    for (uint64_t t = 0; t < N; t += 997) {
        assert_int_equal(pb_reader_seek_offset(r, t), 0);
        assert_int_equal(pb_reader_next(r, &rec), 0);
        assert_int_equal(rec.offset, t);
        assert_int_equal(pb_reader_seek_time(r, T0 + (int64_t)t * SEC), 0);
        assert_int_equal(pb_reader_next(r, &rec), 0);
        assert_int_equal(rec.offset, t);
    }
    pb_reader_close(r);

    /* The log reopens over compressed segments and goes on. */
    assert_int_equal(log_close(log), 0);
    log_options lo = {.segment_bytes = 1024 * 1024, .index_interval_bytes = 4096};
    assert_int_equal(log_open(&log, dir, &lo), 0);
    assert_int_equal(log_next_offset(log), N);
    uint8_t ev[256];
    size_t len = make_event(ev, sizeof ev, N);
    log_entry e = {.data = ev, .len = len, .time_ns = T0 + (int64_t)N * SEC};
    assert_int_equal(log_append(log, &e, 1, NULL), 0);
    assert_int_equal(log_close(log), 0);
    assert_int_equal(read_all(dir, NULL, N + 1, &lost, NULL, NULL, 0), 0);
}

static void flip(const char *path, uint64_t pos)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, (off_t)pos), 1);
    b ^= 0x10;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)pos), 1);
    close(fd);
}

/* N events in 1 MiB segments, the closed ones compressed, the log closed;
 * path: the first (compressed) segment. */
static void build_compressed(char *path, size_t cap)
{
    pb_log *log = build(dir, NULL, 1024 * 1024, N);
    assert_true(compress_all(log) >= 1);
    assert_int_equal(log_close(log), 0);
    assert_int_equal(segment_path(path, cap, dir, 0, ".log"), 0);
}

static void test_flipped_bit_is_reported(void **state)
{
    (void)state;
    char path[256];
    build_compressed(path, sizeof path);
    /* A byte in the middle of the blocks (the second one or later). */
    flip(path, file_size(path) / 2);
    uint64_t lost;
    struct pb_reader_problem p;
    char why[200];
    assert_int_equal(read_all(dir, NULL, N, &lost, &p, why, sizeof why), 1);
    assert_string_equal(p.file, path);
    assert_non_null(strstr(why, "compressed block"));
    assert_non_null(strstr(why, "CRC32C"));
    assert_true(p.first_offset > 0);
    assert_true(p.last_offset > p.first_offset && p.last_offset < N);
    assert_true(p.position > PB_FILE_HEADER_SIZE);
    /* One block's records, no more. */
    assert_true(lost == p.last_offset - p.first_offset + 1);
    assert_true(lost < N / 4);
}

static void test_damaged_index_is_reported(void **state)
{
    (void)state;
    pb_log *log = build(dir, NULL, 1024 * 1024, N);
    assert_true(compress_all(log) >= 1);
    uint64_t next_base = log_closed_count(log) > 1 ? log_closed_base(log, 1) : 0;
    assert_int_equal(log_close(log), 0);
    char path[256];
    assert_int_equal(segment_path(path, sizeof path, dir, 0, ".log"), 0);
    flip(path, file_size(path) - 10); /* in the block index */
    uint64_t lost;
    struct pb_reader_problem p;
    char why[200];
    assert_int_equal(read_all(dir, NULL, N, &lost, &p, why, sizeof why), 1);
    assert_string_equal(p.file, path);
    assert_non_null(strstr(why, "block index"));
    assert_int_equal(p.first_offset, 0);
    if (next_base)
        assert_int_equal(p.last_offset, next_base - 1);
}

/* Reads the block index of the compressed file at path into e (at most
 * max entries); *n the count, *index_pos where it starts. */
static void read_index(const char *path, zseg_entry *e, uint32_t max, uint32_t *n,
                       uint64_t *index_pos)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    uint8_t hdr[ZSEG_HEADER_END];
    assert_int_equal(pread(fd, hdr, sizeof hdr, 0), (ssize_t)sizeof hdr);
    *index_pos = pb_load_le64(hdr + PB_FILE_HEADER_SIZE + 16);
    *n = pb_load_le32(hdr + PB_FILE_HEADER_SIZE + 24);
    assert_true(*n >= 3 && *n <= max);
    for (uint32_t i = 0; i < *n; i++) {
        uint8_t raw[ZSEG_ENTRY_SIZE];
        assert_int_equal(pread(fd, raw, sizeof raw, (off_t)(*index_pos + i * ZSEG_ENTRY_SIZE)),
                         (ssize_t)sizeof raw);
        zseg_entry_decode(raw, &e[i]);
    }
    close(fd);
}

/* Writes the entries back with a CRC that matches: an index that passes
 * its CRC whatever it says (as a forged one, or one a bit flip turned
 * into another whose CRC matches by chance). */
static void write_index(const char *path, const zseg_entry *e, uint32_t n, uint64_t index_pos)
{
    uint8_t raw[64 * ZSEG_ENTRY_SIZE + 4];
    assert_true(n <= 64);
    for (uint32_t i = 0; i < n; i++)
        zseg_entry_encode(raw + i * ZSEG_ENTRY_SIZE, &e[i]);
    pb_store_le32(raw + n * ZSEG_ENTRY_SIZE, crc32c(0, raw, n * ZSEG_ENTRY_SIZE));
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    size_t len = n * ZSEG_ENTRY_SIZE + 4;
    assert_int_equal(pwrite(fd, raw, len, (off_t)index_pos), (ssize_t)len);
    close(fd);
}

/* An index whose CRC matches but whose offsets do not rise from block to
 * block is index damage (the whole file reported), not offsets to report;
 * and a damaged block whose entry names offsets the reader has already
 * passed reports none of them again: a report never reaches back behind
 * what was returned (found by fuzz_segment: a report "first > last"). */
static void test_index_offsets_are_checked(void **state)
{
    (void)state;
    char path[256];
    build_compressed(path, sizeof path);
    zseg_entry e[64], orig[64];
    uint32_t n;
    uint64_t ipos;
    read_index(path, orig, 64, &n, &ipos);
    uint64_t l0 = orig[0].last_offset, l1 = orig[1].last_offset;

    /* Block 1 names offsets below block 0's: the index is damaged. */
    memcpy(e, orig, sizeof orig);
    e[1].first_offset = e[1].last_offset = orig[0].first_offset;
    write_index(path, e, n, ipos);
    uint64_t lost;
    struct pb_reader_problem p;
    char why[200];
    assert_int_equal(read_all(dir, NULL, N, &lost, &p, why, sizeof why), 1);
    assert_non_null(strstr(why, "block index failed its checks"));
    assert_int_equal(p.first_offset, 0);

    /* Rising, but lower than the records really are; block 1 damaged:
     * its report starts after block 0's last record and is empty (every
     * offset it names was returned already); the records block 1 held are
     * then reported missing before block 2's first one. */
    memcpy(e, orig, sizeof orig);
    e[0].last_offset = orig[0].first_offset;
    e[1].first_offset = e[1].last_offset = orig[0].first_offset + 1;
    write_index(path, e, n, ipos);
    flip(path, orig[1].file_pos + orig[1].comp_len / 2);
    assert_int_equal(read_all(dir, NULL, N, &lost, &p, why, sizeof why), 2);
    assert_non_null(strstr(why, "compressed block 1 failed its CRC32C"));
    assert_int_equal(p.first_offset, l0 + 1);
    assert_int_equal(p.last_offset, l0);
    assert_int_equal(lost, l1 - l0);
}

/* The same reads through every kind of executor, the daemon's inflater
 * thread included: every offset in order, seeks exact, a flipped bit
 * reported with the same block and offsets as inline (the block ahead
 * fails its checks on the executor's thread, and the reader redoes it
 * inline, which reports it). */
static void test_decompress_ahead(void **state)
{
    (void)state;
    inflater *inf;
    assert_int_equal(inflater_start(&inf), 0);
    pb_log *log = build(dir, NULL, 1024 * 1024, N);
    assert_true(compress_all(log) >= 1);
    assert_int_equal(log_close(log), 0);
    const segment_ahead *modes[] = {inflater_ahead(inf), &sync_ahead, &refuse_ahead, &lazy_ahead,
                                    &defer_ahead};
    const size_t nmodes = sizeof modes / sizeof modes[0];
    uint64_t lost;
    for (size_t m = 0; m < nmodes; m++) {
        test_ahead = modes[m];
        assert_int_equal(read_all(dir, NULL, N, &lost, NULL, NULL, 0), 0);
        segment_io sio = *segment_io_posix();
        sio.ahead = test_ahead;
        pb_reader *r;
        pb_record rec;
        assert_int_equal(pb_reader_open_io(&r, dir, &sio), 0);
        for (uint64_t t = 0; t < N; t += 1231) {
            assert_int_equal(pb_reader_seek_offset(r, t), 0);
            for (int k = 0; k < 700 && t + (uint64_t)k < N; k++) {
                assert_int_equal(pb_reader_next(r, &rec), 0);
                assert_int_equal(rec.offset, t + (uint64_t)k);
            }
        }
        pb_reader_close(r);
    }
    /* (How many blocks the thread decompressed depends on scheduling: a
     * block it has not begun is taken back and done inline.) */
    printf("inflater: %llu blocks decompressed ahead\n",
           (unsigned long long)inflater_tasks_run(inf));
    char path[256];
    assert_int_equal(segment_path(path, sizeof path, dir, 0, ".log"), 0);
    flip(path, file_size(path) / 2);
    struct pb_reader_problem want, got;
    char why[200];
    test_ahead = NULL;
    assert_int_equal(read_all(dir, NULL, N, &lost, &want, why, sizeof why), 1);
    for (size_t m = 0; m < nmodes; m++) {
        test_ahead = modes[m];
        assert_int_equal(read_all(dir, NULL, N, &lost, &got, why, sizeof why), 1);
        assert_non_null(strstr(why, "CRC32C"));
        assert_int_equal(got.first_offset, want.first_offset);
        assert_int_equal(got.last_offset, want.last_offset);
        assert_int_equal(got.position, want.position);
    }
    test_ahead = NULL;
    inflater_stop(inf);
    for (int k = 0; k < DEFER_MAX; k++)
        assert_null(deferred[k]); /* every task taken back or finished */
}

/* Counts the reads of compressed blocks: every pread between the zseg
 * header and the block index (unpack reads a block's bytes in one). */
static uint64_t count_index_pos;
static unsigned block_reads;
static ssize_t counting_pread(void *ctx, int fd, void *buf, size_t len, off_t off)
{
    if ((uint64_t)off >= ZSEG_HEADER_END && (uint64_t)off < count_index_pos)
        block_reads++;
    return segment_pread_posix(ctx, fd, buf, len, off);
}

/* A reader that would wait for the block the executor runs decompresses
 * the next one itself (segment_ahead.steal): a sequential read of each
 * compressed segment through an executor that is always "busy" with the
 * block wanted: the reader and the executor each decompress about half of
 * the blocks, and every block is decompressed exactly once. */
static void test_reader_steals_while_waiting(void **state)
{
    (void)state;
    pb_log *log = build(dir, NULL, 1024 * 1024, 5 * N);
    size_t closed = compress_all(log);
    assert_true(closed >= 4);
    uint64_t bases[64];
    assert_true(closed <= 64);
    for (size_t i = 0; i < closed; i++)
        bases[i] = log_closed_base(log, i);
    assert_int_equal(log_close(log), 0);
    segment_buf b;
    assert_int_equal(segment_buf_init(&b, counting_pread, NULL), 0);
    segment_buf_set_ahead(&b, &defer_ahead);
    for (size_t s = 0; s < closed; s++) {
        char path[256];
        uint8_t hdr[ZSEG_HEADER_END];
        assert_int_equal(segment_path(path, sizeof path, dir, bases[s], ".log"), 0);
        int fd = open(path, O_RDONLY);
        assert_true(fd >= 0);
        assert_int_equal(pread(fd, hdr, sizeof hdr, 0), (ssize_t)sizeof hdr);
        assert_true(zseg_is_compressed(hdr, sizeof hdr));
        uint64_t end = pb_load_le64(hdr + PB_FILE_HEADER_SIZE + 8);
        count_index_pos = pb_load_le64(hdr + PB_FILE_HEADER_SIZE + 16);
        uint32_t nblocks = pb_load_le32(hdr + PB_FILE_HEADER_SIZE + 24);
        assert_true(nblocks >= 3);
        ran_by_executor = ran_by_reader = block_reads = 0;
        segment_buf_attach(&b, fd);
        uint64_t pos = PB_FILE_HEADER_SIZE, expected = bases[s];
        while (pos < end) {
            pb_record rec;
            uint32_t size;
            assert_int_equal(segment_read_record(&b, pos, PB_RECORD_MAX_EVENT, &rec, &size), 0);
            assert_int_equal(rec.offset, expected);
            pos += size;
            expected++;
        }
        if (s + 1 < closed)
            assert_int_equal(expected, bases[s + 1]);
        segment_buf_attach(&b, -1); /* frees the view: every task back */
        close(fd);
        /* Each block read (so decompressed) once: the first inline, the
         * others alternately by the executor and by the reader. */
        assert_int_equal(block_reads, nblocks);
        assert_int_equal(ran_by_executor + ran_by_reader, nblocks - 1);
        assert_true(ran_by_reader >= (nblocks - 1) / 2 && ran_by_executor >= (nblocks - 1) / 2);
        for (int k = 0; k < DEFER_MAX; k++)
            assert_null(deferred[k]);
    }
    segment_buf_free(&b);
}

/* The inflater's steal: a task queued behind one that runs is taken back
 * (and never runs on the thread); nothing is taken while the one waited
 * for is not running. */
static atomic_bool gate_open, gate_entered;
static void gated_fn(segment_task *t)
{
    (void)t;
    atomic_store(&gate_entered, true);
    for (int i = 0; i < 50000 && !atomic_load(&gate_open); i++) /* 5 s at most */
        usleep(100);
}
static atomic_int stolen_ran;
static void noop_fn(segment_task *t)
{
    (void)t;
}
static void stolen_fn(segment_task *t)
{
    (void)t;
    atomic_fetch_add(&stolen_ran, 1);
}

static inflater *steal_inf;
/* Static, not the test's locals: after a failed assert the thread may
 * still run or dequeue them while the teardown stops it. */
static segment_task st_busy, st_t, st_u;
static int steal_teardown(void **state)
{
    (void)state;
    atomic_store(&gate_open, true); /* a failed assert left the thread waiting */
    inflater_stop(steal_inf);
    steal_inf = NULL;
    return 0;
}

static void test_inflater_steal(void **state)
{
    (void)state;
    assert_int_equal(inflater_start(&steal_inf), 0);
    inflater *inf = steal_inf;
    const segment_ahead *a = inflater_ahead(inf);
    st_busy = (segment_task){.fn = gated_fn};
    st_t = (segment_task){.fn = stolen_fn};
    st_u = (segment_task){.fn = noop_fn};
    assert_true(a->start(a->ctx, &st_busy));
    for (int i = 0; i < 50000 && !atomic_load(&gate_entered); i++)
        usleep(100);
    assert_true(atomic_load(&gate_entered)); /* st_busy runs */
    assert_true(a->start(a->ctx, &st_t));
    assert_true(a->steal(a->ctx, &st_busy, &st_t));  /* queued behind it: taken */
    assert_false(a->steal(a->ctx, &st_busy, &st_t)); /* no longer queued */
    atomic_store(&gate_open, true);
    assert_true(a->finish(a->ctx, &st_busy));
    assert_true(a->start(a->ctx, &st_u));
    assert_false(a->steal(a->ctx, &st_busy, &st_u)); /* st_busy is done: u stays */
    (void)a->finish(a->ctx, &st_u);                  /* ran, or taken back not begun */
    inflater_stop(inf);
    steal_inf = NULL;
    assert_int_equal(atomic_load(&stolen_ran), 0); /* t never ran on the thread */
}

/* A sequential read of a compressed segment is served from the
 * decompressed block itself (no copy into the window), every record in
 * order; the file's header and a range across two blocks come through the
 * window, with the same bytes. */
static void test_records_served_from_block(void **state)
{
    (void)state;
    char path[256];
    build_compressed(path, sizeof path);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    segment_buf b;
    assert_int_equal(segment_buf_init(&b, segment_pread_posix, NULL), 0);
    segment_buf_attach(&b, fd);
    const uint8_t *p;
    size_t avail;
    /* The file header (outside every block) comes through the window. */
    assert_int_equal(segment_buf_get(&b, 0, PB_FILE_HEADER_SIZE, &p, &avail), 0);
    assert_ptr_equal(p, b.data);
    uint64_t pos = PB_FILE_HEADER_SIZE, expected = 0, end;
    assert_int_equal(zseg_logical_size(segment_pread_posix, NULL, fd, file_size(path), &end), 0);
    assert_true(end > file_size(path));
    unsigned outside = 0;
    uint64_t boundary = 0;
    while (pos < end) {
        pb_record rec;
        uint32_t size;
        assert_int_equal(segment_read_record(&b, pos, PB_RECORD_MAX_EVENT, &rec, &size), 0);
        assert_int_equal(rec.offset, expected);
        assert_int_equal(segment_buf_get(&b, pos, size, &p, &avail), 0);
        assert_true(avail >= size);
        outside += p < b.data || p >= b.data + b.cap;
        if (avail == size && !boundary && pos + size < end)
            boundary = pos + size; /* the record ends its block */
        pos += size;
        expected++;
    }
    assert_true(expected > 1000);
    assert_int_equal(outside, expected); /* every record: none copied */
    /* A range across two blocks comes through the window, the same bytes. */
    assert_true(boundary > 0);
    uint8_t tail[8], head[8];
    assert_int_equal(segment_buf_get(&b, boundary - 8, 8, &p, &avail), 0);
    memcpy(tail, p, 8);
    assert_int_equal(segment_buf_get(&b, boundary, 8, &p, &avail), 0);
    memcpy(head, p, 8);
    assert_int_equal(segment_buf_get(&b, boundary - 8, 16, &p, &avail), 0);
    assert_ptr_equal(p, b.data);
    assert_true(avail >= 16);
    assert_memory_equal(p, tail, 8);
    assert_memory_equal(p + 8, head, 8);
    segment_buf_free(&b);
    close(fd);
}

/* log_options.discard_fd: keeps the descriptors it is given (or refuses). */
static int kept_fds[8];
static size_t nkept;
static bool refuse_fds;
static int keep_fd(void *ctx, const fileio *io, int fd)
{
    (void)ctx;
    (void)io;
    if (refuse_fds || nkept == sizeof kept_fds / sizeof kept_fds[0])
        return -1;
    kept_fds[nkept++] = fd;
    return 0;
}

static void test_install_hands_plain_fd(void **state)
{
    (void)state;
    pb_log *log = build(dir, NULL, 256 * 1024, N);
    assert_int_equal(log_close(log), 0);
    log_options lo = {
        .segment_bytes = 256 * 1024, .index_interval_bytes = 4096, .discard_fd = keep_fd};
    assert_int_equal(log_open(&log, dir, &lo), 0);
    size_t closed = log_closed_count(log);
    assert_true(closed >= 2);
    char path[256];
    assert_int_equal(segment_path(path, sizeof path, dir, 0, ".log"), 0);
    uint64_t plain_size = file_size(path);
    nkept = 0;
    refuse_fds = false;
    uint64_t plain, packed;
    assert_int_equal(log_compress_closed(log, 0, 3, &plain, &packed), 1);
    assert_true(is_compressed(path));
    /* Handed over: the old plain file, its name gone, still whole. */
    assert_int_equal(nkept, 1);
    struct stat st;
    assert_int_equal(fstat(kept_fds[0], &st), 0);
    assert_int_equal(st.st_nlink, 0);
    assert_int_equal((uint64_t)st.st_size, plain_size);
    /* Writable, so that the unlinker can free it in steps (unlinker.h). */
    assert_int_equal(fcntl(kept_fds[0], F_GETFL) & O_ACCMODE, O_RDWR);
    uint8_t hdr[ZSEG_HEADER_END];
    assert_int_equal(pread(kept_fds[0], hdr, sizeof hdr, 0), (ssize_t)sizeof hdr);
    assert_false(zseg_is_compressed(hdr, sizeof hdr));
    assert_int_equal(close(kept_fds[0]), 0);
    /* Refused: closed in the install (nothing kept, nothing leaks). */
    refuse_fds = true;
    assert_int_equal(log_compress_closed(log, 1, 3, &plain, &packed), 1);
    assert_int_equal(nkept, 1);
    assert_int_equal(log_close(log), 0);
    uint64_t lost;
    assert_int_equal(read_all(dir, NULL, N, &lost, NULL, NULL, 0), 0);
}

#define PL_EVENTS 400

static void test_compress_survives_power_loss(void **state)
{
    (void)state;
    size_t rounds = 0, partial = 0, before = 0;
    for (uint64_t k = 1; k < 30; k++) {
        for (uint64_t seed = 1; seed <= 4; seed++) {
            simio *sim;
            assert_int_equal(simio_create(&sim), 0);
            assert_int_equal(simio_add_root(sim, "/d"), 0);
            pb_log *log = build("/d/p", simio_io(sim), 16 * 1024, PL_EVENTS);
            assert_true(log_closed_count(log) >= 2);
            simio_crash_at(sim, simio_ops(sim) + k);
            uint64_t plain, packed;
            int rc = log_compress_closed(log, 0, 3, &plain, &packed);
            bool cut = simio_is_down(sim);
            partial += cut;
            if (!cut)
                assert_int_equal(rc, 1);
            assert_int_equal(simio_power_loss(sim, seed * 7919 + k, NULL), 0);
            (void)log_close(log);
            log_options lo = {
                .segment_bytes = 16 * 1024, .index_interval_bytes = 4096, .io = simio_io(sim)};
            assert_int_equal(log_open(&log, "/d/p", &lo), 0);
            assert_int_equal(log_next_offset(log), PL_EVENTS);
            uint64_t lost;
            assert_int_equal(read_all("/d/p", simio_io(sim), PL_EVENTS, &lost, NULL, NULL, 0), 0);
            /* Plain or compressed, whole either way; and it can be done
             * (again). */
            rc = log_compress_closed(log, 0, 3, &plain, &packed);
            assert_true(rc == 0 || rc == 1);
            before += rc == 1;
            assert_int_equal(read_all("/d/p", simio_io(sim), PL_EVENTS, &lost, NULL, NULL, 0), 0);
            assert_int_equal(log_close(log), 0);
            simio_destroy(sim);
            rounds++;
        }
    }
    assert_true(partial > 0);
    assert_true(before > 0); /* some crashes came before the rename */
    assert_true(rounds > 100);
}

static int setup(void **state)
{
    (void)state;
    return testfs_make_root(root, sizeof root, "pb_test_zseg", dir, sizeof dir);
}

static int teardown(void **state)
{
    (void)state;
    return testfs_rmrf(root);
}

int main(void)
{
    if (!getenv("PB_TEST_VERBOSE"))
        logging_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip_and_seek, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flipped_bit_is_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_index_is_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_index_offsets_are_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_records_served_from_block, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decompress_ahead, setup, teardown),
        cmocka_unit_test_teardown(test_inflater_steal, steal_teardown),
        cmocka_unit_test_setup_teardown(test_reader_steals_while_waiting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_install_hands_plain_fd, setup, teardown),
        cmocka_unit_test(test_compress_survives_power_loss),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
