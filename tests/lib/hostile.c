/* hostile - the isolation suite's harness; see hostile.h. */
#include "hostile.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "event.h"
#include "reader.h"

#include <dirent.h>
#include "pb_errors.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ACK_TIMEOUT_MS   10000
#define PROBE_EVERY_MS   500
#define PROBE_TIMEOUT_MS 5000
#define HONEST_PAUSE_MS  5

void hostile_acked_add(hostile_acked_list *l, const char *partition, uint64_t offset,
                       const char *topic)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        hostile_acked *v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            fprintf(stderr, "hostile: out of memory\n");
            abort();
        }
        l->v = v;
        l->cap = cap;
    }
    hostile_acked *a = &l->v[l->n++];
    snprintf(a->partition, sizeof a->partition, "%s", partition);
    a->offset = offset;
    snprintf(a->topic, sizeof a->topic, "%s", topic);
}

void hostile_acked_free(hostile_acked_list *l)
{
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* A new connection that gets its Hello answered: the daemon still serves. */
static void probe(hostile_honest *h)
{
    uint64_t t0 = itest_now_ms();
    h->probes++;
    int fd = itest_connect(h->port);
    Protobus__Frame *f = fd >= 0 ? itest_hello(fd, 1, PROBE_TIMEOUT_MS) : NULL;
    if (!f || f->body_case != PROTOBUS__FRAME__BODY_HELLO)
        h->probes_failed++;
    if (f)
        protobus__frame__free_unpacked(f, NULL);
    if (fd >= 0)
        close(fd);
    uint64_t dt = itest_now_ms() - t0;
    if (dt > h->max_probe_ms)
        h->max_probe_ms = dt;
}

static void *honest_main(void *arg)
{
    hostile_honest *h = arg;
    int fd = -1;
    uint64_t id = 0, next_probe = 0;
    char payload[64];
    const char *topics[1] = {h->topic};
    const char *payloads[1] = {payload};
    while (!atomic_load(&h->stop)) {
        uint64_t now = itest_now_ms();
        if (now >= next_probe) {
            probe(h);
            next_probe = now + PROBE_EVERY_MS;
        }
        if (fd < 0 && (fd = itest_connect_hello(h->port)) < 0) {
            h->errors++;
            itest_sleep_ms(100);
            continue;
        }
        snprintf(payload, sizeof payload, "honest-%llu", (unsigned long long)++id);
        uint64_t t0 = itest_now_ms();
        Protobus__Frame *f = itest_publish(fd, id, topics, payloads, 1, ACK_TIMEOUT_MS);
        uint64_t dt = itest_now_ms() - t0;
        if (dt > h->max_ack_ms)
            h->max_ack_ms = dt;
        if (f && f->body_case == PROTOBUS__FRAME__BODY_PUBLISH_ACK &&
            f->publish_ack->n_offsets == 1 && f->publish_ack->n_partitions == 1) {
            hostile_acked_add(&h->acked, f->publish_ack->partitions[0], f->publish_ack->offsets[0],
                              h->topic);
        } else {
            h->errors++;
            if (f && f->body_case == PROTOBUS__FRAME__BODY_ERROR)
                fprintf(stderr, "hostile: honest publish refused: %s\n", f->error->message);
            else if (!f)
                fprintf(stderr, "hostile: honest publish %llu got no reply in %d ms\n",
                        (unsigned long long)id, ACK_TIMEOUT_MS);
            if (!f) {
                close(fd);
                fd = -1;
            }
        }
        if (f)
            protobus__frame__free_unpacked(f, NULL);
        itest_sleep_ms(HONEST_PAUSE_MS);
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

int hostile_honest_start(hostile_honest *h, uint16_t port, const char *topic)
{
    memset(h, 0, sizeof *h);
    h->port = port;
    snprintf(h->topic, sizeof h->topic, "%s", topic);
    if (pthread_create(&h->thread, NULL, honest_main, h) != 0)
        return -1;
    h->running = true;
    return 0;
}

void hostile_honest_stop(hostile_honest *h)
{
    if (!h->running)
        return;
    atomic_store(&h->stop, 1);
    pthread_join(h->thread, NULL);
    h->running = false;
}

static long status_field_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long v = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':') {
            v = strtol(line + n + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

long hostile_rss_kb(pid_t pid)
{
    return status_field_kb(pid, "VmRSS");
}

long hostile_peak_kb(pid_t pid)
{
    return status_field_kb(pid, "VmHWM");
}

long hostile_thread_count(pid_t pid)
{
    return status_field_kb(pid, "Threads");
}

long hostile_fd_count(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    long n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* cat --verify's checks, in process: every record of every partition
 * directory read (CRC, offsets: pb_reader), every event well-formed. */
static int verify_here(const char *data_dir, char *out, size_t outlen)
{
    char **names;
    size_t n;
    int rc = pb_partition_list(data_dir, &names, &n);
    if (rc < 0)
        return -1;
    unsigned long long records = 0, problems = 0;
    char dir[512];
    for (size_t i = 0; i < n; i++) {
        snprintf(dir, sizeof dir, "%s/%s", data_dir, names[i]);
        pb_reader *r;
        if (pb_reader_open(&r, dir) < 0) {
            problems++;
            continue;
        }
        pb_record rec;
        while ((rc = pb_reader_next(r, &rec)) != PB_EEOF) {
            event_view v;
            char why[256];
            if (rc < 0 || event_scan(rec.event, rec.event_len, &v, why, sizeof why) < 0)
                problems++;
            if (rc < 0 && rc != PB_ECORRUPT)
                break;
            if (rc == 0)
                records++;
        }
        pb_reader_close(r);
    }
    pb_partition_list_free(names, n);
    snprintf(out ? out : dir, out ? outlen : sizeof dir,
             "verified %llu record(s) in %zu source(s): %llu problem(s) (checked in process: "
             "no CLI in this build)\n",
             records, n, problems);
    return problems ? 1 : 0;
}

int hostile_cat_verify(const char *data_dir, char *out, size_t outlen)
{
    const char *b = getenv("BUILD");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/protobus", b && *b ? b : "build");
    if (access(cmd, X_OK) != 0)
        return verify_here(data_dir, out, outlen);
    snprintf(cmd, sizeof cmd, "'%s/protobus' cat --verify '%s' 2>&1", b && *b ? b : "build",
             data_dir);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t used = 0;
    char buf[4096];
    while (fgets(buf, sizeof buf, p)) {
        size_t k = strlen(buf);
        if (out && used + k < outlen) {
            memcpy(out + used, buf, k);
            used += k;
        }
    }
    if (out && outlen)
        out[used < outlen ? used : outlen - 1] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

size_t hostile_check_acked(const char *data_dir, const hostile_acked_list *l)
{
    size_t bad = 0;
    char dir[512];
    for (size_t i = 0; i < l->n; i++) {
        const hostile_acked *a = &l->v[i];
        snprintf(dir, sizeof dir, "%s/%s", data_dir, a->partition);
        pb_reader *r = NULL;
        pb_record rec;
        int rc = pb_reader_open(&r, dir);
        if (rc == 0)
            rc = pb_reader_seek_offset(r, a->offset);
        if (rc == 0)
            rc = pb_reader_next(r, &rec);
        event_view v;
        char why[256];
        if (rc != 0 || rec.offset != a->offset ||
            event_scan(rec.event, rec.event_len, &v, why, sizeof why) < 0 ||
            v.topic.len != strlen(a->topic) || memcmp(v.topic.p, a->topic, v.topic.len) != 0) {
            if (bad < 10)
                fprintf(stderr, "hostile: acknowledged %s:%llu (%s) not read back (rc %d)\n",
                        a->partition, (unsigned long long)a->offset, a->topic, rc);
            bad++;
        }
        pb_reader_close(r);
    }
    return bad;
}

size_t hostile_put_varint(uint8_t *buf, uint64_t v)
{
    size_t n = 0;
    do {
        buf[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

Protobus__Frame *hostile_send_frame_bytes(uint16_t port, const uint8_t *frame, size_t len,
                                          int timeout_ms)
{
    int fd = itest_connect_hello(port);
    if (fd < 0)
        return NULL;
    Protobus__Frame *f = NULL;
    if (itest_send_raw(fd, frame, len) == 0)
        f = itest_recv_frame(fd, timeout_ms);
    close(fd);
    return f;
}

void hostile_honest_check(hostile_honest *h, uint64_t ack_budget_ms)
{
    hostile_honest_stop(h);
    printf("honest publisher: %zu acked, %llu errors, slowest ack %llu ms; probes %llu, "
           "failed %llu, slowest %llu ms\n",
           h->acked.n, (unsigned long long)h->errors, (unsigned long long)h->max_ack_ms,
           (unsigned long long)h->probes, (unsigned long long)h->probes_failed,
           (unsigned long long)h->max_probe_ms);
    assert_true(h->acked.n > 0);
    assert_int_equal(h->errors, 0);
    assert_int_equal(h->probes_failed, 0);
    if (HOSTILE_RSS_CHECKED && ack_budget_ms > 0)
        assert_true(h->max_ack_ms < ack_budget_ms);
}

void hostile_check_durable(itest_daemon *d, const hostile_honest *h, char *out, size_t outlen)
{
    assert_int_equal(itest_daemon_stop(d), 0);
    assert_int_equal(itest_daemon_restart(d), 0);
    assert_int_equal(itest_daemon_stop(d), 0);
    int rc = hostile_cat_verify(d->data_dir, out, outlen);
    printf("%s", out);
    assert_int_equal(rc, 0);
    assert_int_equal(hostile_check_acked(d->data_dir, &h->acked), 0);
}
