/* SPDX-License-Identifier: MIT */
/* Supervisor semantics with test-only tasks: exit status, sd_notify order, logged cause. */
#include <signal.h>
#include <stdio.h>
#include <systemd/sd-event.h>

#include "collector/log.h"
#include "collector/supervisor.h"
#include "testlib.h"

typedef enum Behaviour {
        RUNS,              /* reports running at start, stops at once */
        FAILS_AT_START,    /* start() returns -EIO */
        FAILS_LATER,       /* reports failure (-EPIPE) after delay_ms */
        ENDS_WITHOUT_ERROR, /* reports stopped after delay_ms without being asked */
        NEVER_READY,       /* starts, never reports running */
        HANGS_ON_STOP,     /* stop() returns 1 and never completes */
        STOPS_LATER,       /* stop() returns 1 and completes after 20 ms */
        DEGRADES,          /* running, then degraded after delay_ms, then running again */
        STALLS,            /* running; after delay_ms holds up the loop for 400 ms */
} Behaviour;

typedef struct TestTask {
        Behaviour behaviour;
        unsigned delay_ms;
        sd_event *event;
        sd_event_source *timer;
        Task *task;
        int *stop_order;      /* shared counter: records the order stop() was called */
        int stopped_as;       /* 1-based position in the stop order */
        bool freed_marker;
} TestTask;

static int on_later(sd_event_source *s, uint64_t usec, void *userdata) {
        TestTask *tt = userdata;
        (void) s;
        (void) usec;

        switch (tt->behaviour) {
        case FAILS_LATER:
                task_report_failure(tt->task, -EPIPE, "Test failure after %u ms", tt->delay_ms);
                break;
        case ENDS_WITHOUT_ERROR:
                task_report_stopped(tt->task);
                break;
        case STOPS_LATER:
                task_report_stopped(tt->task);
                break;
        case STALLS:
                tl_sleep_ms(400);
                break;
        case DEGRADES:
                if (task_get_state(tt->task) == TASK_RUNNING) {
                        task_report_degraded(tt->task, "reconnecting (test)");
                        (void) sd_event_add_time_relative(tt->event, NULL, CLOCK_MONOTONIC, 50 * 1000, 0,
                                                          on_later, tt);
                } else
                        task_report_running(tt->task);
                break;
        default:
                break;
        }
        return 0;
}

static int test_start(Task *t) {
        TestTask *tt = task_get_userdata(t);

        tt->task = t;
        if (tt->behaviour == FAILS_AT_START)
                return -EIO;
        if (tt->behaviour != NEVER_READY)
                task_report_running(t);
        if (tt->behaviour == FAILS_LATER || tt->behaviour == ENDS_WITHOUT_ERROR || tt->behaviour == DEGRADES ||
            tt->behaviour == STALLS)
                ck_assert_int_ge(sd_event_add_time_relative(tt->event, &tt->timer, CLOCK_MONOTONIC,
                                                            tt->delay_ms * 1000ULL, 0, on_later, tt), 0);
        return 0;
}

static int test_stop(Task *t) {
        TestTask *tt = task_get_userdata(t);

        if (tt->stopped_as == 0)
                tt->stopped_as = ++*tt->stop_order;
        tt->timer = sd_event_source_disable_unref(tt->timer);
        if (tt->behaviour == HANGS_ON_STOP)
                return 1;
        if (tt->behaviour == STOPS_LATER) {
                ck_assert_int_ge(sd_event_add_time_relative(tt->event, &tt->timer, CLOCK_MONOTONIC, 20 * 1000, 0,
                                                            on_later, tt), 0);
                return 1;
        }
        return 0;
}

static void test_free(void *userdata) {
        TestTask *tt = userdata;
        sd_event_source_disable_unref(tt->timer);
        tt->freed_marker = true;
}

static const TaskOps alpha_ops = { .name = "alpha", .exit_status = 10, .start = test_start, .stop = test_stop, .free = test_free };
static const TaskOps beta_ops = { .name = "beta", .exit_status = 11, .start = test_start, .stop = test_stop, .free = test_free };
static const TaskOps gamma_ops = { .name = "gamma", .exit_status = 12, .start = test_start, .stop = test_stop, .free = test_free };

typedef struct Run {
        TlNotify notify;
        char err_path[300];
        int exit_status;
        int stop_order;
        TestTask tasks[3];
        char *log;
} Run;

