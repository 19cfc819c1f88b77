#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The Debian package: built from the tree by packaging/build-deb, lintian clean, installed on this
# machine with dpkg -i, its files and the binary checked, then purged with nothing left behind.
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || sc_skip "needs root (dpkg -i)"
for tool in dpkg dpkg-deb lintian fakeroot dpkg-shlibdeps; do
        command -v "$tool" >/dev/null || sc_skip "$tool is missing"
done
if dpkg-query -W -f='${Status}' sensor-collector 2>/dev/null | grep -q 'install ok'; then
        sc_skip "sensor-collector is already installed on this machine; not touching it"
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/sc-$SC_TEST-XXXXXX")
# On any exit, failure included: purge what this test installed, keep the exit status.
trap 'st=$?; dpkg -P sensor-collector >/dev/null 2>&1; (exit $st); sc_cleanup' EXIT

# What must be as it was after the purge.
snapshot() {
        ls -d /etc/sensor-collector /var/lib/sensor-collector /var/lib/private/sensor-collector \
              /usr/bin/sensor-collector /lib/systemd/system/sensor-collector.service \
              /etc/systemd/system/multi-user.target.wants/sensor-collector.service \
              /var/lib/systemd/deb-systemd-helper-enabled/sensor-collector.service.dsh-also \
              /usr/share/doc/sensor-collector /usr/share/bash-completion/completions/sensor-collector 2>/dev/null || true
        getent group sensor-collector-status || true
}
before=$(snapshot)

deb=$(flock "${SC_BUILD:-$T}/.build-deb.lock" "$SC_SOURCE/packaging/build-deb" "${SC_BUILD:-$T}/deb" | tail -n 1)
sc_check "build-deb made $deb" test -f "$deb"

# ---- lintian: clean, or each remaining tag explained in packaging/lintian-overrides.txt ------
lintian --profile debian --fail-on error,warning --suppress-tags-from-file \
        "$SC_SOURCE/packaging/lintian-overrides.txt" "$deb" >"$T/lintian.out" 2>&1 || {
        cat "$T/lintian.out" >&2
        sc_fail "lintian reports errors or warnings"
}
sc_log "lintian: $(wc -l <"$T/lintian.out") info lines: $(tr '\n' ';' <"$T/lintian.out")"

# ---- the control data -------------------------------------------------------------------------
depends=$(dpkg-deb -f "$deb" Depends)
sc_log "Depends: $depends"
for lib in libmosquitto1 libserialport0 libsystemd0 libcjson1 libsqlite3-0; do
        sc_check "Depends names $lib (from dpkg-shlibdeps)" grep -q "$lib" <<<"$depends"
done
sc_check "Depends names procps (/bin/kill, which the unit's ExecReload= runs)" grep -qw procps <<<"$depends"
sc_check "the configuration is a conffile" \
        bash -c 'dpkg-deb --ctrl-tarfile "$1" | tar -xO ./conffiles | grep -qx /etc/sensor-collector/sensor-collector.json' _ "$deb"

# ---- install -----------------------------------------------------------------------------------
dpkg -i "$deb" >"$T/dpkg-i.out" 2>&1 || { cat "$T/dpkg-i.out" >&2; sc_fail "dpkg -i"; }
sc_log "installed"
for f in /usr/bin/sensor-collector /lib/systemd/system/sensor-collector.service \
         /etc/sensor-collector/sensor-collector.json /usr/share/man/man8/sensor-collector.8.gz \
         /usr/share/man/man5/sensor-collector.json.5.gz /usr/share/doc/sensor-collector/copyright \
         /usr/share/doc/sensor-collector/changelog.gz /usr/share/doc/sensor-collector/README.md \
         /usr/share/bash-completion/completions/sensor-collector; do
        sc_check "installed: $f" test -e "$f"
done
sc_check "the empty MQTT password exists, root only" test "$(stat -c '%a %U' /etc/sensor-collector/mqtt-password)" = "600 root"
sc_check "the group of the status socket exists" getent group sensor-collector-status
sc_check "the unit is enabled (multi-user.target.wants)" \
        test -L /etc/systemd/system/multi-user.target.wants/sensor-collector.service
sc_check "the installed unit runs /usr/bin/sensor-collector" \
        grep -q '^ExecStart=/usr/bin/sensor-collector --config /etc/sensor-collector/sensor-collector.json$' \
        /lib/systemd/system/sensor-collector.service
sc_check "the installed unit reloads with SIGHUP through an executable /bin/kill" \
        bash -c 'grep -q "^ExecReload=/bin/kill -HUP \$MAINPID$" "$1" && test -x /bin/kill' _ /lib/systemd/system/sensor-collector.service
version=$(/usr/bin/sensor-collector --version)
sc_check "sensor-collector --version: $version" test "$version" = "sensor-collector $(dpkg-deb -f "$deb" Version)"
out=$(/usr/bin/sensor-collector --check-config 2>&1)
sc_check "--check-config on the shipped example: $out" test "$out" = "configuration OK"
sc_check "man finds sensor-collector(8)" bash -c 'man -w sensor-collector >/dev/null'
rc=0
/usr/bin/sensor-collector status >/dev/null 2>&1 || rc=$?
sc_check "sensor-collector status without a running daemon exits 3 (got $rc)" test "$rc" -eq 3

# ---- purge: nothing left ----------------------------------------------------------------------
dpkg -P sensor-collector >"$T/dpkg-p.out" 2>&1 || { cat "$T/dpkg-p.out" >&2; sc_fail "dpkg -P"; }
sc_check "dpkg forgot the package" bash -c '! dpkg-query -W sensor-collector >/dev/null 2>&1'
after=$(snapshot)
sc_check "nothing left behind (before: '${before}', after: '${after}')" test "$before" = "$after"
sc_check "no /etc/sensor-collector" test ! -e /etc/sensor-collector

sc_log "PASS"
