/* SPDX-License-Identifier: MIT */
/* Unit tests for the status formats: health, text, Prometheus text and OpenMetrics from fixed answers. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector/macro.h"
#include "collector/status-format.h"
#include "testlib.h"

/* An answer as the daemon gives it, plus a section the formats have never heard of ("clock"),
 * which must show everywhere all the same. */
static const char answer_json[] =
        "{\"daemon\":{\"version\":\"0.1.0\",\"state\":\"running\",\"healthy\":true,\"pid\":42,"
        "\"start_timestamp_seconds\":1000000000.5,\"uptime_seconds\":65},"
        "\"inputs\":{\"serial\":{\"state\":\"running\",\"healthy\":true,\"origin\":\"/dev/ttyUSB0\","
        "\"readings_total\":12,\"readings_last_minute\":3,\"last_error\":null,\"last_error_timestamp_seconds\":null},"
        "\"mqtt\":{\"state\":\"degraded\",\"healthy\":%s,\"origin\":\"127.0.0.1:1883\",\"readings_total\":7,"
        "\"readings_last_minute\":0,\"last_error\":\"reconnecting to \\\"x\\\"\\n\",\"last_error_timestamp_seconds\":999999990}},"
        "\"store\":{\"path\":\"/var/lib/sensor-collector/\\\\readings\\\"db\\n\",\"size_bytes\":2097152,\"reading_rows\":19,"
        "\"oldest_reading_timestamp_seconds\":null},"
        "\"clock\":{\"synchronized\":false,\"offset_seconds\":0.25,\"steps_total\":2}}";

static cJSON *answer(bool mqtt_healthy) {
        char *text = NULL;
        cJSON *j;

        ck_assert_int_ge(asprintf(&text, answer_json, mqtt_healthy ? "true" : "false"), 0);
        j = cJSON_Parse(text);
        free(text);
        ck_assert_ptr_nonnull(j);
        return j;
}

typedef int (*format_fn)(const cJSON *answer, FILE *f);

static char *render(const cJSON *j, format_fn fn, int64_t now_ms) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(fn ? fn(j, f) : status_format_text(j, now_ms, f), 0);
        fclose(f);
        return buf;
}

START_TEST(test_health) {
        cJSON *j = answer(true);
        ck_assert_int_eq(status_health(j), 0);
        cJSON_Delete(j);
        j = answer(false);
        ck_assert_int_eq(status_health(j), 1);
        cJSON_Delete(j);
        /* a section of one row that says it is not healthy */
        j = cJSON_Parse("{\"clock\":{\"healthy\":false}}");
        ck_assert_int_eq(status_health(j), 1);
        cJSON_Delete(j);
        j = cJSON_Parse("{}");
        ck_assert_int_eq(status_health(j), 0);
        cJSON_Delete(j);
}
END_TEST

/* Lines that must appear in each format (in this order where it matters to a reader). */
static const struct {
        format_fn fn;
        const char *lines[16];
} expected[] = {
        { NULL,
          { "sensor-collector: DEGRADED\n", "\ndaemon:\n", "  uptime                 1min 5s\n", "\ninputs:\n",
            "  serial:\n", "    readings               12\n", "    last error             -\n",
            "  mqtt: (not healthy)\n", "    last error             reconnecting to \"x\"?, ",
            "(10.5s ago)\n", "  size                   2.0 MiB\n", "  oldest reading         -\n", "\nclock:\n",
            "  synchronized           no\n", "  offset                 250ms\n" } },
        { status_format_prometheus,
          { "# TYPE sensor_collector_input_readings_total counter\n",
            "sensor_collector_input_readings_total{input=\"serial\"} 12\n",
            "sensor_collector_input_readings_total{input=\"mqtt\"} 7\n",
            "# TYPE sensor_collector_input_healthy gauge\n", "sensor_collector_input_healthy{input=\"mqtt\"} 0\n",
            "# TYPE sensor_collector_input_info gauge\n",
            "sensor_collector_input_info{input=\"mqtt\",state=\"degraded\",origin=\"127.0.0.1:1883\"} 1\n",
            "sensor_collector_input_last_error_timestamp_seconds{input=\"mqtt\"} 999999990\n",
            "sensor_collector_store_info{path=\"/var/lib/sensor-collector/\\\\readings\\\"db\\n\"} 1\n",
            "sensor_collector_store_size_bytes 2097152\n", "sensor_collector_daemon_start_timestamp_seconds 1000000000.500000\n",
            "sensor_collector_clock_synchronized 0\n", "# TYPE sensor_collector_clock_steps_total counter\n",
            "sensor_collector_clock_offset_seconds 0.250000\n" } },
        { status_format_openmetrics,
          { "# TYPE sensor_collector_input_readings counter\n",
            "sensor_collector_input_readings_total{input=\"serial\"} 12\n", "# TYPE sensor_collector_input info\n",
            "# TYPE sensor_collector_clock_steps counter\n", "sensor_collector_clock_steps_total 2\n", "# EOF\n" } },
};

