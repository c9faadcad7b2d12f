/*
 * fileio - POSIX implementation of the storage's I/O table, and the helpers
 * built on any table (see fileio.h).
 *
 * Threads: any; no state.
 */
#include "fileio.h"

#include "iov.h"
#include "pb_errors.h"
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

static int px_open(const fileio *io, const char *path, int flags, int mode)
{
    for (;;) {
        int fd = open(path, flags | O_CLOEXEC, (mode_t)mode);
        if (fd >= 0)
            return fd;
        if (errno != EINTR)
            return -errno;
    }
}

static ssize_t px_pwritev(const fileio *io, int fd, const struct iovec *iov, int iovcnt, off_t off)
{
    for (;;) {
        ssize_t n = pwritev(fd, iov, iovcnt, off);
        if (n >= 0)
            return n;
        if (errno != EINTR)
            return -errno;
    }
}

/* The EINTR-safe pread loop and the directory listing are proto's (the
 * readers of segment files use them too). */
static ssize_t px_pread(const fileio *io, int fd, void *buf, size_t len, off_t off)
{
    return segment_pread_posix(NULL, fd, buf, len, off);
}

/* No EINTR retry for the syncs: Linux does not interrupt them, and a sync
 * that failed must not be retried (the caller fails the log instead). */
static int px_fdatasync(const fileio *io, int fd)
{
    return fdatasync(fd) < 0 ? -errno : 0;
}

static int px_fsync(const fileio *io, int fd)
{
    return fsync(fd) < 0 ? -errno : 0;
}

static int px_ftruncate(const fileio *io, int fd, off_t len)
{
    for (;;) {
        if (ftruncate(fd, len) == 0)
            return 0;
        if (errno != EINTR)
            return -errno;
    }
}

static int px_fsize(const fileio *io, int fd, off_t *size)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    *size = st.st_size;
    return 0;
}

static int px_close(const fileio *io, int fd)
{
    /* Linux closes the descriptor even when close() reports EINTR, so it is
     * not retried. */
    return close(fd) < 0 ? -errno : 0;
}

static int px_mkdir(const fileio *io, const char *path, int mode)
{
    return mkdir(path, (mode_t)mode) < 0 ? -errno : 0;
}

static int px_rmdir(const fileio *io, const char *path)
{
    return rmdir(path) < 0 ? -errno : 0;
}

static int px_unlink(const fileio *io, const char *path)
{
    return unlink(path) < 0 ? -errno : 0;
}

static int px_rename(const fileio *io, const char *from, const char *to)
{
    return rename(from, to) < 0 ? -errno : 0;
}

static int px_list_dir(const fileio *io, const char *path, fileio_dirent_fn fn, void *arg)
{
    return segment_io_posix()->list(NULL, path, fn, arg);
}

static int px_space(const fileio *io, const char *path, uint64_t *avail, uint64_t *total)
{
    struct statvfs sv;
    if (statvfs(path, &sv) < 0)
        return -errno;
    *avail = (uint64_t)sv.f_bavail * sv.f_frsize;
    *total = (uint64_t)sv.f_blocks * sv.f_frsize;
    return 0;
}

static int px_drop_cache(const fileio *io, int fd, off_t off, off_t len)
{
    return -posix_fadvise(fd, off, len, POSIX_FADV_DONTNEED); /* returns the error number */
}

static int px_write_out(const fileio *io, int fd, off_t off, off_t len)
{
    int flags = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER;
    for (;;) {
        if (sync_file_range(fd, off, len, (unsigned)flags) == 0)
            return 0;
        if (errno != EINTR)
            return -errno;
    }
}

static int px_sole_open(const fileio *io, int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (st.st_nlink != 0)
        return 0; /* a name (a hard link a backup made, say) shares the data */
    /* A lease break signals the holder, by default with SIGIO, whose
     * default action ends the process: SIGURG's is to ignore it. */
    if (fcntl(fd, F_SETSIG, SIGURG) < 0)
        return -errno;
    if (fcntl(fd, F_SETLEASE, F_WRLCK) == 0)
        return 1;
    return errno == EAGAIN || errno == EBUSY ? 0 : -errno;
}

static int px_zero_range(const fileio *io, int fd, off_t off, off_t len)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (st.st_nlink != 1)
        return -EMLINK; /* a hard link (a backup's cp -al) would see the zeros */
    if (fcntl(fd, F_SETSIG, SIGURG) < 0) /* as px_sole_open: a break must not kill us */
        return -errno;
    if (fcntl(fd, F_SETLEASE, F_WRLCK) < 0)
        return errno == EAGAIN ? -EBUSY : -errno; /* another descriptor has it open */
    int rc = 0;
    while (fallocate(fd, FALLOC_FL_ZERO_RANGE, off, len) < 0) {
        if (errno != EINTR) {
            rc = -errno;
            break;
        }
    }
    (void)fcntl(fd, F_SETLEASE, F_UNLCK); /* a later open by name must not wait for it */
    return rc;
}

static const fileio posix_io = {
    .open = px_open,
    .pwritev = px_pwritev,
    .pread = px_pread,
    .fdatasync = px_fdatasync,
    .fsync = px_fsync,
    .ftruncate = px_ftruncate,
    .fsize = px_fsize,
    .close = px_close,
    .mkdir = px_mkdir,
    .rmdir = px_rmdir,
    .unlink = px_unlink,
    .rename = px_rename,
    .list_dir = px_list_dir,
    .space = px_space,
    .drop_cache = px_drop_cache,
    .write_out = px_write_out,
    .sole_open = px_sole_open,
    .zero_range = px_zero_range,
    .ctx = NULL,
};

