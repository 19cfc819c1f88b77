/* SPDX-License-Identifier: MIT */
/* Unit tests for the frame parsers: tables of input bytes and the frame or reject they give. */
#include <check.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "collector/frame.h"
#include "testlib.h"

#define BYTES(s) (s), (sizeof(s) - 1)
#define ACCEPT (-1)
#define JSON FRAME_FORMAT_JSON
#define KV FRAME_FORMAT_KV
#define VALUE FRAME_FORMAT_VALUE
#define NONE FRAME_CHECKSUM_NONE
#define NMEA FRAME_CHECKSUM_NMEA

#define S64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define S65 S64 "x"

typedef struct M {
        const char *name;
        double value;
} M;

typedef struct LineCase {
        FrameFormat format;
        FrameChecksum checksum;
        const char *in;
        size_t size;
        int reject;                   /* a FrameReject, or ACCEPT */
        const char *sensor;
        int64_t ts;                   /* 0: no timestamp expected */
        size_t n_ignored;
        M m[4];                       /* expected metrics, until name == NULL */
} LineCase;

#define OK(fmt, ck, in, sensor, ts, ign, ...) { fmt, ck, BYTES(in), ACCEPT, sensor, ts, ign, { __VA_ARGS__ } }
#define NO(fmt, ck, in, why) { fmt, ck, BYTES(in), FRAME_REJECT_##why, NULL, 0, 0, { { NULL, 0 } } }

static const LineCase line_cases[] = {
        /* json: accepted */
        OK(JSON, NONE, "{\"sensor\":\"gh1-t3\",\"ts\":1732200000123,\"temperature\":23.4,\"humidity\":61.2}",
           "gh1-t3", 1732200000123, 0, { "temperature", 23.4 }, { "humidity", 61.2 }),
        OK(JSON, NONE, "{\"sensor\":\"s\",\"on\":true,\"off\":false,\"fw\":\"1.2\",\"n\":null,\"a\":[1],\"o\":{\"x\":1}}",
           "s", 0, 4, { "on", 1 }, { "off", 0 }),
        OK(JSON, NONE, "{\"sensor\":\"s\",\"t\":1}\r", "s", 0, 0, { "t", 1 }),
        OK(JSON, NONE, " \t{\"sensor\":\"s\",\"t\":1} \t", "s", 0, 0, { "t", 1 }),
        OK(JSON, NONE, "{ \"t\" : -1.5e-3 , \"sensor\" : \"s\" }", "s", 0, 0, { "t", -1.5e-3 }),
        OK(JSON, NONE, "{\"sensor\":\"s\",\"ts\":1.7322e12,\"t\":1}", "s", 1732200000000, 0, { "t", 1 }),
        OK(JSON, NONE, "{\"sensor\":\"s\",\"ts\":9007199254740991,\"t\":1}", "s", 9007199254740991, 0, { "t", 1 }),
        /* the earliest accepted: 2000-01-01T00:00:00Z */
        OK(JSON, NONE, "{\"sensor\":\"s\",\"ts\":946684800000,\"t\":1}", "s", 946684800000, 0, { "t", 1 }),
        OK(JSON, NONE, "{\"sensor\":\"g\\u0068\",\"t\":1}", "gh", 0, 0, { "t", 1 }),
        OK(JSON, NONE, "{\"sensor\":\"" S64 "\",\"" S64 "\":1}", S64, 0, 0, { S64, 1 }),
        OK(JSON, NONE, "{\"sensor\":\"~!{}\",\"a.b/c[0]\":2}", "~!{}", 0, 0, { "a.b/c[0]", 2 }),
        OK(JSON, NONE, "{\"sensor\":\"s\",\"note\":\"Gr\xc3\xbc\xc3\x9f" "e \\u00e9\",\"t\":1}", "s", 0, 1, { "t", 1 }),
        /* a "\\" escape followed by u0000 text is not a NUL escape */
        OK(JSON, NONE, "{\"sensor\":\"s\",\"note\":\"\\\\u0000\",\"t\":1}", "s", 0, 1, { "t", 1 }),
        /* UTF-8 boundaries that are valid: U+0080, U+07FF, U+0800, U+D7FF, U+E000, U+FFFF, U+10000, U+10FFFF */
        OK(JSON, NONE, "{\"sensor\":\"s\",\"n\":\"\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf"
                       "\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\",\"t\":1}", "s", 0, 1, { "t", 1 }),
        /* a UTF-8 byte order mark is valid UTF-8 and cJSON skips it */
        OK(JSON, NONE, "\xef\xbb\xbf{\"sensor\":\"s\",\"t\":1}", "s", 0, 0, { "t", 1 }),

        /* json: rejected */
        NO(JSON, NONE, "", BAD_JSON),
        NO(JSON, NONE, "\r", BAD_JSON),
        NO(JSON, NONE, "not json", BAD_JSON),
        NO(JSON, NONE, "[1,2]", BAD_JSON),
        NO(JSON, NONE, "\"sensor\"", BAD_JSON),
        NO(JSON, NONE, "42", BAD_JSON),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"t\":1} x", BAD_JSON),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"t\":1}{}", BAD_JSON),
        OK(JSON, NONE, "{\"sensor\":\"s\",\"t\":1}\r\r", "s", 0, 0, { "t", 1 }),   /* JSON whitespace */
        NO(JSON, NONE, "{\"sensor\":\"s\",\"t\":1", BAD_JSON),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"t\":0x10}", BAD_JSON),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"t\":NaN}", BAD_JSON),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"t\":Infinity}", BAD_JSON),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"t\":-inf}", BAD_JSON),
        NO(JSON, NONE, "{\"sensor\":\"s\",'t':1}", BAD_JSON),
        NO(JSON, NONE, "{\"sensor\":\"a\\u0000b\",\"t\":1}", BAD_JSON),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"t\\u0000x\":1}", BAD_JSON),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"t\":\"\\ud800\"}", BAD_JSON),
        NO(JSON, NONE, "{\"t\":1}", MISSING_SENSOR),
        NO(JSON, NONE, "{}", MISSING_SENSOR),
        NO(JSON, NONE, "{\"Sensor\":\"s\",\"t\":1}", MISSING_SENSOR),   /* names are case-sensitive */
        NO(JSON, NONE, "{\"sensor\":1,\"t\":1}", BAD_SENSOR),
        NO(JSON, NONE, "{\"sensor\":null,\"t\":1}", BAD_SENSOR),
        NO(JSON, NONE, "{\"sensor\":[\"s\"],\"t\":1}", BAD_SENSOR),
        NO(JSON, NONE, "{\"sensor\":\"\",\"t\":1}", BAD_SENSOR),
        NO(JSON, NONE, "{\"sensor\":\"a b\",\"t\":1}", BAD_SENSOR),
        NO(JSON, NONE, "{\"sensor\":\"a\\tb\",\"t\":1}", BAD_SENSOR),
        NO(JSON, NONE, "{\"sensor\":\"a\\u007fb\",\"t\":1}", BAD_SENSOR),
        NO(JSON, NONE, "{\"sensor\":\"gr\xc3\xbc\",\"t\":1}", BAD_SENSOR),
        NO(JSON, NONE, "{\"sensor\":\"" S65 "\",\"t\":1}", BAD_SENSOR),
        NO(JSON, NONE, "{\"sensor\":\"a\",\"sensor\":\"a\",\"t\":1}", BAD_SENSOR),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"ts\":1.5,\"t\":1}", BAD_TIMESTAMP),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"ts\":-1,\"t\":1}", BAD_TIMESTAMP),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"ts\":0,\"t\":1}", BAD_TIMESTAMP),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"ts\":1,\"t\":1}", BAD_TIMESTAMP),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"ts\":1.5e3,\"t\":1}", BAD_TIMESTAMP),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"ts\":946684799999,\"t\":1}", BAD_TIMESTAMP),
        /* seconds where milliseconds belong: 1970, not 2024 */
        NO(JSON, NONE, "{\"sensor\":\"s\",\"ts\":1732200000,\"t\":1}", BAD_TIMESTAMP),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"ts\":1732200000123.5,\"t\":1}", BAD_TIMESTAMP),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"ts\":9007199254740992,\"t\":1}", BAD_TIMESTAMP),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"ts\":1e999,\"t\":1}", BAD_TIMESTAMP),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"ts\":\"1732200000123\",\"t\":1}", BAD_TIMESTAMP),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"ts\":null,\"t\":1}", BAD_TIMESTAMP),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"ts\":true,\"t\":1}", BAD_TIMESTAMP),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"ts\":1732200000123,\"ts\":1732200000123,\"t\":1}", BAD_TIMESTAMP),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"\":1}", BAD_METRIC),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"a b\":1}", BAD_METRIC),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"t\\n\":1}", BAD_METRIC),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"t\xc3\xb6\":1}", BAD_METRIC),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"" S65 "\":1}", BAD_METRIC),
        /* duplicate metric names: rejected, neither wins */
        NO(JSON, NONE, "{\"sensor\":\"s\",\"t\":1,\"t\":2}", BAD_METRIC),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"t\":1,\"u\":true,\"t\":false}", BAD_METRIC),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"t\":1e999}", NOT_FINITE),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"t\":-1e400}", NOT_FINITE),
        NO(JSON, NONE, "{\"sensor\":\"s\"}", NO_METRIC),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"ts\":1732200000123}", NO_METRIC),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"fw\":\"1.2\",\"x\":null}", NO_METRIC),
        /* UTF-8 that is not: stray continuation, overlongs, surrogates, beyond U+10FFFF, truncated */
        NO(JSON, NONE, "{\"sensor\":\"s\",\"n\":\"\x80\",\"t\":1}", NOT_UTF8),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"n\":\"\xff\",\"t\":1}", NOT_UTF8),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"n\":\"\xc0\xaf\",\"t\":1}", NOT_UTF8),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"n\":\"\xc1\xbf\",\"t\":1}", NOT_UTF8),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"n\":\"\xe0\x9f\xbf\",\"t\":1}", NOT_UTF8),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"n\":\"\xf0\x8f\xbf\xbf\",\"t\":1}", NOT_UTF8),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"n\":\"\xed\xa0\x80\",\"t\":1}", NOT_UTF8),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"n\":\"\xed\xbf\xbf\",\"t\":1}", NOT_UTF8),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"n\":\"\xf4\x90\x80\x80\",\"t\":1}", NOT_UTF8),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"n\":\"\xf5\x80\x80\x80\",\"t\":1}", NOT_UTF8),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"n\":\"\xe2\x82\",\"t\":1}", NOT_UTF8),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"t\":1}\xe2\x82", NOT_UTF8),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"n\":\"\xc3\x28\",\"t\":1}", NOT_UTF8),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"n\":\"a\0b\",\"t\":1}", NOT_UTF8),
        NO(JSON, NONE, "{\"sensor\":\"s\",\"t\":1}\0", NOT_UTF8),

        /* kv: accepted */
        OK(KV, NONE, "sensor=gh1-t3 temperature=23.4 humidity=61.2 ts=1732200000123",
           "gh1-t3", 1732200000123, 0, { "temperature", 23.4 }, { "humidity", 61.2 }),
        OK(KV, NONE, "  t=1\t\tsensor=s  \t", "s", 0, 0, { "t", 1 }),
        OK(KV, NONE, "sensor=s t=2\r", "s", 0, 0, { "t", 2 }),
        OK(KV, NONE, "sensor=s a=+1 b=.5 c=5. d=-0", "s", 0, 0, { "a", 1 }, { "b", 0.5 }, { "c", 5 }, { "d", 0 }),
        OK(KV, NONE, "sensor=s a=007 b=1e3 c=-2.5E-2 d=1e-999", "s", 0, 0, { "a", 7 }, { "b", 1000 }, { "c", -0.025 }, { "d", 0 }),
        OK(KV, NONE, "sensor=a=b ts=0946684800000 t=1", "a=b", 946684800000, 0, { "t", 1 }),
        OK(KV, NONE, "sensor=" S64 " " S64 "=1", S64, 0, 0, { S64, 1 }),
        OK(KV, NONE, "sensor=s ts=9007199254740991 t=1", "s", 9007199254740991, 0, { "t", 1 }),

        /* kv: rejected */
        NO(KV, NONE, "", MISSING_SENSOR),
        NO(KV, NONE, " \t ", MISSING_SENSOR),
        NO(KV, NONE, "t=1", MISSING_SENSOR),
        NO(KV, NONE, "sensor=s t", BAD_KV),
        NO(KV, NONE, "sensor=s =1", BAD_KV),
        NO(KV, NONE, "sensor=s t=1 junk", BAD_KV),
        NO(KV, NONE, "sensor=s t=1\njunk=2", BAD_VALUE),       /* only spaces and tabs separate */
        NO(KV, NONE, "sensor= t=1", BAD_SENSOR),
        NO(KV, NONE, "sensor=s sensor=s t=1", BAD_SENSOR),
        NO(KV, NONE, "sensor=" S65 " t=1", BAD_SENSOR),
        NO(KV, NONE, "sensor=gr\xc3\xbc t=1", BAD_SENSOR),
        NO(KV, NONE, "sensor=s\x01 t=1", BAD_SENSOR),
        NO(KV, NONE, "sensor=s ts=1.5 t=1", BAD_TIMESTAMP),
        NO(KV, NONE, "sensor=s ts=-1 t=1", BAD_TIMESTAMP),
        NO(KV, NONE, "sensor=s ts=+1 t=1", BAD_TIMESTAMP),
        NO(KV, NONE, "sensor=s ts=0 t=1", BAD_TIMESTAMP),
        NO(KV, NONE, "sensor=s ts=1 t=1", BAD_TIMESTAMP),
        NO(KV, NONE, "sensor=s ts=946684799999 t=1", BAD_TIMESTAMP),
        NO(KV, NONE, "sensor=s ts=1732200000 t=1", BAD_TIMESTAMP),
        NO(KV, NONE, "sensor=s ts= t=1", BAD_TIMESTAMP),
        NO(KV, NONE, "sensor=s ts=abc t=1", BAD_TIMESTAMP),
        NO(KV, NONE, "sensor=s ts=1e3 t=1", BAD_TIMESTAMP),
        NO(KV, NONE, "sensor=s ts=9007199254740992 t=1", BAD_TIMESTAMP),
        NO(KV, NONE, "sensor=s ts=00001732200000123 t=1", BAD_TIMESTAMP),      /* 17 digits */
        NO(KV, NONE, "sensor=s ts=1732200000123 ts=1732200000123 t=1", BAD_TIMESTAMP),
        NO(KV, NONE, "sensor=s " S65 "=1", BAD_METRIC),
        NO(KV, NONE, "sensor=s t\x7f=1", BAD_METRIC),
        NO(KV, NONE, "sensor=s t=1 t=1", BAD_METRIC),
        NO(KV, NONE, "sensor=s t=", BAD_VALUE),
        NO(KV, NONE, "sensor=s t=abc", BAD_VALUE),
        NO(KV, NONE, "sensor=s t=0x10", BAD_VALUE),
        NO(KV, NONE, "sensor=s t=0x1p3", BAD_VALUE),
        NO(KV, NONE, "sensor=s t=1e", BAD_VALUE),
        NO(KV, NONE, "sensor=s t=1e+", BAD_VALUE),
        NO(KV, NONE, "sensor=s t=1.2.3", BAD_VALUE),
        NO(KV, NONE, "sensor=s t=--1", BAD_VALUE),
        NO(KV, NONE, "sensor=s t=1,5", BAD_VALUE),
        NO(KV, NONE, "sensor=s t=.", BAD_VALUE),
        NO(KV, NONE, "sensor=s t=-", BAD_VALUE),
        NO(KV, NONE, "sensor=s t=e5", BAD_VALUE),
        NO(KV, NONE, "sensor=s t=1e5x", BAD_VALUE),
        NO(KV, NONE, "sensor=s t=1=2", BAD_VALUE),
        NO(KV, NONE, "sensor=s t=nan(1)", BAD_VALUE),
        NO(KV, NONE, "sensor=s t=true", BAD_VALUE),
        NO(KV, NONE, "sensor=s t=nan", NOT_FINITE),
        NO(KV, NONE, "sensor=s t=NaN", NOT_FINITE),
        NO(KV, NONE, "sensor=s t=inf", NOT_FINITE),
        NO(KV, NONE, "sensor=s t=-Infinity", NOT_FINITE),
        NO(KV, NONE, "sensor=s t=1e999", NOT_FINITE),
        NO(KV, NONE, "sensor=s", NO_METRIC),
        NO(KV, NONE, "sensor=s ts=1732200000123", NO_METRIC),
        NO(KV, NONE, "sensor=s t=1 x=\xff", NOT_UTF8),
        NO(KV, NONE, "sensor=s t=1\0", NOT_UTF8),

        /* nmea checksum: XOR of the bytes between an optional '$' and '*', hex in either case */
        OK(JSON, NMEA, "${\"sensor\":\"gh1\",\"t\":1.5}*5C", "gh1", 0, 0, { "t", 1.5 }),
        OK(JSON, NMEA, "${\"sensor\":\"gh1\",\"t\":1.5}*5c", "gh1", 0, 0, { "t", 1.5 }),
        OK(JSON, NMEA, "{\"sensor\":\"gh1\",\"t\":1.5}*5C", "gh1", 0, 0, { "t", 1.5 }),
        OK(JSON, NMEA, "${\"sensor\":\"gh1\",\"t\":1.5}*5C\r", "gh1", 0, 0, { "t", 1.5 }),
        OK(JSON, NMEA, "${\"sensor\":\"a*b\",\"t\":2}*53", "a*b", 0, 0, { "t", 2 }),
        OK(KV, NMEA, "$sensor=gh1 t=1.5*56", "gh1", 0, 0, { "t", 1.5 }),
        OK(KV, NMEA, "sensor=gh1 t=1.5*56", "gh1", 0, 0, { "t", 1.5 }),
        NO(JSON, NMEA, "${\"sensor\":\"gh1\",\"t\":1.5}*5D", BAD_CHECKSUM),
        NO(JSON, NMEA, "${\"sensor\":\"gh1\",\"t\":1.6}*5C", BAD_CHECKSUM),
        NO(JSON, NMEA, "${\"sensor\":\"gh1\",\"t\":1.5}", BAD_CHECKSUM),
        NO(JSON, NMEA, "${\"sensor\":\"gh1\",\"t\":1.5}*5", BAD_CHECKSUM),
        NO(JSON, NMEA, "${\"sensor\":\"gh1\",\"t\":1.5}*5G", BAD_CHECKSUM),
        NO(JSON, NMEA, "${\"sensor\":\"gh1\",\"t\":1.5}*5C ", BAD_CHECKSUM),
        NO(JSON, NMEA, "${\"sensor\":\"gh1\",\"t\":1.5}* 5C", BAD_CHECKSUM),
        NO(JSON, NMEA, "", BAD_CHECKSUM),
        NO(JSON, NMEA, "*", BAD_CHECKSUM),
        NO(KV, NMEA, "$sensor=gh1 t=1.5", BAD_CHECKSUM),
        NO(KV, NMEA, "$sensor=gh1 t=1.5*57", BAD_CHECKSUM),
        /* the checksum is checked before anything else about the body */
        NO(KV, NMEA, "sensor=s t=1 x=\xff*00", BAD_CHECKSUM),
        NO(KV, NMEA, "sensor=s t=1 x=\xff*9A", NOT_UTF8),
        /* "*00" over an empty body is a valid checksum of nothing */
        NO(KV, NMEA, "$*00", MISSING_SENSOR),
        NO(JSON, NMEA, "*00", BAD_JSON),
};

