/*
 * store - the partitions of a data directory, by name (see store.h).
 *
 * Threads: store_open and store_close on the main thread; store_get on the
 * loop thread (it opens new partitions, which does a little disk I/O: mkdir
 * and fsyncs, once per new partition); store_find, store_list and
 * store_data_dir on any thread. The mutex protects the array; partitions are
 * only added, never removed, until store_close.
 *
 * Partitions sit in an array kept sorted by name: lookups are a binary
 * search and store_list is a copy. Capture-group rules create them on
 * demand, so store_get creates at most max_partitions (main.c sizes the
 * default to the descriptors the daemon can have; partition.h says what an
 * open partition holds).
 */
#include "store.h"

#include "compressor.h"
#include "fileio.h"
#include "inflater.h"
#include "grow.h"
#include "logging.h"
#include "partname.h"
#include "pb_errors.h"
#include "reader.h"
#include "retention.h"
#include "unlinker.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

struct store {
    char *data_dir;
    store_options_fn options;
    void *ctx;
    pthread_mutex_t lock; /* protects parts, count, cap, max */
    partition **parts;    /* sorted by name */
    size_t count;
    size_t cap;
    size_t max; /* max_partitions for store_get to create; 0: none */
    /* The one compressor thread, started for the first partition with
     * compress = zstd (under lock); stopped after every partition closed. */
    compressor *z;
    /* The one unlinker thread (segments retention removed), started for
     * the first partition with retention (under lock); stopped last. */
    unlinker *unlink;
    /* Decompress-ahead for the replays (store_segment_io). */
    inflater *inflate;
    segment_io io;
    int lock_fd; /* data_dir/.lock, flock'ed while open; -1: none */
};

/* Index of name in s->parts, or of where it would be inserted (*found false). */
static size_t search(const store *s, const char *name, bool *found)
{
    size_t lo = 0, hi = s->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(partition_name(s->parts[mid]), name);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

static int insert_at(store *s, size_t at, partition *p)
{
    if (grow_reserve(&s->parts, &s->cap, s->count + 1, sizeof *s->parts) < 0)
        return PB_ENOMEM;
    memmove(s->parts + at + 1, s->parts + at, (s->count - at) * sizeof *s->parts);
    s->parts[at] = p;
    s->count++;
    return 0;
}

/* Opens partition `name` with opts and adds it; the lock is held (or not
 * yet shared). */
static int open_partition(store *s, const char *name, const partition_options *opts,
                          partition **out)
{
    partition *p = NULL;
    partition_options o = *opts;
    int rc = 0;
    if (o.retain.compress_level && !s->z && (rc = compressor_start(&s->z)) < 0) {
        logging_printf(LOG_ERROR, "partition %s: cannot start the compressor thread: %s", name,
                       pb_strerror(rc));
        return rc;
    }
    if (o.retain.compress_level)
        o.compressor = s->z;
    if (retention_enabled(&o.retain) && !s->unlink && (rc = unlinker_start(&s->unlink)) < 0) {
        logging_printf(LOG_ERROR, "partition %s: cannot start the unlinker thread: %s", name,
                       pb_strerror(rc));
        return rc;
    }
    o.unlinker = s->unlink;
    rc = partition_open(&p, s->data_dir, name, &o);
    if (rc < 0)
        return rc;
    bool found;
    size_t at = search(s, name, &found);
    rc = insert_at(s, at, p);
    if (rc < 0) {
        int crc = partition_close(p);
        if (crc < 0)
            logging_printf(LOG_ERROR, "partition %s: closing it after running out of memory: %s",
                           name, pb_strerror(crc));
        return rc;
    }
    *out = p;
    return 0;
}

/* Makes data_dir exist and its entry durable (also when it was there: a
 * process killed between mkdir and the parent's fsync leaves an entry only
 * the page cache holds), as every partition directory below depends on it. */
static int make_data_dir(const char *data_dir)
{
    int rc = fileio_mkdir_durable(fileio_posix(), data_dir, 0755, NULL);
    if (rc < 0)
        return rc;
    struct stat st;
    if (stat(data_dir, &st) < 0)
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

/* Takes data_dir/.lock (flock, exclusive, not waiting) and writes our pid
 * in it: two daemons appending to one partition would interleave their
 * records and both ack them. The kernel drops the lock when the process
 * ends, however it ends, so a kill -9 leaves nothing to clean up. The name
 * starts with '.', so no reader takes it for a partition (partname.h). */
static int lock_data_dir(store *s, const char *data_dir)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/.lock", data_dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        int rc = -errno;
        logging_printf(LOG_ERROR, "data directory %s: cannot open its lock file %s: %s", data_dir,
                       path, pb_strerror(rc));
        return rc;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        if (rc == -EBUSY)
            logging_printf(LOG_ERROR,
                           "data directory %s is in use by another protobusd (pid %s, lock %s): "
                           "two daemons must never write one data directory; stop that one "
                           "or choose another data_dir",
                           data_dir, pid[0] ? pid : "unknown", path);
        else
            logging_printf(LOG_ERROR, "data directory %s: cannot lock %s: %s", data_dir, path,
                           pb_strerror(rc));
        close(fd);
        return rc;
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len)
        logging_printf(LOG_WARN, "data directory %s: cannot write our pid into %s: %s", data_dir,
                       path, strerror(errno)); /* the lock holds all the same */
    s->lock_fd = fd;
    return 0;
}

