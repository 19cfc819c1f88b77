/* SPDX-License-Identifier: MIT */
/* sc-simulate: a greenhouse of simulated sensors that writes frames to a serial port and/or
 * publishes them to an MQTT broker, for sensor-collector's demos, benchmarks and soak tests. */

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>

#include <mosquitto.h>

#include "collector/macro.h"

/* This is a developer tool, not the daemon: it is a plain program with its own poll() loop and
 * drives libmosquitto with mosquitto_loop_read/write/misc on that loop. */

#define EXIT_USAGE 64

#define SIM_SENSOR_ID_MAX 64
#define SIM_BATCH_FRAMES 512                  /* frames per loop iteration at most */
#define SIM_SERIAL_CHUNK (64 * 1024)          /* write() size we aim for when rate is 0 */
#define SIM_CATCH_UP_USEC USEC_PER_SEC        /* behind schedule by more: skip, do not burst */
#define SIM_BACKOFF_MIN_USEC (50 * USEC_PER_MSEC)
#define SIM_SERIAL_BACKOFF_MAX_USEC (2 * USEC_PER_SEC)
#define SIM_MQTT_BACKOFF_MAX_USEC (5 * USEC_PER_SEC)
#define SIM_CONNECT_TIMEOUT_USEC (5 * USEC_PER_SEC)
#define SIM_MISC_INTERVAL_USEC (250 * USEC_PER_MSEC)

typedef uint64_t usec_t;

typedef enum Metric {
        METRIC_TEMPERATURE,
        METRIC_HUMIDITY,
        METRIC_SOIL_MOISTURE,
        METRIC_CO2,
        METRIC_LIGHT,
        _METRIC_MAX,
} Metric;

static const struct MetricInfo {
        const char *name;
        int decimals;
        double min, max;
} metric_info[_METRIC_MAX] = {
        [METRIC_TEMPERATURE]   = { "temperature",   2, 18.0, 30.0 },
        [METRIC_HUMIDITY]      = { "humidity",      1, 40.0, 90.0 },
        [METRIC_SOIL_MOISTURE] = { "soil_moisture", 1, 10.0, 70.0 },
        [METRIC_CO2]           = { "co2",           0, 400.0, 1500.0 },
        [METRIC_LIGHT]         = { "light",         0, 0.0, 60000.0 },
};

typedef enum BadKind {
        BAD_GARBAGE,
        BAD_OVERLONG,
        BAD_CHECKSUM,
        BAD_NOT_FINITE,
        BAD_MISSING_SENSOR,
        BAD_UTF8,
        _BAD_MAX,
} BadKind;

static const char *const bad_kind_name[_BAD_MAX] = {
        [BAD_GARBAGE] = "garbage",
        [BAD_OVERLONG] = "overlong",
        [BAD_CHECKSUM] = "bad_checksum",
        [BAD_NOT_FINITE] = "not_finite",
        [BAD_MISSING_SENSOR] = "missing_sensor",
        [BAD_UTF8] = "bad_utf8",
};

typedef enum Format {
        FORMAT_JSON,
        FORMAT_KV,
        FORMAT_VALUE,
        FORMAT_COLLECTD,
} Format;

typedef enum StopReason {
        STOP_NONE,
        STOP_COUNT,
        STOP_DURATION,
        STOP_SIGNAL,
        STOP_OUTPUT_GONE,
        STOP_FATAL,
} StopReason;

static const char *const stop_reason_name[] = {
        [STOP_NONE] = "running",
        [STOP_COUNT] = "count reached",
        [STOP_DURATION] = "duration reached",
        [STOP_SIGNAL] = "signal",
        [STOP_OUTPUT_GONE] = "output closed",
        [STOP_FATAL] = "failure",
};

/* splitmix64: small, fast, good enough for plausible noise; seedable for reproducible runs. */
typedef struct Rng {
        uint64_t s;
} Rng;

static uint64_t rng_next(Rng *r) {
        uint64_t z = (r->s += UINT64_C(0x9e3779b97f4a7c15));
        z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
        return z ^ (z >> 31);
}

/* [0, 1) */
static double rng_uniform(Rng *r) {
        return (double) (rng_next(r) >> 11) * 0x1.0p-53;
}

/* [-1, 1) */
static double rng_sym(Rng *r) {
        return 2.0 * rng_uniform(r) - 1.0;
}

static double clamp(double v, double lo, double hi) {
        return v < lo ? lo : v > hi ? hi : v;
}

static usec_t now_usec(clockid_t clock) {
        struct timespec ts;

        /* Cannot fail for the clocks used here. */
        if (clock_gettime(clock, &ts) < 0)
                abort();
        return (usec_t) ts.tv_sec * USEC_PER_SEC + (usec_t) ts.tv_nsec / NSEC_PER_USEC;
}

typedef struct Sensor {
        char id[SIM_SENSOR_ID_MAX + 1];
        unsigned metrics;                     /* bit (1u << Metric) per reported metric */
        double temp_base;                     /* this house corner's mean temperature */
        double temp_drift, hum_drift, co2_drift;
        double soil;                          /* dries out, jumps up when irrigated */
        double cloud;                         /* 0.3 (overcast) .. 1 (clear) */
        double last_sim_s;
        int64_t last_ts_ms;
        char *state_topic;                    /* PREFIX/ID/state */
        char *metric_topic[_METRIC_MAX + 1];  /* PREFIX/ID/METRIC; the last one is .../seq */
} Sensor;

/* One frame's content, before formatting. */
typedef struct Sample {
        const Sensor *sensor;
        int64_t ts_ms;
        bool has_seq;
        uint64_t seq;
        size_t n;
        Metric metric[_METRIC_MAX];
        double value[_METRIC_MAX];
} Sample;

/* A bounded text builder on a preallocated buffer; len keeps counting past size so overflow
 * is detectable (and is a programmer error here: buffers are sized for the longest frame). */
typedef struct Buf {
        char *p;
        size_t size;
        size_t len;
} Buf;

typedef struct SerialOut {
        bool enabled;
        const char *path;
        bool is_stdout;
        int fd;
        bool ever_open;
        char *buf;                            /* pending bytes are buf[start, start + len) */
        size_t cap, start, len;
        usec_t reopen_at, backoff;
        int last_errno;                       /* of the last failed open, to log changes only */
        uint64_t frames_sent, bytes_sent, lost, reopens, failures;
} SerialOut;

typedef enum MqttState {
        MQTT_DOWN,
        MQTT_CONNECTING,
        MQTT_UP,
} MqttState;

typedef struct MqttOut {
        bool enabled;
        char *host;
        int port;
        struct mosquitto *mosq;
        MqttState state;
        bool ever_up;
        bool tried;                           /* connect_async done once: host and port are set */
        bool closing;                         /* we disconnect on purpose */
        usec_t reconnect_at, backoff, connect_deadline, misc_at;
        int refused;                          /* CONNACK code when the broker said no */
        uint64_t frames_sent, messages, acked, lost, connects, disconnects, publish_errors;
} MqttOut;

typedef struct Sim {
        /* options */
        unsigned n_sensors;
        const char *sensor_prefix;
        unsigned metrics_mask;                /* 0: the default mix */
        double day_length;
        uint64_t seed;
        double rate;
        uint64_t count;                       /* 0: no limit */
        double duration;                      /* 0: no limit */
        Format serial_format;
        bool nmea;
        unsigned baud;
        int qos;
        const char *topic_prefix;
        Format mqtt_format;
        const char *client_id;
        unsigned inflight;
        unsigned keepalive;
        bool number;
        uint64_t seq_start;
        bool ts;
        double bad_rate;
        uint64_t burst;                       /* --burst: bad frames per SIGUSR2 */
        size_t max_frame;
        size_t max_payload;
        double wait;
        double drain_timeout;
        const char *stats_json;
        bool quiet;
        const char *silence_id;               /* --silence: this sensor sends nothing ... */
        double silence_after, silence_for;    /* ... from this many s after the start, this long */

        /* state */
        Rng rng;
        Sensor *sensors;
        SerialOut serial;
        MqttOut mqtt;
        char *missing_topic[_METRIC_MAX + 1]; /* PREFIX//METRIC, PREFIX//state: no sensor */
        char *line;                           /* serial line under construction */
        char *payload;                        /* MQTT payload under construction */
        size_t line_size;
        BadKind bad_kinds[_BAD_MAX];          /* the kinds that apply to these outputs */
        size_t n_bad_kinds, next_bad;
        uint64_t rate_bad;                    /* bad frames due to --bad-rate */
        uint64_t burst_left, bursts;          /* bad frames still due to SIGUSR2, SIGUSR2 seen */
        int64_t sim_epoch_s;                  /* local wall time at start, seconds */
        double sim_speed;                     /* simulated seconds per real second */
        usec_t start_usec, gen_start_usec, gen_end_usec, next_due;
        bool generating;
        StopReason stop;
        unsigned signals;
        uint64_t frames, good, readings, next_seq;
        uint64_t silenced;                    /* frames --silence held back */
        uint64_t bad[_BAD_MAX];
        int exit_status;
} Sim;

