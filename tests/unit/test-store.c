/* SPDX-License-Identifier: MIT */
/* Unit tests of the store on real SQLite files: round trips, batching, dedup, schema, retention, failures. */
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "collector/retention-pace.h"
#include "collector/store-reader.h"
#include "collector/store.h"
#include "testlib.h"

#define DAY_MS ((int64_t) 24 * 3600 * 1000)

typedef struct Fixture {
        sd_event *event;
        StoreConfig config;
        char path[512];
        Task *task;
        Store *store;
        unsigned failures;        /* transitions to TASK_FAILED seen by the listener */
} Fixture;

static int64_t wall_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_state(Task *t, TaskState old, void *userdata) {
        Fixture *f = userdata;

        (void) old;
        if (task_get_state(t) == TASK_FAILED)
                f->failures++;
}

static void fx_init(Fixture *f, const char *dir) {
        memset(f, 0, sizeof(*f));
        ck_assert_int_ge(sd_event_new(&f->event), 0);
        tl_store_config_init(&f->config, f->path, sizeof(f->path), dir);
}

/* Creates and starts the task; returns its state after start. */
static TaskState fx_start(Fixture *f) {
        ck_assert_int_eq(store_task_new(f->event, &f->config, &f->task, &f->store), 0);
        task_set_listener(f->task, on_state, f);
        (void) task_start(f->task);
        return task_get_state(f->task);
}

static void fx_stop(Fixture *f) {
        if (f->task) {
                ck_assert_int_eq(task_stop(f->task), 0);
                f->task = task_free(f->task);
                f->store = NULL;
        }
}

static void fx_done(Fixture *f) {
        fx_stop(f);
        f->event = sd_event_unref(f->event);
}

static Reading reading(const char *sensor, const char *metric, double value, int64_t ts, bool sensor_ts) {
        return (Reading){
                .sensor = sensor,
                .metric = metric,
                .value = value,
                .ts_ms = ts,
                .sensor_ts = sensor_ts,
                .received_ms = sensor_ts ? ts + 5 : ts,
                .source = READING_SOURCE_SERIAL,
                .origin = "/dev/ttyUSB0",
        };
}

static int64_t sql_int(Fixture *f, const char *sql) {
        return tl_sql_int(f->path, sql);
}

/* Runs the loop until cond or timeout; returns whether cond held. */
static bool run_loop_until(Fixture *f, bool (*cond)(Fixture *f), int timeout_ms) {
        int64_t deadline = tl_now_ms() + timeout_ms;

        while (!cond(f)) {
                if (tl_now_ms() >= deadline)
                        return false;
                ck_assert_int_ge(sd_event_run(f->event, 10 * 1000), 0);
        }
        return true;
}

/* Executes SQL on a file with a plain connection, for fixtures. */
static void sql_exec(const char *path, const char *sql) {
        sqlite3 *db = NULL;
        char *err = NULL;

        ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
        ck_assert_msg(sqlite3_exec(db, sql, NULL, NULL, &err) == SQLITE_OK, "%s: %s", sql, err);
        sqlite3_close(db);
}

/* ---- round trip ---- */

typedef struct Collected {
        size_t n;
        StoredReading rows[16];
        char strings[16][4][128];
        int64_t ids[4096];
        size_t n_ids;
} Collected;

static int collect_reading(const StoredReading *row, void *userdata) {
        Collected *c = userdata;

        if (c->n < ELEMENTSOF(c->rows)) {
                c->rows[c->n] = *row;
                snprintf(c->strings[c->n][0], 128, "%s", row->sensor);
                snprintf(c->strings[c->n][1], 128, "%s", row->metric);
                snprintf(c->strings[c->n][2], 128, "%s", row->source);
                snprintf(c->strings[c->n][3], 128, "%s", row->origin);
                c->rows[c->n].sensor = c->strings[c->n][0];
                c->rows[c->n].metric = c->strings[c->n][1];
                c->rows[c->n].source = c->strings[c->n][2];
                c->rows[c->n].origin = c->strings[c->n][3];
        }
        c->n++;
        return 0;
}

