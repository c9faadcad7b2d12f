/*
 * standby - the primary's record of its hot standby's durable positions
 * (standby.h): a small table of partition name -> next offset, linear
 * (a daemon has at most max_partitions; the look-up is per publish batch).
 */
#include "standby.h"

#include "logging.h"
#include "partname.h"
#include "pb_errors.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef struct spos {
    char name[PB_PARTITION_NAME_MAX + 1];
    uint64_t next;
} spos;

struct standby {
    uint32_t min_acks, timeout_ms;
    int policy;
    pthread_mutex_t mu;
    spos *pos; /* mu */
    size_t npos, cap;
    void (*notify)(void *ctx); /* mu */
    void *notify_ctx;
    _Atomic uint64_t local_acks;
    bool local_logged; /* loop thread */
};

int standby_create(standby **out, uint32_t min_acks, uint32_t timeout_ms, int policy)
{
    *out = NULL;
    if (min_acks == 0)
        return 0;
    standby *s = calloc(1, sizeof *s);
    if (!s)
        return PB_ENOMEM;
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s);
        return PB_ENOMEM;
    }
    s->min_acks = min_acks;
    s->timeout_ms = timeout_ms;
    s->policy = policy;
    *out = s;
    return 0;
}

void standby_destroy(standby *s)
{
    if (!s)
        return;
    pthread_mutex_destroy(&s->mu);
    free(s->pos);
    free(s);
}

void standby_set_notify(standby *s, void (*notify)(void *ctx), void *ctx)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->notify = notify;
    s->notify_ctx = ctx;
    pthread_mutex_unlock(&s->mu);
}

static spos *find(standby *s, const char *name, size_t len)
{
    for (size_t i = 0; i < s->npos; i++)
        if (strncmp(s->pos[i].name, name, len) == 0 && s->pos[i].name[len] == '\0')
            return &s->pos[i];
    return NULL;
}

void standby_ack(standby *s, const char *name, size_t len, uint64_t next)
{
    if (!s || !partname_valid(name, len))
        return;
    pthread_mutex_lock(&s->mu);
    spos *p = find(s, name, len);
    if (!p && s->npos == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        spos *np = realloc(s->pos, cap * sizeof *np);
        if (np) {
            s->pos = np;
            s->cap = cap;
        }
    }
    if (!p && s->npos < s->cap) {
        p = &s->pos[s->npos++];
        memcpy(p->name, name, len);
        p->name[len] = '\0';
        p->next = 0;
    }
    if (p && next > p->next)
        p->next = next;
    if (s->notify)
        s->notify(s->notify_ctx);
    pthread_mutex_unlock(&s->mu);
}

void standby_reset(standby *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->npos = 0;
    pthread_mutex_unlock(&s->mu);
}

bool standby_covers(standby *s, const char *name, uint64_t last)
{
    pthread_mutex_lock(&s->mu);
    spos *p = find(s, name, strlen(name));
    bool ok = p && p->next > last;
    pthread_mutex_unlock(&s->mu);
    if (ok && s->local_logged) {
        s->local_logged = false;
        logging_printf(LOG_INFO,
                       "standby: confirming again (partition %s); %llu publish batches so far "
                       "were acknowledged on this copy alone",
                       name, (unsigned long long)atomic_load(&s->local_acks));
    }
    return ok;
}

uint32_t standby_timeout_ms(const standby *s)
{
    return s->timeout_ms;
}

int standby_policy(const standby *s)
{
    return s->policy;
}

void standby_note_local(standby *s, const char *partition)
{
    atomic_fetch_add(&s->local_acks, 1);
    if (s->local_logged)
        return;
    s->local_logged = true;
    logging_printf(LOG_WARN,
                   "standby: no ReplicaAck for partition %s within standby_timeout_ms = %u; "
                   "acknowledging publishes on this copy alone (standby_timeout = local) until "
                   "the standby catches up",
                   partition, s->timeout_ms);
}

uint64_t standby_local_acks(const standby *s)
{
    return atomic_load(&((standby *)s)->local_acks);
}