_printf_(2, 3)
static void sim_log(const Sim *sim, const char *fmt, ...) {
        va_list ap;

        if (sim && sim->quiet)
                return;
        fputs("sc-simulate: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

/* ---- text building ---------------------------------------------------------------------- */

_printf_(2, 3)
static void buf_printf(Buf *b, const char *fmt, ...) {
        va_list ap;
        int n;

        if (b->len >= b->size) {
                b->len++;
                return;
        }
        va_start(ap, fmt);
        n = vsnprintf(b->p + b->len, b->size - b->len, fmt, ap);
        va_end(ap);
        b->len += n > 0 ? (size_t) n : 0;
}

static void buf_put(Buf *b, const void *data, size_t size) {
        if (b->len + size <= b->size)
                memcpy(b->p + b->len, data, size);
        b->len += size;
}

static void buf_fill(Buf *b, char c, size_t size) {
        if (b->len + size <= b->size)
                memset(b->p + b->len, c, size);
        b->len += size;
}

static uint8_t nmea_xor(const char *s, size_t size) {
        uint8_t x = 0;

        if (size > 0 && s[0] == '$') {
                s++;
                size--;
        }
        for (size_t i = 0; i < size; i++)
                x ^= (uint8_t) s[i];
        return x;
}

/* How the frame is damaged on purpose, for the formatters. */
typedef struct Damage {
        bool no_sensor;
        const char *value0;                   /* replaces the first metric's number */
        const char *extra_key, *extra_value;  /* one more member (a string in JSON) */
        size_t pad;                           /* a "pad" member of this many bytes */
} Damage;

static void format_json(Buf *b, const Sim *sim, const Sample *s, const Damage *d) {
        const char *sep = "";

        buf_put(b, "{", 1);
        if (!d->no_sensor) {
                buf_printf(b, "\"sensor\":\"%s\"", s->sensor->id);
                sep = ",";
        }
        if (sim->ts) {
                buf_printf(b, "%s\"ts\":%" PRId64, sep, s->ts_ms);
                sep = ",";
        }
        for (size_t i = 0; i < s->n; i++) {
                const struct MetricInfo *m = &metric_info[s->metric[i]];

                if (i == 0 && d->value0)
                        buf_printf(b, "%s\"%s\":%s", sep, m->name, d->value0);
                else
                        buf_printf(b, "%s\"%s\":%.*f", sep, m->name, m->decimals, s->value[i]);
                sep = ",";
        }
        if (s->has_seq)
                buf_printf(b, "%s\"seq\":%" PRIu64, sep, s->seq);
        if (d->extra_key)
                buf_printf(b, ",\"%s\":\"%s\"", d->extra_key, d->extra_value);
        if (d->pad > 0) {
                buf_put(b, ",\"pad\":\"", 8);
                buf_fill(b, 'x', d->pad);
                buf_put(b, "\"", 1);
        }
        buf_put(b, "}", 1);
}

static void format_kv(Buf *b, const Sim *sim, const Sample *s, const Damage *d) {
        const char *sep = "";

        if (!d->no_sensor) {
                buf_printf(b, "sensor=%s", s->sensor->id);
                sep = " ";
        }
        if (sim->ts) {
                buf_printf(b, "%sts=%" PRId64, sep, s->ts_ms);
                sep = " ";
        }
        for (size_t i = 0; i < s->n; i++) {
                const struct MetricInfo *m = &metric_info[s->metric[i]];

                if (i == 0 && d->value0)
                        buf_printf(b, "%s%s=%s", sep, m->name, d->value0);
                else
                        buf_printf(b, "%s%s=%.*f", sep, m->name, m->decimals, s->value[i]);
                sep = " ";
        }
        if (s->has_seq)
                buf_printf(b, "%sseq=%" PRIu64, sep, s->seq);
        if (d->extra_key)
                buf_printf(b, " %s=%s", d->extra_key, d->extra_value);
        if (d->pad > 0) {
                buf_put(b, " pad=", 5);
                buf_fill(b, '0', d->pad);
        }
}

static void format_frame(Buf *b, const Sim *sim, Format f, const Sample *s, const Damage *d) {
        if (f == FORMAT_KV)
                format_kv(b, sim, s, d);
        else
                format_json(b, sim, s, d);
}

/* ---- the greenhouse --------------------------------------------------------------------- */

static unsigned default_metrics(unsigned i) {
        unsigned m = 1u << METRIC_TEMPERATURE | 1u << METRIC_HUMIDITY;

        /* A plausible mix: every sensor has air temperature and humidity, some also sit in a
         * pot, count CO2 or look at the sky. */
        if (i % 2 == 0)
                m |= 1u << METRIC_SOIL_MOISTURE;
        if (i % 3 == 0)
                m |= 1u << METRIC_CO2;
        if (i % 4 == 0)
                m |= 1u << METRIC_LIGHT;
        return m;
}

static double sim_time_s(const Sim *sim, usec_t mono) {
        return (double) sim->sim_epoch_s +
               (double) (mono - sim->start_usec) / (double) USEC_PER_SEC * sim->sim_speed;
}

static void sensor_sample(Sim *sim, Sensor *s, usec_t mono, int64_t ts_ms, Sample *ret) {
        Rng *r = &sim->rng;
        double t = sim_time_s(sim, mono);
        double dt = clamp(t - s->last_sim_s, 0, 3600);
        double sq = sqrt(dt);
        double h = fmod(t, 86400.0) / 3600.0;
        double sun = h > 6.0 && h < 20.0 ? sin(M_PI * (h - 6.0) / 14.0) : 0.0;
        double v[_METRIC_MAX];

        s->last_sim_s = t;

        /* Random walks with bounds, scaled by sqrt(elapsed) so the drift per hour does not depend
         * on the frame rate; a day cycle on top; a little measurement noise on each reading. */
        s->temp_drift = clamp(s->temp_drift + rng_sym(r) * 0.03 * sq, -1.5, 1.5);
        s->hum_drift = clamp(s->hum_drift + rng_sym(r) * 0.2 * sq, -8.0, 8.0);
        s->co2_drift = clamp(s->co2_drift + rng_sym(r) * 4.0 * sq, -120.0, 120.0);
        s->cloud = clamp(s->cloud + rng_sym(r) * 0.01 * sq, 0.3, 1.0);
        s->soil -= dt * (0.6 + 1.2 * sun) / 3600.0;
        if (s->soil < 25.0)
                s->soil = 55.0 + 10.0 * rng_uniform(r);          /* the irrigation ran */

        v[METRIC_TEMPERATURE] = s->temp_base + 3.5 * sin(2.0 * M_PI * (h - 9.0) / 24.0) +
                                s->temp_drift + rng_sym(r) * 0.05;
        v[METRIC_HUMIDITY] = 70.0 - 2.5 * (v[METRIC_TEMPERATURE] - 22.0) + s->hum_drift +
                             rng_sym(r) * 0.3;
        v[METRIC_SOIL_MOISTURE] = s->soil + rng_sym(r) * 0.2;
        v[METRIC_CO2] = 1050.0 - 550.0 * sun + s->co2_drift + rng_sym(r) * 5.0;
        v[METRIC_LIGHT] = 60000.0 * sun * s->cloud * (1.0 + rng_sym(r) * 0.02);

        *ret = (Sample) {
                .sensor = s,
                .ts_ms = ts_ms,
        };
        for (Metric m = 0; m < _METRIC_MAX; m++) {
                if (!(s->metrics & (1u << m)))
                        continue;
                ret->metric[ret->n] = m;
                ret->value[ret->n] = clamp(v[m], metric_info[m].min, metric_info[m].max);
                ret->n++;
        }
}

_printf_(1, 2)
static char *strdup_printf(const char *fmt, ...) {
        va_list ap;
        char *s;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&s, fmt, ap);
        va_end(ap);
        return r < 0 ? NULL : s;
}

static int sim_setup_sensors(Sim *sim) {
        unsigned width = sim->n_sensors >= 1000 ? 4 : sim->n_sensors >= 100 ? 3 : 2;

        if (sim->mqtt.enabled)
                for (Metric m = 0; m <= _METRIC_MAX; m++) {
                        sim->missing_topic[m] = strdup_printf("%s//%s", sim->topic_prefix,
                                                              m < _METRIC_MAX ? metric_info[m].name : "state");
                        if (!sim->missing_topic[m])
                                return -ENOMEM;
                }

        sim->sensors = calloc(sim->n_sensors, sizeof(Sensor));
        if (!sim->sensors)
                return -ENOMEM;

        for (unsigned i = 0; i < sim->n_sensors; i++) {
                Sensor *s = &sim->sensors[i];
                int n = snprintf(s->id, sizeof(s->id), "%s%0*u", sim->sensor_prefix, (int) width,
                                 i + 1);

                if (n < 0 || (size_t) n >= sizeof(s->id))
                        return -ENAMETOOLONG;
                s->metrics = sim->metrics_mask ? sim->metrics_mask : default_metrics(i);
                s->temp_base = 22.5 + 2.0 * rng_uniform(&sim->rng);
                s->soil = 30.0 + 30.0 * rng_uniform(&sim->rng);
                s->cloud = 0.5 + 0.5 * rng_uniform(&sim->rng);
                s->last_sim_s = sim_time_s(sim, sim->start_usec);

                if (!sim->mqtt.enabled)
                        continue;
                s->state_topic = strdup_printf("%s/%s/state", sim->topic_prefix, s->id);
                if (!s->state_topic)
                        return -ENOMEM;
                for (Metric m = 0; m <= _METRIC_MAX; m++) {
                        s->metric_topic[m] = strdup_printf("%s/%s/%s", sim->topic_prefix, s->id,
                                                           m < _METRIC_MAX ? metric_info[m].name : "seq");
                        if (!s->metric_topic[m])
                                return -ENOMEM;
                }
        }
        return 0;
}

/* ---- serial output ---------------------------------------------------------------------- */

static size_t count_newlines(const char *p, size_t size) {
        size_t n = 0;
        const char *end = p + size;

        while (p < end && (p = memchr(p, '\n', (size_t) (end - p)))) {
                n++;
                p++;
        }
        return n;
}

static int serial_configure_tty(int fd, unsigned baud) {
        static const struct {
                unsigned rate;
                speed_t speed;
        } speeds[] = {
                { 1200, B1200 }, { 2400, B2400 }, { 4800, B4800 }, { 9600, B9600 },
                { 19200, B19200 }, { 38400, B38400 }, { 57600, B57600 }, { 115200, B115200 },
                { 230400, B230400 }, { 460800, B460800 }, { 500000, B500000 },
                { 921600, B921600 }, { 1000000, B1000000 }, { 2000000, B2000000 },
        };
        struct termios t;

        if (tcgetattr(fd, &t) < 0)
                return -errno;
        /* Raw: no "\n" -> "\r\n" translation, no echo, 8N1. */
        cfmakeraw(&t);
        for (size_t i = 0; i < ELEMENTSOF(speeds); i++)
                if (speeds[i].rate == baud) {
                        cfsetispeed(&t, speeds[i].speed);
                        cfsetospeed(&t, speeds[i].speed);
                }
        if (tcsetattr(fd, TCSANOW, &t) < 0)
                return -errno;
        return 0;
}

static int serial_open(Sim *sim) {
        SerialOut *s = &sim->serial;
        int fd, r;

        if (s->is_stdout) {
                /* stdout stays blocking: O_NONBLOCK would leak into the caller's terminal. */
                s->fd = STDOUT_FILENO;
                return 0;
        }

        /* O_APPEND so a regular file grows instead of being overwritten; no O_CREAT: the path
         * is a device or pipe someone else provides. */
        fd = open(s->path, O_WRONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC | O_APPEND);
        if (fd < 0)
                return -errno;
        if (isatty(fd)) {
                r = serial_configure_tty(fd, sim->baud);
                if (r < 0)
                        sim_log(sim, "serial: cannot configure '%s' (%s), ignoring", s->path,
                                strerror(-r));
        }
        s->fd = fd;
        return 0;
}

/* The device went away: what is pending is lost at source; try again after a backoff. */
static void serial_gone(Sim *sim, int error) {
        SerialOut *s = &sim->serial;
        size_t pending = count_newlines(s->buf + s->start, s->len);

        s->lost += pending;
        s->start = s->len = 0;
        s->failures++;
        if (s->is_stdout) {
                /* Nobody reads our stdout any more: like `yes | head`, stop. */
                s->fd = -EBADF;
                if (sim->stop == STOP_NONE)
                        sim->stop = STOP_OUTPUT_GONE;
                return;
        }
        s->fd = safe_close(s->fd);
        s->backoff = s->backoff ? MIN(s->backoff * 2, SIM_SERIAL_BACKOFF_MAX_USEC) : SIM_BACKOFF_MIN_USEC;
        s->reopen_at = now_usec(CLOCK_MONOTONIC) + s->backoff;
        s->last_errno = 0;
        sim_log(sim, "serial: '%s' failed (%s), %zu frames lost, reopening", s->path,
                error ? strerror(error) : "hung up", pending);
}

static void serial_try_reopen(Sim *sim, usec_t now) {
        SerialOut *s = &sim->serial;
        int r;

        if (s->fd >= 0 || s->is_stdout || now < s->reopen_at)
                return;
        r = serial_open(sim);
        if (r < 0) {
                if (-r != s->last_errno && s->ever_open)
                        sim_log(sim, "serial: cannot reopen '%s' (%s), retrying", s->path, strerror(-r));
                s->last_errno = -r;
                s->backoff = s->backoff ? MIN(s->backoff * 2, SIM_SERIAL_BACKOFF_MAX_USEC) : SIM_BACKOFF_MIN_USEC;
                s->reopen_at = now + s->backoff;
                return;
        }
        if (s->ever_open) {
                s->reopens++;
                sim_log(sim, "serial: '%s' reopened", s->path);
        }
        s->ever_open = true;
}

/* Writes what is pending. Returns true when everything pending was written. */
static bool serial_flush(Sim *sim) {
        SerialOut *s = &sim->serial;

        while (s->fd >= 0 && s->len > 0) {
                ssize_t n = write(s->fd, s->buf + s->start, s->len);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return false;
                        serial_gone(sim, errno);
                        return false;
                }
                s->frames_sent += count_newlines(s->buf + s->start, (size_t) n);
                s->bytes_sent += (uint64_t) n;
                s->start += (size_t) n;
                s->len -= (size_t) n;
                s->backoff = 0;
        }
        if (s->len == 0)
                s->start = 0;
        return s->len == 0;
}

