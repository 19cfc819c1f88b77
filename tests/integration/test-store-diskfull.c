/* SPDX-License-Identifier: MIT */
/* Disk full: the store on a 1 MiB tmpfs fills up, the daemon exits 12 with the cause, and continues once there is room;
 * and a file size limit (LimitFSIZE=) reached while ingesting is named as the cause. */
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "collector/macro.h"
#include "testlib.h"

typedef struct Ctx {
        const char *dir;
        char mnt[400];
        TlPty pty;
        TlDaemon d;
        char db[450];
        char config[2048];
        int64_t seq;
        int64_t ts;
} Ctx;

static char mounted[400];

static void unmount_at_exit(void) {
        if (mounted[0])
                (void) umount2(mounted, MNT_DETACH);
}

/* A 1 MiB tmpfs in a private mount namespace (gone with this process whatever happens).
 * Returns false when this machine does not let us mount. */
static bool mount_small_tmpfs(Ctx *c) {
        snprintf(c->mnt, sizeof(c->mnt), "%s/mnt", c->dir);
        ck_assert_int_eq(mkdir(c->mnt, 0755), 0);
        if (unshare(CLONE_NEWNS) < 0) {
                fprintf(stderr, "SKIP: disk-full test needs a private mount namespace: unshare: %m\n");
                return false;
        }
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
                fprintf(stderr, "SKIP: disk-full test: cannot make / private: %m\n");
                return false;
        }
        if (mount("tmpfs", c->mnt, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755") < 0) {
                fprintf(stderr, "SKIP: disk-full test: mount -t tmpfs -o size=1m: %m\n");
                return false;
        }
        snprintf(mounted, sizeof(mounted), "%s", c->mnt);
        atexit(unmount_at_exit); /* after tl_tmpdir()'s handler, so it runs first */
        return true;
}

static void daemon_start(Ctx *c) {
        tl_daemon_start_ready(&c->d, c->dir, c->config, NULL, NULL, 10000);
}

/* Writes n frames. A daemon whose store has failed stops reading and exits, and a blocking write
 * into its full pty would wait for ever: feeding until it fails, write only what fits (block
 * false). */
static void write_frames(Ctx *c, int n, bool block) {
        char buf[8192];
        size_t len = 0;

        for (int i = 0; i < n; i++) {
                c->seq++;
                /* Longer names: more bytes per row, so the disk fills sooner. */
                len += (size_t) snprintf(buf + len, sizeof(buf) - len,
                                         "{\"sensor\":\"full-%03" PRId64 "\",\"ts\":%" PRId64 ",\"seq\":%" PRId64
                                         ",\"temperature\":%" PRId64 ".5}\n",
                                         c->seq % 200, c->ts + c->seq, c->seq, c->seq % 40);
                ck_assert_uint_lt(len, sizeof(buf) - 256);
        }
        if (block)
                tl_pty_write(&c->pty, buf, len);
        else
                (void) tl_pty_try_write(&c->pty, buf, len);
}

/* Feeds frames, without blocking, until the daemon exits on its own (30 s at most); returns its
 * exit status as tl_wait(), -ETIMEDOUT when it is still running. */
static int feed_until_exit(Ctx *c) {
        int64_t deadline = tl_now_ms() + 30000;
        int status = -ETIMEDOUT;

        while (tl_now_ms() < deadline) {
                write_frames(c, 50, false);
                status = tl_daemon_wait(&c->d, 2);
                if (status != -ETIMEDOUT)
                        break;
        }
        return status;
}

static int64_t count(Ctx *c) {
        return tl_sql_int(c->db, "SELECT count(*) FROM readings");
}

