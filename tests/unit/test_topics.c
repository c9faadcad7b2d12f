/*
 * test_topics - the per-partition topic table: last N offsets per topic, its
 * snapshot across close/reopen, catching up after a crash, and rebuilding
 * from the segment files when the snapshot is missing or damaged. Topics
 * leaving memory (the cold file, the budget) are test_topics_cold's
 * subject.
 *
 * Single-threaded: the test plays the partition's writer thread.
 */
#include "pb_errors.h"
#include "topicharness.h"
#include "topics.h"
#include "wire.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#define MAX_TOPICS 16
#define MAX_KEPT   64

/* What topics_foreach reported. */
typedef struct seen_topic {
    char name[64];
    uint64_t offsets[MAX_KEPT];
    size_t count;
} seen_topic;

typedef struct seen_table {
    seen_topic t[MAX_TOPICS];
    size_t n;
} seen_table;

static int collect(void *ctx, const char *topic, size_t len, const uint64_t *offsets, size_t count)
{
    seen_table *s = ctx;
    if (s->n == MAX_TOPICS || len >= sizeof s->t[0].name || count > MAX_KEPT)
        return -1;
    seen_topic *e = &s->t[s->n++];
    memcpy(e->name, topic, len);
    e->name[len] = '\0';
    memcpy(e->offsets, offsets, count * sizeof *offsets);
    e->count = count;
    return 0;
}

static const seen_topic *find(const seen_table *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->t[i].name, name) == 0)
            return &s->t[i];
    return NULL;
}

static void snapshot_of(topic_table *t, uint32_t n, seen_table *s)
{
    memset(s, 0, sizeof *s);
    int rc = topics_foreach(t, n, collect, s);
    assert_int_equal(rc, (int)s->n);
}

/* Asserts that t holds, for every topic of topics[0..n) (the topic of
 * offset i), its last `history` offsets. */
static void assert_table_matches(topic_table *t, const char *const *topics, size_t n,
                                 uint32_t history)
{
    seen_table s;
    snapshot_of(t, 0, &s);
    size_t distinct = 0;
    for (size_t i = 0; i < n; i++) {
        bool first = true;
        for (size_t j = 0; j < i; j++)
            if (strcmp(topics[j], topics[i]) == 0)
                first = false;
        if (!first)
            continue;
        distinct++;
        uint64_t want[MAX_KEPT];
        size_t k = 0;
        for (size_t j = 0; j < n; j++) {
            if (strcmp(topics[j], topics[i]) != 0)
                continue;
            if (k == history) {
                memmove(want, want + 1, (history - 1) * sizeof *want);
                k--;
            }
            want[k++] = j;
        }
        const seen_topic *e = find(&s, topics[i]);
        assert_non_null(e);
        assert_int_equal(e->count, k);
        assert_memory_equal(e->offsets, want, k * sizeof *want);
    }
    assert_int_equal(s.n, distinct);
    assert_int_equal(topics_count(t), distinct);
}

static void snapshot_path(const th_fixture *f, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", f->dir, TOPICS_SNAPSHOT_NAME);
}

/* --- tests --- */

static void test_last_offsets_per_topic(void **state)
{
    topic_table *t;
    assert_int_equal(topics_create(&t, 3), 0);
    live_record recs[30];
    for (size_t i = 0; i < 30; i++)
        recs[i] = (live_record){.offset = i,
                                .topic = (const uint8_t *)th_topics30[i],
                                .topic_len = (uint32_t)strlen(th_topics30[i])};
    /* Two batches, as a writer would add them. */
    assert_int_equal(topics_add(t, recs, 17), 0);
    assert_int_equal(topics_add(t, recs + 17, 13), 0);
    assert_table_matches(t, th_topics30, 30, 3);

    /* A smaller n gives the newest n, ascending. */
    seen_table s;
    snapshot_of(t, 1, &s);
    const seen_topic *a = find(&s, "a");
    assert_non_null(a);
    assert_int_equal(a->count, 1);
    assert_int_equal(a->offsets[0], 29);
    const seen_topic *x = find(&s, "x");
    assert_non_null(x);
    assert_int_equal(x->count, 1);
    assert_int_equal(x->offsets[0], 26);
    topics_destroy(t);
}

