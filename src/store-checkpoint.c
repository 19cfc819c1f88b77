/* SPDX-License-Identifier: MIT */
/* WAL checkpoints off the ingest path: run when the loop is idle, forced only past a hard bound. */
#include <assert.h>
#include <inttypes.h>
#include <sqlite3.h>

#include "collector/log.h"
#include "collector/macro.h"
#include "collector/store.h"
#include "store-internal.h"

/* Why not SQLite's own wal_autocheckpoint: it runs the checkpoint inside the commit that makes
 * the WAL cross its limit, that is inside the loop in the middle of a burst (copying the pages
 * back and an fdatasync, tens of milliseconds on an SD card), and during a burst it does so
 * every few commits. Here the commit only notes the WAL's size (the WAL hook); an idle-priority
 * source checkpoints once the loop has nothing else to do, which during a burst is after it.
 * A burst that never pauses would grow the WAL without bound, so past STORE_CHECKPOINT_FORCE_PAGES
 * the commit checkpoints at once, as SQLite would have.
 *
 * Every checkpoint is PASSIVE: it never waits for a reader (`query`, `export`, `status`) and never
 * blocks one. A reader's snapshot keeps the frames after it in the WAL until it ends; the WAL
 * is then reset by the first commit after a checkpoint that got to the end. */

/* A failed checkpoint loses nothing (the pages stay in the WAL, the next one retries) and is
 * logged at most this often: it may be asked for at every commit. */
#define CHECKPOINT_FAILURE_LOG_USEC (60 * USEC_PER_SEC)

/* Copies pages back into the database and syncs it. Logs a failure as a warning (rate-limited);
 * returns an SQLite code. */
static int store_checkpoint_run(Store *s, bool forced) {
        uint64_t t0 = clock_now_usec(CLOCK_MONOTONIC), took;
        int log_frames = 0, done_frames = 0, rc;

        rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames, &done_frames);
        took = clock_now_usec(CLOCK_MONOTONIC) - t0;
        s->write_stats.checkpoints++;
        if (forced)
                s->write_stats.checkpoints_forced++;
        s->write_stats.longest_checkpoint_usec = MAX(s->write_stats.longest_checkpoint_usec, took);
        /* Not all of it when a reader still needs older pages: try again only after the WAL has
         * grown by another bound, not at every commit. */
        s->checkpoint_force_at = (rc == SQLITE_OK && done_frames >= log_frames) ? STORE_CHECKPOINT_FORCE_PAGES
                                                                                 : log_frames + STORE_CHECKPOINT_FORCE_PAGES;
        if (rc != SQLITE_OK && rc != SQLITE_BUSY &&
            (s->checkpoint_failure_logged_usec == 0 ||
             t0 - s->checkpoint_failure_logged_usec >= CHECKPOINT_FAILURE_LOG_USEC)) {
                s->checkpoint_failure_logged_usec = t0;
                log_warning("Failed to checkpoint the WAL of '%s': %s, ignoring.", s->config->path,
                            sqlite3_errmsg(s->db));
        }
        return rc;
}

static int on_idle_checkpoint(sd_event_source *source, void *userdata) {
        Store *s = userdata;
        (void) source;

        /* A batch opened after the commit that asked for this: it holds the write lock, so the
         * WAL cannot be reset now anyway; its own commit asks again. */
        if (s->in_transaction || !s->db || s->failed || s->closed)
                return 0;
        (void) store_checkpoint_run(s, false);
        return 0;
}

/* Called by SQLite after every commit with the WAL's size in pages (frames). */
static int on_wal_commit(void *userdata, sqlite3 *db, const char *schema, int pages) {
        Store *s = userdata;
        (void) db;
        (void) schema;

        s->write_stats.wal_pages_max = MAX(s->write_stats.wal_pages_max, (uint64_t) MAX(pages, 0));
        if (pages >= s->checkpoint_force_at) {
                (void) store_checkpoint_run(s, true);
                return SQLITE_OK;
        }
        if (pages >= STORE_CHECKPOINT_IDLE_PAGES && s->checkpoint_source)
                (void) sd_event_source_set_enabled(s->checkpoint_source, SD_EVENT_ONESHOT);
        return SQLITE_OK;
}

int store_checkpoint_start(Store *s) {
        int r;

        assert(s && s->db && s->event);

        r = sd_event_add_defer(s->event, &s->checkpoint_source, on_idle_checkpoint, s);
        if (r >= 0)
                r = sd_event_source_set_priority(s->checkpoint_source, SD_EVENT_PRIORITY_IDLE);
        if (r >= 0)
                r = sd_event_source_set_enabled(s->checkpoint_source, SD_EVENT_OFF);
        if (r >= 0)
                (void) sd_event_source_set_description(s->checkpoint_source, "store-checkpoint");
        if (r < 0)
                return r;
        s->checkpoint_force_at = STORE_CHECKPOINT_FORCE_PAGES;
        /* Replaces SQLite's automatic checkpoint (which is itself a WAL hook). */
        (void) sqlite3_wal_hook(s->db, on_wal_commit, s);
        return 0;
}

void store_checkpoint_stop(Store *s) {
        const StoreWriteStats *w = &s->write_stats;

        assert(s);

        /* Once, at the stop of a store that was started: what an installer tuning the batch
         * window or watching an SD card wants to know about the loop's longest waits. */
        if (s->checkpoint_source)
                log_full_errno_fields(LOG_INFO, 0, LOG_FIELDS("TASK", "store"),
                                      "Store '%s': longest commit %.1f ms, %" PRIu64 " WAL checkpoints (%" PRIu64
                                      " forced by a burst), longest %.1f ms, WAL at most %" PRIu64 " pages.",
                                      s->config->path, (double) w->longest_commit_usec / 1e3, w->checkpoints,
                                      w->checkpoints_forced, (double) w->longest_checkpoint_usec / 1e3,
                                      w->wal_pages_max);
        s->checkpoint_source = sd_event_source_disable_unref(s->checkpoint_source);
        if (s->db)
                (void) sqlite3_wal_hook(s->db, NULL, NULL);
}

void store_get_write_stats(const Store *s, StoreWriteStats *ret) {
        assert(s && ret);
        *ret = s->write_stats;
}
