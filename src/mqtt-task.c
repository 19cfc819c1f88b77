/* SPDX-License-Identifier: MIT */
/* The MQTT input: libmosquitto driven from the sd_event loop, subscribed messages into readings. */
#include <arpa/inet.h>
#include <assert.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

/* mosquitto.h names its protocol numbers with macros that collide with config.h's MqttProtocol
 * enumerators: keep the numbers under other names, then drop the macros before config.h. */
enum {
        MOSQ_PROTOCOL_NUMBER_V311 = MQTT_PROTOCOL_V311,
        MOSQ_PROTOCOL_NUMBER_V5 = MQTT_PROTOCOL_V5,
};
#undef MQTT_PROTOCOL_V31
#undef MQTT_PROTOCOL_V311
#undef MQTT_PROTOCOL_V5

#include "collector/frame.h"
#include "collector/log.h"
#include "collector/mqtt-task.h"
#include "collector/exit-status.h"
#include "collector/time-util.h"

/* Reconnect backoff: the first retry after about this long, doubling up to the cap; each delay
 * is drawn at random from its upper half so that gateways behind one broker spread out. */
#define BACKOFF_MIN_USEC (200 * USEC_PER_MSEC)
#define BACKOFF_MAX_USEC (30 * USEC_PER_SEC)
/* A connection that lasted less than this does not reset the backoff: a broker (or a second
 * client with our client id) that drops us right after accepting must not be hammered. */
#define STABLE_CONNECTION_USEC (10 * USEC_PER_SEC)
/* The last attempt of an outage starts at least this long (or a quarter of max_offline) before
 * the budget runs out, so that a broker that is back gets a try before the task gives up. */
#define LAST_ATTEMPT_MARGIN_USEC (2 * USEC_PER_SEC)
/* libmosquitto's housekeeping (keepalive pings, retries) wants a call about once a second. */
#define MISC_INTERVAL_USEC USEC_PER_SEC
/* A connection attempt that has not been answered (CONNACK and every SUBACK) within the
 * keepalive, clamped to this range, is abandoned and retried. */
#define CONNECT_TIMEOUT_MIN_USEC (5 * USEC_PER_SEC)
#define CONNECT_TIMEOUT_MAX_USEC (60 * USEC_PER_SEC)
/* How long stop() waits for the DISCONNECT packet to leave before closing regardless. */
#define STOP_FLUSH_USEC USEC_PER_SEC
/* Packets handled per loop iteration before other sources get their turn (libmosquitto 2.0
 * reads at most this many or as many as its in-flight queues hold, whichever it decides). */
#define READ_PACKET_BUDGET 64
#define WRITE_PACKET_BUDGET 64
/* What a PUBLISH packet may hold besides its payload: fixed header (5), topic (2 + up to
 * 65535), packet id (2), and properties (their length, 4, and 4 KiB for subscription
 * identifiers, message expiry, content type, user properties and the like). */
#define PUBLISH_OVERHEAD_MAX (5 + 2 + 65535 + 2 + 4 + 4096)
/* A password file is one line; anything longer than MQTT's limit is not a password. */
#define PASSWORD_MAX 65535
#define CREDENTIAL_DEFAULT_NAME "mqtt-password"

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

/* One lookup of the broker's host name, by glibc's getaddrinfo_a() in a thread of glibc's. That
 * thread reads host and hints and writes into req until the lookup is done (gai_error() no
 * longer says EAI_INPROGRESS), so the struct lives until then, also when nobody waits for it
 * any more. The end is announced by a thread glibc starts for it, which writes to the task's
 * eventfd and touches nothing else. */
typedef struct MqttLookup {
        struct gaicb req;
        struct addrinfo hints;
        struct MqttLookup *next;      /* in abandoned_lookups */
        char host[];
} MqttLookup;

typedef struct MqttTask {
        Task *task;                   /* borrowed: the task owns this struct */
        sd_event *event;              /* referenced */
        const MqttConfig *config;     /* borrowed, outlives the task */
        Store *store;                 /* borrowed, outlives the task */
        struct mosquitto *mosq;
        TopicPattern **patterns;      /* one per config->topics[i] */
        int *sub_mids;                /* message id of each SUBSCRIBE, 0 once granted */
        size_t n_subs_pending;
        int unsub_mid;                /* message id of the UNSUBSCRIBE of stale filters */
        bool unsub_pending;           /* its UNSUBACK not in yet */
        char *subs_key;               /* the store's meta key for the filters of our session */
        char **remembered;            /* filters that may be subscribed in the broker's session */
        size_t n_remembered;
        char *password;
        char *host_port;              /* "host:port" for messages */

        sd_event_source *io_source;
        int io_fd;                    /* the fd io_source watches, or -EBADF */
        uint32_t io_events;
        bool io_enabled;
        sd_event_source *misc_timer;
        sd_event_source *reconnect_timer;
        sd_event_source *offline_timer;   /* fires when offline for max_offline */
        sd_event_source *stop_timer;

        bool needs_lookup;            /* host is a name, not an address or "localhost" */
        MqttLookup *lookup;           /* the lookup in flight, or NULL */
        int lookup_fd;                /* eventfd: a lookup ended; or -EBADF */
        sd_event_source *lookup_source;
        uint64_t n_lookups;           /* started, and so announcements to come to lookup_fd */
        uint64_t n_lookups_announced; /* ... that came (or never will: cancelled) */

        MqttState state;
        bool ever_connected;
        bool stop_pending;            /* stop() returned 1: report when the DISCONNECT is out */
        bool store_failed;            /* the store refused a row: stop reading */
        unsigned attempt;             /* connection attempts since the last success */
        unsigned backoff_step;        /* grows per failure, reset by a stable connection */
        uint64_t connected_usec;      /* CLOCK_MONOTONIC when last running */
        uint64_t attempt_usec;        /* CLOCK_MONOTONIC start of the current attempt */
        uint64_t offline_usec;        /* CLOCK_MONOTONIC since when offline, 0 when online */
        int last_error;               /* negative errno of the last connection failure */
        char last_cause[256];         /* and its text */
        char tls_error[256];          /* the first OpenSSL error of the current attempt */
        char lib_error[256];          /* the first error libmosquitto logged in this attempt */

        uint64_t n_messages;
        uint64_t n_rejects;
        uint64_t n_retained_skipped;
        uint64_t n_duplicates;        /* MQTT 5 copies for overlapping subscriptions, skipped */
        uint64_t n_reconnects;
        RateLimit reject_ratelimit;
} MqttTask;

static bool mosquitto_initialized;

/* Lookups still running when their task was freed (at exit): glibc's thread still writes into
 * them, so they are not freed, and kept reachable here. */
static MqttLookup *abandoned_lookups;

/* libmosquitto 2.0 makes its sockets (the connection, and a socket pair it wakes its own loop
 * with) without SOCK_CLOEXEC, and says nothing about which they are. Around each call that may
 * create one, the task notes the fds lacking FD_CLOEXEC before and sets it on the new ones. */
typedef struct FdSnapshot {
        int fds[64];
        int n;                        /* -errno when /proc/self/fd could not be read */
} FdSnapshot;

/* Fds >= 3 without FD_CLOEXEC, at most max of them. Returns how many, or -errno. */
static int fds_lacking_cloexec(int *ret, size_t max) {
        DIR *d = opendir("/proc/self/fd");
        struct dirent *de;
        size_t n = 0;

        if (!d)
                return -errno;
        while ((de = readdir(d)) && n < max) {
                char *end;
                long fd;
                int flags;

                errno = 0;
                fd = strtol(de->d_name, &end, 10);
                if (errno != 0 || end == de->d_name || *end || fd < 3 || fd > INT_MAX || fd == dirfd(d))
                        continue;
                flags = fcntl((int) fd, F_GETFD);
                if (flags >= 0 && !(flags & FD_CLOEXEC))
                        ret[n++] = (int) fd;
        }
        closedir(d);
        return (int) n;
}

static void fd_snapshot(FdSnapshot *s) {
        s->n = fds_lacking_cloexec(s->fds, ELEMENTSOF(s->fds));
}

