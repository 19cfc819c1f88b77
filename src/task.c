/* SPDX-License-Identifier: MIT */
/* The task contract: state, transitions and the reports a task sends its supervisor. */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>

#include "collector/task.h"
#include "collector/time-util.h"

struct Task {
        const TaskOps *ops;
        void *userdata;
        TaskState state;
        bool stop_requested;
        int error;
        char *cause;          /* failure cause, or degraded cause */
        task_listener_t listener;
        void *listener_userdata;
        uint64_t since_usec;  /* CLOCK_REALTIME of the last state change, for `status` */
        char *last_problem;   /* the last degraded or failure cause, kept after recovery */
        uint64_t last_problem_usec;
};

static const char *const state_names[_TASK_STATE_MAX] = {
        [TASK_NEW] = "new",
        [TASK_STARTING] = "starting",
        [TASK_RUNNING] = "running",
        [TASK_DEGRADED] = "degraded",
        [TASK_STOPPING] = "stopping",
        [TASK_STOPPED] = "stopped",
        [TASK_FAILED] = "failed",
};

const char *task_state_to_string(TaskState s) {
        if (s < 0 || s >= _TASK_STATE_MAX)
                return NULL;
        return state_names[s];
}

int task_new(const TaskOps *ops, void *userdata, Task **ret) {
        Task *t;

        assert(ops && ops->name && ops->start);
        assert(ret);

        t = calloc(1, sizeof(*t));
        if (!t) {
                if (ops->free)
                        ops->free(userdata);
                return -ENOMEM;
        }
        t->ops = ops;
        t->userdata = userdata;
        t->state = TASK_NEW;
        *ret = t;
        return 0;
}

Task *task_free(Task *t) {
        if (!t)
                return NULL;
        if (t->ops->free)
                t->ops->free(t->userdata);
        free(t->cause);
        free(t->last_problem);
        free(t);
        return NULL;
}

const char *task_get_name(const Task *t) {
        return t->ops->name;
}

int task_get_exit_status(const Task *t) {
        return t->ops->exit_status;
}

void *task_get_userdata(const Task *t) {
        return t->userdata;
}

TaskState task_get_state(const Task *t) {
        return t->state;
}

int task_get_error(const Task *t) {
        return t->state == TASK_FAILED ? t->error : 0;
}

const char *task_get_cause(const Task *t) {
        return t->state == TASK_FAILED ? t->cause : NULL;
}

bool task_is_healthy(const Task *t) {
        return t->state == TASK_STARTING || t->state == TASK_RUNNING || t->state == TASK_DEGRADED;
}

void task_format_status(Task *t, char *buf, size_t size) {
        if (size == 0)
                return;
        if (t->ops->format_status && t->state != TASK_FAILED) {
                t->ops->format_status(t, buf, size);
                return;
        }
        if (t->state == TASK_DEGRADED && t->cause)
                snprintf(buf, size, "%s", t->cause);
        else
                snprintf(buf, size, "%s", task_state_to_string(t->state));
}

void task_set_listener(Task *t, task_listener_t listener, void *userdata) {
        t->listener = listener;
        t->listener_userdata = userdata;
}

static void task_set_state(Task *t, TaskState state) {
        TaskState old = t->state;

        if (old == state)
                return;
        t->state = state;
        t->since_usec = clock_now_usec(CLOCK_REALTIME);
        if (t->listener)
                t->listener(t, old, t->listener_userdata);
}

/* Keeps a copy of a cause for `status`; without memory the previous one stays. */
static void task_note_problem(Task *t, const char *cause) {
        char *copy;

        if (!cause)
                return;
        copy = strdup(cause);
        if (!copy)
                return;
        free(t->last_problem);
        t->last_problem = copy;
        t->last_problem_usec = clock_now_usec(CLOCK_REALTIME);
}

uint64_t task_get_state_since_usec(const Task *t) {
        return t->since_usec;
}

const char *task_get_last_problem(const Task *t, uint64_t *ret_usec) {
        if (ret_usec)
                *ret_usec = t->last_problem ? t->last_problem_usec : 0;
        return t->last_problem;
}

int task_get_info(Task *t, TaskInfo *ret) {
        if (!t->ops->get_info)
                return -EOPNOTSUPP;
        *ret = (TaskInfo) {};
        t->ops->get_info(t, ret);
        return 0;
}

static bool task_is_final(const Task *t) {
        return t->state == TASK_FAILED || t->state == TASK_STOPPED;
}

int task_start(Task *t) {
        int r;

        assert(t->state == TASK_NEW);
        t->state = TASK_STARTING;
        t->since_usec = clock_now_usec(CLOCK_REALTIME);
        r = t->ops->start(t);
        /* The contract in task.h: a start() that reported its failure returns 0. */
        assert(r >= 0 || t->state != TASK_FAILED);
        if (r < 0)
                task_report_failure(t, r, "Failed to start");
        return r;
}

int task_stop(Task *t) {
        int r = 0;

        t->stop_requested = true;
        if (t->state == TASK_STOPPED)
                return 0;
        if (t->ops->stop)
                r = t->ops->stop(t);
        if (r > 0) {
                if (!task_is_final(t))
                        task_set_state(t, TASK_STOPPING);
                return 1;
        }
        if (!task_is_final(t))
                task_set_state(t, TASK_STOPPED);
        return 0;
}

void task_report_running(Task *t) {
        if (task_is_final(t) || t->state == TASK_STOPPING || t->stop_requested)
                return;
        t->cause = mfree(t->cause);
        task_set_state(t, TASK_RUNNING);
}

void task_report_degraded(Task *t, const char *cause) {
        if (task_is_final(t) || t->state == TASK_STOPPING || t->stop_requested)
                return;
        free(t->cause);
        t->cause = cause ? strdup(cause) : NULL;
        task_note_problem(t, cause);
        /* Listeners want to see a new cause too (STATUS=), so notify even without a change. */
        if (t->state == TASK_DEGRADED) {
                if (t->listener)
                        t->listener(t, TASK_DEGRADED, t->listener_userdata);
                return;
        }
        task_set_state(t, TASK_DEGRADED);
}

void task_report_failurev(Task *t, int error, const char *format, va_list ap) {
        char *cause = NULL;

        if (task_is_final(t))
                return;
        if (vasprintf(&cause, format, ap) < 0)
                cause = NULL;
        free(t->cause);
        t->cause = cause;
        task_note_problem(t, cause);
        t->error = error > 0 ? -error : error;
        task_set_state(t, TASK_FAILED);
}

void task_report_failure(Task *t, int error, const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        task_report_failurev(t, error, format, ap);
        va_end(ap);
}

void task_report_stopped(Task *t) {
        if (task_is_final(t))
                return;
        if (!t->stop_requested) {
                task_report_failure(t, 0, "Task ended without being asked to stop");
                return;
        }
        task_set_state(t, TASK_STOPPED);
}
