/* SPDX-License-Identifier: MIT */
/* The retry policy shared by the inputs: exponential backoff with jitter inside a time budget. */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "collector/backoff.h"
#include "collector/macro.h"

/* 0 marks "not down" and "never up" in the state, so a caller's time of 0 becomes 1 µs. */
static uint64_t backoff_time(uint64_t now) {
        return MAX(now, UINT64_C(1));
}

static uint64_t add_saturating(uint64_t a, uint64_t b) {
        return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* The step-th delay before jitter: initial doubled step times, capped at max. The shift is only
 * done when it cannot overflow (initial <= max >> step implies initial << step <= max). */
static uint64_t backoff_base(const BackoffPolicy *p, unsigned step) {
        if (step >= 64 || p->initial_usec > p->max_usec >> step)
                return p->max_usec;
        return p->initial_usec << step;
}

void backoff_init(Backoff *b, const BackoffPolicy *p) {
        assert(b);
        assert(p);
        assert(p->initial_usec > 0);
        assert(p->max_usec >= p->initial_usec);

        *b = (Backoff) { .policy = p };
}

void backoff_down(Backoff *b, uint64_t now) {
        assert(b);

        now = backoff_time(now);
        if (b->down_usec != 0)
                return;
        if (b->up) {
                /* An up period shorter than stable_usec keeps the delay growing: a broker (or a
                 * second client with our id) that drops us right after accepting must not be
                 * hammered at the initial rate. A longer one was a real recovery. */
                if (b->policy->stable_usec == 0 || now - MIN(b->up_usec, now) >= b->policy->stable_usec)
                        b->step = 0;
                b->up = false;
        }
        b->down_usec = now;
        b->attempts = 0;
}

void backoff_up(Backoff *b, uint64_t now) {
        assert(b);

        if (b->up)
                return;
        b->up = true;
        b->up_usec = backoff_time(now);
        b->down_usec = 0;
        b->attempts = 0;
}

int backoff_next(Backoff *b, uint64_t now, uint64_t random, uint64_t *ret_at) {
        const BackoffPolicy *p;
        uint64_t deadline, latest, spaced, d, delay;

        assert(b);
        assert(ret_at);
        p = b->policy;

        now = backoff_time(now);
        if (b->down_usec == 0)
                backoff_down(b, now);   /* the loss itself, not a failed attempt */
        else if (b->attempts < UINT_MAX)
                b->attempts++;

        deadline = backoff_deadline(b);
        if (now >= deadline)
                return -ETIMEDOUT;

        /* Equal jitter: a point in the upper half of the delay, so that gateways that lost the
         * bus or the broker together do not retry in step. d / 2 + 1 cannot overflow. */
        d = backoff_base(p, b->step);
        delay = d / 2 + random % (d / 2 + 1);
        if (b->step < UINT_MAX)
                b->step++;

        /* The latest start for a long delay: margin (at most a quarter of the budget, so that a
         * short budget is not all margin) before the deadline, so that a resource that is back by
         * then gets one more try before the caller gives up. A delay grown over a run of short
         * up periods would otherwise jump past the whole budget. The margin is <= budget and
         * deadline >= down_usec + budget unless it saturated, so this does not wrap. */
        latest = deadline - MIN(p->margin_usec, p->budget_usec / 4);
        /* Past latest, the next attempt still comes initial after this one (or sooner, with a
         * short jittered delay), not at once: no hammering in the last stretch. But none is
         * placed after the deadline: the caller has given up by then, so it would never run. */
        spaced = MIN(add_saturating(now, p->initial_usec), deadline);
        /* The jittered delay when it ends earlier; otherwise the later of the two bounds above.
         * With margin 0, latest is the deadline: MIN(now + delay, deadline). */
        *ret_at = MIN(add_saturating(now, delay), MAX(latest, spaced));
        return 0;
}

uint64_t backoff_deadline(const Backoff *b) {
        assert(b);

        if (b->down_usec == 0)
                return UINT64_MAX;
        return add_saturating(b->down_usec, b->policy->budget_usec);
}

uint64_t backoff_outage_usec(const Backoff *b, uint64_t now) {
        assert(b);

        if (b->down_usec == 0 || now <= b->down_usec)
                return 0;
        return now - b->down_usec;
}

uint64_t backoff_random(void) {
        struct timespec ts;
        uint64_t v;

        if (getrandom(&v, sizeof(v), GRND_NONBLOCK) == (ssize_t) sizeof(v))
                return v;
        /* No entropy yet (early boot): jitter only has to differ between gateways. */
        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return ((uint64_t) ts.tv_nsec << 20) ^ (uint64_t) getpid() ^ (uint64_t) ts.tv_sec;
}
