#!/usr/bin/env python3
"""Per-phase write latency from nodes' /metrics texts: for every phase of
shardedstore_write_phase_duration_seconds (primaries) and for
shardedstore_follower_append_duration_seconds (followers) and
shardedstore_append_round_trip_duration_seconds (primaries), summed over the given nodes, the
count, mean, and p50/p99 estimated from the histogram buckets (linear within a bucket, as
Prometheus' histogram_quantile does).

Usage: phase_summary.py METRICS.txt...   (prints a table; --json for JSON)
"""
import collections
import json
import re
import sys

LINE = re.compile(r'^(shardedstore_(?:write_phase|follower_append|append_round_trip)_duration_seconds)_(bucket|sum|count)'
                  r'(?:\{([^}]*)\})? (\S+)$')


def parse(paths):
    series = collections.defaultdict(lambda: {"buckets": collections.Counter(), "sum": 0.0, "count": 0.0})
    for path in paths:
        with open(path) as f:
            for line in f:
                m = LINE.match(line.strip())
                if not m:
                    continue
                family, kind, labels, value = m.groups()
                labels = dict(re.findall(r'(\w+)="([^"]*)"', labels or ""))
                name = labels.get("phase") or ("append round trip (primary)" if "round_trip" in family
                                                else "follower append → durable")
                s = series[(family, name)]
                if kind == "bucket":
                    s["buckets"][float(labels["le"])] += float(value)
                else:
                    s[kind] += float(value)
    return series


def quantile(q, buckets):
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0
    if not total:
        return None
    rank, prev_bound, prev_count = q * total, 0.0, 0.0
    for b in bounds:
        c = buckets[b]
        if c >= rank:
            if b == float("inf"):
                return prev_bound
            return prev_bound + (b - prev_bound) * ((rank - prev_count) / max(c - prev_count, 1e-9))
        prev_bound, prev_count = b, c
    return prev_bound


ORDER = ["local_durable", "replicated", "committed", "applied", "acknowledged", "follower append → durable"]


def main():
    args = [a for a in sys.argv[1:] if a != "--json"]
    if not args:
        sys.exit(__doc__)
    rows = []
    for (family, name), s in sorted(parse(args).items(), key=lambda kv: ORDER.index(kv[0][1])
                                    if kv[0][1] in ORDER else 99):
        if not s["count"]:
            continue
        ms = lambda v: None if v is None else round(v * 1000, 2)
        rows.append({"phase": name, "count": int(s["count"]), "mean_ms": ms(s["sum"] / s["count"]),
                     "p50_ms": ms(quantile(0.5, s["buckets"])), "p99_ms": ms(quantile(0.99, s["buckets"]))})
    if "--json" in sys.argv:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'phase':<28} {'count':>9} {'mean ms':>9} {'p50 ms':>9} {'p99 ms':>9}")
    for r in rows:
        print(f"{r['phase']:<28} {r['count']:>9} {r['mean_ms']:>9} {r['p50_ms']:>9} {r['p99_ms']:>9}")


if __name__ == "__main__":
    main()
