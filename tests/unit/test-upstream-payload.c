/* SPDX-License-Identifier: MIT */
/* Unit tests for the upstream payloads and topic templates. */
#include <check.h>
#include <inttypes.h>
#include <stdio.h>

#include "collector/upstream-payload.h"
#include "testlib.h"

static const UpstreamSource src = { .gateway = "gw-1", .store_id = "00112233445566778899aabbccddeeff" };

static const struct {
        const char *template;
        bool per_reading;
        const char *error; /* a part of it; NULL: valid */
} check_table[] = {
        { "sensor-collector/{gateway}/{sensor}/{metric}", true, NULL },
        { "a/{store}/{gateway}", false, NULL },
        { "plain", false, NULL },
        { "", true, "empty" },
        { "a/{sensor}", false, "only the placeholders {gateway} and {store}" },
        { "a/{sensr}", true, "only the placeholders" },
        { "a/{gateway", true, "without its '}'" },
        { "a/gateway}", true, "without its '{'" },
        { "a/+/b", true, "'+' or '#'" },
        { "a/#", false, "'+' or '#'" },
};

START_TEST(test_topic_check) {
        for (size_t i = 0; i < ELEMENTSOF(check_table); i++) {
                const char *e = upstream_topic_check(check_table[i].template, check_table[i].per_reading);

                if (!check_table[i].error)
                        ck_assert_msg(!e, "'%s': %s", check_table[i].template, e);
                else
                        ck_assert_msg(e && strstr(e, check_table[i].error), "'%s': %s", check_table[i].template, strna(e));
        }
}
END_TEST

static const struct {
        const char *template, *sensor, *metric, *want;
} format_table[] = {
        { "sc/{gateway}/{sensor}/{metric}", "t1", "temp", "sc/gw-1/t1/temp" },
        { "{store}", NULL, NULL, "00112233445566778899aabbccddeeff" },
        { "x/{sensor}", "a/b+c#d", "m", "x/a_b_c_d" },   /* one level, a valid topic name */
        { "x/{sensor}{metric}/y", "", "m", "x/_m/y" },
};

START_TEST(test_topic_format) {
        UpstreamBuf b = {};

        for (size_t i = 0; i < ELEMENTSOF(format_table); i++) {
                ck_assert_int_eq(upstream_topic_format(&b, format_table[i].template, &src, format_table[i].sensor,
                                                       format_table[i].metric),
                                 0);
                ck_assert_str_eq(b.data, format_table[i].want);
        }
        free(b.data);
}
END_TEST

/* A compiled template renders byte for byte what upstream_topic_format() gives, for every
 * template and name of these tables (the format table's cases included). */
static const char *const render_templates[] = {
        "sensor-collector/{gateway}/{sensor}/{metric}",
        "sc/{gateway}/{sensor}/{metric}",
        "{store}",
        "plain",
        "x/{sensor}",
        "x/{sensor}{metric}/y",
        "{sensor}",
        "{metric}/{sensor}/{metric}/{sensor}",
        "{gateway}{store}{sensor}{metric}",
        "a/{store}/b/{gateway}/c/{metric}/d",
};

static const struct {
        const char *sensor, *metric;
} render_names[] = {
        { "t1", "temp" },
        { NULL, NULL },
        { "", "" },
        { "a/b+c#d", "m" },
        { "/", "#" },
        { "gh1-s01", "humidity" },
        { "sensor with spaces and \"quotes\"", "x//y" },
        { "++", "//##" },
};

