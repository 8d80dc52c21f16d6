#!/usr/bin/env bash
# test/fuzz/run.sh: builds the libFuzzer targets (test/fuzz/fuzz_*.c) with clang, ASan and
# UBSan into build/fuzz/, and runs each for FUZZ_SECONDS (default 60) from its seed corpus
# (test/fuzz/corpus/<target>/, read only; what a run adds goes to build/fuzz/corpus/<target>/).
# Any crash, leak, sanitizer report, timeout or out-of-memory fails the target; its input is
# kept as build/fuzz/<target>-crash-* (or -leak-, -timeout-, -oom-) and the target's log as
# build/fuzz/<target>.log. Prints PASS/FAIL lines like every suite (test/run).
#
#   make fuzz                         every target, 60 s each
#   FUZZ_SECONDS=10 FUZZ_TARGETS="http ws" test/fuzz/run.sh
#   build/fuzz/fuzz_http build/fuzz/http-crash-<sha>     replays one input
set -u
cd "$(dirname "$0")/../.." || exit 1
secs=${FUZZ_SECONDS:-60}
out=build/fuzz

command -v clang >/dev/null || { echo "FAIL fuzz: clang is not installed (deploy/dev/deps.sh)"; exit 1; }
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
WARN="-Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter"
mkdir -p "$out"
if ! make -s --no-print-directory BUILD="$out" CC=clang \
    CFLAGS="-O1 -g -fsanitize=fuzzer-no-link $SAN -std=c11 -D_GNU_SOURCE -pthread $WARN" \
    LLHTTP_CFLAGS="-O1 -g -fsanitize=fuzzer-no-link $SAN" fuzz-build >"$out/build.txt" 2>&1; then
    echo "FAIL fuzz: building $out failed:"
    tail -15 "$out/build.txt"
    exit 1
fi

targets=${FUZZ_TARGETS:-$(ls test/fuzz/fuzz_*.c | sed 's|.*/fuzz_||; s|\.c$||')}
failed=0
for t in $targets; do
    bin=$out/fuzz_$t
    [ -x "$bin" ] || { echo "FAIL fuzz_$t: no $bin"; failed=1; continue; }
    rm -f "$out/$t"-crash-* "$out/$t"-leak-* "$out/$t"-timeout-* "$out/$t"-oom-* "$out/$t"-slow-unit-*
    mkdir -p "$out/corpus/$t"
    dict=()
    [ -f "test/fuzz/$t.dict" ] && dict=(-dict="test/fuzz/$t.dict")
    seeds=()
    [ -d "test/fuzz/corpus/$t" ] && seeds=("test/fuzz/corpus/$t")
    # Leaks are checked after every input (detect_leaks); UBSan aborts at its first report.
    ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:symbolize=1" \
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
        timeout --kill-after=10 $((secs + 120)) "$bin" -max_total_time="$secs" -rss_limit_mb=2048 \
        -timeout=10 -print_final_stats=1 -artifact_prefix="$out/$t-" "${dict[@]}" \
        "$out/corpus/$t" "${seeds[@]}" >"$out/$t.log" 2>&1
    rc=$?
    artifacts=$(ls "$out/$t"-crash-* "$out/$t"-leak-* "$out/$t"-timeout-* "$out/$t"-oom-* 2>/dev/null)
    last=$(grep -E '^#[0-9]+' "$out/$t.log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$t.log")
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out/$t.log")
    corp=$(ls "$out/corpus/$t" | wc -l)
    if [ "$rc" -ne 0 ] || [ -n "$artifacts" ]; then
        echo "FAIL fuzz_$t: exit status $rc after ${runs:-?} runs; input kept: ${artifacts:-none}; log $out/$t.log:"
        grep -E '^(==[0-9]+==|SUMMARY|fuzz:|.*runtime error|    #[0-9] )' "$out/$t.log" | head -20 | cut -c1-300
        failed=1
    else
        echo "PASS fuzz_$t: ${secs} s, ${runs:-?} runs (${eps:-?}/s), cov ${cov:-?}, ft ${ft:-?}, corpus $corp"
    fi
done
exit $failed
