/* SPDX-License-Identifier: MIT */
/* The command line: usage errors, --help/--version, nothing to collect, early exits tell systemd. */
#include <stdio.h>
#include <sys/stat.h>

#include "collector/macro.h"
#include "testlib.h"

typedef struct CliCase {
        const char *args[6];
        int status;
        const char *output; /* must appear in stdout+stderr */
} CliCase;

static const CliCase cli_cases[] = {
        { { "--help" }, 0, "Usage: sensor-collector [-c|--config FILE]" },
        { { "-h" }, 0, "Exit status: 0 stopped on request" },
        { { "--version" }, 0, "sensor-collector " SC_VERSION "\n" },
        { { "--frobnicate" }, 64, "sensor-collector: unknown option '--frobnicate'\nUsage:" },
        { { "-x" }, 64, "sensor-collector: unknown option '-x'\nUsage:" },
        { { "--config" }, 64, "sensor-collector: option '--config' needs a value\nUsage:" },
        { { "--log-level", "loud" }, 64,
          "sensor-collector: invalid --log-level 'loud' (debug, info, notice, warning, err)\nUsage:" },
        { { "stray" }, 64, "sensor-collector: unexpected argument 'stray'\nUsage:" },
        { { "--socket", "" }, 64, "sensor-collector: --socket needs a path\nUsage:" },
        { { "status", "--format" }, 64, "sensor-collector status: option '--format' needs a value\nUsage:" },
        { { "status", "--bogus" }, 64, "sensor-collector status: unknown option '--bogus'\nUsage:" },
        { { "status", "extra" }, 64, "sensor-collector status: unexpected argument 'extra'\nUsage:" },
        { { "status", "--help" }, 0, "Exit status: 0 running and healthy, 1 running but degraded, 3 not running," },
        { { "--config", "/nonexistent/sc.json" }, 78, "/nonexistent/sc.json: cannot read: No such file or directory" },
};

START_TEST(test_cli_table) {
        const CliCase *c = &cli_cases[_i];
        char *argv[8] = { SC_BINARY };
        char *out = NULL;
        size_t n = 1;

        for (size_t i = 0; i < ELEMENTSOF(c->args) && c->args[i]; i++)
                argv[n++] = (char *) c->args[i];
        argv[n] = NULL;
        ck_assert_int_eq(tl_run(argv, NULL, &out, 5000), c->status);
        ck_assert_msg(strstr(out, c->output), "case %d: expected '%s' in:\n%s", _i, c->output, out);
        free(out);
}
END_TEST

static const char config_both_disabled[] =
        "{ \"serial\": { \"enabled\": false, \"device\": \"/dev/ttyUSB0\" },"
        "  \"mqtt\": { \"enabled\": false, \"host\": \"localhost\", \"topics\": [ { \"filter\": \"a/+sensor/+metric\", \"format\": \"value\" } ] },"
        "  \"store\": { \"path\": \"/nonexistent/readings.db\" } }";

static const char config_serial_only[] =
        "{ \"serial\": { \"device\": \"/dev/ttyUSB0\" }, \"store\": { \"path\": \"/nonexistent/readings.db\" } }";

/* Nothing to collect is a usage error: a clear message, exit 64, STOPPING=1; nothing opened. */
START_TEST(test_nothing_to_collect) {
        const char *dir = tl_tmpdir();
        TlDaemon d;
        char *log;

        tl_daemon_start(&d, dir, config_both_disabled, NULL, NULL);
        ck_assert_int_eq(tl_daemon_wait(&d, 5000), 64);
        log = tl_daemon_log(&d);
        ck_assert_ptr_nonnull(strstr(log, "Nothing to collect: both the serial and the MQTT input are disabled."));
        ck_assert_ptr_nonnull(strstr(d.notify.log, "STOPPING=1"));
        ck_assert_ptr_null(strstr(d.notify.log, "READY=1"));
        free(log);
}
END_TEST

/* --no-serial on a serial-only config leaves nothing: 64 as well. */
START_TEST(test_no_serial_flag) {
        const char *dir = tl_tmpdir();
        char *args[] = { "--no-serial", NULL };
        TlDaemon d;
        char *log;

        tl_daemon_start(&d, dir, config_serial_only, args, NULL);
        ck_assert_int_eq(tl_daemon_wait(&d, 5000), 64);
        log = tl_daemon_log(&d);
        ck_assert_ptr_nonnull(strstr(log, "Nothing to collect"));
        free(log);
}
END_TEST

