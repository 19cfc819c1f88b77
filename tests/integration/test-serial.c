/* SPDX-License-Identifier: MIT */
/* The serial input end to end: the real daemon reading a socat pty pair into a real store. */
#include <check.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "collector/macro.h"
#include "testlib.h"

typedef struct Ctx {
        const char *dir;
        TlPty pty;
        TlDaemon d;
        char db[400];
        char record[400];             /* where the pty shim writes the requested termios */
} Ctx;

/* Starts the daemon reading c->pty.device, MQTT off, the store in the test's directory.
 * serial_keys and store_keys are extra JSON members (may be empty), each ending without a comma. */
static void daemon_start(Ctx *c, const char *serial_keys, const char *store_keys) {
        char json[4096], record_env[450];
        char *env[] = { record_env, NULL };

        snprintf(c->db, sizeof(c->db), "%s/readings.db", c->dir);
        snprintf(c->record, sizeof(c->record), "%s/termios", c->dir);
        snprintf(record_env, sizeof(record_env), "SC_PTYSHIM_RECORD=%s", c->record);
        snprintf(json, sizeof(json),
                 "{\n"
                 "  \"serial\": { \"enabled\": true, \"device\": \"%s\"%s%s },\n"
                 "  \"mqtt\": { \"enabled\": false },\n"
                 "  \"store\": { \"path\": \"%s\"%s%s },\n"
                 "  \"log\": { \"level\": \"debug\" },\n"
                 "  \"supervisor\": { \"status_interval\": 0.1, \"stop_timeout\": 5 }\n"
                 "}\n",
                 c->pty.device, *serial_keys ? ", " : "", serial_keys, c->db, *store_keys ? ", " : "", store_keys);
        tl_daemon_start(&c->d, c->dir, json, NULL, env);
}

/* A pty pair in a fresh directory; the daemon's device name is set even before socat runs. */
static void ctx_init(Ctx *c, bool start_pty) {
        memset(c, 0, sizeof(*c));
        c->dir = tl_tmpdir();
        if (start_pty)
                tl_pty_start(&c->pty, c->dir);
        else {
                /* The names tl_pty_start() would give, for a device that is not there yet. */
                snprintf(c->pty.link, sizeof(c->pty.link), "%s/dev", c->dir);
                snprintf(c->pty.device, sizeof(c->pty.device), "/dev/../../../../../..%s", c->pty.link);
        }
}

static void wait_ready(Ctx *c) {
        tl_daemon_expect_ready(&c->d, 5000);
}

static void write_str(Ctx *c, const char *s) {
        tl_pty_write(&c->pty, s, strlen(s));
}

static void wait_sql(Ctx *c, const char *sql, int64_t want) {
        tl_daemon_expect_sql(&c->d, c->db, sql, want, false, 5000);
}

static void wait_log(Ctx *c, const char *needle, int timeout_ms) {
        tl_daemon_expect_log(&c->d, needle, timeout_ms);
}

static int64_t count_log(Ctx *c, const char *needle) {
        char *log = tl_daemon_log(&c->d);
        int64_t n = 0;

        for (const char *p = log; (p = strstr(p, needle)); p += strlen(needle))
                n++;
        free(log);
        return n;
}

static void stop_daemon_ok(Ctx *c) {
        tl_daemon_stop_ok(&c->d, 10000);
        ck_assert_msg(strstr(c->d.notify.log, "STOPPING=1"), "no STOPPING=1");
}

static int64_t sqlf(Ctx *c, const char *fmt, ...) _printf_(2, 3);
static int64_t sqlf(Ctx *c, const char *fmt, ...) {
        char sql[1024];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(sql, sizeof(sql), fmt, ap);
        va_end(ap);
        return tl_sql_int(c->db, sql);
}

/* Runs SQL on the daemon's store through a connection of our own (waits for its write lock). */
static void sql_exec(Ctx *c, const char *sql) {
        sqlite3 *db = NULL;
        char *err = NULL;

        ck_assert_int_eq(sqlite3_open(c->db, &db), SQLITE_OK);
        sqlite3_busy_timeout(db, 3000);
        ck_assert_msg(sqlite3_exec(db, sql, NULL, NULL, &err) == SQLITE_OK, "%s: %s", sql, err);
        sqlite3_close(db);
}

/* From now on the store refuses every reject (SQLITE_CONSTRAINT: the store fails, exit 12). */
static void refuse_rejects(Ctx *c) {
        sql_exec(c, "CREATE TRIGGER refuse BEFORE INSERT ON rejects"
                    " BEGIN SELECT RAISE(ABORT, 'rejects refused by the test'); END;");
}

