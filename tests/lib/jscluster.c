/*
 * jscluster - nats-server processes for tests (see jscluster.h).
 */
#include "jscluster.h"

#include "testfs.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A port nobody uses right now (the kernel's pick), and the socket that
 * holds it: the caller closes it once every port is picked, so that two
 * picks of one cluster never get the same port. */
static uint16_t free_port(int *held)
{
    *held = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (*held < 0)
        return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    uint16_t port = 0;
    if (bind(*held, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(*held, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    return port;
}

static int accepts(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static int write_conf(const jscluster *c, int i)
{
    char path[400];
    snprintf(path, sizeof path, "%s/n%d.conf", c->dir, i + 1);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "server_name: n%d\nlisten: 127.0.0.1:%u\n", i + 1, c->port[i]);
    fprintf(f, "jetstream { store_dir: \"%s/js%d\" }\n", c->dir, i + 1);
    if (c->n > 1) {
        fprintf(f, "cluster {\n  name: pbtest\n  listen: 127.0.0.1:%u\n  routes: [", c->route[i]);
        for (int j = 0; j < c->n; j++)
            fprintf(f, "%snats-route://127.0.0.1:%u", j ? ", " : "", c->route[j]);
        fprintf(f, "]\n}\n");
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* Whether the log has this process's "Server is ready" (nats-server starts
 * each line with "[PID] "): a listener on the port that is not this
 * nats-server (another program's, in a parallel test run) is not taken for
 * it. */
static bool says_ready(const char *log, pid_t pid)
{
    FILE *f = fopen(log, "r");
    if (!f)
        return false;
    char line[512], tag[32];
    int n = snprintf(tag, sizeof tag, "[%d] ", (int)pid);
    bool ready = false;
    while (!ready && fgets(line, sizeof line, f))
        ready = strncmp(line, tag, (size_t)n) == 0 && strstr(line, "Server is ready");
    fclose(f);
    return ready;
}

int jscluster_start_node(jscluster *c, int i)
{
    char conf[400], log[400];
    snprintf(conf, sizeof conf, "%s/n%d.conf", c->dir, i + 1);
    snprintf(log, sizeof log, "%s/n%d.log", c->dir, i + 1);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
            close(fd);
        }
        execlp("nats-server", "nats-server", "-c", conf, (char *)NULL);
        fprintf(stderr, "exec nats-server: %s (tests/install-deps installs it)\n", strerror(errno));
        _exit(127);
    }
    c->pid[i] = pid;
    uint64_t deadline = now_ms() + 20000;
    while (now_ms() < deadline) {
        if (says_ready(log, pid) && accepts(c->port[i]))
            return 0;
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            fprintf(stderr, "jscluster: nats-server n%d exited at start (status %d); log %s\n",
                    i + 1, status, log);
            c->pid[i] = 0;
            return -1;
        }
        nap_ms(20);
    }
    fprintf(stderr, "jscluster: nats-server n%d did not listen within 20 s; log %s\n", i + 1, log);
    jscluster_stop_node(c, i);
    return -1;
}

int jscluster_start(jscluster *c, int n)
{
    memset(c, 0, sizeof *c);
    if (n < 1 || n > JSCLUSTER_MAX)
        return -1;
    c->n = n;
    snprintf(c->dir, sizeof c->dir, "/tmp/pbjs.XXXXXX");
    if (!mkdtemp(c->dir)) {
        perror("jscluster: mkdtemp");
        return -1;
    }
    size_t len = 0;
    int held[2 * JSCLUSTER_MAX];
    bool picked = true;
    for (int i = 0; i < n; i++) {
        c->port[i] = free_port(&held[2 * i]);
        c->route[i] = free_port(&held[2 * i + 1]);
        picked = picked && c->port[i] && c->route[i];
        len += (size_t)snprintf(c->urls + len, sizeof c->urls - len, "%snats://127.0.0.1:%u",
                                i ? ", " : "", c->port[i]);
    }
    for (int i = 0; i < 2 * n; i++)
        if (held[i] >= 0)
            close(held[i]);
    if (!picked)
        return -1;
    for (int i = 0; i < n; i++)
        if (write_conf(c, i) < 0)
            return -1;
    for (int i = 0; i < n; i++)
        if (jscluster_start_node(c, i) < 0)
            return -1;
    return 0;
}

void jscluster_stop_node(jscluster *c, int i)
{
    if (c->pid[i] <= 0)
        return;
    kill(c->pid[i], SIGTERM);
    uint64_t deadline = now_ms() + 10000;
    while (now_ms() < deadline) {
        if (waitpid(c->pid[i], NULL, WNOHANG) == c->pid[i]) {
            c->pid[i] = 0;
            return;
        }
        nap_ms(10);
    }
    kill(c->pid[i], SIGKILL);
    waitpid(c->pid[i], NULL, 0);
    c->pid[i] = 0;
}

void jscluster_cleanup(jscluster *c)
{
    for (int i = 0; i < c->n; i++)
        jscluster_stop_node(c, i);
    if (c->dir[0] && !getenv("ITEST_KEEP"))
        testfs_rmrf(c->dir);
    c->dir[0] = '\0';
}
