/* SPDX-License-Identifier: MIT */
/* Values that other modules keep in the store's meta table. */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>

#include "collector/store.h"
#include "store-internal.h"

/* ---- values of other modules in the meta table ---- */

int store_get_meta(Store *s, const char *key, void **ret_value, size_t *ret_size) {
        sqlite3_stmt *st = NULL;
        char *copy = NULL;
        size_t size = 0;
        int rc, r;

        assert(s && key && ret_value && ret_size);

        r = store_check_writable(s);
        if (r < 0)
                return r;
        rc = sqlite3_prepare_v2(s->db, "SELECT value FROM meta WHERE key = ?1", -1, &st, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
                rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                const void *v = sqlite3_column_blob(st, 0);

                size = (size_t) sqlite3_column_bytes(st, 0);
                copy = malloc(size + 1);
                if (!copy) {
                        sqlite3_finalize(st);
                        return -ENOMEM;
                }
                if (size > 0)
                        memcpy(copy, v, size);
                copy[size] = 0;
        } else if (rc != SQLITE_DONE) {
                r = store_sqlite_errno(s->db, rc) ?: -EIO;
                sqlite3_finalize(st);
                return r;
        }
        sqlite3_finalize(st);
        *ret_value = copy;
        *ret_size = size;
        return copy ? 1 : 0;
}

int store_set_meta(Store *s, const char *key, const void *value, size_t size) {
        sqlite3_stmt *st = NULL;
        int rc, r;

        assert(s && key && (value || size == 0));

        r = store_check_writable(s);
        if (r < 0)
                return r;
        if (size > INT32_MAX)
                return -EMSGSIZE;
        r = store_begin(s);
        if (r < 0)
                return r;
        rc = sqlite3_prepare_v2(s->db,
                                value ? "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)"
                                      : "DELETE FROM meta WHERE key = ?1",
                                -1, &st, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK && value)
                rc = sqlite3_bind_blob(st, 2, size > 0 ? value : "", (int) size, SQLITE_STATIC);
        if (rc == SQLITE_OK) {
                rc = sqlite3_step(st);
                if (rc == SQLITE_DONE)
                        rc = SQLITE_OK;
        }
        if (rc != SQLITE_OK) {
                /* store_fail_sqlite() reads SQLite's message; the statement goes after. */
                r = store_fail_sqlite(s, rc, "write to");
                sqlite3_finalize(st);
                return r;
        }
        sqlite3_finalize(st);
        return store_commit_internal(s);
}