/* On failure the parsers only write the sensor id: the rest stays as memset(0xaa) left it. */
static bool untouched_but_sensor(const Frame *f) {
        Frame ref;

        memset(&ref, 0xaa, sizeof(ref));
        return memcmp((const char *) f + offsetof(Frame, has_ts), (const char *) &ref + offsetof(Frame, has_ts),
                      sizeof(Frame) - offsetof(Frame, has_ts)) == 0;
}

static void check_frame(const Frame *f, const LineCase *c, const char *what) {
        size_t n = 0;

        ck_assert_msg(streq(f->sensor, c->sensor), "%s: sensor '%s' != '%s'", what, f->sensor, c->sensor);
        ck_assert_msg(f->has_ts == (c->ts != 0), "%s: has_ts", what);
        if (c->ts != 0)
                ck_assert_msg(f->ts_ms == c->ts, "%s: ts %" PRIi64 " != %" PRIi64, what, f->ts_ms, c->ts);
        ck_assert_msg(f->n_ignored == c->n_ignored, "%s: n_ignored %zu != %zu", what, f->n_ignored, c->n_ignored);
        while (n < ELEMENTSOF(c->m) && c->m[n].name)
                n++;
        ck_assert_msg(f->n_metrics == n, "%s: %zu metrics, expected %zu", what, f->n_metrics, n);
        for (size_t i = 0; i < n; i++) {
                ck_assert_msg(streq(f->metrics[i].name, c->m[i].name), "%s: metric %zu '%s' != '%s'", what, i,
                              f->metrics[i].name, c->m[i].name);
                ck_assert_msg(f->metrics[i].value == c->m[i].value, "%s: metric %s %.17g != %.17g", what,
                              c->m[i].name, f->metrics[i].value, c->m[i].value);
        }
}

/* Every line through frame_parse_line(), from an exactly sized heap copy so that ASan catches a
 * read past size. */
START_TEST(test_parse_line_table) {
        const LineCase *c = &line_cases[_i];
        char what[128];
        FrameReject reason = _FRAME_REJECT_INVALID;
        Frame f;
        char *copy = malloc(c->size ?: 1);
        int r;

        ck_assert_ptr_nonnull(copy);
        memcpy(copy, c->in, c->size);
        snprintf(what, sizeof(what), "case %d (%.60s)", _i, c->in);
        memset(&f, 0xaa, sizeof(f));

        r = frame_parse_line(c->format, c->checksum, copy, c->size, &f, &reason);
        if (c->reject == ACCEPT) {
                ck_assert_msg(r == 0, "%s: rejected as %s", what, strna(frame_reject_to_string(reason)));
                check_frame(&f, c, what);
        } else {
                ck_assert_msg(r == -EBADMSG, "%s: returned %d", what, r);
                ck_assert_msg((int) reason == c->reject, "%s: %s, expected %s", what,
                              strna(frame_reject_to_string(reason)), frame_reject_to_string(c->reject));
                /* only the sensor id is told on failure, and only one that is in the line */
                ck_assert_msg(untouched_but_sensor(&f), "%s: frame written on failure", what);
                ck_assert_msg(f.sensor[0] == 0 || (frame_id_valid(f.sensor, strlen(f.sensor)) &&
                                                   memmem(c->in, c->size, f.sensor, strlen(f.sensor))),
                              "%s: sensor '%s' on failure", what, f.sensor);
                if (c->reject == FRAME_REJECT_BAD_SENSOR || c->reject == FRAME_REJECT_BAD_CHECKSUM ||
                    c->reject == FRAME_REJECT_NOT_UTF8)
                        ck_assert_msg(f.sensor[0] == 0, "%s: sensor '%s' on failure", what, f.sensor);
        }
        free(copy);
}
END_TEST

/* The sensor id told with a reject, for the log's SENSOR_ID=. */
static const struct {
        FrameFormat format;
        const char *in;
        FrameReject reason;
        const char *sensor;
} reject_sensor_cases[] = {
        { JSON, "{\"sensor\":\"gh1\",\"t\":1e999}", FRAME_REJECT_NOT_FINITE, "gh1" },
        { JSON, "{\"t\":1e999,\"sensor\":\"gh1\"}", FRAME_REJECT_NOT_FINITE, "gh1" },
        { JSON, "{\"x\":\"\",\"ts\":-1,\"sensor\":\"gh1\"}", FRAME_REJECT_BAD_TIMESTAMP, "gh1" },
        { JSON, "{\"sensor\":\"gh1\"}", FRAME_REJECT_NO_METRIC, "gh1" },
        { JSON, "{\"t\":1,\"sensor\":\"gh1\",\"sensor\":\"gh2\"}", FRAME_REJECT_BAD_SENSOR, "" },
        { JSON, "{\"t\":1,\"t\":1,\"sensor\":\"gh1\",\"sensor\":\"gh1\"}", FRAME_REJECT_BAD_METRIC, "" },
        { JSON, "{\"t\":1,\"t\":1,\"sensor\":\"g h\"}", FRAME_REJECT_BAD_METRIC, "" },
        { JSON, "{\"sensor\":\"gh1\",\"t\":1", FRAME_REJECT_BAD_JSON, "" },
        { KV, "t=nan sensor=gh1", FRAME_REJECT_NOT_FINITE, "gh1" },
        { KV, "sensor=gh1 t=1 junk", FRAME_REJECT_BAD_KV, "gh1" },
        { KV, "sensor=gh1", FRAME_REJECT_NO_METRIC, "gh1" },
        { KV, "t=x sensor=gh1 sensor=gh1", FRAME_REJECT_BAD_VALUE, "" },
        { KV, "t=x sensor=", FRAME_REJECT_BAD_VALUE, "" },
        { KV, "sensor=gh1 sensor=gh2 t=1", FRAME_REJECT_BAD_SENSOR, "" },
};