static void fd_set_cloexec(int fd) {
        int flags = fcntl(fd, F_GETFD);

        if (flags >= 0 && !(flags & FD_CLOEXEC))
                (void) fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

/* Sets FD_CLOEXEC on every fd that lacks it and did not before, and on mosq's socket. */
static void fd_set_cloexec_since(const FdSnapshot *before, struct mosquitto *mosq) {
        int now[ELEMENTSOF(before->fds)];
        int n = before->n >= 0 ? fds_lacking_cloexec(now, ELEMENTSOF(now)) : -EBADF;

        for (int i = 0; i < n; i++) {
                bool old = false;

                for (int j = 0; j < before->n && !old; j++)
                        old = before->fds[j] == now[i];
                if (!old)
                        fd_set_cloexec(now[i]);
        }
        if (mosq && mosquitto_socket(mosq) >= 0)
                fd_set_cloexec(mosquitto_socket(mosq));
}

static bool startswith(const char *s, const char *prefix) {
        return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Convert a libmosquitto error to a negative errno. errno_value is errno right after the call,
 * which MOSQ_ERR_ERRNO refers to. */
static int mosq_to_errno(int rc, int errno_value) {
        switch (rc) {
        case MOSQ_ERR_SUCCESS:
                return 0;
        case MOSQ_ERR_NOMEM:
                return -ENOMEM;
        case MOSQ_ERR_PROTOCOL:
        case MOSQ_ERR_MALFORMED_PACKET:
        case MOSQ_ERR_DUPLICATE_PROPERTY:
        case MOSQ_ERR_PROXY:
                return -EPROTO;
        case MOSQ_ERR_INVAL:
                return -EINVAL;
        case MOSQ_ERR_NO_CONN:
                return -ENOTCONN;
        case MOSQ_ERR_CONN_REFUSED:
                return -ECONNREFUSED;
        case MOSQ_ERR_NOT_FOUND:
                return -ENOENT;
        case MOSQ_ERR_CONN_LOST:
                return -ECONNRESET;
        case MOSQ_ERR_TLS:
        case MOSQ_ERR_TLS_HANDSHAKE:
        case MOSQ_ERR_OCSP:
                return -EPROTO;
        case MOSQ_ERR_PAYLOAD_SIZE:
        case MOSQ_ERR_OVERSIZE_PACKET:
                return -EMSGSIZE;
        case MOSQ_ERR_NOT_SUPPORTED:
        case MOSQ_ERR_QOS_NOT_SUPPORTED:
        case MOSQ_ERR_RETAIN_NOT_SUPPORTED:
                return -EOPNOTSUPP;
        case MOSQ_ERR_AUTH:
        case MOSQ_ERR_ACL_DENIED:
                return -EACCES;
        case MOSQ_ERR_ERRNO:
                return errno_value > 0 ? -errno_value : -EIO;
        case MOSQ_ERR_EAI:
        case MOSQ_ERR_LOOKUP:
                return -EHOSTUNREACH;
        case MOSQ_ERR_MALFORMED_UTF8:
                return -EILSEQ;
        case MOSQ_ERR_KEEPALIVE:
        case MOSQ_ERR_TIMEOUT:
                return -ETIMEDOUT;
        default:
                return -EIO;
        }
}

/* A readable reason for a libmosquitto error or, above 127, an MQTT 5 reason code (libmosquitto
 * hands DISCONNECT reason codes from the broker to on_disconnect in the same int). */
static const char *mosq_describe(int rc, int errno_value) {
        if (rc >= 128)
                return mosquitto_reason_string(rc);
        switch (rc) {
        case MOSQ_ERR_ERRNO:
                return errno_value > 0 ? strerror(errno_value) : "system error";
        case MOSQ_ERR_EAI:
                return "host name lookup failed";
        /* Codes libmosquitto 2.0 has no text for ("Unknown error."). */
        case MOSQ_ERR_KEEPALIVE:
                return "no answer from the broker within the keepalive interval";
        case MOSQ_ERR_MALFORMED_PACKET:
                return "malformed packet from the broker";
        case MOSQ_ERR_TIMEOUT:
                return "timed out";
        case MOSQ_ERR_ADMINISTRATIVE_ACTION:
                return "disconnected by the broker's administrator";
        default:
                return mosquitto_strerror(rc);
        }
}

static uint64_t now_usec(MqttTask *m) {
        return event_now_usec(m->event, CLOCK_MONOTONIC);
}

static uint64_t random_u64(void) {
        uint64_t v;

        if (getrandom(&v, sizeof(v), GRND_NONBLOCK) == (ssize_t) sizeof(v))
                return v;
        /* No entropy yet (early boot): jitter only has to differ between gateways. */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ((uint64_t) ts.tv_nsec << 20) ^ (uint64_t) getpid() ^ (uint64_t) ts.tv_sec;
}

/* Delay before retry number attempt (1-based): 0.2 s, 0.4 s, ... capped at 30 s, then a random
 * point in the upper half of that. */
static uint64_t backoff_usec(unsigned attempt) {
        uint64_t d = BACKOFF_MIN_USEC;

        for (unsigned i = 1; i < attempt && d < BACKOFF_MAX_USEC; i++)
                d *= 2;
        d = MIN(d, BACKOFF_MAX_USEC);
        return d / 2 + random_u64() % (d / 2 + 1);
}

/* The Maximum Packet Size we ask of an MQTT 5 broker: a PUBLISH with a payload of max_payload
 * bytes and anything the broker may put around it (the longest topic MQTT allows, the packet
 * id, properties such as subscription identifiers) fits; a payload over max_payload is a
 * too_long reject as long as the packet fits too, and beyond that the broker drops it. */
static uint32_t max_packet_size(size_t max_payload) {
        uint64_t size = (uint64_t) max_payload + PUBLISH_OVERHEAD_MAX;

        return (uint32_t) MIN(size, (uint64_t) UINT32_MAX);
}

static uint64_t connect_timeout_usec(const MqttConfig *c) {
        uint64_t t = (uint64_t) c->keepalive * USEC_PER_SEC;

        return MIN(MAX(t, CONNECT_TIMEOUT_MIN_USEC), CONNECT_TIMEOUT_MAX_USEC);
}

static bool state_has_connection(MqttState s) {
        return s == MQTT_STATE_CONNECTING || s == MQTT_STATE_SUBSCRIBING || s == MQTT_STATE_CONNECTED ||
               s == MQTT_STATE_STOPPING;
}

static void mqtt_drop_io(MqttTask *m) {
        m->io_source = sd_event_source_disable_unref(m->io_source);
        m->io_fd = -EBADF;
        m->io_events = 0;
        m->io_enabled = false;
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata);

/* Makes the io source follow libmosquitto: its socket (a new one after every reconnect), EPOLLIN
 * unless the store refused rows, EPOLLOUT while output is queued. Call after every libmosquitto
 * call that may open or close the socket or queue output. Returns 0 or -errno. */
static int mqtt_update_io(MqttTask *m) {
        int fd, r;
        uint32_t events;

        if (!state_has_connection(m->state)) {
                mqtt_drop_io(m);
                return 0;
        }
        fd = mosquitto_socket(m->mosq);
        if (fd != m->io_fd)
                mqtt_drop_io(m);
        if (fd < 0)
                return 0;

        events = (m->store_failed ? 0 : EPOLLIN) | (mosquitto_want_write(m->mosq) ? EPOLLOUT : 0);
        if (!m->io_source) {
                r = sd_event_add_io(m->event, &m->io_source, fd, events ? events : EPOLLIN, on_io, m);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_description(m->io_source, "mqtt-socket");
                m->io_fd = fd;
                m->io_events = events ? events : EPOLLIN;
                m->io_enabled = true;
        }
        if (events != 0 && events != m->io_events) {
                r = sd_event_source_set_io_events(m->io_source, events);
                if (r < 0)
                        return r;
                m->io_events = events;
        }
        if ((events != 0) != m->io_enabled) {
                r = sd_event_source_set_enabled(m->io_source, events ? SD_EVENT_ON : SD_EVENT_OFF);
                if (r < 0)
                        return r;
                m->io_enabled = events != 0;
        }
        return 0;
}

/* Logs how many rejects the rate limit kept out of the log once its interval is over, or at
 * once with force (at stop and failure): a burst followed by silence is accounted for too. */
static void mqtt_flush_reject_log(MqttTask *m, bool force) {
        RateLimit *rl = &m->reject_ratelimit;
        uint64_t now;

        if (rl->suppressed == 0)
                return;
        /* The clock ratelimit_below() uses. */
        now = clock_now_usec(CLOCK_MONOTONIC);
        if (!force && now - rl->begin_usec < rl->interval_usec)
                return;
        log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", "mqtt"), "%u more rejected MQTT messages not logged.",
                              rl->suppressed);
        rl->suppressed = 0;
}

static void mqtt_fail(MqttTask *m, int error, const char *format, ...) _printf_(3, 4);

/* The task cannot go on: close everything and tell the supervisor (which logs the cause). */
static void mqtt_fail(MqttTask *m, int error, const char *format, ...) {
        va_list ap;
        int fd;

        if (m->state == MQTT_STATE_FAILED || m->state == MQTT_STATE_STOPPED)
                return;
        fd = mosquitto_socket(m->mosq);
        if (fd >= 0)
                (void) shutdown(fd, SHUT_RDWR);
        m->state = MQTT_STATE_FAILED;
        mqtt_flush_reject_log(m, true);
        mqtt_drop_io(m);
        m->reconnect_timer = sd_event_source_disable_unref(m->reconnect_timer);
        m->offline_timer = sd_event_source_disable_unref(m->offline_timer);
        m->misc_timer = sd_event_source_disable_unref(m->misc_timer);
        m->stop_timer = sd_event_source_disable_unref(m->stop_timer);

        va_start(ap, format);
        task_report_failurev(m->task, error, format, ap);
        va_end(ap);
}

static void mqtt_connection_closed(MqttTask *m, int rc, int errno_value);
static void on_log(struct mosquitto *mosq, void *userdata, int level, const char *message);

/* Update the io source; a failure there is a failure of the task. libmosquitto closes the
 * socket without calling on_disconnect() in a few places (a failed TLS handshake): a connection
 * whose socket is gone is handled as closed here. */
static void mqtt_sync_io(MqttTask *m) {
        int r;

        if (state_has_connection(m->state) && mosquitto_socket(m->mosq) < 0) {
                mqtt_connection_closed(m, MOSQ_ERR_CONN_LOST, 0);
                return;
        }
        r = mqtt_update_io(m);
        if (r < 0)
                mqtt_fail(m, r, "Failed to watch the MQTT socket");
}

/* The broker's certificate did not verify: a wrong CA or a certificate for another name never
 * fixes itself, so this is fatal, with what to check. */
static void mqtt_fail_certificate(MqttTask *m) {
        mqtt_fail(m, -EPROTO,
                  "TLS certificate of broker %s not accepted (check that cafile/capath holds the CA that signed "
                  "it and that it is issued for '%s'): %s",
                  m->host_port, m->config->host, m->tls_error);
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
                  m->host_port, format_timespan(text, sizeof(text), now - m->offline_usec), last);
}

