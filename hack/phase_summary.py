#!/usr/bin/env python3
"""Per-phase write latency from nodes' /metrics texts: for every phase of
shardedstore_write_phase_duration_seconds (primaries) and for
shardedstore_follower_append_duration_seconds (followers) and
shardedstore_append_round_trip_duration_seconds (primaries), and for the durable batches of the
storage writer (shardedstore_fsync_duration_seconds: a write-ahead log record's write and
fdatasync, or the checkpoint it needed) and the checkpoints
(shardedstore_checkpoint_duration_seconds), summed over the given nodes, the count, mean, and
p50/p99 estimated from the histogram buckets (linear within a bucket, as Prometheus'
histogram_quantile does). hack/bench_vs_etcd.py uses it on scrapes taken before and after a
step (`difference`), so the figures cover that step alone.

Usage: phase_summary.py METRICS.txt...   (prints a table; --json for JSON)
"""
import collections
import json
import re
import sys

LINE = re.compile(r'^(shardedstore_(?:write_phase|follower_append|append_round_trip|fsync|checkpoint)_duration_seconds)'
                  r'_(bucket|sum|count)(?:\{([^}]*)\})? (\S+)$')

NAMES = {
    "shardedstore_append_round_trip_duration_seconds": "append round trip (primary)",
    "shardedstore_follower_append_duration_seconds": "follower append → durable",
    "shardedstore_fsync_duration_seconds": "durable batch (log fdatasync)",
    "shardedstore_checkpoint_duration_seconds": "checkpoint",
}


def new_series():
    return collections.defaultdict(lambda: {"buckets": collections.Counter(), "sum": 0.0, "count": 0.0})


def parse_texts(texts):
    """The histograms of these /metrics texts, summed over them."""
    series = new_series()
    for text in texts:
        for line in text.splitlines():
            m = LINE.match(line.strip())
            if not m:
                continue
            family, kind, labels, value = m.groups()
            labels = dict(re.findall(r'(\w+)="([^"]*)"', labels or ""))
            name = labels.get("phase") or NAMES[family]
            s = series[(family, name)]
            if kind == "bucket":
                s["buckets"][float(labels["le"])] += float(value)
            else:
                s[kind] += float(value)
    return series


def parse(paths):
    texts = []
    for path in paths:
        with open(path) as f:
            texts.append(f.read())
    return parse_texts(texts)


def difference(after, before):
    """`after` minus `before` (two parses of the same nodes): what happened in between."""
    out = new_series()
    for key, a in after.items():
        b = before.get(key, {"buckets": {}, "sum": 0.0, "count": 0.0})
        out[key]["buckets"] = collections.Counter(
            {le: c - b["buckets"].get(le, 0.0) for le, c in a["buckets"].items()})
        out[key]["sum"] = a["sum"] - b["sum"]
        out[key]["count"] = a["count"] - b["count"]
    return out


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


ORDER = ["durable batch (log fdatasync)", "local_durable", "follower append → durable",
         "append round trip (primary)", "replicated", "committed", "acknowledged", "applied", "checkpoint"]


def rows(series):
    """One row per phase with samples: count, mean, p50, p99 (ms), in the write's order."""
    out = []
    for (family, name), s in sorted(series.items(), key=lambda kv: ORDER.index(kv[0][1])
                                    if kv[0][1] in ORDER else 99):
        if s["count"] <= 0:
            continue
        ms = lambda v: None if v is None else round(v * 1000, 2)
        out.append({"phase": name, "count": int(s["count"]), "mean_ms": ms(s["sum"] / s["count"]),
                    "p50_ms": ms(quantile(0.5, s["buckets"])), "p99_ms": ms(quantile(0.99, s["buckets"]))})
    return out


def main():
    args = [a for a in sys.argv[1:] if a != "--json"]
    if not args:
        sys.exit(__doc__)
    rows_ = rows(parse(args))
    if "--json" in sys.argv:
        print(json.dumps(rows_, indent=2))
        return
    print(table(rows_))


def table(rows_):
    lines = [f"{'phase':<30} {'count':>9} {'mean ms':>9} {'p50 ms':>9} {'p99 ms':>9}"]
    for r in rows_:
        lines.append(f"{r['phase']:<30} {r['count']:>9} {r['mean_ms']:>9} {r['p50_ms']:>9} {r['p99_ms']:>9}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
