/* SPDX-License-Identifier: MIT */
/* Unit tests for the store's sequence numbers, store id and forwarding hooks (upstream). */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "collector/store.h"
#include "collector/time-util.h"
#include "testlib.h"

#define DAY_MS ((int64_t) 24 * 3600 * 1000)

typedef struct Fixture {
        sd_event *event;
        StoreConfig config;
        char path[512];
        Task *task;
        Store *store;
        int64_t committed;            /* from the commit hook */
        unsigned commits;
        int64_t retention_upto;       /* from the retention hook */
        uint64_t counted;             /* what the retention hook counted */
} Fixture;

static void fx_start(Fixture *f, const char *dir) {
        if (!f->event) {
                ck_assert_int_ge(sd_event_new(&f->event), 0);
                snprintf(f->path, sizeof(f->path), "%s/readings.db", dir);
                f->config = (StoreConfig) { .path = f->path, .commit_interval_ms = 10000, .commit_max_rows = 100000 };
        }
        ck_assert_int_eq(store_task_new(f->event, &f->config, &f->task, &f->store), 0);
        (void) task_start(f->task);
        ck_assert_int_eq(task_get_state(f->task), TASK_RUNNING);
}

static void fx_stop(Fixture *f) {
        ck_assert_int_eq(task_stop(f->task), 0);
        f->task = task_free(f->task);
        f->store = NULL;
}

static void append(Fixture *f, const char *sensor, int64_t received) {
        static int64_t ts = 1;
        Reading r = { .sensor = sensor, .metric = "t", .value = 1.0, .ts_ms = received + ts++, .received_ms = received,
                      .source = READING_SOURCE_SERIAL, .origin = "x" };

        ck_assert_int_eq(store_append(f->store, &r), 0);
}

static void on_commit(Store *s, int64_t committed, void *userdata) {
        Fixture *f = userdata;
        (void) s;
        f->committed = committed;
        f->commits++;
}

static void on_retention(Store *s, int64_t upto, void *userdata) {
        Fixture *f = userdata;
        uint64_t n = 0;

        ck_assert_int_eq(store_count_seq(s, 1, upto, &n), 0);
        f->retention_upto = upto;
        f->counted += n;
}

static int collect_ids(const StoredReading *row, void *userdata) {
        int64_t *last = userdata;

        ck_assert_int_gt(row->id, *last);
        *last = row->id;
        return 0;
}

/* Ids never repeat: not after retention emptied the table, not across a restart; the commit
 * hook reports committed ids only; store_read_seq() never shows the open batch. */
START_TEST(test_seq_never_repeats) {
        Fixture f = {};
        int64_t now = wall_clock_ms(), last = 0;
        _cleanup_free_ void *id = NULL;
        size_t size = 0;

        fx_start(&f, tl_tmpdir());
        ck_assert_int_eq(store_get_meta(f.store, "store_id", &id, &size), 1);
        ck_assert_uint_eq(size, 32);
        store_set_hooks(f.store, on_commit, on_retention, &f);

        for (int i = 0; i < 10; i++)
                append(&f, "old", now - 3 * DAY_MS);
        ck_assert_int_eq(store_read_seq(f.store, 0, INT64_MAX, 100, collect_ids, &last), 0); /* not committed */
        ck_assert_int_eq(f.commits, 0);
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_int_eq(f.committed, 10);
        ck_assert_int_eq(store_committed_seq(f.store), 10);
        ck_assert_int_eq(store_read_seq(f.store, 0, INT64_MAX, 100, collect_ids, &last), 10);
        ck_assert_int_eq(last, 10);

        /* Retention removes all ten: the hook sees them before they go. */
        f.config.retention_days = 1;
        ck_assert_int_ge(store_run_retention(f.store), 10);
        ck_assert_int_eq(f.retention_upto, 10);
        ck_assert_uint_eq(f.counted, 10);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings"), 0);

        append(&f, "new", now);
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_int_eq(f.committed, 11);
        fx_stop(&f);

        /* Emptied once more, then reopened: still no id below the high-water mark. */
        f.config.retention_days = 0;
        fx_start(&f, NULL);
        ck_assert_int_eq(store_committed_seq(f.store), 11);
        fx_stop(&f);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT max(id) FROM readings"), 11);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'readings_high_water'"), 10);
        {
                /* What an emptied table looks like after a restart. */
                char cmd[700];
                snprintf(cmd, sizeof(cmd), "sqlite3 %s \"UPDATE meta SET value = 11 WHERE key = 'readings_high_water'; DELETE FROM readings;\"", f.path);
                ck_assert_int_eq(system(cmd), 0);
        }
        fx_start(&f, NULL);
        append(&f, "again", now);
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_int_eq(store_committed_seq(f.store), 12);
        append(&f, "again", now);
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_int_eq(store_committed_seq(f.store), 13);
        fx_stop(&f);
        f.event = sd_event_unref(f.event);
}
END_TEST