static int on_offline_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        MqttTask *m = userdata;
        (void) s;

        if (m->offline_usec != 0 && m->state != MQTT_STATE_CONNECTED && m->state != MQTT_STATE_STOPPING)
                mqtt_fail_unreachable(m, usec);
        return 0;
}

/* Starts counting offline time (once per outage): the budget ends in on_offline_timer(). */
static int mqtt_begin_offline(MqttTask *m, uint64_t now) {
        uint64_t deadline;
        int r;

        if (m->offline_usec != 0)
                return 0;
        m->offline_usec = now;
        deadline = now + m->config->max_offline_usec;
        if (!m->offline_timer) {
                r = sd_event_add_time(m->event, &m->offline_timer, CLOCK_MONOTONIC, deadline, 10 * USEC_PER_MSEC,
                                      on_offline_timer, m);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_description(m->offline_timer, "mqtt-offline-budget");
                return 0;
        }
        r = sd_event_source_set_time(m->offline_timer, deadline);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(m->offline_timer, SD_EVENT_ONESHOT);
}

static int on_reconnect_timer(sd_event_source *s, uint64_t usec, void *userdata);

/* The connection is gone or could not be made: retry later with backoff, or fail when the broker
 * has been unreachable for max_offline. cause is a readable reason, error a negative errno. */
static void mqtt_connection_failed(MqttTask *m, int error, const char *cause) {
        char delay_text[32], why[256];
        uint64_t now = now_usec(m), delay, deadline, when;
        bool was_connected = m->state == MQTT_STATE_CONNECTED;
        size_t n;
        int fd, r;

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
        fd = mosquitto_socket(m->mosq);
        if (fd >= 0)
                (void) shutdown(fd, SHUT_RDWR);
        m->state = MQTT_STATE_OFFLINE;
        mqtt_drop_io(m);
        m->last_error = error < 0 ? error : -ECONNRESET;
        snprintf(m->last_cause, sizeof(m->last_cause), "%s", cause);
        r = mqtt_begin_offline(m, now);
        if (r < 0) {
                mqtt_fail(m, r, "Failed to arm the offline timer");
                return;
        }
        if (was_connected)
                m->n_reconnects++;

        deadline = m->offline_usec + m->config->max_offline_usec;
        if (now >= deadline) {
                mqtt_fail_unreachable(m, now);
                return;
        }

        if (was_connected && now - m->connected_usec >= STABLE_CONNECTION_USEC)
                m->backoff_step = 0;
        m->backoff_step++;
        delay = backoff_usec(m->backoff_step);
        /* A long backoff (after a run of short connections) must not push the next attempt
         * past the budget: the broker may be back by then, and giving up without trying would
         * turn a short outage into a restart. Near the end, tries stay BACKOFF_MIN_USEC apart. */
        uint64_t margin = MIN(LAST_ATTEMPT_MARGIN_USEC, m->config->max_offline_usec / 4);
        uint64_t latest = deadline - margin > now ? deadline - margin : now;
        when = MIN(now + delay, MAX(latest, now + BACKOFF_MIN_USEC));
        if (was_connected)
                log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", "mqtt"),
                                      "Connection to broker %s lost: %s; reconnecting in %s.", m->host_port, cause,
                                      format_timespan(delay_text, sizeof(delay_text), when - now));
        else
                log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", "mqtt"),
                                      "Failed to connect to broker %s (attempt %u): %s; retrying in %s.", m->host_port,
                                      m->attempt, cause, format_timespan(delay_text, sizeof(delay_text), when - now));

        if (!m->reconnect_timer) {
                r = sd_event_add_time(m->event, &m->reconnect_timer, CLOCK_MONOTONIC, when, 10 * USEC_PER_MSEC,
                                      on_reconnect_timer, m);
                if (r < 0) {
                        mqtt_fail(m, r, "Failed to arm the reconnect timer");
                        return;
                }
                (void) sd_event_source_set_description(m->reconnect_timer, "mqtt-reconnect");
        } else {
                r = sd_event_source_set_time(m->reconnect_timer, when);
                if (r >= 0)
                        r = sd_event_source_set_enabled(m->reconnect_timer, SD_EVENT_ONESHOT);
                if (r < 0) {
                        mqtt_fail(m, r, "Failed to arm the reconnect timer");
                        return;
                }
        }

        char degraded[256];
        snprintf(degraded, sizeof(degraded), "reconnecting to %s (attempt %u)", m->host_port, m->attempt + 1);
        task_report_degraded(m->task, degraded);
}

/* Connects to address (the host name itself, or the address it resolved to). Failures are
 * handled (retry or task failure), never returned. */
static void mqtt_connect_to(MqttTask *m, const char *address) {
        const MqttConfig *c = m->config;
        FdSnapshot fds;
        int rc, saved_errno;

        /* For a host name libmosquitto would resolve it with a blocking getaddrinfo() here; the
         * task passes an address, or a name resolved a moment ago (TLS). The TCP connect and the
         * TLS handshake are non-blocking. */
        fd_snapshot(&fds);
        errno = 0;
        rc = mosquitto_connect_bind_async(m->mosq, address, c->port, (int) c->keepalive, NULL);
        saved_errno = errno;
        fd_set_cloexec_since(&fds, m->mosq);

        switch (rc) {
        case MOSQ_ERR_SUCCESS:
                m->state = MQTT_STATE_CONNECTING;
                mqtt_sync_io(m);
                return;
        case MOSQ_ERR_ERRNO:
        case MOSQ_ERR_EAI:
        case MOSQ_ERR_CONN_LOST:
        case MOSQ_ERR_NO_CONN:
        case MOSQ_ERR_LOOKUP:
                m->state = MQTT_STATE_CONNECTING;
                mqtt_connection_failed(m, mosq_to_errno(rc, saved_errno), mosq_describe(rc, saved_errno));
                return;
        case MOSQ_ERR_TLS:
                /* On loopback the handshake may run (and fail) right inside the connect call. A
                 * certificate that does not verify, or a TLS context that cannot be set up from
                 * the configured files, never fixes itself; anything else is retried. */
                if (strstr(m->tls_error, "certificate verify failed"))
                        mqtt_fail_certificate(m);
                else if (startswith(m->lib_error, "Error: "))
                        mqtt_fail(m, -EPROTO, "TLS setup for broker %s failed: %s%s%s", m->host_port,
                                  m->lib_error + 7, m->tls_error[0] ? " " : "", m->tls_error);
                else {
                        m->state = MQTT_STATE_CONNECTING;
                        mqtt_connection_failed(m, -EPROTO, m->tls_error[0] ? m->tls_error : "TLS handshake failed");
                }
                return;
        default:
                mqtt_fail(m, mosq_to_errno(rc, saved_errno), "Failed to connect to broker %s: %s", m->host_port,
                          mosq_describe(rc, saved_errno));
                return;
        }
}

static void mqtt_lookup_free(MqttLookup *l) {
        if (!l)
                return;
        if (l->req.ar_result)
                freeaddrinfo(l->req.ar_result);
        free(l);
}

/* Runs in a thread glibc starts when a lookup ends: wakes the loop, nothing else. */
static void mqtt_lookup_announce(union sigval v) {
        uint64_t one = 1;

        (void) !write(v.sival_int, &one, sizeof(one));
}

static int gai_to_errno(int rc) {
        switch (rc) {
        case EAI_MEMORY:
                return -ENOMEM;
        case EAI_AGAIN:
        case EAI_FAIL:
        case EAI_NONAME:
        case EAI_NODATA:
        case EAI_ADDRFAMILY:
        case EAI_SYSTEM:
                return -EHOSTUNREACH;
        default:
                return -EINVAL;
        }
}

/* Starts looking up the broker's host name. Returns 0, or -errno with ret_cause. */
static int mqtt_lookup_start(MqttTask *m, const char **ret_cause) {
        const char *host = m->config->host;
        struct gaicb *list[1];
        struct sigevent sev = {
                .sigev_notify = SIGEV_THREAD,
                .sigev_value.sival_int = m->lookup_fd,
                .sigev_notify_function = mqtt_lookup_announce,
        };
        MqttLookup *l;
        int rc;

        l = calloc(1, offsetof(MqttLookup, host) + strlen(host) + 1);
        if (!l) {
                *ret_cause = "out of memory";
                return -ENOMEM;
        }
        strcpy(l->host, host);
        /* What libmosquitto asks for itself. */
        l->hints.ai_family = AF_UNSPEC;
        l->hints.ai_socktype = SOCK_STREAM;
        l->req.ar_name = l->host;
        l->req.ar_request = &l->hints;
        list[0] = &l->req;
        rc = getaddrinfo_a(GAI_NOWAIT, list, 1, &sev);
        if (rc != 0) {
                free(l);
                *ret_cause = gai_strerror(rc);
                return gai_to_errno(rc);
        }
        m->lookup = l;
        m->n_lookups++;
        return 0;
}

