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
 * The buffers are blocks of ingest's cache (ingest.h), and a read never
 * goes past the frame in progress once its size is known: a large Publish
 * frame then fills its buffer alone and the batch takes the buffer as it
 * is (connbuf_adoptable, connbuf_adopted) instead of copying the frame;
 * the connection goes on with a recycled block of the same size.
 *
 * Threads: the loop thread only.
 */
#include "net_internal.h"

#include "ingest.h"
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
 * publisher of 512 KiB batches (the library's default) would otherwise grow a
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
    /* A block of the publish path's (ingest.h), so that a Publish frame
     * can become its batch's bytes as it is (connbuf_adopted). */
    uint8_t *nb = c->buf ? ingest_block_resize(c->buf, cap) : ingest_block_get(cap);
    if (!nb)
        return PB_ENOMEM;
    c->buf = nb;
    c->cap = cap;
    n->rbuf_bytes += delta;
    return 0;
}

bool connbuf_adoptable(const conn *c, size_t frame_bytes)
{
    /* The frame, not its buffer, decides: a small Publish alone in a
     * buffer grown by an earlier large one would be charged the whole
     * block (1 KiB costing 1-2 MiB of the in-flight budget), and each
     * adoption would set the next read up for another. Half full at
     * least, so the charge stays within twice the frame. */
    return frame_bytes >= READ_SMALL && frame_bytes == c->len && frame_bytes * 2 >= c->cap;
}

void connbuf_adopted(conn *c)
{
    net *n = c->net;
    size_t cap = c->cap;
    n->rbuf_bytes -= cap; /* counted in the batch's charge from now on */
    /* The next frame's size, until its length prefix says: likely this
     * one's. Reads stop there (connbuf_alloc), so the next frame too is
     * likely alone in its buffer (else every other one would share its
     * buffer with the start of the one after it, and be copied). */
    c->want = c->len;
    c->buf = NULL;
    c->cap = 0;
    c->len = 0;
    c->adopted = 1;
    /* The next frame is likely the same size: a buffer for it now (a
     * recycled block), under the rule connbuf_shrink keeps one by, rather
     * than growing one again from READ_CHUNK by doubling and copying. */
    if (cap <= READ_KEEP && n->rbuf_bytes <= n->opts.max_partial_frame_bytes / 4)
        (void)connbuf_reserve(c, cap); /* without one, the next read grows one */
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
    /* Not past the frame in progress: a Publish frame then ends its buffer
     * and can be handed to its batch as it is (connbuf_adoptable). */
    if (c->want > c->len && c->want - c->len < out->len)
        out->len = c->want - c->len;
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
    if (c->buf)
        ingest_block_put(c->buf);
    c->buf = NULL;
    c->cap = 0;
}
