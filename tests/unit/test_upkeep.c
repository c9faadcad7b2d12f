/*
 * test_upkeep - a full disk that heals, under the real partition writer
 * (server/partition.c, server/upkeep.c, server/freespace.c), through a
 * fileio layer whose writes fail with ENOSPC on demand and whose space()
 * hook reports what the test says:
 *   - below min_free_bytes, batches are refused before anything is written
 *     (the partition does not fail) and partition_space_low says so;
 *   - ENOSPC in the middle of a batch (writes fail although space() looked
 *     fine): the batch is not acked, the partition stops; while space stays
 *     low the upkeep tick does not resume it; once space is back the tick
 *     resumes it WITHOUT a restart, publishing goes on at the next offset,
 *     and every acknowledged event is in the files, in order, once;
 *   - a record of the failed batch that reached the disk whole is kept by
 *     the resume (as by a restart) and announced to listeners: every offset
 *     once, in order, no gap;
 *   - the same full disk with compress = zstd: the compressor thread's
 *     writes fail too while the disk is full (segments stay plain, nothing
 *     left behind); after the resume every closed segment is compressed,
 *     no .ztmp is left, and every acknowledged event reads back;
 *   - a compression that fails while the writer's appends succeed (ENOSPC
 *     on the .ztmp only) is tried again after a pause, without a restart
 *     and without keeping the writer awake meanwhile.
 */
#include "testfs.h"
#include "compressor.h"
#include "fileio.h"
#include "logging.h"
#include "partition.h"
#include "event.h"
#include "partsubmit.h"
#include "pb_errors.h"
#include "reader.h"
#include "segment.h"
#include "zseg.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define EV_BYTES 64
#define GIB      (1024ull * 1024 * 1024)

static char root[64];
static char part_dir[128];
static compressor *zc;

static atomic_bool writes_fail;      /* pwritev -> ENOSPC */
static atomic_int whole_first;       /* with writes_fail: first write one whole record */
static _Atomic uint64_t avail_bytes; /* what space() reports */
static fileio io;

static ssize_t full_pwritev(const fileio *f, int fd, const struct iovec *iov, int n, off_t off)
{
    if (atomic_load(&writes_fail) && atomic_exchange(&whole_first, 0) && n >= 3) {
        /* One whole record (header, event, suffix) goes in, then the disk
         * is full: a record stored whole but never acknowledged. */
        return fileio_posix()->pwritev(fileio_posix(), fd, iov, 3, off);
    }
    if (atomic_load(&writes_fail)) {
        /* Half of the first buffer goes in, then the disk is full: a torn
         * write, as a real ENOSPC in the middle of a batch leaves. */
        if (n > 0 && iov[0].iov_len > 1) {
            struct iovec half = {.iov_base = iov[0].iov_base, .iov_len = iov[0].iov_len / 2};
            ssize_t w = fileio_posix()->pwritev(fileio_posix(), fd, &half, 1, off);
            if (w > 0)
                return w;
        }
        return -ENOSPC;
    }
    return fileio_posix()->pwritev(fileio_posix(), fd, iov, n, off);
}

static int fake_space(const fileio *f, const char *path, uint64_t *avail, uint64_t *total)
{
    *avail = atomic_load(&avail_bytes);
    *total = 100 * GIB;
    return 0;
}

/* The events of one batch (tests/lib/partsubmit submits and waits). */
static pub_event batch_ev[PARTSUBMIT_MAX];
static uint8_t ev_bytes[PARTSUBMIT_MAX][EV_BYTES];

/* Publishes n events (payload_size = seq + k, to tell them apart) and
 * returns the part's status; the offsets of an acked batch go to *first. */
static int publish(partition *p, uint32_t n, uint64_t seq, uint64_t *first)
{
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *e = ev_bytes[i];
        /* topic "tt" (field 1), payload_size (field 6, varint, < 2^14) */
        uint64_t v = seq + i;
        size_t len = 0;
        e[len++] = 0x0a;
        e[len++] = 2;
        e[len++] = 't';
        e[len++] = 't';
        e[len++] = 0x30;
        e[len++] = (uint8_t)(0x80 | (v & 0x7f));
        e[len++] = (uint8_t)(v >> 7);
        batch_ev[i] = (pub_event){.data = e, .len = (uint32_t)len, .topic = e + 2, .topic_len = 2};
    }
    int st = partsubmit(p, batch_ev, n);
    assert_int_not_equal(st, PB_ETIMEDOUT); /* done() within 10 s */
    if (st == 0 && first)
        *first = batch_ev[0].offset;
    return st;
}

static bool acked_seq[1024];
static uint64_t seq_at[1024];

