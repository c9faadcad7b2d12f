/* partharness - see partharness.h. */
#include "partharness.h"

#include "dedup.h"
#include "event.h"
#include "partition_internal.h"
#include "pb_errors.h"
#include "reader.h"
#include "segment.h"
#include "testfs.h"
#include "wire.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static ph_harness *io_h(const fileio *io)
{
    return io->ctx;
}

static int t_open(const fileio *io, const char *path, int flags, int mode)
{
    int fd = fileio_posix()->open(fileio_posix(), path, flags, mode);
    size_t n = strlen(path);
    if (fd >= 0 && fd < MAX_FD) {
        ph_harness *h = io_h(io);
        pthread_mutex_lock(&h->lock);
        h->is_log[fd] = n > 4 && strcmp(path + n - 4, ".log") == 0;
        h->unsynced[fd] = false;
        pthread_mutex_unlock(&h->lock);
    }
    return fd;
}

static ssize_t t_pwritev(const fileio *io, int fd, const struct iovec *iov, int iovcnt, off_t off)
{
    ph_harness *h = io_h(io);
    pthread_mutex_lock(&h->lock);
    bool is_log = fd < MAX_FD && h->is_log[fd];
    int fail = is_log ? h->fail_write : 0;
    void (*hook)(void *) = is_log && h->sync_calls >= h->write_hook_after ? h->write_hook : NULL;
    void *hook_arg = h->write_hook_arg;
    if (hook)
        h->write_hook = NULL;
    pthread_mutex_unlock(&h->lock);
    if (hook)
        hook(hook_arg);
    if (fail)
        return -fail;
    ssize_t r = fileio_posix()->pwritev(fileio_posix(), fd, iov, iovcnt, off);
    if (r > 0 && is_log) {
        pthread_mutex_lock(&h->lock);
        h->unsynced[fd] = true;
        pthread_mutex_unlock(&h->lock);
    }
    return r;
}

static ssize_t t_pread(const fileio *io, int fd, void *buf, size_t len, off_t off)
{
    return fileio_posix()->pread(fileio_posix(), fd, buf, len, off);
}

static int t_fdatasync(const fileio *io, int fd)
{
    ph_harness *h = io_h(io);
    pthread_mutex_lock(&h->lock);
    bool is_log = fd < MAX_FD && h->is_log[fd];
    if (is_log) {
        h->sync_calls++;
        if (h->gate_at && h->sync_calls == h->gate_at)
            h->gate_closed = true;
        while (h->gate_closed) {
            h->blocked++;
            pthread_cond_broadcast(&h->cond);
            pthread_cond_wait(&h->cond, &h->lock);
            h->blocked--;
        }
    }
    int fail = is_log ? h->fail_sync : 0;
    pthread_mutex_unlock(&h->lock);
    if (fail)
        return -fail;
    int r = fileio_posix()->fdatasync(fileio_posix(), fd);
    if (r == 0 && is_log) {
        char name[16] = "";
        (void)pthread_getname_np(pthread_self(), name, sizeof name);
        pthread_mutex_lock(&h->lock);
        h->helper_syncs += strncmp(name, "pbd:", 4) == 0;
        h->syncs++;
        h->unsynced[fd] = false; /* only the writer thread writes: nothing came in between */
        pthread_cond_broadcast(&h->cond);
        pthread_mutex_unlock(&h->lock);
    }
    return r;
}

static int t_fsync(const fileio *io, int fd)
{
    return fileio_posix()->fsync(fileio_posix(), fd);
}

static int t_ftruncate(const fileio *io, int fd, off_t len)
{
    return fileio_posix()->ftruncate(fileio_posix(), fd, len);
}

static int t_fsize(const fileio *io, int fd, off_t *size)
{
    return fileio_posix()->fsize(fileio_posix(), fd, size);
}

static int t_close(const fileio *io, int fd)
{
    ph_harness *h = io_h(io);
    if (fd >= 0 && fd < MAX_FD) {
        pthread_mutex_lock(&h->lock);
        h->is_log[fd] = false;
        h->unsynced[fd] = false;
        pthread_mutex_unlock(&h->lock);
    }
    return fileio_posix()->close(fileio_posix(), fd);
}

static int t_mkdir(const fileio *io, const char *path, int mode)
{
    return fileio_posix()->mkdir(fileio_posix(), path, mode);
}

static int t_rmdir(const fileio *io, const char *path)
{
    return fileio_posix()->rmdir(fileio_posix(), path);
}

static int t_unlink(const fileio *io, const char *path)
{
    return fileio_posix()->unlink(fileio_posix(), path);
}

static int t_rename(const fileio *io, const char *from, const char *to)
{
    return fileio_posix()->rename(fileio_posix(), from, to);
}

