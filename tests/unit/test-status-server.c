/* SPDX-License-Identifier: MIT */
/* Unit tests for the status socket on a real sd_event loop: sections, requests, and its bounds. */
#include <check.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "collector/macro.h"
#include "collector/status-server.h"
#include "testlib.h"

typedef struct Fixture {
        sd_event *event;
        StatusServer *srv;
        char path[300];
} Fixture;

static int fill_number(cJSON *o, void *userdata) {
        return cJSON_AddNumberToObject(o, "value_total", (double) *(int *) userdata) ? 0 : -ENOMEM;
}

static int fill_fails(cJSON *o, void *userdata) {
        (void) userdata;
        (void) cJSON_AddStringToObject(o, "half", "done");
        return -ENOMEM;
}

static int fill_huge(cJSON *o, void *userdata) {
        size_t n = STATUS_ANSWER_MAX + 1024;
        char *s = malloc(n + 1);
        int r;

        (void) userdata;
        memset(s, 'x', n);
        s[n] = 0;
        r = cJSON_AddStringToObject(o, "huge", s) ? 0 : -ENOMEM;
        free(s);
        return r;
}

static void fixture_open(Fixture *f) {
        memset(f, 0, sizeof(*f));
        ck_assert_int_ge(sd_event_new(&f->event), 0);
        snprintf(f->path, sizeof(f->path), "%s/status.sock", tl_tmpdir());
        ck_assert_int_eq(status_server_new(f->event, f->path, &f->srv), 0);
}

static void fixture_close(Fixture *f) {
        f->srv = status_server_free(f->srv);
        f->event = sd_event_unref(f->event);
}

static int client(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

        ck_assert_int_ge(fd, 0);
        memcpy(sa.sun_path, path, MIN(strlen(path), sizeof(sa.sun_path) - 1));
        ck_assert_int_eq(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        return fd;
}

/* Runs the loop and reads fd until EOF or timeout_ms. Returns what was read (caller frees), and
 * sets *ret_eof when the server closed. */
static char *pump(Fixture *f, int fd, int timeout_ms, bool *ret_eof) {
        size_t size = 0, cap = STATUS_ANSWER_MAX * 2;
        char *buf = malloc(cap + 1);
        int64_t end = tl_now_ms() + timeout_ms;

        *ret_eof = false;
        while (tl_now_ms() < end) {
                ssize_t k;

                (void) sd_event_run(f->event, 10 * USEC_PER_MSEC);
                k = recv(fd, buf + size, cap - size, MSG_DONTWAIT);
                if (k == 0 || (k < 0 && errno == ECONNRESET)) {
                        *ret_eof = true;
                        break;
                }
                if (k > 0)
                        size += (size_t) k;
        }
        buf[size] = 0;
        return buf;
}

static char *ask(Fixture *f, const char *request, bool *ret_eof) {
        int fd = client(f->path);
        char *out;

        ck_assert_int_eq(send(fd, request, strlen(request), MSG_NOSIGNAL), (ssize_t) strlen(request));
        out = pump(f, fd, 5000, ret_eof);
        close(fd);
        return out;
}

START_TEST(test_sections) {
        Fixture f;
        int one = 1, two = 2;
        bool eof;
        char *out;
        cJSON *j;

        fixture_open(&f);
        ck_assert_int_eq(status_server_add_section(f.srv, "first", fill_number, &one), 0);
        ck_assert_int_eq(status_server_add_section(f.srv, "broken", fill_fails, NULL), 0);
        ck_assert_int_eq(status_server_add_section(f.srv, "second", fill_number, &two), 0);
        ck_assert_int_eq(status_server_add_section(f.srv, "first", fill_number, &two), -EEXIST);

        out = ask(&f, STATUS_REQUEST, &eof);
        ck_assert(eof);
        /* in the order added; a section that cannot be filled is left out whole */
        ck_assert_str_eq(out, "{\"first\":{\"value_total\":1},\"second\":{\"value_total\":2}}\n");
        free(out);

        /* the values are read at each request */
        two = 22;
        ck_assert_int_eq(status_server_build(f.srv, &j), 0);
        ck_assert_int_eq(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "second"), "value_total")->valueint, 22);
        cJSON_Delete(j);
        fixture_close(&f);
}
END_TEST

/* Anything but the one request line is closed without an answer. */
static const char *const bad_requests[] = {
        "stat\n", "status\r\n", "STATUS\n", "status now\n", " status\n", "\n",
        "statusstatusstatusstatusstatusstatusstatusstatusstatusstatusstatusstatus", /* 64+ bytes, no newline */
};

START_TEST(test_bad_request) {
        Fixture f;
        int one = 1;
        bool eof;
        char *out;

        fixture_open(&f);
        ck_assert_int_eq(status_server_add_section(f.srv, "first", fill_number, &one), 0);
        out = ask(&f, bad_requests[_i], &eof);
        ck_assert_msg(eof, "request %d not closed", _i);
        ck_assert_str_eq(out, "");
        free(out);
        fixture_close(&f);
}
END_TEST

