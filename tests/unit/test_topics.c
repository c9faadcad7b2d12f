/*
 * test_topics - the per-partition topic table: last N offsets per topic, its
 * snapshot across close/reopen, catching up after a crash, and rebuilding
 * from the segment files when the snapshot is missing or damaged.
 *
 * Single-threaded: the test plays the partition's writer thread.
 */
#include "testfs.h"
#include "log.h"
#include "pb_errors.h"
#include "topics.h"
#include "wire.h"

#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
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

static void add(topic_table *t, const char *topic, uint64_t offset)
{
    live_record r = {
        .offset = offset, .topic = (const uint8_t *)topic, .topic_len = (uint32_t)strlen(topic)};
    assert_int_equal(topics_add(t, &r, 1), 0);
}

/* --- temporary directories and a real partition log --- */

static void rm_rf(const char *dir)
{
    assert_int_equal(testfs_rmrf(dir), 0);
}

typedef struct fixture {
    char root[64];
    char dir[96]; /* root/p: the partition directory */
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    strcpy(f->root, "/tmp/test_topics.XXXXXX");
    if (!mkdtemp(f->root))
        return -1;
    snprintf(f->dir, sizeof f->dir, "%s/p", f->root);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    rm_rf(f->root);
    free(f);
    return 0;
}

/* A minimal EncapsulatedEvent: topic (field 1) and payload_size (field 6). */
static size_t encode_event(uint8_t *buf, const char *topic, uint64_t payload_size)
{
    size_t n = wire_put_len_field(buf, 1, topic, strlen(topic));
    return n + wire_put_varint_field(buf + n, 6, payload_size);
}

/* Appends events with topics[0..n) to the partition log at dir. */
static void write_log(const char *dir, const char *const *topics, size_t n)
{
    pb_log *log;
    log_options o = {0};
    assert_int_equal(log_open(&log, dir, &o), 0);
    uint64_t base = log_next_offset(log);
    uint8_t buf[300];
    for (size_t i = 0; i < n; i++) {
        size_t len = encode_event(buf, topics[i], i);
        log_entry e = {.data = buf, .len = len, .time_ns = 1000 + (int64_t)i};
        uint64_t first;
        assert_int_equal(log_append(log, &e, 1, &first), 0);
        assert_int_equal(first, base + i);
    }
    assert_int_equal(log_close(log), 0);
}

static const char *const TOPICS30[30] = {
    "a", "b", "a", "c", "a", "a",   "b", "d.e", "a", "c", "b", "b", "a", "x", "a",
    "c", "c", "a", "b", "a", "d.e", "a", "a",   "b", "c", "a", "x", "a", "b", "a",
};

static void snapshot_path(const fixture *f, char *out, size_t n)
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
                                .topic = (const uint8_t *)TOPICS30[i],
                                .topic_len = (uint32_t)strlen(TOPICS30[i])};
    /* Two batches, as a writer would add them. */
    assert_int_equal(topics_add(t, recs, 17), 0);
    assert_int_equal(topics_add(t, recs + 17, 13), 0);
    assert_table_matches(t, TOPICS30, 30, 3);

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
        add(t, i % 10 == 3 ? "rare" : "busy", i);
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
            add(t, "t", 10 * k);
            all[n++] = 10 * k;
            add(t, "other", 1000 + k); /* a neighbour in the table, untouched */
        }
        add(t, "t", 75); /* late: between 70 and 80 */
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
            add(t, "t", 75); /* a duplicate changes nothing */
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
        add(t, name, i);
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
    add(t, "a", 0);
    add(t, "b", 1);
    add(t, "c", 2);
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
    size_t n = encode_event(buf, "sensors.temp", 7);
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
    n = encode_event(buf, "abc", 1);
    assert_int_equal(topics_event_topic(buf, 3, &topic, &len), PB_EPROTO);
}

