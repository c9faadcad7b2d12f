/*
 * acl - who may do what: the accounts of the configuration's [user NAME]
 * sections, compiled for the daemon. A user has a password hash (argon2id,
 * checked by auth.c) and rights over topics, each a list of whole-topic
 * PCRE2 patterns:
 *
 *   publish         topics the user may publish to (none listed: none)
 *   deny_publish    ... except these (deny wins)
 *   subscribe       topics whose events the user may read: live, history,
 *                   --last N, from a time (none listed: none)
 *   deny_subscribe  ... except these (deny wins)
 *
 * A right is decided on the topic itself, never on the patterns a client
 * sends, so no subscription pattern can widen it: a subscription's pattern
 * set is restricted with the user's read rights (patterns_restrict), and
 * every path that delivers an event (replay, live fan-out, --last N) asks
 * that set. Publish rights are a pattern set per user, asked for each
 * event's topic before routing, with the set's cache of topic -> decision.
 *
 * Lifetime: an acl is built from a loaded configuration and refcounted; a
 * connection holds a reference for as long as it points at one of its
 * users, so a reload (SIGHUP) can swap the set while old connections still
 * use the previous one.
 *
 * Threads: the loop thread (acl_may_publish writes the user's pattern
 * cache; references are taken and dropped there). acl_create / acl_unref
 * may run on the main thread, which is the loop thread in protobusd.
 */
#ifndef PB_ACL_H
#define PB_ACL_H

#include "config.h"
#include "patterns.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct acl acl;

typedef struct acl_user {
    char *name;
    char *password_hash;
    pattern_set *publish; /* publish, restricted by deny_publish; loop thread */
    /* Read rights, as patterns: a subscription's set is restricted with
     * them (patterns_restrict). */
    const char *const *subscribe;
    size_t n_subscribe;
    const char *const *deny_subscribe;
    size_t n_deny_subscribe;
    acl *owner;
} acl_user;

/* Compiles cfg's [user] sections (copied: cfg may be freed afterwards).
 * One reference, the caller's. 0, or a negative code with err naming the
 * user and the pattern. */
int acl_create(const pb_config *cfg, acl **out, char *err, size_t errlen);

/* The user called name[0..len), or NULL. */
acl_user *acl_find(acl *a, const char *name, size_t len);

/* Number of users. */
size_t acl_count(const acl *a);

/* References (loop thread). acl_unref frees the set with its last one;
 * NULL-safe. */
acl *acl_ref(acl *a);
void acl_unref(acl *a);

/* May u publish to topic[0..len)? Cached per user and topic. */
bool acl_may_publish(acl_user *u, const char *topic, size_t len);

/* May u subscribe at all (one subscribe pattern)? */
bool acl_may_subscribe(const acl_user *u);

#endif
