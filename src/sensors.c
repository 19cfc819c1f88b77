/* SPDX-License-Identifier: MIT */
/* The sensor map at run time: lookups per frame, ranges, silence on a timer, events in the store. */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "collector/event-util.h"
#include "collector/exit-status.h"
#include "collector/frame.h"
#include "collector/log.h"
#include "collector/sensors.h"
#include "collector/time-util.h"

/* Sensors watched at once (mapped ids, and names a pattern matched). Names come from the
 * network: past this, a new name a pattern matches is still checked against its ranges (by
 * walking the map), but not watched for silence. */
#define SENSORS_WATCHED_MAX 8192
#define SENSORS_SLOTS 16384           /* power of two, at least twice SENSORS_WATCHED_MAX */
/* Names found in no entry, remembered so that a frame of an unmapped sensor costs one hash
 * lookup, not a walk over the patterns. Cleared when half full. */
#define UNMAPPED_SLOTS 2048
#define UNMAPPED_MAX (UNMAPPED_SLOTS / 2)
/* At most one out_of_range event per sensor per this many ms; the others are counted into it. */
#define OUT_OF_RANGE_EVENT_MS 60000
/* At start, last-seen times come from the readings of at least this long ago. */
#define LAST_SEEN_HORIZON_MS (INT64_C(86400) * 1000)
/* Silence warnings one check logs one by one; past that, one line says how many more (an input
 * that goes down silences every sensor behind it at once; each still gets its event). */
#define SILENT_LOG_MAX 10
/* The silence check runs every tenth of the shortest silence window, within these bounds. */
#define CHECK_PERIOD_MIN_USEC (100 * USEC_PER_MSEC)
#define CHECK_PERIOD_MAX_USEC (5 * USEC_PER_SEC)

/* A metric the entry expects on its own (its expect_every): when it was last seen. */
typedef struct MetricWatch {
        int64_t last_seen_ms;         /* 0: never seen */
        bool silent;
} MetricWatch;

typedef struct Watched {
        char id[SENSOR_ID_MAX + 1];
        const SensorEntryConfig *entry;
        MetricWatch *metrics;         /* one per entry->metrics, or NULL when it expects none */
        int64_t last_seen_ms;         /* 0: never seen */
        int64_t since_ms;             /* watched since: the silence window of one never seen */
        bool silent;
        int64_t oor_event_ms;         /* the last out_of_range event */
        uint64_t oor_pending;         /* out-of-range values since, not in an event yet */
} Watched;

typedef struct Unmapped {
        bool used;
        char id[SENSOR_ID_MAX + 1];
} Unmapped;

struct Sensors {
        sd_event *event;              /* referenced */
        Store *store;                 /* borrowed */
        Task *task;
        const SensorMapConfig *map;   /* borrowed */

        Watched *watched;
        size_t n_watched, n_allocated;
        /* Into watched, plus one; 0 is empty, so the zeroed pages of a fresh Sensors are never
         * written until used (64 KiB that would otherwise count in the resident set). */
        uint32_t index[SENSORS_SLOTS];
        Unmapped unmapped[UNMAPPED_SLOTS];
        size_t n_unmapped;
        size_t n_silent;

        bool started;
        sd_event_source *timer;
        uint64_t period_usec;
        ssize_t current;              /* the watched sensor of the last sensors_lookup(), or -1 */
};

/* ---- pure parts ---- */

bool sensor_pattern_match(const char *pattern, const char *id) {
        const char *star = NULL, *resume = NULL;

        /* Greedy with one backtrack point: linear in practice, no recursion on hostile names. */
        while (*id) {
                if (*pattern == '*') {
                        star = pattern++;
                        resume = id;
                } else if (*pattern == '?' || *pattern == *id) {
                        pattern++;
                        id++;
                } else if (star) {
                        pattern = star + 1;
                        id = ++resume;
                } else
                        return false;
        }
        while (*pattern == '*')
                pattern++;
        return *pattern == 0;
}

