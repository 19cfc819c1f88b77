/* SPDX-License-Identifier: MIT */
/* Unit tests for the libmosquitto client on the loop: its errors as errno and text, the connect
 * timeout, which hosts are looked up, and the client it makes. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "collector/macro.h"
#include "collector/mqtt-loop.h"
#include "collector/time-util.h"
#include "testlib.h"

static const struct {
        int rc;
        int errno_value;
        int expected;
} errno_cases[] = {
        { MOSQ_ERR_SUCCESS, 0, 0 },
        { MOSQ_ERR_NOMEM, 0, -ENOMEM },
        { MOSQ_ERR_ERRNO, ECONNREFUSED, -ECONNREFUSED }, /* errno right after the call */
        { MOSQ_ERR_ERRNO, EPIPE, -EPIPE },
        { MOSQ_ERR_ERRNO, 0, -EIO },                     /* ERRNO without an errno */
        { MOSQ_ERR_CONN_LOST, EPIPE, -ECONNRESET },      /* errno is only for ERRNO */
        { MOSQ_ERR_NO_CONN, 0, -ENOTCONN },
        { MOSQ_ERR_CONN_REFUSED, 0, -ECONNREFUSED },
        { MOSQ_ERR_KEEPALIVE, 0, -ETIMEDOUT },
        { MOSQ_ERR_TIMEOUT, 0, -ETIMEDOUT },
        { MOSQ_ERR_PROTOCOL, 0, -EPROTO },
        { MOSQ_ERR_MALFORMED_PACKET, 0, -EPROTO },
        { MOSQ_ERR_TLS, 0, -EPROTO },
        { MOSQ_ERR_TLS_HANDSHAKE, 0, -EPROTO },
        { MOSQ_ERR_INVAL, 0, -EINVAL },
        { MOSQ_ERR_PAYLOAD_SIZE, 0, -EMSGSIZE },
        { MOSQ_ERR_OVERSIZE_PACKET, 0, -EMSGSIZE },
        { MOSQ_ERR_AUTH, 0, -EACCES },
        { MOSQ_ERR_ACL_DENIED, 0, -EACCES },
        { MOSQ_ERR_EAI, 0, -EHOSTUNREACH },
        { MOSQ_ERR_LOOKUP, 0, -EHOSTUNREACH },
        { MOSQ_ERR_MALFORMED_UTF8, 0, -EILSEQ },
        { MOSQ_ERR_NOT_SUPPORTED, 0, -EOPNOTSUPP },
        { MOSQ_ERR_UNKNOWN, 0, -EIO },                   /* no closer match */
        { 9999, 0, -EIO },                               /* not a code at all */
};

START_TEST(test_errno) {
        int r = mqtt_loop_errno(errno_cases[_i].rc, errno_cases[_i].errno_value);

        ck_assert_msg(r == errno_cases[_i].expected, "rc %d errno %d: %d, expected %d", errno_cases[_i].rc,
                      errno_cases[_i].errno_value, r, errno_cases[_i].expected);
}
END_TEST

static const struct {
        int rc;
        int errno_value;
        const char *expected;         /* NULL: strerror(errno_value) */
} describe_cases[] = {
        { MOSQ_ERR_ERRNO, ECONNREFUSED, NULL },
        { MOSQ_ERR_ERRNO, 0, "system error" },
        { MOSQ_ERR_EAI, 0, "host name lookup failed" },
        { MOSQ_ERR_KEEPALIVE, 0, "no answer from the broker within the keepalive interval" },
        { MOSQ_ERR_MALFORMED_PACKET, 0, "malformed packet from the broker" },
        { MOSQ_ERR_TIMEOUT, 0, "timed out" },
        { MOSQ_ERR_ADMINISTRATIVE_ACTION, 0, "disconnected by the broker's administrator" },
        { MOSQ_ERR_CONN_LOST, ECONNREFUSED, "The connection was lost." }, /* libmosquitto's own */
        { MQTT_RC_NOT_AUTHORIZED, 0, "Not authorized" },                  /* an MQTT 5 reason code */
        { MQTT_RC_SESSION_TAKEN_OVER, 0, "Session taken over" },
};

START_TEST(test_describe) {
        const char *text = mqtt_loop_describe(describe_cases[_i].rc, describe_cases[_i].errno_value);
        const char *expected = describe_cases[_i].expected ?: strerror(describe_cases[_i].errno_value);

        ck_assert_str_eq(text, expected);
}
END_TEST

