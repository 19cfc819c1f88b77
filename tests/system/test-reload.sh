#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# systemctl reload under a real systemd, from the shipped unit's ExecReload=: a good file is
# applied (the log level), a bad one is refused with its errors in the journal and the old
# configuration kept, a restart-only key is named and not applied; the process, the port and the
# broker connection stay, and every reading sent meanwhile is stored.
#
# Differences from the shipped unit: the same as test-lifecycle.sh, and for the same reasons
# (the built binary, the pty and its shim, exclusive mode cleared before each start).
. "$(dirname "$0")/lib.sh"

sc_setup
sc_manager_start
sc_broker_start
sc_pty_start

unit=sensor-collector.service
conf=/etc/sensor-collector/sensor-collector.json

write_config() { # JSON: the daemon's configuration, at the path the unit names
        printf '%s\n' "$1" >"$T/config.json"
        sc_in_ns sh -c "mkdir -p /etc/sensor-collector && cp $SC_NS/config.json $conf.new && mv $conf.new $conf &&
                        install -m 0600 /dev/null /etc/sensor-collector/mqtt-password"
}

config() { # LOG-LEVEL [DEVICE-SUFFIX]
        printf '{
  "serial": { "device": "%s%s", "format": "kv", "reopen_timeout": 30 },
  "mqtt": { "host": "127.0.0.1", "port": %s, "client_id": "sc-reload-test",
            "topics": [ { "filter": "greenhouse/+sensor/+metric", "qos": 1, "format": "value" } ] },
  "log": { "level": "%s" },
  "supervisor": { "stop_timeout": 5 }
}' "$(sc_pty_device)" "${2:-}" "$SC_BROKER_PORT" "$1"
}

write_config "$(config info)"
sc_pty_unit_from_source

status_has() { # TEXT: in `systemctl status`
        sc_status_has "$unit" "$1"
}
running() { sc_is_state $unit active running && status_has 'Status: "Running'; }
db() { sc_in_ns sqlite3 -readonly /var/lib/sensor-collector/readings.db "$1"; }
journal_count() { # TEXT JOURNALCTL-ARGS...: how many entries contain TEXT
        local text=$1
        shift
        sc_journal -o cat "$@" | grep -cF "$text" || true
}
journal_has() { [ "$(journal_count "$@")" -gt 0 ]; }
journal_count_is() { [ "$(journal_count "$2" -u sensor-collector)" -eq "$1" ]; }

sent=0
send_readings() { # N: N serial frames and one MQTT message, each with a new sequence number
        local i
        for i in $(seq "$1"); do
                sc_pty_write "sensor=s1 seq=$sent"$'\n'
                sent=$((sent + 1))
        done
        sc_publish greenhouse/m1/seq "$sent"
        sent=$((sent + 1))
}
all_stored() { [ "$(db 'SELECT count(*) FROM readings')" -eq "$sent" ]; }

sc_ctl start "$unit"
sc_wait 15 "active (running)" running
pid=$(sc_prop $unit MainPID)
send_readings 5
sc_wait 10 "the first readings are stored" all_stored

# ---- 1. a good file: the log level applies at once ---------------------------------------------
reloading_is() { journal_count_is "$1" "Reloading the configuration from '$conf'."; }
write_config "$(config warning)"
sc_ctl reload "$unit"
sc_wait 10 "the journal says the log level changed" journal_has "Log level changed from info to warning." -u sensor-collector
sc_wait 10 "active (running) again after the reload" running
sc_check "the manager ran ExecReload=" journal_has "Reloaded sensor-collector.service" -u sensor-collector
sc_check "the reload's start was said, at info, before the change" reloading_is 1
sc_check "its end, at info, after the change, was not" journal_count_is 0 "Reloaded the configuration from"
send_readings 5
sc_wait 10 "readings sent after the reload are stored" all_stored

# ---- 2. a bad file: errors with their location, the old configuration kept -------------------
write_config '{ "serial": { "device": "/dev/ttyUSB0", "baud": 9601 }, "log": { "level": "loud" } }'
sc_ctl reload "$unit"
sc_wait 10 "the journal says the reload failed" journal_has "Reload failed: 2 errors in '$conf'" -u sensor-collector -p err
sc_check "the journal names /serial/baud with the file" journal_has "$conf: /serial/baud: 9601" -u sensor-collector -p err
sc_check "the journal names /log/level with the file" journal_has "$conf: /log/level:" -u sensor-collector -p err
sc_wait 10 "systemctl status says the reload failed" \
        status_has 'Status: "Running (last reload failed: 2 errors in the configuration, old one kept)'
sc_check "still active (running)" sc_is_state $unit active running
sc_check "the last good file's level (warning) still applies: no info entry for this reload" reloading_is 1
send_readings 10
sc_wait 10 "readings sent after the failed reload are stored" all_stored

# ---- 3. a restart-only key: named, not applied; the rest applied ------------------------------
write_config "$(config info -moved)"
sc_ctl reload "$unit"
sc_wait 10 "the journal names the key that needs a restart" \
        journal_has "Configuration key /serial/device changed: needs a restart, not applied." -u sensor-collector -p warning
sc_wait 10 "systemctl status says a restart is needed" status_has '(restart needed for /serial/device)'
sc_check "the log level was applied" journal_has "Log level changed from warning to info." -u sensor-collector
sc_check "and shows: this reload's end, at notice, names the key" \
        journal_has "1 key needs a restart: /serial/device." -u sensor-collector
send_readings 5
sc_wait 10 "readings on the port in use are still stored" all_stored

# ---- 4. through it all: one process, the port opened once, the broker connected once ---------
sc_check "the same main process ($pid)" test "$(sc_prop $unit MainPID)" -eq "$pid"
sc_check "no restart" test "$(sc_restarts $unit)" -eq 0
sc_check "the port was opened once" journal_count_is 1 "Opened serial port"
sc_check "the port was never reopened" journal_count_is 0 "Reopened serial port"
sc_check "the broker was connected once" journal_count_is 1 "subscription granted."
sc_check "no reading was refused" test "$(db 'SELECT count(*) FROM rejects')" -eq 0

# ---- 5. and back to the file it started with: nothing waits for a restart --------------------
write_config "$(config info)"
sc_ctl reload "$unit"
no_restart_needed() { ! status_has 'restart needed'; }
sc_wait 10 "systemctl status no longer asks for a restart" no_restart_needed
sc_ctl stop "$unit"
sc_check "the daemon exited 0" test "$(sc_prop $unit ExecMainStatus)" -eq 0

sc_log "PASS"
