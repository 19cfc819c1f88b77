/* SPDX-License-Identifier: MIT */
/* MQTT messages into frames: which configured topic a message is for, parsed, handed to ingest. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "collector/frame.h"
#include "collector/log.h"
#include "collector/mqtt-message.h"

struct MqttRouter {
        const MqttConfig *config;     /* borrowed */
        Ingest *ingest;               /* borrowed */
        TopicPattern **patterns;      /* one per config->topics[i] */
        MqttRouterCounters counters;
};

MqttRouter *mqtt_router_free(MqttRouter *r) {
        if (!r)
                return NULL;
        if (r->patterns)
                for (size_t i = 0; i < r->config->n_topics; i++)
                        topic_pattern_free(r->patterns[i]);
        free(r->patterns);
        free(r);
        return NULL;
}

int mqtt_router_new(const MqttConfig *config, Ingest *ingest, MqttRouter **ret) {
        _cleanup_(mqtt_router_freep) MqttRouter *r = NULL;

        assert(config && ingest && ret);
        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        r->config = config;
        r->ingest = ingest;
        r->patterns = calloc(MAX(config->n_topics, 1u), sizeof(TopicPattern *));
        if (!r->patterns)
                return -ENOMEM;
        for (size_t i = 0; i < config->n_topics; i++) {
                int k = topic_pattern_new(config->topics[i].filter, &r->patterns[i], NULL);
                if (k < 0)
                        return k;
        }
        *ret = TAKE_PTR(r);
        return 0;
}

const char *mqtt_router_subscription(const MqttRouter *r, size_t i) {
        assert(i < r->config->n_topics);
        return topic_pattern_subscription(r->patterns[i]);
}

const MqttRouterCounters *mqtt_router_get_counters(const MqttRouter *r) {
        return &r->counters;
}

/* False when the message carries subscription identifiers and none is topic's (index+1): then
 * it is the copy delivered for an overlapping subscription. Without identifiers (MQTT 3.1.1,
 * where mosquitto sends one copy) it is always for us. */
static bool message_is_for(const MqttMessage *msg, size_t topic) {
        for (size_t i = 0; i < msg->n_subscription_ids; i++)
                if (msg->subscription_ids[i] == topic + 1)
                        return true;
        return msg->n_subscription_ids == 0;
}

/* The id for the SENSOR_ID= field of a log line, or NULL for none. What frame.c hands out
 * passes frame_id_valid() (printable ASCII, no space, no control byte); quotes and backslashes
 * pass that too, but in a log field they are what a reader of journalctl, a shell or a log
 * shipper splitting on them trips over. Such an id stays in TOPIC= and the stored row. */
static const char *log_sensor_id(const char *id) {
        if (!id || !frame_id_valid(id, strlen(id)) || strpbrk(id, "\"'\\"))
                return NULL;
        return id;
}

static int router_reject(MqttRouter *r, const MqttMessage *msg, FrameReject reason, const char *sensor,
                         int64_t received_ms) {
        (void) ingest_reject(r->ingest, &(IngestReject){
                                                .origin = msg->topic,
                                                .raw = msg->payload,
                                                .raw_size = MIN(msg->size, r->config->max_payload_bytes),
                                                .size = msg->size,
                                                .reason = reason,
                                                .sensor = log_sensor_id(sensor),
                                                .received_ms = received_ms,
                                        });
        return 0; /* a store failure is handled: ingest no longer accepts */
}

int mqtt_router_handle(MqttRouter *r, const MqttMessage *msg) {
        const MqttConfig *c = r->config;
        const MqttTopicConfig *tc = NULL;
        int64_t received_ms = ingest_receipt_ms(r->ingest);
        FrameReject reason;
        TopicMatch match;
        Frame frame;
        int k;

        for (size_t i = 0; i < c->n_topics && !tc; i++)
                if (topic_pattern_match_into(r->patterns[i], msg->topic, &match) > 0)
                        tc = &c->topics[i];
        if (!tc)
                return router_reject(r, msg, FRAME_REJECT_TOPIC_MISMATCH, NULL, received_ms);
        if (!message_is_for(msg, (size_t) (tc - c->topics))) {
                /* Another subscription's copy of a message we take from this topic's copy. */
                r->counters.duplicates++;
                return 0;
        }
        k = frame_parse_mqtt_matched(&match, tc->format, tc->sensor, tc->metric, msg->payload, msg->size,
                                     c->max_payload_bytes, &frame, &reason);
        if (k == -EBADMSG) /* frame.sensor: the valid id the message names, or "" */
                return router_reject(r, msg, reason, frame.sensor, received_ms);
        if (k < 0)
                return k;

        /* A retained message arrives again on every subscribe; without the sensor's own
         * timestamp it is an old value of unknown age, not a reading taken now. */
        if (msg->retain && !frame.has_ts) {
                r->counters.retained_skipped++;
                log_full_errno_fields(LOG_DEBUG, 0,
                                      LOG_FIELDS("TASK", "mqtt", "TOPIC", msg->topic, "SENSOR_ID",
                                                 log_sensor_id(frame.sensor)),
                                      "Skipping retained message without timestamp on '%s'.", msg->topic);
                return 0;
        }
        if (ingest_frame_raw(r->ingest, &frame, msg->topic, received_ms, msg->payload,
                             MIN(msg->size, r->config->max_payload_bytes)) == INGEST_TOO_MANY_NAMES)
                return router_reject(r, msg, FRAME_REJECT_TOO_MANY_NAMES, frame.sensor, received_ms);
        return 0;
}
