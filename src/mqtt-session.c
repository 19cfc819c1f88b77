/* SPDX-License-Identifier: MIT */
/* The filters of a persistent MQTT session: what may be subscribed at the broker, what is stale. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "collector/macro.h"
#include "collector/mqtt-session.h"

void session_filters_done(SessionFilters *s) {
        for (size_t i = 0; i < s->n; i++)
                free(s->v[i]);
        free(s->v);
        *s = (SessionFilters){};
}

bool session_filters_contains(const SessionFilters *s, const char *filter) {
        for (size_t i = 0; i < s->n; i++)
                if (streq(s->v[i], filter))
                        return true;
        return false;
}

bool session_filters_remove(SessionFilters *s, const char *filter) {
        for (size_t i = 0; i < s->n; i++)
                if (streq(s->v[i], filter)) {
                        free(s->v[i]);
                        s->v[i] = s->v[--s->n]; /* a set: order does not matter */
                        return true;
                }
        return false;
}

int session_filters_subtract(const SessionFilters *a, const SessionFilters *b, SessionFilters *ret) {
        SessionFilters d = {};

        for (size_t i = 0; i < a->n; i++)
                if (!session_filters_contains(b, a->v[i])) {
                        int r = session_filters_add(&d, a->v[i]);
                        if (r < 0) {
                                session_filters_done(&d);
                                return r;
                        }
                }
        session_filters_done(ret);
        *ret = d;
        return 0;
}

bool session_filters_forget_refused(const SessionFilters *known_before, const char *filter) {
        return !session_filters_contains(known_before, filter);
}

int session_filters_add(SessionFilters *s, const char *filter) {
        char **v, *copy;

        if (session_filters_contains(s, filter))
                return 0;
        copy = strdup(filter);
        if (!copy)
                return -ENOMEM;
        v = realloc(s->v, (s->n + 1) * sizeof(char *));
        if (!v) {
                free(copy);
                return -ENOMEM;
        }
        v[s->n++] = copy;
        s->v = v;
        return 0;
}

bool session_filters_equal(const SessionFilters *a, const SessionFilters *b) {
        if (a->n != b->n)
                return false;
        /* Sets: same size and every filter of a in b. */
        for (size_t i = 0; i < a->n; i++)
                if (!session_filters_contains(b, a->v[i]))
                        return false;
        return true;
}

/* Adds every filter of src to *dst. Returns 0 or -ENOMEM (then *dst is partly extended). */
static int session_filters_add_all(SessionFilters *dst, const SessionFilters *src) {
        for (size_t i = 0; i < src->n; i++) {
                int r = session_filters_add(dst, src->v[i]);
                if (r < 0)
                        return r;
        }
        return 0;
}

int session_filters_copy(SessionFilters *dst, const SessionFilters *src) {
        SessionFilters copy = {};
        int r;

        r = session_filters_add_all(&copy, src);
        if (r < 0) {
                session_filters_done(&copy);
                return r;
        }
        session_filters_done(dst);
        *dst = copy;
        return 0;
}

int session_filters_encode(const SessionFilters *s, char **ret, size_t *ret_size) {
        size_t size = 0;
        char *value;

        for (size_t i = 0; i < s->n; i++)
                size += strlen(s->v[i]) + 1;
        value = calloc(MAX(size, 1u), 1); /* zeroed: an empty set is one NUL byte */
        if (!value)
                return -ENOMEM;
        size = 0;
        for (size_t i = 0; i < s->n; i++) {
                size_t len = strlen(s->v[i]) + 1;

                memcpy(value + size, s->v[i], len);
                size += len;
        }
        *ret = value;
        *ret_size = MAX(size, 1u);
        return 0;
}

int session_filters_decode(const void *data, size_t size, SessionFilters *ret) {
        const char *p = data;
        SessionFilters s = {};

        for (size_t i = 0; i < size;) {
                const char *end = memchr(p + i, 0, size - i);
                int r;

                if (!end)
                        break; /* not terminated: torn */
                if (end > p + i) {
                        r = session_filters_add(&s, p + i);
                        if (r < 0) {
                                session_filters_done(&s);
                                return r;
                        }
                }
                i = (size_t) (end - p) + 1;
        }
        session_filters_done(ret);
        *ret = s;
        return 0;
}

int session_filters_plan(const SessionFilters *remembered, const SessionFilters *configured, bool session_present,
                         SessionFilters *ret_stale, SessionFilters *ret_remember) {
        SessionFilters stale = {}, remember = {};
        int r = 0;

        if (session_present)
                for (size_t i = 0; i < remembered->n && r >= 0; i++)
                        if (!session_filters_contains(configured, remembered->v[i]))
                                r = session_filters_add(&stale, remembered->v[i]);
        if (r >= 0)
                r = session_filters_add_all(&remember, configured);
        if (r >= 0)
                r = session_filters_add_all(&remember, &stale);
        if (r < 0) {
                session_filters_done(&stale);
                session_filters_done(&remember);
                return r;
        }
        session_filters_done(ret_stale);
        session_filters_done(ret_remember);
        *ret_stale = stale;
        *ret_remember = remember;
        return 0;
}

int session_filters_load(Store *store, const char *key, SessionFilters *ret) {
        _cleanup_free_ void *value = NULL;
        size_t size = 0;
        int r;

        r = store_get_meta(store, key, &value, &size);
        if (r < 0)
                return r;
        return session_filters_decode(value, size, ret);
}

int session_filters_save(Store *store, const char *key, SessionFilters *want, SessionFilters *remembered) {
        _cleanup_free_ char *value = NULL;
        size_t size;
        int r;

        if (session_filters_equal(remembered, want)) {
                session_filters_done(want);
                return 0;
        }
        r = session_filters_encode(want, &value, &size);
        if (r >= 0)
                r = store_set_meta(store, key, value, size);
        if (r < 0) {
                session_filters_done(want);
                return r;
        }
        session_filters_done(remembered);
        *remembered = *want;
        *want = (SessionFilters){};
        return 0;
}
