#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The soak and fault campaign: numbered readings through both inputs while faults hit the
# broker, the serial port, the daemon and its disk, under a real systemd; then an account of
# every reading (docs/RELIABILITY.md describes the method and the figures).
#
#   soak.sh [MINUTES]       (default SOAK_MINUTES, else 2)
#
# Environment: SC_BINARY, SC_PTYSHIM, SC_SOURCE (as for tests/system, see lib.sh), SC_SIMULATE
# (tools/sc-simulate), SOAK_SEED=N replays a run's schedule (printed at the start),
# SOAK_REPORT=FILE also writes the report there, SC_KEEP=1 keeps the test directory.
#
# What runs: the system manager, journald, broker and pty pair of tests/system/lib.sh (private
# namespaces, own cgroup, random port, everything stopped by PID or cgroup on any exit); the
# daemon from its own unit; three simulators, each numbering its good frames ("seq" metric):
# sensor ids soak-s* on the serial port, soak-m* over MQTT QoS 1 json on greenhouse/+/state,
# soak-q* over MQTT QoS 2 json on greenhouse-q2/+/state (a topic configured with qos 2, which
# the daemon subscribes as QoS 1: docs/MQTT.md).
# Differences from the shipped unit, and why (the first three as in test-lifecycle.sh):
#   ExecStart=, DeviceAllow=char-pts, LD_PRELOAD=ptyshim.so, ExecStartPre=clear-exclusive
#                     the serial port is a socat pty (see test-lifecycle.sh)
#   WatchdogSec=2s    so a SIGSTOPped daemon is caught quickly
# The state directory is a tmpfs of its own inside the namespace, so that its disk can be
# filled (and freed) without touching the machine. The broker gets max_queued_messages 0: by
# default mosquitto drops QoS 1 messages beyond 1000 per offline client, which would be the
# broker's loss, not ours; and autosave_interval 1: mosquitto writes its persistence only at
# exit and every autosave_interval seconds (default 1800), so a broker killed hard restarts
# from its last save. Saving every second (mosquitto saves when more than that has passed, so
# at most about 2 s apart) bounds what it can lose (see broker_kill).
#
# Faults (a seeded schedule: the kind, the pauses and the outage lengths come from SOAK_SEED):
#   sigkill       SIGKILL the daemon; systemd restarts it
#   watchdog      SIGSTOP the daemon; systemd's watchdog kills it (SIGABRT) and restarts it
#   restart       an orderly stop during ingest (systemctl stop: SIGTERM, which must end in exit
#                 0), then a start; the account holds MQTT loss at these stops to exactly 0
#   pty_short     the serial writer (socat) gone for less than serial.reopen_timeout
#   pty_long      gone for longer: the daemon exits 10 and is restarted
#   broker_short  mosquitto stopped (SIGTERM: it writes its persistence) and restarted within
#                 mqtt.max_offline
#   broker_long   stopped for longer: the daemon exits 11 and is restarted
#   broker_kill   mosquitto killed with SIGKILL (no persistence written) and restarted on the
#                 same port from its last autosave within mqtt.max_offline; the daemon rides it
#                 out. What the broker had acknowledged to a publisher but neither saved nor
#                 delivered is the broker's loss: the account attributes a gap to it only when
#                 the gap's frames were sent in the SOAK_BROKER_SAVE_MS before the kill and no
#                 daemon process ended around it
#   diskfull      the store's tmpfs filled until the daemon exits 12, held, then freed (once)
#   burst         both simulators send a burst of bad frames (SIGUSR2, sc-simulate --burst)
# Upstream faults (forwarding to a central broker, docs/UPSTREAM.md; see "Upstream" below):
#   central_restart   the central broker stopped (SIGTERM) and started again
#   central_kill      the central broker killed with SIGKILL and started again from its autosave
#   link_cut          the link to the central broker goes silent (the proxy stopped: no FIN, no
#                     RST) for longer than upstream.keepalive, then comes back
#   drain_kill        the central broker away long enough for a backlog, back, and the daemon
#                     SIGKILLed while that backlog drains (counted as a sigkill)
# Every restarting fault happens in the first 60% of the run; the rest has only the faults a
# running daemon rides out, so one process lives through them for the leak check.
#
# Verdict (exit 1 on any): an orderly stop that did not exit 0, or any MQTT frame lost at one
# (serial: at most the one line a stop cuts at the port close); a serial gap that no outage window explains, or serial loss above
# the bound from those windows; an MQTT gap (QoS 1 or QoS 2 stream) that is neither the
# broker's (see broker_kill) nor within one batch per hard kill or store failure; a message a
# publisher did not get acknowledged;
# a duplicate stored; a reject that no injected bad frame or outage explains; a restart with
# a cause not injected; a failed integrity_check; RSS growth of the long-lived daemon beyond
# noise, or no RSS samples to judge it by (the sampler gone); a simulator failing; a stored
# reading that never reached the central consumer and is not the central broker's loss (what a
# SIGKILLed central broker had acknowledged and not yet saved, told apart as for the input
# broker: the daemon's upstream loss must be 0), or more readings sent again from the backlog
# than the in-flight window allows per interruption.
#
# Upstream: the daemon forwards to a second private mosquitto (the central broker, on loopback,
# persistence with autosave_interval 1 as above) through a proxy of its own (socat, one process
# per connection; a link cut stops them all with SIGSTOP, so that what was sent stays unanswered,
# as on a dead link); a consumer (mosquitto_sub, persistent session, QoS 1) records every message
# in central.jsonl with its arrival time. At the end the run waits for the daemon's backlog to
# be 0 and for the consumer to have every stored reading, or nothing new for 15 s (conditions,
# not sleeps); the account reports readings stored, received upstream after dedup by (gateway,
# store, seq), lost upstream (the daemon's and the central broker's), and the repeats against
# their bound.
. "$(dirname "$0")/../system/lib.sh"

