/* SPDX-License-Identifier: MIT */
/* The supervisor: runs the tasks on one loop; the first failure stops them all and names the exit status. */
#include <assert.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>

#include "collector/log.h"
#include "collector/supervisor.h"
#include "collector/time-util.h"

#define STATUS_MAX 1024

struct Supervisor {
        SupervisorOptions options;
        sd_event *event;

        Task **tasks;
        size_t n_tasks;

        sd_event_source *signal_sources[3];
        sd_event_source *watchdog_source;
        sd_event_source *status_source;
        sd_event_source *stop_timeout_source;
        sd_event_source *stop_source;   /* due timer: advances the stop outside task callbacks */
        uint64_t watchdog_usec;

        bool ready_sent;
        bool stopping;
        bool stop_requested;          /* by a signal, as opposed to a failure */
        bool exited;
        int exit_status;
        size_t stop_next;             /* tasks[0..stop_next) still to stop, last first */
        Task *stop_waiting;           /* the task whose pending stop we wait for */

        uint64_t status_last_usec;
        char status_sent[STATUS_MAX];

        SupervisorReloadFn reload;    /* SIGHUP */
        void *reload_userdata;
        char reload_note[256];        /* in STATUS= until a reload says otherwise */
};

static const int handled_signals[] = { SIGTERM, SIGINT, SIGHUP };

static uint64_t now_usec(Supervisor *s) {
        return event_now_usec(s->event, CLOCK_MONOTONIC);
}

static void supervisor_format_status(Supervisor *s, char *buf, size_t size) {
        size_t used;
        const char *prefix;
        Task *failed = NULL;

        for (size_t i = 0; i < s->n_tasks && !failed; i++)
                if (task_get_state(s->tasks[i]) == TASK_FAILED)
                        failed = s->tasks[i];

        if (failed)
                prefix = "Failed";
        else if (s->stopping)
                prefix = "Stopping";
        else if (s->ready_sent)
                prefix = "Running";
        else
                prefix = "Starting";

        used = (size_t) snprintf(buf, size, "%s", prefix);
        if (failed && used < size)
                used += (size_t) snprintf(buf + used, size - used, " (%s: %s)", task_get_name(failed),
                                          strna(task_get_cause(failed)));
        if (s->reload_note[0] && used < size)
                used += (size_t) snprintf(buf + used, size - used, " (%s)", s->reload_note);
        for (size_t i = 0; i < s->n_tasks && used < size; i++) {
                char one[256];

                task_format_status(s->tasks[i], one, sizeof(one));
                used += (size_t) snprintf(buf + used, size - used, "%s %s: %s", i == 0 ? ";" : ",",
                                          task_get_name(s->tasks[i]), one);
        }
}

/* Sends STATUS= when it changed and the last one is at least the status interval old, or
 * when force is set (state changes a person must see: ready, failed, stopping). */
static void supervisor_send_status(Supervisor *s, bool force) {
        char status[STATUS_MAX];
        uint64_t now = now_usec(s);

        if (!force && now - s->status_last_usec < s->options.status_interval_usec)
                return;
        supervisor_format_status(s, status, sizeof(status));
        if (streq(status, s->status_sent))
                return;
        (void) sd_notifyf(false, "STATUS=%s", status);
        memcpy(s->status_sent, status, sizeof(status));
        s->status_last_usec = now;
}

/* Re-arms a periodic timer one period after it was due, or one period from now when the loop
 * was held up longer than that: a stall must not turn into a burst of catch-up events. */
static void rearm_periodic(Supervisor *s, sd_event_source *source, uint64_t due, uint64_t period) {
        uint64_t next = due + period, now = now_usec(s);

        if (next <= now)
                next = now + period;
        (void) sd_event_source_set_time(source, next);
        (void) sd_event_source_set_enabled(source, SD_EVENT_ON);
}

static int on_status_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        Supervisor *s = userdata;

        supervisor_send_status(s, false);
        rearm_periodic(s, source, usec, s->options.status_interval_usec);
        return 0;
}

static bool supervisor_all_healthy(Supervisor *s) {
        for (size_t i = 0; i < s->n_tasks; i++)
                if (!task_is_healthy(s->tasks[i]))
                        return false;
        return true;
}

static int on_watchdog_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        Supervisor *s = userdata;

        /* Only a loop whose tasks all live says it is alive: a dead input must not be hidden
         * behind a loop that still turns. */
        if (!s->stopping && supervisor_all_healthy(s))
                (void) sd_notify(false, "WATCHDOG=1");
        rearm_periodic(s, source, usec, s->watchdog_usec / 2);
        return 0;
}

