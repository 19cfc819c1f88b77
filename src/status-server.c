/* SPDX-License-Identifier: MIT */
/* The status socket: answers one request line per connection with a JSON snapshot, read-only and bounded. */
#include <assert.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "collector/log.h"
#include "collector/status-server.h"
#include "collector/time-util.h"

typedef struct StatusSection {
        char *name;
        status_fill_t fill;
        void *userdata;
} StatusSection;

typedef struct StatusConnection StatusConnection;
struct StatusConnection {
        StatusServer *server;
        StatusConnection *prev, *next;
        int fd;
        sd_event_source *io;
        sd_event_source *timer;       /* the whole exchange must end by then */
        char request[STATUS_REQUEST_MAX];
        size_t request_size;
        char *answer;                 /* NULL while the request is still coming */
        size_t answer_size, answer_sent;
};

struct StatusServer {
        sd_event *event;              /* referenced */
        char *path;
        int fd;
        sd_event_source *listen_source;
        StatusConnection *connections;
        unsigned n_connections;
        StatusSection *sections;
        size_t n_sections;
        RateLimit refused_ratelimit;  /* "too many connections" and accept errors */
        RateLimit closed_ratelimit;   /* debug lines about closed peers: a flood must not flood the log */
};

/* Why a peer was closed, at debug level, at most a few lines per 10 s. */
static void status_connection_log_closed(StatusConnection *c, int error, const char *why) {
        unsigned suppressed;

        if (ratelimit_below(&c->server->closed_ratelimit, &suppressed))
                log_debug_errno(error, "Closing status connection: %s%s", why,
                                suppressed > 0 ? " (and more since the last message)" : "");
}

static StatusConnection *status_connection_free(StatusConnection *c) {
        StatusServer *srv;

        if (!c)
                return NULL;
        srv = c->server;
        if (c->prev)
                c->prev->next = c->next;
        else
                srv->connections = c->next;
        if (c->next)
                c->next->prev = c->prev;
        srv->n_connections--;
        sd_event_source_disable_unref(c->io);
        sd_event_source_disable_unref(c->timer);
        safe_close(c->fd);
        free(c->answer);
        free(c);
        return NULL;
}

int status_server_build(StatusServer *srv, cJSON **ret) {
        cJSON *answer = cJSON_CreateObject();

        if (!answer)
                return -ENOMEM;
        for (size_t i = 0; i < srv->n_sections; i++) {
                StatusSection *sec = &srv->sections[i];
                cJSON *o = cJSON_CreateObject();

                /* A section that cannot be filled is left out; the others still answer. */
                if (!o || sec->fill(o, sec->userdata) < 0 || !cJSON_AddItemToObject(answer, sec->name, o))
                        cJSON_Delete(o);
        }
        *ret = answer;
        return 0;
}

/* The answer to "status": the snapshot, or a short error object when it cannot be made or is
 * larger than STATUS_ANSWER_MAX (a client must never get half a document). */
static int status_connection_answer(StatusConnection *c) {
        static const char too_large[] = "{\"error\":\"answer too large\"}\n";
        cJSON *answer = NULL;
        char *text = NULL;
        size_t n;

        if (status_server_build(c->server, &answer) >= 0)
                text = cJSON_PrintUnformatted(answer);
        cJSON_Delete(answer);
        if (!text)
                return -ENOMEM;
        n = strlen(text);
        if (n + 1 > STATUS_ANSWER_MAX) {
                free(text);
                text = strdup(too_large);
                if (!text)
                        return -ENOMEM;
                n = strlen(text);
        } else {
                char *t = realloc(text, n + 2);
                if (!t) {
                        free(text);
                        return -ENOMEM;
                }
                text = t;
                text[n++] = '\n';
                text[n] = 0;
        }
        c->answer = text;
        c->answer_size = n;
        return 0;
}

