/*
 * dedup_bench - what event ids cost the daemon's CPU in `make bench`'s
 * "publish 100 B with ids" workload, without the daemon around it: the
 * writer's admission of a take (expect_admit, expect.c) with and without a
 * dedup window, and the loop thread's hash of each id (dedup_id_hash, in
 * ingest.c), over the ids the bench publisher sends (PREFIX-<sequence>,
 * every one new) in takes of --take events, with the window at its
 * default bound (100,000 ids: past the first 100,000 events every
 * admission also evicts the oldest id).
 *
 * Prints ns per event for each run and the medians:
 *   hash    dedup_id_hash of the id (loop thread)
 *   admit   expect_admit with a window (writer thread)
 *   plain   expect_admit without one (ids ignored: the plain path)
 *   ids     admit - plain: the window's cost on the writer
 * and checks that nothing was taken for a duplicate and that the window
 * holds exactly its bound. Times are the thread's CPU time. Not a test:
 * timings depend on the machine and its load.
 *
 *   build/bench/dedup_bench [-r RUNS] [-n EVENTS] [-t TAKE] [-m MAX_ENTRIES]
 */
#include "broker.h"
#include "dedup.h"
#include "expect.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PREFIX    "bench12345-"
#define ID_MAX    32
#define WINDOW_NS (120ll * 1000000000ll)

/* The thread's CPU time: on a shared machine, time spent descheduled does
 * not count (cache and memory contention still do). */
static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* One take's worth of events: ids in `idbuf`, one part listing them all. */
typedef struct take {
    uint32_t n;
    uint8_t *idbuf;
    pub_event *events;
    uint32_t *index;
    pub_batch batch;
    pub_part part;
    log_entry *entries;
    live_record *recs;
} take;

static int take_init(take *t, uint32_t n)
{
    memset(t, 0, sizeof *t);
    t->n = n;
    t->idbuf = malloc((size_t)n * ID_MAX);
    t->events = calloc(n, sizeof *t->events);
    t->index = malloc((size_t)n * sizeof *t->index);
    t->entries = malloc((size_t)n * sizeof *t->entries);
    t->recs = malloc((size_t)n * sizeof *t->recs);
    if (!t->idbuf || !t->events || !t->index || !t->entries || !t->recs)
        return -1;
    for (uint32_t k = 0; k < n; k++)
        t->index[k] = k;
    t->batch.events = t->events;
    t->batch.nevents = n;
    t->batch.parts = &t->part;
    t->batch.nparts = 1;
    t->part.batch = &t->batch;
    t->part.events = t->index;
    t->part.count = n;
    return 0;
}

static void take_free(take *t)
{
    free(t->idbuf);
    free(t->events);
    free(t->index);
    free(t->entries);
    free(t->recs);
}

/* Fills the take with the ids of events first.. (as the bench publisher
 * writes them); ns spent hashing them into *hash_ns. */
static void take_fill(take *t, uint64_t first, int64_t *hash_ns)
{
    for (uint32_t k = 0; k < t->n; k++) {
        uint8_t *id = t->idbuf + (size_t)k * ID_MAX;
        int len = snprintf((char *)id, ID_MAX, PREFIX "%llu", (unsigned long long)(first + k));
        t->events[k] = (pub_event){.data = id,
                                   .len = (uint32_t)len,
                                   .topic = id,
                                   .topic_len = 5,
                                   .id = id,
                                   .id_len = (uint8_t)len};
    }
    int64_t t0 = now_ns();
    for (uint32_t k = 0; k < t->n; k++)
        t->events[k].id_hash = dedup_id_hash(t->events[k].id, t->events[k].id_len);
    *hash_ns += now_ns() - t0;
}

typedef struct result {
    double hash, admit, plain;
    size_t memory; /* the window's bytes at the end */
} result;

