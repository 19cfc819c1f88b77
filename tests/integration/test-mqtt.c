/* SPDX-License-Identifier: MIT */
/* The MQTT input end to end: the real daemon against a real mosquitto (and a scripted fake broker). */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <mosquitto.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "collector/macro.h"
#include "testlib.h"

#define TEST_CLIENT_ID "sc-test-gw"

/* ---- the fixture: a test's broker, daemon, publisher and directory ---- */

static const char default_topics[] =
        "[ { \"filter\": \"gh/+sensor/state\", \"qos\": 1, \"format\": \"json\" },"
        "  { \"filter\": \"gh/+sensor/+metric\", \"qos\": 1, \"format\": \"value\" } ]";

/* What a test's configuration says beyond the part every test shares (only the MQTT input, as
 * TEST_CLIENT_ID with a keepalive of 5 s; a store committing every 10 ms; debug logs; a status
 * line every 0.1 s; a stop timeout of 5 s). Every field may be left zero. */
typedef struct FxConf {
        const char *broker;           /* fx_start(): lines added to mosquitto.conf */
        const char *host;             /* the broker's host; NULL: 127.0.0.1 */
        int port;                     /* its port; 0: the fixture's broker */
        const char *mqtt;             /* members added to "mqtt", each followed by a comma */
        const char *topics;           /* a JSON array; NULL: default_topics */
        const char *store;            /* members added to "store", each preceded by a comma */
        const char *dir;              /* where the store lives; NULL: the fixture's directory */
} FxConf;

/* One test's broker, daemon and publisher, in a directory of its own. */
typedef struct Fx {
        const char *dir;              /* the test's: the broker's persistence, the store, test files */
        TlBroker b;                   /* the test starts it (fx_start() does), fx_stop() stops it */
        TlDaemon d;
        TlPub p;                      /* fx_pub() opens it, fx_stop() closes it if still open */
        char config[2048];            /* the daemon's configuration, made by fx_config() */
} Fx;

static void assert_log_contains(TlDaemon *d, const char *needle) {
        char *log = tl_daemon_log(d);
        bool found = strstr(log, needle) != NULL;

        if (!found)
                fprintf(stderr, "---- daemon log ----\n%s\n---- end ----\n", log);
        free(log);
        ck_assert_msg(found, "daemon log lacks '%s'", needle);
}

static void assert_log_lacks(TlDaemon *d, const char *needle) {
        char *log = tl_daemon_log(d);
        bool found = strstr(log, needle) != NULL;

        if (found)
                fprintf(stderr, "---- daemon log ----\n%s\n---- end ----\n", log);
        free(log);
        ck_assert_msg(!found, "daemon log has '%s'", needle);
}

/* How often needle occurs in the daemon's log. */
static unsigned log_count(TlDaemon *d, const char *needle) {
        char *log = tl_daemon_log(d);
        unsigned n = 0;

        for (const char *p = strstr(log, needle); p; p = strstr(p + 1, needle))
                n++;
        free(log);
        return n;
}

static void dump_log(TlDaemon *d) {
        char *log = tl_daemon_log(d);
        fprintf(stderr, "---- daemon log ----\n%s\n---- end ----\n", log);
        free(log);
}

static void start_daemon_in_namespace(TlDaemon *d, const char *config, const char *hosts, const char *resolv,
                                      const char *mode, char *const env[]);

/* The daemon's log goes to stderr: too long for a Check message. */
static void expect_ready(TlDaemon *d) {
        if (!tl_notify_wait(&d->notify, "READY=1", 8000)) {
                dump_log(d);
                ck_abort_msg("no READY=1; notify so far: %s", d->notify.log);
        }
}

static void stop_daemon_ok(TlDaemon *d) {
        int r;

        kill(d->pid, SIGTERM);
        r = tl_daemon_wait(d, 8000);
        if (r != 0)
                dump_log(d);
        ck_assert_int_eq(r, 0);
}

/* A fixture with a directory of its own and nothing started. */
static void fx_init(Fx *fx) {
        memset(fx, 0, sizeof(*fx));
        fx->dir = tl_tmpdir();
}

/* Makes fx->config from c (NULL: nothing beyond the shared part); the next daemon start uses it. */
static void fx_config(Fx *fx, const FxConf *c) {
        static const FxConf none;
        int n;

        c = c ?: &none;
        n = snprintf(fx->config, sizeof(fx->config),
                     "{\n"
                     "  \"mqtt\": { \"host\": \"%s\", \"port\": %d, \"client_id\": \"" TEST_CLIENT_ID "\",\n"
                     "            \"keepalive\": 5, %s \"topics\": %s },\n"
                     "  \"store\": { \"path\": \"%s/readings.db\", \"commit_interval_ms\": 10%s },\n"
                     "  \"log\": { \"level\": \"debug\" },\n"
                     "  \"supervisor\": { \"stop_timeout\": 5, \"status_interval\": 0.1 }\n"
                     "}\n",
                     c->host ?: "127.0.0.1", c->port ?: fx->b.port, c->mqtt ?: "", c->topics ?: default_topics,
                     c->dir ?: fx->dir, c->store ?: "");
        ck_assert_msg(n > 0 && (size_t) n < sizeof(fx->config), "configuration too long");
}

/* Starts the daemon with fx->config and env (extra, may be NULL). Each start gets a directory
 * of its own (config, notify socket, log); the store lives where the configuration says, so
 * restarts share it. */
static void fx_daemon(Fx *fx, char *const env[]) {
        tl_daemon_start(&fx->d, tl_tmpdir(), fx->config, NULL, env);
}

/* fx_daemon(), then waits for READY=1. */
static void fx_daemon_ready(Fx *fx, char *const env[]) {
        fx_daemon(fx, env);
        expect_ready(&fx->d);
}

/* A fresh fixture: its broker started (c->broker added to its configuration), fx->config made
 * from c (may be NULL), the daemon started and ready. */
static void fx_start(Fx *fx, const FxConf *c) {
        fx_init(fx);
        tl_broker_start(&fx->b, fx->dir, c ? c->broker : NULL);
        fx_config(fx, c);
        fx_daemon_ready(fx, NULL);
}

/* Connects the publisher as client_id, with a clean session, to the fixture's broker. */
static void fx_pub(Fx *fx, const char *client_id) {
        ck_assert_msg(tl_pub_open_as(&fx->p, fx->b.port, client_id, true), "publisher did not connect");
}

/* Closes the publisher if open, stops the daemon if the test has not waited for its exit (it
 * must exit 0), and stops the broker if it runs. */
static void fx_stop(Fx *fx) {
        tl_pub_close(&fx->p);
        if (fx->d.pid > 0)
                stop_daemon_ok(&fx->d);
        tl_broker_stop(&fx->b);
}

typedef struct SqlWait {
        char db[300];
        const char *sql;
        int64_t expected;
        int64_t last;
} SqlWait;

static bool sql_reaches(void *userdata) {
        SqlWait *w = userdata;

        w->last = tl_sql_int(w->db, w->sql);
        return w->last >= w->expected;
}

/* Waits until the query's integer on the fixture's store is at least expected; returns the last
 * value. */
static int64_t wait_sql(Fx *fx, const char *sql, int64_t expected, int timeout_ms) {
        SqlWait w = { .sql = sql, .expected = expected };

        snprintf(w.db, sizeof(w.db), "%s/readings.db", fx->dir);
        (void) tl_wait_until(sql_reaches, &w, timeout_ms);
        return w.last;
}

static int64_t sql(Fx *fx, const char *query) {
        char db[300];

        snprintf(db, sizeof(db), "%s/readings.db", fx->dir);
        return tl_sql_int(db, query);
}

/* Publishes text on topic as client_id and waits until the store has the one reading of sensor
 * it makes: the daemon is connected, subscribed and storing. */
static void fx_pass_one(Fx *fx, const char *client_id, const char *topic, const char *text, const char *sensor) {
        char query[200];

        fx_pub(fx, client_id);
        tl_pub_text(&fx->p, topic, text);
        tl_pub_close(&fx->p);
        snprintf(query, sizeof(query), "SELECT count(*) FROM readings_view WHERE sensor='%s'", sensor);
        ck_assert_int_eq(wait_sql(fx, query, 1, 5000), 1);
}

/* ---- basic ingest ---- */

static const char *const protocols[] = { "\"protocol\": \"3.1.1\",", "\"protocol\": \"5\", \"session_expiry\": 3600," };

