/* SPDX-License-Identifier: MIT */
/* The serial input: a port read through libserialport on the loop, lines into readings. */
#pragma once

#include <systemd/sd-event.h>

#include "collector/config.h"
#include "collector/store.h"
#include "collector/task.h"

/* Creates the serial task ("serial", exit status 10). config and store must outlive the task.
 * Returns 0 or -ENOMEM. */
int serial_task_new(sd_event *e, const SerialConfig *config, Store *store, Task **ret);

/* `sensor-collector list-ports`: prints the serial ports libserialport knows with their USB
 * description, VID:PID, serial number and by-id path. Returns a process exit status. */
int serial_list_ports_main(int argc, char **argv);
