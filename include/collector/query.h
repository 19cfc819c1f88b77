/* SPDX-License-Identifier: MIT */
/* `sensor-collector query`: a read-only look at the store for people on the gateway. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* Parses its own options (argv[0] is "query") and prints readings, latest values, counts or
 * rejects on stdout, errors on stderr. Opens the store read-only, so it works while the daemon
 * writes. Returns a process exit status: 0 (also when nothing matches), 64 for bad usage, 78 for
 * an invalid --config file, 1 when the store cannot be read (missing, not a sensor-collector
 * store, unreadable). */
int query_main(int argc, char **argv);

/* Parses a time for --since/--until: relative to now_ms ("30s", "15m", "1h", "2d", "1w" ago,
 * "now"), or absolute ISO-8601 "2026-11-21T10:00:00Z" (also with ".123", "+01:00"/"-0530",
 * a space for 'T', or without a zone: local time) or a date "2026-11-21" (local midnight).
 * Returns 0 and *ret_ms (ms since the epoch), or -EINVAL. */
int query_parse_time(const char *s, int64_t now_ms, int64_t *ret_ms);
