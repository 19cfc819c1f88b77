/* SPDX-License-Identifier: MIT */
/* Small helpers around sd-event shared by the tasks. */
#include <errno.h>
#include <sys/epoll.h>
#include <time.h>

#include "collector/event-util.h"

int event_arm_timer(sd_event *e, sd_event_source **source, uint64_t usec, uint64_t accuracy,
                    sd_event_time_handler_t handler, void *userdata, const char *description) {
        int r;

        if (!*source) {
                r = sd_event_add_time(e, source, CLOCK_MONOTONIC, usec, accuracy, handler, userdata);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_description(*source, description);
                return 0;
        }
        r = sd_event_source_set_time(*source, usec);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(*source, SD_EVENT_ONESHOT);
}

void io_watch_drop(IoWatch *w) {
        w->source = sd_event_source_disable_unref(w->source);
        *w = IO_WATCH_INIT;
}

int io_watch_update(IoWatch *w, sd_event *e, int fd, uint32_t events, sd_event_io_handler_t handler,
                    void *userdata, const char *description) {
        int r;

        if (fd != w->fd)
                io_watch_drop(w);
        if (fd < 0)
                return 0;
        if (!w->source) {
                /* epoll wants some event; a source with none starts disabled below. */
                r = sd_event_add_io(e, &w->source, fd, events ? events : EPOLLIN, handler, userdata);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_description(w->source, description);
                w->fd = fd;
                w->events = events ? events : EPOLLIN;
                w->enabled = true;
        }
        if (events != 0 && events != w->events) {
                r = sd_event_source_set_io_events(w->source, events);
                if (r < 0)
                        return r;
                w->events = events;
        }
        if ((events != 0) != w->enabled) {
                r = sd_event_source_set_enabled(w->source, events ? SD_EVENT_ON : SD_EVENT_OFF);
                if (r < 0)
                        return r;
                w->enabled = events != 0;
        }
        return 0;
}
