/* SPDX-License-Identifier: MIT */
/* `sensor-collector status` end to end: the real daemon with a real broker and a pty, asked through its socket. */
#include <cJSON.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "collector/macro.h"
#include "testlib.h"

typedef struct Ctx {
        char dir[256];
        char sock[300];
        char db[300];
        TlBroker broker;
        TlPty pty;
        TlDaemon d;
} Ctx;

/* Both inputs: the pty and the broker; the status socket in the test's directory; sensors the
 * value of "sensors" (NULL: no sensor map). */
static void ctx_start_map(Ctx *c, char *const extra_env[], const char *sensors) {
        char *config = NULL;
        char *args[] = { "--socket", c->sock, NULL };

        memset(c, 0, sizeof(*c));
        snprintf(c->dir, sizeof(c->dir), "%s", tl_tmpdir());
        snprintf(c->sock, sizeof(c->sock), "%s/status.sock", c->dir);
        snprintf(c->db, sizeof(c->db), "%s/readings.db", c->dir);
        tl_broker_start(&c->broker, c->dir, NULL);
        tl_pty_start(&c->pty, c->dir);
        ck_assert_int_ge(asprintf(&config,
                                  "{\n"
                                  "  \"serial\": { \"enabled\": true, \"device\": \"%s\", \"format\": \"json\",\n"
                                  "              \"reopen_timeout\": 120 },\n"
                                  "  \"mqtt\": { \"host\": \"127.0.0.1\", \"port\": %d, \"client_id\": \"sc-status-test\",\n"
                                  "            \"keepalive\": 5, \"max_offline\": 120,\n"
                                  "            \"topics\": [ { \"filter\": \"gh/+sensor/+metric\", \"qos\": 1, \"format\": \"value\" } ] },\n"
                                  "  \"store\": { \"path\": \"%s\", \"commit_interval_ms\": 10 },\n"
                                  "  \"log\": { \"level\": \"info\" },\n"
                                  "  \"supervisor\": { \"stop_timeout\": 5, \"status_interval\": 0.1 },\n"
                                  "  \"sensors\": %s\n"
                                  "}\n",
                                  c->pty.device, c->broker.port, c->db, sensors ? sensors : "{}"),
                         0);
        tl_daemon_start_ready(&c->d, c->dir, config, args, extra_env, 20000);
        free(config);
}

static void ctx_start(Ctx *c, char *const extra_env[]) {
        ctx_start_map(c, extra_env, NULL);
}

static void ctx_stop(Ctx *c) {
        if (c->d.pid > 0) {
                kill(c->d.pid, SIGTERM);
                ck_assert_int_eq(tl_daemon_wait(&c->d, 20000), 0);
        }
        if (c->broker.pid > 0)
                tl_broker_stop(&c->broker);
        if (c->pty.pid > 0)
                tl_pty_stop(&c->pty);
}

/* Runs `sensor-collector status --socket SOCK --format FORMAT`; returns its exit status and
 * its output in *ret_out (caller frees). */
static int run_status(const char *sock, const char *format, char **ret_out) {
        char *argv[] = { SC_BINARY, "status", "--socket", (char *) sock, "--format", (char *) format, NULL };
        return tl_run(argv, NULL, ret_out, 20000);
}

/* The JSON answer, parsed; its exit status in *ret_status. Fails the test when it does not parse. */
static cJSON *status_json(Ctx *c, int *ret_status) {
        char *out = NULL;
        int st = run_status(c->sock, "json", &out);
        cJSON *j = cJSON_Parse(out);

        ck_assert_msg(cJSON_IsObject(j), "status --format json gave no JSON object (exit %d):\n%s", st, out);
        free(out);
        if (ret_status)
                *ret_status = st;
        return j;
}

static const cJSON *path_get(const cJSON *j, const char *a, const char *b, const char *k) {
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(j, a);
        if (b)
                o = cJSON_GetObjectItemCaseSensitive(o, b);
        return cJSON_GetObjectItemCaseSensitive(o, k);
}

static double num(const cJSON *j, const char *a, const char *b, const char *k) {
        const cJSON *v = path_get(j, a, b, k);
        ck_assert_msg(cJSON_IsNumber(v), "%s.%s.%s is not a number", a, strempty(b), k);
        return v->valuedouble;
}

static const char *str(const cJSON *j, const char *a, const char *b, const char *k) {
        const cJSON *v = path_get(j, a, b, k);
        ck_assert_msg(cJSON_IsString(v), "%s.%s.%s is not a string", a, strempty(b), k);
        return v->valuestring;
}

typedef struct InputWait {
        Ctx *c;
        const char *input;
        const char *state;
        int status;
        cJSON *last;
} InputWait;

static bool input_in_state(void *userdata) {
        InputWait *w = userdata;
        const cJSON *s;

        cJSON_Delete(w->last);
        w->last = status_json(w->c, &w->status);
        s = path_get(w->last, "inputs", w->input, "state");
        return cJSON_IsString(s) && streq(s->valuestring, w->state);
}

