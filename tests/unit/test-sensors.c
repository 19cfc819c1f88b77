/* SPDX-License-Identifier: MIT */
/* Unit tests for the sensor map: pattern matching, silence windows, ranges, lookups, and swapping the map at run time. */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "collector/config.h"
#include "collector/ingest.h"
#include "collector/sensors.h"
#include "collector/store.h"
#include "collector/time-util.h"
#include "testlib.h"

/* ---- pure parts, table-driven ---- */

static const struct {
        const char *pattern, *id;
        bool match;
} patterns[] = {
        { "gh1-*", "gh1-t3", true },
        { "gh1-*", "gh1-", true },
        { "gh1-*", "gh2-t3", false },
        { "gh1-*", "gh1", false },
        { "*-t3", "gh1-t3", true },
        { "*-t3", "gh1-t30", false },
        { "gh?-t3", "gh1-t3", true },
        { "gh?-t3", "gh12-t3", false },
        { "*", "anything", true },
        { "a*b*c", "aXbYc", true },
        { "a*b*c", "aXbYcZ", false },
        { "a*b*c", "abbbc", true },
        { "a**", "a", true },
        { "exact", "exact", true },
        { "exact", "exactly", false },
        { "?", "", false },
};

START_TEST(test_pattern_match) {
        ck_assert_msg(sensor_pattern_match(patterns[_i].pattern, patterns[_i].id) == patterns[_i].match,
                      "'%s' vs '%s'", patterns[_i].pattern, patterns[_i].id);
}
END_TEST

/* expect_every 60 s, stale_after 3: silent from 180 s without a reading on. */
static const struct {
        int64_t last, now;
        uint64_t every_usec;
        unsigned stale_after;
        bool silent;
} silences[] = {
        { 1000000, 1000000 + 179999, 60 * USEC_PER_SEC, 3, false },
        { 1000000, 1000000 + 180000, 60 * USEC_PER_SEC, 3, true },
        { 1000000, 1000000 + 999999999, 0, 3, false },               /* no expect_every: never */
        { 1000000, 1000000 + 1999, 1 * USEC_PER_SEC, 2, false },
        { 1000000, 1000000 + 2000, 1 * USEC_PER_SEC, 2, true },
        { 1000000, 1000000 - 5000, 1 * USEC_PER_SEC, 2, false },     /* clock stepped back */
        { 1000000, 1000000 + 500, 500 * USEC_PER_MSEC, 1, true },
};

START_TEST(test_is_silent) {
        ck_assert_msg(sensor_is_silent(silences[_i].last, silences[_i].every_usec, silences[_i].stale_after,
                                       silences[_i].now) == silences[_i].silent,
                      "case %d", _i);
}
END_TEST

static const struct {
        bool has_min, has_max;
        double min, max, value;
        bool ok;
} ranges[] = {
        { true, true, -40, 85, 21.5, true },
        { true, true, -40, 85, -40, true },
        { true, true, -40, 85, 85, true },
        { true, true, -40, 85, -160, false },
        { true, true, -40, 85, 65535, false },
        { false, true, 0, 5000, -1e300, true },
        { true, false, 0, 0, -0.001, false },
        { false, false, 0, 0, 1e308, true },
};

START_TEST(test_in_range) {
        SensorMetricConfig m = { .name = (char *) "t", .has_min = ranges[_i].has_min, .has_max = ranges[_i].has_max,
                                 .min = ranges[_i].min, .max = ranges[_i].max };

        ck_assert_msg(sensor_metric_in_range(&m, ranges[_i].value) == ranges[_i].ok, "case %d", _i);
}
END_TEST

static const struct {
        int64_t ms;
        const char *text;
} durations[] = {
        { 0, "0.0 s" }, { 1500, "1.5 s" }, { 59999, "59.9 s" }, { 60000, "1 min 0 s" },
        { 3599000, "59 min 59 s" }, { 3600000, "1 h 0 min" }, { 90061000, "1 d 1 h" }, { -5, "0.0 s" },
};

