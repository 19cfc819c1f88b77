/* SPDX-License-Identifier: MIT */
/* The serial input task: a port read through libserialport on the sd_event loop, lines into readings. */
#include <assert.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libserialport.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>

#include "collector/backoff.h"
#include "collector/event-util.h"
#include "collector/frame.h"
#include "collector/ingest.h"
#include "collector/log.h"
#include "collector/serial-task.h"
#include "collector/exit-status.h"
#include "collector/time-util.h"

/* Bytes read per loop iteration: a bounded amount of work per dispatch. At 115200 baud a port
 * delivers about 11.5 KiB/s, so this keeps up with a few wakeups a second. */
#define SERIAL_READ_CHUNK 4096
/* What stop() still reads from the port's buffer before closing it, at most. */
#define SERIAL_STOP_DRAIN_MAX (64 * 1024)
/* Reopen backoff: a local adapter comes back within a second or so (re-enumeration), so start
 * fast and stay at most a few seconds apart; the last attempt is at the end of reopen_timeout. */
#define SERIAL_BACKOFF_INITIAL_USEC (100 * USEC_PER_MSEC)
#define SERIAL_BACKOFF_MAX_USEC (5 * USEC_PER_SEC)
#define SERIAL_TIMER_ACCURACY_USEC (1 * USEC_PER_MSEC)

typedef enum PortState {
        PORT_NEW,         /* not started */
        PORT_OPEN,        /* open, configured, watched */
        PORT_REOPENING,   /* gone (or missing at start); the reopen timer is armed */
        PORT_IDLE,        /* stopped reading because the store failed; waits for stop() */
        PORT_DONE,        /* stopped or failed: no more I/O */
} PortState;

typedef struct SerialTask {
        Task *task;                   /* borrowed: the task owns this struct */
        sd_event *event;
        const SerialConfig *config;   /* borrowed, outlives the task */
        Ingest *ingest;               /* owned */

        struct sp_port *port;         /* NULL when closed */
        sd_event_source *io_source;
        sd_event_source *reopen_source;
        sd_event_source *idle_source;

        PortState state;
        bool ever_opened;
        LineBuffer lines;
        int64_t received_ms;          /* receipt time of the bytes being split into lines */

        BackoffPolicy backoff_policy; /* the reopen budget is the configuration's */
        Backoff backoff;              /* reopens: CLOCK_MONOTONIC */
        unsigned attempts;            /* reopen attempts since it went away */
        uint64_t last_data_usec;      /* CLOCK_MONOTONIC of the last byte (or of the open) */
        uint64_t silent_since_usec;   /* of the last byte, or of the open at start or after a loss:
                                       * idle reopens do not restart it */
        unsigned idle_reopens;        /* idle reopens since the last byte */

        uint64_t empty_lines;
        bool line_end_hinted;         /* the hint about serial.line_end was logged */
        uint64_t reopens;
        char last_problem[256];       /* why the port went or did not reopen, for `status` */
} SerialTask;

int serial_error(int r) {
        switch (r) {
        case SP_OK:
                return 0;
        case SP_ERR_ARG:
                return -EINVAL;
        case SP_ERR_FAIL:
                return negative_errno();
        case SP_ERR_MEM:
                return -ENOMEM;
        case SP_ERR_SUPP:
                return -EOPNOTSUPP;
        default:
                return r > 0 ? 0 : -EIO;
        }
}

/* Errors that the adapter going away, or coming back and not yet settled (udev still fixing
 * permissions, another program still holding it), can cause. Anything else is a fault that
 * reopening will not cure. */
static bool error_is_transient(int error) {
        switch (-abs(error)) {
        case -ENOENT:
        case -ENODEV:
        case -ENXIO:
        case -EIO:
        case -EACCES:
        case -EPERM:
        case -EBUSY:
        case -EAGAIN:
        case -EINTR:
        case -ETIMEDOUT:
        case -ENOTDIR:
                return true;
        default:
                return false;
        }
}

static uint64_t serial_now(SerialTask *st) {
        return event_now_usec(st->event, CLOCK_MONOTONIC);
}

static const char *plural(uint64_t n, const char *one, const char *many) {
        return n == 1 ? one : many;
}

static bool line_is_blank(const char *line, size_t size) {
        for (size_t i = 0; i < size; i++)
                if (!strchr(" \t\r", line[i]) || line[i] == 0)
                        return false;
        return true;
}

/* ", N bytes of overlong lines skipped" for STATUS= and the closing line, or "" when none were:
 * what came after the first max_frame_bytes of each too_long reject is not stored anywhere. */
static const char *skipped_text(const SerialTask *st, char *buf, size_t size) {
        if (st->lines.discarded == 0)
                return "";
        snprintf(buf, size, ", %" PRIu64 " %s of overlong lines skipped", st->lines.discarded,
                 plural(st->lines.discarded, "byte", "bytes"));
        return buf;
}

