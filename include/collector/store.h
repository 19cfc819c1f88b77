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

/* Appends a reject (raw bytes and reason) to the open batch; same rules as store_append(). When
 * its origin would be a new name in an origins table at store.max_names, it is stored under the
 * origin "(too many names)" instead. */
int store_append_reject(Store *s, const Reject *r);

/* store.max_names bounds the names in use in each name table (sensors, metrics, origins): names
 * come from the network. Whether the readings of frame f (borrowed) from origin (borrowed, NULL
 * for "") fit: returns 1 when every name is known or its table has room, 0 when one would be new
 * in a full table (counted, logged rate-limited; the caller stores the frame as a reject,
 * too_many_names, instead), or -errno as store_append(). store_append() itself does not check:
 * ask first. Names no row uses count until retention's pass over the names removes them; a full
 * table asks for such a pass. Always 1 without a cap. */
int store_names_fit(Store *s, const Frame *f, const char *origin);

/* A record of why data is missing (see docs/STORE.md, "Events"): written into the open batch,
 * so an event commits together with the readings around it. */
typedef enum StoreEventKind {
        STORE_EVENT_SENSOR_SILENT,    /* sensor: start = last seen */
        STORE_EVENT_SENSOR_BACK,      /* sensor: start = last seen before the gap, end = back */
        STORE_EVENT_INPUT_DOWN,       /* subject = input ("serial", "mqtt"), detail = cause */
        STORE_EVENT_INPUT_UP,         /* subject = input: start = down since, end = up again */
        STORE_EVENT_DAEMON_DOWN,      /* start = last record before the stop, end = start */
        STORE_EVENT_OUT_OF_RANGE,     /* sensor, subject = metric, count, detail: value and range */
        _STORE_EVENT_MAX,
        _STORE_EVENT_INVALID = -EINVAL,
} StoreEventKind;

/* Strings are borrowed for the call; NULL (or 0 for times and count) leaves a column NULL. */
typedef struct StoreEvent {
        StoreEventKind kind;
        int64_t ts_ms;                /* when it was recorded, ms since the epoch */
        const char *sensor;
        const char *subject;
        int64_t start_ms, end_ms;
        uint64_t count;
        const char *detail;
} StoreEvent;

const char *store_event_kind_to_string(StoreEventKind k);
StoreEventKind store_event_kind_from_string(const char *s);

/* Appends an event to the open batch; same rules as store_append(). */
int store_append_event(Store *s, const StoreEvent *ev);

/* Calls cb for every sensor and metric with a reading whose ts is at or after since_ms, with
 * the newest such ts (ms). Walks the key index a few seeks per sensor and metric: its cost
 * grows with the number of those pairs (bounded by store.max_names), not with the readings, and
 * it needs no memory beyond the page cache. Returns 0, -ESHUTDOWN
 * when the store is not open, the first negative value cb returned, or -errno from SQLite (the
 * store is not failed by a read). */
int store_foreach_last_seen(Store *s, int64_t since_ms,
                            int (*cb)(const char *sensor, const char *metric, int64_t last_ms, void *userdata),
                            void *userdata);

/* Returns in *ret_ms the newest ts of any reading of sensor, 0 when it has none. Returns 0,
 * -ESHUTDOWN or -errno as above. */
int store_sensor_last_seen(Store *s, const char *sensor, int64_t *ret_ms);

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

/* WAL checkpoints: asked for when a commit leaves the WAL at STORE_CHECKPOINT_IDLE_PAGES or
 * more (SQLite's own default, 4 MiB of 4 KiB pages) and run when the loop is idle; run inside
 * the commit once it holds STORE_CHECKPOINT_FORCE_PAGES, so that the WAL stays bounded when
 * ingest never pauses. */
#define STORE_CHECKPOINT_IDLE_PAGES 1000
#define STORE_CHECKPOINT_FORCE_PAGES 4000

/* How the write path behaved since the store opened: the longest commit (the time the loop
 * spent in one COMMIT), the WAL checkpoints (run when the loop is idle; "forced" ones ran inside
 * a commit because the WAL reached its hard bound during a burst that never paused) and the
 * longest of them, and the largest size the WAL reached, in pages. */
typedef struct StoreWriteStats {
        uint64_t longest_commit_usec;
        uint64_t checkpoints;
        uint64_t checkpoints_forced;
        uint64_t longest_checkpoint_usec;
        uint64_t wal_pages_max;
} StoreWriteStats;
/* Copies them into *ret. */
void store_get_write_stats(const Store *s, StoreWriteStats *ret);

/* What `sensor-collector status` shows of the store, read without a scan (a few index
 * look-ups on the writer's connection, so the loop never waits long). */
typedef struct StoreSummary {
        uint64_t size_bytes;          /* the database file and its -wal */
        uint64_t readings;            /* rows in the readings table, the open batch included */
        uint64_t rejects;             /* rows in the reject table, likewise */
        int64_t oldest_ms;            /* the oldest and newest reading's timestamp; INT64_MIN: none */
        int64_t newest_ms;
        int64_t last_commit_ms;       /* wall clock of the last commit; 0: none since start */
} StoreSummary;
/* Fills *ret. Returns 0, or -ESHUTDOWN when the store is not open or has failed. Logs nothing. */
int store_get_summary(Store *s, StoreSummary *ret);

