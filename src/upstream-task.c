/* SPDX-License-Identifier: MIT */
/* Upstream forwarding: committed readings to a central broker with libmosquitto on the sd_event loop. */
#include <assert.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/socket.h>

#include "collector/mqtt-loop.h"

#include "collector/backoff.h"
#include "collector/credential.h"
#include "collector/event-util.h"
#include "collector/exit-status.h"
#include "collector/log.h"
#include "collector/mqtt-connack.h"
#include "collector/time-util.h"
#include "collector/upstream-payload.h"
#include "collector/upstream-task.h"
#include "collector/upstream-window.h"

/* Reconnects: the shared policy (backoff.h) with no budget, since an outage of the central link
 * is normal on a rural gateway: the store holds the readings meanwhile. */
#define BACKOFF_INITIAL_USEC (500 * USEC_PER_MSEC)
#define BACKOFF_MAX_USEC (60 * USEC_PER_SEC)
#define STABLE_CONNECTION_USEC (10 * USEC_PER_SEC)
#define STOP_FLUSH_USEC USEC_PER_SEC
#define WRITE_PACKET_BUDGET 64
/* The drain's timer never runs more often than this; when the rate asks for more, one tick
 * sends several batches. With nothing to drain it looks again once a second. */
#define DRAIN_TICK_MIN_USEC (5 * USEC_PER_MSEC)
#define DRAIN_IDLE_USEC USEC_PER_SEC
/* Live readings read from the store per pass (the pass repeats while the window has room). */
#define LIVE_READ_MAX 256
/* Messages in flight and no acknowledgement for this long (and at least twice the keepalive):
 * the connection is given up and what was in flight is sent again on a new one. A broker that
 * stays silent is the keepalive's business; this catches one that answers PINGREQ but not our
 * PUBLISHes, or a message a library held back and never sent. */
#define ACK_TIMEOUT_MIN_USEC (30 * USEC_PER_SEC)
/* The done set changed and no batch of the store took it: written in a batch of its own after
 * this long (docs/UPSTREAM.md, "When it is written"). */
#define SAVE_DELAY_USEC (50 * USEC_PER_MSEC)
/* "Removed before it was forwarded" is logged at most this often (retention runs in steps). */
#define LOST_LOG_INTERVAL_USEC (60 * USEC_PER_SEC)

typedef enum UpstreamState {
        UP_IDLE,
        UP_RESOLVING,
        UP_CONNECTING,
        UP_CONNECTED,
        UP_OFFLINE,
        UP_STOPPING,
        UP_STOPPED,
        UP_FAILED,
} UpstreamState;

struct Upstream {
        Task *task;                   /* borrowed: the task owns this struct */
        sd_event *event;              /* referenced */
        const UpstreamConfig *config; /* borrowed */
        Store *store;                 /* borrowed */
        Sensors *sensors;             /* borrowed, or NULL: the units of the sensor map */
        MqttLoop *loop;               /* owned: the client on the loop, its socket, timers, lookup */
        struct mosquitto *mosq;       /* borrowed from loop: a fresh client per connection attempt */
        char *password;
        char *host_port;
        char *store_id;
        char *status_topic;
        UpstreamSource source;

        sd_event_source *drain_timer;
        sd_event_source *live_timer;  /* due now: send what was committed */
        sd_event_source *save_timer;  /* the done set into a batch of its own, if none took it */
        sd_event_source *stop_timer;

        UpstreamState state;
        bool stop_pending;
        bool ever_connected;
        bool ran, stop_logged;        /* started (task_report_running()); the "Stopped" line written */
        unsigned attempt;
        BackoffPolicy backoff_policy;
        Backoff backoff;
        uint64_t attempt_usec;
        char last_cause[256];

        UpstreamWindow window;
        int64_t committed;            /* the store's largest committed seq */
        unsigned receive_max;         /* the broker's (MQTT 5), else 65535 */
        bool window_dirty;
        UpstreamBuf topic, payload;
        UpstreamTopic live_topic;     /* config->topic, compiled at start */
        UpstreamBuf envelope;         /* source.envelope */
        unsigned pass_sent;           /* messages sent in this pass (live or drain) */
        int corked_fd;                /* the socket TCP_CORK is set on, or -EBADF */

        uint64_t n_live, n_backlog, n_acked, n_refused, n_reconnects, n_lost;
        uint64_t lost_unlogged, lost_logged_usec;
        /* For telling a broker that answers QoS 2 with a PUBACK (see up_qos2_answered_as_qos1()):
         * the counters when this connection came up, and when that was last logged. */
        uint64_t acked_at_connect, sent_at_connect, qos2_logged_usec;
        int64_t last_acked_seq;
        uint64_t last_ack_usec;       /* CLOCK_MONOTONIC */
        uint64_t progress_usec;       /* the last acknowledgement, or the connection: for the ack timeout */

        /* For upstream_get_info(), CLOCK_REALTIME: when the link last went up or down, the last
         * acknowledgement, the last connection problem (last_cause). */
        uint64_t link_since_realtime_usec, last_ack_realtime_usec, last_cause_realtime_usec;
};

static uint64_t now_usec(Upstream *u) {
        return event_now_usec(u->event, CLOCK_MONOTONIC);
}

static uint64_t now_realtime_usec(Upstream *u) {
        return event_now_usec(u->event, CLOCK_REALTIME);
}

static const char *up_unit(Upstream *u, const StoredReading *row) {
        return sensors_unit(u->sensors, row->sensor, row->metric);
}

static bool has_connection(UpstreamState s) {
        return s == UP_CONNECTING || s == UP_CONNECTED || s == UP_STOPPING;
}

static void up_connection_failed(Upstream *u, int error, const char *cause);
static void up_pump(Upstream *u);

static void up_fail(Upstream *u, int error, const char *format, ...) _printf_(3, 4);

/* The task cannot go on: close everything and tell the supervisor (which logs the cause). */
static void up_fail(Upstream *u, int error, const char *format, ...) {
        va_list ap;

        if (u->state == UP_FAILED || u->state == UP_STOPPED)
                return;
        mqtt_loop_shutdown(u->loop);
        u->state = UP_FAILED;
        mqtt_loop_unwatch(u->loop);
        mqtt_loop_halt(u->loop);
        u->drain_timer = sd_event_source_disable_unref(u->drain_timer);
        u->live_timer = sd_event_source_disable_unref(u->live_timer);
        u->stop_timer = sd_event_source_disable_unref(u->stop_timer);
        upstream_window_disconnect(&u->window);
        va_start(ap, format);
        task_report_failurev(u->task, error, format, ap);
        va_end(ap);
}

static void up_connection_closed(Upstream *u, int rc, int errno_value);

/* The io source after libmosquitto calls; a socket libmosquitto closed without on_disconnect()
 * (a failed TLS handshake) is a closed connection, a failure of the source the task's. */
static void up_sync_io(Upstream *u) {
        mqtt_loop_sync_io(u->loop);
}

/* Runs handler once in the next loop iteration: a defer source, enabled once per arming (a
 * timer due now would reprogram the loop's timerfd at every acknowledgement and commit).
 * Returns 0 or -errno. */
