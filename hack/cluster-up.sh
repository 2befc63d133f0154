#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, without Docker:
#   control plane (hack/control-plane.sh, with the scheduler)
#   + containerd and runc (Debian) + CNI bridge/host-local/loopback/portmap (Debian)
#   + kubelet (cgroupfs driver) + kube-proxy (iptables mode)
#   + a hostPath volume provisioner and a default StorageClass.
# The node is labelled topology.kubernetes.io/zone=zone-a. Runs as root.
#
#   hack/cluster-up.sh      start it (a no-op when it is already up)
#   hack/cluster-down.sh    stop it and delete its state
#
# Writes ${SHARDEDSTORE_CLUSTER_DIR:-/tmp/shardedstore-cluster}/kubeconfig.
# Pods, Services and the node use their own ranges and a loopback alias address;
# nothing is routed off this machine (see docs/local-kubernetes.md).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/cluster-lib.sh"

[[ $EUID -eq 0 ]] || die "must run as root (containerd, kubelet and iptables need it)"

if cluster_ready 2>/dev/null; then
    log "already up: $CLUSTER_DIR/kubeconfig"
    exit 0
fi
start=$SECONDS
"$HACK_DIR/cluster-down.sh" >/dev/null 2>&1 || true
trap 'rc=$?; if ((rc != 0)); then log "cluster-up failed (logs in $CLUSTER_DIR/logs)"; dump_logs "$CLUSTER_DIR"; fi' EXIT

install_host_packages
bin="$(k8s_bin_dir)"
prepare_host_network
mkdir -p "$CLUSTER_DIR"/{logs,pids} "$STATE_DIR"

# Control plane (etcd, apiserver, controller-manager, scheduler) on the node address.
SHARDEDSTORE_CP_ADDRESS="$NODE_IP" SHARDEDSTORE_CP_PORT=6443 SHARDEDSTORE_CP_SCHEDULER=1 \
    SHARDEDSTORE_SERVICE_CIDR="$SERVICE_CIDR" SHARDEDSTORE_K8S_BIN="$bin" \
    "$HACK_DIR/control-plane.sh" up "$CP_DIR"
cp "$CP_DIR/kubeconfig" "$CLUSTER_DIR/kubeconfig"
certs="$CP_DIR/certs"
issue_cert "$certs" kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
issue_cert "$certs" kubelet-serving "/CN=$NODE_NAME" serverAuth "IP:$NODE_IP,IP:127.0.0.1,DNS:$NODE_NAME,DNS:localhost"
issue_cert "$certs" kube-proxy "/CN=system:kube-proxy" clientAuth
write_kubeconfig "$CLUSTER_DIR/kubelet.kubeconfig" "https://$NODE_IP:6443" "$certs" kubelet
write_kubeconfig "$CLUSTER_DIR/kube-proxy.kubeconfig" "https://$NODE_IP:6443" "$certs" kube-proxy

write_cni_config
start_containerd
"$HACK_DIR/images.sh" pause

write_kubelet_config "$certs"
mkdir -p "$KUBELET_DIR"
start_daemon kubelet "$CLUSTER_DIR" "$bin/kubelet" \
    --root-dir="$KUBELET_DIR" \
    --config="$CLUSTER_DIR/kubelet.yaml" \
    --kubeconfig="$CLUSTER_DIR/kubelet.kubeconfig" \
    --hostname-override="$NODE_NAME" \
    --node-ip="$NODE_IP" \
    --node-labels="topology.kubernetes.io/zone=$NODE_ZONE" \
    --v=1

write_kube_proxy_config
start_daemon kube-proxy "$CLUSTER_DIR" "$bin/kube-proxy" --config="$CLUSTER_DIR/kube-proxy.yaml" --v=1

start_daemon hostpath-provisioner "$CLUSTER_DIR" "$bin/hostpath-provisioner" \
    -kubeconfig="$CLUSTER_DIR/kubeconfig" -node-name="$NODE_NAME" -root="$VOLUME_DIR"

kc() { "$bin/kubectl" --kubeconfig="$CLUSTER_DIR/kubeconfig" "$@"; }
wait_for 120 "node $NODE_NAME Ready" \
    kc wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s
kc apply -f - >/dev/null <<EOF
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
for c in kubelet kube-proxy hostpath-provisioner containerd; do
    pid_alive "$CLUSTER_DIR/pids/$c.pid" "$CLUSTER_DIR" || die "$c exited during start-up"
done
# kube-proxy has programmed the `kubernetes` Service once its chain for it exists.
wait_for 60 "kube-proxy rules for the kubernetes Service" \
    sh -c "iptables -t nat -S KUBE-SERVICES | grep 'default/kubernetes:https' >/dev/null"
trap - EXIT
log "cluster up in $((SECONDS - start))s; node $NODE_NAME ($NODE_IP, zone $NODE_ZONE)"
echo "export KUBECONFIG=$CLUSTER_DIR/kubeconfig"
echo "export PATH=$bin:\$PATH"
