/* SPDX-License-Identifier: MIT */
/* `sensor-collector query`: options, time parsing and output formats over the store's read-only API. */
#include <assert.h>
#include <ctype.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "collector/config.h"
#include "collector/decimal.h"
#include "collector/exit-status.h"
#include "collector/query.h"
#include "collector/store-reader.h"
#include "collector/time-util.h"

/* Table output is aligned over this many rows at a time: bounded memory on any result size. */
#define TABLE_CHUNK_ROWS 1000
#define TABLE_COLUMNS_MAX 10
/* CSV and JSON lines are written in pieces of about this size. */
#define OUTPUT_FLUSH_BYTES (64 * 1024)

typedef enum OutputFormat {
        FORMAT_TABLE,
        FORMAT_CSV,
        FORMAT_JSON,
} OutputFormat;

typedef enum QueryMode {
        MODE_READINGS,
        MODE_LATEST,
        MODE_COUNT,
        MODE_REJECTS,
        MODE_EVENTS,
        MODE_GAPS,
        MODE_UPSTREAM,
} QueryMode;

typedef struct QueryArgs {
        const char *db;
        const char *config;
        StoreFilter filter;
        QueryMode mode;
        OutputFormat format;
        bool utc;
} QueryArgs;

static const char usage_text[] =
        "Usage: sensor-collector query [--db PATH | --config FILE] [--sensor ID] [--metric NAME]\n"
        "                              [--source serial|mqtt] [--since TIME] [--until TIME] [--limit N]\n"
        "                              [--flag unsynced|corrected|suspect_ts]\n"
        "                              [--latest | --count | --rejects | --events | --gaps]\n"
        "                              [--format table|csv|json] [--utc]\n";

static void help(void) {
        printf("%s\n"
               "Shows what the collector stored. Read-only: safe while the daemon runs.\n\n"
               "      --db PATH         the store (default: store.path of %s,\n"
               "                        else %s)\n"
               "  -c, --config FILE     take the store path from this configuration file\n"
               "  -s, --sensor ID       only this sensor\n"
               "  -m, --metric NAME     only this metric\n"
               "      --source SOURCE   only readings that came by serial or mqtt\n"
               "      --since TIME      from TIME on (the sensor's timestamp; rejects: time of receipt)\n"
               "      --until TIME      before TIME\n"
               "  -n, --limit N         the newest N rows, shown oldest first (default: all)\n"
               "      --flag FLAG       only readings flagged so (repeat for any of several): unsynced\n"
               "                        (received before the clock was trusted, not corrected), corrected,\n"
               "                        suspect_ts (the sensor's time was far from the clock)\n"
               "      --latest          the newest value of each sensor and metric\n"
               "      --count           how many readings per sensor and metric, first and last time\n"
               "      --rejects         what arrived and could not be used, with the reason and raw bytes\n"
               "      --events          why data is missing: sensors silent and back, inputs down and up,\n"
               "                        the daemon down, out-of-range bursts (--sensor: that sensor's and\n"
               "                        those of every sensor)\n"
               "      --gaps            per sensor, the stretches it was silent for longer than the sensor\n"
               "                        map allows, with their cause when one is known\n"
               "      --upstream        forwarding to the central broker: store id, backlog, what was acknowledged\n"
               "  -o, --format FORMAT   table (aligned, local time), csv, or json (one object per line)\n"
               "      --utc             show table times in UTC\n"
               "  -h, --help            print this help and exit\n\n"
               "A table marks a time ' ?' when it was taken before the clock was trusted and could not be\n"
               "corrected, ' ~' when it was corrected, ' !' when the sensor's time was far from the clock;\n"
               "CSV and JSON have a \"flags\" column (docs/STORE.md).\n\n"
               "TIME is relative to now (30s, 15m, 1h, 2d, 1w, 1h30m: that long ago; now) or absolute:\n"
               "2026-11-21T10:00:00Z, 2026-11-21T11:00:00+01:00, 2026-11-21 10:00 (local), 2026-11-21.\n\n"
               "Exit status: 0 done (also when nothing matches), 1 the store cannot be read,\n"
               "64 bad usage, 78 invalid --config file.\n",
               usage_text, CONFIG_DEFAULT_PATH, STORE_DEFAULT_PATH);
}

_printf_(1, 2) static int usage_error(const char *format, ...) {
        va_list ap;

        fputs("sensor-collector query: ", stderr);
        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        fputc('\n', stderr);
        fputs(usage_text, stderr);
        return -EINVAL;
}

/* ---- time ---- */

static int parse_digits(const char **p, size_t n, int *ret) {
        int v = 0;

        for (size_t i = 0; i < n; i++) {
                if (!isdigit((unsigned char) (*p)[i]))
                        return -EINVAL;
                v = v * 10 + ((*p)[i] - '0');
        }
        *p += n;
        *ret = v;
        return 0;
}

static int parse_relative(const char *s, int64_t now_ms, int64_t *ret_ms) {
        int64_t total = 0;

        if (!*s)
                return -EINVAL;
        while (*s) {
                int64_t n = 0, unit;
                const char *start = s;

                while (isdigit((unsigned char) *s)) {
                        if (n > INT64_MAX / 10 / 1000)
                                return -EINVAL;
                        n = n * 10 + (*s++ - '0');
                }
                if (s == start)
                        return -EINVAL;
                switch (*s++) {
                case 's':
                        unit = 1000;
                        break;
                case 'm':
                        unit = 60 * 1000;
                        break;
                case 'h':
                        unit = 3600 * 1000;
                        break;
                case 'd':
                        unit = (int64_t) 24 * 3600 * 1000;
                        break;
                case 'w':
                        unit = (int64_t) 7 * 24 * 3600 * 1000;
                        break;
                default:
                        return -EINVAL;
                }
                if (n > (INT64_MAX / 4 - total) / unit)
                        return -EINVAL;
                total += n * unit;
        }
        *ret_ms = now_ms - total;
        return 0;
}

