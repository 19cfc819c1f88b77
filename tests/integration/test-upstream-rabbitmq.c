/* SPDX-License-Identifier: MIT */
/* Upstream forwarding into a clusterable engine: the real daemon between a loopback mosquitto and a private RabbitMQ node (its MQTT plugin), a consumer counting every key, the node restarted while readings flow. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <inttypes.h>
#include <mosquitto.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "collector/macro.h"
#include "testlib.h"

/* The input broker keeps whatever the daemon has not taken yet (see test-upstream.c). */
#define IN_BROKER_CONF "max_queued_messages 0\n"
/* What the daemon may have in flight, and how many readings a backlog message holds. */
#define MAX_INFLIGHT 20
#define BATCH_SIZE 20
/* What RabbitMQ may have delivered to the consumer and not seen acknowledged (mqtt.prefetch):
 * requeued and delivered again when the node stops. */
#define RABBIT_PREFETCH 10
/* A node boots in about 14 s on an idle machine; a busy one with a sanitizer build beside it
 * takes longer. The bound is for a node that will never come. */
#define RABBIT_BOOT_MS 120000

/* The test's directories, made by the runner process before it forks the test and removed by
 * it afterwards: a failing assertion ends the forked test with _exit(), which runs no exit
 * handlers (so tl_tmpdir()'s would not remove a node's data). 0: the store, 1: the input broker,
 * 2: the daemon, 3: the node, 4: a daemon speaking MQTT 5. */
static char base_dir[128];
static char dirs[5][160];

/* ---- a private RabbitMQ node ---- */

typedef struct Rabbit {
        pid_t pid;             /* beam.smp: the start script and erl exec into it */
        pid_t epmd;            /* our own epmd on a private port, so nothing is shared */
        int amqp_port, mqtt_port, epmd_port, dist_port, ctl_port;
        char dir[160];         /* owned by the rabbitmq user: the node runs as that user */
        char node[64];
        uid_t uid;
        gid_t gid;
        TlNotify notify;       /* the node says READY=1 here (it speaks sd_notify) */
        int64_t boot_ms;       /* how long the last start took */
} Rabbit;

/* A port below 55000: the node's distribution port must leave room above it for what Erlang
 * derives from it. */
static int low_free_port(void) {
        for (;;) {
                int p = tl_free_port();
                if (p < 55000)
                        return p;
        }
}

/* Runs argv as the rabbitmq user with the node's environment (and extra, may be NULL), output
 * into dir/name.log. The child dies with us (parent-death signal set after the user change,
 * which clears it). Returns its pid. */
