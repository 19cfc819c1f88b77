/* SPDX-License-Identifier: MIT */
/* SIGHUP end to end: the real daemon reading a pty and a real broker reloads its file, good or bad, and loses nothing. */
#include <check.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "collector/macro.h"
#include "testlib.h"

typedef struct Ctx {
        const char *dir;
        TlPty pty;
        TlBroker broker;
        TlDaemon d;
        char db[400];
        int64_t serial_sent;
        int64_t mqtt_sent;
        int64_t other_stored;         /* readings of other sensors, written by the test itself */
} Ctx;

/* The configuration with both inputs; level is the log level, extra_serial extra members of
 * "serial" (each after a comma, may be ""), extra_mqtt_topic a second topic (may be ""), sensors
 * the value of "sensors" (NULL: none). Caller frees. */
static char *make_config_map(Ctx *c, const char *level, const char *extra_serial, const char *device_suffix,
                             const char *sensors) {
        char *s = NULL;

        ck_assert_int_ge(asprintf(&s,
                                  "{\n"
                                  "  \"serial\": { \"device\": \"%s%s\", \"format\": \"kv\"%s },\n"
                                  "  \"mqtt\": { \"host\": \"127.0.0.1\", \"port\": %d, \"client_id\": \"sc-reload-gw\",\n"
                                  "            \"topics\": [ { \"filter\": \"gh/+sensor/+metric\", \"format\": \"value\" } ] },\n"
                                  "  \"store\": { \"path\": \"%s\", \"commit_interval_ms\": 10 },\n"
                                  "  \"log\": { \"level\": \"%s\" },\n"
                                  "  \"supervisor\": { \"stop_timeout\": 5, \"status_interval\": 0.2 },\n"
                                  "  \"sensors\": %s\n"
                                  "}\n",
                                  c->pty.device, device_suffix, extra_serial, c->broker.port, c->db, level,
                                  sensors ? sensors : "{}"),
                         0);
        return s;
}

static char *make_config(Ctx *c, const char *level, const char *extra_serial, const char *device_suffix) {
        return make_config_map(c, level, extra_serial, device_suffix, NULL);
}

static void ctx_start(Ctx *c, const char *level) {
        _cleanup_free_ char *json = NULL;

        memset(c, 0, sizeof(*c));
        c->dir = tl_tmpdir();
        snprintf(c->db, sizeof(c->db), "%s/readings.db", c->dir);
        tl_pty_start(&c->pty, c->dir);
        tl_broker_start(&c->broker, c->dir, NULL);
        json = make_config(c, level, "", "");
        tl_daemon_start_ready(&c->d, c->dir, json, NULL, NULL, 10000);
}

/* Replaces the file in one step (a new file renamed over it), as an editor or a configuration
 * tool should: a SIGHUP still pending from before may be handled at any moment, and must not
 * read a half-written file. */
static void write_config(Ctx *c, const char *json) {
        char path[512];

        tl_write_file(c->dir, "config.json.new", json);
        snprintf(path, sizeof(path), "%s/config.json.new", c->dir);
        ck_assert_int_eq(rename(path, c->d.config), 0);
}

static void send_serial(Ctx *c, int n) {
        char line[64];

        for (int i = 0; i < n; i++) {
                snprintf(line, sizeof(line), "sensor=s1 seq=%" PRId64 "\n", c->serial_sent++);
                tl_pty_write(&c->pty, line, strlen(line));
        }
}

static void send_mqtt(Ctx *c) {
        char value[32];

        snprintf(value, sizeof(value), "%" PRId64, c->mqtt_sent++);
        tl_mqtt_publish_once(c->broker.port, "gh/m1/seq", value);
}

static int64_t count_in(const char *text, const char *needle) {
        int64_t n = 0;

        for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
                n++;
        return n;
}

static void dump(Ctx *c);