/* The lookup has ended? Then connect to what it found, or count a failed attempt. Called when
 * the eventfd says so, and from the housekeeping timer in case an announcement never came. */
static void mqtt_lookup_check(MqttTask *m) {
        _cleanup_free_ MqttLookup *l = NULL;
        struct addrinfo *res, *ai;
        char address[NI_MAXHOST], cause[300];
        size_t n = 0, pick;
        int rc;

        if (!m->lookup)
                return;
        rc = gai_error(&m->lookup->req);
        if (rc == EAI_INPROGRESS)
                return;
        l = TAKE_PTR(m->lookup);
        res = TAKE_PTR(l->req.ar_result);
        if (m->state != MQTT_STATE_RESOLVING) {
                /* The attempt that wanted it is over: a new one looks up afresh. */
                if (res)
                        freeaddrinfo(res);
                return;
        }

        if (rc != 0 || !res) {
                if (res)
                        freeaddrinfo(res);
                snprintf(cause, sizeof(cause), "host name lookup failed: %s", rc != 0 ? gai_strerror(rc) : "no address");
                if (rc == EAI_MEMORY)
                        mqtt_fail(m, -ENOMEM, "Failed to look up broker %s: %s", m->host_port, gai_strerror(rc));
                else
                        mqtt_connection_failed(m, rc != 0 ? gai_to_errno(rc) : -EHOSTUNREACH, cause);
                return;
        }

        /* Successive attempts take successive addresses, so one that does not answer is not
         * tried forever. */
        for (ai = res; ai; ai = ai->ai_next)
                n++;
        pick = (m->attempt - 1) % n;
        for (ai = res; pick > 0; pick--)
                ai = ai->ai_next;
        rc = getnameinfo(ai->ai_addr, ai->ai_addrlen, address, sizeof(address), NULL, 0, NI_NUMERICHOST);
        freeaddrinfo(res);
        if (rc != 0) {
                snprintf(cause, sizeof(cause), "could not format the address of '%s': %s", m->config->host,
                         gai_strerror(rc));
                mqtt_connection_failed(m, gai_to_errno(rc), cause);
                return;
        }
        log_full_errno_fields(LOG_DEBUG, 0, LOG_FIELDS("TASK", "mqtt"), "Resolved '%s' to %s (%zu address%s).",
                              m->config->host, address, n, n == 1 ? "" : "es");

        /* With TLS libmosquitto checks the certificate against the name it connects to, so it
         * gets the name and resolves it once more itself (blocking, but answered a moment ago:
         * from /etc/hosts or a local cache, if there is one). The lookup here is the gate
         * that keeps an unanswering DNS server from blocking the loop. */
        mqtt_connect_to(m, m->config->cafile || m->config->capath ? m->config->host : address);
}

/* At free: a lookup still running is left to glibc (in abandoned_lookups), and the eventfd
 * stays open while an announcement may still come, as glibc's thread writes to its number.
 * That only happens at exit. */
static void mqtt_lookup_release(MqttTask *m) {
        uint64_t n;

        if (m->lookup) {
                int rc = gai_cancel(&m->lookup->req);

                if (rc == EAI_NOTCANCELED) {
                        m->lookup->next = abandoned_lookups;
                        abandoned_lookups = TAKE_PTR(m->lookup);
                } else {
                        if (rc == EAI_CANCELED) /* never ran: nothing will be announced */
                                m->n_lookups_announced++;
                        mqtt_lookup_free(TAKE_PTR(m->lookup));
                }
        }
        if (m->lookup_fd < 0)
                return;
        if (read(m->lookup_fd, &n, sizeof(n)) == (ssize_t) sizeof(n))
                m->n_lookups_announced += n;
        if (m->n_lookups_announced >= m->n_lookups)
                m->lookup_fd = safe_close(m->lookup_fd);
}

static int on_lookup_event(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        MqttTask *m = userdata;
        uint64_t n;
        (void) s;
        (void) revents;

        if (read(fd, &n, sizeof(n)) == (ssize_t) sizeof(n))
                m->n_lookups_announced += n;
        mqtt_lookup_check(m);
        return 0;
}

/* Starts one connection attempt: with a lookup first when the host is a name. Failures are
 * handled (retry or task failure), never returned. */
static void mqtt_connect(MqttTask *m) {
        const char *cause = NULL;
        int r;

        m->attempt++;
        m->attempt_usec = now_usec(m);
        m->tls_error[0] = 0;
        m->lib_error[0] = 0;
        m->n_subs_pending = 0;
        m->unsub_pending = false;
        mosquitto_log_callback_set(m->mosq, on_log);

        if (!m->needs_lookup) {
                mqtt_connect_to(m, m->config->host);
                return;
        }
        m->state = MQTT_STATE_RESOLVING;
        /* The lookup of an earlier attempt still running (its attempt timed out): this one
         * waits for it rather than queueing another behind it. */
        if (m->lookup)
                return;
        r = mqtt_lookup_start(m, &cause);
        if (r == -ENOMEM)
                mqtt_fail(m, r, "Failed to look up broker %s: %s", m->host_port, cause);
        else if (r < 0) {
                char text[300];

                snprintf(text, sizeof(text), "host name lookup failed to start: %s", cause);
                mqtt_connection_failed(m, r, text);
        }
}

static int on_reconnect_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        MqttTask *m = userdata;
        (void) s;

        if (m->state != MQTT_STATE_OFFLINE)
                return 0;
        if (usec >= m->offline_usec + m->config->max_offline_usec) {
                mqtt_fail_unreachable(m, usec);
                return 0;
        }
        mqtt_connect(m);
        return 0;
}

/* Cut the current connection from our side (timeout, hang-up libmosquitto did not notice). */
static void mqtt_abort_connection(MqttTask *m, int error, const char *cause) {
        if (!state_has_connection(m->state) || m->state == MQTT_STATE_STOPPING)
                return;
        mqtt_connection_failed(m, error, cause);
}

static int on_misc_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        MqttTask *m = userdata;
        char text[32], cause[128];
        uint64_t now = now_usec(m);

        /* One period after it was due, or now when the loop was held up longer than that: after
         * a stall one catch-up run, not one per missed period. */
        if (now > usec + MISC_INTERVAL_USEC)
                log_full_errno_fields(LOG_DEBUG, 0, LOG_FIELDS("TASK", "mqtt"), "Housekeeping ran %s late.",
                                      format_timespan(text, sizeof(text), now - usec));
        (void) sd_event_source_set_time(s, MAX(usec + MISC_INTERVAL_USEC, now));
        mqtt_flush_reject_log(m, false);

        /* In case glibc could not start the thread that announces the end of a lookup. */
        mqtt_lookup_check(m);
        if (m->state == MQTT_STATE_RESOLVING && now >= m->attempt_usec + connect_timeout_usec(m->config)) {
                snprintf(cause, sizeof(cause), "no answer to the lookup of '%s' within %s", m->config->host,
                         format_timespan(text, sizeof(text), connect_timeout_usec(m->config)));
                mqtt_connection_failed(m, -ETIMEDOUT, cause);
                return 0;
        }
        if ((m->state == MQTT_STATE_CONNECTING || m->state == MQTT_STATE_SUBSCRIBING) &&
            now >= m->attempt_usec + connect_timeout_usec(m->config)) {
                snprintf(cause, sizeof(cause), "no %s within %s", m->state == MQTT_STATE_CONNECTING ? "CONNACK" : "SUBACK",
                         format_timespan(text, sizeof(text), connect_timeout_usec(m->config)));
                mqtt_abort_connection(m, -ETIMEDOUT, cause);
                return 0;
        }
        if (state_has_connection(m->state) && m->io_source) {
                /* Keepalive: sends PINGREQ, or closes the connection (on_disconnect) when the broker
                 * stayed silent for too long. */
                (void) mosquitto_loop_misc(m->mosq);
                mqtt_sync_io(m);
        }
        return 0;
}

static void mqtt_format_counters(MqttTask *m, char *buf, size_t size);

/* The connection is closed after stop() (or there was none): log what the task did, and report
 * stopped when stop() said it would. A failed task stays failed. */
static void mqtt_finish_stop(MqttTask *m) {
        char counters[200];

        mqtt_drop_io(m);
        m->stop_timer = sd_event_source_disable_unref(m->stop_timer);
        if (m->state == MQTT_STATE_FAILED || m->state == MQTT_STATE_STOPPED)
                return;
        m->state = MQTT_STATE_STOPPED;
        mqtt_flush_reject_log(m, true);
        mqtt_format_counters(m, counters, sizeof(counters));
        log_full_errno_fields(LOG_INFO, 0, LOG_FIELDS("TASK", "mqtt"), "Stopped (%s).", counters);
        if (m->stop_pending)
                task_report_stopped(m->task);
}

