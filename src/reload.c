/* SPDX-License-Identifier: MIT */
/* Reloading the configuration: a new file is validated in full, compared with the running one key by key, and applied where it can be. */
#include <assert.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "collector/log.h"
#include "collector/reload.h"

#define NOTE_MAX 512

/* ---- which keys only a restart applies ---- */

typedef enum KeyType {
        KEY_BOOL,
        KEY_INT,                      /* int and the enums */
        KEY_UNSIGNED,
        KEY_U16,
        KEY_U32,
        KEY_U64,
        KEY_SIZE,
        KEY_STRING,
        KEY_TOPICS,                   /* MqttConfig.topics with n_topics beside it */
} KeyType;

typedef enum Section {
        SECTION_NONE,                 /* compared always */
        SECTION_SERIAL,               /* compared when serial is enabled in either */
        SECTION_MQTT,
        SECTION_UPSTREAM,
} Section;

typedef struct RestartKey {
        const char *path;
        KeyType type;
        size_t offset;
        Section section;
} RestartKey;

/* The size each type reads, checked against the member at compile time (an array of size -1
 * does not compile): a member whose type changes cannot be read with the wrong width. */
#define KEY_SIZE_KEY_BOOL sizeof(bool)
#define KEY_SIZE_KEY_INT sizeof(int)
#define KEY_SIZE_KEY_UNSIGNED sizeof(unsigned)
#define KEY_SIZE_KEY_U16 sizeof(uint16_t)
#define KEY_SIZE_KEY_U32 sizeof(uint32_t)
#define KEY_SIZE_KEY_U64 sizeof(uint64_t)
#define KEY_SIZE_KEY_SIZE sizeof(size_t)
#define KEY_SIZE_KEY_STRING sizeof(char *)
#define KEY_SIZE_KEY_TOPICS sizeof(MqttTopicConfig *)
#define K(path, type, member, section)                                                                   \
        { path, type,                                                                                    \
          offsetof(Config, member) + 0 * sizeof(char[sizeof(((Config *) 0)->member) == KEY_SIZE_##type ? 1 : -1]), \
          section }

/* Every key that the tasks or the supervisor take at start and keep: the serial port and its
 * line settings (the port would have to be reopened), the broker connection and the
 * subscriptions (a new session), the store (the file and its pragmas, opened once), and the
 * supervisor's timers. Why each is here is in docs/OPERATIONS.md. Keys not listed (log.level,
 * and what later joins the reload hooks) are applied at a reload. */
static const RestartKey restart_keys[] = {
        K("/serial/enabled", KEY_BOOL, serial.enabled, SECTION_NONE),
        K("/serial/device", KEY_STRING, serial.device, SECTION_SERIAL),
        K("/serial/baud", KEY_U32, serial.baud, SECTION_SERIAL),
        K("/serial/data_bits", KEY_UNSIGNED, serial.data_bits, SECTION_SERIAL),
        K("/serial/parity", KEY_INT, serial.parity, SECTION_SERIAL),
        K("/serial/stop_bits", KEY_UNSIGNED, serial.stop_bits, SECTION_SERIAL),
        K("/serial/flow_control", KEY_INT, serial.flow_control, SECTION_SERIAL),
        K("/serial/format", KEY_INT, serial.format, SECTION_SERIAL),
        K("/serial/checksum", KEY_INT, serial.checksum, SECTION_SERIAL),
        K("/serial/max_frame_bytes", KEY_SIZE, serial.max_frame_bytes, SECTION_SERIAL),
        K("/serial/line_end", KEY_INT, serial.line_end, SECTION_SERIAL),
        K("/serial/reopen_timeout", KEY_U64, serial.reopen_timeout_usec, SECTION_SERIAL),
        K("/serial/idle_timeout", KEY_U64, serial.idle_timeout_usec, SECTION_SERIAL),
        K("/mqtt/enabled", KEY_BOOL, mqtt.enabled, SECTION_NONE),
        K("/mqtt/host", KEY_STRING, mqtt.host, SECTION_MQTT),
        K("/mqtt/port", KEY_U16, mqtt.port, SECTION_MQTT),
        K("/mqtt/client_id", KEY_STRING, mqtt.client_id, SECTION_MQTT),
        K("/mqtt/protocol", KEY_INT, mqtt.protocol, SECTION_MQTT),
        K("/mqtt/clean_session", KEY_BOOL, mqtt.clean_session, SECTION_MQTT),
        K("/mqtt/session_expiry", KEY_U32, mqtt.session_expiry, SECTION_MQTT),
        K("/mqtt/keepalive", KEY_UNSIGNED, mqtt.keepalive, SECTION_MQTT),
        K("/mqtt/username", KEY_STRING, mqtt.username, SECTION_MQTT),
        K("/mqtt/password_file", KEY_STRING, mqtt.password_file, SECTION_MQTT),
        K("/mqtt/cafile", KEY_STRING, mqtt.cafile, SECTION_MQTT),
        K("/mqtt/capath", KEY_STRING, mqtt.capath, SECTION_MQTT),
        K("/mqtt/certfile", KEY_STRING, mqtt.certfile, SECTION_MQTT),
        K("/mqtt/keyfile", KEY_STRING, mqtt.keyfile, SECTION_MQTT),
        K("/mqtt/tls_version", KEY_STRING, mqtt.tls_version, SECTION_MQTT),
        K("/mqtt/max_offline", KEY_U64, mqtt.max_offline_usec, SECTION_MQTT),
        K("/mqtt/max_payload_bytes", KEY_SIZE, mqtt.max_payload_bytes, SECTION_MQTT),
        K("/mqtt/topics", KEY_TOPICS, mqtt.topics, SECTION_MQTT),
        K("/store/path", KEY_STRING, store.path, SECTION_NONE),
        K("/store/synchronous", KEY_INT, store.synchronous, SECTION_NONE),
        K("/store/commit_interval_ms", KEY_UNSIGNED, store.commit_interval_ms, SECTION_NONE),
        K("/store/commit_max_rows", KEY_UNSIGNED, store.commit_max_rows, SECTION_NONE),
        K("/store/retention_days", KEY_UNSIGNED, store.retention_days, SECTION_NONE),
        K("/store/max_size_mb", KEY_UNSIGNED, store.max_size_mb, SECTION_NONE),
        K("/store/max_names", KEY_UNSIGNED, store.max_names, SECTION_NONE),
        K("/clock/trust", KEY_INT, clock.trust, SECTION_NONE),
        K("/clock/sensor_ts_tolerance", KEY_U64, clock.sensor_ts_tolerance_usec, SECTION_NONE),
        K("/upstream/enabled", KEY_BOOL, upstream.enabled, SECTION_NONE),
        K("/upstream/host", KEY_STRING, upstream.host, SECTION_UPSTREAM),
        K("/upstream/port", KEY_U16, upstream.port, SECTION_UPSTREAM),
        K("/upstream/protocol", KEY_INT, upstream.protocol, SECTION_UPSTREAM),
        K("/upstream/client_id", KEY_STRING, upstream.client_id, SECTION_UPSTREAM),
        K("/upstream/gateway_id", KEY_STRING, upstream.gateway_id, SECTION_UPSTREAM),
        K("/upstream/keepalive", KEY_UNSIGNED, upstream.keepalive, SECTION_UPSTREAM),
        K("/upstream/username", KEY_STRING, upstream.username, SECTION_UPSTREAM),
        K("/upstream/password_file", KEY_STRING, upstream.password_file, SECTION_UPSTREAM),
        K("/upstream/cafile", KEY_STRING, upstream.cafile, SECTION_UPSTREAM),
        K("/upstream/capath", KEY_STRING, upstream.capath, SECTION_UPSTREAM),
        K("/upstream/certfile", KEY_STRING, upstream.certfile, SECTION_UPSTREAM),
        K("/upstream/keyfile", KEY_STRING, upstream.keyfile, SECTION_UPSTREAM),
        K("/upstream/tls_version", KEY_STRING, upstream.tls_version, SECTION_UPSTREAM),
        K("/upstream/topic", KEY_STRING, upstream.topic, SECTION_UPSTREAM),
        K("/upstream/backlog_topic", KEY_STRING, upstream.backlog_topic, SECTION_UPSTREAM),
        K("/upstream/live_batch_topic", KEY_STRING, upstream.live_batch_topic, SECTION_UPSTREAM),
        K("/upstream/status_topic", KEY_STRING, upstream.status_topic, SECTION_UPSTREAM),
        K("/upstream/qos", KEY_INT, upstream.qos, SECTION_UPSTREAM),
        K("/upstream/max_inflight", KEY_UNSIGNED, upstream.max_inflight, SECTION_UPSTREAM),
        K("/upstream/backlog_rate", KEY_UNSIGNED, upstream.backlog_rate, SECTION_UPSTREAM),
        K("/upstream/batch_size", KEY_UNSIGNED, upstream.batch_size, SECTION_UPSTREAM),
        K("/supervisor/stop_timeout", KEY_U64, supervisor.stop_timeout_usec, SECTION_NONE),
        K("/supervisor/status_interval", KEY_U64, supervisor.status_interval_usec, SECTION_NONE),
};

#undef K

/* Keys a reload applies, each through a hook (the log level: apply_log_level() below). A key
 * that becomes applicable at run time moves here from restart_keys[] with its hook. */
static const char *const applied_keys[] = {
        "/log/level",
        "/sensors/unknown",
        "/sensors/stale_after",
};

/* Subtrees a reload applies as a whole: the sensor map is keyed by sensor ids and patterns the
 * user chooses, so its keys below are not known in advance. */
static const char *const applied_subtrees[] = {
        "/sensors/map",
};

/* Keys with no member of their own: custom_baud only allows a non-standard /serial/baud, and a
 * change of it that matters changes the baud rate too. */
static const char *const restart_keys_without_member[] = {
        "/serial/custom_baud",
};

int reload_key_kind(const char *path) {
        assert(path);

        for (size_t i = 0; i < ELEMENTSOF(restart_keys); i++)
                if (streq(restart_keys[i].path, path))
                        return RELOAD_KEY_RESTART;
        for (size_t i = 0; i < ELEMENTSOF(restart_keys_without_member); i++)
                if (streq(restart_keys_without_member[i], path))
                        return RELOAD_KEY_RESTART;
        for (size_t i = 0; i < ELEMENTSOF(applied_keys); i++)
                if (streq(applied_keys[i], path))
                        return RELOAD_KEY_APPLIED;
        for (size_t i = 0; i < ELEMENTSOF(applied_subtrees); i++) {
                size_t n = strlen(applied_subtrees[i]);

                if (strncmp(path, applied_subtrees[i], n) == 0 && (path[n] == '\0' || path[n] == '/'))
                        return RELOAD_KEY_APPLIED;
        }
        return -ENOENT;
}

static bool topic_equal(const MqttTopicConfig *a, const MqttTopicConfig *b) {
        return streq_ptr(a->filter, b->filter) && a->qos == b->qos && a->format == b->format &&
               streq_ptr(a->sensor, b->sensor) && streq_ptr(a->metric, b->metric);
}

static bool key_equal(const RestartKey *k, const Config *a, const Config *b) {
        const void *pa = (const char *) a + k->offset, *pb = (const char *) b + k->offset;

        switch (k->type) {
        case KEY_BOOL:
                return *(const bool *) pa == *(const bool *) pb;
        case KEY_INT:
                return *(const int *) pa == *(const int *) pb;
        case KEY_UNSIGNED:
                return *(const unsigned *) pa == *(const unsigned *) pb;
        case KEY_U16:
                return *(const uint16_t *) pa == *(const uint16_t *) pb;
        case KEY_U32:
                return *(const uint32_t *) pa == *(const uint32_t *) pb;
        case KEY_U64:
                return *(const uint64_t *) pa == *(const uint64_t *) pb;
        case KEY_SIZE:
                return *(const size_t *) pa == *(const size_t *) pb;
        case KEY_STRING:
                return streq_ptr(*(char *const *) pa, *(char *const *) pb);
        case KEY_TOPICS:
                if (a->mqtt.n_topics != b->mqtt.n_topics)
                        return false;
                /* Order matters too: it is the order of subscription and of matching. */
                for (size_t i = 0; i < a->mqtt.n_topics; i++)
                        if (!topic_equal(&a->mqtt.topics[i], &b->mqtt.topics[i]))
                                return false;
                return true;
        }
        assert(false);
        return false;
}

static bool section_compared(Section section, const Config *a, const Config *b) {
        switch (section) {
        case SECTION_SERIAL:
                return a->serial.enabled || b->serial.enabled;
        case SECTION_MQTT:
                return a->mqtt.enabled || b->mqtt.enabled;
        case SECTION_UPSTREAM:
                return a->upstream.enabled || b->upstream.enabled;
        default:
                return true;
        }
}

int reload_restart_keys(const Config *running, const Config *next, char ***ret_keys) {
        char **keys;
        size_t n = 0;

        assert(running && next && ret_keys);

        keys = calloc(ELEMENTSOF(restart_keys) + 1, sizeof(char *));
        if (!keys)
                return -ENOMEM;
        for (size_t i = 0; i < ELEMENTSOF(restart_keys); i++) {
                const RestartKey *k = &restart_keys[i];

                if (!section_compared(k->section, running, next) || key_equal(k, running, next))
                        continue;
                keys[n] = strdup(k->path);
                if (!keys[n]) {
                        strv_free(keys);
                        return -ENOMEM;
                }
                n++;
        }
        *ret_keys = keys;
        return (int) n;
}

/* ---- the reload itself ---- */

typedef struct Hook {
        char *name;
        ReloadHook hook;
        void *userdata;
} Hook;

struct Reload {
        ReloadOptions options;
        char *path;
        const Config *running;        /* borrowed: the tasks point into it */
        Config *current;              /* the last fully applied reload, or NULL: running */
        Config **retired;             /* applied by some hooks only (one failed): kept while they may point into it */
        size_t n_retired;
        Hook *hooks;
        size_t n_hooks;
        char note[NOTE_MAX];
};

static const Config *reload_current(Reload *r) {
        return r->current ?: r->running;
}

static int apply_log_level(const Config *old, const Config *next, void *userdata) {
        Reload *r = userdata;

        if (old->log.level == next->log.level)
                return 0;
        if (r->options.log_level_override >= 0) {
                log_notice("Configuration key /log/level changed to %s, but --log-level %s overrides it, not applied.",
                           strna(log_level_to_string(next->log.level)),
                           strna(log_level_to_string(r->options.log_level_override)));
                return 0;
        }
        /* Said under whichever of the two levels shows more, so the change is seen both ways. */
        if (next->log.level > log_get_max_level())
                log_set_max_level(next->log.level);
        log_notice("Log level changed from %s to %s.", strna(log_level_to_string(old->log.level)),
                   strna(log_level_to_string(next->log.level)));
        log_set_max_level(next->log.level);
        return 0;
}

int reload_new(const Config *running, const ReloadOptions *options, Reload **ret) {
        _cleanup_(reload_freep) Reload *r = NULL;
        int k;

        assert(running && options && options->path && ret);

        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        r->options = *options;
        r->running = running;
        r->path = strdup(options->path);
        if (!r->path)
                return -ENOMEM;
        r->options.path = r->path;
        k = reload_add_hook(r, "log level", apply_log_level, r);
        if (k < 0)
                return k;
        *ret = TAKE_PTR(r);
        return 0;
}

static void reload_free_retired(Reload *r) {
        for (size_t i = 0; i < r->n_retired; i++)
                config_free(r->retired[i]);
        r->retired = mfree(r->retired);
        r->n_retired = 0;
}

Reload *reload_free(Reload *r) {
        if (!r)
                return NULL;
        reload_free_retired(r);
        config_free(r->current);
        for (size_t i = 0; i < r->n_hooks; i++)
                free(r->hooks[i].name);
        free(r->hooks);
        free(r->path);
        free(r);
        return NULL;
}

int reload_add_hook(Reload *r, const char *name, ReloadHook hook, void *userdata) {
        Hook *n;
        char *copy;

        assert(r && name && hook);

        copy = strdup(name);
        if (!copy)
                return -ENOMEM;
        n = realloc(r->hooks, (r->n_hooks + 1) * sizeof(Hook));
        if (!n) {
                free(copy);
                return -ENOMEM;
        }
        r->hooks = n;
        r->hooks[r->n_hooks++] = (Hook){ .name = copy, .hook = hook, .userdata = userdata };
        return 0;
}

/* "a, b, c" into buf, cut with "..." when it does not fit. */
static void join_keys(char *const *keys, char *buf, size_t size) {
        size_t used = 0;

        buf[0] = 0;
        for (size_t i = 0; keys[i] && used < size; i++) {
                int k = snprintf(buf + used, size - used, "%s%s", i ? ", " : "", keys[i]);
                if (k < 0 || (size_t) k >= size - used) {
                        if (size > 4)
                                memcpy(buf + size - 4, "...", 4);
                        return;
                }
                used += (size_t) k;
        }
}

static int reload_load(Reload *r, Config **ret) {
        _cleanup_strv_free_ char **errors = NULL;
        size_t n = 0;
        int k;

        k = config_load(r->path, ret, &errors);
        if (k >= 0)
                return 0;
        for (char **e = errors; e && *e; e++, n++)
                log_error("%s", *e);
        /* -EINVAL: the file is wrong; anything else: it could not be read (gone, unreadable). */
        if (k != -EINVAL) {
                if (n == 0)
                        log_error_errno(k, "Failed to read '%s': %m", r->path);
                log_error("Reload failed: cannot read '%s'; keeping the old configuration.", r->path);
                snprintf(r->note, sizeof(r->note), "last reload failed: cannot read the configuration, old one kept");
        } else {
                log_error("Reload failed: %zu error%s in '%s'; keeping the old configuration.", n, n == 1 ? "" : "s",
                          r->path);
                snprintf(r->note, sizeof(r->note), "last reload failed: %zu error%s in the configuration, old one kept", n,
                         n == 1 ? "" : "s");
        }
        return k;
}

int reload_run(Reload *r) {
        _cleanup_(config_freep) Config *next = NULL;
        _cleanup_strv_free_ char **keys = NULL;
        const Config *old = reload_current(r);
        char list[200];               /* with "restart needed for ", within the supervisor's 256 */
        const char *failed = NULL;
        int k, n_keys, error = 0;

        log_info("Reloading the configuration from '%s'.", r->path);
        k = reload_load(r, &next);
        if (k < 0)
                return k;

        /* The same command line as at start: --no-serial on a file with serial on is no change. */
        next->serial.enabled = next->serial.enabled && !r->options.no_serial;
        next->mqtt.enabled = next->mqtt.enabled && !r->options.no_mqtt;
        /* What --check-config and a start refuse (exit 64), a reload refuses too: the restart
         * it asks for would not come up. */
        if (!next->serial.enabled && !next->mqtt.enabled) {
                log_error("Reload failed: nothing to collect in '%s': both the serial and the MQTT input are disabled; "
                          "keeping the old configuration.", r->path);
                snprintf(r->note, sizeof(r->note), "last reload failed: nothing to collect, old configuration kept");
                return -EINVAL;
        }

        /* Against what the tasks run on: a key changed and changed back needs nothing. */
        n_keys = reload_restart_keys(r->running, next, &keys);
        if (n_keys < 0) {
                log_error_errno(n_keys, "Reload failed: %m; keeping the old configuration.");
                snprintf(r->note, sizeof(r->note), "last reload failed: out of memory, old configuration kept");
                return n_keys;
        }
        for (char **key = keys; *key; key++)
                log_warning("Configuration key %s changed: needs a restart, not applied.", *key);

        for (size_t i = 0; i < r->n_hooks; i++) {
                k = r->hooks[i].hook(old, next, r->hooks[i].userdata);
                if (k < 0) {
                        log_error_errno(k, "Reload: failed to apply the %s: %m", r->hooks[i].name);
                        if (!failed) {
                                failed = r->hooks[i].name;
                                error = k;
                        }
                }
        }

        join_keys(keys, list, sizeof(list));
        if (failed) {
                Config **n = realloc(r->retired, (r->n_retired + 1) * sizeof(Config *));

                /* Hooks before and after the failed one may point into next now: keep it. */
                if (!n) {
                        log_error("Out of memory keeping a partly applied configuration; it stays allocated.");
                        TAKE_PTR(next);
                } else {
                        r->retired = n;
                        r->retired[r->n_retired++] = TAKE_PTR(next);
                }
                snprintf(r->note, sizeof(r->note), "last reload failed: could not apply the %s", failed);
                return error;
        }

        /* Every hook runs on next now; nothing points into older reloads any more. */
        reload_free_retired(r);
        config_free(r->current);
        r->current = TAKE_PTR(next);
        if (n_keys > 0) {
                snprintf(r->note, sizeof(r->note), "restart needed for %s", list);
                log_notice("Reloaded the configuration from '%s'; %d key%s need%s a restart: %s.", r->path, n_keys,
                           n_keys == 1 ? "" : "s", n_keys == 1 ? "s" : "", list);
        } else {
                r->note[0] = 0;
                log_info("Reloaded the configuration from '%s'.", r->path);
        }
        return 0;
}

const char *reload_get_note(Reload *r) {
        return r->note[0] ? r->note : NULL;
}

const Config *reload_get_config(Reload *r) {
        return reload_current(r);
}

int reload_run_for_supervisor(void *userdata, const char **ret_note) {
        Reload *r = userdata;
        int k = reload_run(r);

        *ret_note = reload_get_note(r);
        return k;
}