static char parity_letter(SerialParity p) {
        static const char letters[_SERIAL_PARITY_MAX] = {
                [SERIAL_PARITY_NONE] = 'N', [SERIAL_PARITY_ODD] = 'O', [SERIAL_PARITY_EVEN] = 'E',
                [SERIAL_PARITY_MARK] = 'M', [SERIAL_PARITY_SPACE] = 'S',
        };

        return p >= 0 && p < _SERIAL_PARITY_MAX ? letters[p] : '?';
}

static const char *device(const SerialTask *st) {
        return st->config->device;
}

#define SERIAL_FIELDS(st) LOG_FIELDS("TASK", "serial", "DEVICE", device(st))

static void serial_fail(SerialTask *st, int error, const char *format, ...) _printf_(3, 4);
static int serial_arm_timer(SerialTask *st, sd_event_source **source, uint64_t usec,
                            sd_event_time_handler_t handler, const char *description);
static int on_idle_timer(sd_event_source *s, uint64_t usec, void *userdata);
static int on_reopen_timer(sd_event_source *s, uint64_t usec, void *userdata);
static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata);

static const IngestInput serial_input = {
        .task = "serial",
        .source = READING_SOURCE_SERIAL,
        .origin_field = "DEVICE",
        .reject_noun = "frame from",
        .suppressed_noun = "frames from",
        .suppressed_names_origin = true,
};

/* Stores a rejected line (and logs it, rate-limited). Returns 0, or the store's error (the
 * store has then reported its failure). */
static int serial_reject(SerialTask *st, const char *raw, size_t size, FrameReject reason, const char *sensor) {
        return ingest_reject(st->ingest, &(IngestReject){
                                                 .origin = device(st),
                                                 .raw = raw,
                                                 .raw_size = size,
                                                 .reason = reason,
                                                 .sensor = sensor,
                                                 .received_ms = st->received_ms,
                                         });
}

static void serial_close_port(SerialTask *st) {
        st->io_source = sd_event_source_disable_unref(st->io_source);
        if (st->idle_source)
                (void) sd_event_source_set_enabled(st->idle_source, SD_EVENT_OFF);
        if (st->port) {
                (void) sp_close(st->port);
                sp_free_port(st->port);
                st->port = NULL;
        }
}

/* The store failed (and said so): stop feeding it; the supervisor is stopping everything. */
static int serial_store_failed(SerialTask *st, int error) {
        log_full_errno_fields(LOG_DEBUG, error, SERIAL_FIELDS(st),
                              "Store refused a record, no longer reading '%s': %m", device(st));
        serial_close_port(st);
        if (st->reopen_source)
                (void) sd_event_source_set_enabled(st->reopen_source, SD_EVENT_OFF);
        st->state = PORT_IDLE;
        return error;
}

/* One line from the splitter: a frame to ingest, or a reject. Returns 0, or -errno when the
 * store failed (the port is closed then) or the task failed. */
static int serial_handle_line(SerialTask *st, const char *line, size_t size, bool overlong) {
        FrameReject reason = FRAME_REJECT_BAD_JSON;
        Frame frame = {};
        int r;

        if (overlong) {
                /* Handed out as soon as it passed max_frame_bytes, line end or not: stored and
                 * logged now. A '\r' inside, with lf, most likely means a device that ends its
                 * lines with CR only: say once which setting reads it. */
                if (!st->line_end_hinted && st->config->line_end == LINE_END_LF && memchr(line, '\r', size)) {
                        log_full_errno_fields(LOG_NOTICE, 0, SERIAL_FIELDS(st),
                                              "Serial port '%s' sent a line over %zu bytes with '\\r' in it; if the "
                                              "device ends lines with CR only, set serial.line_end to \"cr\" or \"any\".",
                                              device(st), st->config->max_frame_bytes);
                        st->line_end_hinted = true;
                }
                r = serial_reject(st, line, size, FRAME_REJECT_TOO_LONG, NULL);
        } else if (line_is_blank(line, size)) {
                /* Blank lines (many devices send "\r\n" between bursts) carry nothing. */
                st->empty_lines++;
                return 0;
        } else if ((r = frame_parse_line(st->config->format, st->config->checksum, line, size, &frame, &reason)) < 0) {
                if (r != -EBADMSG) {
                        /* Not a verdict on the line but a fault of ours (a format the serial
                         * parser does not take): no reason to store it under. */
                        serial_fail(st, r, "Failed to parse a line from serial port '%s'", device(st));
                        return r;
                }
                frame.sensor[SENSOR_ID_MAX] = 0;
                r = serial_reject(st, line, size, reason, frame.sensor[0] ? frame.sensor : NULL);
        } else {
                r = ingest_frame_raw(st->ingest, &frame, device(st), st->received_ms, line, size);
                if (r == INGEST_TOO_MANY_NAMES)
                        r = serial_reject(st, line, size, FRAME_REJECT_TOO_MANY_NAMES, frame.sensor);
        }
        if (r < 0)
                return serial_store_failed(st, r);
        return 0;
}