START_TEST(test_topic_render) {
        static const UpstreamSource odd = { .gateway = "gw/2+#", .store_id = "" };
        const UpstreamSource *sources[] = { &src, &odd };
        UpstreamBuf want = {}, got = {};
        UpstreamTopic t = {};

        for (size_t k = 0; k < ELEMENTSOF(sources); k++)
                for (size_t i = 0; i < ELEMENTSOF(render_templates); i++) {
                        ck_assert_int_eq(upstream_topic_compile(&t, render_templates[i], sources[k]), 0);
                        for (size_t j = 0; j < ELEMENTSOF(render_names); j++) {
                                ck_assert_int_eq(upstream_topic_format(&want, render_templates[i], sources[k],
                                                                       render_names[j].sensor, render_names[j].metric),
                                                 0);
                                ck_assert_int_eq(upstream_topic_render(&got, &t, render_names[j].sensor,
                                                                       render_names[j].metric),
                                                 0);
                                ck_assert_msg(got.len == want.len && streq(got.data, want.data),
                                              "'%s' with '%s', '%s': '%s', want '%s'", render_templates[i],
                                              strna(render_names[j].sensor), strna(render_names[j].metric), got.data,
                                              want.data);
                        }
                }
        /* The format table's expected topics, through a compiled template. */
        for (size_t i = 0; i < ELEMENTSOF(format_table); i++) {
                ck_assert_int_eq(upstream_topic_compile(&t, format_table[i].template, &src), 0);
                ck_assert_int_eq(upstream_topic_render(&got, &t, format_table[i].sensor, format_table[i].metric), 0);
                ck_assert_str_eq(got.data, format_table[i].want);
        }
        upstream_topic_done(&t);
        upstream_topic_done(&t); /* twice is fine */
        free(want.data);
        free(got.data);
}
END_TEST

START_TEST(test_payloads) {
        UpstreamBuf b = {};
        StoredReading r = { .id = 42, .sensor = "t\"1", .metric = "temp", .value = 21.5, .ts_ms = 1700000000123,
                            .sensor_ts = true };
        StoredReading q = { .id = 43, .sensor = "h1", .metric = "rh", .value = 0.1, .ts_ms = 1700000000200 };

        ck_assert_int_eq(upstream_payload_live(&b, &src, &r, NULL), 0);
        ck_assert_str_eq(b.data, "{\"gateway\":\"gw-1\",\"store\":\"00112233445566778899aabbccddeeff\",\"seq\":42,"
                                 "\"sensor\":\"t\\\"1\",\"metric\":\"temp\",\"value\":21.5,\"ts\":1700000000123,"
                                 "\"flags\":[\"sensor_ts\"],\"historical\":false}");
        ck_assert_int_eq(upstream_payload_batch_begin(&b, &src), 0);
        ck_assert_int_eq(upstream_payload_batch_add(&b, &r, NULL, true), 0);
        ck_assert_int_eq(upstream_payload_batch_add(&b, &q, NULL, false), 0);
        ck_assert_int_eq(upstream_payload_batch_end(&b), 0);
        ck_assert_str_eq(b.data, "{\"gateway\":\"gw-1\",\"store\":\"00112233445566778899aabbccddeeff\",\"historical\":true,"
                                 "\"readings\":[{\"seq\":42,\"sensor\":\"t\\\"1\",\"metric\":\"temp\",\"value\":21.5,"
                                 "\"ts\":1700000000123,\"flags\":[\"sensor_ts\"]},{\"seq\":43,\"sensor\":\"h1\","
                                 "\"metric\":\"rh\",\"value\":0.1,\"ts\":1700000000200,\"flags\":[]}]}");
        /* Live readings grouped (upstream.live_batch_topic): the backlog's form, not historical. */
        ck_assert_int_eq(upstream_payload_live_batch_begin(&b, &src), 0);
        ck_assert_int_eq(upstream_payload_batch_add(&b, &q, NULL, true), 0);
        ck_assert_int_eq(upstream_payload_batch_end(&b), 0);
        ck_assert_str_eq(b.data, "{\"gateway\":\"gw-1\",\"store\":\"00112233445566778899aabbccddeeff\",\"historical\":false,"
                                 "\"readings\":[{\"seq\":43,\"sensor\":\"h1\",\"metric\":\"rh\","
                                 "\"value\":0.1,\"ts\":1700000000200,\"flags\":[]}]}");
        free(b.data);
}
END_TEST