static pid_t rabbit_exec(Rabbit *r, char *const argv[], const char *extra, const char *log_name) {
        char e[16][320], log_path[400];
        char *envp[17];
        size_t n = 0;
        pid_t parent = getpid(), pid;

        snprintf(e[n++], sizeof(e[0]), "PATH=/usr/sbin:/usr/bin:/sbin:/bin");
        snprintf(e[n++], sizeof(e[0]), "HOME=%s", r->dir);
        snprintf(e[n++], sizeof(e[0]), "LANG=C.UTF-8");
        snprintf(e[n++], sizeof(e[0]), "RABBITMQ_CONFIG_FILE=%s/rabbitmq", r->dir);
        snprintf(e[n++], sizeof(e[0]), "RABBITMQ_ENABLED_PLUGINS_FILE=%s/enabled_plugins", r->dir);
        snprintf(e[n++], sizeof(e[0]), "RABBITMQ_MNESIA_BASE=%s/mnesia", r->dir);
        snprintf(e[n++], sizeof(e[0]), "RABBITMQ_LOG_BASE=%s/log", r->dir);
        snprintf(e[n++], sizeof(e[0]), "RABBITMQ_FEATURE_FLAGS_FILE=%s/feature_flags", r->dir);
        snprintf(e[n++], sizeof(e[0]), "RABBITMQ_NODENAME=%s", r->node);
        snprintf(e[n++], sizeof(e[0]), "RABBITMQ_DIST_PORT=%d", r->dist_port);
        snprintf(e[n++], sizeof(e[0]), "RABBITMQ_CTL_DIST_PORT_MIN=%d", r->ctl_port);
        snprintf(e[n++], sizeof(e[0]), "RABBITMQ_CTL_DIST_PORT_MAX=%d", r->ctl_port);
        snprintf(e[n++], sizeof(e[0]), "ERL_EPMD_PORT=%d", r->epmd_port);
        if (extra) /* a cut environment entry would be a wrong one */
                ck_assert_int_lt(snprintf(e[n++], sizeof(e[0]), "%s", extra), (int) sizeof(e[0]));
        for (size_t i = 0; i < n; i++)
                envp[i] = e[i];
        envp[n] = NULL;
        snprintf(log_path, sizeof(log_path), "%s/%s.log", r->dir, log_name);

        fflush(NULL);
        pid = fork();
        ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0) {
                int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
                sigset_t all;

                if (fd < 0 || null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(fd, STDOUT_FILENO) < 0 ||
                    dup2(fd, STDERR_FILENO) < 0 || chdir(r->dir) < 0 || setgroups(0, NULL) < 0 ||
                    setgid(r->gid) < 0 || setuid(r->uid) < 0)
                        _exit(127);
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(127);
                sigemptyset(&all);
                sigprocmask(SIG_SETMASK, &all, NULL);
                execve(argv[0], argv, envp);
                _exit(127);
        }
        return pid;
}

static char *rabbit_log(Rabbit *r, const char *name) {
        char path[400];
        char *s;

        snprintf(path, sizeof(path), "%s/%s.log", r->dir, name);
        s = tl_read_file(path);
        return s ? s : strdup("(no log)");
}

/* True once a QoS 1 message goes through the MQTT listener (the same check the daemon's first
 * connection makes). */
static bool rabbit_answers(Rabbit *r) {
        char port[16];
        char *argv[] = { "mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-q", "1", "-i", "probe",
                         "-t", "probe", "-m", "x", NULL };

        snprintf(port, sizeof(port), "%d", r->mqtt_port);
        return tl_run(argv, NULL, NULL, 10000) == 0;
}

/* Starts the node; the first call makes the directory, picks the ports and starts epmd, later
 * calls start the same node again (same ports, same data: its durable queues survive). Waits
 * for READY=1 and for the MQTT listener to take a message. */
