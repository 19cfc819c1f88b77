/* SPDX-License-Identifier: MIT */
/* Unit tests for ingest on a real SQLite store: the timestamp rule, rejects with their raw bytes,
 * counters, the one receipt clock, and no more rows once the store refused one. */
#include <check.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "collector/ingest.h"
#include "collector/store.h"
#include "collector/time-util.h"
#include "testlib.h"

typedef struct Fixture {
        sd_event *event;
        StoreConfig config;
        char path[512];
        Task *task;
        Store *store;
        Ingest *ingest;
} Fixture;

/* A store with store.max_names at max_names (0: no cap), at path (NULL: a new one). */
static void fx_init_names(Fixture *f, unsigned max_names, const char *path) {
        char p[512];

        if (path)
                snprintf(p, sizeof(p), "%s", path);
        else
                snprintf(p, sizeof(p), "%s/readings.db", tl_tmpdir());
        memset(f, 0, sizeof(*f));
        ck_assert_int_ge(sd_event_new(&f->event), 0);
        snprintf(f->path, sizeof(f->path), "%s", p);
        f->config = (StoreConfig){
                .path = f->path,
                .synchronous = STORE_SYNCHRONOUS_NORMAL,
                .commit_interval_ms = 10000,
                .commit_max_rows = 100000,
                .max_names = max_names,
        };
        tl_store_task_start(f->event, &f->config, &f->task, &f->store);
        ck_assert_int_eq(task_get_state(f->task), TASK_RUNNING);
        ck_assert_int_eq(ingest_new(f->event, f->store, NULL, &tl_serial_ingest_input, &f->ingest), 0);
}

static void fx_init(Fixture *f) {
        fx_init_names(f, 0, NULL);
}

static void fx_done(Fixture *f) {
        f->ingest = ingest_free(f->ingest);
        f->task = tl_task_stop_free(f->task);
        f->event = sd_event_unref(f->event);
}

static Frame frame_of(const char *sensor, bool has_ts, int64_t ts, double t, double h) {
        Frame fr = { .has_ts = has_ts, .ts_ms = ts, .n_metrics = 2 };

        snprintf(fr.sensor, sizeof(fr.sensor), "%s", sensor);
        snprintf(fr.metrics[0].name, sizeof(fr.metrics[0].name), "temperature");
        fr.metrics[0].value = t;
        snprintf(fr.metrics[1].name, sizeof(fr.metrics[1].name), "humidity");
        fr.metrics[1].value = h;
        return fr;
}

/* A frame's time is the sensor's own when it sends one, else the time of receipt; both are kept
 * with the source and origin; the counters say what was stored. */
START_TEST(test_frames) {
        Fixture f;
        Frame with_ts = frame_of("gh1-t1", true, 1732200000123, 21.5, 60);
        Frame without_ts = frame_of("gh1-t2", false, 0, 19.25, 55);
        const IngestCounters *n;

        fx_init(&f);
        ck_assert(ingest_accepting(f.ingest));
        ck_assert_int_eq(ingest_frame(f.ingest, &with_ts, "/dev/ttyUSB0", 1732200001000), 0);
        ck_assert_int_eq(ingest_frame(f.ingest, &without_ts, "/dev/ttyUSB0", 1732200002000), 0);
        n = ingest_get_counters(f.ingest);
        ck_assert_uint_eq(n->frames, 2);
        ck_assert_uint_eq(n->readings, 4);
        ck_assert_uint_eq(n->rejects, 0);
        ck_assert_int_eq(store_commit(f.store), 0);

        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings_view WHERE sensor='gh1-t1' AND "
                                            "ts=1732200000123 AND sensor_ts=1 AND received=1732200001000 AND "
                                            "source='serial' AND origin='/dev/ttyUSB0'"),
                         2);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings_view WHERE sensor='gh1-t2' AND "
                                            "ts=1732200002000 AND sensor_ts=0 AND received=1732200002000"),
                         2);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings_view WHERE metric='temperature' AND value=19.25"), 1);
        fx_done(&f);
}
END_TEST

/* A reject keeps the raw bytes as they came (here not UTF-8, with a NUL), at most raw_size of
 * them, with its reason and origin. */