START_TEST(test_reject_sensor) {
        FrameReject reason;
        Frame f;

        for (size_t i = 0; i < ELEMENTSOF(reject_sensor_cases); i++) {
                const char *in = reject_sensor_cases[i].in;

                strcpy(f.sensor, "before");
                ck_assert_int_eq(frame_parse_line(reject_sensor_cases[i].format, NONE, in, strlen(in), &f, &reason),
                                 -EBADMSG);
                ck_assert_msg(reason == reject_sensor_cases[i].reason, "%s: %s", in, frame_reject_to_string(reason));
                ck_assert_msg(streq(f.sensor, reject_sensor_cases[i].sensor), "%s: '%s'", in, f.sensor);
        }
}
END_TEST

/* Builds {"sensor":"s","m0":0,...} or the kv equivalent with n metrics. */
static char *many_metrics(FrameFormat format, size_t n) {
        size_t size = 64 + n * 16, len = 0;
        char *s = malloc(size);

        ck_assert_ptr_nonnull(s);
        len += snprintf(s + len, size - len, format == JSON ? "{\"sensor\":\"s\"" : "sensor=s");
        for (size_t i = 0; i < n; i++)
                len += snprintf(s + len, size - len, format == JSON ? ",\"m%zu\":%zu" : " m%zu=%zu", i, i);
        if (format == JSON)
                snprintf(s + len, size - len, "}");
        return s;
}

START_TEST(test_metric_limit) {
        static const FrameFormat formats[] = { JSON, KV };

        for (size_t k = 0; k < ELEMENTSOF(formats); k++) {
                _cleanup_free_ char *ok = many_metrics(formats[k], FRAME_METRICS_MAX);
                _cleanup_free_ char *over = many_metrics(formats[k], FRAME_METRICS_MAX + 1);
                FrameReject reason;
                Frame f;

                ck_assert_int_eq(frame_parse_line(formats[k], NONE, ok, strlen(ok), &f, &reason), 0);
                ck_assert_uint_eq(f.n_metrics, FRAME_METRICS_MAX);
                ck_assert_str_eq(f.metrics[FRAME_METRICS_MAX - 1].name, "m31");
                ck_assert(f.metrics[FRAME_METRICS_MAX - 1].value == 31);

                ck_assert_int_eq(frame_parse_line(formats[k], NONE, over, strlen(over), &f, &reason), -EBADMSG);
                ck_assert_int_eq(reason, FRAME_REJECT_TOO_MANY_METRICS);
        }
}
END_TEST

START_TEST(test_parse_line_invalid_args) {
        FrameReject reason;
        Frame f;

        ck_assert_int_eq(frame_parse_line(VALUE, NONE, "1", 1, &f, &reason), -EINVAL);
        ck_assert_int_eq(frame_parse_line(_FRAME_FORMAT_MAX, NONE, "1", 1, &f, &reason), -EINVAL);
        ck_assert_int_eq(frame_parse_line(JSON, _FRAME_CHECKSUM_MAX, "1", 1, &f, &reason), -EINVAL);
}
END_TEST

/* A long JSON line (past the stack copy) and a long number (past the stack number buffer). */
START_TEST(test_long_inputs) {
        size_t n = 20000, len = 0;
        _cleanup_free_ char *s = malloc(n + 64);
        char digits[400];
        FrameReject reason;
        Frame f;
        double v;

        ck_assert_ptr_nonnull(s);
        len += sprintf(s, "{\"sensor\":\"s\",\"pad\":\"");
        memset(s + len, 'x', n);
        len += n;
        len += sprintf(s + len, "\",\"t\":3}");
        ck_assert_int_eq(frame_parse_line(JSON, NONE, s, len, &f, &reason), 0);
        ck_assert_uint_eq(f.n_ignored, 1);
        ck_assert(f.metrics[0].value == 3);

        memset(digits, '9', sizeof(digits));
        ck_assert_int_eq(frame_parse_value(digits, 300, &v, &reason), 0);
        ck_assert(v > 9.9e299 && v < 1.1e300);
        ck_assert_int_eq(frame_parse_value(digits, 309, &v, &reason), -EBADMSG);
        ck_assert_int_eq(reason, FRAME_REJECT_NOT_FINITE);

        len = (size_t) sprintf(s, "sensor=s t=0.");
        memset(s + len, '0', 300);
        len += 300;
        s[len++] = '5';
        ck_assert_int_eq(frame_parse_line(KV, NONE, s, len, &f, &reason), 0);
        ck_assert(f.metrics[0].value == 5e-301);
}
END_TEST

typedef struct ValueCase {
        const char *in;
        size_t size;
        int reject;
        double value;
} ValueCase;

static const ValueCase value_cases[] = {
        { BYTES("23.4"), ACCEPT, 23.4 },
        { BYTES(" 23.4\n"), ACCEPT, 23.4 },
        { BYTES("\t7\r\n"), ACCEPT, 7 },
        { BYTES("0"), ACCEPT, 0 },
        { BYTES("-0"), ACCEPT, 0 },
        { BYTES("-0.5"), ACCEPT, -0.5 },
        { BYTES("1e3"), ACCEPT, 1000 },
        { BYTES("1E+3"), ACCEPT, 1000 },
        { BYTES("-1.5e-3"), ACCEPT, -1.5e-3 },
        { BYTES("10.25"), ACCEPT, 10.25 },
        { BYTES("1e-400"), ACCEPT, 0 },
        { BYTES("true"), ACCEPT, 1 },
        { BYTES(" false "), ACCEPT, 0 },
        { BYTES(""), FRAME_REJECT_BAD_VALUE, 0 },
        { BYTES("  "), FRAME_REJECT_BAD_VALUE, 0 },
        { BYTES("abc"), FRAME_REJECT_BAD_VALUE, 0 },
        { BYTES("01"), FRAME_REJECT_BAD_VALUE, 0 },
        { BYTES("1."), FRAME_REJECT_BAD_VALUE, 0 },
        { BYTES(".5"), FRAME_REJECT_BAD_VALUE, 0 },
        { BYTES("+1"), FRAME_REJECT_BAD_VALUE, 0 },
        { BYTES("-"), FRAME_REJECT_BAD_VALUE, 0 },
        { BYTES("- 1"), FRAME_REJECT_BAD_VALUE, 0 },
        { BYTES("0x10"), FRAME_REJECT_BAD_VALUE, 0 },
        { BYTES("1e"), FRAME_REJECT_BAD_VALUE, 0 },
        { BYTES("1e+"), FRAME_REJECT_BAD_VALUE, 0 },
        { BYTES("1 2"), FRAME_REJECT_BAD_VALUE, 0 },
        { BYTES("1,5"), FRAME_REJECT_BAD_VALUE, 0 },
        { BYTES("TRUE"), FRAME_REJECT_BAD_VALUE, 0 },
        { BYTES("True"), FRAME_REJECT_BAD_VALUE, 0 },
        { BYTES("truex"), FRAME_REJECT_BAD_VALUE, 0 },
        { BYTES("null"), FRAME_REJECT_BAD_VALUE, 0 },
        { BYTES("\"1\""), FRAME_REJECT_BAD_VALUE, 0 },
        { BYTES("[1]"), FRAME_REJECT_BAD_VALUE, 0 },
        { BYTES("{\"v\":1}"), FRAME_REJECT_BAD_VALUE, 0 },
        { BYTES("1\0"), FRAME_REJECT_BAD_VALUE, 0 },
        { BYTES("\xff"), FRAME_REJECT_BAD_VALUE, 0 },
        { BYTES("\v1"), FRAME_REJECT_BAD_VALUE, 0 },
        { BYTES("1e999"), FRAME_REJECT_NOT_FINITE, 0 },
        { BYTES("-1e999"), FRAME_REJECT_NOT_FINITE, 0 },
        { BYTES("NaN"), FRAME_REJECT_NOT_FINITE, 0 },
        { BYTES("nan"), FRAME_REJECT_NOT_FINITE, 0 },
        { BYTES("Infinity"), FRAME_REJECT_NOT_FINITE, 0 },
        { BYTES("-Infinity"), FRAME_REJECT_NOT_FINITE, 0 },
        { BYTES(" inf\n"), FRAME_REJECT_NOT_FINITE, 0 },
        { BYTES("-inf"), FRAME_REJECT_NOT_FINITE, 0 },
};

START_TEST(test_parse_value_table) {
        const ValueCase *c = &value_cases[_i];
        FrameReject reason = _FRAME_REJECT_INVALID;
        double v = 42.5;
        char *copy = malloc(c->size ?: 1);
        int r;

        ck_assert_ptr_nonnull(copy);
        memcpy(copy, c->in, c->size);
        r = frame_parse_value(copy, c->size, &v, &reason);
        if (c->reject == ACCEPT) {
                ck_assert_msg(r == 0, "case %d '%s': rejected as %s", _i, c->in, strna(frame_reject_to_string(reason)));
                ck_assert_msg(v == c->value, "case %d '%s': %.17g", _i, c->in, v);
        } else {
                ck_assert_msg(r == -EBADMSG, "case %d '%s': returned %d", _i, c->in, r);
                ck_assert_msg((int) reason == c->reject, "case %d '%s': %s", _i, c->in,
                              strna(frame_reject_to_string(reason)));
                ck_assert(v == 42.5);
        }
        free(copy);
}
END_TEST

typedef struct Utf8Case {
        const char *in;
        size_t size;
        bool valid;
} Utf8Case;

static const Utf8Case utf8_cases[] = {
        { BYTES(""), true },
        { BYTES("plain ascii, long enough for the eight-byte path"), true },
        { BYTES("\x7f"), true },
        { BYTES("\xc2\x80"), true },
        { BYTES("\xdf\xbf"), true },
        { BYTES("\xe0\xa0\x80"), true },
        { BYTES("\xed\x9f\xbf"), true },
        { BYTES("\xee\x80\x80"), true },
        { BYTES("\xef\xbf\xbf"), true },
        { BYTES("\xf0\x90\x80\x80"), true },
        { BYTES("\xf4\x8f\xbf\xbf"), true },
        { BYTES("abcdefg\xc3\xa9hijklmnop"), true },
        { BYTES("\0"), false },
        { BYTES("abcdefghijklmn\0p"), false },
        { BYTES("\x80"), false },
        { BYTES("\xbf"), false },
        { BYTES("\xc0\x80"), false },
        { BYTES("\xc1\xbf"), false },
        { BYTES("\xc2"), false },
        { BYTES("\xc2\x7f"), false },
        { BYTES("\xc2\xc0"), false },
        { BYTES("\xe0\x9f\xbf"), false },
        { BYTES("\xe0\xa0"), false },
        { BYTES("\xed\xa0\x80"), false },
        { BYTES("\xed\xbf\xbf"), false },
        { BYTES("\xef\xbf"), false },
        { BYTES("\xf0\x8f\xbf\xbf"), false },
        { BYTES("\xf4\x90\x80\x80"), false },
        { BYTES("\xf4\x8f\xbf"), false },
        { BYTES("\xf5\x80\x80\x80"), false },
        { BYTES("\xf8\x88\x80\x80\x80"), false },
        { BYTES("\xfe"), false },
        { BYTES("\xff"), false },
        { BYTES("abcdefgh\xe2\x82\xac\xe2\x82"), false },
};

START_TEST(test_utf8_table) {
        const Utf8Case *c = &utf8_cases[_i];
        char *copy = malloc(c->size ?: 1);

        ck_assert_ptr_nonnull(copy);
        memcpy(copy, c->in, c->size);
        ck_assert_msg(frame_utf8_valid(copy, c->size) == c->valid, "utf8 case %d", _i);
        free(copy);
}
END_TEST

START_TEST(test_id_valid) {
        ck_assert(frame_id_valid("a", 1));
        ck_assert(frame_id_valid("gh1-t3", 6));
        ck_assert(frame_id_valid("!~", 2));
        ck_assert(frame_id_valid(S64, 64));
        ck_assert(!frame_id_valid(S65, 65));
        ck_assert(!frame_id_valid("", 0));
        ck_assert(!frame_id_valid(NULL, 1));
        ck_assert(!frame_id_valid("a b", 3));
        ck_assert(!frame_id_valid("a\tb", 3));
        ck_assert(!frame_id_valid("a\x7f", 2));
        ck_assert(!frame_id_valid("\xc3\xa9", 2));
        ck_assert(!frame_id_valid("a\0b", 3));
        /* n bounds what is read: "ab" of "ab c" */
        ck_assert(frame_id_valid("ab c", 2));
}
END_TEST

