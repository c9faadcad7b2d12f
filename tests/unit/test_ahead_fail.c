/*
 * test_ahead_fail - the failure paths of a take A whose next take B was
 * admitted ahead (server/partition_ahead.c), over the simulated disk
 * (tests/lib/simio: its fault injection, its write and sync hooks, its
 * power loss), through the real partition writer; B admitted by the
 * helper thread (A synced in line) or by the writer itself (A a pipelined
 * append with direct writes), A's first write held until it was:
 *   - ENOSPC in the middle of A's append: neither take acked, neither
 *     take's ids left in the dedup window, B back in the queue and refused
 *     with the full disk (-ENOSPC); no resume while the free space probe
 *     says the disk is full; once space is back (the upkeep's resume,
 *     issue 14) a retry of every refused event is stored once: the records
 *     of A that reached the disk whole (kept by the resume, their ids put
 *     back in the window) are acked as duplicates of themselves,
 *     everything else is stored, never as a duplicate of something not
 *     stored (JetStream's PR #6415);
 *   - the free space falling below min_free_bytes while A is written: A
 *     stored and acked, B refused up front (-ENOSPC), its ids out of the
 *     window, its retry stored once space is back;
 *     A retry of only the kept records (all duplicates, nothing written)
 *     and the power at once: those duplicate acks survive (the resume's
 *     reopen synced the records);
 *   - a failed direct write followed by a failed fdatasync of A, and A's
 *     failed fdatasync followed by the failed writes of B behind it (B's
 *     take admitted before A's sync fails: its writes are queued behind
 *     it; counted): the same rules, but a failed sync never heals, even
 *     with room again: the retries go to the partition reopened after a
 *     reboot (the sim's power loss; FORMAT.md D.1 rule 3), the surviving
 *     records of A acked as duplicates of themselves and only those;
 *   - a failed fdatasync of A (in line; or pipelined, B's writes behind
 *     it), then a restart of the process alone (the sim keeps its page
 *     cache, where the failed sync's bytes stay readable but are lost at
 *     the next power loss: fsyncgate): the log cut the segment back to its
 *     durable end at once, so A and B are stored anew (no duplicate), and
 *     after a power loss every acked event is back; the cut failing too:
 *     said at ERROR, the partition stays failed.
 * After the retries: a power loss and a restart (the window rebuilt from
 * the log: no dedup.snap), then a clean restart (the window loaded from
 * dedup.snap): every acked event still there, a retry of everything all
 * duplicates at the acked offsets.
 * Every check of the log is byte-precise (ph_check_acked: each acked
 * event at its acked offset, no id stored twice). Waits are bounded
 * (WAIT_LIMITS); the sim's choices are seeded.
 */
#include "dedup.h"
#include "event.h"
#include "partharness.h"
#include "partition.h"
#include "partition_internal.h"
#include "pb_errors.h"
#include "simio.h"
#include "upkeep.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

enum { BIG = MAX_EVENTS, A_PARTS = PARTITION_TAKE_EVENTS / BIG, NB = A_PARTS + 3 };
#define GIB (1024ull * 1024 * 1024)

/* The test's disk: the sim, with a space() the test sets (the upkeep's
 * probe: a full disk heals only once it reports room). */
static simio *sim;
static fileio sim_io;
static _Atomic uint64_t avail;

static int sim_space(const fileio *io, const char *path, uint64_t *a, uint64_t *total)
{
    *a = atomic_load(&avail);
    *total = 100 * GIB;
    return 0;
}

static uint64_t ahead_now(partition *p, bool writer)
{
    partition_stats st;
    partition_get_stats(p, &st);
    return writer ? st.events_ahead_writer : st.events_ahead;
}

/* The write hook: once (armed), waits (bounded) until `want` events were
 * admitted ahead (by the writer itself if writer), then makes the writes
 * and syncs in mask fail with err after `skip` more (this write counts);
 * ENOSPC: the free space probe says so too (below min_free_bytes). */
typedef struct fault_plan {
    partition *p;
    _Atomic bool armed;
    bool writer;
    uint64_t want;
    unsigned mask;
    uint64_t skip;
    int err;
    _Atomic int rc;            /* simio_set_fault's (checked on the test thread) */
    _Atomic uint64_t clock_at; /* clock_calls once B was admitted ahead */
} fault_plan;

/* The receive-time clock (the harness's), counting its calls: the writer
 * reads it once at each take's admission (and at each round ahead). */
