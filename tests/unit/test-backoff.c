/* SPDX-License-Identifier: MIT */
/* Unit tests for the retry policy: scripts of losses, failed attempts and recoveries, and the
 * attempt times (or the end of the budget) each failure gives. */
#include <check.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>

#include "collector/backoff.h"
#include "collector/macro.h"
#include "testlib.h"

#define MS(x) ((uint64_t) (x) * USEC_PER_MSEC)
#define S(x) ((uint64_t) (x) * USEC_PER_SEC)

/* The serial input: 100 ms doubling to 5 s, reopen_timeout 30 s, attempts up to the deadline,
 * every loss starts from the first delay. */
static const BackoffPolicy serial_policy = {
        .initial_usec = MS(100), .max_usec = S(5), .budget_usec = S(30),
};
/* The serial input with a budget of 2 s (reopen_timeout at its smallest useful values). */
static const BackoffPolicy serial_short = {
        .initial_usec = MS(100), .max_usec = S(5), .budget_usec = S(2),
};
/* A budget shorter than the first delay. */
static const BackoffPolicy serial_tiny = {
        .initial_usec = MS(100), .max_usec = S(5), .budget_usec = MS(50),
};
/* The MQTT input: 200 ms doubling to 30 s, max_offline 10 s, the last attempt 2 s before it
 * runs out, a connection of less than 10 s does not reset the delay. */
static const BackoffPolicy mqtt_policy = {
        .initial_usec = MS(200), .max_usec = S(30), .budget_usec = S(10),
        .margin_usec = S(2), .stable_usec = S(10),
};
/* MQTT with max_offline shorter than the first delay: the margin is a quarter, 25 ms. */
static const BackoffPolicy mqtt_tiny = {
        .initial_usec = MS(200), .max_usec = S(30), .budget_usec = MS(100),
        .margin_usec = S(2), .stable_usec = S(10),
};
/* MQTT, but every up period resets the delay. */
static const BackoffPolicy mqtt_always_reset = {
        .initial_usec = MS(200), .max_usec = S(30), .budget_usec = S(10),
        .margin_usec = S(2), .stable_usec = 0,
};
/* A margin larger than the budget: a quarter of the budget (250 ms) applies. */
static const BackoffPolicy margin_over_budget = {
        .initial_usec = MS(100), .max_usec = S(5), .budget_usec = S(1),
        .margin_usec = S(10),
};
/* Small numbers: rounding of the halves. */
static const BackoffPolicy tiny_numbers = {
        .initial_usec = 3, .max_usec = 7, .budget_usec = 50, .margin_usec = 5, .stable_usec = 4,
};
/* No doubling at all. */
static const BackoffPolicy flat = {
        .initial_usec = MS(1000), .max_usec = MS(1000), .budget_usec = S(10), .margin_usec = S(2),
};

typedef enum EventKind {
        EV_END,     /* end of the script (zero: unused entries end it) */
        EV_DOWN,    /* backoff_down(t) */
        EV_UP,      /* backoff_up(t) */
        EV_FAIL,    /* backoff_next(t, random): 0 and lo <= at <= hi, or r */
        EV_CHECK,   /* backoff_deadline(), backoff_outage_usec(t), attempts and step */
} EventKind;

typedef struct Event {
        EventKind kind;
        uint64_t t;
        uint64_t random;    /* EV_FAIL */
        int r;              /* EV_FAIL: the expected return */
        uint64_t lo, hi;    /* EV_FAIL with r == 0: the expected range of the attempt time */
        uint64_t deadline;  /* EV_CHECK */
        uint64_t outage;    /* EV_CHECK */
        unsigned attempts;  /* EV_CHECK */
        unsigned step;      /* EV_CHECK */
} Event;

#define DOWN(t_) { .kind = EV_DOWN, .t = (t_) }
#define UP(t_) { .kind = EV_UP, .t = (t_) }
#define FAIL(t_, rnd, at) { .kind = EV_FAIL, .t = (t_), .random = (rnd), .lo = (at), .hi = (at) }
#define FAIL_IN(t_, rnd, lo_, hi_) { .kind = EV_FAIL, .t = (t_), .random = (rnd), .lo = (lo_), .hi = (hi_) }
#define TIMEOUT(t_) { .kind = EV_FAIL, .t = (t_), .random = 12345, .r = -ETIMEDOUT }
#define CHECK(t_, dl, out, att, st) \
        { .kind = EV_CHECK, .t = (t_), .deadline = (dl), .outage = (out), .attempts = (att), .step = (st) }

