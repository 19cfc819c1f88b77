/* SPDX-License-Identifier: MIT */
/* Tests for reloading: which keys need a restart (table-driven), and what a reload keeps, applies and says. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <syslog.h>

#include <cJSON.h>

#include "collector/log.h"
#include "collector/reload.h"
#include "testlib.h"

/* The members of each section; NULL in a case means the base's. */
typedef struct Sections {
        const char *serial, *mqtt, *store, *log, *supervisor;
} Sections;

static const Sections base = {
        .serial = "\"device\": \"/dev/ttyUSB0\"",
        .mqtt = "\"host\": \"localhost\", \"client_id\": \"gw\", "
                "\"topics\": [ { \"filter\": \"a/+sensor/+metric\", \"format\": \"value\" } ]",
        .store = "\"path\": \"/var/lib/sc/readings.db\"",
        .log = "\"level\": \"info\"",
        .supervisor = "\"stop_timeout\": 10",
};

#define TOPIC_A "{ \"filter\": \"a/+sensor/+metric\", \"format\": \"value\" }"
#define TOPIC_B "{ \"filter\": \"b/+sensor\", \"format\": \"json\", \"qos\": 0 }"
#define MQTT_WITH(topics) "\"host\": \"localhost\", \"client_id\": \"gw\", \"topics\": [ " topics " ]"

typedef struct KeysCase {
        const char *what;
        Sections running;
        Sections next;
        const char *expected;         /* the keys, comma-separated; "" for none */
} KeysCase;

