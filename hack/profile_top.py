#!/usr/bin/env python3
"""Top costs of a folded-stack profile (inferno-collapse-perf output): the functions with the
most samples on-CPU themselves (self) and on the stack (inclusive), and a few buckets that
answer "where does a write's CPU go" (syscalls, HTTP, storage, replication, allocation).

Usage: profile_top.py FILE.folded [N]
"""
import collections
import re
import sys

# Buckets by substring of a frame, first match per stack wins (checked leaf to root).
BUCKETS = [
    ("fsync / fdatasync", ("fdatasync", "fsync")),
    ("redb (data tables)", ("redb::",)),
    ("write-ahead log", ("storage::wal",)),
    ("TLS / crypto", ("rustls::", "ring::")),
    ("JSON", ("serde_json::",)),
    ("HTTP (hyper/reqwest)", ("hyper::", "reqwest::", "h2::")),
    ("memory allocation", ("malloc", "free", "realloc", "_int_", "memcpy", "memmove")),
    ("tokio scheduler / wakeups", ("tokio::runtime", "futex", "epoll", "sched_yield")),
    ("socket syscalls", ("sendto", "recvfrom", "__send", "__recv", "writev", "tcp_", "sock_")),
]


def clean(frame):
    frame = re.sub(r"::h[0-9a-f]{16}$", "", frame)
    frame = re.sub(r"\+0x[0-9a-f]+$", "", frame)
    return frame


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    self_cost = collections.Counter()
    inclusive = collections.Counter()
    buckets = collections.Counter()
    total = 0
    with open(sys.argv[1]) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            c = int(count)
            frames = [clean(x) for x in stack.split(";")]
            total += c
            self_cost[frames[-1]] += c
            for fr in set(frames[1:]):
                inclusive[fr] += c
            bucket = "other"
            for fr in reversed(frames):
                hit = next((name for name, keys in BUCKETS if any(k in fr for k in keys)), None)
                if hit:
                    bucket = hit
                    break
            buckets[bucket] += c
    if not total:
        sys.exit("no samples")
    pct = lambda c: f"{100.0 * c / total:5.1f}%"
    print(f"{total} samples")
    print("\nwhere the CPU goes (first matching frame from the leaf):")
    for name, c in buckets.most_common():
        print(f"  {pct(c)}  {name}")
    print(f"\ntop {n} self:")
    for name, c in self_cost.most_common(n):
        print(f"  {pct(c)}  {name[:140]}")
    print(f"\ntop {n} inclusive (our crates):")
    ours = [(k, v) for k, v in inclusive.items() if "shardedstore" in k]
    for name, c in sorted(ours, key=lambda kv: -kv[1])[:n]:
        print(f"  {pct(c)}  {name[:140]}")


if __name__ == "__main__":
    main()
