/*
 * test_mirror_track - how a mirror reads its partitions' files
 * (mirror_track.c), without NATS: a real store with real partitions
 * (writer threads, segment files in a temp dir, idle after 20 ms), and a
 * mirror's partition list read round robin as the mirror's thread does.
 *
 * Covered: a mirror of more partitions than MIRROR_READERS reads every
 * event once, in offset order per partition, while never holding more
 * than MIRROR_READERS readers; partitions whose writers have gone idle
 * (files closed) are read like any other; a partition with nothing new
 * opens no reader, and one that gets a new event is read again from where
 * it was.
 *
 * Waits are on conditions (done callbacks, writers ending) with generous
 * bounds that are never reached when things work.
 */
#include "mirror_internal.h"
#include "partition.h"
#include "pb_errors.h"
#include "store.h"
#include "testfs.h"
#include "wire.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define WAIT_MS 30000 /* bound on every wait; never reached when it works */
#define IDLE_MS 20    /* the partitions' writers end after this long idle */
#define NPARTS  (2 * MIRROR_READERS + 3)
#define EVENTS  5 /* per partition */

typedef struct fixture {
    char root[64];
    store *st;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pb_mirror_config cfg;
    mirror m;
} fixture;

static int part_opts(void *ctx, const char *name, partition_options *o)
{
    (void)ctx;
    (void)name;
    *o = (partition_options){
        .fsync = PARTITION_FSYNC_NEVER, /* durability is test_partition's subject */
        .topic_history = 4,
        .idle_ms = IDLE_MS,
    };
    return 0;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    strcpy(f->root, "/tmp/test_mirror_track.XXXXXX");
    if (!mkdtemp(f->root))
        return -1;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    if (store_open(&f->st, f->root, part_opts, f) != 0)
        return -1;
    f->cfg = (pb_mirror_config){.name = "m", .hold_retention = true};
    f->m = (mirror){.cfg = &f->cfg, .store = f->st, .data_dir = f->root};
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    for (size_t i = 0; i < f->m.n_parts; i++) {
        mirror_part_close(&f->m, f->m.parts[i]);
        free(f->m.parts[i]);
    }
    free(f->m.parts);
    assert_int_equal(store_close(f->st), 0);
    testfs_rmrf(f->root);
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->cond);
    free(f);
    return 0;
}

