/* itest - integration test helpers; see itest.h. */
#include "itest.h"

#include "testfs.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

uint64_t itest_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void itest_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

const char *itest_daemon_path(void)
{
    static char path[512];
    const char *b = getenv("BUILD");
    snprintf(path, sizeof path, "%s/protobusd", b && *b ? b : "build");
    return path;
}

/* The last lines of the daemon's log on stderr: the log's directory is
 * removed when the test ends, and a start-up failure needs its reason. */
static void print_log_tail(const itest_daemon *d)
{
    FILE *f = fopen(d->log, "r");
    if (!f)
        return;
    char lines[20][512];
    size_t n = 0;
    while (fgets(lines[n % 20], sizeof lines[0], f))
        n++;
    fclose(f);
    size_t first = n > 20 ? n - 20 : 0;
    for (size_t i = first; i < n; i++)
        fprintf(stderr, "itest: | %s", lines[i % 20]);
}

static int launch(itest_daemon *d)
{
    unlink(d->port_file);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, STDERR_FILENO);
            close(fd);
        }
        if (d->nofile) {
            struct rlimit rl = {.rlim_cur = d->nofile, .rlim_max = d->nofile};
            if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
                fprintf(stderr, "setrlimit: %s\n", strerror(errno));
                _exit(127);
            }
        }
        execl(itest_daemon_path(), "protobusd", "-c", d->conf, "--port-file", d->port_file,
              (char *)NULL);
        fprintf(stderr, "exec %s: %s\n", itest_daemon_path(), strerror(errno));
        _exit(127);
    }
    d->pid = pid;
    /* Wait (bounded) for the port file the daemon writes once it listens. */
    uint64_t deadline = itest_now_ms() + 30000;
    while (itest_now_ms() < deadline) {
        FILE *f = fopen(d->port_file, "r");
        if (f) {
            unsigned port = 0;
            int ok = fscanf(f, "%u", &port) == 1;
            fclose(f);
            if (ok && port > 0) {
                d->port = (uint16_t)port;
                return 0;
            }
        }
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            fprintf(stderr, "itest: protobusd exited during start-up (status %d); log %s\n", status,
                    d->log);
            print_log_tail(d);
            d->pid = 0;
            return -1;
        }
        itest_sleep_ms(10);
    }
    fprintf(stderr, "itest: protobusd did not start within 30 s; log %s\n", d->log);
    print_log_tail(d);
    itest_daemon_kill(d);
    return -1;
}

/* Writes the config into a new temp dir and launches; d is set up. */
static int start(itest_daemon *d, const char *server_extra, const char *rules)
{
    snprintf(d->dir, sizeof d->dir, "/tmp/pbitest.XXXXXX");
    if (!mkdtemp(d->dir)) {
        perror("mkdtemp");
        return -1;
    }
    snprintf(d->data_dir, sizeof d->data_dir, "%s/data", d->dir);
    snprintf(d->conf, sizeof d->conf, "%s/protobusd.conf", d->dir);
    snprintf(d->log, sizeof d->log, "%s/protobusd.log", d->dir);
    snprintf(d->port_file, sizeof d->port_file, "%s/port", d->dir);
    FILE *f = fopen(d->conf, "w");
    if (!f)
        return -1;
    fprintf(f, "[server]\nlisten = 127.0.0.1:0\ndata_dir = %s\n%s\n%s\n", d->data_dir,
            server_extra ? server_extra : "", rules ? rules : "[partition events]\nmatch = .*\n");
    if (fclose(f) != 0)
        return -1;
    return launch(d);
}

int itest_daemon_start(itest_daemon *d, const char *server_extra, const char *rules)
{
    memset(d, 0, sizeof *d);
    return start(d, server_extra, rules);
}

int itest_daemon_start_nofile(itest_daemon *d, const char *server_extra, const char *rules,
                              unsigned nofile)
{
    memset(d, 0, sizeof *d);
    d->nofile = nofile;
    return start(d, server_extra, rules);
}