SOAK_MINUTES=${1:-${SOAK_MINUTES:-2}}
[[ "$SOAK_MINUTES" =~ ^[0-9]+$ ]] && [ "$SOAK_MINUTES" -ge 1 ] || { echo "soak.sh: MINUTES must be a positive integer" >&2; exit 64; }
SOAK_SEED=${SOAK_SEED:-$(( $(date +%s%N) % 1000000007 ))}
[ -n "${SC_SIMULATE:-}" ] && [ -x "$SC_SIMULATE" ] || { echo "soak.sh: SC_SIMULATE must name the built sc-simulate" >&2; exit 1; }

unit=sensor-collector.service
conf=/etc/sensor-collector/sensor-collector.json
state=/var/lib/private/sensor-collector            # the StateDirectory, as the manager sees it
RATE_SERIAL=25 RATE_MQTT=25 RATE_QOS2=10            # frames per second per input
REOPEN_TIMEOUT=4 MAX_OFFLINE=8                      # the daemon's budgets (seconds)
COMMIT_MAX_ROWS=500 READINGS_PER_FRAME=3            # batches of at most 500 rows (the default is 10000, where the 20 ms window decides), so the loss allowed per hard kill stays small; temperature, humidity, seq
READ_PACKET_BUDGET=64                               # MQTT messages handled per wakeup (mqtt-loop.c)
MARGIN_MS=500                                       # around each serial outage window
RSS_NOISE_KIB=1024                                  # allowed RSS growth of the long-lived daemon
BROKER_SAVE_MS=3000                                 # autosave_interval 1: saves <= ~2 s apart, + 1 s
UP_KEEPALIVE=5 UP_MAX_INFLIGHT=20 UP_BATCH=20         # upstream: the window the repeats are bounded by
UP_BACKLOG_RATE=300                                 # readings/s, so that a drain lasts long enough to kill

failures=()
verdict() { # OK? WHAT
        if [ "$1" = 1 ]; then sc_log "ok: $2"; else sc_log "FAIL: $2"; failures+=("$2"); fi
}
soft_wait() { # SECONDS WHAT COMMAND...: like sc_wait, but a timeout is a verdict, not the end
        local deadline=$(($(date +%s) + $1)) what=$2
        shift 2
        until "$@" >/dev/null 2>&1; do
                [ "$(date +%s)" -lt "$deadline" ] || { verdict 0 "timed out waiting for: $what"; return 1; }
                sleep 0.5
        done
        sc_log "ok: $what"
}
now_ms() { date +%s%3N; }
ev() { # KIND [DETAIL]: one line of the timeline
        printf '%s\t%s\t%s\n' "$(now_ms)" "$1" "${2:-}" >>"$T/timeline.tsv"
        sc_log "timeline: $1 ${2:-}"
}

# The broker of lib.sh, with one line added to its configuration (see above). sc_broker_start
# starts "mosquitto -c FILE" in the background; this function replaces itself with the real one.
mosquitto() {
        printf 'max_queued_messages 0\nautosave_interval 1\n' >>"$2"
        exec /usr/sbin/mosquitto "$@"
}