bool sensor_is_silent(int64_t last_seen_ms, uint64_t expect_every_usec, unsigned stale_after, int64_t now_ms) {
        int64_t window_ms;

        if (expect_every_usec == 0)
                return false;
        window_ms = (int64_t) (expect_every_usec / USEC_PER_MSEC) * (int64_t) MAX(stale_after, 1u);
        return now_ms - last_seen_ms >= window_ms;
}

bool sensor_metric_in_range(const SensorMetricConfig *m, double value) {
        if (m->has_min && value < m->min)
                return false;
        if (m->has_max && value > m->max)
                return false;
        return true;
}

const SensorEntryConfig *sensor_map_find(const SensorMapConfig *map, const char *id) {
        const SensorEntryConfig *first_pattern = NULL;

        for (size_t i = 0; i < map->n_entries; i++) {
                const SensorEntryConfig *e = &map->entries[i];

                if (!e->is_pattern) {
                        if (streq(e->id, id))
                                return e;
                } else if (!first_pattern && sensor_pattern_match(e->id, id))
                        first_pattern = e;
        }
        return first_pattern;
}

const SensorMetricConfig *sensor_entry_metric(const SensorEntryConfig *e, const char *metric) {
        for (size_t i = 0; e && i < e->n_metrics; i++)
                if (streq(e->metrics[i].name, metric))
                        return &e->metrics[i];
        return NULL;
}

char *sensor_format_duration(char *buf, size_t size, int64_t ms) {
        int64_t s = MAX(ms, 0) / 1000;

        if (s < 60)
                snprintf(buf, size, "%" PRIi64 ".%01" PRIi64 " s", s, (MAX(ms, 0) % 1000) / 100);
        else if (s < 3600)
                snprintf(buf, size, "%" PRIi64 " min %" PRIi64 " s", s / 60, s % 60);
        else if (s < 86400)
                snprintf(buf, size, "%" PRIi64 " h %" PRIi64 " min", s / 3600, (s % 3600) / 60);
        else
                snprintf(buf, size, "%" PRIi64 " d %" PRIi64 " h", s / 86400, (s % 86400) / 3600);
        return buf;
}

/* ---- lookups ---- */

static uint32_t id_hash(const char *id) {
        uint32_t h = 2166136261u;

        for (; *id; id++)
                h = (h ^ (uint8_t) *id) * 16777619u;
        return h;
}

static Watched *watched_find(Sensors *s, const char *id, uint32_t h) {
        for (uint32_t i = h & (SENSORS_SLOTS - 1);; i = (i + 1) & (SENSORS_SLOTS - 1)) {
                uint32_t k = s->index[i];

                if (k == 0)
                        return NULL;
                if (streq(s->watched[k - 1].id, id))
                        return &s->watched[k - 1];
        }
}

static void index_put(Sensors *s, uint32_t h, size_t k) {
        uint32_t i = h & (SENSORS_SLOTS - 1);

        while (s->index[i] != 0)
                i = (i + 1) & (SENSORS_SLOTS - 1);
        s->index[i] = (uint32_t) k + 1;
}

static bool entry_expects_metrics(const SensorEntryConfig *e) {
        for (size_t i = 0; i < e->n_metrics; i++)
                if (e->metrics[i].expect_every_usec > 0)
                        return true;
        return false;
}

/* Adds a sensor to watch. Returns it, or NULL when full or out of memory. */
static Watched *watched_add(Sensors *s, const char *id, uint32_t h, const SensorEntryConfig *e, int64_t now_ms) {
        Watched *w;

        if (s->n_watched >= SENSORS_WATCHED_MAX || strlen(id) > SENSOR_ID_MAX)
                return NULL;
        if (s->n_watched == s->n_allocated) {
                size_t n = MAX(s->n_allocated * 2, (size_t) 64);
                Watched *p = reallocarray(s->watched, n, sizeof(Watched));

                if (!p)
                        return NULL;
                s->watched = p;
                s->n_allocated = n;
        }
        w = &s->watched[s->n_watched];
        *w = (Watched){ .entry = e, .since_ms = now_ms };
        if (entry_expects_metrics(e)) {
                w->metrics = calloc(e->n_metrics, sizeof(MetricWatch));
                if (!w->metrics)
                        return NULL;
        }
        strcpy(w->id, id);
        index_put(s, h, s->n_watched);
        s->n_watched++;
        return w;
}

