/* SPDX-License-Identifier: MIT */
/* Supervisor semantics with test-only tasks: exit status, sd_notify order, logged cause. */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <sys/epoll.h>
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
        FAILS_AFTER_PINGS, /* reports failure (-EPIPE) once the run's ping trigger fires */
} Behaviour;

typedef struct Run Run;

typedef struct TestTask {
        Behaviour behaviour;
        unsigned delay_ms;
        sd_event *event;
        sd_event_source *timer;
        Task *task;
        int *stop_order;      /* shared counter: records the order stop() was called */
        int stopped_as;       /* 1-based position in the stop order */
        bool freed_marker;
        Run *run;
        int64_t fired_ms;     /* tl_now_ms() when the failure was reported or the stall began */
        int64_t stall_end_ms; /* tl_now_ms() when the stall ended */
} TestTask;

static void run_count_pings(Run *run);
static void run_on_hung_stop(Run *run);

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
                tt->fired_ms = tl_now_ms();
                tl_sleep_ms(400);
                tt->stall_end_ms = tl_now_ms();
                /* Every ping queued now was sent before the stall (none can be sent during
                 * it): count them as such before the loop turns again. */
                run_count_pings(tt->run);
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
        if (tt->behaviour == HANGS_ON_STOP) {
                run_on_hung_stop(tt->run);
                return 1;
        }
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

/* What the watchdog tests wait for instead of a fixed time: the supervisor's own pings, read
 * from the notify socket inside the loop as they come. How many pings a loop sends in a given
 * time depends on how often it gets a CPU, so these tests act once the pings they need have
 * come, and bound the count by the time they measured rather than by a time they assumed. */
typedef enum TriggerAction {
        TRIGGER_NONE,
        TRIGGER_FAIL_TASK, /* the FAILS_AFTER_PINGS task reports failure */
        TRIGGER_SIGTERM,   /* the process sends itself SIGTERM */
} TriggerAction;

typedef struct PingTrigger {
        TriggerAction action;
        unsigned pings;       /* WATCHDOG=1 wanted (after the stall, when a task stalls) */
        unsigned min_ms;      /* and at least this long after the start */
        unsigned deadline_ms; /* acts anyway this long after the start: a supervisor that does not
                               * ping fails the test's count instead of hanging it */
        size_t task;          /* the task that fails, for TRIGGER_FAIL_TASK */
} PingTrigger;

struct Run {
        TlNotify notify;
        char err_path[300];
        int exit_status;
        int stop_order;
        TestTask tasks[3];
        char *log;

        PingTrigger trigger;
        sd_event_source *notify_source, *min_timer, *deadline_timer;
        unsigned pings;          /* WATCHDOG=1 in notify.log so far */
        unsigned pings_at_mark;  /* how many of them came before the stall ended */
        bool marked;             /* no stall, or the stall is over */
        bool fired;
        bool sigint_on_stop;     /* a HANGS_ON_STOP task, asked to stop, has a helper send SIGINT */
        pid_t helper;
        int64_t started_ms;      /* tl_now_ms() just before supervisor_run() */
        int signal;              /* what send_signal() sends */
        int64_t signalled_ms;    /* tl_now_ms() just before a signal was sent */
};

static void run_on_hung_stop(Run *run) {
        pid_t self = getpid(), helper;

        if (!run->sigint_on_stop || run->helper != 0)
                return;
        helper = fork();
        ck_assert_int_ge(helper, 0);
        if (helper == 0) {
                kill(self, SIGINT);
                _exit(0);
        }
        run->helper = helper;
}

static unsigned count_pings(const char *log) {
        unsigned n = 0;

        for (const char *p = log; (p = strstr(p, "WATCHDOG=1")); p++)
                n++;
        return n;
}

/* Reads what the supervisor has sent so far (in order, into notify.log) and counts the pings;
 * called by a stalling task as its stall ends, it marks where "after the stall" begins. */
static void run_count_pings(Run *run) {
        tl_notify_drain(&run->notify);
        run->pings = count_pings(run->notify.log);
        if (!run->marked) {
                run->pings_at_mark = run->pings;
                run->marked = true;
        }
}

static void run_fire_trigger(Run *run) {
        TestTask *tt;

        if (run->fired)
                return;
        run->fired = true;
        (void) sd_event_source_set_enabled(run->notify_source, SD_EVENT_OFF);
        (void) sd_event_source_set_enabled(run->min_timer, SD_EVENT_OFF);
        (void) sd_event_source_set_enabled(run->deadline_timer, SD_EVENT_OFF);
        switch (run->trigger.action) {
        case TRIGGER_FAIL_TASK:
                tt = &run->tasks[run->trigger.task];
                tt->fired_ms = tl_now_ms();
                task_report_failure(tt->task, -EPIPE, "Test failure after %u watchdog pings", run->pings);
                break;
        case TRIGGER_SIGTERM:
                run->signalled_ms = tl_now_ms();
                kill(getpid(), SIGTERM);
                break;
        default:
                break;
        }
}