static int parse_absolute(const char *s, int64_t *ret_ms) {
        struct tm tm = { .tm_isdst = -1 };
        int year, mon, mday, hour = 0, min = 0, sec = 0, ms = 0, off = 0;
        bool local = true;
        const char *p = s;
        time_t t;

        if (parse_digits(&p, 4, &year) < 0 || *p++ != '-' || parse_digits(&p, 2, &mon) < 0 || *p++ != '-' ||
            parse_digits(&p, 2, &mday) < 0)
                return -EINVAL;
        if (*p == 'T' || *p == 't' || *p == ' ') {
                p++;
                if (parse_digits(&p, 2, &hour) < 0 || *p++ != ':' || parse_digits(&p, 2, &min) < 0)
                        return -EINVAL;
                if (*p == ':') {
                        p++;
                        if (parse_digits(&p, 2, &sec) < 0)
                                return -EINVAL;
                        if (*p == '.' || *p == ',') {
                                int scale = 100;

                                p++;
                                if (!isdigit((unsigned char) *p))
                                        return -EINVAL;
                                for (; isdigit((unsigned char) *p); p++, scale /= 10)
                                        ms += (*p - '0') * scale;
                        }
                }
                if (*p == 'Z' || *p == 'z') {
                        p++;
                        local = false;
                } else if (*p == '+' || *p == '-') {
                        int sign = *p++ == '-' ? -1 : 1, oh, om;

                        if (parse_digits(&p, 2, &oh) < 0)
                                return -EINVAL;
                        if (*p == ':')
                                p++;
                        if (parse_digits(&p, 2, &om) < 0 || oh > 23 || om > 59)
                                return -EINVAL;
                        off = sign * (oh * 3600 + om * 60);
                        local = false;
                }
        }
        if (*p || mon < 1 || mon > 12 || mday < 1 || mday > 31 || hour > 23 || min > 59 || sec > 60)
                return -EINVAL;

        tm.tm_year = year - 1900;
        tm.tm_mon = mon - 1;
        tm.tm_mday = mday;
        tm.tm_hour = hour;
        tm.tm_min = min;
        tm.tm_sec = sec;
        t = local ? mktime(&tm) : timegm(&tm);
        if (t == (time_t) -1 && !(year == 1969 || year == 1970))
                return -EINVAL;
        /* 2026-02-31 normalizes to March: not a date. */
        if (tm.tm_mday != mday || tm.tm_mon != mon - 1)
                return -EINVAL;
        *ret_ms = ((int64_t) t - off) * 1000 + ms;
        return 0;
}

int query_parse_time(const char *s, int64_t now_ms, int64_t *ret_ms) {
        if (!s)
                return -EINVAL;
        if (streq(s, "now")) {
                *ret_ms = now_ms;
                return 0;
        }
        if (strlen(s) >= 10 && s[4] == '-')
                return parse_absolute(s, ret_ms);
        return parse_relative(s, now_ms, ret_ms);
}

