/* SPDX-License-Identifier: MIT */
/* Unit tests for the memory of a persistent MQTT session: sets of filters, their stored form, the
 * plan after CONNACK, and what a broker's CONNACK refusal means. */
#include <check.h>
#include <string.h>

#include "collector/macro.h"
#include "collector/mqtt-connack.h"
#include "collector/mqtt-session.h"
#include "testlib.h"

#define FILTERS_MAX 8

/* A set from a NULL-terminated list. */
static void set_of(SessionFilters *s, const char *const *list) {
        session_filters_done(s);
        for (size_t i = 0; list[i]; i++)
                ck_assert_int_eq(session_filters_add(s, list[i]), 0);
}

static void assert_set(const SessionFilters *s, const char *const *list) {
        size_t n = 0;

        for (; list[n]; n++)
                ck_assert_msg(session_filters_contains(s, list[n]), "'%s' missing", list[n]);
        ck_assert_uint_eq(s->n, n);
}

START_TEST(test_set) {
        _cleanup_(session_filters_done) SessionFilters a = {}, b = {};

        ck_assert_int_eq(session_filters_add(&a, "gh/+/t"), 0);
        ck_assert_int_eq(session_filters_add(&a, "gh/+/t"), 0); /* a set: once */
        ck_assert_int_eq(session_filters_add(&a, "x/#"), 0);
        ck_assert_uint_eq(a.n, 2);
        set_of(&b, (const char *const[]){ "x/#", "gh/+/t", NULL });
        ck_assert(session_filters_equal(&a, &b)); /* in any order */
        ck_assert_int_eq(session_filters_add(&b, "y"), 0);
        ck_assert(!session_filters_equal(&a, &b));
        ck_assert(!session_filters_equal(&b, &a));
        ck_assert_int_eq(session_filters_copy(&a, &b), 0);
        ck_assert(session_filters_equal(&a, &b));
        ck_assert_ptr_ne(a.v[0], b.v[0]); /* copies */
        session_filters_done(&a);
        session_filters_done(&a); /* twice is fine */
        ck_assert_uint_eq(a.n, 0);
}
END_TEST

static const struct {
        const char *data;
        size_t size;
        const char *filters[FILTERS_MAX];
} decode_cases[] = {
        { "", 0, { NULL } },                              /* nothing stored */
        { "\0", 1, { NULL } },                            /* an empty set */
        { "a/b\0", 4, { "a/b", NULL } },
        { "a/b\0c/#\0", 8, { "a/b", "c/#", NULL } },
        { "a/b\0c/#", 7, { "a/b", NULL } },               /* torn: the unterminated tail is not a filter */
        { "a\0\0b\0", 5, { "a", "b", NULL } },            /* empty strings skipped */
        { "a\0a\0", 4, { "a", NULL } },                   /* a set */
};

START_TEST(test_decode) {
        _cleanup_(session_filters_done) SessionFilters s = {};

        ck_assert_int_eq(session_filters_add(&s, "replaced"), 0);
        ck_assert_int_eq(session_filters_decode(decode_cases[_i].data, decode_cases[_i].size, &s), 0);
        assert_set(&s, decode_cases[_i].filters);
}
END_TEST

START_TEST(test_round_trip) {
        _cleanup_(session_filters_done) SessionFilters s = {}, back = {}, empty = {};
        _cleanup_free_ char *blob = NULL, *blob2 = NULL;
        size_t size = 0;

        set_of(&s, (const char *const[]){ "gh/+/+", "sensors/#", "\xc3\xa9t\xc3\xa9", NULL });
        ck_assert_int_eq(session_filters_encode(&s, &blob, &size), 0);
        ck_assert_uint_eq(size, strlen("gh/+/+") + strlen("sensors/#") + strlen("\xc3\xa9t\xc3\xa9") + 3);
        ck_assert_int_eq(session_filters_decode(blob, size, &back), 0);
        ck_assert(session_filters_equal(&s, &back));

        /* An empty set is stored as one NUL byte, and reads back empty. */
        ck_assert_int_eq(session_filters_encode(&empty, &blob2, &size), 0);
        ck_assert_uint_eq(size, 1);
        ck_assert_int_eq(blob2[0], 0);
        ck_assert_int_eq(session_filters_decode(blob2, size, &back), 0);
        ck_assert_uint_eq(back.n, 0);
}
END_TEST

