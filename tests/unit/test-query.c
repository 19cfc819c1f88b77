/* SPDX-License-Identifier: MIT */
/* Tests of `sensor-collector query`: filters, formats, time parsing and errors, on a real store file. */
#include <sqlite3.h>
#include <stdio.h>
#include <time.h>

#include "collector/query.h"
#include "collector/store.h"
#include "testlib.h"

/* 2025-11-21T10:00:00Z: old enough that "now"-relative rows never mix with it. */
#define BASE 1763719200000LL

static char db_path[512];
static int64_t now_ms;

static int64_t wall_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct Writer {
        sd_event *event;
        StoreConfig config;
        Task *task;
        Store *store;
} Writer;

static void writer_open(Writer *w, const char *path) {
        memset(w, 0, sizeof(*w));
        ck_assert_int_ge(sd_event_new(&w->event), 0);
        w->config = (StoreConfig){ .path = (char *) path, .commit_interval_ms = 10000, .commit_max_rows = 100000 };
        ck_assert_int_eq(store_task_new(w->event, &w->config, &w->task, &w->store), 0);
        ck_assert_int_eq(task_start(w->task), 0);
        ck_assert_int_eq(task_get_state(w->task), TASK_RUNNING);
}

static void writer_close(Writer *w) {
        ck_assert_int_eq(task_stop(w->task), 0);
        task_free(w->task);
        sd_event_unref(w->event);
}

static void add(Writer *w, const char *sensor, const char *metric, double value, int64_t ts, bool sensor_ts,
                ReadingSource source, const char *origin) {
        Reading r = {
                .sensor = sensor, .metric = metric, .value = value, .ts_ms = ts, .sensor_ts = sensor_ts,
                .received_ms = sensor_ts ? ts + 5 : ts, .source = source, .origin = origin,
        };
        ck_assert_int_eq(store_append(w->store, &r), 0);
}

static void add_reject(Writer *w, int64_t received, ReadingSource source, const char *origin, const void *raw,
                       size_t size, FrameReject reason) {
        Reject j = { .received_ms = received, .source = source, .origin = origin, .raw = raw, .raw_size = size,
                     .reason = reason };
        ck_assert_int_eq(store_append_reject(w->store, &j), 0);
}

static void add_event(Writer *w, StoreEventKind kind, int64_t ts, const char *sensor, const char *subject, int64_t start,
                      int64_t end, const char *detail) {
        StoreEvent ev = { .kind = kind, .ts_ms = ts, .sensor = sensor, .subject = subject, .start_ms = start,
                          .end_ms = end, .detail = detail };
        ck_assert_int_eq(store_append_event(w->store, &ev), 0);
}

/* The same store for every test: built once per test (each runs in its own process). */
static void setup(void) {
        static const char raw1[] = "{\"sensor\":\x01\xff,\n";
        Writer w;

        now_ms = wall_ms();
        snprintf(db_path, sizeof(db_path), "%s/readings.db", tl_tmpdir());
        writer_open(&w, db_path);
        add(&w, "gh1-t3", "temperature", 23.4, BASE, true, READING_SOURCE_SERIAL, "/dev/ttyUSB0");
        add(&w, "gh1-t3", "humidity", 61.2, BASE, true, READING_SOURCE_SERIAL, "/dev/ttyUSB0");
        add(&w, "gh2-co", "co2", 612, BASE + 30000, false, READING_SOURCE_MQTT, "greenhouse/gh2-co/co2");
        add(&w, "gh1-t3", "temperature", 23.5, BASE + 60000, true, READING_SOURCE_SERIAL, "/dev/ttyUSB0");
        add(&w, "gh2-co", "co2", 640.25, now_ms - 5 * 60 * 1000, false, READING_SOURCE_MQTT, "greenhouse/gh2-co/co2");
        add(&w, "gh3,\"x\"", "light", 1e-7, BASE + 90000, true, READING_SOURCE_MQTT, "greenhouse/a b");
        add_reject(&w, BASE + 1000, READING_SOURCE_SERIAL, "/dev/ttyUSB0", raw1, sizeof(raw1) - 1, FRAME_REJECT_BAD_JSON);
        add_reject(&w, now_ms - 2 * 60 * 1000, READING_SOURCE_MQTT, "greenhouse/x", "1e999", 5, FRAME_REJECT_NOT_FINITE);
        /* A gap of gh1-t3 during a serial outage (closed), and one of gh2-co that goes on. */
        add_event(&w, STORE_EVENT_INPUT_DOWN, BASE + 100000, NULL, "serial", BASE + 100000, 0, "port gone");
        add_event(&w, STORE_EVENT_INPUT_UP, BASE + 130000, NULL, "serial", BASE + 100000, BASE + 130000, "port gone");
        add_event(&w, STORE_EVENT_SENSOR_SILENT, BASE + 150000, "gh1-t3", NULL, BASE + 60000, 0, NULL);
        add_event(&w, STORE_EVENT_SENSOR_BACK, BASE + 200000, "gh1-t3", NULL, BASE + 60000, BASE + 200000, NULL);
        add_event(&w, STORE_EVENT_SENSOR_SILENT, now_ms - 60000, "gh2-co", NULL, now_ms - 5 * 60 * 1000, 0, NULL);
        writer_close(&w);
}

