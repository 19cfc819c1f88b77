/* SPDX-License-Identifier: MIT */
/* Unit tests for the time summary of readings (readings_blocks): kept by the writer, read by time queries. */
#include <check.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "collector/store-reader.h"
#include "collector/store.h"
#include "collector/time-util.h"
#include "testlib.h"

/* 2025-11-21T10:00:00Z */
#define BASE 1763719200000LL
#define DAY_MS ((int64_t) 24 * 3600 * 1000)

/* Rows of readings_blocks that differ from the ts range of their block's rows, plus blocks of
 * rows without a row of readings_blocks, plus rows of readings_blocks without rows: 0 when the
 * summary is exact. */
#define BLOCKS_NOT_EXACT                                                                                      \
        "SELECT (SELECT count(*) FROM (SELECT id >> 10 AS k, min(ts) AS lo, max(ts) AS hi FROM readings GROUP BY k) x" \
        "  LEFT JOIN readings_blocks b ON b.block = x.k WHERE b.block IS NULL OR b.min_ts != x.lo OR b.max_ts != x.hi)" \
        " + (SELECT count(*) FROM readings_blocks WHERE block NOT IN (SELECT id >> 10 FROM readings))"
/* Readings outside their block's range, plus blocks without rows: 0 when the summary is
 * correct (it may be wider than the rows left after retention). */
#define BLOCKS_NOT_COVERING                                                                                   \
        "SELECT (SELECT count(*) FROM readings r LEFT JOIN readings_blocks b ON b.block = r.id >> 10"          \
        "  WHERE b.block IS NULL OR r.ts < b.min_ts OR r.ts > b.max_ts)"                                       \
        " + (SELECT count(*) FROM readings_blocks WHERE block NOT IN (SELECT id >> 10 FROM readings))"

typedef struct Fixture {
        sd_event *event;
        StoreConfig config;
        char path[512];
        Task *task;
        Store *store;
} Fixture;

static void fx_init(Fixture *f, unsigned commit_max_rows) {
        *f = (Fixture) {};
        ck_assert_int_ge(sd_event_new(&f->event), 0);
        tl_store_config_init(&f->config, f->path, sizeof(f->path), NULL);
        f->config.commit_max_rows = commit_max_rows;
}

static void fx_start(Fixture *f) {
        tl_store_task_start(f->event, &f->config, &f->task, &f->store);
}

static void fx_stop(Fixture *f) {
        f->task = tl_task_stop_free(f->task);
        f->store = NULL;
}

static void fx_done(Fixture *f) {
        fx_stop(f);
        f->event = sd_event_unref(f->event);
}

/* Runs sql (several statements) on the file, read-write. */
static void sql_exec(const char *path, const char *sql) {
        sqlite3 *db = NULL;

        ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
        ck_assert_int_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
}

static void append(Fixture *f, const char *sensor, const char *metric, int64_t ts, bool sensor_ts, int64_t received) {
        Reading r = { .sensor = sensor, .metric = metric, .value = (double) (ts % 1000) / 10, .ts_ms = ts,
                      .sensor_ts = sensor_ts, .received_ms = received, .source = READING_SOURCE_MQTT, .origin = "t" };

        ck_assert_int_eq(store_append(f->store, &r), 0);
}

/* A store that is hard on a time summary: 40 000 readings of 3 sensors in time order with ties
 * (several sensors, the same ts), a sensor replaying six hours of its buffer in the middle
 * (rows whose ts is far below their neighbours'), repeats of frames already stored (dedup),
 * receipt times, and batches that end inside blocks and across them. */
static void fill(Fixture *f) {
        int64_t t = BASE;

        for (int i = 0; i < 13000; i++, t += 1000) {
                append(f, "s1", "temp", t, true, t + 7);
                append(f, "s2", "temp", t, true, t + 9);
                if (i % 2 == 0)
                        append(f, "s3", "co2", t + 500, false, t + 500);
        }
        /* Repeats: no row, no change to the summary. */
        for (int i = 0; i < 500; i++)
                append(f, "s1", "temp", BASE + i * 1000, true, t);
        /* The replay: six hours of s3's buffer, one every 10 s. */
        for (int i = 0; i < 2160; i++)
                append(f, "s3", "temp", t - 6 * 3600 * 1000 + i * 10000, true, t + i);
        for (int i = 0; i < 2000; i++, t += 1000)
                append(f, "s1", "temp", t, true, t + 7);
        ck_assert_int_eq(store_commit(f->store), 0);
}

/* The ids store_reader_readings() gives for filter fl, in its order. */
typedef struct Ids {
        int64_t *v;
        size_t n, cap;
} Ids;