static const KeysCase keys_cases[] = {
        { "nothing changed", {}, {}, "" },
        { "log level only: applied at run time", {}, { .log = "\"level\": \"debug\"" }, "" },
        { "a default spelled out is no change", {},
          { .serial = "\"device\": \"/dev/ttyUSB0\", \"baud\": 9600, \"parity\": \"none\"" }, "" },
        { "serial device", {}, { .serial = "\"device\": \"/dev/ttyUSB1\"" }, "/serial/device" },
        { "serial line settings", {},
          { .serial = "\"device\": \"/dev/ttyUSB0\", \"baud\": 115200, \"parity\": \"even\", \"data_bits\": 7, "
                      "\"stop_bits\": 2, \"flow_control\": \"rtscts\"" },
          "/serial/baud,/serial/data_bits,/serial/parity,/serial/stop_bits,/serial/flow_control" },
        { "serial framing and timeouts", {},
          { .serial = "\"device\": \"/dev/ttyUSB0\", \"format\": \"kv\", \"checksum\": \"nmea\", \"max_frame_bytes\": 2048, "
                      "\"line_end\": \"any\", \"reopen_timeout\": 30, \"idle_timeout\": 60" },
          "/serial/format,/serial/checksum,/serial/max_frame_bytes,/serial/line_end,/serial/reopen_timeout,"
          "/serial/idle_timeout" },
        { "serial off in both: its settings are not compared",
          { .serial = "\"enabled\": false, \"device\": \"/dev/ttyUSB0\"" },
          { .serial = "\"enabled\": false, \"device\": \"/dev/ttyUSB1\", \"baud\": 19200" }, "" },
        { "serial turned off", {}, { .serial = "\"enabled\": false, \"device\": \"/dev/ttyUSB0\"" }, "/serial/enabled" },
        { "serial turned on with another device", { .serial = "\"enabled\": false, \"device\": \"/dev/ttyUSB0\"" },
          { .serial = "\"device\": \"/dev/ttyUSB1\"" }, "/serial/enabled,/serial/device" },
        { "broker address", {},
          { .mqtt = "\"host\": \"broker.example\", \"port\": 8883, \"client_id\": \"gw\", \"topics\": [ " TOPIC_A " ]" },
          "/mqtt/host,/mqtt/port" },
        { "broker session", {},
          { .mqtt = "\"host\": \"localhost\", \"client_id\": \"gw2\", \"protocol\": \"5\", \"clean_session\": true, "
                    "\"session_expiry\": 60, \"keepalive\": 10, \"max_offline\": 5, \"max_payload_bytes\": 100, "
                    "\"topics\": [ " TOPIC_A " ]" },
          "/mqtt/client_id,/mqtt/protocol,/mqtt/clean_session,/mqtt/session_expiry,/mqtt/keepalive,/mqtt/max_offline,"
          "/mqtt/max_payload_bytes" },
        { "credentials and TLS", {},
          { .mqtt = "\"host\": \"localhost\", \"client_id\": \"gw\", \"username\": \"gw1\", "
                    "\"password_file\": \"/etc/sc/pw\", \"cafile\": \"/etc/sc/ca.pem\", \"tls_version\": \"tlsv1.3\", "
                    "\"topics\": [ " TOPIC_A " ]" },
          /* the port's default follows TLS: 8883 */
          "/mqtt/port,/mqtt/username,/mqtt/password_file,/mqtt/cafile,/mqtt/tls_version" },
        { "client certificate", {},
          { .mqtt = "\"host\": \"localhost\", \"client_id\": \"gw\", \"capath\": \"/etc/ssl/certs\", "
                    "\"certfile\": \"/etc/sc/gw.pem\", \"keyfile\": \"/etc/sc/gw.key\", \"topics\": [ " TOPIC_A " ]" },
          "/mqtt/port,/mqtt/capath,/mqtt/certfile,/mqtt/keyfile" },
        { "a topic added", {}, { .mqtt = MQTT_WITH(TOPIC_A ", " TOPIC_B) }, "/mqtt/topics" },
        { "topics reordered", { .mqtt = MQTT_WITH(TOPIC_A ", " TOPIC_B) }, { .mqtt = MQTT_WITH(TOPIC_B ", " TOPIC_A) },
          "/mqtt/topics" },
        { "a topic's QoS",
          {}, { .mqtt = MQTT_WITH("{ \"filter\": \"a/+sensor/+metric\", \"format\": \"value\", \"qos\": 2 }") },
          "/mqtt/topics" },
        { "a topic's fixed sensor", {},
          { .mqtt = MQTT_WITH("{ \"filter\": \"a/s1/+metric\", \"format\": \"value\", \"sensor\": \"s1\" }") },
          "/mqtt/topics" },
        { "MQTT off in both: its settings are not compared",
          { .mqtt = "\"enabled\": false, " MQTT_WITH(TOPIC_A) },
          { .mqtt = "\"enabled\": false, \"port\": 1884, " MQTT_WITH(TOPIC_B) }, "" },
        { "MQTT turned off", {}, { .mqtt = "\"enabled\": false, " MQTT_WITH(TOPIC_A) }, "/mqtt/enabled" },
        { "store file and durability", {},
          { .store = "\"path\": \"/srv/readings.db\", \"synchronous\": \"full\"" }, "/store/path,/store/synchronous" },
        { "store batching and retention", {},
          { .store = "\"path\": \"/var/lib/sc/readings.db\", \"commit_interval_ms\": 50, \"commit_max_rows\": 10, "
                     "\"retention_days\": 30, \"max_size_mb\": 100" },
          "/store/commit_interval_ms,/store/commit_max_rows,/store/retention_days,/store/max_size_mb" },
        { "supervisor timers", {}, { .supervisor = "\"stop_timeout\": 5, \"status_interval\": 2" },
          "/supervisor/stop_timeout,/supervisor/status_interval" },
        { "everything at once, in the file's order", {},
          { .serial = "\"device\": \"/dev/ttyUSB1\"", .mqtt = MQTT_WITH(TOPIC_B),
            .store = "\"path\": \"/srv/readings.db\"", .log = "\"level\": \"err\"",
            .supervisor = "\"stop_timeout\": 1" },
          "/serial/device,/mqtt/topics,/store/path,/supervisor/stop_timeout" },
};

