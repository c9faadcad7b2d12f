/*
 * framescan - reading a stream of frames without keeping them: for a reader
 * that must answer every frame by its id and kind but needs none of its
 * body. The daemon uses it on a subscribed connection, which it keeps
 * reading (a Ping gets a Pong, a Publish an Error) without buffering what
 * the client sends: however large a frame, the scanner holds at most the
 * few bytes of one varint.
 *
 * Fed the stream in pieces of any size. Checks what frame_split_next and
 * frame_parse check at the Frame level (the length prefix against
 * max_frame_bytes, every field's framing, the wire types of id and of the
 * bodies, one body at most) but never looks inside a body.
 *
 * Pure: no allocation, no I/O; one scanner per stream, used by one thread.
 */
#ifndef PB_FRAMESCAN_H
#define PB_FRAMESCAN_H

#include "frame.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FRAMESCAN_WHY_MAX 256

typedef struct frame_scan_result {
    uint64_t id;          /* the frame's id; on a malformed frame, as read before the fault */
    enum frame_kind kind; /* FRAME_NONE when the frame has no body this version knows */
    uint64_t body_len;    /* bytes of the body field's message */
    bool malformed;       /* the Frame's fields are not well-formed: why says how */
    char why[FRAMESCAN_WHY_MAX];
} frame_scan_result;

typedef struct frame_scan {
    uint64_t max_frame_bytes;
    int state;
    uint8_t vbuf[10]; /* a varint in progress */
    uint8_t vlen;
    uint8_t vlast;       /* bytes of the last complete varint */
    uint64_t frame_len;  /* the current Frame's length */
    uint64_t frame_left; /* bytes of it not consumed yet */
    uint64_t skip_left;  /* bytes of a field's contents still to skip */
    uint64_t field_pos;  /* byte position of the current field's tag in the Frame */
    uint32_t field;
    uint8_t wtype;
    frame_scan_result r; /* the frame being read */
} frame_scan;

void frame_scan_init(frame_scan *s, uint64_t max_frame_bytes);

/*
 * Consumes bytes of p[0..n) (*used says how many):
 *   1            a frame ended: *r describes it (call again for the rest);
 *   0            every byte consumed, no frame ended yet;
 *   PB_ETOOBIG   a length prefix declares more than max_frame_bytes;
 *   PB_EPROTO    a length prefix is not a varint (over 10 bytes or 64 bits).
 * After a negative return the stream cannot be read further (the next frame
 * boundary is unknown); err (may be NULL) says why, worded as
 * frame_split_next words it.
 */
int frame_scan_feed(frame_scan *s, const uint8_t *p, size_t n, size_t *used, frame_scan_result *r,
                    char *err, size_t errlen);

#endif