/* "2026-11-21T10:00:00.123Z" in UTC, or "2026-11-21 11:00:00.123" in local time. */
static void format_time(int64_t ms, bool utc, char *buf, size_t size) {
        /* Rows come in time order and many share a timestamp (each sensor and metric of one
         * minute): the last text is kept, which spares most rows of an export the conversion
         * (about a tenth of the instructions of a csv export, docs/BENCHMARKS.md). One thread. */
        static struct {
                bool valid, utc;
                int64_t ms;
                char text[64];
        } last;
        time_t t = (time_t) (ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
        unsigned frac = (unsigned) (ms - (int64_t) t * 1000) % 1000u;
        struct tm tm;
        char base[40];

        if (last.valid && last.ms == ms && last.utc == utc && strlen(last.text) < size) {
                memcpy(buf, last.text, strlen(last.text) + 1);
                return;
        }
        if (!(utc ? gmtime_r(&t, &tm) : localtime_r(&t, &tm))) {
                snprintf(buf, size, "%" PRId64, ms);
                return;
        }
        strftime(base, sizeof(base), utc ? "%Y-%m-%dT%H:%M:%S" : "%Y-%m-%d %H:%M:%S", &tm);
        snprintf(buf, size, "%s.%03u%s", base, frac, utc ? "Z" : "");
        last.valid = strlen(buf) < sizeof(last.text) && strlen(buf) + 1 < size;
        if (last.valid) {
                last.ms = ms;
                last.utc = utc;
                memcpy(last.text, buf, strlen(buf) + 1);
        }
}

/* ---- escaping ---- */

typedef struct Buffer {
        char *data;
        size_t len, size;
} Buffer;

/* Makes room for n more bytes and the NUL. */
static int buffer_grow(Buffer *b, size_t n) {
        size_t size = MAX(b->size * 2, b->len + n + 64);
        char *d = realloc(b->data, size);

        if (!d)
                return -ENOMEM;
        b->data = d;
        b->size = size;
        return 0;
}

/* Called per field of every exported row: the growth is out of line, the copy inline. */
static inline int buffer_putn(Buffer *b, const char *s, size_t n) {
        if (_unlikely_(b->len + n + 1 > b->size) && buffer_grow(b, n) < 0)
                return -ENOMEM;
        memcpy(b->data + b->len, s, n);
        b->len += n;
        b->data[b->len] = 0;
        return 0;
}

static int buffer_puts(Buffer *b, const char *s) {
        return buffer_putn(b, s, strlen(s));
}

/* Raw bytes as printable ASCII: \\, \n, \r, \t, \xHH for the rest. Also used for strings shown
 * on a terminal, so that a control character in a topic cannot reach it. */
static int escape_bytes(Buffer *b, const void *data, size_t size, bool keep_utf8) {
        const unsigned char *p = data;
        int r = 0;

        for (size_t i = 0; i < size && r >= 0; i++) {
                char esc[8];

                switch (p[i]) {
                case '\\':
                        r = buffer_puts(b, "\\\\");
                        break;
                case '\n':
                        r = buffer_puts(b, "\\n");
                        break;
                case '\r':
                        r = buffer_puts(b, "\\r");
                        break;
                case '\t':
                        r = buffer_puts(b, "\\t");
                        break;
                default:
                        if ((p[i] >= 0x20 && p[i] < 0x7f) || (keep_utf8 && p[i] >= 0x80))
                                r = buffer_putn(b, (const char *) p + i, 1);
                        else {
                                snprintf(esc, sizeof(esc), "\\x%02x", p[i]);
                                r = buffer_puts(b, esc);
                        }
                }
        }
        return r;
}

static int json_string(Buffer *b, const char *s) {
        int r = buffer_puts(b, "\"");

        for (; *s && r >= 0; s++) {
                unsigned char c = (unsigned char) *s;
                char esc[8];

                if (c == '"')
                        r = buffer_puts(b, "\\\"");
                else if (c == '\\')
                        r = buffer_puts(b, "\\\\");
                else if (c == '\n')
                        r = buffer_puts(b, "\\n");
                else if (c < 0x20 || c == 0x7f) {
                        snprintf(esc, sizeof(esc), "\\u%04x", c);
                        r = buffer_puts(b, esc);
                } else
                        r = buffer_putn(b, s, 1);
        }
        return r < 0 ? r : buffer_puts(b, "\"");
}

static int csv_field(Buffer *b, const char *s) {
        static const bool special[256] = { [','] = true, ['"'] = true, ['\r'] = true, ['\n'] = true };
        size_t n = 0;
        bool quote = false;
        int r;

        /* One pass to find both the length and whether the field needs quotes: strpbrk() and
         * strlen() per field were a tenth of an export's time. */
        for (; s[n]; n++)
                quote |= special[(unsigned char) s[n]];
        if (!quote && !(n > 0 && (s[0] == ' ' || s[n - 1] == ' ')))
                return buffer_putn(b, s, n);
        r = buffer_puts(b, "\"");
        for (; *s && r >= 0; s++)
                r = *s == '"' ? buffer_puts(b, "\"\"") : buffer_putn(b, s, 1);
        return r < 0 ? r : buffer_puts(b, "\"");
}

/* ---- output ---- */

typedef struct Output {
        OutputFormat format;
        bool utc;
        size_t n_columns;
        const char *const *headers;
        const bool *right;          /* right-aligned columns (numbers) */
        const char *const *keys;    /* JSON member names */
        const bool *json_raw;       /* JSON: the cell is a number/boolean, not a string */

        char **cells;               /* table: buffered rows, n_columns each */
        size_t n_rows;
        size_t widths[TABLE_COLUMNS_MAX];
        bool header_done;
        uint64_t rows_total;
        Buffer line;                /* CSV/JSON: lines not written yet (output_flush_lines()), the
                                     * buffer reused for the whole walk */
} Output;

static void table_line(const Output *o, const char *const *cells, bool header) {
        for (size_t c = 0; c < o->n_columns; c++) {
                bool last = c + 1 == o->n_columns;

                if (o->right[c] && !header)
                        printf("%*s%s", (int) o->widths[c], cells[c], last ? "" : "  ");
                else if (last)
                        fputs(cells[c], stdout);
                else
                        printf("%-*s  ", (int) o->widths[c], cells[c]);
        }
        putchar('\n');
}

/* Prints the buffered rows aligned (widths only grow from one chunk to the next). */
static void output_flush_table(Output *o) {
        if (o->n_rows == 0)
                return;
        for (size_t c = 0; c < o->n_columns; c++) {
                if (!o->header_done)
                        o->widths[c] = MAX(o->widths[c], strlen(o->headers[c]));
                for (size_t i = 0; i < o->n_rows; i++)
                        o->widths[c] = MAX(o->widths[c], strlen(o->cells[i * o->n_columns + c]));
        }
        if (!o->header_done)
                table_line(o, o->headers, true);
        o->header_done = true;
        for (size_t i = 0; i < o->n_rows; i++)
                table_line(o, (const char *const *) o->cells + i * o->n_columns, false);
        for (size_t i = 0; i < o->n_rows * o->n_columns; i++)
                o->cells[i] = mfree(o->cells[i]);
        o->n_rows = 0;
}

/* Writes the CSV/JSON lines collected so far. */
static void output_flush_lines(Output *o) {
        if (o->line.len > 0)
                fwrite(o->line.data, 1, o->line.len, stdout);
        o->line.len = 0;
}

/* Takes one row of cells (copied). */
static int output_row(Output *o, char *const *cells) {
        Buffer *line = &o->line;
        size_t start = line->len;
        int r = 0;

        o->rows_total++;
        switch (o->format) {
        case FORMAT_TABLE:
                if (!o->cells) {
                        o->cells = calloc(TABLE_CHUNK_ROWS * o->n_columns, sizeof(char *));
                        if (!o->cells)
                                return -ENOMEM;
                }
                for (size_t c = 0; c < o->n_columns; c++) {
                        Buffer cell = {};

                        r = escape_bytes(&cell, cells[c], strlen(cells[c]), true);
                        if (r >= 0 && !cell.data)
                                r = buffer_puts(&cell, "");
                        if (r < 0) {
                                free(cell.data);
                                return r;
                        }
                        o->cells[o->n_rows * o->n_columns + c] = cell.data;
                }
                if (++o->n_rows == TABLE_CHUNK_ROWS)
                        output_flush_table(o);
                return 0;

        case FORMAT_CSV:
                if (!o->header_done) {
                        for (size_t c = 0; c < o->n_columns; c++)
                                printf("%s%s", c ? "," : "", o->keys[c]);
                        putchar('\n');
                        o->header_done = true;
                }
                for (size_t c = 0; c < o->n_columns && r >= 0; c++) {
                        if (c)
                                r = buffer_puts(line, ",");
                        if (r >= 0)
                                r = csv_field(line, cells[c]);
                }
                break;

        case FORMAT_JSON:
                r = buffer_puts(line, "{");
                for (size_t c = 0; c < o->n_columns && r >= 0; c++) {
                        r = buffer_puts(line, c ? ",\"" : "\"");
                        if (r >= 0)
                                r = buffer_puts(line, o->keys[c]);
                        if (r >= 0)
                                r = buffer_puts(line, "\":");
                        if (r >= 0)
                                r = o->json_raw[c] ? buffer_puts(line, cells[c]) : json_string(line, cells[c]);
                }
                if (r >= 0)
                        r = buffer_puts(line, "}");
                break;
        }
        if (r >= 0)
                r = buffer_putn(line, "\n", 1);
        if (r < 0) {
                line->len = start; /* no half row */
                return r;
        }
        /* Lines collect in the buffer and go out OUTPUT_FLUSH_BYTES at a time: an fwrite per
         * row was a few percent of an export, and the buffer stops growing after the first. */
        if (line->len >= OUTPUT_FLUSH_BYTES)
                output_flush_lines(o);
        return 0;
}

static void output_finish(Output *o, const char *what) {
        output_flush_lines(o);
        o->line.data = mfree(o->line.data);
        o->line.len = o->line.size = 0;
        if (o->format == FORMAT_TABLE) {
                output_flush_table(o);
                if (o->rows_total == 0)
                        fprintf(stderr, "No %s.\n", what);
                free(o->cells);
                o->cells = NULL;
        } else if (o->format == FORMAT_CSV && !o->header_done) {
                /* A CSV file has its header even when empty. */
                for (size_t c = 0; c < o->n_columns; c++)
                        printf("%s%s", c ? "," : "", o->keys[c]);
                putchar('\n');
        }
}

/* Readings and latest values share one shape. */
static const char *const reading_headers[] = { "TIME", "SENSOR", "METRIC", "VALUE", "SOURCE", "ORIGIN" };
static const bool reading_right[] = { false, false, false, true, false, false };
/* CSV/JSON carry more: the ms values, whether the time is the sensor's own, and the clock's
 * flags (names separated by spaces, "" for none). */
static const char *const reading_keys[] = { "ts", "time", "sensor", "metric", "value", "sensor_ts",
                                            "received", "source", "origin", "flags" };
static const bool reading_json_raw[] = { true, false, false, false, true, true, true, false, false, false };

/* The clock's flags of a reading: "unsynced corrected suspect_ts", or a mark after the time in a
 * table: " ?" received before the clock was trusted and not corrected, " ~" corrected, " !" the
 * sensor's time was far from the clock (see docs/STORE.md). */
static const char *format_flags(unsigned flags, bool marks, char *buf, size_t size) {
        static const struct {
                unsigned flag;
                const char *name;
        } names[] = {
                { READING_FLAG_UNSYNCED, "unsynced" },
                { READING_FLAG_CORRECTED, "corrected" },
                { READING_FLAG_SUSPECT_TS, "suspect_ts" },
        };
        size_t used = 0;

        buf[0] = 0;
        if (marks) {
                bool waiting = (flags & (READING_FLAG_UNSYNCED | READING_FLAG_CORRECTED)) == READING_FLAG_UNSYNCED;

                snprintf(buf, size, "%s%s", waiting ? " ?" : flags & READING_FLAG_CORRECTED ? " ~" : "",
                         flags & READING_FLAG_SUSPECT_TS ? " !" : "");
                return buf;
        }
        for (size_t i = 0; i < ELEMENTSOF(names) && used < size; i++)
                if (flags & names[i].flag)
                        used += (size_t) snprintf(buf + used, size - used, "%s%s", used > 0 ? " " : "", names[i].name);
        return buf;
}
_Static_assert(ELEMENTSOF(reading_headers) <= TABLE_COLUMNS_MAX, "too many table columns");

static int on_reading(const StoredReading *row, void *userdata) {
        Output *o = userdata;
        char time_buf[64], value[64], ts[32], received[32], flags[48];

        decimal_format(row->value, value);
        if (o->format == FORMAT_JSON && !isfinite(row->value))
                snprintf(value, sizeof(value), "null");
        if (o->format == FORMAT_TABLE) {
                char *cells[] = { time_buf, (char *) row->sensor, (char *) row->metric, value, (char *) row->source,
                                  (char *) row->origin };

                format_time(row->ts_ms, o->utc, time_buf, sizeof(time_buf));
                if (row->flags != 0)
                        strncat(time_buf, format_flags(row->flags, true, flags, sizeof(flags)),
                                sizeof(time_buf) - strlen(time_buf) - 1);
                return output_row(o, cells);
        }

        format_time(row->ts_ms, true, time_buf, sizeof(time_buf));
        decimal_format_int64(row->ts_ms, ts);
        decimal_format_int64(row->received_ms, received);
        char *cells[] = { ts, time_buf, (char *) row->sensor, (char *) row->metric, value,
                          (char *) (row->sensor_ts ? "true" : "false"), received, (char *) row->source,
                          (char *) row->origin, (char *) format_flags(row->flags, false, flags, sizeof(flags)) };
        return output_row(o, cells);
}

static const char *const count_headers[] = { "SENSOR", "METRIC", "COUNT", "FIRST", "LAST" };
static const bool count_right[] = { false, false, true, false, false };
static const char *const count_keys[] = { "sensor", "metric", "count", "first_ts", "last_ts" };
static const bool count_json_raw[] = { false, false, true, true, true };

static int on_count(const StoredCount *row, void *userdata) {
        Output *o = userdata;
        char count[32], first[64], last[64];

        snprintf(count, sizeof(count), "%" PRIu64, row->count);
        if (o->format == FORMAT_TABLE) {
                format_time(row->first_ts_ms, o->utc, first, sizeof(first));
                format_time(row->last_ts_ms, o->utc, last, sizeof(last));
        } else {
                snprintf(first, sizeof(first), "%" PRId64, row->first_ts_ms);
                snprintf(last, sizeof(last), "%" PRId64, row->last_ts_ms);
        }
        char *cells[] = { (char *) row->sensor, (char *) row->metric, count, first, last };
        return output_row(o, cells);
}

static const char *const reject_headers[] = { "TIME", "SOURCE", "ORIGIN", "REASON", "RAW" };
static const bool reject_right[] = { false, false, false, false, false };
static const char *const reject_keys[] = { "received", "time", "source", "origin", "reason", "raw_size", "raw" };
static const bool reject_json_raw[] = { true, false, false, false, false, true, false };

static int on_reject(const StoredReject *row, void *userdata) {
        Output *o = userdata;
        _cleanup_free_ char *raw_data = NULL;
        char time_buf[64], received[32], raw_size[32];
        Buffer raw = {};
        int r;

        /* Escaped to plain ASCII, whatever the format: the bytes were not valid input. */
        r = escape_bytes(&raw, row->raw, row->raw_size, false);
        raw_data = raw.data;
        if (r < 0)
                return r;
        if (o->format == FORMAT_TABLE) {
                char *cells[] = { time_buf, (char *) row->source, (char *) row->origin, (char *) row->reason,
                                  (char *) strempty(raw.data) };

                format_time(row->received_ms, o->utc, time_buf, sizeof(time_buf));
                return output_row(o, cells);
        }
        format_time(row->received_ms, true, time_buf, sizeof(time_buf));
        snprintf(received, sizeof(received), "%" PRId64, row->received_ms);
        snprintf(raw_size, sizeof(raw_size), "%zu", row->raw_size);
        char *cells[] = { received, time_buf, (char *) row->source, (char *) row->origin, (char *) row->reason,
                          raw_size, (char *) strempty(raw.data) };
        return output_row(o, cells);
}

static void format_span(int64_t from_ms, int64_t to_ms, char *buf, size_t size) {
        int64_t s = (to_ms - from_ms) / 1000;

        if (from_ms <= 0 || to_ms <= 0)
                snprintf(buf, size, "-");
        else if (s < 60)
                snprintf(buf, size, "%.1fs", (double) (to_ms - from_ms) / 1000.0);
        else if (s < 3600)
                snprintf(buf, size, "%" PRId64 "m%02" PRId64 "s", s / 60, s % 60);
        else if (s < 86400)
                snprintf(buf, size, "%" PRId64 "h%02" PRId64 "m", s / 3600, s % 3600 / 60);
        else
                snprintf(buf, size, "%" PRId64 "d%02" PRId64 "h", s / 86400, s % 86400 / 3600);
}

/* A time column: local or UTC text in a table, else ms ("" for none; JSON null). */
static void format_opt_time(const Output *o, int64_t ms, char *buf, size_t size) {
        if (ms == 0)
                snprintf(buf, size, "%s", o->format == FORMAT_JSON ? "null" : o->format == FORMAT_TABLE ? "-" : "");
        else if (o->format == FORMAT_TABLE)
                format_time(ms, o->utc, buf, size);
        else
                snprintf(buf, size, "%" PRId64, ms);
}

static const char *const event_headers[] = { "TIME", "KIND", "SENSOR", "SUBJECT", "FROM", "TO", "LENGTH", "COUNT", "DETAIL" };
static const bool event_right[] = { false, false, false, false, false, false, true, true, false };
static const char *const event_keys[] = { "ts", "time", "kind", "sensor", "subject", "start", "end", "duration_ms", "count", "detail" };
/* sensor, subject and detail: a string or null, made by on_event() */
static const bool event_json_raw[] = { true, false, false, true, true, true, true, true, true, true };

/* A JSON string of s into b, or null for NULL. Returns 0 or -ENOMEM. */
static int json_string_or_null(Buffer *b, const char *s) {
        return s ? json_string(b, s) : buffer_puts(b, "null");
}

static int on_event(const StoredEvent *row, void *userdata) {
        Output *o = userdata;
        char time_buf[64], ts[32], start[64], end[64], span[32], count[32];

        format_opt_time(o, row->start_ms, start, sizeof(start));
        format_opt_time(o, row->end_ms, end, sizeof(end));
        if (o->format == FORMAT_TABLE) {
                format_time(row->ts_ms, o->utc, time_buf, sizeof(time_buf));
                format_span(row->start_ms, row->end_ms, span, sizeof(span));
                snprintf(count, sizeof(count), row->count ? "%" PRIu64 : "-", row->count);
                char *cells[] = { time_buf, (char *) row->kind, (char *) (row->sensor ?: "-"),
                                  (char *) (row->subject ?: "-"), start, end, span, count, (char *) strempty(row->detail) };
                return output_row(o, cells);
        }
        format_time(row->ts_ms, true, time_buf, sizeof(time_buf));
        snprintf(ts, sizeof(ts), "%" PRId64, row->ts_ms);
        if (row->start_ms && row->end_ms)
                snprintf(span, sizeof(span), "%" PRId64, row->end_ms - row->start_ms);
        else
                snprintf(span, sizeof(span), "%s", o->format == FORMAT_JSON ? "null" : "");
        if (row->count)
                snprintf(count, sizeof(count), "%" PRIu64, row->count);
        else
                snprintf(count, sizeof(count), "%s", o->format == FORMAT_JSON ? "null" : "");
        _cleanup_free_ char *sensor_data = NULL, *subject_data = NULL, *detail_data = NULL;
        Buffer sensor = {}, subject = {}, detail = {};
        int r = 0;

        if (o->format == FORMAT_JSON) {
                r = json_string_or_null(&sensor, row->sensor);
                if (r >= 0)
                        r = json_string_or_null(&subject, row->subject);
                if (r >= 0)
                        r = json_string_or_null(&detail, row->detail);
        }
        sensor_data = sensor.data;
        subject_data = subject.data;
        detail_data = detail.data;
        if (r < 0)
                return r;
        bool json = o->format == FORMAT_JSON;
        char *cells[] = { ts, time_buf, (char *) row->kind, json ? sensor.data : (char *) strempty(row->sensor),
                          json ? subject.data : (char *) strempty(row->subject), start, end, span, count,
                          json ? detail.data : (char *) strempty(row->detail) };
        return output_row(o, cells);
}

static const char *const gap_headers[] = { "SENSOR", "FROM", "TO", "LENGTH", "CAUSE" };
static const bool gap_right[] = { false, false, false, true, false };
static const char *const gap_keys[] = { "sensor", "start", "end", "duration_ms", "ongoing", "cause" };
static const bool gap_json_raw[] = { false, true, true, true, true, true }; /* cause: string or null */

static int on_gap(const StoredGap *row, void *userdata) {
        Output *o = userdata;
        int64_t end = row->end_ms ?: wall_clock_ms();
        char start[64], end_buf[64], span[32];

        format_opt_time(o, row->start_ms, start, sizeof(start));
        if (o->format == FORMAT_TABLE) {
                if (row->end_ms)
                        format_opt_time(o, row->end_ms, end_buf, sizeof(end_buf));
                else
                        snprintf(end_buf, sizeof(end_buf), "(ongoing)");
                format_span(row->start_ms, end, span, sizeof(span));
                char *cells[] = { (char *) row->sensor, start, end_buf, span, (char *) (row->cause ?: "unknown") };
                return output_row(o, cells);
        }
        format_opt_time(o, row->end_ms, end_buf, sizeof(end_buf));
        if (row->start_ms)
                snprintf(span, sizeof(span), "%" PRId64, end - row->start_ms);
        else
                snprintf(span, sizeof(span), "%s", o->format == FORMAT_JSON ? "null" : "");
        _cleanup_free_ char *cause_data = NULL;
        Buffer cause = {};
        int r = 0;

        if (o->format == FORMAT_JSON)
                r = json_string_or_null(&cause, row->cause);
        cause_data = cause.data;
        if (r < 0)
                return r;
        char *cells[] = { (char *) row->sensor, start, end_buf, span, (char *) (row->end_ms ? "false" : "true"),
                          (char *) (o->format == FORMAT_JSON ? cause.data : strempty(row->cause)) };
        return output_row(o, cells);
}

/* ---- options ---- */

enum {
        ARG_DB = 0x100,
        ARG_SOURCE,
        ARG_SINCE,
        ARG_UNTIL,
        ARG_LATEST,
        ARG_COUNT,
        ARG_REJECTS,
        ARG_UTC,
        ARG_FLAG,
        ARG_EVENTS,
        ARG_GAPS,
        ARG_UPSTREAM,
};

/* One of the options that narrow the rows (--sensor, --metric, --source, --since, --until,
 * --limit) into f; times are relative to now (ms). Returns 0 or -EINVAL after the usage. */
static int parse_filter_option(int c, const char *arg, int64_t now, StoreFilter *f) {
        char *end;

        switch (c) {
        case 's':
                f->sensor = arg;
                return 0;
        case 'm':
                f->metric = arg;
                return 0;
        case ARG_SOURCE:
                if (streq(arg, "serial"))
                        f->source = READING_SOURCE_SERIAL;
                else if (streq(arg, "mqtt"))
                        f->source = READING_SOURCE_MQTT;
                else
                        return usage_error("invalid --source '%s' (serial or mqtt)", arg);
                return 0;
        case ARG_SINCE:
                if (query_parse_time(arg, now, &f->since_ms) < 0)
                        return usage_error("invalid --since '%s' (e.g. 15m, 2d, 2026-11-21T10:00:00Z)", arg);
                return 0;
        case ARG_UNTIL:
                if (query_parse_time(arg, now, &f->until_ms) < 0)
                        return usage_error("invalid --until '%s' (e.g. 15m, 2d, 2026-11-21T10:00:00Z)", arg);
                return 0;
        case 'n':
                errno = 0;
                f->limit = strtoull(arg, &end, 10);
                if (errno != 0 || end == arg || *end || arg[0] == '-')
                        return usage_error("invalid --limit '%s' (a number, 0 = all)", arg);
                return 0;
        default:
                assert(!"not a filter option");
                return -EINVAL;
        }
}

/* --format: returns 0 and *ret, or -EINVAL after the usage. */
static int parse_format(const char *arg, OutputFormat *ret) {
        if (streq(arg, "table"))
                *ret = FORMAT_TABLE;
        else if (streq(arg, "csv"))
                *ret = FORMAT_CSV;
        else if (streq(arg, "json"))
                *ret = FORMAT_JSON;
        else
                return usage_error("invalid --format '%s' (table, csv or json)", arg);
        return 0;
}

/* The options that exclude each other; n_modes counts --latest, --count and --rejects given.
 * Returns 0 or -EINVAL after the usage. */
static int check_args(const QueryArgs *a, unsigned n_modes) {
        if (n_modes > 1)
                return usage_error("--latest, --count, --rejects, --events, --gaps and --upstream exclude each other");
        if ((a->mode == MODE_EVENTS || a->mode == MODE_GAPS) && (a->filter.metric || a->filter.source >= 0))
                return usage_error("--metric and --source do not apply to --events and --gaps");
        if (a->mode == MODE_GAPS && a->filter.limit > 0)
                return usage_error("--limit does not apply to --gaps");
        if (a->db && a->config)
                return usage_error("--db and --config exclude each other");
        if ((a->mode == MODE_LATEST || a->mode == MODE_COUNT) && a->filter.limit > 0)
                return usage_error("--limit does not apply to --latest and --count");
        if (a->mode == MODE_REJECTS && (a->filter.sensor || a->filter.metric))
                return usage_error("--sensor and --metric do not apply to --rejects");
        if (a->mode == MODE_REJECTS && a->filter.flags)
                return usage_error("--flag does not apply to --rejects");
        if (a->filter.since_ms >= a->filter.until_ms && a->filter.since_ms != INT64_MIN)
                return usage_error("--since must be before --until");
        return 0;
}

/* Returns 0 with *a filled in, 1 after --help, or -EINVAL after printing the usage. */
static int parse_args(int argc, char **argv, QueryArgs *a) {
        static const struct option options[] = {
                { "db", required_argument, NULL, ARG_DB },
                { "config", required_argument, NULL, 'c' },
                { "sensor", required_argument, NULL, 's' },
                { "metric", required_argument, NULL, 'm' },
                { "source", required_argument, NULL, ARG_SOURCE },
                { "since", required_argument, NULL, ARG_SINCE },
                { "until", required_argument, NULL, ARG_UNTIL },
                { "limit", required_argument, NULL, 'n' },
                { "latest", no_argument, NULL, ARG_LATEST },
                { "count", no_argument, NULL, ARG_COUNT },
                { "rejects", no_argument, NULL, ARG_REJECTS },
                { "events", no_argument, NULL, ARG_EVENTS },
                { "gaps", no_argument, NULL, ARG_GAPS },
                { "upstream", no_argument, NULL, ARG_UPSTREAM },
                { "format", required_argument, NULL, 'o' },
                { "utc", no_argument, NULL, ARG_UTC },
                { "flag", required_argument, NULL, ARG_FLAG },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        int64_t now = wall_clock_ms();
        unsigned n_modes = 0;
        int c, r;

        *a = (QueryArgs){ .filter = STORE_FILTER_ALL, .mode = MODE_READINGS, .format = FORMAT_TABLE };
        optind = 0; /* also resets getopt's state: query_main may run more than once per process */
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":c:s:m:n:o:h", options, NULL)) >= 0)
                switch (c) {
                case ARG_DB:
                        a->db = optarg;
                        break;
                case 'c':
                        a->config = optarg;
                        break;
                case 's':
                case 'm':
                case ARG_SOURCE:
                case ARG_SINCE:
                case ARG_UNTIL:
                case 'n':
                        r = parse_filter_option(c, optarg, now, &a->filter);
                        if (r < 0)
                                return r;
                        break;
                case ARG_LATEST:
                case ARG_COUNT:
                case ARG_REJECTS:
                case ARG_UPSTREAM:
                        a->mode = c == ARG_LATEST ? MODE_LATEST : c == ARG_COUNT ? MODE_COUNT : c == ARG_REJECTS ? MODE_REJECTS : MODE_UPSTREAM;
                        n_modes++;
                        break;
                case ARG_EVENTS:
                case ARG_GAPS:
                        a->mode = c == ARG_EVENTS ? MODE_EVENTS : MODE_GAPS;
                        n_modes++;
                        break;
                case 'o':
                        r = parse_format(optarg, &a->format);
                        if (r < 0)
                                return r;
                        break;
                case ARG_UTC:
                        a->utc = true;
                        break;
                case ARG_FLAG:
                        if (streq(optarg, "unsynced"))
                                a->filter.flags |= READING_FLAG_UNSYNCED;
                        else if (streq(optarg, "corrected"))
                                a->filter.flags |= READING_FLAG_CORRECTED;
                        else if (streq(optarg, "suspect_ts"))
                                a->filter.flags |= READING_FLAG_SUSPECT_TS;
                        else
                                return usage_error("invalid --flag '%s' (unsynced, corrected or suspect_ts)", optarg);
                        break;
                case 'h':
                        help();
                        return 1;
                case ':':
                        return usage_error("option '%s' needs a value", argv[optind - 1]);
                default:
                        return usage_error("unknown option '%s'", argv[optind - 1]);
                }
        if (optind < argc)
                return usage_error("unexpected argument '%s'", argv[optind]);
        return check_args(a, n_modes);
}

