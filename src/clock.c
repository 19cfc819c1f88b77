/* SPDX-License-Identifier: MIT */
/* The clock task: is the wall clock trusted, did it step, and correcting what was stamped before. */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/timex.h>
#include <systemd/sd-id128.h>
#include <unistd.h>

#include "collector/clock.h"
#include "collector/event-util.h"
#include "collector/exit-status.h"
#include "collector/log.h"
#include "collector/time-util.h"

/* systemd judges the kernel's clock synchronised when its maximum error is below 16 s (the
 * kernel's NTP_PHASE_LIMIT), ignoring STA_UNSYNC, which some daemons set to keep the kernel from
 * writing the RTC. */
#define KERNEL_MAXERROR_SYNCED_US INT64_C(16000000)
/* A change of realtime - boottime of at least this much between two looks is a step. */
#define STEP_MIN_MS 1000
/* While the clock is not trusted, the kernel is asked again this often: a daemon other than
 * timesyncd (chrony, ntpd) may declare it synchronised by slewing, which no file and no step
 * tells. Trusted, nothing is asked: steps and timesyncd's file say when to look. */
#define RECHECK_USEC (30 * USEC_PER_SEC)
/* Correction: this many ids per step, a step every CORRECT_INTERVAL (a few ms of work each, so
 * ingest never waits long for the write lock). */
#define CORRECT_STEP_ROWS 1000
#define CORRECT_INTERVAL_USEC (20 * USEC_PER_MSEC)
#define MSEC_PER_DAY (INT64_C(24) * 60 * 60 * 1000)

struct Clock {
        sd_event *event;
        const ClockConfig *config;    /* borrowed */
        Store *store;                 /* borrowed */
        Task *task;

        char *timesync_dir;
        bool ask_kernel;
        char boot_id[SD_ID128_STRING_MAX];

        bool judged;
        bool trusted;
        bool synchronised;            /* something synchronised it (for STATUS=) */
        const char *why;              /* static: the reason of the last judgement */
        int64_t offset_ms;            /* realtime - boottime at the last look */

        int timer_fd;
        sd_event_source *timer_source;    /* TFD_TIMER_CANCEL_ON_SET: the clock was set */
        sd_event_source *inotify_source;  /* timesyncd's directory */
        sd_event_source *recheck_source;
        sd_event_source *correct_source;
        bool correcting;
        int64_t correct_offset_ms;
        uint64_t corrected;           /* in the round under way */
        bool stopped;
};

/* ---- pure ---- */

bool clock_judge(ClockTrust trust, const ClockProbe *p, const char **ret_why) {
        const char *why;
        bool trusted;

        assert(p);
        if (trust == CLOCK_TRUST_ALWAYS) {
                trusted = true;
                why = "clock.trust is \"always\": the clock is trusted as it is";
        } else if (p->kernel_synced) {
                trusted = true;
                why = "the kernel reports it synchronised";
        } else if (p->timesyncd_synced) {
                trusted = true;
                why = "systemd-timesyncd has synchronised it";
        } else if (trust == CLOCK_TRUST_SYNC) {
                trusted = false;
                why = "it is not synchronised and clock.trust is \"sync\": waiting for synchronisation";
        } else if (p->timesyncd) {
                trusted = false;
                why = "systemd-timesyncd runs but has not synchronised it yet: waiting for it";
        } else {
                trusted = true;
                why = "nothing here synchronises it (no systemd-timesyncd, the kernel reports it unsynchronised): "
                      "trusted as it is (clock.trust \"auto\"; \"sync\" would wait)";
        }
        if (ret_why)
                *ret_why = why;
        return trusted;
}

int64_t clock_corrected_ms(int64_t sync_realtime_ms, int64_t sync_boottime_ms, int64_t reading_boottime_ms) {
        return sync_realtime_ms - (sync_boottime_ms - reading_boottime_ms);
}

