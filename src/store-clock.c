/* SPDX-License-Identifier: MIT */
/* The clock's side of the store: this boot's row, correcting receipt times taken unsynced, clock events. */
#include <assert.h>
#include <stdint.h>
#include <sqlite3.h>

#include "collector/macro.h"
#include "collector/store.h"
#include "store-internal.h"

/* ---- the clock's side: this boot, correction, clock events ---- */

int store_clock_set_boot(Store *s, const char *boot_id) {
        sqlite3_stmt *st = NULL;
        int64_t from = 0, count = 0;
        int rc, r;

        assert(s && boot_id);

        r = store_check_writable(s);
        if (r < 0)
                return r;
        r = store_begin(s);
        if (r < 0)
                return r;
        rc = sqlite3_prepare_v2(s->db, "INSERT OR IGNORE INTO boots (boot_id) VALUES (?1)", -1, &st, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_text(st, 1, boot_id, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
                rc = store_stmt_run(st);
        sqlite3_finalize(st);
        st = NULL;
        if (rc == SQLITE_OK)
                rc = sqlite3_prepare_v2(s->db,
                                        "SELECT id, coalesce(first_unsynced, 0), corrected_upto FROM boots WHERE boot_id = ?1",
                                        -1, &st, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_text(st, 1, boot_id, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                s->boot_row = sqlite3_column_int64(st, 0);
                s->boot_first_unsynced = sqlite3_column_int64(st, 1);
                s->boot_corrected_upto = sqlite3_column_int64(st, 2);
                rc = SQLITE_OK;
        }
        sqlite3_finalize(st);
        st = NULL;
        /* A restart within the same boot: count what still waits, once (a range of ids). */
        from = MAX(s->boot_first_unsynced - 1, s->boot_corrected_upto);
        if (rc == SQLITE_OK && s->boot_first_unsynced > 0) {
                rc = sqlite3_prepare_v2(s->db, "SELECT count(*) FROM readings WHERE id > ?1 AND flags & 3 = 1", -1, &st,
                                        NULL);
                if (rc == SQLITE_OK)
                        rc = sqlite3_bind_int64(st, 1, from);
                if (rc == SQLITE_OK)
                        rc = store_stmt_int(st, &count);
                sqlite3_finalize(st);
        }
        if (rc != SQLITE_OK)
                return store_fail_sqlite(s, rc, "register this boot in");
        s->boot_waiting = (uint64_t) count;
        r = store_commit_internal(s);
        if (r < 0)
                return r;
        return (int) MIN(count, (int64_t) INT32_MAX);
}

uint64_t store_clock_waiting(const Store *s) {
        assert(s);
        return s->boot_waiting + s->batch_unsynced;
}

int store_clock_correct(Store *s, int64_t offset_ms, unsigned max_rows, uint64_t *ret_corrected) {
        sqlite3_stmt *st;
        int64_t lo, hi, n;
        int rc, r;

        assert(s && max_rows > 0 && ret_corrected);

        *ret_corrected = 0;
        r = store_check_writable(s);
        if (r < 0)
                return r;
        if (s->boot_row == 0 || s->boot_first_unsynced == 0)
                return 0;
        /* The open batch first: its unsynced rows are in this round, and the correction
         * commits on its own. */
        r = store_commit_internal(s);
        if (r < 0)
                return r;
        if (s->correct_end == 0) {
                rc = store_stmt_int(s->stmts[STMT_READINGS_MAX_ID], &s->correct_end);
                if (rc != SQLITE_OK)
                        return store_fail_sqlite(s, rc, "correct readings in");
        }
        lo = MAX(s->boot_first_unsynced - 1, s->boot_corrected_upto);
        if (lo >= s->correct_end) {
                s->correct_end = 0;
                return 0;
        }
        hi = MIN(lo + (int64_t) max_rows, s->correct_end);

        r = store_begin(s);
        if (r < 0)
                return r;
        st = s->stmts[STMT_CORRECT_READINGS];
        rc = sqlite3_bind_int64(st, 1, offset_ms);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 2, lo);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 3, hi);
        if (rc == SQLITE_OK)
                rc = store_stmt_run(st);
        n = sqlite3_changes64(s->db);
        /* ts changed: the time summary of these ids follows in the same transaction. */
        if (rc == SQLITE_OK && n > 0)
                rc = store_blocks_recompute(s, lo + 1, hi);
        st = s->stmts[STMT_BOOT_CORRECTED_UPTO];
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 1, s->boot_row);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 2, hi);
        if (rc == SQLITE_OK)
                rc = store_stmt_run(st);
        if (rc != SQLITE_OK)
                return store_fail_sqlite(s, rc, "correct readings in");
        r = store_commit_internal(s);
        if (r < 0)
                return r;
        s->boot_corrected_upto = hi;
        s->boot_waiting -= MIN((uint64_t) n, s->boot_waiting);
        if (n > 0)
                s->age_delete_from = MIN(s->age_delete_from, lo);
        *ret_corrected = (uint64_t) n;
        if (hi >= s->correct_end) {
                s->correct_end = 0;
                return 0;
        }
        return 1;
}

