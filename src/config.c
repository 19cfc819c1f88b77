/* SPDX-License-Identifier: MIT */
/* The configuration loader: JSON text in, a validated Config out, every error with its location. */
#include <assert.h>
#include <ctype.h>
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>
#include <sys/stat.h>
#include <syslog.h>

#include "collector/config.h"
#include "collector/upstream-payload.h"

#define CONFIG_FILE_MAX (1024 * 1024)  /* bytes; a config is a few KiB */
#define ERRORS_MAX 100                 /* more are counted, not listed */
#define FIELDS_MAX 32                  /* per section */
#define SHOW_MAX 64                    /* bytes of a user's string quoted in a message */
#define CLIENT_ID_MAX 64
#define CLIENT_ID_CHARS "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-"
#define CUSTOM_BAUD_MAX 4000000

/* ---- enumerations: index = enum value, NULL = not allowed there ---- */

static const char *const parity_names[_SERIAL_PARITY_MAX] = {
        [SERIAL_PARITY_NONE] = "none",
        [SERIAL_PARITY_ODD] = "odd",
        [SERIAL_PARITY_EVEN] = "even",
        [SERIAL_PARITY_MARK] = "mark",
        [SERIAL_PARITY_SPACE] = "space",
};

static const char *const flow_control_names[_SERIAL_FLOW_CONTROL_MAX] = {
        [SERIAL_FLOW_CONTROL_NONE] = "none",
        [SERIAL_FLOW_CONTROL_XONXOFF] = "xonxoff",
        [SERIAL_FLOW_CONTROL_RTSCTS] = "rtscts",
};

static const char *const synchronous_names[_STORE_SYNCHRONOUS_MAX] = {
        [STORE_SYNCHRONOUS_NORMAL] = "normal",
        [STORE_SYNCHRONOUS_FULL] = "full",
};

static const char *const clock_trust_names[_CLOCK_TRUST_MAX] = {
        [CLOCK_TRUST_AUTO] = "auto",
        [CLOCK_TRUST_SYNC] = "sync",
        [CLOCK_TRUST_ALWAYS] = "always",
};

static const char *const protocol_names[_MQTT_PROTOCOL_MAX] = {
        [MQTT_PROTOCOL_V311] = "3.1.1",
        [MQTT_PROTOCOL_V5] = "5",
};

/* frame.c owns the FrameFormat/FrameChecksum string helpers; these are the subsets each input
 * accepts (serial lines are json or kv, MQTT payloads json or value). */
static const char *const serial_format_names[] = {
        [FRAME_FORMAT_JSON] = "json",
        [FRAME_FORMAT_KV] = "kv",
};

static const char *const topic_format_names[] = {
        [FRAME_FORMAT_JSON] = "json",
        [FRAME_FORMAT_VALUE] = "value",
};

static const char *const checksum_names[_FRAME_CHECKSUM_MAX] = {
        [FRAME_CHECKSUM_NONE] = "none",
        [FRAME_CHECKSUM_NMEA] = "nmea",
};

static const char *const line_end_names[_LINE_END_MAX] = {
        [LINE_END_LF] = "lf",
        [LINE_END_CR] = "cr",
        [LINE_END_ANY] = "any",
};

static const char *const log_level_names[] = {
        [LOG_DEBUG] = "debug",
        [LOG_INFO] = "info",
        [LOG_NOTICE] = "notice",
        [LOG_WARNING] = "warning",
        [LOG_ERR] = "err",
};

/* Accepted, not listed: "error" as --log-level takes it. */
static const char *const log_level_aliases[] = {
        [LOG_ERR] = "error",
};

static const char *const tls_version_names[] = { "tlsv1.2", "tlsv1.3" };

static const uint32_t standard_bauds[] = {
        50,    75,    110,   134,   150,    200,    300,    600,    1200,   1800,   2400,
        4800,  9600,  19200, 38400, 57600,  115200, 230400, 460800, 500000, 576000, 921600,
};

const char *serial_parity_to_string(SerialParity p) {
        if (p < 0 || p >= _SERIAL_PARITY_MAX)
                return NULL;
        return parity_names[p];
}

const char *serial_flow_control_to_string(SerialFlowControl f) {
        if (f < 0 || f >= _SERIAL_FLOW_CONTROL_MAX)
                return NULL;
        return flow_control_names[f];
}

const char *store_synchronous_to_string(StoreSynchronous s) {
        if (s < 0 || s >= _STORE_SYNCHRONOUS_MAX)
                return NULL;
        return synchronous_names[s];
}

const char *clock_trust_to_string(ClockTrust t) {
        if (t < 0 || t >= _CLOCK_TRUST_MAX)
                return NULL;
        return clock_trust_names[t];
}

const char *mqtt_protocol_to_string(MqttProtocol p) {
        if (p < 0 || p >= _MQTT_PROTOCOL_MAX)
                return NULL;
        return protocol_names[p];
}

bool serial_baud_is_standard(uint32_t baud) {
        for (size_t i = 0; i < ELEMENTSOF(standard_bauds); i++)
                if (standard_bauds[i] == baud)
                        return true;
        return false;
}

/* ---- error collection ---- */

typedef struct Ctx {
        const char *name;             /* file name as given */
        char **errors;                /* NULL-terminated */
        size_t n_errors;
        size_t n_suppressed;
        bool oom;
} Ctx;

static void ctx_push(Ctx *ctx, char *msg) {
        char **l;

        if (!msg) {
                ctx->oom = true;
                return;
        }
        l = realloc(ctx->errors, (ctx->n_errors + 2) * sizeof(char *));
        if (!l) {
                ctx->oom = true;
                free(msg);
                return;
        }
        l[ctx->n_errors++] = msg;
        l[ctx->n_errors] = NULL;
        ctx->errors = l;
}

static void ctx_add(Ctx *ctx, char *msg) {
        if (msg && ctx->n_errors >= ERRORS_MAX) {
                ctx->n_suppressed++;
                free(msg);
                return;
        }
        ctx_push(ctx, msg);
}

/* "NAME: PATH: message" */
_printf_(3, 4) static void error_at(Ctx *ctx, const char *path, const char *format, ...) {
        _cleanup_free_ char *msg = NULL;
        char *line = NULL;
        va_list ap;

        va_start(ap, format);
        if (vasprintf(&msg, format, ap) < 0)
                msg = NULL;
        va_end(ap);
        if (!msg || asprintf(&line, "%s: %s: %s", ctx->name, path, msg) < 0)
                line = NULL;
        ctx_add(ctx, line);
}

/* 1-based; columns count characters, not bytes, as editors show them. */
static void line_column(const char *text, size_t offset, unsigned *ret_line, unsigned *ret_column) {
        unsigned line = 1, column = 1;

        for (size_t i = 0; i < offset; i++)
                if (text[i] == '\n')
                        line++, column = 1;
                else if (((unsigned char) text[i] & 0xC0) != 0x80)
                        column++;
        *ret_line = line;
        *ret_column = column;
}

/* "NAME:LINE:COLUMN: message" */
_printf_(4, 5) static void error_at_position(Ctx *ctx, const char *text, size_t offset, const char *format, ...) {
        _cleanup_free_ char *msg = NULL;
        unsigned line, column;
        char *l = NULL;
        va_list ap;

        line_column(text, offset, &line, &column);

        va_start(ap, format);
        if (vasprintf(&msg, format, ap) < 0)
                msg = NULL;
        va_end(ap);
        if (!msg || asprintf(&l, "%s:%u:%u: %s", ctx->name, line, column, msg) < 0)
                l = NULL;
        ctx_add(ctx, l);
}

static bool utf8_valid(const char *s) {
        return frame_utf8_valid(s, strlen(s));
}

/* A user's string made safe to print inside quotes: control characters, quotes and backslashes
 * escaped, invalid UTF-8 as \xHH, cut after SHOW_MAX bytes. Returns NULL on OOM. */
static char *show(const char *s) {
        bool valid = utf8_valid(s);
        size_t n = strlen(s), cut = MIN(n, (size_t) SHOW_MAX);
        char *buf, *p;

        while (valid && cut < n && cut > 0 && ((unsigned char) s[cut] & 0xC0) == 0x80)
                cut--;         /* do not split a character */
        buf = malloc(cut * 4 + 4);
        if (!buf)
                return NULL;
        p = buf;
        for (size_t i = 0; i < cut; i++) {
                unsigned char c = (unsigned char) s[i];

                if (c == '"' || c == '\\')
                        *p++ = '\\', *p++ = (char) c;
                else if (valid && c == 0xC2 && i + 1 < cut && (unsigned char) s[i + 1] <= 0x9F)
                        p += sprintf(p, "\\u%04x", (unsigned char) s[++i]); /* a C1 control, U+0080..U+009F */
                else if (c < 0x20 || c == 0x7F || (c >= 0x80 && !valid))
                        p += sprintf(p, "\\x%02x", c);
                else
                        *p++ = (char) c;
        }
        if (cut < n)
                p = stpcpy(p, "...");
        *p = 0;
        return buf;
}

/* A JSON pointer (RFC 6901) for parent + key, made printable. Returns NULL on OOM. */
static char *path_key(const char *parent, const char *key) {
        _cleanup_free_ char *escaped = NULL, *shown = NULL;
        char *p, *r;

        escaped = malloc(strlen(key) * 2 + 1);
        if (!escaped)
                return NULL;
        p = escaped;
        for (const char *k = key; *k; k++)
                if (*k == '~')
                        *p++ = '~', *p++ = '0';
                else if (*k == '/')
                        *p++ = '~', *p++ = '1';
                else
                        *p++ = *k;
        *p = 0;
        shown = show(escaped);
        if (!shown || asprintf(&r, "%s/%s", streq(parent, "/") ? "" : parent, shown) < 0)
                return NULL;
        return r;
}