static Config *parse_sections(const Sections *s) {
        _cleanup_strv_free_ char **errors = NULL;
        char text[4096];
        Config *c = NULL;
        int r;

        snprintf(text, sizeof(text),
                 "{ \"serial\": { %s }, \"mqtt\": { %s }, \"store\": { %s }, \"log\": { %s }, \"supervisor\": { %s } }",
                 s->serial ?: base.serial, s->mqtt ?: base.mqtt, s->store ?: base.store, s->log ?: base.log,
                 s->supervisor ?: base.supervisor);
        r = config_parse("mem.json", text, strlen(text), &c, &errors);
        ck_assert_msg(r == 0, "%s: %s", text, errors && errors[0] ? errors[0] : "?");
        return c;
}

static char *join_commas(char **l) {
        size_t n = 1;
        char *r;

        for (char **i = l; *i; i++)
                n += strlen(*i) + 1;
        r = calloc(1, n);
        ck_assert_ptr_nonnull(r);
        for (char **i = l; *i; i++) {
                if (i != l)
                        strcat(r, ",");
                strcat(r, *i);
        }
        return r;
}

static int count_keys(const char *list) {
        int n = *list ? 1 : 0;

        for (const char *p = list; *p; p++)
                n += *p == ',';
        return n;
}

START_TEST(test_restart_keys) {
        const KeysCase *k = &keys_cases[_i];
        _cleanup_(config_freep) Config *running = parse_sections(&k->running);
        _cleanup_(config_freep) Config *next = parse_sections(&k->next);
        _cleanup_strv_free_ char **keys = NULL, **back = NULL;
        _cleanup_free_ char *got = NULL;
        int n;

        n = reload_restart_keys(running, next, &keys);
        ck_assert_int_ge(n, 0);
        got = join_commas(keys);
        ck_assert_msg(streq(got, k->expected), "%s: got '%s', want '%s'", k->what, got, k->expected);
        ck_assert_int_eq(n, count_keys(k->expected));
        /* The relation is symmetric: going back needs the same restart. */
        ck_assert_int_eq(reload_restart_keys(next, running, &back), n);
}
END_TEST

/* Every key of the example configuration (which shows every key) is classified, and each
 * key the table above reports is a restart key: a key added to config.c and the example
 * without a decision here fails this test instead of being taken as applied. */
static void check_kinds(const cJSON *node, const char *path) {
        const cJSON *child;

        cJSON_ArrayForEach(child, node) {
                char sub[256];

                snprintf(sub, sizeof(sub), "%s/%s", path, child->string);
                if (cJSON_IsObject(child))
                        check_kinds(child, sub);
                else
                        ck_assert_msg(reload_key_kind(sub) >= 0, "%s is neither applied at a reload nor restart-only", sub);
        }
}

START_TEST(test_key_kinds) {
        _cleanup_free_ char *text = tl_read_file(SC_SOURCE_DIR "/config/sensor-collector.json");
        cJSON *root;

        ck_assert_ptr_nonnull(text);
        root = cJSON_Parse(text);
        ck_assert_ptr_nonnull(root);
        check_kinds(root, "");
        cJSON_Delete(root);

        ck_assert_int_eq(reload_key_kind("/log/level"), RELOAD_KEY_APPLIED);
        ck_assert_int_eq(reload_key_kind("/sensors/map"), RELOAD_KEY_APPLIED);
        ck_assert_int_eq(reload_key_kind("/sensors/map/gh1-*/metrics/co2/min"), RELOAD_KEY_APPLIED);
        ck_assert_int_eq(reload_key_kind("/sensors/mapping"), -ENOENT);
        ck_assert_int_eq(reload_key_kind("/serial/custom_baud"), RELOAD_KEY_RESTART);
        ck_assert_int_eq(reload_key_kind("/mqtt/topics"), RELOAD_KEY_RESTART);
        ck_assert_int_eq(reload_key_kind("/mqtt/topics/0/qos"), -ENOENT);
        ck_assert_int_eq(reload_key_kind("/serial"), -ENOENT);
        ck_assert_int_eq(reload_key_kind("/nonsense"), -ENOENT);
        for (size_t i = 0; i < ELEMENTSOF(keys_cases); i++) {
                _cleanup_free_ char *list = strdup(keys_cases[i].expected);

                for (char *save = NULL, *k = strtok_r(list, ",", &save); k; k = strtok_r(NULL, ",", &save))
                        ck_assert_msg(reload_key_kind(k) == RELOAD_KEY_RESTART, "%s", k);
        }
}
END_TEST

