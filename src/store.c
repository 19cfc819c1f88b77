/* SPDX-License-Identifier: MIT */
/* The durable store: one SQLite file in WAL mode, readings and rejects committed in small batches. */
#include <assert.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "collector/log.h"
#include "collector/store.h"
#include "collector/exit-status.h"
#include "collector/time-util.h"
#include "store-internal.h"

/* ReadingSource values are stored as they are (readings.source_id, the sources table). */
_Static_assert(READING_SOURCE_SERIAL == 0 && READING_SOURCE_MQTT == 1, "stored source ids changed");

#define BUSY_TIMEOUT_MS 1000
/* quick_check on open is bounded: a big store on an SD card would take minutes. SQLite checks
 * each b-tree's structure in one VM instruction that a progress handler cannot interrupt, so
 * the file size bounds the first part (64 MiB: about 2 s from a cold SD card) and a deadline
 * the rest. */
#define QUICK_CHECK_MAX_BYTES ((int64_t) 64 * 1024 * 1024)
#define QUICK_CHECK_BUDGET_USEC (500 * USEC_PER_MSEC)
/* How often the store checks, besides after every commit, that its files are still the ones
 * it has open (someone may delete or replace them while the daemon runs). */
#define FILE_CHECK_INTERVAL_USEC (2 * USEC_PER_SEC)

/* Forward migrations: migrations[v] takes a store from user_version v to v + 1. Never edit
 * one that has shipped; add a new one and raise STORE_SCHEMA_VERSION. */
