/*
 * protobus_errors.h - public header of libprotobus (included by
 * protobus.h; include that one).
 *
 * Error codes shared by every Protobus module and by libprotobus.
 * Functions that can fail return int: 0 on success, a negative code on
 * failure. Codes above PB_ERRNO_MIN are negated errno values (-EIO, -ENOSPC,
 * ...) passed through from the system; the PB_E* codes below are Protobus's
 * own. pb_strerror() names either kind. enum pb_code is the status of a
 * server Error frame; pb_code_name() names it.
 */
#ifndef PROTOBUS_ERRORS_H
#define PROTOBUS_ERRORS_H

#include "protobus_version.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PB_ERRNO_MIN (-4095)

enum pb_error {
    PB_OK = 0,
    PB_ECORRUPT = -5001,    /* a stored record failed its checks (CRC, length, offset) */
    PB_EEOF = -5002,        /* no more data (end of a file or of the log, for now) */
    PB_EINCOMPLETE = -5003, /* a record is still being written: try again later */
    PB_ETOOBIG = -5004,     /* a frame, event or record exceeds its maximum size */
    PB_EPROTO = -5005,      /* malformed frame or protocol violation */
    PB_EINVAL = -5006,      /* invalid argument */
    PB_ENOMEM = -5007,      /* out of memory */
    PB_ECONNECT = -5008,    /* could not connect */
    PB_ETIMEDOUT = -5009,   /* a timeout expired */
    PB_ECLOSED = -5010,     /* the connection was closed */
    PB_ESERVER = -5011,     /* the server answered with an Error frame */
    PB_ENOTFOUND = -5012,   /* no such partition, file or offset */
    PB_EFORMAT = -5013,     /* not a Protobus file, or an unsupported version */
    PB_EFAILED = -5014,     /* a partition stopped after a failed write or sync */
    PB_EDATALOSS = -5015,   /* data could not be read back (reported, not skipped) */
    PB_EREMOVED = -5020,    /* offsets removed by retention (a notice, not damage) */
};

/* A static string naming the error; never NULL. Thread-safe. */
PB_API const char *pb_strerror(int code);

/*
 * protobus.Code, the status a server Error frame carries (gRPC numbering).
 * Inside Protobus it is the one spelling for C code on both sides; the
 * generated PROTOBUS__CODE__* of protobus.pb-c.h are the same numbers, for
 * protobuf-c structs only (pb_errors.c asserts that they agree).
 */
enum pb_code {
    PB_CODE_OK = 0,
    PB_CODE_CANCELLED = 1,
    PB_CODE_UNKNOWN = 2,
    PB_CODE_INVALID_ARGUMENT = 3,
    PB_CODE_DEADLINE_EXCEEDED = 4,
    PB_CODE_NOT_FOUND = 5,
    PB_CODE_ALREADY_EXISTS = 6,
    PB_CODE_PERMISSION_DENIED = 7,
    PB_CODE_RESOURCE_EXHAUSTED = 8,
    PB_CODE_FAILED_PRECONDITION = 9,
    PB_CODE_ABORTED = 10,
    PB_CODE_OUT_OF_RANGE = 11,
    PB_CODE_UNIMPLEMENTED = 12,
    PB_CODE_INTERNAL = 13,
    PB_CODE_UNAVAILABLE = 14,
    PB_CODE_DATA_LOSS = 15,
    PB_CODE_UNAUTHENTICATED = 16,
};

/* "INVALID_ARGUMENT", ...; "UNKNOWN_CODE" outside the enum. Static string. */
PB_API const char *pb_code_name(int code);

#ifdef __cplusplus
}
#endif

#endif
