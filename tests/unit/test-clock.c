/* SPDX-License-Identifier: MIT */
/* Unit tests of the clock: the trust and flag rules, the correction arithmetic, and the store's correction, retention and schema. */
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "collector/clock.h"
#include "collector/ingest.h"
#include "collector/store.h"
#include "collector/time-util.h"
#include "testlib.h"

#define DAY_MS ((int64_t) 24 * 3600 * 1000)
#define BOOT_A "0123456789abcdef0123456789abcdef"
#define BOOT_B "fedcba9876543210fedcba9876543210"
#define BOOT_C "00112233445566778899aabbccddeeff"
#define BOOT_D "ffeeddccbbaa99887766554433221100"
#define BOOT_E "0f1e2d3c4b5a69788796a5b4c3d2e1f0"

/* ---- pure rules, table-driven ---- */

static const struct {
        ClockTrust trust;
        ClockProbe probe;
        bool trusted;
        const char *why;              /* a part of the reason */
} judge_cases[] = {
        /* A Raspberry Pi with timesyncd, before and after it synchronised. */
        { CLOCK_TRUST_AUTO, { .kernel_asked = true, .kernel_maxerror_us = 16000000, .timesyncd = true }, false, "timesyncd runs" },
        { CLOCK_TRUST_AUTO, { .kernel_asked = true, .kernel_maxerror_us = 16000000, .timesyncd = true, .timesyncd_synced = true }, true, "timesyncd has synchronised" },
        { CLOCK_TRUST_AUTO, { .kernel_asked = true, .kernel_synced = true, .kernel_maxerror_us = 1000, .timesyncd = true }, true, "kernel reports it synchronised" },
        /* chrony or ntpd: the kernel says so. */
        { CLOCK_TRUST_AUTO, { .kernel_asked = true, .kernel_synced = true }, true, "kernel" },
        /* A VM or a board with a battery-backed RTC and nothing that synchronises. */
        { CLOCK_TRUST_AUTO, { .kernel_asked = true, .kernel_maxerror_us = 16000000 }, true, "nothing here synchronises it" },
        { CLOCK_TRUST_SYNC, { .kernel_asked = true, .kernel_maxerror_us = 16000000 }, false, "\"sync\"" },
        { CLOCK_TRUST_SYNC, { .timesyncd = true }, false, "\"sync\"" },
        { CLOCK_TRUST_SYNC, { .timesyncd = true, .timesyncd_synced = true }, true, "timesyncd has synchronised" },
        { CLOCK_TRUST_SYNC, { .kernel_synced = true }, true, "kernel" },
        { CLOCK_TRUST_ALWAYS, { .timesyncd = true }, true, "\"always\"" },
        { CLOCK_TRUST_ALWAYS, {}, true, "\"always\"" },
};

START_TEST(test_judge) {
        const char *why = NULL;
        bool trusted = clock_judge(judge_cases[_i].trust, &judge_cases[_i].probe, &why);

        ck_assert_msg(trusted == judge_cases[_i].trusted, "case %d: trusted %d", _i, trusted);
        ck_assert_ptr_nonnull(why);
        ck_assert_msg(strstr(why, judge_cases[_i].why), "case %d: '%s'", _i, why);
}
END_TEST

static const struct {
        bool trusted, sensor_ts;
        int64_t ts, received, tolerance;
        unsigned flags;
} flag_cases[] = {
        { false, false, 1000, 1000, DAY_MS, READING_FLAG_UNSYNCED },
        /* Not trusted: the sensor's time cannot be judged against the clock. */
        { false, true, 0, 1700000000000, DAY_MS, READING_FLAG_UNSYNCED },
        { true, false, 1700000000000, 1700000000000, DAY_MS, 0 },
        { true, true, 1700000000000, 1700000000000 + DAY_MS, DAY_MS, 0 },
        { true, true, 1700000000000, 1700000000000 + DAY_MS + 1, DAY_MS, READING_FLAG_SUSPECT_TS },
        { true, true, 1700000000000 + DAY_MS + 1, 1700000000000, DAY_MS, READING_FLAG_SUSPECT_TS },
        { true, true, 1700000000000 - DAY_MS, 1700000000000, DAY_MS, 0 },
        { true, true, INT64_MIN, 1700000000000, DAY_MS, READING_FLAG_SUSPECT_TS },
        { true, true, INT64_MAX, 1700000000000, DAY_MS, READING_FLAG_SUSPECT_TS },
        { true, true, 1700000000000 + 1001, 1700000000000, 1000, READING_FLAG_SUSPECT_TS },
        /* Receipt times are never suspect, however far off. */
        { true, false, 0, 1700000000000, 1000, 0 },
};

START_TEST(test_reading_flags) {
        ck_assert_uint_eq(clock_reading_flags(flag_cases[_i].trusted, flag_cases[_i].sensor_ts, flag_cases[_i].ts,
                                              flag_cases[_i].received, flag_cases[_i].tolerance),
                          flag_cases[_i].flags);
}
END_TEST

static const struct {
        int64_t sync_realtime, sync_boottime, reading_boottime, want;
} correct_cases[] = {
        /* Synchronised 1 h after boot at real time T; a reading 10 s after boot was at T - 3590 s. */
        { 1700000000000, 3600000, 10000, 1700000000000 - 3590000 },
        { 1700000000000, 3600000, 3600000, 1700000000000 },
        { 1700000000000, 5000, 0, 1699999995000 },
        /* Suspend counts in CLOCK_BOOTTIME: nothing special. */
        { 1700000000000, 90000000, 1000, 1700000000000 - 89999000 },
};