static const char *const migrations[STORE_SCHEMA_VERSION] = {
        /* v1: interned names, readings, rejects, meta. The unique key serves both dedup and
         * queries: sensor_ts is 1 for a sensor's own timestamp (so a repeat conflicts) and NULL
         * for a receipt time (NULLs never conflict in a UNIQUE index). */
        "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value) WITHOUT ROWID;"
        "CREATE TABLE sources (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
        "INSERT INTO sources (id, name) VALUES (0, 'serial'), (1, 'mqtt');"
        "CREATE TABLE sensors (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
        "CREATE TABLE metrics (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
        "CREATE TABLE origins (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
        "CREATE TABLE readings ("
        "  id INTEGER PRIMARY KEY,"
        "  sensor_id INTEGER NOT NULL,"
        "  metric_id INTEGER NOT NULL,"
        "  ts INTEGER NOT NULL,"
        "  sensor_ts INTEGER CHECK (sensor_ts IS NULL OR sensor_ts = 1),"
        "  value REAL NOT NULL,"
        "  received INTEGER NOT NULL,"
        "  source_id INTEGER NOT NULL,"
        "  origin_id INTEGER NOT NULL);"
        "CREATE UNIQUE INDEX readings_key ON readings (sensor_id, metric_id, ts, sensor_ts);"
        "CREATE TABLE rejects ("
        "  id INTEGER PRIMARY KEY,"
        "  received INTEGER NOT NULL,"
        "  source_id INTEGER NOT NULL,"
        "  origin_id INTEGER NOT NULL,"
        "  reason TEXT NOT NULL,"
        "  raw BLOB NOT NULL);",

        /* v2: time-ordered queries that name no sensor; readable views for the sqlite3 shell. */
        "CREATE INDEX readings_ts ON readings (ts);"
        "CREATE VIEW readings_view AS"
        "  SELECT r.id, s.name AS sensor, m.name AS metric, r.value, r.ts,"
        "         r.sensor_ts IS NOT NULL AS sensor_ts, r.received, src.name AS source, o.name AS origin"
        "  FROM readings r JOIN sensors s ON s.id = r.sensor_id JOIN metrics m ON m.id = r.metric_id"
        "  JOIN sources src ON src.id = r.source_id JOIN origins o ON o.id = r.origin_id;"
        "CREATE VIEW rejects_view AS"
        "  SELECT j.id, j.received, src.name AS source, o.name AS origin, j.reason, j.raw"
        "  FROM rejects j JOIN sources src ON src.id = j.source_id JOIN origins o ON o.id = j.origin_id;",

        /* v3: what a receipt time taken before the clock was trusted needs to be corrected (see
         * docs/STORE.md). A reading carries its flags (0, no bytes in the record, for nearly
         * every row) and, only when received unsynced, CLOCK_BOOTTIME at receipt; its boot is
         * the boots row whose range of ids holds it, so no index and no boot column per row. */
        "CREATE TABLE boots ("
        "  id INTEGER PRIMARY KEY,"
        "  boot_id TEXT NOT NULL UNIQUE,"
        "  first_unsynced INTEGER,"
        "  corrected_upto INTEGER NOT NULL DEFAULT 0);"
        "ALTER TABLE readings ADD COLUMN flags INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE readings ADD COLUMN boottime INTEGER;"
        "CREATE TABLE clock_events ("
        "  id INTEGER PRIMARY KEY,"
        "  at INTEGER NOT NULL,"
        "  boot INTEGER,"
        "  kind TEXT NOT NULL,"
        "  step_ms INTEGER,"
        "  readings INTEGER,"
        "  detail TEXT);"
        "DROP VIEW readings_view;"
        "CREATE VIEW readings_view AS"
        "  SELECT r.id, s.name AS sensor, m.name AS metric, r.value, r.ts,"
        "         r.sensor_ts IS NOT NULL AS sensor_ts, r.received, src.name AS source, o.name AS origin,"
        "         (r.flags & 1) != 0 AS unsynced, (r.flags & 2) != 0 AS corrected, (r.flags & 4) != 0 AS suspect_ts"
        "  FROM readings r JOIN sensors s ON s.id = r.sensor_id JOIN metrics m ON m.id = r.metric_id"
        "  JOIN sources src ON src.id = r.source_id JOIN origins o ON o.id = r.origin_id;",

        /* v4: events, why data is missing (sensor silent and back, inputs down and up, the
         * daemon down, out-of-range bursts). Rare rows: names as text, not interned. */
        "CREATE TABLE events ("
        "  id INTEGER PRIMARY KEY,"
        "  ts INTEGER NOT NULL,"
        "  kind TEXT NOT NULL,"
        "  sensor TEXT,"
        "  subject TEXT,"
        "  start_ts INTEGER,"
        "  end_ts INTEGER,"
        "  count INTEGER,"
        "  detail TEXT);"
        "CREATE INDEX events_ts ON events (ts);"
        "CREATE INDEX events_sensor ON events (sensor, ts);",

        /* v5: upstream forwarding. A reading's id is its sequence number; the high-water mark
         * keeps ids from being reused once retention has emptied the table (SQLite gives
         * max(id) + 1, so without it an emptied table would start at 1 again). A random store
         * id tells this store from the one on a reflashed card. No table or index per reading:
         * what was acknowledged upstream is a cursor in meta (docs/UPSTREAM.md). */
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', lower(hex(randomblob(16))));"
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('readings_high_water',"
        "  (SELECT coalesce(max(id), 0) FROM readings));",

        /* v6: one b-tree insert less per reading. The index on ts goes (store_drop_old_indexes(),
         * after this transaction); time ranges without a sensor read the table in id order
         * through a summary of each block of ids' ts range (docs/STORE.md, "Time without an
         * index"). Filled here block by block, each a range of the table (one pass over it, no
         * sort), skipping ids retention has removed. */
        "CREATE TABLE readings_blocks ("
        "  block INTEGER PRIMARY KEY,"
        "  min_ts INTEGER NOT NULL,"
        "  max_ts INTEGER NOT NULL);"
        "CREATE INDEX readings_blocks_max ON readings_blocks (max_ts);"
        "CREATE INDEX readings_blocks_min ON readings_blocks (min_ts);"
        "WITH RECURSIVE b(n) AS ("
        "  SELECT min(id) >> " STORE_BLOCK_SQL " FROM readings"
        "  UNION ALL SELECT (SELECT min(id) FROM readings WHERE id >= (n + 1) << " STORE_BLOCK_SQL ") >> " STORE_BLOCK_SQL
        "  FROM b WHERE n IS NOT NULL)"
        " INSERT INTO readings_blocks (block, min_ts, max_ts)"
        "  SELECT n, (SELECT min(ts) FROM readings WHERE id >= n << " STORE_BLOCK_SQL " AND id < (n + 1) << " STORE_BLOCK_SQL "),"
        "    (SELECT max(ts) FROM readings WHERE id >= n << " STORE_BLOCK_SQL " AND id < (n + 1) << " STORE_BLOCK_SQL ")"
        "  FROM b WHERE n IS NOT NULL;",

        /* v7: a clock event records where it stands among the readings (the largest reading id
         * when it was written), so retention can tell when the readings it explains are gone
         * without trusting its time, which may come from a wrong clock (docs/STORE.md,
         * "Retention" under "Time you can trust"). Rows from before are not known: NULL, kept
         * until every reading stored before the first event that has one is gone. */
        "ALTER TABLE clock_events ADD COLUMN seq INTEGER;",
};

static const char *const stmt_sql[_STMT_MAX] = {
        [STMT_BEGIN] = "BEGIN IMMEDIATE",
        [STMT_COMMIT] = "COMMIT",
        [STMT_INSERT_READING] = "INSERT OR IGNORE INTO readings "
                                "(sensor_id, metric_id, ts, sensor_ts, value, received, source_id, origin_id, flags, boottime, id) "
                                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        [STMT_INSERT_REJECT] = ("INSERT INTO rejects (received, source_id, origin_id, reason, raw) "
                                "VALUES (?1, ?2, ?3, ?4, ?5)"),
        [STMT_FIND_SENSOR] = "SELECT id FROM sensors WHERE name = ?1",
        [STMT_FIND_METRIC] = "SELECT id FROM metrics WHERE name = ?1",
        [STMT_FIND_ORIGIN] = "SELECT id FROM origins WHERE name = ?1",
        [STMT_ADD_SENSOR] = "INSERT INTO sensors (name) VALUES (?1)",
        [STMT_ADD_METRIC] = "INSERT INTO metrics (name) VALUES (?1)",
        [STMT_ADD_ORIGIN] = "INSERT INTO origins (name) VALUES (?1)",
        /* The third column: an unsynced receipt time, which age retention must not act on. */
        [STMT_READINGS_HEAD] = "SELECT id, received, flags & 3 = 1 FROM readings WHERE id > ?2 AND id <= ?3 ORDER BY id LIMIT ?1",
        [STMT_REJECTS_HEAD] = "SELECT id, received, 0 FROM rejects WHERE id > ?2 AND id <= ?3 ORDER BY id LIMIT ?1",
        [STMT_DELETE_READINGS] = "DELETE FROM readings WHERE id <= ?1",
        [STMT_DELETE_REJECTS] = "DELETE FROM rejects WHERE id <= ?1",
        [STMT_PAGE_COUNT] = "PRAGMA page_count",
        [STMT_FREELIST_COUNT] = "PRAGMA freelist_count",
        /* length() of a blob reads its size from the record header, not the bytes. */
        [STMT_REJECTS_SIZES] = "SELECT id, length(raw) FROM rejects ORDER BY id LIMIT ?1",
        [STMT_REJECTS_BYTES_UPTO] = "SELECT count(*), total(length(raw)) FROM rejects WHERE id <= ?1",
        [STMT_READINGS_MAX_ID] = "SELECT coalesce(max(id), 0) FROM readings",
        [STMT_WALK_READINGS] = "SELECT id, sensor_id, metric_id, origin_id FROM readings "
                               "WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3",
        [STMT_WALK_REJECTS] = "SELECT id, origin_id FROM rejects WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3",
        [STMT_SCAN_SENSORS] = "SELECT id, length(name) FROM sensors WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3",
        [STMT_SCAN_METRICS] = "SELECT id, length(name) FROM metrics WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3",
        [STMT_SCAN_ORIGINS] = "SELECT id, length(name) FROM origins WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3",
        [STMT_DROP_SENSOR] = "DELETE FROM sensors WHERE id = ?1",
        [STMT_DROP_METRIC] = "DELETE FROM metrics WHERE id = ?1",
        [STMT_DROP_ORIGIN] = "DELETE FROM origins WHERE id = ?1",
        /* A rowid range from where the last one ended (see Store.age_delete_from). */
        [STMT_DELETE_READINGS_AGED] = "DELETE FROM readings WHERE id > ?2 AND id <= ?1 AND flags & 3 != 1",
        [STMT_BOOT_FIRST_UNSYNCED] = "UPDATE boots SET first_unsynced = ?2 WHERE id = ?1 AND first_unsynced IS NULL",
        /* A receipt time is the reading's time unless the sensor sent its own (sensor_ts). */
        [STMT_CORRECT_READINGS] = "UPDATE readings SET received = boottime + ?1,"
                                  " ts = CASE WHEN sensor_ts IS NULL THEN boottime + ?1 ELSE ts END, flags = flags | 2"
                                  " WHERE id > ?2 AND id <= ?3 AND flags & 3 = 1 AND boottime IS NOT NULL",
        [STMT_BOOT_CORRECTED_UPTO] = "UPDATE boots SET corrected_upto = ?2 WHERE id = ?1",
        [STMT_INSERT_EVENT] = "INSERT INTO events (ts, kind, sensor, subject, start_ts, end_ts, count, detail) "
                              "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        [STMT_DELETE_EVENTS] = "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts < ?1 ORDER BY ts LIMIT ?2) "
                               "RETURNING " EVENT_COST_SQL,
        [STMT_SEQ_READ] = "SELECT id, sensor_id, metric_id, value, ts, sensor_ts IS NOT NULL, received, source_id, origin_id, "
                          "flags FROM readings WHERE id > ?1 AND id < ?2 ORDER BY id LIMIT ?3",
        [STMT_SEQ_COUNT] = "SELECT count(*) FROM readings WHERE id >= ?1 AND id <= ?2",
        [STMT_SET_META] = "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
        [STMT_BLOCK_UPSERT] = "INSERT INTO readings_blocks (block, min_ts, max_ts) VALUES (?1, ?2, ?3)"
                              " ON CONFLICT (block) DO UPDATE SET min_ts = min(min_ts, excluded.min_ts),"
                              " max_ts = max(max_ts, excluded.max_ts)",
        [STMT_BLOCKS_CLEAR] = "DELETE FROM readings_blocks WHERE block >= ?1 AND block <= ?2",
        [STMT_BLOCKS_RECOMPUTE] = "INSERT INTO readings_blocks (block, min_ts, max_ts)"
                                  " SELECT id >> " STORE_BLOCK_SQL ", min(ts), max(ts) FROM readings"
                                  " WHERE id >= ?1 << " STORE_BLOCK_SQL " AND id < (?2 + 1) << " STORE_BLOCK_SQL
                                  " GROUP BY id >> " STORE_BLOCK_SQL,
        /* Only blocks not pruned yet are read: the ones retention stepped over, and the new. */
        [STMT_BLOCKS_PRUNE] = "DELETE FROM readings_blocks WHERE block <= ?1 AND NOT EXISTS (SELECT 1 FROM readings"
                              " WHERE id >= block << " STORE_BLOCK_SQL " AND id < (block + 1) << " STORE_BLOCK_SQL ")",
};

