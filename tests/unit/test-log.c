/* SPDX-License-Identifier: MIT */
/* Logging: levels, rate limiting, stderr lines, and native journal entries read off a real socket. */
#include <sched.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "collector/log.h"
#include "testlib.h"

START_TEST(test_level_names) {
        static const struct {
                const char *name;
                int level;
        } table[] = {
                { "debug", LOG_DEBUG }, { "info", LOG_INFO }, { "notice", LOG_NOTICE },
                { "warning", LOG_WARNING }, { "err", LOG_ERR }, { "error", LOG_ERR },
                { "INFO", -EINVAL }, { "", -EINVAL }, { "crit", -EINVAL }, { NULL, -EINVAL },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                ck_assert_int_eq(log_level_from_string(table[i].name), table[i].level);
        ck_assert_str_eq(log_level_to_string(LOG_WARNING), "warning");
        ck_assert_ptr_null(log_level_to_string(42));
}
END_TEST

START_TEST(test_ratelimit) {
        RateLimit rl = RATELIMIT_INIT(200 * USEC_PER_MSEC, 3);
        unsigned suppressed = 99;

        for (int i = 0; i < 3; i++)
                ck_assert(ratelimit_below(&rl, &suppressed));
        ck_assert_uint_eq(suppressed, 0);
        for (int i = 0; i < 5; i++)
                ck_assert(!ratelimit_below(&rl, NULL));
        tl_sleep_ms(250);
        ck_assert(ratelimit_below(&rl, &suppressed));
        ck_assert_uint_eq(suppressed, 5);
}
END_TEST

static char *capture_stderr(void (*fn)(void)) {
        const char *dir = tl_tmpdir();
        char path[300];
        int saved;

        snprintf(path, sizeof(path), "%s/stderr", dir);
        fflush(stderr);
        saved = dup(STDERR_FILENO);
        ck_assert(freopen(path, "w", stderr));
        fn();
        fflush(stderr);
        dup2(saved, STDERR_FILENO);
        close(saved);
        return tl_read_file(path);
}

static void log_some(void) {
        log_open(LOG_TARGET_STDERR);
        log_set_max_level(LOG_INFO);
        ck_assert_int_eq(log_error_errno(-ENOENT, "Failed to open '%s': %m", "/dev/ttyUSB9"), -ENOENT);
        ck_assert_int_eq(log_warning_errno(EIO, "Read failed, ignoring: %m"), -EIO);
        ck_assert_int_eq(log_info("plain"), 0);
        ck_assert_int_eq(log_debug("hidden at info"), 0);
        log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", "serial", "DEVICE", "/dev/x", "SENSOR_ID", NULL),
                              "Rejected a frame");
}

START_TEST(test_stderr_lines) {
        char *out = capture_stderr(log_some);

        ck_assert_ptr_nonnull(strstr(out, "error: Failed to open '/dev/ttyUSB9': No such file or directory\n"));
        ck_assert_ptr_nonnull(strstr(out, "warning: Read failed, ignoring: Input/output error\n"));
        ck_assert_ptr_nonnull(strstr(out, "plain\n"));
        ck_assert_ptr_null(strstr(out, "hidden"));
        ck_assert_ptr_nonnull(strstr(out, "warning: serial: Rejected a frame [DEVICE=/dev/x]\n"));
        free(out);
}
END_TEST

/* In a private mount namespace, our own datagram socket stands where journald's would: what
 * sd_journal_send() writes is read back field by field. */
static int journal_socket_in_namespace(void) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX, .sun_path = "/run/systemd/journal/socket" };
        int fd;

        ck_assert_msg(unshare(CLONE_NEWNS) == 0, "unshare: %m (the log tests need root)");
        ck_assert(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0);
        ck_assert_msg(mount("tmpfs", "/run", "tmpfs", 0, "mode=0755") == 0, "mount /run: %m");
        ck_assert(mkdir("/run/systemd", 0755) == 0);
        ck_assert(mkdir("/run/systemd/journal", 0755) == 0);
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        ck_assert(fd >= 0);
        ck_assert(bind(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0);
        return fd;
}

static void read_entry(int fd, char *buf, size_t size) {
        ssize_t k = recv(fd, buf, size - 1, MSG_DONTWAIT);
        ck_assert_msg(k > 0, "no journal datagram: %m");
        buf[k] = 0;
}

START_TEST(test_journal_fields) {
        char entry[8192];
        int fd = journal_socket_in_namespace();

        log_open(LOG_TARGET_JOURNAL);
        log_set_max_level(LOG_INFO);
        log_full_errno_fields(LOG_ERR, -ENODEV, LOG_FIELDS("TASK", "serial", "DEVICE", "/dev/ttyUSB0", "EXIT_STATUS", "10"),
                              "Serial port gone: %m");
        read_entry(fd, entry, sizeof(entry));
        ck_assert_ptr_nonnull(strstr(entry, "MESSAGE=Serial port gone: No such device\n"));
        ck_assert_ptr_nonnull(strstr(entry, "PRIORITY=3\n"));
        ck_assert_ptr_nonnull(strstr(entry, "TASK=serial\n"));
        ck_assert_ptr_nonnull(strstr(entry, "DEVICE=/dev/ttyUSB0\n"));
        ck_assert_ptr_nonnull(strstr(entry, "EXIT_STATUS=10\n"));
        ck_assert_ptr_nonnull(strstr(entry, "ERRNO=19\n"));
        ck_assert_ptr_nonnull(strstr(entry, "CODE_FUNC="));

        log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", "mqtt", "TOPIC", "greenhouse/gh1/t", "SENSOR_ID", "gh1"),
                              "Rejected payload");
        read_entry(fd, entry, sizeof(entry));
        ck_assert_ptr_nonnull(strstr(entry, "PRIORITY=4\n"));
        ck_assert_ptr_nonnull(strstr(entry, "TOPIC=greenhouse/gh1/t\n"));
        ck_assert_ptr_nonnull(strstr(entry, "SENSOR_ID=gh1\n"));
        ck_assert_ptr_null(strstr(entry, "ERRNO="));
        close(fd);
}
END_TEST

START_TEST(test_auto_target) {
        struct stat st;
        char value[64];

        /* JOURNAL_STREAM naming our stderr: journal; naming something else: stderr. */
        ck_assert(fstat(STDERR_FILENO, &st) == 0);
        snprintf(value, sizeof(value), "%llu:%llu", (unsigned long long) st.st_dev, (unsigned long long) st.st_ino);
        setenv("JOURNAL_STREAM", value, 1);
        log_open(LOG_TARGET_AUTO);
        ck_assert_int_eq(log_get_target(), LOG_TARGET_JOURNAL);

        snprintf(value, sizeof(value), "%llu:%llu", (unsigned long long) st.st_dev, (unsigned long long) st.st_ino + 1);
        setenv("JOURNAL_STREAM", value, 1);
        log_open(LOG_TARGET_AUTO);
        ck_assert_int_eq(log_get_target(), LOG_TARGET_STDERR);

        unsetenv("JOURNAL_STREAM");
        log_open(LOG_TARGET_AUTO);
        ck_assert_int_eq(log_get_target(), LOG_TARGET_STDERR);
}
END_TEST

int main(void) {
        Suite *s = suite_create("log");
        TCase *tc = tcase_create("core");

        tcase_add_test(tc, test_level_names);
        tcase_add_test(tc, test_ratelimit);
        tcase_add_test(tc, test_stderr_lines);
        tcase_add_test(tc, test_journal_fields);
        tcase_add_test(tc, test_auto_target);
        suite_add_tcase(s, tc);
        return tl_run_suite(s);
}