static int t_list_dir(const fileio *io, const char *path, fileio_dirent_fn fn, void *arg)
{
    return fileio_posix()->list_dir(fileio_posix(), path, fn, arg);
}

static int64_t t_now(void *ctx)
{
    ph_harness *h = ctx;
    return atomic_load(&h->clock_ns);
}

size_t ph_early_acks(ph_harness *h)
{
    pthread_mutex_lock(&h->lock);
    size_t n = h->early_acks;
    pthread_mutex_unlock(&h->lock);
    return n;
}

void ph_on_done(pub_part *part)
{
    ph_harness *h = part->batch->conn;
    pthread_mutex_lock(&h->lock);
    if (h->check_durable && part->status == 0)
        for (int fd = 0; fd < MAX_FD; fd++)
            if (h->is_log[fd] && h->unsynced[fd])
                h->early_acks++;
    h->done_count++;
    ((ph_batch *)(void *)part->batch)->syncs_at_done = h->syncs; /* b is its first member */
    atomic_fetch_sub(&part->batch->pending, 1);
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
}

static void ph_deadline_in(struct timespec *ts, int seconds)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += seconds;
}

/* Waits (bounded) until `count` done() calls have been made. */
void ph_wait_done(ph_harness *h, size_t count)
{
    struct timespec ts;
    ph_deadline_in(&ts, WAIT_LIMITS);
    pthread_mutex_lock(&h->lock);
    int rc = 0;
    while (h->done_count < count && rc == 0)
        rc = pthread_cond_timedwait(&h->cond, &h->lock, &ts);
    size_t got = h->done_count;
    pthread_mutex_unlock(&h->lock);
    assert_int_equal(got, count);
}

/* Waits (bounded) until the writer is held at the fdatasync gate. */
void ph_wait_blocked(ph_harness *h)
{
    struct timespec ts;
    ph_deadline_in(&ts, WAIT_LIMITS);
    pthread_mutex_lock(&h->lock);
    int rc = 0;
    while (h->blocked == 0 && rc == 0)
        rc = pthread_cond_timedwait(&h->cond, &h->lock, &ts);
    int blocked = h->blocked;
    pthread_mutex_unlock(&h->lock);
    assert_int_equal(blocked, 1);
}

/* Waits (bounded) until at least `count` .log fdatasyncs have completed. */
void ph_wait_syncs(ph_harness *h, size_t count)
{
    struct timespec ts;
    ph_deadline_in(&ts, WAIT_LIMITS);
    pthread_mutex_lock(&h->lock);
    int rc = 0;
    while (h->syncs < count && rc == 0)
        rc = pthread_cond_timedwait(&h->cond, &h->lock, &ts);
    size_t got = h->syncs;
    pthread_mutex_unlock(&h->lock);
    assert_true(got >= count);
}

void ph_gate(ph_harness *h, bool closed)
{
    pthread_mutex_lock(&h->lock);
    h->gate_closed = closed;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
}

void ph_submit_held(ph_harness *h, partition *p, ph_batch *b)
{
    ph_gate(h, true);
    partition_submit(p, &b->part);
    ph_wait_blocked(h);
}

size_t ph_syncs_now(ph_harness *h)
{
    pthread_mutex_lock(&h->lock);
    size_t n = h->syncs;
    pthread_mutex_unlock(&h->lock);
    return n;
}

/* --- batches, as net.c would build them --- */

/* n events with topic "t<seq % 3>" and payload_size = seq, seq counting from first_seq. */
ph_batch *ph_batch_new(ph_harness *h, partition *p, size_t n, uint64_t first_seq)
{
    ph_batch *tb = calloc(1, sizeof *tb);
    assert_non_null(tb);
    assert_true(n <= MAX_EVENTS);
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        char topic[16];
        uint64_t seq = first_seq + i;
        int tl = snprintf(topic, sizeof topic, "t%llu", (unsigned long long)(seq % 3));
        uint8_t *e = tb->bytes + pos;
        size_t len = wire_put_len_field(e, 1, topic, (size_t)tl);
        len += wire_put_varint_field(e + len, 6, seq);
        tb->ev[i] = (pub_event){.data = e,
                                .len = (uint32_t)len,
                                .topic = e + 2,
                                .topic_len = (uint32_t)tl,
                                .part = 0,
                                .offset = UINT64_MAX};
        tb->idx[i] = (uint32_t)i;
        pos += len;
    }
    tb->part = (pub_part){
        .batch = &tb->b, .partition = p, .events = tb->idx, .count = (uint32_t)n, .status = 1};
    tb->b.done = ph_on_done;
    atomic_init(&tb->b.pending, 1);
    tb->b.conn = h;
    tb->b.nevents = (uint32_t)n;
    tb->b.events = tb->ev;
    tb->b.nparts = 1;
    tb->b.parts = &tb->part;
    tb->b.bytes = tb->bytes;
    tb->b.bytes_len = pos;
    return tb;
}

