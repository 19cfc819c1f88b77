/* SPDX-License-Identifier: MIT */
/* The clock end to end: a daemon whose wall clock is wrong, then stepped and synchronised, reading a pty into a real store. */
#include <check.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "collector/macro.h"
#include "testlib.h"

/* The machine's clock is never touched: a preloaded shim (tests/lib/clockshim.c) shifts
 * CLOCK_REALTIME of the daemon alone, by the offset in a file it reads at every call, and
 * leaves CLOCK_MONOTONIC and CLOCK_BOOTTIME real. What the daemon takes for
 * timesyncd's runtime directory is the test's own ($SENSOR_COLLECTOR_TIMESYNC_DIR), so the
 * test decides when the clock is synchronised; $SENSOR_COLLECTOR_BOOT_ID makes a restart a
 * new boot. docs/TESTING.md says what this leaves out. */
#define DAY_MS ((int64_t) 24 * 3600 * 1000)
#define BOOT_A "0123456789abcdef0123456789abcdef"
#define BOOT_B "fedcba9876543210fedcba9876543210"

typedef struct Ctx {
        const char *dir;
        TlPty pty;
        TlDaemon d;
        char db[400];
        char offset[400];             /* the shim's offset file */
        char timesync[400];           /* the daemon's "timesyncd runtime directory" */
} Ctx;

static int64_t real_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The daemon's wall clock from now on: the real one shifted by offset_ms. */
static void set_offset(Ctx *c, int64_t offset_ms) {
        char tmp[420];
        FILE *f;

        /* Renamed into place: the daemon never reads half a file. */
        snprintf(tmp, sizeof(tmp), "%s.new", c->offset);
        f = fopen(tmp, "w");
        ck_assert_ptr_nonnull(f);
        fprintf(f, "%" PRId64 "\n", offset_ms);
        ck_assert_int_eq(fclose(f), 0);
        ck_assert_int_eq(rename(tmp, c->offset), 0);
}

/* What timesyncd does at every synchronisation: touch its "synchronized" file. */
static void declare_synchronised(Ctx *c) {
        char path[450];

        snprintf(path, sizeof(path), "%s/synchronized", c->timesync);
        tl_write_file(c->timesync, "synchronized", "");
}

static void ctx_init(Ctx *c) {
        memset(c, 0, sizeof(*c));
        c->dir = tl_tmpdir();
        tl_pty_start(&c->pty, c->dir);
        snprintf(c->db, sizeof(c->db), "%s/readings.db", c->dir);
        snprintf(c->offset, sizeof(c->offset), "%s/clock-offset", c->dir);
        snprintf(c->timesync, sizeof(c->timesync), "%s/timesync", c->dir);
        ck_assert_int_eq(mkdir(c->timesync, 0755), 0);
}

/* Starts a serial-only daemon with the shifted clock as boot boot_id; clock_keys are extra
 * JSON members of "clock" (may be empty). Only the daemon is preloaded: socat, the test and
 * SQLite here keep the real clock. */
static void daemon_start(Ctx *c, const char *boot_id, const char *clock_keys) {
        char json[2048], ft_env[450], ts_env[450], boot_env[100];
        char *env[] = { ft_env, ts_env, boot_env, NULL };
        const char *old = getenv("LD_PRELOAD");
        char *saved = old ? strdup(old) : NULL;

        snprintf(ft_env, sizeof(ft_env), "SC_CLOCKSHIM_FILE=%s", c->offset);
        snprintf(ts_env, sizeof(ts_env), "SENSOR_COLLECTOR_TIMESYNC_DIR=%s", c->timesync);
        snprintf(boot_env, sizeof(boot_env), "SENSOR_COLLECTOR_BOOT_ID=%s", boot_id);
        snprintf(json, sizeof(json),
                 "{\n"
                 "  \"serial\": { \"enabled\": true, \"device\": \"%s\" },\n"
                 "  \"mqtt\": { \"enabled\": false },\n"
                 "  \"store\": { \"path\": \"%s\", \"retention_days\": 30 },\n"
                 "  \"clock\": { %s },\n"
                 "  \"log\": { \"level\": \"debug\" },\n"
                 "  \"supervisor\": { \"status_interval\": 0.1, \"stop_timeout\": 5 }\n"
                 "}\n",
                 c->pty.device, c->db, clock_keys);
        /* testlib puts what LD_PRELOAD holds between the sanitizer runtime and the pty shim. */
        ck_assert_int_eq(setenv("LD_PRELOAD", SC_CLOCKSHIM, 1), 0);
        tl_daemon_start(&c->d, c->dir, json, NULL, env);
        if (saved)
                setenv("LD_PRELOAD", saved, 1);
        else
                unsetenv("LD_PRELOAD");
        free(saved);
        tl_daemon_expect_ready(&c->d, 10000);
}

