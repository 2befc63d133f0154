#!/usr/bin/env bash
# `make bench`: the benchmark procedure of docs/benchmarks.md as one command. Prints figures;
# never fails on timing. Runs placement, then YCSB A/B/C against local mode (1 node RF 1 and
# 3 nodes RF 3) side by side with Redis (started here when redis-server is installed), then
# ShardedStore next to a 3-member etcd (hack/bench_vs_etcd.py; figures also in
# docs/benchmarks.json), then failover and catch-up (hack/bench_failover.py, merged into the
# same JSON).
#   BENCH_DURATION=20s BENCH_CLIENTS=16 hack/bench.sh        # everything
#   BENCH_ONLY=etcd hack/bench.sh                            # only the etcd comparison
#   hack/bench.sh failover                                   # only failover and catch-up
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
if [ "${1:-}" = failover ]; then
  BIN="$bin" exec python3 hack/bench_failover.py
fi
duration="${BENCH_DURATION:-10s}"
clients="${BENCH_CLIENTS:-16}"
work="$(mktemp -d /tmp/shardedstore-bench.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ "${BENCH_ONLY:-}" != etcd ]; then
  echo "== placement"
  "$bin/shardedstore-operator" bench-placement
  "$bin/shardedstore-operator" bench-placement --zones 0
fi

compare=()
if command -v redis-server >/dev/null; then
  mkdir -p "$work/redis"
  redis-server --port 6391 --bind 127.0.0.1 --save '' --appendonly yes --appendfsync always \
    --dir "$work/redis" --daemonize no >"$work/redis.log" 2>&1 &
  pids+=($!)
  compare=(--compare-redis 127.0.0.1:6391)
else
  echo "(redis-server not installed: no side-by-side figures; apt-get install redis-server)"
fi

wait_healthy() { # endpoint expected-partitions
  local deadline=$((SECONDS + 60))
  until "$bin/shardedstore" --endpoint "$1" status 2>/dev/null | grep -q "$2 healthy"; do
    ((SECONDS < deadline)) || { echo "store at $1 not healthy within 60 s" >&2; return 1; }
    sleep 0.5
  done
}

run_store() { # nodes rf
  local nodes=$1 rf=$2 port=7400 endpoints=""
  "$bin/shardedstore-operator" local --nodes "$nodes" --replication-factor "$rf" --partitions 64 \
    --port "$port" --peer-port 7500 --metrics-port 7600 --control-port 7700 \
    --node-binary "$bin/shardedstore-node" --data-dir "$work/store-$nodes" >"$work/store-$nodes.log" 2>&1 &
  local op=$!
  pids+=("$op")
  for ((i = 0; i < nodes; i++)); do endpoints+="${endpoints:+,}127.0.0.1:$((port + i))"; done
  wait_healthy "127.0.0.1:$port" 64
  for w in ycsb-a ycsb-b ycsb-c; do
    echo "== $nodes node(s), RF $rf, $w"
    "$bin/shardedstore" --endpoint "$endpoints" bench --workload "$w" --clients "$clients" \
      --keys 10000 --value-size 100 --duration "$duration" "${compare[@]}"
  done
  kill "$op"
  wait "$op" 2>/dev/null || true
}

if [ "${BENCH_ONLY:-}" != etcd ]; then
  run_store 1 1
  run_store 3 3
fi

echo "== ShardedStore vs etcd (3 nodes / 3 members, same machine and disk)"
tools="$(bash hack/install-tools.sh etcd-benchmark | tail -n 1)"
k8s="$(bash hack/k8s-bins.sh | tail -n 1)"
BIN="$bin" ETCD_BIN="$k8s/etcd" ETCD_BENCHMARK_BIN="$tools/etcd-benchmark" \
  BENCH_DURATION="${duration%s}" BENCH_CLIENTS="${BENCH_ETCD_CLIENTS:-16,64,256,1024}" \
  python3 hack/bench_vs_etcd.py

if [ "${BENCH_ONLY:-}" != etcd ]; then
  echo "== failover and catch-up (local mode, 3 nodes, RF 3)"
  BIN="$bin" python3 hack/bench_failover.py
fi
