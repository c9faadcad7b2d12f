/*
 * test_topics_cold - topics leaving memory (F9, issue 10): under
 * max_topics_in_memory the coldest topics go to the cold file and stay
 * findable there; a damaged or missing cold file is rebuilt, one newer than
 * the snapshot is handled; tables share one budget; walks of the table
 * during evictions miss nothing.
 *
 * Single-threaded but for one walker thread: the test plays the
 * partition's writer thread.
 */
#include "pb_errors.h"
#include "testfs.h"
#include "topicharness.h"
#include "topics.h"

#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

/* --- F9: topics leave memory and stay findable --- */

#define COLD_TOPICS 500
#define COLD_RECS   2000
#define COLD_HIST   4

/* Record i's topic: "cold.<i % COLD_TOPICS>", names stable for the test. */
static char cold_names[COLD_RECS + 100][24];
static const char *cold_topic_ptrs[COLD_RECS + 100];

static void cold_names_init(void)
{
    for (size_t i = 0; i < COLD_RECS + 100; i++) {
        snprintf(cold_names[i], sizeof cold_names[i], "cold.%zu", i % COLD_TOPICS);
        cold_topic_ptrs[i] = cold_names[i];
    }
}

typedef struct cold_seen {
    size_t visits[COLD_TOPICS];
    uint64_t offsets[COLD_TOPICS][COLD_HIST];
    size_t count[COLD_TOPICS];
    size_t others;
} cold_seen;

static int cold_collect(void *ctx, const char *topic, size_t len, const uint64_t *offsets,
                        size_t count)
{
    cold_seen *s = ctx;
    char name[32];
    if (len >= sizeof name || count > COLD_HIST)
        return -1;
    memcpy(name, topic, len);
    name[len] = '\0';
    unsigned i;
    if (sscanf(name, "cold.%u", &i) != 1 || i >= COLD_TOPICS) {
        s->others++;
        return 0;
    }
    s->visits[i]++;
    s->count[i] = count;
    memcpy(s->offsets[i], offsets, count * sizeof *offsets);
    return 0;
}

/* Every topic of records [0, nrecs) is visited once with its last
 * COLD_HIST offsets (topic of offset j: j % COLD_TOPICS). */
static void assert_cold_table(topic_table *t, size_t nrecs)
{
    cold_seen *s = calloc(1, sizeof *s);
    assert_non_null(s);
    int rc = topics_foreach(t, 0, cold_collect, s);
    assert_int_equal(s->others, 0);
    size_t topics = nrecs < COLD_TOPICS ? nrecs : COLD_TOPICS;
    assert_int_equal(rc, (int)topics);
    for (size_t i = 0; i < topics; i++) {
        uint64_t want[COLD_HIST];
        size_t k = 0;
        for (uint64_t j = i; j < nrecs; j += COLD_TOPICS) {
            if (k == COLD_HIST) {
                memmove(want, want + 1, (COLD_HIST - 1) * sizeof *want);
                k--;
            }
            want[k++] = j;
        }
        if (s->visits[i] != 1 || s->count[i] != k ||
            memcmp(s->offsets[i], want, k * sizeof *want) != 0)
            fail_msg("topic cold.%zu: %zu visits, %zu offsets (want %zu)", i, s->visits[i],
                     s->count[i], k);
    }
    free(s);
}

static void cold_path(const th_fixture *f, char *out, size_t n)
{
    snprintf(out, n, "%s/topics.cold", f->dir);
}

/* Loads the partition's table under a budget of `max` topics in memory. */
static topic_table *load_budgeted(const th_fixture *f, topics_budget *b, uint64_t end)
{
    topic_table *t;
    assert_int_equal(topics_create(&t, COLD_HIST), 0);
    topics_set_budget(t, b);
    assert_int_equal(topics_load(t, fileio_posix(), f->dir, "p", end), 0);
    return t;
}

