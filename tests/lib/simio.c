/*
 * simio - in-memory fileio with power-loss simulation (see simio.h).
 *
 * Model: inodes hold the current bytes, the durable bytes and the list of
 * unsynced changes (writes with a copy of their bytes, truncations) in
 * order. The namespace is a flat list of (path, inode) entries, current and
 * durable, plus the ordered list of unsynced creates/unlinks/renames; a directory
 * fsync moves that directory's unsynced changes into the durable list.
 *
 * Threads: any; one mutex around every call (the sync and write hooks run outside).
 */
#include "simio.h"

#include "pb_errors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { CHANGE_WRITE, CHANGE_TRUNC, CHANGE_ZERO };

typedef struct change {
    int kind;
    uint64_t off; /* WRITE, ZERO: position; TRUNC: new length */
    uint64_t len; /* WRITE: bytes, kept at arena + data_at; ZERO: bytes zeroed */
    size_t data_at;
} change;

typedef struct inode {
    bool used;
    bool is_dir;
    uint8_t *data; /* current content */
    size_t size, cap;
    uint8_t *durable; /* content as of the last sync */
    size_t dsize;
    change *changes; /* unsynced, in order */
    size_t nchanges, changes_cap;
    uint8_t *arena; /* bytes of the unsynced writes */
    size_t arena_len, arena_cap;
    /* A sync of it failed (fsyncgate): the changes pending then were
     * dropped from the list, so the durable bytes are no longer the
     * current ones without them: a later sync applies the list to the
     * durable bytes (replay_durable) instead of copying the current. */
    bool gated;
} inode;

typedef struct entry {
    char *path;
    int ino;
} entry;

typedef struct entry_list {
    entry *v;
    size_t n, cap;
} entry_list;

enum { DIROP_CREATE, DIROP_UNLINK, DIROP_RENAME };

typedef struct dirop {
    int kind;
    char *path; /* RENAME: the new name */
    int ino;
    char *from; /* RENAME: the old name (same directory); else NULL */
} dirop;

typedef struct open_file {
    int fd;
    int ino;
    char *path;
} open_file;

struct simio {
    fileio io;
    pthread_mutex_t lock;
    inode *inodes;
    size_t ninodes;
    entry_list cur, dur;
    dirop *dirops;
    size_t ndirops, dirops_cap;
    char **roots;
    size_t nroots;
    open_file *open;
    size_t nopen, open_cap;
    int next_fd;

    uint64_t ops, crash_at;
    bool down;

    unsigned fault_mask;
    uint64_t fault_skip, fault_seen;
    int fault_err;
    char *fault_path;
    size_t max_write;
    bool broken_fsync;
    void (*hook)(void *ctx);
    void *hook_ctx;
    void (*write_hook)(void *ctx); /* simio_set_write_hook */
    void *write_hook_ctx;

    unsigned oplog_mask; /* simio_log_ops: which kinds' op numbers to note */
    uint64_t *oplog;
    size_t oplog_cap, oplog_n;
};

/* ---- small helpers ------------------------------------------------------ */

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 16;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q)
        return PB_ENOMEM;
    *p = q;
    *cap = n;
    return 0;
}

static uint64_t mix(uint64_t *state)
{
    uint64_t x = (*state += 0x9E3779B97F4A7C15ull);
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* True if path's parent directory is exactly dir. */
static bool parent_is(const char *path, const char *dir)
{
    size_t dl = strlen(dir);
    return strncmp(path, dir, dl) == 0 && path[dl] == '/' && path[dl + 1] != '\0' &&
           strchr(path + dl + 1, '/') == NULL;
}

static void parent_of(const char *path, char *out, size_t cap)
{
    snprintf(out, cap, "%s", path);
    char *slash = strrchr(out, '/');
    if (!slash)
        snprintf(out, cap, ".");
    else if (slash == out)
        out[1] = '\0';
    else
        *slash = '\0';
}

static entry *find(entry_list *l, const char *path)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i].path, path) == 0)
            return &l->v[i];
    return NULL;
}

static int list_add(entry_list *l, const char *path, int ino)
{
    if (grow((void **)&l->v, &l->cap, l->n + 1, sizeof *l->v) < 0)
        return PB_ENOMEM;
    char *p = strdup(path);
    if (!p)
        return PB_ENOMEM;
    l->v[l->n++] = (entry){p, ino};
    return 0;
}

static void list_del(entry_list *l, const char *path)
{
    for (size_t i = 0; i < l->n; i++) {
        if (strcmp(l->v[i].path, path) == 0) {
            free(l->v[i].path);
            l->v[i] = l->v[--l->n];
            return;
        }
    }
}

static void list_clear(entry_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].path);
    l->n = 0;
}

static bool is_root(const simio *s, const char *path)
{
    for (size_t i = 0; i < s->nroots; i++)
        if (strcmp(s->roots[i], path) == 0)
            return true;
    return false;
}

