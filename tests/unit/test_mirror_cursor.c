/* Tests for server/mirror_cursor: the cursor file's round trip, what load
 * refuses (damage, another mirror's file, bad lines) with a message naming
 * the file and line, and crash safety under the power-loss simulation
 * (tests/lib/simio): a power cut at every operation of a save, each under
 * several seeds, leaves the old file or the new one, whole; never a
 * damaged or missing one. The same rounds with a sim whose fsync does
 * nothing must show a loss: that proves the check can fail. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "crc32c.h"
#include "mirror_cursor.h"
#include "pb_errors.h"
#include "simio.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIR  "/data"
#define PATH "/data/mirror@m.cursor"

static const char *names_v1[] = {"events", "sensors-a"};
static uint64_t offsets_v1[] = {10, 20};
static const char *names_v2[] = {"events", "sensors-a", "sensors-b"};
static uint64_t offsets_v2[] = {1000, 2000, 3};
/* v2 also has the optional fields: order-from, and SEQ AT on two lines. */
static uint64_t seqs_v2[] = {2999, 0, 3001}, seq_offsets_v2[] = {999, 0, 2};

static mirror_cursors version(int v)
{
    mirror_cursors c = {.stream = "S",
                        .acked_seq = v == 1 ? 30 : 3003,
                        .partitions = (char **)(v == 1 ? names_v1 : names_v2),
                        .offsets = v == 1 ? offsets_v1 : offsets_v2,
                        .order_from = v == 1 ? 0 : 2990,
                        .seqs = v == 1 ? NULL : seqs_v2,
                        .seq_offsets = v == 1 ? NULL : seq_offsets_v2,
                        .count = v == 1 ? 2 : 3};
    return c;
}

static uint64_t at(const uint64_t *a, size_t i)
{
    return a ? a[i] : 0;
}

/* Which version the loaded cursors are: 1, 2, or 0 (neither). */
static int which(const mirror_cursors *c)
{
    for (int v = 1; v <= 2; v++) {
        mirror_cursors w = version(v);
        if (c->count != w.count || c->acked_seq != w.acked_seq || strcmp(c->stream, w.stream) ||
            c->order_from != w.order_from)
            continue;
        bool same = true;
        for (size_t i = 0; i < w.count; i++)
            same = same && strcmp(c->partitions[i], w.partitions[i]) == 0 &&
                   c->offsets[i] == w.offsets[i] && at(c->seqs, i) == at(w.seqs, i) &&
                   (!at(w.seqs, i) || at(c->seq_offsets, i) == at(w.seq_offsets, i));
        if (same)
            return v;
    }
    return 0;
}

static simio *new_sim(void)
{
    simio *sim;
    assert_int_equal(simio_create(&sim), 0);
    assert_int_equal(simio_add_root(sim, DIR), 0);
    return sim;
}

static void save(simio *sim, int v)
{
    mirror_cursors c = version(v);
    char why[256];
    int rc = mirror_cursor_save(simio_io(sim), DIR, PATH, "m", &c, why, sizeof why);
    if (rc != 0)
        fail_msg("save: %s", why);
}

static void test_round_trip(void **state)
{
    (void)state;
    simio *sim = new_sim();
    mirror_cursors c;
    char why[256];
    assert_int_equal(mirror_cursor_load(simio_io(sim), PATH, "m", &c, why, sizeof why),
                     PB_ENOTFOUND);
    save(sim, 1);
    assert_int_equal(mirror_cursor_load(simio_io(sim), PATH, "m", &c, why, sizeof why), 0);
    assert_int_equal(which(&c), 1);
    mirror_cursors_free(&c);
    save(sim, 2);
    assert_int_equal(mirror_cursor_load(simio_io(sim), PATH, "m", &c, why, sizeof why), 0);
    assert_int_equal(which(&c), 2);
    mirror_cursors_free(&c);
    /* Empty: a mirror with no partitions yet. */
    mirror_cursors none = {.stream = "S"};
    assert_int_equal(mirror_cursor_save(simio_io(sim), DIR, PATH, "m", &none, why, sizeof why), 0);
    assert_int_equal(mirror_cursor_load(simio_io(sim), PATH, "m", &c, why, sizeof why), 0);
    assert_int_equal(c.count, 0);
    mirror_cursors_free(&c);
    char path[64];
    assert_int_equal(mirror_cursor_path(path, sizeof path, "/d", "x"), 0);
    assert_string_equal(path, "/d/mirror@x.cursor");
    assert_int_equal(mirror_cursor_path(path, 8, "/d", "x"), PB_ETOOBIG);
    simio_destroy(sim);
}

