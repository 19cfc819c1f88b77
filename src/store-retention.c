/* SPDX-License-Identifier: MIT */
/* Retention: removing readings, rejects, events and unused names by age and by size, in bounded steps. */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>

#include "collector/log.h"
#include "collector/macro.h"
#include "collector/store.h"
#include "collector/time-util.h"
#include "store-internal.h"

/* ---- retention ---- */

/* Walks the oldest `limit` rows of a table after id `after` (by id) and finds the last one
 * received before cutoff_ms. Rows are appended in receipt order, so the walk stops at the first
 * row that is young enough and never scans the table. A row received after future_ms cannot
 * have a true receipt time (the gateway clock was ahead when it came): it is stepped over, not
 * stopped at, and goes with the old rows after it (a delete by id takes it along), so one row
 * stamped years ahead cannot hold up retention. Rows after id `until` are not walked, nor any
 * after the max_old-th old row (the step's allowance: the rows a delete walks in every index). *ret_id is the last old row (0 when none),
 * *ret_received its receipt time, *ret_walked the last row before the first young one (every
 * row up to it is old or from the future; `after` when none). Returns an SQLite code. */
static int store_head_cutoff(Store *s, Stmt head, int64_t after, int64_t until, int64_t cutoff_ms, int64_t future_ms,
                             bool keep_unsynced, int64_t limit, int64_t max_old, int64_t *ret_id,
                             int64_t *ret_received, int64_t *ret_walked) {
        sqlite3_stmt *st = s->stmts[head];
        int64_t last = 0, last_received = 0, walked = after, old = 0;
        int rc;

        rc = sqlite3_bind_int64(st, 1, limit);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 2, after);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 3, until);
        while (rc == SQLITE_OK) {
                int64_t id, received;

                rc = sqlite3_step(st);
                if (rc != SQLITE_ROW)
                        break;
                rc = SQLITE_OK;
                id = sqlite3_column_int64(st, 0);
                received = sqlite3_column_int64(st, 1);
                /* A receipt time taken before the clock was trusted says nothing about age:
                 * stepped over like one from the future, and its delete leaves it. */
                if (keep_unsynced && sqlite3_column_int(st, 2)) {
                        walked = id;
                        continue;
                }
                if (received >= cutoff_ms && received <= future_ms)
                        break;
                walked = id;
                if (received < cutoff_ms) {
                        last = id;
                        last_received = received;
                        if (++old >= max_old)
                                break;
                }
        }
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        if (rc != SQLITE_OK && rc != SQLITE_DONE)
                return rc;
        *ret_id = last;
        if (ret_received)
                *ret_received = last_received;
        if (ret_walked)
                *ret_walked = walked;
        return SQLITE_OK;
}

static int store_delete_upto(Store *s, Stmt del, int64_t id, uint64_t *ret_deleted) {
        sqlite3_stmt *st = s->stmts[del];
        int rc;

        *ret_deleted = 0;
        if (id <= 0)
                return SQLITE_OK;
        if (del == STMT_DELETE_REJECTS && s->reject_bytes_known) {
                sqlite3_stmt *q = s->stmts[STMT_REJECTS_BYTES_UPTO];

                /* A range of at most a step's rows from the head. */
                rc = sqlite3_bind_int64(q, 1, id);
                if (rc == SQLITE_OK)
                        rc = sqlite3_step(q);
                if (rc != SQLITE_ROW)
                        return rc; /* see store_stmt_run() */
                s->reject_bytes -= sqlite3_column_int64(q, 0) * REJECT_ROW_OVERHEAD + sqlite3_column_int64(q, 1);
                s->reject_bytes = MAX(s->reject_bytes, (int64_t) 0);
                sqlite3_reset(q);
                sqlite3_clear_bindings(q);
        }
        rc = sqlite3_bind_int64(st, 1, id);
        if (rc == SQLITE_OK && del == STMT_DELETE_READINGS_AGED)
                rc = sqlite3_bind_int64(st, 2, s->age_delete_from);
        if (rc == SQLITE_OK)
                rc = store_stmt_run(st);
        if (rc == SQLITE_OK)
                *ret_deleted = (uint64_t) sqlite3_changes64(s->db);
        if (rc == SQLITE_OK && del != STMT_DELETE_REJECTS && *ret_deleted > 0)
                rc = store_blocks_prune(s, id);
        if (rc == SQLITE_OK && del == STMT_DELETE_READINGS_AGED)
                s->age_delete_from = MAX(s->age_delete_from, id);
        return rc;
}

static int store_used_bytes(Store *s, int64_t *ret) {
        int64_t pages = 0, free_pages = 0;
        int rc;

        rc = store_stmt_int(s->stmts[STMT_PAGE_COUNT], &pages);
        if (rc == SQLITE_OK)
                rc = store_stmt_int(s->stmts[STMT_FREELIST_COUNT], &free_pages);
        if (rc == SQLITE_OK)
                *ret = (pages - free_pages) * s->page_size;
        return rc;
}

