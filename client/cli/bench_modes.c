/*
 * bench_modes - the server modes of `protobus bench`: pub, sub and latency
 * (live subscribers first, then publishers), replay (publish, then read it
 * all back from the beginning) and seek (time from Subscribe to the first
 * event). Each starts the threads of bench_clients.c, joins them and
 * reports what they measured.
 *
 * Threads: the main thread; it owns the bench_pub / bench_sub arrays and
 * reads their results only after joining them.
 */
#include "bench_modes.h"

#include "bench_clients.h"
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- publishers ----------------------------------------------------------- */

/* Runs the publishers (one in latency mode) to completion: *out gets the
 * array (free with free_pubs, also on failure). 0 or the first failure. */
static int run_pubs(bench_cfg *cfg, bool latency, bench_pub **out)
{
    uint32_t np = latency ? 1 : cfg->pubs;
    bench_pub *pubs = calloc(np, sizeof *pubs);
    if (!pubs)
        return PB_ENOMEM;
    *out = pubs;
    /* In flight at most in_flight batches of at most `batch` events: a
     * ring of that many send times is never overwritten before its ack. */
    uint64_t ring = 1;
    while (ring < (uint64_t)(cfg->in_flight + 2) * (latency ? 1 : cfg->batch) + 1024)
        ring <<= 1;
    int rc = 0;
    uint32_t started = 0;
    for (uint32_t t = 0; t < np; t++) {
        bench_pub *p = &pubs[t];
        p->cfg = cfg;
        p->latency = latency;
        p->first = cfg->count * t / np;
        p->n = cfg->count * (t + 1) / np - p->first;
        p->mask = ring - 1;
        p->sent_ns = calloc(ring, sizeof *p->sent_ns);
        if (!p->sent_ns || !bench_samples_init(&p->ack, latency ? p->n : p->n / cfg->batch + 2)) {
            rc = PB_ENOMEM;
            break;
        }
    }
    for (uint32_t t = 0; rc == 0 && t < np; t++) {
        rc = bench_start_thread(&pubs[t].tid, bench_pub_main, &pubs[t]);
        if (rc == 0)
            started++;
    }
    for (uint32_t t = 0; t < started; t++)
        pthread_join(pubs[t].tid, NULL);
    for (uint32_t t = 0; rc == 0 && t < np; t++) {
        if (pubs[t].rc < 0) {
            cli_error(BENCH_CMD, "publisher %u: %s", t, pubs[t].err);
            rc = pubs[t].rc;
        }
    }
    return rc;
}

static void free_pubs(bench_pub *pubs, uint32_t n)
{
    for (uint32_t t = 0; pubs && t < n; t++) {
        free(pubs[t].sent_ns);
        free(pubs[t].ack.v);
    }
    free(pubs);
}

/* Publish phase figures: rate over the span of all publishers, ack latency. */
static void report_pubs(const bench_cfg *cfg, bench_pub *pubs, uint32_t np, bench_result *res)
{
    int64_t t0 = pubs[0].t_start, t1 = pubs[0].t_end;
    size_t nsamp = 0;
    for (uint32_t t = 0; t < np; t++) {
        if (pubs[t].t_start < t0)
            t0 = pubs[t].t_start;
        if (pubs[t].t_end > t1)
            t1 = pubs[t].t_end;
        nsamp += pubs[t].ack.n;
    }
    bench_report_rate("pub", cfg->count, t1 - t0, cfg->size, res);
    bench_samples all;
    if (!bench_samples_init(&all, nsamp))
        return;
    for (uint32_t t = 0; t < np; t++)
        bench_samples_merge(&all, &pubs[t].ack);
    bench_report_latency("ack", &all, res);
    free(all.v);
}

/* --- live subscribers ------------------------------------------------------ */

static uint64_t pow10u(uint32_t k)
{
    uint64_t v = 1;
    while (k--)
        v *= 10;
    return v;
}

/* Events of [0, count) that subscriber j of a --distinct run receives. */
static uint64_t distinct_share(const bench_cfg *cfg, uint32_t j)
{
    uint64_t per_round = 0, full = cfg->count / cfg->topics, rest = cfg->count % cfg->topics,
             tail = 0;
    for (uint32_t t = j; t < cfg->topics; t += cfg->subs) {
        per_round++;
        if (t < rest)
            tail++;
    }
    return full * per_round + tail;
}

/* Opens the ns subscriptions of subs[] (START_NEW) and starts a thread on
 * each, or (mux) none: start_muxes does. *started counts the threads to
 * join. 0, or a negative code (reported). */
