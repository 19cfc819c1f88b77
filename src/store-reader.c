/* SPDX-License-Identifier: MIT */
/* The store's read-only side: filtered walks over readings, latest values, counts and rejects. */
#include <assert.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "collector/store-reader.h"
#include "collector/upstream-window.h"
#include "collector/store.h"
#include "store-internal.h"

/* The name tables a reading refers to by id. */
typedef enum ReaderName {
        READER_NAME_SENSOR,
        READER_NAME_METRIC,
        READER_NAME_SOURCE,
        READER_NAME_ORIGIN,
        _READER_NAME_MAX,
} ReaderName;

/* Names by id (IdNameCache), looked up once per walk instead of by a subquery per row (four per
 * reading were half of the instructions of a csv export, docs/BENCHMARKS.md). */
struct StoreReader {
        sqlite3 *db;
        bool has_flags;               /* readings.flags exists (not in a store older than it) */
        bool has_blocks;              /* readings_blocks exists (else readings_ts, an older store) */
        IdNameCache names[_READER_NAME_MAX];
};

StoreReader *store_reader_free(StoreReader *r) {
        if (!r)
                return NULL;
        for (size_t k = 0; k < _READER_NAME_MAX; k++)
                store_id_name_cache_done(&r->names[k]);
        (void) sqlite3_close(r->db);
        free(r);
        return NULL;
}

/* The name of id in table k, or "" for NULL or an id the table does not have (what the
 * subquery this replaces gave). Runs inside the walk's statement, so it reads the walk's own
 * snapshot: a name a concurrent daemon drops or adds meanwhile cannot be mixed in. The text is
 * owned by the cache, valid until the next miss of the same table's cache or the next walk
 * (one lookup per table per row, so a row's names last through its callback). Returns 0 or
 * -errno. */
static int reader_name(StoreReader *r, ReaderName k, sqlite3_stmt *row, int column, const char **ret) {
        static const char *const sql[_READER_NAME_MAX] = {
                [READER_NAME_SENSOR] = "SELECT name FROM sensors WHERE id = ?1",
                [READER_NAME_METRIC] = "SELECT name FROM metrics WHERE id = ?1",
                [READER_NAME_SOURCE] = "SELECT name FROM sources WHERE id = ?1",
                [READER_NAME_ORIGIN] = "SELECT name FROM origins WHERE id = ?1",
        };
        int rc;

        if (sqlite3_column_type(row, column) == SQLITE_NULL) {
                *ret = "";
                return 0;
        }
        rc = store_id_name(&r->names[k], r->db, sql[k], sqlite3_column_int64(row, column), ret);
        if (rc != SQLITE_OK)
                return rc == SQLITE_NOMEM ? -ENOMEM : (store_sqlite_errno(r->db, rc) ?: -EIO);
        return 0;
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
        /* Asked by name, not by version: the numbers of migrations are not this file's business. */
        {
                sqlite3_stmt *q = NULL;

                /* A store the daemon has not migrated yet (or is migrating: a reader sees the
                 * schema of the last commit) keeps its index on ts and has no blocks. */
                rc = sqlite3_prepare_v2(r->db,
                                        "SELECT (SELECT count(*) FROM pragma_table_info('readings') WHERE name = 'flags'),"
                                        " (SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'readings_blocks')",
                                        -1, &q, NULL);
                if (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
                        r->has_flags = sqlite3_column_int(q, 0) > 0;
                        r->has_blocks = sqlite3_column_int(q, 1) > 0;
                        rc = SQLITE_OK;
                }
                sqlite3_finalize(q);
                if (rc != SQLITE_OK)
                        return store_sqlite_errno(r->db, rc) ?: -EIO;
        }

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
        StoreReader *reader;          /* reading_id_row(): where the names are */
} ReadingWalk;

typedef struct CountWalk {
        int (*cb)(const StoredCount *row, void *userdata);
        void *userdata;
} CountWalk;

