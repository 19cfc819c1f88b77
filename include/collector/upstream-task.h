/* SPDX-License-Identifier: MIT */
/* Upstream forwarding: committed readings from the store to a central MQTT broker, at least once. */
#pragma once

#include <systemd/sd-event.h>

#include "collector/config.h"
#include "collector/sensors.h"
#include "collector/store.h"
#include "collector/task.h"

/* The store's meta key that holds what was acknowledged upstream (upstream-window.h's text). */
#define UPSTREAM_META_ACKED "upstream.acked"
/* The meta key that counts readings retention removed before they were acknowledged. */
#define UPSTREAM_META_LOST "upstream.lost"

typedef struct Upstream Upstream;

/* Creates the upstream task ("upstream", exit status 14). config and store must outlive the
 * task; the store must be started before it (it is: tasks start in the order they are added).
 * sensors (borrowed, may be NULL) gives each reading the unit the sensor map names for its
 * sensor and metric ("unit" in the payload; none without). *ret is the task (owned by the
 * caller); *ret_upstream, unless ret_upstream is NULL, a borrowed view for
 * upstream_get_info(), valid until the task is freed. Returns 0 or -ENOMEM.
 *
 * start() reads the store id and what was acknowledged before from the store's meta table,
 * reports running (forwarding never holds up READY=1: the store is the buffer) and connects
 * with its own libmosquitto client, a fresh one per attempt, without blocking the loop. While
 * connected, readings committed from then on go out live, one message each, on config->topic;
 * what was committed before and not acknowledged drains oldest first on a timer, in batches on
 * config->backlog_topic, at config->backlog_rate, within the in-flight limit (the smaller of
 * config->max_inflight and the broker's Receive Maximum) and never taking the slots kept for
 * live readings. A reading is done only when its PUBACK/PUBCOMP arrives, in any order; what
 * is done is written to the store within its next commit. Outages are retried forever with
 * backoff (reported degraded). The task fails on what waiting cannot fix: a CONNACK refusal
 * for credentials or authorization, a certificate that does not verify, no memory, a store
 * failure. An MQTT 5 refusal of one message (reason code 0x80 or above, except quota and busy,
 * which are retried) puts its readings into the rejects, with the reason in the log, and never
 * sends them again. See docs/UPSTREAM.md. */
int upstream_task_new(sd_event *e, const UpstreamConfig *config, Store *store, Sensors *sensors, Task **ret,
                      Upstream **ret_upstream);

/* What forwarding is doing, for `sensor-collector status` (docs/UPSTREAM.md). Times are
 * CLOCK_REALTIME in usec (0: never); strings are borrowed, valid until the next call into u. */
typedef struct UpstreamInfo {
        const char *state;            /* "connecting" (never connected yet), "connected", "offline",
                                       * "stopped", "failed" */
        bool connected;
        uint64_t link_since_usec;     /* when the link went up (connected) or down (else; the
                                       * start when it never was up) */
        const char *broker;           /* "host:port" ("[v6]:port") */
        uint64_t backlog;             /* committed readings not yet acknowledged (an upper bound:
                                       * sequence numbers without a reading count too) */
        int64_t oldest_received_ms;   /* receipt time of the oldest of them; 0 none or unknown */
        int64_t last_acked_seq;       /* the largest seq acknowledged in this run; 0 none */
        uint64_t last_ack_usec;
        size_t in_flight;             /* messages sent and not acknowledged (live, batches, status) */
        unsigned max_in_flight;       /* the limit on this connection; 0 when not connected */
        uint64_t lost;                /* removed by retention before they were acknowledged (ever) */
        uint64_t reconnects;          /* connections lost after they were up, in this run */
        uint64_t refused;             /* readings the broker refused (put into the rejects) */
        uint64_t sent_live, sent_backlog, acked; /* readings, in this run */
        const char *last_error;       /* the last connection problem, or NULL */
        uint64_t last_error_usec;
} UpstreamInfo;

/* Fills *ret from u's state without blocking beyond one indexed read of the store (the oldest
 * unacknowledged reading). u must not be NULL. */
void upstream_get_info(Upstream *u, UpstreamInfo *ret);
