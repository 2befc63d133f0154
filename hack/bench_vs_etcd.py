#!/usr/bin/env python3
"""`make bench`, part 2: ShardedStore (local mode, 3 nodes, RF 3) next to a 3-member etcd in
one run, on the same machine and disk, plus the limits of that machine.

What runs (every figure comes from a real process started here and stopped at the end):
  limits    fdatasync rate and sequential bandwidth of the data disk (hack/disk_limits.py);
            the null store (`shardedstore echo-server`) under our load generator.
  writes    write-only sweep over BENCH_CLIENTS (default 16,64,256,1024), 1 KiB values over
            100k keys, uniform: ShardedStore and etcd-through-its-JSON-gateway under our load
            generator (`shardedstore bench`), and etcd under its own gRPC tool (`benchmark put`),
            one target at a time. Each step also records what the servers spent per write:
            CPU µs (user + system of the storage nodes and the operator, or of the etcd
            members), bytes written to disk (`write_bytes` of /proc/PID/io), and the load
            generator's own CPU µs per write (it shares the two cores with the servers).
            Our load generator sends on its own kept-alive connections to each key's primary
            (`shardedstore bench`; `--via-library` would send through the client library).
  ycsb      YCSB A and B, uniform and Zipfian, at BENCH_YCSB_CLIENTS (default 256), both
            systems under our load generator.
  reads     linearizable point reads: ShardedStore (ycsb-c), etcd (`benchmark range --consistency l`).
  open loop ShardedStore writes scheduled at half its measured peak (`--rate`), p99 from the
            intended send time.
Writes the figures as JSON (BENCH_JSON, default docs/benchmarks.json) with machine and commit.

Environment: BENCH_DURATION (s, default 10), BENCH_CLIENTS, BENCH_YCSB_CLIENTS, BENCH_KEYS
(default 100000), ETCD_BIN, ETCD_BENCHMARK_BIN, BIN (ShardedStore binaries, target/release),
BENCH_COMMIT (the commit recorded, default HEAD).
"""
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hoststats  # noqa: E402
import phase_summary  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BIN", os.path.join(ROOT, "target", "release"))
DURATION = os.environ.get("BENCH_DURATION", "10")
CLIENTS = [int(c) for c in os.environ.get("BENCH_CLIENTS", "16,64,256,1024").split(",")]
YCSB_CLIENTS = int(os.environ.get("BENCH_YCSB_CLIENTS", "256"))
KEYS = int(os.environ.get("BENCH_KEYS", "100000"))
VALUE = 1024
# The open loop also reports its latency per interval of send time this long (--timeline).
TIMELINE_MS = 100
ETCD = os.environ.get("ETCD_BIN", "etcd")
ETCD_BENCH = os.environ.get("ETCD_BENCHMARK_BIN", "benchmark")
OUT = os.environ.get("BENCH_JSON", os.path.join(ROOT, "docs", "benchmarks.json"))

SS_PORT, SS_PEER, SS_METRICS, SS_CONTROL = 7400, 7500, 7600, 7700
ETCD_CLIENT = [2479, 2489, 2499]
ETCD_PEER = [2480, 2490, 2500]
ECHO = "127.0.0.1:7990"

procs = []


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def start(args, logfile):
    p = subprocess.Popen(args, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)
    procs.append(p)
    return p


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


