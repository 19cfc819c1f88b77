/* SPDX-License-Identifier: MIT */
/* What the parts of the store (store*.c, store-reader.c) share: the Store, its statements, helpers between them. */
#pragma once

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "collector/macro.h"
#include "collector/retention-pace.h"
#include "collector/store.h"
#include "collector/time-util.h"

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

/* Retention: one step every RETENTION_INTERVAL, or every RETENTION_BUSY_INTERVAL while a
 * backlog remains; readings and rejects by age, and readings by size, as many per step as
 * retention-pace.h allows, the rest (rejects over their share or with the readings removed by
 * size, events, names) at most RETENTION_STEP_ROWS rows per table per step (a few ms of work on
 * a small store). */
#define RETENTION_FIRST_USEC (1 * USEC_PER_SEC)
#define RETENTION_INTERVAL_USEC (10 * USEC_PER_SEC)
#define RETENTION_BUSY_INTERVAL_USEC (50 * USEC_PER_MSEC)
#define RETENTION_STEP_ROWS 2000
#define MSEC_PER_DAY ((int64_t) 24 * 60 * 60 * 1000)
/* Rejects are noise from the network: with max_size_mb set they get at most this share of it
 * (1/REJECTS_SHARE_DIVISOR), oldest first, so a burst of garbage never pushes out readings.
 * Their size is estimated as the raw bytes plus REJECT_ROW_OVERHEAD per row (the id, receipt
 * time, source, origin id, reason and the b-tree cell around them). */
#define REJECTS_SHARE_DIVISOR 10
#define REJECT_ROW_OVERHEAD 40
/* Events (the events table and clock_events) get at most 1/EVENTS_SHARE_DIVISOR of max_size_mb,
 * the oldest going first, so a sensor or a link that flaps for years never fills the store with
 * them. An event's size is estimated as its text (the sensor twice: the table and its index)
 * plus EVENT_ROW_OVERHEAD (the id, the times and counts, the cells in the table and the indexes). */
#define EVENTS_SHARE_DIVISOR 20
#define EVENT_ROW_OVERHEAD 64
/* Size retention never removes the newest readings: at least SIZE_FLOOR_MIN_ROWS, and as many
 * as a quarter of the limit holds at 128 bytes a row (a reading takes about 77). */
#define SIZE_FLOOR_MIN_ROWS 1000
#define SIZE_FLOOR_ROWS(limit) MAX((int64_t) SIZE_FLOOR_MIN_ROWS, (limit) / 4 / 128)
/* Unused names (sensors, metrics, origins no row refers to) are found by a mark-and-sweep pass
 * in bounded steps: at most once an hour after rows were removed, or back to back while the
 * store is over max_size_mb and names take more than 1/NAMES_SHARE_DIVISOR of it. A name costs
 * its bytes twice (the table and its unique index) plus NAME_ROW_OVERHEAD, and a whole overflow
 * page when it is too long to fit an index cell (about 1 000 bytes with 4 KiB pages). */
#define PRUNE_INTERVAL_USEC (3600 * USEC_PER_SEC)
#define NAMES_SHARE_DIVISOR 8
#define NAME_ROW_OVERHEAD 24
/* store.max_names: a frame that would add a name to a full table is a reject (ingest asks
 * store_names_fit() first); a reject whose origin would be new gets this origin instead, one
 * name past the cap. Full tables are logged at most every OVER_LIMIT_LOG_INTERVAL_USEC each, and
 * a full table asks for a pass over the names (they count while rows use them) at once the
 * first time, then at most every NAMES_FULL_PRUNE_USEC while retention removes rows. */
#define NAMES_FULL_ORIGIN "(too many names)"
#define NAMES_FULL_PRUNE_USEC (600 * USEC_PER_SEC)
/* "Over the size limit and nothing more can go" is logged at most this often. */
#define OVER_LIMIT_LOG_INTERVAL_USEC (600 * USEC_PER_SEC)
/* readings_blocks: the time summary of readings, one row per 2^STORE_BLOCK_SHIFT ids
 * (store-blocks.c, docs/STORE.md). The SQL spells the same number as STORE_BLOCK_SQL. */
#define STORE_BLOCK_SHIFT 10
#define STORE_BLOCK_SQL "10"
/* Interned names cached in memory; bounded, cleared when full (names come from the network). */
#define NAME_CACHE_SLOTS 1024
#define NAME_CACHE_MAX (NAME_CACHE_SLOTS / 2)

