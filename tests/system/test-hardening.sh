#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The hardened unit under a real system manager: the daemon runs as its transient unprivileged
# user, reads the serial port through the dialout group, writes its store under
# StateDirectory= and nowhere else.
#
# Differences from the shipped unit, and why (as in test-lifecycle.sh):
#   ExecStart=        the built binary, copied where the manager can see it
#   DeviceAllow=char-pts rw, Environment=LD_PRELOAD=ptyshim.so
#                     the port is a socat pty, which libserialport 0.1.1 opens only with the test
#                     shim; the pty gets root:dialout 0660 as udev gives a USB serial adapter
# The probe unit at the end is the shipped unit with only ExecStart= and Type= replaced, so its
# sandbox is the daemon's.
. "$(dirname "$0")/lib.sh"

sc_setup
sc_manager_start
sc_pty_start

unit=sensor-collector.service
write_config() {
        printf '%s\n' "$1" >"$T/config.json"
        sc_in_ns sh -c "mkdir -p /etc/sensor-collector &&
                        cp $SC_NS/config.json /etc/sensor-collector/sensor-collector.json &&
                        install -m 0600 /dev/null /etc/sensor-collector/mqtt-password"
}
write_config '{ "serial": { "device": "'"$(sc_pty_device)"'", "baud": 9600 }, "mqtt": { "enabled": false } }'
sc_unit_from_source \
        "s|^ExecStart=/usr/bin/sensor-collector |ExecStart=$SC_NS/bin/sensor-collector |" \
        "s|^DeviceAllow=char-ttyAMA rw|&\nDeviceAllow=char-pts rw\nEnvironment=LD_PRELOAD=$SC_NS/bin/ptyshim.so|"

db=/var/lib/sensor-collector/readings.db
count() { sc_in_ns sqlite3 -readonly "$db" 'SELECT count(*) FROM readings' 2>/dev/null; }
stored() { [ "$(count)" -ge "$1" ]; }

sc_ctl start "$unit"
sc_check "the hardened unit is active" sc_is_state $unit active running

# ---- who it runs as ---------------------------------------------------------------------
pid=$(sc_prop $unit MainPID)
uid=$(sc_in_ns awk '/^Uid:/ { print $2 }' "/proc/$pid/status")
groups=$(sc_in_ns awk '/^Groups:/ { $1 = ""; print }' "/proc/$pid/status")
sc_log "daemon: uid $uid, groups$groups"
sc_check "it runs as an unprivileged dynamic user (uid $uid)" test "$uid" -ge 61184 -a "$uid" -le 65519
sc_check "with the dialout group" grep -qw "$(getent group dialout | cut -d: -f3)" <<<"$groups"
sc_check "without any capability" test "$(sc_in_ns awk '/^CapEff:/ { print $2 }' "/proc/$pid/status")" = 0000000000000000

# ---- the port through the group ---------------------------------------------------------
dev=$(readlink -f "$T/pty/dev")
sc_check "the pty is root:dialout 0660, not the daemon's" test "$(stat -c '%U:%G %a' "$dev")" = "root:dialout 660"
sc_pty_write $'{"sensor":"gh2-t1","temperature":19.25}\n'
sc_wait 10 "the frame read through the group is stored" stored 1

# ---- the store, under StateDirectory= ---------------------------------------------------
owner=$(sc_in_ns stat -c '%u %a' /var/lib/private/sensor-collector/readings.db)
sc_check "readings.db is the dynamic user's, mode 0600 (UMask=0077): $owner" test "$owner" = "$uid 600"
sc_check "/var/lib/sensor-collector is the StateDirectory= link" \
        test "$(sc_in_ns readlink /var/lib/sensor-collector)" = "private/sensor-collector"
sc_ctl stop "$unit"
sc_check "stopped cleanly (exit 0)" test "$(sc_prop $unit ExecMainStatus)" -eq 0

# ---- nowhere else: a store outside StateDirectory= fails (exit 12, no restart loop is not
# ---- promised: 12 restarts, which is right for a disk that may come back) -----------------
sc_in_ns mkdir -p /var/lib/elsewhere
sc_in_ns chmod 0777 /var/lib/elsewhere
write_config '{ "serial": { "device": "'"$(sc_pty_device)"'", "baud": 9600 }, "mqtt": { "enabled": false },
                "store": { "path": "/var/lib/elsewhere/readings.db" } }'
sc_ctl start --no-block "$unit"
failed_12() { [ "$(sc_prop $unit ExecMainStatus)" = 12 ]; }
sc_wait 10 "a store outside StateDirectory= fails with exit 12, though the directory is 0777" failed_12
sc_check "nothing was written there" test -z "$(sc_in_ns ls -A /var/lib/elsewhere)"
sc_ctl stop "$unit"

# ---- the same sandbox, probed: what the daemon could write -------------------------------
sc_unit_from_source \
        "s|^Type=notify|Type=oneshot|" \
        "s|^WatchdogSec=.*||" \
        "s|^ExecStart=.*|ExecStart=/bin/sh $SC_NS/probe.sh|"
sed -i 's/^\[Unit\]/[Unit]\nDescription=probe/' "$T/units/sensor-collector.service"
mv "$T/units/sensor-collector.service" "$T/units/sc-probe.service"
sc_in_ns mkdir -p /var/lib/sc-probe /root/sc-probe /home/sc-probe
sc_in_ns chmod 0777 /var/lib/sc-probe /root/sc-probe /home/sc-probe
cat >"$T/probe.sh" <<'EOF'
for d in /etc /etc/sensor-collector /usr/local /var/lib/sc-probe /root/sc-probe /home/sc-probe \
         /run /dev/shm /var/lib/private/sc-probe /var/lib/sc-probe; do
        if touch "$d/x" 2>/dev/null; then echo "writable $d"; else echo "denied $d"; fi
done
touch /var/lib/sc-probe/../sc-probe/x 2>/dev/null && echo "writable state" || echo "denied state"
touch /var/lib/sc-probe/x 2>/dev/null; touch "$STATE_DIRECTORY/x" && echo "writable STATE_DIRECTORY"
touch /tmp/x && echo "writable private /tmp"
ls /home /root >/dev/null 2>&1 && echo "sees homes" || echo "no homes"
EOF
sc_ctl daemon-reload
sc_ctl start sc-probe.service || true
out=$(sc_journal -u sc-probe -o cat)
sc_log "probe: $(grep -E '^(writable|denied|sees|no) ' <<<"$out" | tr '\n' ';')"
sc_check "the probe ran" grep -q "writable STATE_DIRECTORY" <<<"$out"
sc_check "no path outside the state directory and the private /tmp is writable" \
        test -z "$(grep '^writable /' <<<"$out")"
sc_check "home directories are hidden" grep -q "^no homes" <<<"$out"

sc_log "PASS"
