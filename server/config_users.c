/*
 * config_users - the [user NAME] sections of the configuration and the
 * [server] auth cross-checks: an account's password hash (argon2id, as
 * `protobus passwd` prints it) and its rights, whole-topic PCRE2 patterns:
 *
 *   [user alice]
 *   password_hash = $argon2id$v=19$m=19456,t=2,p=1$...
 *   publish = orders\..* audit\.alice
 *   subscribe = orders\..*
 *   deny_subscribe = orders\.secret\..*
 *
 * Patterns are separated by blanks (write a blank inside one as \x20); a
 * key may repeat and its patterns add up (lines are at most
 * CONFIG_MAX_LINE characters). server/acl.h says what the rights mean.
 * config.c's parser calls these for the header, each key and the end;
 * messages here are the reason only, the parser adds "file:line: ".
 *
 * Threads: the main thread (start-up, and a reload on SIGHUP).
 */
#include "config.h"
#include "config_internal.h"

#include "grow.h"
#include "patterns.h"
#include "pb_errors.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Patterns per list of one user, all lines together. */
#define MAX_USER_PATTERNS 256

const char *const config_auth_names[] = {"none", "required", NULL};

static bool user_name_valid(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > PB_USER_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("._-@", s[i]))
            return false;
    return true;
}

int config_user_begin(pb_user_config *u, const char *name, int line, char *why, size_t n)
{
    memset(u, 0, sizeof *u);
    if (!user_name_valid(name))
        return config_why(why, n,
                       "[user %s]: not a valid user name (1..%d characters of A-Z a-z 0-9 . _ - @)",
                       name, PB_USER_NAME_MAX);
    u->name = strdup(name);
    if (!u->name)
        return PB_ENOMEM;
    u->line = line;
    return 0;
}

/* Appends the blank-separated patterns of value to *list, each checked. */
static int add_patterns(char ***list, size_t *count, const char *key, const char *value, char *why,
                        size_t n)
{
    const char *p = value;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        size_t len = strcspn(p, " \t");
        if (*count >= MAX_USER_PATTERNS)
            return config_why(why, n, "%s: more than %d patterns", key, MAX_USER_PATTERNS);
        pcre2_code *code;
        char reason[300];
        int rc = pattern_compile_whole(p, len, &code, reason, sizeof reason);
        if (rc == PB_ENOMEM)
            return rc;
        if (rc < 0)
            return config_why(why, n, "%s: pattern \"%.*s\": %s", key, (int)len, p, reason);
        pcre2_code_free(code);
        char *copy = strndup(p, len);
        if (!copy || grow_resize(list, *count + 1, sizeof **list) < 0) {
            free(copy);
            return PB_ENOMEM;
        }
        (*list)[(*count)++] = copy;
        p += len;
    }
    if (!*value || strspn(value, " \t") == strlen(value))
        return config_why(why, n, "%s: no pattern (leave the key out to allow nothing)", key);
    return 0;
}

int config_user_key(pb_user_config *u, const char *key, const char *value, char *why, size_t n)
{
    if (strcmp(key, "password_hash") == 0) {
        if (u->password_hash)
            return config_why(why, n, "password_hash: set twice in [user %s]", u->name);
        size_t len = strlen(value);
        if (strncmp(value, "$argon2id$", 10) != 0 || len > PB_USER_HASH_MAX)
            return config_why(why, n,
                           "password_hash: not an argon2id hash (expected \"$argon2id$v=19$...\", "
                           "at most %d characters, as `protobus passwd` prints it)",
                           PB_USER_HASH_MAX);
        u->password_hash = strdup(value);
        return u->password_hash ? 0 : PB_ENOMEM;
    }
    if (strcmp(key, "publish") == 0)
        return add_patterns(&u->publish, &u->n_publish, key, value, why, n);
    if (strcmp(key, "subscribe") == 0)
        return add_patterns(&u->subscribe, &u->n_subscribe, key, value, why, n);
    if (strcmp(key, "deny_publish") == 0)
        return add_patterns(&u->deny_publish, &u->n_deny_publish, key, value, why, n);
    if (strcmp(key, "deny_subscribe") == 0)
        return add_patterns(&u->deny_subscribe, &u->n_deny_subscribe, key, value, why, n);
    if (strcmp(key, "password") == 0)
        return config_why(why, n,
                       "password: a plain password is never accepted in the configuration; put "
                       "password_hash = (the output of `protobus passwd`)");
    return config_why(why, n,
                   "unknown key \"%s\" in [user %s] (expected password_hash, publish, subscribe, "
                   "deny_publish, deny_subscribe)",
                   key, u->name);
}