START_TEST(test_format_duration) {
        char buf[48];

        ck_assert_str_eq(sensor_format_duration(buf, sizeof(buf), durations[_i].ms), durations[_i].text);
}
END_TEST

/* A map from JSON through the real config parser. */
static Config *load(const char *sensors_json) {
        return tl_config_with_sensors(sensors_json);
}

START_TEST(test_map_find) {
        _cleanup_(config_freep) Config *c = load("{ \"map\": { \"gh1-*\": { \"expect_every\": 10 },"
                                                 " \"gh1-t3\": { \"expect_every\": 60, \"metrics\": { \"co2\": { \"max\": 5000 } } },"
                                                 " \"gh*\": { } } }");
        const SensorEntryConfig *e;

        /* An exact id wins over an earlier pattern; else the first pattern in file order. */
        e = sensor_map_find(&c->sensors, "gh1-t3");
        ck_assert_str_eq(e->id, "gh1-t3");
        ck_assert_ptr_nonnull(sensor_entry_metric(e, "co2"));
        ck_assert_ptr_null(sensor_entry_metric(e, "temperature"));
        ck_assert_str_eq(sensor_map_find(&c->sensors, "gh1-t4")->id, "gh1-*");
        ck_assert_str_eq(sensor_map_find(&c->sensors, "gh2-t1")->id, "gh*");
        ck_assert_ptr_null(sensor_map_find(&c->sensors, "other"));
        ck_assert_int_eq(c->sensors.stale_after, 3);
        ck_assert_int_eq(c->sensors.unknown, SENSOR_UNKNOWN_STORE);
}
END_TEST

/* ---- the run-time object on a real store ---- */

typedef struct Fixture {
        sd_event *event;
        StoreConfig config;
        char path[512];
        Task *store_task, *task;
        Store *store;
        Sensors *sensors;
} Fixture;

static void fx_init(Fixture *f, const SensorMapConfig *map) {
        memset(f, 0, sizeof(*f));
        ck_assert_int_ge(sd_event_new(&f->event), 0);
        tl_store_config_init(&f->config, f->path, sizeof(f->path), NULL);
        tl_store_task_start(f->event, &f->config, &f->store_task, &f->store);
        ck_assert_int_eq(sensors_task_new(f->event, map, f->store, &f->task, &f->sensors), 0);
        ck_assert_int_eq(task_start(f->task), 0);
        ck_assert_int_eq(task_get_state(f->task), TASK_RUNNING);
}

static void fx_done(Fixture *f) {
        f->task = tl_task_stop_free(f->task);
        f->store_task = tl_task_stop_free(f->store_task);
        f->event = sd_event_unref(f->event);
}

static const SensorInfo *info_of(Fixture *f, const char *id, SensorInfo *buf) {
        for (size_t i = 0; i < sensors_count(f->sensors); i++) {
                ck_assert_int_eq(sensors_get(f->sensors, i, buf), 0);
                if (strcmp(buf->id, id) == 0)
                        return buf;
        }
        return NULL;
}

