/* SPDX-License-Identifier: MIT */
/* Test helpers that run real components; see testlib.h. */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* mosquitto.h names its protocol numbers with macros that collide with config.h's MqttProtocol
 * enumerators (see mqtt-task.c). */
enum {
        TL_MQTT_PROTOCOL_NUMBER_V311 = MQTT_PROTOCOL_V311,
};
#undef MQTT_PROTOCOL_V31
#undef MQTT_PROTOCOL_V311
#undef MQTT_PROTOCOL_V5

#include "collector/config.h"
#include "collector/ingest.h"
#include "collector/macro.h"
#include "collector/store.h"
#include "collector/task.h"
#include "testlib.h"

#define MAX_TRACKED 64

static char *tmpdirs[MAX_TRACKED];
static size_t n_tmpdirs;
static pid_t children[MAX_TRACKED];
static size_t n_children;
static bool atexit_done;

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) st;
        (void) flag;
        (void) ftw;
        (void) remove(path);
        return 0;
}

static void cleanup_at_exit(void) {
        for (size_t i = 0; i < n_children; i++)
                if (children[i] > 0)
                        kill(children[i], SIGKILL);
        for (size_t i = 0; i < n_children; i++)
                if (children[i] > 0)
                        (void) waitpid(children[i], NULL, 0);
        if (!getenv("SC_TEST_KEEP"))
                for (size_t i = 0; i < n_tmpdirs; i++)
                        (void) nftw(tmpdirs[i], rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void ensure_atexit(void) {
        if (!atexit_done) {
                atexit(cleanup_at_exit);
                atexit_done = true;
        }
}

int64_t tl_now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void tl_sleep_ms(int ms) {
        struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

const char *tl_tmpdir(void) {
        char tmpl[256];
        const char *base = getenv("TMPDIR");

        ensure_atexit();
        snprintf(tmpl, sizeof(tmpl), "%s/sc-test.XXXXXX", base && *base ? base : "/tmp");
        ck_assert_msg(mkdtemp(tmpl), "mkdtemp: %s", strerror(errno));
        ck_assert(n_tmpdirs < MAX_TRACKED);
        tmpdirs[n_tmpdirs] = strdup(tmpl);
        return tmpdirs[n_tmpdirs++];
}

const char *tl_write_file(const char *dir, const char *name, const char *text) {
        static char paths[MAX_TRACKED][300];
        static size_t next;
        char *p = paths[next++ % MAX_TRACKED];
        FILE *f;

        snprintf(p, 300, "%s/%s", dir, name);
        f = fopen(p, "we");
        ck_assert_msg(f, "fopen %s: %s", p, strerror(errno));
        fputs(text, f);
        ck_assert(fclose(f) == 0);
        return p;
}

char *tl_read_file(const char *path) {
        FILE *f = fopen(path, "re");
        char *buf = NULL;
        size_t size = 0, len = 0;

        if (!f)
                return NULL;
        for (;;) {
                if (len + 4096 + 1 > size) {
                        size = (size + 4096) * 2;
                        buf = realloc(buf, size);
                        ck_assert(buf);
                }
                size_t k = fread(buf + len, 1, size - len - 1, f);
                len += k;
                if (k == 0)
                        break;
        }
        fclose(f);
        buf[len] = 0;
        return buf;
}

/* With SC_TEST_DAEMON_WRAPPER set (words separated by spaces, e.g. "valgrind --leak-check=full
 * --log-file=/tmp/vg/%p.log"), the daemon runs under that command; other programs run as they are.
 * For memory checking the whole suite; see docs/RELIABILITY.md. In the child, before exec. */
static void exec_maybe_wrapped(char *const argv[]) {
        const char *wrapper = getenv("SC_TEST_DAEMON_WRAPPER");
        char *words[64], *copy, *save = NULL;
        size_t n = 0;

        if (wrapper && *wrapper && streq(argv[0], SC_BINARY) && (copy = strdup(wrapper))) {
                for (char *w = strtok_r(copy, " ", &save); w && n < 32; w = strtok_r(NULL, " ", &save))
                        words[n++] = w;
                for (size_t i = 0; argv[i] && n < ELEMENTSOF(words) - 1; i++)
                        words[n++] = argv[i];
                words[n] = NULL;
                execvp(words[0], words);
                return;
        }
        execvp(argv[0], argv);
}

pid_t tl_spawn(char *const argv[], char *const env[], const char *out_path, const char *err_path) {
        pid_t parent = getpid(), pid;

        ensure_atexit();
        fflush(NULL);
        pid = fork();
        ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0) {
                sigset_t all;

                /* Die with the test, whatever happens to it. */
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(127);
                sigemptyset(&all);
                sigprocmask(SIG_SETMASK, &all, NULL);
                if (out_path) {
                        int fd = open(out_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                        if (fd >= 0)
                                dup2(fd, STDOUT_FILENO);
                }
                if (err_path) {
                        int fd = open(err_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                        if (fd >= 0)
                                dup2(fd, STDERR_FILENO);
                }
                for (size_t i = 0; env && env[i]; i++)
                        putenv(env[i]);
                exec_maybe_wrapped(argv);
                fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
                _exit(127);
        }
        if (n_children < MAX_TRACKED)
                children[n_children++] = pid;
        return pid;
}

static void untrack(pid_t pid) {
        for (size_t i = 0; i < n_children; i++)
                if (children[i] == pid)
                        children[i] = 0;
}

int tl_wait(pid_t pid, int timeout_ms) {
        int64_t deadline = tl_now_ms() + timeout_ms;
        int status;

        for (;;) {
                pid_t r = waitpid(pid, &status, WNOHANG);
                if (r == pid) {
                        untrack(pid);
                        if (WIFEXITED(status))
                                return WEXITSTATUS(status);
                        return 128 + WTERMSIG(status);
                }
                if (r < 0)
                        return -errno;
                if (tl_now_ms() >= deadline)
                        return -ETIMEDOUT;
                tl_sleep_ms(5);
        }
}

void tl_kill(pid_t pid, int sig) {
        if (pid <= 0)
                return;
        kill(pid, sig);
        if (tl_wait(pid, 5000) == -ETIMEDOUT) {
                kill(pid, SIGKILL);
                (void) tl_wait(pid, 5000);
        }
}

bool tl_wait_until(bool (*cond)(void *userdata), void *userdata, int timeout_ms) {
        int64_t deadline = tl_now_ms() + timeout_ms;

        for (;;) {
                if (cond(userdata))
                        return true;
                if (tl_now_ms() >= deadline)
                        return cond(userdata);
                tl_sleep_ms(10);
        }
}

int tl_free_port(void) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(a);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        ck_assert(fd >= 0);
        ck_assert(bind(fd, (struct sockaddr *) &a, sizeof(a)) == 0);
        ck_assert(getsockname(fd, (struct sockaddr *) &a, &len) == 0);
        close(fd);
        return ntohs(a.sin_port);
}

int tl_run(char *const argv[], char *const env[], char **ret_output, int timeout_ms) {
        static const char *dir;
        static unsigned n_runs;
        char path[400];
        pid_t pid;
        int r;

        /* One scratch directory for every run of this process, a file per run. */
        if (!dir)
                dir = tl_tmpdir();
        snprintf(path, sizeof(path), "%s/output.%u", dir, n_runs++);
        pid = tl_spawn(argv, env, path, path);
        r = tl_wait(pid, timeout_ms);
        if (r == -ETIMEDOUT)
                tl_kill(pid, SIGKILL);
        if (ret_output) {
                *ret_output = tl_read_file(path);
                if (!*ret_output)
                        *ret_output = strdup("");
        }
        (void) unlink(path);
        return r;
}

void tl_run_ok(char *const argv[]) {
        char *out = NULL;
        int r = tl_run(argv, NULL, &out, 20000);

        /* On stderr: a compiler's or openssl's complaint can be too long for a Check message. */
        if (r != 0)
                fprintf(stderr, "%s failed (%d): %s\n", argv[0], r, out);
        free(out);
        ck_assert_msg(r == 0, "%s failed (%d)", argv[0], r);
}

void tl_tls_make_ca(const char *dir, const char *name) {
        char key[300], crt[300], subj[64];

        snprintf(key, sizeof(key), "%s/%s.key", dir, name);
        snprintf(crt, sizeof(crt), "%s/%s.crt", dir, name);
        snprintf(subj, sizeof(subj), "/CN=%s", name);
        tl_run_ok((char *[]){ "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                              "-keyout", key, "-out", crt, "-subj", subj, "-days", "2", NULL });
}

void tl_tls_make_server_cert(const char *dir, const char *ca, const char *san) {
        char key[300], csr[300], crt[300], ca_crt[300], ca_key[300], ext[300], ext_text[300];

        snprintf(key, sizeof(key), "%s/server.key", dir);
        snprintf(csr, sizeof(csr), "%s/server.csr", dir);
        snprintf(crt, sizeof(crt), "%s/server.crt", dir);
        snprintf(ca_crt, sizeof(ca_crt), "%s/%s.crt", dir, ca);
        snprintf(ca_key, sizeof(ca_key), "%s/%s.key", dir, ca);
        snprintf(ext_text, sizeof(ext_text), "subjectAltName=%s\n", san);
        snprintf(ext, sizeof(ext), "%s", tl_write_file(dir, "server.ext", ext_text));
        tl_run_ok((char *[]){ "openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                              "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1", NULL });
        tl_run_ok((char *[]){ "openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-out",
                              crt, "-days", "2", "-extfile", ext, NULL });
}

static bool broker_answers(void *userdata) {
        TlBroker *b = userdata;
        char port[16];
        char *argv[] = { "mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-t", "$SYS/broker/version",
                         "-C", "1", "-W", "1", NULL };

        snprintf(port, sizeof(port), "%d", b->port);
        return tl_run(argv, NULL, NULL, 3000) == 0;
}

void tl_broker_start(TlBroker *b, const char *dir, const char *extra_conf) {
        char conf[8192], conf_path[300], log_path[300];
        char *argv[] = { "mosquitto", "-c", conf_path, NULL };

        if (b->port == 0)
                b->port = tl_free_port();
        snprintf(b->dir, sizeof(b->dir), "%s", dir);
        snprintf(conf, sizeof(conf),
                 "listener %d 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\n"
                 "user root\nautosave_interval 1\n%s\n",
                 b->port, dir, extra_conf ? extra_conf : "");
        snprintf(conf_path, sizeof(conf_path), "%s/mosquitto.conf", dir);
        snprintf(log_path, sizeof(log_path), "%s/mosquitto.log", dir);
        tl_write_file(dir, "mosquitto.conf", conf);
        b->pid = tl_spawn(argv, NULL, log_path, log_path);
        ck_assert_msg(tl_wait_until(broker_answers, b, 10000), "mosquitto did not come up on port %d", b->port);
}

void tl_broker_stop(TlBroker *b) {
        tl_kill(b->pid, SIGTERM);
        b->pid = 0;
}

static bool pty_links_exist(void *userdata) {
        TlPty *p = userdata;
        return access(p->link, F_OK) == 0 && access(p->sim, F_OK) == 0;
}

void tl_pty_start(TlPty *p, const char *dir) {
        char a[400], b[400], log_path[300];
        char *argv[] = { "socat", "-d", "-d", a, b, NULL };

        snprintf(p->dir, sizeof(p->dir), "%s", dir);
        snprintf(p->link, sizeof(p->link), "%s/dev", dir);
        snprintf(p->sim, sizeof(p->sim), "%s/sim", dir);
        /* libserialport only takes names under /dev/; this one resolves to our link. */
        snprintf(p->device, sizeof(p->device), "/dev/../../../../../..%s", p->link);
        snprintf(a, sizeof(a), "pty,raw,echo=0,link=%s", p->link);
        snprintf(b, sizeof(b), "pty,raw,echo=0,link=%s", p->sim);
        snprintf(log_path, sizeof(log_path), "%s/socat.log", dir);
        p->pid = tl_spawn(argv, NULL, log_path, log_path);
        ck_assert_msg(tl_wait_until(pty_links_exist, p, 5000), "socat did not create %s", p->link);
}

void tl_pty_stop(TlPty *p) {
        tl_kill(p->pid, SIGTERM);
        p->pid = 0;
}

void tl_pty_write(TlPty *p, const void *data, size_t size) {
        int fd = open(p->sim, O_WRONLY | O_NOCTTY | O_CLOEXEC);
        const char *d = data;

        ck_assert_msg(fd >= 0, "open %s: %s", p->sim, strerror(errno));
        while (size > 0) {
                ssize_t k = write(fd, d, size);
                if (k < 0 && errno == EINTR)
                        continue;
                ck_assert_msg(k > 0, "write %s: %s", p->sim, strerror(errno));
                d += k;
                size -= (size_t) k;
        }
        close(fd);
}

size_t tl_pty_try_write(TlPty *p, const void *data, size_t size) {
        int fd = open(p->sim, O_WRONLY | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
        const char *d = data;
        size_t done = 0;

        ck_assert_msg(fd >= 0, "open %s: %s", p->sim, strerror(errno));
        while (done < size) {
                ssize_t k = write(fd, d + done, size - done);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0 && errno == EAGAIN)
                        break;
                ck_assert_msg(k > 0, "write %s: %s", p->sim, strerror(errno));
                done += (size_t) k;
        }
        close(fd);
        return done;
}

void tl_notify_open(TlNotify *n, const char *dir) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        memset(n, 0, sizeof(*n));
        snprintf(n->path, sizeof(n->path), "%s/notify", dir);
        ck_assert(strlen(n->path) < sizeof(sa.sun_path));
        strcpy(sa.sun_path, n->path);
        /* A daemon restarted in the same directory gets a fresh socket at the same path. */
        (void) unlink(n->path);
        n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        ck_assert(n->fd >= 0);
        ck_assert_msg(bind(n->fd, (struct sockaddr *) &sa, sizeof(sa)) == 0, "bind %s: %s", n->path, strerror(errno));
}

void tl_notify_close(TlNotify *n) {
        if (n->fd > 0)
                close(n->fd);
        n->fd = -1;
}

void tl_notify_drain(TlNotify *n) {
        char buf[4096];

        for (;;) {
                ssize_t k = recv(n->fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
                if (k < 0)
                        return;
                if (n->len + (size_t) k + 2 < sizeof(n->log)) {
                        memcpy(n->log + n->len, buf, (size_t) k);
                        n->len += (size_t) k;
                        n->log[n->len++] = '\n';
                        n->log[n->len] = 0;
                }
        }
}

bool tl_notify_wait(TlNotify *n, const char *needle, int timeout_ms) {
        int64_t deadline = tl_now_ms() + timeout_ms;

        for (;;) {
                tl_notify_drain(n);
                if (strstr(n->log, needle))
                        return true;
                int64_t left = deadline - tl_now_ms();
                if (left <= 0)
                        return false;
                struct pollfd pfd = { .fd = n->fd, .events = POLLIN };
                (void) poll(&pfd, 1, (int) MIN(left, 100));
        }
}

/* The AddressSanitizer runtime of this (sanitizer-built) program, or NULL. An ASan-built daemon
 * refuses to start unless its runtime comes first in the initial library list, so a preloaded
 * shim must follow it in LD_PRELOAD. */
static const char *sanitizer_runtime(void) {
#if defined(__SANITIZE_ADDRESS__)
        Dl_info info;
        void *sym = dlsym(RTLD_DEFAULT, "__asan_init");

        if (sym && dladdr(sym, &info) && info.dli_fname && strstr(info.dli_fname, "libasan"))
                return info.dli_fname;
#endif
        return NULL;
}

void tl_daemon_start(TlDaemon *d, const char *dir, const char *config_json, char *const extra_args[],
                     char *const extra_env[]) {
        static char notify_env[400], preload_env[600];
        char *argv[32] = { SC_BINARY, "--config", d->config };
        char *env[32];
        size_t n = 3, m = 0;

        memset(d, 0, sizeof(*d));
        snprintf(d->config, sizeof(d->config), "%s", tl_write_file(dir, "config.json", config_json));
        snprintf(d->log, sizeof(d->log), "%s/daemon.log", dir);
        tl_notify_open(&d->notify, dir);
        for (size_t i = 0; extra_args && extra_args[i] && n < ELEMENTSOF(argv) - 1; i++)
                argv[n++] = extra_args[i];
        argv[n] = NULL;

        snprintf(notify_env, sizeof(notify_env), "NOTIFY_SOCKET=%s", d->notify.path);
        env[m++] = notify_env;
#ifdef SC_PTYSHIM
        {
                const char *old = getenv("LD_PRELOAD"), *runtime = sanitizer_runtime();
                snprintf(preload_env, sizeof(preload_env), "LD_PRELOAD=%s%s%s%s%s", runtime ? runtime : "",
                         runtime ? ":" : "", old && *old ? old : "", old && *old ? ":" : "", SC_PTYSHIM);
                env[m++] = preload_env;
        }
#else
        (void) preload_env;
        (void) sanitizer_runtime;
#endif
        for (size_t i = 0; extra_env && extra_env[i] && m < ELEMENTSOF(env) - 1; i++)
                env[m++] = extra_env[i];
        env[m] = NULL;
        d->pid = tl_spawn(argv, env, d->log, d->log);
}

int tl_daemon_wait(TlDaemon *d, int timeout_ms) {
        int r = tl_wait(d->pid, timeout_ms);

        if (r != -ETIMEDOUT)
                d->pid = 0;
        tl_notify_drain(&d->notify);
        return r;
}

char *tl_daemon_log(TlDaemon *d) {
        char *s = tl_read_file(d->log);
        return s ? s : strdup("");
}

int64_t tl_sql_int(const char *db_path, const char *sql) {
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;
        int64_t v = -1;

        if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
                goto finish;
        sqlite3_busy_timeout(db, 2000);
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
                goto finish;
        if (sqlite3_step(st) == SQLITE_ROW)
                v = sqlite3_column_int64(st, 0);
finish:
        sqlite3_finalize(st);
        sqlite3_close(db);
        return v;
}

/* Each test runs in a child (CK_FORK) that a failed assertion ends without exit handlers, so
 * the directories it made would stay behind. They are made inside one directory per suite
 * (TMPDIR points there for the children), which this process removes when the suite ends,
 * whatever the tests did. 0711: a service running as another user may pass through. */
int tl_run_suite(Suite *s) {
        const char *base = getenv("TMPDIR");
        char dir[256], *saved = base ? strdup(base) : NULL;
        bool own = false;
        SRunner *sr;
        int failed;

        snprintf(dir, sizeof(dir), "%s/sc-suite.XXXXXX", base && *base ? base : "/tmp");
        if (mkdtemp(dir) && chmod(dir, 0711) == 0 && setenv("TMPDIR", dir, 1) == 0)
                own = true;
        else
                fprintf(stderr, "testlib: no directory for this suite (%s), tests use TMPDIR as it is\n",
                        strerror(errno));
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        if (own) {
                if (saved)
                        (void) setenv("TMPDIR", saved, 1);
                else
                        (void) unsetenv("TMPDIR");
                if (getenv("SC_TEST_KEEP"))
                        fprintf(stderr, "testlib: kept %s (SC_TEST_KEEP)\n", dir);
                else
                        (void) nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        }
        free(saved);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

void tl_assert_integrity(const char *db_path, bool read_only) {
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;

        ck_assert_int_eq(sqlite3_open_v2(db_path, &db, read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE, NULL),
                         SQLITE_OK);
        sqlite3_busy_timeout(db, 2000);
        ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
        ck_assert_msg(streq((const char *) sqlite3_column_text(st, 0), "ok"), "integrity_check: %s",
                      sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
        sqlite3_close(db);
}

typedef struct SqlAtLeast {
        const char *db_path, *sql;
        int64_t want;
} SqlAtLeast;

static bool sql_at_least(void *userdata) {
        const SqlAtLeast *w = userdata;
        return tl_sql_int(w->db_path, w->sql) >= w->want;
}

bool tl_wait_sql_at_least(const char *db_path, const char *sql, int64_t want, int timeout_ms) {
        SqlAtLeast w = { db_path, sql, want };
        return tl_wait_until(sql_at_least, &w, timeout_ms);
}

void tl_daemon_start_ready(TlDaemon *d, const char *dir, const char *config_json, char *const extra_args[],
                           char *const extra_env[], int timeout_ms) {
        tl_daemon_start(d, dir, config_json, extra_args, extra_env);
        if (!tl_notify_wait(&d->notify, "READY=1", timeout_ms)) {
                char *log = tl_daemon_log(d);
                ck_abort_msg("no READY=1 within %d ms; daemon log:\n%s", timeout_ms, log);
        }
}

typedef struct SqlEquals {
        const char *db_path, *sql;
        int64_t want;
} SqlEquals;

static bool sql_equals(void *userdata) {
        const SqlEquals *w = userdata;
        return tl_sql_int(w->db_path, w->sql) == w->want;
}

bool tl_wait_sql_equals(const char *db_path, const char *sql, int64_t want, int timeout_ms) {
        SqlEquals w = { db_path, sql, want };
        return tl_wait_until(sql_equals, &w, timeout_ms);
}

void tl_daemon_expect_sql(TlDaemon *d, const char *db_path, const char *sql, int64_t want, bool at_least,
                          int timeout_ms) {
        bool ok = at_least ? tl_wait_sql_at_least(db_path, sql, want, timeout_ms)
                           : tl_wait_sql_equals(db_path, sql, want, timeout_ms);

        if (!ok) {
                char *log = tl_daemon_log(d);
                ck_abort_msg("%s: want %s%" PRId64 ", got %" PRId64 " after %d ms; daemon log:\n%s", sql,
                             at_least ? "at least " : "", want, tl_sql_int(db_path, sql), timeout_ms, log);
        }
}

typedef struct LogHas {
        TlDaemon *d;
        const char *needle;
} LogHas;

bool tl_daemon_log_has(TlDaemon *d, const char *needle) {
        char *log = tl_daemon_log(d);
        bool found = strstr(log, needle) != NULL;

        free(log);
        return found;
}

static bool log_has(void *userdata) {
        const LogHas *w = userdata;
        return tl_daemon_log_has(w->d, w->needle);
}

bool tl_daemon_wait_log(TlDaemon *d, const char *needle, int timeout_ms) {
        LogHas w = { d, needle };
        return tl_wait_until(log_has, &w, timeout_ms);
}

void tl_daemon_expect_log(TlDaemon *d, const char *needle, int timeout_ms) {
        if (!tl_daemon_wait_log(d, needle, timeout_ms)) {
                char *log = tl_daemon_log(d);
                ck_abort_msg("no '%s' in the daemon log within %d ms:\n%s", needle, timeout_ms, log);
        }
}

void tl_daemon_expect_ready(TlDaemon *d, int timeout_ms) {
        if (!tl_notify_wait(&d->notify, "READY=1", timeout_ms)) {
                char *log = tl_daemon_log(d);
                ck_abort_msg("no READY=1 within %d ms; daemon log:\n%s", timeout_ms, log);
        }
}

unsigned tl_assert_sockets_cloexec(pid_t pid) {
        char dir[64], path[400], link[256], *info;
        unsigned n = 0;
        DIR *d;
        struct dirent *de;

        snprintf(dir, sizeof(dir), "/proc/%d/fd", (int) pid);
        d = opendir(dir);
        ck_assert_msg(d, "opendir %s: %s", dir, strerror(errno));
        while ((de = readdir(d))) {
                const char *flags;
                ssize_t k;

                if (de->d_name[0] == '.')
                        continue;
                snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
                k = readlink(path, link, sizeof(link) - 1);
                if (k < 0)
                        continue;
                link[k] = 0;
                if (strncmp(link, "socket:", 7) != 0)
                        continue;
                snprintf(path, sizeof(path), "/proc/%d/fdinfo/%s", (int) pid, de->d_name);
                info = tl_read_file(path);
                ck_assert_ptr_nonnull(info);
                flags = strstr(info, "flags:");
                ck_assert_ptr_nonnull(flags);
                ck_assert_msg(strtoul(flags + 6, NULL, 8) & O_CLOEXEC, "fd %s (%s) of the daemon lacks O_CLOEXEC: %s",
                              de->d_name, link, info);
                free(info);
                n++;
        }
        closedir(d);
        return n;
}

void tl_mqtt_publish_once(int port, const char *topic, const char *payload) {
        char port_arg[16];
        char *argv[] = { "mosquitto_pub", "-p", port_arg, "-q", "1", "-t", (char *) topic, "-m", (char *) payload, NULL };

        snprintf(port_arg, sizeof(port_arg), "%d", port);
        ck_assert_int_eq(tl_run(argv, NULL, NULL, 10000), 0);
}

void tl_serial_store_config(char *buf, size_t size, const char *device, const char *db_path, int commit_interval_ms,
                            int commit_max_rows) {
        int n = snprintf(buf, size,
                         "{ \"serial\": { \"enabled\": true, \"device\": \"%s\", \"format\": \"json\" },\n"
                         "  \"mqtt\": { \"enabled\": false },\n"
                         "  \"store\": { \"path\": \"%s\", \"commit_interval_ms\": %d, \"commit_max_rows\": %d },\n"
                         "  \"supervisor\": { \"stop_timeout\": 5 } }\n",
                         device, db_path, commit_interval_ms, commit_max_rows);

        ck_assert_msg(n >= 0 && (size_t) n < size, "configuration does not fit in %zu bytes", size);
}

void tl_store_config_init(StoreConfig *config, char *path, size_t path_size, const char *dir) {
        int n = snprintf(path, path_size, "%s/readings.db", dir ? dir : tl_tmpdir());

        ck_assert_msg(n >= 0 && (size_t) n < path_size, "store path does not fit in %zu bytes", path_size);
        *config = (StoreConfig){
                .path = path,
                .synchronous = STORE_SYNCHRONOUS_NORMAL,
                .commit_interval_ms = 10000,
                .commit_max_rows = 100000,
        };
}

void tl_store_task_start(sd_event *event, const StoreConfig *config, Task **ret_task, Store **ret_store) {
        ck_assert_int_eq(store_task_new(event, config, ret_task, ret_store), 0);
        ck_assert_int_eq(task_start(*ret_task), 0);
}

Task *tl_task_stop_free(Task *t) {
        if (!t)
                return NULL;
        (void) task_stop(t);
        return task_free(t);
}

Config *tl_config_with_sensors(const char *sensors_json) {
        char text[4096];
        Config *c = NULL;
        char **errors = NULL;
        int n;

        n = snprintf(text, sizeof(text), "{ \"mqtt\": { \"topics\": [ { \"filter\": \"a/+sensor\" } ] }, \"sensors\": %s }",
                     sensors_json);
        ck_assert_msg(n >= 0 && (size_t) n < sizeof(text), "configuration does not fit in %zu bytes", sizeof(text));
        ck_assert_msg(config_parse("mem.json", text, strlen(text), &c, &errors) == 0, "%s",
                      errors && errors[0] ? errors[0] : "?");
        return c;
}

const IngestInput tl_serial_ingest_input = {
        .task = "serial",
        .source = READING_SOURCE_SERIAL,
        .origin_field = "DEVICE",
        .reject_noun = "frame from",
        .suppressed_noun = "frames from",
        .suppressed_names_origin = true,
};

void tl_daemon_stop_ok(TlDaemon *d, int timeout_ms) {
        int status;

        kill(d->pid, SIGTERM);
        status = tl_daemon_wait(d, timeout_ms);
        if (status != 0) {
                char *log = tl_daemon_log(d);
                ck_abort_msg("exit status %d after SIGTERM; log:\n%s", status, log);
        }
}

/* ---- a consumer of upstream forwarding ---- */

static int64_t consumer_wall_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void consumer_on_connect(struct mosquitto *mosq, void *userdata, int rc) {
        TlConsumer *c = userdata;

        c->connected = rc == 0;
        if (rc == 0) {
                char filter[96];

                snprintf(filter, sizeof(filter), "sensor-collector/%s/#", c->gateway ? c->gateway : "+");
                (void) mosquitto_subscribe(mosq, NULL, filter, 1);
        }
}

static void consumer_on_subscribe(struct mosquitto *mosq, void *userdata, int mid, int n, const int *granted) {
        TlConsumer *c = userdata;
        (void) mosq;
        (void) mid;

        c->subscribed = n == 1 && granted[0] == 1;
}

static void consumer_on_disconnect(struct mosquitto *mosq, void *userdata, int rc) {
        TlConsumer *c = userdata;
        (void) mosq;
        (void) rc;

        c->connected = c->subscribed = false;
}

static void consumer_on_message(struct mosquitto *mosq, void *userdata, const struct mosquitto_message *m) {
        TlConsumer *c = userdata;
        _cleanup_free_ char *text = NULL;
        const char *p, *store;
        bool historical;
        (void) mosq;

        text = strndup(m->payload ? m->payload : "", (size_t) m->payloadlen);
        ck_assert(text);
        if (strstr(m->topic, "/status")) {
                snprintf(c->status, sizeof(c->status), "%s", text);
                return;
        }
        c->messages++;
        if (c->gateway) {
                char want[96];

                snprintf(want, sizeof(want), "{\"gateway\":\"%s\",", c->gateway);
                c->other_gateway = c->other_gateway || strncmp(text, want, strlen(want)) != 0;
                ck_assert_msg(strncmp(text, want, strlen(want)) == 0, "%s on %s", text, m->topic);
        }
        store = strstr(text, "\"store\":\"");
        ck_assert_msg(store, "no store id in %s", text);
        if (!c->store_id[0])
                snprintf(c->store_id, sizeof(c->store_id), "%.32s", store + 9);
        else if (strncmp(c->store_id, store + 9, 32) != 0)
                c->other_store = true;
        historical = strstr(text, "\"historical\":true") != NULL;
        if (historical) {
                c->historical++;
                c->last_historical_ms = tl_now_ms();
        } else {
                ck_assert_msg(strstr(text, "\"historical\":false"), "no marker in %s", text);
                c->live++;
                if (!c->first_live_ms)
                        c->first_live_ms = tl_now_ms();
                p = strstr(text, "\"seq\":");
                if (p && strtoll(p + 6, NULL, 10) >= 1 && strtoll(p + 6, NULL, 10) <= 4)
                        snprintf(c->live_text[strtoll(p + 6, NULL, 10)], sizeof(c->live_text[0]), "%s", text);
                p = strstr(text, "\"ts\":");
                if (c->draining && p && c->n_latencies < TL_CONSUMER_LATENCIES_MAX)
                        c->latencies[c->n_latencies++] = consumer_wall_ms() - strtoll(p + 5, NULL, 10);
        }
        for (p = strstr(text, "\"seq\":"); p; p = strstr(p + 1, "\"seq\":")) {
                long long seq = strtoll(p + 6, NULL, 10);
                /* This reading's flags: the first array after its seq. */
                const char *f = strstr(p, "\"flags\":["), *e = f ? strchr(f, ']') : NULL;

                ck_assert_msg(seq > 0 && seq <= TL_CONSUMER_SEQ_MAX, "seq %lld", seq);
                ck_assert_msg(f && e, "no flags after seq %lld in %s", seq, text);
                c->unsynced[seq] = memmem(f, (size_t) (e - f), "\"unsynced\"", 10) != NULL;
                if (c->count[seq] > 0) {
                        if (historical) {
                                c->repeats_historical++;
                                c->repeat_kind[seq] |= 2;
                        } else {
                                c->repeats_live++;
                                c->repeat_kind[seq] |= 1;
                        }
                }
                c->count[seq]++;
                c->readings++;
        }
}

void tl_consumer_run(TlConsumer *c, int ms) {
        int64_t end = tl_now_ms() + ms;

        do {
                int rc = mosquitto_loop(c->mosq, 10, 100);

                if (rc == MOSQ_ERR_NO_CONN || rc == MOSQ_ERR_CONN_LOST || rc == MOSQ_ERR_ERRNO) {
                        tl_sleep_ms(50);
                        (void) mosquitto_reconnect(c->mosq);
                }
        } while (tl_now_ms() < end);
}

void tl_consumer_open(TlConsumer *c, int port, const char *client_id, const char *gateway) {
        int64_t deadline = tl_now_ms() + 10000;

        memset(c, 0, sizeof(*c));
        mosquitto_lib_init();
        c->port = port;
        c->gateway = gateway;
        c->mosq = mosquitto_new(client_id, false, c);
        ck_assert(c->mosq);
        ck_assert_int_eq(mosquitto_int_option(c->mosq, MOSQ_OPT_PROTOCOL_VERSION, TL_MQTT_PROTOCOL_NUMBER_V311), MOSQ_ERR_SUCCESS);
        mosquitto_connect_callback_set(c->mosq, consumer_on_connect);
        mosquitto_subscribe_callback_set(c->mosq, consumer_on_subscribe);
        mosquitto_disconnect_callback_set(c->mosq, consumer_on_disconnect);
        mosquitto_message_callback_set(c->mosq, consumer_on_message);
        (void) mosquitto_connect(c->mosq, "127.0.0.1", port, 30);
        while (!c->subscribed && tl_now_ms() < deadline)
                tl_consumer_run(c, 20);
        ck_assert_msg(c->subscribed, "the consumer '%s' did not get a QoS 1 subscription on port %d", client_id, port);
}

void tl_consumer_close(TlConsumer *c) {
        mosquitto_disconnect(c->mosq);
        mosquitto_destroy(c->mosq);
        c->mosq = NULL;
}

/* ---- an input publisher ---- */

static void tl_pub_on_connect(struct mosquitto *mosq, void *userdata, int rc) {
        (void) mosq;
        ((TlPub *) userdata)->connected = rc == 0;
}

static void tl_pub_on_disconnect(struct mosquitto *mosq, void *userdata, int rc) {
        (void) mosq;
        (void) rc;
        ((TlPub *) userdata)->connected = false;
}

static void tl_pub_on_publish(struct mosquitto *mosq, void *userdata, int mid) {
        (void) mosq;
        (void) mid;
        ((TlPub *) userdata)->acked++;
}

bool tl_pub_open_as(TlPub *p, int port, const char *client_id, bool clean_session) {
        int64_t deadline = tl_now_ms() + 5000;

        mosquitto_lib_init();
        memset(p, 0, sizeof(*p));
        p->mosq = mosquitto_new(client_id, clean_session, p);
        if (!p->mosq)
                return false;
        mosquitto_connect_callback_set(p->mosq, tl_pub_on_connect);
        mosquitto_disconnect_callback_set(p->mosq, tl_pub_on_disconnect);
        mosquitto_publish_callback_set(p->mosq, tl_pub_on_publish);
        if (mosquitto_connect(p->mosq, "127.0.0.1", port, 30) != MOSQ_ERR_SUCCESS)
                return false;
        while (!p->connected && tl_now_ms() < deadline)
                (void) mosquitto_loop(p->mosq, 20, 1);
        return p->connected;
}

bool tl_pub_open(TlPub *p, int port) {
        return tl_pub_open_as(p, port, NULL, true);
}

bool tl_pub_publish(TlPub *p, const char *topic, const void *payload, size_t size, int qos, bool retain) {
        if (size > INT_MAX ||
            mosquitto_publish(p->mosq, NULL, topic, (int) size, payload, qos, retain) != MOSQ_ERR_SUCCESS)
                return false;
        p->published++;
        return true;
}

bool tl_pub_reading(TlPub *p, int i) {
        char topic[64], payload[128];

        snprintf(topic, sizeof(topic), "gh/s%02d/data", i % 30);
        snprintf(payload, sizeof(payload), "{\"temp\": %d.5, \"ts\": %" PRId64 "}", i, (int64_t) 1750000000000 + i);
        return tl_pub_publish(p, topic, payload, strlen(payload), 1, false);
}

bool tl_pub_flush(TlPub *p, int timeout_ms) {
        int64_t deadline = tl_now_ms() + timeout_ms;

        while (p->acked < p->published && tl_now_ms() < deadline)
                (void) mosquitto_loop(p->mosq, 20, 1);
        return p->acked >= p->published;
}

void tl_pub_send(TlPub *p, const char *topic, const void *payload, size_t size, int qos, bool retain) {
        ck_assert_msg(tl_pub_publish(p, topic, payload, size, qos, retain), "libmosquitto refused a publish to '%s'", topic);
        ck_assert_msg(tl_pub_flush(p, 5000), "publish to '%s' not acknowledged", topic);
}

void tl_pub_text(TlPub *p, const char *topic, const char *text) {
        tl_pub_send(p, topic, text, strlen(text), 1, false);
}

void tl_pub_readings(TlPub *p, int first, int last) {
        for (int i = first; i <= last; i++) {
                ck_assert(tl_pub_reading(p, i));
                if (i % 50 == 0)
                        (void) mosquitto_loop(p->mosq, 0, 1);
        }
        ck_assert_msg(tl_pub_flush(p, 30000), "%d of %d readings acknowledged by the input broker", p->acked,
                      p->published);
}

void tl_pub_close(TlPub *p) {
        if (!p->mosq)
                return;
        /* The DISCONNECT goes out at once; a few rounds let libmosquitto see the broker close. */
        (void) mosquitto_disconnect(p->mosq);
        for (int i = 0; i < 5 && p->connected; i++)
                (void) mosquitto_loop(p->mosq, 10, 1);
        mosquitto_destroy(p->mosq);
        p->mosq = NULL;
}

uint64_t tl_consumer_have(const TlConsumer *c, int64_t n, uint64_t *ret_dups) {
        uint64_t have = 0, dups = 0;

        for (int64_t i = 1; i <= n; i++) {
                have += c->count[i] > 0;
                dups += c->count[i] > 1 ? c->count[i] - 1 : 0;
        }
        if (ret_dups)
                *ret_dups = dups;
        return have;
}

bool tl_consumer_wait_all(TlConsumer *c, int64_t n, int timeout_ms) {
        int64_t end = tl_now_ms() + timeout_ms;

        while (tl_now_ms() < end) {
                tl_consumer_run(c, 50);
                if (tl_consumer_have(c, n, NULL) == (uint64_t) n)
                        return true;
        }
        return false;
}

bool tl_consumer_wait_at_least(TlConsumer *c, uint64_t readings, int timeout_ms) {
        int64_t end = tl_now_ms() + timeout_ms;

        while (tl_now_ms() < end && c->readings < readings)
                tl_consumer_run(c, 20);
        return c->readings >= readings;
}

bool tl_consumer_wait_more(TlConsumer *c, uint64_t n, int timeout_ms) {
        return tl_consumer_wait_at_least(c, c->readings + n, timeout_ms);
}

void tl_consumer_print_repeats(const TlConsumer *c, int64_t n) {
        for (int64_t i = 1; i <= n; i++) {
                int64_t j = i;

                if (c->count[i] <= 1)
                        continue;
                while (j + 1 <= n && c->count[j + 1] == c->count[i] && c->repeat_kind[j + 1] == c->repeat_kind[i])
                        j++;
                fprintf(stderr, "  repeated seq %" PRId64 "..%" PRId64 ": x%u, the repeat in %s messages\n", i, j,
                        c->count[i], c->repeat_kind[i] == 1 ? "live" : c->repeat_kind[i] == 2 ? "backlog" : "live and backlog");
                i = j;
        }
}
