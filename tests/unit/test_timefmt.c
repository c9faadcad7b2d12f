/* Unit tests for client/cli/timefmt.c: RFC 3339 and relative time parsing, formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "pb_errors.h"
#include "timefmt.h"

#include <stdio.h>
#include <string.h>

#define NS INT64_C(1000000000)

/* A fixed "now" for relative forms: 2026-11-23T10:00:00Z. */
#define NOW (INT64_C(1795428000) * NS)

static int64_t parse_ok(const char *s)
{
    int64_t ns = 0;
    char err[256];
    int rc = pb_time_parse(s, NOW, &ns, err, sizeof err);
    if (rc != 0)
        fail_msg("pb_time_parse(\"%s\") failed: %s", s, err);
    assert_string_equal(err, "");
    return ns;
}

/* Expects failure with a message that quotes the input and contains `why`. */
static void parse_bad(const char *s, const char *why)
{
    int64_t ns = 12345;
    char err[256];
    char quoted[128];
    int rc = pb_time_parse(s, NOW, &ns, err, sizeof err);
    if (rc != PB_EINVAL)
        fail_msg("pb_time_parse(\"%s\") returned %d, expected PB_EINVAL", s, rc);
    assert_int_equal(ns, 12345); /* output untouched on failure */
    snprintf(quoted, sizeof quoted, "\"%.64s", s);
    if (!strstr(err, quoted))
        fail_msg("error for \"%s\" does not quote it: %s", s, err);
    if (!strstr(err, why))
        fail_msg("error for \"%s\" lacks \"%s\": %s", s, why, err);
}

static void format_is(int64_t ns, const char *want)
{
    char buf[PB_TIME_BUFSZ];
    size_t n = pb_time_format(ns, buf, sizeof buf);
    assert_string_equal(buf, want);
    assert_int_equal(n, strlen(want));
}

static void ts_is(int64_t sec, int32_t nanos, const char *want)
{
    char buf[PB_TIME_BUFSZ];
    size_t n = pb_time_format_ts(sec, nanos, buf, sizeof buf);
    assert_string_equal(buf, want);
    assert_int_equal(n, strlen(want));
}

static void test_format_epoch_and_neighbours(void **state)
{
    format_is(0, "1970-01-01T00:00:00.000000000Z");
    format_is(1, "1970-01-01T00:00:00.000000001Z");
    format_is(-1, "1969-12-31T23:59:59.999999999Z");
    format_is(NOW + 1, "2026-11-23T10:00:00.000000001Z");
}

static void test_format_int64_extremes(void **state)
{
    format_is(INT64_MAX, "2262-04-11T23:47:16.854775807Z");
    format_is(INT64_MIN, "1677-09-21T00:12:43.145224192Z");
    assert_int_equal(parse_ok("2262-04-11T23:47:16.854775807Z"), INT64_MAX);
    assert_int_equal(parse_ok("1677-09-21T00:12:43.145224192Z"), INT64_MIN);
}

static void test_format_buffer_too_small(void **state)
{
    char buf[30]; /* the 30-character string needs 31 with its NUL */
    memset(buf, 'x', sizeof buf);
    assert_int_equal(pb_time_format(0, buf, sizeof buf), 0);
    assert_string_equal(buf, "");
    assert_int_equal(pb_time_format(0, NULL, 0), 0);
    char exact[31];
    assert_int_equal(pb_time_format(0, exact, sizeof exact), 30);
}

static void test_format_ts_full_timestamp_range(void **state)
{
    ts_is(INT64_C(-62135596800), 0, "0001-01-01T00:00:00.000000000Z");
    ts_is(INT64_C(253402300799), 999999999, "9999-12-31T23:59:59.999999999Z");
    ts_is(INT64_C(253402300800), 0, "+10000-01-01T00:00:00.000000000Z");
    /* Year 0 (1 BC) is a leap year in the proleptic Gregorian calendar. */
    ts_is(INT64_C(-62135596800) - 366 * 86400, 0, "0000-01-01T00:00:00.000000000Z");
    ts_is(INT64_C(-62135596800) - 366 * 86400 + 59 * 86400, 0, "0000-02-29T00:00:00.000000000Z");
    ts_is(INT64_C(-62135596800) - (366 + 365) * 86400, 0, "-0001-01-01T00:00:00.000000000Z");
}

