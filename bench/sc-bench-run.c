/* SPDX-License-Identifier: MIT */
/* Runs one command under a private NOTIFY_SOCKET and reports its timings and resource use as JSON. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Reports, as one JSON object on stdout:
 *   ready_ms            fork to the first READY=1 datagram (-1: never)
 *   idle_rss_kb         VmRSS sampled --idle-after ms after READY=1
 *   idle_anon_kb, idle_file_kb, idle_shmem_kb   its parts at the same moment (RssAnon: private
 *                       memory of the process; RssFile: pages of mapped files, shared libraries
 *                       above all; RssShmem: shared memory, SQLite's -shm file is a file mapping)
 *   failure_to_exit_ms  first stderr line containing --failure-marker to process exit (-1: none)
 *   exit_status, signal, user_s, sys_s, maxrss_kb   from wait4()
 * --stop-after-ready sends SIGTERM right after READY=1; --pid-file writes the child's pid;
 * --ready-file is created when READY=1 arrives. The
 * child's stderr is copied to --log FILE (or discarded). */

static double now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec * 1e3 + (double) ts.tv_nsec / 1e6;
}

typedef struct Rss {
        long total_kb, anon_kb, file_kb, shmem_kb;
} Rss;

/* VmRSS and its parts from /proc/PID/status; -1 for what is not there. */
static Rss rss_read(pid_t pid) {
        char path[64], line[256];
        Rss r = { -1, -1, -1, -1 };
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return r;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "VmRSS: %ld kB", &r.total_kb) != 1 && sscanf(line, "RssAnon: %ld kB", &r.anon_kb) != 1 &&
                    sscanf(line, "RssFile: %ld kB", &r.file_kb) != 1)
                        (void) sscanf(line, "RssShmem: %ld kB", &r.shmem_kb);
        fclose(f);
        return r;
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                { "stop-after-ready", no_argument, NULL, 's' },
                { "idle-after", required_argument, NULL, 'i' },
                { "failure-marker", required_argument, NULL, 'f' },
                { "pid-file", required_argument, NULL, 'p' },
                { "log", required_argument, NULL, 'l' },
                { "timeout", required_argument, NULL, 't' },
                { "ready-file", required_argument, NULL, 'r' },
                {},
        };
        const char *marker = NULL, *pid_file = NULL, *log_path = NULL, *ready_file = NULL;
        bool stop_after_ready = false;
        long idle_after_ms = -1, timeout_ms = 600000;
        char dir[] = "/tmp/sc-bench.XXXXXX";
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int c, nfd, errpipe[2], logfd = -1;
        double t0, ready_ms = -1, failure_ms = -1, exit_ms = -1;
        Rss idle = { -1, -1, -1, -1 };
        pid_t pid;

        while ((c = getopt_long(argc, argv, "+", options, NULL)) >= 0)
                switch (c) {
                case 's': stop_after_ready = true; break;
                case 'i': idle_after_ms = atol(optarg); break;
                case 'f': marker = optarg; break;
                case 'p': pid_file = optarg; break;
                case 'l': log_path = optarg; break;
                case 't': timeout_ms = atol(optarg); break;
                case 'r': ready_file = optarg; break;
                default:
                        fprintf(stderr, "usage: sc-bench-run [--stop-after-ready] [--idle-after MS] "
                                        "[--failure-marker TEXT] [--pid-file F] [--ready-file F] [--log F] [--timeout MS] -- CMD...\n");
                        return 64;
                }
        if (optind >= argc) {
                fprintf(stderr, "sc-bench-run: no command\n");
                return 64;
        }
        if (!mkdtemp(dir)) {
                perror("mkdtemp");
                return 1;
        }
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/notify", dir);
        nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (nfd < 0 || bind(nfd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || pipe2(errpipe, O_CLOEXEC) < 0) {
                perror("setup");
                return 1;
        }
        if (log_path)
                logfd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        t0 = now_ms();
        pid = fork();
        if (pid < 0) {
                perror("fork");
                return 1;
        }
        if (pid == 0) {
                dup2(errpipe[1], STDERR_FILENO);
                setenv("NOTIFY_SOCKET", sa.sun_path, 1);
                execvp(argv[optind], argv + optind);
                perror("exec");
                _exit(127);
        }
        close(errpipe[1]);
        if (pid_file) {
                FILE *f = fopen(pid_file, "we");
                if (f) {
                        fprintf(f, "%d\n", (int) pid);
                        fclose(f);
                }
        }

        char linebuf[8192];
        size_t linelen = 0;
        bool err_open = true;
        int status = 0;
        struct rusage ru = {};
        for (;;) {
                struct pollfd p[2] = { { .fd = nfd, .events = POLLIN }, { .fd = err_open ? errpipe[0] : -1, .events = POLLIN } };
                int wait_ms = 50;

                if (ready_ms >= 0 && idle_after_ms >= 0 && idle.total_kb < 0 && now_ms() - t0 >= ready_ms + (double) idle_after_ms)
                        idle = rss_read(pid);
                (void) poll(p, 2, wait_ms);
                if (p[0].revents & POLLIN) {
                        char buf[4096];
                        ssize_t k;
                        while ((k = recv(nfd, buf, sizeof(buf) - 1, 0)) > 0) {
                                buf[k] = 0;
                                if (ready_ms < 0 && strstr(buf, "READY=1")) {
                                        ready_ms = now_ms() - t0;
                                        if (ready_file) {
                                                int rfd = open(ready_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                                                if (rfd >= 0)
                                                        close(rfd);
                                        }
                                        if (stop_after_ready)
                                                kill(pid, SIGTERM);
                                }
                        }
                }
                if (p[1].revents & (POLLIN | POLLHUP)) {
                        ssize_t k = read(errpipe[0], linebuf + linelen, sizeof(linebuf) - linelen - 1);
                        if (k <= 0)
                                err_open = false;
                        else {
                                if (logfd >= 0)
                                        (void) !write(logfd, linebuf + linelen, (size_t) k);
                                linelen += (size_t) k;
                                linebuf[linelen] = 0;
                                if (marker && failure_ms < 0 && strstr(linebuf, marker))
                                        failure_ms = now_ms() - t0;
                                char *nl = strrchr(linebuf, '\n');
                                if (nl) {
                                        size_t rest = linelen - (size_t) (nl + 1 - linebuf);
                                        memmove(linebuf, nl + 1, rest);
                                        linelen = rest;
                                } else if (linelen > sizeof(linebuf) / 2)
                                        linelen = 0;
                        }
                }
                pid_t r = wait4(pid, &status, WNOHANG, &ru);
                if (r == pid) {
                        exit_ms = now_ms() - t0;
                        break;
                }
                if (now_ms() - t0 > (double) timeout_ms) {
                        kill(pid, SIGKILL);
                        wait4(pid, &status, 0, &ru);
                        exit_ms = now_ms() - t0;
                        break;
                }
        }
        unlink(sa.sun_path);
        rmdir(dir);
        printf("{\"ready_ms\":%.2f,\"idle_rss_kb\":%ld,\"idle_anon_kb\":%ld,\"idle_file_kb\":%ld,\"idle_shmem_kb\":%ld,"
               "\"failure_to_exit_ms\":%.2f,\"exit_status\":%d,"
               "\"signal\":%d,\"user_s\":%.3f,\"sys_s\":%.3f,\"maxrss_kb\":%ld,\"runtime_ms\":%.1f}\n",
               ready_ms, idle.total_kb, idle.anon_kb, idle.file_kb, idle.shmem_kb, failure_ms >= 0 ? exit_ms - failure_ms : -1.0,
               WIFEXITED(status) ? WEXITSTATUS(status) : -1, WIFSIGNALED(status) ? WTERMSIG(status) : 0,
               (double) ru.ru_utime.tv_sec + (double) ru.ru_utime.tv_usec / 1e6,
               (double) ru.ru_stime.tv_sec + (double) ru.ru_stime.tv_usec / 1e6, ru.ru_maxrss, exit_ms);
        return 0;
}