START_TEST(test_ingest) {
        Fx fx;

        fx_start(&fx, &(FxConf){ .mqtt = protocols[_i] });
        fx_pub(&fx, "pub-ingest");
        tl_pub_text(&fx.p, "gh/t1/state", "{\"temperature\": 21.5, \"humidity\": 40, \"ts\": 1732200000123}");
        tl_pub_text(&fx.p, "gh/t2/temperature", "22.25");
        tl_pub_text(&fx.p, "gh/t2/co2", " 415 \n");
        tl_pub_text(&fx.p, "gh/t3/state", "{\"sensor\": \"t3\", \"light\": 1200}");

        ck_assert_int_eq(wait_sql(&fx, "SELECT count(*) FROM readings_view", 5, 5000), 5);
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM readings_view WHERE sensor='t1' AND metric='temperature' AND "
                                  "value=21.5 AND ts=1732200000123 AND sensor_ts AND origin='gh/t1/state' AND source='mqtt'"),
                         1);
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM readings_view WHERE sensor='t1' AND metric='humidity' AND value=40"), 1);
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM readings_view WHERE sensor='t2' AND metric='temperature' AND "
                                  "value=22.25 AND NOT sensor_ts AND ts=received AND origin='gh/t2/temperature'"),
                         1);
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM readings_view WHERE sensor='t2' AND metric='co2' AND value=415"), 1);
        /* A payload naming the topic's own sensor is fine (another one: see test_sensor_mismatch). */
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM readings_view WHERE sensor='t3' AND metric='light'"), 1);
        /* Receipt time is wall clock, in ms. */
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM readings_view WHERE abs(received - CAST(strftime('%s','now') AS INTEGER) * 1000) < 60000"), 5);
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM rejects_view"), 0);

        /* STATUS= names the broker and counts. With MQTT 5 the json messages on gh/+/state
         * also came as copies for the gh/+/+ subscription: skipped, and counted. */
        ck_assert_msg(tl_notify_wait(&fx.d.notify, "4 messages, 0 rejects", 3000), "status: %s", fx.d.notify.log);
        ck_assert_msg(strstr(fx.d.notify.log, "connected to 127.0.0.1:"), "status: %s", fx.d.notify.log);
        if (_i == 1)
                ck_assert_msg(tl_notify_wait(&fx.d.notify, "0 reconnects, 2 duplicates skipped", 3000), "status: %s",
                              fx.d.notify.log);

        /* The connection and libmosquitto's socket pair do not leak into programs we might run. */
        ck_assert_uint_ge(tl_assert_sockets_cloexec(fx.d.pid), 3);

        fx_stop(&fx);
        assert_log_contains(&fx.d, _i == 1 ? "Stopped (4 messages, 0 rejects, 0 reconnects, 2 duplicates skipped)."
                                           : "Stopped (4 messages, 0 rejects, 0 reconnects).");
        ck_assert(tl_notify_wait(&fx.d.notify, "STOPPING=1", 0));
}
END_TEST

/* ---- READY=1 waits for CONNACK and SUBACK: a scripted broker holds them back ---- */

static int fake_listen(int *ret_port) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(a);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        ck_assert(fd >= 0);
        ck_assert(bind(fd, (struct sockaddr *) &a, sizeof(a)) == 0);
        ck_assert(listen(fd, 4) == 0);
        ck_assert(getsockname(fd, (struct sockaddr *) &a, &len) == 0);
        *ret_port = ntohs(a.sin_port);
        return fd;
}

static int fake_accept(int lfd, int timeout_ms) {
        struct pollfd pfd = { .fd = lfd, .events = POLLIN };
        int fd;

        ck_assert_msg(poll(&pfd, 1, timeout_ms) == 1, "the daemon did not connect");
        fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        ck_assert(fd >= 0);
        return fd;
}

static void read_full(int fd, void *buf, size_t size, int timeout_ms) {
        uint8_t *p = buf;

        while (size > 0) {
                struct pollfd pfd = { .fd = fd, .events = POLLIN };
                ck_assert_msg(poll(&pfd, 1, timeout_ms) == 1, "no packet from the daemon");
                ssize_t k = read(fd, p, size);
                ck_assert_msg(k > 0, "connection closed by the daemon");
                p += k;
                size -= (size_t) k;
        }
}

/* Reads one MQTT packet; returns its type (high nibble) and the body in buf. */
static int fake_read_packet(int fd, uint8_t *buf, size_t size, size_t *ret_len) {
        uint8_t h;
        size_t len = 0, mult = 1;

        read_full(fd, &h, 1, 5000);
        for (;;) {
                uint8_t b;
                read_full(fd, &b, 1, 5000);
                len += (b & 127) * mult;
                mult *= 128;
                if (!(b & 128))
                        break;
        }
        ck_assert(len <= size);
        read_full(fd, buf, len, 5000);
        *ret_len = len;
        return h >> 4;
}

static void fake_write(int fd, const void *data, size_t size) {
        ck_assert_int_eq(write(fd, data, size), (ssize_t) size);
}

/* Connects the daemon to a scripted broker: answers CONNACK with connack_rc and SUBACK with
 * suback_code, and checks READY=1 is sent only after both. */
START_TEST(test_ready_after_suback) {
        Fx fx;
        uint8_t buf[1024];
        size_t len;
        int port, lfd, cfd;

        fx_init(&fx);
        lfd = fake_listen(&port);
        fx_config(&fx, &(FxConf){ .port = port,
                                  .topics = "[ { \"filter\": \"gh/+sensor/+metric\", \"qos\": 1, \"format\": \"value\" } ]" });
        fx_daemon(&fx, NULL);

        cfd = fake_accept(lfd, 5000);
        ck_assert_int_eq(fake_read_packet(cfd, buf, sizeof(buf), &len), 1); /* CONNECT */
        /* Connected at the TCP level, no CONNACK yet: not ready. */
        ck_assert(!tl_notify_wait(&fx.d.notify, "READY=1", 300));
        fake_write(cfd, (uint8_t[]){ 0x20, 0x02, 0x00, 0x00 }, 4);

        ck_assert_int_eq(fake_read_packet(cfd, buf, sizeof(buf), &len), 8); /* SUBSCRIBE */
        ck_assert_uint_ge(len, 2);
        /* Accepted, subscription not granted yet: still not ready. */
        ck_assert(!tl_notify_wait(&fx.d.notify, "READY=1", 300));
        if (_i == 0) {
                fake_write(cfd, (uint8_t[]){ 0x90, 0x03, buf[0], buf[1], 0x01 }, 5);
                expect_ready(&fx.d);
                stop_daemon_ok(&fx.d);
        } else {
                /* The broker refuses the subscription: exit 11, cause logged, never ready. */
                fake_write(cfd, (uint8_t[]){ 0x90, 0x03, buf[0], buf[1], 0x80 }, 5);
                ck_assert_int_eq(tl_daemon_wait(&fx.d, 5000), 11);
                ck_assert(!strstr(fx.d.notify.log, "READY=1"));
                assert_log_contains(&fx.d, "refused the subscription to 'gh/+sensor/+metric'");
        }
        close(cfd);
        close(lfd);
}
END_TEST

/* CONNACK "server unavailable" (3) is retried; "not authorised" (5) ends the task at once. */
START_TEST(test_connack_refused) {
        Fx fx;
        uint8_t buf[1024];
        size_t len;
        int port, lfd, cfd;

        fx_init(&fx);
        lfd = fake_listen(&port);
        fx_config(&fx, &(FxConf){ .port = port });
        fx_daemon(&fx, NULL);

        cfd = fake_accept(lfd, 5000);
        ck_assert_int_eq(fake_read_packet(cfd, buf, sizeof(buf), &len), 1);
        fake_write(cfd, (uint8_t[]){ 0x20, 0x02, 0x00, 0x03 }, 4);
        close(cfd);

        /* Retried after a backoff, reported degraded meanwhile. */
        cfd = fake_accept(lfd, 5000);
        ck_assert(tl_notify_wait(&fx.d.notify, "reconnecting to 127.0.0.1", 1000));
        ck_assert_int_eq(fake_read_packet(cfd, buf, sizeof(buf), &len), 1);
        fake_write(cfd, (uint8_t[]){ 0x20, 0x02, 0x00, 0x05 }, 4);

        ck_assert_int_eq(tl_daemon_wait(&fx.d, 5000), 11);
        assert_log_contains(&fx.d, "Failed to connect to broker 127.0.0.1:");
        assert_log_contains(&fx.d, "refused the connection (CONNACK 3): Connection Refused: broker unavailable");
        assert_log_contains(&fx.d, "refused the connection (CONNACK 5): Connection Refused: not authorised");
        close(cfd);
        close(lfd);
}
END_TEST

/* ---- persistent session: what is published while the daemon is stopped arrives later ---- */

START_TEST(test_persistent_session) {
        Fx fx;
        char topic[64], payload[64];

        fx_start(&fx, &(FxConf){ .mqtt = protocols[_i] });
        stop_daemon_ok(&fx.d);

        fx_pub(&fx, "pub-session");
        for (int i = 1; i <= 20; i++) {
                snprintf(topic, sizeof(topic), "gh/s%d/temperature", i % 3);
                snprintf(payload, sizeof(payload), "%d", i);
                tl_pub_text(&fx.p, topic, payload);
        }
        tl_pub_close(&fx.p);

        fx_daemon_ready(&fx, NULL);
        ck_assert_int_eq(wait_sql(&fx, "SELECT count(*) FROM readings_view", 20, 5000), 20);
        ck_assert_int_eq(sql(&fx, "SELECT count(DISTINCT value) FROM readings_view WHERE metric='temperature'"), 20);
        fx_stop(&fx);
}
END_TEST

/* ---- filters an earlier configuration left in the persistent session are unsubscribed ---- */

START_TEST(test_stale_subscriptions) {
        Fx fx;

        fx_start(&fx, &(FxConf){ .mqtt = protocols[_i],
                                 .topics = "[ { \"filter\": \"gh/+sensor/+metric\", \"format\": \"value\" },"
                                           "  { \"filter\": \"old/+sensor/+metric\", \"format\": \"value\" } ]" });
        stop_daemon_ok(&fx.d);
        assert_log_lacks(&fx.d, "Unsubscribing");

        /* Now one narrower filter. MQTT 5: it has identifier 1, as gh/+/+ had. */
        fx_config(&fx, &(FxConf){ .mqtt = protocols[_i],
                                  .topics = "[ { \"filter\": \"gh/+sensor/temperature\", \"metric\": \"temperature\", "
                                            "\"format\": \"value\" } ]" });
        fx_daemon_ready(&fx, NULL);
        assert_log_contains(&fx.d, "Unsubscribing from 2 filters an earlier configuration left in the session: 'gh/+/+', 'old/+/+'.");

        fx_pub(&fx, "pub-stale");
        tl_pub_text(&fx.p, "old/x1/temperature", "5");   /* only the old filters match */
        tl_pub_text(&fx.p, "gh/x2/humidity", "6");
        tl_pub_text(&fx.p, "gh/x3/temperature", "7");    /* both the old and the new one match */
        tl_pub_text(&fx.p, "gh/x4/temperature", "8");    /* the last: once stored, the others are handled */
        tl_pub_close(&fx.p);
        ck_assert_int_eq(wait_sql(&fx, "SELECT count(*) FROM readings_view WHERE sensor='x4'", 1, 5000), 1);
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM readings_view WHERE sensor='x3'"), 1);
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM readings_view"), 2);
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM rejects_view"), 0);
        stop_daemon_ok(&fx.d);

        /* The store remembers what is subscribed now: nothing more to unsubscribe. */
        fx_daemon_ready(&fx, NULL);
        fx_stop(&fx);
        assert_log_lacks(&fx.d, "Unsubscribing");
}
END_TEST

