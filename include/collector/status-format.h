/* SPDX-License-Identifier: MIT */
/* The status answer for people and programs: health, readable text, Prometheus text, OpenMetrics. */
#pragma once

#include <cJSON.h>
#include <stdint.h>
#include <stdio.h>

/* Pure functions of the answer (a JSON object of sections, see status-server.h for the
 * conventions) and, for text, the time now; none knows any section by name, so sections added
 * later show in every format. */

/* 0 when every row that says "healthy" says true, else 1 (degraded). */
int status_health(const cJSON *answer);

/* A summary for people: per section and row, every member with times shown as local time and
 * how long ago (against now_ms, ms since the epoch), sizes in KiB/MiB. Returns 0 or -errno of
 * the write. */
int status_format_text(const cJSON *answer, int64_t now_ms, FILE *f);

/* Prometheus' text format 0.0.4, which node_exporter's textfile collector and
 * `promtool check metrics` read. Returns 0 or -errno of the write. */
int status_format_prometheus(const cJSON *answer, FILE *f);

/* OpenMetrics 1.0 text (counter families without _total, info metrics, "# EOF"). Returns 0 or
 * -errno of the write. */
int status_format_openmetrics(const cJSON *answer, FILE *f);
