/*
 * fakeserver - a scripted protobus server for the client library's unit
 * tests (test_client, test_client_sub): a thread on 127.0.0.1 (port from
 * bind to port 0) that accepts one connection and speaks the protocol with
 * protobuf-c, independently of the library's hand codec. It answers the
 * client's Hello with its limits, then runs the test's script.
 *
 * The server thread never calls cmocka asserts (they longjmp); it records
 * its first failure in fake_server.failure, which fake_server_join reports
 * with fail_msg after the join. The functions a test calls (start, run,
 * join, connect) use cmocka asserts.
 */
#ifndef PB_FAKESERVER_H
#define PB_FAKESERVER_H

#include "client.h"
#include "protobus.h"
#include "protobus.pb-c.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fake_server fake_server;
typedef void (*server_script)(fake_server *s, int fd);

struct fake_server {
    int lfd;
    uint16_t port;
    char address[64];
    pthread_t thread;
    server_script script;
    char failure[512];
    uint64_t max_frame_bytes, max_event_bytes;
    uint32_t max_batch_events; /* announced in the Hello's limits when nonzero */
    bool refuse_hello;         /* answer Hello with an UNAVAILABLE Error */
    uint32_t hello_version;    /* the server Hello's protocol_version (0: 1) */
    bool any_events;           /* do not check published events against make_event */
    int go_fd;                 /* script_ack_when_told: read end of a pipe */
    /* Script inputs/outputs. */
    int param;
    uint64_t events_seen;
    uint64_t frames_seen;
    Protobus__Hello *client_hello;
    Protobus__Subscribe *subscribe;
};

void srv_fail(fake_server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Whole reads and writes; -1 at EOF or on error. */
int fake_read_full(int fd, void *buf, size_t n);
int fake_write_full(int fd, const void *buf, size_t n);
/* One delimited Frame, unpacked with protobuf-c; NULL at EOF or on error. */
Protobus__Frame *srv_read(fake_server *s, int fd);
void srv_send(fake_server *s, int fd, const Protobus__Frame *f);
/* Reads the client's Hello and answers with the server's limits. */
int srv_hello(fake_server *s, int fd);
void srv_send_error(fake_server *s, int fd, uint64_t id, Protobus__Code code, const char *msg,
                    const char *partition, uint64_t first, uint64_t last,
                    uint32_t event_index_plus_one);
/* Waits for the client to close (bounded by the socket's receive timeout). */
void srv_drain(fake_server *s, int fd);

/* A script that closes the connection right after the Hello. */
void fake_script_close(fake_server *s, int fd);

/* A socket bound to 127.0.0.1 on a free port (listening if backlog >= 0). */
int fake_listen_socket(uint16_t *port, int backlog);
/* Listens; the script runs on fake_server_run's thread after the Hello. */
void fake_server_start(fake_server *s, server_script script);
void fake_server_run(fake_server *s);
/* Joins the thread, frees what it kept, fails the test on its failure. */
void fake_server_join(fake_server *s);
/* pb_client_connect to the fake server, failing the test on an error. */
pb_client *fake_connect(fake_server *s, const pb_client_options *o);

#endif