START_TEST(test_string_tables) {
        for (int i = 0; i < _FRAME_FORMAT_MAX; i++)
                ck_assert_int_eq(frame_format_from_string(frame_format_to_string(i)), i);
        for (int i = 0; i < _FRAME_CHECKSUM_MAX; i++)
                ck_assert_int_eq(frame_checksum_from_string(frame_checksum_to_string(i)), i);
        for (int i = 0; i < _READING_SOURCE_MAX; i++)
                ck_assert_ptr_nonnull(reading_source_to_string(i));
        for (int i = 0; i < _FRAME_REJECT_MAX; i++) {
                const char *s = frame_reject_to_string(i);
                ck_assert_ptr_nonnull(s);
                for (const char *p = s; *p; p++)
                        ck_assert((*p >= 'a' && *p <= 'z') || *p == '_' || (*p >= '0' && *p <= '9'));
        }

        ck_assert_str_eq(frame_format_to_string(FRAME_FORMAT_JSON), "json");
        ck_assert_str_eq(frame_format_to_string(FRAME_FORMAT_KV), "kv");
        ck_assert_str_eq(frame_format_to_string(FRAME_FORMAT_VALUE), "value");
        ck_assert_str_eq(frame_checksum_to_string(FRAME_CHECKSUM_NONE), "none");
        ck_assert_str_eq(frame_checksum_to_string(FRAME_CHECKSUM_NMEA), "nmea");
        ck_assert_str_eq(reading_source_to_string(READING_SOURCE_SERIAL), "serial");
        ck_assert_str_eq(reading_source_to_string(READING_SOURCE_MQTT), "mqtt");
        /* the stored names: changing one breaks existing databases */
        ck_assert_str_eq(frame_reject_to_string(FRAME_REJECT_BAD_JSON), "bad_json");
        ck_assert_str_eq(frame_reject_to_string(FRAME_REJECT_BAD_KV), "bad_kv");
        ck_assert_str_eq(frame_reject_to_string(FRAME_REJECT_MISSING_SENSOR), "missing_sensor");
        ck_assert_str_eq(frame_reject_to_string(FRAME_REJECT_BAD_SENSOR), "bad_sensor");
        ck_assert_str_eq(frame_reject_to_string(FRAME_REJECT_BAD_TIMESTAMP), "bad_timestamp");
        ck_assert_str_eq(frame_reject_to_string(FRAME_REJECT_BAD_METRIC), "bad_metric");
        ck_assert_str_eq(frame_reject_to_string(FRAME_REJECT_NOT_FINITE), "not_finite");
        ck_assert_str_eq(frame_reject_to_string(FRAME_REJECT_BAD_VALUE), "bad_value");
        ck_assert_str_eq(frame_reject_to_string(FRAME_REJECT_NO_METRIC), "no_metric");
        ck_assert_str_eq(frame_reject_to_string(FRAME_REJECT_TOO_MANY_METRICS), "too_many_metrics");
        ck_assert_str_eq(frame_reject_to_string(FRAME_REJECT_TOO_LONG), "too_long");
        ck_assert_str_eq(frame_reject_to_string(FRAME_REJECT_BAD_CHECKSUM), "bad_checksum");
        ck_assert_str_eq(frame_reject_to_string(FRAME_REJECT_NOT_UTF8), "not_utf8");
        ck_assert_str_eq(frame_reject_to_string(FRAME_REJECT_TRUNCATED), "truncated");
        ck_assert_str_eq(frame_reject_to_string(FRAME_REJECT_TOPIC_MISMATCH), "topic_mismatch");
        ck_assert_str_eq(frame_reject_to_string(FRAME_REJECT_SENSOR_MISMATCH), "sensor_mismatch");
        ck_assert_str_eq(frame_reject_to_string(FRAME_REJECT_UNKNOWN_SENSOR), "unknown_sensor");
        ck_assert_str_eq(frame_reject_to_string(FRAME_REJECT_OUT_OF_RANGE), "out_of_range");

        ck_assert_ptr_null(frame_format_to_string(_FRAME_FORMAT_MAX));
        ck_assert_ptr_null(frame_format_to_string(_FRAME_FORMAT_INVALID));
        ck_assert_ptr_null(frame_reject_to_string(_FRAME_REJECT_MAX));
        ck_assert_int_eq(frame_format_from_string("JSON"), -EINVAL);
        ck_assert_int_eq(frame_format_from_string(""), -EINVAL);
        ck_assert_int_eq(frame_format_from_string(NULL), -EINVAL);
        ck_assert_int_eq(frame_checksum_from_string("xor"), -EINVAL);
}
END_TEST

/* ---- LineBuffer ---- */

typedef struct Lines {
        char text[8192];              /* "<line>|" or "<line>!|" (overlong) per line */
        size_t len;
        unsigned calls;
        unsigned fail_at;             /* return -EIO on this call (1-based), 0: never */
} Lines;

static int collect(const char *line, size_t size, bool overlong, void *userdata) {
        Lines *l = userdata;

        l->calls++;
        ck_assert_uint_le(l->len + size + 2, sizeof(l->text));
        memcpy(l->text + l->len, line, size);
        l->len += size;
        if (overlong)
                l->text[l->len++] = '!';
        l->text[l->len++] = '|';
        l->text[l->len] = 0;
        if (l->calls == l->fail_at)
                return -EIO;
        return 0;
}

/* How a test hands bytes to the splitter: the pull form (put, then next until 0) or the push
 * form kept for callers not yet moved. Every LineBuffer case runs through both. Returns 0, or
 * -EIO when collect() fails, after which the pull form resets as its readers do. */
typedef int (*feed_t)(LineBuffer *lb, const void *data, size_t size, Lines *l);

static int feed_pull(LineBuffer *lb, const void *data, size_t size, Lines *l) {
        const char *line;
        size_t n;
        bool overlong;
        int r;

        line_buffer_put(lb, data, size);
        while ((r = line_buffer_next(lb, &line, &n, &overlong)) > 0) {
                /* borrowed from the chunk or from lb, nowhere else */
                ck_assert((line >= (const char *) data && line + n <= (const char *) data + size) ||
                          (line >= lb->buf && line + n <= lb->buf + lb->max + 1));
                if (collect(line, n, overlong, l) < 0) {
                        line_buffer_reset(lb);
                        return -EIO;
                }
        }
        ck_assert_int_eq(r, 0);
        /* used up: 0 again, the out parameters untouched */
        line = NULL;
        ck_assert_int_eq(line_buffer_next(lb, &line, &n, &overlong), 0);
        ck_assert_ptr_null(line);
        return 0;
}

static const feed_t feeds[] = { feed_pull };

static const char stream[] =
        "abc\n"
        "12345678\n"                  /* exactly max */
        "12345678\r\n"                /* max, the '\r' does not count */
        "123456789\n"                 /* one over */
        "12345678\r\r\n"              /* the first '\r' is content: over */
        "\r\n"
        "\n"
        "x\ry\n"                      /* a '\r' inside stays */
        "0123456789012345678901234567890123456789\n"
        "last\r\n"
        "tail";
static const char stream_lines[] =
        "abc|12345678|12345678|12345678!|12345678!|||x\ry|01234567!|last|";

static void feed_in_chunks(feed_t feed, LineBuffer *lb, Lines *l, const char *data, size_t size, unsigned seed) {
        size_t i = 0;

        while (i < size) {
                size_t n = seed == 0 ? 1 : 1 + (size_t) rand_r(&seed) % 13;
                n = MIN(n, size - i);
                ck_assert_int_eq(feed(lb, data + i, n, l), 0);
                i += n;
        }
}

START_TEST(test_line_buffer_split) {
        LineBuffer lb;
        Lines one = {}, bytes = {}, chunks = {};
        const char *pending;
        size_t size;

        ck_assert_int_eq(line_buffer_init(&lb, 8, LINE_END_LF), 0);
        ck_assert(!line_buffer_pending(&lb, &pending, &size));
        ck_assert_int_eq(feeds[_i](&lb, stream, sizeof(stream) - 1, &one), 0);
        ck_assert_str_eq(one.text, stream_lines);
        ck_assert(line_buffer_pending(&lb, &pending, &size));
        ck_assert_uint_eq(size, 4);
        ck_assert(memcmp(pending, "tail", 4) == 0);
        line_buffer_reset(&lb);
        ck_assert(!line_buffer_pending(&lb, NULL, NULL));

        feed_in_chunks(feeds[_i], &lb, &bytes, stream, sizeof(stream) - 1, 0);
        ck_assert_str_eq(bytes.text, stream_lines);
        ck_assert(line_buffer_pending(&lb, &pending, &size) && size == 4 && memcmp(pending, "tail", 4) == 0);
        line_buffer_reset(&lb);

        for (unsigned seed = 1; seed <= 50; seed++) {
                chunks = (Lines) {};
                feed_in_chunks(feeds[_i], &lb, &chunks, stream, sizeof(stream) - 1, seed);
                ck_assert_msg(streq(chunks.text, stream_lines), "seed %u: %s", seed, chunks.text);
                ck_assert(line_buffer_pending(&lb, &pending, &size) && size == 4);
                line_buffer_reset(&lb);
        }
        line_buffer_done(&lb);
        ck_assert_ptr_null(lb.buf);
        line_buffer_done(&lb);
}
END_TEST

/* An overlong line spread over many feeds: one call, as soon as it passes max (not at its
 * newline, which may never come), with the first max bytes; the rest is dropped and counted. */
START_TEST(test_line_buffer_overlong) {
        LineBuffer lb;
        Lines l = {};
        char block[1000];

        ck_assert_int_eq(line_buffer_init(&lb, 16, LINE_END_LF), 0);
        for (size_t i = 0; i < sizeof(block); i++)
                block[i] = (char) ('a' + i % 26);
        for (int i = 0; i < 100; i++) {
                ck_assert_int_eq(feeds[_i](&lb, block, sizeof(block), &l), 0);
                ck_assert_uint_eq(l.calls, 1);
                ck_assert_str_eq(l.text, "abcdefghijklmnop!|");
                /* handed out already: nothing pending for a truncated reject */
                ck_assert(!line_buffer_pending(&lb, NULL, NULL));
        }
        ck_assert_uint_eq(lb.discarded, 100 * sizeof(block) - 16);

        ck_assert_int_eq(feeds[_i](&lb, "xyz\nok\n", 7, &l), 0);
        ck_assert_uint_eq(l.calls, 2);
        ck_assert_str_eq(l.text, "abcdefghijklmnop!|ok|");
        ck_assert(!line_buffer_pending(&lb, NULL, NULL));
        ck_assert_uint_eq(lb.discarded, 100 * sizeof(block) - 16 + 3);

        /* overlong inside one chunk, no copy path */
        l = (Lines) {};
        ck_assert_int_eq(feeds[_i](&lb, "0123456789abcdefg\n0123456789abcdef\r\n", 36, &l), 0);
        ck_assert_str_eq(l.text, "0123456789abcdef!|0123456789abcdef|");
        line_buffer_done(&lb);
}
END_TEST

START_TEST(test_line_buffer_handler_error) {
        LineBuffer lb;
        Lines l = { .fail_at = 2 };

        ck_assert_int_eq(line_buffer_init(&lb, 8, LINE_END_LF), 0);
        ck_assert_int_eq(feeds[_i](&lb, "a\nb\nc\nd", 7, &l), -EIO);
        ck_assert_str_eq(l.text, "a|b|");
        /* a buffered line that fails is consumed as well */
        l = (Lines) { .fail_at = 1 };
        line_buffer_reset(&lb);
        ck_assert_int_eq(feeds[_i](&lb, "xy", 2, &l), 0);
        ck_assert_int_eq(feeds[_i](&lb, "z\nw", 3, &l), -EIO);
        ck_assert_str_eq(l.text, "xyz|");
        ck_assert(!line_buffer_pending(&lb, NULL, NULL));
        line_buffer_done(&lb);

        ck_assert_int_eq(line_buffer_init(&lb, 0, LINE_END_LF), -EINVAL);
}
END_TEST

/* The next line must be want (overlong or not); want NULL: the chunk must be used up. */
static void expect_next(LineBuffer *lb, const char *want, bool want_overlong) {
        const char *line = NULL;
        size_t n = SIZE_MAX;
        bool overlong = !want_overlong;

        if (!want) {
                ck_assert_int_eq(line_buffer_next(lb, &line, &n, &overlong), 0);
                ck_assert_ptr_null(line);
                ck_assert_uint_eq(n, SIZE_MAX);
                return;
        }
        ck_assert_int_eq(line_buffer_next(lb, &line, &n, &overlong), 1);
        ck_assert_msg(n == strlen(want) && memcmp(line, want, n) == 0, "got '%.*s', want '%s'", (int) n, line, want);
        ck_assert(overlong == want_overlong);
}

static void expect_pending(const LineBuffer *lb, const char *want) {
        const char *line;
        size_t n;

        if (!want) {
                ck_assert(!line_buffer_pending(lb, &line, &n));
                return;
        }
        ck_assert(line_buffer_pending(lb, &line, &n));
        ck_assert_msg(n == strlen(want) && memcmp(line, want, n) == 0, "pending '%.*s', want '%s'", (int) n, line, want);
}