/* A partial line is pending when the port closes: keep it as a reject, never drop it. */
static int serial_flush_partial(SerialTask *st) {
        const char *line;
        size_t size;
        int r;

        /* received_ms stays that of the last read: when the partial line's last bytes came */
        if (!line_buffer_pending(&st->lines, &line, &size)) {
                line_buffer_reset(&st->lines);
                return 0;
        }
        /* an overlong line was stored when it passed max_frame_bytes, and is not pending; a tail
         * of max bytes and a '\r' that no "\n" followed is one byte over */
        if (st->lines.len > st->lines.max)
                r = serial_reject(st, line, size, FRAME_REJECT_TOO_LONG, NULL);
        else if (line_is_blank(line, size))
                r = 0;
        else
                r = serial_reject(st, line, size, FRAME_REJECT_TRUNCATED, NULL);
        line_buffer_reset(&st->lines);
        return r;
}

/* Reads one bounded chunk. Returns bytes read (0: nothing there, or end of file), or -errno
 * for a read error; a store failure is handled inside (state PORT_IDLE). */
static int serial_read_chunk(SerialTask *st) {
        char buf[SERIAL_READ_CHUNK];
        enum sp_return n;
        int r;

        n = sp_nonblocking_read(st->port, buf, sizeof(buf));
        if (n < 0)
                return serial_error(n);
        if (n == 0)
                return 0;
        st->last_data_usec = serial_now(st);
        if (st->idle_reopens > 0) {
                char span[32];

                log_full_errno_fields(LOG_INFO, 0, SERIAL_FIELDS(st), "Serial port '%s' delivers data again after %s.",
                                      device(st),
                                      format_timespan(span, sizeof(span), st->last_data_usec - st->silent_since_usec));
                st->idle_reopens = 0;
                task_report_running(st->task);
                ingest_input_up(st->ingest);
        }
        st->silent_since_usec = st->last_data_usec;
        st->received_ms = ingest_receipt_ms(st->ingest);
        line_buffer_put(&st->lines, buf, (size_t) n);
        for (;;) {
                const char *line;
                size_t size;
                bool overlong;

                if (line_buffer_next(&st->lines, &line, &size, &overlong) == 0)
                        break;
                r = serial_handle_line(st, line, size, overlong);
                if (r < 0) {
                        /* Nothing more is read (the store or the task failed): the rest of the
                         * chunk goes nowhere, and must not stay borrowed. */
                        line_buffer_reset(&st->lines);
                        break;
                }
        }
        return n;
}

static int serial_arm_timer(SerialTask *st, sd_event_source **source, uint64_t usec,
                            sd_event_time_handler_t handler, const char *description) {
        return event_arm_timer(st->event, source, usec, SERIAL_TIMER_ACCURACY_USEC, handler, st, description);
}

/* When no byte has come for idle_timeout + reopen_timeout, the idle timer fails the task. */
static uint64_t serial_silence_deadline(const SerialTask *st) {
        return st->silent_since_usec + st->config->idle_timeout_usec + st->config->reopen_timeout_usec;
}

/* Arms the idle timer for the next idle reopen or the silence deadline, whichever is first. */
static int serial_arm_idle(SerialTask *st) {
        if (st->config->idle_timeout_usec == 0)
                return 0;
        return serial_arm_timer(st, &st->idle_source,
                                MIN(st->last_data_usec + st->config->idle_timeout_usec, serial_silence_deadline(st)),
                                on_idle_timer, "serial-idle");
}

/* Applies every line setting from the configuration, one at a time, so that an error names
 * the setting. On failure returns -errno and writes what failed into problem. */
