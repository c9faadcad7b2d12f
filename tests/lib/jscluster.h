/*
 * jscluster - a NATS JetStream cluster on loopback for tests and benches:
 * n nats-server processes (Debian's nats-server, found on PATH), each with
 * a free client port and a free route port on 127.0.0.1, a store under one
 * temp dir, routes to each other. Every process is started and stopped by
 * its PID; every wait is bounded.
 */
#ifndef PB_JSCLUSTER_H
#define PB_JSCLUSTER_H

#include <stdint.h>
#include <sys/types.h>

#define JSCLUSTER_MAX 5

typedef struct jscluster {
    int n;
    pid_t pid[JSCLUSTER_MAX]; /* 0: not running */
    uint16_t port[JSCLUSTER_MAX], route[JSCLUSTER_MAX];
    char dir[256];
    char urls[512]; /* "nats://127.0.0.1:P1, nats://127.0.0.1:P2, ..." */
} jscluster;

/* Starts n (1..JSCLUSTER_MAX) nodes named n1..nN and waits until each
 * accepts connections. 0, or -1 with the reason on stderr. */
int jscluster_start(jscluster *c, int n);

/* SIGTERM to node i (0-based), then waits for it (10 s; SIGKILL after). */
void jscluster_stop_node(jscluster *c, int i);

/* Starts node i again with its config and store. 0 or -1. */
int jscluster_start_node(jscluster *c, int i);

/* Stops every node and removes the temp dir (kept with ITEST_KEEP). */
void jscluster_cleanup(jscluster *c);

#endif