int store_clock_event(Store *s, const char *kind, int64_t at_ms, int64_t step_ms, int64_t readings, const char *detail) {
        sqlite3_stmt *st = NULL;
        int rc, r;

        assert(s && kind);

        r = store_check_writable(s);
        if (r < 0)
                return r;
        r = store_begin(s);
        if (r < 0)
                return r;
        rc = sqlite3_prepare_v2(s->db,
                                "INSERT INTO clock_events (at, boot, kind, step_ms, readings, detail, seq) "
                                "VALUES (?1, nullif(?2, 0), ?3, ?4, ?5, ?6, ?7)",
                                -1, &st, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 1, at_ms);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 2, s->boot_row);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_text(st, 3, kind, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
                rc = step_ms == 0 ? sqlite3_bind_null(st, 4) : sqlite3_bind_int64(st, 4, step_ms);
        if (rc == SQLITE_OK)
                rc = readings < 0 ? sqlite3_bind_null(st, 5) : sqlite3_bind_int64(st, 5, readings);
        if (rc == SQLITE_OK)
                rc = detail ? sqlite3_bind_text(st, 6, detail, -1, SQLITE_STATIC) : sqlite3_bind_null(st, 6);
        /* Where the event stands among the readings: every id up to this one came before it
         * (committed, or in this batch, which commits with it), every later one after. */
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 7, MAX(s->seq_max, s->seq_floor));
        if (rc == SQLITE_OK) {
                rc = sqlite3_step(st);
                if (rc == SQLITE_DONE)
                        rc = SQLITE_OK;
        }
        if (rc != SQLITE_OK) {
                r = store_fail_sqlite(s, rc, "write a clock event to");
                sqlite3_finalize(st);
                return r;
        }
        sqlite3_finalize(st);
        store_count_event(s, kind, NULL, NULL, detail);
        return store_batch_row(s);
}

/* ---- retention of the clock's records (docs/STORE.md, "Time you can trust") ---- */

/* Clock events one retention step decides at most (it reads one more), and boots it may remove. */
#define CLOCK_RETENTION_ROWS 64

typedef struct ClockEventRow {
        int64_t id;
        int64_t group;  /* its boot (0: none recorded), or -1: written before v7, no seq */
        int64_t seq;    /* the largest reading id when it was written (group -1: unknown) */
        int64_t cost;   /* its estimated bytes (EVENT_ROW_OVERHEAD) */
        bool drop;
} ClockEventRow;

/* Sets *ret_id to the first reading with id > after (INT64_MAX: none) and *ret_unsynced to
 * whether it was received unsynced and never corrected (age retention keeps it however old).
 * Returns an SQLite code. */
static int clock_first_reading_after(Store *s, int64_t after, int64_t *ret_id, bool *ret_unsynced) {
        sqlite3_stmt *st = s->stmts[STMT_READINGS_HEAD];
        int rc;

        *ret_id = INT64_MAX;
        *ret_unsynced = false;
        rc = sqlite3_bind_int64(st, 1, 1);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 2, after);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 3, INT64_MAX);
        if (rc == SQLITE_OK) {
                rc = sqlite3_step(st);
                if (rc == SQLITE_ROW) {
                        *ret_id = sqlite3_column_int64(st, 0);
                        *ret_unsynced = sqlite3_column_int(st, 2) != 0;
                        rc = SQLITE_OK;
                } else if (rc == SQLITE_DONE)
                        rc = SQLITE_OK;
        }
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        return rc;
}

/* Runs sql, which takes one integer (arg) or none, and changes rows or returns one integer
 * (NULL: *ret is left alone). Returns an SQLite code. */
