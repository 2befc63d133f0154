#!/usr/bin/env bash
# Stops the local cluster started by hack/cluster-up.sh and deletes its state:
# every container, pod network namespace, mount, iptables rule, volume and
# the control plane. Safe to run any number of times, also after a failed start.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/cluster-lib.sh"

[[ $EUID -eq 0 ]] || die "must run as root"

# Node agents first, so nothing restarts the containers we remove next.
for c in hostpath-provisioner kube-proxy kubelet; do
    stop_pidfile "$CLUSTER_DIR/pids/$c.pid" "$CLUSTER_DIR" 15
done

# Containers: kill every container process and its shim. The runc v2 shim keeps
# running without containerd, so it is found through its own pid files.
task_dir="$RUN_DIR/containerd/io.containerd.runtime.v2.task"
if [[ -d "$task_dir" ]]; then
    for f in "$task_dir"/*/*/init.pid "$task_dir"/*/*/shim.pid; do
        [[ -f "$f" ]] || continue
        kill -KILL "$(cat "$f")" 2>/dev/null || true
    done
fi
stop_pidfile "$CLUSTER_DIR/pids/containerd.pid" "$CLUSTER_DIR" 15

# Pod sandboxes' network namespaces and the bridge.
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^cni-' || true); do
    ip netns delete "$ns" 2>/dev/null || true
done
ip link show "$CNI_BRIDGE" >/dev/null 2>&1 && ip link delete "$CNI_BRIDGE" || true

# iptables: kube-proxy's chains, the CNI plugins' chains, our FORWARD guard.
bin_dir="$(cat "$CP_DIR/bin-dir" 2>/dev/null || true)"
if [[ -n "$bin_dir" && -x "$bin_dir/kube-proxy" ]]; then
    "$bin_dir/kube-proxy" --cleanup >/dev/null 2>&1 || true
fi
for table in nat filter; do
    iptables -t "$table" -S 2>/dev/null | awk '/^-A .* -j CNI-/ {print}' | while read -r rule; do
        # shellcheck disable=SC2086 # the rule is iptables words
        iptables -t "$table" ${rule/-A/-D} 2>/dev/null || true
    done
    for chain in $(iptables -t "$table" -S 2>/dev/null | awk '/^-N CNI-/ {print $2}'); do
        iptables -t "$table" -F "$chain" 2>/dev/null || true
        iptables -t "$table" -X "$chain" 2>/dev/null || true
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
[[ "$(ip addr show dev lo)" == *" $NODE_IP/32 "* ]] && ip addr del "$NODE_IP/32" dev lo || true
rm -rf "$STATE_DIR" "$RUN_DIR" "$CLUSTER_DIR"
log "cluster down"