unsigned clock_reading_flags(bool trusted, bool sensor_ts, int64_t ts_ms, int64_t received_ms, int64_t tolerance_ms) {
        if (!trusted)
                return READING_FLAG_UNSYNCED;
        /* Compared without overflow: a sensor may send any 64-bit time. */
        if (sensor_ts && (ts_ms > received_ms ? (uint64_t) ts_ms - (uint64_t) received_ms
                                              : (uint64_t) received_ms - (uint64_t) ts_ms) > (uint64_t) tolerance_ms)
                return READING_FLAG_SUSPECT_TS;
        return 0;
}

bool clock_is_step(int64_t old_offset_ms, int64_t new_offset_ms) {
        int64_t d = new_offset_ms - old_offset_ms;

        return d >= STEP_MIN_MS || d <= -STEP_MIN_MS;
}

/* ---- what the clock looks like ---- */

bool clock_is_trusted(const Clock *c) {
        return !c || c->trusted;
}

void clock_get_info(const Clock *c, ClockInfo *ret) {
        assert(c && ret);

        *ret = (ClockInfo){ .judged = c->judged, .trusted = c->trusted, .synchronised = c->synchronised,
                            .correcting = c->correcting,
                            .readings_waiting = c->judged ? store_clock_waiting(c->store) : 0, .why = c->why };
}

int64_t clock_sensor_tolerance_ms(const Clock *c) {
        return c ? (int64_t) (c->config->sensor_ts_tolerance_usec / USEC_PER_MSEC) : MSEC_PER_DAY;
}

static void clock_probe(Clock *c, ClockProbe *ret) {
        _cleanup_free_ char *file = NULL;
        struct stat st;

        *ret = (ClockProbe) {};
        if (c->ask_kernel) {
                struct timex tx = {};

                if (adjtimex(&tx) >= 0) {
                        ret->kernel_asked = true;
                        ret->kernel_maxerror_us = tx.maxerror;
                        ret->kernel_synced = tx.maxerror < KERNEL_MAXERROR_SYNCED_US;
                }
        }
        ret->timesyncd = stat(c->timesync_dir, &st) >= 0 && S_ISDIR(st.st_mode);
        if (ret->timesyncd && asprintf(&file, "%s/synchronized", c->timesync_dir) >= 0)
                ret->timesyncd_synced = access(file, F_OK) >= 0;
}

static int64_t clock_offset_now(void) {
        uint64_t rt = clock_now_usec(CLOCK_REALTIME), bt = clock_now_usec(CLOCK_BOOTTIME);

        return ((int64_t) rt - (int64_t) bt) / (int64_t) USEC_PER_MSEC;
}

/* "+1h 5min", "-3.0s": a step for people. Two looks at two clocks differ by a millisecond or
 * so: a step of a minute or more is shown to the nearest second (3599.999 s is "1h"). */
static const char *format_step(char *buf, size_t size, int64_t step_ms) {
        uint64_t abs_ms = step_ms < 0 ? (uint64_t) -step_ms : (uint64_t) step_ms;
        char span[32];

        if (abs_ms >= 60 * MSEC_PER_SEC)
                abs_ms = (abs_ms + MSEC_PER_SEC / 2) / MSEC_PER_SEC * MSEC_PER_SEC;
        snprintf(buf, size, "%s%s", step_ms < 0 ? "-" : "+", format_timespan(span, sizeof(span), abs_ms * USEC_PER_MSEC));
        return buf;
}

/* What was seen, for the line that says what was decided: "kernel: unsynchronised, maximum
 * error 16.0s; systemd-timesyncd: runs". */
static const char *format_probe(const ClockProbe *p, char *buf, size_t size) {
        char maxerror[32] = "";

        if (p->kernel_asked)
                format_timespan(maxerror, sizeof(maxerror), (uint64_t) MAX(p->kernel_maxerror_us, (int64_t) 0));
        snprintf(buf, size, "kernel: %s%s%s; systemd-timesyncd: %s",
                 !p->kernel_asked ? "not asked" : p->kernel_synced ? "synchronised" : "unsynchronised",
                 p->kernel_asked ? ", maximum error " : "", maxerror,
                 p->timesyncd_synced ? "synchronised" : p->timesyncd ? "runs" : "not running");
        return buf;
}

