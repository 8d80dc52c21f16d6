#!/usr/bin/env bash
# A private Redis Cluster on loopback, for tests and benchmarks of cluster mode:
# 3 masters with 1 replica each (redis-server --cluster-enabled yes, created with
# redis-cli --cluster create --cluster-replicas 1), a small cluster-node-timeout
# so that a killed master's replica takes over within seconds.
#
#   deploy/dev/redis-cluster.sh start DIR   start the six nodes under DIR; prints the
#                                           seed list "127.0.0.1:P1,127.0.0.1:P2,..." (the
#                                           masters first) and writes it to DIR/nodes
#   deploy/dev/redis-cluster.sh stop DIR    stop the nodes started under DIR (by their PIDs)
#
# Each node needs two free ports: its own and its cluster bus port (its own + 10000).
# Set PARLEY_CLUSTER_NODE_TIMEOUT (ms, default 1000) to change the failure detection time.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
die() { echo "redis-cluster.sh: $*" >&2; exit 1; }
# shellcheck source=lib.sh
. "$HERE/lib.sh"

NODES=6
TIMEOUT_MS="${PARLEY_CLUSTER_NODE_TIMEOUT:-1000}"

start() {
    local dir="$1" base=17000 ports=() skip="" p i
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    for i in $(seq 1 "$NODES"); do
        while :; do
            p="$(pick_port "$base" "$skip")"
            skip="$skip $p"
            port_free $((p + 10000)) && break
            base=$((p + 1))
        done
        ports+=("$p")
        base=$((p + 1))
    done
    for i in "${!ports[@]}"; do
        p="${ports[$i]}"
        mkdir -p "$dir/$p"
        redis-server --port "$p" --bind 127.0.0.1 --protected-mode yes \
            --cluster-enabled yes --cluster-config-file "$dir/$p/nodes.conf" \
            --cluster-node-timeout "$TIMEOUT_MS" \
            --dir "$dir/$p" --pidfile "$dir/$p/redis.pid" --logfile "$dir/$p/redis.log" \
            --daemonize yes --save '' --appendonly no >/dev/null
    done
    for p in "${ports[@]}"; do
        for _ in $(seq 1 50); do
            redis-cli -h 127.0.0.1 -p "$p" ping 2>/dev/null | grep -q PONG && break
            sleep 0.1
        done
        redis-cli -h 127.0.0.1 -p "$p" ping 2>/dev/null | grep -q PONG ||
            { stop "$dir"; die "node $p did not start (a port taken meanwhile?)"; }
    done
    local addrs=()
    for p in "${ports[@]}"; do addrs+=("127.0.0.1:$p"); done
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 ||
        { stop "$dir"; die "redis-cli --cluster create failed: $(tail -n 3 "$dir/create.log")"; }
    # Every node must agree the cluster is up and see three masters with their replicas.
    local ok=0
    for _ in $(seq 1 100); do
        ok=1
        for p in "${ports[@]}"; do
            redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || ok=0
        done
        [ "$ok" = 1 ] && [ "$(redis-cli -h 127.0.0.1 -p "${ports[0]}" cluster slots | grep -c '^127.0.0.1$')" -ge 6 ] && break
        ok=0
        sleep 0.1
    done
    [ "$ok" = 1 ] || { stop "$dir"; die "the cluster did not reach cluster_state:ok"; }
    local list; list="$(IFS=,; echo "${addrs[*]}")"
    echo "$list" >"$dir/nodes"
    echo "$list"
}

stop() {
    local dir="$1" f pid pids=()
    for f in "$dir"/*/redis.pid; do
        [ -f "$f" ] || continue
        pid="$(cat "$f" 2>/dev/null)" || continue
        if alive "$pid" redis-server; then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    # redis-server removes its pid file as it exits: wait on the PIDs taken above.
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 50); do alive "$pid" redis-server || break; sleep 0.1; done
        if alive "$pid" redis-server; then kill -KILL "$pid" 2>/dev/null || true; fi
    done
    rm -f "$dir"/*/redis.pid
}

case "${1:-}" in
start) [ -n "${2:-}" ] || die "usage: $0 start DIR"; start "$2" ;;
stop) [ -n "${2:-}" ] || die "usage: $0 stop DIR"; stop "$2" ;;
*) die "usage: $0 start|stop DIR" ;;
esac
