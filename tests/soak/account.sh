#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The soak's account: from the store, the journal, the timeline, the simulators' summaries and
# the RSS samples a soak run left in its directory, it reports per input what was sent, stored,
# rejected, lost and duplicated, the restarts by cause, the integrity checks and the RSS, and
# exits 1 when a loss, a reject, a restart or a growth is not explained (see soak.sh).
#
#   account.sh DIR ANALYSIS-DB MARGIN-MS COMMIT-MAX-ROWS READINGS-PER-FRAME READ-BUDGET RSS-NOISE-KIB
#
# DIR holds store.db (+ -wal), journal.json (journalctl -o json as one array), timeline.tsv
# (ms, kind, detail), rss.tsv (ms, pid, KiB), sim-serial.json, sim-mqtt.json (QoS 1),
# sim-mqtt2.json (QoS 2) and central.json (every message the central consumer received, as one
# JSON array of {"t": arrival, Unix seconds, "m": payload}; SOAK_UP_INFLIGHT and SOAK_UP_BATCH
# name the upstream window, SOAK_UP_RATE the readings a second it can send, live and backlog). Only the sqlite3 shell is needed (its JSON functions and readfile()).
# The inputs: serial (sensors soak-s*), mqtt (soak-m*, topics greenhouse/...) and mqtt-qos2
# (soak-q*, topics greenhouse-q2/...); both MQTT streams have source "mqtt" in the store, their
# rejects are told apart by topic.
set -euo pipefail

D=$1 A=$2 M=$3 ROWS=$4 RPF=$5 BUDGET=$6 NOISE=$7
REOPEN_MS=${SOAK_REOPEN_MS:-4000} OFFLINE_MS=${SOAK_OFFLINE_MS:-8000}
SAVE_MS=${SOAK_BROKER_SAVE_MS:-3000}   # the broker's persistence is at most this old at a SIGKILL
rm -f "$A"
fail=0
q() { sqlite3 -batch -noheader -cmd "ATTACH 'file:$D/store.db?mode=ro' AS store" "$A" "$@"; }
check() { # OK? WHAT
        if [ "$1" = 1 ]; then echo "  ok: $2"; else echo "  FAIL: $2"; fail=1; fi
}

sqlite3 -batch "$A" <<SQL
CREATE TABLE timeline (t INTEGER, kind TEXT, detail TEXT);
CREATE TABLE rss (t INTEGER, pid INTEGER, kib INTEGER);
.mode tabs
.import $D/timeline.tsv timeline
.import $D/rss.tsv rss
CREATE TABLE journal AS
  SELECT CAST(json_extract(value, '\$.__REALTIME_TIMESTAMP') AS INTEGER) / 1000 AS t,
         json_extract(value, '\$.MESSAGE') AS msg,
         json_extract(value, '\$.TASK') AS task,
         json_extract(value, '\$.EXIT_CODE') AS exit_code,
         CAST(json_extract(value, '\$.EXIT_STATUS') AS INTEGER) AS exit_status,
         json_extract(value, '\$.UNIT') AS unit
  FROM json_each(readfile('$D/journal.json'));
CREATE TABLE sim (input TEXT PRIMARY KEY, j TEXT);
INSERT INTO sim VALUES ('serial', readfile('$D/sim-serial.json')), ('mqtt', readfile('$D/sim-mqtt.json')),
                       ('mqtt-qos2', readfile('$D/sim-mqtt2.json'));
ATTACH 'file:$D/store.db?mode=ro' AS store;
CREATE TABLE seqs AS
  SELECT CASE WHEN sensor LIKE 'soak-s%' THEN 'serial' WHEN sensor LIKE 'soak-q%' THEN 'mqtt-qos2' ELSE 'mqtt' END AS input,
         CAST(value AS INTEGER) AS seq, min(ts) AS ts, count(*) AS n
  FROM store.readings_view WHERE metric = 'seq' GROUP BY 1, 2;
CREATE TABLE stored AS
  SELECT CASE WHEN sensor LIKE 'soak-s%' THEN 'serial' WHEN sensor LIKE 'soak-q%' THEN 'mqtt-qos2' ELSE 'mqtt' END AS input, count(*) AS readings
  FROM store.readings_view GROUP BY 1;
-- The daemon's process ends, as systemd saw them; the final stop on request is not one.
CREATE TABLE exits AS
  SELECT t, exit_code, exit_status FROM journal
  WHERE unit = 'sensor-collector.service' AND msg LIKE '%: Main process exited%'
    AND NOT (exit_code = 'exited' AND exit_status = 0);
CREATE TABLE faults AS
  SELECT t, kind, detail FROM timeline WHERE kind IN ('sigkill', 'sigstop', 'pty_down', 'broker_down', 'broker_kill', 'disk_fill');
-- Orderly stops (systemctl stop during ingest, exit 0) and the start after each: from the stop
-- to the start having reported ready.
CREATE TABLE tw AS
  SELECT s.t AS s, coalesce((SELECT min(u.t) FROM timeline u WHERE u.kind = 'term_up' AND u.t > s.t),
                            (SELECT max(t) FROM timeline)) AS e
  FROM timeline s WHERE s.kind = 'term';