static char *path_index(const char *parent, size_t i) {
        char *r;

        if (asprintf(&r, "%s/%zu", parent, i) < 0)
                return NULL;
        return r;
}

static const char *json_type_name(const cJSON *v) {
        if (cJSON_IsBool(v))
                return "a boolean";
        if (cJSON_IsNull(v))
                return "null";
        if (cJSON_IsNumber(v))
                return "a number";
        if (cJSON_IsString(v))
                return "a string";
        if (cJSON_IsArray(v))
                return "an array";
        if (cJSON_IsObject(v))
                return "an object";
        return "something else";
}

/* Edit distance, case-insensitive, for "did you mean"; both strings are short here. */
static size_t distance(const char *a, const char *b) {
        size_t la = strlen(a), lb = strlen(b), row[SHOW_MAX + 1];

        if (la > SHOW_MAX || lb > SHOW_MAX)
                return SIZE_MAX;
        for (size_t j = 0; j <= lb; j++)
                row[j] = j;
        for (size_t i = 1; i <= la; i++) {
                size_t diag = row[0];

                row[0] = i;
                for (size_t j = 1; j <= lb; j++) {
                        size_t up = row[j];
                        size_t cost = (a[i - 1] | 0x20) == (b[j - 1] | 0x20) ? 0 : 1;

                        row[j] = MIN(MIN(row[j] + 1, row[j - 1] + 1), diag + cost);
                        diag = up;
                }
        }
        return row[lb];
}

/* The closest of names (NULL entries skipped) if close enough to be a typo, else NULL. */
static const char *suggest(const char *s, const char *const *names, size_t n) {
        const char *best = NULL;
        size_t best_d = SIZE_MAX;

        for (size_t i = 0; i < n; i++) {
                size_t d;

                if (!names[i])
                        continue;
                /* Two-letter names are too easy to hit by chance: only a case slip counts. */
                d = distance(s, names[i]);
                if (d < best_d && d <= (strlen(names[i]) < 3 ? 0u : strlen(names[i]) <= 4 ? 1u : 2u))
                        best = names[i], best_d = d;
        }
        if (best)
                return best;
        /* "logging" for "log", "hostname" for "host", "retention" for "retention_days". */
        for (size_t i = 0; i < n; i++) {
                size_t a = strlen(s), b;

                if (!names[i])
                        continue;
                b = strlen(names[i]);
                if (MIN(a, b) >= 3 && strncasecmp(s, names[i], MIN(a, b)) == 0)
                        return names[i];
        }
        return NULL;
}

/* "a, b, c" of the non-NULL names. Returns NULL on OOM. */
static char *names_list(const char *const *names, size_t n) {
        size_t len = 1;
        char *r, *p;

        for (size_t i = 0; i < n; i++)
                if (names[i])
                        len += strlen(names[i]) + 2;
        r = p = malloc(len);
        if (!r)
                return NULL;
        *p = 0;
        for (size_t i = 0; i < n; i++)
                if (names[i])
                        p += sprintf(p, "%s%s", p == r ? "" : ", ", names[i]);
        return r;
}

/* ---- checks for string values: NULL when fine, else the predicate of "\"VALUE\" ..." ---- */

static const char *check_absolute_path(const char *s) {
        return s[0] == '/' ? NULL : "is not an absolute path";
}

static const char *check_host(const char *s) {
        for (const char *p = s; *p; p++)
                if ((unsigned char) *p <= ' ' || *p == 0x7F)
                        return "is not a host name or address";
        return NULL;
}

static const char *check_client_id(const char *s) {
        for (const char *p = s; *p; p++)
                if (!strchr(CLIENT_ID_CHARS, *p))
                        return "may only contain 0-9, A-Z, a-z, '_' and '-'";
        return NULL;
}

static const char *check_utf8(const char *s) {
        return utf8_valid(s) ? NULL : "is not valid UTF-8";
}

/* Sensor ids and metric names: the rule frame.c applies to those that arrive. */
static const char *check_id(const char *s) {
        return frame_id_valid(s, strlen(s)) ? NULL : "may only contain printable ASCII characters, no spaces";
}

/* ---- the tables ---- */

typedef enum FieldType {
        FIELD_BOOL,
        FIELD_INT,      /* unsigned integer of 2, 4 or 8 bytes */
        FIELD_SECONDS,  /* number of seconds, stored as uint64_t usec */
        FIELD_STRING,   /* char *, with an optional fixed set of values */
        FIELD_ENUM,     /* int-sized enum, from names[] */
        FIELD_CUSTOM,
} FieldType;

typedef enum FieldState {
        FIELD_ABSENT,   /* default applied */
        FIELD_SET,      /* given and valid */
        FIELD_INVALID,  /* given, error reported, default applied */
} FieldState;

typedef struct Field Field;
struct Field {
        const char *key;
        FieldType type;
        size_t offset, size;
        int64_t min, max;                       /* INT: value; STRING: length in bytes */
        double min_sec, max_sec;                /* SECONDS */
        const char *const *names;               /* ENUM; STRING: the allowed values */
        size_t n_names;
        const char *const *aliases;             /* ENUM: more accepted names, same indexing */
        size_t n_aliases;
        const char *(*check)(const char *s);    /* STRING */
        bool (*parse)(Ctx *ctx, const char *path, const cJSON *v, void *base); /* CUSTOM */
        int64_t def;                            /* BOOL, INT, ENUM */
        double def_sec;                         /* SECONDS */
        const char *def_str;                    /* STRING, may be NULL */
};

#define MEMBER(st, m) .offset = offsetof(st, m), .size = sizeof(((st *) NULL)->m)
#define F_BOOL(k, st, m, d) { .key = k, .type = FIELD_BOOL, MEMBER(st, m), .def = d }
#define F_INT(k, st, m, lo, hi, d) { .key = k, .type = FIELD_INT, MEMBER(st, m), .min = lo, .max = hi, .def = d }
#define F_SECONDS(k, st, m, lo, hi, d)                                                              \
        { .key = k, .type = FIELD_SECONDS, MEMBER(st, m), .min_sec = lo, .max_sec = hi, .def_sec = d }
#define F_STRING(k, st, m, lo, hi, chk, d)                                                          \
        { .key = k, .type = FIELD_STRING, MEMBER(st, m), .min = lo, .max = hi, .check = chk, .def_str = d }
#define F_CHOICE(k, st, m, tbl)                                                                     \
        { .key = k, .type = FIELD_STRING, MEMBER(st, m), .names = tbl, .n_names = ELEMENTSOF(tbl) }
#define F_ENUM(k, st, m, tbl, d)                                                                    \
        { .key = k, .type = FIELD_ENUM, MEMBER(st, m), .names = tbl, .n_names = ELEMENTSOF(tbl), .def = d }
#define F_CUSTOM(k, fn) { .key = k, .type = FIELD_CUSTOM, .parse = fn }

/* Serial keys only the cross-checks read. */
typedef struct SerialExtra {
        SerialConfig *serial;
        bool custom_baud;
} SerialExtra;

static const Field serial_fields[] = {
        F_BOOL("enabled", SerialConfig, enabled, true),
        F_STRING("device", SerialConfig, device, 1, 4095, check_absolute_path, NULL),
        F_INT("baud", SerialConfig, baud, 1, CUSTOM_BAUD_MAX, 9600),
        F_BOOL("custom_baud", SerialExtra, custom_baud, false), /* base: see parse_serial() */
        F_INT("data_bits", SerialConfig, data_bits, 5, 8, 8),
        F_ENUM("parity", SerialConfig, parity, parity_names, SERIAL_PARITY_NONE),
        F_INT("stop_bits", SerialConfig, stop_bits, 1, 2, 1),
        F_ENUM("flow_control", SerialConfig, flow_control, flow_control_names, SERIAL_FLOW_CONTROL_NONE),
        F_ENUM("format", SerialConfig, format, serial_format_names, FRAME_FORMAT_JSON),
        F_ENUM("checksum", SerialConfig, checksum, checksum_names, FRAME_CHECKSUM_NONE),
        F_INT("max_frame_bytes", SerialConfig, max_frame_bytes, 16, 65536, 1024),
        F_ENUM("line_end", SerialConfig, line_end, line_end_names, LINE_END_LF),
        /* Minimums: a budget shorter than one retry, or a stop shorter than a commit, makes the
         * daemon give up at once; such values are typos, not settings. */
        F_SECONDS("reopen_timeout", SerialConfig, reopen_timeout_usec, 0.1, 86400, 120),
        F_SECONDS("idle_timeout", SerialConfig, idle_timeout_usec, 0, 86400, 0),
};

static bool parse_topics(Ctx *ctx, const char *path, const cJSON *v, void *base);

static const Field mqtt_fields[] = {
        F_BOOL("enabled", MqttConfig, enabled, true),
        F_STRING("host", MqttConfig, host, 1, 255, check_host, "localhost"),
        F_INT("port", MqttConfig, port, 1, 65535, 1883),
        F_STRING("client_id", MqttConfig, client_id, 1, CLIENT_ID_MAX, check_client_id, NULL),
        F_ENUM("protocol", MqttConfig, protocol, protocol_names, MQTT_PROTOCOL_V311),
        F_BOOL("clean_session", MqttConfig, clean_session, false),
        F_INT("session_expiry", MqttConfig, session_expiry, 0, UINT32_MAX, 86400),
        F_INT("keepalive", MqttConfig, keepalive, 5, 65535, 30),
        F_STRING("username", MqttConfig, username, 1, 65535, check_utf8, NULL),
        F_STRING("password_file", MqttConfig, password_file, 1, 4095, check_absolute_path, NULL),
        F_STRING("cafile", MqttConfig, cafile, 1, 4095, check_absolute_path, NULL),
        F_STRING("capath", MqttConfig, capath, 1, 4095, check_absolute_path, NULL),
        F_STRING("certfile", MqttConfig, certfile, 1, 4095, check_absolute_path, NULL),
        F_STRING("keyfile", MqttConfig, keyfile, 1, 4095, check_absolute_path, NULL),
        F_CHOICE("tls_version", MqttConfig, tls_version, tls_version_names),
        F_SECONDS("max_offline", MqttConfig, max_offline_usec, 0.5, 604800, 600),
        F_INT("max_payload_bytes", MqttConfig, max_payload_bytes, 16, 268435455, 4096),
        F_CUSTOM("topics", parse_topics),
};

