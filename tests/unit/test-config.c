/* SPDX-License-Identifier: MIT */
/* Tests for the configuration loader: values, defaults, and every error message pinned. */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "collector/config.h"
#include "testlib.h"

#define DATA_DIR SC_SOURCE_DIR "/tests/data/config"
#define EXAMPLE SC_SOURCE_DIR "/config/sensor-collector.json"

/* The errors as one text, each line ending in '\n' ("" for none). Caller frees. */
static char *join(char **l) {
        size_t n = 1;
        char *r, *p;

        for (char **i = l; i && *i; i++)
                n += strlen(*i) + 1;
        r = p = malloc(n);
        ck_assert_ptr_nonnull(r);
        *p = 0;
        for (char **i = l; i && *i; i++)
                p += sprintf(p, "%s\n", *i);
        return r;
}

/* Parses text from memory as "mem.json"; returns the result code and the errors joined. */
static int parse_text(const char *text, Config **ret_config, char **ret_errors) {
        _cleanup_strv_free_ char **errors = NULL;
        Config *c = NULL;
        int r;

        r = config_parse("mem.json", text, strlen(text), &c, &errors);
        if (r == 0)
                ck_assert_ptr_null(errors);
        else
                ck_assert_ptr_null(c);
        *ret_errors = join(errors);
        if (ret_config)
                *ret_config = c;
        else
                config_free(c);
        return r;
}

START_TEST(test_example) {
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_strv_free_ char **errors = NULL;

        ck_assert_int_eq(config_load(EXAMPLE, &c, &errors), 0);
        ck_assert_ptr_null(errors);
        ck_assert_str_eq(c->path, EXAMPLE);

        ck_assert(c->serial.enabled);
        ck_assert_str_eq(c->serial.device, "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0");
        ck_assert_uint_eq(c->serial.baud, 115200);
        ck_assert_uint_eq(c->serial.data_bits, 8);
        ck_assert_int_eq(c->serial.parity, SERIAL_PARITY_NONE);
        ck_assert_uint_eq(c->serial.stop_bits, 1);
        ck_assert_int_eq(c->serial.flow_control, SERIAL_FLOW_CONTROL_NONE);
        ck_assert_int_eq(c->serial.format, FRAME_FORMAT_JSON);
        ck_assert_int_eq(c->serial.checksum, FRAME_CHECKSUM_NONE);
        ck_assert_uint_eq(c->serial.max_frame_bytes, 1024);
        ck_assert_uint_eq(c->serial.reopen_timeout_usec, 120 * USEC_PER_SEC);
        ck_assert_uint_eq(c->serial.idle_timeout_usec, 0);

        ck_assert(c->mqtt.enabled);
        ck_assert_str_eq(c->mqtt.host, "127.0.0.1");
        ck_assert_uint_eq(c->mqtt.port, 1883);
        ck_assert_str_eq(c->mqtt.client_id, "sensor-collector-gw1");
        ck_assert_int_eq(c->mqtt.protocol, MQTT_PROTOCOL_V311);
        ck_assert(!c->mqtt.clean_session);
        ck_assert_uint_eq(c->mqtt.keepalive, 30);
        ck_assert_ptr_null(c->mqtt.username);
        ck_assert_ptr_null(c->mqtt.password_file);
        ck_assert_ptr_null(c->mqtt.cafile);
        ck_assert_ptr_null(c->mqtt.tls_version);
        ck_assert_uint_eq(c->mqtt.max_offline_usec, 600 * USEC_PER_SEC);
        ck_assert_uint_eq(c->mqtt.max_payload_bytes, 4096);
        ck_assert_uint_eq(c->mqtt.n_topics, 2);
        ck_assert_str_eq(c->mqtt.topics[0].filter, "greenhouse/+sensor/state");
        ck_assert_int_eq(c->mqtt.topics[0].qos, 1);
        ck_assert_int_eq(c->mqtt.topics[0].format, FRAME_FORMAT_JSON);
        ck_assert_ptr_null(c->mqtt.topics[0].sensor);
        ck_assert_ptr_null(c->mqtt.topics[0].metric);
        ck_assert_str_eq(c->mqtt.topics[1].filter, "greenhouse/+sensor/+metric");
        ck_assert_int_eq(c->mqtt.topics[1].format, FRAME_FORMAT_VALUE);

        ck_assert_str_eq(c->store.path, "/var/lib/sensor-collector/readings.db");
        ck_assert_int_eq(c->store.synchronous, STORE_SYNCHRONOUS_NORMAL);
        ck_assert_uint_eq(c->store.commit_interval_ms, 20);
        ck_assert_uint_eq(c->store.commit_max_rows, 10000);
        ck_assert_uint_eq(c->store.retention_days, 400);
        ck_assert_uint_eq(c->store.max_size_mb, 0);
        ck_assert_int_eq(c->log.level, LOG_INFO);
        ck_assert_uint_eq(c->supervisor.stop_timeout_usec, 10 * USEC_PER_SEC);
        ck_assert_uint_eq(c->supervisor.status_interval_usec, 1 * USEC_PER_SEC);
}
END_TEST

