#!/usr/bin/env bash
# Builds the pinned CLI tools the tests use (helm, promtool) from the Go module proxy into
# a cache outside the repository, installs moto's S3-compatible server (moto_server, from
# PyPI into a venv there) for the backup suites and checkov (the Kubernetes security linter,
# from PyPI into a venv there), and prints the bin directory on the last line.
# Usage: hack/install-tools.sh [helm|promtool|moto|checkov|cert-manager|etcd-benchmark|cargo-fuzz|inferno ...]   (default: helm promtool moto checkov cert-manager)
# etcd-benchmark is etcd's own load generator (go.etcd.io/etcd/v3/tools/benchmark), pinned by
# the wrapper module hack/etcd-bench/ at the etcd version hack/k8s/ builds; `make bench` uses it.
# cargo-fuzz is built from crates.io with `cargo install --locked`; `make fuzz` uses it.
# inferno (inferno-collapse-perf, inferno-flamegraph) likewise; `make profile` uses it.
# cert-manager is cert-manager's controller (CA and self-signed issuers, the Certificate
# lifecycle), built by the wrapper module hack/cert-manager/ at the release it pins, plus
# that release's CRDs (deploy/crds of the module) in ../cert-manager-crds/; the apiserver_tls
# suite runs it out of cluster against its API server.
set -euo pipefail

HELM_VERSION=v3.22.0
PROMETHEUS_VERSION=v0.316.0 # module github.com/prometheus/prometheus
MOTO_VERSION=5.2.1
CHECKOV_VERSION=3.3.30
CARGO_FUZZ_VERSION=0.13.2 # crates.io; `make fuzz` (hack/fuzz.sh) uses it
INFERNO_VERSION=0.12.8    # crates.io; `make profile` (hack/profile.sh) uses it

cache="${SHARDEDSTORE_CACHE:-$HOME/.cache/shardedstore}/tools"
bin="$cache/bin"
mkdir -p "$bin"
export GOBIN="$bin" GOFLAGS="-trimpath" CGO_ENABLED=0

want=("$@")
[ ${#want[@]} -gt 0 ] || want=(helm promtool moto checkov cert-manager)

for tool in "${want[@]}"; do
  case "$tool" in
    helm)
      if ! [ -x "$bin/helm" ] || ! "$bin/helm" version --short 2>/dev/null | grep -q "^${HELM_VERSION}"; then
        echo "building helm ${HELM_VERSION}" >&2
        nice -n 10 go install -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}" \
          "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" >&2
      fi
      ;;
    promtool)
      if ! [ -x "$bin/promtool" ] || ! [ -f "$bin/.promtool-${PROMETHEUS_VERSION}" ]; then
        echo "building promtool (prometheus ${PROMETHEUS_VERSION})" >&2
        nice -n 10 go install -ldflags "-s -w" \
          "github.com/prometheus/prometheus/cmd/promtool@${PROMETHEUS_VERSION}" >&2
        touch "$bin/.promtool-${PROMETHEUS_VERSION}"
      fi
      ;;
    etcd-benchmark)
      here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
      stamp="$bin/.etcd-benchmark-$(sha256sum "$here/etcd-bench/go.sum" | cut -c1-12)"
      if ! [ -x "$bin/etcd-benchmark" ] || ! [ -f "$stamp" ]; then
        echo "building etcd's benchmark tool (hack/etcd-bench)" >&2
        (cd "$here/etcd-bench" && nice -n 10 go build -ldflags "-s -w" -o "$bin/etcd-benchmark" \
          go.etcd.io/etcd/v3/tools/benchmark) >&2
        touch "$stamp"
      fi
      ;;
    cert-manager)
      here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
      stamp="$bin/.cert-manager-$(sha256sum "$here/cert-manager/go.sum" | cut -c1-12)"
      if ! [ -x "$bin/cert-manager-controller" ] || ! [ -f "$stamp" ] || ! [ -d "$cache/cert-manager-crds" ]; then
        echo "building cert-manager's controller (hack/cert-manager)" >&2
        (cd "$here/cert-manager" && nice -n 10 go build -ldflags "-s -w" -o "$bin/cert-manager-controller" .) >&2
        src="$(cd "$here/cert-manager" && go list -m -f '{{.Dir}}' github.com/cert-manager/cert-manager)"
        rm -rf "$cache/cert-manager-crds"
        mkdir -p "$cache/cert-manager-crds"
        cp "$src"/deploy/crds/*.yaml "$cache/cert-manager-crds/"
        chmod -R u+w "$cache/cert-manager-crds"
        touch "$stamp"
      fi
      ;;
    moto)
      if ! [ -x "$bin/moto_server" ]; then
        if command -v moto_server >/dev/null 2>&1 && python3 -c 'import moto.server, flask' 2>/dev/null; then
          ln -sf "$(command -v moto_server)" "$bin/moto_server"
        else
          echo "installing moto[server] ${MOTO_VERSION} into $cache/moto-venv" >&2
          python3 -m venv "$cache/moto-venv" >&2
          "$cache/moto-venv/bin/pip" install -q "moto[server]==${MOTO_VERSION}" >&2
          ln -sf "$cache/moto-venv/bin/moto_server" "$bin/moto_server"
        fi
      fi
      ;;
    checkov)
      venv="$cache/checkov-venv"
      if ! [ -x "$venv/bin/checkov" ] || ! [ -f "$venv/.checkov-${CHECKOV_VERSION}" ]; then
        echo "installing checkov ${CHECKOV_VERSION}" >&2
        python3 -m venv "$venv" >&2
        nice -n 10 "$venv/bin/pip" install --quiet --disable-pip-version-check "checkov==${CHECKOV_VERSION}" >&2
        touch "$venv/.checkov-${CHECKOV_VERSION}"
      fi
      ln -sf "$venv/bin/checkov" "$bin/checkov"
      ;;
    inferno)
      if ! [ -x "$bin/inferno-flamegraph" ] || ! [ -f "$bin/.inferno-${INFERNO_VERSION}" ]; then
        echo "installing inferno ${INFERNO_VERSION}" >&2
        nice -n 10 cargo install --quiet --locked --root "$cache" inferno --version "${INFERNO_VERSION}" \
          --no-default-features --features cli >&2
        touch "$bin/.inferno-${INFERNO_VERSION}"
      fi
      ;;
    cargo-fuzz)
      if ! [ -x "$bin/cargo-fuzz" ] || ! "$bin/cargo-fuzz" --version 2>/dev/null | grep -q " ${CARGO_FUZZ_VERSION}$"; then
        echo "installing cargo-fuzz ${CARGO_FUZZ_VERSION}" >&2
        nice -n 10 cargo install --quiet --locked --root "$cache" cargo-fuzz --version "${CARGO_FUZZ_VERSION}" >&2
      fi
      ;;
    *)
      echo "unknown tool: $tool" >&2
      exit 2
      ;;
  esac
done
echo "$bin"