static void test_ring_grows_up_to_history(void **state)
{
    topic_table *t;
    assert_int_equal(topics_create(&t, 50), 0);
    for (uint64_t i = 0; i < 1000; i++)
        th_add(t, i % 10 == 3 ? "rare" : "busy", i);
    seen_table s;
    snapshot_of(t, 0, &s);
    const seen_topic *busy = find(&s, "busy");
    const seen_topic *rare = find(&s, "rare");
    assert_non_null(busy);
    assert_non_null(rare);
    assert_int_equal(busy->count, 50);
    assert_int_equal(rare->count, 50);
    /* busy: the last 50 offsets not ending in 3, ascending. */
    uint64_t want = 999;
    for (size_t k = 50; k-- > 0;) {
        if (want % 10 == 3)
            want--;
        assert_int_equal(busy->offsets[k], want);
        want--;
    }
    for (size_t k = 0; k < 50; k++)
        assert_int_equal(rare->offsets[k], 3 + 10 * (50 + k));

    /* n above the history is capped by it; n below takes the newest. */
    snapshot_of(t, 500, &s);
    assert_int_equal(find(&s, "busy")->count, 50);
    snapshot_of(t, 2, &s);
    assert_int_equal(find(&s, "rare")->count, 2);
    assert_int_equal(find(&s, "rare")->offsets[0], 983);
    assert_int_equal(find(&s, "rare")->offsets[1], 993);
    topics_destroy(t);
}

/* A topic's first TOPIC_RING_INLINE offsets live in its entry; the ring
 * moves out (and grows) as more come, and an older offset arriving late (a
 * catch-up after a crash) still lands in its place, at every history. */
static void test_ring_leaves_the_entry(void **state)
{
    (void)state;
    for (uint32_t history = 1; history <= 6; history++) {
        topic_table *t;
        assert_int_equal(topics_create(&t, history), 0);
        uint64_t all[10];
        size_t n = 0;
        for (uint64_t k = 1; k <= 8; k++) {
            th_add(t, "t", 10 * k);
            all[n++] = 10 * k;
            th_add(t, "other", 1000 + k); /* a neighbour in the table, untouched */
        }
        th_add(t, "t", 75); /* late: between 70 and 80 */
        all[n++] = 80;
        all[n - 2] = 75; /* ascending: ... 70 75 80 */
        for (int pass = 0; pass < 2; pass++) {
            seen_table s;
            snapshot_of(t, 0, &s);
            const seen_topic *e = find(&s, "t");
            assert_non_null(e);
            size_t want = n < history ? n : history;
            assert_int_equal(e->count, want);
            for (size_t k = 0; k < want; k++)
                assert_int_equal(e->offsets[k], all[n - want + k]);
            const seen_topic *o = find(&s, "other");
            assert_non_null(o);
            assert_int_equal(o->offsets[o->count - 1], 1008);
            th_add(t, "t", 75); /* a duplicate changes nothing */
        }
        topics_destroy(t);
    }
}

static void test_many_topics(void **state)
{
    /* Enough topics to grow the hash table several times. */
    topic_table *t;
    assert_int_equal(topics_create(&t, 1), 0);
    char name[32];
    for (uint64_t i = 0; i < 5000; i++) {
        snprintf(name, sizeof name, "topic.%llu", (unsigned long long)(i % 2500));
        th_add(t, name, i);
    }
    assert_int_equal(topics_count(t), 2500);
    topics_destroy(t);
    assert_int_equal(topics_create(&t, 0), PB_EINVAL);
}

static int stop_after_two(void *ctx, const char *topic, size_t len, const uint64_t *offsets,
                          size_t count)
{
    int *calls = ctx;
    return ++*calls == 2 ? -42 : 0;
}

static void test_foreach_stops_on_error(void **state)
{
    topic_table *t;
    assert_int_equal(topics_create(&t, 2), 0);
    th_add(t, "a", 0);
    th_add(t, "b", 1);
    th_add(t, "c", 2);
    int calls = 0;
    assert_int_equal(topics_foreach(t, 0, stop_after_two, &calls), -42);
    assert_int_equal(calls, 2);
    topics_destroy(t);
}