START_TEST(test_roundtrip) {
        Fixture f;
        _cleanup_(store_reader_freep) StoreReader *reader = NULL;
        Collected got = {};
        StoreFilter all = STORE_FILTER_ALL;
        int64_t t0 = wall_ms();
        Reading r1 = reading("gh1-t3", "temperature", 23.4, t0 - 1000, true);
        Reading r2 = reading("gh1-t3", "humidity", 61.25, t0 - 500, false);
        Reading r3 = reading("gh2-co", "co2", -1e300, t0, true);
        StoreStats stats;
        char status[128];

        r3.source = READING_SOURCE_MQTT;
        r3.origin = "greenhouse/gh2-co/co2";

        fx_init(&f, NULL);
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        ck_assert_int_eq(store_append(f.store, &r1), 0);
        ck_assert_int_eq(store_append(f.store, &r2), 0);
        ck_assert_int_eq(store_append(f.store, &r3), 0);
        ck_assert_int_eq(store_commit(f.store), 0);

        ck_assert_int_eq(store_reader_open(f.path, &reader), 0);
        ck_assert_int_eq(store_reader_readings(reader, &all, collect_reading, &got), 0);
        ck_assert_uint_eq(got.n, 3);
        ck_assert_str_eq(got.rows[0].sensor, "gh1-t3");
        ck_assert_str_eq(got.rows[0].metric, "temperature");
        ck_assert(got.rows[0].value == 23.4);
        ck_assert_int_eq(got.rows[0].ts_ms, t0 - 1000);
        ck_assert(got.rows[0].sensor_ts);
        ck_assert_int_eq(got.rows[0].received_ms, t0 - 995);
        ck_assert_str_eq(got.rows[0].source, "serial");
        ck_assert_str_eq(got.rows[0].origin, "/dev/ttyUSB0");
        ck_assert_str_eq(got.rows[1].metric, "humidity");
        ck_assert(got.rows[1].value == 61.25);
        ck_assert(!got.rows[1].sensor_ts);
        ck_assert_str_eq(got.rows[2].sensor, "gh2-co");
        ck_assert(got.rows[2].value == -1e300);
        ck_assert_str_eq(got.rows[2].source, "mqtt");
        ck_assert_str_eq(got.rows[2].origin, "greenhouse/gh2-co/co2");

        /* Names are interned once each. */
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM sensors"), 2);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM metrics"), 3);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM origins"), 2);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings_view WHERE sensor = 'gh1-t3'"), 2);

        /* Schema identity. */
        ck_assert_int_eq(sql_int(&f, "PRAGMA application_id"), STORE_APPLICATION_ID);
        ck_assert_int_eq(sql_int(&f, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
        ck_assert_int_eq(sql_int(&f, "PRAGMA auto_vacuum"), 2);
        ck_assert_int_eq(sql_int(&f, "SELECT value FROM meta WHERE key = 'schema_version'"), STORE_SCHEMA_VERSION);
        ck_assert_int_ge(sql_int(&f, "SELECT value FROM meta WHERE key = 'created'"), t0 - 1000);

        store_get_stats(f.store, &stats);
        ck_assert_uint_eq(stats.readings, 3);
        ck_assert_uint_eq(stats.commits, 1);
        task_format_status(f.task, status, sizeof(status));
        ck_assert_str_eq(status, "3 readings, 0 rejects");

        fx_done(&f);
}
END_TEST

/* A caller bug (NaN) must not leave an input silently stopped: the open batch is kept and the
 * store fails with the cause. */
START_TEST(test_invalid_reading_fails_loudly) {
        Fixture f;
        int64_t t0 = wall_ms();
        Reading good = reading("s", "m", 1, t0, true);
        Reading bad = reading("s", "m", NAN, t0 + 1, true);

        fx_init(&f, NULL);
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        ck_assert_int_eq(store_append(f.store, &good), 0);
        ck_assert_int_eq(store_append(f.store, &bad), -EINVAL);
        ck_assert_int_eq(task_get_state(f.task), TASK_FAILED);
        ck_assert_int_eq(task_get_error(f.task), -EINVAL);
        ck_assert_msg(strstr(task_get_cause(f.task), "Refused an invalid reading (sensor 's', metric 'm', value nan"),
                      "%s", task_get_cause(f.task));
        ck_assert_int_eq(store_append(f.store, &good), -ESHUTDOWN);
        ck_assert_uint_eq(f.failures, 1);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings"), 1);
        fx_done(&f);
}
END_TEST

typedef struct CollectedRejects {
        size_t n;
        int64_t received[8];
        char source[8][16];
        char origin[8][64];
        char reason[8][32];
        unsigned char raw[8][64];
        size_t raw_size[8];
} CollectedRejects;

static int collect_reject(const StoredReject *row, void *userdata) {
        CollectedRejects *c = userdata;

        ck_assert_uint_lt(c->n, 8);
        ck_assert_uint_le(row->raw_size, 64);
        c->received[c->n] = row->received_ms;
        snprintf(c->source[c->n], 16, "%s", row->source);
        snprintf(c->origin[c->n], 64, "%s", row->origin);
        snprintf(c->reason[c->n], 32, "%s", row->reason);
        memcpy(c->raw[c->n], row->raw, row->raw_size);
        c->raw_size[c->n] = row->raw_size;
        c->n++;
        return 0;
}

START_TEST(test_rejects_roundtrip) {
        static const unsigned char raw1[] = { 's', 'e', 0, 0xff, '\n', 'x' };
        Fixture f;
        _cleanup_(store_reader_freep) StoreReader *reader = NULL;
        CollectedRejects got = {};
        StoreFilter all = STORE_FILTER_ALL;
        int64_t t0 = wall_ms();
        Reject j1 = { .received_ms = t0, .source = READING_SOURCE_SERIAL, .origin = "/dev/ttyS1",
                      .raw = raw1, .raw_size = sizeof(raw1), .reason = FRAME_REJECT_BAD_JSON };
        Reject j2 = { .received_ms = t0 + 1, .source = READING_SOURCE_MQTT, .origin = "greenhouse/x",
                      .raw = NULL, .raw_size = 0, .reason = FRAME_REJECT_NOT_FINITE };
        char status[128];

        fx_init(&f, NULL);
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        ck_assert_int_eq(store_append_reject(f.store, &j1), 0);
        ck_assert_int_eq(store_append_reject(f.store, &j2), 0);
        fx_stop(&f);   /* stop commits */

        ck_assert_int_eq(store_reader_open(f.path, &reader), 0);
        ck_assert_int_eq(store_reader_rejects(reader, &all, collect_reject, &got), 0);
        ck_assert_uint_eq(got.n, 2);
        ck_assert_int_eq(got.received[0], t0);
        ck_assert_str_eq(got.source[0], "serial");
        ck_assert_str_eq(got.origin[0], "/dev/ttyS1");
        ck_assert_str_eq(got.reason[0], frame_reject_to_string(FRAME_REJECT_BAD_JSON));
        ck_assert_uint_eq(got.raw_size[0], sizeof(raw1));
        ck_assert_mem_eq(got.raw[0], raw1, sizeof(raw1));
        ck_assert_str_eq(got.source[1], "mqtt");
        ck_assert_str_eq(got.reason[1], frame_reject_to_string(FRAME_REJECT_NOT_FINITE));
        ck_assert_uint_eq(got.raw_size[1], 0);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM rejects WHERE raw IS NOT NULL"), 2);

        /* Sensor filters do not apply to rejects. */
        StoreFilter bad = STORE_FILTER_ALL;
        bad.sensor = "x";
        ck_assert_int_eq(store_reader_rejects(reader, &bad, collect_reject, &got), -EINVAL);
        fx_done(&f);

        fx_init(&f, NULL);
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        ck_assert_int_eq(store_append_reject(f.store, &j1), 0);
        /* Counted once committed. */
        task_format_status(f.task, status, sizeof(status));
        ck_assert_str_eq(status, "0 readings, 0 rejects");
        ck_assert_int_eq(store_commit(f.store), 0);
        task_format_status(f.task, status, sizeof(status));
        ck_assert_str_eq(status, "0 readings, 1 rejects");
        fx_done(&f);
}
END_TEST

/* ---- batching ---- */

START_TEST(test_batch_on_size) {
        Fixture f;
        StoreStats stats;
        int64_t t0 = wall_ms();

        fx_init(&f, NULL);
        f.config.commit_max_rows = 10;
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        for (int i = 0; i < 9; i++) {
                Reading r = reading("s", "m", i, t0 + i, true);
                ck_assert_int_eq(store_append(f.store, &r), 0);
        }
        /* Another connection sees nothing before the commit... */
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings"), 0);
        Reading r = reading("s", "m", 9, t0 + 9, true);
        ck_assert_int_eq(store_append(f.store, &r), 0);
        /* ...and all ten at the tenth row, without the loop running. */
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings"), 10);
        for (int i = 10; i < 25; i++) {
                Reading q = reading("s", "m", i, t0 + i, true);
                ck_assert_int_eq(store_append(f.store, &q), 0);
        }
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings"), 20);
        store_get_stats(f.store, &stats);
        ck_assert_uint_eq(stats.commits, 2);
        fx_stop(&f);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings"), 25);
        fx_done(&f);
}
END_TEST

static bool committed_one(Fixture *f) {
        return sql_int(f, "SELECT count(*) FROM readings") == 1;
}

START_TEST(test_batch_on_time) {
        Fixture f;
        int64_t t0 = wall_ms(), start, elapsed;
        StoreStats stats;

        fx_init(&f, NULL);
        f.config.commit_interval_ms = 100;
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        Reading r = reading("s", "m", 1, t0, true);
        start = tl_now_ms();
        ck_assert_int_eq(store_append(f.store, &r), 0);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings"), 0);
        ck_assert(run_loop_until(&f, committed_one, 2000));
        elapsed = tl_now_ms() - start;
        ck_assert_int_ge(elapsed, 95);
        ck_assert_int_lt(elapsed, 600);
        store_get_stats(f.store, &stats);
        ck_assert_uint_eq(stats.commits, 1);

        /* The timer re-arms for the next batch. */
        Reading r2 = reading("s", "m", 2, t0 + 1, true);
        ck_assert_int_eq(store_append(f.store, &r2), 0);
        for (int64_t end = tl_now_ms() + 300; tl_now_ms() < end;)
                ck_assert_int_ge(sd_event_run(f.event, 10 * 1000), 0);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings"), 2);
        fx_done(&f);
}
END_TEST

static bool committed_twice(Fixture *f) {
        StoreStats stats;

        store_get_stats(f->store, &stats);
        return stats.commits >= 2;
}

/* Whether another connection can take the write lock right now (no waiting). */
static bool can_write(const char *path) {
        sqlite3 *db = NULL;
        int rc;

        ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
        sqlite3_busy_timeout(db, 0);
        rc = sqlite3_exec(db, "BEGIN IMMEDIATE; COMMIT;", NULL, NULL, NULL);
        sqlite3_close(db);
        return rc == SQLITE_OK;
}

/* A batch of nothing but duplicates still holds BEGIN IMMEDIATE: its commit timer must run, or
 * the write lock stays taken until some later reading is new. */
START_TEST(test_batch_of_duplicates_commits_on_time) {
        Fixture f;
        int64_t t0 = wall_ms();
        StoreStats stats;

        fx_init(&f, NULL);
        f.config.commit_interval_ms = 50;
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        Reading r = reading("s", "m", 1, t0, true);
        ck_assert_int_eq(store_append(f.store, &r), 0);
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert(can_write(f.path));

        ck_assert_int_eq(store_append(f.store, &r), 0);
        ck_assert(!can_write(f.path));   /* the batch is open */
        ck_assert(run_loop_until(&f, committed_twice, 2000));
        ck_assert(can_write(f.path));
        store_get_stats(f.store, &stats);
        ck_assert_uint_eq(stats.duplicates, 1);
        ck_assert_int_eq(task_get_state(f.task), TASK_RUNNING);
        fx_done(&f);
}
END_TEST

START_TEST(test_stop_commits_and_is_idempotent) {
        Fixture f;
        int64_t t0 = wall_ms();

        fx_init(&f, NULL);
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        for (int i = 0; i < 100; i++) {
                Reading r = reading("s", i % 2 ? "a" : "b", i, t0 + i, false);
                ck_assert_int_eq(store_append(f.store, &r), 0);
        }
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings"), 0);
        ck_assert_int_eq(task_stop(f.task), 0);
        ck_assert_int_eq(task_get_state(f.task), TASK_STOPPED);
        /* WAL checkpointed and removed by the last close (before any reader opens it again). */
        char wal[600];
        snprintf(wal, sizeof(wal), "%s-wal", f.path);
        ck_assert_int_ne(access(wal, F_OK), 0);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings"), 100);
        ck_assert_int_eq(task_stop(f.task), 0);
        Reading r = reading("s", "m", 1, t0, false);
        ck_assert_int_eq(store_append(f.store, &r), -ESHUTDOWN);
        ck_assert_int_eq(store_commit(f.store), -ESHUTDOWN);
        ck_assert_uint_eq(f.failures, 0);
        fx_done(&f);
}
END_TEST

START_TEST(test_dedup) {
        Fixture f;
        int64_t t0 = wall_ms();
        StoreStats stats;
        char status[128];

        fx_init(&f, NULL);
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        Reading a = reading("s1", "temp", 20.0, t0, true);
        Reading b = reading("s1", "temp", 21.0, t0, true);       /* same key, repeated frame */
        Reading c = reading("s1", "hum", 50.0, t0, true);        /* other metric */
        Reading d = reading("s2", "temp", 20.0, t0, true);       /* other sensor */
        Reading e = reading("s1", "temp", 22.0, t0, false);      /* receipt time: never a duplicate */
        Reading g = reading("s1", "temp", 22.0, t0, false);
        ck_assert_int_eq(store_append(f.store, &a), 0);
        ck_assert_int_eq(store_append(f.store, &b), 0);
        ck_assert_int_eq(store_append(f.store, &c), 0);
        ck_assert_int_eq(store_append(f.store, &d), 0);
        ck_assert_int_eq(store_append(f.store, &e), 0);
        ck_assert_int_eq(store_append(f.store, &g), 0);
        ck_assert_int_eq(store_commit(f.store), 0);
        /* Also across commits and restarts. */
        ck_assert_int_eq(store_append(f.store, &a), 0);
        fx_stop(&f);
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        ck_assert_int_eq(store_append(f.store, &b), 0);
        ck_assert_int_eq(store_commit(f.store), 0);
        store_get_stats(f.store, &stats);
        ck_assert_uint_eq(stats.readings, 0);
        ck_assert_uint_eq(stats.duplicates, 1);
        task_format_status(f.task, status, sizeof(status));
        ck_assert_str_eq(status, "0 readings, 0 rejects, 1 duplicates");
        fx_done(&f);

        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings"), 5);
        /* The first value wins. */
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings_view WHERE sensor='s1' AND metric='temp' AND value=20.0"), 1);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings_view WHERE sensor='s1' AND metric='temp' AND value=21.0"), 0);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings_view WHERE sensor='s1' AND metric='temp' AND value=22.0"), 2);
}
END_TEST

