/*
 * log_cut - after a failed sync of the active segment, the cut of the file
 * back to the end the last successful sync covered (FORMAT.md D.1 rule 3).
 */
#include "log_internal.h"

#include "pb_errors.h"

#include <inttypes.h>
#include <sys/types.h>

void log_durable_at(pb_log *log, uint64_t size)
{
    if (!log->cut) /* after a cut, no sync makes more of the file durable */
        log->durable = size;
}

/*
 * A sync (or write-out) of the active segment failed: Linux may have marked
 * the pages it failed to write clean though they never reached the device
 * (fsyncgate), so a restart without a reboot would find those records in
 * the page cache, its own sync would succeed over them, and they would be
 * served and remembered (a retry acked as their duplicate) until a power
 * loss takes them. So the file is cut back at once to the end that the
 * last successful sync covered: the failed take's records and everything
 * written or queued behind it go (none of them was acknowledged: fsync =
 * always); then one sync of the cut, its outcome only said. The log stays
 * failed.
 */
void log_cut_to_durable(pb_log *log, int err, const char *what)
{
    /* With fsync = interval or never, acks come before syncs: records past
     * the durable end may be acked and read; they are left (those
     * policies already allow a power loss to take them). */
    if (log->cut || !log->durable_known || log->fd < 0 || !log->opt.synced_acks)
        return;
    log->cut = true;
    log_direct_quiesce(log); /* no write of the helper's lands after the cut */
    uint64_t to = log->durable;
    off_t fsz = 0;
    uint64_t end = log->io->fsize(log->io, log->fd, &fsz) == 0 ? (uint64_t)fsz : log->size;
    if (end <= to)
        return; /* nothing after it */
    int rc = log->io->ftruncate(log->io, log->fd, (off_t)to);
    if (rc < 0) {
        log_say(log, LOG_ERROR,
                "%s %s failed: %s; cutting it back to byte %" PRIu64 " (the last durable end) "
                "failed too: %s: bytes %" PRIu64 "-%" PRIu64
                " (never acknowledged) stay in the file: reboot (or drop the page cache) "
                "before restarting the daemon",
                what, log->log_path, pb_strerror(err), to, pb_strerror(rc), to, end);
        return;
    }
    log->size = to;
    log->recycled = false; /* no zero tail any more */
    log_say(log, LOG_ERROR,
            "%s %s failed: %s; cut %s back to byte %" PRIu64
            " (the last durable end): the records after it were never acknowledged",
            what, log->log_path, pb_strerror(err), log->log_path, to);
    rc = log->io->fdatasync(log->io, log->fd);
    log_say(log, rc < 0 ? LOG_WARN : LOG_INFO, "segment %s: fdatasync of the cut: %s",
            log->log_path, rc < 0 ? pb_strerror(rc) : "done");
}