static int arm_defer(Upstream *u, sd_event_source **source, sd_event_handler_t handler, const char *description) {
        int r;

        if (!*source) {
                r = sd_event_add_defer(u->event, source, handler, u);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_description(*source, description);
        }
        return sd_event_source_set_enabled(*source, SD_EVENT_ONESHOT);
}

/* ---- the done set, kept in the store ---- */

/* Writes the done set (and the lost count) into the store's open batch, beginning one if none
 * is open. Returns 0 or -errno: -ESHUTDOWN when the store has stopped or failed (it says why
 * itself), -ENOMEM. */
static int up_save_batched(Upstream *u) {
        _cleanup_free_ char *text = NULL;
        char lost[24];
        int r;

        if (!u->window_dirty || u->state == UP_FAILED)
                return 0;
        r = upstream_window_format(&u->window, &text);
        if (r >= 0)
                r = store_set_meta_batched(u->store, UPSTREAM_META_ACKED, text, strlen(text));
        if (r >= 0 && u->n_lost > 0) {
                snprintf(lost, sizeof(lost), "%" PRIu64, u->n_lost);
                r = store_set_meta_batched(u->store, UPSTREAM_META_LOST, lost, strlen(lost));
        }
        if (r < 0)
                return r;
        u->window_dirty = false;
        return 0;
}

static int on_save_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Upstream *u = userdata;
        int r;
        (void) s;
        (void) usec;

        /* A batch opened meanwhile (readings came): its pre-commit hook writes the done set. */
        if (store_batch_open(u->store))
                return 0;
        r = up_save_batched(u);
        if (r < 0 && r != -ESHUTDOWN)
                up_fail(u, r, "Failed to record what the central broker acknowledged");
        return 0;
}

/* Inside the store's commit: the done set goes into the batch that is ending. */
static void on_store_precommit(Store *s, void *userdata) {
        Upstream *u = userdata;
        int r;
        (void) s;

        r = up_save_batched(u);
        if (r < 0 && r != -ESHUTDOWN)
                /* Out of memory: the save timer tries again (and reports a failure), not here
                 * inside the store's commit. */
                (void) event_arm_timer(u->event, &u->save_timer, now_usec(u) + SAVE_DELAY_USEC, SAVE_DELAY_USEC / 4,
                                       on_save_timer, u, "upstream-save");
}

/* The done set changed. It is written into the store's batch when the batch commits (the
 * pre-commit hook): once per commit, however many acknowledgements the batch's time saw. When
 * no batch opens within SAVE_DELAY_USEC (no readings coming), the save timer writes it into a
 * batch of its own. Writing it at each loop iteration that read acknowledgements, as before,
 * opened a batch, and so a commit, of its own most of the time, also while readings came. */
static void up_window_changed(Upstream *u) {
        int r;

        if (u->window_dirty)
                return; /* due already */
        u->window_dirty = true;
        r = event_arm_timer(u->event, &u->save_timer, now_usec(u) + SAVE_DELAY_USEC, SAVE_DELAY_USEC / 4, on_save_timer,
                            u, "upstream-save");
        if (r < 0)
                up_fail(u, r, "Failed to arm a timer");
}

/* ---- sending ---- */

/* libmosquitto writes each PUBLISH with its own send() as soon as it is queued. On its own every
 * such send is a segment: on loopback the broker's whole receive path runs in our send() and
 * wakes the broker for each message, and over a network each is a packet. Before the second
 * message of a pass, the socket is corked (TCP_CORK), so the kernel sends full segments, and
 * up_pass_end() uncorks it, which sends the rest at once: a pass never holds a message back
 * beyond its own end, so live latency does not change. A single message per pass (a quiet
 * greenhouse) costs no extra call. */
static void up_pass_before_send(Upstream *u) {
        static const int one = 1;
        int fd;

        if (u->pass_sent == 0 || u->corked_fd >= 0 || !u->mosq)
                return;
        fd = mosquitto_socket(u->mosq);
        if (fd >= 0 && setsockopt(fd, IPPROTO_TCP, TCP_CORK, &one, sizeof(one)) >= 0)
                u->corked_fd = fd;
}

static void up_pass_end(Upstream *u) {
        static const int zero = 0;

        u->pass_sent = 0;
        if (u->corked_fd < 0)
                return;
        /* Only the socket it was set on: a connection that closed during the pass took its
         * socket (and the cork) along. */
        if (u->mosq && mosquitto_socket(u->mosq) == u->corked_fd)
                (void) setsockopt(u->corked_fd, IPPROTO_TCP, TCP_CORK, &zero, sizeof(zero));
        u->corked_fd = -EBADF;
}

static int up_publish(Upstream *u, const char *topic, const UpstreamBuf *payload, int64_t lo, int64_t hi, bool live) {
        int mid = 0, rc, r;

        up_pass_before_send(u);
        rc = mosquitto_publish(u->mosq, &mid, topic, (int) payload->len, payload->data, u->config->qos, false);
        if (rc != MOSQ_ERR_SUCCESS)
                return mqtt_loop_errno(rc, errno);
        u->pass_sent++;
        if (u->window.n_flights == 0)
                u->progress_usec = now_usec(u); /* the ack timeout counts from the first in flight */
        r = upstream_window_add_flight(&u->window, mid, lo, hi, live);
        if (r < 0)
                return r;
        if (live)
                u->n_live++;
        else
                u->n_backlog += 1;
        return 0;
}

static unsigned up_limit(const Upstream *u) {
        return MIN(u->config->max_inflight, u->receive_max);
}

typedef struct LiveCtx {
        Upstream *u;
        int64_t prev;
        int error;
} LiveCtx;

static int live_one(const StoredReading *row, void *userdata) {
        LiveCtx *c = userdata;
        Upstream *u = c->u;
        int r;

        if (u->window.n_flights >= up_limit(u))
                return -ENOBUFS;
        if (upstream_window_is_done(&u->window, row->id)) {
                c->prev = row->id;
                return 0;
        }
        r = upstream_topic_render(&u->topic, &u->live_topic, row->sensor, row->metric);
        if (r >= 0)
                r = upstream_payload_live(&u->payload, &u->source, row, up_unit(u, row));
        if (r >= 0)
                r = up_publish(u, u->topic.data, &u->payload, c->prev + 1, row->id, true);
        if (r < 0) {
                c->error = r;
                return r;
        }
        c->prev = row->id;
        return 0;
}

typedef struct LiveBatchCtx {
        Upstream *u;
        int64_t last;
        unsigned n;
        int error;
} LiveBatchCtx;

static int live_batch_one(const StoredReading *row, void *userdata) {
        LiveBatchCtx *c = userdata;
        int r;

        c->last = row->id;
        if (upstream_window_is_done(&c->u->window, row->id))
                return 0;
        r = upstream_payload_batch_add(&c->u->payload, row, up_unit(c->u, row), c->n == 0);
        if (r < 0) {
                c->error = r;
                return r;
        }
        c->n++;
        return 0;
}

/* With upstream.live_batch_topic: what was committed since the last pass, in messages of up
 * to batch_size readings (usually one per commit), while the window has room. One PUBLISH,
 * one PUBACK and one store read for many readings. Failures are reported. */
