#!/usr/bin/env bash
# test/checked.sh valgrind|tsan|asan: integration tests with every parleyd under a
# checker (PARLEYD_BIN points the tests at a wrapper), then every checker log
# must be clean. Prints PASS/FAIL lines like every suite.
#
#   valgrind  memcheck of build/parleyd: no error, no definitely lost block.
#             Tests chosen for the hand-managed memory: reply and JSON arenas,
#             frames shared across threads, deferred frees, presence batches,
#             shutdown, static files and the API's database and Redis answers.
#   tsan      ThreadSanitizer and UBSan: parleyd and the unit tests rebuilt
#             with -fsanitize=thread,undefined into build/tsan/; no data race
#             reported, and undefined behaviour aborts. The unit tests run
#             first; integration tests chosen for the paths
#             where threads meet: the subscriber feeding the shards, the
#             database pool answering them, presence storms on two instances,
#             Redis restarts, shutdown.
#   asan      AddressSanitizer with UBSan (clang, as the fuzz targets): parleyd and the unit
#             tests rebuilt with -fsanitize=address,undefined into build/asan/; the unit tests,
#             then the whole integration suite. No memory error, no undefined behaviour, and no
#             leak at a clean exit (LeakSanitizer; test/asan.supp says what is let through).
set -u
cd "$(dirname "$0")/.." || exit 1
mode=${1:-}
dir=$(mktemp -d /tmp/parley-checked.XXXXXX)
units=0
npassed=
trap 'rm -rf "$dir"' EXIT

# build_and_unit NAME CC SANITIZE WHAT: parleyd and the unit tests rebuilt into build/NAME with the
# same sources and warnings as build/parleyd, instrumented with SANITIZE (libraries stay as
# packaged), then every unit test binary run; the first that fails ends the mode. UBSan rides
# along in both modes (it costs little): signed overflow, bad shifts, misaligned access.
build_and_unit() {
    local name=$1 cc=$2 san="$3 -fno-sanitize-recover=undefined" what=$4
    if ! make -s --no-print-directory BUILD="build/$name" CC="$cc" \
        CFLAGS="-O1 -g $san -std=c11 -D_GNU_SOURCE -pthread -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter" \
        LLHTTP_CFLAGS="-O1 -g $san" "build/$name/parleyd" unit >"$dir/build.txt" 2>&1; then
        echo "FAIL $name: building build/$name failed:"
        tail -5 "$dir/build.txt"
        exit 1
    fi
    for u in "build/$name"/test/test_*; do
        case $u in *.d) continue ;; esac
        units=$((units + 1))
        if ! "$u" >"$dir/unit.txt" 2>&1; then
            echo "FAIL $name: $(basename "$u") under $what:"
            grep -E '^(FAIL|WARNING|==[0-9]+==ERROR|SUMMARY|.*runtime error|  )' "$dir/unit.txt" | head -20 | cut -c1-300
            exit 1
        fi
    done
}

case $mode in
valgrind)
    command -v valgrind >/dev/null || { echo "FAIL valgrind: not installed"; exit 1; }
    cat >"$dir/parleyd" <<EOF
#!/bin/sh
exec valgrind --quiet --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \\
    --log-file=$dir/log.%p $PWD/build/parleyd "\$@"
EOF
    what="under memcheck: no errors, no leaks"
    tests=(
        'protocol: every bad input'
        'chat dm: to both connections'
        'chat presence: a storm'
        'durable: resending a cid'
        'rooms: unsubscribe stops delivery'
        'shutdown: SIGTERM'
        'durable recovery: the same with PARLEY_STREAM_LEN=100'
        'heal: Redis restarts empty'
        'slow consumer: a client that stops reading is closed with 4008 past'
        'tls: wss and https beside plain ws'
        'tls: SIGHUP reloads'
        'tls: a reconnect resumes its session'
        'web: static files'
        'web: GET /api/users/me/rooms'
        'web: GET /api/rooms/{room}/members'
        'drain: SIGTERM'
        'authz: renewing'
        'authz: removing a member'
        'authz: POST /api/users/'
        'authz: a disconnect revokes'
        'limits rate: a client flooding'
        'limits conns per ip'
        'subscribe-rooms: '
    )
    ;;
tsan)
    # The unit tests too (test_mpsc runs producers and a consumer on separate threads).
    build_and_unit tsan "${CC:-cc}" "-fsanitize=thread,undefined" ThreadSanitizer
    # TSan writes a log file only when it reports; the marker shows the wrapper ran.
    cat >"$dir/parleyd" <<EOF