/* Runs the real binary: sensor-collector query --db DB args... with TZ set. */
static int run_query(const char *tz, const char *const *args, char **ret_output) {
        char tz_env[64];
        char *argv[32] = { SC_BINARY, "query" };
        char *env[] = { tz_env, NULL };
        size_t n = 2;

        snprintf(tz_env, sizeof(tz_env), "TZ=%s", tz ? tz : "UTC");
        for (size_t i = 0; args && args[i]; i++) {
                ck_assert_uint_lt(n, ELEMENTSOF(argv) - 1);
                argv[n++] = (char *) args[i];
        }
        argv[n] = NULL;
        return tl_run(argv, env, ret_output, 10000);
}

#define ARGS(...) ((const char *const[]){ __VA_ARGS__, NULL })

typedef struct Case {
        const char *name;
        const char *tz;
        const char *const *args;  /* after "--db DB" */
        int status;
        const char *output;       /* exact, or NULL */
        const char *contains;     /* substring, or NULL */
} Case;

#define T10 "2025-11-21T10:00:00.000Z"
#define T1030 "2025-11-21T10:00:30.000Z"
#define T1060 "2025-11-21T10:01:00.000Z"
#define T1090 "2025-11-21T10:01:30.000Z"
#define UNTIL "--until", "2025-11-22"

