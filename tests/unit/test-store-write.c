/* SPDX-License-Identifier: MIT */
/* Unit tests of the store's write path on real SQLite files: the batch window, WAL checkpoints. */
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <sys/stat.h>

#include "collector/store.h"
#include "testlib.h"

typedef struct Fixture {
        sd_event *event;
        StoreConfig config;
        char path[512];
        Task *task;
        Store *store;
        int64_t next_ts;
} Fixture;

static void fx_start(Fixture *f) {
        memset(f, 0, sizeof(*f));
        ck_assert_int_ge(sd_event_new(&f->event), 0);
        tl_store_config_init(&f->config, f->path, sizeof(f->path), NULL);
        tl_store_task_start(f->event, &f->config, &f->task, &f->store);
        f->next_ts = tl_now_ms() - 3600 * 1000;
}

static void fx_done(Fixture *f) {
        if (f->task) {
                ck_assert_int_eq(task_stop(f->task), 0);
                f->task = task_free(f->task);
        }
        f->event = sd_event_unref(f->event);
}

static StoreWriteStats write_stats(Fixture *f) {
        StoreWriteStats w;

        store_get_write_stats(f->store, &w);
        return w;
}

/* One small batch, committed without the loop running: as during a burst that never pauses.
 * Several sensors and metrics, so that each commit writes pages of every b-tree. */
static void append_batch(Fixture *f) {
        static const char *const sensors[] = { "s1", "s2", "s3", "s4" };
        static const char *const metrics[] = { "temperature", "humidity" };

        for (size_t i = 0; i < ELEMENTSOF(sensors); i++)
                for (size_t j = 0; j < ELEMENTSOF(metrics); j++) {
                        Reading r = {
                                .sensor = sensors[i],
                                .metric = metrics[j],
                                .value = 20.5,
                                .ts_ms = f->next_ts,
                                .sensor_ts = true,
                                .received_ms = f->next_ts + 5,
                                .source = READING_SOURCE_MQTT,
                                .origin = "t",
                        };
                        ck_assert_int_eq(store_append(f->store, &r), 0);
                }
        f->next_ts++;
        ck_assert_int_eq(store_commit(f->store), 0);
}

static int64_t rows_seen(const char *path) {
        return tl_sql_int(path, "SELECT count(*) FROM readings");
}

/* Commits until the WAL has reached pages (by the store's own count); returns the batches. */
static unsigned grow_wal_to(Fixture *f, uint64_t pages) {
        unsigned batches = 0;

        while (write_stats(f).wal_pages_max < pages) {
                append_batch(f);
                batches++;
                ck_assert_uint_lt(batches, 1000000);
        }
        return batches;
}

static bool checkpointed(void *userdata) {
        Fixture *f = userdata;

        if (write_stats(f).checkpoints > 0)
                return true;
        ck_assert_int_ge(sd_event_run(f->event, 10 * 1000), 0);
        return write_stats(f).checkpoints > 0;
}

/* The commit that takes the WAL past STORE_CHECKPOINT_IDLE_PAGES does not checkpoint; the loop
 * does when it has nothing else to do. */
START_TEST(test_checkpoint_when_idle) {
        Fixture f;
        StoreWriteStats w;
        unsigned batches;

        fx_start(&f);
        batches = grow_wal_to(&f, STORE_CHECKPOINT_IDLE_PAGES);
        w = write_stats(&f);
        ck_assert_uint_eq(w.checkpoints, 0);
        ck_assert_uint_lt(w.wal_pages_max, STORE_CHECKPOINT_FORCE_PAGES);
        ck_assert_uint_gt(w.longest_commit_usec, 0);

        ck_assert(tl_wait_until(checkpointed, &f, 10000));
        w = write_stats(&f);
        ck_assert_uint_eq(w.checkpoints, 1);
        ck_assert_uint_eq(w.checkpoints_forced, 0);
        ck_assert_uint_gt(w.longest_checkpoint_usec, 0);
        /* Nothing committed is lost by it, and the WAL starts over at the next commit. */
        ck_assert_int_eq(rows_seen(f.path), (int64_t) batches * 8);
        append_batch(&f);
        ck_assert_int_eq(rows_seen(f.path), (int64_t) (batches + 1) * 8);
        fx_done(&f);
}
END_TEST

/* A burst that never lets the loop idle: the WAL is checkpointed inside a commit once it holds
 * STORE_CHECKPOINT_FORCE_PAGES, and so it never grows much past that. */
