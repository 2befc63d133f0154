# Settings and steps of the local single-node cluster (cluster-up.sh,
# cluster-down.sh, images.sh, smoke-test.sh). Sourced, never executed.
# shellcheck shell=bash disable=SC2034 # settings used by the scripts that source this
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Where the kubeconfig, logs, pid files and generated configs live.
CLUSTER_DIR="${SHARDEDSTORE_CLUSTER_DIR:-/tmp/shardedstore-cluster}"
CP_DIR="$CLUSTER_DIR/control-plane"
# Persistent-ish state (containerd images and snapshots, kubelet, volumes) and
# runtime state (containerd socket); both removed by cluster-down.sh.
STATE_DIR="${SHARDEDSTORE_CLUSTER_STATE:-/var/lib/shardedstore-cluster}"
RUN_DIR=/run/shardedstore-cluster
VOLUME_DIR="$STATE_DIR/volumes"
KUBELET_DIR="$STATE_DIR/kubelet"
CONTAINERD_SOCK="$RUN_DIR/containerd.sock"
# The node's address: an alias on lo, so the apiserver, kubelet and NodePorts are
# reachable from the host and from pods, and nothing depends on eth0.
NODE_IP="${SHARDEDSTORE_NODE_IP:-10.250.0.1}"
NODE_NAME="${SHARDEDSTORE_NODE_NAME:-shardedstore-local}"
NODE_ZONE=zone-a
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
CNI_BRIDGE=sst0
GUARD_TAG=shardedstore-guard-sst0
CNI_NETWORK=shardedstore
STORAGE_CLASS=standard
# The sandbox image name containerd asks for by default; images.sh builds it locally.
PAUSE_IMAGE=registry.k8s.io/pause:3.10

ctr_() { ctr --address "$CONTAINERD_SOCK" "$@"; }

# Installs what Debian provides, once. apt-get update runs only when a package is missing.
install_host_packages() {
    local need=() cmd pkg
    for pair in containerd:containerd runc:runc ctr:containerd iptables:iptables \
        conntrack:conntrack openssl:openssl curl:curl buildah:buildah \
        busybox:busybox-static gcc:gcc ip:iproute2; do
        cmd="${pair%%:*}"
        pkg="${pair#*:}"
        command -v "$cmd" >/dev/null || need+=("$pkg")
    done
    [[ -x /usr/lib/cni/bridge ]] || need+=(containernetworking-plugins)
    # busybox-static provides /bin/busybox; the dynamic busybox would not do.
    [[ -f /bin/busybox ]] && ! file_is_static /bin/busybox && need+=(busybox-static)
    if ((${#need[@]})); then
        log "installing Debian packages: ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
}

file_is_static() { ! LC_ALL=C ldd "$1" >/dev/null 2>&1; }

prepare_host_network() {
    sysctl -qw net.ipv4.ip_forward=1
    # br_netfilter: bridged pod traffic must pass through kube-proxy's rules.
    [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || modprobe br_netfilter 2>/dev/null || true
    [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] &&
        sysctl -qw net.bridge.bridge-nf-call-iptables=1
    [[ "$(ip addr show dev lo)" == *" $NODE_IP/32 "* ]] || ip addr add "$NODE_IP/32" dev lo
    # Keep pod traffic on this machine: pods may talk to each other, to Services and
    # to the host, never forward out of the host.
    iptables -C FORWARD -s "$POD_CIDR" ! -o "$CNI_BRIDGE" -j DROP 2>/dev/null ||
        iptables -I FORWARD 1 -s "$POD_CIDR" ! -o "$CNI_BRIDGE" -j DROP
    guard_add "$GUARD_TAG" "$CNI_BRIDGE" "$POD_CIDR" "$SERVICE_CIDR" "$NODE_IP/32"
}

start_containerd() {
    mkdir -p "$RUN_DIR" "$STATE_DIR/containerd"
    cat >"$CLUSTER_DIR/containerd.toml" <<EOF
version = 2
root = "$STATE_DIR/containerd"
state = "$RUN_DIR/containerd"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # This VM refuses negative oom_score_adj even to root (no CAP_SYS_RESOURCE):
  # clamp the sandbox's -998 and Guaranteed pods' -997 to containerd's own value.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CLUSTER_DIR/cni"
EOF
    # There is no registry: every image is imported by images.sh. A pull of a missing
    # image goes to a dead proxy on loopback and fails at once ("proxyconnect ...
    # connection refused") instead of reaching for a registry off this machine.
    start_daemon containerd "$CLUSTER_DIR" env HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 \
        NO_PROXY= no_proxy= containerd --config "$CLUSTER_DIR/containerd.toml"
    wait_for 30 "containerd at $CONTAINERD_SOCK" ctr_ version
}

write_cni_config() {
    mkdir -p "$CLUSTER_DIR/cni"
    cat >"$CLUSTER_DIR/cni/10-shardedstore.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$STATE_DIR/cni-ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
EOF
}

write_kubelet_config() {
    local certs="$1"
    # No cluster DNS (no CoreDNS image here; ShardedStore routes by pod IP) and no
    # host resolver either: pod traffic never leaves the machine, so a lookup
    # fails at once instead of timing out.
    printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' >"$CLUSTER_DIR/pod-resolv.conf"
    cat >"$CLUSTER_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $certs/kubelet-serving.crt
tlsPrivateKeyFile: $certs/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $certs/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
resolvConf: $CLUSTER_DIR/pod-resolv.conf
podCIDR: $POD_CIDR
maxPods: 110
serializeImagePulls: false
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
rotateCertificates: false
serverTLSBootstrap: false
EOF
}

write_kube_proxy_config() {
    cat >"$CLUSTER_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $CLUSTER_DIR/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
clusterCIDR: $POD_CIDR
mode: iptables
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
conntrack:
  maxPerCore: 0
EOF
}

# cluster_ready — the kubeconfig answers and the node is Ready.
cluster_ready() {
    [[ -f "$CLUSTER_DIR/kubeconfig" && -f "$CP_DIR/bin-dir" ]] || return 1
    pid_alive "$CLUSTER_DIR/pids/kubelet.pid" "$CLUSTER_DIR" || return 1
    [[ "$("$(cat "$CP_DIR/bin-dir")/kubectl" --kubeconfig="$CLUSTER_DIR/kubeconfig" \
        get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' \
        --request-timeout=5s)" == True ]]
}