/* ---- a filter the broker refused is not remembered ---- */

/* mosquitto's dynamic security plugin (shipped with the broker) refuses subscriptions by ACL;
 * its acl_file does not (2.0 grants every SUBSCRIBE and filters at delivery). */
static const char dynsec_json[] =
        "{\"defaultACLAccess\": {\"publishClientSend\": true, \"publishClientReceive\": true,"
        " \"subscribe\": true, \"unsubscribe\": true},"
        " \"clients\": [], \"groups\": [{\"groupname\": \"anon\", \"roles\": [{\"rolename\": \"r\"}], \"clients\": []}],"
        " \"anonymousGroup\": \"anon\","
        " \"roles\": [{\"rolename\": \"r\", \"acls\": [{\"acltype\": \"subscribePattern\", \"topic\": \"denied/#\","
        " \"priority\": 0, \"allow\": false}]}]}\n";

static const char *dynsec_plugin(void) {
        static const char *const paths[] = {
                "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
                "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
                "/usr/lib/arm-linux-gnueabihf/mosquitto_dynamic_security.so",
                "/usr/lib/mosquitto_dynamic_security.so",
        };

        for (size_t i = 0; i < ELEMENTSOF(paths); i++)
                if (access(paths[i], R_OK) == 0)
                        return paths[i];
        ck_abort_msg("mosquitto_dynamic_security.so not found (package mosquitto)");
        return NULL;
}

START_TEST(test_refused_filter_forgotten) {
        Fx fx;
        _cleanup_free_ char *extra = NULL;

        fx_init(&fx);
        tl_write_file(fx.dir, "dynsec.json", dynsec_json);
        ck_assert_int_ge(asprintf(&extra, "plugin %s\nplugin_opt_config_file %s/dynsec.json\n", dynsec_plugin(), fx.dir), 0);
        tl_broker_start(&fx.b, fx.dir, extra);

        /* The broker refuses one of the filters: exit 11, as before. */
        fx_config(&fx, &(FxConf){ .mqtt = protocols[_i],
                                  .topics = "[ { \"filter\": \"gh/+sensor/+metric\", \"format\": \"value\" },"
                                            "  { \"filter\": \"denied/+sensor/+metric\", \"format\": \"value\" } ]" });
        fx_daemon(&fx, NULL);
        ck_assert_int_eq(tl_daemon_wait(&fx.d, 8000), 11);
        assert_log_contains(&fx.d, "refused the subscription to 'denied/+sensor/+metric'");

        /* Without it the daemon starts and has nothing to unsubscribe: the refused filter was
         * never in the session, and the store does not remember it. */
        fx_config(&fx, &(FxConf){ .mqtt = protocols[_i],
                                  .topics = "[ { \"filter\": \"gh/+sensor/+metric\", \"format\": \"value\" } ]" });
        fx_daemon_ready(&fx, NULL);
        assert_log_lacks(&fx.d, "Unsubscribing");
        fx_pass_one(&fx, "pub-refused", "gh/r1/temperature", "5", "r1");
        fx_stop(&fx);
}
END_TEST

/* ---- a broker that drops the connection on the UNSUBSCRIBE of a stale filter ---- */

/* The store remembers a stale filter (a real broker granted it); then, on the same port, a
 * scripted broker reports the session present and closes the connection whenever an
 * UNSUBSCRIBE comes. After two such losses the filter is forgotten and the task runs. */
START_TEST(test_unsubscribe_dropped) {
        Fx fx;
        uint8_t buf[1024];
        size_t len;
        int lfd, cfd, port, type, unsubscribes = 0;

        fx_init(&fx);
        lfd = fake_listen(&port);
        close(lfd); /* the port, for mosquitto first */
        fx.b.port = port;
        tl_broker_start(&fx.b, fx.dir, NULL);
        fx_config(&fx, &(FxConf){ .topics = "[ { \"filter\": \"gh/+sensor/+metric\", \"format\": \"value\" },"
                                            "  { \"filter\": \"old/+sensor/+metric\", \"format\": \"value\" } ]" });
        fx_daemon_ready(&fx, NULL);
        stop_daemon_ok(&fx.d);
        tl_broker_stop(&fx.b);
        tl_sleep_ms(200);

        {
                struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                                         .sin_port = htons((uint16_t) port) };
                int one = 1;

                lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                ck_assert_int_ge(lfd, 0);
                (void) setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
                for (int i = 0; i < 50 && bind(lfd, (struct sockaddr *) &a, sizeof(a)) < 0; i++)
                        tl_sleep_ms(100);
                ck_assert_int_eq(listen(lfd, 4), 0);
        }
        fx_config(&fx, &(FxConf){ .topics = "[ { \"filter\": \"gh/+sensor/+metric\", \"format\": \"value\" } ]" });
        fx_daemon(&fx, NULL);
        for (int attempt = 0; attempt < 3; attempt++) {
                bool unsubscribed = false;

                cfd = fake_accept(lfd, 5000);
                ck_assert_int_eq(fake_read_packet(cfd, buf, sizeof(buf), &len), 1); /* CONNECT */
                fake_write(cfd, (uint8_t[]){ 0x20, 0x02, 0x01, 0x00 }, 4);        /* session present */
                /* SUBSCRIBE and, while the filter is remembered, UNSUBSCRIBE; in either order. */
                for (int k = 0; k < 2 && !unsubscribed; k++) {
                        type = fake_read_packet(cfd, buf, sizeof(buf), &len);
                        if (type == 10) {
                                unsubscribed = true;
                                unsubscribes++;
                        } else if (type == 8 && attempt < 2)
                                continue;
                        else
                                break;
                }
                if (unsubscribed) {
                        ck_assert_int_lt(attempt, 2);
                        close(cfd);
                        continue;
                }
                ck_assert_int_eq(attempt, 2);
                ck_assert_int_eq(type, 8);
                fake_write(cfd, (uint8_t[]){ 0x90, 0x03, buf[0], buf[1], 0x01 }, 5); /* SUBACK */
                expect_ready(&fx.d);
                stop_daemon_ok(&fx.d);
                close(cfd);
        }
        ck_assert_int_eq(unsubscribes, 2);
        assert_log_contains(&fx.d, "closed the connection 2 times in a row before answering the UNSUBSCRIBE of 'old/+/+'; "
                                   "forgetting them");
        close(lfd);

        /* The store no longer names it: a real broker is not asked again. */
        tl_broker_start(&fx.b, fx.dir, NULL);
        fx_daemon_ready(&fx, NULL);
        fx_stop(&fx);
        assert_log_lacks(&fx.d, "Unsubscribing");
}
END_TEST

/* ---- the broker restarts mid-stream: every number of a QoS 1 sequence arrives ---- */

#define SEQ_COUNT 400
#define SEQ_RESTARTS 3

START_TEST(test_broker_restart) {
        Fx fx;
        char payload[128];
        int next = 1, restarts = 0;
        int64_t deadline;

        fx_start(&fx, &(FxConf){ .mqtt = "\"max_offline\": 60," });

        /* A persistent publisher session: libmosquitto re-sends what the broker has not
         * acknowledged after each reconnect. It publishes through libmosquitto itself, since a
         * refused write is fine here (below). */
        ck_assert_msg(tl_pub_open_as(&fx.p, fx.b.port, "pub-seq", false), "publisher did not connect");
        deadline = tl_now_ms() + 40000;
        while ((next <= SEQ_COUNT || fx.p.acked < SEQ_COUNT) && tl_now_ms() < deadline) {
                /* Keep a handful in flight, so restarts hit unacknowledged messages. A QoS 1
                 * message that cannot be written now stays queued in libmosquitto and goes out
                 * after the reconnect; the acknowledgement count at the end proves it. */
                while (fx.p.connected && next <= SEQ_COUNT && next - 1 - fx.p.acked < 10) {
                        int rc;

                        /* ts in ms, as the sensor's own timestamp must be. */
                        snprintf(payload, sizeof(payload), "{\"sensor\": \"seq\", \"ts\": %" PRId64 ", \"n\": %d}",
                                 INT64_C(1700000000000) + next, next);
                        rc = mosquitto_publish(fx.p.mosq, NULL, "gh/seq/state", (int) strlen(payload), payload, 1, false);
                        ck_assert_msg(rc == MOSQ_ERR_SUCCESS || rc == MOSQ_ERR_ERRNO || rc == MOSQ_ERR_NO_CONN ||
                                              rc == MOSQ_ERR_CONN_LOST,
                                      "publish: %s", mosquitto_strerror(rc));
                        next++;
                }
                if (restarts < SEQ_RESTARTS && next > (restarts + 1) * SEQ_COUNT / (SEQ_RESTARTS + 1)) {
                        tl_broker_stop(&fx.b);
                        tl_sleep_ms(100 + 150 * restarts); /* the daemon sees a refused connection */
                        tl_broker_start(&fx.b, fx.dir, NULL);
                        restarts++;
                }
                if (mosquitto_loop(fx.p.mosq, 10, 1) != MOSQ_ERR_SUCCESS || !fx.p.connected) {
                        tl_sleep_ms(20);
                        (void) mosquitto_reconnect(fx.p.mosq);
                }
        }
        ck_assert_int_eq(restarts, SEQ_RESTARTS);
        ck_assert_msg(fx.p.acked >= SEQ_COUNT, "publisher: %d of %d acknowledged", fx.p.acked, SEQ_COUNT);
        tl_pub_close(&fx.p);

        if (wait_sql(&fx, "SELECT count(DISTINCT value) FROM readings_view WHERE sensor='seq' AND metric='n'", SEQ_COUNT,
                     20000) != SEQ_COUNT)
                dump_log(&fx.d);
        ck_assert_int_eq(sql(&fx, "SELECT count(DISTINCT value) FROM readings_view WHERE sensor='seq' AND metric='n'"), SEQ_COUNT);
        ck_assert_int_eq(sql(&fx, "SELECT min(value) FROM readings_view WHERE sensor='seq' AND metric='n'"), 1);
        ck_assert_int_eq(sql(&fx, "SELECT max(value) FROM readings_view WHERE sensor='seq' AND metric='n'"), SEQ_COUNT);
        /* The sensor's timestamp makes redeliveries duplicates, not extra rows. */
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM readings_view WHERE sensor='seq' AND metric='n'"), SEQ_COUNT);
        assert_log_contains(&fx.d, "Reconnected to broker 127.0.0.1:");
        ck_assert_msg(tl_notify_wait(&fx.d.notify, "reconnecting to 127.0.0.1:", 0), "status: %s", fx.d.notify.log);
        ck_assert_uint_ge(tl_assert_sockets_cloexec(fx.d.pid), 3);
        fx_stop(&fx);
}
END_TEST