static void clock_event(Clock *c, const char *kind, int64_t step_ms, int64_t readings, const char *detail) {
        /* A failure here fails the store, which reports it. */
        (void) store_clock_event(c->store, kind, wall_clock_ms(), step_ms, readings, detail);
}

static int on_correct_timer(sd_event_source *source, uint64_t usec, void *userdata);

static void clock_begin_correction(Clock *c) {
        int r;

        c->correct_offset_ms = c->offset_ms;
        if (store_clock_waiting(c->store) == 0 && !c->correcting)
                return;
        if (!c->correcting) {
                c->correcting = true;
                c->corrected = 0;
        }
        r = event_arm_timer(c->event, &c->correct_source, 0, USEC_PER_MSEC, on_correct_timer, c, "clock-correct");
        if (r < 0)
                log_full_errno_fields(LOG_WARNING, r, LOG_FIELDS("TASK", "clock"),
                                      "Failed to arm the correction timer, readings stay uncorrected until the next "
                                      "look at the clock, ignoring: %m");
}

static int on_correct_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        Clock *c = userdata;
        uint64_t n = 0;
        int r;

        (void) source;
        if (c->stopped || !c->trusted) {
                c->correcting = false;
                return 0;
        }
        r = store_clock_correct(c->store, c->correct_offset_ms, CORRECT_STEP_ROWS, &n);
        if (r < 0)
                return 0; /* the store reported it */
        c->corrected += n;
        if (r > 0) {
                (void) event_arm_timer(c->event, &c->correct_source, usec + CORRECT_INTERVAL_USEC, USEC_PER_MSEC,
                                       on_correct_timer, c, "clock-correct");
                return 0;
        }
        c->correcting = false;
        if (c->corrected > 0) {
                log_full_errno_fields(LOG_INFO, 0, LOG_FIELDS("TASK", "clock"),
                                      "Corrected the receipt times of %" PRIu64 " readings of this boot stored before "
                                      "the clock was trusted.",
                                      c->corrected);
                clock_event(c, "corrected", 0, (int64_t) c->corrected, NULL);
        }
        c->corrected = 0;
        return 0;
}

static void clock_arm_recheck(Clock *c);

/* Looks at the clock (after a step, timesyncd's file changing, the recheck timer, or at start)
 * and acts on what changed. */
static void clock_update(Clock *c, const char *cause) {
        ClockProbe p;
        const char *why;
        char step[48];
        int64_t offset = clock_offset_now();
        bool trusted, stepped;

        clock_probe(c, &p);
        trusted = clock_judge(c->config->trust, &p, &why);
        c->why = why;
        stepped = c->judged && clock_is_step(c->offset_ms, offset);

        if (stepped) {
                int64_t d = offset - c->offset_ms;

                format_step(step, sizeof(step), d);
                if (c->trusted)
                        log_full_errno_fields(LOG_NOTICE, 0, LOG_FIELDS("TASK", "clock"),
                                              "Clock stepped by %s while trusted; readings stored before keep their "
                                              "times (%s).",
                                              step, cause);
                else
                        log_full_errno_fields(LOG_NOTICE, 0, LOG_FIELDS("TASK", "clock"),
                                              "Clock stepped by %s while not trusted; %" PRIu64 " readings wait for "
                                              "it to be trusted (%s).",
                                              step, store_clock_waiting(c->store), cause);
                clock_event(c, "step", d, -1, c->trusted ? "trusted" : "untrusted");
        }
        c->offset_ms = offset;

        if (!c->judged || trusted != c->trusted) {
                uint64_t waiting = store_clock_waiting(c->store);
                char seen[128];

                format_probe(&p, seen, sizeof(seen));
                if (trusted && c->judged && waiting > 0)
                        log_full_errno_fields(LOG_NOTICE, 0, LOG_FIELDS("TASK", "clock"),
                                              "Clock is trusted now: %s (%s). Correcting %" PRIu64
                                              " readings of this boot stored before.",
                                              why, seen, waiting);
                else if (trusted && c->judged)
                        log_full_errno_fields(LOG_NOTICE, 0, LOG_FIELDS("TASK", "clock"),
                                              "Clock is trusted now: %s (%s).", why, seen);
                else if (trusted)
                        log_full_errno_fields(LOG_INFO, 0, LOG_FIELDS("TASK", "clock"), "Clock is trusted: %s (%s).",
                                              why, seen);
                else
                        log_full_errno_fields(c->judged ? LOG_WARNING : LOG_NOTICE, 0, LOG_FIELDS("TASK", "clock"),
                                              "Clock is not trusted: %s (%s). Readings are stored at once, flagged "
                                              "\"unsynced\", and corrected once it is.",
                                              why, seen);
                /* Also at start: the table tells what each run decided. */
                clock_event(c, trusted ? "trusted" : "untrusted", 0, (int64_t) waiting, why);
                c->trusted = trusted;
                c->judged = true;
        }
        c->synchronised = p.kernel_synced || p.timesyncd_synced;
        if (c->trusted)
                clock_begin_correction(c);
        clock_arm_recheck(c);
}

