/*
 * follower_write - a hot standby's batches through its partition writers,
 * pipelined: one batch is with the writers (written, synced per the fsync
 * policy) while the follower goes on reading the primary's next records
 * into the other read buffer; when the writers are done, the batch is
 * acknowledged (ReplicaAck with each partition's next offset after it) and
 * what was read meanwhile goes as the next batch, so the batches grow while
 * a sync is slow and one sync covers them. Batches reach a partition in
 * offset order: the next is submitted only after the previous is done.
 *
 * Threads: the follower's thread, except batch_done (the partition
 * writers), which counts the parts down under f->mu and wakes the thread
 * through f->done_fd.
 */
#include "follower_internal.h"

#include "logging.h"
#include "metrics.h"
#include "partition.h"
#include "pb_errors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

static void release_arrays(finflight *fl);

int follower_batch_init(follower *f)
{
    f->done_fd = -1;
    if (pthread_mutex_init(&f->mu, NULL) != 0)
        return PB_ENOMEM;
    if (pthread_cond_init(&f->cond, NULL) != 0) {
        pthread_mutex_destroy(&f->mu);
        return PB_ENOMEM;
    }
    f->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (f->done_fd < 0) {
        pthread_cond_destroy(&f->cond);
        pthread_mutex_destroy(&f->mu);
        return -errno;
    }
    return 0;
}

void follower_batch_free(follower *f)
{
    if (!f || f->done_fd < 0)
        return;
    close(f->done_fd);
    f->done_fd = -1;
    pthread_cond_destroy(&f->cond);
    pthread_mutex_destroy(&f->mu);
    free(f->recs);
    free(f->parts);
    free(f->fl.buf);
    release_arrays(&f->fl);
}

int follower_grow(follower *f, size_t need)
{
    if (need <= f->cap)
        return 0;
    uint8_t *b = realloc(f->buf, need);
    if (!b)
        return PB_ENOMEM;
    f->buf = b;
    f->cap = need;
    return 0;
}

static void batch_done(pub_part *part)
{
    follower *f = part->batch->conn;
    pthread_mutex_lock(&f->mu);
    if (--f->pending == 0) {
        uint64_t one = 1;
        pthread_cond_signal(&f->cond);
        if (write(f->done_fd, &one, sizeof one) < 0)
            (void)0; /* the counter is full only if never read: cannot happen */
    }
    pthread_mutex_unlock(&f->mu);
}

/* Fills b's events and parts from the batch's records, those of stopped
 * partitions left out (one part per partition, records in order); kof[p]
 * is part p's partition (index into f->parts). */
static void build_batch(follower *f, pub_batch *b, uint32_t *map, uint32_t *idx, uint32_t *kof)
{
    uint32_t n = 0;
    for (size_t i = 0; i < f->nrecs; i++) {
        const frec *r = &f->recs[i];
        if (f->parts[r->part].stopped)
            continue;
        if (map[r->part] == UINT32_MAX) {
            map[r->part] = b->nparts;
            kof[b->nparts] = r->part;
            b->parts[b->nparts++] = (pub_part){.batch = b, .partition = f->parts[r->part].p};
        }
        b->parts[map[r->part]].count++;
        b->events[n++] = (pub_event){.data = r->data,
                                     .len = r->len,
                                     .topic = r->topic,
                                     .topic_len = r->topic_len,
                                     .part = map[r->part],
                                     .offset = r->offset,
                                     .time_ns = r->time_ns,
                                     .id = r->id,
                                     .id_len = r->id_len,
                                     .sealed = r->sealed};
    }
    b->nevents = n;
    uint32_t at = 0;
    for (uint32_t p = 0; p < b->nparts; p++) {
        b->parts[p].events = idx + at;
        at += b->parts[p].count;
        b->parts[p].count = 0;
    }
    for (uint32_t i = 0; i < n; i++) {
        pub_part *pp = &b->parts[b->events[i].part];
        pp->events[pp->count++] = i;
    }
}

static void release_arrays(finflight *fl)
{
    free(fl->b.events);
    free(fl->b.parts);
    free(fl->idx);
    free(fl->kof);
    free(fl->map);
    fl->b.events = NULL;
    fl->b.parts = NULL;
    fl->idx = fl->kof = fl->map = NULL;
    fl->ecap = fl->pcap = 0;
}

/* The batch's arrays for nrecs records of at most nparts partitions, kept
 * from batch to batch (grown, never shrunk while the follower runs: a
 * fresh large block would be mmapped and faulted in each time). */
static int reserve_arrays(finflight *fl, size_t nrecs, size_t nparts)
{
    if (nrecs > fl->ecap) {
        size_t cap = nrecs < 1024 ? 1024 : nrecs;
        pub_event *ev = realloc(fl->b.events, cap * sizeof *ev);
        if (ev)
            fl->b.events = ev;
        uint32_t *idx = ev ? realloc(fl->idx, cap * sizeof *idx) : NULL;
        if (idx)
            fl->idx = idx;
        if (!ev || !idx)
            return PB_ENOMEM;
        fl->ecap = cap;
    }
    if (nparts > fl->pcap) {
        size_t cap = nparts < 16 ? 16 : nparts;
        pub_part *pp = realloc(fl->b.parts, cap * sizeof *pp);
        if (pp)
            fl->b.parts = pp;
        uint32_t *kof = pp ? realloc(fl->kof, cap * sizeof *kof) : NULL;
        if (kof)
            fl->kof = kof;
        uint32_t *map = kof ? realloc(fl->map, cap * sizeof *map) : NULL;
        if (map)
            fl->map = map;
        if (!pp || !kof || !map)
            return PB_ENOMEM;
        fl->pcap = cap;
    }
    return 0;
}