int itest_daemon_restart(itest_daemon *d)
{
    return launch(d);
}

int itest_daemon_stop(itest_daemon *d)
{
    if (d->pid <= 0)
        return -1;
    kill(d->pid, SIGTERM);
    uint64_t deadline = itest_now_ms() + 30000;
    int status = 0;
    while (itest_now_ms() < deadline) {
        pid_t r = waitpid(d->pid, &status, WNOHANG);
        if (r == d->pid) {
            d->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
        itest_sleep_ms(5);
    }
    fprintf(stderr, "itest: protobusd %d ignored SIGTERM for 30 s; killing it\n", (int)d->pid);
    itest_daemon_kill(d);
    return -1;
}

void itest_daemon_kill(itest_daemon *d)
{
    if (d->pid <= 0)
        return;
    kill(d->pid, SIGKILL);
    waitpid(d->pid, NULL, 0);
    d->pid = 0;
}

void itest_daemon_cleanup(itest_daemon *d)
{
    if (d->pid > 0)
        itest_daemon_stop(d);
    if (d->dir[0] && !getenv("ITEST_KEEP"))
        testfs_rmrf(d->dir);
}

itest_daemon itest_dut;

void itest_start(const char *server_extra, const char *rules)
{
    assert_int_equal(itest_daemon_start(&itest_dut, server_extra, rules), 0);
}

int itest_teardown(void **state)
{
    (void)state;
    itest_daemon_cleanup(&itest_dut);
    return 0;
}

int itest_fixture_setup(void **state, size_t size)
{
    *state = calloc(1, size);
    return *state ? 0 : -1;
}

int itest_fixture_teardown(void **state)
{
    itest_daemon *d = *state;
    if (d)
        itest_daemon_cleanup(d);
    free(d);
    return 0;
}

long itest_daemon_rss_kb(const itest_daemon *d)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)d->pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

int itest_log_contains(const itest_daemon *d, const char *text)
{
    FILE *f = fopen(d->log, "r");
    if (!f)
        return 0;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, text) != NULL;
    fclose(f);
    return found;
}

int itest_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