/* --- fixture --- */

int ph_setup(void **state)
{
    ph_fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    strcpy(f->root, "/tmp/test_partition.XXXXXX");
    if (!mkdtemp(f->root))
        return -1;
    ph_harness *h = &f->h;
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->cond, NULL);
    h->check_durable = true;
    atomic_init(&h->clock_ns, 1700000000123456789ll);
    h->io = (fileio){.open = t_open,
                     .pwritev = t_pwritev,
                     .pread = t_pread,
                     .fdatasync = t_fdatasync,
                     .fsync = t_fsync,
                     .ftruncate = t_ftruncate,
                     .fsize = t_fsize,
                     .close = t_close,
                     .mkdir = t_mkdir,
                     .rmdir = t_rmdir,
                     .unlink = t_unlink,
                     .rename = t_rename,
                     .list_dir = t_list_dir,
                     .ctx = h};
    f->opts = (partition_options){
        .log = {.io = &h->io, .now_ns = t_now, .clock_ctx = h},
        .fsync = PARTITION_FSYNC_ALWAYS,
        .topic_history = 4,
    };
    *state = f;
    return 0;
}

int ph_teardown(void **state)
{
    ph_fixture *f = *state;
    testfs_rmrf(f->root);
    pthread_mutex_destroy(&f->h.lock);
    pthread_cond_destroy(&f->h.cond);
    free(f);
    return 0;
}

partition *ph_open(ph_fixture *f)
{
    partition *p = NULL;
    assert_int_equal(partition_open(&p, f->root, "p", &f->opts), 0);
    return p;
}

void ph_queue_parts(partition *p, pub_part *const *parts, size_t n)
{
    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < n; i++) {
        parts[i]->next = NULL;
        if (p->tail)
            p->tail->next = parts[i];
        else
            p->head = parts[i];
        p->tail = parts[i];
    }
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->lock);
}

/* Submits one batch of n events and waits for its done(). */
ph_batch *ph_publish(ph_fixture *f, partition *p, size_t n, uint64_t first_seq)
{
    size_t before;
    pthread_mutex_lock(&f->h.lock);
    before = f->h.done_count;
    pthread_mutex_unlock(&f->h.lock);
    ph_batch *tb = ph_batch_new(&f->h, p, n, first_seq);
    partition_submit(p, &tb->part);
    ph_wait_done(&f->h, before + 1);
    return tb;
}

/* Reads the partition back: offsets 0..count-1, each event = client bytes +
 * the server_receive_time suffix with the record's time. */
void ph_check_files(ph_fixture *f, uint64_t count)
{
    char dir[96];
    snprintf(dir, sizeof dir, "%s/p", f->root);
    pb_reader *r;
    assert_int_equal(pb_reader_open(&r, dir), 0);
    for (uint64_t i = 0; i < count; i++) {
        pb_record rec;
        assert_int_equal(pb_reader_next(r, &rec), 0);
        assert_int_equal(rec.offset, i);
        event_view v;
        char err[160];
        assert_int_equal(event_scan(rec.event, rec.event_len, &v, err, sizeof err), 0);
        assert_int_equal(v.payload_size, (int64_t)i); /* the tests publish seq = offset */
        assert_true(v.server_receive_time.present);
        assert_int_equal(v.server_receive_time.ns, rec.time_ns);
        uint8_t want[128];
        char topic[16];
        int tl = snprintf(topic, sizeof topic, "t%llu", (unsigned long long)(i % 3));
        size_t len = wire_put_len_field(want, 1, topic, (size_t)tl);
        len += wire_put_varint_field(want + len, 6, i);
        len += event_put_receive_time(want + len, sizeof want - len, rec.time_ns);
        assert_int_equal(rec.event_len, len);
        assert_memory_equal(rec.event, want, len);
    }
    pb_record rec;
    assert_int_equal(pb_reader_next(r, &rec), PB_EEOF);
    pb_reader_close(r);
}

void ph_give_ids(ph_batch *tb, uint64_t first_seq, uint64_t first_id, uint32_t ndup)
{
    size_t pos = 0;
    for (uint32_t i = 0; i < tb->b.nevents; i++) {
        char topic[16], id[16];
        uint64_t seq = first_seq + i;
        int tl = snprintf(topic, sizeof topic, "t%llu", (unsigned long long)(seq % 3));
        int il =
            snprintf(id, sizeof id, "id%08llu", (unsigned long long)(i < ndup ? i : first_id + i));
        uint8_t *e = tb->bytes + pos;
        size_t len = wire_put_len_field(e, 1, topic, (size_t)tl);
        size_t id_at = len + 2;
        len += wire_put_len_field(e + len, 8, id, (size_t)il);
        len += wire_put_varint_field(e + len, 6, seq);
        tb->ev[i] = (pub_event){.data = e,
                                .len = (uint32_t)len,
                                .topic = e + 2,
                                .topic_len = (uint32_t)tl,
                                .id = e + id_at,
                                .id_len = (uint8_t)il,
                                .offset = UINT64_MAX};
        pos += len;
    }
    tb->b.bytes_len = pos;
}