/* ---- reload_run(): a real file, read again at each reload ---- */

typedef struct HookLog {
        int calls;
        int fail_with;                /* returned by the hook when not 0 */
        const Config *last_old, *last_next;
        int last_next_level;
} HookLog;

static int record_hook(const Config *old, const Config *next, void *userdata) {
        HookLog *h = userdata;

        h->calls++;
        h->last_old = old;
        h->last_next = next;
        h->last_next_level = next->log.level;
        return h->fail_with;
}

static const char good_info[] =
        "{ \"serial\": { \"device\": \"/dev/ttyUSB0\" }, \"mqtt\": { \"enabled\": false }, \"log\": { \"level\": \"info\" } }";
static const char good_debug[] =
        "{ \"serial\": { \"device\": \"/dev/ttyUSB0\" }, \"mqtt\": { \"enabled\": false }, \"log\": { \"level\": \"debug\" } }";
static const char good_moved[] =
        "{ \"serial\": { \"device\": \"/dev/ttyUSB9\" }, \"mqtt\": { \"enabled\": false }, \"log\": { \"level\": \"warning\" } }";
static const char bad_two[] =
        "{ \"serial\": { \"device\": \"/dev/ttyUSB0\", \"baud\": 9601 }, \"mqtt\": { \"enabled\": false }, \"log\": { \"level\": \"loud\" } }";

static Config *load(const char *path) {
        Config *c = NULL;

        ck_assert_int_eq(config_load(path, &c, NULL), 0);
        return c;
}