static int64_t count_log(Ctx *c, const char *needle) {
        char *log = tl_daemon_log(&c->d);
        int64_t n = count_in(log, needle);

        free(log);
        return n;
}

/* The daemon's log and datagrams on stderr: too long for a Check message. */
static void dump(Ctx *c) {
        char *log = tl_daemon_log(&c->d);

        tl_notify_drain(&c->d.notify);
        fprintf(stderr, "---- daemon log:\n%s---- notify:\n%s----\n", log, c->d.notify.log);
        free(log);
}

static void assert_log(Ctx *c, const char *needle, bool present) {
        char *log = tl_daemon_log(&c->d);
        bool found = strstr(log, needle) != NULL;

        free(log);
        if (found != present)
                dump(c);
        ck_assert_msg(found == present, "'%s' %s in the daemon log", needle, present ? "missing" : "unexpected");
}

static bool log_has_level_change(void *userdata) {
        return count_log(userdata, "Log level changed from info to debug.") > 0;
}

static uint64_t monotonic_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000ULL;
}

/* The first RELOADING=1 from off on whose MONOTONIC_USEC= is at least since, and the READY=1
 * after it; false while they are not both there. */
static bool find_reload(const char *log, uint64_t since, uint64_t *ret_stamp, const char **ret_ready) {
        static const char tag[] = "RELOADING=1\nMONOTONIC_USEC=";

        for (const char *p = log; (p = strstr(p, tag)); p++) {
                uint64_t stamp;

                if (sscanf(p + strlen(tag), "%" SCNu64, &stamp) != 1 || stamp < since)
                        continue;
                *ret_stamp = stamp;
                *ret_ready = strstr(p, "READY=1");
                return *ret_ready != NULL;
        }
        return false;
}

/* Sends SIGHUP and waits for the reload's READY=1. Checks the protocol: RELOADING=1 first, in
 * one datagram with MONOTONIC_USEC= taken between the signal and the answer, then READY=1.
 * Signals sent before without waiting may still be answered: their reloads began before this
 * one's stamp, or read the same file. Returns the offset in the notify log where this reload's
 * datagrams may begin. */
static size_t reload(Ctx *c) {
        size_t off;
        uint64_t before, after, stamp = 0;
        const char *ready = NULL;
        int64_t deadline = tl_now_ms() + 10000;

        tl_notify_drain(&c->d.notify);
        off = c->d.notify.len;
        before = monotonic_usec();
        ck_assert_int_eq(kill(c->d.pid, SIGHUP), 0);
        for (;;) {
                tl_notify_drain(&c->d.notify);
                if (find_reload(c->d.notify.log + off, before, &stamp, &ready))
                        break;
                if (tl_now_ms() > deadline) {
                        dump(c);
                        ck_abort_msg("no RELOADING=1 with MONOTONIC_USEC= and then READY=1 after SIGHUP");
                }
                tl_sleep_ms(10);
        }
        after = monotonic_usec();
        ck_assert_msg(stamp >= before && stamp <= after, "MONOTONIC_USEC=%" PRIu64 " not within [%" PRIu64 ", %" PRIu64 "]",
                      stamp, before, after);
        return off;
}

/* Every reading sent so far is stored, each exactly once. */
static void wait_all_stored(Ctx *c) {
        const char *serial = "SELECT count(DISTINCT value) FROM readings_view WHERE sensor = 's1'";
        const char *mqtt = "SELECT count(DISTINCT value) FROM readings_view WHERE sensor = 'm1'";
        const char *all = "SELECT count(*) FROM readings";
        int64_t all_want = c->serial_sent + c->mqtt_sent + c->other_stored;

        ck_assert_msg(tl_wait_sql_equals(c->db, serial, c->serial_sent, 10000), "serial: %" PRId64 " of %" PRId64 " stored",
                      tl_sql_int(c->db, serial), c->serial_sent);
        ck_assert_msg(tl_wait_sql_equals(c->db, mqtt, c->mqtt_sent, 10000), "mqtt: %" PRId64 " of %" PRId64 " stored",
                      tl_sql_int(c->db, mqtt), c->mqtt_sent);
        ck_assert_msg(tl_wait_sql_equals(c->db, all, all_want, 10000), "readings: %" PRId64 ", want %" PRId64,
                      tl_sql_int(c->db, all), all_want);
}

