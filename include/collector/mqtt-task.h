/* SPDX-License-Identifier: MIT */
/* The MQTT input: libmosquitto on the loop, subscriptions into readings. */
#pragma once

#include <systemd/sd-event.h>

#include "collector/config.h"
#include "collector/store.h"
#include "collector/task.h"

/* Creates the MQTT task ("mqtt", exit status 11). config and store must outlive the task.
 * Returns 0, -ENOMEM, or -EINVAL for a topic filter libmosquitto rejects. */
int mqtt_task_new(sd_event *e, const MqttConfig *config, Store *store, Task **ret);