static int collect(const StoredReading *row, void *userdata) {
        Ids *ids = userdata;

        if (ids->n == ids->cap) {
                ids->cap = ids->cap ? ids->cap * 2 : 1024;
                ids->v = realloc(ids->v, ids->cap * sizeof(int64_t));
                ck_assert_ptr_nonnull(ids->v);
        }
        ids->v[ids->n++] = row->id;
        return 0;
}

/* What a plain scan of the table gives for the same filter: the rows in (ts, id) order, and
 * only the last limit of them when there is a limit. */
static void expected(const char *path, const StoreFilter *fl, Ids *ret) {
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;
        char sql[512];
        Ids all = {};

        snprintf(sql, sizeof(sql),
                 "SELECT r.id FROM readings r NOT INDEXED WHERE r.ts >= ?1 AND r.ts < ?2%s ORDER BY r.ts, r.id",
                 fl->metric ? " AND r.metric_id = (SELECT id FROM metrics WHERE name = ?3)" : "");
        ck_assert_int_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        sqlite3_bind_int64(st, 1, fl->since_ms);
        sqlite3_bind_int64(st, 2, fl->until_ms);
        if (fl->metric)
                sqlite3_bind_text(st, 3, fl->metric, -1, SQLITE_STATIC);
        while (sqlite3_step(st) == SQLITE_ROW)
                collect(&(StoredReading){ .id = sqlite3_column_int64(st, 0) }, &all);
        sqlite3_finalize(st);
        sqlite3_close(db);
        if (fl->limit > 0 && all.n > fl->limit) {
                memmove(all.v, all.v + (all.n - fl->limit), fl->limit * sizeof(int64_t));
                all.n = fl->limit;
        }
        *ret = all;
}

typedef struct RangeCase {
        int64_t since, until;         /* relative to BASE; INT64_MIN/MAX as they are */
        uint64_t limit;
        const char *metric;
} RangeCase;

#define ALL_MIN INT64_MIN
#define ALL_MAX INT64_MAX
static const RangeCase range_cases[] = {
        { ALL_MIN, ALL_MAX, 0, NULL },                       /* everything: many windows */
        { ALL_MIN, ALL_MAX, 5, NULL },                       /* the newest 5 */
        { ALL_MIN, ALL_MAX, 30000, NULL },                   /* the newest 30 000: several windows, a skip */
        { ALL_MIN, ALL_MAX, 1000000, NULL },                 /* more than there are */
        { 12000 * 1000LL, ALL_MAX, 0, NULL },                /* the replay's hours, and what came after */
        { 9000 * 1000LL, 9001 * 1000LL, 0, NULL },           /* one second: s1, s2 and replayed s3 at once */
        { 7000 * 1000LL, 7600 * 1000LL, 0, "co2" },          /* a metric without a sensor */
        { 7000 * 1000LL, 14000 * 1000LL, 100, "temp" },
        { -DAY_MS, 0, 0, NULL },                             /* before the first row */
        { 3600 * 1000LL, 3600 * 1000LL + 1, 0, NULL },       /* one millisecond */
};

static void check_ranges(const char *path, size_t i) {
        _cleanup_(store_reader_freep) StoreReader *r = NULL;
        const RangeCase *c = &range_cases[i];
        StoreFilter fl = STORE_FILTER_ALL;
        Ids got = {}, want = {};

        fl.since_ms = c->since == ALL_MIN ? ALL_MIN : BASE + c->since;
        fl.until_ms = c->until == ALL_MAX ? ALL_MAX : BASE + c->until;
        fl.limit = c->limit;
        fl.metric = c->metric;
        ck_assert_int_eq(store_reader_open(path, &r), 0);
        ck_assert_int_eq(store_reader_readings(r, &fl, collect, &got), 0);
        expected(path, &fl, &want);
        ck_assert_uint_eq(got.n, want.n);
        for (size_t k = 0; k < got.n; k++)
                if (got.v[k] != want.v[k])
                        ck_abort_msg("case %zu: row %zu is id %lld, expected %lld", i, k, (long long) got.v[k],
                                     (long long) want.v[k]);
        free(got.v);
        free(want.v);
}

/* The summary written batch by batch is exactly the one the rows give, with batches ending
 * inside blocks (commit_max_rows 700) and spanning several (5000). */
START_TEST(test_blocks_follow_appends) {
        static const unsigned batch_rows[] = { 700, 5000 };
        Fixture f;

        fx_init(&f, batch_rows[_i]);
        fx_start(&f);
        fill(&f);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings"), 13000 * 2 + 6500 + 2160 + 2000);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings_blocks"),
                         tl_sql_int(f.path, "SELECT count(DISTINCT id >> 10) FROM readings"));
        ck_assert_int_eq(tl_sql_int(f.path, BLOCKS_NOT_EXACT), 0);
        /* No index on ts any more: one b-tree per table and the key. */
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM sqlite_schema WHERE name = 'readings_ts'"), 0);
        fx_done(&f);
}
END_TEST

