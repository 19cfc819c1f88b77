/* SPDX-License-Identifier: MIT */
/* The MQTT input: libmosquitto driven from the sd_event loop, subscribed messages into readings. */
#include <assert.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>

#include "collector/mqtt-loop.h"

#include "collector/backoff.h"
#include "collector/credential.h"
#include "collector/event-util.h"
#include "collector/fd-util.h"
#include "collector/frame.h"
#include "collector/host-lookup.h"
#include "collector/ingest.h"
#include "collector/log.h"
#include "collector/mqtt-connack.h"
#include "collector/mqtt-message.h"
#include "collector/mqtt-session.h"
#include "collector/mqtt-task.h"
#include "collector/exit-status.h"
#include "collector/time-util.h"

/* Reconnect backoff (backoff.h): the first retry after about 0.2 s, doubling up to 30 s, each
 * delay drawn from its upper half so that gateways behind one broker spread out. A connection
 * that lasted less than 10 s does not reset it: a broker (or a second client with our client
 * id) that drops us right after accepting must not be hammered. The last attempt of an outage
 * starts at least 2 s (or a quarter of max_offline) before the budget runs out, so that a
 * broker that is back gets a try before the task gives up. */
#define BACKOFF_INITIAL_USEC (200 * USEC_PER_MSEC)
#define BACKOFF_MAX_USEC (30 * USEC_PER_SEC)
#define STABLE_CONNECTION_USEC (10 * USEC_PER_SEC)
#define LAST_ATTEMPT_MARGIN_USEC (2 * USEC_PER_SEC)
/* How long stop() waits for the DISCONNECT packet to leave before closing regardless. */
#define STOP_FLUSH_USEC USEC_PER_SEC
/* Connections lost in a row with the UNSUBSCRIBE of stale filters unanswered before they are
 * forgotten: one loss may be a coincidence, two are the broker refusing them. */
#define UNSUB_LOST_MAX 2
/* What a PUBLISH packet may hold besides its payload: fixed header (5), topic (2 + up to
 * 65535), packet id (2), and properties (their length, 4, and 4 KiB for subscription
 * identifiers, message expiry, content type, user properties and the like). */
#define PUBLISH_OVERHEAD_MAX (5 + 2 + 65535 + 2 + 4 + 4096)

typedef enum MqttState {
        MQTT_STATE_IDLE,          /* not started */
        MQTT_STATE_RESOLVING,     /* waiting for the lookup of the broker's host name */
        MQTT_STATE_CONNECTING,    /* socket up or connecting, CONNECT queued, no CONNACK yet */
        MQTT_STATE_SUBSCRIBING,   /* CONNACK accepted, waiting for every SUBACK */
        MQTT_STATE_CONNECTED,     /* every subscription granted: running */
        MQTT_STATE_OFFLINE,       /* connection lost or refused, reconnect timer armed */
        MQTT_STATE_STOPPING,      /* DISCONNECT queued, waiting for it to leave */
        MQTT_STATE_STOPPED,
        MQTT_STATE_FAILED,
} MqttState;

typedef struct MqttTask {
        Task *task;                   /* borrowed: the task owns this struct */
        sd_event *event;              /* referenced */
        const MqttConfig *config;     /* borrowed, outlives the task */
        Store *store;                 /* borrowed, outlives the task: the session's filters */
        Ingest *ingest;               /* owned */
        MqttLoop *loop;               /* owned: the client on the loop */
        struct mosquitto *mosq;       /* borrowed from loop */
        MqttRouter *router;           /* owned: messages into frames */
        int *sub_mids;                /* message id of each SUBSCRIBE, 0 once granted */
        size_t n_subs_pending;
        int unsub_mid;                /* message id of the UNSUBSCRIBE of stale filters */
        bool unsub_pending;           /* its UNSUBACK not in yet */
        char *subs_key;               /* the store's meta key for the filters of our session */
        SessionFilters configured;    /* every filter of the configuration, once */
        SessionFilters remembered;    /* filters that may be subscribed in the broker's session */
        SessionFilters known_before;  /* remembered at CONNACK of a present session: granted earlier */
        SessionFilters stale;         /* filters of an earlier configuration being unsubscribed */
        unsigned unsub_lost;          /* connections lost in a row with their UNSUBACK outstanding */
        char *password;
        char *host_port;              /* "host:port" for messages */

        sd_event_source *offline_timer;   /* fires when offline for max_offline */
        sd_event_source *stop_timer;

        MqttState state;
        bool ever_connected;
        bool stop_pending;            /* stop() returned 1: report when the DISCONNECT is out */
        unsigned attempt;             /* connection attempts since the last success */
        BackoffPolicy backoff_policy; /* the budget is max_offline */
        Backoff backoff;              /* reconnects; its outage is the offline time */
        uint64_t attempt_usec;        /* CLOCK_MONOTONIC start of the current attempt */
        int last_error;               /* negative errno of the last connection failure */
        char last_cause[256];         /* and its text */

        uint64_t n_reconnects;
} MqttTask;

/* The QoS a topic is subscribed with: the configured one, but never above 1. libmosquitto 2.0
 * holds an incoming QoS 2 message in memory from its PUBREC until the broker's PUBREL and only
 * then hands it to on_message; the broker counts it as ours from the PUBREC on. A process that
 * disconnects in between (every orderly stop with a stream arriving) loses it: after the
 * restart the broker resends only the PUBREL, which libmosquitto answers without having the
 * message. libmosquitto gives no way to learn whether such messages are pending, so a stop
 * cannot wait for them. With QoS 1 a message is acknowledged only as on_message runs, the
 * store commits at stop, and what the broker redelivers is a duplicate the store drops when
 * the reading carries the sensor's timestamp. */
#define SUBSCRIBE_QOS_MAX 1

static int subscribe_qos(const MqttTopicConfig *t) {
        return MIN(t->qos, SUBSCRIBE_QOS_MAX);
}

static bool startswith(const char *s, const char *prefix) {
        return strncmp(s, prefix, strlen(prefix)) == 0;
}

static uint64_t now_usec(MqttTask *m) {
        return event_now_usec(m->event, CLOCK_MONOTONIC);
}

/* The Maximum Packet Size we ask of an MQTT 5 broker: a PUBLISH with a payload of max_payload
 * bytes and anything the broker may put around it (the longest topic MQTT allows, the packet
 * id, properties such as subscription identifiers) fits; a payload over max_payload is a
 * too_long reject as long as the packet fits too, and beyond that the broker drops it. */
static uint32_t max_packet_size(size_t max_payload) {
        uint64_t size = (uint64_t) max_payload + PUBLISH_OVERHEAD_MAX;

        return (uint32_t) MIN(size, (uint64_t) UINT32_MAX);
}