static void note_acked(uint64_t first, uint32_t n, uint64_t seq)
{
    for (uint32_t i = 0; i < n; i++) {
        acked_seq[first + i] = true;
        seq_at[first + i] = seq + i;
    }
}

static void wait_status(partition *p, int want)
{
    for (int i = 0; i < 5000 && partition_status(p) != want; i++) {
        partition_upkeep_tick(p, 0);
        usleep(1000);
    }
    assert_int_equal(partition_status(p), want);
}

/* The upkeep tick (the daemon's 1 s timer; INT64_MAX: "now" is past any
 * due time) makes the writer probe the free space; waits (bounded) until
 * the partition's verdict is `low`. Takes probe at most every 10 ms and
 * use the last verdict in between. */
static void wait_space_low(partition *p, bool low)
{
    uint64_t avail, margin;
    for (int i = 0; i < 5000 && partition_space_low(p, &avail, &margin) != low; i++) {
        partition_upkeep_tick(p, INT64_MAX);
        usleep(1000);
    }
    assert_true(partition_space_low(p, &avail, &margin) == low);
}

/* Whether segment `base` of part_dir is a compressed file. */
static bool seg_compressed(uint64_t base)
{
    char path[256];
    uint8_t hdr[ZSEG_HEADER_END];
    assert_int_equal(segment_path(path, sizeof path, part_dir, base, ".log"), 0);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    ssize_t got = pread(fd, hdr, sizeof hdr, 0);
    close(fd);
    return zseg_is_compressed(hdr, got > 0 ? (size_t)got : 0);
}

/* Every closed segment of part_dir compressed, the active one not, and no
 * .ztmp left. */
static void check_all_compressed(void)
{
    uint64_t bases[256];
    size_t n = testfs_list_bases(part_dir, bases, 256);
    assert_true(n >= 3);
    for (size_t i = 0; i < n; i++)
        assert_true(seg_compressed(bases[i]) == (i + 1 < n));
    DIR *d = opendir(part_dir);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)))
        assert_null(strstr(de->d_name, ".ztmp"));
    closedir(d);
}

static void full_disk_heals(bool compress)
{
    io = *fileio_posix();
    io.pwritev = full_pwritev;
    io.space = fake_space;
    atomic_store(&writes_fail, false);
    atomic_store(&avail_bytes, 50 * GIB);
    partition_options o = {0};
    o.log.io = &io;
    o.log.segment_bytes = 4096;
    o.fsync = PARTITION_FSYNC_ALWAYS;
    o.topic_history = 4;
    o.idle_ms = 5;
    o.min_free_bytes = GIB;
    if (compress) {
        o.log.segment_bytes = 1024; /* segments rotate before the disk fills, and after */
        o.retain.compress_level = 1;
        o.compressor = zc;
    }
    partition *p;
    assert_int_equal(partition_open(&p, root, "p", &o), 0);
    uint64_t first, seq = 100;
    /* 1. Normal. */
    for (int i = 0; i < 5; i++, seq += 10) {
        assert_int_equal(publish(p, 10, seq, &first), 0);
        note_acked(first, 10, seq);
    }
    /* 2. Below the margin: refused before any write, partition fine. */
    atomic_store(&avail_bytes, GIB / 2);
    wait_space_low(p, true);
    assert_int_equal(publish(p, 10, seq, NULL), -ENOSPC);
    seq += 10;
    uint64_t avail, margin;
    assert_true(partition_space_low(p, &avail, &margin));
    assert_int_equal(avail, GIB / 2);
    assert_int_equal(margin, GIB);
    assert_int_equal(partition_status(p), 0);
    atomic_store(&avail_bytes, 50 * GIB);
    wait_space_low(p, false);
    assert_int_equal(publish(p, 10, seq, &first), 0);
    note_acked(first, 10, seq);
    seq += 10;
    /* 3. ENOSPC in the middle of a batch: not acked, partition stopped. */
    atomic_store(&writes_fail, true);
    assert_int_equal(publish(p, 10, seq, NULL), -ENOSPC);
    seq += 10;
    assert_int_equal(partition_status(p), -ENOSPC);
    assert_int_equal(publish(p, 10, seq, NULL), -ENOSPC); /* still refused */
    seq += 10;
    /* Space still low: the tick probes, nothing resumes. */
    atomic_store(&avail_bytes, 1000);
    for (int i = 0; i < 20; i++) {
        partition_upkeep_tick(p, 0);
        usleep(1000);
    }
    assert_int_equal(partition_status(p), -ENOSPC);
    /* 4. Space is freed: resumes by itself, no restart. */
    atomic_store(&writes_fail, false);
    atomic_store(&avail_bytes, 50 * GIB);
    wait_status(p, 0);
    for (int i = 0; i < 5; i++, seq += 10) {
        assert_int_equal(publish(p, 10, seq, &first), 0);
        note_acked(first, 10, seq);
    }
    uint64_t end = partition_end_offset(p);
    if (compress) {
        /* The writer stays until nothing is left to compress. */
        for (int i = 0; i < 20000 && partition_writer_running(p); i++)
            usleep(1000);
        assert_false(partition_writer_running(p));
    }
    assert_int_equal(partition_close(p), 0);
    if (compress)
        check_all_compressed();
    /* Every acked event is there, at its offset, once; offsets in order. */
    pb_reader *r;
    assert_int_equal(pb_reader_open(&r, part_dir), 0);
    pb_record rec;
    uint64_t next = 0;
    int rc;
    while ((rc = pb_reader_next(r, &rec)) == 0) {
        assert_int_equal(rec.offset, next);
        event_view v;
        char err[64];
        assert_int_equal(event_scan(rec.event, rec.event_len, &v, err, sizeof err), 0);
        if (acked_seq[rec.offset])
            assert_int_equal(v.payload_size, (int64_t)seq_at[rec.offset]);
        next++;
    }
    assert_int_equal(rc, PB_EEOF);
    assert_int_equal(next, end);
    for (uint64_t off = 0; off < 1024; off++)
        if (acked_seq[off])
            assert_true(off < end);
    pb_reader_close(r);
}

