/*
 * metrics_http - the metrics_listen endpoint: GET /metrics (Prometheus text
 * format 0.0.4: metrics.h's process-wide families and one series per
 * partition) and GET /healthz (200 "ok" when every partition accepts
 * writes, 503 naming each failed partition and its error otherwise).
 *
 * Threads: libmicrohttpd serves on its own thread; a scrape reads the
 * partitions' atomics and their directories, never takes a lock the
 * publish path holds (store_list copies the partition list under the
 * store's own lock, which publishers take only to create a partition).
 */
#ifndef PB_METRICS_HTTP_H
#define PB_METRICS_HTTP_H

#include "mirror.h"
#include "store.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct metrics_http metrics_http;

/* Starts serving on host:port (numeric address; port 0 = any free one).
 * mirrors (NULL: none) adds the [mirror] sections' counters and lag; it
 * must outlive the endpoint (metrics_http_stop first).
 * 0, or -1 with err saying why (e.g. the address is in use). */
int metrics_http_start(metrics_http **out, const char *host, uint16_t port, store *st,
                       mirror_set *mirrors, char *err, size_t errlen);
uint16_t metrics_http_port(const metrics_http *h);
/* Writes the /metrics body to f (also for tests). h (may be NULL) keeps
 * what can be reused between scrapes; only its serving thread may pass it.
 * 0, or -1 on a write error. */
int metrics_http_write(metrics_http *h, store *st, FILE *f);
/* Stops the server thread and frees h. NULL is allowed. */
void metrics_http_stop(metrics_http *h);

#endif
