/*
 * fdbudget - the daemon's open-files budget at start-up (see fdbudget.h).
 */
#include "fdbudget.h"

#include "logging.h"
#include "mirror.h"
#include "partition.h"
#include "subrun.h"

#include <stdio.h>
#include <sys/resource.h>

/*
 * Descriptors. The daemon's open-files limit is split, and max_partitions'
 * default is what is left for partitions:
 *
 *   FDS_RESERVED                      the loop (epoll, signals, wake-ups),
 *                                     the listener, standard streams, and
 *                                     short-lived files (recovery, topic
 *                                     snapshots, the port file)
 * + max_connections                   one socket each
 * + max_subscriptions                 a subscription's socket (handed over
 *   * FDS_PER_SUBSCRIPTION
 *                                     by the loop), its eventfd, and the
 *                                     segment files it replays from, at most
 *                                     SUBRUN_REPLAY_READERS at once
 * + mirrors * MIRROR_FDS              a [mirror]'s segment readers (at most
 *                                     MIRROR_READERS at once), its NATS
 *                                     socket, its cursor file while saved
 * + max_partitions * PARTITION_FDS    an active partition's .log, .idx and
 *                                     directory (an idle one holds none)
 *
 * The limit is the hard one (`ulimit -Hn`, LimitNOFILE=), which the daemon
 * raises its soft limit to as far as this sum needs. With the defaults
 * (1,024 connections, 1,024 subscriptions) and a hard limit of 1,024:
 * (1024 - 64 - 1024 - 1024*10) / 3 < 16, so max_partitions is 16 and a
 * warning says connections past the limit will fail; with 65,536:
 * (65536 - 11328) / 3 = 18,069, capped at MAX_PARTITIONS_DEFAULT.
 */
#define FDS_RESERVED         64
#define FDS_PER_SUBSCRIPTION (2 + SUBRUN_REPLAY_READERS)
/* Bounds of max_partitions' default. Above the cap, set it explicitly:
 * every partition costs memory (its topic table, its fan-out state) even
 * when idle, and a thread while written to. */
#define MIN_PARTITIONS_DEFAULT 16
#define MAX_PARTITIONS_DEFAULT 4096

/* The open-files limit the daemon can raise its soft limit to. */
static rlim_t nofile_ceiling(const struct rlimit *rl)
{
    if (rl->rlim_max != RLIM_INFINITY)
        return rl->rlim_max;
    rlim_t nr_open = 1048576; /* Linux's default fs.nr_open */
    FILE *f = fopen("/proc/sys/fs/nr_open", "r");
    if (f) {
        unsigned long long v;
        if (fscanf(f, "%llu", &v) == 1)
            nr_open = (rlim_t)v;
        fclose(f);
    }
    return nr_open;
}

/* Sizes max_partitions (when not set) from the descriptors the daemon can
 * have, then raises the soft open-files limit towards what the
 * configuration can need, so that connections are refused by
 * max_connections and partitions by max_partitions, with clear errors,
 * rather than by EMFILE. */
void fdbudget_size(pb_config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        if (!cfg->max_partitions)
            cfg->max_partitions = MIN_PARTITIONS_DEFAULT;
        return;
    }
    rlim_t ceiling = nofile_ceiling(&rl);
    rlim_t fixed = (rlim_t)FDS_RESERVED + cfg->max_connections +
                   (rlim_t)cfg->threads * FDS_PER_SUBSCRIPTION +
                   (rlim_t)cfg->n_mirrors * MIRROR_FDS;
    if (!cfg->max_partitions) {
        rlim_t avail = ceiling > fixed ? (ceiling - fixed) / PARTITION_FDS : 0;
        if (avail < MIN_PARTITIONS_DEFAULT)
            avail = MIN_PARTITIONS_DEFAULT;
        if (avail > MAX_PARTITIONS_DEFAULT)
            avail = MAX_PARTITIONS_DEFAULT;
        cfg->max_partitions = (uint32_t)avail;
        logging_printf(LOG_INFO,
                       "max_partitions = %u (open files limit %llu: %d reserved, %u connections, "
                       "%u subscriptions x %d, %zu mirrors x %d, %d per partition)",
                       cfg->max_partitions, (unsigned long long)ceiling, FDS_RESERVED,
                       cfg->max_connections, cfg->threads, FDS_PER_SUBSCRIPTION, cfg->n_mirrors,
                       MIRROR_FDS, PARTITION_FDS);
    }
    rlim_t need = fixed + (rlim_t)cfg->max_partitions * PARTITION_FDS;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        rlim_t want = need < ceiling ? need : ceiling;
        struct rlimit nrl = {.rlim_cur = want, .rlim_max = rl.rlim_max};
        if (want > rl.rlim_cur && setrlimit(RLIMIT_NOFILE, &nrl) == 0)
            rl.rlim_cur = want;
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
        logging_printf(LOG_WARN,
                       "the open files limit (RLIMIT_NOFILE) is %llu, below the %llu that "
                       "max_connections = %u, max_subscriptions = %u and max_partitions = %u can "
                       "need: "
                       "connections or partitions past it will fail (raise the hard limit: "
                       "ulimit -Hn, or LimitNOFILE= in systemd)",
                       (unsigned long long)rl.rlim_cur, (unsigned long long)need,
                       cfg->max_connections, cfg->threads, cfg->max_partitions);
}