/* Asks until the input is in state; returns the answer (caller deletes) and the exit status. */
static cJSON *wait_input_state(Ctx *c, const char *input, const char *state, int timeout_ms, int *ret_status) {
        InputWait w = { .c = c, .input = input, .state = state };
        bool ok = tl_wait_until(input_in_state, &w, timeout_ms);
        char *text = cJSON_Print(w.last);

        ck_assert_msg(ok, "input %s never %s; last answer:\n%s", input, state, text);
        free(text);
        *ret_status = w.status;
        return w.last;
}

static void send_serial(Ctx *c, unsigned n) {
        for (unsigned i = 0; i < n; i++) {
                char frame[128];
                int k = snprintf(frame, sizeof(frame), "{\"sensor\":\"bench%u\",\"temp\":%u.5}\n", i % 4, i);
                tl_pty_write(&c->pty, frame, (size_t) k);
        }
}

static void send_mqtt(Ctx *c, const char *topic, const char *payload) {
        tl_mqtt_publish_once(c->broker.port, topic, payload);
}

/* Feeds text to a command on stdin (through sh, which the test controls entirely). */
static int run_with_input(const char *dir, const char *cmd, const char *input, char **ret_out) {
        const char *in = tl_write_file(dir, "stdin.txt", input);
        char *line = NULL;
        int r;

        ck_assert_int_ge(asprintf(&line, "%s < '%s'", cmd, in), 0);
        char *argv[] = { "sh", "-c", line, NULL };
        r = tl_run(argv, NULL, ret_out, 30000);
        free(line);
        return r;
}

/* Prometheus' own parser and linter accept the text format in out. */
static void assert_promtool_ok(const char *dir, const char *out) {
        char *check = NULL;
        int r = run_with_input(dir, "promtool check metrics", out, &check);

        ck_assert_msg(r == 0, "promtool check metrics: exit %d:\n%s\n---- input ----\n%s", r, check, out);
        free(check);
}

static int connect_to(const char *path, bool nonblock) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);

        memcpy(sa.sun_path, path, MIN(strlen(path), sizeof(sa.sun_path) - 1));
        if (fd >= 0 && connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 && errno != EAGAIN && errno != EINPROGRESS) {
                close(fd);
                return -1;
        }
        return fd;
}

typedef struct SocketsWait {
        pid_t pid;
        unsigned want;
} SocketsWait;

static bool sockets_more(void *userdata) {
        SocketsWait *w = userdata;
        return tl_assert_sockets_cloexec(w->pid) >= w->want;
}

/* ---- both inputs running ---- */

