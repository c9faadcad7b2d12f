/*
 * logging - timestamped, levelled lines on stderr. Any thread: each line is
 * formatted into a stack buffer and written with a single write(2), which
 * keeps lines from different threads whole. When stderr is the journal
 * (systemd's JOURNAL_STREAM names its device and inode), a line starts with
 * the syslog priority in sd-daemon(3)'s "<N>" form instead of a timestamp
 * (the journal stamps it and files it by priority).
 */
#include "logging.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static atomic_int min_level = LOG_INFO;
static atomic_int to_journal;

/* syslog priorities of the levels: debug 7, info 6, warning 4, err 3. */
static const int journal_priority[] = {7, 6, 4, 3};

void logging_detect_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    atomic_store(&to_journal,
                 js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
                     (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino);
}

/* As printed in a line. */
static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void logging_set_level(int level)
{
    atomic_store(&min_level, level);
}

const char *const logging_level_names[] = {"debug", "info", "warn", "error", NULL};

const char *logging_level_name(int level)
{
    return level >= LOG_DEBUG && level <= LOG_ERROR ? logging_level_names[level] : "?";
}

static void vlog(int level, const char *fmt, va_list ap)
{
    if (level < atomic_load(&min_level))
        return;
    if (level < LOG_DEBUG || level > LOG_ERROR)
        level = LOG_ERROR;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    int n;
    if (atomic_load(&to_journal)) {
        n = snprintf(line, sizeof line, "<%d>%s ", journal_priority[level], level_names[level]);
    } else {
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, level_names[level]);
    }
    if (n < 0)
        return;
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof line - 2)
        len = sizeof line - 2; /* truncated: keep the newline */
    line[len++] = '\n';
    /* Best effort: there is nowhere left to report a failed write to stderr. */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void logging_printf(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}