static _Atomic uint64_t clock_calls;
static int64_t counting_now(void *ctx)
{
    atomic_fetch_add(&clock_calls, 1);
    ph_harness *h = ctx;
    return atomic_load(&h->clock_ns);
}

/* Writes attempted after the sync hook's fault was set (sync_fails; the
 * write hook counts them: it runs at every write). */
static _Atomic bool sync_failed;
static _Atomic uint64_t writes_after;

/* The plans the hooks use: static, never a test's locals (a hook may
 * still run on another thread when a failed test has returned). */
static fault_plan plan_w, plan_s;

/* A hook's wait (bounded, well below the test thread's WAIT_LIMITS: the
 * test fails on its own thread, never in a hook) until `want` events were
 * admitted ahead. */
#define HOOK_WAIT_MS 10000
static void wait_ahead(const fault_plan *w)
{
    for (int i = 0; i < HOOK_WAIT_MS && ahead_now(w->p, w->writer) < w->want; i++)
        nanosleep(&(struct timespec){.tv_nsec = 1000 * 1000}, NULL);
}

static void fail_when_ahead(void *arg)
{
    fault_plan *w = arg;
    if (atomic_load(&sync_failed))
        atomic_fetch_add(&writes_after, 1);
    if (!atomic_exchange(&w->armed, false))
        return;
    wait_ahead(w);
    atomic_store(&w->clock_at, atomic_load(&clock_calls));
    if (w->err == ENOSPC)
        atomic_store(&avail, GIB / 2);
    atomic_store(&w->rc, simio_set_fault(sim, w->mask, w->skip, w->err, ".log"));
}

/* The fixture's partition over a fresh sim: ids, min_free_bytes; direct
 * writes (every take pipelined once the dedup mark exists) if direct. */
static partition *open_sim(ph_fixture *f, bool direct)
{
    assert_int_equal(simio_create(&sim), 0);
    assert_int_equal(simio_add_root(sim, f->root), 0);
    sim_io = *simio_io(sim);
    sim_io.space = sim_space;
    atomic_store(&avail, 50 * GIB);
    f->opts.log.io = &sim_io;
    f->opts.log.now_ns = counting_now;
    f->opts.log.direct_min_bytes = direct ? 1 : 0;
    f->opts.log.direct_align = 512;
    f->opts.min_free_bytes = GIB;
    f->opts.dedup_window_ms = 60000;
    f->opts.dedup_max_entries = 100000;
    f->h.check_durable = false; /* the harness's own io is not in use */
    return ph_open(f);
}

static ph_batch *ids_batch(ph_fixture *f, partition *p, uint64_t seq, uint64_t id)
{
    ph_batch *tb = ph_batch_new(&f->h, p, BIG, seq);
    ph_give_ids(tb, seq, id, 0);
    return tb;
}

/* Submits the batches [from, to) as one queue append, so that B is queued
 * before A is taken (the writer, once started, runs until the partition
 * closes: idle_ms 0); on a partition whose writer has not started yet,
 * the last goes through partition_submit, which starts it. Then waits for
 * them. */
static void submit_wait(ph_fixture *f, partition *p, ph_batch **b, size_t from, size_t to)
{
    pthread_mutex_lock(&f->h.lock);
    size_t before = f->h.done_count;
    pthread_mutex_unlock(&f->h.lock);
    for (size_t i = from; i < to; i++) {
        pub_part *part = &b[i]->part;
        part->partition = p;
        part->status = 1;
        part->next = NULL;
        atomic_store(&b[i]->b.pending, 1);
        for (uint32_t k = 0; k < part->count; k++) {
            b[i]->ev[k].offset = UINT64_MAX;
            b[i]->ev[k].duplicate = false;
        }
    }
    pub_part *parts[NB];
    for (size_t i = from; i < to; i++)
        parts[i - from] = &b[i]->part;
    pthread_mutex_lock(&p->lock);
    bool running = p->running;
    pthread_mutex_unlock(&p->lock);
    ph_queue_parts(p, parts, to - from - !running);
    if (!running)
        partition_submit(p, &b[to - 1]->part);
    ph_wait_done(&f->h, before + (to - from));
}

/* The batches: two stored first (the dedup mark in line, then one more),
 * A (a whole take) and B queued behind it. Ids: batch i's are i * BIG.. */
