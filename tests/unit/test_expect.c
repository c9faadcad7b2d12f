/*
 * test_expect - expected offsets and the dedup window, decided by a real
 * partition writer (partition.c -> expect.c -> dedup.c, topics.c): a
 * mismatch stores nothing and reports the real last offset (cold topics
 * too); repeated ids are acknowledged with the original offset; a retry of
 * a stored expected-offset batch is a duplicate, not a mismatch; the window
 * expires on the injected clock, is bounded in memory, and is rebuilt from
 * the log when the partition is opened again.
 *
 * The test thread plays the loop thread (partition_submit); done() runs on
 * the writer thread and signals a condition variable.
 */
#include "crc32c.h"
#include "dedup.h"
#include "fileio.h"
#include "partition.h"
#include "pb_errors.h"
#include "testfs.h"
#include "topics.h"
#include "topics_cold.h"
#include "wire.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define MAX_EVENTS 8
#define WINDOW_MS  60000
#define SEC        1000000000ll

typedef struct fixture {
    char root[64];
    _Atomic int64_t clock_ns;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    topics_budget budget;
    uint32_t max_entries;
} fixture;

/* One batch of up to MAX_EVENTS events and its single part. */
typedef struct tbatch {
    pub_batch b;
    pub_part part;
    pub_event ev[MAX_EVENTS];
    uint32_t idx[MAX_EVENTS];
    pub_expect expect[4];
    uint8_t bytes[MAX_EVENTS][160];
    fixture *f;
    bool done;
} tbatch;

static int64_t test_clock(void *ctx)
{
    fixture *f = ctx;
    return atomic_load(&f->clock_ns);
}

static void on_done(pub_part *part)
{
    tbatch *t = (tbatch *)part->batch; /* b is its first member */
    pthread_mutex_lock(&t->f->lock);
    t->done = true;
    pthread_cond_broadcast(&t->f->cond);
    pthread_mutex_unlock(&t->f->lock);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    strcpy(f->root, "/tmp/test_expect.XXXXXX");
    if (!mkdtemp(f->root))
        return -1;
    atomic_init(&f->clock_ns, 1700000000 * SEC);
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    topics_budget_init(&f->budget, 1u << 20);
    f->max_entries = 1000;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    testfs_rmrf(f->root);
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->cond);
    free(f);
    return 0;
}

static partition *open_p(fixture *f)
{
    partition_options o = {
        .fsync = PARTITION_FSYNC_ALWAYS,
        .topic_history = 4,
        .topics_budget = &f->budget,
        .dedup_window_ms = WINDOW_MS,
        .dedup_max_entries = f->max_entries,
    };
    o.log.now_ns = test_clock;
    o.log.clock_ctx = f;
    partition *p = NULL;
    assert_int_equal(partition_open(&p, f->root, "p", &o), 0);
    return p;
}

/* A batch of n events on `topics` (ids: NULL or "" = none), with the
 * expectations "topic=offset" or "topic=none" given in exp. */
static tbatch *make(fixture *f, partition *p, size_t n, const char *const *topics,
                    const char *const *ids, size_t nexp, const char *const *exp)
{
    tbatch *t = calloc(1, sizeof *t);
    assert_non_null(t);
    t->f = f;
    for (size_t i = 0; i < n; i++) {
        uint8_t *b = t->bytes[i];
        size_t k = wire_put_len_field(b, 1, topics[i], strlen(topics[i]));
        size_t tk = k;
        size_t id_len = ids && ids[i] ? strlen(ids[i]) : 0;
        if (id_len)
            k += wire_put_len_field(b + k, 8, ids[i], id_len);
        t->ev[i] = (pub_event){.data = b,
                               .len = (uint32_t)k,
                               .topic = b + 2,
                               .topic_len = (uint32_t)(tk - 2),
                               .id = id_len ? b + tk + 2 : NULL,
                               .id_len = (uint8_t)id_len,
                               .offset = UINT64_MAX};
        t->idx[i] = (uint32_t)i;
    }
    for (size_t j = 0; j < nexp; j++) {
        const char *eq = strchr(exp[j], '=');
        assert_non_null(eq);
        bool none = strcmp(eq + 1, "none") == 0;
        t->expect[j] = (pub_expect){.topic = (const uint8_t *)exp[j],
                                    .topic_len = (uint32_t)(eq - exp[j]),
                                    .none = none,
                                    .offset = none ? 0 : strtoull(eq + 1, NULL, 10)};
    }
    t->b.done = on_done;
    t->b.nevents = (uint32_t)n;
    t->b.events = t->ev;
    t->b.nparts = 1;
    t->b.parts = &t->part;
    t->b.nexpect = (uint32_t)nexp;
    t->b.expect = nexp ? t->expect : NULL;
    t->part = (pub_part){.batch = &t->b, .partition = p, .events = t->idx, .count = (uint32_t)n};
    return t;
}