/* The pages the first step that gives free pages back may move (see store_retention_step()). */
#define VACUUM_FIRST_PAGES 64

/* Keeps the rejects within their share of max_size_mb, oldest first: counts their size once (a
 * scan of the rejects only, which this bound keeps small), then removes at most max_rows (the
 * step's allowance: a reject's raw bytes make it dearer to delete than a reading, and the pace
 * follows what the step took). Sets *ret_deleted and, when more must go, *ret_more. Returns an
 * SQLite code. */
static int store_trim_rejects(Store *s, int64_t budget, int64_t max_rows, uint64_t *ret_deleted, bool *ret_more) {
        sqlite3_stmt *st = s->stmts[STMT_REJECTS_SIZES];
        int64_t excess, freed = 0, last = 0;
        int rc;

        *ret_deleted = 0;
        if (!s->reject_bytes_known) {
                int64_t count = 0, bytes = 0;
                sqlite3_stmt *q = NULL;

                rc = sqlite3_prepare_v2(s->db, "SELECT count(*), total(length(raw)) FROM rejects", -1, &q, NULL);
                if (rc == SQLITE_OK)
                        rc = sqlite3_step(q);
                if (rc == SQLITE_ROW) {
                        count = sqlite3_column_int64(q, 0);
                        bytes = sqlite3_column_int64(q, 1);
                        rc = SQLITE_OK;
                }
                sqlite3_finalize(q);
                if (rc != SQLITE_OK)
                        return rc;
                s->reject_bytes = count * REJECT_ROW_OVERHEAD + bytes;
                s->reject_bytes_known = true;
        }
        excess = s->reject_bytes - budget;
        if (excess <= 0)
                return SQLITE_OK;

        rc = sqlite3_bind_int64(st, 1, max_rows);
        while (rc == SQLITE_OK && freed < excess) {
                rc = sqlite3_step(st);
                if (rc != SQLITE_ROW)
                        break;
                rc = SQLITE_OK;
                last = sqlite3_column_int64(st, 0);
                freed += sqlite3_column_int64(st, 1) + REJECT_ROW_OVERHEAD;
        }
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        if (rc != SQLITE_OK && rc != SQLITE_DONE)
                return rc;
        rc = store_delete_upto(s, STMT_DELETE_REJECTS, last, ret_deleted);
        if (rc != SQLITE_OK)
                return rc;
        *ret_more = *ret_more || s->reject_bytes > budget;
        return SQLITE_OK;
}

_Static_assert(EVENT_ROW_OVERHEAD == 64, "EVENT_COST_SQL spells EVENT_ROW_OVERHEAD");

void store_count_event(Store *s, const char *kind, const char *sensor, const char *subject, const char *detail) {
        if (!s->event_bytes_known)
                return;
        s->event_bytes += EVENT_ROW_OVERHEAD + (int64_t) strlen(strempty(kind)) + 2 * (int64_t) strlen(strempty(sensor)) +
                          (int64_t) strlen(strempty(subject)) + (int64_t) strlen(strempty(detail));
}

/* Removes up to RETENTION_STEP_ROWS events older than cutoff (ms), and takes what they cost off
 * the size estimate that max_size_mb's share of events keeps (the delete returns each row's
 * cost), so that share does not remove events age retention already removed. Returns an SQLite
 * code. */
static int store_delete_aged_events(Store *s, int64_t cutoff) {
        sqlite3_stmt *st = s->stmts[STMT_DELETE_EVENTS];
        int64_t freed = 0;
        int rc;

        rc = sqlite3_bind_int64(st, 1, cutoff);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 2, RETENTION_STEP_ROWS);
        while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                freed += sqlite3_column_int64(st, 0);
                rc = SQLITE_OK;
        }
        if (rc != SQLITE_DONE)
                return rc; /* left as it is: see store_stmt_run() */
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        if (s->event_bytes_known)
                s->event_bytes = MAX(s->event_bytes - freed, (int64_t) 0);
        return SQLITE_OK;
}

/* Keeps events and clock events within their share of max_size_mb, the oldest of both first (by
 * their time, the two tables' heads merged): counts their size once (a scan of both, which this
 * bound keeps small), then removes at most RETENTION_STEP_ROWS. Adds what went to *ret_deleted and
 * sets *ret_more when more must go. Returns an SQLite code. */
