/*
 * test_connbuf - which receive buffers a Publish frame may become its
 * batch's bytes without a copy (connbuf_adoptable, server/connbuf.c).
 *
 * Covered: a large frame alone in its buffer is adopted; a frame with the
 * start of the next one behind it is not; a small frame is not, even
 * alone in a buffer a large one grew (its batch would be charged the whole
 * block: 1 KiB costing 1-2 MiB of the in-flight budget); nor a frame that
 * fills less than half of its buffer.
 */
#include "net_internal.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static conn holding(size_t cap, size_t len)
{
    conn c;
    memset(&c, 0, sizeof c);
    c.cap = cap;
    c.len = len;
    return c;
}

static void test_large_frame_alone_is_adopted(void **state)
{
    (void)state;
    conn c = holding(1u << 20, 1u << 20);
    assert_true(connbuf_adoptable(&c, 1u << 20));
    c = holding(1u << 20, 600u << 10);
    assert_true(connbuf_adoptable(&c, 600u << 10));
    c = holding(256u << 10, 256u << 10);
    assert_true(connbuf_adoptable(&c, 256u << 10));
}

static void test_frame_with_more_behind_is_copied(void **state)
{
    (void)state;
    conn c = holding(1u << 20, (1u << 20) - 10);
    assert_false(connbuf_adoptable(&c, 700u << 10));
}

static void test_small_frame_in_a_grown_buffer_is_copied(void **state)
{
    (void)state;
    conn c = holding(1u << 20, 1024);
    assert_false(connbuf_adoptable(&c, 1024)); /* alone, but small */
    c = holding(2u << 20, 300u << 10);
    assert_false(connbuf_adoptable(&c, 300u << 10)); /* large, but under half */
    c = holding(128u << 10, 100u << 10);
    assert_false(connbuf_adoptable(&c, 100u << 10)); /* a small buffer's */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_large_frame_alone_is_adopted),
        cmocka_unit_test(test_frame_with_more_behind_is_copied),
        cmocka_unit_test(test_small_frame_in_a_grown_buffer_is_copied),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
