/*
 * sdnotify - sd_notify messages for systemd (see sdnotify.h). A failed
 * notification is logged once and otherwise ignored: the daemon serves
 * the same either way (systemd then times the start out and says why).
 */
#include "sdnotify.h"

#include "logging.h"

#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>

static void notify(const char *msg)
{
    static int warned;
    int rc = sd_notify(0, msg);
    if (rc < 0 && !warned) {
        warned = 1;
        logging_printf(LOG_WARN, "sd_notify(\"%s\") to $NOTIFY_SOCKET failed: %s", msg,
                       strerror(-rc));
    }
}

void sdnotify_ready(const char *status)
{
    char msg[512];
    snprintf(msg, sizeof msg, "READY=1\nSTATUS=%s", status);
    notify(msg);
}

void sdnotify_reloading(void)
{
    notify("RELOADING=1");
}

void sdnotify_stopping(void)
{
    notify("STOPPING=1\nSTATUS=stopping: finishing what was received");
}

static void on_watchdog(uv_timer_t *t)
{
    (void)t;
    notify("WATCHDOG=1");
}

int sdnotify_watchdog_start(uv_loop_t *loop, uv_timer_t *t)
{
    uint64_t usec = 0;
    /* > 0: WATCHDOG_USEC is set (and WATCHDOG_PID, if set, is ours). */
    if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
        return 0;
    uint64_t every_ms = usec / 2000 ? usec / 2000 : 1;
    uv_timer_init(loop, t);
    uv_timer_start(t, on_watchdog, 0, every_ms);
    logging_printf(LOG_INFO, "systemd watchdog: WATCHDOG=1 every %llu ms",
                   (unsigned long long)every_ms);
    return 1;
}