static int store_trim_events(Store *s, int64_t budget, uint64_t *ret_deleted, bool *ret_more) {
        static const char *const head_sql[2] = {
                "SELECT id, ts, " EVENT_COST_SQL " FROM events ORDER BY id LIMIT ?1",
                "SELECT id, at, " CLOCK_EVENT_COST_SQL " FROM clock_events ORDER BY id LIMIT ?1",
        };
        static const char *const delete_sql[2] = {
                "DELETE FROM events WHERE id <= ?1",
                "DELETE FROM clock_events WHERE id <= ?1",
        };
        sqlite3_stmt *q[2] = {};
        int64_t excess, freed = 0, last[2] = {}, taken = 0;
        bool have[2] = {};
        int rc = SQLITE_OK;

        if (!s->event_bytes_known) {
                int64_t events = 0, clock_events = 0;

                rc = store_exec_int(s->db, "SELECT coalesce(sum(" EVENT_COST_SQL "), 0) FROM events", &events);
                if (rc == SQLITE_OK)
                        rc = store_exec_int(s->db, "SELECT coalesce(sum(" CLOCK_EVENT_COST_SQL "), 0) FROM clock_events",
                                            &clock_events);
                if (rc != SQLITE_OK)
                        return rc;
                s->event_bytes = events + clock_events;
                s->event_bytes_known = true;
        }
        excess = s->event_bytes - budget;
        if (excess <= 0)
                return SQLITE_OK;

        for (size_t t = 0; rc == SQLITE_OK && t < 2; t++) {
                rc = sqlite3_prepare_v2(s->db, head_sql[t], -1, &q[t], NULL);
                if (rc == SQLITE_OK)
                        rc = sqlite3_bind_int64(q[t], 1, RETENTION_STEP_ROWS);
                if (rc == SQLITE_OK) {
                        rc = sqlite3_step(q[t]);
                        have[t] = rc == SQLITE_ROW;
                        rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
                }
        }
        /* The older head goes first, until enough has gone or the step's rows are taken. */
        while (rc == SQLITE_OK && freed < excess && taken < RETENTION_STEP_ROWS && (have[0] || have[1])) {
                size_t t = !have[1] || (have[0] && sqlite3_column_int64(q[0], 1) <= sqlite3_column_int64(q[1], 1)) ? 0 : 1;

                last[t] = sqlite3_column_int64(q[t], 0);
                freed += sqlite3_column_int64(q[t], 2);
                taken++;
                rc = sqlite3_step(q[t]);
                have[t] = rc == SQLITE_ROW;
                rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
        }
        sqlite3_finalize(q[0]);
        sqlite3_finalize(q[1]);
        for (size_t t = 0; rc == SQLITE_OK && t < 2; t++) {
                sqlite3_stmt *d = NULL;

                if (last[t] == 0)
                        continue;
                rc = sqlite3_prepare_v2(s->db, delete_sql[t], -1, &d, NULL);
                if (rc == SQLITE_OK)
                        rc = sqlite3_bind_int64(d, 1, last[t]);
                if (rc == SQLITE_OK)
                        rc = store_stmt_run(d);
                if (rc == SQLITE_OK)
                        *ret_deleted += (uint64_t) sqlite3_changes64(s->db);
                sqlite3_finalize(d);
        }
        if (rc != SQLITE_OK)
                return rc;
        s->event_bytes = MAX(s->event_bytes - freed, (int64_t) 0);
        *ret_more = *ret_more || s->event_bytes > budget;
        return SQLITE_OK;
}

/* Counts the name tables once (the estimate is kept up to date from then on). */
static int store_count_names(Store *s) {
        static const char *const sql[_NAME_KIND_MAX] = {
                "SELECT count(*), total(length(name)), total(length(name) > ?1) FROM sensors",
                "SELECT count(*), total(length(name)), total(length(name) > ?1) FROM metrics",
                "SELECT count(*), total(length(name)), total(length(name) > ?1) FROM origins",
        };
        int64_t max_local = (s->page_size - 12) * 64 / 255 - 23;
        int64_t count = 0, bytes = 0;

        if (s->names_known)
                return SQLITE_OK;
        for (size_t k = 0; k < _NAME_KIND_MAX; k++) {
                sqlite3_stmt *q = NULL;
                int rc;

                rc = sqlite3_prepare_v2(s->db, sql[k], -1, &q, NULL);
                if (rc == SQLITE_OK)
                        rc = sqlite3_bind_int64(q, 1, max_local);
                if (rc == SQLITE_OK)
                        rc = sqlite3_step(q);
                if (rc == SQLITE_ROW) {
                        count += sqlite3_column_int64(q, 0);
                        bytes += 2 * sqlite3_column_int64(q, 1) + sqlite3_column_int64(q, 0) * NAME_ROW_OVERHEAD +
                                 sqlite3_column_int64(q, 2) * s->page_size;
                        rc = SQLITE_OK;
                }
                sqlite3_finalize(q);
                if (rc != SQLITE_OK)
                        return rc;
        }
        s->names_count = count;
        s->names_bytes = bytes;
        s->names_known = true;
        return SQLITE_OK;
}