# ---- upstream: the central broker, the proxy in front of it, the consumer --------------------
CENTRAL_PORT="" CENTRAL_PID="" PROXY_PORT="" PROXY_PID="" CONSUMER_PID=""
central_answers() { mosquitto_sub -p "$CENTRAL_PORT" -t '$SYS/broker/version' -C 1 -W 1 >/dev/null 2>&1; }
central_start() { # on $CENTRAL_PORT once chosen (a restart keeps it)
        local try i
        mkdir -p "$T/central"
        for try in 1 2 3 4 5; do
                [ -n "$CENTRAL_PORT" ] && [ "$try" -eq 1 ] || CENTRAL_PORT=$((20000 + RANDOM % 40000))
                printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nuser root\nmax_queued_messages 0\nautosave_interval 1\n' \
                        "$CENTRAL_PORT" "$T/central" >"$T/central/mosquitto.conf"
                /usr/sbin/mosquitto -c "$T/central/mosquitto.conf" >>"$T/central/log" 2>&1 &
                CENTRAL_PID=$!
                SC_PIDS+=("$CENTRAL_PID")
                for i in $(seq 50); do
                        kill -0 "$CENTRAL_PID" 2>/dev/null || break
                        central_answers && return 0
                        sleep 0.1
                done
                sc_kill_pid "$CENTRAL_PID"
        done
        sc_fail "the central mosquitto did not start"
}
central_gone() { # PID: waits until that process is gone
        local i
        for i in $(seq 100); do
                kill -0 "$1" 2>/dev/null || return 0
                sleep 0.05
        done
        sc_fail "the central mosquitto (pid $1) still there 5 s after it was told to go"
}
proxy_start() { # socat, a process per connection, from $PROXY_PORT to the central broker
        PROXY_PORT=$((20000 + RANDOM % 40000))
        socat TCP-LISTEN:"$PROXY_PORT",bind=127.0.0.1,reuseaddr,fork TCP:127.0.0.1:"$CENTRAL_PORT" 2>>"$T/proxy.log" &
        PROXY_PID=$!
        SC_PIDS+=("$PROXY_PID")
        sc_wait 5 "the upstream proxy listens" bash -c "echo >/dev/tcp/127.0.0.1/$PROXY_PORT" 2>/dev/null
}
proxy_signal() { # SIG: the proxy and the processes it forked for connections
        local pids
        pids="$PROXY_PID $(ps -o pid= --ppid "$PROXY_PID" 2>/dev/null | tr '\n' ' ')"
        kill -"$1" $pids 2>/dev/null || true
}
consumer_start() { # a persistent QoS 1 session: what the broker takes while it is away still comes
        mosquitto_sub -p "$CENTRAL_PORT" -c -i soak-central-consumer -q 1 \
                -t 'sensor-collector/+/backlog' -t 'sensor-collector/+/+/+' -F '%U %p' >>"$T/central.jsonl" 2>>"$T/consumer.log" &
        CONSUMER_PID=$!
        SC_PIDS+=("$CONSUMER_PID")
}
consumer_historical() { grep -c '"historical":true' "$T/central.jsonl" || true; }
# central.jsonl has a line per message, "ARRIVAL PAYLOAD" (Unix time with nanoseconds, the JSON);
# central.json is the same as one array of {"t": ARRIVAL, "m": PAYLOAD}.
central_json() {
        sed 's/^\([0-9.]*\) \(.*\)$/{"t":\1,"m":\2}/; 1s/^/[/; $!s/$/,/; $s/$/]/' "$T/central.jsonl" >"$T/central.json"
        [ -s "$T/central.json" ] || echo '[]' >"$T/central.json"
}

sc_setup
# On any exit, before lib.sh's cleanup ends the namespace: keep the journal and the store with
# the rest of the test directory (SC_KEEP=1 keeps it; a failed run keeps it too).
soak_save() {
        [ -n "$SC_MANAGER_PID" ] && kill -0 "$SC_MANAGER_PID" 2>/dev/null || return 0
        [ -s "$T/journal.txt" ] || sc_journal -o short-precise >"$T/journal.txt" 2>/dev/null || true
        [ -s "$T/journal.json" ] || sc_journal -u "$unit" -o json 2>/dev/null |
                sed '1s/^/[/; $!s/$/,/; $s/$/]/' >"$T/journal.json" || true
        [ -e "$T/store.db" ] || { cp "$host_state/readings.db" "$T/store.db" &&
                cp "$host_state/readings.db-wal" "$T/store.db-wal"; } 2>/dev/null || true
}
# A run that ends during a link cut leaves the proxy stopped: it continues first, so that its
# connection processes (not in SC_PIDS) see the central broker go and exit.
trap 'st=$?; set +e; soak_save; [ -z "$PROXY_PID" ] || proxy_signal CONT; [ $st -eq 0 ] || SC_KEEP=1; (exit $st); sc_cleanup' EXIT
host_state=""
: >"$T/timeline.tsv"
sc_log "seed $SOAK_SEED, $SOAK_MINUTES min (replay: SOAK_SEED=$SOAK_SEED)"
sc_manager_start
sc_broker_start
sc_pty_start
: >"$T/central.jsonl"
central_start
proxy_start
consumer_start
RANDOM=$SOAK_SEED   # after the broker's random port: from here on RANDOM is the schedule's