static const Field topic_fields[] = {
        F_STRING("filter", MqttTopicConfig, filter, 1, 65535, NULL, NULL), /* see parse_topic() */
        F_INT("qos", MqttTopicConfig, qos, 0, 2, 1),
        F_ENUM("format", MqttTopicConfig, format, topic_format_names, FRAME_FORMAT_JSON),
        F_STRING("sensor", MqttTopicConfig, sensor, 1, SENSOR_ID_MAX, check_id, NULL),
        F_STRING("metric", MqttTopicConfig, metric, 1, METRIC_NAME_MAX, check_id, NULL),
};

static const Field store_fields[] = {
        F_STRING("path", StoreConfig, path, 1, 4095, check_absolute_path, STORE_DEFAULT_PATH),
        F_ENUM("synchronous", StoreConfig, synchronous, synchronous_names, STORE_SYNCHRONOUS_NORMAL),
        F_INT("commit_interval_ms", StoreConfig, commit_interval_ms, 1, 10000, 20),
        /* 10000: far above what one commit_interval_ms of the fastest burst measured brings
         * (about 4000 rows in 20 ms), so that the time window decides and a burst is one commit
         * per window, not several rewriting the same index pages (docs/BENCHMARKS.md). */
        F_INT("commit_max_rows", StoreConfig, commit_max_rows, 1, 100000, 10000),
        F_INT("retention_days", StoreConfig, retention_days, 0, 36500, 0),
        F_INT("max_size_mb", StoreConfig, max_size_mb, 0, 1048576, 0),
        F_INT("max_names", StoreConfig, max_names, 0, 100000000, STORE_DEFAULT_MAX_NAMES),
};

static const Field clock_fields[] = {
        F_ENUM("trust", ClockConfig, trust, clock_trust_names, CLOCK_TRUST_AUTO),
        /* Up to ten years: a sensor whose clock is further off than that is flagged anyway. */
        F_SECONDS("sensor_ts_tolerance", ClockConfig, sensor_ts_tolerance_usec, 1, 315360000, 86400),
};

static const Field log_fields[] = {
        { .key = "level", .type = FIELD_ENUM, MEMBER(LogConfig, level), .names = log_level_names,
          .n_names = ELEMENTSOF(log_level_names), .aliases = log_level_aliases,
          .n_aliases = ELEMENTSOF(log_level_aliases), .def = LOG_INFO },
};

static const Field supervisor_fields[] = {
        F_SECONDS("stop_timeout", SupervisorConfig, stop_timeout_usec, 0.5, 3600, 10),
        F_SECONDS("status_interval", SupervisorConfig, status_interval_usec, 0.1, 3600, 1),
};

static const char *check_topic_template(const char *s);
static const char *check_backlog_topic(const char *s);

static const Field upstream_fields[] = {
        F_BOOL("enabled", UpstreamConfig, enabled, false),
        F_STRING("host", UpstreamConfig, host, 1, 255, check_host, "localhost"),
        F_INT("port", UpstreamConfig, port, 1, 65535, 1883),
        F_ENUM("protocol", UpstreamConfig, protocol, protocol_names, MQTT_PROTOCOL_V311),
        F_STRING("client_id", UpstreamConfig, client_id, 1, CLIENT_ID_MAX, check_client_id, NULL),
        F_STRING("gateway_id", UpstreamConfig, gateway_id, 1, CLIENT_ID_MAX, check_client_id, NULL),
        F_INT("keepalive", UpstreamConfig, keepalive, 5, 65535, 30),
        F_STRING("username", UpstreamConfig, username, 1, 65535, check_utf8, NULL),
        F_STRING("password_file", UpstreamConfig, password_file, 1, 4095, check_absolute_path, NULL),
        F_STRING("cafile", UpstreamConfig, cafile, 1, 4095, check_absolute_path, NULL),
        F_STRING("capath", UpstreamConfig, capath, 1, 4095, check_absolute_path, NULL),
        F_STRING("certfile", UpstreamConfig, certfile, 1, 4095, check_absolute_path, NULL),
        F_STRING("keyfile", UpstreamConfig, keyfile, 1, 4095, check_absolute_path, NULL),
        F_CHOICE("tls_version", UpstreamConfig, tls_version, tls_version_names),
        F_STRING("topic", UpstreamConfig, topic, 1, 1024, check_topic_template, "sensor-collector/{gateway}/{sensor}/{metric}"),
        F_STRING("backlog_topic", UpstreamConfig, backlog_topic, 1, 1024, check_backlog_topic, "sensor-collector/{gateway}/backlog"),
        F_STRING("status_topic", UpstreamConfig, status_topic, 1, 1024, check_backlog_topic, "sensor-collector/{gateway}/status"),
        F_STRING("live_batch_topic", UpstreamConfig, live_batch_topic, 1, 1024, check_backlog_topic, NULL),
        F_INT("qos", UpstreamConfig, qos, 1, 2, 1),
        F_INT("max_inflight", UpstreamConfig, max_inflight, 1, 65535, 20),
        F_INT("backlog_rate", UpstreamConfig, backlog_rate, 1, 1000000, 1000),
        F_INT("batch_size", UpstreamConfig, batch_size, 1, 1000, 100),
};

enum { SECTION_SERIAL, SECTION_MQTT, SECTION_STORE, SECTION_LOG, SECTION_SUPERVISOR, SECTION_CLOCK, SECTION_SENSORS,
       SECTION_UPSTREAM };
static const char *const section_names[] = {
        [SECTION_SERIAL] = "serial",
        [SECTION_MQTT] = "mqtt",
        [SECTION_STORE] = "store",
        [SECTION_LOG] = "log",
        [SECTION_SUPERVISOR] = "supervisor",
        [SECTION_CLOCK] = "clock",
        [SECTION_SENSORS] = "sensors",
        [SECTION_UPSTREAM] = "upstream",
};

/* ---- applying a table ---- */

typedef struct Section {
        const char *path;             /* "/serial" */
        const Field *fields;
        size_t n_fields;
        FieldState state[FIELDS_MAX];
} Section;

static FieldState section_state(const Section *s, const char *key) {
        for (size_t i = 0; i < s->n_fields; i++)
                if (streq(s->fields[i].key, key))
                        return s->state[i];
        assert(!"unknown key in a cross-check");
        return FIELD_ABSENT;
}

static bool given(const Section *s, const char *key) {
        return section_state(s, key) != FIELD_ABSENT;
}

static bool valid(const Section *s, const char *key) {
        return section_state(s, key) == FIELD_SET;
}

static void set_uint(void *p, size_t size, uint64_t v) {
        switch (size) {
        case sizeof(uint16_t):
                *(uint16_t *) p = (uint16_t) v;
                break;
        case sizeof(uint32_t):
                *(uint32_t *) p = (uint32_t) v;
                break;
        case sizeof(uint64_t):
                *(uint64_t *) p = v;
                break;
        default:
                assert(!"unsupported integer size");
        }
}

static int set_string(char **p, const char *s) {
        char *copy = NULL;

        if (s) {
                copy = strdup(s);
                if (!copy)
                        return -ENOMEM;
        }
        free(*p);
        *p = copy;
        return 0;
}

static void apply_default(Ctx *ctx, const Field *f, void *base) {
        void *p = (uint8_t *) base + f->offset;

        switch (f->type) {
        case FIELD_BOOL:
                *(bool *) p = f->def;
                break;
        case FIELD_INT:
                set_uint(p, f->size, (uint64_t) f->def);
                break;
        case FIELD_SECONDS:
                *(uint64_t *) p = (uint64_t) llround(f->def_sec * (double) USEC_PER_SEC);
                break;
        case FIELD_STRING:
                if (set_string(p, f->def_str) < 0)
                        ctx->oom = true;
                break;
        case FIELD_ENUM:
                *(int *) p = (int) f->def;
                break;
        case FIELD_CUSTOM:
                break;
        }
}

static void format_seconds_range(const Field *f, char *buf, size_t size) {
        snprintf(buf, size, "%.15g..%.15g seconds", f->min_sec, f->max_sec);
}

static bool parse_choice(Ctx *ctx, const char *path, const Field *f, const cJSON *v, int *ret_index) {
        _cleanup_free_ char *list = names_list(f->names, f->n_names), *shown = NULL;

        if (!list) {
                ctx->oom = true;
                return false;
        }
        if (!cJSON_IsString(v)) {
                error_at(ctx, path, "expected a string (one of %s), got %s", list, json_type_name(v));
                return false;
        }
        for (size_t i = 0; i < f->n_names; i++)
                if (f->names[i] && streq(f->names[i], v->valuestring)) {
                        *ret_index = (int) i;
                        return true;
                }
        for (size_t i = 0; i < f->n_aliases; i++)
                if (f->aliases[i] && streq(f->aliases[i], v->valuestring)) {
                        *ret_index = (int) i;
                        return true;
                }
        const char *hint = suggest(v->valuestring, f->names, f->n_names);
        shown = show(v->valuestring);
        if (!shown) {
                ctx->oom = true;
                return false;
        }
        if (hint)
                error_at(ctx, path, "\"%s\" is not one of %s (did you mean \"%s\"?)", shown, list, hint);
        else
                error_at(ctx, path, "\"%s\" is not one of %s", shown, list);
        return false;
}

