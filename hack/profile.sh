#!/usr/bin/env bash
# `make profile`: a CPU profile of the write path at peak. Starts local mode (3 nodes, RF 3,
# 64 partitions) from the release build (which keeps line tables: `debug = "line-tables-only"`
# in the workspace's release profile), drives it with `shardedstore bench --read-ratio 0`,
# records the three node processes with `perf record -g` (DWARF call graphs: release code
# has no frame pointers), folds the stacks with inferno (hack/install-tools.sh inferno) and
# writes a flamegraph SVG plus the top costs (self and inclusive) as text, and the per-phase
# write latency the nodes measured during the run (hack/phase_summary.py).
#   hack/profile.sh                         # output in target/profile/
#   PROFILE_SECONDS=20 PROFILE_CLIENTS=256 PROFILE_OUT=/tmp/prof hack/profile.sh
#   PROFILE_RATE=1500 hack/profile.sh       # open loop: writes sent at 1500/s, not at peak
#   PROFILE_PRELOAD=1 hack/profile.sh       # first write all 100k keys, as `make bench` does
# Needs perf (linux-perf) and permission to profile (root, or kernel.perf_event_paranoid <= 1).
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh
bin=target/release
seconds="${PROFILE_SECONDS:-15}"
clients="${PROFILE_CLIENTS:-256}"
freq="${PROFILE_FREQUENCY:-299}"
rate=()
[ -n "${PROFILE_RATE:-}" ] && rate=(--rate "$PROFILE_RATE")
out="${PROFILE_OUT:-target/profile}"
# Ports: client base+0.., peer +100, metrics +200, control +300 (PROFILE_PORT, default 7400).
port="${PROFILE_PORT:-7400}"
command -v perf >/dev/null || { echo "perf not found (apt-get install linux-perf)" >&2; exit 1; }
for b in shardedstore shardedstore-node shardedstore-operator; do
  [ -x "$bin/$b" ] || { echo "$bin/$b missing: run make release first" >&2; exit 1; }
done
tools="$(bash hack/install-tools.sh inferno | tail -n 1)"
mkdir -p "$out"
work="$(mktemp -d /tmp/shardedstore-profile.XXXXXX)"
op=""
load=""
cleanup() {
  [ -n "$load" ] && kill "$load" 2>/dev/null || true
  [ -n "$op" ] && kill "$op" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/shardedstore-operator" local --nodes 3 --replication-factor 3 --partitions 64 \
  --port "$port" --peer-port $((port + 100)) --metrics-port $((port + 200)) --control-port $((port + 300)) \
  --node-binary "$bin/shardedstore-node" --data-dir "$work/store" >"$work/store.log" 2>&1 &
op=$!
endpoints="127.0.0.1:$port,127.0.0.1:$((port + 1)),127.0.0.1:$((port + 2))"
wait_for 60 "64 healthy partitions" \
  bash -c "'$bin/shardedstore' --endpoint 127.0.0.1:$port status 2>/dev/null | grep -q '64 healthy'"
pids="$(pgrep -d, -f -- "--data-dir $work/store/node-")"
[ -n "$pids" ] || { echo "no node processes found" >&2; exit 1; }

if [ -n "${PROFILE_PRELOAD:-}" ]; then
  # The store `make bench` measures: every key written once before the sweep.
  echo "preloading 100k keys of 1 KiB" >&2
  "$bin/shardedstore" --endpoint "$endpoints" bench --read-ratio 0 --uniform --clients 256 \
    --keys 100000 --value-size 1024 --ops 1 >/dev/null
fi
# Load for longer than the recording; the recording starts once the load is under way.
"$bin/shardedstore" --endpoint "$endpoints" bench --read-ratio 0 --uniform --clients "$clients" \
  --keys 100000 --value-size 1024 --no-preload --duration "$((seconds + 10))s" "${rate[@]}" >"$work/bench.txt" &
load=$!
sleep 3
echo "recording nodes $pids for $seconds s at $freq Hz ($clients clients writing${PROFILE_RATE:+ at $PROFILE_RATE/s})" >&2
perf record -F "$freq" --call-graph dwarf,32768 -p "$pids" -o "$work/perf.data" -- sleep "$seconds" \
  2>"$work/perf-record.log" || { cat "$work/perf-record.log" >&2; exit 1; }
wait "$load" || true
load=""
cat "$work/bench.txt"
# Where the writes' time went on the servers during the run (per-phase histograms).
for i in 0 1 2; do
  curl -sf "http://127.0.0.1:$((port + 200 + i))/metrics" >"$out/metrics-node-$i.txt" || true
done
python3 hack/phase_summary.py "$out"/metrics-node-*.txt | tee "$out/phases.txt"

echo "folding stacks (perf script can take minutes)" >&2
nice -n 19 perf script -i "$work/perf.data" 2>/dev/null | "$tools/inferno-collapse-perf" >"$out/write-path.folded"
"$tools/inferno-flamegraph" --title "ShardedStore write path, 3 nodes RF 3, $clients clients" \
  <"$out/write-path.folded" >"$out/write-path.svg"
python3 hack/profile_top.py "$out/write-path.folded" | tee "$out/top.txt"
echo "flamegraph: $out/write-path.svg, folded stacks: $out/write-path.folded, top costs: $out/top.txt"
