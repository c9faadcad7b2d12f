/*
 * reload - SIGHUP (see reload.h): load and validate, prepare everything
 * that can fail (router, accounts), then apply it all; nothing is applied
 * unless everything was prepared.
 */
#include "reload.h"

#include "acl.h"
#include "logging.h"
#include "net.h"
#include "router.h"
#include "security.h"
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool str_differs(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0);
}

static bool mirrors_differ(const pb_config *a, const pb_config *b)
{
    if (a->n_mirrors != b->n_mirrors)
        return true;
    for (size_t i = 0; i < a->n_mirrors; i++)
        if (str_differs(a->mirrors[i].name, b->mirrors[i].name) ||
            str_differs(a->mirrors[i].stream, b->mirrors[i].stream))
            return true;
    return false;
}

/* Logs every setting that changed but needs a restart. */
static void warn_restart_only(const reload_target *t, const pb_config *nc)
{
    const pb_config *rc = t->cfg;
    struct {
        const char *name;
        bool changed;
    } s[] = {
        {"listen", !t->listen_overridden && (str_differs(rc->listen_host, nc->listen_host) ||
                                             rc->listen_port != nc->listen_port)},
        {"data_dir", !t->data_dir_overridden && str_differs(rc->data_dir, nc->data_dir)},
        {"metrics_listen",
         str_differs(rc->metrics_host, nc->metrics_host) || rc->metrics_port != nc->metrics_port},
        {"fsync", rc->fsync != nc->fsync},
        {"fsync_interval_ms", rc->fsync_interval_ms != nc->fsync_interval_ms},
        {"threads", rc->threads != nc->threads},
        {"subscriber_queue_bytes", rc->subscriber_queue_bytes != nc->subscriber_queue_bytes},
        {"subscriber_queue_total_bytes",
         rc->subscriber_queue_total_bytes != nc->subscriber_queue_total_bytes},
        {"write_deadline_ms", rc->write_deadline_ms != nc->write_deadline_ms},
        {"route_cache_entries", rc->route_cache_entries != nc->route_cache_entries},
        {"partition_idle_ms", rc->partition_idle_ms != nc->partition_idle_ms},
        {"max_topics_in_memory", rc->max_topics_in_memory != nc->max_topics_in_memory},
        {"dedup_window_ms", rc->dedup_window_ms != nc->dedup_window_ms},
        {"dedup_max_entries", rc->dedup_max_entries != nc->dedup_max_entries},
        {"auth_failure_delay_ms", rc->auth_failure_delay_ms != nc->auth_failure_delay_ms},
        {"data_mode", rc->data_mode != nc->data_mode},
        {"tls_cert", str_differs(rc->tls_cert, nc->tls_cert)},
        {"tls_key", str_differs(rc->tls_key, nc->tls_key)},
        {"tls_client_ca", str_differs(rc->tls_client_ca, nc->tls_client_ca)},
        {"[mirror] sections", mirrors_differ(rc, nc)},
        {"retain_age", rc->retain_age_s != nc->retain_age_s},
        {"retain_bytes", rc->retain_bytes != nc->retain_bytes},
        {"min_free_bytes", rc->min_free_bytes != nc->min_free_bytes},
        {"page_cache_bytes", rc->page_cache_bytes != nc->page_cache_bytes},
        {"direct_write_bytes", rc->direct_write_bytes != nc->direct_write_bytes},
        {"recycle_segments", rc->recycle_segments != nc->recycle_segments},
        {"follow", !t->follow_overridden && str_differs(rc->follow, nc->follow)},
        {"follow_user", str_differs(rc->follow_user, nc->follow_user)},
        {"follow_password", str_differs(rc->follow_password, nc->follow_password)},
        {"follow_password_file", str_differs(rc->follow_password_file, nc->follow_password_file)},
        {"follow_tls", rc->follow_tls != nc->follow_tls},
        {"follow_ca", str_differs(rc->follow_ca, nc->follow_ca)},
        {"follow_tls_cert", str_differs(rc->follow_tls_cert, nc->follow_tls_cert)},
        {"follow_tls_key", str_differs(rc->follow_tls_key, nc->follow_tls_key)},
        {"min_standby_acks", rc->min_standby_acks != nc->min_standby_acks},
        {"standby_timeout_ms", rc->standby_timeout_ms != nc->standby_timeout_ms},
        {"standby_timeout", rc->standby_timeout_local != nc->standby_timeout_local},
    };
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++)
        if (s[i].changed)
            logging_printf(LOG_WARN,
                           "SIGHUP: %s: %s changed; it takes effect at the next restart (the "
                           "running value stays)",
                           nc->path, s[i].name);
}

