/* SPDX-License-Identifier: MIT */
/* The durable store: readings and rejects in one SQLite file (WAL), committed in small batches. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "collector/config.h"
#include "collector/frame.h"
#include "collector/store-reader.h"
#include "collector/task.h"

typedef struct Store Store;

/* Creates the store task ("store", exit status 12). The task owns the Store; *ret_store is a
 * borrowed view, valid until the task is freed. start() opens the database (creating or
 * migrating the schema) and reports running; stop() commits and closes. Any write that fails
 * (disk full, I/O error, corruption, locked beyond the busy timeout) reports the task failed, and
 * so does finding, after a commit or on a 2 s timer, that the store's file or its -wal or -shm
 * was deleted or replaced while open (-ENOENT, -ESTALE).
 * config must outlive the task. Returns 0 or -ENOMEM. */
int store_task_new(sd_event *e, const StoreConfig *config, Task **ret_task, Store **ret_store);

/* Appends one reading to the open batch. The batch commits after commit_interval_ms or at
 * commit_max_rows, and always on stop. A reading with sensor_ts set is stored once per
 * (sensor, metric, ts): a repeat is counted as a duplicate and returns 0. Returns 0, or
 * -errno when the store is not open or has failed (the task has then reported the failure;
 * callers just stop feeding). An invalid reading (NULL names, a value that is not finite, an
 * unknown source) is a caller bug: the open batch is committed, the store fails with that
 * cause and -EINVAL is returned. Strings are copied. */
int store_append(Store *s, const Reading *r);

/* Appends a reject (raw bytes and reason) to the open batch; same rules as store_append(). */
int store_append_reject(Store *s, const Reject *r);

/* Commits the open batch now, then checks that the store's files are still the ones open.
 * Returns 0 or -errno (and reports the task failed). */
int store_commit(Store *s);

/* Counters since start. Rows of the open batch count once it commits: a failure that rolls the
 * batch back never counted them (its cause says how many were lost). */
typedef struct StoreStats {
        uint64_t readings;            /* stored */
        uint64_t duplicates;          /* ignored as already stored */
        uint64_t rejects;             /* stored in the reject table */
        uint64_t commits;
} StoreStats;
/* Copies the counters into *ret. */
void store_get_stats(const Store *s, StoreStats *ret);

/* Runs one bounded retention step now (the task also runs them from a timer): commits the open
 * batch, then deletes at most a few thousand of the oldest rows that are older than
 * retention_days (by receipt time); with max_size_mb, the oldest rejects beyond their share
 * of it, then, while the used size exceeds it, the oldest readings (never the newest, see
 * docs/STORE.md) and the rejects received before them; and it advances a pass that deletes
 * the names (sensors, metrics, origins) no row uses. When the limit cannot be met the task's
 * status says so and a warning is logged (rate-limited). Returns the number of rows and names
 * removed (0 when nothing was), or -errno (and reports the task failed). */
int store_run_retention(Store *s);

/* Whether retention has more to do right away (a backlog, or a pass over the names under way):
 * the task then runs the next step soon. */
bool store_retention_pending(const Store *s);

/* The schema version this program writes (PRAGMA user_version). */
#define STORE_SCHEMA_VERSION 3
/* PRAGMA application_id of every sensor-collector store: "SCol". */
#define STORE_APPLICATION_ID 0x53436f6c

/* Small values other modules keep across restarts, in the store's meta table. A key must not
 * be one the store uses itself: prefix it with the module's name and a dot ("mqtt."). */
/* Returns 1 with *ret_value (a copy of the value with a NUL after its *ret_size bytes; the
 * caller frees it) when key is set, 0 with *ret_value NULL and *ret_size 0 when it is not, or
 * -errno: -ESHUTDOWN when the store is not open or has failed, -ENOMEM, or what SQLite said.
 * Logs nothing and does not fail the store. */
int store_get_meta(Store *s, const char *key, void **ret_value, size_t *ret_size);
/* Sets key to value[0..size), or deletes it when value is NULL, and commits at once (with the
 * open batch, if any). Returns 0, or -errno: -ESHUTDOWN when the store is not open or has
 * failed, -EMSGSIZE for a value over 2 GiB; any other failure fails the store (its task
 * reports it) and is returned. Logs nothing itself. */
int store_set_meta(Store *s, const char *key, const void *value, size_t size);

/* ---- upstream forwarding (upstream-task.c, docs/UPSTREAM.md) ----
 * A reading's id is its sequence number: it never repeats in one store, also after retention
 * has emptied the table (a high-water mark in meta). The meta key "store_id" holds the random id
 * the store was created with (32 hex digits). */

/* Called after a commit that added readings, with the largest committed sequence number. Runs
 * inside store_append() and friends: it must not write to the store; arm a timer instead. */
typedef void (*store_commit_hook_t)(Store *s, int64_t committed_seq, void *userdata);
/* Called inside a retention step, before the readings with sequence numbers up to upto are
 * deleted. It may call store_count_seq(); it must not write to the store. */
typedef void (*store_retention_hook_t)(Store *s, int64_t upto, void *userdata);
/* Sets both hooks (NULL: none) and their userdata, which must outlive the store or be unset. */
void store_set_hooks(Store *s, store_commit_hook_t commit, store_retention_hook_t retention, void *userdata);

/* The largest committed sequence number (0 for an empty store that never had a reading). */
int64_t store_committed_seq(const Store *s);

/* Walks the committed readings with after < seq < before, oldest first, at most limit of them,
 * calling cb (strings borrowed for the call; StoredReading.id is the sequence number). A
 * negative return of cb stops the walk and is returned. Returns the number of rows walked, or
 * -errno: -ESHUTDOWN when the store is not open, or what SQLite said (the store then fails). */
int store_read_seq(Store *s, int64_t after, int64_t before, unsigned limit,
                   int (*cb)(const StoredReading *row, void *userdata), void *userdata);

/* Counts the readings with lo <= seq <= hi into *ret. Returns 0 or -errno (as store_read_seq()). */
int store_count_seq(Store *s, int64_t lo, int64_t hi, uint64_t *ret);

/* Like store_set_meta(), but within the open batch (one is begun when there is none): the value
 * commits with it, within commit_interval_ms, at no extra commit. Returns 0 or -errno. */
int store_set_meta_batched(Store *s, const char *key, const void *value, size_t size);
