/* SPDX-License-Identifier: MIT */
/* The status answer as readable text, Prometheus text or OpenMetrics: generic over its sections. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include "collector/macro.h"
#include "collector/status-format.h"
#include "collector/time-util.h"

#define KEYS_MAX 128
#define NAME_MAX_LEN 256

static bool ends_with(const char *s, const char *suffix) {
        size_t n = strlen(s), k = strlen(suffix);
        return n >= k && streq(s + n - k, suffix);
}

/* A section with object members only is one row per member; otherwise it is one row. */
static bool section_is_map(const cJSON *sec) {
        const cJSON *m;

        if (!cJSON_IsObject(sec) || !sec->child)
                return false;
        cJSON_ArrayForEach(m, sec)
                if (!cJSON_IsObject(m))
                        return false;
        return true;
}

static bool row_unhealthy(const cJSON *row) {
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(row, "healthy");
        return cJSON_IsFalse(h);
}

int status_health(const cJSON *answer) {
        const cJSON *sec, *row;

        cJSON_ArrayForEach(sec, answer) {
                if (!cJSON_IsObject(sec))
                        continue;
                if (!section_is_map(sec)) {
                        if (row_unhealthy(sec))
                                return 1;
                        continue;
                }
                cJSON_ArrayForEach(row, sec)
                        if (row_unhealthy(row))
                                return 1;
        }
        return 0;
}

/* ---- text ---- */

/* "state_since_timestamp_seconds" -> "state since", "readings_total" -> "readings". */
static void text_label(char *buf, size_t size, const char *key) {
        static const char *const suffixes[] = { "_timestamp_seconds", "_seconds", "_bytes", "_total" };
        size_t n = strlen(key);

        for (size_t i = 0; i < ELEMENTSOF(suffixes); i++)
                if (ends_with(key, suffixes[i]) && n > strlen(suffixes[i])) {
                        n -= strlen(suffixes[i]);
                        break;
                }
        n = MIN(n, size - 1);
        for (size_t i = 0; i < n; i++)
                buf[i] = key[i] == '_' ? ' ' : key[i];
        buf[n] = 0;
}