static void rabbit_start(Rabbit *r) {
        char *argv[] = { "/usr/lib/rabbitmq/bin/rabbitmq-server", NULL };
        char notify_env[400];
        int64_t start;

        if (!r->dir[0]) {
                const struct passwd *pw = getpwnam("rabbitmq");
                char conf[512], port[16];
                char *epmd_argv[] = { "epmd", "-port", port, NULL };

                ck_assert_msg(pw, "no rabbitmq user: is rabbitmq-server installed (scripts/bootstrap)?");
                ck_assert_msg(access(argv[0], X_OK) == 0, "no %s: run scripts/bootstrap", argv[0]);
                r->uid = pw->pw_uid;
                r->gid = pw->pw_gid;
                snprintf(r->dir, sizeof(r->dir), "%s", dirs[3]);
                r->amqp_port = tl_free_port();
                r->mqtt_port = tl_free_port();
                r->epmd_port = tl_free_port();
                r->dist_port = low_free_port();
                r->ctl_port = tl_free_port();
                snprintf(r->node, sizeof(r->node), "sc-test-%d@localhost", r->dist_port);
                snprintf(conf, sizeof(conf),
                         "listeners.tcp.default = 127.0.0.1:%d\n"
                         "mqtt.listeners.tcp.default = 127.0.0.1:%d\n"
                         "mqtt.allow_anonymous = true\n"
                         "mqtt.prefetch = %d\n"
                         "log.console = false\n",
                         r->amqp_port, r->mqtt_port, RABBIT_PREFETCH);
                tl_notify_open(&r->notify, r->dir);
                /* The node runs as rabbitmq: its directory is its own, the socket writable. */
                ck_assert(chown(r->dir, r->uid, r->gid) == 0);
                ck_assert(chown(r->notify.path, r->uid, r->gid) == 0);
                ck_assert(chown(tl_write_file(r->dir, "rabbitmq.conf", conf), r->uid, r->gid) == 0);
                ck_assert(chown(tl_write_file(r->dir, "enabled_plugins", "[rabbitmq_mqtt].\n"), r->uid, r->gid) == 0);
                snprintf(port, sizeof(port), "%d", r->epmd_port);
                r->epmd = tl_spawn(epmd_argv, NULL, NULL, NULL);
        }
        r->notify.len = 0;
        r->notify.log[0] = 0;
        snprintf(notify_env, sizeof(notify_env), "NOTIFY_SOCKET=%s", r->notify.path);
        start = tl_now_ms();
        r->pid = rabbit_exec(r, argv, notify_env, "server");
        while (!tl_notify_wait(&r->notify, "READY=1", 200)) {
                int status = tl_wait(r->pid, 0);

                ck_assert_msg(status == -ETIMEDOUT, "RabbitMQ exited with %d before it was ready:\n%s", status,
                              rabbit_log(r, "server"));
                ck_assert_msg(tl_now_ms() - start < RABBIT_BOOT_MS, "RabbitMQ not ready after %d ms:\n%s",
                              RABBIT_BOOT_MS, rabbit_log(r, "server"));
        }
        while (!rabbit_answers(r))
                ck_assert_msg(tl_now_ms() - start < RABBIT_BOOT_MS, "RabbitMQ's MQTT listener does not answer");
        r->boot_ms = tl_now_ms() - start;
        fprintf(stderr, "rabbitmq: ready in %" PRId64 " ms (mqtt port %d)\n", r->boot_ms, r->mqtt_port);
}

/* Stops the node the orderly way (rabbitmqctl stop) and waits for its process; SIGKILL if it
 * does not go. The node's epmd stays for the next start unless with_epmd. */
static void rabbit_stop(Rabbit *r, bool with_epmd) {
        char *argv[] = { "/usr/lib/rabbitmq/bin/rabbitmqctl", "stop", NULL };
        int64_t start = tl_now_ms();
        pid_t ctl;
        int status;

        if (r->pid > 0) {
                ctl = rabbit_exec(r, argv, NULL, "ctl");
                status = tl_wait(ctl, 60000);
                if (status == -ETIMEDOUT) {
                        kill(ctl, SIGKILL);
                        (void) tl_wait(ctl, 5000);
                }
                status = tl_wait(r->pid, 30000);
                if (status == -ETIMEDOUT) {
                        kill(r->pid, SIGKILL);
                        (void) tl_wait(r->pid, 5000);
                }
                ck_assert_msg(status == 0, "RabbitMQ stopped with %d:\n%s", status, rabbit_log(r, "ctl"));
                r->pid = 0;
                fprintf(stderr, "rabbitmq: stopped in %" PRId64 " ms\n", tl_now_ms() - start);
        }
        if (with_epmd && r->epmd > 0) {
                tl_kill(r->epmd, SIGTERM);
                r->epmd = 0;
                tl_notify_close(&r->notify);
        }
}

/* ---- a consumer on RabbitMQ: testlib's (tl_consumer_*), shared with test-upstream.c ----
 * A persistent session (clean session off, QoS 1): RabbitMQ keeps it in a durable queue, so what
 * it took while the consumer was away, or before the node restarted, still comes. RabbitMQ sends
 * retained messages only to subscriptions without wildcards: this one sees the status live. */

/* ---- input publishers: testlib's (tl_pub_*), shared with test-upstream.c ---- */

