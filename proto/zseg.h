/*
 * zseg - compressed segment files (FORMAT.md Part B, "Compressed segments"):
 * a rotated .log rewritten as independently decompressible zstd blocks with
 * a block index, read back as the plain file it replaced. The readers never
 * see the difference: segment_buf (segment.h) notices the format on its
 * first read of a file and serves the plain bytes ("logical positions",
 * which the .idx keeps pointing at) from the blocks, decompressing only the
 * blocks a read touches. The writer side (the daemon's server/compress.c)
 * uses the encoders here.
 *
 * Layout: bytes 0..39 the plain segment's header, unchanged; 40..71 the
 * zseg header (magic, logical size, index position, block count, CRC32C);
 * the blocks; the index (ZSEG_ENTRY_SIZE bytes per block, then the CRC32C of
 * the entries). A plain record can never start with the magic (its length
 * field would exceed PB_RECORD_MAX_EVENT), so the two formats are told apart
 * by bytes 40..47.
 *
 * Threads: none of its own; a zseg_view belongs to its segment_buf's thread.
 */
#ifndef PB_ZSEG_H
#define PB_ZSEG_H

#include "segment.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ZSEG_MAGIC        "PBZSTD01"
#define ZSEG_HEADER_END   72u /* plain header (40) + zseg header (32) */
#define ZSEG_ENTRY_SIZE   48u
#define ZSEG_BLOCK_TARGET (256u * 1024u) /* plain bytes per block (a bigger record: its own) */
#define ZSEG_MAX_BLOCKS   (1u << 22)
/* What a read of a damaged block returns (a negated errno, like I/O). */
#define ZSEG_EBADBLOCK (-EBADMSG)

/* One block: plain bytes [logical, logical+raw_len) stored compressed at
 * file bytes [file_pos, file_pos+comp_len), CRC32C over the compressed
 * bytes; records first_offset..last_offset start in it. */
typedef struct zseg_entry {
    uint64_t logical;
    uint64_t file_pos;
    uint64_t first_offset;
    uint64_t last_offset;
    uint32_t comp_len;
    uint32_t raw_len;
    uint32_t crc;
} zseg_entry;

void zseg_entry_encode(uint8_t out[ZSEG_ENTRY_SIZE], const zseg_entry *e);
void zseg_entry_decode(const uint8_t in[ZSEG_ENTRY_SIZE], zseg_entry *e);

/* Bytes 40..71 of a compressed segment. */
void zseg_header_encode(uint8_t out[32], uint64_t logical_size, uint64_t index_pos,
                        uint32_t nblocks);

/* True if the 72 bytes at hdr start a compressed segment (magic and CRC). */
bool zseg_is_compressed(const uint8_t *hdr, size_t len);

/* The read view a segment_buf keeps of a compressed file. */
typedef struct zseg_view zseg_view;

/* Looks at the first bytes of fd: *out = NULL for a plain segment (or a
 * file too short to tell yet), a view for a compressed one (index loaded
 * and checked). 0, PB_ENOMEM, ZSEG_EBADBLOCK (header or index damaged:
 * *out still set, every read fails with the whole file as the bad range)
 * or a negated errno. */
int zseg_view_open(zseg_view **out, segment_pread_fn fn, void *ctx, int fd);
void zseg_view_free(zseg_view *v);

/* Plain bytes at off (reads only the blocks they are in); returns the count
 * (0 at the end), ZSEG_EBADBLOCK (see zseg_view_bad) or a negated errno. */
ssize_t zseg_view_read(zseg_view *v, segment_pread_fn fn, void *ctx, int fd, void *buf, size_t len,
                       uint64_t off);

/* Zero-copy read for a sequential reader: if plain bytes [off, off+n) lie
 * inside one block, makes that block the view's decompressed one (from the
 * block decompressed ahead when there is one: no copy either way) and sets
 * *p to off's byte in it, *avail to the bytes from off to the block's end;
 * returns 1. 0 if they do not (the file's first 40 bytes, the end, a range
 * across blocks: use zseg_view_read); ZSEG_EBADBLOCK or a negated errno.
 * *p stays valid until the next peek, read or invalidate of the view. */
int zseg_view_peek(zseg_view *v, segment_pread_fn fn, void *ctx, int fd, uint64_t off, size_t n,
                   const uint8_t **p, size_t *avail);

/* Size of the plain file the view stands for. */
uint64_t zseg_view_logical_size(const zseg_view *v);

/* After ZSEG_EBADBLOCK: the damaged block. *e: its plain range, file range
 * and offsets; the returned string says what failed. */
const char *zseg_view_bad(const zseg_view *v, zseg_entry *e);

/* Drops the decompressed block so the next read decompresses it again. */
void zseg_view_invalidate(zseg_view *v);

/* Decompress the block after each one served through `ahead` (segment.h;
 * NULL: inline). The view waits for (or takes back) that block before it
 * is freed or invalidated, so the file must stay open until then. */
void zseg_view_set_ahead(zseg_view *v, const segment_ahead *ahead);

/* Compresses raw (len bytes) at level into *dst (grown as needed, *cap its
 * size); *out_len the result. *cctx: the compression context, made at the
 * first call (NULL before) and reused (free it with zseg_cctx_free): a new
 * one per block would cost more than the compression. 0 or
 * PB_ENOMEM/PB_EINVAL. */
int zseg_compress_block(void **cctx, const void *raw, size_t len, int level, uint8_t **dst,
                        size_t *cap, size_t *out_len);
void zseg_cctx_free(void *cctx);

/* The logical size of a segment file whose physical size is size: itself
 * for a plain file. For the daemon's closed-segment scans. */
int zseg_logical_size(segment_pread_fn fn, void *ctx, int fd, uint64_t size, uint64_t *out);

#endif