static void test_snapshot_survives_reopen(void **state)
{
    fixture *f = *state;
    write_log(f->dir, TOPICS30, 30);

    /* First open: no snapshot, so the table is built from the log. */
    topic_table *t;
    assert_int_equal(topics_create(&t, 4), 0);
    assert_int_equal(topics_load(t, fileio_posix(), f->dir, "p", 30), 0);
    assert_table_matches(t, TOPICS30, 30, 4);
    assert_int_equal(topics_save(t, fileio_posix(), f->dir, 30), 0);
    topics_destroy(t);

    char path[160], tmp[170];
    snapshot_path(f, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_equal(access(path, F_OK), 0);
    assert_int_not_equal(access(tmp, F_OK), 0);

    assert_int_equal(topics_create(&t, 4), 0);
    assert_int_equal(topics_load(t, fileio_posix(), f->dir, "p", 30), 0);
    assert_table_matches(t, TOPICS30, 30, 4);
    topics_destroy(t);

    /* A smaller configured history keeps the newest of the saved ones. */
    assert_int_equal(topics_create(&t, 2), 0);
    assert_int_equal(topics_load(t, fileio_posix(), f->dir, "p", 30), 0);
    assert_table_matches(t, TOPICS30, 30, 2);
    topics_destroy(t);
}

static void test_clean_start_reads_no_log(void **state)
{
    /* The snapshot covers the whole log: loading takes the table from it
     * alone. To prove no record was read, the saved table deliberately
     * disagrees with the log. */
    fixture *f = *state;
    write_log(f->dir, TOPICS30, 30);
    topic_table *t;
    assert_int_equal(topics_create(&t, 4), 0);
    add(t, "only.in.snapshot", 5);
    add(t, "only.in.snapshot", 9);
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
    fixture *f = *state;
    write_log(f->dir, TOPICS30, 12);
    topic_table *t;
    assert_int_equal(topics_create(&t, 3), 0);
    assert_int_equal(topics_load(t, fileio_posix(), f->dir, "p", 12), 0);
    assert_int_equal(topics_save(t, fileio_posix(), f->dir, 12), 0);
    topics_destroy(t);
    write_log(f->dir, TOPICS30 + 12, 18);

    assert_int_equal(topics_create(&t, 3), 0);
    assert_int_equal(topics_load(t, fileio_posix(), f->dir, "p", 30), 0);
    assert_table_matches(t, TOPICS30, 30, 3);
    topics_destroy(t);
}

static void save_wrong_snapshot(const fixture *f, uint32_t history, uint64_t covered)
{
    topic_table *t;
    assert_int_equal(topics_create(&t, history), 0);
    add(t, "wrong", 1);
    add(t, "wrong", 2);
    assert_int_equal(topics_save(t, fileio_posix(), f->dir, covered), 0);
    topics_destroy(t);
}

static void load_and_check_rebuilt(const fixture *f)
{
    topic_table *t;
    assert_int_equal(topics_create(&t, 3), 0);
    assert_int_equal(topics_load(t, fileio_posix(), f->dir, "p", 30), 0);
    assert_table_matches(t, TOPICS30, 30, 3);
    topics_destroy(t);
}

static void test_damaged_snapshot_is_rebuilt(void **state)
{
    fixture *f = *state;
    write_log(f->dir, TOPICS30, 30);
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
    fixture *f = *state;
    write_log(f->dir, TOPICS30, 30);
    /* Covers more than the log holds (e.g. the log was replaced). */
    save_wrong_snapshot(f, 3, 31);
    load_and_check_rebuilt(f);
    /* Kept fewer offsets per topic than now configured. */
    save_wrong_snapshot(f, 2, 30);
    load_and_check_rebuilt(f);
}

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

static void cold_path(const fixture *f, char *out, size_t n)
{
    snprintf(out, n, "%s/topics.cold", f->dir);
}

/* Loads the partition's table under a budget of `max` topics in memory. */
static topic_table *load_budgeted(const fixture *f, topics_budget *b, uint64_t end)
{
    topic_table *t;
    assert_int_equal(topics_create(&t, COLD_HIST), 0);
    topics_set_budget(t, b);
    assert_int_equal(topics_load(t, fileio_posix(), f->dir, "p", end), 0);
    return t;
}

static void test_cold_topics_stay_findable(void **state)
{
    fixture *f = *state;
    cold_names_init();
    write_log(f->dir, cold_topic_ptrs, COLD_RECS);
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
    fixture *f = *state;
    cold_names_init();
    write_log(f->dir, cold_topic_ptrs, COLD_RECS);
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
    fixture *f = *state;
    cold_names_init();
    write_log(f->dir, cold_topic_ptrs, COLD_RECS / 2);
    topics_budget b;
    topics_budget_init(&b, 50);
    topic_table *t = load_budgeted(f, &b, COLD_RECS / 2);
    assert_int_equal(topics_save(t, fileio_posix(), f->dir, COLD_RECS / 2), 0);
    topics_destroy(t);
    write_log(f->dir, cold_topic_ptrs + COLD_RECS / 2, COLD_RECS / 2);
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
    fixture *f = *state;
    char dir2[160];
    snprintf(dir2, sizeof dir2, "%s/q", f->root);
    write_log(f->dir, TOPICS30, 1);
    write_log(dir2, TOPICS30, 1);
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
        add(small, name, 10 + i);
    }
    for (uint64_t i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "big.%llu", (unsigned long long)i);
        add(big, name, 10 + i);
        if (i % 100 == 0)
            add(small, "small.0", 2000 + i); /* the small one keeps writing */
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
    fixture *f = *state;
    write_log(f->dir, TOPICS30, 1);
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
        add(t, name, 1 + i);
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

static void test_save_fails_cleanly(void **state)
{
    fixture *f = *state;
    topic_table *t;
    assert_int_equal(topics_create(&t, 3), 0);
    add(t, "a", 0);
    char missing[160];
    snprintf(missing, sizeof missing, "%s/no/such/dir", f->root);
    assert_true(topics_save(t, fileio_posix(), missing, 1) < 0);
    topics_destroy(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cold_topics_stay_findable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cold_file_damaged_or_missing_is_rebuilt, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cold_newer_than_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_budget_shared_by_tables, setup, teardown),
        cmocka_unit_test_setup_teardown(test_walks_during_evictions, setup, teardown),
        cmocka_unit_test(test_last_offsets_per_topic),
        cmocka_unit_test(test_ring_grows_up_to_history),
        cmocka_unit_test(test_ring_leaves_the_entry),
        cmocka_unit_test(test_many_topics),
        cmocka_unit_test(test_foreach_stops_on_error),
        cmocka_unit_test(test_event_topic),
        cmocka_unit_test_setup_teardown(test_snapshot_survives_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clean_start_reads_no_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_is_caught_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_snapshot_is_rebuilt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inconsistent_snapshot_is_rebuilt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_save_fails_cleanly, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