/* The parsers of one present value by field type: each stores a valid value at p and returns
 * true, or reports why it is not and returns false. */

static bool parse_bool(Ctx *ctx, const char *path, const cJSON *v, void *p) {
        if (!cJSON_IsBool(v)) {
                error_at(ctx, path, "expected true or false, got %s", json_type_name(v));
                return false;
        }
        *(bool *) p = cJSON_IsTrue(v);
        return true;
}

static bool parse_int(Ctx *ctx, const char *path, const Field *f, const cJSON *v, void *p) {
        double d = v->valuedouble;

        if (!cJSON_IsNumber(v)) {
                error_at(ctx, path, "expected an integer, got %s", json_type_name(v));
                return false;
        }
        if (!isfinite(d) || d != floor(d)) {
                error_at(ctx, path, "%.15g is not an integer", d);
                return false;
        }
        /* Compare as doubles before casting: every bound here is exact in a double. */
        if (d < (double) f->min || d > (double) f->max) {
                error_at(ctx, path, "%.15g is out of range (%" PRIi64 "..%" PRIi64 ")", d, f->min, f->max);
                return false;
        }
        set_uint(p, f->size, (uint64_t) d);
        return true;
}

static bool parse_seconds(Ctx *ctx, const char *path, const Field *f, const cJSON *v, void *p) {
        double d = v->valuedouble;
        char range[96];
        uint64_t usec;

        if (!cJSON_IsNumber(v)) {
                error_at(ctx, path, "expected a number of seconds, got %s", json_type_name(v));
                return false;
        }
        if (!isfinite(d) || d < f->min_sec || d > f->max_sec) {
                format_seconds_range(f, range, sizeof(range));
                error_at(ctx, path, "%.15g is out of range (%s)", d, range);
                return false;
        }
        usec = (uint64_t) llround(d * (double) USEC_PER_SEC);
        *(uint64_t *) p = usec;
        return true;
}

/* A string from a fixed set of values (f->names): stores a copy of the name. */
static bool parse_string_choice(Ctx *ctx, const char *path, const Field *f, const cJSON *v, void *p) {
        int i;

        if (!parse_choice(ctx, path, f, v, &i))
                return false;
        if (set_string(p, f->names[i]) < 0) {
                ctx->oom = true;
                return false;
        }
        return true;
}

static bool parse_string(Ctx *ctx, const char *path, const Field *f, const cJSON *v, void *p) {
        _cleanup_free_ char *shown = NULL;
        const char *why;
        size_t len;

        if (f->names)
                return parse_string_choice(ctx, path, f, v, p);
        if (!cJSON_IsString(v)) {
                error_at(ctx, path, "expected a string, got %s", json_type_name(v));
                return false;
        }
        len = strlen(v->valuestring);
        if (len == 0 && f->min > 0) {
                error_at(ctx, path, "must not be empty");
                return false;
        }
        shown = show(v->valuestring);
        if (!shown) {
                ctx->oom = true;
                return false;
        }
        if ((int64_t) len > f->max) {
                error_at(ctx, path, "\"%s\" is too long (%zu bytes, at most %" PRIi64 ")", shown, len, f->max);
                return false;
        }
        why = f->check ? f->check(v->valuestring) : NULL;
        if (why) {
                error_at(ctx, path, "\"%s\" %s", shown, why);
                return false;
        }
        if (set_string(p, v->valuestring) < 0) {
                ctx->oom = true;
                return false;
        }
        return true;
}

static bool parse_enum(Ctx *ctx, const char *path, const Field *f, const cJSON *v, void *p) {
        int i;

        if (!parse_choice(ctx, path, f, v, &i))
                return false;
        *(int *) p = i;
        return true;
}

/* Parses one present value into its field. Returns true when valid; false after reporting. */
static bool parse_field(Ctx *ctx, const char *path, const Field *f, const cJSON *v, void *base) {
        void *p = (uint8_t *) base + f->offset;

        switch (f->type) {
        case FIELD_BOOL:
                return parse_bool(ctx, path, v, p);
        case FIELD_INT:
                return parse_int(ctx, path, f, v, p);
        case FIELD_SECONDS:
                return parse_seconds(ctx, path, f, v, p);
        case FIELD_STRING:
                return parse_string(ctx, path, f, v, p);
        case FIELD_ENUM:
                return parse_enum(ctx, path, f, v, p);
        case FIELD_CUSTOM:
                return f->parse(ctx, path, v, base);
        }
        return false;
}

/* Applies a table to obj (NULL: absent, all defaults). bases[i] is where field i is stored.
 * Reports unknown keys and every invalid value; fills s->state. */
static void parse_section(Ctx *ctx, Section *s, const cJSON *obj, void *const *bases) {
        const cJSON *v;

        assert(s->n_fields <= FIELDS_MAX);
        for (size_t i = 0; i < s->n_fields; i++) {
                _unused_ const Field *f = &s->fields[i]; /* only read by assert() */

                /* The table matches the struct it writes into. */
                assert(f->type != FIELD_BOOL || f->size == sizeof(bool));
                assert(f->type != FIELD_SECONDS || f->size == sizeof(uint64_t));
                assert(f->type != FIELD_STRING || f->size == sizeof(char *));
                assert(f->type != FIELD_ENUM || f->size == sizeof(int));
                s->state[i] = FIELD_ABSENT;
        }

        /* In document order, so the errors read like the file. */
        cJSON_ArrayForEach(v, obj) {
                _cleanup_free_ char *path = NULL;
                const Field *f = NULL;
                size_t i;

                if (!v->string || cJSON_GetObjectItemCaseSensitive(obj, v->string) != v)
                        continue; /* a duplicate, reported already */
                path = path_key(s->path, v->string);
                if (!path) {
                        ctx->oom = true;
                        return;
                }
                for (i = 0; i < s->n_fields; i++)
                        if (streq(s->fields[i].key, v->string)) {
                                f = &s->fields[i];
                                break;
                        }
                if (!f) {
                        const char *names[FIELDS_MAX];
                        const char *hint;

                        for (size_t j = 0; j < s->n_fields; j++)
                                names[j] = s->fields[j].key;
                        hint = suggest(v->string, names, s->n_fields);
                        if (hint)
                                error_at(ctx, path, "unknown key (did you mean \"%s\"?)", hint);
                        else
                                error_at(ctx, path, "unknown key");
                        continue;
                }
                s->state[i] = parse_field(ctx, path, f, v, bases[i]) ? FIELD_SET : FIELD_INVALID;
        }

        for (size_t i = 0; i < s->n_fields; i++)
                if (s->state[i] != FIELD_SET)
                        apply_default(ctx, &s->fields[i], bases[i]);
}

/* Same, all fields stored in one struct. */
static void parse_section_in(Ctx *ctx, Section *s, const cJSON *obj, void *base) {
        void *bases[FIELDS_MAX];

        for (size_t i = 0; i < s->n_fields; i++)
                bases[i] = base;
        parse_section(ctx, s, obj, bases);
}

/* ---- sections and their cross-checks ---- */

static char *default_client_id(void) {
        static const char prefix[] = "sensor-collector-";
        char host[256] = "", *r;

        if (gethostname(host, sizeof(host) - 1) < 0)
                host[0] = 0;
        host[sizeof(host) - 1] = 0;
        host[strcspn(host, ".")] = 0; /* the short name is what identifies the gateway */
        if (!host[0])
                return strdup("sensor-collector");
        for (char *p = host; *p; p++)
                if (!strchr(CLIENT_ID_CHARS, *p))
                        *p = '_';
        if (asprintf(&r, "%s%.*s", prefix, (int) (CLIENT_ID_MAX - strlen(prefix)), host) < 0)
                return NULL;
        return r;
}

static void parse_serial(Ctx *ctx, const cJSON *obj, SerialConfig *c) {
        Section s = { .path = "/serial", .fields = serial_fields, .n_fields = ELEMENTSOF(serial_fields) };
        SerialExtra extra = { .serial = c };
        void *bases[ELEMENTSOF(serial_fields)];

        for (size_t i = 0; i < ELEMENTSOF(serial_fields); i++)
                bases[i] = streq(serial_fields[i].key, "custom_baud") ? (void *) &extra : (void *) c;
        parse_section(ctx, &s, obj, bases);
        if (!obj) {
                c->enabled = false;
                return;
        }

        if (c->enabled && !given(&s, "device"))
                error_at(ctx, "/serial/device", "required when the serial input is enabled");
        if (valid(&s, "baud") && !extra.custom_baud && !serial_baud_is_standard(c->baud)) {
                uint32_t nearest = standard_bauds[0];

                for (size_t i = 0; i < ELEMENTSOF(standard_bauds); i++)
                        if ((uint64_t) llabs((long long) standard_bauds[i] - c->baud) <
                            (uint64_t) llabs((long long) nearest - c->baud))
                                nearest = standard_bauds[i];
                error_at(ctx, "/serial/baud",
                         "%" PRIu32 " is not a standard rate (nearest is %" PRIu32 "); "
                         "for a non-standard rate set \"custom_baud\": true (1..%u)",
                         c->baud, nearest, CUSTOM_BAUD_MAX);
        }
}

