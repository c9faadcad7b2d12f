/*
 * security - access control set-up and its reload on SIGHUP (security.h).
 *
 * Threads: the main thread (the loop thread).
 */
#include "security.h"

#include "acl.h"
#include "auth.h"
#include "logging.h"
#include "net.h"
#include "pb_errors.h"
#include "sub.h"
#include "tls.h"

#include <stdio.h>
#include <string.h>

int security_start(security *s, uv_loop_t *loop, const pb_config *cfg)
{
    memset(s, 0, sizeof *s);
    s->mode = cfg->auth;
    char err[512];
    if (cfg->tls_cert) {
        if (tls_ctx_create(&s->tls, cfg->tls_cert, cfg->tls_key, cfg->tls_client_ca, err,
                           sizeof err) < 0) {
            logging_printf(LOG_ERROR, "%s: %s", cfg->path, err);
            return PB_EINVAL;
        }
        logging_printf(LOG_INFO, "TLS on (TLS 1.2 at least), certificate %s%s%s", cfg->tls_cert,
                       cfg->tls_client_ca ? "; client certificates required, signed by " : "",
                       cfg->tls_client_ca ? cfg->tls_client_ca : "");
    }
    if (cfg->auth == PB_AUTH_NONE) {
        logging_printf(LOG_INFO, "auth = none: every connection is anonymous and may publish and "
                                 "read every topic");
        return 0;
    }
    acl *set;
    int rc = acl_create(cfg, &set, err, sizeof err);
    if (rc < 0) {
        logging_printf(LOG_ERROR, "%s: %s", cfg->path, err);
        return rc;
    }
    if ((rc = auth_create(&s->auth, loop, cfg->auth_failure_delay_ms)) < 0) {
        logging_printf(LOG_ERROR, "cannot set up authentication (libsodium): %s", pb_strerror(rc));
        acl_unref(set);
        return rc;
    }
    auth_set_acl(s->auth, set);
    acl_unref(set);
    logging_printf(LOG_INFO,
                   "auth = required: %zu user(s); a refused Hello is answered after %u ms",
                   acl_count(set), cfg->auth_failure_delay_ms);
    return 0;
}

/* sub_registry_end_users: is the user still there, with the same read
 * rights? */
static bool same_read_rights(void *ctx, const char *user, uint64_t fingerprint)
{
    acl_user *u = acl_find(ctx, user, strlen(user));
    if (!u)
        return false;
    sub_rights r = {.user = u->name,
                    .allow = u->subscribe,
                    .nallow = u->n_subscribe,
                    .deny = u->deny_subscribe,
                    .ndeny = u->n_deny_subscribe};
    return sub_rights_fingerprint(&r) == fingerprint;
}

int security_prepare(const security *s, const pb_config *cfg, acl **out, char *err, size_t errlen)
{
    *out = NULL;
    if (cfg->auth != s->mode) {
        logging_printf(LOG_WARN,
                       "SIGHUP: %s: auth changed to %s; changing auth needs a restart (the "
                       "running users stay)",
                       cfg->path, config_auth_names[cfg->auth]);
        return 0;
    }
    if (s->mode == PB_AUTH_NONE)
        return 0;
    if (cfg->n_users == 0) {
        snprintf(err, errlen, "%s: auth = required but no [user NAME] section", cfg->path);
        return -1;
    }
    char why[1024];
    if (acl_create(cfg, out, why, sizeof why) < 0) {
        snprintf(err, errlen, "%s: %s", cfg->path, why);
        return -1;
    }
    return 0;
}

void security_apply(security *s, struct net *n, struct sub_registry *subs, acl *set)
{
    if (!set)
        return;
    auth_set_acl(s->auth, set);
    size_t closed = net_users_reloaded(n, set);
    uint32_t ended = subs ? sub_registry_end_users(subs, same_read_rights, set) : 0;
    logging_printf(LOG_INFO,
                   "SIGHUP: %zu user(s) reloaded; %zu connection(s) of removed users "
                   "closed, %u subscription(s) whose read rights changed ended",
                   acl_count(set), closed, ended);
    acl_unref(set);
}

void security_stop(security *s)
{
    auth_destroy(s->auth);
    s->auth = NULL;
    tls_ctx_free(s->tls);
    s->tls = NULL;
}
