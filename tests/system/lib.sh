# SPDX-License-Identifier: MIT
# Helpers for the system tests: a real systemd system manager in private PID and mount
# namespaces and its own cgroup, with a private journald, plus a broker and a pty pair; every
# process is stopped by PID or by cgroup when the test ends, also when it fails.
#
# Sourced by tests/system/test-*.sh. The environment (set by CTest, see CMakeLists.txt):
#   SC_BINARY  the built sensor-collector       SC_PTYSHIM  tests/lib/ptyshim.c built
#   SC_SOURCE  the source tree                   SC_KEEP=1   keep the test's directory
#
# Isolation, and why (see /work/shared/TESTBED.md): the manager never loads the host's units
# (SYSTEMD_UNIT_PATH names our directory only, generators are off, the default target is a stub
# of ours), since a system manager's sysinit.target would run tmpfiles against the real machine.
# Inside the namespace: a tmpfs on /run (the manager's state, journald's sockets, the test dir
# bound at /run/sctest), overlays on /etc and /var (whatever systemd writes there, machine-id,
# /var/lib/private for DynamicUser=, the journal, lands in the test dir), a bind on /tmp (so
# PrivateTmp= leaves nothing in the real /tmp) and a fresh tmpfs on /dev/shm (systemd mounts the
# credentials' ramfs there). The manager runs in a cgroup of its own, sctest_<pid>.slice (a
# slice name, so journald derives _SYSTEMD_UNIT= from the paths below it): cgroup.kill ends
# everything in it at cleanup.

set -euo pipefail

SC_TEST=$(basename "$0" .sh)
SC_NS=/run/sctest            # the test directory as the manager sees it
T=""
SC_CGROUP=""
SC_MANAGER_PID=""
SC_PIDS=()                   # processes the test started outside the manager (broker, socat)

sc_log() { printf '[%s %s] %s\n' "$(date +%T.%3N)" "$SC_TEST" "$*" >&2; }

sc_skip() {
        sc_log "SKIP: $*"
        exit 77
}

# Prints what helps to understand a failure: the manager's log and the journal's tail.
sc_dump() {
        [ -n "$T" ] || return 0
        if [ -s "$T/manager.log" ]; then
                sc_log "---- manager output"
                tail -n 30 "$T/manager.log" >&2 || true
        fi
        if [ -n "$SC_MANAGER_PID" ] && kill -0 "$SC_MANAGER_PID" 2>/dev/null; then
                sc_log "---- journal (last 60 lines)"
                sc_journal -n 60 -o short-monotonic 2>&1 | grep -v ' kernel: ' >&2 || true
        fi
}

sc_fail() {
        sc_log "FAIL: $*"
        sc_dump
        exit 1
}

# sc_check DESCRIPTION COMMAND...: runs the command; a non-zero status fails the test.
sc_check() {
        local what=$1
        shift
        if "$@"; then
                sc_log "ok: $what"
        else
                sc_fail "$what"
        fi
}

# sc_wait SECONDS DESCRIPTION COMMAND...: polls the command every 0.1 s until it succeeds.
sc_wait() {
        local timeout=$1 what=$2 deadline
        shift 2
        deadline=$(($(date +%s%N) + timeout * 1000000000))
        until "$@" >/dev/null 2>&1; do
                [ "$(date +%s%N)" -lt "$deadline" ] || sc_fail "timed out after ${timeout}s waiting for: $what"
                sleep 0.1
        done
        sc_log "ok: $what"
}

sc_kill_pid() { # PID: TERM, then KILL after 5 s; waits until it is gone.
        local pid=$1 i
        kill -TERM "$pid" 2>/dev/null || return 0
        for i in $(seq 50); do
                kill -0 "$pid" 2>/dev/null || return 0
                sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        for i in $(seq 50); do
                kill -0 "$pid" 2>/dev/null || return 0
                sleep 0.1
        done
}