static void up_send_live_batches(Upstream *u) {
        int64_t after;

        while (u->state == UP_CONNECTED && upstream_window_next_live(&u->window, u->committed, &after) &&
               u->window.n_flights < up_limit(u)) {
                LiveBatchCtx c = { .u = u, .last = after };
                int64_t hi;
                int r;

                r = upstream_payload_live_batch_begin(&u->payload, &u->source);
                if (r >= 0)
                        r = store_read_seq(u->store, after, u->committed + 1, u->config->batch_size, live_batch_one, &c);
                if (r < 0 || c.error < 0) {
                        if (r != -ESHUTDOWN)
                                up_fail(u, r < 0 ? r : c.error, "Failed to read readings to forward");
                        return;
                }
                /* A short read reached committed: the message covers the ids up to it that hold
                 * no reading too. */
                hi = (unsigned) r < u->config->batch_size ? u->committed : c.last;
                if (c.n == 0) {
                        /* Nothing to send up to hi (ids without a reading, or done already). */
                        upstream_window_sent_live(&u->window, hi);
                        if (upstream_window_mark_done(&u->window, after + 1, hi) < 0) {
                                up_fail(u, -ENOMEM, "Out of memory");
                                return;
                        }
                        up_window_changed(u);
                        continue;
                }
                r = upstream_payload_batch_end(&u->payload);
                if (r >= 0)
                        r = upstream_topic_format(&u->topic, u->config->live_batch_topic, &u->source, NULL, NULL);
                if (r >= 0)
                        r = up_publish(u, u->topic.data, &u->payload, after + 1, hi, true);
                if (r == -ENOTCONN || r == -ECONNRESET)
                        return; /* on_disconnect follows */
                if (r < 0) {
                        up_fail(u, r, "Failed to forward readings upstream");
                        return;
                }
                u->n_live += c.n - 1; /* up_publish() counted one */
                upstream_window_sent_live(&u->window, hi);
        }
}

/* Sends what was committed since the last pass, while the window has room. */
static void up_send_live_pass(Upstream *u) {
        int64_t after;

        if (u->config->live_batch_topic) {
                up_send_live_batches(u);
                return;
        }

        while (u->state == UP_CONNECTED && upstream_window_next_live(&u->window, u->committed, &after) &&
               u->window.n_flights < up_limit(u)) {
                LiveCtx c = { .u = u, .prev = after };
                int r;

                /* No more rows than the window has room for: a row read only to find the window
                 * full is read again by the next pass (once per acknowledgement while it is full). */
                r = store_read_seq(u->store, after, u->committed + 1,
                                   MIN((unsigned) LIVE_READ_MAX, up_limit(u) - (unsigned) u->window.n_flights), live_one, &c);
                if (c.prev > after)
                        upstream_window_sent_live(&u->window, c.prev);
                if (r == -ENOBUFS)
                        break;
                if (c.error < 0) {
                        if (c.error == -ENOTCONN || c.error == -ECONNRESET)
                                return; /* on_disconnect follows */
                        up_fail(u, c.error, "Failed to forward a reading upstream");
                        return;
                }
                if (r < 0) {
                        if (r != -ESHUTDOWN)
                                up_fail(u, r, "Failed to read readings to forward");
                        return;
                }
                if (r == 0) {
                        /* Nothing left up to committed (ids without a reading). */
                        upstream_window_sent_live(&u->window, u->committed);
                        if (upstream_window_mark_done(&u->window, after + 1, u->committed) < 0)
                                up_fail(u, -ENOMEM, "Out of memory");
                        up_window_changed(u);
                        break;
                }
        }
}

static void up_send_live(Upstream *u) {
        up_send_live_pass(u);
        up_pass_end(u);
}

typedef struct BatchCtx {
        Upstream *u;
        int64_t last;
        unsigned n;
        int error;
} BatchCtx;

static int batch_one(const StoredReading *row, void *userdata) {
        BatchCtx *c = userdata;
        int r;

        r = upstream_payload_batch_add(&c->u->payload, row, up_unit(c->u, row), c->n == 0);
        if (r < 0) {
                c->error = r;
                return r;
        }
        c->last = row->id;
        c->n++;
        return 0;
}

/* One backlog batch, oldest first. Returns 1 when one was sent or a stretch without readings
 * was skipped, 0 when there is nothing to drain or no room, -errno on failure (reported). */
static int up_drain_one(Upstream *u) {
        int64_t after, before;
        bool live_pending;
        int r;

        if (u->state != UP_CONNECTED)
                return 0;
        live_pending = upstream_window_next_live(&u->window, u->committed, &after);
        if (!upstream_window_may_drain(&u->window, up_limit(u), live_pending))
                return 0;
        if (!upstream_window_next_drain(&u->window, &after, &before))
                return 0;

        BatchCtx c = { .u = u, .last = after };
        r = upstream_payload_batch_begin(&u->payload, &u->source);
        if (r >= 0)
                r = store_read_seq(u->store, after, before, u->config->batch_size, batch_one, &c);
        if (r < 0 || c.error < 0) {
                if (r == -ESHUTDOWN)
                        return 0;
                up_fail(u, r < 0 ? r : c.error, "Failed to read the backlog");
                return r < 0 ? r : c.error;
        }
        if (c.n == 0) {
                /* No reading left in the gap (removed by retention): nothing to send for it. */
                upstream_window_drained(&u->window, before - 1);
                r = upstream_window_mark_done(&u->window, after + 1, before - 1);
                if (r < 0) {
                        up_fail(u, r, "Out of memory");
                        return r;
                }
                up_window_changed(u);
                return 1;
        }
        /* A short read reached the end of the gap: the message covers it all. */
        if (c.n < u->config->batch_size)
                c.last = before - 1;
        r = upstream_payload_batch_end(&u->payload);
        if (r >= 0)
                r = upstream_topic_format(&u->topic, u->config->backlog_topic, &u->source, NULL, NULL);
        if (r >= 0)
                r = up_publish(u, u->topic.data, &u->payload, after + 1, c.last, false);
        if (r == -ENOTCONN || r == -ECONNRESET)
                return 0;
        if (r < 0) {
                up_fail(u, r, "Failed to forward the backlog");
                return r;
        }
        u->n_backlog += c.n - 1;
        upstream_window_drained(&u->window, c.last);
        return 1;
}

static uint64_t drain_interval_usec(const UpstreamConfig *c) {
        return (uint64_t) c->batch_size * USEC_PER_SEC / c->backlog_rate;
}

static int on_drain_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Upstream *u = userdata;
        uint64_t interval = drain_interval_usec(u->config), tick = MAX(interval, DRAIN_TICK_MIN_USEC);
        unsigned batches = (unsigned) MAX((uint64_t) 1, tick / MAX(interval, (uint64_t) 1));
        int r = 0;
        (void) s;

        for (unsigned i = 0; i < batches; i++) {
                r = up_drain_one(u);
                if (r <= 0)
                        break;
        }
        up_pass_end(u);
        if (r < 0 || u->state != UP_CONNECTED)
                return 0;
        /* The next tick one interval after this one was due (not after it ran: the rate holds on
         * a busy loop); with nothing to drain, or no room, look again later. */
        r = event_arm_timer(u->event, &u->drain_timer,
                            r > 0 ? MAX(usec + tick, now_usec(u)) : now_usec(u) + (u->window.n_flights > 0 ? tick : DRAIN_IDLE_USEC),
                            USEC_PER_MSEC, on_drain_timer, u, "upstream-drain");
        if (r < 0)
                up_fail(u, r, "Failed to arm the drain timer");
        return 0;
}

