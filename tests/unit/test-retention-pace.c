/* SPDX-License-Identifier: MIT */
/* Unit tests for retention step sizing: scripts of measured step times and the allowance after each. */
#include <check.h>

#include "collector/macro.h"
#include "collector/retention-pace.h"
#include "testlib.h"

typedef struct Step {
        uint64_t held_usec;           /* 0 with want 0 ends the script */
        bool full;
        unsigned want;                /* retention_pace_rows() after the update */
} Step;

/* All with a 20 ms batch window: a 5 ms budget per step. */
static const struct {
        const char *name;
        Step steps[8];
} cases[] = {
        { "fast full steps double up to the cap",
          { { 1000, true, 500 }, { 1000, true, 1000 }, { 1000, true, 2000 }, { 1000, true, 2000 } } },
        { "growth in proportion when near the budget", { { 4000, true, 312 }, { 5000, true, 312 } } },
        { "a step not full keeps its allowance", { { 100, false, 250 }, { 4999, false, 250 } } },
        { "over the budget shrinks in proportion, full or not",
          { { 1000, true, 500 }, { 6000, true, 416 }, { 7000, false, 297 } } },
        { "at most halved by one slow step", { { 1000, true, 500 }, { 50000, true, 250 }, { 1000000, false, 125 } } },
        { "never below the minimum",
          { { 100000, true, 125 }, { 100000, true, 62 }, { 100000, true, 31 }, { 100000, true, RETENTION_PACE_MIN_ROWS },
            { 100000, true, RETENTION_PACE_MIN_ROWS } } },
        { "back up after slow steps",
          { { 100000, true, 125 }, { 100000, true, 62 }, { 100, true, 124 }, { 100, true, 248 } } },
        { "a step measured as 0 us", { { 0, true, 500 } } },
};

START_TEST(test_script) {
        RetentionPace p = {};

        ck_assert_uint_eq(retention_pace_rows(&p), RETENTION_PACE_FIRST_ROWS);
        for (size_t i = 0; i < ELEMENTSOF(cases[_i].steps) && cases[_i].steps[i].want > 0; i++) {
                const Step *s = &cases[_i].steps[i];

                retention_pace_update(&p, s->held_usec, s->full, 20 * USEC_PER_MSEC);
                ck_assert_msg(retention_pace_rows(&p) == s->want, "%s, step %zu: %u rows, want %u", cases[_i].name, i,
                              retention_pace_rows(&p), s->want);
        }
}
END_TEST

/* The budget is a share of the window: a longer window allows longer steps. */
START_TEST(test_window) {
        RetentionPace p = {};

        retention_pace_update(&p, 10000, true, 20 * USEC_PER_MSEC);
        ck_assert_uint_eq(retention_pace_rows(&p), 125);
        p = (RetentionPace) {};
        retention_pace_update(&p, 7000, true, 20 * USEC_PER_MSEC);
        ck_assert_uint_eq(retention_pace_rows(&p), 178);
        p = (RetentionPace) {};
        retention_pace_update(&p, 10000, true, 100 * USEC_PER_MSEC);
        ck_assert_uint_eq(retention_pace_rows(&p), 500);
        p = (RetentionPace) {};
        retention_pace_update(&p, 1000, true, 0);
        ck_assert_uint_eq(retention_pace_rows(&p), 125);
}
END_TEST

static Suite *retention_pace_suite(void) {
        Suite *s = suite_create("retention-pace");
        TCase *tc = tcase_create("retention-pace");

        tcase_add_loop_test(tc, test_script, 0, ELEMENTSOF(cases));
        tcase_add_test(tc, test_window);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(retention_pace_suite());
}