def wait_until(what, check, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise SystemExit(f"{what} not ready within {timeout} s")


def server_pids(marker):
    """Processes whose command line contains `marker` (the run's work directory): the
    storage nodes local mode started, or the etcd members."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().split(b"\0")
        except OSError:
            continue
        if cmdline and any(marker.encode() in arg for arg in cmdline):
            pids.append(int(entry))
    return pids


def usage(pids):
    """CPU seconds (user + system) and bytes sent to the storage layer (`write_bytes` of
    /proc/PID/io: page-cache pages dirtied and direct writes) of these processes so far."""
    cpu, written = 0.0, 0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / tick
            with open(f"/proc/{pid}/io") as f:
                written += next(int(l.split()[1]) for l in f if l.startswith("write_bytes"))
        except (OSError, StopIteration):
            pass
    return cpu, written


def measured(pids, run):
    """Runs `run()`, which returns one result with its count of successful `operations`,
    and adds what the servers spent per operation: CPU µs and bytes written to disk, and the
    share of CPU time the host took from this machine meanwhile (steal). The load generator
    (ours or etcd's tool, a child process that has ended when `run()` returns) shares the
    cores with the servers: its CPU per operation is recorded too."""
    before, host = usage(pids), hoststats.cpu_times()
    gen_before = children_cpu()
    r = run()
    after = usage(pids)
    gen = children_cpu() - gen_before
    r["cpu_steal_pct"] = hoststats.steal_pct(host, hoststats.cpu_times())
    if r.get("operations"):
        r["server_cpu_us_per_op"] = round((after[0] - before[0]) / r["operations"] * 1e6)
        r["server_disk_bytes_per_op"] = round((after[1] - before[1]) / r["operations"])
        r["load_generator_cpu_us_per_op"] = round(gen / r["operations"] * 1e6)
    return r


def children_cpu():
    """CPU seconds (user + system) of this script's child processes that have ended."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def node_metrics():
    """The storage nodes' /metrics texts (the nodes that answer)."""
    texts = []
    for i in range(3):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{SS_METRICS + i}/metrics", timeout=5) as r:
                texts.append(r.read().decode())
        except OSError:
            pass
    return texts


def with_phases(run):
    """Runs `run()` (a ShardedStore step) and adds `server_phases`: the nodes' per-phase write
    latency during the step (their histograms, scraped before and after, differenced)."""
    before = phase_summary.parse_texts(node_metrics())
    r = run()
    after = phase_summary.parse_texts(node_metrics())
    r["server_phases"] = phase_summary.rows(phase_summary.difference(after, before))
    return r


def ss_bench(endpoint, extra):
    """Run our load generator; returns its JSON runs."""
    stop = [] if "--ops" in extra else ["--duration", f"{DURATION}s"]
    args = [os.path.join(BIN, "shardedstore"), "--endpoint", endpoint, "bench", "--json",
            "--keys", str(KEYS), "--value-size", str(VALUE)] + stop + extra
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["runs"]


def summary(run):
    ops = {o["op"]: o for o in run["operations"] if o["count"] > 0}
    workload = "write-only" if run["read_ratio"] == 0 else run["workload"]
    return {
        "target": run["target"], "workload": workload, "clients": run["clients"],
        "distribution": run["distribution"], "ops_per_sec": round(run["ops_per_sec"]),
        "errors": sum(run["errors"].values()), "target_rate": run.get("target_rate"),
        "operations": sum(o["count"] for o in ops.values()),
        "latency_us": {op: {k: o[k] for k in ("p50_us", "p99_us", "p999_us")} for op, o in ops.items()},
    }


def with_timeline(run):
    """summary() of a run made with --timeline, plus how its tail is spread over time: the
    intervals whose own p99 is over the 10 ms target, and the worst interval's p99 (a tail
    made of periodic stalls shows as a few bad intervals, an even one as many)."""
    out = summary(run)
    iv = [i for i in run.get("timeline", []) if i["ops"] > 0]
    if iv:
        out["timeline"] = {
            "interval_ms": TIMELINE_MS, "intervals": len(iv),
            "intervals_p99_over_10ms": sum(i["p99_us"] > 10_000 for i in iv),
            "worst_interval_p99_us": max(i["p99_us"] for i in iv),
            "median_interval_p99_us": sorted(i["p99_us"] for i in iv)[len(iv) // 2],
        }
    return out


def etcd_tool(args):
    """Run etcd's own benchmark tool; parse Requests/sec and the latency distribution."""
    eps = ",".join(f"127.0.0.1:{p}" for p in ETCD_CLIENT)
    out = subprocess.run([ETCD_BENCH, "--endpoints", eps] + args, check=True,
                         capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = {}
    for q, key in (("50", "p50_us"), ("99", "p99_us"), ("99.9", "p999_us")):
        m = re.search(rf"\s{re.escape(q)}% in ([\d.]+) secs", out)
        pct[key] = round(float(m.group(1)) * 1e6) if m else None
    return {"ops_per_sec": round(rps), "latency_us": pct}


def etcd_total(clients):
    # etcd's tool runs a fixed number of requests: size it to roughly BENCH_DURATION seconds
    # at the rates seen here, and at least 50 per client.
    return max(int(DURATION) * 3000, clients * 50)


def main():
    for tool in (ETCD, ETCD_BENCH):
        if shutil.which(tool) is None and not os.path.exists(tool):
            raise SystemExit(f"{tool} not found (hack/bench.sh sets ETCD_BIN and ETCD_BENCHMARK_BIN)")
    work = tempfile.mkdtemp(prefix="shardedstore-bench-etcd.")
    logs = open(os.path.join(work, "processes.log"), "w")
    result = {
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                    "load_average_at_start": os.getloadavg()},
        # BENCH_COMMIT: the commit the binaries were built from, when it is not HEAD.
        "commit": os.environ.get("BENCH_COMMIT") or subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "params": {"duration_s": int(DURATION), "keys": KEYS, "value_bytes": VALUE,
                   "clients": CLIENTS, "ycsb_clients": YCSB_CLIENTS},
    }
    host = hoststats.cpu_times()
    try:
        log("== limits: data disk")
        result["disk"] = json.loads(subprocess.run(
            [sys.executable, os.path.join(ROOT, "hack", "disk_limits.py"), os.path.join(work, "disk")],
            check=True, capture_output=True, text=True).stdout)
        log(json.dumps(result["disk"]))

        log("== limits: null store (HTTP stack only) under the same load generator")
        start([os.path.join(BIN, "shardedstore"), "echo-server", "--listen", ECHO], logs)
        wait_until("echo server", lambda: probe(f"http://{ECHO}/v1/map"))
        result["echo"] = [dict(summary(r), target="null store (echo)") for c in (16, 256) for r in
                          ss_bench(ECHO, ["--read-ratio", "0", "--uniform", "--no-preload", "--clients", str(c)])]
        log(json.dumps(result["echo"]))

        log("== etcd: 3 members")
        cluster = ",".join(f"m{i}=http://127.0.0.1:{ETCD_PEER[i]}" for i in range(3))
        for i in range(3):
            start([ETCD, "--name", f"m{i}", "--data-dir", os.path.join(work, f"etcd-{i}"),
                   "--listen-client-urls", f"http://127.0.0.1:{ETCD_CLIENT[i]}",
                   "--advertise-client-urls", f"http://127.0.0.1:{ETCD_CLIENT[i]}",
                   "--listen-peer-urls", f"http://127.0.0.1:{ETCD_PEER[i]}",
                   "--initial-advertise-peer-urls", f"http://127.0.0.1:{ETCD_PEER[i]}",
                   "--initial-cluster", cluster, "--initial-cluster-state", "new",
                   "--quota-backend-bytes", str(8 << 30), "--log-level", "warn"], logs)
        wait_until("etcd", lambda: all(probe(f"http://127.0.0.1:{p}/health") for p in ETCD_CLIENT))

        log("== ShardedStore: local mode, 3 nodes, RF 3")
        start([os.path.join(BIN, "shardedstore-operator"), "local", "--nodes", "3",
               "--replication-factor", "3", "--partitions", "64", "--port", str(SS_PORT),
               "--peer-port", str(SS_PEER), "--metrics-port", str(SS_METRICS),
               "--control-port", str(SS_CONTROL),
               "--node-binary", os.path.join(BIN, "shardedstore-node"),
               "--data-dir", os.path.join(work, "store")], logs)
        ss = ",".join(f"127.0.0.1:{SS_PORT + i}" for i in range(3))
        wait_until("ShardedStore", lambda: healthy(ss, 64))
        etcd_eps = ",".join(f"127.0.0.1:{p}" for p in ETCD_CLIENT)

        log("== preload 100k keys into both (our load generator)")
        result["preload"] = {}
        for name, extra in (("shardedstore", []), ("etcd (json gateway)", ["--peers-only", "--compare-etcd", etcd_eps])):
            runs = ss_bench(ss, ["--read-ratio", "0", "--uniform", "--clients", "64", "--ops", "1"] + extra)
            result["preload"][name] = runs[0]["preload"]
            log(f"{name}: {runs[0]['preload']['ops_per_sec']:.0f} writes/s")

        log("== write-only sweep")
        # One target at a time, so each step's server CPU and disk writes are its own.
        ss_pids, etcd_pids = server_pids(os.path.join(work, "store")), server_pids(os.path.join(work, "etcd-"))
        result["writes"] = []
        for c in CLIENTS:
            sweep = ["--read-ratio", "0", "--uniform", "--no-preload", "--clients", str(c)]
            result["writes"].append(with_phases(lambda: measured(ss_pids, lambda: summary(ss_bench(ss, sweep)[0]))))
            result["writes"].append(measured(etcd_pids, lambda: summary(ss_bench(ss, sweep + [
                "--peers-only", "--compare-etcd", etcd_eps])[-1])))
            total = etcd_total(c)

            def native_put():
                r = etcd_tool(["--clients", str(c), "--conns", str(min(c, 64)), "put",
                               "--total", str(total), "--key-size", "16", "--val-size", str(VALUE),
                               "--key-space-size", str(KEYS)])
                r.update({"target": "etcd (own gRPC tool)", "workload": "write-only", "clients": c,
                          "distribution": "uniform", "operations": total})
                return r
            result["writes"].append(measured(etcd_pids, native_put))
            log(json.dumps(result["writes"][-3:]))

        log("== YCSB A and B")
        result["ycsb"] = []
        for w in ("ycsb-a", "ycsb-b"):
            for dist in ("--uniform", "--zipfian"):
                host_before = hoststats.cpu_times()
                runs = ss_bench(ss, ["--workload", w, dist, "--no-preload", "--clients", str(YCSB_CLIENTS),
                                     "--compare-etcd", etcd_eps])
                # Both targets ran one after the other in this invocation: the steal is of both.
                stolen = hoststats.steal_pct(host_before, hoststats.cpu_times())
                for r in runs:
                    result["ycsb"].append(dict(summary(r), cpu_steal_pct=stolen))
                log(json.dumps(result["ycsb"][-2:]))

        log("== linearizable reads")
        result["reads"] = [measured(ss_pids, lambda: summary(ss_bench(ss, [
            "--workload", "ycsb-c", "--uniform", "--no-preload", "--clients", str(YCSB_CLIENTS)])[0]))]

        def native_read():
            total = etcd_total(YCSB_CLIENTS) * 3
            r = etcd_tool(["--clients", str(YCSB_CLIENTS), "--conns", "64", "range", "key-0",
                           "--consistency", "l", "--total", str(total)])
            r.update({"target": "etcd (own gRPC tool)", "workload": "linearizable point read",
                      "clients": YCSB_CLIENTS, "operations": total})
            return r
        result["reads"].append(measured(etcd_pids, native_read))
        log(json.dumps(result["reads"]))

        ss_peak = max((w["ops_per_sec"] for w in result["writes"] if w["target"] == "shardedstore"), default=0)
        if ss_peak:
            log(f"== open loop: ShardedStore writes at half of its peak ({ss_peak // 2}/s)")
            result["open_loop"] = [with_phases(lambda: measured(ss_pids, lambda: with_timeline(ss_bench(ss, [
                "--read-ratio", "0", "--uniform", "--no-preload", "--clients", "256",
                "--rate", str(ss_peak // 2), "--timeline", f"{TIMELINE_MS}ms"])[0])))]
            log(json.dumps(result["open_loop"]))

        etcd_peak = max((w["ops_per_sec"] for w in result["writes"] if w["target"].startswith("etcd")), default=0)
        result["peak_writes_per_sec"] = {"shardedstore": ss_peak, "etcd": etcd_peak,
                                         "ratio": round(ss_peak / etcd_peak, 2) if etcd_peak else None}
        log(f"== peak durable writes/s: ShardedStore {ss_peak}, etcd {etcd_peak}, "
            f"ratio {result['peak_writes_per_sec']['ratio']}")
    finally:
        stop_all()
        logs.close()
        shutil.rmtree(work, ignore_errors=True)
    result["machine"]["load_average_at_end"] = os.getloadavg()
    result["machine"]["cpu_steal_pct_whole_run"] = hoststats.steal_pct(host, hoststats.cpu_times())
    # The failover and catch-up section comes from hack/bench_failover.py, with its own commit
    # and date: a run of the etcd comparison alone keeps the one already in the file.
    try:
        with open(OUT) as f:
            previous = json.load(f).get("failover_and_catch_up")
    except (OSError, ValueError):
        previous = None
    if previous is not None:
        result["failover_and_catch_up"] = previous
    with open(OUT, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print_table(result)


def probe(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def healthy(endpoints, partitions):
    r = subprocess.run([os.path.join(BIN, "shardedstore"), "--endpoint", endpoints, "status"],
                       capture_output=True, text=True)
    return r.returncode == 0 and f"{partitions} healthy" in r.stdout


def print_table(result):
    print(f"\nShardedStore vs etcd, commit {result['commit']}, {result['date']}, "
          f"{result['machine']['cpus']} cores, load at start {result['machine']['load_average_at_start'][0]:.1f}, "
          f"CPU stolen by the host over the run {result['machine'].get('cpu_steal_pct_whole_run')} %")
    d = result.get("disk", {})
    if d:
        print(f"disk: {d['append_fdatasync_4k']['ops_per_sec']:.0f} append+fdatasync/s, "
              f"{d['sequential_write']['mib_per_sec']:.0f} MiB/s sequential")
    print(f"{'section':<10} {'target':<24} {'workload':<12} {'dist':<8} {'clients':>7} {'ops/s':>8} "
          f"{'p50 µs':>8} {'p99 µs':>8} {'p99.9 µs':>9} {'srv CPU µs/op':>13} {'gen CPU µs/op':>13} "
          f"{'srv disk B/op':>13} {'steal %':>7}")
    for section in ("echo", "writes", "ycsb", "reads", "open_loop"):
        for r in result.get(section, []):
            lats = r["latency_us"]
            # Native etcd figures are one distribution; ours are per operation (updates first).
            lat = lats if "p50_us" in lats else (lats.get("update") or lats.get("read") or {})
            print(f"{section:<10} {r['target']:<24} {r['workload']:<12} {str(r.get('distribution', '')):<8} "
                  f"{r['clients']:>7} {r['ops_per_sec']:>8} {str(lat.get('p50_us')):>8} "
                  f"{str(lat.get('p99_us')):>8} {str(lat.get('p999_us')):>9} "
                  f"{str(r.get('server_cpu_us_per_op', '')):>13} "
                  f"{str(r.get('load_generator_cpu_us_per_op', '')):>13} {str(r.get('server_disk_bytes_per_op', '')):>13} "
                  f"{str(r.get('cpu_steal_pct', '')):>7}")
    p = result.get("peak_writes_per_sec")
    if p:
        print(f"peak durable writes/s: ShardedStore {p['shardedstore']}, etcd {p['etcd']}, ratio {p['ratio']}")
    for r in result.get("open_loop", []):
        t = r.get("timeline")
        if t:
            print(f"\nopen loop by {t['interval_ms']} ms of send time: {t['intervals_p99_over_10ms']} of "
                  f"{t['intervals']} intervals with a p99 over 10 ms; median interval p99 "
                  f"{t['median_interval_p99_us'] / 1000:.1f} ms, worst {t['worst_interval_p99_us'] / 1000:.1f} ms")
        if r.get("server_phases"):
            print(f"\nShardedStore's write phases on the nodes during the open loop ({r['ops_per_sec']} writes/s):")
            print(phase_summary.table(r["server_phases"]))


if __name__ == "__main__":
    main()
