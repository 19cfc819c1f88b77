/* SPDX-License-Identifier: MIT */
/* The acknowledgement bookkeeping of upstream forwarding: pure, table-tested in test-upstream-window.c. */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>

#include "collector/upstream-window.h"

void upstream_window_init(UpstreamWindow *w) {
        *w = (UpstreamWindow) {};
}

void upstream_window_clear(UpstreamWindow *w) {
        free(w->done);
        free(w->flights);
        upstream_window_init(w);
}

/* Absorbs the done ranges that now touch the cursor. */
static void window_advance(UpstreamWindow *w) {
        size_t k = 0;

        while (k < w->n_done && w->done[k].lo <= w->cursor + 1) {
                w->cursor = MAX(w->cursor, w->done[k].hi);
                k++;
        }
        if (k > 0) {
                memmove(w->done, w->done + k, (w->n_done - k) * sizeof(SeqRange));
                w->n_done -= k;
        }
}

int upstream_window_mark_done(UpstreamWindow *w, int64_t lo, int64_t hi) {
        size_t i, j;

        assert(w);
        lo = MAX(lo, w->cursor + 1);
        if (lo > hi)
                return 0;
        if (lo == w->cursor + 1) {
                w->cursor = hi;
                window_advance(w);
                return 0;
        }
        /* First range that ends at or after lo - 1 (may merge), and the first that starts after
         * hi + 1 (may not). */
        for (i = 0; i < w->n_done && w->done[i].hi < lo - 1; i++)
                ;
        for (j = i; j < w->n_done && w->done[j].lo <= hi + 1; j++)
                ;
        if (i == j) {
                if (w->n_done == w->cap_done) {
                        size_t cap = MAX(w->cap_done * 2, (size_t) 8);
                        SeqRange *n = realloc(w->done, cap * sizeof(SeqRange));

                        if (!n)
                                return -ENOMEM;
                        w->done = n;
                        w->cap_done = cap;
                }
                memmove(w->done + i + 1, w->done + i, (w->n_done - i) * sizeof(SeqRange));
                w->done[i] = (SeqRange) { lo, hi };
                w->n_done++;
                return 0;
        }
        /* Ranges i..j-1 overlap or touch: one range covers them all. */
        w->done[i].lo = MIN(w->done[i].lo, lo);
        w->done[i].hi = MAX(w->done[j - 1].hi, hi);
        memmove(w->done + i + 1, w->done + j, (w->n_done - j) * sizeof(SeqRange));
        w->n_done -= j - i - 1;
        return 0;
}

bool upstream_window_is_done(const UpstreamWindow *w, int64_t seq) {
        if (seq <= w->cursor)
                return true;
        for (size_t i = 0; i < w->n_done && w->done[i].lo <= seq; i++)
                if (seq <= w->done[i].hi)
                        return true;
        return false;
}

int upstream_window_load(UpstreamWindow *w, const char *text) {
        UpstreamWindow n = {};
        const char *p = text;
        char *end;
        long long v;

        assert(w && text);
        errno = 0;
        v = strtoll(p, &end, 10);
        if (end == p || errno != 0 || v < 0)
                return -EBADMSG;
        n.cursor = v;
        p = end;
        while (*p == ' ') {
                long long lo, hi;

                p++;
                lo = strtoll(p, &end, 10);
                if (end == p || *end != '-' || errno != 0)
                        goto bad;
                p = end + 1;
                hi = strtoll(p, &end, 10);
                if (end == p || errno != 0 || lo > hi || lo <= n.cursor + 1 ||
                    (n.n_done > 0 && lo <= n.done[n.n_done - 1].hi + 1))
                        goto bad;
                p = end;
                if (upstream_window_mark_done(&n, lo, hi) < 0) {
                        upstream_window_clear(&n);
                        return -ENOMEM;
                }
        }
        if (*p != 0)
                goto bad;
        free(w->done);
        w->done = n.done;
        w->n_done = n.n_done;
        w->cap_done = n.cap_done;
        w->cursor = n.cursor;
        return 0;
bad:
        upstream_window_clear(&n);
        return -EBADMSG;
}

int upstream_window_format(const UpstreamWindow *w, char **ret) {
        size_t size = 24 + w->n_done * 42, len;
        char *s;

        s = malloc(size);
        if (!s)
                return -ENOMEM;
        len = (size_t) snprintf(s, size, "%" PRId64, w->cursor);
        for (size_t i = 0; i < w->n_done; i++)
                len += (size_t) snprintf(s + len, size - len, " %" PRId64 "-%" PRId64, w->done[i].lo, w->done[i].hi);
        *ret = s;
        return 0;
}