static int serial_configure(SerialTask *st, char *problem, size_t size) {
        static const enum sp_parity parities[_SERIAL_PARITY_MAX] = {
                [SERIAL_PARITY_NONE] = SP_PARITY_NONE, [SERIAL_PARITY_ODD] = SP_PARITY_ODD,
                [SERIAL_PARITY_EVEN] = SP_PARITY_EVEN, [SERIAL_PARITY_MARK] = SP_PARITY_MARK,
                [SERIAL_PARITY_SPACE] = SP_PARITY_SPACE,
        };
        static const enum sp_flowcontrol flows[_SERIAL_FLOW_CONTROL_MAX] = {
                [SERIAL_FLOW_CONTROL_NONE] = SP_FLOWCONTROL_NONE,
                [SERIAL_FLOW_CONTROL_XONXOFF] = SP_FLOWCONTROL_XONXOFF,
                [SERIAL_FLOW_CONTROL_RTSCTS] = SP_FLOWCONTROL_RTSCTS,
        };
        const SerialConfig *c = st->config;
        enum sp_return r;

        if (c->baud == 0 || c->baud > INT_MAX) {
                snprintf(problem, size, "invalid baud rate %" PRIu32, c->baud);
                return -EINVAL;
        }
        r = sp_set_baudrate(st->port, (int) c->baud);
        if (r < 0) {
                snprintf(problem, size, "cannot set %" PRIu32 " baud", c->baud);
                return serial_error(r);
        }
        r = sp_set_bits(st->port, (int) c->data_bits);
        if (r < 0) {
                snprintf(problem, size, "cannot set %u data bits", c->data_bits);
                return serial_error(r);
        }
        if (c->parity < 0 || c->parity >= _SERIAL_PARITY_MAX) {
                snprintf(problem, size, "invalid parity");
                return -EINVAL;
        }
        r = sp_set_parity(st->port, parities[c->parity]);
        if (r < 0) {
                snprintf(problem, size, "cannot set parity %s", strna(serial_parity_to_string(c->parity)));
                return serial_error(r);
        }
        r = sp_set_stopbits(st->port, (int) c->stop_bits);
        if (r < 0) {
                snprintf(problem, size, "cannot set %u stop bits", c->stop_bits);
                return serial_error(r);
        }
        if (c->flow_control < 0 || c->flow_control >= _SERIAL_FLOW_CONTROL_MAX) {
                snprintf(problem, size, "invalid flow control");
                return -EINVAL;
        }
        r = sp_set_flowcontrol(st->port, flows[c->flow_control]);
        if (r < 0) {
                snprintf(problem, size, "cannot set flow control %s",
                         strna(serial_flow_control_to_string(c->flow_control)));
                return serial_error(r);
        }
        /* Raise DTR, and RTS unless it does flow control: many adapters and sensor buses only
         * talk to a host that asserts them, and a previous user may have dropped them. Best
         * effort: some UARTs have no modem lines. */
        r = sp_set_dtr(st->port, SP_DTR_ON);
        if (r >= 0 && c->flow_control != SERIAL_FLOW_CONTROL_RTSCTS)
                r = sp_set_rts(st->port, SP_RTS_ON);
        if (r < 0)
                log_full_errno_fields(LOG_DEBUG, serial_error(r), SERIAL_FIELDS(st),
                                      "Failed to raise DTR/RTS on '%s', ignoring: %m", device(st));
        return 0;
}

/* libserialport 0.1.1 sets and clears CRTSCTS in c_iflag instead of c_cflag on Linux, so
 * hardware flow control is never switched on (nor off, when a previous user left it on).
 * Put it where the kernel looks. Returns 0 or -errno. */
static int serial_fix_rtscts(SerialTask *st, int fd, char *problem, size_t size) {
        bool want = st->config->flow_control == SERIAL_FLOW_CONTROL_RTSCTS;
        struct termios t;

        if (tcgetattr(fd, &t) < 0)
                goto fail;
        if (!!(t.c_cflag & CRTSCTS) == want && !(t.c_iflag & CRTSCTS))
                return 0;
        t.c_iflag &= ~(tcflag_t) CRTSCTS;
        if (want)
                t.c_cflag |= CRTSCTS;
        else
                t.c_cflag &= ~(tcflag_t) CRTSCTS;
        if (tcsetattr(fd, TCSANOW, &t) < 0)
                goto fail;
        return 0;
fail:
        snprintf(problem, size, "cannot %s hardware flow control", want ? "enable" : "disable");
        return -errno;
}

/* Finds the port by its name and opens it (st->port). Returns 0, or -errno with problem and
 * *ret_fatal as serial_open(). */
static int serial_open_port(SerialTask *st, bool *ret_fatal, char *problem, size_t size) {
        struct sp_port *port = NULL;
        enum sp_return sr;
        struct stat sb;
        int r;

        sr = sp_get_port_by_name(device(st), &port);
        if (sr < 0) {
                r = serial_error(sr);
                if (r == -ENOMEM) {
                        *ret_fatal = true;
                        snprintf(problem, size, "out of memory");
                        return r;
                }
                if (stat(device(st), &sb) < 0) {
                        r = -errno;
                        snprintf(problem, size, "not present");
                        return r;
                }
                /* It exists, but libserialport does not know it as a serial port: hopeless at
                 * start, but while an adapter re-enumerates the node can briefly outlive its
                 * sysfs entry, so after a loss keep trying. */
                snprintf(problem, size, "not a serial port (libserialport looks names up under /dev/ in /sys/class/tty/)");
                *ret_fatal = !st->ever_opened;
                return st->ever_opened ? -ENODEV : -ENOTTY;
        }
        sr = sp_open(port, SP_MODE_READ);
        if (sr < 0) {
                r = serial_error(sr);
                sp_free_port(port);
                snprintf(problem, size, "cannot open");
                *ret_fatal = !error_is_transient(r);
                return r;
        }
        st->port = port;
        return 0;
}