/* ---- schema ---- */

/* The v1 schema as released, written by hand as an old gateway would have it. */
static const char schema_v1[] =
        "PRAGMA user_version = 1;"
        "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value) WITHOUT ROWID;"
        "INSERT INTO meta VALUES ('schema_version', 1), ('created', 1700000000000);"
        "CREATE TABLE sources (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
        "INSERT INTO sources (id, name) VALUES (0, 'serial'), (1, 'mqtt');"
        "CREATE TABLE sensors (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
        "CREATE TABLE metrics (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
        "CREATE TABLE origins (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
        "CREATE TABLE readings (id INTEGER PRIMARY KEY, sensor_id INTEGER NOT NULL, metric_id INTEGER NOT NULL,"
        "  ts INTEGER NOT NULL, sensor_ts INTEGER CHECK (sensor_ts IS NULL OR sensor_ts = 1), value REAL NOT NULL,"
        "  received INTEGER NOT NULL, source_id INTEGER NOT NULL, origin_id INTEGER NOT NULL);"
        "CREATE UNIQUE INDEX readings_key ON readings (sensor_id, metric_id, ts, sensor_ts);"
        "CREATE TABLE rejects (id INTEGER PRIMARY KEY, received INTEGER NOT NULL, source_id INTEGER NOT NULL,"
        "  origin_id INTEGER NOT NULL, reason TEXT NOT NULL, raw BLOB NOT NULL);"
        "INSERT INTO sensors VALUES (1, 'old-sensor'); INSERT INTO metrics VALUES (1, 'temp');"
        "INSERT INTO origins VALUES (1, '/dev/ttyUSB0');"
        "INSERT INTO readings VALUES (1, 1, 1, 1700000000000, 1, 19.5, 1700000000001, 0, 1);";

START_TEST(test_migration_from_v1) {
        Fixture f;
        int64_t t0 = wall_ms();

        char id[64];

        fx_init(&f, NULL);
        snprintf(id, sizeof(id), "PRAGMA application_id = %d;", STORE_APPLICATION_ID);
        sql_exec(f.path, id);
        sql_exec(f.path, schema_v1);
        ck_assert_int_eq(sql_int(&f, "PRAGMA user_version"), 1);

        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        /* Old data is kept, and the same key dedups against it. */
        Reading old = reading("old-sensor", "temp", 99, 1700000000000, true);
        Reading r = reading("old-sensor", "temp", 20, t0, true);
        ck_assert_int_eq(store_append(f.store, &old), 0);
        ck_assert_int_eq(store_append(f.store, &r), 0);
        fx_done(&f);

        ck_assert_int_eq(tl_sql_int(f.path, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT value FROM meta WHERE key = 'schema_version'"), STORE_SCHEMA_VERSION);
        ck_assert_int_ge(tl_sql_int(f.path, "SELECT value FROM meta WHERE key = 'migrated'"), t0);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT value FROM meta WHERE key = 'created'"), 1700000000000);
        /* The index on ts of v2 is gone again: the time summary serves time ranges, and covers
         * the old row and the new one (each within its block's range). */
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM sqlite_schema WHERE name = 'readings_ts'"), 0);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings r JOIN readings_blocks b ON b.block = r.id >> 10"
                                            " WHERE r.ts BETWEEN b.min_ts AND b.max_ts"), 2);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings_view"), 2);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings_view WHERE value = 19.5 AND sensor = 'old-sensor'"), 1);
}
END_TEST

START_TEST(test_reopen_keeps_data) {
        Fixture f;
        int64_t t0 = wall_ms();

        fx_init(&f, NULL);
        for (int round = 0; round < 3; round++) {
                ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
                Reading r = reading("s", "m", round, t0 + round, true);
                ck_assert_int_eq(store_append(f.store, &r), 0);
                fx_stop(&f);
        }
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings"), 3);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM sensors"), 1);
        ck_assert_int_eq(sql_int(&f, "SELECT value FROM meta WHERE key = 'created'") > 0, 1);
        fx_done(&f);
}
END_TEST

static void expect_start_failure(Fixture *f, int error, const char *needle) {
        ck_assert_int_eq(fx_start(f), TASK_FAILED);
        ck_assert_int_eq(task_get_error(f->task), error);
        ck_assert_ptr_nonnull(task_get_cause(f->task));
        ck_assert_msg(strstr(task_get_cause(f->task), needle), "cause '%s' lacks '%s'", task_get_cause(f->task), needle);
        ck_assert_uint_eq(f->failures, 1);
        Reading r = reading("s", "m", 1, 1, false);
        ck_assert_int_eq(store_append(f->store, &r), -ESHUTDOWN);
        ck_assert_int_eq(task_stop(f->task), 0);
        ck_assert_int_eq(task_get_state(f->task), TASK_FAILED);
}

START_TEST(test_foreign_database) {
        Fixture f;

        fx_init(&f, NULL);
        sql_exec(f.path, "CREATE TABLE plants (name TEXT); INSERT INTO plants VALUES ('basil');");
        expect_start_failure(&f, -EMEDIUMTYPE, f.path);
        ck_assert_str_eq(strstr(task_get_cause(f.task), "not a sensor-collector store") ? "yes" : "no", "yes");
        fx_done(&f);
        /* Untouched. */
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM plants"), 1);
        ck_assert_int_eq(tl_sql_int(f.path, "PRAGMA application_id"), 0);

        /* Another application's id, even without tables. */
        fx_init(&f, NULL);
        sql_exec(f.path, "PRAGMA application_id = 42;");
        expect_start_failure(&f, -EMEDIUMTYPE, f.path);
        fx_done(&f);
}
END_TEST

START_TEST(test_not_a_database) {
        Fixture f;
        char junk[8192];

        fx_init(&f, NULL);
        memset(junk, 'x', sizeof(junk));
        junk[sizeof(junk) - 1] = 0;
        {
                FILE *fp = fopen(f.path, "we");
                ck_assert_ptr_nonnull(fp);
                fputs(junk, fp);
                fclose(fp);
        }
        expect_start_failure(&f, -EBADMSG, f.path);
        fx_done(&f);
}
END_TEST

START_TEST(test_newer_schema) {
        Fixture f;

        char sql[128];

        fx_init(&f, NULL);
        snprintf(sql, sizeof(sql), "PRAGMA application_id = %d; PRAGMA user_version = 99; CREATE TABLE future (x);",
                 STORE_APPLICATION_ID);
        sql_exec(f.path, sql);
        expect_start_failure(&f, -EPROTONOSUPPORT, "schema v99");
        fx_done(&f);
}
END_TEST