static ph_batch **make_batches(ph_fixture *f, partition *p)
{
    ph_batch **b = calloc(NB, sizeof *b);
    assert_non_null(b);
    for (size_t i = 0; i < NB; i++)
        b[i] = ids_batch(f, p, i * BIG, i * BIG);
    submit_wait(f, p, b, 0, 2);
    assert_int_equal(b[0]->part.status, 0);
    assert_int_equal(b[1]->part.status, 0);
    return b;
}

/* After the failure: nothing from A (batches 2..NB-2) or B (NB-1) acked,
 * none of their ids in the window, the two stored batches' kept. */
static void check_refused(partition *p, ph_batch **b, uint64_t end)
{
    for (size_t i = 2; i < NB; i++)
        assert_true(b[i]->part.status < 0);
    assert_int_equal(partition_end_offset(p), end);
    for (uint64_t k = 2 * BIG; k < NB * BIG; k++)
        assert_int_equal(ph_window_has(p, k), UINT64_MAX);
    for (uint64_t k = 0; k < 2 * BIG; k++)
        assert_int_equal(ph_window_has(p, k), k);
}

/* Retries every refused batch: each acked; an event acked as a duplicate
 * only of a record that holds it (kept whole from the failed take: at or
 * above `kept_from`, below `kept_to`), the rest stored. Returns how many
 * were duplicates. */
static uint64_t retry_refused(ph_fixture *f, partition *p, ph_batch **b, uint64_t kept_from,
                              uint64_t kept_to)
{
    submit_wait(f, p, b, 2, NB);
    uint64_t dups = 0;
    for (size_t i = 2; i < NB; i++) {
        assert_int_equal(b[i]->part.status, 0);
        for (uint32_t k = 0; k < BIG; k++) {
            if (!b[i]->ev[k].duplicate)
                continue;
            dups++;
            assert_true(b[i]->ev[k].offset >= kept_from && b[i]->ev[k].offset < kept_to);
        }
    }
    ph_check_acked(f, &sim_io, b, NB);
    assert_int_equal(partition_end_offset(p), (uint64_t)NB * BIG); /* each event once */
    return dups;
}

/* A retry of every batch: all duplicates, at the offsets in want. */
static void retry_all_dups(ph_fixture *f, partition *p, ph_batch **b, const uint64_t *want)
{
    submit_wait(f, p, b, 0, NB);
    for (size_t i = 0; i < NB; i++) {
        assert_int_equal(b[i]->part.status, 0);
        for (uint32_t k = 0; k < BIG; k++) {
            assert_true(b[i]->ev[k].duplicate);
            assert_int_equal(b[i]->ev[k].offset, want[i * BIG + k]);
        }
    }
    assert_int_equal(partition_end_offset(p), (uint64_t)NB * BIG);
}

/* Whether the partition's dedup.snap exists on the sim. */
static bool snapshot_exists(ph_fixture *f)
{
    char path[160];
    snprintf(path, sizeof path, "%s/p/%s", f->root, DEDUP_SNAPSHOT_NAME);
    int fd = sim_io.open(&sim_io, path, O_RDONLY, 0);
    if (fd >= 0)
        sim_io.close(&sim_io, fd);
    return fd >= 0;
}

/* The power goes now (seeded) and the partition is opened again. */
static partition *power_loss(ph_fixture *f, partition *p, uint64_t seed)
{
    simio_crash_at(sim, simio_ops(sim) + 1);
    (void)partition_close(p);
    assert_int_equal(simio_power_loss(sim, seed, NULL), 0);
    return ph_open(f);
}

/* Right after the retries, the power goes (seeded) and the start rebuilds
 * the window from the log (no dedup.snap: never stopped cleanly); then a
 * clean stop (the window saved in dedup.snap) and a start that loads it:
 * each time every acked event is still there, and a retry of everything
 * is all duplicates at the acked offsets. */
static void restarts_keep_all(ph_fixture *f, partition *p, ph_batch **b, uint64_t seed)
{
    uint64_t *want = malloc(NB * BIG * sizeof *want);
    assert_non_null(want);
    for (size_t i = 0; i < NB; i++)
        for (uint32_t k = 0; k < BIG; k++)
            want[i * BIG + k] = b[i]->ev[k].offset;
    p = power_loss(f, p, seed);
    ph_check_acked(f, &sim_io, b, NB);
    assert_false(snapshot_exists(f));
    retry_all_dups(f, p, b, want);
    assert_int_equal(partition_close(p), 0);
    assert_true(snapshot_exists(f));
    p = ph_open(f);
    retry_all_dups(f, p, b, want);
    free(want);
    assert_int_equal(partition_close(p), 0);
}

