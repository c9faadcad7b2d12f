/*
 * acl - the configuration's accounts compiled for the daemon (see acl.h).
 *
 * Threads: the loop thread (which is the main thread in protobusd).
 */
#include "acl.h"

#include "pb_errors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct acl {
    acl_user *users;
    size_t n;
    pb_config cfg_users; /* the copied [user] sections the users point into */
    unsigned refs;
};

static char **copy_list(char *const *list, size_t n)
{
    char **out = calloc(n ? n : 1, sizeof *out);
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (!(out[i] = strdup(list[i]))) {
            while (i > 0)
                free(out[--i]);
            free(out);
            return NULL;
        }
    }
    return out;
}

/* A deep copy of one [user] section; 0 or PB_ENOMEM (*to then freeable). */
static int copy_user(pb_user_config *to, const pb_user_config *from)
{
    memset(to, 0, sizeof *to);
    to->line = from->line;
    to->name = strdup(from->name);
    to->password_hash = strdup(from->password_hash);
#define COPY(field)                                                                                \
    if ((to->field = copy_list(from->field, from->n_##field)) != NULL)                             \
        to->n_##field = from->n_##field;
    COPY(publish)
    COPY(subscribe)
    COPY(deny_publish)
    COPY(deny_subscribe)
#undef COPY
    bool ok = to->name && to->password_hash && to->publish && to->subscribe && to->deny_publish &&
              to->deny_subscribe;
    return ok ? 0 : PB_ENOMEM;
}

static void free_users(acl *a)
{
    for (size_t i = 0; i < a->n; i++)
        patterns_free(a->users[i].publish);
    free(a->users);
    config_free(&a->cfg_users);
}

/* The user's publish set: publish patterns, restricted by deny_publish. */
static int compile_user(acl_user *u, const pb_user_config *c, char *err, size_t errlen)
{
    char why[400];
    int rc = patterns_compile((const char *const *)c->publish, c->n_publish, &u->publish, why,
                              sizeof why);
    if (rc == 0 && c->n_deny_publish > 0) {
        static const char *const all[] = {".*"};
        rc = patterns_restrict(u->publish, all, 1, (const char *const *)c->deny_publish,
                               c->n_deny_publish, why, sizeof why);
    }
    if (rc < 0 && errlen)
        snprintf(err, errlen, "[user %s] (line %d): %s", c->name, c->line, why);
    return rc;
}

int acl_create(const pb_config *cfg, acl **out, char *err, size_t errlen)
{
    *out = NULL;
    acl *a = calloc(1, sizeof *a);
    size_t n = cfg->n_users;
    if (!a || !(a->users = calloc(n ? n : 1, sizeof *a->users)) ||
        !(a->cfg_users.users = calloc(n ? n : 1, sizeof *a->cfg_users.users))) {
        if (a)
            free(a->users);
        free(a);
        if (errlen)
            snprintf(err, errlen, "out of memory for %zu users", n);
        return PB_ENOMEM;
    }
    a->refs = 1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        pb_user_config *c = &a->cfg_users.users[i];
        a->cfg_users.n_users = i + 1;
        if ((rc = copy_user(c, &cfg->users[i])) < 0) {
            if (errlen)
                snprintf(err, errlen, "out of memory copying [user %s]", cfg->users[i].name);
            break;
        }
        acl_user *u = &a->users[i];
        a->n = i + 1;
        u->name = c->name;
        u->password_hash = c->password_hash;
        u->subscribe = (const char *const *)c->subscribe;
        u->n_subscribe = c->n_subscribe;
        u->deny_subscribe = (const char *const *)c->deny_subscribe;
        u->n_deny_subscribe = c->n_deny_subscribe;
        u->owner = a;
        rc = compile_user(u, c, err, errlen);
    }
    if (rc < 0) {
        free_users(a);
        free(a);
        return rc;
    }
    *out = a;
    return 0;
}

acl_user *acl_find(acl *a, const char *name, size_t len)
{
    for (size_t i = 0; a && i < a->n; i++)
        if (strlen(a->users[i].name) == len && memcmp(a->users[i].name, name, len) == 0)
            return &a->users[i];
    return NULL;
}

size_t acl_count(const acl *a)
{
    return a ? a->n : 0;
}

acl *acl_ref(acl *a)
{
    if (a)
        a->refs++;
    return a;
}

void acl_unref(acl *a)
{
    if (!a || --a->refs > 0)
        return;
    free_users(a);
    free(a);
}

bool acl_may_publish(acl_user *u, const char *topic, size_t len)
{
    return patterns_match(u->publish, topic, len);
}

bool acl_may_subscribe(const acl_user *u)
{
    return u->n_subscribe > 0;
}