/* Is path an existing directory in list l (or a root)? */
static bool dir_in(simio *s, entry_list *l, const char *path)
{
    if (is_root(s, path))
        return true;
    entry *e = find(l, path);
    return e && s->inodes[e->ino].is_dir;
}

static int new_inode(simio *s, bool is_dir)
{
    for (size_t i = 0; i < s->ninodes; i++) {
        if (!s->inodes[i].used) {
            memset(&s->inodes[i], 0, sizeof s->inodes[i]);
            s->inodes[i].used = true;
            s->inodes[i].is_dir = is_dir;
            return (int)i;
        }
    }
    inode *v = realloc(s->inodes, (s->ninodes + 16) * sizeof *v);
    if (!v)
        return PB_ENOMEM;
    s->inodes = v;
    memset(v + s->ninodes, 0, 16 * sizeof *v);
    size_t i = s->ninodes;
    s->ninodes += 16;
    v[i].used = true;
    v[i].is_dir = is_dir;
    return (int)i;
}

static void free_inode(inode *n)
{
    free(n->data);
    free(n->durable);
    free(n->changes);
    free(n->arena);
    memset(n, 0, sizeof *n);
}

/* Sets the inode's current size, zero-filling growth. */
static int resize(inode *n, size_t size)
{
    if (grow((void **)&n->data, &n->cap, size ? size : 1, 1) < 0)
        return PB_ENOMEM;
    if (size > n->size)
        memset(n->data + n->size, 0, size - n->size);
    n->size = size;
    return 0;
}

static int add_change(inode *n, int kind, uint64_t off, const void *data, uint64_t len)
{
    if (grow((void **)&n->changes, &n->changes_cap, n->nchanges + 1, sizeof *n->changes) < 0)
        return PB_ENOMEM;
    change c = {.kind = kind, .off = off, .len = len, .data_at = n->arena_len};
    if (kind == CHANGE_WRITE && len > 0) {
        if (grow((void **)&n->arena, &n->arena_cap, n->arena_len + len, 1) < 0)
            return PB_ENOMEM;
        memcpy(n->arena + n->arena_len, data, len);
        n->arena_len += len;
    }
    n->changes[n->nchanges++] = c;
    return 0;
}

/* The current content becomes the durable one. */
static int make_durable(inode *n)
{
    uint8_t *d = malloc(n->size ? n->size : 1);
    if (!d)
        return PB_ENOMEM;
    if (n->size)
        memcpy(d, n->data, n->size);
    free(n->durable);
    n->durable = d;
    n->dsize = n->size;
    n->nchanges = 0;
    n->arena_len = 0;
    return 0;
}

/* After a failed sync (gated): the durable bytes with every change since
 * that sync applied in full; the bytes of the changes pending at it stay
 * visible in data until a power loss, but never become durable (Linux
 * marks the pages of a failed writeback clean: fsyncgate). */
static int replay_durable(inode *n)
{
    size_t size = n->dsize, cap = n->dsize ? n->dsize : 1;
    uint8_t *out = malloc(cap);
    if (!out)
        return PB_ENOMEM;
    if (n->dsize)
        memcpy(out, n->durable, n->dsize);
    for (size_t i = 0; i < n->nchanges; i++) {
        const change *c = &n->changes[i];
        uint64_t end = c->kind == CHANGE_TRUNC ? c->off : c->off + c->len;
        if (c->kind == CHANGE_ZERO && end > size)
            end = size;
        if (end > size) {
            if (grow((void **)&out, &cap, end, 1) < 0) {
                free(out);
                return PB_ENOMEM;
            }
            memset(out + size, 0, end - size);
        }
        if (c->kind == CHANGE_TRUNC)
            size = c->off;
        else if (end > size)
            size = end;
        if (c->kind == CHANGE_WRITE)
            memcpy(out + c->off, n->arena + c->data_at, c->len);
        else if (c->kind == CHANGE_ZERO && c->off < end)
            memset(out + c->off, 0, end - c->off);
    }
    free(n->durable);
    n->durable = out;
    n->dsize = size;
    n->nchanges = 0;
    n->arena_len = 0;
    return 0;
}

static int add_dirop(simio *s, int kind, const char *path, int ino, const char *from)
{
    if (grow((void **)&s->dirops, &s->dirops_cap, s->ndirops + 1, sizeof *s->dirops) < 0)
        return PB_ENOMEM;
    char *p = strdup(path);
    char *f = from ? strdup(from) : NULL;
    if (!p || (from && !f)) {
        free(p);
        free(f);
        return PB_ENOMEM;
    }
    s->dirops[s->ndirops++] = (dirop){kind, p, ino, f};
    return 0;
}

static void free_dirop(dirop *d)
{
    free(d->path);
    free(d->from);
}