static const char *open_error(int r) {
        switch (r) {
        case -ENOENT:
                return "no such file (see --db or --config)";
        case -EMEDIUMTYPE:
                return "not a sensor-collector store";
        case -EBADMSG:
                return "not an SQLite database, so not a sensor-collector store";
        case -EPROTONOSUPPORT:
                return "written by a newer sensor-collector (schema version too new)";
        case -EUCLEAN:
                return "the file is corrupt";
        case -EBUSY:
                return "locked by another process for too long";
        case -EISDIR:
                return "a directory, not a store";
        case -EROFS:
                /* SQLite cannot read a WAL file read-only unless its -wal and -shm files exist
                 * (they do while the daemon runs) or can be created next to it. */
                return "a stopped store can only be read by a user who may write to its directory "
                       "(root or the service user), or while the daemon runs";
        default:
                return strerror(-r);
        }
}

/* The store to read: --db, store.path of --config, else store.path of the default configuration
 * if there is one, else the default path. *ret_path may point into *ret_config (the caller
 * frees it). Returns 0, or the -errno of loading --config after printing its errors. */
static int find_store_path(const QueryArgs *a, Config **ret_config, const char **ret_path) {
        _cleanup_strv_free_ char **errors = NULL;
        int r;

        *ret_path = a->db ? a->db : STORE_DEFAULT_PATH;
        if (!a->db && !a->config) {
                /* Where the daemon writes: store.path of the default configuration, if there
                 * is one; a broken one is the daemon's problem, not a reason to show nothing. */
                r = config_load(CONFIG_DEFAULT_PATH, ret_config, &errors);
                if (r >= 0)
                        *ret_path = (*ret_config)->store.path;
                else if (r != -ENOENT)
                        fprintf(stderr, "sensor-collector query: ignoring '%s' (%s), reading '%s'.\n",
                                CONFIG_DEFAULT_PATH, errors && errors[0] ? errors[0] : strerror(-r), *ret_path);
        } else if (a->config) {
                r = config_load(a->config, ret_config, &errors);
                if (r < 0) {
                        for (char **e = errors; e && *e; e++)
                                fprintf(stderr, "%s\n", *e);
                        if (!errors || !errors[0])
                                fprintf(stderr, "sensor-collector query: cannot load '%s': %s\n", a->config, strerror(-r));
                        return r;
                }
                *ret_path = (*ret_config)->store.path;
        }
        return 0;
}