static void stop_ok(Ctx *c) {
        int status;

        kill(c->d.pid, SIGTERM);
        status = tl_daemon_wait(&c->d, 10000);
        if (status != 0)
                dump(c);
        ck_assert_msg(status == 0, "exit status %d after SIGTERM", status);
}

/* The last STATUS= in the notify log from offset off on (a copy; caller frees), or NULL. */
static char *last_status(Ctx *c, size_t off) {
        const char *p = c->d.notify.log + off, *last = NULL;
        size_t n;

        for (; (p = strstr(p, "STATUS=")); p++)
                last = p;
        if (!last)
                return NULL;
        n = strcspn(last, "\n");
        return strndup(last, n);
}

typedef struct StatusWait {
        Ctx *c;
        size_t off;
        char needle[64];
} StatusWait;

/* The last STATUS= since off contains needle. */
static bool status_contains(void *userdata) {
        StatusWait *w = userdata;
        _cleanup_free_ char *status = NULL;

        tl_notify_drain(&w->c->d.notify);
        status = last_status(w->c, w->off);
        return status && strstr(status, w->needle);
}

/* A good reload: the log level takes effect at once, both ways, and nothing else moves. */
START_TEST(test_reload_good_log_level) {
        _cleanup_free_ char *debug = NULL, *warning = NULL, *notice = NULL;
        Ctx c;

        ctx_start(&c, "notice");
        assert_log(&c, "Reloading the configuration", false);

        /* the same file: a reload, but the info lines stay below the level */
        reload(&c);
        ck_assert_int_eq(count_log(&c, "Reloaded the configuration"), 0);

        /* debug: said at once, and the reload's own info line shows */
        debug = make_config(&c, "debug", "", "");
        write_config(&c, debug);
        reload(&c);
        assert_log(&c, "Log level changed from notice to debug.", true);
        ck_assert_int_eq(count_log(&c, "Reloaded the configuration from '"), 1);
        send_serial(&c, 1);
        wait_all_stored(&c);

        /* warning: the change itself is still said (before it takes effect), then silence */
        warning = make_config(&c, "warning", "", "");
        write_config(&c, warning);
        reload(&c);
        assert_log(&c, "Log level changed from debug to warning.", true);
        /* only the reload under debug said it was reloading */
        ck_assert_int_eq(count_log(&c, "Reloading the configuration from '"), 1);
        reload(&c);
        ck_assert_int_eq(count_log(&c, "Reloading the configuration from '"), 1);
        ck_assert_int_eq(count_log(&c, "Reloaded the configuration from '"), 1);

        /* and back up: the level is the file's, not stuck */
        notice = make_config(&c, "notice", "", "");
        write_config(&c, notice);
        reload(&c);
        assert_log(&c, "Log level changed from warning to notice.", true);
        ck_assert_msg(!strstr(c.d.notify.log, "restart needed"), "%s", c.d.notify.log);
        send_serial(&c, 3);
        send_mqtt(&c);
        wait_all_stored(&c);
        stop_ok(&c);
}
END_TEST

/* A bad file: every error logged with its location, the old configuration kept (its log level
 * too), STATUS= says so until the next good reload, and the daemon goes on storing. */