typedef enum Stmt {
        STMT_BEGIN,
        STMT_COMMIT,
        STMT_INSERT_READING,
        STMT_INSERT_REJECT,
        STMT_FIND_SENSOR,
        STMT_FIND_METRIC,
        STMT_FIND_ORIGIN,
        STMT_ADD_SENSOR,
        STMT_ADD_METRIC,
        STMT_ADD_ORIGIN,
        STMT_READINGS_HEAD,     /* id, received of the oldest N readings after an id */
        STMT_REJECTS_HEAD,
        STMT_DELETE_READINGS,   /* id <= ? */
        STMT_DELETE_REJECTS,
        STMT_PAGE_COUNT,
        STMT_FREELIST_COUNT,
        STMT_REJECTS_SIZES,     /* id, length(raw) of the oldest N rejects */
        STMT_REJECTS_BYTES_UPTO, /* count, raw bytes of the rejects with id <= ? */
        STMT_READINGS_MAX_ID,
        STMT_WALK_READINGS,     /* name ids of readings in an id range, for the prune pass */
        STMT_WALK_REJECTS,
        STMT_SCAN_SENSORS,      /* id, length(name) of names in an id range */
        STMT_SCAN_METRICS,
        STMT_SCAN_ORIGINS,
        STMT_DROP_SENSOR,
        STMT_DROP_METRIC,
        STMT_DROP_ORIGIN,
        STMT_DELETE_READINGS_AGED, /* id <= ?, but not the unsynced ones */
        STMT_BOOT_FIRST_UNSYNCED,
        STMT_CORRECT_READINGS,
        STMT_BOOT_CORRECTED_UPTO,
        STMT_INSERT_EVENT,
        STMT_DELETE_EVENTS,     /* the oldest N received before a time */
        STMT_SEQ_READ,          /* readings with their names in an id range, for upstream */
        STMT_SEQ_COUNT,
        STMT_SET_META,
        STMT_BLOCK_UPSERT,      /* widen a block's ts range */
        STMT_BLOCKS_CLEAR,      /* blocks in a range, before they are recomputed */
        STMT_BLOCKS_RECOMPUTE,  /* the ts range of the blocks in a range, from their rows */
        STMT_BLOCKS_PRUNE,      /* blocks up to one whose rows are all gone */
        _STMT_MAX,
} Stmt;

typedef enum NameKind {
        NAME_SENSOR,
        NAME_METRIC,
        NAME_ORIGIN,
        _NAME_KIND_MAX,
} NameKind;

typedef struct NameSlot {
        char *name;
        int64_t id;
} NameSlot;

typedef struct NameCache {
        NameSlot slots[NAME_CACHE_SLOTS];
        size_t n;
} NameCache;

/* Names by id (store-id-names.c): the reverse of NameCache, for walks that read a row's name
 * ids and look each up here instead of joining the name tables per row (the query reader,
 * store_read_seq()). A store has few names and small ids, so a direct-mapped cache almost never
 * misses twice; a miss asks the table. Whoever deletes names or rolls back a transaction that
 * added some clears the caches of that table: SQLite may give a deleted name's id to a new one.
 * Zero-initialise. */
#define ID_NAME_SLOTS 256

typedef struct IdNameCache {
        sqlite3_stmt *lookup;         /* prepared at the first miss */
        struct {
                int64_t id;
                char *name;           /* NULL: the slot is empty */
        } slots[ID_NAME_SLOTS];
} IdNameCache;

/* A mark-and-sweep pass over the name tables. Names in use are marked by walking every row
 * that existed when the pass began and, from then on, by store_intern() for every row added;
 * then the names that existed when it began and are not marked are deleted. */
typedef struct NamePrune {
        bool active;
        bool dirty;                             /* rows were removed since the last pass began */
        bool wanted;                            /* a name table is at store.max_names */
        uint64_t last_end_usec;                 /* CLOCK_MONOTONIC; 0: none yet */
        int64_t walk_end[2], walk_pos[2];       /* readings, rejects */
        int64_t name_max[_NAME_KIND_MAX], sweep_pos[_NAME_KIND_MAX];
        uint8_t *marks[_NAME_KIND_MAX];         /* a bit per id up to name_max */
} NamePrune;

struct Store {
        sd_event *event;
        const StoreConfig *config;
        Task *task;

        sqlite3 *db;
        sqlite3_stmt *stmts[_STMT_MAX];
        int64_t page_size;

        sd_event_source *commit_timer;
        sd_event_source *retention_timer;
        sd_event_source *check_timer;
        /* The -wal and -shm files open in SQLite (device, inode), noted when first seen. */
        struct {
                bool known;
                dev_t dev;
                ino_t ino;
        } side_files[2];

