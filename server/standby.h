/*
 * standby - the primary's view of its hot standby's durable positions, for
 * the synchronous mode (`min_standby_acks = 1`): a publish is acknowledged
 * once the standby's ReplicaAck covers every event of it (FORMAT.md 4.9),
 * or, after `standby_timeout_ms`, refused (UNAVAILABLE; policy refuse) or
 * acknowledged on the local copy alone (policy local: logged once per
 * outage, counted).
 *
 * Threads: standby_ack runs on the replication subscription's thread; the
 * rest on the loop thread. One mutex guards the positions; the loop is woken
 * through the notify callback it registered.
 */
#ifndef PB_STANDBY_H
#define PB_STANDBY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct standby standby;

enum standby_policy { STANDBY_REFUSE, STANDBY_LOCAL };

/* NULL *out when min_acks is 0 (asynchronous: nothing waits). */
int standby_create(standby **out, uint32_t min_acks, uint32_t timeout_ms, int policy);
void standby_destroy(standby *s);

/* Called (any thread) after each ReplicaAck; NULL to unregister. */
void standby_set_notify(standby *s, void (*notify)(void *ctx), void *ctx);

/* Replication thread: partition name's durable next offset on the standby. */
void standby_ack(standby *s, const char *name, size_t len, uint64_t next);

/* Replication thread, when its subscription ends: forgets every position
 * (a standby that connects next starts from what it acknowledges). One
 * standby at a time is what the synchronous mode counts on. */
void standby_reset(standby *s);

/* Loop thread: is offset `last` of partition name durable on the standby? */
bool standby_covers(standby *s, const char *name, uint64_t last);

uint32_t standby_timeout_ms(const standby *s);
int standby_policy(const standby *s);

/* Loop thread: a publish acknowledged on the local copy alone after the
 * timeout (policy local): counted, logged once until the standby catches
 * up again (standby_covers succeeds). */
void standby_note_local(standby *s, const char *partition);
uint64_t standby_local_acks(const standby *s);

#endif
