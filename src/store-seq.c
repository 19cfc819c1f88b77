/* SPDX-License-Identifier: MIT */
/* Sequence numbers of the store's readings and the hooks and reads that upstream forwarding uses. */
#include <assert.h>
#include <sqlite3.h>

#include "collector/macro.h"
#include "collector/store.h"
#include "store-internal.h"

/* ---- sequence numbers and hooks for upstream forwarding ---- */

/* The committed maximum and the high-water mark, once at open. */
int store_load_seq(Store *s) {
        int64_t hw = 0;
        int rc;

        rc = store_stmt_int(s->stmts[STMT_READINGS_MAX_ID], &s->seq_max);
        if (rc == SQLITE_OK) {
                rc = store_exec_int(s->db, "SELECT coalesce((SELECT value FROM meta WHERE key = 'readings_high_water'), 0)", &hw);
                if (rc == SQLITE_NOTFOUND)
                        rc = SQLITE_OK;
        }
        if (rc != SQLITE_OK)
                return store_fail_sqlite(s, rc, "read the sequence numbers of");
        s->seq_committed = s->seq_max;
        s->seq_floor = hw;
        return 0;
}

/* Inside the retention transaction, before the readings with id <= upto go (by age, with
 * keeps_unsynced: those after age_delete_from that are not unsynced and uncorrected; by size:
 * all of them): raises the high-water mark (in the same transaction, so it commits with the
 * deletion) and tells the retention hook. Returns an SQLite code. */
int store_before_delete_readings(Store *s, int64_t upto, bool keeps_unsynced) {
        sqlite3_stmt *st = s->stmts[STMT_SET_META];
        int rc;

        if (upto <= 0)
                return SQLITE_OK;
        if (upto > s->seq_floor) {
                rc = sqlite3_bind_text(st, 1, "readings_high_water", -1, SQLITE_STATIC);
                if (rc == SQLITE_OK)
                        rc = sqlite3_bind_int64(st, 2, upto);
                if (rc == SQLITE_OK)
                        rc = store_stmt_run(st);
                if (rc != SQLITE_OK)
                        return rc;
                s->seq_floor = upto;
        }
        if (s->retention_hook) {
                /* The hook asks store_retention_scan() which rows go: the same rule as the
                 * delete statements (STMT_DELETE_READINGS_AGED, STMT_DELETE_READINGS). */
                s->deleting.active = true;
                s->deleting.keeps_unsynced = keeps_unsynced;
                s->deleting.after = keeps_unsynced ? s->age_delete_from : 0;
                s->deleting.upto = upto;
                s->retention_hook(s, upto, s->hook_userdata);
                s->deleting.active = false;
        }
        /* A read in the hook that failed has failed the store (and rolled back): stop here. */
        return s->failed ? SQLITE_ABORT : SQLITE_OK;
}

void store_set_hooks(Store *s, store_commit_hook_t commit, store_retention_hook_t retention, void *userdata) {
        assert(s);
        s->commit_hook = commit;
        s->retention_hook = retention;
        s->hook_userdata = userdata;
}

void store_set_precommit_hook(Store *s, store_precommit_hook_t hook, void *userdata) {
        assert(s);
        s->precommit_hook = hook;
        s->precommit_userdata = userdata;
}

bool store_batch_open(const Store *s) {
        assert(s);
        return s->in_transaction && !s->failed;
}

int64_t store_committed_seq(const Store *s) {
        assert(s);
        return s->seq_committed;
}

/* The name of a row's id in column of st, from the store's cache of kind. Returns an SQLite code. */
static int seq_name(Store *s, NameKind kind, sqlite3_stmt *st, int column, const char **ret) {
        static const char *const sql[_NAME_KIND_MAX] = {
                [NAME_SENSOR] = "SELECT name FROM sensors WHERE id = ?1",
                [NAME_METRIC] = "SELECT name FROM metrics WHERE id = ?1",
                [NAME_ORIGIN] = "SELECT name FROM origins WHERE id = ?1",
        };

        return store_id_name(&s->seq_names[kind], s->db, sql[kind], sqlite3_column_int64(st, column), ret);
}

int store_read_seq(Store *s, int64_t after, int64_t before, unsigned limit,
                   int (*cb)(const StoredReading *row, void *userdata), void *userdata) {
        static const char *const sources[] = { "serial", "mqtt" };
        sqlite3_stmt *st;
        int rc, r = 0, n = 0;

        assert(s && cb);

        r = store_check_writable(s);
        if (r < 0)
                return r;
        /* Only committed rows: the open batch may still roll back, and its ids with it. */
        before = MIN(before, s->seq_committed + 1);
        if (after + 1 >= before || limit == 0)
                return 0;
        /* The row's name ids, each looked up in a small cache (the three joins per row this
         * replaces were a fifth of forwarding's instructions per reading, docs/BENCHMARKS.md). */
        st = s->stmts[STMT_SEQ_READ];
        rc = sqlite3_bind_int64(st, 1, after);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 2, before);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 3, limit);
        while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                int64_t source = sqlite3_column_int64(st, 7);
                StoredReading row = {
                        .id = sqlite3_column_int64(st, 0),
                        .value = sqlite3_column_double(st, 3),
                        .ts_ms = sqlite3_column_int64(st, 4),
                        .sensor_ts = sqlite3_column_int(st, 5) != 0,
                        .received_ms = sqlite3_column_int64(st, 6),
                        .source = source >= 0 && source < (int64_t) ELEMENTSOF(sources) ? sources[source] : "unknown",
                        .flags = (unsigned) sqlite3_column_int(st, 9),
                };

                rc = seq_name(s, NAME_SENSOR, st, 1, &row.sensor);
                if (rc == SQLITE_OK)
                        rc = seq_name(s, NAME_METRIC, st, 2, &row.metric);
                if (rc == SQLITE_OK)
                        rc = seq_name(s, NAME_ORIGIN, st, 8, &row.origin);
                if (rc != SQLITE_OK)
                        break;
                n++;
                r = cb(&row, userdata);
                if (r < 0)
                        break;
        }
        if (r >= 0 && rc != SQLITE_DONE && rc != SQLITE_OK) {
                r = store_fail_sqlite(s, rc, "read readings to forward from");
                return r;
        }
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        return r < 0 ? r : n;
}