START_TEST(test_too_large) {
        Fixture f;
        bool eof;
        char *out;

        fixture_open(&f);
        ck_assert_int_eq(status_server_add_section(f.srv, "huge", fill_huge, NULL), 0);
        out = ask(&f, STATUS_REQUEST, &eof);
        ck_assert(eof);
        ck_assert_str_eq(out, "{\"error\":\"answer too large\"}\n");
        free(out);
        fixture_close(&f);
}
END_TEST

/* A peer that sends nothing is closed after STATUS_TIMEOUT_USEC, not before. */
START_TEST(test_timeout) {
        Fixture f;
        int fd;
        bool eof;
        int64_t t0;
        char *out;

        fixture_open(&f);
        fd = client(f.path);
        t0 = tl_now_ms();
        out = pump(&f, fd, 20000, &eof);
        ck_assert(eof);
        ck_assert_int_ge(tl_now_ms() - t0, (int64_t) (STATUS_TIMEOUT_USEC / USEC_PER_MSEC) - 20);
        free(out);
        close(fd);
        fixture_close(&f);
}
END_TEST

/* More than STATUS_CONNECTIONS_MAX at once: the extra ones are closed at once, the others stay
 * until they ask or time out; then the socket serves again. */
START_TEST(test_connection_limit) {
        Fixture f;
        int fds[STATUS_CONNECTIONS_MAX + 4], one = 1;
        unsigned closed = 0;
        bool eof;
        char *out;

        fixture_open(&f);
        ck_assert_int_eq(status_server_add_section(f.srv, "first", fill_number, &one), 0);
        /* one at a time, the loop accepting in between (the backlog holds only so many) */
        for (size_t i = 0; i < ELEMENTSOF(fds); i++) {
                fds[i] = client(f.path);
                (void) sd_event_run(f.event, 10 * USEC_PER_MSEC);
        }
        for (int i = 0; i < 20; i++)
                (void) sd_event_run(f.event, 10 * USEC_PER_MSEC);
        for (size_t i = 0; i < ELEMENTSOF(fds); i++) {
                char c;
                ssize_t k = recv(fds[i], &c, 1, MSG_DONTWAIT);
                if (k == 0)
                        closed++;
        }
        ck_assert_uint_eq(closed, ELEMENTSOF(fds) - STATUS_CONNECTIONS_MAX);
        for (size_t i = 0; i < ELEMENTSOF(fds); i++)
                close(fds[i]);
        /* the closed peers free their places */
        for (int i = 0; i < 20; i++)
                (void) sd_event_run(f.event, 10 * USEC_PER_MSEC);
        out = ask(&f, STATUS_REQUEST, &eof);
        ck_assert_str_eq(out, "{\"first\":{\"value_total\":1}}\n");
        free(out);
        fixture_close(&f);
}
END_TEST

START_TEST(test_socket_file) {
        sd_event *e = NULL;
        StatusServer *srv = NULL, *other = NULL;
        const char *dir = tl_tmpdir();
        char path[300];
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct stat st;
        int fd;

        ck_assert_int_ge(sd_event_new(&e), 0);

        /* 0660: the group may ask */
        snprintf(path, sizeof(path), "%s/a.sock", dir);
        ck_assert_int_eq(status_server_new(e, path, &srv), 0);
        ck_assert_int_eq(stat(path, &st), 0);
        ck_assert(S_ISSOCK(st.st_mode));
        ck_assert_int_eq(st.st_mode & 07777, 0660);
        /* in use: refused, and left alone */
        ck_assert_int_eq(status_server_new(e, path, &other), -EADDRINUSE);
        ck_assert_int_eq(stat(path, &st), 0);
        /* freeing removes it */
        srv = status_server_free(srv);
        ck_assert_int_ne(access(path, F_OK), 0);

        /* a stale socket (nobody listens) is replaced */
        memcpy(sa.sun_path, path, strlen(path));
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        close(fd);
        ck_assert_int_eq(status_server_new(e, path, &srv), 0);
        srv = status_server_free(srv);

        /* anything else at the path stays */
        snprintf(path, sizeof(path), "%s/file", dir);
        tl_write_file(dir, "file", "keep me");
        ck_assert_int_eq(status_server_new(e, path, &srv), -EEXIST);
        ck_assert_ptr_null(srv);
        ck_assert_int_eq(access(path, F_OK), 0);

        /* no such directory; a path too long for a socket */
        ck_assert_int_eq(status_server_new(e, "/nonexistent/dir/s.sock", &srv), -ENOENT);
        memset(path, 'a', sizeof(path) - 1);
        path[0] = '/';
        path[sizeof(path) - 1] = 0;
        ck_assert_int_eq(status_server_new(e, path, &srv), -ENAMETOOLONG);
        sd_event_unref(e);
}
END_TEST

static Suite *status_server_suite(void) {
        Suite *s = suite_create("status-server");
        TCase *tc = tcase_create("status-server");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_sections);
        tcase_add_loop_test(tc, test_bad_request, 0, ELEMENTSOF(bad_requests));
        tcase_add_test(tc, test_too_large);
        tcase_add_test(tc, test_timeout);
        tcase_add_test(tc, test_connection_limit);
        tcase_add_test(tc, test_socket_file);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run_suite(status_server_suite());
}
