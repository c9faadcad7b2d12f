/*
 * itest - helpers for integration tests: run the real protobusd on
 * 127.0.0.1 (a free port, a temp data directory), stop it by PID, and talk
 * raw Frames to it with protobuf-c (independent of libprotobus, so the
 * daemon's wire behaviour is tested on its own).
 *
 * Every wait is bounded; every process started is stopped by its PID.
 */
#ifndef PB_ITEST_H
#define PB_ITEST_H

#include "protobus.pb-c.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct itest_daemon {
    pid_t pid;
    uint16_t port;
    char dir[256]; /* temp dir holding everything below */
    char data_dir[320];
    char conf[320];
    char log[320]; /* the daemon's stderr */
    char port_file[320];
    unsigned nofile; /* RLIMIT_NOFILE (soft and hard) for the daemon; 0 = inherit */
} itest_daemon;

/* For tests that run one daemon at a time, cmocka_unit_test_teardown(test,
 * itest_teardown): itest_dut is that daemon; itest_start starts it (the
 * test fails if it cannot); itest_teardown, run after a failed assertion
 * too, stops it by its PID and removes its temp dir. */
extern itest_daemon itest_dut;
void itest_start(const char *server_extra, const char *rules);
int itest_teardown(void **state);

/* cmocka fixtures for a test's own struct that begins with an
 * itest_daemon. itest_fixture_setup allocates it zeroed (size bytes) into
 * *state: a test's setup is `return itest_fixture_setup(state, sizeof(fixture));`.
 * itest_fixture_teardown, run after a failed assertion too (so no daemon
 * outlives its test), stops the daemon by its PID if it runs, removes its
 * temp dir and frees the struct. */
int itest_fixture_setup(void **state, size_t size);
int itest_fixture_teardown(void **state);

/* Path of the protobusd under test: $BUILD/protobusd (BUILD defaults to build). */
const char *itest_daemon_path(void);

/* Creates a temp dir, writes a config: a [server] section with `server_extra`
 * lines (may be NULL) and then `rules` (NULL = one catch-all partition
 * "events"), and starts the daemon. 0 or -1 (the message is printed). */
int itest_daemon_start(itest_daemon *d, const char *server_extra, const char *rules);

/* itest_daemon_start with the daemon's open-files limit (soft and hard)
 * set to nofile, as `ulimit -n` would; kept for restarts. */
int itest_daemon_start_nofile(itest_daemon *d, const char *server_extra, const char *rules,
                              unsigned nofile);

/* Starts the daemon again on the same dir and config (after stop or kill). */
int itest_daemon_restart(itest_daemon *d);

/* SIGTERM, then waits (bounded, 30 s; SIGKILL after). Returns the exit
 * status (0..255), or -1 if it had to be killed or died of a signal. */
int itest_daemon_stop(itest_daemon *d);

/* SIGKILL and reap. */
void itest_daemon_kill(itest_daemon *d);

/* Stops it if running and removes the temp dir. */
void itest_daemon_cleanup(itest_daemon *d);

/* Resident set size of the daemon in KiB (from /proc), or -1. */
long itest_daemon_rss_kb(const itest_daemon *d);

/* True if the daemon's log contains `text`. */
int itest_log_contains(const itest_daemon *d, const char *text);

/* A blocking TCP connection to 127.0.0.1:port, or -1. Nothing is sent:
 * protocol v1 wants a Hello first (itest_hello, or itest_connect_hello). */
int itest_connect(uint16_t port);

/* itest_connect plus the handshake: Hello (protocol version 1) sent with
 * frame id 1 and the server's Hello received. The fd, or -1 (printed why). */
int itest_connect_hello(uint16_t port);

/* Sends one delimited Frame. 0 or -1. */
int itest_send_frame(int fd, const Protobus__Frame *f);

/* Sends raw bytes. 0 or -1. */
int itest_send_raw(int fd, const void *p, size_t n);

/* Receives one delimited Frame within timeout_ms. Returns the frame (free
 * with protobus__frame__free_unpacked(f, NULL)), or NULL on timeout, EOF or
 * a malformed frame. */
Protobus__Frame *itest_recv_frame(int fd, int timeout_ms);

/* True if the peer closes the connection within timeout_ms (frames received
 * before the close are discarded). */
int itest_wait_closed(int fd, int timeout_ms);

/* Sends Hello with this protocol version and frame id `id`; no wait. 0 or -1. */
int itest_send_hello(int fd, uint64_t id, uint32_t version);

/* Sends a Ping with frame id `id`; no wait. 0 or -1. */
int itest_send_ping(int fd, uint64_t id);

/* Sends one event on topic as a Publish with frame id `id`; no wait. 0 or -1. */
int itest_send_publish(int fd, uint64_t id, const char *topic, const char *payload);

/* Sends Hello (protocol version 1) with frame id `id` and returns the reply
 * frame (NULL on timeout). Free it with protobus__frame__free_unpacked. */
Protobus__Frame *itest_hello(int fd, uint64_t id, int timeout_ms);

/* Sends a Ping with frame id `id` and returns the reply frame (NULL on
 * timeout). Free it with protobus__frame__free_unpacked. */
Protobus__Frame *itest_ping(int fd, uint64_t id, int timeout_ms);

/* Like itest_recv_frame, but skips Subscribed and CaughtUp frames: the next
 * Event (or Error, or other reply) of a subscription, for tests that do not
 * look at the confirmations. */
Protobus__Frame *itest_recv_event(int fd, int timeout_ms);

/* Sends a Subscribe for one pattern with the given start mode. 0 or -1. */
int itest_subscribe(int fd, uint64_t id, const char *pattern, Protobus__StartMode start);

/* Encodes an EncapsulatedEvent into buf (malloc'd, *len set). */
uint8_t *itest_event(const char *topic, const char *payload, size_t *len);

/* Publishes events (each a NUL-terminated topic + payload) in one batch with
 * frame id `id` and waits for its reply frame (returned; NULL on timeout). */
Protobus__Frame *itest_publish(int fd, uint64_t id, const char *const *topics,
                               const char *const *payloads, size_t n, int timeout_ms);

/* cmocka checks (the test fails otherwise): the next frame within
 * timeout_ms is an Error with this id and code whose message contains
 * text; a Pong with this id. */
void itest_expect_error(int fd, uint64_t id, int code, const char *text, int timeout_ms);
void itest_expect_pong(int fd, uint64_t id, int timeout_ms);

/* Monotonic milliseconds. */
uint64_t itest_now_ms(void);

/* Sleeps ms milliseconds (for tests whose subject is a deadline). */
void itest_sleep_ms(int ms);

#endif