static void test_full_disk_heals(void **state)
{
    (void)state;
    full_disk_heals(false);
}

static void test_full_disk_heals_compressed(void **state)
{
    (void)state;
    memset(acked_seq, 0, sizeof acked_seq);
    full_disk_heals(true);
}

/* Offsets the durable callback announced (the live fan-out's view). */
static uint64_t announced[1024];
static size_t nannounced;

static void on_durable(void *ctx, partition *p, const live_record *recs, size_t n)
{
    for (size_t i = 0; i < n && nannounced < 1024; i++)
        announced[nannounced++] = recs[i].offset;
}

/* A record of the failed batch reached the disk whole: the resume keeps it
 * (as a restart would) and announces it, so listeners see every offset
 * once, in order, with no gap. */
static void test_resume_announces_kept_records(void **state)
{
    (void)state;
    io = *fileio_posix();
    io.pwritev = full_pwritev;
    io.space = fake_space;
    atomic_store(&writes_fail, false);
    atomic_store(&avail_bytes, 50 * GIB);
    nannounced = 0;
    partition_options o = {0};
    o.log.io = &io;
    o.fsync = PARTITION_FSYNC_ALWAYS;
    o.topic_history = 4;
    o.idle_ms = 5;
    o.min_free_bytes = GIB;
    o.durable = on_durable;
    partition *p;
    assert_int_equal(partition_open(&p, root, "p", &o), 0);
    assert_int_equal(publish(p, 10, 100, NULL), 0);
    atomic_store(&whole_first, 1);
    atomic_store(&writes_fail, true);
    assert_int_equal(publish(p, 10, 200, NULL), -ENOSPC);
    assert_int_equal(partition_end_offset(p), 10);
    atomic_store(&writes_fail, false);
    wait_status(p, 0);
    assert_int_equal(partition_end_offset(p), 11); /* the whole record was kept */
    uint64_t first;
    assert_int_equal(publish(p, 5, 300, &first), 0);
    assert_int_equal(first, 11);
    assert_int_equal(partition_close(p), 0);
    assert_int_equal(nannounced, 16);
    for (size_t i = 0; i < nannounced; i++)
        assert_int_equal(announced[i], i);
}

/* A .ztmp cannot be created while ztmp_fails: the disk is full under the
 * compressor only (the writer's appends go on). */
static atomic_bool ztmp_fails;
static atomic_bool ztmp_first_only; /* only segment 0's, with EIO */
static _Atomic int ztmp_refused;
static int ztmp_open(const fileio *f, const char *path, int flags, int mode)
{
    size_t n = strlen(path);
    if (atomic_load(&ztmp_fails) && n > 5 && strcmp(path + n - 5, ".ztmp") == 0) {
        static const char zero[] = "/00000000000000000000.log.ztmp";
        bool first = n >= sizeof zero - 1 && strcmp(path + n - (sizeof zero - 1), zero) == 0;
        if (!atomic_load(&ztmp_first_only) || first) {
            atomic_fetch_add(&ztmp_refused, 1);
            return atomic_load(&ztmp_first_only) ? -EIO : -ENOSPC;
        }
    }
    return fileio_posix()->open(fileio_posix(), path, flags, mode);
}

