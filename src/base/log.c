/* log: formats a line into a stack buffer and writes it with one write(2). */
#include "parley/base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pl_log_level_t min_level = PL_LOG_INFO;
static _Thread_local char thread_tag[16] = "main";
static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void pl_log_set_level(pl_log_level_t level)
{
    min_level = level;
}

int pl_log_enabled(pl_log_level_t level)
{
    return level >= min_level;
}

void pl_log_set_thread(const char *tag)
{
    snprintf(thread_tag, sizeof thread_tag, "%s", tag);
}

void pl_log(pl_log_level_t level, const char *fmt, ...)
{
    if (level < min_level) return;
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s [%s] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, level_names[level], thread_tag);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2) len = sizeof line - 2;
    /* One event, one line: messages from libraries (libpq's end in "\n" and may hold several
     * lines) are joined with spaces, and other control characters shown as '?'. */
    while (len > (size_t)n &&
           (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' '))
        len--;
    for (size_t i = (size_t)n; i < len; i++) {
        unsigned char ch = (unsigned char)line[i];
        if (ch == '\n' || ch == '\r' || ch == '\t')
            line[i] = ' ';
        else if (ch < 0x20 || ch == 0x7f)
            line[i] = '?';
    }
    line[len++] = '\n';
    /* A short write to stderr is not worth handling: logs are best effort. */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
