/* SPDX-License-Identifier: MIT */
/* What goes upstream: the JSON payloads of live readings and backlog batches, and their topics. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "collector/store-reader.h"

/* A growing text buffer. Zero-initialise; free data when done. */
typedef struct UpstreamBuf {
        char *data;
        size_t len, cap;
} UpstreamBuf;

/* Who sends: part of every payload and of the idempotency key (gateway, store, seq). Borrowed. */
typedef struct UpstreamSource {
        const char *gateway;
        const char *store_id;
} UpstreamSource;

/* Checks a topic template: the placeholders {gateway}, {store}, and, when per_reading, {sensor}
 * and {metric}; no other brace, no '+' or '#', no empty result. Returns NULL when valid, else a
 * static text saying what is wrong. Pure. */
const char *upstream_topic_check(const char *template, bool per_reading);

/* Expands a checked template into b (replacing its contents). sensor and metric may be NULL
 * (a backlog topic). In a value, '/', '+' and '#' become '_' so that it stays one topic level
 * and a valid topic name (the payload carries the real names). Returns 0 or -ENOMEM. */
int upstream_topic_format(UpstreamBuf *b, const char *template, const UpstreamSource *src, const char *sensor,
                          const char *metric);

/* A live reading as one JSON object (replacing b's contents):
 * {"gateway":G,"store":S,"seq":N,"sensor":..,"metric":..,"value":V,"unit":U,"ts":MS,"flags":[..],"historical":false}.
 * "unit" is there only when unit is not NULL (borrowed: the sensor map's unit of this sensor
 * and metric). "flags" lists, in this order, "sensor_ts" (ts is the sensor's own time) and the
 * clock flags of r->flags: "unsynced", "corrected", "suspect_ts" (docs/UPSTREAM.md).
 * Returns 0 or -ENOMEM. */
int upstream_payload_live(UpstreamBuf *b, const UpstreamSource *src, const StoredReading *r, const char *unit);

/* A backlog batch: upstream_payload_batch_begin() replaces b's contents with the envelope
 * {"gateway":G,"store":S,"historical":true,"readings":[, each _add() appends one reading
 * object {"seq":..,"sensor":..,"metric":..,"value":..,"unit":..,"ts":..,"flags":[..]} (unit and
 * flags as for a live reading), _end() closes it. Each returns 0 or -ENOMEM. */
int upstream_payload_batch_begin(UpstreamBuf *b, const UpstreamSource *src);
/* The same envelope for live readings grouped into one message (upstream.live_batch_topic):
 * {"gateway":G,"store":S,"historical":false,"readings":[; continue with _add() and _end().
 * Returns 0 or -ENOMEM. */
int upstream_payload_live_batch_begin(UpstreamBuf *b, const UpstreamSource *src);
int upstream_payload_batch_add(UpstreamBuf *b, const StoredReading *r, const char *unit, bool first);
int upstream_payload_batch_end(UpstreamBuf *b);