        bool in_transaction;
        unsigned batch_rows;
        StoreStats batch;       /* rows of the open batch: they count into stats at commit */
        bool failed;
        bool closed;            /* stopped: no more writes */

        NameCache names[_NAME_KIND_MAX];
        IdNameCache seq_names[_NAME_KIND_MAX]; /* store_read_seq()'s names by id */
        StoreStats stats;
        int64_t last_commit_ms;  /* wall clock of the last commit, for `status`; 0: none */

        /* Retention totals of the sweep in progress, logged once when it ends. */
        uint64_t sweep_readings;
        uint64_t sweep_rejects;
        bool sweep_by_size;
        bool retention_backlog;  /* the last step hit its row limit: more is due */
        /* Rows per table of the next readings/rejects step, by the time earlier steps held the
         * write lock (retention-pace.h). */
        RetentionPace retention_pace;
        /* Free pages a step may give back to the file system, by the time earlier ones took. */
        RetentionPace vacuum_pace;
        /* Readings size retention removed since the last pass over the names began: while names
         * take much of the room, a pass follows a cut of RETENTION_STEP_ROWS (store-retention.c). */
        int64_t size_cut_rows;
        /* Age retention walks each table from here (readings, rejects): every row at or
         * before it that is still there was received "in the future" when walked. */
        int64_t age_walk_from[2];
        /* Estimated bytes of the committed rejects (see REJECT_ROW_OVERHEAD), counted once
         * when max_size_mb first needs it, then kept up to date; and those of the open batch. */
        bool reject_bytes_known;
        int64_t reject_bytes;
        int64_t batch_reject_bytes;
        /* The same for events and clock events (see EVENT_ROW_OVERHEAD): the committed and the
         * open batch's together (an event is rare, and a failed commit fails the store). */
        bool event_bytes_known;
        int64_t event_bytes;
        uint64_t sweep_events;
        /* The same for the name tables: estimated bytes and rows, committed and open. */
        bool names_known;
        int64_t names_bytes, names_count;
        int64_t batch_names_bytes, batch_names_count;
        NamePrune prune;
        uint64_t sweep_names;
        /* store.max_names: the names in each table (counted at open when there is a cap, kept
         * up to date), those the open batch added, how many frames and rejects a full table
         * turned away, and when each full table was last logged. */
        int64_t table_names[_NAME_KIND_MAX], batch_table_names[_NAME_KIND_MAX];
        uint64_t names_refused;
        uint64_t names_full_logged_usec[_NAME_KIND_MAX];
        /* Over max_size_mb with nothing more that size retention may remove: the used bytes
         * (0 when not), and when that was last logged. */
        int64_t over_limit_bytes;
        uint64_t over_limit_logged_usec;

        /* This boot (the clock's side, see store_clock_set_boot()): its row in boots (0: none
         * registered), the first reading it received unsynced (0: none yet), how far correction
         * has come, how many wait for it (and how many of the open batch will), and where the
         * correction under way ends (0: none under way). */
        int64_t boot_row;
        int64_t boot_first_unsynced;
        int64_t boot_corrected_upto;
        uint64_t boot_waiting;
        uint64_t batch_unsynced;
        int64_t correct_end;
        /* Every reading at or before this id that is still there is one age retention keeps
         * (received unsynced, not corrected): its next delete starts after it instead of
         * reading them all again. Lowered when correction changes rows before it. */
        int64_t age_delete_from;
        /* Retention of the clock's records (store_clock_retention_step()): where the next walk
         * of clock_events starts (0: the oldest), whether the rows at its start belong to a
         * group the walk before kept (and which: a boot, or -1 for rows from before v7), and
         * what the sweep in progress removed. */
        int64_t clock_walk_from, clock_walk_skip;
        bool clock_walk_skipping;
        uint64_t sweep_clock_events, sweep_boots;

        /* Sequence numbers (upstream forwarding): the largest id inserted (committed or in the
         * open batch), the largest committed, and the high-water mark below which no id may be
         * handed out again (retention removed up to it). */
        int64_t seq_max, seq_committed, seq_floor;
        /* The open batch's block of readings_blocks not written yet (-1: none) and the ts
         * range of its new rows (store-blocks.c). */
        int64_t block_pending, block_min_ts, block_max_ts;
        store_commit_hook_t commit_hook;
        store_retention_hook_t retention_hook;
        void *hook_userdata;
        store_precommit_hook_t precommit_hook;
        void *precommit_userdata;