static Unmapped *unmapped_slot(Sensors *s, const char *id, uint32_t h) {
        for (uint32_t i = h & (UNMAPPED_SLOTS - 1);; i = (i + 1) & (UNMAPPED_SLOTS - 1))
                if (!s->unmapped[i].used || streq(s->unmapped[i].id, id))
                        return &s->unmapped[i];
}

static void unmapped_clear(Sensors *s) {
        if (s->n_unmapped == 0)
                return; /* nothing written: leave the pages untouched */
        memset(s->unmapped, 0, sizeof(s->unmapped));
        s->n_unmapped = 0;
}

static void unmapped_put(Sensors *s, const char *id, uint32_t h) {
        Unmapped *u;

        if (strlen(id) > SENSOR_ID_MAX)
                return;
        if (s->n_unmapped >= UNMAPPED_MAX)
                unmapped_clear(s);
        u = unmapped_slot(s, id, h);
        if (u->used)
                return;
        u->used = true;
        strcpy(u->id, id);
        s->n_unmapped++;
}

/* The id for the SENSOR_ID= field, or NULL (see log_sensor_id() in mqtt-message.c). */
static const char *log_id(const char *id) {
        return strpbrk(id, "\"'\\") ? NULL : id;
}

static int64_t sensors_now_ms(Sensors *s) {
        return (int64_t) (event_now_usec(s->event, CLOCK_REALTIME) / USEC_PER_MSEC);
}

static void sensors_mark_back(Sensors *s, Watched *w, int64_t now_ms, int *ret_error) {
        int64_t from = w->last_seen_ms ?: w->since_ms;
        char gap[48];
        int r;

        w->silent = false;
        s->n_silent--;
        sensor_format_duration(gap, sizeof(gap), now_ms - from);
        log_full_errno_fields(LOG_NOTICE, 0, LOG_FIELDS("TASK", "sensors", "SENSOR_ID", log_id(w->id)),
                              "Sensor '%s' is back after a gap of %s.", w->id, gap);
        r = store_append_event(s->store, &(StoreEvent){
                                                 .kind = STORE_EVENT_SENSOR_BACK,
                                                 .ts_ms = now_ms,
                                                 .sensor = w->id,
                                                 .start_ms = from,
                                                 .end_ms = now_ms,
                                                 .detail = w->last_seen_ms ? NULL : "first reading since watched",
                                         });
        if (r < 0)
                *ret_error = r;
}

int sensors_lookup(Sensors *s, const char *id, int64_t now_ms, const SensorEntryConfig **ret_entry) {
        const SensorEntryConfig *e;
        uint32_t h = id_hash(id);
        Watched *w;
        int r = 0;

        s->current = -1;
        w = watched_find(s, id, h);
        if (!w) {
                if (unmapped_slot(s, id, h)->used)
                        e = NULL;
                else {
                        /* A name not seen before: resolved once, then cached either way. */
                        e = sensor_map_find(s->map, id);
                        if (e)
                                w = watched_add(s, id, h, e, now_ms);
                        else
                                unmapped_put(s, id, h);
                }
                if (!e) {
                        *ret_entry = NULL;
                        return s->map->unknown == SENSOR_UNKNOWN_REJECT ? -ENOENT : 0;
                }
                if (!w) { /* more names than SENSORS_WATCHED_MAX: ranges only */
                        *ret_entry = e;
                        return 0;
                }
        }
        if (w->silent)
                sensors_mark_back(s, w, now_ms, &r);
        if (now_ms > w->last_seen_ms)
                w->last_seen_ms = now_ms;
        s->current = w - s->watched;
        *ret_entry = w->entry;
        return r;
}