/* Room for one more line (and its newline)? Compacts the buffer when that helps. */
static bool serial_has_room(Sim *sim) {
        SerialOut *s = &sim->serial;

        if (s->cap - s->start - s->len > sim->line_size)
                return true;
        if (s->start > 0) {
                memmove(s->buf, s->buf + s->start, s->len);
                s->start = 0;
        }
        return s->cap - s->len > sim->line_size;
}

static void serial_append(Sim *sim, const char *line, size_t size) {
        SerialOut *s = &sim->serial;

        if (s->fd < 0) {
                s->lost++;
                return;
        }
        assert(serial_has_room(sim));
        memcpy(s->buf + s->start + s->len, line, size);
        s->buf[s->start + s->len + size] = '\n';
        s->len += size + 1;
}

/* ---- MQTT output ------------------------------------------------------------------------ */

static void mqtt_schedule_reconnect(Sim *sim, usec_t now) {
        MqttOut *m = &sim->mqtt;

        m->state = MQTT_DOWN;
        m->backoff = m->backoff ? MIN(m->backoff * 2, SIM_MQTT_BACKOFF_MAX_USEC) : SIM_BACKOFF_MIN_USEC;
        /* Jitter, so a fleet of simulators does not reconnect in lockstep. */
        m->reconnect_at = now + m->backoff / 2 + (usec_t) (rng_uniform(&sim->rng) * (double) (m->backoff / 2));
}

static void on_connect(struct mosquitto *mosq, void *userdata, int rc) {
        Sim *sim = userdata;
        MqttOut *m = &sim->mqtt;

        (void) mosq;
        if (rc != 0) {
                /* The broker answered and said no (bad id, not authorized...): retrying will not
                 * change its mind. */
                m->refused = rc;
                m->state = MQTT_DOWN;
                return;
        }
        m->state = MQTT_UP;
        m->backoff = 0;
        m->connects++;
        if (m->ever_up)
                sim_log(sim, "mqtt: reconnected to %s:%d", m->host, m->port);
        m->ever_up = true;
}

static void on_disconnect(struct mosquitto *mosq, void *userdata, int rc) {
        Sim *sim = userdata;
        MqttOut *m = &sim->mqtt;

        (void) mosq;
        if (m->closing)
                return;
        if (m->state == MQTT_UP) {
                m->disconnects++;
                if (sim->stop == STOP_NONE || rc != 0)
                        sim_log(sim, "mqtt: connection to %s:%d lost (%s), reconnecting", m->host,
                                m->port, mosquitto_strerror(rc));
        }
        if (m->state != MQTT_DOWN)
                mqtt_schedule_reconnect(sim, now_usec(CLOCK_MONOTONIC));
}

static void on_publish(struct mosquitto *mosq, void *userdata, int mid) {
        Sim *sim = userdata;

        (void) mosq;
        (void) mid;
        /* QoS 0: written to the socket; QoS 1: PUBACK; QoS 2: PUBCOMP. */
        sim->mqtt.acked++;
}

static void mqtt_connect(Sim *sim, usec_t now) {
        MqttOut *m = &sim->mqtt;
        int r;

        if (m->tried)
                r = mosquitto_reconnect_async(m->mosq);
        else
                r = mosquitto_connect_async(m->mosq, m->host, m->port, (int) sim->keepalive);
        m->tried = true;
        if (r != MOSQ_ERR_SUCCESS) {
                if (!m->ever_up && m->backoff == 0)
                        sim_log(sim, "mqtt: cannot connect to %s:%d (%s), retrying", m->host, m->port,
                                r == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(r));
                mqtt_schedule_reconnect(sim, now);
                return;
        }
        m->state = MQTT_CONNECTING;
        m->connect_deadline = now + SIM_CONNECT_TIMEOUT_USEC;
}

static void mqtt_check_timers(Sim *sim, usec_t now) {
        MqttOut *m = &sim->mqtt;

        if (m->state == MQTT_DOWN && now >= m->reconnect_at && sim->stop != STOP_FATAL)
                mqtt_connect(sim, now);
        else if (m->state == MQTT_CONNECTING && now >= m->connect_deadline) {
                if (!m->ever_up && m->backoff == 0)
                        sim_log(sim, "mqtt: no answer from %s:%d, retrying", m->host, m->port);
                (void) mosquitto_disconnect(m->mosq);
                mqtt_schedule_reconnect(sim, now);
        }
        if (now >= m->misc_at) {
                (void) mosquitto_loop_misc(m->mosq);
                m->misc_at = now + SIM_MISC_INTERVAL_USEC;
        }
}

/* A libmosquitto loop call failed: the connection is gone (on_disconnect may have run). */
static void mqtt_handle_rc(Sim *sim, int rc) {
        if (rc == MOSQ_ERR_SUCCESS || sim->mqtt.state == MQTT_DOWN)
                return;
        on_disconnect(sim->mqtt.mosq, sim, rc);
}

static void mqtt_publish(Sim *sim, const char *topic, const void *payload, size_t size) {
        MqttOut *m = &sim->mqtt;
        int r;

        r = mosquitto_publish(m->mosq, NULL, topic, (int) size, payload, sim->qos, false);
        if (sim->qos > 0) {
                /* QoS 1/2: libmosquitto queued the message before trying to send it and resends
                 * it after a reconnect until it is acknowledged; only a refusal to queue loses it. */
                if (r == MOSQ_ERR_SUCCESS || r == MOSQ_ERR_NO_CONN || r == MOSQ_ERR_CONN_LOST ||
                    r == MOSQ_ERR_ERRNO) {
                        m->messages++;
                        mqtt_handle_rc(sim, r);
                } else
                        m->publish_errors++;
                return;
        }
        if (r == MOSQ_ERR_SUCCESS)
                m->messages++;
        else {
                m->publish_errors++;
                mqtt_handle_rc(sim, r);
        }
}

static uint64_t mqtt_outstanding(const Sim *sim) {
        return sim->mqtt.messages - MIN(sim->mqtt.acked, sim->mqtt.messages);
}

/* ---- frames ----------------------------------------------------------------------------- */

static void make_garbage(Sim *sim, Buf *b) {
        size_t n = 16 + rng_next(&sim->rng) % 64;

        for (size_t i = 0; i < n; i++) {
                char c;

                do
                        c = (char) (rng_next(&sim->rng) & 0xff);
                while (c == '\n');
                buf_put(b, &c, 1);
        }
}

/* Builds the damage for a bad frame of this kind in this format; the overlong pad is sized so
 * the whole frame lands just over limit. */
static Damage make_damage(Sim *sim, BadKind kind, Format f, const Sample *s, size_t limit) {
        Damage d = {};

        switch (kind) {
        case BAD_NOT_FINITE:
                /* JSON has no NaN literal (it would be a syntax error, not a non-finite value);
                 * 1e999 is valid JSON and overflows to infinity. */
                if (f == FORMAT_KV)
                        d.value0 = sim->bad[kind] % 2 ? "1e999" : "nan";
                else
                        d.value0 = sim->bad[kind] % 2 ? "-1e999" : "1e999";
                break;
        case BAD_MISSING_SENSOR:
                d.no_sensor = true;
                break;
        case BAD_UTF8:
                d.extra_key = "note";
                d.extra_value = "caf\xc3\x28\xff";
                break;
        case BAD_OVERLONG: {
                char tmp[1024];
                Buf t = { .p = tmp, .size = sizeof(tmp) };
                size_t target = limit + 1 + rng_next(&sim->rng) % 64;
                size_t overhead = f == FORMAT_KV ? 5 : 9;

                format_frame(&t, sim, f, s, &d);
                d.pad = target > t.len + overhead ? target - t.len - overhead : 1;
                break;
        }
        default:
                break;
        }
        return d;
}

