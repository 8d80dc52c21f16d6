#!/usr/bin/env bash
# The load generator's smoke run (bench/smoke.sh: every scenario, small N, 1 s)
# against a private redis-server and parleyd that this script starts and
# stops, over ws:// and again over wss:// (parley-bench's TLS client against
# parleyd's TLS listener, certificate made here with openssl and verified).
# Then the floor with --redis (make bench's floor-redis) runs the rooms
# scenario: nothing lost, every message in its room's stream, no error reply; and with
# --durable (make bench's floor-durable): the same, with gap-free seqs in the streams.
# Last the floor with --tls (make bench-tls's floor-tls) carries a fan-out over
# wss:// with nothing lost.
# Prints PASS/FAIL lines; fails on any lost message.
set -u
cd "$(dirname "$0")/.." || exit 1
dir=$(mktemp -d /tmp/parley-bsmoke.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rport=$(free_port)
pport=$(free_port)
tport=$(free_port)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -keyout "$dir/key.pem" -out "$dir/cert.pem" >"$dir/openssl.log" 2>&1 ||
    { echo "FAIL bench_smoke: openssl: $(tail -1 "$dir/openssl.log")"; exit 1; }
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >"$dir/redis.log" 2>&1 &
rpid=$!
secret=bench-smoke-secret
# Redis only: the smoke run checks the fan-out path (make test exports the dev database URL).
unset PARLEY_DATABASE_URL PARLEY_OPEN_ROOMS
# A load generator is not a person: no per-connection rate, no per-address count.
PARLEY_RATE_LIMIT=0 PARLEY_SUBSCRIBE_RATE=0 PARLEY_MAX_CONNS_PER_IP=0 \
PARLEY_LISTEN=127.0.0.1:$pport PARLEY_REDIS_URL=redis://127.0.0.1:$rport/0 \
    PARLEY_TLS_LISTEN=127.0.0.1:$tport PARLEY_TLS_CERT="$dir/cert.pem" PARLEY_TLS_KEY="$dir/key.pem" \
    PARLEY_JWT_SECRET=$secret PARLEY_API_KEY=k build/parleyd >"$dir/parleyd.log" 2>&1 &
ppid=$!
fpid=
cleanup() {
    kill "$ppid" "$rpid" $fpid 2>/dev/null
    wait "$ppid" "$rpid" $fpid 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$pport/health" >/dev/null && break
    sleep 0.1
done
PARLEY_URL=ws://127.0.0.1:$pport/ws PARLEY_JWT_SECRET=$secret PARLEY_PIDS=$ppid bench/smoke.sh
rc=$?
PARLEY_URL=wss://127.0.0.1:$tport/ws PARLEY_JWT_SECRET=$secret PARLEY_PIDS=$ppid SMOKE_SUFFIX=_tls \
    SMOKE_ARGS="--cacert $dir/cert.pem --servername localhost" bench/smoke.sh || rc=1
[ $rc -eq 0 ] || tail -20 "$dir/parleyd.log"

# The floor's runs: start one (floor_start LOG ARGS...: sets fport, fpid), stop it (floor_stop:
# sets frc, its exit), judge one (floor_verdict NAME OK DETAIL: OK is 1 or 0; prints what the
# bench printed and the floor's log on failure).
floor_start() {
    local log=$1
    shift
    fport=$(free_port)
    build/parley-floor --listen "127.0.0.1:$fport" "$@" 2>"$dir/$log.log" &
    fpid=$!
    flog=$dir/$log.log
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$fport") 2>/dev/null && break
        sleep 0.1
    done
}
floor_stop() {
    kill -INT "$fpid"
    wait "$fpid"
    frc=$?
    fpid=
}
bad_result() { # what parley-bench printed ($out) reports a loss or an error
    printf '%s\n' "$out" | grep '^RESULT' | grep -Eq " ($1)=[1-9]"
}
floor_verdict() {
    if [ "$2" = 1 ]; then
        echo "PASS bench_smoke_$1"
        return
    fi
    echo "FAIL bench_smoke_$1 ($3)"
    printf '%s\n' "$out" | grep -v '^  [|+]' | sed 's/^/    /' | head -8
    sed 's/^/    /' "$flog" | tail -5
    rc=1
}
xlen_sum() { # messages in all room streams
    redis-cli -p "$rport" --scan --pattern 'fr:*:s' | while read -r k; do redis-cli -p "$rport" xlen "$k"; done |
        awk '{ n += $1 } END { print n + 0 }'
}

# floor-redis: 20 rooms, 200 msg/s for 1 s; each message is XADDed to fr:<r>:s.
floor_start floor-redis --redis "127.0.0.1:$rport"
before=$(xlen_sum)
out=$(PARLEY_JWT_SECRET=$secret timeout 60 build/parley-bench rooms -n 200 --rooms 20 -r 200 -d 1 --warmup 0 --timeout 20 \
    --url "ws://127.0.0.1:$fport/ws" --label floor-redis --pids "$fpid" 2>&1)
brc=$?
sent=$(printf '%s\n' "$out" | grep '^RESULT' | sed -n 's/.* sent=\([0-9]*\).*/\1/p')
stored=$(($(xlen_sum) - before))
floor_stop
ok=0
[ $brc -eq 0 ] && [ -n "$sent" ] && [ "$sent" -gt 0 ] && [ "$stored" = "$sent" ] && [ $frc -eq 0 ] &&
    ! bad_result 'lost|extra|errors|closed' && ok=1
floor_verdict floor_redis $ok "bench exit $brc, sent ${sent:-?}, stored in streams $stored, floor exit $frc"

# floor-durable: the same through the publish script of bench/redis_cost/seq_from_stream.lua;
# every message is in its room's fd:<r>:s stream, whose entry IDs 0-1..0-N are the gap-free
# seqs, and came back through the subscriber connection (nothing lost, nothing out of order).
floor_start floor-durable --redis "127.0.0.1:$rport" --durable bench/redis_cost/seq_from_stream.lua
out=$(PARLEY_JWT_SECRET=$secret timeout 60 build/parley-bench rooms -n 200 --rooms 20 -r 200 -d 1 --warmup 0 --timeout 20 \
    --url "ws://127.0.0.1:$fport/ws" --label floor-durable --pids "$fpid" 2>&1)
brc=$?
sent=$(printf '%s\n' "$out" | grep '^RESULT' | sed -n 's/.* sent=\([0-9]*\).*/\1/p')
stored=0
gaps=0
for k in $(redis-cli -p "$rport" --scan --pattern 'fd:*:s'); do
    n=$(redis-cli -p "$rport" xlen "$k")
    last=$(redis-cli -p "$rport" xrevrange "$k" + - count 1 | head -1)
    stored=$((stored + n))
    [ "$last" = "0-$n" ] || gaps=$((gaps + 1))
done
floor_stop
ok=0
[ $brc -eq 0 ] && [ -n "$sent" ] && [ "$sent" -gt 0 ] && [ "$stored" = "$sent" ] && [ $gaps = 0 ] && [ $frc -eq 0 ] &&
    ! bad_result 'lost|extra|out_of_order|errors|closed' && ok=1
floor_verdict floor_durable $ok "bench exit $brc, sent ${sent:-?}, stored $stored, streams with gaps $gaps, floor exit $frc"

# floor-tls: 50 receivers over wss://, the certificate verified.
floor_start floor-tls --tls "$dir/cert.pem" "$dir/key.pem"
out=$(PARLEY_JWT_SECRET=$secret timeout 60 build/parley-bench fanout -n 50 -r 100 -d 1 --max-duration 1 -w 5 \
    --warmup 0 --timeout 20 --url "wss://127.0.0.1:$fport/ws" --cacert "$dir/cert.pem" \
    --servername localhost --label floor-tls --pids "$fpid" 2>&1)
brc=$?
floor_stop
n=$(printf '%s\n' "$out" | grep -c '^RESULT.* delivered=[1-9]')
ok=0
[ $brc -eq 0 ] && [ $frc -eq 0 ] && [ "$n" = 2 ] && ! bad_result 'lost|extra|out_of_order|errors|closed' && ok=1
floor_verdict floor_tls $ok "bench exit $brc, floor exit $frc, $n runs with deliveries"
exit $rc
