/* SPDX-License-Identifier: MIT */
/* Ingest: frames into readings, bad input into rejects, for every input alike. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector/event-util.h"
#include "collector/ingest.h"
#include "collector/log.h"
#include "collector/rate-window.h"
#include "collector/time-util.h"

/* At most this many reject lines per input per interval; the rest are counted and reported
 * when the interval ends. */
#define INGEST_REJECT_LOG_INTERVAL_USEC (10 * USEC_PER_SEC)
#define INGEST_REJECT_LOG_BURST 10
/* Bytes of a rejected frame shown in its log line (escaped); the reject table has them all. */
#define INGEST_EXCERPT_MAX 64
/* The origin named in the suppressed-messages line (a device path or a topic). */
#define INGEST_ORIGIN_MAX 256

/* Sensor times far from the clock: at most this many lines per interval per input. */
#define INGEST_SUSPECT_LOG_INTERVAL_USEC (600 * USEC_PER_SEC)
#define INGEST_SUSPECT_LOG_BURST 5

struct Ingest {
        sd_event *event;              /* referenced */
        Store *store;                 /* borrowed */
        Clock *clock;                 /* borrowed, may be NULL */
        RateLimit suspect_ratelimit;
        const IngestInput *input;     /* static */
        IngestCounters counters;
        RateWindow readings_window;   /* the last minute, for `status` */
        RateWindow rejects_window;
        bool store_failed;

        RateLimit reject_ratelimit;
        sd_event_source *suppressed_source;   /* reports what the rate limit kept back */
        char last_origin[INGEST_ORIGIN_MAX];  /* of the last reject, for that report */

        Sensors *sensors;             /* borrowed, or NULL */
        int64_t down_since_ms;        /* 0: the input is not down */
        char down_cause[128];
};

int ingest_new(sd_event *e, Store *store, Clock *clock, const IngestInput *input, Ingest **ret) {
        Ingest *in;

        assert(e && input && input->task && ret);
        in = calloc(1, sizeof(*in));
        if (!in)
                return -ENOMEM;
        in->event = sd_event_ref(e);
        in->store = store;
        in->clock = clock;
        in->suspect_ratelimit = RATELIMIT_INIT(INGEST_SUSPECT_LOG_INTERVAL_USEC, INGEST_SUSPECT_LOG_BURST);
        in->input = input;
        in->reject_ratelimit = RATELIMIT_INIT(INGEST_REJECT_LOG_INTERVAL_USEC, INGEST_REJECT_LOG_BURST);
        *ret = in;
        return 0;
}

Ingest *ingest_free(Ingest *in) {
        if (!in)
                return NULL;
        ingest_flush_log(in);
        sd_event_source_disable_unref(in->suppressed_source);
        sd_event_unref(in->event);
        free(in);
        return NULL;
}

int64_t ingest_receipt_ms(const Ingest *in) {
        return (int64_t) (event_now_usec(in->event, CLOCK_REALTIME) / USEC_PER_MSEC);
}

bool ingest_accepting(const Ingest *in) {
        return !in->store_failed;
}

const IngestCounters *ingest_get_counters(const Ingest *in) {
        return &in->counters;
}

void ingest_get_last_minute(const Ingest *in, uint64_t *ret_readings, uint64_t *ret_rejects) {
        uint64_t now = clock_now_usec(CLOCK_MONOTONIC);

        *ret_readings = rate_window_sum(&in->readings_window, now);
        *ret_rejects = rate_window_sum(&in->rejects_window, now);
}

/* The store refused a row and has reported its own failure; the supervisor stops everything.
 * Until then the input reads nothing more. */
int ingest_store_failed(Ingest *in, int error) {
        if (!in->store_failed)
                log_full_errno_fields(LOG_DEBUG, error, LOG_FIELDS("TASK", in->input->task),
                                      "Store refused a record, no longer reading: %m");
        in->store_failed = true;
        return error;
}

/* The clock's flags for a frame's readings (the same for each metric), with what a correction
 * needs; a sensor time far from a trusted clock is counted and logged, rate-limited. */
