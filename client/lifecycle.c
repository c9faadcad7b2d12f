/*
 * lifecycle - a pb_client's life, the top of libprotobus: options and their
 * defaults, pb_client_connect (allocate, connect and Hello through
 * client.c), pb_client_close (which frees what publish.c and subscribe.c
 * hold), and the accessors of what the server said.
 *
 * Threads: whichever thread calls into the pb_client (one at a time).
 */
#include "client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_CONNECT_TIMEOUT_MS 5000u
#define DEFAULT_IO_TIMEOUT_MS      30000u
/* 512 KiB rather than 1 MiB: a batch of 1 KiB events is written once
 * (encoding) and read again when it is sent, and on this project's 2-core
 * machine bytes written a megabyte back are no longer in the core's cache.
 * Halved, the publisher took 10-20% less CPU per GB of 1 KiB events
 * (tests/bench/NOTES.md, "Publish 1 KiB, sixth round"). Batches of small
 * events end at batch_events first either way. */
#define DEFAULT_BATCH_BYTES        (512u << 10)
#define DEFAULT_BATCH_EVENTS       1000u
#define DEFAULT_MAX_IN_FLIGHT      64u
#define MAX_IN_FLIGHT_LIMIT        4096u

void pb_client_options_init(pb_client_options *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    opts->io_timeout_ms = DEFAULT_IO_TIMEOUT_MS;
    opts->batch_bytes = DEFAULT_BATCH_BYTES;
    opts->batch_events = DEFAULT_BATCH_EVENTS;
    opts->max_in_flight = DEFAULT_MAX_IN_FLIGHT;
    opts->name = "libprotobus " PB_VERSION_STRING;
}

static int apply_options(pb_client *c, const pb_client_options *opts)
{
    pb_client_options d;
    pb_client_options_init(&d);
    if (opts) {
        c->opts = *opts;
        if (!c->opts.connect_timeout_ms)
            c->opts.connect_timeout_ms = d.connect_timeout_ms;
        if (!c->opts.io_timeout_ms)
            c->opts.io_timeout_ms = d.io_timeout_ms;
        if (!c->opts.batch_bytes)
            c->opts.batch_bytes = d.batch_bytes;
        if (!c->opts.batch_events)
            c->opts.batch_events = d.batch_events;
        if (!c->opts.max_in_flight)
            c->opts.max_in_flight = d.max_in_flight;
        if (!c->opts.name)
            c->opts.name = d.name;
    } else {
        c->opts = d;
    }
    if (c->opts.max_in_flight > MAX_IN_FLIGHT_LIMIT)
        return client_fail(c, PB_EINVAL, "max_in_flight %u is above the limit %u",
                           c->opts.max_in_flight, MAX_IN_FLIGHT_LIMIT);
    if (c->opts.connect_timeout_ms > INT32_MAX || c->opts.io_timeout_ms > INT32_MAX)
        return client_fail(c, PB_EINVAL, "timeouts must be below %d ms", INT32_MAX);
    c->name = strdup(c->opts.name);
    if (!c->name)
        return client_fail(c, PB_ENOMEM, "out of memory");
    c->opts.name = c->name;
    return 0;
}

int pb_client_connect(pb_client **out, const char *address, const pb_client_options *opts,
                      char *err, size_t errlen)
{
    *out = NULL;
    pb_client *c = calloc(1, sizeof(*c));
    if (!c) {
        if (err && errlen)
            snprintf(err, errlen, "out of memory");
        return PB_ENOMEM;
    }
    c->fd = -1;
    c->next_id = 1;
    c->recv_max = CLIENT_DEFAULT_FRAME_MAX;
    int rc;
    if (!address) {
        rc = client_fail(c, PB_EINVAL, "no address given");
        goto fail;
    }
    snprintf(c->address, sizeof(c->address), "%s", address);
    rc = apply_options(c, opts);
    if (rc < 0)
        goto fail;
    if (strncmp(address, "tls://", 6) == 0) {
        c->opts.tls = true;
        address += 6;
    }
    c->rcap = 64 * 1024;
    c->rbuf = malloc(c->rcap);
    if (!c->rbuf) {
        rc = client_fail(c, PB_ENOMEM, "out of memory");
        goto fail;
    }
    rc = client_connect(c, address, client_deadline((int)c->opts.connect_timeout_ms));
    if (rc < 0)
        goto fail;
    c->msg[0] = '\0';
    *out = c;
    return 0;
fail:
    if (err && errlen)
        snprintf(err, errlen, "%s", c->msg);
    pb_client_close(c);
    return rc;
}

void pb_client_close(pb_client *c)
{
    if (!c)
        return;
    /* Nothing to report from close(2) on a socket we only read and wrote:
     * unacknowledged batches are lost either way, as documented. */
    client_tls_free(c);
    if (c->fd >= 0)
        (void)close(c->fd);
    publish_free(c);
    subscribe_free(c);
    free(c->rbuf);
    free(c->obuf);
    free(c->name);
    free(c->server_name);
    free(c->serr_message);
    free(c->serr_partition);
    free(c->serr_expect_topic);
    free(c);
}

uint64_t pb_client_max_frame_bytes(const pb_client *c)
{
    return c->max_frame_bytes;
}

uint64_t pb_client_max_event_bytes(const pb_client *c)
{
    return c->max_event_bytes;
}

const char *pb_client_server_name(const pb_client *c)
{
    return c->server_name ? c->server_name : "";
}

const char *pb_client_message(const pb_client *c)
{
    return c->msg;
}

const pb_server_error *pb_client_server_error(const pb_client *c)
{
    return c->serr_message ? &c->serr : NULL;
}