START_TEST(test_corrected_ms) {
        ck_assert_int_eq(clock_corrected_ms(correct_cases[_i].sync_realtime, correct_cases[_i].sync_boottime,
                                            correct_cases[_i].reading_boottime),
                         correct_cases[_i].want);
}
END_TEST

static const struct {
        int64_t old_offset, new_offset;
        bool step;
} step_cases[] = {
        { 0, 0, false },     { 0, 999, false },  { 0, -999, false },          { 0, 1000, true },
        { 0, -1000, true },  { 946684800000, 1700000000000, true },           { 1700000000000, 1699996400000, true },
};

START_TEST(test_is_step) {
        ck_assert(clock_is_step(step_cases[_i].old_offset, step_cases[_i].new_offset) == step_cases[_i].step);
}
END_TEST

/* The defaults: right for a Raspberry Pi with timesyncd; and the names. */
START_TEST(test_config) {
        static const char minimal[] = "{ \"serial\": { \"device\": \"/dev/ttyUSB0\" }, \"mqtt\": { \"enabled\": false } }";
        static const char set[] = "{ \"serial\": { \"device\": \"/dev/ttyUSB0\" }, \"mqtt\": { \"enabled\": false },"
                                  " \"clock\": { \"trust\": \"always\", \"sensor_ts_tolerance\": 600 } }";
        Config *c = NULL;

        ck_assert_int_eq(config_parse("mem.json", minimal, strlen(minimal), &c, NULL), 0);
        ck_assert_int_eq(c->clock.trust, CLOCK_TRUST_AUTO);
        ck_assert_uint_eq(c->clock.sensor_ts_tolerance_usec, 86400 * USEC_PER_SEC);
        c = config_free(c);
        ck_assert_int_eq(config_parse("mem.json", set, strlen(set), &c, NULL), 0);
        ck_assert_int_eq(c->clock.trust, CLOCK_TRUST_ALWAYS);
        ck_assert_uint_eq(c->clock.sensor_ts_tolerance_usec, 600 * USEC_PER_SEC);
        c = config_free(c);
        ck_assert_str_eq(clock_trust_to_string(CLOCK_TRUST_SYNC), "sync");
        ck_assert_ptr_null(clock_trust_to_string(_CLOCK_TRUST_MAX));
}
END_TEST

/* ---- the store's side ---- */

typedef struct Fixture {
        sd_event *event;
        StoreConfig config;
        char path[512];
        Task *task;
        Store *store;
} Fixture;

static void fx_init(Fixture *f, const char *dir) {
        memset(f, 0, sizeof(*f));
        ck_assert_int_ge(sd_event_new(&f->event), 0);
        tl_store_config_init(&f->config, f->path, sizeof(f->path), dir);
}

static void fx_start(Fixture *f) {
        ck_assert_int_eq(store_task_new(f->event, &f->config, &f->task, &f->store), 0);
        (void) task_start(f->task);
        ck_assert_int_eq(task_get_state(f->task), TASK_RUNNING);
}

static void fx_stop(Fixture *f) {
        if (f->task) {
                ck_assert_int_eq(task_stop(f->task), 0);
                f->task = task_free(f->task);
                f->store = NULL;
        }
        f->event = sd_event_unref(f->event);
}

/* A reading received at a wrong time (received) with its boot time; sensor_ts: the sensor's own. */
static void append(Fixture *f, const char *sensor, int64_t ts, bool sensor_ts, int64_t received, int64_t boottime,
                   unsigned flags) {
        Reading r = {
                .sensor = sensor,
                .metric = "temp",
                .value = 1.5,
                .ts_ms = sensor_ts ? ts : received,
                .sensor_ts = sensor_ts,
                .received_ms = received,
                .source = READING_SOURCE_SERIAL,
                .origin = "/dev/ttyUSB0",
                .flags = flags,
                .boottime_ms = boottime,
        };

        ck_assert_int_eq(store_append(f->store, &r), 0);
}

static int64_t q(Fixture *f, const char *sql) {
        return tl_sql_int(f->path, sql);
}

/* Corrects in steps of `rows` ids; returns the number of steps. */
static int correct_all(Fixture *f, int64_t offset, unsigned rows, uint64_t *ret_total) {
        uint64_t n, total = 0;
        int steps = 0, r;

        do {
                r = store_clock_correct(f->store, offset, rows, &n);
                ck_assert_int_ge(r, 0);
                total += n;
                steps++;
                ck_assert_int_lt(steps, 1000);
        } while (r > 0);
        *ret_total = total;
        return steps;
}

