#!/usr/bin/env bash
# Runs the libFuzzer targets of fuzz/ (docs/fuzzing.md) with the stable toolchain.
# Usage: hack/fuzz.sh [TARGET...]      (default: every target in fuzz/Cargo.toml)
# FUZZ_SECONDS (default 600) per target; FUZZ_JOBS (default 1) targets at a time.
# New inputs go to target/fuzz-corpus/<target> (the committed seed corpus fuzz/corpus/<target>
# is only read); a crash leaves its input in fuzz/artifacts/<target>/ and makes the script
# exit 1 after every target ran. One line per target: target, seconds, executions, result.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

seconds="${FUZZ_SECONDS:-600}"
jobs="${FUZZ_JOBS:-1}"
# cargo-fuzz drives nightly-only rustc flags (-Z); RUSTC_BOOTSTRAP lets the stable compiler
# accept them. No sanitizer: the fuzzed code is safe Rust (unsafe_code is forbidden in the
# workspace), and fuzz/src/lib.rs checks allocation sizes itself.
export RUSTC_BOOTSTRAP=1
bin="$(bash hack/install-tools.sh cargo-fuzz | tail -n 1)"
export PATH="$bin:$PATH"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi

echo "building fuzz targets: ${targets[*]}" >&2
for t in "${targets[@]}"; do
  (cd fuzz && nice -n 10 cargo fuzz build --sanitizer none "$t") >&2
done

logs="$root/target/fuzz-logs"
mkdir -p "$logs"
run_one() {
  local t="$1" work="$root/target/fuzz-corpus/$1" seeds="$root/fuzz/corpus/$1"
  local rc=0
  mkdir -p "$work" "$seeds" "$root/fuzz/artifacts/$t"
  (cd fuzz && nice -n 10 cargo fuzz run --sanitizer none "$t" "$work" "$seeds" -- \
    -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$root/fuzz/artifacts/$t/") >"$logs/$t.log" 2>&1 || rc=$?
  echo "$rc" >"$logs/$t.rc"
}

failed=0
running=0
for t in "${targets[@]}"; do
  rm -f "$logs/$t.rc"
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n
    running=$((running - 1))
  fi
done
wait
printf '%-16s %8s %12s  %s\n' target seconds executions result
for t in "${targets[@]}"; do
  rc="$(cat "$logs/$t.rc" 2>/dev/null || echo missing)"
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$t.log" | grep -o '[0-9]*$' || true)"
  if [ "$rc" = 0 ]; then
    result="no crash"
  else
    result="FAILED (exit $rc): $(grep -m1 -o 'Test unit written to .*' "$logs/$t.log" || echo "see $logs/$t.log")"
    failed=1
  fi
  printf '%-16s %8s %12s  %s\n' "$t" "$seconds" "${execs:-?}" "$result"
done
exit "$failed"
