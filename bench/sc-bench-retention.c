/* SPDX-License-Identifier: MIT */
/* Times retention steps on an existing store: how long each one holds the write lock. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "collector/log.h"
#include "collector/macro.h"
#include "collector/store.h"

/* store_run_retention() commits the open batch, then runs one step in a transaction of its
 * own: from its BEGIN IMMEDIATE to its COMMIT it holds the write lock, and the daemon's one
 * loop does nothing else. So the time of the call is the time the lock is held (plus an
 * empty commit), which is what the ingest path waits for at worst. */

static double mono_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec * 1e3 + (double) ts.tv_nsec / 1e6;
}

/* The store's own retention timer also runs steps from the loop (1 s after start, then every
 * RETENTION_BUSY_INTERVAL while a backlog lasts): such a step in the time between two of ours
 * is a step, not the loop's other work. The retention hook tells that one ran. */
static void on_retention(Store *s, int64_t upto, void *userdata) {
        (void) s;
        (void) upto;
        *(bool *) userdata = true;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;

        return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                { "days", required_argument, NULL, 'd' },
                { "max-size-mb", required_argument, NULL, 'm' },
                { "steps", required_argument, NULL, 'n' },
                { "trace", no_argument, NULL, 't' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        StoreConfig config = {
                .synchronous = STORE_SYNCHRONOUS_NORMAL,
                .commit_interval_ms = 20,
                .commit_max_rows = 500,
        };
        unsigned steps = 200, done = 0, over = 0, between_n = 0, loop_steps = 0;
        bool trace = false, loop_step = false;
        uint64_t removed = 0;
        double *ms = NULL, *between = NULL, total = 0, t0;
        StoreWriteStats w;
        sd_event *e = NULL;
        Task *task = NULL;
        Store *store = NULL;
        int c, r, ret = 1;

        while ((c = getopt_long(argc, argv, "d:m:n:th", options, NULL)) >= 0)
                switch (c) {
                case 'd': config.retention_days = (unsigned) strtoul(optarg, NULL, 10); break;
                case 'm': config.max_size_mb = (unsigned) strtoul(optarg, NULL, 10); break;
                case 'n': steps = (unsigned) strtoul(optarg, NULL, 10); break;
                case 't': trace = true; break;
                case 'h':
                        printf("sc-bench-retention [--days D] [--max-size-mb M] [--steps N] [--trace] PATH\n"
                               "Runs up to N retention steps (default 200) on the store at PATH with these\n"
                               "settings, back to back (running what the loop has pending in between, as the\n"
                               "daemon does: its idle checkpoint), and prints one JSON line: steps, rows\n"
                               "removed, the time of each step (max, p99, p90, p50, mean) in ms, how many took\n"
                               "longer than the batch window (20 ms), the longest time (and p99) between two\n"
                               "steps the loop was busy, and the store's checkpoints (how many, how many forced\n"
                               "by the WAL's hard bound, the longest in ms, the WAL's largest size in pages).\n"
                               "Steps the store's own timer ran in between are counted apart (loop_steps) and\n"
                               "their time is not the loop's other work. --trace: one line per step on stderr.\n"
                               "PATH loses those rows.\n");
                        return 0;
                default:
                        return 64;
                }
        if (optind != argc - 1 || steps == 0 || (config.retention_days == 0 && config.max_size_mb == 0)) {
                fprintf(stderr, "sc-bench-retention: expected PATH, --steps > 0 and --days or --max-size-mb\n");
                return 64;
        }
        config.path = argv[optind];
        log_open(LOG_TARGET_STDERR);
        log_set_max_level(LOG_WARNING);

        ms = calloc(steps, sizeof(double));
        between = calloc(steps, sizeof(double));
        if (!ms || !between)
                goto finish;
        r = sd_event_new(&e);
        if (r >= 0)
                r = store_task_new(e, &config, &task, &store);
        if (r >= 0)
                r = task_start(task);
        if (r < 0 || task_get_state(task) != TASK_RUNNING) {
                fprintf(stderr, "sc-bench-retention: cannot open '%s': %s\n", config.path,
                        r < 0 ? strerror(-r) : strna(task_get_cause(task)));
                goto finish;
        }
        store_set_hooks(store, NULL, on_retention, &loop_step);
        t0 = mono_ms();
        while (done < steps) {
                StoreWriteStats before;

                double t = mono_ms();

                r = store_run_retention(store);
                ms[done] = mono_ms() - t;
                if (r < 0) {
                        fprintf(stderr, "sc-bench-retention: step %u: %s (%s)\n", done, strerror(-r),
                                strna(task_get_cause(task)));
                        goto finish;
                }
                removed += (uint64_t) r;
                total += ms[done];
                done++;
                /* Between two steps the daemon's loop runs what is pending, the idle checkpoint
                 * among them (the daemon waits RETENTION_BUSY_INTERVAL between steps): so here.
                 * Its time is not the write lock's, but it is time the loop is busy. */
                store_get_write_stats(store, &before);
                loop_step = false;
                t = mono_ms();
                while (sd_event_run(e, 0) > 0)
                        ;
                t = mono_ms() - t;
                if (loop_step)
                        loop_steps++;
                else
                        between[between_n++] = t;
                if (trace) {
                        store_get_write_stats(store, &w);
                        fprintf(stderr, "step %u: %d rows, %.2f ms; then %.2f ms, %" PRIu64 " checkpoints%s\n", done,
                                r, ms[done - 1], t, w.checkpoints - before.checkpoints,
                                loop_step ? ", a step of the store's timer" : "");
                }
                if (r == 0 && !store_retention_pending(store))
                        break;
        }
        qsort(ms, done, sizeof(double), cmp_double);
        qsort(between, between_n, sizeof(double), cmp_double);
        if (between_n == 0)
                between[between_n++] = 0;
        store_get_write_stats(store, &w);
        /* Steps longer than the batch window: each one a batch of ingest waited past its time. */
        for (unsigned i = 0; i < done; i++)
                over += ms[i] > config.commit_interval_ms;
        printf("{\"steps\":%u,\"removed\":%" PRIu64 ",\"max_ms\":%.2f,\"p99_ms\":%.2f,\"p90_ms\":%.2f,"
               "\"p50_ms\":%.2f,\"mean_ms\":%.2f,\"over_window\":%u,\"between_max_ms\":%.2f,\"between_p99_ms\":%.2f,\"loop_steps\":%u,"
               "\"checkpoints\":%" PRIu64 ",\"checkpoints_forced\":%" PRIu64 ",\"longest_checkpoint_ms\":%.2f,"
               "\"wal_pages_max\":%" PRIu64 ",\"wall_s\":%.2f}\n",
               done, removed, ms[done - 1], ms[(size_t) ((done - 1) * 0.99)], ms[(size_t) ((done - 1) * 0.9)],
               ms[(done - 1) / 2], total / done, over, between[between_n - 1], between[(size_t) ((between_n - 1) * 0.99)], loop_steps,
               w.checkpoints, w.checkpoints_forced, (double) w.longest_checkpoint_usec / 1e3, w.wal_pages_max,
               (mono_ms() - t0) / 1e3);
        ret = 0;
finish:
        if (task) {
                (void) task_stop(task);
                task_free(task);
        }
        sd_event_unref(e);
        free(ms);
        free(between);
        return ret;
}