/* Points o at the columns of a table, or of CSV and JSON. */
static void output_columns(Output *o, size_t n_headers, const char *const *headers, const bool *right,
                           size_t n_keys, const char *const *keys, const bool *json_raw) {
        o->n_columns = o->format == FORMAT_TABLE ? n_headers : n_keys;
        o->headers = headers;
        o->right = right;
        o->keys = keys;
        o->json_raw = json_raw;
}

/* Sets up o for the mode and format of a; returns what its rows are, for "No readings." */
static const char *output_setup(Output *o, const QueryArgs *a) {
        *o = (Output){ .format = a->format, .utc = a->utc };
        switch (a->mode) {
        case MODE_READINGS:
        case MODE_LATEST:
                output_columns(o, ELEMENTSOF(reading_headers), reading_headers, reading_right,
                               ELEMENTSOF(reading_keys), reading_keys, reading_json_raw);
                return "readings";
        case MODE_COUNT:
                output_columns(o, ELEMENTSOF(count_headers), count_headers, count_right,
                               ELEMENTSOF(count_keys), count_keys, count_json_raw);
                return "readings";
        case MODE_EVENTS:
                output_columns(o, ELEMENTSOF(event_headers), event_headers, event_right,
                               ELEMENTSOF(event_keys), event_keys, event_json_raw);
                return "events";
        case MODE_GAPS:
                output_columns(o, ELEMENTSOF(gap_headers), gap_headers, gap_right,
                               ELEMENTSOF(gap_keys), gap_keys, gap_json_raw);
                return "gaps";
        case MODE_REJECTS:
        default:
                output_columns(o, ELEMENTSOF(reject_headers), reject_headers, reject_right,
                               ELEMENTSOF(reject_keys), reject_keys, reject_json_raw);
                return "rejects";
        }
}

