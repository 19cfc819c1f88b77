/* SPDX-License-Identifier: MIT */
/* Host name lookups off the loop: glibc's getaddrinfo_a(), its end announced through an eventfd. */
#include <assert.h>
#include <netdb.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "collector/host-lookup.h"

/* One request to glibc. glibc's thread reads host and hints and writes into req until the
 * lookup is done (gai_error() no longer says EAI_INPROGRESS), so the request lives until then,
 * also when nobody waits for it any more. The end is announced by a thread glibc starts for
 * it, which writes to the eventfd and touches nothing else. */
typedef struct LookupRequest {
        struct gaicb req;
        struct addrinfo hints;
        struct LookupRequest *next;   /* in abandoned_requests */
        char host[];                  /* a copy: the request may outlive its HostLookup */
} LookupRequest;

struct HostLookup {
        sd_event *event;              /* referenced */
        char *host;
        host_lookup_handler_t handler;
        void *userdata;

        LookupRequest *request;       /* in flight, or NULL */
        unsigned pick;
        int fd;                       /* eventfd: a lookup ended; or -EBADF */
        sd_event_source *source;
        uint64_t n_started;           /* and so announcements to come to fd */
        uint64_t n_announced;         /* ... that came (or never will: cancelled) */
};

/* Requests still running when their lookup was freed (at exit): glibc's thread still writes
 * into them, so they are not freed, and kept reachable here. */
static LookupRequest *abandoned_requests;

static void request_free(LookupRequest *q) {
        if (!q)
                return;
        if (q->req.ar_result)
                freeaddrinfo(q->req.ar_result);
        free(q);
}

/* Runs in a thread glibc starts when a lookup ends: wakes the loop, nothing else. */
static void lookup_announce(union sigval v) {
        uint64_t one = 1;

        (void) !write(v.sival_int, &one, sizeof(one));
}

static int gai_to_errno(int rc) {
        switch (rc) {
        case EAI_MEMORY:
                return -ENOMEM;
        case EAI_AGAIN:
        case EAI_FAIL:
        case EAI_NONAME:
        case EAI_NODATA:
        case EAI_ADDRFAMILY:
        case EAI_SYSTEM:
                return -EHOSTUNREACH;
        default:
                return -EINVAL;
        }
}

static void lookup_drain(HostLookup *l) {
        uint64_t n;

        if (l->fd >= 0 && read(l->fd, &n, sizeof(n)) == (ssize_t) sizeof(n))
                l->n_announced += n;
}

static int on_lookup_event(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        (void) s;
        (void) fd;
        (void) revents;
        lookup_drain(userdata);
        host_lookup_check(userdata);
        return 0;
}

int host_lookup_new(sd_event *e, const char *host, host_lookup_handler_t handler, void *userdata,
                    HostLookup **ret) {
        _cleanup_(host_lookup_freep) HostLookup *l = NULL;
        int r;

        assert(e && host && handler && ret);
        l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        l->event = sd_event_ref(e);
        l->handler = handler;
        l->userdata = userdata;
        l->fd = -EBADF;
        l->host = strdup(host);
        if (!l->host)
                return -ENOMEM;
        l->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (l->fd < 0)
                return -errno;
        r = sd_event_add_io(e, &l->source, l->fd, EPOLLIN, on_lookup_event, l);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(l->source, "host-lookup");
        *ret = TAKE_PTR(l);
        return 0;
}

HostLookup *host_lookup_free(HostLookup *l) {
        if (!l)
                return NULL;
        l->source = sd_event_source_disable_unref(l->source);
        if (l->request) {
                int rc = gai_cancel(&l->request->req);

                if (rc == EAI_NOTCANCELED) {
                        l->request->next = abandoned_requests;
                        abandoned_requests = TAKE_PTR(l->request);
                } else {
                        if (rc == EAI_CANCELED) /* never ran: nothing will be announced */
                                l->n_announced++;
                        request_free(TAKE_PTR(l->request));
                }
        }
        /* glibc's thread writes to the eventfd's number: keep it open (only at exit) while an
         * announcement may still come. */
        lookup_drain(l);
        if (l->n_announced >= l->n_started)
                l->fd = safe_close(l->fd);
        free(l->host);
        sd_event_unref(l->event);
        free(l);
        return NULL;
}

int host_lookup_start(HostLookup *l, unsigned pick, const char **ret_cause) {
        struct gaicb *list[1];
        struct sigevent sev = {
                .sigev_notify = SIGEV_THREAD,
                .sigev_value.sival_int = l->fd,
                .sigev_notify_function = lookup_announce,
        };
        LookupRequest *q;
        int rc;

        l->pick = pick;
        if (l->request)
                return 0;
        q = calloc(1, offsetof(LookupRequest, host) + strlen(l->host) + 1);
        if (!q) {
                *ret_cause = "out of memory";
                return -ENOMEM;
        }
        /* What libmosquitto asks for itself. */
        q->hints.ai_family = AF_UNSPEC;
        q->hints.ai_socktype = SOCK_STREAM;
        strcpy(q->host, l->host);
        q->req.ar_name = q->host;
        q->req.ar_request = &q->hints;
        list[0] = &q->req;
        rc = getaddrinfo_a(GAI_NOWAIT, list, 1, &sev);
        if (rc != 0) {
                free(q);
                *ret_cause = gai_strerror(rc);
                return gai_to_errno(rc);
        }
        l->request = q;
        l->n_started++;
        return 0;
}

/* Formats the pick-th address of res (modulo their number) into address. Returns 0 or -errno
 * with cause filled in. */
static int lookup_pick(const HostLookup *l, const struct addrinfo *res, char *address, size_t size, size_t *ret_n,
                       char *cause, size_t cause_size) {
        const struct addrinfo *ai;
        size_t n = 0, pick;
        int rc;

        for (ai = res; ai; ai = ai->ai_next)
                n++;
        pick = l->pick % n;
        for (ai = res; pick > 0; pick--)
                ai = ai->ai_next;
        rc = getnameinfo(ai->ai_addr, ai->ai_addrlen, address, (socklen_t) size, NULL, 0, NI_NUMERICHOST);
        if (rc != 0) {
                snprintf(cause, cause_size, "could not format the address of '%s': %s", l->host, gai_strerror(rc));
                return gai_to_errno(rc);
        }
        *ret_n = n;
        return 0;
}

void host_lookup_check(HostLookup *l) {
        LookupRequest *q;
        struct addrinfo *res;
        char address[NI_MAXHOST], cause[300];
        size_t n = 0;
        int rc, r;

        if (!l->request)
                return;
        rc = gai_error(&l->request->req);
        if (rc == EAI_INPROGRESS)
                return;
        q = TAKE_PTR(l->request);
        res = TAKE_PTR(q->req.ar_result);
        request_free(q);

        if (rc != 0 || !res) {
                snprintf(cause, sizeof(cause), "host name lookup failed: %s", rc != 0 ? gai_strerror(rc) : "no address");
                r = rc != 0 ? gai_to_errno(rc) : -EHOSTUNREACH;
        } else
                r = lookup_pick(l, res, address, sizeof(address), &n, cause, sizeof(cause));
        if (res)
                freeaddrinfo(res);
        /* Last: the handler may free l. */
        l->handler(l, r, r < 0 ? NULL : address, n, r < 0 ? cause : NULL, l->userdata);
}
