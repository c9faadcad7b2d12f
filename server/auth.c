/*
 * auth - credential checks off the loop, refusals after a delay (auth.h).
 *
 * A request's life: auth_start (loop) queues it; when one of the
 * AUTH_MAX_VERIFYING slots is free it goes to the pool (verify_work), its
 * result comes back to the loop (verify_after); a success calls done at
 * once, a refusal arms the request's timer for the moment the delay since
 * the Hello has passed and calls done then. A cancelled request is only
 * freed: at once when queued, after its verification when running, from
 * its timer's close callback when waiting.
 *
 * Threads: the loop thread; verify_work on a pool thread.
 */
#include "auth.h"

#include "hash.h"
#include "logging.h"
#include "pb_errors.h"

#include <sodium.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define PASSWORD_MAX 1024

typedef struct addr_entry {
    uint8_t addr[16]; /* IPv4 mapped into the first 4 bytes, family says which */
    int family;       /* 0: unused */
    unsigned failures;
    uint64_t last_ms;
} addr_entry;

struct auth_req {
    auth *a;
    uv_work_t work;
    uv_timer_t timer;
    auth_req *next; /* the FIFO of requests waiting for a verification slot */
    auth_done_fn done;
    void *ctx;
    acl *set;       /* a reference: the user found below belongs to it */
    acl_user *user; /* NULL: unknown user (verified against the dummy hash) */
    const char *hash;
    char name[PB_USER_NAME_MAX + 1];
    char password[PASSWORD_MAX + 1];
    size_t password_len;
    uint8_t addr[16];
    int family;
    uint64_t started_ms;
    bool verifying, timer_on, cancelled, ok;
};

struct auth {
    uv_loop_t *loop;
    uint32_t delay_ms;
    acl *set;
    char dummy_hash[crypto_pwhash_STRBYTES];
    auth_req *queue_head, *queue_tail;
    unsigned verifying;
    addr_entry addrs[AUTH_ADDRESSES];
};