static const Case cases[] = {
        { "csv, everything before a day",
          NULL, ARGS("--format", "csv", UNTIL), 0,
          "ts,time,sensor,metric,value,sensor_ts,received,source,origin,flags\n"
          "1763719200000," T10 ",gh1-t3,temperature,23.4,true,1763719200005,serial,/dev/ttyUSB0,\n"
          "1763719200000," T10 ",gh1-t3,humidity,61.2,true,1763719200005,serial,/dev/ttyUSB0,\n"
          "1763719230000," T1030 ",gh2-co,co2,612,false,1763719230000,mqtt,greenhouse/gh2-co/co2,\n"
          "1763719260000," T1060 ",gh1-t3,temperature,23.5,true,1763719260005,serial,/dev/ttyUSB0,\n"
          "1763719290000," T1090 ",\"gh3,\"\"x\"\"\",light,1e-07,true,1763719290005,mqtt,greenhouse/a b,\n",
          NULL },
        { "json lines, one sensor and metric",
          NULL, ARGS("-o", "json", "--sensor", "gh1-t3", "--metric", "temperature"), 0,
          "{\"ts\":1763719200000,\"time\":\"" T10 "\",\"sensor\":\"gh1-t3\",\"metric\":\"temperature\",\"value\":23.4,"
          "\"sensor_ts\":true,\"received\":1763719200005,\"source\":\"serial\",\"origin\":\"/dev/ttyUSB0\",\"flags\":\"\"}\n"
          "{\"ts\":1763719260000,\"time\":\"" T1060 "\",\"sensor\":\"gh1-t3\",\"metric\":\"temperature\",\"value\":23.5,"
          "\"sensor_ts\":true,\"received\":1763719260005,\"source\":\"serial\",\"origin\":\"/dev/ttyUSB0\",\"flags\":\"\"}\n",
          NULL },
        { "json escapes quotes",
          NULL, ARGS("-o", "json", "-m", "light"), 0, NULL,
          "\"sensor\":\"gh3,\\\"x\\\"\",\"metric\":\"light\",\"value\":1e-07," },
        { "table, UTC, aligned, numbers to the right",
          NULL, ARGS("--sensor", "gh1-t3", "--utc"), 0,
          "TIME                      SENSOR  METRIC       VALUE  SOURCE  ORIGIN\n"
          T10 "  gh1-t3  temperature   23.4  serial  /dev/ttyUSB0\n"
          T10 "  gh1-t3  humidity      61.2  serial  /dev/ttyUSB0\n"
          T1060 "  gh1-t3  temperature   23.5  serial  /dev/ttyUSB0\n",
          NULL },
        { "one sensor, every metric, the newest 2",
          NULL, ARGS("--sensor", "gh1-t3", "--utc", "--limit", "2"), 0,
          "TIME                      SENSOR  METRIC       VALUE  SOURCE  ORIGIN\n"
          T10 "  gh1-t3  humidity      61.2  serial  /dev/ttyUSB0\n"
          T1060 "  gh1-t3  temperature   23.5  serial  /dev/ttyUSB0\n",
          NULL },
        { "table in local time",
          "Europe/Berlin", ARGS("-s", "gh1-t3", "-m", "humidity"), 0,
          "TIME                     SENSOR  METRIC    VALUE  SOURCE  ORIGIN\n"
          "2025-11-21 11:00:00.000  gh1-t3  humidity   61.2  serial  /dev/ttyUSB0\n",
          NULL },
        { "source filter",
          NULL, ARGS("--source", "serial", "--format", "csv", "--metric", "temperature"), 0, NULL,
          "23.4,true" },
        { "source filter excludes",
          NULL, ARGS("--source", "mqtt", "--format", "csv", "--metric", "temperature"), 0,
          "ts,time,sensor,metric,value,sensor_ts,received,source,origin,flags\n", NULL },
        { "absolute since/until, half open",
          NULL, ARGS("--since", "2025-11-21T10:00:30Z", "--until", "2025-11-21T11:01:00+01:00", "-o", "csv"), 0,
          "ts,time,sensor,metric,value,sensor_ts,received,source,origin,flags\n"
          "1763719230000," T1030 ",gh2-co,co2,612,false,1763719230000,mqtt,greenhouse/gh2-co/co2,\n",
          NULL },
        { "relative since",
          NULL, ARGS("--since", "15m", "-o", "csv"), 0, NULL, ",gh2-co,co2,640.25,false," },
        { "limit: the newest N, oldest first",
          NULL, ARGS("--limit", "2", "-o", "csv", UNTIL), 0,
          "ts,time,sensor,metric,value,sensor_ts,received,source,origin,flags\n"
          "1763719260000," T1060 ",gh1-t3,temperature,23.5,true,1763719260005,serial,/dev/ttyUSB0,\n"
          "1763719290000," T1090 ",\"gh3,\"\"x\"\"\",light,1e-07,true,1763719290005,mqtt,greenhouse/a b,\n",
          NULL },
        { "latest per sensor and metric",
          NULL, ARGS("--latest", "-o", "csv", UNTIL), 0,
          "ts,time,sensor,metric,value,sensor_ts,received,source,origin,flags\n"
          "1763719200000," T10 ",gh1-t3,humidity,61.2,true,1763719200005,serial,/dev/ttyUSB0,\n"
          "1763719260000," T1060 ",gh1-t3,temperature,23.5,true,1763719260005,serial,/dev/ttyUSB0,\n"
          "1763719230000," T1030 ",gh2-co,co2,612,false,1763719230000,mqtt,greenhouse/gh2-co/co2,\n"
          "1763719290000," T1090 ",\"gh3,\"\"x\"\"\",light,1e-07,true,1763719290005,mqtt,greenhouse/a b,\n",
          NULL },
        { "latest includes the recent value",
          NULL, ARGS("--latest", "-s", "gh2-co", "-o", "csv"), 0, NULL, ",gh2-co,co2,640.25," },
        { "counts",
          NULL, ARGS("--count", "-o", "csv"), 0, NULL,
          "sensor,metric,count,first_ts,last_ts\n"
          "gh1-t3,humidity,1,1763719200000,1763719200000\n"
          "gh1-t3,temperature,2,1763719200000,1763719260000\n" },
        { "counts, table",
          NULL, ARGS("--count", "--utc", "-s", "gh1-t3"), 0,
          "SENSOR  METRIC       COUNT  FIRST                     LAST\n"
          "gh1-t3  humidity         1  " T10 "  " T10 "\n"
          "gh1-t3  temperature      2  " T10 "  " T1060 "\n",
          NULL },
        { "counts, json",
          NULL, ARGS("--count", "-o", "json", "-m", "humidity"), 0,
          "{\"sensor\":\"gh1-t3\",\"metric\":\"humidity\",\"count\":1,\"first_ts\":1763719200000,\"last_ts\":1763719200000}\n",
          NULL },
        { "rejects, raw escaped",
          NULL, ARGS("--rejects", "-o", "json", UNTIL), 0,
          "{\"received\":1763719201000,\"time\":\"2025-11-21T10:00:01.000Z\",\"source\":\"serial\","
          "\"origin\":\"/dev/ttyUSB0\",\"reason\":\"bad_json\",\"raw_size\":14,"
          "\"raw\":\"{\\\"sensor\\\":\\\\x01\\\\xff,\\\\n\"}\n",
          NULL },
        { "rejects, table",
          NULL, ARGS("--rejects", "--utc", "--source", "mqtt"), 0, NULL,
          "  mqtt    greenhouse/x  not_finite  1e999\n" },
        { "nothing matches: table says so",
          NULL, ARGS("--sensor", "nobody"), 0, "No readings.\n", NULL },
        { "nothing matches: json prints nothing",
          NULL, ARGS("--sensor", "nobody", "-o", "json"), 0, "", NULL },

        { "events of a sensor and of every sensor, csv",
          NULL, ARGS("--events", "--sensor", "gh1-t3", "--format", "csv"), 0,
          "ts,time,kind,sensor,subject,start,end,duration_ms,count,detail\n"
          "1763719300000,2025-11-21T10:01:40.000Z,input_down,,serial,1763719300000,,,,port gone\n"
          "1763719330000,2025-11-21T10:02:10.000Z,input_up,,serial,1763719300000,1763719330000,30000,,port gone\n"
          "1763719350000,2025-11-21T10:02:30.000Z,sensor_silent,gh1-t3,,1763719260000,,,,\n"
          "1763719400000,2025-11-21T10:03:20.000Z,sensor_back,gh1-t3,,1763719260000,1763719400000,140000,,\n",
          NULL },
        { "gaps with their cause, json",
          NULL, ARGS("--gaps", "--sensor", "gh1-t3", "--format", "json"), 0,
          "{\"sensor\":\"gh1-t3\",\"start\":1763719260000,\"end\":1763719400000,\"duration_ms\":140000,"
          "\"ongoing\":false,\"cause\":\"input_up serial (port gone)\"}\n",
          NULL },
        { "a gap that goes on, table",
          NULL, ARGS("--gaps", "--since", "1h"), 0, NULL, "(ongoing)" },
        { "events: no metric", NULL, ARGS("--events", "--metric", "co2"), 64, NULL, "do not apply to --events and --gaps" },
        { "gaps: no limit", NULL, ARGS("--gaps", "--limit", "3"), 64, NULL, "--limit does not apply to --gaps" },
        { "events and gaps exclude", NULL, ARGS("--events", "--gaps"), 64, NULL, "exclude each other" },
        { "bad format", NULL, ARGS("--format", "xml"), 64, NULL, "invalid --format 'xml'" },
        { "bad source", NULL, ARGS("--source", "radio"), 64, NULL, "invalid --source 'radio'" },
        { "bad since", NULL, ARGS("--since", "yesterday-ish"), 64, NULL, "invalid --since 'yesterday-ish'" },
        { "bad until", NULL, ARGS("--until", "2025-13-01"), 64, NULL, "invalid --until" },
        { "bad limit", NULL, ARGS("--limit", "-3"), 64, NULL, "invalid --limit '-3'" },
        { "modes exclude", NULL, ARGS("--latest", "--count"), 64, NULL, "exclude each other" },
        { "no limit on counts", NULL, ARGS("--count", "--limit", "3"), 64, NULL, "--limit does not apply" },
        { "rejects and sensor", NULL, ARGS("--rejects", "--sensor", "x"), 64, NULL, "do not apply to --rejects" },
        { "since after until", NULL, ARGS("--since", "1h", "--until", "2h"), 64, NULL, "--since must be before --until" },
        { "missing value", NULL, ARGS("--sensor"), 64, NULL, "option '--sensor' needs a value" },
        { "unknown option", NULL, ARGS("--frobnicate"), 64, NULL, "Usage: sensor-collector query" },
        { "stray argument", NULL, ARGS("readings"), 64, NULL, "unexpected argument 'readings'" },
        { "help", NULL, ARGS("--help"), 0, NULL, "--latest" },
};