/* SQLite's result codes become -errno here and nowhere else. */
int store_sqlite_errno(sqlite3 *db, int rc) {
        int sys = db ? sqlite3_system_errno(db) : 0;

        switch (rc & 0xff) {
        case SQLITE_OK:
        case SQLITE_ROW:
        case SQLITE_DONE:
                return 0;
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_IOERR:
                if (rc == SQLITE_IOERR_NOMEM)
                        return -ENOMEM;
                /* The OS error is more precise: ENOSPC, EROFS, EIO ... */
                return sys > 0 ? -sys : -EIO;
        case SQLITE_CORRUPT:
                return -EUCLEAN;
        case SQLITE_NOTADB:
                return -EBADMSG;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_READONLY:
                return -EROFS;
        case SQLITE_CANTOPEN:
                return sys > 0 ? -sys : -ENOENT;
        case SQLITE_PERM:
        case SQLITE_AUTH:
                return -EACCES;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_TOOBIG:
                return -E2BIG;
        case SQLITE_CONSTRAINT:
                return -EEXIST;
        case SQLITE_MISMATCH:
        case SQLITE_RANGE:
                return -ERANGE;
        case SQLITE_MISUSE:
                return -EINVAL;
        case SQLITE_INTERRUPT:
                return -EINTR;
        case SQLITE_PROTOCOL:
                return -EPROTO;
        case SQLITE_SCHEMA:
                return -EAGAIN;
        case SQLITE_NOLFS:
                return -EFBIG;
        default:
                return -EIO;
        }
}

int store_sqlite_open(const char *path, int flags, sqlite3 **ret_db) {
        int rc;

        rc = sqlite3_open_v2(path, ret_db, flags, NULL);
        if (*ret_db)
                sqlite3_extended_result_codes(*ret_db, 1);
        if (rc != SQLITE_OK)
                return rc;
        sqlite3_busy_timeout(*ret_db, BUSY_TIMEOUT_MS);
        return SQLITE_OK;
}

/* ---- failure ---- */

static void store_rollback(Store *s) {
        if (!s->db)
                return;
        for (size_t i = 0; i < _STMT_MAX; i++)
                if (s->stmts[i]) {
                        sqlite3_reset(s->stmts[i]);
                        sqlite3_clear_bindings(s->stmts[i]);
                }
        /* SQLite may have rolled back already (SQLITE_FULL, SQLITE_IOERR): ask, then finish it. */
        if (!sqlite3_get_autocommit(s->db))
                (void) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        s->in_transaction = false;
        s->batch_rows = 0;
        s->batch = (StoreStats) {};
        s->batch_reject_bytes = 0;
        s->batch_names_bytes = s->batch_names_count = 0;
        memset(s->batch_table_names, 0, sizeof(s->batch_table_names));
        s->batch_unsynced = 0;
        /* Names added in the rolled-back transaction are gone from the file. */
        for (size_t i = 0; i < _NAME_KIND_MAX; i++) {
                store_name_cache_clear(&s->names[i]);
                store_id_name_cache_clear(&s->seq_names[i]);
        }
        if (s->commit_timer)
                (void) sd_event_source_set_enabled(s->commit_timer, SD_EVENT_OFF);
}

/* Marks the store failed once, leaves the file consistent (ROLLBACK), reports the task failed
 * with the cause and what the rollback lost; returns error for the caller. Later calls just
 * return -ESHUTDOWN. The cause is formatted before the rollback: an argument may be
 * sqlite3_errmsg()'s text, which the rollback's own SQLite calls overwrite or free. */
_printf_(3, 4) static int store_fail(Store *s, int error, const char *format, ...) {
        _cleanup_free_ char *cause = NULL;
        uint64_t readings = s->batch.readings, rejects = s->batch.rejects;
        va_list ap;

        if (s->failed)
                return -ESHUTDOWN;
        s->failed = true;
        va_start(ap, format);
        if (vasprintf(&cause, format, ap) < 0)
                cause = NULL;
        va_end(ap);
        store_rollback(s);
        if (!cause)
                task_report_failure(s->task, error, "Store failed (no memory left to say why)");
        else if (readings + rejects > 0)
                /* Accepted (the callers were told 0) but never committed: say so, as the
                 * counters never included them. */
                task_report_failure(s->task, error,
                                    "%s; %" PRIu64 " %s and %" PRIu64 " %s of the open batch were not stored", cause,
                                    readings, readings == 1 ? "reading" : "readings", rejects,
                                    rejects == 1 ? "reject" : "rejects");
        else
                task_report_failure(s->task, error, "%s", cause);
        return error;
}

/* Whether a failed write ran into the process's file size limit (RLIMIT_FSIZE, systemd's
 * LimitFSIZE=): SQLite reports such a write as "disk I/O error" and often without the EFBIG
 * behind it. It did when the OS error was EFBIG, or when a file of the store (the store, -wal,
 * -shm) is within one write (32 KiB, the -shm's step; a page or a WAL frame is smaller) of the
 * limit. Returns the limit in bytes and the biggest such file's size in *ret_size, or 0. */
