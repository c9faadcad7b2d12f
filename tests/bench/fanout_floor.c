/*
 * fanout_floor - what the fan-out's deliveries cost the kernel alone, with
 * no broker at all: the baseline of the "+ 1,000 subscriptions" row of
 * `make bench` (tests/bench/run, workload fanout).
 *
 * One sender thread writes a run of PER events of SIZE bytes to each of SUBS
 * loopback TCP connections in turn (TCP_NODELAY, as protobusd's sockets), as
 * many rounds as EVENTS needs; RECV threads each epoll over their share of
 * the connections and read everything, as `protobus bench sub
 * --sub-threads` does. The rate is events over the wall time from the first
 * send to the last byte read. protobusd's fan-out sends each subscription
 * the records of a take in one write; `tests/bench/run` passes the events
 * per write the daemon itself made in the same run (its
 * protobus_fanout_wakeups_total), so the two rates compare the same sends.
 *
 * Usage: fanout_floor [-s SUBS] [-n EVENTS] [-p PER] [-z SIZE] [-t RECV]
 * Prints one readable line, then "RESULT events_s=... cpu_us_per_send=...".
 * Loopback only; every wait is bounded (60 s in all).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define DEADLINE_S 60.0
#define MAX_RECV   16

typedef struct {
    int subs, per, size, nrecv;
    long events;
    int *client_fd, *server_fd;
    long expect_bytes;
    atomic_long received;
    double deadline;
    double done; /* when the last byte was read */
    char failure[200];
} floor_run;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return (double)(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
           (double)(r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}

typedef struct {
    floor_run *run;
    int k;
} recv_arg;

static void *recv_main(void *arg)
{
    recv_arg *a = arg;
    floor_run *run = a->run;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        snprintf(run->failure, sizeof run->failure, "epoll_create1: %s", strerror(errno));
        return NULL;
    }
    for (int i = a->k; i < run->subs; i += run->nrecv) {
        struct epoll_event e = {.events = EPOLLIN, .data.fd = run->client_fd[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, run->client_fd[i], &e) < 0) {
            snprintf(run->failure, sizeof run->failure, "epoll_ctl: %s", strerror(errno));
            close(ep);
            return NULL;
        }
    }
    static _Thread_local char buf[65536];
    struct epoll_event ev[64];
    while (atomic_load(&run->received) < run->expect_bytes && now_s() < run->deadline) {
        int n = epoll_wait(ep, ev, 64, 10);
        for (int j = 0; j < n; j++) {
            ssize_t r = recv(ev[j].data.fd, buf, sizeof buf, MSG_DONTWAIT);
            if (r > 0 && atomic_fetch_add(&run->received, r) + r >= run->expect_bytes)
                run->done = now_s(); /* the last byte: once, by one thread */
        }
    }
    close(ep);
    return NULL;
}

