/* SPDX-License-Identifier: MIT */
/* Unit tests for the upstream acknowledgement bookkeeping: scripts of sends and out-of-order answers, and the done set they leave. */
#include <check.h>
#include <stdio.h>

#include "collector/upstream-window.h"
#include "testlib.h"

static char *fmt(const UpstreamWindow *w) {
        char *s = NULL;

        ck_assert_int_eq(upstream_window_format(w, &s), 0);
        return s;
}

#define ASSERT_DONE(w, want)                                  \
        do {                                                  \
                _cleanup_free_ char *_s = fmt(w);             \
                ck_assert_str_eq(_s, want);                   \
        } while (0)

/* Marking ranges done in any order: the text after each step. */
static const struct {
        int64_t lo, hi;
        const char *want;
} mark_script[] = {
        { 5, 5, "0 5-5" },
        { 7, 9, "0 5-5 7-9" },
        { 6, 6, "0 5-9" },           /* fills the hole: one range */
        { 1, 3, "3 5-9" },           /* touches the cursor: moves it */
        { 4, 4, "9" },               /* absorbs the range above */
        { 2, 8, "9" },               /* below the cursor: nothing */
        { 20, 30, "9 20-30" },
        { 12, 14, "9 12-14 20-30" },
        { 11, 31, "9 11-31" },       /* covers both and more */
        { 10, 10, "31" },
        { 40, 40, "31 40-40" },
        { 41, 41, "31 40-41" },      /* adjacent above: merged */
        { 39, 39, "31 39-41" },      /* adjacent below: merged */
};

START_TEST(test_mark_done) {
        UpstreamWindow w;

        upstream_window_init(&w);
        for (size_t i = 0; i < ELEMENTSOF(mark_script); i++) {
                ck_assert_int_eq(upstream_window_mark_done(&w, mark_script[i].lo, mark_script[i].hi), 0);
                ASSERT_DONE(&w, mark_script[i].want);
        }
        ck_assert(upstream_window_is_done(&w, 31));
        ck_assert(!upstream_window_is_done(&w, 32));
        ck_assert(upstream_window_is_done(&w, 40));
        upstream_window_clear(&w);
}
END_TEST

/* Acknowledgements out of order: the cursor moves only over what is contiguous, and an unknown
 * or repeated mid changes nothing. */
START_TEST(test_out_of_order_acks) {
        UpstreamWindow w;
        UpstreamFlight f;

        upstream_window_init(&w);
        upstream_window_connect(&w, 0);
        for (int i = 1; i <= 5; i++)
                ck_assert_int_eq(upstream_window_add_flight(&w, i, i, i, true), 0);
        ck_assert_int_eq(upstream_window_add_flight(&w, 3, 9, 9, true), -EEXIST);
        ck_assert_int_eq(upstream_window_settle(&w, 4, true, &f), 1);
        ck_assert_int_eq(f.lo, 4);
        ASSERT_DONE(&w, "0 4-4");
        ck_assert_int_eq(upstream_window_settle(&w, 2, true, NULL), 1);
        ASSERT_DONE(&w, "0 2-2 4-4");
        ck_assert_int_eq(upstream_window_settle(&w, 2, true, NULL), 0);
        ck_assert_int_eq(upstream_window_settle(&w, 99, true, NULL), 0);
        ck_assert_int_eq(upstream_window_settle(&w, 1, true, NULL), 1);
        ASSERT_DONE(&w, "2 4-4");
        /* Not done (a transient refusal): it stays pending. */
        ck_assert_int_eq(upstream_window_settle(&w, 3, false, NULL), 1);
        ASSERT_DONE(&w, "2 4-4");
        ck_assert_int_eq(upstream_window_settle(&w, 5, true, NULL), 1);
        ASSERT_DONE(&w, "2 4-5");
        ck_assert_uint_eq(w.n_flights, 0);
        ck_assert_int_eq(upstream_window_pending(&w, 5), 1);
        upstream_window_clear(&w);
}
END_TEST

/* A disconnect forgets the flights: their readings are pending again, and the next
 * connection drains them from the cursor, skipping what was done. */
START_TEST(test_reconnect_drain) {
        UpstreamWindow w;
        int64_t after, before;

        upstream_window_init(&w);
        ck_assert_int_eq(upstream_window_load(&w, "10 15-20 30-30"), 0);
        upstream_window_connect(&w, 40);
        ck_assert(!upstream_window_next_live(&w, 40, &after));
        ck_assert(upstream_window_next_live(&w, 42, &after));
        ck_assert_int_eq(after, 40);

        ck_assert(upstream_window_next_drain(&w, &after, &before));
        ck_assert_int_eq(after, 10);
        ck_assert_int_eq(before, 15);
        ck_assert_int_eq(upstream_window_add_flight(&w, 1, 11, 14, false), 0);
        upstream_window_drained(&w, 14);
        ck_assert(upstream_window_next_drain(&w, &after, &before));
        ck_assert_int_eq(after, 20);
        ck_assert_int_eq(before, 30);
        ck_assert_int_eq(upstream_window_add_flight(&w, 2, 21, 29, false), 0);
        upstream_window_drained(&w, 29);
        ck_assert(upstream_window_next_drain(&w, &after, &before));
        ck_assert_int_eq(after, 30);
        ck_assert_int_eq(before, 41);
        upstream_window_drained(&w, 40);
        ck_assert(!upstream_window_next_drain(&w, &after, &before));

        upstream_window_disconnect(&w);
        ck_assert_uint_eq(w.n_flights, 0);
        ck_assert(!upstream_window_next_drain(&w, &after, &before));
        upstream_window_connect(&w, 45);
        ck_assert(upstream_window_next_drain(&w, &after, &before));
        ck_assert_int_eq(after, 10); /* flight 1 was never answered: sent again */
        ck_assert_int_eq(before, 15);
        upstream_window_clear(&w);
}
END_TEST

