/*
 * matcher_bench - the topic matching of `make bench`'s "100k topics +
 * 1,000 subscriptions" workload, without the daemon around it: 100,000
 * distinct topics PREFIX.00000 .. PREFIX.99999 against 1,000
 * subscriptions, subscription j with the pattern `protobus bench
 * --distinct` gives it (PREFIX\.[0-9]*jjj: topics whose index ends in j).
 *
 *   (a) today's fan-out: one PCRE2 match per subscription per topic
 *       (patterns_match_shared, subscription by subscription over chunks of
 *       256 topics, as fanout.c's match_misses does);
 *   (b) the combined matcher (matcher.h), after compaction; also how long
 *       adding the 1,000 subscriptions and compacting took, and the cost
 *       per topic before compaction (every subscription young);
 *   (c) the subscriptions added by one thread while another compacts in
 *       rounds, as the daemon would: how long after the last add the set
 *       is compacted.
 *
 * Each run checks that both find exactly one subscription per topic, the
 * right one. Prints every run and the medians. Not a test: timings depend
 * on the machine and its load.
 *
 *   build/bench/matcher_bench [-r RUNS] [-t TOPICS] [-s SUBS]
 */
#include "matcher.h"
#include "patterns.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PREFIX "bench12345"
#define CHUNK  256

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
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

typedef struct workload {
    unsigned ntopics, nsubs, digits;
    char **topic;
    size_t *len;
    char **pattern;
} workload;

static unsigned expected_sub(const workload *w, unsigned t)
{
    unsigned mod = 1;
    for (unsigned d = 0; d < w->digits; d++)
        mod *= 10;
    return t % mod;
}

/* (a): seconds to match every topic, or < 0 on a wrong answer. */
static double run_pcre(const workload *w)
{
    pattern_set **ps = calloc(w->nsubs, sizeof *ps);
    uint64_t *rows = calloc(CHUNK * ((w->nsubs + 63) / 64), sizeof *rows);
    pcre2_match_data *md = patterns_match_data_create();
    char err[256];
    double secs = -1;
    if (!ps || !rows || !md)
        goto out;
    for (unsigned j = 0; j < w->nsubs; j++) {
        const char *p = w->pattern[j];
        if (patterns_compile(&p, 1, &ps[j], err, sizeof err) != 0) {
            fprintf(stderr, "%s\n", err);
            goto out;
        }
    }
    size_t words = (w->nsubs + 63) / 64;
    unsigned long long found = 0, wrong = 0;
    double t0 = now_s();
    for (unsigned base = 0; base < w->ntopics; base += CHUNK) {
        unsigned m = w->ntopics - base < CHUNK ? w->ntopics - base : CHUNK;
        memset(rows, 0, m * words * sizeof *rows);
        for (unsigned j = 0; j < w->nsubs; j++)
            for (unsigned i = 0; i < m; i++)
                if (patterns_match_shared(ps[j], w->topic[base + i], w->len[base + i], md))
                    rows[i * words + j / 64] |= 1ull << (j % 64);
        for (unsigned i = 0; i < m; i++) {
            unsigned want = expected_sub(w, base + i);
            for (size_t k = 0; k < words; k++) {
                found += (unsigned long long)__builtin_popcountll(rows[i * words + k]);
                if (k == want / 64 && !(rows[i * words + k] >> (want % 64) & 1))
                    wrong++;
            }
        }
    }
    secs = now_s() - t0;
    if (found != w->ntopics || wrong) {
        fprintf(stderr, "PCRE2: %llu matches, %llu wrong\n", found, wrong);
        secs = -1;
    }
out:
    for (unsigned j = 0; ps && j < w->nsubs; j++)
        patterns_free(ps[j]);
    free(ps);
    free(rows);
    pcre2_match_data_free(md);
    return secs;
}

/* Matches topics [0, n) in batches of `batch` (1: matcher_match) and
 * checks every answer. */
static int match_all(matcher_reader *r, const workload *w, unsigned n, unsigned batch)
{
    matcher_result res[MATCHER_BATCH_MAX];
    for (unsigned base = 0; base < n; base += batch) {
        unsigned m = n - base < batch ? n - base : batch;
        int rc = batch == 1 ? matcher_match(r, w->topic[base], w->len[base], res)
                            : matcher_match_batch(r, (const char *const *)w->topic + base,
                                                  w->len + base, m, res);
        if (rc != 0)
            return -1;
        for (unsigned i = 0; i < m; i++) {
            if (res[i].n != 1 || res[i].ids[0] != expected_sub(w, base + i) || res[i].nbreaches) {
                fprintf(stderr, "matcher: wrong answer for %s\n", w->topic[base + i]);
                return -1;
            }
        }
    }
    return 0;
}

