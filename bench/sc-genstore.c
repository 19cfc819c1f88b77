/* SPDX-License-Identifier: MIT */
/* Writes a store that looks a season old (a greenhouse's readings, one a minute) through the store's own API. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "collector/log.h"
#include "collector/macro.h"
#include "collector/store.h"

/* Why the store's API and not SQL of its own: the schema and the write path change (new
 * columns, new tables, other keys), and a generator that writes through store_append() keeps
 * producing what the daemon itself would have written. The only liberties taken are a batch of
 * --chunk rows (the daemon commits every 20 ms) and receipt times in the past. */

#define MINUTE_MS ((int64_t) 60 * 1000)
#define DAY_MS ((int64_t) 24 * 3600 * 1000)
/* What one row takes on disk with the schema of this tree (table and two indexes), with margin:
 * the generator refuses to start when the file system has less than this per row to spare. */
#define BYTES_PER_ROW_ESTIMATE 90

static const char *const metrics[] = { "temperature", "humidity", "co2", "light", "soil_moisture" };

typedef struct Options {
        const char *path;
        unsigned days;
        unsigned sensors;
        unsigned interval_s;
        unsigned chunk;
        int64_t end_ms;
        bool sensor_ts;
        bool quiet;
} Options;

static double mono_s(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static int64_t wall_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* xorshift64*: fast, and the same store for the same seed. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static double rng_unit(void) {
        rng_state ^= rng_state >> 12;
        rng_state ^= rng_state << 25;
        rng_state ^= rng_state >> 27;
        return (double) ((rng_state * 0x2545f4914f6cdd1dULL) >> 11) / 9007199254740992.0;
}
static double rng_noise(double amplitude) {
        return (rng_unit() * 2 - 1) * amplitude;
}

/* Per-sensor state that drifts: soil dries out and is watered again. */
typedef struct SensorState {
        double soil;
        double offset;        /* where in the house: some spots run warmer */
} SensorState;

/* Plausible values for minute t_ms (UTC; the greenhouse is taken to be on UTC), sensor s. */
static void values_at(int64_t t_ms, SensorState *s, double out[static ELEMENTSOF(metrics)]) {
        double day = (double) (t_ms % DAY_MS) / (double) DAY_MS;              /* 0..1 from midnight */
        double year = (double) (t_ms % (365 * DAY_MS)) / (double) (365 * DAY_MS);
        double season = -cos(2 * M_PI * (year - 0.05));                        /* -1 winter .. 1 summer */
        double sun = fmax(0, sin(2 * M_PI * (day - 0.25)));                   /* 0 at night, 1 at noon */

        out[0] = 18 + 4 * season + 7 * sun + s->offset + rng_noise(0.3);              /* °C */
        out[1] = fmin(98, fmax(30, 78 - 22 * sun - 5 * season + rng_noise(2)));      /* % RH */
        out[2] = 420 + 500 * (1 - sun) * (0.6 + 0.4 * rng_unit()) + rng_noise(15);   /* ppm */
        out[3] = fmax(0, (30000 + 25000 * season) * sun + rng_noise(200) * sun);     /* lux */
        s->soil -= 0.004 + 0.01 * sun;                                                /* % vol */
        if (s->soil < 22)
                s->soil = 42 + rng_noise(2);
        out[4] = s->soil + rng_noise(0.2);
        /* Two decimals, as a sensor sends them. */
        for (size_t m = 0; m < ELEMENTSOF(metrics); m++)
                out[m] = round(out[m] * 100) / 100;
}

static int run_loop(sd_event *e, Task *t) {
        /* start() of the store opens it synchronously; a few turns settle anything it posted. */
        for (unsigned i = 0; i < 10 && task_get_state(t) == TASK_STARTING; i++) {
                int r = sd_event_run(e, 100 * 1000);
                if (r < 0)
                        return r;
        }
        return task_get_state(t) == TASK_RUNNING ? 0 : -EIO;
}

static void help(void) {
        printf("sc-genstore [OPTIONS] PATH\n"
               "Writes a store holding DAYS of a greenhouse: SENSORS sensors (gh1-s01..), five metrics\n"
               "each (temperature, humidity, co2, light, soil_moisture), one reading per INTERVAL,\n"
               "the newest one INTERVAL before now. PATH must not exist.\n"
               "  -d, --days DAYS        default 365 (30 sensors: 78,840,000 rows)\n"
               "  -n, --sensors N        default 30\n"
               "  -i, --interval SEC     default 60\n"
               "  -c, --chunk ROWS       rows per transaction, default 1000000\n"
               "      --end MS           the newest reading's time, ms since the epoch (default: now)\n"
               "      --no-ts            readings without a sensor timestamp (time of receipt only)\n"
               "  -q, --quiet            no progress lines\n"
               "Prints one JSON line on stdout: rows, seconds, rows_per_s, bytes.\n");
}

static int parse_unsigned(const char *s, unsigned min, unsigned max, unsigned *ret) {
        char *end;
        unsigned long v;

        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno != 0 || end == s || *end || v < min || v > max || s[0] == '-')
                return -EINVAL;
        *ret = (unsigned) v;
        return 0;
}

