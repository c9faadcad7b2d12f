/*
 * sdnotify - telling systemd (Type=notify) how the daemon is doing, with
 * libsystemd's sd_notify: READY=1 once the partitions are recovered and the
 * listener is up, RELOADING=1 / READY=1 around a SIGHUP reload, STOPPING=1
 * when a graceful stop begins, and WATCHDOG=1 every half WatchdogSec when
 * systemd asks for it (WATCHDOG_USEC). Outside systemd (no NOTIFY_SOCKET)
 * every call does nothing.
 *
 * Threads: the loop thread.
 */
#ifndef PB_SDNOTIFY_H
#define PB_SDNOTIFY_H

#include <uv.h>

/* READY=1 with a STATUS= line. */
void sdnotify_ready(const char *status);
void sdnotify_reloading(void);
void sdnotify_stopping(void);

/* Starts the watchdog pings on loop with t when WATCHDOG_USEC is set for
 * this process: 1 (t started: uv_close it on the way out), else 0. */
int sdnotify_watchdog_start(uv_loop_t *loop, uv_timer_t *t);

#endif
