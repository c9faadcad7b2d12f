/*
 * tls - libprotobus's TLS layer (pb_client_options.tls, or an address
 * "tls://host:port"): OpenSSL over the client's non-blocking socket, TLS
 * 1.2 at least, the server's certificate verified against tls_ca (or the
 * system's CAs) and its name or IP address; a client certificate for
 * mutual TLS when tls_cert/tls_key are given. client.c reads and writes
 * through client_tls_recv / client_tls_send, which keep recv's and send's
 * conventions.
 *
 * Threads: the client's (one at a time, like the rest of pb_client).
 */
#include "client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

/* OpenSSL's reason for the last failure (the verification's, if it was
 * that), into out. */
static void reason(const pb_client *c, char *out, size_t n)
{
    long v = c->ssl ? SSL_get_verify_result(c->ssl) : X509_V_OK;
    unsigned long e = ERR_get_error();
    if (v != X509_V_OK) {
        snprintf(out, n, "certificate verification failed: %s", X509_verify_cert_error_string(v));
    } else if (e) {
        char buf[200];
        ERR_error_string_n(e, buf, sizeof buf);
        snprintf(out, n, "%s", buf);
    } else {
        snprintf(out, n, "the connection was closed during the handshake");
    }
    ERR_clear_error();
}

static int setup_ctx(pb_client *c)
{
    char why[300];
    c->ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (!c->ssl_ctx)
        return client_die(c, PB_ENOMEM, "out of memory for TLS");
    SSL_CTX_set_min_proto_version(c->ssl_ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(c->ssl_ctx,
                     SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_verify(c->ssl_ctx, SSL_VERIFY_PEER, NULL);
    const pb_client_options *o = &c->opts;
    if (o->tls_ca ? SSL_CTX_load_verify_locations(c->ssl_ctx, o->tls_ca, NULL) != 1
                  : SSL_CTX_set_default_verify_paths(c->ssl_ctx) != 1) {
        reason(c, why, sizeof why);
        return client_die(c, PB_EINVAL, "tls_ca %s: %s", o->tls_ca ? o->tls_ca : "(system)", why);
    }
    if (!o->tls_cert != !o->tls_key)
        return client_die(c, PB_EINVAL, "tls_cert and tls_key go together");
    if (o->tls_cert &&
        (SSL_CTX_use_certificate_chain_file(c->ssl_ctx, o->tls_cert) != 1 ||
         SSL_CTX_use_PrivateKey_file(c->ssl_ctx, o->tls_key, SSL_FILETYPE_PEM) != 1 ||
         SSL_CTX_check_private_key(c->ssl_ctx) != 1)) {
        reason(c, why, sizeof why);
        return client_die(c, PB_EINVAL, "client certificate %s / key %s: %s", o->tls_cert,
                          o->tls_key, why);
    }
    return 0;
}

int client_tls_start(pb_client *c, const char *host, int64_t deadline)
{
    int rc = setup_ctx(c);
    if (rc < 0)
        return rc;
    c->ssl = SSL_new(c->ssl_ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1)
        return client_die(c, PB_ENOMEM, "out of memory for TLS");
    /* The certificate must name what we connected to. */
    struct in6_addr a6;
    struct in_addr a4;
    if (inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host);
    } else {
        SSL_set_tlsext_host_name(c->ssl, host);
        SSL_set1_host(c->ssl, host);
    }
    for (;;) {
        int r = SSL_connect(c->ssl);
        if (r == 1)
            return 0;
        int e = SSL_get_error(c->ssl, r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            char why[300];
            reason(c, why, sizeof why);
            return client_die(c, PB_ECONNECT, "TLS handshake with %s failed: %s", c->address, why);
        }
        struct pollfd p = {.fd = c->fd, .events = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT};
        int64_t left = deadline - client_now_ms();
        if (left <= 0)
            return client_die(c, PB_ETIMEDOUT, "TLS handshake with %s: no answer within %u ms",
                              c->address, c->opts.connect_timeout_ms);
        if (poll(&p, 1, (int)(left > 60000 ? 60000 : left)) < 0 && errno != EINTR)
            return client_die(c, -errno, "waiting on %s: %s", c->address, strerror(errno));
    }
}

long client_tls_recv(pb_client *c, void *buf, size_t n)
{
    int r = SSL_read(c->ssl, buf, n > INT32_MAX ? INT32_MAX : (int)n);
    if (r > 0)
        return r;
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        if (errno == 0 || r == 0)
            return 0; /* closed without close_notify */
        return -1;
    default:
        ERR_clear_error();
        errno = ECONNRESET;
        return -1;
    }
}

long client_tls_send(pb_client *c, const void *buf, size_t n)
{
    int r = SSL_write(c->ssl, buf, n > INT32_MAX ? INT32_MAX : (int)n);
    if (r > 0)
        return r;
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_SYSCALL:
        if (errno == 0)
            errno = EPIPE;
        return -1;
    default:
        ERR_clear_error();
        errno = EPIPE;
        return -1;
    }
}

bool client_tls_pending(const pb_client *c)
{
    return c->ssl && SSL_pending(c->ssl) > 0;
}

void client_tls_free(pb_client *c)
{
    SSL_free(c->ssl);
    SSL_CTX_free(c->ssl_ctx);
    c->ssl = NULL;
    c->ssl_ctx = NULL;
}
