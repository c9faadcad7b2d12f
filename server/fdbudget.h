/*
 * fdbudget - how the daemon's open-files limit is shared between
 * connections, subscriptions, mirrors and partitions, and the default of
 * max_partitions that follows (the comment in fdbudget.c has the sum).
 *
 * Threads: the main thread, at start-up, before anything is opened.
 */
#ifndef PB_FDBUDGET_H
#define PB_FDBUDGET_H

#include "config.h"

/* Sizes cfg->max_partitions (when not set) from the descriptors the daemon
 * can have, then raises the soft open-files limit towards what the
 * configuration can need, so that connections are refused by
 * max_connections and partitions by max_partitions, with clear errors,
 * rather than by EMFILE. Logs the sizing (INFO) and a shortfall (WARN). */
void fdbudget_size(pb_config *cfg);

#endif
