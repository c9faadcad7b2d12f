/*
 * Integration: a failing disk under the daemon. EIO on fdatasync in one
 * partition, ENOSPC on write in another: the publisher gets no ack for the
 * failed group but an Error naming the partition and the reason, the
 * partition refuses later batches and says so in the log, and the daemon
 * keeps serving reads: a subscription from the beginning gets exactly what
 * was acknowledged, nothing of the failed group.
 *
 * Why in-process: the failure has to be injected beneath the log's fileio,
 * and protobusd has (and should have) no switch for that. So this test
 * wires the daemon's own modules exactly as server/main.c does (config,
 * subscription pool, store, router, net on a libuv loop in a thread) with
 * the partitions' fileio replaced by a wrapper over the POSIX one that fails
 * on demand; clients are libprotobus over 127.0.0.1 as usual. Readers (the
 * subscriptions) use the real files.
 */
#include "testfs.h"
#include "config.h"
#include "fanout.h"
#include "fileio.h"
#include "logging.h"
#include "metrics_http.h"
#include "net.h"
#include "partition.h"
#include "pb_errors.h"
#include "protobus.h"
#include "router.h"
#include "store.h"
#include "sub.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define TIMEOUT_MS 10000

/* ---- the failing disk ---------------------------------------------------- */

/* Which partition directory ("/a/") and which call fail, with what. */
static pthread_mutex_t fault_lock = PTHREAD_MUTEX_INITIALIZER;
static char fault_dir[16];
static int fault_sync_err, fault_write_err;
static char fd_path[1024][64]; /* fd -> partition part of its path, for matching */

static bool armed(int fd, int *sync_err, int *write_err)
{
    pthread_mutex_lock(&fault_lock);
    bool hit = fd >= 0 && fd < 1024 && fault_dir[0] && strstr(fd_path[fd], fault_dir) &&
               strstr(fd_path[fd], ".log");
    *sync_err = fault_sync_err;
    *write_err = fault_write_err;
    pthread_mutex_unlock(&fault_lock);
    return hit;
}

static int f_open(const fileio *io, const char *path, int flags, int mode)
{
    int fd = fileio_posix()->open(fileio_posix(), path, flags, mode);
    if (fd >= 0 && fd < 1024) {
        const char *tail = strlen(path) > 63 ? path + strlen(path) - 63 : path;
        pthread_mutex_lock(&fault_lock);
        snprintf(fd_path[fd], sizeof fd_path[fd], "%s", tail);
        pthread_mutex_unlock(&fault_lock);
    }
    return fd;
}

static ssize_t f_pwritev(const fileio *io, int fd, const struct iovec *iov, int cnt, off_t off)
{
    int se, we;
    if (armed(fd, &se, &we) && we)
        return -we;
    return fileio_posix()->pwritev(fileio_posix(), fd, iov, cnt, off);
}

static int f_fdatasync(const fileio *io, int fd)
{
    int se, we;
    if (armed(fd, &se, &we) && se)
        return -se;
    return fileio_posix()->fdatasync(fileio_posix(), fd);
}

static fileio failing_io;

static void arm(const char *part, int sync_err, int write_err)
{
    pthread_mutex_lock(&fault_lock);
    snprintf(fault_dir, sizeof fault_dir, "/%s/", part);
    fault_sync_err = sync_err;
    fault_write_err = write_err;
    pthread_mutex_unlock(&fault_lock);
}

/* ---- the daemon, in process -------------------------------------------- */

typedef struct inproc {
    char dir[64];
    char log_path[128];
    pb_config cfg;
    uv_loop_t loop;
    uv_async_t stop;
    fanout *live;
    sub_registry *subs;
    store *store;
    router *router;
    net *net;
    pthread_t thread;
    int saved_stderr;
} inproc;

static inproc D;

static int options_for(void *ctx, const char *name, partition_options *o)
{
    inproc *d = ctx;
    memset(o, 0, sizeof *o);
    o->log.segment_bytes = 8192;
    o->log.io = &failing_io;
    o->fsync = PARTITION_FSYNC_ALWAYS;
    o->topic_history = 4;
    fanout_writer *w;
    int rc = fanout_writer_get(d->live, name, &w);
    o->durable = fanout_durable;
    o->acked = fanout_acked;
    o->durable_ctx = w;
    return rc;
}

static void on_stop(uv_async_t *a)
{
    inproc *d = a->data;
    net_stop_accepting(d->net);
    uv_close((uv_handle_t *)&d->stop, NULL);
    uv_stop(&d->loop);
}