static void test_event_topic(void **state)
{
    uint8_t buf[128];
    const uint8_t *topic;
    size_t len;
    size_t n = th_encode_event(buf, "sensors.temp", 7);
    assert_int_equal(topics_event_topic(buf, n, &topic, &len), 0);
    assert_int_equal(len, 12);
    assert_memory_equal(topic, "sensors.temp", 12);

    /* The last occurrence of field 1 wins. */
    n += wire_put_len_field(buf + n, 1, "later", 5);
    assert_int_equal(topics_event_topic(buf, n, &topic, &len), 0);
    assert_int_equal(len, 5);
    assert_memory_equal(topic, "later", 5);

    /* No topic at all. */
    size_t m = wire_put_varint_field(buf, 6, 1);
    assert_int_equal(topics_event_topic(buf, m, &topic, &len), PB_ENOTFOUND);
    /* Field 1 with the wrong wire type, and a truncated field. */
    m = wire_put_varint_field(buf, 1, 1);
    assert_int_equal(topics_event_topic(buf, m, &topic, &len), PB_EPROTO);
    n = th_encode_event(buf, "abc", 1);
    assert_int_equal(topics_event_topic(buf, 3, &topic, &len), PB_EPROTO);
}

static void test_snapshot_survives_reopen(void **state)
{
    th_fixture *f = *state;
    th_write_log(f->dir, th_topics30, 30);

    /* First open: no snapshot, so the table is built from the log. */
    topic_table *t;
    assert_int_equal(topics_create(&t, 4), 0);
    assert_int_equal(topics_load(t, fileio_posix(), f->dir, "p", 30), 0);
    assert_table_matches(t, th_topics30, 30, 4);
    assert_int_equal(topics_save(t, fileio_posix(), f->dir, 30), 0);
    topics_destroy(t);

    char path[160], tmp[170];
    snapshot_path(f, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_equal(access(path, F_OK), 0);
    assert_int_not_equal(access(tmp, F_OK), 0);

    assert_int_equal(topics_create(&t, 4), 0);
    assert_int_equal(topics_load(t, fileio_posix(), f->dir, "p", 30), 0);
    assert_table_matches(t, th_topics30, 30, 4);
    topics_destroy(t);

    /* A smaller configured history keeps the newest of the saved ones. */
    assert_int_equal(topics_create(&t, 2), 0);
    assert_int_equal(topics_load(t, fileio_posix(), f->dir, "p", 30), 0);
    assert_table_matches(t, th_topics30, 30, 2);
    topics_destroy(t);
}

static void test_clean_start_reads_no_log(void **state)
{
    /* The snapshot covers the whole log: loading takes the table from it
     * alone. To prove no record was read, the saved table deliberately
     * disagrees with the log. */
    th_fixture *f = *state;
    th_write_log(f->dir, th_topics30, 30);
    topic_table *t;
    assert_int_equal(topics_create(&t, 4), 0);
    th_add(t, "only.in.snapshot", 5);
    th_add(t, "only.in.snapshot", 9);
    assert_int_equal(topics_save(t, fileio_posix(), f->dir, 30), 0);
    topics_destroy(t);

    assert_int_equal(topics_create(&t, 4), 0);
    assert_int_equal(topics_load(t, fileio_posix(), f->dir, "p", 30), 0);
    seen_table s;
    snapshot_of(t, 0, &s);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.t[0].name, "only.in.snapshot");
    assert_int_equal(s.t[0].count, 2);
    assert_int_equal(s.t[0].offsets[0], 5);
    assert_int_equal(s.t[0].offsets[1], 9);
    topics_destroy(t);
}

