#!/usr/bin/env bash
# Stops the local cluster started by hack/cluster-up.sh and deletes its state:
# every container, pod network namespace, mount, iptables rule, volume and
# the control plane. Safe to run any number of times, also after a failed start.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/cluster-lib.sh"

[[ $EUID -eq 0 ]] || die "must run as root"

# Node agents first, so nothing restarts the containers we remove next.
stop_pidfiles 5 "$CLUSTER_DIR" "$CLUSTER_DIR"/pids/{hostpath-provisioner,kube-proxy,kubelet}.pid

# Containers: kill every process in the pods' cgroups (kubelet's cgroupfs driver puts
# them all under kubepods/), then the runc shims, which outlive containerd; a shim
# is ours when its command line names our containerd socket.
for cg in /sys/fs/cgroup/pids/kubepods /sys/fs/cgroup/memory/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d "$cg" ]] || continue
    while read -r pid; do
        kill -KILL "$pid" 2>/dev/null || true
    done < <(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null)
done
for p in /proc/[0-9]*; do
    args="$({ tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null || true)"
    [[ "$args" == *containerd-shim*"-address $CONTAINERD_SOCK"* ]] && kill -KILL "${p#/proc/}" 2>/dev/null || true
done
stop_pidfile "$CLUSTER_DIR/pids/containerd.pid" "$CLUSTER_DIR" 5

# Pod sandboxes' network namespaces and the bridge.
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^cni-' || true); do
    ip netns delete "$ns" 2>/dev/null || true
done
ip link show "$CNI_BRIDGE" >/dev/null 2>&1 && ip link delete "$CNI_BRIDGE" || true

# iptables: kube-proxy's own cleanup, then what kubelet (KUBE-FIREWALL, canaries)
# and the CNI plugins (CNI-*) left, in IPv4 and IPv6, and our FORWARD guard.
bin_dir="$(cat "$CP_DIR/bin-dir" 2>/dev/null || true)"
if [[ -n "$bin_dir" && -x "$bin_dir/kube-proxy" ]]; then
    "$bin_dir/kube-proxy" --cleanup >/dev/null 2>&1 || true
fi
for ipt in iptables ip6tables; do
    for table in filter nat mangle; do
        { "$ipt" -t "$table" -S 2>/dev/null | grep -E '^-A .* -j (KUBE|CNI)-' || true; } | while read -r rule; do
            # shellcheck disable=SC2086 # the rule is iptables words
            eval "$ipt -t $table ${rule/-A/-D}" 2>/dev/null || true
        done
        for chain in $("$ipt" -t "$table" -S 2>/dev/null | awk '/^-N (KUBE|CNI)-/ {print $2}'); do
            "$ipt" -t "$table" -F "$chain" 2>/dev/null || true
        done
        for chain in $("$ipt" -t "$table" -S 2>/dev/null | awk '/^-N (KUBE|CNI)-/ {print $2}'); do
            "$ipt" -t "$table" -X "$chain" 2>/dev/null || true
        done
    done
done
while iptables -D FORWARD -s "$POD_CIDR" ! -o "$CNI_BRIDGE" -j DROP 2>/dev/null; do :; done

# Mounts below our state directories (volumes, secrets, rootfs, shm), deepest first.
for root in "$KUBELET_DIR" "$RUN_DIR" "$STATE_DIR"; do
    awk -v r="$root/" 'index($2, r) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
done

SHARDEDSTORE_K8S_BIN="${bin_dir:-/nonexistent}" "$HACK_DIR/control-plane.sh" down "$CP_DIR"
# The pods' cgroups, deepest first (they are empty now).
for cg in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d "$cg" ]] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
done
[[ "$(ip addr show dev lo)" == *" $NODE_IP/32 "* ]] && ip addr del "$NODE_IP/32" dev lo || true
rm -rf "$STATE_DIR" "$RUN_DIR" "$CLUSTER_DIR"
# The one path kubelet uses whatever its --root-dir: its device-plugin socket.
rm -f /var/lib/kubelet/device-plugins/kubelet.sock
rmdir /var/lib/kubelet/device-plugins 2>/dev/null || true
guard_remove "$GUARD_TAG"
log "cluster down"