static bool parse_topic(Ctx *ctx, const char *path, const cJSON *obj, MqttTopicConfig *t) {
        Section s = { .path = path, .fields = topic_fields, .n_fields = ELEMENTSOF(topic_fields) };
        _cleanup_free_ char *filter_path = NULL, *sensor_path = NULL, *metric_path = NULL;
        _cleanup_(topic_pattern_freep) TopicPattern *pattern = NULL;
        bool from_sensor = false, from_metric = false, ok = true;
        const char *why = NULL;
        int r;
        size_t before = ctx->n_errors + ctx->n_suppressed;

        if (!cJSON_IsObject(obj)) {
                error_at(ctx, path, "expected an object with a \"filter\", got %s", json_type_name(obj));
                parse_section_in(ctx, &s, NULL, t);
                return false;
        }
        parse_section_in(ctx, &s, obj, t);
        filter_path = path_key(path, "filter");
        sensor_path = path_key(path, "sensor");
        metric_path = path_key(path, "metric");
        if (!filter_path || !sensor_path || !metric_path) {
                ctx->oom = true;
                return false;
        }

        if (!given(&s, "filter"))
                error_at(ctx, filter_path, "required");
        if (!valid(&s, "filter"))
                goto done;
        /* The same parser the MQTT input uses, so what passes here subscribes there. */
        r = topic_pattern_new(t->filter, &pattern, &why);
        if (r == -ENOMEM) {
                ctx->oom = true;
                return false;
        }
        if (r < 0) {
                _cleanup_free_ char *shown = show(t->filter);

                if (!shown) {
                        ctx->oom = true;
                        return false;
                }
                error_at(ctx, filter_path, "\"%s\" is not a valid filter: %s", shown, strna(why));
                goto done;
        }
        from_sensor = topic_pattern_has_sensor(pattern);
        from_metric = topic_pattern_has_metric(pattern);
        if (section_state(&s, "format") == FIELD_INVALID)
                goto done; /* nothing to cross-check against */

        if (from_sensor && given(&s, "sensor"))
                error_at(ctx, sensor_path, "the filter already takes the sensor from the topic (+sensor); remove one of them");
        if (t->format == FRAME_FORMAT_JSON && given(&s, "metric"))
                error_at(ctx, metric_path, "not allowed with format \"json\" (the payload names its metrics)");
        if (t->format == FRAME_FORMAT_VALUE) {
                if (from_metric && given(&s, "metric"))
                        error_at(ctx, metric_path, "the filter already takes the metric from the topic (+metric); remove one of them");
                if (!from_metric && !given(&s, "metric"))
                        error_at(ctx, path, "format \"value\" needs a metric name: name it in the filter (+metric) or set \"metric\"");
                if (!from_sensor && !given(&s, "sensor"))
                        error_at(ctx, path, "format \"value\" needs a sensor id: name it in the filter (+sensor) or set \"sensor\"");
        }
done:
        if (ctx->n_errors + ctx->n_suppressed != before)
                ok = false;
        return ok;
}

static bool parse_topics(Ctx *ctx, const char *path, const cJSON *v, void *base) {
        MqttConfig *c = base;
        const cJSON *item;
        size_t n = 0, i = 0;
        bool ok = true;

        if (!cJSON_IsArray(v)) {
                error_at(ctx, path, "expected an array of topic objects, got %s", json_type_name(v));
                return false;
        }
        n = (size_t) cJSON_GetArraySize(v);
        if (n == 0)
                return true; /* an error only when enabled: see parse_mqtt() */
        c->topics = calloc(n, sizeof(MqttTopicConfig));
        if (!c->topics) {
                ctx->oom = true;
                return false;
        }
        c->n_topics = n;

        cJSON_ArrayForEach(item, v) {
                _cleanup_free_ char *p = path_index(path, i);

                if (!p) {
                        ctx->oom = true;
                        return false;
                }
                if (!parse_topic(ctx, p, item, &c->topics[i]))
                        ok = false;
                else
                        for (size_t j = 0; j < i; j++)
                                if (c->topics[j].filter && streq(c->topics[j].filter, c->topics[i].filter)) {
                                        _cleanup_free_ char *fp = path_key(p, "filter");

                                        if (!fp) {
                                                ctx->oom = true;
                                                return false;
                                        }
                                        error_at(ctx, fp, "same filter as %s/%zu", path, j);
                                        ok = false;
                                        break;
                                }
                i++;
        }
        return ok;
}

static void parse_mqtt(Ctx *ctx, const cJSON *obj, MqttConfig *c) {
        Section s = { .path = "/mqtt", .fields = mqtt_fields, .n_fields = ELEMENTSOF(mqtt_fields) };
        bool tls;

        parse_section_in(ctx, &s, obj, c);
        tls = c->cafile || c->capath;
        if (!given(&s, "port") && tls)
                c->port = 8883;
        if (!c->client_id) {
                c->client_id = default_client_id();
                if (!c->client_id)
                        ctx->oom = true;
        }
        if (!obj) {
                c->enabled = false;
                return;
        }

        if (c->enabled && !given(&s, "topics"))
                error_at(ctx, "/mqtt/topics", "required when the MQTT input is enabled");
        if (c->enabled && valid(&s, "topics") && c->n_topics == 0)
                error_at(ctx, "/mqtt/topics", "must not be empty when the MQTT input is enabled");
        if (given(&s, "session_expiry") && section_state(&s, "protocol") != FIELD_INVALID &&
            c->protocol == MQTT_PROTOCOL_V311)
                error_at(ctx, "/mqtt/session_expiry", "only used with MQTT 5 (\"protocol\": \"5\"); remove it or change the protocol");
        if (given(&s, "password_file") && !given(&s, "username"))
                error_at(ctx, "/mqtt/password_file", "requires \"username\"");
        if (given(&s, "certfile") && !given(&s, "keyfile"))
                error_at(ctx, "/mqtt/keyfile", "required with \"certfile\"");
        if (given(&s, "keyfile") && !given(&s, "certfile"))
                error_at(ctx, "/mqtt/certfile", "required with \"keyfile\"");
        if (given(&s, "certfile") && !given(&s, "cafile") && !given(&s, "capath"))
                error_at(ctx, "/mqtt/certfile", "requires \"cafile\" or \"capath\" (a client certificate is only used with TLS)");
        if (given(&s, "tls_version") && !given(&s, "cafile") && !given(&s, "capath"))
                error_at(ctx, "/mqtt/tls_version", "requires \"cafile\" or \"capath\" (TLS is used only when one is set)");
}

/* ---- the sensor map ---- */

static const char *const unknown_policy_names[_SENSOR_UNKNOWN_MAX] = {
        [SENSOR_UNKNOWN_STORE] = "store",
        [SENSOR_UNKNOWN_REJECT] = "reject",
};

const char *sensor_unknown_policy_to_string(SensorUnknownPolicy p) {
        return p >= 0 && p < _SENSOR_UNKNOWN_MAX ? unknown_policy_names[p] : NULL;
}

static bool parse_sensor_map(Ctx *ctx, const char *path, const cJSON *v, void *base);
static bool parse_metric_min(Ctx *ctx, const char *path, const cJSON *v, void *base);
static bool parse_metric_max(Ctx *ctx, const char *path, const cJSON *v, void *base);
static bool parse_sensor_metrics(Ctx *ctx, const char *path, const cJSON *v, void *base);

static const Field sensors_fields[] = {
        F_ENUM("unknown", SensorMapConfig, unknown, unknown_policy_names, SENSOR_UNKNOWN_STORE),
        F_INT("stale_after", SensorMapConfig, stale_after, 1, 1000, 3),
        F_CUSTOM("map", parse_sensor_map),
};

static const Field sensor_entry_fields[] = {
        F_SECONDS("expect_every", SensorEntryConfig, expect_every_usec, 0.1, 604800, 0),
        F_CUSTOM("metrics", parse_sensor_metrics),
};

static const Field sensor_metric_fields[] = {
        F_CUSTOM("min", parse_metric_min),
        F_CUSTOM("max", parse_metric_max),
        F_STRING("unit", SensorMetricConfig, unit, 1, 32, check_utf8, NULL),
        F_SECONDS("expect_every", SensorMetricConfig, expect_every_usec, 0.1, 604800, 0),
};

static bool parse_metric_bound(Ctx *ctx, const char *path, const cJSON *v, bool *ret_has, double *ret) {
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
                error_at(ctx, path, "expected a number, got %s", json_type_name(v));
                return false;
        }
        *ret_has = true;
        *ret = v->valuedouble;
        return true;
}

static bool parse_metric_min(Ctx *ctx, const char *path, const cJSON *v, void *base) {
        SensorMetricConfig *m = base;
        return parse_metric_bound(ctx, path, v, &m->has_min, &m->min);
}

static bool parse_metric_max(Ctx *ctx, const char *path, const cJSON *v, void *base) {
        SensorMetricConfig *m = base;
        return parse_metric_bound(ctx, path, v, &m->has_max, &m->max);
}

/* Checks a map key (a sensor id, a pattern or a metric name): Returns NULL or why not. */
static const char *check_map_key(const char *s, size_t max) {
        if (!s[0])
                return "must not be empty";
        if (strlen(s) > max)
                return "is too long";
        return check_id(s);
}