START_TEST(test_lookup_silence_and_set_map) {
        _cleanup_(config_freep) Config *a = load("{ \"stale_after\": 2, \"unknown\": \"reject\", \"map\": {"
                                                 " \"gh1-t1\": { \"expect_every\": 1 }, \"gh2-*\": { \"expect_every\": 1 } } }");
        _cleanup_(config_freep) Config *b = load("{ \"stale_after\": 2, \"map\": {"
                                                 " \"gh2-*\": { \"expect_every\": 10 }, \"gh3-x\": { \"expect_every\": 1 } } }");
        const SensorEntryConfig *e;
        SensorInfo info;
        char status[256];
        Fixture f;
        int64_t t0 = 1800000000000;

        fx_init(&f, &a->sensors);
        /* gh1-t1 is watched before it is ever seen; gh2-* sensors once seen. */
        ck_assert_int_eq(sensors_count(f.sensors), 1);
        ck_assert_int_eq(sensors_lookup(f.sensors, "gh1-t1", t0, &e), 0);
        ck_assert_str_eq(e->id, "gh1-t1");
        ck_assert_int_eq(sensors_lookup(f.sensors, "gh2-a", t0, &e), 0);
        ck_assert_str_eq(e->id, "gh2-*");
        ck_assert_int_eq(sensors_lookup(f.sensors, "stranger", t0, &e), -ENOENT);
        ck_assert_ptr_null(e);
        ck_assert_int_eq(sensors_lookup(f.sensors, "stranger", t0, &e), -ENOENT); /* from the cache */
        ck_assert_int_eq(sensors_count(f.sensors), 2);

        /* gh1-t1 keeps reporting, gh2-a stops: silent once, at 2 x 1 s. */
        ck_assert_int_eq(sensors_lookup(f.sensors, "gh1-t1", t0 + 1500, &e), 0);
        ck_assert_int_eq(sensors_check(f.sensors, t0 + 1999), 0);
        ck_assert_int_eq(sensors_check(f.sensors, t0 + 2000), 1);
        ck_assert_int_eq(sensors_check(f.sensors, t0 + 2500), 0);
        ck_assert_int_eq(sensors_count_silent(f.sensors), 1);
        sensors_format_status(f.sensors, status, sizeof(status));
        ck_assert_str_eq(status, "2 watched, 1 silent: gh2-a");
        ck_assert_ptr_nonnull(info_of(&f, "gh2-a", &info));
        ck_assert(info.silent);
        ck_assert_int_eq(info.last_seen_ms, t0);

        /* A new map: gh2-a keeps its state (still silent, same last seen) under its new entry,
         * gh1-t1 is no longer mapped, gh3-x is watched from now on, unknown ones are stored. */
        ck_assert_int_eq(sensors_set_map(f.sensors, &b->sensors), 0);
        ck_assert_ptr_eq(sensors_get_map(f.sensors), &b->sensors);
        ck_assert_int_eq(sensors_count_silent(f.sensors), 1);
        ck_assert_ptr_nonnull(info_of(&f, "gh2-a", &info));
        ck_assert(info.silent);
        ck_assert_int_eq(info.last_seen_ms, t0);
        ck_assert_int_eq(info.expect_every_usec, 10 * USEC_PER_SEC);
        ck_assert_ptr_null(info_of(&f, "gh1-t1", &info));
        ck_assert_ptr_nonnull(info_of(&f, "gh3-x", &info));
        ck_assert_int_eq(sensors_lookup(f.sensors, "stranger", t0, &e), 0);
        ck_assert_ptr_null(e);

        /* Back: one event with the gap, and silent no more. */
        ck_assert_int_eq(sensors_lookup(f.sensors, "gh2-a", t0 + 7000, &e), 0);
        ck_assert_int_eq(sensors_count_silent(f.sensors), 0);
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM events WHERE kind = 'sensor_silent' AND sensor = 'gh2-a'"), 1);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT end_ts - start_ts FROM events WHERE kind = 'sensor_back' AND sensor = 'gh2-a'"),
                         7000);
        fx_done(&f);
}
END_TEST

/* The unit of a sensor's metric for upstream: no bookkeeping, whether the sensor is watched,
 * matched by a pattern and not seen yet, unknown, or under a new map. */