static void text_time(FILE *f, double t, int64_t now_ms) {
        time_t sec = (time_t) t;
        struct tm tm;
        char when[64], span[32];
        int64_t ms = (int64_t) llround(t * 1000.0), d = now_ms - ms;

        if (!localtime_r(&sec, &tm) || strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S %Z", &tm) == 0)
                snprintf(when, sizeof(when), "%.3f", t);
        format_timespan(span, sizeof(span), (uint64_t) (d >= 0 ? d : -d) * USEC_PER_MSEC);
        fprintf(f, "%s (%s%s)", when, d >= 0 ? span : "in ", d >= 0 ? " ago" : span);
}

static void text_number(FILE *f, double v) {
        if (v == floor(v) && fabs(v) < 1e15)
                fprintf(f, "%.0f", v);
        else
                fprintf(f, "%.3f", v);
}

/* Control characters in strings from the daemon (device paths, causes) are not sent to a terminal. */
static void text_string(FILE *f, const char *s) {
        for (; *s; s++)
                fputc(iscntrl((unsigned char) *s) ? '?' : *s, f);
}

static void text_value(FILE *f, const char *key, const cJSON *v, int64_t now_ms) {
        if (cJSON_IsNull(v))
                fputs("-", f);
        else if (cJSON_IsBool(v))
                fputs(cJSON_IsTrue(v) ? "yes" : "no", f);
        else if (cJSON_IsString(v))
                text_string(f, v->valuestring);
        else if (cJSON_IsNumber(v) && ends_with(key, "_timestamp_seconds"))
                text_time(f, v->valuedouble, now_ms);
        else if (cJSON_IsNumber(v) && ends_with(key, "_seconds")) {
                char span[32];
                fputs(format_timespan(span, sizeof(span), (uint64_t) (MAX(v->valuedouble, 0.0) * (double) USEC_PER_SEC)), f);
        } else if (cJSON_IsNumber(v) && ends_with(key, "_bytes") && v->valuedouble >= 1024) {
                static const char *const units[] = { "KiB", "MiB", "GiB", "TiB" };
                double x = v->valuedouble / 1024;
                size_t u = 0;

                while (x >= 1024 && u + 1 < ELEMENTSOF(units))
                        x /= 1024, u++;
                fprintf(f, "%.1f %s", x, units[u]);
        } else if (cJSON_IsNumber(v)) {
                text_number(f, v->valuedouble);
                if (ends_with(key, "_bytes"))
                        fputs(" bytes", f);
        } else
                fputs("...", f);
}

static void text_row(FILE *f, const cJSON *row, const char *indent, int64_t now_ms) {
        const cJSON *m;
        int width = 22;

        /* One column for the values of a row: as wide as its longest label, at least 22. */
        cJSON_ArrayForEach(m, row) {
                char label[NAME_MAX_LEN];

                if (cJSON_IsObject(m) || cJSON_IsArray(m) || !m->string)
                        continue;
                text_label(label, sizeof(label), m->string);
                width = MAX(width, (int) strlen(label));
        }
        cJSON_ArrayForEach(m, row) {
                char label[NAME_MAX_LEN], base[NAME_MAX_LEN];

                /* "last_error_timestamp_seconds" goes with "last_error", on its line. */
                if (ends_with(m->string, "_timestamp_seconds")) {
                        size_t n = strlen(m->string) - strlen("_timestamp_seconds");
                        snprintf(base, sizeof(base), "%.*s", (int) n, m->string);
                        if (n > 0 && cJSON_GetObjectItemCaseSensitive(row, base))
                                continue;
                }
                if (cJSON_IsObject(m) || cJSON_IsArray(m))
                        continue;
                text_label(label, sizeof(label), m->string);
                fprintf(f, "%s%-*s ", indent, width, label);
                text_value(f, m->string, m, now_ms);
                snprintf(base, sizeof(base), "%s_timestamp_seconds", m->string);
                const cJSON *when = cJSON_GetObjectItemCaseSensitive(row, base);
                if (cJSON_IsNumber(when)) {
                        fputs(", ", f);
                        text_time(f, when->valuedouble, now_ms);
                }
                fputc('\n', f);
        }
}

int status_format_text(const cJSON *answer, int64_t now_ms, FILE *f) {
        const cJSON *sec, *row;
        bool first = true;

        fprintf(f, "sensor-collector: %s\n", status_health(answer) == 0 ? "healthy" : "DEGRADED");
        cJSON_ArrayForEach(sec, answer) {
                if (!cJSON_IsObject(sec))
                        continue;
                fprintf(f, "%s%s:\n", first ? "\n" : "\n", sec->string);
                first = false;
                if (!sec->child)
                        fputs("  none\n", f);
                if (!section_is_map(sec)) {
                        text_row(f, sec, "  ", now_ms);
                        continue;
                }
                cJSON_ArrayForEach(row, sec) {
                        fprintf(f, "  %s:%s\n", row->string, row_unhealthy(row) ? " (not healthy)" : "");
                        text_row(f, row, "    ", now_ms);
                }
        }
        fflush(f);
        return ferror(f) ? -EIO : 0;
}

/* ---- Prometheus text and OpenMetrics ---- */

typedef enum MetricsFlavour {
        FLAVOUR_PROMETHEUS,
        FLAVOUR_OPENMETRICS,
} MetricsFlavour;

/* Characters a metric or label name may not have become '_'. */
static void metric_name(char *buf, size_t size, const char *a, const char *b, const char *c) {
        size_t n;

        snprintf(buf, size, "%s%s%s", a, b, c);
        n = strlen(buf);
        for (size_t i = 0; i < n; i++)
                if (!(isalnum((unsigned char) buf[i]) || buf[i] == '_' || buf[i] == ':') ||
                    (i == 0 && isdigit((unsigned char) buf[i])))
                        buf[i] = '_';
}

/* A string with a time of its own ("last_error" and "last_error_timestamp_seconds") is an event:
 * text for people, not a label (it would make a new series each time it changes); the metrics
 * have its time. */
static bool is_event_text(const cJSON *row, const cJSON *m) {
        char key[NAME_MAX_LEN];

        snprintf(key, sizeof(key), "%s_timestamp_seconds", m->string);
        return cJSON_GetObjectItemCaseSensitive(row, key) != NULL;
}

static void metrics_label_value(FILE *f, const char *s) {
        for (; *s; s++)
                if (*s == '\\')
                        fputs("\\\\", f);
                else if (*s == '"')
                        fputs("\\\"", f);
                else if (*s == '\n')
                        fputs("\\n", f);
                else
                        fputc(*s, f);
}

static void metrics_value(FILE *f, double v) {
        if (v == floor(v) && fabs(v) < 1e15)
                fprintf(f, "%.0f", v);
        else
                fprintf(f, "%.6f", v);
}

/* {label="row"} with more labels from the row's strings when strings is set. */
static void metrics_labels(FILE *f, const char *label, const char *row_name, const cJSON *strings) {
        const cJSON *m;
        bool any = false;

        if (row_name) {
                fprintf(f, "{%s=\"", label);
                metrics_label_value(f, row_name);
                fputc('"', f);
                any = true;
        }
        if (strings)
                cJSON_ArrayForEach(m, strings) {
                        char name[NAME_MAX_LEN];

                        if (!cJSON_IsString(m) || (row_name && streq(m->string, label)) || is_event_text(strings, m))
                                continue;
                        metric_name(name, sizeof(name), m->string, "", "");
                        fprintf(f, "%s%s=\"", any ? "," : "{", name);
                        metrics_label_value(f, m->valuestring);
                        fputc('"', f);
                        any = true;
                }
        if (any)
                fputc('}', f);
}

static bool has_strings(const cJSON *row) {
        const cJSON *m;
        cJSON_ArrayForEach(m, row)
                if (cJSON_IsString(m) && !is_event_text(row, m))
                        return true;
        return false;
}

static void metrics_section(FILE *f, const cJSON *sec, MetricsFlavour flavour) {
        const char *keys[KEYS_MAX];
        size_t n_keys = 0;
        char singular[NAME_MAX_LEN], prefix[NAME_MAX_LEN], label[NAME_MAX_LEN];
        bool map = section_is_map(sec), any_strings = false;
        const cJSON *row;

        snprintf(singular, sizeof(singular), "%s", sec->string);
        if (ends_with(singular, "s") && strlen(singular) > 1)
                singular[strlen(singular) - 1] = 0;
        metric_name(prefix, sizeof(prefix), "sensor_collector_", singular, "_");
        metric_name(label, sizeof(label), singular, "", "");

        /* Every numeric member of any row, in the order first seen: one family each, its samples
         * together (the formats want a family in one piece). */
        for (row = map ? sec->child : sec; row; row = map ? row->next : NULL) {
                const cJSON *m;

                any_strings = any_strings || has_strings(row);
                cJSON_ArrayForEach(m, row) {
                        bool seen = false;

                        if (!cJSON_IsNumber(m) && !cJSON_IsBool(m))
                                continue;
                        for (size_t i = 0; i < n_keys && !seen; i++)
                                seen = streq(keys[i], m->string);
                        if (!seen && n_keys < KEYS_MAX)
                                keys[n_keys++] = m->string;
                }
        }

        for (size_t i = 0; i < n_keys; i++) {
                char name[NAME_MAX_LEN], family[NAME_MAX_LEN];
                bool counter = ends_with(keys[i], "_total");

                metric_name(name, sizeof(name), prefix, keys[i], "");
                snprintf(family, sizeof(family), "%s", name);
                if (counter && flavour == FLAVOUR_OPENMETRICS)
                        family[strlen(family) - strlen("_total")] = 0;
                fprintf(f, "# HELP %s %s of %s %s, from sensor-collector status.\n", family, keys[i],
                        map ? "each" : "the", singular);
                fprintf(f, "# TYPE %s %s\n", family, counter ? "counter" : "gauge");
                for (row = map ? sec->child : sec; row; row = map ? row->next : NULL) {
                        const cJSON *v = cJSON_GetObjectItemCaseSensitive(row, keys[i]);

                        if (!cJSON_IsNumber(v) && !cJSON_IsBool(v))
                                continue;
                        fputs(name, f);
                        metrics_labels(f, label, map ? row->string : NULL, NULL);
                        fputc(' ', f);
                        if (cJSON_IsBool(v))
                                fputs(cJSON_IsTrue(v) ? "1" : "0", f);
                        else
                                metrics_value(f, v->valuedouble);
                        fputc('\n', f);
                }
        }

        /* The strings (state, origin, path, last error) as labels of one info metric. */
        if (any_strings) {
                char family[NAME_MAX_LEN];

                metric_name(family, sizeof(family), "sensor_collector_", singular, "");
                if (flavour == FLAVOUR_OPENMETRICS) {
                        fprintf(f, "# HELP %s What sensor-collector status says of %s %s.\n", family,
                                map ? "each" : "the", singular);
                        fprintf(f, "# TYPE %s info\n", family);
                } else {
                        fprintf(f, "# HELP %s_info What sensor-collector status says of %s %s.\n", family,
                                map ? "each" : "the", singular);
                        fprintf(f, "# TYPE %s_info gauge\n", family);
                }
                for (row = map ? sec->child : sec; row; row = map ? row->next : NULL) {
                        if (!has_strings(row))
                                continue;
                        fprintf(f, "%s_info", family);
                        metrics_labels(f, label, map ? row->string : NULL, row);
                        fputs(" 1\n", f);
                }
        }
}

static int status_format_metrics(const cJSON *answer, FILE *f, MetricsFlavour flavour) {
        const cJSON *sec;

        cJSON_ArrayForEach(sec, answer)
                if (cJSON_IsObject(sec))
                        metrics_section(f, sec, flavour);
        if (flavour == FLAVOUR_OPENMETRICS)
                fputs("# EOF\n", f);
        fflush(f);
        return ferror(f) ? -EIO : 0;
}

int status_format_prometheus(const cJSON *answer, FILE *f) {
        return status_format_metrics(answer, f, FLAVOUR_PROMETHEUS);
}

int status_format_openmetrics(const cJSON *answer, FILE *f) {
        return status_format_metrics(answer, f, FLAVOUR_OPENMETRICS);
}