typedef struct ScriptCase {
        const char *name;
        const BackoffPolicy *policy;
        Event events[40];
} ScriptCase;

/* In the scripts, random d/2 (for the delay d of that step) gives the whole delay d, random 0
 * gives d/2. */
static const ScriptCase script_cases[] = {
        { "serial: doubling to the cap, random 0 gives d/2", &serial_policy, {
                CHECK(MS(500), UINT64_MAX, 0, 0, 0),
                UP(MS(500)),
                FAIL(MS(1000), 0, MS(1050)),   /* d 100 ms: the loss */
                CHECK(MS(1000), MS(31000), 0, 0, 1),
                FAIL(MS(1050), 0, MS(1150)),   /* d 200 ms */
                FAIL(MS(1150), 0, MS(1350)),   /* d 400 ms */
                FAIL(MS(1350), 0, MS(1750)),   /* d 800 ms */
                FAIL(MS(1750), 0, MS(2550)),   /* d 1.6 s */
                FAIL(MS(2550), 0, MS(4150)),   /* d 3.2 s */
                FAIL(MS(4150), 0, MS(6650)),   /* d 5 s: the cap */
                FAIL(MS(6650), 0, MS(9150)),   /* d 5 s */
                CHECK(MS(9150), MS(31000), MS(8150), 7, 8),
        } },
        { "serial: doubling to the cap, the whole delay", &serial_policy, {
                UP(MS(500)),
                FAIL(MS(1000), MS(50), MS(1100)),
                FAIL(MS(1100), MS(100), MS(1300)),
                FAIL(MS(1300), MS(200), MS(1700)),
                FAIL(MS(1700), MS(400), MS(2500)),
                FAIL(MS(2500), MS(800), MS(4100)),
                FAIL(MS(4100), MS(1600), MS(7300)),
                FAIL(MS(7300), MS(2500), MS(12300)),
                FAIL(MS(12300), MS(2500), MS(17300)),
                /* the same on a later loss: up again, lost again */
                UP(MS(17300)),
                FAIL(MS(20000), MS(50), MS(20100)),
                FAIL(MS(20100), MS(100), MS(20300)),
        } },
        { "serial: jitter with large random values stays within [d/2, d]", &serial_policy, {
                UP(MS(500)),
                FAIL_IN(MS(1000), UINT64_MAX, MS(1050), MS(1100)),
                FAIL_IN(MS(1100), UINT64_MAX - 1, MS(1200), MS(1300)),
                FAIL_IN(MS(1300), UINT64_C(0x8000000000000000), MS(1500), MS(1700)),
                FAIL_IN(MS(1700), UINT64_C(0x7fffffffffffffff), MS(2100), MS(2500)),
                FAIL_IN(MS(2500), UINT64_MAX, MS(3300), MS(4100)),
                FAIL_IN(MS(4100), UINT64_MAX, MS(5700), MS(7300)),
                FAIL_IN(MS(7300), UINT64_MAX, MS(9800), MS(12300)),
                FAIL_IN(MS(12300), UINT64_MAX - 7, MS(14800), MS(17300)),
                /* d/2 + 1 values, so random == d/2 + 1 wraps to d/2 */
                FAIL(MS(17300), MS(2500) + 1, MS(19800)),
        } },
        { "serial: a budget shorter than the first delay still gets one attempt, at the deadline", &serial_tiny, {
                FAIL(MS(1000), UINT64_MAX, MS(1050)),   /* missing at start: the loss */
                TIMEOUT(MS(1050)),
                CHECK(MS(1050), MS(1050), MS(50), 1, 1),
        } },
        { "mqtt: a budget shorter than the first delay still gets one attempt, at the deadline", &mqtt_tiny, {
                DOWN(MS(1000)),
                FAIL(MS(1000), UINT64_MAX, MS(1100)),   /* the first connection failed */
                TIMEOUT(MS(1100)),
        } },
        { "serial: the last attempt of a grown delay is at the deadline", &serial_short, {
                UP(MS(500)),
                FAIL(MS(1000), MS(50), MS(1100)),
                FAIL(MS(1100), MS(100), MS(1300)),
                FAIL(MS(1300), MS(200), MS(1700)),
                FAIL(MS(1700), MS(400), MS(2500)),
                FAIL(MS(2500), MS(800), MS(3000)),      /* d 1.6 s would give 4.1 s */
                TIMEOUT(MS(3000)),
        } },
        { "mqtt: a grown delay still leaves attempts in the last 2 s, 200 ms apart", &mqtt_policy, {
                DOWN(MS(1000)),
                FAIL(MS(1000), MS(100), MS(1200)),
                FAIL(MS(1200), MS(200), MS(1600)),
                FAIL(MS(1600), MS(400), MS(2400)),
                FAIL(MS(2400), MS(800), MS(4000)),
                FAIL(MS(4000), MS(1600), MS(7200)),
                FAIL(MS(7200), MS(3200), MS(9000)),     /* d 6.4 s would give 13.6 s: 2 s before the end */
                FAIL(MS(9000), 0, MS(9200)),            /* d 12.8 s: within the margin, 200 ms apart */
                FAIL(MS(9200), 0, MS(9400)),
                FAIL(MS(9400), 0, MS(9600)),
                FAIL(MS(9600), 0, MS(9800)),
                FAIL(MS(9800), 0, MS(10000)),
                FAIL(MS(10000), 0, MS(10200)),
                FAIL(MS(10200), 0, MS(10400)),
                FAIL(MS(10400), 0, MS(10600)),
                FAIL(MS(10600), 0, MS(10800)),
                FAIL(MS(10800), 0, MS(11000)),          /* never after the deadline */
                CHECK(MS(10900), MS(11000), MS(9900), 16, 16),
                TIMEOUT(MS(11000)),
                CHECK(MS(11000), MS(11000), MS(10000), 17, 16),
        } },
        /* THE SEVEN SHORT OUTAGES: max_offline 10 s; seven times connected for 1 s, then the
         * broker is gone for 2 s. The connections are too short to reset the delay, so it grows
         * to the cap; each outage must still get an attempt before max_offline runs out (the
         * delay alone would put it at 30.4 s in the fourth outage, past its deadline at 27.6 s).
         * The whole delay is drawn every time (the worst case); an attempt at or after the end of
         * the 2 s connects. */
        { "mqtt: seven short outages in a row", &mqtt_policy, {
                DOWN(MS(1000)),
                UP(MS(1000)),
                /* 1: lost at 2 s, the broker is back at 4 s */
                FAIL(MS(2000), MS(100), MS(2200)),
                FAIL(MS(2200), MS(200), MS(2600)),
                FAIL(MS(2600), MS(400), MS(3400)),
                FAIL(MS(3400), MS(800), MS(5000)),
                UP(MS(5000)),
                /* 2: lost at 6 s, back at 8 s; d 3.2 s */
                FAIL(MS(6000), MS(1600), MS(9200)),
                UP(MS(9200)),
                /* 3: lost at 10.2 s, back at 12.2 s; d 6.4 s */
                FAIL(MS(10200), MS(3200), MS(16600)),
                UP(MS(16600)),
                /* 4: lost at 17.6 s, deadline 27.6 s; d 12.8 s would give 30.4 s */
                FAIL(MS(17600), MS(6400), MS(25600)),
                UP(MS(25600)),
                /* 5: lost at 26.6 s, deadline 36.6 s; d 25.6 s */
                FAIL(MS(26600), MS(12800), MS(34600)),
                UP(MS(34600)),
                /* 6: lost at 35.6 s, deadline 45.6 s; d 30 s (the cap) */
                FAIL(MS(35600), MS(15000), MS(43600)),
                CHECK(MS(43000), MS(45600), MS(7400), 0, 9),
                UP(MS(43600)),
                /* 7: lost at 44.6 s, deadline 54.6 s */
                FAIL(MS(44600), MS(15000), MS(52600)),
                UP(MS(52600)),
                CHECK(MS(52600), UINT64_MAX, 0, 0, 10),
        } },
        { "mqtt: a connection of stable_usec resets the delay", &mqtt_policy, {
                DOWN(MS(1000)),
                FAIL(MS(1000), MS(100), MS(1200)),
                FAIL(MS(1200), MS(200), MS(1600)),
                FAIL(MS(1600), MS(400), MS(2400)),
                UP(MS(2400)),
                UP(MS(9000)),                           /* already up: the first call counts */
                CHECK(MS(9000), UINT64_MAX, 0, 0, 3),
                FAIL(MS(12400), MS(100), MS(12600)),    /* up for exactly 10 s: d 200 ms again */
                CHECK(MS(12400), MS(22400), 0, 0, 1),
        } },
        { "mqtt: a shorter connection keeps the delay growing", &mqtt_policy, {
                DOWN(MS(1000)),
                FAIL(MS(1000), MS(100), MS(1200)),
                FAIL(MS(1200), MS(200), MS(1600)),
                FAIL(MS(1600), MS(400), MS(2400)),
                UP(MS(2400)),
                FAIL(MS(12400) - 1, MS(800), MS(14000) - 1),   /* up for 10 s - 1 µs: d 1.6 s */
                CHECK(MS(12400), MS(22400) - 1, 1, 0, 4),
                /* an outage ended by backoff_down() decides the same way */
                UP(MS(14000)),
                DOWN(MS(15000)),
                FAIL(MS(15000), MS(1600), MS(18200)),   /* d 3.2 s */
                UP(MS(18200)),
                DOWN(MS(28200)),                        /* up for 10 s: reset */
                FAIL(MS(28200), MS(100), MS(28400)),
        } },
        { "mqtt: stable_usec 0 resets the delay at every up period", &mqtt_always_reset, {
                DOWN(MS(1000)),
                FAIL(MS(1000), MS(100), MS(1200)),
                FAIL(MS(1200), MS(200), MS(1600)),
                FAIL(MS(1600), MS(400), MS(2400)),
                UP(MS(2400)),
                FAIL(MS(2400) + 1, MS(100), MS(2600) + 1),
                FAIL(MS(2600), MS(200), MS(3000)),
                UP(MS(3000)),
                FAIL(MS(3000), MS(100), MS(3200)),      /* even an up period of 0 */
        } },
        { "serial: every loss starts from the first delay", &serial_policy, {
                UP(MS(500)),
                FAIL(MS(1000), MS(50), MS(1100)),
                FAIL(MS(1100), MS(100), MS(1300)),
                FAIL(MS(1300), MS(200), MS(1700)),
                UP(MS(1700)),
                FAIL(MS(1701), MS(50), MS(1801)),
                CHECK(MS(1701), MS(31701), 0, 0, 1),
        } },
        { "serial: -ETIMEDOUT at and after the deadline, not before", &serial_policy, {
                UP(MS(500)),
                FAIL(MS(1000), 0, MS(1050)),
                FAIL(S(31) - 1, 0, S(31)),              /* 1 µs before: one more attempt, at the deadline */
                TIMEOUT(S(31)),
                TIMEOUT(S(31) + 1),
                TIMEOUT(S(100)),
                CHECK(S(100), S(31), S(99), 4, 2),
        } },
        { "mqtt: -ETIMEDOUT at and after the deadline, not before", &mqtt_policy, {
                DOWN(MS(1000)),
                FAIL(S(11) - 1, 0, S(11)),
                TIMEOUT(S(11)),
                TIMEOUT(S(12)),
                /* a new outage has a new budget */
                UP(S(13)),
                FAIL(S(14), 0, S(14) + MS(200)),       /* up for 1 s: d 400 ms */
                CHECK(S(15), S(24), S(1), 0, 2),
        } },
        { "deadline and outage length", &mqtt_policy, {
                CHECK(MS(500), UINT64_MAX, 0, 0, 0),
                DOWN(MS(1000)),
                CHECK(MS(1000), MS(11000), 0, 0, 0),
                CHECK(MS(3500), MS(11000), MS(2500), 0, 0),
                DOWN(MS(2000)),                         /* already down: the first call counts */
                CHECK(MS(4000), MS(11000), MS(3000), 0, 0),
                FAIL(MS(4000), 0, MS(4100)),
                CHECK(MS(4000), MS(11000), MS(3000), 1, 1),
                CHECK(MS(20000), MS(11000), MS(19000), 1, 1),
                UP(MS(4100)),
                CHECK(MS(5000), UINT64_MAX, 0, 0, 1),
        } },
        { "small numbers", &tiny_numbers, {
                DOWN(10),
                FAIL(10, 0, 11),                        /* d 3: 1 */
                FAIL(11, 3, 17),                        /* d 6: 3 + 3 % 4 */
                FAIL(17, 100, 20),                      /* d 7 (the cap): 3 + 100 % 4 */
                FAIL(55, UINT64_MAX, 58),               /* 6 would pass latest (55): initial apart */
                FAIL(58, UINT64_MAX, 60),               /* never after the deadline */
                TIMEOUT(60),
        } },
        { "a flat policy (initial == max): only the deadline clamps", &flat, {
                DOWN(S(1)),
                FAIL(S(1), 0, MS(1500)),
                FAIL(MS(1500), MS(500), MS(2500)),
                FAIL(MS(8700), MS(500), MS(9700)),      /* past latest (9 s), but no delay exceeds initial */
                FAIL(MS(9700), MS(500), MS(10700)),
                FAIL(MS(10700), MS(500), S(11)),
                TIMEOUT(S(11)),
        } },
};