static void on_done(pub_part *part)
{
    fixture *f = part->batch->conn;
    pthread_mutex_lock(&f->lock);
    atomic_fetch_sub(&part->batch->pending, 1);
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

/* Publishes one event (topic "t.<name>") to partition `name` and waits
 * until it is stored; returns its offset. */
static uint64_t publish(fixture *f, const char *name)
{
    partition *p;
    assert_int_equal(store_get(f->st, name, &p), 0);
    char topic[32];
    snprintf(topic, sizeof topic, "t.%s", name);
    uint8_t bytes[64];
    size_t len = wire_put_len_field(bytes, 1, topic, strlen(topic));
    pub_event ev = {.data = bytes,
                    .len = (uint32_t)len,
                    .topic = bytes + 2,
                    .topic_len = (uint32_t)strlen(topic),
                    .offset = UINT64_MAX};
    uint32_t idx = 0;
    pub_batch b = {.done = on_done, .conn = f, .nevents = 1, .events = &ev, .nparts = 1};
    pub_part part = {.batch = &b, .partition = p, .events = &idx, .count = 1};
    b.parts = &part;
    b.bytes = bytes;
    b.bytes_len = len;
    atomic_init(&b.pending, 1);
    partition_submit(p, &part);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += WAIT_MS / 1000;
    pthread_mutex_lock(&f->lock);
    while (atomic_load(&b.pending) != 0)
        assert_int_equal(pthread_cond_timedwait(&f->cond, &f->lock, &ts), 0);
    pthread_mutex_unlock(&f->lock);
    assert_int_equal(part.status, 0);
    return ev.offset;
}

/* Waits until no partition's writer runs: every one closed its files. */
static void wait_all_idle(fixture *f)
{
    partition **list = NULL;
    size_t n = 0;
    assert_int_equal(store_list(f->st, &list, &n), 0);
    for (int waited = 0;; waited += 5) {
        size_t running = 0;
        for (size_t i = 0; i < n; i++)
            running += partition_writer_running(list[i]) != 0;
        if (running == 0)
            break;
        assert_true(waited < WAIT_MS);
        usleep(5000);
    }
    free(list);
}

/* The mirror's view of partition `name`, from offset 0. */
static void add_part(fixture *f, const char *name)
{
    partition *p;
    assert_int_equal(store_get(f->st, name, &p), 0);
    mpart *mp = calloc(1, sizeof *mp);
    assert_non_null(mp);
    snprintf(mp->name, sizeof mp->name, "%s", name);
    mp->p = p;
    mp->fresh = true;
    mp->first_slot = mp->last_slot = NO_SLOT;
    mirror *m = &f->m;
    m->parts = realloc(m->parts, (m->n_parts + 1) * sizeof *m->parts);
    assert_non_null(m->parts);
    m->parts[m->n_parts++] = mp;
}

static size_t readers_open(const mirror *m)
{
    size_t n = 0;
    for (size_t i = 0; i < m->n_parts; i++)
        n += m->parts[i]->r != NULL;
    return n;
}

/* Round robin over the partitions, up to `per_turn` events each turn (as
 * the mirror's sender does), until none has anything: counts the events
 * read into got[], checking offsets come in order and the readers stay
 * within bounds. */
static void read_all(fixture *f, int per_turn, uint64_t *got)
{
    mirror *m = &f->m;
    for (int rounds = 0;; rounds++) {
        assert_true(rounds < 1000);
        size_t handled = 0;
        for (size_t i = 0; i < m->n_parts; i++) {
            for (int j = 0; j < per_turn; j++) {
                pb_record rec;
                int rc = mirror_part_next(m, m->parts[i], &rec);
                assert_true(m->nreaders <= MIRROR_READERS);
                assert_int_equal(readers_open(m), m->nreaders);
                if (rc != 0) {
                    assert_int_equal(rc, PB_EEOF);
                    break;
                }
                assert_int_equal(rec.offset, got[i]);
                got[i]++;
                handled++;
            }
        }
        if (handled == 0)
            return;
    }
}

static void test_readers_bounded_idle_partitions_read(void **state)
{
    fixture *f = *state;
    char name[16];
    for (int k = 0; k < EVENTS; k++)
        for (int i = 0; i < NPARTS; i++) {
            snprintf(name, sizeof name, "p%02d", i);
            assert_int_equal(publish(f, name), (uint64_t)k);
        }
    for (int i = 0; i < NPARTS; i++) {
        snprintf(name, sizeof name, "p%02d", i);
        add_part(f, name);
    }
    /* Every writer has closed its files: the mirror reads them anyway. */
    wait_all_idle(f);

    uint64_t got[NPARTS] = {0};
    read_all(f, 2, got);
    for (int i = 0; i < NPARTS; i++)
        assert_int_equal(got[i], EVENTS);
    assert_int_equal(f->m.nreaders, MIRROR_READERS);

    /* Nothing new: a round over every partition opens no reader. */
    for (size_t i = 0; i < f->m.n_parts; i++)
        mirror_part_close(&f->m, f->m.parts[i]);
    assert_int_equal(f->m.nreaders, 0);
    read_all(f, 2, got);
    assert_int_equal(f->m.nreaders, 0);

    /* One new event in a partition whose reader was closed: read from
     * where the mirror was, and only that reader opened. */
    assert_int_equal(publish(f, "p03"), EVENTS);
    wait_all_idle(f);
    read_all(f, 2, got);
    assert_int_equal(got[3], EVENTS + 1);
    assert_int_equal(f->m.nreaders, 1);
    assert_non_null(f->m.parts[3]->r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_readers_bounded_idle_partitions_read, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
