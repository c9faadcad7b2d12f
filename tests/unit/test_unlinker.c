/*
 * test_unlinker - the unlinker thread frees a large removed file in steps
 * (truncating it from its end, UNLINKER_STEP_BYTES at a time) only when
 * its own descriptor is the file's only one; a file that a reader still
 * has open is never shrunk under it (a reader keeps reading a removed
 * segment to its end), by path (a .log.del) or by descriptor (a plain
 * segment a compressed copy replaced). See server/unlinker.h. Recycling
 * (recycle.h): a removed segment becomes a zeroed spare (zeros synced
 * before its spare name, the directory after) while fewer than the bound
 * exist, and never when a reader or a hard link has it, or the file system
 * cannot zero a range.
 */
#include "crc32c.h"
#include "fileio.h"
#include "logging.h"
#include "record.h"
#include "zseg.h"
#include "testfs.h"
#include "unlinker.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#define MIB (1024 * 1024)

static char root[64];
static char path[128];

/* The posix layer, counting the truncations (the unlinker's steps). */
static fileio counting_io;
static _Atomic int truncs;
static _Atomic int64_t last_len;
static _Atomic int bad_step; /* a step that did not cut exactly one step */

static _Atomic int64_t want_step = UNLINKER_STEP_BYTES;

/* Counts the truncations that took effect. */
static int counting_ftruncate(const fileio *io, int fd, off_t len)
{
    int rc = fileio_posix()->ftruncate(io, fd, len);
    if (rc < 0)
        return rc;
    int64_t before = atomic_load(&last_len);
    if (before - (int64_t)len != atomic_load(&want_step))
        atomic_store(&bad_step, 1);
    atomic_store(&last_len, (int64_t)len);
    atomic_fetch_add(&truncs, 1);
    return rc;
}

/* Whether this file system gives leases (fileio sole_open): the step
 * tests are skipped where it does not (leases-enable = 0, some overlay
 * file systems), as the daemon then unlinks whole. */
static bool leases_ok(void)
{
    char probe[160];
    snprintf(probe, sizeof probe, "%s/probe", root);
    int fd = open(probe, O_CREAT | O_RDWR, 0644);
    if (fd < 0)
        return false;
    (void)unlink(probe);
    int rc = fileio_posix()->sole_open(fileio_posix(), fd);
    close(fd);
    return rc == 1;
}