static const struct {
        const char *remembered[FILTERS_MAX];
        const char *configured[FILTERS_MAX];
        bool session_present;
        const char *stale[FILTERS_MAX];
        const char *remember[FILTERS_MAX];
} plan_cases[] = {
        /* First run: nothing remembered. */
        { { NULL }, { "a/#", NULL }, false, { NULL }, { "a/#", NULL } },
        { { NULL }, { "a/#", NULL }, true, { NULL }, { "a/#", NULL } },
        /* Same configuration. */
        { { "a/#", NULL }, { "a/#", NULL }, true, { NULL }, { "a/#", NULL } },
        /* A filter removed from the configuration, the session kept: it is stale, and
         * remembered until its UNSUBACK (written before the UNSUBSCRIBE goes out). */
        { { "a/#", "old/+", NULL }, { "a/#", NULL }, true, { "old/+", NULL }, { "a/#", "old/+", NULL } },
        /* The same with a new session: the broker has nothing to unsubscribe. */
        { { "a/#", "old/+", NULL }, { "a/#", NULL }, false, { NULL }, { "a/#", NULL } },
        /* Everything replaced. */
        { { "x", "y", NULL }, { "z", NULL }, true, { "x", "y", NULL }, { "z", "x", "y", NULL } },
        /* Nothing configured (MQTT off would not get here, but the plan holds). */
        { { "x", NULL }, { NULL }, true, { "x", NULL }, { "x", NULL } },
};

START_TEST(test_plan) {
        _cleanup_(session_filters_done) SessionFilters remembered = {}, configured = {}, stale = {}, remember = {};

        set_of(&remembered, plan_cases[_i].remembered);
        set_of(&configured, plan_cases[_i].configured);
        ck_assert_int_eq(session_filters_add(&stale, "replaced"), 0);
        ck_assert_int_eq(session_filters_plan(&remembered, &configured, plan_cases[_i].session_present, &stale,
                                              &remember),
                         0);
        assert_set(&stale, plan_cases[_i].stale);
        assert_set(&remember, plan_cases[_i].remember);
}
END_TEST

static const struct {
        const char *a[FILTERS_MAX];
        const char *b[FILTERS_MAX];
        const char *difference[FILTERS_MAX];
} subtract_cases[] = {
        { { NULL }, { NULL }, { NULL } },
        { { "a", "b", NULL }, { NULL }, { "a", "b", NULL } },
        { { "a", "b", NULL }, { "b", NULL }, { "a", NULL } },
        { { "a", "b", NULL }, { "c", "a", "b", NULL }, { NULL } },
        { { NULL }, { "a", NULL }, { NULL } },
};

START_TEST(test_subtract) {
        _cleanup_(session_filters_done) SessionFilters a = {}, b = {}, d = {};

        set_of(&a, subtract_cases[_i].a);
        set_of(&b, subtract_cases[_i].b);
        ck_assert_int_eq(session_filters_add(&d, "replaced"), 0);
        ck_assert_int_eq(session_filters_subtract(&a, &b, &d), 0);
        assert_set(&d, subtract_cases[_i].difference);
        /* Removing b's filters one by one gives the same. */
        for (size_t i = 0; i < b.n; i++)
                (void) session_filters_remove(&a, b.v[i]);
        ck_assert(session_filters_equal(&a, &d));
}
END_TEST

START_TEST(test_remove) {
        _cleanup_(session_filters_done) SessionFilters s = {};

        set_of(&s, (const char *const[]){ "a", "b", "c", NULL });
        ck_assert(session_filters_remove(&s, "a"));
        ck_assert(!session_filters_remove(&s, "a"));
        assert_set(&s, (const char *const[]){ "b", "c", NULL });
        ck_assert(session_filters_remove(&s, "c"));
        ck_assert(session_filters_remove(&s, "b"));
        ck_assert_uint_eq(s.n, 0);
        ck_assert(!session_filters_remove(&s, "b"));
}
END_TEST

/* A refused SUBSCRIBE: forget the filter unless an earlier SUBACK granted it (then the broker may
 * still hold that subscription, and a later configuration must unsubscribe it). */