/* Lines whole within the chunk point into it; a line completed from the buffer points into lb. */
START_TEST(test_line_buffer_pull_no_copy) {
        static const char chunk[] = "abc\r\ndef\ngh";
        LineBuffer lb;
        const char *line;
        size_t n;
        bool overlong;

        ck_assert_int_eq(line_buffer_init(&lb, 8, LINE_END_LF), 0);
        line_buffer_put(&lb, chunk, sizeof(chunk) - 1);
        ck_assert_int_eq(line_buffer_next(&lb, &line, &n, &overlong), 1);
        ck_assert_ptr_eq(line, chunk);
        ck_assert_uint_eq(n, 3);
        ck_assert(!overlong);
        ck_assert_int_eq(line_buffer_next(&lb, &line, &n, &overlong), 1);
        ck_assert_ptr_eq(line, chunk + 5);
        ck_assert_uint_eq(n, 3);
        expect_next(&lb, NULL, false);
        expect_pending(&lb, "gh");

        line_buffer_put(&lb, "i\n", 2);
        ck_assert_int_eq(line_buffer_next(&lb, &line, &n, &overlong), 1);
        ck_assert_ptr_eq(line, lb.buf);
        ck_assert(n == 3 && memcmp(line, "ghi", 3) == 0);
        expect_next(&lb, NULL, false);
        expect_pending(&lb, NULL);
        line_buffer_done(&lb);
}
END_TEST

/* A '\r' at the end of a chunk waits in the buffer: it is stripped only if "\n" follows. */
START_TEST(test_line_buffer_pull_cr_at_chunk_end) {
        LineBuffer lb;

        ck_assert_int_eq(line_buffer_init(&lb, 8, LINE_END_LF), 0);
        line_buffer_put(&lb, "abc\r", 4);
        expect_next(&lb, NULL, false);
        expect_pending(&lb, "abc\r");
        line_buffer_put(&lb, "\n", 1);
        expect_next(&lb, "abc", false);
        expect_next(&lb, NULL, false);
        expect_pending(&lb, NULL);

        /* max bytes and the '\r' in the extra byte: not overlong */
        line_buffer_put(&lb, "x\nabcdefgh\r", 11);
        expect_next(&lb, "x", false);
        expect_next(&lb, NULL, false);
        expect_pending(&lb, "abcdefgh");
        line_buffer_put(&lb, "\n", 1);
        expect_next(&lb, "abcdefgh", false);
        expect_next(&lb, NULL, false);

        /* no "\n" after it: the '\r' is content */
        line_buffer_put(&lb, "ab\r", 3);
        expect_next(&lb, NULL, false);
        line_buffer_put(&lb, "c\n", 2);
        expect_next(&lb, "ab\rc", false);
        expect_next(&lb, NULL, false);

        /* max bytes, '\r', then more: over */
        line_buffer_put(&lb, "abcdefgh\r", 9);
        expect_next(&lb, NULL, false);
        line_buffer_put(&lb, "x\n", 2);
        expect_next(&lb, "abcdefgh", true);
        expect_next(&lb, NULL, false);
        expect_pending(&lb, NULL);
        line_buffer_done(&lb);
}
END_TEST

START_TEST(test_line_buffer_pull_three_chunks) {
        LineBuffer lb;

        ck_assert_int_eq(line_buffer_init(&lb, 8, LINE_END_LF), 0);
        line_buffer_put(&lb, "ab", 2);
        expect_next(&lb, NULL, false);
        expect_pending(&lb, "ab");
        line_buffer_put(&lb, "cd", 2);
        expect_next(&lb, NULL, false);
        expect_pending(&lb, "abcd");
        line_buffer_put(&lb, "ef\r\ngh\n", 7);
        expect_next(&lb, "abcdef", false);
        expect_next(&lb, "gh", false);
        expect_next(&lb, NULL, false);
        expect_pending(&lb, NULL);
        line_buffer_done(&lb);
}
END_TEST

/* Overlong across chunks: one line, as soon as it passes max, with the first max bytes. */
START_TEST(test_line_buffer_pull_overlong_chunks) {
        LineBuffer lb;

        ck_assert_int_eq(line_buffer_init(&lb, 8, LINE_END_LF), 0);
        line_buffer_put(&lb, "12345", 5);
        expect_next(&lb, NULL, false);
        line_buffer_put(&lb, "6789ab", 6);
        expect_next(&lb, "12345678", true);
        expect_next(&lb, NULL, false);
        expect_pending(&lb, NULL);
        ck_assert(lb.discarding);
        line_buffer_put(&lb, "cdef", 4);
        expect_next(&lb, NULL, false);
        expect_pending(&lb, NULL);
        line_buffer_put(&lb, "g\r\nok\n", 6);
        expect_next(&lb, "ok", false);
        expect_next(&lb, NULL, false);
        expect_pending(&lb, NULL);
        ck_assert(!lb.discarding);
        ck_assert_uint_eq(lb.discarded, 3 + 4 + 2);

        /* exactly max+1 bytes across two chunks: over at the ninth byte, not at the newline */
        line_buffer_put(&lb, "1234", 4);
        expect_next(&lb, NULL, false);
        line_buffer_put(&lb, "56789", 5);
        expect_next(&lb, "12345678", true);
        expect_next(&lb, NULL, false);
        line_buffer_put(&lb, "\n", 1);
        expect_next(&lb, NULL, false);
        line_buffer_put(&lb, "x\n", 2);
        expect_next(&lb, "x", false);
        expect_next(&lb, NULL, false);
        line_buffer_done(&lb);
}
END_TEST

/* A reader that stops early resets: the rest of the chunk is dropped, nothing else. */
START_TEST(test_line_buffer_pull_reset) {
        LineBuffer lb;

        ck_assert_int_eq(line_buffer_init(&lb, 8, LINE_END_LF), 0);
        line_buffer_put(&lb, "a\nb\nc\nd", 7);
        expect_next(&lb, "a", false);
        line_buffer_reset(&lb);
        expect_next(&lb, NULL, false);
        expect_pending(&lb, NULL);
        line_buffer_put(&lb, "e\n", 2);
        expect_next(&lb, "e", false);
        expect_next(&lb, NULL, false);

        /* after a line completed from the buffer */
        line_buffer_put(&lb, "xy", 2);
        expect_next(&lb, NULL, false);
        line_buffer_put(&lb, "z\nw\nv", 5);
        expect_next(&lb, "xyz", false);
        line_buffer_reset(&lb);
        expect_next(&lb, NULL, false);
        expect_pending(&lb, NULL);

        /* right after put, with a partial line pending: both go */
        line_buffer_put(&lb, "pq", 2);
        expect_next(&lb, NULL, false);
        line_buffer_put(&lb, "r\ns\n", 4);
        line_buffer_reset(&lb);
        expect_next(&lb, NULL, false);
        expect_pending(&lb, NULL);
        line_buffer_put(&lb, "t\n", 2);
        expect_next(&lb, "t", false);
        expect_next(&lb, NULL, false);
        line_buffer_done(&lb);
}
END_TEST

START_TEST(test_line_buffer_pull_empty_chunk) {
        LineBuffer lb;

        ck_assert_int_eq(line_buffer_init(&lb, 8, LINE_END_LF), 0);
        line_buffer_put(&lb, NULL, 0);
        expect_next(&lb, NULL, false);
        expect_pending(&lb, NULL);

        line_buffer_put(&lb, "ab", 2);
        expect_next(&lb, NULL, false);
        line_buffer_put(&lb, NULL, 0);
        expect_next(&lb, NULL, false);
        line_buffer_put(&lb, "xyz", 0);
        expect_next(&lb, NULL, false);
        expect_pending(&lb, "ab");
        line_buffer_put(&lb, "c\n", 2);
        expect_next(&lb, "abc", false);
        expect_next(&lb, NULL, false);

        /* an empty line is a line, an empty chunk none */
        line_buffer_put(&lb, "\n", 1);
        expect_next(&lb, "", false);
        expect_next(&lb, NULL, false);
        line_buffer_done(&lb);
}
END_TEST

/* One stream under each line_end, whole, byte by byte (so every '\r' and '\n' meets a chunk
 * boundary) and in random chunks: the same lines each time. */
static const char modes_stream[] =
        "abc\r"
        "def\r\n"
        "\r"
        "\r\n"
        "g\nh\r"
        "12345678\r"
        "123456789\r"
        "tail";

static const struct {
        LineEnd mode;
        const char *lines;            /* "<line>|", "<line>!|" (overlong) */
        const char *pending;          /* NULL: none */
} mode_cases[] = {
        /* lf: a lone '\r' is content, so this stream has only two line ends; the rest is over
         * max_frame_bytes by its ninth byte and handed out then, without a newline */
        { LINE_END_LF, "abc\rdef|\r|g|h\r123456!|", NULL },
        /* cr: "\r\n" is one line end, a lone '\n' is content */
        { LINE_END_CR, "abc|def|||g\nh|12345678|12345678!|", "tail" },
        { LINE_END_ANY, "abc|def|||g|h|12345678|12345678!|", "tail" },
};

START_TEST(test_line_buffer_modes) {
        LineBuffer lb;
        Lines one = {}, bytes = {}, chunks;
        const char *pending;
        size_t size;

        ck_assert_int_eq(line_buffer_init(&lb, 8, mode_cases[_i].mode), 0);
        ck_assert_int_eq(feed_pull(&lb, modes_stream, sizeof(modes_stream) - 1, &one), 0);
        ck_assert_msg(streq(one.text, mode_cases[_i].lines), "%s: %s", line_end_to_string(mode_cases[_i].mode),
                      one.text);
        if (mode_cases[_i].pending) {
                ck_assert(line_buffer_pending(&lb, &pending, &size));
                ck_assert(size == strlen(mode_cases[_i].pending) && memcmp(pending, mode_cases[_i].pending, size) == 0);
        } else
                ck_assert(!line_buffer_pending(&lb, NULL, NULL));
        line_buffer_reset(&lb);

        feed_in_chunks(feed_pull, &lb, &bytes, modes_stream, sizeof(modes_stream) - 1, 0);
        ck_assert_str_eq(bytes.text, mode_cases[_i].lines);
        ck_assert(line_buffer_pending(&lb, NULL, NULL) == !!mode_cases[_i].pending);
        line_buffer_reset(&lb);

        for (unsigned seed = 1; seed <= 50; seed++) {
                chunks = (Lines) {};
                feed_in_chunks(feed_pull, &lb, &chunks, modes_stream, sizeof(modes_stream) - 1, seed);
                ck_assert_msg(streq(chunks.text, mode_cases[_i].lines), "seed %u: %s", seed, chunks.text);
                ck_assert(line_buffer_pending(&lb, NULL, NULL) == !!mode_cases[_i].pending);
                line_buffer_reset(&lb);
        }
        line_buffer_done(&lb);
}
END_TEST

/* cr and any: a line ends at its '\r' at once (no waiting for a '\n' that may not come), and a
 * '\n' that starts the next chunk is the rest of that line end, not an empty line or content. */
START_TEST(test_line_buffer_cr_then_lf_in_next_chunk) {
        static const LineEnd modes[] = { LINE_END_CR, LINE_END_ANY };
        LineBuffer lb;

        for (size_t m = 0; m < ELEMENTSOF(modes); m++) {
                ck_assert_int_eq(line_buffer_init(&lb, 8, modes[m]), 0);
                line_buffer_put(&lb, "abc\r", 4);
                expect_next(&lb, "abc", false);
                expect_next(&lb, NULL, false);
                expect_pending(&lb, NULL);
                line_buffer_put(&lb, "\n", 1);
                expect_next(&lb, NULL, false);
                expect_pending(&lb, NULL);
                /* only one '\n' belongs to the '\r': with cr the next one is content */
                line_buffer_put(&lb, "de\r", 3);
                expect_next(&lb, "de", false);
                expect_next(&lb, NULL, false);
                line_buffer_put(&lb, "\nf\r", 3);
                expect_next(&lb, "f", false);
                expect_next(&lb, NULL, false);
                line_buffer_put(&lb, "\n\n", 2);
                if (modes[m] == LINE_END_ANY)
                        expect_next(&lb, "", false);
                expect_next(&lb, NULL, false);
                expect_pending(&lb, modes[m] == LINE_END_CR ? "\n" : NULL);
                line_buffer_reset(&lb);

                /* a buffered line completed by a '\r' at the chunk's end, its '\n' next */
                line_buffer_put(&lb, "gh", 2);
                expect_next(&lb, NULL, false);
                line_buffer_put(&lb, "i\r", 2);
                expect_next(&lb, "ghi", false);
                expect_next(&lb, NULL, false);
                line_buffer_put(&lb, "\nj\r\n", 4);
                expect_next(&lb, "j", false);
                expect_next(&lb, NULL, false);

                /* reset forgets the pending '\n' skip: a new stream starts clean */
                line_buffer_put(&lb, "k\r", 2);
                expect_next(&lb, "k", false);
                line_buffer_reset(&lb);
                line_buffer_put(&lb, "\nl\r", 3);
                if (modes[m] == LINE_END_ANY)
                        expect_next(&lb, "", false);
                expect_next(&lb, modes[m] == LINE_END_CR ? "\nl" : "l", false);
                expect_next(&lb, NULL, false);

                /* max bytes then '\r': not overlong, no waiting (unlike lf) */
                line_buffer_put(&lb, "12345678\r", 9);
                expect_next(&lb, "12345678", false);
                expect_next(&lb, NULL, false);
                line_buffer_done(&lb);
        }
}
END_TEST