static int on_live_timer(sd_event_source *s, void *userdata) {
        Upstream *u = userdata;
        (void) s;

        up_send_live(u);
        if (has_connection(u->state))
                up_sync_io(u);
        return 0;
}

/* Live readings go out in the next loop iteration (not inside the store's commit). */
static void up_pump(Upstream *u) {
        int r;

        if (u->state != UP_CONNECTED)
                return;
        r = arm_defer(u, &u->live_timer, on_live_timer, "upstream-live");
        if (r < 0)
                up_fail(u, r, "Failed to arm a timer");
}

static void on_commit(Store *s, int64_t committed, void *userdata) {
        Upstream *u = userdata;
        (void) s;

        u->committed = committed;
        up_pump(u);
}

/* Inside a retention step: readings up to upto go now, but not necessarily all of them (age
 * retention keeps the unsynced, uncorrected ones). In each stretch not done, the rows that go
 * were never acknowledged: they are counted lost. Done becomes the stretch but for the runs of
 * rows that stay: those are still backlog and are sent when their turn comes (with their
 * flags). Marking the removed ids after such a row done too keeps the backlog count (pending
 * ids) from counting readings that no longer exist, and a run of kept rows is one range in the
 * done set (unsynced readings come in runs: a boot's until its clock was trusted). Returns the
 * readings counted lost, or -errno (the store failed and says why, or out of memory:
 * reported); *ret_changed says whether a stretch not done was there at all (else the done set
 * is as it was). */
static int64_t up_retention_release(Upstream *u, Store *s, int64_t upto, bool *ret_changed) {
        uint64_t lost = 0;
        SeqRange gap;
        int64_t from = 0;
        int r;

        *ret_changed = false;
        while (upstream_window_next_gap(&u->window, from, upto, &gap)) {
                int64_t pos = gap.lo, end = MIN(gap.hi, upto);
                bool first = true;

                *ret_changed = true;
                while (pos <= end) {
                        uint64_t n = 0;
                        int64_t kept = 0, next = 0;

                        /* Counted once per stretch: the later scans cover a part of it. */
                        r = store_retention_scan(s, pos, end, &n, &kept);
                        if (r < 0)
                                return r;
                        if (first)
                                lost += n;
                        first = false;
                        if (kept != pos) {
                                r = upstream_window_mark_done(&u->window, pos, kept > 0 ? kept - 1 : end);
                                if (r < 0) {
                                        up_fail(u, r, "Out of memory");
                                        return r;
                                }
                        }
                        if (kept == 0)
                                break;
                        r = store_retention_next_removed(s, kept, end, &next);
                        if (r < 0)
                                return r;
                        if (next == 0)
                                break;
                        pos = next;
                }
                from = gap.hi;
        }
        return (int64_t) lost;
}

static void on_retention(Store *s, int64_t upto, void *userdata) {
        Upstream *u = userdata;
        bool changed;
        int64_t r;
        uint64_t lost;

        r = up_retention_release(u, s, upto, &changed);
        if (r < 0)
                return;
        lost = (uint64_t) r;
        if (changed)
                up_window_changed(u);
        if (lost == 0)
                return;
        u->n_lost += lost;
        u->lost_unlogged += lost;
        if (now_usec(u) >= u->lost_logged_usec + LOST_LOG_INTERVAL_USEC || u->lost_logged_usec == 0) {
                log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", "upstream"),
                                      "Retention removed %" PRIu64 " readings before the central broker %s acknowledged "
                                      "them (%" PRIu64 " since start); they will never be forwarded.",
                                      u->lost_unlogged, u->host_port, u->n_lost);
                u->lost_unlogged = 0;
                u->lost_logged_usec = now_usec(u);
        }
}

/* ---- acknowledgements ---- */

typedef struct RejectCtx {
        Upstream *u;
        const char *topic;
        int error;
} RejectCtx;

static int reject_one(const StoredReading *row, void *userdata) {
        RejectCtx *c = userdata;
        UpstreamBuf *b = &c->u->payload;
        Reject rj;
        int r;

        r = upstream_payload_live(b, &c->u->source, row, up_unit(c->u, row));
        if (r < 0) {
                c->error = r;
                return r;
        }
        rj = (Reject) {
                .received_ms = wall_clock_ms(),
                .source = streq(row->source, "serial") ? READING_SOURCE_SERIAL : READING_SOURCE_MQTT,
                .origin = c->topic,
                .raw = b->data,
                .raw_size = b->len,
                .reason = FRAME_REJECT_UPSTREAM_REFUSED,
        };
        r = store_append_reject(c->u->store, &rj);
        if (r < 0) {
                c->error = r;
                return r;
        }
        c->u->n_refused++;
        return 0;
}

/* The broker refused one message for good (MQTT 5): its readings go to the rejects. */
static void up_refused(Upstream *u, const UpstreamFlight *f, int reason) {
        _cleanup_free_ char *origin = NULL;
        RejectCtx c = { .u = u };
        int r;

        if (asprintf(&origin, "upstream %s: %s (0x%02x)", u->host_port, mosquitto_reason_string(reason), reason) < 0) {
                up_fail(u, -ENOMEM, "Out of memory");
                return;
        }
        c.topic = origin;
        r = store_read_seq(u->store, f->lo - 1, f->hi + 1, UINT32_MAX, reject_one, &c);
        if (r == -ESHUTDOWN || c.error == -ESHUTDOWN)
                return;
        if (r < 0 || c.error < 0) {
                up_fail(u, r < 0 ? r : c.error, "Failed to keep readings the central broker refused");
                return;
        }
        log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", "upstream"),
                              "Central broker %s refused the %s message with seq %" PRId64 "..%" PRId64 ": %s (0x%02x); "
                              "%d readings kept as rejects, not sent again.",
                              u->host_port, f->live ? "live" : "backlog", f->lo, f->hi, mosquitto_reason_string(reason),
                              reason, r);
}

static void on_publish(struct mosquitto *mosq, void *userdata, int mid, int reason, const mosquitto_property *props) {
        Upstream *u = mqtt_loop_get_userdata(userdata);
        UpstreamFlight f;
        bool transient, refused;
        int64_t after;
        int r;
        (void) mosq;
        (void) props;

        if (u->state != UP_CONNECTED && u->state != UP_STOPPING)
                return;
        /* MQTT 5: below 0x80 is success (0x10, no matching subscribers, included). Quota
         * exceeded and server busy heal by waiting: sent again. Anything else is a refusal of
         * this message for good. */
        refused = reason >= 0x80;
        transient = reason == MQTT_RC_QUOTA_EXCEEDED || reason == MQTT_RC_SERVER_BUSY;
        r = upstream_window_settle(&u->window, mid, !transient, &f);
        if (r < 0) {
                up_fail(u, r, "Out of memory");
                return;
        }
        if (r == 0)
                return; /* the status message, or not ours */
        if (transient) {
                if (f.live)
                        u->window.live_pos = MIN(u->window.live_pos, f.lo - 1);
                else
                        u->window.drain_pos = MIN(u->window.drain_pos, f.lo - 1);
                log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", "upstream"),
                                      "Central broker %s did not take seq %" PRId64 "..%" PRId64 " now: %s; sending it again.",
                                      u->host_port, f.lo, f.hi, mosquitto_reason_string(reason));
        } else if (refused)
                up_refused(u, &f, reason);
        else {
                u->progress_usec = u->last_ack_usec = now_usec(u);
                u->n_acked += (uint64_t) (f.hi - f.lo + 1);
                u->last_acked_seq = MAX(u->last_acked_seq, f.hi);
                u->last_ack_realtime_usec = now_realtime_usec(u);
        }
        up_window_changed(u);
        /* Room in the window: a live pass, if readings wait for it (the window was full, or a
         * transient refusal puts one back). Otherwise the next commit pumps. */
        if (upstream_window_next_live(&u->window, u->committed, &after))
                up_pump(u);
}