static void test_cold_topics_stay_findable(void **state)
{
    th_fixture *f = *state;
    cold_names_init();
    th_write_log(f->dir, cold_topic_ptrs, COLD_RECS);
    topics_budget b;
    topics_budget_init(&b, 50);

    /* Rebuilt from the log under the budget: most topics leave memory. */
    topic_table *t = load_budgeted(f, &b, COLD_RECS);
    assert_true(topics_count(t) <= 51);
    assert_int_equal(atomic_load(&b.in_memory), topics_count(t));
    assert_true(topics_cold_count(t) >= COLD_TOPICS - 51);
    assert_cold_table(t, COLD_RECS);
    assert_int_equal(topics_save(t, fileio_posix(), f->dir, COLD_RECS), 0);
    topics_destroy(t);
    assert_int_equal(atomic_load(&b.in_memory), 0);
    assert_int_equal(atomic_load(&b.tables), 0);

    /* Reopened: the snapshot (what was in memory) and the cold file. */
    t = load_budgeted(f, &b, COLD_RECS);
    assert_cold_table(t, COLD_RECS);

    /* A topic that left memory comes back with its older offsets. */
    for (uint64_t j = COLD_RECS; j < COLD_RECS + 100; j++) {
        live_record r = {.offset = j,
                         .topic = (const uint8_t *)cold_names[j],
                         .topic_len = (uint32_t)strlen(cold_names[j])};
        assert_int_equal(topics_add(t, &r, 1), 0);
    }
    assert_true(topics_count(t) <= 51);
    assert_cold_table(t, COLD_RECS + 100);
    topics_destroy(t);
}

static void test_cold_file_damaged_or_missing_is_rebuilt(void **state)
{
    th_fixture *f = *state;
    cold_names_init();
    th_write_log(f->dir, cold_topic_ptrs, COLD_RECS);
    topics_budget b;
    topics_budget_init(&b, 50);
    topic_table *t = load_budgeted(f, &b, COLD_RECS);
    assert_int_equal(topics_save(t, fileio_posix(), f->dir, COLD_RECS), 0);
    topics_destroy(t);

    char path[160];
    cold_path(f, path, sizeof path);
    size_t len;
    uint8_t *orig = testfs_read_file(path, &len);
    /* A flipped byte anywhere (header, entries, trailer) is caught: the
     * snapshot relies on the file, so the table comes from the log. */
    const size_t where[] = {0, 10, 30, len / 2, len - 10, len - 1};
    for (size_t k = 0; k < sizeof where / sizeof where[0]; k++) {
        uint8_t *bad = malloc(len);
        assert_non_null(bad);
        memcpy(bad, orig, len);
        bad[where[k]] ^= 0x20;
        testfs_write_file(path, bad, len);
        free(bad);
        t = load_budgeted(f, &b, COLD_RECS);
        assert_cold_table(t, COLD_RECS);
        topics_destroy(t);
    }
    /* Missing. */
    testfs_write_file(path, orig, len);
    free(orig);
    assert_int_equal(unlink(path), 0);
    t = load_budgeted(f, &b, COLD_RECS);
    assert_cold_table(t, COLD_RECS);
    topics_destroy(t);
}

/* A crash after an eviction that came after the last snapshot: the cold
 * file is newer than the snapshot; catching up from the snapshot meets
 * offsets the cold file already has. Nothing is lost or doubled. */
static void test_cold_newer_than_snapshot(void **state)
{
    th_fixture *f = *state;
    cold_names_init();
    th_write_log(f->dir, cold_topic_ptrs, COLD_RECS / 2);
    topics_budget b;
    topics_budget_init(&b, 50);
    topic_table *t = load_budgeted(f, &b, COLD_RECS / 2);
    assert_int_equal(topics_save(t, fileio_posix(), f->dir, COLD_RECS / 2), 0);
    topics_destroy(t);
    th_write_log(f->dir, cold_topic_ptrs + COLD_RECS / 2, COLD_RECS / 2);
    t = load_budgeted(f, &b, COLD_RECS); /* catches up, evicting; then "crashes" */
    topics_destroy(t);
    t = load_budgeted(f, &b, COLD_RECS);
    assert_cold_table(t, COLD_RECS);
    topics_destroy(t);
}

/* One budget, two tables: the one with many topics evicts, the one with
 * few keeps them all in memory. */
