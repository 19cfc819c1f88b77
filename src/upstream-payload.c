/* SPDX-License-Identifier: MIT */
/* JSON payloads and topic names for upstream forwarding: pure, tested in test-upstream-payload.c. */
#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

#include "collector/decimal.h"
#include "collector/upstream-payload.h"

static int buf_grow(UpstreamBuf *b, size_t more) {
        size_t cap;
        char *n;

        cap = MAX(b->cap * 2, b->len + more + 1);
        cap = MAX(cap, (size_t) 256);
        n = realloc(b->data, cap);
        if (!n)
                return -ENOMEM;
        b->data = n;
        b->cap = cap;
        return 0;
}

/* Inline, with the growth out of line: a payload is a dozen short pieces, and a buffer reused
 * for every message has room for them all but the first time. */
static inline int buf_reserve(UpstreamBuf *b, size_t more) {
        if (_likely_(b->len + more + 1 <= b->cap))
                return 0;
        return buf_grow(b, more);
}

static inline int buf_put(UpstreamBuf *b, const char *s, size_t n) {
        if (buf_reserve(b, n) < 0)
                return -ENOMEM;
        memcpy(b->data + b->len, s, n);
        b->len += n;
        b->data[b->len] = 0;
        return 0;
}

static inline int buf_str(UpstreamBuf *b, const char *s) {
        return buf_put(b, s, strlen(s));
}

_printf_(2, 3) static int buf_printf(UpstreamBuf *b, const char *format, ...) {
        char tmp[64];
        va_list ap;
        int n;

        va_start(ap, format);
        n = vsnprintf(tmp, sizeof(tmp), format, ap);
        va_end(ap);
        assert(n >= 0 && (size_t) n < sizeof(tmp)); /* numbers only */
        return buf_put(b, tmp, (size_t) n);
}

/* A decimal integer, without printf (two of them per reading: seq and ts). */
static int buf_int64(UpstreamBuf *b, int64_t v) {
        char tmp[24];

        return buf_put(b, tmp, decimal_format_int64(v, tmp));
}

static bool json_plain(unsigned char c) {
        return c >= 0x20 && c != '"' && c != '\\';
}

/* A JSON string: quotes, backslash and control characters escaped (names are printable ASCII
 * when they come from frame.c, but the store is a file that anything may have written). Runs
 * of characters that need no escape are copied at once. */
static int buf_json_string(UpstreamBuf *b, const char *s) {
        int r = buf_str(b, "\"");

        while (r >= 0 && *s) {
                unsigned char c = (unsigned char) *s;
                size_t n = 0;

                while (json_plain((unsigned char) s[n]))
                        n++;
                if (n > 0) {
                        r = buf_put(b, s, n);
                        s += n;
                        continue;
                }
                if (c == '"' || c == '\\') {
                        char e[2] = { '\\', (char) c };
                        r = buf_put(b, e, 2);
                } else
                        r = buf_printf(b, "\\u%04x", c);
                s++;
        }
        return r < 0 ? r : buf_str(b, "\"");
}

const char *upstream_topic_check(const char *template, bool per_reading) {
        static const char *const always[] = { "gateway", "store" };
        static const char *const reading[] = { "sensor", "metric" };
        const char *p = template;

        if (!template || !*template)
                return "must not be empty";
        for (; *p; p++) {
                const char *end;
                size_t n;
                bool ok = false;

                if (*p == '+' || *p == '#')
                        return "must not contain '+' or '#' (wildcards are for subscriptions)";
                if (*p == '}')
                        return "has a '}' without its '{'";
                if (*p != '{')
                        continue;
                end = strchr(p, '}');
                if (!end)
                        return "has a '{' without its '}'";
                n = (size_t) (end - p - 1);
                for (size_t i = 0; i < ELEMENTSOF(always); i++)
                        ok = ok || (strlen(always[i]) == n && strncmp(p + 1, always[i], n) == 0);
                for (size_t i = 0; per_reading && i < ELEMENTSOF(reading); i++)
                        ok = ok || (strlen(reading[i]) == n && strncmp(p + 1, reading[i], n) == 0);
                if (!ok)
                        return per_reading ? "knows only the placeholders {gateway}, {store}, {sensor} and {metric}"
                                           : "knows only the placeholders {gateway} and {store}";
                p = end;
        }
        return NULL;
}

