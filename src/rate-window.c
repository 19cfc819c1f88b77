/* SPDX-License-Identifier: MIT */
/* A count over the last minute in one-second slots. */
#include "collector/macro.h"
#include "collector/rate-window.h"

/* Seconds are numbered from 1 so that a zeroed slot (second 0) never counts. */
static uint64_t second_of(uint64_t usec) {
        return usec / USEC_PER_SEC + 1;
}

void rate_window_add(RateWindow *w, uint64_t now_usec, uint64_t n) {
        uint64_t sec = second_of(now_usec);
        size_t i = sec % RATE_WINDOW_SLOTS;

        if (w->second[i] == sec) {
                w->counts[i] += n;
                return;
        }
        /* A slot holding an older second is reused; one holding a newer second means time went
         * backwards by a minute or more: nothing to count that in. */
        if (w->second[i] > sec)
                return;
        w->second[i] = sec;
        w->counts[i] = n;
}

uint64_t rate_window_sum(const RateWindow *w, uint64_t now_usec) {
        uint64_t sec = second_of(now_usec), sum = 0;

        for (size_t i = 0; i < RATE_WINDOW_SLOTS; i++)
                if (w->second[i] != 0 && w->second[i] <= sec && sec - w->second[i] < RATE_WINDOW_SLOTS)
                        sum += w->counts[i];
        return sum;
}
