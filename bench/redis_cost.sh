#!/usr/bin/env bash
# make bench-redis-cost: a private redis-server (loopback, free port, no persistence), then
# build/parley-redis-cost on it: Redis's CPU per durable room message with Parley's publish
# script, beside the same commands sent plain, each command alone and an empty script
# (bench/redis_cost.c says what each variant is). Writes
# bench/results/<date>-redis-cost.md (or RC_RESULT) and prints it. Settings: RC_MSGS, RC_ROOMS,
# RC_BATCH as in bench/redis_cost.c; RC_SCRIPT=FILE measures that Lua in place of the publish
# script (for trying a change).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
BIN="${BUILD:-build}/parley-redis-cost"
[ -x "$BIN" ] || { echo "redis-cost: build $BIN first (make bench-redis-cost)" >&2; exit 1; }
command -v redis-server >/dev/null || deploy/dev/deps.sh
. bench/lib.sh
out="${RC_RESULT:-bench/results/$(date -u +%Y%m%d-%H%M%S)-redis-cost.md}"
dir="$(mktemp -d /tmp/parley-redis-cost.XXXXXX)"
RPID=
cleanup() { [ -n "$RPID" ] && stop_pid "$RPID"; rm -rf "$dir"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
port=$(free_port)
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
    --logfile "$dir/redis.log" --daemonize no &
RPID=$!
wait_tcp "$port" "$RPID" || { echo "redis-cost: redis-server did not start" >&2; cat "$dir/redis.log" >&2; exit 1; }
{
    echo "# What a durable room message costs one Redis ($(date -u '+%F %H:%M UTC'))"
    echo
    echo "\`make bench-redis-cost\` (bench/redis_cost.sh, bench/redis_cost.c) on $(nproc) CPUs, $(redis-server --version | grep -o 'v=[0-9.]*'), commit $(git rev-parse --short HEAD 2>/dev/null)."
    echo "${RC_MSGS:-50000} messages over ${RC_ROOMS:-1000} rooms, each with a new cid, pipelined ${RC_BATCH:-100} at a time; one connection PSUBSCRIBEs room:* and reads everything."
    echo "Redis CPU is utime + stime of redis-server (/proc) per message: it includes reading, parsing and writing. commandstats is what INFO commandstats charges to each command, per message; a script's time includes the commands it calls."
    [ -n "${RC_SCRIPT:-}" ] && echo "**RC_SCRIPT=$RC_SCRIPT: the script variant ran that Lua, not Parley's publish script.**"
    echo "Machine busy before the run: load average $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    "$BIN" "$port" "$RPID"
} >"$out"
cat "$out"
echo "written: $out"