CREATE TABLE opens AS
  SELECT t FROM journal WHERE task = 'serial' AND msg LIKE '%pened serial port%';
-- Gaps in the numbers, with the sensor timestamps of the stored frames on either side (the
-- simulator stamps a frame when it makes it). Before the first and after the last stored
-- number, the run's start and stop stand in.
CREATE TABLE gaps AS
  WITH b AS (
    SELECT input, json_extract(j, '\$.seq_first') AS first, json_extract(j, '\$.seq_last') AS last FROM sim),
  g AS (
    SELECT s.input, s.seq, s.ts,
           lag(s.seq) OVER w AS pseq, lag(s.ts) OVER w AS pts
    FROM seqs s WINDOW w AS (PARTITION BY s.input ORDER BY s.seq))
  SELECT input, pseq + 1 AS lo, seq - 1 AS hi, pts AS ta, ts AS tb FROM g WHERE pseq IS NOT NULL AND seq > pseq + 1
  UNION ALL
  SELECT b.input, b.first, (SELECT min(seq) FROM seqs s WHERE s.input = b.input) - 1,
         (SELECT min(t) FROM timeline WHERE kind = 'sims_started'),
         (SELECT min(ts) FROM seqs s WHERE s.input = b.input)
  FROM b WHERE (SELECT min(seq) FROM seqs s WHERE s.input = b.input) > b.first
  UNION ALL
  SELECT b.input, (SELECT max(seq) FROM seqs s WHERE s.input = b.input) + 1, b.last,
         (SELECT max(ts) FROM seqs s WHERE s.input = b.input),
         (SELECT max(t) FROM timeline WHERE kind = 'stop')
  FROM b WHERE (SELECT max(seq) FROM seqs s WHERE s.input = b.input) < b.last;
-- When the serial input could not take frames (sent then is lost by physics): from a process
-- end (for a kill: from the SIGKILL or SIGSTOP) to the next port open, and from a writer gone
-- to the port open after it is back (at least 2.5 s: the simulator reopens its end with backoff
-- up to 2 s).
CREATE TABLE serial_windows AS
  SELECT CASE WHEN e.exit_code = 'exited' THEN e.t
              ELSE coalesce((SELECT max(f.t) FROM faults f WHERE f.t <= e.t AND f.kind IN ('sigkill', 'sigstop')), e.t)
         END AS s,
         coalesce((SELECT min(o.t) FROM opens o WHERE o.t > e.t), (SELECT max(t) FROM timeline)) AS e
  FROM exits e
  UNION ALL
  SELECT p.t,
         max(coalesce((SELECT min(o.t) FROM opens o WHERE o.t > u.t), (SELECT max(t) FROM timeline)), u.t + 2500)
  FROM faults p JOIN timeline u ON u.kind = 'pty_up'
       AND u.t = (SELECT min(t) FROM timeline WHERE kind = 'pty_up' AND t > p.t)
  WHERE p.kind = 'pty_down'
  UNION ALL
  SELECT tw.s, max(coalesce((SELECT min(o.t) FROM opens o WHERE o.t > tw.s), tw.e), tw.e) FROM tw;
SQL

# The broker's loss windows: a broker killed with SIGKILL restarts from its last autosave, so
# what it acknowledged to a publisher since then and had not yet handed on is gone. Such frames
# were sent (stamped) in the SAVE_MS before the kill; widened by the margin.
sqlite3 -batch "$A" "CREATE TABLE bw AS SELECT t - $SAVE_MS - $M AS s, t + $M AS e FROM timeline WHERE kind = 'broker_kill'"

# The serial windows, widened by the margin and merged where they overlap.
q "SELECT s - $M, e + $M FROM serial_windows ORDER BY 1" | tr '|' '\t' |
        awk -F'\t' 'NR == 1 { s = $1; e = $2; next }
                    $1 <= e { if ($2 > e) e = $2; next }
                    { print s "\t" e; s = $1; e = $2 }
                    END { if (NR) print s "\t" e }' >"$D/serial-windows.tsv"
sqlite3 -batch "$A" <<SQL
CREATE TABLE sw (s INTEGER, e INTEGER);
.mode tabs
.import $D/serial-windows.tsv sw
SQL

jv() { q "SELECT json_extract(j, '\$.$2') FROM sim WHERE input = '$1'"; }
count_exits() { q "SELECT count(*) FROM exits WHERE $1"; }
count_tl() { q "SELECT count(*) FROM timeline WHERE $1"; }

