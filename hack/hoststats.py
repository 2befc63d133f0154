"""CPU time the host took from this VM (steal), for the benchmarks: a guest's figures move
with its neighbours' load, and steal says by how much the host was busy during a run.

    before = hoststats.cpu_times(); ...; hoststats.steal_pct(before, hoststats.cpu_times())
"""


def cpu_times():
    """(steal, total) jiffies of all CPUs so far, from the first line of /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return (0, 0)
    # user nice system idle iowait irq softirq steal [guest guest_nice: inside user/nice]
    return (fields[7] if len(fields) > 7 else 0, sum(fields[:8]))


def steal_pct(before, after):
    """Share of CPU time stolen by the host between two `cpu_times()` readings, in %."""
    total = after[1] - before[1]
    return round(100.0 * (after[0] - before[0]) / total, 1) if total > 0 else None