typedef struct RejectWalk {
        int (*cb)(const StoredReject *row, void *userdata);
        void *userdata;
} RejectWalk;

/* Rows of (id, sensor, metric, value, ts, sensor_ts, received, source, origin, flags). */
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
                .flags = (unsigned) sqlite3_column_int(st, 9),
        };

        return w->cb(&row, w->userdata);
}

/* Rows of (id, sensor_id, metric_id, value, ts, sensor_ts, received, source_id, origin_id, flags):
 * the names from the reader's caches. */
static int reading_id_row(sqlite3_stmt *st, void *userdata) {
        const ReadingWalk *w = userdata;
        StoredReading row = {
                .id = sqlite3_column_int64(st, 0),
                .value = sqlite3_column_double(st, 3),
                .ts_ms = sqlite3_column_int64(st, 4),
                .sensor_ts = sqlite3_column_type(st, 5) != SQLITE_NULL,
                .received_ms = sqlite3_column_int64(st, 6),
                .flags = (unsigned) sqlite3_column_int(st, 9),
        };
        int k;

        k = reader_name(w->reader, READER_NAME_SENSOR, st, 1, &row.sensor);
        if (k >= 0)
                k = reader_name(w->reader, READER_NAME_METRIC, st, 2, &row.metric);
        if (k >= 0)
                k = reader_name(w->reader, READER_NAME_SOURCE, st, 7, &row.source);
        if (k >= 0)
                k = reader_name(w->reader, READER_NAME_ORIGIN, st, 8, &row.origin);
        if (k < 0)
                return k;
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

/* Ids, not names: reading_id_row() turns them into names. */
#define READING_COLUMNS                                                                            \
        " r.id, r.sensor_id, r.metric_id, r.value, r.ts, r.sensor_ts, r.received, r.source_id, r.origin_id, %s"

/* The flags column, or 0 in a store from before it. */
static const char *flags_column(const StoreReader *r) {
        return r->has_flags ? "r.flags" : "0";
}

/* The condition of f->flags (see StoreFilter), or "" for none. */
static const char *flags_where(const StoreReader *r, const StoreFilter *f, char *buf, size_t size) {
        if (f->flags == 0)
                return "";
        if (!r->has_flags)
                return " AND 0";
        snprintf(buf, size, " AND (0%s%s%s)", f->flags & READING_FLAG_UNSYNCED ? " OR r.flags & 3 = 1" : "",
                 f->flags & READING_FLAG_CORRECTED ? " OR r.flags & 2 != 0" : "",
                 f->flags & READING_FLAG_SUSPECT_TS ? " OR r.flags & 4 != 0" : "");
        return buf;
}

/* ---- time ranges without a sensor: windows over readings_blocks ----
 *
 * No index orders readings by ts (docs/STORE.md, "Time without an index"). A time range reads
 * the blocks of ids whose ts range meets it, each a range of the table in id order, and sorts
 * by (ts, id) what it read. To stream a range of any size in that order with a bounded sort,
 * it goes in windows of ts: the blocks sorted by their smallest ts are cut every WINDOW_BLOCKS
 * blocks at a ts where a block starts; window k holds the rows with cut[k] <= ts < cut[k+1],
 * read from every block whose range meets it (the ones that start in it, and the few that
 * started before and reach into it: a sensor replaying its buffer, a block that straddles a
 * cut). Windows do not overlap in ts, so each sorted window follows the one before, and the
 * rows come out in (ts, id) order as a single sort would give them. "The newest N" counts
 * windows back from the newest until they hold N rows and skips the surplus at the start. */
#define WINDOW_BLOCKS 16

typedef struct Block {
        int64_t block, min_ts, max_ts;
} Block;

typedef struct Window {
        int64_t lo, hi;               /* lo <= ts < hi */
        char *blocks;                 /* a JSON array of the block numbers to read */
} Window;

typedef struct BlockWalk {
        ReadingWalk inner;
        uint64_t skip;                /* rows to skip before calling inner */
} BlockWalk;

static int block_reading_row(sqlite3_stmt *st, void *userdata) {
        BlockWalk *w = userdata;

        if (w->skip > 0) {
                w->skip--;
                return 0;
        }
        return reading_id_row(st, &w->inner);
}

static int block_compare(const void *a, const void *b) {
        const Block *x = a, *y = b;

        if (x->min_ts != y->min_ts)
                return x->min_ts < y->min_ts ? -1 : 1;
        return x->block < y->block ? -1 : x->block > y->block;
}

/* The blocks whose ts range meets [since, until), sorted by their smallest ts. Returns 0 or -errno. */
static int load_blocks(StoreReader *r, const StoreFilter *f, Block **ret, size_t *ret_n) {
        _cleanup_free_ Block *v = NULL;
        sqlite3_stmt *st = NULL;
        size_t n = 0, cap = 0;
        int rc, k;

        /* One of the two indexes, chosen here: the planner has no statistics, and picking the
         * one on min_ts for a recent range walks every block (50 ms on a year-old store). The
         * unary + keeps a column from using its index. */
        k = reader_prepare(r,
                           f->since_ms == INT64_MIN && f->until_ms != INT64_MAX
                                   ? "SELECT block, min_ts, max_ts FROM readings_blocks WHERE +max_ts >= :since AND min_ts < :until"
                                   : "SELECT block, min_ts, max_ts FROM readings_blocks WHERE max_ts >= :since AND +min_ts < :until",
                           f, &st);
        if (k < 0)
                return k;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                if (n == cap) {
                        Block *b = reallocarray(v, cap = MAX(cap * 2, (size_t) 256), sizeof(Block));
                        if (!b) {
                                sqlite3_finalize(st);
                                return -ENOMEM;
                        }
                        v = b;
                }
                v[n++] = (Block){ sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1), sqlite3_column_int64(st, 2) };
        }
        k = rc == SQLITE_DONE ? 0 : (store_sqlite_errno(r->db, rc) ?: -EIO);
        sqlite3_finalize(st);
        if (k < 0)
                return k;
        if (n > 0)
                qsort(v, n, sizeof(Block), block_compare);
        *ret = TAKE_PTR(v);
        *ret_n = n;
        return 0;
}