static int send_signal(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) s;
        (void) usec;
        kill(getpid(), (int) (intptr_t) userdata);
        return 0;
}

/* Runs a supervisor over up to three test tasks; signal_ms > 0 sends sig after that long. */
static void run_supervisor(Run *run, const Behaviour *b, const unsigned *delays, size_t n, int sig,
                           unsigned signal_ms, uint64_t stop_timeout_ms) {
        static const TaskOps *const ops[] = { &alpha_ops, &beta_ops, &gamma_ops };
        const char *dir = tl_tmpdir();
        Supervisor *s = NULL;
        int saved_err;

        memset(run, 0, sizeof(*run));
        tl_notify_open(&run->notify, dir);
        setenv("NOTIFY_SOCKET", run->notify.path, 1);
        snprintf(run->err_path, sizeof(run->err_path), "%s/stderr", dir);
        fflush(stderr);
        saved_err = dup(STDERR_FILENO);
        ck_assert(freopen(run->err_path, "w", stderr));
        log_open(LOG_TARGET_STDERR);

        ck_assert_int_eq(supervisor_new(&(SupervisorOptions){ .stop_timeout_usec = stop_timeout_ms * 1000,
                                                              .status_interval_usec = 1000000 },
                                        &s),
                         0);
        for (size_t i = 0; i < n; i++) {
                Task *t;
                run->tasks[i] = (TestTask){ .behaviour = b[i], .delay_ms = delays ? delays[i] : 0,
                                            .event = supervisor_get_event(s), .stop_order = &run->stop_order };
                ck_assert_int_eq(task_new(ops[i], &run->tasks[i], &t), 0);
                ck_assert_int_eq(supervisor_add_task(s, t), 0);
        }
        if (signal_ms > 0)
                ck_assert_int_ge(sd_event_add_time_relative(supervisor_get_event(s), NULL, CLOCK_MONOTONIC,
                                                            signal_ms * 1000ULL, 0, send_signal, (void *) (intptr_t) sig),
                                 0);
        run->exit_status = supervisor_run(s);
        supervisor_free(s);

        fflush(stderr);
        dup2(saved_err, STDERR_FILENO);
        close(saved_err);
        tl_notify_drain(&run->notify);
        run->log = tl_read_file(run->err_path);
        for (size_t i = 0; i < n; i++)
                ck_assert_msg(run->tasks[i].freed_marker, "task %zu not freed", i);
}

static void run_done(Run *run) {
        free(run->log);
}

/* Position of needle in the notify log, or -1. */
static long notify_pos(const Run *run, const char *needle) {
        const char *p = strstr(run->notify.log, needle);
        return p ? p - run->notify.log : -1;
}

START_TEST(test_sigterm_exits_zero_after_ready) {
        _cleanup_(run_done) Run run = {};
        const Behaviour b[] = { RUNS, STOPS_LATER };

        run_supervisor(&run, b, NULL, 2, SIGTERM, 50, 2000);
        ck_assert_int_eq(run.exit_status, 0);
        ck_assert_int_ge(notify_pos(&run, "READY=1"), 0);
        ck_assert_int_gt(notify_pos(&run, "STOPPING=1"), notify_pos(&run, "READY=1"));
        /* Stopped in reverse order of start: beta (added last) first. */
        ck_assert_int_eq(run.tasks[1].stopped_as, 1);
        ck_assert_int_eq(run.tasks[0].stopped_as, 2);
        ck_assert_ptr_nonnull(strstr(run.log, "received SIGTERM"));
        ck_assert_ptr_nonnull(strstr(run.log, "Exiting with status 0"));
}
END_TEST

START_TEST(test_sigint_exits_zero) {
        _cleanup_(run_done) Run run = {};
        const Behaviour b[] = { RUNS };

        run_supervisor(&run, b, NULL, 1, SIGINT, 30, 2000);
        ck_assert_int_eq(run.exit_status, 0);
        ck_assert_int_ge(notify_pos(&run, "STOPPING=1"), 0);
}
END_TEST

