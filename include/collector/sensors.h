/* SPDX-License-Identifier: MIT */
/* The sensor map at run time: which sensors are expected, their ranges, and which fell silent. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "collector/config.h"
#include "collector/macro.h"
#include "collector/store.h"
#include "collector/task.h"

/* One object for the whole daemon, shared by every input's Ingest: a sensor that moves from
 * serial to MQTT is still the same sensor. It is a task ("sensors") so that it starts after the
 * store (it reads each sensor's last-seen time from it), runs the silence check on a timer and
 * shows the silent sensors in STATUS=. It never fails: a silent sensor is not a daemon failure,
 * and the watchdog and exit status do not depend on it. */
typedef struct Sensors Sensors;

/* ---- pure parts ---- */

/* Whether id matches pattern: '*' any run of characters (also none), '?' one character,
 * everything else itself. Pure. */
bool sensor_pattern_match(const char *pattern, const char *id);

/* Whether a sensor last seen at last_seen_ms (ms since the epoch) is silent at now_ms: it has
 * not delivered for stale_after x expect_every. expect_every_usec 0: never silent. Pure. */
bool sensor_is_silent(int64_t last_seen_ms, uint64_t expect_every_usec, unsigned stale_after, int64_t now_ms);

/* Whether value lies within the metric's [min, max] (each bound optional). Pure. */
bool sensor_metric_in_range(const SensorMetricConfig *m, double value);

/* The entry of map that applies to id: an exact id first, else the first pattern (in file
 * order) that matches; NULL for none. Pure; a linear walk, for tests and for resolving a new
 * name once (sensors_lookup() caches the result). */
const SensorEntryConfig *sensor_map_find(const SensorMapConfig *map, const char *id);

/* The metric of an entry by name, or NULL. Pure. */
const SensorMetricConfig *sensor_entry_metric(const SensorEntryConfig *e, const char *metric);

/* Formats a duration in ms for a person: "45 s", "12 min 3 s", "2 h 5 min", "3 d 4 h". */
char *sensor_format_duration(char *buf, size_t size, int64_t ms);

/* ---- the run-time object ---- */

/* Creates the sensors task. map is copied by reference and must stay valid until replaced
 * with sensors_set_map() or the task is freed; store is borrowed (the store task must be added
 * before this one, so that it is open when this one starts). *ret_sensors is a borrowed view,
 * valid until the task is freed. Returns 0 or -ENOMEM. */
int sensors_task_new(sd_event *e, const SensorMapConfig *map, Store *store, Task **ret_task, Sensors **ret_sensors);

/* Replaces the sensor map (on reload). map is referenced as above; the previous one may be
 * freed once this returns. Every sensor already known keeps its last-seen time and silence;
 * sensors the new map no longer covers are forgotten (without a "back" notice), ids new to
 * the map are watched from now on. Returns 0 or -ENOMEM (the old map stays in use). */
int sensors_set_map(Sensors *s, const SensorMapConfig *map);

/* The map in use (borrowed). */
const SensorMapConfig *sensors_get_map(const Sensors *s);

/* What a frame from sensor id means under the map, and the bookkeeping of its arrival at
 * now_ms: 0 with *ret_entry the entry that applies (NULL when none and unknown sensors are
 * stored); -ENOENT when the sensor is not in the map and the policy rejects it. A watched
 * sensor's last-seen time is updated, and one that was silent is back: a notice is logged and
 * an event goes into the store's open batch. Returns the store's -errno when that fails. */
int sensors_lookup(Sensors *s, const char *id, int64_t now_ms, const SensorEntryConfig **ret_entry);

/* The unit the map gives sensor id's metric, or NULL (no entry, no such metric, no unit, or s
 * NULL). No bookkeeping: a sensor is not "seen" by this. Borrowed from the map: valid until
 * the next sensors_set_map(). Costs a hash probe for a watched or known-unmapped sensor, else a
 * walk of the map. */
const char *sensors_unit(Sensors *s, const char *id, const char *metric);

/* A metric m (of the entry the last sensors_lookup() returned) arrived at now_ms: when the
 * entry expects it on its own (its expect_every), its last-seen time is updated, and one that
 * was silent is back (a notice and an event, subject the metric). Returns 0 or the store's
 * -errno. */
int sensors_metric_seen(Sensors *s, const SensorMetricConfig *m, int64_t now_ms);

/* Records an out-of-range value of sensor id's metric (the reject itself is the caller's): the
 * first of a burst writes an out_of_range event; the rest within a minute are counted into
 * the next one. Returns 0 or the store's -errno. */
int sensors_out_of_range(Sensors *s, const char *id, const SensorMetricConfig *m, double value, int64_t now_ms);

/* Runs the silence check at now_ms (the task does so on a timer): every watched sensor, and
 * every metric an entry expects on its own, that has become silent gets one warning (at most
 * ten per check, then one line with how many more) and an event. Returns the number that fell
 * silent, or the store's -errno. */
int sensors_check(Sensors *s, int64_t now_ms);

/* Read-only view of one watched sensor, for status displays. id and map_id are borrowed and
 * valid until the next call into the Sensors object. */
typedef struct SensorInfo {
        const char *id;
        const char *map_id;           /* the entry's id or pattern */
        int64_t last_seen_ms;         /* 0: never seen */
        int64_t watched_since_ms;     /* watched since (the start, or its first reading for a pattern's sensor) */
        uint64_t expect_every_usec;
        bool silent;
        size_t n_metrics_silent;      /* metrics expected on their own that are silent now */
} SensorInfo;

/* Number of watched sensors, and of the silences now (sensors and metrics expected on their
 * own). */
size_t sensors_count(const Sensors *s);
size_t sensors_count_silent(const Sensors *s);
/* Fills *ret for the i-th watched sensor (0 <= i < sensors_count()). Returns 0 or -ERANGE. */
int sensors_get(const Sensors *s, size_t i, SensorInfo *ret);
/* Writes the names of the i-th watched sensor's silent metrics into buf, separated by ", " (an
 * empty string when none is silent; cut with "..." when they do not fit). Returns 0 or -ERANGE. */
int sensors_format_silent_metrics(const Sensors *s, size_t i, char *buf, size_t size);

/* Writes "N watched, M silent: a, b" (or "N watched, none silent", or "no sensor map") into
 * buf, cut with "..." when it does not fit. */
void sensors_format_status(const Sensors *s, char *buf, size_t size);
