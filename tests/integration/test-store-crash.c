/* SPDX-License-Identifier: MIT */
/* Crash consistency: the real daemon is SIGKILLed at random moments while frames stream in; nothing committed is lost. */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "collector/macro.h"
#include "testlib.h"

#define KILLS 20
#define COMMIT_INTERVAL_MS 20
#define COMMIT_MAX_ROWS 10000 /* the default */

typedef struct Ctx {
        const char *dir;
        TlPty pty;
        TlDaemon d;
        char db[400];
        char config[2048];
        int64_t seq;                  /* frames written so far */
        int64_t ts;
} Ctx;

static void daemon_start(Ctx *c) {
        tl_daemon_start_ready(&c->d, c->dir, c->config, NULL, NULL, 10000);
}

/* Writes n numbered frames (one line each, with the sensor's own timestamp). */
static void write_frames(Ctx *c, int n) {
        char buf[4096];
        size_t len = 0;

        for (int i = 0; i < n; i++) {
                c->seq++;
                len += (size_t) snprintf(buf + len, sizeof(buf) - len,
                                         "{\"sensor\":\"crash\",\"ts\":%" PRId64 ",\"seq\":%" PRId64 "}\n",
                                         c->ts + c->seq, c->seq);
                ck_assert_uint_lt(len, sizeof(buf) - 128);
        }
        tl_pty_write(&c->pty, buf, len);
}

static int64_t count(Ctx *c) {
        return tl_sql_int(c->db, "SELECT count(*) FROM readings");
}

START_TEST(test_sigkill_at_random_moments) {
        int64_t last = 0, worst_gap, missing, streamed_ms = 0;
        struct timespec now;
        unsigned seed;
        Ctx c = {};

        clock_gettime(CLOCK_REALTIME, &now);
        /* SC_CRASH_SEED=N replays a run. */
        seed = getenv("SC_CRASH_SEED") ? (unsigned) strtoul(getenv("SC_CRASH_SEED"), NULL, 10)
                                       : (unsigned) now.tv_nsec ^ (unsigned) getpid();
        fprintf(stderr, "crash: seed %u (SC_CRASH_SEED)\n", seed);
        srand(seed);
        c.ts = (int64_t) now.tv_sec * 1000;

        c.dir = tl_tmpdir();
        tl_pty_start(&c.pty, c.dir);
        snprintf(c.db, sizeof(c.db), "%s/readings.db", c.dir);
        tl_serial_store_config(c.config, sizeof(c.config), c.pty.device, c.db, COMMIT_INTERVAL_MS, COMMIT_MAX_ROWS);

        for (int k = 0; k < KILLS; k++) {
                int64_t start, until, committed, after;
                int status;

                daemon_start(&c);
                /* Nothing committed before is missing after a restart. */
                ck_assert_int_ge(count(&c), last);

                /* Stream for a random while (0..300 ms), a few frames per write. */
                start = tl_now_ms();
                until = start + rand() % 300;
                do {
                        write_frames(&c, 1 + rand() % 10);
                        tl_sleep_ms(1 + rand() % 3);
                } while (tl_now_ms() < until);
                streamed_ms += tl_now_ms() - start;
                /* Let a random share of it be committed, sometimes none. */
                if (rand() % 2)
                        tl_sleep_ms(rand() % (2 * COMMIT_INTERVAL_MS));

                committed = count(&c);
                ck_assert_int_ge(committed, 0);
                kill(c.d.pid, SIGKILL);
                status = tl_daemon_wait(&c.d, 5000);
                ck_assert_int_eq(status, 128 + SIGKILL);
                tl_notify_close(&c.d.notify);

                tl_assert_integrity(c.db, false);
                after = count(&c);
                ck_assert_msg(after >= committed, "kill %d: %" PRId64 " rows committed before the kill, %" PRId64 " after",
                              k, committed, after);
                last = after;
        }

        /* One more run: the last frames still in the pty are read, then an orderly stop. */
        daemon_start(&c);
        write_frames(&c, 1);
        {
                const int64_t want = last + 1;
                ck_assert(tl_wait_sql_at_least(c.db, "SELECT count(*) FROM readings", want, 5000));
        }
        kill(c.d.pid, SIGTERM);
        ck_assert_int_eq(tl_daemon_wait(&c.d, 10000), 0);
        tl_assert_integrity(c.db, false);

        /* Every stored frame once; what is missing are the batches open at each kill. */
        ck_assert_int_eq(tl_sql_int(c.db, "SELECT count(DISTINCT value) = count(*) FROM readings_view WHERE metric = 'seq'"), 1);
        missing = c.seq - count(&c);
        worst_gap = tl_sql_int(c.db, "SELECT coalesce(max(value - prev - 1), 0) FROM (SELECT value, lag(value, 1, 0) OVER "
                                     "(ORDER BY value) AS prev FROM readings_view WHERE metric = 'seq')");
        /* The longest run of missing numbers is what one kill lost: the open batch plus what
         * had been read but not yet appended. */
        fprintf(stderr,
                "crash: %d SIGKILLs, %" PRId64 " frames written (%.1f per ms), %" PRId64 " stored, %" PRId64
                " lost in total, worst loss at one kill %" PRId64 " frames (~%.0f ms); batches of %d ms / %d rows\n",
                KILLS, c.seq, (double) c.seq / (double) MAX(streamed_ms, 1), count(&c), missing, worst_gap,
                (double) worst_gap * (double) MAX(streamed_ms, 1) / (double) MAX(c.seq, 1), COMMIT_INTERVAL_MS,
                COMMIT_MAX_ROWS);
        ck_assert_int_ge(missing, 0);
        tl_pty_stop(&c.pty);
}
END_TEST

static Suite *crash_suite(void) {
        Suite *s = suite_create("store-crash");
        TCase *tc = tcase_create("sigkill");

        tcase_set_timeout(tc, 180);
        tcase_add_test(tc, test_sigkill_at_random_moments);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(crash_suite());
}
