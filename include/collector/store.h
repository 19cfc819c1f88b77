/* SPDX-License-Identifier: MIT */
/* The durable store: readings and rejects in one SQLite file (WAL), committed in small batches. */
#pragma once

#include <stdint.h>
#include <systemd/sd-event.h>

#include "collector/config.h"
#include "collector/frame.h"
#include "collector/task.h"

typedef struct Store Store;

/* Creates the store task ("store", exit status 12). The task owns the Store; *ret_store is a
 * borrowed view, valid until the task is freed. start() opens the database (creating or
 * migrating the schema) and reports running; stop() commits and closes. Any write that fails
 * (disk full, I/O error, corruption, locked beyond the busy timeout) reports the task failed.
 * config must outlive the task. Returns 0 or -ENOMEM. */
int store_task_new(sd_event *e, const StoreConfig *config, Task **ret_task, Store **ret_store);

/* Appends one reading to the open batch. The batch commits after commit_interval_ms or at
 * commit_max_rows, and always on stop. A reading with sensor_ts set is stored once per
 * (sensor, metric, ts): a repeat is counted as a duplicate and returns 0. Returns 0, or
 * -errno when the store is not open or has failed (the task has then reported the failure;
 * callers just stop feeding). Strings are copied. */
int store_append(Store *s, const Reading *r);

/* Appends a reject (raw bytes and reason) to the open batch; same rules as store_append(). */
int store_append_reject(Store *s, const Reject *r);

/* Commits the open batch now. Returns 0 or -errno (and reports the task failed). */
int store_commit(Store *s);

/* Counters since start. */
typedef struct StoreStats {
        uint64_t readings;            /* stored */
        uint64_t duplicates;          /* ignored as already stored */
        uint64_t rejects;             /* stored in the reject table */
        uint64_t commits;
} StoreStats;
void store_get_stats(const Store *s, StoreStats *ret);
