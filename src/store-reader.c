/* SPDX-License-Identifier: MIT */
/* The store's read-only side: filtered walks over readings, latest values, counts and rejects. */
#include <assert.h>
#include <sqlite3.h>
#include <stdio.h>
#include <sys/stat.h>

#include "collector/store-reader.h"
#include "collector/store.h"
#include "store-internal.h"

struct StoreReader {
        sqlite3 *db;
};

StoreReader *store_reader_free(StoreReader *r) {
        if (!r)
                return NULL;
        (void) sqlite3_close(r->db);
        free(r);
        return NULL;
}

int store_reader_open(const char *path, StoreReader **ret) {
        _cleanup_(store_reader_freep) StoreReader *r = NULL;
        StoreIdentity id;
        struct stat st;
        int rc;

        assert(path && ret);

        /* SQLite would say "unable to open"; a person wants to know the file is missing. */
        if (stat(path, &st) < 0)
                return -errno;
        if (S_ISDIR(st.st_mode))
                return -EISDIR;

        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        rc = store_sqlite_open(path, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, &r->db);
        if (rc != SQLITE_OK)
                return store_sqlite_errno(r->db, rc) ?: -EIO;

        rc = store_identify(r->db, &id);
        if (rc != SQLITE_OK)
                return store_sqlite_errno(r->db, rc) ?: -EIO;
        if (id.application_id != STORE_APPLICATION_ID)
                return -EMEDIUMTYPE;
        if (id.user_version > STORE_SCHEMA_VERSION)
                return -EPROTONOSUPPORT;
        if (id.user_version < 1)
                return -EMEDIUMTYPE;

        *ret = TAKE_PTR(r);
        return 0;
}

/* Binds the common filter parameters by name; unused names are skipped. */
static int bind_filter(sqlite3_stmt *st, const StoreFilter *f) {
        int rc = SQLITE_OK, i;

        if ((i = sqlite3_bind_parameter_index(st, ":sensor")) > 0)
                rc = f->sensor ? sqlite3_bind_text(st, i, f->sensor, -1, SQLITE_STATIC) : sqlite3_bind_null(st, i);
        if (rc == SQLITE_OK && (i = sqlite3_bind_parameter_index(st, ":metric")) > 0)
                rc = f->metric ? sqlite3_bind_text(st, i, f->metric, -1, SQLITE_STATIC) : sqlite3_bind_null(st, i);
        if (rc == SQLITE_OK && (i = sqlite3_bind_parameter_index(st, ":source")) > 0)
                rc = f->source >= 0 ? sqlite3_bind_int(st, i, f->source) : sqlite3_bind_null(st, i);
        if (rc == SQLITE_OK && (i = sqlite3_bind_parameter_index(st, ":since")) > 0)
                rc = sqlite3_bind_int64(st, i, f->since_ms);
        if (rc == SQLITE_OK && (i = sqlite3_bind_parameter_index(st, ":until")) > 0)
                rc = sqlite3_bind_int64(st, i, f->until_ms);
        if (rc == SQLITE_OK && (i = sqlite3_bind_parameter_index(st, ":limit")) > 0)
                rc = sqlite3_bind_int64(st, i, f->limit > 0 && f->limit <= INT64_MAX ? (int64_t) f->limit : -1);
        return rc;
}

static int reader_prepare(StoreReader *r, const char *sql, const StoreFilter *f, sqlite3_stmt **ret) {
        sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(r->db, sql, -1, &st, NULL);
        if (rc == SQLITE_OK)
                rc = bind_filter(st, f);
        if (rc != SQLITE_OK) {
                sqlite3_finalize(st);
                return store_sqlite_errno(r->db, rc) ?: -EIO;
        }
        *ret = st;
        return 0;
}

/* Runs sql with the filter f bound and calls row(st, userdata) for each row; a negative return
 * from row stops the walk and is returned. Returns 0 or -errno. */
static int reader_walk(StoreReader *r, const char *sql, const StoreFilter *f,
                       int (*row)(sqlite3_stmt *st, void *userdata), void *userdata) {
        sqlite3_stmt *st = NULL;
        int rc, k;

        k = reader_prepare(r, sql, f, &st);
        if (k < 0)
                return k;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                k = row(st, userdata);
                if (k < 0) {
                        sqlite3_finalize(st);
                        return k;
                }
        }
        k = rc == SQLITE_DONE ? 0 : (store_sqlite_errno(r->db, rc) ?: -EIO);
        sqlite3_finalize(st);
        return k;
}