START_TEST(test_script) {
        const ScriptCase *c = &script_cases[_i];
        Backoff b;

        backoff_init(&b, c->policy);
        for (size_t k = 0; k < ELEMENTSOF(c->events) && c->events[k].kind != EV_END; k++) {
                const Event *e = &c->events[k];
                uint64_t at = 4242;
                int r;

                switch (e->kind) {
                case EV_DOWN:
                        backoff_down(&b, e->t);
                        break;
                case EV_UP:
                        backoff_up(&b, e->t);
                        break;
                case EV_FAIL:
                        r = backoff_next(&b, e->t, e->random, &at);
                        ck_assert_msg(r == e->r, "%s: event %zu at %" PRIu64 ": returned %d, expected %d", c->name,
                                      k, e->t, r, e->r);
                        if (r < 0)
                                ck_assert_msg(at == 4242, "%s: event %zu: ret_at written on failure", c->name, k);
                        else
                                ck_assert_msg(at >= e->lo && at <= e->hi,
                                              "%s: event %zu at %" PRIu64 ": next attempt at %" PRIu64
                                              ", expected [%" PRIu64 ", %" PRIu64 "]",
                                              c->name, k, e->t, at, e->lo, e->hi);
                        break;
                case EV_CHECK:
                        ck_assert_msg(backoff_deadline(&b) == e->deadline,
                                      "%s: event %zu: deadline %" PRIu64 ", expected %" PRIu64, c->name, k,
                                      backoff_deadline(&b), e->deadline);
                        ck_assert_msg(backoff_outage_usec(&b, e->t) == e->outage,
                                      "%s: event %zu: outage %" PRIu64 ", expected %" PRIu64, c->name, k,
                                      backoff_outage_usec(&b, e->t), e->outage);
                        ck_assert_msg(b.attempts == e->attempts, "%s: event %zu: %u attempts, expected %u", c->name,
                                      k, b.attempts, e->attempts);
                        ck_assert_msg(b.step == e->step, "%s: event %zu: step %u, expected %u", c->name, k, b.step,
                                      e->step);
                        break;
                case EV_END:
                        break;
                }
        }
}
END_TEST

