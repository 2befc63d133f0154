#!/usr/bin/env bash
# Measures backup and restore throughput next to the disk's bandwidth (docs/backup.md).
# Prints figures; never fails on timing. Runs a local-mode store (3 nodes, RF 3), loads
# BACKUP_KEYS keys of BACKUP_VALUE_SIZE bytes, backs it up to file:// (same disk) and, when
# moto_server is installed, to its S3 API; restores the file backup into a new store.
#   BIN=target/release BACKUP_KEYS=200000 BACKUP_VALUE_SIZE=1000 hack/bench-backup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${BIN:-target/release}"
keys="${BACKUP_KEYS:-100000}"
size="${BACKUP_VALUE_SIZE:-1000}"
partitions="${BACKUP_PARTITIONS:-16}"
work="$(mktemp -d /tmp/shardedstore-bench-backup.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_healthy() { # endpoint expected-partitions
  local deadline=$((SECONDS + 120))
  until "$bin/shardedstore" --endpoint "$1" status 2>/dev/null | grep -q "$2 healthy"; do
    ((SECONDS < deadline)) || { echo "store at $1 not healthy within 120 s" >&2; return 1; }
    sleep 0.5
  done
}

echo "== disk bandwidth of $work (dd, 1 GiB, direct I/O)"
dd if=/dev/zero of="$work/dd" bs=1M count=1024 oflag=direct 2>&1 | tail -n 1
dd if="$work/dd" of=/dev/null bs=1M iflag=direct 2>&1 | tail -n 1
rm -f "$work/dd"

"$bin/shardedstore-operator" local --nodes 3 --partitions "$partitions" --data-dir "$work/src" \
  --port 27000 --peer-port 27100 --metrics-port 27200 --control-port 27090 >"$work/src.log" 2>&1 &
pids+=($!)
wait_healthy 127.0.0.1:27000 "$partitions"
echo "== loading $keys keys of $size bytes"
"$bin/shardedstore" --endpoint 127.0.0.1:27000 bench --read-ratio 0 --keys "$keys" \
  --value-size "$size" --ops 1 --clients 32 --uniform | tail -n 3
du -sh "$work/src/node-0"

echo "== backup to file:// (same disk)"
"$bin/shardedstore" --endpoint 127.0.0.1:27000 backup --to "file://$work/backup" \
  --peer-token local-peer-token --parallelism 4 2>/dev/null

moto="$(command -v moto_server || true)"
[ -n "$moto" ] || moto="${SHARDEDSTORE_CACHE:-$HOME/.cache/shardedstore}/tools/bin/moto_server"
if [ -x "$moto" ]; then
  "$moto" -H 127.0.0.1 -p 27500 >"$work/moto.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:27500/ && break; sleep 0.2; done
  curl -s -X PUT http://127.0.0.1:27500/bench >/dev/null
  echo "== backup to S3 (moto_server on loopback, objects held in its memory)"
  AWS_ENDPOINT_URL=http://127.0.0.1:27500 AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=k \
    AWS_SECRET_ACCESS_KEY=s "$bin/shardedstore" --endpoint 127.0.0.1:27000 backup \
    --to s3://bench/b1 --peer-token local-peer-token --parallelism 4 2>/dev/null
else
  echo "(moto_server not installed: no S3 figure; bash hack/install-tools.sh moto)"
fi

echo "== restore of the file backup into a new store"
"$bin/shardedstore-operator" local --nodes 3 --partitions "$partitions" --data-dir "$work/dst" \
  --port 28000 --peer-port 28100 --metrics-port 28200 --control-port 28090 \
  --restore-from "file://$work/backup" >"$work/dst.log" 2>&1 &
pids+=($!)
deadline=$((SECONDS + 1800))
until [ -e "$work/dst/restore.done" ]; do
  ((SECONDS < deadline)) || { echo "restore did not finish" >&2; tail "$work/dst.log"; exit 1; }
  sleep 1
done
grep -a "restored .* keys" "$work/dst.log" || true
