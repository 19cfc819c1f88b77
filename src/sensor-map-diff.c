/* SPDX-License-Identifier: MIT */
/* What a reload changes in the sensor map, in words for the log: entries added, changed, removed. */
#include <assert.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "collector/macro.h"
#include "collector/sensor-map-diff.h"

static const SensorEntryConfig *entry_by_id(const SensorMapConfig *map, const char *id, size_t *ret_index) {
        for (size_t i = 0; i < map->n_entries; i++)
                if (streq(map->entries[i].id, id)) {
                        *ret_index = i;
                        return &map->entries[i];
                }
        return NULL;
}

static bool metric_equal(const SensorMetricConfig *a, const SensorMetricConfig *b) {
        return streq(a->name, b->name) && a->has_min == b->has_min && a->has_max == b->has_max &&
               (!a->has_min || a->min == b->min) && (!a->has_max || a->max == b->max) && streq_ptr(a->unit, b->unit) &&
               a->expect_every_usec == b->expect_every_usec;
}

static bool entry_equal(const SensorEntryConfig *a, const SensorEntryConfig *b) {
        if (a->expect_every_usec != b->expect_every_usec || a->n_metrics != b->n_metrics)
                return false;
        /* Metrics by name: their order in the file means nothing. */
        for (size_t i = 0; i < a->n_metrics; i++) {
                bool found = false;

                for (size_t j = 0; j < b->n_metrics && !found; j++)
                        found = metric_equal(&a->metrics[i], &b->metrics[j]);
                if (!found)
                        return false;
        }
        return true;
}

/* How many patterns come before entries[index]: among patterns the first match applies. */
static size_t pattern_rank(const SensorMapConfig *map, size_t index) {
        size_t rank = 0;

        for (size_t i = 0; i < index; i++)
                rank += map->entries[i].is_pattern;
        return rank;
}

typedef struct Out {
        char *buf;
        size_t size, used;
        bool cut;
} Out;

static void out_add(Out *o, const char *fmt, ...) _printf_(2, 3);
static void out_add(Out *o, const char *fmt, ...) {
        va_list ap;
        int k;

        if (o->cut || o->size == 0)
                return;
        va_start(ap, fmt);
        k = vsnprintf(o->buf + o->used, o->size - o->used, fmt, ap);
        va_end(ap);
        if (k >= 0 && (size_t) k < o->size - o->used) {
                o->used += (size_t) k;
                return;
        }
        /* Cut: end with "..." where it still fits. */
        o->cut = true;
        if (o->size >= 4)
                memcpy(o->buf + o->size - 4, "...", 4);
        else
                o->buf[o->size - 1] = 0;
}

/* One clause per kind ("added a, b"), so the reader sees each kind once. */
static size_t out_clause(Out *o, const char *what, const SensorMapConfig *a, const SensorMapConfig *b, int kind) {
        size_t n = 0;

        for (size_t i = 0; i < a->n_entries; i++) {
                const SensorEntryConfig *e = &a->entries[i], *other;
                size_t j = 0;
                bool hit;

                other = entry_by_id(b, e->id, &j);
                if (kind == 0)          /* in a, not in b */
                        hit = !other;
                else                    /* in both, different, or a pattern that moved among patterns */
                        hit = other && (!entry_equal(e, other) ||
                                        (e->is_pattern && pattern_rank(a, i) != pattern_rank(b, j)));
                if (!hit)
                        continue;
                out_add(o, "%s%s%s", n == 0 ? (o->used > 0 ? "; " : "") : ", ", n == 0 ? what : "", e->id);
                n++;
        }
        return n;
}

size_t sensor_map_diff(const SensorMapConfig *old, const SensorMapConfig *new, char *buf, size_t size) {
        Out o = { .buf = buf, .size = size };
        size_t n = 0;

        assert(old && new && (buf || size == 0));
        if (size > 0)
                buf[0] = 0;
        n += out_clause(&o, "added ", new, old, 0);
        n += out_clause(&o, "changed ", new, old, 1);
        n += out_clause(&o, "removed ", old, new, 0);
        if (old->stale_after != new->stale_after) {
                out_add(&o, "%sstale_after %u -> %u", o.used > 0 ? "; " : "", old->stale_after, new->stale_after);
                n++;
        }
        if (old->unknown != new->unknown) {
                out_add(&o, "%sunknown %s -> %s", o.used > 0 ? "; " : "",
                        strna(sensor_unknown_policy_to_string(old->unknown)),
                        strna(sensor_unknown_policy_to_string(new->unknown)));
                n++;
        }
        return n;
}