/* The read buffer after a submit: the other one, holding the unparsed
 * rest [pos, len) of the one the batch keeps. */
static int swap_buffers(follower *f)
{
    size_t rest = f->len - f->pos;
    size_t cap = rest > f->cap ? rest : f->cap;
    uint8_t *nb = f->fl.buf;
    if (!nb || f->fl.cap < cap) {
        if (!(nb = malloc(cap)))
            return PB_ENOMEM;
        free(f->fl.buf);
    } else {
        cap = f->fl.cap;
    }
    memcpy(nb, f->buf + f->pos, rest);
    f->fl.buf = f->buf; /* the batch's records point into it until done */
    f->fl.cap = f->cap;
    f->buf = nb;
    f->cap = cap;
    f->len = rest;
    f->pos = 0;
    return 0;
}

int follower_batch_submit(follower *f, char *why, size_t n)
{
    finflight *fl = &f->fl;
    if (f->nrecs == 0 || fl->active)
        return 0;
    if (reserve_arrays(fl, f->nrecs, f->nparts) < 0) {
        snprintf(why, n, "out of memory for a batch of %zu records", f->nrecs);
        return PB_ENOMEM;
    }
    fl->b = (pub_batch){
        .done = batch_done, .conn = f, .replica = 1, .events = fl->b.events, .parts = fl->b.parts};
    memset(fl->map, 0xff, f->nparts * sizeof *fl->map);
    build_batch(f, &fl->b, fl->map, fl->idx, fl->kof);
    f->nrecs = 0;
    if (fl->b.nparts == 0) { /* every record was of a stopped partition */
        memmove(f->buf, f->buf + f->pos, f->len - f->pos);
        f->len -= f->pos;
        f->pos = 0;
        return 0;
    }
    if (swap_buffers(f) < 0) {
        snprintf(why, n, "out of memory for a read buffer of %zu bytes", f->cap);
        return PB_ENOMEM;
    }
    atomic_init(&fl->b.pending, fl->b.nparts);
    f->pending = fl->b.nparts;
    fl->active = true;
    for (uint32_t p = 0; p < fl->b.nparts; p++)
        partition_submit(fl->b.parts[p].partition, &fl->b.parts[p]);
    return 0;
}

bool follower_batch_done(follower *f)
{
    if (!f->fl.active)
        return false;
    uint64_t v;
    if (read(f->done_fd, &v, sizeof v) < 0 && errno != EAGAIN)
        logging_printf(LOG_WARN, "standby of %s: reading its eventfd: %s", f->o.primary,
                       strerror(errno));
    pthread_mutex_lock(&f->mu);
    bool done = f->pending == 0;
    pthread_mutex_unlock(&f->mu);
    return done;
}

/* After the writers: failed parts stop their partitions; the others are
 * acknowledged to the primary, each with its next offset after the batch. */
static int finish_batch(follower *f, pub_batch *b, const uint32_t *kof)
{
    Protobus__PartitionOffset *po = calloc(b->nparts, sizeof *po);
    if (!po)
        return PB_ENOMEM;
    size_t nack = 0;
    int rc = 0;
    for (uint32_t i = 0; i < b->nparts; i++) {
        const pub_part *pp = &b->parts[i];
        const char *name = f->parts[kof[i]].name;
        if (pp->status == -ENOSPC || pp->status == -EDQUOT) {
            /* A full disk heals (retention, an operator): reconnect later and
             * resume from the files instead of giving the partition up. */
            snprintf(f->why_full, sizeof f->why_full,
                     "partition %s: cannot store (%s); retrying after a reconnect", name,
                     pb_strerror(pp->status));
            rc = PB_EFAILED;
        } else if (pp->status < 0) {
            follower_stop_part(
                f, name, "storing offsets from %llu failed: %s",
                (unsigned long long)b->events[pp->events[0]].offset,
                pp->status == PB_EINVAL
                    ? "its next offset (or a record's header) does not follow the primary's"
                    : pb_strerror(pp->status));
        } else {
            protobus__partition_offset__init(&po[nack]);
            po[nack].partition = (char *)name;
            po[nack].offset = b->events[pp->events[pp->count - 1]].offset + 1;
            nack++;
            metrics_follower_records(pp->count);
        }
    }
    int arc = follower_send_ack(f, po, nack);
    free(po);
    return rc < 0 ? rc : arc;
}

int follower_batch_finish(follower *f, char *why, size_t n)
{
    finflight *fl = &f->fl;
    if (!fl->active)
        return 0;
    pthread_mutex_lock(&f->mu);
    while (f->pending > 0)
        pthread_cond_wait(&f->cond, &f->mu);
    pthread_mutex_unlock(&f->mu);
    fl->active = false;
    int rc = finish_batch(f, &fl->b, fl->kof);
    if (rc == PB_EFAILED)
        snprintf(why, n, "%s", f->why_full);
    else if (rc < 0 && !why[0])
        snprintf(why, n, "acknowledging to the primary: %s", pb_strerror(rc));
    return rc;
}
