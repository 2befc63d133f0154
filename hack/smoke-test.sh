#!/usr/bin/env bash
# Proves the local cluster (hack/cluster-up.sh) is a real Kubernetes:
#   1. a pod from a locally built image reaches Running and Ready
#   2. its PersistentVolumeClaim (default StorageClass) binds and is written to
#   3. the pod IP is reachable from the host (busybox httpd, curl from the host)
#   4. a ClusterIP Service answers from the host and from inside the pod (kube-proxy)
#   5. kubectl exec and logs work (apiserver -> kubelet)
#   6. after its process is killed, kubelet restarts the container (restartCount)
#   7. deleting the namespace deletes the dynamically provisioned volume
# Every wait has a deadline; it removes what it created and exits non-zero on
# any failure.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/cluster-lib.sh"

[[ $EUID -eq 0 ]] || die "must run as root"
cluster_ready || die "the cluster is not up (run hack/cluster-up.sh)"
bin="$(cat "$CP_DIR/bin-dir")"
kc() { "$bin/kubectl" --kubeconfig="$CLUSTER_DIR/kubeconfig" --request-timeout=20s "$@"; }
ns="sst-smoke-$RANDOM"
passed=0
check() {
    passed=$((passed + 1))
    log "ok $passed: $*"
}
cleanup() {
    local rc=$?
    if ((rc != 0)); then
        log "FAILED; state of $ns follows"
        kc -n "$ns" get pod,pvc,svc -o wide >&2 || true
        kc -n "$ns" describe pod web >&2 || true
        kc get events -n "$ns" >&2 || true
        echo "smoke: $passed passed, 1 failed"
    fi
    kc delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
    exit "$rc"
}
trap cleanup EXIT

"$HACK_DIR/images.sh" busybox
kc create namespace "$ns" >/dev/null
kc -n "$ns" apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: shardedstore/busybox:dev
    imagePullPolicy: Never
    command: [sh, -c]
    args:
    - |
      mkdir -p /www && echo "hello from $(hostname)" > /www/index.html
      echo "boot $(date +%s)" >> /data/boots
      exec httpd -f -p 8080 -h /www
    ports: [{containerPort: 8080}]
    readinessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: data}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
EOF

kc -n "$ns" wait --for=condition=Ready pod/web --timeout=120s >/dev/null
check "pod from a locally built image is Running and Ready"

[[ "$(kc -n "$ns" get pvc data -o jsonpath='{.status.phase}')" == Bound ]] || die "claim is not Bound"
pv="$(kc -n "$ns" get pvc data -o jsonpath='{.spec.volumeName}')"
# The provisioner makes "local" volumes (the kubelet applies fsGroup to those).
path="$(kc get pv "$pv" -o jsonpath='{.spec.local.path}')"
[[ -n "$path" ]] || die "volume $pv has no local path"
grep -q '^boot ' "$path/boots" || die "the pod's write is not in $path/boots"
check "claim bound to $pv, the pod wrote $path/boots"

ip="$(kc -n "$ns" get pod web -o jsonpath='{.status.podIP}')"
curl_ok() { [[ "$(curl -sf --max-time 2 "$1")" == "hello from web" ]]; }
wait_for 30 "http://$ip:8080/ from the host" curl_ok "http://$ip:8080/"
check "pod IP $ip answers HTTP from the host"

# Debian's static busybox wget segfaults (exit 139) here, so HTTP by hand over nc.
in_pod_get="sh -c 'printf \"GET / HTTP/1.0\\r\\n\\r\\n\" | nc -w 3 \"\$0\" \"\$1\"'"
svc="$(kc -n "$ns" get svc web -o jsonpath='{.spec.clusterIP}')"
wait_for 30 "Service $svc:80 from the host" curl_ok "http://$svc:80/"
wait_for 30 "Service $svc:80 from inside the pod" \
    sh -c "'$bin/kubectl' --kubeconfig='$CLUSTER_DIR/kubeconfig' -n '$ns' exec web -- $in_pod_get $svc 80 | grep 'hello from web' >/dev/null"
check "ClusterIP $svc answers from the host and from the pod; exec works"

kc -n "$ns" logs web >/dev/null
check "kubectl logs works"

cid="$(kc -n "$ns" get pod web -o jsonpath='{.status.containerStatuses[0].containerID}')"
cid="${cid#containerd://}"
pid="$(ctr_ -n k8s.io tasks ls | awk -v id="$cid" '$1 == id {print $2}')"
[[ -n "$pid" ]] || die "no containerd task for container $cid"
kill -KILL "$pid"
restarted() {
    local n
    n="$(kc -n "$ns" get pod web -o jsonpath='{.status.containerStatuses[0].restartCount}')"
    ((n >= 1)) && kc -n "$ns" wait --for=condition=Ready pod/web --timeout=1s
}
wait_for 90 "kubelet to restart the killed container" restarted
(($(grep -c '^boot ' "$path/boots") >= 2)) || die "the restarted container did not start again on the same volume"
check "killed pid $pid; kubelet restarted the container on the same volume"

kc delete namespace "$ns" --timeout=90s >/dev/null
pv_gone() { ! kc get pv "$pv" >/dev/null 2>&1 && [[ ! -e "$path" ]]; }
wait_for 60 "volume $pv to be deleted" pv_gone
check "deleting the namespace deleted volume $pv and $path"

echo "smoke: $passed passed, 0 failed"
