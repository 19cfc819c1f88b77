/* SPDX-License-Identifier: MIT */
/* Logging to journald (native, with structured fields) or to stderr, with rate limiting. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <syslog.h>

#include "collector/macro.h"

/* Where log lines go. LOG_TARGET_AUTO picks journald when stderr is the journal stream
 * ($JOURNAL_STREAM names stderr's device and inode), else stderr. */
typedef enum LogTarget {
        LOG_TARGET_AUTO,
        LOG_TARGET_JOURNAL,
        LOG_TARGET_STDERR,
        _LOG_TARGET_MAX,
        _LOG_TARGET_INVALID = -EINVAL,
} LogTarget;

/* Sets the target; call once at start (again is harmless). */
void log_open(LogTarget target);

/* Returns the target in use after log_open() resolved AUTO. */
LogTarget log_get_target(void);

/* Messages with a priority above level (syslog numbering: LOG_ERR=3 .. LOG_DEBUG=7) are dropped. */
void log_set_max_level(int level);
int log_get_max_level(void);

/* "debug", "info", "notice", "warning", "err" (also "error") -> LOG_*; -EINVAL if unknown. */
int log_level_from_string(const char *s);
/* LOG_* -> name as above; NULL when out of range. */
const char *log_level_to_string(int level);

/* Core entry point. fields is NULL or a NULL-terminated array of alternating names and values,
 * e.g. LOG_FIELDS("TASK", "serial", "DEVICE", path); a NULL value skips that pair. error is 0 or
 * an errno (sign ignored); it sets errno for %m and adds ERRNO=. Returns -abs(error), or 0 when
 * error is 0, so callers can write return log_error_errno(r, ...). Never fails. */
int log_internal(int level, int error, const char *file, int line, const char *func,
                 const char *const *fields, const char *format, ...) _printf_(7, 8);

#define LOG_FIELDS(...) ((const char *const[]){ __VA_ARGS__, NULL })

#define log_full_errno_fields(level, error, fields, ...) \
        log_internal((level), (error), __FILE__, __LINE__, __func__, (fields), __VA_ARGS__)
#define log_full_errno(level, error, ...) log_full_errno_fields(level, error, NULL, __VA_ARGS__)

#define log_debug(...) log_full_errno(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...) log_full_errno(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...) log_full_errno(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_full_errno(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...) log_full_errno(LOG_ERR, 0, __VA_ARGS__)

#define log_debug_errno(error, ...) log_full_errno(LOG_DEBUG, error, __VA_ARGS__)
#define log_info_errno(error, ...) log_full_errno(LOG_INFO, error, __VA_ARGS__)
#define log_notice_errno(error, ...) log_full_errno(LOG_NOTICE, error, __VA_ARGS__)
#define log_warning_errno(error, ...) log_full_errno(LOG_WARNING, error, __VA_ARGS__)
#define log_error_errno(error, ...) log_full_errno(LOG_ERR, error, __VA_ARGS__)

/* Token bucket for messages that can fire per reading: at most burst messages per interval. */
typedef struct RateLimit {
        uint64_t interval_usec;
        unsigned burst;
        uint64_t begin_usec;
        unsigned count;
        unsigned suppressed;
} RateLimit;

#define RATELIMIT_INIT(interval, burst_) ((RateLimit){ .interval_usec = (interval), .burst = (burst_) })

/* True when a message may be logged now. When a new interval starts after suppression,
 * *ret_suppressed (if not NULL) gets how many were dropped in the previous one, else 0. */
bool ratelimit_below(RateLimit *rl, unsigned *ret_suppressed);