/* Runs without '/', '+' or '#' are copied at once (a name has none, usually). */
static int buf_topic_value(UpstreamBuf *b, const char *v) {
        int r = 0;

        if (!*v)
                return buf_str(b, "_");
        while (r >= 0 && *v) {
                size_t n = strcspn(v, "/+#");

                r = buf_put(b, v, n);
                v += n;
                if (r >= 0 && *v) {
                        r = buf_put(b, "_", 1);
                        v++;
                }
        }
        return r;
}

int upstream_topic_format(UpstreamBuf *b, const char *template, const UpstreamSource *src, const char *sensor,
                          const char *metric) {
        const char *p = template;
        int r = 0;

        b->len = 0;
        if (buf_reserve(b, strlen(template)) < 0)
                return -ENOMEM;
        b->data[0] = 0;
        while (r >= 0 && *p) {
                const char *open = strchr(p, '{'), *end;

                if (!open)
                        return buf_str(b, p);
                r = buf_put(b, p, (size_t) (open - p));
                end = strchr(open, '}');
                assert(end); /* checked by upstream_topic_check() */
                if (r < 0)
                        break;
                if (strncmp(open, "{gateway}", 9) == 0)
                        r = buf_topic_value(b, src->gateway);
                else if (strncmp(open, "{store}", 7) == 0)
                        r = buf_topic_value(b, src->store_id);
                else if (strncmp(open, "{sensor}", 8) == 0)
                        r = buf_topic_value(b, strempty(sensor));
                else if (strncmp(open, "{metric}", 8) == 0)
                        r = buf_topic_value(b, strempty(metric));
                p = end + 1;
        }
        return r;
}

void upstream_topic_done(UpstreamTopic *t) {
        t->fixed = mfree(t->fixed);
        t->parts = mfree(t->parts);
        t->n_parts = 0;
}

static int topic_add_part(UpstreamTopic *t, UpstreamBuf *fixed, size_t *start, UpstreamTopicValue value) {
        UpstreamTopicPart *n = reallocarray(t->parts, t->n_parts + 1, sizeof(*t->parts));

        if (!n)
                return -ENOMEM;
        t->parts = n;
        t->parts[t->n_parts++] = (UpstreamTopicPart) { .len = fixed->len - *start, .value = value };
        *start = fixed->len;
        return 0;
}

int upstream_topic_compile(UpstreamTopic *t, const char *template, const UpstreamSource *src) {
        UpstreamBuf fixed = {};
        const char *p = template;
        size_t start = 0;
        int r = 0;

        assert(t && template && src);

        upstream_topic_done(t);
        if (buf_reserve(&fixed, strlen(template)) < 0)
                return -ENOMEM;
        while (r >= 0 && *p) {
                const char *open = strchr(p, '{'), *end;

                if (!open) {
                        r = buf_str(&fixed, p);
                        break;
                }
                r = buf_put(&fixed, p, (size_t) (open - p));
                end = strchr(open, '}');
                assert(end); /* checked by upstream_topic_check() */
                if (r < 0)
                        break;
                if (strncmp(open, "{gateway}", 9) == 0)
                        r = buf_topic_value(&fixed, src->gateway);
                else if (strncmp(open, "{store}", 7) == 0)
                        r = buf_topic_value(&fixed, src->store_id);
                else if (strncmp(open, "{sensor}", 8) == 0)
                        r = topic_add_part(t, &fixed, &start, UPSTREAM_TOPIC_SENSOR);
                else if (strncmp(open, "{metric}", 8) == 0)
                        r = topic_add_part(t, &fixed, &start, UPSTREAM_TOPIC_METRIC);
                p = end + 1;
        }
        if (r >= 0)
                r = topic_add_part(t, &fixed, &start, UPSTREAM_TOPIC_NONE);
        if (r < 0) {
                free(fixed.data);
                upstream_topic_done(t);
                return r;
        }
        t->fixed = fixed.data;
        return 0;
}

int upstream_topic_render(UpstreamBuf *b, const UpstreamTopic *t, const char *sensor, const char *metric) {
        const char *fixed = t->fixed;
        int r = 0;

        assert(t->fixed);

        b->len = 0;
        if (buf_reserve(b, 0) < 0)
                return -ENOMEM;
        b->data[0] = 0;
        for (size_t i = 0; r >= 0 && i < t->n_parts; i++) {
                r = buf_put(b, fixed, t->parts[i].len);
                fixed += t->parts[i].len;
                if (r >= 0 && t->parts[i].value != UPSTREAM_TOPIC_NONE)
                        r = buf_topic_value(b, strempty(t->parts[i].value == UPSTREAM_TOPIC_SENSOR ? sensor : metric));
        }
        return r;
}