START_TEST(test_defaults) {
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_free_ char *errors = NULL;

        ck_assert_int_eq(parse_text("{\"serial\": {\"device\": \"/dev/ttyS0\"},"
                                    " \"mqtt\": {\"topics\": [{\"filter\": \"a/+sensor/state\"}]}}",
                                    &c, &errors), 0);
        ck_assert_str_eq(errors, "");
        ck_assert(c->serial.enabled);
        ck_assert_uint_eq(c->serial.baud, 9600);
        ck_assert_uint_eq(c->serial.data_bits, 8);
        ck_assert_int_eq(c->serial.parity, SERIAL_PARITY_NONE);
        ck_assert_uint_eq(c->serial.stop_bits, 1);
        ck_assert_int_eq(c->serial.flow_control, SERIAL_FLOW_CONTROL_NONE);
        ck_assert_int_eq(c->serial.format, FRAME_FORMAT_JSON);
        ck_assert_int_eq(c->serial.checksum, FRAME_CHECKSUM_NONE);
        ck_assert_uint_eq(c->serial.max_frame_bytes, 1024);
        ck_assert_uint_eq(c->serial.reopen_timeout_usec, 120 * USEC_PER_SEC);
        ck_assert_uint_eq(c->serial.idle_timeout_usec, 0);

        ck_assert(c->mqtt.enabled);
        ck_assert_str_eq(c->mqtt.host, "localhost");
        ck_assert_uint_eq(c->mqtt.port, 1883);
        ck_assert_ptr_nonnull(c->mqtt.client_id);
        ck_assert_int_eq(c->mqtt.protocol, MQTT_PROTOCOL_V311);
        ck_assert(!c->mqtt.clean_session);
        ck_assert_uint_eq(c->mqtt.session_expiry, 86400);
        ck_assert_uint_eq(c->mqtt.keepalive, 30);
        ck_assert_ptr_null(c->mqtt.username);
        ck_assert_ptr_null(c->mqtt.capath);
        ck_assert_ptr_null(c->mqtt.certfile);
        ck_assert_ptr_null(c->mqtt.keyfile);
        ck_assert_uint_eq(c->mqtt.max_offline_usec, 600 * USEC_PER_SEC);
        ck_assert_uint_eq(c->mqtt.max_payload_bytes, 4096);
        ck_assert_uint_eq(c->mqtt.n_topics, 1);
        ck_assert_int_eq(c->mqtt.topics[0].qos, 1);
        ck_assert_int_eq(c->mqtt.topics[0].format, FRAME_FORMAT_JSON);

        ck_assert_str_eq(c->store.path, STORE_DEFAULT_PATH);
        ck_assert_int_eq(c->store.synchronous, STORE_SYNCHRONOUS_NORMAL);
        ck_assert_uint_eq(c->store.commit_interval_ms, 20);
        ck_assert_uint_eq(c->store.commit_max_rows, 10000);
        ck_assert_uint_eq(c->store.retention_days, 0);
        ck_assert_uint_eq(c->store.max_size_mb, 0);
        ck_assert_int_eq(c->log.level, LOG_INFO);
        ck_assert_uint_eq(c->supervisor.stop_timeout_usec, 10 * USEC_PER_SEC);
        ck_assert_uint_eq(c->supervisor.status_interval_usec, USEC_PER_SEC);
}
END_TEST

/* A missing input section means that input is off; a present one is on unless it says not. */
static const struct {
        const char *json;
        bool serial, mqtt;
} enabled_cases[] = {
        { "{}", false, false },
        { "{\"store\": {}}", false, false },
        { "{\"serial\": {\"device\": \"/dev/ttyS0\"}}", true, false },
        { "{\"serial\": {\"enabled\": false}}", false, false },
        { "{\"serial\": {\"enabled\": true, \"device\": \"/dev/ttyS0\"}}", true, false },
        { "{\"mqtt\": {\"topics\": [{\"filter\": \"#\"}]}}", false, true },
        { "{\"mqtt\": {\"enabled\": false}}", false, false },
        { "{\"mqtt\": {\"enabled\": false, \"topics\": []}}", false, false },
};

START_TEST(test_enabled) {
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_free_ char *errors = NULL;

        ck_assert_int_eq(parse_text(enabled_cases[_i].json, &c, &errors), 0);
        ck_assert_msg(c->serial.enabled == enabled_cases[_i].serial, "%s", enabled_cases[_i].json);
        ck_assert_msg(c->mqtt.enabled == enabled_cases[_i].mqtt, "%s", enabled_cases[_i].json);
        ck_assert_ptr_nonnull(c->mqtt.client_id);
        ck_assert_str_eq(c->store.path, STORE_DEFAULT_PATH);
}
END_TEST

static bool has_suffix(const char *s, const char *suffix) {
        size_t a = strlen(s), b = strlen(suffix);
        return a >= b && streq(s + a - b, suffix);
}

/* Every bad-NAME.json fails with exactly the lines in bad-NAME.expected; every good-*.json
 * loads. Run from the data directory so FILE in the messages is the bare name. */
