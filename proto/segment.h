/*
 * segment - what the writer (server/log.c) and the reader (proto/reader.c)
 * share about segment files: their names, the index entry layout, and a
 * buffered record scanner with resynchronisation after damage.
 *
 * The scanner reads through a caller-supplied pread function, and the
 * partition reader through a segment_io table, so the daemon can route its
 * reads through its file layer (server/fileio.h, which tests replace with a
 * simulated disk) while everyone else uses plain POSIX. No threads, no
 * sockets: safe to use from any thread, one thread per segment_buf.
 */
#ifndef PB_SEGMENT_H
#define PB_SEGMENT_H

#include "protobus_reader.h"
#include "record.h"

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PB_INDEX_ENTRY_SIZE   24u
#define PB_SEGMENT_NAME_LEN   24u /* 20 digits + ".log" */
#define PB_SEGMENT_READ_CHUNK (1u << 20)

/* One sparse-index entry: the record with `offset` starts at byte `position`
 * of the .log and was received at time_ns. */
typedef struct segment_index_entry {
    uint64_t offset;
    uint64_t position;
    int64_t time_ns;
} segment_index_entry;

void segment_index_entry_encode(uint8_t out[PB_INDEX_ENTRY_SIZE], const segment_index_entry *e);
void segment_index_entry_decode(const uint8_t in[PB_INDEX_ENTRY_SIZE], segment_index_entry *e);

/* Writes "<dir>/<20-digit base><ext>" (ext is ".log" or ".idx") into out.
 * Returns 0 or PB_EINVAL if it does not fit in cap bytes. */
int segment_path(char *out, size_t cap, const char *dir, uint64_t base, const char *ext);

/* True if name is exactly 20 decimal digits followed by ext; *base gets the
 * number (names above UINT64_MAX are rejected). */
bool segment_parse_name(const char *name, const char *ext, uint64_t *base);

/* Reads up to len bytes at off; returns the count (0 at end of file) or a
 * negative errno. */
typedef ssize_t (*segment_pread_fn)(void *ctx, int fd, void *buf, size_t len, off_t off);

/*
 * Decompressing ahead (optional). A compressed segment's reader (zseg.h)
 * can hand the decompression of the block after the one it serves to
 * another thread, so that its caller's work on the current block (checks,
 * sending) and the next block's decompression overlap. proto/ starts no
 * thread: whoever opens the reader supplies the executor (the daemon's,
 * server/inflater.c); without one every block is decompressed inline.
 */
typedef struct segment_task {
    void (*fn)(struct segment_task *t); /* runs on the executor's thread */
    struct segment_task *next;          /* the executor's */
    int state;                          /* the executor's */
} segment_task;

typedef struct segment_ahead {
    /* Queues t (t->fn(t) will run on another thread) and returns true; or
     * false if the executor takes nothing now (the caller does the work). */
    bool (*start)(void *ctx, segment_task *t);
    /* For a started t: takes it back if it has not begun (false: fn will
     * never run), else waits until fn has returned (true). */
    bool (*finish)(void *ctx, segment_task *t);
    /* Optional (NULL: never). If busy (started) is running on the executor
     * and t (started) has not begun, takes t back and returns true: the
     * caller runs t->fn itself while busy finishes, rather than wait idle
     * for it. False otherwise: t stays in the executor's hands. */
    bool (*steal)(void *ctx, segment_task *busy, segment_task *t);
    void *ctx;
} segment_ahead;

/* A read window over one file: one reusable buffer filled by large preads,
 * so sequential scanning costs one syscall per PB_SEGMENT_READ_CHUNK bytes. */
struct zseg_view;
typedef struct segment_buf {
    segment_pread_fn pread;
    void *pread_ctx;
    int fd;
    uint8_t *data;
    size_t cap;
    uint64_t pos;     /* file position of data[0] */
    size_t len;       /* valid bytes in data */
    size_t readahead; /* bytes a refill tries to read (<= cap) */
    /* A compressed segment (zseg.h) is read through this view, which serves
     * the plain bytes; probed once per attached file, at its first read. */
    struct zseg_view *z;
    bool probed;
    const segment_ahead *ahead; /* NULL: compressed blocks are decompressed inline */
} segment_buf;

