/*
 * reload - SIGHUP: the configuration file read again and validated as a
 * whole, exactly as at start-up and by `protobusd --check` (config_load,
 * then config_check_exposure); a file that fails is refused, logged with
 * its file:line and reason, and nothing changes. A good one takes effect
 * at once for:
 *   - the [partition] rules: a new router (with an empty route cache), so
 *     every topic is routed by the new rules from its next event on, and
 *     partitions created from then on get the new rules' segment and
 *     retention settings (a partition that exists keeps its segment size,
 *     rotation and retention until the next restart);
 *   - the limits max_frame_bytes, max_event_bytes, max_batch_events,
 *     max_connections, idle_timeout_ms, handshake_timeout_ms,
 *     max_handshaking, max_partitions, log_level (open connections stay;
 *     what they send next meets the new limits);
 *   - the [user] sections (security.h).
 * Open connections and running subscriptions are left alone. Every other
 * setting (listen, data_dir, fsync, threads, the subscriber queues, TLS,
 * auth, mirrors, metrics_listen, dedup, retention, min_free_bytes, ...) needs a restart: a reload that
 * changes one logs it by name and keeps the running value.
 *
 * Threads: the loop thread (the SIGHUP handler), which owns the router and
 * the net; the running configuration's rules are read by the loop thread
 * only (partition_options_for, from store_get).
 */
#ifndef PB_RELOAD_H
#define PB_RELOAD_H

#include "config.h"

#include <stdbool.h>

struct net;
struct router;
struct store;
struct security;
struct sub_registry;

typedef struct reload_target {
    pb_config *cfg;   /* the running configuration: rules and limits replaced */
    const char *path; /* -c FILE; NULL: built-in defaults, nothing to read */
    bool listen_overridden, data_dir_overridden; /* --listen, --data-dir */
    bool follow_overridden;                      /* --follow */
    struct net *net;
    struct router **router; /* replaced; the old one freed */
    struct store *store;
    struct security *sec;
    struct sub_registry *subs;
} reload_target;

/* 0: the file was applied (logged); -1: refused (logged with file:line),
 * nothing changed. */
int reload_config(reload_target *t);

#endif