/* ---- frames of both formats ---- */

typedef struct FormatCase {
        const char *format;
        const char *lines;            /* written in one go */
        int64_t readings;
        const char *check_sql;        /* must be 1 */
} FormatCase;

static const FormatCase format_cases[] = {
        { "json",
          "{\"sensor\":\"gh1-t3\",\"ts\":1732200000123,\"temperature\":23.5,\"humidity\":61}\n"
          "{\"sensor\":\"gh1-t4\",\"co2\":415}\r\n",
          3,
          "SELECT count(*) = 3 AND sum(sensor = 'gh1-t3' AND metric = 'temperature' AND value = 23.5 AND ts = 1732200000123 AND sensor_ts = 1)"
          " = 1 AND sum(sensor = 'gh1-t4' AND metric = 'co2' AND value = 415 AND sensor_ts = 0 AND ts = received) = 1"
          " AND sum(source = 'serial') = 3 FROM readings_view" },
        { "kv",
          "sensor=gh2-a temperature=19.25 ts=1732200000999\n"
          "sensor=gh2-b moisture=0.31 ec=1.2\n",
          3,
          "SELECT count(*) = 3 AND sum(sensor = 'gh2-a' AND metric = 'temperature' AND value = 19.25 AND ts = 1732200000999 AND sensor_ts = 1)"
          " = 1 AND sum(sensor = 'gh2-b' AND metric = 'ec' AND value = 1.2 AND sensor_ts = 0) = 1 FROM readings_view" },
};

START_TEST(test_formats_end_to_end) {
        const FormatCase *fc = &format_cases[_i];
        char keys[128];
        Ctx c;

        ctx_init(&c, true);
        snprintf(keys, sizeof(keys), "\"format\": \"%s\"", fc->format);
        daemon_start(&c, keys, "");
        wait_ready(&c);
        write_str(&c, fc->lines);
        wait_sql(&c, "SELECT count(*) FROM readings", fc->readings);
        ck_assert_int_eq(tl_sql_int(c.db, fc->check_sql), 1);
        /* origin is the configured device path */
        ck_assert_int_eq(sqlf(&c, "SELECT count(*) FROM readings_view WHERE origin = '%s'", c.pty.device), fc->readings);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM rejects"), 0);
        stop_daemon_ok(&c);
}
END_TEST

START_TEST(test_byte_by_byte) {
        const char *text = "sensor=a t=1\r\nsensor=b t=2\n\nsensor=c t=3\n";
        Ctx c;

        ctx_init(&c, true);
        daemon_start(&c, "\"format\": \"kv\"", "");
        wait_ready(&c);
        for (const char *p = text; *p; p++)
                tl_pty_write(&c.pty, p, 1);
        wait_sql(&c, "SELECT count(*) FROM readings", 3);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT sum(value) FROM readings"), 6);
        /* the blank line is no reject */
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM rejects"), 0);
        stop_daemon_ok(&c);
}
END_TEST

START_TEST(test_garbage_and_overlong) {
        char longline[300], text[2048];
        Ctx c;

        memset(longline, 'x', sizeof(longline) - 1);
        longline[sizeof(longline) - 1] = 0;
        snprintf(text, sizeof(text),
                 "sensor=g1 t=1\n"
                 "%%%%%% garbage %%%%%%\n"
                 "%s\n"
                 "sensor=g2 t=2\n"
                 "\x01\x02\xff\xfe\n"
                 "sensor=g3\n"
                 "sensor=g4 t=abc\n"
                 "%s%s\n"
                 "sensor=g5 t=5\n",
                 longline, longline, longline);
        ctx_init(&c, true);
        daemon_start(&c, "\"format\": \"kv\", \"max_frame_bytes\": 64", "");
        wait_ready(&c);
        write_str(&c, text);
        wait_sql(&c, "SELECT count(*) FROM rejects", 6);
        wait_sql(&c, "SELECT count(*) FROM readings", 3);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT sum(value) FROM readings"), 8);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM rejects WHERE reason = 'too_long' "
                                          "AND raw = CAST(replace(hex(zeroblob(64)), '00', 'x') AS BLOB)"), 2);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM rejects WHERE reason = 'not_utf8' AND hex(raw) = '0102FFFE'"), 1);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM rejects WHERE reason IN ('bad_kv', 'no_metric', 'bad_value')"), 3);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM rejects_view WHERE source = 'serial'"), 6);
        /* rejects are logged at warning with the device */
        ck_assert_int_ge(count_log(&c, "Rejected frame from"), 6);
        /* with the sensor id when the line names one */
        ck_assert_int_eq(count_log(&c, "SENSOR_ID=g4]"), 1);
        ck_assert_int_eq(count_log(&c, "SENSOR_ID="), 2);
        stop_daemon_ok(&c);
}
END_TEST

