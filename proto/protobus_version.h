/*
 * protobus_version.h - public header of libprotobus (included by
 * protobus.h; include that one).
 *
 * The release version, in this one place: protobusd --version and its
 * Hello name, the protobus CLI's --version and Hello names, libprotobus's
 * default Hello name, pb_version() and the pkg-config file all take it from
 * here. Also the wire protocol version both sides send in Hello, and PB_API,
 * the mark of every function libprotobus exports.
 *
 * (The shared library's ABI version, libprotobus.so.N, is separate: see the
 * Makefile.)
 */
#ifndef PROTOBUS_VERSION_H
#define PROTOBUS_VERSION_H

#define PB_VERSION_MAJOR 0
#define PB_VERSION_MINOR 1
#define PB_VERSION_PATCH 0

#define PB_VERSION_STR_(x) #x
#define PB_VERSION_STR(x)  PB_VERSION_STR_(x)
/* "0.1.0" */
#define PB_VERSION_STRING                                                                          \
    PB_VERSION_STR(PB_VERSION_MAJOR)                                                               \
    "." PB_VERSION_STR(PB_VERSION_MINOR) "." PB_VERSION_STR(PB_VERSION_PATCH)

/* Hello.protocol_version: what this release speaks on the wire. */
#define PB_PROTOCOL_VERSION 1

/* Every function of the public API is declared PB_API: the library is built
 * with -fvisibility=hidden, so only these are exported. */
#if defined(__GNUC__)
#define PB_API __attribute__((visibility("default")))
#else
#define PB_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The release version of the library actually loaded, PB_VERSION_STRING
 * when it was built ("0.1.0"); compare with PB_VERSION_STRING from the
 * header a program was compiled with. Static string. Thread-safe. */
PB_API const char *pb_version(void);

#ifdef __cplusplus
}
#endif

#endif