static bool state_has_connection(MqttState s) {
        return s == MQTT_STATE_CONNECTING || s == MQTT_STATE_SUBSCRIBING || s == MQTT_STATE_CONNECTED ||
               s == MQTT_STATE_STOPPING;
}

static void mqtt_fail(MqttTask *m, int error, const char *format, ...) _printf_(3, 4);

/* The task cannot go on: close everything and tell the supervisor (which logs the cause). */
static void mqtt_fail(MqttTask *m, int error, const char *format, ...) {
        va_list ap;

        if (m->state == MQTT_STATE_FAILED || m->state == MQTT_STATE_STOPPED)
                return;
        mqtt_loop_shutdown(m->loop);
        m->state = MQTT_STATE_FAILED;
        ingest_flush_log(m->ingest);
        mqtt_loop_unwatch(m->loop);
        mqtt_loop_halt(m->loop);
        m->offline_timer = sd_event_source_disable_unref(m->offline_timer);
        m->stop_timer = sd_event_source_disable_unref(m->stop_timer);

        va_start(ap, format);
        task_report_failurev(m->task, error, format, ap);
        va_end(ap);
}

static void mqtt_connection_closed(MqttTask *m, int rc, int errno_value);

/* The broker's certificate did not verify: a wrong CA or a certificate for another name never
 * fixes itself, so this is fatal, with what to check. */
static void mqtt_fail_certificate(MqttTask *m) {
        mqtt_fail(m, -EPROTO,
                  "TLS certificate of broker %s not accepted (check that cafile/capath holds the CA that signed "
                  "it and that it is issued for '%s'): %s",
                  m->host_port, m->config->host, mqtt_loop_tls_error(m->loop));
}

/* Offline for max_offline: the budget for riding out a broker outage is spent. */
static void mqtt_fail_unreachable(MqttTask *m, uint64_t now) {
        char text[32];
        const char *last;

        if (m->state == MQTT_STATE_RESOLVING)
                last = "the current attempt is waiting for the host name lookup";
        else if (m->state == MQTT_STATE_CONNECTING)
                last = "the current attempt got no CONNACK yet";
        else if (m->state == MQTT_STATE_SUBSCRIBING)
                last = "the current attempt got no SUBACK yet";
        else
                last = m->last_cause[0] ? m->last_cause : "none";
        mqtt_fail(m, m->last_error ? m->last_error : -ETIMEDOUT, "broker %s unreachable for %s (last error: %s)",
                  m->host_port, format_timespan(text, sizeof(text), backoff_outage_usec(&m->backoff, now)), last);
}

static int on_offline_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        MqttTask *m = userdata;
        (void) s;

        if (m->backoff.down_usec != 0 && m->state != MQTT_STATE_CONNECTED && m->state != MQTT_STATE_STOPPING)
                mqtt_fail_unreachable(m, usec);
        return 0;
}

/* Starts counting offline time (once per outage): the budget ends in on_offline_timer(). */
static int mqtt_begin_offline(MqttTask *m, uint64_t now) {
        if (m->backoff.down_usec != 0)
                return 0;
        backoff_down(&m->backoff, now);
        return event_arm_timer(m->event, &m->offline_timer, backoff_deadline(&m->backoff), 10 * USEC_PER_MSEC,
                               on_offline_timer, m, "mqtt-offline-budget");
}

static int mqtt_forget(MqttTask *m, const SessionFilters *drop);
static void format_filters(const SessionFilters *s, char *list, size_t size);

/* The connection is gone or could not be made: retry later with backoff, or fail when the broker
 * has been unreachable for max_offline. cause is a readable reason, error a negative errno. */
static void mqtt_connection_failed(MqttTask *m, int error, const char *cause) {
        char delay_text[32], why[256];
        uint64_t now = now_usec(m), when;
        bool was_connected = m->state == MQTT_STATE_CONNECTED;
        size_t n;
        int r;

        if (!state_has_connection(m->state) && m->state != MQTT_STATE_IDLE && m->state != MQTT_STATE_RESOLVING)
                return;

        /* libmosquitto's texts end in a full stop; ours continue after the cause. */
        snprintf(why, sizeof(why), "%s", cause);
        n = strlen(why);
        while (n > 0 && why[n - 1] == '.')
                why[--n] = 0;
        cause = why;

        /* Whatever libmosquitto thinks, this connection is over for us. The socket stays with
         * libmosquitto until the next attempt (which closes it) or mosquitto_destroy(). */
        mqtt_loop_shutdown(m->loop);
        /* A broker that drops the connection on our UNSUBSCRIBE of stale filters would do so on
         * every connection: after the second loss in a row with it unanswered, forget them. */
        if (m->state == MQTT_STATE_SUBSCRIBING && m->unsub_pending && ++m->unsub_lost >= UNSUB_LOST_MAX) {
                char list[512];

                format_filters(&m->stale, list, sizeof(list));
                log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", "mqtt"),
                                      "Broker %s closed the connection %u times in a row before answering the "
                                      "UNSUBSCRIBE of %s; forgetting them, ignoring.",
                                      m->host_port, m->unsub_lost, list);
                m->unsub_lost = 0;
                m->unsub_pending = false;
                if (mqtt_forget(m, &m->stale) < 0)
                        return;
        }
        m->state = MQTT_STATE_OFFLINE;
        mqtt_loop_unwatch(m->loop);
        m->last_error = error < 0 ? error : -ECONNRESET;
        snprintf(m->last_cause, sizeof(m->last_cause), "%s", cause);
        r = mqtt_begin_offline(m, now);
        if (r < 0) {
                mqtt_fail(m, r, "Failed to arm the offline timer");
                return;
        }
        if (was_connected)
                m->n_reconnects++;

        /* A long backoff (after a run of short connections) never pushes the next attempt past
         * the budget: the broker may be back by then, and giving up without trying would turn a
         * short outage into a restart. */
        if (backoff_next(&m->backoff, now, backoff_random(), &when) < 0) {
                mqtt_fail_unreachable(m, now);
                return;
        }
        if (was_connected)
                log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", "mqtt"),
                                      "Connection to broker %s lost: %s; reconnecting in %s.", m->host_port, cause,
                                      format_timespan(delay_text, sizeof(delay_text), when - now));
        else
                log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", "mqtt"),
                                      "Failed to connect to broker %s (attempt %u): %s; retrying in %s.", m->host_port,
                                      m->attempt, cause, format_timespan(delay_text, sizeof(delay_text), when - now));

        r = mqtt_loop_arm_reconnect(m->loop, when);
        if (r < 0) {
                mqtt_fail(m, r, "Failed to arm the reconnect timer");
                return;
        }

        char degraded[256];
        snprintf(degraded, sizeof(degraded), "reconnecting to %s (attempt %u)", m->host_port, m->attempt + 1);
        task_report_degraded(m->task, degraded);
        ingest_input_down(m->ingest, "broker unreachable");
}