START_TEST(test_unit) {
        _cleanup_(config_freep) Config *a = load("{ \"map\": { \"gh1-t1\": { \"expect_every\": 10, \"metrics\": {"
                                                 " \"temperature\": { \"unit\": \"°C\" }, \"rh\": { \"max\": 100 } } },"
                                                 " \"co2-*\": { \"metrics\": { \"co2\": { \"unit\": \"ppm\" } } } } }");
        _cleanup_(config_freep) Config *b = load("{ \"map\": { \"co2-*\": { \"metrics\": { \"co2\": { \"unit\": \"ppm (v2)\" } } } } }");
        Fixture f;

        fx_init(&f, &a->sensors);
        ck_assert_int_eq(sensors_count(f.sensors), 1);
        ck_assert_str_eq(sensors_unit(f.sensors, "gh1-t1", "temperature"), "°C");
        ck_assert_ptr_null(sensors_unit(f.sensors, "gh1-t1", "rh"));       /* a metric without a unit */
        ck_assert_ptr_null(sensors_unit(f.sensors, "gh1-t1", "pressure")); /* a metric the entry does not name */
        ck_assert_str_eq(sensors_unit(f.sensors, "co2-7", "co2"), "ppm");  /* by pattern, never seen */
        ck_assert_ptr_null(sensors_unit(f.sensors, "stranger", "co2"));
        ck_assert_ptr_null(sensors_unit(f.sensors, "stranger", "co2"));    /* from the cache */
        ck_assert_ptr_null(sensors_unit(NULL, "gh1-t1", "temperature"));
        /* Asking is not seeing: nothing new is watched, nothing is silent or back. */
        ck_assert_int_eq(sensors_count(f.sensors), 1);
        ck_assert_int_eq(sensors_count_silent(f.sensors), 0);

        ck_assert_int_eq(sensors_set_map(f.sensors, &b->sensors), 0);
        ck_assert_str_eq(sensors_unit(f.sensors, "co2-7", "co2"), "ppm (v2)");
        ck_assert_ptr_null(sensors_unit(f.sensors, "gh1-t1", "temperature"));
        fx_done(&f);
}
END_TEST

/* Out-of-range values: one event per burst per minute, the rest counted into the next one. */
START_TEST(test_out_of_range_bursts) {
        _cleanup_(config_freep) Config *a = load("{ \"map\": { \"s\": { \"metrics\": { \"t\": { \"min\": 0, \"max\": 10 } } } } }");
        const SensorEntryConfig *e;
        Fixture f;
        int64_t t0 = 1800000000000;

        fx_init(&f, &a->sensors);
        ck_assert_int_eq(sensors_lookup(f.sensors, "s", t0, &e), 0);
        for (int i = 0; i < 5; i++)
                ck_assert_int_eq(sensors_out_of_range(f.sensors, "s", &e->metrics[0], 99, t0 + i * 1000), 0);
        ck_assert_int_eq(sensors_out_of_range(f.sensors, "s", &e->metrics[0], -1, t0 + 61000), 0);
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM events WHERE kind = 'out_of_range'"), 2);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count FROM events WHERE kind = 'out_of_range' ORDER BY id DESC LIMIT 1"), 5);
        fx_done(&f);
}
END_TEST

/* Many sensors silent at once (an input went down): each gets its event, STATUS= names them. */
START_TEST(test_many_silent) {
        _cleanup_(config_freep) Config *a = load("{ \"stale_after\": 1, \"map\": { \"s*\": { \"expect_every\": 1 } } }");
        const SensorEntryConfig *e;
        char id[16], status[64];
        Fixture f;
        int64_t t0 = 1800000000000;

        fx_init(&f, &a->sensors);
        for (int i = 0; i < 25; i++) {
                snprintf(id, sizeof(id), "s%02d", i);
                ck_assert_int_eq(sensors_lookup(f.sensors, id, t0, &e), 0);
        }
        ck_assert_int_eq(sensors_check(f.sensors, t0 + 1000), 25);
        ck_assert_int_eq(sensors_count_silent(f.sensors), 25);
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM events WHERE kind = 'sensor_silent'"), 25);
        /* A short buffer is cut with "...", never overrun. */
        sensors_format_status(f.sensors, status, sizeof(status));
        ck_assert_int_eq(strlen(status), sizeof(status) - 1);
        ck_assert_str_eq(status + sizeof(status) - 4, "...");
        ck_assert(strncmp(status, "25 watched, 25 silent: s00, s01", 31) == 0);
        fx_done(&f);
}
END_TEST

