/* SPDX-License-Identifier: MIT */
/* `sensor-collector status`: connects to the status socket, reads the answer, prints it. */
#include <getopt.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "collector/exit-status.h"
#include "collector/status-format.h"
#include "collector/status-server.h"
#include "collector/status.h"
#include "collector/time-util.h"

/* The daemon answers at once; a loop that is busy (a big commit) may take a moment. */
#define CLIENT_TIMEOUT_MS 5000
#define CLIENT_ANSWER_MAX (STATUS_ANSWER_MAX + 1)

typedef enum StatusFormat {
        STATUS_FORMAT_TEXT,
        STATUS_FORMAT_JSON,
        STATUS_FORMAT_PROMETHEUS,
        STATUS_FORMAT_OPENMETRICS,
} StatusFormat;

static const char usage_text[] =
        "Usage: sensor-collector status [--socket PATH] [--format text|json|prometheus|openmetrics]\n";

static void help(void) {
        printf("%s\n"
               "Asks the running daemon how it is: each input's state and counters, the store.\n\n"
               "      --socket PATH     the daemon's status socket (default %s)\n"
               "  -o, --format FORMAT   text (default), json, prometheus (text format for node_exporter's\n"
               "                        textfile collector), openmetrics\n"
               "  -h, --help            print this help and exit\n\n"
               "Exit status: 0 running and healthy, 1 running but degraded, 3 not running,\n"
               "4 status unknown (access denied, no answer), 64 bad usage.\n",
               usage_text, STATUS_SOCKET_DEFAULT_PATH);
}

static int parse_args(int argc, char **argv, const char **ret_socket, StatusFormat *ret_format) {
        enum { ARG_SOCKET = 0x100 };
        static const struct option options[] = {
                { "socket", required_argument, NULL, ARG_SOCKET },
                { "format", required_argument, NULL, 'o' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        int c;

        optind = 1;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":o:h", options, NULL)) >= 0)
                switch (c) {
                case ARG_SOCKET:
                        *ret_socket = optarg;
                        break;
                case 'o':
                        if (streq(optarg, "text"))
                                *ret_format = STATUS_FORMAT_TEXT;
                        else if (streq(optarg, "json"))
                                *ret_format = STATUS_FORMAT_JSON;
                        else if (streq(optarg, "prometheus"))
                                *ret_format = STATUS_FORMAT_PROMETHEUS;
                        else if (streq(optarg, "openmetrics"))
                                *ret_format = STATUS_FORMAT_OPENMETRICS;
                        else {
                                fprintf(stderr, "sensor-collector status: invalid --format '%s' (text, json, prometheus, openmetrics)\n%s",
                                        optarg, usage_text);
                                return -EINVAL;
                        }
                        break;
                case 'h':
                        help();
                        return 1;
                case ':':
                        fprintf(stderr, "sensor-collector status: option '%s' needs a value\n%s", argv[optind - 1], usage_text);
                        return -EINVAL;
                default:
                        fprintf(stderr, "sensor-collector status: unknown option '%s'\n%s", argv[optind - 1], usage_text);
                        return -EINVAL;
                }
        if (optind < argc) {
                fprintf(stderr, "sensor-collector status: unexpected argument '%s'\n%s", argv[optind], usage_text);
                return -EINVAL;
        }
        return 0;
}

/* Connects, sends the request and reads the answer up to EOF, each step within
 * CLIENT_TIMEOUT_MS (a blocking socket with send and receive timeouts, which also bound the wait
 * for a full backlog in connect()). Returns 0 and *ret (caller frees), -ENOENT, -ECONNREFUSED or
 * -ENOTSOCK when nobody listens, -EAGAIN on a timeout, or -errno. */
