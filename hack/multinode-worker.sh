#!/usr/bin/env bash
# One worker of the multi-node cluster (hack/multinode-up.sh). Runs as root.
#
#   hack/multinode-worker.sh poweroff I   the worker dies at once, as in a power cut:
#                                         its cgroup tree (kubelet, containerd, kube-proxy,
#                                         provisioner, shims, every container) is frozen and
#                                         SIGKILLed, and its link to the bridge goes down,
#                                         so its pod and node IPs stop answering
#   hack/multinode-worker.sh start I      brings it back (link up, daemons restarted on the
#                                         same state: images, volumes and pods survive)
#   hack/multinode-worker.sh usage        memory (RSS) and CPU seconds used so far of the
#                                         control plane and of every worker's cgroup tree
#   hack/multinode-worker.sh exec I CMD.. runs CMD inside worker I (its cgroup
#                                         <root>/system, network and UTS namespaces); the
#                                         scripts start every worker daemon this way
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/multinode-lib.sh"

usage() {
    echo "usage: $0 poweroff|start I | usage | exec I CMD..." >&2
    exit 2
}
[[ $EUID -eq 0 ]] || die "must run as root"
[[ $# -ge 1 ]] || usage
cmd="$1"
shift

worker_arg() {
    [[ "${1:-}" =~ ^[1-9]$ ]] || die "worker number 1-$MN_MAX_WORKERS expected, got '${1:-}'"
    [[ -e "$(mn_wdir "$1")/kubelet.yaml" ]] || die "worker $1 does not exist (run hack/multinode-up.sh)"
}

exec_in() {
    local i="$1" m
    shift
    # Join the worker's cgroup in every hierarchy, then its namespaces, then become CMD.
    while read -r m; do
        [[ -f "$m/$(mn_cgroup "$i")/system/cgroup.procs" ]] &&
            echo $$ >"$m/$(mn_cgroup "$i")/system/cgroup.procs"
    done < <(mn_cgroup_mounts)
    exec nsenter --net="/run/netns/$(mn_netns "$i")" --uts="$(mn_wrun "$i")/uts" -- "$@"
}

poweroff() {
    local i="$1"
    mn_kill_worker_processes "$i"
    rm -f "$(mn_wdir "$i")"/pids/*.pid
    ip link set "$(mn_netns "$i")" down
    log "worker $i ($(mn_node_name "$i")) powered off"
}

start() {
    local i="$1"
    mn_start_worker "$i" "$(cat "$MN_CP_DIR/bin-dir")"
    wait_for 120 "node $(mn_node_name "$i") Ready" mn_worker_ready "$i"
    log "worker $i ($(mn_node_name "$i")) up"
}

# CPU seconds (user + system) of a process from /proc/PID/stat.
proc_cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

report_usage() {
    local hz c pid rss ticks i mem cpu mroot croot
    hz="$(getconf CLK_TCK)"
    for c in etcd kube-apiserver kube-controller-manager kube-scheduler; do
        pid="$(cat "$MN_CP_DIR/pids/$c.pid" 2>/dev/null || true)"
        [[ -n "$pid" && -d "/proc/$pid" ]] || continue
        rss="$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")"
        ticks="$(proc_cpu_ticks "$pid")"
        printf 'control-plane %-24s rss_mib=%d cpu_s=%.1f\n' "$c" $((rss / 1024)) "$(awk -v t="$ticks" -v h="$hz" 'BEGIN {print t / h}')"
    done
    mroot="$(awk '$3 == "cgroup" && $4 ~ /(^|,)memory(,|$)/ {print $2}' /proc/self/mounts | head -n1)"
    croot="$(awk '$3 == "cgroup" && $4 ~ /(^|,)cpuacct(,|$)/ {print $2}' /proc/self/mounts | head -n1)"
    for i in $(mn_existing_workers); do
        # total_rss + total_mapped_file: what the processes hold, without the page cache.
        mem="$(awk '$1 == "total_rss" {r=$2} $1 == "total_mapped_file" {m=$2} END {print int((r + m) / 1048576)}' \
            "$mroot/$(mn_cgroup "$i")/memory.stat" 2>/dev/null || echo 0)"
        cpu="$(cat "$croot/$(mn_cgroup "$i")/cpuacct.usage" 2>/dev/null || echo 0)"
        printf 'worker %d %-14s rss_mib=%d cpu_s=%.1f\n' "$i" "$(mn_node_name "$i")" "$mem" "$(awk -v c="$cpu" 'BEGIN {print c / 1e9}')"
    done
}

case "$cmd" in
exec)
    worker_arg "${1:-}"
    [[ $# -ge 2 ]] || usage
    exec_in "$@"
    ;;
poweroff)
    worker_arg "${1:-}"
    poweroff "$1"
    ;;
start)
    worker_arg "${1:-}"
    start "$1"
    ;;
usage) report_usage ;;
*) usage ;;
esac