/* Every way libmosquitto 2.0 can end a connection or an attempt has a text of its own: none
 * reads "Unknown error." in a log line. */
START_TEST(test_describe_known) {
        static const int codes[] = {
                MOSQ_ERR_NOMEM,       MOSQ_ERR_PROTOCOL,         MOSQ_ERR_INVAL,
                MOSQ_ERR_NO_CONN,     MOSQ_ERR_CONN_REFUSED,     MOSQ_ERR_CONN_LOST,
                MOSQ_ERR_TLS,         MOSQ_ERR_PAYLOAD_SIZE,     MOSQ_ERR_NOT_SUPPORTED,
                MOSQ_ERR_AUTH,        MOSQ_ERR_ACL_DENIED,       MOSQ_ERR_ERRNO,
                MOSQ_ERR_EAI,         MOSQ_ERR_PROXY,            MOSQ_ERR_MALFORMED_UTF8,
                MOSQ_ERR_KEEPALIVE,   MOSQ_ERR_MALFORMED_PACKET, MOSQ_ERR_DUPLICATE_PROPERTY,
                MOSQ_ERR_TLS_HANDSHAKE, MOSQ_ERR_OVERSIZE_PACKET, MOSQ_ERR_OCSP,
                MOSQ_ERR_TIMEOUT,     MOSQ_ERR_ADMINISTRATIVE_ACTION,
        };

        for (size_t i = 0; i < ELEMENTSOF(codes); i++) {
                const char *text = mqtt_loop_describe(codes[i], 0);

                ck_assert_msg(text && *text && !strstr(text, "Unknown error"), "rc %d: '%s'", codes[i], strna(text));
        }
}
END_TEST

static const struct {
        unsigned keepalive;
        uint64_t expected;
} timeout_cases[] = {
        { 0, 5 * USEC_PER_SEC },      /* at least 5 s */
        { 1, 5 * USEC_PER_SEC },
        { 5, 5 * USEC_PER_SEC },
        { 6, 6 * USEC_PER_SEC },
        { 30, 30 * USEC_PER_SEC },    /* else the keepalive */
        { 60, 60 * USEC_PER_SEC },
        { 61, 60 * USEC_PER_SEC },    /* at most 60 s */
        { 65535, 60 * USEC_PER_SEC },
        { UINT_MAX, 60 * USEC_PER_SEC }, /* no overflow */
};

START_TEST(test_connect_timeout) {
        ck_assert_uint_eq(mqtt_loop_connect_timeout_usec(timeout_cases[_i].keepalive), timeout_cases[_i].expected);
}
END_TEST

static bool has_connection_never(void *userdata) {
        (void) userdata;
        return false;
}

static void disconnected_never(void *userdata, int rc, int errno_value) {
        (void) userdata;
        (void) rc;
        (void) errno_value;
        ck_abort_msg("no connection, no disconnect");
}

static void hangup_never(void *userdata, int error) {
        (void) userdata;
        (void) error;
        ck_abort_msg("no connection, no hang-up");
}

static void watch_failed_never(void *userdata, int error) {
        (void) userdata;
        (void) error;
        ck_abort_msg("no connection, no io source");
}

static void reconnect_never(void *userdata, uint64_t usec) {
        (void) userdata;
        (void) usec;
        ck_abort_msg("no reconnect armed");
}

static void resolved_never(HostLookup *l, int error, const char *address, size_t n, const char *cause, void *userdata) {
        (void) l;
        (void) error;
        (void) address;
        (void) n;
        (void) cause;
        (void) userdata;
        ck_abort_msg("no lookup started");
}

static const MqttLoopOps idle_ops = {
        .has_connection = has_connection_never,
        .disconnected = disconnected_never,
        .hangup = hangup_never,
        .watch_failed = watch_failed_never,
        .reconnect = reconnect_never,
        .resolved = resolved_never,
};

static const struct {
        const char *host;
        bool lookup;
} lookup_cases[] = {
        { "127.0.0.1", false },
        { "192.0.2.10", false },
        { "::1", false },
        { "2001:db8::5", false },
        { "localhost", false },       /* answered by /etc/hosts at once */
        { "LocalHost", false },       /* host names have no case */
        { "broker.example.org", true },
        { "broker", true },
        { "localhost.example.org", true },
        { "192.0.2.256", true },      /* not an address: a name, as libmosquitto would take it */
        { "[::1]", true },
};