/* The names of a reading's flags in a payload, in this order: the same words as `query`. */
static const struct {
        unsigned flag;
        const char *name;
} flag_names[] = {
        { READING_FLAG_UNSYNCED, "unsynced" },
        { READING_FLAG_CORRECTED, "corrected" },
        { READING_FLAG_SUSPECT_TS, "suspect_ts" },
};

static int put_flags(UpstreamBuf *b, const StoredReading *r) {
        bool first = true;
        int k;

        k = buf_str(b, ",\"flags\":[");
        if (k >= 0 && r->sensor_ts) {
                k = buf_str(b, "\"sensor_ts\"");
                first = false;
        }
        for (size_t i = 0; k >= 0 && i < ELEMENTSOF(flag_names); i++)
                if (r->flags & flag_names[i].flag) {
                        k = buf_str(b, first ? "\"" : ",\"");
                        if (k >= 0)
                                k = buf_str(b, flag_names[i].name);
                        if (k >= 0)
                                k = buf_str(b, "\"");
                        first = false;
                }
        return k < 0 ? k : buf_str(b, "]");
}

/* The fields of one reading, without braces. */
static int put_reading(UpstreamBuf *b, const StoredReading *r, const char *unit) {
        int k;

        k = buf_str(b, "\"seq\":");
        if (k >= 0)
                k = buf_int64(b, r->id);
        if (k >= 0)
                k = buf_str(b, ",\"sensor\":");
        if (k >= 0)
                k = buf_json_string(b, strempty(r->sensor));
        if (k >= 0)
                k = buf_str(b, ",\"metric\":");
        if (k >= 0)
                k = buf_json_string(b, strempty(r->metric));
        /* The shortest text that reads back as the same double (22.3, not %.17g's
         * 22.300000000000001); the value is finite (the store takes nothing else), and every
         * text decimal_format() gives for a finite value is a JSON number. */
        if (k >= 0)
                k = buf_str(b, ",\"value\":");
        if (k >= 0) {
                char value[DECIMAL_BUF_SIZE];

                k = buf_put(b, value, decimal_format(r->value, value));
        }
        if (k >= 0 && unit) {
                k = buf_str(b, ",\"unit\":");
                if (k >= 0)
                        k = buf_json_string(b, unit);
        }
        if (k >= 0)
                k = buf_str(b, ",\"ts\":");
        if (k >= 0)
                k = buf_int64(b, r->ts_ms);
        if (k >= 0)
                k = put_flags(b, r);
        return k;
}

static int put_source(UpstreamBuf *b, const UpstreamSource *src) {
        int k;

        if (src->envelope)
                return buf_str(b, src->envelope);
        k = buf_str(b, "{\"gateway\":");
        if (k >= 0)
                k = buf_json_string(b, src->gateway);
        if (k >= 0)
                k = buf_str(b, ",\"store\":");
        if (k >= 0)
                k = buf_json_string(b, src->store_id);
        return k;
}

int upstream_payload_envelope(UpstreamBuf *b, const UpstreamSource *src) {
        UpstreamSource plain = { .gateway = src->gateway, .store_id = src->store_id };

        b->len = 0;
        return put_source(b, &plain);
}

int upstream_payload_live(UpstreamBuf *b, const UpstreamSource *src, const StoredReading *r, const char *unit) {
        int k;

        b->len = 0;
        k = put_source(b, src);
        if (k >= 0)
                k = buf_str(b, ",");
        if (k >= 0)
                k = put_reading(b, r, unit);
        if (k >= 0)
                k = buf_str(b, ",\"historical\":false}");
        return k;
}

int upstream_payload_batch_begin(UpstreamBuf *b, const UpstreamSource *src) {
        int k;

        b->len = 0;
        k = put_source(b, src);
        if (k >= 0)
                k = buf_str(b, ",\"historical\":true,\"readings\":[");
        return k;
}

int upstream_payload_live_batch_begin(UpstreamBuf *b, const UpstreamSource *src) {
        int k;

        b->len = 0;
        k = put_source(b, src);
        if (k >= 0)
                k = buf_str(b, ",\"historical\":false,\"readings\":[");
        return k;
}

int upstream_payload_batch_add(UpstreamBuf *b, const StoredReading *r, const char *unit, bool first) {
        int k;

        k = buf_str(b, first ? "{" : ",{");
        if (k >= 0)
                k = put_reading(b, r, unit);
        if (k >= 0)
                k = buf_str(b, "}");
        return k;
}

int upstream_payload_batch_end(UpstreamBuf *b) {
        return buf_str(b, "]}");
}