        /* The write path's mechanics (store-checkpoint.c): the idle checkpoint, the WAL size at
         * which a commit checkpoints at once, and what was measured. */
        sd_event_source *checkpoint_source;
        int checkpoint_force_at;
        uint64_t batch_deadline_usec;   /* CLOCK_MONOTONIC: the open batch's window ends; 0: none */
        uint64_t checkpoint_failure_logged_usec; /* CLOCK_MONOTONIC; 0: never */
        StoreWriteStats write_stats;
        /* While the retention hook runs: what the deletion under way removes (see
         * store_retention_scan()). */
        struct {
                bool active;
                bool keeps_unsynced;  /* age retention: unsynced, uncorrected rows stay */
                int64_t after, upto;  /* it touches after < id <= upto */
        } deleting;
};

/* Core helpers: failure, batches, statements (store.c). */

/* Steps st, a statement that returns no rows, and resets it and its bindings. Returns an
 * SQLite code; on an error st is left as it is (the failure path resets it). */
int store_stmt_run(sqlite3_stmt *st);

/* Steps st, which returns one integer, into *ret and resets it. Returns an SQLite code,
 * SQLITE_NOTFOUND when there was no row. */
int store_stmt_int(sqlite3_stmt *st, int64_t *ret);

/* Prepares sql on db, runs it as store_stmt_int() does and finalizes it. Returns an SQLite code. */
int store_exec_int(sqlite3 *db, const char *sql, int64_t *ret);

/* Fails the store for an SQLite error rc: "Failed to <what> '<path>': <sqlite message>"; see
 * store_fail(). Returns -errno (-ESHUTDOWN when the store had failed already). */
int store_fail_sqlite(Store *s, int rc, const char *what);

/* Invalid input: commits the open batch (it is good), then fails the store with the message
 * format. Returns -EINVAL. */
_printf_(2, 3) int store_refuse(Store *s, const char *format, ...);

/* Returns -ESHUTDOWN when the store has failed, is closed or not open, 0 when it can be used. */
int store_check_writable(Store *s);

/* Opens a batch (BEGIN IMMEDIATE) unless one is open, and arms the commit timer. Returns 0 or
 * -errno (the store has failed then). */
int store_begin(Store *s);

/* Counts a row into the open batch; commits when it is full. Returns 0 or -errno. */
int store_batch_row(Store *s);

/* Commits the open batch, if any: its rows count into the stats, the files are checked and the
 * commit hook is called. Returns 0 or -errno (the store has failed then). */
int store_commit_internal(Store *s);

/* WAL checkpoints off the ingest path (store-checkpoint.c). store_checkpoint_start() turns
 * SQLite's automatic checkpoint off and sets up the idle source on the open store; returns 0 or
 * -errno (nothing reported). store_checkpoint_stop() drops the source; safe to call twice. */
int store_checkpoint_start(Store *s);
void store_checkpoint_stop(Store *s);

/* Interned names and store.max_names (store-names.c). */

/* Sets *ret to the id of name in table kind, adding it inside the open transaction when new
 * (and marking it for the pass over the names). Returns 0 or -errno (the store has failed then). */
int store_intern(Store *s, NameKind kind, const char *name, int64_t *ret);

/* Sets *ret_known to whether name is in table kind (a name found is cached). Returns an SQLite code. */
int store_name_known(Store *s, NameKind kind, const char *name, bool *ret_known);

/* How many more names table kind takes under store.max_names. */
int64_t store_names_room(const Store *s, NameKind kind);

/* A full table kind turned a name away: logs it (rate-limited) and asks for a pass over the names. */
void store_names_full(Store *s, NameKind kind);

/* Counts the names in each table for store.max_names, once at open. Returns an SQLite code. */
int store_count_tables(Store *s);

/* Empties the cache c (the names in the file stay). */
void store_name_cache_clear(NameCache *c);

/* The estimated bytes a name of len bytes costs in its table and unique index. */
int64_t store_name_cost(const Store *s, int64_t len);

/* Marks the name id of kind as in use for the pass over the names under way (if any). */
void store_prune_mark(NamePrune *p, NameKind kind, int64_t id);

/* Whether the pass under way must keep the name id of kind: marked, or newer than the pass. */
bool store_prune_marked(const NamePrune *p, NameKind kind, int64_t id);

/* Ends the pass over the names: frees its marks. */
void store_prune_end(NamePrune *p);

/* Names by id (store-id-names.c, IdNameCache above). */

