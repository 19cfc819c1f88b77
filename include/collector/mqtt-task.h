/* SPDX-License-Identifier: MIT */
/* The MQTT input: libmosquitto on the loop, subscriptions into readings. */
#pragma once

#include <systemd/sd-event.h>

#include "collector/clock.h"
#include "collector/config.h"
#include "collector/sensors.h"
#include "collector/store.h"
#include "collector/task.h"

/* Creates the MQTT task ("mqtt", exit status 11). config, store and clock (NULL: readings are
 * not flagged, see ingest.h) must outlive the task.
 * Returns 0, -ENOMEM, or -EINVAL for a topic filter libmosquitto rejects.
 *
 * Once started the task connects without blocking the loop (a host name is looked up by a
 * thread of glibc's first; with TLS libmosquitto resolves it once more itself), reports
 * running when the broker has accepted the connection and granted every subscription (and,
 * for a persistent session, removed the filters an earlier configuration left there, which
 * the store remembers in its meta table), rides out connection losses and failed lookups with
 * backoff (reported degraded) for up to config->max_offline, and fails on what no retry fixes
 * (refused credentials or subscriptions, a broker certificate that does not verify, no memory).
 * Every message becomes readings or a reject in store. stop() disconnects and completes
 * within about a second. The task owns its libmosquitto client; nothing of a message is kept
 * after its callback. See docs/MQTT.md. */
int mqtt_task_new(sd_event *e, const MqttConfig *config, Store *store, Clock *clock, Sensors *sensors, Task **ret);