static int start_subs(bench_cfg *cfg, bool latency, bool mux, bench_sub *subs, uint32_t ns,
                      uint32_t *started)
{
    uint32_t digits = 0;
    if (cfg->distinct) {
        while (pow10u(digits) < ns)
            digits++;
        if (pow10u(digits) != ns || ns > cfg->topics) {
            cli_error(BENCH_CMD, "--distinct needs --subs a power of 10 and at most --topics");
            return PB_EINVAL;
        }
    }
    for (uint32_t j = 0; j < ns; j++) {
        bench_sub *s = &subs[j];
        s->cfg = cfg;
        s->start = PB_START_NEW;
        s->timed = latency;
        if (cfg->distinct && digits)
            snprintf(s->pattern, sizeof s->pattern, "%s\\.[0-9]*%0*u", cfg->prefix, (int)digits, j);
        else if (cfg->pattern)
            snprintf(s->pattern, sizeof s->pattern, "%s", cfg->pattern);
        else
            snprintf(s->pattern, sizeof s->pattern, "%s\\..*", cfg->prefix);
        s->expected = cfg->distinct && digits ? distinct_share(cfg, j) : cfg->count;
        if (latency && !bench_samples_init(&s->delivery, cfg->count))
            return PB_ENOMEM;
        int rc = bench_sub_open(s);
        if (rc < 0) {
            cli_error(BENCH_CMD, "subscriber %u: %s", j, s->err);
            return rc;
        }
        if (mux)
            continue;
        rc = bench_start_thread(&s->tid, bench_sub_main, s);
        if (rc < 0) {
            cli_error(BENCH_CMD, "cannot start subscriber thread %u: %s", j, pb_strerror(rc));
            return rc;
        }
        (*started)++;
    }
    /* Each pb_client_subscribe returned once the server confirmed it: the
     * subscriptions are live, publishers can start. */
    return 0;
}

/* Delivery figures, once every subscriber thread was joined: the rate from
 * the first publisher's start to the last subscriber's last event. */
static void report_subs(const bench_cfg *cfg, bool latency, const bench_pub *pubs, uint32_t np,
                        bench_sub *subs, uint32_t ns, bench_result *res)
{
    int64_t t0 = pubs[0].t_start, t1 = 0;
    uint64_t total = 0;
    for (uint32_t j = 0; j < ns; j++) {
        if (subs[j].t_end > t1)
            t1 = subs[j].t_end;
        total += subs[j].received;
    }
    for (uint32_t t = 0; t < np; t++)
        if (pubs[t].t_start < t0)
            t0 = pubs[t].t_start;
    bench_report_rate("sub", total, t1 - t0, cfg->size, res);
    if (latency)
        bench_report_latency("delivery", &subs[0].delivery, res);
}

/* --sub-threads: muxes[0..nmux) serve the open subscriptions of subs[].
 * *started counts the threads to join. 0, or a negative code (reported). */
static int start_muxes(bench_sub *subs, uint32_t ns, bench_mux *muxes, uint32_t nmux,
                       uint32_t *started)
{
    for (uint32_t t = 0; t < nmux; t++) {
        muxes[t] = (bench_mux){.subs = subs, .ns = ns, .first = t, .step = nmux};
        int rc = bench_start_thread(&muxes[t].tid, bench_mux_main, &muxes[t]);
        if (rc < 0) {
            cli_error(BENCH_CMD, "cannot start receiving thread %u: %s", t, pb_strerror(rc));
            return rc;
        }
        (*started)++;
    }
    return 0;
}

static void join_subs(bench_sub *subs, bench_mux *muxes, uint32_t *started)
{
    for (uint32_t j = 0; j < *started; j++)
        pthread_join(muxes ? muxes[j].tid : subs[j].tid, NULL);
    *started = 0;
}

