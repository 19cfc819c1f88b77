/* SPDX-License-Identifier: MIT */
/* LD_PRELOAD shim, used only by the tests: shifts one process's wall clock (CLOCK_REALTIME) by an offset a test can change at any time. */

/*
 * Why this exists: the clock tests need a daemon whose wall clock is wrong and is then stepped,
 * without touching the machine's clock (other work shares it). libfaketime 0.9.10 shifts
 * CLOCK_REALTIME well enough, but it also rewrites every absolute timerfd_settime() as if it
 * were a wall-clock time, CLOCK_MONOTONIC timers included, and sd-event arms all its timers
 * that way: with any offset but zero the daemon's commit, status and retention timers fire at
 * the wrong time or never (see docs/TESTING.md). This shim changes nothing but what
 * clock_gettime(CLOCK_REALTIME, CLOCK_REALTIME_COARSE), gettimeofday() and time() return: the
 * real time plus the offset, in milliseconds, written as a decimal integer in the file that
 * $SC_CLOCKSHIM_FILE names. The file is read at every call, so a test steps the clock by
 * rewriting it (rename() into place); no file, or no number in it, means no offset.
 * CLOCK_MONOTONIC and CLOCK_BOOTTIME stay real. It is never installed and never linked into
 * the daemon.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);

static int64_t offset_ms(void) {
        const char *path = getenv("SC_CLOCKSHIM_FILE");
        char buf[32];
        ssize_t n;
        int fd, saved = errno;

        if (!path)
                return 0;
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                errno = saved;
                return 0;
        }
        n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        errno = saved;
        if (n <= 0)
                return 0;
        buf[n] = 0;
        return strtoll(buf, NULL, 10);
}

static int real_clock_gettime(clockid_t id, struct timespec *ts) {
        static clock_gettime_fn real;

        if (!real)
                real = (clock_gettime_fn) dlsym(RTLD_NEXT, "clock_gettime");
        return real(id, ts);
}

static void shift(struct timespec *ts) {
        int64_t ns = (int64_t) ts->tv_sec * 1000000000 + ts->tv_nsec + offset_ms() * 1000000;

        ts->tv_sec = (time_t) (ns / 1000000000);
        ts->tv_nsec = (long) (ns % 1000000000);
        if (ts->tv_nsec < 0) {
                ts->tv_nsec += 1000000000;
                ts->tv_sec--;
        }
}

int clock_gettime(clockid_t id, struct timespec *ts) {
        int r = real_clock_gettime(id, ts);

        if (r == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE))
                shift(ts);
        return r;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
        struct timespec ts;

        (void) tz;
        if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
                return -1;
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
        return 0;
}

time_t time(time_t *t) {
        struct timespec ts;

        if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
                return (time_t) -1;
        if (t)
                *t = ts.tv_sec;
        return ts.tv_sec;
}