START_TEST(test_formats) {
        cJSON *j = answer(false);
        char *out = render(j, expected[_i].fn, 1000000000500);
        const char *at = out;

        for (size_t k = 0; k < ELEMENTSOF(expected[_i].lines) && expected[_i].lines[k]; k++) {
                const char *p = strstr(expected[_i].fn ? out : at, expected[_i].lines[k]);
                ck_assert_msg(p, "format %d lacks '%s':\n%s", _i, expected[_i].lines[k], out);
                if (!expected[_i].fn)
                        at = p;
        }
        /* no null becomes a sample, nothing becomes a sample twice */
        if (expected[_i].fn) {
                ck_assert_msg(!strstr(out, "oldest_reading"), "%s", out);
                ck_assert_msg(!strstr(out, "last_error_timestamp_seconds{input=\"serial\"}"), "%s", out);
                /* an event's text changes: never a label */
                ck_assert_msg(!strstr(out, "last_error=\""), "%s", out);
        }
        if (expected[_i].fn == status_format_openmetrics) {
                ck_assert(strcmp(out + strlen(out) - strlen("# EOF\n"), "# EOF\n") == 0);
                ck_assert_msg(!strstr(out, "# TYPE sensor_collector_input_readings_total"), "%s", out);
        }
        free(out);
        cJSON_Delete(j);
}
END_TEST

/* A section with no rows now (no sensor silent) says so in text, and is no metric at all. */
START_TEST(test_empty_section) {
        cJSON *j = cJSON_Parse("{\"sensors\":{\"watched\":3,\"silent\":0},\"silent_sensors\":{}}");
        char *text = render(j, NULL, 0), *prom = render(j, status_format_prometheus, 0);

        ck_assert_int_eq(status_health(j), 0);
        ck_assert_msg(strstr(text, "\nsilent_sensors:\n  none\n") && strstr(text, "\nsensors:\n  watched                3\n"),
                      "%s", text);
        ck_assert_msg(strstr(prom, "sensor_collector_sensor_watched 3\n") && !strstr(prom, "silent_sensor"), "%s", prom);
        free(text);
        free(prom);
        cJSON_Delete(j);
}
END_TEST

/* A label longer than the usual column widens the row's column, so its values still line up. */
START_TEST(test_long_label_aligned) {
        cJSON *j = cJSON_Parse("{\"clock\":{\"state\":\"trusted\",\"readings_awaiting_correction\":0}}");
        char *text = render(j, NULL, 0);

        ck_assert_msg(strstr(text, "\n  state                        trusted\n") &&
                              strstr(text, "\n  readings awaiting correction 0\n"),
                      "%s", text);
        free(text);
        cJSON_Delete(j);
}
END_TEST

/* A family's samples come together, as both formats require, although rows are visited one by one. */
START_TEST(test_families_contiguous) {
        cJSON *j = answer(true);
        char *out = render(j, status_format_prometheus, 0);
        const char *first = strstr(out, "sensor_collector_input_readings_total{");
        const char *second = strstr(first + 1, "sensor_collector_input_readings_total{");
        const char *between;

        ck_assert_ptr_nonnull(second);
        between = strchr(first, '\n') + 1;
        ck_assert_ptr_eq(between, second);
        free(out);
        cJSON_Delete(j);
}
END_TEST

static Suite *status_format_suite(void) {
        Suite *s = suite_create("status-format");
        TCase *tc = tcase_create("status-format");

        tcase_add_test(tc, test_health);
        tcase_add_loop_test(tc, test_formats, 0, ELEMENTSOF(expected));
        tcase_add_test(tc, test_families_contiguous);
        tcase_add_test(tc, test_empty_section);
        tcase_add_test(tc, test_long_label_aligned);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(status_format_suite());
}