/* Publishes readings first..last and waits until the input broker has them all. */
static void pub_readings(int port, int first, int last) {
        TlPub p;

        ck_assert(tl_pub_open(&p, port));
        tl_pub_readings(&p, first, last);
        tl_pub_close(&p);
}

typedef struct Stream {
        pid_t pid;
        int fd;                /* the last reading published comes back here at the end */
        int first;
} Stream;

static volatile sig_atomic_t stream_stop;

static void stream_on_term(int sig) {
        (void) sig;
        stream_stop = 1;
}

/* A child that publishes readings first, first+1, ... one every interval_ms until SIGTERM,
 * then waits for the input broker's acknowledgements and writes the last one it published to
 * the pipe. A process of its own, so readings keep coming while this one stops and starts the
 * node. */
static void stream_start(Stream *s, int port, int first, int interval_ms) {
        int p[2];
        pid_t parent = getpid();

        ck_assert(pipe2(p, O_CLOEXEC) == 0);
        s->first = first;
        fflush(NULL);
        s->pid = fork();
        ck_assert(s->pid >= 0);
        if (s->pid == 0) {
                TlPub pub;
                int i = first;
                int64_t next = tl_now_ms();

                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(127);
                signal(SIGTERM, stream_on_term);
                close(p[0]);
                if (!tl_pub_open(&pub, port))
                        _exit(2);
                while (!stream_stop && i < TL_CONSUMER_SEQ_MAX - 1000) {
                        if (!tl_pub_reading(&pub, i++))
                                _exit(3);
                        next += interval_ms;
                        while (!stream_stop && tl_now_ms() < next)
                                (void) mosquitto_loop(pub.mosq, (int) MAX(1, next - tl_now_ms()), 1);
                }
                if (!tl_pub_flush(&pub, 20000))
                        _exit(4);
                tl_pub_close(&pub);
                i--;
                if (write(p[1], &i, sizeof(i)) != sizeof(i))
                        _exit(5);
                _exit(0); /* not exit(): the test's exit handlers belong to the test */
        }
        close(p[1]);
        s->fd = p[0];
}

/* Stops the stream; returns the last reading it published. */
static int stream_stop_wait(Stream *s) {
        int last = 0;

        ck_assert_int_eq(kill(s->pid, SIGTERM), 0);
        ck_assert_int_eq(read(s->fd, &last, sizeof(last)), (ssize_t) sizeof(last));
        ck_assert_int_eq(tl_wait(s->pid, 10000), 0);
        close(s->fd);
        return last;
}

/* ---- the daemon ---- */

static bool wait_stored(const char *dir, int64_t n, int timeout_ms) {
        char path[512];

        snprintf(path, sizeof(path), "%s/readings.db", dir);
        return tl_wait_sql_at_least(path, "SELECT count(*) FROM readings", n, timeout_ms);
}

/* Every reading of the store arrived, each key (gateway, store, seq) at least once, the store id
 * the one the store was created with. */
static void assert_all_arrived(TlConsumer *c, const char *dir, int64_t n, int timeout_ms) {
        char path[512], sql[160];

        snprintf(path, sizeof(path), "%s/readings.db", dir);
        ck_assert_int_eq(tl_sql_int(path, "SELECT count(*) FROM readings"), n);
        ck_assert_int_eq(tl_sql_int(path, "SELECT max(id) FROM readings"), n); /* ids 1..n, none skipped */
        ck_assert_msg(tl_consumer_wait_all(c, n, timeout_ms), "only %" PRIu64 " of %" PRId64 " arrived", tl_consumer_have(c, n, NULL), n);
        ck_assert(!c->other_store);
        ck_assert(!c->other_gateway);
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM meta WHERE key = 'store_id' AND value = '%s'", c->store_id);
        ck_assert_int_eq(tl_sql_int(path, sql), 1);
        ck_assert_uint_le(c->readings, (uint64_t) TL_CONSUMER_SEQ_MAX);
}