static void ingest_clock_flags(Ingest *in, const Frame *frame, const char *origin, Reading *rd) {
        char span[32];
        uint64_t off;
        unsigned suppressed;

        if (!in->clock)
                return;
        rd->flags = clock_reading_flags(clock_is_trusted(in->clock), frame->has_ts, rd->ts_ms, rd->received_ms,
                                        clock_sensor_tolerance_ms(in->clock));
        if (rd->flags & READING_FLAG_UNSYNCED) {
                /* The loop's boot time of this iteration, taken with the receipt time. */
                rd->boottime_ms = (int64_t) (event_now_usec(in->event, CLOCK_BOOTTIME) / USEC_PER_MSEC);
                in->counters.unsynced += frame->n_metrics;
        }
        if (!(rd->flags & READING_FLAG_SUSPECT_TS))
                return;
        in->counters.suspect_ts++;
        if (!ratelimit_below(&in->suspect_ratelimit, &suppressed))
                return;
        off = rd->ts_ms > rd->received_ms ? (uint64_t) rd->ts_ms - (uint64_t) rd->received_ms
                                          : (uint64_t) rd->received_ms - (uint64_t) rd->ts_ms;
        /* The sensor is named in the text only: SENSOR_ID= is for ids the input vouches for
         * (mqtt-message.c decides for its rejects), and a sensor with a wrong clock is news
         * about the sensor, not a reject. */
        log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", in->input->task, in->input->origin_field, origin),
                              "Sensor '%s' (%s '%s') sent a time %s %s the clock; stored, flagged \"suspect_ts\"%s.",
                              frame->sensor, in->input->reject_noun, strempty(origin),
                              off > UINT64_MAX / USEC_PER_MSEC ? "centuries"
                                                               : format_timespan(span, sizeof(span), off * USEC_PER_MSEC),
                              rd->ts_ms > rd->received_ms ? "ahead of" : "behind",
                              suppressed > 0 ? " (more such messages were suppressed)" : "");
}

int ingest_frame(Ingest *in, const Frame *frame, const char *origin, int64_t received_ms) {
        return ingest_frame_raw(in, frame, origin, received_ms, NULL, 0);
}

void ingest_set_sensors(Ingest *in, Sensors *sensors) {
        in->sensors = sensors;
}

/* The sensor id for SENSOR_ID= (see log_sensor_id() in mqtt-message.c). */
static const char *ingest_log_id(const char *id) {
        return id[0] && !strpbrk(id, "\"'\\") ? id : NULL;
}

/* A reject of a whole frame (unknown_sensor) or of one metric (out_of_range). Without the raw
 * bytes (a caller of ingest_frame()), a kv text of what was parsed stands in for them. */
static int ingest_reject_frame(Ingest *in, const Frame *frame, const char *origin, int64_t received_ms,
                               const void *raw, size_t raw_size, FrameReject reason) {
        char text[SENSOR_ID_MAX + 16 + FRAME_METRICS_MAX * (METRIC_NAME_MAX + 26)];

        if (!raw) {
                size_t used = (size_t) snprintf(text, sizeof(text), "sensor=%s", frame->sensor);

                for (size_t i = 0; i < frame->n_metrics && used < sizeof(text); i++)
                        used += (size_t) snprintf(text + used, sizeof(text) - used, " %s=%.17g", frame->metrics[i].name,
                                                  frame->metrics[i].value);
                raw = text;
                raw_size = MIN(used, sizeof(text) - 1);
        }
        return ingest_reject(in, &(IngestReject){
                                         .origin = origin,
                                         .raw = raw,
                                         .raw_size = raw_size,
                                         .size = raw_size,
                                         .reason = reason,
                                         .sensor = ingest_log_id(frame->sensor),
                                         .received_ms = received_ms,
                                 });
}

