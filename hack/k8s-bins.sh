#!/usr/bin/env bash
# Builds the pinned upstream Kubernetes binaries (and etcd, and our hostPath
# provisioner) from the Go module in hack/k8s/ into a cache outside the repository:
#
#   ${SHARDEDSTORE_CACHE:-$HOME/.cache/shardedstore}/k8s/<pin-hash>/bin
#
# <pin-hash> covers hack/k8s/ (go.mod, go.sum, provisioner source) and this script,
# so the binaries are reused across runs and rebuilt only when the pin changes.
# The last line of stdout is the bin directory; progress goes to stderr.
#
#   hack/k8s-bins.sh            build if needed, print the bin directory
#   hack/k8s-bins.sh --cached   print it if already built, else exit 1 (no build)
#
# A cold build takes a long time on a 2-core machine (see docs/local-kubernetes.md).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mod="$here/k8s"
cache_root="${SHARDEDSTORE_CACHE:-$HOME/.cache/shardedstore}/k8s"

# Everything the binaries depend on, in a stable order.
pin_hash="$(
    cd "$here" &&
        find k8s -type f \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' \) -print0 |
        LC_ALL=C sort -z | xargs -0 sha256sum | cat - "$here/k8s-bins.sh" | sha256sum | cut -c1-16
)"
out="$cache_root/$pin_hash"
bin="$out/bin"

# Upstream component -> Go package. kubectl is built too: the Debian-side kubectl
# (if any) may be outside the supported version skew.
tools=(
    kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver
    kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager
    kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler
    kubelet=k8s.io/kubernetes/cmd/kubelet
    kube-proxy=k8s.io/kubernetes/cmd/kube-proxy
    kubectl=k8s.io/kubernetes/cmd/kubectl
    etcd=go.etcd.io/etcd/server/v3
    hostpath-provisioner=shardedstore.io/hack/k8s/provisioner
)

if [[ -f "$out/.complete" ]]; then
    echo "k8s-bins: reusing $bin" >&2
    echo "$bin"
    exit 0
fi
# --cached: answer whether the binaries are there, never build (exit 1 if not).
if [[ "${1:-}" == --cached ]]; then
    echo "k8s-bins: not built yet for this pin ($out)" >&2
    exit 1
fi

command -v go >/dev/null || {
    echo "k8s-bins: go is not installed (need Go >= 1.24)" >&2
    exit 1
}

mkdir -p "$cache_root"
# One builder at a time per pin: a second caller waits for the first.
exec 9>"$cache_root/.$pin_hash.lock"
flock 9
if [[ -f "$out/.complete" ]]; then
    echo "$bin"
    exit 0
fi

staging="$out.partial"
mkdir -p "$staging/bin"
start=$(date +%s)
# Two cores: one package at a time per core, and a lower GC target so the link of
# kube-apiserver/kubelet stays well inside memory while Rust builds run alongside.
# The version the binaries report (kubectl version, /version): what the pin says,
# set the way upstream's hack/lib/version.sh sets it.
k8s_version="$(go -C "$mod" list -m -f '{{.Version}}' k8s.io/kubernetes)"
minor="${k8s_version#v1.}"
minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
export CGO_ENABLED=0 GOGC="${GOGC:-75}" GOFLAGS="${GOFLAGS:-} -mod=mod -p=2 -buildvcs=false"
for entry in "${tools[@]}"; do
    name="${entry%%=*}"
    pkg="${entry#*=}"
    t0=$(date +%s)
    echo "k8s-bins: building $name ($pkg)" >&2
    (cd "$mod" && nice -n 10 go build -trimpath -ldflags="$ldflags" -o "$staging/bin/$name" "$pkg") >&2
    echo "k8s-bins: $name done in $(($(date +%s) - t0))s" >&2
done
go -C "$mod" list -m k8s.io/kubernetes go.etcd.io/etcd/server/v3 >"$staging/VERSIONS"
rm -rf "$out"
mv "$staging" "$out"
touch "$out/.complete"
echo "k8s-bins: built in $(($(date +%s) - start))s" >&2
echo "$bin"