/* ---- the connection ---- */

static void up_connection_failed(Upstream *u, int error, const char *cause) {
        char delay[32];
        uint64_t now = now_usec(u), when;
        bool was_connected = u->state == UP_CONNECTED;
        int r;

        if (!has_connection(u->state) && u->state != UP_RESOLVING && u->state != UP_IDLE)
                return;
        mqtt_loop_shutdown(u->loop);
        u->state = UP_OFFLINE;
        mqtt_loop_unwatch(u->loop);
        u->drain_timer = sd_event_source_disable_unref(u->drain_timer);
        upstream_window_disconnect(&u->window);
        snprintf(u->last_cause, sizeof(u->last_cause), "%s", cause);
        u->last_cause_realtime_usec = now_realtime_usec(u);
        if (was_connected) {
                u->n_reconnects++;
                u->link_since_realtime_usec = now_realtime_usec(u);
        }
        (void) error;
        /* No budget: backoff_next() never gives up (the budget is UINT64_MAX). */
        if (backoff_next(&u->backoff, now, backoff_random(), &when) < 0)
                when = now + BACKOFF_MAX_USEC;
        if (was_connected)
                log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", "upstream"),
                                      "Connection to central broker %s lost: %s; reconnecting in %s.", u->host_port,
                                      cause, format_timespan(delay, sizeof(delay), when - now));
        else
                log_full_errno_fields(u->attempt <= 1 || u->attempt % 10 == 0 ? LOG_WARNING : LOG_DEBUG, 0,
                                      LOG_FIELDS("TASK", "upstream"),
                                      "Failed to connect to central broker %s (attempt %u): %s; retrying in %s.",
                                      u->host_port, u->attempt, cause, format_timespan(delay, sizeof(delay), when - now));
        r = mqtt_loop_arm_reconnect(u->loop, when);
        if (r < 0) {
                up_fail(u, r, "Failed to arm the reconnect timer");
                return;
        }
        /* Not reported degraded: an outage of the central link is normal, the store buffers,
         * and READY=1 must not wait for it. STATUS= says "offline from". */
}

static void on_connect(struct mosquitto *mosq, void *userdata, int rc, int flags, const mosquitto_property *props) {
        Upstream *u = mqtt_loop_get_userdata(userdata);
        const UpstreamConfig *c = u->config;
        uint16_t receive_max = 0;
        int k, mid = 0;
        (void) mosq;
        (void) flags;

        if (u->state != UP_CONNECTING)
                return;
        if (rc != 0) {
                char cause[256];
                const char *text = c->protocol == MQTT_PROTOCOL_V311 ? mosquitto_connack_string(rc)
                                                                     : mosquitto_reason_string(rc);

                snprintf(cause, sizeof(cause), "central broker %s refused the connection (CONNACK %d): %s", u->host_port,
                         rc, text);
                if (mqtt_connack_is_fatal(c->protocol, rc))
                        up_fail(u, mqtt_connack_errno(c->protocol, rc), "%s", cause);
                else
                        up_connection_failed(u, mqtt_connack_errno(c->protocol, rc), cause);
                return;
        }
        u->receive_max = 65535;
        if (c->protocol == MQTT_PROTOCOL_V5 &&
            mosquitto_property_read_int16(props, MQTT_PROP_RECEIVE_MAXIMUM, &receive_max, false) && receive_max > 0)
                u->receive_max = receive_max;
        u->state = UP_CONNECTED;
        u->ever_connected = true;
        u->link_since_realtime_usec = now_realtime_usec(u);
        u->progress_usec = now_usec(u);
        backoff_up(&u->backoff, now_usec(u));
        u->attempt = 0;
        u->committed = store_committed_seq(u->store);
        u->acked_at_connect = u->n_acked;
        u->sent_at_connect = u->n_live + u->n_backlog;
        upstream_window_connect(&u->window, u->committed);
        /* The status message takes a slot of the window like any other (an empty range): the
         * broker's Receive Maximum counts it too, and libmosquitto would hold back whatever
         * goes over it. */
        k = mosquitto_publish(u->mosq, &mid, u->status_topic, 6, "online", 1, true);
        if (k == MOSQ_ERR_SUCCESS && upstream_window_add_flight(&u->window, mid, 1, 0, false) < 0) {
                up_fail(u, -ENOMEM, "Out of memory");
                return;
        }
        if (k != MOSQ_ERR_SUCCESS)
                log_full_errno_fields(LOG_WARNING, mqtt_loop_errno(k, errno), LOG_FIELDS("TASK", "upstream"),
                                      "Failed to publish 'online' on '%s', ignoring.", u->status_topic);
        log_full_errno_fields(LOG_INFO, 0, LOG_FIELDS("TASK", "upstream"),
                              "Connected to central broker %s (in flight at most %u%s); about %" PRId64
                              " readings to forward from the backlog.",
                              u->host_port, up_limit(u), u->receive_max < c->max_inflight ? ", the broker's Receive Maximum" : "",
                              upstream_window_pending(&u->window, u->committed));
        task_report_running(u->task);
        k = event_arm_timer(u->event, &u->drain_timer, now_usec(u), USEC_PER_MSEC, on_drain_timer, u, "upstream-drain");
        if (k < 0) {
                up_fail(u, k, "Failed to arm the drain timer");
                return;
        }
        up_pump(u);
}

static void up_finish_stop(Upstream *u);

/* A connection with qos 2 that ended in a protocol error after readings went out and before any
 * was acknowledged: the broker most likely answered a QoS 2 PUBLISH with a PUBACK (RabbitMQ's
 * MQTT plugin does, docs/UPSTREAM.md), which libmosquitto takes as a protocol error. Nothing is
 * lost, but the same readings go out again after every reconnect, for ever: say what to do, at
 * warning the first time and then at most once an hour. Returns true when that is the case (the
 * cause for STATUS= says so too). */
static bool up_qos2_answered_as_qos1(Upstream *u, int rc) {
        uint64_t now = now_usec(u);

        if (rc != MOSQ_ERR_PROTOCOL || u->config->qos != 2 || u->state != UP_CONNECTED ||
            u->n_acked != u->acked_at_connect || u->n_live + u->n_backlog == u->sent_at_connect)
                return false;
        if (u->qos2_logged_usec == 0 || now >= u->qos2_logged_usec + 3600 * USEC_PER_SEC) {
                log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", "upstream"),
                                      "Central broker %s broke the protocol in answer to QoS 2 messages and acknowledged "
                                      "none of them: it probably answers QoS 2 as QoS 1 (RabbitMQ does). The same "
                                      "readings will be sent again after every reconnect; set \"qos\": 1 in the "
                                      "upstream section.",
                                      u->host_port);
                u->qos2_logged_usec = now;
        }
        return true;
}