/* A device that ends frames with CR only: with "line_end": "cr" every frame is a reading, and
 * "\r\n" ends one line (no blank line after it). */
START_TEST(test_cr_line_end) {
        Ctx c;

        ctx_init(&c, true);
        daemon_start(&c, "\"format\": \"kv\", \"line_end\": \"cr\"", "");
        wait_ready(&c);
        write_str(&c, "sensor=c1 t=1\rsensor=c2 t=2\r\nsensor=c3 t=3\r");
        /* the last frame too, with nothing after its '\r' */
        wait_sql(&c, "SELECT count(*) FROM readings", 3);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT sum(value) FROM readings"), 6);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(DISTINCT sensor) FROM readings_view"), 3);
        /* the '\n' of "\r\n" split off into the next write is no line of its own either */
        write_str(&c, "sensor=c4 t=4\r");
        wait_sql(&c, "SELECT count(*) FROM readings", 4);
        write_str(&c, "\nsensor=c5 t=5\r");
        wait_sql(&c, "SELECT count(*) FROM readings", 5);
        stop_daemon_ok(&c);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM rejects"), 0);
        ck_assert_int_eq(count_log(&c, "0 blank lines"), 1);
}
END_TEST

/* The same CR-only device with the default line_end: no newline ever comes, yet a too_long reject
 * (its first max_frame_bytes bytes) is stored and logged as soon as max_frame_bytes have arrived,
 * STATUS= counts it, and the rest is counted as skipped. */
START_TEST(test_cr_only_default_line_end) {
        char frames[1024] = "";
        Ctx c;

        for (int i = 0; i < 20; i++) {
                char one[32];

                snprintf(one, sizeof(one), "sensor=s%d t=%d\r", i % 10, i);
                strcat(frames, one);
        }
        ck_assert_uint_gt(strlen(frames), 64 + 1);
        ctx_init(&c, true);
        daemon_start(&c, "\"format\": \"kv\", \"max_frame_bytes\": 64", "");
        wait_ready(&c);
        write_str(&c, frames);
        wait_sql(&c, "SELECT count(*) FROM rejects WHERE reason = 'too_long' AND length(raw) = 64", 1);
        ck_assert_int_eq(sqlf(&c, "SELECT count(*) FROM rejects WHERE raw = CAST('%.64s' AS BLOB)", frames), 1);
        wait_log(&c, "(too_long, 64 bytes)", 3000);
        wait_log(&c, "set serial.line_end to \"cr\" or \"any\"", 3000);
        ck_assert_msg(tl_notify_wait(&c.d.notify, "0 frames, 1 reject, 0 reopens", 3000), "%s", c.d.notify.log);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM readings"), 0);

        /* still no newline: the line goes on and is not stored twice */
        write_str(&c, frames);
        {
                char want[96];

                snprintf(want, sizeof(want), "%zu bytes of overlong lines skipped", 2 * strlen(frames) - 64);
                ck_assert_msg(tl_notify_wait(&c.d.notify, want, 3000), "%s", c.d.notify.log);
        }
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM rejects"), 1);
        /* a newline ends the overlong line; what follows is read as usual */
        write_str(&c, "\nsensor=n1 t=7\n");
        wait_sql(&c, "SELECT count(*) FROM readings", 1);
        stop_daemon_ok(&c);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM rejects"), 1);
        ck_assert_int_eq(count_log(&c, "set serial.line_end"), 1);
}
END_TEST

START_TEST(test_reject_log_ratelimit) {
        char text[8192] = "";
        Ctx c;

        for (int i = 0; i < 50; i++)
                strcat(text, "not a frame\n");
        ctx_init(&c, true);
        daemon_start(&c, "\"format\": \"kv\"", "");
        wait_ready(&c);
        write_str(&c, text);
        wait_sql(&c, "SELECT count(*) FROM rejects", 50);
        /* everything stored, but only a burst logged */
        ck_assert_int_le(count_log(&c, "Rejected frame from"), 10);
        ck_assert_int_ge(count_log(&c, "Rejected frame from"), 1);
        stop_daemon_ok(&c);
        /* what was held back is told at the latest when the port closes */
        ck_assert_int_eq(count_log(&c, "Suppressed 40 messages about rejected frames"), 1);
}
END_TEST