/* The caller's callback of a walk and its userdata, one type per kind of row. */
typedef struct ReadingWalk {
        int (*cb)(const StoredReading *row, void *userdata);
        void *userdata;
} ReadingWalk;

typedef struct CountWalk {
        int (*cb)(const StoredCount *row, void *userdata);
        void *userdata;
} CountWalk;

typedef struct RejectWalk {
        int (*cb)(const StoredReject *row, void *userdata);
        void *userdata;
} RejectWalk;

/* Rows of (id, sensor, metric, value, ts, sensor_ts, received, source, origin). */
static int reading_row(sqlite3_stmt *st, void *userdata) {
        const ReadingWalk *w = userdata;
        StoredReading row = {
                .id = sqlite3_column_int64(st, 0),
                .sensor = strempty((const char *) sqlite3_column_text(st, 1)),
                .metric = strempty((const char *) sqlite3_column_text(st, 2)),
                .value = sqlite3_column_double(st, 3),
                .ts_ms = sqlite3_column_int64(st, 4),
                .sensor_ts = sqlite3_column_type(st, 5) != SQLITE_NULL,
                .received_ms = sqlite3_column_int64(st, 6),
                .source = strempty((const char *) sqlite3_column_text(st, 7)),
                .origin = strempty((const char *) sqlite3_column_text(st, 8)),
        };

        return w->cb(&row, w->userdata);
}

/* Rows of (sensor, metric, count, first ts, last ts). */
static int count_row(sqlite3_stmt *st, void *userdata) {
        const CountWalk *w = userdata;
        StoredCount row = {
                .sensor = strempty((const char *) sqlite3_column_text(st, 0)),
                .metric = strempty((const char *) sqlite3_column_text(st, 1)),
                .count = (uint64_t) sqlite3_column_int64(st, 2),
                .first_ts_ms = sqlite3_column_int64(st, 3),
                .last_ts_ms = sqlite3_column_int64(st, 4),
        };

        return w->cb(&row, w->userdata);
}

/* Rows of (id, received, source, origin, reason, raw). */
static int reject_row(sqlite3_stmt *st, void *userdata) {
        const RejectWalk *w = userdata;
        StoredReject row = {
                .id = sqlite3_column_int64(st, 0),
                .received_ms = sqlite3_column_int64(st, 1),
                .source = strempty((const char *) sqlite3_column_text(st, 2)),
                .origin = strempty((const char *) sqlite3_column_text(st, 3)),
                .reason = strempty((const char *) sqlite3_column_text(st, 4)),
                .raw = sqlite3_column_blob(st, 5) ?: "", /* NULL for an empty blob */
                .raw_size = (size_t) sqlite3_column_bytes(st, 5),
        };

        return w->cb(&row, w->userdata);
}

#define READING_COLUMNS                                                                            \
        " r.id, (SELECT name FROM sensors WHERE id = r.sensor_id), (SELECT name FROM metrics WHERE id = r.metric_id)," \
        " r.value, r.ts, r.sensor_ts, r.received, (SELECT name FROM sources WHERE id = r.source_id),"  \
        " (SELECT name FROM origins WHERE id = r.origin_id)"