/* One run of `events` events in takes: 0, or -1 on a wrong answer. */
static int run(take *t, uint64_t events, uint32_t max_entries, result *out)
{
    dedup *d = NULL;
    if (dedup_create(&d, WINDOW_NS, max_entries) < 0)
        return -1;
    int64_t hash_ns = 0, admit_ns = 0, plain_ns = 0;
    uint64_t stored = 0;
    int bad = 0;
    for (uint64_t first = 0; first < events; first += t->n) {
        take_fill(t, first, &hash_ns);
        expect_take x = {.dedup = NULL, .next = first, .time_ns = (int64_t)first};
        int64_t t0 = now_ns();
        size_t n = expect_admit(&x, &t->part, t->entries, t->recs);
        int64_t t1 = now_ns();
        x.dedup = d;
        n = expect_admit(&x, &t->part, t->entries, t->recs);
        int64_t t2 = now_ns();
        /* Stored, as the daemon's take is once synced (not timed: plain
         * takes pay the same loop): without it every add would find the
         * slot it takes pushed out by an id not yet stored, grow the ring
         * to twice the bound and read that cold slot's time, which is not
         * the daemon's state. */
        expect_commit(&x, &t->part);
        plain_ns += t1 - t0;
        admit_ns += t2 - t1;
        stored += n;
        bad |= n != t->n || x.ids != t->n;
    }
    uint64_t total = (events + t->n - 1) / t->n * t->n;
    uint64_t want = total < max_entries ? total : max_entries;
    if (bad || stored != total || dedup_count(d) != want) {
        fprintf(stderr, "dedup_bench: wrong answer: stored %llu, window %zu (want %llu)\n",
                (unsigned long long)stored, dedup_count(d), (unsigned long long)want);
        dedup_destroy(d);
        return -1;
    }
    out->memory = dedup_memory(d);
    dedup_destroy(d);
    out->hash = (double)hash_ns / (double)stored;
    out->admit = (double)admit_ns / (double)stored;
    out->plain = (double)plain_ns / (double)stored;
    return 0;
}

int main(int argc, char **argv)
{
    int runs = 5;
    uint64_t events = 4000000;
    uint32_t take_n = 8000, max_entries = 100000;
    int c;
    while ((c = getopt(argc, argv, "r:n:t:m:")) != -1) {
        switch (c) {
        case 'r': runs = atoi(optarg); break;
        case 'n': events = strtoull(optarg, NULL, 10); break;
        case 't': take_n = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'm': max_entries = (uint32_t)strtoul(optarg, NULL, 10); break;
        default:
            fprintf(stderr, "usage: dedup_bench [-r RUNS] [-n EVENTS] [-t TAKE] [-m MAX_ENTRIES]\n");
            return 2;
        }
    }
    if (runs < 1 || runs > 100 || events == 0 || take_n == 0 || take_n > 1000000 ||
        max_entries == 0) {
        fprintf(stderr, "dedup_bench: -r 1..100, -n > 0, -t 1..1000000, -m > 0\n");
        return 2;
    }
    take t;
    if (take_init(&t, take_n) < 0) {
        fprintf(stderr, "dedup_bench: out of memory for a take of %u events\n", take_n);
        return 1;
    }
    double *h = calloc((size_t)runs, sizeof *h), *a = calloc((size_t)runs, sizeof *a),
           *p = calloc((size_t)runs, sizeof *p), *x = calloc((size_t)runs, sizeof *x);
    if (!h || !a || !p || !x)
        return 1;
    printf("%llu events with ids " PREFIX "N in takes of %u, window bound %u ids\n",
           (unsigned long long)events, take_n, max_entries);
    for (int r = 0; r < runs; r++) {
        result res;
        if (run(&t, events, max_entries, &res) < 0)
            return 1;
        h[r] = res.hash;
        a[r] = res.admit;
        p[r] = res.plain;
        x[r] = res.admit - res.plain;
        printf("run %d: ns/event: hash %.1f, admit %.1f, plain %.1f, ids %.1f (window %.1f MB)\n",
               r + 1, h[r], a[r], p[r], x[r], (double)res.memory / 1e6);
    }
    printf("median ns/event: hash %.1f, admit %.1f, plain %.1f, ids (admit - plain) %.1f\n",
           median(h, runs), median(a, runs), median(p, runs), median(x, runs));
    take_free(&t);
    free(h);
    free(a);
    free(p);
    free(x);
    return 0;
}