/* A burst of rejects followed by silence: the count of messages held back is logged when the
 * rate limit's interval (10 s) ends, not only with a later reject or at stop. The one slow
 * test here (it mostly waits); sd-event's timers do not run under libfaketime. */
START_TEST(test_reject_log_suppressed_after_burst) {
        char text[8192] = "";
        int64_t t0;
        Ctx c;

        for (int i = 0; i < 30; i++)
                strcat(text, "not a frame\n");
        ctx_init(&c, true);
        daemon_start(&c, "\"format\": \"kv\"", "");
        wait_ready(&c);
        t0 = tl_now_ms();
        write_str(&c, text);
        wait_sql(&c, "SELECT count(*) FROM rejects", 30);
        wait_log(&c, "Suppressed 20 messages about rejected frames", 13000);
        ck_assert_int_ge(tl_now_ms() - t0, 9000);
        ck_assert_int_eq(tl_wait(c.d.pid, 1), -ETIMEDOUT);         /* still running */
        stop_daemon_ok(&c);
        ck_assert_int_eq(count_log(&c, "Suppressed"), 1);
}
END_TEST

static void nmea_line(char *buf, size_t size, const char *body) {
        uint8_t x = 0;

        for (const char *p = body; *p; p++)
                x ^= (uint8_t) *p;
        snprintf(buf, size, "%s*%02X\n", body, x);
}

START_TEST(test_checksum) {
        char good1[128], good2[128], bad[128], text[512];
        Ctx c;

        nmea_line(good1, sizeof(good1), "sensor=n1 t=10");
        nmea_line(good2, sizeof(good2), "sensor=n2 t=20");
        nmea_line(bad, sizeof(bad), "sensor=n3 t=30");
        bad[strlen(bad) - 2] ^= 1; /* flip a bit of the checksum */
        snprintf(text, sizeof(text), "%s%ssensor=n4 t=40\n%s", good1, bad, good2);

        ctx_init(&c, true);
        daemon_start(&c, "\"format\": \"kv\", \"checksum\": \"nmea\"", "");
        wait_ready(&c);
        write_str(&c, text);
        wait_sql(&c, "SELECT count(*) FROM rejects", 2);
        wait_sql(&c, "SELECT count(*) FROM readings", 2);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT sum(value) FROM readings"), 30);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM rejects WHERE reason = 'bad_checksum'"), 2);
        stop_daemon_ok(&c);
}
END_TEST

/* ---- the port coming and going ---- */

START_TEST(test_ready_waits_for_device) {
        Ctx c;

        ctx_init(&c, false);
        daemon_start(&c, "\"format\": \"kv\", \"reopen_timeout\": 20", "");
        wait_log(&c, "waiting for it", 5000);
        /* no READY while the port is missing (give the loop time to misbehave) */
        ck_assert(!tl_notify_wait(&c.d.notify, "READY=1", 700));
        ck_assert(tl_notify_wait(&c.d.notify, "waiting for", 2000));

        tl_pty_start(&c.pty, c.dir);
        wait_ready(&c);
        write_str(&c, "sensor=late t=1\n");
        wait_sql(&c, "SELECT count(*) FROM readings", 1);
        stop_daemon_ok(&c);
}
END_TEST

START_TEST(test_missing_device_gives_up) {
        int64_t t0;
        char *log;
        Ctx c;

        ctx_init(&c, false);
        t0 = tl_now_ms();
        daemon_start(&c, "\"reopen_timeout\": 0.8", "");
        ck_assert_int_eq(tl_daemon_wait(&c.d, 10000), 10);
        ck_assert_int_ge(tl_now_ms() - t0, 700);
        ck_assert(!strstr(c.d.notify.log, "READY=1"));
        ck_assert(strstr(c.d.notify.log, "STOPPING=1"));
        log = tl_daemon_log(&c.d);
        ck_assert_msg(strstr(log, "not available for"), "%s", log);
        free(log);
}
END_TEST

