/*
 * replay - runs a fuzz target over its saved corpus without libFuzzer, so
 * `make check` (gcc, plain and ASan/UBSan) replays every input on each run.
 *
 * Built as $(BUILD)/tests/test_fuzz_<name> from fuzz_<name>.c + this file.
 * With no arguments it reads tests/fuzz/corpus/<name>/ (relative to the
 * repository root, where `make check` runs; PB_FUZZ_CORPUS overrides the
 * directory); otherwise every argument is a file or a directory of files, as
 * with a libFuzzer binary (handy for replaying a crash-* file under gdb).
 * Fails if it finds no input at all, so a missing corpus is never a pass.
 *
 * Threads: one.
 */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REPLAY_MAX_INPUT (16u << 20) /* corpora hold small files; refuse anything odd */

/* Reads one file into an exact-size buffer (so a read past the input's end
 * is an ASan error, as under libFuzzer) and runs the target on it. */
static int run_file(const char *path)
{
    int rc = -1;
    uint8_t *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        goto out;
    }
    if (st.st_size > (off_t)REPLAY_MAX_INPUT) {
        fprintf(stderr, "replay: %s: %lld bytes, over the %u-byte limit for corpus files\n", path,
                (long long)st.st_size, REPLAY_MAX_INPUT);
        goto out;
    }
    size_t size = (size_t)st.st_size;
    buf = malloc(size ? size : 1);
    if (!buf) {
        fprintf(stderr, "replay: %s: out of memory\n", path);
        goto out;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            fprintf(stderr, "replay: %s: %s at byte %zu\n", path,
                    r < 0 ? strerror(errno) : "file shrank while read", got);
            goto out;
        }
        got += (size_t)r;
    }
    /* An exact-size copy: the target must not read past `size`. */
    (void)LLVMFuzzerTestOneInput(buf, size);
    rc = 0;
out:
    free(buf);
    if (close(fd) < 0 && rc == 0) {
        fprintf(stderr, "replay: %s: close: %s\n", path, strerror(errno));
        rc = -1;
    }
    return rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every regular file of dir in name order; counts them in *count. */
static int run_dir(const char *dir, size_t *count)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "replay: corpus directory %s: %s\n", dir, strerror(errno));
        return -1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (n == cap) {
            size_t ncap = cap ? 2 * cap : 64;
            char **nn = realloc(names, ncap * sizeof *nn);
            if (!nn) {
                rc = -1;
                break;
            }
            names = nn;
            cap = ncap;
        }
        if ((names[n] = strdup(de->d_name)) == NULL) {
            rc = -1;
            break;
        }
        n++;
    }
    (void)closedir(d); /* read-only */
    if (rc < 0)
        fprintf(stderr, "replay: %s: out of memory listing it\n", dir);
    if (n > 1)
        qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n && rc == 0; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
            continue;
        if (run_file(path) < 0)
            rc = -1;
        else
            (*count)++;
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

static int run_path(const char *path, size_t *count)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (S_ISDIR(st.st_mode))
        return run_dir(path, count);
    if (run_file(path) < 0)
        return -1;
    (*count)++;
    return 0;
}

int main(int argc, char **argv)
{
    size_t count = 0;
    int rc = 0;
    if (argc > 1) {
        for (int i = 1; i < argc && rc == 0; i++)
            rc = run_path(argv[i], &count);
    } else {
        const char *base = strrchr(argv[0], '/');
        base = base ? base + 1 : argv[0];
        const char *prefix = "test_fuzz_";
        if (strncmp(base, prefix, strlen(prefix)) != 0 || base[strlen(prefix)] == '\0') {
            fprintf(stderr,
                    "replay: cannot tell the target from the program name %s "
                    "(expected test_fuzz_<name>); name a corpus directory\n",
                    argv[0]);
            return 2;
        }
        char dir[4096];
        const char *env = getenv("PB_FUZZ_CORPUS");
        if (env && *env)
            snprintf(dir, sizeof dir, "%s", env);
        else
            snprintf(dir, sizeof dir, "tests/fuzz/corpus/%s", base + strlen(prefix));
        rc = run_dir(dir, &count);
    }
    if (rc == 0 && count == 0) {
        fprintf(stderr, "replay: no corpus files found: nothing was tested\n");
        return 1;
    }
    if (rc < 0)
        return 1;
    printf("replay: %zu inputs, no failure\n", count);
    return 0;
}
