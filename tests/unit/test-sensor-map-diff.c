/* SPDX-License-Identifier: MIT */
/* Unit tests for sensor_map_diff(): what a reload changes in the sensor map, in words. */
#include <check.h>
#include <string.h>

#include "collector/macro.h"
#include "collector/sensor-map-diff.h"
#include "testlib.h"

static SensorMetricConfig temp50[] = { { .name = "temperature", .has_max = true, .max = 50, .unit = "°C" } };
static SensorMetricConfig temp24[] = { { .name = "temperature", .has_max = true, .max = 24, .unit = "°C" } };
static SensorMetricConfig temp50_f[] = { { .name = "temperature", .has_max = true, .max = 50, .unit = "°F" } };
static SensorMetricConfig two[] = { { .name = "co2", .has_min = true, .min = 300 },
                                    { .name = "temperature", .has_max = true, .max = 50, .unit = "°C" } };
static SensorMetricConfig two_swapped[] = { { .name = "temperature", .has_max = true, .max = 50, .unit = "°C" },
                                            { .name = "co2", .has_min = true, .min = 300 } };

/* A pattern with metrics, a pattern without, an exact id without. */
#define PM(i, every, m) { .id = (i), .is_pattern = true, .expect_every_usec = (every), .metrics = (m), .n_metrics = ELEMENTSOF(m) }
#define P(i, every) { .id = (i), .is_pattern = true, .expect_every_usec = (every) }
#define X(i, every) { .id = (i), .expect_every_usec = (every) }

static SensorEntryConfig base[] = { PM("gh1-t*", 2000000, temp50), P("gh3-s*", 5000000),
                                    X("door", 0) };
static SensorEntryConfig tightened[] = { PM("gh1-t*", 2000000, temp24), X("gh4-door", 5000000),
                                         P("gh3-s*", 5000000), X("door", 0) };
static SensorEntryConfig reordered[] = { X("door", 0), PM("gh1-t*", 2000000, temp50),
                                         P("gh3-s*", 5000000) };
static SensorEntryConfig patterns_swapped[] = { P("gh3-s*", 5000000), PM("gh1-t*", 2000000, temp50),
                                                X("door", 0) };
static SensorEntryConfig unit_changed[] = { PM("gh1-t*", 2000000, temp50_f), P("gh3-s*", 5000000),
                                            X("door", 0) };
static SensorEntryConfig every_changed[] = { PM("gh1-t*", 2000000, temp50), P("gh3-s*", 6000000),
                                             X("door", 0) };
static SensorEntryConfig with_two[] = { { .id = "x", .metrics = two, .n_metrics = 2 } };
static SensorEntryConfig with_two_swapped[] = { { .id = "x", .metrics = two_swapped, .n_metrics = 2 } };

#define MAP(e) { .unknown = SENSOR_UNKNOWN_STORE, .stale_after = 3, .entries = (e), .n_entries = ELEMENTSOF(e) }

static const struct {
        SensorMapConfig old, new;
        const char *want;
        size_t n;
} cases[] = {
        { MAP(base), MAP(base), "", 0 },
        { MAP(base), MAP(tightened), "added gh4-door; changed gh1-t*", 2 },
        { MAP(tightened), MAP(base), "changed gh1-t*; removed gh4-door", 2 },
        /* an exact id may move; patterns that swap places change which applies */
        { MAP(base), MAP(reordered), "", 0 },
        { MAP(base), MAP(patterns_swapped), "changed gh3-s*, gh1-t*", 2 },
        { MAP(base), MAP(unit_changed), "changed gh1-t*", 1 },
        { MAP(base), MAP(every_changed), "changed gh3-s*", 1 },
        /* metrics by name, in any order */
        { MAP(with_two), MAP(with_two_swapped), "", 0 },
        { MAP(with_two), MAP(base), "added gh1-t*, gh3-s*, door; removed x", 4 },
        { MAP(base), { .unknown = SENSOR_UNKNOWN_REJECT, .stale_after = 4, .entries = base, .n_entries = 3 },
          "stale_after 3 -> 4; unknown store -> reject", 2 },
};

START_TEST(test_diff) {
        char buf[256];

        ck_assert_uint_eq(sensor_map_diff(&cases[_i].old, &cases[_i].new, buf, sizeof(buf)), cases[_i].n);
        ck_assert_str_eq(buf, cases[_i].want);
}
END_TEST

/* Too long for the buffer: cut with "...", still NUL-terminated, the count still exact. */
START_TEST(test_cut) {
        char buf[16];

        ck_assert_uint_eq(sensor_map_diff(&(SensorMapConfig) MAP(with_two), &(SensorMapConfig) MAP(base), buf, sizeof(buf)), 4);
        ck_assert_uint_eq(strlen(buf), sizeof(buf) - 1);
        ck_assert_str_eq(buf + sizeof(buf) - 4, "...");
        ck_assert_uint_eq(sensor_map_diff(&(SensorMapConfig) MAP(with_two), &(SensorMapConfig) MAP(base), NULL, 0), 4);
}
END_TEST

static Suite *diff_suite(void) {
        Suite *s = suite_create("sensor-map-diff");
        TCase *tc = tcase_create("pure");

        tcase_add_loop_test(tc, test_diff, 0, ELEMENTSOF(cases));
        tcase_add_test(tc, test_cut);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(diff_suite());
}