static void windows_free(Window *w, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(w[i].blocks);
        free(w);
}

/* Cuts the blocks into windows (see above) with the blocks each one reads. Returns 0 or -errno. */
static int make_windows(const StoreFilter *f, const Block *b, size_t n, Window **ret, size_t *ret_n) {
        _cleanup_free_ size_t *active = NULL;
        Window *w = NULL;
        size_t nw = 0, na = 0, next = 0;

        active = calloc(MAX(n, (size_t) 1), sizeof(size_t));
        w = calloc(MAX(n, (size_t) 1), sizeof(Window));
        if (!active || !w) {
                free(w);
                return -ENOMEM;
        }
        while (next < n) {
                size_t end = MIN(next + WINDOW_BLOCKS, n), keep = 0, len = 0;
                Window *x = &w[nw];

                /* A cut where a block starts and the one before started earlier. */
                while (end < n && b[end].min_ts == b[end - 1].min_ts)
                        end++;
                x->lo = nw == 0 ? f->since_ms : b[next].min_ts;
                x->hi = end < n ? b[end].min_ts : f->until_ms;
                while (next < end)
                        active[na++] = next++;
                for (size_t i = 0; i < na; i++)
                        if (b[active[i]].max_ts >= x->lo)
                                active[keep++] = active[i];
                na = keep;
                /* "[" and, per block, up to 20 digits, a sign and a comma; "]" and NUL. */
                x->blocks = malloc(na * 22 + 3);
                if (!x->blocks) {
                        windows_free(w, nw);
                        return -ENOMEM;
                }
                x->blocks[len++] = '[';
                for (size_t i = 0; i < na; i++)
                        len += (size_t) sprintf(x->blocks + len, "%s%" PRId64, i > 0 ? "," : "", b[active[i]].block);
                strcpy(x->blocks + len, "]");
                nw++;
        }
        *ret = w;
        *ret_n = nw;
        return 0;
}