static int on_stop_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        MqttTask *m = userdata;
        int fd;
        (void) s;
        (void) usec;

        if (m->state != MQTT_STATE_STOPPING)
                return 0;
        log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", "mqtt"),
                              "DISCONNECT to broker %s not sent within %" PRIu64 " ms, closing the connection.",
                              m->host_port, STOP_FLUSH_USEC / USEC_PER_MSEC);
        fd = mosquitto_socket(m->mosq);
        if (fd >= 0)
                (void) shutdown(fd, SHUT_RDWR);
        mqtt_finish_stop(m);
        return 0;
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        MqttTask *m = userdata;
        int rc;
        (void) s;

        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                errno = 0;
                rc = mosquitto_loop_read(m->mosq, READ_PACKET_BUDGET);
                /* Errors end in on_disconnect(), which has handled them by now. */
                (void) rc;
        }
        if (state_has_connection(m->state) && mosquitto_socket(m->mosq) == fd &&
            (revents & EPOLLOUT || mosquitto_want_write(m->mosq))) {
                errno = 0;
                rc = mosquitto_loop_write(m->mosq, WRITE_PACKET_BUDGET);
                (void) rc;
        }

        /* A hang-up or error that libmosquitto did not turn into a disconnect (possible in the
         * middle of a TLS handshake) would wake us forever: end that connection ourselves. */
        if (state_has_connection(m->state) && mosquitto_socket(m->mosq) == fd && (revents & (EPOLLHUP | EPOLLERR))) {
                int error = 0;
                socklen_t len = sizeof(error);

                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0 || error == 0)
                        error = ECONNRESET;
                if (m->state == MQTT_STATE_STOPPING) {
                        mqtt_finish_stop(m);
                        return 0;
                }
                mqtt_abort_connection(m, -error, m->tls_error[0] ? m->tls_error : strerror(error));
                return 0;
        }
        mqtt_sync_io(m);
        return 0;
}

/* The CONNACK refusals that no retry can fix: credentials, authorization, identity, protocol. */
static bool connack_is_fatal(MqttProtocol protocol, int rc) {
        if (protocol == MQTT_PROTOCOL_V311)
                return rc == 1 || rc == 2 || rc == 4 || rc == 5; /* 3: server unavailable, retry */
        switch (rc) {
        case MQTT_RC_MALFORMED_PACKET:
        case MQTT_RC_PROTOCOL_ERROR:
        case MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION:
        case MQTT_RC_CLIENTID_NOT_VALID:
        case MQTT_RC_BAD_USERNAME_OR_PASSWORD:
        case MQTT_RC_NOT_AUTHORIZED:
        case MQTT_RC_BANNED:
        case MQTT_RC_BAD_AUTHENTICATION_METHOD:
        case MQTT_RC_TOPIC_NAME_INVALID:
        case MQTT_RC_PACKET_TOO_LARGE:
        case MQTT_RC_PAYLOAD_FORMAT_INVALID:
        case MQTT_RC_RETAIN_NOT_SUPPORTED:
        case MQTT_RC_QOS_NOT_SUPPORTED:
                return true;
        default:
                return false; /* unspecified, server unavailable/busy, quota, rate, moved: retry */
        }
}

static int connack_errno(MqttProtocol protocol, int rc) {
        if (protocol == MQTT_PROTOCOL_V311)
                switch (rc) {
                case 1:
                        return -EPROTONOSUPPORT;
                case 2:
                        return -EINVAL;
                case 3:
                        return -ECONNREFUSED;
                default:
                        return -EACCES;
                }
        switch (rc) {
        case MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION:
                return -EPROTONOSUPPORT;
        case MQTT_RC_CLIENTID_NOT_VALID:
                return -EINVAL;
        case MQTT_RC_BAD_USERNAME_OR_PASSWORD:
        case MQTT_RC_NOT_AUTHORIZED:
        case MQTT_RC_BANNED:
        case MQTT_RC_BAD_AUTHENTICATION_METHOD:
                return -EACCES;
        case MQTT_RC_SERVER_UNAVAILABLE:
        case MQTT_RC_SERVER_BUSY:
                return -ECONNREFUSED;
        default:
                return -EPROTO;
        }
}

static const char *connack_describe(MqttProtocol protocol, int rc) {
        return protocol == MQTT_PROTOCOL_V311 ? mosquitto_connack_string(rc) : mosquitto_reason_string(rc);
}

/* ---- the filters of a persistent session, remembered in the store ----
 *
 * A broker keeps the subscriptions of a persistent session across our restarts, also those of
 * filters a later configuration no longer has: with MQTT 3.1.1 their messages would arrive as
 * topic_mismatch rejects forever, with MQTT 5 they would carry the identifier of whatever topic
 * now has their index, and be stored twice. So the store keeps the set of filters that may be
 * subscribed in the session (the configured ones and, until their UNSUBACK, stale ones), and
 * when the broker says the session is present, the stale ones are unsubscribed before the task
 * counts as running. */

static void mqtt_store_failed(MqttTask *m);

