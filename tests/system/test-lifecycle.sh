#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The daemon under a real systemd, from its own unit: readiness, STATUS=, restarts after a
# serial or MQTT failure, the watchdog, a clean stop, a config error, and the journal fields.
#
# Differences from the shipped unit, and why:
#   ExecStart=        the built binary, copied where the manager can see it
#   DeviceAllow=char-pts rw, Environment=LD_PRELOAD=ptyshim.so
#                     the serial port is a pty (socat) that libserialport 0.1.1 can only open
#                     with the test shim (tests/lib/ptyshim.c); a real adapter needs neither
#   ExecStartPre=-+clear-exclusive
#                     libserialport puts the port in exclusive mode (TIOCEXCL). A real adapter
#                     leaves it at the daemon's close (the last close); socat keeps the pty's
#                     slave open, so the mode would outlive the daemon and the restarted,
#                     unprivileged daemon would get EBUSY. Root clears it (TIOCNXCL) before each
#                     start, as the last close of a real device does.
#   WatchdogSec=3s    instead of 30s, so a stalled daemon is caught within the test's time
# Everything else, the hardening included, is the shipped unit. The configuration sits at the
# real path, /etc/sensor-collector/sensor-collector.json, in the namespace's private /etc.
. "$(dirname "$0")/lib.sh"

sc_setup
sc_manager_start
sc_broker_start

unit=sensor-collector.service
conf=/etc/sensor-collector/sensor-collector.json

write_config() { # JSON: the daemon's configuration, at the path the unit names
        printf '%s\n' "$1" >"$T/config.json"
        sc_in_ns sh -c "mkdir -p /etc/sensor-collector && cp $SC_NS/config.json $conf &&
                        install -m 0600 /dev/null /etc/sensor-collector/mqtt-password"
}

write_config '{
  "serial": { "device": "'"$(sc_pty_device)"'", "baud": 115200, "reopen_timeout": 3 },
  "mqtt": { "host": "127.0.0.1", "port": '"$SC_BROKER_PORT"', "client_id": "sc-system-test",
            "keepalive": 5, "max_offline": 3,
            "topics": [ { "filter": "greenhouse/+sensor/+metric", "qos": 1, "format": "value" } ] },
  "supervisor": { "stop_timeout": 5 }
}'
sc_pty_unit_from_source \
        "s|^WatchdogSec=.*|WatchdogSec=3s|"

status_has() { # TEXT: in `systemctl status`
        sc_status_has "$unit" "$1"
}
restarts_above() { [ "$(sc_restarts $unit)" -gt "$1" ]; }
running() { sc_is_state $unit active running && status_has 'Status: "Running'; }
db() { sc_in_ns sqlite3 -readonly /var/lib/sensor-collector/readings.db "$1"; }
readings_at_least() { [ "$(db 'SELECT count(*) FROM readings')" -ge "$1" ]; }
journal_has() { # TEXT JOURNALCTL-ARGS...: the entries selected contain TEXT
        local text=$1
        shift
        local out
        out=$(sc_journal -o cat "$@")
        grep -qF "$text" <<<"$out"
}

# ---- 1. activating until READY=1, then active with STATUS= --------------------------------
# No serial port yet: the serial task waits for it (within reopen_timeout), so no READY=1.
sc_ctl start --no-block "$unit"
sc_wait 5 "the unit is activating (start)" sc_is_state $unit activating start
sleep 1
sc_check "still activating without the port, no READY=1 yet" sc_is_state $unit activating start
sc_check "STATUS= says it is starting" status_has 'Status: "Starting'
sc_pty_start
sc_wait 10 "active (running) once the port is there" running
sc_check "STATUS= names the tasks" status_has 'serial: running'
sc_check "no restart so far" test "$(sc_restarts $unit)" -eq 0
# The sandbox forbids adjtimex() (the unit says so) and hides /proc/sys (the unit passes %b).
sc_check "the clock task says what it decided, without asking the kernel" \
        journal_has "(kernel: not asked; systemd-timesyncd: " -u sensor-collector TASK=clock
sc_check "STATUS= has the clock" status_has 'clock: '

