#!/usr/bin/env python3
"""`make bench`, part 3 (or `make bench-failover` alone): failover and catch-up of ShardedStore
in local mode (3 nodes, RF 3, 64 partitions), on real processes started here and stopped at
the end.

  failover  `shardedstore bench-failover`: BENCH_FAILOVER_RUNS (default 20) times, kill -9 the
            node leading the most partitions under write load (one writer per partition) and
            time kill → first acknowledged write sent after the kill, per affected partition;
            the killed node is restarted by local mode and back in sync before the next run.
            BENCH_FAILOVER_RUNS=0 skips it (catch-up only).
  catch-up  preload BENCH_CATCHUP_MIB (default 256) MiB per replica, scale to 4 nodes and
            time from the scale request until the new node holds its replicas, all in sync:
            MiB/s overall (what it then stores, shardedstore_stored_bytes), and the snapshot
            streams' rate from their first to their last byte (its received
            shardedstore_catchup_bytes_total), next to the sequential write bandwidth of the
            same disk (hack/disk_limits.py), measured for 3 s right before the scale (after
            the preload's dirty pages are written back) and, for reference, at the start.
  writes    with BENCH_CATCHUP_WRITE_RATE=N (default 0: off), an open-loop load of N writes/s
  during    of the preload's shape (the same keys and value size, so the new node has as much to
  catch-up  take in) runs for BENCH_CATCHUP_WRITE_SECONDS (default 30) from 3 s before the scale
            request, after the same load alone for as long (the baseline): p50/p99/p99.9/max of
            both, latency from each write's intended send time. The catch-up figures are then
            those of a store under load.
BENCH_LOCAL_ARGS adds flags to `shardedstore-operator local` (e.g. to compare move budgets, or
--bandwidth-bytes-per-second to throttle the catch-up streams).
Merges "failover", "catch_up" and the load average before/after into BENCH_JSON (default
docs/benchmarks.json, created when missing) and prints them.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import disk_limits  # noqa: E402
import hoststats  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BIN", os.path.join(ROOT, "target", "release"))
RUNS = int(os.environ.get("BENCH_FAILOVER_RUNS", "20"))
CATCHUP_MIB = int(os.environ.get("BENCH_CATCHUP_MIB", "256"))
# Extra flags for `shardedstore-operator local` (e.g. "--max-concurrent-moves-per-node 8").
LOCAL_ARGS = os.environ.get("BENCH_LOCAL_ARGS", "").split()
WRITE_RATE = int(os.environ.get("BENCH_CATCHUP_WRITE_RATE", "0"))
WRITE_SECONDS = int(os.environ.get("BENCH_CATCHUP_WRITE_SECONDS", "30"))
OUT = os.environ.get("BENCH_JSON", os.path.join(ROOT, "docs", "benchmarks.json"))
PORT, PEER, METRICS, CONTROL = 7400, 7500, 7600, 7700
VALUE = 16384

procs = []


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def stop_all():
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def get(url, timeout=2):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def control_status():
    try:
        return json.loads(get(f"http://127.0.0.1:{CONTROL}/status"))
    except (OSError, ValueError):
        return None


def wait_until(what, check, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = check()
        if v:
            return v
        time.sleep(0.2)
    raise SystemExit(f"{what} not reached within {timeout} s")


def settled(nodes):
    s = control_status()
    return bool(s and s.get("allInSync") and s.get("balanced") and len(s["endpoints"]) == nodes
                and all(e["running"] for e in s["endpoints"]))


def new_node_holds_replicas():
    s = control_status() or {}
    return any(n["name"] == "node-3" and n["replicas"] > 0 for n in s.get("nodes", [])) \
        and not s.get("moves")


def node_bytes(ordinal):
    """(stored bytes, catch-up bytes received) of a node, or None when it does not answer.
    The stored-bytes gauge is refreshed once a second; the received counter moves with every
    snapshot chunk, as it arrives."""
    try:
        text = get(f"http://127.0.0.1:{METRICS + ordinal}/metrics")
    except OSError:
        return None
    stored = re.search(r'^shardedstore_stored_bytes (\S+)$', text, re.M)
    received = re.search(r'^shardedstore_catchup_bytes_total\{direction="received"\} (\S+)$', text, re.M)
    return (float(stored.group(1)) if stored else 0.0, float(received.group(1)) if received else 0.0)


def write_load(endpoints, keys):
    """Starts the open-loop write load of the preload's shape (BENCH_CATCHUP_WRITE_RATE)."""
    return subprocess.Popen([os.path.join(BIN, "shardedstore"), "--endpoint", endpoints, "bench",
                             "--json", "--read-ratio", "0", "--uniform", "--clients", "64",
                             "--keys", str(keys), "--value-size", str(VALUE), "--no-preload",
                             "--rate", str(WRITE_RATE), "--duration", str(WRITE_SECONDS)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def load_figures(proc):
    """p50/p99/p99.9/max (ms), writes/s and errors of a finished write load."""
    out, _ = proc.communicate(timeout=WRITE_SECONDS + 120)
    run = json.loads(out)["runs"][0]
    op = run["operations"][0] if run["operations"] else {}
    ms = lambda k: round(op.get(k, 0) / 1000, 1)
    return {"rate": WRITE_RATE, "seconds": WRITE_SECONDS, "ops_per_sec": round(run["ops_per_sec"]),
            "p50_ms": ms("p50_us"), "p99_ms": ms("p99_us"), "p999_ms": ms("p999_us"),
            "max_ms": ms("max_us"), "errors": run["errors"]}


def catch_up(endpoints, work):
    keys = max(1, CATCHUP_MIB * 1024 * 1024 // VALUE)
    log(f"== catch-up: preload {keys} keys x {VALUE} B ({CATCHUP_MIB} MiB per replica)")
    subprocess.run([os.path.join(BIN, "shardedstore"), "--endpoint", endpoints, "bench", "--json",
                    "--read-ratio", "0", "--uniform", "--clients", "64", "--keys", str(keys),
                    "--value-size", str(VALUE), "--ops", "1"], check=True, capture_output=True)
    wait_until("settled before scaling", lambda: settled(3), 120)
    # The disk as it is now, right before the scale: its speed moves with the host (from
    # 260 to 610 MiB/s within minutes here), so the figure taken at the start of the run,
    # before the failover runs and the preload, is a poor yardstick. The preload's dirty
    # pages are written back first, as they were before the first measurement.
    os.sync()
    disk_now = disk_limits.sequential_bandwidth(os.path.join(work, "seq.probe"), 3.0)["mib_per_sec"]
    log(f"== the disk's sequential write right before the scale: {disk_now:.1f} MiB/s")
    load = None
    if WRITE_RATE > 0:
        log(f"== writes alone: {WRITE_RATE}/s for {WRITE_SECONDS} s (the baseline)")
        baseline = load_figures(write_load(endpoints, keys))
        log(f"== writes during the catch-up: {WRITE_RATE}/s for {WRITE_SECONDS} s from 3 s before the scale")
        load = write_load(endpoints, keys)
        time.sleep(3)
    req = urllib.request.Request(f"http://127.0.0.1:{CONTROL}/scale", data=b'{"nodes": 4}',
                                 headers={"content-type": "application/json"}, method="POST")
    urllib.request.urlopen(req, timeout=5).read()
    scaled, host = time.monotonic(), hoststats.cpu_times()
    # (t, bytes) whenever the new node's received snapshot bytes moved: a new replica of a
    # partition of 1 MiB or more is filled by a snapshot (docs/protocol.md).
    samples = []
    last = 0.0
    deadline = scaled + 600
    while time.monotonic() < deadline:
        b = node_bytes(3)
        now = time.monotonic()
        if b is not None and b[1] > last:
            samples.append((now, b[1]))
            last = b[1]
        if settled(4) and new_node_holds_replicas():
            break
        time.sleep(0.05)
    else:
        raise SystemExit("the new node did not finish catching up within 600 s")
    done, stolen = time.monotonic(), hoststats.steal_pct(host, hoststats.cpu_times())
    writes = None
    if load is not None:
        writes = {"baseline": baseline, "during_catch_up": load_figures(load),
                  "catch_up_within_load": done - scaled <= WRITE_SECONDS - 3}
    # What the new node holds, once its stored-bytes gauge (refreshed every second) has
    # caught up with the end of the moves: two readings over a second apart that agree.
    stored, seen = None, None
    refresh = time.monotonic() + 15
    while time.monotonic() < refresh:
        b = node_bytes(3)
        if b is not None and seen is not None and b[0] == seen[0] and time.monotonic() - seen[1] >= 1.1:
            stored = b[0]
            break
        if b is not None and (seen is None or b[0] != seen[0]):
            seen = (b[0], time.monotonic())
        time.sleep(0.1)
    if not stored:
        raise SystemExit("the new node settled without storing anything (nothing was preloaded?)")
    mib = 1024 * 1024
    result = {
        "received_mib": round(stored / mib, 1),
        "scale_to_settled_s": round(done - scaled, 1),
        "mib_per_sec_overall": round(stored / mib / (done - scaled), 1),
        # CPU time the host took from this machine from the scale request to settled.
        "cpu_steal_pct": stolen,
        "disk_sequential_mib_per_sec": round(disk_now, 1),
    }
    if len(samples) >= 2:
        streaming = max(samples[-1][0] - samples[0][0], 1e-3)
        # The best one-second window: the rate of the streams without the gaps between moves.
        # None when the streams lasted under a second (no such window).
        best = None
        for i, (t0, b0) in enumerate(samples):
            for t1, b1 in samples[i + 1:]:
                if t1 - t0 >= 1.0:
                    best = max(best or 0.0, (b1 - b0) / (t1 - t0))
                    break
        result.update({
            "snapshot_mib": round(samples[-1][1] / mib, 1),
            "first_to_last_snapshot_byte_s": round(streaming, 2),
            "mib_per_sec_streaming": round(samples[-1][1] / mib / streaming, 1),
            "mib_per_sec_best_1s": None if best is None else round(best / mib, 1),
        })
    if writes:
        result["writes"] = writes
    return result


def main():
    # A SIGTERM (e.g. from `timeout`) stops the processes started here too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = tempfile.mkdtemp(prefix="shardedstore-bench-failover.")
    logs = open(os.path.join(work, "processes.log"), "w")
    # This section is merged into a JSON file that may hold a whole `make bench` run of
    # another commit: it records its own commit and time.
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or None
    result = {"commit": commit,
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "load_average_before": os.getloadavg()}
    try:
        log("== limits: data disk")
        result["disk"] = json.loads(subprocess.run(
            [sys.executable, os.path.join(ROOT, "hack", "disk_limits.py"), os.path.join(work, "disk")],
            check=True, capture_output=True, text=True).stdout)
        log("== ShardedStore: local mode, 3 nodes, RF 3 (kill -9 restarts after 1 s)")
        p = subprocess.Popen([os.path.join(BIN, "shardedstore-operator"), "local", "--nodes", "3",
                              "--replication-factor", "3", "--partitions", "64", "--port", str(PORT),
                              "--peer-port", str(PEER), "--metrics-port", str(METRICS),
                              "--control-port", str(CONTROL), "--restart-delay-ms", "1000",
                              "--node-binary", os.path.join(BIN, "shardedstore-node"),
                              "--data-dir", os.path.join(work, "store"), *LOCAL_ARGS],
                             stdout=logs, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(p)
        wait_until("ShardedStore settled", lambda: settled(3), 120)
        endpoints = ",".join(f"127.0.0.1:{PORT + i}" for i in range(3))

        if RUNS > 0:
            log(f"== failover: {RUNS} x kill -9 of the node leading the most partitions")
            host = hoststats.cpu_times()
            out = subprocess.run([os.path.join(BIN, "shardedstore"), "--endpoint", endpoints,
                                  "bench-failover", "--control", f"127.0.0.1:{CONTROL}",
                                  "--runs", str(RUNS), "--json"],
                                 check=True, capture_output=True, text=True).stdout
            fo = json.loads(out)
            result["failover"] = {k: fo[k] for k in ("samples", "timed_out", "p50_ms", "p99_ms", "max_ms")}
            result["failover"]["runs"] = len(fo["runs"])
            result["failover"]["per_run_max_ms"] = [round(max(r["recovered_ms"], default=0)) for r in fo["runs"]]
            result["failover"]["cpu_steal_pct"] = hoststats.steal_pct(host, hoststats.cpu_times())
            log(json.dumps(result["failover"]))

        result["catch_up"] = catch_up(endpoints, work)
        seq = result["catch_up"]["disk_sequential_mib_per_sec"]
        result["catch_up"]["disk_sequential_mib_per_sec_at_start"] = round(
            result["disk"]["sequential_write"]["mib_per_sec"], 1)
        result["catch_up"]["share_of_disk_bandwidth_overall"] = round(
            result["catch_up"]["mib_per_sec_overall"] / seq, 3) if seq else None
        log(json.dumps(result["catch_up"]))
    finally:
        stop_all()
        logs.close()
        shutil.rmtree(work, ignore_errors=True)
    result["load_average_after"] = os.getloadavg()
    merged = {}
    if os.path.exists(OUT):
        with open(OUT) as f:
            merged = json.load(f)
    merged["failover_and_catch_up"] = result
    with open(OUT, "w") as f:
        json.dump(merged, f, indent=2)
        f.write("\n")
    fo, cu = result.get("failover"), result["catch_up"]
    if fo:
        print(f"\nfailover (kill -9 → first acknowledged write sent after it), {fo['samples']} partitions "
              f"over {fo['runs']} kills: p50 {fo['p50_ms']:.0f} ms, p99 {fo['p99_ms']:.0f} ms, "
              f"max {fo['max_ms']:.0f} ms, {fo['timed_out']} without a write within the run timeout; "
              f"CPU stolen by the host {fo.get('cpu_steal_pct')} %")
    best = cu.get("mib_per_sec_best_1s")
    best = f"best 1 s {best} MiB/s" if best is not None else "under 1 s in all"
    streams = (f"; snapshots {cu['snapshot_mib']} MiB at {cu['mib_per_sec_streaming']} MiB/s first to last "
               f"byte, {best}") if "snapshot_mib" in cu else ""
    print(f"catch-up of a new node (scale 3 → 4): {cu['received_mib']} MiB in {cu['scale_to_settled_s']} s "
          f"from the scale request to settled: {cu['mib_per_sec_overall']} MiB/s overall{streams}; "
          f"the disk's sequential write {cu['disk_sequential_mib_per_sec']} MiB/s right before the scale "
          f"({cu['disk_sequential_mib_per_sec_at_start']} at the start of the run); "
          f"CPU stolen by the host {cu.get('cpu_steal_pct')} %")
    for name, w in (cu.get("writes") or {}).items():
        if isinstance(w, dict):
            print(f"writes {name.replace('_', ' ')}: {w['ops_per_sec']} of {w['rate']}/s over {w['seconds']} s, "
                  f"p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms, p99.9 {w['p999_ms']} ms, "
                  f"max {w['max_ms']} ms, errors {w['errors'] or 'none'}")
    if cu.get("writes") and not cu["writes"]["catch_up_within_load"]:
        print("  (the catch-up outlasted the load: raise BENCH_CATCHUP_WRITE_SECONDS)")
    print(f"load average before {result['load_average_before']}, after {result['load_average_after']}")


if __name__ == "__main__":
    main()