START_TEST(test_store_correction) {
        const int64_t offset = 1700000000000 - 5000; /* realtime - boottime once trusted */
        const int64_t wrong = 946684800000;           /* 2000-01-01: the clock at boot */
        Fixture f;
        uint64_t total;

        fx_init(&f, NULL);
        fx_start(&f);
        ck_assert_int_eq(store_clock_set_boot(f.store, BOOT_A), 0);
        /* 2500 readings received unsynced (one with the sensor's own time), then a trusted one. */
        for (int i = 0; i < 2500; i++)
                append(&f, "s1", 0, false, wrong + i * 10, 1000 + i * 10, READING_FLAG_UNSYNCED);
        append(&f, "s2", 1700000000123, true, wrong + 25000, 26000, READING_FLAG_UNSYNCED);
        ck_assert_uint_eq(store_clock_waiting(f.store), 2501);
        append(&f, "s3", 0, false, 1700000000000, 0, 0);
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_uint_eq(store_clock_waiting(f.store), 2501);

        /* Three rounds of at most 1000 ids. */
        ck_assert_int_eq(correct_all(&f, offset, 1000, &total), 3);
        ck_assert_uint_eq(total, 2501);
        ck_assert_uint_eq(store_clock_waiting(f.store), 0);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM readings WHERE flags = 3"), 2501);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM readings WHERE flags = 3 AND received != boottime + 1699999995000"), 0);
        ck_assert_int_eq(q(&f, "SELECT received FROM readings WHERE id = 1"), 1700000000000 - 4000);
        ck_assert_int_eq(q(&f, "SELECT ts FROM readings WHERE id = 1"), 1700000000000 - 4000);
        /* The sensor's own time stays; its receipt time is corrected. */
        ck_assert_int_eq(q(&f, "SELECT ts FROM readings_view WHERE sensor = 's2'"), 1700000000123);
        ck_assert_int_eq(q(&f, "SELECT received FROM readings_view WHERE sensor = 's2'"), 26000 + offset);
        ck_assert_int_eq(q(&f, "SELECT corrected FROM readings_view WHERE sensor = 's2'"), 1);
        /* The trusted reading is untouched. */
        ck_assert_int_eq(q(&f, "SELECT flags FROM readings_view r JOIN readings x USING (id) WHERE sensor = 's3'"), 0);
        ck_assert_int_eq(q(&f, "SELECT received FROM readings_view WHERE sensor = 's3'"), 1700000000000);
        /* Nothing more to do; a second round finds nothing. */
        ck_assert_int_eq(correct_all(&f, offset, 1000, &total), 1);
        ck_assert_uint_eq(total, 0);
        ck_assert_int_eq(q(&f, "SELECT corrected_upto FROM boots WHERE boot_id = '" BOOT_A "'"), 2502);
        /* The time summary of readings follows the corrected ts: each block's range is exactly
         * that of its rows again (no longer reaching back to 2000). */
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM (SELECT id >> 10 AS k, min(ts) AS lo, max(ts) AS hi FROM readings GROUP BY k) x"
                               " LEFT JOIN readings_blocks b ON b.block = x.k WHERE b.block IS NULL OR b.min_ts != x.lo OR b.max_ts != x.hi"),
                         0);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM readings_blocks"), 3);
        fx_stop(&f);
}
END_TEST

START_TEST(test_store_earlier_boot_stays_unsynced) {
        const char *dir = tl_tmpdir();
        Fixture f;
        uint64_t total;

        /* Boot A: readings unsynced, never corrected (no network that boot). */
        fx_init(&f, dir);
        fx_start(&f);
        ck_assert_int_eq(store_clock_set_boot(f.store, BOOT_A), 0);
        for (int i = 0; i < 10; i++)
                append(&f, "a", 0, false, 1000 + i, 500 + i, READING_FLAG_UNSYNCED);
        fx_stop(&f);

        /* A restart within boot A finds them waiting. */
        fx_init(&f, dir);
        fx_start(&f);
        ck_assert_int_eq(store_clock_set_boot(f.store, BOOT_A), 10);
        ck_assert_uint_eq(store_clock_waiting(f.store), 10);
        fx_stop(&f);

        /* Boot B: its own unsynced readings are corrected, A's stay as they are. */
        fx_init(&f, dir);
        fx_start(&f);
        ck_assert_int_eq(store_clock_set_boot(f.store, BOOT_B), 0);
        for (int i = 0; i < 5; i++)
                append(&f, "b", 0, false, 2000 + i, 100 + i, READING_FLAG_UNSYNCED);
        ck_assert_int_eq(correct_all(&f, 1700000000000, 2, &total), 3);
        ck_assert_uint_eq(total, 5);
        fx_stop(&f);

        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings_view WHERE sensor = 'a' AND unsynced AND NOT corrected"), 10);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT min(received) FROM readings_view WHERE sensor = 'a'"), 1000);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings_view WHERE sensor = 'b' AND corrected"), 5);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT min(received) FROM readings_view WHERE sensor = 'b'"), 1700000000100);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM boots"), 2);
}
END_TEST

