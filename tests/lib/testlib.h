/* SPDX-License-Identifier: MIT */
/* Test helpers that run real components: child processes, a mosquitto broker, socat pty pairs,
 * an sd_notify socket, the daemon itself, and a store task on a real SQLite file for unit tests.
 * Every child dies with the test (PR_SET_PDEATHSIG) and every temporary directory is removed at
 * exit, also when an assertion fails. */
#pragma once

#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* A fresh directory under $TMPDIR (or /tmp), removed at exit. Owned by testlib. */
const char *tl_tmpdir(void);

/* Writes text to dir/name and returns the path (owned by testlib). */
const char *tl_write_file(const char *dir, const char *name, const char *text);
/* Reads a whole file; NULL if missing. Caller frees. */
char *tl_read_file(const char *path);

/* Forks and execs argv with extra environment (NULL-terminated "K=V" list, may be NULL);
 * stdout and stderr go to the given files (NULL: inherit). Returns the pid. */
pid_t tl_spawn(char *const argv[], char *const env[], const char *out_path, const char *err_path);
/* Waits for pid: returns the exit status, 128+signal when killed, -ETIMEDOUT on timeout. */
int tl_wait(pid_t pid, int timeout_ms);
/* Sends sig and waits for the process to be gone (SIGKILL after 5 s). */
void tl_kill(pid_t pid, int sig);

/* Polls cond(userdata) every 10 ms until true or timeout; returns the last value. */
bool tl_wait_until(bool (*cond)(void *userdata), void *userdata, int timeout_ms);
/* Milliseconds on the monotonic clock. */
int64_t tl_now_ms(void);
void tl_sleep_ms(int ms);

/* A free TCP port on 127.0.0.1. */
int tl_free_port(void);

typedef struct TlBroker {
        pid_t pid;
        int port;
        char dir[256];
} TlBroker;
/* Starts mosquitto on a free loopback port (or b->port when already set, for a restart) with
 * persistence in dir and extra config lines appended; waits until it answers. */
void tl_broker_start(TlBroker *b, const char *dir, const char *extra_conf);
void tl_broker_stop(TlBroker *b);

typedef struct TlPty {
        pid_t pid;
        char dir[256];
        char link[300];       /* the daemon's end, e.g. DIR/dev */
        char device[400];     /* the same, spelled so libserialport accepts it: /dev/../..DIR/dev */
        char sim[300];        /* the test's end */
} TlPty;
/* Starts socat with a raw pty pair; waits for both links. */
void tl_pty_start(TlPty *p, const char *dir);
void tl_pty_stop(TlPty *p);
/* Writes bytes into the test's end (opens and closes it each time). */
void tl_pty_write(TlPty *p, const void *data, size_t size);
/* Writes what fits now without blocking (a reader that stopped reading, or exited, leaves the
 * pty's buffer full); returns the bytes written. */
size_t tl_pty_try_write(TlPty *p, const void *data, size_t size);

typedef struct TlNotify {
        int fd;
        char path[300];
        char log[65536];      /* every datagram received so far, each followed by '\n' */
        size_t len;
} TlNotify;
void tl_notify_open(TlNotify *n, const char *dir);
void tl_notify_close(TlNotify *n);
/* Reads datagrams until one contains needle or timeout; true if found (in any so far). */
bool tl_notify_wait(TlNotify *n, const char *needle, int timeout_ms);
/* Reads what is pending without waiting. */
void tl_notify_drain(TlNotify *n);

typedef struct TlDaemon {
        pid_t pid;
        TlNotify notify;
        char config[300];
        char log[300];        /* its stderr */
} TlDaemon;
/* Writes config_json to dir/config.json and starts the daemon with NOTIFY_SOCKET set (and the
 * pty shim preloaded), plus extra arguments (NULL-terminated) and extra environment. */
void tl_daemon_start(TlDaemon *d, const char *dir, const char *config_json, char *const extra_args[],
                     char *const extra_env[]);
/* Waits for exit; returns its status as tl_wait(). */
int tl_daemon_wait(TlDaemon *d, int timeout_ms);
/* Its stderr so far (caller frees). */
char *tl_daemon_log(TlDaemon *d);

