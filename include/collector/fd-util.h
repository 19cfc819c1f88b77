/* SPDX-License-Identifier: MIT */
/* Close-on-exec for descriptors a library opens without it. */
#pragma once

/* libmosquitto 2.0 makes its sockets (the connection, and a socket pair it wakes its own loop
 * with) without SOCK_CLOEXEC, and says nothing about which they are. Around each call that may
 * create one, the caller notes the fds lacking FD_CLOEXEC before and sets it on the new ones. */
typedef struct FdSnapshot {
        int fds[64];
        int n;                        /* -errno when /proc/self/fd could not be read */
} FdSnapshot;

/* Notes the fds >= 3 that lack FD_CLOEXEC now. Never fails (a failure is kept in s->n). */
void fd_snapshot(FdSnapshot *s);
/* Sets FD_CLOEXEC on every fd that lacks it now and did not at the snapshot, and on extra_fd
 * when it is >= 0 (the library's socket, which may reuse a number). Best effort. */
void fd_set_cloexec_since(const FdSnapshot *before, int extra_fd);