START_TEST(test_data_files) {
        unsigned n_bad = 0, n_good = 0;
        struct dirent *de;
        DIR *d;

        ck_assert_int_eq(chdir(DATA_DIR), 0);
        d = opendir(".");
        ck_assert_ptr_nonnull(d);
        while ((de = readdir(d))) {
                _cleanup_(config_freep) Config *c = NULL;
                _cleanup_strv_free_ char **errors = NULL;
                _cleanup_free_ char *got = NULL, *want = NULL;
                char expected[512];
                int r;

                if (!has_suffix(de->d_name, ".json"))
                        continue;
                r = config_load(de->d_name, &c, &errors);
                got = join(errors);
                if (strncmp(de->d_name, "good-", 5) == 0) {
                        ck_assert_msg(r == 0, "%s: %d\n%s", de->d_name, r, got);
                        ck_assert_ptr_nonnull(c);
                        n_good++;
                        continue;
                }
                ck_assert_msg(strncmp(de->d_name, "bad-", 4) == 0, "%s: name it bad-* or good-*", de->d_name);
                snprintf(expected, sizeof(expected), "%.*s.expected", (int) strlen(de->d_name) - 5, de->d_name);
                want = tl_read_file(expected);
                ck_assert_msg(want, "%s: no %s", de->d_name, expected);
                ck_assert_msg(r == -EINVAL, "%s: %d", de->d_name, r);
                ck_assert_ptr_null(c);
                ck_assert_msg(streq(got, want), "%s:\n--- expected\n%s--- got\n%s", de->d_name, want, got);
                n_bad++;
        }
        closedir(d);
        ck_assert_uint_ge(n_bad, 25);
        ck_assert_uint_ge(n_good, 4);
}
END_TEST

