/* SPDX-License-Identifier: MIT */
/* A libmosquitto client on the sd_event loop: its socket, housekeeping, reconnect timer and errors. */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "collector/event-util.h"
#include "collector/fd-util.h"
#include "collector/log.h"
#include "collector/macro.h"
#include "collector/mqtt-loop.h"
#include "collector/time-util.h"

/* libmosquitto's housekeeping (keepalive pings, retries) wants a call about once a second. */
#define MISC_INTERVAL_USEC USEC_PER_SEC
/* A connection attempt that has not been answered within the keepalive, clamped to this range,
 * is abandoned and retried. */
#define CONNECT_TIMEOUT_MIN_USEC (5 * USEC_PER_SEC)
#define CONNECT_TIMEOUT_MAX_USEC (60 * USEC_PER_SEC)
/* Packets handled per loop iteration before other sources get their turn (libmosquitto 2.0
 * reads at most this many or as many as its in-flight queues hold, whichever it decides). */
#define READ_PACKET_BUDGET 64
#define WRITE_PACKET_BUDGET 64

struct MqttLoop {
        sd_event *event;              /* referenced */
        const MqttLoopOps *ops;       /* borrowed */
        void *userdata;               /* the task's, for ops */
        char *name;                   /* TASK= */
        struct mosquitto *mosq;       /* owned, or NULL */
        HostLookup *lookup;           /* when the host is a name, not an address or "localhost" */
        IoWatch io;                   /* the client's socket */
        sd_event_source *misc_timer;
        sd_event_source *reconnect_timer;
        uint64_t delivered;           /* messages the task was handed (mqtt_loop_delivered()) */
        char tls_error[256];          /* the first OpenSSL error of the current attempt */
        char lib_error[256];          /* the first other error libmosquitto logged in it */
        char io_description[64], misc_description[64], reconnect_description[64];
};

static bool mosquitto_initialized;

/* libmosquitto's errors and the errno each stands for; anything not here is -EIO. */
static const struct {
        int rc;
        int error;
} mosq_errors[] = {
        { MOSQ_ERR_SUCCESS, 0 },
        { MOSQ_ERR_NOMEM, -ENOMEM },
        { MOSQ_ERR_PROTOCOL, -EPROTO },
        { MOSQ_ERR_MALFORMED_PACKET, -EPROTO },
        { MOSQ_ERR_DUPLICATE_PROPERTY, -EPROTO },
        { MOSQ_ERR_PROXY, -EPROTO },
        { MOSQ_ERR_TLS, -EPROTO },
        { MOSQ_ERR_TLS_HANDSHAKE, -EPROTO },
        { MOSQ_ERR_OCSP, -EPROTO },
        { MOSQ_ERR_INVAL, -EINVAL },
        { MOSQ_ERR_NO_CONN, -ENOTCONN },
        { MOSQ_ERR_CONN_REFUSED, -ECONNREFUSED },
        { MOSQ_ERR_NOT_FOUND, -ENOENT },
        { MOSQ_ERR_CONN_LOST, -ECONNRESET },
        { MOSQ_ERR_PAYLOAD_SIZE, -EMSGSIZE },
        { MOSQ_ERR_OVERSIZE_PACKET, -EMSGSIZE },
        { MOSQ_ERR_NOT_SUPPORTED, -EOPNOTSUPP },
        { MOSQ_ERR_QOS_NOT_SUPPORTED, -EOPNOTSUPP },
        { MOSQ_ERR_RETAIN_NOT_SUPPORTED, -EOPNOTSUPP },
        { MOSQ_ERR_AUTH, -EACCES },
        { MOSQ_ERR_ACL_DENIED, -EACCES },
        { MOSQ_ERR_EAI, -EHOSTUNREACH },
        { MOSQ_ERR_LOOKUP, -EHOSTUNREACH },
        { MOSQ_ERR_MALFORMED_UTF8, -EILSEQ },
        { MOSQ_ERR_KEEPALIVE, -ETIMEDOUT },
        { MOSQ_ERR_TIMEOUT, -ETIMEDOUT },
};

int mqtt_loop_errno(int rc, int errno_value) {
        if (rc == MOSQ_ERR_ERRNO)
                return errno_value > 0 ? -errno_value : -EIO;
        for (size_t i = 0; i < ELEMENTSOF(mosq_errors); i++)
                if (mosq_errors[i].rc == rc)
                        return mosq_errors[i].error;
        return -EIO;
}

