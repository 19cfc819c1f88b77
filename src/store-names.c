/* SPDX-License-Identifier: MIT */
/* Interned names (sensors, metrics, origins), their cache and the pass over them, and the store.max_names cap. */
#include <assert.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>

#include "collector/log.h"
#include "collector/macro.h"
#include "collector/store.h"
#include "collector/time-util.h"
#include "store-internal.h"

/* ---- interned names ---- */

static uint64_t name_hash(const char *s) {
        uint64_t h = 1469598103934665603ULL; /* FNV-1a */

        for (; *s; s++)
                h = (h ^ (unsigned char) *s) * 1099511628211ULL;
        return h;
}

void store_name_cache_clear(NameCache *c) {
        for (size_t i = 0; i < NAME_CACHE_SLOTS; i++)
                c->slots[i].name = mfree(c->slots[i].name);
        c->n = 0;
}

static NameSlot *name_cache_slot(NameCache *c, const char *name) {
        size_t i = name_hash(name) & (NAME_CACHE_SLOTS - 1);

        while (c->slots[i].name && !streq(c->slots[i].name, name))
                i = (i + 1) & (NAME_CACHE_SLOTS - 1);
        return &c->slots[i];
}

static void name_cache_put(NameCache *c, const char *name, int64_t id) {
        NameSlot *slot;
        char *copy;

        if (c->n >= NAME_CACHE_MAX)
                store_name_cache_clear(c);
        copy = strdup(name);
        if (!copy)
                return; /* only a cache */
        slot = name_cache_slot(c, name);
        slot->name = copy;
        slot->id = id;
        c->n++;
}

/* The estimated cost of a name of len bytes in its table and unique index. */
int64_t store_name_cost(const Store *s, int64_t len) {
        /* SQLite's largest local payload of an index cell, see sqlite3BtreeOpen(). */
        int64_t max_local = (s->page_size - 12) * 64 / 255 - 23;

        return 2 * len + NAME_ROW_OVERHEAD + (len > max_local ? s->page_size : 0);
}

void store_prune_mark(NamePrune *p, NameKind kind, int64_t id) {
        if (p->active && p->marks[kind] && id > 0 && id <= p->name_max[kind])
                p->marks[kind][id / 8] |= (uint8_t) (1u << (id % 8));
}

bool store_prune_marked(const NamePrune *p, NameKind kind, int64_t id) {
        return id <= 0 || id > p->name_max[kind] || (p->marks[kind][id / 8] & (1u << (id % 8)));
}

void store_prune_end(NamePrune *p) {
        for (size_t k = 0; k < _NAME_KIND_MAX; k++)
                p->marks[k] = mfree(p->marks[k]);
        p->active = false;
}

/* Returns the id of an interned name, adding it when new (inside the open transaction). */
int store_intern(Store *s, NameKind kind, const char *name, int64_t *ret) {
        static const Stmt find[_NAME_KIND_MAX] = { STMT_FIND_SENSOR, STMT_FIND_METRIC, STMT_FIND_ORIGIN };
        static const Stmt add[_NAME_KIND_MAX] = { STMT_ADD_SENSOR, STMT_ADD_METRIC, STMT_ADD_ORIGIN };
        NameCache *c = &s->names[kind];
        NameSlot *slot = name_cache_slot(c, name);
        sqlite3_stmt *st;
        int64_t id = 0;
        int rc;

        if (slot->name) {
                store_prune_mark(&s->prune, kind, slot->id);
                *ret = slot->id;
                return 0;
        }

        st = s->stmts[find[kind]];
        rc = sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
                rc = store_stmt_int(st, &id);
        sqlite3_clear_bindings(st);
        if (rc == SQLITE_NOTFOUND) {
                st = s->stmts[add[kind]];
                rc = sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
                if (rc == SQLITE_OK)
                        rc = store_stmt_run(st);
                id = sqlite3_last_insert_rowid(s->db);
                s->batch_names_bytes += store_name_cost(s, (int64_t) strlen(name));
                s->batch_names_count++;
                s->batch_table_names[kind]++;
        }
        if (rc != SQLITE_OK)
                return store_fail_sqlite(s, rc, "write to");

        store_prune_mark(&s->prune, kind, id);
        name_cache_put(c, name, id);
        *ret = id;
        return 0;
}

/* ---- store.max_names ---- */

/* Whether name is in its table; a name found is cached, so the append that follows finds it at
 * once. Returns an SQLite code. */
