/*
 * conn_tls - a connection's TLS on the loop (tls_cert set): what libuv
 * reads is ciphertext, decrypted here into the connection's buffer of
 * plaintext, where conn_process finds its frames as on plain TCP; what
 * conn_send writes is sealed here first. The handshake runs inside the
 * reads (its answers written at once); a peer that does not speak TLS, a
 * plaintext Hello say, fails it at its first bytes and is closed at once
 * (no Error: it could not read one). The handshake deadline covers a peer
 * that says nothing. A Subscribe hands the session over with the socket
 * (sub_rights.tls).
 *
 * Threads: the loop thread.
 */
#include "net_internal.h"

#include "grow.h"
#include "pb_errors.h"
#include "logging.h"
#include "tls.h"

#include <stdlib.h>
#include <string.h>

/* Plaintext room added to the connection's buffer per step. */
#define PLAIN_STEP (16 * 1024)

int conn_tls_start(conn *c)
{
    c->tls = tls_conn_new(c->net->tls);
    if (!c->tls) {
        logging_printf(LOG_ERROR, "connection %s: out of memory for its TLS session", c->peer);
        return -1;
    }
    return 0;
}

void conn_tls_release(conn *c)
{
    tls_conn_free(c->tls);
    c->tls = NULL;
}

/* Writes what the session has for the peer (handshake records). */
static void flush_records(conn *c)
{
    size_t n = tls_out_pending(c->tls);
    if (n == 0 || c->closing)
        return;
    uint8_t *buf = malloc(n);
    if (!buf) {
        conn_close(c);
        return;
    }
    n = tls_out_take(c->tls, buf, n);
    conn_send_raw(c, buf, n, false);
}

void conn_tls_read(conn *c, const uint8_t *raw, size_t n)
{
    long got = tls_feed(c->tls, raw, n);
    while (got == 0) {
        if (c->cap - c->len < PLAIN_STEP) {
            /* Counted in max_partial_frame_bytes, as a plain connection's. */
            int rc = connbuf_reserve(c, c->len + PLAIN_STEP);
            if (rc == PB_ETOOBIG) {
                connbuf_refuse(c);
                return;
            }
            if (rc < 0) {
                logging_printf(LOG_ERROR, "connection %s: out of memory reading", c->peer);
                conn_close(c);
                return;
            }
        }
        got = tls_read(c->tls, c->buf + c->len, c->cap - c->len);
        if (got > 0) {
            c->len += (size_t)got;
            got = 0;
            continue;
        }
        if (got == 0)
            break;
    }
    if (got < 0) {
        /* Not TLS (a plaintext client), a failed handshake (an unknown
         * CA), or a broken session: nothing more can be read. */
        logging_printf(
            got == TLS_ECLOSED ? LOG_DEBUG : LOG_INFO, "connection %s: %s; closed", c->peer,
            got == TLS_ECLOSED
                ? "TLS closed by the peer"
                : (tls_handshake_done(c->tls) ? tls_error(c->tls) : "TLS handshake failed"));
        if (got != TLS_ECLOSED)
            logging_printf(LOG_DEBUG, "connection %s: %s", c->peer, tls_error(c->tls));
        flush_records(c); /* a TLS alert, when there is one */
        if (c->closing)
            return;
        if (c->writes == 0) {
            conn_close(c);
            return;
        }
        c->condemned = 1; /* read nothing more; closed once the alert is out */
        c->close_after_write = 1;
        conn_retire(c);
        conn_update_reading(c);
        return;
    }
    flush_records(c);
    conn_resume(c);
}

uint8_t *conn_tls_seal(conn *c, uint8_t *plain, size_t *len)
{
    if (!tls_handshake_done(c->tls) || tls_write(c->tls, plain, *len) < 0) {
        /* An Error before the handshake (a deadline): the peer cannot
         * read it; the connection just closes. */
        free(plain);
        conn_close(c);
        return NULL;
    }
    free(plain);
    size_t n = tls_out_pending(c->tls);
    uint8_t *out = malloc(n ? n : 1);
    if (!out) {
        conn_close(c);
        return NULL;
    }
    *len = tls_out_take(c->tls, out, n);
    return out;
}