#!/bin/sh
: >$dir/ran.\$\$
TSAN_OPTIONS="log_path=$dir/log exitcode=0 halt_on_error=0" UBSAN_OPTIONS="log_path=$dir/log print_stacktrace=1" exec $PWD/build/tsan/parleyd "\$@"
EOF
    what="under ThreadSanitizer and UBSan: no data races, no undefined behaviour"
    tests=(
        'cluster: 10,000 messages'
        'durable: 10,000 messages from two instances'
        'chat presence: a storm'
        'chat presence: graceful shutdown'
        'redis: killed and restarted'
        'subscribe: a message sent before'
        'shutdown: SIGTERM'
        'heal: Redis flushed'
        'heal: parleyd starts while Redis is down'
        'tls: wss and https beside plain ws'
        'tls: a reconnect resumes its session'
        'drain: messages in flight'
        'drain: POST /api/admin/rebalance'
        'metrics: '
        'authz: removing a member'
        'authz: POST /api/users/'
        'limits conns per ip'
        'limits rate: a client flooding'
        'subscribe-rooms: '
        'rcluster: two instances'
    )
    ;;
asan)
    command -v clang >/dev/null || { echo "FAIL asan: clang is not installed (deploy/dev/deps.sh)"; exit 1; }
    export LSAN_OPTIONS="suppressions=$PWD/test/asan.supp print_suppressions=0"
    export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 # the unit tests'
    build_and_unit asan clang "-fsanitize=address,undefined -fno-omit-frame-pointer" AddressSanitizer
    # Reports go to log.<pid> files only when there is one; the marker shows the wrapper ran.
    cat >"$dir/parleyd" <<EOF
#!/bin/sh
: >$dir/ran.\$\$
LSAN_OPTIONS="$LSAN_OPTIONS" ASAN_OPTIONS="log_path=$dir/log detect_leaks=1" UBSAN_OPTIONS="log_path=$dir/log print_stacktrace=1" exec $PWD/build/asan/parleyd "\$@"
EOF
    what="under AddressSanitizer and UBSan: no memory errors, leaks or undefined behaviour"
    tests=('') # the whole suite
    ;;
*)
    echo "usage: test/checked.sh valgrind|tsan|asan" >&2
    exit 2
    ;;
esac
chmod +x "$dir/parleyd"

# Test names (substrings) for test/integration/run.mjs; their own PASS/FAIL lines are
# summarised under this suite's name.
ok=1
for t in "${tests[@]}"; do
    PARLEYD_BIN=$dir/parleyd PARLEY_TEST_START_MS=40000 node test/integration/run.mjs "$t" >"$dir/out.txt" 2>&1
    if ! grep -q '^PASS ' "$dir/out.txt" || grep -q '^FAIL ' "$dir/out.txt"; then
        echo "FAIL $mode: '${t:-the integration suite}' did not pass under $mode:"
        # The failures first, each with the lines under it (logs), then the rest.
        { grep -A12 '^FAIL ' "$dir/out.txt"; grep -E '^  ' "$dir/out.txt"; } |
            head -"$([ -n "$t" ] && echo 12 || echo 40)" | cut -c1-300
        ok=0
    fi
    if [ -z "$t" ]; then # the whole suite: keep its output for a look afterwards
        npassed=$(grep -c '^PASS ' "$dir/out.txt")
        cp "$dir/out.txt" "build/$mode-integration.txt"
    fi
done
shopt -s nullglob
logs=("$dir"/log.*)
bad=0
for l in "${logs[@]}"; do
    # Valgrind 3.19 does not know openat2 (syscall 437) and warns; it fails the call with ENOSYS,
    # and app/static.c then takes its realpath path, which the tests check just the same.
    if [ "$mode" = valgrind ] && [ -s "$l" ]; then
        grep -vE -- '--[0-9]+-- (WARNING: unhandled amd64-linux syscall: 437|You may be able to write your own handler\.|Read the file README_MISSING_SYSCALL_OR_IOCTL\.|Nevertheless we consider this a bug\.  Please report|it at http://valgrind\.org/support/bug_reports\.html\.)$' \
            "$l" >"$l.kept" || true
        mv "$l.kept" "$l"
    fi
    [ -s "$l" ] || continue # valgrind --quiet: an empty log is a clean run
    bad=$((bad + 1))
    echo "  $mode log $(basename "$l"):"
    head -40 "$l" | sed 's/^/    /'
done
case $mode in
valgrind) ran=${#logs[@]} ;;
tsan | asan) ran=$(ls "$dir" | grep -c '^ran\.') ;;
esac
if [ "$bad" -gt 0 ]; then
    echo "FAIL $mode: $bad of $ran parleyd processes had reports"
    exit 1
fi
[ "$ran" -gt 0 ] || { echo "FAIL $mode: no parleyd ran under $mode"; exit 1; }
[ "$ok" = 1 ] || exit 1
unit_note=
[ "$units" -gt 0 ] && unit_note="$units unit test binaries and "
echo "PASS $mode: $unit_note${npassed:-${#tests[@]}} integration tests, $ran parleyd processes $what"
