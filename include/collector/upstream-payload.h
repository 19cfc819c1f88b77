/* SPDX-License-Identifier: MIT */
/* What goes upstream: the JSON payloads of live readings and backlog batches, and their topics. */
#pragma once

#include <errno.h>
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
        /* NULL, or upstream_payload_envelope()'s text for gateway and store_id: every payload
         * begins with it, copied instead of escaped again per message. */
        const char *envelope;
} UpstreamSource;

/* The start every payload of src has ({"gateway":G,"store":S), into b (replacing its
 * contents), for UpstreamSource.envelope (src->envelope itself is not used). Returns 0 or
 * -ENOMEM. */
int upstream_payload_envelope(UpstreamBuf *b, const UpstreamSource *src);

/* Checks a topic template: the placeholders {gateway}, {store}, and, when per_reading, {sensor}
 * and {metric}; no other brace, no '+' or '#', no empty result. Returns NULL when valid, else a
 * static text saying what is wrong. Pure. */
const char *upstream_topic_check(const char *template, bool per_reading);

/* Expands a checked template into b (replacing its contents). sensor and metric may be NULL
 * (a backlog topic). In a value, '/', '+' and '#' become '_' so that it stays one topic level
 * and a valid topic name (the payload carries the real names). Returns 0 or -ENOMEM. */
int upstream_topic_format(UpstreamBuf *b, const char *template, const UpstreamSource *src, const char *sensor,
                          const char *metric);

/* A topic template with {gateway} and {store} expanded once, for the topic of every live
 * reading: rendering copies its fixed text and the sensor's and metric's names, without walking
 * the template again. The result is byte for byte upstream_topic_format()'s. Zero-initialise;
 * upstream_topic_done() frees what it owns. */
typedef enum UpstreamTopicValue {
        UPSTREAM_TOPIC_NONE,
        UPSTREAM_TOPIC_SENSOR,
        UPSTREAM_TOPIC_METRIC,
        _UPSTREAM_TOPIC_VALUE_MAX,
        _UPSTREAM_TOPIC_VALUE_INVALID = -EINVAL,
} UpstreamTopicValue;

typedef struct UpstreamTopicPart {
        size_t len;                   /* bytes of fixed text, then */
        UpstreamTopicValue value;     /* the value that follows them, if any */
} UpstreamTopicPart;

typedef struct UpstreamTopic {
        char *fixed;                  /* the parts' fixed text, back to back */
        UpstreamTopicPart *parts;
        size_t n_parts;
} UpstreamTopic;

/* Compiles a checked template (upstream_topic_check()) for src (borrowed: only read here) into
 * *t, replacing what t held. Returns 0 or -ENOMEM (t is then empty). */
int upstream_topic_compile(UpstreamTopic *t, const char *template, const UpstreamSource *src);
/* Expands a compiled template into b (replacing its contents), as upstream_topic_format() with
 * the same sensor and metric (may be NULL). Returns 0 or -ENOMEM. */
int upstream_topic_render(UpstreamBuf *b, const UpstreamTopic *t, const char *sensor, const char *metric);
/* Frees what t owns; t is empty afterwards (and may be compiled again). */
void upstream_topic_done(UpstreamTopic *t);

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
