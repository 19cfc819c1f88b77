/* SPDX-License-Identifier: MIT */
/* Upstream forwarding: committed readings from the store to a central MQTT broker, at least once. */
#pragma once

#include <systemd/sd-event.h>

#include "collector/config.h"
#include "collector/store.h"
#include "collector/task.h"

/* The store's meta key that holds what was acknowledged upstream (upstream-window.h's text). */
#define UPSTREAM_META_ACKED "upstream.acked"
/* The meta key that counts readings retention removed before they were acknowledged. */
#define UPSTREAM_META_LOST "upstream.lost"

/* Creates the upstream task ("upstream", exit status 14). config and store must outlive the
 * task; the store must be started before it (it is: tasks start in the order they are added).
 * Returns 0 or -ENOMEM.
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
int upstream_task_new(sd_event *e, const UpstreamConfig *config, Store *store, Task **ret);