int store_reader_readings(StoreReader *r, const StoreFilter *f,
                          int (*cb)(const StoredReading *row, void *userdata), void *userdata) {
        char where[512], sql[2048];

        assert(r && f && cb);

        /* Only the filters that are set, as name -> id lookups, so that the planner sees plain
         * equalities and uses the key index (sensor_id, metric_id, ts) or the ts index. */
        /* A sensor without a metric: "metric_id IN (every metric)" selects the same rows (the store
         * interns each name before a row uses it and drops only names no row uses), but it lets
         * the planner seek (sensor_id, metric_id, ts) once per metric instead of walking every
         * key of the sensor: on a year-old store, "--sensor X --since 1h" took 400 ms that way
         * and takes 10 ms this way (docs/BENCHMARKS.md). */
        snprintf(where, sizeof(where), "r.ts >= :since AND r.ts < :until%s%s%s",
                 f->sensor ? " AND r.sensor_id = (SELECT id FROM sensors WHERE name = :sensor)" : "",
                 f->metric   ? " AND r.metric_id = (SELECT id FROM metrics WHERE name = :metric)"
                 : f->sensor ? " AND r.metric_id IN (SELECT id FROM metrics)"
                             : "",
                 f->source >= 0 ? " AND r.source_id = :source" : "");
        if (f->limit > 0)
                /* The newest N, shown oldest first. */
                snprintf(sql, sizeof(sql),
                         "SELECT * FROM (SELECT" READING_COLUMNS " FROM readings r WHERE %s"
                         " ORDER BY r.ts DESC, r.id DESC LIMIT :limit) ORDER BY 5, 1",
                         where);
        else
                snprintf(sql, sizeof(sql), "SELECT" READING_COLUMNS " FROM readings r WHERE %s ORDER BY r.ts, r.id",
                         where);
        return reader_walk(r, sql, f, reading_row, &(ReadingWalk){ cb, userdata });
}

int store_reader_latest(StoreReader *r, const StoreFilter *f,
                        int (*cb)(const StoredReading *row, void *userdata), void *userdata) {
        assert(r && f && cb);

        /* One index probe per sensor and metric pair instead of a scan of every reading. */
        return reader_walk(
                r,
                "SELECT r.id, s.name, m.name, r.value, r.ts, r.sensor_ts, r.received,"
                " (SELECT name FROM sources WHERE id = r.source_id), (SELECT name FROM origins WHERE id = r.origin_id)"
                " FROM sensors s CROSS JOIN metrics m CROSS JOIN readings r"
                " WHERE (:sensor IS NULL OR s.name = :sensor) AND (:metric IS NULL OR m.name = :metric)"
                " AND r.id = (SELECT x.id FROM readings x WHERE x.sensor_id = s.id AND x.metric_id = m.id"
                "             AND (:source IS NULL OR x.source_id = :source) AND x.ts >= :since AND x.ts < :until"
                "             ORDER BY x.ts DESC, x.id DESC LIMIT 1)"
                " ORDER BY s.name, m.name",
                f, reading_row, &(ReadingWalk){ cb, userdata });
}

int store_reader_counts(StoreReader *r, const StoreFilter *f,
                        int (*cb)(const StoredCount *row, void *userdata), void *userdata) {
        assert(r && f && cb);

        return reader_walk(r,
                           "SELECT s.name, m.name, count(*), min(r.ts), max(r.ts)"
                           " FROM sensors s CROSS JOIN metrics m CROSS JOIN readings r"
                           " WHERE (:sensor IS NULL OR s.name = :sensor) AND (:metric IS NULL OR m.name = :metric)"
                           " AND r.sensor_id = s.id AND r.metric_id = m.id"
                           " AND (:source IS NULL OR r.source_id = :source) AND r.ts >= :since AND r.ts < :until"
                           " GROUP BY s.id, m.id ORDER BY s.name, m.name",
                           f, count_row, &(CountWalk){ cb, userdata });
}

int store_reader_rejects(StoreReader *r, const StoreFilter *f,
                         int (*cb)(const StoredReject *row, void *userdata), void *userdata) {
        assert(r && f && cb);

        if (f->sensor || f->metric)
                return -EINVAL;
        return reader_walk(r,
                           f->limit > 0 ? "SELECT * FROM (SELECT j.id, j.received, src.name, o.name, j.reason, j.raw"
                                          " FROM rejects j JOIN sources src ON src.id = j.source_id"
                                          " JOIN origins o ON o.id = j.origin_id"
                                          " WHERE (:source IS NULL OR j.source_id = :source)"
                                          " AND j.received >= :since AND j.received < :until"
                                          " ORDER BY j.id DESC LIMIT :limit) ORDER BY 1"
                                        : "SELECT j.id, j.received, src.name, o.name, j.reason, j.raw"
                                          " FROM rejects j JOIN sources src ON src.id = j.source_id"
                                          " JOIN origins o ON o.id = j.origin_id"
                                          " WHERE (:source IS NULL OR j.source_id = :source)"
                                          " AND j.received >= :since AND j.received < :until ORDER BY j.id",
                           f, reject_row, &(RejectWalk){ cb, userdata });
}