const char *mqtt_loop_describe(int rc, int errno_value) {
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

uint64_t mqtt_loop_connect_timeout_usec(unsigned keepalive) {
        uint64_t t = (uint64_t) keepalive * USEC_PER_SEC;

        return MIN(MAX(t, CONNECT_TIMEOUT_MIN_USEC), CONNECT_TIMEOUT_MAX_USEC);
}

static bool startswith(const char *s, const char *prefix) {
        return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool host_is_address(const char *host) {
        unsigned char buf[sizeof(struct in6_addr)];

        return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1 ||
               strcasecmp(host, "localhost") == 0;
}

static bool has_connection(MqttLoop *l) {
        return l->mosq && l->ops->has_connection(l->userdata);
}

static bool want_read(MqttLoop *l) {
        return !l->ops->want_read || l->ops->want_read(l->userdata);
}

void *mqtt_loop_get_userdata(MqttLoop *l) {
        return l->userdata;
}

struct mosquitto *mqtt_loop_client(MqttLoop *l) {
        return l->mosq;
}

const char *mqtt_loop_tls_error(MqttLoop *l) {
        return l->tls_error;
}

const char *mqtt_loop_lib_error(MqttLoop *l) {
        return l->lib_error;
}

bool mqtt_loop_certificate_rejected(MqttLoop *l) {
        return strstr(l->tls_error, "certificate verify failed");
}

bool mqtt_loop_watching(MqttLoop *l) {
        return l->io.source;
}

void mqtt_loop_delivered(MqttLoop *l) {
        l->delivered++;
}

static void on_disconnect(struct mosquitto *mosq, void *userdata, int rc, const mosquitto_property *props) {
        MqttLoop *l = userdata;
        (void) mosq;
        (void) props;

        l->ops->disconnected(l->userdata, rc, errno);
}

static void on_log(struct mosquitto *mosq, void *userdata, int level, const char *message) {
        MqttLoop *l = userdata;
        (void) mosq;

        /* libmosquitto reports OpenSSL's reasons (and its own TLS setup errors) only here; keep
         * the first of each attempt for the cause. */
        if (level == MOSQ_LOG_ERR && message) {
                if (startswith(message, "OpenSSL Error")) {
                        const char *p = strstr(message, "]: ");
                        if (!l->tls_error[0])
                                snprintf(l->tls_error, sizeof(l->tls_error), "%s", p ? p + 3 : message);
                } else if (!l->lib_error[0])
                        snprintf(l->lib_error, sizeof(l->lib_error), "%s", message);
        }
        if (log_get_max_level() >= LOG_DEBUG)
                log_full_errno_fields(LOG_DEBUG, 0, LOG_FIELDS("TASK", l->name), "libmosquitto: %s", strna(message));
}

int mqtt_loop_client_new(MqttLoop *l, const char *client_id, bool clean_session, MqttProtocol protocol,
                         struct mosquitto **ret) {
        FdSnapshot fds;
        int rc, saved_errno;

        assert(l);

        io_watch_drop(&l->io);
        if (l->mosq) {
                mosquitto_destroy(l->mosq);
                l->mosq = NULL;
        }
        /* libmosquitto opens its descriptors without O_CLOEXEC: whatever it opened is marked
         * afterwards. */
        fd_snapshot(&fds);
        errno = 0;
        l->mosq = mosquitto_new(client_id, clean_session, l);
        saved_errno = errno;
        fd_set_cloexec_since(&fds, l->mosq ? mosquitto_socket(l->mosq) : -EBADF);
        if (!l->mosq)
                return saved_errno == EINVAL ? -EINVAL : -ENOMEM;

        rc = mosquitto_threaded_set(l->mosq, false);
        if (rc == MOSQ_ERR_SUCCESS)
                rc = mosquitto_int_option(l->mosq, MOSQ_OPT_PROTOCOL_VERSION,
                                          protocol == MQTT_PROTOCOL_V5 ? MQTT_LOOP_PROTOCOL_NUMBER_V5
                                                                       : MQTT_LOOP_PROTOCOL_NUMBER_V311);
        if (rc != MOSQ_ERR_SUCCESS) {
                int r = mqtt_loop_errno(rc, errno);

                mosquitto_destroy(l->mosq);
                l->mosq = NULL;
                return r;
        }
        mosquitto_disconnect_v5_callback_set(l->mosq, on_disconnect);
        mosquitto_log_callback_set(l->mosq, on_log);
        if (ret)
                *ret = l->mosq;
        return 0;
}

int mqtt_loop_tls_files(MqttLoop *l, const char *cafile, const char *capath, const char *certfile, const char *keyfile) {
        return mosquitto_tls_set(l->mosq, cafile, capath, certfile, keyfile, NULL);
}

int mqtt_loop_tls_verify(MqttLoop *l, const char *tls_version) {
        /* Verify the broker's certificate and that it names the host we connect to. */
        int rc = mosquitto_tls_opts_set(l->mosq, 1, tls_version, NULL);

        if (rc == MOSQ_ERR_SUCCESS)
                rc = mosquitto_tls_insecure_set(l->mosq, false);
        return rc;
}

void mqtt_loop_begin_attempt(MqttLoop *l) {
        l->tls_error[0] = 0;
        l->lib_error[0] = 0;
        if (l->mosq)
                mosquitto_log_callback_set(l->mosq, on_log);
}

void mqtt_loop_quiet(MqttLoop *l) {
        if (l->mosq && log_get_max_level() < LOG_DEBUG)
                mosquitto_log_callback_set(l->mosq, NULL);
}

bool mqtt_loop_needs_lookup(MqttLoop *l) {
        return l->lookup;
}

int mqtt_loop_lookup_start(MqttLoop *l, unsigned pick, const char **ret_cause) {
        assert(l->lookup);
        return host_lookup_start(l->lookup, pick, ret_cause);
}

int mqtt_loop_connect(MqttLoop *l, const char *address, uint16_t port, unsigned keepalive, int *ret_errno) {
        FdSnapshot fds;
        int rc;

        fd_snapshot(&fds);
        errno = 0;
        rc = mosquitto_connect_bind_async(l->mosq, address, port, (int) keepalive, NULL);
        *ret_errno = errno;
        fd_set_cloexec_since(&fds, l->mosq ? mosquitto_socket(l->mosq) : -EBADF);
        return rc;
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata);

int mqtt_loop_update_io(MqttLoop *l) {
        uint32_t events;

        if (!has_connection(l)) {
                io_watch_drop(&l->io);
                return 0;
        }
        events = (want_read(l) ? EPOLLIN : 0) | (mosquitto_want_write(l->mosq) ? EPOLLOUT : 0);
        return io_watch_update(&l->io, l->event, mosquitto_socket(l->mosq), events, on_io, l, l->io_description);
}

void mqtt_loop_sync_io(MqttLoop *l) {
        int r;

        if (has_connection(l) && mosquitto_socket(l->mosq) < 0) {
                l->ops->disconnected(l->userdata, MOSQ_ERR_CONN_LOST, 0);
                return;
        }
        r = mqtt_loop_update_io(l);
        if (r < 0)
                l->ops->watch_failed(l->userdata, r);
}

/* Reads up to READ_PACKET_BUDGET packets. libmosquitto 2.0's loop_read() reads one packet per
 * call whatever max_packets says when nothing of QoS 1 or 2 is in flight (it takes its own
 * queue lengths as the count), so at QoS 0 every message cost a loop iteration of its own (an
 * epoll_wait() and the event loop's bookkeeping). Calling it again as long as the last call
 * delivered a message reads a burst in one iteration, at the cost of one read() that finds
 * nothing at its end (loop_read() tells "nothing there" and "packet read" apart only by the
 * callback; asking the kernel first, FIONREAD, would cost a call per message instead). Any
 * other packet, or one that has not fully arrived, ends the round: the socket is level-
 * triggered, so the loop comes back to it. libmosquitto still reads each packet in three
 * read() calls (the type byte, the length, the rest): inside it, not to be changed from here. */
static void read_packets(MqttLoop *l, int fd) {
        for (unsigned i = 0; i < READ_PACKET_BUDGET; i++) {
                uint64_t before = l->delivered;
                int rc;

                errno = 0;
                rc = mosquitto_loop_read(l->mosq, READ_PACKET_BUDGET);
                /* Errors end in on_disconnect(), which has handled them by now. Stop as well when
                 * the connection went, or the task stopped wanting input (TCP pushes back then). */
                if (rc != MOSQ_ERR_SUCCESS || l->delivered == before || !has_connection(l) ||
                    mosquitto_socket(l->mosq) != fd || !want_read(l))
                        break;
        }
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        MqttLoop *l = userdata;
        (void) s;

        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))
                read_packets(l, fd);
        if (has_connection(l) && mosquitto_socket(l->mosq) == fd &&
            (revents & EPOLLOUT || mosquitto_want_write(l->mosq))) {
                errno = 0;
                (void) mosquitto_loop_write(l->mosq, WRITE_PACKET_BUDGET);
        }

        /* A hang-up or error that libmosquitto did not turn into a disconnect (possible in the
         * middle of a TLS handshake) would wake us forever: the task ends that connection. */
        if (has_connection(l) && mosquitto_socket(l->mosq) == fd && (revents & (EPOLLHUP | EPOLLERR))) {
                int error = 0;
                socklen_t len = sizeof(error);

                if (!l->ops->hangup) {
                        l->ops->disconnected(l->userdata, MOSQ_ERR_CONN_LOST, 0);
                        return 0;
                }
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0 || error == 0)
                        error = ECONNRESET;
                l->ops->hangup(l->userdata, -error);
                return 0;
        }
        mqtt_loop_sync_io(l);
        return 0;
}