/* A metric expected on its own: silent while the sensor goes on, back with its gap, its state
 * kept by sensors_set_map(). */
START_TEST(test_metric_silence) {
        _cleanup_(config_freep) Config *a = load("{ \"stale_after\": 2, \"map\": { \"s\": { \"expect_every\": 1,"
                                                 " \"metrics\": { \"co2\": { \"expect_every\": 5 }, \"t\": { \"max\": 50 } } } } }");
        _cleanup_(config_freep) Config *b = load("{ \"stale_after\": 2, \"map\": { \"s\": { \"expect_every\": 1,"
                                                 " \"metrics\": { \"t\": { \"max\": 60 }, \"co2\": { \"expect_every\": 5 } } } } }");
        const SensorEntryConfig *e;
        char status[128];
        SensorInfo info;
        Fixture f;
        int64_t t0 = 1800000000000;

        fx_init(&f, &a->sensors);
        ck_assert_int_eq(sensors_lookup(f.sensors, "s", t0, &e), 0);
        ck_assert_int_eq(sensors_metric_seen(f.sensors, sensor_entry_metric(e, "co2"), t0), 0);
        for (int64_t t = t0 + 1000; t <= t0 + 10000; t += 1000) {
                ck_assert_int_eq(sensors_lookup(f.sensors, "s", t, &e), 0);
                ck_assert_int_eq(sensors_metric_seen(f.sensors, sensor_entry_metric(e, "t"), t), 0);
                ck_assert_int_eq(sensors_check(f.sensors, t), t == t0 + 10000 ? 1 : 0);
        }
        sensors_format_status(f.sensors, status, sizeof(status));
        ck_assert_str_eq(status, "1 watched, 1 silent: s/co2");
        ck_assert_ptr_nonnull(info_of(&f, "s", &info));
        ck_assert(!info.silent);
        ck_assert_int_eq(info.n_metrics_silent, 1);

        /* The new map lists the metrics in another order: co2's silence and last-seen go along. */
        ck_assert_int_eq(sensors_set_map(f.sensors, &b->sensors), 0);
        ck_assert_int_eq(sensors_count_silent(f.sensors), 1);
        ck_assert_int_eq(sensors_lookup(f.sensors, "s", t0 + 12000, &e), 0);
        ck_assert_str_eq(e->metrics[1].name, "co2");
        ck_assert_int_eq(sensors_metric_seen(f.sensors, &e->metrics[1], t0 + 12000), 0);
        ck_assert_int_eq(sensors_count_silent(f.sensors), 0);
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT end_ts - start_ts FROM events WHERE kind = 'sensor_back' AND subject = 'co2'"),
                         12000);
        fx_done(&f);
}
END_TEST

/* Events age out with the readings (store.retention_days). */
START_TEST(test_events_retention) {
        sd_event *e = NULL;
        char path[512];
        StoreConfig config;
        Task *t;
        Store *store;
        int64_t now = wall_clock_ms();

        ck_assert_int_ge(sd_event_new(&e), 0);
        tl_store_config_init(&config, path, sizeof(path), NULL);
        config.retention_days = 1;
        tl_store_task_start(e, &config, &t, &store);
        ck_assert_int_eq(store_append_event(store, &(StoreEvent){ .kind = STORE_EVENT_INPUT_DOWN, .ts_ms = now - 2 * 86400000LL,
                                                                  .subject = "serial" }), 0);
        ck_assert_int_eq(store_append_event(store, &(StoreEvent){ .kind = STORE_EVENT_INPUT_UP, .ts_ms = now,
                                                                  .subject = "serial" }), 0);
        ck_assert_int_ge(store_run_retention(store), 0);
        ck_assert_int_eq(tl_sql_int(path, "SELECT count(*) FROM events"), 1);
        ck_assert_int_eq(tl_sql_int(path, "SELECT count(*) FROM events WHERE kind = 'input_up'"), 1);
        /* A kind the store does not know is a caller's bug: refused, the store fails. */
        ck_assert_int_eq(store_append_event(store, &(StoreEvent){ .kind = _STORE_EVENT_MAX }), -EINVAL);
        ck_assert_str_eq(store_event_kind_to_string(STORE_EVENT_DAEMON_DOWN), "daemon_down");
        ck_assert_int_eq(store_event_kind_from_string("out_of_range"), STORE_EVENT_OUT_OF_RANGE);
        ck_assert_int_eq(store_event_kind_from_string("nope"), -EINVAL);
        tl_task_stop_free(t);
        sd_event_unref(e);
}
END_TEST