/* SUBS connected pairs on 127.0.0.1; 0, or -1 with run->failure. */
static int connect_all(floor_run *run)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 4096) < 0 ||
        getsockname(l, (struct sockaddr *)&a, &al) < 0) {
        snprintf(run->failure, sizeof run->failure, "listening on 127.0.0.1: %s", strerror(errno));
        return -1;
    }
    struct timeval tv = {.tv_sec = 10};
    for (int i = 0; i < run->subs; i++) {
        int one = 1;
        run->client_fd[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (run->client_fd[i] < 0 ||
            connect(run->client_fd[i], (struct sockaddr *)&a, sizeof a) < 0 ||
            (run->server_fd[i] = accept4(l, NULL, NULL, SOCK_CLOEXEC)) < 0) {
            snprintf(run->failure, sizeof run->failure,
                     "connection %d of %d: %s (raise ulimit -n?)", i + 1, run->subs,
                     strerror(errno));
            close(l);
            return -1;
        }
        setsockopt(run->server_fd[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(run->server_fd[i], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    close(l);
    return 0;
}

static int usage(const char *why)
{
    fprintf(stderr,
            "fanout_floor: %s\n"
            "usage: fanout_floor [-s SUBS] [-n EVENTS] [-p EVENTS_PER_SEND] [-z SIZE] "
            "[-t RECV_THREADS]\n",
            why);
    return 2;
}

int main(int argc, char **argv)
{
    floor_run run = {.subs = 1000, .events = 200000, .per = 14, .size = 130, .nrecv = 2};
    int opt;
    while ((opt = getopt(argc, argv, "s:n:p:z:t:")) != -1) {
        if (opt == '?')
            return usage("unknown option");
        char *end;
        long v = strtol(optarg, &end, 10);
        if (*optarg == '\0' || *end != '\0')
            return usage("options take whole numbers");
        if (opt == 's')
            run.subs = (int)v;
        else if (opt == 'n')
            run.events = v;
        else if (opt == 'p')
            run.per = (int)v;
        else if (opt == 'z')
            run.size = (int)v;
        else
            run.nrecv = (int)v;
    }
    if (run.subs < 1 || run.subs > 20000 || run.per < 1 || run.size < 1 ||
        (long)run.per * run.size > (1 << 20) || run.events < 1 || run.nrecv < 1 ||
        run.nrecv > MAX_RECV)
        return usage("SUBS 1..20000, EVENTS >= 1, PER * SIZE <= 1 MiB, RECV 1..16");
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)(2 * run.subs + 64)) {
        rl.rlim_cur =
            rl.rlim_max < (rlim_t)(2 * run.subs + 64) ? rl.rlim_max : (rlim_t)(2 * run.subs + 64);
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    run.client_fd = calloc((size_t)run.subs, sizeof(int));
    run.server_fd = calloc((size_t)run.subs, sizeof(int));
    char *msg = calloc((size_t)run.per, (size_t)run.size);
    if (!run.client_fd || !run.server_fd || !msg) {
        fprintf(stderr, "fanout_floor: out of memory\n");
        return 1;
    }
    if (connect_all(&run) < 0) {
        fprintf(stderr, "fanout_floor: %s\n", run.failure);
        return 1;
    }
    long rounds = (run.events + (long)run.subs * run.per - 1) / ((long)run.subs * run.per);
    long sends = rounds * run.subs;
    run.expect_bytes = sends * run.per * run.size;
    atomic_init(&run.received, 0);
    double c0 = cpu_s(), t0 = now_s();
    run.deadline = t0 + DEADLINE_S;
    pthread_t th[MAX_RECV];
    recv_arg args[MAX_RECV];
    for (int k = 0; k < run.nrecv; k++) {
        args[k] = (recv_arg){&run, k};
        if (pthread_create(&th[k], NULL, recv_main, &args[k]) != 0) {
            fprintf(stderr, "fanout_floor: cannot start a receiving thread\n");
            return 1;
        }
    }
    size_t len = (size_t)run.per * (size_t)run.size;
    for (long r = 0; r < rounds && !run.failure[0]; r++)
        for (int i = 0; i < run.subs; i++)
            if (send(run.server_fd[i], msg, len, MSG_NOSIGNAL) != (ssize_t)len) {
                snprintf(run.failure, sizeof run.failure, "send to connection %d: %s", i + 1,
                         strerror(errno));
                run.deadline = 0; /* the receivers stop */
                break;
            }
    for (int k = 0; k < run.nrecv; k++)
        pthread_join(th[k], NULL);
    double cpu = cpu_s() - c0, t1 = run.done;
    if (!run.failure[0] && atomic_load(&run.received) < run.expect_bytes)
        snprintf(run.failure, sizeof run.failure, "only %ld of %ld bytes read within %.0f s",
                 atomic_load(&run.received), run.expect_bytes, DEADLINE_S);
    for (int i = 0; i < run.subs; i++) {
        close(run.client_fd[i]);
        close(run.server_fd[i]);
    }
    free(run.client_fd);
    free(run.server_fd);
    free(msg);
    if (run.failure[0]) {
        fprintf(stderr, "fanout_floor: %s\n", run.failure);
        return 1;
    }
    long events = sends * run.per;
    double rate = (double)events / (t1 - t0);
    printf("floor: %d connections, %d events of %d B per send, %ld events in %.3f s: %.0f "
           "events/s; CPU %.2f us per send, %.3f us per event\n",
           run.subs, run.per, run.size, events, t1 - t0, rate, cpu * 1e6 / (double)sends,
           cpu * 1e6 / (double)events);
    printf("RESULT events_s=%.0f cpu_us_per_send=%.2f cpu_us_per_event=%.3f per_send=%d\n", rate,
           cpu * 1e6 / (double)sends, cpu * 1e6 / (double)events, run.per);
    return 0;
}
