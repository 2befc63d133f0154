#!/usr/bin/env bash
# A real Kubernetes control plane on loopback: the envtest equivalent.
#
#   hack/control-plane.sh up DIR     start etcd + kube-apiserver + kube-controller-manager,
#                                    write DIR/kubeconfig, return once it serves
#   hack/control-plane.sh down DIR   stop everything started for DIR and delete DIR
#   hack/control-plane.sh env DIR    print shell exports (KUBECONFIG, PATH) for DIR
#
# DIR holds all state: certs/, etcd/, logs/, pids/, kubeconfig, endpoints. `up` on a
# DIR that is already up is a no-op; `up` on a DIR left by a crash cleans it first;
# `down` is safe to run any number of times, also after a failed `up`.
#
# Knobs (used by hack/cluster-up.sh; the defaults are right for tests):
#   SHARDEDSTORE_CP_ADDRESS    address to bind and advertise   (127.0.0.1)
#   SHARDEDSTORE_CP_PORT       apiserver secure port            (a free port)
#   SHARDEDSTORE_CP_SCHEDULER  1 = also run kube-scheduler      (0)
#   SHARDEDSTORE_CP_TIMEOUT    seconds allowed for `up`         (90)
#   SHARDEDSTORE_SERVICE_CIDR  Service ClusterIP range          (10.96.0.0/16)
#   SHARDEDSTORE_K8S_BIN       use these binaries instead of hack/k8s-bins.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    echo "usage: $0 up|down|env DIR" >&2
    exit 2
}
[[ $# -eq 2 ]] || usage
cmd="$1"
mkdir -p "$2"
dir="$(cd "$2" && pwd)"

address="${SHARDEDSTORE_CP_ADDRESS:-127.0.0.1}"
service_cidr="${SHARDEDSTORE_SERVICE_CIDR:-10.96.0.0/16}"
timeout="${SHARDEDSTORE_CP_TIMEOUT:-90}"
components=(kube-scheduler kube-controller-manager kube-apiserver etcd)

# The first address of the Service range is the `kubernetes` Service's ClusterIP;
# the serving certificate must name it for in-cluster clients.
first_service_ip() {
    local base="${service_cidr%/*}"
    echo "${base%.*}.$((${base##*.} + 1))"
}

down() {
    local c files=()
    for c in "${components[@]}"; do files+=("$dir/pids/$c.pid"); done
    # Test state is thrown away, so a short grace period is enough.
    stop_pidfiles 3 "$dir" "${files[@]}"
    # Only what `up` creates, so a mistaken DIR argument cannot wipe anything else.
    rm -rf "$dir"/{certs,etcd,logs,pids,kubeconfig,apiserver-port,bin-dir} "$dir"/*.kubeconfig
    rmdir "$dir" 2>/dev/null || true
}

apiserver_ready() {
    curl -sf --max-time 2 --cacert "$dir/certs/ca.crt" \
        --cert "$dir/certs/admin.crt" --key "$dir/certs/admin.key" \
        "https://$address:$(cat "$dir/apiserver-port")/readyz" >/dev/null
}

already_up() {
    [[ -f "$dir/kubeconfig" && -f "$dir/apiserver-port" ]] &&
        pid_alive "$dir/pids/kube-apiserver.pid" "$dir" &&
        pid_alive "$dir/pids/etcd.pid" "$dir" &&
        apiserver_ready
}

gen_certs() {
    local certs="$dir/certs"
    mkdir -p "$certs"
    chmod 700 "$certs"
    new_ca "$certs"
    issue_cert "$certs" apiserver "/CN=kube-apiserver" serverAuth \
        "IP:$address,IP:127.0.0.1,IP:$(first_service_ip),DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    issue_cert "$certs" admin "/O=system:masters/CN=shardedstore-admin" clientAuth
    issue_cert "$certs" apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
    issue_cert "$certs" kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
    issue_cert "$certs" kube-scheduler "/CN=system:kube-scheduler" clientAuth
    # Service-account token signing key (ES256).
    openssl ecparam -name prime256v1 -genkey -noout -out "$certs/sa.key.tmp"
    openssl pkcs8 -topk8 -nocrypt -in "$certs/sa.key.tmp" -out "$certs/sa.key"
    openssl ec -in "$certs/sa.key" -pubout -out "$certs/sa.pub" 2>/dev/null
    rm -f "$certs/sa.key.tmp"
}

up() {
    if already_up; then
        log "already up: $dir/kubeconfig"
        return
    fi
    # A second attempt covers the one race left: another process binding one of
    # the free ports between our choice and etcd's or the apiserver's bind.
    local attempt rc
    for attempt in 1 2; do
        # Not `if (up_once)`: errexit is off inside an if condition.
        set +e
        (
            set -e
            up_once
        )
        rc=$?
        set -e
        ((rc == 0)) && return
        log "attempt $attempt failed"
    done
    die "could not start a control plane in $dir"
}

up_once() {
    down
    mkdir -p "$dir"/{logs,pids}
    local deadline=$((SECONDS + timeout)) bin certs="$dir/certs" taken="" etcd_port peer_port port server
    bin="$(k8s_bin_dir)"
    [[ -x "$bin/kube-apiserver" ]] || die "no kube-apiserver in $bin"
    echo "$bin" >"$dir/bin-dir"
    # From here on, a failed start leaves nothing running.
    trap 'rc=$?; if ((rc != 0)); then log "start failed, logs follow"; dump_logs "$dir"; down; fi' EXIT

    gen_certs
    etcd_port="$(free_port)"
    peer_port="$(free_port)"
    port="${SHARDEDSTORE_CP_PORT:-$(free_port)}"
    echo "$port" >"$dir/apiserver-port"
    server="https://$address:$port"

    start_daemon etcd "$dir" "$bin/etcd" \
        --name=shardedstore-local \
        --data-dir="$dir/etcd" \
        --listen-client-urls="http://127.0.0.1:$etcd_port" \
        --advertise-client-urls="http://127.0.0.1:$etcd_port" \
        --listen-peer-urls="http://127.0.0.1:$peer_port" \
        --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
        --initial-cluster="shardedstore-local=http://127.0.0.1:$peer_port" \
        --unsafe-no-fsync=true \
        --quota-backend-bytes=4294967296 \
        --log-level=warn
    wait_for $((deadline - SECONDS)) "etcd on 127.0.0.1:$etcd_port" \
        curl -sf --max-time 2 "http://127.0.0.1:$etcd_port/health"

    start_daemon kube-apiserver "$dir" "$bin/kube-apiserver" \
        --etcd-servers="http://127.0.0.1:$etcd_port" \
        --bind-address="$address" \
        --advertise-address="$address" \
        --secure-port="$port" \
        --tls-cert-file="$certs/apiserver.crt" \
        --tls-private-key-file="$certs/apiserver.key" \
        --client-ca-file="$certs/ca.crt" \
        --kubelet-client-certificate="$certs/apiserver-kubelet-client.crt" \
        --kubelet-client-key="$certs/apiserver-kubelet-client.key" \
        --kubelet-preferred-address-types=InternalIP,Hostname \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$certs/sa.pub" \
        --service-account-signing-key-file="$certs/sa.key" \
        --service-cluster-ip-range="$service_cidr" \
        --authorization-mode=Node,RBAC \
        --allow-privileged=true \
        --profiling=false \
        --cert-dir="$certs" \
        --v=1
    wait_for $((deadline - SECONDS)) "kube-apiserver /readyz at $server" apiserver_ready
    write_kubeconfig "$dir/kubeconfig" "$server" "$certs" admin
    write_kubeconfig "$dir/kube-controller-manager.kubeconfig" "$server" "$certs" kube-controller-manager
    write_kubeconfig "$dir/kube-scheduler.kubeconfig" "$server" "$certs" kube-scheduler

    start_daemon kube-controller-manager "$dir" "$bin/kube-controller-manager" \
        --kubeconfig="$dir/kube-controller-manager.kubeconfig" \
        --authentication-kubeconfig="$dir/kube-controller-manager.kubeconfig" \
        --authorization-kubeconfig="$dir/kube-controller-manager.kubeconfig" \
        --bind-address=127.0.0.1 \
        --secure-port=0 \
        --leader-elect=false \
        --use-service-account-credentials=true \
        --service-account-private-key-file="$certs/sa.key" \
        --root-ca-file="$certs/ca.crt" \
        --cluster-signing-cert-file="$certs/ca.crt" \
        --cluster-signing-key-file="$certs/ca.key" \
        --service-cluster-ip-range="$service_cidr" \
        --v=1
    if [[ "${SHARDEDSTORE_CP_SCHEDULER:-0}" == 1 ]]; then
        start_daemon kube-scheduler "$dir" "$bin/kube-scheduler" \
            --kubeconfig="$dir/kube-scheduler.kubeconfig" \
            --authentication-kubeconfig="$dir/kube-scheduler.kubeconfig" \
            --authorization-kubeconfig="$dir/kube-scheduler.kubeconfig" \
            --bind-address=127.0.0.1 \
            --secure-port=0 \
            --leader-elect=false \
            --v=1
    fi
    # The service-account controller creating `default` proves the controller
    # manager runs; pods (and StatefulSet pods) need that account to be admitted.
    wait_for $((deadline - SECONDS)) "kube-controller-manager (default ServiceAccount)" \
        "$bin/kubectl" --kubeconfig="$dir/kubeconfig" -n default get serviceaccount default
    for c in etcd kube-apiserver kube-controller-manager; do
        pid_alive "$dir/pids/$c.pid" "$dir" || die "$c exited during start-up"
    done
    trap - EXIT
    log "up in ${SECONDS}s: $dir/kubeconfig ($server)"
}

env_of() {
    [[ -f "$dir/kubeconfig" ]] || die "no control plane in $dir (run: $0 up $dir)"
    echo "export KUBECONFIG=$dir/kubeconfig"
    echo "export PATH=$(cat "$dir/bin-dir"):\$PATH"
}

case "$cmd" in
up) up ;;
down) down ;;
env) env_of ;;
*) usage ;;
esac