START_TEST(test_rejects) {
        static const char raw[] = "{\"sensor\":\"x\xff\",\0tail";
        Fixture f;

        fx_init(&f);
        ck_assert_int_eq(ingest_reject(f.ingest, &(IngestReject){ .origin = "/dev/ttyUSB0",
                                                                   .raw = raw,
                                                                   .raw_size = sizeof(raw) - 1,
                                                                   .reason = FRAME_REJECT_NOT_UTF8,
                                                                   .received_ms = 1732200003000 }),
                         0);
        /* An input that keeps only part of a long payload says how long it was. */
        ck_assert_int_eq(ingest_reject(f.ingest, &(IngestReject){ .origin = "gh/m1/state",
                                                                   .raw = "0123456789",
                                                                   .raw_size = 4,
                                                                   .size = 10,
                                                                   .reason = FRAME_REJECT_TOO_LONG,
                                                                   .sensor = "m1",
                                                                   .received_ms = 1732200004000 }),
                         0);
        ck_assert_uint_eq(ingest_get_counters(f.ingest)->rejects, 2);
        ck_assert_uint_eq(ingest_get_counters(f.ingest)->frames, 0);
        ck_assert_int_eq(store_commit(f.store), 0);

        ck_assert_int_eq(tl_sql_int(f.path, "SELECT length(raw) FROM rejects_view WHERE reason='not_utf8' AND "
                                            "origin='/dev/ttyUSB0' AND received=1732200003000"),
                         (int64_t) sizeof(raw) - 1);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM rejects_view WHERE reason='too_long' AND "
                                            "raw=CAST('0123' AS BLOB)"),
                         1);
        fx_done(&f);
}
END_TEST

/* One receipt clock: the loop's wall clock of this iteration, the same for every call in it. */
START_TEST(test_receipt_clock) {
        Fixture f;
        int64_t before = (int64_t) (clock_now_usec(CLOCK_REALTIME) / USEC_PER_MSEC), a, b, after;

        fx_init(&f);
        ck_assert_int_ge(sd_event_run(f.event, 0), 0); /* an iteration: the loop takes its time */
        a = ingest_receipt_ms(f.ingest);
        tl_sleep_ms(5);
        b = ingest_receipt_ms(f.ingest);
        after = (int64_t) (clock_now_usec(CLOCK_REALTIME) / USEC_PER_MSEC);
        ck_assert_int_eq(a, b);
        ck_assert_int_ge(a, before);
        ck_assert_int_le(a, after);
        fx_done(&f);
}
END_TEST

/* Once the store refused a row (here a value no parser would let through), ingest accepts
 * nothing more: the input stops reading, and nothing is written behind the failure's back. */
START_TEST(test_store_refused) {
        Fixture f;
        Frame good = frame_of("s1", true, 1732200000000, 1, 2);
        Frame bad = frame_of("s1", true, 1732200000001, NAN, 2);

        fx_init(&f);
        ck_assert_int_eq(ingest_frame(f.ingest, &good, "/dev/x", 1732200000500), 0);
        ck_assert_int_eq(ingest_frame(f.ingest, &bad, "/dev/x", 1732200000500), -EINVAL);
        ck_assert(!ingest_accepting(f.ingest));
        ck_assert_int_eq(task_get_state(f.task), TASK_FAILED);
        ck_assert_int_eq(ingest_frame(f.ingest, &good, "/dev/x", 1732200000600), -ESHUTDOWN);
        ck_assert_int_eq(ingest_reject(f.ingest, &(IngestReject){ .origin = "/dev/x", .raw = "x", .raw_size = 1 }),
                         -ESHUTDOWN);
        ck_assert_uint_eq(ingest_get_counters(f.ingest)->frames, 1);
        ck_assert_uint_eq(ingest_get_counters(f.ingest)->readings, 2);
        ck_assert_uint_eq(ingest_get_counters(f.ingest)->rejects, 0);
        fx_done(&f);
}
END_TEST

/* What an input does with a frame: ingest it, and store its raw bytes as a reject when ingest
 * says the names do not fit. Returns what ingest_frame() said. */
