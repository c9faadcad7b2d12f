/*
 * auth - checks the credentials of a Hello (auth = required) without
 * blocking the loop: the argon2id verification (libsodium's
 * crypto_pwhash_str_verify, tens of milliseconds and ~19 MiB by design)
 * runs on libuv's thread pool, at most AUTH_MAX_VERIFYING at once (the
 * rest wait in a FIFO bounded by max_handshaking, since only connections
 * still in their handshake authenticate).
 *
 * A refusal is answered after a constant delay from the Hello's arrival
 * (auth_failure_delay_ms), whether the user exists or not (an unknown user
 * is verified against a dummy hash, so the work is the same too), and that
 * delay doubles with each recent failure from the same address (up to
 * AUTH_MAX_DELAY_SHIFT doublings; forgotten after AUTH_FAILURE_MEMORY_MS
 * without one), in a table of at most AUTH_ADDRESSES addresses (the oldest
 * entry is reused). A success is answered at once and clears the
 * address's count. The delay runs on a libuv timer: the loop never sleeps.
 *
 * Nothing here logs or keeps a password: it is copied into the request,
 * wiped (sodium_memzero) as soon as it has been verified, and only the
 * user name and the address appear in the log.
 *
 * Threads: the loop thread, except the verification itself (a pool thread,
 * which touches only its own request).
 */
#ifndef PB_AUTH_H
#define PB_AUTH_H

#include "acl.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#define AUTH_MAX_VERIFYING     2
#define AUTH_ADDRESSES         1024
#define AUTH_MAX_DELAY_SHIFT   5
#define AUTH_FAILURE_MEMORY_MS (10 * 60 * 1000)

typedef struct auth auth;
typedef struct auth_req auth_req;

/* The result, on the loop thread: the user (of the acl current when the
 * request started; the callee takes a reference with acl_ref(u->owner) if
 * it keeps it), or NULL for a refusal. Not called after auth_cancel. */
typedef void (*auth_done_fn)(void *ctx, acl_user *u);

/* 0, or PB_ENOMEM / PB_EINVAL (libsodium failed to initialise). */
int auth_create(auth **out, uv_loop_t *loop, uint32_t failure_delay_ms);

/* The accounts checked from now on (a reference is taken; the previous
 * set is released). Requests already started keep theirs. */
void auth_set_acl(auth *a, acl *set);
acl *auth_acl(auth *a);

/* Starts checking user/password (copied) for a connection from peer (its
 * address; the port is ignored). done(ctx, ...) follows on the loop
 * thread. NULL without memory (then nothing will be called). */
auth_req *auth_start(auth *a, const struct sockaddr *peer, const char *user, size_t user_len,
                     const char *password, size_t password_len, auth_done_fn done, void *ctx);

/* The connection is gone: done will not be called; the request is freed
 * once its verification (if running) returns. */
void auth_cancel(auth_req *r);

/* Failures remembered for the address of peer (tests and diagnostics). */
unsigned auth_failures(auth *a, const struct sockaddr *peer);

/* After every request has finished or been cancelled, and the loop has run
 * their close callbacks. NULL-safe. */
void auth_destroy(auth *a);

#endif
