/*
 * stats_scrape - GET /metrics and pick the numbers `protobus stats` shows
 * (see stats_scrape.h). The parser reads only what protobusd writes: one
 * sample per line, `name value` or `name{label="v",...} value`; comments and
 * families it does not know are skipped.
 */
#include "stats_scrape.h"

#include "cli.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* --- HTTP ---------------------------------------------------------------- */

static int connect_to(const char *addr, int timeout_ms, char *err, size_t errlen)
{
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || (size_t)(colon - addr) >= sizeof host || !colon[1]) {
        snprintf(err, errlen, "metrics address \"%s\": expected HOST:PORT", addr);
        return -1;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host) - 2);
        host[strlen(host) - 2] = '\0';
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "metrics address \"%s\": %s", addr, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) < 0 && errno != EINPROGRESS) {
        snprintf(err, errlen, "cannot connect to %s: %s", addr, strerror(errno));
        close(fd);
        fd = -1;
    } else if (fd >= 0) {
        struct pollfd p = {fd, POLLOUT, 0};
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (poll(&p, 1, timeout_ms) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 ||
            soerr != 0) {
            snprintf(err, errlen, "cannot connect to %s: %s", addr,
                     soerr ? strerror(soerr) : "timed out");
            close(fd);
            fd = -1;
        }
    } else {
        snprintf(err, errlen, "socket: %s", strerror(errno));
    }
    freeaddrinfo(res);
    return fd;
}

/* Reads the whole response (the server closes after an HTTP/1.0 reply). */
static char *read_all(int fd, int timeout_ms, size_t *len, char *err, size_t errlen)
{
    size_t cap = 64 * 1024, n = 0;
    char *buf = malloc(cap);
    int64_t deadline = cli_now_ms() + timeout_ms;
    while (buf) {
        if (n + 1 == cap) {
            if (cap >= STATS_MAX_BODY) {
                snprintf(err, errlen, "/metrics is larger than %u bytes", STATS_MAX_BODY);
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb)
                break;
            buf = nb;
            cap *= 2;
        }
        struct pollfd p = {fd, POLLIN, 0};
        int64_t left = deadline - cli_now_ms();
        int pr = left > 0 ? poll(&p, 1, (int)left) : 0;
        if (pr < 0 && errno == EINTR && !cli_stop)
            continue;
        if (pr != 1) {
            if (cli_stop)
                snprintf(err, errlen, "interrupted");
            else
                snprintf(err, errlen, "no complete answer within %d ms", timeout_ms);
            break;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r == 0) {
            buf[n] = '\0';
            *len = n;
            return buf;
        }
        if (r < 0 && errno != EINTR && errno != EAGAIN) {
            snprintf(err, errlen, "reading the answer: %s", strerror(errno));
            break;
        }
        if (r > 0)
            n += (size_t)r;
    }
    if (!buf)
        snprintf(err, errlen, "out of memory");
    free(buf);
    return NULL;
}

int stats_scrape_get(const char *addr, int timeout_ms, stats_scrape *out, char *err, size_t errlen)
{
    int fd = connect_to(addr, timeout_ms, err, errlen);
    if (fd < 0)
        return -1;
    char req[512];
    int rl = snprintf(req, sizeof req, "GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n", addr);
    if (rl >= (int)sizeof req || send(fd, req, (size_t)rl, MSG_NOSIGNAL) != rl) {
        snprintf(err, errlen, "sending the request to %s failed", addr);
        close(fd);
        return -1;
    }
    size_t len;
    char *resp = read_all(fd, timeout_ms, &len, err, errlen);
    close(fd);
    if (!resp)
        return -1;
    int status = 0, rc = -1;
    char *body = strstr(resp, "\r\n\r\n");
    if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1 || !body)
        snprintf(err, errlen, "%s did not answer in HTTP (is it metrics_listen?)", addr);
    else if (status != 200)
        snprintf(err, errlen, "GET http://%s/metrics: HTTP status %d", addr, status);
    else
        rc = stats_scrape_parse(body + 4, out, err, errlen);
    free(resp);
    if (rc == 0)
        out->taken_ms = cli_now_ms();
    return rc;
}

/* --- parsing ------------------------------------------------------------- */

