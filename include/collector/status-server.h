/* SPDX-License-Identifier: MIT */
/* The status socket: a read-only Unix socket on the loop that answers `sensor-collector status`. */
#pragma once

#include <cJSON.h>
#include <systemd/sd-event.h>

#include "collector/macro.h"

typedef struct StatusServer StatusServer;

/* The request a client sends: this line, and nothing else, is answered. */
#define STATUS_REQUEST "status\n"
/* The file name of the socket in the runtime directory (RuntimeDirectory= in the unit). */
#define STATUS_SOCKET_NAME "status.sock"
/* Where `sensor-collector status` looks by default. */
#define STATUS_SOCKET_DEFAULT_PATH "/run/sensor-collector/" STATUS_SOCKET_NAME

/* Bounds that keep a hostile or stuck peer from costing more than this: connections at once
 * (more are accepted and closed at once), bytes of request, time from accept to the last byte
 * of the answer, size of the answer, connections accepted per loop iteration. */
#define STATUS_CONNECTIONS_MAX 16
#define STATUS_REQUEST_MAX 64
#define STATUS_TIMEOUT_USEC (2 * USEC_PER_SEC)
#define STATUS_ANSWER_MAX (256 * 1024)
#define STATUS_ACCEPT_BURST 16

/* A section of the answer. Conventions that let `status` show a section in text and OpenMetrics
 * without knowing it (see docs/OPERATIONS.md): section is the JSON object named after the
 * section; it holds either scalar members (one row: "store") or only object members, one per
 * row, named by the row ("inputs": {"serial": {...}, "mqtt": {...}}; the OpenMetrics label is
 * the section's name without its final "s"). In a row, a number is a metric whose name follows
 * Prometheus' conventions (a unit suffix such as _seconds or _bytes, _total for a counter, a
 * time as _timestamp_seconds since the epoch); a boolean "healthy" that is false makes the
 * daemon degraded (exit status 1); strings are labels of an info metric; null means unknown.
 * A section with no members (a map with no rows now) reads "none" in text and gives no metric.
 * Returns 0 or -errno (-ENOMEM); the section is then left out of the answer. Must not block. */
typedef int (*status_fill_t)(cJSON *section, void *userdata);

/* Binds a SOCK_STREAM Unix socket at path, mode 0660 (the group of the process may ask), and
 * serves it on e. A stale socket at path (nobody answers) is replaced; one in use gives
 * -EADDRINUSE. Returns 0 and *ret (owned by the caller), or -errno (nothing logged). */
int status_server_new(sd_event *e, const char *path, StatusServer **ret);

/* Closes every connection, removes the socket file. Accepts NULL; returns NULL. */
StatusServer *status_server_free(StatusServer *srv);
DEFINE_TRIVIAL_CLEANUP_FUNC(StatusServer *, status_server_free);

/* Adds a section, answered in the order added; name is copied, userdata borrowed (must outlive
 * the server). Returns 0, -EEXIST for a name already added, or -ENOMEM. */
int status_server_add_section(StatusServer *srv, const char *name, status_fill_t fill, void *userdata);

/* The whole answer as the socket would give it (a JSON object, one section per member).
 * Returns 0 and *ret (caller frees with cJSON_Delete) or -ENOMEM. */
int status_server_build(StatusServer *srv, cJSON **ret);