const char *sensors_unit(Sensors *s, const char *id, const char *metric) {
        const SensorMetricConfig *m;
        const SensorEntryConfig *e;
        uint32_t h;
        Watched *w;

        if (!s || !id || !metric)
                return NULL;
        h = id_hash(id);
        w = watched_find(s, id, h);
        if (w)
                e = w->entry;
        else if (unmapped_slot(s, id, h)->used)
                return NULL;
        else {
                /* Not watched (not seen in this run, or past SENSORS_WATCHED_MAX): the map's walk,
                 * without watching it; a name no entry covers is remembered as sensors_lookup()
                 * would. */
                e = sensor_map_find(s->map, id);
                if (!e) {
                        unmapped_put(s, id, h);
                        return NULL;
                }
        }
        m = sensor_entry_metric(e, metric);
        return m ? m->unit : NULL;
}

int sensors_metric_seen(Sensors *s, const SensorMetricConfig *m, int64_t now_ms) {
        Watched *w;
        MetricWatch *mw;
        char gap[48];
        int64_t from;

        if (s->current < 0)
                return 0;
        w = &s->watched[s->current];
        if (!w->metrics || m < w->entry->metrics || m >= w->entry->metrics + w->entry->n_metrics)
                return 0;
        mw = &w->metrics[m - w->entry->metrics];
        from = mw->last_seen_ms ?: w->since_ms;
        if (now_ms > mw->last_seen_ms)
                mw->last_seen_ms = now_ms;
        if (!mw->silent)
                return 0;
        mw->silent = false;
        s->n_silent--;
        sensor_format_duration(gap, sizeof(gap), now_ms - from);
        log_full_errno_fields(LOG_NOTICE, 0, LOG_FIELDS("TASK", "sensors", "SENSOR_ID", log_id(w->id)),
                              "Sensor '%s' delivers '%s' again after a gap of %s.", w->id, m->name, gap);
        return store_append_event(s->store, &(StoreEvent){
                                                    .kind = STORE_EVENT_SENSOR_BACK,
                                                    .ts_ms = now_ms,
                                                    .sensor = w->id,
                                                    .subject = m->name,
                                                    .start_ms = from,
                                                    .end_ms = now_ms,
                                            });
}

int sensors_out_of_range(Sensors *s, const char *id, const SensorMetricConfig *m, double value, int64_t now_ms) {
        Watched *w = watched_find(s, id, id_hash(id));
        char detail[160], lo[32] = "-inf", hi[32] = "inf";
        uint64_t count = 1;

        if (w) {
                if (w->oor_event_ms != 0 && now_ms - w->oor_event_ms < OUT_OF_RANGE_EVENT_MS) {
                        w->oor_pending++;
                        return 0;
                }
                count += w->oor_pending;
                w->oor_pending = 0;
                w->oor_event_ms = now_ms;
        }
        if (m->has_min)
                snprintf(lo, sizeof(lo), "%.15g", m->min);
        if (m->has_max)
                snprintf(hi, sizeof(hi), "%.15g", m->max);
        snprintf(detail, sizeof(detail), "%.15g outside [%s, %s]%s%s", value, lo, hi, m->unit ? " " : "",
                 m->unit ?: "");
        return store_append_event(s->store, &(StoreEvent){
                                                    .kind = STORE_EVENT_OUT_OF_RANGE,
                                                    .ts_ms = now_ms,
                                                    .sensor = id,
                                                    .subject = m->name,
                                                    .count = count,
                                                    .detail = detail,
                                            });
}