/* ---- QoS 2 topics, orderly stops mid-stream: every number arrives ---- */

/* Bursts of 20 every 5 ms (4000 messages a second, about 2.3 s): the stream outlasts the
 * stop/start cycles, and each burst keeps many messages in flight at once. */
#define Q2_COUNT 9000
#define Q2_BURST 20
#define Q2_BURST_MS 5
#define Q2_CYCLES 3

/* A child process that publishes Q2_COUNT numbered messages with QoS 2 in bursts, and exits 0
 * once the broker completed every one. */
static pid_t q2_publisher(int port) {
        pid_t pid = fork();
        TlPub p;
        int next = 1;
        int64_t start, deadline;
        char payload[128];

        ck_assert_int_ge(pid, 0);
        if (pid > 0)
                return pid;
        if (!tl_pub_open_as(&p, port, "pub-q2", true))
                _exit(2);
        start = tl_now_ms();
        deadline = start + 60000;
        while (p.acked < Q2_COUNT) {
                while (next <= Q2_COUNT && next <= ((tl_now_ms() - start) / Q2_BURST_MS + 1) * Q2_BURST) {
                        snprintf(payload, sizeof(payload), "{\"sensor\": \"q2\", \"ts\": %" PRId64 ", \"n\": %d}",
                                 INT64_C(1700000000000) + next, next);
                        if (!tl_pub_publish(&p, "gh/q2/state", payload, strlen(payload), 2, false))
                                _exit(3);
                        next++;
                }
                if (mosquitto_loop(p.mosq, 1, 1) != MOSQ_ERR_SUCCESS || tl_now_ms() > deadline)
                        _exit(4);
        }
        tl_pub_close(&p);
        _exit(0);
}

/* A topic configured with QoS 2 and a persistent session, and SIGTERM/restart cycles while a
 * stream arrives. libmosquitto 2.0 hands an incoming QoS 2 message to on_message only when
 * the broker's PUBREL arrives; what it has acknowledged with PUBREC by then lives only in its
 * memory. A process that disconnects in between loses those messages: the broker resends
 * just the PUBREL, which the next process answers without ever having seen the message. */
START_TEST(test_qos2_orderly_stops) {
        Fx fx;
        pid_t pub;
        int64_t n;

        /* Messages queued while the daemon restarts must not hit the broker's default cap. */
        fx_start(&fx, &(FxConf){ .broker = "max_queued_messages 100000\n", .mqtt = protocols[_i],
                                 .topics = "[ { \"filter\": \"gh/+sensor/state\", \"qos\": 2, \"format\": \"json\" } ]" });
        assert_log_contains(&fx.d, "QoS 2 for 'gh/+sensor/state' is subscribed as QoS 1");

        pub = q2_publisher(fx.b.port);
        for (int i = 0; i < Q2_CYCLES; i++) {
                tl_sleep_ms(600);
                stop_daemon_ok(&fx.d);
                fx_daemon_ready(&fx, NULL);
        }
        ck_assert_int_eq(tl_wait(pub, 30000), 0);

        n = wait_sql(&fx, "SELECT count(DISTINCT value) FROM readings_view WHERE sensor='q2' AND metric='n'", Q2_COUNT,
                     20000);
        if (n != Q2_COUNT) {
                fprintf(stderr, "missing:");
                for (int k = 1, shown = 0; k <= Q2_COUNT && shown < 40; k++) {
                        char q[160];

                        snprintf(q, sizeof(q), "SELECT count(*) FROM readings_view WHERE sensor='q2' AND metric='n' AND value=%d", k);
                        if (sql(&fx, q) == 0) {
                                fprintf(stderr, " %d", k);
                                shown++;
                        }
                }
                fprintf(stderr, "\n");
        }
        ck_assert_int_eq(n, Q2_COUNT);
        /* The sensor's timestamp makes QoS 1 redeliveries duplicates, not extra rows. */
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM readings_view WHERE sensor='q2' AND metric='n'"), Q2_COUNT);
        fx_stop(&fx);
}
END_TEST

/* ---- short outages in a row: the growing backoff must not outlast max_offline ---- */

/* One outage as this test makes it: the broker stopped, down for 300 ms (long enough for the
 * daemon's first retry to be refused), started again and answering. Returns how long that took
 * as the test saw it, which bounds the outage the daemon saw from above. */
static int64_t broker_outage(TlBroker *b, const char *dir) {
        int64_t start = tl_now_ms();

        tl_broker_stop(b);
        tl_sleep_ms(300);
        tl_broker_start(b, dir, NULL);
        return tl_now_ms() - start;
}

/* Each reconnect is short-lived, so the backoff keeps growing (it resets only after a connection
 * stayed up 10 s): after enough outages it is longer than max_offline. The broker is back
 * quickly each time; the daemon must still try before its budget runs out, not give up.
 *
 * How quickly the broker is back depends on the load: stopping and starting mosquitto (and
 * seeing it answer) takes about 0.5 s on a quiet machine and several times that on a busy one.
 * So the test measures it first, and gives the daemon a budget four times that (at least 4 s,
 * at most 15 s): the broker is then back within a quarter of the budget, leaving the daemon
 * three quarters of it to try. The number of outages follows from the budget: the backoff
 * grows by at least one step per outage (the lost connection), and once its shortest possible
 * delay (half of 0.2 s doubled per step) is longer than the budget, a daemon that lets the
 * backoff push the next attempt past max_offline gives up without trying; that outage is the
 * last one needed. With a 4 s budget that is seven outages, and such a daemon fails at the
 * fifth or sixth. */
START_TEST(test_short_outages_in_a_row) {
        Fx fx;
        _cleanup_free_ char *extra = NULL;
        int64_t restart_ms, budget_ms, shortest_ms;
        unsigned outages;

        fx_init(&fx);
        tl_broker_start(&fx.b, fx.dir, NULL);
        restart_ms = MAX(broker_outage(&fx.b, fx.dir), broker_outage(&fx.b, fx.dir));
        budget_ms = MIN(MAX((4 * restart_ms + 999) / 1000 * 1000, 4000), 15000);
        for (outages = 1, shortest_ms = 100; shortest_ms < budget_ms; outages++)
                shortest_ms *= 2;
        ck_assert_int_ge(asprintf(&extra, "\"max_offline\": %" PRId64 ",", budget_ms / 1000), 0);
        fx_config(&fx, &(FxConf){ .mqtt = extra });
        fx_daemon_ready(&fx, NULL);

        for (unsigned i = 1; i <= outages; i++) {
                /* The daemon reconnects within its budget or exits 11: either ends the wait
                 * long before this, which only bounds a daemon that does neither. */
                int64_t start = tl_now_ms(), deadline = start + budget_ms + 10000, outage_ms;

                outage_ms = broker_outage(&fx.b, fx.dir);
                while (log_count(&fx.d, "Reconnected to broker 127.0.0.1:") < i && tl_now_ms() < deadline &&
                       tl_wait(fx.d.pid, 0) == -ETIMEDOUT)
                        tl_sleep_ms(20);
                if (log_count(&fx.d, "Reconnected to broker 127.0.0.1:") < i)
                        dump_log(&fx.d);
                ck_assert_msg(log_count(&fx.d, "Reconnected to broker 127.0.0.1:") >= i,
                              "outage %u: no reconnect (broker back after %" PRId64 " ms; max_offline %" PRId64
                              " s, from restarts measured at %" PRId64 " ms)",
                              i, outage_ms, budget_ms / 1000, restart_ms);
        }
        assert_log_lacks(&fx.d, "Task mqtt failed");
        fx_stop(&fx);
}
END_TEST

/* ---- TLS with a CA made for the test ---- */

