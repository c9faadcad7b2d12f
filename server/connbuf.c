/*
 * connbuf - a connection's receive buffer (net_internal.h): it grows as
 * bytes arrive, never ahead of them (a 16 MiB length prefix followed by a
 * trickle costs what has arrived, not 16 MiB), and every buffer of every
 * connection counts against one budget, max_partial_frame_bytes. A buffer
 * that would grow past READ_SMALL while the budget is spent is refused: the
 * connection gets RESOURCE_EXHAUSTED naming the setting and is closed
 * (conn_on_read sees UV_ENOBUFS with rbuf_refused set), so the publishers of
 * small frames, whose buffers stay small, are never refused.
 *
 * Threads: the loop thread only.
 */
#include "net_internal.h"

#include "grow.h"
#include "logging.h"
#include "pb_errors.h"

#include <stdio.h>
#include <stdlib.h>

/* What one read asks for beyond what is buffered. */
#define READ_CHUNK (64 * 1024)
/* Buffers up to this size are always granted (and counted). */
#define READ_SMALL (4 * READ_CHUNK)
/* An empty buffer up to this size is kept for the next frame while the
 * buffers of all connections hold less than a quarter of the budget: a
 * publisher of 1 MiB batches (the library's default) would otherwise grow a
 * fresh buffer for each frame, faulting in and copying its pages again. */
#define READ_KEEP (2 * 1024 * 1024)

int connbuf_reserve(conn *c, size_t cap)
{
    net *n = c->net;
    if (cap <= c->cap)
        return 0;
    size_t delta = cap - c->cap;
    if (cap > READ_SMALL && n->rbuf_bytes + delta > n->opts.max_partial_frame_bytes)
        return PB_ETOOBIG;
    if (grow_resize(&c->buf, cap, 1) < 0)
        return PB_ENOMEM;
    c->cap = cap;
    n->rbuf_bytes += delta;
    return 0;
}

void connbuf_alloc(conn *c, uv_buf_t *out)
{
    size_t need = c->len + READ_CHUNK;
    if (need > c->cap) {
        /* Doubling, so a large frame costs a few copies; but never more
         * than the frame in progress needs, nor far ahead of its bytes. */
        size_t grow = c->cap * 2 > need ? c->cap * 2 : need;
        if (c->want > need && grow > c->want)
            grow = c->want;
        if (c->want <= need && grow > need)
            grow = need;
        int rc = connbuf_reserve(c, grow);
        if (rc < 0) {
            c->rbuf_refused = rc == PB_ETOOBIG; /* conn_on_read: connbuf_refuse */
            out->base = NULL;
            out->len = 0; /* libuv reports UV_ENOBUFS to conn_on_read */
            return;
        }
    }
    out->base = (char *)c->buf + c->len;
    out->len = c->cap - c->len;
}

void connbuf_refuse(conn *c)
{
    char msg[320];
    snprintf(msg, sizeof msg,
             "frame refused: %zu bytes of it received, and unfinished frames already hold "
             "%llu bytes, the server's budget (max_partial_frame_bytes = %llu); retry later",
             c->len, (unsigned long long)c->net->rbuf_bytes,
             (unsigned long long)c->net->opts.max_partial_frame_bytes);
    c->rbuf_refused = 0;
    conn_fail(c, 0, PB_CODE_RESOURCE_EXHAUSTED, msg);
}

void connbuf_shrink(conn *c)
{
    if (c->len != 0 || c->cap <= READ_SMALL)
        return;
    if (c->cap <= READ_KEEP && c->net->rbuf_bytes <= c->net->opts.max_partial_frame_bytes / 4)
        return;
    connbuf_free(c);
}

void connbuf_free(conn *c)
{
    c->net->rbuf_bytes -= c->cap;
    free(c->buf);
    c->buf = NULL;
    c->cap = 0;
}
