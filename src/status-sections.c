/* SPDX-License-Identifier: MIT */
/* The core sections of the status answer: the daemon's state, each input, the store, the clock, the sensors. */
#include <unistd.h>

#include "collector/status-sections.h"
#include "collector/time-util.h"

typedef struct StatusCore {
        Supervisor *supervisor;
        Store *store;
        const char *store_path;
        uint64_t start_usec;          /* CLOCK_REALTIME */
        uint64_t start_mono_usec;
} StatusCore;

/* One StatusCore per process: the daemon has one supervisor. */
static StatusCore core;

static double seconds(uint64_t usec) {
        return (double) usec / (double) USEC_PER_SEC;
}

/* Adds name: a time in seconds since the epoch, or null when there is none (0). */
static bool add_time(cJSON *o, const char *name, uint64_t realtime_usec) {
        return realtime_usec > 0 ? cJSON_AddNumberToObject(o, name, seconds(realtime_usec)) != NULL
                                 : cJSON_AddNullToObject(o, name) != NULL;
}

static bool add_time_ms(cJSON *o, const char *name, int64_t ms) {
        return ms != INT64_MIN && ms != 0 ? cJSON_AddNumberToObject(o, name, (double) ms / 1000.0) != NULL
                                          : cJSON_AddNullToObject(o, name) != NULL;
}

static int fill_daemon(cJSON *o, void *userdata) {
        StatusCore *c = userdata;
        const char *phase = supervisor_get_phase(c->supervisor);
        bool healthy = streq(phase, "running"), degraded = false;

        for (size_t i = 0; i < supervisor_get_n_tasks(c->supervisor); i++) {
                TaskState st = task_get_state(supervisor_get_task(c->supervisor, i));
                if (st != TASK_RUNNING)
                        healthy = false;
                if (st == TASK_DEGRADED)
                        degraded = true;
        }
        if (streq(phase, "running") && degraded)
                phase = "degraded";
        if (!cJSON_AddStringToObject(o, "version", SC_VERSION) || !cJSON_AddStringToObject(o, "state", phase) ||
            !cJSON_AddBoolToObject(o, "healthy", healthy) || !cJSON_AddNumberToObject(o, "pid", (double) getpid()) ||
            !add_time(o, "start_timestamp_seconds", c->start_usec) ||
            !cJSON_AddNumberToObject(o, "uptime_seconds",
                                     seconds(clock_now_usec(CLOCK_MONOTONIC) - c->start_mono_usec)))
                return -ENOMEM;
        return 0;
}

static int fill_input(cJSON *o, Task *t) {
        uint64_t problem_usec;
        const char *problem = task_get_last_problem(t, &problem_usec);
        TaskInfo info;

        if (task_get_info(t, &info) < 0)
                return 0;
        /* The input's own words for what went wrong ("Connection refused") rather than what
         * it does about it ("reconnecting"); its time is that of the report that followed. */
        if (info.last_error && problem)
                problem = info.last_error;
        if (!cJSON_AddStringToObject(o, "state", strna(task_state_to_string(task_get_state(t)))) ||
            !cJSON_AddBoolToObject(o, "healthy", task_get_state(t) == TASK_RUNNING) ||
            !add_time(o, "state_since_timestamp_seconds", task_get_state_since_usec(t)) ||
            !cJSON_AddStringToObject(o, "origin", strempty(info.origin)) ||
            !cJSON_AddNumberToObject(o, "readings_total", (double) info.readings) ||
            !cJSON_AddNumberToObject(o, "readings_last_minute", (double) info.readings_last_minute) ||
            !cJSON_AddNumberToObject(o, "rejects_total", (double) info.rejects) ||
            !cJSON_AddNumberToObject(o, "rejects_last_minute", (double) info.rejects_last_minute) ||
            !cJSON_AddNumberToObject(o, "frames_total", (double) info.frames) ||
            !cJSON_AddNumberToObject(o, "reconnects_total", (double) info.reconnects) ||
            !(problem ? cJSON_AddStringToObject(o, "last_error", problem) : cJSON_AddNullToObject(o, "last_error")) ||
            !add_time(o, "last_error_timestamp_seconds", problem_usec))
                return -ENOMEM;
        return 0;
}