static void addr_of(const struct sockaddr *sa, uint8_t out[16], int *family)
{
    memset(out, 0, 16);
    *family = sa ? sa->sa_family : 0;
    if (*family == AF_INET)
        memcpy(out, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    else if (*family == AF_INET6)
        memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    else
        *family = AF_UNSPEC;
}

/* The entry of an address, or the slot to (re)use for it (an unused one,
 * else the least recently failed). */
static addr_entry *addr_slot(auth *a, const uint8_t addr[16], int family, bool *found)
{
    addr_entry *oldest = &a->addrs[0];
    size_t start = hash_bytes(0, addr, 16) % AUTH_ADDRESSES;
    /* A bounded probe around the address's home slot keeps lookups cheap;
     * the oldest in that window is replaced. */
    for (size_t k = 0; k < 16; k++) {
        addr_entry *e = &a->addrs[(start + k) % AUTH_ADDRESSES];
        if (e->family == family && memcmp(e->addr, addr, 16) == 0) {
            *found = true;
            return e;
        }
        if (k == 0 || e->last_ms < oldest->last_ms)
            oldest = e;
    }
    *found = false;
    return oldest;
}

static unsigned recent_failures(auth *a, const uint8_t addr[16], int family, uint64_t now)
{
    bool found;
    addr_entry *e = addr_slot(a, addr, family, &found);
    if (!found || now - e->last_ms > AUTH_FAILURE_MEMORY_MS)
        return 0;
    return e->failures;
}

static void note_result(auth *a, auth_req *r, uint64_t now)
{
    bool found;
    addr_entry *e = addr_slot(a, r->addr, r->family, &found);
    if (r->ok) {
        if (found)
            e->family = 0, e->failures = 0;
        return;
    }
    if (!found || now - e->last_ms > AUTH_FAILURE_MEMORY_MS) {
        memcpy(e->addr, r->addr, 16);
        e->family = r->family;
        e->failures = 0;
    }
    if (e->failures < 1000000)
        e->failures++;
    e->last_ms = now;
}

int auth_create(auth **out, uv_loop_t *loop, uint32_t failure_delay_ms)
{
    *out = NULL;
    if (sodium_init() < 0)
        return PB_EINVAL;
    auth *a = calloc(1, sizeof *a);
    if (!a)
        return PB_ENOMEM;
    a->loop = loop;
    a->delay_ms = failure_delay_ms;
    /* What an unknown user is verified against: the same parameters as
     * `protobus passwd`, so a refusal costs the same work either way. */
    char pw[32];
    randombytes_buf(pw, sizeof pw);
    if (crypto_pwhash_str(a->dummy_hash, pw, sizeof pw, 2, 19u << 20) != 0) {
        free(a);
        return PB_ENOMEM;
    }
    *out = a;
    return 0;
}

void auth_set_acl(auth *a, acl *set)
{
    acl *old = a->set;
    a->set = acl_ref(set);
    acl_unref(old);
}

acl *auth_acl(auth *a)
{
    return a->set;
}

static void req_free(auth_req *r)
{
    sodium_memzero(r->password, sizeof r->password);
    acl_unref(r->set);
    free(r);
}

static void on_timer_closed(uv_handle_t *h)
{
    req_free(h->data);
}

/* Ends r: its timer handle (initialised for every request that left the
 * queue) is closed, and r freed from the close callback. */
static void req_finish(auth_req *r)
{
    uv_close((uv_handle_t *)&r->timer, on_timer_closed);
}

static void verify_work(uv_work_t *w)
{
    auth_req *r = w->data;
    /* Always one verification, for a known user or not: the same work. */
    int rc = crypto_pwhash_str_verify(r->hash, r->password, r->password_len);
    r->ok = rc == 0 && r->user != NULL;
    sodium_memzero(r->password, sizeof r->password);
}

static void pump(auth *a);

static void on_delay(uv_timer_t *t)
{
    auth_req *r = t->data;
    r->timer_on = false;
    if (!r->cancelled)
        r->done(r->ctx, NULL);
    req_finish(r);
}

static void verify_after(uv_work_t *w, int status)
{
    auth_req *r = w->data;
    auth *a = r->a;
    a->verifying--;
    r->verifying = false;
    uint64_t now = uv_now(a->loop);
    if (status < 0)
        r->ok = false;
    if (!r->cancelled) {
        unsigned before = recent_failures(a, r->addr, r->family, now);
        note_result(a, r, now);
        if (r->ok) {
            r->done(r->ctx, r->user);
            req_finish(r);
            pump(a);
            return;
        }
        unsigned shift = before < AUTH_MAX_DELAY_SHIFT ? before : AUTH_MAX_DELAY_SHIFT;
        uint64_t delay = (uint64_t)a->delay_ms << shift;
        uint64_t due = r->started_ms + delay;
        logging_printf(LOG_WARN,
                       "authentication failed for user \"%s\" (%s; %u recent failure(s) from "
                       "this address; answered after %llu ms)",
                       r->name, r->user ? "wrong password" : "no such user", before + 1,
                       (unsigned long long)delay);
        r->timer_on = true;
        uv_timer_start(&r->timer, on_delay, due > now ? due - now : 0, 0);
    } else {
        req_finish(r);
    }
    pump(a);
}

/* Starts queued requests while verification slots are free. */
static void pump(auth *a)
{
    while (a->queue_head && a->verifying < AUTH_MAX_VERIFYING) {
        auth_req *r = a->queue_head;
        a->queue_head = r->next;
        if (!a->queue_head)
            a->queue_tail = NULL;
        r->next = NULL;
        uv_timer_init(a->loop, &r->timer);
        r->timer.data = r;
        r->work.data = r;
        if (uv_queue_work(a->loop, &r->work, verify_work, verify_after) < 0) {
            r->ok = false; /* answered as a refusal, after the delay */
            a->verifying++;
            r->verifying = true;
            verify_after(&r->work, -1);
            continue;
        }
        a->verifying++;
        r->verifying = true;
    }
}

auth_req *auth_start(auth *a, const struct sockaddr *peer, const char *user, size_t user_len,
                     const char *password, size_t password_len, auth_done_fn done, void *ctx)
{
    auth_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->a = a;
    r->done = done;
    r->ctx = ctx;
    r->started_ms = uv_now(a->loop);
    addr_of(peer, r->addr, &r->family);
    r->set = acl_ref(a->set);
    r->user = user_len <= PB_USER_NAME_MAX ? acl_find(r->set, user, user_len) : NULL;
    r->hash = r->user ? r->user->password_hash : a->dummy_hash;
    /* The name goes to the log: printable characters only. */
    size_t n = user_len < PB_USER_NAME_MAX ? user_len : PB_USER_NAME_MAX;
    for (size_t i = 0; i < n; i++)
        r->name[i] = user[i] >= 0x20 && user[i] < 0x7f && user[i] != '"' ? user[i] : '?';
    if (password_len > PASSWORD_MAX) {
        r->user = NULL; /* refused, after the same work and delay */
        r->hash = a->dummy_hash;
        password_len = 0;
    }
    if (password_len) /* no credentials: a NULL password */
        memcpy(r->password, password, password_len);
    r->password_len = password_len;
    if (a->queue_tail)
        a->queue_tail->next = r;
    else
        a->queue_head = r;
    a->queue_tail = r;
    pump(a);
    return r;
}

void auth_cancel(auth_req *r)
{
    if (!r || r->cancelled)
        return;
    r->cancelled = true;
    auth *a = r->a;
    /* Still queued: unlink and free at once. */
    for (auth_req **pp = &a->queue_head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next) {
        if (*pp != r)
            continue;
        *pp = r->next;
        if (a->queue_tail == r)
            a->queue_tail = prev;
        req_free(r);
        return;
    }
    if (r->timer_on) {
        uv_timer_stop(&r->timer);
        r->timer_on = false;
        req_finish(r);
    }
    /* Verifying: verify_after frees it. Done already: not ours any more. */
}

unsigned auth_failures(auth *a, const struct sockaddr *peer)
{
    uint8_t addr[16];
    int family;
    addr_of(peer, addr, &family);
    return recent_failures(a, addr, family, uv_now(a->loop));
}

void auth_destroy(auth *a)
{
    if (!a)
        return;
    acl_unref(a->set);
    sodium_memzero(a->dummy_hash, sizeof a->dummy_hash);
    free(a);
}
