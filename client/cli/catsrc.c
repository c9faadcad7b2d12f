/*
 * catsrc - turning `protobus cat` PATHs into merged, filtered sources (see
 * catsrc.h).
 *
 * Threads: the CLI's main thread.
 */
#include "catsrc.h"

#include "cli.h"
#include "grow.h"
#include "partname.h"
#include "pb_errors.h"
#include "reader.h"
#include "record.h"
#include "segment.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int raw_next(cat_source *src, pb_record *rec)
{
    switch (src->kind) {
    case CAT_PARTITION:
        return pb_reader_next(src->reader, rec);
    case CAT_SEGMENT:
        return segfile_next(src->seg, rec);
    case CAT_LEGACY:
        return pb_legacy_next(src->legacy, rec);
    }
    return PB_EINVAL;
}

/* The merge's next(): the source's records within the filter's range. */
static int source_next(void *ctx, pb_record *rec)
{
    cat_source *src = ctx;
    const cat_filter *f = src->filter;
    if (src->done)
        return PB_EEOF;
    for (;;) {
        int rc = raw_next(src, rec);
        if (rc != 0)
            return rc;
        if (f->has_to_time && rec->time_ns > f->to_time_ns) {
            src->done = true;
            (*src->ndone)++;
            return PB_EEOF;
        }
        /* The partition reader was positioned by seeking; these checks
         * matter for files read on their own, and are free otherwise. */
        if (f->has_from_offset && rec->offset < f->from_offset)
            continue;
        if (f->has_from_time && rec->time_ns < f->from_time_ns)
            continue;
        return 0;
    }
}

const struct pb_reader_problem *cat_source_problem(const cat_source *src)
{
    switch (src->kind) {
    case CAT_PARTITION:
        return pb_reader_problem(src->reader);
    case CAT_SEGMENT:
        return segfile_problem(src->seg);
    case CAT_LEGACY:
        return pb_legacy_problem(src->legacy);
    }
    return NULL;
}

static void source_free(cat_source *src)
{
    if (!src)
        return;
    pb_reader_close(src->reader);
    segfile_close(src->seg);
    pb_legacy_close(src->legacy);
    free(src->path);
    free(src->name);
    free(src);
}

int cat_set_init(cat_set *s, const cat_filter *filter)
{
    memset(s, 0, sizeof *s);
    s->filter = filter;
    return pb_merge_new(&s->merge);
}

void cat_set_free(cat_set *s)
{
    pb_merge_free(s->merge);
    for (size_t i = 0; i < s->n; i++)
        source_free(s->v[i]);
    free(s->v);
    for (size_t i = 0; i < s->ndata; i++)
        free(s->data_dirs[i]);
    free(s->data_dirs);
    for (size_t i = 0; i < s->nunlisted; i++)
        free(s->unlisted[i]);
    free(s->unlisted);
    memset(s, 0, sizeof *s);
}

/* The last component of path, ignoring trailing slashes; "." and ".." are
 * resolved so a partition read as "." still gets its real name. */
static char *base_name(const char *path)
{
    char real[PATH_MAX];
    const char *p = path;
    size_t len = strlen(p);
    while (len > 1 && p[len - 1] == '/')
        len--;
    size_t start = len;
    while (start > 0 && p[start - 1] != '/')
        start--;
    if ((len - start == 1 && p[start] == '.') ||
        (len - start == 2 && p[start] == '.' && p[start + 1] == '.')) {
        if (realpath(path, real)) {
            p = real;
            len = strlen(p);
            start = len;
            while (start > 0 && p[start - 1] != '/')
                start--;
        }
    }
    return strndup(p + start, len - start);
}

/* The name of the directory holding file `path`. */
static char *dir_name_of(const char *path)
{
    char real[PATH_MAX];
    if (!realpath(path, real))
        return base_name(path);
    char *slash = strrchr(real, '/');
    if (slash && slash != real)
        *slash = '\0';
    return base_name(real);
}

