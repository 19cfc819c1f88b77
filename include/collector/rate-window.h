/* SPDX-License-Identifier: MIT */
/* A count over the last minute in one-second slots: "readings in the last minute" without a queue. */
#pragma once

#include <stdint.h>

#define RATE_WINDOW_SLOTS 60

/* Zero-initialise (RATE_WINDOW_INIT). Pure: every call takes the time (any monotonic clock, in
 * microseconds); the slot of a second that has gone by is cleared when its turn comes again. */
typedef struct RateWindow {
        uint64_t counts[RATE_WINDOW_SLOTS];
        uint64_t second[RATE_WINDOW_SLOTS];   /* which second (now / 1 s) each slot counts */
} RateWindow;

#define RATE_WINDOW_INIT ((RateWindow){})

/* Counts n events at now_usec. Times that go backwards count in the slot of their own second
 * if it is still in the window, else nowhere. */
void rate_window_add(RateWindow *w, uint64_t now_usec, uint64_t n);

/* The events counted in the last RATE_WINDOW_SLOTS seconds up to now_usec (the current second
 * included, the one 60 s ago not). */
uint64_t rate_window_sum(const RateWindow *w, uint64_t now_usec);
