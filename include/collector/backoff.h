/* SPDX-License-Identifier: MIT */
/* The retry policy shared by the inputs: exponential backoff with jitter inside a time budget. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* How an input retries (the serial port's reopens, the broker's reconnects). Constant; usually a
 * static const per input. */
typedef struct BackoffPolicy {
        uint64_t initial_usec;   /* first delay (> 0) */
        uint64_t max_usec;       /* cap of the doubling (>= initial) */
        uint64_t budget_usec;    /* how long an outage may last before giving up */
        uint64_t margin_usec;    /* the last attempt starts at least MIN(margin, budget/4) before the budget ends; 0: attempts up to the deadline itself */
        uint64_t stable_usec;    /* an up period at least this long resets the delay to initial; 0: every up period resets it */
} BackoffPolicy;

/* The state of one input's retries. Plain data: no allocation, nothing to free. Every time is
 * CLOCK_MONOTONIC in microseconds, passed in by the caller (the module reads no clock), and is
 * expected not to go backwards. A time of 0 is taken as 1: 0 marks "not down" and "never up". */
typedef struct Backoff {
        const BackoffPolicy *policy;  /* borrowed */
        unsigned step;                /* delays drawn in this run of failures (0: next is initial) */
        unsigned attempts;            /* failed attempts in the current outage */
        uint64_t down_usec;           /* start of the current outage; 0 when up or never started */
        uint64_t up_usec;             /* when last up; 0 never */
        bool up;
} Backoff;

/* Sets b to "never started" under policy p. p is borrowed and must outlive b; b needs no
 * cleanup. */
void backoff_init(Backoff *b, const BackoffPolicy *p);

/* The outage begins at now: the budget counts from here and attempts restarts at 0. Idempotent
 * while down: the first call counts, later ones change nothing. When it ends an up period, that
 * period decides the delay: shorter than stable_usec keeps it growing, longer resets it to
 * initial. MQTT calls it at start, so that the budget also covers the first connection. */
void backoff_down(Backoff *b, uint64_t now);

/* Up (connected / opened) at now: ends the outage (down_usec, attempts and the outage length
 * go back to 0, so read them first for a log line). Idempotent while up: the first call counts. */
void backoff_up(Backoff *b, uint64_t now);

/* An attempt failed, or the resource went away, at now. When no outage is running (up, or never
 * started) it calls backoff_down(b, now) itself, and the call counts as the loss, not as a failed
 * attempt; otherwise attempts grows by one. Draws the next delay from random (any 64-bit random
 * number: the jitter): min(initial << step, max), then a point in its upper half.
 * Returns 0 and sets *ret_at to the CLOCK_MONOTONIC time of the next attempt: never after the
 * deadline, and when the delay would reach past MIN(margin, budget/4) before it, at that point
 * (or initial after now, or the deadline, when that is later), so a long grown delay cannot use
 * up the budget without one more try. Returns -ETIMEDOUT when now >= backoff_deadline(): the
 * budget is spent and the caller fails; the failed attempt is counted, *ret_at and the delay
 * are untouched. */
int backoff_next(Backoff *b, uint64_t now, uint64_t random, uint64_t *ret_at);

/* When the current outage runs out of budget: down_usec + budget_usec (saturating), or
 * UINT64_MAX when no outage is running (up, or never started). */
uint64_t backoff_deadline(const Backoff *b);

/* How long the current outage has lasted at now: 0 when no outage is running. */
uint64_t backoff_outage_usec(const Backoff *b, uint64_t now);

/* A random number for the jitter: getrandom(GRND_NONBLOCK), falling back (early boot, no entropy
 * yet) to a mix of the monotonic clock and the pid, since jitter only has to differ between
 * gateways. Not for anything secret. Not pure: the one random source both inputs use. */
uint64_t backoff_random(void);