#define NEED_LEASES()                                                                              \
    do {                                                                                           \
        if (!leases_ok()) {                                                                        \
            print_message("leases refused here: skipped\n");                                      \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

static int link_path(const char *from, const char *to)
{
    return link(from, to);
}

/* A file of len bytes whose content is a function of its position. */
static void make_file(size_t len)
{
    uint8_t *data = malloc(len);
    assert_non_null(data);
    for (size_t i = 0; i < len; i += 8) {
        uint64_t v = testfs_mix64(i);
        memcpy(data + i, &v, len - i < 8 ? len - i : 8);
    }
    testfs_write_file(path, data, len);
    free(data);
}

/* fd reads the whole file as make_file wrote it. */
static void assert_whole(int fd, size_t len)
{
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_size, (off_t)len);
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    assert_int_equal(pread(fd, buf, len, 0), (ssize_t)len);
    for (size_t i = 0; i < len; i += 8) {
        uint64_t v = testfs_mix64(i);
        assert_memory_equal(buf + i, &v, len - i < 8 ? len - i : 8);
    }
    free(buf);
}

static void reset_counts(off_t size)
{
    atomic_store(&want_step, UNLINKER_STEP_BYTES);
    atomic_store(&truncs, 0);
    atomic_store(&bad_step, 0);
    atomic_store(&last_len, (int64_t)size);
}

/* A removed segment nobody has open: cut from its end one step at a time,
 * down to one step or less, then unlinked. */
static void test_path_freed_in_steps(void **state)
{
    (void)state;
    NEED_LEASES();
    size_t len = 4 * MIB + MIB / 2;
    make_file(len);
    reset_counts((off_t)len);
    unlinker *u;
    assert_int_equal(unlinker_start(&u), 0);
    assert_int_equal(unlinker_take(u, &counting_io, path), 0);
    unlinker_flush(u);
    assert_int_equal(atomic_load(&truncs), 4); /* 3.5, 2.5, 1.5, 0.5 MiB */
    assert_int_equal(atomic_load(&bad_step), 0);
    assert_int_equal(atomic_load(&last_len), MIB / 2);
    assert_int_equal(access(path, F_OK), -1); /* then unlinked */
    assert_int_equal(unlinker_done(u), 1);
    assert_int_equal(unlinker_stepped(u), 1);
    unlinker_stop(u);
}

/* A reader that opened the segment before its removal keeps reading it
 * to its end: the unlinker's lease is refused, nothing is truncated, and
 * the unlink leaves the reader's file whole. */
static void test_path_held_by_reader_not_shrunk(void **state)
{
    (void)state;
    size_t len = 3 * MIB;
    make_file(len);
    int reader = open(path, O_RDONLY);
    assert_true(reader >= 0);
    reset_counts((off_t)len);
    unlinker *u;
    assert_int_equal(unlinker_start(&u), 0);
    assert_int_equal(unlinker_take(u, &counting_io, path), 0);
    unlinker_flush(u);
    assert_int_equal(atomic_load(&truncs), 0);
    assert_int_equal(unlinker_stepped(u), 0);
    assert_int_equal(access(path, F_OK), -1); /* unlinked all the same */
    assert_whole(reader, len);
    close(reader);
    unlinker_stop(u);
}

/* A replaced plain segment, handed over as the writer's (writable)
 * descriptor with its name gone: freed in steps, then closed. */
static void test_fd_freed_in_steps(void **state)
{
    (void)state;
    NEED_LEASES();
    size_t len = 3 * MIB + 100;
    make_file(len);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(unlink(path), 0); /* as the rename over it does */
    reset_counts((off_t)len);
    unlinker *u;
    assert_int_equal(unlinker_start(&u), 0);
    assert_int_equal(unlinker_take_fd(u, &counting_io, fd), 0);
    unlinker_flush(u);
    assert_int_equal(atomic_load(&truncs), 3);
    assert_int_equal(atomic_load(&bad_step), 0);
    assert_int_equal(fcntl(fd, F_GETFD), -1); /* closed by the thread */
    assert_int_equal(unlinker_stepped(u), 1);
    unlinker_stop(u);
}

/* The same with a reader on the replaced file (it opened the plain
 * segment before the compressed copy was installed): left whole. */
static void test_fd_held_by_reader_not_shrunk(void **state)
{
    (void)state;
    size_t len = 2 * MIB + 7;
    make_file(len);
    int fd = open(path, O_RDWR);
    int reader = open(path, O_RDONLY);
    assert_true(fd >= 0 && reader >= 0);
    assert_int_equal(unlink(path), 0);
    reset_counts((off_t)len);
    unlinker *u;
    assert_int_equal(unlinker_start(&u), 0);
    assert_int_equal(unlinker_take_fd(u, &counting_io, fd), 0);
    unlinker_flush(u);
    assert_int_equal(atomic_load(&truncs), 0);
    assert_int_equal(fcntl(fd, F_GETFD), -1);
    assert_whole(reader, len);
    close(reader);
    unlinker_stop(u);
}

/* No steps for a file of one step or less (an index), for a read-only
 * descriptor (the truncation is refused: closed as it is), or through a
 * layer without leases (it cannot tell whether a reader has the file). */
static void test_no_steps_when_small_readonly_or_no_leases(void **state)
{
    (void)state;
    unlinker *u;
    assert_int_equal(unlinker_start(&u), 0);

    make_file(MIB);
    reset_counts(MIB);
    assert_int_equal(unlinker_take(u, &counting_io, path), 0);
    unlinker_flush(u);
    assert_int_equal(atomic_load(&truncs), 0);
    assert_int_equal(access(path, F_OK), -1);

    size_t len = 2 * MIB + 1;
    make_file(len);
    int ro = open(path, O_RDONLY);
    assert_true(ro >= 0);
    assert_int_equal(unlink(path), 0);
    reset_counts((off_t)len);
    assert_int_equal(unlinker_take_fd(u, &counting_io, ro), 0);
    unlinker_flush(u);
    assert_int_equal(fcntl(ro, F_GETFD), -1);
    assert_int_equal(atomic_load(&truncs), 0); /* refused: closed whole */

    fileio no_leases = counting_io;
    no_leases.sole_open = NULL;
    make_file(len);
    reset_counts((off_t)len);
    assert_int_equal(unlinker_take(u, &no_leases, path), 0);
    unlinker_flush(u);
    assert_int_equal(atomic_load(&truncs), 0);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(unlinker_done(u), 3);
    assert_int_equal(unlinker_stepped(u), 0);
    unlinker_stop(u);
}

/* A hard link (a backup's `cp -al`) shares the data: the unlinker only
 * removes its own name, by path and by descriptor, and the link is whole. */
static void test_hard_link_left_whole(void **state)
{
    (void)state;
    char other[160];
    snprintf(other, sizeof other, "%s/backup-link", root);
    size_t len = 3 * MIB;
    make_file(len);
    assert_int_equal(link_path(path, other), 0);
    reset_counts((off_t)len);
    unlinker *u;
    assert_int_equal(unlinker_start(&u), 0);
    assert_int_equal(unlinker_take(u, &counting_io, path), 0);
    unlinker_flush(u);
    assert_int_equal(atomic_load(&truncs), 0);
    assert_int_equal(access(path, F_OK), -1);
    int fd = open(other, O_RDONLY);
    assert_true(fd >= 0);
    assert_whole(fd, len);
    close(fd);
    assert_int_equal(unlink(other), 0);

    make_file(len); /* a replaced plain segment with a second name */
    assert_int_equal(link_path(path, other), 0);
    fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(unlinker_take_fd(u, &counting_io, fd), 0);
    unlinker_flush(u);
    assert_int_equal(atomic_load(&truncs), 0);
    fd = open(other, O_RDONLY);
    assert_true(fd >= 0);
    assert_whole(fd, len);
    close(fd);
    assert_int_equal(unlinker_stepped(u), 0);
    unlinker_stop(u);
}

/* Only a removed segment (.log.del) is stepped by path: an index or a
 * compressed copy, which a reader may open by name, is unlinked whole. */
static void test_only_log_del_paths_stepped(void **state)
{
    (void)state;
    NEED_LEASES();
    char idx[128];
    snprintf(idx, sizeof idx, "%s/00000000000000000000.idx", root);
    snprintf(path, sizeof path, "%s", idx);
    make_file(2 * MIB);
    reset_counts(2 * MIB);
    unlinker *u;
    assert_int_equal(unlinker_start(&u), 0);
    assert_int_equal(unlinker_take(u, &counting_io, idx), 0);
    unlinker_flush(u);
    assert_int_equal(atomic_load(&truncs), 0);
    assert_int_equal(access(idx, F_OK), -1);
    assert_int_equal(unlinker_stepped(u), 0);
    unlinker_stop(u);
}

/* A huge segment takes at most UNLINKER_MAX_STEPS steps (larger ones). */
static void test_steps_bounded(void **state)
{
    (void)state;
    NEED_LEASES();
    off_t len = (off_t)UNLINKER_MAX_STEPS * 4 * MIB; /* sparse: nothing to free */
    int fd = open(path, O_CREAT | O_RDWR, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, len), 0);
    assert_int_equal(unlink(path), 0);
    reset_counts(len);
    atomic_store(&want_step, 4 * MIB);
    unlinker *u;
    assert_int_equal(unlinker_start(&u), 0);
    assert_int_equal(unlinker_take_fd(u, &counting_io, fd), 0);
    unlinker_flush(u);
    assert_int_equal(atomic_load(&truncs), UNLINKER_MAX_STEPS - 1);
    assert_int_equal(atomic_load(&bad_step), 0);
    unlinker_stop(u);
}