static void supervisor_exit(Supervisor *s) {
        char status[32];

        if (s->exited)
                return;
        s->exited = true;
        (void) sd_event_source_set_enabled(s->stop_timeout_source, SD_EVENT_OFF);
        snprintf(status, sizeof(status), "%d", s->exit_status);
        log_full_errno_fields(s->exit_status == 0 ? LOG_INFO : LOG_NOTICE, 0,
                              LOG_FIELDS("EXIT_STATUS", status), "Exiting with status %d.", s->exit_status);
        (void) sd_event_exit(s->event, s->exit_status);
}

/* Stops tasks last-added first, each after the previous one has stopped, then exits. */
static void supervisor_stop_next(Supervisor *s) {
        while (!s->exited) {
                Task *t;

                if (s->stop_waiting) {
                        TaskState st = task_get_state(s->stop_waiting);
                        if (st != TASK_STOPPED && st != TASK_FAILED)
                                return;
                        s->stop_waiting = NULL;
                }
                if (s->stop_next == 0) {
                        supervisor_exit(s);
                        return;
                }
                t = s->tasks[--s->stop_next];
                if (task_get_state(t) == TASK_NEW)
                        continue;
                if (task_stop(t) > 0)
                        s->stop_waiting = t;
        }
}

/* Gives up waiting for the task being stopped: the stop timed out, or a second SIGINT. */
static void supervisor_abandon_stop(Supervisor *s) {
        /* Still ask the remaining tasks (the store above all) to stop: a store commits at once. */
        s->stop_waiting = NULL;
        while (s->stop_next > 0) {
                Task *t = s->tasks[--s->stop_next];
                if (task_get_state(t) != TASK_NEW)
                        (void) task_stop(t);
        }
        /* A stop on request that hangs must not look like success; a stop after a failure
         * keeps the failed task's status, the first cause. */
        if (s->exit_status == EXIT_STATUS_OK)
                s->exit_status = EXIT_STATUS_STOP_TIMEOUT;
        supervisor_exit(s);
}

static int on_stop_timeout(sd_event_source *source, uint64_t usec, void *userdata) {
        Supervisor *s = userdata;
        (void) source;
        (void) usec;

        if (s->stop_waiting)
                log_full_errno_fields(LOG_ERR, 0, LOG_FIELDS("TASK", task_get_name(s->stop_waiting), "EXIT_STATUS", "13"),
                                      "Task %s did not stop within %" PRIu64 " ms, giving up on it.",
                                      task_get_name(s->stop_waiting), s->options.stop_timeout_usec / USEC_PER_MSEC);
        supervisor_abandon_stop(s);
        return 0;
}

static int on_stop_step(sd_event_source *source, uint64_t usec, void *userdata) {
        (void) source;
        (void) usec;
        supervisor_stop_next(userdata);
        return 0;
}

/* Stopping never runs inside a task's own callback (a task failing in start() must not be
 * stopped from within it): it goes through a timer that is already due, made in advance by
 * supervisor_new() so that a stop cannot fail for want of memory. A due timer is dispatched in
 * the next loop iteration, after what was already pending in this one: a second task failing
 * at the same moment is still heard before the stop reaches it. */
static void supervisor_schedule_stop(Supervisor *s) {
        (void) sd_event_source_set_time(s->stop_source, 1);
        (void) sd_event_source_set_enabled(s->stop_source, SD_EVENT_ONESHOT);
}

static void supervisor_begin_stop(Supervisor *s, const char *why) {
        int r;

        if (s->stopping)
                return;
        s->stopping = true;
        s->stop_next = s->n_tasks;

        (void) sd_notifyf(false, "STOPPING=1");
        supervisor_send_status(s, true);
        log_info("Stopping: %s.", why);

        /* Both sources exist since supervisor_new(): arming them cannot fail. */
        r = sd_event_source_set_time_relative(s->stop_timeout_source, s->options.stop_timeout_usec);
        if (r >= 0)
                r = sd_event_source_set_enabled(s->stop_timeout_source, SD_EVENT_ONESHOT);
        assert(r >= 0);
        supervisor_schedule_stop(s);
}