START_TEST(test_not_a_serial_port) {
        char *log;
        Ctx c;

        ctx_init(&c, false);
        snprintf(c.pty.device, sizeof(c.pty.device), "/dev/null");
        daemon_start(&c, "\"reopen_timeout\": 30", "");
        ck_assert_int_eq(tl_daemon_wait(&c.d, 5000), 10);
        log = tl_daemon_log(&c.d);
        ck_assert_msg(strstr(log, "not a serial port"), "%s", log);
        free(log);
}
END_TEST

START_TEST(test_reopen_after_loss) {
        Ctx c;

        ctx_init(&c, true);
        daemon_start(&c, "\"format\": \"kv\", \"reopen_timeout\": 20", "");
        wait_ready(&c);
        write_str(&c, "sensor=r v=1\nsensor=r v=2\nsensor=r v=3\nsensor=r v=");
        wait_sql(&c, "SELECT count(*) FROM readings", 3);

        /* the adapter goes away with half a line pending: kept as a truncated reject */
        tl_pty_stop(&c.pty);
        wait_log(&c, "hung up", 5000);
        wait_sql(&c, "SELECT count(*) FROM rejects WHERE reason = 'truncated' AND raw = CAST('sensor=r v=' AS BLOB)", 1);
        ck_assert(tl_notify_wait(&c.d.notify, "reopening", 3000));

        /* it comes back: frames written at once are not lost, and nothing is stored twice */
        tl_pty_start(&c.pty, c.dir);
        write_str(&c, "sensor=r v=4\n");
        wait_log(&c, "Reopened serial port", 5000);
        write_str(&c, "sensor=r v=5\nsensor=r v=6\n");
        wait_sql(&c, "SELECT count(*) FROM readings", 6);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(DISTINCT value) FROM readings"), 6);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT sum(value) FROM readings"), 21);
        ck_assert(tl_notify_wait(&c.d.notify, "1 reopen", 3000));
        stop_daemon_ok(&c);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM readings"), 6);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM rejects"), 1);
}
END_TEST

START_TEST(test_gone_for_good) {
        int64_t t0;
        char *log;
        Ctx c;

        ctx_init(&c, true);
        daemon_start(&c, "\"format\": \"kv\", \"reopen_timeout\": 1", "");
        wait_ready(&c);
        write_str(&c, "sensor=x v=1\n");
        wait_sql(&c, "SELECT count(*) FROM readings", 1);
        tl_pty_stop(&c.pty);
        t0 = tl_now_ms();
        ck_assert_int_eq(tl_daemon_wait(&c.d, 10000), 10);
        ck_assert_int_ge(tl_now_ms() - t0, 800);
        ck_assert_int_le(tl_now_ms() - t0, 4000);
        ck_assert(strstr(c.d.notify.log, "STOPPING=1"));
        log = tl_daemon_log(&c.d);
        ck_assert_msg(strstr(log, "Task serial failed: Serial port") && strstr(log, "gone for"), "%s", log);
        /* logged once, by the supervisor */
        ck_assert_int_eq(count_log(&c, "gone for"), 1);
        free(log);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM readings"), 1);
}
END_TEST

START_TEST(test_idle_reopen) {
        Ctx c;

        ctx_init(&c, true);
        daemon_start(&c, "\"format\": \"kv\", \"idle_timeout\": 0.3", "");
        wait_ready(&c);
        wait_log(&c, "No data from serial port", 3000);
        wait_log(&c, "Reopened serial port", 3000);
        write_str(&c, "sensor=i v=7\n");
        wait_sql(&c, "SELECT count(*) FROM readings", 1);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT sum(value) FROM readings"), 7);
        stop_daemon_ok(&c);
}
END_TEST

/* The store fails while the port closes with half a line pending (its truncated reject is
 * refused): the task stops reading at once, like for any record the store refuses, instead of
 * leaving the port open (and reopening it after a hangup) until the supervisor stops it. */
