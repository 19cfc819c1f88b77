/* SPDX-License-Identifier: MIT */
/* Pure parsers, no I/O: serial lines and MQTT payloads in, readings or a reject reason out. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "collector/macro.h"

#define SENSOR_ID_MAX 64          /* bytes, printable ASCII */
#define METRIC_NAME_MAX 64        /* bytes */
#define FRAME_METRICS_MAX 32      /* metrics in one frame; more is a reject */

typedef enum FrameFormat {
        FRAME_FORMAT_JSON,        /* {"sensor":"gh1-t3","ts":1732200000123,"temperature":23.4} */
        FRAME_FORMAT_KV,          /* sensor=gh1-t3 temperature=23.4 ts=1732200000123 */
        FRAME_FORMAT_VALUE,       /* MQTT only: the payload is one number */
        _FRAME_FORMAT_MAX,
        _FRAME_FORMAT_INVALID = -EINVAL,
} FrameFormat;

typedef enum FrameChecksum {
        FRAME_CHECKSUM_NONE,
        FRAME_CHECKSUM_NMEA,      /* line ends in *HH: XOR of the bytes before '*', hex */
        _FRAME_CHECKSUM_MAX,
        _FRAME_CHECKSUM_INVALID = -EINVAL,
} FrameChecksum;

typedef enum ReadingSource {
        READING_SOURCE_SERIAL,
        READING_SOURCE_MQTT,
        _READING_SOURCE_MAX,
        _READING_SOURCE_INVALID = -EINVAL,
} ReadingSource;

/* Why a frame or payload was rejected. Stable strings (frame_reject_to_string) are stored in
 * the reject table. */
typedef enum FrameReject {
        FRAME_REJECT_BAD_JSON,        /* not JSON, or not an object */
        FRAME_REJECT_BAD_KV,          /* kv syntax error */
        FRAME_REJECT_MISSING_SENSOR,
        FRAME_REJECT_BAD_SENSOR,      /* not a string, empty, too long, not printable */
        FRAME_REJECT_BAD_TIMESTAMP,   /* ts not an integer ms since epoch, 2000-01-01 <= ts < 2^53 */
        FRAME_REJECT_BAD_METRIC,      /* metric name empty, too long or not printable */
        FRAME_REJECT_NOT_FINITE,      /* NaN or infinity */
        FRAME_REJECT_BAD_VALUE,       /* value payload or kv value is not a number */
        FRAME_REJECT_NO_METRIC,
        FRAME_REJECT_TOO_MANY_METRICS,
        FRAME_REJECT_TOO_LONG,        /* line or payload over the configured limit */
        FRAME_REJECT_BAD_CHECKSUM,    /* missing or mismatching NMEA checksum */
        FRAME_REJECT_NOT_UTF8,
        FRAME_REJECT_TRUNCATED,       /* partial line cut off by a port close */
        FRAME_REJECT_TOPIC_MISMATCH,  /* topic does not match the subscription's pattern */
        FRAME_REJECT_SENSOR_MISMATCH, /* the payload names a sensor other than the topic's +sensor level */
        FRAME_REJECT_TOO_MANY_NAMES,  /* a new sensor, metric or origin past store.max_names */
        FRAME_REJECT_UNKNOWN_SENSOR,  /* not in the sensor map, and its "unknown" policy is reject */
        FRAME_REJECT_OUT_OF_RANGE,    /* a metric's value outside the sensor map's [min, max] */
        FRAME_REJECT_UPSTREAM_REFUSED, /* a stored reading the central broker refused (MQTT 5 reason code) */
        _FRAME_REJECT_MAX,
        _FRAME_REJECT_INVALID = -EINVAL,
} FrameReject;

/* One measured value. Strings are borrowed from whoever built the reading (a Frame, a topic,
 * a config) and only valid for the duration of the call that receives it. */