# The state directory on a tmpfs of its own: about 1.5 MB of store per minute at these rates.
store_mb=$((24 + 2 * SOAK_MINUTES))
sc_in_ns sh -c "mkdir -p $state && chmod 0700 /var/lib/private && mount -t tmpfs -o size=${store_mb}m,mode=0700 soak-store $state"
# The same directory from outside, for cp and dd (the sqlite3 shell resolves the /proc link to
# our own root, so it reads the store through sc_in_ns instead).
host_state=/proc/$SC_MANAGER_PID/root$state

printf '%s\n' '{
  "serial": { "device": "'"$(sc_pty_device)"'", "baud": 115200, "reopen_timeout": '$REOPEN_TIMEOUT' },
  "mqtt": { "host": "127.0.0.1", "port": '"$SC_BROKER_PORT"', "client_id": "sc-soak",
            "keepalive": 5, "max_offline": '$MAX_OFFLINE',
            "topics": [ { "filter": "greenhouse/+sensor/state", "qos": 1, "format": "json" },
                        { "filter": "greenhouse-q2/+sensor/state", "qos": 2, "format": "json" } ] },
  "store": { "commit_max_rows": '$COMMIT_MAX_ROWS' },
  "upstream": { "enabled": true, "host": "127.0.0.1", "port": '"$PROXY_PORT"', "protocol": "5",
                "gateway_id": "soak-gw", "keepalive": '$UP_KEEPALIVE', "max_inflight": '$UP_MAX_INFLIGHT',
                "batch_size": '$UP_BATCH', "backlog_rate": '$UP_BACKLOG_RATE' },
  "supervisor": { "stop_timeout": 5 }
}' >"$T/config.json"
sc_in_ns sh -c "mkdir -p /etc/sensor-collector && cp $SC_NS/config.json $conf &&
                install -m 0600 /dev/null /etc/sensor-collector/mqtt-password"
cat >"$T/bin/clear-exclusive" <<'PERL'
#!/usr/bin/perl
# Leaves exclusive mode on a tty (TIOCNXCL), as its last close would.
open(my $tty, "+<", $ARGV[0]) or exit 0;
ioctl($tty, 0x540D, 0) or die "TIOCNXCL on $ARGV[0]: $!\n";
PERL
chmod 0755 "$T/bin/clear-exclusive"
sc_unit_from_source \
        "s|^ExecStart=/usr/bin/sensor-collector |ExecStart=$SC_NS/bin/sensor-collector |" \
        "s|^DeviceAllow=char-ttyAMA rw|&\nDeviceAllow=char-pts rw\nEnvironment=LD_PRELOAD=$SC_NS/bin/ptyshim.so|" \
        "s|^WatchdogSec=.*|WatchdogSec=2s|" \
        "s|^ExecStart=|ExecStartPre=-+$SC_NS/bin/clear-exclusive $SC_NS/pty/dev\n&|"

status_line() { sc_ctl status "$unit" 2>/dev/null | sed -n 's/^ *Status: "\(.*\)"$/\1/p' || true; }
healthy() { # active, the port open and the broker connected
        local s
        sc_is_state $unit active running || return 1
        s=$(status_line)
        [[ "$s" == *"serial: running"* && "$s" == *"mqtt: connected"* ]]
}
main_pid() { sc_prop $unit MainPID; }

ev start
sc_ctl start --no-block "$unit"
sc_wait 30 "the daemon is up with both inputs" healthy