/* The acknowledged state goes into the open batch: committed with it, never on its own. */
START_TEST(test_meta_batched) {
        Fixture f = {};
        _cleanup_free_ void *v = NULL;
        size_t size = 0;

        fx_start(&f, tl_tmpdir());
        ck_assert_int_eq(store_set_meta_batched(f.store, "upstream.acked", "7 9-9", 5), 0);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM meta WHERE key = 'upstream.acked'"), 0);
        ck_assert_int_eq(store_get_meta(f.store, "upstream.acked", &v, &size), 1); /* its own connection sees it */
        ck_assert_str_eq(v, "7 9-9");
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM meta WHERE key = 'upstream.acked'"), 1);
        fx_stop(&f);
        f.event = sd_event_unref(f.event);
}
END_TEST

static int collect_flags(const StoredReading *row, void *userdata) {
        unsigned *flags = userdata;

        ck_assert_int_ge(row->id, 1);
        ck_assert_int_le(row->id, 3);
        flags[row->id - 1] = row->flags;
        return 0;
}

/* store_read_seq() gives each reading its clock flags, for the payloads upstream. */
START_TEST(test_seq_flags) {
        static const unsigned want[] = { 0, READING_FLAG_UNSYNCED, READING_FLAG_SUSPECT_TS };
        Fixture f = {};
        unsigned got[3] = { 99, 99, 99 };
        int64_t now = wall_clock_ms();

        fx_start(&f, tl_tmpdir());
        for (size_t i = 0; i < ELEMENTSOF(want); i++) {
                Reading r = { .sensor = "s", .metric = "t", .value = 1.0, .ts_ms = now + (int64_t) i,
                              .received_ms = now, .source = READING_SOURCE_SERIAL, .origin = "x", .flags = want[i],
                              .boottime_ms = 1000 };

                ck_assert_int_eq(store_append(f.store, &r), 0);
        }
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_int_eq(store_read_seq(f.store, 0, INT64_MAX, 10, collect_flags, got), 3);
        for (size_t i = 0; i < ELEMENTSOF(want); i++)
                ck_assert_uint_eq(got[i], want[i]);
        fx_stop(&f);
        f.event = sd_event_unref(f.event);
}
END_TEST

/* What store_retention_scan() must say inside the hook, per range. */
typedef struct ScanCase {
        int64_t lo, hi;
        uint64_t want_removed;
        int64_t want_kept;
        int64_t want_next;            /* store_retention_next_removed() */
} ScanCase;

typedef struct ScanFixture {
        const ScanCase *cases;
        size_t n_cases;
        unsigned calls;
} ScanFixture;

static void on_retention_scan(Store *s, int64_t upto, void *userdata) {
        ScanFixture *f = userdata;
        (void) upto;

        for (size_t i = 0; i < f->n_cases; i++) {
                uint64_t removed = 99;
                int64_t kept = 99;

                int64_t next = 99;

                ck_assert_int_eq(store_retention_scan(s, f->cases[i].lo, f->cases[i].hi, &removed, &kept), 0);
                ck_assert_msg(removed == f->cases[i].want_removed && kept == f->cases[i].want_kept,
                              "%" PRId64 "..%" PRId64 ": removed %" PRIu64 " kept %" PRId64 ", want %" PRIu64 " and %" PRId64,
                              f->cases[i].lo, f->cases[i].hi, removed, kept, f->cases[i].want_removed, f->cases[i].want_kept);
                ck_assert_int_eq(store_retention_next_removed(s, f->cases[i].lo, f->cases[i].hi, &next), 0);
                ck_assert_msg(next == f->cases[i].want_next, "%" PRId64 "..%" PRId64 ": next removed %" PRId64 ", want %" PRId64,
                              f->cases[i].lo, f->cases[i].hi, next, f->cases[i].want_next);
        }
        f->calls++;
}