sc_cleanup() {
        local status=$? h i pid
        set +e
        if [ -n "$SC_CGROUP" ] && [ -d "/sys/fs/cgroup/unified/$SC_CGROUP" ]; then
                # The manager, journald and every service process, at once.
                echo 1 >"/sys/fs/cgroup/unified/$SC_CGROUP/cgroup.kill"
                for i in $(seq 50); do
                        [ -z "$(find "/sys/fs/cgroup/unified/$SC_CGROUP" -name cgroup.procs -exec cat {} + 2>/dev/null)" ] && break
                        sleep 0.1
                done
        fi
        for pid in "${SC_PIDS[@]}"; do
                sc_kill_pid "$pid"
        done
        if [ -n "$SC_CGROUP" ]; then
                for h in /sys/fs/cgroup/*/"$SC_CGROUP"; do
                        [ -d "$h" ] && find "$h" -depth -type d -exec rmdir {} + 2>/dev/null
                done
        fi
        if [ -n "$T" ]; then
                if [ "${SC_KEEP:-0}" = 1 ]; then
                        sc_log "kept $T"
                else
                        rm -rf "$T"
                fi
        fi
        exit "$status"
}

# sc_setup: checks what the tests need and makes the test directory $T.
sc_setup() {
        [ "$(id -u)" -eq 0 ] || sc_skip "needs root (namespaces, cgroups, a system manager)"
        [ -x /lib/systemd/systemd ] || sc_skip "systemd is not installed"
        [ -d /sys/fs/cgroup/unified ] || [ -f /sys/fs/cgroup/cgroup.controllers ] ||
                sc_skip "no cgroup2 hierarchy"
        [ -n "${SC_BINARY:-}" ] && [ -x "$SC_BINARY" ] || sc_fail "SC_BINARY is not set to the built daemon"
        command -v unshare >/dev/null && command -v nsenter >/dev/null || sc_skip "util-linux unshare/nsenter missing"
        T=$(mktemp -d "${TMPDIR:-/tmp}/sc-$SC_TEST-XXXXXX")
        chmod 0755 "$T"
        trap sc_cleanup EXIT
        trap 'exit 130' INT TERM
        mkdir -p "$T/bin" "$T/units" "$T/empty" "$T/tmp" "$T/etc-up" "$T/etc-work" "$T/var-up" \
                 "$T/var-work" "$T/run"
        chmod 1777 "$T/tmp"
        chmod 0700 "$T/run"
        # The manager sees the test directory only under /run/sctest (its /tmp is private): the
        # daemon and the shim are copied there, where the dynamic user can reach them.
        install -m 0755 "$SC_BINARY" "$T/bin/sensor-collector"
        if [ -n "${SC_PTYSHIM:-}" ]; then
                install -m 0755 "$SC_PTYSHIM" "$T/bin/ptyshim.so"
        fi
}

# sc_unit_stubs: the targets a service's default dependencies name, as empty stubs.
sc_unit_stubs() {
        local t
        for t in sc-test basic sysinit shutdown default exit sockets timers paths local-fs \
                 network network-online multi-user; do
                printf '[Unit]\nDescription=%s (test stub)\n' "$t" >"$T/units/$t.target"
        done
        # journald as the manager's own units, under the names it checks before it logs to the
        # journal (its "Main process exited", "Watchdog timeout" lines, with UNIT=, EXIT_STATUS=).
        cat >"$T/units/systemd-journald.socket" <<'UNIT'
[Unit]
Description=journald sockets (test)
DefaultDependencies=no
[Socket]
ListenStream=/run/systemd/journal/stdout
ListenDatagram=/run/systemd/journal/socket
SocketMode=0666
PassCredentials=yes
PassSecurity=yes
ReceiveBuffer=8M
Service=systemd-journald.service
UNIT
        cat >"$T/units/systemd-journald.service" <<'UNIT'
[Unit]
Description=journald (test)
DefaultDependencies=no
Requires=systemd-journald.socket
After=systemd-journald.socket
[Service]
Type=notify
Sockets=systemd-journald.socket
ExecStart=/lib/systemd/systemd-journald
UNIT
        printf '[Unit]\nDescription=sc-test (test stub)\nWants=systemd-journald.service\nAfter=systemd-journald.service\n' \
                >"$T/units/sc-test.target"
}

# sc_manager_start: starts a system manager as PID 1 of a new PID namespace; returns when it
# answers. (A user manager would do for Type=notify, but not for DynamicUser=, devices and the
# sandbox, so every test uses the system manager.)
sc_manager_start() {
        sc_unit_stubs
        cat >"$T/ns.sh" <<EOF
set -e
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p $SC_NS /run/systemd/system /run/systemd/journal /run/log/journal /run/user
mount --bind "$T" $SC_NS
mount -t overlay overlay -o lowerdir=/etc,upperdir=$T/etc-up,workdir=$T/etc-work /etc
mount -t overlay overlay -o lowerdir=/var,upperdir=$T/var-up,workdir=$T/var-work /var
mount --bind "$T/tmp" /tmp
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 SYSTEMD_UNIT_PATH=$SC_NS/units \\
        SYSTEMD_GENERATOR_PATH=$SC_NS/empty SYSTEMD_ENVIRONMENT_GENERATOR_PATH=$SC_NS/empty \\
        /lib/systemd/systemd --system --unit=sc-test.target --log-target=journal
EOF
        SC_CGROUP="sctest_$$.slice"
        local h outer
        for h in systemd unified; do
                mkdir "/sys/fs/cgroup/$h/$SC_CGROUP"
        done
        (
                echo "$BASHPID" >"/sys/fs/cgroup/systemd/$SC_CGROUP/cgroup.procs"
                echo "$BASHPID" >"/sys/fs/cgroup/unified/$SC_CGROUP/cgroup.procs"
                exec unshare --pid --fork --mount-proc --mount --propagation private -- bash "$T/ns.sh"
        ) >"$T/manager.log" 2>&1 &
        outer=$!
        disown "$outer"
        SC_PIDS+=("$outer")
        sc_wait 5 "the system manager process" pgrep -P "$outer" -x systemd
        SC_MANAGER_PID=$(pgrep -P "$outer" -x systemd)
        sc_wait 10 "the system manager answers" sc_manager_up
}

sc_manager_up() {
        local state
        state=$(sc_ctl is-system-running 2>/dev/null) || true
        case "$state" in running|degraded) return 0 ;; *) return 1 ;; esac
}

# sc_ctl ARGS...: systemctl for the test's manager.
sc_ctl() {
        nsenter -t "$SC_MANAGER_PID" -m -p -- systemctl --no-pager "$@"
}

# sc_journal ARGS...: journalctl inside the namespace, on the private journal.
sc_journal() {
        nsenter -t "$SC_MANAGER_PID" -m -- journalctl --no-pager "$@"
}

# sc_in_ns COMMAND...: runs a command in the manager's mount namespace.
sc_in_ns() {
        nsenter -t "$SC_MANAGER_PID" -m -p -- "$@"
}

sc_prop() { # UNIT PROPERTY: one property's value
        sc_ctl show -P "$2" "$1"
}

sc_is_state() { # UNIT ACTIVE-STATE [SUB-STATE]
        [ "$(sc_prop "$1" ActiveState)" = "$2" ] || return 1
        [ -z "${3:-}" ] || [ "$(sc_prop "$1" SubState)" = "$3" ]
}

sc_restarts() { # UNIT: how often systemd restarted it automatically
        sc_prop "$1" NRestarts
}

# The path libserialport accepts for a pty link: it wants a name under /dev/ and looks the part
# after "/dev/" up below /sys/class/tty/, so enough ".." reach / from both places.
sc_pty_device() { echo "/dev/../../../../../..$SC_NS/pty/dev"; }

# sc_pty_start: a socat pty pair, $T/pty/dev (the daemon's end) and $T/pty/sim (ours). The
# daemon's end gets root:dialout 0660, as udev gives a USB serial adapter.
sc_pty_start() {
        mkdir -p "$T/pty"
        rm -f "$T/pty/dev" "$T/pty/sim"
        socat pty,raw,echo=0,link="$T/pty/dev" pty,raw,echo=0,link="$T/pty/sim" 2>>"$T/socat.log" &
        SC_SOCAT_PID=$!
        SC_PIDS+=("$SC_SOCAT_PID")
        sc_wait 5 "socat made the pty pair" test -e "$T/pty/dev" -a -e "$T/pty/sim"
        chgrp dialout "$(readlink -f "$T/pty/dev")"
        chmod 0660 "$(readlink -f "$T/pty/dev")"
}

sc_pty_stop() {
        sc_kill_pid "$SC_SOCAT_PID"
        sc_wait 5 "the pty links are gone" test ! -e "$T/pty/dev"
}

# sc_pty_write TEXT: one write into the test's end of the pair.
sc_pty_write() {
        printf '%s' "$1" >"$T/pty/sim"
}

# sc_unit_from_source MODE EDITS...: the real unit from systemd/, through sed expressions, into
# the test's unit directory. Each edit is a difference from the shipped unit; the test says why.
sc_unit_from_source() {
        local args=() e
        for e in "$@"; do
                args+=(-e "$e")
        done
        sed "${args[@]}" "$SC_SOURCE/systemd/sensor-collector.service" >"$T/units/sensor-collector.service"
        sc_ctl daemon-reload
}

# sc_pty_unit_from_source [EDITS...]: sc_unit_from_source with the differences every test that
# feeds the daemon through the pty needs: the built binary (ExecStart=), the pty and its shim
# (DeviceAllow=char-pts rw, Environment=LD_PRELOAD=ptyshim.so) and exclusive mode cleared before
# each start (ExecStartPre=-+clear-exclusive, written to $T/bin); test-lifecycle.sh says why.
# EDITS are further sed expressions, applied before the ExecStartPre= one.
sc_pty_unit_from_source() {
        sc_unit_from_source \
                "s|^ExecStart=/usr/bin/sensor-collector |ExecStart=$SC_NS/bin/sensor-collector |" \
                "s|^DeviceAllow=char-ttyAMA rw|&\nDeviceAllow=char-pts rw\nEnvironment=LD_PRELOAD=$SC_NS/bin/ptyshim.so|" \
                "$@" \
                "s|^ExecStart=|ExecStartPre=-+$SC_NS/bin/clear-exclusive $SC_NS/pty/dev\n&|"
        cat >"$T/bin/clear-exclusive" <<'PERL'
#!/usr/bin/perl
# Leaves exclusive mode on a tty (TIOCNXCL), as its last close would.
open(my $tty, "+<", $ARGV[0]) or exit 0;
ioctl($tty, 0x540D, 0) or die "TIOCNXCL on $ARGV[0]: $!\n";
PERL
        chmod 0755 "$T/bin/clear-exclusive"
}

# sc_status_has UNIT TEXT: TEXT is in `systemctl status UNIT` (which exits 3 while not active).
sc_status_has() {
        local out
        out=$(sc_ctl status "$1" 2>/dev/null) || true
        grep -qF "$2" <<<"$out"
}

# sc_sql DB SQL: one value, read through the sqlite3 shell (read-only).
sc_sql() {
        sqlite3 -readonly "$1" "$2"
}

# sc_broker_start: mosquitto on a free loopback port ($SC_BROKER_PORT, kept for a restart), with
# its persistence in $T/broker; returns once it answers.
SC_BROKER_PORT=""
SC_BROKER_PID=""
sc_broker_start() {
        local try
        mkdir -p "$T/broker"
        for try in 1 2 3 4 5; do
                [ -n "$SC_BROKER_PORT" ] && [ "$try" -eq 1 ] || SC_BROKER_PORT=$((20000 + RANDOM % 40000))
                printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nuser root\n' \
                        "$SC_BROKER_PORT" "$T/broker" >"$T/broker/mosquitto.conf"
                mosquitto -c "$T/broker/mosquitto.conf" >>"$T/broker/log" 2>&1 &
                SC_BROKER_PID=$!
                SC_PIDS+=("$SC_BROKER_PID")
                local i
                for i in $(seq 50); do
                        kill -0 "$SC_BROKER_PID" 2>/dev/null || break
                        if mosquitto_sub -p "$SC_BROKER_PORT" -t '$SYS/broker/version' -C 1 -W 1 >/dev/null 2>&1; then
                                sc_log "ok: broker on port $SC_BROKER_PORT"
                                return 0
                        fi
                        sleep 0.1
                done
                sc_kill_pid "$SC_BROKER_PID"
        done
        sc_fail "mosquitto did not start"
}

sc_broker_stop() {
        sc_kill_pid "$SC_BROKER_PID"
}

sc_publish() { # TOPIC PAYLOAD
        mosquitto_pub -p "$SC_BROKER_PORT" -q 1 -t "$1" -m "$2"
}
