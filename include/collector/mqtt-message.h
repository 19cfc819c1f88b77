/* SPDX-License-Identifier: MIT */
/* MQTT messages into frames: which configured topic a message is for, parsed, handed to ingest. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "collector/config.h"
#include "collector/ingest.h"
#include "collector/macro.h"

/* The transport's view of one message, copied out of libmosquitto's (all borrowed for the
 * call). subscription_ids are the MQTT 5 subscription identifiers it carries (the task numbers
 * its subscriptions 1..n_topics); none with MQTT 3.1.1. */
typedef struct MqttMessage {
        const char *topic;
        const void *payload;
        size_t size;
        bool retain;
        const uint32_t *subscription_ids;
        size_t n_subscription_ids;
} MqttMessage;

/* The configured topics as patterns, and what became of the messages they did not store. */
typedef struct MqttRouter MqttRouter;

typedef struct MqttRouterCounters {
        uint64_t duplicates;          /* MQTT 5 copies for overlapping subscriptions, skipped */
        uint64_t retained_skipped;    /* retained without a timestamp: of unknown age */
} MqttRouterCounters;

/* Builds the pattern of each of config->topics (config borrowed, must outlive the router;
 * ingest borrowed). Returns 0, -EINVAL for a filter config validation should have refused, or
 * -ENOMEM. */
int mqtt_router_new(const MqttConfig *config, Ingest *ingest, MqttRouter **ret);
MqttRouter *mqtt_router_free(MqttRouter *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(MqttRouter *, mqtt_router_free);

/* The MQTT filter to subscribe to for config->topics[i] (named wildcards removed). Owned by
 * the router. */
const char *mqtt_router_subscription(const MqttRouter *r, size_t i);

/* One message: the first configured topic whose pattern matches decides how the payload is
 * read; a message no topic matches, or that does not parse, is a reject; a copy delivered for
 * another, overlapping subscription (MQTT 5) and a retained message without a timestamp are
 * skipped and counted; anything else becomes readings. Returns 0 (also when the store refused:
 * then ingest_accepting() is false), or -errno for a fault of ours rather than a verdict on the
 * payload (out of memory): the message would be lost silently, so the task fails. */
int mqtt_router_handle(MqttRouter *r, const MqttMessage *msg);

const MqttRouterCounters *mqtt_router_get_counters(const MqttRouter *r);
