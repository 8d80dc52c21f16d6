#!/usr/bin/env bash
# make bench-cluster-redis, small (2,000 messages per variant), so that the benchmark, the
# cluster router and the sharded subscriber keep working end to end on a real local cluster.
# Prints PASS/FAIL lines; fails on a lost delivery or a refused publish.
set -u
cd "$(dirname "$0")/.." || exit 1
res=$(mktemp /tmp/parley-crsmoke.XXXXXX)
if CR_MSGS=2000 CR_DS=3 CR_RESULT="$res" timeout 600 bench/cluster_redis.sh >"$res.log" 2>&1; then
    echo "PASS cluster_redis_smoke: $(grep -c '^| \(classic\|sharded\) ' "$res") variants, nothing lost"
    rc=0
else
    echo "FAIL cluster_redis_smoke: $(grep -v '^#' "$res.log" | tail -3 | tr '\n' ' ')"
    rc=1
fi
rm -f "$res" "$res.log"
exit "$rc"