/* The serial line for this frame, checksum included, without the newline. */
static size_t build_line(Sim *sim, const Sample *s, bool bad, BadKind kind) {
        Buf b = { .p = sim->line, .size = sim->line_size };
        Damage d = {};

        if (bad && kind == BAD_GARBAGE) {
                make_garbage(sim, &b);
                assert(b.len <= b.size);
                return b.len;
        }
        if (bad)
                d = make_damage(sim, kind, sim->serial_format, s, sim->max_frame);
        format_frame(&b, sim, sim->serial_format, s, &d);
        if (sim->nmea) {
                uint8_t x = nmea_xor(b.p, MIN(b.len, b.size));

                if (bad && kind == BAD_CHECKSUM)
                        x ^= 0x5a;
                buf_printf(&b, "*%02X", x);
        }
        assert(b.len <= b.size);
        return b.len;
}

static void publish_value_frame(Sim *sim, const Sample *s, bool bad, BadKind kind) {
        const Sensor *sensor = s->sensor;
        char num[64];
        int n;

        if (!bad) {
                for (size_t i = 0; i < s->n; i++) {
                        const struct MetricInfo *m = &metric_info[s->metric[i]];

                        n = snprintf(num, sizeof(num), "%.*f", m->decimals, s->value[i]);
                        mqtt_publish(sim, sensor->metric_topic[s->metric[i]], num, (size_t) n);
                }
                if (s->has_seq) {
                        n = snprintf(num, sizeof(num), "%" PRIu64, s->seq);
                        mqtt_publish(sim, sensor->metric_topic[_METRIC_MAX], num, (size_t) n);
                }
                return;
        }

        /* A bad value payload, to the first metric's topic. */
        const char *topic = sensor->metric_topic[s->metric[0]];
        Buf b = { .p = sim->payload, .size = sim->line_size };

        switch (kind) {
        case BAD_GARBAGE:
                make_garbage(sim, &b);
                break;
        case BAD_OVERLONG:
                buf_put(&b, "0.", 2);
                buf_fill(&b, '0', sim->max_payload + rng_next(&sim->rng) % 64);
                buf_put(&b, "1", 1);
                break;
        case BAD_CHECKSUM:
                buf_printf(&b, "%.*f*00", metric_info[s->metric[0]].decimals, s->value[0]);
                break;
        case BAD_NOT_FINITE:
                buf_printf(&b, "%s", sim->bad[kind] % 2 ? "-1e999" : "1e999");
                break;
        case BAD_MISSING_SENSOR:
                /* An empty sensor level still matches PREFIX/+/+. */
                topic = sim->missing_topic[s->metric[0]];
                buf_printf(&b, "%.*f", metric_info[s->metric[0]].decimals, s->value[0]);
                break;
        case BAD_UTF8:
                buf_put(&b, "2\xc3\x28", 3);
                break;
        default:
                break;
        }
        assert(b.len <= b.size);
        mqtt_publish(sim, topic, b.p, b.len);
}

static void publish_frame(Sim *sim, const Sample *s, bool bad, BadKind kind, size_t line_len) {
        MqttOut *m = &sim->mqtt;
        uint64_t errors = m->publish_errors;
        /* A payload without "sensor" takes the id from the topic: leave that level empty too. */
        const char *topic = bad && kind == BAD_MISSING_SENSOR ? sim->missing_topic[_METRIC_MAX] :
                                                                 s->sensor->state_topic;

        if (m->state != MQTT_UP && sim->qos == 0) {
                m->lost++;
                return;
        }

        if (sim->mqtt_format == FORMAT_VALUE)
                publish_value_frame(sim, s, bad, kind);
        else if (sim->mqtt_format == FORMAT_COLLECTD && !bad) {
                /* collectd's own value format, for comparing with its mqtt plugin (which
                 * cannot parse JSON): "TIME:V1:V2..." in metric_info[] order, on the same
                 * topic; collectd reads the topic as HOST/PLUGIN/TYPE. */
                Buf b = { .p = sim->payload, .size = sim->line_size };

                if (sim->ts)
                        buf_printf(&b, "%" PRId64 ".%03" PRId64, s->ts_ms / 1000, s->ts_ms % 1000);
                else
                        buf_put(&b, "N", 1);
                for (size_t i = 0; i < s->n; i++)
                        buf_printf(&b, ":%.*f", metric_info[s->metric[i]].decimals, s->value[i]);
                assert(b.len <= b.size);
                mqtt_publish(sim, topic, b.p, b.len);
        }
        else if (sim->serial.enabled && sim->serial_format == FORMAT_JSON &&
                 !(bad && (kind == BAD_GARBAGE || kind == BAD_OVERLONG))) {
                /* Same JSON as the serial line: reuse it, without the checksum unless the
                 * checksum is what is wrong. */
                size_t len = line_len;

                if (sim->nmea && !(bad && kind == BAD_CHECKSUM))
                        len -= 3;
                mqtt_publish(sim, topic, sim->line, len);
        } else {
                Buf b = { .p = sim->payload, .size = sim->line_size };

                if (bad && kind == BAD_GARBAGE)
                        make_garbage(sim, &b);
                else {
                        Damage d = bad ? make_damage(sim, kind, FORMAT_JSON, s, sim->max_payload) : (Damage) {};

                        format_json(&b, sim, s, &d);
                        if (bad && kind == BAD_CHECKSUM)
                                buf_printf(&b, "*%02X", nmea_xor(b.p, b.len) ^ 0x5a);
                }
                assert(b.len <= b.size);
                mqtt_publish(sim, topic, b.p, b.len);
        }
        if (m->publish_errors == errors)
                m->frames_sent++;
        else
                m->lost++;
}

static void sim_emit_frame(Sim *sim, usec_t mono) {
        Sensor *sensor = &sim->sensors[(sim->frames + sim->silenced) % sim->n_sensors];
        int64_t ts_ms = (int64_t) (now_usec(CLOCK_REALTIME) / USEC_PER_MSEC);
        bool bad = false;
        BadKind kind = _BAD_MAX;
        size_t line_len = 0;
        Sample s;

        /* --silence: the sensor's turn passes without a frame, as with a cut cable. */
        if (sim->silence_id && streq(sensor->id, sim->silence_id) &&
            mono >= sim->gen_start_usec + (usec_t) (sim->silence_after * USEC_PER_SEC) &&
            mono < sim->gen_start_usec + (usec_t) ((sim->silence_after + sim->silence_for) * USEC_PER_SEC)) {
                sim->silenced++;
                return;
        }

        /* A burst (SIGUSR2) first; else evenly spread and exact: after n frames, floor(n * rate)
         * of them were bad, bursts not counted. */
        if (sim->burst_left > 0) {
                sim->burst_left--;
                bad = true;
        } else if (sim->bad_rate > 0 &&
                   (uint64_t) floor((double) (sim->frames + 1) * sim->bad_rate + 1e-9) > sim->rate_bad) {
                sim->rate_bad++;
                bad = true;
        }
        if (bad)
                kind = sim->bad_kinds[sim->next_bad++ % sim->n_bad_kinds];

        /* A sensor's timestamps strictly increase: the collector keeps one reading per sensor,
         * metric and sensor timestamp, so two frames of one sensor in the same millisecond
         * would count as one. Above 1000 frames/s per sensor they run ahead of the clock. */
        ts_ms = MAX(ts_ms, sensor->last_ts_ms + 1);
        sensor->last_ts_ms = ts_ms;

        sensor_sample(sim, sensor, mono, ts_ms, &s);
        /* Bad frames take no sequence number: the good ones stay contiguous, so a gap in what
         * was stored is a loss. */
        if (sim->number && !bad) {
                s.has_seq = true;
                s.seq = sim->next_seq++;
        }

        if (sim->serial.enabled) {
                line_len = build_line(sim, &s, bad, kind);
                serial_append(sim, sim->line, line_len);
        }
        if (sim->mqtt.enabled)
                publish_frame(sim, &s, bad, kind, line_len);

        sim->frames++;
        if (bad)
                sim->bad[kind]++;
        else {
                sim->good++;
                sim->readings += s.n + s.has_seq;
        }
}

/* ---- the loop --------------------------------------------------------------------------- */

/* Can every output take a frame now? Outputs that are down do not hold the generator back
 * (their frames are lost at source), except QoS 1/2, which must not lose any. */
static bool outputs_ready(Sim *sim) {
        if (sim->serial.enabled && sim->serial.fd >= 0 && !serial_has_room(sim))
                return false;
        if (sim->mqtt.enabled) {
                MqttOut *m = &sim->mqtt;

                if (sim->qos > 0)
                        return m->state == MQTT_UP && mqtt_outstanding(sim) < sim->inflight;
                if (m->state == MQTT_UP && mosquitto_want_write(m->mosq))
                        return false;
        }
        return true;
}

static bool outputs_all_down(const Sim *sim) {
        if (sim->serial.enabled && sim->serial.fd >= 0)
                return false;
        if (sim->mqtt.enabled && (sim->qos > 0 || sim->mqtt.state == MQTT_UP))
                return false;
        return true;
}

static bool outputs_all_up(const Sim *sim) {
        if (sim->serial.enabled && sim->serial.fd < 0)
                return false;
        if (sim->mqtt.enabled && sim->mqtt.state != MQTT_UP)
                return false;
        return true;
}

static bool outputs_drained(Sim *sim) {
        if (sim->serial.enabled && sim->serial.fd >= 0 && sim->serial.len > 0)
                return false;
        if (sim->mqtt.enabled) {
                MqttOut *m = &sim->mqtt;

                if (sim->qos > 0 && mqtt_outstanding(sim) > 0)
                        return false;
                if (m->state == MQTT_UP && mosquitto_want_write(m->mosq))
                        return false;
        }
        return true;
}

