/* SPDX-License-Identifier: MIT */
/* A libmosquitto client on the sd_event loop: its socket, housekeeping, reconnect timer and errors. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

/* mosquitto.h names its protocol numbers with macros that collide with config.h's MqttProtocol
 * enumerators: keep the numbers under other names, then drop the macros before config.h. Files
 * that run a client include this header instead of <mosquitto.h>. */
#include <mosquitto.h>
#include <mqtt_protocol.h>
enum {
        MQTT_LOOP_PROTOCOL_NUMBER_V311 = MQTT_PROTOCOL_V311,
        MQTT_LOOP_PROTOCOL_NUMBER_V5 = MQTT_PROTOCOL_V5,
};
#undef MQTT_PROTOCOL_V31
#undef MQTT_PROTOCOL_V311
#undef MQTT_PROTOCOL_V5

#include "collector/config.h"
#include "collector/host-lookup.h"

/* What the two MQTT tasks (the input, mqtt-task.c, and upstream forwarding, upstream-task.c)
 * share: one libmosquitto client driven from the loop. The loop owns the client, the io source
 * on its socket (EPOLLIN while the task wants input, EPOLLOUT while libmosquitto has output
 * queued), the housekeeping timer (keepalive, once a second), the reconnect timer, the lookup of
 * the broker's host name, and the first TLS and library errors of a connection attempt (which
 * libmosquitto only logs). The task keeps its connection state machine and its policy: when to
 * retry (backoff.h), what is fatal, what it subscribes or publishes, and every log line about
 * its broker. libmosquitto calls the task's own callbacks (on_connect, on_message, ...) with the
 * MqttLoop as their userdata: mqtt_loop_get_userdata() gives the task. */
typedef struct MqttLoop MqttLoop;

/* The task's side, called from the loop's event sources with the task's userdata. */
typedef struct MqttLoopOps {
        /* A connection is open or being opened: its socket is watched and keepalive runs. */
        bool (*has_connection)(void *userdata);
        /* Whether to read input now (EPOLLIN); NULL: always. A burst of reads stops as soon as
         * this says no (the input's back-pressure). */
        bool (*want_read)(void *userdata);
        /* The connection ended: libmosquitto's on_disconnect (rc a libmosquitto error, 0 for our
         * own DISCONNECT, or an MQTT 5 reason code from the broker; errno_value errno at the
         * time), or a socket libmosquitto closed without it (MOSQ_ERR_CONN_LOST, 0). */
        void (*disconnected)(void *userdata, int rc, int errno_value);
        /* The socket hung up or has an error (EPOLLHUP, EPOLLERR) that libmosquitto did not turn
         * into a disconnect: error is the socket's error as -errno (-ECONNRESET when none). NULL:
         * disconnected(MOSQ_ERR_CONN_LOST, 0). */
        void (*hangup)(void *userdata, int error);
        /* The io source could not be set up or changed: error is -errno. */
        void (*watch_failed)(void *userdata, int error);
        /* Once a second, before keepalive: the task's own deadlines (connect timeout, ...).
         * Returns true when it ended the connection (keepalive is skipped then). */
        bool (*tick)(void *userdata, uint64_t now);
        /* The timer armed with mqtt_loop_arm_reconnect() fired at usec. */
        void (*reconnect)(void *userdata, uint64_t usec);
        /* The lookup of the host name ended (see host_lookup_handler_t). */
        host_lookup_handler_t resolved;
} MqttLoopOps;

/* Prepares a loop on e (referenced) for the task called name (the TASK= of its log lines and the
 * prefix of its event sources' descriptions, e.g. "mqtt"), connecting to host (copied for the
 * lookup, which is only set up when host is a name: not an address, not "localhost"). ops is
 * borrowed (usually a static const) and userdata is handed to it. Initialises libmosquitto once
 * per process. No client yet: mqtt_loop_client_new(). Returns 0 or -errno. */
int mqtt_loop_new(sd_event *e, const char *name, const char *host, const MqttLoopOps *ops, void *userdata,
                  MqttLoop **ret);
/* Destroys the client, the sources and the lookup. Accepts NULL; returns NULL. */
MqttLoop *mqtt_loop_free(MqttLoop *l);

/* The userdata given to mqtt_loop_new(): for libmosquitto callbacks, whose userdata is the loop. */
void *mqtt_loop_get_userdata(MqttLoop *l);

/* A new client (close-on-exec, unthreaded, protocol set; on_disconnect and the log callback are
 * the loop's), replacing and destroying the one before, if any, and its io source. The client
 * belongs to the loop; the pointer in *ret (optional) is borrowed until the next call or
 * mqtt_loop_free(). The task sets its own callbacks on it. Returns 0, or -ENOMEM, -EINVAL
 * (client_id NULL with a persistent session) and the loop has no client. */
int mqtt_loop_client_new(MqttLoop *l, const char *client_id, bool clean_session, MqttProtocol protocol,
                         struct mosquitto **ret);
/* The current client, or NULL. Borrowed. */
struct mosquitto *mqtt_loop_client(MqttLoop *l);

/* TLS with the given files (cafile or capath, and a client certificate and key or NULL), and
 * what both tasks require of the broker: its certificate verified, for the name connected to,
 * with tls_version ("tlsv1.2", "tlsv1.3" or NULL: libmosquitto's default). The files are set
 * first (mqtt_loop_tls_files), then the verification (mqtt_loop_tls_verify), so that a caller
 * can tell the two failures apart. Each returns a libmosquitto code (MOSQ_ERR_SUCCESS or the
 * failure; errno is set where it applies): mqtt_loop_errno() and mqtt_loop_describe() read it. */
