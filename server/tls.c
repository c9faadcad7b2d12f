/*
 * tls - OpenSSL sessions over memory BIOs (see tls.h).
 *
 * Threads: tls_ctx read-only after creation (OpenSSL allows one SSL_CTX
 * for many SSLs on many threads); a tls_conn on its owner's thread.
 */
#include "tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tls_ctx {
    SSL_CTX *ssl;
    bool mutual;
};

struct tls_conn {
    SSL *ssl;
    BIO *rbio, *wbio; /* memory BIOs: ciphertext in, ciphertext out */
    bool verified;    /* the CN below was read after the handshake */
    char cn[128];
    char why[256];
};

/* OpenSSL's queued reason, or `what`. */
static void ssl_reason(char *out, size_t n, const char *what)
{
    unsigned long e = ERR_get_error();
    if (e) {
        char buf[200];
        ERR_error_string_n(e, buf, sizeof buf);
        snprintf(out, n, "%s: %s", what, buf);
    } else {
        snprintf(out, n, "%s", what);
    }
    ERR_clear_error();
}

int tls_ctx_create(tls_ctx **out, const char *cert, const char *key, const char *client_ca,
                   char *err, size_t errlen)
{
    *out = NULL;
    tls_ctx *t = calloc(1, sizeof *t);
    if (!t || !(t->ssl = SSL_CTX_new(TLS_server_method()))) {
        snprintf(err, errlen, "out of memory for TLS");
        free(t);
        return -1;
    }
    SSL_CTX_set_min_proto_version(t->ssl, TLS1_2_VERSION);
    SSL_CTX_set_mode(t->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_RELEASE_BUFFERS);
    char why[300];
    if (SSL_CTX_use_certificate_chain_file(t->ssl, cert) != 1) {
        ssl_reason(why, sizeof why, "cannot load the certificate");
        snprintf(err, errlen, "tls_cert %s: %s", cert, why);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(t->ssl, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(t->ssl) != 1) {
        ssl_reason(why, sizeof why, "cannot load the key, or it does not match tls_cert");
        snprintf(err, errlen, "tls_key %s: %s", key, why);
        goto fail;
    }
    if (client_ca) {
        if (SSL_CTX_load_verify_locations(t->ssl, client_ca, NULL) != 1) {
            ssl_reason(why, sizeof why, "cannot load the CA certificates");
            snprintf(err, errlen, "tls_client_ca %s: %s", client_ca, why);
            goto fail;
        }
        SSL_CTX_set_verify(t->ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        t->mutual = true;
    }
    *out = t;
    return 0;
fail:
    SSL_CTX_free(t->ssl);
    free(t);
    return -1;
}

void tls_ctx_free(tls_ctx *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ssl);
    free(t);
}

bool tls_ctx_mutual(const tls_ctx *t)
{
    return t->mutual;
}

tls_conn *tls_conn_new(tls_ctx *t)
{
    tls_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->ssl = SSL_new(t->ssl);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (!c->ssl || !c->rbio || !c->wbio) {
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        SSL_free(c->ssl);
        free(c);
        return NULL;
    }
    /* An empty memory BIO reads as "retry", not as end of file. */
    BIO_set_mem_eof_return(c->rbio, -1);
    SSL_set_bio(c->ssl, c->rbio, c->wbio); /* the SSL owns them now */
    SSL_set_accept_state(c->ssl);
    return c;
}

void tls_conn_free(tls_conn *c)
{
    if (!c)
        return;
    SSL_free(c->ssl);
    free(c);
}

int tls_feed(tls_conn *c, const uint8_t *p, size_t n)
{
    while (n > 0) {
        int w = BIO_write(c->rbio, p, n > INT32_MAX ? INT32_MAX : (int)n);
        if (w <= 0) {
            snprintf(c->why, sizeof c->why, "out of memory buffering TLS input");
            return TLS_EFATAL;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* After the handshake: the client certificate's CN, if one was verified. */
static void read_peer(tls_conn *c)
{
    c->verified = true;
    X509 *x = SSL_get_peer_certificate(c->ssl);
    if (!x)
        return;
    if (SSL_get_verify_result(c->ssl) == X509_V_OK) {
        X509_NAME *name = X509_get_subject_name(x);
        int len = X509_NAME_get_text_by_NID(name, NID_commonName, c->cn, sizeof c->cn);
        if (len <= 0 || (size_t)len >= sizeof c->cn || memchr(c->cn, '\0', (size_t)len))
            c->cn[0] = '\0';
    }
    X509_free(x);
}

long tls_read(tls_conn *c, uint8_t *buf, size_t cap)
{
    int n = SSL_read(c->ssl, buf, cap > INT32_MAX ? INT32_MAX : (int)cap);
    if (!c->verified && SSL_is_init_finished(c->ssl))
        read_peer(c);
    if (n > 0)
        return n;
    switch (SSL_get_error(c->ssl, n)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        ERR_clear_error();
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        return TLS_ECLOSED;
    default:
        ssl_reason(c->why, sizeof c->why, "TLS");
        return TLS_EFATAL;
    }
}

int tls_write(tls_conn *c, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        int w = SSL_write(c->ssl, b, n > INT32_MAX ? INT32_MAX : (int)n);
        if (w <= 0) {
            ssl_reason(c->why, sizeof c->why,
                       SSL_is_init_finished(c->ssl) ? "TLS write" : "TLS handshake not done");
            return TLS_EFATAL;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

size_t tls_out_pending(const tls_conn *c)
{
    return BIO_ctrl_pending(c->wbio);
}

size_t tls_out_take(tls_conn *c, uint8_t *buf, size_t cap)
{
    int n = BIO_read(c->wbio, buf, cap > INT32_MAX ? INT32_MAX : (int)cap);
    return n > 0 ? (size_t)n : 0;
}

bool tls_handshake_done(const tls_conn *c)
{
    return SSL_is_init_finished(c->ssl);
}

const char *tls_peer_cn(const tls_conn *c)
{
    return c->cn[0] ? c->cn : NULL;
}

const char *tls_error(const tls_conn *c)
{
    return c->why[0] ? c->why : "TLS failure";
}
