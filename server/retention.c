/*
 * retention - the policy half of segment removal (see retention.h); the
 * crash-safe removal is removal.c's.
 *
 * Threads: the partition's writer thread.
 */
#include "retention.h"

#include "pb_errors.h"

#include <limits.h>

bool retention_enabled(const retention_policy *pol)
{
    return pol->age_s > 0 || pol->bytes > 0;
}

/* Age: segment newest time + age <= now. Saturating, so a far-future time
 * (never a client's: receive times are the server's) cannot wrap. */
static int64_t expiry_ns(int64_t last_time_ns, int64_t age_s)
{
    if (last_time_ns == INT64_MAX)
        return INT64_MAX;
    int64_t age_ns = age_s > INT64_MAX / 1000000000 ? INT64_MAX : age_s * 1000000000;
    return last_time_ns > INT64_MAX - age_ns ? INT64_MAX : last_time_ns + age_ns;
}

/* Total bytes of the partition: every closed segment, the active one, and
 * the recycled spares (space it holds, though no segment). */
static int total_bytes(pb_log *log, size_t n, uint64_t *total)
{
    log_segment_info si;
    *total = log_active_bytes(log) + log_spare_bytes(log);
    for (size_t i = 0; i < n; i++) {
        int rc = log_closed_info(log, i, &si);
        if (rc < 0)
            return rc;
        *total += si.bytes;
    }
    return 0;
}

int retention_run(pb_log *log, const retention_policy *pol, int64_t now_ns, uint64_t floor,
                  retention_result *out)
{
    *out = (retention_result){.next_due_ns = INT64_MAX};
    if (!retention_enabled(pol) || log_status(log) < 0)
        return 0;
    size_t n = log_closed_count(log), k = 0;
    uint64_t total = 0;
    int rc = 0;
    if (pol->bytes > 0 && (rc = total_bytes(log, n, &total)) < 0)
        return rc;
    /* How many of the oldest go: each one that is too old, or while the
     * partition is above its size limit. */
    log_segment_info si;
    for (; k < n; k++) {
        if ((rc = log_closed_info(log, k, &si)) < 0)
            return rc;
        bool old = pol->age_s > 0 && expiry_ns(si.last_time_ns, pol->age_s) <= now_ns;
        bool big = pol->bytes > 0 && total > pol->bytes;
        if (!old && !big) {
            if (pol->age_s > 0)
                out->next_due_ns = expiry_ns(si.last_time_ns, pol->age_s);
            break;
        }
        if (si.end > floor) {
            out->held = true;
            break;
        }
        if (out->removed == 0 && k == 0)
            out->first = si.base;
        out->end = si.end;
        out->bytes += si.bytes;
        out->by_age |= old;
        out->by_size |= big && !old;
        total -= si.bytes;
    }
    if (k == 0)
        return 0;
    rc = log_remove_oldest(log, k);
    if (rc < 0)
        return rc;
    out->removed = (size_t)rc;
    if (out->removed > 0)
        out->end = log_first_offset(log);
    /* Cut short: a failed unlink (logged; the segment stays, the next run
     * tries again) or a failed directory sync (the log has failed). */
    return log_status(log);
}