/* Connects to address (the host name itself, or the address it resolved to). Failures are
 * handled (retry or task failure), never returned. */
static void mqtt_connect_to(MqttTask *m, const char *address) {
        const MqttConfig *c = m->config;
        const char *tls_error;
        int rc, saved_errno;

        /* For a host name libmosquitto would resolve it with a blocking getaddrinfo() here; the
         * task passes an address, or a name resolved a moment ago (TLS). The TCP connect and the
         * TLS handshake are non-blocking. */
        rc = mqtt_loop_connect(m->loop, address, c->port, c->keepalive, &saved_errno);

        switch (rc) {
        case MOSQ_ERR_SUCCESS:
                m->state = MQTT_STATE_CONNECTING;
                mqtt_loop_sync_io(m->loop);
                return;
        case MOSQ_ERR_ERRNO:
        case MOSQ_ERR_EAI:
        case MOSQ_ERR_CONN_LOST:
        case MOSQ_ERR_NO_CONN:
        case MOSQ_ERR_LOOKUP:
                m->state = MQTT_STATE_CONNECTING;
                mqtt_connection_failed(m, mqtt_loop_errno(rc, saved_errno), mqtt_loop_describe(rc, saved_errno));
                return;
        case MOSQ_ERR_TLS:
                /* On loopback the handshake may run (and fail) right inside the connect call. A
                 * certificate that does not verify, or a TLS context that cannot be set up from
                 * the configured files, never fixes itself; anything else is retried. */
                tls_error = mqtt_loop_tls_error(m->loop);
                if (mqtt_loop_certificate_rejected(m->loop))
                        mqtt_fail_certificate(m);
                else if (startswith(mqtt_loop_lib_error(m->loop), "Error: "))
                        mqtt_fail(m, -EPROTO, "TLS setup for broker %s failed: %s%s%s", m->host_port,
                                  mqtt_loop_lib_error(m->loop) + 7, tls_error[0] ? " " : "", tls_error);
                else {
                        m->state = MQTT_STATE_CONNECTING;
                        mqtt_connection_failed(m, -EPROTO, tls_error[0] ? tls_error : "TLS handshake failed");
                }
                return;
        default:
                mqtt_fail(m, mqtt_loop_errno(rc, saved_errno), "Failed to connect to broker %s: %s", m->host_port,
                          mqtt_loop_describe(rc, saved_errno));
                return;
        }
}

/* The lookup of the broker's name ended: connect to what it found, or count a failed attempt. */
static void on_lookup_done(HostLookup *l, int error, const char *address, size_t n_addresses, const char *cause,
                           void *userdata) {
        MqttTask *m = userdata;
        (void) l;

        if (m->state != MQTT_STATE_RESOLVING)
                return; /* the attempt that wanted it is over: a new one looks up afresh */
        if (error == -ENOMEM) {
                mqtt_fail(m, error, "Failed to look up broker %s: %s", m->host_port, cause);
                return;
        }
        if (error < 0) {
                mqtt_connection_failed(m, error, cause);
                return;
        }
        log_full_errno_fields(LOG_DEBUG, 0, LOG_FIELDS("TASK", "mqtt"), "Resolved '%s' to %s (%zu address%s).",
                              m->config->host, address, n_addresses, n_addresses == 1 ? "" : "es");

        /* With TLS libmosquitto checks the certificate against the name it connects to, so it
         * gets the name and resolves it once more itself (blocking, but answered a moment ago:
         * from /etc/hosts or a local cache, if there is one). The lookup here is the gate
         * that keeps an unanswering DNS server from blocking the loop. */
        mqtt_connect_to(m, m->config->cafile || m->config->capath ? m->config->host : address);
}

/* Starts one connection attempt: with a lookup first when the host is a name. Failures are
 * handled (retry or task failure), never returned. */
static void mqtt_connect(MqttTask *m) {
        const char *cause = NULL;
        int r;

        m->attempt++;
        m->attempt_usec = now_usec(m);
        mqtt_loop_begin_attempt(m->loop);
        m->n_subs_pending = 0;
        m->unsub_pending = false;

        if (!mqtt_loop_needs_lookup(m->loop)) {
                mqtt_connect_to(m, m->config->host);
                return;
        }
        m->state = MQTT_STATE_RESOLVING;
        /* Successive attempts take successive addresses. */
        r = mqtt_loop_lookup_start(m->loop, m->attempt - 1, &cause);
        if (r == -ENOMEM)
                mqtt_fail(m, r, "Failed to look up broker %s: %s", m->host_port, cause);
        else if (r < 0) {
                char text[300];

                snprintf(text, sizeof(text), "host name lookup failed to start: %s", cause);
                mqtt_connection_failed(m, r, text);
        }
}

static void on_reconnect(void *userdata, uint64_t usec) {
        MqttTask *m = userdata;

        if (m->state != MQTT_STATE_OFFLINE)
                return;
        if (usec >= backoff_deadline(&m->backoff)) {
                mqtt_fail_unreachable(m, usec);
                return;
        }
        mqtt_connect(m);
}

/* Cut the current connection from our side (timeout, hang-up libmosquitto did not notice). */
static void mqtt_abort_connection(MqttTask *m, int error, const char *cause) {
        if (!state_has_connection(m->state) || m->state == MQTT_STATE_STOPPING)
                return;
        mqtt_connection_failed(m, error, cause);
}

/* Housekeeping (once a second, before keepalive): an attempt whose lookup, CONNACK or SUBACKs
 * have not come within the keepalive, clamped to 5..60 s (mqtt_loop_connect_timeout_usec()), is
 * abandoned and retried. Returns true when it ended the connection. */
static bool on_tick(void *userdata, uint64_t now) {
        MqttTask *m = userdata;
        char text[32], cause[128];

        if (m->state == MQTT_STATE_RESOLVING && now >= m->attempt_usec + mqtt_loop_connect_timeout_usec(m->config->keepalive)) {
                snprintf(cause, sizeof(cause), "no answer to the lookup of '%s' within %s", m->config->host,
                         format_timespan(text, sizeof(text), mqtt_loop_connect_timeout_usec(m->config->keepalive)));
                mqtt_connection_failed(m, -ETIMEDOUT, cause);
                return true;
        }
        if ((m->state == MQTT_STATE_CONNECTING || m->state == MQTT_STATE_SUBSCRIBING) &&
            now >= m->attempt_usec + mqtt_loop_connect_timeout_usec(m->config->keepalive)) {
                snprintf(cause, sizeof(cause), "no %s within %s", m->state == MQTT_STATE_CONNECTING ? "CONNACK" : "SUBACK",
                         format_timespan(text, sizeof(text), mqtt_loop_connect_timeout_usec(m->config->keepalive)));
                mqtt_abort_connection(m, -ETIMEDOUT, cause);
                return true;
        }
        return false;
}