START_TEST(test_tls) {
        Fx fx;
        _cleanup_free_ char *extra = NULL, *conf = NULL;
        int tls_port = tl_free_port();

        fx_init(&fx);
        tl_tls_make_ca(fx.dir, "ca");
        tl_tls_make_ca(fx.dir, "other-ca");
        tl_tls_make_server_cert(fx.dir, "ca", "IP:127.0.0.1,DNS:broker.test");
        ck_assert_int_ge(asprintf(&conf, "listener %d 127.0.0.1\ncafile %s/ca.crt\ncertfile %s/server.crt\nkeyfile %s/server.key\n",
                                  tls_port, fx.dir, fx.dir, fx.dir),
                         0);
        tl_broker_start(&fx.b, fx.dir, conf);

        if (_i == 0) {
                ck_assert_int_ge(asprintf(&extra, "\"cafile\": \"%s/ca.crt\", \"tls_version\": \"tlsv1.2\",", fx.dir), 0);
                fx_config(&fx, &(FxConf){ .port = tls_port, .mqtt = extra });
                fx_daemon_ready(&fx, NULL);
                fx_pass_one(&fx, "pub-tls", "gh/tls1/temperature", "19.5", "tls1");
        } else if (_i == 3) {
                /* A host name (in /etc/hosts) with TLS: looked up on the loop first, then given to
                 * libmosquitto as a name, which the certificate must match (DNS:broker.test). */
                ck_assert_int_ge(asprintf(&extra, "\"cafile\": \"%s/ca.crt\",", fx.dir), 0);
                fx_config(&fx, &(FxConf){ .host = "broker.test", .port = tls_port, .mqtt = extra });
                start_daemon_in_namespace(&fx.d, fx.config, "127.0.0.1 localhost\n127.0.0.1 broker.test\n",
                                          "nameserver 127.0.0.1\n", "host", NULL);
                expect_ready(&fx.d);
                assert_log_contains(&fx.d, "Resolved 'broker.test' to 127.0.0.1 (1 address).");
                fx_pass_one(&fx, "pub-tls", "gh/tls3/temperature", "19.5", "tls3");
        } else {
                /* 1: a CA that did not sign the broker's certificate; 2: the right CA, but the
                 * certificate names 127.0.0.1, not "localhost". Fatal at once, not retried. */
                ck_assert_int_ge(asprintf(&extra, "\"cafile\": \"%s/%s.crt\",", fx.dir, _i == 1 ? "other-ca" : "ca"), 0);
                fx_config(&fx, &(FxConf){ .host = _i == 1 ? "127.0.0.1" : "localhost", .port = tls_port, .mqtt = extra });
                fx_daemon(&fx, NULL);
                ck_assert_int_eq(tl_daemon_wait(&fx.d, 5000), 11);
                assert_log_contains(&fx.d, _i == 1 ? "TLS certificate of broker 127.0.0.1:" : "TLS certificate of broker localhost:");
                assert_log_contains(&fx.d, "certificate verify failed");
                assert_log_lacks(&fx.d, "retrying in"); /* not retried */
                ck_assert(!strstr(fx.d.notify.log, "READY=1"));
        }
        fx_stop(&fx);
}
END_TEST

/* ---- user name and password ---- */

static bool broker_answers(void *userdata) {
        char port[16];
        char *argv[] = { "mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-t", "$SYS/broker/version", "-C", "1", "-W", "1", NULL };

        snprintf(port, sizeof(port), "%d", *(int *) userdata);
        return tl_run(argv, NULL, NULL, 3000) == 0;
}

/* A broker with an anonymous listener (for the test's publisher) and one that wants a password.
 * per_listener_settings must precede every security setting, hence a config of our own. */
static void start_auth_broker(TlBroker *b, const char *dir, int auth_port, const char *pwfile) {
        _cleanup_free_ char *conf = NULL;
        char path[300], log[300];

        b->port = tl_free_port();
        snprintf(b->dir, sizeof(b->dir), "%s", dir);
        ck_assert_int_ge(asprintf(&conf,
                                  "per_listener_settings true\nuser root\npersistence false\n"
                                  "listener %d 127.0.0.1\nallow_anonymous true\n"
                                  "listener %d 127.0.0.1\nallow_anonymous false\npassword_file %s\n",
                                  b->port, auth_port, pwfile),
                         0);
        tl_write_file(dir, "auth.conf", conf);
        snprintf(path, sizeof(path), "%s/auth.conf", dir);
        snprintf(log, sizeof(log), "%s/mosquitto.log", dir);
        b->pid = tl_spawn((char *[]){ "mosquitto", "-c", path, NULL }, NULL, log, log);
        ck_assert_msg(tl_wait_until(broker_answers, &b->port, 10000), "mosquitto did not come up");
}

START_TEST(test_password) {
        Fx fx;
        _cleanup_free_ char *extra = NULL, *pwfile = NULL, *creds = NULL, *cred_env = NULL;
        int auth_port = tl_free_port();
        const char *password = _i == 1 ? "wrong\n" : "s3cret\n";

        fx_init(&fx);
        ck_assert_int_ge(asprintf(&pwfile, "%s/passwd", fx.dir), 0);
        tl_run_ok((char *[]){ "mosquitto_passwd", "-c", "-b", pwfile, "collector", "s3cret", NULL });
        ck_assert_int_ge(asprintf(&creds, "%s/creds", fx.dir), 0);
        ck_assert_int_eq(mkdir(creds, 0700), 0);
        start_auth_broker(&fx.b, fx.dir, auth_port, pwfile);

        if (_i == 3) {
                /* A password file that is not there: a clear failure at start, no retrying. */
                ck_assert_int_ge(asprintf(&extra, "\"username\": \"collector\", \"password_file\": \"%s/missing\",", fx.dir), 0);
        } else if (_i == 2) {
                /* systemd's LoadCredential=: $CREDENTIALS_DIRECTORY/<basename of password_file>
                 * wins over the configured path, which need not exist. */
                tl_write_file(creds, "mqtt.pw", "s3cret\n");
                ck_assert_int_ge(asprintf(&extra, "\"username\": \"collector\", \"password_file\": \"/nonexistent/mqtt.pw\","), 0);
                ck_assert_int_ge(asprintf(&cred_env, "CREDENTIALS_DIRECTORY=%s", creds), 0);
        } else {
                ck_assert_int_ge(asprintf(&extra, "\"username\": \"collector\", \"password_file\": \"%s\",",
                                          tl_write_file(fx.dir, "mqtt-password", password)),
                                 0);
        }
        fx_config(&fx, &(FxConf){ .port = auth_port, .mqtt = extra });
        fx_daemon(&fx, cred_env ? (char *[]){ cred_env, NULL } : NULL);
        if (_i == 3) {
                ck_assert_int_eq(tl_daemon_wait(&fx.d, 5000), 11);
                assert_log_contains(&fx.d, "Failed to read the MQTT password from '");
                assert_log_contains(&fx.d, "/missing': No such file or directory");
        } else if (_i == 1) {
                ck_assert_int_eq(tl_daemon_wait(&fx.d, 5000), 11);
                assert_log_contains(&fx.d, "refused the connection (CONNACK 5)");
                assert_log_lacks(&fx.d, "retrying in"); /* not retried */
                ck_assert(!strstr(fx.d.notify.log, "READY=1"));
        } else {
                expect_ready(&fx.d);
                fx_pass_one(&fx, "pub-auth", "gh/auth1/temperature", "20", "auth1");
        }
        fx_stop(&fx);
}
END_TEST

/* ---- the broker goes away for good: exit 11 after max_offline, readings kept ---- */

START_TEST(test_max_offline) {
        Fx fx;
        int64_t before_stop, t0;
        int r;

        fx_start(&fx, &(FxConf){ .mqtt = "\"max_offline\": 2," });
        fx_pub(&fx, "pub-offline");
        tl_pub_text(&fx.p, "gh/o1/temperature", "1");
        tl_pub_text(&fx.p, "gh/o1/humidity", "2");
        tl_pub_close(&fx.p);
        ck_assert_int_eq(wait_sql(&fx, "SELECT count(*) FROM readings_view", 2, 5000), 2);

        /* The daemon loses the connection after before_stop and before the broker is gone
         * (gone_ms): a busy machine can put a long time between the two (mosquitto saves its
         * database on the way out), so each bound counts from the side that makes it hold.
         * Not before the 2 s budget has passed since before_stop (less 1 ms for our
         * millisecond timestamps); and at most 5 s after the broker is gone: the budget plus
         * 3 s for a busy machine to dispatch the timer, stop and exit. */
        before_stop = tl_now_ms();
        tl_broker_stop(&fx.b);
        t0 = tl_now_ms();
        r = tl_daemon_wait(&fx.d, 8000);
        ck_assert_int_eq(r, 11);
        ck_assert_int_ge(tl_now_ms() - before_stop, 2000 - 1);
        ck_assert_int_le(tl_now_ms() - t0, 5000);
        assert_log_contains(&fx.d, "Connection to broker 127.0.0.1:");
        assert_log_contains(&fx.d, "unreachable for 2");
        ck_assert(tl_notify_wait(&fx.d.notify, "reconnecting to 127.0.0.1:", 0));
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM readings_view WHERE sensor='o1'"), 2);
}
END_TEST

/* ---- a broker that accepts TCP and never answers: the offline budget still runs out ---- */

START_TEST(test_silent_broker) {
        Fx fx;
        int port, lfd;

        fx_init(&fx);
        lfd = fake_listen(&port); /* the kernel completes the handshake; nobody reads */
        fx_config(&fx, &(FxConf){ .port = port, .mqtt = "\"max_offline\": 1.5," });
        fx_daemon(&fx, NULL);
        ck_assert_int_eq(tl_daemon_wait(&fx.d, 6000), 11);
        assert_log_contains(&fx.d, "unreachable for 1.5s (last error: the current attempt got no CONNACK yet)");
        ck_assert(!strstr(fx.d.notify.log, "READY=1"));
        close(lfd);
}
END_TEST

/* ---- SIGTERM while the broker is unreachable: a quick, clean exit ---- */

START_TEST(test_sigterm_while_offline) {
        Fx fx;
        int64_t t0;

        fx_init(&fx);
        fx_config(&fx, &(FxConf){ .port = tl_free_port() });
        fx_daemon(&fx, NULL);
        ck_assert(tl_notify_wait(&fx.d.notify, "reconnecting to 127.0.0.1:", 5000));
        t0 = tl_now_ms();
        stop_daemon_ok(&fx.d);
        ck_assert_int_le(tl_now_ms() - t0, 1000);
        ck_assert(!strstr(fx.d.notify.log, "READY=1"));
}
END_TEST

