/*
 * sched_attr - the kernel's struct sched_attr (sched_setattr(2),
 * sched_getattr(2)) in its first version (48 bytes), which glibc does not
 * declare and <linux/sched/types.h> declares together with a struct
 * sched_param that clashes with <sched.h>'s.
 *
 * Used by log_direct.c (the direct-write helper's time slice) and its
 * test.
 */
#ifndef PB_SCHED_ATTR_H
#define PB_SCHED_ATTR_H

#include <stdint.h>

#define PB_SCHED_ATTR_SIZE 48u
#define PB_SCHED_FLAG_KEEP_POLICY 0x08u

typedef struct pb_sched_attr {
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period; /* runtime: a fair task's slice (Linux 6.12+) */
} pb_sched_attr;

#endif