typedef struct combined {
    double add_s, compact_s, young_per_topic_s, young_batch_per_topic_s, match_s, match_batch_s;
    size_t shards, shard_bytes, pcre_bytes;
} combined;

/* (b). Returns 0, or -1 on a wrong answer or an error. */
static int run_combined(const workload *w, combined *out)
{
    matcher_set *set = NULL;
    matcher_reader *r = NULL;
    char err[256];
    int rc = -1;
    if (matcher_set_create(&set, NULL) != 0 || matcher_reader_create(set, &r) != 0)
        goto out;
    double t0 = now_s();
    for (unsigned j = 0; j < w->nsubs; j++) {
        const char *p = w->pattern[j];
        if (matcher_set_add(set, j, &p, 1, err, sizeof err) != 0) {
            fprintf(stderr, "%s\n", err);
            goto out;
        }
    }
    out->add_s = now_s() - t0;
    /* Before compaction: a sample of the topics. */
    unsigned sample = w->ntopics < 10000 ? w->ntopics : 10000;
    t0 = now_s();
    if (match_all(r, w, sample, 1) < 0)
        goto out;
    out->young_per_topic_s = (now_s() - t0) / sample;
    t0 = now_s();
    if (match_all(r, w, sample, MATCHER_BATCH_MAX) < 0)
        goto out;
    out->young_batch_per_topic_s = (now_s() - t0) / sample;
    t0 = now_s();
    while (matcher_set_compact_wanted(set))
        if (matcher_set_compact(set) != 0)
            goto out;
    out->compact_s = now_s() - t0;
    t0 = now_s();
    if (match_all(r, w, w->ntopics, 1) < 0)
        goto out;
    out->match_s = now_s() - t0;
    t0 = now_s();
    if (match_all(r, w, w->ntopics, MATCHER_BATCH_MAX) < 0)
        goto out;
    out->match_batch_s = now_s() - t0;
    matcher_stats st;
    matcher_set_stats(set, &st);
    out->shards = st.shards;
    out->shard_bytes = st.shard_bytes;
    out->pcre_bytes = st.pcre_bytes;
    rc = 0;
out:
    matcher_reader_destroy(r);
    matcher_set_destroy(set);
    return rc;
}

typedef struct compactor {
    matcher_set *set;
    atomic_int adding;
    int rounds, failed;
} compactor;

static void *compact_loop(void *arg)
{
    compactor *c = arg;
    const struct timespec ms = {0, 1000000};
    while (atomic_load(&c->adding) || matcher_set_compact_wanted(c->set)) {
        if (!matcher_set_compact_wanted(c->set)) {
            nanosleep(&ms, NULL);
            continue;
        }
        if (matcher_set_compact(c->set) != 0) {
            c->failed = 1;
            break;
        }
        c->rounds++;
    }
    return NULL;
}

/* (c): seconds from the last add to a compacted set. */
static double run_background(const workload *w, double *add_s)
{
    compactor c = {0};
    pthread_t th;
    char err[256];
    double lag = -1;
    if (matcher_set_create(&c.set, NULL) != 0)
        return -1;
    atomic_init(&c.adding, 1);
    if (pthread_create(&th, NULL, compact_loop, &c) != 0) {
        matcher_set_destroy(c.set);
        return -1;
    }
    double t0 = now_s();
    for (unsigned j = 0; j < w->nsubs; j++) {
        const char *p = w->pattern[j];
        if (matcher_set_add(c.set, j, &p, 1, err, sizeof err) != 0) {
            fprintf(stderr, "%s\n", err);
            break;
        }
    }
    double t1 = now_s();
    atomic_store(&c.adding, 0);
    pthread_join(th, NULL);
    *add_s = t1 - t0;
    if (!c.failed)
        lag = now_s() - t1;
    matcher_set_destroy(c.set);
    return lag;
}