static void mqtt_format_counters(MqttTask *m, char *buf, size_t size);

/* The connection is closed after stop() (or there was none): log what the task did, and report
 * stopped when stop() said it would. A failed task stays failed. */
static void mqtt_finish_stop(MqttTask *m) {
        char counters[200];

        mqtt_loop_unwatch(m->loop);
        m->stop_timer = sd_event_source_disable_unref(m->stop_timer);
        if (m->state == MQTT_STATE_FAILED || m->state == MQTT_STATE_STOPPED)
                return;
        m->state = MQTT_STATE_STOPPED;
        ingest_flush_log(m->ingest);
        mqtt_format_counters(m, counters, sizeof(counters));
        log_full_errno_fields(LOG_INFO, 0, LOG_FIELDS("TASK", "mqtt"), "Stopped (%s).", counters);
        if (m->stop_pending)
                task_report_stopped(m->task);
}

static int on_stop_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        MqttTask *m = userdata;
        (void) s;
        (void) usec;

        if (m->state != MQTT_STATE_STOPPING)
                return 0;
        log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", "mqtt"),
                              "DISCONNECT to broker %s not sent within %" PRIu64 " ms, closing the connection.",
                              m->host_port, STOP_FLUSH_USEC / USEC_PER_MSEC);
        mqtt_loop_shutdown(m->loop);
        mqtt_finish_stop(m);
        return 0;
}

/* A hang-up or error that libmosquitto did not turn into a disconnect (possible in the middle of
 * a TLS handshake) would wake us forever: end that connection ourselves. */
static void on_hangup(void *userdata, int error) {
        MqttTask *m = userdata;
        const char *tls_error = mqtt_loop_tls_error(m->loop);

        if (m->state == MQTT_STATE_STOPPING) {
                mqtt_finish_stop(m);
                return;
        }
        mqtt_abort_connection(m, error, tls_error[0] ? tls_error : strerror(-error));
}

static const char *connack_describe(MqttProtocol protocol, int rc) {
        return protocol == MQTT_PROTOCOL_V311 ? mosquitto_connack_string(rc) : mosquitto_reason_string(rc);
}

/* ---- the filters of a persistent session, remembered in the store (see mqtt-session.h) ---- */

static void mqtt_store_failed(MqttTask *m, int error);

/* Reads what the store remembers for our session. A store that cannot say is logged and
 * treated as remembering nothing. */
static void mqtt_load_remembered(MqttTask *m) {
        int r = session_filters_load(m->store, m->subs_key, &m->remembered);

        if (r < 0)
                log_full_errno_fields(LOG_WARNING, r, LOG_FIELDS("TASK", "mqtt"),
                                      "Failed to read the subscriptions of the last run from the store, ignoring: %m");
}

/* Makes the store remember exactly want (emptied) for our session. Returns 0; or -errno, and
 * then the task has failed or stops reading (the store reported its own failure). */
static int mqtt_remember(MqttTask *m, SessionFilters *want) {
        int r = session_filters_save(m->store, m->subs_key, want, &m->remembered);

        if (r == -ENOMEM)
                mqtt_fail(m, r, "Failed to remember the subscriptions of the session");
        else if (r < 0)
                mqtt_store_failed(m, r);
        return r;
}

/* Makes the store forget the filters of drop. Returns 0 or -errno (handled as in
 * mqtt_remember()). */
static int mqtt_forget(MqttTask *m, const SessionFilters *drop) {
        _cleanup_(session_filters_done) SessionFilters want = {};
        int r = session_filters_subtract(&m->remembered, drop, &want);

        if (r < 0) {
                mqtt_fail(m, r, "Failed to remember the subscriptions of the session");
                return r;
        }
        return mqtt_remember(m, &want);
}

/* Formats a list of filters for a log line: 'a', 'b'. */
static void format_filters(const SessionFilters *s, char *list, size_t size) {
        size_t used = 0;

        list[0] = 0;
        for (size_t i = 0; i < s->n && used < size; i++)
                used += (size_t) snprintf(list + used, size - used, "%s'%s'", i > 0 ? ", " : "", s->v[i]);
}

/* A SUBSCRIBE or UNSUBSCRIBE could not be queued (rc, errno_value right after the call): a lost
 * connection is retried, anything else is a failure of the task. Returns the -errno. */
static int mqtt_request_failed(MqttTask *m, int rc, int errno_value, const char *what) {
        if (rc == MOSQ_ERR_NO_CONN || rc == MOSQ_ERR_ERRNO || rc == MOSQ_ERR_CONN_LOST)
                mqtt_connection_failed(m, mqtt_loop_errno(rc, errno_value), mqtt_loop_describe(rc, errno_value));
        else
                mqtt_fail(m, mqtt_loop_errno(rc, errno_value), "Failed to %s: %s", what, mqtt_loop_describe(rc, errno_value));
        return mqtt_loop_errno(rc, errno_value);
}

/* Sends the UNSUBSCRIBE for stale filters. Returns 0, or -errno (the connection or the task
 * has been handled). */
static int mqtt_unsubscribe_stale(MqttTask *m, const SessionFilters *stale) {
        char list[512];
        int k, mid = 0, saved_errno;

        format_filters(stale, list, sizeof(list));
        log_full_errno_fields(LOG_INFO, 0, LOG_FIELDS("TASK", "mqtt"),
                              "Unsubscribing from %zu filter%s an earlier configuration left in the session: %s.", stale->n,
                              stale->n == 1 ? "" : "s", list);
        errno = 0;
        k = mosquitto_unsubscribe_multiple(m->mosq, &mid, (int) stale->n, stale->v, NULL);
        saved_errno = errno;
        if (k == MOSQ_ERR_INVAL || k == MOSQ_ERR_MALFORMED_UTF8) {
                /* A remembered filter libmosquitto will not send (a store from elsewhere): no
                 * broker can hold it either. Failing here would fail every start. */
                log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", "mqtt"),
                                      "Cannot unsubscribe from %s (%s), forgetting them, ignoring.", list,
                                      mqtt_loop_describe(k, saved_errno));
                return mqtt_forget(m, stale);
        }
        if (k != MOSQ_ERR_SUCCESS)
                return mqtt_request_failed(m, k, saved_errno, "unsubscribe from stale filters");
        m->unsub_mid = mid;
        m->unsub_pending = true;
        return 0;
}

/* After CONNACK: remember what may now be subscribed and unsubscribe the stale filters of a
 * present session. Returns 0, or -errno (the connection or the task has been handled). */
