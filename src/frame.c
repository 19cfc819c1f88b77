/* SPDX-License-Identifier: MIT */
/* Pure parsers, no I/O: checksums, UTF-8, json/kv/value frames, line splitting, topic patterns. */
#include <assert.h>
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <strings.h>

#include "collector/frame.h"

/* The cJSON arena (parse_json()): under AddressSanitizer what is not handed out is poisoned and
 * every piece is followed by a poisoned gap, so that an overrun or a use after the parse is
 * still found (the fuzz targets). */
#if defined(__SANITIZE_ADDRESS__)
#  include <sanitizer/asan_interface.h>
#  define JSON_ARENA_GAP _Alignof(max_align_t)
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
#    include <sanitizer/asan_interface.h>
#    define JSON_ARENA_GAP _Alignof(max_align_t)
#  endif
#endif
#ifndef JSON_ARENA_GAP
#  define JSON_ARENA_GAP 0
#  define ASAN_POISON_MEMORY_REGION(addr, size) ((void) (addr), (void) (size))
#  define ASAN_UNPOISON_MEMORY_REGION(addr, size) ((void) (addr), (void) (size))
#endif

static_assert(SENSOR_ID_MAX == METRIC_NAME_MAX, "frame_id_valid() applies one limit to both");

/* 2^53: larger integers are not exact in a double, and a sensor clock that far off is broken. */
#define TS_LIMIT 9007199254740992.0
/* 2000-01-01T00:00:00Z in ms. Anything earlier is no sensor clock of ours but a mistake: above
 * all seconds sent where milliseconds belong (1732200000 would be 20 days after 1970). */
#define TS_MIN INT64_C(946684800000)

/* MQTT limits a topic (and so a filter) to 65535 bytes of UTF-8. */
#define TOPIC_MAX 65535
/* mosquitto (2.0) refuses a subscription with more '/' than this (its TOPIC_HIERARCHY_LIMIT)
 * and closes the connection: 201 levels subscribe, 202 do not (tried against 2.0.11). */
#define TOPIC_FILTER_MAX_SEPARATORS 200

/* Numbers up to this many bytes are converted from a copy on the stack. */
#define NUMBER_STACK_MAX 128

/* JSON lines up to this many bytes are handed to cJSON from a copy on the stack. */
#define JSON_STACK_MAX 2048

/* ---- string tables ---- */

static const char *const frame_format_table[_FRAME_FORMAT_MAX] = {
        [FRAME_FORMAT_JSON] = "json",
        [FRAME_FORMAT_KV] = "kv",
        [FRAME_FORMAT_VALUE] = "value",
};

static const char *const frame_checksum_table[_FRAME_CHECKSUM_MAX] = {
        [FRAME_CHECKSUM_NONE] = "none",
        [FRAME_CHECKSUM_NMEA] = "nmea",
};

static const char *const reading_source_table[_READING_SOURCE_MAX] = {
        [READING_SOURCE_SERIAL] = "serial",
        [READING_SOURCE_MQTT] = "mqtt",
};

/* Stored in the reject table: never rename one. */
static const char *const frame_reject_table[_FRAME_REJECT_MAX] = {
        [FRAME_REJECT_BAD_JSON] = "bad_json",
        [FRAME_REJECT_BAD_KV] = "bad_kv",
        [FRAME_REJECT_MISSING_SENSOR] = "missing_sensor",
        [FRAME_REJECT_BAD_SENSOR] = "bad_sensor",
        [FRAME_REJECT_BAD_TIMESTAMP] = "bad_timestamp",
        [FRAME_REJECT_BAD_METRIC] = "bad_metric",
        [FRAME_REJECT_NOT_FINITE] = "not_finite",
        [FRAME_REJECT_BAD_VALUE] = "bad_value",
        [FRAME_REJECT_NO_METRIC] = "no_metric",
        [FRAME_REJECT_TOO_MANY_METRICS] = "too_many_metrics",
        [FRAME_REJECT_TOO_LONG] = "too_long",
        [FRAME_REJECT_BAD_CHECKSUM] = "bad_checksum",
        [FRAME_REJECT_NOT_UTF8] = "not_utf8",
        [FRAME_REJECT_TRUNCATED] = "truncated",
        [FRAME_REJECT_TOPIC_MISMATCH] = "topic_mismatch",
        [FRAME_REJECT_SENSOR_MISMATCH] = "sensor_mismatch",
        [FRAME_REJECT_TOO_MANY_NAMES] = "too_many_names",
        [FRAME_REJECT_UNKNOWN_SENSOR] = "unknown_sensor",
        [FRAME_REJECT_OUT_OF_RANGE] = "out_of_range",
        [FRAME_REJECT_UPSTREAM_REFUSED] = "upstream_refused",
};

static const char *table_to_string(const char *const *table, size_t n, int i) {
        if (i < 0 || (size_t) i >= n)
                return NULL;
        return table[i];
}

static int table_from_string(const char *const *table, size_t n, const char *s) {
        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (table[i] && streq(table[i], s))
                        return (int) i;
        return -EINVAL;
}

const char *frame_format_to_string(FrameFormat f) {
        return table_to_string(frame_format_table, ELEMENTSOF(frame_format_table), f);
}

FrameFormat frame_format_from_string(const char *s) {
        return table_from_string(frame_format_table, ELEMENTSOF(frame_format_table), s);
}

const char *frame_checksum_to_string(FrameChecksum c) {
        return table_to_string(frame_checksum_table, ELEMENTSOF(frame_checksum_table), c);
}

FrameChecksum frame_checksum_from_string(const char *s) {
        return table_from_string(frame_checksum_table, ELEMENTSOF(frame_checksum_table), s);
}

const char *reading_source_to_string(ReadingSource s) {
        return table_to_string(reading_source_table, ELEMENTSOF(reading_source_table), s);
}

const char *frame_reject_to_string(FrameReject r) {
        return table_to_string(frame_reject_table, ELEMENTSOF(frame_reject_table), r);
}

/* ---- byte-level checks ---- */

bool frame_id_valid(const char *s, size_t n) {
        if (!s || n == 0 || n > SENSOR_ID_MAX)
                return false;
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char) s[i];
                if (c < 0x21 || c > 0x7e)
                        return false;
        }
        return true;
}

