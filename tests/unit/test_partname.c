/* Tests for proto/partname: the one rule of what a partition name is. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "partname.h"

static void test_valid_names(void **state)
{
    assert_true(partname_valid("events", 6));
    assert_true(partname_valid("a.b_c-D9", 8));
    assert_true(partname_valid("sensors-t17", 11));
    assert_true(partname_valid("x.", 2));
    assert_true(partname_valid("-dash", 5));
    assert_true(partname_valid("_under", 6));
    char big[101];
    memset(big, 'x', sizeof big);
    assert_true(partname_valid(big, PB_PARTITION_NAME_MAX));
}

static void test_invalid_names(void **state)
{
    assert_false(partname_valid("", 0));
    assert_false(partname_valid(".", 1));
    assert_false(partname_valid("..", 2));
    assert_false(partname_valid("...", 3));
    /* F3: what directory listings hide, readers skip, so it is no name. */
    assert_false(partname_valid(".hidden", 7));
    assert_false(partname_valid("a/b", 3));
    assert_false(partname_valid("a b", 3));
    assert_false(partname_valid("a\0b", 3));
    assert_false(partname_valid("a$", 2));
    assert_false(partname_valid("caf\xc3\xa9", 5));
    char big[101];
    memset(big, 'x', sizeof big);
    assert_false(partname_valid(big, PB_PARTITION_NAME_MAX + 1));
}

static void test_chars(void **state)
{
    for (int c = 0; c < 256; c++) {
        bool want = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
        assert_int_equal(partname_char_ok((char)c), want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_names),
        cmocka_unit_test(test_invalid_names),
        cmocka_unit_test(test_chars),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
