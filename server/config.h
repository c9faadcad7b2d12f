/*
 * Daemon configuration: reads the INI file (parsed by inih) into a validated
 * pb_config that the rest of protobusd reads.
 *
 * Threads: config_load() runs once at start-up on the main thread. The loaded
 * pb_config is never modified afterwards, so any thread may read it until
 * config_free().
 *
 * File format (see conf/protobusd.conf for a commented example):
 *   [server]               daemon-wide settings; optional, every key has a default
 *   [partition NAME]       one routing rule; rules are tried in file order
 *   [mirror NAME]          ship partitions to a NATS JetStream stream (config_mirror.c)
 *   [user NAME]            an account: password hash and rights (config_users.c)
 * Comments start with '#' or ';' at the start of a line, or after whitespace
 * inside a line (so write a regex's " #" as "\x20#" if you ever need one).
 * Lines are at most CONFIG_MAX_LINE characters.
 */
#ifndef PB_CONFIG_H
#define PB_CONFIG_H

#include "logging.h"
#include "partname.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* max_frame_bytes must be at least max_event_bytes plus this much, so that
 * one maximal event still fits in a Publish or Event frame with its headers. */
#define CONFIG_FRAME_OVERHEAD 1024

/* Longest accepted line of a config file (inih's fixed line buffer). */
#define CONFIG_MAX_LINE 196

typedef enum pb_fsync_policy {
    PB_FSYNC_ALWAYS = 0, /* fdatasync before every ack (group commit) */
    PB_FSYNC_INTERVAL,   /* fdatasync every fsync_interval_ms; acks do not wait */
    PB_FSYNC_NEVER,      /* leave it to the kernel */
} pb_fsync_policy;

/* One [partition NAME] section: topics whose whole text matches `match` go
 * to the partition named by expanding `partition`. */
typedef struct pb_rule {
    /* Name template as written: literal [A-Za-z0-9._-] and $0..$9, where $N
     * is the match's capture group N ($0: the whole topic). After expansion
     * it must be a partition name (partname.h), which the router checks. */
    char *partition;
    char *match;            /* PCRE2 pattern as written (anchored when compiled) */
    int line;               /* line of the [partition ...] header */
    int match_line;         /* line of the match key */
    int max_group_ref;      /* highest $N in `partition`; -1: a static name */
    uint64_t segment_bytes; /* rotate a segment once it reaches this size */
    /* Time-based rotation, 0 = none. A segment rotates when the clock crosses
     * an instant t (seconds since the epoch, UTC) where
     * (t + utc_offset_s) % rotate_every_s == 0; e.g. 1d at +02:00 rotates at
     * 00:00 local time, 22:00 UTC. */
    int64_t rotate_every_s;
    int32_t utc_offset_s;
    /* Retention (server/retention.h): remove whole closed segments whose
     * newest event was received more than retain_age_s ago, and the oldest
     * ones while the partition holds more than retain_bytes. 0 = no limit.
     * Unset in the section: [server]'s values. */
    int64_t retain_age_s;
    uint64_t retain_bytes;
    /* compress = zstd: closed segments are compressed (server/compress.c)
     * at compress_level. -1 / 0 in the section: [server]'s values. */
    int32_t compress;
    int32_t compress_level;
} pb_rule;

/* A mirror's message format: the stored EncapsulatedEvent bytes, or the
 * payload alone with the event's other fields as NATS headers. */
typedef enum pb_mirror_format { PB_MIRROR_EVENT = 0, PB_MIRROR_PAYLOAD } pb_mirror_format;

/* Longest mirror name; it names the cursor file, so [A-Za-z0-9._-]. */
#define PB_MIRROR_NAME_MAX 64
/* Most servers one nats_url may list. */
#define PB_MIRROR_MAX_URLS 16

/* One [mirror NAME] section (config_mirror.c; meaning: server/mirror.h). */
typedef struct pb_mirror_config {
    char *name;
    int line;    /* of the [mirror ...] header */
    char **urls; /* nats_url split at commas and blanks, >= 1 */
    size_t n_urls;
    char *partitions;     /* whole-name PCRE2 regex (default ".*") */
    char *stream;         /* JetStream stream name */
    char *subject_prefix; /* non-empty, ends with '.' */
    pb_mirror_format format;
    bool create_stream;         /* create the stream if missing (default yes) */
    uint32_t replicas;          /* for a created stream (default 1) */
    int64_t duplicate_window_s; /* for a created stream (default 120) */
    uint32_t max_pending;       /* publishes awaiting their ack, at most (default 1024) */
    uint32_t ack_timeout_ms;    /* a publish not acked by then failed (default 5000) */
    bool hold_retention;        /* retention keeps what is not shipped (default yes) */
} pb_mirror_config;

