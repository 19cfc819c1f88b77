/* SPDX-License-Identifier: MIT */
/* The store's events table: why data is missing, and the last time each sensor was seen. */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <sqlite3.h>

#include "collector/macro.h"
#include "collector/store.h"
#include "collector/time-util.h"
#include "store-internal.h"

/* ---- events ---- */

static const char *const event_kind_names[_STORE_EVENT_MAX] = {
        [STORE_EVENT_SENSOR_SILENT] = "sensor_silent",
        [STORE_EVENT_SENSOR_BACK] = "sensor_back",
        [STORE_EVENT_INPUT_DOWN] = "input_down",
        [STORE_EVENT_INPUT_UP] = "input_up",
        [STORE_EVENT_DAEMON_DOWN] = "daemon_down",
        [STORE_EVENT_OUT_OF_RANGE] = "out_of_range",
};

const char *store_event_kind_to_string(StoreEventKind k) {
        return k >= 0 && k < _STORE_EVENT_MAX ? event_kind_names[k] : NULL;
}

StoreEventKind store_event_kind_from_string(const char *str) {
        for (size_t i = 0; str && i < _STORE_EVENT_MAX; i++)
                if (streq(event_kind_names[i], str))
                        return (StoreEventKind) i;
        return _STORE_EVENT_INVALID;
}

static int bind_text_or_null(sqlite3_stmt *st, int i, const char *v) {
        return v ? sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC) : sqlite3_bind_null(st, i);
}

static int bind_int_or_null(sqlite3_stmt *st, int i, int64_t v) {
        return v != 0 ? sqlite3_bind_int64(st, i, v) : sqlite3_bind_null(st, i);
}

int store_append_event(Store *s, const StoreEvent *ev) {
        sqlite3_stmt *st;
        const char *kind;
        int rc, k;

        assert(s && ev);

        k = store_check_writable(s);
        if (k < 0)
                return k;
        kind = store_event_kind_to_string(ev->kind);
        if (!kind || ev->count > INT64_MAX)
                return store_refuse(s, "Refused an invalid event (kind %d) for '%s'", (int) ev->kind, s->config->path);
        k = store_begin(s);
        if (k < 0)
                return k;

        st = s->stmts[STMT_INSERT_EVENT];
        rc = sqlite3_bind_int64(st, 1, ev->ts_ms);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
                rc = bind_text_or_null(st, 3, ev->sensor);
        if (rc == SQLITE_OK)
                rc = bind_text_or_null(st, 4, ev->subject);
        if (rc == SQLITE_OK)
                rc = bind_int_or_null(st, 5, ev->start_ms);
        if (rc == SQLITE_OK)
                rc = bind_int_or_null(st, 6, ev->end_ms);
        if (rc == SQLITE_OK)
                rc = bind_int_or_null(st, 7, (int64_t) ev->count);
        if (rc == SQLITE_OK)
                rc = bind_text_or_null(st, 8, ev->detail);
        if (rc == SQLITE_OK)
                rc = store_stmt_run(st);
        sqlite3_clear_bindings(st);
        if (rc != SQLITE_OK)
                return store_fail_sqlite(s, rc, "write an event to");
        store_count_event(s, kind, ev->sensor, ev->subject, ev->detail);
        return store_batch_row(s);
}

static int64_t store_now_ms(Store *s) {
        uint64_t now;

        if (sd_event_now(s->event, CLOCK_REALTIME, &now) < 0)
                now = (uint64_t) time(NULL) * USEC_PER_SEC;
        return (int64_t) (now / USEC_PER_MSEC);
}

#define STORE_META_STOPPED "store.stopped_ms"

/* An orderly stop leaves its time behind, so the next start can tell a stop from a crash. */
int store_note_stopped(Store *s) {
        char buf[32];
        int n = snprintf(buf, sizeof(buf), "%" PRIi64, store_now_ms(s));

        return store_set_meta(s, STORE_META_STOPPED, buf, (size_t) n);
}

/* At start: the window in which the daemon was not running (from the last record it wrote,
 * or the orderly stop it noted, until now) goes into the events table, so a gap that spans a
 * restart, a crash or a power cut has a cause. A new store has no such window. */
int store_note_daemon_down(Store *s) {
        _cleanup_free_ void *stopped = NULL;
        int64_t last = 0, stopped_ms = 0, now = store_now_ms(s);
        size_t size;
        int rc, r;

        rc = store_exec_int(s->db,
                      "SELECT max(coalesce((SELECT received FROM readings ORDER BY id DESC LIMIT 1), 0),"
                      "           coalesce((SELECT received FROM rejects ORDER BY id DESC LIMIT 1), 0),"
                      "           coalesce((SELECT ts FROM events ORDER BY id DESC LIMIT 1), 0))",
                      &last);
        if (rc != SQLITE_OK)
                return store_fail_sqlite(s, rc, "read the last record of");
        r = store_get_meta(s, STORE_META_STOPPED, &stopped, &size);
        if (r > 0)
                stopped_ms = strtoll(stopped, NULL, 10);
        if (last <= 0 && stopped_ms <= 0)
                return 0;
        return store_append_event(s, &(StoreEvent){
                                             .kind = STORE_EVENT_DAEMON_DOWN,
                                             .ts_ms = now,
                                             .start_ms = MAX(last, stopped_ms),
                                             .end_ms = now,
                                             .detail = stopped_ms >= last ? "stopped" : "not stopped cleanly",
                                     });
}

