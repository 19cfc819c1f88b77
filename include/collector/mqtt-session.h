/* SPDX-License-Identifier: MIT */
/* The filters of a persistent MQTT session: what may be subscribed at the broker, what is stale. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "collector/store.h"

/* A broker keeps the subscriptions of a persistent session across our restarts, also those of
 * filters a later configuration no longer has: with MQTT 3.1.1 their messages would arrive as
 * topic_mismatch rejects forever, with MQTT 5 they would carry the identifier of whatever topic
 * now has their index, and be stored twice. So the store keeps the set of filters that may be
 * subscribed in the session (the configured ones and, until their UNSUBACK, stale ones), and
 * when the broker says the session is present, the stale ones are unsubscribed before the task
 * counts as running. This module holds sets of filters, their stored form and the plan after
 * CONNACK (all pure), and their load and save in the store; the MQTT task talks to the broker. */

/* A set of filters (no duplicates), each an owned copy. Zero-initialise; free with
 * session_filters_done(). */
typedef struct SessionFilters {
        char **v;
        size_t n;
} SessionFilters;

/* Frees the filters; leaves an empty set. Safe to call twice. */
void session_filters_done(SessionFilters *s);

/* Adds a copy of filter unless the set has it. Returns 0 or -ENOMEM (the set unchanged). */
int session_filters_add(SessionFilters *s, const char *filter);
bool session_filters_contains(const SessionFilters *s, const char *filter);
/* Removes filter from the set if it has it (the order of the others may change). Returns true
 * when it was there. */
bool session_filters_remove(SessionFilters *s, const char *filter);
/* Fills *ret (replaced) with the filters of a that are not in b. Returns 0 or -ENOMEM (*ret
 * unchanged). */
int session_filters_subtract(const SessionFilters *a, const SessionFilters *b, SessionFilters *ret);
/* True when a and b hold the same filters, in any order. */
bool session_filters_equal(const SessionFilters *a, const SessionFilters *b);
/* Replaces *dst with a copy of src. Returns 0 or -ENOMEM (dst unchanged). */
int session_filters_copy(SessionFilters *dst, const SessionFilters *src);

/* The stored form: each filter followed by a NUL byte (MQTT strings cannot hold U+0000); an
 * empty set is one NUL byte. Returns 0 with *ret (owned by the caller) and *ret_size, or
 * -ENOMEM. */
int session_filters_encode(const SessionFilters *s, char **ret, size_t *ret_size);
/* Reads the stored form into *ret (replacing what it held): every NUL-terminated string of
 * data[0..size) but empty ones; bytes after the last NUL are ignored (a torn value). Returns 0
 * or -ENOMEM (*ret unchanged). */
int session_filters_decode(const void *data, size_t size, SessionFilters *ret);

/* After CONNACK: which remembered filters are stale (not configured; only when the broker kept
 * the session: a new session has none) and what the store must remember before anything is
 * sent (the configured ones and the stale ones, so that a crash in between leaves the store
 * knowing more filters than the session has, never fewer). Fills *ret_stale and
 * *ret_remember (both replaced). Returns 0 or -ENOMEM. */
int session_filters_plan(const SessionFilters *remembered, const SessionFilters *configured, bool session_present,
                         SessionFilters *ret_stale, SessionFilters *ret_remember);

/* A SUBSCRIBE of filter was refused. The plan had the store remember it before the SUBSCRIBE
 * went out (written ahead, so that a crash leaves the store knowing more than the session);
 * a refusal means the broker does not hold it, unless an earlier SUBACK had granted it
 * (known_before: what the store remembered before this connection, when the session was
 * present) and the broker keeps that old subscription. Returns true when the filter must be
 * forgotten. */
bool session_filters_forget_refused(const SessionFilters *known_before, const char *filter);

/* ---- in the store (under meta key, one per client id and broker) ---- */

/* Reads what the store remembers into *ret (replaced; empty when nothing is stored). Returns 0
 * or -errno (*ret unchanged). */
int session_filters_load(Store *store, const char *key, SessionFilters *ret);
/* Makes the store remember exactly *want, unless *remembered (what it holds now) already says
 * so; then *remembered takes over *want's filters. *want is empty afterwards in every case.
 * Returns 0, -ENOMEM, or the store's -errno (the store has reported its failure). */
int session_filters_save(Store *store, const char *key, SessionFilters *want, SessionFilters *remembered);