/* Writes what the socket takes now. Returns 1 when all is out, 0 to wait for EPOLLOUT, or -errno. */
static int status_connection_write(StatusConnection *c) {
        while (c->answer_sent < c->answer_size) {
                ssize_t k = send(c->fd, c->answer + c->answer_sent, c->answer_size - c->answer_sent,
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
                if (k < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                return 0;
                        return -errno;
                }
                c->answer_sent += (size_t) k;
        }
        return 1;
}

/* Reads what arrived of the request. Returns 1 when the request line is complete and valid, 0 to
 * wait for more, or -errno to close: EOF before a line, an unknown request, a line too long. */
static int status_connection_read(StatusConnection *c) {
        for (;;) {
                size_t room = sizeof(c->request) - c->request_size;
                ssize_t k;
                char *nl;

                if (room == 0)
                        return -EMSGSIZE;
                k = recv(c->fd, c->request + c->request_size, room, MSG_DONTWAIT);
                if (k < 0)
                        return errno == EAGAIN || errno == EINTR ? 0 : -errno;
                if (k == 0)
                        return -ECONNRESET;
                nl = memchr(c->request + c->request_size, '\n', (size_t) k);
                c->request_size += (size_t) k;
                if (nl) {
                        size_t line = (size_t) (nl - c->request) + 1;
                        return line == strlen(STATUS_REQUEST) && memcmp(c->request, STATUS_REQUEST, line) == 0
                                       ? 1
                                       : -EBADMSG;
                }
        }
}

static int on_connection_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        StatusConnection *c = userdata;
        int r;

        (void) s;
        (void) fd;
        if (!c->answer) {
                if (revents & (EPOLLERR | EPOLLHUP) && !(revents & EPOLLIN)) {
                        status_connection_free(c);
                        return 0;
                }
                r = status_connection_read(c);
                if (r == 0)
                        return 0;
                if (r > 0)
                        r = status_connection_answer(c);
                if (r < 0) {
                        status_connection_log_closed(c, r, r == -EBADMSG ? "not a status request"
                                                           : r == -EMSGSIZE ? "request too long"
                                                           : r == -ECONNRESET ? "no request"
                                                           : "could not answer");
                        status_connection_free(c);
                        return 0;
                }
                /* Nothing more is read: whatever else the peer sends is not looked at. */
                (void) shutdown(c->fd, SHUT_RD);
        }
        r = status_connection_write(c);
        if (r == 0) {
                r = sd_event_source_set_io_events(c->io, EPOLLOUT);
                if (r >= 0)
                        return 0;
        }
        if (r < 0)
                status_connection_log_closed(c, r, "could not send the answer");
        status_connection_free(c);
        return 0;
}

static int on_connection_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) s;
        (void) usec;
        status_connection_log_closed(userdata, 0, "took too long");
        status_connection_free(userdata);
        return 0;
}

static int status_connection_new(StatusServer *srv, int fd) {
        StatusConnection *c;
        int r;

        c = calloc(1, sizeof(*c));
        if (!c) {
                safe_close(fd);
                return -ENOMEM;
        }
        c->server = srv;
        c->fd = fd;
        c->next = srv->connections;
        if (c->next)
                c->next->prev = c;
        srv->connections = c;
        srv->n_connections++;

        r = sd_event_add_io(srv->event, &c->io, fd, EPOLLIN, on_connection_io, c);
        if (r >= 0)
                r = sd_event_add_time_relative(srv->event, &c->timer, CLOCK_MONOTONIC, STATUS_TIMEOUT_USEC,
                                               10 * USEC_PER_MSEC, on_connection_timeout, c);
        if (r < 0) {
                status_connection_free(c);
                return r;
        }
        (void) sd_event_source_set_description(c->io, "status-connection");
        return 0;
}

static void status_server_log_refused(StatusServer *srv, int error, const char *what) {
        unsigned suppressed;

        if (ratelimit_below(&srv->refused_ratelimit, &suppressed))
                log_warning_errno(error, "Status socket: %s%s, ignoring.", what,
                                  suppressed > 0 ? " (and more since the last message)" : "");
}