/* Opens and configures the port and starts watching it. An idle reopen keeps counting the
 * silence; any other open starts it afresh. Returns 0, or -errno with a short description in
 * problem and *ret_fatal set when reopening cannot help. Logs nothing. */
static int serial_open(SerialTask *st, bool idle_reopen, bool *ret_fatal, char *problem, size_t size) {
        enum sp_return sr;
        int fd = -EBADF, r;

        *ret_fatal = false;
        r = serial_open_port(st, ret_fatal, problem, size);
        if (r < 0)
                return r;

        sr = sp_get_port_handle(st->port, &fd);
        r = sr < 0 ? serial_error(sr) : fd < 0 ? -EBADF : 0;
        if (r < 0)
                snprintf(problem, size, "no file descriptor");
        if (r >= 0)
                r = serial_configure(st, problem, size);
        if (r >= 0)
                r = serial_fix_rtscts(st, fd, problem, size);
        if (r >= 0) {
                /* libserialport 0.1.1 opens without O_CLOEXEC (and with O_NONBLOCK, which the
                 * reads rely on); nothing we start may inherit the port. */
                if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 || fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
                        r = -errno;
                        snprintf(problem, size, "cannot set descriptor flags");
                }
        }
        if (r >= 0) {
                r = sd_event_add_io(st->event, &st->io_source, fd, EPOLLIN, on_io, st);
                if (r < 0)
                        snprintf(problem, size, "cannot watch the descriptor");
                else
                        (void) sd_event_source_set_description(st->io_source, "serial-io");
        }
        if (r < 0) {
                *ret_fatal = !error_is_transient(r);
                serial_close_port(st);
                return r;
        }

        /* Other programs (a modem manager probing new ttys, a second collector) must not read
         * our bytes. Best effort: root can still open it. */
        if (ioctl(fd, TIOCEXCL) < 0)
                log_full_errno_fields(LOG_DEBUG, errno, SERIAL_FIELDS(st),
                                      "Failed to get exclusive access to '%s', ignoring: %m", device(st));

        st->state = PORT_OPEN;
        st->ever_opened = true;
        st->last_data_usec = serial_now(st);
        backoff_up(&st->backoff, st->last_data_usec);
        if (!idle_reopen) {
                st->silent_since_usec = st->last_data_usec;
                st->idle_reopens = 0;
        }
        r = serial_arm_idle(st);
        if (r < 0)
                log_full_errno_fields(LOG_WARNING, r, SERIAL_FIELDS(st),
                                      "Failed to arm the idle timer for '%s', ignoring: %m", device(st));
        return 0;
}

static void serial_log_opened(SerialTask *st, const char *verb, const char *suffix) {
        log_full_errno_fields(LOG_INFO, 0, SERIAL_FIELDS(st),
                              "%s serial port '%s' at %" PRIu32 " baud, %u%c%u, flow control %s%s%s.", verb,
                              device(st), st->config->baud, st->config->data_bits,
                              parity_letter(st->config->parity), st->config->stop_bits,
                              strna(serial_flow_control_to_string(st->config->flow_control)), suffix ? ", " : "",
                              strempty(suffix));
}

static void serial_fail(SerialTask *st, int error, const char *format, ...) {
        va_list ap;

        serial_close_port(st);
        if (st->reopen_source)
                (void) sd_event_source_set_enabled(st->reopen_source, SD_EVENT_OFF);
        st->state = PORT_DONE;
        va_start(ap, format);
        task_report_failurev(st->task, error, format, ap);
        va_end(ap);
}

static void serial_report_degraded(SerialTask *st) {
        char cause[256];

        snprintf(cause, sizeof(cause), "%s %s (attempt %u)", st->ever_opened ? "reopening" : "waiting for",
                 device(st), st->attempts + 1);
        task_report_degraded(st->task, cause);
        ingest_input_down(st->ingest, st->ever_opened ? "port gone" : "port missing at start");
}

/* Arms the next reopen attempt by the backoff policy (jitter, so that gateways that lost power
 * together do not hammer a shared bus in step; the last attempt when the budget runs out).
 * Returns 0 (armed, or the task failed), or -ETIMEDOUT: reopen_timeout is spent. */