START_TEST(test_disk_full_then_room_again) {
        _cleanup_free_ char *log = NULL;
        int64_t before;
        struct timespec now;
        int status;
        Ctx c = {};

        clock_gettime(CLOCK_REALTIME, &now);
        c.ts = (int64_t) now.tv_sec * 1000;
        c.dir = tl_tmpdir();
        if (!mount_small_tmpfs(&c))
                return;
        tl_pty_start(&c.pty, c.dir);
        snprintf(c.db, sizeof(c.db), "%s/readings.db", c.mnt);
        tl_serial_store_config(c.config, sizeof(c.config), c.pty.device, c.db, 20, 200);

        daemon_start(&c);
        /* Feed until the store cannot take more; the daemon must end on its own. */
        status = feed_until_exit(&c);
        log = tl_daemon_log(&c.d);
        ck_assert_msg(status == 12, "exit status %d, want 12 (store failed); log:\n%s", status, log);
        ck_assert_msg(strstr(log, "Task store failed") && strstr(log, c.db) &&
                              (strstr(log, "No space left on device") || strstr(log, "disk is full")),
                      "no clear disk-full cause in the log:\n%s", log);
        ck_assert_msg(strstr(c.d.notify.log, "STOPPING=1"), "no STOPPING=1");
        tl_notify_close(&c.d.notify);

        tl_assert_integrity(c.db, true);
        before = count(&c);
        fprintf(stderr, "diskfull: %" PRId64 " frames written, %" PRId64 " readings committed before the disk was full\n",
                c.seq, before);
        ck_assert_int_gt(before, 0);

        /* Room again (what an operator would do: grow or clean the file system), then a
         * restart carries on appending to the same store. */
        ck_assert_msg(mount(NULL, c.mnt, NULL, MS_REMOUNT | MS_NOSUID | MS_NODEV, "size=16m") == 0, "remount: %m");
        daemon_start(&c);
        ck_assert_int_ge(count(&c), before);
        {
                int64_t from = count(&c);
                const int64_t want = from + 2 * 100;

                write_frames(&c, 100, true);
                ck_assert_msg(tl_wait_sql_at_least(c.db, "SELECT count(*) FROM readings", want, 10000), "count %" PRId64 ", want %" PRId64,
                              count(&c), want);
        }
        kill(c.d.pid, SIGTERM);
        ck_assert_int_eq(tl_daemon_wait(&c.d, 10000), 0);
        tl_assert_integrity(c.db, true);
        tl_pty_stop(&c.pty);
}
END_TEST

/* A file size limit (systemd's LimitFSIZE=) reached while ingesting: SQLite says "disk I/O
 * error"; the daemon exits 12 and its cause names the limit, not a failing disk. */
START_TEST(test_file_size_limit_while_ingesting) {
        const rlim_t limit = 256 * 1024;
        _cleanup_free_ char *log = NULL;
        struct rlimit saved, rl;
        struct timespec now;
        int status;
        char want[128];
        Ctx c = {};

        clock_gettime(CLOCK_REALTIME, &now);
        c.ts = (int64_t) now.tv_sec * 1000;
        c.dir = tl_tmpdir();
        tl_pty_start(&c.pty, c.dir);
        snprintf(c.db, sizeof(c.db), "%s/readings.db", c.dir);
        tl_serial_store_config(c.config, sizeof(c.config), c.pty.device, c.db, 20, 200);

        /* The daemon inherits the soft limit; this process gets its own back at once. */
        ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
        rl = saved;
        rl.rlim_cur = limit;
        ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
        tl_daemon_start(&c.d, c.dir, c.config, NULL, NULL);
        ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &saved), 0);

        status = feed_until_exit(&c);
        log = tl_daemon_log(&c.d);
        ck_assert_msg(status == 12, "exit status %d, want 12 (store failed); log:\n%s", status, log);
        snprintf(want, sizeof(want), "file size limit of the process (RLIMIT_FSIZE, LimitFSIZE= in the unit) is %u bytes",
                 (unsigned) limit);
        ck_assert_msg(strstr(log, "Task store failed") && strstr(log, c.db) && strstr(log, want) &&
                              strstr(log, "File too large"),
                      "the cause does not name the file size limit:\n%s", log);
        tl_notify_close(&c.d.notify);
        tl_assert_integrity(c.db, true);
        ck_assert_int_gt(count(&c), 0);
        tl_pty_stop(&c.pty);
}
END_TEST

static Suite *diskfull_suite(void) {
        Suite *s = suite_create("store-diskfull");
        TCase *tc = tcase_create("tmpfs");

        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_disk_full_then_room_again);
        suite_add_tcase(s, tc);

        tc = tcase_create("fsize");
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_file_size_limit_while_ingesting);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(diskfull_suite());
}