/* xorshift64*: reproducible random values for the property tests. */
static uint64_t next_random(uint64_t *state) {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        return *state * UINT64_C(2685821657736338717);
}

static const BackoffPolicy *const property_policies[] = {
        &serial_policy, &serial_short, &serial_tiny, &mqtt_policy, &mqtt_tiny, &mqtt_always_reset,
        &margin_over_budget, &tiny_numbers, &flat,
};

/* Whole outages with random jitter, failures at the scheduled time or somewhat later (a connect
 * that takes a while), and short up periods in between (so the delay also starts outages grown):
 * every attempt is after now and never after the deadline, it is within [d/2, d] of now unless
 * the end of the budget is near, attempts near the end stay at most initial apart, and the
 * outage ends with -ETIMEDOUT at (or, for a late failure, after) the deadline and only then. */
START_TEST(test_property) {
        const BackoffPolicy *p = property_policies[_i];
        uint64_t seed = UINT64_C(0x9e3779b97f4a7c15) + (uint64_t) _i, now = S(1);
        Backoff b;

        backoff_init(&b, p);
        for (unsigned outage = 0; outage < 300; outage++) {
                bool late = outage % 3 == 2;
                uint64_t loss, deadline, latest, d = p->initial_usec, up_for;
                unsigned n = 0;

                /* Up for a while (sometimes long enough to reset the delay), then lost. */
                backoff_up(&b, now);
                up_for = next_random(&seed) % (p->stable_usec * 2 + 2);
                now += up_for;
                if (up_for < p->stable_usec)
                        for (unsigned k = 0; k < b.step && d < p->max_usec; k++)
                                d = MIN(d * 2, p->max_usec);
                loss = now;
                deadline = loss + p->budget_usec;
                latest = deadline - MIN(p->margin_usec, p->budget_usec / 4);

                for (;;) {
                        uint64_t at = 0;
                        int r;

                        r = backoff_next(&b, now, next_random(&seed), &at);
                        ck_assert_uint_eq(backoff_deadline(&b), deadline);
                        if (now >= deadline) {
                                ck_assert_int_eq(r, -ETIMEDOUT);
                                if (!late)
                                        ck_assert_uint_eq(now, deadline);
                                break;
                        }
                        ck_assert_int_eq(r, 0);
                        ck_assert_msg(at > now && at <= deadline, "%" PRIu64 " -> %" PRIu64 ", deadline %" PRIu64,
                                      now, at, deadline);
                        if (now + d <= latest)
                                ck_assert_msg(at - now >= d / 2 && at - now <= d,
                                              "delay %" PRIu64 " outside [%" PRIu64 ", %" PRIu64 "]", at - now, d / 2, d);
                        else
                                /* Either the jittered delay, or clamped: not before latest, still
                                 * initial apart (or at the deadline). */
                                ck_assert((at - now >= d / 2 && at - now <= d) ||
                                          (at >= latest && at >= MIN(now + p->initial_usec, deadline)));
                        if (now >= latest)
                                ck_assert_uint_le(at - now, p->initial_usec);

                        d = MIN(d * 2, p->max_usec);
                        now = late ? at + next_random(&seed) % (p->initial_usec * 2) : at;
                        ck_assert_uint_lt(++n, 100000);
                }
        }
}
END_TEST