/* Runs one bounded retention step now (the task also runs them from a timer): commits the open
 * batch, then deletes at most a few thousand of the oldest rows that are older than
 * retention_days (by receipt time); with max_size_mb, the oldest rejects and the oldest events
 * (and clock events) beyond their shares of it, then, while the used size exceeds it, the
 * oldest readings, as many as the time of earlier steps allows (never the newest, see
 * docs/STORE.md) and the rejects received before them; with either, the clock events and boots
 * no reading left needs (by reading ids, not by time: docs/STORE.md); and it advances a pass that
 * deletes the names (sensors, metrics, origins) no row uses. When the limit cannot be met the
 * task's status says so and a warning is logged (rate-limited). Returns the number of rows
 * (events by size, clock events and boots among them) and names removed (0 when nothing was),
 * or -errno (and reports the task failed). */
int store_run_retention(Store *s);

/* Whether retention has more to do right away (a backlog, or a pass over the names under way):
 * the task then runs the next step soon. */
bool store_retention_pending(const Store *s);

/* The schema version this program writes (PRAGMA user_version). */
#define STORE_SCHEMA_VERSION 7
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

/* ---- the clock's side (clock.c): this boot, correcting receipt times, clock events ---- */

/* Registers this boot (boot_id: 32 hex digits; a row in boots): readings appended with
 * READING_FLAG_UNSYNCED from now on belong to it, and a restart within the same boot finds
 * what still waits. Commits at once. Returns how many readings of this boot wait for
 * correction, or -errno (-ESHUTDOWN when not open or failed; anything else fails the store). */
int store_clock_set_boot(Store *s, const char *boot_id);

/* How many readings of this boot wait for correction (the open batch included). */
uint64_t store_clock_waiting(const Store *s);

/* One bounded step of correcting this boot's readings received unsynced: for at most max_rows
 * ids, received (and ts, unless the sensor sent its own) becomes boottime + offset_ms, and the
 * flag corrected is set, in a transaction of its own after the open batch is committed. A round
 * covers what was stored when it began. *ret_corrected gets the rows changed. Returns 1 when
 * more of the round remains, 0 when it is done (or nothing waits), or -errno as
 * store_append(). */
int store_clock_correct(Store *s, int64_t offset_ms, unsigned max_rows, uint64_t *ret_corrected);

/* Records a clock event (kind: "trusted", "untrusted", "step", "corrected") at at_ms, with the
 * step's size (0: none), a number of readings (-1: none) and a detail (NULL: none). It goes
 * into the open batch. Returns 0 or -errno as store_append(). Strings are copied. */
int store_clock_event(Store *s, const char *kind, int64_t at_ms, int64_t step_ms, int64_t readings,
                      const char *detail);

/* ---- upstream forwarding (upstream-task.c, docs/UPSTREAM.md) ----
 * A reading's id is its sequence number: it never repeats in one store, also after retention
 * has emptied the table (a high-water mark in meta). The meta key "store_id" holds the random id
 * the store was created with (32 hex digits). */

/* Called after a commit that added readings, with the largest committed sequence number. Runs
 * inside store_append() and friends: it must not write to the store; arm a timer instead. */
typedef void (*store_commit_hook_t)(Store *s, int64_t committed_seq, void *userdata);
/* Called inside a retention step, before readings with sequence numbers up to upto are deleted.
 * Not every one of them goes: age retention keeps the readings received while the clock was not
 * trusted and never corrected (docs/STORE.md); store_retention_scan() tells which. It may call
 * store_count_seq() and store_retention_scan(); it must not write to the store. */
typedef void (*store_retention_hook_t)(Store *s, int64_t upto, void *userdata);
/* Sets both hooks (NULL: none) and their userdata, which must outlive the store or be unset. */
void store_set_hooks(Store *s, store_commit_hook_t commit, store_retention_hook_t retention, void *userdata);

/* Called inside each commit, before the batch ends: the hook may add what belongs with the batch
 * (store_set_meta_batched(): upstream's done set), and must do nothing else with the store. */
typedef void (*store_precommit_hook_t)(Store *s, void *userdata);
/* Sets the pre-commit hook (NULL: none) and its userdata, which must outlive the store or be unset. */
void store_set_precommit_hook(Store *s, store_precommit_hook_t hook, void *userdata);
/* Whether a batch is open: it commits within store.commit_interval_ms, running the pre-commit
 * hook first. */
bool store_batch_open(const Store *s);

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

/* Only inside the retention hook: of the readings with lo <= seq <= hi, counts into
 * *ret_removed those the deletion under way removes, and sets *ret_first_kept to the smallest
 * seq in lo..min(hi, upto) of one that stays in the store (0: none stays). Returns 0, -EINVAL
 * outside the hook, or -errno as store_read_seq(). */
int store_retention_scan(Store *s, int64_t lo, int64_t hi, uint64_t *ret_removed, int64_t *ret_first_kept);

/* Only inside the retention hook: sets *ret to the smallest seq in lo..min(hi, upto) of a reading
 * the deletion under way removes (0: none). With store_retention_scan(), the hook can tell the
 * runs of readings that stay apart from those that go. Returns 0, -EINVAL outside the hook, or
 * -errno as store_read_seq(). */
int store_retention_next_removed(Store *s, int64_t lo, int64_t hi, int64_t *ret);

/* Like store_set_meta(), but within the open batch (one is begun when there is none): the value
 * commits with it, within commit_interval_ms, at no extra commit. Returns 0 or -errno. */
int store_set_meta_batched(Store *s, const char *key, const void *value, size_t size);
