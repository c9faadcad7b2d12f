/*
 * timefmt: RFC 3339 / relative time parsing and RFC 3339 formatting.
 *
 * Used by the CLI for time arguments and by render.c for event timestamps.
 * Threads: any; no shared state. Calendar conversion uses the proleptic
 * Gregorian days-from-civil arithmetic (floor division throughout), so it is
 * exact for negative times and independent of TZ and the C library.
 */
#include "timefmt.h"

#include "pb_errors.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define NS_PER_S   INT64_C(1000000000)
#define S_PER_DAY  INT64_C(86400)
#define DAYS_400Y  INT64_C(146097) /* days in a 400-year Gregorian cycle */
#define EPOCH_DAYS INT64_C(719468) /* days from 0000-03-01 to 1970-01-01 */

/* Quoted input in messages is cut here so one bad argument cannot flood the terminal. */
#define ERR_INPUT_MAX 64

/* Days since 1970-01-01 of a proleptic Gregorian date. The year is counted
 * from March so that the leap day is the last day of the counted year. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;                                  /* [0, 399] */
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1; /* [0, 365] */
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;          /* [0, 146096] */
    return era * DAYS_400Y + doe - EPOCH_DAYS;
}

/* Inverse of days_from_civil; valid for any |days| < 2^62. */
static void civil_from_days(int64_t days, int64_t *y, int *m, int *d)
{
    int64_t z = days + EPOCH_DAYS;
    int64_t era = (z >= 0 ? z : z - (DAYS_400Y - 1)) / DAYS_400Y;
    int64_t doe = z - era * DAYS_400Y;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int64_t y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

size_t pb_time_format_ts(int64_t seconds, int32_t nanos, char *buf, size_t len)
{
    /* Split into days and second-of-day first: the carry from nanos can then
     * never overflow, whatever garbage a damaged Timestamp holds. */
    int64_t days = seconds / S_PER_DAY;
    int64_t sod = seconds % S_PER_DAY;
    if (sod < 0) {
        sod += S_PER_DAY;
        days--;
    }
    int64_t ns = nanos % NS_PER_S;
    sod += nanos / NS_PER_S;
    if (ns < 0) {
        ns += NS_PER_S;
        sod--;
    }
    if (sod < 0) {
        sod += S_PER_DAY;
        days--;
    } else if (sod >= S_PER_DAY) {
        sod -= S_PER_DAY;
        days++;
    }

    int64_t y;
    int m, d;
    civil_from_days(days, &y, &m, &d);
    int hh = (int)(sod / 3600), mm = (int)(sod / 60 % 60), ss = (int)(sod % 60);

    int n;
    if (y >= 0 && y <= 9999)
        n = snprintf(buf, len, "%04lld-%02d-%02dT%02d:%02d:%02d.%09lldZ", (long long)y, m, d, hh,
                     mm, ss, (long long)ns);
    else
        n = snprintf(buf, len, "%+05lld-%02d-%02dT%02d:%02d:%02d.%09lldZ", (long long)y, m, d, hh,
                     mm, ss, (long long)ns);
    if (n < 0 || (size_t)n >= len) {
        if (len > 0)
            buf[0] = '\0';
        return 0;
    }
    return (size_t)n;
}

size_t pb_time_format(int64_t ns, char *buf, size_t len)
{
    /* Truncating division is enough: pb_time_format_ts carries a negative
     * remainder into the seconds, without overflow even at INT64_MIN. */
    return pb_time_format_ts(ns / NS_PER_S, (int32_t)(ns % NS_PER_S), buf, len);
}

/* Formats "invalid time \"<s>\": <why>[ at position N]" into err. pos is
 * 0-based (SIZE_MAX: none) and shown 1-based, as people count characters. */
static int fail(char *err, size_t errlen, const char *s, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int fail(char *err, size_t errlen, const char *s, size_t pos, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return PB_EINVAL;
    char why[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    const char *more = strlen(s) > ERR_INPUT_MAX ? "..." : "";
    if (pos == SIZE_MAX)
        snprintf(err, errlen, "invalid time \"%.*s%s\": %s", ERR_INPUT_MAX, s, more, why);
    else
        snprintf(err, errlen, "invalid time \"%.*s%s\": %s at position %zu", ERR_INPUT_MAX, s, more,
                 why, pos + 1);
    return PB_EINVAL;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Reads exactly n digits at s[*pos]; false (with *pos at the first non-digit)
 * if there are fewer. */
static bool read_digits(const char *s, size_t *pos, int n, int *val)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!is_digit(s[*pos]))
            return false;
        v = v * 10 + (s[*pos] - '0');
        (*pos)++;
    }
    *val = v;
    return true;
}

/* Describes the character at s[pos] for an error message. */
static const char *found(const char *s, size_t pos, char *buf, size_t len)
{
    unsigned char c = (unsigned char)s[pos];
    if (c == '\0')
        snprintf(buf, len, "end of input");
    else if (c >= 0x20 && c < 0x7f)
        snprintf(buf, len, "'%c'", c);
    else
        snprintf(buf, len, "byte 0x%02x", c);
    return buf;
}

/* One fixed-width field of an RFC 3339 time: digits, then a separator. */
struct rfc_field {
    int width;
    const char *name;
    int min, max;
    const char *seps; /* accepted separators after it; NULL: none (end of the fixed part) */
};

static int parse_rfc3339(const char *s, int64_t *out_ns, char *err, size_t errlen)
{
    static const struct rfc_field fields[6] = {
        {4, "year", 0, 9999, "-"}, {2, "month", 1, 12, "-"},  {2, "day", 1, 31, "Tt"},
        {2, "hour", 0, 23, ":"},   {2, "minute", 0, 59, ":"}, {2, "second", 0, 60, NULL},
    };
    int v[6];
    size_t pos = 0;
    char fb[24];

    for (int i = 0; i < 6; i++) {
        size_t start = pos;
        if (!read_digits(s, &pos, fields[i].width, &v[i]))
            return fail(err, errlen, s, pos, "expected %d-digit %s, found %s", fields[i].width,
                        fields[i].name, found(s, pos, fb, sizeof fb));
        if (v[i] < fields[i].min || v[i] > fields[i].max)
            return fail(err, errlen, s, start, "%s %d out of range %d-%d", fields[i].name, v[i],
                        fields[i].min, fields[i].max);
        if (fields[i].seps) {
            if (s[pos] == '\0' || !strchr(fields[i].seps, s[pos]))
                return fail(err, errlen, s, pos, "expected '%c' after the %s, found %s",
                            fields[i].seps[0], fields[i].name, found(s, pos, fb, sizeof fb));
            pos++;
        }
    }
    if (v[2] > days_in_month(v[0], v[1]))
        return fail(err, errlen, s, 8, "day %d does not exist in %04d-%02d", v[2], v[0], v[1]);
    if (v[5] == 60)
        return fail(err, errlen, s, 17, "leap second 60 cannot be represented in Unix time");

    int64_t frac = 0;
    if (s[pos] == '.') {
        pos++;
        int ndig = 0;
        while (is_digit(s[pos])) {
            if (++ndig > 9)
                return fail(err, errlen, s, pos, "more than 9 fractional second digits");
            frac = frac * 10 + (s[pos] - '0');
            pos++;
        }
        if (ndig == 0)
            return fail(err, errlen, s, pos, "expected digits after '.', found %s",
                        found(s, pos, fb, sizeof fb));
        for (; ndig < 9; ndig++)
            frac *= 10;
    }

    int64_t offset_s = 0;
    if (s[pos] == 'Z' || s[pos] == 'z') {
        pos++;
    } else if (s[pos] == '+' || s[pos] == '-') {
        int sign = s[pos] == '-' ? -1 : 1;
        pos++;
        int oh, om;
        size_t start = pos;
        if (!read_digits(s, &pos, 2, &oh) || s[pos] != ':')
            return fail(err, errlen, s, pos, "expected UTC offset as hh:mm, found %s",
                        found(s, pos, fb, sizeof fb));
        pos++;
        if (!read_digits(s, &pos, 2, &om))
            return fail(err, errlen, s, pos, "expected 2-digit offset minutes, found %s",
                        found(s, pos, fb, sizeof fb));
        if (oh > 23 || om > 59)
            return fail(err, errlen, s, start, "UTC offset %02d:%02d out of range", oh, om);
        offset_s = sign * (oh * INT64_C(3600) + om * INT64_C(60));
    } else {
        return fail(err, errlen, s, pos,
                    "expected 'Z' or a UTC offset (+hh:mm, -hh:mm) after the time, found %s",
                    found(s, pos, fb, sizeof fb));
    }
    if (s[pos] != '\0')
        return fail(err, errlen, s, pos, "unexpected %s after the UTC offset",
                    found(s, pos, fb, sizeof fb));

    /* Local time minus its offset is UTC. Years 0-9999 keep this far from
     * overflow; only the nanosecond scaling below can overflow. */
    int64_t sec = days_from_civil(v[0], v[1], v[2]) * S_PER_DAY + v[3] * INT64_C(3600) +
                  v[4] * INT64_C(60) + v[5] - offset_s;
    if (sec < 0 && frac > 0) {
        /* Borrow one second so that the earliest representable instant
         * (INT64_MIN ns) does not overflow in the intermediate product. */
        sec++;
        frac -= NS_PER_S;
    }
    int64_t ns;
    if (__builtin_mul_overflow(sec, NS_PER_S, &ns) || __builtin_add_overflow(ns, frac, &ns))
        return fail(err, errlen, s, SIZE_MAX,
                    "outside the representable range 1677-09-21T00:12:43.145224192Z to "
                    "2262-04-11T23:47:16.854775807Z");
    *out_ns = ns;
    return 0;
}

static int parse_relative(const char *s, int64_t now_ns, int64_t *out_ns, char *err, size_t errlen)
{
    static const struct {
        const char *name;
        int64_t ns;
    } units[] = {
        {"ns", 1},
        {"us", INT64_C(1000)},
        {"ms", INT64_C(1000000)},
        {"s", NS_PER_S},
        {"m", 60 * NS_PER_S},
        {"h", 3600 * NS_PER_S},
        {"d", S_PER_DAY * NS_PER_S},
    };
    char fb[24];
    size_t pos = 1; /* past the sign */
    bool negative = s[0] == '-';

    if (!is_digit(s[pos]))
        return fail(err, errlen, s, pos, "expected a number after '%c', found %s", s[0],
                    found(s, pos, fb, sizeof fb));
    int64_t count = 0;
    while (is_digit(s[pos])) {
        if (__builtin_mul_overflow(count, 10, &count) ||
            __builtin_add_overflow(count, s[pos] - '0', &count))
            return fail(err, errlen, s, SIZE_MAX, "number too large");
        pos++;
    }
    if (s[pos] == '\0')
        return fail(err, errlen, s, pos, "missing unit (ns, us, ms, s, m, h or d)");
    const char *unit = s + pos;
    if (unit[0] == '.')
        return fail(err, errlen, s, pos,
                    "fractional counts are not supported; use a smaller unit (-90m, not -1.5h)");
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(unit, units[i].name) != 0)
            continue;
        int64_t delta, ns;
        if (__builtin_mul_overflow(count, units[i].ns, &delta) ||
            (negative ? __builtin_sub_overflow(now_ns, delta, &ns)
                      : __builtin_add_overflow(now_ns, delta, &ns)))
            return fail(err, errlen, s, SIZE_MAX,
                        "the resulting time is outside the representable range (years "
                        "1677-2262)");
        *out_ns = ns;
        return 0;
    }
    return fail(err, errlen, s, pos, "unknown unit \"%.16s\" (expected ns, us, ms, s, m, h or d)",
                unit);
}