/* Finding of the review: a retry of only the records the resume kept (all
 * duplicates: the take writes nothing, so nothing of it syncs them), then
 * the power at once: those duplicate acks must point at durable records
 * (the reopen synced them). Returns the partition opened again. */
static partition *kept_dups_survive(ph_fixture *f, partition *p, ph_batch **b, uint64_t kept,
                                    uint64_t seed)
{
    ph_batch *k = malloc(sizeof *k);
    assert_non_null(k);
    memcpy(k, b[2], sizeof *k); /* its events point at b[2]'s bytes */
    k->b.events = k->ev;
    k->b.parts = &k->part;
    k->part.batch = &k->b;
    k->part.events = k->idx;
    k->part.count = (uint32_t)(kept < BIG ? kept : BIG);
    k->b.nevents = k->part.count;
    ph_batch *one[1] = {k};
    submit_wait(f, p, one, 0, 1);
    assert_int_equal(k->part.status, 0);
    for (uint32_t i = 0; i < k->part.count; i++) {
        assert_true(k->ev[i].duplicate);
        assert_int_equal(k->ev[i].offset, 2 * BIG + i);
    }
    p = power_loss(f, p, seed);
    ph_check_acked(f, &sim_io, one, 1);
    free(k);
    return p;
}

/* The partition stays stopped while the disk is full, and heals once
 * space is back (the upkeep tick, bounded). */
static void heal(partition *p)
{
    for (int i = 0; i < 20; i++) {
        partition_upkeep_tick(p, 0);
        nanosleep(&(struct timespec){.tv_nsec = 1000 * 1000}, NULL);
    }
    assert_int_equal(partition_status(p), -ENOSPC);
    assert_int_equal(simio_set_fault(sim, 0, 0, 0, NULL), 0);
    atomic_store(&avail, 50 * GIB);
    for (int i = 0; i < WAIT_LIMITS * 1000 && partition_status(p) != 0; i++) {
        partition_upkeep_tick(p, 0);
        nanosleep(&(struct timespec){.tv_nsec = 1000 * 1000}, NULL);
    }
    assert_int_equal(partition_status(p), 0);
}

/* The sync hook (A's sync, on the direct-write helper): once (armed),
 * waits (bounded) until the writer has admitted B's take (it reads the
 * clock there, after the round that admitted B ahead: plan_w.clock_at),
 * so that B's writes are queued behind this sync before the writer can
 * learn of its failure; then the calls in mask fail with err from this
 * sync on. */
static void sync_fails(void *arg)
{
    fault_plan *w = arg;
    if (!atomic_exchange(&w->armed, false))
        return;
    for (int i = 0;
         i < HOOK_WAIT_MS &&
         (atomic_load(&plan_w.armed) || atomic_load(&clock_calls) <= atomic_load(&plan_w.clock_at));
         i++)
        nanosleep(&(struct timespec){.tv_nsec = 1000 * 1000}, NULL);
    atomic_store(&w->rc, simio_set_fault(sim, w->mask, 0, w->err, ".log"));
    atomic_store(&sync_failed, true);
}

/* A failing with B admitted ahead (writer: by the writer itself during a
 * pipelined append; else by the helper thread while A is written and
 * synced in line): A's first write waits until B is admitted, then the
 * calls in mask fail with err after `skip` more (this write counts), and
 * (sync, if not NULL) its plan runs at the next file sync. Checked:
 * neither take acked, B admitted once, none of their ids in the window.
 * *pp: the partition; returns the batches. */
static ph_batch **fail_with_b_ahead(ph_fixture *f, partition **pp, bool writer, unsigned mask,
                                    uint64_t skip, int err, fault_plan *sync)
{
    partition *p = *pp = open_sim(f, writer);
    ph_batch **b = make_batches(f, p);
    fault_plan *w = &plan_w;
    *w = (fault_plan){.p = p,
                      .armed = true,
                      .writer = writer,
                      .want = ahead_now(p, writer) + BIG,
                      .mask = mask,
                      .skip = skip,
                      .err = err};
    simio_set_write_hook(sim, fail_when_ahead, w);
    if (sync)
        simio_set_sync_hook(sim, sync_fails, sync);
    submit_wait(f, p, b, 2, NB);
    simio_set_write_hook(sim, NULL, NULL);
    simio_set_sync_hook(sim, NULL, NULL);
    assert_false(atomic_load(&w->armed));
    assert_int_equal(atomic_load(&w->rc), 0);
    assert_true(!sync || (!atomic_load(&sync->armed) && atomic_load(&sync->rc) == 0));
    assert_int_equal(ahead_now(p, writer), w->want); /* B, once */
    check_refused(p, b, 2 * BIG);
    return b;
}