/* The seven short outages (see the table) with random jitter: never -ETIMEDOUT, every outage
 * reconnects before its deadline, and each attempt is before the deadline. */
START_TEST(test_short_outages_random) {
        uint64_t seed = UINT64_C(0x2545f4914f6cdd1d);

        for (unsigned run = 0; run < 2000; run++) {
                uint64_t now = S(1);
                Backoff b;

                backoff_init(&b, &mqtt_policy);
                backoff_down(&b, now);
                backoff_up(&b, now);
                for (unsigned cycle = 0; cycle < 7; cycle++) {
                        uint64_t loss = now + S(1), back = loss + S(2);

                        now = loss;
                        for (;;) {
                                uint64_t at;

                                ck_assert_int_eq(backoff_next(&b, now, next_random(&seed), &at), 0);
                                ck_assert(at > now);
                                ck_assert_msg(at < loss + mqtt_policy.budget_usec,
                                              "run %u outage %u: attempt at %" PRIu64 " after the deadline", run,
                                              cycle + 1, at - loss);
                                now = at;
                                if (now >= back)
                                        break;
                        }
                        backoff_up(&b, now);
                }
        }
}
END_TEST

START_TEST(test_extremes) {
        Backoff b;
        uint64_t at;

        /* Time 0 is taken as 1 µs: 0 marks "not down". */
        static const BackoffPolicy p0 = { .initial_usec = 10, .max_usec = 100, .budget_usec = 1000 };
        backoff_init(&b, &p0);
        backoff_down(&b, 0);
        ck_assert_uint_eq(backoff_deadline(&b), 1001);
        ck_assert_uint_eq(backoff_outage_usec(&b, 0), 0);
        ck_assert_uint_eq(backoff_outage_usec(&b, 501), 500);
        backoff_down(&b, 7);
        ck_assert_uint_eq(backoff_deadline(&b), 1001);

        /* A budget of 0: the loss itself ends it. */
        static const BackoffPolicy none = { .initial_usec = 10, .max_usec = 100, .budget_usec = 0 };
        backoff_init(&b, &none);
        at = 4242;
        ck_assert_int_eq(backoff_next(&b, S(1), 0, &at), -ETIMEDOUT);
        ck_assert_uint_eq(at, 4242);
        ck_assert_uint_eq(b.step, 0);

        /* Huge numbers: the doubling and the sums saturate instead of wrapping or shifting out. */
        static const BackoffPolicy huge = {
                .initial_usec = 2, .max_usec = UINT64_MAX, .budget_usec = UINT64_MAX, .margin_usec = UINT64_MAX,
        };
        backoff_init(&b, &huge);
        ck_assert_int_eq(backoff_next(&b, 2, 0, &at), 0);
        ck_assert_uint_eq(backoff_deadline(&b), UINT64_MAX);
        for (unsigned k = 0; k < 200; k++) {
                ck_assert_int_eq(backoff_next(&b, 3, UINT64_MAX - k, &at), 0);
                ck_assert(at > 3);
        }
        ck_assert_uint_eq(b.step, 201);
        /* latest is UINT64_MAX - UINT64_MAX / 4: a grown delay is clamped to it */
        ck_assert_uint_eq(at, UINT64_MAX - UINT64_MAX / 4);
        ck_assert_int_eq(backoff_next(&b, UINT64_MAX - 1, UINT64_MAX, &at), 0);
        ck_assert_uint_eq(at, UINT64_MAX);
        ck_assert_int_eq(backoff_next(&b, UINT64_MAX, 0, &at), -ETIMEDOUT);

        /* The counters saturate. */
        backoff_init(&b, &serial_policy);
        backoff_down(&b, S(1));
        b.step = UINT_MAX - 1;
        b.attempts = UINT_MAX - 1;
        ck_assert_int_eq(backoff_next(&b, S(2), 0, &at), 0);
        ck_assert_uint_eq(at, S(2) + S(5) / 2);
        ck_assert_int_eq(backoff_next(&b, S(3), 0, &at), 0);
        ck_assert_uint_eq(at, S(3) + S(5) / 2);
        ck_assert_uint_eq(b.step, UINT_MAX);
        ck_assert_uint_eq(b.attempts, UINT_MAX);

        /* Time going backwards by mistake gives no huge outage. */
        backoff_init(&b, &serial_policy);
        backoff_down(&b, S(5));
        ck_assert_uint_eq(backoff_outage_usec(&b, S(4)), 0);
}
END_TEST

START_TEST(test_random) {
        uint64_t v[8];
        unsigned same = 0;

        for (size_t k = 0; k < ELEMENTSOF(v); k++)
                v[k] = backoff_random();
        for (size_t k = 1; k < ELEMENTSOF(v); k++)
                same += v[k] == v[k - 1];
        ck_assert_uint_lt(same, ELEMENTSOF(v) - 1);
}
END_TEST

static Suite *backoff_suite(void) {
        Suite *s = suite_create("backoff");
        TCase *tc;

        tc = tcase_create("script");
        tcase_add_loop_test(tc, test_script, 0, ELEMENTSOF(script_cases));
        tcase_add_test(tc, test_extremes);
        suite_add_tcase(s, tc);

        tc = tcase_create("property");
        tcase_add_loop_test(tc, test_property, 0, ELEMENTSOF(property_policies));
        tcase_add_test(tc, test_short_outages_random);
        tcase_add_test(tc, test_random);
        suite_add_tcase(s, tc);

        return s;
}

int main(void) {
        return tl_run_suite(backoff_suite());
}
