/*
 * bench_tcp - `protobus bench tcp`: loopback TCP bandwidth with no server
 * and no protocol, the baseline the server modes are compared with. A
 * writer thread pushes --bytes through a 127.0.0.1 connection; the main
 * thread reads them.
 *
 * With --to-file DIR, the socket-to-disk baseline: the main thread hands
 * what it reads to a durable receiver (bench_tcpfile.h) that writes it into
 * a temp file in DIR and fdatasyncs it like protobusd's group commit; the
 * clock stops once every byte is durable.
 *
 * Threads: the main thread (reader) and one writer thread; they share only
 * the writer's struct, read after the join.
 */
#include "bench_tcp.h"
#include "bench_tcpfile.h"

#include "cli.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define TCP_CHUNK (256u * 1024u)

typedef struct tcp_writer {
    int fd;
    uint64_t bytes;
    int rc;
} tcp_writer;

static void *tcp_write_main(void *arg)
{
    tcp_writer *w = arg;
    static uint8_t chunk[TCP_CHUNK];
    uint64_t left = w->bytes;
    while (left > 0) {
        size_t n = left < TCP_CHUNK ? (size_t)left : TCP_CHUNK;
        ssize_t k = write(w->fd, chunk, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            w->rc = -errno;
            break;
        }
        left -= (uint64_t)k;
    }
    return NULL;
}

/* Reads bytes from rfd into buf, TCP_CHUNK at a time. 0, or a negative code. */
static int receive_all(int rfd, uint8_t *buf, uint64_t bytes)
{
    uint64_t got = 0;
    while (got < bytes) {
        ssize_t k = read(rfd, buf, TCP_CHUNK);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return k < 0 ? -errno : PB_ECLOSED;
        got += (uint64_t)k;
    }
    return 0;
}

int bench_mode_tcp(bench_cfg *cfg, bench_result *res)
{
    int lfd = -1, wfd = -1, rfd = -1, rc = 0;
    tcpfile *sink = NULL;
    bool file_failed = false;
    uint8_t *buf = malloc(TCP_CHUNK);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (!buf)
        return PB_ENOMEM;
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 1) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) != 0)
        goto sys_fail;
    wfd = socket(AF_INET, SOCK_STREAM, 0);
    if (wfd < 0 || connect(wfd, (struct sockaddr *)&a, sizeof a) != 0)
        goto sys_fail;
    rfd = accept(lfd, NULL, NULL);
    if (rfd < 0)
        goto sys_fail;
    if (cfg->tcp_to_file &&
        (rc = tcpfile_open(cfg->tcp_to_file, cfg->tcp_commit_bytes, cfg->tcp_direct, &sink)) < 0)
        goto out;
    tcp_writer w = {.fd = wfd, .bytes = cfg->tcp_bytes};
    pthread_t t;
    int64_t t0 = bench_mono_ns();
    rc = -pthread_create(&t, NULL, tcp_write_main, &w);
    if (rc < 0)
        goto out;
    rc = sink ? tcpfile_receive(sink, rfd, cfg->tcp_bytes, &file_failed)
              : receive_all(rfd, buf, cfg->tcp_bytes);
    if (rc < 0)
        shutdown(rfd, SHUT_RDWR); /* the writer must not stay blocked on a full socket */
    pthread_join(t, NULL);
    if (rc == 0 && w.rc < 0)
        rc = w.rc;
    double secs = (double)(bench_mono_ns() - t0) / 1e9;
    double mb_s = (double)cfg->tcp_bytes / secs / 1e6;
    if (rc == 0 && sink) {
        uint64_t syncs = tcpfile_syncs(sink);
        printf("tcp->file %" PRIu64 " bytes over 127.0.0.1 into %s, durable in %.3f s: %.1f MB/s "
               "(%" PRIu64 " fdatasyncs, %.2f MiB each)\n",
               cfg->tcp_bytes, tcpfile_path(sink), secs, mb_s, syncs,
               syncs ? (double)cfg->tcp_bytes / (double)syncs / 1048576.0 : 0.0);
        bench_result_add(res, " tcp_file_mb_s=%.1f tcp_file_syncs=%" PRIu64, mb_s, syncs);
    } else if (rc == 0) {
        printf("tcp       %" PRIu64 " bytes over 127.0.0.1 in %.3f s: %.1f MB/s\n", cfg->tcp_bytes,
               secs, mb_s);
        bench_result_add(res, " tcp_mb_s=%.1f", mb_s);
    } else if (!file_failed) {
        cli_error(BENCH_CMD, "loopback transfer: %s", pb_strerror(rc));
    }
    goto out;
sys_fail:
    rc = -errno;
    cli_error(BENCH_CMD, "loopback socket on 127.0.0.1: %s", strerror(errno));
out:
    if (lfd >= 0 && close(lfd) != 0 && rc == 0)
        rc = -errno;
    if (wfd >= 0 && close(wfd) != 0 && rc == 0)
        rc = -errno;
    if (rfd >= 0 && close(rfd) != 0 && rc == 0)
        rc = -errno;
    int c = tcpfile_close(sink);
    if (c < 0 && rc == 0) {
        cli_error(BENCH_CMD, "--to-file: close of its file: %s", pb_strerror(c));
        rc = c;
    }
    free(buf);
    return rc;
}
