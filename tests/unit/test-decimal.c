/* SPDX-License-Identifier: MIT */
/* Unit tests for numbers as text: a table of values, and many random and sensor-like doubles
 * compared with the printf loop the query output has always used and with strtod(). */
#include <check.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector/decimal.h"
#include "collector/macro.h"
#include "decimal-reference.h"
#include "testlib.h"

/* decimal_format(v) is the reference text, reads back as v, and its length is returned. */
static void check_value(double v) {
        char got[DECIMAL_BUF_SIZE + 8], want[64];
        size_t n;

        memset(got, 'x', sizeof(got));
        n = decimal_format(v, got);
        reference_format(v, want, sizeof(want));
        ck_assert_msg(strcmp(got, want) == 0, "%a: got '%s', want '%s'", v, got, want);
        ck_assert_uint_eq(n, strlen(got));
        ck_assert_uint_lt(n, DECIMAL_BUF_SIZE);
        if (isfinite(v)) {
                double back = strtod(got, NULL);

                ck_assert_msg(memcmp(&back, &v, sizeof(v)) == 0, "%a: '%s' reads back as %a", v, got, back);
        }
}

static const struct {
        double value;
        const char *text;
} cases[] = {
        { 0.0, "0" },
        { -0.0, "-0" },
        { 22.3, "22.3" },
        { -22.35, "-22.35" },
        { 0.1, "0.1" },
        { 0.1 + 0.2, "0.30000000000000004" },
        { 1.0 / 3.0, "0.3333333333333333" },
        { 100.0, "100" },
        { 1500.0, "1500" },
        { 1013.25, "1013.25" },
        { 123.456789, "123.456789" },
        { 0.0001, "0.0001" },
        { 0.000123, "0.000123" },
        { 0.00001, "1e-05" },
        { 1.5e-7, "1.5e-07" },
        { -1e-9, "-1e-09" },
        { 1.23456789e-9, "1.23456789e-09" },
        { 1e-10, "1e-10" },
        { 12345.6789012345, "12345.6789012345" },
        { 123456789012345.0, "123456789012345" },
        { 999999999999999.0, "999999999999999" },
        { 1e15, "1e+15" },
        { 1234567890123456.0, "1234567890123456" },
        { 9007199254740992.0, "9007199254740992" },
        { 1e21, "1e+21" },
        { DBL_MAX, "1.7976931348623157e+308" },
        { DBL_MIN, "2.2250738585072014e-308" },
        { 5e-324, "4.94065645841247e-324" },
        { NAN, "nan" },
        { -NAN, "nan" },
        { INFINITY, "inf" },
        { -INFINITY, "-inf" },
};

START_TEST(test_table) {
        char got[DECIMAL_BUF_SIZE];

        ck_assert_uint_eq(decimal_format(cases[_i].value, got), strlen(cases[_i].text));
        ck_assert_str_eq(got, cases[_i].text);
        check_value(cases[_i].value);
}
END_TEST

static uint64_t next_random(uint64_t *state) {
        /* splitmix64: a fixed sequence, the same on every run. */
        uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));

        z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
        return z ^ (z >> 31);
}

/* Any bit pattern: mostly the fallback path, with its extremes. */
START_TEST(test_random_bits) {
        uint64_t state = 1;

        for (int i = 0; i < 40000; i++) {
                uint64_t bits = next_random(&state);
                double v;

                memcpy(&v, &bits, sizeof(v));
                check_value(v);
        }
}
END_TEST

/* What sensors send: a few decimals at every magnitude, as parsed from text, and the results
 * of arithmetic on them (sums, scaled units) that need 16 or 17 digits. */
START_TEST(test_sensor_like) {
        static const int decimals[] = { 0, 1, 2, 3, 4, 6, 9, 12 };
        uint64_t state = 2;

        for (int i = 0; i < 60000; i++) {
                uint64_t r = next_random(&state);
                double magnitude = pow(10.0, (double) (int) (r % 19) - 9.0);
                double raw = (double) (next_random(&state) >> 11) / 9007199254740992.0 * magnitude;
                char text[64];
                double v;

                if (r & 0x100000)
                        raw = -raw;
                snprintf(text, sizeof(text), "%.*f", decimals[(r >> 8) % ELEMENTSOF(decimals)], raw);
                v = strtod(text, NULL);
                check_value(v);
                check_value(v * 1.8 + 32);
                check_value(v / 10);
                check_value(nextafter(v, INFINITY));
        }
}
END_TEST

/* Around the powers of ten, where %g changes notation and the exponent may round up. */
START_TEST(test_powers_of_ten) {
        for (int e = -12; e <= 22; e++) {
                double p = pow(10.0, e), v = p;

                for (int i = 0; i < 20; i++, v = nextafter(v, 0)) {
                        check_value(v);
                        check_value(-v);
                }
                v = p;
                for (int i = 0; i < 20; i++, v = nextafter(v, INFINITY))
                        check_value(v);
                check_value(p * 1.5);
                check_value(p * 9.99999);
        }
}
END_TEST

START_TEST(test_int64) {
        static const int64_t table[] = { 0, 1, -1, 9, 10, -10, 1700000000123, -1700000000123, INT64_MAX, INT64_MIN,
                                         INT64_MIN + 1 };
        uint64_t state = 3;

        for (size_t i = 0; i < ELEMENTSOF(table) + 40000; i++) {
                int64_t v = i < ELEMENTSOF(table) ? table[i] : (int64_t) next_random(&state) >> (i % 64);
                char got[DECIMAL_INT64_BUF_SIZE], want[32];

                snprintf(want, sizeof(want), "%" PRId64, v);
                ck_assert_uint_eq(decimal_format_int64(v, got), strlen(want));
                ck_assert_str_eq(got, want);
        }
}
END_TEST

static Suite *decimal_suite(void) {
        Suite *s = suite_create("decimal");
        TCase *tc = tcase_create("decimal");

        tcase_add_loop_test(tc, test_table, 0, ELEMENTSOF(cases));
        tcase_add_test(tc, test_random_bits);
        tcase_add_test(tc, test_sensor_like);
        tcase_add_test(tc, test_powers_of_ten);
        tcase_add_test(tc, test_int64);
        tcase_set_timeout(tc, 120);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(decimal_suite());
}