uint64_t ph_window_has(partition *p, uint64_t n)
{
    char s[16];
    int il = snprintf(s, sizeof s, "id%08llu", (unsigned long long)n);
    uint64_t off;
    return dedup_find(p->dedup, (const uint8_t *)s, (size_t)il, &off) == 1 ? off : UINT64_MAX;
}

/* One record read back by ph_check_acked. */
typedef struct ph_rec {
    uint8_t *bytes;
    size_t len;
    int64_t time_ns;
} ph_rec;

static int id_cmp(const void *a, const void *b)
{
    const ph_rec *x = a, *y = b;
    const uint8_t *ix, *iy;
    size_t lx = dedup_event_id(x->bytes, x->len, &ix), ly = dedup_event_id(y->bytes, y->len, &iy);
    if (lx != ly)
        return lx < ly ? -1 : 1;
    return lx ? memcmp(ix, iy, lx) : 0;
}

/* Reads every record of <root>/p (offsets from 0, no gap) into *out. */
static uint64_t read_all(ph_fixture *f, const fileio *io, ph_rec **out)
{
    char dir[96];
    snprintf(dir, sizeof dir, "%s/p", f->root);
    pb_reader *r;
    segment_io sio;
    if (io)
        fileio_segment_io(io, &sio);
    assert_int_equal(io ? pb_reader_open_io(&r, dir, &sio) : pb_reader_open(&r, dir), 0);
    size_t cap = 1024, n = 0;
    ph_rec *recs = malloc(cap * sizeof *recs);
    assert_non_null(recs);
    pb_record rec;
    int rc;
    for (int guard = 0; guard < 10000000 && (rc = pb_reader_next(r, &rec)) == 0; guard++) {
        assert_int_equal(rec.offset, n);
        if (n == cap) {
            cap *= 2;
            recs = realloc(recs, cap * sizeof *recs);
            assert_non_null(recs);
        }
        recs[n].bytes = malloc(rec.event_len);
        assert_non_null(recs[n].bytes);
        memcpy(recs[n].bytes, rec.event, rec.event_len);
        recs[n].len = rec.event_len;
        recs[n++].time_ns = rec.time_ns;
    }
    assert_int_equal(rc, PB_EEOF);
    pb_reader_close(r);
    *out = recs;
    return n;
}

/* Does record r carry the id of event ev? */
static bool same_id(const ph_rec *r, const pub_event *ev)
{
    const uint8_t *id;
    size_t len = dedup_event_id(r->bytes, r->len, &id);
    return len == ev->id_len && len > 0 && memcmp(id, ev->id, len) == 0;
}

uint64_t ph_check_acked(ph_fixture *f, const fileio *io, ph_batch *const *b, size_t nb)
{
    ph_rec *recs;
    uint64_t end = read_all(f, io, &recs);
    for (size_t i = 0; i < nb; i++) {
        if (b[i]->part.status != 0)
            continue;
        for (uint32_t k = 0; k < b[i]->part.count; k++) {
            const pub_event *ev = &b[i]->ev[b[i]->idx[k]];
            if (ev->offset >= end)
                fail_msg("batch %zu event %u acked at offset %llu, the log ends at %llu", i, k,
                         (unsigned long long)ev->offset, (unsigned long long)end);
            const ph_rec *r = &recs[ev->offset];
            if (ev->duplicate) {
                if (!same_id(r, ev))
                    fail_msg("batch %zu event %u acked as a duplicate of offset %llu, which "
                             "holds another id",
                             i, k, (unsigned long long)ev->offset);
                continue;
            }
            uint8_t sfx[SUFFIX_SLOT];
            size_t sl = event_put_receive_time(sfx, sizeof sfx, r->time_ns);
            if (r->len != ev->len + sl || memcmp(r->bytes, ev->data, ev->len) != 0 ||
                memcmp(r->bytes + ev->len, sfx, sl) != 0)
                fail_msg("batch %zu event %u acked at offset %llu: the record there is not "
                         "its bytes",
                         i, k, (unsigned long long)ev->offset);
        }
    }
    qsort(recs, end, sizeof *recs, id_cmp);
    for (uint64_t o = 0; o + 1 < end; o++) {
        const uint8_t *id;
        if (dedup_event_id(recs[o].bytes, recs[o].len, &id) > 0 &&
            id_cmp(&recs[o], &recs[o + 1]) == 0)
            fail_msg("an id is stored twice");
    }
    for (uint64_t o = 0; o < end; o++)
        free(recs[o].bytes);
    free(recs);
    return end;
}
