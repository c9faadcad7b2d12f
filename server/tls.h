/*
 * tls - TLS for the daemon's connections (OpenSSL, TLS 1.2 at least),
 * through memory BIOs: whoever owns the socket moves the bytes (libuv's
 * reads and writes on the loop, a subscription thread's after the
 * hand-off) and this module only turns ciphertext into plaintext and back.
 * A connection's tls_conn moves with its socket (net -> subscription).
 *
 * Settings ([server]): tls_cert and tls_key (PEM) turn TLS on for the
 * listener; with tls_client_ca, clients must present a certificate that CA
 * signed (mutual TLS), and its subject CN names the user it may
 * authenticate as without a password (auth = required).
 *
 * A client that does not speak TLS (a plaintext Hello) fails the handshake
 * at its first bytes: the connection is closed at once.
 *
 * Threads: a tls_ctx is shared, read-only after creation; a tls_conn
 * belongs to the thread that owns its socket.
 */
#ifndef PB_TLS_H
#define PB_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tls_ctx tls_ctx;
typedef struct tls_conn tls_conn;

/* TLS_EFATAL: the peer does not speak TLS, the handshake failed, or the
 * session broke (tls_error says why); TLS_ECLOSED: the peer closed it. */
#define TLS_EFATAL  (-1)
#define TLS_ECLOSED (-2)

/* Loads the certificate chain and key (and the client CA). 0, or -1 with
 * err naming the file and OpenSSL's reason. */
int tls_ctx_create(tls_ctx **out, const char *cert, const char *key, const char *client_ca,
                   char *err, size_t errlen);
void tls_ctx_free(tls_ctx *t);
bool tls_ctx_mutual(const tls_ctx *t);

/* A server-side session. NULL without memory. */
tls_conn *tls_conn_new(tls_ctx *t);
void tls_conn_free(tls_conn *c);

/* Ciphertext received from the socket. 0 or TLS_EFATAL. */
int tls_feed(tls_conn *c, const uint8_t *p, size_t n);

/* Plaintext decrypted so far: > 0 bytes into buf, 0 nothing more until more
 * is fed, TLS_ECLOSED, TLS_EFATAL. Drives the handshake. */
long tls_read(tls_conn *c, uint8_t *buf, size_t cap);

/* Encrypts n bytes (once the handshake is done). 0 or TLS_EFATAL. */
int tls_write(tls_conn *c, const void *p, size_t n);

/* Ciphertext waiting for the socket, and taking it (up to cap bytes). */
size_t tls_out_pending(const tls_conn *c);
size_t tls_out_take(tls_conn *c, uint8_t *buf, size_t cap);

bool tls_handshake_done(const tls_conn *c);

/* The verified client certificate's subject CN (mutual TLS), or NULL. */
const char *tls_peer_cn(const tls_conn *c);

/* Why the last call failed (OpenSSL's reason). */
const char *tls_error(const tls_conn *c);

#endif
