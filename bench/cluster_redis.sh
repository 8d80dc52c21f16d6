#!/usr/bin/env bash
# make bench-cluster-redis: a private Redis Cluster on loopback (3 masters, 1 replica each;
# deploy/dev/redis-cluster.sh), then build/parley-cluster-redis in both variants, classic
# Pub/Sub (PUBLISH, SUBSCRIBE on any node) and sharded Pub/Sub (SPUBLISH, SSUBSCRIBE on the
# room's master), each on a fresh cluster: Redis CPU, output bytes and cluster-bus messages per
# published message, with Parley's own publish script and key layout. parleyd itself does not
# run in cluster mode yet (docs/redis.md), so this measures the Redis side only.
# Settings (CR_MSGS, CR_ROOMS, CR_K, CR_WINDOW, CR_TEXT) as in bench/cluster_redis.c.
# Writes bench/results/<date>-cluster-redis.md (or CR_RESULT) and prints it; exits non-zero if a
# run failed, lost a delivery or had a publish refused.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
BIN="${BUILD:-build}/parley-cluster-redis"
[ -x "$BIN" ] || { echo "cluster-redis: build $BIN first (make bench-cluster-redis)" >&2; exit 1; }
command -v redis-server >/dev/null || deploy/dev/deps.sh
out="${CR_RESULT:-bench/results/$(date -u +%Y%m%d-%H%M%S)-cluster-redis.md}"
dir="$(mktemp -d /tmp/parley-cluster-redis.XXXXXX)"
cleanup() { deploy/dev/redis-cluster.sh stop "$dir/c" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
{
    echo "# Redis Cluster: what a published room message costs Redis ($(date -u +%F))"
    echo
    echo "\`make bench-cluster-redis\` (bench/cluster_redis.sh, bench/cluster_redis.c) on $(nproc) CPUs, $(redis-server --version | grep -o 'v=[0-9.]*')."
    echo "A local cluster of 3 masters with 1 replica each; Parley's publish script with the cluster"
    echo "key layout (every key of a room, and its channel, under the room's hash tag); K instance"
    echo "stand-ins (svc/subscriber threads), each room held by D of them. Per published message:"
    echo "Redis CPU summed over all six nodes (and the busiest node's share of it), output bytes"
    echo "(INFO stats), cluster-bus publish messages (CLUSTER INFO), deliveries to the stand-ins."
    echo
    echo "| variant | messages | rooms | rooms held by | Redis CPU µs/msg | per node µs/msg (masters, then replicas) | output B/msg | bus msgs/msg | deliveries/msg | lost | failed | seconds |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
} >"$out"
rc=0
# D: how many of the K instance stand-ins hold each room (CR_DS, default "1 3 6": one, half, all).
for d in ${CR_DS:-1 3 6}; do
    for variant in classic sharded; do
        rm -rf "$dir/c"
        deploy/dev/redis-cluster.sh start "$dir/c" >/dev/null
        if ! CR_D="$d" timeout 300 "$BIN" "$dir/c" "$variant" >>"$out"; then
            echo "cluster-redis: the $variant run with D=$d failed" >&2
            rc=1
        fi
        deploy/dev/redis-cluster.sh stop "$dir/c"
    done
done
cat "$out"
exit "$rc"