static void daemon_stop(Ctx *c) {
        tl_daemon_stop_ok(&c->d, 10000);
        tl_notify_close(&c->d.notify);
}

static void write_str(Ctx *c, const char *s) {
        tl_pty_write(&c->pty, s, strlen(s));
}

static void wait_sql(Ctx *c, const char *sql, int64_t want) {
        tl_daemon_expect_sql(&c->d, c->db, sql, want, false, 10000);
}

static void wait_log(Ctx *c, const char *needle) {
        tl_daemon_expect_log(&c->d, needle, 10000);
}

static void wait_status(Ctx *c, const char *needle) {
        if (!tl_notify_wait(&c->d.notify, needle, 10000)) {
                char *log = tl_daemon_log(&c->d);
                ck_abort_msg("no '%s' in the notifications:\n%s\ndaemon log:\n%s", needle, c->d.notify.log, log);
        }
}

static int64_t q(Ctx *c, const char *sql) {
        return tl_sql_int(c->db, sql);
}

/* `sensor-collector query --db DB --utc ARGS...`: asserts it succeeds, returns its output. */
static char *query(Ctx *c, const char *a1, const char *a2, const char *a3, const char *a4) {
        char *argv[] = { SC_BINARY, "query", "--db", c->db, "--utc", (char *) a1, (char *) a2, (char *) a3, (char *) a4, NULL };
        char *out = NULL;

        ck_assert_int_eq(tl_run(argv, NULL, &out, 10000), 0);
        ck_assert_ptr_nonnull(out);
        return out;
}

/* Wrong and unsynchronised at start, a restart that is a new boot, then stepped and
 * synchronised: this boot's readings get their true times, the earlier boot's stay unsynced. */