/* Live readings keep a quarter of the window (at least one slot). */
static const struct {
        unsigned limit, live_flights, backlog_flights;
        bool live_pending, want;
} drain_table[] = {
        { 20, 0, 0, false, true },
        { 20, 0, 14, false, true },
        { 20, 0, 15, false, false },   /* 5 slots kept for live readings */
        { 20, 5, 14, true, true },
        { 20, 6, 14, true, false },    /* full */
        { 10, 0, 7, false, true },
        { 10, 0, 8, false, false },    /* a quarter of 10 is 2 */
        { 2, 0, 0, true, true },
        { 2, 0, 1, false, false },     /* one slot always for live */
        { 1, 0, 0, false, true },
        { 1, 0, 0, true, false },      /* one slot: live first */
};

START_TEST(test_may_drain) {
        for (size_t i = 0; i < ELEMENTSOF(drain_table); i++) {
                UpstreamWindow w;
                int mid = 1;

                upstream_window_init(&w);
                upstream_window_connect(&w, 0);
                for (unsigned k = 0; k < drain_table[i].live_flights; k++, mid++)
                        ck_assert_int_eq(upstream_window_add_flight(&w, mid, mid, mid, true), 0);
                for (unsigned k = 0; k < drain_table[i].backlog_flights; k++, mid++)
                        ck_assert_int_eq(upstream_window_add_flight(&w, mid, mid, mid, false), 0);
                ck_assert_msg(upstream_window_may_drain(&w, drain_table[i].limit, drain_table[i].live_pending) ==
                                      drain_table[i].want,
                              "row %zu", i);
                upstream_window_clear(&w);
        }
}
END_TEST

static const struct {
        const char *text;
        int want;
} load_table[] = {
        { "0", 0 },
        { "12 14-15 20-22", 0 },
        { "", -EBADMSG },
        { "x", -EBADMSG },
        { "-1", -EBADMSG },
        { "5 6-7", -EBADMSG },       /* touches the cursor: never written like that */
        { "5 9-8", -EBADMSG },
        { "5 8-9 9-10", -EBADMSG },  /* overlapping */
        { "5 8-9 10-11", -EBADMSG }, /* adjacent */
        { "5 8-9 ", -EBADMSG },
        { "5 8", -EBADMSG },
};

START_TEST(test_load) {
        for (size_t i = 0; i < ELEMENTSOF(load_table); i++) {
                UpstreamWindow w;

                upstream_window_init(&w);
                ck_assert_int_eq(upstream_window_mark_done(&w, 1, 3), 0);
                ck_assert_msg(upstream_window_load(&w, load_table[i].text) == load_table[i].want, "'%s'",
                              load_table[i].text);
                if (load_table[i].want == 0)
                        ASSERT_DONE(&w, load_table[i].text);
                else
                        ASSERT_DONE(&w, "3"); /* unchanged */
                upstream_window_clear(&w);
        }
}
END_TEST

/* What retention would remove unforwarded: the gaps of the done set. */
START_TEST(test_gaps) {
        UpstreamWindow w;
        SeqRange g;
        int64_t from = 0;
        int64_t want[][2] = { { 4, 5 }, { 8, 9 }, { 13, 15 } };
        size_t n = 0;

        upstream_window_init(&w);
        ck_assert_int_eq(upstream_window_load(&w, "3 6-7 10-12 20-25"), 0);
        while (upstream_window_next_gap(&w, from, 15, &g)) {
                ck_assert_uint_lt(n, ELEMENTSOF(want));
                ck_assert_int_eq(g.lo, want[n][0]);
                ck_assert_int_eq(g.hi, want[n][1]);
                from = g.hi;
                n++;
        }
        ck_assert_uint_eq(n, ELEMENTSOF(want));
        ck_assert(!upstream_window_next_gap(&w, 0, 3, &g));
        ck_assert_int_eq(upstream_window_pending(&w, 30), 30 - 3 - 2 - 3 - 6);
        ck_assert_int_eq(upstream_window_mark_done(&w, 0, 22), 0);
        ASSERT_DONE(&w, "25");
        upstream_window_clear(&w);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("upstream-window");
        TCase *tc = tcase_create("core");

        tcase_add_test(tc, test_mark_done);
        tcase_add_test(tc, test_out_of_order_acks);
        tcase_add_test(tc, test_reconnect_drain);
        tcase_add_test(tc, test_may_drain);
        tcase_add_test(tc, test_load);
        tcase_add_test(tc, test_gaps);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(suite());
}