static void log_silent(const Watched *w, int64_t from, int64_t now_ms) {
        char gap[48], every[48];

        sensor_format_duration(gap, sizeof(gap), now_ms - from);
        sensor_format_duration(every, sizeof(every), (int64_t) (w->entry->expect_every_usec / USEC_PER_MSEC));
        if (w->last_seen_ms)
                log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", "sensors", "SENSOR_ID", log_id(w->id)),
                                      "Sensor '%s' is silent: nothing for %s (expected every %s).", w->id, gap, every);
        else
                log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", "sensors", "SENSOR_ID", log_id(w->id)),
                                      "Sensor '%s' is silent: never seen in the %s watched (expected every %s).", w->id,
                                      gap, every);
}

/* The metrics of w that have become silent on their own. Returns how many, or -errno. */
static int check_metrics(Sensors *s, Watched *w, int64_t now_ms, int logged) {
        int n = 0, r = 0;

        for (size_t j = 0; w->metrics && j < w->entry->n_metrics; j++) {
                const SensorMetricConfig *m = &w->entry->metrics[j];
                MetricWatch *mw = &w->metrics[j];
                int64_t from = mw->last_seen_ms ?: w->since_ms;
                char gap[48];
                int k;

                if (mw->silent || !sensor_is_silent(from, m->expect_every_usec, s->map->stale_after, now_ms))
                        continue;
                mw->silent = true;
                s->n_silent++;
                if (logged + ++n <= SILENT_LOG_MAX) {
                        sensor_format_duration(gap, sizeof(gap), now_ms - from);
                        log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", "sensors", "SENSOR_ID", log_id(w->id)),
                                              "Sensor '%s' is silent on '%s': nothing for %s.", w->id, m->name, gap);
                }
                k = store_append_event(s->store, &(StoreEvent){
                                                         .kind = STORE_EVENT_SENSOR_SILENT,
                                                         .ts_ms = now_ms,
                                                         .sensor = w->id,
                                                         .subject = m->name,
                                                         .start_ms = from,
                                                         .detail = mw->last_seen_ms ? NULL : "never seen since watched",
                                                 });
                if (k < 0 && r == 0)
                        r = k;
        }
        return r < 0 ? r : n;
}

int sensors_check(Sensors *s, int64_t now_ms) {
        int n = 0, r = 0;

        for (size_t i = 0; i < s->n_watched; i++) {
                Watched *w = &s->watched[i];
                int64_t from = w->last_seen_ms ?: w->since_ms;
                int k;

                k = check_metrics(s, w, now_ms, n);
                if (k < 0 && r == 0)
                        r = k;
                n += MAX(k, 0);

                if (w->silent || !sensor_is_silent(from, w->entry->expect_every_usec, s->map->stale_after, now_ms))
                        continue;
                w->silent = true;
                s->n_silent++;
                if (++n <= SILENT_LOG_MAX)
                        log_silent(w, from, now_ms);
                k = store_append_event(s->store, &(StoreEvent){
                                                         .kind = STORE_EVENT_SENSOR_SILENT,
                                                         .ts_ms = now_ms,
                                                         .sensor = w->id,
                                                         .start_ms = from,
                                                         .detail = w->last_seen_ms ? NULL : "never seen since watched",
                                                 });
                if (k < 0 && r == 0)
                        r = k;
        }
        if (n > SILENT_LOG_MAX)
                log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", "sensors"),
                                      "%d more sensors are silent (see STATUS= and 'sensor-collector query --events').",
                                      n - SILENT_LOG_MAX);
        return r < 0 ? r : n;
}

/* ---- the map ---- */

static uint64_t check_period(const SensorMapConfig *map) {
        uint64_t p = CHECK_PERIOD_MAX_USEC;

        for (size_t i = 0; i < map->n_entries; i++) {
                const SensorEntryConfig *e = &map->entries[i];

                if (e->expect_every_usec > 0)
                        p = MIN(p, e->expect_every_usec * MAX(map->stale_after, 1u) / 10);
                for (size_t j = 0; j < e->n_metrics; j++)
                        if (e->metrics[j].expect_every_usec > 0)
                                p = MIN(p, e->metrics[j].expect_every_usec * MAX(map->stale_after, 1u) / 10);
        }
        return MAX(p, CHECK_PERIOD_MIN_USEC);
}