/* Age retention leaves receipt times taken unsynced alone, before and after other old rows. */
START_TEST(test_store_retention_keeps_unsynced) {
        struct timespec now;
        int64_t t;
        Fixture f;

        clock_gettime(CLOCK_REALTIME, &now);
        t = (int64_t) now.tv_sec * 1000;
        fx_init(&f, NULL);
        f.config.retention_days = 1;
        fx_start(&f);
        ck_assert_int_eq(store_clock_set_boot(f.store, BOOT_A), 0);
        for (int i = 0; i < 5; i++)
                append(&f, "u1", 0, false, 1000 + i, 10 + i, READING_FLAG_UNSYNCED);       /* "1970" */
        for (int i = 0; i < 5; i++)
                append(&f, "old", 0, false, t - 3 * DAY_MS + i, 0, 0);                     /* truly old */
        for (int i = 0; i < 5; i++)
                append(&f, "u2", 0, false, t - 10 * DAY_MS + i, 20 + i, READING_FLAG_UNSYNCED);
        for (int i = 0; i < 5; i++)
                append(&f, "old2", 0, false, t - 2 * DAY_MS + i, 0, 0);
        for (int i = 0; i < 5; i++)
                append(&f, "new", 0, false, t + i, 0, 0);
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_int_eq(store_run_retention(f.store), 10);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings_view WHERE sensor IN ('u1', 'u2')"), 10);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings_view WHERE sensor IN ('old', 'old2')"), 0);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings_view WHERE sensor = 'new'"), 5);
        /* Again: no reading goes (the names no row uses may). */
        ck_assert_int_ge(store_run_retention(f.store), 0);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings"), 15);
        fx_stop(&f);
}
END_TEST

/* Once corrected, kept rows are ordinary rows again: when they turn out old, the next delete of
 * older rows after them takes them too (age retention's next delete had started after them). */
START_TEST(test_store_retention_after_correction) {
        struct timespec now;
        uint64_t n;
        int64_t t;
        Fixture f;

        clock_gettime(CLOCK_REALTIME, &now);
        t = (int64_t) now.tv_sec * 1000;
        fx_init(&f, NULL);
        f.config.retention_days = 1;
        fx_start(&f);
        ck_assert_int_eq(store_clock_set_boot(f.store, BOOT_A), 0);
        for (int i = 0; i < 5; i++)
                append(&f, "u", 0, false, 1000 + i, 10 + i, READING_FLAG_UNSYNCED);
        for (int i = 0; i < 5; i++)
                append(&f, "old", 0, false, t - 5 * DAY_MS + i, 0, 0);
        for (int i = 0; i < 5; i++)
                append(&f, "u2", 0, false, 2000 + i, 20 + i, READING_FLAG_UNSYNCED);
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_int_ge(store_run_retention(f.store), 5);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings"), 10);

        /* Their true times: four days ago. */
        ck_assert_int_eq(store_clock_correct(f.store, t - 4 * DAY_MS, 1000, &n), 0);
        ck_assert_uint_eq(n, 10);
        for (int i = 0; i < 5; i++)
                append(&f, "old2", 0, false, t - 3 * DAY_MS + i, 0, 0);
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_int_ge(store_run_retention(f.store), 15);
        fx_stop(&f);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings"), 0);
}
END_TEST

/* Runs retention steps until none has more to do right away; returns what they removed. */
static int64_t retention_until_done(Fixture *f) {
        int64_t total = 0;
        int steps = 0, r;

        do {
                r = store_run_retention(f->store);
                ck_assert_int_ge(r, 0);
                total += r;
                ck_assert_int_lt(++steps, 1000);
        } while (store_retention_pending(f->store));
        return total;
}

/* Starts the store in dir with retention_days 1 as boot `boot`, with a clock event `kind` (its
 * detail: the boot's letter) at at_ms, committed. */
static void start_boot(Fixture *f, const char *dir, const char *boot, const char *kind, int64_t at_ms,
                       const char *detail) {
        fx_init(f, dir);
        f->config.retention_days = 1;
        fx_start(f);
        ck_assert_int_ge(store_clock_set_boot(f->store, boot), 0);
        ck_assert_int_eq(store_clock_event(f->store, kind, at_ms, 0, 0, detail), 0);
        ck_assert_int_eq(store_commit(f->store), 0);
}

/* The clock's records go with the readings they explain, judged by reading ids, never by their
 * times (boot C's clock said 2099): boot A's events and row once its readings are gone, and the
 * row of boot E, which has no event and no reading (older than the oldest event's boot); boot B
 * ended before its clock was trusted, so age retention keeps its readings and with them its
 * event and row, without holding back boot C's; of boot C, the event whose readings are gone,
 * not the one of today's readings; the current boot D, whose readings are being corrected,
 * keeps its row and where its correction stands, and the correction goes on. */