START_TEST(test_reload_bad_keeps_old) {
        _cleanup_free_ char *good = NULL;
        _cleanup_free_ char *status = NULL, *status_later = NULL, *status_good = NULL;
        StatusWait counted = {};
        size_t off;
        Ctx c;

        ctx_start(&c, "info");
        send_serial(&c, 5);
        send_mqtt(&c);
        wait_all_stored(&c);

        write_config(&c, "{ \"serial\": { \"device\": \"/dev/ttyUSB0\", \"baud\": 9601 },\n"
                         "  \"mqtt\": { \"enabled\": false },\n"
                         "  \"log\": { \"level\": \"loud\" },\n"
                         "  \"sensors\": 1 }\n");
        off = reload(&c);
        assert_log(&c, "config.json: /serial/baud: 9601", true);
        assert_log(&c, "config.json: /log/level:", true);
        assert_log(&c, "config.json: /sensors:", true);
        assert_log(&c, "Reload failed: 3 errors in '", true);
        assert_log(&c, "keeping the old configuration", true);
        /* nothing of it applied: not the level, not the restart-only keys */
        assert_log(&c, "needs a restart", false);
        status = last_status(&c, off);
        ck_assert_msg(status && strstr(status, "Running (last reload failed: 3 errors in the configuration, old one kept)"),
                      "STATUS: %s", strna(status));

        /* still ingesting, from both inputs, over the same connection and port */
        send_serial(&c, 20);
        send_mqtt(&c);
        wait_all_stored(&c);
        ck_assert_int_eq(count_log(&c, "Opened serial port"), 1);
        ck_assert_int_eq(count_log(&c, "Reopened serial port"), 0);

        /* the note stays in later STATUS= updates: the one that counts every reading stored */
        snprintf(counted.needle, sizeof(counted.needle), "store: %" PRId64 " readings", c.serial_sent + c.mqtt_sent);
        counted.c = &c;
        counted.off = off;
        ck_assert_msg(tl_wait_until(status_contains, &counted, 10000), "no STATUS= with '%s'", counted.needle);
        status_later = last_status(&c, off);
        ck_assert_msg(status_later && strstr(status_later, "last reload failed"), "STATUS: %s", strna(status_later));

        /* a syntax error: file:line:column */
        write_config(&c, "{ \"serial\": { \"device\": \"/dev/ttyUSB0\" },\n  \"log\": { \"level\" \"info\" } }\n");
        reload(&c);
        assert_log(&c, "config.json:2:", true);
        assert_log(&c, "Reload failed: 1 error in '", true);

        /* the next good reload clears it */
        good = make_config(&c, "info", "", "");
        write_config(&c, good);
        off = reload(&c);
        status_good = last_status(&c, off);
        ck_assert_msg(status_good && strstr(status_good, "STATUS=Running;"), "STATUS: %s", strna(status_good));
        send_serial(&c, 2);
        wait_all_stored(&c);
        stop_ok(&c);
}
END_TEST

/* Keys that need a restart are named and not applied; the rest of the file is applied. */
START_TEST(test_reload_restart_keys) {
        _cleanup_free_ char *moved = NULL, *status = NULL;
        size_t off;
        Ctx c;

        ctx_start(&c, "info");
        moved = make_config(&c, "debug", ", \"baud\": 115200, \"reopen_timeout\": 30", "-elsewhere");
        write_config(&c, moved);
        off = reload(&c);
        assert_log(&c, "warning: Configuration key /serial/device changed: needs a restart, not applied.", true);
        assert_log(&c, "warning: Configuration key /serial/baud changed: needs a restart, not applied.", true);
        assert_log(&c, "warning: Configuration key /serial/reopen_timeout changed: needs a restart, not applied.", true);
        assert_log(&c, "3 keys need a restart: /serial/device, /serial/baud, /serial/reopen_timeout.", true);
        assert_log(&c, "Log level changed from info to debug.", true);
        status = last_status(&c, off);
        ck_assert_msg(status && strstr(status, "(restart needed for /serial/device, /serial/baud, /serial/reopen_timeout)"),
                      "STATUS: %s", strna(status));

        /* the port in use is still the old one: frames written there are stored */
        send_serial(&c, 5);
        send_mqtt(&c);
        wait_all_stored(&c);
        ck_assert_int_eq(count_log(&c, "Opened serial port"), 1);
        ck_assert_int_eq(count_log(&c, "Reopened serial port"), 0);
        stop_ok(&c);
}
END_TEST

