/* SPDX-License-Identifier: MIT */
/* Clocks and time spans: one way to read the time and to print a duration, for every module. */
#pragma once

#include <inttypes.h>
#include <stdio.h>
#include <systemd/sd-event.h>
#include <time.h>

#include "collector/macro.h"

/* The clock now, in microseconds. */
static inline uint64_t clock_now_usec(clockid_t clock) {
        struct timespec ts;

        clock_gettime(clock, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC;
}

/* Wall-clock time in milliseconds since the epoch: what readings and rejects are stamped with. */
static inline int64_t wall_clock_ms(void) {
        return (int64_t) (clock_now_usec(CLOCK_REALTIME) / USEC_PER_MSEC);
}

/* The loop's time of the current iteration (what its timers are measured against), or the
 * clock itself when the loop has not run yet. */
static inline uint64_t event_now_usec(sd_event *e, clockid_t clock) {
        uint64_t t;

        if (!e || sd_event_now(e, clock, &t) < 0)
                t = clock_now_usec(clock);
        return t;
}

/* A duration for people reading logs and STATUS=: "250ms", "4.5s", "10min", "2min 5s",
 * "1h", "1h 5min". Returns buf. */
static inline const char *format_timespan(char *buf, size_t size, uint64_t usec) {
        uint64_t s = usec / USEC_PER_SEC;

        if (usec < USEC_PER_SEC)
                snprintf(buf, size, "%" PRIu64 "ms", usec / USEC_PER_MSEC);
        else if (s < 60)
                snprintf(buf, size, "%.1fs", (double) usec / (double) USEC_PER_SEC);
        else if (s < 3600)
                snprintf(buf, size, s % 60 ? "%" PRIu64 "min %" PRIu64 "s" : "%" PRIu64 "min", s / 60, s % 60);
        else
                snprintf(buf, size, (s / 60) % 60 ? "%" PRIu64 "h %" PRIu64 "min" : "%" PRIu64 "h", s / 3600,
                         (s / 60) % 60);
        return buf;
}
