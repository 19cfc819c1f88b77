/* SPDX-License-Identifier: MIT */
/* Placeholder until the module lands. */
#include "collector/mqtt-task.h"
int mqtt_task_new(sd_event *e, const MqttConfig *config, Store *store, Task **ret) { (void) e; (void) config; (void) store; (void) ret; return -EOPNOTSUPP; }