static int on_misc_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        MqttLoop *l = userdata;
        uint64_t now = event_now_usec(l->event, CLOCK_MONOTONIC);
        char text[32];

        /* One period after it was due, or now when the loop was held up longer than that: after
         * a stall one catch-up run, not one per missed period. */
        if (now > usec + MISC_INTERVAL_USEC)
                log_full_errno_fields(LOG_DEBUG, 0, LOG_FIELDS("TASK", l->name), "Housekeeping ran %s late.",
                                      format_timespan(text, sizeof(text), now - usec));
        (void) sd_event_source_set_time(s, MAX(usec + MISC_INTERVAL_USEC, now));

        /* In case glibc could not start the thread that announces the end of a lookup. */
        if (l->lookup)
                host_lookup_check(l->lookup);
        if (l->ops->tick && l->ops->tick(l->userdata, now))
                return 0;
        if (has_connection(l) && l->io.source) {
                /* Keepalive: sends PINGREQ, or closes the connection (on_disconnect) when the broker
                 * stayed silent for too long (a link cut without FIN or RST ends here). */
                (void) mosquitto_loop_misc(l->mosq);
                mqtt_loop_sync_io(l);
        }
        return 0;
}

int mqtt_loop_start(MqttLoop *l) {
        int r;

        r = event_arm_timer(l->event, &l->misc_timer, event_now_usec(l->event, CLOCK_MONOTONIC) + MISC_INTERVAL_USEC,
                            100 * USEC_PER_MSEC, on_misc_timer, l, l->misc_description);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(l->misc_timer, SD_EVENT_ON);
}