typedef struct Reading {
        const char *sensor;
        const char *metric;
        double value;                 /* always finite */
        int64_t ts_ms;                /* the sensor's timestamp, else received_ms */
        bool sensor_ts;               /* ts_ms came from the sensor */
        int64_t received_ms;          /* wall clock at receipt, ms since epoch */
        ReadingSource source;
        const char *origin;           /* device path or topic */
        unsigned flags;               /* READING_FLAG_* (see clock.h) */
        int64_t boottime_ms;          /* CLOCK_BOOTTIME at receipt; used with READING_FLAG_UNSYNCED */
} Reading;

/* What is known about a reading's times, stored as it is (readings.flags). */
enum {
        READING_FLAG_UNSYNCED = 1 << 0,   /* received while the clock was not trusted */
        READING_FLAG_CORRECTED = 1 << 1,  /* ...and its receipt time corrected since */
        READING_FLAG_SUSPECT_TS = 1 << 2, /* the sensor's time is far from the trusted clock */
};

/* Something that arrived and could not be turned into readings. Borrowed like Reading. */
typedef struct Reject {
        int64_t received_ms;
        ReadingSource source;
        const char *origin;
        const void *raw;
        size_t raw_size;
        FrameReject reason;
} Reject;

typedef struct FrameMetric {
        char name[METRIC_NAME_MAX + 1];
        double value;
} FrameMetric;

/* A parsed frame: one sensor, an optional timestamp, one or more metrics. */
typedef struct Frame {
        char sensor[SENSOR_ID_MAX + 1];
        bool has_ts;
        int64_t ts_ms;
        size_t n_metrics;
        FrameMetric metrics[FRAME_METRICS_MAX];
        size_t n_ignored;             /* members of other types, ignored and counted */
} Frame;

const char *frame_format_to_string(FrameFormat f);
FrameFormat frame_format_from_string(const char *s);
const char *frame_checksum_to_string(FrameChecksum c);
FrameChecksum frame_checksum_from_string(const char *s);
const char *reading_source_to_string(ReadingSource s);
const char *frame_reject_to_string(FrameReject r);

/* Parses one line (without the newline; one trailing '\r' is tolerated) in the given format
 * (json or kv), checking the checksum first if asked. line need not be NUL-terminated and is
 * never read past size. Returns 0 and fills *ret_frame; or -EBADMSG, setting *ret_reject and
 * ret_frame->sensor (for logging the reject) to the line's sensor id when it has one valid
 * "sensor", else "" (always "" for bad_sensor, bad_checksum, not_utf8), the rest of *ret_frame
 * untouched; or -EINVAL for a format other than json/kv or an unknown checksum; or -ENOMEM.
 * Pure. The order of checks: checksum, UTF-8, then the format's rules, member by member (the
 * first problem decides), then missing_sensor, then no_metric.
 *
 * Checksum nmea: the line is "[$]BODY*HH", HH the XOR of BODY's bytes in hex (either case). As
 * in NMEA 0183 a leading '$' is a start marker, neither XORed nor parsed; BODY is parsed.
 * Missing, malformed or mismatching -> bad_checksum.
 * Then the whole line must be UTF-8 without NUL (frame_utf8_valid()), else not_utf8.
 *
 * json: one object, surrounded by JSON whitespace at most (else bad_json).
 *   "sensor": a string passing frame_id_valid(), else bad_sensor; absent -> missing_sensor.
 *   "ts": optional, an integral JSON number of ms since the epoch, 946684800000 (2000-01-01)
 *         <= ts < 2^53 (1.7322e12 is 1732200000000, fine; 1732200000 (seconds), 1.5, -1,
 *         "1732200000123", null -> bad_timestamp).
 *   every other member with a number or boolean (1/0) is a metric: its name must pass
 *         frame_id_valid() (bad_metric), its value be finite (1e999 -> not_finite); members
 *         with null, strings, arrays or objects are ignored and counted in n_ignored.
 *   A "\u0000" escape anywhere is bad_json: C strings cannot carry it.
 * kv: "sensor=gh1-t3 temperature=23.4 ts=1732200000123", tokens separated by spaces/tabs.
 *   A token without '=' or with an empty key -> bad_kv. "sensor" and metric names as for json.
 *   "ts": 1..16 decimal digits, 946684800000 <= ts < 2^53, else bad_timestamp. Metric values:
 *   [+-]?(digits[.digits]|.digits)([eE][+-]?digits)?; "nan", "inf", "infinity" (any case,
 *   signed) or an overflow -> not_finite; anything else (hex, empty, "1,5") -> bad_value.
 * Both: a name used twice in one frame ("sensor", "ts" or a metric) is rejected (bad_sensor,
 * bad_timestamp, bad_metric), not resolved by picking one: the raw line goes to the reject
 * table for a person to judge. More than FRAME_METRICS_MAX metrics -> too_many_metrics. */
