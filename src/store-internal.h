/* SPDX-License-Identifier: MIT */
/* What the store's writer (store.c) and its read-only side (store-reader.c) share; defined in store.c. */
#pragma once

#include <sqlite3.h>
#include <stdint.h>

/* Turns an SQLite result code into -errno (0 for SQLITE_OK, _ROW and _DONE), preferring the OS
 * error behind it where SQLite kept one. db may be NULL. */
int store_sqlite_errno(sqlite3 *db, int rc);

/* Opens path with flags (SQLITE_OPEN_*) and extended result codes, and sets the busy timeout.
 * *ret_db is set also on failure when SQLite gave a handle (its error message says why; the
 * caller closes it either way). Returns an SQLite code. */
int store_sqlite_open(const char *path, int flags, sqlite3 **ret_db);

/* What is in the file: ours (any version), empty, or something else. */
typedef struct StoreIdentity {
        int64_t application_id;
        int64_t user_version;
        int64_t tables;
} StoreIdentity;

/* Reads the identity of db's main file (the first read: it finds a file that is not SQLite at
 * all). Returns an SQLite code; *ret is zeroed first. */
int store_identify(sqlite3 *db, StoreIdentity *ret);