static uint64_t store_fsize_limit_hit(const Store *s, int error, uint64_t *ret_size) {
        static const char *const suffix[] = { "", "-wal", "-shm" };
        struct rlimit rl;
        uint64_t biggest = 0;

        if (getrlimit(RLIMIT_FSIZE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
                return 0;
        for (size_t i = 0; i < ELEMENTSOF(suffix); i++) {
                char path[PATH_MAX];
                struct stat st;

                if (snprintf(path, sizeof(path), "%s%s", s->config->path, suffix[i]) < (int) sizeof(path) &&
                    stat(path, &st) == 0)
                        biggest = MAX(biggest, (uint64_t) st.st_size);
        }
        if (error != -EFBIG && biggest + 32768 < (uint64_t) rl.rlim_cur)
                return 0;
        *ret_size = biggest;
        return (uint64_t) rl.rlim_cur;
}

/* Fails the store for an SQLite error: "Failed to <what> '<path>': <sqlite message>". */
int store_fail_sqlite(Store *s, int rc, const char *what) {
        int r = store_sqlite_errno(s->db, rc);
        uint64_t limit = 0, size = 0;

        if (r == 0)
                r = -EIO;
        if ((rc & 0xff) == SQLITE_IOERR || (rc & 0xff) == SQLITE_FULL)
                limit = store_fsize_limit_hit(s, r, &size);
        if (limit > 0)
                return store_fail(s, -EFBIG,
                                  "Failed to %s '%s': %s: the file size limit of the process (RLIMIT_FSIZE, "
                                  "LimitFSIZE= in the unit) is %" PRIu64 " bytes and the store's biggest file has %" PRIu64
                                  " bytes; raise or remove the limit", what, s->config->path,
                                  s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc), limit, size);
        return store_fail(s, r, "Failed to %s '%s': %s", what, s->config->path,
                          s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
}

/* Steps a statement that returns no rows and resets it. Returns an SQLite code. On an error
 * the statement is left as it is: a reset would make SQLite forget the OS error behind it
 * (sqlite3_system_errno), and the failure path resets every statement anyway. */
int store_stmt_run(sqlite3_stmt *st) {
        int rc = sqlite3_step(st);

        if (rc != SQLITE_DONE && rc != SQLITE_ROW)
                return rc;
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        return SQLITE_OK;
}

/* Runs an integer-returning statement (a pragma); returns an SQLite code. */
int store_stmt_int(sqlite3_stmt *st, int64_t *ret) {
        int rc = sqlite3_step(st);

        if (rc == SQLITE_ROW) {
                *ret = sqlite3_column_int64(st, 0);
                rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE)
                rc = SQLITE_NOTFOUND;
        else
                return rc; /* see store_stmt_run() */
        sqlite3_reset(st);
        return rc;
}

int store_exec_int(sqlite3 *db, const char *sql, int64_t *ret) {
        sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
        if (rc == SQLITE_OK)
                rc = store_stmt_int(st, ret);
        sqlite3_finalize(st);
        return rc;
}

static int exec_text(sqlite3 *db, const char *sql, char *buf, size_t size) {
        sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
        if (rc == SQLITE_OK) {
                rc = sqlite3_step(st);
                if (rc == SQLITE_ROW) {
                        snprintf(buf, size, "%s", strempty((const char *) sqlite3_column_text(st, 0)));
                        rc = SQLITE_OK;
                } else if (rc == SQLITE_DONE) {
                        snprintf(buf, size, "%s", "");
                        rc = SQLITE_OK;
                }
        }
        sqlite3_finalize(st);
        return rc;
}

/* ---- the files under our feet ---- */

static const char *const side_suffix[2] = { "-wal", "-shm" };

/* Notes the device and inode of the -wal and -shm files when they exist and are not noted yet:
 * SQLite keeps them open for as long as the connection lives. */
static void store_note_side_files(Store *s) {
        for (size_t i = 0; i < ELEMENTSOF(side_suffix); i++) {
                _cleanup_free_ char *path = NULL;
                struct stat st;

                if (s->side_files[i].known)
                        continue;
                if (asprintf(&path, "%s%s", s->config->path, side_suffix[i]) < 0)
                        return;
                if (stat(path, &st) < 0)
                        continue;
                s->side_files[i].known = true;
                s->side_files[i].dev = st.st_dev;
                s->side_files[i].ino = st.st_ino;
        }
}

/* Checks that the path still names the file SQLite has open, and that its -wal and -shm files
 * are the ones noted: someone deleting or replacing them while the daemon runs would have it
 * commit into files nobody will ever read again. Fails the store with the cause (which says
 * what became of the rows) and returns the error; 0 when all is well. */
static int store_check_files(Store *s) {
        struct stat st;
        int moved = 0;

        if (!s->db || s->failed)
                return 0;
        /* SQLite compares the path's inode with its open file's (unix VFS). */
        if (sqlite3_file_control(s->db, "main", SQLITE_FCNTL_HAS_MOVED, &moved) == SQLITE_OK && moved) {
                if (stat(s->config->path, &st) < 0 && errno == ENOENT)
                        return store_fail(s, -ENOENT,
                                          "Store '%s' was deleted while open; what was committed to it since is lost "
                                          "with the deleted file. A restart creates a new store",
                                          s->config->path);
                return store_fail(s, -ESTALE,
                                  "Store '%s' was moved away or replaced while open; what was committed since went "
                                  "to the file that was moved away, not to '%s'",
                                  s->config->path, s->config->path);
        }
        for (size_t i = 0; i < ELEMENTSOF(side_suffix); i++) {
                _cleanup_free_ char *path = NULL;
                int r;

                if (!s->side_files[i].known)
                        continue;
                if (asprintf(&path, "%s%s", s->config->path, side_suffix[i]) < 0)
                        return store_fail(s, -ENOMEM, "Out of memory");
                if (stat(path, &st) >= 0) {
                        if (st.st_dev == s->side_files[i].dev && st.st_ino == s->side_files[i].ino)
                                continue;
                        r = -ESTALE;
                } else
                        r = -errno;
                /* Closing the store (the failure stops the task) checkpoints the log SQLite
                 * still has open into the store: committed rows are kept. */
                return store_fail(s, r,
                                  "The %s file '%s' of the store was %s while open; stopping, so that what was "
                                  "committed is written back to '%s' and nothing more goes to a file nobody reads",
                                  i == 0 ? "write-ahead log" : "shared-memory index", path,
                                  r == -ESTALE ? "replaced" : "deleted", s->config->path);
        }
        store_note_side_files(s);
        return 0;
}

static int on_check_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        Store *s = userdata;

        /* A failure is reported inside; a handler must not return it. */
        if (store_check_files(s) < 0)
                return 0;
        (void) sd_event_source_set_time(source, usec + FILE_CHECK_INTERVAL_USEC);
        (void) sd_event_source_set_enabled(source, SD_EVENT_ONESHOT);
        return 0;
}

/* ---- batches ---- */

/* Opens a batch: BEGIN IMMEDIATE takes the write lock, so the commit timer is armed here and
 * not at the first row: a batch that ends up holding nothing but duplicates (or no row at all)
 * must not keep the lock until the next row happens to arrive. */
int store_begin(Store *s) {
        int rc, r;

        if (s->in_transaction)
                return 0;
        rc = store_stmt_run(s->stmts[STMT_BEGIN]);
        if (rc != SQLITE_OK)
                return store_fail_sqlite(s, rc, "begin a transaction on");
        s->in_transaction = true;
        s->batch_rows = 0;
        if (s->commit_timer) {
                uint64_t now;

                r = sd_event_now(s->event, CLOCK_MONOTONIC, &now);
                if (r >= 0)
                        r = sd_event_source_set_time(s->commit_timer,
                                                     now + (uint64_t) s->config->commit_interval_ms * USEC_PER_MSEC);
                /* From the clock, not the loop's time of this iteration (a batch opened late in a
                 * long one would otherwise end at once): for store_batch_row()'s check. */
                s->batch_deadline_usec = clock_now_usec(CLOCK_MONOTONIC) +
                                         (uint64_t) s->config->commit_interval_ms * USEC_PER_MSEC;
                if (r >= 0)
                        r = sd_event_source_set_enabled(s->commit_timer, SD_EVENT_ONESHOT);
                if (r < 0)
                        return store_fail(s, r, "Failed to arm the commit timer for '%s'", s->config->path);
        }
        return 0;
}

int store_commit_internal(Store *s) {
        uint64_t t0;
        int rc, r;

        if (!s->in_transaction)
                return 0;
        if (s->commit_timer)
                (void) sd_event_source_set_enabled(s->commit_timer, SD_EVENT_OFF);
        if (s->precommit_hook) {
                /* What belongs with this batch (upstream's done set). A write that failed has
                 * failed the store, which said why. */
                s->precommit_hook(s, s->precommit_userdata);
                if (s->failed || !s->in_transaction)
                        return -ESHUTDOWN;
        }
        t0 = clock_now_usec(CLOCK_MONOTONIC);
        rc = store_blocks_flush(s);
        if (rc == SQLITE_OK)
                rc = store_stmt_run(s->stmts[STMT_COMMIT]);
        if (rc != SQLITE_OK)
                return store_fail_sqlite(s, rc, "commit to");
        s->write_stats.longest_commit_usec = MAX(s->write_stats.longest_commit_usec,
                                                 clock_now_usec(CLOCK_MONOTONIC) - t0);
        s->in_transaction = false;
        s->batch_rows = 0;
        s->stats.readings += s->batch.readings;
        s->stats.duplicates += s->batch.duplicates;
        s->stats.rejects += s->batch.rejects;
        s->batch = (StoreStats) {};
        s->reject_bytes += s->batch_reject_bytes;
        s->batch_reject_bytes = 0;
        s->names_bytes += s->batch_names_bytes;
        s->names_count += s->batch_names_count;
        s->batch_names_bytes = s->batch_names_count = 0;
        for (size_t k = 0; k < _NAME_KIND_MAX; k++)
                s->table_names[k] += s->batch_table_names[k];
        memset(s->batch_table_names, 0, sizeof(s->batch_table_names));
        s->boot_waiting += s->batch_unsynced;
        s->batch_unsynced = 0;
        s->stats.commits++;
        s->last_commit_ms = wall_clock_ms();
        r = store_check_files(s);
        if (r >= 0 && s->seq_max > s->seq_committed) {
                s->seq_committed = s->seq_max;
                if (s->commit_hook)
                        s->commit_hook(s, s->seq_committed, s->hook_userdata);
        }
        return r;
}

int store_commit(Store *s) {
        assert(s);

        if (s->failed || s->closed || !s->db)
                return -ESHUTDOWN;
        return store_commit_internal(s);
}

static int on_commit_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        Store *s = userdata;
        (void) source;
        (void) usec;

        /* A failure is reported to the supervisor inside; a handler must not return it. */
        (void) store_commit(s);
        return 0;
}