/* --check-config says what a start would: a config with nothing enabled is not OK. */
START_TEST(test_check_config_nothing_to_collect) {
        const char *dir = tl_tmpdir();
        const char *path = tl_write_file(dir, "both-off.json", config_both_disabled);
        char *argv[] = { SC_BINARY, "--check-config", "--config", (char *) path, NULL };
        char *argv_flag[] = { SC_BINARY, "--check-config", "--no-serial", "--config", NULL, NULL };
        char *out = NULL;

        ck_assert_int_eq(tl_run(argv, NULL, &out, 5000), 64);
        ck_assert_ptr_nonnull(strstr(out, "Nothing to collect"));
        ck_assert_ptr_null(strstr(out, "configuration OK"));
        free(out);

        argv_flag[4] = (char *) tl_write_file(dir, "serial-only.json", config_serial_only);
        ck_assert_int_eq(tl_run(argv_flag, NULL, &out, 5000), 64);
        free(out);
        argv_flag[2] = "--no-mqtt";
        ck_assert_int_eq(tl_run(argv_flag, NULL, &out, 5000), 0);
        ck_assert_ptr_nonnull(strstr(out, "configuration OK"));
        free(out);
}
END_TEST

/* A config file that cannot be read for a passing reason (an I/O error) is not a bad config:
 * exit 1, which systemd restarts, not 78, which parks the service for good. Reading
 * /proc/self/mem at offset 0 (never mapped) fails with EIO, a real I/O error on demand. */
START_TEST(test_config_io_error_is_restartable) {
        char *argv[] = { SC_BINARY, "--check-config", "--config", "/proc/self/mem", NULL };
        char *out = NULL;

        ck_assert_int_eq(tl_run(argv, NULL, &out, 10000), 1);
        ck_assert_msg(strstr(out, "/proc/self/mem: cannot read: Input/output error"), "output: %s", out);
        free(out);
}
END_TEST

/* A configuration path that is a FIFO (or a socket, a device) is refused at once with exit 78:
 * opening a FIFO for reading used to wait for a writer forever, in --check-config and at start.
 * Nobody ever writes to this one. */
START_TEST(test_config_fifo_refused) {
        char path[512], *out = NULL;
        char *argv[] = { SC_BINARY, "--check-config", "--config", path, NULL };
        char *argv_start[] = { SC_BINARY, "--config", path, NULL };

        snprintf(path, sizeof(path), "%s/config.json", tl_tmpdir());
        ck_assert_int_eq(mkfifo(path, 0600), 0);
        ck_assert_int_eq(tl_run(argv, NULL, &out, 10000), 78);
        ck_assert_msg(strstr(out, "config.json: not a regular file (a FIFO)"), "output: %s", out);
        free(out);
        ck_assert_int_eq(tl_run(argv_start, NULL, &out, 10000), 78);
        ck_assert_msg(strstr(out, "not a regular file (a FIFO)"), "output: %s", out);
        free(out);
}
END_TEST

/* A file size limit (LimitFSIZE=, here prlimit) is a store failure, exit 12, not a death by
 * SIGXFSZ (exit 153) that loses the open batch, and its cause says so. Creating the store
 * writes more than 2 KiB. */
START_TEST(test_file_size_limit_is_store_failure) {
        char path[512], db[512], *out = NULL;
        char *argv[] = { "prlimit", "--fsize=2048", SC_BINARY, "--no-mqtt", "--config", path, NULL };
        char *text = NULL;

        snprintf(db, sizeof(db), "%s/readings.db", tl_tmpdir());
        ck_assert_int_ge(asprintf(&text, "{ \"serial\": { \"device\": \"/dev/ttyUSB0\" }, \"store\": { \"path\": \"%s\" } }", db), 0);
        snprintf(path, sizeof(path), "%s", tl_write_file(tl_tmpdir(), "config.json", text));
        ck_assert_int_eq(tl_run(argv, NULL, &out, 20000), 12);
        ck_assert_msg(strstr(out, "Task store failed"), "output: %s", out);
        /* The cause names the limit, not just SQLite's "disk I/O error". */
        ck_assert_msg(strstr(out, "file size limit of the process (RLIMIT_FSIZE, LimitFSIZE= in the unit) is 2048 bytes"),
                      "output: %s", out);
        ck_assert_msg(strstr(out, "File too large"), "output: %s", out);
        free(out);
        free(text);
}
END_TEST

