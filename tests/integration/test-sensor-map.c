/* SPDX-License-Identifier: MIT */
/* The sensor map end to end: silence and return, ranges, unknown sensors and the events table, read back with query. */
#include <check.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "collector/macro.h"
#include "collector/store.h"
#include "testlib.h"

typedef struct Ctx {
        const char *dir;              /* the store and the pty live here */
        TlPty pty;
        TlDaemon d;
        char db[400];
} Ctx;

/* Starts the daemon reading the pty (kv frames) with the sensor map sensors_json (the value of
 * "sensors"), and MQTT when mqtt_json is not NULL (the value of "mqtt"). Each start gets a
 * directory of its own for config, log and notify socket; the store is shared. */
static void daemon_start(Ctx *c, const char *sensors_json, const char *mqtt_json) {
        char json[8192], serial[512];

        if (mqtt_json)
                snprintf(serial, sizeof(serial), "{ \"enabled\": false }");
        else
                snprintf(serial, sizeof(serial), "{ \"device\": \"%s\", \"format\": \"kv\", \"reopen_timeout\": 60 }",
                         c->pty.device);
        snprintf(c->db, sizeof(c->db), "%s/readings.db", c->dir);
        snprintf(json, sizeof(json),
                 "{\n"
                 "  \"serial\": %s,\n"
                 "  \"mqtt\": %s,\n"
                 "  \"store\": { \"path\": \"%s\", \"commit_interval_ms\": 10 },\n"
                 "  \"log\": { \"level\": \"debug\" },\n"
                 "  \"supervisor\": { \"status_interval\": 0.1, \"stop_timeout\": 5 },\n"
                 "  \"sensors\": %s\n"
                 "}\n",
                 serial, mqtt_json ? mqtt_json : "{ \"enabled\": false }", c->db,
                 sensors_json);
        tl_daemon_start(&c->d, tl_tmpdir(), json, NULL, NULL);
        tl_daemon_expect_ready(&c->d, 8000);
}

static void ctx_init(Ctx *c, bool pty) {
        memset(c, 0, sizeof(*c));
        c->dir = tl_tmpdir();
        if (pty)
                tl_pty_start(&c->pty, c->dir);
}

static void write_str(Ctx *c, const char *s) {
        tl_pty_write(&c->pty, s, strlen(s));
}

static void wait_sql(Ctx *c, const char *sql, int64_t want, int timeout_ms) {
        tl_daemon_expect_sql(&c->d, c->db, sql, want, true, timeout_ms);
}

static void wait_log(Ctx *c, const char *needle, int timeout_ms) {
        tl_daemon_expect_log(&c->d, needle, timeout_ms);
}

static void stop_daemon_ok(Ctx *c) {
        tl_daemon_stop_ok(&c->d, 8000);
}

/* Runs `sensor-collector query --db DB` with more arguments; returns its output (caller frees). */
static char *query(Ctx *c, const char *a1, const char *a2, const char *a3, const char *a4) {
        char *argv[] = { SC_BINARY, "query", "--db", c->db, (char *) a1, (char *) a2, (char *) a3, (char *) a4, NULL };
        char *out = NULL;

        ck_assert_int_eq(tl_run(argv, NULL, &out, 10000), 0);
        return out;
}

static void assert_contains(const char *haystack, const char *needle) {
        ck_assert_msg(strstr(haystack, needle), "'%s' not in:\n%s", needle, haystack);
}

/* ---- silence and return, driven by the simulator ---- */

static pid_t simulate(const char *pty, const char *extra1, const char *extra2) {
        char *argv[] = { SC_BUILD_DIR "/tools/sc-simulate", "--serial", (char *) pty, "--serial-format", "kv",
                         "--sensors", "3", "--rate", "12", "--metrics", "temperature", "--quiet",
                         (char *) extra1, (char *) extra2, NULL };
        return tl_spawn(argv, NULL, NULL, NULL);
}