START_TEST(test_store_retention_clock_records) {
        const char *dir = tl_tmpdir();
        const int64_t y2000 = 946684800000, y2099 = 4070908800000;
        int64_t t = wall_clock_ms(), upto, removed;
        uint64_t n, total;
        Fixture f;

        start_boot(&f, dir, BOOT_A, "trusted", t - 7 * DAY_MS, "A");
        for (int i = 0; i < 5; i++)
                append(&f, "a", 0, false, t - 7 * DAY_MS + i, 0, 0);
        ck_assert_int_eq(store_clock_event(f.store, "step", t - 7 * DAY_MS + 10, 1000, -1, "A"), 0);
        for (int i = 0; i < 5; i++)
                append(&f, "a", 0, false, t - 7 * DAY_MS + 20 + i, 0, 0);
        fx_stop(&f);

        /* A boot with no event: the daemon stopped before its first commit. */
        fx_init(&f, dir);
        fx_start(&f);
        ck_assert_int_eq(store_clock_set_boot(f.store, BOOT_E), 0);
        fx_stop(&f);

        start_boot(&f, dir, BOOT_B, "untrusted", y2000, "B");
        for (int i = 0; i < 5; i++)
                append(&f, "b", 0, false, y2000 + i, 10 + i, READING_FLAG_UNSYNCED);
        fx_stop(&f);

        start_boot(&f, dir, BOOT_C, "trusted", y2099, "C");
        for (int i = 0; i < 5; i++)
                append(&f, "c-old", 0, false, t - 3 * DAY_MS + i, 0, 0);
        ck_assert_int_eq(store_clock_event(f.store, "step", y2099 + 1, 1000, -1, "C"), 0);
        for (int i = 0; i < 5; i++)
                append(&f, "c-new", 0, false, t + i, 0, 0);
        fx_stop(&f);

        start_boot(&f, dir, BOOT_D, "untrusted", y2000, "D");
        for (int i = 0; i < 5; i++)
                append(&f, "d", 0, false, 1000 + i, 100 + i, READING_FLAG_UNSYNCED);
        ck_assert_int_eq(store_clock_correct(f.store, t - 1000, 2, &n), 1);
        ck_assert_uint_eq(n, 2);
        upto = q(&f, "SELECT corrected_upto FROM boots WHERE boot_id = '" BOOT_D "'");
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM clock_events WHERE seq IS NULL"), 0);
        /* Each event stands after the readings stored before it. */
        ck_assert_int_eq(q(&f, "SELECT seq FROM clock_events WHERE detail = 'C' AND kind = 'step'"),
                         q(&f, "SELECT max(id) FROM readings_view WHERE sensor = 'c-old'"));

        /* The line that ends the sweep says what went (the log goes to stderr here). */
        {
                char log[600], *text = NULL;
                size_t size = 0;
                FILE *file;
                int saved = dup(STDERR_FILENO);

                snprintf(log, sizeof(log), "%s/log", dir);
                ck_assert_ptr_nonnull(freopen(log, "w", stderr));
                removed = retention_until_done(&f);
                fflush(stderr);
                ck_assert_int_ge(dup2(saved, STDERR_FILENO), 0);
                close(saved);
                ck_assert_ptr_nonnull(file = fopen(log, "r"));
                ck_assert_int_gt(getdelim(&text, &size, '\0', file), 0);
                fclose(file);
                ck_assert_msg(strstr(text, "Retention removed 15 readings and 0 rejects (older than 1 days), 3 clock events "
                                           "and 2 boots no reading left needs"),
                              "%s", text);
                free(text);
        }
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM readings_view WHERE sensor IN ('a', 'c-old')"), 0);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM readings_view WHERE sensor IN ('b', 'c-new', 'd')"), 15);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM clock_events WHERE detail = 'A'"), 0);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM boots WHERE boot_id IN ('" BOOT_A "', '" BOOT_E "')"), 0);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM clock_events WHERE detail = 'B'"), 1);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM boots WHERE boot_id = '" BOOT_B "' AND first_unsynced > 0"), 1);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM clock_events WHERE detail = 'C' AND kind = 'trusted'"), 0);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM clock_events WHERE detail = 'C' AND kind = 'step'"), 1);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM boots WHERE boot_id = '" BOOT_C "'"), 1);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM clock_events WHERE detail = 'D'"), 1);
        ck_assert_int_eq(q(&f, "SELECT corrected_upto FROM boots WHERE boot_id = '" BOOT_D "'"), upto);
        /* 15 readings, 3 clock events, 2 boots (and names no row uses any more). */
        ck_assert_int_ge(removed, 20);
        /* Again: nothing more goes. */
        ck_assert_int_ge(retention_until_done(&f), 0);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM clock_events"), 3);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM boots"), 3);
        /* The correction of this boot goes on where it stood. */
        ck_assert_int_eq(correct_all(&f, t - 1000, 1000, &total), 1);
        ck_assert_uint_eq(total, 3);
        fx_stop(&f);
        tl_assert_integrity(f.path, false);
}
END_TEST

/* A gateway that rebooted daily for 120 days, one of the boots ending before its clock was
 * trusted: more events than one step reads (CLOCK_RETENTION_ROWS, 64), so the walk goes on in
 * the next steps, past the boot age retention keeps, until only that boot's records and the
 * current boot's are left. */
START_TEST(test_store_retention_clock_records_of_many_boots) {
        const char *dir = tl_tmpdir();
        int64_t t = wall_clock_ms();
        char boot[33];
        Fixture f;

        for (int b = 0; b < 120; b++) {
                int64_t day = t - (130 - b) * DAY_MS;

                snprintf(boot, sizeof(boot), "%032x", b + 1);
                start_boot(&f, dir, boot, b == 50 ? "untrusted" : "trusted", day, b == 50 ? "kept" : "daily");
                for (int i = 0; i < 2; i++)
                        append(&f, "s", 0, false, day + i, 10 + i, b == 50 ? READING_FLAG_UNSYNCED : 0);
                fx_stop(&f);
        }
        start_boot(&f, dir, BOOT_A, "trusted", t, "now");
        for (int i = 0; i < 5; i++)
                append(&f, "s", 0, false, t + i, 0, 0);
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM clock_events"), 121);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM boots"), 121);

        ck_assert_int_ge(retention_until_done(&f), 238 + 119 + 119);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM readings"), 2 + 5);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM clock_events WHERE detail = 'daily'"), 0);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM clock_events"), 2);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM boots WHERE id IN (SELECT boot FROM clock_events)"), 2);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM boots"), 2);
        fx_stop(&f);
}
END_TEST

