/* SPDX-License-Identifier: MIT */
/* What a reload changes in the sensor map, in words for the log: entries added, changed, removed. */
#pragma once

#include <stddef.h>

#include "collector/config.h"

/* Compares two sensor maps entry by entry (by id or pattern; file order does not count, except
 * between patterns, where it decides which applies) and writes what changed into buf:
 * "added gh4-door; changed gh1-t*; removed gh9-x; stale_after 3 -> 4; unknown store -> reject",
 * cut with "..." when it does not fit (size > 0). old and new are borrowed. Pure. Returns the
 * number of changes (0: the maps mean the same, buf is ""). */
size_t sensor_map_diff(const SensorMapConfig *old, const SensorMapConfig *new, char *buf, size_t size);