/* Families per partition, and where each goes. */
static const struct {
    const char *name;
    size_t offset;
} part_fields[] = {
    {"protobus_partition_events_appended_total", offsetof(stats_partition, events)},
    {"protobus_partition_bytes_appended_total", offsetof(stats_partition, bytes)},
    {"protobus_partition_next_offset", offsetof(stats_partition, next_offset)},
    {"protobus_partition_segments", offsetof(stats_partition, segments)},
    {"protobus_partition_disk_bytes", offsetof(stats_partition, disk_bytes)},
    {"protobus_partition_oldest_record_seconds", offsetof(stats_partition, oldest_s)},
    {"protobus_partition_up", offsetof(stats_partition, up)},
};

static stats_partition *partition_slot(stats_scrape *s, const char *name, size_t *cap, size_t *hint)
{
    /* The daemon writes every family's partitions in one order: the one
     * after the previous lookup's is tried first (linear in all). */
    if (*hint >= s->nparts)
        *hint = 0;
    if (*hint < s->nparts && strcmp(s->parts[*hint].name, name) == 0)
        return &s->parts[(*hint)++];
    for (size_t i = 0; i < s->nparts; i++)
        if (strcmp(s->parts[i].name, name) == 0) {
            *hint = i + 1;
            return &s->parts[i];
        }
    if (s->nparts == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        stats_partition *np = realloc(s->parts, nc * sizeof *np);
        if (!np)
            return NULL;
        s->parts = np;
        *cap = nc;
    }
    stats_partition *p = &s->parts[s->nparts++];
    *hint = s->nparts;
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    return p;
}

/* One sample line: its name, the value of label `partition` or `phase`
 * (if any), its value. 0, or -1 when the line is not a sample. */
static int split_sample(char *line, char **name, char **label, double *value)
{
    *label = NULL;
    char *brace = strchr(line, '{'), *end;
    if (brace) {
        *brace = '\0';
        char *close = strchr(brace + 1, '}');
        if (!close)
            return -1;
        *close = '\0';
        char *q = strchr(brace + 1, '"');
        if (q) {
            char *q2 = strchr(q + 1, '"');
            if (!q2)
                return -1;
            *q2 = '\0';
            *label = q + 1;
        }
        end = close + 1;
    } else {
        end = strchr(line, ' ');
        if (!end)
            return -1;
        *end++ = '\0';
    }
    *name = line;
    char *after;
    *value = strtod(end, &after);
    return after == end ? -1 : 0;
}

int stats_scrape_parse(const char *body, stats_scrape *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    size_t cap = 0, lineno = 0, hint = 0;
    char *copy = strdup(body), *save = NULL;
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        if (line[0] == '#' || line[0] == '\0')
            continue;
        char *name, *label;
        double v;
        if (split_sample(line, &name, &label, &v) < 0) {
            snprintf(err, errlen, "/metrics line %zu does not parse", lineno);
            goto fail;
        }
        if (strcmp(name, "protobus_connections_open") == 0)
            out->connections_open = v;
        else if (strcmp(name, "protobus_subscriptions_active") == 0)
            out->subs_active = v;
        else if (strcmp(name, "protobus_subscriptions") == 0 && label)
            *(strcmp(label, "live") == 0 ? &out->subs_live : &out->subs_replay) = v;
        else if (strcmp(name, "process_resident_memory_bytes") == 0)
            out->rss_bytes = v;
        else if (label && strncmp(name, "protobus_partition_", 19) == 0) {
            for (size_t k = 0; k < sizeof part_fields / sizeof part_fields[0]; k++) {
                if (strcmp(name, part_fields[k].name) != 0)
                    continue;
                stats_partition *p = partition_slot(out, label, &cap, &hint);
                if (!p) {
                    snprintf(err, errlen, "out of memory");
                    goto fail;
                }
                *(double *)(void *)((char *)p + part_fields[k].offset) = v;
            }
        }
    }
    free(copy);
    return 0;
fail:
    free(copy);
    stats_scrape_free(out);
    return -1;
}

const stats_partition *stats_scrape_find(const stats_scrape *s, const char *name)
{
    for (size_t i = 0; i < s->nparts; i++)
        if (strcmp(s->parts[i].name, name) == 0)
            return &s->parts[i];
    return NULL;
}

void stats_scrape_free(stats_scrape *s)
{
    free(s->parts);
    s->parts = NULL;
    s->nparts = 0;
}