/* A gateway whose clock is never trusted (timesyncd waits for a network it never gets): age
 * retention keeps every reading, so every boot's records stay; a step that walks them and removes
 * nothing does not ask for another at once. */
START_TEST(test_store_retention_clock_records_never_trusted) {
        const char *dir = tl_tmpdir();
        char boot[33];
        Fixture f;
        int steps = 0;

        for (int b = 0; b < 100; b++) {
                snprintf(boot, sizeof(boot), "%032x", b + 1);
                start_boot(&f, dir, boot, "untrusted", 946684800000, "never");
                append(&f, "s", 0, false, 946684800000 + b, 10, READING_FLAG_UNSYNCED);
                fx_stop(&f);
        }
        start_boot(&f, dir, BOOT_A, "untrusted", 946684800000, "now");
        for (int i = 0; i < 3; i++) {
                do {
                        ck_assert_int_ge(store_run_retention(f.store), 0);
                        steps++;
                } while (store_retention_pending(f.store));
        }
        ck_assert_int_eq(steps, 3);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM readings"), 100);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM clock_events"), 101);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM boots"), 101);
        fx_stop(&f);
}
END_TEST

static void sql_exec(const char *path, const char *sql) {
        sqlite3 *db = NULL;

        ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
        ck_assert_msg(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(db));
        sqlite3_close(db);
}

/* A store the version before clock_events.seq wrote (made by this one, the column dropped and
 * the version set back: that column is the last migration's), migrated: every clock event and
 * boot stays, the old events without a seq. They stay while a reading stored before the first
 * event that has one is left, and go (with the boots no event refers to) once none is. */
START_TEST(test_migration_keeps_clock_records) {
        const char *dir = tl_tmpdir();
        char sql[160];
        int64_t t = wall_clock_ms();
        Fixture f;

        start_boot(&f, dir, BOOT_A, "untrusted", t - 3 * DAY_MS, "A");
        ck_assert_int_eq(store_clock_event(f.store, "trusted", t - 3 * DAY_MS + 1, 0, 0, "A"), 0);
        for (int i = 0; i < 5; i++)
                append(&f, "a", 0, false, t - 3 * DAY_MS + 10 + i, 0, 0);
        fx_stop(&f);
        start_boot(&f, dir, BOOT_B, "trusted", t, "B");
        for (int i = 0; i < 5; i++)
                append(&f, "b", 0, false, t + i, 0, 0);
        fx_stop(&f);
        snprintf(sql, sizeof(sql), "ALTER TABLE clock_events DROP COLUMN seq; PRAGMA user_version = %d",
                 STORE_SCHEMA_VERSION - 1);
        sql_exec(f.path, sql);

        /* Boot B goes on after the upgrade. */
        start_boot(&f, dir, BOOT_B, "trusted", t + 10, "B2");
        ck_assert_int_eq(q(&f, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM clock_events WHERE detail IN ('A', 'B') AND seq IS NULL"), 3);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM clock_events WHERE detail = 'B2' AND seq = 10"), 1);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM boots"), 2);
        /* Boot A's readings go, boot B's stay: so does every event from before. */
        ck_assert_int_ge(retention_until_done(&f), 5);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM readings"), 5);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM clock_events"), 4);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM boots"), 2);
        fx_stop(&f);

        /* Two days later (the readings' receipt times moved back instead): boot B's from before
         * the upgrade go too, and with them the events from before and boot A's row. */
        sql_exec(f.path, "UPDATE readings SET received = received - 2 * 86400000");
        start_boot(&f, dir, BOOT_B, "trusted", t + 20, "B3");
        ck_assert_int_ge(retention_until_done(&f), 5 + 3 + 1);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM readings"), 0);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM clock_events WHERE seq IS NULL"), 0);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM boots WHERE boot_id = '" BOOT_A "'"), 0);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM boots WHERE boot_id = '" BOOT_B "'"), 1);
        ck_assert_int_ge(q(&f, "SELECT count(*) FROM clock_events WHERE detail = 'B3'"), 1);
        fx_stop(&f);
        tl_assert_integrity(f.path, false);
}
END_TEST

/* Opens the old store in f (which migrates it), appends one unsynced reading "new" of boot A,
 * closes it, and checks that it is at the current schema version. */