static int setup(void **state)
{
    (void)state;
    snprintf(root, sizeof root, "/tmp/pb_test_unl.XXXXXX");
    if (!mkdtemp(root))
        return -1;
    snprintf(path, sizeof path, "%s/00000000000000000000.log.del", root);
    counting_io = *fileio_posix();
    counting_io.ftruncate = counting_ftruncate;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return testfs_rmrf(root);
}

/* ---- recycling (recycle.h): removed segments zeroed into spares ---- */

static char ops_seen[64]; /* the recycling's file calls, in order */
static _Atomic int nops;

static void saw(char c)
{
    int i = atomic_fetch_add(&nops, 1);
    if (i < (int)sizeof ops_seen - 1)
        ops_seen[i] = c;
}

static int rec_zero(const fileio *io, int fd, off_t off, off_t len)
{
    saw('Z');
    return fileio_posix()->zero_range(io, fd, off, len);
}

static int rec_fdatasync(const fileio *io, int fd)
{
    saw('S');
    return fileio_posix()->fdatasync(io, fd);
}

static int rec_rename(const fileio *io, const char *from, const char *to)
{
    saw('R');
    return fileio_posix()->rename(io, from, to);
}

static int rec_fsync(const fileio *io, int fd)
{
    saw('D');
    return fileio_posix()->fsync(io, fd);
}

