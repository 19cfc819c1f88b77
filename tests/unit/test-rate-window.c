/* SPDX-License-Identifier: MIT */
/* Unit tests for the last-minute counts: scripts of additions and the sums they give. */
#include <check.h>

#include "collector/macro.h"
#include "collector/rate-window.h"
#include "testlib.h"

#define S(x) ((uint64_t) (x) * USEC_PER_SEC)
#define MS(x) ((uint64_t) (x) * USEC_PER_MSEC)

typedef struct Step {
        uint64_t at;                  /* 0 ends the script */
        uint64_t add;                 /* events counted at `at` */
        uint64_t want;                /* the sum at `at`, after adding */
} Step;

static const struct {
        const char *name;
        Step steps[8];
} cases[] = {
        { "one second", { { S(100), 3, 3 }, { S(100) + MS(999), 2, 5 } } },
        { "a minute holds", { { S(100), 1, 1 }, { S(130), 1, 2 }, { S(159) + MS(999), 0, 2 } } },
        { "older than a minute goes", { { S(100), 1, 1 }, { S(160), 0, 0 }, { S(161), 4, 4 } } },
        { "a slot reused", { { S(100), 5, 5 }, { S(160), 1, 1 }, { S(170), 0, 1 } } },
        { "a long gap", { { S(100), 5, 5 }, { S(100000), 0, 0 }, { S(100000), 2, 2 } } },
        { "time at zero", { { MS(1), 1, 1 }, { MS(2), 1, 2 }, { S(59), 0, 2 }, { S(60), 0, 0 } } },
        /* going back a little counts in its own second; a minute back counts nowhere */
        { "time goes back", { { S(200), 1, 1 }, { S(199), 1, 1 }, { S(200), 0, 2 }, { S(139), 7, 0 }, { S(200), 0, 2 } } },
};

START_TEST(test_script) {
        RateWindow w = RATE_WINDOW_INIT;

        for (const Step *s = cases[_i].steps; s->at; s++) {
                rate_window_add(&w, s->at, s->add);
                ck_assert_msg(rate_window_sum(&w, s->at) == s->want, "%s: step %td: %llu, want %llu", cases[_i].name,
                              s - cases[_i].steps, (unsigned long long) rate_window_sum(&w, s->at),
                              (unsigned long long) s->want);
        }
}
END_TEST

/* Against a plain list of events: any pattern of additions sums as a list would. */
START_TEST(test_random) {
        enum { EVENTS = 5000 };
        static uint64_t times[EVENTS];
        RateWindow w = RATE_WINDOW_INIT;
        uint64_t now = S(1000);
        unsigned seed = 12345;

        for (int i = 0; i < EVENTS; i++) {
                uint64_t want = 0;

                now += (uint64_t) (rand_r(&seed) % 3000) * USEC_PER_MSEC / 10;
                times[i] = now;
                rate_window_add(&w, now, 1);
                for (int k = 0; k <= i; k++)
                        if (times[k] / USEC_PER_SEC + 60 > now / USEC_PER_SEC)
                                want++;
                ck_assert_uint_eq(rate_window_sum(&w, now), want);
        }
}
END_TEST

static Suite *rate_window_suite(void) {
        Suite *s = suite_create("rate-window");
        TCase *tc = tcase_create("rate-window");

        tcase_add_loop_test(tc, test_script, 0, ELEMENTSOF(cases));
        tcase_add_test(tc, test_random);
        tcase_set_timeout(tc, 60);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(rate_window_suite());
}