static int on_reconnect_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        MqttLoop *l = userdata;
        (void) s;

        l->ops->reconnect(l->userdata, usec);
        return 0;
}

int mqtt_loop_arm_reconnect(MqttLoop *l, uint64_t usec) {
        return event_arm_timer(l->event, &l->reconnect_timer, usec, 10 * USEC_PER_MSEC, on_reconnect_timer, l,
                               l->reconnect_description);
}

void mqtt_loop_shutdown(MqttLoop *l) {
        int fd = l->mosq ? mosquitto_socket(l->mosq) : -EBADF;

        if (fd >= 0)
                (void) shutdown(fd, SHUT_RDWR);
}

void mqtt_loop_unwatch(MqttLoop *l) {
        io_watch_drop(&l->io);
}

void mqtt_loop_halt(MqttLoop *l) {
        l->misc_timer = sd_event_source_disable_unref(l->misc_timer);
        l->reconnect_timer = sd_event_source_disable_unref(l->reconnect_timer);
}

MqttLoop *mqtt_loop_free(MqttLoop *l) {
        if (!l)
                return NULL;
        io_watch_drop(&l->io);
        mqtt_loop_halt(l);
        host_lookup_free(l->lookup);
        if (l->mosq)
                mosquitto_destroy(l->mosq);
        free(l->name);
        sd_event_unref(l->event);
        free(l);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(MqttLoop *, mqtt_loop_free);

int mqtt_loop_new(sd_event *e, const char *name, const char *host, const MqttLoopOps *ops, void *userdata,
                  MqttLoop **ret) {
        _cleanup_(mqtt_loop_freep) MqttLoop *l = NULL;
        int r;

        assert(e && name && host && ops && ret);
        assert(ops->has_connection && ops->disconnected && ops->watch_failed && ops->reconnect && ops->resolved);

        if (!mosquitto_initialized) {
                int rc = mosquitto_lib_init();
                if (rc != MOSQ_ERR_SUCCESS)
                        return mqtt_loop_errno(rc, errno);
                mosquitto_initialized = true;
        }

        l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        l->event = sd_event_ref(e);
        l->ops = ops;
        l->userdata = userdata;
        l->io = IO_WATCH_INIT;
        l->name = strdup(name);
        if (!l->name)
                return -ENOMEM;
        snprintf(l->io_description, sizeof(l->io_description), "%s-socket", name);
        snprintf(l->misc_description, sizeof(l->misc_description), "%s-misc", name);
        snprintf(l->reconnect_description, sizeof(l->reconnect_description), "%s-reconnect", name);

        /* An address, or a name that /etc/hosts answers at once, needs no lookup on the loop. */
        if (!host_is_address(host)) {
                r = host_lookup_new(e, host, ops->resolved, userdata, &l->lookup);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(l);
        return 0;
}