typedef struct LogWait {
        TlDaemon *d;
        const char *needle;
} LogWait;

static bool log_has(void *userdata) {
        LogWait *w = userdata;
        _cleanup_free_ char *log = tl_daemon_log(w->d);

        return log && strstr(log, w->needle);
}

/* ---- the test ---- */

/* MQTT 3.1.1 and QoS 1 into RabbitMQ: every reading arrives, once; then the node restarts
 * (orderly stop, start on the same data) while readings keep flowing: every reading still
 * arrives, repeats bounded by what can have been in flight. */
START_TEST(test_rabbitmq_forwarding_and_restart) {
        const char *dir = dirs[0];
        TlBroker in = { 0 };
        Rabbit *r = calloc(1, sizeof(Rabbit));
        TlConsumer *c = calloc(1, sizeof(TlConsumer));
        _cleanup_free_ char *config = NULL;
        uint64_t dups = 0;
        Stream s;
        TlDaemon d;
        int last, bound;

        ck_assert(r && c);
        tl_broker_start(&in, dirs[1], IN_BROKER_CONF);
        rabbit_start(r);
        tl_consumer_open(c, r->mqtt_port, "upstream-consumer", "gw1");
        ck_assert_int_ge(asprintf(&config,
                                  "{\n"
                                  "  \"serial\": { \"enabled\": false },\n"
                                  "  \"mqtt\": { \"host\": \"127.0.0.1\", \"port\": %d, \"client_id\": \"sc-up-in\",\n"
                                  "            \"topics\": [ { \"filter\": \"gh/+sensor/data\", \"qos\": 1 } ] },\n"
                                  "  \"store\": { \"path\": \"%s/readings.db\", \"commit_interval_ms\": 10 },\n"
                                  "  \"upstream\": { \"enabled\": true, \"host\": \"127.0.0.1\", \"port\": %d,\n"
                                  "                \"gateway_id\": \"gw1\", \"keepalive\": 5, \"protocol\": \"3.1.1\",\n"
                                  "                \"qos\": 1, \"max_inflight\": %d, \"batch_size\": %d }\n"
                                  "}\n",
                                  in.port, dir, r->mqtt_port, MAX_INFLIGHT, BATCH_SIZE),
                         0);
        tl_daemon_start_ready(&d, dirs[2], config, NULL, NULL, 10000);
        ck_assert_msg(tl_notify_wait(&d.notify, "upstream: connected to 127.0.0.1:", 10000), "%s", d.notify.log);

        /* Undisturbed: every reading once, live, and the status message went through. */
        pub_readings(in.port, 1, 300);
        ck_assert(wait_stored(dir, 300, 10000));
        assert_all_arrived(c, dir, 300, 15000);
        tl_consumer_have(c, 300, &dups);
        ck_assert_uint_eq(dups, 0);
        ck_assert_uint_eq(c->historical, 0);
        ck_assert_str_eq(c->status, "online");

        /* RabbitMQ 3.10 speaks no MQTT 5: it closes the connection without a CONNACK. For the
         * daemon that is an outage (retried with backoff, never exit 14), and nothing of it
         * reaches the consumer. */
        {
                _cleanup_free_ char *config5 = NULL;
                char *args[] = { "--log-level", "debug", NULL };
                TlDaemon d5;

                ck_assert_int_ge(asprintf(&config5,
                                          "{\n"
                                          "  \"serial\": { \"enabled\": false },\n"
                                          "  \"mqtt\": { \"host\": \"127.0.0.1\", \"port\": %d, \"client_id\": \"sc-up-in5\",\n"
                                          "            \"topics\": [ { \"filter\": \"v5/+sensor/data\", \"qos\": 1 } ] },\n"
                                          "  \"store\": { \"path\": \"%s/readings.db\" },\n"
                                          "  \"upstream\": { \"enabled\": true, \"host\": \"127.0.0.1\", \"port\": %d,\n"
                                          "                \"gateway_id\": \"gw5\", \"protocol\": \"5\", \"qos\": 1 }\n"
                                          "}\n",
                                          in.port, dirs[4], r->mqtt_port),
                                 0);
                tl_daemon_start_ready(&d5, dirs[4], config5, args, NULL, 10000);
                ck_assert_msg(tl_notify_wait(&d5.notify, "upstream: offline from 127.0.0.1:", 10000), "%s", d5.notify.log);
                ck_assert_msg(tl_wait_until(log_has, &(LogWait) { &d5, "(attempt 2): The connection was lost" }, 15000),
                              "%s", tl_daemon_log(&d5));
                ck_assert_int_eq(tl_wait(d5.pid, 0), -ETIMEDOUT); /* still running */
                ck_assert_int_eq(kill(d5.pid, SIGTERM), 0);
                ck_assert_int_eq(tl_daemon_wait(&d5, 10000), 0);
                tl_consumer_run(c, 100);
                ck_assert(!c->other_gateway);
        }

        /* qos 2: RabbitMQ answers a QoS 2 PUBLISH with a PUBACK, which libmosquitto takes as a
         * protocol error. The daemon rides it out (an outage, the reading stays in the store) and
         * says what to do. Its store is the MQTT 5 daemon's (empty, and a gateway of its own). */
        {
                _cleanup_free_ char *config2 = NULL;
                TlDaemon d2;

                ck_assert_int_ge(asprintf(&config2,
                                          "{\n"
                                          "  \"serial\": { \"enabled\": false },\n"
                                          "  \"mqtt\": { \"host\": \"127.0.0.1\", \"port\": %d, \"client_id\": \"sc-up-in2\",\n"
                                          "            \"topics\": [ { \"filter\": \"q2/+sensor/data\", \"qos\": 1 } ] },\n"
                                          "  \"store\": { \"path\": \"%s/readings.db\" },\n"
                                          "  \"upstream\": { \"enabled\": true, \"host\": \"127.0.0.1\", \"port\": %d,\n"
                                          "                \"gateway_id\": \"gw2\", \"protocol\": \"3.1.1\", \"qos\": 2 }\n"
                                          "}\n",
                                          in.port, dirs[4], r->mqtt_port),
                                 0);
                tl_daemon_start_ready(&d2, dirs[4], config2, NULL, NULL, 10000);
                ck_assert_msg(tl_notify_wait(&d2.notify, "upstream: connected to 127.0.0.1:", 10000), "%s", d2.notify.log);
                tl_mqtt_publish_once(in.port, "q2/s01/data", "{\"temp\": 1.5}");
                ck_assert_msg(tl_wait_until(log_has, &(LogWait) { &d2, "it probably answers QoS 2 as QoS 1 (RabbitMQ does)" },
                                            15000),
                              "%s", tl_daemon_log(&d2));
                ck_assert_msg(tl_wait_until(log_has, &(LogWait) { &d2, "protocol error in answer to QoS 2 (set qos 1" }, 5000),
                              "%s", tl_daemon_log(&d2));
                ck_assert_int_eq(tl_wait(d2.pid, 0), -ETIMEDOUT); /* still running: an outage, not a failure */
                ck_assert_int_eq(kill(d2.pid, SIGTERM), 0);
                ck_assert_int_eq(tl_daemon_wait(&d2, 10000), 0);
                tl_consumer_run(c, 100);
                ck_assert(!c->other_gateway);
        }

        /* The node stops (orderly: it keeps its durable queues) and starts again while a reading
         * comes every 10 ms. */
        stream_start(&s, in.port, 301, 10);
        ck_assert_msg(tl_consumer_wait_more(c, 50, 15000), "readings do not flow into RabbitMQ");
        rabbit_stop(r, false);
        ck_assert_msg(tl_notify_wait(&d.notify, "upstream: offline from", 15000), "%s", d.notify.log);
        rabbit_start(r);
        ck_assert_msg(tl_notify_wait(&d.notify, "upstream: connected to 127.0.0.1:", 30000), "%s", d.notify.log);
        ck_assert_msg(tl_consumer_wait_more(c, 50, 30000), "readings do not flow after the restart; %s", tl_daemon_log(&d));
        last = stream_stop_wait(&s);
        ck_assert_int_gt(last, 300);
        ck_assert_msg(wait_stored(dir, last, 20000), "%s", tl_daemon_log(&d));
        assert_all_arrived(c, dir, last, 60000);
        tl_consumer_have(c, last, &dups);
        /* Ours that were in flight when the node went (MAX_INFLIGHT messages) and what RabbitMQ
         * had delivered to the consumer unacknowledged (RABBIT_PREFETCH), a backlog message at
         * most BATCH_SIZE readings each. */
        bound = (MAX_INFLIGHT + RABBIT_PREFETCH) * BATCH_SIZE;
        fprintf(stderr, "rabbitmq restart: %d readings, %" PRIu64 " repeats (bound %d), %" PRIu64 " historical messages\n",
                last, dups, bound, c->historical);
        if (dups > (uint64_t) bound)
                for (int i = 1; i <= last; i++)
                        if (c->count[i] > 1)
                                fprintf(stderr, "seq %d x%u\n", i, c->count[i]);
        ck_assert_msg(dups <= (uint64_t) bound, "%" PRIu64 " repeats; %s", dups, tl_daemon_log(&d));
        ck_assert_uint_gt(c->historical, 0); /* what came while it was away went as backlog */

        /* An orderly stop says offline. */
        ck_assert_int_eq(kill(d.pid, SIGTERM), 0);
        ck_assert_int_eq(tl_daemon_wait(&d, 10000), 0);
        for (int64_t end = tl_now_ms() + 5000; strcmp(c->status, "offline") != 0 && tl_now_ms() < end;)
                tl_consumer_run(c, 20);
        ck_assert_str_eq(c->status, "offline");
        tl_consumer_close(c);
        free(c);
        rabbit_stop(r, true);
        free(r);
        tl_broker_stop(&in);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("upstream-rabbitmq");
        TCase *tc = tcase_create("e2e");

        tcase_set_timeout(tc, 400);
        tcase_add_test(tc, test_rabbitmq_forwarding_and_restart);
        suite_add_tcase(s, tc);
        return s;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) st;
        (void) flag;
        (void) ftw;
        (void) remove(path);
        return 0;
}