/* The clock flags and the unit: each combination as the payload spells it. */
static const struct {
        bool sensor_ts;
        unsigned flags;
        const char *unit;
        const char *want;             /* from "value" to the end of the reading object */
} flags_table[] = {
        { false, 0, NULL, "\"value\":21.5,\"ts\":1000,\"flags\":[]" },
        { true, 0, "°C", "\"value\":21.5,\"unit\":\"°C\",\"ts\":1000,\"flags\":[\"sensor_ts\"]" },
        { false, READING_FLAG_UNSYNCED, NULL, "\"value\":21.5,\"ts\":1000,\"flags\":[\"unsynced\"]" },
        { false, READING_FLAG_UNSYNCED | READING_FLAG_CORRECTED, "%",
          "\"value\":21.5,\"unit\":\"%\",\"ts\":1000,\"flags\":[\"unsynced\",\"corrected\"]" },
        { true, READING_FLAG_SUSPECT_TS, NULL, "\"value\":21.5,\"ts\":1000,\"flags\":[\"sensor_ts\",\"suspect_ts\"]" },
        { true, READING_FLAG_UNSYNCED | READING_FLAG_CORRECTED | READING_FLAG_SUSPECT_TS, "a\"b",
          "\"value\":21.5,\"unit\":\"a\\\"b\",\"ts\":1000,"
          "\"flags\":[\"sensor_ts\",\"unsynced\",\"corrected\",\"suspect_ts\"]" },
};

START_TEST(test_payload_flags_unit) {
        UpstreamBuf b = {};

        for (size_t i = 0; i < ELEMENTSOF(flags_table); i++) {
                StoredReading r = { .id = 7, .sensor = "s", .metric = "m", .value = 21.5, .ts_ms = 1000,
                                    .sensor_ts = flags_table[i].sensor_ts, .flags = flags_table[i].flags };
                char want[512];

                ck_assert_int_lt(snprintf(want, sizeof(want), "{\"gateway\":\"gw-1\",\"store\":\"00112233445566778899aabbccddeeff\","
                                                 "\"seq\":7,\"sensor\":\"s\",\"metric\":\"m\",%s,\"historical\":false}",
                                          flags_table[i].want),
                                 (int) sizeof(want));
                ck_assert_int_eq(upstream_payload_live(&b, &src, &r, flags_table[i].unit), 0);
                ck_assert_str_eq(b.data, want);

                ck_assert_int_lt(snprintf(want, sizeof(want), "{\"gateway\":\"gw-1\",\"store\":\"00112233445566778899aabbccddeeff\","
                                                 "\"historical\":true,\"readings\":[{\"seq\":7,\"sensor\":\"s\","
                                                 "\"metric\":\"m\",%s}]}",
                                          flags_table[i].want),
                                 (int) sizeof(want));
                ck_assert_int_eq(upstream_payload_batch_begin(&b, &src), 0);
                ck_assert_int_eq(upstream_payload_batch_add(&b, &r, flags_table[i].unit, true), 0);
                ck_assert_int_eq(upstream_payload_batch_end(&b), 0);
                ck_assert_str_eq(b.data, want);
        }
        free(b.data);
}
END_TEST

/* The value as the shortest text that reads back as the same double. */
static const struct {
        double value;
        const char *text;
} value_table[] = {
        { 22.3, "22.3" },
        { -0.5, "-0.5" },
        { 1013.25, "1013.25" },
        { 612, "612" },
        { 0.1 + 0.2, "0.30000000000000004" },
        { 1e-7, "1e-07" },
        { 6.02214076e23, "6.02214076e+23" },
};

START_TEST(test_payload_value) {
        UpstreamBuf b = {};
        StoredReading r = { .id = 1, .sensor = "s", .metric = "m", .value = value_table[_i].value, .ts_ms = 1000 };
        char want[256];

        snprintf(want, sizeof(want), ",\"value\":%s,\"ts\":1000,", value_table[_i].text);
        ck_assert_int_eq(upstream_payload_live(&b, &src, &r, NULL), 0);
        ck_assert_msg(strstr(b.data, want), "%s lacks %s", b.data, want);
        ck_assert(strtod(value_table[_i].text, NULL) == value_table[_i].value);
        free(b.data);
}
END_TEST

