#!/usr/bin/env bash
# Stops the multi-node cluster started by hack/multinode-up.sh and deletes its state:
# every worker's processes (its whole cgroup tree: daemons, shims, containers), mounts,
# cgroups, network and UTS namespaces (with the iptables rules inside them), links,
# routes, the bridge, the host FORWARD guard and the control plane. Touches nothing of
# the single-node cluster. Safe to run any number of times, also after a failed start.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/multinode-lib.sh"

[[ $EUID -eq 0 ]] || die "must run as root"

workers="$(mn_existing_workers)"
for i in $workers; do
    stop_pidfiles 5 "$(mn_wdir "$i")" "$(mn_wdir "$i")"/pids/{hostpath-provisioner,kube-proxy,kubelet}.pid
    mn_kill_worker_processes "$i"
    stop_pidfile "$(mn_wdir "$i")/pids/containerd.pid" "$(mn_wdir "$i")" 5
done

# Mounts below our state directories (volumes, secrets, rootfs, shm, pod network
# namespaces, the UTS namespace file), deepest first.
for root in "$MN_STATE" "$MN_RUN"; do
    awk -v r="$root/" 'index($2, r) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
done

for i in $workers; do
    ip netns delete "$(mn_netns "$i")" 2>/dev/null || true
    ip link delete "$(mn_netns "$i")" 2>/dev/null || true
    ip route delete "$(mn_pod_cidr "$i")" 2>/dev/null || true
    # The worker's cgroup tree, deepest first (empty now).
    while read -r m; do
        [[ -d "$m/$(mn_cgroup "$i")" ]] && find "$m/$(mn_cgroup "$i")" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done < <(mn_cgroup_mounts)
done

bin_dir="$(cat "$MN_CP_DIR/bin-dir" 2>/dev/null || true)"
SHARDEDSTORE_K8S_BIN="${bin_dir:-/nonexistent}" "$HACK_DIR/control-plane.sh" down "$MN_CP_DIR"

ip route delete "$MN_SERVICE_CIDR" 2>/dev/null || true
ip link show "$MN_BRIDGE" >/dev/null 2>&1 && ip link delete "$MN_BRIDGE" || true
while iptables -D FORWARD -s "$MN_CLUSTER_CIDR" ! -o "$MN_BRIDGE" -j DROP 2>/dev/null; do :; done

left=""
for i in $workers; do
    [[ -z "$(mn_cgroup_pids "$i")" ]] || left+=" worker $i: $(mn_cgroup_pids "$i" | tr '\n' ' ')"
done
rm -rf "$MN_STATE" "$MN_RUN" "$MN_DIR"
[[ -z "$left" ]] || die "processes survived:$left"
guard_remove "$MN_GUARD_TAG"
log "multi-node cluster down"