static void check_case(const Case *c, int status, const char *out) {
        ck_assert_msg(status == c->status, "%s: status %d, want %d; output:\n%s", c->name, status, c->status, out);
        if (c->output)
                ck_assert_msg(streq(out, c->output), "%s: output\n---\n%s---\nwant\n---\n%s---", c->name, out, c->output);
        if (c->contains)
                ck_assert_msg(strstr(out, c->contains), "%s: output\n---\n%s---\nlacks '%s'", c->name, out, c->contains);
}

START_TEST(test_cases) {
        const Case *c = &cases[_i];
        _cleanup_free_ char *out = NULL;
        const char *args[32] = { "--db", db_path };
        size_t n = 2;
        int status;

        setup();
        for (size_t i = 0; c->args[i]; i++)
                args[n++] = c->args[i];
        args[n] = NULL;
        status = run_query(c->tz, args, &out);
        check_case(c, status, out);
}
END_TEST

static const char *write_config_text(const char *dir) {
        char text[1024];

        snprintf(text, sizeof(text), "{ \"store\": { \"path\": \"%s\" } }\n", db_path);
        return tl_write_file(dir, "collector.json", text);
}

START_TEST(test_config_path) {
        _cleanup_free_ char *out = NULL;
        const char *dir = tl_tmpdir();
        const char *config;
        int status;

        setup();
        config = write_config_text(dir);
        status = run_query(NULL, ARGS("--config", config, "--count", "-o", "csv", "-s", "gh2-co"), &out);
        ck_assert_msg(status == 0, "%d: %s", status, out);
        ck_assert_msg(strncmp(out, "sensor,metric,count,first_ts,last_ts\ngh2-co,co2,2,1763719230000,", 63) == 0, "%s", out);
        /* Both: a usage error. */
        free(out);
        status = run_query(NULL, ARGS("--config", config, "--db", db_path), &out);
        ck_assert_int_eq(status, 64);
        /* An invalid config: its errors and 78. */
        free(out);
        config = tl_write_file(dir, "bad.json", "{ \"store\": { \"path\": 5 } }\n");
        status = run_query(NULL, ARGS("--config", config), &out);
        ck_assert_msg(status == 78, "%d: %s", status, out);
        ck_assert_msg(strstr(out, "/store/path"), "%s", out);
}
END_TEST