static void run(tbatch *t)
{
    atomic_store(&t->b.pending, 1);
    partition_submit(t->part.partition, &t->part);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 30;
    pthread_mutex_lock(&t->f->lock);
    while (!t->done)
        assert_int_equal(pthread_cond_timedwait(&t->f->cond, &t->f->lock, &dl), 0);
    pthread_mutex_unlock(&t->f->lock);
}

/* Publishes one event and returns its batch (done). */
static tbatch *pub1(fixture *f, partition *p, const char *topic, const char *id, const char *exp)
{
    tbatch *t = make(f, p, 1, &topic, &id, exp ? 1 : 0, &exp);
    run(t);
    return t;
}

static bool marked(const fixture *f)
{
    char path[128];
    snprintf(path, sizeof path, "%s/p/%s", f->root, DEDUP_MARK_NAME);
    return access(path, F_OK) == 0;
}

static void test_expected_offsets(void **state)
{
    fixture *f = *state;
    partition *p = open_p(f);
    tbatch *t = pub1(f, p, "a", NULL, "a=none");
    assert_int_equal(t->part.status, 0);
    assert_int_equal(t->ev[0].offset, 0);
    free(t);
    /* "none" no longer holds: nothing stored, the real last offset reported. */
    t = pub1(f, p, "a", NULL, "a=none");
    assert_int_equal(t->part.status, PUB_EXPECT_FAILED);
    assert_false(t->part.actual_none);
    assert_int_equal(t->part.actual, 0);
    assert_int_equal(t->ev[0].offset, UINT64_MAX);
    assert_int_equal(partition_end_offset(p), 1);
    free(t);
    t = pub1(f, p, "b", NULL, NULL); /* offset 1, another topic */
    free(t);
    t = pub1(f, p, "a", NULL, "a=0");
    assert_int_equal(t->part.status, 0);
    assert_int_equal(t->ev[0].offset, 2);
    free(t);
    /* Several expectations: the first that fails is named. */
    const char *topics[] = {"a", "c"};
    const char *exp[] = {"a=2", "b=0", "c=none"};
    t = make(f, p, 2, topics, NULL, 3, exp);
    run(t);
    assert_int_equal(t->part.status, PUB_EXPECT_FAILED);
    assert_int_equal(t->part.expect_failed, 1);
    assert_int_equal(t->part.actual, 1);
    free(t);
    assert_int_equal(partition_end_offset(p), 3);
    /* Survives a restart: the topic table is the truth. */
    assert_int_equal(partition_close(p), 0);
    p = open_p(f);
    t = pub1(f, p, "c", NULL, "a=1");
    assert_int_equal(t->part.status, PUB_EXPECT_FAILED);
    assert_int_equal(t->part.actual, 2);
    free(t);
    t = pub1(f, p, "c", NULL, "c=none");
    assert_int_equal(t->part.status, 0);
    assert_int_equal(t->ev[0].offset, 3);
    free(t);
    assert_int_equal(partition_close(p), 0);
    assert_false(marked(f)); /* no id ever: start-up reads nothing for the window */
}

