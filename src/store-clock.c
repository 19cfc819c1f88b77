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
                                "INSERT INTO clock_events (at, boot, kind, step_ms, readings, detail) "
                                "VALUES (?1, nullif(?2, 0), ?3, ?4, ?5, ?6)",
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