static void test_budget_shared_by_tables(void **state)
{
    th_fixture *f = *state;
    char dir2[160];
    snprintf(dir2, sizeof dir2, "%s/q", f->root);
    th_write_log(f->dir, th_topics30, 1);
    th_write_log(dir2, th_topics30, 1);
    topics_budget b;
    topics_budget_init(&b, 100);
    topic_table *big, *small;
    assert_int_equal(topics_create(&big, 2), 0);
    assert_int_equal(topics_create(&small, 2), 0);
    topics_set_budget(big, &b);
    topics_set_budget(small, &b);
    assert_int_equal(topics_load(big, fileio_posix(), f->dir, "p", 1), 0);
    assert_int_equal(topics_load(small, fileio_posix(), dir2, "q", 1), 0);
    char name[32];
    for (uint64_t i = 0; i < 10; i++) {
        snprintf(name, sizeof name, "small.%llu", (unsigned long long)i);
        th_add(small, name, 10 + i);
    }
    for (uint64_t i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "big.%llu", (unsigned long long)i);
        th_add(big, name, 10 + i);
        if (i % 100 == 0)
            th_add(small, "small.0", 2000 + i); /* the small one keeps writing */
    }
    assert_int_equal(topics_count(small), 11); /* "a" from its log, small.0..9 */
    assert_int_equal(topics_cold_count(small), 0);
    assert_true(topics_count(big) <= 100);
    assert_true(topics_cold_count(big) >= 900);
    assert_true(atomic_load(&b.in_memory) <= 100 + 11);
    topics_destroy(big);
    topics_destroy(small);
}

/* A walk of the table while its writer evicts: an eviction is put off
 * while a walk runs, but not forever (walks in a loop must not keep every
 * topic in memory); every topic is always found. */
typedef struct walker {
    topic_table *t;
    atomic_bool stop;
    size_t walks, short_walks;
    _Atomic size_t known; /* topics added before the walk began */
} walker;

static int count_fn(void *ctx, const char *topic, size_t len, const uint64_t *o, size_t n)
{
    (*(size_t *)ctx)++;
    return 0;
}

static void *walk_main(void *arg)
{
    walker *w = arg;
    while (!atomic_load(&w->stop)) {
        size_t before = atomic_load(&w->known), n = 0;
        int rc = topics_foreach(w->t, 1, count_fn, &n);
        if (rc < 0 || n < before)
            w->short_walks++;
        w->walks++;
    }
    return NULL;
}

static void test_walks_during_evictions(void **state)
{
    th_fixture *f = *state;
    th_write_log(f->dir, th_topics30, 1);
    topics_budget b;
    topics_budget_init(&b, 64);
    topic_table *t;
    assert_int_equal(topics_create(&t, 2), 0);
    topics_set_budget(t, &b);
    assert_int_equal(topics_load(t, fileio_posix(), f->dir, "p", 1), 0);
    walker w = {.t = t};
    atomic_init(&w.stop, false);
    atomic_init(&w.known, 1);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, walk_main, &w), 0);
    char name[32];
    for (uint64_t i = 0; i < 3000; i++) {
        snprintf(name, sizeof name, "w.%llu", (unsigned long long)i);
        th_add(t, name, 1 + i);
        atomic_store(&w.known, (size_t)i + 2);
    }
    atomic_store(&w.stop, true);
    pthread_join(th, NULL);
    assert_true(w.walks > 0);
    assert_int_equal(w.short_walks, 0);
    assert_true(topics_cold_count(t) > 0);
    assert_true(topics_count(t) <= 64 + 16); /* at most EVICT_MAX_SKIPS late */
    size_t n = 0;
    assert_int_equal(topics_foreach(t, 1, count_fn, &n), 3001);
    topics_destroy(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cold_topics_stay_findable, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_cold_file_damaged_or_missing_is_rebuilt, th_setup,
                                        th_teardown),
        cmocka_unit_test_setup_teardown(test_cold_newer_than_snapshot, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_budget_shared_by_tables, th_setup, th_teardown),
        cmocka_unit_test_setup_teardown(test_walks_during_evictions, th_setup, th_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