START_TEST(test_silence_and_return) {
        _cleanup_free_ char *events = NULL, *gaps = NULL, *gaps_json = NULL, *csv = NULL;
        int64_t t0;
        pid_t sim;
        Ctx c;

        ctx_init(&c, true);
        /* Each of 3 sensors sends 4 frames a second; silent after 3 x 1 s (a margin of 12 missed
         * frames, so that a stall of a busy machine does not silence the others). */
        daemon_start(&c, "{ \"stale_after\": 3, \"map\": { \"gh1-t*\": { \"expect_every\": 1 } } }", NULL);
        sim = simulate(c.pty.sim, "--silence", "gh1-t02:1.5:5");
        t0 = tl_now_ms();

        wait_log(&c, "Sensor 'gh1-t02' is silent: nothing for", 15000);
        ck_assert_msg(tl_notify_wait(&c.d.notify, "sensors: 3 watched, 1 silent: gh1-t02", 5000), "%s", c.d.notify.log);
        wait_log(&c, "Sensor 'gh1-t02' is back after a gap of", 20000);
        ck_assert_msg(tl_notify_wait(&c.d.notify, "sensors: 3 watched, none silent", 5000), "%s", c.d.notify.log);
        /* Silence is not a failure: the daemon kept running and the others were never silent. */
        ck_assert(tl_now_ms() - t0 >= 5000);
        tl_kill(sim, SIGTERM);
        wait_sql(&c, "SELECT count(*) FROM events WHERE kind = 'sensor_back' AND sensor = 'gh1-t02'", 1, 5000);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM events WHERE kind = 'sensor_silent' AND sensor = 'gh1-t02'"), 1);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM events WHERE kind = 'sensor_silent' AND sensor <> 'gh1-t02'"), 0);
        /* The gap: from the last reading before it to the first after, at least the silence. */
        ck_assert_int_ge(tl_sql_int(c.db, "SELECT end_ts - start_ts FROM events WHERE kind = 'sensor_back'"), 4500);
        stop_daemon_ok(&c);

        events = query(&c, "--events", "--sensor", "gh1-t02", NULL);
        assert_contains(events, "sensor_silent");
        assert_contains(events, "sensor_back");
        gaps = query(&c, "--gaps", NULL, NULL, NULL);
        assert_contains(gaps, "gh1-t02");
        ck_assert_msg(!strstr(gaps, "gh1-t01"), "%s", gaps);
        gaps_json = query(&c, "--gaps", "--format", "json", NULL);
        assert_contains(gaps_json, "{\"sensor\":\"gh1-t02\",\"start\":");
        assert_contains(gaps_json, "\"ongoing\":false");
        csv = query(&c, "--events", "--format", "csv", NULL);
        assert_contains(csv, "ts,time,kind,sensor,subject,start,end,duration_ms,count,detail\n");
        assert_contains(csv, ",sensor_back,gh1-t02,");
}
END_TEST

/* ---- ranges, patterns and the unknown policy ---- */

START_TEST(test_ranges_and_unknown) {
        _cleanup_free_ char *events = NULL;
        Ctx c;

        ctx_init(&c, true);
        daemon_start(&c,
                     "{ \"unknown\": \"reject\", \"map\": {"
                     "  \"gh1-t3\": { \"metrics\": { \"temperature\": { \"min\": -40, \"max\": 85, \"unit\": \"°C\" } } },"
                     "  \"gh2-*\": { \"metrics\": { \"co2\": { \"min\": 0, \"max\": 5000 } } } } }",
                     NULL);
        write_str(&c, "sensor=gh1-t3 temperature=-160 humidity=55\n"   /* temperature rejected, humidity stored */
                      "sensor=gh1-t3 temperature=21.5\n"               /* stored */
                      "sensor=gh2-c7 co2=65535 temperature=20\n"       /* pattern: co2 rejected */
                      "sensor=gh2-c8 co2=800\n"                        /* pattern: stored */
                      "sensor=stranger temperature=20\n");             /* unknown: rejected */
        wait_sql(&c, "SELECT count(*) FROM rejects", 3, 5000);
        wait_sql(&c, "SELECT count(*) FROM readings", 4, 5000);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM rejects WHERE reason = 'out_of_range'"), 2);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM rejects WHERE reason = 'unknown_sensor' AND "
                                          "raw = CAST('sensor=stranger temperature=20' AS BLOB)"), 1);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM rejects WHERE reason = 'out_of_range' AND "
                                          "raw = CAST('sensor=gh1-t3 temperature=-160 humidity=55' AS BLOB)"), 1);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM readings_view WHERE sensor = 'gh1-t3' AND metric = 'humidity'"), 1);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM readings_view WHERE sensor = 'gh1-t3' AND metric = 'temperature'"), 1);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM readings_view WHERE sensor = 'gh2-c7' AND metric = 'temperature'"), 1);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM readings_view WHERE sensor = 'stranger'"), 0);
        wait_sql(&c, "SELECT count(*) FROM events WHERE kind = 'out_of_range'", 2, 5000);
        wait_log(&c, "out_of_range", 5000);
        stop_daemon_ok(&c);

        events = query(&c, "--events", "--sensor", "gh1-t3", NULL);
        assert_contains(events, "out_of_range");
        assert_contains(events, "-160 outside [-40, 85] °C");
        ck_assert_msg(!strstr(events, "gh2-c7"), "%s", events);
}
END_TEST

