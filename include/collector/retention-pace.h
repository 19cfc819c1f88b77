/* SPDX-License-Identifier: MIT */
/* How many rows a retention step may remove: sized by the time earlier steps held the write lock. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* A step holds the store's write lock from its BEGIN to its COMMIT, and ingest waits that long
 * at worst. A fixed number of rows per step takes 5 ms on one store and 150 ms on a larger one
 * (a deeper key index, a page cache that no longer holds the paths a delete walks), so the
 * allowance follows the measured time instead: each step aims at a quarter of the batch window,
 * which leaves room for the slow steps (a checkpoint, a cold cache) that come at three to four
 * times the usual time (docs/BENCHMARKS.md). The store keeps one pace for readings (age and size
 * retention share it: the same rows, the same cost) and one for the free pages a step gives back
 * to the file system (another cost); "rows" below are pages for that one. */
#define RETENTION_PACE_FIRST_ROWS 250
#define RETENTION_PACE_MIN_ROWS 16
#define RETENTION_PACE_MAX_ROWS 2000
#define RETENTION_PACE_SHARE_DIVISOR 4

typedef struct RetentionPace {
        unsigned rows;                /* the allowance of the next step; 0: no step measured yet */
} RetentionPace;

/* The rows per table the next step may remove, RETENTION_PACE_MIN_ROWS to _MAX_ROWS. */
unsigned retention_pace_rows(const RetentionPace *p);

/* Takes the time the last step held the write lock (held_usec), whether it removed or walked its
 * whole allowance (full: more was due), and the batch window (window_usec, commit_interval_ms).
 * Over its share of the window the allowance shrinks in proportion, at most halving per step;
 * under it, after a full step, it grows in proportion, at most doubling per step; a step that
 * was not full says nothing about a larger one and leaves it. Pure: no clock, no I/O. */
void retention_pace_update(RetentionPace *p, uint64_t held_usec, bool full, uint64_t window_usec);