static void *loop_main(void *arg)
{
    inproc *d = arg;
    uv_run(&d->loop, UV_RUN_DEFAULT);
    /* As main.c: after the loop, on the loop's thread (it runs the loop
     * itself until the connections are closed). */
    net_close(d->net);
    return NULL;
}

static void daemon_start(inproc *d)
{
    memset(d, 0, sizeof *d);
    snprintf(d->dir, sizeof d->dir, "/tmp/pb_iofail.XXXXXX");
    assert_non_null(mkdtemp(d->dir));
    /* The daemon's log lines go to a file the test reads (so do cmocka's
     * failure messages until the end: the file is kept when it fails). */
    snprintf(d->log_path, sizeof d->log_path, "%s/log", d->dir);
    printf("daemon log: %s\n", d->log_path);
    fflush(stdout);
    int lfd = open(d->log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(lfd >= 0);
    fflush(stderr);
    d->saved_stderr = dup(STDERR_FILENO);
    assert_true(d->saved_stderr >= 0);
    assert_true(dup2(lfd, STDERR_FILENO) >= 0);
    assert_int_equal(close(lfd), 0);

    char conf[512], err[512];
    snprintf(conf, sizeof conf,
             "[server]\nlisten = 127.0.0.1:0\ndata_dir = %s/data\n"
             "[partition a]\nmatch = a\\..*\n[partition b]\nmatch = b\\..*\n",
             d->dir);
    if (config_load_string("test_iofail", conf, &d->cfg, err, sizeof err) < 0)
        fail_msg("config: %s", err);
    failing_io = *fileio_posix();
    failing_io.open = f_open;
    failing_io.pwritev = f_pwritev;
    failing_io.fdatasync = f_fdatasync;

    assert_int_equal(uv_loop_init(&d->loop), 0);
    fanout_options fo = {.slots = 4};
    assert_int_equal(fanout_create(&d->live, &fo), 0);
    assert_int_equal(store_open(&d->store, d->cfg.data_dir, options_for, d), 0);
    sub_options so = {.store = d->store,
                      .live = d->live,
                      .threads = 4,
                      .queue_bytes = 1 << 20,
                      .write_deadline_ms = 10000,
                      .topic_history = 4};
    assert_int_equal(sub_registry_create(&d->subs, &so), 0);
    if (router_create(&d->cfg, &d->router, err, sizeof err) < 0)
        fail_msg("router: %s", err);
    net_options no = {.host = "127.0.0.1",
                      .port = 0,
                      .max_frame_bytes = d->cfg.max_frame_bytes,
                      .max_event_bytes = d->cfg.max_event_bytes,
                      .max_connections = 64,
                      .idle_timeout_ms = 10000,
                      .max_inflight_bytes = 16 << 20,
                      .router = d->router,
                      .store = d->store,
                      .subs = d->subs};
    if (net_start(&d->net, &d->loop, &no, err, sizeof err) < 0)
        fail_msg("net: %s", err);
    assert_int_equal(uv_async_init(&d->loop, &d->stop, on_stop), 0);
    d->stop.data = d;
    assert_int_equal(pthread_create(&d->thread, NULL, loop_main, d), 0);
}

/* Stops as main.c does; returns store_close's result (the failed
 * partitions' sticky errors). */
static int daemon_stop(inproc *d)
{
    assert_int_equal(uv_async_send(&d->stop), 0);
    assert_int_equal(pthread_join(d->thread, NULL), 0);
    router_free(d->router);
    sub_registry_destroy(d->subs);
    int rc = store_close(d->store);
    fanout_destroy(d->live);
    uv_run(&d->loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(&d->loop), 0);
    config_free(&d->cfg);
    fflush(stderr);
    assert_true(dup2(d->saved_stderr, STDERR_FILENO) >= 0);
    assert_int_equal(close(d->saved_stderr), 0);
    return rc;
}

static bool log_contains(const inproc *d, const char *text)
{
    fflush(stderr);
    FILE *f = fopen(d->log_path, "r");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, text) != NULL;
}

/* ---- clients ------------------------------------------------------------- */

static pb_client *connect_client(inproc *d)
{
    char addr[64], err[256];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", net_port(d->net));
    pb_client *c;
    if (pb_client_connect(&c, addr, NULL, err, sizeof err) != 0)
        fail_msg("connect: %s", err);
    return c;
}

/* Publishes n events "<part>.x" with payload "<part>-<i>" for i in
 * [first, first+n) as one flush; returns the flush result. */
static int publish(pb_client *c, const char *part, int first, int n)
{
    char topic[16], payload[32];
    snprintf(topic, sizeof topic, "%s.x", part);
    for (int i = first; i < first + n; i++) {
        snprintf(payload, sizeof payload, "%s-%d", part, i);
        pb_event ev = {.topic = topic, .payload = payload, .payload_len = strlen(payload)};
        assert_int_equal(pb_client_publish(c, &ev), 0);
    }
    return pb_client_flush(c, TIMEOUT_MS, NULL, NULL);
}