int store_open(store **out, const char *data_dir, store_options_fn options, void *ctx)
{
    *out = NULL;
    char **names = NULL, **skipped = NULL;
    size_t n = 0, nskipped = 0;
    store *s = calloc(1, sizeof *s);
    if (!s)
        return PB_ENOMEM;
    s->options = options;
    s->ctx = ctx;
    s->lock_fd = -1;
    int rc = pthread_mutex_init(&s->lock, NULL);
    if (rc != 0) {
        free(s);
        return -rc;
    }
    s->data_dir = strdup(data_dir);
    if (!s->data_dir) {
        rc = PB_ENOMEM;
        goto fail;
    }
    s->io = *segment_io_posix();
    if ((rc = inflater_start(&s->inflate)) < 0) {
        logging_printf(LOG_ERROR, "cannot start the decompress-ahead thread: %s", pb_strerror(rc));
        goto fail;
    }
    s->io.ahead = inflater_ahead(s->inflate);
    rc = make_data_dir(data_dir);
    if (rc < 0) {
        logging_printf(LOG_ERROR, "data directory %s: cannot create it: %s", data_dir,
                       pb_strerror(rc));
        goto fail;
    }
    if ((rc = lock_data_dir(s, data_dir)) < 0)
        goto fail;
    rc = partition_dirs_scan(data_dir, &names, &n, &skipped, &nskipped);
    if (rc < 0) {
        logging_printf(LOG_ERROR, "data directory %s: cannot list it: %s", data_dir,
                       pb_strerror(rc));
        goto fail;
    }
    /* The rule that decides what is a partition is the readers' too, so
     * these are invisible to cat and to subscribers alike: say so. */
    for (size_t i = 0; i < nskipped; i++)
        logging_printf(LOG_WARN,
                       "data directory %s: %s/ holds segment files but is not a partition "
                       "(names are %s): its events are not served; rename it to serve them",
                       data_dir, skipped[i], PARTNAME_RULE);
    for (size_t i = 0; i < n; i++) {
        partition_options opts;
        memset(&opts, 0, sizeof opts);
        rc = s->options(s->ctx, names[i], &opts);
        if (rc < 0) {
            logging_printf(LOG_WARN, "data directory %s: not opening partition %s: %s", data_dir,
                           names[i], pb_strerror(rc));
            rc = 0;
            continue;
        }
        partition *p;
        rc = open_partition(s, names[i], &opts, &p);
        if (rc < 0) {
            /* Serving without it would hide acknowledged events (and a
             * publish would try to open it again): refuse to start. */
            logging_printf(LOG_ERROR, "data directory %s: cannot open partition %s: %s", data_dir,
                           names[i], pb_strerror(rc));
            goto fail;
        }
    }
    pb_partition_list_free(names, n);
    pb_partition_list_free(skipped, nskipped);
    logging_printf(LOG_INFO, "data directory %s: %zu partition(s) recovered", data_dir, s->count);
    *out = s;
    return 0;
fail:
    pb_partition_list_free(names, n);
    pb_partition_list_free(skipped, nskipped);
    store_close(s);
    return rc;
}

/* Undoes the creation of partition directory `dir` that failed part way
 * (say, out of descriptors after mkdir): a refused partition leaves nothing
 * on disk. Only what log_open creates in an empty directory is removed,
 * named one by one (no directory listing, which would need a descriptor),
 * then the directory itself; anything else in it keeps it. */
