/*
 * test_compressor - compression off the writer thread (server/compressor.c,
 * server/partition_compress.c, the two halves of server/compress.c):
 *   - a partition with compress = zstd hands its closed segments to the
 *     compressor thread: every closed segment ends up compressed by it
 *     (its job counter), no .ztmp is left, every offset reads back;
 *   - the order of removal and compression, deterministically at the log
 *     level: a copy prepared for a segment that retention removes before
 *     the install is removed by the install (the segment stays gone); a
 *     segment removed before the compressor opens it gives -ENOENT and no
 *     copy; a .ztmp left by a crash is removed at the next open;
 *   - retention and compression together under the real writer (segments
 *     removed while others are compressed): a contiguous range from the
 *     first offset, no .ztmp, the log reopens;
 *   - a partition closed while its segment is with the compressor: taken
 *     back or waited for, nothing left behind, everything reads back;
 *   - a running compression taken back stops at its next block (no
 *     .ztmp, no wait for the whole segment);
 *   - paced (its partition publishing), the copy is byte for byte the
 *     unpaced one, and installs and reads back.
 */
#include "testfs.h"
#include "compressor.h"
#include "fileio.h"
#include "log.h"
#include "logging.h"
#include "partition.h"
#include "partsubmit.h"
#include "pb_errors.h"
#include "retharness.h"
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

#define EV_BYTES 100

static char root[64];
static char part_dir[128];
static compressor *zc;

/* The events of one batch (tests/lib/partsubmit submits and waits). */
static pub_event batch_ev[PARTSUBMIT_MAX];
static uint8_t ev_bytes[PARTSUBMIT_MAX][EV_BYTES];

/* Publishes 16 events of EV_BYTES (JSON-ish text) and waits for the ack. */
static void publish(partition *p, uint64_t seq)
{
    for (uint32_t i = 0; i < 16; i++) {
        uint8_t *e = ev_bytes[i];
        e[0] = 0x0a; /* topic "tt" */
        e[1] = 2;
        e[2] = 't';
        e[3] = 't';
        e[4] = 0x7a; /* field 15, bytes */
        e[5] = EV_BYTES - 6;
        memset(e + 6, ' ', EV_BYTES - 6);
        char text[EV_BYTES];
        int n = snprintf(text, sizeof text, "{\"sensor\":\"temp-%u\",\"value\":%llu}", i,
                         (unsigned long long)(seq * 16 + i));
        memcpy(e + 6, text, (size_t)n);
        batch_ev[i] = (pub_event){.data = e, .len = EV_BYTES, .topic = e + 2, .topic_len = 2};
    }
    assert_int_equal(partsubmit(p, batch_ev, 16), 0);
}

/* The writer stays while the compressor has a segment of its partition,
 * and hands over the next until none is left: dormant means done. */
static void wait_dormant(partition *p)
{
    for (int i = 0; i < 10000 && partition_writer_running(p); i++)
        usleep(1000);
    assert_false(partition_writer_running(p));
}

static partition_options popts(void)
{
    partition_options o = {0};
    o.log.segment_bytes = 2048;
    o.log.index_interval_bytes = 256;
    o.fsync = PARTITION_FSYNC_ALWAYS;
    o.topic_history = 4;
    o.idle_ms = 1;
    o.retain.compress_level = 3;
    o.compressor = zc;
    return o;
}

static bool is_compressed(const char *dir, uint64_t base)
{
    char path[256];
    uint8_t hdr[ZSEG_HEADER_END];
    assert_int_equal(segment_path(path, sizeof path, dir, base, ".log"), 0);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return false;
    ssize_t n = pread(fd, hdr, sizeof hdr, 0);
    close(fd);
    return n > 0 && zseg_is_compressed(hdr, (size_t)n);
}

/* Files of dir whose name ends in suffix. */
static size_t count_suffix(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0, sl = strlen(suffix);
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        n += l >= sl && strcmp(de->d_name + l - sl, suffix) == 0;
    }
    closedir(d);
    return n;
}