int frame_parse_line(FrameFormat format, FrameChecksum checksum, const char *line, size_t size,
                     Frame *ret_frame, FrameReject *ret_reject);

/* Parses a "value" payload: one finite number (strict JSON number syntax, surrounding JSON
 * whitespace allowed; true/false as 1/0). "NaN", "Infinity", "inf" (any case, signed) or an
 * overflow such as 1e999 -> not_finite; anything else -> bad_value (no UTF-8 check here:
 * frame_parse_mqtt() does that). Returns 0 and sets *ret_value, -EBADMSG with *ret_reject, or
 * -ENOMEM (numbers over 128 bytes are converted from a heap copy). */
int frame_parse_value(const char *payload, size_t size, double *ret_value, FrameReject *ret_reject);

/* What ends a line of a byte stream (serial.line_end). */
typedef enum LineEnd {
        LINE_END_LF,              /* "\n", and "\r\n" (one '\r' stripped); a lone '\r' is content */
        LINE_END_CR,              /* "\r", and "\r\n" as one line end; a lone '\n' is content */
        LINE_END_ANY,             /* "\n", "\r" or "\r\n" (one line end) */
        _LINE_END_MAX,
        _LINE_END_INVALID = -EINVAL,
} LineEnd;

const char *line_end_to_string(LineEnd e);
LineEnd line_end_from_string(const char *s);

/* Splits a byte stream into lines of at most max bytes, ended as line_end says. The reader puts
 * each chunk it reads with line_buffer_put() and pulls the complete lines out with
 * line_buffer_next(). One buffer of max+1 bytes is allocated at init (with lf, the extra byte
 * holds a '\r' that may turn out to precede "\n"); lines that arrive whole within one chunk are
 * handed out without a copy. O(n) per chunk. */
typedef struct LineBuffer {
        char *buf;
        size_t max;                   /* longest line accepted, without its line end */
        LineEnd line_end;
        size_t len;                   /* bytes of the current partial line in buf, at most max+1 */
        bool discarding;              /* the current line was handed out as overlong: drop the
                                       * rest of it, up to its line end */
        bool skip_lf;                 /* a '\r' ended the last line (cr, any) at the end of a
                                       * chunk: a '\n' first in the next one belongs to it */
        uint64_t discarded;           /* bytes of overlong lines dropped beyond their first max,
                                       * since init */
        const char *chunk;            /* the unread rest of the chunk put, borrowed */
        size_t chunk_left;            /* bytes of it */
} LineBuffer;

/* Returns 0, -EINVAL when max is 0 or absurdly large or line_end is not a LineEnd, or -ENOMEM. */
int line_buffer_init(LineBuffer *lb, size_t max, LineEnd line_end);
/* Frees the buffer and drops any chunk; safe to call twice. */
void line_buffer_done(LineBuffer *lb);
/* Hands the splitter a chunk of size bytes (data may be NULL when size is 0). data is borrowed
 * until line_buffer_next() has returned 0, or until line_buffer_reset(). One chunk at a time:
 * call line_buffer_next() until it returns 0 before putting the next one. */
void line_buffer_put(LineBuffer *lb, const void *data, size_t size);
/* The next line of the chunk put, without its line end (lf: "\n" or "\r\n", only one '\r'
 * stripped; cr: "\r" or "\r\n"; any: either). Returns 1 and sets *ret_line, *ret_size and
 * *ret_overlong; *ret_line is borrowed (from the chunk or from lb) and valid until the next
 * call on lb. A line is overlong as soon as it is known to be longer than max (with lf, a '\r'
 * right after max bytes waits for the next byte), whether or not its line end has come: it is
 * then returned at once, once, with *ret_overlong true and its first max bytes, and the rest of
 * it up to its line end is dropped and counted in lb->discarded. So a stream that never ends a
 * line (a device ending lines with the other character) yields one overlong line within max+1
 * bytes (max+2 with lf, when byte max+1 is a '\r'), not nothing; what follows is dropped until a
 * line end comes. Returns 0, the out parameters untouched, when the chunk is used up: its
 * partial tail (at most max+1 bytes of it) is then kept in lb for the next chunk. A reader that
 * stops before 0 (its store failed, say) calls line_buffer_reset(). */
