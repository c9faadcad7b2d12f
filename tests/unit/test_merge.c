/* Tests for proto/merge: three real partition readers with interleaved
 * receive times merge into time order; equal times come in order of the
 * sources' names whatever order they were added in, each source keeping
 * its own order; damage and failures of one source are passed on without
 * stopping the others; idle sources are asked again only when nothing is
 * pending; a source added late joins the merge. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testfs.h"
#include "merge.h"
#include "pb_errors.h"
#include "reader.h"
#include "record.h"
#include "segment.h"

static char root[64];

static int setup(void **state)
{
    snprintf(root, sizeof root, "/tmp/pb_test_merge.XXXXXX");
    return mkdtemp(root) ? 0 : -1;
}

static int teardown(void **state)
{
    return testfs_rmrf(root);
}

/* --- scripted sources ---------------------------------------------------- */

/* A source that yields scripted results: steps[i] >= 0 is a record with
 * that time, -1 is PB_ECORRUPT, -2 is PB_EEOF (then the script goes on),
 * -3 is -EIO. After the script: PB_EEOF. */
typedef struct script {
    const int64_t *steps;
    size_t n, at;
    uint64_t offset;
    char event[24];
    int calls;
} script;

static int script_next(void *ctx, pb_record *rec)
{
    script *s = ctx;
    s->calls++;
    if (s->at >= s->n)
        return PB_EEOF;
    int64_t t = s->steps[s->at++];
    if (t == -1)
        return PB_ECORRUPT;
    if (t == -2)
        return PB_EEOF;
    if (t == -3)
        return -EIO;
    snprintf(s->event, sizeof s->event, "%llu", (unsigned long long)s->offset);
    rec->offset = s->offset++;
    rec->time_ns = t;
    rec->event = (const uint8_t *)s->event;
    rec->event_len = (uint32_t)strlen(s->event);
    return 0;
}

/* --- real partitions ----------------------------------------------------- */

/* Writes <root>/<name>/00000000000000000000.log with one record per time;
 * record i's event is "<name>#<i>". */
static void write_partition(const char *name, const int64_t *times, size_t n)
{
    char dir[PATH_MAX], file[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", root, name);
    assert_int_equal(mkdir(dir, 0755), 0);
    assert_int_equal(segment_path(file, sizeof file, dir, 0, ".log"), 0);
    FILE *f = fopen(file, "wb");
    assert_non_null(f);
    uint8_t hdr[PB_FILE_HEADER_SIZE];
    file_header_encode(hdr, PB_LOG_MAGIC, 0, 1);
    assert_int_equal(fwrite(hdr, 1, sizeof hdr, f), sizeof hdr);
    for (size_t i = 0; i < n; i++) {
        char ev[32];
        int len = snprintf(ev, sizeof ev, "%s#%zu", name, i);
        uint8_t rh[PB_RECORD_HEADER_SIZE];
        assert_int_equal(record_encode_header(rh, i, times[i], ev, (size_t)len, NULL, 0), 0);
        assert_int_equal(fwrite(rh, 1, sizeof rh, f), sizeof rh);
        assert_int_equal(fwrite(ev, 1, (size_t)len, f), (size_t)len);
    }
    assert_int_equal(fclose(f), 0);
}

static pb_reader *open_partition(const char *name)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", root, name);
    pb_reader *r;
    assert_int_equal(pb_reader_open(&r, dir), 0);
    return r;
}

static void expect(pb_merge *m, const char *event, int64_t time_ns)
{
    pb_merge_item it;
    assert_int_equal(pb_merge_next(m, &it), 0);
    assert_int_equal(it.rec.time_ns, time_ns);
    assert_int_equal(it.rec.event_len, strlen(event));
    assert_memory_equal(it.rec.event, event, it.rec.event_len);
}

static void test_three_readers_merge_in_time_order(void **state)
{
    const int64_t a[] = {10, 40, 70, 100, 130};
    const int64_t b[] = {20, 50, 60, 110};
    const int64_t c[] = {5, 30, 80, 90, 120, 140};
    write_partition("alpha", a, 5);
    write_partition("beta", b, 4);
    write_partition("gamma", c, 6);
    pb_reader *ra = open_partition("alpha"), *rb = open_partition("beta"),
              *rc = open_partition("gamma");
    pb_merge *m;
    assert_int_equal(pb_merge_new(&m), 0);
    assert_int_equal(pb_merge_add_reader(m, "alpha", ra, NULL), 0);
    assert_int_equal(pb_merge_add_reader(m, "beta", rb, NULL), 0);
    assert_int_equal(pb_merge_add_reader(m, "gamma", rc, NULL), 0);
    assert_int_equal(pb_merge_count(m), 3);

    const int64_t want[] = {5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140};
    size_t seen[3] = {0};
    pb_merge_item it;
    size_t n = 0;
    while (pb_merge_next(m, &it) == 0) {
        assert_true(n < 15);
        assert_int_equal(it.rec.time_ns, want[n]);
        /* Each partition's own records come in offset order. */
        assert_int_equal(it.rec.offset, seen[it.source]++);
        char ev[32];
        snprintf(ev, sizeof ev, "%s#%llu", it.name, (unsigned long long)it.rec.offset);
        assert_int_equal(it.rec.event_len, strlen(ev));
        assert_memory_equal(it.rec.event, ev, it.rec.event_len);
        n++;
    }
    assert_int_equal(n, 15);
    assert_int_equal(seen[0], 5);
    assert_int_equal(seen[1], 4);
    assert_int_equal(seen[2], 6);
    assert_int_equal(pb_merge_next(m, &it), PB_EEOF);
    pb_merge_free(m);
    pb_reader_close(ra);
    pb_reader_close(rb);
    pb_reader_close(rc);
}