START_TEST(test_corrupt_database) {
        Fixture f;
        int64_t t0 = wall_ms(), pages;
        char junk[4096];
        int fd;

        fx_init(&f, NULL);
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        for (int i = 0; i < 5000; i++) {
                Reading r = reading(i % 2 ? "a" : "b", "m", i, t0 + i, true);
                ck_assert_int_eq(store_append(f.store, &r), 0);
        }
        fx_stop(&f);
        pages = sql_int(&f, "PRAGMA page_count");
        ck_assert_int_gt(pages, 20);

        /* Scribble over a run of b-tree pages in the middle (not the header page). */
        memset(junk, 0x5a, sizeof(junk));
        fd = open(f.path, O_WRONLY | O_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        for (int64_t p = pages / 2; p < pages / 2 + 4; p++)
                ck_assert_int_eq(pwrite(fd, junk, sizeof(junk), (off_t) (p * 4096 + 16)), (ssize_t) sizeof(junk));
        close(fd);

        expect_start_failure(&f, -EUCLEAN, f.path);
        fx_done(&f);
}
END_TEST

START_TEST(test_missing_directory) {
        Fixture f;
        char dir[400];

        snprintf(dir, sizeof(dir), "%s/no/such/dir", tl_tmpdir());
        fx_init(&f, dir);
        expect_start_failure(&f, -ENOENT, dir);
        fx_done(&f);
        ck_assert_int_ne(access(dir, F_OK), 0);
}
END_TEST

/* As root a mode of 0555 means nothing: drop to nobody in a child to see a read-only directory
 * the way the service user would. */
START_TEST(test_readonly_directory) {
        const char *base = tl_tmpdir();
        char dir[400];
        pid_t pid;
        int status;

        snprintf(dir, sizeof(dir), "%s/ro", base);
        ck_assert_int_eq(mkdir(dir, 0555), 0);
        ck_assert_int_eq(chmod(base, 0755), 0);
        fflush(NULL);
        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                Fixture f;
                int code = 0;

                if (setgid(65534) < 0 || setuid(65534) < 0)
                        _exit(99);
                fx_init(&f, dir);
                if (fx_start(&f) != TASK_FAILED)
                        code = 1;
                else if (task_get_error(f.task) != -EACCES)
                        code = 2;
                else if (!strstr(strempty(task_get_cause(f.task)), f.path))
                        code = 3;
                if (code != 0)
                        fprintf(stderr, "state %s, error %d, cause: %s\n", task_state_to_string(task_get_state(f.task)),
                                task_get_error(f.task), strna(task_get_cause(f.task)));
                _exit(code);
        }
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert(WIFEXITED(status));
        ck_assert_msg(WEXITSTATUS(status) == 0, "child status %d", WEXITSTATUS(status));
}
END_TEST

/* A write that fails mid-run (here the file size limit, EFBIG): reported once, rolled back,
 * later calls refused quietly, the file still consistent. */
START_TEST(test_write_failure) {
        Fixture f;
        struct rlimit rl;
        int64_t t0 = wall_ms();
        int r = 0, i;

        fx_init(&f, NULL);
        f.config.commit_max_rows = 50;
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        for (i = 0; i < 100; i++) {
                Reading q = reading("s", "m", i, t0 + i, true);
                ck_assert_int_eq(store_append(f.store, &q), 0);
        }
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings"), 100);

        signal(SIGXFSZ, SIG_IGN);
        ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &rl), 0);
        rl.rlim_cur = 64 * 1024;
        ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
        for (; i < 100000 && r == 0; i++) {
                Reading q = reading("sensor-with-a-longer-name", "m", i, t0 + i, true);
                r = store_append(f.store, &q);
        }
        /* SQLite reports SQLITE_IOERR_WRITE; the OS error behind it is not always kept, so the
         * store looks at the limit and its files itself and names the cause. */
        ck_assert_msg(r == -EFBIG || r == -EIO, "r = %d", r);
        ck_assert_int_eq(r, -EFBIG);
        ck_assert_msg(strstr(task_get_cause(f.task), "file size limit of the process (RLIMIT_FSIZE, LimitFSIZE= in the unit) is 65536 bytes"),
                      "%s", task_get_cause(f.task));
        ck_assert_int_eq(task_get_state(f.task), TASK_FAILED);
        ck_assert_int_eq(task_get_error(f.task), r);
        ck_assert_msg(strstr(task_get_cause(f.task), f.path), "%s", task_get_cause(f.task));
        ck_assert_uint_eq(f.failures, 1);
        Reading q = reading("s", "m", 1, 1, false);
        ck_assert_int_eq(store_append(f.store, &q), -ESHUTDOWN);
        ck_assert_int_eq(store_commit(f.store), -ESHUTDOWN);
        ck_assert_int_eq(task_stop(f.task), 0);
        ck_assert_uint_eq(f.failures, 1);
        rl.rlim_cur = rl.rlim_max;
        ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
        fx_done(&f);

        /* Consistent: whole batches only, and the store opens again. */
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings") % 50, 0);
        ck_assert_int_ge(tl_sql_int(f.path, "SELECT count(*) FROM readings"), 100);
        {
                sqlite3 *db;
                sqlite3_stmt *st;
                ck_assert_int_eq(sqlite3_open(f.path, &db), SQLITE_OK);
                ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
                ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
                ck_assert_str_eq((const char *) sqlite3_column_text(st, 0), "ok");
                sqlite3_finalize(st);
                sqlite3_close(db);
        }
        {
                char saved[512];

                snprintf(saved, sizeof(saved), "%s", f.path);
                fx_init(&f, NULL);
                snprintf(f.path, sizeof(f.path), "%s", saved);
                ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
                fx_done(&f);
        }
}
END_TEST

/* A write that SQLite refuses without ending the transaction (a trigger's RAISE(ABORT)): the
 * store rolls back itself, and the cause still carries SQLite's message, not what the rollback
 * left behind ("not an error"). */
/* Starts the store on a file whose readings table refuses the value 666 (SQLITE_CONSTRAINT,
 * inside the open transaction). */
static void fx_start_refusing_666(Fixture *f) {
        ck_assert_int_eq(fx_start(f), TASK_RUNNING);
        fx_stop(f);
        sql_exec(f->path, "CREATE TRIGGER refuse BEFORE INSERT ON readings WHEN NEW.value = 666"
                          " BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END;");
        ck_assert_int_eq(fx_start(f), TASK_RUNNING);
}

START_TEST(test_failure_cause_survives_rollback) {
        Fixture f;
        int64_t t0 = wall_ms();

        fx_init(&f, NULL);
        fx_start_refusing_666(&f);
        Reading good = reading("s", "m", 1, t0, true);
        Reading bad = reading("s", "m", 666, t0 + 1, true);
        ck_assert_int_eq(store_append(f.store, &good), 0);
        ck_assert_int_eq(store_append(f.store, &bad), -EEXIST);
        ck_assert_int_eq(task_get_state(f.task), TASK_FAILED);
        ck_assert_msg(strstr(task_get_cause(f.task), "Failed to write a reading to") &&
                              strstr(task_get_cause(f.task), f.path) &&
                              strstr(task_get_cause(f.task), "refused by the test trigger"),
                      "%s", task_get_cause(f.task));
        ck_assert_uint_eq(f.failures, 1);
        fx_done(&f);
        /* Rolled back: the good reading of the open batch went too. */
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings"), 0);
}
END_TEST

/* The rows of a batch that a failure rolls back were never stored: the counters (and STATUS=)
 * never include them, and the cause says how many were lost. */
START_TEST(test_failure_counts_lost_batch) {
        Fixture f;
        int64_t t0 = wall_ms();
        StoreStats stats;
        char status[128];
        Reject j = { .received_ms = t0, .source = READING_SOURCE_SERIAL, .origin = "/dev/ttyS1",
                     .raw = "x", .raw_size = 1, .reason = FRAME_REJECT_BAD_JSON };

        fx_init(&f, NULL);
        fx_start_refusing_666(&f);
        for (int i = 0; i < 2; i++) {
                Reading r = reading("s", "m", i, t0 + i, true);
                ck_assert_int_eq(store_append(f.store, &r), 0);
        }
        ck_assert_int_eq(store_commit(f.store), 0);

        /* The open batch: three new readings, a duplicate, a reject. */
        for (int i = 2; i < 5; i++) {
                Reading r = reading("s", "m", i, t0 + i, true);
                ck_assert_int_eq(store_append(f.store, &r), 0);
        }
        Reading dup = reading("s", "m", 0, t0, true);
        ck_assert_int_eq(store_append(f.store, &dup), 0);
        ck_assert_int_eq(store_append_reject(f.store, &j), 0);
        store_get_stats(f.store, &stats);
        ck_assert_uint_eq(stats.readings, 2);
        ck_assert_uint_eq(stats.rejects, 0);
        ck_assert_uint_eq(stats.duplicates, 0);
        task_format_status(f.task, status, sizeof(status));
        ck_assert_str_eq(status, "2 readings, 0 rejects");

        Reading bad = reading("s", "m", 666, t0 + 100, true);
        ck_assert_int_eq(store_append(f.store, &bad), -EEXIST);
        ck_assert_int_eq(task_get_state(f.task), TASK_FAILED);
        ck_assert_msg(strstr(task_get_cause(f.task),
                             "refused by the test trigger; 3 readings and 1 reject of the open batch were not stored"),
                      "%s", task_get_cause(f.task));
        store_get_stats(f.store, &stats);
        ck_assert_uint_eq(stats.readings, 2);
        ck_assert_uint_eq(stats.rejects, 0);
        ck_assert_uint_eq(stats.duplicates, 0);
        ck_assert_uint_eq(stats.commits, 1);
        fx_done(&f);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings"), 2);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM rejects"), 0);
}
END_TEST

/* ---- retention ---- */