static void append_flags(Fixture *f, int64_t received, unsigned flags) {
        static int64_t ts = 1;
        Reading r = { .sensor = "s", .metric = "t", .value = 1.0, .ts_ms = received + ts++, .received_ms = received,
                      .source = READING_SOURCE_SERIAL, .origin = "x", .flags = flags, .boottime_ms = 1000 };

        ck_assert_int_eq(store_append(f->store, &r), 0);
}

/* Inside the retention hook the store says which rows of a range really go: age retention keeps
 * unsynced, uncorrected rows (and everything an earlier age step kept). Outside the hook the
 * question has no answer. */
START_TEST(test_retention_scan) {
        /* Ten old readings, 3, 4 and 7 unsynced: the age step passes up to 10 and keeps those. */
        static const ScanCase first[] = {
                { 1, 10, 7, 3, 1 },   /* 1, 2, 5, 6, 8, 9, 10 go; 3 is the first that stays */
                { 5, 10, 5, 7, 5 },
                { 8, 10, 3, 0, 8 },   /* nothing after 7 stays */
                { 8, 100, 3, 0, 8 },  /* above upto: not this step's business */
                { 3, 10, 5, 3, 5 },   /* the run 3..4 stays, 5 is the next to go */
                { 4, 4, 0, 4, 0 },
                { 7, 10, 3, 7, 8 },
        };
        /* Two more old ones (11, 12): the next age step starts after 10; 3, 4, 7 stay. */
        static const ScanCase second[] = {
                { 1, 12, 2, 3, 11 },
                { 8, 12, 2, 0, 11 },
                { 3, 10, 0, 3, 0 },   /* all at or before the last step's end stays */
        };
        Fixture f = {};
        ScanFixture sf = {};
        int64_t now = wall_clock_ms();
        uint64_t removed;
        int64_t kept;

        fx_start(&f, tl_tmpdir());
        store_set_hooks(f.store, NULL, on_retention_scan, &sf);
        for (int i = 1; i <= 10; i++)
                append_flags(&f, now - 3 * DAY_MS, i == 3 || i == 4 || i == 7 ? READING_FLAG_UNSYNCED : 0);
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_int_eq(store_retention_scan(f.store, 1, 10, &removed, &kept), -EINVAL);
        ck_assert_int_eq(store_retention_next_removed(f.store, 1, 10, &kept), -EINVAL);

        f.config.retention_days = 1;
        sf = (ScanFixture) { first, ELEMENTSOF(first), 0 };
        ck_assert_int_ge(store_run_retention(f.store), 0);
        ck_assert_uint_eq(sf.calls, 1);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings"), 3);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings WHERE id IN (3, 4, 7)"), 3);

        for (int i = 0; i < 2; i++)
                append_flags(&f, now - 3 * DAY_MS, 0);
        ck_assert_int_eq(store_commit(f.store), 0);
        sf = (ScanFixture) { second, ELEMENTSOF(second), 0 };
        ck_assert_int_ge(store_run_retention(f.store), 0);
        ck_assert_uint_eq(sf.calls, 1);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings"), 3);
        fx_stop(&f);
        f.event = sd_event_unref(f.event);
}
END_TEST

typedef struct Precommit {
        unsigned calls;
        bool batch_open;              /* store_batch_open() inside the hook */
} Precommit;

static void on_precommit(Store *s, void *userdata) {
        Precommit *p = userdata;
        char value[16];

        p->calls++;
        p->batch_open = store_batch_open(s);
        snprintf(value, sizeof(value), "%u", p->calls);
        ck_assert_int_eq(store_set_meta_batched(s, "upstream.acked", value, strlen(value)), 0);
}

/* The pre-commit hook runs once per commit, inside the batch, and what it writes commits with
 * it; no batch, no hook. store_batch_open() says whether a batch (and so a hook) will follow. */