static int on_recheck_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        (void) source;
        (void) usec;
        clock_update(userdata, "periodic look");
        return 0;
}

static void clock_arm_recheck(Clock *c) {
        if (c->trusted) {
                if (c->recheck_source)
                        (void) sd_event_source_set_enabled(c->recheck_source, SD_EVENT_OFF);
                return;
        }
        (void) event_arm_timer(c->event, &c->recheck_source, clock_now_usec(CLOCK_MONOTONIC) + RECHECK_USEC,
                               USEC_PER_SEC, on_recheck_timer, c, "clock-recheck");
}

/* A timer that never fires but is cancelled whenever the clock is set (stepped): the kernel's
 * way of telling, as systemd uses it. */
static int clock_arm_timerfd(Clock *c) {
        /* The largest time_t, as systemd does: never reached (the kernel clamps it to its own
         * limit), so the timer only ever ends by being cancelled. 2038 would be reachable. */
        struct itimerspec its = { .it_value.tv_sec = (time_t) ((UINTMAX_C(1) << (sizeof(time_t) * 8 - 1)) - 1) };

        if (timerfd_settime(c->timer_fd, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, &its, NULL) < 0)
                return -errno;
        return 0;
}

static int on_timerfd(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        Clock *c = userdata;
        uint64_t n;

        (void) source;
        (void) revents;
        /* ECANCELED: the clock was set. Anything read is drained either way. */
        if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN && errno != ECANCELED)
                log_debug_errno(errno, "Failed to read the clock timerfd: %m");
        if (clock_arm_timerfd(c) < 0)
                log_full_errno_fields(LOG_WARNING, errno, LOG_FIELDS("TASK", "clock"),
                                      "Failed to re-arm the clock step timer, ignoring: %m");
        clock_update(c, "the clock was set");
        return 0;
}

static int on_inotify(sd_event_source *source, const struct inotify_event *event, void *userdata) {
        (void) source;
        (void) event;
        clock_update(userdata, "systemd-timesyncd's state changed");
        return 0;
}

/* The boot id: $SENSOR_COLLECTOR_BOOT_ID when set (the unit's ProcSubset=pid hides /proc/sys),
 * else the kernel's. */
static int clock_read_boot_id(Clock *c) {
        const char *e = getenv(CLOCK_BOOT_ID_ENV);
        sd_id128_t id;
        int r;

        if (e && *e)
                r = sd_id128_from_string(e, &id);
        else
                r = sd_id128_get_boot(&id);
        if (r < 0)
                return r;
        sd_id128_to_string(id, c->boot_id);
        return 0;
}

static Clock *task_clock(Task *t) {
        return task_get_userdata(t);
}