static usec_t frame_interval(const Sim *sim) {
        return sim->rate > 0 ? (usec_t) ((double) USEC_PER_SEC / sim->rate) : 0;
}

/* Generates the frames that are due, as many as the outputs take, up to one batch. */
static void sim_generate(Sim *sim, usec_t now) {
        usec_t interval = frame_interval(sim);

        if (sim->rate > 0 && now > sim->next_due + SIM_CATCH_UP_USEC)
                sim->next_due = now;            /* far behind (an output blocked): do not burst */

        for (unsigned i = 0; i < SIM_BATCH_FRAMES; i++) {
                if (sim->count > 0 && sim->frames >= sim->count) {
                        sim->stop = STOP_COUNT;
                        break;
                }
                if (sim->rate > 0 && sim->next_due > now)
                        break;
                if (!outputs_ready(sim))
                        break;
                if (sim->rate == 0 && outputs_all_down(sim))
                        break;
                sim_emit_frame(sim, now);
                sim->next_due += interval;
                if (sim->rate > 0 && interval == 0)
                        sim->next_due = now;
                /* Rate 0: fill the buffer, then write it in one go. */
                if (sim->serial.enabled && sim->serial.len >= SIM_SERIAL_CHUNK)
                        break;
        }
        if (sim->count > 0 && sim->frames >= sim->count)
                sim->stop = STOP_COUNT;
        sim->gen_end_usec = now_usec(CLOCK_MONOTONIC);
}

static double usec_to_s(usec_t u) {
        return (double) u / (double) USEC_PER_SEC;
}

static void json_string(FILE *f, const char *s) {
        fputc('"', f);
        for (; *s; s++) {
                if (*s == '"' || *s == '\\')
                        fprintf(f, "\\%c", *s);
                else if ((unsigned char) *s < 0x20)
                        fprintf(f, "\\u%04x", (unsigned char) *s);
                else
                        fputc(*s, f);
        }
        fputc('"', f);
}

static double sim_elapsed(const Sim *sim) {
        if (!sim->generating)
                return 0;
        return usec_to_s(sim->gen_end_usec - sim->gen_start_usec);
}

static int sim_write_stats_json(const Sim *sim) {
        _cleanup_free_ char *tmp = NULL;
        double elapsed = sim_elapsed(sim);
        FILE *f;
        int r = 0;

        tmp = strdup_printf("%s.tmp", sim->stats_json);
        if (!tmp)
                return -ENOMEM;
        f = fopen(tmp, "we");
        if (!f)
                return -errno;

        fprintf(f, "{\n  \"state\": ");
        json_string(f, stop_reason_name[sim->stop]);
        fprintf(f, ",\n  \"elapsed_s\": %.3f,\n  \"frames\": %" PRIu64 ",\n  \"good_frames\": %" PRIu64
                   ",\n  \"bad_frames\": %" PRIu64 ",\n  \"readings\": %" PRIu64
                   ",\n  \"frames_per_s\": %.1f,\n",
                elapsed, sim->frames, sim->good, sim->frames - sim->good, sim->readings,
                elapsed > 0 ? (double) sim->frames / elapsed : 0.0);
        if (sim->number && sim->next_seq > sim->seq_start)
                fprintf(f, "  \"seq_first\": %" PRIu64 ",\n  \"seq_last\": %" PRIu64 ",\n",
                        sim->seq_start, sim->next_seq - 1);
        fprintf(f, "  \"bad\": {");
        for (BadKind k = 0; k < _BAD_MAX; k++)
                fprintf(f, "%s\"%s\": %" PRIu64, k ? ", " : "", bad_kind_name[k], sim->bad[k]);
        fprintf(f, "},\n  \"bursts\": %" PRIu64 ",\n", sim->bursts);

        if (sim->serial.enabled) {
                const SerialOut *s = &sim->serial;

                fprintf(f, "  \"serial\": {\"path\": ");
                json_string(f, s->path);
                fprintf(f, ", \"frames_sent\": %" PRIu64 ", \"bytes_sent\": %" PRIu64
                           ", \"pending\": %zu, \"lost_at_source\": %" PRIu64 ", \"failures\": %" PRIu64
                           ", \"reopens\": %" PRIu64 "},\n",
                        s->frames_sent, s->bytes_sent, count_newlines(s->buf + s->start, s->len),
                        s->lost, s->failures, s->reopens);
        }
        if (sim->mqtt.enabled) {
                const MqttOut *m = &sim->mqtt;

                fprintf(f, "  \"mqtt\": {\"host\": ");
                json_string(f, m->host);
                fprintf(f, ", \"port\": %d, \"qos\": %d, \"frames_sent\": %" PRIu64
                           ", \"messages\": %" PRIu64 ", \"acknowledged\": %" PRIu64
                           ", \"unacknowledged\": %" PRIu64 ", \"lost_at_source\": %" PRIu64
                           ", \"publish_errors\": %" PRIu64 ", \"connects\": %" PRIu64
                           ", \"disconnects\": %" PRIu64 "},\n",
                        m->port, sim->qos, m->frames_sent, m->messages, MIN(m->acked, m->messages),
                        mqtt_outstanding(sim), m->lost, m->publish_errors, m->connects,
                        m->disconnects);
        }
        fprintf(f, "  \"seed\": %" PRIu64 "\n}\n", sim->seed);

        if (fflush(f) != 0 || ferror(f))
                r = -EIO;
        if (fclose(f) != 0 && r == 0)
                r = -errno;
        if (r == 0 && rename(tmp, sim->stats_json) < 0)
                r = -errno;
        if (r < 0)
                (void) unlink(tmp);
        return r;
}

static void sim_print_summary(Sim *sim) {
        double elapsed = sim_elapsed(sim);
        int r;

        fprintf(stderr, "sc-simulate: %s: %" PRIu64 " frames in %.3f s (%.0f/s): %" PRIu64 " good, %" PRIu64
                        " bad, %" PRIu64 " readings",
                stop_reason_name[sim->stop], sim->frames, elapsed,
                elapsed > 0 ? (double) sim->frames / elapsed : 0.0, sim->good, sim->frames - sim->good,
                sim->readings);
        if (sim->number && sim->next_seq > sim->seq_start)
                fprintf(stderr, ", seq %" PRIu64 "..%" PRIu64, sim->seq_start, sim->next_seq - 1);
        if (sim->silenced > 0)
                fprintf(stderr, ", %" PRIu64 " turns of '%s' silenced", sim->silenced, sim->silence_id);
        fputc('\n', stderr);

        if (sim->serial.enabled) {
                const SerialOut *s = &sim->serial;

                fprintf(stderr, "  serial '%s': %" PRIu64 " frames sent (%" PRIu64 " bytes), %zu pending, %" PRIu64
                                " lost at source, %" PRIu64 " failures, %" PRIu64 " reopens\n",
                        s->path, s->frames_sent, s->bytes_sent, count_newlines(s->buf + s->start, s->len),
                        s->lost, s->failures, s->reopens);
        }
        if (sim->mqtt.enabled) {
                const MqttOut *m = &sim->mqtt;

                fprintf(stderr, "  mqtt %s:%d qos %d: %" PRIu64 " frames sent, %" PRIu64 " messages, %" PRIu64
                                " acknowledged, %" PRIu64 " unacknowledged, %" PRIu64 " lost at source, %" PRIu64
                                " publish errors, %" PRIu64 " connects, %" PRIu64 " disconnects\n",
                        m->host, m->port, sim->qos, m->frames_sent, m->messages, MIN(m->acked, m->messages),
                        mqtt_outstanding(sim), m->lost, m->publish_errors, m->connects, m->disconnects);
        }
        if (sim->frames > sim->good) {
                fputs("  bad frames:", stderr);
                for (BadKind k = 0; k < _BAD_MAX; k++)
                        fprintf(stderr, " %s %" PRIu64, bad_kind_name[k], sim->bad[k]);
                fputc('\n', stderr);
        }

        if (sim->stats_json) {
                r = sim_write_stats_json(sim);
                if (r < 0)
                        fprintf(stderr, "sc-simulate: cannot write '%s': %s\n", sim->stats_json, strerror(-r));
        }
}

static int sim_signal_fd(sigset_t *ret_old) {
        sigset_t mask;
        int fd;

        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGUSR1);
        sigaddset(&mask, SIGUSR2);
        if (sigprocmask(SIG_BLOCK, &mask, ret_old) < 0)
                return -errno;
        fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
        if (fd < 0)
                return -errno;
        return fd;
}

static void sim_read_signals(Sim *sim, int fd) {
        struct signalfd_siginfo si;

        while (read(fd, &si, sizeof(si)) == (ssize_t) sizeof(si)) {
                if (si.ssi_signo == SIGUSR1) {
                        sim_print_summary(sim);
                        continue;
                }
                if (si.ssi_signo == SIGUSR2) {
                        sim->bursts++;
                        sim->burst_left += sim->burst;
                        continue;
                }
                sim->signals++;
                if (sim->stop == STOP_NONE || sim->stop == STOP_COUNT || sim->stop == STOP_DURATION)
                        sim->stop = STOP_SIGNAL;
        }
}