static int feed(Fixture *f, const Frame *fr, const char *origin, int64_t received_ms) {
        static const char raw[] = "{\"sensor\":\"raw bytes of the frame\"}";
        int r = ingest_frame(f->ingest, fr, origin, received_ms);

        if (r == INGEST_TOO_MANY_NAMES)
                ck_assert_int_eq(ingest_reject(f->ingest, &(IngestReject){ .origin = origin,
                                                                            .raw = raw,
                                                                            .raw_size = sizeof(raw) - 1,
                                                                            .reason = FRAME_REJECT_TOO_MANY_NAMES,
                                                                            .sensor = fr->sensor,
                                                                            .received_ms = received_ms }),
                                 0);
        return r;
}

/* A node with a counter in its topic (a new origin per message, here with a new sensor id every
 * other message too) cannot grow the name tables past store.max_names, while a known sensor
 * keeps being stored: frames that would add a name become too_many_names rejects with their raw
 * bytes, and a reject from a new origin is kept under "(too many names)". */
START_TEST(test_name_cap_counter_topic) {
        const int64_t t0 = 1732200000000;
        unsigned refused = 0, stored = 0;
        Fixture f;

        fx_init_names(&f, 20, NULL);
        for (int i = 0; i < 500; i++) {
                Frame known = frame_of("gh1-t1", true, t0 + i, 20, 50);
                Frame node = frame_of(i % 2 ? "node" : "node-x", true, t0 + i, 1, 2);
                char topic[64], sensor[32];
                int r;

                ck_assert_int_eq(feed(&f, &known, "greenhouse/gh1-t1/state", t0 + i), 0);
                snprintf(topic, sizeof(topic), "greenhouse/node/%d/state", i);
                if (i % 2 == 0) {
                        snprintf(sensor, sizeof(sensor), "node-%d", i);
                        snprintf(node.sensor, sizeof(node.sensor), "%s", sensor);
                }
                r = feed(&f, &node, topic, t0 + i);
                ck_assert_msg(r == 0 || r == INGEST_TOO_MANY_NAMES, "r = %d", r);
                r == 0 ? stored++ : refused++;
                if (i % 97 == 0) /* across batches too */
                        ck_assert_int_eq(store_commit(f.store), 0);
        }
        /* Garbage on yet another new topic: kept, under the placeholder origin; on a known
         * topic, under its own. */
        ck_assert_int_eq(ingest_reject(f.ingest, &(IngestReject){ .origin = "greenhouse/node/new/state", .raw = "x",
                                                                   .raw_size = 1, .reason = FRAME_REJECT_BAD_JSON }),
                         0);
        ck_assert_int_eq(ingest_reject(f.ingest, &(IngestReject){ .origin = "greenhouse/gh1-t1/state", .raw = "y",
                                                                   .raw_size = 1, .reason = FRAME_REJECT_BAD_JSON }),
                         0);
        ck_assert_int_eq(store_commit(f.store), 0);

        /* 20 origins: the known one and the first 19 topics of the node; then the placeholder. */
        ck_assert_uint_eq(stored, 19);
        ck_assert_uint_eq(refused, 500 - 19);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM origins"), 21);
        ck_assert_int_le(tl_sql_int(f.path, "SELECT count(*) FROM sensors"), 20);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM metrics"), 2);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings_view WHERE sensor = 'gh1-t1'"), 1000);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM rejects_view WHERE reason = 'too_many_names' AND "
                                            "origin = '(too many names)' AND CAST(raw AS TEXT) LIKE '{\"sensor\":%'"),
                         500 - 19);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM rejects_view WHERE reason = 'bad_json' AND "
                                            "origin = '(too many names)' AND CAST(raw AS TEXT) = 'x'"),
                         1);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM rejects_view WHERE reason = 'bad_json' AND "
                                            "origin = 'greenhouse/gh1-t1/state' AND CAST(raw AS TEXT) = 'y'"),
                         1);
        ck_assert_uint_eq(ingest_get_counters(f.ingest)->rejects, 500 - 19 + 2);
        ck_assert(ingest_accepting(f.ingest));
        fx_done(&f);
}
END_TEST

/* A frame is stored whole or not at all: with room for one more metric name, a frame naming
 * two new ones stores none of its readings, and a frame naming one is stored. */