n_sigkill=$(count_tl "kind = 'sigkill'")
n_sigstop=$(count_tl "kind = 'sigstop'")
n_pty=$(count_tl "kind = 'pty_down'")
n_pty_long=$(count_tl "kind = 'pty_down' AND CAST(detail AS INTEGER) > $REOPEN_MS")
n_broker=$(count_tl "kind = 'broker_down'")
n_broker_long=$(count_tl "kind = 'broker_down' AND CAST(detail AS INTEGER) > $OFFLINE_MS")
n_bkill=$(count_tl "kind = 'broker_kill'")
n_term=$(count_tl "kind = 'term'")
n_term_bad=$(count_tl "kind = 'term_done' AND detail != 'result success status 0 exit0 yes'")
n_fill=$(count_tl "kind = 'disk_fill'")
n_burst=$(count_tl "kind = 'burst'")
x_kill=$(count_exits "exit_code = 'killed' AND exit_status = 9")
x_abrt=$(count_exits "exit_code IN ('killed', 'dumped') AND exit_status = 6")
x10=$(count_exits "exit_code = 'exited' AND exit_status = 10")
x11=$(count_exits "exit_code = 'exited' AND exit_status = 11")
x12=$(count_exits "exit_code = 'exited' AND exit_status = 12")
x_all=$(count_exits 1)
x_other=$((x_all - x_kill - x_abrt - x10 - x11 - x12))
wd=$(q "SELECT count(*) FROM journal WHERE unit = 'sensor-collector.service' AND msg LIKE '%: Watchdog timeout%'")
start_ms=$(q "SELECT min(t) FROM timeline WHERE kind = 'sims_started'")
stop_ms=$(q "SELECT max(t) FROM timeline WHERE kind = 'stop'")

echo "==== soak account ($(( (stop_ms - start_ms) / 1000 )) s of traffic)"
echo "faults injected: $n_sigkill SIGKILL, $n_sigstop SIGSTOP past the watchdog, $n_term orderly stops and starts (systemctl stop, start), $n_pty serial writer removals ($n_pty_long past reopen_timeout), $n_broker broker restarts after SIGTERM ($n_broker_long past max_offline), $n_bkill broker SIGKILLs (restarted within max_offline), $n_fill disk full, $n_burst bad-frame bursts"
echo "restarts by cause (journal): $x_kill SIGKILL, $x_abrt SIGABRT (watchdog; $wd 'Watchdog timeout' lines), $x10 exit 10 (serial), $x11 exit 11 (MQTT), $x12 exit 12 (store), $x_other other"
q "SELECT '  other: ' || exit_code || '/' || exit_status FROM exits WHERE NOT (exit_code = 'killed' AND exit_status IN (9, 6)) AND NOT (exit_code = 'dumped' AND exit_status = 6) AND NOT (exit_code = 'exited' AND exit_status IN (10, 11, 12))"
check "$([ "$x_other" -eq 0 ] && echo 1 || echo 0)" "no restart with a cause that was not injected"
check "$([ "$x_kill" -eq "$n_sigkill" ] && echo 1 || echo 0)" "one SIGKILL restart per SIGKILL ($x_kill/$n_sigkill)"
check "$([ "$n_term_bad" -eq 0 ] && echo 1 || echo 0)" "every orderly stop exited 0 ($((n_term - n_term_bad))/$n_term)"
check "$([ "$x_abrt" -eq "$n_sigstop" ] && [ "$wd" -eq "$n_sigstop" ] && echo 1 || echo 0)" "one watchdog abort per SIGSTOP ($x_abrt/$n_sigstop)"
check "$([ "$x10" -ge "$n_pty_long" ] && [ "$x10" -le $((2 * n_pty_long)) ] && echo 1 || echo 0)" "exit 10 only after a long serial outage ($x10 for $n_pty_long)"
check "$([ "$x11" -ge "$n_broker_long" ] && [ "$x11" -le $((2 * n_broker_long)) ] && echo 1 || echo 0)" "exit 11 only after a long broker outage ($x11 for $n_broker_long)"
check "$([ "$x12" -ge "$n_fill" ] && { [ "$n_fill" -gt 0 ] || [ "$x12" -eq 0 ]; } && echo 1 || echo 0)" "exit 12 only while the disk was full ($x12)"

echo "integrity_check after kills: $(count_tl "kind = 'integrity' AND detail LIKE '% ok'") ok, $(count_tl "kind = 'integrity' AND detail LIKE '%FAILED%'") failed, $(count_tl "kind = 'integrity' AND detail LIKE '%skipped%'") skipped"
check "$([ "$(count_tl "kind = 'integrity' AND detail LIKE '%FAILED%'")" -eq 0 ] && echo 1 || echo 0)" "every integrity_check after a kill passed"