int main(int argc, char **argv)
{
    int runs = 3, opt;
    workload w = {.ntopics = 100000, .nsubs = 1000};
    while ((opt = getopt(argc, argv, "r:t:s:")) != -1) {
        switch (opt) {
        case 'r':
            runs = atoi(optarg);
            break;
        case 't':
            w.ntopics = (unsigned)atoi(optarg);
            break;
        case 's':
            w.nsubs = (unsigned)atoi(optarg);
            break;
        default:
            fprintf(stderr, "usage: %s [-r RUNS] [-t TOPICS] [-s SUBS (a power of 10)]\n", argv[0]);
            return 2;
        }
    }
    unsigned mod = 1;
    while (mod < w.nsubs)
        mod *= 10, w.digits++;
    if (runs < 1 || runs > 99 || w.ntopics < 1 || mod != w.nsubs || w.nsubs > w.ntopics) {
        fprintf(stderr, "matcher_bench: -r 1..99, -s a power of 10, at most -t\n");
        return 2;
    }
    unsigned width = 1;
    for (unsigned v = w.ntopics - 1; v >= 10; v /= 10)
        width++;
    w.topic = calloc(w.ntopics, sizeof *w.topic);
    w.len = calloc(w.ntopics, sizeof *w.len);
    w.pattern = calloc(w.nsubs, sizeof *w.pattern);
    if (!w.topic || !w.len || !w.pattern)
        return 1;
    for (unsigned t = 0; t < w.ntopics; t++) {
        char buf[64];
        int n = snprintf(buf, sizeof buf, "%s.%0*u", PREFIX, (int)width, t);
        w.topic[t] = strdup(buf);
        w.len[t] = (size_t)n;
    }
    for (unsigned j = 0; j < w.nsubs; j++) {
        char buf[64];
        snprintf(buf, sizeof buf, "%s\\.[0-9]*%0*u", PREFIX, (int)w.digits, j);
        w.pattern[j] = strdup(buf);
    }
    printf("matcher_bench: %u topics x %u subscriptions (pattern %s), %d run(s)\n", w.ntopics,
           w.nsubs, w.pattern[w.nsubs - 1], runs);
    double a[99], b[99], bb[99], add[99], comp[99], young[99], youngb[99], badd[99], lag[99];
    combined c = {0};
    for (int i = 0; i < runs; i++) {
        a[i] = run_pcre(&w);
        if (a[i] < 0 || run_combined(&w, &c) < 0)
            return 1;
        lag[i] = run_background(&w, &badd[i]);
        if (lag[i] < 0)
            return 1;
        b[i] = c.match_s;
        bb[i] = c.match_batch_s;
        add[i] = c.add_s;
        comp[i] = c.compact_s;
        young[i] = c.young_per_topic_s;
        youngb[i] = c.young_batch_per_topic_s;
        printf("run %d: (a) %.3f s | (b) %.3f s, batches %.3f s | add %.2f s, compact %.2f s, "
               "before compaction %.1f us/topic, batches %.1f | (c) add %.2f s, compacted %.2f s "
               "after\n",
               i + 1, a[i], b[i], bb[i], add[i], comp[i], young[i] * 1e6, youngb[i] * 1e6, badd[i],
               lag[i]);
    }
    double ma = median(a, runs), mb = median(b, runs), mbb = median(bb, runs);
    printf("median (a) PCRE2 per pattern:     %9.0f topics/s (%.2f us/topic)\n", w.ntopics / ma,
           ma / w.ntopics * 1e6);
    printf("median (b) combined, one by one:  %9.0f topics/s (%.2f us/topic), %.0fx\n",
           w.ntopics / mb, mb / w.ntopics * 1e6, ma / mb);
    printf("median (b) combined, batches 256: %9.0f topics/s (%.2f us/topic), %.0fx\n",
           w.ntopics / mbb, mbb / w.ntopics * 1e6, ma / mbb);
    printf("median: adding %u subscriptions %.2f s, compaction %.2f s; before compaction %.1f "
           "us/topic one by one, %.1f in batches\n",
           w.nsubs, median(add, runs), median(comp, runs), median(young, runs) * 1e6,
           median(youngb, runs) * 1e6);
    printf("median: with a background compactor, adding took %.2f s and the set was compacted "
           "%.2f s after the last add\n",
           median(badd, runs), median(lag, runs));
    printf("memory: %zu shards, %zu KiB of Hyperscan databases (%zu B/pattern), %zu KiB of PCRE2 "
           "code\n",
           c.shards, c.shard_bytes / 1024, c.shard_bytes / w.nsubs, c.pcre_bytes / 1024);
    for (unsigned t = 0; t < w.ntopics; t++)
        free(w.topic[t]);
    for (unsigned j = 0; j < w.nsubs; j++)
        free(w.pattern[j]);
    free(w.topic);
    free(w.len);
    free(w.pattern);
    return 0;
}