/* Begins a prune pass: notes how far the tables reach now and makes room for the marks. */
static int prune_begin(Store *s) {
        static const char *const max_sql[_NAME_KIND_MAX] = {
                "SELECT coalesce(max(id), 0) FROM sensors",
                "SELECT coalesce(max(id), 0) FROM metrics",
                "SELECT coalesce(max(id), 0) FROM origins",
        };
        NamePrune *p = &s->prune;
        int rc;

        *p = (NamePrune) { .last_end_usec = p->last_end_usec };
        s->size_cut_rows = 0;
        rc = store_stmt_int(s->stmts[STMT_READINGS_MAX_ID], &p->walk_end[0]);
        if (rc == SQLITE_OK)
                rc = store_exec_int(s->db, "SELECT coalesce(max(id), 0) FROM rejects", &p->walk_end[1]);
        for (size_t k = 0; rc == SQLITE_OK && k < _NAME_KIND_MAX; k++)
                rc = store_exec_int(s->db, max_sql[k], &p->name_max[k]);
        if (rc != SQLITE_OK)
                return rc;
        for (size_t k = 0; k < _NAME_KIND_MAX; k++) {
                p->marks[k] = calloc((size_t) p->name_max[k] / 8 + 1, 1);
                if (!p->marks[k]) {
                        /* Only housekeeping: try again at the next interval. */
                        store_prune_end(p);
                        p->last_end_usec = clock_now_usec(CLOCK_MONOTONIC);
                        log_full_errno_fields(LOG_WARNING, -ENOMEM, LOG_FIELDS("TASK", "store"),
                                              "Not enough memory to look for unused names in '%s', ignoring.",
                                              s->config->path);
                        return SQLITE_OK;
                }
        }
        p->active = true;
        return SQLITE_OK;
}

/* One bounded step of a prune pass: walks a step's rows of readings, then of rejects, marking
 * the names they use; then deletes a step's worth of unmarked names, one table at a time.
 * Adds the names deleted to *ret_names. Returns an SQLite code. */
static int prune_step(Store *s, uint64_t *ret_names) {
        static const Stmt scan[_NAME_KIND_MAX] = { STMT_SCAN_SENSORS, STMT_SCAN_METRICS, STMT_SCAN_ORIGINS };
        static const Stmt drop[_NAME_KIND_MAX] = { STMT_DROP_SENSOR, STMT_DROP_METRIC, STMT_DROP_ORIGIN };
        NamePrune *p = &s->prune;
        int64_t unused[RETENTION_STEP_ROWS], unused_bytes = 0;
        size_t n_unused = 0;
        int rc;

        for (size_t t = 0; t < 2; t++) {
                sqlite3_stmt *st = s->stmts[t == 0 ? STMT_WALK_READINGS : STMT_WALK_REJECTS];
                int64_t rows = 0;

                if (p->walk_pos[t] >= p->walk_end[t])
                        continue;
                rc = sqlite3_bind_int64(st, 1, p->walk_pos[t]);
                if (rc == SQLITE_OK)
                        rc = sqlite3_bind_int64(st, 2, p->walk_end[t]);
                if (rc == SQLITE_OK)
                        rc = sqlite3_bind_int64(st, 3, RETENTION_STEP_ROWS);
                while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                        rc = SQLITE_OK;
                        rows++;
                        p->walk_pos[t] = sqlite3_column_int64(st, 0);
                        if (t == 0) {
                                store_prune_mark(p, NAME_SENSOR, sqlite3_column_int64(st, 1));
                                store_prune_mark(p, NAME_METRIC, sqlite3_column_int64(st, 2));
                                store_prune_mark(p, NAME_ORIGIN, sqlite3_column_int64(st, 3));
                        } else
                                store_prune_mark(p, NAME_ORIGIN, sqlite3_column_int64(st, 1));
                }
                sqlite3_reset(st);
                sqlite3_clear_bindings(st);
                if (rc != SQLITE_DONE)
                        return rc;
                if (rows < RETENTION_STEP_ROWS)
                        p->walk_pos[t] = p->walk_end[t];
                return SQLITE_OK;
        }

        for (size_t k = 0; k < _NAME_KIND_MAX; k++) {
                sqlite3_stmt *st = s->stmts[scan[k]];
                int64_t rows = 0;

                if (p->sweep_pos[k] >= p->name_max[k])
                        continue;
                rc = sqlite3_bind_int64(st, 1, p->sweep_pos[k]);
                if (rc == SQLITE_OK)
                        rc = sqlite3_bind_int64(st, 2, p->name_max[k]);
                if (rc == SQLITE_OK)
                        rc = sqlite3_bind_int64(st, 3, RETENTION_STEP_ROWS);
                while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                        int64_t id = sqlite3_column_int64(st, 0);

                        rc = SQLITE_OK;
                        rows++;
                        p->sweep_pos[k] = id;
                        if (!store_prune_marked(p, (NameKind) k, id)) {
                                unused[n_unused++] = id;
                                unused_bytes += store_name_cost(s, sqlite3_column_int64(st, 1));
                        }
                }
                sqlite3_reset(st);
                sqlite3_clear_bindings(st);
                if (rc != SQLITE_DONE)
                        return rc;
                if (rows < RETENTION_STEP_ROWS)
                        p->sweep_pos[k] = p->name_max[k];
                /* Deleted after the scan, not under it. */
                for (size_t i = 0; i < n_unused; i++) {
                        rc = sqlite3_bind_int64(s->stmts[drop[k]], 1, unused[i]);
                        if (rc == SQLITE_OK)
                                rc = store_stmt_run(s->stmts[drop[k]]);
                        if (rc != SQLITE_OK)
                                return rc;
                }
                if (n_unused > 0) {
                        /* The caches may hold a deleted name's id, which a new name may get. */
                        store_name_cache_clear(&s->names[k]);
                        store_id_name_cache_clear(&s->seq_names[k]);
                        s->names_count = MAX(s->names_count - (int64_t) n_unused, (int64_t) 0);
                        s->table_names[k] = MAX(s->table_names[k] - (int64_t) n_unused, (int64_t) 0);
                        s->names_bytes = MAX(s->names_bytes - unused_bytes, (int64_t) 0);
                        *ret_names += n_unused;
                }
                return SQLITE_OK;
        }

        store_prune_end(p);
        p->last_end_usec = clock_now_usec(CLOCK_MONOTONIC);
        return SQLITE_OK;
}