START_TEST(test_checkpoint_forced_when_never_idle) {
        Fixture f;
        StoreWriteStats w;
        unsigned batches;

        fx_start(&f);
        batches = grow_wal_to(&f, STORE_CHECKPOINT_FORCE_PAGES);
        /* As many batches again: the WAL was reset after the forced checkpoint. */
        for (unsigned i = 0; i < batches; i++)
                append_batch(&f);
        w = write_stats(&f);
        ck_assert_uint_ge(w.checkpoints_forced, 1);
        ck_assert_uint_eq(w.checkpoints, w.checkpoints_forced);
        /* One batch writes a few pages: the bound is overshot by one commit at most. */
        ck_assert_uint_lt(w.wal_pages_max, STORE_CHECKPOINT_FORCE_PAGES + 100);
        ck_assert_int_eq(rows_seen(f.path), (int64_t) batches * 2 * 8);
        fx_done(&f);
}
END_TEST

/* A reader (`query`, `export`) holding a snapshot is neither blocked nor waited for: appends go
 * on, the reader keeps its snapshot, and a checkpoint that cannot finish because of it is not
 * tried again at every commit. Once the reader is gone, the idle checkpoint gets to the end. */
START_TEST(test_checkpoint_with_reader) {
        Fixture f;
        StoreWriteStats w;
        sqlite3 *reader = NULL;
        sqlite3_stmt *st = NULL;
        int64_t seen;
        uint64_t before;

        fx_start(&f);
        append_batch(&f);
        ck_assert_int_eq(sqlite3_open_v2(f.path, &reader, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_exec(reader, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_prepare_v2(reader, "SELECT count(*) FROM readings", -1, &st, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
        seen = sqlite3_column_int64(st, 0);
        ck_assert_int_eq(seen, 8);
        sqlite3_reset(st);

        /* Twice the bound with the reader's snapshot in place. */
        grow_wal_to(&f, 2 * STORE_CHECKPOINT_FORCE_PAGES);
        w = write_stats(&f);
        ck_assert_int_eq(task_get_state(f.task), TASK_RUNNING);
        ck_assert_uint_ge(w.checkpoints_forced, 1);
        ck_assert_uint_le(w.checkpoints_forced, 2);
        ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
        ck_assert_int_eq(sqlite3_column_int64(st, 0), seen);
        sqlite3_finalize(st);
        ck_assert_int_eq(sqlite3_exec(reader, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(reader);

        /* The reader is gone: the next commit asks for a checkpoint, the idle loop runs it. */
        before = w.checkpoints;
        append_batch(&f);
        for (int64_t deadline = tl_now_ms() + 10000; write_stats(&f).checkpoints == before;) {
                ck_assert_int_lt(tl_now_ms(), deadline);
                ck_assert_int_ge(sd_event_run(f.event, 10 * 1000), 0);
        }
        ck_assert_uint_eq(write_stats(&f).checkpoints_forced, w.checkpoints_forced);
        fx_done(&f);
}
END_TEST

/* A loop busy with one input for longer than the batch window (a backlog read in one go) never
 * lets the commit timer fire: the batch still ends when its window has passed, not only at
 * commit_max_rows, so a hard kill loses at most about one window. */
START_TEST(test_window_ends_batch_without_loop) {
        Fixture f;
        StoreStats stats;
        int64_t start, rows = 0;

        memset(&f, 0, sizeof(f));
        ck_assert_int_ge(sd_event_new(&f.event), 0);
        tl_store_config_init(&f.config, f.path, sizeof(f.path), NULL);
        f.config.commit_interval_ms = 20;
        f.config.commit_max_rows = 100000;
        tl_store_task_start(f.event, &f.config, &f.task, &f.store);
        f.next_ts = tl_now_ms() - 3600 * 1000;

        /* At least five windows, and enough rows for the clock to be read (from 256 rows on):
         * on a slow machine (sanitizers) a window may hold fewer. */
        start = tl_now_ms();
        while (tl_now_ms() - start < 5 * 20 || rows < 4 * 256) {
                Reading r = {
                        .sensor = "s1",
                        .metric = "m",
                        .value = 1.0,
                        .ts_ms = f.next_ts++,
                        .sensor_ts = true,
                        .received_ms = f.next_ts,
                        .source = READING_SOURCE_SERIAL,
                        .origin = "/dev/ttyUSB0",
                };
                ck_assert_int_eq(store_append(f.store, &r), 0);
                rows++;
        }
        store_get_stats(f.store, &stats);
        /* Five windows and a thousand rows passed: at least two commits, and another connection
         * sees their rows. */
        ck_assert_msg(stats.commits >= 2, "%" PRIu64 " commits for %" PRId64 " rows in %" PRId64 " ms", stats.commits,
                      rows, tl_now_ms() - start);
        ck_assert_int_gt(rows_seen(f.path), 0);
        fx_done(&f);
        ck_assert_int_eq(rows_seen(f.path), rows);
}
END_TEST

static Suite *checkpoint_suite(void) {
        Suite *s = suite_create("store-write");
        TCase *tc = tcase_create("write");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_window_ends_batch_without_loop);
        tcase_add_test(tc, test_checkpoint_when_idle);
        tcase_add_test(tc, test_checkpoint_forced_when_never_idle);
        tcase_add_test(tc, test_checkpoint_with_reader);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(checkpoint_suite());
}