/* The key index (sensor_id, metric_id, ts, ...) walked loosely: the next sensor, the next
 * metric of that sensor, the newest ts of that pair, each one seek. A GROUP BY over the rows
 * since since_ms would read them all and sort them in memory (13 MiB at the start of a daemon
 * on a year-old store, a day of 150 sensors and metrics); this reads a few pages per pair. */
enum { LS_NEXT_SENSOR, LS_NEXT_METRIC, LS_NEWEST, _LS_MAX };

static const char *const last_seen_sql[_LS_MAX] = {
        [LS_NEXT_SENSOR] = "SELECT sensor_id FROM readings INDEXED BY readings_key WHERE sensor_id > ?1 "
                           "ORDER BY sensor_id LIMIT 1",
        [LS_NEXT_METRIC] = "SELECT metric_id FROM readings INDEXED BY readings_key WHERE sensor_id = ?1 AND metric_id > ?2 "
                           "ORDER BY metric_id LIMIT 1",
        [LS_NEWEST] = "SELECT (SELECT name FROM sensors WHERE id = ?1), (SELECT name FROM metrics WHERE id = ?2), max(ts) "
                      "FROM readings INDEXED BY readings_key WHERE sensor_id = ?1 AND metric_id = ?2",
};

/* Binds a (and b, when st has two parameters) and steps st: SQLITE_ROW with *ret set to its
 * last column, or SQLITE_DONE. */
static int last_seen_next(sqlite3_stmt *st, int64_t a, int64_t b, int64_t *ret) {
        int rc;

        sqlite3_reset(st);
        rc = sqlite3_bind_int64(st, 1, a);
        if (rc == SQLITE_OK && sqlite3_bind_parameter_count(st) > 1)
                rc = sqlite3_bind_int64(st, 2, b);
        if (rc != SQLITE_OK)
                return rc;
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                *ret = sqlite3_column_int64(st, sqlite3_column_count(st) - 1);
        return rc;
}

int store_foreach_last_seen(Store *s, int64_t since_ms,
                            int (*cb)(const char *sensor, const char *metric, int64_t last_ms, void *userdata),
                            void *userdata) {
        sqlite3_stmt *st[_LS_MAX] = {};
        int64_t sensor = INT64_MIN, metric = INT64_MIN;
        int rc = SQLITE_OK, r = 0;

        assert(s && cb);
        if (store_check_writable(s) < 0)
                return -ESHUTDOWN;
        for (size_t k = 0; rc == SQLITE_OK && k < _LS_MAX; k++)
                rc = sqlite3_prepare_v2(s->db, last_seen_sql[k], -1, &st[k], NULL);
        while (rc == SQLITE_OK && r >= 0) {
                rc = last_seen_next(st[LS_NEXT_SENSOR], sensor, 0, &sensor);
                if (rc != SQLITE_ROW)
                        break;
                metric = INT64_MIN;
                while (r >= 0 && (rc = last_seen_next(st[LS_NEXT_METRIC], sensor, metric, &metric)) == SQLITE_ROW) {
                        int64_t newest = 0;

                        rc = last_seen_next(st[LS_NEWEST], sensor, metric, &newest);
                        if (rc != SQLITE_ROW)
                                break;
                        if (newest >= since_ms && sqlite3_column_type(st[LS_NEWEST], 0) == SQLITE_TEXT &&
                            sqlite3_column_type(st[LS_NEWEST], 1) == SQLITE_TEXT)
                                r = cb((const char *) sqlite3_column_text(st[LS_NEWEST], 0),
                                       (const char *) sqlite3_column_text(st[LS_NEWEST], 1), newest, userdata);
                }
                if (rc == SQLITE_DONE)
                        rc = SQLITE_OK;
        }
        if (r >= 0 && rc != SQLITE_OK && rc != SQLITE_DONE)
                r = store_sqlite_errno(s->db, rc) ?: -EIO;
        for (size_t k = 0; k < _LS_MAX; k++)
                sqlite3_finalize(st[k]);
        return r < 0 ? r : 0;
}

int store_sensor_last_seen(Store *s, const char *sensor, int64_t *ret_ms) {
        sqlite3_stmt *st = NULL;
        int64_t v = 0;
        int rc;

        assert(s && sensor && ret_ms);
        if (store_check_writable(s) < 0)
                return -ESHUTDOWN;
        rc = sqlite3_prepare_v2(s->db,
                                "SELECT coalesce(max(r.ts), 0) FROM readings r JOIN sensors s ON s.id = r.sensor_id "
                                "WHERE s.name = ?1",
                                -1, &st, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_text(st, 1, sensor, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
                rc = store_stmt_int(st, &v);
        if (rc == SQLITE_NOTFOUND)
                rc = SQLITE_OK;
        if (rc != SQLITE_OK) {
                int r = store_sqlite_errno(s->db, rc) ?: -EIO;
                sqlite3_finalize(st);
                return r;
        }
        sqlite3_finalize(st);
        *ret_ms = v;
        return 0;
}