int line_buffer_next(LineBuffer *lb, const char **ret_line, size_t *ret_size, bool *ret_overlong);

/* A partial line pending? Then ret_line and ret_size (either may be NULL) point at it, at most
 * max bytes of it, unstripped (valid until the next put, next or reset). Asked between chunks
 * (after line_buffer_next() returned 0), it is the stream's unfinished tail: for a truncated
 * reject. The rest of an overlong line, already handed out, is not pending. lb->len > lb->max
 * when the tail is max bytes and a '\r' (lf): a line over max once the stream ends there. */
bool line_buffer_pending(const LineBuffer *lb, const char **ret_line, size_t *ret_size);
/* Forgets the partial line (and a '\r' that ended the last one) and drops the unread rest of the
 * chunk put, if any. */
void line_buffer_reset(LineBuffer *lb);

/* A subscription filter with named wildcards: "greenhouse/+sensor/+metric" subscribes to
 * "greenhouse/+/+" and takes the sensor id and metric name from those topic levels. A bare
 * "+" or "#" is an unnamed wildcard. */
typedef struct TopicPattern TopicPattern;

/* Parses a filter: levels split by '/'; "#" only as the whole last level; "+" or "+name" only
 * as a whole level, name being lowercase [a-z_]+ and one of "sensor", "metric", each used at
 * most once; literal levels contain no '+' or '#'; at most 65535 bytes of UTF-8, without
 * control characters (U+0000..U+001F, U+007F..U+009F), at most 201 levels (mosquitto's limit).
 * Returns 0 with *ret (owned by the caller), -EINVAL for a bad filter (with *ret_error, if
 * ret_error is not NULL, a static explanation), -ENOMEM. */
