/* SPDX-License-Identifier: MIT */
/* The time summary of readings: per block of ids, the range of their ts (readings_blocks). */
#include <assert.h>
#include <sqlite3.h>

#include "collector/log.h"
#include "store-internal.h"

/* Why a summary and not an index on ts: docs/STORE.md ("Time without an index"). Each block
 * holds the ids [block << STORE_BLOCK_SHIFT, (block + 1) << STORE_BLOCK_SHIFT); its row says
 * that every reading in it has min_ts <= ts <= max_ts. The bounds may be wider than the rows
 * still there (retention removed some), never narrower: a time query reads the blocks whose
 * range meets its own and filters by ts. */

void store_blocks_reset(Store *s) {
        s->block_pending = -1;
        s->block_min_ts = s->block_max_ts = 0;
}

int store_blocks_flush(Store *s) {
        sqlite3_stmt *st = s->stmts[STMT_BLOCK_UPSERT];
        int rc;

        if (s->block_pending < 0)
                return SQLITE_OK;
        rc = sqlite3_bind_int64(st, 1, s->block_pending);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 2, s->block_min_ts);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 3, s->block_max_ts);
        if (rc == SQLITE_OK)
                rc = store_stmt_run(st);
        if (rc == SQLITE_OK)
                store_blocks_reset(s);
        return rc;
}

int store_blocks_note(Store *s, int64_t id, int64_t ts_ms) {
        int64_t block = id >> STORE_BLOCK_SHIFT;
        int rc;

        assert(id > 0);

        /* Ids grow within a batch, so a batch's rows fill one block after the other: one
         * upsert per block and batch, not per reading. */
        if (block != s->block_pending) {
                rc = store_blocks_flush(s);
                if (rc != SQLITE_OK)
                        return rc;
                s->block_pending = block;
                s->block_min_ts = s->block_max_ts = ts_ms;
                return SQLITE_OK;
        }
        s->block_min_ts = MIN(s->block_min_ts, ts_ms);
        s->block_max_ts = MAX(s->block_max_ts, ts_ms);
        return SQLITE_OK;
}

int store_blocks_recompute(Store *s, int64_t lo, int64_t hi) {
        sqlite3_stmt *st;
        int rc;

        /* The open batch's block may be among them: written first, then recomputed. */
        rc = store_blocks_flush(s);
        for (int i = 0; rc == SQLITE_OK && i < 2; i++) {
                st = s->stmts[i == 0 ? STMT_BLOCKS_CLEAR : STMT_BLOCKS_RECOMPUTE];
                rc = sqlite3_bind_int64(st, 1, lo >> STORE_BLOCK_SHIFT);
                if (rc == SQLITE_OK)
                        rc = sqlite3_bind_int64(st, 2, hi >> STORE_BLOCK_SHIFT);
                if (rc == SQLITE_OK)
                        rc = store_stmt_run(st);
        }
        return rc;
}

int store_blocks_prune(Store *s, int64_t upto) {
        sqlite3_stmt *st = s->stmts[STMT_BLOCKS_PRUNE];
        int rc;

        rc = store_blocks_flush(s);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 1, upto >> STORE_BLOCK_SHIFT);
        if (rc == SQLITE_OK)
                rc = store_stmt_run(st);
        return rc;
}

int store_blocks_extreme(Store *s, bool newest, int64_t *ret) {
        sqlite3_stmt *order = NULL, *rows = NULL;
        int64_t best = 0;
        bool found = false;
        int rc;

        /* Blocks by their bound, best first (an index each); a block's bound may be looser than
         * its rows (retention removed some), so its rows decide, and the walk stops at the
         * first block whose bound cannot beat what was found: nearly always after one. */
        rc = store_blocks_flush(s);
        if (rc == SQLITE_OK)
                rc = sqlite3_prepare_v2(s->db,
                                        newest ? "SELECT block, max_ts FROM readings_blocks ORDER BY max_ts DESC"
                                               : "SELECT block, min_ts FROM readings_blocks ORDER BY min_ts",
                                        -1, &order, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_prepare_v2(s->db,
                                        newest ? "SELECT max(ts) FROM readings WHERE id >= ?1 << " STORE_BLOCK_SQL
                                                 " AND id < (?1 + 1) << " STORE_BLOCK_SQL
                                               : "SELECT min(ts) FROM readings WHERE id >= ?1 << " STORE_BLOCK_SQL
                                                 " AND id < (?1 + 1) << " STORE_BLOCK_SQL,
                                        -1, &rows, NULL);
        while (rc == SQLITE_OK && (rc = sqlite3_step(order)) == SQLITE_ROW) {
                int64_t bound = sqlite3_column_int64(order, 1);

                rc = SQLITE_OK;
                if (found && (newest ? bound <= best : bound >= best))
                        break;
                rc = sqlite3_bind_int64(rows, 1, sqlite3_column_int64(order, 0));
                if (rc == SQLITE_OK && (rc = sqlite3_step(rows)) == SQLITE_ROW) {
                        if (sqlite3_column_type(rows, 0) != SQLITE_NULL) {
                                int64_t v = sqlite3_column_int64(rows, 0);

                                if (!found || (newest ? v > best : v < best))
                                        best = v;
                                found = true;
                        }
                        rc = SQLITE_OK;
                }
                if (rc == SQLITE_OK)
                        rc = sqlite3_reset(rows);
        }
        sqlite3_finalize(order);
        sqlite3_finalize(rows);
        if (rc != SQLITE_OK && rc != SQLITE_DONE)
                return rc;
        if (!found)
                return SQLITE_NOTFOUND;
        *ret = best;
        return SQLITE_OK;
}