/* A topic that left memory for topics.cold is checked against the file. */
static void test_expected_offset_of_cold_topic(void **state)
{
    fixture *f = *state;
    topics_budget_init(&f->budget, 64);
    partition *p = open_p(f);
    char name[32];
    for (int i = 0; i < 400; i++) {
        snprintf(name, sizeof name, "t%03d", i);
        free(pub1(f, p, name, NULL, NULL));
    }
    char cold[128];
    snprintf(cold, sizeof cold, "%s/p/%s", f->root, TOPICS_COLD_NAME);
    assert_int_equal(access(cold, F_OK), 0); /* some topics left memory */
    tbatch *t = pub1(f, p, "t000", NULL, "t000=7");
    assert_int_equal(t->part.status, PUB_EXPECT_FAILED);
    assert_int_equal(t->part.actual, 0);
    free(t);
    t = pub1(f, p, "t001", NULL, "t001=1");
    assert_int_equal(t->part.status, 0);
    assert_int_equal(t->ev[0].offset, 400);
    free(t);
    t = pub1(f, p, "t002", NULL, "t002=none");
    assert_int_equal(t->part.status, PUB_EXPECT_FAILED);
    assert_int_equal(t->part.actual, 2);
    free(t);
    assert_int_equal(partition_close(p), 0);
}

static void test_ids_stored_once(void **state)
{
    fixture *f = *state;
    partition *p = open_p(f);
    assert_false(marked(f));
    tbatch *t = pub1(f, p, "a", "id-1", NULL);
    assert_true(marked(f)); /* made before the first id was stored */
    assert_int_equal(t->ev[0].offset, 0);
    assert_false(t->ev[0].duplicate);
    free(t);
    /* Same id, any topic of the partition: the original's offset. */
    t = pub1(f, p, "b", "id-1", NULL);
    assert_int_equal(t->part.status, 0);
    assert_true(t->ev[0].duplicate);
    assert_int_equal(t->ev[0].offset, 0);
    free(t);
    assert_int_equal(partition_end_offset(p), 1);
    /* Within one batch, and events without id are never duplicates. */
    const char *topics[] = {"a", "a", "a", "a"};
    const char *ids[] = {"x", NULL, "x", NULL};
    t = make(f, p, 4, topics, ids, 0, NULL);
    run(t);
    assert_int_equal(t->ev[0].offset, 1);
    assert_int_equal(t->ev[1].offset, 2);
    assert_true(t->ev[2].duplicate);
    assert_int_equal(t->ev[2].offset, 1);
    assert_int_equal(t->ev[3].offset, 3);
    assert_false(t->ev[3].duplicate);
    free(t);
    /* A retry of a stored expected-offset batch: duplicates, not a mismatch. */
    t = pub1(f, p, "a", "w-1", "a=3");
    assert_int_equal(t->part.status, 0);
    assert_int_equal(t->ev[0].offset, 4);
    free(t);
    t = pub1(f, p, "a", "w-1", "a=3");
    assert_int_equal(t->part.status, 0);
    assert_true(t->ev[0].duplicate);
    assert_int_equal(t->ev[0].offset, 4);
    free(t);
    /* A refused batch leaves no id behind: its retry is stored. */
    t = pub1(f, p, "a", "w-2", "a=0");
    assert_int_equal(t->part.status, PUB_EXPECT_FAILED);
    free(t);
    t = pub1(f, p, "a", "w-2", "a=4");
    assert_int_equal(t->part.status, 0);
    assert_false(t->ev[0].duplicate);
    assert_int_equal(t->ev[0].offset, 5);
    free(t);
    assert_int_equal(partition_close(p), 0);
}

/* The window expires on the partition's (injected) clock, and is rebuilt
 * from the log when the partition opens again: ids newer than the window
 * are recognised, older ones are not. */