/* How many silences a watched sensor holds: its own and its metrics'. */
static size_t watched_silences(const Watched *w) {
        size_t n = w->silent;

        for (size_t j = 0; w->metrics && j < w->entry->n_metrics; j++)
                n += w->metrics[j].silent;
        return n;
}

static void watched_free_list(Watched *list, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(list[i].metrics);
        free(list);
}

/* Moves the state of old (under its old entry) into w (under its new one): the sensor's, and
 * each metric's by name. A silence the new entry no longer watches ends without a notice. */
static void watched_carry_over(Watched *w, const Watched *old) {
        const SensorEntryConfig *e = w->entry;
        MetricWatch *metrics = w->metrics;

        *w = *old;
        w->entry = e;
        w->metrics = metrics;
        if (w->silent && e->expect_every_usec == 0)
                w->silent = false;
        for (size_t j = 0; metrics && j < e->n_metrics; j++) {
                for (size_t k = 0; old->metrics && k < old->entry->n_metrics; k++)
                        if (streq(old->entry->metrics[k].name, e->metrics[j].name)) {
                                metrics[j] = old->metrics[k];
                                break;
                        }
                if (e->metrics[j].expect_every_usec == 0)
                        metrics[j].silent = false;
        }
}

/* Rebuilds the watch list for map, keeping the state of every sensor it still covers. */
static int sensors_rebuild(Sensors *s, const SensorMapConfig *map, int64_t now_ms) {
        Watched *old = s->watched;
        size_t n_old = s->n_watched, n_old_allocated = s->n_allocated;

        s->watched = NULL;
        s->n_watched = s->n_allocated = s->n_silent = 0;
        s->current = -1;
        if (n_old > 0)
                memset(s->index, 0, sizeof(s->index));
        unmapped_clear(s);

        /* Ids the map names are expected whether or not they ever appeared. */
        for (size_t i = 0; i < map->n_entries; i++) {
                const SensorEntryConfig *e = &map->entries[i];
                uint32_t h;

                if (e->is_pattern)
                        continue;
                h = id_hash(e->id);
                if (watched_find(s, e->id, h))
                        continue;
                if (!watched_add(s, e->id, h, e, now_ms) && s->n_watched < SENSORS_WATCHED_MAX)
                        goto fail;
        }
        for (size_t i = 0; i < n_old; i++) {
                uint32_t h = id_hash(old[i].id);
                Watched *w = watched_find(s, old[i].id, h);

                if (!w) {
                        const SensorEntryConfig *e = sensor_map_find(map, old[i].id);

                        if (!e)
                                continue;
                        w = watched_add(s, old[i].id, h, e, now_ms);
                        if (!w) {
                                if (s->n_watched < SENSORS_WATCHED_MAX)
                                        goto fail;
                                continue;
                        }
                }
                watched_carry_over(w, &old[i]);
                s->n_silent += watched_silences(w);
        }
        watched_free_list(old, n_old);
        s->map = map;
        return 0;

fail:
        /* Put the old list back: the old map stays in use. */
        watched_free_list(s->watched, s->n_watched);
        s->watched = old;
        s->n_watched = n_old;
        s->n_allocated = n_old_allocated;
        s->n_silent = 0;
        memset(s->index, 0, sizeof(s->index));
        for (size_t i = 0; i < n_old; i++) {
                index_put(s, id_hash(s->watched[i].id), i);
                s->n_silent += watched_silences(&s->watched[i]);
        }
        return -ENOMEM;
}

static int on_check_timer(sd_event_source *source, uint64_t usec, void *userdata);

static void sensors_arm(Sensors *s) {
        int r;

        s->period_usec = check_period(s->map);
        r = event_arm_timer(s->event, &s->timer, event_now_usec(s->event, CLOCK_MONOTONIC) + s->period_usec,
                            s->period_usec / 10, on_check_timer, s, "sensors-check");
        if (r < 0)
                log_full_errno_fields(LOG_WARNING, r, LOG_FIELDS("TASK", "sensors"),
                                      "Failed to arm the silence check, ignoring: %m");
}