# ---- RSS of the daemon, every 2 s, from the service's cgroup (host PIDs) --------------------
# (Which hierarchy holds the processes depends on the machine's cgroup setup: both are read.)
# The sampler must outlive every daemon process. A PID read from cgroup.procs can be gone a
# moment later (a kill, or an exit 12 milliseconds after a start while the disk is full), and
# under lib.sh's errexit the failed read of its status ended the whole sampler, silently: no
# samples from then on, and no leak check. So errexit is off in here, the name and VmRSS come
# from one read of /proc/PID/status (a vanished or reused PID yields nothing), errors go to
# rss.log, and the sampler must still be running at rss_end (checked there).
rss_sample() {
        local p r
        for p in $(find /sys/fs/cgroup/unified/"$SC_CGROUP" /sys/fs/cgroup/systemd/"$SC_CGROUP" \
                        -path "*/$unit/cgroup.procs" -exec cat {} + 2>/dev/null | sort -u); do
                r=$(awk '$1 == "Name:" { name = $2 } $1 == "VmRSS:" { kib = $2 }
                         END { if (name == "sensor-collecto" && kib != "") print kib }' \
                        "/proc/$p/status" 2>/dev/null) || continue
                [ -z "$r" ] || printf '%s\t%s\t%s\n' "$(date +%s%3N)" "$p" "$r"
        done
}
(
        set +e +o pipefail
        trap 'exit 0' TERM
        while :; do
                rss_sample
                sleep 2
        done
) >"$T/rss.tsv" 2>"$T/rss.log" &
rss_sampler=$!
SC_PIDS+=($rss_sampler)

# ---- the simulators ----------------------------------------------------------------------
sim_common=(-q --sensors 4 --metrics temperature,humidity --number --bad-rate 0.01 --burst 25
            --wait 30 --drain-timeout 30)
"$SC_SIMULATE" "${sim_common[@]}" --serial "$T/pty/sim" --rate $RATE_SERIAL --sensor-prefix soak-s \
        --seed $((SOAK_SEED + 1)) --stats-json "$T/sim-serial.json" 2>"$T/sim-serial.log" &
sim_serial=$!
SC_PIDS+=($sim_serial)
"$SC_SIMULATE" "${sim_common[@]}" --mqtt "127.0.0.1:$SC_BROKER_PORT" --qos 1 --client-id soak-sim \
        --mqtt-format json --rate $RATE_MQTT --sensor-prefix soak-m \
        --seed $((SOAK_SEED + 2)) --stats-json "$T/sim-mqtt.json" 2>"$T/sim-mqtt.log" &
sim_mqtt=$!
SC_PIDS+=($sim_mqtt)
"$SC_SIMULATE" "${sim_common[@]}" --mqtt "127.0.0.1:$SC_BROKER_PORT" --qos 2 --client-id soak-sim2 \
        --mqtt-format json --topic-prefix greenhouse-q2 --rate $RATE_QOS2 --sensor-prefix soak-q \
        --seed $((SOAK_SEED + 3)) --stats-json "$T/sim-mqtt2.json" 2>"$T/sim-mqtt2.log" &
sim_qos2=$!
SC_PIDS+=($sim_qos2)
ev sims_started

# ---- faults ------------------------------------------------------------------------------
rnd() { R=$((RANDOM % ($2 - $1 + 1) + $1)); }            # LO HI: an integer in R (no subshell,
                                                        # which would not advance RANDOM)
ms_sleep() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }

check_integrity() { # WHEN: integrity_check of the store as the next start will find it
        local dir="$T/check" pid before after out
        rm -rf "$dir" && mkdir -p "$dir"
        before=$(main_pid)
        cp "$host_state/readings.db" "$dir/" 2>/dev/null || { ev integrity "$1 skipped (no store yet)"; return 0; }
        cp "$host_state/readings.db-wal" "$dir/" 2>/dev/null || true
        after=$(main_pid)
        if [ "$before" != 0 ] || [ "$after" != 0 ]; then
                ev integrity "$1 skipped (a daemon was running during the copy)"
                return 0
        fi
        out=$(sqlite3 "$dir/readings.db" 'PRAGMA integrity_check' 2>&1) || true
        if [ "$out" = ok ]; then
                ev integrity "$1 ok"
        else
                ev integrity "$1 FAILED: $out"
                verdict 0 "integrity_check after $1: $out"
        fi
}

wait_dead() { # OLD-PID: until that process is gone and no new one runs yet
        local pid=$1 i
        for i in $(seq 150); do
                [ "$(main_pid)" != "$pid" ] && [ "$(main_pid)" = 0 ] && return 0
                sleep 0.05
        done
        return 1
}

exits_seen() { # the manager's "Main process exited" lines so far
        sc_journal -u "$unit" -o cat 2>/dev/null | grep -c 'Main process exited' || true
}