static void test_window_expiry_and_rebuild(void **state)
{
    fixture *f = *state;
    partition *p = open_p(f);
    free(pub1(f, p, "a", "old", NULL)); /* offset 0 at T */
    atomic_fetch_add(&f->clock_ns, 40 * SEC);
    free(pub1(f, p, "a", "new", NULL)); /* offset 1 at T + 40 s */
    atomic_fetch_add(&f->clock_ns, 30 * SEC);
    /* T + 70 s: "old" (window 60 s) is forgotten, "new" is not. */
    tbatch *t = pub1(f, p, "a", "old", NULL);
    assert_false(t->ev[0].duplicate);
    assert_int_equal(t->ev[0].offset, 2);
    free(t);
    t = pub1(f, p, "a", "new", NULL);
    assert_true(t->ev[0].duplicate);
    assert_int_equal(t->ev[0].offset, 1);
    free(t);
    assert_int_equal(partition_close(p), 0);

    /* Reopened at T + 70 s: rebuilt from the records of the last 60 s. */
    p = open_p(f);
    t = pub1(f, p, "a", "new", NULL);
    assert_true(t->ev[0].duplicate);
    assert_int_equal(t->ev[0].offset, 1);
    free(t);
    t = pub1(f, p, "a", "old", NULL);
    assert_true(t->ev[0].duplicate);
    assert_int_equal(t->ev[0].offset, 2);
    free(t);
    assert_int_equal(partition_close(p), 0);
    /* Reopened two windows later: nothing is remembered. */
    atomic_fetch_add(&f->clock_ns, 120 * SEC);
    p = open_p(f);
    t = pub1(f, p, "a", "new", NULL);
    assert_false(t->ev[0].duplicate);
    assert_int_equal(t->ev[0].offset, 3);
    free(t);
    assert_int_equal(partition_close(p), 0);
}

/* The path of the partition's file `name`. */
static void pfile(const fixture *f, const char *name, char *out, size_t size)
{
    snprintf(out, size, "%s/p/%s", f->root, name);
}

/* Whether id is a duplicate in p now, at `offset`; stores it otherwise. */
static void expect_dup(fixture *f, partition *p, const char *id, uint64_t offset)
{
    tbatch *t = pub1(f, p, "a", id, NULL);
    assert_int_equal(t->part.status, 0);
    assert_true(t->ev[0].duplicate);
    assert_int_equal(t->ev[0].offset, offset);
    free(t);
}

/* A clean stop saves the window (dedup.snap); start-up loads it when it
 * fits the log, then reads only the records after it. A snapshot that is
 * damaged, covers more than the log holds, or names records the log does
 * not have is not used: the window comes from the log all the same. */