int topic_pattern_new(const char *filter, TopicPattern **ret, const char **ret_error);
TopicPattern *topic_pattern_free(TopicPattern *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(TopicPattern *, topic_pattern_free);
/* The MQTT filter to subscribe to (names removed); owned by the pattern. */
const char *topic_pattern_subscription(const TopicPattern *p);
/* Matches a topic by MQTT rules: '+' matches one level, which may be empty; "a/#" matches
 * "a", "a/" and anything below; a topic starting with '$' is not matched by a leading
 * wildcard. Returns 1 on match, copying named levels into ret_sensor and ret_metric (each may
 * be NULL, else SENSOR_ID_MAX+1 / METRIC_NAME_MAX+1 bytes; "" when not named, and also ""
 * when the level is longer than that). The copies are not validated: check them with
 * frame_id_valid() ("" fails it), as frame_parse_mqtt() does. Returns 0 when the topic does not
 * match (or is NULL or empty), leaving the buffers untouched. */
int topic_pattern_match(const TopicPattern *p, const char *topic, char *ret_sensor,
                        char *ret_metric);
/* True when the pattern names a "sensor" / "metric" level. */
bool topic_pattern_has_sensor(const TopicPattern *p);
bool topic_pattern_has_metric(const TopicPattern *p);

/* What matching a topic against a pattern yields: the named levels, and which the pattern has.
 * Filled by topic_pattern_match_into(), read by frame_parse_mqtt_matched(). */
typedef struct TopicMatch {
        char sensor[SENSOR_ID_MAX + 1];   /* the +sensor level; "" when none or too long */
        char metric[METRIC_NAME_MAX + 1]; /* the +metric level; "" when none or too long */
        bool has_sensor;                  /* the pattern names a sensor level */
        bool has_metric;                  /* the pattern names a metric level */
} TopicMatch;

/* Matches a topic by the rules of topic_pattern_match(). Returns 1 on match and fills *ret: the
 * named levels (copied, not validated: "" when the level is absent or longer than its limit)
 * and has_sensor / has_metric from the pattern. Returns 0 when the topic does not match (or is
 * NULL or empty), leaving *ret untouched. Pure; borrows p and topic. */
int topic_pattern_match_into(const TopicPattern *p, const char *topic, TopicMatch *ret);

/* True when s[0..n) is a valid sensor id or metric name: 1..64 bytes (SENSOR_ID_MAX,
 * METRIC_NAME_MAX), each printable ASCII 0x21..0x7e (so no spaces, no control bytes, nothing
 * beyond ASCII). s need not be NUL-terminated; n == 0 is invalid. Every parser here applies it
 * to what it extracts; callers use it on ids from other places (topics, config). */
bool frame_id_valid(const char *s, size_t n);

/* True when data[0..size) is well-formed UTF-8 (no overlong forms, no surrogates, nothing
 * beyond U+10FFFF, no truncated sequence) and contains no NUL byte. */
bool frame_utf8_valid(const void *data, size_t size);

/* Turns one MQTT message into a Frame, for a subscription made from pattern p (may be NULL:
 * no topic check, nothing taken from the topic) with the given payload format (json, kv or
 * value). fixed_sensor / fixed_metric (may be NULL) stand in when neither payload nor topic
 * names one. The sensor id: when p has a +sensor level, that level is the identity (a broker
 * ACL decides who may publish on a topic; nothing restricts what a payload says), and a json/kv
 * payload whose "sensor" differs from it (byte for byte) is sensor_mismatch, never a reading;
 * one naming the same sensor, or none, is fine. Without a +sensor level: a "sensor" in the
 * payload, then fixed_sensor. For the metric of a value payload: the topic's +metric level, then
 * fixed_metric (json and kv payloads name their own metrics). Whatever is taken from the topic
 * must pass frame_id_valid() (else bad_sensor / bad_metric).
 * max_size is the payload limit (SIZE_MAX: none). Checks in this order: size > max_size ->
 * too_long; topic not matching p -> topic_mismatch; payload not UTF-8 or with NUL -> not_utf8;
 * then the payload's own parse (its first problem decides), then sensor_mismatch, then a sensor
 * from the topic or fixed_sensor (bad_sensor), missing_sensor, no_metric. A single trailing "\n"
 * or "\r\n" is tolerated in every format (publishing a file adds one).
 * Returns 0 and fills *ret_frame; or -EBADMSG, setting *ret_reject and ret_frame->sensor to the
 * sensor id (the topic's with a +sensor level, else the payload's, else fixed_sensor) when it
 * passes frame_id_valid(), else "" (always "" for topic_mismatch and bad_sensor; so a reject
 * never carries an id with spaces, quotes, control bytes or non-ASCII), the rest untouched; -EINVAL for an unknown format; -ENOMEM.
 * Pure; borrows everything. Matches the topic, then is frame_parse_mqtt_matched(). */
int frame_parse_mqtt(const TopicPattern *p, FrameFormat format, const char *fixed_sensor,
                     const char *fixed_metric, const char *topic, const void *payload,
                     size_t size, size_t max_size, Frame *ret_frame, FrameReject *ret_reject);

/* frame_parse_mqtt() for a topic already matched, so that the topic is matched once per
 * message: match is what topic_pattern_match_into() returned for the subscription's pattern,
 * or NULL for a subscription without one (nothing is then taken from the topic). The same
 * checks in the same order and the same results as frame_parse_mqtt() for that topic, minus
 * topic_mismatch, which cannot happen here: too_long, not_utf8, then the payload's own parse.
 * Returns 0 and fills *ret_frame; -EBADMSG with *ret_reject and ret_frame->sensor as there;
 * -EINVAL for an unknown format; -ENOMEM. Pure; borrows everything. */
int frame_parse_mqtt_matched(const TopicMatch *match, FrameFormat format, const char *fixed_sensor,
                             const char *fixed_metric, const void *payload, size_t size,
                             size_t max_size, Frame *ret_frame, FrameReject *ret_reject);