static void strv_free_n(char **v, size_t n) {
        if (!v)
                return;
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

static bool strv_contains(char *const *v, size_t n, const char *s) {
        for (size_t i = 0; i < n; i++)
                if (streq(v[i], s))
                        return true;
        return false;
}

/* Every subscription filter of the configuration (without duplicates) into a borrowed list;
 * returns how many. list has room for n_topics. */
static size_t mqtt_configured_filters(MqttTask *m, const char **list) {
        size_t n = 0;

        for (size_t i = 0; i < m->config->n_topics; i++) {
                const char *f = topic_pattern_subscription(m->patterns[i]);

                if (!strv_contains((char *const *) list, n, f))
                        list[n++] = f;
        }
        return n;
}

/* Reads what the store remembers for our session (filters, each NUL-terminated: MQTT strings
 * cannot hold U+0000). A store that cannot say is logged and treated as remembering nothing. */
static void mqtt_load_remembered(MqttTask *m) {
        _cleanup_free_ char *value = NULL;
        void *v = NULL;
        size_t size = 0, n = 0;
        int r;

        r = store_get_meta(m->store, m->subs_key, &v, &size);
        value = v;
        if (r < 0) {
                log_full_errno_fields(LOG_WARNING, r, LOG_FIELDS("TASK", "mqtt"),
                                      "Failed to read the subscriptions of the last run from the store, ignoring: %m");
                return;
        }
        for (size_t i = 0; i < size; i++)
                if (value[i] == 0)
                        n++;
        strv_free_n(m->remembered, m->n_remembered);
        m->remembered = NULL;
        m->n_remembered = 0;
        if (n == 0)
                return;
        m->remembered = calloc(n, sizeof(char *));
        if (!m->remembered)
                return; /* as good as remembering nothing */
        for (size_t i = 0; i < size && m->n_remembered < n; i += strlen(value + i) + 1) {
                m->remembered[m->n_remembered] = strdup(value + i);
                if (!m->remembered[m->n_remembered])
                        break;
                m->n_remembered++;
        }
}

/* Makes the store remember exactly these filters for our session (nothing is written when it
 * already does). Returns 0, or -errno when the store failed (it reports that itself). */
static int mqtt_remember(MqttTask *m, const char *const *filters, size_t n) {
        _cleanup_free_ char *value = NULL;
        char **copy;
        size_t size = 0, same = 0;
        int r;

        for (size_t i = 0; i < n; i++)
                if (strv_contains(m->remembered, m->n_remembered, filters[i]))
                        same++;
        if (same == n && n == m->n_remembered)
                return 0;

        for (size_t i = 0; i < n; i++)
                size += strlen(filters[i]) + 1;
        value = calloc(MAX(size, 1u), 1); /* zeroed: an empty list is one NUL byte */
        copy = calloc(MAX(n, 1u), sizeof(char *));
        if (!value || !copy) {
                free(copy);
                return -ENOMEM;
        }
        size = 0;
        for (size_t i = 0; i < n; i++) {
                size_t len = strlen(filters[i]) + 1;

                memcpy(value + size, filters[i], len);
                size += len;
                copy[i] = strdup(filters[i]);
                if (!copy[i]) {
                        strv_free_n(copy, i);
                        return -ENOMEM;
                }
        }
        r = store_set_meta(m->store, m->subs_key, value, size);
        if (r < 0) {
                strv_free_n(copy, n);
                return r;
        }
        strv_free_n(m->remembered, m->n_remembered);
        m->remembered = copy;
        m->n_remembered = n;
        return 0;
}

/* After CONNACK: remember what may now be subscribed and unsubscribe the stale filters of a
 * present session. Returns 0, or -errno (the connection or the task has been handled). */
static int mqtt_drop_stale_filters(MqttTask *m, bool session_present) {
        const MqttConfig *c = m->config;
        _cleanup_free_ const char **filters = NULL;
        char **stale = NULL; /* copies: mqtt_remember() replaces m->remembered */
        size_t n_filters, n_stale = 0;
        char list[512];
        size_t used = 0;
        int r, k, mid = 0, saved_errno;

        m->unsub_pending = false;
        if (c->clean_session)
                return 0;

        filters = calloc(c->n_topics + m->n_remembered + 1, sizeof(char *));
        stale = calloc(m->n_remembered + 1, sizeof(char *));
        if (!filters || !stale) {
                free(stale);
                mqtt_fail(m, -ENOMEM, "Failed to compare the subscriptions of the session with the configuration");
                return -ENOMEM;
        }
        n_filters = mqtt_configured_filters(m, filters);
        if (session_present)
                for (size_t i = 0; i < m->n_remembered; i++)
                        if (!strv_contains((char *const *) filters, n_filters, m->remembered[i])) {
                                stale[n_stale] = strdup(m->remembered[i]);
                                if (!stale[n_stale]) {
                                        strv_free_n(stale, n_stale);
                                        mqtt_fail(m, -ENOMEM, "Failed to compare the subscriptions of the session with the configuration");
                                        return -ENOMEM;
                                }
                                n_stale++;
                        }

        /* Written before anything goes out: a crash in between leaves the store knowing more
         * filters than the session has, never fewer. */
        for (size_t i = 0; i < n_stale; i++)
                filters[n_filters + i] = stale[i];
        r = mqtt_remember(m, filters, n_filters + n_stale);
        if (r < 0) {
                strv_free_n(stale, n_stale);
                if (r == -ENOMEM)
                        mqtt_fail(m, r, "Failed to remember the subscriptions of the session");
                else
                        mqtt_store_failed(m);
                return r;
        }
        if (n_stale == 0) {
                free(stale);
                return 0;
        }

        list[0] = 0;
        for (size_t i = 0; i < n_stale && used < sizeof(list); i++)
                used += (size_t) snprintf(list + used, sizeof(list) - used, "%s'%s'", i > 0 ? ", " : "", stale[i]);
        log_full_errno_fields(LOG_INFO, 0, LOG_FIELDS("TASK", "mqtt"),
                              "Unsubscribing from %zu filter%s an earlier configuration left in the session: %s.", n_stale,
                              n_stale == 1 ? "" : "s", list);
        errno = 0;
        k = mosquitto_unsubscribe_multiple(m->mosq, &mid, (int) n_stale, stale, NULL);
        saved_errno = errno;
        strv_free_n(stale, n_stale);
        if (k != MOSQ_ERR_SUCCESS) {
                if (k == MOSQ_ERR_NO_CONN || k == MOSQ_ERR_ERRNO || k == MOSQ_ERR_CONN_LOST)
                        mqtt_connection_failed(m, mosq_to_errno(k, saved_errno), mosq_describe(k, saved_errno));
                else
                        mqtt_fail(m, mosq_to_errno(k, saved_errno), "Failed to unsubscribe from stale filters: %s",
                                  mosq_describe(k, saved_errno));
                return mosq_to_errno(k, saved_errno);
        }
        m->unsub_mid = mid;
        m->unsub_pending = true;
        return 0;
}

static void on_connect(struct mosquitto *mosq, void *userdata, int rc, int flags, const mosquitto_property *props) {
        MqttTask *m = userdata;
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
                if (connack_is_fatal(c->protocol, rc))
                        mqtt_fail(m, connack_errno(c->protocol, rc), "%s", cause);
                else
                        mqtt_connection_failed(m, connack_errno(c->protocol, rc), cause);
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
                                k = mosquitto_subscribe_v5(m->mosq, &mid, topic_pattern_subscription(m->patterns[i]),
                                                           c->topics[i].qos, 0, sub_props);
                        mosquitto_property_free_all(&sub_props);
                } else
                        k = mosquitto_subscribe(m->mosq, &mid, topic_pattern_subscription(m->patterns[i]),
                                                c->topics[i].qos);
                if (k != MOSQ_ERR_SUCCESS) {
                        if (k == MOSQ_ERR_NO_CONN || k == MOSQ_ERR_ERRNO || k == MOSQ_ERR_CONN_LOST) {
                                mqtt_connection_failed(m, mosq_to_errno(k, errno), mosq_describe(k, errno));
                                return;
                        }
                        mqtt_fail(m, mosq_to_errno(k, errno), "Failed to subscribe to '%s': %s", c->topics[i].filter,
                                  mosq_describe(k, errno));
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
        if (m->offline_usec != 0 && m->ever_connected)
                log_full_errno_fields(LOG_INFO, 0, LOG_FIELDS("TASK", "mqtt"),
                                      "Reconnected to broker %s after %s offline (%u attempt%s).", m->host_port,
                                      format_timespan(text, sizeof(text), now - m->offline_usec), m->attempt,
                                      m->attempt == 1 ? "" : "s");
        else
                log_full_errno_fields(LOG_INFO, 0, LOG_FIELDS("TASK", "mqtt"),
                                      "Connected to broker %s, %zu subscription%s granted.", m->host_port,
                                      m->config->n_topics, m->config->n_topics == 1 ? "" : "s");
        m->ever_connected = true;
        m->connected_usec = now;
        m->offline_usec = 0;
        (void) sd_event_source_set_enabled(m->offline_timer, SD_EVENT_OFF);
        m->attempt = 0;
        m->last_error = 0;

        /* Every stale filter is gone from the session now: only the configured ones remain. */
        if (!m->config->clean_session) {
                _cleanup_free_ const char **filters = calloc(m->config->n_topics + 1, sizeof(char *));
                int r = filters ? mqtt_remember(m, filters, mqtt_configured_filters(m, filters)) : -ENOMEM;

                if (r == -ENOMEM) {
                        mqtt_fail(m, r, "Failed to remember the subscriptions of the session");
                        return;
                }
                if (r < 0) {
                        mqtt_store_failed(m);
                        return;
                }
        }
        task_report_running(m->task);

        /* libmosquitto formats a log line for every packet whenever a log callback is set; we
         * only need it for the causes of failed connection attempts (OpenSSL's reasons), so it
         * is off while connected, unless debugging. */
        if (log_get_max_level() < LOG_DEBUG)
                mosquitto_log_callback_set(m->mosq, NULL);
}

static void on_subscribe(struct mosquitto *mosq, void *userdata, int mid, int qos_count, const int *granted_qos,
                         const mosquitto_property *props) {
        MqttTask *m = userdata;
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
                        mqtt_fail(m, -EACCES, "broker %s refused the subscription to '%s' (SUBACK 0x%02x: %s)",
                                  m->host_port, c->topics[i].filter, (unsigned) granted,
                                  c->protocol == MQTT_PROTOCOL_V5 ? mosquitto_reason_string(granted) : "Failure");
                        return;
                }
                if (granted < c->topics[i].qos)
                        log_full_errno_fields(LOG_NOTICE, 0, LOG_FIELDS("TASK", "mqtt", "TOPIC", c->topics[i].filter),
                                              "Broker %s granted QoS %d for '%s' where %d was asked.", m->host_port,
                                              granted, c->topics[i].filter, c->topics[i].qos);
                if (m->n_subs_pending > 0)
                        m->n_subs_pending--;
                break;
        }
        if (m->n_subs_pending == 0 && !m->unsub_pending)
                mqtt_now_running(m);
}

static void on_unsubscribe(struct mosquitto *mosq, void *userdata, int mid, const mosquitto_property *props) {
        MqttTask *m = userdata;
        (void) mosq;
        (void) props;

        if (m->state != MQTT_STATE_SUBSCRIBING || !m->unsub_pending || mid != m->unsub_mid)
                return;
        m->unsub_pending = false;
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
        if (m->state == MQTT_STATE_CONNECTING && strstr(m->tls_error, "certificate verify failed")) {
                mqtt_fail_certificate(m);
                return;
        }

        if (m->tls_error[0] && m->state == MQTT_STATE_CONNECTING)
                snprintf(cause, sizeof(cause), "TLS handshake failed: %s", m->tls_error);
        else
                snprintf(cause, sizeof(cause), "%s", mosq_describe(rc, errno_value));
        mqtt_connection_failed(m, rc >= 128 ? -ECONNRESET : mosq_to_errno(rc ? rc : MOSQ_ERR_CONN_LOST, errno_value),
                               cause);
}

static void on_disconnect(struct mosquitto *mosq, void *userdata, int rc, const mosquitto_property *props) {
        (void) mosq;
        (void) props;
        mqtt_connection_closed(userdata, rc, errno);
}

static void on_log(struct mosquitto *mosq, void *userdata, int level, const char *message) {
        MqttTask *m = userdata;
        (void) mosq;

        /* libmosquitto reports OpenSSL's reasons (and its own TLS setup errors) only here; keep
         * the first of each attempt for the cause. */
        if (level == MOSQ_LOG_ERR && message) {
                if (startswith(message, "OpenSSL Error")) {
                        const char *p = strstr(message, "]: ");
                        if (!m->tls_error[0])
                                snprintf(m->tls_error, sizeof(m->tls_error), "%s", p ? p + 3 : message);
                } else if (!m->lib_error[0])
                        snprintf(m->lib_error, sizeof(m->lib_error), "%s", message);
        }
        if (log_get_max_level() >= LOG_DEBUG)
                log_full_errno_fields(LOG_DEBUG, 0, LOG_FIELDS("TASK", "mqtt"), "libmosquitto: %s", strna(message));
}