static void supervisor_on_failure(Supervisor *s, Task *t) {
        char status[16];
        int error = task_get_error(t);
        bool first = !s->stopping || (s->stop_requested && s->exit_status == 0);

        snprintf(status, sizeof(status), "%d", task_get_exit_status(t));
        if (error != 0)
                log_full_errno_fields(LOG_ERR, error, LOG_FIELDS("TASK", task_get_name(t), "EXIT_STATUS", status),
                                      "Task %s failed: %s: %m", task_get_name(t), strna(task_get_cause(t)));
        else
                log_full_errno_fields(LOG_ERR, 0, LOG_FIELDS("TASK", task_get_name(t), "EXIT_STATUS", status),
                                      "Task %s failed: %s", task_get_name(t), strna(task_get_cause(t)));

        /* The first failure names the exit status; a failure while stopping on request (the
         * store failing its last commit) still makes the exit non-zero. */
        if (first)
                s->exit_status = task_get_exit_status(t);
        if (!s->stopping)
                supervisor_begin_stop(s, "a task failed");
        else
                supervisor_send_status(s, true);
}

static void supervisor_check_ready(Supervisor *s) {
        if (s->ready_sent || s->stopping)
                return;
        for (size_t i = 0; i < s->n_tasks; i++)
                if (task_get_state(s->tasks[i]) != TASK_RUNNING)
                        return;
        s->ready_sent = true;
        (void) sd_notify(false, "READY=1");
        log_info("All %zu tasks running, ready.", s->n_tasks);
        supervisor_send_status(s, true);
}

static void on_task_state(Task *t, TaskState old_state, void *userdata) {
        Supervisor *s = userdata;
        TaskState state = task_get_state(t);

        (void) old_state;
        switch (state) {
        case TASK_FAILED:
                supervisor_on_failure(s, t);
                break;
        case TASK_RUNNING:
                supervisor_check_ready(s);
                supervisor_send_status(s, false);
                break;
        case TASK_DEGRADED:
                supervisor_send_status(s, false);
                break;
        default:
                break;
        }
        if (s->stopping && (state == TASK_STOPPED || state == TASK_FAILED))
                supervisor_schedule_stop(s);
}

/* SIGHUP: RELOADING=1, the reload (the loop holds still meanwhile, so nothing is dropped: the
 * kernel and the broker keep what arrives), READY=1. Before READY=1 was first sent there is no
 * reload to report: the reload still happens, and READY=1 waits for the tasks as ever. */
static void supervisor_reload(Supervisor *s) {
        const char *note = NULL;

        if (!s->reload || s->stopping) {
                log_notice("Received SIGHUP; %s, ignoring.", s->stopping ? "stopping" : "reloading is not supported");
                return;
        }
        if (s->ready_sent)
                (void) sd_notifyf(false, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64, clock_now_usec(CLOCK_MONOTONIC));
        (void) s->reload(s->reload_userdata, &note);
        snprintf(s->reload_note, sizeof(s->reload_note), "%s", strempty(note));
        /* STATUS= first: when the reload is seen to end, systemctl status says how it went. */
        supervisor_send_status(s, true);
        if (s->ready_sent)
                (void) sd_notify(false, "READY=1");
}

static int on_signal(sd_event_source *source, const struct signalfd_siginfo *si, void *userdata) {
        Supervisor *s = userdata;
        (void) source;

        if (si->ssi_signo == SIGHUP) {
                supervisor_reload(s);
                return 0;
        }
        if (s->stopping) {
                if (si->ssi_signo == SIGINT) {
                        log_warning("Received SIGINT again, not waiting for tasks to stop.");
                        supervisor_abandon_stop(s);
                }
                return 0;
        }
        s->stop_requested = true;
        s->exit_status = EXIT_STATUS_OK;
        supervisor_begin_stop(s, si->ssi_signo == SIGTERM ? "received SIGTERM" : "received SIGINT");
        return 0;
}

