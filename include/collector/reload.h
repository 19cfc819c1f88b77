/* SPDX-License-Identifier: MIT */
/* Reloading the configuration at run time (SIGHUP): load and validate, report what needs a restart, apply the rest. */
#pragma once

#include <stdbool.h>

#include "collector/config.h"
#include "collector/macro.h"

/* Lists the keys that only a restart applies and whose values differ between running and
 * next, as JSON paths in the order of the file ("/serial/device", "/mqtt/topics", ...). A
 * section disabled in both is not compared beyond its "enabled". Pure: no I/O, no logging.
 * Returns the number of keys (>= 0) and *ret_keys (a NULL-terminated list, owned by the caller,
 * free with strv_free(); an empty list when nothing differs), or -ENOMEM. */
int reload_restart_keys(const Config *running, const Config *next, char ***ret_keys);

typedef enum ReloadKeyKind {
        RELOAD_KEY_RESTART,           /* only a restart applies it; a reload names it and leaves it */
        RELOAD_KEY_APPLIED,           /* a reload applies it */
        _RELOAD_KEY_KIND_MAX,
        _RELOAD_KEY_KIND_INVALID = -EINVAL,
} ReloadKeyKind;

/* How a reload treats the key at path, a JSON path as in error messages ("/serial/baud"; a
 * list such as "/mqtt/topics" is one key). Returns the kind, or -ENOENT for a key this module
 * does not know: every key of the configuration must be classified here (a unit test walks the
 * example configuration), so that a new key is never silently taken as applied. Pure. */
int reload_key_kind(const char *path);

/* Applies what can be applied of a new configuration at run time. Called with old, the
 * configuration last fully applied (at the first reload: the one the daemon started with),
 * and next, the new one, validated. Returns 0, or -errno when it could not apply next (it logs
 * nothing: the reload logs the error with the hook's name and says so in STATUS=).
 * Pointers: a hook may keep pointers into next once it returned 0; they stay valid until its
 * next successful call or the end of the process. After a failure it keeps what it had (into
 * old); old stays valid then too. */
typedef int (*ReloadHook)(const Config *old, const Config *next, void *userdata);

typedef struct Reload Reload;

typedef struct ReloadOptions {
        const char *path;             /* the configuration file, read again at each reload */
        int log_level_override;       /* --log-level given: the file's log.level is not applied; or -1 */
        bool no_serial;               /* --no-serial, --no-mqtt: applied to each new file as at start */
        bool no_mqtt;
} ReloadOptions;

/* Creates the reload state. running is the configuration the tasks were built from: borrowed,
 * it must outlive the Reload and every task (the tasks keep pointers into it). The log level is
 * applied by a hook of its own, the first. options->path is copied.
 * Returns 0 or -ENOMEM. */
int reload_new(const Config *running, const ReloadOptions *options, Reload **ret);

/* Frees every configuration loaded by reloads (not the running one). Call it after the hooks'
 * owners are done with them. Accepts NULL; returns NULL. */
Reload *reload_free(Reload *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(Reload *, reload_free);

/* Adds a hook, called at each good reload after those added before. name (copied) appears in
 * the journal if it fails. Returns 0 or -ENOMEM. */
int reload_add_hook(Reload *r, const char *name, ReloadHook hook, void *userdata);

/* Reloads: reads and validates the file; if invalid, logs every error with its location and
 * keeps the old configuration; if valid, logs each key that needs a restart ("not applied")
 * and runs the hooks. Logs everything itself. Returns 0 when the new file was applied (keys
 * needing a restart aside), -EINVAL when it is invalid, -errno when it cannot be read or a hook
 * failed. */
int reload_run(Reload *r);

/* What STATUS= should say about the reloads, or NULL when nothing: the last reload failed, or
 * keys changed that wait for a restart. Owned by r, valid until the next reload_run(). */
const char *reload_get_note(Reload *r);

/* The configuration last fully applied (the running one before the first good reload). Owned
 * by r (or the caller of reload_new()), valid until the next reload_run(). */
const Config *reload_get_config(Reload *r);

/* The function supervisor_set_reload() wants: reload_run(userdata), and the note. */
int reload_run_for_supervisor(void *userdata, const char **ret_note);