static int sim_run(Sim *sim) {
        _cleanup_close_ int sfd = -EBADF;
        usec_t deadline_wait, drain_deadline = 0;
        bool draining = false;
        int r;

        sfd = sim_signal_fd(NULL);
        if (sfd < 0) {
                fprintf(stderr, "sc-simulate: cannot set up signals: %s\n", strerror(-sfd));
                return 1;
        }

        sim->start_usec = now_usec(CLOCK_MONOTONIC);
        deadline_wait = sim->start_usec + (usec_t) (sim->wait * (double) USEC_PER_SEC);

        if (sim->serial.enabled) {
                r = serial_open(sim);
                if (r < 0) {
                        /* A path that is not there at startup is far more often a typo than an
                         * adapter being replugged: say so at once, then keep trying until --wait. */
                        sim_log(NULL, "serial: cannot open '%s' (%s), waiting up to %g s", sim->serial.path,
                                strerror(-r), sim->wait);
                        sim->serial.last_errno = -r;
                        sim->serial.backoff = SIM_BACKOFF_MIN_USEC;
                        sim->serial.reopen_at = sim->start_usec + sim->serial.backoff;
                } else
                        sim->serial.ever_open = true;
        }
        if (sim->mqtt.enabled)
                mqtt_connect(sim, sim->start_usec);

        for (;;) {
                usec_t now = now_usec(CLOCK_MONOTONIC), wake = UINT64_MAX;
                struct pollfd p[3] = {};
                nfds_t n = 0;
                int serial_i = -1, mqtt_i = -1;

                if (sim->serial.enabled) {
                        bool was_open = sim->serial.ever_open;

                        serial_try_reopen(sim, now);
                        if (!was_open && sim->serial.ever_open)
                                sim_log(sim, "serial: '%s' opened", sim->serial.path);
                }
                if (sim->mqtt.enabled) {
                        mqtt_check_timers(sim, now);
                        if (sim->mqtt.refused) {
                                fprintf(stderr, "sc-simulate: mqtt: %s:%d refused the connection: %s\n",
                                        sim->mqtt.host, sim->mqtt.port,
                                        mosquitto_connack_string(sim->mqtt.refused));
                                sim->stop = STOP_FATAL;
                                sim->exit_status = 1;
                                break;
                        }
                }

                if (!sim->generating && sim->stop == STOP_NONE) {
                        if (outputs_all_up(sim)) {
                                sim->generating = true;
                                sim->gen_start_usec = sim->gen_end_usec = now;
                                sim->next_due = now;
                        } else if (now >= deadline_wait) {
                                fprintf(stderr, "sc-simulate: outputs not available after %g s:%s%s\n",
                                        sim->wait,
                                        sim->serial.enabled && sim->serial.fd < 0 ? " serial" : "",
                                        sim->mqtt.enabled && sim->mqtt.state != MQTT_UP ? " mqtt" : "");
                                sim->stop = STOP_FATAL;
                                sim->exit_status = 1;
                                break;
                        } else
                                wake = MIN(wake, deadline_wait);
                }

                if (sim->generating && sim->stop == STOP_NONE) {
                        if (sim->duration > 0 &&
                            now >= sim->gen_start_usec + (usec_t) (sim->duration * (double) USEC_PER_SEC))
                                sim->stop = STOP_DURATION;
                        else
                                sim_generate(sim, now);
                }
                if (sim->serial.enabled)
                        (void) serial_flush(sim);

                if (sim->stop != STOP_NONE) {
                        if (!draining) {
                                draining = true;
                                drain_deadline = now + (usec_t) (sim->drain_timeout * (double) USEC_PER_SEC);
                        }
                        if (outputs_drained(sim) || now >= drain_deadline || sim->signals >= 2 ||
                            sim->stop == STOP_FATAL)
                                break;
                        wake = MIN(wake, drain_deadline);
                } else if (sim->generating) {
                        /* Next frame due, unless an output holds us back (then its fd wakes us). */
                        if (sim->rate > 0 && outputs_ready(sim))
                                wake = MIN(wake, sim->next_due);
                        else if (sim->rate == 0 && outputs_ready(sim) && !outputs_all_down(sim))
                                wake = now;
                        if (sim->duration > 0)
                                wake = MIN(wake, sim->gen_start_usec +
                                                 (usec_t) (sim->duration * (double) USEC_PER_SEC));
                }

                p[n++] = (struct pollfd) { .fd = sfd, .events = POLLIN };
                if (sim->serial.enabled && sim->serial.fd >= 0 && !sim->serial.is_stdout) {
                        serial_i = (int) n;
                        p[n++] = (struct pollfd) {
                                .fd = sim->serial.fd,
                                .events = sim->serial.len > 0 ? POLLOUT : 0,
                        };
                } else if (sim->serial.enabled && sim->serial.fd < 0 && !sim->serial.is_stdout)
                        wake = MIN(wake, sim->serial.reopen_at);
                if (sim->mqtt.enabled) {
                        int fd = mosquitto_socket(sim->mqtt.mosq);

                        if (fd >= 0) {
                                mqtt_i = (int) n;
                                p[n++] = (struct pollfd) {
                                        .fd = fd,
                                        .events = POLLIN | (mosquitto_want_write(sim->mqtt.mosq) ? POLLOUT : 0),
                                };
                        }
                        if (sim->mqtt.state == MQTT_DOWN)
                                wake = MIN(wake, sim->mqtt.reconnect_at);
                        else if (sim->mqtt.state == MQTT_CONNECTING)
                                wake = MIN(wake, sim->mqtt.connect_deadline);
                        wake = MIN(wake, sim->mqtt.misc_at);
                }

                struct timespec ts, *tsp = NULL;
                if (wake != UINT64_MAX) {
                        usec_t d = wake > now ? wake - now : 0;

                        ts = (struct timespec) {
                                .tv_sec = (time_t) (d / USEC_PER_SEC),
                                .tv_nsec = (long) (d % USEC_PER_SEC * NSEC_PER_USEC),
                        };
                        tsp = &ts;
                }
                r = ppoll(p, n, tsp, NULL);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        fprintf(stderr, "sc-simulate: poll: %s\n", strerror(errno));
                        sim->stop = STOP_FATAL;
                        sim->exit_status = 1;
                        break;
                }
                if (r == 0)
                        continue;

                if (p[0].revents)
                        sim_read_signals(sim, sfd);
                if (serial_i >= 0 && p[serial_i].revents) {
                        if (p[serial_i].revents & POLLOUT)
                                (void) serial_flush(sim);
                        else if (p[serial_i].revents & (POLLHUP | POLLERR | POLLNVAL))
                                serial_gone(sim, 0);
                }
                if (mqtt_i >= 0 && p[mqtt_i].revents) {
                        struct mosquitto *mosq = sim->mqtt.mosq;

                        if (p[mqtt_i].revents & (POLLIN | POLLHUP | POLLERR))
                                mqtt_handle_rc(sim, mosquitto_loop_read(mosq, 1));
                        if (mosquitto_socket(mosq) >= 0 && (p[mqtt_i].revents & POLLOUT))
                                mqtt_handle_rc(sim, mosquitto_loop_write(mosq, 1));
                }
        }

        /* What never made it out counts as lost at source. */
        if (sim->serial.enabled && sim->serial.len > 0) {
                sim->serial.lost += count_newlines(sim->serial.buf + sim->serial.start, sim->serial.len);
                sim->serial.start = sim->serial.len = 0;
        }
        if (sim->mqtt.enabled) {
                if (sim->mqtt.state == MQTT_UP) {
                        sim->mqtt.closing = true;
                        (void) mosquitto_disconnect(sim->mqtt.mosq);
                        (void) mosquitto_loop_write(sim->mqtt.mosq, 1);
                }
                if (sim->qos > 0 && mqtt_outstanding(sim) > 0 && sim->stop != STOP_SIGNAL &&
                    sim->exit_status == 0) {
                        fprintf(stderr, "sc-simulate: mqtt: %" PRIu64 " messages not acknowledged after %g s\n",
                                mqtt_outstanding(sim), sim->drain_timeout);
                        sim->exit_status = 1;
                }
        }
        sim_print_summary(sim);
        return sim->exit_status;
}

/* ---- command line ----------------------------------------------------------------------- */

static void help(void) {
        printf("Usage: sc-simulate [OPTION]...\n"
               "Plays a greenhouse of sensors for sensor-collector: writes frames to a serial port\n"
               "and/or publishes them to an MQTT broker, for demos, benchmarks and soak tests.\n"
               "\n"
               "Sensors:\n"
               "  -n, --sensors N           number of sensors, ids gh1-t01, gh1-t02, ... (default 4)\n"
               "      --sensor-prefix STR   sensor id prefix (default \"gh1-t\")\n"
               "      --metrics LIST        comma-separated metrics every sensor reports, from\n"
               "                            temperature,humidity,soil_moisture,co2,light\n"
               "                            (default: a mix, temperature and humidity everywhere)\n"
               "      --day-length SECS     length of a simulated day (default 86400; 600 for a demo)\n"
               "      --seed N              random seed (default: from the clock; shown in --stats-json)\n"
               "Pace:\n"
               "  -r, --rate FPS            frames per second in total, 0 = as fast as possible (default 10)\n"
               "  -c, --count N             stop after N frames, bad ones included\n"
               "  -d, --duration SECS       stop after SECS seconds (neither: run until SIGINT/SIGTERM)\n"
               "Serial output:\n"
               "  -s, --serial PATH         write frames to PATH (tty, pty, FIFO, file, \"-\" = stdout);\n"
               "                            reopened with backoff when it fails; frames meanwhile are\n"
               "                            counted as lost at source\n"
               "      --serial-format F     json|kv (default json)\n"
               "      --checksum C          none|nmea (default none); nmea appends *HH, the XOR of the\n"
               "                            bytes before '*' (a leading '$' excluded), in hex\n"
               "      --baud N              line speed when PATH is a real tty (default 115200)\n"
               "MQTT output:\n"
               "  -m, --mqtt HOST[:PORT]    publish to this broker (port default 1883; [v6addr]:PORT)\n"
               "      --qos Q               0|1|2 (default 0)\n"
               "      --topic-prefix P      topic prefix (default \"greenhouse\")\n"
               "      --mqtt-format F       json: P/SENSOR/state with {\"sensor\":..,\"ts\":..,METRIC:..};\n"
               "                            value: P/SENSOR/METRIC with the number as payload;\n"
               "                            collectd: P/SENSOR/state with TIME:V1:V2.. (bad frames\n"
               "                            stay JSON)\n"
               "                            (default json)\n"
               "      --client-id ID        MQTT client id (default sc-simulate-PID); QoS 1/2 use a\n"
               "                            persistent session (clean_session false) under this id\n"
               "      --inflight N          QoS 1/2 messages in flight at most (default 20)\n"
               "      --keepalive SECS      MQTT keepalive (default 30)\n"
               "Content:\n"
               "      --number              add a \"seq\" metric to every good frame, +1 each frame\n"
               "      --seq-start N         first seq (default 1)\n"
               "      --ts, --no-ts         include the sensor's timestamp, ms since epoch (default on)\n"
               "      --bad-rate R          fraction 0..1 of frames replaced by bad ones (default 0),\n"
               "                            cycling: garbage, overlong, bad_checksum (with nmea),\n"
               "                            not_finite, missing_sensor, bad_utf8\n"
               "      --burst N             on each SIGUSR2, the next N frames are bad (same kinds;\n"
               "                            for soak tests; default 0)\n"
               "      --silence ID:AFTER:FOR  sensor ID sends nothing from AFTER seconds after the\n"
               "                            start for FOR seconds (a cut cable; FOR 0: for good)\n"
               "      --max-frame N         the receiver's longest serial line; overlong lines just\n"
               "                            exceed it (default 1024, serial.max_frame_bytes)\n"
               "      --max-payload N       the same for MQTT payloads (default 4096,\n"
               "                            mqtt.max_payload_bytes)\n"
               "Run:\n"
               "      --wait SECS           how long to wait for the outputs at startup (default 10)\n"
               "      --drain-timeout SECS  how long to wait for pending and unacknowledged frames\n"
               "                            at the end (default 10)\n"
               "      --stats-json FILE     write the summary as JSON to FILE too (at exit, on SIGUSR1)\n"
               "  -q, --quiet               no progress messages (the summary is still printed)\n"
               "  -h, --help                this text\n"
               "      --version             the version\n"
               "\n"
               "The summary goes to stderr at exit and on SIGUSR1. A second SIGINT/SIGTERM skips the\n"
               "drain. Exit status: 0 done or stopped by SIGINT/SIGTERM; 1 failure (an output not\n"
               "available within --wait, connection refused, QoS 1/2 messages unacknowledged at\n"
               "the end); 64 bad command line.\n");
}