START_TEST(test_unreadable_stores) {
        _cleanup_free_ char *out = NULL;
        const char *dir = tl_tmpdir();
        char path[400];
        int status;

        snprintf(path, sizeof(path), "%s/missing.db", dir);
        status = run_query(NULL, ARGS("--db", path), &out);
        ck_assert_int_eq(status, 1);
        ck_assert_msg(strstr(out, path) && strstr(out, "no such file"), "%s", out);
        ck_assert_int_ne(access(path, F_OK), 0); /* not created */

        free(out);
        const char *junk = tl_write_file(dir, "junk.db", "this is not a database, just some text that is long enough "
                                                        "to fill an SQLite header and then some more..........\n");
        status = run_query(NULL, ARGS("--db", junk), &out);
        ck_assert_int_eq(status, 1);
        ck_assert_msg(strstr(out, "not an SQLite database"), "%s", out);

        free(out);
        snprintf(path, sizeof(path), "%s/other.db", dir);
        {
                sqlite3 *db;
                ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
                ck_assert_int_eq(sqlite3_exec(db, "CREATE TABLE readings (x)", NULL, NULL, NULL), SQLITE_OK);
                sqlite3_close(db);
        }
        status = run_query(NULL, ARGS("--db", path), &out);
        ck_assert_int_eq(status, 1);
        ck_assert_msg(strstr(out, "not a sensor-collector store"), "%s", out);

        free(out);
        status = run_query(NULL, ARGS("--db", dir), &out);
        ck_assert_int_eq(status, 1);
        ck_assert_msg(strstr(out, "a directory"), "%s", out);
}
END_TEST

