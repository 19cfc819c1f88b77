#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The unit and the man pages, without running anything: systemd-analyze verify says nothing,
# the sandbox's exposure stays at its floor, and both man pages render without a warning.
# Difference from the shipped unit for verify: ExecStart= names the built binary (verify wants
# the executable to exist); the man pages come from the tree (MANPATH).
. "$(dirname "$0")/lib.sh"

command -v systemd-analyze >/dev/null || sc_skip "systemd-analyze is missing"
T=$(mktemp -d "${TMPDIR:-/tmp}/sc-$SC_TEST-XXXXXX")
trap sc_cleanup EXIT
unit_src=$SC_SOURCE/systemd/sensor-collector.service

# ---- systemd-analyze verify: exit 0 and no output on stderr ---------------------------------
mkdir -p "$T/units" "$T/man/man8" "$T/man/man5"
cp "$SC_SOURCE/man/sensor-collector.8" "$T/man/man8/"
cp "$SC_SOURCE/man/sensor-collector.json.5" "$T/man/man5/"
sed "s|^ExecStart=/usr/bin/sensor-collector |ExecStart=$SC_BINARY |" "$unit_src" >"$T/units/sensor-collector.service"
sc_check "ExecStart= was pointed at the built binary" grep -q "^ExecStart=$SC_BINARY " "$T/units/sensor-collector.service"
rc=0
MANPATH=$T/man systemd-analyze verify "$T/units/sensor-collector.service" >"$T/verify.out" 2>"$T/verify.err" || rc=$?
cat "$T/verify.err" >&2
sc_check "systemd-analyze verify exits 0" test "$rc" -eq 0
sc_check "systemd-analyze verify prints nothing on stderr" test ! -s "$T/verify.err"

# ---- systemd-analyze security: the exposure stays at 1.1 or below -----------------------------
# 1.1 is the floor with the network (MQTT), serial devices, AF_UNIX (journal, sd_notify) and the
# dialout group the daemon needs; see the unit's comments.
(cd "$T" && systemd-analyze security --offline=true "$unit_src" >"$T/security.out" 2>&1) || true
grep -E '✗|Overall' "$T/security.out" >&2 || true
score=$(sed -n 's/.*Overall exposure level for sensor-collector.service: \([0-9.]*\).*/\1/p' "$T/security.out")
sc_check "systemd-analyze security printed a score ($score)" test -n "$score"
sc_check "exposure $score <= 1.1" awk -v s="$score" 'BEGIN { exit !(s <= 1.1) }'

# ---- the man pages render without warnings --------------------------------------------------
for page in sensor-collector.8 sensor-collector.json.5; do
        out=$(groff -ww -z -man "$SC_SOURCE/man/$page" 2>&1)
        sc_check "groff -ww -z $page: no warning" test -z "$out"
        out=$(MANWIDTH=80 man --warnings -l "$SC_SOURCE/man/$page" 2>&1 >/dev/null)
        sc_check "man -l $page: no warning" test -z "$out"
done
sc_check "sensor-collector(8) documents every exit status" \
        bash -c 'for s in 0 1 10 11 12 13 64 78; do grep -q "^\.B $s\$" "$1" || exit 1; done' _ "$SC_SOURCE/man/sensor-collector.8"
sc_check "sensor-collector(8) names every journal field" \
        bash -c 'for f in TASK SENSOR_ID TOPIC DEVICE EXIT_STATUS ERRNO; do grep -q "^\.B $f=" "$1" || exit 1; done' _ "$SC_SOURCE/man/sensor-collector.8"
sc_check "sensor-collector.json(5) documents every key of the example config" \
        bash -c 'for k in $(python3 -c "$3" "$1"); do grep -qiE "^\.(BR?|SH) $k\b" "$2" || { echo "missing: $k" >&2; exit 1; }; done' _ \
        "$SC_SOURCE/config/sensor-collector.json" "$SC_SOURCE/man/sensor-collector.json.5" '
import json, sys
# Every key of the file, except the names a user chooses: sensor ids and patterns in
# sensors.map, metric names in their metrics (the keys inside those are documented).
def walk(node, user_named=False):
    if isinstance(node, dict):
        for k, v in node.items():
            if not user_named:
                print(k)
            walk(v, k in ("map", "metrics"))
    elif isinstance(node, list):
        for v in node:
            walk(v)
walk(json.load(open(sys.argv[1])))
' 

sc_log "PASS"