static int mqtt_drop_stale_filters(MqttTask *m, bool session_present) {
        _cleanup_(session_filters_done) SessionFilters stale = {};
        _cleanup_(session_filters_done) SessionFilters remember = {};
        int r;

        m->unsub_pending = false;
        if (m->config->clean_session)
                return 0;
        r = session_filters_plan(&m->remembered, &m->configured, session_present, &stale, &remember);
        if (r >= 0)
                r = session_filters_copy(&m->stale, &stale);
        /* What an earlier SUBACK granted (or an earlier plan wrote ahead): a refusal now does not
         * take it out of the session. */
        if (r >= 0 && session_present)
                r = session_filters_copy(&m->known_before, &m->remembered);
        else if (r >= 0)
                session_filters_done(&m->known_before);
        if (r < 0) {
                mqtt_fail(m, r, "Failed to compare the subscriptions of the session with the configuration");
                return r;
        }
        /* Written before anything goes out. */
        r = mqtt_remember(m, &remember);
        if (r < 0 || stale.n == 0)
                return r;
        return mqtt_unsubscribe_stale(m, &stale);
}

static void on_connect(struct mosquitto *mosq, void *userdata, int rc, int flags, const mosquitto_property *props) {
        MqttTask *m = mqtt_loop_get_userdata(userdata);
        const MqttConfig *c = m->config;
        bool session_present = flags & 1;
        (void) mosq;
        (void) props;

        if (m->state != MQTT_STATE_CONNECTING)
                return;

        if (rc != 0) {
                char cause[256];

                snprintf(cause, sizeof(cause), "broker %s refused the connection (CONNACK %d): %s", m->host_port, rc,
                         connack_describe(c->protocol, rc));
                if (mqtt_connack_is_fatal(c->protocol, rc))
                        mqtt_fail(m, mqtt_connack_errno(c->protocol, rc), "%s", cause);
                else
                        mqtt_connection_failed(m, mqtt_connack_errno(c->protocol, rc), cause);
                return;
        }

        if (m->ever_connected && !c->clean_session && !session_present)
                log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", "mqtt"),
                                      "Broker %s did not keep our session; messages published while we were away are lost.",
                                      m->host_port);
        log_full_errno_fields(LOG_DEBUG, 0, LOG_FIELDS("TASK", "mqtt"), "Connected to broker %s (session %s), subscribing.",
                              m->host_port, session_present ? "present" : "new");

        /* Always subscribe, also when the session is present: it is idempotent, and it is the
         * only way to learn (from the SUBACKs) that every subscription is granted. */
        m->state = MQTT_STATE_SUBSCRIBING;
        m->n_subs_pending = 0;
        if (mqtt_drop_stale_filters(m, session_present) < 0)
                return;
        for (size_t i = 0; i < c->n_topics; i++) {
                int mid = 0, k;

                if (c->protocol == MQTT_PROTOCOL_V5) {
                        /* Number each subscription (1-based topic index): with MQTT 5 mosquitto
                         * delivers a message once per matching subscription, and the identifier
                         * tells which copy is for the topic that decides (see on_message). */
                        mosquitto_property *sub_props = NULL;

                        k = mosquitto_property_add_varint(&sub_props, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, (uint32_t) i + 1);
                        if (k == MOSQ_ERR_SUCCESS)
                                k = mosquitto_subscribe_v5(m->mosq, &mid, mqtt_router_subscription(m->router, i),
                                                           subscribe_qos(&c->topics[i]), 0, sub_props);
                        mosquitto_property_free_all(&sub_props);
                } else
                        k = mosquitto_subscribe(m->mosq, &mid, mqtt_router_subscription(m->router, i),
                                                subscribe_qos(&c->topics[i]));
                if (k != MOSQ_ERR_SUCCESS) {
                        char what[300];

                        snprintf(what, sizeof(what), "subscribe to '%s'", c->topics[i].filter);
                        (void) mqtt_request_failed(m, k, errno, what);
                        return;
                }
                m->sub_mids[i] = mid;
                m->n_subs_pending++;
        }
        /* Output queued inside a callback is written when the io source says writable. */
}

static void mqtt_now_running(MqttTask *m) {
        char text[32];
        uint64_t now = now_usec(m);

        m->state = MQTT_STATE_CONNECTED;
        if (m->backoff.down_usec != 0 && m->ever_connected)
                log_full_errno_fields(LOG_INFO, 0, LOG_FIELDS("TASK", "mqtt"),
                                      "Reconnected to broker %s after %s offline (%u attempt%s).", m->host_port,
                                      format_timespan(text, sizeof(text), backoff_outage_usec(&m->backoff, now)), m->attempt,
                                      m->attempt == 1 ? "" : "s");
        else
                log_full_errno_fields(LOG_INFO, 0, LOG_FIELDS("TASK", "mqtt"),
                                      "Connected to broker %s, %zu subscription%s granted.", m->host_port,
                                      m->config->n_topics, m->config->n_topics == 1 ? "" : "s");
        m->ever_connected = true;
        m->unsub_lost = 0;
        backoff_up(&m->backoff, now);
        (void) sd_event_source_set_enabled(m->offline_timer, SD_EVENT_OFF);
        m->attempt = 0;
        m->last_error = 0;

        /* Every stale filter is gone from the session now: only the configured ones remain. */
        if (!m->config->clean_session) {
                _cleanup_(session_filters_done) SessionFilters want = {};
                int r = session_filters_copy(&want, &m->configured);

                if (r < 0) {
                        mqtt_fail(m, r, "Failed to remember the subscriptions of the session");
                        return;
                }
                if (mqtt_remember(m, &want) < 0)
                        return;
        }
        task_report_running(m->task);
        ingest_input_up(m->ingest);

        /* libmosquitto's log is only needed for the causes of failed connection attempts
         * (OpenSSL's reasons): off while connected, unless debugging. */
        mqtt_loop_quiet(m->loop);
}