static int parse_options(int argc, char **argv, Options *o) {
        static const struct option options[] = {
                { "days", required_argument, NULL, 'd' },
                { "sensors", required_argument, NULL, 'n' },
                { "interval", required_argument, NULL, 'i' },
                { "chunk", required_argument, NULL, 'c' },
                { "end", required_argument, NULL, 'e' },
                { "no-ts", no_argument, NULL, 'T' },
                { "quiet", no_argument, NULL, 'q' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        int c;

        *o = (Options){ .days = 365, .sensors = 30, .interval_s = 60, .chunk = 1000000, .sensor_ts = true };
        while ((c = getopt_long(argc, argv, "d:n:i:c:qh", options, NULL)) >= 0) {
                int r = 0;

                switch (c) {
                case 'd': r = parse_unsigned(optarg, 0, 36500, &o->days); break;
                case 'n': r = parse_unsigned(optarg, 1, 99, &o->sensors); break;
                case 'i': r = parse_unsigned(optarg, 1, 86400, &o->interval_s); break;
                case 'c': r = parse_unsigned(optarg, 1, 100000000, &o->chunk); break;
                case 'e': {
                        char *end;
                        errno = 0;
                        o->end_ms = strtoll(optarg, &end, 10);
                        if (errno != 0 || end == optarg || *end || o->end_ms <= 0)
                                r = -EINVAL;
                        break;
                }
                case 'T': o->sensor_ts = false; break;
                case 'q': o->quiet = true; break;
                case 'h': help(); return 1;
                default: return -EINVAL;
                }
                if (r < 0) {
                        fprintf(stderr, "sc-genstore: invalid value '%s' for --%s\n", optarg,
                                c == 'd' ? "days" : c == 'n' ? "sensors" : c == 'i' ? "interval" : c == 'c' ? "chunk" : "end");
                        return r;
                }
        }
        if (optind != argc - 1) {
                fprintf(stderr, "sc-genstore: expected one PATH\n");
                return -EINVAL;
        }
        o->path = argv[optind];
        if (o->end_ms == 0)
                o->end_ms = wall_ms() - (int64_t) o->interval_s * 1000;
        return 0;
}

static uint64_t file_size(const char *path, const char *suffix) {
        char p[4096];
        struct stat st;

        snprintf(p, sizeof(p), "%s%s", path, suffix);
        return stat(p, &st) == 0 ? (uint64_t) st.st_size : 0;
}

int main(int argc, char **argv) {
        sd_event *e = NULL;
        Task *task = NULL;
        Store *store = NULL;
        StoreConfig config;
        Options o;
        SensorState *state = NULL;
        char (*sensor_names)[32] = NULL, (*origins)[64] = NULL;
        uint64_t steps, rows = 0, expected;
        double t0, last_report;
        int64_t step_ms, start_ms;
        struct statvfs vfs;
        char dir[4096], *slash;
        int r;

        r = parse_options(argc, argv, &o);
        if (r != 0) {
                if (r < 0)
                        fprintf(stderr, "Try 'sc-genstore --help'.\n");
                return r < 0 ? 64 : 0;
        }
        log_open(LOG_TARGET_STDERR);
        log_set_max_level(LOG_WARNING);

        step_ms = (int64_t) o.interval_s * 1000;
        steps = (uint64_t) o.days * (uint64_t) (DAY_MS / step_ms);
        expected = steps * o.sensors * ELEMENTSOF(metrics);
        start_ms = o.end_ms - (int64_t) (steps - (steps > 0)) * step_ms;

        if (access(o.path, F_OK) == 0) {
                fprintf(stderr, "sc-genstore: '%s' exists; refusing to add to it\n", o.path);
                return 1;
        }
        /* Do not fill the disk: the machine is shared. */
        snprintf(dir, sizeof(dir), "%s", o.path);
        slash = strrchr(dir, '/');
        if (slash)
                *(slash == dir ? slash + 1 : slash) = 0;
        else
                snprintf(dir, sizeof(dir), ".");
        if (statvfs(dir, &vfs) == 0) {
                uint64_t avail = (uint64_t) vfs.f_bavail * vfs.f_frsize, need = expected * BYTES_PER_ROW_ESTIMATE;
                if (need + ((uint64_t) 10 << 30) > avail) {
                        fprintf(stderr, "sc-genstore: %" PRIu64 " rows need about %" PRIu64 " MiB; '%s' has %" PRIu64
                                " MiB free and 10 GiB must stay free\n", expected, need >> 20, dir, avail >> 20);
                        return 1;
                }
        }

        state = calloc(o.sensors, sizeof(*state));
        sensor_names = calloc(o.sensors, sizeof(*sensor_names));
        origins = calloc(o.sensors, sizeof(*origins));
        if (!state || !sensor_names || !origins) {
                fprintf(stderr, "sc-genstore: out of memory\n");
                r = 1;
                goto finish;
        }
        for (unsigned s = 0; s < o.sensors; s++) {
                snprintf(sensor_names[s], sizeof(sensor_names[s]), "gh1-s%02u", s + 1);
                snprintf(origins[s], sizeof(origins[s]), "greenhouse/gh1-s%02u/state", s + 1);
                state[s].soil = 25 + 17 * rng_unit();
                state[s].offset = rng_noise(1.5);
        }

        config = (StoreConfig){
                .path = (char *) o.path,
                .synchronous = STORE_SYNCHRONOUS_NORMAL,
                /* The batch commits at --chunk rows; the timer never runs (the loop does not). */
                .commit_interval_ms = 3600 * 1000,
                .commit_max_rows = o.chunk,
        };
        r = sd_event_new(&e);
        if (r >= 0)
                r = store_task_new(e, &config, &task, &store);
        if (r >= 0)
                r = task_start(task);
        if (r >= 0)
                r = run_loop(e, task);
        if (r < 0) {
                fprintf(stderr, "sc-genstore: cannot open the store '%s': %s\n", o.path, strerror(-r));
                r = 1;
                goto finish;
        }

        t0 = last_report = mono_s();
        for (uint64_t i = 0; i < steps; i++) {
                int64_t ts = start_ms + (int64_t) i * step_ms;

                for (unsigned s = 0; s < o.sensors; s++) {
                        double v[ELEMENTSOF(metrics)];

                        values_at(ts, &state[s], v);
                        for (size_t m = 0; m < ELEMENTSOF(metrics); m++) {
                                /* A sensor stamps its reading; it arrives a few ms later. */
                                int64_t received = ts + (o.sensor_ts ? 5 + (int64_t) (rng_unit() * 40) : 0);
                                Reading rd = {
                                        .sensor = sensor_names[s],
                                        .metric = metrics[m],
                                        .value = v[m],
                                        .ts_ms = o.sensor_ts ? ts : received,
                                        .sensor_ts = o.sensor_ts,
                                        .received_ms = received,
                                        .source = READING_SOURCE_MQTT,
                                        .origin = origins[s],
                                };

                                r = store_append(store, &rd);
                                if (r < 0) {
                                        fprintf(stderr, "sc-genstore: store_append: %s (%s)\n", strerror(-r),
                                                strna(task_get_cause(task)));
                                        r = 1;
                                        goto finish;
                                }
                                rows++;
                        }
                }
                if (!o.quiet && mono_s() - last_report >= 10) {
                        double t = mono_s() - t0;
                        last_report = mono_s();
                        fprintf(stderr, "sc-genstore: %" PRIu64 " / %" PRIu64 " rows (%.0f %%), %.0f s, %.0f rows/s, %" PRIu64 " MiB\n",
                                rows, expected, 100.0 * (double) rows / (double) expected, t, (double) rows / t,
                                (file_size(o.path, "") + file_size(o.path, "-wal")) >> 20);
                }
        }
        r = store_commit(store);
        if (r < 0) {
                fprintf(stderr, "sc-genstore: commit: %s (%s)\n", strerror(-r), strna(task_get_cause(task)));
                r = 1;
                goto finish;
        }
        (void) task_stop(task);
        task = task_free(task);
        {
                double t = mono_s() - t0;
                printf("{\"rows\":%" PRIu64 ",\"seconds\":%.1f,\"rows_per_s\":%.0f,\"bytes\":%" PRIu64 "}\n", rows, t,
                       t > 0 ? (double) rows / t : 0.0, file_size(o.path, "") + file_size(o.path, "-wal"));
        }
        r = 0;
finish:
        if (task) {
                (void) task_stop(task);
                task_free(task);
        }
        sd_event_unref(e);
        free(state);
        free(sensor_names);
        free(origins);
        return r;
}