START_TEST(test_store_fails_on_partial_line) {
        static const char *const keys[] = {
                "\"format\": \"kv\", \"idle_timeout\": 0.3",       /* the idle reopen closes the port */
                "\"format\": \"kv\", \"reopen_timeout\": 20",      /* the adapter goes away */
        };
        char *log;
        int status;
        Ctx c;

        ctx_init(&c, true);
        daemon_start(&c, keys[_i], "");
        wait_ready(&c);
        write_str(&c, "sensor=p v=1\n");
        wait_sql(&c, "SELECT count(*) FROM readings", 1);
        refuse_rejects(&c);
        /* One write: the frame and the half line arrive together, so once the frame is
         * stored the half line is pending in the daemon. */
        write_str(&c, "sensor=p v=2\nsensor=p v=");
        wait_sql(&c, "SELECT count(*) FROM readings", 2);
        if (_i == 1)
                tl_pty_stop(&c.pty);
        status = tl_daemon_wait(&c.d, 10000);
        log = tl_daemon_log(&c.d);
        ck_assert_msg(status == 12, "exit status %d; log:\n%s", status, log);
        ck_assert_msg(strstr(log, "Task store failed: Failed to write a reject to") &&
                              strstr(log, "rejects refused by the test"),
                      "%s", log);
        ck_assert_msg(strstr(log, "Store refused a record, no longer reading"), "%s", log);
        /* ...and does not go on to reopen the port */
        ck_assert_msg(!strstr(log, "; reopening, giving up") && !strstr(log, "did not reopen"), "%s", log);
        free(log);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM readings"), 2);
}
END_TEST

/* An idle reopen that fails hands over to the reopen cycle; the reopen that then succeeds is
 * one reopen, not two. */
START_TEST(test_failed_idle_reopen_counts_once) {
        char away[320];
        Ctx c;

        ctx_init(&c, true);
        daemon_start(&c, "\"format\": \"kv\", \"idle_timeout\": 1, \"reopen_timeout\": 20", "");
        wait_ready(&c);
        /* The device node goes away without a hangup (the pty stays), so only the idle timer
         * notices: its reopen finds nothing. */
        snprintf(away, sizeof(away), "%s.away", c.pty.link);
        ck_assert_int_eq(rename(c.pty.link, away), 0);
        wait_log(&c, "did not reopen", 5000);
        ck_assert_int_eq(rename(away, c.pty.link), 0);
        wait_log(&c, "Reopened serial port", 5000);
        write_str(&c, "sensor=o v=1\n");
        wait_sql(&c, "SELECT count(*) FROM readings", 1);
        ck_assert_msg(tl_notify_wait(&c.d.notify, "1 frame, 0 rejects, 1 reopen\n", 3000), "%s", c.d.notify.log);
        stop_daemon_ok(&c);
        ck_assert_int_eq(count_log(&c, "1 reopen)."), 1);
}
END_TEST

/* A port that stays open but silent: degraded from the first idle reopen, failed (exit 10)
 * once nothing came for idle_timeout + reopen_timeout. */
START_TEST(test_silent_port_fails) {
        int64_t t0, elapsed;
        char *log;
        int status;
        Ctx c;

        ctx_init(&c, true);
        daemon_start(&c, "\"format\": \"kv\", \"idle_timeout\": 0.3, \"reopen_timeout\": 0.5", "");
        wait_ready(&c);
        t0 = tl_now_ms();
        ck_assert_msg(tl_notify_wait(&c.d.notify, "serial: no data from", 3000), "%s", c.d.notify.log);
        status = tl_daemon_wait(&c.d, 5000);
        elapsed = tl_now_ms() - t0;
        log = tl_daemon_log(&c.d);
        ck_assert_msg(status == 10, "exit status %d; log:\n%s", status, log);
        /* at 800 ms after the open, not at the first idle reopen (300 ms) */
        ck_assert_msg(elapsed >= 500 && elapsed <= 3000, "failed after %" PRId64 " ms", elapsed);
        ck_assert_msg(strstr(log, "Task serial failed: No data from serial port") && strstr(log, "idle reopen"),
                      "%s", log);
        ck_assert_msg(strstr(log, "giving up after 800ms without data"), "%s", log);
        free(log);
        ck_assert(strstr(c.d.notify.log, "STOPPING=1"));
}
END_TEST

/* Bytes end the degraded state and restart the clock: a port that talks now and then, less
 * often than idle_timeout, is reopened but never given up on. */