START_TEST(test_wrong_clock_then_synchronised) {
        int64_t t_before_b, t_after_b, now;
        Ctx c;

        ctx_init(&c);
        set_offset(&c, -1000 * DAY_MS);

        /* Boot A: timesyncd "runs" (its directory exists) but has not synchronised. */
        daemon_start(&c, BOOT_A, "");
        wait_log(&c, "Clock is not trusted: systemd-timesyncd runs but has not synchronised it yet");
        write_str(&c, "{\"sensor\":\"a1\",\"temp\":1}\n{\"sensor\":\"a2\",\"temp\":2}\n");
        wait_sql(&c, "SELECT count(*) FROM readings_view WHERE unsynced AND NOT corrected", 2);
        wait_status(&c, "clock: not synchronised, 2 readings wait for correction");
        now = real_ms();
        /* Stamped with the wrong clock, stored at once. */
        ck_assert_int_lt(q(&c, "SELECT max(received) FROM readings"), now - 999 * DAY_MS);
        ck_assert_int_eq(q(&c, "SELECT count(*) FROM readings WHERE boottime IS NULL"), 0);
        daemon_stop(&c);

        /* Boot B, still wrong and unsynchronised. */
        daemon_start(&c, BOOT_B, "");
        t_before_b = real_ms();
        write_str(&c, "{\"sensor\":\"b1\",\"temp\":3}\n{\"sensor\":\"b2\",\"temp\":4}\n");
        write_str(&c, "{\"sensor\":\"b3\",\"ts\":1732200000123,\"temp\":5}\n");
        wait_sql(&c, "SELECT count(*) FROM readings_view WHERE sensor LIKE 'b%' AND unsynced", 3);
        t_after_b = real_ms();
        /* Not trusted: the sensor's time is not judged. */
        ck_assert_int_eq(q(&c, "SELECT suspect_ts FROM readings_view WHERE sensor = 'b3'"), 0);

        /* timesyncd steps the clock and declares it synchronised. */
        set_offset(&c, 0);
        declare_synchronised(&c);
        wait_log(&c, "Clock stepped by +");
        wait_log(&c, "Clock is trusted now: systemd-timesyncd has synchronised it");
        wait_sql(&c, "SELECT count(*) FROM readings_view WHERE sensor LIKE 'b%' AND corrected", 3);
        wait_log(&c, "Corrected the receipt times of 3 readings of this boot");
        wait_status(&c, "clock: synchronised");

        /* True times, within what the test saw (the boot clock is exact to the ms). */
        ck_assert_int_ge(q(&c, "SELECT min(received) FROM readings_view WHERE sensor LIKE 'b%'"), t_before_b - 1);
        ck_assert_int_le(q(&c, "SELECT max(received) FROM readings_view WHERE sensor LIKE 'b%'"), t_after_b + 1);
        ck_assert_int_eq(q(&c, "SELECT count(*) FROM readings_view WHERE sensor IN ('b1', 'b2') AND ts != received"), 0);
        /* The sensor's own time is the sensor's. */
        ck_assert_int_eq(q(&c, "SELECT ts FROM readings_view WHERE sensor = 'b3'"), 1732200000123);
        /* The earlier boot's readings cannot be fixed: unsynced for good, and kept. */
        ck_assert_int_eq(q(&c, "SELECT count(*) FROM readings_view WHERE sensor LIKE 'a%' AND unsynced AND NOT corrected"), 2);
        ck_assert_int_lt(q(&c, "SELECT max(received) FROM readings_view WHERE sensor LIKE 'a%'"), real_ms() - 999 * DAY_MS);
        ck_assert_int_eq(q(&c, "SELECT count(*) FROM clock_events WHERE kind = 'step' AND step_ms > 999 * 86400000"), 1);
        ck_assert_int_eq(q(&c, "SELECT count(*) FROM clock_events WHERE kind = 'trusted' AND readings = 3"), 1);
        /* What each run decided at start: boot A's, and boot B's with A's two readings not its own. */
        ck_assert_int_eq(q(&c, "SELECT count(*) FROM clock_events WHERE kind = 'untrusted' AND readings = 0"), 2);
        ck_assert_int_eq(q(&c, "SELECT count(DISTINCT boot) FROM clock_events WHERE kind = 'untrusted'"), 2);
        ck_assert_int_eq(q(&c, "SELECT count(*) FROM clock_events WHERE kind = 'corrected' AND readings = 3"), 1);
        /* Each stands among the readings (retention judges them by that, not by their times);
         * boot A's stay with its readings that age retention keeps, and so does its row. */
        ck_assert_int_eq(q(&c, "SELECT count(*) FROM clock_events WHERE seq IS NULL"), 0);
        ck_assert_int_eq(q(&c, "SELECT count(*) FROM clock_events WHERE kind = 'corrected' AND seq >= "
                               "(SELECT max(id) FROM readings_view WHERE sensor LIKE 'b%')"), 1);
        ck_assert_int_eq(q(&c, "SELECT count(*) FROM boots"), 2);

        /* query shows and filters the flags. */
        {
                char *out = query(&c, "--flag", "corrected", "--format", "csv");
                ck_assert_msg(strstr(out, ",b1,temp,3,false,") && strstr(out, ",unsynced corrected\n") &&
                                      !strstr(out, ",a1,"),
                              "%s", out);
                free(out);
                out = query(&c, "--flag", "unsynced", "-o", "json");
                ck_assert_msg(strstr(out, "\"sensor\":\"a1\"") && strstr(out, "\"flags\":\"unsynced\"}") &&
                                      !strstr(out, "\"b1\""),
                              "%s", out);
                free(out);
                out = query(&c, "--sensor", "a1", NULL, NULL);
                ck_assert_msg(strstr(out, "Z ?  a1"), "%s", out);
                free(out);
                out = query(&c, "--sensor", "b1", NULL, NULL);
                ck_assert_msg(strstr(out, "Z ~  b1"), "%s", out);
                free(out);
        }

        /* From now on readings are trusted as they come. */
        write_str(&c, "{\"sensor\":\"c1\",\"temp\":6}\n");
        wait_sql(&c, "SELECT count(*) FROM readings_view WHERE sensor = 'c1' AND NOT unsynced", 1);
        ck_assert_int_eq(q(&c, "SELECT boottime IS NULL FROM readings_view JOIN readings USING (id) WHERE sensor = 'c1'"), 1);

        /* Retention by age (30 days) ran meanwhile: the 1000-day-old unsynced times are not its business. */
        daemon_stop(&c);
        ck_assert_int_eq(q(&c, "SELECT count(*) FROM readings"), 6);
        tl_pty_stop(&c.pty);
}
END_TEST

/* A step backwards while trusted is told, recorded, and changes no stored reading; sensor
 * times outside the tolerance are flagged and logged. */