bool frame_utf8_valid(const void *data, size_t size) {
        const uint8_t *p = data, *end = p + size;

        while (p < end) {
                /* ASCII without NUL, eight bytes at a time: the common case for frames. */
                while (end - p >= 8) {
                        uint64_t v;
                        memcpy(&v, p, sizeof(v));
                        if ((v & UINT64_C(0x8080808080808080)) ||
                            ((v - UINT64_C(0x0101010101010101)) & ~v & UINT64_C(0x8080808080808080)))
                                break;
                        p += 8;
                }
                if (p >= end)
                        break;

                uint8_t c = *p, lo = 0x80, hi = 0xbf;
                size_t need;
                if (c < 0x80) {
                        if (c == 0)
                                return false;
                        p++;
                        continue;
                }
                if (c >= 0xc2 && c <= 0xdf)
                        need = 1;
                else if (c == 0xe0) {
                        need = 2;
                        lo = 0xa0;            /* overlong below U+0800 */
                } else if (c == 0xed) {
                        need = 2;
                        hi = 0x9f;            /* U+D800..U+DFFF are surrogates */
                } else if (c >= 0xe1 && c <= 0xef)
                        need = 2;
                else if (c == 0xf0) {
                        need = 3;
                        lo = 0x90;            /* overlong below U+10000 */
                } else if (c >= 0xf1 && c <= 0xf3)
                        need = 3;
                else if (c == 0xf4) {
                        need = 3;
                        hi = 0x8f;            /* beyond U+10FFFF */
                } else
                        return false;         /* continuation byte, 0xc0/0xc1 overlongs, 0xf5.. */

                if ((size_t) (end - p) <= need)
                        return false;
                if (p[1] < lo || p[1] > hi)
                        return false;
                for (size_t i = 2; i <= need; i++)
                        if ((p[i] & 0xc0) != 0x80)
                                return false;
                p += need + 1;
        }
        return true;
}