int store_name_known(Store *s, NameKind kind, const char *name, bool *ret_known) {
        static const Stmt find[_NAME_KIND_MAX] = { STMT_FIND_SENSOR, STMT_FIND_METRIC, STMT_FIND_ORIGIN };
        sqlite3_stmt *st = s->stmts[find[kind]];
        int64_t id = 0;
        int rc;

        if (name_cache_slot(&s->names[kind], name)->name) {
                *ret_known = true;
                return SQLITE_OK;
        }
        rc = sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
                rc = store_stmt_int(st, &id);
        sqlite3_clear_bindings(st);
        *ret_known = rc == SQLITE_OK;
        if (rc == SQLITE_OK)
                name_cache_put(&s->names[kind], name, id);
        return rc == SQLITE_NOTFOUND ? SQLITE_OK : rc;
}

/* How many more names table kind takes under store.max_names. */
int64_t store_names_room(const Store *s, NameKind kind) {
        return (int64_t) s->config->max_names - s->table_names[kind] - s->batch_table_names[kind];
}

/* A full table turned a name away: say so (rate-limited), and ask for a pass over the names,
 * since names no row uses any more still count until one removes them. */
void store_names_full(Store *s, NameKind kind) {
        static const char *const what[_NAME_KIND_MAX] = { "sensor ids", "metric names", "origins" };
        uint64_t now = clock_now_usec(CLOCK_MONOTONIC);

        if (!s->prune.active && !s->prune.wanted &&
            (s->prune.last_end_usec == 0 || (s->prune.dirty && now >= s->prune.last_end_usec + NAMES_FULL_PRUNE_USEC))) {
                s->prune.wanted = true;
                if (s->retention_timer) {
                        (void) sd_event_source_set_time(s->retention_timer, now + RETENTION_BUSY_INTERVAL_USEC);
                        (void) sd_event_source_set_enabled(s->retention_timer, SD_EVENT_ON);
                }
        }
        if (s->names_full_logged_usec[kind] != 0 && now < s->names_full_logged_usec[kind] + OVER_LIMIT_LOG_INTERVAL_USEC)
                return;
        s->names_full_logged_usec[kind] = now;
        log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", "store"),
                              "Store '%s' holds %" PRId64 " %s (store.max_names is %u): a frame that would add another "
                              "is kept as a reject (too_many_names), a reject from a new origin under the origin '%s'. "
                              "Raise store.max_names, or find what sends so many distinct names (the rejects show it).",
                              s->config->path, s->table_names[kind] + s->batch_table_names[kind], what[kind],
                              s->config->max_names, NAMES_FULL_ORIGIN);
}

int store_names_fit(Store *s, const Frame *f, const char *origin) {
        int64_t added[_NAME_KIND_MAX] = { 0 };
        bool fits = true, known;
        int rc, k;

        assert(s && f);

        k = store_check_writable(s);
        if (k < 0)
                return k;
        if (s->config->max_names == 0)
                return 1;
        /* Room for every name as new: the common case, no lookup. */
        fits = store_names_room(s, NAME_SENSOR) >= 1 && store_names_room(s, NAME_METRIC) >= (int64_t) f->n_metrics &&
               store_names_room(s, NAME_ORIGIN) >= 1;
        if (fits)
                return 1;

        rc = store_name_known(s, NAME_SENSOR, f->sensor, &known);
        added[NAME_SENSOR] += !known;
        for (size_t i = 0; rc == SQLITE_OK && i < f->n_metrics; i++) {
                rc = store_name_known(s, NAME_METRIC, f->metrics[i].name, &known);
                added[NAME_METRIC] += !known;
        }
        if (rc == SQLITE_OK) {
                rc = store_name_known(s, NAME_ORIGIN, strempty(origin), &known);
                added[NAME_ORIGIN] += !known;
        }
        if (rc != SQLITE_OK)
                return store_fail_sqlite(s, rc, "read from");
        for (size_t kind = 0; kind < _NAME_KIND_MAX; kind++)
                if (added[kind] > 0 && added[kind] > store_names_room(s, (NameKind) kind)) {
                        s->names_refused++;
                        store_names_full(s, (NameKind) kind);
                        return 0;
                }
        return 1;
}

/* Counts the name tables for store.max_names, once at open. Returns an SQLite code. */
int store_count_tables(Store *s) {
        static const char *const sql[_NAME_KIND_MAX] = {
                "SELECT count(*) FROM sensors",
                "SELECT count(*) FROM metrics",
                "SELECT count(*) FROM origins",
        };
        int rc = SQLITE_OK;

        for (size_t k = 0; rc == SQLITE_OK && k < _NAME_KIND_MAX; k++)
                rc = store_exec_int(s->db, sql[k], &s->table_names[k]);
        return rc;
}