static void on_subscribe(struct mosquitto *mosq, void *userdata, int mid, int qos_count, const int *granted_qos,
                         const mosquitto_property *props) {
        MqttTask *m = mqtt_loop_get_userdata(userdata);
        const MqttConfig *c = m->config;
        (void) mosq;
        (void) props;

        if (m->state != MQTT_STATE_SUBSCRIBING)
                return;
        for (size_t i = 0; i < c->n_topics; i++) {
                int granted;

                if (m->sub_mids[i] != mid || mid == 0)
                        continue;
                m->sub_mids[i] = 0;
                granted = qos_count > 0 && granted_qos ? granted_qos[0] : 0x80;
                if (granted >= 0x80) {
                        /* Written ahead by the plan, but the broker does not hold it: a later
                         * configuration without it must not try to unsubscribe it. */
                        const char *sub = mqtt_router_subscription(m->router, i);

                        if (!c->clean_session && session_filters_forget_refused(&m->known_before, sub)) {
                                _cleanup_(session_filters_done) SessionFilters refused = {};

                                if (session_filters_add(&refused, sub) < 0) {
                                        mqtt_fail(m, -ENOMEM, "Failed to remember the subscriptions of the session");
                                        return;
                                }
                                if (mqtt_forget(m, &refused) < 0)
                                        return;
                        }
                        mqtt_fail(m, -EACCES, "broker %s refused the subscription to '%s' (SUBACK 0x%02x: %s)",
                                  m->host_port, c->topics[i].filter, (unsigned) granted,
                                  c->protocol == MQTT_PROTOCOL_V5 ? mosquitto_reason_string(granted) : "Failure");
                        return;
                }
                if (granted < subscribe_qos(&c->topics[i]))
                        log_full_errno_fields(LOG_NOTICE, 0, LOG_FIELDS("TASK", "mqtt", "TOPIC", c->topics[i].filter),
                                              "Broker %s granted QoS %d for '%s' where %d was asked.", m->host_port,
                                              granted, c->topics[i].filter, subscribe_qos(&c->topics[i]));
                if (m->n_subs_pending > 0)
                        m->n_subs_pending--;
                break;
        }
        if (m->n_subs_pending == 0 && !m->unsub_pending)
                mqtt_now_running(m);
}

static void on_unsubscribe(struct mosquitto *mosq, void *userdata, int mid, const mosquitto_property *props) {
        MqttTask *m = mqtt_loop_get_userdata(userdata);
        (void) mosq;
        (void) props;

        if (m->state != MQTT_STATE_SUBSCRIBING || !m->unsub_pending || mid != m->unsub_mid)
                return;
        m->unsub_pending = false;
        m->unsub_lost = 0;
        /* libmosquitto 2.0 does not pass the UNSUBACK's reason codes on: granted or refused, the
         * filters are forgotten. A refusal (e.g. an ACL) leaves them in the session, and their
         * messages show up as topic_mismatch rejects: visible, not a failed start forever. */
        if (mqtt_forget(m, &m->stale) < 0)
                return;
        if (m->n_subs_pending == 0)
                mqtt_now_running(m);
}

/* The connection is closed (rc is a libmosquitto error or an MQTT 5 DISCONNECT reason code,
 * errno_value errno at the time): finish a stop, or find out whether to retry. */
static void mqtt_connection_closed(MqttTask *m, int rc, int errno_value) {
        char cause[300];

        if (m->state == MQTT_STATE_STOPPING) {
                /* Our DISCONNECT went out (rc 0), or the connection ended while sending it. */
                mqtt_finish_stop(m);
                return;
        }
        if (!state_has_connection(m->state))
                return;

        /* A certificate that does not verify (wrong CA, wrong name) never fixes itself. */
        if (m->state == MQTT_STATE_CONNECTING && mqtt_loop_certificate_rejected(m->loop)) {
                mqtt_fail_certificate(m);
                return;
        }

        if (mqtt_loop_tls_error(m->loop)[0] && m->state == MQTT_STATE_CONNECTING)
                snprintf(cause, sizeof(cause), "TLS handshake failed: %s", mqtt_loop_tls_error(m->loop));
        else
                snprintf(cause, sizeof(cause), "%s", mqtt_loop_describe(rc, errno_value));
        mqtt_connection_failed(m, rc >= 128 ? -ECONNRESET : mqtt_loop_errno(rc ? rc : MOSQ_ERR_CONN_LOST, errno_value),
                               cause);
}

/* The store refused a row (and reported its own failure); the supervisor stops everything.
 * Until then read nothing more (want_read() says no): TCP pushes back on the broker. */
static void mqtt_store_failed(MqttTask *m, int error) {
        (void) ingest_store_failed(m->ingest, error);
}

static const IngestInput mqtt_input = {
        .task = "mqtt",
        .source = READING_SOURCE_MQTT,
        .origin_field = "TOPIC",
        .reject_noun = "message on",
        .suppressed_noun = "MQTT messages",
};

/* Subscription identifiers of a message that are looked at: it carries one per matching
 * subscription of ours, a few at most. */
#define SUBSCRIPTION_IDS_MAX 32

static void on_message(struct mosquitto *mosq, void *userdata, const struct mosquitto_message *msg,
                       const mosquitto_property *props) {
        MqttTask *m = mqtt_loop_get_userdata(userdata);
        uint32_t ids[SUBSCRIPTION_IDS_MAX];
        MqttMessage message = {
                .topic = msg->topic,
                .payload = msg->payload,
                .size = msg->payloadlen > 0 ? (size_t) msg->payloadlen : 0,
                .retain = msg->retain,
                .subscription_ids = ids,
        };
        const mosquitto_property *p;
        uint32_t id;
        int r;
        (void) mosq;

        mqtt_loop_delivered(m->loop);
        if (!ingest_accepting(m->ingest) || m->state == MQTT_STATE_FAILED || !msg->topic)
                return;
        for (p = mosquitto_property_read_varint(props, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, &id, false); p;
             p = mosquitto_property_read_varint(p, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, &id, true))
                if (message.n_subscription_ids < SUBSCRIPTION_IDS_MAX)
                        ids[message.n_subscription_ids++] = id;
        r = mqtt_router_handle(m->router, &message);
        if (r < 0)
                mqtt_fail(m, r, "Failed to parse a message on '%s'", msg->topic);
}

/* Credentials and TLS, before the first connection. Returns 0 (also when it reported a failure
 * with its cause: then *ret_reported is set) or -errno. */
static int mqtt_setup_security(MqttTask *m, bool *ret_reported) {
        const MqttConfig *c = m->config;
        _cleanup_free_ char *failed_path = NULL;
        int r, rc;

        *ret_reported = true;
        r = credential_read_password(c->username, c->password_file, &m->password, &failed_path);
        if (r < 0) {
                task_report_failure(m->task, r, "Failed to read the MQTT password from '%s'", strna(failed_path));
                return 0;
        }
        if (c->username) {
                rc = mosquitto_username_pw_set(m->mosq, c->username, m->password);
                if (rc != MOSQ_ERR_SUCCESS) {
                        *ret_reported = false;
                        return mqtt_loop_errno(rc, errno);
                }
        }
        if (!c->cafile && !c->capath) {
                *ret_reported = false;
                return 0;
        }
        rc = mqtt_loop_tls_files(m->loop, c->cafile, c->capath, c->certfile, c->keyfile);
        if (rc != MOSQ_ERR_SUCCESS) {
                task_report_failure(m->task, mqtt_loop_errno(rc, errno),
                                    "Failed to set up TLS (cafile '%s', capath '%s', certfile '%s', keyfile '%s')",
                                    strna(c->cafile), strna(c->capath), strna(c->certfile), strna(c->keyfile));
                return 0;
        }
        rc = mqtt_loop_tls_verify(m->loop, c->tls_version);
        if (rc != MOSQ_ERR_SUCCESS) {
                task_report_failure(m->task, mqtt_loop_errno(rc, errno), "Failed to set TLS options (version '%s')",
                                    strna(c->tls_version));
                return 0;
        }
        *ret_reported = false;
        return 0;
}

