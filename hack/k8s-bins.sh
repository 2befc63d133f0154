#!/usr/bin/env bash
# Builds the pinned upstream Kubernetes binaries (and etcd, and our hostPath
# provisioner) from the Go module in hack/k8s/ into a cache outside the repository:
#
#   ${SHARDEDSTORE_CACHE:-$HOME/.cache/shardedstore}/k8s/upstream-<pin>/bin        upstream
#   ${SHARDEDSTORE_CACHE:-$HOME/.cache/shardedstore}/k8s/<pin>-<provisioner>/bin   what callers use
#
# <pin> covers hack/k8s/go.mod and go.sum (and UPSTREAM_BUILD), so the upstream binaries
# are rebuilt only when the pin changes; <provisioner> also covers the provisioner source,
# which builds in seconds on its own.
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

# The upstream binaries depend only on the pinned modules (go.mod, go.sum) and on how they are
# built (UPSTREAM_BUILD below: bump it when the build flags change). Our own hostPath
# provisioner is built separately, so editing it never rebuilds Kubernetes.
UPSTREAM_BUILD=1
pin_hash="$(
    cd "$here" && cat k8s/go.mod k8s/go.sum | sha256sum | cut -c1-12
)-b$UPSTREAM_BUILD"
prov_hash="$(
    cd "$here" && find k8s -type f \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' \) -print0 |
        LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12
)"
upstream="$cache_root/upstream-$pin_hash"
# What callers get: one bin directory with the upstream binaries (hard links) and this
# checkout's provisioner.
out="$cache_root/$pin_hash-$prov_hash"
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
# Two cores: one package at a time per core, and a lower GC target so the link of
# kube-apiserver/kubelet stays well inside memory while Rust builds run alongside.
export CGO_ENABLED=0 GOGC="${GOGC:-75}" GOFLAGS="${GOFLAGS:-} -mod=mod -p=2 -buildvcs=false"

if [[ ! -f "$upstream/.complete" ]]; then
    staging="$upstream.partial"
    mkdir -p "$staging/bin"
    start=$(date +%s)
    for entry in "${tools[@]}"; do
        name="${entry%%=*}"
        pkg="${entry#*=}"
        [[ -x "$staging/bin/$name" ]] && continue # resumed after an interrupted build
        t0=$(date +%s)
        echo "k8s-bins: building $name ($pkg)" >&2
        (cd "$mod" && nice -n 10 go build -trimpath -ldflags="$ldflags" -o "$staging/bin/$name.tmp" "$pkg") >&2
        mv "$staging/bin/$name.tmp" "$staging/bin/$name"
        echo "k8s-bins: $name done in $(($(date +%s) - t0))s" >&2
    done
    go -C "$mod" list -m k8s.io/kubernetes go.etcd.io/etcd/server/v3 >"$staging/VERSIONS"
    rm -rf "$upstream"
    mv "$staging" "$upstream"
    touch "$upstream/.complete"
    echo "k8s-bins: upstream built in $(($(date +%s) - start))s" >&2
fi

staging="$out.partial"
rm -rf "$staging"
mkdir -p "$staging/bin"
cp -l "$upstream/bin/"* "$staging/bin/" 2>/dev/null || cp "$upstream/bin/"* "$staging/bin/"
cp "$upstream/VERSIONS" "$staging/VERSIONS"
echo "k8s-bins: building hostpath-provisioner" >&2
(cd "$mod" && nice -n 10 go build -trimpath -ldflags="-s -w" -o "$staging/bin/hostpath-provisioner" \
    shardedstore.io/hack/k8s/provisioner) >&2
rm -rf "$out"
mv "$staging" "$out"
touch "$out/.complete"
echo "$bin"