static int clock_start(Task *t) {
        Clock *c = task_clock(t);
        int r;

        c->task = t;
        r = clock_read_boot_id(c);
        if (r < 0) {
                task_report_failure(t, r, "Failed to read the boot id (set $%s if /proc/sys is hidden)", CLOCK_BOOT_ID_ENV);
                return 0;
        }
        r = store_clock_set_boot(c->store, c->boot_id);
        if (r < 0)
                return 0; /* the store reported it, or failed before */

        c->timer_fd = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC);
        r = c->timer_fd < 0 ? -errno : clock_arm_timerfd(c);
        if (r >= 0)
                r = sd_event_add_io(c->event, &c->timer_source, c->timer_fd, EPOLLIN, on_timerfd, c);
        if (r < 0)
                log_full_errno_fields(LOG_WARNING, r, LOG_FIELDS("TASK", "clock"),
                                      "Failed to watch for clock steps; they are noticed at the next look, ignoring: %m");
        /* Only where timesyncd runs: it touches "synchronized" at every synchronisation. */
        r = sd_event_add_inotify(c->event, &c->inotify_source, c->timesync_dir,
                                 IN_CREATE | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_TO | IN_ONLYDIR, on_inotify, c);
        if (r < 0 && r != -ENOENT && r != -ENOTDIR)
                log_full_errno_fields(LOG_WARNING, r, LOG_FIELDS("TASK", "clock"),
                                      "Failed to watch '%s', ignoring: %m", c->timesync_dir);

        clock_update(c, "start");
        task_report_running(t);
        return 0;
}

static int clock_stop(Task *t) {
        Clock *c = task_clock(t);

        c->stopped = true;
        c->correct_source = sd_event_source_disable_unref(c->correct_source);
        c->recheck_source = sd_event_source_disable_unref(c->recheck_source);
        c->timer_source = sd_event_source_disable_unref(c->timer_source);
        c->inotify_source = sd_event_source_disable_unref(c->inotify_source);
        return 0;
}

static void clock_free(void *userdata) {
        Clock *c = userdata;

        if (!c)
                return;
        sd_event_source_disable_unref(c->correct_source);
        sd_event_source_disable_unref(c->recheck_source);
        sd_event_source_disable_unref(c->timer_source);
        sd_event_source_disable_unref(c->inotify_source);
        if (c->timer_fd >= 0)
                (void) close(c->timer_fd);
        free(c->timesync_dir);
        sd_event_unref(c->event);
        free(c);
}

static void clock_format_status(Task *t, char *buf, size_t size) {
        Clock *c = task_clock(t);
        uint64_t waiting = c->judged ? store_clock_waiting(c->store) : 0;

        if (!c->judged)
                snprintf(buf, size, "starting");
        else if (!c->trusted)
                snprintf(buf, size, "not synchronised, %" PRIu64 " readings wait for correction", waiting);
        else if (c->correcting || waiting > 0)
                snprintf(buf, size, "%s, correcting %" PRIu64 " readings", c->synchronised ? "synchronised" : "trusted",
                         waiting);
        else if (c->synchronised)
                snprintf(buf, size, "synchronised");
        else
                snprintf(buf, size, "trusted as it is (%s)",
                         c->config->trust == CLOCK_TRUST_ALWAYS ? "clock.trust always" : "nothing synchronises it");
}

static const TaskOps clock_task_ops = {
        .name = "clock",
        .exit_status = EXIT_STATUS_UNEXPECTED,
        .start = clock_start,
        .stop = clock_stop,
        .free = clock_free,
        .format_status = clock_format_status,
};

int clock_task_new(sd_event *e, const ClockConfig *config, Store *store, Task **ret_task, Clock **ret_clock) {
        const char *dir = getenv(CLOCK_TIMESYNC_DIR_ENV);
        Clock *c;
        Task *t;
        int r;

        assert(e && config && store && ret_task && ret_clock);

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->event = sd_event_ref(e);
        c->config = config;
        c->store = store;
        c->timer_fd = -EBADF;
        /* A test names its own directory and decides alone what the daemon sees. */
        c->ask_kernel = !(dir && *dir) && !streq_ptr(getenv(CLOCK_ADJTIMEX_ENV), "no");
        c->timesync_dir = strdup(dir && *dir ? dir : CLOCK_TIMESYNC_DIR);
        if (!c->timesync_dir) {
                clock_free(c);
                return -ENOMEM;
        }

        r = task_new(&clock_task_ops, c, &t); /* owns c from here, also on failure */
        if (r < 0)
                return r;
        c->task = t;
        *ret_task = t;
        *ret_clock = c;
        return 0;
}