START_TEST(test_needs_lookup) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        MqttLoop *l = NULL;
        int token;

        ck_assert_int_eq(sd_event_new(&e), 0);
        ck_assert_int_eq(mqtt_loop_new(e, "test", lookup_cases[_i].host, &idle_ops, &token, &l), 0);
        ck_assert_msg(mqtt_loop_needs_lookup(l) == lookup_cases[_i].lookup, "'%s'", lookup_cases[_i].host);
        ck_assert_ptr_eq(mqtt_loop_get_userdata(l), &token);
        ck_assert_ptr_null(mqtt_loop_client(l));
        ck_assert(!mqtt_loop_watching(l));
        ck_assert_str_eq(mqtt_loop_tls_error(l), "");
        ck_assert(!mqtt_loop_certificate_rejected(l));
        ck_assert_ptr_null(mqtt_loop_free(l));
}
END_TEST

/* Every descriptor open now that lacks FD_CLOEXEC, as a count (0, 1 and 2 excepted). */
static unsigned fds_without_cloexec(void) {
        DIR *d = opendir("/proc/self/fd");
        struct dirent *de;
        unsigned n = 0;

        ck_assert_ptr_nonnull(d);
        while ((de = readdir(d))) {
                int fd = atoi(de->d_name);

                if (de->d_name[0] == '.' || fd <= 2 || fd == dirfd(d))
                        continue;
                if (!(fcntl(fd, F_GETFD) & FD_CLOEXEC))
                        n++;
        }
        closedir(d);
        return n;
}

/* A client made by the loop is the loop's (userdata, replaced, freed with it), and whatever
 * libmosquitto opened for it is close-on-exec. No socket before a connect: nothing watched. */
START_TEST(test_client) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        struct mosquitto *first = NULL, *second = NULL;
        unsigned before;
        MqttLoop *l = NULL;
        int token;

        ck_assert_int_eq(sd_event_new(&e), 0);
        ck_assert_int_eq(mqtt_loop_new(e, "test", "127.0.0.1", &idle_ops, &token, &l), 0);
        before = fds_without_cloexec();
        ck_assert_int_eq(mqtt_loop_client_new(l, "test-client", true, MQTT_PROTOCOL_V5, &first), 0);
        ck_assert_ptr_nonnull(first);
        ck_assert_ptr_eq(mqtt_loop_client(l), first);
        ck_assert_ptr_eq(mosquitto_userdata(first), l); /* libmosquitto's callbacks get the loop */
        ck_assert_uint_le(fds_without_cloexec(), before);
        ck_assert_int_eq(mqtt_loop_update_io(l), 0);
        ck_assert(!mqtt_loop_watching(l));
        mqtt_loop_shutdown(l); /* no socket: nothing to do */

        /* A second client replaces the first (upstream makes one per attempt). */
        ck_assert_int_eq(mqtt_loop_client_new(l, "test-client", true, MQTT_PROTOCOL_V311, &second), 0);
        ck_assert_ptr_eq(mqtt_loop_client(l), second);
        ck_assert_uint_le(fds_without_cloexec(), before);

        /* A persistent session needs a client id: the one before is gone, nothing in its place. */
        ck_assert_int_eq(mqtt_loop_client_new(l, NULL, false, MQTT_PROTOCOL_V311, NULL), -EINVAL);
        ck_assert_ptr_null(mqtt_loop_client(l));
        ck_assert_ptr_null(mqtt_loop_free(l));
        ck_assert_ptr_null(mqtt_loop_free(NULL));
}
END_TEST

static Suite *mqtt_loop_suite(void) {
        Suite *s = suite_create("mqtt-loop");
        TCase *tc;

        tc = tcase_create("pure");
        tcase_add_loop_test(tc, test_errno, 0, ELEMENTSOF(errno_cases));
        tcase_add_loop_test(tc, test_describe, 0, ELEMENTSOF(describe_cases));
        tcase_add_test(tc, test_describe_known);
        tcase_add_loop_test(tc, test_connect_timeout, 0, ELEMENTSOF(timeout_cases));
        suite_add_tcase(s, tc);

        tc = tcase_create("client");
        tcase_add_loop_test(tc, test_needs_lookup, 0, ELEMENTSOF(lookup_cases));
        tcase_add_test(tc, test_client);
        suite_add_tcase(s, tc);

        return s;
}

int main(void) {
        return tl_run_suite(mqtt_loop_suite());
}