/* Removes the oldest readings, at most max_rows of them and never the newest floor_rows, then
 * the rejects received up to the newest reading removed (rejects alone when no reading may go),
 * at most max_rows of them too. Sets *ret_readings and *ret_rejects; returns an SQLite code. */
static int store_trim_readings(Store *s, int64_t max_rows, int64_t floor_rows, uint64_t *ret_readings,
                               uint64_t *ret_rejects) {
        int64_t newest = 0, id = 0, received = 0;
        uint64_t n = 0;
        int rc;

        rc = store_stmt_int(s->stmts[STMT_READINGS_MAX_ID], &newest);
        if (rc == SQLITE_OK)
                rc = store_head_cutoff(s, STMT_READINGS_HEAD, 0, newest - floor_rows, INT64_MAX, INT64_MAX, false,
                                       RETENTION_STEP_ROWS, max_rows, &id, &received, NULL);
        if (rc == SQLITE_OK)
                rc = store_before_delete_readings(s, id, false);
        if (rc == SQLITE_OK)
                rc = store_delete_upto(s, STMT_DELETE_READINGS, id, &n);
        if (rc != SQLITE_OK)
                return rc;
        *ret_readings = n;
        rc = store_head_cutoff(s, STMT_REJECTS_HEAD, 0, INT64_MAX, n > 0 ? received + 1 : INT64_MAX, INT64_MAX, false,
                               RETENTION_STEP_ROWS, max_rows, &id, NULL, NULL);
        if (rc == SQLITE_OK)
                rc = store_delete_upto(s, STMT_DELETE_REJECTS, id, ret_rejects);
        return rc;
}

/* Says loudly (rate-limited) that the store is over max_size_mb and size retention may remove
 * nothing more, with the numbers; the task's status says it too until it is under again. */
static void store_note_over_limit(Store *s, int64_t used, int64_t limit, int64_t floor_rows) {
        uint64_t now = clock_now_usec(CLOCK_MONOTONIC);

        if (s->over_limit_bytes > 0 && now < s->over_limit_logged_usec + OVER_LIMIT_LOG_INTERVAL_USEC) {
                s->over_limit_bytes = used;
                return;
        }
        s->over_limit_bytes = used;
        s->over_limit_logged_usec = now;
        log_full_errno_fields(LOG_WARNING, 0, LOG_FIELDS("TASK", "store"),
                              "Store '%s' uses %.1f MiB, over its limit of %" PRId64 " MiB, and size retention may "
                              "remove nothing more: it keeps the newest readings (at least %" PRId64 ") and the %" PRId64
                              " names still in use (about %.1f MiB), and rejects take %.1f MiB. "
                              "Raise store.max_size_mb, or find what sends so many distinct sensor ids or topics.",
                              s->config->path, used / 1048576.0, limit / 1048576, floor_rows, s->names_count,
                              s->names_bytes / 1048576.0, s->reject_bytes / 1048576.0);
}

