/*
 * recycle - removed segments zeroed into spares (see recycle.h).
 *
 * Threads: the unlinker's (recycle_segment); recycle_spare_path and the
 * ledger's references anywhere.
 */
#include "recycle.h"

#include "pb_errors.h"
#include "zseg.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

spare_ledger *spare_ledger_new(void)
{
    spare_ledger *l = calloc(1, sizeof *l);
    if (l)
        atomic_init(&l->refs, 1);
    return l;
}

spare_ledger *spare_ledger_hold(spare_ledger *l)
{
    if (l)
        atomic_fetch_add_explicit(&l->refs, 1, memory_order_relaxed);
    return l;
}

void spare_ledger_drop(spare_ledger *l)
{
    /* acq_rel: the last drop sees every other holder's stores before free. */
    if (l && atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) == 1)
        free(l);
}

int recycle_spare_path(char *out, size_t cap, const char *dir, unsigned k)
{
    int n = snprintf(out, cap, "%s/spare.%u", dir, k);
    return n < 0 || (size_t)n >= cap ? PB_EINVAL : 0;
}

bool recycle_name_taken(const fileio *io, const char *path)
{
    int fd = io->open(io, path, O_RDONLY, 0);
    if (fd < 0)
        return fd != -ENOENT; /* unsure: taken */
    (void)io->close(io, fd);
    return true;
}

/* The first spare number below spares whose name is free; -1: none. */
static int free_slot(const fileio *io, const char *dir, unsigned spares, char *path, size_t cap)
{
    for (unsigned k = 0; k < spares && k < RECYCLE_MAX_SPARES; k++) {
        if (recycle_spare_path(path, cap, dir, k) < 0)
            return -1;
        if (!recycle_name_taken(io, path))
            return (int)k;
    }
    return -1;
}

int recycle_segment(const fileio *io, const char *del_path, unsigned spares)
{
    return recycle_segment_into(io, del_path, spares, NULL);
}

int recycle_segment_into(const fileio *io, const char *del_path, unsigned spares,
                         spare_ledger *ledger)
{
    char dir[PATH_MAX], spare[PATH_MAX];
    if (!io->zero_range || spares == 0)
        return 1;
    const char *slash = strrchr(del_path, '/');
    if (!slash || (size_t)(slash - del_path) >= sizeof dir)
        return 1;
    memcpy(dir, del_path, (size_t)(slash - del_path));
    dir[slash - del_path] = '\0';
    int k = free_slot(io, dir, spares, spare, sizeof spare);
    if (k < 0)
        return 1;
    int fd = io->open(io, del_path, O_RDWR, 0);
    if (fd < 0)
        return 1;
    off_t size;
    uint8_t hdr[ZSEG_HEADER_END];
    ssize_t got = io->pread(io, fd, hdr, sizeof hdr, 0);
    if (got < 0 || zseg_is_compressed(hdr, (size_t)got)) {
        /* A compressed segment is a fraction of a plain one's size: not
         * worth keeping as a spare; freed as before. */
        (void)io->close(io, fd);
        return 1;
    }
    int rc = io->fsize(io, fd, &size);
    /* Zeros durable before the name: a spare never holds old records. */
    if (rc == 0 && size > 0)
        rc = io->zero_range(io, fd, 0, size);
    if (rc == 0)
        rc = io->fdatasync(io, fd);
    if (rc == 0)
        rc = io->rename(io, del_path, spare);
    (void)io->close(io, fd); /* synced, or freed by the caller's unlink */
    if (rc < 0)
        return 1;
    /* The spare's name made durable (the .log.del's gone with it): a
     * failure leaves either name after a crash, both cleaned at open. */
    (void)fileio_sync_dir(io, dir);
    /* release: the writer that sees the slot finds the name (its own
     * rename and directory sync make the segment durable, as for any). */
    if (ledger)
        atomic_store_explicit(&ledger->slot[k], (uint64_t)size + 1, memory_order_release);
    return 0;
}