static const struct {
        const char *known_before[FILTERS_MAX];
        const char *filter;
        bool forget;
} refused_cases[] = {
        { { NULL }, "denied/+", true },                  /* new session, or nothing remembered */
        { { "gh/+/+", NULL }, "denied/+", true },        /* added by this configuration */
        { { "gh/+/+", "denied/+", NULL }, "denied/+", false }, /* granted in an earlier run */
};

START_TEST(test_forget_refused) {
        _cleanup_(session_filters_done) SessionFilters known = {};

        set_of(&known, refused_cases[_i].known_before);
        ck_assert(session_filters_forget_refused(&known, refused_cases[_i].filter) == refused_cases[_i].forget);
}
END_TEST

/* MQTT 3.1.1 CONNACK return codes and MQTT 5 reason codes: give up on what no retry can fix. */
static const struct {
        MqttProtocol protocol;
        int rc;
        bool fatal;
        int error;
} connack_cases[] = {
        { MQTT_PROTOCOL_V311, 1, true, -EPROTONOSUPPORT },  /* unacceptable protocol version */
        { MQTT_PROTOCOL_V311, 2, true, -EINVAL },           /* identifier rejected */
        { MQTT_PROTOCOL_V311, 3, false, -ECONNREFUSED },    /* server unavailable: retry */
        { MQTT_PROTOCOL_V311, 4, true, -EACCES },           /* bad user name or password */
        { MQTT_PROTOCOL_V311, 5, true, -EACCES },           /* not authorized */
        { MQTT_PROTOCOL_V5, 0x80, false, -EPROTO },         /* unspecified error: retry */
        { MQTT_PROTOCOL_V5, 0x81, true, -EPROTO },          /* malformed packet */
        { MQTT_PROTOCOL_V5, 0x84, true, -EPROTONOSUPPORT }, /* unsupported protocol version */
        { MQTT_PROTOCOL_V5, 0x85, true, -EINVAL },          /* client identifier not valid */
        { MQTT_PROTOCOL_V5, 0x86, true, -EACCES },          /* bad user name or password */
        { MQTT_PROTOCOL_V5, 0x87, true, -EACCES },          /* not authorized */
        { MQTT_PROTOCOL_V5, 0x88, false, -ECONNREFUSED },   /* server unavailable: retry */
        { MQTT_PROTOCOL_V5, 0x89, false, -ECONNREFUSED },   /* server busy: retry */
        { MQTT_PROTOCOL_V5, 0x8A, true, -EACCES },          /* banned */
        { MQTT_PROTOCOL_V5, 0x97, false, -EPROTO },         /* quota exceeded: retry */
        { MQTT_PROTOCOL_V5, 0x9C, false, -EPROTO },         /* use another server: retry */
        { MQTT_PROTOCOL_V5, 0x9F, false, -EPROTO },         /* connection rate exceeded: retry */
};

START_TEST(test_connack) {
        ck_assert_msg(mqtt_connack_is_fatal(connack_cases[_i].protocol, connack_cases[_i].rc) == connack_cases[_i].fatal,
                      "rc 0x%x", (unsigned) connack_cases[_i].rc);
        ck_assert_int_eq(mqtt_connack_errno(connack_cases[_i].protocol, connack_cases[_i].rc), connack_cases[_i].error);
}
END_TEST

static Suite *mqtt_session_suite(void) {
        Suite *s = suite_create("mqtt-session");
        TCase *tc = tcase_create("filters");

        tcase_add_test(tc, test_set);
        tcase_add_loop_test(tc, test_decode, 0, ELEMENTSOF(decode_cases));
        tcase_add_test(tc, test_round_trip);
        tcase_add_loop_test(tc, test_plan, 0, ELEMENTSOF(plan_cases));
        tcase_add_loop_test(tc, test_subtract, 0, ELEMENTSOF(subtract_cases));
        tcase_add_test(tc, test_remove);
        tcase_add_loop_test(tc, test_forget_refused, 0, ELEMENTSOF(refused_cases));
        suite_add_tcase(s, tc);

        tc = tcase_create("connack");
        tcase_add_loop_test(tc, test_connack, 0, ELEMENTSOF(connack_cases));
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(mqtt_session_suite());
}