void upstream_window_connect(UpstreamWindow *w, int64_t committed) {
        assert(w->n_flights == 0);
        w->connected = true;
        w->boundary = committed;
        w->live_pos = committed;
        w->drain_pos = w->cursor;
}

void upstream_window_disconnect(UpstreamWindow *w) {
        w->connected = false;
        w->n_flights = 0;
        w->n_live_flights = 0;
}

int upstream_window_add_flight(UpstreamWindow *w, int mid, int64_t lo, int64_t hi, bool live) {
        for (size_t i = 0; i < w->n_flights; i++)
                if (w->flights[i].mid == mid)
                        return -EEXIST;
        if (w->n_flights == w->cap_flights) {
                size_t cap = MAX(w->cap_flights * 2, (size_t) 16);
                UpstreamFlight *n = realloc(w->flights, cap * sizeof(UpstreamFlight));

                if (!n)
                        return -ENOMEM;
                w->flights = n;
                w->cap_flights = cap;
        }
        w->flights[w->n_flights++] = (UpstreamFlight) { .mid = mid, .lo = lo, .hi = hi, .live = live };
        if (live)
                w->n_live_flights++;
        return 0;
}

int upstream_window_settle(UpstreamWindow *w, int mid, bool done, UpstreamFlight *ret) {
        UpstreamFlight f;
        size_t i;
        int r;

        for (i = 0; i < w->n_flights; i++)
                if (w->flights[i].mid == mid)
                        break;
        if (i == w->n_flights)
                return 0;
        f = w->flights[i];
        if (done) {
                r = upstream_window_mark_done(w, f.lo, f.hi);
                if (r < 0)
                        return r;
        }
        w->flights[i] = w->flights[--w->n_flights];
        if (f.live)
                w->n_live_flights--;
        if (ret)
                *ret = f;
        return 1;
}

bool upstream_window_next_live(const UpstreamWindow *w, int64_t committed, int64_t *ret_after) {
        int64_t from = MAX(w->live_pos, w->cursor);

        if (!w->connected || from >= committed)
                return false;
        *ret_after = from;
        return true;
}

void upstream_window_sent_live(UpstreamWindow *w, int64_t seq) {
        w->live_pos = MAX(w->live_pos, seq);
}

bool upstream_window_next_drain(UpstreamWindow *w, int64_t *ret_after, int64_t *ret_before) {
        int64_t start = MAX(w->drain_pos, w->cursor), before = w->boundary + 1;

        if (!w->connected)
                return false;
        for (size_t i = 0; i < w->n_done; i++) {
                if (w->done[i].hi <= start)
                        continue;
                if (w->done[i].lo <= start + 1) {
                        start = w->done[i].hi; /* inside or right at a done range: skip it */
                        continue;
                }
                before = MIN(before, w->done[i].lo);
                break;
        }
        w->drain_pos = start;
        if (start + 1 >= before)
                return false;
        *ret_after = start;
        *ret_before = before;
        return true;
}

void upstream_window_drained(UpstreamWindow *w, int64_t seq) {
        w->drain_pos = MAX(w->drain_pos, seq);
}

bool upstream_window_may_drain(const UpstreamWindow *w, unsigned limit, bool live_pending) {
        size_t reserve = limit >= 2 ? MAX((size_t) 1, (size_t) limit / 4) : 0;
        size_t backlog = w->n_flights - w->n_live_flights;

        if (!w->connected || w->n_flights >= limit)
                return false;
        if (limit < 2)
                return !live_pending;
        return backlog + reserve < limit;
}

int64_t upstream_window_pending(const UpstreamWindow *w, int64_t committed) {
        int64_t n = committed - w->cursor;

        for (size_t i = 0; i < w->n_done && w->done[i].lo <= committed; i++)
                n -= MIN(w->done[i].hi, committed) - w->done[i].lo + 1;
        return MAX(n, (int64_t) 0);
}

bool upstream_window_next_gap(const UpstreamWindow *w, int64_t from, int64_t upto, SeqRange *ret) {
        int64_t lo = MAX(from, w->cursor) + 1;

        for (size_t i = 0; i < w->n_done; i++) {
                if (w->done[i].hi < lo)
                        continue;
                if (w->done[i].lo <= lo) {
                        lo = w->done[i].hi + 1;
                        continue;
                }
                if (lo > upto)
                        return false;
                *ret = (SeqRange) { lo, MIN(w->done[i].lo - 1, upto) };
                return true;
        }
        if (lo > upto)
                return false;
        *ret = (SeqRange) { lo, upto };
        return true;
}
