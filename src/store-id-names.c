/* SPDX-License-Identifier: MIT */
/* Names by id: a small cache for walks that read a reading's name ids instead of joining the name tables per row. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>

#include "collector/macro.h"
#include "store-internal.h"

void store_id_name_cache_clear(IdNameCache *c) {
        for (size_t i = 0; i < ID_NAME_SLOTS; i++)
                c->slots[i].name = mfree(c->slots[i].name);
}

void store_id_name_cache_done(IdNameCache *c) {
        store_id_name_cache_clear(c);
        c->lookup = (sqlite3_finalize(c->lookup), NULL);
}

int store_id_name(IdNameCache *c, sqlite3 *db, const char *sql, int64_t id, const char **ret) {
        size_t slot = (size_t) ((uint64_t) id % ID_NAME_SLOTS);
        char *name = NULL;
        int rc;

        assert(c && db && sql && ret);

        if (c->slots[slot].name && c->slots[slot].id == id) {
                *ret = c->slots[slot].name;
                return SQLITE_OK;
        }
        if (!c->lookup) {
                rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &c->lookup, NULL);
                if (rc != SQLITE_OK)
                        return rc;
        }
        rc = sqlite3_bind_int64(c->lookup, 1, id);
        if (rc == SQLITE_OK)
                rc = sqlite3_step(c->lookup);
        if (rc == SQLITE_ROW) {
                name = strdup(strempty((const char *) sqlite3_column_text(c->lookup, 0)));
                rc = name ? SQLITE_OK : SQLITE_NOMEM;
        } else if (rc == SQLITE_DONE) {
                name = strdup("");
                rc = name ? SQLITE_OK : SQLITE_NOMEM;
        }
        sqlite3_reset(c->lookup);
        if (rc != SQLITE_OK)
                return rc;
        free(c->slots[slot].name);
        c->slots[slot].id = id;
        c->slots[slot].name = name;
        *ret = name;
        return SQLITE_OK;
}