/* ---- malformed payloads are kept as rejects; the daemon goes on ---- */

START_TEST(test_malformed) {
        Fx fx;
        char huge[1000];
        static const uint8_t binary[] = { 0xff, 0xfe, 0x00, 0x01, 0x80 };

        /* An earlier configuration left a subscription in the persistent session, and its store
         * (which would remember the filter, to unsubscribe it) is gone. */
        fx_start(&fx, &(FxConf){ .dir = tl_tmpdir(),
                                 .topics = "[ { \"filter\": \"old/+sensor/+metric\", \"format\": \"value\" } ]" });
        stop_daemon_ok(&fx.d);

        fx_config(&fx, &(FxConf){ .mqtt = "\"max_payload_bytes\": 64," });
        fx_daemon_ready(&fx, NULL);

        memset(huge, '1', sizeof(huge));
        fx_pub(&fx, "pub-bad");
        tl_pub_text(&fx.p, "gh/m1/state", "{\"temperature\": 21.5,");                /* bad JSON */
        tl_pub_send(&fx.p, "gh/m1/temperature", huge, sizeof(huge), 1, false);       /* over 64 bytes */
        tl_pub_send(&fx.p, "gh/m1/temperature", binary, sizeof(binary), 1, false);  /* not UTF-8 */
        tl_pub_text(&fx.p, "gh/m1/temperature", "NaN");                              /* not finite */
        tl_pub_text(&fx.p, "gh/m1/temperature", "1e999");                            /* not finite */
        tl_pub_text(&fx.p, "old/m1/temperature", "5");                               /* no configured topic */
        tl_pub_text(&fx.p, "gh/m1/temperature", "7.5");                              /* fine */
        tl_pub_close(&fx.p);

        ck_assert_int_eq(wait_sql(&fx, "SELECT count(*) FROM rejects_view", 6, 5000), 6);
        ck_assert_int_eq(wait_sql(&fx, "SELECT count(*) FROM readings_view", 1, 5000), 1);
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM readings_view WHERE sensor='m1' AND value=7.5"), 1);
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM rejects_view WHERE reason='bad_json' AND origin='gh/m1/state' AND "
                                  "source='mqtt' AND raw=CAST('{\"temperature\": 21.5,' AS BLOB)"),
                         1);
        /* A huge payload keeps only its first max_payload_bytes. */
        ck_assert_int_eq(sql(&fx, "SELECT length(raw) FROM rejects_view WHERE reason='too_long'"), 64);
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM rejects_view WHERE reason='not_utf8' AND raw=x'fffe000180'"), 1);
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM rejects_view WHERE reason='not_finite' AND raw=CAST('NaN' AS BLOB)"), 1);
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM rejects_view WHERE reason='not_finite' AND raw=CAST('1e999' AS BLOB)"), 1);
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM rejects_view WHERE reason='topic_mismatch' AND origin='old/m1/temperature'"), 1);

        assert_log_contains(&fx.d, "Rejected message on 'gh/m1/state'");
        ck_assert_msg(tl_notify_wait(&fx.d.notify, "1 message, 6 rejects", 3000), "status: %s", fx.d.notify.log);
        ck_assert_int_eq(kill(fx.d.pid, 0), 0);

        /* 10 reject lines per 10 s: a burst of 7 more leaves 3 unlogged, then silence. The count
         * of those is not lost when no later reject comes to report it: it is logged at stop. */
        fx_pub(&fx, "pub-bad");
        for (int i = 0; i < 7; i++)
                tl_pub_text(&fx.p, "gh/m2/temperature", "warm");
        tl_pub_close(&fx.p);
        ck_assert_int_eq(wait_sql(&fx, "SELECT count(*) FROM rejects_view", 13, 5000), 13);
        ck_assert_uint_eq(log_count(&fx.d, "Rejected message on '"), 10);
        fx_stop(&fx);
        assert_log_contains(&fx.d, "Suppressed 3 messages about rejected MQTT messages.");
}
END_TEST

/* ---- the topic is the identity: a payload cannot speak for another sensor ---- */

/* A node allowed (by a broker ACL, say) to publish on gh/attacker/state names "victim" in its
 * payloads. Its message is a sensor_mismatch reject, logged under the topic's sensor; the
 * victim's real reading with the same timestamp, published after it, is stored, not dropped as
 * a duplicate. Rejects from topics whose sensor level is no clean id (a space, quotes, beyond
 * ASCII) carry no SENSOR_ID= at all. */
START_TEST(test_sensor_mismatch) {
        Fx fx;
        static const char forged[] = "{\"sensor\": \"victim\", \"ts\": 1732200000123, \"temperature\": 99}";

        fx_start(&fx, NULL);
        fx_pub(&fx, "pub-mismatch");
        tl_pub_text(&fx.p, "gh/attacker/state", forged);
        tl_pub_text(&fx.p, "gh/victim/state", "{\"sensor\": \"victim\", \"ts\": 1732200000123, \"temperature\": 20}");
        tl_pub_text(&fx.p, "gh/attacker/state", "{\"ts\": 1732200000123, \"temperature\": 30}");
        tl_pub_text(&fx.p, "gh/g h/state", "{");
        tl_pub_text(&fx.p, "gh/g\"h/state", "{");
        tl_pub_text(&fx.p, "gh/g'h/state", "{");
        tl_pub_text(&fx.p, "gh/g\\h/state", "{");
        tl_pub_text(&fx.p, "gh/g\xc3\xa9/state", "{");
        tl_pub_close(&fx.p);

        ck_assert_int_eq(wait_sql(&fx, "SELECT count(*) FROM rejects_view", 6, 5000), 6);
        ck_assert_int_eq(wait_sql(&fx, "SELECT count(*) FROM readings_view", 2, 5000), 2);
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM readings_view WHERE sensor='victim' AND value=20 AND "
                                  "origin='gh/victim/state'"),
                         1);
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM readings_view WHERE sensor='attacker' AND value=30"), 1);
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM readings_view WHERE value=99"), 0);
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM rejects_view WHERE reason='sensor_mismatch' AND "
                                  "origin='gh/attacker/state' AND source='mqtt' AND raw=CAST('{\"sensor\": \"victim\", "
                                  "\"ts\": 1732200000123, \"temperature\": 99}' AS BLOB)"),
                         1);
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM rejects_view WHERE reason='bad_json'"), 5);

        assert_log_contains(&fx.d, "Rejected message on 'gh/attacker/state' (sensor_mismatch");
        assert_log_contains(&fx.d, "SENSOR_ID=attacker]");
        /* the only reject with a clean id: none of the others names one in the field */
        ck_assert_uint_eq(log_count(&fx.d, "SENSOR_ID="), 1);
        assert_log_lacks(&fx.d, "SENSOR_ID=victim");
        ck_assert_uint_eq(log_count(&fx.d, "Rejected message on 'gh/g"), 5);
        fx_stop(&fx);
}
END_TEST

/* ---- store.max_names: a node with a counter in its topic ---- */

/* A node publishing each message on a new topic (node/0, node/1, ...) cannot grow the name
 * tables past store.max_names (20 here), while a known sensor keeps being stored: the node's
 * messages past the cap are too_many_names rejects with their payloads, under the origin
 * "(too many names)", and the full table is logged once. */
START_TEST(test_name_cap_counter_topic) {
        const int n = 300;
        Fx fx;

        fx_start(&fx, &(FxConf){ .topics = "[ { \"filter\": \"gh/+sensor/state\", \"qos\": 1, \"format\": \"json\" },"
                                           "  { \"filter\": \"node/#\", \"qos\": 1, \"format\": \"json\" } ]",
                                 .store = ", \"max_names\": 20" });

        fx_pub(&fx, "pub-counter");
        for (int i = 0; i < n; i++) {
                char topic[32], known[128], node[128];

                snprintf(known, sizeof(known), "{\"sensor\": \"known\", \"ts\": %" PRId64 ", \"temperature\": 20}",
                         (int64_t) 1732200000000 + i);
                snprintf(node, sizeof(node), "{\"sensor\": \"node\", \"ts\": %" PRId64 ", \"temperature\": %d}",
                         (int64_t) 1732200000000 + i, i);
                snprintf(topic, sizeof(topic), "node/%d", i);
                tl_pub_text(&fx.p, "gh/known/state", known);
                tl_pub_text(&fx.p, topic, node);
        }
        tl_pub_close(&fx.p);

        /* gh/known/state and node/0..node/18 are the 20 origins; node/19 on are refused. */
        ck_assert_int_eq(wait_sql(&fx, "SELECT count(*) FROM readings_view WHERE sensor = 'known'", n, 20000), n);
        ck_assert_int_eq(wait_sql(&fx, "SELECT count(*) FROM rejects_view WHERE reason = 'too_many_names'", n - 19, 20000),
                         n - 19);
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM readings_view WHERE sensor = 'node'"), 19);
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM origins"), 21);
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM origins WHERE name = '(too many names)'"), 1);
        ck_assert_int_le(sql(&fx, "SELECT count(*) FROM sensors"), 20);
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM rejects_view WHERE reason = 'too_many_names' AND "
                                  "origin = '(too many names)' AND CAST(raw AS TEXT) = "
                                  "'{\"sensor\": \"node\", \"ts\": 1732200000299, \"temperature\": 299}'"),
                         1);
        /* counted in the status line */
        ck_assert_msg(tl_notify_wait(&fx.d.notify, "281 kept out by store.max_names", 3000), "status: %s", fx.d.notify.log);
        assert_log_contains(&fx.d, "holds 20 origins (store.max_names is 20)");
        assert_log_contains(&fx.d, "Rejected message on 'node/19' (too_many_names");
        ck_assert_uint_eq(log_count(&fx.d, "(store.max_names is 20)"), 1);
        fx_stop(&fx);
}
END_TEST