static bool parse_sensor_metrics(Ctx *ctx, const char *path, const cJSON *v, void *base) {
        SensorEntryConfig *e = base;
        const cJSON *item;
        size_t i = 0;
        bool ok = true;

        if (!cJSON_IsObject(v)) {
                error_at(ctx, path, "expected an object of metrics by name, got %s", json_type_name(v));
                return false;
        }
        e->metrics = calloc(MAX((size_t) cJSON_GetArraySize(v), 1u), sizeof(SensorMetricConfig));
        if (!e->metrics) {
                ctx->oom = true;
                return false;
        }
        cJSON_ArrayForEach(item, v) {
                _cleanup_free_ char *p = path_key(path, strempty(item->string));
                Section s = { .path = p, .fields = sensor_metric_fields, .n_fields = ELEMENTSOF(sensor_metric_fields) };
                SensorMetricConfig *m = &e->metrics[i];
                const char *why;

                if (!p) {
                        ctx->oom = true;
                        return false;
                }
                if (!item->string || cJSON_GetObjectItemCaseSensitive(v, item->string) != item)
                        continue; /* a duplicate, reported already */
                why = check_map_key(item->string, METRIC_NAME_MAX);
                if (why) {
                        error_at(ctx, p, "a metric name %s", why);
                        ok = false;
                        continue;
                }
                if (!cJSON_IsObject(item)) {
                        error_at(ctx, p, "expected an object with \"min\", \"max\", \"unit\" or \"expect_every\", got %s",
                                 json_type_name(item));
                        ok = false;
                        continue;
                }
                parse_section_in(ctx, &s, item, m);
                m->name = strdup(item->string);
                if (!m->name) {
                        ctx->oom = true;
                        return false;
                }
                e->n_metrics = ++i;
                if (m->has_min && m->has_max && m->min > m->max) {
                        error_at(ctx, p, "min %.15g is greater than max %.15g", m->min, m->max);
                        ok = false;
                }
        }
        return ok;
}

static bool parse_sensor_map(Ctx *ctx, const char *path, const cJSON *v, void *base) {
        SensorMapConfig *c = base;
        const cJSON *item;
        size_t i = 0;
        bool ok = true;

        if (!cJSON_IsObject(v)) {
                error_at(ctx, path, "expected an object of sensors by id or pattern, got %s", json_type_name(v));
                return false;
        }
        c->entries = calloc(MAX((size_t) cJSON_GetArraySize(v), 1u), sizeof(SensorEntryConfig));
        if (!c->entries) {
                ctx->oom = true;
                return false;
        }
        cJSON_ArrayForEach(item, v) {
                _cleanup_free_ char *p = path_key(path, strempty(item->string));
                Section s = { .path = p, .fields = sensor_entry_fields, .n_fields = ELEMENTSOF(sensor_entry_fields) };
                SensorEntryConfig *e = &c->entries[i];
                const char *why;

                if (!p) {
                        ctx->oom = true;
                        return false;
                }
                if (!item->string || cJSON_GetObjectItemCaseSensitive(v, item->string) != item)
                        continue;
                why = check_map_key(item->string, SENSOR_ID_MAX);
                if (why) {
                        error_at(ctx, p, "a sensor id or pattern %s", why);
                        ok = false;
                        continue;
                }
                if (!cJSON_IsObject(item)) {
                        error_at(ctx, p, "expected an object with \"expect_every\" or \"metrics\", got %s",
                                 json_type_name(item));
                        ok = false;
                        continue;
                }
                e->id = strdup(item->string);
                if (!e->id) {
                        ctx->oom = true;
                        return false;
                }
                e->is_pattern = strpbrk(e->id, "*?") != NULL;
                c->n_entries = ++i;
                parse_section_in(ctx, &s, item, e);
        }
        return ok;
}

static void parse_sensors(Ctx *ctx, const cJSON *obj, SensorMapConfig *c) {
        Section s = { .path = "/sensors", .fields = sensors_fields, .n_fields = ELEMENTSOF(sensors_fields) };

        parse_section_in(ctx, &s, obj, c);
}

void sensor_map_config_done(SensorMapConfig *m) {
        if (!m)
                return;
        for (size_t i = 0; i < m->n_entries; i++) {
                for (size_t j = 0; j < m->entries[i].n_metrics; j++) {
                        free(m->entries[i].metrics[j].name);
                        free(m->entries[i].metrics[j].unit);
                }
                free(m->entries[i].metrics);
                free(m->entries[i].id);
        }
        free(m->entries);
        *m = (SensorMapConfig) {};
}

/* ---- upstream ---- */

static const char *check_topic_template(const char *s) {
        return upstream_topic_check(s, true);
}

static const char *check_backlog_topic(const char *s) {
        return upstream_topic_check(s, false);
}

static void parse_upstream(Ctx *ctx, const cJSON *obj, UpstreamConfig *c) {
        Section s = { .path = "/upstream", .fields = upstream_fields, .n_fields = ELEMENTSOF(upstream_fields) };

        parse_section_in(ctx, &s, obj, c);
        if (!given(&s, "port") && (c->cafile || c->capath))
                c->port = 8883;
        if (!c->gateway_id) {
                char *id = default_client_id(); /* "sensor-collector-HOST": the host part */

                if (id && strncmp(id, "sensor-collector-", 17) == 0)
                        c->gateway_id = strdup(id + 17);
                else if (id)
                        c->gateway_id = strdup("gateway");
                free(id);
                if (!c->gateway_id)
                        ctx->oom = true;
        }
        if (!c->client_id && c->gateway_id &&
            asprintf(&c->client_id, "sensor-collector-up-%.*s", CLIENT_ID_MAX - 20, c->gateway_id) < 0) {
                c->client_id = NULL;
                ctx->oom = true;
        }
        if (!obj)
                return;
        if (given(&s, "password_file") && !given(&s, "username"))
                error_at(ctx, "/upstream/password_file", "requires \"username\"");
        if (given(&s, "certfile") && !given(&s, "keyfile"))
                error_at(ctx, "/upstream/keyfile", "required with \"certfile\"");
        if (given(&s, "keyfile") && !given(&s, "certfile"))
                error_at(ctx, "/upstream/certfile", "required with \"keyfile\"");
        if (given(&s, "certfile") && !given(&s, "cafile") && !given(&s, "capath"))
                error_at(ctx, "/upstream/certfile", "requires \"cafile\" or \"capath\" (a client certificate is only used with TLS)");
        if (given(&s, "tls_version") && !given(&s, "cafile") && !given(&s, "capath"))
                error_at(ctx, "/upstream/tls_version", "requires \"cafile\" or \"capath\" (TLS is used only when one is set)");
        if (valid(&s, "backlog_topic") && valid(&s, "topic") && c->backlog_topic && c->topic &&
            streq(c->backlog_topic, c->topic))
                error_at(ctx, "/upstream/backlog_topic", "must differ from \"topic\", so that the backlog is told from live readings");
        if (valid(&s, "live_batch_topic") && valid(&s, "backlog_topic") && c->live_batch_topic && c->backlog_topic &&
            streq(c->live_batch_topic, c->backlog_topic))
                error_at(ctx, "/upstream/live_batch_topic", "must differ from \"backlog_topic\", so that live readings are told from the backlog");
}

static void parse_simple(Ctx *ctx, const char *path, const Field *fields, size_t n, const cJSON *obj, void *base) {
        Section s = { .path = path, .fields = fields, .n_fields = n };

        parse_section_in(ctx, &s, obj, base);
}

/* obj NULL: the section is absent. */
static void parse_one_section(Ctx *ctx, size_t i, const cJSON *obj, Config *c) {
        switch (i) {
        case SECTION_SERIAL:
                parse_serial(ctx, obj, &c->serial);
                break;
        case SECTION_MQTT:
                parse_mqtt(ctx, obj, &c->mqtt);
                break;
        case SECTION_STORE:
                parse_simple(ctx, "/store", store_fields, ELEMENTSOF(store_fields), obj, &c->store);
                break;
        case SECTION_LOG:
                parse_simple(ctx, "/log", log_fields, ELEMENTSOF(log_fields), obj, &c->log);
                break;
        case SECTION_SUPERVISOR:
                parse_simple(ctx, "/supervisor", supervisor_fields, ELEMENTSOF(supervisor_fields), obj, &c->supervisor);
                break;
        case SECTION_CLOCK:
                parse_simple(ctx, "/clock", clock_fields, ELEMENTSOF(clock_fields), obj, &c->clock);
                break;
        case SECTION_SENSORS:
                parse_sensors(ctx, obj, &c->sensors);
                break;
        case SECTION_UPSTREAM:
                parse_upstream(ctx, obj, &c->upstream);
                break;
        default:
                assert(!"unknown section");
        }
}

/* Reports every key that appears twice in an object, anywhere in the tree. */
typedef struct KeyRef {
        const char *key;
        size_t index;
} KeyRef;

static int keyref_compare(const void *a, const void *b) {
        const KeyRef *x = a, *y = b;
        int r = strcmp(x->key, y->key);

        if (r != 0)
                return r;
        return x->index < y->index ? -1 : x->index > y->index;
}

static void check_duplicates(Ctx *ctx, const char *path, const cJSON *v) {
        _cleanup_free_ KeyRef *refs = NULL;
        _cleanup_free_ bool *dup = NULL;
        const cJSON *child;
        size_t n = 0, i = 0;

        if (!cJSON_IsObject(v) && !cJSON_IsArray(v))
                return;
        cJSON_ArrayForEach(child, v)
                n++;

        if (cJSON_IsObject(v) && n > 1) {
                refs = calloc(n, sizeof(KeyRef));
                dup = calloc(n, sizeof(bool));
                if (!refs || !dup) {
                        ctx->oom = true;
                        return;
                }
                cJSON_ArrayForEach(child, v) {
                        refs[i] = (KeyRef){ .key = strempty(child->string), .index = i };
                        i++;
                }
                qsort(refs, n, sizeof(KeyRef), keyref_compare);
                for (i = 1; i < n; i++)
                        if (streq(refs[i - 1].key, refs[i].key))
                                dup[refs[i].index] = true;
        }

        i = 0;
        cJSON_ArrayForEach(child, v) {
                _cleanup_free_ char *p = cJSON_IsObject(v) ? path_key(path, strempty(child->string)) : path_index(path, i);

                if (!p) {
                        ctx->oom = true;
                        return;
                }
                if (dup && dup[i])
                        error_at(ctx, p, "duplicate key");
                check_duplicates(ctx, p, child);
                i++;
        }
}

