/* SPDX-License-Identifier: MIT */
/* Placeholder until the module lands. */
#include "collector/store.h"
int store_task_new(sd_event *e, const StoreConfig *config, Task **ret_task, Store **ret_store) { (void) e; (void) config; (void) ret_task; (void) ret_store; return -EOPNOTSUPP; }
