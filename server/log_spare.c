/*
 * log_spare - the writer's side of recycling (recycle.h): a rotation takes a
 * zeroed spare as its new segment instead of creating a file; the spares'
 * bytes count towards retain_bytes; those a restart finds are reused (they
 * hold zeros, and at most a header the next take writes again), but for
 * the ones beyond the partition's bound (recycling off: all), handed to the
 * unlinker.
 *
 * What spares there are and their bytes come from the log's spare_ledger
 * (recycle.h), filled from the directory at open and kept since by the
 * takes here and by whoever makes spares (the unlinker thread); with a
 * recycle that does not tell (opt.spare_ledger NULL), the log's own, read
 * from the directory again after each path recycle took. A rotation then
 * opens only the spare it takes, and retain_bytes opens none: before,
 * both probed and stat'ed every spare name (tests/bench/NOTES.md).
 *
 * Threads: the partition's writer thread (or whoever opens the log); the
 * ledger's slots are shared with the unlinker (recycle.h says why
 * atomics suffice). Every file operation goes through the fileio table,
 * so the power-loss simulation covers it.
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

/* Sets l's slots from the directory: spare k's bytes + 1 for each k below
 * opt.recycle_spares whose spare is there, 0 for the others. */
static void read_spares(pb_log *log, spare_ledger *l)
{
    char spare[PATH_MAX];
    for (unsigned k = 0; k < RECYCLE_MAX_SPARES; k++) {
        uint64_t v = 0;
        int fd = -1;
        off_t size;
        if (k < log->opt.recycle_spares && recycle_spare_path(spare, sizeof spare, log->dir, k) == 0)
            fd = log->io->open(log->io, spare, O_RDONLY, 0);
        if (fd >= 0) {
            if (log->io->fsize(log->io, fd, &size) == 0)
                v = (uint64_t)size + 1;
            (void)log->io->close(log->io, fd); /* read-only */
        }
        atomic_store_explicit(&l->slot[k], v, memory_order_relaxed);
    }
}

/* The spares as this log knows them. */
static spare_ledger *ledger(pb_log *log)
{
    if (log->opt.spare_ledger)
        return log->opt.spare_ledger;
    if (log->spares_stale) {
        log->spares_stale = false;
        read_spares(log, &log->own_spares);
    }
    return &log->own_spares;
}

int log_take_spare(pb_log *log, uint64_t base, int64_t created)
{
    char spare[PATH_MAX];
    if (log->opt.recycle_spares == 0)
        return 1;
    spare_ledger *l = ledger(log);
    bool any = false;
    for (unsigned k = 0; k < RECYCLE_MAX_SPARES; k++)
        any |= atomic_load_explicit(&l->slot[k], memory_order_relaxed) != 0;
    /* Never over an existing segment (a create would refuse it: O_EXCL),
     * nor over a name that cannot be checked. */
    if (!any || recycle_name_taken(log->io, log->log_path))
        return 1;
    for (unsigned k = 0; k < RECYCLE_MAX_SPARES; k++) {
        /* Cleared before the rename frees the name: from then on the
         * unlinker may make a new spare k and set the slot (recycle.h).
         * acquire: pairs with its store, so the name is there. */
        uint64_t had = atomic_exchange_explicit(&l->slot[k], 0, memory_order_acquire);
        if (had == 0)
            continue;
        int fd = recycle_spare_path(spare, sizeof spare, log->dir, k) < 0
                     ? PB_EINVAL
                     : log->io->open(log->io, spare, O_RDWR, 0);
        if (fd < 0) {
            /* Gone (nothing else removes a spare: an outside hand), or
             * unusable for now: still there, still counted. The next. */
            if (fd != -ENOENT)
                atomic_store_explicit(&l->slot[k], had, memory_order_relaxed);
            continue;
        }
        int rc = spare_header(log, fd, base, created);
        if (rc == 0)
            rc = log->io->rename(log->io, spare, log->log_path);
        if (rc < 0) {
            /* A spare we cannot use is left (and counted: the name is
             * still its own), for a later rotation or the next open; the
             * caller creates the segment as before. */
            log_say(log, LOG_WARN, "%s: cannot make it segment %s: %s; creating a new file", spare,
                    log->log_path, pb_strerror(rc));
            (void)log->io->close(log->io, fd);
            atomic_store_explicit(&l->slot[k], had, memory_order_relaxed);
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
    /* Nothing makes spares for this log yet: no path was recycled. */
    read_spares(log, log->opt.spare_ledger ? log->opt.spare_ledger : &log->own_spares);
    log->spares_stale = false;
}

uint64_t log_spare_bytes(pb_log *log)
{
    spare_ledger *l = ledger(log);
    uint64_t total = 0;
    for (unsigned k = 0; k < RECYCLE_MAX_SPARES; k++) {
        uint64_t v = atomic_load_explicit(&l->slot[k], memory_order_relaxed);
        if (v)
            total += v - 1;
    }
    return total;
}
