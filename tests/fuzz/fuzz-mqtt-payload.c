/* SPDX-License-Identifier: MIT */
/* libFuzzer target: MQTT topic + payload through topic patterns, frame_parse_mqtt() and the match-once path. */
#include <math.h>
#include <stdlib.h>

#include "collector/frame.h"
#include "fuzz-frame-check.h"

static const struct {
        const char *filter;           /* NULL: no pattern */
        FrameFormat format;
        const char *fixed_sensor, *fixed_metric;
} subscriptions[] = {
        { "greenhouse/+sensor/+metric", FRAME_FORMAT_VALUE, NULL, NULL },
        { "greenhouse/+sensor/state", FRAME_FORMAT_JSON, NULL, NULL },
        { "greenhouse/+sensor/kv", FRAME_FORMAT_KV, NULL, NULL },
        { "+/+metric/#", FRAME_FORMAT_VALUE, "fixed-sensor", NULL },
        { "#", FRAME_FORMAT_JSON, "fixed-sensor", NULL },
        { "$SYS/+sensor", FRAME_FORMAT_VALUE, NULL, "uptime" },
        { NULL, FRAME_FORMAT_VALUE, "s", "m" },
};

static TopicPattern *patterns[ELEMENTSOF(subscriptions)];

static void check_match(const TopicPattern *p, const char *topic) {
        char sensor[SENSOR_ID_MAX + 1], metric[METRIC_NAME_MAX + 1];
        int r;

        TopicMatch m;

        r = topic_pattern_match(p, topic, sensor, metric);
        if (r < 0 || r > 1)
                abort();
        if (r == 1 && (strlen(sensor) > SENSOR_ID_MAX || strlen(metric) > METRIC_NAME_MAX))
                abort();
        if (r != topic_pattern_match(p, topic, NULL, NULL))
                abort();
        /* the TopicMatch form: the same verdict and levels, the pattern's names */
        if (topic_pattern_match_into(p, topic, &m) != r)
                abort();
        if (r == 1 && (!streq(m.sensor, sensor) || !streq(m.metric, metric) ||
                       m.has_sensor != topic_pattern_has_sensor(p) || m.has_metric != topic_pattern_has_metric(p)))
                abort();
}

/* The same frame from both paths: field by field on success (bytes after a name's NUL are not
 * part of it); on a reject the sensor id. */
static bool frames_equal(const Frame *a, const Frame *b, int r) {
        if (!streq(a->sensor, b->sensor))
                return false;
        if (r != 0)
                return true;
        if (a->has_ts != b->has_ts || (a->has_ts && a->ts_ms != b->ts_ms) || a->n_metrics != b->n_metrics ||
            a->n_ignored != b->n_ignored)
                return false;
        for (size_t i = 0; i < a->n_metrics; i++)
                if (!streq(a->metrics[i].name, b->metrics[i].name) ||
                    memcmp(&a->metrics[i].value, &b->metrics[i].value, sizeof(double)) != 0)
                        return false;
        return true;
}

/* frame_parse_mqtt() against the match-once path: topic_pattern_match_into(), then
 * frame_parse_mqtt_matched(). They must agree on everything; where the topic does not match,
 * frame_parse_mqtt() alone answers, with too_long or topic_mismatch and no sensor id. */
static void check_paths_agree(size_t i, const TopicPattern *p, const char *topic, const char *payload,
                              size_t size, size_t max, int r, const Frame *f, FrameReject reason) {
        FrameReject reason_b;
        TopicMatch m;
        Frame b;
        int rb;

        if (p && topic_pattern_match_into(p, topic, &m) == 0) {
                if (r != -EBADMSG || f->sensor[0] != 0 ||
                    reason != (size > max ? FRAME_REJECT_TOO_LONG : FRAME_REJECT_TOPIC_MISMATCH))
                        abort();
                return;
        }
        rb = frame_parse_mqtt_matched(p ? &m : NULL, subscriptions[i].format, subscriptions[i].fixed_sensor,
                                      subscriptions[i].fixed_metric, payload, size, max, &b, &reason_b);
        if (rb == -ENOMEM || r == -ENOMEM)
                return;
        if (rb != r || (r == -EBADMSG && reason_b != reason) || !frames_equal(f, &b, r))
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const uint8_t *nul = memchr(data, 0, size);
        size_t topic_len = nul ? (size_t) (nul - data) : size;
        const uint8_t *payload = nul ? nul + 1 : data + size;
        size_t payload_size = size - topic_len - (nul ? 1 : 0);
        char *topic, *payload_copy;
        TopicPattern *own = NULL;
        const char *error = NULL;
        FrameReject reason;
        Frame f;
        double v;
        int r;

        for (size_t i = 0; i < ELEMENTSOF(subscriptions); i++)
                if (!patterns[i] && subscriptions[i].filter &&
                    topic_pattern_new(subscriptions[i].filter, &patterns[i], NULL) < 0)
                        abort();

        topic = malloc(topic_len + 1);
        if (!topic)
                abort();
        memcpy(topic, data, topic_len);
        topic[topic_len] = 0;
        /* an exactly sized copy, so that a read past the payload is caught */
        payload_copy = malloc(payload_size ?: 1);
        if (!payload_copy)
                abort();
        memcpy(payload_copy, payload, payload_size);

        for (size_t i = 0; i < ELEMENTSOF(subscriptions); i++) {
                r = frame_parse_mqtt(patterns[i], subscriptions[i].format, subscriptions[i].fixed_sensor,
                                     subscriptions[i].fixed_metric, topic, payload_copy, payload_size, 1024, &f,
                                     &reason);
                fuzz_check_frame(r, &f, reason);
                check_paths_agree(i, patterns[i], topic, payload_copy, payload_size, 1024, r, &f, reason);
                /* a +sensor level is the identity: a reading is that sensor's, whatever the
                 * payload says, and a reject is logged under it or under none */
                if (topic_pattern_has_sensor(patterns[i]) && (r == 0 || r == -EBADMSG)) {
                        TopicMatch m;

                        if (topic_pattern_match_into(patterns[i], topic, &m) == 1 &&
                            !streq(f.sensor, m.sensor) && (r == 0 || f.sensor[0] != 0))
                                abort();
                }
                if (patterns[i])
                        check_match(patterns[i], topic);
        }

        r = frame_parse_value(payload_copy, payload_size, &v, &reason);
        if (r == 0 && !isfinite(v))
                abort();

        /* the topic as a filter, matched against the payload as a topic */
        r = topic_pattern_new(topic, &own, &error);
        if (r == 0) {
                const char *sub = topic_pattern_subscription(own);
                char *as_topic = strndup(payload_copy, payload_size);

                if (!sub || strlen(sub) > topic_len || !as_topic)
                        abort();
                check_match(own, as_topic);
                check_match(own, topic);
                free(as_topic);
                topic_pattern_free(own);
        } else if (r != -EINVAL || !error)
                abort();

        free(topic);
        free(payload_copy);
        return 0;
}