/* Loads the file as at start-up; -1 with err on any problem. The
 * command-line overrides stay in force (and count for the exposure check). */
static int load(const reload_target *t, pb_config *nc, char *err, size_t errlen)
{
    if (config_load(t->path, nc, err, errlen) < 0)
        return -1;
    if (t->listen_overridden) {
        char *h = strdup(t->cfg->listen_host);
        if (!h) {
            snprintf(err, errlen, "out of memory");
            config_free(nc);
            return -1;
        }
        free(nc->listen_host);
        nc->listen_host = h;
        nc->listen_port = t->cfg->listen_port;
        nc->listen_ipv6 = t->cfg->listen_ipv6;
    }
    char why[1024];
    if (config_check_exposure(nc, why, sizeof why) < 0) {
        snprintf(err, errlen, "%s: %s", nc->path, why);
        config_free(nc);
        return -1;
    }
    return 0;
}

/* The new rules and live limits into the running configuration; nc gets
 * the old rules (freed with it). */
static void take_rules_and_limits(pb_config *rc, pb_config *nc)
{
    pb_rule *rules = rc->rules;
    size_t n_rules = rc->n_rules;
    rc->rules = nc->rules;
    rc->n_rules = nc->n_rules;
    nc->rules = rules;
    nc->n_rules = n_rules;
    rc->max_frame_bytes = nc->max_frame_bytes;
    rc->max_event_bytes = nc->max_event_bytes;
    rc->max_batch_events = nc->max_batch_events;
    rc->max_connections = nc->max_connections;
    rc->idle_timeout_ms = nc->idle_timeout_ms;
    rc->handshake_timeout_ms = nc->handshake_timeout_ms;
    rc->max_handshaking = nc->max_handshaking;
    rc->log_level = nc->log_level;
    if (nc->max_partitions) /* 0: sized at start-up from the descriptors; kept */
        rc->max_partitions = nc->max_partitions;
}

int reload_config(reload_target *t)
{
    if (!t->path) {
        logging_printf(LOG_WARN, "SIGHUP: running on built-in defaults: no file to reload");
        return -1;
    }
    pb_config nc;
    char err[1536];
    router *nr = NULL;
    acl *users = NULL;
    if (load(t, &nc, err, sizeof err) < 0) {
        logging_printf(LOG_ERROR,
                       "SIGHUP: configuration refused, the running configuration "
                       "stays: %s",
                       err);
        return -1;
    }
    if (router_create(&nc, &nr, err, sizeof err) < 0 ||
        security_prepare(t->sec, &nc, &users, err, sizeof err) < 0) {
        logging_printf(LOG_ERROR,
                       "SIGHUP: configuration refused, the running configuration "
                       "stays: %s",
                       err);
        router_free(nr);
        config_free(&nc);
        return -1;
    }
    warn_restart_only(t, &nc);
    net_options no = {
        .max_frame_bytes = nc.max_frame_bytes,
        .max_event_bytes = nc.max_event_bytes,
        .max_batch_events = nc.max_batch_events,
        .max_connections = nc.max_connections,
        .idle_timeout_ms = nc.idle_timeout_ms,
        .handshake_timeout_ms = nc.handshake_timeout_ms,
        .max_handshaking = nc.max_handshaking,
        .router = nr,
    };
    net_reconfigure(t->net, &no);
    router_free(*t->router);
    *t->router = nr;
    take_rules_and_limits(t->cfg, &nc);
    store_set_max_partitions(t->store, t->cfg->max_partitions);
    logging_set_level((int)t->cfg->log_level);
    security_apply(t->sec, t->net, t->subs, users);
    logging_printf(LOG_INFO,
                   "SIGHUP: configuration reloaded from %s: %zu partition rule(s), "
                   "max_connections = %u, max_frame_bytes = %llu, max_event_bytes = %llu, "
                   "max_batch_events = %u, max_partitions = %u",
                   t->path, t->cfg->n_rules, t->cfg->max_connections,
                   (unsigned long long)t->cfg->max_frame_bytes,
                   (unsigned long long)t->cfg->max_event_bytes, t->cfg->max_batch_events,
                   t->cfg->max_partitions);
    config_free(&nc);
    return 0;
}
