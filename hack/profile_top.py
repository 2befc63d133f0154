#!/usr/bin/env python3
"""Top costs of a folded-stack profile (inferno-collapse-perf output): what the CPU does (by
the leaf-most recognised frame), the share under each component of the write path
(inclusive), and the top functions by self and inclusive time.

Usage: profile_top.py FILE.folded [N]
"""
import collections
import re
import sys

# What the CPU is doing, by the sampled (leaf-most) frame that matches; first rule wins.
LEAF_KINDS = [
    ("kernel: fdatasync / fsync", ("fdatasync", "fsync", "jbd2", "ext4_sync")),
    ("kernel: loopback TCP", ("tcp_", "sock_", "sendto", "recvfrom", "__send", "__recv", "writev",
                              "readv", "ip_", "__netif", "nf_conntrack", "skb", "loopback")),
    ("kernel: scheduling, futex, epoll", ("finish_task_switch", "__schedule", "futex", "epoll",
                                          "__switch_to", "sched_", "irqentry_exit", "_raw_spin")),
    ("allocator (malloc/free)", ("malloc", "_int_free", "__libc_free", "cfree", "realloc", "tcache_",
                                 "unlink_chunk", "sysmalloc")),
    ("memcpy / memmove / memset", ("memcpy", "memmove", "memset", "copy_folio", "copy_user")),
    ("redb", ("redb::",)),
    ("write-ahead log", ("storage::wal",)),
    ("TLS / crypto / checksums", ("rustls::", "ring::", "crc", "xxh")),
    ("JSON", ("serde_json::",)),
    ("HTTP (hyper, reqwest, h2, warp)", ("hyper::", "reqwest::", "h2::", "warp::", "http::")),
    ("tokio runtime", ("tokio::",)),
    ("ShardedStore code", ("shardedstore_node::",)),
]

# Share of the CPU spent under a component (a stack counts once per component; overlapping).
COMPONENTS = [
    ("storage writer thread (all commands)", "storage::writer::Writer::execute"),
    ("redb", "redb::"),
    ("write-ahead log", "storage::wal"),
    ("apply (Replica::apply_committed)", "apply_committed"),
    ("client API request handling", "client_api"),
    ("peer API (follower side)", "peer_api"),
    ("follower append (handle_append)", "handle_append"),
    ("replication sender (primary side)", "replication::sender"),
    ("primary write (Replica::write)", "primary::<impl shardedstore_node::replication::replica::Replica>::write"),
    ("HTTP client (reqwest)", "reqwest::"),
    ("kernel fdatasync", "fdatasync"),
]


def clean(frame):
    frame = re.sub(r"::h[0-9a-f]{16}$", "", frame)
    frame = re.sub(r"\+0x[0-9a-f]+$", "", frame)
    return frame


def short(frame):
    """A function name without generic wrappers' noise, or None for wrappers."""
    if not frame.startswith("shardedstore_node::"):
        return None
    return re.sub(r"(::\{\{closure\}\})+$", "", frame)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    self_cost = collections.Counter()
    ours = collections.Counter()
    kinds = collections.Counter()
    components = collections.Counter()
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
            for fr in {short(x) for x in frames} - {None}:
                ours[fr] += c
            joined = ";".join(frames)
            for name, key in COMPONENTS:
                if key in joined:
                    components[name] += c
            kind = "other"
            for fr in reversed(frames):
                hit = next((k for k, keys in LEAF_KINDS if any(x in fr for x in keys)), None)
                if hit:
                    kind = hit
                    break
            kinds[kind] += c
    if not total:
        sys.exit("no samples")
    pct = lambda c: f"{100.0 * c / total:5.1f}%"
    print(f"total weight {total} (perf's sample periods)")
    print("\nwhat the CPU does (by the leaf-most recognised frame; sums to 100%):")
    for name, c in kinds.most_common():
        print(f"  {pct(c)}  {name}")
    print("\nCPU under each component (inclusive, overlapping):")
    for name, c in components.most_common():
        print(f"  {pct(c)}  {name}")
    print(f"\ntop {n} functions by self time:")
    for name, c in self_cost.most_common(n):
        print(f"  {pct(c)}  {name[:140]}")
    print(f"\ntop {n} ShardedStore functions by inclusive time:")
    for name, c in ours.most_common(n):
        print(f"  {pct(c)}  {name[:140]}")


if __name__ == "__main__":
    main()
