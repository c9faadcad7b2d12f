/*
 * logging - the daemon's log lines: "2026-11-23T10:00:00.123Z INFO message"
 * on stderr, one write per line so concurrent threads never interleave.
 * Thread-safe; any thread.
 */
#ifndef PB_LOGGING_H
#define PB_LOGGING_H

enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

/* Lines below this level are dropped (default LOG_INFO). */
void logging_set_level(int level);
/* Parses "debug", "info", "warn", "error"; -1 if none of them. */
int logging_level_parse(const char *name);

void logging_printf(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