static int clock_exec(Store *s, const char *sql, int64_t arg, int64_t *ret) {
        sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
        if (rc == SQLITE_OK && sqlite3_bind_parameter_count(st) > 0)
                rc = sqlite3_bind_int64(st, 1, arg);
        if (rc == SQLITE_OK) {
                rc = sqlite3_step(st);
                if (rc == SQLITE_ROW && ret && sqlite3_column_type(st, 0) != SQLITE_NULL)
                        *ret = sqlite3_column_int64(st, 0);
                if (rc == SQLITE_ROW || rc == SQLITE_DONE)
                        rc = SQLITE_OK;
        }
        sqlite3_finalize(st);
        return rc;
}

/* Removes the boots row `boot`, which no clock event refers to, unless it is this boot's or a
 * reading it received unsynced may be left: none from its first_unsynced up to `until` (where
 * a later boot's records begin, so every reading of this boot has a smaller id; negative: not
 * known). A reading
 * received while the clock was trusted does not need its boot. Adds 1 to *ret_boots when it
 * went. Returns an SQLite code. */
static int clock_drop_boot(Store *s, int64_t boot, int64_t until, uint64_t *ret_boots) {
        int64_t first = 0, kept = INT64_MAX;
        bool unsynced;
        int rc;

        if (boot <= 0 || boot == s->boot_row)
                return SQLITE_OK;
        /* Not known (a row without seq, written around the daemon): any later reading. */
        if (until < 0)
                until = INT64_MAX;
        rc = clock_exec(s, "SELECT first_unsynced FROM boots WHERE id = ?1", boot, &first);
        if (rc == SQLITE_OK && first > 0)
                rc = clock_first_reading_after(s, first - 1, &kept, &unsynced);
        if (rc != SQLITE_OK || kept <= until)
                return rc;
        rc = clock_exec(s, "DELETE FROM boots WHERE id = ?1", boot, NULL);
        if (rc == SQLITE_OK)
                *ret_boots += (uint64_t) sqlite3_changes64(s->db);
        return rc;
}

/* The rule (docs/STORE.md): a clock event explains the readings of its boot stored before the
 * next event (any boot's) was written: the state the clock was in when they came, and, for
 * "trusted", "step" and "corrected", what happened to those of its boot before it. So an event
 * goes once no reading is left with an id in (where its boot's remaining events begin, where
 * the next event stands], and retention has cut up to that point (so the readings before it are
 * gone too, but for those age retention keeps however old): by ids, never by its time, which
 * may come from a wrong clock. Events are walked oldest first, one boot's at a time (one
 * look-up of a reading per boot); the newest event stays (it tells the clock's state now). A boot whose events are kept by a reading that
 * age retention keeps however old (received unsynced, never corrected: a boot that ended before
 * its clock was trusted) does not hold back the boots after it. */
