# bench/lib.sh: shell helpers of the benchmark drivers (bench/run, bench/cluster); sourced.
# They stop only processes the caller started, by PID.

stop_pid() { # stop one process we started: TERM, up to 5 s, then KILL
    local p=$1 i
    kill -TERM "$p" 2>/dev/null || return 0
    for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
}

free_port() { # a port outside the ephemeral range with nothing listening
    local i p
    for i in $(seq 1 200); do
        p=$((10000 + RANDOM % 20000))
        if [ -z "$(ss -Htln "sport = :$p" 2>/dev/null)" ]; then echo "$p"; return 0; fi
    done
    return 1
}

wait_tcp() { # port, pid: until it accepts (10 s) or the process dies
    local i
    for i in $(seq 1 100); do
        kill -0 "$2" 2>/dev/null || return 1
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

cpu_ticks() { # utime+stime of the given PIDs, in clock ticks
    local p t=0
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat")))
    done
    echo "$t"
}

quiet() { # wait (at most 15 s) until the PIDs use no CPU for 0.3 s
    local i a b
    a=$(cpu_ticks "$@")
    for i in $(seq 1 50); do
        sleep 0.3
        b=$(cpu_ticks "$@")
        [ "$a" = "$b" ] && return 0
        a=$b
    done
}