/* Counts a row into the batch (whose timer store_begin() armed); commits at the maximum, or
 * when the batch window has passed while the loop was still busy with one input (a backlog read
 * in one go), before the timer could fire: the window is the loss window of a hard kill, and
 * commit_max_rows (10000 by default) no longer ends such a batch early. The clock is read every
 * STORE_BATCH_CLOCK_ROWS rows once the batch holds STORE_BATCH_CLOCK_MIN_ROWS: a handler that
 * runs long enough to matter reads far more, and a batch of a few handlers' rows is left to the
 * timer (which keeps batches the same size under valgrind, where every handler is slow). */
#define STORE_BATCH_CLOCK_ROWS 16
#define STORE_BATCH_CLOCK_MIN_ROWS 256
int store_batch_row(Store *s) {
        s->batch_rows++;
        if (s->batch_rows >= s->config->commit_max_rows)
                return store_commit_internal(s);
        if (s->batch_rows >= STORE_BATCH_CLOCK_MIN_ROWS && s->batch_rows % STORE_BATCH_CLOCK_ROWS == 0 &&
            s->batch_deadline_usec > 0 && clock_now_usec(CLOCK_MONOTONIC) >= s->batch_deadline_usec)
                return store_commit_internal(s);
        return 0;
}

/* Invalid input: commits the open batch (it is good), then fails the store. Returns -EINVAL. */
_printf_(2, 3) int store_refuse(Store *s, const char *format, ...) {
        va_list ap;

        if (store_commit_internal(s) < 0)
                return -EINVAL; /* that failure was reported instead */
        s->failed = true;
        va_start(ap, format);
        task_report_failurev(s->task, -EINVAL, format, ap);
        va_end(ap);
        return -EINVAL;
}

int store_check_writable(Store *s) {
        if (s->failed || s->closed || !s->db)
                return -ESHUTDOWN;
        return 0;
}

/* A reading of this boot was stored unsynced: the first one marks where this boot's correction
 * starts (once per boot, in the open transaction). */
static int store_note_unsynced(Store *s, int64_t id) {
        sqlite3_stmt *st = s->stmts[STMT_BOOT_FIRST_UNSYNCED];
        int rc;

        s->batch_unsynced++;
        if (s->boot_row == 0 || s->boot_first_unsynced != 0)
                return 0;
        rc = sqlite3_bind_int64(st, 1, s->boot_row);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 2, id);
        if (rc == SQLITE_OK)
                rc = store_stmt_run(st);
        if (rc != SQLITE_OK)
                return store_fail_sqlite(s, rc, "write a reading to");
        s->boot_first_unsynced = id;
        return 0;
}

int store_append(Store *s, const Reading *r) {
        sqlite3_stmt *st;
        int64_t sensor_id, metric_id, origin_id;
        int rc, k;

        assert(s && r);

        k = store_check_writable(s);
        if (k < 0)
                return k;
        /* A bug of the caller (NaN would become NULL and be ignored as a duplicate). Callers stop
         * feeding on any error, so this must end the process too, not leave an input silently
         * stopped: keep what is good, then fail with the cause. */
        if (!r->sensor || !r->metric || (int) r->source < 0 || r->source >= _READING_SOURCE_MAX || !isfinite(r->value))
                return store_refuse(s, "Refused an invalid reading (sensor '%s', metric '%s', value %g, source %d) for '%s'",
                                    strna(r->sensor), strna(r->metric), r->value, (int) r->source, s->config->path);

        k = store_begin(s);
        if (k < 0)
                return k;
        k = store_intern(s, NAME_SENSOR, r->sensor, &sensor_id);
        if (k >= 0)
                k = store_intern(s, NAME_METRIC, r->metric, &metric_id);
        if (k >= 0)
                k = store_intern(s, NAME_ORIGIN, strempty(r->origin), &origin_id);
        if (k < 0)
                return k;

        st = s->stmts[STMT_INSERT_READING];
        rc = sqlite3_bind_int64(st, 1, sensor_id);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 2, metric_id);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 3, r->ts_ms);
        if (rc == SQLITE_OK)
                rc = r->sensor_ts ? sqlite3_bind_int(st, 4, 1) : sqlite3_bind_null(st, 4);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_double(st, 5, r->value);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 6, r->received_ms);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int(st, 7, (int) r->source);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 8, origin_id);
        /* The id is the sequence number, given explicitly: SQLite's own choice, max(id) + 1,
         * would hand out an id again once retention has removed the newest rows. */
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 11, MAX(s->seq_max, s->seq_floor) + 1);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int(st, 9, (int) r->flags);
        if (rc == SQLITE_OK)
                rc = r->flags & READING_FLAG_UNSYNCED ? sqlite3_bind_int64(st, 10, r->boottime_ms)
                                                      : sqlite3_bind_null(st, 10);
        if (rc == SQLITE_OK)
                rc = store_stmt_run(st);
        if (rc != SQLITE_OK)
                return store_fail_sqlite(s, rc, "write a reading to");

        if (sqlite3_changes(s->db) == 0) {
                s->batch.duplicates++;
                return 0;
        }
        s->seq_max = sqlite3_last_insert_rowid(s->db);
        rc = store_blocks_note(s, s->seq_max, r->ts_ms);
        if (rc != SQLITE_OK)
                return store_fail_sqlite(s, rc, "write a reading to");
        s->batch.readings++;
        if (r->flags & READING_FLAG_UNSYNCED) {
                k = store_note_unsynced(s, sqlite3_last_insert_rowid(s->db));
                if (k < 0)
                        return k;
        }
        return store_batch_row(s);
}

int store_append_reject(Store *s, const Reject *r) {
        sqlite3_stmt *st;
        int64_t origin_id;
        const char *reason, *origin = strempty(r->origin);
        int rc, k;

        assert(s && r);

        k = store_check_writable(s);
        if (k < 0)
                return k;
        if ((int) r->source < 0 || r->source >= _READING_SOURCE_MAX || (!r->raw && r->raw_size > 0) ||
            r->raw_size > INT32_MAX)
                return store_refuse(s, "Refused an invalid reject (%zu raw bytes, source %d) for '%s'", r->raw_size,
                                    (int) r->source, s->config->path);
        reason = frame_reject_to_string(r->reason);
        /* A full origins table keeps its cap against rejects too (garbage on a new topic each
         * time); the raw bytes are kept, the origin is in the log line. */
        if (s->config->max_names > 0 && store_names_room(s, NAME_ORIGIN) <= 0) {
                bool known;

                rc = store_name_known(s, NAME_ORIGIN, origin, &known);
                if (rc != SQLITE_OK)
                        return store_fail_sqlite(s, rc, "read from");
                if (!known) {
                        /* A frame the cap turned into this reject was counted already. */
                        s->names_refused += r->reason != FRAME_REJECT_TOO_MANY_NAMES;
                        store_names_full(s, NAME_ORIGIN);
                        origin = NAMES_FULL_ORIGIN;
                }
        }

        k = store_begin(s);
        if (k >= 0)
                k = store_intern(s, NAME_ORIGIN, origin, &origin_id);
        if (k < 0)
                return k;

        st = s->stmts[STMT_INSERT_REJECT];
        rc = sqlite3_bind_int64(st, 1, r->received_ms);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int(st, 2, (int) r->source);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 3, origin_id);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_text(st, 4, reason ? reason : "unknown", -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
                /* A zero-length blob, not NULL, for an empty raw. */
                rc = sqlite3_bind_blob(st, 5, r->raw ? r->raw : "", (int) r->raw_size, SQLITE_STATIC);
        if (rc == SQLITE_OK)
                rc = store_stmt_run(st);
        if (rc != SQLITE_OK)
                return store_fail_sqlite(s, rc, "write a reject to");

        s->batch.rejects++;
        s->batch_reject_bytes += (int64_t) r->raw_size + REJECT_ROW_OVERHEAD;
        return store_batch_row(s);
}

