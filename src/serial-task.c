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

#include "collector/frame.h"
#include "collector/log.h"
#include "collector/serial-task.h"
#include "collector/exit-status.h"
#include "collector/time-util.h"

/* Bytes read per loop iteration: a bounded amount of work per dispatch. At 115200 baud a port
 * delivers about 11.5 KiB/s, so this keeps up with a few wakeups a second. */
#define SERIAL_READ_CHUNK 4096
/* What stop() still reads from the port's buffer before closing it, at most. */
#define SERIAL_STOP_DRAIN_MAX (64 * 1024)
#define SERIAL_BACKOFF_INITIAL_USEC (100 * USEC_PER_MSEC)
#define SERIAL_BACKOFF_MAX_USEC (5 * USEC_PER_SEC)
#define SERIAL_TIMER_ACCURACY_USEC (1 * USEC_PER_MSEC)
#define SERIAL_REJECT_LOG_INTERVAL_USEC (10 * USEC_PER_SEC)
#define SERIAL_REJECT_LOG_BURST 10
/* Bytes of a rejected line shown in its log message (escaped). */
#define SERIAL_EXCERPT_MAX 64

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
        Store *store;                 /* borrowed, outlives the task */

        struct sp_port *port;         /* NULL when closed */
        sd_event_source *io_source;
        sd_event_source *reopen_source;
        sd_event_source *idle_source;
        sd_event_source *suppressed_source;   /* reports rejects kept out of the log */

        PortState state;
        bool ever_opened;
        LineBuffer lines;
        int64_t received_ms;          /* receipt time of the bytes being split into lines */

        uint64_t lost_usec;           /* CLOCK_MONOTONIC when the port went away */
        uint64_t backoff_usec;
        unsigned attempts;            /* reopen attempts since it went away */
        uint64_t last_data_usec;      /* CLOCK_MONOTONIC of the last byte (or of the open) */
        uint64_t silent_since_usec;   /* of the last byte, or of the open at start or after a loss:
                                       * idle reopens do not restart it */
        unsigned idle_reopens;        /* idle reopens since the last byte */
        uint64_t rng;

        RateLimit reject_ratelimit;
        uint64_t frames;
        uint64_t readings;
        uint64_t rejects;
        uint64_t empty_lines;
        uint64_t reopens;
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

/* Receipt time of what this loop iteration read. */
static int64_t serial_wall_clock_ms(SerialTask *st) {
        return (int64_t) (event_now_usec(st->event, CLOCK_REALTIME) / USEC_PER_MSEC);
}

static const char *plural(uint64_t n, const char *one, const char *many) {
        return n == 1 ? one : many;
}

/* xorshift64*: jitter only, not security. */
static uint64_t serial_random(SerialTask *st) {
        st->rng ^= st->rng >> 12;
        st->rng ^= st->rng << 25;
        st->rng ^= st->rng >> 27;
        return st->rng * UINT64_C(2685821657736338717);
}

/* Printable excerpt of raw bytes for a log line: non-printables as \xHH, cut with "...". */
static const char *format_excerpt(char *buf, size_t size, const char *raw, size_t raw_size) {
        size_t used = 0;

        assert(size >= 8);
        for (size_t i = 0; i < raw_size; i++) {
                unsigned char c = (unsigned char) raw[i];
                char one[5];
                size_t k;

                if (c >= 0x20 && c < 0x7f && c != '\\')
                        one[0] = (char) c, one[1] = 0;
                else
                        snprintf(one, sizeof(one), "\\x%02x", c);
                k = strlen(one);
                if (i >= SERIAL_EXCERPT_MAX || used + k + 4 > size) {
                        memcpy(buf + used, "...", 4);
                        return buf;
                }
                memcpy(buf + used, one, k);
                used += k;
        }
        buf[used] = 0;
        return buf;
}

static bool line_is_blank(const char *line, size_t size) {
        for (size_t i = 0; i < size; i++)
                if (!strchr(" \t\r", line[i]) || line[i] == 0)
                        return false;
        return true;
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

/* Says how many reject messages the rate limit kept out of the log, if any. */
static void serial_report_suppressed(SerialTask *st) {
        if (st->reject_ratelimit.suppressed == 0)
                return;
        log_full_errno_fields(LOG_WARNING, 0, SERIAL_FIELDS(st),
                              "Suppressed %u messages about rejected frames from '%s'.",
                              st->reject_ratelimit.suppressed, device(st));
        st->reject_ratelimit.suppressed = 0;
}

/* The rate limit's interval is over: a burst of rejects followed by silence is accounted for
 * now, not whenever the next reject happens to come. */
static int on_suppressed_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) s;
        (void) usec;
        serial_report_suppressed(userdata);
        return 0;
}

/* Stores a rejected line and tells about it, rate-limited. Returns 0, or the store's error
 * (the store has then reported its failure). */