/* The connection is closed (rc a libmosquitto error or an MQTT 5 DISCONNECT reason code):
 * finish a stop, fail on a certificate that does not verify, or retry. */
static void up_connection_closed(Upstream *u, int rc, int saved) {
        char cause[300];

        if (u->state == UP_STOPPING) {
                up_finish_stop(u);
                return;
        }
        if (!has_connection(u->state))
                return;
        if (u->state == UP_CONNECTING && mqtt_loop_certificate_rejected(u->loop)) {
                up_fail(u, -EPROTO, "TLS certificate of central broker %s not accepted (check cafile/capath and the name '%s'): %s",
                        u->host_port, u->config->host, mqtt_loop_tls_error(u->loop));
                return;
        }
        if (mqtt_loop_tls_error(u->loop)[0] && u->state == UP_CONNECTING)
                snprintf(cause, sizeof(cause), "TLS handshake failed: %s", mqtt_loop_tls_error(u->loop));
        else if (up_qos2_answered_as_qos1(u, rc))
                snprintf(cause, sizeof(cause), "protocol error in answer to QoS 2 (set qos 1 for this broker)");
        else
                snprintf(cause, sizeof(cause), "%s", mqtt_loop_describe(rc ? rc : MOSQ_ERR_CONN_LOST, saved));
        up_connection_failed(u, -ECONNRESET, cause);
}

/* A fresh client for every attempt: libmosquitto would otherwise resend its own copies of the
 * messages in flight after a reconnect, next to ours. Returns 0 or -errno (reported). */
static int up_new_client(Upstream *u) {
        const UpstreamConfig *c = u->config;
        int rc, r;

        u->mosq = NULL; /* destroyed with its successor's creation */
        r = mqtt_loop_client_new(u->loop, c->client_id, true, c->protocol, &u->mosq);
        if (r < 0) {
                up_fail(u, r, "Failed to create the upstream MQTT client");
                return r;
        }
        rc = mosquitto_int_option(u->mosq, MOSQ_OPT_SEND_MAXIMUM, (int) c->max_inflight);
        if (rc == MOSQ_ERR_SUCCESS)
                rc = mosquitto_will_set(u->mosq, u->status_topic, 7, "offline", 1, true);
        if (rc == MOSQ_ERR_SUCCESS && c->username)
                rc = mosquitto_username_pw_set(u->mosq, c->username, u->password);
        if (rc == MOSQ_ERR_SUCCESS && (c->cafile || c->capath)) {
                rc = mqtt_loop_tls_files(u->loop, c->cafile, c->capath, c->certfile, c->keyfile);
                if (rc == MOSQ_ERR_SUCCESS)
                        rc = mqtt_loop_tls_verify(u->loop, c->tls_version);
        }
        if (rc != MOSQ_ERR_SUCCESS) {
                up_fail(u, mqtt_loop_errno(rc, errno), "Failed to set up the upstream MQTT client: %s", mqtt_loop_describe(rc, errno));
                return -EINVAL;
        }
        mosquitto_connect_v5_callback_set(u->mosq, on_connect);
        mosquitto_publish_v5_callback_set(u->mosq, on_publish);
        return 0;
}

static void up_connect_to(Upstream *u, const char *address) {
        const char *tls_error;
        int rc, saved;

        if (up_new_client(u) < 0)
                return;
        rc = mqtt_loop_connect(u->loop, address, u->config->port, u->config->keepalive, &saved);
        tls_error = mqtt_loop_tls_error(u->loop);
        u->state = UP_CONNECTING;
        if (rc == MOSQ_ERR_SUCCESS) {
                up_sync_io(u);
                return;
        }
        if (rc == MOSQ_ERR_TLS && mqtt_loop_certificate_rejected(u->loop)) {
                up_fail(u, -EPROTO, "TLS certificate of central broker %s not accepted (check cafile/capath and the name '%s'): %s",
                        u->host_port, u->config->host, tls_error);
                return;
        }
        up_connection_failed(u, mqtt_loop_errno(rc, saved), rc == MOSQ_ERR_TLS && tls_error[0] ? tls_error
                                                                                        : mqtt_loop_describe(rc, saved));
}

static void on_lookup_done(HostLookup *l, int error, const char *address, size_t n_addresses, const char *cause,
                           void *userdata) {
        Upstream *u = userdata;
        (void) l;
        (void) n_addresses;

        if (u->state != UP_RESOLVING)
                return;
        if (error == -ENOMEM) {
                up_fail(u, error, "Failed to look up central broker %s: %s", u->host_port, cause);
                return;
        }
        if (error < 0) {
                up_connection_failed(u, error, cause);
                return;
        }
        up_connect_to(u, u->config->cafile || u->config->capath ? u->config->host : address);
}

static void up_connect(Upstream *u) {
        const char *cause = NULL;
        int r;

        u->attempt++;
        u->attempt_usec = now_usec(u);
        mqtt_loop_begin_attempt(u->loop);
        if (!mqtt_loop_needs_lookup(u->loop)) {
                up_connect_to(u, u->config->host);
                return;
        }
        u->state = UP_RESOLVING;
        r = mqtt_loop_lookup_start(u->loop, u->attempt - 1, &cause);
        if (r == -ENOMEM)
                up_fail(u, r, "Failed to look up central broker %s: %s", u->host_port, cause);
        else if (r < 0)
                up_connection_failed(u, r, cause);
}

static void on_reconnect(void *userdata, uint64_t usec) {
        Upstream *u = userdata;
        (void) usec;

        if (u->state == UP_OFFLINE)
                up_connect(u);
}

/* Housekeeping (once a second, before keepalive): an attempt unanswered, or messages not
 * acknowledged, for too long. Returns true when it ended the connection. */
static bool on_tick(void *userdata, uint64_t now) {
        Upstream *u = userdata;

        if ((u->state == UP_RESOLVING || u->state == UP_CONNECTING) &&
            now >= u->attempt_usec + mqtt_loop_connect_timeout_usec(u->config->keepalive)) {
                up_connection_failed(u, -ETIMEDOUT, u->state == UP_RESOLVING ? "no answer to the host name lookup"
                                                                              : "no CONNACK");
                return true;
        }
        if (u->state == UP_CONNECTED && u->window.n_flights > 0 &&
            now >= u->progress_usec + MAX(ACK_TIMEOUT_MIN_USEC, 2 * (uint64_t) u->config->keepalive * USEC_PER_SEC)) {
                char text[32], cause[96];

                snprintf(cause, sizeof(cause), "%zu messages not acknowledged for %s", u->window.n_flights,
                         format_timespan(text, sizeof(text), now - u->progress_usec));
                up_connection_failed(u, -ETIMEDOUT, cause);
                return true;
        }
        return false;
}

static bool up_has_connection(void *userdata) {
        Upstream *u = userdata;

        return has_connection(u->state);
}

static void on_disconnected(void *userdata, int rc, int errno_value) {
        up_connection_closed(userdata, rc, errno_value);
}

