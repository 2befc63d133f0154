#!/usr/bin/env python3
"""The data disk's limits, measured the way a write path uses it.

- append + fdatasync: 4 KiB appends to one file, each followed by fdatasync (a WAL's
  group-commit floor at batch size 1);
- sequential write bandwidth: 1 MiB writes, fdatasync every 64 MiB, for the catch-up target.

Prints one JSON object. Usage: disk_limits.py DIR [--seconds S]
"""
import json
import os
import sys
import time


def fdatasync_rate(path, seconds):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    block = os.urandom(4096)
    n, lat = 0, []
    start = time.monotonic()
    try:
        while time.monotonic() - start < seconds:
            t0 = time.monotonic()
            os.write(fd, block)
            os.fdatasync(fd)
            lat.append(time.monotonic() - t0)
            n += 1
    finally:
        os.close(fd)
        os.unlink(path)
    elapsed = time.monotonic() - start
    lat.sort()
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e6 if lat else 0
    return {"ops_per_sec": n / elapsed, "p50_us": pct(0.5), "p99_us": pct(0.99)}


def sequential_bandwidth(path, seconds):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    block = os.urandom(1 << 20)
    written = 0
    start = time.monotonic()
    try:
        while time.monotonic() - start < seconds:
            for _ in range(64):
                os.write(fd, block)
            os.fdatasync(fd)
            written += 64 << 20
    finally:
        os.close(fd)
        os.unlink(path)
    return {"mib_per_sec": written / (1 << 20) / (time.monotonic() - start)}


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    d = sys.argv[1]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--seconds" else 5.0
    os.makedirs(d, exist_ok=True)
    out = {
        "dir": d,
        "append_fdatasync_4k": fdatasync_rate(os.path.join(d, "fdatasync.probe"), seconds),
        "sequential_write": sequential_bandwidth(os.path.join(d, "seq.probe"), seconds),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