static int serial_schedule_reopen(SerialTask *st) {
        uint64_t at;
        int r;

        r = backoff_next(&st->backoff, serial_now(st), backoff_random(), &at);
        if (r < 0)
                return r;
        r = serial_arm_timer(st, &st->reopen_source, at, on_reopen_timer, "serial-reopen");
        if (r < 0) {
                serial_fail(st, r, "Failed to arm the reopen timer for serial port '%s'", device(st));
                return 0;
        }
        st->state = PORT_REOPENING;
        serial_report_degraded(st);
        return 0;
}

/* Starts the reopen cycle after the port went away (or was missing at start). */
static void serial_begin_reopen(SerialTask *st) {
        st->attempts = 0;
        if (serial_schedule_reopen(st) < 0)
                serial_fail(st, -ETIMEDOUT, "Serial port '%s' gone, and reopen_timeout is zero", device(st));
}

/* The adapter went away, or reading failed: close, keep what was pending, try to get it back. */
static void serial_port_lost(SerialTask *st, int error, const char *what) {
        char span[32];
        int r;

        r = serial_flush_partial(st);
        if (r < 0) {
                (void) serial_store_failed(st, r);
                return;
        }
        serial_close_port(st);
        snprintf(st->last_problem, sizeof(st->last_problem), "%s%s%s", what, error != 0 ? ": " : "",
                 error != 0 ? strerror(-error) : "");
        log_full_errno_fields(LOG_WARNING, error, SERIAL_FIELDS(st),
                              error != 0 ? "Serial port '%s' %s: %m; reopening, giving up after %s."
                                         : "Serial port '%s' %s; reopening, giving up after %s.",
                              device(st), what,
                              format_timespan(span, sizeof(span), st->config->reopen_timeout_usec));
        serial_begin_reopen(st);
}

static int on_reopen_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        SerialTask *st = userdata;
        char problem[160], span[32];
        bool fatal, had_opened = st->ever_opened;
        uint64_t outage;
        int r;

        (void) s;
        (void) usec;
        if (st->state != PORT_REOPENING)
                return 0;

        st->attempts++;
        /* Before the open: a successful one ends the outage. */
        outage = backoff_outage_usec(&st->backoff, serial_now(st));
        r = serial_open(st, false, &fatal, problem, sizeof(problem));
        if (r >= 0) {
                char suffix[80];

                if (had_opened)
                        st->reopens++;
                snprintf(suffix, sizeof(suffix), "after %s (%u %s)", format_timespan(span, sizeof(span), outage),
                         st->attempts,
                         plural(st->attempts, "attempt", "attempts"));
                serial_log_opened(st, had_opened ? "Reopened" : "Opened", suffix);
                task_report_running(st->task);
                ingest_input_up(st->ingest);
                return 0;
        }
        if (fatal) {
                serial_fail(st, r, "Serial port '%s': %s", device(st), problem);
                return 0;
        }
        log_full_errno_fields(LOG_DEBUG, r, SERIAL_FIELDS(st), "Serial port '%s' still unavailable (%s): %m",
                              device(st), problem);
        if (serial_schedule_reopen(st) < 0)
                serial_fail(st, r, "Serial port '%s' %s for %s (%u %s to open it; last: %s)", device(st),
                            had_opened ? "gone" : "not available",
                            format_timespan(span, sizeof(span), outage), st->attempts,
                            plural(st->attempts, "attempt", "attempts"), problem);
        return 0;
}

static void serial_report_silent(SerialTask *st, uint64_t now) {
        char cause[256], span[32];

        snprintf(cause, sizeof(cause), "no data from %s for %s (%u idle %s)", device(st),
                 format_timespan(span, sizeof(span), now - st->silent_since_usec), st->idle_reopens,
                 plural(st->idle_reopens, "reopen", "reopens"));
        task_report_degraded(st->task, cause);
        ingest_input_down(st->ingest, "no data (idle timeout)");
}

/* No byte for idle_timeout: reopen the port, and report degraded until a byte comes. No byte
 * for idle_timeout + reopen_timeout (counted from the last byte or the last open that was not
 * an idle reopen): fail, like a port that does not come back. */
