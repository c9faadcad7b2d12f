/*
 * timefmt: RFC 3339 and relative time strings <-> nanoseconds since the Unix
 * epoch (UTC), for the `protobus` CLI (`--since -15m`, `--from 2026-...Z`)
 * and for rendering stored timestamps.
 *
 * Threads: any. Every function is pure (no globals, no locale, no TZ; the
 * calendar arithmetic is our own rather than timegm/gmtime), so all are
 * thread-safe and exact for times before 1970 too.
 */
#ifndef PB_TIMEFMT_H
#define PB_TIMEFMT_H

#include <stddef.h>
#include <stdint.h>

/* A buffer of this size always holds pb_time_format{,_ts}() output. */
#define PB_TIME_BUFSZ 48

/*
 * Parses `s` into nanoseconds since 1970-01-01T00:00:00Z.
 *
 * Accepted forms:
 *   RFC 3339: 2026-11-23T10:00:00Z, 2026-11-23T10:00:00.123456789+02:00
 *             ('t' and 'z' may be lower case; 1-9 fraction digits; an offset
 *             +hh:mm means local time ahead of UTC, so it is subtracted).
 *   relative: now, or [+|-]<count><unit> added to now_ns, unit one of
 *             ns, us, ms, s, m, h, d (-15m, -2h, -30s, -1d, -500ms).
 * Second 60 (a leap second) is refused: Unix time cannot represent it.
 *
 * Returns 0 and sets *out_ns, or PB_EINVAL with a message in err (if err is
 * not NULL and errlen > 0) that quotes the input and says what is wrong and
 * where. The result must fit int64 nanoseconds (years 1677 to 2262).
 */
int pb_time_parse(const char *s, int64_t now_ns, int64_t *out_ns, char *err, size_t errlen);

/*
 * Writes `ns` as RFC 3339 UTC with exactly nine fraction digits
 * (2026-11-23T10:00:00.000000001Z) and a terminating NUL.
 * Returns the length written (not counting the NUL), or 0 if len is too small
 * (buf then holds "" when len > 0). len >= PB_TIME_BUFSZ always suffices.
 */
size_t pb_time_format(int64_t ns, char *buf, size_t len);

/*
 * Same for a google.protobuf.Timestamp (seconds, nanos). Accepts any values,
 * not only valid Timestamps, so that a damaged event still renders: nanos
 * outside [0, 1e9) carry into the seconds, and a year outside 0000-9999 is
 * written in ISO 8601 expanded form with a sign (+12345-01-01T...Z).
 */
size_t pb_time_format_ts(int64_t seconds, int32_t nanos, char *buf, size_t len);

#endif
