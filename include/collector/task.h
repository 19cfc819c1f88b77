/* SPDX-License-Identifier: MIT */
/* The task contract: what every supervised input (and the store) implements and reports. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "collector/macro.h"

typedef struct Task Task;

/* What `sensor-collector status` shows of an input besides its state: filled by the task's
 * get_info(). Strings are borrowed from the task, valid until it is freed. */
typedef struct TaskInfo {
        const char *origin;           /* the device path, the broker's host:port */
        uint64_t frames;              /* frames stored since start */
        uint64_t readings;            /* readings handed to the store since start */
        uint64_t rejects;             /* rejects handed to the store since start */
        uint64_t readings_last_minute;
        uint64_t rejects_last_minute;
        uint64_t reconnects;          /* reopens of the port, reconnections to the broker */
        const char *last_error;       /* what went wrong last ("Connection refused"); NULL: none */
} TaskInfo;

typedef enum TaskState {
        TASK_NEW,        /* created, not started */
        TASK_STARTING,   /* start() called, not running yet */
        TASK_RUNNING,    /* doing its job: counts toward READY=1 */
        TASK_DEGRADED,   /* riding out a recoverable fault (reconnecting, reopening) */
        TASK_STOPPING,   /* stop() called, waiting for task_report_stopped() */
        TASK_STOPPED,    /* stopped on request */
        TASK_FAILED,     /* reported failure, or ended without being asked */
        _TASK_STATE_MAX,
        _TASK_STATE_INVALID = -EINVAL,
} TaskState;

typedef struct TaskOps {
        /* Short name, used in logs (TASK=) and STATUS=: "serial", "mqtt", "store". */
        const char *name;
        /* Process exit status when this task fails (10, 11, 12, ...). */
        int exit_status;
        /* Begin work. Must not block. One failure contract for every task: start() either
         * returns -errno, having reported nothing (the task layer then reports the failure as
         * "Failed to start: <error>"), or returns 0. 0 means started (running is reported later,
         * or from within start() via task_report_running()) or failed with a cause of its own
         * (task_report_failure() called from within start()). Never both: a start() that has
         * reported a failure returns 0. */
        int (*start)(Task *t);
        /* Begin an orderly stop: close ports, disconnect, commit. Returns 0 when fully stopped
         * now, or 1 when the stop completes later with task_report_stopped(). Idempotent: may be
         * called again, and after a failure. Never fails. May be NULL (stops at once). */
        int (*stop)(Task *t);
        /* Frees the userdata; called once, after stop. May be NULL. */
        void (*free)(void *userdata);
        /* Writes a short one-line status ("running, 1234 readings, 2 rejects") into buf.
         * May be NULL. */
        void (*format_status)(Task *t, char *buf, size_t size);
        /* Fills *ret for `sensor-collector status` (inputs only). May be NULL. */
        void (*get_info)(Task *t, TaskInfo *ret);
} TaskOps;

/* Called by the task layer on every state change; the supervisor listens. */
typedef void (*task_listener_t)(Task *t, TaskState old_state, void *userdata);

/* Creates a task in TASK_NEW. ops must outlive the task (use a static const). userdata is owned
 * by the task from now on, even on failure: ops->free releases it. Returns 0 or -ENOMEM. */
int task_new(const TaskOps *ops, void *userdata, Task **ret);

/* Frees the task and its userdata (through ops->free). Does not call stop. Accepts NULL;
 * returns NULL. */
Task *task_free(Task *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(Task *, task_free);

const char *task_get_name(const Task *t);
int task_get_exit_status(const Task *t);
void *task_get_userdata(const Task *t);
TaskState task_get_state(const Task *t);
/* The failure's error (negative errno) and cause text; 0 / NULL unless TASK_FAILED. The text
 * is owned by the task. */
int task_get_error(const Task *t);
const char *task_get_cause(const Task *t);
/* True in STARTING, RUNNING or DEGRADED (riding out a recoverable fault within budget). */
bool task_is_healthy(const Task *t);
/* Fills buf from ops->format_status, or with the state name. */
void task_format_status(Task *t, char *buf, size_t size);

const char *task_state_to_string(TaskState s);

/* For `sensor-collector status`. When the task entered its current state, in CLOCK_REALTIME
 * microseconds (0 while TASK_NEW). */
uint64_t task_get_state_since_usec(const Task *t);
/* The last problem the task reported (a degraded or failure cause), kept after it recovered;
 * NULL when there was none. *ret_usec (may be NULL) gets its CLOCK_REALTIME time. The text is
 * owned by the task. */
const char *task_get_last_problem(const Task *t, uint64_t *ret_usec);
/* Fills *ret through ops->get_info. Returns 0, or -EOPNOTSUPP for a task that is not an input. */
int task_get_info(Task *t, TaskInfo *ret);

/* For the supervisor only. */
void task_set_listener(Task *t, task_listener_t listener, void *userdata);
int task_start(Task *t);
/* Returns 0 when stopped, 1 when the stop completes later. */
int task_stop(Task *t);

/* For task implementations: report back to the supervisor. Each is a no-op once the task has
 * failed or stopped, so late callbacks are harmless. */

/* The task is doing its job (port open, subscriptions granted). Also leaves DEGRADED. */
void task_report_running(Task *t);
/* The task is riding out a recoverable fault; cause is a short text for STATUS= (copied). */
void task_report_degraded(Task *t, const char *cause);
/* The task cannot go on: the process will stop the others and exit with the task's code.
 * error is a negative errno (0 means "ended without error", which is a failure too); the cause
 * is formatted like printf, and the supervisor logs it once, at error priority. The task must
 * not log the same cause itself. */
void task_report_failure(Task *t, int error, const char *format, ...) _printf_(3, 4);
void task_report_failurev(Task *t, int error, const char *format, va_list ap) _printf_(3, 0);
/* An orderly stop that stop() left pending has completed. A task that calls this without being
 * asked to stop has ended on its own: a failure. */
void task_report_stopped(Task *t);