static void test_segments_compressed_by_the_thread(void **state)
{
    (void)state;
    partition_options o = popts();
    partition *p;
    uint64_t jobs0 = compressor_jobs_done(zc);
    assert_int_equal(partition_open(&p, root, "p", &o), 0);
    for (uint64_t i = 0; i < 20; i++)
        publish(p, i);
    wait_dormant(p);
    uint64_t bases[64];
    size_t n = testfs_list_bases(part_dir, bases, 64);
    assert_true(n >= 10);
    for (size_t i = 0; i + 1 < n; i++)
        assert_true(is_compressed(part_dir, bases[i]));
    assert_false(is_compressed(part_dir, bases[n - 1])); /* the active one */
    assert_true(compressor_jobs_done(zc) - jobs0 >= n - 1);
    assert_int_equal(count_suffix(part_dir, ".ztmp"), 0);
    assert_int_equal(rh_read_all(part_dir, NULL, 320), 0);
    assert_int_equal(partition_close(p), 0);
    /* Reopened: nothing more to do (no job for compressed segments). */
    jobs0 = compressor_jobs_done(zc);
    assert_int_equal(partition_open(&p, root, "p", &o), 0);
    publish(p, 20);
    wait_dormant(p);
    assert_int_equal(rh_read_all(part_dir, NULL, 336), 0);
    assert_int_equal(partition_close(p), 0);
    assert_true(compressor_jobs_done(zc) - jobs0 <= 1); /* at most a rotation's */
}

static pb_log *build_log(size_t events)
{
    pb_log *log;
    log_options lo = {.segment_bytes = 2048, .index_interval_bytes = 256};
    assert_int_equal(log_open(&log, part_dir, &lo), 0);
    uint8_t ev[EV_BYTES];
    memset(ev, 'j', sizeof ev);
    for (size_t i = 0; i < events; i++) {
        log_entry e = {.data = ev, .len = sizeof ev, .time_ns = 1};
        assert_int_equal(log_append(log, &e, 1, NULL), 0);
    }
    assert_int_equal(log_sync(log), 0);
    assert_true(log_closed_count(log) >= 3);
    return log;
}

static void test_removal_wins_over_a_prepared_copy(void **state)
{
    (void)state;
    pb_log *log = build_log(100);
    uint64_t b0 = log_closed_base(log, 0), b1 = log_closed_base(log, 1);
    uint64_t plain, packed;
    char why[256];
    /* The compressor wrote its copy of the oldest segment ... */
    assert_int_equal(log_compress_prepare(fileio_posix(), part_dir, b0, 3, NULL, &plain, &packed,
                                          why, sizeof why),
                     1);
    assert_int_equal(count_suffix(part_dir, ".ztmp"), 1);
    /* ... retention removes it before the writer installs the copy ... */
    assert_int_equal(log_remove_oldest(log, 1), 1);
    /* ... and the install removes the copy: the segment stays gone. */
    assert_int_equal(log_compress_install(log, b0), 0);
    assert_int_equal(count_suffix(part_dir, ".ztmp"), 0);
    char path[256];
    assert_int_equal(segment_path(path, sizeof path, part_dir, b0, ".log"), 0);
    assert_int_equal(access(path, F_OK), -1);
    /* Removed before the compressor opened it: nothing written. */
    assert_int_equal(log_remove_oldest(log, 1), 1);
    assert_int_equal(log_compress_prepare(fileio_posix(), part_dir, b1, 3, NULL, &plain, &packed,
                                          why, sizeof why),
                     -ENOENT);
    assert_non_null(strstr(why, "cannot open"));
    assert_int_equal(count_suffix(part_dir, ".ztmp"), 0);
    /* A segment still there is installed. */
    uint64_t b2 = log_closed_base(log, 0);
    assert_int_equal(log_compress_prepare(fileio_posix(), part_dir, b2, 3, NULL, &plain, &packed,
                                          why, sizeof why),
                     1);
    assert_int_equal(log_compress_install(log, b2), 1);
    assert_true(is_compressed(part_dir, b2));
    assert_int_equal(log_close(log), 0);
    assert_int_equal(rh_read_all(part_dir, NULL, 100), b2);
}