/* Time ranges without a sensor give the rows a scan of the whole table gives, in the same
 * order: across windows, with the replayed rows among much newer neighbours, ties, limits. */
START_TEST(test_ranges_match_a_scan) {
        Fixture f;

        fx_init(&f, 5000);
        fx_start(&f);
        fill(&f);
        fx_done(&f);
        check_ranges(f.path, (size_t) _i);
}
END_TEST

/* A store of the current version made back into what v5 wrote: no summary, the index on ts,
 * and none of what later versions added (v7: clock_events.seq). The migrations after v5 then
 * run as on a store v5 wrote. */
#define BACK_TO_V5                                                                                          \
        "DROP TABLE readings_blocks; CREATE INDEX readings_ts ON readings (ts);"                            \
        " ALTER TABLE clock_events DROP COLUMN seq; PRAGMA user_version = 5"

/* The same on a store not migrated yet (the index on ts, no summary), as a reader finds it
 * while the daemon of the new version has not started or is migrating it; then the
 * migration fills the summary exactly, also across ids retention removed. */
START_TEST(test_reader_on_an_older_store_and_its_migration) {
        char sql[256];
        Fixture f;

        fx_init(&f, 5000);
        fx_start(&f);
        fill(&f);
        fx_stop(&f);
        /* Back to v5's shape; a hole of ids in it, as retention leaves. */
        snprintf(sql, sizeof(sql), "DELETE FROM readings WHERE id BETWEEN 3000 AND 9000; %s", BACK_TO_V5);
        sql_exec(f.path, sql);
        for (size_t i = 0; i < ELEMENTSOF(range_cases); i++)
                check_ranges(f.path, i);

        fx_start(&f);
        fx_done(&f);
        ck_assert_int_eq(tl_sql_int(f.path, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM sqlite_schema WHERE name = 'readings_ts'"), 0);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings_blocks WHERE block BETWEEN 3 AND 7"), 0);
        ck_assert_int_eq(tl_sql_int(f.path, BLOCKS_NOT_EXACT), 0);
        for (size_t i = 0; i < ELEMENTSOF(range_cases); i++)
                check_ranges(f.path, i);
}
END_TEST

/* The migration says what it does where systemd sees it: more start time and the status. */
/* The index on ts is dropped after the migration's transaction, in one of its own; one left
 * by a crash between the two goes at the next open. */
START_TEST(test_leftover_ts_index_dropped) {
        Fixture f;

        fx_init(&f, 100);
        fx_start(&f);
        append(&f, "s1", "temp", BASE, true, BASE + 5);
        fx_stop(&f);
        sql_exec(f.path, "CREATE INDEX readings_ts ON readings (ts)");
        fx_start(&f);
        fx_done(&f);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM sqlite_schema WHERE name = 'readings_ts'"), 0);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings"), 1);
}
END_TEST

/* An empty store has no oldest or newest reading. */
START_TEST(test_summary_of_an_empty_store) {
        StoreSummary sum;
        Fixture f;

        fx_init(&f, 100);
        fx_start(&f);
        ck_assert_int_eq(store_get_summary(f.store, &sum), 0);
        ck_assert_int_eq(sum.oldest_ms, INT64_MIN);
        ck_assert_int_eq(sum.newest_ms, INT64_MIN);
        fx_done(&f);
}
END_TEST

START_TEST(test_migration_notifies) {
        TlNotify n;
        Fixture f;

        fx_init(&f, 5000);
        fx_start(&f);
        append(&f, "s1", "temp", BASE, true, BASE + 5);
        fx_stop(&f);
        sql_exec(f.path, BACK_TO_V5);

        tl_notify_open(&n, tl_tmpdir());
        ck_assert_int_eq(setenv("NOTIFY_SOCKET", n.path, 1), 0);
        fx_start(&f);
        ck_assert(tl_notify_wait(&n, "EXTEND_TIMEOUT_USEC=", 5000));
        ck_assert(tl_notify_wait(&n, "STATUS=Migrating store '", 5000));
        fx_done(&f);
        ck_assert_int_eq(unsetenv("NOTIFY_SOCKET"), 0);
        tl_notify_close(&n);
        ck_assert_int_eq(tl_sql_int(f.path, BLOCKS_NOT_EXACT), 0);
}
END_TEST

/* Age retention drops the blocks it empties and keeps the summary covering what stays (an
 * unsynced reading it steps over keeps its block). */