START_TEST(test_silent_port_recovers) {
        /* reopen_timeout is what the test has to answer a reopen in: 2 s holds on a busy
         * machine. It talks until more than idle_timeout + reopen_timeout have passed since the
         * start (and at least three times), so that a daemon counting from the start would have
         * given up. */
        const int64_t give_up_ms = 300 + 2000;
        int64_t start;
        int n = 0;
        Ctx c;

        ctx_init(&c, true);
        daemon_start(&c, "\"format\": \"kv\", \"idle_timeout\": 0.3, \"reopen_timeout\": 2", "");
        wait_ready(&c);
        start = tl_now_ms();
        while (n < 3 || tl_now_ms() - start <= give_up_ms + 500) {
                char line[64];

                ck_assert_int_lt(n, 100);
                /* wait for the idle reopen (degraded), then talk: running again */
                ck_assert_msg(tl_notify_wait(&c.d.notify, "serial: no data from", 5000), "%s", c.d.notify.log);
                c.d.notify.len = 0;     /* from here on, only what comes next */
                c.d.notify.log[0] = 0;
                snprintf(line, sizeof(line), "sensor=q v=%d\n", ++n);
                write_str(&c, line);
                ck_assert_msg(tl_notify_wait(&c.d.notify, "serial: running on", 5000), "%s", c.d.notify.log);
                c.d.notify.len = 0;
                c.d.notify.log[0] = 0;
        }
        ck_assert_int_eq(count_log(&c, "delivers data again"), n);
        /* more than idle_timeout + reopen_timeout since start: still alive */
        ck_assert_int_eq(tl_wait(c.d.pid, 1), -ETIMEDOUT);
        wait_sql(&c, "SELECT count(*) FROM readings", n);
        stop_daemon_ok(&c);
}
END_TEST

START_TEST(test_sigterm_commits) {
        Ctx c;

        ctx_init(&c, true);
        /* nothing commits on its own within the test: only the stop does */
        daemon_start(&c, "\"format\": \"kv\"", "\"commit_interval_ms\": 10000, \"commit_max_rows\": 100000");
        wait_ready(&c);
        write_str(&c, "sensor=s v=1\nsensor=s v=2\nsensor=s v=3\nsensor=s v=4\nsensor=s v=5\nsensor=s v=");
        ck_assert(tl_notify_wait(&c.d.notify, "running on", 3000));
        ck_assert_msg(tl_notify_wait(&c.d.notify, "5 frames", 3000), "%s", c.d.notify.log);
        stop_daemon_ok(&c);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM readings"), 5);
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(*) FROM rejects WHERE reason = 'truncated'"), 1);
}
END_TEST

/* ---- line settings: applied to the pty the daemon opened ---- */

/* struct termios2 of the kernel (asm/termbits.h cannot be included next to <termios.h>): the
 * actual speed of a custom baud rate lives in c_ispeed/c_ospeed. */
struct kernel_termios2 {
        tcflag_t c_iflag, c_oflag, c_cflag, c_lflag;
        cc_t c_line;
        cc_t c_cc[19];
        speed_t c_ispeed, c_ospeed;
};
#define SC_TCGETS2 _IOR('T', 0x2A, struct kernel_termios2)

typedef struct LineCase {
        const char *keys;
        unsigned baud;
        tcflag_t csize;
        tcflag_t parity;              /* PARENB | PARODD | CMSPAR bits expected */
        bool cstopb;
        bool crtscts;
        bool ixon_ixoff;
} LineCase;

static const LineCase line_cases[] = {
        { "\"baud\": 9600, \"data_bits\": 8, \"parity\": \"none\", \"stop_bits\": 1, \"flow_control\": \"none\"",
          9600, CS8, 0, false, false, false },
        { "\"baud\": 115200, \"data_bits\": 7, \"parity\": \"even\", \"stop_bits\": 2, \"flow_control\": \"xonxoff\"",
          115200, CS7, PARENB, true, false, true },
        { "\"baud\": 19200, \"data_bits\": 8, \"parity\": \"odd\", \"stop_bits\": 1, \"flow_control\": \"rtscts\"",
          19200, CS8, PARENB | PARODD, false, true, false },
        { "\"baud\": 250000, \"custom_baud\": true, \"data_bits\": 6, \"parity\": \"mark\", \"stop_bits\": 1, "
          "\"flow_control\": \"none\"",
          250000, CS6, PARENB | PARODD | CMSPAR, false, false, false },
        { "\"baud\": 1200, \"data_bits\": 5, \"parity\": \"space\", \"stop_bits\": 2, \"flow_control\": \"none\"",
          1200, CS5, PARENB | CMSPAR, true, false, false },
};

