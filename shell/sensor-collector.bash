# SPDX-License-Identifier: MIT
# Bash completion for sensor-collector: options of the daemon and of each subcommand, the values
# of --format, --log-level and --source, files for --config and --db, sockets for --socket.
# (No option takes a serial device: the port is the configuration's serial.device, and
# `sensor-collector list-ports` lists the ports there are.)

_sensor_collector() {
        local cur prev words cword
        if declare -F _init_completion >/dev/null; then
                _init_completion || return
        else
                cur=${COMP_WORDS[COMP_CWORD]}
                prev=${COMP_WORDS[COMP_CWORD - 1]}
                words=("${COMP_WORDS[@]}")
                cword=$COMP_CWORD
        fi

        # A subcommand is the first argument or nothing (as the program reads it).
        local sub=""
        if ((cword > 1)); then
                case ${words[1]} in
                status | query | list-ports) sub=${words[1]} ;;
                esac
        fi

        case $prev in
        -c | --config | --db)
                _sc_files "$cur" -f
                return
                ;;
        --socket)
                _sc_files "$cur" -f
                return
                ;;
        --log-level)
                COMPREPLY=($(compgen -W "debug info notice warning err" -- "$cur"))
                return
                ;;
        -o | --format)
                case $sub in
                status) COMPREPLY=($(compgen -W "text json prometheus openmetrics" -- "$cur")) ;;
                query) COMPREPLY=($(compgen -W "table csv json" -- "$cur")) ;;
                esac
                return
                ;;
        --source)
                COMPREPLY=($(compgen -W "serial mqtt" -- "$cur"))
                return
                ;;
        -s | --sensor | -m | --metric | --since | --until | -n | --limit)
                return
                ;;
        esac

        local opts
        case $sub in
        status) opts="--socket --format --help" ;;
        query) opts="--db --config --sensor --metric --source --since --until --limit --latest --count --rejects --format --utc --help" ;;
        list-ports) opts="" ;;
        *)
                opts="--config --no-serial --no-mqtt --check-config --log-level --socket --version --help"
                if ((cword == 1)) && [[ $cur != -* ]]; then
                        COMPREPLY=($(compgen -W "status query list-ports" -- "$cur"))
                        return
                fi
                ;;
        esac
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}

# Files (or directories to descend into) for a path argument.
_sc_files() {
        local IFS=$'\n'
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen "$2" -- "$1"))
}

complete -F _sensor_collector sensor-collector
