/* SPDX-License-Identifier: MIT */
/* Unit tests for the sensors sections of the status answer: counts and rows of a real Sensors object on a real store. */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "collector/config.h"
#include "collector/sensors.h"
#include "collector/status-sections.h"
#include "collector/store.h"
#include "testlib.h"

static Config *load(const char *sensors_json) {
        return tl_config_with_sensors(sensors_json);
}

/* A whole bus of sensors with the longest ids falls silent at once (8192, as many as the daemon
 * watches): the counts stay exact, the rows stop at 100, and the answer stays far below
 * STATUS_ANSWER_MAX. */
START_TEST(test_many_silent_bounded) {
        _cleanup_(config_freep) Config *a = load("{ \"stale_after\": 1, \"map\": { \"s*\": { \"expect_every\": 1 } } }");
        _cleanup_(status_server_freep) StatusServer *srv = NULL;
        const SensorEntryConfig *e;
        StoreConfig store_config;
        Task *store_task = NULL, *task = NULL;
        Store *store = NULL;
        Sensors *sensors = NULL;
        sd_event *event = NULL;
        char path[512], sock[512], id[SENSOR_ID_MAX + 1];
        int64_t t0 = tl_now_ms() - 10000;
        const cJSON *rows, *row;
        cJSON *answer = NULL;
        char *text;
        int n = 8192;

        ck_assert_int_ge(sd_event_new(&event), 0);
        tl_store_config_init(&store_config, path, sizeof(path), NULL);
        snprintf(sock, sizeof(sock), "%s/status.sock", tl_tmpdir());
        tl_store_task_start(event, &store_config, &store_task, &store);
        ck_assert_int_eq(sensors_task_new(event, &a->sensors, store, &task, &sensors), 0);
        ck_assert_int_eq(task_start(task), 0);
        for (int i = 0; i < n; i++) {
                memset(id, 'x', SENSOR_ID_MAX);
                id[SENSOR_ID_MAX] = 0;
                snprintf(id, sizeof(id), "s%05d", i);
                id[6] = 'x';          /* keep the full length after the number */
                ck_assert_int_eq(sensors_lookup(sensors, id, t0, &e), 0);
        }
        ck_assert_int_eq(sensors_count(sensors), n);
        ck_assert_int_eq(sensors_check(sensors, t0 + 1000), n);

        ck_assert_int_eq(status_server_new(event, sock, &srv), 0);
        ck_assert_int_eq(status_sections_add_sensors(srv, sensors), 0);
        ck_assert_int_eq(status_sections_add_sensors(srv, sensors), -EEXIST);
        ck_assert_int_eq(status_server_build(srv, &answer), 0);
        ck_assert_int_eq(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(answer, "sensors"), "watched")->valuedouble, n);
        ck_assert_int_eq(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(answer, "sensors"), "silent")->valuedouble, n);
        ck_assert_int_eq(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(answer, "sensors"), "silent_shown")->valuedouble, 100);
        rows = cJSON_GetObjectItemCaseSensitive(answer, "silent_sensors");
        ck_assert_int_eq(cJSON_GetArraySize(rows), 100);
        /* in the order watched: the first sensors */
        row = rows->child;
        ck_assert_uint_eq(strlen(row->string), SENSOR_ID_MAX);
        ck_assert(strncmp(row->string, "s00000x", 7) == 0);
        ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(row, "map_entry")->valuestring, "s*");
        ck_assert(cJSON_GetObjectItemCaseSensitive(row, "last_seen_timestamp_seconds")->valuedouble == (double) t0 / 1000.0);
        ck_assert(cJSON_GetObjectItemCaseSensitive(row, "silent_for_seconds")->valuedouble >= 10.0);
        ck_assert(cJSON_GetObjectItemCaseSensitive(row, "expect_every_seconds")->valuedouble == 1.0);
        text = cJSON_PrintUnformatted(answer);
        ck_assert_msg(strlen(text) < STATUS_ANSWER_MAX / 4, "answer of %zu bytes", strlen(text));
        free(text);
        cJSON_Delete(answer);

        srv = status_server_free(srv);
        tl_task_stop_free(task);
        tl_task_stop_free(store_task);
        sd_event_unref(event);
}
END_TEST

static Suite *sections_suite(void) {
        Suite *s = suite_create("status-sections");
        TCase *tc = tcase_create("sensors");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_many_silent_bounded);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(sections_suite());
}