/* Values from memory, each case a complete config and its exact errors ("" for none). */
static const struct {
        const char *json;
        const char *errors;
} inline_cases[] = {
        /* Syntax errors point at line:column and say what is wrong. */
        { "{\n  \"log\": {\"level\": \"info\",}\n}", "mem.json:2:26: syntax error: trailing comma before '}'\n" },
        { "{\"log\": {\"level\": \"info\"}", "mem.json:1:26: syntax error: unexpected end of file (the '{' at 1:1 is not closed)\n" },
        { "{\"log\": {\"level\": \"inf", "mem.json:1:23: syntax error: unexpected end of file (the string at 1:19 is not closed)\n" },
        { "{\"log\": ", "mem.json:1:9: syntax error: unexpected end of file (expected a value)\n" },
        { "{} {}", "mem.json:1:4: syntax error: unexpected '{' after the end of the top-level value\n" },
        { "\t\n", "mem.json:1:1: syntax error: the file is empty (expected a JSON object)\n" },
        { "{\"a\": [1, 2}", "mem.json:1:12: syntax error: expected ',' or ']', found '}'\n" },
        { "{\"a\": [1, 2,]}", "mem.json:1:12: syntax error: trailing comma before ']'\n" },
        { "{\"a\": [1\n 2]}", "mem.json:1:9: syntax error: missing ',' before the '2' at 2:2\n" },
        { "{\n\"log\":\n  {\"level\": 'info'}}", "mem.json:3:13: syntax error: strings must be in double quotes\n" },
        { "{log: {}}", "mem.json:1:2: syntax error: keys must be in double quotes\n" },
        { "{\"log\" {}}", "mem.json:1:8: syntax error: expected ':' after the key, found '{'\n" },
        { "{\"log\": {},, \"store\": {}}", "mem.json:1:12: syntax error: expected a key in double quotes, found ','\n" },
        { "{\"serial\": {\"enabled\": False}}", "mem.json:1:24: syntax error: 'False' is not a JSON value (write false)\n" },
        { "{\"serial\": {\"enabled\": yes}}", "mem.json:1:24: syntax error: 'yes' is not a JSON value (strings must be in double quotes)\n" },
        { "{\"serial\": {\"baud\": -}}", "mem.json:1:21: syntax error: '-' is not a number\n" },
        { "{\"serial\": {\"baud\": +9600}}", "mem.json:1:21: syntax error: expected a value, found '+'\n" },
        { "{\"serial\": {\"device\": \"C:\\dev\"}}", "mem.json:1:26: syntax error: invalid escape '\\d' in a string (write '\\\\' for a backslash)\n" },
        { "{\"serial\": {\"device\": \"\\u12\"}}", "mem.json:1:24: syntax error: '\\u' must be followed by four hex digits\n" },
        { "{\"serial\": {\"device\": \"/dev/tty,\n \"baud\": 9600}}", "mem.json:1:23: syntax error: the string that starts here is not closed on its line\n" },
        /* What cJSON would let through but would silently change the value. */
        { "{\"serial\": {\"device\": \"/dev/ttyS0\\u0000x\"}}", "mem.json:1:34: syntax error: '\\u0000' (a NUL character) is not allowed in a string\n" },
        { "{\"serial\": {\"device\": \"/dev/\\uttyS0\"}}", "mem.json:1:29: syntax error: '\\u' must be followed by four hex digits\n" },
        { "{\"mqtt\": {\"username\": \"\\ud800\"}}", "mem.json:1:24: syntax error: '\\ud800' is half of a UTF-16 surrogate pair without its second half\n" },
        { "{\"mqtt\": {\"username\": \"\\uDC00\"}}", "mem.json:1:24: syntax error: '\\udc00' is half of a UTF-16 surrogate pair without its first half\n" },
        { "{\"mqtt\": {\"enabled\": false, \"username\": \"\\ud83c\\udf45 \\u00e4\"}}", "" },
        { "{\"store\": {\"max_size_mb\": 000000000000000000000000000000000000000000000000000000000000000000000001}}", "" },
        /* Columns count characters, not bytes. */
        { "{\"x\": \"\xc3\xa4\xc3\xa4\" x}", "mem.json:1:12: syntax error: expected ',' or '}', found 'x'\n" },
        { "{\"x\": 1, \"y\": \x01}", "mem.json:1:15: syntax error: expected a value, found byte 0x01\n" },
        /* Top level. */
        { "42", "mem.json: /: expected an object with the sections serial, mqtt, store, log, supervisor, clock, sensors, upstream, got a number\n" },
        { "{\"Serial\": {}}", "mem.json: /Serial: unknown section (did you mean \"serial\"?)\n" },
        { "{\"a/b~c\": 1}", "mem.json: /a~1b~0c: unknown section (the sections are serial, mqtt, store, log, supervisor, clock, sensors, upstream)\n" },
        { "{\"log\": null}", "mem.json: /log: expected an object, got null\n" },
        /* Unprintable keys and values are shown escaped. */
        { "{\"log\": {\"lev\\nel\": 1}}", "mem.json: /log/lev\\x0ael: unknown key (did you mean \"level\"?)\n" },
        { "{\"log\": {\"level\": \"in\\\"fo\"}}",
          "mem.json: /log/level: \"in\\\"fo\" is not one of err, warning, notice, info, debug (did you mean \"info\"?)\n" },
        /* Integers: checked before casting. */
        { "{\"store\": {\"commit_max_rows\": 1.2e3}}", "" },
        { "{\"store\": {\"commit_max_rows\": 1e400}}", "mem.json: /store/commit_max_rows: inf is not an integer\n" },
        { "{\"store\": {\"commit_max_rows\": -0.5}}", "mem.json: /store/commit_max_rows: -0.5 is not an integer\n" },
        { "{\"store\": {\"max_size_mb\": 4294967296}}",
          "mem.json: /store/max_size_mb: 4294967296 is out of range (0..1048576)\n" },
        { "{\"mqtt\": {\"enabled\": false, \"protocol\": \"5\", \"session_expiry\": 4294967296}}",
          "mem.json: /mqtt/session_expiry: 4294967296 is out of range (0..4294967295)\n" },
        /* Seconds. */
        /* Durations that would make the daemon give up at once are typos, not settings. */
        { "{\"supervisor\": {\"stop_timeout\": 1e-6}}",
          "mem.json: /supervisor/stop_timeout: 1e-06 is out of range (0.5..3600 seconds)\n" },
        { "{\"mqtt\": {\"max_offline\": 1e-6, \"enabled\": false}}",
          "mem.json: /mqtt/max_offline: 1e-06 is out of range (0.5..604800 seconds)\n" },
        { "{\"supervisor\": {\"stop_timeout\": -1}}",
          "mem.json: /supervisor/stop_timeout: -1 is out of range (0.5..3600 seconds)\n" },
        { "{\"supervisor\": {\"stop_timeout\": 3600.5}}",
          "mem.json: /supervisor/stop_timeout: 3600.5 is out of range (0.5..3600 seconds)\n" },
        { "{\"supervisor\": {\"status_interval\": \"1s\"}}",
          "mem.json: /supervisor/status_interval: expected a number of seconds, got a string\n" },
        /* Baud. */
        { "{\"serial\": {\"device\": \"/dev/ttyS0\", \"baud\": 134}}", "" },
        { "{\"serial\": {\"device\": \"/dev/ttyS0\", \"baud\": 1000000}}",
          "mem.json: /serial/baud: 1000000 is not a standard rate (nearest is 921600); for a non-standard rate set \"custom_baud\": true (1..4000000)\n" },
        { "{\"serial\": {\"device\": \"/dev/ttyS0\", \"baud\": 1000000, \"custom_baud\": \"yes\"}}",
          "mem.json: /serial/custom_baud: expected true or false, got a string\n"
          "mem.json: /serial/baud: 1000000 is not a standard rate (nearest is 921600); for a non-standard rate set \"custom_baud\": true (1..4000000)\n" },
        { "{\"serial\": {\"device\": \"/dev/ttyS0\", \"baud\": 0, \"custom_baud\": true}}",
          "mem.json: /serial/baud: 0 is out of range (1..4000000)\n" },
        /* A disabled input is still checked, but needs nothing. */
        { "{\"serial\": {\"enabled\": false, \"baud\": 7}}",
          "mem.json: /serial/baud: 7 is not a standard rate (nearest is 50); for a non-standard rate set \"custom_baud\": true (1..4000000)\n" },
        { "{\"mqtt\": {\"enabled\": false, \"topics\": [{}]}}", "mem.json: /mqtt/topics/0/filter: required\n" },
        /* MQTT cross-checks. */
        { "{\"mqtt\": {\"enabled\": false, \"protocol\": \"5\", \"session_expiry\": 0}}", "" },
        { "{\"mqtt\": {\"enabled\": false, \"protocol\": \"4\", \"session_expiry\": 0}}",
          "mem.json: /mqtt/protocol: \"4\" is not one of 3.1.1, 5\n" },
        { "{\"mqtt\": {\"enabled\": false, \"username\": \"u\", \"password_file\": \"/p\"}}", "" },
        { "{\"mqtt\": {\"enabled\": false, \"capath\": \"/etc/ssl/certs\", \"certfile\": \"/c\", \"keyfile\": \"/k\", \"tls_version\": \"tlsv1.2\"}}", "" },
        { "{\"mqtt\": {\"enabled\": false, \"host\": \"broker local\"}}",
          "mem.json: /mqtt/host: \"broker local\" is not a host name or address\n" },
        { "{\"mqtt\": {\"enabled\": false, \"username\": \"\\u00ff\\u00fe\"}}", "" },
        { "{\"mqtt\": {\"enabled\": false, \"username\": \"\xff\"}}",
          "mem.json: /mqtt/username: \"\\xff\" is not valid UTF-8\n" },
        /* Topics. */
        { "{\"mqtt\": {\"topics\": [{\"filter\": \"a/+metric\", \"format\": \"value\", \"sensor\": \"s1\"}]}}", "" },
        { "{\"mqtt\": {\"topics\": [{\"filter\": \"a/+sensor\", \"format\": \"value\", \"metric\": \"m1\"}]}}", "" },
        { "{\"mqtt\": {\"topics\": [{\"filter\": \"a/b\", \"format\": \"value\", \"sensor\": \"s1\", \"metric\": \"m1\"}]}}", "" },
        { "{\"mqtt\": {\"topics\": [{\"filter\": \"a/b\", \"sensor\": \"s1\"}]}}", "" },
        { "{\"mqtt\": {\"topics\": [{\"filter\": \"+/+/#\"}]}}", "" },
        { "{\"mqtt\": {\"topics\": [{\"filter\": \"a/+sensor+\"}]}}",
          "mem.json: /mqtt/topics/0/filter: \"a/+sensor+\" is not a valid filter: a wildcard name after '+' must be lowercase letters and '_'\n" },
        { "{\"mqtt\": {\"topics\": [{\"filter\": \"a/+Sensor\"}]}}",
          "mem.json: /mqtt/topics/0/filter: \"a/+Sensor\" is not a valid filter: a wildcard name after '+' must be lowercase letters and '_'\n" },
        { "{\"mqtt\": {\"topics\": [{\"filter\": \"a/+sensor/+metric/+metric\", \"format\": \"value\"}]}}",
          "mem.json: /mqtt/topics/0/filter: \"a/+sensor/+metric/+metric\" is not a valid filter: '+metric' is used twice in the topic filter\n" },
        { "{\"mqtt\": {\"topics\": [{\"filter\": \"a/b\", \"format\": \"value\", \"sensor\": \"s\", \"metric\": \"0123456789012345678901234567890123456789012345678901234567890123456789\"}]}}",
          "mem.json: /mqtt/topics/0/metric: \"0123456789012345678901234567890123456789012345678901234567890123...\" is too long (70 bytes, at most 64)\n" },
        { "{\"mqtt\": {\"topics\": [{\"filter\": \"a/+sensor/state\", \"qos\": 1.0, \"qos \": 1}]}}",
          "mem.json: /mqtt/topics/0/qos : unknown key (did you mean \"qos\"?)\n" },
        { "{\"mqtt\": {\"topics\": [null]}}", "mem.json: /mqtt/topics/0: expected an object with a \"filter\", got null\n" },
        /* Log levels, including the alias --log-level accepts. */
        { "{\"log\": {\"level\": \"debug\"}}", "" },
        { "{\"log\": {\"level\": \"error\"}}", "" },
        { "{\"log\": {\"level\": \"Info\"}}",
          "mem.json: /log/level: \"Info\" is not one of err, warning, notice, info, debug (did you mean \"info\"?)\n" },
};