/* Names are copied in runs and escaped where JSON needs it; integers are printed without printf. */
static const struct {
        const char *sensor;
        int64_t seq, ts;
        const char *want;             /* from "seq" to "metric" */
} escape_table[] = {
        { "plain-name", 1, 0, "\"seq\":1,\"sensor\":\"plain-name\"" },
        { "", 0, -1, "\"seq\":0,\"sensor\":\"\"" },
        { "\"", 9, 1, "\"seq\":9,\"sensor\":\"\\\"\"" },
        { "a\\b\"c", 10, 10, "\"seq\":10,\"sensor\":\"a\\\\b\\\"c\"" },
        { "x\ny\x01", 123456789012345, 1796304975970, "\"seq\":123456789012345,\"sensor\":\"x\\u000ay\\u0001\"" },
        { "\x1f\\\"end", INT64_MAX, INT64_MIN, "\"seq\":9223372036854775807,\"sensor\":\"\\u001f\\\\\\\"end\"" },
        { "°C-ü", -5, 99, "\"seq\":-5,\"sensor\":\"°C-ü\"" },
};

START_TEST(test_payload_escapes) {
        UpstreamBuf b = {};

        for (size_t i = 0; i < ELEMENTSOF(escape_table); i++) {
                StoredReading r = { .id = escape_table[i].seq, .sensor = escape_table[i].sensor, .metric = "m",
                                    .value = 1, .ts_ms = escape_table[i].ts };
                char want[512];

                ck_assert_int_lt(snprintf(want, sizeof(want), "{\"gateway\":\"gw-1\",\"store\":\"00112233445566778899aabbccddeeff\","
                                                 "%s,\"metric\":\"m\",\"value\":1,\"ts\":%" PRId64 ",\"flags\":[],"
                                                 "\"historical\":false}",
                                          escape_table[i].want, escape_table[i].ts),
                                 (int) sizeof(want));
                ck_assert_int_eq(upstream_payload_live(&b, &src, &r, NULL), 0);
                ck_assert_str_eq(b.data, want);
        }
        free(b.data);
}
END_TEST

/* A source with its envelope prepared gives the same payloads, byte for byte, as without. */
START_TEST(test_payload_envelope) {
        static const UpstreamSource odd = { .gateway = "gw \"2\"\\x\x01", .store_id = "00112233445566778899aabbccddeeff" };
        const UpstreamSource *sources[] = { &src, &odd };
        StoredReading r = { .id = 7, .sensor = "s", .metric = "m", .value = -0.5, .ts_ms = 1, .flags = READING_FLAG_UNSYNCED };
        UpstreamBuf env = {}, want = {}, got = {};

        for (size_t k = 0; k < ELEMENTSOF(sources); k++) {
                UpstreamSource prepared = *sources[k];

                ck_assert_int_eq(upstream_payload_envelope(&env, sources[k]), 0);
                prepared.envelope = env.data;
                ck_assert_int_eq(upstream_payload_live(&want, sources[k], &r, "C"), 0);
                ck_assert_int_eq(upstream_payload_live(&got, &prepared, &r, "C"), 0);
                ck_assert_str_eq(got.data, want.data);
                ck_assert_int_eq(upstream_payload_batch_begin(&want, sources[k]), 0);
                ck_assert_int_eq(upstream_payload_batch_begin(&got, &prepared), 0);
                ck_assert_str_eq(got.data, want.data);
                ck_assert_int_eq(upstream_payload_live_batch_begin(&want, sources[k]), 0);
                ck_assert_int_eq(upstream_payload_live_batch_begin(&got, &prepared), 0);
                ck_assert_str_eq(got.data, want.data);
                /* The envelope is made from gateway and store, never from an envelope. */
                prepared.envelope = "bogus";
                ck_assert_int_eq(upstream_payload_envelope(&got, &prepared), 0);
                ck_assert_str_eq(got.data, env.data);
        }
        ck_assert_str_eq(env.data, "{\"gateway\":\"gw \\\"2\\\"\\\\x\\u0001\",\"store\":\"00112233445566778899aabbccddeeff\"");
        free(env.data);
        free(want.data);
        free(got.data);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("upstream-payload");
        TCase *tc = tcase_create("core");

        tcase_add_test(tc, test_topic_check);
        tcase_add_test(tc, test_topic_format);
        tcase_add_test(tc, test_topic_render);
        tcase_add_test(tc, test_payload_envelope);
        tcase_add_test(tc, test_payloads);
        tcase_add_test(tc, test_payload_flags_unit);
        tcase_add_loop_test(tc, test_payload_value, 0, ELEMENTSOF(value_table));
        tcase_add_test(tc, test_payload_escapes);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(suite());
}
