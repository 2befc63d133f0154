#!/usr/bin/env bash
# Builds the images (hack/images.sh, written as OCI archives) and imports them into the
# containerd of every worker of the multi-node cluster (hack/multinode-up.sh), as
# `kind load` does for kind's nodes. Runs as root.
#
#   hack/multinode-images.sh [pause|busybox|operator|node]...   (no argument: all four)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/multinode-lib.sh"

[[ $EUID -eq 0 ]] || die "must run as root"
[[ -f "$MN_DIR/workers" ]] || die "the multi-node cluster is not up (run hack/multinode-up.sh)"
targets=("$@")
((${#targets[@]})) || targets=(pause busybox operator node)

out="$MN_DIR/images"
SHARDEDSTORE_IMAGES_OUT="$out" "$HACK_DIR/images.sh" "${targets[@]}"
for ((i = 1; i <= $(cat "$MN_DIR/workers"); i++)); do
    mn_ctr "$i" version >/dev/null 2>&1 || die "containerd of worker $i is not running"
    for t in "${targets[@]}"; do
        case "$t" in
        pause) archive="$(echo "$PAUSE_IMAGE" | tr '/:' '__').tar" ;;
        *) archive="shardedstore_${t}_dev.tar" ;;
        esac
        [[ -f "$out/$archive" ]] || die "hack/images.sh wrote no $out/$archive"
        mn_ctr "$i" -n k8s.io images import "$out/$archive" >/dev/null
    done
    log "worker $i: imported ${targets[*]}"
done
