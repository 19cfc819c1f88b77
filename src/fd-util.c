/* SPDX-License-Identifier: MIT */
/* Close-on-exec for descriptors a library opens without it. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>

#include "collector/fd-util.h"
#include "collector/macro.h"

/* Fds >= 3 without FD_CLOEXEC, at most max of them. Returns how many, or -errno. */
static int fds_lacking_cloexec(int *ret, size_t max) {
        DIR *d = opendir("/proc/self/fd");
        struct dirent *de;
        size_t n = 0;

        if (!d)
                return -errno;
        while ((de = readdir(d)) && n < max) {
                char *end;
                long fd;
                int flags;

                errno = 0;
                fd = strtol(de->d_name, &end, 10);
                if (errno != 0 || end == de->d_name || *end || fd < 3 || fd > INT_MAX || fd == dirfd(d))
                        continue;
                flags = fcntl((int) fd, F_GETFD);
                if (flags >= 0 && !(flags & FD_CLOEXEC))
                        ret[n++] = (int) fd;
        }
        closedir(d);
        return (int) n;
}

void fd_snapshot(FdSnapshot *s) {
        s->n = fds_lacking_cloexec(s->fds, ELEMENTSOF(s->fds));
}

static void fd_set_cloexec(int fd) {
        int flags = fcntl(fd, F_GETFD);

        if (flags >= 0 && !(flags & FD_CLOEXEC))
                (void) fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

void fd_set_cloexec_since(const FdSnapshot *before, int extra_fd) {
        int now[ELEMENTSOF(before->fds)];
        int n = before->n >= 0 ? fds_lacking_cloexec(now, ELEMENTSOF(now)) : -EBADF;

        for (int i = 0; i < n; i++) {
                bool old = false;

                for (int j = 0; j < before->n && !old; j++)
                        old = before->fds[j] == now[i];
                if (!old)
                        fd_set_cloexec(now[i]);
        }
        if (extra_fd >= 0)
                fd_set_cloexec(extra_fd);
}