/* ---- a huge message: with MQTT 5 the broker is told not to send it at all ---- */

START_TEST(test_oversized) {
        Fx fx;
        _cleanup_free_ char *extra = NULL, *huge = NULL;
        char over[1000];
        const size_t huge_size = 300 * 1024;

        ck_assert_int_ge(asprintf(&extra, "%s \"max_payload_bytes\": 64,", protocols[_i]), 0);
        fx_start(&fx, &(FxConf){ .mqtt = extra });

        memset(over, '1', sizeof(over));
        huge = malloc(huge_size);
        ck_assert(huge);
        memset(huge, '2', huge_size);
        fx_pub(&fx, "pub-huge");
        tl_pub_send(&fx.p, "gh/h1/temperature", over, sizeof(over), 1, false);  /* over 64, a small packet */
        tl_pub_send(&fx.p, "gh/h1/temperature", huge, huge_size, 1, false);     /* far over */
        tl_pub_text(&fx.p, "gh/h1/temperature", "7.5");
        tl_pub_close(&fx.p);

        ck_assert_int_eq(wait_sql(&fx, "SELECT count(*) FROM readings_view WHERE sensor='h1' AND value=7.5", 1, 5000), 1);
        /* The message just over the limit is a too_long reject either way (its first 64 bytes
         * kept). The huge one reaches the daemon, and libmosquitto's memory, only with MQTT
         * 3.1.1; an MQTT 5 broker drops it for exceeding our Maximum Packet Size. */
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM rejects_view WHERE reason='too_long' AND length(raw)=64 AND "
                                  "raw=CAST('1111111111111111111111111111111111111111111111111111111111111111' AS BLOB)"),
                         1);
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM rejects_view WHERE reason='too_long'"), (_i == 0 ? 2 : 1));
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM rejects_view"), (_i == 0 ? 2 : 1));
        /* The connection was not disturbed by it. */
        assert_log_lacks(&fx.d, "Connection to broker");
        fx_stop(&fx);
}
END_TEST

/* ---- retained messages without a timestamp are old values, not readings taken now ---- */

START_TEST(test_retained) {
        Fx fx;
        static const char with_ts[] = "{\"temperature\": 3, \"ts\": 1732200000999}";

        fx_init(&fx);
        tl_broker_start(&fx.b, fx.dir, NULL);
        fx_pub(&fx, "pub-retain");
        tl_pub_send(&fx.p, "gh/r1/temperature", "12", 2, 1, true);
        tl_pub_send(&fx.p, "gh/r2/state", with_ts, strlen(with_ts), 1, true);

        fx_config(&fx, NULL);
        fx_daemon_ready(&fx, NULL);
        tl_pub_text(&fx.p, "gh/r3/temperature", "13");
        tl_pub_close(&fx.p);
        ck_assert_int_eq(wait_sql(&fx, "SELECT count(*) FROM readings_view WHERE sensor='r3'", 1, 5000), 1);
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM readings_view WHERE sensor='r2' AND ts=1732200000999"), 1);
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM readings_view WHERE sensor='r1'"), 0);
        ck_assert_msg(tl_notify_wait(&fx.d.notify, "1 retained skipped", 3000), "status: %s", fx.d.notify.log);
        fx_stop(&fx);
}
END_TEST

/* ---- host names: looked up without blocking the loop ---- */

/* This program re-executed as "test-mqtt --in-namespace HOSTS RESOLV MODE PROGRAM ARGS...":
 * PROGRAM runs in a private mount namespace where the files HOSTS and RESOLV are /etc/hosts and
 * /etc/resolv.conf. MODE "net" adds a private network namespace with only loopback up, so no
 * DNS server answers (nothing listens on 127.0.0.1:53); "silent-dns" also binds 127.0.0.1:53
 * to a UDP socket nobody reads, which PROGRAM inherits: a DNS server that never answers.
 * "host" keeps the network. Needs root, as these tests do anyway. */
static int in_namespace(int argc, char **argv) {
        bool net, silent;

        if (argc < 6)
                return 127;
        net = !streq(argv[4], "host");
        silent = streq(argv[4], "silent-dns");
        if (unshare(CLONE_NEWNS | (net ? CLONE_NEWNET : 0)) < 0) {
                perror("unshare");
                return 127;
        }
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 || mount(argv[2], "/etc/hosts", NULL, MS_BIND, NULL) < 0 ||
            mount(argv[3], "/etc/resolv.conf", NULL, MS_BIND, NULL) < 0) {
                perror("mount");
                return 127;
        }
        if (net) {
                struct ifreq ifr = { 0 };
                int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

                snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
                if (fd < 0 || ioctl(fd, SIOCGIFFLAGS, &ifr) < 0) {
                        perror("SIOCGIFFLAGS");
                        return 127;
                }
                ifr.ifr_flags |= IFF_UP;
                if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0) {
                        perror("SIOCSIFFLAGS");
                        return 127;
                }
                close(fd);
        }
        if (silent) {
                struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(53),
                                         .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
                int fd = socket(AF_INET, SOCK_DGRAM, 0); /* not close-on-exec: PROGRAM keeps it */

                if (fd < 0 || bind(fd, (struct sockaddr *) &a, sizeof(a)) < 0) {
                        perror("bind 127.0.0.1:53");
                        return 127;
                }
        }
        execv(argv[5], argv + 5);
        perror("execv");
        return 127;
}

/* Starts the daemon like tl_daemon_start(), but through in_namespace(). env: extra, may be NULL. */
static void start_daemon_in_namespace(TlDaemon *d, const char *config, const char *hosts, const char *resolv,
                                      const char *mode, char *const env[]) {
        const char *dir = tl_tmpdir();
        static char self[PATH_MAX], notify_env[400];
        char hosts_path[300], resolv_path[300];
        char *envs[8];
        size_t n = 0;
        ssize_t k;

        k = readlink("/proc/self/exe", self, sizeof(self) - 1);
        ck_assert(k > 0);
        self[k] = 0;
        memset(d, 0, sizeof(*d));
        snprintf(d->config, sizeof(d->config), "%s", tl_write_file(dir, "config.json", config));
        snprintf(d->log, sizeof(d->log), "%s/daemon.log", dir);
        snprintf(hosts_path, sizeof(hosts_path), "%s", tl_write_file(dir, "hosts", hosts));
        snprintf(resolv_path, sizeof(resolv_path), "%s", tl_write_file(dir, "resolv.conf", resolv));
        tl_notify_open(&d->notify, dir);
        snprintf(notify_env, sizeof(notify_env), "NOTIFY_SOCKET=%s", d->notify.path);
        envs[n++] = notify_env;
        for (size_t i = 0; env && env[i] && n < ELEMENTSOF(envs) - 1; i++)
                envs[n++] = env[i];
        envs[n] = NULL;
        d->pid = tl_spawn((char *[]){ self, "--in-namespace", hosts_path, resolv_path, (char *) mode, SC_BINARY,
                                      "--config", d->config, NULL },
                          envs, d->log, d->log);
}

/* Reads the daemon's datagrams (into d->notify.log) until it exits or timeout_ms pass. Returns
 * its exit status (or -ETIMEDOUT); *ret_pings gets how many WATCHDOG=1 came and *ret_gap_ms the
 * longest time between two of them, or from the start to the first: how long the loop was
 * held up at most. */
static int watch_daemon(TlDaemon *d, int timeout_ms, unsigned *ret_pings, int64_t *ret_gap_ms) {
        int64_t start = tl_now_ms(), deadline = start + timeout_ms, last = start, gap = 0;
        unsigned pings = 0;
        int r;

        for (;;) {
                struct pollfd pfd = { .fd = d->notify.fd, .events = POLLIN };
                char buf[4096];
                ssize_t k;

                (void) poll(&pfd, 1, 10);
                while ((k = recv(d->notify.fd, buf, sizeof(buf) - 1, MSG_DONTWAIT)) > 0) {
                        buf[k] = 0;
                        if (strstr(buf, "WATCHDOG=1")) {
                                int64_t now = tl_now_ms();

                                gap = MAX(gap, now - last);
                                last = now;
                                pings++;
                        }
                        if (d->notify.len + (size_t) k + 2 < sizeof(d->notify.log)) {
                                memcpy(d->notify.log + d->notify.len, buf, (size_t) k);
                                d->notify.len += (size_t) k;
                                d->notify.log[d->notify.len++] = '\n';
                                d->notify.log[d->notify.len] = 0;
                        }
                }
                r = tl_wait(d->pid, 0);
                if (r != -ETIMEDOUT) {
                        d->pid = 0;
                        tl_notify_drain(&d->notify);
                        break;
                }
                if (tl_now_ms() >= deadline)
                        break;
        }
        *ret_pings = pings;
        *ret_gap_ms = gap;
        return r;
}

/* 0: the name resolves (from /etc/hosts, through the lookup on the loop);
 * 1: a DNS server that never answers: the attempt times out after 5 s, then the offline budget
 *    (6 s) ends it, and the loop stays responsive all along (the watchdog pings every 100 ms);
 * 2: the same, stopped with SIGTERM: at once;
 * 3: no DNS server at all: failed lookups are failed attempts, retried within the budget. */