static int add_source(cat_set *s, cat_kind kind, const char *path, char *name)
{
    int rc = PB_ENOMEM;
    cat_source *src = calloc(1, sizeof *src);
    if (!src || !name)
        goto fail;
    src->kind = kind;
    src->name = name;
    name = NULL;
    src->filter = s->filter;
    src->ndone = &s->ndone;
    if (!(src->path = strdup(path)))
        goto fail;
    const cat_filter *f = s->filter;
    switch (kind) {
    case CAT_PARTITION:
        if ((rc = pb_reader_open(&src->reader, path)) < 0)
            goto fail;
        if (f->has_from_offset)
            rc = pb_reader_seek_offset(src->reader, f->from_offset);
        else if (f->has_from_time)
            rc = pb_reader_seek_time(src->reader, f->from_time_ns);
        if (rc < 0)
            goto fail;
        break;
    case CAT_SEGMENT:
        if ((rc = segfile_open(&src->seg, path, f->follow)) < 0)
            goto fail;
        break;
    case CAT_LEGACY:
        if ((rc = pb_legacy_open(&src->legacy, path, f->follow)) < 0)
            goto fail;
        break;
    }
    if ((rc = grow_reserve(&s->v, &s->cap, s->n + 1, sizeof *s->v)) < 0)
        goto fail;
    if ((rc = pb_merge_add(s->merge, src->name, source_next, src, NULL)) < 0)
        goto fail;
    s->v[s->n++] = src;
    return 0;
fail:
    cli_error("cat", "%s: %s", path, rc == PB_ENOMEM ? "out of memory" : pb_strerror(rc));
    free(name);
    source_free(src);
    return rc;
}

/* Whether dir holds at least one segment file (a partition directory). */
static int is_partition_dir(const char *dir, bool *yes)
{
    *yes = false;
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    struct dirent *de;
    uint64_t base;
    while ((de = readdir(d)) != NULL) {
        if (segment_parse_name(de->d_name, ".log", &base)) {
            *yes = true;
            break;
        }
    }
    (void)closedir(d); /* read-only */
    return 0;
}

static bool has_source(const cat_set *s, const char *path)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i]->path, path) == 0)
            return true;
    return false;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* A subdirectory of a data directory that holds segment files but whose
 * name is not a partition name: the daemon does not serve it and a data
 * directory's reading does not include it, which is said once (exit status
 * 1), never skipped silently. */
static int report_unlisted(cat_set *s, const char *path)
{
    for (size_t i = 0; i < s->nunlisted; i++)
        if (strcmp(s->unlisted[i], path) == 0)
            return 0;
    if (grow_resize(&s->unlisted, s->nunlisted + 1, sizeof *s->unlisted) < 0 ||
        !(s->unlisted[s->nunlisted] = strdup(path))) {
        cli_error("cat", "out of memory");
        return PB_ENOMEM;
    }
    s->nunlisted++;
    cli_error("cat",
              "%s: holds segment files but is not a partition directory (partition names are "
              "%s): not read; give its path on its own to read it",
              path, PARTNAME_RULE);
    return 0;
}

/* Adds the partitions (subdirectories) and original-layout files (*.pb) of
 * a data directory that are not sources yet, and reports subdirectories
 * that hold segments but are not partitions. Returns the number added. */
static int scan_data_dir(cat_set *s, const char *dir)
{
    char **names, **skipped;
    size_t n, nskipped;
    int rc = partition_dirs_scan(dir, &names, &n, &skipped, &nskipped);
    if (rc < 0) {
        cli_error("cat", "%s: %s", dir, pb_strerror(rc));
        return rc;
    }
    int added = 0;
    char path[PATH_MAX];
    for (size_t i = 0; i < nskipped && rc >= 0; i++) {
        if (snprintf(path, sizeof path, "%s/%s", dir, skipped[i]) >= (int)sizeof path)
            continue;
        rc = report_unlisted(s, path);
    }
    pb_partition_list_free(skipped, nskipped);
    for (size_t i = 0; i < n && rc >= 0; i++) {
        if (snprintf(path, sizeof path, "%s/%s", dir, names[i]) >= (int)sizeof path)
            continue;
        if (has_source(s, path))
            continue;
        if ((rc = add_source(s, CAT_PARTITION, path, strdup(names[i]))) == 0)
            added++;
    }
    pb_partition_list_free(names, n);
    if (rc < 0)
        return rc;
    /* Original-layout files sit directly in the store root. Sorted by name
     * so the merge's tie order is the same on every run. */
    struct dirent **ents;
    int ne = scandir(dir, &ents, NULL, alphasort);
    if (ne < 0) {
        rc = -errno;
        cli_error("cat", "%s: %s", dir, pb_strerror(rc));
        return rc;
    }
    for (int i = 0; i < ne; i++) {
        const char *nm = ents[i]->d_name;
        struct stat st;
        if (rc >= 0 && ends_with(nm, ".pb") &&
            snprintf(path, sizeof path, "%s/%s", dir, nm) < (int)sizeof path &&
            stat(path, &st) == 0 && S_ISREG(st.st_mode) && !has_source(s, path)) {
            if ((rc = add_source(s, CAT_LEGACY, path, strdup(nm))) == 0)
                added++;
        }
        free(ents[i]);
    }
    free(ents);
    return rc < 0 ? rc : added;
}