START_TEST(test_reload_good_bad_restart) {
        const char *dir = tl_tmpdir();
        const char *path = tl_write_file(dir, "c.json", good_info);
        _cleanup_(config_freep) Config *running = load(path);
        _cleanup_(reload_freep) Reload *r = NULL;
        HookLog h = {};
        const Config *applied;

        log_open(LOG_TARGET_STDERR);
        log_set_max_level(running->log.level);
        ck_assert_int_eq(reload_new(running, &(ReloadOptions){ .path = path, .log_level_override = -1 }, &r), 0);
        ck_assert_int_eq(reload_add_hook(r, "test", record_hook, &h), 0);
        ck_assert_ptr_eq(reload_get_config(r), running);

        /* good: the log level is applied, the hook sees old and new */
        tl_write_file(dir, "c.json", good_debug);
        ck_assert_int_eq(reload_run(r), 0);
        ck_assert_int_eq(log_get_max_level(), LOG_DEBUG);
        ck_assert_int_eq(h.calls, 1);
        ck_assert_ptr_eq(h.last_old, running);
        ck_assert_int_eq(h.last_next_level, LOG_DEBUG);
        ck_assert_ptr_eq(reload_get_config(r), h.last_next);
        ck_assert_ptr_null(reload_get_note(r));
        applied = reload_get_config(r);

        /* bad: every error counted, nothing applied, the hook not called, the note says so */
        tl_write_file(dir, "c.json", bad_two);
        ck_assert_int_eq(reload_run(r), -EINVAL);
        ck_assert_int_eq(h.calls, 1);
        ck_assert_int_eq(log_get_max_level(), LOG_DEBUG);
        ck_assert_ptr_eq(reload_get_config(r), applied);
        ck_assert_str_eq(reload_get_note(r), "last reload failed: 2 errors in the configuration, old one kept");

        /* a restart-only key: reported, not applied; the rest applied; the note names the key */
        tl_write_file(dir, "c.json", good_moved);
        ck_assert_int_eq(reload_run(r), 0);
        ck_assert_int_eq(h.calls, 2);
        ck_assert_ptr_eq(h.last_old, applied);
        ck_assert_int_eq(log_get_max_level(), LOG_WARNING);
        ck_assert_str_eq(reload_get_note(r), "restart needed for /serial/device");
        /* the tasks' configuration is untouched */
        ck_assert_str_eq(running->serial.device, "/dev/ttyUSB0");

        /* changed back: nothing waits for a restart any more */
        tl_write_file(dir, "c.json", good_info);
        ck_assert_int_eq(reload_run(r), 0);
        ck_assert_ptr_null(reload_get_note(r));
        ck_assert_int_eq(log_get_max_level(), LOG_INFO);

        /* nothing to collect: refused as at start, not reported as two keys to restart with */
        tl_write_file(dir, "c.json", "{ \"serial\": { \"enabled\": false }, \"mqtt\": { \"enabled\": false } }");
        ck_assert_int_eq(reload_run(r), -EINVAL);
        ck_assert_str_eq(reload_get_note(r), "last reload failed: nothing to collect, old configuration kept");
        ck_assert_int_eq(log_get_max_level(), LOG_INFO);

        /* a file gone: the old configuration stays */
        ck_assert_int_eq(unlink(path), 0);
        ck_assert_int_eq(reload_run(r), -ENOENT);
        ck_assert_str_eq(reload_get_note(r), "last reload failed: cannot read the configuration, old one kept");
        ck_assert_int_eq(log_get_max_level(), LOG_INFO);
}
END_TEST

/* Many keys waiting for a restart: the note is cut, visibly, to fit STATUS=. */
START_TEST(test_reload_note_cut) {
        const char *dir = tl_tmpdir();
        const char *path = tl_write_file(dir, "c.json", good_info);
        _cleanup_(config_freep) Config *running = load(path);
        _cleanup_(reload_freep) Reload *r = NULL;
        const char *note;

        log_open(LOG_TARGET_STDERR);
        ck_assert_int_eq(reload_new(running, &(ReloadOptions){ .path = path, .log_level_override = -1 }, &r), 0);
        tl_write_file(dir, "c.json",
                      "{ \"serial\": { \"device\": \"/dev/ttyUSB1\", \"baud\": 19200, \"data_bits\": 7, \"parity\": \"odd\", "
                      "\"stop_bits\": 2, \"flow_control\": \"xonxoff\", \"format\": \"kv\", \"checksum\": \"nmea\", "
                      "\"max_frame_bytes\": 100, \"line_end\": \"cr\", \"reopen_timeout\": 5, \"idle_timeout\": 5 }, "
                      "\"mqtt\": { \"enabled\": false }, \"store\": { \"path\": \"/srv/x.db\", \"synchronous\": \"full\", "
                      "\"commit_interval_ms\": 5, \"commit_max_rows\": 5, \"retention_days\": 5, \"max_size_mb\": 5 }, "
                      "\"supervisor\": { \"stop_timeout\": 5, \"status_interval\": 5 } }");
        ck_assert_int_eq(reload_run(r), 0);
        note = reload_get_note(r);
        ck_assert_ptr_nonnull(note);
        ck_assert_msg(strncmp(note, "restart needed for /serial/device, /serial/baud, ", 49) == 0, "%s", note);
        ck_assert_msg(strlen(note) < 256, "%zu: %s", strlen(note), note);
        ck_assert_msg(streq(note + strlen(note) - 3, "..."), "%s", note);
}
END_TEST