static void test_format_ts_normalizes_damaged_values(void **state)
{
    ts_is(0, -1, "1969-12-31T23:59:59.999999999Z");
    ts_is(0, 1500000000, "1970-01-01T00:00:01.500000000Z");
    ts_is(86399, 2000000000, "1970-01-02T00:00:01.000000000Z");
    ts_is(INT64_MAX, 0, "+292277026596-12-04T15:30:07.000000000Z");
    ts_is(INT64_MIN, 0, "-292277022657-01-27T08:29:52.000000000Z");
    ts_is(INT64_MAX, INT32_MAX, "+292277026596-12-04T15:30:09.147483647Z");
    ts_is(INT64_MIN, INT32_MIN, "-292277022657-01-27T08:29:49.852516352Z");
}

static void test_parse_known_instants(void **state)
{
    assert_int_equal(parse_ok("1970-01-01T00:00:00Z"), 0);
    assert_int_equal(parse_ok("2026-11-23T10:00:00Z"), NOW);
    assert_int_equal(parse_ok("2000-02-29T00:00:00Z"), INT64_C(951782400) * NS);
    assert_int_equal(parse_ok("2024-02-29T12:34:56Z"), INT64_C(1709210096) * NS);
    assert_int_equal(parse_ok("1900-03-01T00:00:00Z"), INT64_C(-2203891200) * NS);
    assert_int_equal(parse_ok("1969-07-20T20:17:40Z"), INT64_C(-14182940) * NS);
    assert_int_equal(parse_ok("1800-01-01T00:00:00Z"), INT64_C(-5364662400) * NS);
    assert_int_equal(parse_ok("1969-12-31T23:59:59.999999999Z"), -1);
}

static void test_parse_lowercase_separators(void **state)
{
    assert_int_equal(parse_ok("2026-11-23t10:00:00z"), NOW);
    assert_int_equal(parse_ok("2026-11-23t10:00:00.5z"), NOW + NS / 2);
}

static void test_parse_fractions(void **state)
{
    assert_int_equal(parse_ok("2026-11-23T10:00:00.1Z"), NOW + 100000000);
    assert_int_equal(parse_ok("2026-11-23T10:00:00.12Z"), NOW + 120000000);
    assert_int_equal(parse_ok("2026-11-23T10:00:00.123456789Z"), NOW + 123456789);
    assert_int_equal(parse_ok("2026-11-23T10:00:00.000000001Z"), NOW + 1);
    assert_int_equal(parse_ok("2026-11-23T10:00:00.000000000Z"), NOW);
    assert_int_equal(parse_ok("1969-12-31T23:59:59.5Z"), -NS / 2);
}

static void test_parse_offsets(void **state)
{
    /* +02:00: local time two hours ahead of UTC, so UTC is two hours earlier. */
    assert_int_equal(parse_ok("2026-11-23T12:00:00+02:00"), NOW);
    assert_int_equal(parse_ok("2026-11-23T10:00:00+02:00"), NOW - 2 * 3600 * NS);
    assert_int_equal(parse_ok("2026-11-23T04:30:00-05:30"), NOW);
    assert_int_equal(parse_ok("2026-11-23T10:00:00-00:00"), NOW);
    assert_int_equal(parse_ok("2026-11-23T10:00:00+00:00"), NOW);
    assert_int_equal(parse_ok("2026-11-24T09:59:00+23:59"), NOW);
    assert_int_equal(parse_ok("2026-11-23T12:00:00.123456789+02:00"), NOW + 123456789);
    /* Offsets cross date boundaries, including back over the epoch. */
    assert_int_equal(parse_ok("1970-01-01T01:00:00+02:00"), -3600 * NS);
    assert_int_equal(parse_ok("2027-01-01T01:00:00+02:00"), parse_ok("2026-12-31T23:00:00Z"));
}

static void test_parse_leap_years(void **state)
{
    assert_int_equal(parse_ok("2000-03-01T00:00:00Z") - parse_ok("2000-02-28T00:00:00Z"),
                     2 * 86400 * NS);
    assert_int_equal(parse_ok("1900-03-01T00:00:00Z") - parse_ok("1900-02-28T00:00:00Z"),
                     86400 * NS);
    assert_int_equal(parse_ok("2024-01-01T00:00:00Z") - parse_ok("2023-01-01T00:00:00Z"),
                     365 * 86400 * NS);
    assert_int_equal(parse_ok("2025-01-01T00:00:00Z") - parse_ok("2024-01-01T00:00:00Z"),
                     366 * 86400 * NS);
    parse_bad("1900-02-29T00:00:00Z", "day 29 does not exist in 1900-02");
    parse_bad("2100-02-29T00:00:00Z", "day 29 does not exist in 2100-02");
    parse_bad("2023-02-29T00:00:00Z", "day 29 does not exist in 2023-02");
    parse_bad("2026-04-31T00:00:00Z", "day 31 does not exist in 2026-04");
}

