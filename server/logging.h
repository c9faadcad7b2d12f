/*
 * logging - the daemon's log lines: "2026-11-23T10:00:00.123Z INFO message"
 * on stderr, one write per line so concurrent threads never interleave.
 * Thread-safe; any thread.
 */
#ifndef PB_LOGGING_H
#define PB_LOGGING_H

/* The daemon's one log-level scheme: the config's log_level setting names
 * a level ("warn"), each line prints its own ("WARN"). */
enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

/* "debug", "info", "warn", "error" (indexed by level), then NULL. */
extern const char *const logging_level_names[];

/* The level's name in logging_level_names; "?" outside the enum. */
const char *logging_level_name(int level);

/* Lines below this level are dropped (default LOG_INFO). */
void logging_set_level(int level);
/* Lines get a "<N>" syslog-priority prefix instead of a timestamp from now
 * on if stderr is the journal ($JOURNAL_STREAM = device:inode of stderr). */
void logging_detect_journal(void);

void logging_printf(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