START_TEST(test_inline) {
        _cleanup_free_ char *errors = NULL;
        int r;

        r = parse_text(inline_cases[_i].json, NULL, &errors);
        ck_assert_msg(streq(errors, inline_cases[_i].errors), "%s\n--- expected\n%s--- got\n%s",
                      inline_cases[_i].json, inline_cases[_i].errors, errors);
        ck_assert_int_eq(r, inline_cases[_i].errors[0] ? -EINVAL : 0);
}
END_TEST

START_TEST(test_values) {
        _cleanup_(config_freep) Config *c = NULL, *t = NULL;
        _cleanup_strv_free_ char **errors = NULL;

        ck_assert_int_eq(chdir(DATA_DIR), 0);
        ck_assert_int_eq(config_load("good-custom-baud.json", &c, &errors), 0);
        ck_assert_uint_eq(c->serial.baud, 250000);
        ck_assert_uint_eq(c->serial.data_bits, 7);
        ck_assert_int_eq(c->serial.parity, SERIAL_PARITY_EVEN);
        ck_assert_uint_eq(c->serial.stop_bits, 2);
        ck_assert_int_eq(c->serial.flow_control, SERIAL_FLOW_CONTROL_RTSCTS);
        ck_assert_int_eq(c->serial.format, FRAME_FORMAT_KV);
        ck_assert_int_eq(c->serial.checksum, FRAME_CHECKSUM_NMEA);
        ck_assert_uint_eq(c->serial.max_frame_bytes, 65536);
        ck_assert_uint_eq(c->serial.reopen_timeout_usec, 250000);
        ck_assert_uint_eq(c->serial.idle_timeout_usec, 86400 * USEC_PER_SEC);
        ck_assert_str_eq(c->store.path, "/srv/readings.db");
        ck_assert_int_eq(c->store.synchronous, STORE_SYNCHRONOUS_FULL);
        ck_assert_uint_eq(c->store.commit_interval_ms, 10000);
        ck_assert_uint_eq(c->store.commit_max_rows, 1);
        ck_assert_uint_eq(c->store.retention_days, 36500);
        ck_assert_uint_eq(c->store.max_size_mb, 1048576);
        ck_assert_uint_eq(c->supervisor.stop_timeout_usec, 3600 * USEC_PER_SEC);
        ck_assert_uint_eq(c->supervisor.status_interval_usec, 100000);

        ck_assert_int_eq(config_load("good-mqtt-tls-v5.json", &t, &errors), 0);
        ck_assert(!t->serial.enabled);
        ck_assert(t->mqtt.enabled);
        ck_assert_uint_eq(t->mqtt.port, 8883); /* TLS, no port given */
        ck_assert_str_eq(t->mqtt.client_id, "gw-north_1");
        ck_assert_int_eq(t->mqtt.protocol, MQTT_PROTOCOL_V5);
        ck_assert(t->mqtt.clean_session);
        ck_assert_uint_eq(t->mqtt.session_expiry, UINT32_MAX);
        ck_assert_uint_eq(t->mqtt.keepalive, 65535);
        ck_assert_str_eq(t->mqtt.username, "gateway-north");
        ck_assert_str_eq(t->mqtt.password_file, "/etc/sensor-collector/mqtt-password");
        ck_assert_str_eq(t->mqtt.cafile, "/etc/ssl/certs/ca-certificates.crt");
        ck_assert_str_eq(t->mqtt.certfile, "/etc/sensor-collector/client.crt");
        ck_assert_str_eq(t->mqtt.keyfile, "/etc/sensor-collector/client.key");
        ck_assert_str_eq(t->mqtt.tls_version, "tlsv1.3");
        ck_assert_uint_eq(t->mqtt.max_offline_usec, 500000);
        ck_assert_uint_eq(t->mqtt.max_payload_bytes, 268435455);
        ck_assert_uint_eq(t->mqtt.n_topics, 4);
        ck_assert_int_eq(t->mqtt.topics[0].qos, 0);
        ck_assert_int_eq(t->mqtt.topics[0].format, FRAME_FORMAT_VALUE);
        ck_assert_str_eq(t->mqtt.topics[0].sensor, "north-air");
        ck_assert_str_eq(t->mqtt.topics[0].metric, "temperature");
        ck_assert_int_eq(t->mqtt.topics[1].qos, 2);
        ck_assert_str_eq(t->mqtt.topics[2].filter, "#");
        ck_assert_str_eq(t->mqtt.topics[2].sensor, "catch-all");
        ck_assert_str_eq(t->mqtt.topics[3].sensor, "gh~1");
        ck_assert_int_eq(t->log.level, LOG_ERR);
}
END_TEST

