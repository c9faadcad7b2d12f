/*
 * partsubmit - for unit tests that play the loop thread against a real
 * partition writer: one batch of prepared events submitted to a partition
 * and waited for, as ingest and net would do it.
 */
#ifndef PB_TEST_PARTSUBMIT_H
#define PB_TEST_PARTSUBMIT_H

#include "broker.h"
#include "partition.h"

#include <stdint.h>

#define PARTSUBMIT_MAX 16

/* Submits ev[0..n) (n <= PARTSUBMIT_MAX; each event's data, len, topic and
 * topic_len set by the caller; the writer sets offset and time_ns) as one
 * batch of one part to p and waits up to 10 s for its done(). Returns the
 * part's status (0 when stored and acked, else the writer's negative code),
 * or PB_ETIMEDOUT if done() did not come. One caller thread at a time. */
int partsubmit(partition *p, pub_event *ev, uint32_t n);

#endif