int cat_set_add_path(cat_set *s, const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        int rc = -errno;
        cli_error("cat", "%s: %s", path, strerror(errno));
        return rc;
    }
    if (S_ISDIR(st.st_mode)) {
        bool partition;
        int rc = is_partition_dir(path, &partition);
        if (rc < 0) {
            cli_error("cat", "%s: %s", path, pb_strerror(rc));
            return rc;
        }
        if (partition)
            return add_source(s, CAT_PARTITION, path, base_name(path));
        if (grow_resize(&s->data_dirs, s->ndata + 1, sizeof *s->data_dirs) < 0 ||
            !(s->data_dirs[s->ndata] = strdup(path))) {
            cli_error("cat", "out of memory");
            return PB_ENOMEM;
        }
        s->ndata++;
        rc = scan_data_dir(s, path);
        return rc < 0 ? rc : 0;
    }
    pb_file_kind kind;
    int rc = pb_file_probe(path, &kind);
    if (rc < 0) {
        cli_error("cat", "%s: %s", path, pb_strerror(rc));
        return rc;
    }
    if (kind == PB_FILE_INDEX) {
        cli_error("cat",
                  "%s: this is an index file; give the .log segment beside it, or its "
                  "directory",
                  path);
        return PB_EFORMAT;
    }
    if (kind == PB_FILE_SEGMENT)
        return add_source(s, CAT_SEGMENT, path, dir_name_of(path));
    return add_source(s, CAT_LEGACY, path, base_name(path));
}

int cat_set_rescan(cat_set *s)
{
    int total = 0;
    for (size_t i = 0; i < s->ndata; i++) {
        int rc = scan_data_dir(s, s->data_dirs[i]);
        if (rc < 0)
            return rc;
        total += rc;
    }
    return total;
}

size_t cat_source_check_headers(const cat_source *src,
                                void (*report)(void *ctx, const char *file, const char *why),
                                void *ctx)
{
    if (src->kind != CAT_PARTITION)
        return 0; /* segfile checks its own header; legacy files have none */
    DIR *d = opendir(src->path);
    if (!d)
        return 0; /* the reader reports an unreadable directory */
    size_t bad = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        uint64_t base, hbase;
        if (!segment_parse_name(de->d_name, ".log", &base))
            continue;
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", src->path, de->d_name) >= (int)sizeof path)
            continue;
        uint8_t hdr[PB_FILE_HEADER_SIZE];
        const char *why = NULL;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd < 0 ? -errno : segment_pread_posix(NULL, fd, hdr, sizeof hdr, 0);
        if (fd >= 0)
            (void)close(fd); /* read-only */
        if (n == -ENOENT)
            continue; /* removed by retention since it was listed: not damage (the reader
                         notes a removal where it passes one) */
        if (n < 0)
            why = strerror((int)-n);
        else if (n < (ssize_t)sizeof hdr)
            why = "segment header cut short";
        else if (file_header_decode(hdr, PB_LOG_MAGIC, &hbase, NULL) < 0)
            why = "segment header damaged (magic, version, flags or CRC)";
        else if (hbase != base)
            why = "segment header's base offset differs from the file name";
        if (why) {
            report(ctx, path, why);
            bad++;
        }
    }
    (void)closedir(d); /* read-only */
    return bad;
}
