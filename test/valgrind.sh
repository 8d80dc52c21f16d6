#!/usr/bin/env bash
# Memory checking of the real server: a few integration tests, chosen to cover
# the paths with hand-managed memory (reply and JSON arenas, frames shared
# across threads, deferred frees, presence batches, shutdown), run with every
# parleyd under valgrind's memcheck (PARLEYD_BIN points the tests at a
# wrapper). Afterwards each parleyd's valgrind log must show no error and no
# definitely lost block. Prints PASS/FAIL lines like every suite.
set -u
cd "$(dirname "$0")/.." || exit 1
command -v valgrind >/dev/null || { echo "FAIL valgrind: not installed"; exit 1; }
dir=$(mktemp -d /tmp/parley-valgrind.XXXXXX)
trap 'rm -rf "$dir"' EXIT
cat >"$dir/parleyd" <<EOF
#!/bin/sh
exec valgrind --quiet --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \\
    --log-file=$dir/vg.%p.log $PWD/build/parleyd "\$@"
EOF
chmod +x "$dir/parleyd"

# Test names (substrings) for test/integration/run.mjs; their own PASS/FAIL lines are
# printed under a "valgrind:" prefix so that they count as this suite's.
tests=(
    'protocol: every bad input'
    'chat dm: to both connections'
    'chat presence: a storm'
    'durable: resending a cid'
    'rooms: unsubscribe stops delivery'
    'shutdown: SIGTERM'
)
ok=1
for t in "${tests[@]}"; do
    PARLEYD_BIN=$dir/parleyd node test/integration/run.mjs "$t" >"$dir/out.txt" 2>&1
    if ! grep -q '^PASS ' "$dir/out.txt" || grep -q '^FAIL ' "$dir/out.txt"; then
        echo "FAIL valgrind: '$t' did not pass under valgrind:"
        grep -E '^(FAIL|  )' "$dir/out.txt" | head -5 | cut -c1-300
        ok=0
    fi
done
logs=("$dir"/vg.*.log)
bad=0
for l in "${logs[@]}"; do
    [ -s "$l" ] || continue # --quiet: an empty log is a clean run
    bad=$((bad + 1))
    echo "  valgrind log $(basename "$l"):"
    head -30 "$l" | sed 's/^/    /'
done
if [ "$bad" -gt 0 ]; then
    echo "FAIL valgrind: $bad of ${#logs[@]} parleyd processes had memory errors or leaks"
    exit 1
fi
[ "${#logs[@]}" -gt 0 ] && [ -e "${logs[0]}" ] || { echo "FAIL valgrind: no parleyd ran under valgrind"; exit 1; }
[ "$ok" = 1 ] || exit 1
echo "PASS valgrind: ${#tests[@]} integration tests, ${#logs[@]} parleyd processes under memcheck: no errors, no leaks"
