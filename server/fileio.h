/*
 * fileio - the table of file operations the daemon's storage uses for ALL of
 * its file I/O: the segment log (log.c, recovery.c), the topic table's
 * snapshot and its catch-up reads (topics.c), so tests can put a layer
 * beneath it that injects errors (EIO, ENOSPC) or simulates power loss.
 *
 * Threads: fileio_posix() is a static, stateless table, usable from any
 * thread. A test layer's thread-safety is its own business.
 *
 * Every operation returns >= 0 on success and a negated errno on failure
 * (never -1 with errno). EINTR is retried inside.
 */
#ifndef PB_FILEIO_H
#define PB_FILEIO_H

#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

typedef struct fileio fileio;

/* Called once per directory entry name (not "." or ".."); a negative return
 * stops the listing and is returned by list_dir. */
typedef int (*fileio_dirent_fn)(void *arg, const char *name);

struct fileio {
    int (*open)(const fileio *io, const char *path, int flags, int mode); /* fd */
    /* May write less than asked (like pwritev(2)); returns bytes written. */
    ssize_t (*pwritev)(const fileio *io, int fd, const struct iovec *iov, int iovcnt, off_t off);
    ssize_t (*pread)(const fileio *io, int fd, void *buf, size_t len, off_t off);
    int (*fdatasync)(const fileio *io, int fd);
    int (*fsync)(const fileio *io, int fd); /* used for directories */
    int (*ftruncate)(const fileio *io, int fd, off_t len);
    int (*fsize)(const fileio *io, int fd, off_t *size);
    int (*close)(const fileio *io, int fd);
    int (*mkdir)(const fileio *io, const char *path, int mode); /* -EEXIST if it exists */
    int (*rmdir)(const fileio *io, const char *path);           /* an empty directory */
    int (*unlink)(const fileio *io, const char *path);
    /* Atomically replaces `to` (if any) with `from`, both in one directory;
     * durable once that directory is synced. */
    int (*rename)(const fileio *io, const char *from, const char *to);
    int (*list_dir)(const fileio *io, const char *path, fileio_dirent_fn fn, void *arg);
    /* Space on the file system holding path, in bytes: what an
     * unprivileged writer may still use (statvfs f_bavail x f_frsize) and
     * the size (f_blocks x f_frsize). NULL in a layer that has no notion of
     * it: free space is then not checked (server/freespace.h). Tests put a
     * hook here to play a disk that fills up and is freed again. */
    int (*space)(const fileio *io, const char *path, uint64_t *avail, uint64_t *total);
    /* A hint that bytes [off, off + len) of fd (len 0: to the end), already
     * durable, will not be read soon: the kernel may drop their pages from
     * its cache (posix_fadvise POSIX_FADV_DONTNEED). Never changes what the
     * file holds. NULL in a layer that has no cache to drop (the power-loss
     * simulation); a failure is only a hint not taken. */
    int (*drop_cache)(const fileio *io, int fd, off_t off, off_t len);
    /* Writes the dirty pages of [off, off + len) of fd to the device and
     * waits until they are written (sync_file_range WAIT_BEFORE | WRITE |
     * WAIT_AFTER): not a durability guarantee (the device may cache them,
     * and the file's size is not synced) but an order: they reach the
     * device before anything submitted afterwards. NULL in a layer that has
     * no page cache to write out (the power-loss simulation). */
    int (*write_out)(const fileio *io, int fd, off_t off, off_t len);
    /* Whether fd is the only way left to the file's data: the file has no
     * name (st_nlink 0: no hard link shares it) and fd is its only open
     * descriptor, in this process or any other. Takes a write lease on it
     * (F_SETLEASE F_WRLCK), held until fd is closed; the lease break is
     * not signalled (SIGURG, ignored). 1: the only one; 0: a name or
     * another descriptor has it; a negated errno when leases are not
     * available. NULL in a layer without leases (the power-loss
     * simulation): callers then assume another descriptor may have it. */
    int (*sole_open)(const fileio *io, int fd);
    /* Zeroes [off, off + len) of fd (fallocate FALLOC_FL_ZERO_RANGE; the
     * size stays). On ext4 (measured) the blocks become unwritten extents,
     * which read as zeros: nothing is freed; XFS implements it by freeing
     * and allocating again (not measured here). Only if fd is the only way to the
     * file: one name (-EMLINK when a hard link shares it: the link would
     * see the zeros) and no other descriptor in any process (-EBUSY; a
     * write lease is taken for the call and given back). Not durable until
     * fdatasync. -EOPNOTSUPP where the file system has no ZERO_RANGE; NULL
     * in a layer without it: the caller frees the file instead. For
     * recycling removed segments (server/recycle.h). */
    int (*zero_range)(const fileio *io, int fd, off_t off, off_t len);
    void *ctx; /* for the layer's own state */
};

/* The real thing: POSIX calls on the local file system. */
const fileio *fileio_posix(void);

/* Writes all of iov at off through io->pwritev, in IOV_MAX chunks,
 * continuing after short writes. iov is consumed (modified). 0 or a negated
 * errno (-EIO if the layer stops making progress). */
int fileio_write_all(const fileio *io, int fd, struct iovec *iov, size_t cnt, off_t off);

/* Creates directory path if missing, then fsyncs its parent (also when it
 * was already there: it may have been made by a process killed before its
 * sync): a new directory entry is not durable until its parent is synced.
 * 0 (created or already there) or a negated errno; *what (if not NULL)
 * names the failed step for messages. */
int fileio_mkdir_durable(const fileio *io, const char *path, int mode, const char **what);

/* Reads the whole file at path into *buf (malloc'd, *len bytes), for the
 * small files read whole at start-up (the topic and dedup snapshots). A
 * size outside [min, max] is refused before anything is allocated. 0;
 * PB_ENOTFOUND when there is no such file; else PB_ECORRUPT (implausible
 * size, or the file shrank while read), PB_ENOMEM or a negated errno, with
 * why[] saying what (*buf is then NULL). */
int fileio_read_file(const fileio *io, const char *path, size_t min, size_t max, uint8_t **buf,
                     size_t *len, char *why, size_t whylen);

/* fsync of directory `dir` (open, fsync, close): makes the entries created,
 * renamed or removed in it durable. 0 or a negated errno. */
int fileio_sync_dir(const fileio *io, const char *dir);

struct segment_io;
/* A read-only view of io for the segment readers (proto/segment.h), e.g.
 * pb_reader_open_io: *out reads through io, which must outlive it. */
void fileio_segment_io(const fileio *io, struct segment_io *out);

/* io->pread as a segment_pread_fn (proto/segment.h), ctx being the
 * (const fileio *): for segment_buf and segment_pread_full over io. */
ssize_t fileio_segment_pread(void *ctx, int fd, void *buf, size_t len, off_t off);

#endif