int sensors_set_map(Sensors *s, const SensorMapConfig *map) {
        int r;

        assert(s && map);
        r = sensors_rebuild(s, map, s->started ? sensors_now_ms(s) : 0);
        if (r < 0)
                return r;
        if (s->started)
                sensors_arm(s);
        return 0;
}

const SensorMapConfig *sensors_get_map(const Sensors *s) {
        return s->map;
}

/* ---- read-only view ---- */

size_t sensors_count(const Sensors *s) {
        return s->n_watched;
}

size_t sensors_count_silent(const Sensors *s) {
        return s->n_silent;
}

int sensors_get(const Sensors *s, size_t i, SensorInfo *ret) {
        const Watched *w;

        if (i >= s->n_watched)
                return -ERANGE;
        w = &s->watched[i];
        *ret = (SensorInfo){
                .id = w->id,
                .map_id = w->entry->id,
                .last_seen_ms = w->last_seen_ms,
                .watched_since_ms = w->since_ms,
                .expect_every_usec = w->entry->expect_every_usec,
                .silent = w->silent,
                .n_metrics_silent = watched_silences(w) - w->silent,
        };
        return 0;
}

int sensors_format_silent_metrics(const Sensors *s, size_t i, char *buf, size_t size) {
        const Watched *w;
        size_t used = 0;

        if (i >= s->n_watched)
                return -ERANGE;
        if (size == 0)
                return 0;
        w = &s->watched[i];
        buf[0] = 0;
        for (size_t j = 0; w->metrics && j < w->entry->n_metrics; j++) {
                const char *name = w->entry->metrics[j].name;
                size_t need = strlen(name) + (used ? 2 : 0);

                if (!w->metrics[j].silent)
                        continue;
                if (used + need + 4 > size) { /* room for "..." and the NUL */
                        snprintf(buf + used, size - used, "%s", size - used > 3 ? "..." : "");
                        break;
                }
                used += (size_t) snprintf(buf + used, size - used, "%s%s", used ? ", " : "", name);
        }
        return 0;
}

void sensors_format_status(const Sensors *s, char *buf, size_t size) {
        size_t used, watched = 0;

        if (s->map->n_entries == 0) {
                snprintf(buf, size, "no sensor map");
                return;
        }
        for (size_t i = 0; i < s->n_watched; i++)
                watched += s->watched[i].entry->expect_every_usec > 0;
        if (s->n_silent == 0) {
                snprintf(buf, size, "%zu watched, none silent", watched);
                return;
        }
        used = (size_t) snprintf(buf, size, "%zu watched, %zu silent:", watched, s->n_silent);
        for (size_t i = 0, k = 0; i < s->n_watched && used < size; i++) {
                const Watched *w = &s->watched[i];

                if (w->silent)
                        used += (size_t) snprintf(buf + used, size - used, "%s %s", k++ == 0 ? "" : ",", w->id);
                for (size_t j = 0; w->metrics && j < w->entry->n_metrics && used < size; j++)
                        if (w->metrics[j].silent)
                                used += (size_t) snprintf(buf + used, size - used, "%s %s/%s", k++ == 0 ? "" : ",",
                                                          w->id, w->entry->metrics[j].name);
        }
        if (used >= size && size > 4)
                memcpy(buf + size - 4, "...", 4);
}

/* ---- the task ---- */

static int on_check_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        Sensors *s = userdata;
        int r;

        (void) source;
        (void) usec;
        r = sensors_check(s, sensors_now_ms(s));
        if (r < 0)
                log_full_errno_fields(LOG_DEBUG, r, LOG_FIELDS("TASK", "sensors"),
                                      "Failed to record a silent sensor, ignoring: %m");
        sensors_arm(s);
        return 0;
}

