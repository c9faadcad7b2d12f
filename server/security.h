/*
 * security - the daemon's access control, as main.c sets it up: with
 * `auth = required` the accounts (acl.h) and the authenticator (auth.h)
 * that the listener hands Hellos to; on SIGHUP a reload of the [user]
 * sections (the configuration file read again and validated as a whole,
 * as --check does; a bad file is refused, logged with file:line, and the
 * running accounts stay). Connections already open keep working as the
 * same user with the new rights for what they publish next; one whose user
 * was removed is closed (UNAUTHENTICATED). A running subscription whose
 * user's read rights changed, or whose user was removed, is ended (the
 * client may subscribe again under the new rights). Changing `auth` itself needs a
 * restart (a reload says so). TLS: tls_cert and
 * tls_key (and tls_client_ca) are loaded once, at start-up.
 *
 * Threads: the main thread, which is the loop thread.
 */
#ifndef PB_SECURITY_H
#define PB_SECURITY_H

#include "config.h"

#include <uv.h>

struct auth;
struct net;
struct sub_registry;
struct tls_ctx;

typedef struct security {
    pb_auth_mode mode;
    struct auth *auth;   /* auth = required; else NULL */
    struct tls_ctx *tls; /* tls_cert set: the listener's TLS; else NULL */
} security;

/* Sets up what cfg asks for. 0, or a negative code (logged). */
int security_start(security *s, uv_loop_t *loop, const pb_config *cfg);

struct acl;
/* SIGHUP (reload.c), first step: the accounts cfg (the file read again)
 * describes, validated as at start-up. 0 with *out the new set (NULL when
 * auth = none, or when auth itself changed: that needs a restart, logged),
 * or -1 with err naming the file and the reason (nothing changes). */
int security_prepare(const security *s, const pb_config *cfg, struct acl **out, char *err,
                     size_t errlen);
/* Second step: applies set (NULL: nothing) to new connections, to n's
 * open ones, and to subs' running subscriptions (those whose user's read
 * rights changed, or who was removed, end); logs what it did; takes set. */
void security_apply(security *s, struct net *n, struct sub_registry *subs, struct acl *set);
/* Frees; after the listener's connections are closed. */
void security_stop(security *s);

#endif