/* A device that ends lines with '\r' read with the default lf: the first "line" is handed out
 * as overlong as soon as max is passed, then one per max and more bytes, however long no "\n"
 * comes; and with cr the same bytes are lines. */
START_TEST(test_line_buffer_early_overlong) {
        static const char cr_frames[] = "a=1 b=2\ra=3 b=4\ra=5 b=6\ra=7 b=8\r";
        LineBuffer lb;
        Lines l = {};

        ck_assert_int_eq(line_buffer_init(&lb, 10, LINE_END_LF), 0);
        feed_in_chunks(feed_pull, &lb, &l, cr_frames, sizeof(cr_frames) - 1, 0);
        ck_assert_str_eq(l.text, "a=1 b=2\ra=!|");
        ck_assert(!line_buffer_pending(&lb, NULL, NULL));
        ck_assert_uint_eq(lb.discarded, sizeof(cr_frames) - 1 - 10);
        /* the first "\n" ends the dropped line; the next line is a line again */
        l = (Lines) {};
        ck_assert_int_eq(feed_pull(&lb, "x\ny\n", 4, &l), 0);
        ck_assert_str_eq(l.text, "y|");
        line_buffer_done(&lb);

        l = (Lines) {};
        ck_assert_int_eq(line_buffer_init(&lb, 10, LINE_END_CR), 0);
        feed_in_chunks(feed_pull, &lb, &l, cr_frames, sizeof(cr_frames) - 1, 0);
        ck_assert_str_eq(l.text, "a=1 b=2|a=3 b=4|a=5 b=6|a=7 b=8|");
        ck_assert_uint_eq(lb.discarded, 0);
        line_buffer_done(&lb);

        /* a line over max in cr mode, its '\r' in a later chunk: out at max+1, the rest dropped */
        l = (Lines) {};
        ck_assert_int_eq(line_buffer_init(&lb, 4, LINE_END_CR), 0);
        ck_assert_int_eq(feed_pull(&lb, "abcde", 5, &l), 0);
        ck_assert_str_eq(l.text, "abcd!|");
        ck_assert_int_eq(feed_pull(&lb, "fg\r", 3, &l), 0);
        ck_assert_int_eq(feed_pull(&lb, "\nok\r", 4, &l), 0);
        ck_assert_str_eq(l.text, "abcd!|ok|");
        ck_assert_uint_eq(lb.discarded, 3);
        line_buffer_done(&lb);

        ck_assert_int_eq(line_buffer_init(&lb, 8, _LINE_END_MAX), -EINVAL);
        ck_assert_int_eq(line_buffer_init(&lb, 8, _LINE_END_INVALID), -EINVAL);
        ck_assert_str_eq(line_end_to_string(LINE_END_LF), "lf");
        ck_assert_str_eq(line_end_to_string(LINE_END_CR), "cr");
        ck_assert_str_eq(line_end_to_string(LINE_END_ANY), "any");
        ck_assert_int_eq(line_end_from_string("cr"), LINE_END_CR);
        ck_assert_int_eq(line_end_from_string("CR"), -EINVAL);
}
END_TEST

/* ---- topic patterns ---- */

typedef struct PatternCase {
        const char *filter;
        const char *subscription;     /* NULL: invalid */
        bool sensor, metric;
} PatternCase;

static const PatternCase pattern_cases[] = {
        { "greenhouse/+sensor/+metric", "greenhouse/+/+", true, true },
        { "greenhouse/+sensor/state", "greenhouse/+/state", true, false },
        { "+metric/x/+sensor", "+/x/+", true, true },
        { "a/+/b/+metric/#", "a/+/b/+/#", false, true },
        { "#", "#", false, false },
        { "+", "+", false, false },
        { "+/#", "+/#", false, false },
        { "/", "/", false, false },
        { "a//b", "a//b", false, false },
        { "$SYS/#", "$SYS/#", false, false },
        { "gr\xc3\xbcn/+sensor", "gr\xc3\xbcn/+", true, false },
        { "", NULL, false, false },
        { "a/#/b", NULL, false, false },
        { "#/a", NULL, false, false },
        { "a/b#", NULL, false, false },
        { "a/#b", NULL, false, false },
        { "a+/b", NULL, false, false },
        { "a/b+", NULL, false, false },
        { "+x+/b", NULL, false, false },
        { "a/+Sensor", NULL, false, false },
        { "a/+sensor1", NULL, false, false },
        { "a/+sen-sor", NULL, false, false },
        { "a/+foo", NULL, false, false },
        { "a/+sensor/+sensor", NULL, false, false },
        { "+metric/x/+metric", NULL, false, false },
        { "a/\xff", NULL, false, false },
};

START_TEST(test_pattern_table) {
        const PatternCase *c = &pattern_cases[_i];
        _cleanup_(topic_pattern_freep) TopicPattern *p = NULL;
        const char *error = NULL;
        int r;

        r = topic_pattern_new(c->filter, &p, &error);
        if (!c->subscription) {
                ck_assert_msg(r == -EINVAL, "'%s' accepted", c->filter);
                ck_assert_ptr_null(p);
                ck_assert_ptr_nonnull(error);
                ck_assert(strlen(error) > 10);
                return;
        }
        ck_assert_msg(r == 0, "'%s': %s", c->filter, strna(error));
        ck_assert_str_eq(topic_pattern_subscription(p), c->subscription);
        ck_assert(topic_pattern_has_sensor(p) == c->sensor);
        ck_assert(topic_pattern_has_metric(p) == c->metric);
}
END_TEST