START_TEST(test_fail_at_start) {
        _cleanup_(run_done) Run run = {};
        const Behaviour b[] = { RUNS, FAILS_AT_START, RUNS };

        run_supervisor(&run, b, NULL, 3, 0, 0, 2000);
        ck_assert_int_eq(run.exit_status, 11);
        ck_assert_int_lt(notify_pos(&run, "READY=1"), 0);
        ck_assert_int_ge(notify_pos(&run, "STOPPING=1"), 0);
        ck_assert_ptr_nonnull(strstr(run.notify.log, "STATUS=Failed (beta: Failed to start)"));
        ck_assert_ptr_nonnull(strstr(run.log, "error: beta: Task beta failed: Failed to start: Input/output error"));
        ck_assert_ptr_nonnull(strstr(run.log, "EXIT_STATUS=11"));
        /* The task after the failed one was never started, the one before was stopped. */
        ck_assert_ptr_null(run.tasks[2].task);
        ck_assert_int_gt(run.tasks[0].stopped_as, 0);
}
END_TEST

START_TEST(test_fail_later_stops_siblings) {
        _cleanup_(run_done) Run run = {};
        const Behaviour b[] = { RUNS, FAILS_LATER, STOPS_LATER };
        const unsigned d[] = { 0, 60, 0 };

        run_supervisor(&run, b, d, 3, 0, 0, 2000);
        ck_assert_int_eq(run.exit_status, 11);
        ck_assert_int_ge(notify_pos(&run, "READY=1"), 0);
        ck_assert_int_gt(notify_pos(&run, "STOPPING=1"), notify_pos(&run, "READY=1"));
        ck_assert_ptr_nonnull(strstr(run.log, "Task beta failed: Test failure after 60 ms: Broken pipe"));
        ck_assert_int_gt(run.tasks[0].stopped_as, 0);
        ck_assert_int_gt(run.tasks[2].stopped_as, 0);
        /* The sibling that stops asynchronously was waited for before alpha. */
        ck_assert_int_lt(run.tasks[2].stopped_as, run.tasks[0].stopped_as);
}
END_TEST

START_TEST(test_end_without_error_is_failure) {
        _cleanup_(run_done) Run run = {};
        const Behaviour b[] = { RUNS, ENDS_WITHOUT_ERROR };
        const unsigned d[] = { 0, 40 };

        run_supervisor(&run, b, d, 2, 0, 0, 2000);
        ck_assert_int_eq(run.exit_status, 11);
        ck_assert_ptr_nonnull(strstr(run.log, "Task beta failed: Task ended without being asked to stop"));
        ck_assert_int_ge(notify_pos(&run, "STOPPING=1"), 0);
}
END_TEST

START_TEST(test_never_ready_no_ready) {
        _cleanup_(run_done) Run run = {};
        const Behaviour b[] = { RUNS, NEVER_READY };

        run_supervisor(&run, b, NULL, 2, SIGTERM, 100, 2000);
        ck_assert_int_eq(run.exit_status, 0);
        ck_assert_int_lt(notify_pos(&run, "READY=1"), 0);
        ck_assert_ptr_nonnull(strstr(run.notify.log, "STATUS=Starting"));
}
END_TEST

START_TEST(test_hang_on_stop_times_out) {
        _cleanup_(run_done) Run run = {};
        const Behaviour b[] = { RUNS, HANGS_ON_STOP };
        int64_t t0 = tl_now_ms();

        run_supervisor(&run, b, NULL, 2, SIGTERM, 30, 200);
        ck_assert_int_eq(run.exit_status, 13);
        ck_assert_int_lt(tl_now_ms() - t0, 2000);
        ck_assert_ptr_nonnull(strstr(run.log, "Task beta did not stop within 200 ms"));
        /* The store-like first task was still asked to stop (it commits). */
        ck_assert_int_gt(run.tasks[0].stopped_as, 0);
}
END_TEST

START_TEST(test_fail_together_first_decides) {
        _cleanup_(run_done) Run run = {};
        const Behaviour b[] = { FAILS_LATER, FAILS_LATER };
        const unsigned d[] = { 40, 40 };

        run_supervisor(&run, b, d, 2, 0, 0, 2000);
        /* Both timers fire in one iteration; alpha's was armed first and fires first. */
        ck_assert_int_eq(run.exit_status, 10);
        ck_assert_ptr_nonnull(strstr(run.log, "Task alpha failed"));
        ck_assert_ptr_nonnull(strstr(run.log, "Task beta failed"));
}
END_TEST