/* MQTT 5: the CONNECT properties every connection sends. Returns 0 or -errno. */
static int mqtt_set_connect_properties(MqttTask *m) {
        const MqttConfig *c = m->config;
        mosquitto_property *props = NULL;
        int rc = MOSQ_ERR_SUCCESS;

        if (c->protocol != MQTT_PROTOCOL_V5)
                return 0;
        /* libmosquitto 2.0 keeps CONNECT properties (the session expiry interval, without which
         * an MQTT 5 session ends at every disconnect; the maximum packet size) only through
         * mosquitto_connect_bind_v5(), which connects synchronously. Given an invalid port it
         * stores the properties and returns MOSQ_ERR_INVAL before touching the network; the
         * asynchronous connects that follow send them. The MQTT 5 persistent-session and
         * oversized-message tests check that this keeps working. */
        if (c->session_expiry > 0)
                rc = mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL, c->session_expiry);
        /* libmosquitto reads a whole PUBLISH into memory before on_message sees it: the broker
         * must not send one far beyond what we would keep. A broker discards a message that does
         * not fit the client's Maximum Packet Size instead of sending it. */
        if (rc == MOSQ_ERR_SUCCESS)
                rc = mosquitto_property_add_int32(&props, MQTT_PROP_MAXIMUM_PACKET_SIZE,
                                                  max_packet_size(c->max_payload_bytes));
        if (rc == MOSQ_ERR_SUCCESS) {
                rc = mosquitto_connect_bind_v5(m->mosq, c->host, -1, (int) c->keepalive, NULL, props);
                if (rc == MOSQ_ERR_INVAL)
                        rc = MOSQ_ERR_SUCCESS;
        }
        mosquitto_property_free_all(&props);
        return mqtt_loop_errno(rc, errno);
}

static int mqtt_start(Task *t) {
        MqttTask *m = task_get_userdata(t);
        bool reported;
        int r;

        r = mqtt_setup_security(m, &reported);
        if (r < 0 || reported)
                return r;
        r = mqtt_set_connect_properties(m);
        if (r < 0)
                return r;

        r = mqtt_loop_start(m->loop);
        if (r < 0)
                return r;

        for (size_t i = 0; i < m->config->n_topics; i++)
                if (m->config->topics[i].qos > SUBSCRIBE_QOS_MAX)
                        log_full_errno_fields(LOG_NOTICE, 0, LOG_FIELDS("TASK", "mqtt", "TOPIC", m->config->topics[i].filter),
                                              "QoS %d for '%s' is subscribed as QoS %d: libmosquitto would lose QoS 2 "
                                              "messages in flight at a stop; the store drops QoS 1 redeliveries of "
                                              "readings with the sensor's timestamp.",
                                              m->config->topics[i].qos, m->config->topics[i].filter, SUBSCRIBE_QOS_MAX);

        if (!m->config->clean_session)
                mqtt_load_remembered(m);

        /* Until the first connection is up, the task counts as offline. */
        r = mqtt_begin_offline(m, now_usec(m));
        if (r < 0)
                return r;
        mqtt_connect(m);
        return 0;
}

static int mqtt_stop(Task *t) {
        MqttTask *m = task_get_userdata(t);
        int rc, r;

        mqtt_loop_halt(m->loop);
        m->offline_timer = sd_event_source_disable_unref(m->offline_timer);

        switch (m->state) {
        case MQTT_STATE_STOPPING:
                return 1;
        case MQTT_STATE_SUBSCRIBING:
        case MQTT_STATE_CONNECTED:
                break;
        default:
                /* Not connected, or nothing agreed with the broker yet (no CONNACK): just close. */
                mqtt_loop_shutdown(m->loop);
                mqtt_finish_stop(m);
                return 0;
        }

        m->state = MQTT_STATE_STOPPING;
        m->stop_pending = false;
        errno = 0;
        if (m->config->protocol == MQTT_PROTOCOL_V5)
                rc = mosquitto_disconnect_v5(m->mosq, MQTT_RC_NORMAL_DISCONNECTION, NULL);
        else
                rc = mosquitto_disconnect(m->mosq);
        if (m->state != MQTT_STATE_STOPPING) /* went out at once: on_disconnect() ran */
                return 0;
        if (rc != MOSQ_ERR_SUCCESS) {
                mqtt_loop_shutdown(m->loop);
                mqtt_finish_stop(m);
                return 0;
        }

        r = mqtt_loop_update_io(m->loop);
        if (r >= 0)
                r = sd_event_add_time_relative(m->event, &m->stop_timer, CLOCK_MONOTONIC, STOP_FLUSH_USEC, 0,
                                               on_stop_timer, m);
        if (r < 0) {
                mqtt_loop_shutdown(m->loop);
                mqtt_finish_stop(m);
                return 0;
        }
        m->stop_pending = true;
        return 1;
}

/* "12 messages, 1 reject, 0 reconnects[, 3 duplicates skipped][, 1 retained skipped]": for
 * STATUS= and the line logged at stop. */
static void mqtt_format_counters(MqttTask *m, char *buf, size_t size) {
        char duplicates[48] = "", retained[48] = "";

        const MqttRouterCounters *k = mqtt_router_get_counters(m->router);

        if (k->duplicates > 0)
                snprintf(duplicates, sizeof(duplicates), ", %" PRIu64 " duplicate%s skipped", k->duplicates,
                         k->duplicates == 1 ? "" : "s");
        if (k->retained_skipped > 0)
                snprintf(retained, sizeof(retained), ", %" PRIu64 " retained skipped", k->retained_skipped);
        const IngestCounters *n = ingest_get_counters(m->ingest);

        snprintf(buf, size, "%" PRIu64 " message%s, %" PRIu64 " reject%s, %" PRIu64 " reconnect%s%s%s", n->frames,
                 n->frames == 1 ? "" : "s", n->rejects, n->rejects == 1 ? "" : "s", m->n_reconnects,
                 m->n_reconnects == 1 ? "" : "s", duplicates, retained);
}

