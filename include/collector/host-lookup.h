/* SPDX-License-Identifier: MIT */
/* Host name lookups off the loop: glibc's getaddrinfo_a(), its end announced through an eventfd. */
#pragma once

#include <stddef.h>
#include <systemd/sd-event.h>

#include "collector/macro.h"

typedef struct HostLookup HostLookup;

/* The lookup ended. On success error is 0, address the numeric address picked (see
 * host_lookup_start()) and n_addresses how many the name has; on failure error is a negative
 * errno (-ENOMEM, or -EHOSTUNREACH for a name that does not resolve now, -EINVAL otherwise),
 * address NULL and cause a readable reason. Strings are borrowed for the call. The handler may
 * free the lookup. */
typedef void (*host_lookup_handler_t)(HostLookup *l, int error, const char *address, size_t n_addresses,
                                      const char *cause, void *userdata);

/* Prepares lookups of host (copied) on loop e (referenced): an eventfd and its io source.
 * Returns 0 or -errno. */
int host_lookup_new(sd_event *e, const char *host, host_lookup_handler_t handler, void *userdata,
                    HostLookup **ret);

/* A lookup still running (glibc's thread still writes into it) is handed to glibc and kept
 * reachable until exit; its eventfd stays open while an announcement may still come. Accepts
 * NULL; returns NULL. */
HostLookup *host_lookup_free(HostLookup *l);
DEFINE_TRIVIAL_CLEANUP_FUNC(HostLookup *, host_lookup_free);

/* Starts a lookup whose result will be the pick-th address (modulo their number), so that
 * successive attempts take successive addresses and one that does not answer is not tried
 * forever. When a lookup is still running (its attempt was given up), the new one waits for it
 * and takes its result (with the new pick) instead of queueing another behind it. The handler is called later, never from
 * within this call. Returns 0, or -errno with *ret_cause (static text): the lookup did not
 * start. */
int host_lookup_start(HostLookup *l, unsigned pick, const char **ret_cause);

/* Checks whether the lookup in flight has ended and calls the handler if so. The eventfd does
 * this by itself; call it from a periodic timer too, in case glibc could not start the thread
 * that announces the end. */
void host_lookup_check(HostLookup *l);