int store_count_seq(Store *s, int64_t lo, int64_t hi, uint64_t *ret) {
        sqlite3_stmt *st;
        int64_t n = 0;
        int rc, r;

        assert(s && ret);

        r = store_check_writable(s);
        if (r < 0)
                return r;
        st = s->stmts[STMT_SEQ_COUNT];
        rc = sqlite3_bind_int64(st, 1, lo);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 2, hi);
        if (rc == SQLITE_OK)
                rc = store_stmt_int(st, &n);
        if (rc != SQLITE_OK)
                return store_fail_sqlite(s, rc, "count readings in");
        sqlite3_clear_bindings(st);
        *ret = (uint64_t) n;
        return 0;
}

/* One integer from sql with three bound integers; *ret untouched when it returns no row or NULL.
 * Returns an SQLite code. */
static int seq_query_int(Store *s, const char *sql, int64_t a, int64_t b, int64_t c, int64_t *ret) {
        sqlite3_stmt *st = NULL;
        int rc;

        /* Prepared per call: the hook runs once per retention step and gap in the done set. */
        rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 1, a);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 2, b);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int64(st, 3, c);
        if (rc == SQLITE_OK) {
                rc = sqlite3_step(st);
                if (rc == SQLITE_ROW) {
                        if (sqlite3_column_type(st, 0) != SQLITE_NULL)
                                *ret = sqlite3_column_int64(st, 0);
                        rc = SQLITE_OK;
                } else if (rc == SQLITE_DONE)
                        rc = SQLITE_OK;
        }
        sqlite3_finalize(st);
        return rc;
}

/* The rows a retention delete in progress removes: after `after`, up to `upto`, and, when it
 * keeps them, not the unsynced uncorrected ones (?3: keeps_unsynced). The delete statements'
 * rule, for the two functions below. */
#define DELETING_REMOVES_SQL "(?3 = 0 OR flags & 3 != 1)"

/* 0 when a retention delete is in progress and the store can be written, else a -errno. */
static int deleting_check(Store *s) {
        if (!s->deleting.active)
                return -EINVAL;
        return store_check_writable(s);
}

int store_retention_scan(Store *s, int64_t lo, int64_t hi, uint64_t *ret_removed, int64_t *ret_first_kept) {
        int64_t removed = 0, kept = 0;
        int rc, r;

        assert(s && ret_removed && ret_first_kept);

        r = deleting_check(s);
        if (r < 0)
                return r;
        hi = MIN(hi, s->deleting.upto);
        rc = SQLITE_OK;
        if (MAX(lo, s->deleting.after + 1) <= hi)
                rc = seq_query_int(s,
                                   "SELECT count(*) FROM readings WHERE id >= ?1 AND id <= ?2 AND " DELETING_REMOVES_SQL,
                                   MAX(lo, s->deleting.after + 1), hi, s->deleting.keeps_unsynced, &removed);
        /* What stays: every row at or before `after` (an earlier age step kept it), and the
         * unsynced, uncorrected rows after it. In id order, so the rows before `after` (all kept)
         * end the scan at once. */
        if (rc == SQLITE_OK && s->deleting.keeps_unsynced && lo <= hi)
                rc = seq_query_int(s,
                                   "SELECT id FROM readings WHERE id >= ?1 AND id <= ?2 AND (id <= ?3 OR flags & 3 = 1) "
                                   "ORDER BY id LIMIT 1",
                                   lo, hi, s->deleting.after, &kept);
        if (rc != SQLITE_OK)
                return store_fail_sqlite(s, rc, "count the readings retention removes from");
        *ret_removed = (uint64_t) removed;
        *ret_first_kept = kept;
        return 0;
}

int store_retention_next_removed(Store *s, int64_t lo, int64_t hi, int64_t *ret) {
        int64_t removed = 0;
        int rc, r;

        assert(s && ret);

        r = deleting_check(s);
        if (r < 0)
                return r;
        lo = MAX(lo, s->deleting.after + 1);
        hi = MIN(hi, s->deleting.upto);
        rc = SQLITE_OK;
        if (lo <= hi)
                rc = seq_query_int(s,
                                   "SELECT id FROM readings WHERE id >= ?1 AND id <= ?2 AND " DELETING_REMOVES_SQL
                                   " ORDER BY id LIMIT 1",
                                   lo, hi, s->deleting.keeps_unsynced, &removed);
        if (rc != SQLITE_OK)
                return store_fail_sqlite(s, rc, "find the readings retention removes from");
        *ret = removed;
        return 0;
}

int store_set_meta_batched(Store *s, const char *key, const void *value, size_t size) {
        sqlite3_stmt *st;
        int rc, r;

        assert(s && key && value);

        r = store_check_writable(s);
        if (r < 0)
                return r;
        if (size > INT32_MAX)
                return -EMSGSIZE;
        r = store_begin(s);
        if (r < 0)
                return r;
        st = s->stmts[STMT_SET_META];
        rc = sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_blob(st, 2, size > 0 ? value : "", (int) size, SQLITE_STATIC);
        if (rc == SQLITE_OK)
                rc = store_stmt_run(st);
        if (rc != SQLITE_OK)
                return store_fail_sqlite(s, rc, "write to");
        return 0;
}