START_TEST(test_step_back_while_synchronised_and_suspect_sensor_times) {
        char frame[256];
        int64_t now, received_before;
        Ctx c;

        ctx_init(&c);
        set_offset(&c, 0);
        declare_synchronised(&c);
        daemon_start(&c, BOOT_A, "\"sensor_ts_tolerance\": 3600");
        wait_log(&c, "Clock is trusted: systemd-timesyncd has synchronised it");

        now = real_ms();
        /* Two hours ahead and two hours behind are suspect with a tolerance of one hour; ten
         * minutes off is not. */
        snprintf(frame, sizeof(frame),
                 "{\"sensor\":\"ahead\",\"ts\":%" PRId64 ",\"temp\":1}\n{\"sensor\":\"behind\",\"ts\":%" PRId64
                 ",\"temp\":2}\n{\"sensor\":\"fine\",\"ts\":%" PRId64 ",\"temp\":3}\n{\"sensor\":\"r1\",\"temp\":4}\n",
                 now + 2 * 3600000, now - 2 * 3600000, now - 600000);
        write_str(&c, frame);
        wait_sql(&c, "SELECT count(*) FROM readings", 4);
        ck_assert_int_eq(q(&c, "SELECT count(*) FROM readings_view WHERE suspect_ts"), 2);
        ck_assert_int_eq(q(&c, "SELECT count(*) FROM readings_view WHERE suspect_ts AND sensor IN ('ahead', 'behind')"), 2);
        ck_assert_int_eq(q(&c, "SELECT count(*) FROM readings_view WHERE unsynced"), 0);
        wait_log(&c, "Sensor 'ahead'");
        wait_log(&c, "flagged \"suspect_ts\"");
        received_before = q(&c, "SELECT received FROM readings_view WHERE sensor = 'r1'");
        {
                char *out = query(&c, "--flag", "suspect_ts", "-o", "csv");
                ck_assert_msg(strstr(out, ",ahead,temp,1,true,") && strstr(out, ",behind,temp,2,true,") &&
                                      strstr(out, ",suspect_ts\n") && !strstr(out, ",fine,"),
                              "%s", out);
                free(out);
        }

        /* NTP steps the clock back an hour, still synchronised (timesyncd touches its file). */
        set_offset(&c, -3600000);
        declare_synchronised(&c);
        wait_log(&c, "Clock stepped by -1h while trusted; readings stored before keep their times");
        wait_sql(&c, "SELECT count(*) FROM clock_events WHERE kind = 'step' AND step_ms BETWEEN -3601000 AND -3599000", 1);
        write_str(&c, "{\"sensor\":\"r2\",\"temp\":5}\n");
        wait_sql(&c, "SELECT count(*) FROM readings_view WHERE sensor = 'r2'", 1);
        ck_assert_int_eq(q(&c, "SELECT received FROM readings_view WHERE sensor = 'r1'"), received_before);
        ck_assert_int_eq(q(&c, "SELECT count(*) FROM readings WHERE flags & 3 != 0"), 0);
        ck_assert_int_lt(q(&c, "SELECT received FROM readings_view WHERE sensor = 'r2'"), real_ms() - 3590000);
        daemon_stop(&c);
        tl_pty_stop(&c.pty);
}
END_TEST

/* A restart within the same boot while unsynchronised: the readings of both runs wait, and are
 * corrected together when the clock is trusted (the restart resumes from what the store kept). */
START_TEST(test_restart_within_the_boot) {
        int64_t t0, t1;
        Ctx c;

        ctx_init(&c);
        set_offset(&c, -30 * DAY_MS);
        daemon_start(&c, BOOT_A, "\"trust\": \"sync\"");
        wait_log(&c, "clock.trust is \"sync\": waiting for synchronisation");
        t0 = real_ms();
        write_str(&c, "{\"sensor\":\"x1\",\"temp\":1}\n");
        wait_sql(&c, "SELECT count(*) FROM readings_view WHERE unsynced", 1);
        daemon_stop(&c);

        daemon_start(&c, BOOT_A, "\"trust\": \"sync\"");
        wait_status(&c, "clock: not synchronised, 1 readings wait for correction");
        write_str(&c, "{\"sensor\":\"x2\",\"temp\":2}\n");
        wait_sql(&c, "SELECT count(*) FROM readings_view WHERE unsynced", 2);
        t1 = real_ms();

        set_offset(&c, 0);
        declare_synchronised(&c);
        wait_sql(&c, "SELECT count(*) FROM readings_view WHERE corrected", 2);
        ck_assert_int_ge(q(&c, "SELECT min(received) FROM readings"), t0 - 1);
        ck_assert_int_le(q(&c, "SELECT max(received) FROM readings"), t1 + 1);
        ck_assert_int_eq(q(&c, "SELECT count(*) FROM boots"), 1);
        daemon_stop(&c);
        tl_pty_stop(&c.pty);
}
END_TEST

static Suite *clock_suite(void) {
        Suite *s = suite_create("clock-e2e");
        TCase *tc = tcase_create("faketime");

        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_wrong_clock_then_synchronised);
        tcase_add_test(tc, test_step_back_while_synchronised_and_suspect_sensor_times);
        tcase_add_test(tc, test_restart_within_the_boot);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(clock_suite());
}