/* Allocates the buffer (PB_SEGMENT_READ_CHUNK bytes). 0 or PB_ENOMEM. */
int segment_buf_init(segment_buf *b, segment_pread_fn fn, void *ctx);

/* A segment_pread_fn over plain pread(2): retries EINTR, returns bytes read
 * or a negated errno; ctx unused. The one EINTR-safe pread loop: the
 * readers outside the writer's fileio (the partition reader, single-file
 * and original-layout readers, the CLI) call it, and so does fileio's
 * POSIX table. */
ssize_t segment_pread_posix(void *ctx, int fd, void *buf, size_t len, off_t off);

/* Reads len bytes at off through fn, continuing after short reads: the one
 * "read it all" loop (the record window, the daemon's topic snapshot and
 * index reads). Returns the bytes read, fewer than len only at the end of
 * the file, or a negated errno. */
ssize_t segment_pread_full(segment_pread_fn fn, void *ctx, int fd, void *buf, size_t len,
                           off_t off);

/* The file operations a partition reader uses. Each returns >= 0, or a
 * negated errno (-ENOENT for a missing file or directory). */
typedef struct segment_io {
    int (*open)(void *ctx, const char *path); /* read-only; returns the fd */
    segment_pread_fn pread;
    int (*size)(void *ctx, int fd, uint64_t *size);
    int (*close)(void *ctx, int fd);
    /* Calls fn for every entry name in dir ("." and ".." left out) until fn
     * returns a negative value, which it then returns. */
    int (*list)(void *ctx, const char *dir, int (*fn)(void *arg, const char *name), void *arg);
    void *ctx;
    /* Decompressing ahead for the reader's compressed segments (see
     * segment_ahead); NULL: inline. The pread above must then be safe to
     * call from the executor's thread too (POSIX pread is). */
    const segment_ahead *ahead;
} segment_io;

/* Plain POSIX (open, pread, fstat, close, readdir); a static table. */
const segment_io *segment_io_posix(void);

/* pb_reader_open (reader.h) reading through io instead of POSIX; io must
 * outlive the reader. The daemon reads its own partitions through its file
 * layer with it (the topic table catching up at open). */
struct pb_reader;
int pb_reader_open_io(struct pb_reader **out, const char *partition_dir, const segment_io *io);

void segment_buf_free(segment_buf *b);
/* Points the window at another file (or the same one after it changed). */
void segment_buf_attach(segment_buf *b, int fd);
/* Forgets the buffered bytes so the next read sees the file as it is now. */
void segment_buf_invalidate(segment_buf *b);
/* Decompress compressed blocks ahead through `ahead` (NULL: inline);
 * takes effect at the next attach. */
void segment_buf_set_ahead(segment_buf *b, const segment_ahead *ahead);
/* How much a refill reads: the whole window (the default) for sequential
 * scans, a few KiB for the scattered probes of a seek. */
void segment_buf_set_readahead(segment_buf *b, size_t bytes);

/* After a read returned ZSEG_EBADBLOCK (zseg.h: a compressed block failed
 * its checks): the damaged block's plain byte range [*pos, *end), the
 * offsets first..last that start in it, and what failed. False if the
 * attached file is not compressed. */
bool segment_buf_bad_block(const segment_buf *b, uint64_t *pos, uint64_t *end, uint64_t *first,
                           uint64_t *last, const char **why);

/* Makes bytes [pos, pos+n) readable, growing the buffer if n is larger than it
 * (the caller bounds n). *p points at pos, *avail is how many bytes from pos
 * are readable (< n only at end of file). 0 or a negative errno/PB_ENOMEM.
 * *p stays valid until the next get, invalidate or attach (a compressed
 * file's bytes may come from its decompressed block, not the window; after
 * the next get that buffer may be handed to the decompress-ahead thread
 * and rewritten there, so a caller that keeps bytes past it must copy
 * them). */
int segment_buf_get(segment_buf *b, uint64_t pos, size_t n, const uint8_t **p, size_t *avail);

/* Decodes the record starting at file position pos (see record_decode for the
 * codes). A CRC failure is re-checked once against fresh bytes from the file,
 * so a reader racing a writer does not mistake a half-copied page for damage.
 * On success rec->event points into b and is valid until the next call on b. */