START_TEST(test_both_running) {
        Ctx c;
        cJSON *j;
        char *out = NULL;
        int st;

        ctx_start(&c, NULL);
        send_serial(&c, 4);
        tl_pty_write(&c.pty, "not a frame\n", 12);
        send_mqtt(&c, "gh/s1/temp", "21.5");
        send_mqtt(&c, "gh/s1/hum", "55");
        send_mqtt(&c, "gh/s1/temp", "bad");
        ck_assert(tl_wait_sql_at_least(c.db, "SELECT count(*) FROM readings", 6, 10000));
        ck_assert(tl_wait_sql_at_least(c.db, "SELECT count(*) FROM rejects", 2, 10000));

        j = status_json(&c, &st);
        ck_assert_int_eq(st, 0);
        ck_assert_str_eq(str(j, "daemon", NULL, "state"), "running");
        ck_assert(cJSON_IsTrue(path_get(j, "daemon", NULL, "healthy")));
        ck_assert_int_eq((int) num(j, "daemon", NULL, "pid"), c.d.pid);
        ck_assert_str_eq(str(j, "inputs", "serial", "state"), "running");
        ck_assert_str_eq(str(j, "inputs", "serial", "origin"), c.pty.device);
        ck_assert_int_eq((int) num(j, "inputs", "serial", "readings_total"), 4);
        ck_assert_int_eq((int) num(j, "inputs", "serial", "readings_last_minute"), 4);
        ck_assert_int_eq((int) num(j, "inputs", "serial", "rejects_total"), 1);
        ck_assert_int_eq((int) num(j, "inputs", "serial", "rejects_last_minute"), 1);
        ck_assert_int_eq((int) num(j, "inputs", "serial", "reconnects_total"), 0);
        ck_assert(cJSON_IsNull(path_get(j, "inputs", "serial", "last_error")));
        ck_assert_str_eq(str(j, "inputs", "mqtt", "state"), "running");
        ck_assert_int_eq((int) num(j, "inputs", "mqtt", "readings_total"), 2);
        ck_assert_int_eq((int) num(j, "inputs", "mqtt", "rejects_total"), 1);
        /* since: when the input started running, a moment ago by the wall clock */
        double since = num(j, "inputs", "mqtt", "state_since_timestamp_seconds");
        ck_assert(since > 1.6e9 && since <= (double) time(NULL) + 1);
        ck_assert_str_eq(str(j, "store", NULL, "path"), c.db);
        ck_assert_int_eq((int) num(j, "store", NULL, "reading_rows"), 6);
        ck_assert_int_eq((int) num(j, "store", NULL, "reject_rows"), 2);
        ck_assert_int_eq((int64_t) num(j, "store", NULL, "reading_rows"), tl_sql_int(c.db, "SELECT count(*) FROM readings"));
        ck_assert(num(j, "store", NULL, "size_bytes") > 0);
        ck_assert(num(j, "store", NULL, "oldest_reading_timestamp_seconds") <=
                  num(j, "store", NULL, "newest_reading_timestamp_seconds"));
        ck_assert_int_eq((int64_t) (num(j, "store", NULL, "newest_reading_timestamp_seconds") * 1000 + 0.5),
                         tl_sql_int(c.db, "SELECT max(ts) FROM readings"));
        ck_assert(cJSON_IsNumber(path_get(j, "store", NULL, "last_commit_timestamp_seconds")));
        /* The clock as judged on this machine: whichever way, the section says it and why, and a
         * trusted clock leaves nothing waiting for correction. */
        ck_assert(cJSON_IsBool(path_get(j, "clock", NULL, "trusted")));
        ck_assert(strlen(str(j, "clock", NULL, "reason")) > 0);
        if (cJSON_IsTrue(path_get(j, "clock", NULL, "trusted"))) {
                ck_assert(streq(str(j, "clock", NULL, "state"), "trusted") ||
                          streq(str(j, "clock", NULL, "state"), "synchronised"));
                ck_assert_int_eq((int) num(j, "clock", NULL, "readings_awaiting_correction"), 0);
        } else {
                ck_assert_str_eq(str(j, "clock", NULL, "state"), "untrusted");
                ck_assert_int_eq((int) num(j, "clock", NULL, "readings_awaiting_correction"), 6);
        }
        cJSON_Delete(j);

        /* The listening socket and a connection it accepted are close-on-exec. */
        {
                unsigned before = tl_assert_sockets_cloexec(c.d.pid);
                int fd = connect_to(c.sock, false);
                ck_assert_int_ge(fd, 0);
                ck_assert(tl_wait_until(sockets_more, &(SocketsWait){ .pid = c.d.pid, .want = before + 1 }, 10000));
                close(fd);
        }

        /* text for people */
        ck_assert_int_eq(run_status(c.sock, "text", &out), 0);
        ck_assert_msg(strstr(out, "sensor-collector: healthy") && strstr(out, "  serial:\n") &&
                              strstr(out, "  mqtt:\n") && strstr(out, c.db) && strstr(out, "readings last minute"),
                      "text:\n%s", out);
        free(out);

        /* The Prometheus text format, through promtool's parser and linter. */
        ck_assert_int_eq(run_status(c.sock, "prometheus", &out), 0);
        ck_assert_msg(strstr(out, "sensor_collector_input_readings_total{input=\"serial\"} 4\n"), "%s", out);
        ck_assert_msg(strstr(out, "sensor_collector_store_reading_rows 6\n"), "%s", out);
        assert_promtool_ok(c.dir, out);
        free(out);

        /* OpenMetrics, through the parser of the Prometheus Python client (strict: # EOF,
         * counter families without _total, info metrics). */
        ck_assert_int_eq(run_status(c.sock, "openmetrics", &out), 0);
        {
                char *check = NULL;
                int r = run_with_input(c.dir,
                                       "/usr/bin/python3 -c 'import sys\n"
                                       "from prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n"
                                       "fams = {f.name: f for f in p(sys.stdin.read())}\n"
                                       "s = [x for x in fams[\"sensor_collector_input_readings\"].samples if x.labels[\"input\"] == \"mqtt\"]\n"
                                       "assert fams[\"sensor_collector_input_readings\"].type == \"counter\"\n"
                                       "assert s[0].name == \"sensor_collector_input_readings_total\" and s[0].value == 2, s\n"
                                       "assert fams[\"sensor_collector_input\"].type == \"info\"\n"
                                       "print(\"parsed\", len(fams))'",
                                       out, &check);
                ck_assert_msg(r == 0 && strstr(check, "parsed"), "OpenMetrics parser: exit %d:\n%s\n---- input ----\n%s", r,
                              check, out);
                free(check);
        }
        free(out);
        ctx_stop(&c);
}
END_TEST

/* ---- a silent sensor ---- */

typedef struct SilentWait {
        Ctx *c;
        const char *id;
        bool silent;
        int status;
        cJSON *last;
} SilentWait;

static bool sensor_listed(void *userdata) {
        SilentWait *w = userdata;

        cJSON_Delete(w->last);
        w->last = status_json(w->c, &w->status);
        return (path_get(w->last, "silent_sensors", NULL, w->id) != NULL) == w->silent;
}

/* Asks until sensor id is (silent) or is not (!silent) a row of "silent_sensors"; returns the
 * answer (caller deletes) and the exit status. */