static int hex_digit(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* Checks "[$]BODY*HH", HH being the XOR of BODY's bytes in hex (either case). As in NMEA 0183
 * the leading '$' is a start marker: it is neither part of the XOR nor of the body. On
 * success narrows the line to BODY. */
static int checksum_nmea(const char **line, size_t *size) {
        const char *s = *line;
        size_t n = *size, start;
        int hi, lo;
        uint8_t x = 0;

        if (n < 3 || s[n - 3] != '*')
                return -EBADMSG;
        hi = hex_digit(s[n - 2]);
        lo = hex_digit(s[n - 1]);
        if (hi < 0 || lo < 0)
                return -EBADMSG;

        start = n > 3 && s[0] == '$' ? 1 : 0;
        for (size_t i = start; i < n - 3; i++)
                x ^= (uint8_t) s[i];
        if (x != (uint8_t) (hi << 4 | lo))
                return -EBADMSG;

        *line = s + start;
        *size = n - 3 - start;
        return 0;
}

/* ---- numbers ---- */

static bool is_digit(char c) {
        return c >= '0' && c <= '9';
}

static bool is_json_space(char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool word_eq(const char *s, size_t n, const char *word) {
        return strlen(word) == n && strncasecmp(s, word, n) == 0;
}

/* "nan", "inf", "infinity" in any case, optionally signed: what a sensor prints for a value
 * that is not finite. Such a value is not_finite rather than bad_value. */
static bool non_finite_word(const char *s, size_t n) {
        if (n > 0 && (s[0] == '+' || s[0] == '-')) {
                s++;
                n--;
        }
        return word_eq(s, n, "nan") || word_eq(s, n, "inf") || word_eq(s, n, "infinity");
}

/* Strict JSON: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool json_number_syntax(const char *s, size_t n) {
        size_t i = 0;

        if (i < n && s[i] == '-')
                i++;
        if (i >= n)
                return false;
        if (s[i] == '0')
                i++;
        else if (s[i] >= '1' && s[i] <= '9')
                while (i < n && is_digit(s[i]))
                        i++;
        else
                return false;
        if (i < n && s[i] == '.') {
                size_t d = ++i;
                while (i < n && is_digit(s[i]))
                        i++;
                if (i == d)
                        return false;
        }
        if (i < n && (s[i] == 'e' || s[i] == 'E')) {
                size_t d;
                i++;
                if (i < n && (s[i] == '+' || s[i] == '-'))
                        i++;
                d = i;
                while (i < n && is_digit(s[i]))
                        i++;
                if (i == d)
                        return false;
        }
        return i == n;
}

/* kv values are a little more lenient than JSON: a '+' sign, leading zeros, "5." and ".5" are
 * what C printf-style firmware emits. Never hex, never nan/inf, never empty:
 * [+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)? */
static bool kv_number_syntax(const char *s, size_t n) {
        size_t i = 0, digits = 0;

        if (i < n && (s[i] == '+' || s[i] == '-'))
                i++;
        while (i < n && is_digit(s[i])) {
                i++;
                digits++;
        }
        if (i < n && s[i] == '.') {
                i++;
                while (i < n && is_digit(s[i])) {
                        i++;
                        digits++;
                }
        }
        if (digits == 0)
                return false;
        if (i < n && (s[i] == 'e' || s[i] == 'E')) {
                size_t d;
                i++;
                if (i < n && (s[i] == '+' || s[i] == '-'))
                        i++;
                d = i;
                while (i < n && is_digit(s[i]))
                        i++;
                if (i == d)
                        return false;
        }
        return i == n;
}

/* Converts a decimal number whose syntax was already checked by one of the above. strtod()
 * needs a terminated string, so it gets a bounded copy. The daemon never calls setlocale(), so
 * LC_NUMERIC is "C" and '.' is the decimal point. Returns 0 or -ENOMEM. */
static int decimal_to_double(const char *s, size_t n, double *ret) {
        char stack[NUMBER_STACK_MAX + 1];
        _cleanup_free_ char *heap = NULL;
        char *buf = stack, *end;

        if (n > NUMBER_STACK_MAX) {
                buf = heap = malloc(n + 1);
                if (!heap)
                        return -ENOMEM;
        }
        memcpy(buf, s, n);
        buf[n] = 0;
        *ret = strtod(buf, &end);
        assert(end == buf + n);
        return 0;
}

/* Integer milliseconds since the epoch as kv writes them: decimal digits only,
 * TS_MIN <= ts < 2^53. */
static bool kv_timestamp(const char *s, size_t n, int64_t *ret) {
        int64_t v = 0;

        if (n == 0 || n > 16)          /* 2^53 has 16 digits */
                return false;
        for (size_t i = 0; i < n; i++) {
                if (!is_digit(s[i]))
                        return false;
                v = v * 10 + (s[i] - '0');
        }
        if (v < TS_MIN || v >= (int64_t) TS_LIMIT)
                return false;
        *ret = v;
        return true;
}

/* JSON has one number type: 1732200000123 and 1.732200000123e12 are the same value and both
 * accepted; 1732200000123.5 is not an integer and rejected. */
static bool json_timestamp(double d, int64_t *ret) {
        if (!(d >= (double) TS_MIN && d < TS_LIMIT) || d != floor(d))
                return false;
        *ret = (int64_t) d;
        return true;
}

/* ---- frames ---- */

static void frame_start(Frame *f) {
        f->sensor[0] = 0;
        f->has_ts = false;
        f->ts_ms = 0;
        f->n_metrics = 0;
        f->n_ignored = 0;
}

/* Copies what is in use, so a caller's Frame costs no 2 KiB memset per line. */
static void frame_copy(Frame *dst, const Frame *src) {
        memcpy(dst->sensor, src->sensor, strlen(src->sensor) + 1);
        dst->has_ts = src->has_ts;
        dst->ts_ms = src->ts_ms;
        dst->n_metrics = src->n_metrics;
        memcpy(dst->metrics, src->metrics, src->n_metrics * sizeof(FrameMetric));
        dst->n_ignored = src->n_ignored;
}

static int reject(FrameReject *ret_reject, FrameReject reason) {
        *ret_reject = reason;
        return -EBADMSG;
}

static void set_id(char *dst, const char *s, size_t n) {
        memcpy(dst, s, n);
        dst[n] = 0;
}

/* Adds one metric. Duplicate names in one frame are rejected (bad_metric) rather than one of
 * them silently winning: the sender is confused, and the reject table keeps the raw line for a
 * person to look at. */
static int frame_add_metric(Frame *f, const char *name, size_t n, double value, FrameReject *ret_reject) {
        if (!frame_id_valid(name, n))
                return reject(ret_reject, FRAME_REJECT_BAD_METRIC);
        if (!isfinite(value))
                return reject(ret_reject, FRAME_REJECT_NOT_FINITE);
        for (size_t i = 0; i < f->n_metrics; i++)
                if (strncmp(f->metrics[i].name, name, n) == 0 && f->metrics[i].name[n] == 0)
                        return reject(ret_reject, FRAME_REJECT_BAD_METRIC);
        if (f->n_metrics >= FRAME_METRICS_MAX)
                return reject(ret_reject, FRAME_REJECT_TOO_MANY_METRICS);

        set_id(f->metrics[f->n_metrics].name, name, n);
        f->metrics[f->n_metrics].value = value;
        f->n_metrics++;
        return 0;
}

/* The last checks, once every source of a sensor id has had its say. */
static int frame_finish(const Frame *f, FrameReject *ret_reject) {
        if (f->sensor[0] == 0)
                return reject(ret_reject, FRAME_REJECT_MISSING_SENSOR);
        if (f->n_metrics == 0)
                return reject(ret_reject, FRAME_REJECT_NO_METRIC);
        return 0;
}

static void cjson_deletep(cJSON **j) {
        cJSON_Delete(*j);
}

/* cJSON allocates a node per value and a copy of every key and string: eight malloc() and eight
 * free() for a message of a sensor id and two metrics, every message. While one message is
 * parsed they come from this buffer instead, and are all given back at once when the parse is
 * done; what does not fit (a big object) falls back to malloc(). One thread, and nothing keeps
 * a node of the parse, so one static buffer does. */
#define JSON_ARENA_SIZE 4096

static struct {
        _Alignas(max_align_t) unsigned char buf[JSON_ARENA_SIZE];
        size_t used;
} json_arena;

static void json_arena_reset(void) {
        json_arena.used = 0;
        ASAN_POISON_MEMORY_REGION(json_arena.buf, JSON_ARENA_SIZE);
}

static void *json_arena_alloc(size_t size) {
        size_t n = (size + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1);
        size_t room = JSON_ARENA_SIZE - json_arena.used; /* used never passes the size */

        /* n + gap <= room keeps that so (n <= room first: no sum wraps round; used may end closer
         * to the end than a gap, where room minus the gap would); an arena pointer is inside it. */
        if (size > 0 && n >= size && n <= room && n + JSON_ARENA_GAP <= room) {
                void *p = json_arena.buf + json_arena.used;

                json_arena.used += n + JSON_ARENA_GAP;
                ASAN_UNPOISON_MEMORY_REGION(p, size);
                return p;
        }
        return malloc(size);
}

static void json_arena_free(void *p) {
        if ((unsigned char *) p >= json_arena.buf && (unsigned char *) p < json_arena.buf + JSON_ARENA_SIZE)
                return; /* the whole arena is reset at the end of the parse */
        free(p);
}

/* cJSON decodes "\u0000" into a NUL inside its C strings, which would silently cut a sensor id
 * or metric name short. Such frames are refused as bad_json; a raw NUL never gets here
 * (frame_utf8_valid). A backslash outside strings is a syntax error anyway. */
static bool json_has_nul_escape(const char *s, size_t n) {
        const char *p = s, *end = s + n;

        while (p < end && (p = memchr(p, '\\', end - p))) {
                if (end - p >= 6 && memcmp(p + 1, "u0000", 5) == 0)
                        return true;
                p += 2;               /* skip the escaped character, e.g. the second '\' of "\\" */
        }
        return false;
}

/* The members of a parsed object, in order; the first problem decides. */
static int json_members(const cJSON *root, Frame *f, FrameReject *ret_reject) {
        bool have_sensor = false;
        cJSON *item;
        int r;

        cJSON_ArrayForEach(item, root) {
                const char *name = item->string;
                size_t len = strlen(name);
                double v;

                if (streq(name, "sensor")) {
                        if (have_sensor || !cJSON_IsString(item) ||
                            !frame_id_valid(item->valuestring, strlen(item->valuestring)))
                                return reject(ret_reject, FRAME_REJECT_BAD_SENSOR);
                        set_id(f->sensor, item->valuestring, strlen(item->valuestring));
                        have_sensor = true;
                        continue;
                }
                if (streq(name, "ts")) {
                        if (f->has_ts || !cJSON_IsNumber(item) || !json_timestamp(item->valuedouble, &f->ts_ms))
                                return reject(ret_reject, FRAME_REJECT_BAD_TIMESTAMP);
                        f->has_ts = true;
                        continue;
                }

                if (cJSON_IsNumber(item))
                        v = item->valuedouble;
                else if (cJSON_IsBool(item))
                        v = cJSON_IsTrue(item) ? 1.0 : 0.0;
                else {
                        /* null, strings, arrays, objects: room for firmware versions, notes */
                        f->n_ignored++;
                        continue;
                }
                r = frame_add_metric(f, name, len, v, ret_reject);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* For a rejected object: its sensor id, when it has exactly one valid "sensor" member. */
static void json_find_sensor(const cJSON *root, Frame *f) {
        const cJSON *item, *found = NULL;

        cJSON_ArrayForEach(item, root)
                if (streq(item->string, "sensor")) {
                        if (found) {
                                f->sensor[0] = 0;
                                return;
                        }
                        found = item;
                }
        if (cJSON_IsString(found) && frame_id_valid(found->valuestring, strlen(found->valuestring)))
                set_id(f->sensor, found->valuestring, strlen(found->valuestring));
        else
                f->sensor[0] = 0;
}

static int parse_json_tree(const char *s, size_t n, Frame *f, FrameReject *ret_reject);

/* One JSON object: see frame.h for the rules. Leaves f->sensor empty when there is no "sensor"
 * member. On -EBADMSG, f->sensor is the object's sensor id if it has a valid one, else "". */
static int parse_json(const char *s, size_t n, Frame *f, FrameReject *ret_reject) {
        int r;

        /* cJSON's hooks are global: set for this parse and its cJSON_Delete() only (the parse
         * tree does not outlive parse_json_tree()), then back to malloc() for everyone else. */
        json_arena_reset();
        cJSON_InitHooks(&(cJSON_Hooks){ .malloc_fn = json_arena_alloc, .free_fn = json_arena_free });
        r = parse_json_tree(s, n, f, ret_reject);
        cJSON_InitHooks(NULL);
        json_arena_reset();
        return r;
}

static int parse_json_tree(const char *s, size_t n, Frame *f, FrameReject *ret_reject) {
        _cleanup_(cjson_deletep) cJSON *root = NULL;
        _cleanup_free_ char *heap = NULL;
        char stack[JSON_STACK_MAX + 1], *copy = stack;
        const char *end = NULL;
        int r;

        if (json_has_nul_escape(s, n))
                return reject(ret_reject, FRAME_REJECT_BAD_JSON);

        /* cJSON is given the length, but also a terminated copy: no read past our bytes even
         * if it looked one further. */
        if (n > JSON_STACK_MAX) {
                copy = heap = malloc(n + 1);
                if (!heap)
                        return -ENOMEM;
        }
        memcpy(copy, s, n);
        copy[n] = 0;

        root = cJSON_ParseWithLengthOpts(copy, n, &end, false);
        if (!root || !cJSON_IsObject(root))
                return reject(ret_reject, FRAME_REJECT_BAD_JSON);
        while (end < copy + n && is_json_space(*end))
                end++;
        if (end != copy + n)
                return reject(ret_reject, FRAME_REJECT_BAD_JSON);   /* trailing garbage */

        r = json_members(root, f, ret_reject);
        if (r == -EBADMSG)
                json_find_sensor(root, f);
        return r;
}

/* Splits off the next token at *i; false at the end. */
static bool kv_next(const char *s, size_t n, size_t *i, const char **ret_tok, size_t *ret_len) {
        size_t j = *i;

        while (j < n && (s[j] == ' ' || s[j] == '\t'))
                j++;
        if (j >= n)
                return false;
        *ret_tok = s + j;
        while (j < n && s[j] != ' ' && s[j] != '\t')
                j++;
        *ret_len = (size_t) (s + j - *ret_tok);
        *i = j;
        return true;
}

/* For a rejected line: its sensor id, when it has exactly one valid "sensor=" token. */
static void kv_find_sensor(const char *s, size_t n, Frame *f) {
        const char *tok, *found = NULL;
        size_t i = 0, len, found_len = 0;

        f->sensor[0] = 0;
        while (kv_next(s, n, &i, &tok, &len))
                if (len >= 7 && memcmp(tok, "sensor=", 7) == 0) {
                        if (found)
                                return;
                        found = tok + 7;
                        found_len = len - 7;
                }
        if (found && frame_id_valid(found, found_len))
                set_id(f->sensor, found, found_len);
}

/* Tokens "key=value" separated by spaces/tabs; the first problem decides. */
static int kv_tokens(const char *s, size_t n, Frame *f, FrameReject *ret_reject) {
        bool have_sensor = false;
        size_t i = 0;
        int r;

        const char *tok;
        size_t tlen;

        while (kv_next(s, n, &i, &tok, &tlen)) {
                const char *eq, *val;
                size_t klen, vlen;
                double v;

                eq = memchr(tok, '=', tlen);
                if (!eq || eq == tok)
                        return reject(ret_reject, FRAME_REJECT_BAD_KV);
                klen = (size_t) (eq - tok);
                val = eq + 1;
                vlen = tlen - klen - 1;

                if (klen == 6 && memcmp(tok, "sensor", 6) == 0) {
                        if (have_sensor || !frame_id_valid(val, vlen))
                                return reject(ret_reject, FRAME_REJECT_BAD_SENSOR);
                        set_id(f->sensor, val, vlen);
                        have_sensor = true;
                        continue;
                }
                if (klen == 2 && memcmp(tok, "ts", 2) == 0) {
                        if (f->has_ts || !kv_timestamp(val, vlen, &f->ts_ms))
                                return reject(ret_reject, FRAME_REJECT_BAD_TIMESTAMP);
                        f->has_ts = true;
                        continue;
                }

                if (!frame_id_valid(tok, klen))
                        return reject(ret_reject, FRAME_REJECT_BAD_METRIC);
                if (!kv_number_syntax(val, vlen))
                        return reject(ret_reject, non_finite_word(val, vlen) ? FRAME_REJECT_NOT_FINITE
                                                                             : FRAME_REJECT_BAD_VALUE);
                r = decimal_to_double(val, vlen, &v);
                if (r < 0)
                        return r;
                r = frame_add_metric(f, tok, klen, v, ret_reject);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Leaves f->sensor empty without a sensor key. On -EBADMSG, f->sensor is the line's sensor id if
 * it has one valid one, else "". */
static int parse_kv(const char *s, size_t n, Frame *f, FrameReject *ret_reject) {
        int r;

        r = kv_tokens(s, n, f, ret_reject);
        if (r == -EBADMSG)
                kv_find_sensor(s, n, f);
        return r;
}

/* A reject: the reason, and the sensor id (or "") so that the caller can log it. */
static int reject_frame(Frame *ret_frame, const char *sensor, FrameReject *ret_reject, FrameReject reason) {
        /* an id is only told when it is one: never for bad_sensor */
        if (reason == FRAME_REJECT_BAD_SENSOR || !frame_id_valid(sensor, strlen(sensor)))
                sensor = "";
        memcpy(ret_frame->sensor, sensor, strlen(sensor) + 1);
        return reject(ret_reject, reason);
}

int frame_parse_line(FrameFormat format, FrameChecksum checksum, const char *line, size_t size,
                     Frame *ret_frame, FrameReject *ret_reject) {
        FrameReject reason;
        Frame f;
        int r;

        assert(line || size == 0);
        assert(ret_frame);
        assert(ret_reject);

        if ((format != FRAME_FORMAT_JSON && format != FRAME_FORMAT_KV) ||
            (checksum != FRAME_CHECKSUM_NONE && checksum != FRAME_CHECKSUM_NMEA))
                return -EINVAL;

        if (size > 0 && line[size - 1] == '\r')
                size--;
        if (checksum == FRAME_CHECKSUM_NMEA && checksum_nmea(&line, &size) < 0)
                return reject_frame(ret_frame, "", ret_reject, FRAME_REJECT_BAD_CHECKSUM);
        if (!frame_utf8_valid(line, size))
                return reject_frame(ret_frame, "", ret_reject, FRAME_REJECT_NOT_UTF8);

        frame_start(&f);
        r = format == FRAME_FORMAT_JSON ? parse_json(line, size, &f, &reason) : parse_kv(line, size, &f, &reason);
        if (r == -EBADMSG || (r >= 0 && frame_finish(&f, &reason) < 0))
                return reject_frame(ret_frame, f.sensor, ret_reject, reason);
        if (r < 0)
                return r;

        frame_copy(ret_frame, &f);
        return 0;
}

int frame_parse_value(const char *payload, size_t size, double *ret_value, FrameReject *ret_reject) {
        const char *s = payload;
        size_t n = size;
        double v;
        int r;

        assert(payload || size == 0);
        assert(ret_value);
        assert(ret_reject);

        while (n > 0 && is_json_space(s[0])) {
                s++;
                n--;
        }
        while (n > 0 && is_json_space(s[n - 1]))
                n--;

        if (n == 4 && memcmp(s, "true", 4) == 0)
                v = 1.0;
        else if (n == 5 && memcmp(s, "false", 5) == 0)
                v = 0.0;
        else if (json_number_syntax(s, n)) {
                r = decimal_to_double(s, n, &v);
                if (r < 0)
                        return r;
                if (!isfinite(v))
                        return reject(ret_reject, FRAME_REJECT_NOT_FINITE);
        } else
                return reject(ret_reject, non_finite_word(s, n) ? FRAME_REJECT_NOT_FINITE : FRAME_REJECT_BAD_VALUE);

        *ret_value = v;
        return 0;
}

/* ---- line splitting ---- */

static const char *const line_end_table[_LINE_END_MAX] = {
        [LINE_END_LF] = "lf",
        [LINE_END_CR] = "cr",
        [LINE_END_ANY] = "any",
};

const char *line_end_to_string(LineEnd e) {
        return table_to_string(line_end_table, ELEMENTSOF(line_end_table), e);
}

LineEnd line_end_from_string(const char *s) {
        return table_from_string(line_end_table, ELEMENTSOF(line_end_table), s);
}

int line_buffer_init(LineBuffer *lb, size_t max, LineEnd line_end) {
        char *b;

        assert(lb);
        if (max == 0 || max > SIZE_MAX / 2 || line_end < 0 || line_end >= _LINE_END_MAX)
                return -EINVAL;

        /* One byte more than a line: with lf, a '\r' right after max bytes may still turn out to
         * be the one before "\n", which does not count. */
        b = malloc(max + 1);
        if (!b)
                return -ENOMEM;
        *lb = (LineBuffer) { .buf = b, .max = max, .line_end = line_end };
        return 0;
}

void line_buffer_done(LineBuffer *lb) {
        if (!lb)
                return;
        lb->buf = mfree(lb->buf);
        line_buffer_reset(lb);
}

void line_buffer_reset(LineBuffer *lb) {
        lb->len = 0;
        lb->discarding = false;
        lb->skip_lf = false;
        lb->chunk = NULL;
        lb->chunk_left = 0;
}

void line_buffer_put(LineBuffer *lb, const void *data, size_t size) {
        assert(lb && lb->buf);
        assert(data || size == 0);
        /* the previous chunk must be used up: its unread rest would be lost */
        assert(lb->chunk_left == 0);

        lb->chunk = data;
        lb->chunk_left = size;
}

static void line_buffer_consume(LineBuffer *lb, size_t n) {
        lb->chunk += n;
        lb->chunk_left -= n;
        if (lb->chunk_left == 0)
                lb->chunk = NULL;
}

/* The offset of the first line end in p[0..n) for the buffer's mode, or n when there is none. */
static size_t line_end_find(LineEnd mode, const char *p, size_t n) {
        const char *lf, *cr;

        switch (mode) {
        case LINE_END_LF:
                lf = memchr(p, '\n', n);
                return lf ? (size_t) (lf - p) : n;
        case LINE_END_CR:
                cr = memchr(p, '\r', n);
                return cr ? (size_t) (cr - p) : n;
        default:
                lf = memchr(p, '\n', n);
                n = lf ? (size_t) (lf - p) : n;
                cr = memchr(p, '\r', n);
                return cr ? (size_t) (cr - p) : n;
        }
}

/* Consumes the chunk up to and including the line end at offset i. A '\r' that ends a line (cr,
 * any) takes a '\n' right after it along, also when that '\n' comes with the next chunk:
 * "\r\n" is one line end, not a line end and an empty line. */
static void line_buffer_skip_end(LineBuffer *lb, size_t i) {
        bool cr = lb->chunk[i] == '\r';

        line_buffer_consume(lb, i + 1);
        if (!cr)
                return;
        if (lb->chunk_left == 0)
                lb->skip_lf = true;
        else if (lb->chunk[0] == '\n')
                line_buffer_consume(lb, 1);
}

/* The chunk's rest, p[0..n), holds no line end: keep it, unless the line is over max by now.
 * Then it is handed out at once (its first max bytes, overlong) and the rest of it, up to its
 * line end, is dropped: a device that never ends a line is told about within max bytes, not
 * when (if ever) a line end comes. Returns 1 with the line, or 0. */
static int line_buffer_keep(LineBuffer *lb, const char *p, size_t n, const char **ret_line, size_t *ret_size) {
        size_t total = lb->len + n;

        /* with lf, a '\r' in the extra byte may still be the one before "\n" */
        if (total <= lb->max || (lb->line_end == LINE_END_LF && total == lb->max + 1 && p[n - 1] == '\r')) {
                memcpy(lb->buf + lb->len, p, n);
                lb->len = total;
                line_buffer_consume(lb, n);
                return 0;
        }

        if (lb->len == 0)
                *ret_line = p;        /* no copy: valid until the next call, as the chunk is */
        else {
                if (lb->len < lb->max)
                        memcpy(lb->buf + lb->len, p, lb->max - lb->len);
                *ret_line = lb->buf;
        }
        *ret_size = lb->max;
        lb->discarded += total - lb->max;
        lb->len = 0;
        lb->discarding = true;
        line_buffer_consume(lb, n);
        return 1;
}

int line_buffer_next(LineBuffer *lb, const char **ret_line, size_t *ret_size, bool *ret_overlong) {
        assert(lb && lb->buf);
        assert(ret_line && ret_size && ret_overlong);

        for (;;) {
                const char *p = lb->chunk, *line;
                size_t n = lb->chunk_left, i, size;

                if (n == 0)
                        return 0;
                if (lb->skip_lf) {
                        lb->skip_lf = false;
                        if (p[0] == '\n') {
                                line_buffer_consume(lb, 1);
                                continue;
                        }
                }

                i = line_end_find(lb->line_end, p, n);
                if (lb->discarding) {
                        /* the rest of a line handed out as overlong already */
                        lb->discarded += i;
                        if (i == n) {
                                line_buffer_consume(lb, n);
                                return 0;
                        }
                        lb->discarding = false;
                        line_buffer_skip_end(lb, i);
                        continue;
                }
                if (i == n) {
                        if (line_buffer_keep(lb, p, n, ret_line, ret_size) == 0)
                                return 0;
                        *ret_overlong = true;
                        return 1;
                }

                if (lb->len == 0) {
                        /* The whole line is in this chunk: hand it out without a copy. */
                        line = p;
                        size = i;
                } else {
                        /* buf keeps the bytes until the next call appends to it again */
                        memcpy(lb->buf + lb->len, p, MIN(i, lb->max + 1 - lb->len));
                        line = lb->buf;
                        size = lb->len + i;
                        lb->len = 0;
                }
                line_buffer_skip_end(lb, i);

                /* lf: strip one '\r' (of "\r\n"); then cut to max */
                if (lb->line_end == LINE_END_LF && size > 0 && size <= lb->max + 1 && line[size - 1] == '\r')
                        size--;
                *ret_overlong = size > lb->max;
                if (size > lb->max) {
                        lb->discarded += size - lb->max;
                        size = lb->max;
                }
                *ret_line = line;
                *ret_size = size;
                return 1;
        }
}

bool line_buffer_pending(const LineBuffer *lb, const char **ret_line, size_t *ret_size) {
        assert(lb);

        if (lb->len == 0)
                return false;
        if (ret_line)
                *ret_line = lb->buf;
        if (ret_size)
                *ret_size = MIN(lb->len, lb->max);
        return true;
}

/* ---- topic patterns ---- */

typedef enum LevelKind {
        LEVEL_LITERAL,
        LEVEL_PLUS,
        LEVEL_HASH,
} LevelKind;

typedef enum LevelName {
        LEVEL_NAME_NONE,
        LEVEL_NAME_SENSOR,
        LEVEL_NAME_METRIC,
} LevelName;

typedef struct Level {
        LevelKind kind;
        LevelName name;
        const char *text;             /* LEVEL_LITERAL: points into subscription */
        size_t len;
} Level;

struct TopicPattern {
        char *subscription;           /* the filter without wildcard names */
        bool has_sensor;
        bool has_metric;
        size_t n_levels;
        Level levels[];
};

TopicPattern *topic_pattern_free(TopicPattern *p) {
        if (!p)
                return NULL;
        free(p->subscription);
        free(p);
        return NULL;
}

static bool wildcard_name_valid(const char *s, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= 'a' && s[i] <= 'z') || s[i] == '_'))
                        return false;
        return n > 0;
}

/* The checks on the filter as a whole. Returns NULL and sets *ret_len, or says what is wrong. */
static const char *topic_filter_error(const char *filter, size_t *ret_len) {
        size_t len;

        if (!filter || !*filter)
                return "the topic filter is empty";
        len = strlen(filter);
        if (len > TOPIC_MAX)
                return "the topic filter is longer than 65535 bytes";
        if (!frame_utf8_valid(filter, len))
                return "the topic filter is not valid UTF-8";
        /* The MQTT spec asks brokers to refuse control characters, and libmosquitto refuses
         * them before sending (MOSQ_ERR_MALFORMED_UTF8): U+0000..U+001F, U+007F, and
         * U+0080..U+009F (0xC2 0x80..0x9F in valid UTF-8). */
        for (size_t i = 0, separators = 0; i < len; i++) {
                unsigned char c = (unsigned char) filter[i];

                if (c < 0x20 || c == 0x7F || (c == 0xC2 && (unsigned char) filter[i + 1] <= 0x9F))
                        return "the topic filter holds a control character (U+0000..U+001F or U+007F..U+009F), "
                               "which brokers refuse";
                if (c == '/' && ++separators > TOPIC_FILTER_MAX_SEPARATORS)
                        return "the topic filter has more than 201 levels (200 '/'), which mosquitto refuses";
        }
        *ret_len = len;
        return NULL;
}

/* The name of a "+name" level, name[0..n): marks l and p with it. Returns NULL, or says why the
 * name is refused. */
static const char *level_name_parse(TopicPattern *p, Level *l, const char *name, size_t n) {
        if (!wildcard_name_valid(name, n))
                return "a wildcard name after '+' must be lowercase letters and '_'";
        if (n == 6 && memcmp(name, "sensor", 6) == 0) {
                if (p->has_sensor)
                        return "'+sensor' is used twice in the topic filter";
                l->name = LEVEL_NAME_SENSOR;
                p->has_sensor = true;
        } else if (n == 6 && memcmp(name, "metric", 6) == 0) {
                if (p->has_metric)
                        return "'+metric' is used twice in the topic filter";
                l->name = LEVEL_NAME_METRIC;
                p->has_metric = true;
        } else
                return "unknown wildcard name: only '+sensor' and '+metric' are known";
        return NULL;
}

/* One level of the filter, s[0..n) without its '/', the filter's last when last: fills l and
 * writes the level as subscribed (without a wildcard name) at *out, advancing it. Returns NULL,
 * or says why the level is refused. */
static const char *level_parse(TopicPattern *p, Level *l, const char *s, size_t n, bool last, char **out) {
        const char *error;

        if (n > 0 && s[0] == '#') {
                if (n > 1)
                        return "'#' must stand alone in its topic level";
                if (!last)
                        return "'#' is only allowed as the last topic level";
                l->kind = LEVEL_HASH;
                *(*out)++ = '#';
                return NULL;
        }
        if (n > 0 && s[0] == '+') {
                l->kind = LEVEL_PLUS;
                if (n > 1) {
                        error = level_name_parse(p, l, s + 1, n - 1);
                        if (error)
                                return error;
                }
                *(*out)++ = '+';
                return NULL;
        }
        if (memchr(s, '+', n) || memchr(s, '#', n))
                return "'+' and '#' must stand alone at the start of a topic level";
        l->kind = LEVEL_LITERAL;
        l->text = *out;
        l->len = n;
        memcpy(*out, s, n);
        *out += n;
        return NULL;
}

int topic_pattern_new(const char *filter, TopicPattern **ret, const char **ret_error) {
        _cleanup_(topic_pattern_freep) TopicPattern *p = NULL;
        const char *error, *s;
        size_t len = 0, n_levels = 1;
        char *out;

        assert(ret);

        error = topic_filter_error(filter, &len);
        if (error)
                goto invalid;
        for (s = filter; *s; s++)
                if (*s == '/')
                        n_levels++;

        p = calloc(1, offsetof(TopicPattern, levels) + n_levels * sizeof(Level));
        if (!p)
                return -ENOMEM;
        p->subscription = malloc(len + 1);
        if (!p->subscription)
                return -ENOMEM;

        s = filter;
        out = p->subscription;
        for (size_t i = 0; i < n_levels; i++) {
                const char *slash = strchr(s, '/');
                size_t n = slash ? (size_t) (slash - s) : strlen(s);

                error = level_parse(p, &p->levels[i], s, n, i + 1 == n_levels, &out);
                if (error)
                        goto invalid;
                if (slash) {
                        *out++ = '/';
                        s = slash + 1;
                }
        }
        *out = 0;
        p->n_levels = n_levels;

        *ret = TAKE_PTR(p);
        return 0;

invalid:
        if (ret_error)
                *ret_error = error;
        return -EINVAL;
}

const char *topic_pattern_subscription(const TopicPattern *p) {
        assert(p);
        return p->subscription;
}

bool topic_pattern_has_sensor(const TopicPattern *p) {
        return p && p->has_sensor;
}

bool topic_pattern_has_metric(const TopicPattern *p) {
        return p && p->has_metric;
}

/* Copies a named level out, or leaves "" when it does not fit: frame_id_valid() rejects "". */
static void level_copy(char *dst, size_t dst_size, const char *s, size_t n) {
        if (!dst)
                return;
        if (!s || n >= dst_size)
                n = 0;
        memcpy(dst, s ?: "", n);
        dst[n] = 0;
}

/* Where a topic's named levels are: spans of the topic; sensor / metric NULL when the pattern
 * names no such level. */
typedef struct LevelSpans {
        const char *sensor, *metric;
        size_t sensor_len, metric_len;
} LevelSpans;

/* The matching itself, by the rules in frame.h. Returns 1 and fills *ret (pointing into
 * topic), or 0. */
static int topic_match_spans(const TopicPattern *p, const char *topic, LevelSpans *ret) {
        const char *pos = topic;
        LevelSpans spans = {};
        bool more = true;             /* is there a topic level at pos? */

        assert(p);

        if (!topic || !*topic)
                return 0;
        /* MQTT: topics starting with '$' ($SYS/...) are not matched by a leading wildcard. */
        if (topic[0] == '$' && p->levels[0].kind != LEVEL_LITERAL)
                return 0;

        for (size_t i = 0; i < p->n_levels; i++) {
                const Level *l = &p->levels[i];
                const char *slash;
                size_t n;

                if (l->kind == LEVEL_HASH)
                        goto match;   /* the parent level and any number below, even none */
                if (!more)
                        return 0;

                slash = strchr(pos, '/');
                n = slash ? (size_t) (slash - pos) : strlen(pos);
                if (l->kind == LEVEL_LITERAL) {
                        if (n != l->len || memcmp(pos, l->text, n) != 0)
                                return 0;
                } else if (l->name == LEVEL_NAME_SENSOR) {
                        spans.sensor = pos;
                        spans.sensor_len = n;
                } else if (l->name == LEVEL_NAME_METRIC) {
                        spans.metric = pos;
                        spans.metric_len = n;
                }
                if (slash)
                        pos = slash + 1;
                else
                        more = false;
        }
        if (more)
                return 0;             /* the topic has more levels than the filter */

match:
        *ret = spans;
        return 1;
}

int topic_pattern_match_into(const TopicPattern *p, const char *topic, TopicMatch *ret) {
        LevelSpans spans;

        assert(p);
        assert(ret);

        if (topic_match_spans(p, topic, &spans) == 0)
                return 0;
        level_copy(ret->sensor, sizeof(ret->sensor), spans.sensor, spans.sensor_len);
        level_copy(ret->metric, sizeof(ret->metric), spans.metric, spans.metric_len);
        ret->has_sensor = p->has_sensor;
        ret->has_metric = p->has_metric;
        return 1;
}

int topic_pattern_match(const TopicPattern *p, const char *topic, char *ret_sensor, char *ret_metric) {
        LevelSpans spans;

        if (topic_match_spans(p, topic, &spans) == 0)
                return 0;
        level_copy(ret_sensor, SENSOR_ID_MAX + 1, spans.sensor, spans.sensor_len);
        level_copy(ret_metric, METRIC_NAME_MAX + 1, spans.metric, spans.metric_len);
        return 1;
}

/* ---- MQTT payloads ---- */

/* A sensor id or metric name from the topic or the config, checked like any other. */
static int id_from(char *dst, const char *s, FrameReject bad, FrameReject *ret_reject) {
        size_t n = strlen(s);

        if (!frame_id_valid(s, n))
                return reject(ret_reject, bad);
        set_id(dst, s, n);
        return 0;
}

/* A value payload, s[0..n): one number, named metric (from the topic or the config; NULL: none
 * known, no_metric). The number is checked first: bad_value beats no_metric. */
static int parse_value_frame(const char *s, size_t n, const char *metric, Frame *f, FrameReject *ret_reject) {
        int r;

        r = frame_parse_value(s, n, &f->metrics[0].value, ret_reject);
        if (r < 0)
                return r;
        if (!metric)
                return reject(ret_reject, FRAME_REJECT_NO_METRIC);
        r = id_from(f->metrics[0].name, metric, FRAME_REJECT_BAD_METRIC, ret_reject);
        if (r < 0)
                return r;
        f->n_metrics = 1;
        return 0;
}

int frame_parse_mqtt_matched(const TopicMatch *match, FrameFormat format, const char *fixed_sensor,
                             const char *fixed_metric, const void *payload, size_t size,
                             size_t max_size, Frame *ret_frame, FrameReject *ret_reject) {
        bool topic_sensor = match && match->has_sensor, topic_metric = match && match->has_metric;
        const char *s = payload, *other_sensor;
        FrameReject reason;
        Frame f;
        int r;

        assert(payload || size == 0);
        assert(ret_frame);
        assert(ret_reject);

        if (format < 0 || format >= _FRAME_FORMAT_MAX)
                return -EINVAL;

        /* the sensor id when the payload names none */
        other_sensor = topic_sensor ? match->sensor : strempty(fixed_sensor);

        if (size > max_size)
                return reject_frame(ret_frame, other_sensor, ret_reject, FRAME_REJECT_TOO_LONG);
        if (!frame_utf8_valid(s, size))
                return reject_frame(ret_frame, other_sensor, ret_reject, FRAME_REJECT_NOT_UTF8);
        if (size > 0 && s[size - 1] == '\n')
                size--;
        if (size > 0 && s[size - 1] == '\r')
                size--;

        frame_start(&f);
        switch (format) {
        case FRAME_FORMAT_JSON:
                r = parse_json(s, size, &f, &reason);
                break;
        case FRAME_FORMAT_KV:
                r = parse_kv(s, size, &f, &reason);
                break;
        case FRAME_FORMAT_VALUE:
                r = parse_value_frame(s, size, topic_metric ? match->metric : fixed_metric, &f, &reason);
                break;
        default:
                return -EINVAL;
        }
        if (r < 0 && r != -EBADMSG)
                return r;

        /* A topic that names the sensor is its identity: a broker ACL can restrict who publishes
         * on which topic, nothing restricts what a payload says. A payload naming another sensor
         * would otherwise file its values under that name (and have the real sensor's readings
         * dropped as duplicates of them). */
        if (r >= 0 && topic_sensor && f.sensor[0] != 0 && !streq(f.sensor, match->sensor))
                r = reject(&reason, FRAME_REJECT_SENSOR_MISMATCH);
        if (r >= 0 && f.sensor[0] == 0 && (topic_sensor || fixed_sensor))
                r = id_from(f.sensor, other_sensor, FRAME_REJECT_BAD_SENSOR, &reason);
        if (r >= 0)
                r = frame_finish(&f, &reason);
        if (r < 0)
                /* the id a reject is logged under: the topic's when it names one, whatever the
                 * payload claims */
                return reject_frame(ret_frame, topic_sensor || !f.sensor[0] ? other_sensor : f.sensor, ret_reject,
                                    reason);

        frame_copy(ret_frame, &f);
        return 0;
}

int frame_parse_mqtt(const TopicPattern *p, FrameFormat format, const char *fixed_sensor,
                     const char *fixed_metric, const char *topic, const void *payload,
                     size_t size, size_t max_size, Frame *ret_frame, FrameReject *ret_reject) {
        TopicMatch match;

        assert(payload || size == 0);
        assert(ret_frame);
        assert(ret_reject);

        if (format < 0 || format >= _FRAME_FORMAT_MAX)
                return -EINVAL;
        if (!p)
                return frame_parse_mqtt_matched(NULL, format, fixed_sensor, fixed_metric, payload, size,
                                                max_size, ret_frame, ret_reject);
        if (topic_pattern_match_into(p, topic, &match) == 0)
                /* too_long still comes first; neither names a sensor: the topic is none of ours */
                return reject_frame(ret_frame, "", ret_reject,
                                    size > max_size ? FRAME_REJECT_TOO_LONG : FRAME_REJECT_TOPIC_MISMATCH);
        return frame_parse_mqtt_matched(&match, format, fixed_sensor, fixed_metric, payload, size, max_size,
                                        ret_frame, ret_reject);
}