static void parse_root(Ctx *ctx, const cJSON *root, Config *c) {
        bool seen[ELEMENTSOF(section_names)] = {};
        const cJSON *v;

        if (!cJSON_IsObject(root)) {
                error_at(ctx, "/", "expected an object with the sections %s, got %s",
                         "serial, mqtt, store, log, supervisor, clock, sensors, upstream", json_type_name(root));
                root = NULL;
        }

        /* Sections in document order, so the errors read like the file; then the absent ones,
         * for their defaults. */
        cJSON_ArrayForEach(v, root) {
                _cleanup_free_ char *path = NULL;
                size_t i;

                if (!v->string || cJSON_GetObjectItemCaseSensitive(root, v->string) != v)
                        continue;
                path = path_key("/", v->string);
                if (!path) {
                        ctx->oom = true;
                        return;
                }
                for (i = 0; i < ELEMENTSOF(section_names); i++)
                        if (streq(section_names[i], v->string))
                                break;
                if (i >= ELEMENTSOF(section_names)) {
                        const char *hint = suggest(v->string, section_names, ELEMENTSOF(section_names));

                        if (hint)
                                error_at(ctx, path, "unknown section (did you mean \"%s\"?)", hint);
                        else
                                error_at(ctx, path, "unknown section (the sections are serial, mqtt, store, log, supervisor, clock, sensors, upstream)");
                        continue;
                }
                if (!cJSON_IsObject(v)) {
                        error_at(ctx, path, "expected an object, got %s", json_type_name(v));
                        continue; /* defaults below */
                }
                parse_one_section(ctx, i, v, c);
                seen[i] = true;
        }
        for (size_t i = 0; i < ELEMENTSOF(section_names); i++)
                if (!seen[i])
                        parse_one_section(ctx, i, NULL, c);
}

/* ---- entry points ---- */

/* Syntax checking. cJSON says only roughly where it stopped (sometimes a character late) and
 * never why, so this walk over the text runs first, finds the first error and says what is
 * wrong. It accepts what cJSON accepts (so both stop at the same fault), except what cJSON
 * lets through but would mislead: a "\u0000" that would cut a string short, and a raw newline
 * inside a string (almost always a missing closing quote). If cJSON still fails where this
 * found nothing, its own position is reported. */
#define JSON_NESTING_MAX 1000   /* cJSON's CJSON_NESTING_LIMIT */

typedef struct Scan {
        const char *text;       /* NUL-terminated */
        size_t pos;
        unsigned depth;
        size_t error_pos;
        char reason[192];
} Scan;

_printf_(3, 4) static bool scan_fail(Scan *s, size_t pos, const char *format, ...) {
        va_list ap;

        s->error_pos = pos;
        va_start(ap, format);
        (void) vsnprintf(s->reason, sizeof(s->reason), format, ap);
        va_end(ap);
        return false;
}

/* The character at pos for a message: 'x', byte 0xHH, or the end of the file. */
static const char *scan_describe(const Scan *s, size_t pos, char buf[static 24]) {
        unsigned char ch = (unsigned char) s->text[pos];

        if (ch == 0)
                return "the end of the file";
        if (ch > ' ' && ch < 0x7F)
                snprintf(buf, 24, "'%c'", ch);
        else
                snprintf(buf, 24, "byte 0x%02x", ch);
        return buf;
}

static bool scan_unclosed(Scan *s, char bracket, size_t open) {
        unsigned line, column;

        line_column(s->text, open, &line, &column);
        return scan_fail(s, s->pos, "unexpected end of file (the '%c' at %u:%u is not closed)", bracket, line, column);
}

static void scan_space(Scan *s) {
        while (s->text[s->pos] && strchr(" \t\r\n", s->text[s->pos]))
                s->pos++;
}

static bool scan_value(Scan *s);

static bool scan_hex4(const char *p, unsigned *ret) {
        unsigned v = 0;

        for (size_t i = 0; i < 4; i++) {
                char ch = p[i];

                if (ch >= '0' && ch <= '9')
                        v = v * 16 + (unsigned) (ch - '0');
                else if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f')
                        v = v * 16 + (unsigned) ((ch | 0x20) - 'a' + 10);
                else
                        return false;
        }
        *ret = v;
        return true;
}

static bool scan_string(Scan *s) {
        size_t open = s->pos++;

        for (;;) {
                char ch = s->text[s->pos];

                if (ch == '"') {
                        s->pos++;
                        return true;
                }
                if (ch == 0 || ch == '\n') {
                        unsigned line, column;

                        line_column(s->text, open, &line, &column);
                        if (ch == 0)
                                return scan_fail(s, s->pos, "unexpected end of file (the string at %u:%u is not closed)",
                                                 line, column);
                        return scan_fail(s, open, "the string that starts here is not closed on its line");
                }
                if (ch == '\\') {
                        char e = s->text[s->pos + 1];

                        if (e == 'u') {
                                unsigned u, low;

                                if (!scan_hex4(s->text + s->pos + 2, &u))
                                        return scan_fail(s, s->pos, "'\\u' must be followed by four hex digits");
                                if (u == 0) /* it would cut the string short */
                                        return scan_fail(s, s->pos, "'\\u0000' (a NUL character) is not allowed in a string");
                                if (u >= 0xDC00 && u <= 0xDFFF)
                                        return scan_fail(s, s->pos, "'\\u%04x' is half of a UTF-16 surrogate pair without its first half", u);
                                if (u >= 0xD800 && u <= 0xDBFF) {
                                        if (s->text[s->pos + 6] != '\\' || s->text[s->pos + 7] != 'u' ||
                                            !scan_hex4(s->text + s->pos + 8, &low) || low < 0xDC00 || low > 0xDFFF)
                                                return scan_fail(s, s->pos, "'\\u%04x' is half of a UTF-16 surrogate pair without its second half", u);
                                        s->pos += 6;
                                }
                                s->pos += 6;
                                continue;
                        }
                        if (!e || !strchr("bfnrt\"\\/", e)) {
                                char d[24];

                                if (e > ' ' && e < 0x7F)
                                        return scan_fail(s, s->pos, "invalid escape '\\%c' in a string (write '\\\\' for a backslash)", e);
                                return scan_fail(s, s->pos, "invalid escape: '\\' followed by %s", scan_describe(s, s->pos + 1, d));
                        }
                        s->pos += 2;
                        continue;
                }
                s->pos++;
        }
}

static bool scan_word(Scan *s) {
        static const char *const words[] = { "true", "false", "null" };
        size_t start = s->pos, n = 0;

        for (size_t i = 0; i < ELEMENTSOF(words); i++)
                if (strncmp(s->text + start, words[i], strlen(words[i])) == 0) {
                        s->pos += strlen(words[i]);
                        return true;
                }
        while (n < 32 && (isalnum((unsigned char) s->text[start + n]) || s->text[start + n] == '_'))
                n++;
        for (size_t i = 0; i < ELEMENTSOF(words); i++)
                if (n == strlen(words[i]) && strncasecmp(s->text + start, words[i], n) == 0)
                        return scan_fail(s, start, "'%.*s' is not a JSON value (write %s)", (int) n, s->text + start, words[i]);
        return scan_fail(s, start, "'%.*s' is not a JSON value (strings must be in double quotes)", (int) n, s->text + start);
}

static bool scan_number(Scan *s) {
        size_t n = strspn(s->text + s->pos, "0123456789+-.eE");
        _cleanup_free_ char *num = strndup(s->text + s->pos, n);
        char *end;

        /* Like cJSON: the longest run of number characters, as far as strtod() takes it. */
        if (!num) {
                s->pos += n; /* cannot tell: leave it to cJSON */
                return true;
        }
        (void) strtod(num, &end);
        if (end == num)
                return scan_fail(s, s->pos, "'%.32s' is not a number", num);
        s->pos += (size_t) (end - num);
        return true;
}

/* Objects and arrays: close is '}' or ']'. */
static bool scan_container(Scan *s, char close) {
        size_t open = s->pos++, comma = SIZE_MAX, value_end;
        char d[24];

        if (++s->depth > JSON_NESTING_MAX)
                return scan_fail(s, open, "nested more than %u levels deep", JSON_NESTING_MAX);
        scan_space(s);
        if (s->text[s->pos] == close) {
                s->pos++;
                s->depth--;
                return true;
        }
        for (;;) {
                char ch;

                scan_space(s);
                ch = s->text[s->pos];
                if (ch == 0)
                        return scan_unclosed(s, close == '}' ? '{' : '[', open);
                if (ch == close && comma != SIZE_MAX)
                        return scan_fail(s, comma, "trailing comma before '%c'", close);
                if (close == '}') {
                        if (ch == '\'')
                                return scan_fail(s, s->pos, "keys must be in double quotes");
                        if (isalpha((unsigned char) ch) || ch == '_')
                                return scan_fail(s, s->pos, "keys must be in double quotes");
                        if (ch != '"')
                                return scan_fail(s, s->pos, "expected a key in double quotes, found %s", scan_describe(s, s->pos, d));
                        if (!scan_string(s))
                                return false;
                        scan_space(s);
                        if (s->text[s->pos] == 0)
                                return scan_unclosed(s, '{', open);
                        if (s->text[s->pos] != ':')
                                return scan_fail(s, s->pos, "expected ':' after the key, found %s", scan_describe(s, s->pos, d));
                        s->pos++;
                        scan_space(s);
                }
                if (!scan_value(s))
                        return false;
                value_end = s->pos;
                scan_space(s);
                ch = s->text[s->pos];
                if (ch == ',') {
                        comma = s->pos++;
                        continue;
                }
                if (ch == close) {
                        s->pos++;
                        s->depth--;
                        return true;
                }
                if (ch == 0)
                        return scan_unclosed(s, close == '}' ? '{' : '[', open);
                if (ch == '"' || (close == ']' && strchr("{[-0123456789tfn", ch))) {
                        /* Another member or element: the comma is missing where the last ended. */
                        unsigned line, column;

                        line_column(s->text, s->pos, &line, &column);
                        return scan_fail(s, value_end, "missing ',' before the %s at %u:%u",
                                         scan_describe(s, s->pos, d), line, column);
                }
                return scan_fail(s, s->pos, "expected ',' or '%c', found %s", close, scan_describe(s, s->pos, d));
        }
}