START_TEST(test_pattern_errors) {
        static const struct {
                const char *filter, *needle;
        } cases[] = {
                { "a/+foo", "only '+sensor' and '+metric'" },
                { "a/+sensor/+sensor", "'+sensor' is used twice" },
                { "a/#/b", "last topic level" },
                { "a/#b", "stand alone" },
                { "a/+Sensor", "lowercase" },
                /* what brokers refuse (libmosquitto before sending, mosquitto on SUBSCRIBE) */
                { "a/\x01b", "control character" },
                { "a/b\x1f", "control character" },
                { "a/\x7f", "control character" },
                { "a/\xc2\x80", "control character" },
                { "\xc2\x9f/a", "control character" },
                { "a/\xff", "not valid UTF-8" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                TopicPattern *p = NULL;
                const char *error = NULL;

                ck_assert_int_eq(topic_pattern_new(cases[i].filter, &p, &error), -EINVAL);
                ck_assert_msg(error && strstr(error, cases[i].needle), "%s: %s", cases[i].filter, strna(error));
        }
        ck_assert_int_eq(topic_pattern_new(NULL, &(TopicPattern *) { NULL }, NULL), -EINVAL);
        ck_assert_ptr_null(topic_pattern_free(NULL));

        /* The limits at their edges: U+00A0 (the first after the C1 controls) and 201 levels
         * pass; 202 levels and 65536 bytes do not. */
        {
                static char big[65537 + 1];
                TopicPattern *p = NULL;
                const char *error = NULL;

                ck_assert_int_eq(topic_pattern_new("a/\xc2\xa0/\x7e", &p, NULL), 0);
                p = topic_pattern_free(p);
                memset(big, 'a', 65535);
                big[65535] = 0;
                ck_assert_int_eq(topic_pattern_new(big, &p, NULL), 0);
                p = topic_pattern_free(p);
                big[65535] = 'a';
                ck_assert_int_eq(topic_pattern_new(big, &p, &error), -EINVAL);
                ck_assert_msg(strstr(error, "longer than 65535 bytes"), "%s", error);
                for (size_t i = 1; i < 401; i += 2)
                        big[i] = '/';
                big[401] = 0; /* 200 '/' */
                ck_assert_int_eq(topic_pattern_new(big, &p, NULL), 0);
                p = topic_pattern_free(p);
                big[401] = '/', big[402] = 'a', big[403] = 0;
                ck_assert_int_eq(topic_pattern_new(big, &p, &error), -EINVAL);
                ck_assert_msg(strstr(error, "more than 201 levels"), "%s", error);
        }
}
END_TEST

typedef struct MatchCase {
        const char *filter, *topic;
        int match;
        const char *sensor, *metric;
} MatchCase;

static const MatchCase match_cases[] = {
        { "greenhouse/+sensor/+metric", "greenhouse/gh1/temp", 1, "gh1", "temp" },
        { "greenhouse/+sensor/+metric", "greenhouse/gh1", 0, NULL, NULL },
        { "greenhouse/+sensor/+metric", "greenhouse/gh1/temp/x", 0, NULL, NULL },
        { "greenhouse/+sensor/+metric", "greenhouse/gh1/temp/", 0, NULL, NULL },
        { "greenhouse/+sensor/+metric", "Greenhouse/gh1/temp", 0, NULL, NULL },
        { "greenhouse/+sensor/+metric", "greenhouse//temp", 1, "", "temp" },
        { "greenhouse/+sensor/+metric", "greenhouse/gh1/", 1, "gh1", "" },
        { "greenhouse/+sensor/+metric", "greenhouse/" S65 "/t", 1, "", "t" },
        { "greenhouse/+sensor/+metric", "greenhouse/" S64 "/t", 1, S64, "t" },
        { "greenhouse/+sensor/state", "greenhouse/gh1/state", 1, "gh1", "" },
        { "greenhouse/+sensor/state", "greenhouse/gh1/stat", 0, NULL, NULL },
        { "greenhouse/+sensor/state", "greenhouse/gh1/states", 0, NULL, NULL },
        { "+metric/x/+sensor", "t/x/s", 1, "s", "t" },
        { "#", "a/b", 1, "", "" },
        { "#", "/", 1, "", "" },
        { "#", "$SYS/broker", 0, NULL, NULL },
        { "+/x", "$SYS/x", 0, NULL, NULL },
        { "+sensor/#", "$x/y", 0, NULL, NULL },
        { "$SYS/#", "$SYS/broker/version", 1, "", "" },
        { "$SYS/+metric", "$SYS/uptime", 1, "", "uptime" },
        { "a/#", "a", 1, "", "" },
        { "a/#", "a/", 1, "", "" },
        { "a/#", "a/b/c", 1, "", "" },
        { "a/#", "ab", 0, NULL, NULL },
        { "a/+sensor/#", "a/s/b/c", 1, "s", "" },
        { "a/+sensor/#", "a/s", 1, "s", "" },
        { "a/+sensor/#", "a", 0, NULL, NULL },
        { "a/+", "a/", 1, "", "" },
        { "a/+", "a", 0, NULL, NULL },
        { "+", "", 0, NULL, NULL },
        { "/+sensor", "/x", 1, "x", "" },
        { "/+sensor", "x", 0, NULL, NULL },
        { "a//b", "a//b", 1, "", "" },
        { "a//b", "a/b", 0, NULL, NULL },
};

START_TEST(test_match_table) {
        const MatchCase *c = &match_cases[_i];
        _cleanup_(topic_pattern_freep) TopicPattern *p = NULL;
        char sensor[SENSOR_ID_MAX + 1] = "unchanged", metric[METRIC_NAME_MAX + 1] = "unchanged";
        int r;

        ck_assert_int_eq(topic_pattern_new(c->filter, &p, NULL), 0);
        r = topic_pattern_match(p, c->topic, sensor, metric);
        ck_assert_msg(r == c->match, "'%s' ~ '%s': %d", c->filter, c->topic, r);
        if (r == 1) {
                ck_assert_str_eq(sensor, c->sensor);
                ck_assert_str_eq(metric, c->metric);
        } else {
                ck_assert_str_eq(sensor, "unchanged");
                ck_assert_str_eq(metric, "unchanged");
        }
        ck_assert_int_eq(topic_pattern_match(p, c->topic, NULL, NULL), c->match);
}
END_TEST

/* topic_pattern_match_into(): the same verdict and levels, plus the pattern's names; *ret
 * untouched when the topic does not match. */
START_TEST(test_match_into_table) {
        const MatchCase *c = &match_cases[_i];
        _cleanup_(topic_pattern_freep) TopicPattern *p = NULL;
        TopicMatch m, untouched;
        int r;

        ck_assert_int_eq(topic_pattern_new(c->filter, &p, NULL), 0);
        memset(&m, 0x5a, sizeof(m));
        untouched = m;
        r = topic_pattern_match_into(p, c->topic, &m);
        ck_assert_msg(r == c->match, "'%s' ~ '%s': %d", c->filter, c->topic, r);
        if (r == 1) {
                ck_assert_str_eq(m.sensor, c->sensor);
                ck_assert_str_eq(m.metric, c->metric);
                ck_assert(m.has_sensor == topic_pattern_has_sensor(p));
                ck_assert(m.has_metric == topic_pattern_has_metric(p));
        } else
                ck_assert(memcmp(&m, &untouched, sizeof(m)) == 0);
        ck_assert_int_eq(topic_pattern_match_into(p, NULL, &m), 0);
}
END_TEST

/* ---- frame_parse_mqtt ---- */

typedef struct MqttCase {
        const char *filter;           /* NULL: no pattern */
        FrameFormat format;
        const char *fixed_sensor, *fixed_metric;
        const char *topic;
        const char *payload;
        size_t size;
        size_t max;
        int reject;
        const char *sensor;
        M m[2];
} MqttCase;

#define GH "greenhouse/+sensor/+metric"
#define GS "greenhouse/+sensor/state"
#define MQ_OK(filter, fmt, fs, fm, topic, payload, sensor, ...) \
        { filter, fmt, fs, fm, topic, BYTES(payload), 4096, ACCEPT, sensor, { __VA_ARGS__ } }
#define MQ_NO(filter, fmt, fs, fm, topic, payload, why, sensor) \
        { filter, fmt, fs, fm, topic, BYTES(payload), 4096, FRAME_REJECT_##why, sensor, { { NULL, 0 } } }

static const MqttCase mqtt_cases[] = {
        MQ_OK(GH, VALUE, NULL, NULL, "greenhouse/gh1/temperature", "23.4", "gh1", { "temperature", 23.4 }),
        MQ_OK(GH, VALUE, NULL, NULL, "greenhouse/gh1/temperature", "23.4\n", "gh1", { "temperature", 23.4 }),
        MQ_OK(GH, VALUE, NULL, NULL, "greenhouse/gh1/on", "true", "gh1", { "on", 1 }),
        /* the topic beats the fixed names */
        MQ_OK(GH, VALUE, "fixed", "fixed", "greenhouse/gh1/t", "1", "gh1", { "t", 1 }),
        MQ_OK("greenhouse/+sensor/temp", VALUE, NULL, "temperature", "greenhouse/gh1/temp", "1", "gh1",
              { "temperature", 1 }),
        MQ_OK("greenhouse/+/+metric", VALUE, "gh9", NULL, "greenhouse/x/t", "2", "gh9", { "t", 2 }),
        MQ_OK(NULL, VALUE, "gh9", "t", "any/topic", "3", "gh9", { "t", 3 }),
        MQ_OK(NULL, VALUE, "gh9", "t", NULL, "3", "gh9", { "t", 3 }),
        MQ_NO(GH, VALUE, NULL, NULL, "other/gh1/t", "1", TOPIC_MISMATCH, ""),
        MQ_NO(GH, VALUE, NULL, NULL, "greenhouse/gh1", "1", TOPIC_MISMATCH, ""),
        MQ_NO(GH, VALUE, NULL, NULL, NULL, "1", TOPIC_MISMATCH, ""),
        MQ_NO("+sensor/+metric", VALUE, NULL, NULL, "$SYS/uptime", "1", TOPIC_MISMATCH, ""),
        MQ_NO(GH, VALUE, NULL, NULL, "greenhouse/gh1/t", "abc", BAD_VALUE, "gh1"),
        MQ_NO(GH, VALUE, NULL, NULL, "greenhouse/gh1/t", "", BAD_VALUE, "gh1"),
        MQ_NO(GH, VALUE, NULL, NULL, "greenhouse/gh1/t", "NaN", NOT_FINITE, "gh1"),
        MQ_NO(GH, VALUE, NULL, NULL, "greenhouse/gh1/t", "1e999", NOT_FINITE, "gh1"),
        MQ_NO(GH, VALUE, NULL, NULL, "greenhouse/gh1/t", "\xff", NOT_UTF8, "gh1"),
        MQ_NO(GH, VALUE, NULL, NULL, "greenhouse/gh1/t", "1\0", NOT_UTF8, "gh1"),
        MQ_NO(GH, VALUE, NULL, NULL, "greenhouse//t", "1", BAD_SENSOR, ""),
        MQ_NO(GH, VALUE, NULL, NULL, "greenhouse/" S65 "/t", "1", BAD_SENSOR, ""),
        MQ_NO(GH, VALUE, NULL, NULL, "greenhouse/g h/t", "1", BAD_SENSOR, ""),
        MQ_NO(GH, VALUE, NULL, NULL, "greenhouse/gh1/", "1", BAD_METRIC, "gh1"),
        MQ_NO(GH, VALUE, NULL, NULL, "greenhouse/gh1/t\xc3\xa9", "1", BAD_METRIC, "gh1"),
        MQ_NO("greenhouse/+sensor/temp", VALUE, NULL, NULL, "greenhouse/gh1/temp", "1", NO_METRIC, "gh1"),
        MQ_NO("greenhouse/+/+metric", VALUE, NULL, NULL, "greenhouse/x/t", "2", MISSING_SENSOR, ""),
        MQ_NO(NULL, VALUE, "a b", "t", "x", "3", BAD_SENSOR, ""),
        MQ_NO(NULL, VALUE, "s", "", "x", "3", BAD_METRIC, "s"),

        /* json: a +sensor level is the identity, it beats the fixed one; a payload naming the
         * same sensor is fine, one naming another is sensor_mismatch (logged under the
         * topic's id, "" when that is no valid id), never a reading under either name */
        MQ_OK(GS, JSON, NULL, NULL, "greenhouse/gh1/state", "{\"t\":1}", "gh1", { "t", 1 }),
        MQ_OK(GS, JSON, "fixed", NULL, "greenhouse/gh1/state", "{\"t\":1}", "gh1", { "t", 1 }),
        MQ_OK(GS, JSON, NULL, NULL, "greenhouse/gh1/state", "{\"sensor\":\"gh1\",\"t\":1}", "gh1", { "t", 1 }),
        MQ_OK(GS, JSON, "fixed", NULL, "greenhouse/gh1/state", "{\"t\":1,\"sensor\":\"gh1\"}", "gh1", { "t", 1 }),
        MQ_NO(GS, JSON, NULL, NULL, "greenhouse/gh1/state", "{\"sensor\":\"p1\",\"t\":1}", SENSOR_MISMATCH, "gh1"),
        MQ_NO(GS, JSON, NULL, NULL, "greenhouse/attacker/state", "{\"sensor\":\"victim\",\"t\":1}", SENSOR_MISMATCH,
              "attacker"),
        MQ_NO(GS, JSON, "victim", NULL, "greenhouse/attacker/state", "{\"sensor\":\"victim\",\"t\":1}",
              SENSOR_MISMATCH, "attacker"),
        MQ_NO(GS, JSON, NULL, NULL, "greenhouse/gh1/state", "{\"sensor\":\"GH1\",\"t\":1}", SENSOR_MISMATCH, "gh1"),
        MQ_NO(GS, JSON, NULL, NULL, "greenhouse/gh1/state", "{\"sensor\":\"gh1 \",\"t\":1}", BAD_SENSOR, ""),
        MQ_NO(GS, JSON, NULL, NULL, "greenhouse/g h/state", "{\"sensor\":\"p1\",\"t\":1}", SENSOR_MISMATCH, ""),
        MQ_NO(GS, JSON, NULL, NULL, "greenhouse/" S65 "/state", "{\"sensor\":\"p1\",\"t\":1}", SENSOR_MISMATCH, ""),
        MQ_NO(GH, JSON, NULL, NULL, "greenhouse/gh1/x", "{\"sensor\":\"gh2\",\"t\":1}", SENSOR_MISMATCH, "gh1"),
        /* the payload's own problems come first; the reject is the topic's sensor's */
        MQ_NO(GS, JSON, NULL, NULL, "greenhouse/gh1/state", "{\"sensor\":\"p1\",\"t\":1e999}", NOT_FINITE, "gh1"),
        MQ_NO(GS, JSON, NULL, NULL, "greenhouse/gh1/state", "{\"sensor\":\"p1\",\"t\":1", BAD_JSON, "gh1"),
        /* without a +sensor level the payload names the sensor: a fixed one is a fallback only */
        MQ_OK("greenhouse/+/state", JSON, "fixed", NULL, "greenhouse/x/state", "{\"sensor\":\"p1\",\"t\":1}", "p1",
              { "t", 1 }),
        MQ_NO("greenhouse/+/state", JSON, NULL, NULL, "greenhouse/x/state", "{\"sensor\":\"p1\"}", NO_METRIC, "p1"),
        /* a reject carries an id only when it passes frame_id_valid(): never one with a space,
         * a control byte or beyond ASCII, whichever part named it. Quotes are printable ASCII
         * and valid in an id; mqtt-message.c keeps them out of the SENSOR_ID= log field. */
        MQ_NO(GS, JSON, NULL, NULL, "greenhouse/g h/state", "{", BAD_JSON, ""),
        MQ_NO(GS, JSON, NULL, NULL, "greenhouse/g\th/state", "{}", BAD_SENSOR, ""),
        MQ_NO(GS, JSON, NULL, NULL, "greenhouse/gh\xc3\xa9/state", "{", BAD_JSON, ""),
        MQ_NO(GS, VALUE, NULL, NULL, "greenhouse/gh\xc3\xa9/state", "x", BAD_VALUE, ""),
        MQ_NO(GS, JSON, NULL, NULL, "greenhouse/g\"h/state", "{", BAD_JSON, "g\"h"),
        MQ_NO(NULL, JSON, "a b", NULL, "x", "{\"t\":1", BAD_JSON, ""),
        MQ_NO(NULL, JSON, "a\xc3\xa9", NULL, "x", "{\"t\":1", BAD_JSON, ""),
        MQ_OK(NULL, JSON, NULL, NULL, "x", "{\"sensor\":\"a\\\"b\",\"t\":1}", "a\"b", { "t", 1 }),
        MQ_NO(NULL, KV, NULL, NULL, "x", "sensor=\xc3\xa9 t=1", BAD_SENSOR, ""),
        MQ_OK(GS, JSON, NULL, NULL, "greenhouse/gh1/state", "{\"t\":1,\"u\":2}\r\n", "gh1", { "t", 1 }, { "u", 2 }),
        MQ_OK("greenhouse/state", JSON, "f1", NULL, "greenhouse/state", "{\"t\":1}", "f1", { "t", 1 }),
        /* a +metric level has no say over a json payload's members */
        MQ_OK(GH, JSON, NULL, NULL, "greenhouse/gh1/x", "{\"t\":1}", "gh1", { "t", 1 }),
        MQ_NO("greenhouse/state", JSON, NULL, NULL, "greenhouse/state", "{\"t\":1}", MISSING_SENSOR, ""),
        MQ_NO(GS, JSON, NULL, NULL, "greenhouse/g h/state", "{\"t\":1}", BAD_SENSOR, ""),
        MQ_NO(GS, JSON, NULL, NULL, "greenhouse/gh1/state", "{\"sensor\":\"p1\"}", SENSOR_MISMATCH, "gh1"),
        MQ_NO(GS, JSON, NULL, NULL, "greenhouse/gh1/state", "{\"sensor\":\"gh1\"}", NO_METRIC, "gh1"),
        MQ_NO(GS, JSON, NULL, NULL, "greenhouse/gh1/state", "{}", NO_METRIC, "gh1"),
        MQ_NO(GS, JSON, NULL, NULL, "greenhouse/gh1/state", "{\"sensor\":\"\",\"t\":1}", BAD_SENSOR, ""),
        MQ_NO(GS, JSON, NULL, NULL, "greenhouse/gh1/state", "{\"t\":1", BAD_JSON, "gh1"),
        MQ_NO(GS, JSON, NULL, NULL, "greenhouse/gh1/state", "{\"t\":1}\nx", BAD_JSON, "gh1"),
        MQ_NO(GS, JSON, NULL, NULL, "greenhouse/gh1/state", "{\"t\":\"\xc0\x80\"}", NOT_UTF8, "gh1"),
        MQ_NO(GS, JSON, NULL, NULL, "greenhouse/gh1/status", "{\"t\":1}", TOPIC_MISMATCH, ""),

        /* kv over MQTT */
        MQ_OK(GS, KV, NULL, NULL, "greenhouse/gh1/state", "t=1 u=2\n", "gh1", { "t", 1 }, { "u", 2 }),
        MQ_OK(GS, KV, NULL, NULL, "greenhouse/gh1/state", "sensor=gh1 t=1", "gh1", { "t", 1 }),
        MQ_NO(GS, KV, NULL, NULL, "greenhouse/gh1/state", "sensor=p1 t=1", SENSOR_MISMATCH, "gh1"),
        MQ_NO(GS, KV, NULL, NULL, "greenhouse/attacker/state", "t=1 sensor=victim", SENSOR_MISMATCH, "attacker"),
        MQ_OK("greenhouse/+/state", KV, NULL, NULL, "greenhouse/x/state", "sensor=p1 t=1", "p1", { "t", 1 }),
        MQ_NO(GS, KV, NULL, NULL, "greenhouse/gh1/state", "t", BAD_KV, "gh1"),

        /* size limit, before anything else: 4096 is the limit in these cases */
        { GH, VALUE, NULL, NULL, "greenhouse/gh1/t", BYTES("12345"), 5, ACCEPT, "gh1", { { "t", 12345 } } },
        { GH, VALUE, NULL, NULL, "greenhouse/gh1/t", BYTES("123456"), 5, FRAME_REJECT_TOO_LONG, "gh1", { { NULL, 0 } } },
        { GH, VALUE, NULL, NULL, "elsewhere", BYTES("\xff\xff"), 1, FRAME_REJECT_TOO_LONG, "", { { NULL, 0 } } },
        { GH, VALUE, NULL, NULL, "greenhouse/gh1/t", BYTES(""), 0, FRAME_REJECT_BAD_VALUE, "gh1", { { NULL, 0 } } },
};

START_TEST(test_mqtt_table) {
        const MqttCase *c = &mqtt_cases[_i];
        _cleanup_(topic_pattern_freep) TopicPattern *p = NULL;
        FrameReject reason = _FRAME_REJECT_INVALID;
        char *copy = malloc(c->size ?: 1);
        Frame f;
        int r;

        ck_assert_ptr_nonnull(copy);
        memcpy(copy, c->payload, c->size);
        if (c->filter)
                ck_assert_int_eq(topic_pattern_new(c->filter, &p, NULL), 0);
        memset(&f, 0xaa, sizeof(f));

        r = frame_parse_mqtt(p, c->format, c->fixed_sensor, c->fixed_metric, c->topic, copy, c->size, c->max,
                             &f, &reason);
        if (c->reject == ACCEPT) {
                size_t n = 0;

                ck_assert_msg(r == 0, "case %d (%s): rejected as %s", _i, strna(c->topic),
                              strna(frame_reject_to_string(reason)));
                ck_assert_str_eq(f.sensor, c->sensor);
                ck_assert(!f.has_ts);
                while (n < ELEMENTSOF(c->m) && c->m[n].name)
                        n++;
                ck_assert_uint_eq(f.n_metrics, n);
                for (size_t i = 0; i < n; i++) {
                        ck_assert_str_eq(f.metrics[i].name, c->m[i].name);
                        ck_assert(f.metrics[i].value == c->m[i].value);
                }
        } else {
                ck_assert_msg(r == -EBADMSG, "case %d (%s): returned %d", _i, strna(c->topic), r);
                ck_assert_msg((int) reason == c->reject, "case %d (%s): %s, expected %s", _i, strna(c->topic),
                              strna(frame_reject_to_string(reason)), frame_reject_to_string(c->reject));
                ck_assert_msg(streq(f.sensor, c->sensor), "case %d (%s): sensor '%s'", _i, strna(c->topic), f.sensor);
                ck_assert(untouched_but_sensor(&f));
        }
        free(copy);
}
END_TEST

START_TEST(test_mqtt_with_ts) {
        _cleanup_(topic_pattern_freep) TopicPattern *p = NULL;
        static const char payload[] = "{\"ts\":1732200000123,\"t\":1}";
        FrameReject reason;
        Frame f;

        ck_assert_int_eq(topic_pattern_new(GS, &p, NULL), 0);
        ck_assert_int_eq(frame_parse_mqtt(p, JSON, NULL, NULL, "greenhouse/a/state", payload, sizeof(payload) - 1,
                                          SIZE_MAX, &f, &reason), 0);
        ck_assert(f.has_ts);
        ck_assert_int_eq(f.ts_ms, 1732200000123);
        ck_assert_int_eq(frame_parse_mqtt(p, _FRAME_FORMAT_MAX, NULL, NULL, "greenhouse/a/state", payload,
                                          sizeof(payload) - 1, SIZE_MAX, &f, &reason), -EINVAL);
}
END_TEST

/* The same frame: on success field by field (the bytes after a name's NUL are not part of it),
 * on a reject the sensor id and nothing else written. */
static void assert_frames_equal(const Frame *a, const Frame *b, int r) {
        if (r < 0 && r != -EBADMSG) {
                /* -EINVAL and the like: not written at all */
                ck_assert(memcmp(a, b, sizeof(Frame)) == 0);
                return;
        }
        ck_assert_str_eq(a->sensor, b->sensor);
        if (r < 0) {
                ck_assert(untouched_but_sensor(a));
                ck_assert(untouched_but_sensor(b));
                return;
        }
        ck_assert(a->has_ts == b->has_ts);
        ck_assert(!a->has_ts || a->ts_ms == b->ts_ms);
        ck_assert_uint_eq(a->n_metrics, b->n_metrics);
        ck_assert_uint_eq(a->n_ignored, b->n_ignored);
        for (size_t i = 0; i < a->n_metrics; i++) {
                ck_assert_str_eq(a->metrics[i].name, b->metrics[i].name);
                ck_assert(memcmp(&a->metrics[i].value, &b->metrics[i].value, sizeof(double)) == 0);
        }
}

/* frame_parse_mqtt() and the match-once path (topic_pattern_match_into(), then
 * frame_parse_mqtt_matched()) must give the same result for every input: the return value,
 * the reason and the Frame (both start from the same fill). Where the
 * topic does not match, only frame_parse_mqtt() can answer: too_long or topic_mismatch. */
static void assert_paths_agree(const TopicPattern *p, FrameFormat format, const char *fixed_sensor,
                               const char *fixed_metric, const char *topic, const void *payload, size_t size,
                               size_t max) {
        FrameReject reason_a = _FRAME_REJECT_INVALID, reason_b = _FRAME_REJECT_INVALID;
        TopicMatch m;
        Frame a, b;
        int ra, rb;

        memset(&a, 0xaa, sizeof(a));
        memset(&b, 0xaa, sizeof(b));
        ra = frame_parse_mqtt(p, format, fixed_sensor, fixed_metric, topic, payload, size, max, &a, &reason_a);
        if (p && topic_pattern_match_into(p, topic, &m) == 0) {
                if (format < 0 || format >= _FRAME_FORMAT_MAX) {
                        ck_assert_int_eq(ra, -EINVAL);
                        return;
                }
                ck_assert_int_eq(ra, -EBADMSG);
                ck_assert(reason_a == (size > max ? FRAME_REJECT_TOO_LONG : FRAME_REJECT_TOPIC_MISMATCH));
                ck_assert_str_eq(a.sensor, "");
                ck_assert(untouched_but_sensor(&a));
                return;
        }
        rb = frame_parse_mqtt_matched(p ? &m : NULL, format, fixed_sensor, fixed_metric, payload, size, max, &b,
                                      &reason_b);
        ck_assert_msg(ra == rb, "'%s': %d vs %d", strna(topic), ra, rb);
        ck_assert_int_eq(reason_a, reason_b);
        ck_assert(reason_a != FRAME_REJECT_TOPIC_MISMATCH);
        assert_frames_equal(&a, &b, ra);
}

START_TEST(test_mqtt_paths_agree_table) {
        const MqttCase *c = &mqtt_cases[_i];
        _cleanup_(topic_pattern_freep) TopicPattern *p = NULL;
        char *copy = malloc(c->size ?: 1);

        ck_assert_ptr_nonnull(copy);
        memcpy(copy, c->payload, c->size);
        if (c->filter)
                ck_assert_int_eq(topic_pattern_new(c->filter, &p, NULL), 0);
        assert_paths_agree(p, c->format, c->fixed_sensor, c->fixed_metric, c->topic, copy, c->size, c->max);
        free(copy);
}
END_TEST

static const char *const cross_filters[] = {
        GH, GS, "greenhouse/+/+metric", "greenhouse/state", "+/+metric/#", "#", "$SYS/+sensor", NULL,
};

/* Every table payload under every topic, format, fixed name and limit below, for one filter per
 * run (each run has its own time limit: the product is large under the sanitizers). */
START_TEST(test_mqtt_paths_agree_cross) {
        static const char *const topics[] = {
                "greenhouse/gh1/t", "greenhouse/gh1/state", "greenhouse/state", "greenhouse//t", "greenhouse/gh1/",
                "greenhouse/" S65 "/t", "greenhouse/" S64 "/" S64, "greenhouse/g h/x", "greenhouse/gh1/t\xc3\xa9",
                "greenhouse/p1/state", "greenhouse/victim/state", "greenhouse/g\"h/state",
                "a/b/c/d", "$SYS/uptime", "other", "/", NULL,
        };
        static const struct {
                const char *sensor, *metric;
        } fixed[] = { { NULL, NULL }, { "fs", "fm" }, { "a b", "" }, { NULL, "fm" }, { "fs", NULL } };
        static const FrameFormat formats[] = { JSON, KV, VALUE, _FRAME_FORMAT_MAX };
        static const size_t maxes[] = { SIZE_MAX, 3 };

        _cleanup_(topic_pattern_freep) TopicPattern *p = NULL;

        if (cross_filters[_i])
                ck_assert_int_eq(topic_pattern_new(cross_filters[_i], &p, NULL), 0);
        for (size_t c = 0; c < ELEMENTSOF(mqtt_cases); c++) {
                char *copy = malloc(mqtt_cases[c].size ?: 1);

                ck_assert_ptr_nonnull(copy);
                memcpy(copy, mqtt_cases[c].payload, mqtt_cases[c].size);
                for (size_t t = 0; t < ELEMENTSOF(topics); t++)
                        for (size_t x = 0; x < ELEMENTSOF(fixed); x++)
                                for (size_t k = 0; k < ELEMENTSOF(formats); k++)
                                        for (size_t l = 0; l < ELEMENTSOF(maxes); l++)
                                                assert_paths_agree(p, formats[k], fixed[x].sensor, fixed[x].metric,
                                                                   topics[t], copy, mqtt_cases[c].size, maxes[l]);
                free(copy);
        }
}
END_TEST

static Suite *frame_suite(void) {
        Suite *s = suite_create("frame");
        TCase *tc;

        tc = tcase_create("line");
        tcase_add_loop_test(tc, test_parse_line_table, 0, ELEMENTSOF(line_cases));
        tcase_add_test(tc, test_metric_limit);
        tcase_add_test(tc, test_reject_sensor);
        tcase_add_test(tc, test_parse_line_invalid_args);
        tcase_add_test(tc, test_long_inputs);
        suite_add_tcase(s, tc);

        tc = tcase_create("value");
        tcase_add_loop_test(tc, test_parse_value_table, 0, ELEMENTSOF(value_cases));
        tcase_add_loop_test(tc, test_utf8_table, 0, ELEMENTSOF(utf8_cases));
        tcase_add_test(tc, test_id_valid);
        tcase_add_test(tc, test_string_tables);
        suite_add_tcase(s, tc);

        tc = tcase_create("line_buffer");
        tcase_add_loop_test(tc, test_line_buffer_split, 0, ELEMENTSOF(feeds));
        tcase_add_loop_test(tc, test_line_buffer_overlong, 0, ELEMENTSOF(feeds));
        tcase_add_loop_test(tc, test_line_buffer_handler_error, 0, ELEMENTSOF(feeds));
        tcase_add_test(tc, test_line_buffer_pull_no_copy);
        tcase_add_test(tc, test_line_buffer_pull_cr_at_chunk_end);
        tcase_add_test(tc, test_line_buffer_pull_three_chunks);
        tcase_add_test(tc, test_line_buffer_pull_overlong_chunks);
        tcase_add_test(tc, test_line_buffer_pull_reset);
        tcase_add_test(tc, test_line_buffer_pull_empty_chunk);
        tcase_add_loop_test(tc, test_line_buffer_modes, 0, ELEMENTSOF(mode_cases));
        tcase_add_test(tc, test_line_buffer_cr_then_lf_in_next_chunk);
        tcase_add_test(tc, test_line_buffer_early_overlong);
        suite_add_tcase(s, tc);

        tc = tcase_create("topic");
        tcase_set_timeout(tc, 60); /* the cross check: thousands of parses per run, under sanitizers too */
        tcase_add_loop_test(tc, test_pattern_table, 0, ELEMENTSOF(pattern_cases));
        tcase_add_test(tc, test_pattern_errors);
        tcase_add_loop_test(tc, test_match_table, 0, ELEMENTSOF(match_cases));
        tcase_add_loop_test(tc, test_match_into_table, 0, ELEMENTSOF(match_cases));
        tcase_add_loop_test(tc, test_mqtt_table, 0, ELEMENTSOF(mqtt_cases));
        tcase_add_test(tc, test_mqtt_with_ts);
        tcase_add_loop_test(tc, test_mqtt_paths_agree_table, 0, ELEMENTSOF(mqtt_cases));
        tcase_add_loop_test(tc, test_mqtt_paths_agree_cross, 0, ELEMENTSOF(cross_filters));
        suite_add_tcase(s, tc);

        return s;
}

int main(void) {
        return tl_run_suite(frame_suite());
}
