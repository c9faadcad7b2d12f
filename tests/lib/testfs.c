/* testfs - file helpers shared by the tests; see testfs.h. */
#include "testfs.h"

#include "segment.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int testfs_make_root(char *root, size_t rootsz, const char *prefix, char *part, size_t partsz)
{
    snprintf(root, rootsz, "/tmp/%s.XXXXXX", prefix);
    if (!mkdtemp(root))
        return -1;
    snprintf(part, partsz, "%s/p", root);
    return 0;
}

int testfs_rmrf(const char *path)
{
    return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

uint8_t *testfs_read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    uint8_t *buf = malloc((size_t)st.st_size + 1);
    assert_non_null(buf);
    assert_int_equal(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
    assert_int_equal(close(fd), 0);
    *len = (size_t)st.st_size;
    return buf;
}

void testfs_write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, data, len, 0), (ssize_t)len);
    assert_int_equal(close(fd), 0);
}

size_t testfs_list_bases(const char *dir, uint64_t *bases, size_t cap)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        uint64_t b;
        if (segment_parse_name(de->d_name, ".log", &b)) {
            assert_true(n < cap);
            size_t i = n++;
            while (i > 0 && bases[i - 1] > b) { /* insertion sort: few files */
                bases[i] = bases[i - 1];
                i--;
            }
            bases[i] = b;
        }
    }
    closedir(d);
    return n;
}
