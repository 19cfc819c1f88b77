/* SPDX-License-Identifier: MIT */
/* The serial input: a port read through libserialport on the loop, lines into readings. */
#pragma once

#include <systemd/sd-event.h>

#include "collector/clock.h"
#include "collector/config.h"
#include "collector/sensors.h"
#include "collector/store.h"
#include "collector/task.h"

/* Creates the serial task ("serial", exit status 10). config, store and clock (NULL: readings
 * are not flagged, see ingest.h) must outlive the task. Returns 0 or -ENOMEM. */
/* Behaviour (docs/SERIAL.md): start() opens and configures config->device and reports running;
 * a missing device, or one that goes away later, is reopened with backoff and the task is
 * degraded meanwhile; not back within reopen_timeout -> failure. With idle_timeout, a port
 * silent that long is reopened and the task degraded until a byte comes; no byte for
 * idle_timeout + reopen_timeout (since the last byte or the last open that was not an idle
 * reopen) -> failure (-ENODATA). Every line becomes readings
 * (store_append) or a reject (store_append_reject); a partial line cut off by a close is a
 * "truncated" reject. stop() reads what is already buffered (bounded), closes the port and
 * returns 0. The task keeps pointers to config (device is used as the readings' origin) and
 * to store; it copies nothing else. sensors (borrowed, or NULL) is the sensor map its frames
 * go through (see ingest_frame_raw()). */
int serial_task_new(sd_event *e, const SerialConfig *config, Store *store, Clock *clock, Sensors *sensors, Task **ret);

/* libserialport's return code (enum sp_return) -> 0 or -errno. Call right after the failing
 * call: SP_ERR_FAIL leaves the OS error in errno. */
int serial_error(int sp_return);