static void append_n(Fixture *f, const char *sensor, int n, int64_t received, int64_t *ts) {
        for (int i = 0; i < n; i++) {
                Reading r = reading(sensor, "m", i, (*ts)++, true);
                r.received_ms = received;
                ck_assert_int_eq(store_append(f->store, &r), 0);
        }
}

static void reject_n(Fixture *f, int n, int64_t received) {
        for (int i = 0; i < n; i++) {
                Reject j = { .received_ms = received, .source = READING_SOURCE_MQTT, .origin = "t",
                             .raw = "x", .raw_size = 1, .reason = FRAME_REJECT_BAD_JSON };
                ck_assert_int_eq(store_append_reject(f->store, &j), 0);
        }
}

START_TEST(test_retention_by_age) {
        Fixture f;
        int64_t now = wall_ms(), ts = 1;
        int r, total = 0;

        fx_init(&f, NULL);
        f.config.retention_days = 30;
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        append_n(&f, "old", 4500, now - 40 * DAY_MS, &ts);     /* more than one step */
        append_n(&f, "edge", 7, now - 30 * DAY_MS - 60000, &ts);
        append_n(&f, "keep", 11, now - 30 * DAY_MS + 60000, &ts);
        append_n(&f, "new", 13, now, &ts);
        reject_n(&f, 3, now - 31 * DAY_MS);
        reject_n(&f, 2, now - DAY_MS);

        /* Bounded steps until nothing is due; each step commits what it removed. */
        while ((r = store_run_retention(f.store)) > 0) {
                ck_assert_int_le(r, 2 * 2000);
                total += r;
        }
        ck_assert_int_eq(r, 0);
        ck_assert_int_eq(total, 4500 + 7 + 3);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings_view WHERE sensor IN ('old','edge')"), 0);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings_view WHERE sensor = 'keep'"), 11);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings_view WHERE sensor = 'new'"), 13);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM rejects"), 2);
        ck_assert_int_eq(task_get_state(f.task), TASK_RUNNING);
        fx_done(&f);
}
END_TEST

/* An age step removes what the pace allows: the first one RETENTION_PACE_FIRST_ROWS readings,
 * the next at most twice that, none more than RETENTION_PACE_MAX_ROWS; the backlog still goes. */
START_TEST(test_retention_by_age_paced) {
        Fixture f;
        int64_t now = wall_ms(), ts = 1;
        int r, steps = 0;

        fx_init(&f, NULL);
        f.config.retention_days = 30;
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        append_n(&f, "old", 6000, now - 40 * DAY_MS, &ts);
        append_n(&f, "new", 5, now, &ts);
        ck_assert_int_eq(store_commit(f.store), 0);

        ck_assert_int_eq(store_run_retention(f.store), RETENTION_PACE_FIRST_ROWS);
        ck_assert(store_retention_pending(f.store));
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings"), 6005 - RETENTION_PACE_FIRST_ROWS);
        r = store_run_retention(f.store);
        ck_assert_int_gt(r, 0);
        ck_assert_int_le(r, 2 * RETENTION_PACE_FIRST_ROWS);
        do {
                r = store_run_retention(f.store);
                ck_assert_int_ge(r, 0);
                ck_assert_int_le(r, RETENTION_PACE_MAX_ROWS + 2);  /* and the two names at the end */
                ck_assert_int_lt(++steps, 1000);
        } while (r > 0 || store_retention_pending(f.store));
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings_view WHERE sensor = 'old'"), 0);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings_view WHERE sensor = 'new'"), 5);
        fx_done(&f);
}
END_TEST

/* Runs retention steps until nothing more is due; returns how many rows and names went. */
static int64_t retention_until_done(Fixture *f) {
        int64_t total = 0;
        int r, steps = 0;

        do {
                r = store_run_retention(f->store);
                ck_assert_int_ge(r, 0);
                ck_assert_int_le(r, 4 * 2000);
                total += r;
                ck_assert_int_lt(++steps, 1000);
        } while (r > 0 || store_retention_pending(f->store));
        return total;
}

/* Rows are walked in insertion order. One row received while the gateway clock was 15 years
 * ahead must not hold up the old rows behind it (nor a run of such rows longer than a step):
 * whatever was received more than retention_days ago goes. */
START_TEST(test_retention_by_age_after_clock_ahead) {
        Fixture f;
        int64_t now = wall_ms(), ts = 1, ahead = now + 15 * 365 * DAY_MS;
        int r, total = 0;

        fx_init(&f, NULL);
        f.config.retention_days = 30;
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        append_n(&f, "future", 1, ahead, &ts);
        reject_n(&f, 1, ahead);
        append_n(&f, "old", 100, now - 60 * DAY_MS, &ts);
        reject_n(&f, 4, now - 60 * DAY_MS);
        append_n(&f, "future2", 2500, ahead, &ts);          /* more than a step of them */
        append_n(&f, "old2", 50, now - 45 * DAY_MS, &ts);
        append_n(&f, "new", 10, now - DAY_MS, &ts);
        append_n(&f, "future3", 3, ahead, &ts);             /* behind the young rows: kept */
        reject_n(&f, 2, now);

        while ((r = store_run_retention(f.store)) > 0) {
                ck_assert_int_le(r, 2 * 2000);
                total += r;
        }
        ck_assert_int_eq(r, 0);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings_view WHERE sensor IN ('old', 'old2')"), 0);
        /* The rows from the future that came before old rows are as old as those. */
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings_view WHERE sensor IN ('future', 'future2')"), 0);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings_view WHERE sensor = 'new'"), 10);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings_view WHERE sensor = 'future3'"), 3);
        ck_assert_int_eq(total, 1 + 100 + 2500 + 50 + 1 + 4);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM rejects"), 2);

        /* Later steps do not walk the rows from the future again, and keep what is young
         * (the pass over the names that follows removes the sensors no row uses). */
        retention_until_done(&f);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM sensors"), 2);
        ck_assert_int_eq(store_run_retention(f.store), 0);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings"), 13);
        ck_assert_int_eq(task_get_state(f.task), TASK_RUNNING);
        fx_done(&f);
}
END_TEST

static bool old_rows_gone(Fixture *f) {
        return sql_int(f, "SELECT count(*) FROM readings") == 5;
}

START_TEST(test_retention_timer) {
        Fixture f;
        int64_t now = wall_ms(), ts = 1;

        fx_init(&f, NULL);
        f.config.retention_days = 1;
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        append_n(&f, "old", 3000, now - 2 * DAY_MS, &ts);
        append_n(&f, "new", 5, now, &ts);
        ck_assert_int_eq(store_commit(f.store), 0);
        /* The first step runs a second after start, then the backlog in quick steps. */
        ck_assert(run_loop_until(&f, old_rows_gone, 3000));
        fx_done(&f);
}
END_TEST

/* Retention steps are periodic. After the loop stalled (a slow disk, a suspended board) the
 * steps that fell due meanwhile must not run back to back to catch up: one runs at once, the
 * next ones keep their pace (at least 50 ms apart while a backlog remains). */
START_TEST(test_retention_no_burst_after_stall) {
        Fixture f;
        int64_t now = wall_ms(), ts = 1, started, resumed, deadline, prev, count, times[64];
        size_t n_steps = 0, early = 0;
        char list[512] = "";

        fx_init(&f, NULL);
        f.config.retention_days = 1;
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        started = tl_now_ms();
        append_n(&f, "old", 10 * 2000, now - 2 * DAY_MS, &ts);   /* ten steps of backlog */
        append_n(&f, "new", 5, now, &ts);
        ck_assert_int_eq(store_commit(f.store), 0);

        /* The first step is due a second after start; the loop only runs again 800 ms later. */
        tl_sleep_ms((int) MAX(started + 1800 - tl_now_ms(), 0));
        resumed = tl_now_ms();
        prev = sql_int(&f, "SELECT count(*) FROM readings");
        deadline = resumed + 5000;
        while (prev > 5 && tl_now_ms() < deadline) {
                ck_assert_int_ge(sd_event_run(f.event, 10 * 1000), 0);
                count = sql_int(&f, "SELECT count(*) FROM readings");
                if (count < prev && n_steps < ELEMENTSOF(times))
                        times[n_steps++] = tl_now_ms() - resumed;
                prev = count;
        }
        ck_assert_int_eq(prev, 5);
        for (size_t i = 0; i < n_steps; i++) {
                snprintf(list + strlen(list), sizeof(list) - strlen(list), " +%" PRId64, times[i]);
                if (times[i] < 50)
                        early++;
        }
        /* The step due at once, and the next one (due "now" as well): no more before the pace
         * allows a third. */
        ck_assert_msg(early <= 2, "%zu retention steps within 50 ms after the stall (at%s ms)", early, list);
        ck_assert_int_ge(n_steps, 8);
        fx_done(&f);
}
END_TEST