/* [server] auth: who may connect. */
typedef enum pb_auth_mode {
    PB_AUTH_NONE = 0, /* every connection is anonymous and may do everything */
    PB_AUTH_REQUIRED, /* a connection authenticates in its Hello as a [user] */
} pb_auth_mode;

/* Longest user name; names are 1..PB_USER_NAME_MAX of A-Z a-z 0-9 . _ - @ */
#define PB_USER_NAME_MAX 64
/* Longest password_hash (libsodium's crypto_pwhash_STRBYTES - 1). */
#define PB_USER_HASH_MAX 127

/* One [user NAME] section (config_users.c; meaning: server/acl.h). Pattern
 * lists are whole-topic PCRE2 regexes, checked at load time. */
typedef struct pb_user_config {
    char *name;
    int line;            /* of the [user ...] header */
    char *password_hash; /* argon2id, crypto_pwhash_str's form ("$argon2id$v=19$...") */
    char **publish, **subscribe, **deny_publish, **deny_subscribe;
    size_t n_publish, n_subscribe, n_deny_publish, n_deny_subscribe;
} pb_user_config;

/* The largest dedup_max_entries: dedup.h's DEDUP_MAX_ENTRIES, which
 * dedup.c asserts equal (a slot keeps its hops in 24 bits). */
#define CONFIG_DEDUP_MAX_ENTRIES (1u << 24)