static int status_ask(const char *path, char **ret) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct timeval tv = { .tv_sec = CLIENT_TIMEOUT_MS / 1000, .tv_usec = (CLIENT_TIMEOUT_MS % 1000) * 1000 };
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *buf = NULL;
        static const char request[] = STATUS_REQUEST;
        size_t used = 0, sent = 0;

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, path, strlen(path));
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return errno == EINPROGRESS ? -EAGAIN : -errno;
        while (sent < strlen(request)) {
                ssize_t k = send(fd, &request[sent], strlen(request) - sent, MSG_NOSIGNAL);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
                }
                sent += (size_t) k;
        }
        buf = malloc(CLIENT_ANSWER_MAX + 1);
        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t k;

                if (used >= CLIENT_ANSWER_MAX)
                        return -EMSGSIZE;
                k = recv(fd, buf + used, CLIENT_ANSWER_MAX - used, 0);
                if (k == 0)
                        break;
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
                }
                used += (size_t) k;
        }
        buf[used] = 0;
        *ret = TAKE_PTR(buf);
        return 0;
}

int status_main(int argc, char **argv) {
        const char *path = STATUS_SOCKET_DEFAULT_PATH;
        StatusFormat format = STATUS_FORMAT_TEXT;
        _cleanup_free_ char *text = NULL;
        cJSON *answer, *error;
        int r, health;

        r = parse_args(argc, argv, &path, &format);
        if (r != 0)
                return r > 0 ? EXIT_STATUS_OK : EXIT_STATUS_USAGE;

        r = status_ask(path, &text);
        if (r == -ENOENT || r == -ECONNREFUSED || r == -ENOTSOCK || r == -ENOTDIR) {
                fprintf(stderr, "sensor-collector is not running (nothing answers at '%s').\n", path);
                return STATUS_EXIT_NOT_RUNNING;
        }
        if (r == -EACCES || r == -EPERM) {
                fprintf(stderr, "sensor-collector status: no access to '%s' (root and the group "
                                "sensor-collector-status may ask).\n", path);
                return STATUS_EXIT_UNKNOWN;
        }
        if (r < 0) {
                fprintf(stderr, "sensor-collector status: asking '%s' failed: %s\n", path, strerror(-r));
                return STATUS_EXIT_UNKNOWN;
        }
        if (!text[0]) {
                /* Accepted and closed at once: the daemon serves STATUS_CONNECTIONS_MAX at a time. */
                fprintf(stderr, "sensor-collector status: the daemon at '%s' closed the connection without an "
                                "answer (busy with other clients?); try again.\n", path);
                return STATUS_EXIT_UNKNOWN;
        }
        answer = cJSON_Parse(text);
        error = cJSON_GetObjectItemCaseSensitive(answer, "error");
        if (!cJSON_IsObject(answer) || error) {
                fprintf(stderr, "sensor-collector status: the daemon at '%s' gave %s%s.\n", path,
                        error ? "an error: " : "no valid answer", cJSON_IsString(error) ? error->valuestring : "");
                cJSON_Delete(answer);
                return STATUS_EXIT_UNKNOWN;
        }
        health = status_health(answer) == 0 ? STATUS_EXIT_HEALTHY : STATUS_EXIT_DEGRADED;
        switch (format) {
        case STATUS_FORMAT_TEXT:
                r = status_format_text(answer, (int64_t) (clock_now_usec(CLOCK_REALTIME) / USEC_PER_MSEC), stdout);
                break;
        case STATUS_FORMAT_JSON: {
                char *s = cJSON_Print(answer);
                r = s && printf("%s\n", s) >= 0 && fflush(stdout) == 0 ? 0 : -EIO;
                free(s);
                break;
        }
        case STATUS_FORMAT_PROMETHEUS:
                r = status_format_prometheus(answer, stdout);
                break;
        case STATUS_FORMAT_OPENMETRICS:
                r = status_format_openmetrics(answer, stdout);
                break;
        }
        cJSON_Delete(answer);
        if (r < 0) {
                fprintf(stderr, "sensor-collector status: failed to write the answer: %s\n", strerror(-r));
                return STATUS_EXIT_UNKNOWN;
        }
        return health;
}
