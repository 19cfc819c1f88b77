/* SPDX-License-Identifier: MIT */
/* The sections of `sensor-collector status` the core provides: the daemon, its inputs, the store, the clock, the sensors. */
#pragma once

#include "collector/clock.h"
#include "collector/sensors.h"
#include "collector/status-server.h"
#include "collector/store.h"
#include "collector/supervisor.h"
#include "collector/upstream-task.h"

/* Adds the sections "daemon", "inputs" and "store" to srv. s and store are borrowed and must
 * outlive srv; store_path is borrowed too (the configuration's). Returns 0 or -ENOMEM. */
int status_sections_add(StatusServer *srv, Supervisor *s, Store *store, const char *store_path);

/* Adds the section "clock" (whether readings get a trusted time, why, and how many of this
 * boot's wait for correction; an untrusted clock is not a fault: readings are stored and
 * flagged). clock is borrowed and must outlive srv. Returns 0 or -ENOMEM. */
int status_sections_add_clock(StatusServer *srv, Clock *clock);

/* Adds the sections "sensors" (how many are watched, silent, and shown below) and
 * "silent_sensors" (one row per silent sensor, named by its id, at most 100: its map entry,
 * when it was last seen, for how long it has been silent, how often it is expected). Neither
 * has a "healthy" member: silence is not a daemon failure, and `status` does not exit 1 for
 * it. sensors is borrowed and must outlive srv. Returns 0, -EINVAL or -ENOMEM. */
int status_sections_add_sensors(StatusServer *srv, Sensors *sensors);

/* Adds the section "upstream": whether the link to the central broker is up and since when,
 * the broker, the backlog and the age of its oldest reading, the last acknowledgement, what is
 * in flight, readings lost to retention before forwarding, reconnects and the last error.
 * No "healthy" member: an outage of the central link is normal (the store buffers it) and
 * `status` does not exit 1 for it; a failed upstream task ends the daemon (exit status 14)
 * and shows in "daemon". upstream is borrowed and must outlive srv. Returns 0, -EINVAL or
 * -ENOMEM. */
int status_sections_add_upstream(StatusServer *srv, Upstream *upstream);