START_TEST(test_host_name) {
        Fx fx;
        static const char hosts[] = "127.0.0.1 localhost\n127.0.0.1 broker.test\n";
        static const char no_hosts[] = "127.0.0.1 localhost\n";
        static const char resolv[] = "nameserver 127.0.0.1\n";
        char *watchdog_env[] = { "WATCHDOG_USEC=200000", NULL };
        unsigned pings;
        int64_t gap, t0;
        int r;

        fx_init(&fx);
        switch (_i) {
        case 0:
                tl_broker_start(&fx.b, fx.dir, NULL);
                fx_config(&fx, &(FxConf){ .host = "broker.test" });
                start_daemon_in_namespace(&fx.d, fx.config, hosts, resolv, "host", NULL);
                expect_ready(&fx.d);
                fx_pass_one(&fx, "pub-name", "gh/n1/temperature", "3.5", "n1");
                assert_log_contains(&fx.d, "Resolved 'broker.test' to 127.0.0.1 (1 address).");
                ck_assert_msg(tl_notify_wait(&fx.d.notify, "connected to broker.test:", 3000), "status: %s", fx.d.notify.log);
                fx_stop(&fx);
                break;
        case 1:
                fx_config(&fx, &(FxConf){ .host = "broker.test", .port = 1883, .mqtt = "\"max_offline\": 6," });
                start_daemon_in_namespace(&fx.d, fx.config, no_hosts, resolv, "silent-dns", watchdog_env);
                t0 = tl_now_ms();
                r = watch_daemon(&fx.d, 12000, &pings, &gap);
                if (r != 11)
                        dump_log(&fx.d);
                ck_assert_int_eq(r, 11);
                ck_assert_int_ge(tl_now_ms() - t0, 5800);
                ck_assert_int_le(tl_now_ms() - t0, 8000);
                ck_assert_msg(pings >= 40 && gap < 600, "%u watchdog pings, longest gap %" PRId64 " ms", pings, gap);
                assert_log_contains(&fx.d, "Failed to connect to broker broker.test:1883 (attempt 1): no answer to the "
                                           "lookup of 'broker.test' within 5.0s; retrying in");
                assert_log_contains(&fx.d, "broker broker.test:1883 unreachable for 6.0s (last error: the current attempt is "
                                           "waiting for the host name lookup)");
                break;
        case 2:
                fx_config(&fx, &(FxConf){ .host = "broker.test", .port = 1883 });
                start_daemon_in_namespace(&fx.d, fx.config, no_hosts, resolv, "silent-dns", NULL);
                ck_assert(tl_notify_wait(&fx.d.notify, "connecting to broker.test:1883", 3000));
                t0 = tl_now_ms();
                stop_daemon_ok(&fx.d);
                ck_assert_int_le(tl_now_ms() - t0, 1000);
                break;
        default:
                fx_config(&fx, &(FxConf){ .host = "broker.test", .port = 1883, .mqtt = "\"max_offline\": 1," });
                start_daemon_in_namespace(&fx.d, fx.config, no_hosts, resolv, "net", watchdog_env);
                r = watch_daemon(&fx.d, 5000, &pings, &gap);
                if (r != 11)
                        dump_log(&fx.d);
                ck_assert_int_eq(r, 11);
                assert_log_contains(&fx.d, "Failed to connect to broker broker.test:1883 (attempt 1): host name lookup failed: ");
                assert_log_contains(&fx.d, "broker broker.test:1883 unreachable for 1.0s (last error: ");
                ck_assert_msg(gap < 600, "longest watchdog gap %" PRId64 " ms", gap);
                break;
        }
}
END_TEST

/* ---- a stalled loop: housekeeping catches up once, not once per missed second ---- */

START_TEST(test_stall) {
        Fx fx;

        fx_start(&fx, NULL);

        /* The whole process held up for 3.5 s, shorter than the keepalive (5 s). */
        ck_assert_int_eq(kill(fx.d.pid, SIGSTOP), 0);
        tl_sleep_ms(3500);
        ck_assert_int_eq(kill(fx.d.pid, SIGCONT), 0);

        /* Once this message is stored, the loop has run whatever was due after the stall. */
        fx_pass_one(&fx, "pub-stall", "gh/st1/temperature", "4", "st1");
        if (log_count(&fx.d, "Housekeeping ran ") != 1)
                dump_log(&fx.d);
        ck_assert_uint_eq(log_count(&fx.d, "Housekeeping ran "), 1);
        assert_log_lacks(&fx.d, "Connection to broker");
        fx_stop(&fx);
}
END_TEST

/* ---- out of memory while parsing is a failure of the task, not a reject ---- */

#if !defined(__SANITIZE_ADDRESS__)
/* A malloc() that fails for one size (from $SC_TEST_FAIL_MALLOC), preloaded into the daemon.
 * The sanitizer runtime owns malloc in a sanitizer build, hence no such test there. */
static const char failmalloc_c[] =
        "#include <errno.h>\n"
        "#include <stdlib.h>\n"
        "#include <unistd.h>\n"
        "extern void *__libc_malloc(size_t n);\n"
        "void *malloc(size_t n) {\n"
        "        static size_t fail = (size_t) -1;\n"
        "        static const char *armed;\n"
        "        if (fail == (size_t) -1) {\n"
        "                const char *e = getenv(\"SC_TEST_FAIL_MALLOC\");\n"
        "                armed = getenv(\"SC_TEST_FAIL_MALLOC_ARMED\");\n"
        "                fail = e ? strtoul(e, NULL, 10) : 0;\n"
        "        }\n"
        "        if (fail != 0 && n == fail && (!armed || access(armed, F_OK) == 0)) {\n"
        "                errno = ENOMEM;\n"
        "                return NULL;\n"
        "        }\n"
        "        return __libc_malloc(n);\n"
        "}\n";

START_TEST(test_parse_enomem) {
        Fx fx;
        _cleanup_free_ char *so = NULL, *preload = NULL, *payload = NULL;
        _cleanup_free_ char *armed = NULL, *armed_env = NULL;
        char *env[4];

        fx_init(&fx);
        ck_assert_int_ge(asprintf(&so, "%s/failmalloc.so", fx.dir), 0);
        tl_run_ok((char *[]){ "cc", "-shared", "-fPIC", "-O1", "-o", so,
                           (char *) tl_write_file(fx.dir, "failmalloc.c", failmalloc_c), NULL });
        ck_assert_int_ge(asprintf(&preload, "LD_PRELOAD=%s", so), 0);
        env[0] = preload;
        /* A value of 200 digits: the parser copies numbers over 128 bytes to the heap, 201 bytes
         * with the NUL. The trailing newline (dropped by the parser) keeps libmosquitto's copy
         * of the payload (202 bytes) from being that size too. */
        env[1] = "SC_TEST_FAIL_MALLOC=201";
        /* Armed once the daemon is ready: its start (SQLite preparing the schema's statements)
         * may make an allocation of that size too, which is not what this test is about. */
        ck_assert_int_ge(asprintf(&armed, "%s/armed", fx.dir), 0);
        ck_assert_int_ge(asprintf(&armed_env, "SC_TEST_FAIL_MALLOC_ARMED=%s", armed), 0);
        env[2] = armed_env;
        env[3] = NULL;
        payload = calloc(1, 202);
        ck_assert(payload);
        memset(payload, '0', 200);
        payload[0] = '1';
        payload[200] = '\n';

        tl_broker_start(&fx.b, fx.dir, NULL);
        fx_config(&fx, NULL);
        fx_daemon_ready(&fx, env);
        tl_write_file(fx.dir, "armed", "");
        fx_pub(&fx, "pub-enomem");
        tl_pub_text(&fx.p, "gh/nm1/temperature", payload);
        tl_pub_close(&fx.p);

        ck_assert_int_eq(tl_daemon_wait(&fx.d, 5000), 11);
        assert_log_contains(&fx.d, "Failed to parse a message on 'gh/nm1/temperature'");
        assert_log_contains(&fx.d, "Cannot allocate memory");
        ck_assert_int_eq(sql(&fx, "SELECT count(*) FROM rejects_view"), 0);
        fx_stop(&fx);
}
END_TEST
#endif

static Suite *mqtt_suite(void) {
        Suite *s = suite_create("mqtt");
        TCase *tc;

        tc = tcase_create("ingest");
        tcase_set_timeout(tc, 30);
        tcase_add_loop_test(tc, test_ingest, 0, 2);
        tcase_add_loop_test(tc, test_persistent_session, 0, 2);
        tcase_add_loop_test(tc, test_stale_subscriptions, 0, 2);
        tcase_add_loop_test(tc, test_refused_filter_forgotten, 0, 2);
        tcase_add_test(tc, test_unsubscribe_dropped);
        tcase_add_test(tc, test_retained);
        tcase_add_test(tc, test_malformed);
        tcase_add_test(tc, test_sensor_mismatch);
        tcase_add_test(tc, test_name_cap_counter_topic);
        tcase_add_loop_test(tc, test_oversized, 0, 2);
#if !defined(__SANITIZE_ADDRESS__)
        tcase_add_test(tc, test_parse_enomem);
#endif
        suite_add_tcase(s, tc);

        tc = tcase_create("handshake");
        tcase_set_timeout(tc, 30);
        tcase_add_loop_test(tc, test_ready_after_suback, 0, 2);
        tcase_add_test(tc, test_connack_refused);
        tcase_add_loop_test(tc, test_tls, 0, 4);
        tcase_add_loop_test(tc, test_password, 0, 4);
        suite_add_tcase(s, tc);

        tc = tcase_create("outages");
        tcase_set_timeout(tc, 90);
        tcase_add_test(tc, test_broker_restart);
        tcase_add_test(tc, test_short_outages_in_a_row);
        tcase_add_test(tc, test_max_offline);
        tcase_add_test(tc, test_sigterm_while_offline);
        tcase_add_test(tc, test_silent_broker);
        tcase_add_test(tc, test_stall);
        tcase_add_loop_test(tc, test_host_name, 0, 4);
        suite_add_tcase(s, tc);

        tc = tcase_create("qos2");
        tcase_set_timeout(tc, 60);
        tcase_add_loop_test(tc, test_qos2_orderly_stops, 0, 2);
        suite_add_tcase(s, tc);

        return s;
}

int main(int argc, char **argv) {
        if (argc > 1 && streq(argv[1], "--in-namespace"))
                return in_namespace(argc, argv);
        return tl_run_suite(mqtt_suite());
}