/* Binds the window x into st (prepared with the filter bound). Returns an SQLite code. */
static int bind_window(sqlite3_stmt *st, const Window *x) {
        int rc;

        rc = sqlite3_reset(st);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_text(st, sqlite3_bind_parameter_index(st, ":blocks"), x->blocks, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, sqlite3_bind_parameter_index(st, ":lo"), x->lo);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, sqlite3_bind_parameter_index(st, ":hi"), x->hi);
        return rc;
}

/* The rows of where (the filter's condition) in (ts, id) order, window by window. With a limit
 * and partial (f's since is narrower than the caller's), returns 1 without a row when the range
 * holds fewer than the limit: the caller tries a wider one. Returns 0, 1 or -errno. */
static int readings_by_blocks(StoreReader *r, const StoreFilter *f, const char *where, bool partial,
                              int (*cb)(const StoredReading *row, void *userdata), void *userdata) {
        _cleanup_free_ Block *blocks = NULL;
        Window *w = NULL;
        size_t n = 0, nw = 0, first = 0;
        BlockWalk walk = { .inner = { cb, userdata, r } };
        sqlite3_stmt *rows = NULL, *count = NULL;
        char sql[3072], from[1024];
        int rc = SQLITE_OK, k;

        k = load_blocks(r, f, &blocks, &n);
        if (k < 0)
                return k;
        k = make_windows(f, blocks, n, &w, &nw);
        if (k < 0)
                return k;

        snprintf(from, sizeof(from),
                 " FROM json_each(:blocks) j CROSS JOIN readings r WHERE r.id >= j.value << " STORE_BLOCK_SQL
                 " AND r.id < (j.value + 1) << " STORE_BLOCK_SQL " AND r.ts >= :lo AND r.ts < :hi AND %s",
                 where);
        if (f->limit > 0) {
                /* The newest N: back from the newest window until N rows are found. */
                uint64_t total = 0;

                snprintf(sql, sizeof(sql), "SELECT count(*)%s", from);
                k = reader_prepare(r, sql, f, &count);
                for (size_t i = nw; k >= 0 && rc == SQLITE_OK && i-- > 0;) {
                        if (w[i].hi <= w[i].lo)
                                continue;
                        rc = bind_window(count, &w[i]);
                        if (rc == SQLITE_OK && (rc = sqlite3_step(count)) == SQLITE_ROW) {
                                total += (uint64_t) sqlite3_column_int64(count, 0);
                                rc = SQLITE_OK;
                        }
                        if (rc == SQLITE_OK && total >= f->limit) {
                                first = i;
                                walk.skip = total - f->limit;
                                break;
                        }
                }
                if (k >= 0 && rc != SQLITE_OK)
                        k = store_sqlite_errno(r->db, rc) ?: -EIO;
                sqlite3_finalize(count);
                if (k >= 0 && partial && total < f->limit) {
                        windows_free(w, nw);
                        return 1;
                }
        }
        if (k >= 0) {
                snprintf(sql, sizeof(sql), "SELECT" READING_COLUMNS "%s ORDER BY r.ts, r.id", flags_column(r), from);
                k = reader_prepare(r, sql, f, &rows);
        }
        for (size_t i = first; k >= 0 && i < nw; i++) {
                if (w[i].hi <= w[i].lo)
                        continue;
                rc = bind_window(rows, &w[i]);
                while (rc == SQLITE_OK && (rc = sqlite3_step(rows)) == SQLITE_ROW) {
                        k = block_reading_row(rows, &walk);
                        rc = k < 0 ? SQLITE_DONE : SQLITE_OK;
                }
                if (k >= 0 && rc != SQLITE_DONE)
                        k = store_sqlite_errno(r->db, rc) ?: -EIO;
        }
        sqlite3_finalize(rows);
        windows_free(w, nw);
        return k < 0 ? k : 0;
}

