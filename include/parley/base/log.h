/*
 * log: one line per event that matters, to stderr, with time, level and the
 * thread's tag. Thread-safe (each line is a single write(2)). A message
 * that holds newlines (libpq's do) is joined into one line.
 */
#ifndef PARLEY_BASE_LOG_H
#define PARLEY_BASE_LOG_H

/** Severity, in increasing order. */
typedef enum { PL_LOG_DEBUG, PL_LOG_INFO, PL_LOG_WARN, PL_LOG_ERROR } pl_log_level_t;

/** Lines below this level are dropped. Set once at start-up. */
void pl_log_set_level(pl_log_level_t level);

/** 1 if lines of `level` are written (to skip work done only for a log line). */
int pl_log_enabled(pl_log_level_t level);

/** Name this thread in its log lines ("main", "shard-0", "redis-sub"). At most 15 bytes kept. */
void pl_log_set_thread(const char *tag);

/** Write one line. Prefer the macros below. */
void pl_log(pl_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define pl_debug(...) pl_log(PL_LOG_DEBUG, __VA_ARGS__)
#define pl_info(...) pl_log(PL_LOG_INFO, __VA_ARGS__)
#define pl_warn(...) pl_log(PL_LOG_WARN, __VA_ARGS__)
#define pl_error(...) pl_log(PL_LOG_ERROR, __VA_ARGS__)

#endif