static int on_idle_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        SerialTask *st = userdata;
        uint64_t idle = st->config->idle_timeout_usec, now = serial_now(st);
        char span[32], limit[32], problem[160];
        bool fatal;
        int r;

        (void) s;
        (void) usec;
        if (st->state != PORT_OPEN || idle == 0)
                return 0;
        if (now >= serial_silence_deadline(st)) {
                /* Nothing should be pending (a byte restarts the clock, each reopen flushed),
                 * but a line is never dropped. */
                r = serial_flush_partial(st);
                if (r < 0) {
                        (void) serial_store_failed(st, r);
                        return 0;
                }
                serial_fail(st, -ENODATA, "No data from serial port '%s' for %s (%u idle %s)", device(st),
                            format_timespan(span, sizeof(span), now - st->silent_since_usec), st->idle_reopens,
                            plural(st->idle_reopens, "reopen", "reopens"));
                return 0;
        }
        if (now < st->last_data_usec + idle) {
                r = serial_arm_idle(st);
                if (r < 0)
                        log_full_errno_fields(LOG_WARNING, r, SERIAL_FIELDS(st),
                                              "Failed to re-arm the idle timer for '%s', ignoring: %m", device(st));
                return 0;
        }

        /* A wedged USB adapter often talks again after a close and open. */
        log_full_errno_fields(LOG_WARNING, 0, SERIAL_FIELDS(st),
                              "No data from serial port '%s' for %s, reopening it (giving up after %s without data).",
                              device(st), format_timespan(span, sizeof(span), now - st->silent_since_usec),
                              format_timespan(limit, sizeof(limit), idle + st->config->reopen_timeout_usec));
        r = serial_flush_partial(st);
        if (r < 0) {
                (void) serial_store_failed(st, r);
                return 0;
        }
        serial_close_port(st);
        r = serial_open(st, true, &fatal, problem, sizeof(problem));
        if (r >= 0) {
                st->reopens++;
                st->idle_reopens++;
                serial_log_opened(st, "Reopened", "after it was idle");
                serial_report_silent(st, now);
                return 0;
        }
        if (fatal) {
                serial_fail(st, r, "Serial port '%s': %s", device(st), problem);
                return 0;
        }
        snprintf(st->last_problem, sizeof(st->last_problem), "did not reopen (%s): %s", problem, strerror(-r));
        log_full_errno_fields(LOG_WARNING, r, SERIAL_FIELDS(st),
                              "Serial port '%s' did not reopen (%s): %m; retrying, giving up after %s.",
                              device(st), problem, format_timespan(span, sizeof(span), st->config->reopen_timeout_usec));
        serial_begin_reopen(st);
        return 0;
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        SerialTask *st = userdata;
        int n;

        (void) s;
        (void) fd;
        if (st->state != PORT_OPEN)
                return 0;

        /* Read first even on a hangup: what arrived before it is still in the buffer. */
        n = serial_read_chunk(st);
        if (st->state != PORT_OPEN)
                return 0; /* the store failed */
        if (n < 0) {
                serial_port_lost(st, n, "failed to read");
                return 0;
        }
        /* sp_nonblocking_read() returns 0 both for "nothing yet" and for end of file; only the
         * poll flags tell them apart. */
        if (n == 0 && (revents & (EPOLLHUP | EPOLLERR)))
                serial_port_lost(st, 0, "hung up (adapter unplugged?)");
        return 0;
}

static int serial_task_start(Task *t) {
        SerialTask *st = task_get_userdata(t);
        char problem[160], span[32];
        bool fatal;
        int r;

        r = serial_open(st, false, &fatal, problem, sizeof(problem));
        if (r >= 0) {
                serial_log_opened(st, "Opened", NULL);
                task_report_running(t);
                return 0;
        }
        if (fatal) {
                serial_fail(st, r, "Serial port '%s': %s", device(st), problem);
                return 0; /* reported with its cause */
        }
        /* The same as losing it later: an adapter plugged in after boot, or still settling. */
        log_full_errno_fields(LOG_WARNING, r, SERIAL_FIELDS(st),
                              "Serial port '%s' not available (%s): %m; waiting for it, giving up after %s.",
                              device(st), problem, format_timespan(span, sizeof(span), st->config->reopen_timeout_usec));
        serial_begin_reopen(st);
        return 0;
}

static int serial_task_stop(Task *t) {
        SerialTask *st = task_get_userdata(t);
        bool was_open = st->state == PORT_OPEN;

        if (st->state == PORT_DONE) {
                /* failed: the port is closed already */
                ingest_flush_log(st->ingest);
                return 0;
        }
        if (was_open) {
                /* Bytes already in the port's buffer arrived: take them, boundedly. */
                for (size_t total = 0; st->state == PORT_OPEN && total < SERIAL_STOP_DRAIN_MAX;) {
                        int n = serial_read_chunk(st);
                        if (n <= 0)
                                break;
                        total += (size_t) n;
                }
        }
        if (st->state != PORT_IDLE)
                (void) serial_flush_partial(st);
        serial_close_port(st);
        st->reopen_source = sd_event_source_disable_unref(st->reopen_source);
        st->idle_source = sd_event_source_disable_unref(st->idle_source);
        st->state = PORT_DONE;
        ingest_flush_log(st->ingest);
        if (was_open) {
                const IngestCounters *n = ingest_get_counters(st->ingest);

                char skipped[64];

                log_full_errno_fields(LOG_INFO, 0, SERIAL_FIELDS(st),
                                      "Closed serial port '%s' (%" PRIu64 " %s, %" PRIu64 " %s, %" PRIu64 " %s, %" PRIu64
                                      " blank %s, %" PRIu64 " %s%s).",
                                      device(st), n->frames, plural(n->frames, "frame", "frames"), n->readings,
                                      plural(n->readings, "reading", "readings"), n->rejects,
                                      plural(n->rejects, "reject", "rejects"), st->empty_lines,
                                      plural(st->empty_lines, "line", "lines"), st->reopens,
                                      plural(st->reopens, "reopen", "reopens"),
                                      skipped_text(st, skipped, sizeof(skipped)));
        }
        return 0;
}