static void roundtrip(int64_t ns)
{
    char buf[PB_TIME_BUFSZ];
    assert_int_not_equal(pb_time_format(ns, buf, sizeof buf), 0);
    int64_t back = parse_ok(buf);
    if (back != ns)
        fail_msg("%lld -> %s -> %lld", (long long)ns, buf, (long long)back);
}

static void test_roundtrip(void **state)
{
    static const int64_t fixed[] = {
        0,
        1,
        -1,
        NS,
        -NS,
        NS - 1,
        -NS + 1,
        NOW,
        INT64_C(951782400) * NS,     /* 2000-02-29 */
        INT64_C(951868799) * NS + 7, /* 2000-02-29T23:59:59 */
        INT64_C(-2203891200) * NS,   /* 1900-03-01 */
        INT64_C(-2203891200) * NS - 1 /* 1900-02-28T23:59:59.999999999 */,
        INT64_MAX,
        INT64_MIN,
        INT64_MAX - 1,
        INT64_MIN + 1,
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        roundtrip(fixed[i]);
    /* A deterministic spread over the whole range (64-bit LCG). */
    uint64_t x = 0x9E3779B97F4A7C15u;
    for (int i = 0; i < 20000; i++) {
        x = x * 6364136223846793005u + 1442695040888963407u;
        roundtrip((int64_t)x);
    }
}

static void test_parse_relative(void **state)
{
    assert_int_equal(parse_ok("now"), NOW);
    assert_int_equal(parse_ok("NOW"), NOW);
    assert_int_equal(parse_ok("-15m"), NOW - 15 * 60 * NS);
    assert_int_equal(parse_ok("-2h"), NOW - 2 * 3600 * NS);
    assert_int_equal(parse_ok("-30s"), NOW - 30 * NS);
    assert_int_equal(parse_ok("-1d"), NOW - 86400 * NS);
    assert_int_equal(parse_ok("-500ms"), NOW - 500 * 1000000);
    assert_int_equal(parse_ok("-7us"), NOW - 7000);
    assert_int_equal(parse_ok("-3ns"), NOW - 3);
    assert_int_equal(parse_ok("+5s"), NOW + 5 * NS);
    assert_int_equal(parse_ok("-0s"), NOW);
    /* Relative to a pre-1970 now. */
    int64_t ns;
    assert_int_equal(pb_time_parse("-1s", -NS, &ns, NULL, 0), 0);
    assert_int_equal(ns, -2 * NS);
}

static void test_parse_errors_rfc3339(void **state)
{
    parse_bad("", "empty");
    parse_bad("yesterday", "expected an RFC 3339 time");
    parse_bad(" 2026-11-23T10:00:00Z", "expected an RFC 3339 time");
    parse_bad("2026-11-23", "expected 'T' after the day, found end of input at position 11");
    parse_bad("2026-11-23 10:00:00Z", "expected 'T' after the day, found ' ' at position 11");
    parse_bad("26-11-23T10:00:00Z", "expected 4-digit year, found '-' at position 3");
    parse_bad("2026/11/23T10:00:00Z", "expected '-' after the year, found '/' at position 5");
    parse_bad("2026-1-23T10:00:00Z", "expected 2-digit month");
    parse_bad("2026-00-23T10:00:00Z", "month 0 out of range 1-12 at position 6");
    parse_bad("2026-13-23T10:00:00Z", "month 13 out of range 1-12");
    parse_bad("2026-11-00T10:00:00Z", "day 0 out of range 1-31");
    parse_bad("2026-11-32T10:00:00Z", "day 32 out of range 1-31");
    parse_bad("2026-11-23T24:00:00Z", "hour 24 out of range 0-23 at position 12");
    parse_bad("2026-11-23T10:60:00Z", "minute 60 out of range 0-59");
    parse_bad("2026-11-23T10:00:61Z", "second 61 out of range 0-60");
    parse_bad("2026-12-31T23:59:60Z", "leap second 60 cannot be represented");
    parse_bad("2026-11-23T10:00Z", "expected ':' after the minute, found 'Z'");
    parse_bad("2026-11-23T10:00:00", "expected 'Z' or a UTC offset");
    parse_bad("2026-11-23T10:00:00X", "found 'X' at position 20");
    parse_bad("2026-11-23T10:00:00.Z", "expected digits after '.', found 'Z'");
    parse_bad("2026-11-23T10:00:00.1234567890Z", "more than 9 fractional second digits");
    parse_bad("2026-11-23T10:00:00+2:00", "expected UTC offset as hh:mm");
    parse_bad("2026-11-23T10:00:00+0200", "expected UTC offset as hh:mm");
    parse_bad("2026-11-23T10:00:00+02:0", "expected 2-digit offset minutes");
    parse_bad("2026-11-23T10:00:00+24:00", "UTC offset 24:00 out of range");
    parse_bad("2026-11-23T10:00:00+02:60", "UTC offset 02:60 out of range");
    parse_bad("2026-11-23T10:00:00Zjunk", "unexpected 'j' after the UTC offset");
    parse_bad("2026-11-23T10:00:00Z\n", "unexpected byte 0x0a after the UTC offset");
    parse_bad("1677-09-21T00:12:43.145224191Z", "outside the representable range");
    parse_bad("2262-04-11T23:47:16.854775808Z", "outside the representable range");
    parse_bad("0001-01-01T00:00:00Z", "outside the representable range");
    parse_bad("9999-12-31T23:59:59Z", "outside the representable range");
}

static void test_parse_errors_relative(void **state)
{
    parse_bad("-", "expected a number after '-', found end of input");
    parse_bad("-m", "expected a number after '-', found 'm'");
    parse_bad("+-5s", "expected a number after '+'");
    parse_bad("-15", "missing unit");
    parse_bad("-15x", "unknown unit \"x\"");
    parse_bad("-15 m", "unknown unit \" m\"");
    parse_bad("-1.5h", "fractional counts are not supported");
    parse_bad("-15mins", "unknown unit \"mins\"");
    parse_bad("15m", "a relative time needs a sign (-15m");
    parse_bad("-99999999999999999999s", "number too large");
    parse_bad("-200000d", "outside the representable range");
    parse_bad("+9223372036854775807ns", "outside the representable range");
}

static void test_parse_error_reporting_edges(void **state)
{
    int64_t ns = 7;
    /* No error buffer: still fails cleanly. */
    assert_int_equal(pb_time_parse("bogus", NOW, &ns, NULL, 0), PB_EINVAL);
    assert_int_equal(ns, 7);
    /* A tiny buffer is truncated, not overrun. */
    char small[8];
    memset(small, 'x', sizeof small);
    assert_int_equal(pb_time_parse("bogus", NOW, &ns, small, sizeof small), PB_EINVAL);
    assert_int_equal(strlen(small), sizeof small - 1);
    /* Long input is cut in the message. */
    char longin[300], err[512];
    memset(longin, '9', sizeof longin - 1);
    longin[sizeof longin - 1] = '\0';
    assert_int_equal(pb_time_parse(longin, NOW, &ns, err, sizeof err), PB_EINVAL);
    assert_non_null(strstr(err, "9999...\""));
    assert_true(strlen(err) < 200);
    /* Missing arguments. */
    assert_int_equal(pb_time_parse(NULL, NOW, &ns, err, sizeof err), PB_EINVAL);
    assert_int_equal(pb_time_parse("now", NOW, NULL, err, sizeof err), PB_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_epoch_and_neighbours),
        cmocka_unit_test(test_format_int64_extremes),
        cmocka_unit_test(test_format_buffer_too_small),
        cmocka_unit_test(test_format_ts_full_timestamp_range),
        cmocka_unit_test(test_format_ts_normalizes_damaged_values),
        cmocka_unit_test(test_parse_known_instants),
        cmocka_unit_test(test_parse_lowercase_separators),
        cmocka_unit_test(test_parse_fractions),
        cmocka_unit_test(test_parse_offsets),
        cmocka_unit_test(test_parse_leap_years),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_parse_relative),
        cmocka_unit_test(test_parse_errors_rfc3339),
        cmocka_unit_test(test_parse_errors_relative),
        cmocka_unit_test(test_parse_error_reporting_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