int mqtt_loop_tls_files(MqttLoop *l, const char *cafile, const char *capath, const char *certfile, const char *keyfile);
int mqtt_loop_tls_verify(MqttLoop *l, const char *tls_version);

/* A new connection attempt begins: the errors of the last one are forgotten and libmosquitto's
 * log (where its TLS reasons are) is listened to again (see mqtt_loop_quiet()). */
void mqtt_loop_begin_attempt(MqttLoop *l);
/* Whether host is a name that is looked up before each attempt (else it is connected to as is). */
bool mqtt_loop_needs_lookup(MqttLoop *l);
/* Starts the lookup for an attempt (as host_lookup_start(): pick is the attempt's number, from
 * 0). Its end comes to ops->resolved, never from within this call. Returns 0, or -errno with
 * *ret_cause (static text): the lookup did not start. */
int mqtt_loop_lookup_start(MqttLoop *l, unsigned pick, const char **ret_cause);
/* Connects the client without blocking to address (an address, or a name libmosquitto resolves
 * itself, blocking: with TLS it checks the certificate against that name) and port, with
 * keepalive in seconds; the new socket is close-on-exec. The task then sets its state and calls
 * mqtt_loop_sync_io() to watch it. Returns a libmosquitto code; *ret_errno is errno right after
 * the call (for MOSQ_ERR_ERRNO). A TLS handshake may already have failed within it on loopback:
 * mqtt_loop_tls_error(). */
int mqtt_loop_connect(MqttLoop *l, const char *address, uint16_t port, unsigned keepalive, int *ret_errno);

/* libmosquitto formats a log line for every packet whenever a log callback is set; it is only
 * needed for the causes of failed attempts. Stops listening, unless debugging. */
void mqtt_loop_quiet(MqttLoop *l);
/* The first OpenSSL error libmosquitto logged in this attempt, without its prefix, or "". */
const char *mqtt_loop_tls_error(MqttLoop *l);
/* The first other error it logged in this attempt ("Error: ..." for a TLS setup that failed), or "". */
const char *mqtt_loop_lib_error(MqttLoop *l);
/* Whether the broker's certificate did not verify in this attempt (a wrong CA, or a certificate
 * for another name): that never fixes itself. */
bool mqtt_loop_certificate_rejected(MqttLoop *l);

/* The task's on_message calls this for every message: a read that delivered one is followed by
 * another in the same loop iteration (up to 64 packets), since libmosquitto 2.0 reads only one
 * packet per call when nothing of QoS 1 or 2 is in flight. A task that never calls it reads once
 * per wake-up. */
void mqtt_loop_delivered(MqttLoop *l);

/* Makes the io source follow the client: its socket (a new one after every reconnect), EPOLLIN
 * while ops->want_read says so, EPOLLOUT while output is queued; no source while
 * ops->has_connection says no. Call after every libmosquitto call that may open or close the
 * socket or queue output. Returns 0 or -errno. */
int mqtt_loop_update_io(MqttLoop *l);
/* The same, for use where failures are the task's: a connection whose socket libmosquitto
 * closed without a disconnect (a failed TLS handshake) goes to ops->disconnected
 * (MOSQ_ERR_CONN_LOST), a failure of the source to ops->watch_failed. */
void mqtt_loop_sync_io(MqttLoop *l);
/* Whether the socket is watched now. */
bool mqtt_loop_watching(MqttLoop *l);

/* Starts the housekeeping timer: once a second (after a stall, one catch-up run, not one per
 * missed second), ops->tick, the lookup's check, then libmosquitto's keepalive while the socket
 * is watched. Returns 0 or -errno. */
int mqtt_loop_start(MqttLoop *l);
/* Arms the reconnect timer for usec (CLOCK_MONOTONIC): ops->reconnect. Returns 0 or -errno. */
int mqtt_loop_arm_reconnect(MqttLoop *l, uint64_t usec);
/* Ends the connection from our side without a word to the broker: shutdown() of the socket,
 * which stays with libmosquitto until the next attempt or the end. No-op without one. */
void mqtt_loop_shutdown(MqttLoop *l);
/* Stops watching the socket. */
void mqtt_loop_unwatch(MqttLoop *l);
/* No more housekeeping or reconnects (a stop or a failure): the timers are freed. The socket
 * stays watched (a DISCONNECT may still have to go out) until mqtt_loop_unwatch(). */
void mqtt_loop_halt(MqttLoop *l);

/* Pure helpers. */

/* A libmosquitto error as a negative errno (errno_value is errno right after the call, which
 * MOSQ_ERR_ERRNO refers to); 0 for MOSQ_ERR_SUCCESS, -EIO for anything without a closer match. */
int mqtt_loop_errno(int rc, int errno_value);
/* A readable reason for a libmosquitto error or, above 127, an MQTT 5 reason code (libmosquitto
 * hands DISCONNECT reason codes from the broker to on_disconnect in the same int). Static text,
 * or strerror()'s. */
const char *mqtt_loop_describe(int rc, int errno_value);
/* How long a connection attempt may wait for its answer (CONNACK, SUBACKs, the lookup): the
 * keepalive (seconds), clamped to 5..60 s. In microseconds. */
uint64_t mqtt_loop_connect_timeout_usec(unsigned keepalive);