void store_get_stats(const Store *s, StoreStats *ret) {
        assert(s && ret);
        *ret = s->stats;
}

/* One value of a one-row query on the writer's connection; false when there is none (an empty
 * table gives NULL). */
static bool store_query_int(Store *s, const char *sql, int64_t *ret) {
        sqlite3_stmt *q = NULL;
        bool found = false;

        if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW &&
            sqlite3_column_type(q, 0) != SQLITE_NULL) {
                *ret = sqlite3_column_int64(q, 0);
                found = true;
        }
        sqlite3_finalize(q);
        return found;
}

int store_get_summary(Store *s, StoreSummary *ret) {
        StoreSummary sum = { .oldest_ms = INT64_MIN, .newest_ms = INT64_MIN };
        _cleanup_free_ char *wal = NULL;
        struct stat st;
        int64_t v;

        assert(s && ret);
        if (s->failed || s->closed || !s->db)
                return -ESHUTDOWN;
        if (stat(s->config->path, &st) >= 0)
                sum.size_bytes += (uint64_t) st.st_size;
        if (asprintf(&wal, "%s-wal", s->config->path) >= 0 && stat(wal, &st) >= 0)
                sum.size_bytes += (uint64_t) st.st_size;
        /* Rows by their id range, not count(*), which walks a whole index with the loop waiting:
         * ids are handed out in order and the store only ever deletes the oldest (by id), so the
         * range has no holes (unless someone deleted rows by hand). The open batch counts. */
        if (store_query_int(s, "SELECT max(id) - min(id) + 1 FROM readings", &v))
                sum.readings = (uint64_t) v;
        if (store_query_int(s, "SELECT max(id) - min(id) + 1 FROM rejects", &v))
                sum.rejects = (uint64_t) v;
        /* Through the time summary: a block or two of rows each, whatever the size (a min(ts)
         * on the table would read all of it). */
        (void) store_blocks_extreme(s, false, &sum.oldest_ms);
        (void) store_blocks_extreme(s, true, &sum.newest_ms);
        sum.last_commit_ms = s->last_commit_ms;
        *ret = sum;
        return 0;
}

/* ---- open, schema, close ---- */

static int progress_deadline(void *userdata) {
        const uint64_t *deadline = userdata;

        return clock_now_usec(CLOCK_MONOTONIC) > *deadline;
}

/* quick_check within a time budget: finds a damaged file early when it is small enough to
 * check quickly; on a big one, corruption shows up on the first write that touches it. */
static int store_quick_check(Store *s) {
        char result[256] = "";
        uint64_t deadline;
        int64_t pages = 0, page_size = 0;
        int rc;

        rc = store_exec_int(s->db, "PRAGMA page_count", &pages);
        if (rc == SQLITE_OK)
                rc = store_exec_int(s->db, "PRAGMA page_size", &page_size);
        if (rc != SQLITE_OK)
                return store_fail_sqlite(s, rc, "read");
        if (pages * page_size > QUICK_CHECK_MAX_BYTES) {
                log_full_errno_fields(LOG_DEBUG, 0, LOG_FIELDS("TASK", "store"),
                                      "Store '%s' has %" PRId64 " MiB, more than a quick check on start may read; skipped.",
                                      s->config->path, pages * page_size / (1024 * 1024));
                return 0;
        }

        deadline = clock_now_usec(CLOCK_MONOTONIC) + QUICK_CHECK_BUDGET_USEC;
        sqlite3_progress_handler(s->db, 1000, progress_deadline, &deadline);
        rc = exec_text(s->db, "PRAGMA quick_check(1)", result, sizeof(result));
        sqlite3_progress_handler(s->db, 0, NULL, NULL);

        if (rc == SQLITE_INTERRUPT) {
                log_full_errno_fields(LOG_INFO, 0, LOG_FIELDS("TASK", "store"),
                                      "Quick check of '%s' did not finish within %" PRIu64 " ms, skipped.",
                                      s->config->path, QUICK_CHECK_BUDGET_USEC / USEC_PER_MSEC);
                return 0;
        }
        if (rc != SQLITE_OK)
                return store_fail_sqlite(s, rc, "check");
        if (!streq(result, "ok"))
                return store_fail(s, -EUCLEAN, "Store '%s' is corrupt (quick_check: %s); move it aside",
                                  s->config->path, result);
        return 0;
}

/* A migration may rewrite a big store (v6 reads every reading once: docs/STORE.md gives the
 * time for a year of readings), and the daemon is not ready meanwhile: every few seconds it
 * asks systemd for more start time (EXTEND_TIMEOUT_USEC, so a unit with a short
 * TimeoutStartSec= does not kill it halfway and start it over) and says why it waits (STATUS=). */
#define MIGRATE_NOTIFY_USEC (5 * USEC_PER_SEC)
#define MIGRATE_EXTEND_USEC (30 * USEC_PER_SEC)

typedef struct MigrateProgress {
        const Store *store;
        int64_t from;
        uint64_t start_usec, next_usec;
} MigrateProgress;

static void migrate_notify(MigrateProgress *p, uint64_t now) {
        p->next_usec = now + MIGRATE_NOTIFY_USEC;
        (void) sd_notifyf(false,
                          "EXTEND_TIMEOUT_USEC=%" PRIu64 "\nSTATUS=Migrating store '%s' from schema v%" PRId64
                          " to v%d (%" PRIu64 " s so far)",
                          MIGRATE_EXTEND_USEC, p->store->config->path, p->from, STORE_SCHEMA_VERSION,
                          (now - p->start_usec) / USEC_PER_SEC);
}

/* SQLite's progress handler during a migration: never interrupts it. */
static int migrate_progress(void *userdata) {
        MigrateProgress *p = userdata;
        uint64_t now = clock_now_usec(CLOCK_MONOTONIC);

        if (now >= p->next_usec)
                migrate_notify(p, now);
        return 0;
}

/* Indexes a later schema dropped: readings_ts (v6). Dropped in a transaction of its own, not in
 * the migration's: a DROP inside a transaction with more statements keeps a statement journal
 * of every page it frees, in memory (temp_store = MEMORY), which for a year's readings_ts is
 * 1.4 GiB of RSS (measured); alone, it frees them without copying. A crash between the two
 * leaves the index in a migrated store, and the next open drops it: so this runs at every open
 * (a schema look-up when there is nothing to drop). Returns an SQLite code. */
static int store_drop_old_indexes(Store *s) {
        return sqlite3_exec(s->db, "DROP INDEX IF EXISTS readings_ts", NULL, NULL, NULL);
}