static int load_last_seen(const char *id, const char *metric, int64_t last_ms, void *userdata) {
        Sensors *s = userdata;
        uint32_t h = id_hash(id);
        Watched *w = watched_find(s, id, h);

        if (!w) {
                const SensorEntryConfig *e = sensor_map_find(s->map, id);

                if (!e)
                        return 0;
                w = watched_add(s, id, h, e, 0);
                if (!w)
                        return 0;
        }
        w->last_seen_ms = MAX(w->last_seen_ms, last_ms);
        for (size_t j = 0; w->metrics && j < w->entry->n_metrics; j++)
                if (streq(w->entry->metrics[j].name, metric))
                        w->metrics[j].last_seen_ms = MAX(w->metrics[j].last_seen_ms, last_ms);
        return 0;
}

static int sensors_start(Task *t) {
        Sensors *s = task_get_userdata(t);
        int64_t now = sensors_now_ms(s), window = 0;
        int r;

        s->task = t;
        /* Silence survives restarts: each sensor's last reading in the store is when it was
         * last seen, so one that died before a restart is reported now, not forgiven. */
        for (size_t i = 0; i < s->map->n_entries; i++) {
                const SensorEntryConfig *e = &s->map->entries[i];

                window = MAX(window, (int64_t) (e->expect_every_usec / USEC_PER_MSEC) * (int64_t) s->map->stale_after);
                for (size_t j = 0; j < e->n_metrics; j++)
                        window = MAX(window, (int64_t) (e->metrics[j].expect_every_usec / USEC_PER_MSEC) *
                                                     (int64_t) s->map->stale_after);
        }
        r = store_foreach_last_seen(s->store, now - MAX(2 * window, LAST_SEEN_HORIZON_MS), load_last_seen, s);
        for (size_t i = 0; r >= 0 && i < s->n_watched; i++)
                if (s->watched[i].last_seen_ms == 0 && s->watched[i].entry->expect_every_usec > 0)
                        r = store_sensor_last_seen(s->store, s->watched[i].id, &s->watched[i].last_seen_ms);
        if (r < 0)
                log_full_errno_fields(LOG_WARNING, r, LOG_FIELDS("TASK", "sensors"),
                                      "Failed to read when sensors were last seen, watching from now on: %m");
        for (size_t i = 0; i < s->n_watched; i++)
                s->watched[i].since_ms = now;
        s->started = true;
        (void) sensors_check(s, now);
        sensors_arm(s);
        task_report_running(t);
        return 0;
}

static int sensors_stop(Task *t) {
        Sensors *s = task_get_userdata(t);

        s->timer = sd_event_source_disable_unref(s->timer);
        return 0;
}

static void sensors_free(void *userdata) {
        Sensors *s = userdata;

        if (!s)
                return;
        sd_event_source_disable_unref(s->timer);
        sd_event_unref(s->event);
        watched_free_list(s->watched, s->n_watched);
        free(s);
}

static void sensors_task_format_status(Task *t, char *buf, size_t size) {
        sensors_format_status(task_get_userdata(t), buf, size);
}

static const TaskOps sensors_task_ops = {
        .name = "sensors",
        .exit_status = EXIT_STATUS_UNEXPECTED,
        .start = sensors_start,
        .stop = sensors_stop,
        .free = sensors_free,
        .format_status = sensors_task_format_status,
};

int sensors_task_new(sd_event *e, const SensorMapConfig *map, Store *store, Task **ret_task, Sensors **ret_sensors) {
        Sensors *s;
        int r;

        assert(e && map && ret_task && ret_sensors);
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->event = sd_event_ref(e);
        s->store = store;
        s->current = -1;
        r = sensors_rebuild(s, map, 0);
        if (r < 0) {
                sensors_free(s);
                return r;
        }
        r = task_new(&sensors_task_ops, s, ret_task);
        if (r < 0)
                return r; /* task_new() freed s */
        *ret_sensors = s;
        return 0;
}
