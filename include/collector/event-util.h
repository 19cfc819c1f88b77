/* SPDX-License-Identifier: MIT */
/* Small helpers around sd-event shared by the tasks. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

/* Arms a one-shot CLOCK_MONOTONIC timer at usec: creates it in *source on first use (with
 * description), else moves it and enables it once more. accuracy as sd_event_add_time().
 * Returns 0 or -errno (the timer is then not armed). */
int event_arm_timer(sd_event *e, sd_event_source **source, uint64_t usec, uint64_t accuracy,
                    sd_event_time_handler_t handler, void *userdata, const char *description);

/* An io source that follows a descriptor a library owns and replaces (libmosquitto's socket,
 * a new one after every reconnect) and the events it wants now. Zero-initialise with
 * IO_WATCH_INIT; io_watch_drop() when done. */
typedef struct IoWatch {
        sd_event_source *source;
        int fd;                       /* the fd source watches, or -EBADF */
        uint32_t events;
        bool enabled;
} IoWatch;

#define IO_WATCH_INIT ((IoWatch){ .fd = -EBADF })

/* Watches fd for events (EPOLLIN, EPOLLOUT; 0: keep the source but disable it) with handler:
 * adds the source when there is none or fd changed, else changes only what differs. fd < 0
 * drops the source. Returns 0 or -errno. */
int io_watch_update(IoWatch *w, sd_event *e, int fd, uint32_t events, sd_event_io_handler_t handler,
                    void *userdata, const char *description);
/* Frees the source; the watch is empty again. */
void io_watch_drop(IoWatch *w);