START_TEST(test_second_sigint_abandons_stop) {
        _cleanup_(run_done) Run run = {};
        const Behaviour b[] = { RUNS, HANGS_ON_STOP };
        int64_t t0 = tl_now_ms();
        const char *dir;

        (void) dir;
        /* First SIGINT at 30 ms starts the stop; a second one arrives from a forked helper. */
        pid_t self = getpid();
        pid_t helper = fork();
        ck_assert_int_ge(helper, 0);
        if (helper == 0) {
                tl_sleep_ms(300);
                kill(self, SIGINT);
                _exit(0);
        }
        run_supervisor(&run, b, NULL, 2, SIGINT, 30, 10000);
        (void) tl_wait(helper, 1000);
        ck_assert_int_eq(run.exit_status, 13);
        ck_assert_int_lt(tl_now_ms() - t0, 3000);
        ck_assert_ptr_nonnull(strstr(run.log, "Received SIGINT again"));
        ck_assert_ptr_null(strstr(run.log, "did not stop within"));
}
END_TEST

START_TEST(test_watchdog_only_while_healthy) {
        _cleanup_(run_done) Run run = {};
        const Behaviour b[] = { RUNS, FAILS_LATER, HANGS_ON_STOP };
        const unsigned d[] = { 0, 300, 0 };
        char pid[32];

        snprintf(pid, sizeof(pid), "%d", (int) getpid());
        setenv("WATCHDOG_USEC", "100000", 1);
        setenv("WATCHDOG_PID", pid, 1);
        run_supervisor(&run, b, d, 3, 0, 0, 400);
        ck_assert_int_eq(run.exit_status, 11);
        /* Pinged every 50 ms while healthy: about six before the failure at 300 ms. */
        size_t pings = 0;
        for (const char *p = run.notify.log; (p = strstr(p, "WATCHDOG=1")); p++)
                pings++;
        ck_assert_int_ge(pings, 3);
        ck_assert_int_le(pings, 7);
        /* None after the failure, while the hung task keeps the process stopping for 400 ms. */
        const char *stopping = strstr(run.notify.log, "STOPPING=1");
        ck_assert_ptr_nonnull(stopping);
        ck_assert_ptr_null(strstr(stopping, "WATCHDOG=1"));
}
END_TEST

/* A loop held up for 400 ms must not catch up with a burst of WATCHDOG=1 afterwards. */
START_TEST(test_watchdog_no_burst_after_stall) {
        _cleanup_(run_done) Run run = {};
        const Behaviour b[] = { STALLS };
        const unsigned d[] = { 100 };
        char pid[32];
        size_t pings = 0;

        snprintf(pid, sizeof(pid), "%d", (int) getpid());
        setenv("WATCHDOG_USEC", "100000", 1);
        setenv("WATCHDOG_PID", pid, 1);
        run_supervisor(&run, b, d, 1, SIGTERM, 700, 2000);
        ck_assert_int_eq(run.exit_status, 0);
        for (const char *p = run.notify.log; (p = strstr(p, "WATCHDOG=1")); p++)
                pings++;
        /* 700 ms at one ping per 50 ms, less the 400 ms stall: about 6; catching up would make
         * it about 14. */
        ck_assert_int_ge(pings, 3);
        ck_assert_int_le(pings, 9);
}
END_TEST

START_TEST(test_status_shows_degraded) {
        _cleanup_(run_done) Run run = {};
        const Behaviour b[] = { DEGRADES };
        const unsigned d[] = { 1100 };

        run_supervisor(&run, b, d, 1, SIGTERM, 1400, 2000);
        ck_assert_int_eq(run.exit_status, 0);
        ck_assert_ptr_nonnull(strstr(run.notify.log, "STATUS=Running; alpha: running"));
        ck_assert_ptr_nonnull(strstr(run.notify.log, "alpha: reconnecting (test)"));
}
END_TEST

int main(void) {
        Suite *s = suite_create("supervisor");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 20);
        tcase_add_test(tc, test_sigterm_exits_zero_after_ready);
        tcase_add_test(tc, test_sigint_exits_zero);
        tcase_add_test(tc, test_fail_at_start);
        tcase_add_test(tc, test_fail_later_stops_siblings);
        tcase_add_test(tc, test_end_without_error_is_failure);
        tcase_add_test(tc, test_never_ready_no_ready);
        tcase_add_test(tc, test_hang_on_stop_times_out);
        tcase_add_test(tc, test_fail_together_first_decides);
        tcase_add_test(tc, test_second_sigint_abandons_stop);
        tcase_add_test(tc, test_watchdog_only_while_healthy);
        tcase_add_test(tc, test_status_shows_degraded);
        tcase_add_test(tc, test_watchdog_no_burst_after_stall);
        suite_add_tcase(s, tc);
        return tl_run_suite(s);
}