int supervisor_new(const SupervisorOptions *o, Supervisor **ret) {
        _cleanup_(supervisor_freep) Supervisor *s = NULL;
        sigset_t mask;
        int r;

        assert(o && ret);

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->options = *o;
        if (s->options.status_interval_usec == 0)
                s->options.status_interval_usec = USEC_PER_SEC;

        r = sd_event_new(&s->event);
        if (r < 0)
                return r;

        /* Signals whose default action kills the process would lose the open batch and say
         * nothing: a write past a file size limit (LimitFSIZE=) and a write to a closed pipe
         * (stderr read by a program that went away) fail with EFBIG and EPIPE instead, which
         * the store and the log handle (exit 12 with the cause; a lost log line). libmosquitto
         * ignores SIGPIPE itself, but only once the MQTT task exists. */
        if (signal(SIGPIPE, SIG_IGN) == SIG_ERR || signal(SIGXFSZ, SIG_IGN) == SIG_ERR)
                return -errno;

        /* libsystemd 252 wants the signals blocked before sd_event_add_signal(). */
        sigemptyset(&mask);
        for (size_t i = 0; i < ELEMENTSOF(handled_signals); i++)
                sigaddset(&mask, handled_signals[i]);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return -errno;
        for (size_t i = 0; i < ELEMENTSOF(handled_signals); i++) {
                r = sd_event_add_signal(s->event, &s->signal_sources[i], handled_signals[i], on_signal, s);
                if (r < 0)
                        return r;
        }

        /* What a stop needs is allocated now, disabled: stopping is bounded and never fails. */
        r = sd_event_add_time(s->event, &s->stop_source, CLOCK_MONOTONIC, UINT64_MAX, 0, on_stop_step, s);
        if (r >= 0)
                r = sd_event_source_set_enabled(s->stop_source, SD_EVENT_OFF);
        if (r >= 0)
                r = sd_event_add_time(s->event, &s->stop_timeout_source, CLOCK_MONOTONIC, UINT64_MAX,
                                      USEC_PER_MSEC, on_stop_timeout, s);
        if (r >= 0)
                r = sd_event_source_set_enabled(s->stop_timeout_source, SD_EVENT_OFF);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(s);
        return 0;
}

Supervisor *supervisor_free(Supervisor *s) {
        if (!s)
                return NULL;
        for (size_t i = 0; i < s->n_tasks; i++)
                task_free(s->tasks[i]);
        free(s->tasks);
        for (size_t i = 0; i < ELEMENTSOF(s->signal_sources); i++)
                sd_event_source_disable_unref(s->signal_sources[i]);
        sd_event_source_disable_unref(s->watchdog_source);
        sd_event_source_disable_unref(s->status_source);
        sd_event_source_disable_unref(s->stop_timeout_source);
        sd_event_source_disable_unref(s->stop_source);
        sd_event_unref(s->event);
        free(s);
        return NULL;
}

sd_event *supervisor_get_event(Supervisor *s) {
        return s->event;
}

void supervisor_set_reload(Supervisor *s, SupervisorReloadFn fn, void *userdata) {
        s->reload = fn;
        s->reload_userdata = userdata;
}

size_t supervisor_get_n_tasks(const Supervisor *s) {
        return s->n_tasks;
}

Task *supervisor_get_task(const Supervisor *s, size_t i) {
        return i < s->n_tasks ? s->tasks[i] : NULL;
}

const char *supervisor_get_phase(const Supervisor *s) {
        return s->stopping ? "stopping" : s->ready_sent ? "running" : "starting";
}

int supervisor_add_task(Supervisor *s, Task *t) {
        Task **n;

        n = realloc(s->tasks, (s->n_tasks + 1) * sizeof(Task *));
        if (!n) {
                task_free(t);
                return -ENOMEM;
        }
        s->tasks = n;
        s->tasks[s->n_tasks++] = t;
        task_set_listener(t, on_task_state, s);
        return 0;
}

int supervisor_run(Supervisor *s) {
        int r;

        (void) sd_notify(false, "STATUS=Starting");

        r = sd_watchdog_enabled(false, &s->watchdog_usec);
        if (r > 0 && s->watchdog_usec > 0) {
                r = sd_event_add_time_relative(s->event, &s->watchdog_source, CLOCK_MONOTONIC,
                                               s->watchdog_usec / 2, USEC_PER_MSEC, on_watchdog_timer, s);
                if (r < 0)
                        log_warning_errno(r, "Failed to arm the watchdog timer, ignoring: %m");
        }
        r = sd_event_add_time_relative(s->event, &s->status_source, CLOCK_MONOTONIC,
                                       s->options.status_interval_usec, 10 * USEC_PER_MSEC, on_status_timer, s);
        if (r < 0)
                log_warning_errno(r, "Failed to arm the status timer, ignoring: %m");

        /* Start in order; a failure at start stops those already started. */
        for (size_t i = 0; i < s->n_tasks && !s->stopping; i++)
                (void) task_start(s->tasks[i]);
        supervisor_check_ready(s);

        r = sd_event_loop(s->event);
        if (r < 0) {
                log_error_errno(r, "Event loop failed: %m");
                (void) sd_notify(false, "STOPPING=1");
                return EXIT_STATUS_UNEXPECTED;
        }
        return s->exit_status;
}
