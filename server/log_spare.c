/*
 * log_spare - the writer's side of recycling (recycle.h): a rotation takes a
 * zeroed spare as its new segment instead of creating a file; the spares'
 * bytes count towards retain_bytes; those a restart finds are reused (they
 * hold zeros, and at most a header the next take writes again), but for
 * the ones beyond the partition's bound (recycling off: all), handed to the
 * unlinker.
 *
 * Threads: the partition's writer thread (or whoever opens the log). Every
 * file operation goes through the fileio table, so the power-loss
 * simulation covers it.
 *
 * Why this order: the spare's header is written and synced while it still
 * has its spare name (a crash leaves a spare with a header, removed at the
 * next open), then the rename gives it the segment's name, which the
 * caller's directory sync makes durable before any record in it is acked
 * (D.1 rule 2, as for a created segment). What follows the header is
 * zeros, durable since the unlinker synced them before naming the spare,
 * so the new active segment holds its header, then a zero tail (FORMAT.md
 * Part B) into which the writer appends. Rotation cuts that tail off
 * (log.c rotate) before the next segment exists.
 */
#include "log_internal.h"

#include "pb_errors.h"
#include "record.h"
#include "recycle.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>

/* Puts segment base's header at the start of the spare fd and syncs it. */
static int spare_header(pb_log *log, int fd, uint64_t base, int64_t created)
{
    uint8_t hdr[PB_FILE_HEADER_SIZE];
    file_header_encode(hdr, PB_LOG_MAGIC, base, created);
    struct iovec v = {.iov_base = hdr, .iov_len = sizeof hdr};
    int rc = fileio_write_all(log->io, fd, &v, 1, 0);
    return rc < 0 ? rc : log->io->fdatasync(log->io, fd);
}

int log_take_spare(pb_log *log, uint64_t base, int64_t created)
{
    char spare[PATH_MAX];
    if (log->opt.recycle_spares == 0)
        return 1;
    /* Never over an existing segment (a create would refuse it: O_EXCL). */
    int efd = log->io->open(log->io, log->log_path, O_RDONLY, 0);
    if (efd >= 0) {
        (void)log->io->close(log->io, efd);
        return 1;
    }
    for (unsigned k = 0; k < RECYCLE_MAX_SPARES; k++) {
        if (recycle_spare_path(spare, sizeof spare, log->dir, k) < 0)
            return 1;
        int fd = log->io->open(log->io, spare, O_RDWR, 0);
        if (fd < 0)
            continue; /* none there (or unusable): the next */
        int rc = spare_header(log, fd, base, created);
        if (rc == 0)
            rc = log->io->rename(log->io, spare, log->log_path);
        if (rc < 0) {
            /* A spare we cannot use is left for the next open to remove;
             * the caller creates the segment as before. */
            log_say(log, LOG_WARN, "%s: cannot make it segment %s: %s; creating a new file", spare,
                    log->log_path, pb_strerror(rc));
            (void)log->io->close(log->io, fd);
            return 1;
        }
        log->fd = fd;
        log->recycled = true;
        return 0;
    }
    return 1;
}

void log_tidy_spares(pb_log *log)
{
    char spare[PATH_MAX];
    for (unsigned k = log->opt.recycle_spares; k < RECYCLE_MAX_SPARES; k++) {
        if (recycle_spare_path(spare, sizeof spare, log->dir, k) < 0)
            break;
        int fd = log->io->open(log->io, spare, O_RDONLY, 0);
        if (fd < 0)
            continue;
        (void)log->io->close(log->io, fd);
        log_say(log, LOG_INFO, "%s: a spare this partition keeps no more (recycle_segments); removed",
                spare);
        log_discard_file(log, spare); /* on the unlinker thread when there is one */
    }
}

uint64_t log_spare_bytes(pb_log *log)
{
    char spare[PATH_MAX];
    uint64_t total = 0;
    for (unsigned k = 0; k < RECYCLE_MAX_SPARES; k++) {
        if (recycle_spare_path(spare, sizeof spare, log->dir, k) < 0)
            break;
        int fd = log->io->open(log->io, spare, O_RDONLY, 0);
        if (fd < 0)
            continue;
        off_t size;
        if (log->io->fsize(log->io, fd, &size) == 0)
            total += (uint64_t)size;
        (void)log->io->close(log->io, fd); /* read-only */
    }
    return total;
}
