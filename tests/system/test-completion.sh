#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The bash completion (shell/sensor-collector.bash): subcommands, each one's options, the values
# of --format per subcommand, --log-level and --source, files for --config. Runs as any user.
. "$(dirname "$0")/lib.sh"

T=$(mktemp -d "${TMPDIR:-/tmp}/sc-$SC_TEST-XXXXXX")
trap sc_cleanup EXIT
# shellcheck source=/dev/null
. "$SC_SOURCE/shell/sensor-collector.bash"

complete_line() { # WORDS...: what completing the last word offers, sorted, on one line
        COMP_WORDS=("$@")
        COMP_CWORD=$(($# - 1))
        COMP_LINE="$*"
        COMP_POINT=${#COMP_LINE}
        COMPREPLY=()
        _sensor_collector sensor-collector "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
        printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' ' | sed 's/ $//'
}
expect() { # WANT WORDS...
        local want=$1 got
        shift
        got=$(complete_line "$@")
        sc_check "'$*' completes to '$want' (got '$got')" test "$got" = "$want"
}

expect "list-ports query status" sensor-collector ""
expect "status" sensor-collector st
expect "--check-config --config" sensor-collector --c
expect "--format --help --socket" sensor-collector status --
expect "json openmetrics prometheus text" sensor-collector status --format ""
expect "openmetrics" sensor-collector status -o op
expect "csv json table" sensor-collector query --format ""
expect "mqtt serial" sensor-collector query --source ""
expect "err" sensor-collector --log-level e
expect "--sensor --since --source" sensor-collector query --s
expect "--socket" sensor-collector --so
touch "$T/one.json" "$T/two.json"
expect "$T/one.json $T/two.json" sensor-collector --config "$T/"
expect "" sensor-collector list-ports ""
sc_log "PASS"
