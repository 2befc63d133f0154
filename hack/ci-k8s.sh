#!/usr/bin/env bash
# The checks CI runs on the real-Kubernetes tooling, each cleaning up after itself whether
# it passes or fails:
#
#   hack/ci-k8s.sh control-plane   up, a Deployment's ReplicaSet and Pods appear
#                                  (controller-manager), garbage collection follows
#                                  owner references, down leaves nothing behind
#   hack/ci-k8s.sh cluster         cluster-up, smoke-test.sh, cluster-down
#   hack/ci-k8s.sh e2e             cluster-up, make e2e (images, the chart, stores in
#                                  namespaces enforcing Pod Security "restricted", helm
#                                  test, backup and restore through S3), cluster-down;
#                                  prints how long each stage took. With
#                                  SHARDEDSTORE_IMAGES_PROFILE=debug the images carry the
#                                  debug binaries (`cargo build --workspace --bins`, which
#                                  `make test` built already) instead of a release build
#   hack/ci-k8s.sh e2e-multinode   multinode-up (1 control plane + 3 workers in zones
#                                  a/b/c), make e2e-multinode, multinode-down; prints how
#                                  long each stage took (same image profile rule as e2e)
#   hack/ci-k8s.sh                 control-plane and cluster
#
# Builds the pinned binaries first when they are not cached (see
# docs/local-kubernetes.md for how long that takes). Ends with 'N passed, N failed'.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

what=("$@")
((${#what[@]})) || what=(control-plane cluster)
passed=0
failed=0

check_control_plane() {
    local bin
    # Global (not local): the EXIT trap runs after this function has returned.
    dir="$(mktemp -d /tmp/shardedstore-ci-cp.XXXXXX)"
    trap '"$HACK_DIR/control-plane.sh" down "$dir"' EXIT # each check runs in its own subshell
    "$HACK_DIR/control-plane.sh" up "$dir"
    bin="$(cat "$dir/bin-dir")"
    kc() { "$bin/kubectl" --kubeconfig="$dir/kubeconfig" --request-timeout=20s "$@"; }
    kc create deployment web --image=shardedstore/busybox:dev --replicas=2 >/dev/null
    wait_for 30 "ReplicaSet and 2 Pods of the Deployment" \
        sh -c "[ \"\$('$bin/kubectl' --kubeconfig='$dir/kubeconfig' get pods -l app=web -o name | wc -l)\" = 2 ]"
    kc delete deployment web --wait=false >/dev/null
    wait_for 30 "garbage collection of the Deployment's Pods" \
        sh -c "[ \"\$('$bin/kubectl' --kubeconfig='$dir/kubeconfig' get pods,replicasets -o name | wc -l)\" = 0 ]"
    "$HACK_DIR/control-plane.sh" down "$dir"
    [[ ! -e "$dir" ]] || die "down left $dir behind"
    ! pgrep -f "$dir" >/dev/null || die "down left processes of $dir running"
}

check_cluster() {
    trap '"$HACK_DIR/cluster-down.sh"' EXIT # each check runs in its own subshell
    "$HACK_DIR/cluster-up.sh" >/dev/null
    "$HACK_DIR/smoke-test.sh"
}

check_e2e() {
    local started=$SECONDS stage=$SECONDS root="$HACK_DIR/.."
    trap '"$HACK_DIR/cluster-down.sh"' EXIT # each check runs in its own subshell
    "$HACK_DIR/cluster-up.sh" >/dev/null
    log "e2e: cluster-up took $((SECONDS - stage))s"
    if [[ "${SHARDEDSTORE_IMAGES_PROFILE:-release}" == debug ]]; then
        stage=$SECONDS
        (cd "$root" && cargo build --workspace --bins)
        "$HACK_DIR/images.sh"
        log "e2e: debug build and images took $((SECONDS - stage))s"
        stage=$SECONDS
        (cd "$root" && cargo test -p shardedstore-tests --test e2e -- --ignored --test-threads=1)
        log "e2e: the suite took $((SECONDS - stage))s"
    else
        make -C "$root" e2e
    fi
    log "e2e: cluster-up, images and the suite took $((SECONDS - started))s"
}

check_e2e_multinode() {
    local started=$SECONDS stage=$SECONDS root="$HACK_DIR/.."
    trap '"$HACK_DIR/multinode-down.sh"' EXIT # each check runs in its own subshell
    "$HACK_DIR/multinode-up.sh" 3 >/dev/null
    log "e2e-multinode: multinode-up took $((SECONDS - stage))s"
    stage=$SECONDS
    make -C "$root" e2e-multinode
    log "e2e-multinode: images and the suite took $((SECONDS - stage))s"
    "$HACK_DIR/multinode-down.sh" >/dev/null
    log "e2e-multinode: multinode-up, images, the suite and multinode-down took $((SECONDS - started))s"
}

for w in "${what[@]}"; do
    case "$w" in
    control-plane | cluster | e2e | e2e-multinode) ;;
    *) die "unknown check '$w' (control-plane, cluster, e2e, e2e-multinode)" ;;
    esac
    set +e
    (
        set -e
        "check_${w//-/_}"
    )
    rc=$?
    set -e
    if ((rc == 0)); then
        passed=$((passed + 1))
        log "PASS $w"
    else
        failed=$((failed + 1))
        log "FAIL $w"
    fi
done
echo "k8s: $passed passed, $failed failed"
((failed == 0))
