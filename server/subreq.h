/*
 * subreq - the checks of one Subscribe request that grow with its size
 * (issue 10, F1): its caps (subcaps.h), partitions listed twice in
 * `offsets`, tag filters given twice. Each is O(n log n) at most (a sort,
 * then one pass), so a request at its caps costs the loop thread well under
 * a millisecond; the caps are checked first, before any per-entry work.
 *
 * Threads: the loop thread (sub_start); no shared state.
 */
#ifndef PB_SUBREQ_H
#define PB_SUBREQ_H

#include "event.h"
#include "protobus.pb-c.h"
#include "subcaps.h"

#include <stddef.h>

/* 0, or PB_ETOOBIG with err naming the cap and its setting
 * ("subscribe: 120000 tag filters, more than max_subscribe_tags = 64"); a
 * cap of 0 is no cap. */
int subreq_check_caps(const Protobus__Subscribe *q, const sub_caps *caps, char *err, size_t errlen);

/* The index of a partition listed twice in offsets[0..n) (the second
 * occurrence, as a quadratic scan would find it first in list order: the
 * smallest such index), or n if none. PB_ENOMEM as (size_t)-1. */
size_t subreq_dup_offset(Protobus__PartitionOffset *const *offsets, size_t n);

/* The tag filters of tags[0..n) into out (room for n), one per key, the
 * last value given for a key winning (map semantics); returns how many. In
 * the order of each key's first occurrence. PB_ENOMEM as (size_t)-1. */
size_t subreq_tags(Protobus__Subscribe__TagsEntry *const *tags, size_t n, event_tag_filter *out);

#endif