/* The newest N of a range that may reach back years: first the last minute before the newest
 * reading, then 16 times as far back each time, so that a handful of rows does not load the
 * blocks of the whole store. Returns 0 or -errno. */
static int newest_by_blocks(StoreReader *r, const StoreFilter *f, const char *where,
                            int (*cb)(const StoredReading *row, void *userdata), void *userdata) {
        sqlite3_stmt *st = NULL;
        int64_t top = INT64_MIN, span = 60 * 1000;
        int rc, k;

        rc = sqlite3_prepare_v2(r->db, "SELECT max(max_ts) FROM readings_blocks", -1, &st, NULL);
        if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                if (sqlite3_column_type(st, 0) != SQLITE_NULL)
                        top = sqlite3_column_int64(st, 0);
                rc = SQLITE_OK;
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_OK)
                return store_sqlite_errno(r->db, rc) ?: -EIO;
        if (top == INT64_MIN)
                return 0; /* no reading at all */
        top = MIN(top, f->until_ms - 1);
        for (;;) {
                StoreFilter g = *f;
                bool partial = top > INT64_MIN + span && top - span > f->since_ms && span < INT64_MAX / 16;

                if (partial)
                        g.since_ms = top - span;
                k = readings_by_blocks(r, &g, where, partial, cb, userdata);
                if (k <= 0)
                        return k;
                span *= 16;
        }
}

int store_reader_readings(StoreReader *r, const StoreFilter *f,
                          int (*cb)(const StoredReading *row, void *userdata), void *userdata) {
        char where[640], sql[2048], flags[128];

        assert(r && f && cb);

        /* Only the filters that are set, as name -> id lookups, so that the planner sees plain
         * equalities and uses the key index (sensor_id, metric_id, ts), or the ts index of a store not
         * migrated yet; without a sensor, a v6 store reads readings_blocks below. */
        /* A sensor without a metric: "metric_id IN (every metric)" selects the same rows (the store
         * interns each name before a row uses it and drops only names no row uses), but it lets
         * the planner seek (sensor_id, metric_id, ts) once per metric instead of walking every
         * key of the sensor: on a year-old store, "--sensor X --since 1h" took 400 ms that way
         * and takes 10 ms this way (docs/BENCHMARKS.md). */
        snprintf(where, sizeof(where), "r.ts >= :since AND r.ts < :until%s%s%s%s",
                 f->sensor ? " AND r.sensor_id = (SELECT id FROM sensors WHERE name = :sensor)" : "",
                 f->metric   ? " AND r.metric_id = (SELECT id FROM metrics WHERE name = :metric)"
                 : f->sensor ? " AND r.metric_id IN (SELECT id FROM metrics)"
                             : "",
                 f->source >= 0 ? " AND r.source_id = :source" : "", flags_where(r, f, flags, sizeof(flags)));
        /* A sensor's rows come from the key index, in (ts, id) order within each metric;
         * without a sensor, from the time summary. */
        if (!f->sensor && r->has_blocks)
                return f->limit > 0 ? newest_by_blocks(r, f, where, cb, userdata)
                                    : readings_by_blocks(r, f, where, false, cb, userdata);
        if (f->limit > 0)
                /* The newest N, shown oldest first. */
                snprintf(sql, sizeof(sql),
                         "SELECT * FROM (SELECT" READING_COLUMNS " FROM readings r WHERE %s"
                         " ORDER BY r.ts DESC, r.id DESC LIMIT :limit) ORDER BY 5, 1",
                         flags_column(r), where);
        else
                snprintf(sql, sizeof(sql), "SELECT" READING_COLUMNS " FROM readings r WHERE %s ORDER BY r.ts, r.id",
                         flags_column(r), where);
        /* A walk's ids are read in the walk's snapshot: names cached by an earlier walk may
         * have been dropped and their ids given to others since. */
        for (size_t k = 0; k < _READER_NAME_MAX; k++)
                store_id_name_cache_clear(&r->names[k]);
        return reader_walk(r, sql, f, reading_id_row, &(ReadingWalk){ cb, userdata, r });
}