static void mqtt_format_status(Task *t, char *buf, size_t size) {
        MqttTask *m = task_get_userdata(t);
        char counters[200];
        const char *prefix;

        mqtt_format_counters(m, counters, sizeof(counters));

        switch (m->state) {
        case MQTT_STATE_CONNECTED:
                prefix = "connected to";
                break;
        case MQTT_STATE_RESOLVING:
        case MQTT_STATE_CONNECTING:
        case MQTT_STATE_SUBSCRIBING:
                if (m->ever_connected || m->attempt > 1) {
                        snprintf(buf, size, "reconnecting to %s (attempt %u), %s", m->host_port, m->attempt, counters);
                        return;
                }
                prefix = "connecting to";
                break;
        case MQTT_STATE_OFFLINE:
                snprintf(buf, size, "reconnecting to %s (attempt %u), %s", m->host_port, m->attempt + 1, counters);
                return;
        case MQTT_STATE_STOPPING:
                prefix = "disconnecting from";
                break;
        case MQTT_STATE_STOPPED:
                snprintf(buf, size, "stopped, %s", counters);
                return;
        default:
                snprintf(buf, size, "%s", task_state_to_string(task_get_state(t)));
                return;
        }
        snprintf(buf, size, "%s %s, %s", prefix, m->host_port, counters);
}

static void mqtt_get_info(Task *t, TaskInfo *ret) {
        MqttTask *m = task_get_userdata(t);
        const IngestCounters *n = ingest_get_counters(m->ingest);

        *ret = (TaskInfo){ .origin = m->host_port, .frames = n->frames, .readings = n->readings,
                           .rejects = n->rejects, .reconnects = m->n_reconnects,
                           .last_error = m->last_cause[0] ? m->last_cause : NULL };
        ingest_get_last_minute(m->ingest, &ret->readings_last_minute, &ret->rejects_last_minute);
}

static MqttTask *mqtt_task_free_one(MqttTask *m) {
        if (!m)
                return NULL;
        sd_event_source_disable_unref(m->offline_timer);
        sd_event_source_disable_unref(m->stop_timer);
        mqtt_loop_free(m->loop);
        mqtt_router_free(m->router);
        free(m->sub_mids);
        free(m->subs_key);
        session_filters_done(&m->configured);
        session_filters_done(&m->remembered);
        session_filters_done(&m->known_before);
        session_filters_done(&m->stale);
        if (m->password)
                erase_and_free(m->password, strlen(m->password) + 1);
        free(m->host_port);
        ingest_free(m->ingest);
        sd_event_unref(m->event);
        free(m);
        return NULL;
}

static void mqtt_task_free(void *userdata) {
        mqtt_task_free_one(userdata);
}

static const TaskOps mqtt_task_ops = {
        .name = "mqtt",
        .exit_status = EXIT_STATUS_MQTT,
        .start = mqtt_start,
        .stop = mqtt_stop,
        .free = mqtt_task_free,
        .format_status = mqtt_format_status,
        .get_info = mqtt_get_info,
};

static bool has_connection(void *userdata) {
        MqttTask *m = userdata;

        return state_has_connection(m->state);
}

/* Input only while ingest accepts rows: TCP pushes back on the broker otherwise. */
static bool want_read(void *userdata) {
        MqttTask *m = userdata;

        return ingest_accepting(m->ingest);
}

static void on_disconnected(void *userdata, int rc, int errno_value) {
        mqtt_connection_closed(userdata, rc, errno_value);
}

static void on_watch_failed(void *userdata, int error) {
        mqtt_fail(userdata, error, "Failed to watch the MQTT socket");
}

/* The task's side of the client on the loop (mqtt-loop.h). */
static const MqttLoopOps mqtt_loop_ops = {
        .has_connection = has_connection,
        .want_read = want_read,
        .disconnected = on_disconnected,
        .hangup = on_hangup,
        .watch_failed = on_watch_failed,
        .tick = on_tick,
        .reconnect = on_reconnect,
        .resolved = on_lookup_done,
};

static int mqtt_task_setup(MqttTask *m) {
        const MqttConfig *c = m->config;
        int r;

        if (asprintf(&m->host_port, "%s:%u", c->host, (unsigned) c->port) < 0) {
                m->host_port = NULL;
                return -ENOMEM;
        }
        r = mqtt_loop_new(m->event, "mqtt", c->host, &mqtt_loop_ops, m, &m->loop);
        if (r < 0)
                return r;
        /* A session belongs to a client id at a broker. */
        if (asprintf(&m->subs_key, "mqtt.subscriptions %s@%s", c->client_id, m->host_port) < 0) {
                m->subs_key = NULL;
                return -ENOMEM;
        }

        m->sub_mids = calloc(MAX(c->n_topics, 1u), sizeof(int));
        if (!m->sub_mids)
                return -ENOMEM;
        r = mqtt_router_new(c, m->ingest, &m->router);
        if (r < 0)
                return r;
        for (size_t i = 0; i < c->n_topics; i++) {
                if (mosquitto_sub_topic_check(mqtt_router_subscription(m->router, i)) != MOSQ_ERR_SUCCESS)
                        return -EINVAL;
                r = session_filters_add(&m->configured, mqtt_router_subscription(m->router, i));
                if (r < 0)
                        return r;
        }

        r = mqtt_loop_client_new(m->loop, c->client_id, c->clean_session, c->protocol, &m->mosq);
        if (r < 0)
                return r;
        mosquitto_connect_v5_callback_set(m->mosq, on_connect);
        mosquitto_subscribe_v5_callback_set(m->mosq, on_subscribe);
        mosquitto_unsubscribe_v5_callback_set(m->mosq, on_unsubscribe);
        mosquitto_message_v5_callback_set(m->mosq, on_message);
        return 0;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(MqttTask *, mqtt_task_free_one);

int mqtt_task_new(sd_event *e, const MqttConfig *config, Store *store, Clock *clock, Sensors *sensors, Task **ret) {
        _cleanup_(mqtt_task_free_onep) MqttTask *m = NULL;
        Task *t;
        int r;

        assert(e && config && store && ret);

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->event = sd_event_ref(e);
        m->config = config;
        m->store = store;
        m->state = MQTT_STATE_IDLE;
        m->backoff_policy = (BackoffPolicy){
                .initial_usec = BACKOFF_INITIAL_USEC,
                .max_usec = BACKOFF_MAX_USEC,
                .budget_usec = config->max_offline_usec,
                .margin_usec = LAST_ATTEMPT_MARGIN_USEC,
                .stable_usec = STABLE_CONNECTION_USEC,
        };
        backoff_init(&m->backoff, &m->backoff_policy);

        r = ingest_new(e, store, clock, &mqtt_input, &m->ingest);
        if (r < 0)
                return r;
        ingest_set_sensors(m->ingest, sensors);
        r = mqtt_task_setup(m);
        if (r < 0)
                return r;

        /* The task owns m from here on, also when task_new() fails. */
        r = task_new(&mqtt_task_ops, m, &t);
        m = NULL;
        if (r < 0)
                return r;
        ((MqttTask *) task_get_userdata(t))->task = t;
        *ret = t;
        return 0;
}