int ingest_frame_raw(Ingest *in, const Frame *frame, const char *origin, int64_t received_ms, const void *raw,
                     size_t raw_size) {
        const SensorEntryConfig *entry = NULL;
        size_t n_stored = 0;
        Reading rd = {
                .sensor = frame->sensor,
                .ts_ms = frame->has_ts ? frame->ts_ms : received_ms,
                .sensor_ts = frame->has_ts,
                .received_ms = received_ms,
                .source = in->input->source,
                .origin = origin,
        };
        int r;

        if (in->store_failed)
                return -ESHUTDOWN;
        if (in->sensors) {
                r = sensors_lookup(in->sensors, frame->sensor, received_ms, &entry);
                if (r == -ENOENT)
                        return ingest_reject_frame(in, frame, origin, received_ms, raw, raw_size,
                                                   FRAME_REJECT_UNKNOWN_SENSOR);
                if (r < 0)
                        return ingest_store_failed(in, r);
        }
        /* All or nothing: asked before the first reading, not found out at the third. */
        r = store_names_fit(in->store, frame, origin);
        if (r < 0)
                return ingest_store_failed(in, r);
        if (r == 0)
                return INGEST_TOO_MANY_NAMES;
        ingest_clock_flags(in, frame, origin, &rd);
        for (size_t i = 0; i < frame->n_metrics; i++) {
                rd.metric = frame->metrics[i].name;
                rd.value = frame->metrics[i].value;
                if (entry) {
                        const SensorMetricConfig *m = sensor_entry_metric(entry, rd.metric);

                        /* Delivered, in range or not: the metric is not silent. */
                        if (m && (r = sensors_metric_seen(in->sensors, m, received_ms)) < 0)
                                return ingest_store_failed(in, r);
                        if (m && !sensor_metric_in_range(m, rd.value)) {
                                r = ingest_reject_frame(in, frame, origin, received_ms, raw, raw_size,
                                                        FRAME_REJECT_OUT_OF_RANGE);
                                if (r >= 0)
                                        r = sensors_out_of_range(in->sensors, frame->sensor, m, rd.value, received_ms);
                                if (r < 0)
                                        return ingest_store_failed(in, r);
                                continue;
                        }
                }
                r = store_append(in->store, &rd);
                if (r < 0)
                        return ingest_store_failed(in, r);
                in->counters.readings++;
                n_stored++;
        }
        if (n_stored > 0) {
                rate_window_add(&in->readings_window, event_now_usec(in->event, CLOCK_MONOTONIC), n_stored);
                in->counters.frames++;
        }
        return 0;
}

void ingest_input_down(Ingest *in, const char *cause) {
        int64_t now = ingest_receipt_ms(in);
        int r;

        if (in->down_since_ms != 0 || in->store_failed)
                return;
        in->down_since_ms = now;
        snprintf(in->down_cause, sizeof(in->down_cause), "%s", strempty(cause));
        r = store_append_event(in->store, &(StoreEvent){
                                                  .kind = STORE_EVENT_INPUT_DOWN,
                                                  .ts_ms = now,
                                                  .subject = in->input->task,
                                                  .start_ms = now,
                                                  .detail = in->down_cause,
                                          });
        if (r < 0)
                (void) ingest_store_failed(in, r);
}

void ingest_input_up(Ingest *in) {
        int64_t now = ingest_receipt_ms(in);
        int r;

        if (in->down_since_ms == 0 || in->store_failed)
                return;
        r = store_append_event(in->store, &(StoreEvent){
                                                  .kind = STORE_EVENT_INPUT_UP,
                                                  .ts_ms = now,
                                                  .subject = in->input->task,
                                                  .start_ms = in->down_since_ms,
                                                  .end_ms = now,
                                                  .detail = in->down_cause,
                                          });
        in->down_since_ms = 0;
        if (r < 0)
                (void) ingest_store_failed(in, r);
}