int store_reader_latest(StoreReader *r, const StoreFilter *f,
                        int (*cb)(const StoredReading *row, void *userdata), void *userdata) {
        char sql[2048];

        assert(r && f && cb);

        /* One index probe per sensor and metric pair instead of a scan of every reading. The
         * flags filter, if any, applies to the latest value (is the latest one good?). */
        snprintf(sql, sizeof(sql),
                 "SELECT r.id, s.name, m.name, r.value, r.ts, r.sensor_ts, r.received,"
                 " (SELECT name FROM sources WHERE id = r.source_id), (SELECT name FROM origins WHERE id = r.origin_id), %s"
                 " FROM sensors s CROSS JOIN metrics m CROSS JOIN readings r"
                 " WHERE (:sensor IS NULL OR s.name = :sensor) AND (:metric IS NULL OR m.name = :metric)"
                 " AND r.id = (SELECT x.id FROM readings x WHERE x.sensor_id = s.id AND x.metric_id = m.id"
                 "             AND (:source IS NULL OR x.source_id = :source) AND x.ts >= :since AND x.ts < :until"
                 "             ORDER BY x.ts DESC, x.id DESC LIMIT 1)%s"
                 " ORDER BY s.name, m.name",
                 flags_column(r), flags_where(r, f, (char[128]){}, 128));
        return reader_walk(r, sql, f, reading_row, &(ReadingWalk){ cb, userdata, r });
}