static int on_listen(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        StatusServer *srv = userdata;

        (void) s;
        (void) revents;
        /* A bounded number per iteration: a flood of connections never holds the loop. */
        for (unsigned i = 0; i < STATUS_ACCEPT_BURST; i++) {
                int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                int r;

                if (cfd < 0) {
                        if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                                return 0;
                        status_server_log_refused(srv, -errno, "failed to accept a connection");
                        return 0;
                }
                if (srv->n_connections >= STATUS_CONNECTIONS_MAX) {
                        safe_close(cfd);
                        status_server_log_refused(srv, 0, "too many connections, closed a new one");
                        continue;
                }
                r = status_connection_new(srv, cfd);
                if (r < 0)
                        status_server_log_refused(srv, r, "could not take a connection");
        }
        return 0;
}

/* Whether something answers at path: a socket in use must not be taken over. */
static bool socket_in_use(const struct sockaddr_un *sa, socklen_t len) {
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

        if (fd < 0)
                return false;
        return connect(fd, (const struct sockaddr *) sa, len) >= 0 || errno == EAGAIN;
}

int status_server_new(sd_event *e, const char *path, StatusServer **ret) {
        _cleanup_(status_server_freep) StatusServer *srv = NULL;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        socklen_t len;
        struct stat st;
        int r;

        assert(e && path && ret);
        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, path, strlen(path));
        len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);

        srv = calloc(1, sizeof(*srv));
        if (!srv)
                return -ENOMEM;
        srv->fd = -EBADF;
        srv->event = sd_event_ref(e);
        srv->refused_ratelimit = RATELIMIT_INIT(10 * USEC_PER_SEC, 1);
        srv->closed_ratelimit = RATELIMIT_INIT(10 * USEC_PER_SEC, 5);

        /* A socket left by a daemon that was killed is replaced; anything else at path stays. */
        if (lstat(path, &st) >= 0) {
                if (!S_ISSOCK(st.st_mode))
                        return -EEXIST;
                if (socket_in_use(&sa, len))
                        return -EADDRINUSE;
                if (unlink(path) < 0 && errno != ENOENT)
                        return -errno;
        }

        srv->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (srv->fd < 0)
                return -errno;
        if (bind(srv->fd, (const struct sockaddr *) &sa, len) < 0)
                return -errno;
        srv->path = strdup(path);
        if (!srv->path)
                return -ENOMEM;
        /* Whoever may connect may ask: the owner and the group (the unit's UMask= would leave 0600). */
        if (chmod(path, 0660) < 0)
                return -errno;
        if (listen(srv->fd, STATUS_CONNECTIONS_MAX) < 0)
                return -errno;
        r = sd_event_add_io(e, &srv->listen_source, srv->fd, EPOLLIN, on_listen, srv);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(srv->listen_source, "status-listen");
        *ret = TAKE_PTR(srv);
        return 0;
}

StatusServer *status_server_free(StatusServer *srv) {
        if (!srv)
                return NULL;
        while (srv->connections)
                status_connection_free(srv->connections);
        sd_event_source_disable_unref(srv->listen_source);
        if (srv->fd >= 0 && srv->path)
                (void) unlink(srv->path);
        safe_close(srv->fd);
        for (size_t i = 0; i < srv->n_sections; i++)
                free(srv->sections[i].name);
        free(srv->sections);
        free(srv->path);
        sd_event_unref(srv->event);
        free(srv);
        return NULL;
}

int status_server_add_section(StatusServer *srv, const char *name, status_fill_t fill, void *userdata) {
        StatusSection *n;
        char *copy;

        assert(srv && name && fill);
        for (size_t i = 0; i < srv->n_sections; i++)
                if (streq(srv->sections[i].name, name))
                        return -EEXIST;
        copy = strdup(name);
        if (!copy)
                return -ENOMEM;
        n = realloc(srv->sections, (srv->n_sections + 1) * sizeof(*n));
        if (!n) {
                free(copy);
                return -ENOMEM;
        }
        srv->sections = n;
        srv->sections[srv->n_sections++] = (StatusSection){ .name = copy, .fill = fill, .userdata = userdata };
        return 0;
}