/* Printable excerpt of raw bytes for a log line: non-printables as \xHH, cut with "...". */
static const char *format_excerpt(char *buf, size_t size, const char *raw, size_t raw_size) {
        size_t used = 0;

        assert(size >= 8);
        for (size_t i = 0; i < raw_size; i++) {
                unsigned char c = (unsigned char) raw[i];
                char one[5];
                size_t k;

                if (c >= 0x20 && c < 0x7f && c != '\\')
                        one[0] = (char) c, one[1] = 0;
                else
                        snprintf(one, sizeof(one), "\\x%02x", c);
                k = strlen(one);
                if (i >= INGEST_EXCERPT_MAX || used + k + 4 > size) {
                        memcpy(buf + used, "...", 4);
                        return buf;
                }
                memcpy(buf + used, one, k);
                used += k;
        }
        buf[used] = 0;
        return buf;
}

static void ingest_log_suppressed(Ingest *in, unsigned n) {
        if (n == 0)
                return;
        if (in->input->suppressed_names_origin)
                log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", in->input->task),
                                      "Suppressed %u messages about rejected %s '%s'.", n, in->input->suppressed_noun,
                                      in->last_origin);
        else
                log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", in->input->task),
                                      "Suppressed %u messages about rejected %s.", n, in->input->suppressed_noun);
}

void ingest_flush_log(Ingest *in) {
        ingest_log_suppressed(in, in->reject_ratelimit.suppressed);
        in->reject_ratelimit.suppressed = 0;
}

/* The rate limit's interval is over: a burst of rejects followed by silence is accounted for
 * now, not whenever the next reject happens to come. */
static int on_suppressed_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) s;
        (void) usec;
        ingest_flush_log(userdata);
        return 0;
}

/* The first message the rate limit keeps back: report them when its interval ends (it runs on
 * CLOCK_MONOTONIC too). */
static void ingest_arm_suppressed(Ingest *in) {
        uint64_t at = in->reject_ratelimit.begin_usec + in->reject_ratelimit.interval_usec;
        int r;

        r = event_arm_timer(in->event, &in->suppressed_source, at, USEC_PER_MSEC, on_suppressed_timer, in,
                            "ingest-suppressed");
        if (r < 0)
                log_full_errno_fields(LOG_DEBUG, r, LOG_FIELDS("TASK", in->input->task),
                                      "Failed to arm the timer for suppressed messages, ignoring: %m");
}

static void ingest_log_reject(Ingest *in, const IngestReject *rj) {
        const char *sensor = rj->sensor && rj->sensor[0] ? rj->sensor : NULL;
        char excerpt[INGEST_EXCERPT_MAX * 4 + 8];
        unsigned suppressed;

        snprintf(in->last_origin, sizeof(in->last_origin), "%s", strempty(rj->origin));
        if (!ratelimit_below(&in->reject_ratelimit, &suppressed)) {
                if (in->reject_ratelimit.suppressed == 1)
                        ingest_arm_suppressed(in);
                return;
        }
        ingest_log_suppressed(in, suppressed);
        log_full_errno_fields(LOG_WARNING, 0,
                              LOG_FIELDS("TASK", in->input->task, in->input->origin_field, rj->origin, "SENSOR_ID",
                                         sensor),
                              "Rejected %s '%s' (%s, %zu bytes): \"%s\"; kept in the reject table.",
                              in->input->reject_noun, strempty(rj->origin), strna(frame_reject_to_string(rj->reason)),
                              MAX(rj->size, rj->raw_size),
                              format_excerpt(excerpt, sizeof(excerpt), rj->raw, rj->raw_size));
}

int ingest_reject(Ingest *in, const IngestReject *rj) {
        Reject row = {
                .received_ms = rj->received_ms,
                .source = in->input->source,
                .origin = rj->origin,
                .raw = rj->raw,
                .raw_size = rj->raw_size,
                .reason = rj->reason,
        };
        int r;

        if (in->store_failed)
                return -ESHUTDOWN;
        ingest_log_reject(in, rj);
        r = store_append_reject(in->store, &row);
        if (r < 0)
                return ingest_store_failed(in, r);
        in->counters.rejects++;
        rate_window_add(&in->rejects_window, event_now_usec(in->event, CLOCK_MONOTONIC), 1);
        return 0;
}
