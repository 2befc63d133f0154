# Settings and steps of the local multi-node cluster (multinode-up.sh,
# multinode-down.sh, multinode-worker.sh, multinode-images.sh). Sourced, never executed.
#
# One control plane on the host and N workers. Each worker is a kubelet + containerd +
# kube-proxy in its own network namespace (ssmn-wI), UTS namespace (hostname), cgroup
# root (/shardedstore-mn-wI in every cgroup v1 hierarchy, holding the daemons and the
# pods) and state directories; it reaches the others over a bridge in the host
# namespace. Every name, address and path differs from the single-node cluster's
# (cluster-lib.sh), so both can run at once.
# shellcheck shell=bash disable=SC2034 # settings used by the scripts that source this
source "$(dirname "${BASH_SOURCE[0]}")/cluster-lib.sh"

MN_DIR="${SHARDEDSTORE_MN_DIR:-/tmp/shardedstore-multinode}"
MN_CP_DIR="$MN_DIR/control-plane"
MN_STATE="${SHARDEDSTORE_MN_STATE:-/var/lib/shardedstore-multinode}"
MN_RUN=/run/shardedstore-multinode
# The host side: a bridge whose address is the apiserver's and every worker's gateway.
MN_BRIDGE=ssmn0
MN_GUARD_TAG=shardedstore-guard-ssmn0
MN_GATEWAY=10.251.0.1
MN_NODE_NET=10.251.0.0/24
MN_API_PORT=6443
# Worker I: node IP 10.251.0.(10+I), pods 10.245.I.0/24 (routed, host-gw style).
MN_CLUSTER_CIDR=10.245.0.0/16
MN_SERVICE_CIDR=10.97.0.0/16
MN_NETNS_PREFIX=ssmn-w
MN_CGROUP_PREFIX=shardedstore-mn-w
MN_CNI_NETWORK=shardedstore-mn
MN_MAX_WORKERS=9

mn_node_name() { echo "mn-worker-$1"; }
mn_zone() {
    local zones=(a b c d e f g h i)
    echo "zone-${zones[$(($1 - 1))]}"
}
mn_node_ip() { echo "10.251.0.$((10 + $1))"; }
mn_pod_cidr() { echo "10.245.$1.0/24"; }
mn_netns() { echo "$MN_NETNS_PREFIX$1"; }
mn_wdir() { echo "$MN_DIR/w$1"; }
mn_wstate() { echo "$MN_STATE/w$1"; }
mn_wrun() { echo "$MN_RUN/w$1"; }
mn_sock() { echo "$MN_RUN/w$1/containerd.sock"; }
mn_cgroup() { echo "$MN_CGROUP_PREFIX$1"; }
mn_ctr() {
    local i="$1"
    shift
    ctr --address "$(mn_sock "$i")" "$@"
}
mn_kubectl() { "$(cat "$MN_CP_DIR/bin-dir")/kubectl" --kubeconfig="$MN_DIR/kubeconfig" --request-timeout=20s "$@"; }