/* Runs a command to completion (argv), capturing stdout+stderr into *ret_output (caller frees,
 * may be NULL); returns the exit status like tl_wait(). */
int tl_run(char *const argv[], char *const env[], char **ret_output, int timeout_ms);

/* Runs argv to completion (20 s at most); fails the test unless it exits 0, with its output on
 * stderr. */
void tl_run_ok(char *const argv[]);

/* A certificate authority of the test's own, made with openssl: DIR/NAME.key and DIR/NAME.crt
 * (self-signed, CN=NAME, P-256, valid two days). Fails the test if openssl does. */
void tl_tls_make_ca(const char *dir, const char *name);
/* A broker's certificate signed by the CA DIR/CA.crt (tl_tls_make_ca()): DIR/server.key and
 * DIR/server.crt, CN=127.0.0.1, with san as its subjectAltName (e.g. "IP:127.0.0.1"). Fails the
 * test if openssl does. */
void tl_tls_make_server_cert(const char *dir, const char *ca, const char *san);

/* One integer from a SQL query on an SQLite file (read-only); -1 on error. */
int64_t tl_sql_int(const char *db_path, const char *sql);

/* Runs every test of the suite (forking, as Check does by default), frees it, and returns the
 * process exit status: 0 when all passed. The tests' directories (tl_tmpdir()) live in one
 * directory per suite, removed when the suite ends even after a failed assertion (kept with
 * SC_TEST_KEEP set). */
int tl_run_suite(Suite *s);

/* Asserts that PRAGMA integrity_check of the SQLite file says "ok": through a read-write
 * connection, which also recovers a hot WAL the way the next daemon would, or read-only (a
 * full disk may have room for nothing else). */
void tl_assert_integrity(const char *db_path, bool read_only);

/* Waits until the integer the query returns is at least want; true if it got there. */
bool tl_wait_sql_at_least(const char *db_path, const char *sql, int64_t want, int timeout_ms);

/* tl_daemon_start(), then waits up to timeout_ms for READY=1; fails the test with the daemon's
 * log when it does not come. */
void tl_daemon_start_ready(TlDaemon *d, const char *dir, const char *config_json, char *const extra_args[],
                           char *const extra_env[], int timeout_ms);

/* Waits until the integer the query returns equals want; true if it got there. */
bool tl_wait_sql_equals(const char *db_path, const char *sql, int64_t want, int timeout_ms);

/* Waits up to timeout_ms until the query on db_path returns exactly want (at_least: want or more);
 * on timeout fails the test with the last value and d's log. d only supplies the log. */
void tl_daemon_expect_sql(TlDaemon *d, const char *db_path, const char *sql, int64_t want, bool at_least,
                          int timeout_ms);
/* True when d's stderr so far contains needle. */
bool tl_daemon_log_has(TlDaemon *d, const char *needle);
/* Waits up to timeout_ms until d's stderr contains needle; true if it came. */
bool tl_daemon_wait_log(TlDaemon *d, const char *needle, int timeout_ms);
/* Waits up to timeout_ms until d's stderr contains needle; on timeout fails the test with the log. */
void tl_daemon_expect_log(TlDaemon *d, const char *needle, int timeout_ms);
/* Waits up to timeout_ms for READY=1 from an already started d; on timeout fails the test with
 * the log (tl_daemon_start_ready() for start and wait in one). */
void tl_daemon_expect_ready(TlDaemon *d, int timeout_ms);
/* Sends SIGTERM to d and waits up to timeout_ms for it to exit; fails the test, with the log,
 * unless it exits 0. */
void tl_daemon_stop_ok(TlDaemon *d, int timeout_ms);

/* Asserts that every socket the process pid holds is close-on-exec (per /proc/PID/fdinfo);
 * returns how many sockets there are. */
unsigned tl_assert_sockets_cloexec(pid_t pid);

/* Publishes one message with QoS 1 to the broker on 127.0.0.1:port through mosquitto_pub and
 * asserts that it exits 0 (it waits for the PUBACK, so the broker has the message). */
void tl_mqtt_publish_once(int port, const char *topic, const char *payload);