int pb_time_parse(const char *s, int64_t now_ns, int64_t *out_ns, char *err, size_t errlen)
{
    if (err && errlen > 0)
        err[0] = '\0';
    if (!s || !out_ns)
        return PB_EINVAL;
    if (s[0] == '\0')
        return fail(err, errlen, s, SIZE_MAX,
                    "empty; expected an RFC 3339 time (2026-11-23T10:00:00Z), a relative time "
                    "(-15m, -2h, -500ms) or now");
    if (strcasecmp(s, "now") == 0) {
        *out_ns = now_ns;
        return 0;
    }
    if (s[0] == '-' || s[0] == '+')
        return parse_relative(s, now_ns, out_ns, err, errlen);
    if (is_digit(s[0])) {
        /* "15m" is a likely slip for "-15m": say so rather than complain
         * about a malformed date at position 3. */
        size_t n = strspn(s, "0123456789");
        if (n < 4 && s[n] >= 'a' && s[n] <= 'z' && s[n] != 't')
            return fail(err, errlen, s, SIZE_MAX,
                        "a relative time needs a sign (-%.16s for that long ago, +%.16s ahead)", s,
                        s);
        return parse_rfc3339(s, out_ns, err, errlen);
    }
    return fail(err, errlen, s, SIZE_MAX,
                "expected an RFC 3339 time (2026-11-23T10:00:00Z), a relative time (-15m, -2h, "
                "-500ms) or now");
}