/* Sets *ret to the name of id: from c, else from sql ("SELECT name FROM <table> WHERE id = ?1",
 * prepared on db at c's first miss, the same sql every time), "" for an id the table does not
 * have. *ret is owned by c, valid until the next call on c or c is cleared. Returns an SQLite
 * code (SQLITE_OK on success). */
int store_id_name(IdNameCache *c, sqlite3 *db, const char *sql, int64_t id, const char **ret);
/* Empties c (its statement stays). */
void store_id_name_cache_clear(IdNameCache *c);
/* Empties c and finalizes its statement: before its connection closes. c can be used again. */
void store_id_name_cache_done(IdNameCache *c);

/* Retention (store-retention.c). */

/* The retention timer (userdata: the Store): runs a retention step and re-arms itself, sooner
 * while a backlog remains. Returns 0 (a failure has been reported). */
int store_on_retention_timer(sd_event_source *source, uint64_t usec, void *userdata);

/* Adds an event's estimated bytes (see EVENT_ROW_OVERHEAD) to the store's estimate, once that is
 * known (store-retention.c); any of the texts may be NULL. */
void store_count_event(Store *s, const char *kind, const char *sensor, const char *subject, const char *detail);

/* The estimate of EVENT_ROW_OVERHEAD in SQL for a row of events: text in bytes, the sensor twice. */
#define EVENT_COST_SQL                                                                                      \
        "64 + length(CAST(kind AS BLOB)) + 2 * coalesce(length(CAST(sensor AS BLOB)), 0) + "                \
        "coalesce(length(CAST(subject AS BLOB)), 0) + coalesce(length(CAST(detail AS BLOB)), 0)"

/* The estimate of EVENT_ROW_OVERHEAD for a row of clock_events, in SQL. */
#define CLOCK_EVENT_COST_SQL "64 + length(CAST(kind AS BLOB)) + coalesce(length(CAST(detail AS BLOB)), 0)"

/* Inside a retention step (retention_days or max_size_mb set): removes, oldest first and at most
 * CLOCK_RETENTION_ROWS of each, the clock events no kept reading needs and the boots no kept
 * reading or clock event refers to, never the current boot (see docs/STORE.md). Adds what went
 * to *ret_events and *ret_boots, and sets *ret_more when more may be due. Returns an SQLite code. */
int store_clock_retention_step(Store *s, uint64_t *ret_events, uint64_t *ret_boots, bool *ret_more);

/* Events (store-events.c). */

/* Notes the time of an orderly stop in meta, so the next start can tell a stop from a crash.
 * Returns 0 or -errno. */
int store_note_stopped(Store *s);

/* At start: records the window in which the daemon was not running as a daemon_down event
 * (nothing for a new store). Returns 0 or -errno (the store has failed then). */
int store_note_daemon_down(Store *s);

/* Sequence numbers (store-seq.c). */

/* Reads the committed maximum id and the high-water mark into s, once at open. Returns 0 or
 * -errno (the store has failed then). */
int store_load_seq(Store *s);

/* Inside the retention transaction, before the readings with id <= upto are deleted: raises
 * the high-water mark and calls the retention hook. Returns an SQLite code (SQLITE_ABORT when
 * the hook failed the store). */
int store_before_delete_readings(Store *s, int64_t upto, bool keeps_unsynced);

/* The time summary, readings_blocks (store-blocks.c). */

/* Forgets the block not written yet (a new or a rolled-back transaction). */
void store_blocks_reset(Store *s);

/* A reading was inserted in the open transaction with id and ts_ms: widens its block in
 * memory, writing the previous block's row when id starts a new one. Returns an SQLite code. */
int store_blocks_note(Store *s, int64_t id, int64_t ts_ms);

/* Writes the block kept in memory, if any, into the open transaction (before a commit, or
 * before a statement reads readings_blocks). Returns an SQLite code. */
int store_blocks_flush(Store *s);

/* The ts of the readings with ids in [lo, hi] changed (clock correction): recomputes the rows
 * of their blocks from the readings, inside the open transaction. Returns an SQLite code. */
int store_blocks_recompute(Store *s, int64_t lo, int64_t hi);

/* Readings with id <= upto were deleted: drops the blocks up to upto's that no reading is
 * left in, inside the open transaction. Returns an SQLite code. */
int store_blocks_prune(Store *s, int64_t upto);

/* Sets *ret to the largest ts of any reading (newest) or the smallest, through the summary (a
 * block's rows or a few). Returns an SQLite code, SQLITE_NOTFOUND when there is no reading. */
int store_blocks_extreme(Store *s, bool newest, int64_t *ret);