static void migrate_and_append_new(Fixture *f) {
        fx_start(f);
        ck_assert_int_eq(store_clock_set_boot(f->store, BOOT_A), 0);
        append(f, "new", 0, false, 5000, 42, READING_FLAG_UNSYNCED);
        fx_stop(f);
        ck_assert_int_eq(tl_sql_int(f->path, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
}

/* The v2 schema as the previous version of this program wrote it. */
static const char schema_v2[] =
        "PRAGMA user_version = 2;"
        "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value) WITHOUT ROWID;"
        "INSERT INTO meta VALUES ('schema_version', 2), ('created', 1700000000000);"
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
        "CREATE INDEX readings_ts ON readings (ts);"
        "CREATE VIEW readings_view AS"
        "  SELECT r.id, s.name AS sensor, m.name AS metric, r.value, r.ts,"
        "         r.sensor_ts IS NOT NULL AS sensor_ts, r.received, src.name AS source, o.name AS origin"
        "  FROM readings r JOIN sensors s ON s.id = r.sensor_id JOIN metrics m ON m.id = r.metric_id"
        "  JOIN sources src ON src.id = r.source_id JOIN origins o ON o.id = r.origin_id;"
        "CREATE VIEW rejects_view AS"
        "  SELECT j.id, j.received, src.name AS source, o.name AS origin, j.reason, j.raw"
        "  FROM rejects j JOIN sources src ON src.id = j.source_id JOIN origins o ON o.id = j.origin_id;"
        "INSERT INTO sensors VALUES (1, 'old-sensor'); INSERT INTO metrics VALUES (1, 'temp');"
        "INSERT INTO origins VALUES (1, '/dev/ttyUSB0');"
        "INSERT INTO readings VALUES (1, 1, 1, 1700000000000, NULL, 19.5, 1700000000000, 0, 1);";

START_TEST(test_migration_from_v2) {
        sqlite3 *db = NULL;
        char sql[128];
        Fixture f;

        fx_init(&f, NULL);
        ck_assert_int_eq(sqlite3_open(f.path, &db), SQLITE_OK);
        snprintf(sql, sizeof(sql), "PRAGMA application_id = %d;", STORE_APPLICATION_ID);
        ck_assert_int_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_exec(db, schema_v2, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);

        migrate_and_append_new(&f);
        /* The old reading: known good as far as anyone can tell, nothing to correct. */
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT flags FROM readings WHERE id = 1"), 0);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT boottime IS NULL FROM readings WHERE id = 1"), 1);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT unsynced + corrected + suspect_ts FROM readings_view WHERE id = 1"), 0);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT boottime FROM readings WHERE id = 2"), 42);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT unsynced FROM readings_view WHERE id = 2"), 1);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT first_unsynced FROM boots"), 2);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM clock_events"), 0);
}
END_TEST

/* ---- the clock task and ingest together ---- */

static Frame one_metric(const char *sensor, bool has_ts, int64_t ts) {
        Frame fr = { .has_ts = has_ts, .ts_ms = ts, .n_metrics = 1 };

        snprintf(fr.sensor, sizeof(fr.sensor), "%s", sensor);
        snprintf(fr.metrics[0].name, sizeof(fr.metrics[0].name), "temp");
        fr.metrics[0].value = 1;
        return fr;
}

/* Ingest flags what it stores as the clock task judged; the clock task sees the test's own
 * "timesyncd directory". Unsynced: CLOCK_BOOTTIME is kept, the sensor's time is not judged;
 * once timesyncd's file appears (an inotify event on the loop), the readings are corrected and
 * new ones are judged against the clock. */
START_TEST(test_ingest_flags) {
        const char *dir = tl_tmpdir();
        char timesync[512], env[600];
        ClockConfig cc = { .trust = CLOCK_TRUST_AUTO, .sensor_ts_tolerance_usec = 3600 * USEC_PER_SEC };
        Task *clock_task;
        Clock *clock;
        Ingest *in;
        Fixture f;
        Frame fr;
        int64_t now, t_receipt, boot, waited;

        snprintf(timesync, sizeof(timesync), "%s/timesync", dir);
        ck_assert_int_eq(mkdir(timesync, 0755), 0);
        snprintf(env, sizeof(env), "%s=%s", CLOCK_TIMESYNC_DIR_ENV, timesync);
        ck_assert_int_eq(putenv(env), 0);
        ck_assert_int_eq(setenv(CLOCK_BOOT_ID_ENV, BOOT_A, 1), 0);

        fx_init(&f, dir);
        fx_start(&f);
        ck_assert_int_eq(clock_task_new(f.event, &cc, f.store, &clock_task, &clock), 0);
        (void) task_start(clock_task);
        ck_assert_int_eq(task_get_state(clock_task), TASK_RUNNING);
        ck_assert(!clock_is_trusted(clock));
        ck_assert_int_eq(clock_sensor_tolerance_ms(clock), 3600000);
        ck_assert_int_eq(ingest_new(f.event, f.store, clock, &tl_serial_ingest_input, &in), 0);

        now = t_receipt = wall_clock_ms();
        boot = (int64_t) (clock_now_usec(CLOCK_BOOTTIME) / USEC_PER_MSEC);
        fr = one_metric("r", false, 0);
        ck_assert_int_eq(ingest_frame(in, &fr, "/dev/x", now), 0);
        fr = one_metric("s", true, 0); /* 1970, but nothing to judge it against yet */
        ck_assert_int_eq(ingest_frame(in, &fr, "/dev/x", now), 0);
        ck_assert_uint_eq(ingest_get_counters(in)->unsynced, 2);
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM readings WHERE flags = 1"), 2);
        ck_assert_int_ge(q(&f, "SELECT min(boottime) FROM readings"), boot - 1000);
        ck_assert_uint_eq(store_clock_waiting(f.store), 2);

        /* timesyncd synchronises: the loop hears it and corrects. */
        tl_write_file(timesync, "synchronized", "");
        waited = tl_now_ms();
        while (store_clock_waiting(f.store) > 0 || q(&f, "SELECT count(*) FROM readings WHERE flags = 3") < 2) {
                ck_assert_int_lt(tl_now_ms() - waited, 10000);
                ck_assert_int_ge(sd_event_run(f.event, 100 * 1000), 0);
        }
        ck_assert(clock_is_trusted(clock));
        /* The real clock was right all along: the corrected time is the receipt time, give or
         * take the loop's cached time and rounding. */
        {
                char sql[160];

                snprintf(sql, sizeof(sql), "SELECT max(abs(received - %" PRId64 ")) FROM readings", t_receipt);
                ck_assert_int_le(q(&f, sql), 1000);
        }
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM clock_events WHERE kind = 'trusted' AND readings = 2"), 1);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM clock_events WHERE kind = 'untrusted'"), 1);

        /* Trusted: a sensor two hours off is suspect, one ten minutes off is not. */
        now = wall_clock_ms();
        fr = one_metric("far", true, now - 2 * 3600000);
        ck_assert_int_eq(ingest_frame(in, &fr, "/dev/x", now), 0);
        fr = one_metric("near", true, now - 600000);
        ck_assert_int_eq(ingest_frame(in, &fr, "/dev/x", now), 0);
        fr = one_metric("plain", false, 0);
        ck_assert_int_eq(ingest_frame(in, &fr, "/dev/x", now), 0);
        ck_assert_uint_eq(ingest_get_counters(in)->suspect_ts, 1);
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_int_eq(q(&f, "SELECT flags FROM readings_view JOIN readings USING (id) WHERE sensor = 'far'"), 4);
        ck_assert_int_eq(q(&f, "SELECT flags FROM readings_view JOIN readings USING (id) WHERE sensor = 'near'"), 0);
        ck_assert_int_eq(q(&f, "SELECT count(*) FROM readings WHERE boottime IS NOT NULL AND flags & 1 = 0"), 0);

        in = ingest_free(in);
        (void) task_stop(clock_task);
        task_free(clock_task);
        fx_stop(&f);
}
END_TEST