static int serial_reject(SerialTask *st, const char *raw, size_t size, FrameReject reason, const char *sensor) {
        Reject rj = {
                .received_ms = st->received_ms,
                .source = READING_SOURCE_SERIAL,
                .origin = device(st),
                .raw = raw,
                .raw_size = size,
                .reason = reason,
        };
        unsigned suppressed;

        st->rejects++;
        if (ratelimit_below(&st->reject_ratelimit, &suppressed)) {
                char excerpt[SERIAL_EXCERPT_MAX * 4 + 8];

                if (suppressed > 0)
                        log_full_errno_fields(LOG_WARNING, 0, SERIAL_FIELDS(st),
                                              "Suppressed %u messages about rejected frames from '%s'.",
                                              suppressed, device(st));
                log_full_errno_fields(LOG_WARNING, 0,
                                      LOG_FIELDS("TASK", "serial", "DEVICE", device(st), "SENSOR_ID", sensor),
                                      "Rejected frame from '%s' (%s, %zu bytes): \"%s\"", device(st),
                                      strna(frame_reject_to_string(reason)), size,
                                      format_excerpt(excerpt, sizeof(excerpt), raw, size));
        } else if (st->reject_ratelimit.suppressed == 1) {
                /* The first one kept back: report them when the interval ends (the rate limit
                 * runs on CLOCK_MONOTONIC too). */
                int r = serial_arm_timer(st, &st->suppressed_source,
                                         st->reject_ratelimit.begin_usec + st->reject_ratelimit.interval_usec,
                                         on_suppressed_timer, "serial-suppressed");
                if (r < 0)
                        log_full_errno_fields(LOG_DEBUG, r, SERIAL_FIELDS(st),
                                              "Failed to arm the timer for suppressed messages, ignoring: %m");
        }
        return store_append_reject(st->store, &rj);
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

static int serial_handle_line(const char *line, size_t size, bool overlong, void *userdata) {
        SerialTask *st = userdata;
        FrameReject reason = FRAME_REJECT_BAD_JSON;
        Frame frame = {};
        int r;

        if (overlong)
                r = serial_reject(st, line, size, FRAME_REJECT_TOO_LONG, NULL);
        else if (line_is_blank(line, size)) {
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
                st->frames++;
                r = 0;
                for (size_t i = 0; i < frame.n_metrics && r >= 0; i++) {
                        Reading rd = {
                                .sensor = frame.sensor,
                                .metric = frame.metrics[i].name,
                                .value = frame.metrics[i].value,
                                .ts_ms = frame.has_ts ? frame.ts_ms : st->received_ms,
                                .sensor_ts = frame.has_ts,
                                .received_ms = st->received_ms,
                                .source = READING_SOURCE_SERIAL,
                                .origin = device(st),
                        };

                        r = store_append(st->store, &rd);
                        if (r >= 0)
                                st->readings++;
                }
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
        if (st->lines.discarding || st->lines.len > st->lines.max)
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
        }
        st->silent_since_usec = st->last_data_usec;
        st->received_ms = serial_wall_clock_ms(st);
        r = line_buffer_feed(&st->lines, buf, (size_t) n, serial_handle_line, st);
        if (r < 0 && st->state == PORT_OPEN)
                (void) serial_store_failed(st, r);
        return n;
}

/* Arms a one-shot CLOCK_MONOTONIC timer at usec, creating it on first use. */
static int serial_arm_timer(SerialTask *st, sd_event_source **source, uint64_t usec,
                            sd_event_time_handler_t handler, const char *description) {
        int r;

        if (!*source) {
                r = sd_event_add_time(st->event, source, CLOCK_MONOTONIC, usec, SERIAL_TIMER_ACCURACY_USEC,
                                      handler, st);
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

/* Opens and configures the port and starts watching it. An idle reopen keeps counting the
 * silence; any other open starts it afresh. Returns 0, or -errno with a short description in
 * problem and *ret_fatal set when reopening cannot help. Logs nothing. */
static int serial_open(SerialTask *st, bool idle_reopen, bool *ret_fatal, char *problem, size_t size) {
        struct sp_port *port = NULL;
        enum sp_return sr;
        int fd = -EBADF, r;

        *ret_fatal = false;
        sr = sp_get_port_by_name(device(st), &port);
        if (sr < 0) {
                struct stat sb;

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
        st->port = port;

        sr = sp_open(st->port, SP_MODE_READ);
        if (sr < 0) {
                r = serial_error(sr);
                sp_free_port(st->port);
                st->port = NULL;
                snprintf(problem, size, "cannot open");
                *ret_fatal = !error_is_transient(r);
                return r;
        }

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
}

/* Arms the next reopen attempt: exponential backoff with jitter, never past the deadline, so
 * that the last attempt happens when the budget runs out. */
static void serial_schedule_reopen(SerialTask *st) {
        uint64_t now = serial_now(st), deadline, delay, at;
        int r;

        deadline = st->lost_usec + st->config->reopen_timeout_usec;
        /* Equal jitter: between half and all of the backoff, so that gateways that lost
         * power together do not hammer a shared bus in step. */
        delay = st->backoff_usec / 2 + serial_random(st) % (st->backoff_usec / 2 + 1);
        at = MIN(now + delay, MAX(deadline, now));
        st->backoff_usec = MIN(st->backoff_usec * 2, SERIAL_BACKOFF_MAX_USEC);

        r = serial_arm_timer(st, &st->reopen_source, at, on_reopen_timer, "serial-reopen");
        if (r < 0) {
                serial_fail(st, r, "Failed to arm the reopen timer for serial port '%s'", device(st));
                return;
        }
        st->state = PORT_REOPENING;
        serial_report_degraded(st);
}

/* Starts the reopen cycle after the port went away (or was missing at start). */
static void serial_begin_reopen(SerialTask *st) {
        st->lost_usec = serial_now(st);
        st->attempts = 0;
        st->backoff_usec = SERIAL_BACKOFF_INITIAL_USEC;
        serial_schedule_reopen(st);
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
        uint64_t now;
        int r;

        (void) s;
        (void) usec;
        if (st->state != PORT_REOPENING)
                return 0;

        st->attempts++;
        r = serial_open(st, false, &fatal, problem, sizeof(problem));
        now = serial_now(st);
        if (r >= 0) {
                char suffix[80];

                if (had_opened)
                        st->reopens++;
                snprintf(suffix, sizeof(suffix), "after %s (%u %s)",
                         format_timespan(span, sizeof(span), now - st->lost_usec), st->attempts,
                         plural(st->attempts, "attempt", "attempts"));
                serial_log_opened(st, had_opened ? "Reopened" : "Opened", suffix);
                st->lost_usec = 0;
                task_report_running(st->task);
                return 0;
        }
        if (fatal) {
                serial_fail(st, r, "Serial port '%s': %s", device(st), problem);
                return 0;
        }
        if (now >= st->lost_usec + st->config->reopen_timeout_usec) {
                serial_fail(st, r, "Serial port '%s' %s for %s (%u %s to open it; last: %s)", device(st),
                            had_opened ? "gone" : "not available", format_timespan(span, sizeof(span), now - st->lost_usec),
                            st->attempts, plural(st->attempts, "attempt", "attempts"), problem);
                return 0;
        }
        log_full_errno_fields(LOG_DEBUG, r, SERIAL_FIELDS(st), "Serial port '%s' still unavailable (%s): %m",
                              device(st), problem);
        serial_schedule_reopen(st);
        return 0;
}

static void serial_report_silent(SerialTask *st, uint64_t now) {
        char cause[256], span[32];

        snprintf(cause, sizeof(cause), "no data from %s for %s (%u idle %s)", device(st),
                 format_timespan(span, sizeof(span), now - st->silent_since_usec), st->idle_reopens,
                 plural(st->idle_reopens, "reopen", "reopens"));
        task_report_degraded(st->task, cause);
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
                return r;
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
                serial_report_suppressed(st);
                st->suppressed_source = sd_event_source_disable_unref(st->suppressed_source);
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
        serial_report_suppressed(st);
        st->suppressed_source = sd_event_source_disable_unref(st->suppressed_source);
        if (was_open)
                log_full_errno_fields(LOG_INFO, 0, SERIAL_FIELDS(st),
                                      "Closed serial port '%s' (%" PRIu64 " %s, %" PRIu64 " %s, %" PRIu64 " %s, %" PRIu64
                                      " blank %s, %" PRIu64 " %s).",
                                      device(st), st->frames, plural(st->frames, "frame", "frames"), st->readings,
                                      plural(st->readings, "reading", "readings"), st->rejects,
                                      plural(st->rejects, "reject", "rejects"), st->empty_lines,
                                      plural(st->empty_lines, "line", "lines"), st->reopens,
                                      plural(st->reopens, "reopen", "reopens"));
        return 0;
}

static void serial_task_format_status(Task *t, char *buf, size_t size) {
        SerialTask *st = task_get_userdata(t);
        char counters[160];

        snprintf(counters, sizeof(counters), "%" PRIu64 " %s, %" PRIu64 " %s, %" PRIu64 " %s", st->frames,
                 plural(st->frames, "frame", "frames"), st->rejects, plural(st->rejects, "reject", "rejects"),
                 st->reopens, plural(st->reopens, "reopen", "reopens"));
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

static void serial_task_free(void *userdata) {
        SerialTask *st = userdata;

        if (!st)
                return;
        serial_close_port(st);
        sd_event_source_disable_unref(st->reopen_source);
        sd_event_source_disable_unref(st->idle_source);
        sd_event_source_disable_unref(st->suppressed_source);
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
};

int serial_task_new(sd_event *e, const SerialConfig *config, Store *store, Task **ret) {
        SerialTask *st;
        Task *t;
        int r;

        assert(e && config && config->device && ret);

        st = calloc(1, sizeof(*st));
        if (!st)
                return -ENOMEM;
        st->event = sd_event_ref(e);
        st->config = config;
        st->store = store;
        st->state = PORT_NEW;
        st->reject_ratelimit = RATELIMIT_INIT(SERIAL_REJECT_LOG_INTERVAL_USEC, SERIAL_REJECT_LOG_BURST);
        st->rng = (serial_now(st) ^ ((uint64_t) getpid() << 32) ^ (uint64_t) (uintptr_t) st) | 1;

        r = line_buffer_init(&st->lines, config->max_frame_bytes);
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