static int store_migrate(Store *s, int64_t from) {
        MigrateProgress progress = { .store = s, .from = from };
        char sql[256];
        int rc;

        if (from > 0) {
                log_full_errno_fields(LOG_INFO, 0, LOG_FIELDS("TASK", "store"),
                                      "Migrating store '%s' from schema v%" PRId64 " to v%d (on a big store this takes a while)...",
                                      s->config->path, from, STORE_SCHEMA_VERSION);
                progress.start_usec = clock_now_usec(CLOCK_MONOTONIC);
                migrate_notify(&progress, progress.start_usec);
                sqlite3_progress_handler(s->db, 100000, migrate_progress, &progress);
        }
        rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        for (int64_t v = from; rc == SQLITE_OK && v < STORE_SCHEMA_VERSION; v++)
                rc = sqlite3_exec(s->db, migrations[v], NULL, NULL, NULL);
        if (rc == SQLITE_OK) {
                snprintf(sql, sizeof(sql),
                         "PRAGMA application_id = %d; PRAGMA user_version = %d;"
                         "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', %d), ('%s', %" PRId64 ");",
                         STORE_APPLICATION_ID, STORE_SCHEMA_VERSION, STORE_SCHEMA_VERSION,
                         from == 0 ? "created" : "migrated", wall_clock_ms());
                rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
        }
        if (rc == SQLITE_OK && from == 0)
                rc = sqlite3_exec(s->db,
                                  "INSERT OR REPLACE INTO meta (key, value) VALUES ('created_by', 'sensor-collector " SC_VERSION "')",
                                  NULL, NULL, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
        if (rc == SQLITE_OK)
                rc = store_drop_old_indexes(s);
        sqlite3_progress_handler(s->db, 0, NULL, NULL);
        if (rc != SQLITE_OK) {
                int r = store_fail_sqlite(s, rc, from == 0 ? "create the schema in" : "migrate the schema of");
                if (!sqlite3_get_autocommit(s->db))
                        (void) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
                return r;
        }
        if (from == 0)
                log_full_errno_fields(LOG_INFO, 0, LOG_FIELDS("TASK", "store"), "Created store '%s' (schema v%d).",
                                      s->config->path, STORE_SCHEMA_VERSION);
        else
                log_full_errno_fields(LOG_INFO, 0, LOG_FIELDS("TASK", "store"),
                                      "Migrated store '%s' from schema v%" PRId64 " to v%d in %.1f s.", s->config->path,
                                      from, STORE_SCHEMA_VERSION,
                                      (double) (clock_now_usec(CLOCK_MONOTONIC) - progress.start_usec) / USEC_PER_SEC);
        return 0;
}

int store_identify(sqlite3 *db, StoreIdentity *ret) {
        int rc;

        *ret = (StoreIdentity) {};
        rc = store_exec_int(db, "PRAGMA application_id", &ret->application_id);
        if (rc == SQLITE_OK)
                rc = store_exec_int(db, "PRAGMA user_version", &ret->user_version);
        if (rc == SQLITE_OK)
                rc = store_exec_int(db, "SELECT count(*) FROM sqlite_schema", &ret->tables);
        return rc;
}

static bool identity_is_empty(const StoreIdentity *id) {
        return id->application_id == 0 && id->user_version == 0 && id->tables == 0;
}

/* Checks the store's directory and file with the kernel before SQLite opens them. */
static int store_check_access(Store *s) {
        const char *path = s->config->path;
        _cleanup_free_ char *copy = NULL;
        struct stat st;
        const char *dir;

        /* Say which directory is missing instead of SQLite's "unable to open database file". */
        copy = strdup(path);
        if (!copy)
                return store_fail(s, -ENOMEM, "Out of memory");
        dir = dirname(copy);
        if (stat(dir, &st) < 0)
                return store_fail(s, -errno, "Cannot use directory '%s' for the store '%s'", dir, path);
        if (!S_ISDIR(st.st_mode))
                return store_fail(s, -ENOTDIR, "'%s' (for the store '%s') is not a directory", dir, path);

        /* SQLite loses the OS error of a failed open; ask the kernel first. WAL also creates
         * the -wal and -shm files next to the store, so the directory must be writable. */
        if (access(path, F_OK) < 0) {
                if (errno != ENOENT)
                        return store_fail(s, -errno, "Cannot access the store '%s'", path);
                if (access(dir, W_OK | X_OK) < 0)
                        return store_fail(s, -errno, "Cannot create the store '%s' in directory '%s'", path, dir);
        } else if (access(path, R_OK | W_OK) < 0)
                return store_fail(s, -errno, "Cannot write to the store '%s'", path);
        else if (access(dir, W_OK | X_OK) < 0)
                return store_fail(s, -errno, "Cannot write to directory '%s' of the store '%s'", dir, path);
        return 0;
}

/* Opens the file for writing and tells what is in it; refuses anything but an empty file or a
 * store of this or an older schema. */
static int store_connect(Store *s, StoreIdentity *ret_id) {
        const char *path = s->config->path;
        StoreIdentity id;
        int rc;

        rc = store_sqlite_open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, &s->db);
        if (rc != SQLITE_OK)
                return store_fail_sqlite(s, rc, "open the store");
        /* SQLite quietly opens a write-protected file read-only; a store that cannot be
         * written is a failure now, not at the first commit. */
        if (sqlite3_db_readonly(s->db, "main") == 1)
                return store_fail(s, -EROFS, "Store '%s' is read-only", path);

        /* The first read finds a file that is not SQLite at all (SQLITE_NOTADB). */
        rc = store_identify(s->db, &id);
        if (rc != SQLITE_OK)
                return store_fail_sqlite(s, rc, "read the store");
        if (!identity_is_empty(&id) && id.application_id != STORE_APPLICATION_ID)
                return store_fail(s, -EMEDIUMTYPE,
                                  "'%s' is not a sensor-collector store (application_id 0x%08" PRIx64
                                  ", %" PRId64 " schema objects); refusing to write to it",
                                  path, (uint64_t) id.application_id & 0xffffffffu, id.tables);
        if (id.user_version > STORE_SCHEMA_VERSION)
                return store_fail(s, -EPROTONOSUPPORT,
                                  "Store '%s' has schema v%" PRId64 ", newer than this version supports (v%d)", path,
                                  id.user_version, STORE_SCHEMA_VERSION);
        *ret_id = id;
        return 0;
}

/* WAL, durability and memory settings of the connection; auto_vacuum for a new file. */
static int store_set_pragmas(Store *s, bool empty) {
        char mode[32];
        int rc;

        /* Only an empty file can still change auto_vacuum (before any table exists). */
        if (empty) {
                rc = sqlite3_exec(s->db, "PRAGMA auto_vacuum = INCREMENTAL", NULL, NULL, NULL);
                if (rc != SQLITE_OK)
                        return store_fail_sqlite(s, rc, "set up");
        }

        rc = exec_text(s->db, "PRAGMA journal_mode = WAL", mode, sizeof(mode));
        if (rc != SQLITE_OK)
                return store_fail_sqlite(s, rc, "enable WAL on");
        if (!streq(mode, "wal"))
                return store_fail(s, -EOPNOTSUPP, "Cannot enable WAL on '%s' (journal mode stays '%s')",
                                  s->config->path, mode);

        rc = sqlite3_exec(s->db,
                          s->config->synchronous == STORE_SYNCHRONOUS_FULL ? "PRAGMA synchronous = FULL"
                                                                           : "PRAGMA synchronous = NORMAL",
                          NULL, NULL, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_exec(s->db,
                                  /* The WAL is checkpointed at 4000 pages during a burst
                                   * (store-checkpoint.c): a smaller limit would truncate it
                                   * and grow it again at every checkpoint (measured: more
                                   * CPU than SQLite's checkpoints at 1000 pages). */
                                  "PRAGMA journal_size_limit = 16777216;"
                                  "PRAGMA temp_store = MEMORY;"
                                  "PRAGMA foreign_keys = OFF;"
                                  /* 1 MiB of page cache: appends touch the right edge of each
                                   * b-tree, so a bigger cache buys little and costs RSS on a
                                   * small gateway (measured in docs/BENCHMARKS.md). */
                                  "PRAGMA cache_size = -1024;",
                                  NULL, NULL, NULL);
        if (rc != SQLITE_OK)
                return store_fail_sqlite(s, rc, "set up");
        return 0;
}

/* The page size (for the used size) and the statements of every write, prepared once. */
static int store_prepare(Store *s) {
        int rc;

        rc = store_exec_int(s->db, "PRAGMA page_size", &s->page_size);
        if (rc != SQLITE_OK)
                return store_fail_sqlite(s, rc, "read");

        for (size_t i = 0; i < _STMT_MAX; i++) {
                rc = sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->stmts[i], NULL);
                if (rc != SQLITE_OK)
                        return store_fail_sqlite(s, rc, "prepare statements for");
        }
        return 0;
}