static void on_watch_failed(void *userdata, int error) {
        up_fail(userdata, error, "Failed to watch the upstream socket");
}

/* Acknowledgements are read as they come, once per wake-up (want_read NULL: always); a hang-up
 * libmosquitto did not notice is a lost connection (hangup NULL). */
static const MqttLoopOps up_loop_ops = {
        .has_connection = up_has_connection,
        .disconnected = on_disconnected,
        .watch_failed = on_watch_failed,
        .tick = on_tick,
        .reconnect = on_reconnect,
        .resolved = on_lookup_done,
};

/* ---- the task ---- */

/* Reads the store id and the done set. Returns 0 or -errno (reported). */
static int up_load(Upstream *u) {
        _cleanup_free_ void *value = NULL;
        size_t size = 0;
        int r;

        r = store_get_meta(u->store, "store_id", &value, &size);
        if (r <= 0) {
                task_report_failure(u->task, r < 0 ? r : -ENODATA, "The store has no store id to forward with");
                return r < 0 ? r : -ENODATA;
        }
        u->store_id = TAKE_PTR(value);
        u->source = (UpstreamSource) { .gateway = u->config->gateway_id, .store_id = u->store_id };

        r = store_get_meta(u->store, UPSTREAM_META_ACKED, &value, &size);
        if (r < 0) {
                task_report_failure(u->task, r, "Failed to read what the central broker acknowledged");
                return r;
        }
        if (r > 0 && upstream_window_load(&u->window, value) < 0) {
                /* Damaged by hand: start from the beginning (duplicates, not loss). */
                log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", "upstream"),
                                      "The record of what was acknowledged upstream ('%s') is not valid; forwarding "
                                      "everything in the store again, ignoring.", (char *) value);
                upstream_window_clear(&u->window);
        }
        value = mfree(value);
        r = store_get_meta(u->store, UPSTREAM_META_LOST, &value, &size);
        if (r > 0)
                u->n_lost = strtoull(value, NULL, 10);
        return 0;
}

static int up_start(Task *t) {
        Upstream *u = task_get_userdata(t);
        _cleanup_free_ char *failed_path = NULL;
        const char *dir = getenv("CREDENTIALS_DIRECTORY");
        _cleanup_free_ char *cred = NULL;
        const char *pwfile = u->config->password_file;
        int r;

        if (up_load(u) < 0)
                return 0;
        r = upstream_topic_format(&u->topic, u->config->status_topic, &u->source, NULL, NULL);
        if (r < 0)
                return r;
        u->status_topic = strdup(u->topic.data);
        if (!u->status_topic)
                return -ENOMEM;
        r = upstream_topic_compile(&u->live_topic, u->config->topic, &u->source);
        if (r >= 0)
                r = upstream_payload_envelope(&u->envelope, &u->source);
        if (r < 0)
                return r;
        u->source.envelope = u->envelope.data;

        /* The password: $CREDENTIALS_DIRECTORY/upstream-password (LoadCredential=) unless a
         * password_file names another credential or file. */
        if (!pwfile && u->config->username && dir && *dir) {
                if (asprintf(&cred, "%s/upstream-password", dir) < 0)
                        return -ENOMEM;
                if (access(cred, F_OK) == 0)
                        pwfile = cred;
        }
        r = credential_read_password(pwfile ? u->config->username : NULL, pwfile, &u->password, &failed_path);
        if (r < 0) {
                task_report_failure(t, r, "Failed to read the upstream password from '%s'", strna(failed_path));
                return 0;
        }

        r = mqtt_loop_start(u->loop);
        if (r < 0)
                return r;

        store_set_hooks(u->store, on_commit, on_retention, u);
        store_set_precommit_hook(u->store, on_store_precommit, u);
        u->committed = store_committed_seq(u->store);
        u->link_since_realtime_usec = now_realtime_usec(u);
        backoff_down(&u->backoff, now_usec(u));
        log_full_errno_fields(LOG_INFO, 0, LOG_FIELDS("TASK", "upstream"),
                              "Forwarding to %s as gateway '%s' (store %s); about %" PRId64 " readings not yet acknowledged.",
                              u->host_port, u->config->gateway_id, u->store_id,
                              upstream_window_pending(&u->window, u->committed));
        /* The store is the buffer: forwarding is running from here, connected or not. */
        u->ran = true;
        task_report_running(t);
        up_connect(u);
        return 0;
}

/* Writes the done set with a commit of its own (at stop). */
static void up_save_now(Upstream *u) {
        _cleanup_free_ char *text = NULL;

        if (!u->window_dirty)
                return;
        if (upstream_window_format(&u->window, &text) >= 0 &&
            store_set_meta(u->store, UPSTREAM_META_ACKED, text, strlen(text)) >= 0)
                u->window_dirty = false;
}

/* The run's figures, once per run, however it ends: connected, while the central link is down
 * (when a person most wants them) or after a failure. */
static void up_log_stopped(Upstream *u) {
        if (!u->ran || u->stop_logged)
                return;
        u->stop_logged = true;
        log_full_errno_fields(LOG_INFO, 0, LOG_FIELDS("TASK", "upstream"),
                              "Stopped (%" PRIu64 " live, %" PRIu64 " backlog readings sent, %" PRIu64 " acknowledged, last seq %" PRId64 ").",
                              u->n_live, u->n_backlog, u->n_acked, u->last_acked_seq);
}

static void up_finish_stop(Upstream *u) {
        mqtt_loop_unwatch(u->loop);
        u->stop_timer = sd_event_source_disable_unref(u->stop_timer);
        if (u->state == UP_FAILED || u->state == UP_STOPPED)
                return;
        u->state = UP_STOPPED;
        upstream_window_disconnect(&u->window);
        up_save_now(u);
        up_log_stopped(u);
        if (u->stop_pending)
                task_report_stopped(u->task);
}

static int on_stop_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Upstream *u = userdata;
        (void) s;
        (void) usec;

        if (u->state == UP_STOPPING)
                up_finish_stop(u);
        return 0;
}

static int up_stop(Task *t) {
        Upstream *u = task_get_userdata(t);
        int r;

        store_set_hooks(u->store, NULL, NULL, NULL);
        store_set_precommit_hook(u->store, NULL, NULL);
        mqtt_loop_halt(u->loop);
        u->drain_timer = sd_event_source_disable_unref(u->drain_timer);
        u->live_timer = sd_event_source_disable_unref(u->live_timer);
        u->save_timer = sd_event_source_disable_unref(u->save_timer);
        if (u->state == UP_STOPPING)
                return 1;
        if (u->state == UP_FAILED || u->state == UP_STOPPED) {
                up_save_now(u);
                up_log_stopped(u);
                return 0;
        }
        if (u->state != UP_CONNECTED) {
                u->state = UP_STOPPED;
                up_save_now(u);
                mqtt_loop_unwatch(u->loop);
                up_log_stopped(u);
                return 0;
        }
        /* An orderly goodbye: "offline" on the status topic (the will covers the rest), then
         * DISCONNECT; what is in flight is sent again next time. */
        u->state = UP_STOPPING; /* libmosquitto may write, and call on_disconnect, right away */
        u->stop_pending = true;
        (void) mosquitto_publish(u->mosq, NULL, u->status_topic, 7, "offline", 1, true);
        (void) mosquitto_disconnect(u->mosq);
        (void) mosquitto_loop_write(u->mosq, WRITE_PACKET_BUDGET);
        if (mosquitto_socket(u->mosq) < 0 || u->state != UP_STOPPING) {
                up_finish_stop(u);
                return 0;
        }
        up_sync_io(u);
        r = event_arm_timer(u->event, &u->stop_timer, now_usec(u) + STOP_FLUSH_USEC, 10 * USEC_PER_MSEC, on_stop_timer, u,
                            "upstream-stop");
        if (r < 0) {
                up_finish_stop(u);
                return 0;
        }
        return 1;
}

