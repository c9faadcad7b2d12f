/*
 * log_direct - a large append written around the page cache (see
 * log_internal.h, log_direct_write).
 *
 * Why: with fsync = always every byte appended was copied by the kernel
 * into the page cache, then written out by the fdatasync that followed:
 * that copy and its bookkeeping were the largest share of the daemon's CPU
 * when publishing 1 KiB events (perf: copy_folio_from_iter_atomic 34%, the
 * ext4 delayed-allocation and writeback paths a few % more). A direct
 * write (O_DIRECT) hands the device the user buffer instead.
 *
 * How: O_DIRECT needs the buffer, the file position and the length aligned
 * to the logical block size (4096 covers 512 and 4096; opt.direct_align). The bytes
 * that complete the block the segment ends in go the ordinary way (that
 * block holds bytes already written, maybe acknowledged: they are never
 * written again by this path); then the records are gathered into an
 * aligned staging buffer and whole blocks go out through a second
 * descriptor opened with O_DIRECT, at most DIRECT_STAGE bytes per write;
 * what is left, less than one block, is written the ordinary way, so the
 * file's size is always exactly the bytes appended (no padding a reader
 * could see). The head block's bytes are written out (sync_file_range)
 * before the first direct write: an unwritten page of the append must not
 * sit in front of records that reached the disk (a crash before the
 * fdatasync, with the file's new size committed by another partition's
 * sync, would leave damage followed by records, which recovery keeps).
 * Nothing about durability changes: a direct
 * write, like a buffered one, is durable only after the fdatasync that
 * log_sync does (the device may cache it); the kernel keeps buffered
 * readers coherent (a direct write drops the cached pages it covers).
 *
 * A file system that refuses O_DIRECT (open or write EINVAL), or any failed
 * direct write, makes this log go back to buffered writes for good, with a
 * message; the caller then writes the whole append the ordinary way, over
 * what this path wrote of it (the same bytes, none of them acknowledged).
 * Only a failure of an ordinary write fails the log.
 *
 * Threads: the partition's writer thread, like the rest of pb_log.
 */
#include "log_internal.h"

#include "pb_errors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#define DIRECT_ALIGN_DEFAULT 4096u
#define DIRECT_STAGE         (1024u * 1024u) /* bytes per direct write; the staging buffer */

/* Gives up direct writes for this log (the ordinary path takes over). A
 * file system without O_DIRECT (open: EINVAL; tmpfs before Linux 6.6, some
 * FUSE ones) is no fault: INFO; anything else is worth a WARN. */
static int give_up(pb_log *log, int rc, const char *what)
{
    log_say(log, rc == -EINVAL ? LOG_INFO : LOG_WARN,
            "segment %s: %s failed: %s; appending through the page cache from now on",
            log->log_path, what, pb_strerror(rc));
    log->direct_off = true;
    log_direct_close(log);
    return 1;
}

/* The direct descriptor and the staging buffer, if not there yet. 0, or 1
 * when direct writes are given up. */
static int prepare(pb_log *log)
{
    if (!log->stage) {
        void *p = NULL;
        if (posix_memalign(&p, DIRECT_ALIGN_DEFAULT, DIRECT_STAGE) != 0)
            return 1; /* no memory now: this append goes the ordinary way */
        log->stage = p;
    }
    if (log->dfd < 0) {
        int fd = log->io->open(log->io, log->log_path, O_WRONLY | O_DIRECT, 0);
        if (fd < 0)
            return give_up(log, fd, "open with O_DIRECT");
        log->dfd = fd;
    }
    return 0;
}

/* opt.direct_align, or the default. */
static size_t align_of(const pb_log *log)
{
    uint32_t a = log->opt.direct_align;
    return a && (a & (a - 1)) == 0 && a <= DIRECT_STAGE ? a : DIRECT_ALIGN_DEFAULT;
}

/* Where the copy into the stage stands in the append's iovecs. */
typedef struct cursor {
    const struct iovec *iov;
    size_t cnt, i, off;
} cursor;

/* Copies up to want bytes from the cursor into the stage; returns how many
 * (fewer only at the end of the iovecs). */
static size_t take(cursor *c, uint8_t *dst, size_t want)
{
    size_t got = 0;
    while (got < want && c->i < c->cnt) {
        size_t left = c->iov[c->i].iov_len - c->off;
        size_t k = want - got < left ? want - got : left;
        memcpy(dst + got, (const uint8_t *)c->iov[c->i].iov_base + c->off, k);
        got += k;
        c->off += k;
        if (c->off == c->iov[c->i].iov_len) {
            c->i++;
            c->off = 0;
        }
    }
    return got;
}

/* Writes len bytes of the stage at pos: through the O_DIRECT descriptor
 * when direct (len and pos aligned), else the ordinary one. */
static int write_stage(pb_log *log, bool direct, size_t len, uint64_t pos)
{
    struct iovec v = {.iov_base = log->stage, .iov_len = len};
    return fileio_write_all(log->io, direct ? log->dfd : log->fd, &v, 1, (off_t)pos);
}

int log_direct_write(pb_log *log, const struct iovec *iov, size_t cnt, uint64_t bytes)
{
    /* The rest of the block the segment ends in is written the ordinary
     * way (it shares a page with bytes already written, maybe acked: those
     * are never written again), then whole blocks directly, then the last
     * partial block the ordinary way. */
    size_t align = align_of(log);
    size_t head = (size_t)(log->size % align);
    size_t lead = head ? align - head : 0;
    if (bytes < lead + align || prepare(log) != 0)
        return 1; /* no whole block to write directly: the ordinary way */
    cursor c = {.iov = iov, .cnt = cnt};
    uint64_t pos = log->size;
    int rc;
    if (lead > 0) {
        size_t k = take(&c, log->stage, lead);
        if ((rc = write_stage(log, false, k, pos)) < 0)
            return rc;
        /* Out to the device before any direct write: else a crash before
         * the fdatasync (another partition's sync having committed the
         * file's new size) could leave this page unwritten in front of
         * direct-written records, which recovery would keep as damage
         * followed by records. A failure only costs that order. */
        if (log->io->write_out)
            (void)log->io->write_out(log->io, log->fd, (off_t)pos, (off_t)k);
        pos += k;
    }
    size_t k;
    while ((k = take(&c, log->stage, DIRECT_STAGE)) > 0) {
        size_t whole = k / align * align; /* k < DIRECT_STAGE only at the end */
        if (whole > 0 && (rc = write_stage(log, true, whole, pos)) < 0)
            return give_up(log, rc, "direct write");
        pos += whole;
        if (k > whole) {
            memmove(log->stage, log->stage + whole, k - whole);
            if ((rc = write_stage(log, false, k - whole, pos)) < 0)
                return rc;
            pos += k - whole;
        }
    }
    return 0;
}

void log_direct_close(pb_log *log)
{
    if (log->dfd >= 0) {
        (void)log->io->close(log->io, log->dfd); /* nothing buffered behind it */
        log->dfd = -1;
    }
}

size_t log_direct_free(pb_log *log)
{
    if (!log->stage)
        return 0;
    free(log->stage);
    log->stage = NULL;
    return DIRECT_STAGE;
}
