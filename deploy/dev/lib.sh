# shellcheck shell=bash
# Shell helpers for the scripts that start servers (sourced by
# deploy/dev/services.sh and deploy/cluster; they define die()).
#
# Free loopback ports: a port counts as free when a socket can bind
# 127.0.0.1:<port> with SO_REUSEADDR, as the servers themselves bind. Never
# assume one is free, and expect a server to lose the race now and then (its
# caller retries on another port).

port_free() {  # true when nothing listens on 127.0.0.1:$1 (or the wildcard)
    if command -v python3 >/dev/null 2>&1; then
        # SO_REUSEADDR, as the servers themselves bind: connections of a service that was just
        # stopped, left in TIME_WAIT, do not make its port look taken.
        python3 - "$1" <<'PY'
import socket, sys
s = socket.socket(); p = int(sys.argv[1])
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", p)); s.close()
except OSError:
    sys.exit(1)
PY
    else
        ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}
pick_port() {  # first free port from $1 upward, skipping the ports in $2 (space-separated, if given)
    local p="$1"
    while [ "$p" -lt $(( $1 + 500 )) ]; do
        case " ${2:-} " in *" $p "*) ;; *) if port_free "$p"; then echo "$p"; return 0; fi ;; esac
        p=$((p + 1))
    done
    die "no free port in $1..$(( $1 + 499 ))"
}
alive() {  # alive PID NAME-SUBSTRING: PID runs and its command line mentions NAME
    [ -n "${1:-}" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q -- "$2"
}
