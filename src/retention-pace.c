/* SPDX-License-Identifier: MIT */
/* Retention step sizing by time (see collector/retention-pace.h). */
#include "collector/macro.h"
#include "collector/retention-pace.h"

unsigned retention_pace_rows(const RetentionPace *p) {
        return p->rows == 0 ? RETENTION_PACE_FIRST_ROWS : p->rows;
}

void retention_pace_update(RetentionPace *p, uint64_t held_usec, bool full, uint64_t window_usec) {
        uint64_t rows = retention_pace_rows(p), budget = MAX(window_usec / RETENTION_PACE_SHARE_DIVISOR, (uint64_t) 1);
        uint64_t next = rows;

        held_usec = MAX(held_usec, (uint64_t) 1);
        /* At most halved per step: on a busy machine one step in a few is descheduled for
         * tens of ms whatever its size, and shrinking in full proportion to such a step sent the
         * allowance to the minimum, where the fixed cost of a step (about a millisecond) is
         * most of it and retention crawls (measured: docs/BENCHMARKS.md). */
        if (held_usec > budget)
                next = MAX(rows * budget / held_usec, rows / 2);
        else if (full)
                next = MIN(rows * 2, rows * budget / held_usec);
        p->rows = (unsigned) MIN(MAX(next, (uint64_t) RETENTION_PACE_MIN_ROWS), (uint64_t) RETENTION_PACE_MAX_ROWS);
}
