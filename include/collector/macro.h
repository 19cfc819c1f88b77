/* SPDX-License-Identifier: MIT */
/* Small helpers shared by every module: cleanup attributes, ownership transfer, fd hygiene. */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _sentinel_ __attribute__((sentinel))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

#define USEC_PER_SEC ((uint64_t) 1000000ULL)
#define USEC_PER_MSEC ((uint64_t) 1000ULL)
#define NSEC_PER_USEC ((uint64_t) 1000ULL)
#define MSEC_PER_SEC ((uint64_t) 1000ULL)

/* Take ownership of a pointer: returns it and leaves NULL behind, so a _cleanup_ does nothing. */
#define TAKE_PTR(p)                                  \
        ({                                           \
                __typeof__(p) *_pp_ = &(p);          \
                __typeof__(p) _p_ = *_pp_;           \
                *_pp_ = NULL;                        \
                _p_;                                 \
        })

/* Same for file descriptors: leaves -EBADF behind. */
#define TAKE_FD(fd)                                  \
        ({                                           \
                int *_fdp_ = &(fd);                  \
                int _fd_ = *_fdp_;                   \
                *_fdp_ = -EBADF;                     \
                _fd_;                                \
        })

/* Defines foo_freep(Foo **p) for a destructor Foo *foo_free(Foo *). */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)      \
        static inline void func##p(type *p) {        \
                if (*p)                              \
                        func(*p);                    \
        }

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

/* Closes fd if valid, preserving errno; always returns -EBADF so callers can write fd = safe_close(fd). */
static inline int safe_close(int fd) {
        if (fd >= 0) {
                int saved = errno;
                (void) close(fd);
                errno = saved;
        }
        return -EBADF;
}

static inline void closep(int *fd) {
        (void) safe_close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

static inline bool streq_ptr(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return strcmp(a, b) == 0;
}
#define streq(a, b) (strcmp((a), (b)) == 0)

static inline const char *strempty(const char *s) {
        return s ? s : "";
}

static inline const char *strna(const char *s) {
        return s ? s : "n/a";
}

/* errno as a negative value, never 0: for wrapping calls that failed but may not have set errno. */
static inline int negative_errno(void) {
        return errno > 0 ? -errno : -EIO;
}

/* Free a NULL-terminated array of strings. Returns NULL. */
static inline char **strv_free(char **l) {
        if (l) {
                for (char **i = l; *i; i++)
                        free(*i);
                free(l);
        }
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(char **, strv_free);
#define _cleanup_strv_free_ _cleanup_(strv_freep)

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

static inline void *mfree(void *p) {
        free(p);
        return NULL;
}
