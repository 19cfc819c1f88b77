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