static void run_check_trigger(Run *run) {
        if (run->marked && run->pings - run->pings_at_mark >= run->trigger.pings &&
            tl_now_ms() - run->started_ms >= run->trigger.min_ms)
                run_fire_trigger(run);
}

static int on_notify_readable(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        (void) s;
        (void) fd;
        (void) revents;
        run_count_pings(userdata);
        run_check_trigger(userdata);
        return 0;
}

static int on_trigger_min(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) s;
        (void) usec;
        run_count_pings(userdata);
        run_check_trigger(userdata);
        return 0;
}

static int on_trigger_deadline(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) s;
        (void) usec;
        run_count_pings(userdata);
        run_fire_trigger(userdata);
        return 0;
}

static int send_signal(sd_event_source *s, uint64_t usec, void *userdata) {
        Run *run = userdata;
        (void) s;
        (void) usec;
        run->signalled_ms = tl_now_ms();
        kill(getpid(), run->signal);
        return 0;
}

/* Runs a supervisor over up to three test tasks; signal_ms > 0 sends sig after that long;
 * trigger (may be NULL) waits for watchdog pings, see PingTrigger. */
static void run_supervisor_full(Run *run, const Behaviour *b, const unsigned *delays, size_t n, int sig,
                                unsigned signal_ms, uint64_t stop_timeout_ms, const PingTrigger *trigger,
                                bool sigint_on_stop) {
        static const TaskOps *const ops[] = { &alpha_ops, &beta_ops, &gamma_ops };
        const char *dir = tl_tmpdir();
        Supervisor *s = NULL;
        sd_event *e;
        int saved_err;

        memset(run, 0, sizeof(*run));
        run->signal = sig;
        run->sigint_on_stop = sigint_on_stop;
        run->marked = true;
        if (trigger)
                run->trigger = *trigger;
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
        e = supervisor_get_event(s);
        for (size_t i = 0; i < n; i++) {
                Task *t;
                run->tasks[i] = (TestTask){ .behaviour = b[i], .delay_ms = delays ? delays[i] : 0,
                                            .event = e, .stop_order = &run->stop_order, .run = run };
                if (b[i] == STALLS)
                        run->marked = false;
                ck_assert_int_eq(task_new(ops[i], &run->tasks[i], &t), 0);
                ck_assert_int_eq(supervisor_add_task(s, t), 0);
        }
        if (signal_ms > 0)
                ck_assert_int_ge(sd_event_add_time_relative(e, NULL, CLOCK_MONOTONIC, signal_ms * 1000ULL, 0,
                                                            send_signal, run),
                                 0);
        if (run->trigger.action != TRIGGER_NONE) {
                ck_assert_int_ge(sd_event_add_io(e, &run->notify_source, run->notify.fd, EPOLLIN, on_notify_readable, run), 0);
                ck_assert_int_ge(sd_event_add_time_relative(e, &run->min_timer, CLOCK_MONOTONIC,
                                                            run->trigger.min_ms * 1000ULL, 0, on_trigger_min, run),
                                 0);
                ck_assert_int_ge(sd_event_add_time_relative(e, &run->deadline_timer, CLOCK_MONOTONIC,
                                                            run->trigger.deadline_ms * 1000ULL, 0, on_trigger_deadline,
                                                            run),
                                 0);
        }
        run->started_ms = tl_now_ms();
        run->exit_status = supervisor_run(s);
        run->notify_source = sd_event_source_disable_unref(run->notify_source);
        run->min_timer = sd_event_source_disable_unref(run->min_timer);
        run->deadline_timer = sd_event_source_disable_unref(run->deadline_timer);
        supervisor_free(s);

        fflush(stderr);
        dup2(saved_err, STDERR_FILENO);
        close(saved_err);
        run_count_pings(run);
        run->log = tl_read_file(run->err_path);
        for (size_t i = 0; i < n; i++)
                ck_assert_msg(run->tasks[i].freed_marker, "task %zu not freed", i);
}

static void run_supervisor(Run *run, const Behaviour *b, const unsigned *delays, size_t n, int sig,
                           unsigned signal_ms, uint64_t stop_timeout_ms) {
        run_supervisor_full(run, b, delays, n, sig, signal_ms, stop_timeout_ms, NULL, false);
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

        run_supervisor(&run, b, NULL, 2, SIGTERM, 30, 200);
        ck_assert_int_eq(run.exit_status, 13);
        /* Gave up soon after the 200 ms: counted from the signal, not from before the setup
         * (which a loaded machine stretches); ten times the timeout still catches a timeout
         * taken for seconds or one that never fires. */
        ck_assert_int_lt(tl_now_ms() - run.signalled_ms, 2000);
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

        /* First SIGINT at 30 ms starts the stop; a second one comes from a helper forked when
         * the hung task is asked to stop, so it arrives while the stop is under way however
         * slowly the test gets there (a helper sleeping a fixed time could hit before the first). */
        run_supervisor_full(&run, b, NULL, 2, SIGINT, 30, 10000, NULL, true);
        ck_assert_int_gt(run.helper, 0);
        ck_assert_int_eq(tl_wait(run.helper, 10000), 0);
        ck_assert_int_eq(run.exit_status, 13);
        /* It ended before the 10 s stop timeout could (which would also log "did not stop
         * within"). */
        ck_assert_int_lt(tl_now_ms() - run.signalled_ms, 10000);
        ck_assert_ptr_nonnull(strstr(run.log, "Received SIGINT again"));
        ck_assert_ptr_null(strstr(run.log, "did not stop within"));
}
END_TEST