/* Closed segments of part_dir that are compressed; *closed: how many. */
static size_t count_compressed(size_t *closed)
{
    uint64_t bases[256];
    size_t n = testfs_list_bases(part_dir, bases, 256), z = 0;
    for (size_t i = 0; i + 1 < n; i++)
        z += seg_compressed(bases[i]);
    *closed = n ? n - 1 : 0;
    return z;
}

/* Opens partition "p" with compression, its .ztmp files failing as
 * ztmp_fails / first_only say (ztmp_open), and publishes 10 batches of 10
 * events, so that several segments close. */
static partition *open_failing_ztmp(bool first_only, uint32_t idle_ms, uint32_t retry_ms)
{
    io = *fileio_posix();
    io.open = ztmp_open;
    atomic_store(&ztmp_fails, true);
    atomic_store(&ztmp_first_only, first_only);
    atomic_store(&ztmp_refused, 0);
    partition_options o = {0};
    o.log.io = &io;
    o.log.segment_bytes = 1024;
    o.fsync = PARTITION_FSYNC_ALWAYS;
    o.topic_history = 4;
    o.idle_ms = idle_ms;
    o.retain.compress_level = 1;
    o.compressor = zc;
    o.compress_retry_ms = retry_ms;
    partition *p;
    assert_int_equal(partition_open(&p, root, "p", &o), 0);
    uint64_t seq = 100;
    for (int i = 0; i < 10; i++, seq += 10)
        assert_int_equal(publish(p, 10, seq, NULL), 0);
    return p;
}

/* A compression that fails for a passing reason (ENOSPC on its .ztmp,
 * while the writer still appends) is tried again after the pause, by the
 * upkeep tick once the writer has gone dormant: every closed segment ends
 * compressed without a restart. */
static void test_failed_compression_retried(void **state)
{
    (void)state;
    partition *p = open_failing_ztmp(false, 5, 100);
    /* Refused at least once; the writer does not stay awake for it. */
    for (int i = 0; i < 5000 && (atomic_load(&ztmp_refused) == 0 || partition_writer_running(p));
         i++)
        usleep(1000);
    assert_true(atomic_load(&ztmp_refused) > 0);
    assert_false(partition_writer_running(p));
    size_t closed;
    assert_int_equal(count_compressed(&closed), 0);
    assert_true(closed >= 3);
    /* Space is back: the ticks (the daemon's 1 s timer) do the rest. */
    atomic_store(&ztmp_fails, false);
    for (int i = 0; i < 10000 && count_compressed(&closed) < closed; i++) {
        partition_upkeep_tick(p, 0);
        usleep(1000);
    }
    for (int i = 0; i < 5000 && partition_writer_running(p); i++)
        usleep(1000);
    assert_int_equal(partition_close(p), 0);
    check_all_compressed();
}

/* A segment whose compression keeps failing (EIO on its .ztmp, for good)
 * does not hold the later ones back, and with a writer that never goes
 * idle (idle_ms = 0) the tick wakes it when a pause ends. */
static void test_failing_segment_does_not_block(void **state)
{
    (void)state;
    partition *p = open_failing_ztmp(true, 0, 50);
    /* Every closed segment but the first ends compressed; the first is
     * tried again and again (at least twice) and stays plain. */
    size_t closed = 0, z = 0;
    uint64_t bases[256];
    for (int i = 0; i < 10000; i++) {
        z = count_compressed(&closed);
        if (closed >= 3 && z == closed - 1 && atomic_load(&ztmp_refused) >= 2)
            break;
        partition_upkeep_tick(p, 0);
        usleep(1000);
    }
    assert_true(closed >= 3);
    assert_int_equal(z, closed - 1);
    assert_true(atomic_load(&ztmp_refused) >= 2);
    assert_true(testfs_list_bases(part_dir, bases, 256) > 0);
    assert_false(seg_compressed(bases[0]));
    assert_int_equal(partition_close(p), 0);
    atomic_store(&ztmp_fails, false);
}

static int setup(void **state)
{
    (void)state;
    return testfs_make_root(root, sizeof root, "pb_test_upkeep", part_dir, sizeof part_dir);
}

static int teardown(void **state)
{
    (void)state;
    return testfs_rmrf(root);
}

int main(void)
{
    if (!getenv("PB_TEST_VERBOSE"))
        logging_set_level(LOG_ERROR + 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_full_disk_heals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_announces_kept_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_disk_heals_compressed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_compression_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failing_segment_does_not_block, setup, teardown),
    };
    if (compressor_start(&zc) < 0)
        return 1;
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    compressor_stop(zc);
    return rc;
}