typedef struct pb_config {
    char *path;        /* the file loaded (as given), for messages */
    char *listen_host; /* numeric IPv4 or IPv6 address, no brackets */
    uint16_t listen_port;
    bool listen_ipv6;
    char *metrics_host; /* metrics_listen: /metrics and /healthz; NULL: off */
    uint16_t metrics_port;
    bool metrics_ipv6;
    char *data_dir; /* relative paths are relative to the process's cwd */
    pb_fsync_policy fsync;
    uint32_t fsync_interval_ms;
    uint32_t threads; /* max_subscriptions (older name: threads): concurrent subscriptions,
                         a thread each while it runs */
    uint32_t max_subscriptions_per_address; /* of one client address; 0: no such cap */
    uint64_t max_event_bytes;
    uint64_t max_frame_bytes;
    uint32_t max_connections;
    uint64_t subscriber_queue_bytes;       /* per-subscription live queue bound */
    uint64_t subscriber_queue_total_bytes; /* bound of all live queues together */
    uint64_t reply_queue_total_bytes;      /* unsent replies of all connections */
    uint64_t max_partial_frame_bytes;      /* receive buffers of unfinished frames, all */
    uint32_t write_deadline_ms;            /* drop a subscriber that accepts nothing this long */
    uint32_t idle_timeout_ms;              /* drop a client stalled in the middle of a frame */
    uint32_t quiet_timeout_ms;             /* close a connection with nothing in flight; 0 never */
    uint32_t handshake_timeout_ms;         /* a connection's Hello must arrive within this */
    uint32_t max_handshaking;              /* connections before their Hello; at the cap the
                                              oldest is closed for a new one */
    enum log_level log_level;              /* logging.h */
    uint32_t route_cache_entries;          /* router's topic -> partition cache bound */
    uint32_t max_batch_events;             /* events per Publish; more is refused */
    uint32_t max_partitions;         /* partitions the daemon creates; 0 = sized to the fd limit */
    uint32_t partition_idle_ms;      /* an idle partition closes its files, ends its writer */
    uint32_t max_topics_in_memory;   /* topic table entries in memory, all partitions */
    int64_t retain_age_s;            /* default of every [partition]'s retain_age; 0 = none */
    uint64_t retain_bytes;           /* default of every [partition]'s retain_bytes; 0 = none */
    int32_t compress;                /* default of every [partition]'s compress: 1 = zstd */
    int32_t compress_level;          /* default of every [partition]'s compress_level (3) */
    uint64_t min_free_bytes;         /* refuse publishes below this much free space; 0 = none,
                                        UINT64_MAX = auto (1 GiB or 5%, whichever smaller) */
    uint64_t page_cache_bytes;       /* per partition, the newest durable bytes left in the
                                        page cache; older are dropped. 0 = all kept */
    uint64_t direct_write_bytes;     /* with fsync = always, an append of at least this many
                                        bytes bypasses the page cache (O_DIRECT); 0 = never */
    bool recycle_segments;           /* retention keeps removed segments as zeroed spares
                                        for rotation (server/recycle.h) instead of freeing */
    uint32_t dedup_window_ms;        /* event ids remembered this long; 0 = no dedup */
    uint32_t dedup_max_entries;      /* ... and at most this many per partition
                                      * (1..CONFIG_DEDUP_MAX_ENTRIES) */
    uint32_t max_subscribe_patterns; /* caps on one Subscribe (server/subcaps.h) */
    uint32_t max_pattern_bytes;
    uint32_t max_subscribe_tags;
    uint32_t max_subscribe_offsets;
    pb_rule *rules;            /* in file order; first match wins */
    size_t n_rules;            /* >= 1 after a successful load */
    pb_mirror_config *mirrors; /* [mirror NAME] sections, in file order */
    size_t n_mirrors;
    pb_auth_mode auth;              /* [server] auth */
    bool allow_anonymous_remote;    /* auth = none on a non-loopback listen address */
    uint32_t auth_failure_delay_ms; /* a refused Hello is answered after this (doubling
                                       with each recent failure from the address) */
    uint32_t data_mode;             /* permissions of data files (dirs: + x where r) */
    char *tls_cert;                 /* PEM certificate chain: TLS on the listener; NULL: none */
    char *tls_key;                  /* its PEM private key */
    char *tls_client_ca;            /* PEM CA(s): clients must present a certificate they signed */
    char *follow; /* HOST:PORT of the primary: run as its hot standby (follower.h); NULL: not */
    char *follow_user;          /* the standby's Hello.user at the primary; NULL: none */
    char *follow_password;      /* its password, or: */
    char *follow_password_file; /* a file whose first line is the password */
    bool follow_tls;            /* connect to the primary over TLS */
    char *follow_ca;            /* PEM CA(s) the primary's certificate must chain to; NULL: system */
    char *follow_tls_cert;      /* the standby's client certificate (mutual TLS), PEM */
    char *follow_tls_key;       /* its key */
    uint32_t min_standby_acks;   /* 1: a publish is acked once the standby has it (standby.h) */
    uint32_t standby_timeout_ms; /* ... waiting at most this long, then: */
    bool standby_timeout_local;  /* ack on the local copy (true) or refuse, UNAVAILABLE */
    pb_user_config *users;          /* [user NAME] sections, in file order */
    size_t n_users;
} pb_config;

/* Reads and validates `path` into *cfg (which the caller provides; its old
 * contents are ignored). Returns 0, or a negative code with a message in
 * err ("path:line: reason"; errlen may be 0). On failure *cfg holds nothing
 * to free. On success the caller owns *cfg and releases it with
 * config_free(). Keeps no global state, so it is thread-safe, but the
 * daemon calls it once, on the main thread. */
int config_load(const char *path, pb_config *cfg, char *err, size_t errlen);

/* Like config_load, with the file's text in memory; `name` is used in
 * messages in place of the path. */
int config_load_string(const char *name, const char *text, pb_config *cfg, char *err,
                       size_t errlen);

/* Frees everything config_load allocated and zeroes *cfg. NULL-safe; safe
 * to call twice. */
void config_free(pb_config *cfg);

/* Every setting's default (config_values.c): *cfg zeroed first; the
 * strings (listen_host, data_dir, path) are left NULL for the loader. */
void config_set_defaults(pb_config *cfg);

/* Value parsers (config_values.c). Each returns 0, PB_EINVAL when the text
 * is not of the expected form, or PB_ETOOBIG when it overflows. */

/* Decimal digits only ("7420"). */
int config_parse_uint(const char *s, uint64_t *v);

/* "512", "64K", "16M", "1G" (powers of 1024; k/m/g accepted too). */
int config_parse_size(const char *s, uint64_t *bytes);