/* WAL: a reader is not blocked by the writer's open batch and sees what is committed. */
START_TEST(test_reads_while_writing) {
        _cleanup_free_ char *out = NULL;
        Writer w;
        int status;

        setup();
        writer_open(&w, db_path);
        add(&w, "gh9", "temperature", 1, BASE, true, READING_SOURCE_SERIAL, "/dev/x");
        status = run_query(NULL, ARGS("--db", db_path, "--count", "-o", "csv", "-s", "gh9"), &out);
        ck_assert_int_eq(status, 0);
        ck_assert_str_eq(out, "sensor,metric,count,first_ts,last_ts\n");
        ck_assert_int_eq(store_commit(w.store), 0);
        free(out);
        status = run_query(NULL, ARGS("--db", db_path, "--count", "-o", "csv", "-s", "gh9"), &out);
        ck_assert_int_eq(status, 0);
        ck_assert_str_eq(out, "sensor,metric,count,first_ts,last_ts\ngh9,temperature,1,1763719200000,1763719200000\n");
        writer_close(&w);
}
END_TEST

/* A wide table keeps its columns aligned across the chunks it is printed in. */
START_TEST(test_table_many_rows) {
        _cleanup_free_ char *out = NULL;
        Writer w;
        int status, lines = 0;

        snprintf(db_path, sizeof(db_path), "%s/many.db", tl_tmpdir());
        writer_open(&w, db_path);
        for (int i = 0; i < 2500; i++)
                add(&w, "s", "m", i, BASE + i, true, READING_SOURCE_SERIAL, "/dev/x");
        writer_close(&w);
        status = run_query(NULL, ARGS("--db", db_path, "--utc"), &out);
        ck_assert_int_eq(status, 0);
        for (char *p = out; (p = strchr(p, '\n')); p++)
                lines++;
        ck_assert_int_eq(lines, 2501);
        ck_assert(strstr(out, "2025-11-21T10:00:02.499Z  s       m        2499  serial  /dev/x\n"));
        ck_assert(strstr(out, "2025-11-21T10:00:00.000Z  s       m           0  serial  /dev/x\n"));
}
END_TEST

/* More names than the reader's id-to-name cache has slots, so that ids share slots and rows
 * alternate between them: every row keeps its own sensor and origin. */
START_TEST(test_csv_many_names) {
        _cleanup_free_ char *out = NULL;
        Writer w;
        int status;

        snprintf(db_path, sizeof(db_path), "%s/names.db", tl_tmpdir());
        writer_open(&w, db_path);
        for (int i = 0; i < 600; i++) {
                char sensor[16], origin[16];

                snprintf(sensor, sizeof(sensor), "s%d", i % 300);
                snprintf(origin, sizeof(origin), "o%d", (i * 7) % 600);
                add(&w, sensor, i % 2 ? "m1" : "m2", i + 0.25, BASE + i, true, READING_SOURCE_SERIAL, origin);
        }
        writer_close(&w);
        status = run_query(NULL, ARGS("--db", db_path, "--format", "csv"), &out);
        ck_assert_int_eq(status, 0);
        for (int i = 0; i < 600; i++) {
                char line[160];

                snprintf(line, sizeof(line), "\n%lld,2025-11-21T10:00:%02d.%03dZ,s%d,%s,%d.25,true,%lld,serial,o%d,\n",
                         BASE + i, i / 1000, i % 1000, i % 300, i % 2 ? "m1" : "m2", i, BASE + i + 5, (i * 7) % 600);
                ck_assert_msg(strstr(out, line), "row %d: no line '%s'", i, line + 1);
        }
}
END_TEST

typedef struct TimeCase {
        const char *text;
        int64_t want;        /* with now = BASE, TZ=UTC */
        int r;
} TimeCase;