static void serial_task_format_status(Task *t, char *buf, size_t size) {
        SerialTask *st = task_get_userdata(t);
        char counters[160], skipped[64];

        const IngestCounters *n = ingest_get_counters(st->ingest);

        snprintf(counters, sizeof(counters), "%" PRIu64 " %s, %" PRIu64 " %s, %" PRIu64 " %s%s", n->frames,
                 plural(n->frames, "frame", "frames"), n->rejects, plural(n->rejects, "reject", "rejects"),
                 st->reopens, plural(st->reopens, "reopen", "reopens"), skipped_text(st, skipped, sizeof(skipped)));
        switch (st->state) {
        case PORT_OPEN:
                if (st->idle_reopens > 0) {
                        char span[32];

                        snprintf(buf, size, "no data from %s for %s (%u idle %s), %s", device(st),
                                 format_timespan(span, sizeof(span), serial_now(st) - st->silent_since_usec),
                                 st->idle_reopens, plural(st->idle_reopens, "reopen", "reopens"), counters);
                } else
                        snprintf(buf, size, "running on %s, %s", device(st), counters);
                break;
        case PORT_REOPENING:
                snprintf(buf, size, "%s %s (attempt %u), %s", st->ever_opened ? "reopening" : "waiting for",
                         device(st), st->attempts + 1, counters);
                break;
        case PORT_NEW:
                snprintf(buf, size, "opening %s", device(st));
                break;
        case PORT_IDLE:
                snprintf(buf, size, "not reading %s (store failed), %s", device(st), counters);
                break;
        case PORT_DONE:
                snprintf(buf, size, "closed %s, %s", device(st), counters);
                break;
        }
}

static void serial_task_get_info(Task *t, TaskInfo *ret) {
        SerialTask *st = task_get_userdata(t);
        const IngestCounters *n = ingest_get_counters(st->ingest);

        *ret = (TaskInfo){ .origin = device(st), .frames = n->frames, .readings = n->readings,
                           .rejects = n->rejects, .reconnects = st->reopens,
                           .last_error = st->last_problem[0] ? st->last_problem : NULL };
        ingest_get_last_minute(st->ingest, &ret->readings_last_minute, &ret->rejects_last_minute);
}

static void serial_task_free(void *userdata) {
        SerialTask *st = userdata;

        if (!st)
                return;
        serial_close_port(st);
        sd_event_source_disable_unref(st->reopen_source);
        sd_event_source_disable_unref(st->idle_source);
        ingest_free(st->ingest);
        line_buffer_done(&st->lines);
        sd_event_unref(st->event);
        free(st);
}

static const TaskOps serial_task_ops = {
        .name = "serial",
        .exit_status = EXIT_STATUS_SERIAL,
        .start = serial_task_start,
        .stop = serial_task_stop,
        .free = serial_task_free,
        .format_status = serial_task_format_status,
        .get_info = serial_task_get_info,
};

int serial_task_new(sd_event *e, const SerialConfig *config, Store *store, Clock *clock, Sensors *sensors, Task **ret) {
        SerialTask *st;
        Task *t;
        int r;

        assert(e && config && config->device && ret);

        st = calloc(1, sizeof(*st));
        if (!st)
                return -ENOMEM;
        st->event = sd_event_ref(e);
        st->config = config;
        st->state = PORT_NEW;
        st->backoff_policy = (BackoffPolicy){
                .initial_usec = SERIAL_BACKOFF_INITIAL_USEC,
                .max_usec = SERIAL_BACKOFF_MAX_USEC,
                .budget_usec = config->reopen_timeout_usec,
        };
        backoff_init(&st->backoff, &st->backoff_policy);

        r = ingest_new(e, store, clock, &serial_input, &st->ingest);
        if (r >= 0)
                ingest_set_sensors(st->ingest, sensors);
        if (r >= 0)
                r = line_buffer_init(&st->lines, config->max_frame_bytes, config->line_end);
        if (r < 0) {
                serial_task_free(st);
                return r;
        }
        r = task_new(&serial_task_ops, st, &t); /* owns st from here, also on failure */
        if (r < 0)
                return r;
        st->task = t;
        *ret = t;
        return 0;
}