static void test_ties_ordered_by_partition_name(void **state)
{
    /* Added as zeta, alpha, mid: ties must come alpha, mid, zeta. */
    const int64_t z[] = {100, 100, 200};
    const int64_t a[] = {100, 200};
    const int64_t mm[] = {50, 100, 200};
    write_partition("zeta", z, 3);
    write_partition("alpha", a, 2);
    write_partition("mid", mm, 3);
    pb_reader *rz = open_partition("zeta"), *ra = open_partition("alpha"),
              *rm = open_partition("mid");
    pb_merge *m;
    assert_int_equal(pb_merge_new(&m), 0);
    size_t idx;
    assert_int_equal(pb_merge_add_reader(m, "zeta", rz, &idx), 0);
    assert_int_equal(idx, 0);
    assert_int_equal(pb_merge_add_reader(m, "alpha", ra, &idx), 0);
    assert_int_equal(idx, 1);
    assert_int_equal(pb_merge_add_reader(m, "mid", rm, NULL), 0);

    expect(m, "mid#0", 50);
    expect(m, "alpha#0", 100);
    expect(m, "mid#1", 100);
    expect(m, "zeta#0", 100);
    expect(m, "zeta#1", 100);
    expect(m, "alpha#1", 200);
    expect(m, "mid#2", 200);
    expect(m, "zeta#2", 200);
    pb_merge_item it;
    assert_int_equal(pb_merge_next(m, &it), PB_EEOF);
    pb_merge_free(m);
    pb_reader_close(rz);
    pb_reader_close(ra);
    pb_reader_close(rm);
}

static void test_same_name_ties_keep_insertion_order(void **state)
{
    const int64_t s1[] = {7, 7};
    const int64_t s2[] = {7};
    script x = {.steps = s1, .n = 2}, y = {.steps = s2, .n = 1, .offset = 100};
    pb_merge *m;
    assert_int_equal(pb_merge_new(&m), 0);
    assert_int_equal(pb_merge_add(m, "same", script_next, &y, NULL), 0);
    assert_int_equal(pb_merge_add(m, "same", script_next, &x, NULL), 0);
    pb_merge_item it;
    assert_int_equal(pb_merge_next(m, &it), 0);
    assert_int_equal(it.source, 0);
    assert_ptr_equal(it.ctx, &y);
    assert_int_equal(pb_merge_next(m, &it), 0);
    assert_int_equal(it.source, 1);
    assert_int_equal(it.rec.offset, 0);
    assert_int_equal(pb_merge_next(m, &it), 0);
    assert_int_equal(it.source, 1);
    assert_int_equal(it.rec.offset, 1);
    assert_int_equal(pb_merge_next(m, &it), PB_EEOF);
    pb_merge_free(m);
}

static void test_damage_and_failure_are_passed_on(void **state)
{
    const int64_t s1[] = {10, -1, 30, -3};
    const int64_t s2[] = {20, 40, 50};
    script x = {.steps = s1, .n = 4}, y = {.steps = s2, .n = 3};
    pb_merge *m;
    assert_int_equal(pb_merge_new(&m), 0);
    assert_int_equal(pb_merge_add(m, "x", script_next, &x, NULL), 0);
    assert_int_equal(pb_merge_add(m, "y", script_next, &y, NULL), 0);
    pb_merge_item it;
    assert_int_equal(pb_merge_next(m, &it), 0);
    assert_int_equal(it.rec.time_ns, 10);
    /* x is asked for its next record and reports damage. */
    assert_int_equal(pb_merge_next(m, &it), PB_ECORRUPT);
    assert_int_equal(it.source, 0);
    assert_ptr_equal(it.ctx, &x);
    assert_int_equal(pb_merge_next(m, &it), 0);
    assert_int_equal(it.rec.time_ns, 20);
    assert_int_equal(pb_merge_next(m, &it), 0);
    assert_int_equal(it.rec.time_ns, 30);
    assert_int_equal(pb_merge_next(m, &it), -EIO);
    assert_int_equal(it.source, 0);
    assert_int_equal(pb_merge_next(m, &it), 0);
    assert_int_equal(it.rec.time_ns, 40);
    assert_int_equal(pb_merge_next(m, &it), 0);
    assert_int_equal(it.rec.time_ns, 50);
    int calls = x.calls;
    assert_int_equal(pb_merge_next(m, &it), PB_EEOF);
    assert_int_equal(x.calls, calls); /* a failed source is never asked again */
    pb_merge_free(m);
}

