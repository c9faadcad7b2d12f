/*
 * bench_tcp - `protobus bench tcp`: loopback TCP bandwidth with no server
 * and no protocol, the baseline the server modes are compared with. A
 * writer thread pushes --bytes through a 127.0.0.1 connection; the main
 * thread reads them.
 *
 * Threads: the main thread (reader) and one writer thread; they share only
 * the writer's struct, read after the join.
 */
#include "bench_tcp.h"

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

int bench_mode_tcp(bench_cfg *cfg, bench_result *res)
{
    int lfd = -1, wfd = -1, rfd = -1, rc = 0;
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
    tcp_writer w = {.fd = wfd, .bytes = cfg->tcp_bytes};
    pthread_t t;
    int64_t t0 = bench_mono_ns();
    rc = -pthread_create(&t, NULL, tcp_write_main, &w);
    if (rc < 0)
        goto out;
    uint64_t got = 0;
    while (got < cfg->tcp_bytes) {
        ssize_t k = read(rfd, buf, TCP_CHUNK);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            rc = k < 0 ? -errno : PB_ECLOSED;
            break;
        }
        got += (uint64_t)k;
    }
    pthread_join(t, NULL);
    if (rc == 0 && w.rc < 0)
        rc = w.rc;
    if (rc == 0) {
        double secs = (double)(bench_mono_ns() - t0) / 1e9;
        printf("tcp       %" PRIu64 " bytes over 127.0.0.1 in %.3f s: %.1f MB/s\n", got, secs,
               (double)got / secs / 1e6);
        bench_result_add(res, " tcp_mb_s=%.1f", (double)got / secs / 1e6);
    } else {
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
    free(buf);
    return rc;
}
