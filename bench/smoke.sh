#!/usr/bin/env bash
# bench/smoke.sh: a short run of every parley-bench scenario (small N, 1 s)
# against a parleyd (+ Redis) that the caller started. Exits non-zero on any
# lost message, error frame, failed connection or non-zero bench exit.
#
#   PARLEY_URL=ws://127.0.0.1:PORT/ws PARLEY_JWT_SECRET=... bench/smoke.sh
#
# Optional: PARLEY_PIDS=pid[,pid] (server PIDs, for the CPU/RSS columns),
# PARLEY_BENCH=path to parley-bench (default build/parley-bench),
# SMOKE_ARGS=more parley-bench options (a wss:// URL: --cacert, --servername),
# SMOKE_SUFFIX=a suffix for the test names (e.g. _tls).
# Over wss:// it also runs connect --resume: every connection must resume (session tickets).
# Checks correctness only; timings are printed, never asserted.
set -u
cd "$(dirname "$0")/.." || exit 1
BENCH=${PARLEY_BENCH:-build/parley-bench}
: "${PARLEY_URL:?set PARLEY_URL=ws://host:port/ws or wss://...}"
: "${PARLEY_JWT_SECRET:?set PARLEY_JWT_SECRET}"
[ -x "$BENCH" ] || { echo "bench smoke: $BENCH missing (make all)" >&2; exit 1; }
PIDS=()
[ -n "${PARLEY_PIDS:-}" ] && PIDS=(--pids "$PARLEY_PIDS")
read -r -a EXTRA <<<"${SMOKE_ARGS:-}"
SFX=${SMOKE_SUFFIX:-}

fail=0
run() { # name args...
    local name=$1 out rc
    shift
    out=$(timeout 60 "$BENCH" "$@" --url "$PARLEY_URL" --label smoke "${PIDS[@]}" "${EXTRA[@]}" 2>&1)
    rc=$?
    local res resumed authed
    res=$(printf '%s\n' "$out" | grep '^RESULT')
    # connect --resume: every connection must have resumed the primed session
    resumed=$(printf '%s\n' "$res" | sed -n 's/.* resumed=\([0-9]*\).*/\1/p')
    authed=$(printf '%s\n' "$res" | sed -n 's/.* authenticated=\([0-9]*\).*/\1/p')
    if [ $rc -ne 0 ] || [ -z "$res" ] || printf '%s\n' "$res" | grep -Eq ' (lost|extra|out_of_order|failed|errors|closed)=[1-9]' ||
        { [ -n "$resumed" ] && [ "$resumed" != "$authed" ]; }; then
        echo "FAIL bench_smoke_$name$SFX (exit $rc)"
        printf '%s\n' "$out" | grep -v '^  [|+]' | sed 's/^/    /' | head -12
        fail=1
    else
        echo "PASS bench_smoke_$name$SFX"
    fi
}

run idle idle -n 200 --settle 0.5 --timeout 20
run fanout fanout -n 50 -r 100 -d 1 --max-duration 1 -w 5 --warmup 0 --timeout 20
run rooms rooms -n 200 --rooms 20 -r 200 -d 1 --warmup 0 --timeout 20
run connect connect -n 200 --conc 50 --timeout 20
# wss://: reconnects offering one session's ticket, each resumed
[[ "$PARLEY_URL" = wss://* ]] && run connect_resumed connect -n 200 --conc 50 --timeout 20 --resume
run catchup catchup -n 300 --runs 2 --timeout 20
exit $fail