int bench_mode_pub_sub(bench_cfg *cfg, bool latency, bool with_subs, bench_result *res)
{
    uint32_t ns = with_subs ? (latency ? 1 : cfg->subs) : 0, np = latency ? 1 : cfg->pubs;
    uint32_t nmux = latency || !cfg->sub_threads ? 0 : cfg->sub_threads < ns ? cfg->sub_threads : ns;
    bench_sub *subs = ns ? calloc(ns, sizeof *subs) : NULL;
    bench_mux *muxes = nmux ? calloc(nmux, sizeof *muxes) : NULL;
    bench_pub *pubs = NULL;
    uint32_t started = 0;
    if ((ns && !subs) || (nmux && !muxes)) {
        free(subs);
        free(muxes);
        return PB_ENOMEM;
    }
    int rc = start_subs(cfg, latency, nmux > 0, subs, ns, &started);
    if (rc == 0 && nmux)
        rc = start_muxes(subs, ns, muxes, nmux, &started);
    if (rc < 0)
        goto out;
    double cpu0 = bench_cpu_seconds();
    rc = run_pubs(cfg, latency, &pubs);
    if (rc == 0)
        report_pubs(cfg, pubs, np, res);
    join_subs(subs, muxes, &started);
    for (uint32_t j = 0; rc == 0 && j < ns; j++) {
        if (subs[j].rc < 0) {
            cli_error(BENCH_CMD, "subscriber %u: %s", j, subs[j].err);
            rc = subs[j].rc;
        }
    }
    if (rc == 0 && ns)
        report_subs(cfg, latency, pubs, np, subs, ns, res);
    if (rc == 0) {
        double cpu = bench_cpu_seconds() - cpu0;
        printf("client CPU %.2f s\n", cpu);
        bench_result_add(res, " client_cpu_s=%.2f", cpu);
    }
out:
    if (rc < 0)
        atomic_store(&bench_stop, true);
    join_subs(subs, muxes, &started);
    for (uint32_t j = 0; subs && j < ns; j++) {
        pb_client_close(subs[j].c);
        free(subs[j].delivery.v);
    }
    free(subs);
    free(muxes);
    free_pubs(pubs, np);
    return rc;
}

/* --- reading back ------------------------------------------------------------ */

int bench_mode_replay(bench_cfg *cfg, bench_result *res)
{
    bench_pub *pubs = NULL;
    int rc = 0;
    if (!cfg->stored) {
        rc = run_pubs(cfg, false, &pubs);
        if (rc == 0)
            report_pubs(cfg, pubs, cfg->pubs, res);
        free_pubs(pubs, cfg->pubs);
        if (rc < 0)
            return rc;
    }
    bench_sub s = {.cfg = cfg, .start = PB_START_BEGINNING, .expected = cfg->count};
    snprintf(s.pattern, sizeof s.pattern, "%s", cfg->pattern ? cfg->pattern : ".*");
    s.prefix_len = strlen(cfg->prefix);
    double cpu0 = bench_cpu_seconds();
    int64_t t0 = bench_mono_ns();
    rc = bench_sub_open(&s);
    if (rc == 0)
        bench_sub_main(&s);
    if (rc == 0 && s.rc < 0)
        rc = s.rc;
    if (rc < 0) {
        cli_error(BENCH_CMD, "replay subscriber: %s", s.err);
    } else {
        double cpu = bench_cpu_seconds() - cpu0;
        bench_report_rate("replay", s.all, s.t_end - t0, cfg->size, res);
        printf("replay    first event after %.3f ms; client CPU %.2f s\n",
               (double)(s.t_first - t0) / 1e6, cpu);
        bench_result_add(res, " replay_first_ms=%.3f client_cpu_s=%.2f",
                         (double)(s.t_first - t0) / 1e6, cpu);
    }
    pb_client_close(s.c);
    return rc;
}

int bench_mode_seek(bench_cfg *cfg, bench_result *res)
{
    if (cfg->has_offset == cfg->has_time) {
        cli_error(BENCH_CMD, "seek mode needs exactly one of --offset and --time");
        return PB_EINVAL;
    }
    bench_samples first;
    uint64_t reps = cfg->count > 1000 ? 1000 : cfg->count;
    if (!bench_samples_init(&first, reps))
        return PB_ENOMEM;
    int rc = 0;
    for (uint64_t i = 0; i < reps && rc == 0; i++) {
        bench_sub s = {
            .cfg = cfg, .start = cfg->has_offset ? PB_START_OFFSETS : PB_START_TIME, .expected = 1};
        snprintf(s.pattern, sizeof s.pattern, "%s", cfg->pattern ? cfg->pattern : ".*");
        int64_t t0 = bench_mono_ns();
        rc = bench_sub_open(&s);
        if (rc == 0) {
            bench_sub_main(&s);
            rc = s.rc;
        }
        if (rc < 0)
            cli_error(BENCH_CMD, "seek: %s", s.err);
        else
            bench_samples_add(&first, s.t_first - t0);
        pb_client_close(s.c);
    }
    if (rc == 0)
        bench_report_latency("seek", &first, res);
    free(first.v);
    return rc;
}