# ---- per input -----------------------------------------------------------------------------
batch_frames=$(( (ROWS + RPF - 1) / RPF + 1 ))
hard_kills=$((x_kill + x_abrt))
for input in serial mqtt mqtt-qos2; do
        first=$(jv $input seq_first) last=$(jv $input seq_last)
        sent=$((last - first + 1))
        bad_sent=$(jv $input bad_frames)
        readings_sent=$(jv $input readings)
        stored=$(q "SELECT count(*) FROM seqs WHERE input = '$input' AND seq BETWEEN $first AND $last")
        dups=$(q "SELECT coalesce(sum(n - 1), 0) FROM seqs WHERE input = '$input'")
        readings=$(q "SELECT coalesce(max(readings), 0) FROM stored WHERE input = '$input'")
        lost=$(q "SELECT coalesce(sum(hi - lo + 1), 0) FROM gaps WHERE input = '$input'")
        ngaps=$(q "SELECT count(*) FROM gaps WHERE input = '$input'")
        maxgap=$(q "SELECT coalesce(max(hi - lo + 1), 0) FROM gaps WHERE input = '$input'")
        echo
        echo "---- $input"
        echo "frames sent: $sent good (seq $first..$last) + $bad_sent bad; readings sent $readings_sent, stored $readings"
        if [ $input = serial ]; then
                echo "  writer: $(jv serial serial.frames_sent) frames written, $(jv serial serial.lost_at_source) lost at source (pty gone), $(jv serial serial.reopens) reopens"
        else
                msgs=$(jv $input mqtt.messages) acked=$(jv $input mqtt.acknowledged)
                echo "  publisher (QoS $(jv $input mqtt.qos)): $msgs messages, $acked acknowledged (PUBACK or PUBCOMP), $(jv $input mqtt.unacknowledged) unacknowledged, $(jv $input mqtt.connects) connects"
                # The publisher keeps and resends every message until the broker acknowledges it:
                # with all acknowledged, a number missing from the store was taken over by the
                # broker, and lost either by the broker or by the daemon.
                check "$([ "$acked" -eq "$msgs" ] && echo 1 || echo 0)" "$input: the broker acknowledged every message ($acked/$msgs)"
        fi
        echo "good frames stored: $stored, lost: $lost in $ngaps gaps (longest $maxgap), duplicates stored: $dups"
        [ $input != serial ] || echo "  of the lost, $(jv serial serial.lost_at_source) (good and bad) were never written: the pty was gone"
        # Each gap, with the first process end after its last stored neighbour was sent.
        q "SELECT '  gap seq ' || lo || '..' || hi || ' (' || (hi - lo + 1) || '): sent ' ||
                  ((ta - $start_ms) / 1000) || '..' || ((tb - $start_ms) / 1000) || ' s; next process end: ' ||
                  coalesce((SELECT exit_code || '/' || exit_status || ' at ' || ((e.t - $start_ms) / 1000) || ' s'
                            FROM exits e WHERE e.t >= g.ta ORDER BY e.t LIMIT 1), 'none')
           FROM gaps g WHERE input = '$input' ORDER BY lo" | head -n 40
        check "$([ "$stored" -eq $((sent - lost)) ] && echo 1 || echo 0)" "$input: stored + lost = sent"
        check "$([ "$dups" -eq 0 ] && echo 1 || echo 0)" "$input: no duplicate stored"
        # Loss at orderly stops: gaps whose stored neighbours bracket a stop-and-start and no
        # process end other than those stops (a kill, an exit 10/11/12) near them.
        tcond="EXISTS (SELECT 1 FROM tw WHERE tw.s - $M <= g.tb AND tw.e + $M >= g.ta)
               AND NOT EXISTS (SELECT 1 FROM exits e WHERE e.t BETWEEN g.ta - $M AND g.tb + $M)"
        t_gaps=$(q "SELECT count(*) FROM gaps g WHERE input = '$input' AND $tcond")
        t_lost=$(q "SELECT coalesce(sum(hi - lo + 1), 0) FROM gaps g WHERE input = '$input' AND $tcond")
        t_max=$(q "SELECT coalesce(max(hi - lo + 1), 0) FROM gaps g WHERE input = '$input' AND $tcond")
        echo "lost at the $n_term orderly stops and starts: $t_lost frames in $t_gaps gaps (longest $t_max)"
        if [ $input = serial ]; then
                # A stop closes the port after the last whole line it read: a line it had half
                # read is kept as a 'truncated' reject, its rest comes to the next process as a
                # fragment. Lines written while the daemon is down wait in the pty.
                check "$([ "$t_max" -le 1 ] && [ "$t_gaps" -le "$n_term" ] && echo 1 || echo 0)" "serial: at most the one line cut at the port close per orderly stop ($t_lost in $t_gaps gaps)"
        else
                check "$([ "$t_lost" -eq 0 ] && echo 1 || echo 0)" "$input: nothing lost at orderly stops ($t_lost)"
        fi
        if [ $input = serial ]; then
                rate=$(q "SELECT json_extract(j, '\$.frames_per_s') FROM sim WHERE input = 'serial'")
                wsum=$(q "SELECT coalesce(sum(e - s), 0) FROM sw")
                bound=$(q "SELECT CAST(($wsum / 1000.0) * $rate + 0.999 AS INTEGER)")
                unexplained=$(q "SELECT count(*) FROM gaps g WHERE input = 'serial'
                                 AND NOT EXISTS (SELECT 1 FROM sw WHERE sw.s <= g.tb AND sw.e >= g.ta)")
                echo "outage windows (daemon down or port gone, +-${M} ms, merged): $(q 'SELECT count(*) FROM sw') totalling $((wsum / 1000)).$(printf '%03d' $((wsum % 1000))) s; at $rate frames/s that bounds the loss at $bound frames"
                q "SELECT '  unexplained gap: seq ' || lo || '..' || hi || ' between ts ' || ta || ' and ' || tb FROM gaps g WHERE input = 'serial'
                   AND NOT EXISTS (SELECT 1 FROM sw WHERE sw.s <= g.tb AND sw.e >= g.ta)"
                check "$([ "$unexplained" -eq 0 ] && echo 1 || echo 0)" "serial: every gap falls in an outage window ($unexplained unexplained)"
                check "$([ "$lost" -le "$bound" ] && echo 1 || echo 0)" "serial: lost $lost <= bound $bound"
        else
                # A gap is the broker's when its frames were sent in a broker-kill window and no
                # daemon process ended between its stored neighbours (a running daemon stores
                # every message it was handed: its only loss is at a process end or a failed
                # commit). The rest must fit the daemon's documented window.
                fps=$(jv $input frames_per_s)
                bcond="EXISTS (SELECT 1 FROM bw WHERE bw.s <= g.tb AND bw.e >= g.ta)
                       AND NOT EXISTS (SELECT 1 FROM exits e WHERE e.t BETWEEN g.ta - $M AND g.tb + $M)"
                b_gaps=$(q "SELECT count(*) FROM gaps g WHERE input = '$input' AND $bcond")
                b_lost=$(q "SELECT coalesce(sum(hi - lo + 1), 0) FROM gaps g WHERE input = '$input' AND $bcond")
                b_max=$(q "SELECT CAST((($SAVE_MS + 2 * $M) / 1000.0) * $fps + 0.999 AS INTEGER)")
                d_gaps=$((ngaps - b_gaps)) d_lost=$((lost - b_lost))
                d_maxgap=$(q "SELECT coalesce(max(hi - lo + 1), 0) FROM gaps g WHERE input = '$input' AND NOT ($bcond)")
                b_maxgap=$(q "SELECT coalesce(max(hi - lo + 1), 0) FROM gaps g WHERE input = '$input' AND $bcond")
                events=$((hard_kills + x12))
                allowance=$((hard_kills * batch_frames + x12 * (batch_frames + BUDGET)))
                echo "the broker's loss: $b_lost frames in $b_gaps gaps (longest $b_maxgap) sent within $((SAVE_MS / 1000)) s before one of $n_bkill broker SIGKILLs, the daemon running throughout; at most $b_max frames per kill ($fps frames/s)"
                echo "the daemon's loss: $d_lost frames in $d_gaps gaps (longest $d_maxgap)"
                echo "documented window: one store batch ($ROWS rows = $batch_frames frames) per hard kill ($hard_kills), plus $BUDGET messages per store failure ($x12): at most $events gaps, $allowance frames"
                check "$([ "$b_gaps" -le "$n_bkill" ] && [ "$b_maxgap" -le "$b_max" ] && echo 1 || echo 0)" "$input: broker loss $b_gaps gaps <= $n_bkill broker kills, none longer than $b_max ($b_maxgap)"
                check "$([ "$d_gaps" -le "$events" ] && echo 1 || echo 0)" "$input: $d_gaps daemon gaps <= $events hard kills and store failures"
                check "$([ "$d_maxgap" -le $((batch_frames + BUDGET)) ] && echo 1 || echo 0)" "$input: no daemon gap longer than a batch ($d_maxgap)"
                check "$([ "$d_lost" -le "$allowance" ] && echo 1 || echo 0)" "$input: daemon lost $d_lost <= $allowance"
                allowance=$((allowance + n_bkill * b_max))
        fi

        # Rejects: the injected kinds against the reasons; fragments of frames cut by an outage
        # (a "truncated" line, or the rest of a line whose start a killed daemon had read) are
        # allowed up to two per outage of this input.
        case $input in
        serial)    src="source = 'serial'" ;;
        mqtt)      src="source = 'mqtt' AND origin LIKE 'greenhouse/%'" ;;
        mqtt-qos2) src="source = 'mqtt' AND origin LIKE 'greenhouse-q2/%'" ;;
        esac
        q "SELECT '  rejects ' || reason || ': ' || count(*) FROM store.rejects_view WHERE $src GROUP BY reason ORDER BY reason"
        frag=$(q "SELECT count(*) FROM store.rejects_view WHERE $src AND (reason = 'truncated' OR CAST(raw AS TEXT) LIKE '%\"seq\":%')")
        rj() { q "SELECT count(*) FROM store.rejects_view WHERE $src AND reason IN ($1) AND reason != 'truncated' AND CAST(raw AS TEXT) NOT LIKE '%\"seq\":%'"; }
        g_text=$(rj "'bad_json','not_utf8'")
        g_long=$(rj "'too_long'")
        g_fin=$(rj "'not_finite'")
        # A frame without "sensor": over MQTT the id comes from the topic level, which the
        # simulator leaves empty (greenhouse//state): bad_sensor there.
        if [ $input = serial ]; then miss_reason=missing_sensor; else miss_reason=bad_sensor; fi
        g_miss=$(rj "'$miss_reason'")
        other=$(q "SELECT count(*) FROM store.rejects_view WHERE $src AND reason NOT IN ('bad_json','not_utf8','too_long','not_finite','$miss_reason','truncated') AND CAST(raw AS TEXT) NOT LIKE '%\"seq\":%'")
        s_text=$(( $(jv $input bad.garbage) + $(jv $input bad.bad_utf8) ))
        s_long=$(jv $input bad.overlong) s_fin=$(jv $input bad.not_finite) s_miss=$(jv $input bad.missing_sensor)
        rejected=$(q "SELECT count(*) FROM store.rejects_view WHERE $src")
        excess=0 missing=0
        for pair in "$g_text $s_text" "$g_long $s_long" "$g_fin $s_fin" "$g_miss $s_miss"; do
                set -- $pair
                [ "$1" -le "$2" ] && missing=$((missing + $2 - $1)) || excess=$((excess + $1 - $2))
        done
        if [ $input = serial ]; then outages=$((x_all + n_pty + n_term)); else outages=$((x_all + n_broker + n_bkill + n_term)); fi
        echo "rejected: $rejected = garbage/bad_utf8 $g_text of $s_text sent, overlong $g_long of $s_long, not_finite $g_fin of $s_fin, missing_sensor ($miss_reason) $g_miss of $s_miss, fragments $frag, other $other"
        echo "  bad frames sent but not rejected (lost with the good ones): $missing; rejects beyond the injected: $excess"
        check "$([ "$other" -eq 0 ] && echo 1 || echo 0)" "$input: no reject of a reason the simulator does not inject"
        check "$([ $((excess + frag)) -le $((2 * outages)) ] && echo 1 || echo 0)" "$input: fragments and excess rejects ($((excess + frag))) <= 2 per outage ($outages)"
        if [ $input != serial ]; then
                check "$([ $((lost + missing)) -le "$allowance" ] && echo 1 || echo 0)" "$input: good and bad frames lost ($((lost + missing))) <= $allowance (the daemon's window and the broker's)"
        else
                check "$([ $((lost + missing)) -le "$bound" ] && echo 1 || echo 0)" "serial: good and bad frames lost ($((lost + missing))) <= bound $bound"
        fi