static void done_with(ph_batch **b)
{
    for (size_t i = 0; i < NB; i++)
        free(b[i]);
    free(b);
    simio_destroy(sim);
}

/* ENOSPC in A's append after its first write (its records whole: kept by
 * the resume), B admitted ahead: both refused with the full disk; healed,
 * the retries stored once. */
static void enospc_with_ahead(ph_fixture *f, bool writer, uint64_t seed)
{
    partition *p;
    ph_batch **b = fail_with_b_ahead(f, &p, writer, SIMIO_PWRITEV, 1, ENOSPC, NULL);
    for (size_t i = 2; i < NB; i++)
        assert_int_equal(b[i]->part.status, -ENOSPC);
    heal(p);
    uint64_t kept = partition_end_offset(p) - 2 * BIG;
    assert_true(kept > 0 && kept < PARTITION_TAKE_EVENTS);
    for (uint64_t k = 0; k < kept; k++) /* the resume put them back: stored */
        assert_int_equal(ph_window_has(p, 2 * BIG + k), 2 * BIG + k);
    p = kept_dups_survive(f, p, b, kept, seed + 100);
    assert_int_equal(partition_end_offset(p), 2 * BIG + kept);
    assert_int_equal(retry_refused(f, p, b, 2 * BIG, 2 * BIG + kept), kept);
    restarts_keep_all(f, p, b, seed);
    done_with(b);
}

static void test_enospc_helper_ahead(void **state)
{
    enospc_with_ahead(*state, false, 11);
}

static void test_enospc_writer_ahead(void **state)
{
    enospc_with_ahead(*state, true, 12);
}

/* The write hook of the up-front refusal: once B is admitted ahead, the
 * free space drops below min_free_bytes, and the next probe comes after
 * the one that let A in (UPKEEP_PROBE_EVERY_MS; a sleep is at least as
 * long as asked). A's writes go on. */
static void space_low_when_ahead(void *arg)
{
    fault_plan *w = arg;
    if (!atomic_exchange(&w->armed, false))
        return;
    wait_ahead(w);
    atomic_store(&avail, GIB / 2);
    nanosleep(&(struct timespec){.tv_nsec = (UPKEEP_PROBE_EVERY_MS + 5) * 1000 * 1000}, NULL);
}

/* The free space drops below min_free_bytes while A is written, B
 * admitted ahead: A is stored and acked, B refused up front (-ENOSPC, the
 * partition not failed), its ids out of the window; once space is back,
 * its retry is stored, not a duplicate. */
static void space_low_with_ahead(ph_fixture *f, bool writer)
{
    partition *p = open_sim(f, writer);
    ph_batch **b = make_batches(f, p);
    fault_plan *w = &plan_w;
    *w = (fault_plan){.p = p, .armed = true, .writer = writer, .want = ahead_now(p, writer) + BIG};
    simio_set_write_hook(sim, space_low_when_ahead, w);
    submit_wait(f, p, b, 2, NB);
    simio_set_write_hook(sim, NULL, NULL);
    assert_false(atomic_load(&w->armed));
    assert_int_equal(ahead_now(p, writer), w->want);
    assert_int_equal(partition_status(p), 0);
    for (size_t i = 2; i + 1 < NB; i++)
        assert_int_equal(b[i]->part.status, 0);
    assert_int_equal(b[NB - 1]->part.status, -ENOSPC);
    uint64_t end = (NB - 1) * BIG;
    assert_int_equal(partition_end_offset(p), end);
    for (uint64_t k = 0; k < NB * BIG; k++)
        assert_int_equal(ph_window_has(p, k), k < end ? k : UINT64_MAX);
    atomic_store(&avail, 50 * GIB);
    uint64_t a, m;
    for (int i = 0; i < WAIT_LIMITS * 1000 && partition_space_low(p, &a, &m); i++) {
        partition_upkeep_tick(p, INT64_MAX);
        nanosleep(&(struct timespec){.tv_nsec = 1000 * 1000}, NULL);
    }
    submit_wait(f, p, b, NB - 1, NB);
    assert_int_equal(b[NB - 1]->part.status, 0);
    for (uint32_t k = 0; k < BIG; k++) {
        assert_false(b[NB - 1]->ev[k].duplicate);
        assert_int_equal(b[NB - 1]->ev[k].offset, end + k);
    }
    assert_int_equal(ph_check_acked(f, &sim_io, b, NB), NB * BIG);
    restarts_keep_all(f, p, b, 13 + writer);
    done_with(b);
}