START_TEST(test_retention_drops_blocks) {
        int64_t now = wall_clock_ms(), old = now - 10 * DAY_MS;
        Fixture f;
        int r;

        fx_init(&f, 100000);
        f.config.retention_days = 1;
        fx_start(&f);
        for (int i = 0; i < 5000; i++)
                append(&f, "s1", "temp", old + i * 1000, true, old + i * 1000);
        {
                Reading u = { .sensor = "s1", .metric = "temp", .value = 1, .ts_ms = 1000, .received_ms = 1000,
                              .source = READING_SOURCE_MQTT, .origin = "t", .flags = READING_FLAG_UNSYNCED,
                              .boottime_ms = 1000 };
                ck_assert_int_eq(store_append(f.store, &u), 0);
        }
        for (int i = 0; i < 3000; i++)
                append(&f, "s1", "temp", now - 3000 * 1000 + i * 1000, true, now - 3000 * 1000 + i * 1000);
        ck_assert_int_eq(store_commit(f.store), 0);
        do
                r = store_run_retention(f.store);
        while (r > 0 && store_retention_pending(f.store));
        ck_assert_int_ge(r, 0);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings"), 3001);
        ck_assert_int_eq(tl_sql_int(f.path, BLOCKS_NOT_COVERING), 0);
        /* Blocks 0 to 3 had only old rows; 4 keeps the unsynced one and new ones. */
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings_blocks WHERE block < 4"), 0);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings_blocks WHERE block = 4"), 1);
        /* The status's oldest and newest reading, through the summary, are the table's. */
        {
                StoreSummary sum;

                ck_assert_int_eq(store_get_summary(f.store, &sum), 0);
                ck_assert_int_eq(sum.oldest_ms, tl_sql_int(f.path, "SELECT min(ts) FROM readings"));
                ck_assert_int_eq(sum.oldest_ms, 1000);
                ck_assert_int_eq(sum.newest_ms, tl_sql_int(f.path, "SELECT max(ts) FROM readings"));
        }
        fx_done(&f);
}
END_TEST

/* The silence check's query (the newest ts per sensor and metric since a time) reads the
 * summary, the open batch's rows included. */
static int on_last_seen(const char *sensor, const char *metric, int64_t last_ms, void *userdata) {
        int64_t *v = userdata;

        if (streq(sensor, "s3") && streq(metric, "temp"))
                v[0] = last_ms;
        if (streq(sensor, "s1") && streq(metric, "temp"))
                v[1] = last_ms;
        v[2]++;
        return 0;
}

START_TEST(test_last_seen_reads_the_summary) {
        int64_t seen[3] = {};
        Fixture f;

        fx_init(&f, 100000);
        fx_start(&f);
        fill(&f);
        append(&f, "s1", "temp", BASE + 20000 * 1000LL, true, BASE + 20000 * 1000LL); /* the open batch */
        /* Only the open batch's reading is that new. */
        ck_assert_int_eq(store_foreach_last_seen(f.store, BASE + 16000 * 1000LL, on_last_seen, seen), 0);
        ck_assert_int_eq(seen[1], BASE + 20000 * 1000LL);
        ck_assert_int_eq(seen[2], 1);
        /* The replayed rows count by their ts, among newer neighbours: every pair is seen. */
        seen[2] = 0;
        ck_assert_int_eq(store_foreach_last_seen(f.store, BASE + 12000 * 1000LL, on_last_seen, seen), 0);
        ck_assert_int_eq(seen[0], BASE + 13000 * 1000LL - 10000); /* the replay's newest */
        ck_assert_int_eq(seen[1], BASE + 20000 * 1000LL);
        ck_assert_int_eq(seen[2], 4);
        /* The status's oldest and newest reading: the open batch's counts. */
        {
                StoreSummary sum;

                ck_assert_int_eq(store_get_summary(f.store, &sum), 0);
                ck_assert_int_eq(sum.oldest_ms, BASE + 13000 * 1000LL - 6 * 3600 * 1000LL); /* the replay's first */
                ck_assert_int_eq(sum.newest_ms, BASE + 20000 * 1000LL);
        }
        fx_done(&f);
}
END_TEST

static Suite *blocks_suite(void) {
        Suite *s = suite_create("store-blocks");
        TCase *tc = tcase_create("blocks");

        tcase_set_timeout(tc, 120);
        tcase_add_loop_test(tc, test_blocks_follow_appends, 0, 2);
        tcase_add_loop_test(tc, test_ranges_match_a_scan, 0, ELEMENTSOF(range_cases));
        tcase_add_test(tc, test_reader_on_an_older_store_and_its_migration);
        tcase_add_test(tc, test_migration_notifies);
        tcase_add_test(tc, test_summary_of_an_empty_store);
        tcase_add_test(tc, test_leftover_ts_index_dropped);
        tcase_add_test(tc, test_retention_drops_blocks);
        tcase_add_test(tc, test_last_seen_reads_the_summary);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(blocks_suite());
}
