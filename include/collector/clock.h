/* SPDX-License-Identifier: MIT */
/* The wall clock: whether it can be trusted, its steps, and correcting receipt times taken before. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "collector/config.h"
#include "collector/store.h"
#include "collector/task.h"

/* Gateways without a battery-backed clock boot at a saved or a fixed time and jump to the true
 * time when NTP synchronises. Readings stamped with their time of receipt before that carry a
 * wrong time. The clock task judges whether the clock is trusted (clock_judge()), notices steps
 * (timerfd with TFD_TIMER_CANCEL_ON_SET) and synchronisation (inotify on timesyncd's runtime
 * directory), and once the clock is trusted has the store correct this boot's readings in
 * bounded steps. Ingest asks it (clock_is_trusted()) how to flag each reading. */
typedef struct Clock Clock;

/* Where the kernel's and timesyncd's view is read from. $SENSOR_COLLECTOR_TIMESYNC_DIR, for
 * tests only, names another timesyncd runtime directory and stops asking the kernel, so that a
 * test decides what the daemon sees. */
#define CLOCK_TIMESYNC_DIR "/run/systemd/timesync"
#define CLOCK_TIMESYNC_DIR_ENV "SENSOR_COLLECTOR_TIMESYNC_DIR"
/* The boot id, when /proc/sys is hidden (the unit's ProcSubset=pid sets it with %b). */
#define CLOCK_BOOT_ID_ENV "SENSOR_COLLECTOR_BOOT_ID"
/* "no": do not call adjtimex(). The unit's ProtectClock= and system call filter forbid it even
 * to read the clock's state (the process would be killed), so the unit says so; the judgement
 * then rests on timesyncd's file alone. */
#define CLOCK_ADJTIMEX_ENV "SENSOR_COLLECTOR_ADJTIMEX"

/* What was observed about the clock. */
typedef struct ClockProbe {
        bool kernel_asked;            /* adjtimex() answered */
        bool kernel_synced;           /* its maximum error is below 16 s, as systemd judges it */
        int64_t kernel_maxerror_us;
        bool timesyncd;               /* timesyncd's runtime directory exists: it runs on this boot */
        bool timesyncd_synced;        /* ...and its "synchronized" file exists */
} ClockProbe;

/* Pure: whether the clock is trusted under trust, given what was observed. *ret_why (may be
 * NULL) gets a static sentence that says why, for the journal and STATUS=. */
bool clock_judge(ClockTrust trust, const ClockProbe *p, const char **ret_why);

/* Pure: the true time of a reading received at reading_boottime_ms (CLOCK_BOOTTIME), given
 * that the trusted clock read sync_realtime_ms at sync_boottime_ms:
 * sync_realtime - (sync_boottime - reading_boottime). */
int64_t clock_corrected_ms(int64_t sync_realtime_ms, int64_t sync_boottime_ms, int64_t reading_boottime_ms);

/* Pure: the READING_FLAG_* of a reading received at received_ms, with the sensor's own time
 * ts_ms when sensor_ts: UNSYNCED when the clock is not trusted; SUSPECT_TS when the clock is
 * trusted and the sensor's time is more than tolerance_ms away from received_ms (either way). */
unsigned clock_reading_flags(bool trusted, bool sensor_ts, int64_t ts_ms, int64_t received_ms, int64_t tolerance_ms);

/* Pure: whether the change of (realtime - boottime) from old_offset_ms to new_offset_ms is a
 * step (at least a second) rather than NTP's slewing between two looks. */
bool clock_is_step(int64_t old_offset_ms, int64_t new_offset_ms);

/* Creates the clock task ("clock"; an internal failure is exit status 1). config and store are
 * borrowed and must outlive it; the task owns the Clock, *ret_clock is a borrowed view valid
 * until the task is freed. Add it after the store: start() registers this boot with the store,
 * judges the clock, says what it decided and why (journal and STATUS=), and resumes a
 * correction a restart interrupted. Returns 0 or -ENOMEM. */
int clock_task_new(sd_event *e, const ClockConfig *config, Store *store, Task **ret_task, Clock **ret_clock);

/* Whether readings received now get a trusted receipt time. NULL (no clock task): true. */
bool clock_is_trusted(const Clock *c);
/* What `sensor-collector status` shows of the clock. why is a static string (NULL before the
 * first judgement). */
typedef struct ClockInfo {
        bool judged;
        bool trusted;
        bool synchronised;
        bool correcting;
        uint64_t readings_waiting;    /* this boot's readings that wait for their true time */
        const char *why;
} ClockInfo;

/* Fills *ret from c (borrowed). Never fails. */
void clock_get_info(const Clock *c, ClockInfo *ret);

/* The tolerance for sensor timestamps, in ms. NULL: the default, one day. */
int64_t clock_sensor_tolerance_ms(const Clock *c);