# ---- 2. readings from both inputs land in the store ------------------------------------------
sc_pty_write $'{"sensor":"gh1-t1","temperature":21.5}\n'
sc_publish greenhouse/gh1-h1/humidity 61.5
sc_wait 10 "both readings are stored" readings_at_least 2

# ---- 3. journalctl -u sensor-collector TASK=serial -----------------------------------------
sc_check "journalctl -u sensor-collector TASK=serial finds the serial task's entries" \
        journal_has "Opened serial port" -u sensor-collector TASK=serial
sc_check "journalctl -u sensor-collector TASK=mqtt finds the MQTT task's entries" \
        test -n "$(sc_journal -u sensor-collector TASK=mqtt -o cat)"

# ---- 4. the serial writer gone past reopen_timeout: exit 10, restarted, ready again ----------
n=$(sc_restarts $unit)
sc_pty_stop
sc_wait 15 "systemd restarted the service after the serial task failed" restarts_above "$n"
sc_check "the exit is recorded: journalctl -u sensor-collector EXIT_STATUS=10" \
        journal_has "Exiting with status 10." -u sensor-collector EXIT_STATUS=10
sc_check "TASK=serial EXIT_STATUS=10 names the cause" \
        test -n "$(sc_journal -u sensor-collector TASK=serial EXIT_STATUS=10 -p err -o cat)"
sc_pty_start
sc_wait 15 "ready again once the port is back" running

# ---- 5. the broker gone past max_offline: exit 11, restarted, ready again --------------------
n=$(sc_restarts $unit)
sc_broker_stop
sc_wait 15 "systemd restarted the service after the MQTT task failed" restarts_above "$n"
sc_check "journalctl -u sensor-collector EXIT_STATUS=11" \
        journal_has "Exiting with status 11." -u sensor-collector EXIT_STATUS=11
sc_broker_start
sc_wait 20 "ready again once the broker is back" running

# ---- 6. a stalled daemon misses the watchdog: killed (SIGABRT) and restarted -----------------
n=$(sc_restarts $unit)
pid=$(sc_prop $unit MainPID)
sc_in_ns kill -STOP "$pid"
sc_wait 15 "systemd restarted the stalled service" restarts_above "$n"
sc_check "the manager logged the watchdog timeout" journal_has "Watchdog timeout" -u sensor-collector
sc_check "the stalled process was killed with SIGABRT" journal_has "status=6/ABRT" -u sensor-collector
sc_wait 20 "ready again after the watchdog restart" running

# ---- 7. systemctl stop: exit 0, no restart ------------------------------------------------
sc_ctl stop "$unit"
n=$(sc_restarts $unit)
sc_check "inactive after stop" sc_is_state $unit inactive dead
sc_check "the daemon exited 0" test "$(sc_prop $unit ExecMainStatus)" -eq 0
sc_check "the daemon said so: EXIT_STATUS=0" journal_has "Exiting with status 0." -u sensor-collector EXIT_STATUS=0
sleep 3 # longer than RestartSec=2s: a restart would have happened by now
sc_check "no restart after a stop on request" sc_is_state $unit inactive dead
sc_check "the restart counter did not move" test "$(sc_restarts $unit)" -eq "$n"

# ---- 8. a config error: exit 78 and no restart loop -----------------------------------------
write_config '{ "serial": { "baud": "fast" }, "mqtt": { "enabled": false } }'
sc_ctl start --no-block "$unit"
sc_wait 10 "failed with an invalid configuration" sc_is_state $unit failed
sc_check "the daemon exited 78" test "$(sc_prop $unit ExecMainStatus)" -eq 78
sleep 3
sc_check "still failed after RestartSec: no restart loop" sc_is_state $unit failed
sc_check "no automatic restart" test "$(sc_restarts $unit)" -eq 0
sc_check "journalctl -u sensor-collector EXIT_STATUS=78 finds the manager's record" \
        test -n "$(sc_journal -u sensor-collector EXIT_STATUS=78 -o cat)"
sc_check "the journal points at the fault" journal_has "/serial/baud" -u sensor-collector -p err

sc_log "PASS"