/* A store the previous version of the daemon made (tests/data/store-v2.db: schema v2, two
 * readings and a reject from MQTT, written by sensor-collector at b3093ee), migrated. */
START_TEST(test_migration_of_a_v2_store) {
        char cmd[1200];
        Fixture f;

        fx_init(&f, NULL);
        snprintf(cmd, sizeof(cmd), "cp '%s/tests/data/store-v2.db' '%s'", SC_SOURCE_DIR, f.path);
        ck_assert_int_eq(system(cmd), 0);
        ck_assert_int_eq(tl_sql_int(f.path, "PRAGMA user_version"), 2);
        migrate_and_append_new(&f);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings_view WHERE sensor = 'gh1-t1'"), 2);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings_view WHERE sensor = 'gh1-t1' AND NOT unsynced AND NOT corrected AND NOT suspect_ts"), 2);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT ts FROM readings_view WHERE metric = 'humidity'"), 1764000000000);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM rejects_view"), 1);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT unsynced FROM readings_view WHERE sensor = 'new'"), 1);
        /* Every later step of the way too: the events table (v4: the start after the old
         * daemon's records is a daemon_down window), the store id and the
         * high-water mark of sequence numbers (v5), and the version itself. */
        ck_assert_int_eq(tl_sql_int(f.path, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM events WHERE kind = 'daemon_down'"), 1);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT length(value) FROM meta WHERE key = 'store_id'"), 32);
        ck_assert_int_ge(tl_sql_int(f.path, "SELECT count(*) FROM meta WHERE key = 'readings_high_water'"), 1);
        /* The index on ts gave way to the time summary, which covers the old rows and the new. */
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM sqlite_schema WHERE name = 'readings_ts'"), 0);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings r JOIN readings_blocks b ON b.block = r.id >> 10"
                                            " WHERE r.ts BETWEEN b.min_ts AND b.max_ts"),
                         tl_sql_int(f.path, "SELECT count(*) FROM readings"));
        tl_assert_integrity(f.path, false);
}
END_TEST

static Suite *clock_suite(void) {
        Suite *s = suite_create("clock");
        TCase *tc = tcase_create("rules");
        TCase *st = tcase_create("store");

        tcase_add_loop_test(tc, test_judge, 0, ELEMENTSOF(judge_cases));
        tcase_add_loop_test(tc, test_reading_flags, 0, ELEMENTSOF(flag_cases));
        tcase_add_loop_test(tc, test_corrected_ms, 0, ELEMENTSOF(correct_cases));
        tcase_add_loop_test(tc, test_is_step, 0, ELEMENTSOF(step_cases));
        tcase_add_test(tc, test_config);
        suite_add_tcase(s, tc);

        tcase_set_timeout(st, 30);
        tcase_add_test(st, test_store_correction);
        tcase_add_test(st, test_store_earlier_boot_stays_unsynced);
        tcase_add_test(st, test_store_retention_keeps_unsynced);
        tcase_add_test(st, test_store_retention_after_correction);
        tcase_add_test(st, test_store_retention_clock_records);
        tcase_add_test(st, test_store_retention_clock_records_of_many_boots);
        tcase_add_test(st, test_store_retention_clock_records_never_trusted);
        tcase_add_test(st, test_migration_keeps_clock_records);
        tcase_add_test(st, test_migration_from_v2);
        tcase_add_test(st, test_migration_of_a_v2_store);
        tcase_add_test(st, test_ingest_flags);
        suite_add_tcase(s, st);
        return s;
}

int main(void) {
        return tl_run_suite(clock_suite());
}