static cJSON *wait_silent(Ctx *c, const char *id, bool silent, int timeout_ms, int *ret_status) {
        SilentWait w = { .c = c, .id = id, .silent = silent };
        bool ok = tl_wait_until(sensor_listed, &w, timeout_ms);
        char *text = cJSON_Print(w.last);

        ck_assert_msg(ok, "sensor %s never %s; last answer:\n%s", id, silent ? "silent" : "back", text);
        free(text);
        *ret_status = w.status;
        return w.last;
}

START_TEST(test_silent_sensor) {
        char *out = NULL;
        cJSON *j;
        int64_t seen_ms;
        double t_asked;
        int st;
        Ctx c;

        /* quiet: one frame, then nothing; silent after 3 x 1 s (a window that a busy machine
         * does not miss when it is back, below). busy: expected once a minute, seen now, not
         * silent in this test. gh2-*: a pattern, watched once seen, silent after 3 x 0.5 s. */
        ctx_start_map(&c, NULL,
                      "{ \"stale_after\": 3, \"map\": { \"quiet\": { \"expect_every\": 1 },"
                      " \"busy\": { \"expect_every\": 60 }, \"gh2-*\": { \"expect_every\": 0.5 } } }");
        tl_pty_write(&c.pty, "{\"sensor\":\"quiet\",\"temp\":20}\n", 29);
        tl_pty_write(&c.pty, "{\"sensor\":\"busy\",\"temp\":21}\n", 28);
        tl_pty_write(&c.pty, "{\"sensor\":\"gh2-a\",\"temp\":22}\n", 29);
        ck_assert(tl_wait_sql_at_least(c.db, "SELECT count(*) FROM readings", 3, 10000));
        seen_ms = tl_sql_int(c.db, "SELECT max(ts) FROM readings_view WHERE sensor = 'quiet'");

        j = wait_silent(&c, "quiet", true, 15000, &st);
        cJSON_Delete(j);
        j = wait_silent(&c, "gh2-a", true, 15000, &st);
        t_asked = (double) time(NULL);
        /* Silence is shown, but it is not a daemon failure: exit status 0. */
        ck_assert_int_eq(st, 0);
        ck_assert(cJSON_IsTrue(path_get(j, "daemon", NULL, "healthy")));
        ck_assert_int_eq((int) num(j, "sensors", NULL, "watched"), 3);
        ck_assert_int_eq((int) num(j, "sensors", NULL, "silent"), 2);
        ck_assert_int_eq((int) num(j, "sensors", NULL, "silent_shown"), 2);
        ck_assert_int_eq((int) num(j, "sensors", NULL, "silent_metrics"), 0);
        ck_assert_ptr_null(path_get(j, "silent_sensors", NULL, "busy"));
        ck_assert_str_eq(str(j, "silent_sensors", "quiet", "map_entry"), "quiet");
        ck_assert_str_eq(str(j, "silent_sensors", "gh2-a", "map_entry"), "gh2-*");
        /* last seen: the reading's own time in the store */
        ck_assert_int_eq((int64_t) (num(j, "silent_sensors", "quiet", "last_seen_timestamp_seconds") * 1000 + 0.5), seen_ms);
        /* silent for: at least the window (3 x 1 s), and no more than since the last reading */
        ck_assert(num(j, "silent_sensors", "quiet", "silent_for_seconds") >= 3.0);
        ck_assert(num(j, "silent_sensors", "quiet", "silent_for_seconds") <= t_asked + 1 - (double) seen_ms / 1000.0);
        ck_assert(num(j, "silent_sensors", "quiet", "expect_every_seconds") == 1.0);
        ck_assert(num(j, "silent_sensors", "gh2-a", "expect_every_seconds") == 0.5);
        ck_assert(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "silent_sensors")) == 2);
        cJSON_Delete(j);

        /* text: the counts and a row per silent sensor; still "healthy" (exit status 0) */
        ck_assert_int_eq(run_status(c.sock, "text", &out), 0);
        ck_assert_msg(strstr(out, "sensor-collector: healthy") && strstr(out, "\nsensors:\n  watched                3\n") &&
                              strstr(out, "  silent                 2\n") && strstr(out, "\nsilent_sensors:\n") &&
                              strstr(out, "  quiet:\n    map entry              quiet\n    last seen              ") &&
                              strstr(out, "  gh2-a:\n") && strstr(out, "    silent for             ") &&
                              strstr(out, "    expect every           500ms\n") && strstr(out, "    expect every           1.0s\n"),
                      "text:\n%s", out);
        free(out);

        /* Prometheus: one series per silent sensor, labelled by it, through promtool */
        ck_assert_int_eq(run_status(c.sock, "prometheus", &out), 0);
        ck_assert_msg(strstr(out, "sensor_collector_sensor_watched 3\n") && strstr(out, "sensor_collector_sensor_silent 2\n") &&
                              strstr(out, "sensor_collector_silent_sensor_expect_every_seconds{silent_sensor=\"quiet\"} 1\n") &&
                              strstr(out, "sensor_collector_silent_sensor_expect_every_seconds{silent_sensor=\"gh2-a\"} 0.500000\n") &&
                              strstr(out, "sensor_collector_silent_sensor_info{silent_sensor=\"gh2-a\",map_entry=\"gh2-*\"} 1\n"),
                      "%s", out);
        assert_promtool_ok(c.dir, out);
        free(out);

        /* OpenMetrics, through the strict parser */
        ck_assert_int_eq(run_status(c.sock, "openmetrics", &out), 0);
        {
                char *check = NULL;
                int r = run_with_input(c.dir,
                                       "/usr/bin/python3 -c 'import sys\n"
                                       "from prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n"
                                       "fams = {f.name: f for f in p(sys.stdin.read())}\n"
                                       "s = fams[\"sensor_collector_silent_sensor_silent_for_seconds\"].samples\n"
                                       "assert sorted(x.labels[\"silent_sensor\"] for x in s) == [\"gh2-a\", \"quiet\"], s\n"
                                       "assert fams[\"sensor_collector_sensor_silent\"].samples[0].value == 2\n"
                                       "print(\"parsed\", len(fams))'",
                                       out, &check);
                ck_assert_msg(r == 0 && strstr(check, "parsed"), "OpenMetrics parser: exit %d:\n%s\n---- input ----\n%s", r,
                              check, out);
                free(check);
        }
        free(out);

        /* quiet is back: its row goes, the count follows */
        tl_pty_write(&c.pty, "{\"sensor\":\"quiet\",\"temp\":20}\n", 29);
        j = wait_silent(&c, "quiet", false, 15000, &st);
        ck_assert_int_eq(st, 0);
        ck_assert_int_eq((int) num(j, "sensors", NULL, "silent"), 1);
        ck_assert_ptr_nonnull(path_get(j, "silent_sensors", NULL, "gh2-a"));
        cJSON_Delete(j);
        ctx_stop(&c);
}
END_TEST