int itest_send_raw(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

int itest_send_frame(int fd, const Protobus__Frame *f)
{
    size_t len = protobus__frame__get_packed_size(f);
    uint8_t *buf = malloc(len + 10);
    if (!buf)
        return -1;
    size_t pre = 0;
    uint64_t v = len;
    do {
        buf[pre++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    protobus__frame__pack(f, buf + pre);
    int rc = itest_send_raw(fd, buf, pre + len);
    free(buf);
    return rc;
}

/* Reads exactly n bytes before the deadline; 0, or -1 on timeout/EOF/error. */
static int read_full(int fd, uint8_t *p, size_t n, uint64_t deadline)
{
    while (n > 0) {
        int64_t left = (int64_t)deadline - (int64_t)itest_now_ms();
        if (left <= 0)
            return -1;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = poll(&pfd, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        ssize_t got = recv(fd, p, n, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1;
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

Protobus__Frame *itest_recv_frame(int fd, int timeout_ms)
{
    uint64_t deadline = itest_now_ms() + (uint64_t)timeout_ms;
    uint64_t len = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        uint8_t b;
        if (read_full(fd, &b, 1, deadline) < 0)
            return NULL;
        len |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            break;
    }
    if (len > (64u << 20))
        return NULL;
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return NULL;
    Protobus__Frame *f = NULL;
    if (read_full(fd, buf, len, deadline) == 0)
        f = protobus__frame__unpack(NULL, len, buf);
    free(buf);
    return f;
}

Protobus__Frame *itest_recv_event(int fd, int timeout_ms)
{
    uint64_t deadline = itest_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        int64_t left = (int64_t)deadline - (int64_t)itest_now_ms();
        Protobus__Frame *f = itest_recv_frame(fd, left > 0 ? (int)left : 0);
        if (!f || (f->body_case != PROTOBUS__FRAME__BODY_SUBSCRIBED &&
                   f->body_case != PROTOBUS__FRAME__BODY_CAUGHT_UP))
            return f;
        protobus__frame__free_unpacked(f, NULL);
    }
}

int itest_wait_closed(int fd, int timeout_ms)
{
    uint64_t deadline = itest_now_ms() + (uint64_t)timeout_ms;
    uint8_t buf[4096];
    for (;;) {
        int64_t left = (int64_t)deadline - (int64_t)itest_now_ms();
        if (left <= 0)
            return 0;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = poll(&pfd, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return 0;
        ssize_t got = recv(fd, buf, sizeof buf, 0);
        if (got == 0 || (got < 0 && errno == ECONNRESET))
            return 1;
        if (got < 0 && errno != EINTR)
            return 0;
    }
}

int itest_send_hello(int fd, uint64_t id, uint32_t version)
{
    Protobus__Hello h = PROTOBUS__HELLO__INIT;
    h.protocol_version = version;
    h.name = "itest";
    Protobus__Frame f = PROTOBUS__FRAME__INIT;
    f.id = id;
    f.body_case = PROTOBUS__FRAME__BODY_HELLO;
    f.hello = &h;
    return itest_send_frame(fd, &f);
}

Protobus__Frame *itest_hello(int fd, uint64_t id, int timeout_ms)
{
    if (itest_send_hello(fd, id, 1) < 0)
        return NULL;
    return itest_recv_frame(fd, timeout_ms);
}

int itest_send_ping(int fd, uint64_t id)
{
    Protobus__Ping ping = PROTOBUS__PING__INIT;
    Protobus__Frame f = PROTOBUS__FRAME__INIT;
    f.id = id;
    f.body_case = PROTOBUS__FRAME__BODY_PING;
    f.ping = &ping;
    return itest_send_frame(fd, &f);
}

Protobus__Frame *itest_ping(int fd, uint64_t id, int timeout_ms)
{
    if (itest_send_ping(fd, id) < 0)
        return NULL;
    return itest_recv_frame(fd, timeout_ms);
}

int itest_connect_hello(uint16_t port)
{
    int fd = itest_connect(port);
    if (fd < 0) {
        fprintf(stderr, "itest: cannot connect to port %u\n", (unsigned)port);
        return -1;
    }
    Protobus__Frame *r = itest_hello(fd, 1, 10000);
    int ok = r && r->body_case == PROTOBUS__FRAME__BODY_HELLO && r->id == 1;
    if (!ok)
        fprintf(stderr, "itest: no Hello answer on port %u (%s)\n", (unsigned)port,
                !r                                            ? "timeout or closed"
                : r->body_case == PROTOBUS__FRAME__BODY_ERROR ? r->error->message
                                                              : "another frame");
    if (r)
        protobus__frame__free_unpacked(r, NULL);
    if (!ok) {
        close(fd);
        return -1;
    }
    return fd;
}

int itest_subscribe(int fd, uint64_t id, const char *pattern, Protobus__StartMode start)
{
    Protobus__Subscribe s = PROTOBUS__SUBSCRIBE__INIT;
    char *patterns[1] = {(char *)pattern};
    s.n_patterns = 1;
    s.patterns = patterns;
    s.start = start;
    Protobus__Frame f = PROTOBUS__FRAME__INIT;
    f.id = id;
    f.body_case = PROTOBUS__FRAME__BODY_SUBSCRIBE;
    f.subscribe = &s;
    return itest_send_frame(fd, &f);
}

uint8_t *itest_event(const char *topic, const char *payload, size_t *len)
{
    Protobus__EncapsulatedEvent ev = PROTOBUS__ENCAPSULATED_EVENT__INIT;
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    ev.topic = (char *)topic;
    any.type_url = "type.googleapis.com/test.Text";
    any.value.data = (uint8_t *)payload;
    any.value.len = strlen(payload);
    ev.payload = &any;
    ev.payload_size = (int64_t)any.value.len;
    *len = protobus__encapsulated_event__get_packed_size(&ev);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf)
        protobus__encapsulated_event__pack(&ev, buf);
    return buf;
}

Protobus__Frame *itest_publish(int fd, uint64_t id, const char *const *topics,
                               const char *const *payloads, size_t n, int timeout_ms)
{
    /* Events go into Publish as embedded messages; build them with protobuf-c
     * unpacked structures so the frame is exactly what any client sends. */
    Protobus__EncapsulatedEvent *evs = calloc(n ? n : 1, sizeof *evs);
    Protobus__EncapsulatedEvent **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    Google__Protobuf__Any *anys = calloc(n ? n : 1, sizeof *anys);
    Protobus__Frame *reply = NULL;
    if (!evs || !ptrs || !anys)
        goto out;
    for (size_t i = 0; i < n; i++) {
        protobus__encapsulated_event__init(&evs[i]);
        google__protobuf__any__init(&anys[i]);
        evs[i].topic = (char *)topics[i];
        anys[i].type_url = "type.googleapis.com/test.Text";
        anys[i].value.data = (uint8_t *)payloads[i];
        anys[i].value.len = strlen(payloads[i]);
        evs[i].payload = &anys[i];
        evs[i].payload_size = (int64_t)anys[i].value.len;
        ptrs[i] = &evs[i];
    }
    Protobus__Publish pub = PROTOBUS__PUBLISH__INIT;
    pub.n_events = n;
    pub.events = ptrs;
    Protobus__Frame f = PROTOBUS__FRAME__INIT;
    f.id = id;
    f.body_case = PROTOBUS__FRAME__BODY_PUBLISH;
    f.publish = &pub;
    if (itest_send_frame(fd, &f) == 0)
        reply = itest_recv_frame(fd, timeout_ms);
out:
    free(evs);
    free(ptrs);
    free(anys);
    return reply;
}

int itest_send_publish(int fd, uint64_t id, const char *topic, const char *payload)
{
    Protobus__EncapsulatedEvent ev = PROTOBUS__ENCAPSULATED_EVENT__INIT;
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    Protobus__EncapsulatedEvent *evp = &ev;
    ev.topic = (char *)topic;
    any.value.data = (uint8_t *)payload;
    any.value.len = strlen(payload);
    ev.payload = &any;
    Protobus__Publish pub = PROTOBUS__PUBLISH__INIT;
    pub.n_events = 1;
    pub.events = &evp;
    Protobus__Frame f = PROTOBUS__FRAME__INIT;
    f.id = id;
    f.body_case = PROTOBUS__FRAME__BODY_PUBLISH;
    f.publish = &pub;
    return itest_send_frame(fd, &f);
}

void itest_expect_error(int fd, uint64_t id, int code, const char *text, int timeout_ms)
{
    Protobus__Frame *r = itest_recv_frame(fd, timeout_ms);
    if (!r)
        fail_msg("no frame where an Error (%d, \"%s\") was expected", code, text);
    if (r->body_case != PROTOBUS__FRAME__BODY_ERROR)
        fail_msg("frame %d where an Error (%d, \"%s\") was expected", r->body_case, code, text);
    if (r->id != id || (int)r->error->code != code || !strstr(r->error->message, text))
        fail_msg("expected Error id %llu code %d with \"%s\", got id %llu code %d: %s",
                 (unsigned long long)id, code, text, (unsigned long long)r->id, r->error->code,
                 r->error->message);
    protobus__frame__free_unpacked(r, NULL);
}

void itest_expect_pong(int fd, uint64_t id, int timeout_ms)
{
    Protobus__Frame *r = itest_recv_frame(fd, timeout_ms);
    if (!r)
        fail_msg("no frame where Pong id %llu was expected", (unsigned long long)id);
    if (r->body_case != PROTOBUS__FRAME__BODY_PONG || r->id != id)
        fail_msg("expected Pong id %llu, got frame %d id %llu (%s)", (unsigned long long)id,
                 r->body_case, (unsigned long long)r->id,
                 r->body_case == PROTOBUS__FRAME__BODY_ERROR ? r->error->message : "");
    protobus__frame__free_unpacked(r, NULL);
}