static const TimeCase time_cases[] = {
        { "now", BASE, 0 },
        { "30s", BASE - 30000, 0 },
        { "15m", BASE - 15 * 60000, 0 },
        { "1h", BASE - 3600000, 0 },
        { "2d", BASE - 2 * 86400000LL, 0 },
        { "1w", BASE - 7 * 86400000LL, 0 },
        { "1h30m", BASE - 5400000, 0 },
        { "0s", BASE, 0 },
        { "2025-11-21T10:00:00Z", BASE, 0 },
        { "2025-11-21t10:00:00z", BASE, 0 },
        { "2025-11-21T10:00:00.5Z", BASE + 500, 0 },
        { "2025-11-21T10:00:00.123456Z", BASE + 123, 0 },
        { "2025-11-21T11:00:00+01:00", BASE, 0 },
        { "2025-11-21T04:30:00-0530", BASE, 0 },
        { "2025-11-21T10:00Z", BASE, 0 },
        { "2025-11-21 10:00:00", BASE, 0 },   /* local, and TZ is UTC here */
        { "2025-11-21T10:00", BASE, 0 },
        { "2025-11-21", BASE - 10 * 3600000LL, 0 },
        { "1970-01-01T00:00:00Z", 0, 0 },
        { "", 0, -EINVAL },
        { "15", 0, -EINVAL },
        { "m", 0, -EINVAL },
        { "15x", 0, -EINVAL },
        { "-15m", 0, -EINVAL },
        { "1h 30m", 0, -EINVAL },
        { "99999999999999999999d", 0, -EINVAL },
        { "2025-11-31", 0, -EINVAL },
        { "2025-02-29", 0, -EINVAL },
        { "2025-13-01", 0, -EINVAL },
        { "2025-11-21T24:00:00Z", 0, -EINVAL },
        { "2025-11-21T10:60Z", 0, -EINVAL },
        { "2025-11-21T10:00:00.Z", 0, -EINVAL },
        { "2025-11-21T10:00:00+1", 0, -EINVAL },
        { "2025-11-21T10:00:00Zjunk", 0, -EINVAL },
        { "2025/11/21", 0, -EINVAL },
        { "yesterday", 0, -EINVAL },
};

START_TEST(test_parse_time) {
        const TimeCase *c = &time_cases[_i];
        int64_t got = -1;
        int r;

        setenv("TZ", "UTC", 1);
        tzset();
        r = query_parse_time(c->text, BASE, &got);
        ck_assert_msg(r == c->r, "'%s': r = %d, want %d", c->text, r, c->r);
        if (r == 0)
                ck_assert_msg(got == c->want, "'%s': %lld, want %lld", c->text, (long long) got, (long long) c->want);
}
END_TEST

START_TEST(test_parse_time_local_zone) {
        int64_t got;

        setenv("TZ", "Europe/Berlin", 1);
        tzset();
        ck_assert_int_eq(query_parse_time("2025-11-21 11:00:00", BASE, &got), 0);
        ck_assert_int_eq(got, BASE);
        /* Summer time. */
        ck_assert_int_eq(query_parse_time("2025-07-01T12:00", BASE, &got), 0);
        ck_assert_int_eq(got, 1751364000000LL);
        ck_assert_int_eq(query_parse_time("2025-07-01T12:00Z", BASE, &got), 0);
        ck_assert_int_eq(got, 1751371200000LL);
}
END_TEST

static Suite *query_suite(void) {
        Suite *s = suite_create("query");
        TCase *tc = tcase_create("command");

        tcase_set_timeout(tc, 30);
        tcase_add_loop_test(tc, test_cases, 0, ELEMENTSOF(cases));
        tcase_add_test(tc, test_config_path);
        tcase_add_test(tc, test_unreadable_stores);
        tcase_add_test(tc, test_reads_while_writing);
        tcase_add_test(tc, test_table_many_rows);
        tcase_add_test(tc, test_csv_many_names);
        suite_add_tcase(s, tc);

        tc = tcase_create("time");
        tcase_add_loop_test(tc, test_parse_time, 0, ELEMENTSOF(time_cases));
        tcase_add_test(tc, test_parse_time_local_zone);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(query_suite());
}
