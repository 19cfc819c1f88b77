/* SPDX-License-Identifier: MIT */
/* Logging: native journald entries with structured fields, or readable lines on stderr. */
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <time.h>

#include "collector/log.h"
#include "collector/time-util.h"

#define LOG_FIELDS_MAX 16

static LogTarget log_target = LOG_TARGET_AUTO;
static int log_max_level = LOG_INFO;

static const char *const level_names[] = {
        [LOG_ERR] = "err",
        [LOG_WARNING] = "warning",
        [LOG_NOTICE] = "notice",
        [LOG_INFO] = "info",
        [LOG_DEBUG] = "debug",
};

/* $JOURNAL_STREAM is "DEVICE:INODE" of the stream systemd connected to stdout/stderr; only when
 * it names our stderr are we talking to journald (a child with redirected stderr is not). */
static bool stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino;
}

void log_open(LogTarget target) {
        if (target == LOG_TARGET_AUTO)
                target = stderr_is_journal() ? LOG_TARGET_JOURNAL : LOG_TARGET_STDERR;
        log_target = target;
}

LogTarget log_get_target(void) {
        return log_target;
}

void log_set_max_level(int level) {
        if (level >= LOG_EMERG && level <= LOG_DEBUG)
                log_max_level = level;
}

int log_get_max_level(void) {
        return log_max_level;
}

int log_level_from_string(const char *s) {
        if (!s)
                return -EINVAL;
        if (streq(s, "error"))
                return LOG_ERR;
        for (size_t i = 0; i < ELEMENTSOF(level_names); i++)
                if (level_names[i] && streq(level_names[i], s))
                        return (int) i;
        return -EINVAL;
}

const char *log_level_to_string(int level) {
        if (level < 0 || (size_t) level >= ELEMENTSOF(level_names))
                return NULL;
        return level_names[level];
}

static void log_to_journal(int level, int error, const char *file, int line, const char *func,
                           const char *const *fields, const char *message) {
        /* MESSAGE, PRIORITY, CODE_FILE, CODE_LINE, CODE_FUNC, ERRNO, SYSLOG_IDENTIFIER + fields */
        char buf[7 + LOG_FIELDS_MAX][512];
        struct iovec iov[7 + LOG_FIELDS_MAX + 1];
        _cleanup_free_ char *msg = NULL;
        size_t n = 0;

        if (asprintf(&msg, "MESSAGE=%s", message) < 0)
                return;
        iov[n++] = (struct iovec){ msg, strlen(msg) };
#define ADD(...)                                                                  \
        do {                                                                      \
                int _k = snprintf(buf[n], sizeof(buf[n]), __VA_ARGS__);           \
                if (_k > 0)                                                       \
                        iov[n] = (struct iovec){ buf[n], MIN((size_t) _k, sizeof(buf[n]) - 1) }, n++; \
        } while (0)
        ADD("PRIORITY=%d", level);
        ADD("SYSLOG_IDENTIFIER=%s", program_invocation_short_name);
        ADD("CODE_FILE=%s", file);
        ADD("CODE_LINE=%d", line);
        ADD("CODE_FUNC=%s", func);
        if (error != 0)
                ADD("ERRNO=%d", error);
        for (size_t i = 0; fields && fields[i] && n < ELEMENTSOF(buf); i += 2) {
                if (!fields[i + 1])
                        continue;
                ADD("%s=%s", fields[i], fields[i + 1]);
        }
#undef ADD
        (void) sd_journal_sendv(iov, (int) n);
}

static void log_to_stderr(int level, const char *const *fields, const char *message) {
        char extra[512] = "";
        size_t used = 0;

        /* Field values that a reader of a terminal wants (TASK first), compactly. */
        for (size_t i = 0; fields && fields[i]; i += 2) {
                if (!fields[i + 1] || streq(fields[i], "TASK"))
                        continue;
                int k = snprintf(extra + used, sizeof(extra) - used, "%s%s=%s", used ? " " : " [",
                                 fields[i], fields[i + 1]);
                if (k < 0 || (size_t) k >= sizeof(extra) - used)
                        break;
                used += (size_t) k;
        }
        if (used > 0 && used + 1 < sizeof(extra))
                extra[used++] = ']', extra[used] = 0;

        const char *task = NULL;
        for (size_t i = 0; fields && fields[i]; i += 2)
                if (streq(fields[i], "TASK"))
                        task = fields[i + 1];

        fprintf(stderr, "%s%s%s%s%s%s\n", level <= LOG_ERR ? "error: " : level == LOG_WARNING ? "warning: " : "",
                task ? task : "", task ? ": " : "", message, extra, "");
}

int log_internal(int level, int error, const char *file, int line, const char *func,
                 const char *const *fields, const char *format, ...) {
        char message[2048];
        va_list ap;
        int saved_errno = errno;

        if (error < 0)
                error = -error;
        if (level > log_max_level) {
                errno = saved_errno;
                return -error;
        }

        errno = error; /* for %m */
        va_start(ap, format);
        (void) vsnprintf(message, sizeof(message), format, ap);
        va_end(ap);

        if (log_target == LOG_TARGET_AUTO)
                log_open(LOG_TARGET_AUTO);
        if (log_target == LOG_TARGET_JOURNAL)
                log_to_journal(level, error, file, line, func, fields, message);
        else
                log_to_stderr(level, fields, message);

        errno = saved_errno;
        return -error;
}

bool ratelimit_below(RateLimit *rl, unsigned *ret_suppressed) {
        uint64_t now = clock_now_usec(CLOCK_MONOTONIC);

        if (ret_suppressed)
                *ret_suppressed = 0;
        if (rl->interval_usec == 0 || rl->burst == 0)
                return true;

        if (rl->begin_usec == 0 || now - rl->begin_usec >= rl->interval_usec) {
                if (ret_suppressed)
                        *ret_suppressed = rl->suppressed;
                rl->begin_usec = now;
                rl->count = 0;
                rl->suppressed = 0;
        }
        if (rl->count < rl->burst) {
                rl->count++;
                return true;
        }
        rl->suppressed++;
        return false;
}