static void mqtt_log_reject(MqttTask *m, const char *topic, const char *sensor, FrameReject reason, size_t size) {
        unsigned suppressed = 0;

        if (!ratelimit_below(&m->reject_ratelimit, &suppressed))
                return;
        if (suppressed > 0)
                log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", "mqtt"),
                                      "%u more rejected MQTT messages not logged.", suppressed);
        log_full_errno_fields(LOG_WARNING, 0,
                              LOG_FIELDS("TASK", "mqtt", "TOPIC", topic, "SENSOR_ID", sensor && *sensor ? sensor : NULL),
                              "Rejected message on '%s' (%zu bytes): %s; kept in the reject table.", topic, size,
                              frame_reject_to_string(reason));
}

static void mqtt_store_failed(MqttTask *m) {
        /* The store has reported its own failure; the supervisor stops everything. Until then
         * read nothing more: TCP pushes back on the broker. */
        m->store_failed = true;
}

/* False when the message carries MQTT 5 subscription identifiers and none is topic's (index+1):
 * then it is the copy delivered for an overlapping subscription. Without identifiers (MQTT
 * 3.1.1, where mosquitto sends one copy) it is always for us. */
static bool mqtt_message_is_for(const mosquitto_property *props, size_t topic) {
        const mosquitto_property *p;
        uint32_t id;
        bool any = false;

        for (p = mosquitto_property_read_varint(props, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, &id, false); p;
             p = mosquitto_property_read_varint(p, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, &id, true)) {
                if (id == topic + 1)
                        return true;
                any = true;
        }
        return !any;
}

static void on_message(struct mosquitto *mosq, void *userdata, const struct mosquitto_message *msg,
                       const mosquitto_property *props) {
        MqttTask *m = userdata;
        const MqttConfig *c = m->config;
        char sensor[SENSOR_ID_MAX + 1] = "", metric[METRIC_NAME_MAX + 1] = "";
        const MqttTopicConfig *tc = NULL;
        const TopicPattern *pattern = NULL;
        FrameReject reason = FRAME_REJECT_TOPIC_MISMATCH;
        int64_t received_ms = wall_clock_ms();
        size_t size = msg->payloadlen > 0 ? (size_t) msg->payloadlen : 0;
        Frame frame;
        int r;
        (void) mosq;

        if (m->store_failed || m->state == MQTT_STATE_FAILED || !msg->topic)
                return;

        /* The first configured topic whose pattern matches decides how the payload is read. */
        for (size_t i = 0; i < c->n_topics; i++)
                if (topic_pattern_match(m->patterns[i], msg->topic, sensor, metric) > 0) {
                        tc = &c->topics[i];
                        pattern = m->patterns[i];
                        break;
                }
        if (!tc)
                goto reject;
        if (!mqtt_message_is_for(props, (size_t) (tc - c->topics))) {
                /* Another subscription's copy of a message we take from this topic's copy. */
                m->n_duplicates++;
                return;
        }
        if (tc->sensor && !sensor[0])
                snprintf(sensor, sizeof(sensor), "%s", tc->sensor);

        r = frame_parse_mqtt(pattern, tc->format, tc->sensor, tc->metric, msg->topic, msg->payload, size,
                             c->max_payload_bytes, &frame, &reason);
        if (r == -EBADMSG)
                goto reject;
        if (r < 0) {
                /* Not a verdict on the payload but a fault of ours (out of memory, or a format the
                 * parser does not know, which config validation rules out): no reason to store it
                 * under, and the message would be lost silently if we went on. */
                mqtt_fail(m, r, "Failed to parse a message on '%s'", msg->topic);
                return;
        }

        /* A retained message arrives again on every subscribe; without the sensor's own
         * timestamp it is an old value of unknown age, not a reading taken now. */
        if (msg->retain && !frame.has_ts) {
                m->n_retained_skipped++;
                log_full_errno_fields(LOG_DEBUG, 0, LOG_FIELDS("TASK", "mqtt", "TOPIC", msg->topic, "SENSOR_ID", frame.sensor),
                                      "Skipping retained message without timestamp on '%s'.", msg->topic);
                return;
        }

        for (size_t i = 0; i < frame.n_metrics; i++) {
                Reading reading = {
                        .sensor = frame.sensor,
                        .metric = frame.metrics[i].name,
                        .value = frame.metrics[i].value,
                        .ts_ms = frame.has_ts ? frame.ts_ms : received_ms,
                        .sensor_ts = frame.has_ts,
                        .received_ms = received_ms,
                        .source = READING_SOURCE_MQTT,
                        .origin = msg->topic,
                };

                r = store_append(m->store, &reading);
                if (r < 0) {
                        mqtt_store_failed(m);
                        return;
                }
        }
        m->n_messages++;
        return;

reject:
        m->n_rejects++;
        mqtt_log_reject(m, msg->topic, sensor, reason, size);
        r = store_append_reject(m->store, &(Reject){
                                                  .received_ms = received_ms,
                                                  .source = READING_SOURCE_MQTT,
                                                  .origin = msg->topic,
                                                  .raw = msg->payload,
                                                  .raw_size = MIN(size, c->max_payload_bytes),
                                                  .reason = reason,
                                          });
        if (r < 0)
                mqtt_store_failed(m);
}

/* Zeroes a buffer that held a secret, all of it, and frees it. */
static void erase_and_free(char *p, size_t size) {
        if (!p)
                return;
        explicit_bzero(p, size);
        free(p);
}

/* The password: $CREDENTIALS_DIRECTORY/<basename of password_file> (or "mqtt-password" when no
 * file is configured) when systemd passed credentials, else password_file. Returns 0 with
 * *ret (NULL when there is none; an allocation of exactly the password and its NUL), or -errno
 * with *ret untouched and *ret_path naming the file that failed. What was read is zeroed. */
static int mqtt_read_password(const MqttConfig *c, char **ret, char **ret_path) {
        _cleanup_free_ char *cred = NULL;
        const char *dir = getenv("CREDENTIALS_DIRECTORY"), *path = NULL;
        _cleanup_close_ int fd = -EBADF;
        char *buf = NULL, *password;
        size_t len = 0;
        int r;

        if (!c->username) {
                *ret = NULL;
                return 0;
        }
        if (dir && *dir) {
                const char *name = CREDENTIAL_DEFAULT_NAME;

                if (c->password_file) {
                        const char *slash = strrchr(c->password_file, '/');
                        name = slash ? slash + 1 : c->password_file;
                }
                if (asprintf(&cred, "%s/%s", dir, name) < 0) {
                        cred = NULL;
                        return -ENOMEM;
                }
                if (access(cred, F_OK) == 0)
                        path = cred;
        }
        if (!path)
                path = c->password_file;
        if (!path) {
                *ret = NULL;
                return 0;
        }

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                goto fail;
        buf = malloc(PASSWORD_MAX + 2);
        if (!buf)
                goto fail;
        for (;;) {
                ssize_t k = read(fd, buf + len, PASSWORD_MAX + 1 - len);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        goto fail;
                }
                if (k == 0)
                        break;
                len += (size_t) k;
                if (len > PASSWORD_MAX) {
                        errno = EFBIG;
                        goto fail;
                }
        }
        buf[len] = 0;
        /* One line: the password ends at the first newline. Whatever follows is not kept. */
        password = strndup(buf, strcspn(buf, "\r\n"));
        erase_and_free(buf, PASSWORD_MAX + 2);
        if (!password)
                return -ENOMEM;
        *ret = password;
        return 0;

fail:
        r = negative_errno();
        erase_and_free(buf, PASSWORD_MAX + 2);
        *ret_path = strdup(path);
        return r;
}