/* ---- a metric that stops while its sensor goes on ---- */

static bool log_lacks_yet(Ctx *c, const char *needle) {
        return !tl_daemon_log_has(&c->d, needle);
}

START_TEST(test_metric_silence) {
        _cleanup_free_ char *gaps = NULL;
        int64_t deadline;
        Ctx c;

        ctx_init(&c, true);
        daemon_start(&c,
                     "{ \"stale_after\": 2, \"map\": { \"gh1-t3\": { \"expect_every\": 1.5,"
                     " \"metrics\": { \"co2\": { \"expect_every\": 0.3 } } } } }",
                     NULL);
        write_str(&c, "sensor=gh1-t3 temperature=20 co2=600\n");
        /* The CO2 probe dies, the temperature goes on every 100 ms. */
        deadline = tl_now_ms() + 15000;
        while (log_lacks_yet(&c, "Sensor 'gh1-t3' is silent on 'co2'") && tl_now_ms() < deadline) {
                write_str(&c, "sensor=gh1-t3 temperature=20\n");
                tl_sleep_ms(100);
        }
        wait_log(&c, "Sensor 'gh1-t3' is silent on 'co2': nothing for", 1000);
        ck_assert_msg(tl_notify_wait(&c.d.notify, "1 silent: gh1-t3/co2", 5000), "%s", c.d.notify.log);
        write_str(&c, "sensor=gh1-t3 temperature=20 co2=610\n");
        wait_log(&c, "Sensor 'gh1-t3' delivers 'co2' again after a gap of", 5000);
        stop_daemon_ok(&c);
        /* The sensor itself never fell silent. */
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM events WHERE kind = 'sensor_silent' AND subject IS NULL"), 0);
        gaps = query(&c, "--gaps", "--format", "csv", NULL);
        assert_contains(gaps, "\ngh1-t3/co2,");
}
END_TEST

/* ---- silence survives a restart; downtime and a SIGKILL are recorded ---- */

START_TEST(test_silence_across_restart) {
        _cleanup_free_ char *events = NULL;
        const char *map = "{ \"stale_after\": 2, \"map\": { \"gh1-t1\": { \"expect_every\": 0.5 }, "
                          "\"gh1-t2\": { \"expect_every\": 0.5 } } }";
        int64_t t0;
        Ctx c;

        ctx_init(&c, true);
        daemon_start(&c, map, NULL);
        write_str(&c, "sensor=gh1-t1 v=1\nsensor=gh1-t2 v=1\n");
        wait_sql(&c, "SELECT count(*) FROM readings", 2, 5000);
        stop_daemon_ok(&c);

        /* Down for longer than the silence window: both are silent at once on start, reported
         * from their last reading in the store, not forgiven by the restart. */
        tl_sleep_ms(1500);
        t0 = tl_now_ms();
        daemon_start(&c, map, NULL);
        ck_assert_msg(tl_notify_wait(&c.d.notify, "2 silent: gh1-t1, gh1-t2", 5000), "%s", c.d.notify.log);
        wait_log(&c, "Sensor 'gh1-t1' is silent: nothing for", 1000);
        /* At once: well within one window of the start, not after one. */
        ck_assert_int_lt(tl_now_ms() - t0, 5000);
        wait_sql(&c, "SELECT count(*) FROM events WHERE kind = 'daemon_down' AND detail = 'stopped' AND end_ts - start_ts >= 1500",
                 1, 5000);
        write_str(&c, "sensor=gh1-t1 v=2\n");
        wait_log(&c, "Sensor 'gh1-t1' is back after a gap of", 5000);

        /* A SIGKILL: no orderly stop is noted, so the next start says so. */
        kill(c.d.pid, SIGKILL);
        ck_assert_int_eq(tl_daemon_wait(&c.d, 5000), 128 + SIGKILL);
        daemon_start(&c, map, NULL);
        wait_sql(&c, "SELECT count(*) FROM events WHERE kind = 'daemon_down' AND detail = 'not stopped cleanly'", 1, 5000);
        stop_daemon_ok(&c);

        events = query(&c, "--events", "--format", "json", NULL);
        assert_contains(events, "\"kind\":\"daemon_down\"");
        assert_contains(events, "\"detail\":\"not stopped cleanly\"");
        _cleanup_free_ char *gaps = query(&c, "--gaps", "--sensor", "gh1-t1", NULL);
        assert_contains(gaps, "daemon_down");
}
END_TEST