done

# ---- upstream -------------------------------------------------------------------------------
# Every stored reading must reach the central consumer (dedup by gateway, store, seq); repeats
# the daemon sends (backlog messages, "historical") are bounded by the in-flight window per
# interruption of the link (docs/UPSTREAM.md: at most max_inflight messages of batch_size
# readings were in flight; after a hard kill or a failed store also what was acknowledged and
# not yet committed with the next batch, budgeted as one more window). A live message is never
# sent twice by the daemon: a repeat in one is the central broker delivering again what it had
# sent the consumer without getting its PUBACK before a restart, which needs a restart or kill.
# The central broker's loss, told apart from ours: mosquitto acknowledges a QoS 1 PUBLISH before
# it has saved it (autosave_interval 1), so a SIGKILL can take readings it acknowledged to the
# daemon (which then rightly counts them done) and had neither delivered to the consumer nor
# saved. A gap is the broker's when a central SIGKILL lies between the consumer's arrivals of its
# received neighbours (the kill is logged just before it is done: +MARGIN for the shell's lag),
# at most one gap per kill, none longer than what the daemon can send in the broker's save window
# (SOAK_UP_RATE readings a second, live and backlog). Every other loss is the daemon's: 0.
INFLIGHT=${SOAK_UP_INFLIGHT:-20} UPBATCH=${SOAK_UP_BATCH:-100} UPRATE=${SOAK_UP_RATE:-500}
echo
echo "---- upstream (central broker)"
sqlite3 -batch "$A" <<SQL
CREATE TABLE upmsg AS
  SELECT key AS n, CAST(json_extract(value, '\$.t') * 1000 AS INTEGER) AS t, json_extract(value, '\$.m') AS j
  FROM json_each(readfile('$D/central.json'));