START_TEST(test_retention_by_size) {
        Fixture f;
        int64_t now = wall_ms(), ts = 1, used, n, min_id, max_id, total, limit = 1024 * 1024;
        int r;

        fx_init(&f, NULL);
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        append_n(&f, "s1", 30000, now - 3 * DAY_MS, &ts);
        append_n(&f, "s2", 30000, now - 2 * DAY_MS, &ts);
        reject_n(&f, 10, now - 3 * DAY_MS);
        reject_n(&f, 10, now);
        fx_stop(&f);
        used = sql_int(&f, "SELECT (page_count - freelist_count) * page_size FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()");
        ck_assert_int_gt(used, 2 * limit);
        total = sql_int(&f, "SELECT count(*) FROM readings");

        f.config.max_size_mb = 1;
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        while ((r = store_run_retention(f.store)) > 0)
                ;
        ck_assert_int_eq(r, 0);
        fx_stop(&f);

        used = sql_int(&f, "SELECT (page_count - freelist_count) * page_size FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()");
        ck_assert_int_le(used, limit);
        ck_assert_int_gt(used, limit * 3 / 4);   /* not far more than needed */
        n = sql_int(&f, "SELECT count(*) FROM readings");
        min_id = sql_int(&f, "SELECT min(id) FROM readings");
        max_id = sql_int(&f, "SELECT max(id) FROM readings");
        /* Exactly the oldest went: what is left is the newest, without gaps. */
        ck_assert_int_gt(n, 0);
        ck_assert_int_eq(max_id, total);
        ck_assert_int_eq(max_id - min_id + 1, n);
        /* Rejects older than the oldest kept reading went with them; newer ones stay. */
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM rejects"), 10);
        /* The file shrank too (incremental vacuum). */
        ck_assert_int_le(sql_int(&f, "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"),
                         2 * limit);
        fx_done(&f);
}
END_TEST

static int64_t used_bytes(Fixture *f) {
        return sql_int(f, "SELECT (page_count - freelist_count) * page_size FROM pragma_page_count(), "
                          "pragma_freelist_count(), pragma_page_size()");
}

/* A burst of garbage after the good readings: the rejects are trimmed to their own share of
 * max_size_mb (oldest first), and not one reading goes for them. */
START_TEST(test_retention_rejects_have_their_own_bound) {
        Fixture f;
        int64_t now = wall_ms(), ts = 1, limit = 1024 * 1024, kept, min_kept;
        char raw[1024];
        int r;

        memset(raw, 'g', sizeof(raw));
        fx_init(&f, NULL);
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        append_n(&f, "good", 5000, now - DAY_MS, &ts);
        for (int i = 0; i < 3000; i++) {
                Reject j = { .received_ms = now - 1000 + i / 10, .source = READING_SOURCE_MQTT, .origin = "noise",
                             .raw = raw, .raw_size = sizeof(raw), .reason = FRAME_REJECT_BAD_JSON };
                ck_assert_int_eq(store_append_reject(f.store, &j), 0);
        }
        fx_stop(&f);
        ck_assert_int_gt(used_bytes(&f), 2 * limit);

        f.config.max_size_mb = 1;
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        while ((r = store_run_retention(f.store)) > 0)
                ck_assert_int_le(r, 2 * 2000);
        ck_assert_int_eq(r, 0);
        /* Later rejects are kept in the same bound, the readings still untouched. */
        for (int i = 0; i < 500; i++) {
                Reject j = { .received_ms = now + i, .source = READING_SOURCE_MQTT, .origin = "noise",
                             .raw = raw, .raw_size = sizeof(raw), .reason = FRAME_REJECT_BAD_JSON };
                ck_assert_int_eq(store_append_reject(f.store, &j), 0);
        }
        while ((r = store_run_retention(f.store)) > 0)
                ;
        ck_assert_int_eq(r, 0);
        fx_stop(&f);

        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings"), 5000);
        ck_assert_int_le(used_bytes(&f), limit);
        kept = sql_int(&f, "SELECT count(*) FROM rejects");
        /* A tenth of the limit, estimated: about a hundred rejects of 1 KiB. */
        ck_assert_int_gt(kept, 50);
        ck_assert_int_le(kept * (int64_t) sizeof(raw), limit / 10);
        /* The newest stay, without gaps. */
        min_kept = sql_int(&f, "SELECT min(id) FROM rejects");
        ck_assert_int_eq(sql_int(&f, "SELECT max(id) FROM rejects"), 3500);
        ck_assert_int_eq(3500 - min_kept + 1, kept);
        fx_done(&f);
}
END_TEST

/* Readings from a node that puts a counter in its 1 KiB topic: one origin each. */
static void append_topics(Fixture *f, int n, int from, int64_t received, int64_t *ts) {
        char topic[1100];

        for (int i = 0; i < n; i++) {
                Reading r = reading("node", "m", i, (*ts)++, true);

                snprintf(topic, sizeof(topic), "greenhouse/%0*d/%d", 1000, 0, from + i);
                r.origin = topic;
                r.source = READING_SOURCE_MQTT;
                r.received_ms = received;
                ck_assert_int_eq(store_append(f->store, &r), 0);
        }
}

/* Size retention deletes the readings that used 4 000 distinct 1 KiB topics, then the topics no
 * row uses any more, and stops there: the newer readings stay. */
START_TEST(test_retention_by_size_prunes_unused_names) {
        Fixture f;
        int64_t now = wall_ms(), ts = 1, limit = 2 * 1024 * 1024;
        char status[160];

        fx_init(&f, NULL);
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        append_topics(&f, 4000, 0, now - 2 * DAY_MS, &ts);
        append_n(&f, "good", 6000, now - DAY_MS, &ts);
        fx_stop(&f);
        ck_assert_int_gt(used_bytes(&f), 4 * limit);

        f.config.max_size_mb = 2;
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        retention_until_done(&f);
        ck_assert_int_le(used_bytes(&f), limit);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings_view WHERE sensor = 'node'"), 0);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings_view WHERE sensor = 'good'"), 6000);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings"), 6000);
        /* The topics went; the names still used stayed. */
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM origins"), 1);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM sensors"), 1);
        task_format_status(f.task, status, sizeof(status));
        ck_assert_msg(!strstr(status, "over"), "%s", status);

        /* Names interned after the pass still resolve (the cache forgot the deleted ones). */
        Reading r = reading("node", "m", 1, ts++, true);
        r.origin = "greenhouse/new";
        ck_assert_int_eq(store_append(f.store, &r), 0);
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings_view WHERE origin = 'greenhouse/new'"), 1);
        fx_done(&f);
}
END_TEST

/* When the newest readings themselves keep the store over its limit (their 4 000 topics take
 * 9 MiB), size retention keeps them and says so, instead of deleting every reading. */
START_TEST(test_retention_by_size_keeps_the_newest) {
        Fixture f;
        int64_t now = wall_ms(), ts = 1, limit = 2 * 1024 * 1024;
        char status[160];

        fx_init(&f, NULL);
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        append_n(&f, "old", 3000, now - 2 * DAY_MS, &ts);
        append_topics(&f, 4000, 0, now, &ts);
        fx_stop(&f);

        f.config.max_size_mb = 2;
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        retention_until_done(&f);
        /* The floor at 2 MiB is 4 096 readings: the 4 000 newest and 96 older ones stay. */
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings_view WHERE sensor = 'node'"), 4000);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings"), 4096);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM origins"), 4001);
        ck_assert_int_gt(used_bytes(&f), limit);
        task_format_status(f.task, status, sizeof(status));
        ck_assert_msg(strstr(status, "over its size limit ("), "%s", status);
        ck_assert_msg(strstr(status, " of 2 MiB)"), "%s", status);

        /* New readings keep coming: each is kept, and the oldest beyond the floor go. */
        append_n(&f, "new", 10, now, &ts);
        retention_until_done(&f);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings_view WHERE sensor = 'new'"), 10);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings_view WHERE sensor = 'node'"), 4000);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings"), 4096);
        ck_assert_int_eq(task_get_state(f.task), TASK_RUNNING);
        fx_done(&f);
}
END_TEST

/* Runs retention steps until nothing is due, after a first step that removed
 * RETENTION_PACE_FIRST_ROWS: no step removes more than twice the one before (the pace at most
 * doubles after a full step) nor more than RETENTION_PACE_MAX_ROWS. */
static void retention_at_pace(Fixture *f) {
        int r, last = RETENTION_PACE_FIRST_ROWS, steps = 0;

        do {
                r = store_run_retention(f->store);
                ck_assert_int_ge(r, 0);
                ck_assert_int_le(r, 2 * last);
                ck_assert_int_le(r, RETENTION_PACE_MAX_ROWS);
                if (r > 0)
                        last = r;
                ck_assert_int_lt(++steps, 2000);
        } while (r > 0 || store_retention_pending(f->store));
}

/* A size step removes what the pace allows, as an age step does: the first one
 * RETENTION_PACE_FIRST_ROWS readings, each later one at most twice the one before while every
 * step uses its whole allowance (the pace at most doubles after a full step), none more than
 * RETENTION_PACE_MAX_ROWS; exactly the oldest go, and the store ends under its limit. */