/* Reloads while readings flow on both inputs: every reading is stored once, the port is opened
 * once and the broker connected once. */
START_TEST(test_reload_loses_nothing) {
        _cleanup_free_ char *a = NULL, *b = NULL;
        Ctx c;

        ctx_start(&c, "debug");
        a = make_config(&c, "debug", "", "");
        b = make_config(&c, "info", "", "");
        for (int i = 0; i < 20; i++) {
                write_config(&c, i % 2 ? a : b);
                ck_assert_int_eq(kill(c.d.pid, SIGHUP), 0);
                send_serial(&c, 10);
                if (i % 4 == 0)
                        send_mqtt(&c);
                if (i % 5 == 0)
                        reload(&c);
        }
        write_config(&c, a);
        reload(&c);
        wait_all_stored(&c);
        ck_assert_int_eq(count_log(&c, "Opened serial port"), 1);
        ck_assert_int_eq(count_log(&c, "Reopened serial port"), 0);
        ck_assert_int_eq(count_log(&c, "subscribing."), 1);
        assert_log(&c, "Reload failed", false);
        stop_ok(&c);
}
END_TEST

/* A SIGHUP before READY=1 (the port not there yet): the reload happens, but there is no
 * RELOADING=1 and no early READY=1; READY=1 comes when every task runs, as ever. */
START_TEST(test_reload_before_ready) {
        _cleanup_free_ char *json = NULL, *debug = NULL;
        Ctx c;

        memset(&c, 0, sizeof(c));
        c.dir = tl_tmpdir();
        snprintf(c.db, sizeof(c.db), "%s/readings.db", c.dir);
        /* the names tl_pty_start() will give, for a port that is not there yet */
        snprintf(c.pty.link, sizeof(c.pty.link), "%s/dev", c.dir);
        snprintf(c.pty.device, sizeof(c.pty.device), "/dev/../../../../../..%s", c.pty.link);
        tl_broker_start(&c.broker, c.dir, NULL);
        json = make_config(&c, "info", ", \"reopen_timeout\": 30", "");
        tl_daemon_start(&c.d, c.dir, json, NULL, NULL);
        ck_assert_msg(tl_notify_wait(&c.d.notify, "STATUS=Starting", 10000), "%s", c.d.notify.log);

        debug = make_config(&c, "debug", ", \"reopen_timeout\": 30", "");
        write_config(&c, debug);
        ck_assert_int_eq(kill(c.d.pid, SIGHUP), 0);
        ck_assert_msg(tl_wait_until(log_has_level_change, &c, 10000), "no reload before READY=1");
        tl_notify_drain(&c.d.notify);
        ck_assert_msg(!strstr(c.d.notify.log, "RELOADING=1") && !strstr(c.d.notify.log, "READY=1"), "%s",
                      c.d.notify.log);

        tl_pty_start(&c.pty, c.dir);
        ck_assert_msg(tl_notify_wait(&c.d.notify, "READY=1", 40000), "%s", c.d.notify.log);
        ck_assert_msg(!strstr(c.d.notify.log, "RELOADING=1"), "%s", c.d.notify.log);
        send_serial(&c, 3);
        send_mqtt(&c);
        wait_all_stored(&c);
        stop_ok(&c);
}
END_TEST

/* ---- the sensor map ---- */

/* s1 and m1 carry the readings that must not be lost; t1 has a range, gone falls silent before
 * the reload, removed is dropped by it, fresh is added by it; unknown sensors are rejected, so
 * that a removed entry shows. */