static int fill_inputs(cJSON *o, void *userdata) {
        StatusCore *c = userdata;

        for (size_t i = 0; i < supervisor_get_n_tasks(c->supervisor); i++) {
                Task *t = supervisor_get_task(c->supervisor, i);
                TaskInfo info;
                cJSON *row;
                int r;

                if (task_get_info(t, &info) < 0)
                        continue;
                row = cJSON_AddObjectToObject(o, task_get_name(t));
                if (!row)
                        return -ENOMEM;
                r = fill_input(row, t);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int fill_store(cJSON *o, void *userdata) {
        StatusCore *c = userdata;
        Task *t = NULL;
        StoreSummary sum;
        StoreStats stats;
        bool have_sum;

        for (size_t i = 0; i < supervisor_get_n_tasks(c->supervisor) && !t; i++)
                if (streq(task_get_name(supervisor_get_task(c->supervisor, i)), "store"))
                        t = supervisor_get_task(c->supervisor, i);
        store_get_stats(c->store, &stats);
        have_sum = store_get_summary(c->store, &sum) >= 0;
        if (!cJSON_AddStringToObject(o, "state", t ? strna(task_state_to_string(task_get_state(t))) : "unknown") ||
            !cJSON_AddBoolToObject(o, "healthy", t && task_get_state(t) == TASK_RUNNING) ||
            !cJSON_AddStringToObject(o, "path", c->store_path))
                return -ENOMEM;
        if (have_sum) {
                if (!cJSON_AddNumberToObject(o, "size_bytes", (double) sum.size_bytes) ||
                    !cJSON_AddNumberToObject(o, "reading_rows", (double) sum.readings) ||
                    !cJSON_AddNumberToObject(o, "reject_rows", (double) sum.rejects) ||
                    !add_time_ms(o, "oldest_reading_timestamp_seconds", sum.oldest_ms) ||
                    !add_time_ms(o, "newest_reading_timestamp_seconds", sum.newest_ms) ||
                    !add_time_ms(o, "last_commit_timestamp_seconds", sum.last_commit_ms))
                        return -ENOMEM;
        }
        if (!cJSON_AddNumberToObject(o, "readings_stored_total", (double) stats.readings) ||
            !cJSON_AddNumberToObject(o, "rejects_stored_total", (double) stats.rejects) ||
            !cJSON_AddNumberToObject(o, "duplicates_total", (double) stats.duplicates) ||
            !cJSON_AddNumberToObject(o, "commits_total", (double) stats.commits))
                return -ENOMEM;
        return 0;
}

static int fill_clock(cJSON *o, void *userdata) {
        ClockInfo ci;

        clock_get_info(userdata, &ci);
        if (!cJSON_AddStringToObject(o, "state", !ci.judged ? "starting" : !ci.trusted ? "untrusted"
                                                 : ci.correcting || ci.readings_waiting > 0 ? "correcting"
                                                 : ci.synchronised ? "synchronised" : "trusted") ||
            !cJSON_AddBoolToObject(o, "trusted", ci.trusted) ||
            !cJSON_AddBoolToObject(o, "synchronised", ci.synchronised) ||
            !cJSON_AddNumberToObject(o, "readings_awaiting_correction", (double) ci.readings_waiting) ||
            (ci.why && !cJSON_AddStringToObject(o, "reason", ci.why)))
                return -ENOMEM;
        return 0;
}

int status_sections_add_clock(StatusServer *srv, Clock *clock) {
        if (!srv || !clock)
                return -EINVAL;
        return status_server_add_section(srv, "clock", fill_clock, clock);
}

/* Rows of "silent_sensors" at most: 1,000 sensors silent at once (a bus gone) would make an
 * answer of some 200 KiB, close to STATUS_ANSWER_MAX and past what a person reads; the count
 * in "sensors" stays exact and `query --gaps` lists every one. */
#define SILENT_SENSORS_ROWS_MAX 100

/* A row of "silent_sensors": the sensor is silent, or a metric it expects on its own is. */
static bool has_silence(const SensorInfo *info) {
        return info->silent || info->n_metrics_silent > 0;
}

static int fill_sensors(cJSON *o, void *userdata) {
        Sensors *s = userdata;
        size_t n = sensors_count(s), silent = 0, silent_metrics = 0, rows = 0, shown;
        SensorInfo info;

        for (size_t i = 0; i < n; i++)
                if (sensors_get(s, i, &info) >= 0) {
                        silent += info.silent;
                        silent_metrics += info.n_metrics_silent;
                        rows += has_silence(&info);
                }
        shown = MIN(rows, (size_t) SILENT_SENSORS_ROWS_MAX);
        /* No "healthy" member: a silent sensor is not a daemon failure (docs/OPERATIONS.md). */
        if (!cJSON_AddNumberToObject(o, "watched", (double) n) ||
            !cJSON_AddNumberToObject(o, "silent", (double) silent) ||
            !cJSON_AddNumberToObject(o, "silent_metrics", (double) silent_metrics) ||
            !cJSON_AddNumberToObject(o, "silent_shown", (double) shown))
                return -ENOMEM;
        return 0;
}

static int fill_silent_sensors(cJSON *o, void *userdata) {
        Sensors *s = userdata;
        int64_t now_ms = (int64_t) (clock_now_usec(CLOCK_REALTIME) / USEC_PER_MSEC);
        size_t shown = 0;
        SensorInfo info;

        for (size_t i = 0; i < sensors_count(s) && shown < SILENT_SENSORS_ROWS_MAX; i++) {
                char metrics[256];
                cJSON *row;

                if (sensors_get(s, i, &info) < 0 || !has_silence(&info) ||
                    sensors_format_silent_metrics(s, i, metrics, sizeof(metrics)) < 0)
                        continue;
                /* The id is the row's name; a name given twice would be one row to a JSON reader. */
                if (cJSON_GetObjectItemCaseSensitive(o, info.id))
                        continue;
                /* silent_for: since the last reading; null when the sensor never sent one, and
                 * watched_since says for how long that has been so. */
                row = cJSON_AddObjectToObject(o, info.id);
                if (!row || !cJSON_AddStringToObject(row, "map_entry", strempty(info.map_id)) ||
                    !add_time_ms(row, "last_seen_timestamp_seconds", info.last_seen_ms) ||
                    !(info.last_seen_ms > 0 ? cJSON_AddNumberToObject(row, "silent_for_seconds",
                                                                     (double) MAX(now_ms - info.last_seen_ms, (int64_t) 0) / 1000.0)
                                            : cJSON_AddNullToObject(row, "silent_for_seconds")) ||
                    !add_time_ms(row, "watched_since_timestamp_seconds", info.watched_since_ms) ||
                    !cJSON_AddNumberToObject(row, "expect_every_seconds", seconds(info.expect_every_usec)) ||
                    !cJSON_AddBoolToObject(row, "silent", info.silent) ||
                    !(metrics[0] ? cJSON_AddStringToObject(row, "silent_metrics", metrics)
                                 : cJSON_AddNullToObject(row, "silent_metrics")))
                        return -ENOMEM;
                shown++;
        }
        return 0;
}

int status_sections_add_sensors(StatusServer *srv, Sensors *sensors) {
        int r;

        if (!srv || !sensors)
                return -EINVAL;
        r = status_server_add_section(srv, "sensors", fill_sensors, sensors);
        if (r >= 0)
                r = status_server_add_section(srv, "silent_sensors", fill_silent_sensors, sensors);
        return r;
}

static int fill_upstream(cJSON *o, void *userdata) {
        int64_t now_ms = (int64_t) (clock_now_usec(CLOCK_REALTIME) / USEC_PER_MSEC);
        UpstreamInfo ui;

        upstream_get_info(userdata, &ui);
        /* No "healthy" member: the central link being down is normal, never a daemon fault
         * (docs/UPSTREAM.md, docs/OPERATIONS.md). */
        if (!cJSON_AddStringToObject(o, "state", ui.state) || !cJSON_AddBoolToObject(o, "connected", ui.connected) ||
            !add_time(o, "state_since_timestamp_seconds", ui.link_since_usec) ||
            !cJSON_AddStringToObject(o, "broker", strempty(ui.broker)) ||
            !cJSON_AddNumberToObject(o, "backlog_readings", (double) ui.backlog) ||
            !add_time_ms(o, "backlog_oldest_received_timestamp_seconds", ui.oldest_received_ms) ||
            !(ui.oldest_received_ms > 0
                      ? cJSON_AddNumberToObject(o, "backlog_oldest_age_seconds",
                                                (double) MAX(now_ms - ui.oldest_received_ms, (int64_t) 0) / 1000.0)
                      : cJSON_AddNullToObject(o, "backlog_oldest_age_seconds")) ||
            !(ui.last_acked_seq > 0 ? cJSON_AddNumberToObject(o, "last_acked_seq", (double) ui.last_acked_seq)
                                    : cJSON_AddNullToObject(o, "last_acked_seq")) ||
            !add_time(o, "last_ack_timestamp_seconds", ui.last_ack_usec) ||
            !cJSON_AddNumberToObject(o, "in_flight_messages", (double) ui.in_flight) ||
            !cJSON_AddNumberToObject(o, "in_flight_max_messages", (double) ui.max_in_flight) ||
            !cJSON_AddNumberToObject(o, "sent_live_readings_total", (double) ui.sent_live) ||
            !cJSON_AddNumberToObject(o, "sent_backlog_readings_total", (double) ui.sent_backlog) ||
            !cJSON_AddNumberToObject(o, "acked_readings_total", (double) ui.acked) ||
            !cJSON_AddNumberToObject(o, "refused_readings_total", (double) ui.refused) ||
            !cJSON_AddNumberToObject(o, "lost_readings_total", (double) ui.lost) ||
            !cJSON_AddNumberToObject(o, "reconnects_total", (double) ui.reconnects) ||
            !(ui.last_error ? cJSON_AddStringToObject(o, "last_error", ui.last_error)
                            : cJSON_AddNullToObject(o, "last_error")) ||
            !add_time(o, "last_error_timestamp_seconds", ui.last_error_usec))
                return -ENOMEM;
        return 0;
}

int status_sections_add_upstream(StatusServer *srv, Upstream *upstream) {
        if (!srv || !upstream)
                return -EINVAL;
        return status_server_add_section(srv, "upstream", fill_upstream, upstream);
}

int status_sections_add(StatusServer *srv, Supervisor *s, Store *store, const char *store_path) {
        int r;

        core = (StatusCore){ .supervisor = s, .store = store, .store_path = store_path,
                             .start_usec = clock_now_usec(CLOCK_REALTIME),
                             .start_mono_usec = clock_now_usec(CLOCK_MONOTONIC) };
        r = status_server_add_section(srv, "daemon", fill_daemon, &core);
        if (r >= 0)
                r = status_server_add_section(srv, "inputs", fill_inputs, &core);
        if (r >= 0)
                r = status_server_add_section(srv, "store", fill_store, &core);
        return r;
}