START_TEST(test_retention_by_size_paced) {
        Fixture f;
        int64_t now = wall_ms(), ts = 1, limit = 1024 * 1024, total, min_id, n;

        fx_init(&f, NULL);
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        append_n(&f, "s1", 80000, now - 2 * DAY_MS, &ts);
        fx_stop(&f);
        ck_assert_int_gt(used_bytes(&f), 2 * limit);
        total = sql_int(&f, "SELECT count(*) FROM readings");

        f.config.max_size_mb = 1;
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        ck_assert_int_eq(store_run_retention(f.store), RETENTION_PACE_FIRST_ROWS);
        ck_assert(store_retention_pending(f.store));
        ck_assert_int_eq(sql_int(&f, "SELECT min(id) FROM readings"), RETENTION_PACE_FIRST_ROWS + 1);
        retention_at_pace(&f); /* the name pass adds nothing here: one sensor, one metric */
        fx_stop(&f);

        ck_assert_int_le(used_bytes(&f), limit);
        ck_assert_int_gt(used_bytes(&f), limit * 3 / 4);
        n = sql_int(&f, "SELECT count(*) FROM readings");
        min_id = sql_int(&f, "SELECT min(id) FROM readings");
        ck_assert_int_eq(sql_int(&f, "SELECT max(id) FROM readings"), total);
        ck_assert_int_eq(total - min_id + 1, n);
        fx_done(&f);
}
END_TEST

/* The rejects' share is trimmed at the pace too: a reject carries its raw bytes (here 1 KiB, up to
 * max_payload_bytes), so a fixed 2,000 of them could hold the write lock far longer than a step of
 * readings. The first step removes RETENTION_PACE_FIRST_ROWS, each later one at most twice the
 * one before, and the oldest go. */
START_TEST(test_retention_rejects_paced) {
        Fixture f;
        int64_t now = wall_ms();
        char raw[1024];

        memset(raw, 'g', sizeof(raw));
        fx_init(&f, NULL);
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        for (int i = 0; i < 6000; i++) {
                Reject j = { .received_ms = now - 1000 + i / 10, .source = READING_SOURCE_MQTT, .origin = "noise",
                             .raw = raw, .raw_size = sizeof(raw), .reason = FRAME_REJECT_BAD_JSON };
                ck_assert_int_eq(store_append_reject(f.store, &j), 0);
        }
        fx_stop(&f);

        f.config.max_size_mb = 1;
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        ck_assert_int_eq(store_run_retention(f.store), RETENTION_PACE_FIRST_ROWS);
        ck_assert_int_eq(sql_int(&f, "SELECT min(id) FROM rejects"), RETENTION_PACE_FIRST_ROWS + 1);
        retention_at_pace(&f);
        fx_stop(&f);

        ck_assert_int_eq(sql_int(&f, "SELECT max(id) FROM rejects"), 6000);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM rejects"), 6000 - sql_int(&f, "SELECT min(id) FROM rejects") + 1);
        ck_assert_int_lt(sql_int(&f, "SELECT count(*) FROM rejects"), 6000 - RETENTION_PACE_FIRST_ROWS);
        fx_done(&f);
}
END_TEST

/* Age and size share one allowance per step: age takes the old rows first, size what is left of
 * the allowance, so a step that does both removes no more than a step that does one. */
START_TEST(test_retention_age_and_size_share_the_pace) {
        Fixture f;
        int64_t now = wall_ms(), ts = 1, limit = 1024 * 1024;

        fx_init(&f, NULL);
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        append_n(&f, "old", 100, now - 40 * DAY_MS, &ts);
        append_n(&f, "young", 80000, now - DAY_MS, &ts);
        fx_stop(&f);
        ck_assert_int_gt(used_bytes(&f), 2 * limit);

        f.config.retention_days = 30;
        f.config.max_size_mb = 1;
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        /* The 100 old ones by age, and the 150 oldest young ones by size. */
        ck_assert_int_eq(store_run_retention(f.store), RETENTION_PACE_FIRST_ROWS);
        ck_assert(store_retention_pending(f.store));
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings_view WHERE sensor = 'old'"), 0);
        ck_assert_int_eq(sql_int(&f, "SELECT min(id) FROM readings"), RETENTION_PACE_FIRST_ROWS + 1);
        retention_until_done(&f);
        ck_assert_int_le(used_bytes(&f), limit);
        ck_assert_int_eq(sql_int(&f, "SELECT max(id) FROM readings"), 80100);
        ck_assert_int_eq(task_get_state(f.task), TASK_RUNNING);
        fx_done(&f);
}
END_TEST

/* The estimate of an event's size that store_trim_events() keeps (store-internal.h). */
#define EVENTS_BYTES_SQL                                                                                    \
        "SELECT (SELECT coalesce(sum(64 + length(kind) + 2 * coalesce(length(sensor), 0) + "                  \
        "coalesce(length(subject), 0) + coalesce(length(detail), 0)), 0) FROM events) + "                    \
        "(SELECT coalesce(sum(64 + length(kind) + coalesce(length(detail), 0)), 0) FROM clock_events)"

/* With retention_days and max_size_mb both set, events that age retention removed are taken off
 * the size share's estimate too: otherwise the share counts them still and removes new events in
 * their place. 150 old events go by age, then 150 new ones (together over the share of a 1 MiB
 * store, each alone under it) all stay. */
START_TEST(test_retention_aged_events_leave_the_size_estimate) {
        Fixture f;
        int64_t now = wall_ms(), limit = 1024 * 1024;
        char detail[160];

        memset(detail, 'd', sizeof(detail) - 1);
        detail[sizeof(detail) - 1] = '\0';
        fx_init(&f, NULL);
        f.config.retention_days = 3;
        f.config.max_size_mb = 1;
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        retention_until_done(&f); /* the estimate is known from here on */
        for (int pass = 0; pass < 2; pass++) {
                for (int i = 0; i < 150; i++)
                        ck_assert_int_eq(store_append_event(f.store, &(StoreEvent) {
                                                 .kind = STORE_EVENT_SENSOR_SILENT,
                                                 .ts_ms = (pass == 0 ? now - 5 * DAY_MS : now) + i, .sensor = "s1",
                                                 .detail = detail }),
                                         0);
                ck_assert_int_eq(store_commit(f.store), 0);
                retention_until_done(&f);
        }
        fx_stop(&f);

        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM events WHERE sensor = 's1'"), 150);
        ck_assert_int_ge(sql_int(&f, "SELECT min(ts) FROM events WHERE sensor = 's1'"), now);
        ck_assert_int_le(sql_int(&f, EVENTS_BYTES_SQL), limit / 20);
        /* The premise: one pass fits the share, two do not. */
        ck_assert_int_gt(sql_int(&f, EVENTS_BYTES_SQL) * 2, limit / 20);
        fx_done(&f);
}
END_TEST

/* Under max_size_mb, events and the clock's events are bounded too: a sensor that flapped for
 * days left 20 000 events (4 MiB) in a 1 MiB store. They are trimmed to their share (a twentieth
 * of the limit), the oldest of both tables first, without a reading going for them; the newest
 * stay, without gaps, and so do the clock events newer than them. */
START_TEST(test_retention_by_size_bounds_events) {
        Fixture f;
        int64_t now = wall_ms(), ts = 1, limit = 1024 * 1024, bytes, min_id;
        char detail[160];

        memset(detail, 'd', sizeof(detail) - 1);
        detail[sizeof(detail) - 1] = '\0';
        fx_init(&f, NULL);
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        append_n(&f, "s1", 100, now - 6 * DAY_MS, &ts);
        for (int i = 0; i < 10; i++)
                ck_assert_int_eq(store_clock_event(f.store, "stepped", now - 6 * DAY_MS + i, 1000, -1, "old"), 0);
        for (int i = 0; i < 20000; i++) {
                char sensor[16];

                snprintf(sensor, sizeof(sensor), "s%d", i % 30);
                ck_assert_int_eq(store_append_event(f.store, &(StoreEvent) {
                                         .kind = i % 2 ? STORE_EVENT_SENSOR_BACK : STORE_EVENT_SENSOR_SILENT,
                                         .ts_ms = now - 5 * DAY_MS + i * 1000LL, .sensor = sensor, .detail = detail }),
                                 0);
        }
        for (int i = 0; i < 10; i++)
                ck_assert_int_eq(store_clock_event(f.store, "stepped", now + i, 1000, -1, "new"), 0);
        fx_stop(&f);
        ck_assert_int_gt(used_bytes(&f), 2 * limit);

        f.config.max_size_mb = 1;
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        retention_until_done(&f);
        /* Events added later (a hundred, less than the share) are counted in the same bound. */
        for (int i = 0; i < 100; i++)
                ck_assert_int_eq(store_append_event(f.store, &(StoreEvent) {
                                         .kind = STORE_EVENT_SENSOR_SILENT, .ts_ms = now + 100 + i, .sensor = "late",
                                         .detail = detail }),
                                 0);
        ck_assert_int_eq(store_commit(f.store), 0);
        retention_until_done(&f);
        fx_stop(&f);

        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings"), 100);
        ck_assert_int_le(used_bytes(&f), limit);
        bytes = sql_int(&f, EVENTS_BYTES_SQL);
        ck_assert_int_le(bytes, limit / 20);
        ck_assert_int_gt(bytes, limit / 20 - 1000);   /* not far fewer than the share holds */
        min_id = sql_int(&f, "SELECT min(id) FROM events");
        /* 20 000, the daemon_down of the restart, 100. */
        ck_assert_int_eq(sql_int(&f, "SELECT max(id) FROM events"), 20101);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM events"), 20101 - min_id + 1);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM events WHERE sensor = 'late'"), 100);
        ck_assert_int_lt(min_id, 20000 - 100);   /* older ones too */
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM clock_events WHERE detail = 'old'"), 0);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM clock_events WHERE detail = 'new'"), 10);
        fx_done(&f);
}
END_TEST

