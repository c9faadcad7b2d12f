/*
 * config_values - the syntax of configuration values (see config.h): whole
 * numbers, sizes ("64M"), durations ("1d"), UTC offsets ("+02:00")
 * and the words of the enumerations. config.c reads the
 * file with them; the pure parsers are also what tests and tools use.
 *
 * Threads: any; pure functions and constant tables.
 */
#include "config.h"

#include "pb_errors.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define KIB 1024ULL
#define MIB (1024ULL * KIB)
#define GIB (1024ULL * MIB)

/* Leading decimal digits of s into *v; *end after them. PB_EINVAL if there
 * are none, PB_ETOOBIG on uint64 overflow. */
static int parse_digits(const char *s, uint64_t *v, const char **end)
{
    uint64_t x = 0;
    const char *p = s;
    if (!isdigit((unsigned char)*p))
        return PB_EINVAL;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (x > (UINT64_MAX - d) / 10)
            return PB_ETOOBIG;
        x = x * 10 + d;
    }
    *v = x;
    *end = p;
    return 0;
}

int config_parse_uint(const char *s, uint64_t *v)
{
    const char *end;
    int rc = parse_digits(s, v, &end);
    if (rc == 0 && *end)
        rc = PB_EINVAL;
    return rc;
}

/* "<digits>" followed by one character of `units` (which multiplies by the
 * matching `scale`), or by nothing if bare_ok. */
static int parse_scaled(const char *s, const char *units, const uint64_t *scale, bool bare_ok,
                        uint64_t max, uint64_t *out)
{
    uint64_t v, mult = 1;
    const char *end;
    int rc = parse_digits(s, &v, &end);
    if (rc != 0)
        return rc;
    if (*end) {
        const char *u = strchr(units, *end);
        if (!u || end[1])
            return PB_EINVAL;
        mult = scale[u - units];
    } else if (!bare_ok) {
        return PB_EINVAL;
    }
    if (v > max / mult)
        return PB_ETOOBIG;
    *out = v * mult;
    return 0;
}

int config_parse_size(const char *s, uint64_t *bytes)
{
    static const uint64_t scale[] = {KIB, KIB, MIB, MIB, GIB, GIB};
    return parse_scaled(s, "KkMmGg", scale, true, UINT64_MAX, bytes);
}

int config_parse_duration(const char *s, int64_t *seconds)
{
    static const uint64_t scale[] = {1, 60, 3600, 86400};
    uint64_t v = 0;
    /* The unit is required: a bare "30" could mean seconds or minutes. */
    int rc = strcmp(s, "none") == 0 ? 0 : parse_scaled(s, "smhd", scale, false, INT64_MAX, &v);
    if (rc == 0)
        *seconds = (int64_t)v;
    return rc;
}

int config_parse_utc_offset(const char *s, int32_t *seconds)
{
    if ((s[0] == 'Z' || s[0] == 'z') && s[1] == '\0') {
        *seconds = 0;
        return 0;
    }
    if ((s[0] != '+' && s[0] != '-') || strlen(s) != 6 || s[3] != ':')
        return PB_EINVAL;
    for (int i = 1; i < 6; i++)
        if (i != 3 && !isdigit((unsigned char)s[i]))
            return PB_EINVAL;
    int hh = (s[1] - '0') * 10 + (s[2] - '0');
    int mm = (s[4] - '0') * 10 + (s[5] - '0');
    if (hh > 23 || mm > 59)
        return PB_EINVAL;
    *seconds = (s[0] == '-' ? -1 : 1) * (hh * 3600 + mm * 60);
    return 0;
}

const char *const config_fsync_names[] = {"always", "interval", "never", NULL};

const char *config_fsync_name(pb_fsync_policy p)
{
    return (unsigned)p <= PB_FSYNC_NEVER ? config_fsync_names[p] : "?";
}

int config_parse_mode(const char *s, uint32_t *mode)
{
    char *end;
    errno = 0;
    unsigned long m = strtoul(s, &end, 8);
    if (!*s || *end || errno || (m & ~0644ul) || (m & 0600) != 0600)
        return PB_EINVAL;
    *mode = (uint32_t)m;
    return 0;
}