static bool scan_value(Scan *s) {
        char ch = s->text[s->pos], d[24];

        switch (ch) {
        case '{':
                return scan_container(s, '}');
        case '[':
                return scan_container(s, ']');
        case '"':
                return scan_string(s);
        case '\'':
                return scan_fail(s, s->pos, "strings must be in double quotes");
        case 0:
                return scan_fail(s, s->pos, "unexpected end of file (expected a value)");
        default:
                if (ch == '-' || (ch >= '0' && ch <= '9')) /* as cJSON starts a number */
                        return scan_number(s);
                if (isalpha((unsigned char) ch) || ch == '_')
                        return scan_word(s);
                return scan_fail(s, s->pos, "expected a value, found %s", scan_describe(s, s->pos, d));
        }
}

/* Returns true and sets *ret_pos and the reason when text has a syntax error. */
static bool scan_locate(const char *text, size_t *ret_pos, char *reason, size_t size) {
        Scan s = { .text = text };
        char d[24];

        scan_space(&s);
        if (s.text[s.pos] == 0)
                scan_fail(&s, 0, "the file is empty (expected a JSON object)");
        else if (scan_value(&s)) {
                scan_space(&s);
                if (s.text[s.pos] == 0)
                        return false;
                scan_fail(&s, s.pos, "unexpected %s after the end of the top-level value", scan_describe(&s, s.pos, d));
        }
        *ret_pos = s.error_pos;
        snprintf(reason, size, "%s", s.reason);
        return true;
}

static void cjson_deletep(cJSON **p) {
        if (*p)
                cJSON_Delete(*p);
}

static int finish(Ctx *ctx, int r, char ***ret_errors) {
        if (ctx->n_suppressed > 0) {
                char *m = NULL;

                if (asprintf(&m, "%s: %zu more errors not shown", ctx->name, ctx->n_suppressed) < 0)
                        m = NULL;
                ctx->n_suppressed = 0;
                ctx_push(ctx, m);
        }
        if (ctx->oom) {
                ctx->errors = strv_free(ctx->errors);
                return -ENOMEM;
        }
        if (ret_errors)
                *ret_errors = TAKE_PTR(ctx->errors);
        else
                ctx->errors = strv_free(ctx->errors);
        return r;
}

int config_parse(const char *name, const char *text, size_t size, Config **ret_config, char ***ret_errors) {
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_(cjson_deletep) cJSON *root = NULL;
        _cleanup_free_ char *buf = NULL;
        Ctx ctx = { .name = name };
        const char *nul, *end = NULL, *start;
        char reason[192];
        size_t pos;

        assert(name);
        assert(text || size == 0);
        assert(ret_config);

        /* cJSON wants a terminated string; a NUL inside would silently end it. */
        nul = memchr(text, 0, size);
        if (nul) {
                error_at_position(&ctx, text, (size_t) (nul - text), "syntax error: NUL byte");
                return finish(&ctx, -EINVAL, ret_errors);
        }
        buf = malloc(size + 1);
        if (!buf)
                return -ENOMEM;
        if (size > 0)
                memcpy(buf, text, size);
        buf[size] = 0;

        start = buf;
        if (size >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0)
                start += 3; /* a byte order mark, as some editors write */
        if (scan_locate(start, &pos, reason, sizeof(reason))) {
                error_at_position(&ctx, buf, (size_t) (start - buf) + pos, "syntax error: %s", reason);
                return finish(&ctx, -EINVAL, ret_errors);
        }
        root = cJSON_ParseWithLengthOpts(start, size + 1 - (size_t) (start - buf), &end, true);
        if (!root) {
                size_t offset = end && end >= buf ? MIN((size_t) (end - buf), size) : size;
                unsigned char ch = (unsigned char) buf[offset];

                if (ch > ' ' && ch < 0x7F)
                        error_at_position(&ctx, buf, offset, "syntax error at '%c'", ch);
                else
                        error_at_position(&ctx, buf, offset, "syntax error");
                return finish(&ctx, -EINVAL, ret_errors);
        }

        c = calloc(1, sizeof(Config));
        if (!c)
                return finish(&ctx, -ENOMEM, ret_errors);
        c->path = strdup(name);
        if (!c->path)
                return finish(&ctx, -ENOMEM, ret_errors);

        check_duplicates(&ctx, "", root);
        parse_root(&ctx, root, c);

        if (ctx.oom || ctx.n_errors > 0)
                return finish(&ctx, -EINVAL, ret_errors);
        if (ret_errors)
                *ret_errors = NULL;
        *ret_config = TAKE_PTR(c);
        return 0;
}

static const char *file_type_name(mode_t mode) {
        if (S_ISFIFO(mode))
                return "a FIFO";
        if (S_ISSOCK(mode))
                return "a socket";
        if (S_ISCHR(mode))
                return "a character device";
        if (S_ISBLK(mode))
                return "a block device";
        return "not a file";
}

int config_load(const char *path, Config **ret_config, char ***ret_errors) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *text = NULL;
        Ctx ctx = { .name = path };
        size_t size = 0, allocated;
        struct stat st;
        int r;

        assert(path);
        assert(ret_config);

        /* O_NONBLOCK: opening a FIFO for reading would wait for a writer, forever. */
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                goto fail_errno;
        if (fstat(fd, &st) < 0)
                goto fail_errno;
        if (S_ISDIR(st.st_mode)) {
                errno = EISDIR;
                goto fail_errno;
        }
        if (!S_ISREG(st.st_mode)) {
                /* A FIFO, socket or device is not a configuration: it can block or never end. */
                char *m = NULL;

                if (asprintf(&m, "%s: not a regular file (%s)", path, file_type_name(st.st_mode)) < 0)
                        m = NULL;
                ctx_add(&ctx, m);
                return finish(&ctx, -EINVAL, ret_errors);
        }
        /* A buffer of the file's size (and a page to see it grow), not of the limit: glibc
         * raises its mmap threshold to the size of the largest block freed, and a freed 1 MiB
         * block moves later large allocations into the heap, where they stay resident. */
        allocated = (size_t) MIN(st.st_size, (off_t) CONFIG_FILE_MAX) + 4096;
        text = malloc(allocated + 1);
        if (!text)
                return -ENOMEM;
        for (;;) {
                ssize_t k;

                if (size == allocated && allocated <= CONFIG_FILE_MAX) {
                        size_t n = MIN(allocated * 2, (size_t) CONFIG_FILE_MAX + 1);
                        char *p = realloc(text, n + 1);

                        if (!p)
                                return -ENOMEM;
                        text = p;
                        allocated = n;
                }
                k = read(fd, text + size, MIN(allocated, (size_t) CONFIG_FILE_MAX + 1) - size);

                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        goto fail_errno;
                if (k == 0)
                        break;
                size += (size_t) k;
                if (size > CONFIG_FILE_MAX) {
                        char *m = NULL;

                        if (asprintf(&m, "%s: too large (more than %u bytes)", path, CONFIG_FILE_MAX) < 0)
                                m = NULL;
                        ctx_add(&ctx, m);
                        return finish(&ctx, -EFBIG, ret_errors);
                }
        }
        return config_parse(path, text, size, ret_config, ret_errors);

fail_errno:
        r = negative_errno();
        {
                char *m = NULL;

                if (asprintf(&m, "%s: cannot read: %s", path, strerror(-r)) < 0)
                        m = NULL;
                ctx_add(&ctx, m);
        }
        return finish(&ctx, r, ret_errors);
}

static void topic_done(MqttTopicConfig *t) {
        free(t->filter);
        free(t->sensor);
        free(t->metric);
}

Config *config_free(Config *c) {
        if (!c)
                return NULL;
        free(c->path);
        free(c->serial.device);
        free(c->mqtt.host);
        free(c->mqtt.client_id);
        free(c->mqtt.username);
        free(c->mqtt.password_file);
        free(c->mqtt.cafile);
        free(c->mqtt.capath);
        free(c->mqtt.certfile);
        free(c->mqtt.keyfile);
        free(c->mqtt.tls_version);
        for (size_t i = 0; i < c->mqtt.n_topics; i++)
                topic_done(&c->mqtt.topics[i]);
        free(c->mqtt.topics);
        free(c->store.path);
        sensor_map_config_done(&c->sensors);
        free(c->upstream.host);
        free(c->upstream.client_id);
        free(c->upstream.gateway_id);
        free(c->upstream.username);
        free(c->upstream.password_file);
        free(c->upstream.cafile);
        free(c->upstream.capath);
        free(c->upstream.certfile);
        free(c->upstream.keyfile);
        free(c->upstream.tls_version);
        free(c->upstream.topic);
        free(c->upstream.backlog_topic);
        free(c->upstream.live_batch_topic);
        free(c->upstream.status_topic);
        free(c);
        return NULL;
}