/* Writes into buf (size bytes; fails the test when it does not fit) the configuration the store
 * tests share: JSON frames from the serial device, MQTT off, the store at db_path committing
 * every commit_interval_ms or commit_max_rows rows, a stop timeout of 5 s. */
void tl_serial_store_config(char *buf, size_t size, const char *device, const char *db_path, int commit_interval_ms,
                            int commit_max_rows);

/* ---- a consumer of upstream forwarding on a central broker (docs/UPSTREAM.md) ---- */

#define TL_CONSUMER_SEQ_MAX 60000
#define TL_CONSUMER_LATENCIES_MAX 4096

struct mosquitto;

/* ---- an input publisher ---- */

/* A publisher to a broker on loopback, for what tests send to the daemon's input: readings in
 * bulk (tl_pub_reading(), tl_pub_readings()) or any message (tl_pub_publish(), tl_pub_send(),
 * tl_pub_text()). Fields are the test's to read; mosq is there for a test that drives
 * libmosquitto itself (a publisher that rides out broker restarts, say). */
typedef struct TlPub {
        struct mosquitto *mosq;
        bool connected;               /* CONNACK 0 came, and no disconnect since */
        int published, acked;         /* acked: completed (QoS 1: PUBACK, QoS 2: PUBCOMP, QoS 0: written) */
} TlPub;

/* Connects p (zeroed here) as client_id (NULL: one libmosquitto makes up) with clean_session to
 * the broker on 127.0.0.1:port. Returns false if it is not connected within 5 s. No
 * ck_assert(): usable in a child process of a test. client_id is copied. */
bool tl_pub_open_as(TlPub *p, int port, const char *client_id, bool clean_session);
/* tl_pub_open_as(p, port, NULL, true). */
bool tl_pub_open(TlPub *p, int port);
/* Publishes reading i: gh/sNN/data with NN = i % 30, {"temp": i.5, "ts": 1750000000000 + i}, the
 * sensor's own timestamp so that a reading is one row however often it comes. Returns false if
 * libmosquitto refused it. */
bool tl_pub_reading(TlPub *p, int i);
/* Queues size bytes of payload (borrowed; libmosquitto copies it) on topic with qos and retain,
 * without waiting for the broker. Returns false if libmosquitto refused it. */
bool tl_pub_publish(TlPub *p, const char *topic, const void *payload, size_t size, int qos, bool retain);
/* Waits up to timeout_ms until the broker acknowledged everything published; true if so. */
bool tl_pub_flush(TlPub *p, int timeout_ms);
/* tl_pub_publish(), then waits (5 s at most) until the broker acknowledged everything published;
 * fails the test otherwise. */
void tl_pub_send(TlPub *p, const char *topic, const void *payload, size_t size, int qos, bool retain);
/* tl_pub_send() of text (without its NUL) with QoS 1, not retained. */
void tl_pub_text(TlPub *p, const char *topic, const char *text);
/* Publishes readings first..last and waits (30 s at most) for the broker's acknowledgements;
 * fails the test otherwise. */
void tl_pub_readings(TlPub *p, int first, int last);
/* Disconnects and frees the client (not p); also after a failed tl_pub_open_as(), and a closed
 * or never opened (zeroed) p is fine. */
void tl_pub_close(TlPub *p);

/* Counts every key (seq) of the readings it receives on sensor-collector/GATEWAY/# and how often,
 * through a persistent session (clean session off, QoS 1, MQTT 3.1.1): what the broker takes
 * while the consumer is away, or before the broker restarts, still comes. Large (about 400 KiB):
 * allocate it. Fields are the test's to read. */