/* A sensor that never sent and one whose metric alone fell silent are rows too: the first with
 * no last-seen time but how long it has been watched, the second with the silent metric named. */
START_TEST(test_silent_rows) {
        char *out = NULL;
        cJSON *j;
        int st;
        Ctx c;

        ctx_start_map(&c, NULL,
                      "{ \"stale_after\": 3, \"map\": { \"never\": { \"expect_every\": 0.5 },"
                      " \"part\": { \"expect_every\": 60, \"metrics\": { \"co2\": { \"expect_every\": 0.5 } } } } }");
        tl_pty_write(&c.pty, "{\"sensor\":\"part\",\"temp\":20}\n", 28);
        ck_assert(tl_wait_sql_at_least(c.db, "SELECT count(*) FROM readings", 1, 10000));
        cJSON_Delete(wait_silent(&c, "never", true, 15000, &st));
        j = wait_silent(&c, "part", true, 15000, &st);
        ck_assert_int_eq(st, 0);
        ck_assert_int_eq((int) num(j, "sensors", NULL, "silent"), 1);
        ck_assert_int_eq((int) num(j, "sensors", NULL, "silent_metrics"), 1);
        ck_assert_int_eq((int) num(j, "sensors", NULL, "silent_shown"), 2);
        ck_assert(cJSON_IsTrue(path_get(j, "silent_sensors", "never", "silent")));
        ck_assert(cJSON_IsNull(path_get(j, "silent_sensors", "never", "last_seen_timestamp_seconds")));
        ck_assert(cJSON_IsNull(path_get(j, "silent_sensors", "never", "silent_for_seconds")));
        ck_assert(cJSON_IsNull(path_get(j, "silent_sensors", "never", "silent_metrics")));
        /* silent after 3 x 0.5 s of watching; time() is the whole second, the answer came before its end */
        ck_assert(num(j, "silent_sensors", "never", "watched_since_timestamp_seconds") <= (double) time(NULL) + 1.0 - 1.5);
        ck_assert(num(j, "silent_sensors", "never", "watched_since_timestamp_seconds") > (double) time(NULL) - 60.0);
        ck_assert(cJSON_IsFalse(path_get(j, "silent_sensors", "part", "silent")));
        ck_assert_str_eq(str(j, "silent_sensors", "part", "silent_metrics"), "co2");
        ck_assert(num(j, "silent_sensors", "part", "last_seen_timestamp_seconds") > 0);
        cJSON_Delete(j);

        ck_assert_int_eq(run_status(c.sock, "text", &out), 0);
        ck_assert_msg(strstr(out, "  never:\n") && strstr(out, "    last seen              -\n") &&
                              strstr(out, "    watched since          ") && strstr(out, "  part:\n") &&
                              strstr(out, "    silent metrics         co2\n"),
                      "text:\n%s", out);
        free(out);
        ck_assert_int_eq(run_status(c.sock, "prometheus", &out), 0);
        ck_assert_msg(strstr(out, "sensor_collector_silent_sensor_info{silent_sensor=\"part\",map_entry=\"part\",silent_metrics=\"co2\"} 1\n") &&
                              strstr(out, "sensor_collector_silent_sensor_silent{silent_sensor=\"never\"} 1\n"),
                      "%s", out);
        assert_promtool_ok(c.dir, out);
        free(out);
        ctx_stop(&c);
}
END_TEST