static int oldest_received(const StoredReading *row, void *userdata) {
        *(int64_t *) userdata = row->received_ms;
        return 0;
}

static void up_format_status(Task *t, char *buf, size_t size) {
        Upstream *u = task_get_userdata(t);
        char age[64] = "", ack[80] = "none", lost[64] = "";
        int64_t pending = upstream_window_pending(&u->window, store_committed_seq(u->store));
        const char *state;

        switch (u->state) {
        case UP_CONNECTED:
                state = "connected to";
                break;
        case UP_STOPPING:
        case UP_STOPPED:
                state = "stopped,";
                break;
        case UP_FAILED:
                snprintf(buf, size, "failed");
                return;
        default:
                state = "offline from";
        }
        if (pending > 0) {
                /* The oldest reading not acknowledged: one indexed row. */
                int64_t received = 0;
                SeqRange gap;
                char span[32];

                if (upstream_window_next_gap(&u->window, 0, u->committed, &gap) &&
                    store_read_seq(u->store, gap.lo - 1, u->committed + 1, 1, oldest_received, &received) > 0 &&
                    received > 0)
                        snprintf(age, sizeof(age), ", oldest %s",
                                 format_timespan(span, sizeof(span),
                                                 (uint64_t) MAX(wall_clock_ms() - received, (int64_t) 0) * USEC_PER_MSEC));
        }
        if (u->last_ack_usec > 0) {
                char ago[32];

                snprintf(ack, sizeof(ack), "seq %" PRId64 " %s ago", u->last_acked_seq,
                         format_timespan(ago, sizeof(ago), now_usec(u) - u->last_ack_usec));
        }
        if (u->n_lost > 0)
                snprintf(lost, sizeof(lost), ", %" PRIu64 " removed unforwarded", u->n_lost);
        snprintf(buf, size, "%s %s, backlog %" PRId64 "%s, last ack %s, %" PRIu64 " refused%s", state, u->host_port,
                 pending, age, ack, u->n_refused, lost);
}

void upstream_get_info(Upstream *u, UpstreamInfo *ret) {
        int64_t committed;
        SeqRange gap;

        assert(u && ret);

        committed = store_committed_seq(u->store);
        *ret = (UpstreamInfo) {
                .connected = u->state == UP_CONNECTED,
                .link_since_usec = u->link_since_realtime_usec,
                .broker = u->host_port,
                .backlog = (uint64_t) MAX(upstream_window_pending(&u->window, committed), (int64_t) 0),
                .last_acked_seq = u->last_acked_seq,
                .last_ack_usec = u->last_ack_realtime_usec,
                .in_flight = u->window.n_flights,
                .max_in_flight = u->state == UP_CONNECTED ? up_limit(u) : 0,
                .lost = u->n_lost,
                .reconnects = u->n_reconnects,
                .refused = u->n_refused,
                .sent_live = u->n_live,
                .sent_backlog = u->n_backlog,
                .acked = u->n_acked,
                .last_error = u->last_cause[0] ? u->last_cause : NULL,
                .last_error_usec = u->last_cause[0] ? u->last_cause_realtime_usec : 0,
        };
        switch (u->state) {
        case UP_CONNECTED:
                ret->state = "connected";
                break;
        case UP_IDLE:
        case UP_RESOLVING:
        case UP_CONNECTING:
                ret->state = u->ever_connected ? "offline" : "connecting";
                break;
        case UP_OFFLINE:
                ret->state = "offline";
                break;
        case UP_STOPPING:
        case UP_STOPPED:
                ret->state = "stopped";
                break;
        case UP_FAILED:
                ret->state = "failed";
                break;
        }
        /* The oldest reading not acknowledged: one indexed row, as in STATUS=. A failed store
         * leaves it unknown (0). */
        if (ret->backlog > 0 && u->state != UP_FAILED && upstream_window_next_gap(&u->window, 0, committed, &gap))
                (void) store_read_seq(u->store, gap.lo - 1, committed + 1, 1, oldest_received,
                                      &ret->oldest_received_ms);
}

static void up_free(void *userdata) {
        Upstream *u = userdata;

        if (!u)
                return;
        sd_event_source_disable_unref(u->drain_timer);
        sd_event_source_disable_unref(u->live_timer);
        sd_event_source_disable_unref(u->save_timer);
        sd_event_source_disable_unref(u->stop_timer);
        mqtt_loop_free(u->loop);
        if (u->password)
                erase_and_free(u->password, strlen(u->password));
        free(u->host_port);
        free(u->store_id);
        free(u->status_topic);
        free(u->topic.data);
        upstream_topic_done(&u->live_topic);
        free(u->envelope.data);
        free(u->payload.data);
        upstream_window_clear(&u->window);
        sd_event_unref(u->event);
        free(u);
}

static const TaskOps upstream_task_ops = {
        .name = "upstream",
        .exit_status = EXIT_STATUS_UPSTREAM,
        .start = up_start,
        .stop = up_stop,
        .free = up_free,
        .format_status = up_format_status,
};

int upstream_task_new(sd_event *e, const UpstreamConfig *config, Store *store, Sensors *sensors, Task **ret,
                      Upstream **ret_upstream) {
        Upstream *u;
        Task *t;
        int r;

        assert(e && config && store && ret);

        u = calloc(1, sizeof(*u));
        if (!u)
                return -ENOMEM;
        u->event = sd_event_ref(e);
        u->config = config;
        u->store = store;
        u->sensors = sensors;
        u->corked_fd = -EBADF;
        u->receive_max = 65535;
        u->backoff_policy = (BackoffPolicy) {
                .initial_usec = BACKOFF_INITIAL_USEC,
                .max_usec = BACKOFF_MAX_USEC,
                .budget_usec = UINT64_MAX,
                .stable_usec = STABLE_CONNECTION_USEC,
        };
        backoff_init(&u->backoff, &u->backoff_policy);
        upstream_window_init(&u->window);

        r = task_new(&upstream_task_ops, u, &t); /* owns u from here, also on failure */
        if (r < 0)
                return r;
        u->task = t;
        if (asprintf(&u->host_port, strchr(config->host, ':') ? "[%s]:%u" : "%s:%u", config->host,
                     (unsigned) config->port) < 0) {
                u->host_port = NULL;
                task_free(t);
                return -ENOMEM;
        }
        r = mqtt_loop_new(e, "upstream", config->host, &up_loop_ops, u, &u->loop);
        if (r < 0) {
                task_free(t);
                return r;
        }
        *ret = t;
        if (ret_upstream)
                *ret_upstream = u;
        return 0;
}