static void test_crash_is_caught_up(void **state)
{
    /* A snapshot written when the log held 12 records; then 18 more were
     * written and the process died without saving again. */
    th_fixture *f = *state;
    th_write_log(f->dir, th_topics30, 12);
    topic_table *t;
    assert_int_equal(topics_create(&t, 3), 0);
    assert_int_equal(topics_load(t, fileio_posix(), f->dir, "p", 12), 0);
    assert_int_equal(topics_save(t, fileio_posix(), f->dir, 12), 0);
    topics_destroy(t);
    th_write_log(f->dir, th_topics30 + 12, 18);

    assert_int_equal(topics_create(&t, 3), 0);
    assert_int_equal(topics_load(t, fileio_posix(), f->dir, "p", 30), 0);
    assert_table_matches(t, th_topics30, 30, 3);
    topics_destroy(t);
}

static void save_wrong_snapshot(const th_fixture *f, uint32_t history, uint64_t covered)
{
    topic_table *t;
    assert_int_equal(topics_create(&t, history), 0);
    th_add(t, "wrong", 1);
    th_add(t, "wrong", 2);
    assert_int_equal(topics_save(t, fileio_posix(), f->dir, covered), 0);
    topics_destroy(t);
}

static void load_and_check_rebuilt(const th_fixture *f)
{
    topic_table *t;
    assert_int_equal(topics_create(&t, 3), 0);
    assert_int_equal(topics_load(t, fileio_posix(), f->dir, "p", 30), 0);
    assert_table_matches(t, th_topics30, 30, 3);
    topics_destroy(t);
}

static void test_damaged_snapshot_is_rebuilt(void **state)
{
    th_fixture *f = *state;
    th_write_log(f->dir, th_topics30, 30);
    save_wrong_snapshot(f, 3, 30);
    char path[160];
    snapshot_path(f, path, sizeof path);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    uint8_t orig[512];
    size_t size = (size_t)st.st_size;
    assert_true(size <= sizeof orig);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    assert_int_equal(fread(orig, 1, size, fp), size);
    assert_int_equal(fclose(fp), 0);

    /* Any flipped bit is caught by the CRC: the table comes from the log. */
    for (size_t pos = 0; pos < size; pos++) {
        uint8_t bad[512];
        memcpy(bad, orig, size);
        bad[pos] ^= (uint8_t)(1u << (pos % 8));
        fp = fopen(path, "wb");
        assert_non_null(fp);
        assert_int_equal(fwrite(bad, 1, size, fp), size);
        assert_int_equal(fclose(fp), 0);
        load_and_check_rebuilt(f);
    }

    /* Cut short. */
    assert_int_equal(truncate(path, (off_t)size - 5), 0);
    load_and_check_rebuilt(f);
    assert_int_equal(truncate(path, 3), 0);
    load_and_check_rebuilt(f);

    /* Missing. */
    assert_int_equal(unlink(path), 0);
    load_and_check_rebuilt(f);
}

static void test_inconsistent_snapshot_is_rebuilt(void **state)
{
    th_fixture *f = *state;
    th_write_log(f->dir, th_topics30, 30);
    /* Covers more than the log holds (e.g. the log was replaced). */
    save_wrong_snapshot(f, 3, 31);
    load_and_check_rebuilt(f);
    /* Kept fewer offsets per topic than now configured. */
    save_wrong_snapshot(f, 2, 30);
    load_and_check_rebuilt(f);
}

static void test_save_fails_cleanly(void **state)
{
    th_fixture *f = *state;
    topic_table *t;
    assert_int_equal(topics_create(&t, 3), 0);
    th_add(t, "a", 0);
    char missing[160];
    snprintf(missing, sizeof missing, "%s/no/such/dir", f->root);
    assert_true(topics_save(t, fileio_posix(), missing, 1) < 0);
    topics_destroy(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_last_offsets_per_topic),
        cmocka_unit_test(test_ring_grows_up_to_history),
        cmocka_unit_test(test_ring_leaves_the_entry),
        cmocka_unit_test(test_many_topics),
        cmocka_unit_test(test_foreach_stops_on_error),
        cmocka_unit_test(test_event_topic),
        cmocka_unit_test_setup_teardown(test_snapshot_survives_reopen, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_clean_start_reads_no_log, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_crash_is_caught_up, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_damaged_snapshot_is_rebuilt, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_inconsistent_snapshot_is_rebuilt, th_setup,
                                        th_teardown),
        cmocka_unit_test_setup_teardown(test_save_fails_cleanly, th_setup, th_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