int segment_read_record(segment_buf *b, uint64_t pos, uint32_t max_event, pb_record *rec,
                        uint32_t *size);

/* Whether the 8 bytes at pos are an all-zero record header (1), not (0), or
 * a negative errno; fewer than 8 bytes there: 0. */
int segment_zero_header(segment_buf *b, uint64_t pos);

/* Whether the file holds a zero tail from pos on (FORMAT.md Part B, "The end
 * of a segment"): an all-zero record header at pos (never a record: a
 * length is at least 16) and nothing but zero bytes from there to the end
 * of the file, as a recycled segment holds after its last record. 1: yes;
 * 0: no (not a zero header, or a non-zero byte after it); negative errno
 * on I/O error. Reads the rest of the file through b's window. */
int segment_zero_tail(segment_buf *b, uint64_t pos);

/* What a record at pos that failed its checks is, for a reader that
 * follows the writer (FORMAT.md Part B, "The end of a segment"). *zero_pos
 * is the reader's memory of the zero tail it last saw in this file
 * (UINT64_MAX: none; reset it when a new file is opened and after damage):
 * the whole tail is read once, since the writer writes in file order.
 * live: the file may still be written (the newest segment, or --follow).
 *   SEGMENT_BAD_END     a zero tail from pos; or, live, a whole header whose
 *                       record does not verify with only zeros after it (a
 *                       write into a recycled segment's zeros, its body not
 *                       there yet): the records end here (for now)
 *   SEGMENT_BAD_AGAIN   the record verifies on a second read (written
 *                       meanwhile): read it
 *   SEGMENT_BAD_DAMAGE  anything else: resync
 * or a negative errno. b's window is invalidated (zeros read must not hide
 * what comes next). */
enum { SEGMENT_BAD_DAMAGE = 0, SEGMENT_BAD_END = 1, SEGMENT_BAD_AGAIN = 2 };
int segment_bad_record(segment_buf *b, uint64_t pos, bool live, uint64_t *zero_pos);

/* After segment_resync found a later record in a file still being written:
 * whether the record at pos verifies on a fresh read (b invalidated first),
 * with offset expected unless any_offset. True means it was a write in
 * progress when first read (the writer writes in file order): no loss. */
bool segment_verifies_again(segment_buf *b, uint64_t pos, bool any_offset, uint64_t expected);

/* Scans forward byte by byte from `from` for the first position where a whole
 * record verifies with min_offset <= offset <= max_offset. Cheap checks on the
 * length and offset fields reject most positions before any CRC is computed.
 * 0: *found = its position, rec/size as segment_read_record. PB_EEOF: no such
 * record before end of file. Negative errno on I/O error. */
int segment_resync(segment_buf *b, uint64_t from, uint64_t min_offset, uint64_t max_offset,
                   uint32_t max_event, uint64_t *found, pb_record *rec, uint32_t *size);

/*
 * One file read on its own through a segment_buf (POSIX), with the damage
 * report a reader hands out: what the single-file readers (the CLI's
 * segfile, the original-layout pb_legacy) share. Embedded in the reader's
 * own struct; one thread at a time.
 */
typedef struct segment_file {
    char path[PATH_MAX];
    int fd;
    bool follow;  /* the file may still grow: a cut-short tail is "not yet" */
    bool stuck;   /* nothing more can be read: the reader says PB_EEOF */
    uint64_t pos; /* file position of the next record */
    segment_buf buf;
    struct pb_reader_problem problem;
    char reason[200];
} segment_file;

/* Opens path read-only into *f (which the caller zeroed). 0, PB_EINVAL (path
 * too long), PB_ENOMEM or a negated errno; after a failure f holds nothing
 * (segment_file_close is still safe). */
int segment_file_open(segment_file *f, const char *path, bool follow);

/* Closes what segment_file_open opened; safe after a failed open. */
void segment_file_close(segment_file *f);

/* Sets f->problem: damage at byte `position` of the file that cost offsets
 * first..last (first = 0, last = UINT64_MAX: no record was lost), because
 * of `reason` (copied). Returns PB_ECORRUPT, for the reader to pass on. */
int segment_file_report(segment_file *f, uint64_t position, uint64_t first, uint64_t last,
                        const char *reason);

#endif
