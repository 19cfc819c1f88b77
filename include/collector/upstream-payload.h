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
 * {"gateway":G,"store":S,"seq":N,"sensor":..,"metric":..,"value":V,"ts":MS,"flags":[..],"historical":false}.
 * Returns 0 or -ENOMEM. */
int upstream_payload_live(UpstreamBuf *b, const UpstreamSource *src, const StoredReading *r);

/* A backlog batch: upstream_payload_batch_begin() replaces b's contents with the envelope
 * {"gateway":G,"store":S,"historical":true,"readings":[, each _add() appends one reading
 * object {"seq":..,"sensor":..,"metric":..,"value":..,"ts":..,"flags":[..]}, _end() closes it.
 * Each returns 0 or -ENOMEM. */
int upstream_payload_batch_begin(UpstreamBuf *b, const UpstreamSource *src);
int upstream_payload_batch_add(UpstreamBuf *b, const StoredReading *r, bool first);
int upstream_payload_batch_end(UpstreamBuf *b);