START_TEST(test_line_settings) {
        const LineCase *lc = &line_cases[_i];
        struct kernel_termios2 t2;
        unsigned cflag, iflag, modem;
        struct termios t;
        char keys[512], *rec;
        int fd;
        Ctx c;

        ctx_init(&c, true);
        snprintf(keys, sizeof(keys), "\"format\": \"kv\", %s", lc->keys);
        daemon_start(&c, keys, "");
        wait_ready(&c);

        /* the settings live on the pty the daemon holds open: read them there */
        fd = open(c.pty.link, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
        ck_assert_msg(fd >= 0, "open %s: %m", c.pty.link);
        ck_assert_int_eq(tcgetattr(fd, &t), 0);
        ck_assert_int_eq(ioctl(fd, SC_TCGETS2, &t2), 0);
        close(fd);
        /* a pty keeps neither CSIZE nor PARENB: what the daemon asked for, the shim recorded */
        rec = tl_read_file(c.record);
        ck_assert_msg(rec && sscanf(rec, "cflag=%o iflag=%o modem=%x", &cflag, &iflag, &modem) == 3, "record: %s", rec);
        free(rec);

        ck_assert_uint_eq(t2.c_ospeed, lc->baud);
        ck_assert_uint_eq(cflag & CSIZE, lc->csize);
        ck_assert_uint_eq(cflag & (PARENB | PARODD | CMSPAR), lc->parity);
        ck_assert_uint_eq(t.c_cflag & (PARODD | CMSPAR), lc->parity & (PARODD | CMSPAR));
        ck_assert_uint_eq(!!(cflag & CSTOPB), lc->cstopb);
        ck_assert_uint_eq(!!(t.c_cflag & CSTOPB), lc->cstopb);
        ck_assert_uint_eq(!!(t.c_cflag & CRTSCTS), lc->crtscts);
        ck_assert_uint_eq(!!(t.c_iflag & IXON), lc->ixon_ixoff);
        ck_assert_uint_eq(!!(t.c_iflag & IXOFF), lc->ixon_ixoff);
        /* DTR raised; RTS too, unless the UART drives it for flow control */
        ck_assert(modem & TIOCM_DTR);
        if (!lc->crtscts)
                ck_assert(modem & TIOCM_RTS);
        ck_assert(t.c_cflag & CREAD);
        ck_assert(!(t.c_lflag & ICANON));

        /* and reading works with them */
        write_str(&c, "sensor=l v=1\n");
        wait_sql(&c, "SELECT count(*) FROM readings", 1);
        stop_daemon_ok(&c);
}
END_TEST

/* ---- list-ports ---- */

START_TEST(test_list_ports) {
        char *argv[] = { SC_BINARY, "list-ports", NULL };
        char *bad[] = { SC_BINARY, "list-ports", "--bogus", NULL };
        char *out = NULL;

        ck_assert_int_eq(tl_run(argv, NULL, &out, 5000), 0);
        ck_assert_msg(strstr(out, "No serial ports found.") || strstr(out, "/dev/"), "%s", out);
        free(out);
        ck_assert_int_eq(tl_run(bad, NULL, &out, 5000), 64);
        ck_assert_msg(strstr(out, "unexpected argument"), "%s", out);
        free(out);
}
END_TEST

static Suite *serial_suite(void) {
        Suite *s = suite_create("serial");
        TCase *tc;

        tc = tcase_create("frames");
        tcase_set_timeout(tc, 30);
        tcase_add_loop_test(tc, test_formats_end_to_end, 0, ELEMENTSOF(format_cases));
        tcase_add_test(tc, test_byte_by_byte);
        tcase_add_test(tc, test_garbage_and_overlong);
        tcase_add_test(tc, test_cr_line_end);
        tcase_add_test(tc, test_cr_only_default_line_end);
        tcase_add_test(tc, test_reject_log_ratelimit);
        tcase_add_test(tc, test_checksum);
        suite_add_tcase(s, tc);

        tc = tcase_create("port");
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_ready_waits_for_device);
        tcase_add_test(tc, test_missing_device_gives_up);
        tcase_add_test(tc, test_not_a_serial_port);
        tcase_add_test(tc, test_reopen_after_loss);
        tcase_add_test(tc, test_gone_for_good);
        tcase_add_test(tc, test_idle_reopen);
        tcase_add_test(tc, test_sigterm_commits);
        tcase_add_loop_test(tc, test_store_fails_on_partial_line, 0, 2);
        tcase_add_test(tc, test_failed_idle_reopen_counts_once);
        tcase_add_test(tc, test_silent_port_fails);
        tcase_add_test(tc, test_silent_port_recovers);
        suite_add_tcase(s, tc);

        tc = tcase_create("slow");
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_reject_log_suppressed_after_burst);
        suite_add_tcase(s, tc);

        tc = tcase_create("settings");
        tcase_set_timeout(tc, 30);
        tcase_add_loop_test(tc, test_line_settings, 0, ELEMENTSOF(line_cases));
        tcase_add_test(tc, test_list_ports);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(serial_suite());
}