/* ---- the broker goes away and comes back ---- */

START_TEST(test_broker_down) {
        Ctx c;
        cJSON *j;
        int st;

        ctx_start(&c, NULL);
        send_mqtt(&c, "gh/s1/temp", "21.5");
        ck_assert(tl_wait_sql_at_least(c.db, "SELECT count(*) FROM readings", 1, 10000));
        tl_broker_stop(&c.broker);

        j = wait_input_state(&c, "mqtt", "degraded", 30000, &st);
        ck_assert_int_eq(st, 1);
        ck_assert(cJSON_IsFalse(path_get(j, "inputs", "mqtt", "healthy")));
        ck_assert(cJSON_IsFalse(path_get(j, "daemon", NULL, "healthy")));
        ck_assert_str_eq(str(j, "daemon", NULL, "state"), "degraded");
        /* the cause in the input's own words, not what it does about it */
        ck_assert_msg(str(j, "inputs", "mqtt", "last_error")[0] && !strstr(str(j, "inputs", "mqtt", "last_error"), "reconnecting"),
                      "%s", str(j, "inputs", "mqtt", "last_error"));
        ck_assert(cJSON_IsNumber(path_get(j, "inputs", "mqtt", "last_error_timestamp_seconds")));
        ck_assert_int_eq((int) num(j, "inputs", "mqtt", "readings_total"), 1);
        /* the other input is not affected */
        ck_assert_str_eq(str(j, "inputs", "serial", "state"), "running");
        cJSON_Delete(j);
        {
                char *out = NULL;
                ck_assert_int_eq(run_status(c.sock, "text", &out), 1);
                ck_assert_msg(strstr(out, "DEGRADED") && strstr(out, "mqtt: (not healthy)"), "%s", out);
                free(out);
        }

        tl_broker_start(&c.broker, c.dir, NULL);
        j = wait_input_state(&c, "mqtt", "running", 60000, &st);
        ck_assert_int_eq(st, 0);
        ck_assert_int_ge((int) num(j, "inputs", "mqtt", "reconnects_total"), 1);
        /* The last problem stays visible after recovery, with its time. */
        ck_assert(cJSON_IsString(path_get(j, "inputs", "mqtt", "last_error")));
        cJSON_Delete(j);
        ctx_stop(&c);
}
END_TEST

/* ---- the serial port goes away and comes back ---- */

START_TEST(test_serial_gone) {
        Ctx c;
        cJSON *j;
        int st;

        ctx_start(&c, NULL);
        send_serial(&c, 2);
        ck_assert(tl_wait_sql_at_least(c.db, "SELECT count(*) FROM readings", 2, 10000));
        tl_pty_stop(&c.pty);

        j = wait_input_state(&c, "serial", "degraded", 30000, &st);
        ck_assert_int_eq(st, 1);
        /* How a vanished pty shows depends on timing: a hangup, a read that fails with EIO, or
         * a reopen that did not succeed; each is the input's own account of the port gone. */
        ck_assert_msg(strstr(str(j, "inputs", "serial", "last_error"), "hung up") ||
                              strstr(str(j, "inputs", "serial", "last_error"), "Input/output error") ||
                              strstr(str(j, "inputs", "serial", "last_error"), "did not reopen"),
                      "%s", str(j, "inputs", "serial", "last_error"));
        ck_assert_int_eq((int) num(j, "inputs", "serial", "readings_total"), 2);
        ck_assert_str_eq(str(j, "inputs", "mqtt", "state"), "running");
        cJSON_Delete(j);

        tl_pty_start(&c.pty, c.dir);
        j = wait_input_state(&c, "serial", "running", 30000, &st);
        ck_assert_int_eq(st, 0);
        ck_assert_int_ge((int) num(j, "inputs", "serial", "reconnects_total"), 1);
        cJSON_Delete(j);
        ctx_stop(&c);
}
END_TEST

/* ---- not running: 3; the socket goes with the daemon ---- */

START_TEST(test_not_running) {
        const char *dir = tl_tmpdir();
        char path[300], *out = NULL;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd;

        snprintf(path, sizeof(path), "%s/none.sock", dir);
        ck_assert_int_eq(run_status(path, "text", &out), 3);
        ck_assert_msg(strstr(out, "not running"), "%s", out);
        free(out);

        /* a socket file nobody listens on (a daemon that was killed) */
        snprintf(path, sizeof(path), "%s/stale.sock", dir);
        memcpy(sa.sun_path, path, MIN(strlen(path), sizeof(sa.sun_path) - 1));
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        close(fd);
        ck_assert_int_eq(run_status(path, "json", &out), 3);
        free(out);

        /* bad usage */
        ck_assert_int_eq(run_status(path, "yaml", &out), 64);
        free(out);
}
END_TEST