static int no_zero_range(const fileio *io, int fd, off_t off, off_t len)
{
    return -EOPNOTSUPP;
}

static fileio recording_io(void)
{
    fileio io = *fileio_posix();
    io.zero_range = rec_zero;
    io.fdatasync = rec_fdatasync;
    io.rename = rec_rename;
    io.fsync = rec_fsync;
    memset(ops_seen, 0, sizeof ops_seen);
    atomic_store(&nops, 0);
    return io;
}

/* Whether this file system zeroes ranges for us (ext4: yes; tmpfs, some
 * overlays: no, and the daemon then frees as before; the tests that need it
 * say "skipped" then). */
static bool zero_range_ok(void)
{
    char probe[160];
    snprintf(probe, sizeof probe, "%s/zprobe", root);
    int fd = open(probe, O_CREAT | O_RDWR, 0644);
    if (fd < 0)
        return false;
    bool ok = ftruncate(fd, 4096) == 0 && fileio_posix()->zero_range(fileio_posix(), fd, 0, 4096) == 0;
    close(fd);
    (void)unlink(probe);
    return ok;
}

#define NEED_ZERO_RANGE()                                                                          \
    do {                                                                                           \
        if (!zero_range_ok()) {                                                                    \
            print_message("no ZERO_RANGE or leases here: skipped\n");                              \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

static void del_path(char *out, size_t cap, int base)
{
    snprintf(out, cap, "%s/%020d.log.del", root, base);
}

static void assert_zeros(const char *p, size_t len)
{
    size_t got;
    uint8_t *buf = testfs_read_file(p, &got);
    assert_int_equal(got, len);
    for (size_t i = 0; i < len; i++)
        if (buf[i])
            fail_msg("%s: byte %zu is not zero", p, i);
    free(buf);
}

/* Removed segments become zeroed spares, zeros synced before the name and
 * the directory synced after it, while fewer than the bound exist; the
 * next one is freed as before. The ledger (recycle.h) names each spare
 * made, with its bytes, and not the one freed. */
static void test_recycled_into_spares_up_to_the_bound(void **state)
{
    (void)state;
    NEED_ZERO_RANGE();
    size_t len = 2 * MIB + 4096;
    char del[3][128], spare[160];
    fileio io = recording_io();
    unlinker *u;
    assert_int_equal(unlinker_start(&u), 0);
    spare_ledger *l = spare_ledger_new();
    assert_non_null(l);
    for (int i = 0; i < 3; i++) {
        del_path(del[i], sizeof del[i], i);
        memcpy(path, del[i], sizeof path);
        make_file(len);
        assert_int_equal(unlinker_take_recycle(u, &io, del[i], 2, l), 0);
        unlinker_flush(u);
        /* Spare i entered in slot i; the third, freed, changes neither. */
        for (int k = 0; k < 2; k++)
            assert_int_equal(atomic_load(&l->slot[k]), k <= i ? len + 1 : 0);
    }
    spare_ledger_drop(l);
    assert_string_equal(ops_seen, "ZSRDZSRD"); /* the third: no free slot, no zeroing */
    for (unsigned k = 0; k < 2; k++) {
        snprintf(spare, sizeof spare, "%s/spare.%u", root, k);
        assert_zeros(spare, len);
    }
    snprintf(spare, sizeof spare, "%s/spare.2", root);
    for (int i = 0; i < 3; i++)
        assert_int_equal(access(del[i], F_OK), -1);
    assert_int_equal(access(spare, F_OK), -1);
    assert_int_equal(unlinker_recycled(u), 2);
    assert_int_equal(unlinker_done(u), 3);
    unlinker_stop(u);
}

/* What must not be zeroed is freed as before, never zeroed: a file a
 * reader has open (it keeps reading its records), one a hard link shares
 * (the link keeps its data), a file system without ZERO_RANGE, a
 * compressed segment, recycling off (spares 0), and a path that is no
 * removed segment. */
static void test_not_recycled(void **state)
{
    (void)state;
    NEED_ZERO_RANGE();
    size_t len = 2 * MIB;
    char other[160];
    unlinker *u;
    assert_int_equal(unlinker_start(&u), 0);
    fileio io = *fileio_posix();

    make_file(len); /* a reader has it open */
    int reader = open(path, O_RDONLY);
    assert_true(reader >= 0);
    assert_int_equal(unlinker_take_recycle(u, &io, path, 2, NULL), 0);
    unlinker_flush(u);
    assert_whole(reader, len);
    close(reader);

    make_file(len); /* a hard link */
    snprintf(other, sizeof other, "%s/backup-link", root);
    assert_int_equal(link_path(path, other), 0);
    assert_int_equal(unlinker_take_recycle(u, &io, path, 2, NULL), 0);
    unlinker_flush(u);
    int fd = open(other, O_RDONLY);
    assert_true(fd >= 0);
    assert_whole(fd, len);
    close(fd);
    assert_int_equal(unlink(other), 0);

    make_file(len); /* no ZERO_RANGE */
    fileio nz = io;
    nz.zero_range = no_zero_range;
    assert_int_equal(unlinker_take_recycle(u, &nz, path, 2, NULL), 0);
    unlinker_flush(u);

    make_file(len); /* a compressed segment (its zseg header: magic and CRC) */
    uint8_t z[ZSEG_HEADER_END - PB_FILE_HEADER_SIZE] = {0};
    memcpy(z, ZSEG_MAGIC, 8);
    uint32_t zc = crc32c(0, z, 28);
    memcpy(z + 28, &zc, 4); /* little-endian host */
    int zfd = open(path, O_WRONLY);
    assert_true(zfd >= 0);
    assert_int_equal(pwrite(zfd, z, sizeof z, PB_FILE_HEADER_SIZE), (ssize_t)sizeof z);
    close(zfd);
    assert_int_equal(unlinker_take_recycle(u, &io, path, 2, NULL), 0);
    unlinker_flush(u);

    make_file(len); /* off; the queued path holds its own reference (ASan: no early free) */
    spare_ledger *l = spare_ledger_new();
    assert_non_null(l);
    assert_int_equal(unlinker_take_recycle(u, &io, path, 0, l), 0);
    spare_ledger_drop(l);
    unlinker_flush(u);

    snprintf(path, sizeof path, "%s/00000000000000000000.idx", root); /* not a segment */
    make_file(len);
    assert_int_equal(unlinker_take_recycle(u, &io, path, 2, NULL), 0);
    unlinker_flush(u);

    assert_int_equal(access(path, F_OK), -1);
    snprintf(other, sizeof other, "%s/spare.0", root);
    assert_int_equal(access(other, F_OK), -1);
    assert_int_equal(unlinker_recycled(u), 0);
    assert_int_equal(unlinker_done(u), 6);
    unlinker_stop(u);
}

int main(void)
{
    if (!getenv("PB_TEST_VERBOSE"))
        logging_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_path_freed_in_steps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_path_held_by_reader_not_shrunk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fd_freed_in_steps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fd_held_by_reader_not_shrunk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_steps_when_small_readonly_or_no_leases, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_hard_link_left_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(test_only_log_del_paths_stepped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_steps_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recycled_into_spares_up_to_the_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_recycled, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