START_TEST(test_port_and_seconds) {
        _cleanup_(config_freep) Config *a = NULL, *b = NULL, *c = NULL;
        _cleanup_free_ char *e1 = NULL, *e2 = NULL, *e3 = NULL;

        /* An explicit port wins over the TLS default. */
        ck_assert_int_eq(parse_text("{\"mqtt\": {\"enabled\": false, \"cafile\": \"/ca\", \"port\": 1883}}", &a, &e1), 0);
        ck_assert_uint_eq(a->mqtt.port, 1883);
        ck_assert_int_eq(parse_text("{\"mqtt\": {\"enabled\": false, \"capath\": \"/etc/ssl/certs\"}}", &b, &e2), 0);
        ck_assert_uint_eq(b->mqtt.port, 8883);
        /* A budget too short for one retry is refused, not rounded to "give up at once". */
        ck_assert_int_lt(parse_text("{\"serial\": {\"enabled\": false, \"reopen_timeout\": 1e-9, \"idle_timeout\": 1.5}}", &c, &e3), 0);
        ck_assert_ptr_nonnull(strstr(e3, "/serial/reopen_timeout: 1e-09 is out of range (0.1..86400 seconds)"));
        config_free(TAKE_PTR(c));
        free(TAKE_PTR(e3));
        ck_assert_int_eq(parse_text("{\"serial\": {\"enabled\": false, \"reopen_timeout\": 0.1, \"idle_timeout\": 1.5}}", &c, &e3), 0);
        ck_assert_uint_eq(c->serial.reopen_timeout_usec, 100000);
        ck_assert_uint_eq(c->serial.idle_timeout_usec, 1500000);
}
END_TEST

