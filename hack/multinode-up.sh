#!/usr/bin/env bash
# A real multi-node, multi-zone Kubernetes cluster on this machine, without Docker:
#   control plane (hack/control-plane.sh with the scheduler) on the host, listening on
#   the bridge ssmn0 (10.251.0.1:6443)
#   + N workers (default 3), worker I = node mn-worker-I in zone zone-<a|b|c...>:
#     its own network namespace ssmn-wI (node IP 10.251.0.(10+I), pods 10.245.I.0/24),
#     UTS namespace (hostname), cgroup root /shardedstore-mn-wI, containerd (socket
#     /run/shardedstore-multinode/wI/containerd.sock), kubelet, kube-proxy (iptables,
#     in its namespace) and a hostPath volume provisioner for its own volumes.
# Runs as root. Everything is apart from the single-node cluster (hack/cluster-up.sh):
# both can run at once.
#
#   hack/multinode-up.sh [N]   start it (a no-op when it is already up with N workers)
#   hack/multinode-down.sh     stop it and delete its state
#   hack/multinode-images.sh   build the images and load them into every worker
#
# Writes ${SHARDEDSTORE_MN_DIR:-/tmp/shardedstore-multinode}/kubeconfig. See
# docs/local-kubernetes.md ("The multi-node cluster").
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/multinode-lib.sh"

[[ $EUID -eq 0 ]] || die "must run as root (containerd, kubelet, namespaces and iptables need it)"
n="${1:-${SHARDEDSTORE_MN_WORKERS:-3}}"
[[ "$n" =~ ^[1-9]$ ]] || die "number of workers must be 1-$MN_MAX_WORKERS, got '$n'"

all_ready() {
    local i
    [[ -f "$MN_DIR/kubeconfig" && -f "$MN_CP_DIR/bin-dir" && "$(cat "$MN_DIR/workers" 2>/dev/null)" == "$n" ]] || return 1
    for ((i = 1; i <= n; i++)); do
        pid_alive "$(mn_wdir "$i")/pids/kubelet.pid" "$(mn_wdir "$i")" || return 1
        mn_worker_ready "$i" || return 1
    done
}

if all_ready 2>/dev/null; then
    log "already up with $n workers: $MN_DIR/kubeconfig"
    exit 0
fi
start=$SECONDS
"$HACK_DIR/multinode-down.sh" >/dev/null 2>&1 || true
trap 'rc=$?; if ((rc != 0)); then log "multinode-up failed (logs in $MN_DIR and $MN_DIR/w*/logs; hack/multinode-down.sh cleans up)"; dump_logs "$MN_CP_DIR"; for w in "$MN_DIR"/w*; do dump_logs "$w"; done; fi' EXIT

install_host_packages
bin="$(k8s_bin_dir)"
mkdir -p "$MN_DIR" "$MN_STATE" "$MN_RUN"
echo "$n" >"$MN_DIR/workers"
mn_host_network

SHARDEDSTORE_CP_ADDRESS="$MN_GATEWAY" SHARDEDSTORE_CP_PORT="$MN_API_PORT" SHARDEDSTORE_CP_SCHEDULER=1 \
    SHARDEDSTORE_SERVICE_CIDR="$MN_SERVICE_CIDR" SHARDEDSTORE_K8S_BIN="$bin" \
    "$HACK_DIR/control-plane.sh" up "$MN_CP_DIR"
cp "$MN_CP_DIR/kubeconfig" "$MN_DIR/kubeconfig"
certs="$MN_CP_DIR/certs"
issue_cert "$certs" kube-proxy "/CN=system:kube-proxy" clientAuth
write_kubeconfig "$MN_DIR/kube-proxy.kubeconfig" "https://$MN_GATEWAY:$MN_API_PORT" "$certs" kube-proxy

# The sandbox image, imported into each worker's containerd as it starts.
SHARDEDSTORE_IMAGES_OUT="$MN_DIR/images" "$HACK_DIR/images.sh" pause

for ((i = 1; i <= n; i++)); do
    mn_worker_network "$i" "$n"
    mn_worker_certs "$i" "$certs"
    mn_worker_configs "$i" "$certs"
    mn_make_cgroup "$(mn_cgroup "$i")"
    mn_start_worker "$i" "$bin"
done

mn_kubectl apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: $STORAGE_CLASS
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: shardedstore.io/hostpath
reclaimPolicy: Delete
volumeBindingMode: WaitForFirstConsumer
EOF
for ((i = 1; i <= n; i++)); do
    wait_for 120 "node $(mn_node_name "$i") Ready with kube-proxy rules" mn_worker_ready "$i"
    for c in containerd kubelet kube-proxy hostpath-provisioner; do
        pid_alive "$(mn_wdir "$i")/pids/$c.pid" "$(mn_wdir "$i")" || die "$c of worker $i exited during start-up"
    done
done
trap - EXIT
log "cluster up in $((SECONDS - start))s: $n workers ($(for ((i = 1; i <= n; i++)); do printf '%s=%s ' "$(mn_node_name "$i")" "$(mn_zone "$i")"; done))"
echo "export KUBECONFIG=$MN_DIR/kubeconfig"
echo "export PATH=$bin:\$PATH"