/* stderr read by a program that went away: the next log line must not kill a serial-only
 * daemon with SIGPIPE (exit 141, the open batch lost). It goes on and ends as it would: the port
 * never appears, so after reopen_timeout it fails with the serial task's status, 10. */
START_TEST(test_closed_stderr_pipe) {
        char path[512], db[512], *text = NULL;
        char *argv[] = { "bash", "-c", "\"$0\" --no-mqtt --config \"$1\" 2>&1 >/dev/null | true; exit ${PIPESTATUS[0]}",
                         SC_BINARY, path, NULL };

        snprintf(db, sizeof(db), "%s/readings.db", tl_tmpdir());
        ck_assert_int_ge(asprintf(&text, "{ \"serial\": { \"device\": \"/dev/ttyUSB0\", \"reopen_timeout\": 0.5 }, "
                                         "\"store\": { \"path\": \"%s\" } }", db), 0);
        snprintf(path, sizeof(path), "%s", tl_write_file(tl_tmpdir(), "config.json", text));
        ck_assert_int_eq(tl_run(argv, NULL, NULL, 20000), 10);
        free(text);
}
END_TEST

/* A usage error under systemd still says STOPPING=1 and why. */
START_TEST(test_usage_error_notifies) {
        const char *dir = tl_tmpdir();
        char *args[] = { "--frobnicate", NULL };
        TlDaemon d;

        tl_daemon_start(&d, dir, config_serial_only, args, NULL);
        ck_assert_int_eq(tl_daemon_wait(&d, 5000), 64);
        ck_assert_ptr_nonnull(strstr(d.notify.log, "STOPPING=1"));
        ck_assert_ptr_nonnull(strstr(d.notify.log, "STATUS=Bad command line, exiting with status 64"));
}
END_TEST

/* A config error tells systemd why before exiting 78. */
START_TEST(test_config_error_notifies) {
        const char *dir = tl_tmpdir();
        TlDaemon d;
        char *log;

        tl_daemon_start(&d, dir, "{ \"serial\": { \"baud\": \"fast\" } }", NULL, NULL);
        ck_assert_int_eq(tl_daemon_wait(&d, 5000), 78);
        log = tl_daemon_log(&d);
        ck_assert_ptr_nonnull(strstr(log, "/serial/baud"));
        ck_assert_ptr_nonnull(strstr(d.notify.log, "STOPPING=1"));
        ck_assert_ptr_nonnull(strstr(d.notify.log, "STATUS=Invalid configuration, exiting with status 78"));
        free(log);
}
END_TEST

/* A store that cannot be opened: exit 12, STOPPING=1, the path named. */
START_TEST(test_store_failure_at_start) {
        const char *dir = tl_tmpdir();
        char *args[] = { "--no-mqtt", NULL };
        TlDaemon d;
        char *log;

        tl_daemon_start(&d, dir, config_serial_only, args, NULL);
        ck_assert_int_eq(tl_daemon_wait(&d, 10000), 12);
        log = tl_daemon_log(&d);
        ck_assert_msg(strstr(log, "/nonexistent"), "log: %s", log);
        ck_assert_ptr_nonnull(strstr(d.notify.log, "STOPPING=1"));
        ck_assert_ptr_null(strstr(d.notify.log, "READY=1"));
        free(log);
}
END_TEST

int main(void) {
        Suite *s = suite_create("cli");
        TCase *tc = tcase_create("cli");

        tcase_set_timeout(tc, 30);
        tcase_add_loop_test(tc, test_cli_table, 0, (int) ELEMENTSOF(cli_cases));
        tcase_add_test(tc, test_nothing_to_collect);
        tcase_add_test(tc, test_no_serial_flag);
        tcase_add_test(tc, test_config_error_notifies);
        tcase_add_test(tc, test_check_config_nothing_to_collect);
        tcase_add_test(tc, test_config_io_error_is_restartable);
        tcase_add_test(tc, test_config_fifo_refused);
        tcase_add_test(tc, test_file_size_limit_is_store_failure);
        tcase_add_test(tc, test_closed_stderr_pipe);
        tcase_add_test(tc, test_usage_error_notifies);
        tcase_add_test(tc, test_store_failure_at_start);
        suite_add_tcase(s, tc);
        return tl_run_suite(s);
}