static void test_leftover_copy_removed_at_open(void **state)
{
    (void)state;
    pb_log *log = build_log(100);
    uint64_t b0 = log_closed_base(log, 0);
    uint64_t plain, packed;
    char why[256];
    assert_int_equal(log_compress_prepare(fileio_posix(), part_dir, b0, 3, NULL, &plain, &packed,
                                          why, sizeof why),
                     1);
    /* The crash came before the rename: the next open removes the copy. */
    assert_int_equal(log_close(log), 0);
    assert_int_equal(count_suffix(part_dir, ".ztmp"), 1);
    log_options lo = {.segment_bytes = 2048, .index_interval_bytes = 256};
    assert_int_equal(log_open(&log, part_dir, &lo), 0);
    assert_int_equal(count_suffix(part_dir, ".ztmp"), 0);
    assert_false(is_compressed(part_dir, b0));
    assert_int_equal(log_close(log), 0);
    assert_int_equal(rh_read_all(part_dir, NULL, 100), 0);
}

static void test_retention_and_compression_together(void **state)
{
    (void)state;
    partition_options o = popts();
    o.retain.bytes = 5000; /* about two compressed-or-not segments and the active one */
    partition *p;
    assert_int_equal(partition_open(&p, root, "p", &o), 0);
    for (uint64_t i = 0; i < 60; i++)
        publish(p, i);
    wait_dormant(p);
    uint64_t first = partition_first_offset(p);
    assert_true(first > 0);
    assert_int_equal(count_suffix(part_dir, ".ztmp"), 0);
    assert_int_equal(rh_read_all(part_dir, NULL, 960), first);
    assert_int_equal(partition_close(p), 0);
    assert_int_equal(partition_open(&p, root, "p", &o), 0);
    assert_int_equal(partition_first_offset(p), first);
    assert_int_equal(partition_close(p), 0);
    assert_int_equal(rh_read_all(part_dir, NULL, 960), first);
}

static void test_close_with_a_segment_at_the_compressor(void **state)
{
    (void)state;
    partition_options o = popts();
    o.idle_ms = 0; /* the writer stays: close it while it hands segments over */
    for (int round = 0; round < 5; round++) {
        partition *p;
        assert_int_equal(partition_open(&p, root, "p", &o), 0);
        for (uint64_t i = 0; i < 4; i++)
            publish(p, (uint64_t)round * 4 + i);
        assert_int_equal(partition_close(p), 0);
        assert_int_equal(count_suffix(part_dir, ".ztmp"), 0);
        assert_int_equal(rh_read_all(part_dir, NULL, (uint64_t)(round + 1) * 64), 0);
    }
}

static _Atomic int cancel_done;
static void cancel_job_done(compress_job *job)
{
    (void)job;
    atomic_store(&cancel_done, 1);
}

/* A compression in progress stops at its next block when its partition
 * takes the job back (closing): it leaves no .ztmp, and it ends with
 * -ECANCELED rather than finishing the segment (zstd level 19 of 4 MiB of
 * text: seconds of work, cancelled as soon as its .ztmp appears). */