typedef struct TlConsumer {
        struct mosquitto *mosq;
        const char *gateway;          /* borrowed: only this gateway's topics, or NULL: all */
        int port;
        bool connected, subscribed;
        unsigned count[TL_CONSUMER_SEQ_MAX + 1];
        /* Repeats by the kind of message that brought them: the daemon sends a reading again
         * only from the backlog (historical), as a fresh client after a reconnect; a live
         * message that comes twice was delivered twice by the broker (its persisted session
         * for this consumer), not sent twice by the daemon. */
        uint64_t repeats_live, repeats_historical;
        unsigned char repeat_kind[TL_CONSUMER_SEQ_MAX + 1]; /* per seq: 1 a live message repeated it, 2 a backlog one */
        bool unsynced[TL_CONSUMER_SEQ_MAX + 1];   /* per seq: its flags said "unsynced" (last arrival) */
        uint64_t messages, historical, live, readings;
        char store_id[64];
        bool other_store;             /* a message from another store id (a bug here) */
        bool other_gateway;           /* a message from another gateway than the one asked for */
        int64_t first_live_ms, last_historical_ms; /* tl_now_ms() */
        char status[16];              /* last status seen (live, or retained where the broker sends it) */
        bool draining;                /* live latencies go to latencies[] while set */
        int64_t latencies[TL_CONSUMER_LATENCIES_MAX]; /* wall clock at arrival - ts of live readings, ms */
        size_t n_latencies;
        char live_text[5][512];       /* the live payloads of seq 1..4, as they came */
} TlConsumer;

/* Connects c (zeroed here) as client_id to the broker on 127.0.0.1:port and subscribes with QoS
 * 1 to sensor-collector/GATEWAY/# (gateway NULL: every gateway; when set, a payload of another
 * gateway fails the test); waits up to 10 s for the subscription and fails the test without it.
 * gateway is borrowed and must outlive c. */
void tl_consumer_open(TlConsumer *c, int port, const char *client_id, const char *gateway);
/* Runs the consumer for up to ms, reconnecting while the broker is away. */
void tl_consumer_run(TlConsumer *c, int ms);
/* Disconnects and frees the client (not c). */
void tl_consumer_close(TlConsumer *c);
/* How many of seq 1..n arrived at least once; *ret_dups (may be NULL) the repeats among them. */
uint64_t tl_consumer_have(const TlConsumer *c, int64_t n, uint64_t *ret_dups);
/* Runs the consumer until every seq 1..n arrived; true if so within timeout_ms. */
bool tl_consumer_wait_all(TlConsumer *c, int64_t n, int timeout_ms);
/* Runs the consumer until it counted at least readings readings in all; true if within timeout_ms. */
bool tl_consumer_wait_at_least(TlConsumer *c, uint64_t readings, int timeout_ms);
/* Runs the consumer until n more readings arrived than when called; true if within timeout_ms. */
bool tl_consumer_wait_more(TlConsumer *c, uint64_t n, int timeout_ms);
/* Prints (stderr) the repeated seqs of 1..n as ranges, with the kind of message that repeated them. */
void tl_consumer_print_repeats(const TlConsumer *c, int64_t n);

/* ---- a real store for unit tests (declared here so that testlib.h needs no project header) ---- */
typedef struct sd_event sd_event;
typedef struct StoreConfig StoreConfig;
typedef struct Store Store;
typedef struct Task Task;

/* Sets config for a store at DIR/readings.db (dir NULL: a fresh tl_tmpdir()), written into path
 * (path_size bytes, the caller's, which config->path then points to): synchronous NORMAL, a
 * commit every 10 s or 100000 rows, every other field zero. The caller may change fields after. */
void tl_store_config_init(StoreConfig *config, char *path, size_t path_size, const char *dir);
/* Creates the store task for config on event and starts it; fails the test when either returns
 * an error. The task and the store are the caller's (task_free()). */
void tl_store_task_start(sd_event *event, const StoreConfig *config, Task **ret_task, Store **ret_store);
/* Stops t, whatever task_stop() says, and frees it; returns NULL. t may be NULL. */
Task *tl_task_stop_free(Task *t);

typedef struct Config Config;
typedef struct IngestInput IngestInput;

/* Parses, through the real config parser, a configuration of one MQTT topic ("a/+sensor") and
 * "sensors": sensors_json; fails the test with the first error. Caller frees (config_free()). */
Config *tl_config_with_sensors(const char *sensors_json);

/* An ingest input that describes itself as the serial input does: task "serial", source serial,
 * origin field DEVICE, rejects named "frame from", suppressions "frames from" with the origin. */
extern const IngestInput tl_serial_ingest_input;
