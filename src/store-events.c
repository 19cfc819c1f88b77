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

int store_foreach_last_seen(Store *s, int64_t since_ms,
                            int (*cb)(const char *sensor, const char *metric, int64_t last_ms, void *userdata),
                            void *userdata) {
        sqlite3_stmt *st = NULL;
        int rc, r = 0;

        assert(s && cb);
        if (store_check_writable(s) < 0)
                return -ESHUTDOWN;
        /* The open batch's block is not in readings_blocks yet. */
        rc = store_blocks_flush(s);
        if (rc != SQLITE_OK)
                return store_sqlite_errno(s->db, rc) ?: -EIO;
        /* The blocks whose ts range reaches since_ms (a few, through their max_ts index), each a
         * range of the table in id order: no per-row seek, no index on ts. */
        rc = sqlite3_prepare_v2(s->db,
                                "SELECT s.name, m.name, x.last FROM (SELECT r.sensor_id, r.metric_id, max(r.ts) AS last "
                                "FROM readings_blocks b CROSS JOIN readings r WHERE b.max_ts >= ?1 "
                                "AND r.id >= b.block << " STORE_BLOCK_SQL " AND r.id < (b.block + 1) << " STORE_BLOCK_SQL " "
                                "AND r.ts >= ?1 GROUP BY r.sensor_id, r.metric_id) x "
                                "JOIN sensors s ON s.id = x.sensor_id JOIN metrics m ON m.id = x.metric_id",
                                -1, &st, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 1, since_ms);
        while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                r = cb((const char *) sqlite3_column_text(st, 0), (const char *) sqlite3_column_text(st, 1),
                       sqlite3_column_int64(st, 2), userdata);
                if (r < 0)
                        break;
                rc = SQLITE_OK;
        }
        if (r >= 0 && rc != SQLITE_DONE)
                r = store_sqlite_errno(s->db, rc) ?: -EIO;
        sqlite3_finalize(st);
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