static int apply_dirop(entry_list *l, const dirop *d)
{
    if (d->from)
        list_del(l, d->from);
    list_del(l, d->path);
    return d->kind != DIROP_UNLINK ? list_add(l, d->path, d->ino) : 0;
}

static open_file *fd_find(simio *s, int fd)
{
    for (size_t i = 0; i < s->nopen; i++)
        if (s->open[i].fd == fd)
            return &s->open[i];
    return NULL;
}

static void drop_fds(simio *s)
{
    for (size_t i = 0; i < s->nopen; i++)
        free(s->open[i].path);
    s->nopen = 0;
}

/* Counts one operation of kind `kind` on `path` and decides whether it may
 * run: 0, -EIO (the power is gone) or the injected error. */
static int gate(simio *s, unsigned kind, const char *path)
{
    if (!s->down && ++s->ops == s->crash_at)
        s->down = true;
    if ((s->oplog_mask & kind) && s->oplog_n < s->oplog_cap)
        s->oplog[s->oplog_n++] = s->ops;
    if (s->down)
        return -EIO;
    if ((s->fault_mask & kind) && (!s->fault_path || (path && strstr(path, s->fault_path))) &&
        ++s->fault_seen > s->fault_skip)
        return -s->fault_err;
    return 0;
}

static simio *S(const fileio *io)
{
    return io->ctx;
}

/* ---- the fileio operations --------------------------------------------- */

