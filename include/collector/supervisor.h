/* SPDX-License-Identifier: MIT */
/* The supervisor: one sd_event loop, signals, sd_notify, the watchdog, and the exit status. */
#pragma once

#include <stdint.h>
#include <systemd/sd-event.h>

#include "collector/exit-status.h"
#include "collector/macro.h"
#include "collector/task.h"

typedef struct Supervisor Supervisor;

typedef struct SupervisorOptions {
        uint64_t stop_timeout_usec;   /* bound on an orderly stop, then exit 13 */
        uint64_t status_interval_usec; /* STATUS= at most this often (>= 1 s is sensible) */
} SupervisorOptions;

/* Creates the loop and blocks SIGTERM/SIGINT/SIGHUP for it. Returns 0 or -errno (logged by
 * the caller). */
int supervisor_new(const SupervisorOptions *o, Supervisor **ret);

/* Stops nothing; frees tasks and the loop. Accepts NULL; returns NULL. */
Supervisor *supervisor_free(Supervisor *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(Supervisor *, supervisor_free);

/* The loop; owned by the supervisor, valid until supervisor_free(). */
sd_event *supervisor_get_event(Supervisor *s);

/* What SIGHUP runs: returns 0 or -errno (it logs itself); *ret_note is NULL or a short text for
 * STATUS= (borrowed, copied at once), e.g. that the last reload failed. */
typedef int (*SupervisorReloadFn)(void *userdata, const char **ret_note);

/* Sets the SIGHUP handler (none: SIGHUP is logged and ignored). The supervisor sends
 * RELOADING=1 with MONOTONIC_USEC= before it and READY=1 after it, once the daemon was ready.
 * userdata is borrowed and must outlive the loop. */
void supervisor_set_reload(Supervisor *s, SupervisorReloadFn fn, void *userdata);

/* The tasks in the order added (for `sensor-collector status`); borrowed. NULL past the end. */
size_t supervisor_get_n_tasks(const Supervisor *s);
Task *supervisor_get_task(const Supervisor *s, size_t i);
/* "starting" (before READY=1), "running" or "stopping". A static string. */
const char *supervisor_get_phase(const Supervisor *s);

/* Adds a task; the supervisor owns it from now on, also on failure. Tasks start in the order
 * added and stop in reverse order (add the store first: it stops last and commits).
 * Returns 0 or -ENOMEM. */
int supervisor_add_task(Supervisor *s, Task *t);

/* Starts every task, runs the loop until a stop is requested or a task fails, stops the tasks
 * in order (bounded by the stop timeout) and returns the process exit status. Sends READY=1,
 * STATUS=, WATCHDOG=1 and STOPPING=1 as described in DESIGN.md. */
int supervisor_run(Supervisor *s);