START_TEST(test_name_cap_all_or_nothing) {
        Fixture f;
        Frame two = frame_of("s1", true, 1732200000000, 1, 2);
        Frame one = frame_of("s1", true, 1732200000001, 1, 2);

        fx_init_names(&f, 3, NULL);
        snprintf(two.metrics[0].name, sizeof(two.metrics[0].name), "m1");
        snprintf(two.metrics[1].name, sizeof(two.metrics[1].name), "m2");
        ck_assert_int_eq(feed(&f, &two, "/dev/x", 1732200000500), 0);
        snprintf(two.metrics[0].name, sizeof(two.metrics[0].name), "m3");
        snprintf(two.metrics[1].name, sizeof(two.metrics[1].name), "m4");
        ck_assert_int_eq(feed(&f, &two, "/dev/x", 1732200000600), INGEST_TOO_MANY_NAMES);
        snprintf(one.metrics[0].name, sizeof(one.metrics[0].name), "m1");
        snprintf(one.metrics[1].name, sizeof(one.metrics[1].name), "m3");
        ck_assert_int_eq(feed(&f, &one, "/dev/x", 1732200000700), 0);
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings"), 4);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings_view WHERE metric IN ('m4')"), 0);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM metrics"), 3);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM rejects WHERE reason = 'too_many_names'"), 1);
        fx_done(&f);
}
END_TEST

/* The cap counts names in use: names no row uses any more (here left behind by rows deleted
 * while the daemon was stopped) make a table look full only until the pass over the names that
 * the first refusal asks for has removed them. */
START_TEST(test_name_cap_counts_live_names) {
        Fixture f;
        sqlite3 *db;
        int steps = 0;

        fx_init_names(&f, 10, NULL);
        for (int i = 0; i < 10; i++) {
                Frame fr = frame_of("s1", true, 1732200000000 + i, 1, 2);
                char topic[32];

                snprintf(topic, sizeof(topic), "t/%d", i);
                ck_assert_int_eq(feed(&f, &fr, topic, 1732200000500), 0);
        }
        fx_done(&f);
        ck_assert_int_eq(sqlite3_open(f.path, &db), SQLITE_OK);
        ck_assert_int_eq(sqlite3_exec(db, "DELETE FROM readings WHERE origin_id IN "
                                          "(SELECT id FROM origins WHERE name != 't/0')", NULL, NULL, NULL),
                         SQLITE_OK);
        sqlite3_close(db);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM origins"), 10);

        {
                char path[512];

                snprintf(path, sizeof(path), "%s", f.path);
                fx_init_names(&f, 10, path); /* the store from before, no retention configured */
        }
        {
                Frame fr = frame_of("s1", true, 1732200001000, 1, 2);

                ck_assert_int_eq(feed(&f, &fr, "t/new", 1732200001500), INGEST_TOO_MANY_NAMES);
                /* The pass the refusal asked for, in the bounded steps the task's timer runs. */
                do
                        ck_assert_int_ge(store_run_retention(f.store), 0);
                while (store_retention_pending(f.store) && ++steps < 100);
                ck_assert_int_lt(steps, 100);
                /* t/0 and the placeholder origin of the reject are in use */
                ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM origins"), 2);
                fr.ts_ms++;
                ck_assert_int_eq(feed(&f, &fr, "t/new", 1732200001600), 0);
        }
        ck_assert_int_eq(store_commit(f.store), 0);
        ck_assert_int_eq(tl_sql_int(f.path, "SELECT count(*) FROM readings_view WHERE origin = 't/new'"), 2);
        fx_done(&f);
}
END_TEST

static Suite *ingest_suite(void) {
        Suite *s = suite_create("ingest");
        TCase *tc = tcase_create("ingest");

        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_frames);
        tcase_add_test(tc, test_rejects);
        tcase_add_test(tc, test_receipt_clock);
        tcase_add_test(tc, test_store_refused);
        tcase_add_test(tc, test_name_cap_counter_topic);
        tcase_add_test(tc, test_name_cap_all_or_nothing);
        tcase_add_test(tc, test_name_cap_counts_live_names);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(ingest_suite());
}