static int mqtt_start(Task *t) {
        MqttTask *m = task_get_userdata(t);
        const MqttConfig *c = m->config;
        _cleanup_free_ char *failed_path = NULL;
        int r, rc;

        r = mqtt_read_password(c, &m->password, &failed_path);
        if (r < 0) {
                task_report_failure(t, r, "Failed to read the MQTT password from '%s'", strna(failed_path));
                return 0;
        }
        if (c->username) {
                rc = mosquitto_username_pw_set(m->mosq, c->username, m->password);
                if (rc != MOSQ_ERR_SUCCESS)
                        return mosq_to_errno(rc, errno);
        }

        if (c->cafile || c->capath) {
                rc = mosquitto_tls_set(m->mosq, c->cafile, c->capath, c->certfile, c->keyfile, NULL);
                if (rc != MOSQ_ERR_SUCCESS) {
                        task_report_failure(t, mosq_to_errno(rc, errno),
                                            "Failed to set up TLS (cafile '%s', capath '%s', certfile '%s', keyfile '%s')",
                                            strna(c->cafile), strna(c->capath), strna(c->certfile), strna(c->keyfile));
                        return 0;
                }
                /* Verify the broker's certificate and that it names the host we connect to. */
                rc = mosquitto_tls_opts_set(m->mosq, 1, c->tls_version, NULL);
                if (rc == MOSQ_ERR_SUCCESS)
                        rc = mosquitto_tls_insecure_set(m->mosq, false);
                if (rc != MOSQ_ERR_SUCCESS) {
                        task_report_failure(t, mosq_to_errno(rc, errno), "Failed to set TLS options (version '%s')",
                                            strna(c->tls_version));
                        return 0;
                }
        }

        if (c->protocol == MQTT_PROTOCOL_V5) {
                mosquitto_property *props = NULL;

                /* libmosquitto 2.0 keeps CONNECT properties (the session expiry interval, without
                 * which an MQTT 5 session ends at every disconnect; the maximum packet size) only
                 * through mosquitto_connect_bind_v5(), which connects synchronously. Given an invalid
                 * port it stores the properties and returns MOSQ_ERR_INVAL before touching the
                 * network; the asynchronous connects that follow send them. The MQTT 5
                 * persistent-session and oversized-message tests check that this keeps working. */
                rc = MOSQ_ERR_SUCCESS;
                if (c->session_expiry > 0)
                        rc = mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL, c->session_expiry);
                /* libmosquitto reads a whole PUBLISH into memory before on_message sees it: the
                 * broker must not send one far beyond what we would keep. A broker discards a
                 * message that does not fit the client's Maximum Packet Size instead of sending it. */
                if (rc == MOSQ_ERR_SUCCESS)
                        rc = mosquitto_property_add_int32(&props, MQTT_PROP_MAXIMUM_PACKET_SIZE,
                                                          max_packet_size(c->max_payload_bytes));
                if (rc != MOSQ_ERR_SUCCESS) {
                        mosquitto_property_free_all(&props);
                        return mosq_to_errno(rc, errno);
                }
                rc = mosquitto_connect_bind_v5(m->mosq, c->host, -1, (int) c->keepalive, NULL, props);
                mosquitto_property_free_all(&props);
                if (rc != MOSQ_ERR_INVAL && rc != MOSQ_ERR_SUCCESS)
                        return mosq_to_errno(rc, errno);
        }

        r = sd_event_add_time_relative(m->event, &m->misc_timer, CLOCK_MONOTONIC, MISC_INTERVAL_USEC,
                                       100 * USEC_PER_MSEC, on_misc_timer, m);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(m->misc_timer, "mqtt-misc");
        r = sd_event_source_set_enabled(m->misc_timer, SD_EVENT_ON);
        if (r < 0)
                return r;

        if (!c->clean_session)
                mqtt_load_remembered(m);

        if (m->needs_lookup) {
                m->lookup_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                if (m->lookup_fd < 0)
                        return -errno;
                r = sd_event_add_io(m->event, &m->lookup_source, m->lookup_fd, EPOLLIN, on_lookup_event, m);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_description(m->lookup_source, "mqtt-lookup");
        }

        /* Until the first connection is up, the task counts as offline. */
        r = mqtt_begin_offline(m, now_usec(m));
        if (r < 0)
                return r;
        mqtt_connect(m);
        return 0;
}

static int mqtt_stop(Task *t) {
        MqttTask *m = task_get_userdata(t);
        int rc, r, fd;

        m->reconnect_timer = sd_event_source_disable_unref(m->reconnect_timer);
        m->offline_timer = sd_event_source_disable_unref(m->offline_timer);
        m->misc_timer = sd_event_source_disable_unref(m->misc_timer);

        switch (m->state) {
        case MQTT_STATE_STOPPING:
                return 1;
        case MQTT_STATE_SUBSCRIBING:
        case MQTT_STATE_CONNECTED:
                break;
        default:
                /* Not connected, or nothing agreed with the broker yet (no CONNACK): just close. */
                fd = mosquitto_socket(m->mosq);
                if (fd >= 0)
                        (void) shutdown(fd, SHUT_RDWR);
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
                fd = mosquitto_socket(m->mosq);
                if (fd >= 0)
                        (void) shutdown(fd, SHUT_RDWR);
                mqtt_finish_stop(m);
                return 0;
        }

        r = mqtt_update_io(m);
        if (r >= 0)
                r = sd_event_add_time_relative(m->event, &m->stop_timer, CLOCK_MONOTONIC, STOP_FLUSH_USEC, 0,
                                               on_stop_timer, m);
        if (r < 0) {
                fd = mosquitto_socket(m->mosq);
                if (fd >= 0)
                        (void) shutdown(fd, SHUT_RDWR);
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

        if (m->n_duplicates > 0)
                snprintf(duplicates, sizeof(duplicates), ", %" PRIu64 " duplicate%s skipped", m->n_duplicates,
                         m->n_duplicates == 1 ? "" : "s");
        if (m->n_retained_skipped > 0)
                snprintf(retained, sizeof(retained), ", %" PRIu64 " retained skipped", m->n_retained_skipped);
        snprintf(buf, size, "%" PRIu64 " message%s, %" PRIu64 " reject%s, %" PRIu64 " reconnect%s%s%s", m->n_messages,
                 m->n_messages == 1 ? "" : "s", m->n_rejects, m->n_rejects == 1 ? "" : "s", m->n_reconnects,
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

static MqttTask *mqtt_task_free_one(MqttTask *m) {
        if (!m)
                return NULL;
        mqtt_drop_io(m);
        sd_event_source_disable_unref(m->misc_timer);
        sd_event_source_disable_unref(m->reconnect_timer);
        sd_event_source_disable_unref(m->offline_timer);
        sd_event_source_disable_unref(m->stop_timer);
        sd_event_source_disable_unref(m->lookup_source);
        mqtt_lookup_release(m);
        if (m->mosq)
                mosquitto_destroy(m->mosq);
        if (m->patterns)
                for (size_t i = 0; i < m->config->n_topics; i++)
                        topic_pattern_free(m->patterns[i]);
        free(m->patterns);
        free(m->sub_mids);
        free(m->subs_key);
        strv_free_n(m->remembered, m->n_remembered);
        if (m->password)
                erase_and_free(m->password, strlen(m->password) + 1);
        free(m->host_port);
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
};

static int mqtt_task_setup(MqttTask *m) {
        const MqttConfig *c = m->config;
        FdSnapshot fds;
        int rc;

        if (!mosquitto_initialized) {
                rc = mosquitto_lib_init();
                if (rc != MOSQ_ERR_SUCCESS)
                        return mosq_to_errno(rc, errno);
                mosquitto_initialized = true;
        }

        if (asprintf(&m->host_port, "%s:%u", c->host, (unsigned) c->port) < 0) {
                m->host_port = NULL;
                return -ENOMEM;
        }
        /* An address, or a name that /etc/hosts answers at once, needs no lookup on the loop. */
        {
                unsigned char buf[sizeof(struct in6_addr)];

                m->needs_lookup = inet_pton(AF_INET, c->host, buf) != 1 && inet_pton(AF_INET6, c->host, buf) != 1 &&
                                  strcasecmp(c->host, "localhost") != 0;
        }
        /* A session belongs to a client id at a broker. */
        if (asprintf(&m->subs_key, "mqtt.subscriptions %s@%s", c->client_id, m->host_port) < 0) {
                m->subs_key = NULL;
                return -ENOMEM;
        }

        m->patterns = calloc(MAX(c->n_topics, 1u), sizeof(TopicPattern *));
        m->sub_mids = calloc(MAX(c->n_topics, 1u), sizeof(int));
        if (!m->patterns || !m->sub_mids)
                return -ENOMEM;
        for (size_t i = 0; i < c->n_topics; i++) {
                const char *error = NULL;
                int r = topic_pattern_new(c->topics[i].filter, &m->patterns[i], &error);
                if (r < 0)
                        return r;
                if (mosquitto_sub_topic_check(topic_pattern_subscription(m->patterns[i])) != MOSQ_ERR_SUCCESS)
                        return -EINVAL;
        }

        fd_snapshot(&fds);
        errno = 0;
        m->mosq = mosquitto_new(c->client_id, c->clean_session, m);
        if (!m->mosq)
                return errno == EINVAL ? -EINVAL : -ENOMEM;
        fd_set_cloexec_since(&fds, m->mosq);

        rc = mosquitto_threaded_set(m->mosq, false);
        if (rc == MOSQ_ERR_SUCCESS)
                rc = mosquitto_int_option(m->mosq, MOSQ_OPT_PROTOCOL_VERSION,
                                          c->protocol == MQTT_PROTOCOL_V5 ? MOSQ_PROTOCOL_NUMBER_V5 : MOSQ_PROTOCOL_NUMBER_V311);
        if (rc != MOSQ_ERR_SUCCESS)
                return mosq_to_errno(rc, errno);

        mosquitto_connect_v5_callback_set(m->mosq, on_connect);
        mosquitto_disconnect_v5_callback_set(m->mosq, on_disconnect);
        mosquitto_subscribe_v5_callback_set(m->mosq, on_subscribe);
        mosquitto_unsubscribe_v5_callback_set(m->mosq, on_unsubscribe);
        mosquitto_message_v5_callback_set(m->mosq, on_message);
        mosquitto_log_callback_set(m->mosq, on_log);
        return 0;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(MqttTask *, mqtt_task_free_one);

int mqtt_task_new(sd_event *e, const MqttConfig *config, Store *store, Task **ret) {
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
        m->io_fd = -EBADF;
        m->lookup_fd = -EBADF;
        m->state = MQTT_STATE_IDLE;
        m->reject_ratelimit = RATELIMIT_INIT(10 * USEC_PER_SEC, 10);

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
