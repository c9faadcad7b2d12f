/*
 * mirror_internal - what mirror.c (the thread, the ring, resync),
 * mirror_track.c (partitions, cursor file, lag) and mirror_order.c (the
 * repair of a gap) share about one mirror.
 * Not for other modules: they use mirror.h.
 *
 * Threads: a mirror's fields belong to its thread, except: the ring and
 * the fields marked "lock" (shared with libnats' ack thread, under lock);
 * parts/n_parts (appended by the thread under parts_lock, read by other
 * threads under it); each mpart's name (fixed) and lag (atomics); cfg,
 * re and loaded (fixed after creation).
 */
#ifndef PB_MIRROR_INTERNAL_H
#define PB_MIRROR_INTERNAL_H

#include "mirror.h"
#include "mirror_cursor.h"
#include "mirror_nats.h"
#include "patterns.h"
#include "reader.h"

#include <pthread.h>

#define NO_SLOT UINT32_MAX
/* How often the mirror looks for new partitions and their end offsets. */
#define MIRROR_PARTS_REFRESH_MS 250

/* Per partition: the receive time of the oldest unacknowledged event and
 * the offsets, for lag (read by any thread). */
typedef struct mirror_lag {
    _Atomic uint64_t shipped; /* = cursor */
    _Atomic uint64_t end;
    _Atomic int64_t oldest_ns; /* 0: nothing known to be waiting */
} mirror_lag;

typedef struct mpart {
    char name[PB_PARTITION_NAME_MAX + 1];
    partition *p;
    pb_reader *r;       /* opened on use; closed to keep within MIRROR_READERS */
    uint64_t used;      /* the mirror's read clock at its last read (which reader to close) */
    uint64_t next_read; /* next offset to read and send */
    uint64_t cursor;    /* every offset below is acknowledged (or cannot be mirrored) */
    bool fresh;         /* no cursor yet: the first record read is where it starts */
    uint64_t scan_next; /* (resync) the scan's run of consecutive offsets ends here */
    uint64_t scan_seq;  /* the stream sequence of the run's last message */
    bool scan_gap;      /* an offset past the run came first */
    bool scan_stray;    /* ... and the missing offset was lost inside NATS (mirror_gap_is_loss):
                           the messages after it are strays */
    uint64_t scan_gap_at;
    uint64_t scan_deleted; /* (resync) its strays deleted */
    uint64_t scan_order;   /* (resync) its strays stored before seq_last */
    /* The stream sequence of its newest offset acknowledged in order in
     * this run (0: none yet). A message of it at a lower sequence with an
     * offset not acknowledged is out of offset order (FORMAT.md E.4). */
    uint64_t seq_last;
    uint64_t off_last; /* the offset of the copy at seq_last */
    bool rewind;       /* (finish_drain) a publish of it failed */
    uint64_t rewind_to;
    int64_t rewind_time_ns;
    uint32_t inflight;   /* slots of it in the ring */
    uint32_t first_slot; /* its oldest and newest slots, NO_SLOT when none */
    uint32_t last_slot;
    bool read_error_logged;
    mirror_lag lag;
} mpart;

enum slot_state { SLOT_PENDING, SLOT_ACKED, SLOT_FAILED };

/* (resync) A message of the stream's tail out of its partition's offset
 * order: deleted before the partition is resent (FORMAT.md E.4). */
typedef struct mstray {
    mpart *p;
    uint64_t offset;
    uint64_t seq;
    bool order; /* stored before its partition's seq_last (not a gap's) */
} mstray;

/* One outstanding publish. */
typedef struct slot {
    const void *token; /* the NATS message, for matching its ack (never dereferenced) */
    uint32_t part;
    uint32_t next_in_part;
    uint64_t offset;
    uint64_t seq;    /* lock: its stream sequence, once acknowledged */
    bool dup;        /* lock: acknowledged as a duplicate of the message at seq */
    int64_t time_ns; /* the event's receive time */
    int64_t sent_ns; /* wall clock when published */
    uint8_t state;
} slot;

enum run_state { RUN_RESYNC, RUN_SENDING, RUN_DRAIN };