const fileio *fileio_posix(void)
{
    return &posix_io;
}

int fileio_read_file(const fileio *io, const char *path, size_t min, size_t max, uint8_t **buf,
                     size_t *len, char *why, size_t whylen)
{
    *buf = NULL;
    *len = 0;
    int fd = io->open(io, path, O_RDONLY, 0);
    if (fd < 0) {
        snprintf(why, whylen, "%s", strerror(-fd));
        return fd == -ENOENT ? PB_ENOTFOUND : fd;
    }
    off_t size = 0;
    int rc = io->fsize(io, fd, &size);
    if (rc < 0) {
        snprintf(why, whylen, "size: %s", pb_strerror(rc));
    } else if (size < (off_t)min || (uint64_t)size > max) {
        snprintf(why, whylen, "implausible size %lld bytes", (long long)size);
        rc = PB_ECORRUPT;
    } else if (!(*buf = malloc((size_t)size))) {
        snprintf(why, whylen, "out of memory for %lld bytes", (long long)size);
        rc = PB_ENOMEM;
    } else {
        ssize_t got =
            segment_pread_full(fileio_segment_pread, (void *)io, fd, *buf, (size_t)size, 0);
        if (got < (ssize_t)size) {
            rc = got < 0 ? (int)got : PB_ECORRUPT;
            if (got < 0)
                snprintf(why, whylen, "read: %s", pb_strerror(rc));
            else
                snprintf(why, whylen, "read at byte %zd: file shrank", got);
        }
    }
    (void)io->close(io, fd); /* read-only: nothing to lose */
    if (rc < 0) {
        free(*buf);
        *buf = NULL;
        return rc;
    }
    *len = (size_t)size;
    return 0;
}

int fileio_write_all(const fileio *io, int fd, struct iovec *iov, size_t cnt, off_t off)
{
    while (cnt > 0) {
        int chunk = cnt > IOV_MAX ? IOV_MAX : (int)cnt;
        ssize_t n = io->pwritev(io, fd, iov, chunk, off);
        if (n < 0)
            return (int)n;
        if (n == 0)
            return -EIO; /* no progress: would loop forever */
        off += n;
        cnt = iov_consume(&iov, cnt, (size_t)n);
    }
    return 0;
}

/* open, fsync, close of directory dir; *what names the step that failed. */
static int sync_dir(const fileio *io, const char *dir, bool parent, const char **what)
{
    *what = parent ? "open of parent directory" : "open of directory";
    int fd = io->open(io, dir, O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0)
        return fd;
    *what = parent ? "fsync of parent directory" : "fsync of directory";
    int rc = io->fsync(io, fd);
    int c = io->close(io, fd);
    if (rc == 0 && c < 0) {
        *what = parent ? "close of parent directory" : "close of directory";
        rc = c;
    }
    return rc;
}

int fileio_mkdir_durable(const fileio *io, const char *path, int mode, const char **what)
{
    const char *dummy;
    if (!what)
        what = &dummy;
    *what = "mkdir";
    int rc = io->mkdir(io, path, mode);
    /* An existing directory's parent is synced too: a process killed
     * between its mkdir and that sync leaves an entry that only the page
     * cache holds, and whatever is acked inside it would go with it. */
    if (rc < 0 && rc != -EEXIST)
        return rc;
    char parent[PATH_MAX];
    if (snprintf(parent, sizeof parent, "%s", path) >= (int)sizeof parent)
        return -ENAMETOOLONG;
    char *slash = strrchr(parent, '/');
    if (!slash)
        snprintf(parent, sizeof parent, ".");
    else if (slash == parent)
        parent[1] = '\0';
    else
        *slash = '\0';
    return sync_dir(io, parent, true, what);
}

int fileio_sync_dir(const fileio *io, const char *dir)
{
    const char *what;
    return sync_dir(io, dir, false, &what);
}

/* --- the segment readers' view (segment_io) --- */

static int sio_open(void *ctx, const char *path)
{
    const fileio *io = ctx;
    return io->open(io, path, O_RDONLY, 0);
}

ssize_t fileio_segment_pread(void *ctx, int fd, void *buf, size_t len, off_t off)
{
    const fileio *io = ctx;
    return io->pread(io, fd, buf, len, off);
}

static int sio_size(void *ctx, int fd, uint64_t *size)
{
    const fileio *io = ctx;
    off_t s = 0;
    int rc = io->fsize(io, fd, &s);
    *size = rc == 0 ? (uint64_t)s : 0;
    return rc;
}

static int sio_close(void *ctx, int fd)
{
    const fileio *io = ctx;
    return io->close(io, fd);
}

static int sio_list(void *ctx, const char *dir, int (*fn)(void *arg, const char *name), void *arg)
{
    const fileio *io = ctx;
    return io->list_dir(io, dir, fn, arg);
}

void fileio_segment_io(const fileio *io, struct segment_io *out)
{
    *out = (segment_io){
        .open = sio_open,
        .pread = fileio_segment_pread,
        .size = sio_size,
        .close = sio_close,
        .list = sio_list,
        .ctx = (void *)io,
    };
}
