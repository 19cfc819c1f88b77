#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# `sensor-collector status` against the daemon run by a real systemd from its own unit: the socket
# in the runtime directory, 0660 with the unit's group; root and a member of the group may ask,
# another user is refused; the socket goes when the service stops.
#
# Differences from the shipped unit, and why (the same as test-lifecycle.sh):
#   ExecStart=        the built binary, copied where the manager can see it
#   DeviceAllow=char-pts rw, Environment=LD_PRELOAD=ptyshim.so, ExecStartPre=-+clear-exclusive
#                     the serial port is a pty that libserialport 0.1.1 opens only with the
#                     test shim; see test-lifecycle.sh
# Everything else, the hardening, Group= and RuntimeDirectory= included, is the shipped unit.
# The group and two users are made in the namespace's private /etc, as the package's postinst
# makes the group.
. "$(dirname "$0")/lib.sh"

sc_setup
sc_manager_start
sc_broker_start
sc_pty_start

unit=sensor-collector.service
sock=/run/sensor-collector/status.sock

printf '%s\n' '{
  "serial": { "device": "'"$(sc_pty_device)"'", "baud": 115200, "reopen_timeout": 30 },
  "mqtt": { "host": "127.0.0.1", "port": '"$SC_BROKER_PORT"', "client_id": "sc-status-system-test",
            "keepalive": 5, "max_offline": 30,
            "topics": [ { "filter": "greenhouse/+sensor/+metric", "qos": 1, "format": "value" } ] }
}' >"$T/config.json"
sc_in_ns sh -c "mkdir -p /etc/sensor-collector && cp $SC_NS/config.json /etc/sensor-collector/sensor-collector.json &&
                install -m 0600 /dev/null /etc/sensor-collector/mqtt-password &&
                groupadd --system sensor-collector-status &&
                useradd --system --no-create-home --groups sensor-collector-status sc-status-in &&
                useradd --system --no-create-home sc-status-out"
sc_pty_unit_from_source

as_user() { # USER COMMAND...: the command as USER with the user's groups
        local user=$1
        shift
        sc_in_ns setpriv --reuid="$user" --regid="$user" --init-groups -- "$@"
}
status_exit() { # WANT USER ARGS...: `sensor-collector status ARGS` as USER exits with WANT
        local want=$1 user=$2 rc=0
        shift 2
        as_user "$user" "$SC_NS/bin/sensor-collector" status "$@" >"$T/status.out" 2>&1 || rc=$?
        cat "$T/status.out" >&2
        [ "$rc" -eq "$want" ]
}

sc_ctl start "$unit"
sc_wait 20 "the service is active (running)" sc_is_state $unit active running
sc_pty_write '{"sensor":"s1","temp":21.5}
'
sc_publish greenhouse/s2/temp 19.5

sc_check "the socket is 0660, of the service's group" \
        test "$(sc_in_ns stat -c '%a %G %F' $sock)" = "660 sensor-collector-status socket"
sc_check "its directory lets the group in, nobody else" \
        test "$(sc_in_ns stat -c '%a %G' /run/sensor-collector)" = "750 sensor-collector-status"
sc_wait 10 "root asks: healthy (0)" status_exit 0 root
sc_check "root sees both inputs" grep -q '^  mqtt:$' "$T/status.out"
sc_check "a member of sensor-collector-status asks: healthy (0)" status_exit 0 sc-status-in --format json
sc_check "the JSON answer names the store" grep -q '"path":.*"/var/lib/sensor-collector/readings.db"' "$T/status.out"
sc_check "another user is refused (4)" status_exit 4 sc-status-out
sc_check "and told why" grep -q 'no access' "$T/status.out"

# The broker goes away: degraded (1), and the daemon keeps running.
sc_broker_stop
sc_wait 20 "degraded while the broker is away (1)" status_exit 1 root
sc_check "the service is still active" sc_is_state $unit active running

sc_ctl stop "$unit"
sc_check "the socket went with the service" sc_in_ns test ! -e $sock
sc_check "not running (3) once stopped" status_exit 3 root
sc_log "PASS"