_printf_(1, 2)
static int usage_error(const char *fmt, ...) {
        va_list ap;

        fputs("sc-simulate: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputs("\nTry 'sc-simulate --help'.\n", stderr);
        return -EINVAL;
}

static int parse_u64(const char *opt, const char *s, uint64_t min, uint64_t max, uint64_t *ret) {
        char *end;
        unsigned long long v;

        errno = 0;
        if (!s[0] || s[0] == '-' || s[0] == '+' || s[0] == ' ')
                return usage_error("%s: '%s' is not an integer in %" PRIu64 "..%" PRIu64, opt, s, min, max);
        v = strtoull(s, &end, 10);
        if (errno != 0 || *end || v < min || v > max)
                return usage_error("%s: '%s' is not an integer in %" PRIu64 "..%" PRIu64, opt, s, min, max);
        *ret = v;
        return 0;
}

static int parse_unsigned(const char *opt, const char *s, unsigned min, unsigned max, unsigned *ret) {
        uint64_t v;
        int r = parse_u64(opt, s, min, max, &v);

        if (r < 0)
                return r;
        *ret = (unsigned) v;
        return 0;
}

static int parse_double(const char *opt, const char *s, double min, double max, double *ret) {
        char *end;
        double v;

        errno = 0;
        if (!s[0] || s[0] == ' ')
                return usage_error("%s: '%s' is not a number in %g..%g", opt, s, min, max);
        v = strtod(s, &end);
        if (errno != 0 || *end || !isfinite(v) || v < min || v > max)
                return usage_error("%s: '%s' is not a number in %g..%g", opt, s, min, max);
        *ret = v;
        return 0;
}

static int parse_metrics(const char *s, unsigned *ret) {
        _cleanup_free_ char *copy = strdup(s);
        unsigned mask = 0;
        char *save = NULL;

        if (!copy)
                return -ENOMEM;
        for (char *w = strtok_r(copy, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
                Metric m;

                for (m = 0; m < _METRIC_MAX; m++)
                        if (streq(w, metric_info[m].name))
                                break;
                if (m == _METRIC_MAX)
                        return usage_error("--metrics: unknown metric '%s' (known: temperature, humidity, "
                                           "soil_moisture, co2, light)", w);
                mask |= 1u << m;
        }
        if (mask == 0)
                return usage_error("--metrics: no metric given");
        *ret = mask;
        return 0;
}

static int parse_host_port(const char *s, char **ret_host, int *ret_port) {
        _cleanup_free_ char *host = NULL;
        const char *colon, *port_s = NULL;
        unsigned port = 1883;
        int r;

        if (s[0] == '[') {
                const char *close = strchr(s, ']');

                if (!close || close == s + 1 || (close[1] && close[1] != ':'))
                        return usage_error("--mqtt: '%s' is not HOST[:PORT] or [ADDRESS]:PORT", s);
                host = strndup(s + 1, (size_t) (close - s - 1));
                if (close[1] == ':')
                        port_s = close + 2;
        } else {
                colon = strrchr(s, ':');
                if (colon && strchr(s, ':') != colon)
                        return usage_error("--mqtt: write IPv6 addresses as [ADDRESS]:PORT, not '%s'", s);
                host = colon ? strndup(s, (size_t) (colon - s)) : strdup(s);
                if (colon)
                        port_s = colon + 1;
        }
        if (!host)
                return -ENOMEM;
        if (!host[0])
                return usage_error("--mqtt: '%s' has no host", s);
        if (port_s) {
                r = parse_unsigned("--mqtt port", port_s, 1, 65535, &port);
                if (r < 0)
                        return r;
        }
        *ret_host = TAKE_PTR(host);
        *ret_port = (int) port;
        return 0;
}

enum {
        ARG_SENSOR_PREFIX = 0x100,
        ARG_METRICS,
        ARG_DAY_LENGTH,
        ARG_SEED,
        ARG_SERIAL_FORMAT,
        ARG_CHECKSUM,
        ARG_BAUD,
        ARG_QOS,
        ARG_TOPIC_PREFIX,
        ARG_MQTT_FORMAT,
        ARG_CLIENT_ID,
        ARG_INFLIGHT,
        ARG_KEEPALIVE,
        ARG_NUMBER,
        ARG_SEQ_START,
        ARG_TS,
        ARG_NO_TS,
        ARG_BAD_RATE,
        ARG_BURST,
        ARG_MAX_FRAME,
        ARG_MAX_PAYLOAD,
        ARG_WAIT,
        ARG_DRAIN_TIMEOUT,
        ARG_STATS_JSON,
        ARG_VERSION,
        ARG_SILENCE,
};

/* Returns 1 to run, 0 to exit successfully (--help), -EINVAL for a bad command line. */
static int parse_argv(int argc, char *argv[], Sim *sim) {
        static const struct option options[] = {
                { "sensors",       required_argument, NULL, 'n' },
                { "sensor-prefix", required_argument, NULL, ARG_SENSOR_PREFIX },
                { "metrics",       required_argument, NULL, ARG_METRICS },
                { "day-length",    required_argument, NULL, ARG_DAY_LENGTH },
                { "seed",          required_argument, NULL, ARG_SEED },
                { "rate",          required_argument, NULL, 'r' },
                { "count",         required_argument, NULL, 'c' },
                { "duration",      required_argument, NULL, 'd' },
                { "serial",        required_argument, NULL, 's' },
                { "serial-format", required_argument, NULL, ARG_SERIAL_FORMAT },
                { "checksum",      required_argument, NULL, ARG_CHECKSUM },
                { "baud",          required_argument, NULL, ARG_BAUD },
                { "mqtt",          required_argument, NULL, 'm' },
                { "qos",           required_argument, NULL, ARG_QOS },
                { "topic-prefix",  required_argument, NULL, ARG_TOPIC_PREFIX },
                { "mqtt-format",   required_argument, NULL, ARG_MQTT_FORMAT },
                { "client-id",     required_argument, NULL, ARG_CLIENT_ID },
                { "inflight",      required_argument, NULL, ARG_INFLIGHT },
                { "keepalive",     required_argument, NULL, ARG_KEEPALIVE },
                { "number",        no_argument,       NULL, ARG_NUMBER },
                { "seq-start",     required_argument, NULL, ARG_SEQ_START },
                { "ts",            no_argument,       NULL, ARG_TS },
                { "no-ts",         no_argument,       NULL, ARG_NO_TS },
                { "bad-rate",      required_argument, NULL, ARG_BAD_RATE },
                { "burst",         required_argument, NULL, ARG_BURST },
                { "max-frame",     required_argument, NULL, ARG_MAX_FRAME },
                { "max-payload",   required_argument, NULL, ARG_MAX_PAYLOAD },
                { "wait",          required_argument, NULL, ARG_WAIT },
                { "drain-timeout", required_argument, NULL, ARG_DRAIN_TIMEOUT },
                { "stats-json",    required_argument, NULL, ARG_STATS_JSON },
                { "silence",       required_argument, NULL, ARG_SILENCE },
                { "quiet",         no_argument,       NULL, 'q' },
                { "help",          no_argument,       NULL, 'h' },
                { "version",       no_argument,       NULL, ARG_VERSION },
                {}
        };
        bool seeded = false;
        uint64_t u;
        int c, r = 0;

        opterr = 0;
        while ((c = getopt_long(argc, argv, ":n:r:c:d:s:m:qh", options, NULL)) >= 0) {
                switch (c) {
                case 'n':
                        r = parse_unsigned("--sensors", optarg, 1, 9999, &sim->n_sensors);
                        break;
                case ARG_SENSOR_PREFIX:
                        if (strlen(optarg) > 32 || strpbrk(optarg, " =\"\\/+#,{}*$"))
                                r = usage_error("--sensor-prefix: '%s' must be at most 32 characters, "
                                                "without spaces, quotes or any of =\\/+#,{}*$", optarg);
                        else {
                                for (const char *p = optarg; *p; p++)
                                        if (*p < 0x21 || *p > 0x7e)
                                                r = usage_error("--sensor-prefix: '%s' must be printable ASCII",
                                                                optarg);
                                sim->sensor_prefix = optarg;
                        }
                        break;
                case ARG_METRICS:
                        r = parse_metrics(optarg, &sim->metrics_mask);
                        break;
                case ARG_DAY_LENGTH:
                        r = parse_double("--day-length", optarg, 1, 86400.0 * 365, &sim->day_length);
                        break;
                case ARG_SEED:
                        r = parse_u64("--seed", optarg, 0, UINT64_MAX, &sim->seed);
                        seeded = true;
                        break;
                case 'r':
                        r = parse_double("--rate", optarg, 0, 1e7, &sim->rate);
                        break;
                case 'c':
                        r = parse_u64("--count", optarg, 1, UINT64_MAX, &sim->count);
                        break;
                case 'd':
                        r = parse_double("--duration", optarg, 0.001, 1e9, &sim->duration);
                        break;
                case 's':
                        sim->serial.enabled = true;
                        sim->serial.path = optarg;
                        sim->serial.is_stdout = streq(optarg, "-");
                        if (!optarg[0])
                                r = usage_error("--serial: empty path");
                        break;
                case ARG_SERIAL_FORMAT:
                        if (streq(optarg, "json"))
                                sim->serial_format = FORMAT_JSON;
                        else if (streq(optarg, "kv"))
                                sim->serial_format = FORMAT_KV;
                        else
                                r = usage_error("--serial-format: '%s' is not json or kv", optarg);
                        break;
                case ARG_CHECKSUM:
                        if (streq(optarg, "none"))
                                sim->nmea = false;
                        else if (streq(optarg, "nmea"))
                                sim->nmea = true;
                        else
                                r = usage_error("--checksum: '%s' is not none or nmea", optarg);
                        break;
                case ARG_BAUD:
                        r = parse_unsigned("--baud", optarg, 50, 4000000, &sim->baud);
                        break;
                case 'm':
                        sim->mqtt.enabled = true;
                        free(sim->mqtt.host);
                        sim->mqtt.host = NULL;
                        r = parse_host_port(optarg, &sim->mqtt.host, &sim->mqtt.port);
                        break;
                case ARG_QOS:
                        r = parse_u64("--qos", optarg, 0, 2, &u);
                        sim->qos = (int) u;
                        break;
                case ARG_TOPIC_PREFIX:
                        if (!optarg[0] || strlen(optarg) > 1024 || strpbrk(optarg, "+#") ||
                            optarg[strlen(optarg) - 1] == '/')
                                r = usage_error("--topic-prefix: '%s' must be 1..1024 bytes, without + or #, "
                                                "and not end in '/'", optarg);
                        sim->topic_prefix = optarg;
                        break;
                case ARG_MQTT_FORMAT:
                        if (streq(optarg, "json"))
                                sim->mqtt_format = FORMAT_JSON;
                        else if (streq(optarg, "value"))
                                sim->mqtt_format = FORMAT_VALUE;
                        else if (streq(optarg, "collectd"))
                                sim->mqtt_format = FORMAT_COLLECTD;
                        else
                                r = usage_error("--mqtt-format: '%s' is not json, value or collectd", optarg);
                        break;
                case ARG_CLIENT_ID:
                        if (!optarg[0] || strlen(optarg) > 65535)
                                r = usage_error("--client-id: must be 1..65535 bytes");
                        sim->client_id = optarg;
                        break;
                case ARG_INFLIGHT:
                        r = parse_unsigned("--inflight", optarg, 1, 65535, &sim->inflight);
                        break;
                case ARG_KEEPALIVE:
                        r = parse_unsigned("--keepalive", optarg, 5, 65535, &sim->keepalive);
                        break;
                case ARG_NUMBER:
                        sim->number = true;
                        break;
                case ARG_SEQ_START:
                        r = parse_u64("--seq-start", optarg, 0, UINT64_MAX / 2, &sim->seq_start);
                        break;
                case ARG_TS:
                        sim->ts = true;
                        break;
                case ARG_NO_TS:
                        sim->ts = false;
                        break;
                case ARG_BAD_RATE:
                        r = parse_double("--bad-rate", optarg, 0, 1, &sim->bad_rate);
                        break;
                case ARG_BURST:
                        r = parse_u64("--burst", optarg, 0, 1000000, &sim->burst);
                        break;
                case ARG_MAX_FRAME:
                        r = parse_u64("--max-frame", optarg, 256, 1024 * 1024, &u);
                        sim->max_frame = (size_t) u;
                        break;
                case ARG_MAX_PAYLOAD:
                        r = parse_u64("--max-payload", optarg, 256, 1024 * 1024, &u);
                        sim->max_payload = (size_t) u;
                        break;
                case ARG_WAIT:
                        r = parse_double("--wait", optarg, 0.1, 1e6, &sim->wait);
                        break;
                case ARG_DRAIN_TIMEOUT:
                        r = parse_double("--drain-timeout", optarg, 0, 1e6, &sim->drain_timeout);
                        break;
                case ARG_STATS_JSON:
                        sim->stats_json = optarg;
                        break;
                case 'q':
                        sim->quiet = true;
                        break;
                case 'h':
                        help();
                        return 0;
                case ARG_SILENCE: {
                        char *colon = strchr(optarg, ':'), *colon2 = colon ? strchr(colon + 1, ':') : NULL, *end;

                        if (!colon || !colon2 || colon == optarg)
                                return usage_error("--silence: '%s' is not ID:AFTER:FOR", optarg);
                        *colon = 0;
                        sim->silence_id = optarg;
                        sim->silence_after = strtod(colon + 1, &end);
                        if (end != colon2 || sim->silence_after < 0)
                                return usage_error("--silence: AFTER must be seconds >= 0");
                        sim->silence_for = strtod(colon2 + 1, &end);
                        if (*end || end == colon2 + 1 || sim->silence_for < 0)
                                return usage_error("--silence: FOR must be seconds >= 0");
                        if (sim->silence_for == 0)
                                sim->silence_for = 1e12;
                        break;
                }
                case ARG_VERSION:
                        printf("sc-simulate %s\n", SC_VERSION);
                        return 0;
                case ':':
                        return usage_error("option '%s' needs an argument", argv[optind - 1]);
                case '?':
                default:
                        if (optopt > 0 && optopt < 0x100)
                                return usage_error("unknown option '-%c'", optopt);
                        return usage_error("unknown option '%s'", argv[optind - 1]);
                }
                if (r < 0)
                        return r;
        }
        if (optind < argc)
                return usage_error("unexpected argument '%s'", argv[optind]);
        if (!sim->serial.enabled && !sim->mqtt.enabled)
                return usage_error("nothing to do: give --serial PATH and/or --mqtt HOST[:PORT]");
        if (!seeded)
                sim->seed = now_usec(CLOCK_REALTIME) ^ ((uint64_t) getpid() << 32);
        return 1;
}

static void sim_done(Sim *sim) {
        if (sim->sensors)
                for (unsigned i = 0; i < sim->n_sensors; i++) {
                        free(sim->sensors[i].state_topic);
                        for (Metric m = 0; m <= _METRIC_MAX; m++)
                                free(sim->sensors[i].metric_topic[m]);
                }
        free(sim->sensors);
        for (Metric m = 0; m <= _METRIC_MAX; m++)
                free(sim->missing_topic[m]);
        if (sim->mqtt.mosq)
                mosquitto_destroy(sim->mqtt.mosq);
        free(sim->mqtt.host);
        if (sim->serial.fd >= 0 && !sim->serial.is_stdout)
                safe_close(sim->serial.fd);
        free(sim->serial.buf);
        free(sim->line);
        free(sim->payload);
}

static int sim_setup(Sim *sim) {
        _cleanup_free_ char *default_id = NULL;
        struct tm tm;
        time_t now = time(NULL);
        int r;

        sim->rng.s = sim->seed;
        sim->sim_speed = 86400.0 / sim->day_length;
        sim->sim_epoch_s = (int64_t) now + (localtime_r(&now, &tm) ? tm.tm_gmtoff : 0);
        sim->start_usec = now_usec(CLOCK_MONOTONIC);
        sim->next_seq = sim->seq_start;

        /* The longest line: an overlong frame (max_frame + 64) or a good frame (a few hundred
         * bytes), with checksum. */
        sim->line_size = MAX(sim->max_frame, sim->max_payload) + 1024;
        sim->line = malloc(sim->line_size);
        sim->payload = malloc(sim->line_size);
        if (!sim->line || !sim->payload)
                return -ENOMEM;

        for (BadKind k = 0; k < _BAD_MAX; k++) {
                if (k == BAD_CHECKSUM && !(sim->serial.enabled && sim->nmea))
                        continue;
                sim->bad_kinds[sim->n_bad_kinds++] = k;
        }

        if (sim->serial.enabled) {
                sim->serial.cap = SIM_SERIAL_CHUNK + 2 * (sim->line_size + 1);
                sim->serial.buf = malloc(sim->serial.cap);
                if (!sim->serial.buf)
                        return -ENOMEM;
        }

        if (sim->mqtt.enabled) {
                MqttOut *m = &sim->mqtt;

                if (!sim->client_id) {
                        default_id = strdup_printf("sc-simulate-%d", (int) getpid());
                        if (!default_id)
                                return -ENOMEM;
                }
                /* QoS 1/2: a persistent session, so the broker keeps our session (and we resend
                 * what it did not acknowledge) across a restart. */
                m->mosq = mosquitto_new(sim->client_id ?: default_id, sim->qos == 0, sim);
                if (!m->mosq)
                        return -errno;
                (void) mosquitto_int_option(m->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
                r = mosquitto_max_inflight_messages_set(m->mosq, sim->inflight);
                if (r != MOSQ_ERR_SUCCESS)
                        return -EINVAL;
                mosquitto_connect_callback_set(m->mosq, on_connect);
                mosquitto_disconnect_callback_set(m->mosq, on_disconnect);
                mosquitto_publish_callback_set(m->mosq, on_publish);
        }

        return sim_setup_sensors(sim);
}

int main(int argc, char *argv[]) {
        Sim sim = {
                .n_sensors = 4,
                .sensor_prefix = "gh1-t",
                .day_length = 86400,
                .rate = 10,
                .serial_format = FORMAT_JSON,
                .baud = 115200,
                .topic_prefix = "greenhouse",
                .mqtt_format = FORMAT_JSON,
                .inflight = 20,
                .keepalive = 30,
                .seq_start = 1,
                .ts = true,
                .max_frame = 1024,
                .max_payload = 4096,
                .wait = 10,
                .drain_timeout = 10,
                .serial.fd = -EBADF,
        };
        int r;

        r = parse_argv(argc, argv, &sim);
        if (r <= 0) {
                sim_done(&sim);
                return r == 0 ? 0 : r == -ENOMEM ? 1 : EXIT_USAGE;
        }

        /* A vanished reader of a pipe or socket must be an error we count, not a kill. */
        signal(SIGPIPE, SIG_IGN);
        mosquitto_lib_init();

        r = sim_setup(&sim);
        if (r < 0) {
                fprintf(stderr, "sc-simulate: setup failed: %s\n", strerror(-r));
                r = 1;
        } else
                r = sim_run(&sim);

        sim_done(&sim);
        mosquitto_lib_cleanup();
        return r;
}
