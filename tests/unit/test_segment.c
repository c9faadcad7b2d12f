/* Tests for proto/segment's read loop: segment_pread_full goes on after
 * short reads, stops at the end of the file, and passes an error on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "segment.h"

/* A file of `size` bytes (byte i is i & 0xff) read at most `step` bytes a
 * call; `fail_at` > 0: the call that starts at or past that offset fails. */
typedef struct fake_file {
    size_t size, step, calls;
    off_t fail_at;
} fake_file;

static ssize_t fake_pread(void *ctx, int fd, void *buf, size_t len, off_t off)
{
    fake_file *f = ctx;
    f->calls++;
    if (f->fail_at > 0 && off >= f->fail_at)
        return -EIO;
    if ((size_t)off >= f->size)
        return 0;
    size_t n = f->size - (size_t)off;
    if (n > len)
        n = len;
    if (n > f->step)
        n = f->step;
    for (size_t i = 0; i < n; i++)
        ((uint8_t *)buf)[i] = (uint8_t)(off + (off_t)i);
    return (ssize_t)n;
}

static void test_short_reads_continue(void **state)
{
    (void)state;
    fake_file f = {.size = 1000, .step = 7};
    uint8_t buf[600];
    assert_int_equal(segment_pread_full(fake_pread, &f, 3, buf, sizeof buf, 100), 600);
    for (size_t i = 0; i < sizeof buf; i++)
        assert_int_equal(buf[i], (uint8_t)(100 + i));
    assert_true(f.calls >= 600 / 7);
}

static void test_stops_at_end_of_file(void **state)
{
    (void)state;
    fake_file f = {.size = 250, .step = 64};
    uint8_t buf[400];
    assert_int_equal(segment_pread_full(fake_pread, &f, 3, buf, sizeof buf, 0), 250);
    assert_int_equal(segment_pread_full(fake_pread, &f, 3, buf, sizeof buf, 250), 0);
    assert_int_equal(segment_pread_full(fake_pread, &f, 3, buf, 0, 0), 0);
}

static void test_error_passed_on(void **state)
{
    (void)state;
    fake_file f = {.size = 1000, .step = 100, .fail_at = 300};
    uint8_t buf[800];
    assert_int_equal(segment_pread_full(fake_pread, &f, 3, buf, sizeof buf, 0), -EIO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_short_reads_continue),
        cmocka_unit_test(test_stops_at_end_of_file),
        cmocka_unit_test(test_error_passed_on),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