/* One step inside the open transaction; sets *ret_more when a backlog remains, and *ret_full
 * when the step walked or removed its whole allowance of readings. The allowance comes from the
 * pace (retention-pace.h) and is one per step, shared: age retention takes what it finds due,
 * size retention what is left of it. Both delete the oldest readings by id, the same rows from
 * the same b-trees at the same cost per row, so one pace learns from either (a step that does
 * both is timed as one). Size retention cuts the finer for it: it stops at most an allowance
 * after the store came under its limit, so what a finer cut changes is only that more of the
 * newest stays. */
static int store_retention_step(Store *s, uint64_t *ret_readings, uint64_t *ret_rejects, uint64_t *ret_names,
                                uint64_t *ret_events, uint64_t *ret_clock_events, uint64_t *ret_boots, bool *ret_by_size,
                                bool *ret_more, bool *ret_full) {
        uint64_t readings = 0, rejects = 0, names = 0, events = 0, clock_events = 0, boots = 0, n;
        int64_t id, step_rows = retention_pace_rows(&s->retention_pace);
        bool names_big = false, over = false, size_waits = false, cut_open = false;
        int rc;

        *ret_more = false;
        *ret_by_size = false;
        *ret_full = false;

        if (s->config->retention_days > 0) {
                static const Stmt heads[2] = { STMT_READINGS_HEAD, STMT_REJECTS_HEAD };
                static const Stmt deletes[2] = { STMT_DELETE_READINGS_AGED, STMT_DELETE_REJECTS };
                int64_t now = wall_clock_ms(), cutoff = now - (int64_t) s->config->retention_days * MSEC_PER_DAY;

                for (size_t t = 0; t < 2; t++) {
                        int64_t walked;

                        rc = store_head_cutoff(s, heads[t], s->age_walk_from[t], INT64_MAX, cutoff, now, true,
                                               RETENTION_STEP_ROWS, step_rows, &id, NULL, &walked);
                        if (rc == SQLITE_OK && t == 0)
                                rc = store_before_delete_readings(s, id, true);
                        if (rc == SQLITE_OK)
                                rc = store_delete_upto(s, deletes[t], id, &n);
                        if (rc != SQLITE_OK)
                                return rc;
                        *(t == 0 ? &readings : &rejects) += n;
                        /* Rows from the future stay behind the walk's start: the next walk
                         * does not read them again. A full walk means more is due. */
                        *ret_full = *ret_full || walked - s->age_walk_from[t] >= RETENTION_STEP_ROWS ||
                                    n >= (uint64_t) step_rows;
                        *ret_more = *ret_more || *ret_full;
                        s->age_walk_from[t] = walked;
                }

                /* Events age with the readings they explain (few rows: one bounded delete). */
                rc = store_delete_aged_events(s, cutoff);
                if (rc != SQLITE_OK)
                        return rc;
        }

        if (s->config->max_size_mb > 0) {
                int64_t used, limit = (int64_t) s->config->max_size_mb * 1024 * 1024, floor_rows = SIZE_FLOOR_ROWS(limit);
                uint64_t by_size = 0;

                /* The rejects' own bound first: noise never pushes out readings. */
                rc = store_trim_rejects(s, limit / REJECTS_SHARE_DIVISOR, step_rows, &n, ret_more);
                if (rc != SQLITE_OK)
                        return rc;
                rejects += n;
                by_size += n;
                /* The whole allowance went on rejects: the pace may grow. */
                *ret_full = *ret_full || n >= (uint64_t) step_rows;
                /* So are events, and the clock's. */
                rc = store_trim_events(s, limit / EVENTS_SHARE_DIVISOR, &events, ret_more);
                if (rc != SQLITE_OK)
                        return rc;
                by_size += events;

                rc = store_count_names(s);
                if (rc == SQLITE_OK)
                        rc = store_used_bytes(s, &used);
                if (rc != SQLITE_OK)
                        return rc;
                names_big = s->names_bytes > limit / NAMES_SHARE_DIVISOR;
                /* While rejects or events are over their share, the next step trims more of
                 * them before any reading is touched; while names take much of the room and a
                 * pass is finding the unused ones, readings wait for what it frees. */
                if (used > limit && s->reject_bytes <= limit / REJECTS_SHARE_DIVISOR &&
                    s->event_bytes <= limit / EVENTS_SHARE_DIVISOR && !(names_big && s->prune.active)) {
                        int64_t size_rows = step_rows - (int64_t) readings;
                        uint64_t m;

                        /* While names take much of the room, readings go in cuts of
                         * RETENTION_STEP_ROWS between two passes over the names: a pass walks
                         * every reading, so the cut must not shrink with the pace (a pass per
                         * 16 rows would never end on a large store); each of its steps still
                         * keeps to the pace. */
                        if (names_big)
                                size_rows = MIN(size_rows, RETENTION_STEP_ROWS - s->size_cut_rows);
                        /* Age retention took this step's allowance (the cut goes on in the
                         * next step), or the cut is done (the pass is next). */
                        size_waits = size_rows <= 0;
                        cut_open = (int64_t) readings >= step_rows;
                        if (!size_waits) {
                                rc = store_trim_readings(s, size_rows, floor_rows, &n, &m);
                                if (rc != SQLITE_OK)
                                        return rc;
                                readings += n;
                                rejects += m;
                                by_size += n + m;
                                s->size_cut_rows += (int64_t) n;
                                /* The whole allowance went: more is due, and the pace may grow. */
                                *ret_full = *ret_full || (int64_t) readings >= step_rows;
                                cut_open = n >= (uint64_t) size_rows && s->size_cut_rows < RETENTION_STEP_ROWS;
                        }
                }
                rc = store_used_bytes(s, &used);
                if (rc != SQLITE_OK)
                        return rc;
                over = used > limit;
                *ret_by_size = by_size > 0;
                *ret_more = *ret_more || (over && (by_size > 0 || size_waits));

                /* Nothing more may go, and no pass can free more names: say so. */
                if (over && by_size == 0 && !size_waits && !s->prune.active && !(s->prune.dirty && names_big))
                        store_note_over_limit(s, used, limit, floor_rows);
                else if (!over && s->over_limit_bytes > 0) {
                        s->over_limit_bytes = 0;
                        log_full_errno_fields(LOG_INFO, 0, LOG_FIELDS("TASK", "store"),
                                              "Store '%s' is under its limit of %u MiB again (%.1f MiB).",
                                              s->config->path, s->config->max_size_mb, used / 1048576.0);
                }
        }

        /* The clock's records go once no reading they explain is left, whichever retention
         * removed the readings (store-clock.c). */
        if (s->config->retention_days > 0 || s->config->max_size_mb > 0) {
                rc = store_clock_retention_step(s, &clock_events, &boots, ret_more);
                if (rc != SQLITE_OK)
                        return rc;
        }

        /* Unused names: a pass once the rows due have gone, at most once an hour, or back to
         * back while names keep the store over its limit, or when a table is at
         * store.max_names (see store_names_full()). */
        s->prune.dirty = s->prune.dirty || readings + rejects > 0;
        if (!s->prune.active && (s->prune.wanted || s->prune.dirty) &&
            (s->prune.wanted || (over && names_big && !cut_open) ||
             (!*ret_more && (s->prune.last_end_usec == 0 ||
                             clock_now_usec(CLOCK_MONOTONIC) >= s->prune.last_end_usec + PRUNE_INTERVAL_USEC)))) {
                rc = prune_begin(s);
                if (rc != SQLITE_OK)
                        return rc;
        }
        if (s->prune.active) {
                rc = prune_step(s, &names);
                if (rc != SQLITE_OK)
                        return rc;
                *ret_more = true;
        }

        if (readings + rejects + names + events + clock_events + boots > 0) {
                int64_t pages = 0, free_pages = 0;

                /* Give a large freelist back to the file system, a bounded bit per step. With
                 * steady retention, free pages are simply reused and this does nothing. The
                 * pages per step follow the time they took, as rows do (retention-pace.h): on a
                 * store a year old, 1 024 pages took 45 to 130 ms, each moved page's parent
                 * read and rewritten (docs/BENCHMARKS.md). */
                rc = store_stmt_int(s->stmts[STMT_PAGE_COUNT], &pages);
                if (rc == SQLITE_OK)
                        rc = store_stmt_int(s->stmts[STMT_FREELIST_COUNT], &free_pages);
                if (rc == SQLITE_OK && free_pages > 256 && free_pages > pages / 4) {
                        uint64_t t0 = clock_now_usec(CLOCK_MONOTONIC);
                        char sql[64];

                        /* Not the pace's first 250: a page took 0.05 to 0.12 ms to move on a store a
                         * year old, so 64 fit the pace's aim and 250 do not. */
                        if (s->vacuum_pace.rows == 0)
                                s->vacuum_pace.rows = VACUUM_FIRST_PAGES;

                        snprintf(sql, sizeof(sql), "PRAGMA incremental_vacuum(%u)",
                                 retention_pace_rows(&s->vacuum_pace));
                        rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
                        retention_pace_update(&s->vacuum_pace, clock_now_usec(CLOCK_MONOTONIC) - t0, true,
                                              (uint64_t) s->config->commit_interval_ms * USEC_PER_MSEC);
                }
                if (rc != SQLITE_OK)
                        return rc;
        }

        *ret_readings = readings;
        *ret_rejects = rejects;
        *ret_names = names;
        *ret_events = events;
        *ret_clock_events = clock_events;
        *ret_boots = boots;
        return SQLITE_OK;
}