int config_user_end(const pb_user_config *u, char *why, size_t n)
{
    if (!u->password_hash)
        return config_why(why, n, "[user %s] has no password_hash (make one with `protobus passwd`)",
                       u->name);
    return 0;
}

int config_users_check(const pb_user_config *us, size_t count, int *line, char *why, size_t n)
{
    for (size_t i = 0; i < count; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(us[i].name, us[j].name) == 0) {
                *line = us[i].line;
                return config_why(why, n, "[user %s] is defined twice (first at line %d)", us[i].name,
                               us[j].line);
            }
    return 0;
}

static void free_list(char **list, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free(list[i]);
    free(list);
}

void config_user_free(pb_user_config *u)
{
    free(u->name);
    free(u->password_hash);
    free_list(u->publish, u->n_publish);
    free_list(u->subscribe, u->n_subscribe);
    free_list(u->deny_publish, u->n_deny_publish);
    free_list(u->deny_subscribe, u->n_deny_subscribe);
    memset(u, 0, sizeof *u);
}

/* 127.0.0.0/8 or ::1 (the listen host is numeric, config.c checked it). */
static bool is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return false;
}

int config_check_exposure(const pb_config *cfg, char *why, size_t n)
{
    if (!cfg->tls_cert != !cfg->tls_key)
        return config_why(why, n, "%s is set without %s: TLS needs both (PEM files)",
                       cfg->tls_cert ? "tls_cert" : "tls_key",
                       cfg->tls_cert ? "tls_key" : "tls_cert");
    if (cfg->tls_client_ca && !cfg->tls_cert)
        return config_why(why, n, "tls_client_ca needs tls_cert and tls_key (TLS on the listener)");
    if (!cfg->follow_tls_cert != !cfg->follow_tls_key)
        return config_why(why, n, "%s is set without %s: a client certificate needs both",
                          cfg->follow_tls_cert ? "follow_tls_cert" : "follow_tls_key",
                          cfg->follow_tls_cert ? "follow_tls_key" : "follow_tls_cert");
    if ((cfg->follow_ca || cfg->follow_tls_cert) && !cfg->follow_tls)
        return config_why(why, n, "%s is set but follow_tls is not: set follow_tls = yes",
                          cfg->follow_ca ? "follow_ca" : "follow_tls_cert");
    if (cfg->follow_password && cfg->follow_password_file)
        return config_why(why, n,
                          "follow_password and follow_password_file are both set: keep one");
    if (cfg->auth == PB_AUTH_REQUIRED && cfg->n_users == 0)
        return config_why(why, n,
                       "auth = required but there is no [user NAME] section: nobody could "
                       "connect (add one with password_hash = the output of `protobus passwd`)");
    if (cfg->auth == PB_AUTH_NONE && !cfg->allow_anonymous_remote && !is_loopback(cfg->listen_host))
        return config_why(why, n,
                       "refusing to listen on %s with auth = none: anyone who can reach it could "
                       "publish to and read every topic. Set auth = required with [user NAME] "
                       "sections, listen on 127.0.0.1, or set allow_anonymous_remote = yes to "
                       "accept that",
                       cfg->listen_host);
    return 0;
}