/* A hook that fails: the reload fails and says which; the configuration last fully applied
 * stays the reference; the next good reload applies again to every hook. */
START_TEST(test_reload_hook_fails) {
        const char *dir = tl_tmpdir();
        const char *path = tl_write_file(dir, "c.json", good_info);
        _cleanup_(config_freep) Config *running = load(path);
        _cleanup_(reload_freep) Reload *r = NULL;
        HookLog first = {}, second = { .fail_with = -ENOMEM };

        log_open(LOG_TARGET_STDERR);
        ck_assert_int_eq(reload_new(running, &(ReloadOptions){ .path = path, .log_level_override = -1 }, &r), 0);
        ck_assert_int_eq(reload_add_hook(r, "first", record_hook, &first), 0);
        ck_assert_int_eq(reload_add_hook(r, "sensor map", record_hook, &second), 0);

        tl_write_file(dir, "c.json", good_debug);
        ck_assert_int_eq(reload_run(r), -ENOMEM);
        ck_assert_int_eq(first.calls, 1);
        ck_assert_int_eq(second.calls, 1);
        ck_assert_str_eq(reload_get_note(r), "last reload failed: could not apply the sensor map");
        ck_assert_ptr_eq(reload_get_config(r), running);
        /* the first hook may point into the new configuration: it is still there */
        ck_assert_int_eq(first.last_next->log.level, LOG_DEBUG);

        second.fail_with = 0;
        ck_assert_int_eq(reload_run(r), 0);
        ck_assert_ptr_eq(second.last_old, running);
        ck_assert_ptr_null(reload_get_note(r));
        ck_assert_ptr_eq(reload_get_config(r), second.last_next);
}
END_TEST

/* --log-level on the command line wins over the file, at start and at each reload;
 * --no-serial applies to each new file, so it is no change. */
START_TEST(test_reload_command_line_wins) {
        const char *dir = tl_tmpdir();
        const char *path = tl_write_file(dir, "c.json",
                                         "{ \"serial\": { \"device\": \"/dev/ttyUSB0\" }, \"mqtt\": { \"host\": \"h\", "
                                         "\"client_id\": \"gw\", \"topics\": [ " TOPIC_A " ] } }");
        _cleanup_(config_freep) Config *running = load(path);
        _cleanup_(reload_freep) Reload *r = NULL;

        running->serial.enabled = false; /* as main.c does for --no-serial */
        log_open(LOG_TARGET_STDERR);
        log_set_max_level(LOG_ERR);
        ck_assert_int_eq(reload_new(running, &(ReloadOptions){ .path = path, .log_level_override = LOG_ERR, .no_serial = true },
                                    &r),
                         0);
        tl_write_file(dir, "c.json",
                      "{ \"serial\": { \"device\": \"/dev/ttyUSB7\" }, \"mqtt\": { \"host\": \"h\", "
                      "\"client_id\": \"gw\", \"topics\": [ " TOPIC_A " ] }, \"log\": { \"level\": \"debug\" } }");
        ck_assert_int_eq(reload_run(r), 0);
        ck_assert_int_eq(log_get_max_level(), LOG_ERR);
        ck_assert_ptr_null(reload_get_note(r));
        ck_assert(!reload_get_config(r)->serial.enabled);
}
END_TEST

static Suite *reload_suite(void) {
        Suite *s = suite_create("reload");
        TCase *tc = tcase_create("restart-keys");

        tcase_add_loop_test(tc, test_restart_keys, 0, ELEMENTSOF(keys_cases));
        tcase_add_test(tc, test_key_kinds);
        suite_add_tcase(s, tc);

        tc = tcase_create("run");
        tcase_add_test(tc, test_reload_good_bad_restart);
        tcase_add_test(tc, test_reload_hook_fails);
        tcase_add_test(tc, test_reload_note_cut);
        tcase_add_test(tc, test_reload_command_line_wins);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(reload_suite());
}
