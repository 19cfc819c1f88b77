/* SPDX-License-Identifier: MIT */
/* Unit tests for the upstream section of the configuration: defaults and derived values. */
#include <check.h>
#include <stdio.h>

#include "collector/config.h"
#include "testlib.h"

static Config *parse(const char *text) {
        Config *c = NULL;
        _cleanup_strv_free_ char **errors = NULL;
        int r = config_parse("mem.json", text, strlen(text), &c, &errors);

        ck_assert_msg(r == 0, "%s", errors && errors[0] ? errors[0] : "?");
        return c;
}

/* Off by default, and everything has a value a start can use. */
START_TEST(test_defaults) {
        _cleanup_(config_freep) Config *c = parse("{}");
        char want[128];

        ck_assert(!c->upstream.enabled);
        ck_assert_str_eq(c->upstream.host, "localhost");
        ck_assert_int_eq(c->upstream.port, 1883);
        ck_assert_int_eq(c->upstream.protocol, MQTT_PROTOCOL_V311);
        ck_assert_int_eq(c->upstream.qos, 1);
        ck_assert_uint_eq(c->upstream.max_inflight, 20);
        ck_assert_uint_eq(c->upstream.backlog_rate, 1000);
        ck_assert_uint_eq(c->upstream.batch_size, 100);
        ck_assert_str_eq(c->upstream.topic, "sensor-collector/{gateway}/{sensor}/{metric}");
        ck_assert_str_eq(c->upstream.backlog_topic, "sensor-collector/{gateway}/backlog");
        ck_assert_str_eq(c->upstream.status_topic, "sensor-collector/{gateway}/status");
        ck_assert_ptr_null(c->upstream.live_batch_topic); /* one message per live reading */
        ck_assert_ptr_nonnull(c->upstream.gateway_id);
        ck_assert_uint_gt(strlen(c->upstream.gateway_id), 0);
        snprintf(want, sizeof(want), "sensor-collector-up-%s", c->upstream.gateway_id);
        ck_assert_str_eq(c->upstream.client_id, want);
        ck_assert_ptr_null(c->upstream.username);
}
END_TEST

/* TLS moves the default port; a given gateway id names the client. */
START_TEST(test_derived) {
        _cleanup_(config_freep) Config *c = parse(
                "{\"upstream\": {\"enabled\": true, \"gateway_id\": \"gh-7\", \"cafile\": \"/etc/ssl/ca.pem\", \"protocol\": \"5\"}}");
        _cleanup_(config_freep) Config *d = parse(
                "{\"upstream\": {\"gateway_id\": \"gh-7\", \"client_id\": \"mine\", \"port\": 1999, \"cafile\": \"/etc/ssl/ca.pem\"}}");

        ck_assert(c->upstream.enabled);
        ck_assert_int_eq(c->upstream.port, 8883);
        ck_assert_int_eq(c->upstream.protocol, MQTT_PROTOCOL_V5);
        ck_assert_str_eq(c->upstream.client_id, "sensor-collector-up-gh-7");
        ck_assert_str_eq(d->upstream.client_id, "mine");
        ck_assert_int_eq(d->upstream.port, 1999);
}
END_TEST

/* Live readings grouped: on a topic of their own, without per-reading placeholders. */
START_TEST(test_live_batch_topic) {
        _cleanup_(config_freep) Config *c = parse("{\"upstream\": {\"live_batch_topic\": \"farm/{gateway}/{store}/live\"}}");

        ck_assert_str_eq(c->upstream.live_batch_topic, "farm/{gateway}/{store}/live");
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("config-upstream");
        TCase *tc = tcase_create("core");

        tcase_add_test(tc, test_defaults);
        tcase_add_test(tc, test_derived);
        tcase_add_test(tc, test_live_batch_topic);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(suite());
}