/* Walks the rows of the mode of a into o. Returns 0 or -errno. */
static int query_walk(StoreReader *reader, const QueryArgs *a, Output *o) {
        switch (a->mode) {
        case MODE_READINGS:
                return store_reader_readings(reader, &a->filter, on_reading, o);
        case MODE_LATEST:
                return store_reader_latest(reader, &a->filter, on_reading, o);
        case MODE_COUNT:
                return store_reader_counts(reader, &a->filter, on_count, o);
        case MODE_EVENTS:
                return store_reader_events(reader, &a->filter, on_event, o);
        case MODE_GAPS:
                return store_reader_gaps(reader, &a->filter, on_gap, o);
        case MODE_REJECTS:
        default:
                return store_reader_rejects(reader, &a->filter, on_reject, o);
        }
}

/* --upstream: a few lines (or one JSON object) about forwarding. Returns the exit status. */
static int query_upstream(StoreReader *reader, const QueryArgs *a, const char *path) {
        StoredUpstream u;
        int r;

        r = store_reader_upstream(reader, &u);
        if (r < 0) {
                fprintf(stderr, "sensor-collector query: reading '%s' failed: %s\n", path, open_error(r));
                return EXIT_STATUS_UNEXPECTED;
        }
        if (a->format == FORMAT_JSON)
                printf("{\"store_id\":\"%s\",\"last_seq\":%" PRId64 ",\"acknowledged\":\"%s\",\"backlog\":%" PRIu64
                       ",\"oldest_ts\":%" PRId64 ",\"oldest_received\":%" PRId64 ",\"removed_unforwarded\":%" PRIu64 "}\n",
                       u.store_id, u.last_seq, u.acked, u.backlog, u.oldest_ts_ms, u.oldest_received_ms, u.lost);
        else {
                printf("store id:             %s\n", u.store_id[0] ? u.store_id : "(none: schema before v3)");
                printf("last seq:             %" PRId64 "\n", u.last_seq);
                printf("acknowledged:         %s\n", u.acked[0] ? u.acked : "(nothing yet)");
                printf("backlog:              %" PRIu64 " readings\n", u.backlog);
                if (u.oldest_received_ms > 0) {
                        int64_t age = MAX(wall_clock_ms() - u.oldest_received_ms, (int64_t) 0);
                        char span[32];

                        printf("oldest not forwarded: received %s ago\n",
                               format_timespan(span, sizeof(span), (uint64_t) age * USEC_PER_MSEC));
                }
                printf("removed unforwarded:  %" PRIu64 "\n", u.lost);
        }
        return fflush(stdout) == 0 ? EXIT_STATUS_OK : EXIT_STATUS_UNEXPECTED;
}