static void test_cancel_stops_a_running_compression(void **state)
{
    (void)state;
    pb_log *log;
    log_options lo = {.segment_bytes = 4u << 20, .index_interval_bytes = 4096};
    assert_int_equal(log_open(&log, part_dir, &lo), 0);
    uint8_t ev[1000];
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < 5000; i++) {
        for (size_t k = 0; k < sizeof ev; k++) { /* text of random words: slow to compress */
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            ev[k] = (uint8_t)("abcdefghij klmnop"[x % 17]);
        }
        log_entry e = {.data = ev, .len = sizeof ev, .time_ns = 1};
        assert_int_equal(log_append(log, &e, 1, NULL), 0);
    }
    assert_int_equal(log_sync(log), 0);
    assert_true(log_closed_count(log) >= 1);
    static compress_job job;
    job = (compress_job){.io = fileio_posix(),
                         .dir = part_dir,
                         .base = log_closed_base(log, 0),
                         .level = 19,
                         .done = cancel_job_done};
    atomic_store(&cancel_done, 0);
    compressor_submit(zc, &job);
    /* Running once its .ztmp exists. */
    for (int i = 0; i < 60000 && count_suffix(part_dir, ".ztmp") == 0 && !atomic_load(&cancel_done);
         i++)
        usleep(1000);
    assert_int_equal(count_suffix(part_dir, ".ztmp"), 1);
    assert_false(compressor_cancel(zc, &job)); /* it was running */
    assert_true(atomic_load(&cancel_done));
    assert_int_equal(job.rc, -ECANCELED);
    assert_non_null(strstr(job.why, "closing"));
    assert_int_equal(count_suffix(part_dir, ".ztmp"), 0);
    assert_int_equal(log_close(log), 0);
}

/* Reads a whole file into a malloc'ed buffer (*n bytes). */
static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long len = ftell(f);
    assert_true(len > 0);
    rewind(f);
    uint8_t *b = malloc((size_t)len);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

/* Paced while its partition publishes (the writer's last take recent: here
 * in the future, so every block of the 4 MiB segment is followed by a
 * rest), the compressor writes exactly the copy it writes unpaced, and it
 * installs and reads back. */
static void test_paced_copy_is_the_same(void **state)
{
    (void)state;
    pb_log *log;
    log_options lo = {.segment_bytes = 4u << 20, .index_interval_bytes = 4096};
    assert_int_equal(log_open(&log, part_dir, &lo), 0);
    uint8_t ev[1000];
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < 5000; i++) {
        for (size_t k = 0; k < sizeof ev; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            ev[k] = (uint8_t)("abcdefghij klmnop"[x % 17]);
        }
        log_entry e = {.data = ev, .len = sizeof ev, .time_ns = 1};
        assert_int_equal(log_append(log, &e, 1, NULL), 0);
    }
    assert_int_equal(log_sync(log), 0);
    assert_true(log_closed_count(log) >= 1);
    uint64_t b0 = log_closed_base(log, 0), plain, packed;
    char why[256], tmp[256];
    assert_int_equal(segment_path(tmp, sizeof tmp, part_dir, b0, ".log.ztmp"), 0);
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    _Atomic uint64_t active;
    atomic_init(&active, (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec +
                             60ull * 1000000000ull);
    assert_int_equal(log_compress_prepare_paced(fileio_posix(), part_dir, b0, 1, NULL, &active,
                                                &plain, &packed, why, sizeof why),
                     1);
    size_t n_paced, n_plain;
    uint8_t *paced = slurp(tmp, &n_paced);
    assert_true(n_paced > 256u * 1024u / 8); /* several blocks */
    assert_int_equal(unlink(tmp), 0);
    assert_int_equal(log_compress_prepare(fileio_posix(), part_dir, b0, 1, NULL, &plain, &packed,
                                          why, sizeof why),
                     1);
    uint8_t *unpaced = slurp(tmp, &n_plain);
    assert_int_equal(n_paced, n_plain);
    assert_memory_equal(paced, unpaced, n_plain);
    free(paced);
    free(unpaced);
    assert_int_equal(log_compress_install(log, b0), 1);
    assert_true(is_compressed(part_dir, b0));
    assert_int_equal(log_close(log), 0);
    assert_int_equal(rh_read_all(part_dir, NULL, 5000), 0);
}

static int setup(void **state)
{
    (void)state;
    return testfs_make_root(root, sizeof root, "pb_test_zthread", part_dir, sizeof part_dir);
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
    if (compressor_start(&zc) < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_segments_compressed_by_the_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_removal_wins_over_a_prepared_copy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leftover_copy_removed_at_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention_and_compression_together, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_with_a_segment_at_the_compressor, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cancel_stops_a_running_compression, setup, teardown),
        cmocka_unit_test_setup_teardown(test_paced_copy_is_the_same, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    compressor_stop(zc);
    return rc;
}