/* The watchdog period in these tests: WATCHDOG_USEC=100000, pinged every half of it. */
#define PING_PERIOD_MS 50

static void enable_watchdog(void) {
        char pid[32];

        snprintf(pid, sizeof(pid), "%d", (int) getpid());
        setenv("WATCHDOG_USEC", "100000", 1);
        setenv("WATCHDOG_PID", pid, 1);
}

/* The most pings a supervisor that never catches up can send in window_ms: its pings are due
 * one period apart and a timer never fires before it is due, so at most one per whole period.
 * The + 1 is for our millisecond timestamps, each up to 1 ms short of the loop's microseconds. */
static unsigned max_pings_in(int64_t window_ms) {
        return window_ms < 0 ? 0 : (unsigned) ((window_ms + 1) / PING_PERIOD_MS);
}

START_TEST(test_watchdog_only_while_healthy) {
        _cleanup_(run_done) Run run = {};
        const Behaviour b[] = { RUNS, FAILS_AFTER_PINGS, HANGS_ON_STOP };
        /* beta fails once three pings came and at least 300 ms passed: how long that takes
         * depends on how often the loop gets a CPU, so the failure waits for the pings rather
         * than for a time. Without any ping it fails after 10 s, and the count below fails. */
        const PingTrigger trigger = { .action = TRIGGER_FAIL_TASK, .pings = 3, .min_ms = 300, .deadline_ms = 10000,
                                      .task = 1 };
        int64_t healthy_ms;
        unsigned pings, most;

        enable_watchdog();
        run_supervisor_full(&run, b, NULL, 3, 0, 0, 400, &trigger, false);
        ck_assert_int_eq(run.exit_status, 11);
        /* Pinged every 50 ms while healthy: at least the three beta waited for, and no more than
         * one per period of the time it was healthy as we measured it (about six in 300 ms on
         * a quiet machine). */
        healthy_ms = run.tasks[1].fired_ms - run.started_ms;
        pings = count_pings(run.notify.log);
        most = max_pings_in(healthy_ms) + 1;
        ck_assert_msg(pings >= 3 && pings <= most, "%u pings in %" PRId64 " ms healthy, expected 3..%u", pings, healthy_ms,
                      most);
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
        /* SIGTERM once three pings came after the stall and at least 700 ms passed since the
         * start (or after 10 s in any case, and the count below fails). */
        const PingTrigger trigger = { .action = TRIGGER_SIGTERM, .pings = 3, .min_ms = 700, .deadline_ms = 10000 };
        const TestTask *tt = &run.tasks[0];
        int64_t before_ms, stall_ms, after_ms;
        unsigned pings, most;

        enable_watchdog();
        run_supervisor_full(&run, b, d, 1, 0, 0, 2000, &trigger, false);
        ck_assert_int_eq(run.exit_status, 0);
        ck_assert_int_gt(tt->stall_end_ms, 0);
        /* The windows as measured: the loop ran before_ms, stood still stall_ms, ran after_ms
         * until SIGTERM was sent. A supervisor that does not catch up pings at most once per
         * period of before_ms and of after_ms, plus once for the ping that fell due during the
         * stall (sent as soon as the loop turns again), plus once between sending SIGTERM and
         * handling it: about 7 on a quiet machine. Catching up would add one per period of the
         * stall, 8 or more: the bound stays below that however long the windows get. */
        before_ms = tt->fired_ms - run.started_ms;
        stall_ms = tt->stall_end_ms - tt->fired_ms;
        after_ms = run.signalled_ms - tt->stall_end_ms;
        pings = count_pings(run.notify.log);
        most = max_pings_in(before_ms) + 1 + max_pings_in(after_ms) + 1;
        ck_assert_msg(run.pings - run.pings_at_mark >= 3, "%u pings after the stall", run.pings - run.pings_at_mark);
        ck_assert_msg(pings >= 3 && pings <= most,
                      "%u pings: %" PRId64 " ms running, %" PRId64 " ms stalled, %" PRId64 " ms running; expected 3..%u",
                      pings, before_ms, stall_ms, after_ms, most);
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

        /* Each test takes under 2 s on a quiet machine; a loaded one stretches that several
         * times over, and the watchdog tests may wait up to 10 s for their pings. */
        tcase_set_timeout(tc, 60);
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