/* Expects the failed flush's Error to name the partition and the reason. */
static void expect_refused(pb_client *c, const char *part, const char *reason)
{
    const pb_server_error *e = pb_client_server_error(c);
    assert_non_null(e);
    assert_string_equal(e->partition, part);
    char want[64];
    snprintf(want, sizeof want, "partition %s", part);
    if (!strstr(e->message, want) || !strstr(e->message, reason))
        fail_msg("error \"%s\" does not name %s and \"%s\"", e->message, want, reason);
}

/* Subscribes from the beginning to `part` and expects exactly payloads
 * <part>-0 .. <part>-(n-1) at offsets 0..n-1, then nothing more. */
static void expect_stored(inproc *d, const char *part, int n)
{
    pb_client *c = connect_client(d);
    char pattern[16], want[32];
    snprintf(pattern, sizeof pattern, "%s\\..*", part);
    const char *patterns[] = {pattern};
    pb_subscription s = {.patterns = patterns, .npatterns = 1, .start = PB_START_BEGINNING};
    assert_int_equal(pb_client_subscribe(c, &s), 0);
    pb_item it;
    for (int i = 0; i < n; i++) {
        int rc = pb_client_next(c, &it, TIMEOUT_MS);
        if (rc != 0)
            fail_msg("%s: event %d of %d: %s (%s)", part, i, n, pb_strerror(rc),
                     pb_client_message(c));
        assert_int_equal(it.kind, PB_ITEM_EVENT);
        assert_true(it.event.offset == (uint64_t)i);
        snprintf(want, sizeof want, "%s-%d", part, i);
        assert_int_equal(it.event.payload_len, strlen(want));
        assert_memory_equal(it.event.payload, want, strlen(want));
    }
    /* History ends there: the failed group was written before its sync
     * failed, and it is not history (nor live: a bounded look for something
     * that must not come). */
    assert_int_equal(pb_client_next(c, &it, TIMEOUT_MS), 0);
    assert_int_equal(it.kind, PB_ITEM_CAUGHT_UP);
    assert_int_equal(it.caught_up.history_events, n);
    int rc = pb_client_next(c, &it, 300);
    if (rc != PB_ETIMEDOUT)
        fail_msg("%s: after the %d acked events: %s, kind %d offset %llu", part, n, pb_strerror(rc),
                 rc == 0 ? (int)it.kind : 0, rc == 0 ? (unsigned long long)it.event.offset : 0ull);
    pb_client_close(c);
}

/* GET path from the metrics endpoint (HTTP/1.0 over 127.0.0.1): the
 * status code, the body (after the headers) into body. */
static int http_get(uint16_t port, const char *path, char *body, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char req[128];
    int len = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\n\r\n", path);
    assert_int_equal(write(fd, req, (size_t)len), len);
    static char resp[65536];
    size_t got = 0;
    ssize_t n;
    while (got < sizeof resp - 1 && (n = read(fd, resp + got, sizeof resp - 1 - got)) > 0)
        got += (size_t)n;
    close(fd);
    resp[got] = '\0';
    int code = 0;
    assert_int_equal(sscanf(resp, "HTTP/1.%*d %d", &code), 1);
    const char *b = strstr(resp, "\r\n\r\n");
    snprintf(body, cap, "%s", b ? b + 4 : "");
    return code;
}