static void test_space_low_helper_ahead(void **state)
{
    space_low_with_ahead(*state, false);
}

static void test_space_low_writer_ahead(void **state)
{
    space_low_with_ahead(*state, true);
}

/* A failed sync: no heal, even once the disk has room. The partition is
 * reopened after a reboot (the sim's power loss) and every refused batch
 * retried. */
static void retry_after_restart(ph_fixture *f, partition *p, ph_batch **b, uint64_t seed)
{
    atomic_store(&avail, 50 * GIB);
    for (int i = 0; i < 20; i++) {
        partition_upkeep_tick(p, 0);
        nanosleep(&(struct timespec){.tv_nsec = 1000 * 1000}, NULL);
    }
    assert_true(partition_status(p) < 0);
    assert_int_equal(simio_set_fault(sim, 0, 0, 0, NULL), 0);
    assert_true(partition_close(p) < 0);
    /* A reboot (the sim's power loss; without one: retry_after_process_
     * restart): what of the failed take survives the cut back to the
     * durable end (FORMAT.md D.1 rule 3) is durable. (The
     * seeds, 221 and 222, cut a torn tail and leave no hole: ph_check_acked
     * wants offsets without a gap, D.2 would allow one.) */
    assert_int_equal(simio_power_loss(sim, seed + 200, NULL), 0);
    p = ph_open(f);
    uint64_t end = partition_end_offset(p);
    assert_true(end >= 2 * BIG);
    /* Records of the refused take that survived are stored: their retry
     * is a duplicate of them, and only of them. */
    assert_int_equal(retry_refused(f, p, b, 2 * BIG, end), end - 2 * BIG);
    restarts_keep_all(f, p, b, seed);
    done_with(b);
}

/* A's direct write fails (ENOSPC) after B was admitted ahead by the
 * writer, and the fdatasync queued behind A's last write fails too. */
static void test_failed_write_then_sync(void **state)
{
    partition *p;
    ph_batch **b =
        fail_with_b_ahead(*state, &p, true, SIMIO_PWRITEV | SIMIO_FDATASYNC, 1, ENOSPC, NULL);
    retry_after_restart(*state, p, b, 21);
}

/* The reverse order: A (a whole take, pipelined) is written, B admitted
 * ahead by the writer during A's append; A's fdatasync fails (EIO) once
 * B's take was admitted (its writes queued behind that sync), and so do
 * B's writes after it (counted: at least one was attempted). */
static void test_failed_sync_then_write(void **state)
{
    partition *p;
    atomic_store(&sync_failed, false);
    atomic_store(&writes_after, 0);
    plan_s = (fault_plan){.armed = true, .mask = SIMIO_PWRITEV | SIMIO_FDATASYNC, .err = EIO};
    ph_batch **b = fail_with_b_ahead(*state, &p, true, 0, 0, 0, &plan_s);
    atomic_store(&sync_failed, false);
    assert_true(atomic_load(&writes_after) > 0);
    retry_after_restart(*state, p, b, 22);
}

/* The log's messages about a cut (log_cut_to_durable), kept for the test
 * thread. */
static pthread_mutex_t said_lock = PTHREAD_MUTEX_INITIALIZER;
static int cut_done, cut_failed;
static void capture(void *ctx, enum log_level level, const char *msg)
{
    if (level != LOG_ERROR)
        return;
    pthread_mutex_lock(&said_lock);
    if (strstr(msg, "(the last durable end): the records after it were never acknowledged"))
        cut_done++;
    if (strstr(msg, "(the last durable end) failed too"))
        cut_failed++;
    pthread_mutex_unlock(&said_lock);
}

static void capture_cuts(ph_fixture *f)
{
    pthread_mutex_lock(&said_lock);
    cut_done = cut_failed = 0;
    pthread_mutex_unlock(&said_lock);
    f->opts.log.logf = capture;
}