int store_reader_counts(StoreReader *r, const StoreFilter *f,
                        int (*cb)(const StoredCount *row, void *userdata), void *userdata) {
        char sql[1024], flags[128];

        assert(r && f && cb);

        snprintf(sql, sizeof(sql),
                 "SELECT s.name, m.name, count(*), min(r.ts), max(r.ts)"
                 " FROM sensors s CROSS JOIN metrics m CROSS JOIN readings r"
                 " WHERE (:sensor IS NULL OR s.name = :sensor) AND (:metric IS NULL OR m.name = :metric)"
                 " AND r.sensor_id = s.id AND r.metric_id = m.id"
                 " AND (:source IS NULL OR r.source_id = :source) AND r.ts >= :since AND r.ts < :until%s"
                 " GROUP BY s.id, m.id ORDER BY s.name, m.name",
                 flags_where(r, f, flags, sizeof(flags)));
        return reader_walk(r, sql, f, count_row, &(CountWalk){ cb, userdata });
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

/* ---- events and gaps ---- */

typedef struct EventWalk {
        int (*cb)(const StoredEvent *row, void *userdata);
        void *userdata;
} EventWalk;

typedef struct GapWalk {
        int (*cb)(const StoredGap *row, void *userdata);
        void *userdata;
} GapWalk;

/* Rows of (id, ts, kind, sensor, subject, start_ts, end_ts, count, detail). */
static int event_row(sqlite3_stmt *st, void *userdata) {
        const EventWalk *w = userdata;
        StoredEvent row = {
                .id = sqlite3_column_int64(st, 0),
                .ts_ms = sqlite3_column_int64(st, 1),
                .kind = strempty((const char *) sqlite3_column_text(st, 2)),
                .sensor = (const char *) sqlite3_column_text(st, 3),
                .subject = (const char *) sqlite3_column_text(st, 4),
                .start_ms = sqlite3_column_int64(st, 5),
                .end_ms = sqlite3_column_int64(st, 6),
                .count = (uint64_t) sqlite3_column_int64(st, 7),
                .detail = (const char *) sqlite3_column_text(st, 8),
        };

        return w->cb(&row, w->userdata);
}

/* Rows of (sensor, start, end, cause). */
static int gap_row(sqlite3_stmt *st, void *userdata) {
        const GapWalk *w = userdata;
        StoredGap row = {
                .sensor = strempty((const char *) sqlite3_column_text(st, 0)),
                .start_ms = sqlite3_column_int64(st, 1),
                .end_ms = sqlite3_column_int64(st, 2),
                .cause = (const char *) sqlite3_column_text(st, 3),
        };

        return w->cb(&row, w->userdata);
}

/* A store from before the events table (its daemon has not run this version yet). Returns 1
 * when the table is there, 0 when not, or -errno. */
static int reader_has_events(StoreReader *r) {
        sqlite3_stmt *st = NULL;
        int rc, k;

        rc = sqlite3_prepare_v2(r->db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'", -1, &st,
                                NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_step(st);
        k = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : (store_sqlite_errno(r->db, rc) ?: -EIO);
        sqlite3_finalize(st);
        return k;
}

int store_reader_events(StoreReader *r, const StoreFilter *f,
                        int (*cb)(const StoredEvent *row, void *userdata), void *userdata) {
        int k;

        assert(r && f && cb);
        if (f->metric || f->source >= 0)
                return -EINVAL;
        k = reader_has_events(r);
        if (k <= 0)
                return k;
#define EVENT_COLUMNS " id, ts, kind, sensor, subject, start_ts, end_ts, count, detail FROM events"
#define EVENT_WHERE " WHERE (:sensor IS NULL OR sensor = :sensor OR sensor IS NULL) AND ts >= :since AND ts < :until"
        return reader_walk(r,
                           f->limit > 0 ? "SELECT * FROM (SELECT" EVENT_COLUMNS EVENT_WHERE
                                          " ORDER BY ts DESC, id DESC LIMIT :limit) ORDER BY 2, 1"
                                        : "SELECT" EVENT_COLUMNS EVENT_WHERE " ORDER BY ts, id",
                           f, event_row, &(EventWalk){ cb, userdata });
#undef EVENT_COLUMNS
#undef EVENT_WHERE
}

int store_reader_gaps(StoreReader *r, const StoreFilter *f,
                      int (*cb)(const StoredGap *row, void *userdata), void *userdata) {
        int k;

        assert(r && f && cb);
        if (f->metric || f->source >= 0 || f->limit > 0)
                return -EINVAL;
        k = reader_has_events(r);
        if (k <= 0)
                return k;
        /* A closed gap is a sensor_back event (last seen .. back); an open one the newest
         * sensor_silent event of a sensor with no sensor_back after it. The cause is the first
         * input or daemon outage that overlaps the gap. */
        return reader_walk(
                r,
                "WITH g(sensor, subject, start_ts, end_ts) AS ("
                "  SELECT sensor, subject, start_ts, end_ts FROM events WHERE kind = 'sensor_back'"
                "  UNION ALL"
                "  SELECT s.sensor, s.subject, s.start_ts, NULL FROM events s WHERE s.kind = 'sensor_silent'"
                "    AND NOT EXISTS (SELECT 1 FROM events x WHERE x.sensor = s.sensor AND x.subject IS s.subject"
                "                    AND x.id > s.id AND x.kind IN ('sensor_back', 'sensor_silent')))"
                " SELECT g.sensor || coalesce('/' || g.subject, ''), g.start_ts, g.end_ts,"
                "  (SELECT o.kind || coalesce(' ' || o.subject, '') || coalesce(' (' || o.detail || ')', '')"
                "   FROM events o WHERE o.kind IN ('input_up', 'input_down', 'daemon_down')"
                "   AND o.start_ts < coalesce(g.end_ts, 9223372036854775807)"
                "   AND coalesce(o.end_ts, 9223372036854775807) > g.start_ts"
                "   AND NOT (o.kind = 'input_down' AND EXISTS (SELECT 1 FROM events u WHERE u.kind = 'input_up'"
                "            AND u.subject IS o.subject AND u.start_ts = o.start_ts))"
                "   ORDER BY o.start_ts LIMIT 1)"
                " FROM g WHERE g.sensor IS NOT NULL AND (:sensor IS NULL OR g.sensor = :sensor)"
                " AND coalesce(g.end_ts, 9223372036854775807) > :since AND g.start_ts < :until"
                " ORDER BY g.start_ts, g.sensor",
                f, gap_row, &(GapWalk){ cb, userdata });
}

/* One text value of meta into buf ("" when absent). Returns an SQLite code. */
static int meta_text(sqlite3 *db, const char *key, char *buf, size_t size) {
        sqlite3_stmt *st = NULL;
        int rc;

        buf[0] = 0;
        rc = sqlite3_prepare_v2(db, "SELECT CAST(value AS TEXT) FROM meta WHERE key = ?1", -1, &st, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
                rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                snprintf(buf, size, "%s", strempty((const char *) sqlite3_column_text(st, 0)));
                rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE)
                rc = SQLITE_OK;
        sqlite3_finalize(st);
        return rc;
}

int store_reader_upstream(StoreReader *r, StoredUpstream *ret) {
        _cleanup_free_ char *acked = NULL;
        UpstreamWindow w;
        sqlite3_stmt *count = NULL, *first = NULL;
        char lost[32];
        SeqRange gap;
        int64_t from = 0;
        int rc;

        *ret = (StoredUpstream) {};
        upstream_window_init(&w);
        acked = malloc(65536);
        if (!acked)
                return -ENOMEM;
        rc = meta_text(r->db, "store_id", ret->store_id, sizeof(ret->store_id));
        if (rc == SQLITE_OK)
                rc = meta_text(r->db, "upstream.acked", acked, 65536);
        if (rc == SQLITE_OK)
                rc = meta_text(r->db, "upstream.lost", lost, sizeof(lost));
        if (rc != SQLITE_OK)
                return store_sqlite_errno(r->db, rc) ?: -EIO;
        snprintf(ret->acked, sizeof(ret->acked), "%s", acked);
        ret->lost = strtoull(lost, NULL, 10);
        if (acked[0] && upstream_window_load(&w, acked) < 0)
                return -EBADMSG;

        rc = sqlite3_prepare_v2(r->db, "SELECT coalesce(max(id), 0) FROM readings", -1, &count, NULL);
        if (rc == SQLITE_OK && (rc = sqlite3_step(count)) == SQLITE_ROW) {
                ret->last_seq = sqlite3_column_int64(count, 0);
                rc = SQLITE_OK;
        }
        sqlite3_finalize(count);
        count = NULL;
        if (rc == SQLITE_OK)
                rc = sqlite3_prepare_v2(r->db, "SELECT count(*) FROM readings WHERE id >= ?1 AND id <= ?2", -1, &count, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_prepare_v2(r->db, "SELECT ts, received FROM readings WHERE id >= ?1 AND id <= ?2 ORDER BY id LIMIT 1",
                                        -1, &first, NULL);
        while (rc == SQLITE_OK && upstream_window_next_gap(&w, from, ret->last_seq, &gap)) {
                sqlite3_bind_int64(count, 1, gap.lo);
                sqlite3_bind_int64(count, 2, gap.hi);
                if ((rc = sqlite3_step(count)) == SQLITE_ROW) {
                        ret->backlog += (uint64_t) sqlite3_column_int64(count, 0);
                        rc = SQLITE_OK;
                }
                sqlite3_reset(count);
                if (rc == SQLITE_OK && ret->oldest_received_ms == 0) {
                        sqlite3_bind_int64(first, 1, gap.lo);
                        sqlite3_bind_int64(first, 2, gap.hi);
                        rc = sqlite3_step(first);
                        if (rc == SQLITE_ROW) {
                                ret->oldest_ts_ms = sqlite3_column_int64(first, 0);
                                ret->oldest_received_ms = sqlite3_column_int64(first, 1);
                        }
                        rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
                        sqlite3_reset(first);
                }
                from = gap.hi;
        }
        sqlite3_finalize(count);
        sqlite3_finalize(first);
        upstream_window_clear(&w);
        if (rc != SQLITE_OK)
                return store_sqlite_errno(r->db, rc) ?: -EIO;
        return 0;
}