static void test_window_snapshot(void **state)
{
    fixture *f = *state;
    partition *p = open_p(f);
    free(pub1(f, p, "a", "s-0", NULL));
    free(pub1(f, p, "a", NULL, NULL));
    free(pub1(f, p, "a", "s-2", NULL));
    assert_int_equal(partition_close(p), 0);
    char snap[256];
    pfile(f, DEDUP_SNAPSHOT_NAME, snap, sizeof snap);
    size_t len = 0;
    uint8_t *saved = testfs_read_file(snap, &len);
    assert_non_null(saved);

    /* dedup_load itself, against this log (end offset 3). */
    char dir[256];
    snprintf(dir, sizeof dir, "%s/p", f->root);
    dedup *d;
    uint64_t covered = 99;
    assert_int_equal(dedup_create(&d, 60 * SEC, 1000), 0);
    assert_int_equal(dedup_load(d, fileio_posix(), dir, "p", 3, &covered), 0);
    assert_int_equal(covered, 3);
    assert_int_equal(dedup_count(d), 2);
    dedup_destroy(d);
    /* Saved under a smaller window or bound than the reader's: it lacks ids
     * that the log gives. */
    assert_int_equal(dedup_create(&d, 61 * SEC, 1000), 0);
    assert_int_equal(dedup_load(d, fileio_posix(), dir, "p", 3, &covered), PB_ECORRUPT);
    dedup_destroy(d);
    assert_int_equal(dedup_create(&d, 60 * SEC, 1001), 0);
    assert_int_equal(dedup_load(d, fileio_posix(), dir, "p", 3, &covered), PB_ECORRUPT);
    dedup_destroy(d);
    assert_int_equal(dedup_create(&d, 59 * SEC, 999), 0); /* smaller ones may use it */
    assert_int_equal(dedup_load(d, fileio_posix(), dir, "p", 3, &covered), 0);
    dedup_destroy(d);
    /* It covers more than the log holds (a log that lost records). */
    assert_int_equal(dedup_create(&d, 60 * SEC, 1000), 0);
    assert_int_equal(dedup_load(d, fileio_posix(), dir, "p", 2, &covered), PB_ECORRUPT);
    assert_int_equal(dedup_count(d), 0);
    dedup_destroy(d);
    /* Any byte damaged: the CRC says so. */
    for (size_t i = 0; i < len; i += 7) {
        saved[i] ^= 0x10;
        testfs_write_file(snap, saved, len);
        assert_int_equal(dedup_create(&d, 60 * SEC, 1000), 0);
        assert_int_equal(dedup_load(d, fileio_posix(), dir, "p", 3, &covered), PB_ECORRUPT);
        assert_int_equal(dedup_count(d), 0);
        dedup_destroy(d);
        saved[i] ^= 0x10;
    }
    testfs_write_file(snap, saved, len - 1); /* cut */
    assert_int_equal(dedup_create(&d, 60 * SEC, 1000), 0);
    assert_int_equal(dedup_load(d, fileio_posix(), dir, "p", 3, &covered), PB_ECORRUPT);
    dedup_destroy(d);

    /* Damaged at start-up: rebuilt from the log, ids recognised. */
    saved[len / 2] ^= 1;
    testfs_write_file(snap, saved, len);
    saved[len / 2] ^= 1;
    p = open_p(f);
    expect_dup(f, p, "s-0", 0);
    expect_dup(f, p, "s-2", 2);
    /* Stale: the snapshot of offset 3, records appended after it and no
     * clean stop that rewrote it (kill -9: put the old one back). */
    free(pub1(f, p, "a", "s-3", NULL));
    assert_int_equal(partition_close(p), 0);
    testfs_write_file(snap, saved, len);
    p = open_p(f);
    expect_dup(f, p, "s-3", 3); /* read from the log after the snapshot */
    expect_dup(f, p, "s-0", 0); /* from the snapshot */
    free(pub1(f, p, "a", "s-4", NULL));
    assert_int_equal(partition_close(p), 0);
    free(saved);
    saved = testfs_read_file(snap, &len);
    assert_non_null(saved);

    /* A snapshot that is sound but not this log's (the newest id altered
     * and the CRC made anew): the log's record there has another id. */
    uint8_t *other = malloc(len);
    assert_non_null(other);
    memcpy(other, saved, len);
    /* The newest entry's id is its last bytes before the CRC: "s-4". */
    assert_memory_equal(other + len - 4 - 3, "s-4", 3);
    other[len - 4 - 1] = '9';
    uint32_t crc = crc32c(0, other, len - 4);
    for (int i = 0; i < 4; i++)
        other[len - 4 + i] = (uint8_t)(crc >> (8 * i));
    testfs_write_file(snap, other, len);
    assert_int_equal(dedup_create(&d, 60 * SEC, 1000), 0);
    assert_int_equal(dedup_load(d, fileio_posix(), dir, "p", 5, &covered), PB_ECORRUPT);
    assert_int_equal(dedup_count(d), 0);
    dedup_destroy(d);
    p = open_p(f); /* rebuilt: "s-9" was never stored, "s-4" was */
    tbatch *t = pub1(f, p, "a", "s-9", NULL);
    assert_false(t->ev[0].duplicate);
    assert_int_equal(t->ev[0].offset, 5);
    free(t);
    expect_dup(f, p, "s-4", 4);
    assert_int_equal(partition_close(p), 0);
    free(other);
    free(saved);
}

/* A snapshot with no id (every id expired before the clean stop) is tied
 * to its log by the receive time of the last record it covers: over
 * another log that grew past it, it is not used, and the other log's ids
 * are found (checking only `covered` missed them). */