int main(void) {
        static const char *const names[] = { "store", "input-broker", "daemon", "rabbitmq", "daemon-v5" };
        const char *tmp = getenv("TMPDIR");
        int r;

        /* Whatever the test started (the node runs as another user, epmd, the daemon, brokers)
         * dies with it (parent-death signal); made our children then, they are reaped here
         * rather than left to a PID 1 that may not reap. */
        if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) {
                perror("PR_SET_CHILD_SUBREAPER"); /* no ck_assert() outside a test */
                return 1;
        }
        /* No ck_assert() and no testlib helper that uses it out here: not in a test. */
        snprintf(base_dir, sizeof(base_dir), "%s/sc-test.XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(base_dir) || chmod(base_dir, 0711) < 0) { /* the node's user passes through */
                perror(base_dir);
                return 1;
        }
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                snprintf(dirs[i], sizeof(dirs[i]), "%s/%s", base_dir, names[i]);
                if (mkdir(dirs[i], 0700) < 0) {
                        perror(dirs[i]);
                        return 1;
                }
        }
        r = tl_run_suite(suite());
        for (int64_t end = tl_now_ms() + 10000; tl_now_ms() < end;) {
                pid_t pid = waitpid(-1, NULL, WNOHANG);

                if (pid < 0)
                        break; /* no children left */
                if (pid == 0)
                        tl_sleep_ms(10);
        }
        if (!getenv("SC_TEST_KEEP"))
                (void) nftw(base_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        return r;
}