/* Opens the store for writing: checks, connection, settings, a quick check of an existing file,
 * the schema, the statements. A failure is reported (store_fail()) and returned. */
static int store_open(Store *s) {
        StoreIdentity id = {};
        int r;

        r = store_check_access(s);
        if (r < 0)
                return r;
        r = store_connect(s, &id);
        if (r < 0)
                return r;
        r = store_set_pragmas(s, identity_is_empty(&id));
        if (r < 0)
                return r;
        if (!identity_is_empty(&id)) {
                r = store_quick_check(s);
                if (r < 0)
                        return r;
        }
        if (id.user_version < STORE_SCHEMA_VERSION) {
                r = store_migrate(s, id.user_version);
                if (r < 0)
                        return r;
        } else {
                int rc = store_drop_old_indexes(s);

                if (rc != SQLITE_OK)
                        return store_fail_sqlite(s, rc, "migrate the schema of");
        }
        r = store_prepare(s);
        if (r < 0)
                return r;
        store_blocks_reset(s);
        return store_load_seq(s);
}

static void store_close(Store *s) {
        if (!s->db)
                return;
        for (size_t i = 0; i < _STMT_MAX; i++)
                s->stmts[i] = (sqlite3_finalize(s->stmts[i]), NULL);
        for (size_t i = 0; i < _NAME_KIND_MAX; i++)
                store_id_name_cache_done(&s->seq_names[i]);
        /* The last connection checkpoints and removes the WAL file. */
        (void) sqlite3_close(s->db);
        s->db = NULL;
}

/* ---- the task ---- */

static Store *task_store(Task *t) {
        return task_get_userdata(t);
}

static int store_start(Task *t) {
        Store *s = task_store(t);
        int r;

        s->task = t;
        r = store_open(s);
        if (r < 0) {
                store_close(s);
                return 0; /* reported with its cause */
        }
        store_note_side_files(s);
        if (s->config->max_names > 0) {
                int rc = store_count_tables(s);

                if (rc != SQLITE_OK) {
                        store_fail_sqlite(s, rc, "count the names in");
                        store_close(s);
                        return 0;
                }
        }

        /* Armed at the first row of each batch; 1 ms accuracy (0 would mean sd-event's 250 ms). */
        r = sd_event_add_time(s->event, &s->commit_timer, CLOCK_MONOTONIC, 0, USEC_PER_MSEC,
                              on_commit_timer, s);
        if (r >= 0)
                r = sd_event_source_set_enabled(s->commit_timer, SD_EVENT_OFF);
        if (r >= 0)
                r = sd_event_add_time_relative(s->event, &s->check_timer, CLOCK_MONOTONIC, FILE_CHECK_INTERVAL_USEC,
                                               100 * USEC_PER_MSEC, on_check_timer, s);
        if (r >= 0 && (s->config->retention_days > 0 || s->config->max_size_mb > 0 || s->config->max_names > 0))
                r = sd_event_add_time_relative(s->event, &s->retention_timer, CLOCK_MONOTONIC, RETENTION_FIRST_USEC,
                                               100 * USEC_PER_MSEC, store_on_retention_timer, s);
        if (r >= 0)
                r = store_checkpoint_start(s);
        if (r < 0) {
                store_fail(s, r, "Failed to set up timers for '%s'", s->config->path);
                store_close(s);
                return 0;
        }

        r = store_note_daemon_down(s);
        if (r < 0) {
                store_close(s);
                return 0; /* reported with its cause */
        }

        log_full_errno_fields(LOG_INFO, 0, LOG_FIELDS("TASK", "store"),
                              "Store '%s' open (synchronous=%s, batches of %u rows or %u ms).", s->config->path,
                              s->config->synchronous == STORE_SYNCHRONOUS_FULL ? "full" : "normal",
                              s->config->commit_max_rows, s->config->commit_interval_ms);
        task_report_running(t);
        return 0;
}

static int store_stop(Task *t) {
        Store *s = task_store(t);

        if (s->closed)
                return 0;
        if (s->db && !s->failed)
                (void) store_note_stopped(s); /* commits the open batch; a failure reports itself */
        s->closed = true;
        s->commit_timer = sd_event_source_disable_unref(s->commit_timer);
        s->retention_timer = sd_event_source_disable_unref(s->retention_timer);
        s->check_timer = sd_event_source_disable_unref(s->check_timer);
        if (s->db && !s->failed && s->in_transaction)
                (void) store_commit_internal(s); /* a failure reports itself */
        store_checkpoint_stop(s);
        store_close(s);
        return 0;
}

static void store_free(void *userdata) {
        Store *s = userdata;

        if (!s)
                return;
        sd_event_source_disable_unref(s->commit_timer);
        sd_event_source_disable_unref(s->retention_timer);
        sd_event_source_disable_unref(s->check_timer);
        if (s->db && !s->failed && s->in_transaction &&
            (store_blocks_flush(s) != SQLITE_OK || sqlite3_step(s->stmts[STMT_COMMIT]) != SQLITE_DONE))
                log_warning("Failed to commit the last batch to '%s' while freeing the store: %s, ignoring.",
                            s->config->path, sqlite3_errmsg(s->db));
        store_checkpoint_stop(s);
        store_close(s);
        for (size_t i = 0; i < _NAME_KIND_MAX; i++) {
                store_name_cache_clear(&s->names[i]);
                store_id_name_cache_done(&s->seq_names[i]);
        }
        store_prune_end(&s->prune);
        sd_event_unref(s->event);
        free(s);
}

static void store_format_status(Task *t, char *buf, size_t size) {
        Store *s = task_store(t);
        size_t len;

        if (s->stats.duplicates > 0)
                snprintf(buf, size, "%" PRIu64 " readings, %" PRIu64 " rejects, %" PRIu64 " duplicates",
                         s->stats.readings, s->stats.rejects, s->stats.duplicates);
        else
                snprintf(buf, size, "%" PRIu64 " readings, %" PRIu64 " rejects", s->stats.readings, s->stats.rejects);
        len = strlen(buf);
        if (s->over_limit_bytes > 0 && len < size)
                snprintf(buf + len, size - len, ", over its size limit (%.1f of %u MiB)", s->over_limit_bytes / 1048576.0,
                         s->config->max_size_mb);
        len = strlen(buf);
        if (s->names_refused > 0 && len < size)
                snprintf(buf + len, size - len, ", %" PRIu64 " kept out by store.max_names", s->names_refused);
}

static const TaskOps store_task_ops = {
        .name = "store",
        .exit_status = EXIT_STATUS_STORE,
        .start = store_start,
        .stop = store_stop,
        .free = store_free,
        .format_status = store_format_status,
};

/* The daemon has one thread: SQLite's mutexes and its global allocation statistics (a mutex per
 * malloc) are pure overhead on the path of every reading. Only possible before SQLite is
 * initialized; afterwards it is a harmless no-op (SQLITE_MISUSE). */
static void store_configure_sqlite(void) {
        (void) sqlite3_config(SQLITE_CONFIG_SINGLETHREAD);
        (void) sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

int store_task_new(sd_event *e, const StoreConfig *config, Task **ret_task, Store **ret_store) {
        Store *s;
        Task *t;
        int r;

        assert(e && config && config->path && ret_task && ret_store);
        store_configure_sqlite();

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->event = sd_event_ref(e);
        s->config = config;

        r = task_new(&store_task_ops, s, &t); /* owns s from here, also on failure */
        if (r < 0)
                return r;
        s->task = t;
        *ret_task = t;
        *ret_store = s;
        return 0;
}