static void test_window_snapshot_without_ids(void **state)
{
    fixture *f = *state;
    char snap[256], dir[256];
    pfile(f, DEDUP_SNAPSHOT_NAME, snap, sizeof snap);
    snprintf(dir, sizeof dir, "%s/p", f->root);
    int64_t t0 = atomic_load(&f->clock_ns);
    /* The first log: 0 and 1 at T (1 with an id), 2 at T + 70 s, when the
     * id has left the 60 s window: its snapshot has no id, covers 3. */
    partition *p = open_p(f);
    free(pub1(f, p, "a", NULL, NULL));
    free(pub1(f, p, "a", "x-1", NULL));
    atomic_fetch_add(&f->clock_ns, 70 * SEC);
    free(pub1(f, p, "a", NULL, NULL));
    assert_int_equal(partition_close(p), 0);
    size_t len = 0;
    uint8_t *first = testfs_read_file(snap, &len);
    assert_non_null(first);
    /* Another log in its place, at T + 1 s, 4 records, an id at 2. */
    testfs_rmrf(dir);
    atomic_store(&f->clock_ns, t0 + SEC);
    p = open_p(f);
    free(pub1(f, p, "a", NULL, NULL));
    free(pub1(f, p, "a", NULL, NULL));
    free(pub1(f, p, "a", "w-2", NULL));
    free(pub1(f, p, "a", NULL, NULL));
    assert_int_equal(partition_close(p), 0);
    testfs_write_file(snap, first, len); /* the first log's snapshot over it */
    free(first);
    dedup *d;
    uint64_t covered = 99;
    assert_int_equal(dedup_create(&d, 60 * SEC, 1000), 0);
    assert_int_equal(dedup_load(d, fileio_posix(), dir, "p", 4, &covered), PB_ECORRUPT);
    dedup_destroy(d);
    p = open_p(f); /* the window from the log: w-2 is in it */
    expect_dup(f, p, "w-2", 2);
    assert_int_equal(partition_close(p), 0);
}

/* The window itself: bounded entries (the oldest forgotten first), memory
 * given back once ids expire, rollback of a take that was not stored (the
 * ids it evicted come back, as far as the ring's slack of 64 holds them). */
static void test_window_bounds(void **state)
{
    (void)state;
    dedup *d;
    assert_int_equal(dedup_create(&d, 10 * SEC, 100), 0);
    assert_int_equal(dedup_count(d), 0);
    size_t empty = dedup_memory(d);
    char id[32];
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(id, sizeof id, "id-%d", i);
        assert_int_equal(dedup_add(d, (const uint8_t *)id, (size_t)n, (uint64_t)i, i), 0);
    }
    assert_int_equal(dedup_count(d), 100);
    assert_int_equal(dedup_evicted(d), 900);
    assert_true(dedup_memory(d) <= empty + 164 * (DEDUP_SLOT_BYTES + 4 + 8) + 512 * sizeof(uint64_t));
    uint64_t off;
    assert_int_equal(dedup_find(d, (const uint8_t *)"id-899", 6, &off), 0);
    assert_int_equal(dedup_find(d, (const uint8_t *)"id-900", 6, &off), 1);
    assert_int_equal(off, 900);
    /* Rollback from offset 950: those ids are gone, the rest stays, and the
     * 50 they evicted (850..899) come back. */
    dedup_truncate(d, 950);
    assert_int_equal(dedup_count(d), 100);
    assert_int_equal(dedup_evicted(d), 850);
    assert_int_equal(dedup_find(d, (const uint8_t *)"id-950", 6, &off), 0);
    assert_int_equal(dedup_find(d, (const uint8_t *)"id-949", 6, &off), 1);
    assert_int_equal(dedup_find(d, (const uint8_t *)"id-850", 6, &off), 1);
    assert_int_equal(off, 850);
    assert_int_equal(dedup_find(d, (const uint8_t *)"id-849", 6, &off), 0);
    /* Expiry: times 850..949; at 10 s + 925 ns the first 75 go. */
    dedup_expire(d, 10 * SEC + 925);
    assert_int_equal(dedup_count(d), 25);
    assert_int_equal(dedup_find(d, (const uint8_t *)"id-924", 6, &off), 0);
    assert_int_equal(dedup_find(d, (const uint8_t *)"id-925", 6, &off), 1);
    dedup_expire(d, 20 * SEC);
    assert_int_equal(dedup_count(d), 0);
    assert_int_equal(dedup_memory(d), empty);
    dedup_destroy(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_expected_offsets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expected_offset_of_cold_topic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ids_stored_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_window_expiry_and_rebuild, setup, teardown),
        cmocka_unit_test_setup_teardown(test_window_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_window_snapshot_without_ids, setup, teardown),
        cmocka_unit_test(test_window_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