static void test_idle_sources_asked_again_only_when_nothing_pending(void **state)
{
    /* x: one record, then "nothing now", then a later one (a live log). */
    const int64_t s1[] = {10, -2, 25};
    const int64_t s2[] = {20, 30};
    script x = {.steps = s1, .n = 3}, y = {.steps = s2, .n = 2};
    pb_merge *m;
    assert_int_equal(pb_merge_new(&m), 0);
    assert_int_equal(pb_merge_add(m, "x", script_next, &x, NULL), 0);
    assert_int_equal(pb_merge_add(m, "y", script_next, &y, NULL), 0);
    pb_merge_item it;
    assert_int_equal(pb_merge_next(m, &it), 0);
    assert_int_equal(it.rec.time_ns, 10);
    assert_int_equal(x.calls, 1);
    assert_int_equal(pb_merge_next(m, &it), 0); /* x goes idle here */
    assert_int_equal(it.rec.time_ns, 20);
    assert_int_equal(x.calls, 2);
    assert_int_equal(pb_merge_next(m, &it), 0);
    assert_int_equal(it.rec.time_ns, 30);
    assert_int_equal(x.calls, 2); /* y still had a record: x not polled */
    assert_int_equal(pb_merge_next(m, &it), 0);
    assert_int_equal(it.rec.time_ns, 25);
    assert_int_equal(x.calls, 3);
    assert_int_equal(pb_merge_next(m, &it), PB_EEOF);
    pb_merge_free(m);
}

static void test_source_added_later_joins(void **state)
{
    const int64_t s1[] = {10, 40};
    const int64_t s2[] = {20, 30};
    script x = {.steps = s1, .n = 2}, y = {.steps = s2, .n = 2};
    script empty[12];
    pb_merge *m;
    assert_int_equal(pb_merge_new(&m), 0);
    assert_int_equal(pb_merge_add(m, "x", script_next, &x, NULL), 0);
    pb_merge_item it;
    assert_int_equal(pb_merge_next(m, &it), 0);
    assert_int_equal(it.rec.time_ns, 10);
    /* Added mid-stream, plus empty sources that make the arrays grow. */
    assert_int_equal(pb_merge_add(m, "y", script_next, &y, NULL), 0);
    for (int i = 0; i < 12; i++) {
        empty[i] = (script){.n = 0};
        assert_int_equal(pb_merge_add(m, "e", script_next, &empty[i], NULL), 0);
    }
    assert_int_equal(pb_merge_count(m), 14);
    assert_int_equal(pb_merge_next(m, &it), 0);
    assert_int_equal(it.rec.time_ns, 20);
    assert_int_equal(pb_merge_next(m, &it), 0);
    assert_int_equal(it.rec.time_ns, 30);
    assert_int_equal(pb_merge_next(m, &it), 0);
    assert_int_equal(it.rec.time_ns, 40);
    assert_int_equal(pb_merge_next(m, &it), PB_EEOF);
    pb_merge_free(m);
}

static void test_many_sources_heap_order(void **state)
{
    /* 100 sources, 50 records each, times spaced by 100 and shifted per
     * source (several sources share each shift): 5000 records must come
     * in (time, name) order. */
    enum { NS = 100, NR = 50 };
    static int64_t steps[NS][NR];
    static script s[NS];
    pb_merge *m;
    assert_int_equal(pb_merge_new(&m), 0);
    for (int i = 0; i < NS; i++) {
        for (int j = 0; j < NR; j++)
            steps[i][j] = (int64_t)j * 100 + (i * 37) % 60;
        s[i] = (script){.steps = steps[i], .n = NR};
        char name[16];
        snprintf(name, sizeof name, "p%03d", i);
        assert_int_equal(pb_merge_add(m, name, script_next, &s[i], NULL), 0);
    }
    pb_merge_item it;
    int64_t last = -1;
    size_t last_src = 0;
    int n = 0;
    while (pb_merge_next(m, &it) == 0) {
        assert_true(it.rec.time_ns >= last);
        if (it.rec.time_ns == last)
            assert_true(it.source > last_src);
        last = it.rec.time_ns;
        last_src = it.source;
        n++;
    }
    assert_int_equal(n, NS * NR);
    pb_merge_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_three_readers_merge_in_time_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ties_ordered_by_partition_name, setup, teardown),
        cmocka_unit_test(test_same_name_ties_keep_insertion_order),
        cmocka_unit_test(test_damage_and_failure_are_passed_on),
        cmocka_unit_test(test_idle_sources_asked_again_only_when_nothing_pending),
        cmocka_unit_test(test_source_added_later_joins),
        cmocka_unit_test(test_many_sources_heap_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
