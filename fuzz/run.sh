#!/usr/bin/env bash
# Runs every libFuzzer target of a DIFFULEX_FUZZ build for a bounded time (docs/FUZZING.md), two at a time, each
# from a scratch copy of its seed corpus in fuzz/corpus/<target>/ (the repository's corpus is never written).
# Exits 1 when any target finds a crash, a sanitizer report, a timeout or an out-of-memory, after printing its log
# tail and the input that did it.
#
#   fuzz/run.sh BUILD_DIR [SECONDS_EACH] [JOBS]      e.g. fuzz/run.sh build-fuzz 40 2
set -euo pipefail
cd "$(dirname "$0")/.."

build=${1:?usage: fuzz/run.sh BUILD_DIR [SECONDS_EACH] [JOBS]}
seconds=${2:-40}
jobs=${3:-2}
targets=()
for src in fuzz/fuzz_*.cc; do targets+=("$(basename "$src" .cc)"); done
for t in "${targets[@]}"; do
  [ -x "$build/$t" ] || { echo "error: fuzz/run.sh: $build/$t not built (cmake -DDIFFULEX_FUZZ=ON, clang)" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/diffulex-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

# One target: its corpus copy grows with what it finds; a finding is written to $work/<target>/crash-* etc.
run_one() {
  local t=$1 name=${1#fuzz_} dir=$work/$1
  mkdir -p "$dir/corpus" "$dir/artifacts"
  cp -r "fuzz/corpus/$name/." "$dir/corpus/"
  # -max_len: above the largest seed (a 4 KB chat template); -rss_limit_mb / -malloc_limit_mb: a parser that asks
  # for gigabytes is a finding; -timeout: one input running 10 s is a hang.
  if ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 \
      "$build/$t" "$dir/corpus" -max_total_time="$seconds" -max_len=8192 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
      -timeout=10 -print_final_stats=1 -artifact_prefix="$dir/artifacts/" >"$dir/log" 2>&1; then
    echo "fuzz: $t: $(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$dir/log" | grep -o '[0-9]*$') runs in ${seconds}s, no finding"
  else
    echo "fuzz: $t: FINDING (exit $?); log tail:"
    tail -n 40 "$dir/log" | sed "s/^/  $t: /"
    for a in "$dir"/artifacts/*; do
      [ -e "$a" ] || continue
      echo "  $t: input $(basename "$a") (base64): $(head -c 2048 "$a" | base64 -w0)"
    done
    return 1
  fi
}
export -f run_one
export build seconds work

# Two at a time: xargs exits non-zero when any target did.
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one {}'