/* ---- input outages ---- */

START_TEST(test_serial_unplug) {
        _cleanup_free_ char *events = NULL;
        Ctx c;

        ctx_init(&c, true);
        daemon_start(&c, "{ \"map\": { \"gh1-t1\": { \"expect_every\": 60 } } }", NULL);
        write_str(&c, "sensor=gh1-t1 v=1\n");
        wait_sql(&c, "SELECT count(*) FROM readings", 1, 5000);
        tl_pty_stop(&c.pty);
        wait_sql(&c, "SELECT count(*) FROM events WHERE kind = 'input_down' AND subject = 'serial'", 1, 10000);
        tl_sleep_ms(300); /* an outage of a measurable length */
        tl_pty_start(&c.pty, c.dir);
        wait_sql(&c, "SELECT count(*) FROM events WHERE kind = 'input_up' AND subject = 'serial' AND detail = 'port gone' "
                     "AND end_ts - start_ts >= 300", 1, 10000);
        stop_daemon_ok(&c);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM events WHERE kind = 'input_down'"), 1);
        events = query(&c, "--events", NULL, NULL, NULL);
        assert_contains(events, "input_down");
        assert_contains(events, "input_up");
}
END_TEST

START_TEST(test_broker_restart) {
        _cleanup_free_ char *events = NULL;
        char mqtt[512];
        TlBroker b = { 0 };
        Ctx c;

        ctx_init(&c, false);
        tl_broker_start(&b, c.dir, NULL);
        snprintf(mqtt, sizeof(mqtt),
                 "{ \"host\": \"127.0.0.1\", \"port\": %d, \"client_id\": \"sc-test-sensors\", \"keepalive\": 5, "
                 "\"max_offline\": 60, \"topics\": [ { \"filter\": \"gh/+sensor/state\", \"qos\": 1 } ] }",
                 b.port);
        daemon_start(&c, "{ \"map\": { \"gh1-t1\": { \"expect_every\": 60 } } }", mqtt);
        tl_broker_stop(&b);
        wait_sql(&c, "SELECT count(*) FROM events WHERE kind = 'input_down' AND subject = 'mqtt'", 1, 10000);
        tl_broker_start(&b, c.dir, NULL);
        wait_sql(&c, "SELECT count(*) FROM events WHERE kind = 'input_up' AND subject = 'mqtt' AND end_ts > start_ts", 1,
                 20000);
        stop_daemon_ok(&c);
        tl_broker_stop(&b);
        events = query(&c, "--events", "--format", "csv", NULL);
        assert_contains(events, ",input_down,,mqtt,");
        assert_contains(events, ",input_up,,mqtt,");
}
END_TEST

static Suite *sensors_suite(void) {
        Suite *s = suite_create("sensors");
        TCase *tc = tcase_create("end to end");

        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_silence_and_return);
        tcase_add_test(tc, test_ranges_and_unknown);
        tcase_add_test(tc, test_metric_silence);
        tcase_add_test(tc, test_silence_across_restart);
        tcase_add_test(tc, test_serial_unplug);
        tcase_add_test(tc, test_broker_restart);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(sensors_suite());
}