typedef struct mirror {
    const pb_mirror_config *cfg;
    store *store;
    const char *data_dir;
    pcre2_code *re;
    pcre2_match_data *md; /* the thread's */
    mirror_nats *nats;
    /* mirror_nats_id_at (a unit test puts a stand-in here). */
    int (*id_at)(mirror_nats *mn, uint64_t seq, char *id, size_t idlen, char *subject,
                 size_t subjlen, char *why, size_t whylen);
    pthread_t thread;
    bool started;
    bool broken; /* damaged cursor file: not started */
    mirror_cursors loaded;
    char cursor_path[4200];

    pthread_mutex_t lock;
    pthread_cond_t cond;
    slot *ring; /* lock: cap slots, count from head */
    uint32_t cap, head, count;
    uint32_t pending;   /* lock: slots still SLOT_PENDING */
    bool failed;        /* lock: a slot failed since the last drain */
    bool dup_gone;      /* lock: one failed as a duplicate of a deleted message */
    char fail_why[320]; /* lock: the first failure's reason */
    uint32_t fail_part;
    uint64_t fail_offset;
    bool stop; /* lock */

    pthread_mutex_t parts_lock;
    mpart **parts;
    size_t n_parts, parts_cap;
    bool refreshed; /* the first refresh happened */

    enum run_state run;
    bool probe;      /* after a resync: one message alone until it is acknowledged */
    bool probe_sent; /* ... and it has been sent */
    /* The stream sequence of the last message acknowledged in send order:
     * anything sent later was stored after it, if at all. In the cursor
     * file too (a restart scans from there). */
    uint64_t acked_seq;
    size_t rr;
    size_t nreaders;     /* parts with a reader open (at most MIRROR_READERS) */
    uint64_t read_clock; /* ticks on each read of a partition */
    int64_t resync_at_ms, backoff_ms;
    bool resync_failing;
    bool scan_needed; /* read the stream's tail before sending again */
    /* An acknowledgement named a message stored out of offset order, the
     * lowest such sequence: the next scans read from there (0: none). In
     * the cursor file too. */
    uint64_t order_from;
    /* ... and those messages, deleted at the next resync even if the scan
     * does not reach them (it reads at most SCAN_LIMIT). */
    mstray order_strays[16];
    size_t n_order_strays;
    mpart *scan_last; /* the partition of the previous scanned message */
    mstray *strays;   /* the scan's out-of-order messages (at most SCAN_LIMIT) */
    size_t n_strays, strays_cap;
    bool strays_lost; /* one did not fit (no memory): scan again */
    /* (finish_drain) the publishes of the failed window that were never
     * acknowledged, in send order (at most the ring's capacity): a gap the
     * scan finds is a publish lost inside NATS only if its first missing
     * offset is one of them; offsets skipped on purpose (events that
     * cannot be mirrored, damage, retention) were never sent. lost_valid:
     * the list is this run's (none after a restart: then every gap of
     * offsets the partition still holds is repaired by deletion). */
    mstray *lost;
    size_t n_lost;
    bool lost_valid;
    /* Deleted messages' ids stay in JetStream's duplicate window: nothing
     * is resent before this (monotonic ms). */
    int64_t hold_until_ms;
    bool dirty; /* cursors changed since the last save */
    int64_t saved_at_ms;
    bool save_failing;
    int64_t lag_logged_at_ms;
    mirror_counters counters;
} mirror;

/* The scan of the stream's tail reads at most this many messages. */
#define SCAN_LIMIT 200000
/* After deleting messages, the wait for the stream's duplicate window to
 * forget their ids has this margin on top: JetStream's purge timer fires
 * late under load, and each NATS server measures the window on its own
 * clock from the leader's timestamp. */
#define HOLD_MARGIN_MS 2000

int64_t mirror_mono_ms(void);
int64_t mirror_wall_ns(void);

/* mirror_order.c (FORMAT.md E.4 item 4). With m->lock held, which it
 * drops during its request: true if the message a "duplicate" slot names
 * is still in the stream, else the slot is failed (and m->dup_gone set
 * when the message is gone). */
bool mirror_dup_still_stored(mirror *m, slot *s);
/* With m->lock held, which it drops during a request: whether
 * acknowledged slot s comes after everything of its partition acknowledged
 * before it in the stream (then seq_last moves to it). If not, and the
 * stream still holds the copy at seq_last, the slot is failed, and
 * m->order_from and m->order_strays are set, so that the next resync
 * deletes the copies stored out of order. If the stream no longer holds
 * that copy (created again, or its own limits removed it), the sequences
 * are not comparable: s is taken as in order. */
bool mirror_ack_in_order(mirror *m, slot *s);
/* Whether a gap at p's offset is repaired as a loss: the offset was
 * published in the failed window and never acknowledged (finish_drain's
 * list), or, with no such list (after a restart), p still holds it. */
bool mirror_gap_is_loss(const mirror *m, const mpart *p, uint64_t offset);

/* The scan found p's offset at seq out of order (m->strays_lost if full);
 * order: stored before p's seq_last. */
void mirror_stray_add(mirror *m, mpart *p, uint64_t offset, uint64_t seq, bool order);
/* (resync) mirror_nats_scan's callback: one message of the tail, in stream
 * order. */
void mirror_scan_hit(void *ctx, const char *part_name, uint64_t offset, uint64_t seq);
/* What the scan found. The scan's consumer may have read a replica that is
 * not the leader, so each finding that moves a cursor is first checked
 * with the leader. 0; 1 when messages out of offset order were deleted
 * (resend after the hold); or -1 (why says what) to scan again later. */
int mirror_apply_scan(mirror *m, char *why, size_t whylen);
/* After the scan: the order strays the acknowledgements found, added to
 * the scan's strays unless it found them too. */
void mirror_add_order_strays(mirror *m);
/* Deletes the confirmed strays; sets m->hold_until_ms if it deleted any.
 * 0, or -1 with why (one the leader did not confirm, or a failed delete). */
int mirror_delete_strays(mirror *m, char *why, size_t whylen);

/* mirror_track.c */
int mirror_load_cursors(mirror *m);
void mirror_refresh_parts(mirror *m);
mpart *mirror_find_part(mirror *m, const char *name);
void mirror_part_seek(mirror *m, mpart *p);
/* Closes p's reader (if open); the next read reopens it at next_read. */
void mirror_part_close(mirror *m, mpart *p);
/* The next event of p to send: 0 with *rec, or nonzero when there is none
 * for now (the end, or a read error, logged). */
int mirror_part_next(mirror *m, mpart *p, pb_record *rec);
void mirror_save(mirror *m, bool force);
void mirror_log_lag(mirror *m, int64_t now_ms);
uint64_t mirror_needed(mirror *m, const char *part_name);

#endif