START_TEST(test_client_id_default) {
        _cleanup_(config_freep) Config *a = NULL, *b = NULL;
        _cleanup_free_ char *e1 = NULL, *e2 = NULL;
        const char *id;

        ck_assert_int_eq(parse_text("{}", &a, &e1), 0);
        ck_assert_int_eq(parse_text("{\"mqtt\": {\"enabled\": false}}", &b, &e2), 0);
        id = a->mqtt.client_id;
        ck_assert_msg(strncmp(id, "sensor-collector", 16) == 0, "%s", id);
        ck_assert_uint_le(strlen(id), 64);
        ck_assert_uint_eq(strspn(id, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-"), strlen(id));
        ck_assert_str_eq(id, b->mqtt.client_id); /* stable: the same session after a restart */
}
END_TEST

START_TEST(test_missing_file) {
        _cleanup_strv_free_ char **errors = NULL, **errors2 = NULL;
        Config *c = NULL;

        ck_assert_int_eq(config_load("/nonexistent/sensor-collector.json", &c, &errors), -ENOENT);
        ck_assert_ptr_null(c);
        ck_assert_ptr_nonnull(errors);
        ck_assert_str_eq(errors[0], "/nonexistent/sensor-collector.json: cannot read: No such file or directory");
        ck_assert_ptr_null(errors[1]);

        ck_assert_int_eq(config_load(tl_tmpdir(), &c, &errors2), -EISDIR);
        ck_assert_ptr_null(c);
        ck_assert(has_suffix(errors2[0], ": cannot read: Is a directory"));

        /* ret_errors may be NULL. */
        ck_assert_int_eq(config_load("/nonexistent/x.json", &c, NULL), -ENOENT);
}
END_TEST

START_TEST(test_too_large) {
        _cleanup_strv_free_ char **errors = NULL;
        _cleanup_free_ char *text = NULL, *want = NULL;
        const char *path;
        size_t n = 1024 * 1024 + 16;
        Config *c = NULL;

        text = malloc(n + 1);
        ck_assert_ptr_nonnull(text);
        memset(text, ' ', n);
        text[0] = '{', text[n - 1] = '}', text[n] = 0;
        path = tl_write_file(tl_tmpdir(), "big.json", text);
        ck_assert_int_eq(config_load(path, &c, &errors), -EFBIG);
        ck_assert_int_ge(asprintf(&want, "%s: too large (more than 1048576 bytes)", path), 0);
        ck_assert_str_eq(errors[0], want);
}
END_TEST

/* The largest file allowed loads: its buffer is sized by the file, the limit still holds. */
START_TEST(test_largest_allowed) {
        _cleanup_strv_free_ char **errors = NULL;
        _cleanup_free_ char *text = NULL;
        static const char body[] = "{ \"store\": { \"path\": \"/tmp/x.db\" }";
        size_t n = 1024 * 1024;
        const char *path;
        Config *c = NULL;

        text = malloc(n + 1);
        ck_assert_ptr_nonnull(text);
        memset(text, ' ', n);
        memcpy(text, body, sizeof(body) - 1);
        text[n - 1] = '}', text[n] = 0;
        path = tl_write_file(tl_tmpdir(), "largest.json", text);
        ck_assert_int_eq(config_load(path, &c, &errors), 0);
        ck_assert_ptr_nonnull(c);
        ck_assert_str_eq(c->store.path, "/tmp/x.db");
        config_free(c);
}
END_TEST

START_TEST(test_nul_byte) {
        _cleanup_strv_free_ char **errors = NULL;
        static const char text[] = "{\n  \"log\": {\"level\": \"info\0\"}}";
        Config *c = NULL;

        ck_assert_int_eq(config_parse("mem.json", text, sizeof(text) - 1, &c, &errors), -EINVAL);
        ck_assert_str_eq(errors[0], "mem.json:2:25: syntax error: NUL byte");
        ck_assert_ptr_null(errors[1]);
        ck_assert_int_eq(config_parse("mem.json", text, sizeof(text) - 1, &c, NULL), -EINVAL);
        ck_assert_ptr_null(c);
}
END_TEST

/* A file full of mistakes lists the first 100 and counts the rest. */
/* Deeper than cJSON's nesting limit: a located error, not a crash. */
START_TEST(test_deep_nesting) {
        _cleanup_strv_free_ char **errors = NULL;
        _cleanup_free_ char *text = NULL;
        size_t n = 1100;
        Config *c = NULL;

        text = malloc(2 * n + 1);
        ck_assert_ptr_nonnull(text);
        memset(text, '[', n);
        memset(text + n, ']', n);
        text[2 * n] = 0;
        ck_assert_int_eq(config_parse("mem.json", text, 2 * n, &c, &errors), -EINVAL);
        ck_assert_str_eq(errors[0], "mem.json:1:1001: syntax error: nested more than 1000 levels deep");
        ck_assert_ptr_null(errors[1]);
}
END_TEST

START_TEST(test_many_errors) {
        _cleanup_strv_free_ char **errors = NULL;
        char text[8192], *p = text;
        size_t n = 0;
        Config *c = NULL;

        p += sprintf(p, "{\"log\": {");
        for (int i = 0; i < 150; i++)
                p += sprintf(p, "%s\"k%d\": %d", i ? ", " : "", i, i);
        sprintf(p, "}}");
        ck_assert_int_eq(config_parse("mem.json", text, strlen(text), &c, &errors), -EINVAL);
        while (errors[n])
                n++;
        ck_assert_uint_eq(n, 101);
        ck_assert_str_eq(errors[0], "mem.json: /log/k0: unknown key");
        ck_assert_str_eq(errors[99], "mem.json: /log/k99: unknown key");
        ck_assert_str_eq(errors[100], "mem.json: 50 more errors not shown");
}
END_TEST

START_TEST(test_to_string) {
        ck_assert_str_eq(serial_parity_to_string(SERIAL_PARITY_SPACE), "space");
        ck_assert_ptr_null(serial_parity_to_string(_SERIAL_PARITY_MAX));
        ck_assert_ptr_null(serial_parity_to_string(_SERIAL_PARITY_INVALID));
        ck_assert_str_eq(serial_flow_control_to_string(SERIAL_FLOW_CONTROL_XONXOFF), "xonxoff");
        ck_assert_ptr_null(serial_flow_control_to_string(_SERIAL_FLOW_CONTROL_MAX));
        ck_assert_str_eq(store_synchronous_to_string(STORE_SYNCHRONOUS_FULL), "full");
        ck_assert_ptr_null(store_synchronous_to_string(_STORE_SYNCHRONOUS_INVALID));
        ck_assert_str_eq(mqtt_protocol_to_string(MQTT_PROTOCOL_V311), "3.1.1");
        ck_assert_str_eq(mqtt_protocol_to_string(MQTT_PROTOCOL_V5), "5");
        ck_assert_ptr_null(mqtt_protocol_to_string(_MQTT_PROTOCOL_MAX));
        ck_assert(serial_baud_is_standard(9600));
        ck_assert(serial_baud_is_standard(921600));
        ck_assert(!serial_baud_is_standard(9601));
        ck_assert(!serial_baud_is_standard(0));
        ck_assert_ptr_null(config_free(NULL));
}
END_TEST

/* The daemon's --check-config: "configuration OK" and 0, or every error and 78. */
START_TEST(test_check_config_binary) {
        _cleanup_free_ char *out = NULL, *bad_out = NULL, *missing_out = NULL, *want = NULL;
        char *ok_argv[] = { SC_BINARY, "--check-config", "--config", EXAMPLE, NULL };
        char *bad_argv[] = { SC_BINARY, "--check-config", "--config", "bad-several.json", NULL };
        char *missing_argv[] = { SC_BINARY, "--check-config", "--config", "/nonexistent.json", NULL };
        char *line, *save = NULL;
        unsigned n = 0;

        ck_assert_int_eq(tl_run(ok_argv, NULL, &out, 5000), 0);
        ck_assert_msg(strstr(out, "configuration OK"), "%s", out);

        ck_assert_int_eq(chdir(DATA_DIR), 0);
        ck_assert_int_eq(tl_run(bad_argv, NULL, &bad_out, 5000), 78);
        ck_assert_msg(!strstr(bad_out, "configuration OK"), "%s", bad_out);
        want = tl_read_file("bad-several.expected");
        ck_assert_ptr_nonnull(want);
        for (line = strtok_r(want, "\n", &save); line; line = strtok_r(NULL, "\n", &save), n++)
                ck_assert_msg(strstr(bad_out, line), "missing: %s\nin:\n%s", line, bad_out);
        ck_assert_uint_ge(n, 5);

        ck_assert_int_eq(tl_run(missing_argv, NULL, &missing_out, 5000), 78);
        ck_assert_msg(strstr(missing_out, "/nonexistent.json: cannot read: No such file or directory"), "%s", missing_out);
}
END_TEST

static Suite *config_suite(void) {
        Suite *s = suite_create("config");
        TCase *tc = tcase_create("load");

        tcase_add_test(tc, test_example);
        tcase_add_test(tc, test_defaults);
        tcase_add_loop_test(tc, test_enabled, 0, ELEMENTSOF(enabled_cases));
        tcase_add_test(tc, test_data_files);
        tcase_add_loop_test(tc, test_inline, 0, ELEMENTSOF(inline_cases));
        tcase_add_test(tc, test_values);
        tcase_add_test(tc, test_port_and_seconds);
        tcase_add_test(tc, test_client_id_default);
        tcase_add_test(tc, test_missing_file);
        tcase_add_test(tc, test_too_large);
        tcase_add_test(tc, test_largest_allowed);
        tcase_add_test(tc, test_nul_byte);
        tcase_add_test(tc, test_deep_nesting);
        tcase_add_test(tc, test_many_errors);
        tcase_add_test(tc, test_to_string);
        suite_add_tcase(s, tc);

        tc = tcase_create("binary");
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_check_config_binary);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(config_suite());
}