/* "none" (0) or a whole number followed by s, m, h or d ("30m", "1d"). */
int config_parse_duration(const char *s, int64_t *seconds);

/* Values with a parser of their own: each parses s for setting `key` into
 * *dst (the type named), returning 0, or PB_EINVAL with the whole message
 * ("key: ...") in why. */
typedef int (*config_value_fn)(const char *key, const char *s, void *dst, char *why, size_t n);
/* compress (int32_t): "zstd" (1) or "none" (0). */
int config_value_compress(const char *key, const char *s, void *dst, char *why, size_t n);
/* compress_level (int32_t): a zstd level, 1..19. */
int config_value_compress_level(const char *key, const char *s, void *dst, char *why, size_t n);
/* retain_age (int64_t seconds): "none" (0) or a duration up to 3650d. */
int config_value_retain_age(const char *key, const char *s, void *dst, char *why, size_t n);
/* retain_bytes (uint64_t): "none" (0) or a size of at least 64K (a guard
 * against a forgotten unit: "retain_bytes = 10" meaning 10G). */
int config_value_retain_bytes(const char *key, const char *s, void *dst, char *why, size_t n);
/* min_free_bytes (uint64_t): "auto" (UINT64_MAX: 1 GiB or 5% of the file
 * system, whichever is smaller), "none" or "0" (no check), or a size. */
int config_value_min_free(const char *key, const char *s, void *dst, char *why, size_t n);
/* standby_timeout = refuse | local (dst: a bool, true for local). */
int config_value_standby_timeout(const char *key, const char *s, void *dst, char *why, size_t n);

/* data_mode: octal digits, a mode within 0644 that keeps the owner's rw
 * ("0600", "0640", "0644"). */
int config_parse_mode(const char *s, uint32_t *mode);

/* "+HH:MM", "-HH:MM" (HH 00..23, MM 00..59) or "Z" (case-insensitive). */
int config_parse_utc_offset(const char *s, int32_t *seconds);

/* [mirror NAME] sections (config_mirror.c), called by config.c's parser.
 * Each returns 0, or a negative code with the reason in why (config.c adds
 * "file:line: "). begin: a new section, defaults set (*m is zeroed first);
 * key: one key = value of it; end: the section is complete (required keys);
 * check: all mirrors together (names and streams unique); free: one
 * section's memory. */
int config_mirror_begin(pb_mirror_config *m, const char *name, int line, char *why, size_t n);
int config_mirror_key(pb_mirror_config *m, const char *key, const char *value, char *why, size_t n);
int config_mirror_end(const pb_mirror_config *m, char *why, size_t n);
int config_mirror_check(const pb_mirror_config *ms, size_t count, int *line, char *why, size_t n);
void config_mirror_free(pb_mirror_config *m);

/* [user NAME] sections (config_users.c), like the mirror's: begin, each
 * key (publish, subscribe, deny_publish, deny_subscribe may repeat: their
 * patterns add up), end (password_hash required), check (names unique),
 * free. */
int config_user_begin(pb_user_config *u, const char *name, int line, char *why, size_t n);
int config_user_key(pb_user_config *u, const char *key, const char *value, char *why, size_t n);
int config_user_end(const pb_user_config *u, char *why, size_t n);
int config_users_check(const pb_user_config *us, size_t count, int *line, char *why, size_t n);
void config_user_free(pb_user_config *u);

/* Whether the configuration may run as it is, once the command line's
 * overrides are applied: auth = none on an address other than loopback
 * needs allow_anonymous_remote = yes; auth = required needs a [user];
 * tls_cert and tls_key go together, tls_client_ca needs them; likewise
 * follow_tls_cert and follow_tls_key, and follow_ca / follow_tls_cert need
 * follow_tls; follow_password and follow_password_file exclude each
 * other. 0, or
 * PB_EINVAL with the reason in why. */
int config_check_exposure(const pb_config *cfg, char *why, size_t n);

/* Subject prefix rules (a NATS subject's leading tokens, ending with '.'):
 * true if valid; else false with the reason in why. */
bool config_mirror_prefix_valid(const char *prefix, char *why, size_t n);

/* The words of the enumerations, in enum order, NULL-terminated. */
extern const char *const config_fsync_names[];
extern const char *const config_auth_names[];

/* Names for logging; static strings. */
const char *config_fsync_name(pb_fsync_policy p);

#endif