int query_main(int argc, char **argv) {
        _cleanup_(store_reader_freep) StoreReader *reader = NULL;
        _cleanup_(config_freep) Config *config = NULL;
        const char *path, *what;
        Output out;
        QueryArgs a;
        int r;

        r = parse_args(argc, argv, &a);
        if (r != 0)
                return r > 0 ? EXIT_STATUS_OK : EXIT_STATUS_USAGE;
        r = find_store_path(&a, &config, &path);
        if (r < 0)
                return r == -EINVAL ? EXIT_STATUS_CONFIG : EXIT_STATUS_UNEXPECTED;

        r = store_reader_open(path, &reader);
        if (r < 0) {
                fprintf(stderr, "sensor-collector query: cannot read '%s': %s\n", path, open_error(r));
                return EXIT_STATUS_UNEXPECTED;
        }

        if (a.mode == MODE_UPSTREAM)
                return query_upstream(reader, &a, path);
        what = output_setup(&out, &a);
        r = query_walk(reader, &a, &out);
        output_finish(&out, what);
        if (fflush(stdout) != 0 || ferror(stdout)) {
                fprintf(stderr, "sensor-collector query: cannot write the output: %m\n");
                return EXIT_STATUS_UNEXPECTED;
        }
        if (r < 0) {
                fprintf(stderr, "sensor-collector query: reading '%s' failed: %s\n", path, open_error(r));
                return EXIT_STATUS_UNEXPECTED;
        }
        return EXIT_STATUS_OK;
}