START_TEST(test_socket_lifecycle) {
        Ctx c;
        char *out = NULL;

        ctx_start(&c, NULL);
        ck_assert_int_eq(access(c.sock, F_OK), 0);
        /* A second daemon must not take over a socket in use. */
        {
                char *argv[] = { SC_BINARY, "--config", c.d.config, "--socket", c.sock, NULL };
                ck_assert_int_eq(tl_run(argv, NULL, &out, 20000), 1);
                ck_assert_msg(strstr(out, "Failed to set up the status socket") && strstr(out, "in use"), "%s", out);
                free(out);
        }
        ck_assert_int_eq(run_status(c.sock, "json", &out), 0);
        free(out);
        kill(c.d.pid, SIGTERM);
        ck_assert_int_eq(tl_daemon_wait(&c.d, 20000), 0);
        ck_assert_int_ne(access(c.sock, F_OK), 0);
        ck_assert_int_eq(run_status(c.sock, "text", &out), 3);
        free(out);
        tl_broker_stop(&c.broker);
        tl_pty_stop(&c.pty);
}
END_TEST

/* ---- hostile clients while ingest runs ---- */

#define HOSTILE_MQTT 400
#define HOSTILE_SERIAL 200
/* The watchdog period the test gives the daemon: it pings at half of it, and systemd would kill
 * it after a whole period without one. */
#define HOSTILE_WATCHDOG_USEC 2000000

/* The attackers, in a child process, for about duration_ms: a thousand connections held open,
 * garbage, slowloris, megabytes, and a client that asks and never reads. */
static void hostile_child(const char *path, int duration_ms) {
        struct rlimit rl = { 4096, 4096 };
        static int held[1200];
        int n_held = 0;
        int64_t end = tl_now_ms() + duration_ms;
        char junk[4096];

        (void) setrlimit(RLIMIT_NOFILE, &rl);
        for (size_t i = 0; i < sizeof(junk); i++)
                junk[i] = (char) (i * 131 + 7);

        /* a thousand connections at once, held */
        for (int i = 0; i < 1000; i++) {
                int fd = connect_to(path, true);
                if (fd >= 0)
                        held[n_held++] = fd;
        }
        /* a client that asks and never reads, with a tiny receive buffer */
        {
                int small = 1;
                int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                struct sockaddr_un sa = { .sun_family = AF_UNIX };
                memcpy(sa.sun_path, path, MIN(strlen(path), sizeof(sa.sun_path) - 1));
                (void) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
                if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) >= 0) {
                        (void) send(fd, "status\n", 7, MSG_NOSIGNAL | MSG_DONTWAIT);
                        held[n_held++] = fd;
                }
        }
        while (tl_now_ms() < end) {
                /* garbage and megabytes */
                for (int i = 0; i < 20; i++) {
                        int fd = connect_to(path, true);
                        if (fd < 0)
                                continue;
                        for (int k = 0; k < (i == 0 ? 256 : 1); k++)
                                (void) send(fd, junk, sizeof(junk), MSG_NOSIGNAL | MSG_DONTWAIT);
                        close(fd);
                }
                /* slowloris: one byte at a time on the held connections, never a newline */
                for (int i = 0; i < n_held; i += 50)
                        (void) send(held[i], "s", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
                /* connect and drop at once */
                for (int i = 0; i < 50; i++) {
                        int fd = connect_to(path, true);
                        if (fd >= 0)
                                close(fd);
                }
                tl_sleep_ms(20);
        }
        _exit(0);
}

/* Publishes count QoS 1 messages (values 1..count) through one mosquitto_pub, paced. */
static pid_t spawn_publisher(Ctx *c, unsigned count) {
        char *line = NULL;
        pid_t pid;

        ck_assert_int_ge(asprintf(&line,
                                  "i=1; while [ $i -le %u ]; do echo $i; i=$((i+1)); sleep 0.005; done | "
                                  "mosquitto_pub -p %d -q 1 -l -t gh/flood/temp",
                                  count, c->broker.port),
                         0);
        char *argv[] = { "sh", "-c", line, NULL };
        pid = tl_spawn(argv, NULL, NULL, NULL);
        free(line);
        return pid;
}

static unsigned count_fds(pid_t pid) {
        char path[64];
        DIR *d;
        struct dirent *e;
        unsigned n = 0;

        snprintf(path, sizeof(path), "/proc/%d/fd", pid);
        d = opendir(path);
        ck_assert_ptr_nonnull(d);
        while ((e = readdir(d)))
                if (e->d_name[0] != '.')
                        n++;
        closedir(d);
        return n;
}

typedef struct FdWait {
        pid_t pid;
        unsigned want;
        unsigned last;
} FdWait;

static bool fds_back(void *userdata) {
        FdWait *w = userdata;
        w->last = count_fds(w->pid);
        return w->last <= w->want;
}

