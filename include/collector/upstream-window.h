/* SPDX-License-Identifier: MIT */
/* What has been acknowledged upstream and what to send next: a cursor, acknowledged ranges above it, the in-flight window. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "collector/macro.h"

/* An inclusive range of sequence numbers. */
typedef struct SeqRange {
        int64_t lo, hi;
} SeqRange;

/* One PUBLISH waiting for its PUBACK/PUBCOMP: the sequence numbers it releases when
 * acknowledged. A range also covers the ids between its readings that hold no reading (removed,
 * never used), so that the cursor can move over them. */
typedef struct UpstreamFlight {
        int mid;                      /* libmosquitto's message id */
        int64_t lo, hi;
        bool live;
} UpstreamFlight;

/* Pure state: no I/O, no clock. Every sequence number is "done" (acknowledged, refused for good
 * or removed by retention: never sent again), in flight, or pending. Done is the cursor (every
 * seq <= cursor) plus sorted, disjoint, non-adjacent ranges above cursor + 1: acknowledgements
 * may come out of order, and live readings are acknowledged while the backlog below them still
 * drains. Only the done set is durable (upstream_window_format()); flights are forgotten with
 * the connection and their readings sent again. Zero-initialise, or upstream_window_init(). */
typedef struct UpstreamWindow {
        int64_t cursor;
        SeqRange *done;
        size_t n_done, cap_done;
        UpstreamFlight *flights;
        size_t n_flights, cap_flights;
        size_t n_live_flights;
        bool connected;
        int64_t boundary;             /* this connection: seq > boundary is live, the rest backlog */
        int64_t live_pos;             /* live readings up to here are sent or done */
        int64_t drain_pos;            /* the drain has sent or skipped everything up to here */
} UpstreamWindow;

/* Sets *w to the empty state: nothing done (cursor 0), nothing in flight, not connected. w is
 * owned by the caller; call upstream_window_clear() when done. */
void upstream_window_init(UpstreamWindow *w);
/* Frees the ranges and flights w owns; w is empty (as after init) afterwards. */
void upstream_window_clear(UpstreamWindow *w);

/* Replaces w's done set with the one text describes: "CURSOR" or "CURSOR LO-HI LO-HI ..." as
 * upstream_window_format() writes it. Returns 0, -EBADMSG (malformed: w unchanged) or -ENOMEM. */
int upstream_window_load(UpstreamWindow *w, const char *text);
/* The done set as text, for the store's meta table. *ret is owned by the caller. Returns 0 or
 * -ENOMEM. */
int upstream_window_format(const UpstreamWindow *w, char **ret);

/* A connection was accepted; committed is the store's largest committed seq: what is above is
 * live from now on, what is below and not done is backlog, drained from the cursor up. */
void upstream_window_connect(UpstreamWindow *w, int64_t committed);
/* The connection is gone: every flight is forgotten (its readings are pending again). */
void upstream_window_disconnect(UpstreamWindow *w);

/* Marks lo..hi done and moves the cursor when it can. Returns 0 or -ENOMEM (w unchanged). */
int upstream_window_mark_done(UpstreamWindow *w, int64_t lo, int64_t hi);
/* Whether seq is done. */
bool upstream_window_is_done(const UpstreamWindow *w, int64_t seq);

/* Records a PUBLISH in flight. Returns 0, -EEXIST (mid already in flight: a caller bug) or
 * -ENOMEM. */
int upstream_window_add_flight(UpstreamWindow *w, int mid, int64_t lo, int64_t hi, bool live);
/* The flight of mid was answered: removes it and copies it to *ret (may be NULL). With done
 * (acknowledged, or refused for good) its range is marked done. Returns 1, 0 for an unknown
 * mid (a late answer from an earlier connection: ignore it), or -ENOMEM. */
int upstream_window_settle(UpstreamWindow *w, int mid, bool done, UpstreamFlight *ret);

/* Live readings to send: returns true with *ret_after (read committed readings with seq >
 * *ret_after) when connected and readings above live_pos are committed. */
bool upstream_window_next_live(const UpstreamWindow *w, int64_t committed, int64_t *ret_after);
/* Live readings up to seq were sent (or skipped). */
void upstream_window_sent_live(UpstreamWindow *w, int64_t seq);

/* The next backlog to drain, oldest first: returns true with the readings to read, after <
 * seq < before (the next gap in the done set below the boundary), or false when the drain is
 * through. Moves drain_pos over done ranges. */
bool upstream_window_next_drain(UpstreamWindow *w, int64_t *ret_after, int64_t *ret_before);
/* The drain sent (or found no reading in) everything up to seq. */
void upstream_window_drained(UpstreamWindow *w, int64_t seq);

/* May the drain put one more message in flight, with limit the in-flight maximum (the
 * configured one or the broker's Receive Maximum, whichever is smaller) and live_pending
 * whether live readings wait? Live readings always keep a quarter of the window (at least one
 * slot, when the limit allows two or more); with nothing live waiting, the drain may use all
 * but that reserve. */
bool upstream_window_may_drain(const UpstreamWindow *w, unsigned limit, bool live_pending);

/* How many sequence numbers up to committed are not done (readings not yet acknowledged; ids
 * without a reading count too, so this is an upper bound). */
int64_t upstream_window_pending(const UpstreamWindow *w, int64_t committed);

/* The first range of sequence numbers above from and up to upto that is not done. Returns true
 * with *ret, or false when everything there is done. For counting what retention removes. */
bool upstream_window_next_gap(const UpstreamWindow *w, int64_t from, int64_t upto, SeqRange *ret);