static void remove_new_partition(store *s, const fileio *io, const char *name, const char *dir)
{
    char path[PATH_MAX];
    static const char *const made[] = {"00000000000000000000.log", "00000000000000000000.idx"};
    for (size_t i = 0; i < sizeof made / sizeof made[0]; i++) {
        if (snprintf(path, sizeof path, "%s/%s", dir, made[i]) >= (int)sizeof path)
            return;
        int rc = io->unlink(io, path);
        if (rc < 0 && rc != -ENOENT)
            logging_printf(LOG_WARN, "partition %s: removing %s after a failed creation: %s", name,
                           path, pb_strerror(rc));
    }
    int rc = io->rmdir(io, dir);
    if (rc < 0 && rc != -ENOENT) {
        logging_printf(LOG_WARN, "partition %s: removing %s after a failed creation: %s", name, dir,
                       pb_strerror(rc));
        return;
    }
    /* Best effort: a removal the directory sync misses leaves an empty
     * partition directory behind after a crash, which opens as an empty
     * partition. */
    if ((rc = fileio_sync_dir(io, s->data_dir)) < 0)
        logging_printf(LOG_WARN, "data directory %s: fsync after removing %s: %s", s->data_dir,
                       name, pb_strerror(rc));
}

int store_get(store *s, const char *name, partition **out)
{
    *out = NULL;
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    bool found;
    size_t at = search(s, name, &found);
    if (found) {
        *out = s->parts[at];
        goto out;
    }
    if (!partname_valid(name, strlen(name))) {
        /* The router refuses such names first; a guard, not a path. */
        rc = PB_EINVAL;
        goto out;
    }
    if (s->max && s->count >= s->max) {
        rc = STORE_EFULL; /* checked before anything exists on disk */
        goto out;
    }
    partition_options opts;
    memset(&opts, 0, sizeof opts);
    rc = s->options(s->ctx, name, &opts);
    if (rc < 0)
        goto out;
    char dir[PATH_MAX];
    if (snprintf(dir, sizeof dir, "%s/%s", s->data_dir, name) >= (int)sizeof dir) {
        rc = -ENAMETOOLONG;
        goto out;
    }
    /* Every valid directory was opened at start-up, so one that exists now
     * was made by someone else: it is never removed. */
    struct stat st;
    bool existed = stat(dir, &st) == 0;
    rc = open_partition(s, name, &opts, out);
    if (rc == 0)
        logging_printf(LOG_INFO, "partition %s: created in %s", name, s->data_dir);
    else if (!existed)
        remove_new_partition(s, opts.log.io ? opts.log.io : fileio_posix(), name, dir);
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

partition *store_find(store *s, const char *name)
{
    pthread_mutex_lock(&s->lock);
    bool found;
    size_t at = search(s, name, &found);
    partition *p = found ? s->parts[at] : NULL;
    pthread_mutex_unlock(&s->lock);
    return p;
}

int store_list(store *s, partition ***out, size_t *count)
{
    *out = NULL;
    *count = 0;
    pthread_mutex_lock(&s->lock);
    size_t n = s->count;
    /* One extra slot so an empty store still yields a pointer to free. */
    partition **v = malloc((n + 1) * sizeof *v);
    if (v) {
        if (n > 0)
            memcpy(v, s->parts, n * sizeof *v);
        *out = v;
        *count = n;
    }
    pthread_mutex_unlock(&s->lock);
    return v ? 0 : PB_ENOMEM;
}

void store_set_max_partitions(store *s, size_t max)
{
    pthread_mutex_lock(&s->lock);
    s->max = max;
    pthread_mutex_unlock(&s->lock);
}

size_t store_max_partitions(store *s)
{
    pthread_mutex_lock(&s->lock);
    size_t max = s->max;
    pthread_mutex_unlock(&s->lock);
    return max;
}

size_t store_count(store *s)
{
    pthread_mutex_lock(&s->lock);
    size_t n = s->count;
    pthread_mutex_unlock(&s->lock);
    return n;
}

const segment_io *store_segment_io(store *s)
{
    return &s->io;
}

const char *store_data_dir(const store *s)
{
    return s->data_dir;
}

int store_close(store *s)
{
    if (!s)
        return 0;
    int rc = 0;
    /* No other thread uses the store any more; closing in order keeps the
     * shutdown log readable. */
    for (size_t i = 0; i < s->count; i++) {
        int prc = partition_close(s->parts[i]);
        if (prc < 0 && rc == 0)
            rc = prc;
    }
    compressor_stop(s->z); /* every partition took its job back */
    unlinker_stop(s->unlink); /* after the partitions: unlinks what they left it */
    inflater_stop(s->inflate); /* the readers (subscriptions, mirrors) closed first */
    free(s->parts);
    free(s->data_dir);
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* after every partition is closed: releases the lock */
    pthread_mutex_destroy(&s->lock);
    free(s);
    return rc;
}