START_TEST(test_precommit_hook) {
        Fixture f = {};
        Precommit p = {};
        int64_t now = wall_clock_ms();

        fx_start(&f, tl_tmpdir());
        store_set_precommit_hook(f.store, on_precommit, &p);
        ck_assert(!store_batch_open(f.store));
        ck_assert_int_eq(store_commit(f.store), 0); /* nothing open: no hook */
        ck_assert_uint_eq(p.calls, 0);

        append(&f, "s", now);
        append(&f, "s", now);
        ck_assert(store_batch_open(f.store));
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_uint_eq(p.calls, 1);
        ck_assert(p.batch_open);
        ck_assert(!store_batch_open(f.store));
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'upstream.acked'"), 1);

        /* A batch the hook's own kind of write opened: one call at its commit too. */
        ck_assert_int_eq(store_set_meta_batched(f.store, "upstream.lost", "0", 1), 0);
        ck_assert(store_batch_open(f.store));
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_uint_eq(p.calls, 2);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'upstream.acked'"), 2);

        /* Unset: commits go on without it. */
        store_set_precommit_hook(f.store, NULL, NULL);
        append(&f, "s", now);
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_uint_eq(p.calls, 2);
        fx_stop(&f);
        f.event = sd_event_unref(f.event);
}
END_TEST

typedef struct SeqNames {
        char sensor[32], metric[32], origin[32];
        unsigned n;
} SeqNames;

static int collect_names(const StoredReading *row, void *userdata) {
        SeqNames *names = userdata;

        snprintf(names->sensor, sizeof(names->sensor), "%s", row->sensor);
        snprintf(names->metric, sizeof(names->metric), "%s", row->metric);
        snprintf(names->origin, sizeof(names->origin), "%s", row->origin);
        names->n++;
        return 0;
}

/* store_read_seq() looks names up by id in a cache. Retention deletes the names no row uses any
 * more, and SQLite gives a deleted name's id to the next new name: the cache must not answer
 * with the old name then. Likewise after a rolled-back batch. */
#define NAMES_LEFT \
        "SELECT (SELECT count(*) FROM sensors) + (SELECT count(*) FROM metrics) + (SELECT count(*) FROM origins)"

START_TEST(test_seq_names_across_prune) {
        Fixture f = {};
        SeqNames names = {};
        int64_t now = wall_clock_ms();
        Reading r = { .sensor = "old-sensor", .metric = "old-metric", .value = 1.0, .ts_ms = now - 3 * DAY_MS,
                      .received_ms = now - 3 * DAY_MS, .source = READING_SOURCE_MQTT, .origin = "old/topic" };

        fx_start(&f, tl_tmpdir());
        ck_assert_int_eq(store_append(f.store, &r), 0);
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_int_eq(store_read_seq(f.store, 0, INT64_MAX, 10, collect_names, &names), 1);
        ck_assert_str_eq(names.sensor, "old-sensor");
        ck_assert_str_eq(names.metric, "old-metric");
        ck_assert_str_eq(names.origin, "old/topic");
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT id FROM sensors WHERE name = 'old-sensor'"), 1);

        /* Age retention removes the reading; the pass over the names then deletes its names. */
        f.config.retention_days = 1;
        for (int i = 0; i < 100 && tl_sql_int(f.path, NAMES_LEFT) > 0; i++)
                ck_assert_int_ge(store_run_retention(f.store), 0);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM sensors"), 0);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM origins"), 0);

        /* New names get the freed ids. */
        r = (Reading) { .sensor = "new-sensor", .metric = "new-metric", .value = 2.0, .ts_ms = now, .received_ms = now,
                        .source = READING_SOURCE_MQTT, .origin = "new/topic" };
        ck_assert_int_eq(store_append(f.store, &r), 0);
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT id FROM sensors WHERE name = 'new-sensor'"), 1);
        names = (SeqNames) {};
        ck_assert_int_eq(store_read_seq(f.store, 1, INT64_MAX, 10, collect_names, &names), 1);
        ck_assert_str_eq(names.sensor, "new-sensor");
        ck_assert_str_eq(names.metric, "new-metric");
        ck_assert_str_eq(names.origin, "new/topic");
        fx_stop(&f);
        f.event = sd_event_unref(f.event);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("store-seq");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_seq_never_repeats);
        tcase_add_test(tc, test_meta_batched);
        tcase_add_test(tc, test_seq_flags);
        tcase_add_test(tc, test_retention_scan);
        tcase_add_test(tc, test_seq_names_across_prune);
        tcase_add_test(tc, test_precommit_hook);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(suite());
}