int store_clock_retention_step(Store *s, uint64_t *ret_events, uint64_t *ret_boots, bool *ret_more) {
        ClockEventRow rows[CLOCK_RETENTION_ROWS + 1];
        sqlite3_stmt *st = NULL;
        bool keeps_unsynced = s->config->retention_days > 0, stopped = false;
        int64_t freed = 0, oldest_boot = 0, oldest_seq = -1;
        size_t n = 0, decided, i = 0;
        int rc;

        rc = sqlite3_prepare_v2(s->db,
                                "SELECT id, CASE WHEN seq IS NULL THEN -1 ELSE coalesce(boot, 0) END, coalesce(seq, -1), "
                                CLOCK_EVENT_COST_SQL " FROM clock_events WHERE id > ?1 ORDER BY id LIMIT ?2",
                                -1, &st, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 1, s->clock_walk_from);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 2, CLOCK_RETENTION_ROWS + 1);
        while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                rows[n++] = (ClockEventRow) {
                        .id = sqlite3_column_int64(st, 0),
                        .group = sqlite3_column_int64(st, 1),
                        .seq = sqlite3_column_int64(st, 2),
                        .cost = sqlite3_column_int64(st, 3),
                };
                rc = SQLITE_OK;
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
                return rc;

        /* The last row read is only the next one of the row before it: the newest event, or
         * the first of the next walk. */
        decided = n > 0 ? n - 1 : 0;
        /* Rows of a group the walk before found kept, continued. */
        if (s->clock_walk_skipping)
                while (i < decided && rows[i].group == s->clock_walk_skip)
                        i++;
        s->clock_walk_skipping = false;

        while (i < decided && !stopped) {
                int64_t group = rows[i].group, kept;
                size_t j;
                bool unsynced, front = false;

                /* Rows from before v7 explain readings stored before the first row that has a
                 * seq, from the first on. */
                rc = clock_first_reading_after(s, group < 0 ? 0 : rows[i].seq, &kept, &unsynced);
                if (rc != SQLITE_OK)
                        return rc;
                for (j = i; j < decided && rows[j].group == group; j++) {
                        int64_t next = INT64_MAX;

                        for (size_t k = j + 1; k < n; k++)
                                if (rows[k].group >= 0) {
                                        next = rows[k].seq;
                                        break;
                                }
                        if (next >= kept)
                                break;
                        /* Retention has not come up to it (the high-water mark is the
                         * largest id a retention step cut up to): the readings stored before
                         * it are still there, even when none was stored after it. */
                        if (next > s->seq_floor) {
                                front = true;
                                break;
                        }
                        rows[j].drop = true;
                }
                if (j < decided && rows[j].group == group) {
                        /* A reading of the boot's stretch is left. If age retention removes it
                         * in its turn, every later boot's reading is left too: the walk ends
                         * here. If it keeps it however old, this boot's events stay and the
                         * walk goes on with the next boot's. */
                        if (front || !keeps_unsynced || !unsynced) {
                                stopped = true;
                                break;
                        }
                        while (j < decided && rows[j].group == group)
                                j++;
                        if (rows[j].group == group) {
                                s->clock_walk_skipping = true;
                                s->clock_walk_skip = group;
                        }
                } else if (rows[j].group != group && group > 0) {
                        /* Every event of this boot went: so may its row. */
                        rc = clock_drop_boot(s, group, rows[j].seq, ret_boots);
                        if (rc != SQLITE_OK)
                                return rc;
                }
                i = j;
        }

        for (size_t k = 0; k < decided; k++) {
                if (!rows[k].drop)
                        continue;
                rc = clock_exec(s, "DELETE FROM clock_events WHERE id = ?1", rows[k].id, NULL);
                if (rc != SQLITE_OK)
                        return rc;
                *ret_events += (uint64_t) sqlite3_changes64(s->db);
                freed += rows[k].cost;
        }
        if (s->event_bytes_known)
                s->event_bytes = MAX(s->event_bytes - freed, (int64_t) 0);

        /* A full walk that did not end at a kept reading goes on from here in the next step
         * (soon if this one removed something; a walk over boots that all stay, such as those
         * of a gateway whose clock is never trusted, waits for the usual interval); otherwise
         * the next one starts at the oldest event again. */
        if (!stopped && n == CLOCK_RETENTION_ROWS + 1) {
                s->clock_walk_from = rows[decided - 1].id;
                *ret_more = *ret_more || freed > 0;
        } else {
                s->clock_walk_from = 0;
                s->clock_walk_skipping = false;
        }

        /* Boots older than the oldest event's boot that no event refers to (their events went
         * by size, or they never had one: the daemon stopped before its first commit). Every
         * reading of theirs has an id below the oldest event's seq. */
        rc = clock_exec(s, "SELECT boot FROM clock_events ORDER BY id LIMIT 1", 0, &oldest_boot);
        if (rc == SQLITE_OK)
                rc = clock_exec(s, "SELECT seq FROM clock_events ORDER BY id LIMIT 1", 0, &oldest_seq);
        if (rc == SQLITE_OK && oldest_boot > 1) {
                int64_t boots[CLOCK_RETENTION_ROWS];
                size_t nb = 0;

                rc = sqlite3_prepare_v2(s->db, "SELECT id FROM boots WHERE id < ?1 ORDER BY id LIMIT ?2", -1, &st, NULL);
                if (rc == SQLITE_OK)
                        rc = sqlite3_bind_int64(st, 1, oldest_boot);
                if (rc == SQLITE_OK)
                        rc = sqlite3_bind_int64(st, 2, CLOCK_RETENTION_ROWS);
                while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                        boots[nb++] = sqlite3_column_int64(st, 0);
                        rc = SQLITE_OK;
                }
                sqlite3_finalize(st);
                if (rc != SQLITE_DONE)
                        return rc;
                rc = SQLITE_OK;
                /* Before v7 where the oldest event stands is not known (-1): any later reading. */
                for (size_t k = 0; rc == SQLITE_OK && k < nb; k++)
                        rc = clock_drop_boot(s, boots[k], oldest_seq, ret_boots);
        }
        return rc;
}