CREATE TABLE upr AS
  SELECT u.n, u.t, coalesce(r.key, 0) AS k, json_extract(u.j, '\$.gateway') AS gw, json_extract(u.j, '\$.store') AS store,
         json_extract(u.j, '\$.historical') AS hist,
         coalesce(json_extract(r.value, '\$.seq'), json_extract(u.j, '\$.seq')) AS seq
  FROM upmsg u LEFT JOIN json_each(u.j, '\$.readings') r;
CREATE INDEX upr_key ON upr (store, seq);
CREATE TABLE uprep AS
  SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY gw, store, seq ORDER BY n, k) AS nth FROM upr) WHERE nth > 1;
CREATE TABLE upfirst AS SELECT seq, min(t) AS t FROM upr GROUP BY seq;
CREATE INDEX upfirst_seq ON upfirst (seq);
SQL
sid=$(q "SELECT value FROM store.meta WHERE key = 'store_id'")
sqlite3 -batch "$A" <<SQL
ATTACH 'file:$D/store.db?mode=ro' AS store;
-- Stored readings that never arrived, in runs of consecutive ids, with the arrival of the
-- received neighbours on either side (the run's start and end, when none).
CREATE TABLE uplost AS
  SELECT min(id) AS lo, max(id) AS hi, count(*) AS n, min(received) AS r_lo, max(received) AS r_hi FROM
    (SELECT id, received, id - row_number() OVER (ORDER BY id) AS grp FROM store.readings s
     WHERE NOT EXISTS (SELECT 1 FROM upr WHERE upr.store = '$sid' AND upr.seq = s.id))
  GROUP BY grp;
ALTER TABLE uplost ADD COLUMN ta INTEGER;
ALTER TABLE uplost ADD COLUMN tb INTEGER;
UPDATE uplost SET
  ta = coalesce((SELECT f.t FROM upfirst f WHERE f.seq < uplost.lo ORDER BY f.seq DESC LIMIT 1), 0),
  tb = coalesce((SELECT f.t FROM upfirst f WHERE f.seq > uplost.hi ORDER BY f.seq LIMIT 1), 9223372036854775807);
CREATE TABLE upkill AS SELECT t FROM timeline WHERE kind = 'central_kill';
SQL
n_cdown=$(count_tl "kind = 'central_down'")
n_ckill=$(count_tl "kind = 'central_kill'")
n_cut=$(count_tl "kind = 'link_cut'")
up_stored=$(q "SELECT count(*) FROM store.readings")
up_msgs=$(q "SELECT count(*) FROM upmsg")
up_hist_msgs=$(q "SELECT count(*) FROM upmsg WHERE json_extract(j, '\$.historical')")
up_got=$(q "SELECT count(*) FROM (SELECT DISTINCT seq FROM upr WHERE store = '$sid' AND gw = 'soak-gw')")
up_lost=$(q "SELECT coalesce(sum(n), 0) FROM uplost")
bkcond="EXISTS (SELECT 1 FROM upkill k WHERE k.t + $M >= l.ta AND k.t <= l.tb)"
up_b_gaps=$(q "SELECT count(*) FROM uplost l WHERE $bkcond")
up_b_lost=$(q "SELECT coalesce(sum(n), 0) FROM uplost l WHERE $bkcond")
up_b_max=$(q "SELECT coalesce(max(n), 0) FROM uplost l WHERE $bkcond")
up_b_bound=$(( (SAVE_MS + 2 * M) * UPRATE / 1000 ))
up_d_lost=$((up_lost - up_b_lost))
up_foreign=$(q "SELECT count(*) FROM upr WHERE store IS NOT '$sid' OR gw IS NOT 'soak-gw' OR seq IS NULL")
up_rep=$(q "SELECT count(*) FROM uprep")
up_rep_hist=$(q "SELECT count(*) FROM uprep WHERE hist")
up_rep_live=$((up_rep - up_rep_hist))
up_lost_meta=$(q "SELECT coalesce((SELECT CAST(value AS INTEGER) FROM store.meta WHERE key = 'upstream.lost'), 0)")
# Interruptions: every end of a daemon process (kills, aborts, exits), every orderly stop, every
# central broker restart or kill, every link cut; hard ends (SIGKILL, watchdog, a failed store)
# count twice (the acknowledgements of the last commit interval).
up_events=$((x_all + n_term + n_cdown + n_ckill + n_cut))
up_hard=$((x_kill + x_abrt + x12))
up_bound=$(((up_events + up_hard) * INFLIGHT * UPBATCH))
# A link cut the daemon noticed itself: its "Connection to central broker ... lost" line while
# the proxy was still stopped.
n_cut_seen=$(q "SELECT count(*) FROM timeline c WHERE c.kind = 'link_cut' AND EXISTS (SELECT 1 FROM journal j
                WHERE j.msg LIKE 'Connection to central broker % lost:%' AND j.t > c.t
                AND j.t < coalesce((SELECT min(u.t) FROM timeline u WHERE u.kind = 'link_up' AND u.t > c.t), c.t))")
echo "faults: $n_cdown central broker restarts (one before each drain kill), $n_ckill central broker SIGKILLs, $n_cut silent link cuts ($n_cut_seen noticed by the daemon before the link was back); $up_events interruptions of the link in all ($up_hard hard)"
echo "readings stored: $up_stored; received upstream after dedup: $up_got, in $up_msgs messages ($up_hist_msgs backlog); lost upstream: $up_lost"
echo "  the central broker's loss: $up_b_lost readings in $up_b_gaps gaps (longest $up_b_max) across one of its $n_ckill SIGKILLs, acknowledged to the daemon and neither delivered nor saved; at most $up_b_bound per kill ($UPRATE readings/s in $((SAVE_MS + 2 * M)) ms)"
echo "  the daemon's loss: $up_d_lost"
echo "repeats: $up_rep ($up_rep_hist in backlog messages, bound ($up_events + $up_hard) x max_inflight $INFLIGHT x batch_size $UPBATCH = $up_bound; $up_rep_live in live messages, the broker's redelivery)"
echo "removed by retention before forwarding (meta upstream.lost): $up_lost_meta"
q "SELECT '  lost upstream: seq ' || lo || '..' || hi || ' (' || n || '), received ' || ((r_lo - $start_ms) / 1000) || '..' ||
          ((r_hi - $start_ms) / 1000) || ' s; ' ||
          coalesce((SELECT 'across the central SIGKILL at ' || ((k.t - $start_ms) / 1000) || ' s' FROM upkill k
                    WHERE k.t + $M >= l.ta AND k.t <= l.tb LIMIT 1), 'no central SIGKILL between its neighbours')
   FROM uplost l ORDER BY lo LIMIT 20"
check "$([ "$up_d_lost" -eq 0 ] && echo 1 || echo 0)" "upstream: every stored reading reached the central consumer but what the central broker lost at a SIGKILL (the daemon's loss: $up_d_lost)"
check "$([ "$up_b_gaps" -le "$n_ckill" ] && [ "$up_b_max" -le "$up_b_bound" ] && echo 1 || echo 0)" "upstream: the broker's loss $up_b_gaps gaps <= $n_ckill SIGKILLs, none longer than $up_b_bound ($up_b_max)"
check "$([ "$up_foreign" -eq 0 ] && echo 1 || echo 0)" "upstream: every reading received carries this gateway, this store id and a seq ($up_foreign others)"
check "$([ "$up_lost_meta" -eq 0 ] && echo 1 || echo 0)" "upstream: nothing counted as removed unforwarded (no retention here)"
check "$([ "$up_rep_hist" -le "$up_bound" ] && echo 1 || echo 0)" "upstream: repeats in backlog messages $up_rep_hist <= $up_bound"
check "$([ "$up_rep_live" -eq 0 ] || [ $((n_cdown + n_ckill)) -gt 0 ] && echo 1 || echo 0)" "upstream: repeats in live messages ($up_rep_live) only with a central broker restart or kill"

# ---- RSS -----------------------------------------------------------------------------------
echo
echo "---- RSS (VmRSS every 2 s)"
rs=$(q "SELECT min(t) FROM timeline WHERE kind = 'rss_start'")
re=$(q "SELECT max(t) FROM timeline WHERE kind = 'rss_end'")
# No sample in the riding phase (a sampler that stopped early, or no rss_start/rss_end in the
# timeline) means no leak check: say so plainly (the queries below would be SQL syntax errors
# with an empty PID), and fail. This is the account's last section.
p=""
[ -z "$rs" ] || [ -z "$re" ] || p=$(q "SELECT pid FROM rss WHERE t BETWEEN $rs AND $re ORDER BY t LIMIT 1")
if [ -z "${p:-}" ]; then
        echo "rss.tsv: $(q 'SELECT count(*) FROM rss') samples of $(q 'SELECT count(DISTINCT pid) FROM rss') processes, the last at $(q "SELECT coalesce(max(t), 'none') FROM rss") ms; riding phase ${rs:-(no rss_start)}..${re:-(no rss_end)} ms"
        check 0 "RSS: no sample of the daemon in the riding phase, so no leak check (did the sampler stop? see rss.log)"
        echo
        echo "verdict: FAIL"
        exit 1
fi
first_pid=$(q "SELECT pid FROM rss ORDER BY t LIMIT 1")
echo "first process: $(q "SELECT kib FROM rss WHERE pid = $first_pid ORDER BY t LIMIT 1") KiB at its first sample, $(q "SELECT max(kib) FROM rss WHERE pid = $first_pid") KiB at most"
echo "all $(q 'SELECT count(DISTINCT pid) FROM rss') processes: $(q 'SELECT min(kib) FROM rss')..$(q 'SELECT max(kib) FROM rss') KiB"
pids=$(q "SELECT count(DISTINCT pid) FROM rss WHERE t BETWEEN $rs AND $re")
t_a=$(q "SELECT min(t) FROM rss WHERE pid = $p AND t >= $rs")
t_b=$(q "SELECT max(t) FROM rss WHERE pid = $p AND t <= $re")
a=$(q "SELECT kib FROM rss WHERE pid = $p AND t = $t_a")
b=$(q "SELECT kib FROM rss WHERE pid = $p AND t = $t_b")
mid=$(q "SELECT kib FROM rss WHERE pid = $p AND t >= ($t_a + $t_b) / 2 ORDER BY t LIMIT 1")
span=$(( (t_b - t_a) / 1000 ))
echo "long-lived process (riding phase, $span s, $(count_tl "kind IN ('pty_down', 'broker_down', 'burst') AND t BETWEEN $rs AND $re") faults ridden out): $a KiB -> $mid KiB at half time -> $b KiB ($((b - a)) KiB; second half $((b - mid)) KiB)"
q "SELECT '  ' || ((t - $t_a) / 1000) || ' s: ' || kib || ' KiB' FROM rss WHERE pid = $p AND t BETWEEN $t_a AND $t_b AND (rowid % 15 = 0)" | head -n 30
check "$([ "$pids" -eq 1 ] && echo 1 || echo 0)" "one process through the riding phase (no restart)"
# SQLite's page cache (1 MiB, see docs/STORE.md) fills as the store grows: growth up to that
# plus the noise is allowed over the whole phase, and only the noise over its second half,
# when the cache is warm. A leak per message or per reconnect keeps growing.
check "$([ $((b - a)) -le $((1024 + NOISE)) ] && echo 1 || echo 0)" "RSS growth $((b - a)) KiB <= $((1024 + NOISE)) KiB (page cache + noise)"
check "$([ $((b - mid)) -le $((NOISE / 2)) ] && echo 1 || echo 0)" "RSS growth over the second half $((b - mid)) KiB <= $((NOISE / 2)) KiB"

echo
[ $fail -eq 0 ] && echo "verdict: PASS" || echo "verdict: FAIL"
exit $fail
