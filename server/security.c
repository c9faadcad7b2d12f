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

void security_reload(security *s, struct net *n, struct sub_registry *subs, const char *config_path)
{
    if (!config_path) {
        logging_printf(LOG_WARN, "SIGHUP: running on built-in defaults: no file to reload");
        return;
    }
    pb_config cfg;
    char err[1024];
    int rc = config_load(config_path, &cfg, err, sizeof err);
    if (rc < 0) {
        logging_printf(LOG_ERROR, "SIGHUP: configuration refused, the running users stay: %s", err);
        return;
    }
    if (cfg.auth != s->mode) {
        logging_printf(LOG_ERROR,
                       "SIGHUP: %s: auth changed to %s; changing auth needs a restart (the "
                       "running users stay)",
                       config_path, config_auth_names[cfg.auth]);
        config_free(&cfg);
        return;
    }
    if (s->mode == PB_AUTH_NONE) {
        logging_printf(LOG_INFO, "SIGHUP: auth = none: no users to reload (other settings need a "
                                 "restart)");
        config_free(&cfg);
        return;
    }
    if (cfg.n_users == 0) {
        logging_printf(LOG_ERROR,
                       "SIGHUP: %s: auth = required but no [user NAME] section; the "
                       "running users stay",
                       config_path);
        config_free(&cfg);
        return;
    }
    acl *set;
    rc = acl_create(&cfg, &set, err, sizeof err);
    config_free(&cfg);
    if (rc < 0) {
        logging_printf(LOG_ERROR, "SIGHUP: %s: %s; the running users stay", config_path, err);
        return;
    }
    auth_set_acl(s->auth, set);
    size_t closed = net_users_reloaded(n, set);
    uint32_t ended = subs ? sub_registry_end_users(subs, same_read_rights, set) : 0;
    logging_printf(LOG_INFO,
                   "SIGHUP: %zu user(s) reloaded from %s; %zu connection(s) of removed users "
                   "closed, %u subscription(s) whose read rights changed ended (other settings "
                   "need a restart)",
                   acl_count(set), config_path, closed, ended);
    acl_unref(set);
}

void security_stop(security *s)
{
    auth_destroy(s->auth);
    s->auth = NULL;
    tls_ctx_free(s->tls);
    s->tls = NULL;
}