/* Through ingest: out_of_range for one metric, the others stored; unknown_sensor rejected. */
START_TEST(test_ingest_with_map) {
        static const IngestInput input = { .task = "serial", .source = READING_SOURCE_SERIAL, .origin_field = "DEVICE",
                                           .reject_noun = "frame from", .suppressed_noun = "frames from" };
        _cleanup_(config_freep) Config *a = load("{ \"unknown\": \"reject\", \"map\": { \"s\": { \"metrics\": {"
                                                 " \"t\": { \"min\": 0, \"max\": 10 } } } } }");
        _cleanup_(ingest_freep) Ingest *in = NULL;
        Frame fr = { .sensor = "s", .n_metrics = 2 };
        Frame unknown = { .sensor = "u", .n_metrics = 1 };
        Fixture f;

        snprintf(fr.metrics[0].name, sizeof(fr.metrics[0].name), "t");
        fr.metrics[0].value = 11;
        snprintf(fr.metrics[1].name, sizeof(fr.metrics[1].name), "h");
        fr.metrics[1].value = 50;
        snprintf(unknown.metrics[0].name, sizeof(unknown.metrics[0].name), "t");
        fx_init(&f, &a->sensors);
        ck_assert_int_eq(ingest_new(f.event, f.store, NULL, &input, &in), 0);
        ingest_set_sensors(in, f.sensors);
        ck_assert_int_eq(ingest_frame_raw(in, &fr, "/dev/x", 1800000000000, "raw line", 8), 0);
        ck_assert_int_eq(ingest_frame(in, &unknown, "/dev/x", 1800000000000), 0);
        ck_assert_int_eq(ingest_get_counters(in)->readings, 1);
        ck_assert_int_eq(ingest_get_counters(in)->rejects, 2);
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM rejects WHERE reason = 'out_of_range' AND raw = CAST('raw line' AS BLOB)"), 1);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM rejects WHERE reason = 'unknown_sensor' AND raw = CAST('sensor=u t=0' AS BLOB)"), 1);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings_view WHERE metric = 'h'"), 1);
        in = ingest_free(in);
        fx_done(&f);
}
END_TEST

static Suite *sensors_suite(void) {
        Suite *s = suite_create("sensors");
        TCase *tc = tcase_create("pure");

        tcase_add_loop_test(tc, test_pattern_match, 0, ELEMENTSOF(patterns));
        tcase_add_loop_test(tc, test_is_silent, 0, ELEMENTSOF(silences));
        tcase_add_loop_test(tc, test_in_range, 0, ELEMENTSOF(ranges));
        tcase_add_loop_test(tc, test_format_duration, 0, ELEMENTSOF(durations));
        tcase_add_test(tc, test_map_find);
        suite_add_tcase(s, tc);

        tc = tcase_create("store");
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_lookup_silence_and_set_map);
        tcase_add_test(tc, test_unit);
        tcase_add_test(tc, test_out_of_range_bursts);
        tcase_add_test(tc, test_many_silent);
        tcase_add_test(tc, test_events_retention);
        tcase_add_test(tc, test_metric_silence);
        tcase_add_test(tc, test_ingest_with_map);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(sensors_suite());
}