static void cuts_said(int done, int failed)
{
    pthread_mutex_lock(&said_lock);
    assert_int_equal(cut_done, done);
    assert_int_equal(cut_failed, failed);
    pthread_mutex_unlock(&said_lock);
}

/* After a failed sync the log cut the segment back to its durable end (the
 * end of the two acked batches): a restart of the process alone (the sim
 * keeps its page cache: no power loss), the disk working again, finds
 * nothing of A or B, though a failed sync left their bytes readable
 * (simio: fsyncgate, lost at the next power loss whatever syncs later).
 * Their retry is stored anew, never acked as a duplicate of those bytes;
 * then a power loss: every acked event is back at its acked offset. */
static void retry_after_process_restart(ph_fixture *f, partition *p, ph_batch **b, uint64_t seed)
{
    assert_true(partition_status(p) < 0);
    assert_int_equal(simio_set_fault(sim, 0, 0, 0, NULL), 0);
    assert_true(partition_close(p) < 0);
    simio_restart(sim);
    p = ph_open(f);
    assert_int_equal(partition_end_offset(p), 2 * BIG);
    assert_int_equal(retry_refused(f, p, b, 2 * BIG, 2 * BIG), 0);
    restarts_keep_all(f, p, b, seed);
    cuts_said(1, 0);
    done_with(b);
}

/* A's fdatasync (in line, B admitted ahead by the helper thread) fails. */
static void test_failed_sync_no_reboot(void **state)
{
    partition *p;
    capture_cuts(*state);
    ph_batch **b = fail_with_b_ahead(*state, &p, false, SIMIO_FDATASYNC, 0, EIO, NULL);
    retry_after_process_restart(*state, p, b, 31);
}

/* A's fdatasync (pipelined, on the direct-write helper) fails with B's
 * writes queued behind it (they fail too). */
static void test_failed_pipelined_sync_no_reboot(void **state)
{
    partition *p;
    capture_cuts(*state);
    atomic_store(&sync_failed, false);
    plan_s = (fault_plan){.armed = true, .mask = SIMIO_PWRITEV | SIMIO_FDATASYNC, .err = EIO};
    ph_batch **b = fail_with_b_ahead(*state, &p, true, 0, 0, 0, &plan_s);
    atomic_store(&sync_failed, false);
    retry_after_process_restart(*state, p, b, 32);
}

/* The cut itself fails (ftruncate, EIO): said at ERROR, and the partition
 * stays failed with the disk working again (no heal). */
static void test_cut_fails(void **state)
{
    ph_fixture *f = *state;
    partition *p;
    capture_cuts(f);
    ph_batch **b =
        fail_with_b_ahead(f, &p, false, SIMIO_FDATASYNC | SIMIO_FTRUNCATE, 0, EIO, NULL);
    cuts_said(0, 1);
    assert_int_equal(simio_set_fault(sim, 0, 0, 0, NULL), 0);
    atomic_store(&avail, 50 * GIB);
    for (int i = 0; i < 20; i++) {
        partition_upkeep_tick(p, 0);
        nanosleep(&(struct timespec){.tv_nsec = 1000 * 1000}, NULL);
    }
    assert_true(partition_status(p) < 0);
    assert_int_equal(partition_end_offset(p), 2 * BIG);
    assert_true(partition_close(p) < 0);
    done_with(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_enospc_helper_ahead, ph_setup, ph_teardown),
        cmocka_unit_test_setup_teardown(test_enospc_writer_ahead, ph_setup, ph_teardown),
        cmocka_unit_test_setup_teardown(test_space_low_helper_ahead, ph_setup, ph_teardown),
        cmocka_unit_test_setup_teardown(test_space_low_writer_ahead, ph_setup, ph_teardown),
        cmocka_unit_test_setup_teardown(test_failed_write_then_sync, ph_setup, ph_teardown),
        cmocka_unit_test_setup_teardown(test_failed_sync_then_write, ph_setup, ph_teardown),
        cmocka_unit_test_setup_teardown(test_failed_sync_no_reboot, ph_setup, ph_teardown),
        cmocka_unit_test_setup_teardown(test_failed_pipelined_sync_no_reboot, ph_setup,
                                        ph_teardown),
        cmocka_unit_test_setup_teardown(test_cut_fails, ph_setup, ph_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
