/* SPDX-License-Identifier: MIT */
/* Read-only access to the store for `sensor-collector query` and tests, concurrent with the daemon. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "collector/frame.h"
#include "collector/macro.h"

typedef struct StoreReader StoreReader;

/* Opens path read-only (SQLITE_OPEN_READONLY; concurrent with a running daemon thanks to WAL).
 * Returns 0 and *ret (owned by the caller, free with store_reader_free()), or -ENOENT (no such
 * file), -EMEDIUMTYPE (an SQLite file that is not a sensor-collector store), -EBADMSG (not an
 * SQLite file), -EPROTONOSUPPORT (schema newer than this program), -EISDIR (a directory),
 * -EACCES, -EUCLEAN (corrupt), -EROFS (a WAL store whose -wal/-shm files neither exist nor can be created:
 * a stopped store in a directory the caller may not write), -ENOMEM or another -errno. Logs
 * nothing. */
int store_reader_open(const char *path, StoreReader **ret);
/* Closes the file. Accepts NULL; returns NULL. */
StoreReader *store_reader_free(StoreReader *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(StoreReader *, store_reader_free);

/* Filters; NULL / -1 / INT64_MIN / INT64_MAX / 0 mean "any". */
typedef struct StoreFilter {
        const char *sensor;           /* exact sensor id */
        const char *metric;           /* exact metric name */
        int source;                   /* a ReadingSource, or -1 */
        int64_t since_ms;             /* ts >= since (rejects: received >= since) */
        int64_t until_ms;             /* ts < until (rejects: received < until) */
        uint64_t limit;               /* the newest N rows, shown oldest first; 0 = all */
        unsigned flags;               /* readings with any of these READING_FLAG_*; 0 = any. UNSYNCED
                                       * means not corrected (yet) */
} StoreFilter;

#define STORE_FILTER_ALL                                                                        \
        ((StoreFilter){ .source = -1, .since_ms = INT64_MIN, .until_ms = INT64_MAX, .limit = 0 })

/* One stored reading; strings are borrowed for the duration of the callback. */
typedef struct StoredReading {
        int64_t id;
        const char *sensor;
        const char *metric;
        double value;
        int64_t ts_ms;
        bool sensor_ts;
        int64_t received_ms;
        const char *source;           /* "serial", "mqtt" */
        const char *origin;
        unsigned flags;               /* READING_FLAG_*; 0 in a store older than the flags */
} StoredReading;

/* Per sensor and metric: how many readings and the time span (for --count). */
typedef struct StoredCount {
        const char *sensor;
        const char *metric;
        uint64_t count;
        int64_t first_ts_ms;
        int64_t last_ts_ms;
} StoredCount;

typedef struct StoredReject {
        int64_t id;
        int64_t received_ms;
        const char *source;
        const char *origin;
        const char *reason;
        const void *raw;              /* never NULL, also when raw_size is 0 */
        size_t raw_size;
} StoredReject;

/* Each walks matching rows in time order (ts, then id) and calls cb per row; a negative return
 * from cb stops the walk and is returned. Return 0 or -errno. */
int store_reader_readings(StoreReader *r, const StoreFilter *f,
                          int (*cb)(const StoredReading *row, void *userdata), void *userdata);
/* The newest reading per sensor and metric (within the filter), ordered by sensor, metric. */
int store_reader_latest(StoreReader *r, const StoreFilter *f,
                        int (*cb)(const StoredReading *row, void *userdata), void *userdata);
/* Counts per sensor and metric (within the filter), ordered by sensor, metric; limit ignored. */
int store_reader_counts(StoreReader *r, const StoreFilter *f,
                        int (*cb)(const StoredCount *row, void *userdata), void *userdata);
/* Rejects by receipt time; sensor and metric must be NULL (-EINVAL otherwise). */
int store_reader_rejects(StoreReader *r, const StoreFilter *f,
                         int (*cb)(const StoredReject *row, void *userdata), void *userdata);

/* One row of the events table (see StoreEvent in store.h); strings borrowed for the callback,
 * NULL when the column is; times 0 when the column is NULL. */
typedef struct StoredEvent {
        int64_t id;
        int64_t ts_ms;
        const char *kind;
        const char *sensor;
        const char *subject;
        int64_t start_ms, end_ms;
        uint64_t count;
        const char *detail;
} StoredEvent;

/* A stretch of time in which a sensor (or a metric an entry expects on its own: sensor
 * "ID/METRIC") delivered nothing for longer than the map allows: from the silence events (see
 * docs/STORE.md, "Events"). end_ms 0: it goes on. cause: the input or
 * daemon outage that overlaps it ("daemon_down (not stopped cleanly)", "input_down mqtt (broker
 * unreachable)"), or NULL when none is known. Borrowed for the callback. */
typedef struct StoredGap {
        const char *sensor;
        int64_t start_ms, end_ms;
        const char *cause;
} StoredGap;

/* Events by time (ts, then id) within since/until (by ts) and limit; with a sensor, that
 * sensor's events and those that concern every sensor (inputs, the daemon). metric and source
 * must be unset (-EINVAL). A store from before events were kept has none. */
int store_reader_events(StoreReader *r, const StoreFilter *f,
                        int (*cb)(const StoredEvent *row, void *userdata), void *userdata);

/* Gaps by start time, for f->sensor or every sensor; since/until select the gaps that overlap
 * [since, until). metric, source and limit must be unset (-EINVAL). */
int store_reader_gaps(StoreReader *r, const StoreFilter *f,
                      int (*cb)(const StoredGap *row, void *userdata), void *userdata);

/* What upstream forwarding has done with the store (docs/UPSTREAM.md). */
typedef struct StoredUpstream {
        char store_id[40];            /* "" in a store older than schema v3 */
        char acked[256];              /* the done set as stored (cut), "" when nothing was forwarded */
        int64_t last_seq;             /* the largest seq in the store */
        uint64_t backlog;             /* readings not yet acknowledged */
        int64_t oldest_ts_ms;         /* ts and receipt time of the oldest of them; 0 when none */
        int64_t oldest_received_ms;
        uint64_t lost;                /* removed by retention before they were acknowledged */
} StoredUpstream;
/* Fills *ret. Counts the backlog exactly (a scan of the readings not yet acknowledged).
 * Returns 0 or -errno. */
int store_reader_upstream(StoreReader *r, StoredUpstream *ret);