#define MAP_BEFORE \
        "{ \"unknown\": \"reject\", \"stale_after\": 2, \"map\": {" \
        " \"s1\": {}, \"m1\": {}, \"t1\": { \"metrics\": { \"temp\": { \"min\": -40, \"max\": 85 } } }," \
        " \"gone\": { \"expect_every\": 0.5 }, \"removed\": {} } }"
#define MAP_AFTER \
        "{ \"unknown\": \"reject\", \"stale_after\": 2, \"map\": {" \
        " \"s1\": {}, \"m1\": {}, \"t1\": { \"metrics\": { \"temp\": { \"min\": -40, \"max\": 30 } } }," \
        " \"gone\": { \"expect_every\": 0.5 }, \"fresh\": { \"expect_every\": 1 } } }"
/* Two errors, each with its place; valid, it would let t1's 50 through again. */
#define MAP_INVALID \
        "{ \"unknown\": \"reject\", \"stale_after\": 2, \"map\": {" \
        " \"s1\": {}, \"m1\": {}, \"t1\": { \"metrics\": { \"temp\": { \"min\": 85, \"max\": -40 } } }," \
        " \"gone\": { \"expect_every\": 0.5 }, \"fresh\": { \"expect_every\": -1 }, \"removed\": {} } }"

static void write_pty(Ctx *c, const char *s) {
        tl_pty_write(&c->pty, s, strlen(s));
}

static void wait_sql_eq(Ctx *c, const char *sql, int64_t want) {
        if (!tl_wait_sql_equals(c->db, sql, want, 10000))
                dump(c);
        ck_assert_msg(tl_sql_int(c->db, sql) == want, "'%s' is %" PRId64 ", not %" PRId64, sql, tl_sql_int(c->db, sql), want);
}

static void wait_log(Ctx *c, const char *needle) {
        if (!tl_daemon_wait_log(&c->d, needle, 15000))
                dump(c);
        ck_assert_msg(count_log(c, needle) > 0, "'%s' never in the daemon log", needle);
}

#define T1_HOT "SELECT count(*) FROM rejects WHERE reason = 'out_of_range' AND raw = CAST('sensor=t1 temp=50' AS BLOB)"
#define REMOVED_REJECTED "SELECT count(*) FROM rejects WHERE reason = 'unknown_sensor' AND CAST(raw AS TEXT) LIKE 'sensor=removed %'"
#define GONE_SILENT "SELECT count(*) FROM events WHERE kind = 'sensor_silent' AND sensor = 'gone'"
#define GONE_BACK "SELECT count(*) FROM events WHERE kind = 'sensor_back' AND sensor = 'gone'"

/* A changed sensor map takes effect at SIGHUP while readings flow: a tighter range rejects, a
 * removed entry is unknown, a new expected sensor falls silent; a sensor silent before stays
 * silent (no "back", no second silence); nothing is lost. An invalid map keeps the one in use. */