fault_sigkill() {
        local pid
        pid=$(main_pid)
        ev sigkill "pid $pid"
        sc_in_ns kill -KILL "$pid"
        wait_dead "$pid" && check_integrity "sigkill"
}
fault_watchdog() {
        local pid
        pid=$(main_pid)
        ev sigstop "pid $pid"
        sc_in_ns kill -STOP "$pid"
        wait_dead "$pid" && check_integrity "watchdog"
}
fault_restart() { # an orderly stop in the middle of the stream, then a start
        local pid result status said i
        pid=$(main_pid)
        ev term "pid $pid"
        sc_ctl stop "$unit"
        # systemd calls a death by SIGTERM a success too: the daemon's own last line says that
        # it exited, with 0 (the journal may take a moment to have it).
        result=$(sc_prop $unit Result) status=$(sc_prop $unit ExecMainStatus) said=no
        for i in $(seq 40); do
                sc_journal _PID="$pid" -o cat 2>/dev/null | grep -q '^Exiting with status 0\.' && { said=yes; break; }
                sleep 0.05
        done
        ev term_done "result $result status $status exit0 $said"
        [ "$result" = success ] && [ "$status" = 0 ] && [ $said = yes ] ||
                verdict 0 "the orderly stop of pid $pid: result $result, status $status, 'Exiting with status 0' logged: $said"
        sc_ctl start "$unit"
        ev term_up "pid $(main_pid)"
}
fault_pty() { # MS
        ev pty_down "$1 ms"
        sc_pty_stop
        ms_sleep "$1"
        sc_pty_start
        ev pty_up
}
fault_broker() { # MS
        ev broker_down "$1 ms"
        sc_broker_stop
        ms_sleep "$1"
        local port=$SC_BROKER_PORT
        sc_broker_start
        [ "$SC_BROKER_PORT" = "$port" ] || sc_fail "the broker came back on port $SC_BROKER_PORT, not $port"
        ev broker_up
}
fault_broker_kill() { # MS
        local pid=$SC_BROKER_PID port=$SC_BROKER_PORT i
        ev broker_kill "$1 ms"
        kill -KILL "$pid"
        for i in $(seq 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.05
        done
        kill -0 "$pid" 2>/dev/null && sc_fail "mosquitto (pid $pid) still there 5 s after SIGKILL"
        ms_sleep "$1"
        sc_broker_start
        [ "$SC_BROKER_PORT" = "$port" ] || sc_fail "the broker came back on port $SC_BROKER_PORT, not $port"
        ev broker_up
}
fault_central() { # MS: an orderly stop and start
        ev central_down "$1 ms"
        kill -TERM "$CENTRAL_PID"
        central_gone "$CENTRAL_PID"
        ms_sleep "$1"
        central_start
        ev central_up
}
fault_central_kill() { # MS
        ev central_kill "$1 ms"
        kill -KILL "$CENTRAL_PID"
        central_gone "$CENTRAL_PID"
        ms_sleep "$1"
        central_start
        ev central_up
}
fault_link_cut() { # MS: nothing passes, nothing is closed
        ev link_cut "$1 ms"
        proxy_signal STOP
        ms_sleep "$1"
        proxy_signal CONT
        ev link_up
}
fault_drain_kill() { # MS: the central broker away for MS (a backlog builds), back, then SIGKILL in the drain
        local h0 pid i
        ev central_down "$1 ms (for a drain)"
        kill -TERM "$CENTRAL_PID"
        central_gone "$CENTRAL_PID"
        ms_sleep "$1"
        h0=$(consumer_historical)
        central_start
        ev central_up
        for i in $(seq 400); do # the first backlog message at the consumer: the drain is under way
                [ "$(consumer_historical)" -gt "$h0" ] && break
                sleep 0.05
        done
        pid=$(main_pid)
        ev sigkill "pid $pid (upstream drain: $(( $(consumer_historical) - h0 )) backlog messages in)"
        sc_in_ns kill -KILL "$pid"
        wait_dead "$pid" && check_integrity "sigkill in the upstream drain"
}
fault_burst() {
        ev burst
        kill -USR2 "$sim_serial" "$sim_mqtt" "$sim_qos2"
}
fault_diskfull() {
        local n0 i
        n0=$(exits_seen)
        ev disk_fill
        dd if=/dev/zero of="$host_state/filler" bs=64k 2>/dev/null || true
        for i in $(seq 600); do
                sc_journal -u "$unit" EXIT_STATUS=12 -o cat 2>/dev/null | grep -q 'Exiting with status 12' && break
                sleep 0.1
        done
        [ "$i" -lt 600 ] || verdict 0 "the full disk did not make the daemon exit 12 within 60 s"
        ms_sleep 3000     # one more start fails the same way
        ev disk_free "$(($(exits_seen) - n0)) exits while full"
        rm -f "$host_state/filler"
        for i in $(seq 100); do # the last exit's process gone, so the copy is stable
                [ "$(main_pid)" = 0 ] && { check_integrity "disk full"; break; }
                sleep 0.05
        done
}

run_fault() { # KIND
        case "$1" in
        sigkill)      fault_sigkill ;;
        watchdog)     fault_watchdog ;;
        restart)      fault_restart ;;
        pty_short)    rnd 300 $(( (REOPEN_TIMEOUT - 2) * 1000 )); fault_pty $R ;;
        pty_long)     fault_pty "$(( (REOPEN_TIMEOUT + 2) * 1000 ))" ;;
        broker_short) rnd 300 2500; fault_broker $R ;;
        broker_long)  fault_broker "$(( (MAX_OFFLINE + 1) * 1000 ))" ;;
        broker_kill)  rnd 300 2500; fault_broker_kill $R ;;
        diskfull)     fault_diskfull ;;
        burst)        fault_burst ;;
        central_restart) rnd 300 3000; fault_central $R ;;
        central_kill) rnd 300 3000; fault_central_kill $R ;;
        # Longer than the daemon's own keepalive check takes (a PINGREQ once nothing has gone
        # out for keepalive, and no answer for as long: about 10 s with 5 s, test-upstream), so
        # that the daemon notices the cut itself and does not only learn of it when the link
        # is back (from the broker, which dropped it on its side meanwhile).
        link_cut)     rnd $(( (2 * UP_KEEPALIVE + 1) * 1000 )) $(( 3 * UP_KEEPALIVE * 1000 )); fault_link_cut $R ;;
        drain_kill)   rnd 2000 5000; fault_drain_kill $R ;;
        esac
        sc_wait 60 "healthy after $1" healthy
}