static void test_eio_and_enospc(void **state)
{
    inproc *d = &D;
    daemon_start(d);
    metrics_http *mh;
    char err[256], body[4096];
    assert_int_equal(metrics_http_start(&mh, "127.0.0.1", 0, d->store, NULL, err, sizeof err), 0);
    uint16_t mport = metrics_http_port(mh);
    pb_client *c = connect_client(d);
    assert_int_equal(publish(c, "a", 0, 50), 0);
    assert_int_equal(publish(c, "b", 0, 30), 0);
    assert_int_equal(http_get(mport, "/healthz", body, sizeof body), 200);

    /* EIO from fdatasync in a: the group is written, not durable, not acked. */
    arm("a", EIO, 0);
    assert_int_equal(publish(c, "a", 50, 10), PB_ESERVER);
    expect_refused(c, "a", "Input/output error");
    assert_true(log_contains(d, "partition a: fdatasync failed: Input/output error; the "
                                "partition accepts no more events"));
    /* The disk works again: the partition still refuses (no retry, no late ack). */
    arm("", 0, 0);
    assert_int_equal(publish(c, "a", 60, 5), PB_ESERVER);
    expect_refused(c, "a", pb_strerror(PB_EFAILED));
    /* /healthz says so, and keeps saying so: a failed partition does not
     * recover while the daemon runs (a restart recovers it from the files). */
    assert_int_equal(http_get(mport, "/healthz", body, sizeof body), 503);
    assert_non_null(strstr(body, "partition a accepts no writes: Input/output error"));
    assert_null(strstr(body, "partition b"));
    assert_int_equal(http_get(mport, "/metrics", body, sizeof body), 200);
    assert_non_null(strstr(body, "protobus_partition_up{partition=\"a\"} 0\n"));
    assert_non_null(strstr(body, "protobus_partition_fsync_errors_total{partition=\"a\"} 1\n"));
    assert_non_null(strstr(body, "protobus_partition_events_appended_total{partition=\"a\"} 50\n"));
    /* b is not affected. */
    assert_int_equal(publish(c, "b", 30, 10), 0);

    /* ENOSPC from the write in b. */
    arm("b", 0, ENOSPC);
    assert_int_equal(publish(c, "b", 40, 10), PB_ESERVER);
    expect_refused(c, "b", "No space left on device");
    assert_true(log_contains(d, "partition b: write failed: No space left on device"));
    pb_client_close(c);

    /* Reads go on: exactly what was acknowledged. */
    expect_stored(d, "a", 50);
    expect_stored(d, "b", 40);
    assert_int_equal(http_get(mport, "/healthz", body, sizeof body), 503);
    assert_non_null(strstr(body, "partition b accepts no writes: No space left on device"));
    metrics_http_stop(mh);
    arm("", 0, 0);
    int rc = daemon_stop(d);
    assert_true(rc == -EIO || rc == -ENOSPC || rc == PB_EFAILED);
    assert_int_equal(testfs_rmrf(d->dir), 0);
}

/* What protobusd's upkeep timer does (server/main.c, retain_tick). */
static void upkeep_tick_all(inproc *d)
{
    partition **ps;
    size_t n;
    assert_int_equal(store_list(d->store, &ps, &n), 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    for (size_t i = 0; i < n; i++)
        partition_upkeep_tick(ps[i], (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec);
    free(ps);
}

/* A full disk heals: ENOSPC stops b (503 naming it), space returns (the
 * fault is disarmed; statvfs always said there was room), the partition
 * resumes by itself within a few probes, /healthz is 200 again and b's
 * partition_up is 1; only what was acked is stored, then what follows. */
static void test_enospc_heals(void **state)
{
    inproc *d = &D;
    daemon_start(d);
    metrics_http *mh;
    char err[256], body[4096];
    assert_int_equal(metrics_http_start(&mh, "127.0.0.1", 0, d->store, NULL, err, sizeof err), 0);
    uint16_t mport = metrics_http_port(mh);
    pb_client *c = connect_client(d);
    assert_int_equal(publish(c, "b", 0, 20), 0);
    arm("b", 0, ENOSPC);
    assert_int_equal(publish(c, "b", 20, 10), PB_ESERVER);
    expect_refused(c, "b", "No space left on device");
    pb_client_close(c);
    assert_int_equal(http_get(mport, "/healthz", body, sizeof body), 503);
    assert_non_null(strstr(body, "partition b accepts no writes: No space left on device"));

    arm("", 0, 0);
    /* protobusd's upkeep timer (main.c's retain_tick, once a second) asks
     * each partition to probe; here the test is that timer, every 100 ms,
     * for at most 10 s, until /healthz says 200. */
    int code = 0;
    for (int i = 0; i < 100 && (code = http_get(mport, "/healthz", body, sizeof body)) != 200; i++) {
        upkeep_tick_all(d);
        usleep(100 * 1000);
    }
    if (code != 200)
        fail_msg("/healthz still %d 10 s after space came back: %s", code, body);
    assert_string_equal(body, "ok\n");
    assert_true(log_contains(d, "partition b: space is back; resumed at offset 20"));
    assert_int_equal(http_get(mport, "/metrics", body, sizeof body), 200);
    assert_non_null(strstr(body, "protobus_partition_up{partition=\"b\"} 1\n"));

    /* Publishing resumes at the acked end: the refused batch is not there. */
    c = connect_client(d);
    assert_int_equal(publish(c, "b", 20, 10), 0);
    pb_client_close(c);
    expect_stored(d, "b", 30);
    metrics_http_stop(mh);
    assert_int_equal(daemon_stop(d), 0);
    assert_int_equal(testfs_rmrf(d->dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eio_and_enospc),
        cmocka_unit_test(test_enospc_heals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