START_TEST(test_hostile_clients) {
        char wd_env[64];
        char *env[] = { wd_env, NULL };
        Ctx c;
        pid_t attacker, publisher;
        unsigned baseline, serial_sent = 0;
        int64_t last_ping, max_gap = 0, t0;
        cJSON *j;
        int st;

        snprintf(wd_env, sizeof(wd_env), "WATCHDOG_USEC=%d", HOSTILE_WATCHDOG_USEC);
        ctx_start(&c, env);
        j = status_json(&c, &st);
        ck_assert_int_eq(st, 0);
        cJSON_Delete(j);
        baseline = count_fds(c.d.pid);

        attacker = fork();
        ck_assert_int_ge(attacker, 0);
        if (attacker == 0)
                hostile_child(c.sock, 8000);
        publisher = spawn_publisher(&c, HOSTILE_MQTT);

        /* While the attack runs: serial frames, and the time of every WATCHDOG=1. */
        t0 = last_ping = tl_now_ms();
        for (;;) {
                struct pollfd p = { .fd = c.d.notify.fd, .events = POLLIN };
                int status;

                if (serial_sent < HOSTILE_SERIAL) {
                        send_serial(&c, 1);
                        serial_sent++;
                }
                if (poll(&p, 1, 10) > 0) {
                        char buf[4096];
                        ssize_t k = recv(c.d.notify.fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
                        if (k > 0) {
                                buf[k] = 0;
                                if (strstr(buf, "WATCHDOG=1")) {
                                        int64_t now = tl_now_ms();
                                        max_gap = MAX(max_gap, now - last_ping);
                                        last_ping = now;
                                }
                        }
                }
                if (waitpid(attacker, &status, WNOHANG) == attacker) {
                        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
                        attacker = 0;
                }
                if (attacker == 0 && serial_sent == HOSTILE_SERIAL)
                        break;
                ck_assert_msg(tl_now_ms() - t0 < 120000, "attack did not end");
        }
        ck_assert_int_eq(tl_wait(publisher, 120000), 0);
        max_gap = MAX(max_gap, tl_now_ms() - last_ping);

        fprintf(stderr, "hostile clients: %lld ms of attack, longest watchdog gap %lld ms, %u fds before\n",
                (long long) (tl_now_ms() - t0), (long long) max_gap, baseline);
        /* The loop never stalled: no gap between pings that systemd would have killed it for. */
        ck_assert_msg(max_gap < HOSTILE_WATCHDOG_USEC / 1000, "watchdog gap of %lld ms", (long long) max_gap);
        ck_assert_int_eq(kill(c.d.pid, 0), 0);

        /* Nothing lost: every reading of both inputs is stored. */
        ck_assert_msg(tl_wait_sql_at_least(c.db, "SELECT count(*) FROM readings WHERE source_id = 1", HOSTILE_MQTT, 60000),
                      "mqtt readings: %lld", (long long) tl_sql_int(c.db, "SELECT count(*) FROM readings WHERE source_id = 1"));
        ck_assert_msg(tl_wait_sql_at_least(c.db, "SELECT count(*) FROM readings WHERE source_id = 0", HOSTILE_SERIAL, 60000),
                      "serial readings: %lld", (long long) tl_sql_int(c.db, "SELECT count(*) FROM readings WHERE source_id = 0"));

        /* Every hostile connection was closed, and the socket still answers. */
        {
                FdWait w = { .pid = c.d.pid, .want = baseline };
                ck_assert_msg(tl_wait_until(fds_back, &w, 20000), "daemon has %u fds, %u before", w.last, baseline);
        }
        j = status_json(&c, &st);
        ck_assert_int_eq(st, 0);
        ck_assert_int_eq((int) num(j, "inputs", "mqtt", "readings_total"), HOSTILE_MQTT);
        ck_assert_int_eq((int) num(j, "inputs", "serial", "readings_total"), HOSTILE_SERIAL);
        cJSON_Delete(j);

        /* The refusals are logged, but rate-limited (one line per 10 s and a note). */
        {
                char *log = tl_daemon_log(&c.d);
                unsigned lines = 0;
                for (const char *p = strstr(log, "Status socket:"); p; p = strstr(p + 1, "Status socket:"))
                        lines++;
                ck_assert_msg(lines <= 1 + (unsigned) ((tl_now_ms() - t0) / 10000 + 1), "%u lines:\n%s", lines, log);
                free(log);
        }
        ctx_stop(&c);
}
END_TEST

static Suite *status_suite(void) {
        Suite *s = suite_create("status");
        TCase *tc = tcase_create("status");

        tcase_set_timeout(tc, 300);
        tcase_add_test(tc, test_both_running);
        tcase_add_test(tc, test_silent_sensor);
        tcase_add_test(tc, test_silent_rows);
        tcase_add_test(tc, test_broker_down);
        tcase_add_test(tc, test_serial_gone);
        tcase_add_test(tc, test_not_running);
        tcase_add_test(tc, test_socket_lifecycle);
        tcase_add_test(tc, test_hostile_clients);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(status_suite());
}