int store_run_retention(Store *s) {
        uint64_t readings = 0, rejects = 0, names = 0, events = 0, clock_events = 0, boots = 0, begun;
        bool by_size = false, more = false, full = false;
        int rc, r;

        assert(s);

        r = store_check_writable(s);
        if (r < 0)
                return r;
        /* Without retention, only a pass over the names for store.max_names, and the line that
         * says what it removed, are ever due. */
        if (s->config->retention_days == 0 && s->config->max_size_mb == 0 && !s->prune.wanted && !s->prune.active &&
            s->sweep_names == 0) {
                s->retention_backlog = false;
                return 0;
        }

        /* The open batch first, so that deletions commit on their own. */
        r = store_commit_internal(s);
        if (r < 0)
                return r;
        begun = clock_now_usec(CLOCK_MONOTONIC);
        r = store_begin(s);
        if (r < 0)
                return r;
        rc = store_retention_step(s, &readings, &rejects, &names, &events, &clock_events, &boots, &by_size, &more, &full);
        if (rc != SQLITE_OK)
                return store_fail_sqlite(s, rc, "remove old readings from");
        r = store_commit_internal(s);
        if (r < 0)
                return r;
        /* From BEGIN to the end of COMMIT: how long ingest could not write. */
        retention_pace_update(&s->retention_pace, clock_now_usec(CLOCK_MONOTONIC) - begun, full,
                              (uint64_t) s->config->commit_interval_ms * USEC_PER_MSEC);

        s->sweep_readings += readings;
        s->sweep_rejects += rejects;
        s->sweep_names += names;
        s->sweep_events += events;
        s->sweep_clock_events += clock_events;
        s->sweep_boots += boots;
        s->sweep_by_size = s->sweep_by_size || by_size;
        if (!more && s->sweep_readings + s->sweep_rejects + s->sweep_names + s->sweep_events + s->sweep_clock_events +
                                     s->sweep_boots > 0) {
                char why[96] = "", also[224] = "";

                if (s->config->retention_days > 0)
                        snprintf(why, sizeof(why), "older than %u days", s->config->retention_days);
                if (s->sweep_by_size)
                        snprintf(why + strlen(why), sizeof(why) - strlen(why), "%sto stay under %u MiB",
                                 why[0] ? ", or " : "", s->config->max_size_mb);
                if (s->sweep_events > 0)
                        snprintf(also, sizeof(also), ", %" PRIu64 " events beyond their share", s->sweep_events);
                if (s->sweep_clock_events + s->sweep_boots > 0)
                        snprintf(also + strlen(also), sizeof(also) - strlen(also),
                                 ", %" PRIu64 " clock events and %" PRIu64 " boots no reading left needs",
                                 s->sweep_clock_events, s->sweep_boots);
                if (s->sweep_names > 0)
                        snprintf(also + strlen(also), sizeof(also) - strlen(also), ", and %" PRIu64 " names no row uses",
                                 s->sweep_names);
                if (s->sweep_readings + s->sweep_rejects + s->sweep_events + s->sweep_clock_events + s->sweep_boots == 0)
                        log_full_errno_fields(LOG_INFO, 0, LOG_FIELDS("TASK", "store"),
                                              "Retention removed %" PRIu64 " names no row uses from '%s'.",
                                              s->sweep_names, s->config->path);
                else
                        log_full_errno_fields(LOG_INFO, 0, LOG_FIELDS("TASK", "store"),
                                              "Retention removed %" PRIu64 " readings and %" PRIu64 " rejects (%s)%s from '%s'.",
                                              s->sweep_readings, s->sweep_rejects, why, also, s->config->path);
                s->sweep_readings = s->sweep_rejects = s->sweep_names = s->sweep_events = 0;
                s->sweep_clock_events = s->sweep_boots = 0;
                s->sweep_by_size = false;
        }
        s->retention_backlog = more;
        return (int) MIN(readings + rejects + names + events + clock_events + boots, (uint64_t) INT32_MAX);
}

bool store_retention_pending(const Store *s) {
        assert(s);
        return s->retention_backlog;
}

int store_on_retention_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        Store *s = userdata;
        uint64_t now = usec;
        int r;

        r = store_run_retention(s);
        if (r < 0)
                return 0; /* reported */
        /* A full step means a backlog: come back soon, but let the loop breathe in between. The
         * next step is due a period after this one was; after a stall (a slow disk, a suspended
         * board) that time is past: run one step as soon as possible and keep the pace from
         * there, instead of every missed step back to back. */
        (void) sd_event_now(s->event, CLOCK_MONOTONIC, &now);
        (void) sd_event_source_set_time(source, MAX(usec + (s->retention_backlog ? RETENTION_BUSY_INTERVAL_USEC
                                                                                 : RETENTION_INTERVAL_USEC),
                                                    now));
        (void) sd_event_source_set_enabled(source, SD_EVENT_ON);
        return 0;
}