/* The free pages a step gives back to the file system follow a pace of their own: 64 in the
 * first step that gives any back, then at most twice what the step before gave (while free pages
 * were left over), never more than RETENTION_PACE_MAX_ROWS; and the file does shrink. */
START_TEST(test_retention_vacuum_paced) {
        Fixture f;
        int64_t now = wall_ms(), ts = 1, pages0, pages, last = 0, biggest = 0, freed;
        int r, steps = 0, vacuums = 0;

        fx_init(&f, NULL);
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        append_n(&f, "old", 60000, now - 40 * DAY_MS, &ts);
        append_n(&f, "new", 20000, now, &ts);
        fx_stop(&f);
        pages0 = sql_int(&f, "SELECT page_count FROM pragma_page_count()");

        f.config.retention_days = 30;
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        last = pages0;
        do {
                r = store_run_retention(f.store);
                ck_assert_int_ge(r, 0);
                pages = sql_int(&f, "SELECT page_count FROM pragma_page_count()");
                freed = last - pages;
                ck_assert_int_ge(freed, 0);
                if (freed > 0) {
                        /* A page or two more: pointer-map pages go with the pages they map. */
                        ck_assert_int_le(freed, (vacuums == 0 ? 64 : MIN(2 * biggest, (int64_t) RETENTION_PACE_MAX_ROWS)) + 2);
                        biggest = MAX(biggest, freed);
                        vacuums++;
                }
                last = pages;
                ck_assert_int_lt(++steps, 1000);
        } while (r > 0 || store_retention_pending(f.store));
        ck_assert_int_gt(vacuums, 1);
        ck_assert_int_le(pages, pages0 * 3 / 4);
        ck_assert_int_eq(sql_int(&f, "SELECT count(*) FROM readings"), 20000);
        fx_done(&f);
}
END_TEST

/* ---- the files deleted or replaced under the daemon ---- */

static bool task_failed(Fixture *f) {
        return task_get_state(f->task) == TASK_FAILED;
}

/* Appends one reading and commits; returns what the commit said. */
static int append_commit(Fixture *f, int64_t ts) {
        Reading r = reading("s", "m", 1, ts, true);

        ck_assert_int_eq(store_append(f->store, &r), 0);
        return store_commit(f->store);
}

static void assert_cause(Fixture *f, int error, const char *needle) {
        ck_assert_int_eq(task_get_state(f->task), TASK_FAILED);
        ck_assert_int_eq(task_get_error(f->task), error);
        ck_assert_msg(strstr(task_get_cause(f->task), needle) && strstr(task_get_cause(f->task), f->path),
                      "cause '%s' lacks '%s'", task_get_cause(f->task), needle);
        ck_assert_uint_eq(f->failures, 1);
}

START_TEST(test_store_deleted_fails_at_commit) {
        Fixture f;
        int64_t t0 = wall_ms();

        fx_init(&f, NULL);
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        ck_assert_int_eq(append_commit(&f, t0), 0);
        ck_assert_int_eq(unlink(f.path), 0);
        ck_assert_int_eq(append_commit(&f, t0 + 1), -ENOENT);
        assert_cause(&f, -ENOENT, "was deleted while open");
        Reading r = reading("s", "m", 1, t0 + 2, true);
        ck_assert_int_eq(store_append(f.store, &r), -ESHUTDOWN);
        fx_done(&f);
}
END_TEST

START_TEST(test_store_replaced_fails_at_commit) {
        Fixture f;
        char aside[600];
        int64_t t0 = wall_ms();

        fx_init(&f, NULL);
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        ck_assert_int_eq(append_commit(&f, t0), 0);
        snprintf(aside, sizeof(aside), "%s.old", f.path);
        ck_assert_int_eq(rename(f.path, aside), 0);
        sql_exec(f.path, "CREATE TABLE other (x)");
        ck_assert_int_eq(append_commit(&f, t0 + 1), -ESTALE);
        assert_cause(&f, -ESTALE, "was moved away or replaced while open");
        fx_done(&f);
        /* The new file was not written to. */
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM sqlite_schema"), 1);
}
END_TEST

/* Deleting the write-ahead log while the daemon runs: the store fails at the next commit, and
 * closing it writes what SQLite still had in the deleted log back into the store. */
START_TEST(test_store_wal_deleted_fails_and_keeps_rows) {
        Fixture f;
        char wal[600];
        int64_t t0 = wall_ms();

        fx_init(&f, NULL);
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        for (int i = 0; i < 10; i++)
                ck_assert_int_eq(append_commit(&f, t0 + i), 0);
        snprintf(wal, sizeof(wal), "%s-wal", f.path);
        ck_assert_int_eq(unlink(wal), 0);
        ck_assert_int_eq(append_commit(&f, t0 + 10), -ENOENT);
        assert_cause(&f, -ENOENT, "write-ahead log");
        fx_done(&f);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings"), 11);
        tl_assert_integrity(f.path, true);
}
END_TEST

/* No commit comes (the inputs are quiet): the periodic check finds the deleted store. */
START_TEST(test_store_deleted_found_by_timer) {
        Fixture f;
        int64_t t0 = wall_ms();

        fx_init(&f, NULL);
        ck_assert_int_eq(fx_start(&f), TASK_RUNNING);
        ck_assert_int_eq(append_commit(&f, t0), 0);
        ck_assert_int_eq(unlink(f.path), 0);
        ck_assert(run_loop_until(&f, task_failed, 5000));
        assert_cause(&f, -ENOENT, "was deleted while open");
        fx_done(&f);
}
END_TEST

static Suite *store_suite(void) {
        Suite *s = suite_create("store");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_roundtrip);
        tcase_add_test(tc, test_rejects_roundtrip);
        tcase_add_test(tc, test_invalid_reading_fails_loudly);
        tcase_add_test(tc, test_batch_on_size);
        tcase_add_test(tc, test_batch_on_time);
        tcase_add_test(tc, test_batch_of_duplicates_commits_on_time);
        tcase_add_test(tc, test_stop_commits_and_is_idempotent);
        tcase_add_test(tc, test_dedup);
        tcase_add_test(tc, test_migration_from_v1);
        tcase_add_test(tc, test_reopen_keeps_data);
        tcase_add_test(tc, test_foreign_database);
        tcase_add_test(tc, test_not_a_database);
        tcase_add_test(tc, test_newer_schema);
        tcase_add_test(tc, test_corrupt_database);
        tcase_add_test(tc, test_missing_directory);
        tcase_add_test(tc, test_readonly_directory);
        tcase_add_test(tc, test_write_failure);
        tcase_add_test(tc, test_failure_cause_survives_rollback);
        tcase_add_test(tc, test_failure_counts_lost_batch);
        tcase_add_test(tc, test_retention_by_age);
        tcase_add_test(tc, test_retention_by_age_paced);
        tcase_add_test(tc, test_retention_by_age_after_clock_ahead);
        tcase_add_test(tc, test_retention_timer);
        tcase_add_test(tc, test_retention_no_burst_after_stall);
        tcase_add_test(tc, test_retention_by_size);
        tcase_add_test(tc, test_retention_rejects_have_their_own_bound);
        tcase_add_test(tc, test_retention_by_size_prunes_unused_names);
        tcase_add_test(tc, test_retention_by_size_keeps_the_newest);
        tcase_add_test(tc, test_retention_by_size_paced);
        tcase_add_test(tc, test_retention_rejects_paced);
        tcase_add_test(tc, test_retention_age_and_size_share_the_pace);
        tcase_add_test(tc, test_retention_aged_events_leave_the_size_estimate);
        tcase_add_test(tc, test_retention_by_size_bounds_events);
        tcase_add_test(tc, test_retention_vacuum_paced);
        tcase_add_test(tc, test_store_deleted_fails_at_commit);
        tcase_add_test(tc, test_store_replaced_fails_at_commit);
        tcase_add_test(tc, test_store_wal_deleted_fails_and_keeps_rows);
        tcase_add_test(tc, test_store_deleted_found_by_timer);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(store_suite());
}
