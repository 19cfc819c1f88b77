/* SPDX-License-Identifier: MIT */
/* The store deleted, or its write-ahead log deleted, while the daemon ingests: it exits 12 with the cause. */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "collector/macro.h"
#include "testlib.h"

typedef struct Ctx {
        const char *dir;
        TlPty pty;
        TlDaemon d;
        char db[450];
        char config[2048];
        int64_t seq;
        int64_t ts;
} Ctx;

static void write_frames(Ctx *c, int n) {
        char buf[8192];
        size_t len = 0;

        for (int i = 0; i < n; i++) {
                c->seq++;
                len += (size_t) snprintf(buf + len, sizeof(buf) - len,
                                         "{\"sensor\":\"gone-%02" PRId64 "\",\"ts\":%" PRId64 ",\"temperature\":%" PRId64
                                         ".5}\n",
                                         c->seq % 10, c->ts + c->seq, c->seq % 40);
                ck_assert_uint_lt(len, sizeof(buf) - 256);
        }
        tl_pty_write(&c->pty, buf, len);
}

static void start(Ctx *c) {
        struct timespec now;

        clock_gettime(CLOCK_REALTIME, &now);
        c->ts = (int64_t) now.tv_sec * 1000;
        c->dir = tl_tmpdir();
        tl_pty_start(&c->pty, c->dir);
        snprintf(c->db, sizeof(c->db), "%s/readings.db", c->dir);
        tl_serial_store_config(c->config, sizeof(c->config), c->pty.device, c->db, 20, 200);
        tl_daemon_start_ready(&c->d, c->dir, c->config, NULL, NULL, 10000);
        write_frames(c, 50);
        ck_assert(tl_wait_sql_at_least(c->db, "SELECT count(*) FROM readings", 50, 10000));
}

/* Deletes `victim`, keeps feeding, and expects exit 12 with `needle` in the log. */
static void delete_and_expect_exit_12(Ctx *c, const char *victim, const char *needle) {
        _cleanup_free_ char *log = NULL;
        int status = -ETIMEDOUT;
        int64_t deadline;

        ck_assert_int_eq(unlink(victim), 0);
        deadline = tl_now_ms() + 15000;
        while (tl_now_ms() < deadline) {
                write_frames(c, 20);
                status = tl_daemon_wait(&c->d, 200);
                if (status != -ETIMEDOUT)
                        break;
        }
        log = tl_daemon_log(&c->d);
        ck_assert_msg(status == 12, "exit status %d, want 12 (store failed); log:\n%s", status, log);
        ck_assert_msg(strstr(log, "Task store failed") && strstr(log, needle) && strstr(log, c->db),
                      "no clear cause ('%s') in the log:\n%s", needle, log);
        ck_assert_msg(strstr(c->d.notify.log, "STOPPING=1"), "no STOPPING=1");
        tl_notify_close(&c->d.notify);
        tl_pty_stop(&c->pty);
}

START_TEST(test_store_deleted_exits_12) {
        Ctx c = {};

        start(&c);
        delete_and_expect_exit_12(&c, c.db, "was deleted while open");
}
END_TEST

START_TEST(test_wal_deleted_exits_12_and_keeps_rows) {
        char wal[500];
        int64_t before;
        Ctx c = {};

        start(&c);
        before = tl_sql_int(c.db, "SELECT count(*) FROM readings");
        snprintf(wal, sizeof(wal), "%s-wal", c.db);
        delete_and_expect_exit_12(&c, wal, "write-ahead log");
        /* What was committed is in the store: the close wrote the deleted log back. */
        ck_assert_int_ge(tl_sql_int(c.db, "SELECT count(*) FROM readings"), before);
        tl_assert_integrity(c.db, true);
}
END_TEST

static Suite *deleted_suite(void) {
        Suite *s = suite_create("store-deleted");
        TCase *tc = tcase_create("files");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_store_deleted_exits_12);
        tcase_add_test(tc, test_wal_deleted_exits_12_and_keeps_rows);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(deleted_suite());
}