t0=$(date +%s)
end=$((t0 + SOAK_MINUTES * 60))
fault_end=$((t0 + SOAK_MINUTES * 60 * 6 / 10))
pause_max=$(( SOAK_MINUTES <= 5 ? 3000 : 20000 ))
# Every kind at least once, in a seeded order; then seeded draws.
must=(sigkill watchdog restart pty_short pty_long broker_short broker_long broker_kill diskfull burst
      central_restart central_kill link_cut drain_kill)
for ((i = ${#must[@]} - 1; i > 0; i--)); do
        j=$((RANDOM % (i + 1)))
        tmp=${must[i]} must[i]=${must[j]} must[j]=$tmp
done
restarting=(sigkill sigkill sigkill watchdog restart restart pty_short pty_short pty_long broker_short broker_short broker_long
            broker_kill broker_kill burst burst central_restart central_kill link_cut drain_kill)
riding=(pty_short broker_short broker_short broker_kill burst central_restart central_kill)
ev phase faults
n=0
while :; do
        if [ $n -lt ${#must[@]} ]; then
                kind=${must[n]}
        elif [ "$(date +%s)" -lt "$fault_end" ]; then
                kind=${restarting[RANDOM % ${#restarting[@]}]}
        else
                break
        fi
        n=$((n + 1))
        rnd 500 $pause_max
        ms_sleep $R
        run_fault "$kind"
done
ev phase riding
sleep 10   # the daemon settles; the leak check's first sample is after this
ev rss_start
while [ "$(date +%s)" -lt $((end - 8)) ]; do
        rnd 1000 $((pause_max * 2))
        ms_sleep $R
        [ "$(date +%s)" -lt $((end - 8)) ] || break
        run_fault "${riding[RANDOM % ${#riding[@]}]}"
done
sleep 4
ev rss_end
verdict "$(kill -0 "$rss_sampler" 2>/dev/null && echo 1 || echo 0)" "the RSS sampler ran through the riding phase"

# ---- drain: the simulators stop and wait for their QoS 1 and QoS 2 acknowledgements -------
ev phase drain
kill -TERM "$sim_serial" "$sim_mqtt" "$sim_qos2"
sim_ok=1
wait "$sim_serial" || { sim_ok=0; sc_log "the serial simulator failed: $(tail -n 5 "$T/sim-serial.log")"; }
wait "$sim_mqtt" || { sim_ok=0; sc_log "the MQTT QoS 1 simulator failed: $(tail -n 5 "$T/sim-mqtt.log")"; }
wait "$sim_qos2" || { sim_ok=0; sc_log "the MQTT QoS 2 simulator failed: $(tail -n 5 "$T/sim-mqtt2.log")"; }
verdict $sim_ok "the simulators ended normally (MQTT: every QoS 1 and QoS 2 message acknowledged)"
seq_last() { sqlite3 :memory: "SELECT json_extract(readfile('$T/$1'), '\$.seq_last')"; }
seq_last_m=$(seq_last sim-mqtt.json) seq_last_q=$(seq_last sim-mqtt2.json)
stored_last() { # SENSOR-PREFIX
        sc_in_ns sqlite3 -readonly "$state/readings.db" \
                "SELECT coalesce(max(CAST(value AS INTEGER)), 0) FROM readings_view WHERE metric = 'seq' AND sensor LIKE '$1%'"
}
mqtt_caught_up() { [ "$(stored_last soak-m)" -ge "$seq_last_m" ] && [ "$(stored_last soak-q)" -ge "$seq_last_q" ]; }
sc_log "MQTT: last seq sent $seq_last_m (QoS 1), $seq_last_q (QoS 2); stored so far $(stored_last soak-m 2>&1), $(stored_last soak-q 2>&1)"
sc_wait 60 "the daemon stored the last MQTT frame of both streams" mqtt_caught_up
sleep 2   # the serial tail, if any, is in the tty buffer: read and committed by now
# Upstream: everything committed acknowledged by the central broker (the daemon's own count).
upstream_drained() { [[ "$(status_line)" == *"upstream: connected to "*", backlog 0,"* ]]; }
soft_wait 180 "the upstream backlog drained (STATUS= backlog 0)" upstream_drained || true
ev upstream_drained
sc_ctl stop "$unit"
verdict "$([ "$(sc_prop $unit ExecMainStatus)" = 0 ] && echo 1 || echo 0)" "the final stop exits 0"
ev stop

# ---- the account ---------------------------------------------------------------------------
A="$T/analysis.db"
soak_save      # the journal and the store, into the test directory
# The consumer has every stored reading: a condition, polled twice a second. A central broker
# killed hard can have acknowledged readings it neither delivered nor saved (the account tells
# those apart): once the consumer has had nothing new for 15 s the account takes over.
consumer_missing() { # prints how many stored readings the consumer has not seen (yet)
        central_json
        sqlite3 :memory: "ATTACH 'file:$T/store.db?mode=ro' AS s;
                CREATE TABLE got AS SELECT DISTINCT coalesce(json_extract(r.value, '\$.seq'), json_extract(m.value, '\$.m.seq')) AS seq
                       FROM json_each(readfile('$T/central.json')) m LEFT JOIN json_each(m.value, '\$.m.readings') r;
                SELECT count(*) FROM s.readings WHERE id NOT IN (SELECT seq FROM got WHERE seq IS NOT NULL)"
}
missing=$(consumer_missing) same_since=$(date +%s) deadline=$(($(date +%s) + 60))
while [ "$missing" != 0 ] && [ "$(date +%s)" -lt "$deadline" ] && [ "$(date +%s)" -lt $((same_since + 15)) ]; do
        sleep 0.5
        now_missing=$(consumer_missing)
        [ "$now_missing" = "$missing" ] || same_since=$(date +%s)
        missing=$now_missing
done
sc_log "the central consumer misses $missing of the stored readings (the account explains any)"
kill -TERM "$CONSUMER_PID" 2>/dev/null
wait "$CONSUMER_PID" 2>/dev/null || true
central_json
final_check=$(sqlite3 "$T/store.db" 'PRAGMA integrity_check' 2>&1) || true
verdict "$([ "$final_check" = ok ] && echo 1 || echo 0)" "integrity_check of the final store: $final_check"

SOAK_UP_INFLIGHT=$UP_MAX_INFLIGHT SOAK_UP_BATCH=$UP_BATCH \
SOAK_UP_RATE=$(( (RATE_SERIAL + RATE_MQTT + RATE_QOS2) * READINGS_PER_FRAME + UP_BACKLOG_RATE )) \
SOAK_REOPEN_MS=$((REOPEN_TIMEOUT * 1000)) SOAK_OFFLINE_MS=$((MAX_OFFLINE * 1000)) SOAK_BROKER_SAVE_MS=$BROKER_SAVE_MS \
        bash "$(dirname "$0")/account.sh" "$T" "$A" "$MARGIN_MS" "$COMMIT_MAX_ROWS" "$READINGS_PER_FRAME" \
        "$READ_PACKET_BUDGET" "$RSS_NOISE_KIB" >"$T/report.txt" || failures+=("the account (see the report)")
cat "$T/report.txt"
[ -z "${SOAK_REPORT:-}" ] || { cp "$T/report.txt" "$SOAK_REPORT"; cp "$T/timeline.tsv" "$SOAK_REPORT.timeline"; }

if [ ${#failures[@]} -gt 0 ]; then
        sc_log "FAILED (seed $SOAK_SEED): ${failures[*]}"
        SC_KEEP=1
        exit 1
fi
sc_log "PASS (seed $SOAK_SEED)"