START_TEST(test_reload_sensor_map) {
        _cleanup_free_ char *before = NULL, *after = NULL, *invalid = NULL;
        StatusWait both_silent = { .needle = "2 silent: gone, fresh" };
        size_t off;
        Ctx c;

        memset(&c, 0, sizeof(c));
        c.dir = tl_tmpdir();
        snprintf(c.db, sizeof(c.db), "%s/readings.db", c.dir);
        tl_pty_start(&c.pty, c.dir);
        tl_broker_start(&c.broker, c.dir, NULL);
        before = make_config_map(&c, "info", "", "", MAP_BEFORE);
        after = make_config_map(&c, "info", "", "", MAP_AFTER);
        invalid = make_config_map(&c, "info", "", "", MAP_INVALID);
        tl_daemon_start_ready(&c.d, c.dir, before, NULL, NULL, 10000);

        /* Under the old map: 50 is within t1's range, removed is known; gone falls silent. */
        write_pty(&c, "sensor=t1 temp=50\nsensor=removed v=1\nsensor=gone v=1\n");
        c.other_stored += 3;
        send_serial(&c, 5);
        send_mqtt(&c);
        wait_all_stored(&c);
        wait_log(&c, "Sensor 'gone' is silent: nothing for");
        wait_sql_eq(&c, GONE_SILENT, 1);

        /* The new map, with readings in flight around the signal. */
        write_config(&c, after);
        send_serial(&c, 20);
        send_mqtt(&c);
        off = reload(&c);
        /* fresh first: watched from the reload on, it must arrive within its window (2 x 1 s) */
        write_pty(&c, "sensor=fresh v=1\nsensor=t1 temp=50\nsensor=t1 temp=20\nsensor=removed v=2\n");
        assert_log(&c, "Sensor map changed: added fresh; changed t1; removed removed.", true);
        send_serial(&c, 20);
        send_mqtt(&c);
        c.other_stored += 2;
        wait_all_stored(&c);
        wait_sql_eq(&c, T1_HOT, 1);
        wait_sql_eq(&c, REMOVED_REJECTED, 1);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM readings_view WHERE sensor = 'fresh'"), 1);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM readings_view WHERE sensor = 't1'"), 2);

        /* fresh, new in the map, falls silent after its window; by then several silence checks
         * ran under the new map, and gone was neither back nor silent a second time. */
        wait_log(&c, "Sensor 'fresh' is silent: nothing for");
        both_silent.c = &c;
        both_silent.off = off;
        if (!tl_wait_until(status_contains, &both_silent, 10000)) {
                dump(&c);
                ck_abort_msg("no STATUS= with '%s'", both_silent.needle);
        }
        ck_assert_int_eq(count_log(&c, "Sensor 'gone' is back"), 0);
        ck_assert_int_eq(tl_sql_int(c.db, GONE_BACK), 0);
        ck_assert_int_eq(tl_sql_int(c.db, GONE_SILENT), 1);
        ck_assert_int_eq(count_log(&c, "Sensor 'removed' is"), 0);
        assert_log(&c, "Reload failed", false);

        /* An invalid map: every error with its place, the map in use kept: 50 still rejected,
         * removed still unknown, gone and fresh still silent and not back. */
        write_config(&c, invalid);
        reload(&c);
        assert_log(&c, "config.json: /sensors/map/t1/metrics/temp: min 85 is greater than max -40", true);
        assert_log(&c, "config.json: /sensors/map/fresh/expect_every: -1 is out of range (0.1..604800 seconds)", true);
        assert_log(&c, "Reload failed: 2 errors in '", true);
        ck_assert_int_eq(count_log(&c, "Sensor map changed"), 1);
        write_pty(&c, "sensor=t1 temp=50\nsensor=removed v=3\n");
        send_serial(&c, 5);
        send_mqtt(&c);
        wait_all_stored(&c);
        wait_sql_eq(&c, T1_HOT, 2);
        wait_sql_eq(&c, REMOVED_REJECTED, 2);
        ck_assert_int_eq(count_log(&c, "Sensor 'gone' is back"), 0);
        ck_assert_int_eq(count_log(&c, "Sensor 'fresh' is back"), 0);
        ck_assert_int_eq(count_log(&c, "Opened serial port"), 1);
        ck_assert_int_eq(count_log(&c, "Connected to broker"), 1);
        stop_ok(&c);
        ck_assert_int_eq(tl_sql_int(c.db, GONE_BACK), 0);
}
END_TEST

static Suite *reload_suite(void) {
        Suite *s = suite_create("reload");
        TCase *tc = tcase_create("sighup");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_reload_good_log_level);
        tcase_add_test(tc, test_reload_bad_keeps_old);
        tcase_add_test(tc, test_reload_restart_keys);
        tcase_add_test(tc, test_reload_loses_nothing);
        tcase_add_test(tc, test_reload_before_ready);
        tcase_add_test(tc, test_reload_sensor_map);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(reload_suite());
}
