/* SPDX-License-Identifier: MIT */
/* Ingest: the one step from a parsed frame (or a reject) to the store, shared by every input. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "collector/clock.h"
#include "collector/frame.h"
#include "collector/macro.h"
#include "collector/sensors.h"
#include "collector/store.h"

/* The inputs are transports: they read bytes or messages and parse them (frame.c); what to do
 * with a frame or with bytes that did not parse is decided here, the same way for every input:
 * the timestamp rule, reject rows with the raw bytes, rate-limited reject logs that say later
 * how many they kept back, the counters STATUS= shows, and stopping once the store refused a
 * row. Each input has its own Ingest. */
typedef struct Ingest Ingest;

/* What an input is, for logs: its task name (TASK=), the journal field its origin goes in
 * ("DEVICE" for a port, "TOPIC" for an MQTT topic), how a reject is named in a log line
 * ("frame from", "message on") and what the suppressed ones are called ("frames from", followed
 * by the origin when every reject of the input has the same one, or "MQTT messages" when the
 * origin varies per message). Static strings. */
typedef struct IngestInput {
        const char *task;
        ReadingSource source;
        const char *origin_field;
        const char *reject_noun;
        const char *suppressed_noun;
        bool suppressed_names_origin;
} IngestInput;

typedef struct IngestCounters {
        uint64_t frames;              /* frames stored (each one or more readings) */
        uint64_t readings;            /* readings handed to the store */
        uint64_t rejects;             /* rejects handed to the store */
        uint64_t unsynced;            /* readings received while the clock was not trusted */
        uint64_t suspect_ts;          /* frames whose sensor time was far from the clock */
} IngestCounters;

/* One reject: raw bytes as received (or their first raw_size bytes when the input caps what it
 * keeps: size is then the whole size, for the log), why, and the sensor id when the bytes
 * named a valid one (else NULL or ""). Everything is borrowed for the call. */
typedef struct IngestReject {
        const char *origin;
        const void *raw;
        size_t raw_size;
        size_t size;
        FrameReject reason;
        const char *sensor;
        int64_t received_ms;
} IngestReject;

/* Creates an ingest step for one input. input must be static; e is referenced (timers for the
 * suppressed-message report); store and clock (NULL: readings are not flagged) are borrowed and
 * must outlive it. Returns 0 or -ENOMEM. */
int ingest_new(sd_event *e, Store *store, Clock *clock, const IngestInput *input, Ingest **ret);
/* Reports what the rate limit still holds back, then frees. Accepts NULL; returns NULL. */
Ingest *ingest_free(Ingest *in);
DEFINE_TRIVIAL_CLEANUP_FUNC(Ingest *, ingest_free);

/* The time of receipt, in ms since the epoch, of what the input read in this loop iteration:
 * the loop's wall clock when it woke up. The same clock for every input, and the same value
 * for everything one iteration read. */
int64_t ingest_receipt_ms(const Ingest *in);

/* Stores each metric of a frame that came from origin (borrowed) as a reading. Its time is the
 * sensor's own when the frame has one, else received_ms. Its flags are the clock's
 * (clock_reading_flags()): a reading received while the clock is not trusted keeps its
 * CLOCK_BOOTTIME for correction; a sensor time far from a trusted clock is logged (at most 5
 * lines per 10 min per input). Flags never hold a reading back. Returns 0; or
 * INGEST_TOO_MANY_NAMES when nothing was stored because the frame would add a name past
 * store.max_names: the input stores its raw bytes with ingest_reject(), reason
 * FRAME_REJECT_TOO_MANY_NAMES (the raw bytes are the input's); or the store's -errno: the store
 * has reported its failure, and from now on the input must not read any more
 * (ingest_accepting() is false). */
#define INGEST_TOO_MANY_NAMES 1
int ingest_frame(Ingest *in, const Frame *frame, const char *origin, int64_t received_ms);

/* The same, with the sensor map applied (see ingest_set_sensors()): a sensor the map does not
 * know is rejected as unknown_sensor when its policy says so, and a metric outside its range
 * is rejected as out_of_range while the frame's other metrics are stored; raw[0..raw_size)
 * (borrowed; the frame as received) goes into those rejects. raw NULL: a text made from the
 * frame is kept instead. Returns as ingest_frame(). */
int ingest_frame_raw(Ingest *in, const Frame *frame, const char *origin, int64_t received_ms, const void *raw,
                     size_t raw_size);

/* Applies the sensor map of sensors (borrowed, shared by every input; NULL: none) to what
 * ingest_frame_raw() stores from now on. */
void ingest_set_sensors(Ingest *in, Sensors *sensors);

/* The input cannot deliver (port gone, broker unreachable): the first call of an outage writes
 * an input_down event with cause (copied); later calls until ingest_input_up() do nothing. */
void ingest_input_down(Ingest *in, const char *cause);
/* The input delivers again: ends an outage with an input_up event that carries its length.
 * Does nothing when the input was not down. */
void ingest_input_up(Ingest *in);

/* Stores a reject and logs it (at most 10 lines per 10 s per input; how many were kept back
 * is logged when that interval ends, or at ingest_flush_log()). Returns 0 or the store's
 * -errno, as ingest_frame(). */
int ingest_reject(Ingest *in, const IngestReject *rj);

/* False once the store has refused a row: the input stops reading (TCP and the tty buffer push
 * back) and waits for the supervisor to stop it. */
bool ingest_accepting(const Ingest *in);

/* The store refused a row the input wrote itself (the MQTT task's session memory): the same as
 * a refused reading, ingest_accepting() is false from now on. Returns error. */
int ingest_store_failed(Ingest *in, int error);

/* Logs now how many reject messages the rate limit kept back, if any (at stop and failure). */
void ingest_flush_log(Ingest *in);

const IngestCounters *ingest_get_counters(const Ingest *in);
/* Readings and rejects handed to the store in the last minute (for `sensor-collector status`). */
void ingest_get_last_minute(const Ingest *in, uint64_t *ret_readings, uint64_t *ret_rejects);