static int s_open(const fileio *io, const char *path, int flags, int mode)
{
    simio *s = S(io);
    pthread_mutex_lock(&s->lock);
    int rc = gate(s, SIMIO_OPEN, path);
    if (rc < 0)
        goto out;
    int ino;
    entry *e = find(&s->cur, path);
    if (e) {
        ino = e->ino;
        if ((flags & O_CREAT) && (flags & O_EXCL)) {
            rc = -EEXIST;
            goto out;
        }
        if ((flags & O_DIRECTORY) && !s->inodes[ino].is_dir) {
            rc = -ENOTDIR;
            goto out;
        }
        if ((flags & O_TRUNC) && !s->inodes[ino].is_dir && s->inodes[ino].size > 0) {
            if ((rc = add_change(&s->inodes[ino], CHANGE_TRUNC, 0, NULL, 0)) < 0 ||
                (rc = resize(&s->inodes[ino], 0)) < 0)
                goto out;
        }
    } else if (is_root(s, path)) {
        /* Roots have no inode of their own: only directory fsyncs use them. */
        if (!(flags & O_DIRECTORY)) {
            rc = -EISDIR;
            goto out;
        }
        ino = -1;
    } else {
        char parent[PATH_MAX];
        parent_of(path, parent, sizeof parent);
        if (!(flags & O_CREAT) || !dir_in(s, &s->cur, parent)) {
            rc = -ENOENT;
            goto out;
        }
        if ((ino = new_inode(s, false)) < 0 || (rc = list_add(&s->cur, path, ino)) < 0 ||
            (rc = add_dirop(s, DIROP_CREATE, path, ino, NULL)) < 0) {
            rc = ino < 0 ? ino : rc;
            goto out;
        }
    }
    if ((rc = grow((void **)&s->open, &s->open_cap, s->nopen + 1, sizeof *s->open)) < 0)
        goto out;
    char *p = strdup(path);
    if (!p) {
        rc = PB_ENOMEM;
        goto out;
    }
    s->open[s->nopen++] = (open_file){s->next_fd, ino, p};
    rc = s->next_fd++;
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static ssize_t s_pwritev(const fileio *io, int fd, const struct iovec *iov, int cnt, off_t off)
{
    simio *s = S(io);
    pthread_mutex_lock(&s->lock);
    void (*hook)(void *) = s->write_hook;
    void *hook_ctx = s->write_hook_ctx;
    pthread_mutex_unlock(&s->lock);
    if (hook)
        hook(hook_ctx);
    pthread_mutex_lock(&s->lock);
    open_file *f = fd_find(s, fd);
    ssize_t rc = gate(s, SIMIO_PWRITEV, f ? f->path : NULL);
    if (rc < 0)
        goto out;
    if (!f || f->ino < 0 || s->inodes[f->ino].is_dir) {
        rc = -EBADF;
        goto out;
    }
    inode *n = &s->inodes[f->ino];
    size_t total = 0;
    for (int i = 0; i < cnt; i++)
        total += iov[i].iov_len;
    if (s->max_write && total > s->max_write)
        total = s->max_write;
    size_t end = (size_t)off + total;
    if (end > n->size && (rc = resize(n, end)) < 0)
        goto out;
    size_t done = 0;
    for (int i = 0; i < cnt && done < total; i++) {
        size_t k = iov[i].iov_len < total - done ? iov[i].iov_len : total - done;
        memcpy(n->data + off + done, iov[i].iov_base, k);
        done += k;
    }
    if ((rc = add_change(n, CHANGE_WRITE, (uint64_t)off, n->data + off, total)) < 0)
        goto out;
    rc = (ssize_t)total;
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static ssize_t s_pread(const fileio *io, int fd, void *buf, size_t len, off_t off)
{
    simio *s = S(io);
    pthread_mutex_lock(&s->lock);
    open_file *f = fd_find(s, fd);
    ssize_t rc = gate(s, SIMIO_PREAD, f ? f->path : NULL);
    if (rc < 0)
        goto out;
    if (!f || f->ino < 0 || s->inodes[f->ino].is_dir) {
        rc = -EBADF;
        goto out;
    }
    inode *n = &s->inodes[f->ino];
    size_t k = (size_t)off >= n->size ? 0 : n->size - (size_t)off;
    if (k > len)
        k = len;
    if (k)
        memcpy(buf, n->data + off, k);
    rc = (ssize_t)k;
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int do_sync(const fileio *io, int fd, unsigned kind)
{
    simio *s = S(io);
    pthread_mutex_lock(&s->lock);
    open_file *f = fd_find(s, fd);
    bool file = f && f->ino >= 0 && !s->inodes[f->ino].is_dir;
    void (*hook)(void *) = s->hook;
    void *hook_ctx = s->hook_ctx;
    pthread_mutex_unlock(&s->lock);
    if (file && hook)
        hook(hook_ctx);

    pthread_mutex_lock(&s->lock);
    f = fd_find(s, fd);
    int rc = gate(s, kind, f ? f->path : NULL);
    if (rc < 0 && !s->down && f && f->ino >= 0 && !s->inodes[f->ino].is_dir) {
        /* An injected failure: what was pending is lost for good (at the
         * next power loss), though reads still see it. */
        inode *n = &s->inodes[f->ino];
        n->nchanges = 0;
        n->arena_len = 0;
        n->gated = true;
    }
    if (rc < 0 || s->broken_fsync)
        goto out;
    if (!f) {
        rc = -EBADF;
        goto out;
    }
    if (f->ino >= 0 && !s->inodes[f->ino].is_dir) {
        inode *n = &s->inodes[f->ino];
        rc = n->gated ? replay_durable(n) : make_durable(n);
        goto out;
    }
    /* A directory: its unsynced entry changes become durable, in order. */
    size_t keep = 0;
    for (size_t i = 0; i < s->ndirops; i++) {
        dirop *d = &s->dirops[i];
        if (parent_is(d->path, f->path)) {
            if (rc == 0)
                rc = apply_dirop(&s->dur, d);
            free_dirop(d);
        } else {
            s->dirops[keep++] = *d;
        }
    }
    s->ndirops = keep;
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int s_fdatasync(const fileio *io, int fd)
{
    return do_sync(io, fd, SIMIO_FDATASYNC);
}

static int s_fsync(const fileio *io, int fd)
{
    return do_sync(io, fd, SIMIO_FSYNC);
}

static int s_ftruncate(const fileio *io, int fd, off_t len)
{
    simio *s = S(io);
    pthread_mutex_lock(&s->lock);
    open_file *f = fd_find(s, fd);
    int rc = gate(s, SIMIO_FTRUNCATE, f ? f->path : NULL);
    if (rc < 0)
        goto out;
    if (!f || f->ino < 0 || s->inodes[f->ino].is_dir || len < 0) {
        rc = -EINVAL;
        goto out;
    }
    inode *n = &s->inodes[f->ino];
    if ((rc = add_change(n, CHANGE_TRUNC, (uint64_t)len, NULL, 0)) == 0)
        rc = resize(n, (size_t)len);
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* ZERO_RANGE: the range reads as zeros, the size does not change (a range
 * past the end is refused: the callers zero what the file holds). Another
 * descriptor on the same file: -EBUSY, as the real one's lease says. At a
 * power loss an unsynced zeroing is kept, dropped (the old bytes are
 * back) or kept for a part of its range only (settle_file). */
static int s_zero_range(const fileio *io, int fd, off_t off, off_t len)
{
    simio *s = S(io);
    pthread_mutex_lock(&s->lock);
    open_file *f = fd_find(s, fd);
    int rc = gate(s, SIMIO_ZERO_RANGE, f ? f->path : NULL);
    if (rc < 0)
        goto out;
    if (!f || f->ino < 0 || s->inodes[f->ino].is_dir || off < 0 || len < 0) {
        rc = -EINVAL;
        goto out;
    }
    inode *n = &s->inodes[f->ino];
    if ((uint64_t)off + (uint64_t)len > n->size) {
        rc = -EINVAL;
        goto out;
    }
    for (size_t i = 0; i < s->nopen; i++) {
        if (s->open[i].ino == f->ino && s->open[i].fd != fd) {
            rc = -EBUSY;
            goto out;
        }
    }
    if ((rc = add_change(n, CHANGE_ZERO, (uint64_t)off, NULL, (uint64_t)len)) == 0)
        memset(n->data + off, 0, (size_t)len);
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int s_fsize(const fileio *io, int fd, off_t *size)
{
    simio *s = S(io);
    pthread_mutex_lock(&s->lock);
    open_file *f = fd_find(s, fd);
    int rc = gate(s, SIMIO_FSIZE, f ? f->path : NULL);
    if (rc == 0 && !f)
        rc = -EBADF;
    if (rc == 0)
        *size = f->ino >= 0 ? (off_t)s->inodes[f->ino].size : 0;
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* Not counted and never failing, so that nothing leaks after a crash. */
static int s_close(const fileio *io, int fd)
{
    simio *s = S(io);
    pthread_mutex_lock(&s->lock);
    int rc = -EBADF;
    for (size_t i = 0; i < s->nopen; i++) {
        if (s->open[i].fd == fd) {
            free(s->open[i].path);
            s->open[i] = s->open[--s->nopen];
            rc = 0;
            break;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int s_mkdir(const fileio *io, const char *path, int mode)
{
    simio *s = S(io);
    pthread_mutex_lock(&s->lock);
    char parent[PATH_MAX];
    int rc = gate(s, SIMIO_MKDIR, path);
    if (rc < 0)
        goto out;
    if (is_root(s, path) || find(&s->cur, path)) {
        rc = -EEXIST;
        goto out;
    }
    parent_of(path, parent, sizeof parent);
    if (!dir_in(s, &s->cur, parent)) {
        rc = -ENOENT;
        goto out;
    }
    int ino = new_inode(s, true);
    if (ino < 0) {
        rc = ino;
        goto out;
    }
    if ((rc = list_add(&s->cur, path, ino)) == 0)
        rc = add_dirop(s, DIROP_CREATE, path, ino, NULL);
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int s_unlink(const fileio *io, const char *path)
{
    simio *s = S(io);
    pthread_mutex_lock(&s->lock);
    int rc = gate(s, SIMIO_UNLINK, path);
    if (rc < 0)
        goto out;
    entry *e = find(&s->cur, path);
    if (!e) {
        rc = -ENOENT;
        goto out;
    }
    if (s->inodes[e->ino].is_dir) {
        rc = -EISDIR;
        goto out;
    }
    int ino = e->ino;
    list_del(&s->cur, path);
    rc = add_dirop(s, DIROP_UNLINK, path, ino, NULL);
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* An empty directory (a partition whose creation failed). */
static int s_rmdir(const fileio *io, const char *path)
{
    simio *s = S(io);
    pthread_mutex_lock(&s->lock);
    int rc = gate(s, SIMIO_RMDIR, path);
    if (rc < 0)
        goto out;
    entry *e = find(&s->cur, path);
    if (!e) {
        rc = -ENOENT;
        goto out;
    }
    if (!s->inodes[e->ino].is_dir) {
        rc = -ENOTDIR;
        goto out;
    }
    for (size_t i = 0; i < s->cur.n; i++) {
        if (parent_is(s->cur.v[i].path, path)) {
            rc = -ENOTEMPTY;
            goto out;
        }
    }
    int ino = e->ino;
    list_del(&s->cur, path);
    rc = add_dirop(s, DIROP_UNLINK, path, ino, NULL);
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* Regular files within one directory (all the daemon needs). */
static int s_rename(const fileio *io, const char *from, const char *to)
{
    simio *s = S(io);
    pthread_mutex_lock(&s->lock);
    char pf[PATH_MAX], pt[PATH_MAX];
    int rc = gate(s, SIMIO_RENAME, from);
    if (rc < 0)
        goto out;
    entry *e = find(&s->cur, from);
    if (!e) {
        rc = -ENOENT;
        goto out;
    }
    entry *t = find(&s->cur, to);
    if (s->inodes[e->ino].is_dir || (t && s->inodes[t->ino].is_dir)) {
        rc = -EISDIR;
        goto out;
    }
    parent_of(from, pf, sizeof pf);
    parent_of(to, pt, sizeof pt);
    if (strcmp(pf, pt) != 0) {
        rc = -EXDEV;
        goto out;
    }
    int ino = e->ino;
    list_del(&s->cur, from);
    list_del(&s->cur, to);
    if ((rc = list_add(&s->cur, to, ino)) == 0)
        rc = add_dirop(s, DIROP_RENAME, to, ino, from);
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int s_list_dir(const fileio *io, const char *path, fileio_dirent_fn fn, void *arg)
{
    simio *s = S(io);
    pthread_mutex_lock(&s->lock);
    int rc = gate(s, SIMIO_LIST_DIR, path);
    char **names = NULL;
    size_t n = 0;
    if (rc == 0 && !dir_in(s, &s->cur, path))
        rc = -ENOENT;
    if (rc == 0 && s->cur.n > 0 && !(names = calloc(s->cur.n, sizeof *names)))
        rc = PB_ENOMEM;
    for (size_t i = 0; rc == 0 && i < s->cur.n; i++) {
        if (!parent_is(s->cur.v[i].path, path))
            continue;
        if (!(names[n] = strdup(strrchr(s->cur.v[i].path, '/') + 1)))
            rc = PB_ENOMEM;
        else
            n++;
    }
    /* The callback runs unlocked: it may call back into the sim. */
    pthread_mutex_unlock(&s->lock);
    for (size_t i = 0; i < n; i++) {
        if (rc == 0) {
            int r = fn(arg, names[i]);
            if (r < 0)
                rc = r;
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

/* ---- control ------------------------------------------------------------- */

int simio_create(simio **out)
{
    simio *s = calloc(1, sizeof *s);
    if (!s)
        return PB_ENOMEM;
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        free(s);
        return PB_ENOMEM;
    }
    s->io = (fileio){.open = s_open,
                     .pwritev = s_pwritev,
                     .pread = s_pread,
                     .fdatasync = s_fdatasync,
                     .fsync = s_fsync,
                     .ftruncate = s_ftruncate,
                     .fsize = s_fsize,
                     .close = s_close,
                     .mkdir = s_mkdir,
                     .rmdir = s_rmdir,
                     .unlink = s_unlink,
                     .rename = s_rename,
                     .list_dir = s_list_dir,
                     .zero_range = s_zero_range,
                     .ctx = s};
    s->next_fd = 100;
    *out = s;
    return 0;
}

void simio_destroy(simio *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->ninodes; i++)
        free_inode(&s->inodes[i]);
    free(s->inodes);
    list_clear(&s->cur);
    list_clear(&s->dur);
    free(s->cur.v);
    free(s->dur.v);
    for (size_t i = 0; i < s->ndirops; i++)
        free_dirop(&s->dirops[i]);
    free(s->dirops);
    for (size_t i = 0; i < s->nroots; i++)
        free(s->roots[i]);
    free(s->roots);
    drop_fds(s);
    free(s->open);
    free(s->fault_path);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

const fileio *simio_io(simio *s)
{
    return &s->io;
}

static int add_root_locked(simio *s, const char *path)
{
    if (is_root(s, path))
        return 0;
    char **v = realloc(s->roots, (s->nroots + 1) * sizeof *v);
    if (!v)
        return PB_ENOMEM;
    s->roots = v;
    if (!(v[s->nroots] = strdup(path)))
        return PB_ENOMEM;
    s->nroots++;
    return 0;
}

int simio_add_root(simio *s, const char *path)
{
    pthread_mutex_lock(&s->lock);
    int rc = add_root_locked(s, path);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int read_real(const char *path, uint8_t **data, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    int rc = 0;
    *data = NULL;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto out;
    }
    if (!(*data = malloc((size_t)st.st_size + 1))) {
        rc = PB_ENOMEM;
        goto out;
    }
    *len = 0;
    while (*len < (size_t)st.st_size) {
        ssize_t n = pread(fd, *data + *len, (size_t)st.st_size - *len, (off_t)*len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : -EIO;
            goto out;
        }
        *len += (size_t)n;
    }
out:
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc < 0) {
        free(*data);
        *data = NULL;
    }
    return rc;
}

int simio_import(simio *s, const char *real_dir, const char *sim_dir)
{
    DIR *d = opendir(real_dir);
    if (!d)
        return -errno;
    pthread_mutex_lock(&s->lock);
    int rc = add_root_locked(s, sim_dir);
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        char rp[PATH_MAX], sp[PATH_MAX];
        struct stat st;
        snprintf(rp, sizeof rp, "%s/%s", real_dir, de->d_name);
        if (snprintf(sp, sizeof sp, "%s/%s", sim_dir, de->d_name) >= (int)sizeof sp) {
            rc = -ENAMETOOLONG;
            break;
        }
        if (stat(rp, &st) < 0 || !S_ISREG(st.st_mode))
            continue;
        uint8_t *data = NULL;
        size_t len = 0;
        if ((rc = read_real(rp, &data, &len)) < 0)
            break;
        int ino = new_inode(s, false);
        if (ino < 0) {
            free(data);
            rc = ino;
            break;
        }
        inode *n = &s->inodes[ino];
        n->data = data;
        n->size = n->cap = len;
        if ((rc = make_durable(n)) == 0 && (rc = list_add(&s->cur, sp, ino)) == 0)
            rc = list_add(&s->dur, sp, ino);
    }
    pthread_mutex_unlock(&s->lock);
    if (closedir(d) < 0 && rc == 0)
        rc = -errno;
    return rc;
}

static int write_real(const char *path, const uint8_t *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    int rc = 0;
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, data + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : -EIO;
            break;
        }
        done += (size_t)n;
    }
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    return rc;
}

int simio_export(simio *s, const char *sim_dir, const char *real_dir)
{
    if (mkdir(real_dir, 0755) < 0 && errno != EEXIST)
        return -errno;
    pthread_mutex_lock(&s->lock);
    int rc = dir_in(s, &s->cur, sim_dir) ? 0 : PB_ENOTFOUND;
    for (size_t i = 0; rc == 0 && i < s->cur.n; i++) {
        const entry *e = &s->cur.v[i];
        if (!parent_is(e->path, sim_dir) || s->inodes[e->ino].is_dir)
            continue;
        char rp[PATH_MAX];
        if (snprintf(rp, sizeof rp, "%s%s", real_dir, strrchr(e->path, '/')) >= (int)sizeof rp) {
            rc = -ENAMETOOLONG;
            break;
        }
        rc = write_real(rp, s->inodes[e->ino].data, s->inodes[e->ino].size);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

void simio_crash_at(simio *s, uint64_t op)
{
    pthread_mutex_lock(&s->lock);
    s->crash_at = op;
    if (op != 0 && op <= s->ops)
        s->down = true;
    pthread_mutex_unlock(&s->lock);
}

uint64_t simio_ops(simio *s)
{
    pthread_mutex_lock(&s->lock);
    uint64_t n = s->ops;
    pthread_mutex_unlock(&s->lock);
    return n;
}

bool simio_is_down(simio *s)
{
    pthread_mutex_lock(&s->lock);
    bool d = s->down;
    pthread_mutex_unlock(&s->lock);
    return d;
}

void simio_log_ops(simio *s, unsigned ops_mask, uint64_t *out, size_t cap)
{
    pthread_mutex_lock(&s->lock);
    s->oplog_mask = ops_mask;
    s->oplog = out;
    s->oplog_cap = cap;
    s->oplog_n = 0;
    pthread_mutex_unlock(&s->lock);
}

size_t simio_logged_ops(simio *s)
{
    pthread_mutex_lock(&s->lock);
    size_t n = s->oplog_n;
    pthread_mutex_unlock(&s->lock);
    return n;
}

void simio_restart(simio *s)
{
    pthread_mutex_lock(&s->lock);
    drop_fds(s);
    s->ops = 0;
    s->crash_at = 0;
    s->down = false;
    pthread_mutex_unlock(&s->lock);
}

/* Builds one file's content after the power loss: the durable bytes, then
 * each unsynced change in order, kept, dropped or torn by the dice. */
static int settle_file(inode *n, uint64_t *rng, simio_stats *st)
{
    uint8_t *out = malloc(n->dsize ? n->dsize : 1);
    if (!out)
        return PB_ENOMEM;
    size_t size = n->dsize, cap = n->dsize ? n->dsize : 1;
    if (n->dsize)
        memcpy(out, n->durable, n->dsize);
    for (size_t i = 0; i < n->nchanges; i++) {
        const change *c = &n->changes[i];
        uint64_t r = mix(rng);
        if (c->kind == CHANGE_TRUNC) {
            if (r % 2 == 0) {
                st->truncs_dropped++;
                continue;
            }
            st->truncs_kept++;
            if (c->off < size) {
                size = c->off;
                continue;
            }
            if (grow((void **)&out, &cap, c->off, 1) < 0)
                goto nomem;
            memset(out + size, 0, c->off - size);
            size = c->off;
            continue;
        }
        if (c->kind == CHANGE_ZERO) {
            /* Kept, dropped (the old bytes come back), or kept for a
             * random part of the range only (extents converted in no
             * particular order): one in three each. */
            uint64_t from = c->off, to = c->off + c->len;
            if (r % 3 == 0) {
                st->zeros_dropped++;
                continue;
            }
            if (r % 3 == 2 && c->len > 0) {
                uint64_t a = mix(rng) % c->len, b = mix(rng) % c->len;
                from = c->off + (a < b ? a : b);
                to = c->off + (a < b ? b : a) + 1;
                st->zeros_partial++;
            } else {
                st->zeros_kept++;
            }
            if (to > size)
                to = size; /* a later truncation cut it */
            if (from < to)
                memset(out + from, 0, to - from);
            continue;
        }
        /* A write: 0-29 dropped, 30-59 kept, 60-74 a prefix only, 75-89
         * a prefix then zeros, 90-99 a prefix then garbage. */
        uint64_t dice = r % 100;
        uint64_t len = c->len, keep = len;
        if (dice < 30) {
            st->writes_dropped++;
            continue;
        }
        if (dice >= 60 && len > 0)
            keep = mix(rng) % len; /* 0 .. len-1 bytes of the real data */
        uint64_t end = c->off + (dice >= 75 ? len : keep);
        if (dice < 60)
            st->writes_kept++;
        else if (dice < 75)
            st->writes_prefix++;
        else if (dice < 90)
            st->writes_zero_tail++;
        else
            st->writes_garbage_tail++;
        if (end > size) {
            if (grow((void **)&out, &cap, end, 1) < 0)
                goto nomem;
            memset(out + size, 0, end - size);
            size = end;
        }
        memcpy(out + c->off, n->arena + c->data_at, keep);
        for (uint64_t k = keep; k < end - c->off; k++)
            out[c->off + k] = dice >= 90 ? (uint8_t)mix(rng) : 0;
    }
    free(n->data);
    n->data = out;
    n->size = size;
    n->cap = cap;
    n->gated = false; /* what the failed sync left in data is gone now */
    return make_durable(n);
nomem:
    free(out);
    return PB_ENOMEM;
}

int simio_power_loss(simio *s, uint64_t seed, simio_stats *stats)
{
    simio_stats local = {0};
    simio_stats *st = stats ? stats : &local;
    memset(st, 0, sizeof *st);
    uint64_t rng = seed;
    pthread_mutex_lock(&s->lock);
    s->down = true;
    drop_fds(s);
    int rc = 0;
    /* Directories: each keeps a prefix of its unsynced entry changes. */
    bool *seen = calloc(s->ndirops ? s->ndirops : 1, sizeof *seen);
    bool *reach = NULL;
    if (!seen) {
        rc = PB_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < s->ndirops; i++) {
        if (seen[i])
            continue;
        char parent[PATH_MAX];
        parent_of(s->dirops[i].path, parent, sizeof parent);
        size_t total = 0;
        for (size_t j = i; j < s->ndirops; j++)
            total += !seen[j] && parent_is(s->dirops[j].path, parent);
        size_t keep = (size_t)(mix(&rng) % (total + 1)), k = 0;
        for (size_t j = i; j < s->ndirops; j++) {
            if (seen[j] || !parent_is(s->dirops[j].path, parent))
                continue;
            seen[j] = true;
            if (k++ < keep) {
                st->dir_ops_kept++;
                if ((rc = apply_dirop(&s->dur, &s->dirops[j])) < 0)
                    goto out;
            } else {
                st->dir_ops_forgotten++;
            }
        }
    }
    for (size_t i = 0; i < s->ndirops; i++)
        free_dirop(&s->dirops[i]);
    s->ndirops = 0;
    free(seen);
    seen = NULL;
    /* Entries whose directory is gone went with it. */
    for (bool changed = true; changed;) {
        changed = false;
        for (size_t i = 0; i < s->dur.n; i++) {
            char parent[PATH_MAX];
            parent_of(s->dur.v[i].path, parent, sizeof parent);
            if (!dir_in(s, &s->dur, parent)) {
                list_del(&s->dur, s->dur.v[i].path);
                changed = true;
                break;
            }
        }
    }
    /* Files: settle the reachable ones, free the rest. */
    if (!(reach = calloc(s->ninodes ? s->ninodes : 1, sizeof *reach))) {
        rc = PB_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < s->dur.n; i++)
        reach[s->dur.v[i].ino] = true;
    for (size_t i = 0; i < s->ninodes; i++) {
        inode *n = &s->inodes[i];
        if (!n->used)
            continue;
        if (!reach[i])
            free_inode(n);
        else if (!n->is_dir && (rc = settle_file(n, &rng, st)) < 0)
            goto out;
    }
    list_clear(&s->cur);
    for (size_t i = 0; i < s->dur.n; i++)
        if ((rc = list_add(&s->cur, s->dur.v[i].path, s->dur.v[i].ino)) < 0)
            goto out;
    s->ops = 0;
    s->crash_at = 0;
    s->down = false;
out:
    free(seen);
    free(reach);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int simio_set_fault(simio *s, unsigned ops_mask, uint64_t skip, int err, const char *path_contains)
{
    char *copy = NULL;
    if (path_contains && !(copy = strdup(path_contains)))
        return PB_ENOMEM;
    pthread_mutex_lock(&s->lock);
    free(s->fault_path);
    s->fault_path = copy;
    s->fault_mask = ops_mask;
    s->fault_skip = skip;
    s->fault_seen = 0;
    s->fault_err = err;
    pthread_mutex_unlock(&s->lock);
    return 0;
}

void simio_set_max_write(simio *s, size_t n)
{
    pthread_mutex_lock(&s->lock);
    s->max_write = n;
    pthread_mutex_unlock(&s->lock);
}

void simio_set_broken_fsync(simio *s, bool broken)
{
    pthread_mutex_lock(&s->lock);
    s->broken_fsync = broken;
    pthread_mutex_unlock(&s->lock);
}

void simio_set_sync_hook(simio *s, void (*fn)(void *ctx), void *ctx)
{
    pthread_mutex_lock(&s->lock);
    s->hook = fn;
    s->hook_ctx = ctx;
    pthread_mutex_unlock(&s->lock);
}

void simio_set_write_hook(simio *s, void (*fn)(void *ctx), void *ctx)
{
    pthread_mutex_lock(&s->lock);
    s->write_hook = fn;
    s->write_hook_ctx = ctx;
    pthread_mutex_unlock(&s->lock);
}