/* Writes text as the whole file at PATH (durably). */
static void put_file(simio *sim, const char *text)
{
    const fileio *io = simio_io(sim);
    int fd = io->open(io, PATH, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    struct iovec iov = {.iov_base = (void *)text, .iov_len = strlen(text)};
    assert_int_equal(fileio_write_all(io, fd, &iov, 1, 0), 0);
    assert_int_equal(io->fdatasync(io, fd), 0);
    assert_int_equal(io->close(io, fd), 0);
}

static void refused(simio *sim, const char *name, const char *why_part)
{
    mirror_cursors c;
    char why[512] = "";
    int rc = mirror_cursor_load(simio_io(sim), PATH, name, &c, why, sizeof why);
    if (rc != PB_EFORMAT)
        fail_msg("loaded (rc %d), expected a refusal saying \"%s\"", rc, why_part);
    if (!strstr(why, why_part) || !strstr(why, PATH))
        fail_msg("message \"%s\" does not name the file and \"%s\"", why, why_part);
}

/* A file with its checksum line computed over `body`. */
static void put_with_crc(simio *sim, const char *body)
{
    char text[1024];
    snprintf(text, sizeof text, "%scrc32c %08x\n", body, crc32c(0, body, strlen(body)));
    put_file(sim, text);
}

static void test_refusals(void **state)
{
    (void)state;
    simio *sim = new_sim();
    save(sim, 2);
    refused(sim, "other", "expected \"mirror other\"");

    /* One flipped byte anywhere is damage. */
    const fileio *io = simio_io(sim);
    int fd = io->open(io, PATH, O_RDWR, 0);
    char byte;
    assert_int_equal(io->pread(io, fd, &byte, 1, 40), 1);
    byte ^= 1;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    assert_int_equal(fileio_write_all(io, fd, &iov, 1, 40), 0);
    io->close(io, fd);
    refused(sim, "m", "checksum");

    put_file(sim, "protobus-mirror-cursor 1\nmirror m\nstream S\nacked-seq 3\n");
    refused(sim, "m", "checksum");
    put_file(sim, "protobus-mirror-cursor 1\nmirror m\nstream S\nacked-seq 3\ncrc32c 0");
    refused(sim, "m", "whole line");
    put_with_crc(sim, "something else\n");
    refused(sim, "m", "not \"protobus-mirror-cursor 1\"");
    put_with_crc(sim, "protobus-mirror-cursor 1\nmirror m\nstream S\nacked-seq x\n");
    refused(sim, "m", ":4: expected \"acked-seq N\"");
    put_with_crc(sim, "protobus-mirror-cursor 1\nmirror m\nstream S\nacked-seq 1\n"
                      "partition b 1\npartition a 2\n");
    refused(sim, "m", ":6: partitions out of order");
    put_with_crc(sim, "protobus-mirror-cursor 1\nmirror m\nstream S\nacked-seq 1\n"
                      "partition a/b 1\n");
    refused(sim, "m", ":5: expected \"partition NAME OFFSET");
    put_with_crc(sim, "protobus-mirror-cursor 1\nmirror m\nstream S\nacked-seq 1\n"
                      "partition a -1\n");
    refused(sim, "m", ":5: expected \"partition NAME OFFSET");
    /* The optional fields: both or neither; order-from only on line 5. */
    put_with_crc(sim, "protobus-mirror-cursor 1\nmirror m\nstream S\nacked-seq 1\n"
                      "partition a 1 7\n");
    refused(sim, "m", ":5: expected \"partition NAME OFFSET [SEQ AT]\"");
    put_with_crc(sim, "protobus-mirror-cursor 1\nmirror m\nstream S\nacked-seq 1\n"
                      "partition a 1 7 x\n");
    refused(sim, "m", ":5: expected \"partition NAME OFFSET [SEQ AT]\"");
    put_with_crc(sim, "protobus-mirror-cursor 1\nmirror m\nstream S\nacked-seq 1\n"
                      "order-from\n");
    refused(sim, "m", ":5: expected \"order-from N\"");
    put_with_crc(sim, "protobus-mirror-cursor 1\nmirror m\nstream S\nacked-seq 1\n"
                      "partition a 1\norder-from 3\n");
    refused(sim, "m", ":6: expected \"partition NAME OFFSET");
    put_with_crc(sim, "protobus-mirror-cursor 1\nmirror m\n");
    refused(sim, "m", "cut short");
    put_with_crc(sim, "protobus-mirror-cursor 1\nmirror m\nstream S\nacked-seq 1\n"
                      "partition a 18446744073709551615\n");
    mirror_cursors c;
    char why[256];
    assert_int_equal(mirror_cursor_load(io, PATH, "m", &c, why, sizeof why), 0);
    assert_int_equal(c.offsets[0], UINT64_MAX);
    mirror_cursors_free(&c);
    simio_destroy(sim);
}

/* One round: v1 saved (durable), then saving v2 with the power cut at
 * operation `crash_at`; after the power comes back (seeded), load. Returns
 * the version found, or 0 for a damaged or missing file. */
static int round_at(uint64_t crash_at, uint64_t seed, bool broken)
{
    simio *sim = new_sim();
    save(sim, 1);
    simio_set_broken_fsync(sim, broken);
    simio_restart(sim); /* count operations from here */
    simio_crash_at(sim, crash_at);
    mirror_cursors c = version(2);
    char why[256];
    int rc = mirror_cursor_save(simio_io(sim), DIR, PATH, "m", &c, why, sizeof why);
    bool down = simio_is_down(sim);
    assert_int_equal(simio_power_loss(sim, seed, NULL), 0);
    simio_set_broken_fsync(sim, false);
    mirror_cursors got;
    int v = 0;
    if (mirror_cursor_load(simio_io(sim), PATH, "m", &got, why, sizeof why) == 0) {
        v = which(&got);
        mirror_cursors_free(&got);
    }
    /* A save that returned 0 before the power went is durable. */
    if (!broken && rc == 0 && !down && v != 2)
        fail_msg("crash at %llu seed %llu: a completed save was lost (found version %d)",
                 (unsigned long long)crash_at, (unsigned long long)seed, v);
    simio_destroy(sim);
    return v;
}

static void test_power_loss(void **state)
{
    (void)state;
    /* How many operations one save takes (plus slack: the last points are
     * after the save, when the power loss finds everything synced). */
    simio *sim = new_sim();
    simio_restart(sim);
    save(sim, 2);
    uint64_t ops = simio_ops(sim) + 2;
    simio_destroy(sim);

    int seen[3] = {0};
    for (uint64_t k = 1; k <= ops; k++)
        for (uint64_t seed = 1; seed <= 40; seed++) {
            int v = round_at(k, seed * 7919 + k, false);
            if (v == 0)
                fail_msg("power cut at operation %llu (seed %llu): the cursor file is damaged "
                         "or missing",
                         (unsigned long long)k, (unsigned long long)seed);
            seen[v]++;
        }
    /* Both outcomes happen: the test covers cuts before and after the
     * rename became durable. */
    printf("power loss at %llu operations x 40 seeds: old file %d times, new file %d times\n",
           (unsigned long long)ops, seen[1], seen[2]);
    assert_true(seen[1] > 0);
    assert_true(seen[2] > 0);
}

/* The same rounds with an fsync that does nothing: some power cut must
 * lose the file (or the new version after a completed save). */
static void test_power_loss_catches_broken_fsync(void **state)
{
    (void)state;
    int lost = 0;
    for (uint64_t k = 1; k <= 12 && !lost; k++)
        for (uint64_t seed = 1; seed <= 40 && !lost; seed++)
            lost = round_at(k, seed * 104729 + k, true) == 0;
    /* Also a completed save whose data never reached the disk. */
    for (uint64_t seed = 1; seed <= 40 && !lost; seed++) {
        simio *sim = new_sim();
        simio_set_broken_fsync(sim, true);
        save(sim, 2);
        assert_int_equal(simio_power_loss(sim, seed, NULL), 0);
        mirror_cursors got;
        char why[256];
        lost = mirror_cursor_load(simio_io(sim), PATH, "m", &got, why, sizeof why) != 0;
        if (!lost)
            mirror_cursors_free(&got);
        simio_destroy(sim);
    }
    assert_true(lost);
}

/* I/O errors are reported with the step and the file, never ignored. */
static void test_io_errors(void **state)
{
    (void)state;
    const struct {
        unsigned op;
        const char *step;
    } faults[] = {{SIMIO_OPEN, "open"},
                  {SIMIO_PWRITEV, "write"},
                  {SIMIO_FDATASYNC, "fdatasync"},
                  {SIMIO_RENAME, "rename"},
                  {SIMIO_FSYNC, "fsync of the directory"}};
    for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) {
        simio *sim = new_sim();
        save(sim, 1);
        assert_int_equal(simio_set_fault(sim, faults[i].op, 0, 5 /* EIO */, NULL), 0);
        mirror_cursors c = version(2);
        char why[256] = "";
        int rc = mirror_cursor_save(simio_io(sim), DIR, PATH, "m", &c, why, sizeof why);
        assert_true(rc < 0);
        if (!strstr(why, faults[i].step))
            fail_msg("fault in %s: message \"%s\"", faults[i].step, why);
        simio_set_fault(sim, 0, 0, 0, NULL);
        mirror_cursors got;
        assert_int_equal(mirror_cursor_load(simio_io(sim), PATH, "m", &got, why, sizeof why), 0);
        assert_true(which(&got) >= 1); /* the old one, or the new one after the rename */
        mirror_cursors_free(&got);
        simio_destroy(sim);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip), cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_power_loss), cmocka_unit_test(test_power_loss_catches_broken_fsync),
        cmocka_unit_test(test_io_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
