//go:build tools

// Package tools pins etcd's own benchmark tool (go.etcd.io/etcd/v3/tools/benchmark) at the
// etcd version hack/k8s builds, so `make bench` drives etcd with the load generator its
// maintainers use. hack/install-tools.sh etcd-benchmark builds it.
package tools

import _ "go.etcd.io/etcd/v3/tools/benchmark"
