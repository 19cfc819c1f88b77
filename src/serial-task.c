/* SPDX-License-Identifier: MIT */
/* Placeholder until the module lands. */
#include "collector/serial-task.h"
int serial_task_new(sd_event *e, const SerialConfig *config, Store *store, Task **ret) { (void) e; (void) config; (void) store; (void) ret; return -EOPNOTSUPP; }
int serial_list_ports_main(int argc, char **argv) { (void) argc; (void) argv; return 1; }
