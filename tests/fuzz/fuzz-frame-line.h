/* SPDX-License-Identifier: MIT */
/* The serial-line fuzz target's body, shared by the json and kv targets: FORMAT picks the parser. */
#pragma once

#include <stdio.h>

#include "fuzz-frame-check.h"

#ifndef FORMAT
#error "define FORMAT (a FrameFormat) before including fuzz-frame-line.h"
#endif

typedef struct Collected {
        FrameChecksum checksum;
        LineEnd line_end;
        size_t max;
        char *out;                    /* every line as <size><kind><bytes>, to compare */
        size_t len, alloc;
} Collected;

static void record(Collected *c, const char *line, size_t size, char kind) {
        if (c->len + size + sizeof(size) + 1 > c->alloc) {
                c->alloc = (c->len + size + sizeof(size) + 1) * 2;
                c->out = realloc(c->out, c->alloc);
                if (!c->out)
                        abort();
        }
        memcpy(c->out + c->len, &size, sizeof(size));
        c->len += sizeof(size);
        c->out[c->len++] = kind;
        memcpy(c->out + c->len, line, size);
        c->len += size;
}

static void on_line(Collected *c, const char *line, size_t size, bool overlong) {
        FrameReject reason;
        Frame f;

        /* no line end inside a line: lf lets a lone '\r' through, cr a lone '\n' */
        if (size > c->max || (overlong && size != c->max) ||
            (c->line_end != LINE_END_CR && memchr(line, '\n', size)) ||
            (c->line_end != LINE_END_LF && memchr(line, '\r', size)))
                abort();
        if (!overlong)
                fuzz_check_frame(frame_parse_line(FORMAT, c->checksum, line, size, &f, &reason), &f, reason);
        record(c, line, size, overlong ? 'o' : 'l');
}

/* One chunk through the pull form: every line it completes, then used up. */
static void pull(LineBuffer *lb, const uint8_t *data, size_t size, Collected *c) {
        const char *line, *chunk = (const char *) data;
        size_t n;
        bool overlong;
        int r;

        line_buffer_put(lb, data, size);
        while ((r = line_buffer_next(lb, &line, &n, &overlong)) > 0) {
                /* borrowed from the chunk (no copy) or from the buffer, nowhere else */
                if (!(line >= chunk && line + n <= chunk + size) && !(line >= lb->buf && line + n <= lb->buf + lb->max + 1))
                        abort();
                on_line(c, line, n, overlong);
        }
        if (r != 0 || lb->len > lb->max + 1 || line_buffer_next(lb, &line, &n, &overlong) != 0)
                abort();
}

/* The partial line left at the end counts too (the serial task stores it as truncated). */
static void add_pending(const LineBuffer *lb, Collected *c) {
        const char *line;
        size_t size;

        if (line_buffer_pending(lb, &line, &size)) {
                if (size == 0 || size > c->max)
                        abort();
                record(c, line, size, 'p');
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Collected whole = {}, chunked = {};
        LineBuffer lb;
        FrameReject reason;
        Frame f;
        size_t i = 0;
        unsigned step;

        if (size < 2)
                return 0;
        /* first byte: bit 0 picks the checksum, the rest the line limit and the chunk sizes;
         * second byte: what ends a line */
        whole.checksum = chunked.checksum = data[0] & 1 ? FRAME_CHECKSUM_NMEA : FRAME_CHECKSUM_NONE;
        whole.max = chunked.max = 8 + (data[0] >> 1) * 4;
        step = 1 + (data[0] >> 4);
        whole.line_end = chunked.line_end = (LineEnd) (data[1] % _LINE_END_MAX);
        data += 2;
        size -= 2;

        fuzz_check_frame(frame_parse_line(FORMAT, whole.checksum, (const char *) data, size, &f, &reason), &f, reason);

        /* the same bytes as a stream, whole and in chunks: the same lines */
        if (line_buffer_init(&lb, whole.max, whole.line_end) < 0)
                abort();
        pull(&lb, data, size, &whole);
        add_pending(&lb, &whole);
        line_buffer_reset(&lb);
        while (i < size) {
                size_t n = MIN(size - i, (size_t) step + (data[i] & 7));
                pull(&lb, data + i, n, &chunked);
                i += n;
        }
        add_pending(&lb, &chunked);
        line_buffer_done(&lb);
        if (whole.len != chunked.len || (whole.len > 0 && memcmp(whole.out, chunked.out, whole.len) != 0))
                abort();
        free(whole.out);
        free(chunked.out);
        return 0;
}