# The workers that exist in some form (namespace, cgroup, state), for cleanup.
mn_existing_workers() {
    {
        ip netns list 2>/dev/null | awk '{print $1}' | sed -n "s/^$MN_NETNS_PREFIX\([0-9]\)\$/\1/p"
        for d in /sys/fs/cgroup/*/"$MN_CGROUP_PREFIX"[0-9] "$MN_DIR"/w[0-9] "$MN_STATE"/w[0-9] "$MN_RUN"/w[0-9]; do
            if [[ -e "$d" ]]; then echo "${d: -1}"; fi
        done
    } | sort -u
}

# The cgroup v1 hierarchies (cpu, memory, pids, freezer, name=systemd, ...) plus the
# unified one if mounted: a worker's cgroup root exists in all of them.
mn_cgroup_mounts() {
    awk '$3 == "cgroup" || $3 == "cgroup2" {print $2}' /proc/self/mounts
}

# mn_make_cgroup PATH — PATH (relative to each hierarchy) in every hierarchy; cpuset
# needs cpus and mems copied from the parent before a task may join.
mn_make_cgroup() {
    local rel="$1" m parent
    while read -r m; do
        [[ -d "$m/$rel" ]] && continue
        mkdir -p "$m/$rel"
        if [[ -f "$m/$rel/cpuset.cpus" ]]; then
            parent="$(dirname "$m/$rel")"
            cat "$parent/cpuset.cpus" >"$m/$rel/cpuset.cpus"
            cat "$parent/cpuset.mems" >"$m/$rel/cpuset.mems"
        fi
    done < <(mn_cgroup_mounts)
}

# mn_cgroup_pids I — every process in worker I's cgroup tree (daemons, shims, pods).
mn_cgroup_pids() {
    local root
    root="$(awk '$3 == "cgroup" && $4 ~ /(^|,)pids(,|$)/ {print $2}' /proc/self/mounts | head -n1)"
    [[ -n "$root" && -d "$root/$(mn_cgroup "$1")" ]] || return 0
    find "$root/$(mn_cgroup "$1")" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -un
}

# mn_kill_worker_processes I — SIGKILL to everything in worker I's cgroup tree at once
# (frozen first, so nothing forks in between), then the shims of its containerd.
mn_kill_worker_processes() {
    local i="$1" freezer pid p args
    freezer="$(awk '$3 == "cgroup" && $4 ~ /(^|,)freezer(,|$)/ {print $2}' /proc/self/mounts | head -n1)"
    freezer="${freezer:+$freezer/$(mn_cgroup "$i")}"
    [[ -n "$freezer" && -f "$freezer/freezer.state" ]] && echo FROZEN >"$freezer/freezer.state" 2>/dev/null
    for pid in $(mn_cgroup_pids "$i"); do kill -KILL "$pid" 2>/dev/null || true; done
    [[ -n "$freezer" && -f "$freezer/freezer.state" ]] && echo THAWED >"$freezer/freezer.state" 2>/dev/null
    # Shims started before the daemons joined the cgroup (none normally), by socket.
    for p in /proc/[0-9]*; do
        args="$({ tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null || true)"
        [[ "$args" == *containerd-shim*"-address $(mn_sock "$i") "* ]] && kill -KILL "${p#/proc/}" 2>/dev/null || true
    done
    local deadline=$((SECONDS + 10))
    while [[ -n "$(mn_cgroup_pids "$i")" ]] && ((SECONDS < deadline)); do sleep 0.2; done
    [[ -z "$(mn_cgroup_pids "$i")" ]] || log "worker $i: processes left in its cgroup: $(mn_cgroup_pids "$i" | tr '\n' ' ')"
}

# mn_host_network — the bridge every worker hangs off, and the guard that keeps pod
# traffic on this machine.
mn_host_network() {
    sysctl -qw net.ipv4.ip_forward=1
    [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || modprobe br_netfilter 2>/dev/null || true
    if ! ip link show "$MN_BRIDGE" >/dev/null 2>&1; then
        ip link add "$MN_BRIDGE" type bridge
    fi
    [[ "$(ip addr show dev "$MN_BRIDGE")" == *" $MN_GATEWAY/24 "* ]] || ip addr add "$MN_GATEWAY/24" dev "$MN_BRIDGE"
    ip link set "$MN_BRIDGE" up
    # Pods may talk to each other, to Services, to the host; nothing is forwarded out.
    iptables -C FORWARD -s "$MN_CLUSTER_CIDR" ! -o "$MN_BRIDGE" -j DROP 2>/dev/null ||
        iptables -I FORWARD 1 -s "$MN_CLUSTER_CIDR" ! -o "$MN_BRIDGE" -j DROP
    guard_add "$MN_GUARD_TAG" "$MN_BRIDGE" "$MN_CLUSTER_CIDR" "$MN_SERVICE_CIDR" "$MN_GATEWAY/24"
    # The host reaches Services through worker 1's kube-proxy rules (it has no
    # kube-proxy of this cluster itself); the reply comes back the same way because
    # kube-proxy masquerades traffic from outside the cluster CIDR.
    ip route replace "$MN_SERVICE_CIDR" via "$(mn_node_ip 1)" dev "$MN_BRIDGE"
}

# mn_worker_network I N — worker I's namespaces, its link to the bridge, and routes to
# every worker's pod range (host-gw: the workers share one L2 segment).
mn_worker_network() {
    local i="$1" n="$2" ns host_if j run
    ns="$(mn_netns "$i")"
    host_if="$ns"
    run="$(mn_wrun "$i")"
    mkdir -p "$run"
    ip netns list | awk '{print $1}' | grep -qx "$ns" || ip netns add "$ns"
    if [[ ! -s "$run/uts.name" ]]; then
        touch "$run/uts"
        unshare --uts="$run/uts" hostname "$(mn_node_name "$i")"
        mn_node_name "$i" >"$run/uts.name"
    fi
    if ! ip link show "$host_if" >/dev/null 2>&1; then
        ip link add "$host_if" type veth peer name eth0 netns "$ns"
    fi
    ip link set "$host_if" master "$MN_BRIDGE" up
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    ip -n "$ns" addr replace "$(mn_node_ip "$i")/24" dev eth0
    ip -n "$ns" route replace default via "$MN_GATEWAY"
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
    ip netns exec "$ns" sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
    for ((j = 1; j <= n; j++)); do
        ((j == i)) && continue
        ip -n "$ns" route replace "$(mn_pod_cidr "$j")" via "$(mn_node_ip "$j")" dev eth0
    done
    ip route replace "$(mn_pod_cidr "$i")" via "$(mn_node_ip "$i")" dev "$MN_BRIDGE"
}

# mn_worker_configs I CERTS — containerd, CNI, kubelet and kube-proxy configs of worker I.
mn_worker_configs() {
    local i="$1" certs="$2" wdir wstate wrun ip name
    wdir="$(mn_wdir "$i")"
    wstate="$(mn_wstate "$i")"
    wrun="$(mn_wrun "$i")"
    ip="$(mn_node_ip "$i")"
    name="$(mn_node_name "$i")"
    mkdir -p "$wdir"/{cni,logs,pids} "$wstate"/{containerd,kubelet,volumes,pod-logs}
    cat >"$wdir/containerd.toml" <<EOF
version = 2
root = "$wstate/containerd"
state = "$wrun/containerd"
[grpc]
  address = "$(mn_sock "$i")"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  # Pod network namespaces under our state dir, not /run/netns: no other cluster's
  # cleanup (which deletes cni-* there) can touch them.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$wrun/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$wdir/cni"
EOF
    cat >"$wdir/cni/10-$MN_CNI_NETWORK.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$MN_CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$(mn_pod_cidr "$i")"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$wstate/cni-ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
EOF
    printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' >"$wdir/pod-resolv.conf"
    cat >"$wdir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $ip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $certs/kubelet-$i-serving.crt
tlsPrivateKeyFile: $certs/kubelet-$i-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $certs/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$(mn_sock "$i")
cgroupDriver: cgroupfs
cgroupRoot: /$(mn_cgroup "$i")
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
resolvConf: $wdir/pod-resolv.conf
podLogsDir: $wstate/pod-logs
podCIDR: $(mn_pod_cidr "$i")
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
    cat >"$wdir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $MN_DIR/kube-proxy.kubeconfig
hostnameOverride: $name
bindAddress: $ip
clusterCIDR: $MN_CLUSTER_CIDR
mode: iptables
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$ip/32"]
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
}

# mn_worker_certs I CERTS — kubelet client and serving certificates of worker I.
mn_worker_certs() {
    local i="$1" certs="$2" name ip
    name="$(mn_node_name "$i")"
    ip="$(mn_node_ip "$i")"
    mkdir -p "$(mn_wdir "$i")"
    [[ -f "$certs/kubelet-$i.crt" ]] ||
        issue_cert "$certs" "kubelet-$i" "/O=system:nodes/CN=system:node:$name" clientAuth
    [[ -f "$certs/kubelet-$i-serving.crt" ]] ||
        issue_cert "$certs" "kubelet-$i-serving" "/CN=$name" serverAuth "IP:$ip,DNS:$name"
    [[ -f "$(mn_wdir "$i")/kubelet.kubeconfig" ]] ||
        write_kubeconfig "$(mn_wdir "$i")/kubelet.kubeconfig" "https://$MN_GATEWAY:$MN_API_PORT" "$certs" "kubelet-$i"
}

# mn_start_daemon I NAME CMD... — CMD as a daemon of worker I: in its cgroup
# (<root>/system), network and UTS namespaces, logged and pid-tracked in its directory.
mn_start_daemon() {
    local i="$1" name="$2"
    shift 2
    start_daemon "$name" "$(mn_wdir "$i")" bash "$HACK_DIR/multinode-worker.sh" exec "$i" "$@"
}

# mn_start_worker I BIN — containerd, kubelet, kube-proxy and the volume provisioner of
# worker I (each only if not running already). The images stay in containerd's root.
mn_start_worker() {
    local i="$1" bin="$2" wdir
    wdir="$(mn_wdir "$i")"
    mn_make_cgroup "$(mn_cgroup "$i")/system"
    ip link set "$(mn_netns "$i")" up
    if ! pid_alive "$wdir/pids/containerd.pid" "$wdir"; then
        mn_start_daemon "$i" containerd env HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 \
            NO_PROXY= no_proxy= containerd --config "$wdir/containerd.toml"
    fi
    wait_for 30 "containerd of worker $i" mn_ctr "$i" version
    if ! grep -qx "docker.io/$PAUSE_IMAGE\|$PAUSE_IMAGE" <<<"$(mn_ctr "$i" -n k8s.io images ls -q)"; then
        mn_ctr "$i" -n k8s.io images import "$MN_DIR/images/$(echo "$PAUSE_IMAGE" | tr '/:' '__').tar" >/dev/null
    fi
    pid_alive "$wdir/pids/kubelet.pid" "$wdir" ||
        mn_start_daemon "$i" kubelet "$bin/kubelet" \
            --root-dir="$(mn_wstate "$i")/kubelet" \
            --config="$wdir/kubelet.yaml" \
            --kubeconfig="$wdir/kubelet.kubeconfig" \
            --hostname-override="$(mn_node_name "$i")" \
            --node-ip="$(mn_node_ip "$i")" \
            --node-labels="topology.kubernetes.io/zone=$(mn_zone "$i")" \
            --v=1
    pid_alive "$wdir/pids/kube-proxy.pid" "$wdir" ||
        mn_start_daemon "$i" kube-proxy "$bin/kube-proxy" --config="$wdir/kube-proxy.yaml" --v=1
    # (Its own copy of the kubeconfig: the pid guard looks for $wdir in the command line.)
    cp "$MN_DIR/kubeconfig" "$wdir/provisioner.kubeconfig"
    pid_alive "$wdir/pids/hostpath-provisioner.pid" "$wdir" ||
        mn_start_daemon "$i" hostpath-provisioner "$bin/hostpath-provisioner" \
            -kubeconfig="$wdir/provisioner.kubeconfig" -node-name="$(mn_node_name "$i")" \
            -root="$(mn_wstate "$i")/volumes" -interval=1s
}

# mn_worker_ready I — the node is Ready and kube-proxy has programmed its rules.
mn_worker_ready() {
    local i="$1"
    [[ "$(mn_kubectl get node "$(mn_node_name "$i")" \
        -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]] &&
        [[ "$(ip netns exec "$(mn_netns "$i")" iptables -t nat -S KUBE-SERVICES 2>/dev/null)" == *'default/kubernetes:https'* ]]
}
